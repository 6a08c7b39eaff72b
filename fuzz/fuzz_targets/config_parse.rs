//! Arbitrary text as a directory's `meta` and as a topic config's words: nothing panics,
//! what is accepted is valid and writes back to itself.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_config_parse(data);
});
