// People registered twice, side by side with why they look like one person; the bidan keeps
// one and the other is merged into it (nothing is deleted; every visit counts for the kept
// person). Merging is audited on the server.
"use strict";
import { get, post } from "./api.js";
import { t, date, age } from "./i18n.js";
import { $, el } from "./dom.js";

let unitNames = {};

export function setDuplicateUnits(units) {
  unitNames = Object.fromEntries(units.map((u) => [u.id, u.name]));
}

function personCard(p, pairNo, side) {
  const id = `keep-${pairNo}-${side}`;
  const radio = el("input", { type: "radio", name: "keep-" + pairNo, id, value: p.person_id });
  return el("div", { class: "person-card" },
    radio,
    el("label", { htmlFor: id },
      el("strong", { textContent: p.name }),
      el("span", { class: "muted", textContent: " · " + t("born") + " " + date(p.birth_date) + " (" + age(p.birth_date) + ")" }),
      el("span", { class: "muted", textContent: " · " + (unitNames[p.posyandu] || p.posyandu) })));
}

export async function showDuplicates(show) {
  const list = await get("/v1/duplicates");
  show("duplicates");
  const box = $("duplicate-list");
  box.textContent = "";
  list.forEach((pair, i) => {
    const error = el("p", { class: "error", role: "alert" });
    const merge = el("button", { type: "button", class: "primary", textContent: t("merge") });
    const card = el("article", { class: "pair", "data-reason": pair.reason },
      el("p", { class: "reason", textContent: t("why_" + pair.reason) }),
      el("fieldset", {}, el("legend", { textContent: t("keep_which") }), personCard(pair.a, i, "a"), personCard(pair.b, i, "b")),
      merge, error);
    merge.addEventListener("click", async () => {
      const chosen = card.querySelector("input:checked");
      if (!chosen) { error.textContent = t("choose_keep"); return; }
      const keep = chosen.value;
      const duplicate = keep === pair.a.person_id ? pair.b.person_id : pair.a.person_id;
      try {
        await post("/v1/duplicates/merge", { duplicate, keep });
        await showDuplicates(show);
      } catch (e) { error.textContent = e.message; }
    });
    box.append(card);
  });
  $("duplicates-empty").classList.toggle("hidden", list.length > 0);
}
