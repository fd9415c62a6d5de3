//! Signing in again with a PIN (issue #16 item 1): a bidan enrolled with a code sets a PIN,
//! signs out (her browser's device revoked), and signs in from a new device id with user and
//! PIN alone. Every failure that could tell whether a user exists is one and the same 401;
//! five attempts without a success lock the user for 15 minutes (429 with Retry-After, even
//! for the right PIN); malformed PINs are refused; the audit log has the PIN set, the
//! sign-ins and the lock, and never the PIN.

use posync_model::DeviceId;
use posync_store::prelude::*;
use posync_testkit::{TestServer, access_token, api, district_server, enrolled};
use serde_json::{Value, json};

const PIN: &str = "73914682";
const WRONG: &str = "73914680";

/// `POST /v1/auth/signin` (no token): the status, the Retry-After header and the body.
async fn sign_in(server: &TestServer, user: &str, pin: &str, device: DeviceId) -> (u16, Option<u64>, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/auth/signin", server.url()))
        .json(&json!({ "user": user, "pin": pin, "device": device, "label": "Chromium, puskesmas" }))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, retry_after, resp.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidan_signs_in_again_with_her_pin_and_wrong_pins_lock_her_out_for_15_minutes() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let browser = enrolled(&server, &admin, "bidan-0001", &dir).await;
    let token = access_token(&browser);

    // Only 6 to 12 digits make a PIN; a token is needed to set one.
    for bad in ["abcdef", "12345", "1234567890123", "12 3456"] {
        let (status, body) = api(&server, "POST", &token, "/v1/auth/pin", Some(json!({ "pin": bad }))).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"), "{bad:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains("6 to 12 digits"), "{body}");
    }
    let (status, _) = api(&server, "POST", "not-a-token", "/v1/auth/pin", Some(json!({ "pin": PIN }))).await;
    assert_eq!(status, 401);
    let (status, body) = api(&server, "POST", &token, "/v1/auth/pin", Some(json!({ "pin": PIN }))).await;
    assert_eq!(status, 204, "{body}");

    // Signing out revokes the browser's device.
    let (status, _) = api(&server, "POST", &token, "/v1/auth/logout", None).await;
    assert_eq!(status, 204);
    assert_eq!(api(&server, "GET", &token, "/v1/me", None).await.0, 401);

    // User and PIN from a new device id: an enrolment's answer, and a working credential.
    let second = DeviceId::new_random();
    let (status, _, answer) = sign_in(&server, "bidan-0001", PIN, second).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["user"].as_str(), answer["role"].as_str()), (Some("bidan-0001"), Some("puskesmas_officer")));
    assert!(answer["refresh_token"].as_str().is_some_and(|t| !t.is_empty()) && answer["refresh_expires_at"].is_i64());
    let access = answer["access"]["token"].as_str().expect("an access token");
    let (status, me) = api(&server, "GET", access, "/v1/me", None).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("bidan-0001")), "{me}");
    let refresh = json!({ "device": second, "refresh_token": answer["refresh_token"] });
    assert_eq!(api(&server, "POST", "", "/v1/auth/token", Some(refresh)).await.0, 200, "the refresh token works");
    // The signed-out device id stays revoked.
    let (status, _, body) = sign_in(&server, "bidan-0001", PIN, browser.device()).await;
    assert_eq!((status, code(&body)), (401, "device_revoked"), "{body}");

    // A wrong PIN, a user without a PIN and an unknown user get the very same answer.
    let (status, _, wrong) = sign_in(&server, "bidan-0001", WRONG, DeviceId::new_random()).await;
    assert_eq!((status, code(&wrong)), (401, "invalid_credential"), "{wrong}");
    let (_, _, no_pin) = sign_in(&server, "kader-0001", PIN, DeviceId::new_random()).await;
    let (_, _, unknown) = sign_in(&server, "bidan-9999", PIN, DeviceId::new_random()).await;
    assert_eq!(no_pin, wrong);
    assert_eq!(unknown, wrong);
    let (status, _, body) = sign_in(&server, "bidan-0001", "12345", DeviceId::new_random()).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "a malformed PIN is refused before any check");

    // Five attempts without a success (the revoked device's, then four wrong PINs) lock her
    // out: even the right PIN is refused until 15 minutes have passed.
    for _ in 0..3 {
        assert_eq!(sign_in(&server, "bidan-0001", WRONG, DeviceId::new_random()).await.0, 401);
    }
    let (status, retry_after, body) = sign_in(&server, "bidan-0001", PIN, DeviceId::new_random()).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    assert_eq!(retry_after, Some(900), "{body}");
    server.clock.advance(14 * 60);
    let (status, retry_after, _) = sign_in(&server, "bidan-0001", PIN, DeviceId::new_random()).await;
    assert_eq!((status, retry_after), (429, Some(60)));
    let (_, _, other) = sign_in(&server, "kader-0001", PIN, DeviceId::new_random()).await;
    assert_eq!(other, wrong, "another user is not locked");
    server.clock.advance(60);
    let third = DeviceId::new_random();
    let (status, _, answer) = sign_in(&server, "bidan-0001", PIN, third).await;
    assert_eq!(status, 200, "15 minutes later the right PIN works: {answer}");
    let access = answer["access"]["token"].as_str().expect("an access token");
    assert_eq!(api(&server, "GET", access, "/v1/me", None).await.0, 200);

    // Audited: the PIN set, each sign-in and the lock, never the PIN or its hash.
    let log = server.store.audit_log(0, 10_000).await.expect("audit log");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "pin_set").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "signed_in").count(), 2, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "pin_locked").count(), 1, "{actions:?}");
    let signed_in: Vec<&str> = log.iter().filter(|e| e.action == "signed_in").map(|e| e.target.as_str()).collect();
    assert_eq!(signed_in, vec![second.to_string(), third.to_string()]);
    let text = serde_json::to_string(&log).expect("json");
    assert!(!text.contains(PIN) && !text.contains(WRONG), "a PIN in the audit log");
    assert!(!text.contains("argon2"), "a PIN hash in the audit log");
    server.stop().await;
}
