//! Arbitrary bytes as one `__consumer_offsets` record: never a panic; what decodes
//! re-encodes to the same entry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_offsets_record(data);
});
