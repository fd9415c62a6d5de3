// Words and numbers as a bidan reads them: Indonesian first, English available; measures in
// the units people use (kg, cm), with a decimal comma in Indonesian.
"use strict";

const T = {
  id: {
    title: "posync — Posyandu", logout: "Keluar", login: "Masuk", lang: "English",
    login_help: "Masukkan kode pendaftaran dari admin dinas kesehatan.", login_button: "Masuk",
    nav_conflicts: "Konflik data",
    queue: "Antrean konflik", queue_help: "Dua kader mencatat nilai berbeda untuk data yang sama. Pilih nilai yang benar.",
    posyandu: "Posyandu", person: "Nama", field: "Data", values: "Nilai", since: "Sejak",
    queue_empty: "Tidak ada konflik. Semua data sudah cocok.", back: "← Kembali",
    other: "Atau nilai yang sudah diperbaiki", save: "Simpan keputusan", by: "oleh",
    history: "Pengukuran sebelumnya", choose: "Pilih satu nilai atau isi nilai yang diperbaiki.",
    born: "lahir", shown: "ditampilkan sekarang", all: "Semua", age: "Umur", filter: "Saring",
    prev: "← Sebelumnya", next: "Berikutnya →", page: "Halaman", unknown_user: "perangkat tidak dikenal",
    age_0_11: "0–11 bulan", age_12_23: "12–23 bulan", age_24_59: "24–59 bulan", age_60: "5 tahun ke atas",
    bad_number: "Tulis angka dalam {unit}, misalnya {example}.", months: "bulan", years: "tahun",
    session: "Sesi", signed_out: "Anda sudah keluar. Perangkat ini tidak dapat dipakai lagi tanpa kode baru.",
    nav_people: "Anak", people: "Cari anak", people_help: "Ketik sebagian nama anak.", search: "Cari",
    people_empty: "Tidak ada anak dengan nama itu.", last_visit: "Kunjungan terakhir", girl: "Perempuan", boy: "Laki-laki",
    growth: "Grafik pertumbuhan (standar WHO)", visits: "Kunjungan", date: "Tanggal", weight: "Berat", length: "Panjang/tinggi",
    ind_wfa: "BB/U", ind_lhfa: "PB/U", ind_wflh: "BB/PB", immunisation: "Imunisasi", given: "Sudah diberikan",
    overdue: "Terlambat", none_overdue: "Tidak ada yang terlambat", now_status: "Status gizi terakhir",
    invalid_visit: "nilai tidak mungkin, tidak dihitung", nav_duplicates: "Data ganda", duplicates: "Orang yang terdaftar dua kali",
    duplicates_help: "Pilih data yang disimpan; data lainnya digabungkan ke dalamnya. Semua kunjungan tetap tersimpan.",
    duplicates_empty: "Tidak ada data ganda.", merge: "Gabungkan", keep_which: "Simpan data yang mana?",
    choose_keep: "Pilih data yang disimpan.", why_nik: "NIK sama", why_mother_nik_and_birth_date: "NIK ibu dan tanggal lahir sama",
    why_name_birth_date_and_mother: "Nama, tanggal lahir dan nama ibu sama",
    nav_overdue: "Kunjungan rumah", overdue_title: "Imunisasi terlambat — daftar kunjungan rumah",
    overdue_help: "Anak yang belum mendapat imunisasi sesuai jadwal, per posyandu.", month: "Bulan", print: "Cetak",
    overdue_empty: "Tidak ada anak dengan imunisasi terlambat.", children: "anak",
    col_person: "Nama anak", col_mother: "Nama ibu", col_address: "Alamat", col_born: "Tanggal lahir (umur)", col_doses: "Imunisasi terlambat",
  },
  en: {
    title: "posync — Posyandu", logout: "Sign out", login: "Sign in", lang: "Bahasa Indonesia",
    login_help: "Enter the enrolment code from the district health office admin.", login_button: "Sign in",
    nav_conflicts: "Data conflicts",
    queue: "Conflict queue", queue_help: "Two kader recorded different values for the same data. Choose the right one.",
    posyandu: "Posyandu", person: "Name", field: "Field", values: "Values", since: "Since",
    queue_empty: "No conflicts. All data agrees.", back: "← Back",
    other: "Or a corrected value", save: "Save decision", by: "by",
    history: "Earlier measurements", choose: "Choose a value or enter a corrected one.",
    born: "born", shown: "shown now", all: "All", age: "Age", filter: "Filter",
    prev: "← Previous", next: "Next →", page: "Page", unknown_user: "unknown device",
    age_0_11: "0–11 months", age_12_23: "12–23 months", age_24_59: "24–59 months", age_60: "5 years and over",
    bad_number: "Write a number in {unit}, e.g. {example}.", months: "months", years: "years",
    session: "Session", signed_out: "You are signed out. This device cannot be used again without a new code.",
    nav_people: "Children", people: "Find a child", people_help: "Type part of the child's name.", search: "Search",
    people_empty: "No child with that name.", last_visit: "Last visit", girl: "Girl", boy: "Boy",
    growth: "Growth charts (WHO standards)", visits: "Visits", date: "Date", weight: "Weight", length: "Length/height",
    ind_wfa: "Weight-for-age", ind_lhfa: "Length-for-age", ind_wflh: "Weight-for-length", immunisation: "Immunisation", given: "Given",
    overdue: "Overdue", none_overdue: "Nothing overdue", now_status: "Latest nutrition status",
    invalid_visit: "impossible value, not counted", nav_duplicates: "Duplicates", duplicates: "People registered twice",
    duplicates_help: "Choose the record to keep; the other is merged into it. Every visit is kept.",
    duplicates_empty: "No duplicates.", merge: "Merge", keep_which: "Which record to keep?",
    choose_keep: "Choose the record to keep.", why_nik: "Same NIK", why_mother_nik_and_birth_date: "Same mother's NIK and birth date",
    why_name_birth_date_and_mother: "Same name, birth date and mother's name",
    nav_overdue: "Home visits", overdue_title: "Overdue immunisations — home visit list",
    overdue_help: "Children who have not had their doses on schedule, by posyandu.", month: "Month", print: "Print",
    overdue_empty: "No child has an overdue dose.", children: "children",
    col_person: "Child", col_mother: "Mother", col_address: "Address", col_born: "Birth date (age)", col_doses: "Overdue doses",
  },
};

// Each field: its name, the unit it is shown and typed in, and how many stored units make one.
export const FIELDS = {
  weight_g: { id: "Berat badan", en: "Weight", unit: "kg", per: 1000, decimals: 1, exact: 3 },
  length_mm: { id: "Panjang/tinggi badan", en: "Length/height", unit: "cm", per: 10, decimals: 1, exact: 1 },
  head_circ_mm: { id: "Lingkar kepala", en: "Head circumference", unit: "cm", per: 10, decimals: 1, exact: 1 },
  muac_mm: { id: "LiLA", en: "MUAC", unit: "cm", per: 10, decimals: 1, exact: 1 },
  waist_mm: { id: "Lingkar perut", en: "Waist", unit: "cm", per: 10, decimals: 1, exact: 1 },
  bp_systolic: { id: "Tekanan darah sistolik", en: "Systolic pressure", unit: "mmHg", per: 1, decimals: 0, exact: 0 },
  bp_diastolic: { id: "Tekanan darah diastolik", en: "Diastolic pressure", unit: "mmHg", per: 1, decimals: 0, exact: 0 },
  hb_g_l: { id: "Hemoglobin", en: "Haemoglobin", unit: "g/dL", per: 10, decimals: 1, exact: 1 },
  blood_sugar_mg_dl: { id: "Gula darah", en: "Blood sugar", unit: "mg/dL", per: 1, decimals: 0, exact: 0 },
  gestational_weeks: { id: "Usia kehamilan", en: "Gestational age", unit: "minggu", per: 1, decimals: 0, exact: 0 },
  birth_date: { id: "Tanggal lahir", en: "Birth date" }, sex: { id: "Jenis kelamin", en: "Sex" },
  name: { id: "Nama", en: "Name" }, group: { id: "Kelompok", en: "Group" },
};

export const INDICATORS = {
  wfa: { id: "BB/U (berat badan menurut umur)", en: "Weight-for-age" },
  lhfa: { id: "PB/U atau TB/U (panjang/tinggi menurut umur)", en: "Length/height-for-age" },
  hcfa: { id: "LK/U (lingkar kepala menurut umur)", en: "Head circumference-for-age" },
  muacfa: { id: "LiLA/U (lingkar lengan menurut umur)", en: "MUAC-for-age" },
};

let lang = localStorage.getItem("posync.lang") === "en" ? "en" : "id";
export const getLang = () => lang;
export function setLang(l) { lang = l; localStorage.setItem("posync.lang", l); }
export const t = (k) => T[lang][k] || k;
export const fieldName = (f) => (FIELDS[f] ? FIELDS[f][lang] : f.startsWith("immunisations/") ? (lang === "id" ? "Imunisasi " : "Immunisation ") + f.slice(14) : f);

/// A number with `decimals` places, a decimal comma in Indonesian.
export function num(v, decimals) {
  return new Intl.NumberFormat(lang === "id" ? "id-ID" : "en-GB", { minimumFractionDigits: decimals, maximumFractionDigits: decimals }).format(v);
}

/// A stored value as a person reads it: kg and cm, or as it is. `exact` shows every stored
/// digit (grams), for values that would otherwise look the same.
export function fmt(field, v, exact) {
  const f = FIELDS[field];
  if (typeof v !== "number" || !f || !f.unit) return v === null || v === undefined ? "—" : String(v);
  return num(v / f.per, exact ? f.exact : f.decimals) + " " + f.unit;
}

/// The values of one conflict, each as shown: with every digit when the rounded forms collide.
export function fmtAll(field, values) {
  const rounded = values.map((v) => fmt(field, v, false));
  const collide = new Set(rounded).size < rounded.length;
  return values.map((v) => fmt(field, v, collide));
}

/// What a person typed, in the unit shown, as the stored value: "8,2" or "8.2" kg → 8200 g.
/// Returns { value } or { error }.
export function parseTyped(field, text) {
  const s = text.trim();
  const f = FIELDS[field];
  if (!f || !f.unit) return { value: s };
  const m = /^(\d+)(?:[.,](\d+))?$/.exec(s);
  const example = num(f.per === 1000 ? 8.2 : f.per === 10 ? 72.5 : 110, f.decimals);
  if (!m || (m[2] || "").length > f.exact) return { error: t("bad_number").replace("{unit}", f.unit).replace("{example}", example) };
  const value = Math.round(Number(m[1] + "." + (m[2] || "0")) * f.per);
  return { value };
}

/// A date `YYYY-MM-DD` as people write it.
export function date(iso) {
  if (!iso) return "—";
  const d = new Date(iso + "T00:00:00Z");
  return new Intl.DateTimeFormat(lang === "id" ? "id-ID" : "en-GB", { day: "numeric", month: "long", year: "numeric", timeZone: "UTC" }).format(d);
}

/// Age from a birth date, as a posyandu says it: months under two, years and months after.
export function age(birthIso, on) {
  if (!birthIso) return "";
  const b = new Date(birthIso + "T00:00:00Z"), d = on || new Date();
  let months = (d.getUTCFullYear() - b.getUTCFullYear()) * 12 + d.getUTCMonth() - b.getUTCMonth();
  if (d.getUTCDate() < b.getUTCDate()) months -= 1;
  if (months < 24) return months + " " + t("months");
  return Math.floor(months / 12) + " " + t("years") + " " + (months % 12) + " " + t("months");
}

export function when(unixSeconds) {
  return new Intl.DateTimeFormat(lang === "id" ? "id-ID" : "en-GB", { dateStyle: "medium", timeStyle: "short" }).format(new Date(unixSeconds * 1000));
}

export function translate(root) {
  document.documentElement.lang = lang;
  for (const el of (root || document).querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}
