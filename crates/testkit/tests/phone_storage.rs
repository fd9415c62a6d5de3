//! How the phone stores captures: appended to the document and saved whole now and then,
//! with the documents being worked on kept loaded. None of it may lose or hide a capture.

use posync_model::{Field, FieldValue};
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
