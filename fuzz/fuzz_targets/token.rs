#![no_main]
//! Fuzz target `token`: see `posync_testkit::fuzzing::token` (the same function runs the kept
//! corpus and crashers as regression tests under `cargo test`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    posync_testkit::fuzzing::token(data);
});
