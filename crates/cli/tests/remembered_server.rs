//! A phone remembers the server it enrolled with: `posync kader sync` needs no --server
//! afterwards (the README tour no longer repeats it on every command).

mod common;

use std::ffi::OsStr;
use std::process::Command;

#[test]
fn a_phone_syncs_with_the_server_it_enrolled_with() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("posync.sqlite");
    let bin = env!("CARGO_BIN_EXE_posync");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/district-kota-banjar.json");
    let run = |args: &[&OsStr]| Command::new(bin).args(args).output().expect("run posync");
    let imported = run(&[
        OsStr::new("admin"),
        OsStr::new("--create"),
        OsStr::new("--db"),
        db.as_os_str(),
        OsStr::new("import"),
        OsStr::new(fixture),
    ]);
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let server = common::serve([OsStr::new("--db"), db.as_os_str()]);
    let issued =
        run(&[OsStr::new("admin"), OsStr::new("--db"), db.as_os_str(), OsStr::new("enrol"), OsStr::new("kader-0001")]);
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let issued: serde_json::Value = serde_json::from_slice(&issued.stdout).expect("json");
    let code = issued["code"].as_str().expect("code").to_owned();
    let replica = dir.path().join("phone.sqlite");
    let enrolled = run(&[
        OsStr::new("kader"),
        OsStr::new("enrol"),
        OsStr::new("--replica"),
        replica.as_os_str(),
        OsStr::new("--server"),
        OsStr::new(&server.url),
        OsStr::new("--code"),
        OsStr::new(&code),
    ]);
    assert!(enrolled.status.success(), "{}", String::from_utf8_lossy(&enrolled.stderr));
    // The same code again, from another phone: refused, and the kader is told what to do.
    let other = dir.path().join("other.sqlite");
    let reused = run(&[
        OsStr::new("kader"),
        OsStr::new("enrol"),
        OsStr::new("--replica"),
        other.as_os_str(),
        OsStr::new("--server"),
        OsStr::new(&server.url),
        OsStr::new("--code"),
        OsStr::new(&code),
    ]);
    assert!(!reused.status.success());
    let said = String::from_utf8_lossy(&reused.stderr);
    assert!(said.contains("enrolment code") && said.contains("ask your puskesmas"), "{said}");
    // No --server: the enrolled one (nothing listens on the old default in this test).
    let synced = Command::new(bin)
        .args(["kader", "sync", "--replica"])
        .arg(&replica)
        .env_remove("POSYNC_SERVER")
        .output()
        .expect("run posync");
    assert!(synced.status.success(), "{}", String::from_utf8_lossy(&synced.stderr));
    let report: serde_json::Value = serde_json::from_slice(&synced.stdout).expect("report");
    assert!(report["rounds"].as_u64().is_some_and(|r| r >= 1), "{report}");
}
