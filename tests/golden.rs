//! Golden files: a small log written by an earlier tarnlog (`tests/golden/v1`, made by a
//! fixed workload on a manual clock) must still open and read back exactly, and the same
//! workload run now must write the same segment and index bytes. The first guards logs
//! already on disk against a reader that changed; the second catches a change of the
//! on-disk format that nobody meant.
//!
//! When the format is changed on purpose, write a new golden log under a new version
//! (`TARNLOG_BLESS=v2 cargo test --release --test golden -- --ignored bless`), keep the old
//! one, and test both.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tarnlog::{
    BatchBuilder, ConsumerConfig, Log, ManualClock, OffsetAndMetadata, TimestampType, TopicConfig,
    TopicPartition,
};

const T0: i64 = 1_700_000_000_000;

/// One record of the workload: key, value, headers, timestamp.
type Written = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    i64,
);

/// The records of `events` partition `p`, in order: keys, null keys, tombstones, headers
/// (one with a null value), timestamps going up and back.
fn events(p: u32) -> Vec<Written> {
    (0..30u32)
        .map(|i| {
            let key = (i % 4 != 3).then(|| format!("key-{}", i % 5).into_bytes());
            let value = (i % 7 != 6)
                .then(|| format!("value {p}/{i} {}", "x".repeat(i as usize)).into_bytes());
            let headers = match i % 3 {
                0 => Vec::new(),
                1 => vec![("trace".to_owned(), Some(format!("t{i}").into_bytes()))],
                _ => vec![
                    ("a".to_owned(), Some(b"1".to_vec())),
                    ("null".to_owned(), None),
                ],
            };
            let timestamp = T0 + i64::from(i) * 1000 - if i % 5 == 4 { 3000 } else { 0 };
            (key, value, headers, timestamp)
        })
        .collect()
}

/// Batch sizes the records of `events` are appended in.
const BATCHES: [usize; 6] = [1, 4, 7, 3, 10, 5];

fn events_config() -> TopicConfig {
    TopicConfig::default()
        .partitions(2)
        .segment_bytes(1024)
        .index_interval_bytes(128)
}

fn stamped_config() -> TopicConfig {
    TopicConfig::default().timestamp_type(TimestampType::LogAppendTime)
}

/// The log start of `events` partition 1 after `delete_records`.
const DELETED_BEFORE: u64 = 5;

/// The group's commits.
fn commits() -> Vec<(TopicPartition, OffsetAndMetadata)> {
    vec![
        (
            TopicPartition::new("events", 0),
            OffsetAndMetadata::new(12).with_metadata("m0"),
        ),
        (TopicPartition::new("events", 1), OffsetAndMetadata::new(7)),
    ]
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> Log {
    Log::builder()
        .dir(dir)
        .clock(clock.clone())
        .offsets_topic_partitions(2)
        .open()
        .unwrap()
}

/// The fixed workload, into an empty `dir`.
fn write_workload(dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir, &clock);
    let topic = log.create_topic("events", events_config()).unwrap();
    for p in 0..2 {
        let partition = topic.partition(p).unwrap();
        let records = events(p);
        let mut builder = BatchBuilder::new();
        let mut next = 0;
        for size in BATCHES {
            for (key, value, headers, timestamp) in &records[next..next + size] {
                let headers: Vec<(&str, Option<&[u8]>)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_deref()))
                    .collect();
                builder.push(*timestamp, key.as_deref(), value.as_deref(), &headers);
            }
            partition.append(builder.finish().unwrap()).unwrap();
            next += size;
        }
    }
    let stamped = log.create_topic("stamped", stamped_config()).unwrap();
    for i in 0..5 {
        clock.advance(250);
        let value = format!("stamped {i}");
        stamped
            .partition(0)
            .unwrap()
            .append_values([value.as_bytes()])
            .unwrap();
    }
    log.delete_records(&TopicPartition::new("events", 1), DELETED_BEFORE)
        .unwrap();
    let mut consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id("g")
                .enable_auto_commit(false),
        )
        .unwrap();
    consumer.commit_sync_offsets(commits()).unwrap();
    consumer.close().unwrap();
    log.close().unwrap();
}

fn golden(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(version)
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for (name, bytes) in files(from) {
        let path = to.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Writes the golden log of version `TARNLOG_BLESS` (run on purpose only).
#[test]
#[ignore = "writes tests/golden/<version>; run with TARNLOG_BLESS=<version>"]
fn bless() {
    let Ok(version) = std::env::var("TARNLOG_BLESS") else {
        return;
    };
    let dir = golden(&version);
    assert!(
        !dir.exists(),
        "{} exists: keep old golden logs",
        dir.display()
    );
    let scratch = tempfile::tempdir().unwrap();
    write_workload(scratch.path());
    copy_tree(scratch.path(), &dir);
    // The lock file and `sync-ok` are the things an open makes itself.
    let _ = std::fs::remove_file(dir.join("LOCK"));
    let _ = std::fs::remove_file(dir.join("sync-ok"));
}

/// The v1 golden log opens cleanly (no rescan, no repair) and reads back exactly what the
/// workload wrote: topics and configs, every record with its offset, key, value, headers
/// and timestamp, the log start `delete_records` left, the group's commits; and it takes
/// new appends.
#[test]
fn the_v1_golden_log_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&golden("v1"), dir.path());
    let clock = Arc::new(ManualClock::new(T0 + 60_000));
    let log = open(dir.path(), &clock);
    let report = log.recovery_report();
    assert!(report.unclean_dirs.is_empty(), "{report:#?}");
    assert!(
        report
            .partitions
            .iter()
            .all(|p| p.truncation.is_none() && p.rebuilt_indexes.is_empty()),
        "{report:#?}"
    );
    assert_eq!(log.topics(), ["events", "stamped"]);
    let described = log.describe_topic("events").unwrap();
    assert_eq!(described.config, events_config());
    assert_eq!(
        log.describe_topic("stamped").unwrap().config,
        stamped_config()
    );

    let topic = log.topic("events").unwrap();
    for p in 0..2 {
        let partition = topic.partition(p).unwrap();
        let start = if p == 1 { DELETED_BEFORE } else { 0 };
        assert_eq!(partition.log_start_offset(), start);
        assert_eq!(partition.log_end_offset(), 30);
        let mut offset = start;
        let mut got = Vec::new();
        while offset < partition.log_end_offset() {
            let read = partition.read(offset, 1 << 20).unwrap();
            for record in read.records() {
                let record = record.unwrap();
                assert_eq!(record.timestamp_type, TimestampType::CreateTime);
                offset = record.offset as u64 + 1;
                got.push((record.offset as u64, record));
            }
        }
        let expected = events(p);
        assert_eq!(got.len() as u64, 30 - start);
        for (at, record) in got {
            let (key, value, headers, timestamp) = &expected[at as usize];
            assert_eq!(record.key.as_deref(), key.as_deref(), "events-{p}@{at}");
            assert_eq!(record.value.as_deref(), value.as_deref(), "events-{p}@{at}");
            assert_eq!(record.timestamp, *timestamp, "events-{p}@{at}");
            let got_headers: Vec<(String, Option<Vec<u8>>)> = record
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                .collect();
            assert_eq!(&got_headers, headers, "events-{p}@{at}");
        }
        assert!(
            std::fs::read_dir(dir.path().join(format!("events-{p}")))
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log"))
                .count()
                > 1,
            "the workload rolls segments"
        );
    }
    let stamped = log.topic("stamped").unwrap().partition(0).unwrap();
    let read = stamped.read(0, 1 << 20).unwrap();
    let records: Vec<_> = read.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 5);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(record.timestamp, T0 + 250 * (i as i64 + 1));
        assert_eq!(
            record.value.as_deref(),
            Some(format!("stamped {i}").as_bytes())
        );
    }
    let consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id("g")
                .enable_auto_commit(false),
        )
        .unwrap();
    for (tp, commit) in commits() {
        let got = consumer.committed(&tp).unwrap().unwrap();
        assert_eq!(
            (got.offset, &got.metadata),
            (commit.offset, &commit.metadata)
        );
        // Stamped with the log's clock at the commit, after the five appends.
        assert_eq!(got.commit_timestamp, T0 + 1250);
    }
    drop(consumer);
    let info = stamped.append_values([b"new".as_slice()]).unwrap();
    assert_eq!(info.base_offset, 5);
    log.close().unwrap();
}

/// The same workload today writes the same bytes as the golden log: every segment,
/// offset index and time index file, the internal offsets topic's included.
#[test]
fn the_workload_still_writes_the_v1_format() {
    let dir = tempfile::tempdir().unwrap();
    write_workload(dir.path());
    let is_data = |name: &String| {
        [".log", ".index", ".timeindex"]
            .iter()
            .any(|ext| name.ends_with(ext))
    };
    let now: BTreeMap<String, Vec<u8>> = files(dir.path())
        .into_iter()
        .filter(|(n, _)| is_data(n))
        .collect();
    let then: BTreeMap<String, Vec<u8>> = files(&golden("v1"))
        .into_iter()
        .filter(|(n, _)| is_data(n))
        .collect();
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        then.keys().collect::<Vec<_>>(),
        "the workload writes other files than the golden log holds"
    );
    for (name, bytes) in &now {
        assert!(
            *bytes == then[name],
            "{name} differs from tests/golden/v1: the on-disk format changed (see the \
             module docs if that was meant)"
        );
    }
}
