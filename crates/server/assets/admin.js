"use strict";
const T = {
  id: { title: "Konflik data posyandu", logout: "Keluar", login: "Masuk", login_help: "Masukkan kode pendaftaran dari admin dinas kesehatan.", login_button: "Masuk", queue: "Antrean konflik", queue_help: "Dua kader mencatat nilai berbeda untuk data yang sama. Pilih nilai yang benar.", posyandu: "Posyandu", field: "Data", values: "Nilai", since: "Sejak", queue_empty: "Tidak ada konflik. Semua data sudah cocok.", back: "← Kembali", other: "Atau nilai yang sudah diperbaiki:", save: "Simpan keputusan", by: "oleh", history: "Pengukuran sebelumnya", choose: "Pilih satu nilai atau isi nilai yang diperbaiki.", lang: "English", born: "lahir", shown: "ditampilkan sekarang" },
  en: { title: "Posyandu data conflicts", logout: "Sign out", login: "Sign in", login_help: "Enter the enrolment code from the district health office admin.", login_button: "Sign in", queue: "Conflict queue", queue_help: "Two kader recorded different values for the same data. Choose the right one.", posyandu: "Posyandu", field: "Field", values: "Values", since: "Since", queue_empty: "No conflicts. All data agrees.", back: "← Back", other: "Or a corrected value:", save: "Save decision", by: "by", history: "Earlier measurements", choose: "Choose a value or enter a corrected one.", lang: "Bahasa Indonesia", born: "born", shown: "shown now" },
};
const FIELDS = {
  weight_g: { id: "Berat badan", en: "Weight", unit: "g" }, length_mm: { id: "Panjang/tinggi badan", en: "Length/height", unit: "mm" },
  head_circ_mm: { id: "Lingkar kepala", en: "Head circumference", unit: "mm" }, muac_mm: { id: "LiLA", en: "MUAC", unit: "mm" },
  bp_systolic: { id: "Tekanan darah sistolik", en: "Systolic pressure", unit: "mmHg" }, bp_diastolic: { id: "Tekanan darah diastolik", en: "Diastolic pressure", unit: "mmHg" },
  birth_date: { id: "Tanggal lahir", en: "Birth date", unit: "" }, sex: { id: "Jenis kelamin", en: "Sex", unit: "" },
};
let lang = localStorage.getItem("posync.lang") || "id";
const t = (k) => T[lang][k] || k;
const fieldName = (f) => (FIELDS[f] ? FIELDS[f][lang] : f);
const fmt = (field, v) => {
  if (typeof v === "number" && field === "weight_g") return (v / 1000).toFixed(1) + " kg";
  if (typeof v === "number" && FIELDS[field] && FIELDS[field].unit === "mm") return (v / 10).toFixed(1) + " cm";
  if (typeof v === "number" && FIELDS[field]) return v + " " + FIELDS[field].unit;
  return String(v);
};
const $ = (id) => document.getElementById(id);
const show = (id) => { for (const s of ["login", "queue", "resolve"]) $(s).classList.toggle("hidden", s !== id); $("logout").classList.toggle("hidden", id === "login"); };
function translate() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
  $("lang").textContent = t("lang");
}

// ---- credentials: this browser is enrolled like a phone ----
const cred = () => JSON.parse(localStorage.getItem("posync.cred") || "null");
async function post(path, body, token) {
  const r = await fetch(path, { method: "POST", headers: Object.assign({ "content-type": "application/json" }, token ? { authorization: "Bearer " + token } : {}), body: JSON.stringify(body) });
  const j = await r.json().catch(() => null);
  if (!r.ok) throw new Error((j && j.error && j.error.message) || ("HTTP " + r.status));
  return j;
}
async function token() {
  const c = cred();
  if (!c) throw new Error("not signed in");
  if (c.access && c.access.expires_at * 1000 > Date.now() + 60000) return c.access.token;
  c.access = await post("/v1/auth/token", { device: c.device, refresh_token: c.refresh_token });
  localStorage.setItem("posync.cred", JSON.stringify(c));
  return c.access.token;
}
async function api(path, body) {
  const tok = await token();
  if (body !== undefined) return post(path, body, tok);
  const r = await fetch(path, { headers: { authorization: "Bearer " + tok } });
  const j = await r.json().catch(() => null);
  if (!r.ok) throw new Error((j && j.error && j.error.message) || ("HTTP " + r.status));
  return j;
}

// ---- views ----
async function loadQueue() {
  show("queue");
  const list = await api("/v1/conflicts");
  const body = $("queue-rows");
  body.textContent = "";
  for (const c of list) {
    const tr = document.createElement("tr");
    tr.className = "row";
    tr.dataset.id = c.id;
    const vals = c.values.map((v) => fmt(c.field, v.value) + (v.user ? " (" + v.user + ")" : "")).join(" · ");
    for (const text of [c.posyandu, fieldName(c.field), vals, new Date(c.opened_at * 1000).toLocaleString(lang)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => openConflict(c.id));
    body.appendChild(tr);
  }
  $("queue-empty").classList.toggle("hidden", list.length > 0);
}

let current = null, chosen = null;
async function openConflict(id) {
  const c = await api("/v1/conflicts/" + encodeURIComponent(id));
  current = c; chosen = null;
  show("resolve");
  $("resolve-error").textContent = "";
  $("other").value = "";
  const rec = c.record || {};
  $("resolve-title").textContent = fieldName(c.field) + (rec.name ? " — " + rec.name : "");
  $("resolve-who").textContent = c.posyandu + (rec.birth_date ? " · " + t("born") + " " + rec.birth_date : "");
  const hist = $("history");
  hist.textContent = "";
  if (c.history && c.history.length) {
    const h = document.createElement("p");
    h.className = "muted";
    h.textContent = t("history") + ": " + c.history.map((x) => x.date + " " + fmt("weight_g", x.weight_g) + " / " + fmt("length_mm", x.length_mm)).join("; ");
    hist.appendChild(h);
  }
  const box = $("resolve-values");
  box.textContent = "";
  for (const v of c.values) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "value";
    b.dataset.value = JSON.stringify(v.value);
    const big = document.createElement("div");
    big.className = "big";
    big.textContent = fmt(c.field, v.value);
    const who = document.createElement("div");
    who.className = "muted";
    who.textContent = t("by") + " " + (v.user || v.device || "server") + (v.z !== undefined && v.z !== null ? " · z = " + v.z.toFixed(2) : "");
    b.append(big, who);
    if (v.winner) { const s = document.createElement("span"); s.className = "badge"; s.textContent = t("shown"); b.appendChild(s); }
    b.addEventListener("click", () => { chosen = v.value; for (const x of box.children) x.classList.toggle("chosen", x === b); $("other").value = ""; });
    box.appendChild(b);
  }
}

async function save() {
  let value = chosen;
  const other = $("other").value.trim();
  if (other !== "") value = /^-?\d+$/.test(other) ? parseInt(other, 10) : other;
  if (value === null) { $("resolve-error").textContent = t("choose"); return; }
  try {
    await api("/v1/conflicts/" + encodeURIComponent(current.id) + "/resolve", { value });
    await loadQueue();
  } catch (e) { $("resolve-error").textContent = e.message; }
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    const device = crypto.randomUUID();
    const r = await post("/v1/auth/enrol", { code: $("code").value, device, label: "browser " + navigator.platform });
    localStorage.setItem("posync.cred", JSON.stringify({ device, user: r.user, refresh_token: r.refresh_token, access: r.access }));
    await loadQueue();
  } catch (err) { $("login-error").textContent = err.message; }
});
$("lang").addEventListener("click", () => { lang = lang === "id" ? "en" : "id"; localStorage.setItem("posync.lang", lang); translate(); if (!$("queue").classList.contains("hidden")) loadQueue(); });
$("logout").addEventListener("click", () => { localStorage.removeItem("posync.cred"); show("login"); });
$("back").addEventListener("click", loadQueue);
$("save").addEventListener("click", save);
translate();
if (cred()) loadQueue().catch(() => show("login")); else show("login");
