// The month of a puskesmas, village or posyandu: SKDN with D/S and N/D, nutrition
// prevalence, immunisation coverage, overdue doses, KEK and hypertension, as the report API
// computes them; a year's trend as charts drawn by the server; the units below, to drill
// down district → puskesmas → village → posyandu. Printable.
"use strict";
import { get } from "./api.js";
import { t, num, getLang } from "./i18n.js";
import { $, el } from "./dom.js";

const LEVELS = ["district", "puskesmas", "village", "posyandu"];
const BELOW = { district: "puskesmas", puskesmas: "village", village: "posyandu" };
let units = [];
let byId = {};

export function setMonthUnits(list) {
  units = list;
  byId = Object.fromEntries(list.map((u) => [u.id, u]));
}

/// The deepest unit above every posyandu the user sees: where their month starts.
function home() {
  const chains = units.filter((u) => u.kind === "posyandu").map((p) => {
    const chain = [];
    for (let u = p; u; u = byId[u.parent]) chain.unshift(u.id);
    return chain;
  });
  if (!chains.length) return null;
  let common = null;
  for (let i = 0; chains.every((c) => c[i] !== undefined && c[i] === chains[0][i]); i++) {
    if (LEVELS.includes(byId[chains[0][i]].kind)) common = chains[0][i];
  }
  return common;
}

const pct = (v) => (v === null || v === undefined ? "—" : num(v, 1) + " %");
const ratio = (r) => (r && r.of ? (100 * r.n) / r.of : null);

/// The figures of one row, in the order of the table's columns: [key, shown, raw].
function figures(r) {
  return [
    ["s", String(r.s), r.s], ["k", String(r.k), r.k], ["d", String(r.d), r.d], ["n", String(r.n), r.n],
    ["d_over_s", pct(r.d_over_s_percent), r.d_over_s_percent], ["n_over_d", pct(r.n_over_d_percent), r.n_over_d_percent],
    ["stunting", pct(ratio(r.stunting)), ratio(r.stunting)], ["wasting", pct(ratio(r.wasting)), ratio(r.wasting)],
    ["underweight", pct(ratio(r.underweight)), ratio(r.underweight)], ["overweight", pct(ratio(r.overweight)), ratio(r.overweight)],
    ["idl", pct(ratio(r.basic_immunisation_12_23m)), ratio(r.basic_immunisation_12_23m)],
    ["overdue", String(r.children_with_overdue_doses), r.children_with_overdue_doses],
    ["kek", pct(ratio(r.pregnant_kek)), ratio(r.pregnant_kek)], ["high_bp", pct(ratio(r.adults_high_bp)), ratio(r.adults_high_bp)],
  ];
}

function cells(r) {
  return figures(r).map(([key, shown, raw]) => el("td", { class: "num", "data-key": key, "data-value": raw === null || raw === undefined ? "" : String(raw), textContent: shown }));
}

function header() {
  const keys = ["s", "k", "d", "n", "d_over_s", "n_over_d", "stunting", "wasting", "underweight", "overweight", "idl", "overdue", "kek", "high_bp"];
  return el("tr", {}, el("th", { textContent: t("unit") }), ...keys.map((k) => el("th", { class: "num", textContent: t("fig_" + k), title: t("fig_" + k + "_long") })));
}

function breadcrumb(unitId) {
  const nav = $("month-trail");
  nav.textContent = "";
  const chain = [];
  for (let u = byId[unitId]; u; u = byId[u.parent]) if (LEVELS.includes(u.kind)) chain.unshift(u);
  chain.forEach((u, i) => {
    if (i) nav.append(" › ");
    nav.append(i === chain.length - 1 ? el("span", { textContent: u.name }) : el("a", { href: "#/month?unit=" + u.id + "&month=" + $("month-month").value, textContent: u.name }));
  });
}

function svg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  return doc.querySelector("parsererror") ? el("p", { class: "error", textContent: "chart" }) : document.importNode(doc.documentElement, true);
}

export async function showMonth(show, unitArg, monthArg) {
  const unit = unitArg || home();
  const month = monthArg || $("month-month").value || new Date().toISOString().slice(0, 7);
  $("month-month").value = month;
  const kind = (byId[unit] && byId[unit].kind) || "posyandu";
  const below = BELOW[kind];
  const q = (level) => "/v1/reports/monthly?month=" + month + "&level=" + level + (unit ? "&unit=" + encodeURIComponent(unit) : "");
  const [own, rows, trend] = await Promise.all([
    get(q(kind)),
    below ? get(q(below)) : Promise.resolve(null),
    get("/v1/reports/trend?months=12&month=" + month + "&charts=" + getLang() + (unit ? "&unit=" + encodeURIComponent(unit) : "")),
  ]);
  show("month");
  $("month-title").textContent = t("month_of") + " " + ((byId[unit] && byId[unit].name) || "") + " — " + monthName(month);
  breadcrumb(unit);
  const mine = own.rows.find((r) => r.unit === unit) || own.rows[0];
  const summary = $("month-summary");
  summary.textContent = "";
  if (mine) {
    summary.append(el("table", { class: "figures" }, el("thead", {}, header()), el("tbody", {}, el("tr", { "data-unit": mine.unit }, el("th", { textContent: mine.name }), ...cells(mine)))));
  }
  const charts = $("month-charts");
  charts.textContent = "";
  for (const key of ["skdn", "nutrition", "care"]) if (trend.charts && trend.charts[key]) charts.append(el("figure", { class: "chart" }, svg(trend.charts[key])));
  const table = $("month-rows");
  table.textContent = "";
  $("month-below").classList.toggle("hidden", !rows);
  if (rows) {
    $("month-below-title").textContent = t("level_" + below);
    table.append(el("thead", {}, header()));
    const body = el("tbody");
    for (const r of rows.rows) {
      const name = el("a", { href: "#/month?unit=" + r.unit + "&month=" + month, textContent: r.name });
      body.append(el("tr", { "data-unit": r.unit }, el("th", {}, name), ...cells(r)));
    }
    table.append(body);
  }
}

function monthName(m) {
  const [y, mm] = m.split("-").map(Number);
  return new Intl.DateTimeFormat(getLang() === "id" ? "id-ID" : "en-GB", { month: "long", year: "numeric", timeZone: "UTC" }).format(new Date(Date.UTC(y, mm - 1, 1)));
}

export function bindMonth() {
  $("month-month").addEventListener("change", () => {
    const unit = new URLSearchParams((location.hash.split("?")[1]) || "").get("unit");
    location.hash = "#/month?month=" + $("month-month").value + (unit ? "&unit=" + unit : "");
  });
  $("month-print").addEventListener("click", () => window.print());
}
