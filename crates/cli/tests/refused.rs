//! `posync kader sync` exits non-zero when the server refused a record, and says which
//! document and why (it used to print the report and exit 0).

mod common;

use posync_model::{DeviceId, Role};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_testkit::{DAY, Generator, grant, posyandu, user_for};
use std::ffi::OsStr;
use std::process::Command;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn a_sync_with_a_refused_document_exits_non_zero_and_names_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, keys_path) = (dir.path().join("server.sqlite"), dir.path().join("keys.json"));
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let (mine, other) = (posyandu("refused-mine"), posyandu("refused-other"));
    let replica_path = dir.path().join("phone.sqlite");
    let mut phone = Replica::open(&replica_path).expect("replica");
    let device: DeviceId = phone.device();
    let setup = SqliteStore::open(&db).expect("store");
    grant(&setup, device, Role::Kader, std::slice::from_ref(&mine), now());
    grant(&setup, DeviceId::new_random(), Role::Kader, std::slice::from_ref(&other), now());
    drop(setup);
    let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
    // A session of a posyandu outside this kader's scope: the server refuses it.
    let session = phone.start_session(&other, DAY).expect("session");
    phone.record_visit(session, Generator::new(3).child_visit(), 1).expect("record");
    drop(phone);
    let server = common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys_path.as_os_str()]);
    let out = Command::new(env!("CARGO_BIN_EXE_posync"))
        .args(["kader", "sync", "--server", &server.url, "--token", &token, "--replica"])
        .arg(&replica_path)
        .output()
        .expect("run posync");
    assert!(!out.status.success(), "a refused record is a failed sync");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("refused 1 document") && said.contains(&session.to_string()), "{said}");
    assert!(said.contains("forbidden"), "with the server's code: {said}");
}
