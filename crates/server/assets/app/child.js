// A child's page: identity, every visit with its z-scores and status in words, the WHO
// growth charts (drawn by the server as SVG) and immunisations given and overdue. And the
// search that finds a child by name.
"use strict";
import { get } from "./api.js";
import { t, fmt, date, age, num, getLang } from "./i18n.js";
import { $, el } from "./dom.js";

let unitNames = {};

export function setUnitNames(units) {
  unitNames = Object.fromEntries(units.map((u) => [u.id, u.name]));
}

export async function showSearch(show, query) {
  show("people");
  $("people-q").value = query || "";
  const list = await get("/v1/people" + (query ? "?q=" + encodeURIComponent(query) : ""));
  const body = $("people-rows");
  body.textContent = "";
  for (const p of list) {
    body.append(el("tr", {},
      el("td", {}, el("a", { href: "#/people/" + p.person_id, textContent: p.name })),
      el("td", {}, age(p.birth_date)),
      el("td", {}, unitNames[p.posyandu] || p.posyandu),
      el("td", {}, date(p.last_visit))));
  }
  $("people-empty").classList.toggle("hidden", list.length > 0);
}

export function bindSearch() {
  $("people-form").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = "#/people?q=" + encodeURIComponent($("people-q").value.trim());
  });
}

function statusCell(v, key) {
  if (v.invalid) return t("invalid_visit");
  const z = v.z[key];
  if (z === undefined) return "—";
  const s = v.status[key];
  return num(z, 2) + (s ? " · " + s[getLang()] : "");
}

function inlineSvg(svg) {
  const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
  if (doc.querySelector("parsererror")) return el("p", { class: "error", textContent: "chart" });
  return document.importNode(doc.documentElement, true);
}

export async function showChild(show, id) {
  const c = await get("/v1/people/" + encodeURIComponent(id) + "?lang=" + getLang());
  show("child");
  $("child-name").textContent = c.name;
  $("child-who").textContent = [
    c.sex === "F" ? t("girl") : t("boy"),
    t("born") + " " + date(c.birth_date) + " (" + age(c.birth_date) + ")",
    c.mother_name ? t("mother") + " " + c.mother_name : null,
    c.posyandu_name || c.posyandu,
  ].filter(Boolean).join(" · ");
  const latest = c.visits[c.visits.length - 1];
  const now = $("child-now");
  now.textContent = "";
  if (latest) {
    for (const key of ["wfa", "lhfa", "wflh"]) {
      const s = latest.status[key];
      if (!s) continue;
      now.append(el("li", { class: "status status-" + s.code }, el("strong", { textContent: t("ind_" + key) + ": " }), s[getLang()]));
    }
  }
  const charts = $("child-charts");
  charts.textContent = "";
  for (const key of ["wfa", "lhfa", "wflh"]) {
    if (c.charts[key]) charts.append(el("figure", { class: "chart" }, inlineSvg(c.charts[key])));
  }
  const body = $("child-visits");
  body.textContent = "";
  for (const v of c.visits.slice().reverse()) {
    body.append(el("tr", {},
      el("td", {}, date(v.session_date)), el("td", {}, v.age_months + " " + t("months")),
      el("td", {}, fmt("weight_g", v.weight_g)), el("td", {}, fmt("length_mm", v.length_mm)),
      el("td", {}, statusCell(v, "wfa")), el("td", {}, statusCell(v, "lhfa")), el("td", {}, statusCell(v, "wflh")),
      el("td", {}, v.immunisations.join(", "))));
  }
  const given = Object.entries(c.immunisations_given).map(([a, d]) => a + " (" + date(d) + ")");
  $("child-given").textContent = given.length ? given.join(", ") : "—";
  $("child-overdue").textContent = c.immunisations_overdue.length ? c.immunisations_overdue.join(", ") : t("none_overdue");
  $("child-overdue").classList.toggle("warn", c.immunisations_overdue.length > 0);
  $("child-due").textContent = c.immunisations_due.length ? c.immunisations_due.join(", ") : "—";
}
