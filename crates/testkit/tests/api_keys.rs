//! Read-only API keys and the analysts' CSV exports, over HTTP on a real server: a district
//! admin creates a key for Puskesmas Banjar 1; it reads that unit's reports and exports and
//! nothing else; it is refused elsewhere, and at once after revocation; only a hash of it
//! is stored; each use is recorded. The exports list merged duplicates once and keep a
//! formula typed as a name inert.

use posync_model::{PersonId, PosyanduId, Sex};
use posync_replica::Replica;
use posync_testkit::{DAY, Generator, TestServer, access_token, district_server, enrolled};
use serde_json::{Value, json};

const FORMULA: &str = "=HYPERLINK(\"http://x\",\"klik\")";

use posync_testkit::registered_child as child;

struct World {
    server: TestServer,
    admin_token: String,
    /// A kader's access token (Puskesmas Banjar 1).
    kader_token: String,
    /// The surviving registration of the child registered twice, and the merged one.
    siti: PersonId,
    siti_twice: PersonId,
    _dir: tempfile::TempDir,
}

fn weigh(phone: &mut Replica, posyandu: &PosyanduId, person: PersonId, name: &str, seed: u64, now: i64) {
    let session = phone.start_session(posyandu, DAY).expect("session");
    let mut v = Generator::new(seed).child_visit();
    v.person_id = person;
    v.name = name.into();
    v.sex = Sex::Female;
    v.birth_date = time::macros::date!(2025 - 02 - 10);
    // A girl of 21 months, near the WHO medians.
    v.weight_g = Some(10_200 + 50 * seed as i64);
    v.length_mm = Some(835);
    v.lying = Some(true);
    v.head_circ_mm = None;
    v.muac_mm = Some(150);
    v.vitamin_a = None;
    v.immunisations.clear();
    phone.record_visit(session, v, now).expect("record");
}

impl World {
    /// The sample district: at Posyandu Melati 1 (Puskesmas Banjar 1) one girl registered
    /// twice by two kader and then merged, and a child whose name is a formula; at a
    /// posyandu of Puskesmas Purwaharja 1, another child.
    async fn new() -> Self {
        let (server, admin) = district_server(posync_proto::Limits::default()).await;
        let dir = tempfile::tempdir().expect("dir");
        let now = server.clock.now();
        let melati: PosyanduId = "pos-hegarsari-melati-1".parse().expect("id");
        let sakura: PosyanduId = "pos-purwaharja-sakura-4".parse().expect("id");
        let mut a = enrolled(&server, &admin, "kader-0001", &dir).await;
        let mut b = enrolled(&server, &admin, "kader-0002", &dir).await;
        let mut c = enrolled(&server, &admin, "kader-0204", &dir).await;
        let siti = a.register_person(&melati, child("Siti Aisyah", Some("3279015002250001")), now).expect("register");
        let siti_twice =
            b.register_person(&melati, child("SITI AISYAH ", Some("3279015002250001")), now).expect("register");
        let formula = b.register_person(&melati, child(FORMULA, None), now).expect("register");
        let far = c.register_person(&sakura, child("Anak Purwaharja", None), now).expect("register");
        weigh(&mut a, &melati, siti, "Siti Aisyah", 1, now);
        weigh(&mut b, &melati, siti_twice, "SITI AISYAH ", 2, now);
        weigh(&mut b, &melati, formula, FORMULA, 3, now);
        weigh(&mut c, &sakura, far, "Anak Purwaharja", 4, now);
        for phone in [&mut a, &mut b, &mut c] {
            phone.sync_enrolled(&server.url()).await.expect("sync");
        }
        let bidan = access_token(&enrolled(&server, &admin, "bidan-0001", &dir).await);
        let admin_token = access_token(&enrolled(&server, &admin, "dinkes-admin-01", &dir).await);
        let kader_token = access_token(&a);
        let world = Self { server, admin_token, kader_token, siti, siti_twice, _dir: dir };
        let (status, body) = world
            .call("POST", &bidan, "/v1/duplicates/merge", Some(json!({"duplicate": siti_twice, "keep": siti})))
            .await;
        assert_eq!(status, 200, "{body}");
        world
    }

    async fn call(&self, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, text) = self.call_text(method, token, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn call_text(&self, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", self.server.url());
        let mut rb = match method {
            "POST" => client.post(url),
            "DELETE" => client.delete(url),
            _ => client.get(url),
        };
        rb = rb.bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("send");
        (resp.status().as_u16(), resp.text().await.expect("body"))
    }

    /// A key for `unit`, created by the district admin over HTTP: (id, secret).
    async fn key(&self, unit: &str) -> (String, String) {
        let (status, body) = self
            .call("POST", &self.admin_token, "/v1/admin/api-keys", Some(json!({"unit": unit, "label": "Dasbor BI"})))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["role"], "district_reporter");
        let secret = body["key"].as_str().expect("the secret, shown once").to_owned();
        assert!(secret.starts_with("psk_") && secret.len() == 4 + 64, "{secret}");
        (body["id"].as_str().expect("id").to_owned(), secret)
    }

    async fn listed(&self, id: &str) -> Value {
        let (status, list) = self.call("GET", &self.admin_token, "/v1/admin/api-keys", None).await;
        assert_eq!(status, 200, "{list}");
        let list = list.as_array().expect("list").clone();
        assert!(list.iter().all(|k| k.get("key").is_none() && k.get("key_hash").is_none()), "{list:?}");
        list.into_iter().find(|k| k["id"] == id).expect("listed")
    }
}

fn csv_rows(text: &str) -> Vec<&str> {
    text.lines().skip(1).collect()
}

#[tokio::test]
async fn an_api_key_reads_the_monthly_report_and_the_csv_exports_of_its_unit() {
    let w = World::new().await;
    let (_, key) = w.key("pkm-banjar-1").await;
    let (status, report) = w.call("GET", &key, "/v1/reports/monthly?month=2026-11", None).await;
    assert_eq!(status, 200, "{report}");
    let rows = report["rows"].as_array().expect("rows");
    assert!(rows.iter().any(|r| r["unit"] == "pos-hegarsari-melati-1" && r["d"] == 2), "{rows:?}");
    assert!(rows.iter().all(|r| r["unit"] != "pos-purwaharja-sakura-4"), "nothing outside its unit: {rows:?}");
    let (status, trend) =
        w.call("GET", &key, "/v1/reports/trend?unit=pos-hegarsari-melati-1&month=2026-11", None).await;
    assert_eq!(status, 200, "{trend}");

    let (status, visits) =
        w.call_text("GET", &key, "/v1/export/visits.csv?unit=pkm-banjar-1&month=2026-11", None).await;
    assert_eq!(status, 200, "{visits}");
    assert_eq!(csv_rows(&visits).len(), 3, "{visits}");
    assert!(!visits.contains("Purwaharja"));
    let (status, people) = w.call_text("GET", &key, "/v1/export/people.csv?from=2026-11-01&to=2026-11-30", None).await;
    assert_eq!(status, 200, "{people}");
    assert_eq!(csv_rows(&people).len(), 2, "{people}");
    // The whole district's admin sees the far posyandu, the key does not.
    let (_, all) = w.call_text("GET", &w.admin_token, "/v1/export/people.csv?month=2026-11", None).await;
    assert_eq!(csv_rows(&all).len(), 3, "{all}");
    w.server.stop().await;
}

#[tokio::test]
async fn an_api_key_is_refused_outside_its_unit_and_on_sync_admin_and_people_routes() {
    let w = World::new().await;
    let (_, key) = w.key("pkm-banjar-1").await;
    for path in [
        "/v1/reports/monthly?unit=pkm-purwaharja-1",
        "/v1/export/visits.csv?unit=pos-purwaharja-sakura-4",
        "/v1/export/people.csv?unit=kel-purwaharja",
    ] {
        let (status, body) = w.call("GET", &key, path, None).await;
        assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")), "{path}: {body}");
    }
    for (method, path) in [
        ("POST", "/v1/sync"),
        ("GET", "/v1/admin/api-keys"),
        ("POST", "/v1/admin/api-keys"),
        ("GET", "/v1/admin/users"),
        ("GET", "/v1/people"),
        ("GET", "/v1/me"),
        ("GET", "/v1/conflicts"),
        ("GET", "/v1/records/invalid"),
        ("GET", "/v1/docs/0190f1d6-9d8b-7000-8000-000000000000"),
    ] {
        let (status, body) = w.call(method, &key, path, Some(json!({}))).await;
        assert_eq!((status, &body["error"]["code"]), (403, &json!("api_key_not_allowed")), "{method} {path}: {body}");
    }
    // A made-up key of the right shape is nobody.
    let fake = format!("psk_{}", "0".repeat(64));
    let (status, body) = w.call("GET", &fake, "/v1/reports/monthly", None).await;
    assert_eq!((status, &body["error"]["code"]), (401, &json!("invalid_credential")), "{body}");
    // Only a district admin creates keys, only in their district, only read-only.
    let (status, _) =
        w.call("POST", &w.kader_token, "/v1/admin/api-keys", Some(json!({"unit": "pkm-banjar-1", "label": "x"}))).await;
    assert_eq!(status, 403);
    let (status, body) = w
        .call(
            "POST",
            &w.admin_token,
            "/v1/admin/api-keys",
            Some(json!({"unit": "pkm-banjar-1", "label": "x", "role": "district_admin"})),
        )
        .await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("invalid_request")), "{body}");
    w.server.stop().await;
}

#[tokio::test]
async fn a_revoked_api_key_stops_working_at_once_and_everything_is_audited() {
    let w = World::new().await;
    let (id, key) = w.key("pkm-banjar-1").await;
    assert_eq!(w.call("GET", &key, "/v1/export/visits.csv", None).await.0, 200);
    let (status, _) = w.call("DELETE", &w.admin_token, &format!("/v1/admin/api-keys/{id}"), None).await;
    assert_eq!(status, 204);
    for path in ["/v1/export/visits.csv", "/v1/reports/monthly"] {
        let (status, body) = w.call("GET", &key, path, None).await;
        assert_eq!((status, &body["error"]["code"]), (401, &json!("invalid_credential")), "{path}: {body}");
    }
    assert_eq!(w.listed(&id).await["revoked_at"], w.server.clock.now());
    let (status, _) = w.call("DELETE", &w.admin_token, "/v1/admin/api-keys/ak-000000000000", None).await;
    assert_eq!(status, 404);

    let log = posync_store::AuditStore::audit_log(&w.server.store, 0, 10_000).await.expect("audit");
    let of = |action: &str| log.iter().filter(|e| e.action == action && e.target == id).collect::<Vec<_>>();
    assert_eq!(of("api_key_created").len(), 1);
    assert_eq!(of("api_key_revoked").len(), 1);
    let used = of("api_key_used");
    assert_eq!(used.len(), 1, "one use before the revocation, none after");
    assert_eq!(used[0].detail["route"], "/v1/export/visits.csv");
    assert!(
        log.iter().any(|e| e.action == "record_read" && e.actor == format!("api_key:{id}")),
        "the export is audited as a staff read by the key"
    );
    let text = serde_json::to_string(&log).expect("json");
    assert!(!text.contains(&key) && !text.contains(&key[4..]), "no secret in the audit log");
    w.server.stop().await;
}

#[tokio::test]
async fn an_api_keys_secret_is_not_stored_and_its_last_use_is_recorded() {
    let w = World::new().await;
    let (id, key) = w.key("pkm-banjar-1").await;
    assert_eq!(w.listed(&id).await["last_used_at"], Value::Null);
    let first = w.server.clock.advance(60);
    assert_eq!(w.call("GET", &key, "/v1/reports/monthly?month=2026-11", None).await.0, 200);
    assert_eq!(w.listed(&id).await["last_used_at"], first);
    let second = w.server.clock.advance(120);
    assert_eq!(w.call("GET", &key, "/v1/export/people.csv?month=2026-11", None).await.0, 200);
    assert_eq!(w.listed(&id).await["last_used_at"], second);
    // A call with someone else's key does not touch this one's.
    let (other, _) = w.key("pos-hegarsari-melati-1").await;
    w.server.clock.advance(60);
    assert_eq!(w.listed(&id).await["last_used_at"], second);
    assert_eq!(w.listed(&other).await["last_used_at"], Value::Null);

    // The database file (and its write-ahead log) holds a hash, never the secret.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(w.server.dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("server.sqlite")) {
            bytes.extend(std::fs::read(&path).expect("read"));
        }
    }
    assert!(bytes.len() > 4096);
    let hex = &key[4..];
    let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!find(key.as_bytes()) && !find(hex.as_bytes()), "the secret is in the database file");
    assert!(!find(&hex::decode(hex).expect("hex")), "the secret's bytes are in the database file");
    let hash: [u8; 32] =
        sha2::Digest::finalize(sha2::Digest::chain_update(sha2::Sha256::default(), key.as_bytes())).into();
    assert!(find(&hash), "its SHA-256 is what is kept");
    w.server.stop().await;
}

#[tokio::test]
async fn the_csv_exports_have_the_documented_columns_merged_duplicates_once_and_inert_formulas() {
    let w = World::new().await;
    let (_, key) = w.key("pos-hegarsari-melati-1").await;
    let (status, visits) = w.call_text("GET", &key, "/v1/export/visits.csv?month=2026-11", None).await;
    assert_eq!(status, 200, "{visits}");
    let header: Vec<&str> = visits.lines().next().expect("header").split(',').collect();
    assert_eq!(header, posync_server::export_csv::VISIT_COLUMNS);
    let rows = csv_rows(&visits);
    assert_eq!(rows.len(), 3, "{visits}");
    for row in rows.iter().filter(|r| !r.contains("HYPERLINK")) {
        // The documented columns are what every row has (no cell of these holds a comma).
        assert_eq!(row.split(',').count(), header.len(), "{row}");
    }
    // Both weighings of the child registered twice follow the survivor.
    let siti_rows: Vec<&&str> = rows.iter().filter(|r| r.to_lowercase().contains("siti aisyah")).collect();
    assert_eq!(siti_rows.len(), 2);
    assert!(siti_rows.iter().all(|r| r.contains(&w.siti.to_string())), "{siti_rows:?}");
    assert!(!visits.contains(&w.siti_twice.to_string()), "the merged registration's id is not exported");
    // Z-scores and classes are filled for a child.
    let first: Vec<&str> = siti_rows[0].split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).expect("column");
    assert!(first[col("wfa_z")].parse::<f64>().is_ok(), "{first:?}");
    assert!(!first[col("wfa_status")].is_empty(), "{first:?}");
    // The formula is text to a spreadsheet.
    assert!(visits.contains("\"'=HYPERLINK(\"\"http://x\"\",\"\"klik\"\")\""), "{visits}");
    assert!(!visits.lines().any(|l| l.split(',').any(|c| c.starts_with('='))));

    let (status, people) = w.call_text("GET", &key, "/v1/export/people.csv?month=2026-11", None).await;
    assert_eq!(status, 200, "{people}");
    let header: Vec<&str> = people.lines().next().expect("header").split(',').collect();
    assert_eq!(header, posync_server::export_csv::PEOPLE_COLUMNS);
    let rows = csv_rows(&people);
    assert_eq!(rows.len(), 2, "the child registered twice is listed once: {people}");
    let siti = rows.iter().find(|r| r.contains(&w.siti.to_string())).expect("Siti");
    let cells: Vec<&str> = siti.split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).expect("column");
    assert_eq!(cells[col("merged_registrations")], "1");
    assert_eq!(cells[col("visits")], "2", "her visits under both registrations");
    assert!(people.contains("\"'=HYPERLINK("), "{people}");
    w.server.stop().await;
}
