//! The CLI as a Unix tool: its output piped into a reader that stops early
//! (`posync admin units | head -1`) ends it quietly, not with a panic.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("posync.sqlite");
    let bin = env!("CARGO_BIN_EXE_posync");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/district-kota-banjar.json");
    let imported =
        Command::new(bin).args(["admin", "--create", "--db"]).arg(&db).args(["import", fixture]).output().expect("run");
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let mut child = Command::new(bin)
        .args(["admin", "--db"])
        .arg(&db)
        .arg("units")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("a line");
    // The reader goes away after one line, as `head -1` does.
    assert!(first.contains("\"kind\""), "{first}");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "no panic on a closed pipe: {stderr}");
    assert!(out.status.success(), "exits 0: {:?} {stderr}", out.status);
}

/// A server URL without a scheme, and a server that is down, are explained, not reported
/// as "builder error" or a bare "error sending request".
#[test]
fn a_bad_or_unreachable_server_url_says_what_to_fix() {
    let dir = tempfile::tempdir().expect("dir");
    let replica = dir.path().join("phone.sqlite");
    let bin = env!("CARGO_BIN_EXE_posync");
    let run = |server: &str| {
        Command::new(bin)
            .args(["kader", "sync", "--server", server, "--token", "t", "--replica"])
            .arg(&replica)
            .output()
            .expect("run posync")
    };
    let no_scheme = run("192.168.1.10:8080");
    assert!(!no_scheme.status.success());
    let said = String::from_utf8_lossy(&no_scheme.stderr);
    assert!(said.contains("must start with http:// or https://"), "{said}");
    // Port 9 on loopback: nothing listens there.
    let down = run("http://127.0.0.1:9");
    assert!(!down.status.success());
    let said = String::from_utf8_lossy(&down.stderr);
    assert!(said.contains("is the server running") && said.contains("127.0.0.1:9"), "{said}");
}

/// A mistyped --db is an error for the console and reports, not a new empty store whose
/// report is an empty table.
#[test]
fn a_missing_store_file_is_an_error_outside_serve() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("posnyc.sqlite");
    let bin = env!("CARGO_BIN_EXE_posync");
    for args in [vec!["report", "monthly", "--month", "2026-01"], vec!["admin", "units"]] {
        let out = Command::new(bin).args(&args[..1]).arg("--db").arg(&missing).args(&args[1..]).output().expect("run");
        assert!(!out.status.success(), "{args:?} on a missing file fails");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("no store at") && said.contains("--create"), "{said}");
        assert!(!missing.exists(), "{args:?} created no file");
    }
}
