//! Conflicting edits end to end: two phones write the same field offline, the server indexes
//! one open conflict (free-text notes are auto-resolved), an officer resolves it over the
//! API, every replica converges on the decision, and an edit racing the decision opens a new
//! conflict instead of being silently overwritten.

use posync_model::{DocId, Field, FieldValue, PosyanduId, Role, VisitId};
use posync_testkit::{Generator, Phone, TestServer, posyandu};
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn call(server: &TestServer, method: &str, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.url());
    let mut rb = if method == "POST" { client.post(url) } else { client.get(url) };
    rb = rb.bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

struct Scene {
    server: TestServer,
    p: PosyanduId,
    a: Phone,
    b: Phone,
    session: DocId,
    visit: VisitId,
}

/// A visit recorded on phone A, synced to phone B; then both re-weigh it and rewrite its
/// notes offline, differently, and sync.
async fn two_phones_disagree() -> Scene {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let (mut a, mut b) = (Phone::kader(&server, &p), Phone::kader(&server, &p));
    let session = a.replica.start_session(&p, posync_testkit::DAY).expect("session");
    let visit = a.replica.record_visit(session, Generator::new(3).child_visit(), 1).expect("record");
    a.sync(&server).await;
    b.sync(&server).await;
    let edit =
        |ph: &mut Phone, f: Field, v: FieldValue, t: i64| ph.replica.edit_visit(session, visit, f, v, t).expect("edit");
    edit(&mut a, Field::WeightG, FieldValue::Int(9_800), 10);
    edit(&mut b, Field::WeightG, FieldValue::Int(8_900), 11);
    edit(&mut a, Field::Notes, FieldValue::Text("rewel".into()), 12);
    edit(&mut b, Field::Notes, FieldValue::Text("sehat".into()), 13);
    a.sync(&server).await;
    b.sync(&server).await;
    a.sync(&server).await; // A now holds B's values too
    Scene { server, p, a, b, session, visit }
}

#[tokio::test]
async fn concurrent_edits_open_one_conflict_and_notes_are_auto_resolved() {
    let s = two_phones_disagree().await;
    let officer = Phone::new(&s.server, Role::PuskesmasOfficer, std::slice::from_ref(&s.p));
    let (status, list) = call(&s.server, "GET", &officer.token, "/v1/conflicts", None).await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 1, "exactly one open conflict: {list:?}");
    assert_eq!(list[0]["field"], "weight_g");
    assert_eq!(list[0]["record_id"], s.visit.to_string());
    let mut values: Vec<i64> =
        list[0]["values"].as_array().expect("v").iter().map(|v| v["value"].as_i64().expect("int")).collect();
    values.sort();
    assert_eq!(values, vec![8_900, 9_800]);
    let users: Vec<&str> = list[0]["values"].as_array().expect("v").iter().filter_map(|v| v["user"].as_str()).collect();
    assert_eq!(users.len(), 2, "each value names the user whose phone wrote it");
    // Filters: by field, by posyandu, by how long they have been open.
    let count = |v: Value| v.as_array().map_or(usize::MAX, Vec::len);
    assert_eq!(count(call(&s.server, "GET", &officer.token, "/v1/conflicts?field=weight_g", None).await.1), 1);
    assert_eq!(count(call(&s.server, "GET", &officer.token, "/v1/conflicts?field=length_mm", None).await.1), 0);
    assert_eq!(count(call(&s.server, "GET", &officer.token, "/v1/conflicts?posyandu=melati-01", None).await.1), 1);
    assert_eq!(
        count(call(&s.server, "GET", &officer.token, "/v1/conflicts?puskesmas=test-puskesmas", None).await.1),
        1
    );
    assert_eq!(count(call(&s.server, "GET", &officer.token, "/v1/conflicts?puskesmas=pkm-elsewhere", None).await.1), 0);
    assert_eq!(count(call(&s.server, "GET", &officer.token, "/v1/conflicts?older_than_days=3", None).await.1), 0);
    // Notes conflicted too, but their policy is auto: logged, not queued.
    let (_, auto) = call(&s.server, "GET", &officer.token, "/v1/conflicts?policy=auto", None).await;
    assert_eq!(auto.as_array().expect("auto").iter().filter(|c| c["field"] == "notes").count(), 1);
    // The phones show the same: weight under review, notes not.
    for phone in [&s.a, &s.b] {
        let fields: Vec<String> =
            phone.replica.under_review(s.session).expect("review").into_iter().map(|c| c.field).collect();
        assert_eq!(fields, vec!["weight_g".to_owned()]);
    }
    // Syncing again (replays, no-op syncs) changes nothing in the index.
    let (mut a, mut b) = (s.a, s.b);
    a.sync(&s.server).await;
    b.sync(&s.server).await;
    let (_, again) = call(&s.server, "GET", &officer.token, "/v1/conflicts", None).await;
    assert_eq!(again.as_array().expect("list").len(), 1);
    assert_eq!(again[0]["opened_at"], list[0]["opened_at"], "the same conflict, still open since it opened");
    s.server.clock.advance(4 * 86_400);
    let old = Phone::new(&s.server, Role::PuskesmasOfficer, std::slice::from_ref(&s.p));
    assert_eq!(count(call(&s.server, "GET", &old.token, "/v1/conflicts?older_than_days=3", None).await.1), 1);
}

#[tokio::test]
async fn a_resolution_converges_everywhere_and_a_racing_edit_reopens_it() {
    let s = two_phones_disagree().await;
    let Scene { server, p, mut a, mut b, session, visit } = s;
    let officer = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let (_, list) = call(&server, "GET", &officer.token, "/v1/conflicts", None).await;
    let id = list[0]["id"].as_str().expect("id").to_owned();

    // The detail has the context to decide: the visit, and each value's z-score.
    let (status, detail) = call(&server, "GET", &officer.token, &format!("/v1/conflicts/{id}"), None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["record"]["visit_id"], visit.to_string());
    assert!(detail["record"]["birth_date"].as_str().is_some_and(|d| d.len() == 10), "{detail}");
    assert!(detail["values"].as_array().expect("v").iter().all(|v| v["z"].is_number()), "{detail}");

    // Who may not decide.
    let kader = Phone::kader(&server, &p);
    let reporter = Phone::new(&server, Role::DistrictReporter, std::slice::from_ref(&p));
    let stranger = Phone::new(&server, Role::PuskesmasOfficer, &[posyandu("mawar-02")]);
    let body = || Some(json!({"value": 9_100}));
    let path = format!("/v1/conflicts/{id}/resolve");
    assert_eq!(call(&server, "POST", &kader.token, &path, body()).await.0, 403);
    assert_eq!(call(&server, "POST", &reporter.token, &path, body()).await.0, 403);
    assert_eq!(call(&server, "POST", &stranger.token, &path, body()).await.0, 404);
    let (status, bad) = call(&server, "POST", &officer.token, &path, Some(json!({"value": 40_000_000}))).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_request")));

    // A corrected value, neither of the two.
    let (status, done) = call(&server, "POST", &officer.token, &path, body()).await;
    assert_eq!(status, 200, "{done}");
    let (_, list) = call(&server, "GET", &officer.token, "/v1/conflicts", None).await;
    assert!(list.as_array().expect("list").is_empty());
    let (status, _) = call(&server, "POST", &officer.token, &path, body()).await;
    assert_eq!(status, 404, "resolved means gone");

    // Phone A syncs and converges; phone B, meanwhile, re-weighed offline again.
    a.sync(&server).await;
    let weight = |ph: &Phone| ph.replica.visits(session).expect("v")[0].weight_g;
    assert_eq!(weight(&a), Some(9_100));
    assert!(a.replica.under_review(session).expect("r").is_empty());
    b.replica.edit_visit(session, visit, Field::WeightG, FieldValue::Int(9_300), 50).expect("racing edit");
    b.sync(&server).await;
    let (_, list) = call(&server, "GET", &officer.token, "/v1/conflicts", None).await;
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 1, "the racing edit is a new conflict, not a silent overwrite");
    let mut values: Vec<i64> =
        list[0]["values"].as_array().expect("v").iter().map(|v| v["value"].as_i64().expect("i")).collect();
    values.sort();
    assert_eq!(values, vec![9_100, 9_300]);
    let server_value = list[0]["values"].as_array().expect("v").iter().find(|v| v["value"] == 9_100).expect("server's");
    assert!(server_value["device"].is_null(), "the decision was written by the server, not a device");

    // The audit has the decision with the values it replaced.
    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    let entry = log.iter().find(|e| e.action == "conflict_resolved").expect("audited");
    assert_eq!(entry.detail["chosen"], 9_100);
    let mut replaced: Vec<i64> =
        entry.detail["replaced"].as_array().expect("r").iter().map(|v| v["value"].as_i64().expect("i")).collect();
    replaced.sort();
    assert_eq!(replaced, vec![8_900, 9_800]);

    // Second decision; then every replica and a fresh tablet agree.
    let id = list[0]["id"].as_str().expect("id").to_owned();
    let (status, _) =
        call(&server, "POST", &officer.token, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"value": 9_300})))
            .await;
    assert_eq!(status, 200);
    a.sync(&server).await;
    b.sync(&server).await;
    let mut tablet = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    tablet.sync(&server).await;
    for ph in [&a, &b, &tablet] {
        assert_eq!(weight(ph), Some(9_300));
        assert!(ph.replica.under_review(session).expect("r").is_empty());
    }
    assert_eq!(posync_testkit::snapshot(&a.replica), posync_testkit::snapshot(&b.replica));
    server.stop().await;
}

use posync_testkit::registered_child as child;

#[tokio::test]
async fn the_same_child_registered_twice_is_flagged_and_merged_keeping_every_visit() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let (mut a, mut b) = (Phone::kader(&server, &p), Phone::kader(&server, &p));
    let now = server.clock.now();
    // Two kader register the same girl on their own phones, offline, and weigh her.
    let siti_a = a.replica.register_person(&p, child("Siti Aisyah", Some("3279015002250001")), now).expect("register");
    let siti_b = b.replica.register_person(&p, child("SITI AISYAH ", Some("3279015002250001")), now).expect("register");
    let other = b.replica.register_person(&p, child("Nur Lestari", None), now).expect("register");
    let day = posync_testkit::DAY;
    let weigh = |phone: &mut Phone, person| {
        let session = phone.replica.start_session(&p, day).expect("session");
        let mut v = Generator::new(5).child_visit();
        v.person_id = person;
        v.birth_date = time::macros::date!(2025 - 02 - 10);
        phone.replica.record_visit(session, v, now).expect("record");
    };
    weigh(&mut a, siti_a);
    weigh(&mut b, siti_b);
    weigh(&mut b, other);
    a.sync(&server).await;
    b.sync(&server).await;

    let officer = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let (status, pairs) = call(&server, "GET", &officer.token, "/v1/duplicates", None).await;
    assert_eq!(status, 200, "{pairs}");
    let pairs = pairs.as_array().expect("pairs");
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!(pairs[0]["reason"], "nik");
    let ids: BTreeSet<String> = [&pairs[0]["a"]["person_id"], &pairs[0]["b"]["person_id"]]
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, BTreeSet::from([siti_a.to_string(), siti_b.to_string()]));
    let s_of = |report: &Value| report["rows"][0]["s"].as_u64().expect("s");
    let (_, before) = call(&server, "GET", &officer.token, "/v1/reports/monthly?month=2026-11", None).await;
    assert_eq!(s_of(&before), 3, "before the merge Siti counts twice");

    let kader_try =
        call(&server, "POST", &a.token, "/v1/duplicates/merge", Some(json!({"duplicate": siti_b, "keep": siti_a})))
            .await;
    assert_eq!(kader_try.0, 403);
    let (status, done) = call(
        &server,
        "POST",
        &officer.token,
        "/v1/duplicates/merge",
        Some(json!({"duplicate": siti_b, "keep": siti_a})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let (_, pairs) = call(&server, "GET", &officer.token, "/v1/duplicates", None).await;
    assert!(pairs.as_array().expect("pairs").is_empty());
    let (_, after) = call(&server, "GET", &officer.token, "/v1/reports/monthly?month=2026-11", None).await;
    assert_eq!(s_of(&after), 2, "after the merge Siti counts once");
    assert_eq!(after["rows"][0]["d"], 2, "and her two weighings are one child weighed");
    let stats = posync_store::SyncStore::stats(&server.store).await.expect("stats");
    assert_eq!(stats.visits, 3, "no visit was lost");
    assert_eq!(stats.people, 3, "no registration was deleted");

    // The phones learn of the merge at their next sync.
    b.sync(&server).await;
    let registry = posync_model::DocId::for_registry(&p);
    let people = posync_model::doc::people(&b.replica.doc(registry).expect("registry")).expect("people");
    let merged = people.iter().find(|x| x.person_id == siti_b).expect("still registered");
    assert_eq!(merged.merged_into, Some(siti_a));
    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    assert!(log.iter().any(|e| e.action == "people_merged" && e.target == siti_b.to_string()));
    server.stop().await;
}

#[tokio::test]
async fn a_conflicting_registration_field_is_resolved_like_a_visit_field() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let (mut a, mut b) = (Phone::kader(&server, &p), Phone::kader(&server, &p));
    let siti = a.replica.register_person(&p, child("Siti Aisyah", None), server.clock.now()).expect("register");
    a.sync(&server).await;
    b.sync(&server).await;
    let date = |d: &str| FieldValue::Text(d.into());
    a.replica.edit_person(&p, siti, "birth_date", date("2025-02-01"), 2).expect("edit");
    b.replica.edit_person(&p, siti, "birth_date", date("2025-01-02"), 3).expect("edit");
    assert!(b.replica.edit_person(&p, siti, "nik", date("123"), 4).is_err(), "a malformed NIK is refused");
    a.sync(&server).await;
    b.sync(&server).await;
    let officer = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let (_, list) = call(&server, "GET", &officer.token, "/v1/conflicts", None).await;
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0]["collection"].as_str(), list[0]["field"].as_str()), (Some("people"), Some("birth_date")));
    let id = list[0]["id"].as_str().expect("id");
    let (status, bad) = call(
        &server,
        "POST",
        &officer.token,
        &format!("/v1/conflicts/{id}/resolve"),
        Some(json!({"value": "2025-13-40"})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let (status, _) = call(
        &server,
        "POST",
        &officer.token,
        &format!("/v1/conflicts/{id}/resolve"),
        Some(json!({"value": "2025-01-02"})),
    )
    .await;
    assert_eq!(status, 200);
    a.sync(&server).await;
    let registry = posync_model::DocId::for_registry(&p);
    let people = posync_model::doc::people(&a.replica.doc(registry).expect("doc")).expect("people");
    assert_eq!(people[0].birth_date, time::macros::date!(2025 - 01 - 02));
    assert!(a.replica.under_review(registry).expect("review").is_empty());
    // The audit keeps the decision without copying the identifiers it decided between.
    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    let entry = log.iter().find(|e| e.action == "conflict_resolved").expect("audited");
    let text = entry.detail.to_string();
    for value in ["2025-01-02", "2025-02-01"] {
        assert!(!text.contains(value), "a birth date copied into the audit: {text}");
    }
    assert_eq!(entry.detail["replaced"].as_array().map(Vec::len), Some(2), "both values, as hashes: {text}");
    assert!(entry.detail["chosen"]["sha256_16"].is_string(), "{text}");
    assert_eq!(entry.district.as_deref(), Some("test-district"), "the district above the posyandu");
    server.stop().await;
}
