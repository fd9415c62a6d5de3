//! The README's tour, step 2, runs as written: the test reads the shell block from README.md
//! and runs it line by line with bash (`set -euo pipefail`) in a fresh folder holding only
//! the repository's `fixtures`, against `posync serve` started there as the README says.
//! The one change: `posync` is the binary under test instead of `cargo run`. When the README
//! drifts from the CLI (a flag renamed, a fixture moved, a required field missing), this fails.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CARGO_RUN: &str = r#"posync() { cargo run -q -p posync-cli -- "$@"; }"#;

/// The lines of the first ```sh block after "**Drive it by hand.**", unindented.
fn tour_block(readme: &str) -> Vec<String> {
    let from = readme.find("**Drive it by hand.**").expect("the tour's step 2 in README.md");
    let mut lines = readme[from..].lines().skip_while(|l| l.trim() != "```sh").skip(1);
    let block: Vec<String> =
        lines.by_ref().take_while(|l| l.trim() != "```").map(|l| l.trim_start().to_owned()).collect();
    assert!(!block.is_empty(), "an empty tour block");
    block
}

#[test]
fn the_readme_tour_runs_as_written() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    assert!(readme.contains("In one terminal `cargo run -p posync-cli -- serve`"), "the tour starts the server so");
    let block = tour_block(&readme);
    assert_eq!(block[0], CARGO_RUN, "the tour defines posync as cargo run");
    let script = format!("set -euo pipefail\nposync() {{ \"$POSYNC_EXE\" \"$@\"; }}\n{}\n", block[1..].join("\n"));

    let dir = tempfile::tempdir().expect("dir");
    std::os::unix::fs::symlink(repo.join("fixtures").canonicalize().expect("fixtures"), dir.path().join("fixtures"))
        .expect("link fixtures");
    let bin = env!("CARGO_BIN_EXE_posync");
    let clean = |cmd: &mut Command| {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("POSYNC_") {
                cmd.env_remove(key);
            }
        }
    };
    // `posync serve` as the README runs it, on a free port (POSYNC_ADDR, as documented).
    let mut serve = Command::new(bin);
    clean(&mut serve);
    let mut server = serve
        .arg("serve")
        .env("POSYNC_ADDR", "127.0.0.1:0")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("posync serve");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let url = line.split_whitespace().nth(3).expect("url").to_owned();

    let mut bash = Command::new("bash");
    clean(&mut bash);
    let ran = bash
        .args(["-c", &script])
        .env("POSYNC_EXE", bin)
        .env("POSYNC_SERVER", &url)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let _ = server.kill();
    let _ = server.wait();
    let (out, err) = (String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert!(ran.status.success(), "the tour stopped:\n--- stdout\n{out}\n--- stderr\n{err}");

    // What the tour promises a reader sees.
    assert!(err.contains("BB/U") && err.contains("Naik (N)"), "z-scores and N after the second visit:\n{err}");
    for name in ["Nur Lestari", "Sri Wahyuni"] {
        assert!(out.contains(&format!("\"name\":\"{name}\"")), "{name} not on the tablet:\n{out}");
    }
    assert!(out.contains("Laporan bulanan 2026-11"), "the monthly report:\n{out}");
    assert!(out.contains("posyandu,session_date,person_id,name"), "the visits export:\n{out}");
    assert!(out.contains("posyandu,person_id,name,sex"), "the people export read with an API key:\n{out}");
    assert!(out.contains("\"api_key_used\""), "the key's use in the audit log:\n{out}");
    assert!(out.contains("pos-hegarsari-melati-1|2026-11-11|Nur Lestari|9200"), "the server's SQL projection:\n{out}");
    // The SATUSEHAT export: November's two visits, Nur identified by her mother's NIK.
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("banjar-2026-11.json")).expect("the exported file"))
            .expect("the export is JSON");
    assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("transaction")));
    let of_kind = |k: &str| {
        bundle["entry"].as_array().into_iter().flatten().filter(|e| e["resource"]["resourceType"] == k).count()
    };
    assert_eq!((of_kind("Encounter"), of_kind("Patient"), of_kind("Immunization")), (2, 2, 1), "{bundle}");
    let text = bundle.to_string();
    assert!(text.contains("https://fhir.kemkes.go.id/id/nik-ibu") && text.contains("3279014106900001"));
}
