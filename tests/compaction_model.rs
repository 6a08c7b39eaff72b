//! Model test of compaction (`cleanup_policy = CompactDelete`): any sequence of keyed
//! writes, deletes (tombstones), `delete_records`, cleanings and clock moves, with offset
//! maps from two keys up. After a last roll and cleanings until nothing is due, reading the
//! topic yields exactly the latest record of each key whose latest record lies at or above
//! the log start (a deleted key's tombstone, or nothing once its delete horizon passed),
//! each at the offset it was written at, offsets increasing. Between steps, every record
//! read was written at its offset and the latest value of each key is always readable.
//!
//! 48 cases of up to 80 operations (`PROPTEST_CASES` overrides the count; `TARNLOG_SOAK=1`
//! runs 1,000).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use tarnlog::{BatchBuilder, CleanupPolicy, Log, ManualClock, Partition, TopicConfig};

const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 60 * 60 * 1000;
const FILLER: &[u8] = b"~filler";

#[derive(Debug, Clone)]
enum Op {
    /// A batch of (key, value) writes; `None` is a tombstone.
    Write(Vec<(u8, Option<u8>)>),
    /// One maintenance pass.
    Clean,
    /// The clock moves on.
    Advance(i64),
    /// `delete_records` at this share (per mille) of the way from the log start to the
    /// high watermark.
    DeleteRecords(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => vec((0u8..8, proptest::option::weighted(0.85, any::<u8>())), 1..4).prop_map(Op::Write),
        2 => Just(Op::Clean),
        1 => (0..2 * HOUR).prop_map(Op::Advance),
        1 => (0u64..=1000).prop_map(Op::DeleteRecords),
    ]
}

/// What was written: offset → (key, value).
type Written = BTreeMap<u64, (Vec<u8>, Option<Vec<u8>>)>;

/// Every record in the partition from its log start, checked against `written`.
fn read_all(partition: &Partition, written: &Written) -> Vec<(u64, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let start = partition.log_start_offset();
    let (mut next, end) = (start, partition.log_end_offset());
    while next < end {
        let read = partition.read(next, 1 << 20).unwrap();
        for batch in read.batches() {
            let batch = batch.unwrap();
            for record in batch.records() {
                let record = record.unwrap();
                let offset = record.offset as u64;
                if offset < start {
                    continue;
                }
                let key = record.key.unwrap().to_vec();
                let value = record.value.map(|v| v.to_vec());
                assert_eq!(
                    written.get(&offset),
                    Some(&(key.clone(), value.clone())),
                    "offset {offset}"
                );
                assert!(out.last().is_none_or(|(o, _, _)| *o < offset));
                out.push((offset, key, value));
            }
            next = batch.next_offset() as u64;
        }
    }
    out
}

/// The latest (offset, value) of each key in `written`.
fn latest(written: &Written) -> BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> {
    written
        .iter()
        .map(|(o, (k, v))| (k.clone(), (*o, v.clone())))
        .collect()
}

fn run(ops: &[Op], map_bytes: u64, segment_bytes: u64) {
    let root = common::scratch("compaction-model");
    let clock = ManualClock::new(NOW);
    let log = Log::builder()
        .dir(root.path())
        .clock(Arc::new(clock.clone()))
        .background_maintenance(false)
        .cleaner_dedupe_buffer_size(map_bytes)
        .open()
        .unwrap();
    let config = TopicConfig::default()
        .segment_bytes(segment_bytes)
        .cleanup_policy(CleanupPolicy::CompactDelete)
        .retention_ms(-1)
        .min_cleanable_dirty_ratio(0.0)
        .delete_retention_ms(HOUR);
    let partition = log.create_topic("m", config).unwrap().partition(0).unwrap();
    let mut written = Written::new();
    let write = |written: &mut Written, records: &[(Vec<u8>, Option<Vec<u8>>)]| {
        let mut builder = BatchBuilder::new();
        for (key, value) in records {
            builder.push(NOW, Some(key), value.as_deref(), &[]);
        }
        let base = partition
            .append(builder.finish().unwrap())
            .unwrap()
            .base_offset;
        for (i, record) in records.iter().enumerate() {
            written.insert(base + i as u64, record.clone());
        }
    };
    for op in ops {
        match op {
            Op::Write(records) => {
                let records: Vec<_> = records
                    .iter()
                    .map(|(k, v)| (vec![b'k', b'0' + k], v.map(|v| vec![v; 1 + v as usize % 5])))
                    .collect();
                write(&mut written, &records);
            }
            Op::Clean => {
                log.maintain().unwrap();
                let records = read_all(&partition, &written);
                // The latest value of every key is still there (unless below the log start).
                let start = partition.log_start_offset();
                for (key, (offset, value)) in latest(&written) {
                    if value.is_some() && offset >= start {
                        assert!(records.iter().any(|r| r.0 == offset), "{key:?}@{offset}");
                    }
                }
            }
            Op::Advance(ms) => clock.advance(*ms),
            Op::DeleteRecords(share) => {
                let start = partition.log_start_offset();
                let to = start + (partition.high_watermark() - start) * share / 1000;
                assert_eq!(partition.delete_records(to).unwrap(), to);
            }
        }
    }
    // Roll everything written out of the active segment, then clean until nothing is due.
    let segments = partition.segment_count();
    while partition.segment_count() == segments {
        write(&mut written, &[(FILLER.to_vec(), Some(vec![0; 40]))]);
    }
    for _ in 0..200 {
        if log.maintain().unwrap().partitions_cleaned == 0 {
            break;
        }
    }
    let records = read_all(&partition, &written);
    let active = *partition.segment_base_offsets().last().unwrap();
    let start = partition.log_start_offset();
    let mut expected: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = latest(&written)
        .into_iter()
        .filter(|(key, (offset, _))| key != FILLER && *offset >= start)
        .map(|(key, (offset, value))| (offset, key, value))
        .collect();
    expected.sort();
    let got: Vec<_> = records
        .iter()
        .filter(|r| r.1 != FILLER && r.0 < active)
        .cloned()
        .collect();
    // Tombstones may be gone (their horizon passed); everything else is exactly there.
    let mut left = got.iter().peekable();
    for want in &expected {
        if left.peek() == Some(&want) {
            left.next();
        } else {
            assert!(want.2.is_none(), "missing {want:?}; got {got:?}");
        }
    }
    assert!(
        left.next().is_none(),
        "extra records: {got:?} vs {expected:?}"
    );
    log.close().unwrap();
}

fn cases() -> u32 {
    if std::env::var("TARNLOG_SOAK").is_ok() {
        return 1_000;
    }
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compaction_keeps_exactly_the_latest_per_key(
        ops in vec(op(), 1..80),
        map_bytes in prop_oneof![Just(48u64), Just(72), Just(1 << 20)],
        segment_bytes in prop_oneof![Just(150u64), Just(400), Just(4096)],
    ) {
        run(&ops, map_bytes, segment_bytes);
    }
}
