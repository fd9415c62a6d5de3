// Drives the puskesmas web app in a real headless Chromium, as a bidan on a tablet reaching
// the server by a LAN name over plain HTTP (no secure context): sign in with an enrolment
// code, read the conflict queue (names, exact values), resolve a weight by typing it in kg
// with a decimal comma, switch to English, check accessibility with axe-core, sign out.
// Screenshots of each page at tablet and phone width go to SHOT_DIR.
//
//   node admin-page.mjs <server-url> <enrolment-code> <shot-dir>
//
// Environment: CHROMIUM (default /usr/bin/chromium), LAN_HOST (default puskesmas.lan).
// Exits 0 and prints "ok" when every step held; prints the failing step and exits 1.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");
const [serverUrl, code, shotDir] = process.argv.slice(2);
const fail = (msg) => {
  console.error("FAIL: " + msg);
  process.exit(1);
};
if (!serverUrl || !code || !shotDir) fail("usage: admin-page.mjs URL CODE SHOT_DIR");
mkdirSync(shotDir, { recursive: true });
const lanHost = process.env.LAN_HOST || "puskesmas.lan";
const port = new URL(serverUrl).port;
const url = `http://${lanHost}:${port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", `--host-resolver-rules=MAP ${lanHost} 127.0.0.1`],
});
const timer = setTimeout(() => fail("timed out after 120 s"), 120_000);

/// Serious or critical accessibility violations on the page as it stands.
async function axe(page, where) {
  await page.addScriptTag({ path: AXE });
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => v.id + ": " + v.nodes.map((n) => n.target.join(" ")).join(", "));
  });
  if (found.length) fail(`accessibility (${where}): ${found.join("; ")}`);
}

const text = async (page, sel) => (await page.textContent(sel)) || "";
let current = null;

try {
  // bypassCSP only lets the test inject axe-core; the app itself runs under its CSP.
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, bypassCSP: true });
  const page = await context.newPage();
  current = page;
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url + "/admin");
  if (await page.evaluate(() => window.isSecureContext)) fail("the page should be opened outside a secure context");
  if ((await text(page, "h1")) !== "posync — Posyandu") fail("the page opens");
  if ((await page.getAttribute("html", "lang")) !== "id") fail("the page opens in Indonesian");
  await axe(page, "sign-in");
  await page.screenshot({ path: `${shotDir}/signin-1280.png` });
  await page.fill("#code", code);
  await page.click("#login-form button[type=submit]");

  // The month of her puskesmas first: the figures are the report API's, with a year's charts.
  await page.waitForSelector("#month-summary table", { timeout: 15_000 });
  if (errors.length) fail("script errors: " + errors.join("; "));
  await page.evaluate(() => { location.hash = "#/month?month=2026-11"; });
  await page.waitForFunction(() => document.querySelector("#month-title").textContent.includes("November 2026"), null, { timeout: 15_000 });
  if (!(await text(page, "#month-title")).includes("Puskesmas Banjar 1")) fail("the month opens at her puskesmas: " + await text(page, "#month-title"));
  if ((await page.$$("#month-charts svg")).length !== 3) fail("three trend charts");
  const mismatch = await page.evaluate(async () => {
    const c = JSON.parse(localStorage.getItem("posync.cred"));
    const get = async (u) => (await fetch(u, { headers: { authorization: "Bearer " + c.access.token } })).json();
    const pct = (r) => (r.of ? (100 * r.n) / r.of : null);
    const expect = (r) => ({ s: r.s, k: r.k, d: r.d, n: r.n, d_over_s: r.d_over_s_percent, n_over_d: r.n_over_d_percent,
      stunting: pct(r.stunting), wasting: pct(r.wasting), underweight: pct(r.underweight), overweight: pct(r.overweight),
      idl: pct(r.basic_immunisation_12_23m), overdue: r.children_with_overdue_doses, kek: pct(r.pregnant_kek), high_bp: pct(r.adults_high_bp) });
    const bad = [];
    const check = (tr, row) => {
      const want = expect(row);
      for (const td of tr.querySelectorAll("td[data-key]")) {
        const w = want[td.dataset.key];
        const got = td.dataset.value === "" ? null : Number(td.dataset.value);
        if (!(w === got || (w !== null && got !== null && Math.abs(w - got) < 1e-9))) bad.push(`${row.unit} ${td.dataset.key}: page ${got}, API ${w}`);
      }
    };
    const own = await get("/v1/reports/monthly?month=2026-11&level=puskesmas&unit=pkm-banjar-1");
    check(document.querySelector("#month-summary tr[data-unit]"), own.rows[0]);
    const villages = await get("/v1/reports/monthly?month=2026-11&level=village&unit=pkm-banjar-1");
    const rows = document.querySelectorAll("#month-rows tbody tr");
    if (rows.length !== villages.rows.length) bad.push(`rows: page ${rows.length}, API ${villages.rows.length}`);
    for (const r of villages.rows) {
      const tr = document.querySelector(`#month-rows tbody tr[data-unit="${r.unit}"]`);
      if (tr) check(tr, r); else bad.push("no row for " + r.unit);
    }
    if (own.rows[0].d < 1) bad.push("the seeded visits are weighed this month");
    return bad;
  });
  if (mismatch.length) fail("the month differs from the report API: " + mismatch.join("; "));
  await axe(page, "month");
  await page.screenshot({ path: `${shotDir}/month-1280.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${shotDir}/month-390.png`, fullPage: true });
  if (await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1)) fail("the month page scrolls sideways at 390 px");
  await page.setViewportSize({ width: 1280, height: 800 });
  // Drill down to the village, then its posyandu; the trail leads back.
  await page.click("#month-rows tbody tr[data-unit='kel-hegarsari'] a");
  await page.waitForFunction(() => document.querySelector("#month-trail a") && document.querySelector("#month-rows tbody tr[data-unit='pos-hegarsari-melati-1']"), null, { timeout: 15_000 });
  await page.click("#month-rows tbody tr[data-unit='pos-hegarsari-melati-1'] a");
  await page.waitForFunction(() => document.querySelector("#month-title").textContent.includes("Posyandu Melati 1"), null, { timeout: 15_000 });
  if (!(await page.isHidden("#month-below"))) fail("a posyandu has nothing below it");
  if (!(await text(page, "#month-trail")).includes("Puskesmas Banjar 1")) fail("the trail leads back to the puskesmas");

  await page.click("nav a[href='#/conflicts']");
  await page.waitForSelector("#queue-rows tr.row", { timeout: 15_000 });

  // The queue names people, not ids, and shows values that round alike with every digit.
  const rows = await page.$$("#queue-rows tr.row");
  if (rows.length !== 2) fail(`two conflicts in the queue, saw ${rows.length}`);
  const queue = await text(page, "#queue-rows");
  for (const want of ["Posyandu Melati 1", "Berat badan", "Euis Nurhayati", "Nining Supriatin", "7,167 kg", "7,181 kg", "12,8 kg", "11,9 kg"]) {
    if (!queue.includes(want)) fail(`the queue shows ${want}: ${queue}`);
  }
  if (/pos-hegarsari|kader-000/.test(queue)) fail("the queue shows ids: " + queue);
  if (!(await text(page, "#who")).includes("bidan") && (await text(page, "#who")).trim() === "") fail("the signed-in user is named");
  await axe(page, "queue");
  await page.screenshot({ path: `${shotDir}/conflicts-1280.png`, fullPage: true });

  // A filter that matches nothing, then back.
  await page.selectOption("#f-field", "length_mm");
  await page.waitForSelector("#queue-empty:not(.hidden)", { timeout: 15_000 });
  await page.selectOption("#f-field", "");
  await page.waitForSelector("#queue-rows tr.row", { timeout: 15_000 });

  // Open the 12,8 / 11,9 kg conflict; a wrong entry is refused in words, "12,35" kg is taken.
  const row = page.locator("#queue-rows tr.row", { hasText: "12,8 kg" });
  await row.locator("a").click();
  await page.waitForSelector("#resolve-values .value", { timeout: 15_000 });
  if ((await page.$$("#resolve-values .value")).length !== 2) fail("two values side by side");
  const detail = await text(page, "#resolve");
  if (!detail.includes("BB/U") || !/z = -?\d+,\d\d/.test(detail)) fail("z named by its indicator, in Indonesian: " + detail);
  if (!detail.includes("Posyandu Melati 1")) fail("the posyandu named in the detail: " + detail);
  await axe(page, "conflict");
  await page.screenshot({ path: `${shotDir}/conflict-1280.png`, fullPage: true });
  // The child's page, from the name: identity, three WHO charts with points, visits, status.
  const conflictUrl = page.url();
  const childName = await text(page, "#resolve-title a");
  if (!childName) fail("the child's name links to their page");
  await page.click("#resolve-title a");
  await page.waitForSelector("#child-charts svg", { timeout: 15_000 });
  if ((await page.$$("#child-charts svg")).length !== 3) fail("three growth charts");
  if ((await page.$$("#child-charts svg circle.point")).length < 3) fail("the child's measurements on the charts");
  const child = await text(page, "#child");
  for (const want of [childName, "Posyandu Melati 1", "BB/U", "Grafik pertumbuhan", "Terlambat"]) {
    if (!child.includes(want)) fail(`the child's page shows ${want}: ${child}`);
  }
  if ((await page.$$("#child-visits tr")).length < 1) fail("the child's visits are listed");
  await axe(page, "child");
  await page.screenshot({ path: `${shotDir}/child-1280.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${shotDir}/child-390.png`, fullPage: true });
  if (await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1)) fail("the child's page scrolls sideways at 390 px");
  await page.setViewportSize({ width: 1280, height: 800 });
  // Found again by searching part of the name.
  await page.click("nav a[href='#/people']");
  await page.fill("#people-q", childName.split(" ")[0].toLowerCase());
  await page.click("#people-form button[type=submit]");
  await page.waitForSelector("#people-rows tr", { timeout: 15_000 });
  if (!(await text(page, "#people-rows")).includes(childName)) fail("the search finds the child");
  await axe(page, "search");
  await page.screenshot({ path: `${shotDir}/people-1280.png`, fullPage: true });
  await page.goto(conflictUrl);
  await page.waitForSelector("#resolve-values .value", { timeout: 15_000 });

  await page.fill("#other", "12,3,5");
  await page.click("#save");
  if (!(await text(page, "#resolve-error")).includes("kg")) fail("a malformed number is explained in kg");
  await page.fill("#other", "12,35");
  await page.click("#save");
  await page.waitForFunction(() => !document.querySelector("#queue").classList.contains("hidden")
    && document.querySelectorAll("#queue-rows tr.row").length === 1, null, { timeout: 15_000 })
    .catch(async () => fail("the decided conflict left the queue: " + await page.evaluate(() => location.hash + " rows "
      + document.querySelectorAll("#queue-rows tr.row").length + " error " + document.getElementById("resolve-error").textContent
      + " app " + document.getElementById("app-error").textContent)));

  // Duplicates: the same girl registered twice (one NIK); keep one, merge the other.
  await page.click("nav a[href='#/duplicates']");
  await page.waitForSelector("#duplicate-list .pair", { timeout: 15_000 });
  const pairs = await page.$$("#duplicate-list .pair");
  if (pairs.length !== 1) fail(`one pair of duplicates, saw ${pairs.length}`);
  const pair = await text(page, "#duplicate-list");
  for (const want of ["NIK sama", "Siti Aisyah", "SITI AISYAH", "Posyandu Melati 1"]) {
    if (!pair.includes(want)) fail(`the duplicates show ${want}: ${pair}`);
  }
  await axe(page, "duplicates");
  await page.screenshot({ path: `${shotDir}/duplicates-1280.png`, fullPage: true });
  await page.click("#duplicate-list .pair button.primary");
  if (!(await text(page, "#duplicate-list")).includes("Pilih data yang disimpan")) fail("merging asks which record to keep");
  await page.check("#duplicate-list .pair input[type=radio] >> nth=0");
  await page.click("#duplicate-list .pair button.primary");
  await page.waitForSelector("#duplicates-empty:not(.hidden)", { timeout: 15_000 });

  // Home visits: children behind on their doses, with where they live, printable.
  await page.evaluate(() => { location.hash = "#/overdue?month=2026-11"; });
  await page.waitForSelector("#overdue-list table", { timeout: 15_000 });
  const overdue = await text(page, "#overdue-list");
  for (const want of ["Posyandu Melati 1", "Rina Marlina", "Yati Rostika", "Jl. Melati 3", "RT 2", "RW 5", "BCG"]) {
    if (!overdue.includes(want)) fail(`the home-visit list shows ${want}: ${overdue}`);
  }
  await axe(page, "overdue");
  await page.screenshot({ path: `${shotDir}/overdue-1280.png`, fullPage: true });
  await page.emulateMedia({ media: "print" });
  if (await page.isVisible("nav")) fail("the printed list leaves out the menu");
  await page.screenshot({ path: `${shotDir}/overdue-print.png`, fullPage: true });
  await page.emulateMedia({ media: "screen" });
  // From the list to the child: her mother named, the doses she is behind on.
  await page.click("#overdue-list a:has-text('Rina Marlina')");
  await page.waitForSelector("#child-charts svg", { timeout: 15_000 });
  const rina = await text(page, "#child");
  if (!rina.includes("Yati Rostika") || !rina.includes("BCG")) fail("a registered child's page names her mother and her overdue doses: " + rina);
  await page.click("nav a[href='#/conflicts']");
  await page.waitForSelector("#queue-rows tr.row", { timeout: 15_000 });

  // English, and a phone-sized screen.
  await page.click("#lang");
  await page.waitForFunction(() => document.documentElement.lang === "en");
  if (!(await text(page, "#queue h2")).includes("Conflict queue")) fail("English is available");
  await page.waitForFunction(() => document.querySelector("#queue-rows").textContent.includes("Weight"));
  await axe(page, "queue (en)");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: `${shotDir}/conflicts-390-en.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  if (overflow) fail("the page scrolls sideways at 390 px");
  // Every page in English, at phone and tablet width: English words, no Indonesian labels,
  // no serious accessibility violation, no sideways scrolling.
  const pages = [
    ["month", "#/month?month=2026-11", "#month-summary table", "Weighing participation"],
    ["people", "#/people?q=" + encodeURIComponent(childName.split(" ")[0]), "#people-rows tr", "Find a child"],
    ["child", null, "#child-charts svg", "Growth charts (WHO standards)"],
    ["duplicates", "#/duplicates", "#duplicates-empty:not(.hidden)", "No duplicates"],
    ["overdue", "#/overdue?month=2026-11", "#overdue-list table", "Overdue doses"],
  ];
  for (const [name, hash, ready, english] of pages) {
    if (hash) await page.evaluate((h) => { location.hash = h; }, hash);
    else await page.click("#people-rows a");
    await page.waitForSelector(ready, { timeout: 15_000 });
    const shown = await page.evaluate(() => document.querySelector("main").innerText
      + [...document.querySelectorAll("main [title]")].map((e) => e.title).join(" "));
    if (!shown.includes(english)) fail(`the ${name} page in English shows ${english}`);
    if (/Kembali|Simpan|Cari anak|Laporan bulan|Terlambat:/.test(shown)) fail(`Indonesian words on the ${name} page in English`);
    await axe(page, name + " (en)");
    for (const [w, h] of [[390, 844], [1280, 800]]) {
      await page.setViewportSize({ width: w, height: h });
      await page.screenshot({ path: `${shotDir}/${name}-${w}-en.png`, fullPage: true });
      if (await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1)) fail(`the ${name} page scrolls sideways at ${w} px`);
    }
  }
  await page.evaluate(() => { location.hash = "#/conflicts"; });
  await page.waitForSelector("#queue:not(.hidden)", { timeout: 15_000 });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("#lang");
  await page.waitForFunction(() => document.documentElement.lang === "id");
  await page.screenshot({ path: `${shotDir}/conflicts-390.png`, fullPage: true });

  // A PIN, so that signing in again needs no new code.
  if (!(await page.isVisible("#pin-banner"))) fail("a user without a PIN is offered to set one");
  await page.click("#pin-banner a");
  await page.waitForSelector("#pin-setup:not(.hidden)");
  await page.fill("#pin-new", "246810");
  await page.fill("#pin-again", "246811");
  await page.click("#pin-setup-form button[type=submit]");
  if (!(await text(page, "#pin-setup-error")).includes("tidak sama")) fail("two different PINs are refused");
  await page.fill("#pin-again", "246810");
  await page.click("#pin-setup-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#pin-setup-done").textContent !== "", null, { timeout: 15_000 });
  await axe(page, "pin");

  // Sign out: the credential is gone here, and the server refuses this device from now on.
  const device = await page.evaluate(() => JSON.parse(localStorage.getItem("posync.cred")).device);
  await page.click("#logout");
  await page.waitForSelector("#login:not(.hidden)", { timeout: 15_000 });
  if (await page.evaluate(() => localStorage.getItem("posync.cred"))) fail("the credential stays after sign-out");
  console.log("device " + device);

  // Back in with the user id (remembered) and the PIN: a wrong PIN is refused, the right one works.
  if ((await page.inputValue("#pin-user")) !== "bidan-0001") fail("the sign-in form remembers the user id");
  await page.fill("#pin", "111111");
  await page.click("#pin-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0, null, { timeout: 15_000 });
  await page.fill("#pin", "246810");
  await page.click("#pin-form button[type=submit]");
  await page.waitForSelector("#month-summary table", { timeout: 15_000 });
  if (!(await text(page, "#who")).trim()) fail("signed in again with the PIN");
  if (await page.isVisible("#pin-banner")) fail("no PIN offer once a PIN is set");
  const again = await page.evaluate(() => JSON.parse(localStorage.getItem("posync.cred")).device);
  console.log("pin-device " + again);
  if (errors.length) fail("script errors: " + errors.join("; "));
  console.log("ok");
} catch (e) {
  const state = current ? await current.evaluate(() => location.hash + " | error: " + document.getElementById("app-error").textContent
    + " | visible: " + [...document.querySelectorAll("main > section:not(.hidden)")].map((s) => s.id).join(",")).catch(() => "") : "";
  fail((e.stack || String(e)) + "\npage: " + state);
} finally {
  clearTimeout(timer);
  await browser.close();
}
