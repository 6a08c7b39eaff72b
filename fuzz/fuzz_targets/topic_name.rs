//! Arbitrary bytes as a topic name: accepted exactly when Kafka would accept it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tarnlog::testing::fuzz_topic_name(data);
});
