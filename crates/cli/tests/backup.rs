//! `posync admin backup` with the real binary, while the server runs and phones sync: the
//! copy is consistent (integrity-checked), holds every visit acknowledged before it began,
//! carries the keyset (phones' tokens still verify after a restore), and is audited. A
//! restore (stop, copy back, start) serves the backup's data to phones again.

mod common;

use posync_model::{DeviceId, Role};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_testkit::{DAY, Generator, grant, posyandu, user_for};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn visits_in(db: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn.prepare("SELECT visit_id FROM visits").expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0)).expect("query").collect::<Result<_, _>>().expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_phones_sync_restores_with_their_acknowledged_visits() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, keys_path) = (dir.path().join("server.sqlite"), dir.path().join("server.sqlite.keys.json"));
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let p = posyandu("backup-melati");
    let setup = SqliteStore::open(&db).expect("store");
    let mut g = Generator::new(5);
    let mut phones = Vec::new();
    for i in 0..3 {
        let mut replica = Replica::open(dir.path().join(format!("phone-{i}.sqlite"))).expect("replica");
        let device: DeviceId = replica.device();
        grant(&setup, device, Role::Kader, std::slice::from_ref(&p), now());
        let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
        let session = replica.start_session(&p, DAY).expect("session");
        for k in 0..10 {
            replica.record_visit(session, g.child_visit(), k).expect("record");
        }
        phones.push((replica, token, session));
    }
    drop(setup);
    let server = common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys_path.as_os_str()]);
    for (replica, token, _) in &mut phones {
        replica.sync(&server.url, token).await.expect("sync");
    }
    let acknowledged = visits_in(&db);
    assert_eq!(acknowledged.len(), 30);

    // More captures syncing while the backup is taken.
    let url = server.url.clone();
    let mut later = phones.pop().expect("a phone");
    let syncing = tokio::spawn(async move {
        for k in 10..40 {
            later.0.record_visit(later.2, Generator::new(k as u64).child_visit(), k).expect("record");
            later.0.sync(&url, &later.1).await.expect("sync during the backup");
        }
        later
    });
    let backup_dir = dir.path().join("backup-1");
    let bin = env!("CARGO_BIN_EXE_posync");
    let backup = |to: &Path| {
        Command::new(bin).args(["admin", "--db"]).arg(&db).args(["backup", "--to"]).arg(to).output().expect("run")
    };
    let taken = backup(&backup_dir);
    assert!(taken.status.success(), "backup: {}", String::from_utf8_lossy(&taken.stderr));
    let mut later = syncing.await.expect("phone");
    // After the backup: a whole new session document, acknowledged by the live server.
    let next_day = later.0.start_session(&p, DAY + time::Duration::days(1)).expect("session");
    for k in 40..45 {
        later
            .0
            .record_visit(next_day, Generator::new(k as u64).child_visit_on(DAY + time::Duration::days(1)), k)
            .expect("record");
    }
    later.0.sync(&server.url, &later.1).await.expect("sync the new day");
    assert!(later.0.outbox().expect("outbox").is_empty());
    let before_restore = visits_in(&db);
    let copy = backup_dir.join("server.sqlite");
    assert!(backup_dir.join("server.sqlite.keys.json").exists() && backup_dir.join("backup.json").exists());
    let in_copy = visits_in(&copy);
    assert!(acknowledged.is_subset(&in_copy), "every visit acknowledged before the backup is in it");
    let again = backup(&backup_dir);
    assert!(!again.status.success(), "a non-empty directory is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let audit = Command::new(bin).args(["admin", "--db"]).arg(&db).arg("audit").output().expect("run");
    assert!(String::from_utf8_lossy(&audit.stdout).contains("backup_taken"), "the backup is audited");

    // Restore: stop the server, put the backup's files in place, start it again.
    let stopped = tokio::task::spawn_blocking(move || server.signal_and_wait("TERM", Duration::from_secs(20)))
        .await
        .expect("wait");
    assert!(stopped.success());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&copy, &db).expect("restore the store");
    std::fs::copy(backup_dir.join("server.sqlite.keys.json"), &keys_path).expect("restore the keyset");
    let restored = common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys_path.as_os_str()]);
    let mut tablet = Replica::open(dir.path().join("tablet.sqlite")).expect("tablet");
    let (first_phone, first_token, _) = &mut phones[0];
    // A token signed before the backup verifies after the restore: the keyset came back too.
    first_phone.sync(&restored.url, first_token).await.expect("a phone syncs with its old token");
    let tablet_device = tablet.device();
    let setup = SqliteStore::open(&db).expect("store");
    grant(&setup, tablet_device, Role::PuskesmasOfficer, std::slice::from_ref(&p), now());
    drop(setup);
    let tablet_token = keys.issue(&user_for(tablet_device), tablet_device, Role::PuskesmasOfficer, now(), 3600).token;
    tablet.sync(&restored.url, &tablet_token).await.expect("tablet pulls");
    let on_tablet: BTreeSet<String> = posync_testkit::visit_ids(&tablet).into_iter().collect();
    assert!(acknowledged.is_subset(&on_tablet), "the restored server serves every visit of the backup");

    // The restored server lacks what was acknowledged after the backup, the new day's whole
    // document included. The phone that holds it learns the store was restored and sends
    // everything again: nothing acknowledged is lost.
    assert!(!before_restore.is_subset(&visits_in(&db)), "the restore lost visits acknowledged after the backup");
    let (mut later_replica, later_token) = (later.0, later.1);
    later_replica.sync(&restored.url, &later_token).await.expect("sync after the restore");
    later_replica.sync(&restored.url, &later_token).await.expect("and again");
    assert!(later_replica.outbox().expect("outbox").is_empty());
    let after = visits_in(&db);
    assert!(before_restore.is_subset(&after), "every visit acknowledged before the restore is back on the server");
}
