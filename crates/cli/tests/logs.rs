//! The server's log, as an operator reads it (real binary): one line per request with the
//! method, route template, status, duration, the device when known and the error code when
//! refused; JSON lines on request, plain text without colour codes in a file; and never a
//! child's name, a token, an enrolment code or an API key.

mod common;

use posync_model::{DeviceId, Role};
use posync_replica::Replica;
use posync_testkit::{DAY, Generator, posyandu};
use std::ffi::OsStr;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_with_its_code_and_no_name_token_or_code_leaks() {
    let dir = tempfile::tempdir().expect("dir");
    let site = common::Site::new(dir.path());
    let p = posyandu("log-melati");
    let mut phone = Replica::open(dir.path().join("phone.sqlite")).expect("replica");
    let device: DeviceId = phone.device();
    let token = site.grant(device, Role::Kader, std::slice::from_ref(&p));
    let session = phone.start_session(&p, DAY).expect("session");
    let mut visit = Generator::new(7).child_visit();
    visit.name = "Kirana Larasati Unik".into();
    phone.record_visit(session, visit, 1).expect("record");
    // A read-only API key for the posyandu, created at the console.
    let db = site.db.to_str().expect("utf-8 path");
    let created = common::posync_ok(
        dir.path(),
        &["admin", "--db", db, "api-key", "create", "--unit", p.as_str(), "--label", "BI"],
    );
    let created: serde_json::Value = serde_json::from_str(created.trim()).expect("the key as JSON");
    let (api_key, api_key_id) = (created["key"].as_str().expect("key"), created["id"].as_str().expect("id"));

    for format in ["json", "text"] {
        let log = dir.path().join(format!("server-{format}.log"));
        let server = site.serve_logged(&[OsStr::new("--log-format"), OsStr::new(format)], &log);
        let http = reqwest::Client::new();
        // Refused: no token; a forged token; an unknown enrolment code; no such route.
        let s = http.post(format!("{}/v1/sync", server.url)).body(vec![1, 2, 3]).send().await.expect("send");
        assert_eq!(s.status().as_u16(), 401);
        let s = http
            .get(format!("{}/v1/conflicts", server.url))
            .bearer_auth("forged.token.value")
            .send()
            .await
            .expect("send");
        assert_eq!(s.status().as_u16(), 401);
        let code = "WXYZ-2345-QRST";
        let s = http
            .post(format!("{}/v1/auth/enrol", server.url))
            .json(&serde_json::json!({ "code": code, "device": DeviceId::new_random(), "label": "hp kader" }))
            .send()
            .await
            .expect("send");
        assert!(s.status().is_client_error());
        assert_eq!(
            http.get(format!("{}/no/such/route", server.url)).send().await.expect("send").status().as_u16(),
            404
        );
        // An API key: read a report (accepted), sync (refused).
        let s = http.get(format!("{}/v1/reports/monthly", server.url)).bearer_auth(api_key).send().await.expect("send");
        assert_eq!(s.status().as_u16(), 200);
        let s = http.post(format!("{}/v1/sync", server.url)).bearer_auth(api_key).send().await.expect("send");
        assert_eq!(s.status().as_u16(), 403);
        // Accepted: a phone's sync with the visit of a named child.
        phone.sync(&server.url, &token).await.expect("sync");
        let status = tokio::task::spawn_blocking(move || server.signal_and_wait("TERM", Duration::from_secs(20)))
            .await
            .expect("wait");
        assert!(status.success());

        let text = std::fs::read_to_string(&log).expect("log");
        for secret in ["Kirana", "Larasati", token.as_str(), code, "forged.token.value", api_key, &api_key[4..]] {
            assert!(!text.contains(secret), "{format} log holds no name, token or code ({secret:?})");
        }
        assert!(!text.contains('\u{1b}'), "{format} log in a file has no colour codes");
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("request")).collect();
        // The status field, not any "200" in a timestamp.
        let status = |l: &str, n: u16| l.contains(&format!("\"status\":{n}")) || l.contains(&format!("status={n}"));
        let refused_sync = lines
            .iter()
            .find(|l| l.contains("/v1/sync") && status(l, 401) && l.contains("unauthenticated"))
            .unwrap_or_else(|| panic!("{format}: the refused sync is logged with its code:\n{text}"));
        assert!(refused_sync.contains("POST"));
        assert!(lines.iter().any(|l| l.contains("/v1/auth/enrol") && l.contains("invalid_credential")), "{text}");
        assert!(lines.iter().any(|l| l.contains("(no route)") && status(l, 404)), "{text}");
        assert!(lines.iter().any(|l| l.contains("/v1/sync") && l.contains("api_key_not_allowed")), "{text}");
        let report = lines
            .iter()
            .find(|l| l.contains("/v1/reports/monthly") && status(l, 200))
            .unwrap_or_else(|| panic!("{format}: the key's report read is logged:\n{text}"));
        assert!(report.contains(api_key_id), "with the key's id, never its secret: {report}");
        let synced = lines
            .iter()
            .find(|l| l.contains("/v1/sync") && status(l, 200))
            .unwrap_or_else(|| panic!("{format}: the accepted sync is logged:\n{text}"));
        assert!(synced.contains(&device.to_string()), "with its device: {synced}");
        if format == "json" {
            for line in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("JSON line: {e}: {line}"));
                assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
            }
        }
    }
}
