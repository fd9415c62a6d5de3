//! What the server checks of the records a device pushes (issue #12): ids are unique across
//! documents, only the server merges people, values have their types, and a record with an
//! impossible value is kept but marked invalid, left out of reports and listed for review.
//!
//! Each push here is what a modified client could send: real Automerge changes by the
//! device's own actor, on top of what the server holds.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use posync_model::doc::{self, DocMeta};
use posync_model::{DocId, DocKind, Heads, PosyanduId, Scope, Sex, Visit, VisitId};
use posync_proto::{DocPush, SyncRequest};
use posync_replica::{HttpSync, ReplicaError};
use posync_store::prelude::*;
use posync_testkit::{DAY, DAY_START, Generator, Phone, TestServer, posyandu};

/// The changes `edit` makes to the phone's copy of `doc`, as a push on top of `base`.
fn push_edit(phone: &Phone, doc: DocId, base: &Heads, edit: impl FnOnce(&mut Automerge)) -> DocPush {
    let mut am = phone.replica.doc(doc).expect("doc");
    am.set_actor(phone.replica.device().actor());
    edit(&mut am);
    let meta = doc::read_meta(&am).expect("meta");
    DocPush {
        doc,
        kind: meta.kind,
        posyandu: meta.posyandu,
        base: base.to_bytes(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: if base.is_empty() { am.save() } else { am.save_after(base.as_slice()) },
    }
}

fn visit_obj(am: &Automerge, visit: VisitId) -> automerge::ObjId {
    let Some((Value::Object(ObjType::Map), visits)) = am.get(ROOT, "visits").expect("get") else { panic!("visits") };
    let Some((Value::Object(ObjType::Map), v)) = am.get(&visits, visit.to_string()).expect("get") else {
        panic!("visit")
    };
    v
}

fn put(am: &mut Automerge, obj: &automerge::ObjId, key: &str, value: ScalarValue) {
    let mut tx = am.transaction();
    tx.put(obj, key, value).expect("put");
    tx.commit();
}

async fn send(server: &TestServer, phone: &Phone, push: Vec<DocPush>) -> Result<(), ReplicaError> {
    let cursor = phone.replica.cursor().expect("cursor");
    let req = SyncRequest { push, ..SyncRequest::new(phone.replica.device(), cursor) };
    HttpSync::new(&server.url(), &phone.token).exchange(&req).await.map(|_| ())
}

fn refused_with(result: Result<(), ReplicaError>, code: &str, doc: DocId) -> String {
    match result {
        Err(ReplicaError::Server { code: c, doc: d, message, .. }) => {
            assert_eq!((c.as_str(), d), (code, Some(doc.to_string())), "{message}");
            message
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// One synced session with one visit: (phone, session, the visit, the server's heads).
async fn synced_visit(server: &TestServer, p: &PosyanduId, seed: u64) -> (Phone, DocId, VisitId, Heads) {
    let mut phone = Phone::kader(server, p);
    let session = phone.replica.start_session(p, DAY).expect("session");
    let visit = phone.replica.record_visit(session, Generator::new(seed).child_visit(), 1).expect("record");
    phone.sync(server).await;
    let heads = server.store.get(session).await.expect("get").expect("stored").meta.heads;
    (phone, session, visit, heads)
}

#[tokio::test]
async fn a_float_where_grams_belong_is_refused_naming_the_field_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let (phone, session, visit, heads) = synced_visit(&server, &p, 1).await;
    let before = server.store.stats().await.expect("stats");
    for (key, value) in [
        ("weight_g", ScalarValue::F64(9000.4)),
        ("weight_g", ScalarValue::Str("9000".into())),
        ("lying", ScalarValue::Int(1)),
        ("sex", ScalarValue::Boolean(true)),
    ] {
        let push = push_edit(&phone, session, &heads, |am| {
            let v = visit_obj(am, visit);
            put(am, &v, key, value.clone());
        });
        let message = refused_with(send(&server, &phone, vec![push]).await, "invalid_field", session);
        assert!(message.contains(key), "the message names the field: {message}");
        assert!(message.contains("wrong type for this key"), "the message says why: {message}");
        assert!(!message.contains("9000"), "never the value: {message}");
    }
    // A timestamp in milliseconds (as Automerge's JS convention would write it) is refused
    // saying so, and a text object where a scalar string belongs.
    let push = push_edit(&phone, session, &heads, |am| {
        let v = visit_obj(am, visit);
        put(am, &v, "recorded_at", ScalarValue::Int(1_764_405_214_000));
    });
    let message = refused_with(send(&server, &phone, vec![push]).await, "invalid_field", session);
    assert!(message.contains("recorded_at") && message.contains("millisecond"), "{message}");
    let push = push_edit(&phone, session, &heads, |am| {
        let v = visit_obj(am, visit);
        let mut tx = am.transaction();
        automerge::transaction::Transactable::put_object(&mut tx, &v, "notes", ObjType::Text).expect("text");
        tx.commit();
    });
    let message = refused_with(send(&server, &phone, vec![push]).await, "invalid_field", session);
    assert!(message.contains("notes") && message.contains("scalar"), "{message}");
    assert_eq!(server.store.stats().await.expect("stats"), before, "nothing stored");
    server.stop().await;
}

#[tokio::test]
async fn impossible_values_are_kept_marked_invalid_out_of_reports_and_listed_for_review() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let scope = Scope::new([p.clone()]);
    let (phone, session, visit, heads) = synced_visit(&server, &p, 2).await;
    let month = posync_server::reports::parse_month(Some("2026-11"), DAY).expect("month");
    let counted = |r: &posync_server::reports::MonthlyReport| r.rows.iter().map(|row| row.counts.d).sum::<u64>();
    let report = posync_server::reports::monthly(&server.store, &scope, month, posync_server::reports::Level::Posyandu)
        .await
        .expect("report");
    assert_eq!(counted(&report), 1, "the valid visit is weighed in the report");

    let cases: [(&str, ScalarValue); 3] = [
        ("weight_g", ScalarValue::Int(-5)),
        ("weight_g", ScalarValue::Int(40_000_000)),
        ("birth_date", ScalarValue::Str("2999-01-01".into())),
    ];
    let mut am = phone.replica.doc(session).expect("doc");
    am.set_actor(phone.replica.device().actor());
    let mut base = heads;
    let push_next = |am: &mut Automerge, base: &mut Heads, edit: &dyn Fn(&mut Automerge)| {
        edit(am);
        let push = DocPush {
            doc: session,
            kind: DocKind::Session,
            posyandu: p.clone(),
            base: base.to_bytes(),
            heads: Heads::new(am.get_heads()).to_bytes(),
            changes: am.save_after(base.as_slice()),
        };
        *base = Heads::new(am.get_heads());
        push
    };
    for (key, value) in cases {
        let push = push_next(&mut am, &mut base, &|am: &mut Automerge| {
            let v = visit_obj(am, visit);
            put(am, &v, key, value.clone());
        });
        send(&server, &phone, vec![push]).await.expect("an impossible value is kept, not refused");
        let listed = server.store.invalid_records(scope.clone()).await.expect("invalid");
        assert_eq!(listed.len(), 1, "{key}: the visit is listed for review: {listed:?}");
        assert_eq!((listed[0].doc, listed[0].record_id.as_str()), (session, visit.to_string().as_str()));
        let fields: Vec<&str> =
            listed[0].issues.as_array().expect("issues").iter().filter_map(|i| i["field"].as_str()).collect();
        assert!(fields.contains(&key), "{key}: the issue names the field: {fields:?}");
        let report =
            posync_server::reports::monthly(&server.store, &scope, month, posync_server::reports::Level::Posyandu)
                .await
                .expect("report");
        assert_eq!(counted(&report), 0, "{key}: left out of the report");
    }
    // Nothing was lost: the stored document holds the visit with every value written.
    assert_eq!(server.store.stats().await.expect("stats").visits, 1);

    // Over HTTP, for the reviewer: the list names the field, and reading it is audited.
    let officer = Phone::new(&server, posync_model::Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/records/invalid", server.url()))
        .bearer_auth(&officer.token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
    let audit = server.store.audit_log(0, 100).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "record_read" && e.target == "records/invalid"));

    // A correction makes the visit valid again: back in the report, off the list.
    let fixed = push_next(&mut am, &mut base, &|am: &mut Automerge| {
        let v = visit_obj(am, visit);
        put(am, &v, "weight_g", ScalarValue::Int(9_000));
        put(am, &v, "birth_date", ScalarValue::Str("2025-06-01".into()));
    });
    send(&server, &phone, vec![fixed]).await.expect("correction");
    assert!(server.store.invalid_records(scope.clone()).await.expect("invalid").is_empty());
    let report = posync_server::reports::monthly(&server.store, &scope, month, posync_server::reports::Level::Posyandu)
        .await
        .expect("report");
    assert_eq!(counted(&report), 1, "corrected: counted again");
    server.stop().await;
}

#[tokio::test]
async fn a_visit_id_from_another_document_is_refused_and_the_rest_of_the_outbox_goes_through() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let (_, _, taken, _) = synced_visit(&server, &p, 3).await;

    // A second phone holds two sessions: one reusing the visit id of another document (as a
    // modified client could write), one ordinary.
    let mut phone = Phone::kader(&server, &p);
    let other_day = DAY - time::Duration::days(7);
    let meta = DocMeta::session(p.clone(), other_day);
    let mut colliding = doc::genesis(&meta, phone.replica.device().actor()).expect("genesis");
    let mut g = Generator::new(4);
    let visit: Visit =
        Visit { visit_id: taken, ..g.child_visit_on(other_day).into_visit(phone.replica.device(), other_day, 5) };
    doc::record_visit(&mut colliding, &visit, DAY_START).expect("record");
    // Put it on the phone as a pulled document whose server heads are only the genesis, so
    // the phone holds it with the visit unsynced: what a modified app would have captured.
    let genesis_heads = Heads::new(doc::genesis(&meta, phone.replica.device().actor()).expect("genesis").get_heads());
    phone
        .replica
        .apply_response(&posync_proto::SyncResponse {
            store: None,
            v: posync_proto::PROTOCOL_VERSION,
            acks: Vec::new(),
            docs: vec![posync_proto::DocPull {
                doc: meta.doc_id(),
                kind: DocKind::Session,
                posyandu: p.clone(),
                heads: genesis_heads.to_bytes(),
                changes: colliding.save(),
                piece: false,
            }],
            scope: None,
            cursor: 0,
            more: false,
        })
        .expect("apply");
    let ordinary = phone.replica.start_session(&p, DAY).expect("session");
    phone.replica.record_visit(ordinary, g.child_visit(), 6).expect("record");
    assert_eq!(phone.replica.outbox().expect("outbox").len(), 2);

    // The server refuses the colliding document with a stable code (never 500)...
    let push = posync_proto::DocPush {
        doc: meta.doc_id(),
        kind: DocKind::Session,
        posyandu: p.clone(),
        base: Vec::new(),
        heads: Heads::new(colliding.get_heads()).to_bytes(),
        changes: colliding.save(),
    };
    refused_with(send(&server, &phone, vec![push]).await, "id_collision", meta.doc_id());
    // ...and the real client quarantines it and delivers the rest.
    let report = phone.replica.sync(&server.url(), &phone.token).await.expect("sync");
    assert_eq!(report.rejected, vec![(meta.doc_id().to_string(), "id_collision".to_owned())]);
    assert!(server.store.get(ordinary).await.expect("get").is_some(), "the ordinary session got through");
    assert!(server.store.get(meta.doc_id()).await.expect("get").is_none(), "the colliding one did not");
    assert_eq!(phone.replica.outbox().expect("outbox"), Vec::<DocId>::new(), "nothing blocks the outbox");
    assert_eq!(phone.replica.rejected().expect("rejected").len(), 1, "the refused document is kept on the phone");
    server.stop().await;
}

#[tokio::test]
async fn only_the_server_merges_people() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    let person = phone
        .replica
        .register_person(
            &p,
            posync_replica::NewPerson {
                name: "Siti Aminah".into(),
                sex: Sex::Female,
                birth_date: DAY - time::Duration::days(400),
                mother_name: "Rina".into(),
                nik: None,
                mother_nik: Some("3279010101900001".into()),
                address: String::new(),
                rt: Some(1),
                rw: Some(2),
                pregnant: false,
                kia_book: true,
            },
            DAY_START,
        )
        .expect("register");
    phone.sync(&server).await;
    let registry = DocId::for_registry(&p);
    let heads = server.store.get(registry).await.expect("get").expect("stored").meta.heads;
    let push = push_edit(&phone, registry, &heads, |am| {
        let Some((Value::Object(ObjType::Map), people)) = am.get(ROOT, "people").expect("get") else { panic!() };
        let Some((Value::Object(ObjType::Map), me)) = am.get(&people, person.to_string()).expect("get") else {
            panic!()
        };
        put(am, &me, "merged_into", ScalarValue::Str(posync_model::PersonId::new_random().to_string().into()));
    });
    let message = refused_with(send(&server, &phone, vec![push]).await, "invalid_field", registry);
    assert!(message.contains("merged_into"), "{message}");

    // A kader of another posyandu registers, in her own registry, a person under the id of
    // this child (ids are visible in conflict lists): refused, so her registry cannot stand
    // in for the child in this posyandu's figures.
    let q = posyandu("mawar-02");
    let stranger = Phone::kader(&server, &q);
    let meta = DocMeta::registry(q.clone());
    let mut theirs = doc::genesis(&meta, stranger.replica.device().actor()).expect("genesis");
    let child = doc::people(&phone.replica.doc(registry).expect("doc")).expect("people").remove(0);
    let impostor = posync_model::Person { registered_by: stranger.replica.device(), ..child };
    doc::register_person(&mut theirs, &impostor, DAY_START).expect("register");
    let push = DocPush {
        doc: meta.doc_id(),
        kind: DocKind::Registry,
        posyandu: q.clone(),
        base: Vec::new(),
        heads: Heads::new(theirs.get_heads()).to_bytes(),
        changes: theirs.save(),
    };
    refused_with(send(&server, &stranger, vec![push]).await, "id_collision", meta.doc_id());
    assert!(server.store.get(meta.doc_id()).await.expect("get").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_name_that_is_a_spreadsheet_formula_is_exported_as_text() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    let session = phone.replica.start_session(&p, DAY).expect("session");
    let mut visit = Generator::new(9).child_visit();
    visit.name = "=HYPERLINK(\"http://evil.example\",\"Klik\")".into();
    visit.immunisations.clear();
    phone.replica.record_visit(session, visit, 1).expect("record");
    phone.sync(&server).await;
    let officer = Phone::new(&server, posync_model::Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let csv = reqwest::Client::new()
        .get(format!("{}/v1/reports/overdue?month=2026-11&format=csv", server.url()))
        .bearer_auth(&officer.token)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let line = csv.lines().nth(1).unwrap_or_else(|| panic!("the child is overdue: {csv}"));
    assert!(line.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"Klik\"\")\","), "{line}");
    assert!(!line.contains(",=") && !line.contains(",\"="), "no cell starts a formula: {line}");
    server.stop().await;
}
