// Drives the conflict admin page in a real headless Chromium, as a puskesmas officer on a
// tablet-sized screen: sign in with an enrolment code, see the queue, open the conflict,
// choose a value, save, see the queue empty; then switch to English.
//
//   node admin-page.mjs <server-url> <enrolment-code> <value-to-choose> <screenshot.png>
//
// Exits 0 and prints "ok" when every step held; prints the failing step and exits 1.
import { chromium } from "playwright-core";

const [url, code, value, shot] = process.argv.slice(2);
const fail = (msg) => {
  console.error("FAIL: " + msg);
  process.exit(1);
};
if (!url || !code || !value || !shot) fail("usage: admin-page.mjs URL CODE VALUE SCREENSHOT");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const timer = setTimeout(() => fail("timed out after 90 s"), 90_000);
try {
  const page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
  await page.goto(url + "/admin");
  if ((await page.textContent("h1")) !== "Konflik data posyandu") fail("the page opens in Indonesian");
  await page.fill("#code", code);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#queue-rows tr.row", { timeout: 15_000 });
  const rows = await page.$$("#queue-rows tr.row");
  if (rows.length !== 1) fail(`one conflict in the queue, saw ${rows.length}`);
  const rowText = await rows[0].textContent();
  if (!rowText.includes("Berat badan")) fail("the row names the field in Indonesian: " + rowText);
  await rows[0].click();
  await page.waitForSelector("#resolve-values .value", { timeout: 15_000 });
  const values = await page.$$("#resolve-values .value");
  if (values.length !== 2) fail(`two values side by side, saw ${values.length}`);
  await page.screenshot({ path: shot.replace(/\.png$/, "-resolve.png") });
  await page.click(`#resolve-values .value[data-value="${value}"]`);
  await page.click("#save");
  await page.waitForSelector("#queue-empty:not(.hidden)", { timeout: 15_000 });
  if ((await page.$$("#queue-rows tr.row")).length !== 0) fail("the resolved conflict is gone from the queue");
  await page.click("#lang");
  if ((await page.textContent("h1")) !== "Posyandu data conflicts") fail("English is available");
  await page.screenshot({ path: shot });
  console.log("ok");
} catch (e) {
  fail(e.stack || String(e));
} finally {
  clearTimeout(timer);
  await browser.close();
}
