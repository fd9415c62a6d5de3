#![no_main]
//! Fuzz target `gunzip`: see `posync_testkit::fuzzing::gunzip` (the same function runs the kept
//! corpus and crashers as regression tests under `cargo test`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    posync_testkit::fuzzing::gunzip(data);
});
