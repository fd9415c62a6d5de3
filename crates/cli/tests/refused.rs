//! `posync kader sync` exits non-zero when the server refused a record, and says which
//! document and why (it used to print the report and exit 0).

mod common;

use posync_model::{DeviceId, Role};
use posync_replica::Replica;
use posync_testkit::{DAY, Generator, posyandu};
use std::process::Command;

#[test]
fn a_sync_with_a_refused_document_exits_non_zero_and_names_it() {
    let dir = tempfile::tempdir().expect("dir");
    let site = common::Site::new(dir.path());
    let (mine, other) = (posyandu("refused-mine"), posyandu("refused-other"));
    let replica_path = dir.path().join("phone.sqlite");
    let mut phone = Replica::open(&replica_path).expect("replica");
    let token = site.grant(phone.device(), Role::Kader, std::slice::from_ref(&mine));
    site.grant(DeviceId::new_random(), Role::Kader, std::slice::from_ref(&other));
    // A session of a posyandu outside this kader's scope: the server refuses it.
    let session = phone.start_session(&other, DAY).expect("session");
    phone.record_visit(session, Generator::new(3).child_visit(), 1).expect("record");
    drop(phone);
    let server = site.serve(&[]);
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
