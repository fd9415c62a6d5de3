#![no_main]
//! Fuzz target `decode_request`: see `posync_testkit::fuzzing::decode_request` (the same function runs the kept
//! corpus and crashers as regression tests under `cargo test`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    posync_testkit::fuzzing::decode_request(data);
});
