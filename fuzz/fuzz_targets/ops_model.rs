//! Operation sequences (appends, reads, deletions, truncations, commits, retention,
//! reopens and crashes) against a real log and a model of it: every answer agrees.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_ops_model(data);
});
