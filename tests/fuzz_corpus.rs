//! Replays the committed fuzz corpora (fuzz/corpus/<target>/*) through the fuzz oracles, so
//! every input the fuzzers kept — including past crashes — is checked on every test run.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tarnlog::BatchBuilder;
use tarnlog::testing::{
    fuzz_decode_batch, fuzz_offsets_record, fuzz_recover_segment, fuzz_topic_name,
};

fn replay(target: &str, oracle: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            oracle(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    count
}

// Every stored decode_batch input passes the oracle (no panic, accepted batches decode fully).
#[test]
fn decode_batch_corpus_replays() {
    let n = replay("decode_batch", fuzz_decode_batch);
    assert!(n > 0, "the decode_batch corpus is empty");
    println!("decode_batch: {n} corpus inputs replayed");
}

// Every stored recover_segment input passes the oracle (no panic, self-consistent prefix).
#[test]
fn recover_segment_corpus_replays() {
    let n = replay("recover_segment", fuzz_recover_segment);
    assert!(n > 0, "the recover_segment corpus is empty");
    println!("recover_segment: {n} corpus inputs replayed");
}

fn batch(first_value: u8, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        let key = format!("k{i}");
        let value = vec![first_value.wrapping_add(i as u8); 10 + i];
        builder.push(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(&value),
            &[("h", Some(b"v"))],
        );
    }
    builder.finish_vec().unwrap()
}

// Writes the seed corpora (run once with `cargo test --test fuzz_corpus -- --ignored`).
#[test]
#[ignore = "writes the seed corpus files"]
fn write_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (i, n) in [1usize, 2, 5].into_iter().enumerate() {
        std::fs::write(
            root.join(format!("decode_batch/seed-{i}")),
            batch(i as u8, n),
        )
        .unwrap();
    }
    let mut segment = Vec::new();
    let mut next = 0i64;
    for n in [1usize, 3, 2] {
        let mut b = batch(n as u8, n);
        b[..8].copy_from_slice(&next.to_be_bytes());
        next += n as i64;
        segment.extend_from_slice(&b);
    }
    std::fs::write(root.join("recover_segment/seed-valid"), &segment).unwrap();
    let mut torn = segment.clone();
    torn.truncate(segment.len() - 7);
    std::fs::write(root.join("recover_segment/seed-torn"), &torn).unwrap();
    let mut zeros = segment;
    zeros.extend_from_slice(&[0u8; 64]);
    std::fs::write(root.join("recover_segment/seed-zero-tail"), &zeros).unwrap();
}

// Every stored offsets_record input passes the oracle (no panic, re-encoding round trips).
#[test]
fn offsets_record_corpus_replays() {
    let n = replay("offsets_record", fuzz_offsets_record);
    assert!(n > 0, "the offsets_record corpus is empty");
}

// Every stored topic_name input passes the oracle (accepted exactly under Kafka's rule).
#[test]
fn topic_name_corpus_replays() {
    let n = replay("topic_name", fuzz_topic_name);
    assert!(n > 0, "the topic_name corpus is empty");
}
