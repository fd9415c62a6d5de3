#![no_main]
//! Fuzz target `inspect_changes`: see `posync_testkit::fuzzing::inspect_changes` (the same function runs the kept
//! corpus and crashers as regression tests under `cargo test`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    posync_testkit::fuzzing::inspect_changes(data);
});
