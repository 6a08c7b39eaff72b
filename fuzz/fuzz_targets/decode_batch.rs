//! Arbitrary bytes as one record batch: never a panic; an accepted batch decodes fully.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_decode_batch(data);
});
