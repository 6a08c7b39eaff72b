//! Retention and `delete_records` through the public API: Kafka's
//! `UnifiedLogTest.testLogDeletionAfterDeleteRecords`, consumers reset after the log start
//! moves, records held across a deletion, persistence of the log start, replicas, and
//! bounded disk use under `retention_bytes`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use tarnlog::{
    AutoOffsetReset, BatchBuilder, ConsumerConfig, Error, Log, ManualClock, Partition, TopicConfig,
    TopicPartition,
};

const NOW: i64 = 1_700_000_000_000;

/// A log in `root` without background maintenance, on a manual clock.
fn open(root: &std::path::Path, clock: &ManualClock) -> Log {
    Log::builder()
        .dir(root)
        .clock(std::sync::Arc::new(clock.clone()))
        .background_maintenance(false)
        .open()
        .unwrap()
}

/// A fresh log with topic `t` (default config) and its partition 0.
fn default_topic() -> (tempfile::TempDir, Log, Partition) {
    let root = tempfile::tempdir().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let partition = log
        .create_topic("t", TopicConfig::default())
        .unwrap()
        .partition(0)
        .unwrap();
    (root, log, partition)
}

/// The on-disk size of one single-record batch holding `value`.
fn batch_size(value: &[u8]) -> u64 {
    let mut builder = BatchBuilder::new();
    builder.push(NOW, None, Some(value), &[]);
    builder.finish().unwrap().len() as u64
}

fn append(partition: &Partition, timestamp: i64, value: &[u8]) {
    let mut builder = BatchBuilder::new();
    builder.push(timestamp, None, Some(value), &[]);
    partition.append(builder.finish().unwrap()).unwrap();
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

/// `testLogDeletionAfterDeleteRecords`: 15 records in segments of five; moving the log
/// start deletes exactly the segments wholly below it, never the active one.
#[test]
fn log_deletion_after_delete_records() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let config = TopicConfig::default().segment_bytes(5 * batch_size(b"test"));
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..15 {
        append(&partition, NOW, b"test");
    }
    let dir = partition.path();
    assert_eq!(segment_files(&dir), 3);

    assert_eq!(partition.delete_records(1).unwrap(), 1);
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    assert_eq!(segment_files(&dir), 3);
    assert!(matches!(
        partition.read(0, 1 << 20),
        Err(Error::OffsetOutOfRange {
            requested: 0,
            earliest: 1,
            latest: 15
        })
    ));

    assert_eq!(partition.delete_records(6).unwrap(), 6);
    assert_eq!(segment_files(&dir), 2);
    assert_eq!(partition.log_start_offset(), 6);

    assert_eq!(partition.delete_records(15).unwrap(), 15);
    assert_eq!(segment_files(&dir), 1);
    assert_eq!(partition.log_start_offset(), 15);
    assert!(partition.read(14, 1 << 20).is_err());
    assert_eq!(partition.read(15, 1 << 20).unwrap().batches().count(), 0);
}

/// Bad input to `delete_records` is refused with a typed error and changes nothing; an
/// offset below the log start is a no-op, as in Kafka.
#[test]
fn delete_records_refuses_bad_input() {
    let (root, log, partition) = default_topic();
    for _ in 0..10 {
        append(&partition, NOW, b"v");
    }
    let before = common::files(root.path());
    let error = partition.delete_records(11).unwrap_err();
    assert!(
        matches!(
            error,
            Error::OffsetOutOfRange {
                requested: 11,
                earliest: 0,
                latest: 10
            }
        ),
        "{error:?}"
    );
    assert_eq!(common::files(root.path()), before, "nothing changed");
    assert_eq!(partition.delete_records(4).unwrap(), 4);
    assert_eq!(partition.delete_records(2).unwrap(), 4, "never moves back");
    let offsets = TopicPartition::new("__consumer_offsets", 0);
    log.consumer(ConsumerConfig::default().group_id("g"))
        .unwrap()
        .commit_sync_offsets([(
            TopicPartition::new("t", 0),
            tarnlog::OffsetAndMetadata::new(1),
        )])
        .unwrap();
    assert!(matches!(
        log.delete_records(&offsets, 0),
        Err(Error::InternalTopic { .. })
    ));
    assert!(matches!(
        TopicConfig::default().retention_ms(-2).validate(),
        Err(Error::InvalidConfig {
            field: "retention_ms",
            ..
        })
    ));
    assert!(matches!(
        log.create_topic("u", TopicConfig::default().retention_bytes(-5)),
        Err(Error::InvalidConfig {
            field: "retention_bytes",
            ..
        })
    ));
}

/// A consumer positioned below the new log start follows `auto_offset_reset`.
#[test]
fn consumers_below_the_log_start_reset() {
    let (_root, log, partition) = default_topic();
    for i in 0..10u8 {
        append(&partition, NOW, &[i]);
    }
    let tp = TopicPartition::new("t", 0);
    let mut earliest = log
        .consumer(ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest))
        .unwrap();
    earliest.assign([tp.clone()]).unwrap();
    earliest.seek(&tp, 2).unwrap();
    partition.delete_records(7).unwrap();
    let records: Vec<u64> = earliest
        .poll(Duration::from_millis(100))
        .unwrap()
        .into_iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(records, [7, 8, 9]);

    let mut strict = log
        .consumer(ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None))
        .unwrap();
    strict.assign([tp.clone()]).unwrap();
    strict.seek(&tp, 3).unwrap();
    assert!(matches!(
        strict.poll(Duration::from_millis(10)),
        Err(Error::OffsetOutOfRange { earliest: 7, .. })
    ));
}

/// Records read before their segment was deleted stay valid (the mapping lives on).
#[test]
fn records_held_across_a_deletion_stay_valid() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let config = TopicConfig::default()
        .segment_bytes(4 * batch_size(&[1u8; 100]))
        .retention_ms(1000);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for i in 0..12u8 {
        append(&partition, NOW, &[i; 100]);
    }
    let held = partition.read(0, 1 << 20).unwrap();
    let batches: Vec<_> = held.batches().map(Result::unwrap).collect();
    clock.advance(2000);
    let report = log.maintain().unwrap();
    assert_eq!(report.segments_deleted, 3);
    assert_eq!(
        segment_files(&partition.path()),
        1,
        "an empty active segment remains"
    );
    assert_eq!(partition.log_start_offset(), 12);
    for (i, batch) in batches.iter().enumerate() {
        let record = batch.records().next().unwrap().unwrap();
        assert_eq!(record.value.as_deref(), Some(&[i as u8; 100][..]));
    }
    append(&partition, NOW + 2000, b"after");
    assert_eq!(partition.log_end_offset(), 13);
}

/// The moved log start survives a clean reopen and a crash.
#[test]
fn the_log_start_persists() {
    for crash in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let log = open(root.path(), &clock);
        let partition = log
            .create_topic("t", TopicConfig::default().retention_ms(-1))
            .unwrap()
            .partition(0)
            .unwrap();
        for _ in 0..10 {
            append(&partition, NOW, b"v");
        }
        partition.delete_records(6).unwrap();
        drop(partition);
        if crash {
            log.simulate_crash();
        } else {
            log.close().unwrap();
        }
        let log = open(root.path(), &clock);
        let topic = log.topic("t").unwrap();
        assert_eq!(topic.config().retention_ms, -1, "the config persists");
        let partition = topic.partition(0).unwrap();
        assert_eq!(partition.log_start_offset(), 6, "crash: {crash}");
        assert_eq!(partition.log_end_offset(), 10);
    }
}

/// With two directories the follower deletes the same segments as the leader.
#[test]
fn replicas_delete_in_step() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let dirs = [root.path().join("a"), root.path().join("b")];
    let log = Log::builder()
        .dirs(&dirs)
        .clock(std::sync::Arc::new(clock.clone()))
        .background_maintenance(false)
        .open()
        .unwrap();
    let config = TopicConfig::default()
        .replication_factor(2)
        .segment_bytes(5 * batch_size(b"test"))
        .retention_bytes(5 * batch_size(b"test") as i64);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..15 {
        append(&partition, NOW, b"test");
    }
    let count = |dir: &std::path::Path| segment_files(&dir.join("t-0"));
    assert_eq!((count(&dirs[0]), count(&dirs[1])), (3, 3));
    let report = log.maintain().unwrap();
    assert_eq!(report.segments_deleted, 4, "two segments on each replica");
    assert_eq!((count(&dirs[0]), count(&dirs[1])), (1, 1));
    assert_eq!(partition.log_start_offset(), 10);
    for _ in 0..5 {
        append(&partition, NOW, b"test");
    }
    let description = log.describe_topic("t").unwrap();
    assert_eq!(description.under_replicated().count(), 0);
}

/// A steady stream under `retention_bytes` keeps the partition's files bounded, with the
/// background thread doing the work.
#[test]
fn steady_stream_stays_within_retention_bytes() {
    let root = tempfile::tempdir().unwrap();
    let log = Log::builder()
        .dir(root.path())
        .retention_check_interval_ms(1)
        .background_tick_ms(1)
        .open()
        .unwrap();
    let segment = 64 * 1024;
    let config = TopicConfig::default()
        .segment_bytes(segment)
        .retention_bytes(4 * segment as i64);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let value = [9u8; 1000];
    let mut most = 0;
    for round in 0..2000 {
        partition.append_values([&value[..]]).unwrap();
        if round % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
            let bytes: u64 = std::fs::read_dir(partition.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                // Retention may delete a file between the listing and this call.
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            most = most.max(bytes);
        }
    }
    // Four segments kept, the active one preallocated up to a whole segment, and what
    // arrived since the last pass.
    assert!(most <= 7 * segment, "log files reached {most} bytes");
    assert!(partition.log_start_offset() > 0);
}
