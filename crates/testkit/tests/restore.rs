//! A phone's replica file restored from a backup (Android Auto Backup on a new phone) or
//! copied: every capture made before and after the restore reaches the server exactly once.
//!
//! The danger: the restored file writes under the same Automerge actor from an older
//! sequence number, so its new captures reuse (actor, seq) pairs the server already holds
//! with other content, and Automerge refuses them. Two defences, each tested here:
//! - the continuity marker (kept out of backups) tells the replica it was restored, and it
//!   writes under a new incarnation's actor from the start;
//! - when the marker came along (a whole-disk copy), the server answers `actor_seq_clash`
//!   and the phone records its unacknowledged edits again, by value, under a new actor.

use posync_model::{DocId, Heads};
use posync_replica::{Replica, marker_path};
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn copy_replica(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy replica");
}

/// Capture `n` visits in `session`; returns their ids.
fn capture(replica: &mut Replica, session: DocId, g: &mut Generator, n: usize) -> Vec<String> {
    (0..n).map(|i| replica.record_visit(session, g.child_visit(), i as i64).expect("record").to_string()).collect()
}

async fn visits_at_server(server: &TestServer) -> Vec<String> {
    let conn = rusqlite::Connection::open(server.store.path()).expect("open server db");
    let mut stmt = conn.prepare("SELECT visit_id FROM visits ORDER BY visit_id").expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0)).expect("query").collect::<Result<_, _>>().expect("rows")
}

/// Back up the replica (file only, or with its marker), capture and sync, restore the
/// backup, capture more, sync: returns (captured before the backup, after it, after the
/// restore, the server's visits, the restored phone's visits).
async fn backup_capture_restore_capture(with_marker: bool) -> (Vec<String>, Vec<String>, BTreeSet<String>) {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    let session = phone.replica.start_session(&p, DAY).expect("session");
    let mut g = Generator::new(11);
    let mut captured = capture(&mut phone.replica, session, &mut g, 2);
    phone.sync(&server).await;

    // The backup: the file as it is now (write-ahead log folded in).
    phone.replica.checkpoint().expect("checkpoint");
    let backup: PathBuf = phone.dir.path().join("backup.sqlite");
    copy_replica(&phone.path(), &backup);
    let marker_backup = phone.dir.path().join("backup.marker");
    if with_marker {
        std::fs::copy(marker_path(&phone.path()), &marker_backup).expect("copy marker");
    }

    captured.extend(capture(&mut phone.replica, session, &mut g, 2));
    phone.sync(&server).await;
    let incarnation_before = phone.replica.incarnation().expect("incarnation");

    // The restore, on a "new phone": the backed-up file in place of the current one, and the
    // marker only if it was part of the backup.
    let path = phone.path();
    drop(std::mem::replace(&mut phone.replica, Replica::open(phone.dir.path().join("scratch.sqlite")).expect("tmp")));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let _ = std::fs::remove_file(marker_path(&path));
    copy_replica(&backup, &path);
    if with_marker {
        std::fs::copy(&marker_backup, marker_path(&path)).expect("restore marker");
    }
    phone.replica = Replica::open(&path).expect("reopen the restored replica");
    let restored_incarnation = phone.replica.incarnation().expect("incarnation");
    if with_marker {
        assert_eq!(restored_incarnation, incarnation_before, "a copy with its marker cannot tell it was restored");
    } else {
        assert!(restored_incarnation > incarnation_before, "the restored file starts a new incarnation");
    }

    captured.extend(capture(&mut phone.replica, session, &mut g, 2));
    let report = phone.replica.sync(&server.url(), &phone.token).await.expect("sync after the restore");
    assert!(report.rejected.is_empty(), "nothing quarantined: {report:?}");
    assert!(phone.replica.outbox().expect("outbox").is_empty(), "everything acknowledged");
    if with_marker {
        assert!(
            phone.replica.incarnation().expect("incarnation") > incarnation_before,
            "re-recorded under a new actor"
        );
    }
    let at_server = visits_at_server(&server).await;
    let on_phone: BTreeSet<String> = posync_testkit::visit_ids(&phone.replica).into_iter().collect();
    let stored = server.store.get(session).await.expect("get").expect("stored");
    assert_eq!(
        Heads::new(phone.replica.doc(session).expect("doc").get_heads()),
        stored.meta.heads,
        "the restored phone and the server converge"
    );
    server.stop().await;
    (captured, at_server, on_phone)
}

fn assert_every_capture_once(captured: &[String], at_server: &[String], on_phone: &BTreeSet<String>) {
    assert_eq!(captured.len(), 6);
    let unique: BTreeSet<&String> = at_server.iter().collect();
    assert_eq!(unique.len(), at_server.len(), "no visit twice at the server");
    let expected: BTreeSet<&String> = captured.iter().collect();
    assert_eq!(unique, expected, "every capture, before the backup, after it and after the restore");
    assert_eq!(on_phone.iter().collect::<BTreeSet<_>>(), expected, "the restored phone holds them all too");
}

#[tokio::test]
async fn a_restored_backup_writes_under_a_new_actor_and_every_capture_reaches_the_server_once() {
    let (captured, at_server, on_phone) = backup_capture_restore_capture(false).await;
    assert_every_capture_once(&captured, &at_server, &on_phone);
}

#[tokio::test]
async fn a_copied_replica_that_reuses_its_actor_records_its_edits_again_and_loses_none() {
    let (captured, at_server, on_phone) = backup_capture_restore_capture(true).await;
    assert_every_capture_once(&captured, &at_server, &on_phone);
}

#[test]
fn a_replica_reopened_in_place_keeps_its_incarnation() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("r.sqlite");
    let first = Replica::open(&path).expect("open").incarnation().expect("incarnation");
    for _ in 0..3 {
        assert_eq!(Replica::open(&path).expect("reopen").incarnation().expect("incarnation"), first);
    }
    std::fs::remove_file(marker_path(&path)).expect("remove marker");
    assert_eq!(Replica::open(&path).expect("reopen").incarnation().expect("incarnation"), first + 1);
    assert_eq!(Replica::open(&path).expect("reopen").incarnation().expect("incarnation"), first + 1);
}
