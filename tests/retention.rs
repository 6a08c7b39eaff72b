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

use common::log_files as segment_files;

/// A log on a manual clock with topic `t`: five single-record batches per segment,
/// fifteen records (three segments).
fn fifteen_in_threes_of_five() -> (tempfile::TempDir, ManualClock, Log, Partition) {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let log = open(root.path(), &clock);
    let config = TopicConfig::default().segment_bytes(5 * batch_size(b"test"));
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..15 {
        append(&partition, NOW, b"test");
    }
    (root, clock, log, partition)
}

/// `testLogDeletionAfterDeleteRecords`: 15 records in segments of five; moving the log
/// start deletes exactly the segments wholly below it, never the active one.
#[test]
fn log_deletion_after_delete_records() {
    let (_root, _clock, log, partition) = fifteen_in_threes_of_five();
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

/// A fresh log with topic `t` (time retention off) holding ten records at `NOW`.
fn ten_records_kept_forever() -> (tempfile::TempDir, ManualClock, Log, Partition) {
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
    (root, clock, log, partition)
}

/// The moved log start survives a clean reopen and a crash.
#[test]
fn the_log_start_persists() {
    for crash in [false, true] {
        let (root, clock, log, partition) = ten_records_kept_forever();
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

/// `delete_records` rewrites only the log-start checkpoint: the recovery-point and
/// high-watermark files, unchanged, keep their inodes (an atomic replace makes a new one),
/// and after a crash the log start and the data are as acknowledged.
#[test]
fn delete_records_rewrites_only_the_log_start_checkpoint() {
    use std::os::unix::fs::MetadataExt;
    let (root, clock, log, partition) = ten_records_kept_forever();
    partition.flush().unwrap();
    partition.delete_records(2).unwrap();
    let inode = |name: &str| std::fs::metadata(root.path().join(name)).unwrap().ino();
    let names = [
        "recovery-point-offset-checkpoint",
        "replication-offset-checkpoint",
        "log-start-offset-checkpoint",
    ];
    let before = names.map(inode);
    partition.delete_records(6).unwrap();
    let after = names.map(inode);
    assert_eq!(
        before[..2],
        after[..2],
        "an unchanged checkpoint was rewritten"
    );
    assert_ne!(before[2], after[2], "the log start was not checkpointed");
    drop(partition);
    log.simulate_crash();
    let log = open(root.path(), &clock);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_start_offset(), 6);
    assert_eq!(partition.log_end_offset(), 10);
    assert!(log.recovery_report().truncations().next().is_none());
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
    let size = 15 * batch_size(b"test");
    let described = log.describe_topic("t").unwrap();
    assert_eq!(described.size_bytes(), size);
    assert_eq!(
        described.partitions[0].replica_size_bytes,
        [Some(size), Some(size)]
    );
    let report = log.maintain().unwrap();
    assert_eq!(report.segments_deleted, 4, "two segments on each replica");
    assert_eq!(report.bytes_deleted, 2 * 10 * batch_size(b"test"));
    assert_eq!((count(&dirs[0]), count(&dirs[1])), (1, 1));
    let size = 5 * batch_size(b"test");
    assert_eq!(log.describe_topic("t").unwrap().size_bytes(), size);
    let status = log.dir_status();
    assert_eq!((status[0].size_bytes, status[1].size_bytes), (size, size));
    assert_eq!(partition.log_start_offset(), 10);
    for _ in 0..5 {
        append(&partition, NOW, b"test");
    }
    let description = log.describe_topic("t").unwrap();
    assert_eq!(description.under_replicated().count(), 0);
}

/// Bytes of the `.log` files in `dir` (a file retention removes meanwhile counts 0).
fn log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// A log in a new directory whose background thread runs retention every millisecond.
fn busy_maintenance_log() -> (tempfile::TempDir, Log) {
    let root = tempfile::tempdir().unwrap();
    let log = common::busy_maintenance_log(root.path());
    (root, log)
}

/// A steady stream under `retention_bytes` keeps the partition's files bounded: after
/// every pass at most the four segments the limit keeps plus the active one (preallocated
/// to a whole segment) remain. Passes run from `maintain`, then from the background thread.
#[test]
fn steady_stream_stays_within_retention_bytes() {
    let (_root, log) = busy_maintenance_log();
    let segment = 64 * 1024;
    let bound = 5 * segment;
    let config = TopicConfig::default()
        .segment_bytes(segment)
        .retention_bytes(4 * segment as i64);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let value = [9u8; 1000];
    for round in 0..2000 {
        partition.append_values([&value[..]]).unwrap();
        if round % 100 == 99 {
            log.maintain().unwrap();
            let bytes = log_bytes(&partition.path());
            assert!(bytes <= bound, "log files at {bytes} bytes after a pass");
        }
    }
    for _ in 0..300 {
        partition.append_values([&value[..]]).unwrap();
    }
    let mut waited = 0;
    while log_bytes(&partition.path()) > bound {
        assert!(
            waited < 2000,
            "the background thread never got the files down"
        );
        std::thread::sleep(Duration::from_millis(5));
        waited += 1;
    }
    assert!(partition.log_start_offset() > 1000);
}

/// A three-record batch of `first`, `first + 1`, `first + 2`.
fn triple(partition: &Partition, first: u8) {
    let mut builder = BatchBuilder::new();
    for i in 0..3 {
        builder.push(NOW, None, Some(&[first + i]), &[]);
    }
    partition.append(builder.finish().unwrap()).unwrap();
}

/// Topic `t` in `log` (over `dirs`, replication factor 2) with batches 0..=2, 3..=5 and
/// 6..=8, the last two written while the follower's directory was failed, then the log
/// start moved to 7, inside the last batch: partition 0 and its leader's directory index
/// (the follower's directory still failed).
fn start_inside_a_batch_the_follower_missed(
    log: &Log,
    fault: &tarnlog::storage::FaultStorage,
    dirs: &[std::path::PathBuf],
) -> (Partition, usize) {
    let config = TopicConfig::default().replication_factor(2);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    triple(&partition, 0);
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    fault.fail_dir(&dirs[1 - leader], tarnlog::storage::FaultKind::Eio);
    triple(&partition, 3);
    triple(&partition, 6);
    assert_eq!(
        partition.delete_records(7).unwrap(),
        7,
        "inside the batch 6..=8"
    );
    (partition, leader)
}

/// A follower back after the leader moved its log start inside a batch, beyond everything
/// the follower holds: it starts afresh at that batch (Kafka's follower on
/// `UnexpectedAppendOffset`), takes the leader's log start, and rejoins the ISR; the
/// records below the start are not readable from it after it leads.
#[test]
fn follower_behind_the_log_start_restarts_at_the_batch() {
    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let (log, fault) = common::faulty_log(&dirs);
    let (partition, leader) = start_inside_a_batch_the_follower_missed(&log, &fault, &dirs);
    let follower = 1 - leader;

    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(
        described.isr.len(),
        2,
        "the follower caught up: {described:?}"
    );
    triple(&partition, 9);

    // Now the follower leads: its log starts at 7 as the leader's did.
    fault.fail_dir(&dirs[leader], tarnlog::storage::FaultKind::Eio);
    triple(&partition, 12);
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(follower));
    assert_eq!(partition.log_start_offset(), 7);
    assert!(matches!(
        partition.read(6, 1 << 20),
        Err(Error::OffsetOutOfRange { earliest: 7, .. })
    ));
    let mut seen = Vec::new();
    let mut next = 7;
    while next < partition.high_watermark() {
        for batch in partition.read(next, 1 << 20).unwrap().batches() {
            let batch = batch.unwrap();
            for record in batch.records() {
                let record = record.unwrap();
                let offset = u64::try_from(record.offset).unwrap();
                if offset >= 7 {
                    seen.push(record.value.unwrap()[0]);
                }
            }
            next = u64::try_from(batch.last_offset()).unwrap() + 1;
        }
    }
    assert_eq!(seen, (7..15).collect::<Vec<u8>>());
}

/// Deleting a topic while maintenance passes run never breaks the log, and a topic made
/// again under the name keeps its data.
#[test]
fn delete_topic_during_retention() {
    let (_root, log) = busy_maintenance_log();
    let config = TopicConfig::default()
        .segment_bytes(4 * batch_size(&[0u8; 100]))
        .retention_bytes(8 * batch_size(&[0u8; 100]) as i64);
    for round in 0..30 {
        let partition = log
            .create_topic("t", config.clone())
            .unwrap()
            .partition(0)
            .unwrap();
        for _ in 0..40 {
            partition.append_values([&[round as u8; 100][..]]).unwrap();
        }
        log.delete_topic("t").unwrap();
    }
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values([&b"kept"[..]]).unwrap();
    log.maintain().unwrap();
    assert_eq!(partition.log_end_offset(), 1);
    assert_eq!(partition.log_start_offset(), 0);
    assert!(log.dir_status().iter().all(|d| d.online));
    let read = partition.read(0, 1 << 20).unwrap();
    assert_eq!(read.batches().count(), 1);
}

/// A log in `root` over `fault`, with no background maintenance.
fn open_faulty(root: &std::path::Path, fault: &tarnlog::storage::FaultStorage) -> Log {
    Log::builder()
        .dir(root)
        .storage(fault.shared())
        .background_maintenance(false)
        .open()
        .unwrap()
}

/// Topic "t" in `log` with fifteen records in segments of five, kept forever by time.
fn fifteen_in_segments_of_five(log: Log) -> (Log, Partition) {
    let config = TopicConfig::default()
        .segment_bytes(5 * batch_size(b"test"))
        .retention_ms(-1);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..15 {
        append(&partition, NOW, b"test");
    }
    (log, partition)
}

/// A file that cannot be unlinked is reported and retried by the next pass; the log start
/// was checkpointed first, so a crash before the retry loses nothing and resurrects
/// nothing. Each run fails one storage call of `delete_records` until the failing one is an
/// unlink.
#[test]
fn failed_unlink_is_reported_and_retried() {
    use tarnlog::storage::{FaultKind, FaultStorage, OpKind, OsStorage};
    for skip in 0..64 {
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        let open = || open_faulty(root.path(), &fault);
        let (log, partition) = fifteen_in_segments_of_five(open());
        let at = fault.ops() + skip;
        fault.fail_at(at, FaultKind::Eio, false);
        let result = partition.delete_records(10);
        let failed_kind = fault
            .op_log()
            .iter()
            .find(|(n, _)| *n == at)
            .map(|(_, kind)| *kind);
        fault.heal();
        if failed_kind != Some(OpKind::Remove) {
            continue;
        }
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
        assert_eq!(partition.log_start_offset(), 10);
        assert!(segment_files(&partition.path()) > 1, "a file was left");
        let report = log.maintain().unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(segment_files(&partition.path()), 1, "retried and removed");
        assert!(log.dir_status().iter().all(|d| d.online));
        drop(partition);
        log.simulate_crash();
        let log = open();
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(partition.log_start_offset(), 10);
        assert_eq!(partition.log_end_offset(), 15);
        return;
    }
    panic!("no storage call of delete_records was an unlink");
}

/// The files of `dir` that `keep` selects, with their contents (to put back later, as a
/// power loss that lost their unlinks would).
fn saved_files(
    dir: &std::path::Path,
    keep: impl Fn(&std::path::Path) -> bool,
) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| keep(p))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// A crash after the log start was checkpointed but before the files were unlinked:
/// the open keeps the checkpointed start and removes the leftovers wholly below it (as
/// their deletion meant; see
/// `a_leftover_segment_below_the_log_start_with_a_gap_after_it_loses_nothing`).
#[test]
fn crash_between_checkpoint_and_unlink() {
    let (root, clock, log, partition) = fifteen_in_threes_of_five();
    let dir = partition.path();
    let saved = saved_files(&dir, |p| {
        p.extension()
            .is_some_and(|x| x == "log" || x == "index" || x == "timeindex")
    });
    partition.delete_records(10).unwrap();
    drop(partition);
    log.simulate_crash();
    // The unlinks never reached the disk.
    for (path, bytes) in &saved {
        if !path.exists() {
            std::fs::write(path, bytes).unwrap();
        }
    }
    assert_eq!(segment_files(&dir), 3);
    let log = open(root.path(), &clock);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_start_offset(), 10);
    assert!(partition.read(5, 1 << 20).is_err(), "nothing resurrected");
    assert_eq!(segment_files(&dir), 1);
    let removed = log
        .recovery_report()
        .partitions
        .iter()
        .map(|p| p.removed_files.len())
        .sum::<usize>();
    assert_eq!(removed, 2, "reported");
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    assert_eq!(partition.log_end_offset(), 15);
}

/// A fault (EIO, once) at each counted storage call of `delete_records` (checkpoint write,
/// sync, rename, unlinks): whatever the call returns, a reopen after a crash finds the log
/// start either where it was or where it was asked to be, the same log end, and every
/// record from the log start on readable.
#[test]
fn a_fault_at_any_call_of_delete_records_leaves_a_consistent_log() {
    use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
    let run = |fail_at: Option<u64>| {
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        let open = || open_faulty(root.path(), &fault);
        let (log, partition) = fifteen_in_segments_of_five(open());
        let before = fault.ops();
        if let Some(k) = fail_at {
            fault.fail_at(before + k, FaultKind::Eio, false);
        }
        let result = partition.delete_records(10);
        let calls = fault.ops() - before;
        fault.heal();
        drop(partition);
        log.simulate_crash();
        let log = Log::open(root.path()).unwrap();
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        let start = partition.log_start_offset();
        assert!(
            start == 0 || start == 10,
            "fault at {fail_at:?}: log start {start}"
        );
        if fail_at.is_none() {
            assert_eq!((result.unwrap(), start), (10, 10));
        }
        assert_eq!(partition.log_end_offset(), 15, "fault at {fail_at:?}");
        let mut offset = start;
        while offset < 15 {
            let read = partition.read(offset, 1 << 20).unwrap();
            let batch = read.batches().next().unwrap().unwrap();
            offset = batch.next_offset() as u64;
        }
        calls
    };
    let calls = run(None);
    assert!(calls >= 3, "delete_records made {calls} counted calls");
    println!("delete_records: {calls} counted calls, each failed once");
    for k in 1..=calls {
        run(Some(k));
    }
}

/// After a power loss a directory may keep a later unlink of `delete_records` and lose an
/// earlier one: a segment wholly below the checkpointed log start stays while the one
/// after it is gone. The open removes it (it is below the log start) instead of scanning
/// from it, finding a gap and cutting the log there (which lost every record from the log
/// start on).
#[test]
fn a_leftover_segment_below_the_log_start_with_a_gap_after_it_loses_nothing() {
    let (root, clock, log, partition) = fifteen_in_threes_of_five();
    let dir = partition.path();
    let first = saved_files(&dir, |p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{:020}.", 0))
    });
    assert!(!first.is_empty());
    // Segments [0, 5) and [5, 10) go; [10, 15) is the active one.
    assert_eq!(partition.delete_records(10).unwrap(), 10);
    drop(partition);
    log.simulate_crash();
    // The first segment's unlink did not reach the disk; the second's did.
    for (path, bytes) in &first {
        std::fs::write(path, bytes).unwrap();
    }
    assert_eq!(segment_files(&dir), 2);
    let log = open(root.path(), &clock);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_start_offset(), 10);
    assert_eq!(partition.log_end_offset(), 15);
    let read = partition.read(10, 1 << 20).unwrap();
    assert_eq!(read.records().count(), 5);
    drop(partition);
    log.close().unwrap();
}

/// Kafka's `largestTimestamp` falls back on a segment's last modification: one whose
/// records carry no timestamp (-1) expires `retention_ms` after its last write (by the
/// clock at the append while running, by the file's modification time after a reopen)
/// instead of being kept forever and holding back every later segment.
#[test]
fn segments_without_timestamps_expire_from_their_last_write() {
    use tarnlog::Clock;
    const RETENTION: i64 = 60_000;
    let root = tempfile::tempdir().unwrap();
    let start = tarnlog::SystemClock.now_ms();
    let clock = ManualClock::new(start);
    let log = open(root.path(), &clock);
    let config = TopicConfig::default()
        .segment_bytes(5 * batch_size(b"test"))
        .retention_ms(RETENTION);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for timestamp in [-1, start] {
        for _ in 0..5 {
            append(&partition, timestamp, b"test");
        }
    }
    clock.advance(RETENTION / 2);
    for _ in 0..5 {
        append(&partition, -1, b"test");
    }
    assert_eq!(partition.segment_base_offsets(), [0, 5, 10]);
    clock.set(start + RETENTION);
    assert_eq!(log.maintain().unwrap().segments_deleted, 0, "not yet due");
    // Segment 0 by its last append, and segment 5 (by its timestamps) after it.
    clock.set(start + RETENTION + 1);
    assert_eq!(log.maintain().unwrap().segments_deleted, 2);
    assert_eq!(partition.segment_base_offsets(), [10]);
    assert_eq!(partition.log_start_offset(), 10);
    log.close().unwrap();

    // After a reopen the last write is the file's modification time (real time here).
    let reopened_at = tarnlog::SystemClock.now_ms();
    let clock = ManualClock::new(reopened_at + RETENTION / 2);
    let log = open(root.path(), &clock);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(log.maintain().unwrap().segments_deleted, 0, "not yet due");
    clock.set(reopened_at + 2 * RETENTION);
    assert_eq!(
        log.maintain().unwrap().segments_deleted,
        1,
        "the active one, by its file"
    );
    assert_eq!(partition.log_start_offset(), 15);
    assert_eq!(partition.log_end_offset(), 15);
}

/// A truncation inside the batch that holds a log start `delete_records` left mid-batch
/// cuts the whole batch, the start with it: the log restarts empty at its start (Kafka's
/// `truncateFullyAndStartAt`), so the start never passes the end, and the records
/// appended next are readable from it, after a reopen too. The same when the truncation
/// offset lies below the start.
#[test]
fn a_truncation_inside_the_batch_holding_the_log_start_restarts_the_log_at_it() {
    for (start, offset) in [(1, 2), (2, 1)] {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let log = open(root.path(), &clock);
        let partition = log
            .create_topic("t", TopicConfig::default())
            .unwrap()
            .partition(0)
            .unwrap();
        triple(&partition, 0);
        partition.delete_records(start).unwrap();
        partition.truncate_to(offset).unwrap();
        let at = start.min(offset);
        assert_eq!(
            (partition.log_start_offset(), partition.log_end_offset()),
            (at, at),
            "start {start}, truncated to {offset}"
        );
        triple(&partition, 10);
        let values = |partition: &Partition| -> Vec<(u64, u8)> {
            partition
                .read(partition.log_start_offset(), 1 << 20)
                .unwrap()
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    (r.offset as u64, r.value.unwrap()[0])
                })
                .collect()
        };
        let expected = vec![(at, 10), (at + 1, 11), (at + 2, 12)];
        assert_eq!(values(&partition), expected);
        log.close().unwrap();
        let log = open(root.path(), &clock);
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(
            (partition.log_start_offset(), partition.log_end_offset()),
            (at, at + 3)
        );
        assert_eq!(values(&partition), expected);
        log.close().unwrap();
    }
}

/// A follower brought back by `restore_dir` restarts at the batch holding its leader's log
/// start (left inside it by `delete_records`) and takes that start. Whichever storage call
/// of the restore the disks stop at (every call from there on fails, a crash image), a
/// reopen that makes the follower the leader never shows the records below that start
/// again: `meta` never names it in sync before its log start is checkpointed.
#[test]
fn a_follower_named_in_sync_by_a_restore_has_its_log_start_checkpointed() {
    use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
    let open = |dirs: &[std::path::PathBuf], fault: &FaultStorage| {
        Log::builder()
            .dirs(dirs)
            .storage(fault.shared())
            .background_maintenance(false)
            .open()
            .unwrap()
    };
    let run = |fail_at: Option<u64>| {
        let root = tempfile::tempdir().unwrap();
        let dirs = [root.path().join("a"), root.path().join("b")];
        let fault = FaultStorage::new(OsStorage::shared());
        let log = open(&dirs, &fault);
        let (partition, leader) = start_inside_a_batch_the_follower_missed(&log, &fault, &dirs);
        let follower = 1 - leader;
        fault.heal_dir(&dirs[follower]);
        let before = fault.ops();
        if let Some(k) = fail_at {
            fault.fail_at(before + k, FaultKind::Eio, true);
        }
        let restored = log.restore_dir(&dirs[follower]);
        let calls = fault.ops() - before;
        if fail_at.is_none() {
            restored.as_ref().unwrap();
        }
        drop(partition);
        log.simulate_crash();

        let fault = FaultStorage::new(OsStorage::shared());
        fault.fail_dir(&dirs[leader], FaultKind::Eio);
        let log = open(&dirs, &fault);
        let described = log.describe_topic("t").unwrap().partitions[0].clone();
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        // (A follower that never caught up leads on its own stale `meta` when the leader's
        // is unreadable: the one picture the log has then.)
        if described.leader == Some(follower) && partition.log_end_offset() == 9 {
            assert_eq!(
                partition.log_start_offset(),
                7,
                "stopped at call {fail_at:?} of {calls}"
            );
            assert!(
                matches!(
                    partition.read(6, 1 << 20),
                    Err(Error::OffsetOutOfRange { earliest: 7, .. })
                ),
                "stopped at call {fail_at:?}"
            );
        } else {
            assert!(
                fail_at.is_some(),
                "the restored follower leads: {described:?}"
            );
        }
        drop(partition);
        log.simulate_crash();
        calls
    };
    let calls = run(None);
    assert!(calls > 3, "the restore made {calls} counted calls");
    for k in 1..=calls {
        run(Some(k));
    }
}

/// A log over directories `a` and `b` of `root` through a fault seam, on `clock`, with no
/// background maintenance.
fn two_faulty_dirs(
    root: &std::path::Path,
    clock: &ManualClock,
) -> ([std::path::PathBuf; 2], tarnlog::storage::FaultStorage, Log) {
    use tarnlog::storage::{FaultStorage, OsStorage};
    let dirs = [root.join("a"), root.join("b")];
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .clock(std::sync::Arc::new(clock.clone()))
        .background_maintenance(false)
        .open()
        .unwrap();
    (dirs, fault, log)
}

/// Only the log-start checkpoint's writes fail in `dir` (unlinks there would succeed).
fn fail_log_start_checkpoints(fault: &tarnlog::storage::FaultStorage, dir: &std::path::Path) {
    fault.fail_dir(
        dir.join("log-start-offset-checkpoint.tmp"),
        tarnlog::storage::FaultKind::Eio,
    );
}

/// Retention in a log of several directories whose log-start checkpoint cannot be written
/// in one of them (that directory then goes offline) unlinks nothing there: the files stay
/// until a checkpoint holding the new start is on that disk, so a power loss cannot leave
/// a stale start with its segments gone (a gap at the next open).
#[test]
fn retention_unlinks_nothing_where_the_log_start_checkpoint_failed() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let (dirs, fault, log) = two_faulty_dirs(root.path(), &clock);
    let config = TopicConfig::default()
        .segment_bytes(5 * batch_size(b"test"))
        .retention_ms(1_000);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..15 {
        append(&partition, NOW, b"test");
    }
    let home = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let path = partition.path();
    assert_eq!(segment_files(&path), 3);
    fail_log_start_checkpoints(&fault, &dirs[home]);
    clock.advance(10_000);
    let report = log.maintain().unwrap();
    assert!(!log.dir_status()[home].online, "the directory went offline");
    // All three expired: the roll first made a new active segment.
    assert_eq!(report.segments_deleted, 3, "{report:?}");
    assert_eq!(
        segment_files(&path),
        4,
        "unlinked before the start was checkpointed"
    );
}

/// A cut below the log start (`truncate_to`) lowers what counts as checkpointed: a later
/// deletion whose start the failed checkpoint of its directory never held unlinks nothing,
/// though that start is below the one checkpointed before the cut.
#[test]
fn a_cut_below_the_log_start_lowers_what_counts_as_checkpointed() {
    let root = tempfile::tempdir().unwrap();
    let (dirs, fault, log) = two_faulty_dirs(root.path(), &ManualClock::new(NOW));
    let batch = batch_size(b"test");
    let config = TopicConfig::default()
        .segment_bytes(2 * batch)
        .retention_ms(-1)
        .retention_bytes(4 * batch as i64);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..15 {
        append(&partition, NOW, b"test");
    }
    assert_eq!(partition.delete_records(10).unwrap(), 10);
    // Below the first segment: the log restarts at 7, its start lowered.
    partition.truncate_to(7).unwrap();
    assert_eq!(partition.log_start_offset(), 7);
    for _ in 0..6 {
        append(&partition, NOW, b"test");
    }
    let home = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let path = partition.path();
    let before = segment_files(&path);
    fail_log_start_checkpoints(&fault, &dirs[home]);
    let report = log.maintain().unwrap();
    assert!(report.segments_deleted > 0, "{report:?}");
    assert!(
        partition.log_start_offset() <= 10,
        "{}",
        partition.log_start_offset()
    );
    assert!(!log.dir_status()[home].online);
    assert_eq!(
        segment_files(&path),
        before,
        "unlinked before the start was checkpointed"
    );
}
