// Children with overdue doses, per posyandu, for home visits: names, addresses, the doses,
// printable. The server audits the read.
"use strict";
import { get } from "./api.js";
import { t, date } from "./i18n.js";
import { $, el } from "./dom.js";

let unitNames = {};

export function setOverdueUnits(units) {
  unitNames = Object.fromEntries(units.map((u) => [u.id, u.name]));
}

const thisMonth = () => new Date().toISOString().slice(0, 7);

function address(o) {
  const parts = [];
  if (o.address) parts.push(o.address);
  if (o.rt !== null && o.rt !== undefined) parts.push("RT " + o.rt);
  if (o.rw !== null && o.rw !== undefined) parts.push("RW " + o.rw);
  return parts.join(", ") || "—";
}

export async function showOverdue(show, month) {
  const m = month || $("overdue-month").value || thisMonth();
  $("overdue-month").value = m;
  const list = await get("/v1/reports/overdue?month=" + encodeURIComponent(m));
  show("overdue");
  const byPosyandu = new Map();
  for (const o of list) {
    if (!byPosyandu.has(o.posyandu)) byPosyandu.set(o.posyandu, []);
    byPosyandu.get(o.posyandu).push(o);
  }
  const box = $("overdue-list");
  box.textContent = "";
  const names = [...byPosyandu.keys()].sort((a, b) => (unitNames[a] || a).localeCompare(unitNames[b] || b));
  for (const p of names) {
    const rows = byPosyandu.get(p).sort((a, b) => a.name.localeCompare(b.name));
    const body = el("tbody");
    for (const o of rows) {
      body.append(el("tr", {},
        el("td", {}, el("a", { href: "#/people/" + o.person_id, textContent: o.name })),
        el("td", {}, o.mother_name || "—"),
        el("td", {}, address(o)),
        el("td", {}, date(o.birth_date) + " (" + o.age_months + " " + t("months") + ")"),
        el("td", {}, o.doses.join(", "))));
    }
    box.append(el("section", { class: "posyandu-block" },
      el("h3", { textContent: (unitNames[p] || p) + " — " + rows.length + " " + t("children") }),
      el("div", { class: "table-wrap", tabIndex: 0 }, el("table", {},
        el("thead", {}, el("tr", {}, ...["person", "mother", "address", "born", "doses"].map((k) => el("th", { textContent: t("col_" + k) })))),
        body))));
  }
  $("overdue-empty").classList.toggle("hidden", list.length > 0);
}

export function bindOverdue() {
  $("overdue-month").addEventListener("change", () => { location.hash = "#/overdue?month=" + $("overdue-month").value; });
  $("overdue-print").addEventListener("click", () => window.print());
}
