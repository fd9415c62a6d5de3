// The server's API as this browser uses it: enrolled like a phone (a device id and a refresh
// token kept in localStorage), access tokens refreshed before they expire.
"use strict";

/// A random UUID (v4) from `crypto.getRandomValues`, which every browser offers, also on a
/// page opened by a LAN name over plain HTTP (`crypto.randomUUID` is for secure contexts only).
export function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const cred = () => JSON.parse(localStorage.getItem("posync.cred") || "null");

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = "Bearer " + token;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  const j = await r.json().catch(() => null);
  if (!r.ok) {
    const e = new Error((j && j.error && j.error.message) || "HTTP " + r.status);
    e.code = j && j.error && j.error.code;
    throw e;
  }
  return j;
}

/// How long an access token lives, from its own claims (`exp - iat`), so that a tablet whose
/// clock is off still refreshes when the token is near its end, not on every call.
function lifetimeMs(jwt) {
  try {
    const b64 = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    return Math.max(0, (claims.exp - claims.iat) * 1000);
  } catch {
    return 0;
  }
}

function keep(c, access) {
  c.access = access;
  c.access_until = Date.now() + lifetimeMs(access.token) - 60000;
  localStorage.setItem("posync.cred", JSON.stringify(c));
}

let refreshing = null;

/// A valid access token: the one held, or one refresh shared by every call that needs it.
async function token() {
  const c = cred();
  if (!c) throw new Error("not signed in");
  if (c.access && c.access_until > Date.now()) return c.access.token;
  if (!refreshing) {
    refreshing = send("POST", "/v1/auth/token", { device: c.device, refresh_token: c.refresh_token })
      .then((access) => { keep(c, access); return access.token; })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

export async function get(path) {
  return send("GET", path, undefined, await token());
}

export async function post(path, body) {
  return send("POST", path, body, await token());
}

/// Enrol this browser as a new device through `path` (a code or a PIN) and keep its credential.
async function newDevice(path, body) {
  const device = uuid();
  const label = "browser " + (navigator.platform || "");
  const r = await send("POST", path, Object.assign({ device, label }, body));
  keep({ device, user: r.user, role: r.role, refresh_token: r.refresh_token }, r.access);
  localStorage.setItem("posync.last_user", r.user);
  return r;
}

/// Enrol this browser with a one-time code.
export const signIn = (code) => newDevice("/v1/auth/enrol", { code });

/// Sign in again with the user's id and PIN (set after a first sign-in with a code).
export const signInWithPin = (user, pin) => newDevice("/v1/auth/signin", { user, pin });

/// Set the user's PIN (6 to 12 digits).
export async function setPin(pin) {
  return post("/v1/auth/pin", { pin });
}

/// Revoke this browser's device on the server, then forget it here (even if the server
/// could not be reached: the credential must not stay behind on a shared tablet).
export async function signOut() {
  try {
    if (cred()) await post("/v1/auth/logout", undefined);
  } finally {
    localStorage.removeItem("posync.cred");
  }
}
