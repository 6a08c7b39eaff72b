//! Arbitrary bytes as a segment file: recovery never panics and keeps a self-consistent prefix.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_recover_segment(data);
});
