//! Replays the fuzzing corpus (`fuzz/corpus/<target>/`) and every crasher ever found
//! (`fuzz/artifacts/<target>/`) through the fuzz harnesses: what once broke a decoder stays
//! fixed. Seeds also cover the golden protocol vectors and hand-made edge cases.

use posync_testkit::fuzzing::HARNESSES;
use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_kept_input_runs_clean_through_its_harness() {
    let mut ran = 0;
    for (name, harness) in HARNESSES {
        for kind in ["corpus", "artifacts"] {
            let dir = fuzz_dir().join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let bytes = std::fs::read(entry.path()).expect("read input");
                harness(&bytes);
                ran += 1;
            }
        }
    }
    // Edge cases every harness must survive.
    for (_, harness) in HARNESSES {
        for input in [&b""[..], &[0u8; 1], &[0xff; 64], b"\x1f\x8b\x08\x00", b"{}", b"a.b.c"] {
            harness(input);
            ran += 1;
        }
    }
    assert!(ran >= HARNESSES.len() * 7, "the kept corpus is there: {ran} inputs");
}
