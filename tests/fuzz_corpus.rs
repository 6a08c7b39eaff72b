//! Replays the committed fuzz corpora (fuzz/corpus/<target>/*) through the fuzz oracles, so
//! every input the fuzzers kept — including past crashes — is checked on every test run.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tarnlog::BatchBuilder;
use tarnlog::testing::{
    MAX_OPS, fuzz_config_parse, fuzz_decode_batch, fuzz_index_lookup, fuzz_offsets_record,
    fuzz_ops_model, fuzz_recover_segment, fuzz_topic_name,
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

// Every stored ops_model input runs against the model without a disagreement.
#[test]
fn ops_model_corpus_replays() {
    let n = replay("ops_model", fuzz_ops_model);
    assert!(n > 0, "the ops_model corpus is empty");
    println!("ops_model: {n} corpus inputs replayed");
}

// Pseudo-random operation sequences (a fixed xorshift seed; `TARNLOG_SOAK=1` runs 20 times
// as many) through the ops_model oracle: coverage between fuzzing runs.
#[test]
fn ops_model_random_sequences() {
    let runs = if std::env::var_os("TARNLOG_SOAK").is_some() {
        2_000
    } else {
        100
    };
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for run in 0..runs {
        // Every other input one byte short: three bytes over, a compacted topic.
        let input: Vec<u8> = (0..MAX_OPS * 4 - run % 2)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fuzz_ops_model(&input);
    }
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

/// Seeds for `index_lookup`: the oracle's segment for `shape` (its batch sizes, as the
/// oracle builds them), with indexes holding an entry for every batch, either exact or
/// with one entry `wrong`ed.
fn index_seed(shape: u8, wrong: impl Fn(&mut Vec<[u8; 8]>, &mut Vec<[u8; 12]>)) -> Vec<u8> {
    const BASE: u64 = 100;
    let (mut offsets, mut times) = (Vec::new(), Vec::new());
    let (mut position, mut next) = (0u32, BASE);
    for b in 0..=usize::from(shape & 7) {
        let count = (usize::from(shape >> 3) + b) % 3 + 1;
        let mut builder = BatchBuilder::new();
        for r in 0..count as u64 {
            let timestamp = 1_000 + 10 * (next + r - BASE) as i64;
            builder.push(timestamp, None, Some(&[7u8; 20]), &[]);
        }
        let size = builder.finish_vec().unwrap().len() as u32;
        let last = next + count as u64 - 1;
        let relative = (last - BASE) as u32;
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&relative.to_be_bytes());
        entry[4..].copy_from_slice(&position.to_be_bytes());
        offsets.push(entry);
        let mut entry = [0u8; 12];
        entry[..8].copy_from_slice(&(1_000 + 10 * (last - BASE) as i64).to_be_bytes());
        entry[8..].copy_from_slice(&relative.to_be_bytes());
        times.push(entry);
        position += size;
        next = last + 1;
    }
    wrong(&mut offsets, &mut times);
    let mut seed = vec![shape, offsets.len() as u8];
    seed.extend(offsets.concat());
    seed.extend(times.concat());
    seed
}

// Writes the index_lookup seeds (run once with `cargo test --test fuzz_corpus -- --ignored`).
#[test]
#[ignore = "writes the seed corpus files"]
fn write_index_lookup_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/index_lookup");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("seed-no-entries"), [0b0001_0101u8, 0]).unwrap();
    std::fs::write(root.join("seed-exact"), index_seed(0b0001_0110, |_, _| {})).unwrap();
    let mid_batch = index_seed(0b0000_0111, |offsets, _| offsets[2][7] += 8);
    std::fs::write(root.join("seed-mid-batch-position"), mid_batch).unwrap();
    let wrong_offset = index_seed(0b0000_0111, |offsets, _| offsets[1][3] += 1);
    std::fs::write(root.join("seed-wrong-offset"), wrong_offset).unwrap();
    // Entry 1 names batch 1's last offset at batch 2's position: a lookup that followed it
    // would answer batch 2 for batch 1's offsets.
    let past = index_seed(0b0000_0111, |offsets, _| {
        let position: [u8; 4] = offsets[2][4..].try_into().unwrap();
        offsets[1][4..].copy_from_slice(&position);
    });
    std::fs::write(root.join("seed-entry-past-its-batch"), past).unwrap();
    let late_time = index_seed(0b0000_0111, |_, times| times[1][11] += 1);
    std::fs::write(root.join("seed-late-time-entry"), late_time).unwrap();
}

// Every stored index_lookup input passes the oracle (lookups exact or `Corruption`).
#[test]
fn index_lookup_corpus_replays() {
    let n = replay("index_lookup", fuzz_index_lookup);
    assert!(n > 0, "the index_lookup corpus is empty");
}

// Every stored offsets_record input passes the oracle (no panic, re-encoding round trips).
#[test]
fn offsets_record_corpus_replays() {
    let n = replay("offsets_record", fuzz_offsets_record);
    assert!(n > 0, "the offsets_record corpus is empty");
}

// Every stored config_parse input passes the oracle (what decodes is valid and round-trips).
#[test]
fn config_parse_corpus_replays() {
    let n = replay("config_parse", fuzz_config_parse);
    assert!(n > 0, "the config_parse corpus is empty");
}

// Every stored topic_name input passes the oracle (accepted exactly under Kafka's rule).
#[test]
fn topic_name_corpus_replays() {
    let n = replay("topic_name", fuzz_topic_name);
    assert!(n > 0, "the topic_name corpus is empty");
}
