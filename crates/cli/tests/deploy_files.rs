//! The deployment files in `deploy/` name only flags the binary has: a renamed flag fails
//! here, not on a district's server at its next restart.

use std::process::Command;

#[test]
fn the_systemd_unit_uses_only_flags_posync_serve_has() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/posync.service"))
        .expect("deploy/posync.service");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart line");
    let mut words = exec.split_whitespace();
    assert!(words.next().is_some_and(|bin| bin.ends_with("/posync")), "{exec}");
    assert_eq!(words.next(), Some("serve"), "{exec}");
    let help =
        Command::new(env!("CARGO_BIN_EXE_posync")).args(["serve", "--help"]).output().expect("posync serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = exec.split_whitespace().filter(|w| w.starts_with("--")).collect();
    assert!(flags.len() >= 4, "{exec}");
    for flag in flags {
        assert!(help.contains(flag), "posync serve has no {flag}");
    }
    assert!(unit.contains("KillSignal=SIGTERM"), "stopped with the signal it drains on");
}
