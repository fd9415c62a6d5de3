//! The first encrypted opens of a process, racing each other, all succeed.
//!
//! SQLCipher finishes its own initialisation (random seed, crypto provider) just after SQLite
//! reports itself initialised. A key set by another thread in that moment used to fail with
//! "An error occurred with PRAGMA key or rekey" (CI saw it once, in `encryption.rs`). The race
//! exists once per process, so this test runs itself as fresh child processes: each starts
//! several threads that open encrypted replicas at the same instant.

use posync_replica::Replica;
use std::process::Command;
use std::sync::{Arc, Barrier};

const KEY: [u8; 32] = [0x3c; 32];
const CHILD_ENV: &str = "POSYNC_FIRST_OPEN_CHILD";
const CHILDREN: usize = 500;
const THREADS: usize = 6;

/// In a child: `THREADS` threads open encrypted replicas at once, as the process's first
/// SQLite calls. Panics (a failing child) if any open fails.
fn race_first_opens() {
    let dir = tempfile::tempdir().expect("dir");
    let barrier = Arc::new(Barrier::new(THREADS));
    let opens: Vec<_> = (0..THREADS)
        .map(|i| {
            let path = dir.path().join(format!("phone-{i}.sqlite"));
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                Replica::open_encrypted(&path, &KEY).map(|_| ()).map_err(|e| e.to_string())
            })
        })
        .collect();
    let failed: Vec<String> = opens.into_iter().filter_map(|t| t.join().expect("thread").err()).collect();
    assert!(failed.is_empty(), "first encrypted opens failed: {failed:?}");
}

#[test]
fn encrypted_opens_racing_at_process_start_all_succeed() {
    if std::env::var_os(CHILD_ENV).is_some() {
        race_first_opens();
        return;
    }
    let me = std::env::current_exe().expect("test binary");
    let mut failures = Vec::new();
    for _ in 0..CHILDREN {
        let out = Command::new(&me)
            .args(["--exact", "encrypted_opens_racing_at_process_start_all_succeed", "--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run a child");
        if !out.status.success() {
            failures.push(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("failed"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CHILDREN} processes failed a first open:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
