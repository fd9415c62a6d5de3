//! Long work shows progress to a person at a terminal, and nothing in a pipe or a log file:
//! a tablet's pull and a district report, run under a pseudo-terminal (`script`) and not.

mod common;

use common::District;
use std::process::Command;

/// `posync ARGS` in `dir` under a pseudo-terminal: what the terminal showed (stdout and stderr).
fn on_a_terminal(dir: &std::path::Path, args: &str) -> String {
    let bin = std::env::var_os("POSYNC_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_posync").into());
    let line = format!("'{}' {args}", bin.to_string_lossy());
    let mut cmd = Command::new("script");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POSYNC_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.current_dir(dir).env("TERM", "xterm").args(["-qec", &line, "/dev/null"]).output().expect("script");
    assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pull_and_a_district_report_show_progress_on_a_terminal_only() {
    let district = District::start();
    district.enrol("kader-0001", "phone.sqlite");
    for name in ["Nur Lestari", "Siti Aminah", "Budi Santoso"] {
        district.ok(&[
            "kader",
            "record",
            "--replica",
            "phone.sqlite",
            "--posyandu",
            "pos-hegarsari-melati-1",
            "--name",
            name,
            "--sex",
            "F",
            "--birth-date",
            "2025-06-01",
            "--date",
            "2026-11-12",
            "--weight-g",
            "9000",
        ]);
    }
    district.ok(&["kader", "sync", "--replica", "phone.sqlite"]);
    district.enrol("bidan-0001", "tablet.sqlite");

    let piped = district.run(&["pull", "--replica", "tablet.sqlite"]);
    assert!(piped.status.success());
    let log = String::from_utf8_lossy(&piped.stderr);
    assert!(!log.contains("Sinkronisasi") && !log.contains('\r'), "progress in a pipe: {log:?}");

    district.enrol("bidan-0001", "tablet2.sqlite");
    let seen = on_a_terminal(district.path(), "pull --replica tablet2.sqlite");
    assert!(seen.contains("Sinkronisasi:") && seen.contains("diterima"), "no progress on a terminal: {seen:?}");
    let report: serde_json::Value = serde_json::from_str(
        seen.lines()
            .find_map(|l| l.find("{\"rounds\"").map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("no sync report line: {seen:?}")),
    )
    .expect("json");
    assert!(report["pulled_docs"].as_u64().is_some_and(|n| n >= 1), "{report}");

    let seen = on_a_terminal(district.path(), "report --db posync.sqlite monthly --month 2026-11 --level district");
    assert!(seen.contains("Laporan siap"), "no progress for the district report: {seen:?}");
    let piped =
        district.run(&["report", "--db", "posync.sqlite", "monthly", "--month", "2026-11", "--level", "district"]);
    assert!(!String::from_utf8_lossy(&piped.stderr).contains("Laporan siap"));
}
