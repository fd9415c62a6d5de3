//! How the phone stores captures: appended to the document and saved whole now and then,
//! with the documents being worked on kept loaded. None of it may lose or hide a capture.

use posync_model::{Field, FieldValue, VisitId};
use posync_replica::Replica;
use posync_testkit::{DAY, Generator, posyandu};

/// More captures than are ever appended before a whole save, then the file read afresh:
/// every visit and every edit is there, and the document is the one the phone wrote.
#[test]
fn captures_appended_and_compacted_read_back_whole_from_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    let p = posyandu("melati-01");
    let mut phone = Replica::open(&path).expect("open");
    let session = phone.start_session(&p, DAY).expect("session");
    let mut g = Generator::new(3);
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(phone.record_visit(session, g.child_visit(), i).expect("record"));
    }
    for (i, v) in ids.iter().enumerate().step_by(7) {
        phone.edit_visit(session, *v, Field::WeightG, FieldValue::Int(9_000 + i as i64), 200 + i as i64).expect("edit");
    }
    let heads = phone.doc(session).expect("doc").get_heads();
    drop(phone);

    let again = Replica::open(&path).expect("reopen");
    let visits = again.visits(session).expect("visits");
    assert_eq!(visits.len(), 150);
    for (i, v) in ids.iter().enumerate().step_by(7) {
        let row = visits.iter().find(|r| r.visit_id == v.to_string()).expect("visit listed");
        assert_eq!(row.weight_g, Some(9_000 + i as i64), "the edit of visit {i}");
    }
    assert_eq!(again.doc(session).expect("doc").get_heads(), heads, "the document as written");
    let outbox = again.outbox().expect("outbox");
    assert_eq!(outbox, vec![session], "still to be pushed");
}

/// Two handles on one file (the app and a background sync, or two processes): each capture
/// builds on what the file holds, not on a copy kept loaded from before the other's write.
#[test]
fn a_document_kept_loaded_is_not_used_once_another_handle_wrote_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    let p = posyandu("melati-01");
    let mut app = Replica::open(&path).expect("open");
    let session = app.start_session(&p, DAY).expect("session");
    let mut g = Generator::new(4);
    app.record_visit(session, g.child_visit(), 1).expect("record"); // now kept loaded by `app`
    let mut other = Replica::open(&path).expect("second handle");
    for i in 0..3 {
        other.record_visit(session, g.child_visit(), 10 + i).expect("record elsewhere");
    }
    app.record_visit(session, g.child_visit(), 20).expect("record again");
    let fresh = Replica::open(&path).expect("third handle");
    assert_eq!(fresh.visits(session).expect("visits").len(), 5, "no capture lost to a stale copy");
    assert_eq!(fresh.doc(session).expect("doc").get_changes(&[]).len(), 6, "genesis and five captures");
}

/// A pull re-projects only the records it reaches. Three phones capture, re-weigh, note and
/// immunise the same children in rounds, syncing in between (so concurrent edits open
/// conflicts): each phone's list, conflict marks included, equals the list of a new phone
/// that pulled every document whole.
#[tokio::test]
async fn visits_listed_after_pulls_equal_a_fresh_phones_whole_pull() {
    use posync_testkit::{Phone, TestServer};
    use rand::{Rng, SeedableRng};
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phones: Vec<Phone> = (0..3).map(|_| Phone::kader(&server, &p)).collect();
    let mut g = Generator::new(8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let first = phones[0].replica.start_session(&p, DAY).expect("session");
    let shared = phones[0].replica.record_visit(first, g.child_visit(), 1).expect("record");
    for round in 0..6 {
        for (i, phone) in phones.iter_mut().enumerate() {
            phone.sync(&server).await;
            let session = phone.replica.start_session(&p, DAY).expect("session");
            phone.replica.record_visit(session, g.child_visit(), round).expect("record");
            // Every phone re-weighs the first child between its syncs: concurrent edits, so
            // conflicts open every round.
            if phone.replica.all_visits().expect("visits").iter().any(|v| v.visit_id == shared.to_string()) {
                let grams = FieldValue::Int(7_000 + 100 * i as i64 + round);
                phone.replica.edit_visit(session, shared, Field::WeightG, grams, round).expect("re-weigh");
            }
            let visits = phone.replica.all_visits().expect("visits");
            for _ in 0..2 {
                let v: VisitId = visits[rng.random_range(0..visits.len())].visit_id.parse().expect("id");
                let edit = match rng.random_range(0..3) {
                    0 => phone.replica.edit_visit(
                        session,
                        v,
                        Field::WeightG,
                        FieldValue::Int(rng.random_range(6_000..15_000)),
                        round,
                    ),
                    1 => phone.replica.edit_visit(
                        session,
                        v,
                        Field::Notes,
                        FieldValue::Text(format!("catatan {i}")),
                        round,
                    ),
                    _ => phone.replica.give_immunisation(session, v, "BCG", DAY, round),
                };
                edit.expect("edit");
            }
        }
    }
    for phone in &mut phones {
        phone.sync(&server).await;
    }
    for phone in &mut phones {
        phone.sync(&server).await;
    }
    let mut fresh = Phone::kader(&server, &p);
    fresh.sync(&server).await;
    let whole = fresh.replica.all_visits().expect("visits");
    assert!(whole.iter().any(|v| !v.conflicts.is_empty()), "the rounds opened conflicts (the test's premise)");
    for (i, phone) in phones.iter().enumerate() {
        assert_eq!(phone.replica.all_visits().expect("visits"), whole, "phone {i}");
    }
}
