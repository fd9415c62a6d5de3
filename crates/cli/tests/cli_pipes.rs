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

/// Every option and argument of every command says what it is for in `--help`.
#[test]
fn every_flag_has_help_text() {
    let bin = env!("CARGO_BIN_EXE_posync");
    let help = |args: &[&str]| -> String {
        let out = Command::new(bin).args(args).arg("--help").output().expect("run posync --help");
        assert!(out.status.success(), "{args:?} --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Subcommands are listed under "Commands:" as "  name  description".
    let commands = |text: &str| -> Vec<String> {
        text.split("Commands:")
            .nth(1)
            .map(|rest| rest.split("\n\n").next().unwrap_or(""))
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|c| c != "help")
            .collect()
    };
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    let mut checked = 0;
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_item = line.starts_with("  ") && (t.starts_with('-') || t.starts_with('<') || t.starts_with('['));
            if !is_item {
                continue;
            }
            // "--flag <VALUE>  what it is", or the help on the next, deeper-indented line.
            let indent = line.len() - t.len();
            let same_line = t.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2;
            let next_line = lines.get(i + 1).is_some_and(|n| {
                let nt = n.trim_start();
                !nt.is_empty() && n.len() - nt.len() > indent && !nt.starts_with('-')
            });
            assert!(same_line || next_line, "posync {} --help: no help text for `{t}`", args.join(" "));
            checked += 1;
        }
        for c in commands(&text) {
            let mut next = path.clone();
            next.push(c);
            todo.push(next);
        }
    }
    assert!(checked > 60, "checked {checked} options and arguments");
}
