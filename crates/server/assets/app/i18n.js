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
    mother: "ibu", due_now: "Jadwal bulan ini", login_pin: "Masuk dengan PIN", login_code: "Masuk dengan kode pendaftaran", user_id: "ID pengguna", pin: "PIN",
    pin_title: "Buat PIN", pin_help: "Dengan PIN, Anda bisa masuk lagi di perangkat ini atau perangkat lain tanpa meminta kode baru.",
    pin_new: "PIN baru (6–12 angka)", pin_again: "Ulangi PIN", pin_banner: "Buat PIN agar bisa masuk lagi tanpa kode baru.",
    pin_mismatch: "Kedua PIN tidak sama.", pin_shape: "PIN terdiri dari 6 sampai 12 angka.", pin_saved: "PIN tersimpan.",
    nav_month: "Laporan bulan", month_of: "Bulan", unit: "Wilayah", below: "Rincian", print_month: "Cetak",
    level_puskesmas: "Per puskesmas", level_village: "Per desa/kelurahan", level_posyandu: "Per posyandu",
    trend: "Tren 12 bulan", month_help: "Angka dihitung dari data yang sudah tersinkron, seperti laporan bulanan.",
    fig_s: "S", fig_k: "K", fig_d: "D", fig_n: "N", fig_d_over_s: "D/S", fig_n_over_d: "N/D", fig_stunting: "Stunting",
    fig_wasting: "Wasting", fig_underweight: "BB kurang", fig_overweight: "Gizi lebih", fig_idl: "IDL 12–23 bln",
    fig_overdue: "Imunisasi terlambat", fig_kek: "Bumil KEK", fig_high_bp: "Hipertensi",
    fig_s_long: "Semua balita di wilayah", fig_k_long: "Balita yang punya buku KIA/KMS", fig_d_long: "Balita ditimbang bulan ini",
    fig_n_long: "Balita yang naik berat badannya", fig_d_over_s_long: "Partisipasi penimbangan", fig_n_over_d_long: "Keberhasilan (naik berat badan)",
    fig_stunting_long: "Pendek dan sangat pendek (PB/U < −2 SD)", fig_wasting_long: "Gizi kurang dan buruk (BB/PB < −2 SD)",
    fig_underweight_long: "Berat badan kurang (BB/U < −2 SD)", fig_overweight_long: "Gizi lebih (BB/PB > +2 SD)",
    fig_idl_long: "Imunisasi dasar lengkap, anak 12–23 bulan", fig_overdue_long: "Anak dengan imunisasi terlambat",
    fig_kek_long: "Ibu hamil dengan LiLA < 23,5 cm", fig_high_bp_long: "Dewasa dengan tekanan darah ≥ 140/90",
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
    mother: "mother", due_now: "Due now", login_pin: "Sign in with a PIN", login_code: "Sign in with an enrolment code", user_id: "User id", pin: "PIN",
    pin_title: "Set a PIN", pin_help: "With a PIN you can sign in again on this or another device without asking for a new code.",
    pin_new: "New PIN (6–12 digits)", pin_again: "PIN again", pin_banner: "Set a PIN to sign in again without a new code.",
    pin_mismatch: "The two PINs differ.", pin_shape: "A PIN is 6 to 12 digits.", pin_saved: "PIN saved.",
    nav_month: "Month report", month_of: "Month of", unit: "Area", below: "Breakdown", print_month: "Print",
    level_puskesmas: "By puskesmas", level_village: "By village", level_posyandu: "By posyandu",
    trend: "12-month trend", month_help: "Figures from the synced data, as in the monthly report.",
    fig_s: "S", fig_k: "K", fig_d: "D", fig_n: "N", fig_d_over_s: "D/S", fig_n_over_d: "N/D", fig_stunting: "Stunting",
    fig_wasting: "Wasting", fig_underweight: "Underweight", fig_overweight: "Overweight", fig_idl: "Basic imm. 12–23 m",
    fig_overdue: "Overdue doses", fig_kek: "Pregnant KEK", fig_high_bp: "High BP",
    fig_s_long: "All children under five in the area", fig_k_long: "Children with a KIA book/growth card", fig_d_long: "Children weighed this month",
    fig_n_long: "Children who gained weight", fig_d_over_s_long: "Weighing participation", fig_n_over_d_long: "Weight gain among those weighed",
    fig_stunting_long: "Stunted and severely stunted (length-for-age < −2 SD)", fig_wasting_long: "Wasted (weight-for-length < −2 SD)",
    fig_underweight_long: "Underweight (weight-for-age < −2 SD)", fig_overweight_long: "Overweight (weight-for-length > +2 SD)",
    fig_idl_long: "Basic immunisation complete, children 12–23 months", fig_overdue_long: "Children with overdue doses",
    fig_kek_long: "Pregnant women with MUAC < 23.5 cm", fig_high_bp_long: "Adults with blood pressure ≥ 140/90",
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

/// The unit a field is shown and typed in (`kg`, `cm`), or "" for one without.
export const unitOf = (field) => (FIELDS[field] && FIELDS[field].unit) || "";

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
