//! Log compaction through the public API: the latest value per key survives with its
//! offset, tombstones and the compaction lags, the policies' interplay with retention and
//! `delete_records`, keyless records refused, readers holding records across a cleaning,
//! replicas cleaned alike, `__consumer_offsets` compacted, an interrupted swap finished at
//! open, an I/O error at every step of a cleaning (countdown), and damaged input refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
use tarnlog::{
    AutoOffsetReset, BatchBuilder, CleanupPolicy, ConsumerConfig, Error, Log, ManualClock,
    OffsetAndMetadata, Partition, TopicConfig, TopicPartition,
};

const NOW: i64 = 1_700_000_000_000;
const HOUR: i64 = 60 * 60 * 1000;

fn builder(root: &Path, clock: &ManualClock) -> tarnlog::LogBuilder {
    Log::builder()
        .dir(root)
        .clock(Arc::new(clock.clone()))
        .background_maintenance(false)
}

fn open(root: &Path, clock: &ManualClock) -> Log {
    builder(root, clock).open().unwrap()
}

/// Small segments, cleaned as soon as anything is dirty.
fn compacted() -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(400)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
}

fn topic(log: &Log, config: TopicConfig) -> Partition {
    log.create_topic("t", config).unwrap().partition(0).unwrap()
}

fn put(partition: &Partition, key: &str, value: Option<&str>) -> u64 {
    let mut builder = BatchBuilder::new();
    builder.push(NOW, Some(key.as_bytes()), value.map(str::as_bytes), &[]);
    partition
        .append(builder.finish().unwrap())
        .unwrap()
        .base_offset
}

/// Every record of partition 0 of `t`: (offset, key, value), read by a consumer.
fn consume(log: &Log) -> Vec<(u64, String, Option<String>)> {
    try_consume(log).unwrap()
}

fn try_consume(log: &Log) -> tarnlog::Result<Vec<(u64, String, Option<String>)>> {
    let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config)?;
    let tp = TopicPartition::new("t", 0);
    consumer.assign([tp.clone()])?;
    let end = log.topic("t")?.partition(0)?.high_watermark();
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let mut out = Vec::new();
    while consumer.position(&tp)? < end {
        for record in consumer.poll(Duration::from_millis(10))? {
            out.push((
                record.offset,
                text(record.key.as_deref().unwrap()),
                record.value.as_deref().map(text),
            ));
        }
    }
    Ok(out)
}

/// The latest value per key in `records`.
fn latest(records: &[(u64, String, Option<String>)]) -> BTreeMap<String, Option<String>> {
    records
        .iter()
        .map(|(_, k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Writes `count` values over `keys` keys (value `i` for the `i`-th write); returns the
/// latest value per key.
fn fill(partition: &Partition, count: usize, keys: usize) -> BTreeMap<String, Option<String>> {
    let mut expected = BTreeMap::new();
    for i in 0..count {
        let key = format!("k{}", i % keys);
        put(partition, &key, Some(&i.to_string()));
        expected.insert(key, Some(i.to_string()));
    }
    expected
}

#[test]
fn cleaning_keeps_the_latest_value_per_key_at_its_offset() {
    let root = tempfile::tempdir().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let partition = topic(&log, compacted());
    let expected = fill(&partition, 200, 10);
    let before = consume(&log);
    let report = log.maintain().unwrap();
    assert_eq!(report.partitions_cleaned, 1);
    assert!(report.cleaned_records_removed > 150, "{report:?}");
    assert!(report.cleaned_bytes_written < report.cleaned_bytes_read / 3);
    let after = consume(&log);
    assert!(
        after.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets increase"
    );
    assert_eq!(latest(&after), expected);
    // Every record left is one that was written, at the offset it was written at.
    assert!(after.iter().all(|r| before.contains(r)));
    // Below the active segment, one record per key.
    let active = *partition.segment_base_offsets().last().unwrap();
    let cleaned: Vec<_> = after.iter().filter(|r| r.0 < active).collect();
    let mut keys: Vec<_> = cleaned.iter().map(|r| &r.1).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), cleaned.len(), "{cleaned:?}");
    assert_eq!(partition.log_end_offset(), 200);
    // Nothing left to clean: the next pass does nothing.
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0);
    // And it all survives a reopen, with the cleaner checkpoint.
    drop(partition);
    log.close().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    assert_eq!(consume(&log), after);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0);
}

/// Appends `filler` records until the active segment rolls, so that what came before can be
/// cleaned.
fn roll_over(partition: &Partition) {
    let segments = partition.segment_count();
    while partition.segment_count() == segments {
        put(partition, "filler", Some("x"));
    }
}

#[test]
fn tombstones_go_after_delete_retention_ms() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let partition = topic(&log, compacted().delete_retention_ms(HOUR));
    let mut expected = fill(&partition, 60, 6);
    put(&partition, "k3", None);
    expected.insert("k3".into(), None);
    // Roll the tombstone out of the active segment.
    roll_over(&partition);
    expected.insert("filler".into(), Some("x".into()));
    log.maintain().unwrap();
    let records = consume(&log);
    assert_eq!(latest(&records), expected);
    assert_eq!(
        records.iter().filter(|r| r.1 == "k3").count(),
        1,
        "the tombstone alone"
    );
    clock.advance(HOUR - 1);
    roll_over(&partition);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1);
    assert!(consume(&log).iter().any(|r| r.1 == "k3"));
    clock.advance(1);
    roll_over(&partition);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1);
    let records = consume(&log);
    assert!(records.iter().all(|r| r.1 != "k3"), "{records:?}");
    expected.remove("k3");
    assert_eq!(latest(&records), expected);
}

#[test]
fn min_compaction_lag_holds_records_back() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let partition = topic(&log, compacted().min_compaction_lag_ms(HOUR));
    fill(&partition, 100, 5);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0);
    clock.advance(HOUR + 1);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1);
}

/// Records without a timestamp are held back from their segment's last write (Kafka's
/// `largestTimestamp` falls back to the file's modification time), not cleaned at once.
#[test]
fn min_compaction_lag_holds_records_without_timestamps_back_from_their_last_write() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let partition = topic(&log, compacted().min_compaction_lag_ms(HOUR));
    for i in 0..100 {
        let mut builder = BatchBuilder::new();
        let (key, value) = (format!("k{}", i % 5), i.to_string());
        builder.push(-1, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
        partition.append(builder.finish().unwrap()).unwrap();
    }
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0);
    clock.advance(HOUR + 1);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1);
}

/// Kafka's `min.cleanable.dirty.ratio` (`LogCleanerManager`): a log is cleaned once its
/// dirty bytes are more than that share of its cleanable bytes, and not before.
#[test]
fn a_log_is_cleaned_once_its_dirty_share_passes_the_ratio() {
    let root = tempfile::tempdir().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let partition = topic(&log, compacted().min_cleanable_dirty_ratio(0.5));
    // Distinct keys: a cleaning keeps every record, so the clean part stays as large.
    fill(&partition, 100, 100);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1, "all dirty");
    // A quarter as much again: about a fifth of the log is dirty.
    fill(&partition, 25, 100);
    assert_eq!(
        log.maintain().unwrap().partitions_cleaned,
        0,
        "a fifth dirty"
    );
    // Twice as much as is clean: about two thirds dirty.
    fill(&partition, 200, 100);
    assert_eq!(
        log.maintain().unwrap().partitions_cleaned,
        1,
        "two thirds dirty"
    );
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0, "clean again");
}

/// A log with a compacted topic cleaned by `max_compaction_lag_ms` (an hour) rather than
/// by its dirty share, holding 100 records of 50 keys, none cleaned yet.
fn lagging_compaction(root: &Path, clock: &ManualClock) -> (Log, Partition) {
    let log = open(root, clock);
    let config = compacted()
        .min_cleanable_dirty_ratio(0.99)
        .max_compaction_lag_ms(HOUR);
    let partition = topic(&log, config);
    fill(&partition, 100, 50);
    (log, partition)
}

/// Kafka's `maxCompactionDelay`: the earliest first-batch timestamp among all the dirty
/// segments counts, not only the oldest segment's (here stamped in the future).
#[test]
fn max_compaction_lag_counts_every_dirty_segments_first_batch() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let (log, partition) = lagging_compaction(root.path(), &clock);
    // Records stamped in the future until the log rolls: the new active segment starts
    // with one of them.
    let mut i = 0;
    let mut fill_until_roll = |timestamp: i64| {
        let segments = partition.segment_count();
        while partition.segment_count() == segments {
            let mut builder = BatchBuilder::new();
            let (key, value) = (format!("k{}", i % 50), i.to_string());
            builder.push(timestamp, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
            partition.append(builder.finish().unwrap()).unwrap();
            i += 1;
        }
    };
    fill_until_roll(NOW + 10 * HOUR);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1, "all dirty");
    // The dirty segments: two that start in the future (each roll's last record starts
    // the next segment), then one that starts now.
    fill_until_roll(NOW + 10 * HOUR);
    fill_until_roll(NOW);
    fill_until_roll(NOW);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0, "ratio low");
    clock.set(NOW + HOUR + 1);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1, "lag passed");
}

#[test]
fn max_compaction_lag_forces_a_cleaning() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let (log, partition) = lagging_compaction(root.path(), &clock);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1, "all dirty");
    fill(&partition, 20, 50);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0, "ratio low");
    clock.set(NOW + HOUR + 1);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 1, "lag passed");
    // The active segment rolls once its first record is older than the lag (Kafka's
    // `maxSegmentMs`), so a quiet partition is cleaned in time too.
    let segments = partition.segment_count();
    let mut batch = BatchBuilder::new();
    batch.push(NOW + 3 * HOUR, Some(b"late"), Some(b"v"), &[]);
    partition.append(batch.finish().unwrap()).unwrap();
    assert_eq!(partition.segment_count(), segments + 1);
}

#[test]
fn compacted_topics_refuse_records_without_a_key() {
    let root = tempfile::tempdir().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let partition = topic(&log, TopicConfig::default());
    partition.append_values([&b"no key"[..]]).unwrap();
    let mut config = log.topic("t").unwrap().config();
    config.cleanup_policy = CleanupPolicy::Compact;
    log.alter_topic_config("t", config).unwrap();
    let err = partition.append_values([&b"no key"[..]]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRecord { reason } if reason.contains("key")),
        "{err}"
    );
    assert_eq!(partition.log_end_offset(), 1, "nothing written");
    put(&partition, "k", Some("v"));
    assert_eq!(partition.log_end_offset(), 2);
}

/// `LogCleanerTest.testCleaningWithUnkeyedMessages`: records without a key (written while
/// the topic was deleted by retention, before it was switched to compaction) are dropped
/// by the cleaner; the keyed ones keep their offsets.
#[test]
fn a_cleaning_drops_records_without_a_key() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let partition = topic(&log, compacted().cleanup_policy(CleanupPolicy::Delete));
    for i in 0..4 {
        put(&partition, &format!("k{i}"), Some("v"));
        partition.append_values(["no key"]).unwrap();
    }
    log.alter_topic_config("t", compacted()).unwrap();
    roll_over(&partition);
    log.maintain().unwrap();
    let keyed: Vec<(u64, String)> = consume(&log)
        .into_iter()
        .filter(|(_, key, _)| key != "filler")
        .map(|(offset, key, _)| (offset, key))
        .collect();
    let expected: Vec<(u64, String)> = (0..4).map(|i| (2 * i, format!("k{i}"))).collect();
    assert_eq!(keyed, expected);
}

#[test]
fn policies_and_retention() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    // Compact only: old segments stay, whatever `retention_ms`; `delete_records` refused.
    let partition = topic(&log, compacted().retention_ms(1000));
    fill(&partition, 100, 100);
    clock.advance(HOUR);
    let report = log.maintain().unwrap();
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(partition.log_start_offset(), 0);
    let err = partition.delete_records(10).unwrap_err();
    assert!(matches!(err, Error::PolicyViolation { .. }), "{err}");
    // Compact and delete: retention applies too.
    let mut config = log.topic("t").unwrap().config();
    config.cleanup_policy = CleanupPolicy::CompactDelete;
    log.alter_topic_config("t", config).unwrap();
    let report = log.maintain().unwrap();
    assert!(report.segments_deleted > 0);
    assert!(partition.log_start_offset() > 0);
    assert_eq!(partition.delete_records(100).unwrap(), 100);
}

#[test]
fn records_held_across_a_cleaning_stay_valid() {
    let root = tempfile::tempdir().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let partition = topic(&log, compacted());
    fill(&partition, 100, 3);
    let read = partition.read(0, 1 << 20).unwrap();
    let held: Vec<Vec<u8>> = read
        .batches()
        .map(|b| b.unwrap().records().next().unwrap().unwrap())
        .map(|r| r.value.unwrap().to_vec())
        .collect();
    let report = log.maintain().unwrap();
    assert_eq!(report.partitions_cleaned, 1);
    let again: Vec<Vec<u8>> = read
        .batches()
        .map(|b| b.unwrap().records().next().unwrap().unwrap())
        .map(|r| r.value.unwrap().to_vec())
        .collect();
    assert_eq!(held, again);
    assert_eq!(held[0], b"0");
}

#[test]
fn replicas_are_cleaned_alike() {
    let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<_> = roots.iter().map(|r| r.path().to_path_buf()).collect();
    let clock = ManualClock::new(NOW);
    let log = Log::builder()
        .dirs(&dirs)
        .clock(Arc::new(clock.clone()))
        .background_maintenance(false)
        .open()
        .unwrap();
    let partition = topic(&log, compacted().replication_factor(3));
    let mut expected = fill(&partition, 150, 7);
    put(&partition, "k2", None);
    expected.insert("k2".into(), None);
    fill(&partition, 30, 1);
    expected.insert("k0".into(), Some("29".into()));
    let report = log.maintain().unwrap();
    assert_eq!(report.partitions_cleaned, 1);
    assert_eq!(latest(&consume(&log)), expected);
    log.close().unwrap();
    let logs: Vec<_> = dirs
        .iter()
        .map(|d| {
            common::files(&d.join("t-0"))
                .into_iter()
                .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
                .map(|(p, bytes)| (p.file_name().unwrap().to_owned(), bytes))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(logs[0].len() > 1);
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
}

#[test]
fn consumer_offsets_is_compacted() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let open = || {
        builder(root.path(), &clock)
            .offsets_topic_partitions(1)
            .offsets_topic_segment_bytes(2048)
            .open()
            .unwrap()
    };
    let log = open();
    let partition = topic(&log, TopicConfig::default());
    fill(&partition, 300, 1);
    let tp = TopicPartition::new("t", 0);
    let mut consumer = log
        .consumer(ConsumerConfig::default().group_id("g"))
        .unwrap();
    consumer.assign([tp.clone()]).unwrap();
    for offset in 0..300 {
        consumer
            .commit_sync_offsets([(tp.clone(), OffsetAndMetadata::new(offset))])
            .unwrap();
    }
    let offsets = log
        .topic(tarnlog::CONSUMER_OFFSETS)
        .unwrap()
        .partition(0)
        .unwrap();
    let size = |p: &Partition| p.read(0, 1 << 30).unwrap().batches().count();
    let before = size(&offsets);
    let report = log.maintain().unwrap();
    assert_eq!(report.partitions_cleaned, 1);
    assert!(
        report.cleaned_records_removed > 200,
        "{} records removed",
        report.cleaned_records_removed
    );
    assert!(size(&offsets) <= before);
    drop((consumer, offsets));
    log.close().unwrap();
    let log = open();
    let consumer = log
        .consumer(ConsumerConfig::default().group_id("g"))
        .unwrap();
    assert_eq!(consumer.committed(&tp).unwrap().unwrap().offset, 299);
}

/// A consumer does not stall on a read that holds only emptied batches: `poll` goes on
/// to the records after them at once.
#[test]
fn poll_passes_emptied_segments_without_waiting() {
    let root = tempfile::tempdir().unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let partition = topic(&log, compacted());
    for i in 0..100 {
        put(&partition, "a", Some(&i.to_string()));
    }
    put(&partition, "b", Some("x"));
    roll_over(&partition);
    log.maintain().unwrap();
    let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config).unwrap();
    consumer.assign([TopicPartition::new("t", 0)]).unwrap();
    let started = std::time::Instant::now();
    let records = consumer.poll(Duration::from_secs(20)).unwrap();
    assert!(!records.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Topics deleted while the cleaner thread cleans them: the cleaning stops, and no
/// directory goes offline.
#[test]
fn deleting_topics_under_the_cleaner() {
    let roots: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<_> = roots.iter().map(|r| r.path().to_path_buf()).collect();
    let log = Log::builder()
        .dirs(&dirs)
        .cleaner_backoff_ms(1)
        .open()
        .unwrap();
    for round in 0..15 {
        let partition = log
            .create_topic("t", compacted().segment_bytes(2000).replication_factor(2))
            .unwrap()
            .partition(0)
            .unwrap();
        fill(&partition, 300 + round * 20, 7);
        std::thread::sleep(Duration::from_millis(round as u64 % 4));
        log.delete_topic("t").unwrap();
        assert!(log.dir_status().iter().all(|d| d.online), "round {round}");
    }
    log.close().unwrap();
}

/// A copy of `from` (a closed log directory) at `to`.
fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in common::files(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
}

/// The segment files of partition `t-0` under `root`, by name.
fn segment_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    common::files(&root.join("t-0"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
        .map(|(p, b)| (p.file_name().unwrap().to_string_lossy().into_owned(), b))
        .collect()
}

/// A kill after the swap was committed (the cleaned log renamed to `.swap`) and at each
/// later step: the open finishes the swap, and the log reads as the cleaned one.
#[test]
fn an_interrupted_swap_is_finished_at_open() {
    let base = tempfile::tempdir().unwrap();
    {
        let log = open(base.path(), &ManualClock::new(NOW));
        // An index entry per batch: a stale index left next to the cleaned log would show.
        let partition = topic(&log, compacted().segment_bytes(300).index_interval_bytes(0));
        fill(&partition, 40, 4);
        // Small sealed segments, which the cleaning merges into one at the new size.
        let mut config = log.topic("t").unwrap().config();
        config.segment_bytes = 1 << 20;
        log.alter_topic_config("t", config).unwrap();
        log.close().unwrap();
    }
    let uncleaned = segment_files(base.path());
    let cleaned_root = tempfile::tempdir().unwrap();
    copy_dir(base.path(), cleaned_root.path());
    let log = open(cleaned_root.path(), &ManualClock::new(NOW));
    log.maintain().unwrap();
    let expected = consume(&log);
    log.close().unwrap();
    let cleaned = segment_files(cleaned_root.path());
    let (first, cleaned_first) = cleaned.iter().next().unwrap();
    let replaced: Vec<&String> = uncleaned
        .keys()
        .filter(|n| !cleaned.contains_key(*n))
        .collect();
    assert!(!replaced.is_empty(), "the cleaning merged segments");
    // Steps of the swap a kill can stop at: which old files were already renamed away.
    for renamed in 0..=replaced.len() + 1 {
        let root = tempfile::tempdir().unwrap();
        copy_dir(base.path(), root.path());
        let dir = root.path().join("t-0");
        std::fs::write(dir.join(format!("{first}.swap")), cleaned_first).unwrap();
        // The committed swap's indexes, renamed to `.swap` before its log.
        let stem = first.trim_end_matches(".log");
        for ext in ["index", "timeindex"] {
            let cleaned_index = cleaned_root
                .path()
                .join("t-0")
                .join(format!("{stem}.{ext}"));
            let swap = dir.join(format!("{stem}.{ext}.swap"));
            std::fs::copy(cleaned_index, swap).unwrap();
        }
        std::fs::write(dir.join(format!("{first}.cleaned")), b"junk").unwrap();
        let mut old: Vec<&String> = vec![first];
        old.extend(replaced.iter().copied());
        for name in old.iter().take(renamed) {
            std::fs::rename(dir.join(name), dir.join(format!("{name}.deleted"))).unwrap();
        }
        let log = open(root.path(), &ManualClock::new(NOW));
        assert_eq!(consume(&log), expected, "{renamed} renamed");
        log.close().unwrap();
        assert_eq!(segment_files(root.path()), cleaned, "{renamed} renamed");
    }
    // A swap file cut short while the segment it names is still there is no committed
    // swap: it goes, and the old segments stay.
    let root = tempfile::tempdir().unwrap();
    copy_dir(base.path(), root.path());
    let dir = root.path().join("t-0");
    std::fs::write(dir.join(format!("{first}.swap")), &cleaned_first[..100]).unwrap();
    open(root.path(), &ManualClock::new(NOW)).close().unwrap();
    assert_eq!(segment_files(root.path()), uncleaned);
    // Without that segment it is damage, reported rather than guessed at.
    std::fs::write(dir.join(format!("{first}.swap")), &cleaned_first[..100]).unwrap();
    std::fs::rename(dir.join(first), dir.join(format!("{first}.deleted"))).unwrap();
    let err = builder(root.path(), &ManualClock::new(NOW))
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    // Before the commit (only `.cleaned` files): the old segments stay.
    let root = tempfile::tempdir().unwrap();
    copy_dir(base.path(), root.path());
    let dir = root.path().join("t-0");
    std::fs::write(dir.join(format!("{first}.cleaned")), cleaned_first).unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    log.close().unwrap();
    assert_eq!(segment_files(root.path()), uncleaned);
}

/// A fault at each mutating call of a cleaning (`EIO`, and `ENOSPC` for a full disk): the
/// pass reports it, and the log — as it is then, and reopened — holds every key's latest
/// value, with the offsets it was written at.
#[test]
fn countdown_of_faults_during_a_cleaning() {
    let base = tempfile::tempdir().unwrap();
    let (expected, written) = {
        let log = open(base.path(), &ManualClock::new(NOW));
        let partition = topic(&log, compacted().segment_bytes(600));
        let mut expected = fill(&partition, 150, 6);
        put(&partition, "k1", None);
        expected.insert("k1".into(), None);
        // Cleaned in two groups: every step of two swaps.
        let mut config = log.topic("t").unwrap().config();
        config.segment_bytes = 6000;
        log.alter_topic_config("t", config).unwrap();
        let written = consume(&log);
        log.close().unwrap();
        (expected, written)
    };
    for kind in [FaultKind::Eio, FaultKind::NoSpace] {
        let mut step = 0;
        loop {
            let root = common::scratch("countdown");
            copy_dir(base.path(), root.path());
            let fault = FaultStorage::new(OsStorage::shared());
            let log = builder(root.path(), &ManualClock::new(NOW))
                .storage(fault.shared())
                .open()
                .unwrap();
            let at = fault.ops() + 1 + step;
            fault.fail_at(at, kind, false);
            let report = log.maintain();
            let injected = fault.injected() > 0;
            if injected {
                let failed = report.as_ref().map_or(true, |r| !r.failures.is_empty());
                assert!(
                    failed,
                    "step {step}: the fault is reported: {:?}",
                    fault.op_log().iter().find(|(n, _)| *n == at)
                );
                // A directory that went offline (a failed sync) reads nothing until reopened.
                if let Ok(records) = try_consume(&log) {
                    assert_eq!(latest(&records), expected, "step {step}, live");
                }
            }
            fault.heal();
            drop(log);
            let log = open(root.path(), &ManualClock::new(NOW));
            let records = consume(&log);
            assert_eq!(latest(&records), expected, "{kind:?} step {step}, reopened");
            assert!(records.iter().all(|r| written.contains(r)), "step {step}");
            let partition = log.topic("t").unwrap().partition(0).unwrap();
            let range = (partition.log_start_offset(), partition.log_end_offset());
            assert_eq!(range, (0, 151), "{kind:?} step {step}");
            log.close().unwrap();
            if !injected {
                break;
            }
            step += 1;
        }
        assert!(step > 10, "{kind:?}: only {step} steps");
    }
}

/// A batch damaged on disk is reported, not cleaned into a valid one: the segment stays.
#[test]
fn damaged_batches_are_not_cleaned() {
    let root = tempfile::tempdir().unwrap();
    {
        let log = open(root.path(), &ManualClock::new(NOW));
        let partition = topic(&log, compacted());
        fill(&partition, 100, 3);
        log.close().unwrap();
    }
    let first = root.path().join("t-0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&first, &bytes).unwrap();
    let log = open(root.path(), &ManualClock::new(NOW));
    let report = log.maintain().unwrap();
    assert_eq!(report.partitions_cleaned, 0);
    let (_, error) = &report.failures[0];
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
    log.close().unwrap();
    assert_eq!(std::fs::read(&first).unwrap(), bytes, "left as it was");
}
