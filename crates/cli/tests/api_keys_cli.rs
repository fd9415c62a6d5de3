//! Read-only API keys and CSV exports at the server console, with the shipped binary:
//! `posync admin api-key create|list|revoke` against a running server's database, the key
//! used over HTTP, and `posync export csv` writing the documented columns.

mod common;

use common::District;

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_lists_and_revokes_a_key_and_exports_csv() {
    let district = District::start();
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--db", "posync.sqlite", "api-key"];
        all.extend_from_slice(args);
        district.ok(&all)
    };
    let created = json(&admin(&["create", "--unit", "pkm-banjar-1", "--label", "Dasbor BI"]));
    let (id, key) = (created["id"].as_str().expect("id"), created["key"].as_str().expect("the secret, once"));
    assert!(key.starts_with("psk_"), "{created}");
    let listed = json(&admin(&["list"]));
    assert_eq!((listed["id"].as_str(), &listed["last_used_at"]), (Some(id), &serde_json::Value::Null));
    assert!(!listed.to_string().contains(&key[4..]), "the list never shows the secret: {listed}");

    let http = reqwest::Client::new();
    let url = format!("{}/v1/export/people.csv?unit=pos-hegarsari-melati-1", district.server.url);
    let got = http.get(&url).bearer_auth(key).send().await.expect("send");
    assert_eq!(got.status().as_u16(), 200);
    assert!(got.text().await.expect("body").starts_with("posyandu,person_id,name,"));
    let used = json(&admin(&["list"]));
    assert!(used["last_used_at"].is_string(), "the use shows as a time: {used}");

    admin(&["revoke", id]);
    let refused = http.get(&url).bearer_auth(key).send().await.expect("send");
    assert_eq!(refused.status().as_u16(), 401);
    assert!(json(&admin(&["list"]))["revoked_at"].is_string());
    let unknown = district.run(&["admin", "--db", "posync.sqlite", "api-key", "revoke", "ak-000000000000"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("api-key list"), "the error says what to do next");

    // The console's export: the documented columns, to a file.
    district.ok(&["export", "csv", "people", "--unit", "pkm-banjar-1", "--month", "2026-11", "--out", "people.csv"]);
    let written = std::fs::read_to_string(district.path().join("people.csv")).expect("people.csv");
    assert_eq!(written.lines().next(), Some(posync_server::export_csv::PEOPLE_COLUMNS.join(",").as_str()));
    let visits = district.ok(&["export", "csv", "visits", "--from", "2026-11-01", "--to", "2026-11-30"]);
    assert_eq!(visits.lines().next(), Some(posync_server::export_csv::VISIT_COLUMNS.join(",").as_str()));
    let bad = district.run(&["export", "csv", "visits", "--unit", "no-such-unit"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("admin units"));
}
