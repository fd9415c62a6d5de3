// The puskesmas web app: sign-in, navigation by the address (#/conflicts, #/conflicts/ID),
// language switch, sign-out that revokes this browser's device.
"use strict";
import { cred, get, setPin, signIn, signInWithPin, signOut } from "./api.js";
import { t, translate, getLang, setLang } from "./i18n.js";
import { bindQueue, saveDecision, setUnits, showConflict, showQueue } from "./conflicts.js";
import { bindSearch, setUnitNames, showChild, showSearch } from "./child.js";
import { setDuplicateUnits, showDuplicates } from "./duplicates.js";
import { bindOverdue, setOverdueUnits, showOverdue } from "./overdue.js";
import { bindMonth, setMonthUnits, showMonth } from "./month.js";
import { $ } from "./dom.js";

const VIEWS = ["login", "queue", "resolve", "people", "child", "duplicates", "overdue", "month", "pin-setup"];

function showView(id) {
  for (const v of VIEWS) $(v).classList.toggle("hidden", v !== id);
  if (id === "login") {
    $("pin-user").value = $("pin-user").value || localStorage.getItem("posync.last_user") || "";
    $("pin-banner").classList.add("hidden");
  }
  $("logout").classList.toggle("hidden", id === "login");
  $("nav").classList.toggle("hidden", id === "login");
}

// A route whose answer comes after a newer route's must not show itself over it.
let routeSeq = 0;

async function route() {
  const mine = ++routeSeq;
  const show = (id) => { if (mine === routeSeq) showView(id); };
  if (!cred()) { show("login"); return; }
  const [path, query] = (location.hash || "#/month").split("?");
  const params = new URLSearchParams(query || "");
  const [, view, id] = path.split("/");
  $("app-error").textContent = "";
  try {
    if (view === "conflicts" && id) await showConflict(show, decodeURIComponent(id));
    else if (view === "people" && id) await showChild(show, decodeURIComponent(id));
    else if (view === "people") await showSearch(show, params.get("q") || "");
    else if (view === "month") await showMonth(show, params.get("unit"), params.get("month"));
    else if (view === "pin") show("pin-setup");
    else if (view === "duplicates") await showDuplicates(show);
    else if (view === "overdue") await showOverdue(show, params.get("month"));
    else await showQueue(show);
  } catch (e) {
    if (e.code === "unauthenticated" || e.code === "invalid_credential" || e.code === "device_revoked") {
      localStorage.removeItem("posync.cred");
      showView("login");
    } else {
      $("app-error").textContent = e.message;
    }
  }
}

async function loadMe() {
  const me = await get("/v1/me");
  setUnits(me.units);
  setUnitNames(me.units);
  setDuplicateUnits(me.units);
  setOverdueUnits(me.units);
  setMonthUnits(me.units);
  $("who").textContent = me.name || me.user;
  $("pin-banner").classList.toggle("hidden", me.has_pin);
}

async function signedIn() {
  await loadMe();
  if (location.hash === "#/month") await route(); else location.hash = "#/month";
}

$("pin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    await signInWithPin($("pin-user").value.trim(), $("pin").value);
    $("pin").value = "";
    await signedIn();
  } catch (err) { $("login-error").textContent = err.message; }
});
$("pin-setup-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("pin-setup-error").textContent = "";
  $("pin-setup-done").textContent = "";
  const pin = $("pin-new").value;
  if (pin !== $("pin-again").value) { $("pin-setup-error").textContent = t("pin_mismatch"); return; }
  if (!/^\d{6,12}$/.test(pin)) { $("pin-setup-error").textContent = t("pin_shape"); return; }
  try {
    await setPin(pin);
    $("pin-new").value = "";
    $("pin-again").value = "";
    $("pin-setup-done").textContent = t("pin_saved");
    $("pin-banner").classList.add("hidden");
  } catch (err) { $("pin-setup-error").textContent = err.message; }
});
$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    await signIn($("code").value);
    $("code").value = "";
    await signedIn();
  } catch (err) { $("login-error").textContent = err.message; }
});
$("lang").addEventListener("click", () => {
  setLang(getLang() === "id" ? "en" : "id");
  translate();
  $("lang").textContent = t("lang");
  route();
});
$("logout").addEventListener("click", async () => {
  await signOut().catch(() => {});
  $("who").textContent = "";
  showView("login");
  $("login-error").textContent = t("signed_out");
});
$("back").addEventListener("click", () => { location.hash = "#/conflicts"; });
$("save").addEventListener("click", () => saveDecision(() => { location.hash = "#/conflicts"; }));
window.addEventListener("hashchange", route);
bindQueue(route);
bindSearch();
bindOverdue();
bindMonth();

translate();
$("lang").textContent = t("lang");
if (cred()) loadMe().then(route, () => showView("login")); else showView("login");
