//! Compaction under process kills: a child process (this test binary, run as
//! `compaction_child`) writes keyed values and tombstones to a compacted topic with small
//! segments and runs a cleaning every few appends; the parent SIGKILLs it at random moments
//! (often mid-cleaning), reopens the log and checks, for every key, that its last record is
//! at or after its last acknowledged write (a value, or a tombstone that may have been
//! cleaned away), that every value still sits at the offset it was written at, and that
//! offsets increase. `TARNLOG_SOAK=1` raises the kill count from 25 to 250.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tarnlog::{BatchBuilder, CleanupPolicy, TopicConfig};

const TOPIC: &str = "c";
const ENV_CHILD: &str = "TARNLOG_COMPACTION_CHILD";
const KEYS: u64 = 24;

/// A value names the offset it was written at, padded so segments fill.
fn value_of(offset: u64) -> Vec<u8> {
    let mut value = offset.to_string().into_bytes();
    value.push(b'/');
    value.resize(20 + (offset % 40) as usize, b'.');
    value
}

/// The child: appends, printing `A <key> <offset>` after each acknowledged value, `T <key>`
/// before each tombstone and `D <key> <offset>` once it is acknowledged; cleans every few
/// appends.
#[test]
fn compaction_child() {
    let config = TopicConfig::default()
        .segment_bytes(1500)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
        .delete_retention_ms(0);
    let Some((log, partition)) = common::child_partition(ENV_CHILD, TOPIC, config) else {
        return;
    };
    let mut rng = partition
        .log_end_offset()
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = format!("k{}", rng % KEYS);
        let offset = partition.log_end_offset();
        let mut builder = BatchBuilder::new();
        if rng % 13 == 0 {
            println!("T {key}");
            builder.push(0, Some(key.as_bytes()), None, &[]);
            let info = partition.append(builder.finish().unwrap()).unwrap();
            println!("D {key} {}", info.base_offset);
        } else {
            builder.push(0, Some(key.as_bytes()), Some(&value_of(offset)), &[]);
            let info = partition.append(builder.finish().unwrap()).unwrap();
            assert_eq!(info.base_offset, offset);
            println!("A {key} {offset}");
        }
        if offset % 9 == 0 {
            log.maintain().unwrap();
        }
    }
}

/// What the parent knows of a key: its last acknowledged write (offset, tombstone?) and
/// whether a tombstone was announced after it.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    last: Option<(u64, bool)>,
    tombstone_pending: bool,
}

#[test]
fn kill_during_compaction() {
    if std::env::var(ENV_CHILD).is_ok() {
        return;
    }
    let kills = if std::env::var("TARNLOG_SOAK").is_ok() {
        250
    } else {
        25
    };
    let dir = tempfile::tempdir().unwrap();
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut writes = 0usize;
    for kill in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run = Duration::from_millis(40 + rng % 160);
        let (lines, status) = common::run_and_kill("compaction_child", ENV_CHILD, dir.path(), run);
        assert!(
            lines.iter().any(|l| l == "READY") || status.code().is_none(),
            "kill {kill}: the child failed: {status:?} {lines:?}"
        );
        for line in &lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["A", key, offset] => {
                    writes += 1;
                    known.insert(
                        key.into(),
                        Known {
                            last: Some((offset.parse().unwrap(), false)),
                            tombstone_pending: false,
                        },
                    );
                }
                ["T", key] => known.entry(key.into()).or_default().tombstone_pending = true,
                ["D", key, offset] => {
                    writes += 1;
                    known.insert(
                        key.into(),
                        Known {
                            last: Some((offset.parse().unwrap(), true)),
                            tombstone_pending: false,
                        },
                    );
                }
                _ => {}
            }
        }
        check(dir.path(), &known, &format!("kill {kill}"));
    }
    let log = common::manual_log(dir.path()).unwrap();
    log.maintain().unwrap();
    log.close().unwrap();
    let records = check(dir.path(), &known, "after a last cleaning");
    println!(
        "compaction crash: {kills} kills, {writes} writes acknowledged, {records} records left"
    );
    assert!(writes > 500, "only {writes} writes");
    assert!(records < writes / 3, "the cleaner removed too little");
}

/// The reopened log against what the child acknowledged; returns the records it holds.
fn check(dir: &Path, known: &BTreeMap<String, Known>, when: &str) -> usize {
    let log = common::manual_log(dir).unwrap_or_else(|error| panic!("{when}: {error:?}"));
    let Ok(topic) = log.topic(TOPIC) else {
        assert!(known.is_empty(), "{when}: the topic is gone");
        return 0;
    };
    let partition = topic.partition(0).unwrap();
    let end = partition.log_end_offset();
    let mut last: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    let (mut next, mut previous, mut count) = (partition.log_start_offset(), None, 0);
    while next < end {
        let read = partition.read(next, 1 << 20).unwrap();
        for batch in read.batches() {
            let batch = batch.unwrap_or_else(|e| panic!("{when}: {e} reading at {next}"));
            for record in batch.records() {
                let record = record.unwrap();
                let offset = u64::try_from(record.offset).unwrap();
                assert!(
                    previous.is_none_or(|p| p < offset),
                    "{when}: offsets at {offset}"
                );
                previous = Some(offset);
                count += 1;
                if let Some(value) = record.value.as_deref() {
                    assert_eq!(
                        value,
                        &value_of(offset)[..],
                        "{when}: offset {offset} changed"
                    );
                }
                let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
                last.insert(key, (offset, record.value.is_none()));
            }
            next = u64::try_from(batch.next_offset()).unwrap();
        }
    }
    for (key, k) in known {
        let found = last.get(key);
        match (k.last, found) {
            (Some((acked, _)), Some(&(offset, _))) => assert!(
                offset >= acked,
                "{when}: {key} ends at {offset}, before its acknowledged write at {acked}"
            ),
            (Some((acked, tombstone)), None) => assert!(
                tombstone || k.tombstone_pending,
                "{when}: {key} vanished; its value at {acked} was acknowledged"
            ),
            (None, _) => {}
        }
    }
    log.close().unwrap();
    count
}
