// The conflict queue: fields two kader recorded differently, named for people (posyandu,
// child, kader), filtered and paged; one conflict side by side, decided by choosing a value
// or typing a corrected one in the unit shown.
"use strict";
import { get, post } from "./api.js";
import { t, fieldName, fmt, fmtAll, parseTyped, unitOf, date, age, when, INDICATORS, getLang, num } from "./i18n.js";
import { $, el } from "./dom.js";

const PAGE = 25;
const AGES = { "": null, "0-11": [0, 12], "12-23": [12, 24], "24-59": [24, 60], "60+": [60, null] };
const state = { offset: 0, posyandu: "", field: "", age: "" };
let units = [];


export function setUnits(list) {
  units = list;
}

function filterQuery() {
  const q = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE + 1) });
  if (state.posyandu) q.set("posyandu", state.posyandu);
  if (state.field) q.set("field", state.field);
  const range = AGES[state.age];
  if (range) {
    q.set("age_months_min", String(range[0]));
    if (range[1] !== null) q.set("age_months_max", String(range[1]));
  }
  return q.toString();
}

function fillFilters() {
  const pos = $("f-posyandu");
  if (pos.options.length === 0) {
    pos.append(el("option", { value: "" }));
    for (const u of units.filter((u) => u.kind === "posyandu")) pos.append(el("option", { value: u.id, textContent: u.name }));
    const field = $("f-field");
    field.append(el("option", { value: "" }));
    for (const f of ["weight_g", "length_mm", "head_circ_mm", "muac_mm", "bp_systolic", "bp_diastolic", "birth_date", "name", "sex"]) {
      field.append(el("option", { value: f, "data-field": f }));
    }
    const ages = $("f-age");
    for (const key of Object.keys(AGES)) ages.append(el("option", { value: key, "data-age": key }));
  }
  pos.options[0].textContent = t("all");
  $("f-field").options[0].textContent = t("all");
  for (const o of $("f-field").options) if (o.dataset.field) o.textContent = fieldName(o.dataset.field);
  for (const o of $("f-age").options) o.textContent = o.dataset.age ? t("age_" + o.dataset.age.replace("-", "_").replace("+", "")) : t("all");
}

/// Values of a conflict as one line: "9,8 kg (Euis Nurhayati) · 8,9 kg (Nining Supriatin)".
function valuesLine(c) {
  const shown = fmtAll(c.field, c.values.map((v) => v.value));
  return c.values.map((v, i) => shown[i] + " (" + (v.user_name || v.user || t("unknown_user")) + ")").join(" · ");
}

export async function showQueue(show) {
  fillFilters();
  const list = await get("/v1/conflicts?" + filterQuery());
  show("queue");
  const more = list.length > PAGE;
  const body = $("queue-rows");
  body.textContent = "";
  for (const c of list.slice(0, PAGE)) {
    const who = c.subject_name ? c.subject_name + (c.subject_birth_date ? " (" + age(c.subject_birth_date) + ")" : "") : "—";
    const link = el("a", { href: "#/conflicts/" + encodeURIComponent(c.id), textContent: fieldName(c.field) });
    const tr = el("tr", { class: "row", "data-id": c.id },
      el("td", {}, c.posyandu_name || c.posyandu), el("td", {}, who), el("td", {}, link),
      el("td", {}, valuesLine(c)), el("td", {}, when(c.opened_at)));
    tr.addEventListener("click", (e) => { if (e.target !== link) location.hash = link.getAttribute("href"); });
    body.appendChild(tr);
  }
  $("queue-empty").classList.toggle("hidden", list.length > 0);
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = !more;
  $("page-no").textContent = t("page") + " " + (Math.floor(state.offset / PAGE) + 1);
}

export function bindQueue(reload) {
  for (const [id, key] of [["f-posyandu", "posyandu"], ["f-field", "field"], ["f-age", "age"]]) {
    $(id).addEventListener("change", () => { state[key] = $(id).value; state.offset = 0; reload(); });
  }
  $("page-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); reload(); });
  $("page-next").addEventListener("click", () => { state.offset += PAGE; reload(); });
}

let current = null, chosen = null;

function zLine(v) {
  if (v.z === undefined || v.z === null) return "";
  const ind = INDICATORS[v.z_indicator];
  const name = ind ? ind[getLang()] : "z";
  const meaning = v.z_status ? ": " + v.z_status[getLang()] : "";
  return name + " z = " + num(v.z, 2) + meaning;
}

export async function showConflict(show, id) {
  const c = await get("/v1/conflicts/" + encodeURIComponent(id));
  current = c; chosen = null;
  show("resolve");
  $("resolve-error").textContent = "";
  $("other").value = "";
  const rec = c.record || {};
  const name = rec.name || c.subject_name;
  const title = $("resolve-title");
  title.textContent = fieldName(c.field) + (name ? " — " : "");
  const personId = rec.person_id || (c.collection === "people" ? c.record_id : null);
  if (name) title.append(personId ? el("a", { href: "#/people/" + personId, textContent: name }) : name);
  const born = rec.birth_date || c.subject_birth_date;
  const parts = [c.posyandu_name || c.posyandu];
  if (born) parts.push(t("born") + " " + date(born) + " (" + age(born) + ")");
  if (rec.session_date) parts.push(t("session") + " " + date(rec.session_date));
  $("resolve-who").textContent = parts.join(" · ");
  $("other-unit").textContent = unitOf(c.field);
  const hist = $("history");
  hist.textContent = "";
  if (c.history && c.history.length) {
    const lines = c.history.map((x) => date(x.date) + ": " + fmt("weight_g", x.weight_g) + " / " + fmt("length_mm", x.length_mm));
    hist.appendChild(el("p", { class: "muted", textContent: t("history") + ": " + lines.join("; ") }));
  }
  const box = $("resolve-values");
  box.textContent = "";
  const shown = fmtAll(c.field, c.values.map((v) => v.value));
  c.values.forEach((v, i) => {
    const b = el("button", { type: "button", class: "value", "data-value": JSON.stringify(v.value) },
      el("div", { class: "big", textContent: shown[i] }),
      el("div", { class: "muted", textContent: t("by") + " " + (v.user_name || v.user || t("unknown_user")) }),
      el("div", { class: "muted", textContent: zLine(v) }));
    if (v.winner) b.appendChild(el("span", { class: "badge", textContent: t("shown") }));
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", () => {
      chosen = v.value;
      for (const x of box.children) { x.classList.toggle("chosen", x === b); x.setAttribute("aria-pressed", String(x === b)); }
      $("other").value = "";
    });
    box.appendChild(b);
  });
}

export async function saveDecision(done) {
  let value = chosen;
  const other = $("other").value;
  if (other.trim() !== "") {
    const typed = parseTyped(current.field, other);
    if (typed.error) { $("resolve-error").textContent = typed.error; return; }
    value = typed.value;
  }
  if (value === null) { $("resolve-error").textContent = t("choose"); return; }
  try {
    await post("/v1/conflicts/" + encodeURIComponent(current.id) + "/resolve", { value });
    done();
  } catch (e) { $("resolve-error").textContent = e.message; }
}
