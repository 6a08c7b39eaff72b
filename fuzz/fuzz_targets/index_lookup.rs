//! A sealed segment with arbitrary bytes as its indexes: lookups through an index the open
//! would trust find what a scan finds, or report `Corruption`; nothing panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_index_lookup(data);
});
