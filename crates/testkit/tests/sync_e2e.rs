//! End to end: a real server on 127.0.0.1 over a real SQLite file, phones as real replicas.

use posync_model::{Field, FieldValue, Role};
use posync_proto::{DocPush, Limits, SyncRequest, encode};
use posync_replica::HttpSync;
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu, snapshot, visit_ids};

/// Three kader capture offline; sync them in `order`, then once more each so everyone has
/// everything; a fresh puskesmas replica pulls. Returns (phones, tablet).
async fn posyandu_day(server: &TestServer, order: [usize; 3], seed: u64) -> (Vec<Phone>, Phone) {
    let p = posyandu("melati-01");
    let mut seeded = Generator::new(seed);
    let mut phones: Vec<Phone> = (0..3).map(|_| Phone::kader(server, &p)).collect();
    for (i, phone) in phones.iter_mut().enumerate() {
        let session = phone.replica.start_session(&p, DAY).expect("session");
        for k in 0..5 {
            phone
                .replica
                .record_visit(session, seeded.child_visit(), server.clock.now() + (i * 10 + k) as i64)
                .expect("record");
        }
    }
    for &i in &order {
        phones[i].sync(server).await;
    }
    for &i in &order {
        phones[i].sync(server).await;
    }
    let mut tablet = Phone::new(server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    tablet.sync(server).await;
    (phones, tablet)
}

#[tokio::test]
async fn three_offline_phones_converge_in_every_sync_order() {
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for (n, order) in orders.into_iter().enumerate() {
        let server = TestServer::start().await;
        let (phones, tablet) = posyandu_day(&server, order, n as u64).await;
        let expected = snapshot(&tablet.replica);
        assert_eq!(expected.len(), 1, "one shared session document");
        assert_eq!(visit_ids(&tablet.replica).len(), 15, "order {order:?}: every visit at the tablet");
        for phone in &phones {
            assert_eq!(snapshot(&phone.replica), expected, "order {order:?}: phone differs from tablet");
            assert!(phone.replica.outbox().expect("outbox").is_empty());
        }
        let stored = server.store.get(expected[0].0).await.expect("get").expect("stored at server");
        assert_eq!(stored.meta.heads.to_hex(), expected[0].2, "server heads equal the replicas'");
        let stats = posync_store::SyncStore::stats(&server.store).await.expect("stats");
        assert_eq!(stats.visits, 15, "projection has one row per visit");
        server.stop().await;
    }
}

#[tokio::test]
async fn concurrent_edits_of_one_field_are_kept_as_a_conflict_everywhere() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut a = Phone::kader(&server, &p);
    let mut b = Phone::kader(&server, &p);
    let session = a.replica.start_session(&p, DAY).expect("session");
    let visit = a.replica.record_visit(session, Generator::new(7).child_visit(), 100).expect("record");
    a.sync(&server).await;
    b.sync(&server).await;
    // Both phones offline now; each kader re-weighs the same child.
    a.replica.edit_visit(session, visit, Field::WeightG, FieldValue::Int(9800), 200).expect("edit a");
    b.replica.edit_visit(session, visit, Field::WeightG, FieldValue::Int(8900), 201).expect("edit b");
    // A different field edited concurrently merges without conflict.
    b.replica.edit_visit(session, visit, Field::MuacMm, FieldValue::Int(141), 202).expect("edit muac");
    a.sync(&server).await;
    b.sync(&server).await;
    a.sync(&server).await;

    for phone in [&a, &b] {
        let conflicts = phone.replica.conflicts(session).expect("conflicts");
        assert_eq!(conflicts.len(), 1, "exactly the weight is in conflict: {conflicts:?}");
        assert_eq!(conflicts[0].field, "weight_g");
        let mut values: Vec<_> = conflicts[0].values.iter().map(|v| v.value.clone()).collect();
        values.sort_by_key(|v| v.to_string());
        assert_eq!(values, vec![FieldValue::Int(8900), FieldValue::Int(9800)]);
        let rows = phone.replica.visits(session).expect("rows");
        assert_eq!(rows[0].conflicts, "weight_g", "the visit shows as under review");
        assert_eq!(rows[0].muac_mm, Some(141));
    }
    assert_eq!(snapshot(&a.replica), snapshot(&b.replica));

    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/docs/{session}", server.url()))
        .bearer_auth(&a.token)
        .send()
        .await
        .expect("get doc")
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .expect("body");
    let conflicts = body["conflicts"].as_array().expect("conflicts array");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0]["field"], "weight_g");
    assert_eq!(conflicts[0]["values"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_lost_response_loses_nothing_and_a_duplicated_request_changes_nothing() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    let mut seeded = Generator::new(3);
    let session = phone.replica.start_session(&p, DAY).expect("session");
    for t in 0..3 {
        phone.replica.record_visit(session, seeded.child_visit(), t).expect("record");
    }
    let http = HttpSync::new(&server.url(), &phone.token);
    let req = phone.replica.prepare_sync(&Limits::default()).expect("prepare");
    // The server commits, then the phone "dies" before the answer lands.
    let (_lost, _) = http.exchange(&req).await.expect("exchange");
    assert_eq!(phone.replica.outbox().expect("outbox").len(), 1, "unacknowledged work stays in the outbox");
    let before = posync_store::SyncStore::stats(&server.store).await.expect("stats");
    assert_eq!(before.visits, 3);
    // The same request again (a retry by the network stack): nothing new is stored.
    let (dup, _) = http.exchange(&req).await.expect("duplicate");
    assert_eq!(dup.acks.len(), 1);
    let after = posync_store::SyncStore::stats(&server.store).await.expect("stats");
    assert_eq!(after, before, "a replay adds no feed entry, document or row");

    phone.replica.record_visit(session, seeded.child_visit(), 10).expect("record after crash");
    phone.sync(&server).await;
    assert!(phone.replica.outbox().expect("outbox").is_empty());
    let end = posync_store::SyncStore::stats(&server.store).await.expect("stats");
    assert_eq!(end.visits, 4, "all four visits, none twice");
    let mut tablet = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    tablet.sync(&server).await;
    assert_eq!(visit_ids(&tablet.replica), visit_ids(&phone.replica));
}

#[tokio::test]
async fn a_no_op_sync_costs_the_same_few_bytes_whatever_the_scope_holds() {
    let mut noop_costs = Vec::new();
    for days in [1usize, 120] {
        let server = TestServer::start().await;
        let p = posyandu("melati-01");
        let mut phone = Phone::kader(&server, &p);
        let mut seeded = Generator::new(11);
        for d in 0..days {
            let session = phone.replica.start_session(&p, DAY - time::Duration::days(30 * d as i64)).expect("session");
            let on = DAY - time::Duration::days(30 * d as i64);
            phone.replica.record_visit(session, seeded.child_visit_on(on), d as i64).expect("record");
        }
        phone.sync(&server).await;
        phone.sync(&server).await;
        let noop = phone.sync(&server).await;
        assert_eq!(noop.rounds, 1, "one round trip");
        assert_eq!(noop.pushed_docs + noop.pulled_docs, 0);
        noop_costs.push(noop.bytes);
    }
    // Only the cursor's integer width may differ (CBOR: 1 to 9 bytes), never per document.
    let (small, large) = (noop_costs[0], noop_costs[1]);
    assert!(large.up.abs_diff(small.up) <= 8 && large.down.abs_diff(small.down) <= 8, "{small:?} vs {large:?}");
    for cost in noop_costs {
        // Up: device, cursor and the 8-byte scope digest; down: an empty answer.
        assert!(cost.up <= 96 && cost.down <= 48, "no-op sync is a few dozen bytes: {cost:?}");
    }
}

#[tokio::test]
async fn large_pulls_come_in_bounded_pages_and_resume_after_a_crash() {
    let limits = Limits { page_bytes_max: 16 * 1024, ..Limits::default() };
    let server = TestServer::start_with(limits).await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    let mut seeded = Generator::new(5);
    for d in 0..30 {
        let session = phone.replica.start_session(&p, DAY - time::Duration::days(d)).expect("session");
        for k in 0..8 {
            let on = DAY - time::Duration::days(d);
            phone.replica.record_visit(session, seeded.child_visit_on(on), d * 100 + k).expect("record");
        }
    }
    phone.sync(&server).await;

    let mut tablet = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let http = HttpSync::new(&server.url(), &tablet.token);
    // First page, then the tablet's app is killed and restarted.
    let req = tablet.replica.prepare_sync(&limits).expect("prepare");
    let (page, wire) = http.exchange(&req).await.expect("page 1");
    assert!(page.more, "30 sessions do not fit in one 16 KiB page");
    let page_bytes: usize = page.docs.iter().map(|d| d.changes.len()).sum();
    let largest = page.docs.iter().map(|d| d.changes.len()).max().unwrap_or(0);
    assert!(page_bytes <= limits.page_bytes_max + largest, "page within its bound: {page_bytes}");
    assert!(wire.down as usize <= limits.page_bytes_max + largest + 4096);
    tablet.replica.apply_response(&page).expect("apply page 1");
    let path = tablet.path();
    drop(std::mem::replace(&mut tablet.replica, posync_replica::Replica::open(&path).expect("reopen")));
    let rest = tablet.sync(&server).await;
    assert!(rest.rounds >= 2, "the rest came in several pages");
    assert_eq!(snapshot(&tablet.replica), snapshot(&phone.replica));
    assert_eq!(visit_ids(&tablet.replica).len(), 240);
}

#[tokio::test]
async fn a_document_outside_the_token_scope_rejects_the_whole_batch() {
    let server = TestServer::start().await;
    let mine = posyandu("melati-01");
    let theirs = posyandu("mawar-02");
    let mut intruder = Phone::kader(&server, &mine);
    let mut other = Phone::kader(&server, &theirs);
    let s_theirs = other.replica.start_session(&theirs, DAY).expect("session");
    other.replica.record_visit(s_theirs, Generator::new(1).child_visit(), 1).expect("record");
    other.sync(&server).await;
    // The intruder captures in its own posyandu and also forges a push to the other one.
    let s_mine = intruder.replica.start_session(&mine, DAY).expect("session");
    intruder.replica.record_visit(s_mine, Generator::new(2).child_visit(), 2).expect("record");
    let mut req = intruder.replica.prepare_sync(&Limits::default()).expect("prepare");
    let forged = other.replica.prepare_sync(&Limits::default()).expect("prepare");
    assert!(forged.push.is_empty());
    let am = other.replica.doc(s_theirs).expect("doc");
    req.push.push(DocPush {
        doc: s_theirs,
        kind: posync_model::DocKind::Session,
        posyandu: theirs.clone(),
        base: Vec::new(),
        heads: posync_model::Heads::new(am.get_heads()).to_bytes(),
        changes: am.save(),
    });
    let before = posync_store::SyncStore::stats(&server.store).await.expect("stats");
    let err = HttpSync::new(&server.url(), &intruder.token).exchange(&req).await.expect_err("rejected");
    match err {
        posync_replica::ReplicaError::Server { status, code, doc, .. } => {
            assert_eq!(status, 403);
            assert_eq!(code, posync_proto::ErrorCode::Forbidden);
            assert_eq!(doc, Some(s_theirs.to_string()), "the error names the document");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        posync_store::SyncStore::stats(&server.store).await.expect("stats"),
        before,
        "nothing of the batch stored"
    );
    // Its own document alone goes through.
    intruder.sync(&server).await;
    let _ = encode(&SyncRequest::new(intruder.replica.device(), 0));
}

#[tokio::test]
async fn a_refused_document_is_kept_on_the_phone_and_does_not_block_the_rest() {
    let server = TestServer::start().await;
    let mine = posyandu("melati-01");
    let other = posyandu("mawar-02");
    let mut phone = Phone::kader(&server, &mine);
    let mut seeded = Generator::new(21);
    // Captured on the phone for a posyandu its token does not cover (a kader helping out).
    let foreign = phone.replica.start_session(&other, DAY).expect("session");
    phone.replica.record_visit(foreign, seeded.child_visit(), 1).expect("record");
    let own = phone.replica.start_session(&mine, DAY).expect("session");
    phone.replica.record_visit(own, seeded.child_visit(), 2).expect("record");

    let report = phone.sync(&server).await;
    assert_eq!(report.rejected, vec![(foreign.to_string(), "forbidden".to_owned())]);
    assert_eq!(server.store.stats().await.expect("stats").visits, 1, "its own visit arrived");
    assert!(server.store.get(foreign).await.expect("get").is_none(), "nothing of the refused document");
    assert_eq!(phone.replica.rejected().expect("rejected"), vec![(foreign, "forbidden".to_owned())]);
    assert_eq!(phone.replica.visits(foreign).expect("visits").len(), 1, "its data stays on the phone");
    let again = phone.sync(&server).await;
    assert!(again.rejected.is_empty() && again.pushed_docs == 0, "not re-pushed: {again:?}");
}

#[tokio::test]
async fn a_phone_restored_from_an_old_backup_catches_up() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    let mut other = Phone::kader(&server, &p);
    let mut seeded = Generator::new(31);
    let session = phone.replica.start_session(&p, DAY).expect("session");
    phone.replica.record_visit(session, seeded.child_visit(), 1).expect("record");
    phone.sync(&server).await;
    // Back up the phone's file, keep working, then restore the backup (same device id).
    let backup = phone.dir.path().join("backup.sqlite");
    phone.replica.checkpoint().expect("checkpoint");
    std::fs::copy(phone.path(), &backup).expect("backup");
    phone.replica.record_visit(session, seeded.child_visit(), 2).expect("record");
    phone.sync(&server).await;
    let path = phone.path();
    drop(std::mem::replace(&mut phone.replica, posync_replica::Replica::open(&backup).expect("open backup")));
    std::fs::copy(&backup, &path).expect("restore");
    phone.replica = posync_replica::Replica::open(&path).expect("reopen restored");
    // Meanwhile another kader adds a visit: the server would send the restored phone only the
    // changes after heads it no longer has.
    other.sync(&server).await;
    other.replica.record_visit(session, seeded.child_visit(), 3).expect("record");
    other.sync(&server).await;

    phone.sync(&server).await;
    phone.sync(&server).await;
    other.sync(&server).await;
    assert_eq!(visit_ids(&phone.replica).len(), 3, "the restored phone has every visit again");
    assert_eq!(snapshot(&phone.replica), snapshot(&other.replica));
}

/// Every phone's first pull after pushing brings the server's whole copy of the session, and
/// that copy holds everything the phone had: the phone loads it instead of merging it into its
/// own (half the work) and ends where a merge would. A phone that captured while its answer
/// was on the way holds a change the copy lacks: it merges, and keeps that capture.
#[tokio::test]
async fn a_pulled_whole_copy_holding_all_of_ours_is_loaded_instead_of_merged() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut seeded = Generator::new(11);
    let limits = Limits::default();
    let capture = |phone: &mut Phone, seeded: &mut Generator, n: usize| {
        let session = phone.replica.start_session(&p, DAY).expect("session");
        for k in 0..n {
            phone.replica.record_visit(session, seeded.child_visit(), server.clock.now() + k as i64).expect("record");
        }
        session
    };
    let mut a = Phone::kader(&server, &p);
    let mut b = Phone::kader(&server, &p);
    capture(&mut a, &mut seeded, 10);
    capture(&mut b, &mut seeded, 2);
    a.sync(&server).await;

    // b pushes its 2 visits and pulls a's 10 in the same answer.
    let req = b.replica.prepare_sync(&limits).expect("prepare");
    let (resp, _) = HttpSync::new(&server.url(), &b.token).exchange(&req).await.expect("exchange");
    assert!(posync_model::guard::starts_with_document(&resp.docs[0].changes), "b lacks most: sent whole");
    let report = b.replica.apply_response(&resp).expect("apply");
    assert_eq!((report.pulled, report.adopted), (1, 1), "loaded, not merged");
    assert_eq!(visit_ids(&b.replica).len(), 12);
    // Stored as it came: neither saved again nor appended to b's own copy.
    let file = rusqlite::Connection::open(b.dir.path().join("replica.sqlite")).expect("open b's file");
    let (bytes, chunks): (Vec<u8>, i64) = file
        .query_row(
            "SELECT bytes, (SELECT COUNT(*) FROM doc_chunks WHERE doc_id = ?1) FROM docs WHERE doc_id = ?1",
            [resp.docs[0].doc.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("b's session");
    assert_eq!((bytes, chunks), (resp.docs[0].changes.clone(), 0), "the server's copy, as sent");
    assert!(b.replica.outbox().expect("outbox").is_empty(), "nothing left to push");
    a.sync(&server).await;
    assert_eq!(snapshot(&b.replica), snapshot(&a.replica), "the same document as a merge gives");

    // c captures one more visit after its request left: the server's copy lacks it.
    let mut c = Phone::kader(&server, &p);
    let session = capture(&mut c, &mut seeded, 2);
    let req = c.replica.prepare_sync(&limits).expect("prepare");
    let (resp, _) = HttpSync::new(&server.url(), &c.token).exchange(&req).await.expect("exchange");
    assert!(posync_model::guard::starts_with_document(&resp.docs[0].changes), "c lacks most: sent whole");
    c.replica.record_visit(session, seeded.child_visit(), server.clock.now() + 50).expect("record during sync");
    let report = c.replica.apply_response(&resp).expect("apply");
    assert_eq!((report.pulled, report.adopted), (1, 0), "merged: the copy lacks a capture of ours");
    assert_eq!(visit_ids(&c.replica).len(), 15, "12 pulled, 2 pushed, 1 captured during the sync");
    c.sync(&server).await;
    assert_eq!(posync_store::SyncStore::stats(&server.store).await.expect("stats").visits, 15);
    server.stop().await;
}

/// A phone that lacks most of the session gets the server's whole copy and projects every
/// record of it, not only those its new changes reach. That must still show a colleague's
/// concurrent edit of a visit the phone already held as a conflict, and give the rows a merge
/// would.
#[tokio::test]
async fn an_adopted_copy_shows_a_colleagues_conflicting_edit_of_a_visit_we_held() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut seeded = Generator::new(13);
    let mut a = Phone::kader(&server, &p);
    let mut b = Phone::kader(&server, &p);
    let session = a.replica.start_session(&p, DAY).expect("session");
    let visit = a.replica.record_visit(session, seeded.child_visit(), 100).expect("record");
    a.sync(&server).await;
    b.sync(&server).await;
    // Offline: both re-weigh the child; a also records ten more children.
    b.replica.edit_visit(session, visit, Field::WeightG, FieldValue::Int(8900), 200).expect("edit b");
    a.replica.edit_visit(session, visit, Field::WeightG, FieldValue::Int(9800), 201).expect("edit a");
    for k in 0..10 {
        a.replica.record_visit(session, seeded.child_visit(), 300 + k).expect("record");
    }
    a.sync(&server).await;

    // b pushes its edit and pulls a's in the same answer.
    let req = b.replica.prepare_sync(&Limits::default()).expect("prepare");
    let (resp, _) = HttpSync::new(&server.url(), &b.token).exchange(&req).await.expect("exchange");
    assert!(posync_model::guard::starts_with_document(&resp.docs[0].changes), "b lacks most: sent whole");
    let report = b.replica.apply_response(&resp).expect("apply");
    assert_eq!((report.pulled, report.adopted), (1, 1), "loaded, not merged");

    let rows = b.replica.visits(session).expect("rows");
    assert_eq!(rows.len(), 11);
    let held = rows.iter().find(|r| r.visit_id == visit.to_string()).expect("the visit b held");
    assert_eq!(held.conflicts, "weight_g", "the visit b held shows as under review");
    a.sync(&server).await;
    assert_eq!(snapshot(&b.replica), snapshot(&a.replica), "the same document as a merge gives");
    assert_eq!(b.replica.visits(session).expect("b's rows"), a.replica.visits(session).expect("a's rows"));
    server.stop().await;
}

/// A whole copy whose sender claimed it held all of ours but does not (a server that lies,
/// or a stale cache) is merged like any pull: nothing of ours is dropped.
#[tokio::test]
async fn a_whole_copy_lacking_one_of_our_changes_is_merged_and_ours_kept() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut seeded = Generator::new(12);
    let mut x = Phone::kader(&server, &p);
    let mut y = Phone::kader(&server, &p);
    let session = x.replica.start_session(&p, DAY).expect("session");
    x.replica.record_visit(session, seeded.child_visit(), 1).expect("record");
    y.replica.start_session(&p, DAY).expect("session");
    for k in 0..4 {
        y.replica.record_visit(session, seeded.child_visit(), 10 + k).expect("record");
    }
    x.sync(&server).await; // x's heads are now the heads the server acknowledged
    let theirs = y.replica.doc(session).expect("y's copy");
    let resp = posync_proto::SyncResponse {
        v: 1,
        acks: Vec::new(),
        docs: vec![posync_proto::DocPull {
            doc: session,
            kind: posync_model::DocKind::Session,
            posyandu: p.clone(),
            heads: posync_model::Heads::new(theirs.get_heads()).to_bytes(),
            changes: theirs.save(),
            piece: false,
        }],
        scope: None,
        cursor: x.replica.cursor().expect("cursor"),
        more: false,
        store: None,
    };
    let report = x.replica.apply_response(&resp).expect("apply");
    assert_eq!((report.pulled, report.adopted), (1, 0));
    assert_eq!(visit_ids(&x.replica).len(), 5, "x's own visit and y's four");
    server.stop().await;
}
