//! Replication when a directory fails (issue 5): leadership moves to an in-sync replica in
//! a new epoch, nothing acknowledged is lost, `min_insync_replicas` gates `acks=All` and
//! the high watermark, a partition with no in-sync replica left is offline (unless unclean
//! election is allowed), and a directory that comes back — while running or at reopen — is
//! reconciled (a divergent tail cut, KIP-101/279) and rebuilt byte for byte.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tarnlog::storage::{FaultKind, FaultStorage, OpKind, OsStorage};
use tarnlog::{Acks, Error, Log, ProducerConfig, ProducerRecord, TopicConfig};

fn dirs(root: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| root.join(format!("d{i}"))).collect()
}

fn values(log: &Log, topic: &str, p: u32) -> Vec<String> {
    let partition = log.topic(topic).unwrap().partition(p).unwrap();
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < partition.high_watermark() {
        let read = partition.read(offset, 1 << 20).unwrap();
        for record in read.records() {
            let record = record.unwrap();
            offset = record.offset as u64 + 1;
            out.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

/// The `.log` files of `topic-p` in each directory (relative name → bytes).
fn segments(dirs: &[PathBuf], topic: &str, p: u32) -> Vec<BTreeMap<String, Vec<u8>>> {
    dirs.iter()
        .map(|d| {
            std::fs::read_dir(d.join(format!("{topic}-{p}")))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "log"))
                .map(|path| {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&path).unwrap())
                })
                .collect()
        })
        .collect()
}

/// Every partition of `t` has all its replicas in sync.
fn assert_fully_replicated(log: &Log) {
    let described = log.describe_topic("t").unwrap();
    assert_eq!(described.under_replicated().count(), 0, "{described:?}");
}

fn assert_replicas_identical(dirs: &[PathBuf], topic: &str, partitions: u32) {
    for p in 0..partitions {
        let copies = segments(dirs, topic, p);
        for copy in &copies[1..] {
            assert!(copy == &copies[0], "{topic}-{p}: replicas differ");
        }
        assert!(!copies[0].is_empty());
    }
}

/// Two threads send 1,500 keyed records each; the first fails `dir` midway. Returns each
/// value with its send's outcome.
fn produce_while_failing(
    producer: &tarnlog::Producer,
    fault: &FaultStorage,
    dir: &Path,
) -> Vec<(String, tarnlog::Result<tarnlog::RecordMetadata>)> {
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|w| {
                s.spawn(move || {
                    let mut sent = Vec::new();
                    for i in 0..1500 {
                        if w == 0 && i == 700 {
                            fault.fail_dir(dir, FaultKind::Eio);
                        }
                        let value = format!("{w}-{i}");
                        let record = ProducerRecord::new("t")
                            .key(format!("k{i}"))
                            .value(value.clone());
                        sent.push((value, producer.send(record).unwrap()));
                    }
                    sent.into_iter()
                        .map(|(v, f)| (v, f.wait()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// Directory 0 fails while two producer threads write with `acks=All`: every send still
/// succeeds (the partitions it led fail over, and the append that met the failure finishes
/// on the new leader), every acknowledged record is readable at its offset, and after a
/// reopen with the directory healthy again every replica is byte-identical.
#[test]
fn leader_directory_failure_under_load_loses_nothing() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let partitions = 3;
    let mut acked: Vec<(u32, u64, String)> = Vec::new();
    {
        let (log, fault) = common::faulty_log(&dirs);
        // Every batch synced: the failure also meets the fsyncs that follow the writes.
        let config = TopicConfig::default()
            .partitions(partitions)
            .replication_factor(3)
            .min_insync_replicas(2)
            .fsync(tarnlog::FsyncPolicy::EveryBatch);
        log.create_topic("t", config).unwrap();
        let before = log.describe_topic("t").unwrap();
        let led_by_0: Vec<u32> = before
            .partitions
            .iter()
            .filter(|p| p.leader == Some(0))
            .map(|p| p.partition)
            .collect();
        assert!(
            !led_by_0.is_empty(),
            "placement puts a leader in directory 0"
        );
        let producer = log
            .producer(ProducerConfig::default().acks(Acks::All).linger_ms(0))
            .unwrap();
        let results = produce_while_failing(&producer, &fault, &dirs[0]);
        for (value, result) in results {
            let meta = result.unwrap_or_else(|e| panic!("{value}: {e}"));
            acked.push((meta.partition, meta.offset.unwrap(), value));
        }
        let after = log.describe_topic("t").unwrap();
        for p in &after.partitions {
            assert_ne!(
                p.leader,
                Some(0),
                "partition {} still led by 0",
                p.partition
            );
            assert!(!p.isr.contains(&0));
            assert_eq!(p.offline_replicas, [0]);
            assert_eq!(p.high_watermark, p.log_end_offset);
            let old = &before.partitions[p.partition as usize];
            if led_by_0.contains(&p.partition) {
                assert!(
                    p.leader_epoch > old.leader_epoch,
                    "a new leader, a new epoch"
                );
            }
        }
        assert_eq!(after.under_replicated().count(), partitions as usize);
        let status = log.dir_status();
        assert!(!status[0].online && status[1].online && status[2].online);
        assert_eq!(status[0].leaders, 0);
        for p in 0..partitions {
            let read = values(&log, "t", p);
            for (_, offset, value) in acked.iter().filter(|(q, _, _)| *q == p) {
                assert_eq!(&read[*offset as usize], value, "t-{p}@{offset}");
            }
        }
        producer.close().unwrap();
        log.close().unwrap();
    }
    // The directory is healthy again at reopen: its replicas are reconciled and caught up.
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_fully_replicated(&log);
    assert_eq!(acked.len(), 3000);
    for p in 0..partitions {
        let read = values(&log, "t", p);
        for (_, offset, value) in acked.iter().filter(|(q, _, _)| *q == p) {
            assert_eq!(&read[*offset as usize], value);
        }
    }
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", partitions);
}

/// Kafka's `PartitionTest.testHighWatermarkAdvanceShouldNotAdvanceWhenUnderMinISR`, plus
/// the `acks=All` gate: with two of three directories failed and `min_insync_replicas` 2,
/// `acks=Leader` writes land but stay invisible, `acks=All` ones are refused with nothing
/// written; restoring one directory brings the ISR back to 2 and the high watermark up.
#[test]
fn under_min_isr_the_high_watermark_waits() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .partitions(1)
        .replication_factor(3)
        .min_insync_replicas(2);
    let topic = log.create_topic("t", config).unwrap();
    let partition = topic.partition(0).unwrap();
    partition.append_values(["a", "b"]).unwrap();
    assert_eq!(partition.high_watermark(), 2);
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let followers: Vec<usize> = (0..3).filter(|&d| d != leader).collect();
    for &d in &followers {
        fault.fail_dir(&dirs[d], FaultKind::Eio);
    }
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let meta = producer
        .send(ProducerRecord::new("t").value("c"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(meta.offset, Some(2));
    assert_eq!(partition.log_end_offset(), 3);
    assert_eq!(partition.high_watermark(), 2, "not advanced under min ISR");
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    let end = partition.log_end_offset();
    assert!(matches!(
        partition.append_values(["d"]),
        Err(Error::NotEnoughReplicas {
            in_sync: 1,
            required: 2
        })
    ));
    assert_eq!(
        partition.log_end_offset(),
        end,
        "a refused append writes nothing"
    );
    fault.heal_dir(&dirs[followers[0]]);
    log.restore_dir(&dirs[followers[0]]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.isr.len(), 2);
    assert_eq!(partition.high_watermark(), 3);
    partition.append_values(["e"]).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b", "c", "e"]);
    producer.close().unwrap();
    fault.heal_dir(&dirs[followers[1]]);
    log.restore_dir(&dirs[followers[1]]).unwrap();
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// A log over two fault-injecting `dirs` with topic `t` (replication factor 2) holding
/// "a" on both replicas, then the follower's directory full (`NoSpace`): the log, its
/// faults, partition 0 and its leader's directory index.
fn replicated_with_a_failed_follower(
    dirs: &[PathBuf],
) -> (Log, FaultStorage, tarnlog::Partition, usize) {
    let (log, fault) = common::faulty_log(dirs);
    let topic = log
        .create_topic("t", TopicConfig::default().replication_factor(2))
        .unwrap();
    let partition = topic.partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    fault.fail_dir(&dirs[1 - leader], FaultKind::NoSpace);
    (log, fault, partition, leader)
}

/// Follower fails (the ISR shrinks to the leader), then the leader fails: no in-sync
/// replica is left, so the partition is offline — appends and reads say so — and restoring
/// the out-of-sync follower does not bring it back (no unclean election). Restoring the
/// last in-sync replica's directory does, with everything it held, and the follower is
/// rebuilt from it.
#[test]
fn offline_until_the_last_in_sync_replica_returns() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault, partition, leader) = replicated_with_a_failed_follower(&dirs);
    let follower = 1 - leader;
    partition.append_values(["b"]).unwrap();
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].isr, [leader]);
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    let offline = |e: &Error| matches!(e, Error::PartitionOffline { partition: 0, .. });
    assert!(offline(&partition.append_values(["c"]).unwrap_err()));
    assert!(offline(&partition.read(0, 100).unwrap_err()));
    let described = log.describe_topic("t").unwrap();
    assert_eq!(described.offline().count(), 1);
    assert_eq!(
        described.partitions[0].isr,
        [leader],
        "the replica waited for"
    );
    assert!(log.dir_status().iter().all(|d| !d.online));

    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    assert!(offline(&partition.append_values(["c"]).unwrap_err()));

    fault.heal_dir(&dirs[leader]);
    log.restore_dir(&dirs[leader]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(leader));
    assert_eq!(described.isr.len(), 2, "the follower caught up");
    partition.append_values(["c"]).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b", "c"]);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// A partition offline waiting for its last in-sync replica gets a leader as soon as
/// `unclean_leader_election` is turned on (Kafka's controller runs an unclean election
/// for leaderless partitions when the setting is enabled): the out-of-sync replica leads
/// in a new epoch with what it holds, and the old leader, back later, is cut back to it.
#[test]
fn turning_unclean_election_on_elects_a_leader_for_an_offline_partition() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault, partition, leader) = replicated_with_a_failed_follower(&dirs);
    let before = log.describe_topic("t").unwrap().partitions[0].clone();
    let follower = 1 - leader;
    partition.append_values(["b"]).unwrap();
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let offline = |e: &Error| matches!(e, Error::PartitionOffline { partition: 0, .. });
    assert!(offline(&partition.append_values(["c"]).unwrap_err()));

    log.alter_topic_config(
        "t",
        TopicConfig::default()
            .replication_factor(2)
            .unclean_leader_election(true),
    )
    .unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(follower), "{described:?}");
    assert!(described.leader_epoch > before.leader_epoch);
    partition.append_values(["c"]).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "c"]);

    fault.heal_dir(&dirs[leader]);
    log.restore_dir(&dirs[leader]).unwrap();
    assert_fully_replicated(&log);
    assert_eq!(values(&log, "t", 0), ["a", "c"]);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// With `unclean_leader_election`, the out-of-sync replica leads when it returns first and
/// the records only the old leader had are lost; when the old leader returns its divergent
/// tail is cut where the new leader's history parts from it (KIP-101) — at runtime and
/// again after a reopen — and the replicas end byte-identical.
#[test]
fn unclean_election_then_the_old_leader_is_cut_back() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .replication_factor(2)
        .unclean_leader_election(true);
    let topic = log.create_topic("t", config).unwrap();
    let partition = topic.partition(0).unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let old = log.describe_topic("t").unwrap().partitions[0].clone();
    let (leader, follower) = (old.leader.unwrap(), 1 - old.leader.unwrap());
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    partition.append_values(["only-on-old-leader"]).unwrap();
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    // The failure is noticed at the next use: no live replica is left to lead.
    let error = partition.append_values(["lost"]).unwrap_err();
    assert!(matches!(error, Error::PartitionOffline { .. }), "{error}");
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let elected = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(elected.leader, Some(follower), "unclean election");
    assert!(elected.leader_epoch > old.leader_epoch);
    partition.append_values(["c", "d"]).unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b", "c", "d"]);

    fault.heal_dir(&dirs[leader]);
    log.restore_dir(&dirs[leader]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.isr.len(), 2);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "b", "c", "d"]);
    log.close().unwrap();
}

/// The KIP-101 case at reopen: a stale directory whose replica holds a tail written in an
/// epoch the new leader superseded is cut back and caught up when the log opens.
#[test]
fn stale_directory_with_a_divergent_tail_is_cut_at_reopen() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (leader, follower);
    {
        let (log, fault) = common::faulty_log(&dirs);
        let config = TopicConfig::default()
            .replication_factor(2)
            .unclean_leader_election(true);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        partition.append_values(["a"]).unwrap();
        leader = log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        follower = 1 - leader;
        fault.fail_dir(&dirs[follower], FaultKind::Eio);
        partition.append_values(["stale-1", "stale-2"]).unwrap();
        fault.fail_dir(&dirs[leader], FaultKind::Eio);
        let error = partition.append_values(["lost"]).unwrap_err();
        assert!(matches!(error, Error::PartitionOffline { .. }), "{error}");
        fault.heal_dir(&dirs[follower]);
        log.restore_dir(&dirs[follower]).unwrap();
        partition.append_values(["b"]).unwrap();
        // The old leader's directory never comes back while this log runs.
        log.close().unwrap();
    }
    let stale = segments(&dirs, "t", 0);
    assert_ne!(stale[0], stale[1]);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(follower), "meta remembers who leads");
    assert_eq!(described.isr.len(), 2);
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// A directory that cannot be opened at all (here: every call on it fails) leaves the log
/// opening without it: its replicas are offline, partitions it led are led elsewhere, and
/// `restore_dir` brings it back and rebuilds it once it works again.
#[test]
fn a_directory_unusable_at_open_is_offline_until_restored() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let config = TopicConfig::default().partitions(2).replication_factor(2);
        log.create_topic("t", config).unwrap();
        for p in 0..2 {
            let partition = log.topic("t").unwrap().partition(p).unwrap();
            partition.append_values([format!("{p}-a")]).unwrap();
        }
        log.close().unwrap();
    }
    let fault = FaultStorage::new(OsStorage::shared());
    fault.fail_dir(&dirs[0], FaultKind::Eio);
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .open()
        .unwrap();
    assert_eq!(log.recovery_report().offline_dirs.len(), 1);
    assert!(!log.dir_status()[0].online);
    for p in 0..2 {
        let partition = log.topic("t").unwrap().partition(p).unwrap();
        partition.append_values([format!("{p}-b")]).unwrap();
        assert_eq!(values(&log, "t", p), [format!("{p}-a"), format!("{p}-b")]);
    }
    let described = log.describe_topic("t").unwrap();
    assert!(described.partitions.iter().all(|p| p.leader == Some(1)));
    assert!(
        described
            .partitions
            .iter()
            .all(|p| p.offline_replicas == [0])
    );
    // Administration goes on over the online directory: a new topic, a group's commit.
    assert!(matches!(
        log.create_topic("u", TopicConfig::default().replication_factor(2)),
        Err(Error::InvalidReplicationFactor {
            requested: 2,
            available: 1
        })
    ));
    log.create_topic("u", TopicConfig::default().partitions(2))
        .unwrap();
    let placed = log.describe_topic("u").unwrap();
    assert!(placed.partitions.iter().all(|p| p.replicas == [1]));
    let tp = tarnlog::TopicPartition::new("t", 0);
    log.commit_offsets("g", &[(tp.clone(), tarnlog::OffsetAndMetadata::new(1))])
        .unwrap();
    assert_eq!(
        log.committed_offset("g", &tp).unwrap().map(|c| c.offset),
        Some(1)
    );
    log.delete_topic("u").unwrap();
    fault.heal_dir(&dirs[0]);
    log.restore_dir(&dirs[0]).unwrap();
    assert_fully_replicated(&log);
    assert!(log.dir_status().iter().all(|d| d.online));
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 2);
}

/// A partition directory that vanished from `d1` while `d0`, the other replica's, is
/// unreadable: the open recreates it empty (it cannot lead), having first set its entry in
/// `d1`'s recovery-point checkpoint to 0. After a crash, opens with `d0` still unreadable succeed
/// (before, the empty replica under its old recovery point was taken for damaged synced
/// data, and with no peer to repair it from the open failed), and `restore_dir(d0)` then
/// brings every record back to both.
#[test]
fn a_vanished_replica_recreated_while_its_peer_is_offline_does_not_fail_later_opens() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let written: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let config = TopicConfig::default().replication_factor(2);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        partition.append_values(&written).unwrap();
        log.close().unwrap();
    }
    std::fs::remove_dir_all(dirs[1].join("t-0")).unwrap();
    let fault = FaultStorage::new(OsStorage::shared());
    fault.fail_dir(&dirs[0], FaultKind::Eio);
    let open = || {
        Log::builder()
            .dirs(&dirs)
            .storage(fault.shared())
            .open()
            .unwrap()
    };
    let log = open();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, None, "{described:?}");
    log.simulate_crash();
    let log = open();
    assert!(log.recovery_report().repaired.is_empty());
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].leader, None);
    fault.heal_dir(&dirs[0]);
    log.restore_dir(&dirs[0]).unwrap();
    assert_eq!(values(&log, "t", 0), written);
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// A follower replica damaged below its recovery point (a flipped byte in a sealed
/// segment) no longer fails the open: it is set aside as `.damaged` and rebuilt from the
/// leader, byte for byte.
#[test]
fn a_damaged_replica_is_rebuilt_from_its_peer() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let leader;
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let config = TopicConfig::default()
            .replication_factor(2)
            .segment_bytes(4096);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        for i in 0..300 {
            partition.append_values([format!("value-{i:04}")]).unwrap();
        }
        assert!(partition.segment_count() > 2);
        leader = log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        log.close().unwrap();
    }
    let follower = 1 - leader;
    let segment = dirs[follower].join("t-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    // A closed, synced log with damage below the recovery point: the replica cannot load.
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let report = log.recovery_report();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    assert!(report.repaired[0].0.ends_with("t-0.damaged"));
    assert!(dirs[follower].join("t-0.damaged").is_dir());
    assert_fully_replicated(&log);
    assert_eq!(values(&log, "t", 0).len(), 300);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// A replicated log with every replica of a partition damaged still refuses to open:
/// nothing is cut when no peer can repair it.
#[test]
fn damage_with_no_healthy_peer_still_fails_the_open() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let config = TopicConfig::default()
            .replication_factor(2)
            .segment_bytes(4096);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        for i in 0..100 {
            partition.append_values([format!("value-{i:04}")]).unwrap();
        }
        log.close().unwrap();
    }
    for dir in &dirs {
        let segment = dir.join("t-0").join("00000000000000000000.log");
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&segment, bytes).unwrap();
    }
    let error = Log::builder().dirs(&dirs).open().unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
}

/// A real directory renamed away while the log runs: the next checkpoint cannot be written
/// there, the directory goes offline, and its partitions fail over.
#[test]
fn a_directory_renamed_away_goes_offline() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let config = TopicConfig::default().partitions(2).replication_factor(2);
    let topic = log.create_topic("t", config).unwrap();
    for p in 0..2 {
        topic.partition(p).unwrap().append_values(["a"]).unwrap();
    }
    // Everything synced and checkpointed: the next flush has nothing new to write, and
    // still notices.
    log.flush().unwrap();
    std::fs::rename(&dirs[0], root.path().join("gone")).unwrap();
    log.flush().unwrap();
    assert!(!log.dir_status()[0].online);
    for p in 0..2 {
        let partition = topic.partition(p).unwrap();
        partition.append_values(["b"]).unwrap();
        assert_eq!(values(&log, "t", p), ["a", "b"]);
    }
    assert!(
        log.describe_topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == Some(1))
    );
    // An empty directory in its place is filled from the survivor.
    log.restore_dir(&dirs[0]).unwrap();
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 2);
}

/// A directory whose file system turns read-only while `acks=All` producers write (EROFS
/// on every change, reads still working, through the storage seam: a real remount is
/// refused while files are open for writing): it goes offline at its next write, its
/// partitions fail over, every send succeeds and reads back, and once writable again it is
/// restored and rebuilt byte for byte.
#[test]
fn a_directory_turning_read_only_goes_offline() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .partitions(3)
        .replication_factor(3)
        .min_insync_replicas(2);
    log.create_topic("t", config).unwrap();
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::All).linger_ms(0))
        .unwrap();
    let mut acked: Vec<(u32, u64, String)> = Vec::new();
    for i in 0..600 {
        if i == 250 {
            fault.fail_dir(&dirs[1], FaultKind::ReadOnly);
        }
        let value = format!("v{i}");
        let record = ProducerRecord::new("t")
            .key(format!("k{i}"))
            .value(value.clone());
        let meta = producer.send(record).unwrap().wait().unwrap();
        acked.push((meta.partition, meta.offset.unwrap(), value));
    }
    let status = log.dir_status();
    assert!(status[0].online && !status[1].online && status[2].online);
    for p in log.describe_topic("t").unwrap().partitions {
        assert_ne!(p.leader, Some(1));
        assert!(!p.isr.contains(&1));
        assert_eq!(p.offline_replicas, [1]);
    }
    for p in 0..3 {
        let read = values(&log, "t", p);
        for (_, offset, value) in acked.iter().filter(|(q, _, _)| *q == p) {
            assert_eq!(&read[*offset as usize], value, "t-{p}@{offset}");
        }
    }
    fault.heal_dir(&dirs[1]);
    log.restore_dir(&dirs[1]).unwrap();
    assert_fully_replicated(&log);
    producer.close().unwrap();
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 3);
}

/// A directory on a real tmpfs that fills up: the `ENOSPC` takes it offline and `acks=All`
/// writes carry on in the other directory (root only: it mounts a tmpfs).
#[test]
fn a_full_disk_takes_only_its_directory_offline() {
    let tmpfs = match common::Tmpfs::mount("2m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let root = common::scratch("tarnlog-failover-");
    let dirs = vec![root.path().join("big"), tmpfs.path().join("small")];
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let config = TopicConfig::default()
        .replication_factor(2)
        .segment_bytes(1 << 20);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let value = "x".repeat(1000);
    let mut acked = 0;
    for _ in 0..6000 {
        partition.append_values([value.as_str()]).unwrap();
        acked += 1;
    }
    assert!(!log.dir_status()[1].online, "the small tmpfs filled up");
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(0));
    assert_eq!(described.isr, [0]);
    assert_eq!(values(&log, "t", 0).len(), acked);
    log.close().unwrap();
}

/// An in-sync follower that holds more than the recorded leader (whose unsynced tail
/// recovery cut) leads at the reopen, so nothing the follower holds is cut.
#[test]
fn the_in_sync_replica_holding_the_most_leads_at_open() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let leader;
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let config = TopicConfig::default().replication_factor(2);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        for i in 0..10 {
            partition.append_values([format!("v{i}")]).unwrap();
        }
        leader = log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        log.close().unwrap();
    }
    // The leader's directory as after a crash that lost its last writes: no clean marker,
    // no recovery point, the last batch cut off.
    for name in ["clean-shutdown", "recovery-point-offset-checkpoint"] {
        std::fs::remove_file(dirs[leader].join(name)).unwrap();
    }
    let segment = dirs[leader].join("t-0").join("00000000000000000000.log");
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(1 - leader));
    assert_eq!(values(&log, "t", 0).len(), 10);
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// A truncation while a follower is offline starts a new epoch, so the follower's copy of
/// the cut records is told apart from what the leader wrote after the cut when it returns.
#[test]
fn a_truncation_missed_by_an_offline_follower_is_caught_up() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault) = common::faulty_log(&dirs);
    let partition = log
        .create_topic("t", TopicConfig::default().replication_factor(2))
        .unwrap()
        .partition(0)
        .unwrap();
    partition.append_values(["a", "b"]).unwrap();
    partition.append_values(["cut-1", "cut-2"]).unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let follower = 1 - leader;
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    partition.append_values(["cut-3"]).unwrap();
    let before = log.describe_topic("t").unwrap().partitions[0].leader_epoch;
    partition.truncate_to(2).unwrap();
    assert!(log.describe_topic("t").unwrap().partitions[0].leader_epoch > before);
    partition.append_values(["c", "d", "e"]).unwrap();
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    assert_fully_replicated(&log);
    assert_eq!(values(&log, "t", 0), ["a", "b", "c", "d", "e"]);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// Records written under the minimum in-sync set stay invisible across a reopen that still
/// lacks the followers: the high watermark starts from its checkpoint, not the log end.
#[test]
fn the_high_watermark_survives_a_reopen_under_min_isr() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let followers: Vec<usize>;
    {
        let (log, fault) = common::faulty_log(&dirs);
        let config = TopicConfig::default()
            .replication_factor(3)
            .min_insync_replicas(2);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        partition.append_values(["a"]).unwrap();
        let leader = log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        followers = (0..3).filter(|&d| d != leader).collect();
        for &d in &followers {
            fault.fail_dir(&dirs[d], FaultKind::Eio);
        }
        let producer = log
            .producer(ProducerConfig::default().acks(Acks::Leader))
            .unwrap();
        producer
            .send(ProducerRecord::new("t").value("hidden"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(values(&log, "t", 0), ["a"]);
        producer.close().unwrap();
        log.close().unwrap();
    }
    let fault = FaultStorage::new(OsStorage::shared());
    for &d in &followers {
        fault.fail_dir(&dirs[d], FaultKind::Eio);
    }
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .open()
        .unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_end_offset(), 2);
    assert_eq!(values(&log, "t", 0), ["a"], "still under min ISR");
    log.close().unwrap();
}

/// `restore_dir` never sets aside the only copy: a damaged replica of a partition with no
/// other replica makes the restore fail, with the directory left offline and its data where
/// it was.
#[test]
fn restoring_a_damaged_only_copy_fails_and_keeps_it() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default().segment_bytes(4096);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for i in 0..300 {
        partition.append_values([format!("value-{i:04}")]).unwrap();
    }
    log.flush().unwrap();
    let home = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    fault.fail_dir(&dirs[home], FaultKind::Eio);
    assert!(partition.append_values(["x"]).is_err());
    // Damage in the active segment, below the checkpointed recovery point: recovery
    // scans it and finds synced data damaged.
    let last = *partition.segment_base_offsets().last().unwrap();
    let segment = dirs[home].join("t-0").join(format!("{last:020}.log"));
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    fault.heal_dir(&dirs[home]);
    let error = log.restore_dir(&dirs[home]).unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
    assert!(!log.dir_status()[home].online);
    assert!(segment.exists());
    assert!(!dirs[home].join("t-0.damaged").exists());
    drop(log);
}

/// `restore_dir` rebuilds a replica whose partition directory vanished while its directory
/// was offline; a fault at any call of the restore (one at a time) may cut the rebuild
/// short. The replica's recovery-point entry is set to 0 before it is recreated, so
/// after a crash an open with the leader's directory unreadable still succeeds (before, a
/// short rebuild under the old recovery point was taken for damaged synced data, with no peer
/// to repair it from), and with both directories every acknowledged record is there.
#[test]
fn a_restore_cut_short_leaves_no_recovery_point_above_the_rebuilt_data() {
    let written: Vec<String> = (0..300).map(|i| format!("value-{i:04}")).collect();
    let mut step = 0;
    loop {
        let root = common::scratch("tarnlog-failover-");
        let dirs = dirs(root.path(), 2);
        let (log, fault) = common::faulty_log(&dirs);
        let config = TopicConfig::default()
            .replication_factor(2)
            .segment_bytes(4096);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        let home = log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        let other = 1 - home;
        // Both replicas hold the first half, synced and checkpointed; the second goes to
        // the leader alone.
        let (first, second) = written.split_at(150);
        for chunk in first.chunks(20) {
            partition.append_values(chunk).unwrap();
        }
        log.flush().unwrap();
        fault.fail_dir(&dirs[other], FaultKind::Eio);
        for chunk in second.chunks(20) {
            partition.append_values(chunk).unwrap();
        }
        assert!(!log.dir_status()[other].online);
        log.flush().unwrap();
        std::fs::remove_dir_all(dirs[other].join("t-0")).unwrap();
        fault.heal_dir(&dirs[other]);
        fault.fail_at(fault.ops() + 1 + step, FaultKind::Eio, false);
        // Faults injected so far (the failed directory's) do not count.
        let before = fault.injected();
        let restored = log.restore_dir(&dirs[other]);
        let injected = fault.injected() > before;
        assert!(restored.is_ok() || injected, "{restored:?}");
        drop(partition);
        log.simulate_crash();
        fault.heal();
        fault.fail_dir(&dirs[home], FaultKind::Eio);
        let opened = Log::builder().dirs(&dirs).storage(fault.shared()).open();
        let log = opened.unwrap_or_else(|e| panic!("fault at step {step}: open failed: {e}"));
        log.simulate_crash();
        fault.heal_dir(&dirs[home]);
        let log = Log::builder().dirs(&dirs).open().unwrap();
        assert_eq!(values(&log, "t", 0), written, "fault at step {step}");
        log.close().unwrap();
        if !injected {
            assert!(step > 10, "the restore made only {step} calls");
            return;
        }
        step += 1;
    }
}

/// A single-directory log has nothing to restore from: `restore_dir` is refused.
#[test]
fn restore_dir_needs_several_directories() {
    let root = common::scratch("tarnlog-failover-");
    let log = Log::open(root.path()).unwrap();
    assert!(matches!(
        log.restore_dir(root.path()),
        Err(Error::InvalidConfig { field: "dir", .. })
    ));
    log.close().unwrap();
}

/// Kafka's `replica.lag.time.max.ms`: a follower whose directory hangs (every sync waits
/// until healed) stops holding `acks=All` appends back once its sync has taken longer than
/// the lag (here 50 ms) — it leaves the in-sync set — and rejoins once the directory is
/// fast again and it has caught up.
#[test]
fn a_slow_follower_leaves_the_isr_and_rejoins() {
    use std::time::{Duration, Instant};
    let (_root, dirs, fault, log) = lagging_faulty_dirs(3, 50);
    let config = TopicConfig::default()
        .replication_factor(3)
        .min_insync_replicas(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let slow = (0..3).find(|&d| d != leader).unwrap();
    // Hung until healed: an append that waited for it would return only when the healer
    // gives up (and then fail the assertion); one that leaves the follower behind after
    // `replica_lag_time_max_ms` returns long before the bound, however slow today's fsyncs.
    fault.slow_dir(&dirs[slow], Duration::from_secs(3600));
    let (done, healer) = {
        let (fault, dir) = (fault.clone(), dirs[slow].clone());
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let healer = std::thread::spawn(move || {
            let _ = wait.recv_timeout(Duration::from_secs(10));
            fault.heal_dir(&dir);
        });
        (done, healer)
    };
    let started = Instant::now();
    partition.append_values(["b"]).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the append waited for the slow follower: {:?}",
        started.elapsed()
    );
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert!(!described.isr.contains(&slow), "{described:?}");
    assert_eq!(described.isr.len(), 2);
    assert_eq!(partition.high_watermark(), 2);
    drop(done);
    healer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while log.describe_topic("t").unwrap().partitions[0].isr.len() < 3 {
        assert!(Instant::now() < deadline, "the follower never rejoined");
        partition.append_values([format!("c{i}")]).unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        log.dir_status().iter().all(|d| d.online),
        "slow is not failed"
    );
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// `replica_lag_time_max_ms` outside 1..=86400000 is refused before anything is opened.
#[test]
fn a_bad_replica_lag_is_refused() {
    let root = common::scratch("tarnlog-failover-");
    for bad in [0, 86_400_001] {
        let error = Log::builder()
            .dir(root.path().join("never"))
            .replica_lag_time_max_ms(bad)
            .open()
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidConfig {
                    field: "replica_lag_time_max_ms",
                    ..
                }
            ),
            "{error}"
        );
    }
    assert!(!root.path().join("never").exists());
}

/// Followers roll where their leader rolled, whatever their own clock says: a replica
/// rebuilt later (here with records that carry no timestamp, so the leader's time roll
/// followed its own clock) has the leader's segment files, byte for byte.
#[test]
fn rebuilt_followers_roll_where_the_leader_rolled() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let clock = std::sync::Arc::new(tarnlog::ManualClock::new(1_000_000));
    let open = || {
        Log::builder()
            .dirs(&dirs)
            .clock(clock.clone())
            .open()
            .unwrap()
    };
    let follower;
    {
        let log = open();
        let config = TopicConfig::default()
            .replication_factor(2)
            .segment_ms(1000);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        for i in 0..3 {
            let mut builder = tarnlog::BatchBuilder::new();
            builder.push(-1, None, Some(format!("v{i}").as_bytes()), &[]);
            partition.append(builder.finish().unwrap()).unwrap();
            clock.advance(5000);
        }
        assert_eq!(partition.segment_count(), 3, "the leader rolled by time");
        follower = 1 - log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        log.close().unwrap();
    }
    std::fs::remove_dir_all(&dirs[follower]).unwrap();
    clock.advance(60_000);
    let log = open();
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
    assert_eq!(segments(&dirs, "t", 0)[follower].len(), 3);
}

/// Replicas of a topic deleted while their directory was offline are removed when the
/// directory returns, by `restore_dir` and by a reopen (its own, older `meta` placed them
/// there); a topic made again under the name keeps its own data, and set-aside `.damaged`
/// copies, directories its `meta` never placed and plain files stay.
#[test]
fn stray_replicas_of_deleted_topics_are_removed() {
    for reopen in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path(), 2);
        let (log, fault) = common::faulty_log(&dirs);
        let config = TopicConfig::default().replication_factor(2);
        let gone = log
            .create_topic("gone", config)
            .unwrap()
            .partition(0)
            .unwrap();
        gone.append_values(["old"]).unwrap();
        let kept = dirs[1].join("kept-0.damaged");
        std::fs::create_dir_all(&kept).unwrap();
        // Not recorded by the directory's own `meta`, or not a directory: left alone.
        let orphan = dirs[1].join("orphan-0");
        std::fs::create_dir_all(&orphan).unwrap();
        let file = dirs[1].join("notes-1");
        std::fs::write(&file, b"mine").unwrap();
        fault.fail_dir(&dirs[1], FaultKind::Eio);
        // The next append finds the directory failed.
        gone.append_values(["more"]).unwrap();
        assert!(!log.dir_status()[1].online);
        log.delete_topic("gone").unwrap();
        log.create_topic("gone", TopicConfig::default())
            .unwrap()
            .partition(0)
            .unwrap()
            .append_values(["new"])
            .unwrap();
        assert!(
            dirs[1].join("gone-0").exists(),
            "left in the offline directory"
        );
        fault.heal_dir(&dirs[1]);
        let log = if reopen {
            log.close().unwrap();
            Log::builder().dirs(&dirs).open().unwrap()
        } else {
            log.restore_dir(&dirs[1]).unwrap();
            log
        };
        assert!(!dirs[1].join("gone-0").exists(), "reopen: {reopen}");
        assert!(kept.exists() && orphan.exists() && file.exists());
        assert_eq!(values(&log, "gone", 0), ["new"]);
    }
}

/// Two directories on a fault-injecting storage, a replica lag of `lag_ms`, and a topic "t".
fn two_dirs_with_topic_t(lag_ms: u64) -> (tempfile::TempDir, Vec<PathBuf>, FaultStorage, Log) {
    let (root, dirs, fault, log) = lagging_faulty_dirs(2, lag_ms);
    log.create_topic("t", TopicConfig::default()).unwrap();
    (root, dirs, fault, log)
}

/// A log over `n` directories on a fault-injecting storage, with a replica lag of `lag_ms`.
fn lagging_faulty_dirs(
    n: usize,
    lag_ms: u64,
) -> (tempfile::TempDir, Vec<PathBuf>, FaultStorage, Log) {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), n);
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .replica_lag_time_max_ms(lag_ms)
        .open()
        .unwrap();
    (root, dirs, fault, log)
}

/// A `meta` write stuck on a hung disk when its log goes away (here a simulated kill, which
/// waits `replica_lag_time_max_ms` for queued writes) never completes its replacement
/// afterwards, when the directory may belong to a newer log: the directory is marked
/// failed as its lock is released, and the write checks that before its rename.
#[test]
fn a_meta_write_stuck_past_the_logs_end_replaces_nothing() {
    use std::time::{Duration, Instant};
    let (_root, dirs, fault, log) = two_dirs_with_topic_t(100);
    let before = std::fs::read(dirs[1].join("meta")).unwrap();
    // Hung until healed.
    fault.slow_dir(&dirs[1], Duration::from_secs(3600));
    let config = log.topic("t").unwrap().config().retention_ms(4242);
    log.alter_topic_config("t", config).unwrap();
    let started = Instant::now();
    log.simulate_crash();
    assert!(started.elapsed() < Duration::from_secs(5));
    fault.heal_dir(&dirs[1]);
    // The stuck write resumes now; give it ample time to do whatever it would.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::read(dirs[1].join("meta")).unwrap() == before,
        "a write of the dropped log replaced `meta`"
    );
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_eq!(log.topic("t").unwrap().config().retention_ms, 4242);
    log.close().unwrap();
}

/// A directory whose writes hang delays only the first `meta` write after it started
/// hanging (by `replica_lag_time_max_ms`): later writes do not wait for it again, it writes
/// only the newest `meta` once it recovers, and it stays online.
#[test]
fn a_slow_directory_delays_only_the_first_meta_write() {
    use std::time::{Duration, Instant};
    let (_root, dirs, fault, log) = two_dirs_with_topic_t(500);
    // Hung until healed. Had each write waited the lag for it, the twenty would take ten
    // seconds; the bound leaves the first one's wait plenty of room for slow fsyncs.
    fault.slow_dir(&dirs[1], Duration::from_secs(3600));
    let started = Instant::now();
    for i in 0..20 {
        let config = log.topic("t").unwrap().config().retention_ms(1000 + i);
        log.alter_topic_config("t", config).unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "twenty meta writes took {took:?}: each waited for the slow directory"
    );
    fault.heal_dir(&dirs[1]);
    let newest = |dir: &Path| {
        let meta = std::fs::read(dir.join("meta")).unwrap();
        meta.windows(17).any(|w| w == b"retention_ms=1019")
    };
    assert!(newest(&dirs[0]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !newest(&dirs[1]) {
        assert!(
            Instant::now() < deadline,
            "the slow directory never caught up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(log.dir_status().iter().all(|d| d.online));
    log.close().unwrap();
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_eq!(log.topic("t").unwrap().config().retention_ms, 1019);
}

/// A log over `dirs` through `fault` (which keeps its failed directories across reopens).
fn open_over(dirs: &[PathBuf], fault: &FaultStorage) -> Log {
    Log::builder()
        .dirs(dirs)
        .storage(fault.shared())
        .open()
        .unwrap()
}

/// Replication factor 3, `min_insync_replicas` 2.
fn rf3_min_isr2() -> TopicConfig {
    TopicConfig::default()
        .replication_factor(3)
        .min_insync_replicas(2)
}

/// Found by the replication model: a follower that was offline during `delete_records` is
/// rebuilt at the next open (its log start raised in memory, its checkpoint not yet
/// written), then leads after another failure and a crash. Its own checkpoint lags, but the
/// others' hold the deletion: the log start stays where `delete_records` put it and the
/// deleted record does not come back.
#[test]
fn a_deletion_survives_a_rebuilt_follower_leading_after_a_crash() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let fault = FaultStorage::new(OsStorage::shared());
    let log = open_over(&dirs, &fault);
    log.create_topic("t", rf3_min_isr2()).unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values(["a", "b", "c"]).unwrap();
    assert_eq!(log.delete_records(&tp, 1).unwrap(), 1);
    fault.heal_dir(&dirs[leader]);
    drop(partition);
    log.simulate_crash();

    // The old leader's directory is back and rebuilt; now the new leader fails.
    let log = open_over(&dirs, &fault);
    assert_eq!(
        log.topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_start_offset(),
        1
    );
    let second = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    assert_ne!(second, leader);
    fault.fail_dir(&dirs[second], FaultKind::Eio);
    // The append moves leadership away from it (to the rebuilt replica or the third).
    log.topic("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .append_values(["d"])
        .unwrap();
    fault.heal_dir(&dirs[second]);
    log.simulate_crash();

    let log = open_over(&dirs, &fault);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(
        partition.log_start_offset(),
        1,
        "{:?}",
        log.describe_topic("t")
    );
    assert_eq!(values(&log, "t", 0), ["b", "c", "d"]);
    drop(partition);
    log.close().unwrap();
}

/// Found by the replication model: a follower offline during `delete_records`, rebuilt at
/// the next open, later restored into its partition while every other directory is down,
/// so that it leads from what its own directory holds. The deletion holds, and the high
/// watermark is not below the log start.
#[test]
fn a_deletion_survives_a_rebuilt_follower_restored_as_the_only_leader() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let fault = FaultStorage::new(OsStorage::shared());
    let log = open_over(&dirs, &fault);
    log.create_topic("t", rf3_min_isr2()).unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let away = (leader + 1) % 3;
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    fault.fail_dir(&dirs[away], FaultKind::Eio);
    partition.append_values(["b"]).unwrap();
    assert_eq!(log.delete_records(&tp, 1).unwrap(), 1);
    fault.heal_dir(&dirs[away]);
    drop(partition);
    log.simulate_crash();

    // Rebuilt at this open; then every directory fails, and only `away` comes back.
    let log = open_over(&dirs, &fault);
    assert_eq!(
        log.describe_topic("t").unwrap().under_replicated().count(),
        0
    );
    for dir in &dirs {
        fault.fail_dir(dir, FaultKind::Eio);
    }
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert!(partition.append_values(["c"]).is_err());
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].leader, None);
    fault.heal_dir(&dirs[away]);
    log.restore_dir(&dirs[away]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(away));
    assert_eq!(partition.log_start_offset(), 1, "{described:?}");
    assert!(partition.high_watermark() >= 1, "{described:?}");
    drop(partition);
    log.simulate_crash();
}

/// Found by the replication model: `delete_records` whose checkpoint meets the failure of
/// the last directory that could hold it (with several directories a failed checkpoint
/// takes its directory offline instead of failing the call) must not answer Ok. The last
/// online directory dies at each storage call of the deletion in turn; whatever the call
/// acknowledged holds after a crash and a reopen with the directories working again.
#[test]
fn a_deletion_no_directory_could_record_is_not_acknowledged() {
    let mut acknowledged_runs = 0;
    for k in 1..=30 {
        let root = common::scratch("tarnlog-failover-");
        let dirs = dirs(root.path(), 2);
        let fault = FaultStorage::new(OsStorage::shared());
        let log = open_over(&dirs, &fault);
        let config = TopicConfig::default().replication_factor(2);
        log.create_topic("t", config).unwrap();
        let tp = tarnlog::TopicPartition::new("t", 0);
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        partition.append_values(["a", "b"]).unwrap();
        let leader = log.describe_topic("t").unwrap().partitions[0]
            .leader
            .unwrap();
        fault.fail_dir(&dirs[1 - leader], FaultKind::Eio);
        partition.append_values(["c"]).unwrap();
        assert!(!log.dir_status()[1 - leader].online);
        // From the k-th call of the deletion on, every call fails: the leader's disk dies.
        fault.fail_at(fault.ops() + k, FaultKind::Eio, true);
        let answer = log.delete_records(&tp, 1);
        drop(partition);
        fault.heal();
        fault.heal_dir(&dirs[1 - leader]);
        log.simulate_crash();
        let log = open_over(&dirs, &fault);
        let start = log
            .topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_start_offset();
        match answer {
            Ok(acknowledged) => {
                acknowledged_runs += 1;
                assert!(
                    start >= acknowledged,
                    "call {k}: deleted up to {acknowledged}, start {start} after the reopen"
                );
            }
            Err(error) => assert!(
                matches!(
                    error,
                    Error::PartitionOffline { .. } | Error::Io { .. } | Error::Poisoned { .. }
                ),
                "call {k}: {error:?}"
            ),
        }
        log.close().unwrap();
    }
    assert!(
        acknowledged_runs > 0,
        "the deletion always failed: nothing tested"
    );
}

/// Heals a directory when dropped, so that a failing test does not leave a thread stuck in
/// a hung sync there (a scope waits for its threads).
struct HealOnDrop<'a>(&'a FaultStorage, &'a Path);

impl Drop for HealOnDrop<'_> {
    fn drop(&mut self) {
        self.0.heal_dir(self.1);
    }
}

/// Bytes of partition `p` of `topic` held by its replica in directory `dir` (0 when absent).
fn replica_size(log: &Log, topic: &str, p: usize, dir: usize) -> u64 {
    let described = log.describe_topic(topic).unwrap().partitions[p].clone();
    described
        .replicas
        .iter()
        .position(|&d| d == dir)
        .and_then(|k| described.replica_size_bytes[k])
        .unwrap_or(0)
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The first half of a double failure over two directories: topic `t` (replication factor
/// 2, `min_insync_replicas` 1) gets `both-a` on both, then `d0` fails and `only-d1-b` is
/// acknowledged on `d1` alone; the log closes, and `d0` works again while `d1` fails.
fn d1_ran_alone() -> (tempfile::TempDir, Vec<PathBuf>, FaultStorage) {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let fault = FaultStorage::new(OsStorage::shared());
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(1);
    {
        let log = open_over(&dirs, &fault);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        partition.append_values(["both-a"]).unwrap();
        fault.fail_dir(&dirs[0], FaultKind::Eio);
        partition.append_values(["only-d1-b"]).unwrap();
        assert!(!log.dir_status()[0].online);
        assert_eq!(values(&log, "t", 0), ["both-a", "only-d1-b"]);
        let _ = log.close();
    }
    fault.heal_dir(&dirs[0]);
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    (root, dirs, fault)
}

/// The double failure DESIGN.md describes under "Open and return": `d0` goes offline while
/// `d1` acknowledges a record alone; then the log opens while `d1` is unreadable, and `d0`
/// (its older `meta` still names it in sync) acknowledges another alone. Each history holds
/// an acknowledged record the other lacks. When both directories are back, the open keeps
/// the history of the `meta` it chooses and moves the other directory's replica aside as
/// `<partition>.diverged` (reported, kept on disk, never deleted) instead of cutting its
/// records; the replica is rebuilt, and later opens find one history again.
#[test]
fn a_forked_history_is_set_aside_not_cut() {
    let (_root, dirs, fault) = d1_ran_alone();
    {
        let log = open_over(&dirs, &fault);
        assert!(log.recovery_report().diverged.is_empty());
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        partition.append_values(["only-d0-c"]).unwrap();
        assert_eq!(values(&log, "t", 0), ["both-a", "only-d0-c"]);
        let _ = log.close();
    }
    fault.heal_dir(&dirs[1]);
    {
        let log = open_over(&dirs, &fault);
        let report = log.recovery_report();
        assert_eq!(report.diverged.len(), 1, "{report:?}");
        assert!(!report.is_clean());
        let aside = &report.diverged[0];
        assert!(aside.ends_with("t-0.diverged"), "{}", aside.display());
        let kept = values(&log, "t", 0);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0], "both-a");
        // The other history's record is in the copy set aside.
        let other = if kept[1] == "only-d1-b" {
            "only-d0-c"
        } else {
            assert_eq!(kept[1], "only-d0-c");
            "only-d1-b"
        };
        assert!(
            holds(&files_under(aside), other),
            "{other} not in {}",
            aside.display()
        );
        assert_fully_replicated(&log);
        log.close().unwrap();
    }
    assert_replicas_identical(&dirs, "t", 1);
    let log = open_over(&dirs, &fault);
    assert!(log.recovery_report().diverged.is_empty());
    assert!(log.recovery_report().repaired.is_empty());
    log.close().unwrap();
}

/// The same double failure, ended by `restore_dir` instead of a reopen: the running log's
/// history has moved past the generation the returning directory wrote alone, so the
/// restore is allowed, finds the directory's history forked from the log's, and moves its
/// replica aside as `.diverged` (with the record only it held) before rebuilding it.
#[test]
fn restore_dir_sets_aside_a_forked_history() {
    let (_root, dirs, fault) = d1_ran_alone();
    let log = open_over(&dirs, &fault);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values(["only-d0-c"]).unwrap();
    // Enough `meta` writes that the returning directory's is not newer than the log's.
    for name in ["u", "v", "w"] {
        log.create_topic(name, TopicConfig::default()).unwrap();
    }
    fault.heal_dir(&dirs[1]);
    log.restore_dir(&dirs[1]).unwrap();
    let aside = dirs[1].join("t-0.diverged");
    assert!(
        holds(&files_under(&aside), "only-d1-b"),
        "{}",
        aside.display()
    );
    assert_eq!(values(&log, "t", 0), ["both-a", "only-d0-c"]);
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
    let log = open_over(&dirs, &fault);
    assert!(log.recovery_report().diverged.is_empty());
    assert_eq!(values(&log, "t", 0), ["both-a", "only-d0-c"]);
    log.close().unwrap();
}

/// A forked history that created a topic: when the open keeps the other history, whose
/// `meta` does not place the topic, the topic's partition directory in the forked
/// directory is moved aside as `.diverged` with its records (it would have been removed as
/// a stray of a topic deleted while the directory was offline, or replaced by a topic
/// created again under its name).
#[test]
fn a_topic_created_in_a_forked_history_is_kept_on_disk() {
    let (_root, dirs, fault) = x_created_in_a_forked_history();
    let log = open_over(&dirs, &fault);
    assert!(log.topic("x").is_err(), "d0's history is kept");
    assert!(log.topic("y5").is_ok());
    // Moved aside, so that a topic `x` created in this history starts empty beside it.
    let x0 = dirs[1].join("x-0.diverged");
    assert!(log.recovery_report().diverged.contains(&x0));
    assert!(holds(&files_under(&x0), "x-record"), "{}", x0.display());
    let x = log
        .create_topic("x", TopicConfig::default().replication_factor(2))
        .unwrap();
    assert_eq!(x.partition(0).unwrap().log_end_offset(), 0);
    log.close().unwrap();
    let log = open_over(&dirs, &fault);
    assert!(holds(&files_under(&x0), "x-record"));
    log.close().unwrap();
}

/// A topic `x` that `d1` created while `d0` was offline, then five topics `d0` created
/// while `d1` was: both directories back, `d0`'s history is the one kept.
fn x_created_in_a_forked_history() -> (tempfile::TempDir, Vec<PathBuf>, FaultStorage) {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let fault = FaultStorage::new(OsStorage::shared());
    {
        let log = open_over(&dirs, &fault);
        let shared = log
            .create_topic("shared", TopicConfig::default().replication_factor(2))
            .unwrap();
        fault.fail_dir(&dirs[0], FaultKind::Eio);
        shared.partition(0).unwrap().append_values(["s"]).unwrap();
        // Placed on d1, the only directory online.
        let x = log.create_topic("x", TopicConfig::default()).unwrap();
        x.partition(0).unwrap().append_values(["x-record"]).unwrap();
        assert!(!log.dir_status()[0].online);
        let _ = log.close();
    }
    fault.heal_dir(&dirs[0]);
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    {
        let log = open_over(&dirs, &fault);
        // More `meta` writes than d1's history made: d0's `meta` is chosen at the next open.
        for name in ["y1", "y2", "y3", "y4", "y5"] {
            log.create_topic(name, TopicConfig::default()).unwrap();
        }
        let _ = log.close();
    }
    fault.heal_dir(&dirs[1]);
    (root, dirs, fault)
}

/// As above, with a symbolic link inside the other history's `x-0`: that directory cannot
/// be listed, so it is neither passed over (a topic `x` created later would replace it) nor
/// followed. `d1` goes offline with an error naming the link; `x-0` stays as it was.
#[test]
fn a_forked_partition_holding_a_symbolic_link_is_not_passed_over() {
    let (_root, dirs, fault) = x_created_in_a_forked_history();
    let outside = common::scratch("tarnlog-outside-");
    let link = dirs[1].join("x-0/notes");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let log = open_over(&dirs, &fault);
    assert!(!log.dir_status()[1].online, "{:?}", log.dir_status());
    assert!(log.recovery_report().diverged.is_empty());
    let x = log.create_topic("x", TopicConfig::default()).unwrap();
    x.partition(0).unwrap().append_values(["new-x"]).unwrap();
    log.close().unwrap();
    assert!(holds(&files_under(&dirs[1].join("x-0")), "x-record"));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// A forked directory that goes offline before the kept history writes its `meta` there
/// (here: its replica unreadable at the open that finds the fork) is still found forked at the next
/// open, and its replica set aside then: the `meta` written meanwhile keeps what the kept
/// history had offered it, not what the directory holds.
#[test]
fn a_forked_directory_offline_at_the_open_stays_forked() {
    let (_root, dirs, fault) = d1_ran_alone();
    {
        let log = open_over(&dirs, &fault);
        log.topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .append_values(["only-d0-c"])
            .unwrap();
        // More `meta` writes than d1's history made: d0's is chosen from now on.
        for name in ["u1", "u2", "u3", "u4", "u5"] {
            log.create_topic(name, TopicConfig::default()).unwrap();
        }
        let _ = log.close();
    }
    fault.heal_dir(&dirs[1]);
    // d1's `meta` reads (the open finds it forked); its replica does not, which takes d1
    // offline before anything is written there.
    let replica = dirs[1].join("t-0");
    fault.fail_dir(&replica, FaultKind::Eio);
    {
        let log = open_over(&dirs, &fault);
        assert!(!log.dir_status()[1].online);
        assert_eq!(values(&log, "t", 0), ["both-a", "only-d0-c"]);
        log.close().unwrap();
    }
    fault.heal_dir(&replica);
    let log = open_over(&dirs, &fault);
    let report = log.recovery_report();
    assert_eq!(report.diverged.len(), 1, "{report:?}");
    assert!(holds(&files_under(&report.diverged[0]), "only-d1-b"));
    assert_eq!(values(&log, "t", 0), ["both-a", "only-d0-c"]);
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// Not a fork: a crash cut short a `meta` write that d0 completed and d1 (hung) did not;
/// the next run, opened without d0, wrote d1's `meta` and acknowledged a record there
/// alone. d1 ran on from where d0 stopped: when both are back the open goes by d1's
/// `meta`, sets nothing aside, and keeps every record.
#[test]
fn a_directory_that_ran_on_after_a_crash_is_not_taken_for_forked() {
    use std::time::Duration;
    let (_root, dirs, fault, log) = two_dirs_with_topic_t(100);
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(1);
    let r = log.create_topic("r", config).unwrap().partition(0).unwrap();
    r.append_values(["a"]).unwrap();
    // Hung until healed: the next `meta` reaches d0 only.
    fault.slow_dir(&dirs[1], Duration::from_secs(3600));
    let altered = log.topic("t").unwrap().config().retention_ms(4242);
    log.alter_topic_config("t", altered).unwrap();
    log.simulate_crash();
    fault.heal_dir(&dirs[1]);
    // The stuck write ends without writing (see the test above).
    std::thread::sleep(Duration::from_millis(500));
    fault.fail_dir(&dirs[0], FaultKind::Eio);
    {
        let log = open_over(&dirs, &fault);
        let r = log.topic("r").unwrap().partition(0).unwrap();
        r.append_values(["b"]).unwrap();
        let _ = log.close();
    }
    fault.heal_dir(&dirs[0]);
    let log = open_over(&dirs, &fault);
    let report = log.recovery_report();
    assert!(report.diverged.is_empty(), "{report:?}");
    assert_eq!(values(&log, "r", 0), ["a", "b"]);
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "r", 1);
}

/// The forked history moved its log start (`delete_records`) past the kept history's end:
/// the replica rebuilt in its place starts from the kept leader's log start, not the other
/// history's, and no open raises the kept log start to it.
#[test]
fn a_forked_log_start_does_not_move_the_kept_history() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let fault = FaultStorage::new(OsStorage::shared());
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(1);
    {
        let log = open_over(&dirs, &fault);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        partition.append_values(["a"]).unwrap();
        fault.fail_dir(&dirs[0], FaultKind::Eio);
        for i in 1..10 {
            partition.append_values([format!("b{i}")]).unwrap();
        }
        assert_eq!(partition.delete_records(8).unwrap(), 8);
        let _ = log.close();
    }
    fault.heal_dir(&dirs[0]);
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    {
        let log = open_over(&dirs, &fault);
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        // Past the other history's log start: a replica started there would copy from it.
        for i in 1..13 {
            partition.append_values([format!("c{i}")]).unwrap();
        }
        // More `meta` writes than d1's history made: d0's is kept.
        for name in ["u1", "u2", "u3", "u4", "u5"] {
            log.create_topic(name, TopicConfig::default()).unwrap();
        }
        let _ = log.close();
    }
    fault.heal_dir(&dirs[1]);
    let kept: Vec<String> = std::iter::once("a".to_owned())
        .chain((1..13).map(|i| format!("c{i}")))
        .collect();
    for reopen in 0..2 {
        let log = open_over(&dirs, &fault);
        assert_eq!(log.recovery_report().diverged.len(), 1 - reopen);
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(partition.log_start_offset(), 0, "reopen {reopen}");
        assert_eq!(values(&log, "t", 0), kept, "reopen {reopen}");
        assert_fully_replicated(&log);
        log.close().unwrap();
    }
    assert_replicas_identical(&dirs, "t", 1);
}

/// A directory replaced by an empty one while it held the only in-sync replica: its
/// recreated replica is marked as one to rebuild, durably, so that it never leads with
/// nothing — not at the first open, nor at any later one — and never cuts the out-of-sync
/// peer that still holds the older records (an unclean election can still take them).
/// A third directory holds `meta` with the in-sync set as it shrank.
#[test]
fn a_replaced_directory_never_leads_empty_at_a_later_open() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let config = TopicConfig::default().replication_factor(2);
    let (log, fault) = common::faulty_log(&dirs);
    let partition = log
        .create_topic("t", config.clone())
        .unwrap()
        .partition(0)
        .unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    let leader = described.leader.unwrap();
    let follower = *described.replicas.iter().find(|&&d| d != leader).unwrap();
    fault.fail_dir(&dirs[follower], FaultKind::NoSpace);
    partition.append_values(["c"]).unwrap();
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].isr, [leader]);
    log.close().unwrap();
    // The leader's disk is replaced by an empty one.
    std::fs::remove_dir_all(&dirs[leader]).unwrap();
    std::fs::create_dir_all(&dirs[leader]).unwrap();
    // The follower's records, without the preallocated zeros a clean close trims.
    let held = || {
        let mut files = segments(std::slice::from_ref(&dirs[follower]), "t", 0).remove(0);
        for bytes in files.values_mut() {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            bytes.truncate(end);
        }
        files
    };
    let kept = held();
    assert!(!kept.is_empty());
    for open in 0..3 {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let described = log.describe_topic("t").unwrap().partitions[0].clone();
        assert_eq!(described.leader, None, "open {open}: {described:?}");
        log.close().unwrap();
        assert!(
            held() == kept,
            "open {open}: the follower's records changed"
        );
    }
    let log = Log::builder().dirs(&dirs).open().unwrap();
    log.alter_topic_config("t", config.unclean_leader_election(true))
        .unwrap();
    log.close().unwrap();
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(follower), "{described:?}");
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    log.close().unwrap();
}

/// Two directories under a fresh root (kept while the guard lives), with a log over them
/// whose storage can fail directory by directory.
fn two_faulty_dirs() -> (tempfile::TempDir, Vec<PathBuf>, Log, FaultStorage) {
    faulty_dirs(2)
}

/// A log over `n` directories under a scratch root, through a fault-injecting storage.
fn faulty_dirs(n: usize) -> (tempfile::TempDir, Vec<PathBuf>, Log, FaultStorage) {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), n);
    let (log, fault) = common::faulty_log(&dirs);
    (root, dirs, log, fault)
}

/// The directories of the leader and the follower of partition 0 of `topic` (replication
/// factor 2 over two directories).
/// Partition 0 of a new topic `t` (of two replicas) with `values` appended one batch each,
/// and its follower's directory.
fn topic_t_and_its_follower(
    log: &Log,
    config: TopicConfig,
    values: &[&str],
) -> (tarnlog::Partition, usize) {
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for value in values {
        partition.append_values([value]).unwrap();
    }
    let (_, follower) = leader_and_follower(log, "t");
    (partition, follower)
}

fn leader_and_follower(log: &Log, topic: &str) -> (usize, usize) {
    let leader = log.describe_topic(topic).unwrap().partitions[0]
        .leader
        .unwrap();
    (leader, 1 - leader)
}

/// Topic `t` (replication factor 2, unclean election allowed) over two faulty
/// directories: `a b` in sync, then the follower's directory failed, `x` appended and
/// `delete_records(3)` on the leader alone, the leader's directory failed and the follower
/// restored and elected uncleanly (empty at 2, with start 2). Returns the root, the
/// directories, the log, the fault seam, the partition and the old leader's and the
/// follower's directory indexes.
#[allow(clippy::type_complexity)]
fn unclean_lead_past_a_deletion(
    leader_only: &[&str],
) -> (
    tempfile::TempDir,
    Vec<PathBuf>,
    Log,
    FaultStorage,
    tarnlog::Partition,
    usize,
    usize,
) {
    let (root, dirs, log, fault) = two_faulty_dirs();
    let config = TopicConfig::default()
        .replication_factor(2)
        .unclean_leader_election(true);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let (leader, follower) = leader_and_follower(&log, "t");
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    partition
        .append_values(leader_only.iter().copied())
        .unwrap();
    assert_eq!(partition.delete_records(3).unwrap(), 3);
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    assert!(partition.append_values(["lost"]).is_err());
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    (root, dirs, log, fault, partition, leader, follower)
}

/// A log start raised by `delete_records` in a history that an unclean election then
/// superseded is not copied onto the new history at a later open: the old replica is
/// reconciled before its start counts, an empty one counts only if it was in sync, and an
/// empty follower catches up from the leader's log start (else, in sync with its own
/// higher start, it would count at the open after). `appended` are the new leader's
/// batches; `crash` ends the first reopen with a crash instead of a close (the lowered
/// start must be checkpointed before the follower counts as in sync).
fn superseded_log_start_case(leader_only: &[&str], appended: &[&[&str]], crash: bool) {
    let (_root, dirs, log, fault, partition, leader, follower) =
        unclean_lead_past_a_deletion(leader_only);
    assert_eq!(
        log.describe_topic("t").unwrap().partitions[0].leader,
        Some(follower),
        "unclean election"
    );
    for batch in appended {
        partition.append_values(batch.iter().copied()).unwrap();
    }
    let expected: Vec<&str> = appended.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(values(&log, "t", 0), expected);
    log.simulate_crash();
    fault.heal_dir(&dirs[leader]);
    for open in 0..3 {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        assert_eq!(values(&log, "t", 0), expected, "open {open}");
        if crash && open == 0 {
            log.simulate_crash();
        } else {
            log.close().unwrap();
        }
    }
}

/// A leader restored into its offline partition takes no log start from a replica out of
/// sync, whose history an unclean election superseded (a `delete_records` there): the
/// records it appended and acknowledged since stay.
#[test]
fn a_restored_leader_takes_no_log_start_from_a_superseded_history() {
    let (_root, dirs, log, fault, partition, _, follower) = unclean_lead_past_a_deletion(&["x"]);
    partition.append_values(["c"]).unwrap();
    partition.append_values(["d"]).unwrap();
    assert_eq!(values(&log, "t", 0), ["c", "d"]);
    // The new leader's directory fails in turn: offline, waiting for it; then it is back.
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    assert!(partition.append_values(["e"]).is_err());
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(follower), "{described:?}");
    assert_eq!(
        values(&log, "t", 0),
        ["c", "d"],
        "acknowledged records kept"
    );
    assert_eq!(partition.log_start_offset(), 2);
}

/// Turning unclean election on for a partition whose in-sync replicas' data is gone
/// (their directories came back empty: replicas to rebuild, still the ones waited for)
/// elects the replica holding the most, not an empty in-sync one: the data left survives.
#[test]
fn an_unclean_election_over_emptied_in_sync_replicas_picks_the_one_with_data() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let fault = FaultStorage::new(OsStorage::shared());
    let log = open_over(&dirs, &fault);
    let config = TopicConfig::default().replication_factor(3);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let keeper = log.describe_topic("t").unwrap().partitions[0]
        .replicas
        .iter()
        .copied()
        .find(|&d| Some(d) != log.describe_topic("t").unwrap().partitions[0].leader)
        .unwrap();
    // `keeper` leaves the in-sync set with `a b`; the others take `c`.
    fault.fail_dir(&dirs[keeper], FaultKind::Eio);
    partition.append_values(["c"]).unwrap();
    drop(partition);
    log.close().unwrap();
    fault.heal_dir(&dirs[keeper]);
    // The in-sync replicas' data is lost (their `meta` stays).
    for (d, dir) in dirs.iter().enumerate() {
        if d != keeper {
            std::fs::remove_dir_all(dir.join("t-0")).unwrap();
        }
    }
    let log = open_over(&dirs, &fault);
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, None, "{described:?}");
    let config = log
        .topic("t")
        .unwrap()
        .config()
        .unclean_leader_election(true);
    log.alter_topic_config("t", config).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(keeper), "{described:?}");
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    log.close().unwrap();
}

/// The old leader keeps `y` above its start of 3: the open cuts it to 2 (lowering its
/// start), and it joins the in-sync set; a crash right after that open must not find it
/// in sync with its old start at the next one (that start would delete `c`).
#[test]
fn a_follower_whose_start_the_open_lowered_is_checkpointed_before_it_counts() {
    superseded_log_start_case(&["x", "y"], &[&["c"], &["d"]], true);
    superseded_log_start_case(&["x", "y"], &[&["c", "d"]], true);
}

#[test]
fn a_log_start_from_a_superseded_history_deletes_nothing_new() {
    // One batch: the new leader's records start where the old one's start is.
    superseded_log_start_case(&["x"], &[&["c", "d"]], false);
}

#[test]
fn an_empty_replica_with_a_superseded_start_catches_up_from_the_leaders_start() {
    // One batch each: the old replica, empty at 3, would copy only "d".
    superseded_log_start_case(&["x"], &[&["c"], &["d"]], false);
    superseded_log_start_case(&["x"], &[&["c"], &["d"]], true);
}

#[test]
fn an_empty_replica_at_the_leaders_end_with_a_superseded_start_is_not_level() {
    // The old replica is empty at 3, which is the new leader's end.
    superseded_log_start_case(&["x"], &[&["c"]], false);
    superseded_log_start_case(&["x"], &[&["c"]], true);
}

/// The last in-sync replica's directory failed at an fsync: after `restore_dir` it leads
/// again (there is no better copy anywhere; a reopen would lead from it too), instead of
/// being distrusted as a replica to rebuild while no leader exists to rebuild it from.
#[test]
fn a_directory_restored_after_a_failed_fsync_leads_when_no_one_else_can() {
    let (_root, dirs, log, fault, leader, _) = follower_failed(FaultKind::NoSpace);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    // One more append shows where its fsync falls among its storage calls.
    let before = fault.ops();
    partition.append_values(["c"]).unwrap();
    let sync_at = fault
        .op_log()
        .iter()
        .find(|&&(n, kind)| n > before && kind == OpKind::Sync)
        .map(|&(n, _)| n - before)
        .unwrap();
    fault.fail_at(fault.ops() + sync_at, FaultKind::Eio, true);
    assert!(partition.append_values(["d"]).is_err());
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, None, "{described:?}");
    assert_eq!(described.isr, [leader], "the replica waited for");
    assert!(!lost_segment_bytes(&fault).is_empty(), "\"d\" was written");
    fault.heal();
    log.restore_dir(&dirs[leader]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(leader), "{described:?}");
    // "d", whose fsync failed, may be there (what the page cache holds): then it was
    // written again, so that the next sync writes it.
    let read = values(&log, "t", 0);
    assert_eq!(read[..3], ["a", "b", "c"], "{read:?}");
    assert_eq!(lost_segment_bytes(&fault), [], "read {read:?}");
    partition.append_values(["e"]).unwrap();
    log.close().unwrap();
    assert!(!dirs[leader].join("sync-failed").exists());
}

/// A directory whose fsync failed in an earlier run of this process (its page cache lives
/// on) and which was offline when the log opened again still holds the `sync-failed`
/// marker: `restore_dir` distrusts it as it distrusts a directory whose fsync failed in
/// this run. Its replica of a partition led elsewhere is set aside and rebuilt from the
/// leader, not read back from what may be the page cache alone.
#[test]
fn a_directory_restored_with_an_earlier_runs_failed_fsync_is_rebuilt() {
    let (_root, dirs, log, fault, _, follower) = follower_failed(FaultKind::FailedWriteback);
    log.simulate_crash();
    assert!(dirs[follower].join("sync-failed").exists());
    // The next open finds the follower's directory unusable: it stays offline, and so does
    // its marker.
    fault.heal_dir(&dirs[follower]);
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    let log = open_over(&dirs, &fault);
    assert!(!log.dir_status()[follower].online);
    partition_append(&log, "c");
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    rebuilt_after_restore(log, &dirs[follower]);
    assert!(!dirs[follower].join("sync-failed").exists());
    assert_replicas_identical(&dirs, "t", 1);
}

/// A directory whose queued `meta` write is still stuck in an fsync when `restore_dir`
/// stops waiting for it (after `replica_lag_time_max_ms`) is distrusted: that fsync may
/// fail yet, so its replica of a partition led elsewhere is set aside and rebuilt.
#[test]
fn a_directory_restored_with_an_fsync_still_stuck_is_rebuilt() {
    use std::time::Duration;
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 50);
    let config = TopicConfig::default().replication_factor(2);
    let (partition, follower) = topic_t_and_its_follower(&log, config, &["a"]);
    // Where an append's last write falls among its storage calls: the follower's copy.
    let before = fault.ops();
    partition.append_values(["b"]).unwrap();
    let write_at = fault
        .op_log()
        .iter()
        .rfind(|&&(n, kind)| n > before && kind == OpKind::Write)
        .map(|&(n, _)| n - before)
        .unwrap();
    // Syncs there hang until healed: the `meta` write this change queues is stuck.
    fault.slow_dir(&dirs[follower], Duration::from_secs(3600));
    let config = log.topic("t").unwrap().config().retention_ms(4242);
    log.alter_topic_config("t", config).unwrap();
    fault.fail_at(fault.ops() + write_at, FaultKind::Eio, false);
    partition.append_values(["c"]).unwrap();
    assert!(
        !log.dir_status()[follower].online,
        "the follower's write failed"
    );
    // The disk recovers well after `restore_dir` stopped waiting for the stuck write (and
    // its own syncs there wait for that too).
    let healer = {
        let (fault, dir) = (fault.clone(), dirs[follower].clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            fault.heal_dir(dir);
        })
    };
    log.restore_dir(&dirs[follower]).unwrap();
    healer.join().unwrap();
    rebuilt_after_restore(log, &dirs[follower]);
    assert_replicas_identical(&dirs, "t", 1);
}

/// After a `restore_dir` of `restored` that distrusted it: its copy of `t-0` was set aside,
/// not read back, and rebuilt from the leader with "a", "b" and "c". Closes the log.
fn rebuilt_after_restore(log: Log, restored: &Path) {
    let aside: Vec<String> = std::fs::read_dir(restored)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("t-0."))
        .collect();
    assert_eq!(aside, ["t-0.damaged"], "set aside, not read back");
    assert_fully_replicated(&log);
    assert_eq!(values(&log, "t", 0), ["a", "b", "c"]);
    log.close().unwrap();
}

/// Topic `t` (replication factor 2, `EveryBatch`) over two faulty directories: "a"
/// appended to both, then the follower's directory failed with `kind` and "b" appended
/// with the leader alone in sync. Returns the directories' indexes too, leader first.
fn follower_failed(
    kind: FaultKind,
) -> (
    tempfile::TempDir,
    Vec<PathBuf>,
    Log,
    FaultStorage,
    usize,
    usize,
) {
    let (root, dirs, log, fault) = two_faulty_dirs();
    let config = TopicConfig::default()
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let (leader, follower) = leader_and_follower(&log, "t");
    fault.fail_dir(&dirs[follower], kind);
    partition.append_values(["b"]).unwrap();
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].isr, [leader]);
    (root, dirs, log, fault, leader, follower)
}

fn partition_append(log: &Log, value: &str) {
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values([value]).unwrap();
}

/// The bytes of segment files that a failed fsync left in the page cache alone (see
/// [`FaultStorage::lost_writes`]).
fn lost_segment_bytes(fault: &FaultStorage) -> Vec<(PathBuf, u64, u64)> {
    let mut lost = fault.lost_writes();
    lost.retain(|(path, _, _)| path.extension().is_some_and(|x| x == "log"));
    lost
}

/// A log over one directory whose disk fails writeback is opened again by the same
/// process (its page cache lives on): the records that read back are written again and
/// synced before any is acknowledged from them, whatever the fsync policy, in every
/// partition and segment.
#[test]
fn a_log_reopened_after_a_failed_fsync_writes_what_it_reads_again() {
    for fsync in [tarnlog::FsyncPolicy::EveryBatch, tarnlog::FsyncPolicy::None] {
        let (_root, dirs, log, fault) = faulty_dirs(1);
        // Small segments: under `None` the sealed ones are unsynced too.
        let config = TopicConfig::default()
            .partitions(2)
            .segment_bytes(200)
            .fsync(fsync);
        let topic = log.create_topic("t", config).unwrap();
        let expected: Vec<String> = (0..6).map(|i| format!("record-{i}")).collect();
        for p in 0..2 {
            let partition = topic.partition(p).unwrap();
            for value in &expected[..5] {
                partition.append_values([value]).unwrap();
            }
        }
        // Writes still reach the page cache; every sync fails.
        fault.fail_dir(&dirs[0], FaultKind::FailedWriteback);
        for p in 0..2 {
            let partition = topic.partition(p).unwrap();
            for value in &expected[5..6] {
                let appended = partition.append_values([value]);
                assert_eq!(appended.is_ok(), fsync == tarnlog::FsyncPolicy::None);
            }
        }
        assert!(log.flush().is_err(), "{fsync:?}");
        let lost = lost_segment_bytes(&fault);
        // Under `EveryBatch` the first failed sync (t-0's) stops every later write.
        let last_partition = if fsync == tarnlog::FsyncPolicy::None {
            "t-1"
        } else {
            "t-0"
        };
        assert!(
            lost.iter()
                .any(|(p, _, _)| p.starts_with(dirs[0].join(last_partition))),
            "{fsync:?} {lost:?}"
        );
        if fsync == tarnlog::FsyncPolicy::None {
            let files: std::collections::BTreeSet<_> = lost.iter().map(|l| &l.0).collect();
            assert!(
                files.len() > 2,
                "sealed segments are unsynced too: {lost:?}"
            );
        }
        log.simulate_crash();
        fault.heal_dir(&dirs[0]);
        assert!(dirs[0].join("sync-failed").exists());
        let log = Log::builder()
            .dirs(&dirs)
            .storage(fault.shared())
            .open()
            .unwrap();
        for p in 0..2 {
            let read = values(&log, "t", p);
            assert_eq!(read[..5], expected[..5], "{fsync:?}");
        }
        assert_eq!(lost_segment_bytes(&fault), [], "{fsync:?}");
        assert!(!dirs[0].join("sync-failed").exists(), "{fsync:?}");
        assert!(dirs[0].join("sync-ok").exists(), "{fsync:?}");
        log.close().unwrap();
    }
}

/// Records that become visible without an append (a restored follower lets the high
/// watermark past them, under `min_insync_replicas = 2`) wake a consumer waiting in
/// `poll` then, not at its timeout.
#[test]
fn a_high_watermark_moved_by_a_restore_wakes_a_waiting_consumer() {
    let (_root, dirs, log, fault) = two_faulty_dirs();
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(2);
    log.create_topic("t", config).unwrap();
    let (_, follower) = leader_and_follower(&log, "t");
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    producer
        .send(ProducerRecord::new("t").value("held"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        log.describe_topic("t").unwrap().partitions[0].high_watermark,
        0
    );
    let mut consumer = log
        .consumer(
            tarnlog::ConsumerConfig::default()
                .auto_offset_reset(tarnlog::AutoOffsetReset::Earliest),
        )
        .unwrap();
    consumer
        .assign([tarnlog::TopicPartition::new("t", 0)])
        .unwrap();
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let records = consumer.poll(std::time::Duration::from_secs(30)).unwrap();
        (records.into_iter().count(), started.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let (count, waited) = waiting.join().unwrap();
    assert_eq!(count, 1);
    assert!(
        waited < std::time::Duration::from_secs(10),
        "woken at the restore, not the timeout: {waited:?}"
    );
    producer.close().unwrap();
    log.close().unwrap();
}

/// A follower whose directory failed through another partition still counted as in sync
/// until its own partition's next copy: an `acks=All` append under `min_insync_replicas = 2`
/// passed the check, was written to the leader, then failed with its batch in the log (a
/// retry would duplicate it). It is refused before anything is written now.
#[test]
fn a_follower_failed_through_another_partition_is_not_counted_in_sync() {
    let (_root, dirs, log, fault) = two_faulty_dirs();
    let strict = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(2);
    let t = log.create_topic("t", strict).unwrap().partition(0).unwrap();
    let u = log
        .create_topic("u", TopicConfig::default().replication_factor(2))
        .unwrap()
        .partition(0)
        .unwrap();
    t.append_values(["a"]).unwrap();
    u.append_values(["a"]).unwrap();
    let (leader, other) = leader_and_follower(&log, "t");
    fault.fail_dir(&dirs[other], FaultKind::Eio);
    // The directory fails through u (a copy, or u's leader there failing over).
    let _ = u.append_values(["b"]);
    assert!(!log.dir_status()[other].online);
    let end = t.log_end_offset();
    let error = t.append_values(["b"]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotEnoughReplicas {
                in_sync: 1,
                required: 2
            }
        ),
        "{error}"
    );
    assert_eq!(t.log_end_offset(), end, "nothing written");
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].isr, [leader]);
}

/// Lowering `min_insync_replicas` lets the high watermark past records held back under the
/// old value at once, not at the next append.
#[test]
fn a_lowered_min_insync_replicas_shows_held_records_at_once() {
    let (_root, dirs, log, fault) = two_faulty_dirs();
    let strict = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(2);
    log.create_topic("t", strict.clone()).unwrap();
    let (_, follower) = leader_and_follower(&log, "t");
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    for value in ["a", "b"] {
        producer
            .send(ProducerRecord::new("t").value(value))
            .unwrap()
            .wait()
            .unwrap();
    }
    let high = || log.describe_topic("t").unwrap().partitions[0].high_watermark;
    assert_eq!(high(), 0, "held under min_insync_replicas = 2");
    log.alter_topic_config("t", strict.min_insync_replicas(1))
        .unwrap();
    assert_eq!(high(), 2);
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    producer.close().unwrap();
}

/// A partition (replication factor 2, unclean election allowed) whose leader holds
/// records its follower lacks, for the consumer's truncation detection (KIP-320).
struct UncleanCut {
    _root: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    log: Log,
    fault: FaultStorage,
    partition: tarnlog::Partition,
    leader: usize,
    follower: usize,
}

impl UncleanCut {
    /// `in_sync` reach both replicas, then the follower's directory fails and
    /// `leader_only` reach the leader alone; one batch per value.
    fn new(in_sync: &[&str], leader_only: &[&str]) -> UncleanCut {
        let (root, dirs, log, fault) = two_faulty_dirs();
        let topic = TopicConfig::default()
            .replication_factor(2)
            .unclean_leader_election(true);
        let partition = log.create_topic("t", topic).unwrap().partition(0).unwrap();
        for value in in_sync {
            partition.append_values([value]).unwrap();
        }
        let (leader, follower) = leader_and_follower(&log, "t");
        fault.fail_dir(&dirs[follower], FaultKind::Eio);
        for value in leader_only {
            partition.append_values([value]).unwrap();
        }
        UncleanCut {
            _root: root,
            dirs,
            log,
            fault,
            partition,
            leader,
            follower,
        }
    }

    /// The leader's directory fails and the follower's comes back: elected uncleanly, it
    /// takes `appended` where the leader-only records were.
    fn elect_the_follower(&self, appended: &[&str]) {
        self.fault.fail_dir(&self.dirs[self.leader], FaultKind::Eio);
        assert!(self.partition.append_values(["lost"]).is_err());
        self.fault.heal_dir(&self.dirs[self.follower]);
        self.log.restore_dir(&self.dirs[self.follower]).unwrap();
        assert_eq!(
            self.log.describe_topic("t").unwrap().partitions[0].leader,
            Some(self.follower),
            "unclean election"
        );
        self.partition
            .append_values(appended.iter().copied())
            .unwrap();
    }
}

/// Kafka's position validation (KIP-320), ported from the consumer's truncation-detection
/// scenarios: a consumer reads `a b c d` from a leader whose follower had only `a b`; the
/// leader's directory fails and the follower, elected uncleanly, takes `x y z` at offsets
/// 2–4. Returns the partition and the consumer built by `config` (its position at 4, past
/// the cut).
fn consumer_past_an_unclean_cut(
    config: tarnlog::ConsumerConfig,
) -> (UncleanCut, tarnlog::Consumer) {
    let cut = UncleanCut::new(&["a", "b"], &["c", "d"]);
    let mut consumer = cut.log.consumer(config).unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    consumer.assign([tp.clone()]).unwrap();
    consumer.seek(&tp, 0).unwrap();
    assert_eq!(poll_values(&mut consumer, 4), ["a", "b", "c", "d"]);
    assert_eq!(consumer.position(&tp).unwrap(), 4);
    cut.elect_the_follower(&["x", "y", "z"]);
    assert_eq!(values(&cut.log, "t", 0), ["a", "b", "x", "y", "z"]);
    (cut, consumer)
}

/// Polls until `n` values came (or 10 s passed).
fn poll_values(consumer: &mut tarnlog::Consumer, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n && std::time::Instant::now() < deadline {
        let records = consumer
            .poll(std::time::Duration::from_millis(100))
            .unwrap();
        out.extend(
            records
                .into_iter()
                .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
        );
    }
    out
}

#[test]
fn a_consumer_past_an_unclean_cut_goes_back_to_where_the_histories_diverge() {
    for policy in [
        tarnlog::AutoOffsetReset::Earliest,
        tarnlog::AutoOffsetReset::Latest,
    ] {
        let config = tarnlog::ConsumerConfig::default().auto_offset_reset(policy);
        let (cut, mut consumer) = consumer_past_an_unclean_cut(config);
        // Without the check the consumer would read on at 4: `z` only.
        assert_eq!(poll_values(&mut consumer, 3), ["x", "y", "z"], "{policy:?}");
        drop(consumer);
        cut.log.close().unwrap();
    }
}

#[test]
fn a_truncated_position_fails_with_log_truncation_until_the_consumer_seeks() {
    let config =
        tarnlog::ConsumerConfig::default().auto_offset_reset(tarnlog::AutoOffsetReset::None);
    let (cut, mut consumer) = consumer_past_an_unclean_cut(config);
    let tp = tarnlog::TopicPartition::new("t", 0);
    for _ in 0..2 {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Err(Error::LogTruncation {
                topic,
                partition,
                offset,
                divergent_offset,
            }) => {
                assert_eq!((topic.as_str(), partition), ("t", 0));
                assert_eq!((offset, divergent_offset), (4, Some(2)));
            }
            other => panic!("{other:?}"),
        }
        // `position` validates too, as Kafka's does.
        assert!(matches!(
            consumer.position(&tp),
            Err(Error::LogTruncation { offset: 4, .. })
        ));
    }
    consumer.seek(&tp, 2).unwrap();
    assert_eq!(poll_values(&mut consumer, 3), ["x", "y", "z"]);
    drop(consumer);
    cut.log.close().unwrap();
}

/// A group's committed offset carries the leader epoch of the last record consumed, and a
/// member that resumes from it past an unclean cut goes back to the divergence too.
#[test]
fn a_committed_offset_past_an_unclean_cut_is_validated_when_a_member_resumes() {
    let config = tarnlog::ConsumerConfig::default()
        .group_id("g")
        .enable_auto_commit(false)
        .auto_offset_reset(tarnlog::AutoOffsetReset::Earliest);
    let cut = UncleanCut::new(&["a", "b"], &["c", "d"]);
    let tp = tarnlog::TopicPartition::new("t", 0);
    let mut consumer = cut.log.consumer(config.clone()).unwrap();
    consumer.assign([tp.clone()]).unwrap();
    assert_eq!(poll_values(&mut consumer, 4), ["a", "b", "c", "d"]);
    consumer.commit_sync().unwrap();
    let committed = consumer.committed(&tp).unwrap().unwrap();
    assert_eq!(committed.offset, 4);
    let epoch = cut.log.describe_topic("t").unwrap().partitions[0].leader_epoch;
    assert_eq!(committed.leader_epoch, Some(epoch));
    consumer.close().unwrap();
    cut.elect_the_follower(&["x", "y", "z"]);
    let mut resumed = cut.log.consumer(config).unwrap();
    resumed.assign([tp.clone()]).unwrap();
    assert_eq!(poll_values(&mut resumed, 3), ["x", "y", "z"]);
    resumed.close().unwrap();
    cut.log.close().unwrap();
}

/// Batches fetched from the old leader and not yet returned are dropped when the leader
/// changes, even when the position itself survived the cut: here `d` (fetched with `a b c`,
/// held back by `max_poll_records`) was cut, and `x` took its offset.
#[test]
fn batches_fetched_before_an_unclean_cut_are_not_returned_after_it() {
    let cut = UncleanCut::new(&["a", "b", "c"], &["d"]);
    let config = tarnlog::ConsumerConfig::default()
        .max_poll_records(3)
        .auto_offset_reset(tarnlog::AutoOffsetReset::Earliest);
    let mut consumer = cut.log.consumer(config).unwrap();
    consumer
        .assign([tarnlog::TopicPartition::new("t", 0)])
        .unwrap();
    assert_eq!(poll_values(&mut consumer, 3), ["a", "b", "c"]);
    cut.elect_the_follower(&["x"]);
    assert_eq!(values(&cut.log, "t", 0), ["a", "b", "c", "x"]);
    assert_eq!(poll_values(&mut consumer, 1), ["x"]);
    drop(consumer);
    cut.log.close().unwrap();
}

/// A clean failover (the new leader was in sync) moves the leader epoch but cuts nothing:
/// the position is validated and stays, under every policy (`None` would fail on a false
/// truncation).
#[test]
fn a_clean_failover_keeps_the_consumers_position() {
    let (_root, dirs, log, fault) = two_faulty_dirs();
    let partition = log
        .create_topic("t", TopicConfig::default().replication_factor(2))
        .unwrap()
        .partition(0)
        .unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    let config =
        tarnlog::ConsumerConfig::default().auto_offset_reset(tarnlog::AutoOffsetReset::None);
    let mut consumer = log.consumer(config).unwrap();
    consumer.assign([tp.clone()]).unwrap();
    consumer.seek(&tp, 0).unwrap();
    assert_eq!(poll_values(&mut consumer, 2), ["a", "b"]);
    let before = log.describe_topic("t").unwrap().partitions[0].clone();
    let (leader, _) = leader_and_follower(&log, "t");
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    partition.append_values(["c"]).unwrap();
    let after = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_ne!(after.leader, before.leader);
    assert!(after.leader_epoch > before.leader_epoch);
    assert_eq!(consumer.position(&tp).unwrap(), 2);
    assert_eq!(poll_values(&mut consumer, 1), ["c"]);
    drop(consumer);
    log.close().unwrap();
}

/// A follower whose whole log lies below its leader's log start restarts empty at the
/// leader's start when restored: a kill at any storage call of that restore (every call
/// fails from that one on, then the process is dropped as `kill -9` would) leaves a
/// follower the next open takes as it is, never one it finds ending below its recovery
/// point and sets aside as damaged. (Its segments are deleted newest first, so a kill
/// midway leaves a prefix of them: the recovery floor goes down to the lowest base.)
#[test]
fn a_kill_at_any_point_of_a_followers_restart_leaves_a_log_that_opens() {
    for at in 1.. {
        let (_root, dirs, log, fault) = two_faulty_dirs();
        let config = TopicConfig::default()
            .replication_factor(2)
            .segment_bytes(512);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        let (leader, follower) = leader_and_follower(&log, "t");
        let written: Vec<String> = (0..30)
            .map(|i| format!("{i:02}-{}", "v".repeat(40)))
            .collect();
        for value in &written[..20] {
            partition.append_values([value]).unwrap();
        }
        log.flush().unwrap();
        fault.fail_dir(&dirs[follower], FaultKind::Eio);
        for value in &written[20..] {
            partition.append_values([value]).unwrap();
        }
        assert_eq!(partition.delete_records(25).unwrap(), 25);
        fault.heal_dir(&dirs[follower]);
        let start = fault.ops();
        fault.fail_at(start + at, FaultKind::Eio, true);
        let restored = log.restore_dir(&dirs[follower]);
        // Every call of the restore ran before the failing one.
        let finished = fault.ops() < start + at;
        drop(partition);
        log.simulate_crash();
        fault.heal();
        let log = open_over(&dirs, &fault);
        let damaged: Vec<String> = std::fs::read_dir(&dirs[follower])
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("t-0."))
            .collect();
        assert_eq!(
            damaged,
            [] as [String; 0],
            "kill at call {at}: {restored:?}"
        );
        assert_eq!(values(&log, "t", 0)[..], written[25..], "kill at call {at}");
        assert!(log.dir_status()[leader].online);
        log.close().unwrap();
        if finished {
            assert!(restored.is_ok());
            // The restore did restart the follower: its segment at 0 is gone.
            let first = dirs[follower].join("t-0/00000000000000000000.log");
            assert!(!first.exists(), "the follower kept its old log");
            break;
        }
    }
}

/// `restore_dir` copies a replica it rebuilds from the leader one step (1 MiB) at a time and
/// hands the partition's order lock to appends between steps: an append made while a
/// large replica is rebuilt on a slow disk goes in then, instead of waiting for the whole
/// copy (before, it did: the copy held the lock throughout). The replica still ends in
/// sync and byte-identical.
#[test]
fn appends_go_on_while_restore_dir_rebuilds_a_replica() {
    let root = common::scratch("tarnlog-failover-");
    let (dirs, log, fault, partition, leader, follower) = far_behind_follower(root.path());
    fault.heal_dir(&dirs[follower]);
    append_while_restoring(&dirs, log, &fault, &partition, leader, &dirs[follower]);
}

/// A log over two directories through a fault injector with topic `t` (two replicas, a
/// sync every batch) whose follower's directory failed before 32 MiB were appended: 32
/// steps of its catch-up. Returns the directories, the log, its fault injector, the
/// partition, and the leader's and follower's directory indexes.
fn far_behind_follower(
    root: &Path,
) -> (
    Vec<PathBuf>,
    Log,
    FaultStorage,
    tarnlog::Partition,
    usize,
    usize,
) {
    let dirs = dirs(root, 2);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let follower = 1 - leader;
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    let value = vec![b'v'; 256 << 10];
    for _ in 0..128 {
        partition.append_values([&value]).unwrap();
    }
    (dirs, log, fault, partition, leader, follower)
}

/// Restores `restored` while the follower's disk is slow (each step synced there), and
/// once it holds 4 MiB hangs its next sync: an append made then must go in (before the
/// copy ends), and the follower ends in sync with `leader` leading, byte-identical.
fn append_while_restoring(
    dirs: &[PathBuf],
    log: Log,
    fault: &FaultStorage,
    partition: &tarnlog::Partition,
    leader: usize,
    restored: &Path,
) {
    let follower = 1 - leader;
    fault.slow_dir(&dirs[follower], std::time::Duration::from_millis(100));
    let sizes = || {
        (
            replica_size(&log, "t", 0, leader),
            replica_size(&log, "t", 0, follower),
        )
    };
    std::thread::scope(|s| {
        let restore = s.spawn(|| log.restore_dir(restored));
        let _heal = HealOnDrop(fault, &dirs[follower]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while sizes().1 < 4 << 20 {
            assert!(std::time::Instant::now() < deadline, "no copy");
            assert!(!restore.is_finished(), "{:?}", sizes());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The next step's sync hangs until healed: the copy cannot end meanwhile.
        fault.slow_dir(&dirs[follower], std::time::Duration::from_secs(3600));
        let append = s.spawn(|| partition.append_values(["during"]));
        let waited = std::time::Instant::now();
        while !append.is_finished() && waited.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let went_in = append.is_finished();
        let sizes_then = went_in.then(sizes);
        fault.heal_dir(&dirs[follower]);
        append.join().unwrap().unwrap();
        restore.join().unwrap().unwrap();
        assert!(went_in, "the append waited for the whole copy");
        let (leader_size, follower_size) = sizes_then.unwrap();
        assert!(
            follower_size < leader_size,
            "{follower_size} of {leader_size} bytes"
        );
    });
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(described.leader, Some(leader));
    assert_eq!(described.isr.len(), 2);
    assert_eq!(values(&log, "t", 0).last().unwrap(), "during");
    log.close().unwrap();
    assert_replicas_identical(dirs, "t", 1);
}

/// Deletes topic `t` of a log over `dirs` while the `__consumer_offsets` partition holding
/// group `g`'s commit of `t-0` (offset 3) is offline (its one replica is in directory 0,
/// failed): the tombstones of the offsets cannot be written. Returns the log, with
/// directory 0 still failed.
fn delete_while_offsets_offline(dirs: &[PathBuf]) -> (Log, FaultStorage) {
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(dirs)
        .storage(fault.shared())
        .offsets_topic_replication_factor(1)
        .open()
        .unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    let config = TopicConfig::default().replication_factor(2);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b", "c"]).unwrap();
    // The offsets topic, of one replica, is created while directory 1 is offline: its
    // replica is in 0.
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    partition.append_values(["d"]).unwrap();
    assert!(!log.dir_status()[1].online);
    log.commit_offsets("g", &[(tp.clone(), tarnlog::OffsetAndMetadata::new(3))])
        .unwrap();
    fault.heal_dir(&dirs[1]);
    log.restore_dir(&dirs[1]).unwrap();
    fault.fail_dir(&dirs[0], FaultKind::Eio);
    partition.append_values(["e"]).unwrap();
    assert!(!log.dir_status()[0].online);
    // The topic goes; its offsets' tombstones cannot be written.
    let error = log.delete_topic("t").unwrap_err();
    assert!(matches!(error, Error::PartitionOffline { .. }), "{error}");
    assert!(log.topic("t").is_err());
    assert_eq!(log.committed_offset("g", &tp).unwrap(), None);
    assert_create_refused(&log);
    (log, fault)
}

fn assert_create_refused(log: &Log) {
    match log.create_topic("t", TopicConfig::default()) {
        Err(Error::PartitionOffline { topic, .. }) if topic == "__consumer_offsets" => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("created while the old offsets' tombstones are owed"),
    }
    assert!(log.topic("t").is_err());
}

/// A topic of the name created at last: the old offsets stay gone across a reopen.
fn assert_created_afresh(log: Log, dirs: &[PathBuf]) {
    let tp = tarnlog::TopicPartition::new("t", 0);
    let partition = log
        .create_topic("t", TopicConfig::default())
        .unwrap()
        .partition(0)
        .unwrap();
    partition.append_values(["new"]).unwrap();
    assert_eq!(log.committed_offset("g", &tp).unwrap(), None);
    log.close().unwrap();
    let log = Log::builder().dirs(dirs).open().unwrap();
    assert_eq!(log.committed_offset("g", &tp).unwrap(), None);
    assert_eq!(values(&log, "t", 0), ["new"]);
    log.close().unwrap();
}

/// A topic deleted while the `__consumer_offsets` partition holding a group's commits is
/// offline: the tombstones of its offsets cannot be written, and the topic's name stays
/// "forgotten" in `meta`. A topic of the name cannot be created again until they are
/// written (else the old commits would come back for it at the next open); once the
/// offsets partition is back it can, and the old offsets stay gone across a reopen.
#[test]
fn a_deleted_topics_offsets_stay_gone_when_their_tombstones_wait_for_an_offline_partition() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault) = delete_while_offsets_offline(&dirs);
    fault.heal_dir(&dirs[0]);
    log.restore_dir(&dirs[0]).unwrap();
    // `maintain` writes the tombstones and frees the name (its `meta` line goes).
    let forgotten = |dir: &Path| {
        let meta = std::fs::read(dir.join("meta")).unwrap();
        meta.windows(12).any(|w| w == b"forgotten t\n")
    };
    assert!(dirs.iter().all(|d| forgotten(d)));
    log.maintain().unwrap();
    assert!(!dirs.iter().any(|d| forgotten(d)));
    assert_created_afresh(log, &dirs);
}

/// The same across reopens: reopened with the offsets partition still offline, the log
/// cannot know every committed offset of the deleted topic (the replay could not read that
/// partition), so a topic of the name is still refused; reopened with it back, the replay
/// writes the tombstones and the name is free.
#[test]
fn a_deleted_topics_name_stays_refused_across_a_reopen_with_its_offsets_offline() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, _fault) = delete_while_offsets_offline(&dirs);
    log.close().unwrap();
    let fault = FaultStorage::new(OsStorage::shared());
    fault.fail_dir(&dirs[0], FaultKind::Eio);
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .open()
        .unwrap();
    assert!(!log.dir_status()[0].online);
    assert_create_refused(&log);
    log.close().unwrap();
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_created_afresh(log, &dirs);
}

/// `__consumer_offsets` created by a first commit while one of two directories is offline
/// still gets a replica there (`offsets.topic.replication.factor` 3, capped at the two
/// directories), built when the directory is restored: the group's offsets then survive
/// the loss of the directory that was online at the commit.
#[test]
fn the_offsets_topic_gets_its_replicas_in_a_directory_offline_at_its_creation() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault, tp) = dir_1_offline_at_the_first_commit(&dirs);
    let commit = |offset| {
        log.commit_offsets(
            "g",
            &[(tp.clone(), tarnlog::OffsetAndMetadata::new(offset))],
        )
        .unwrap();
    };
    let offsets = log.describe_topic("__consumer_offsets").unwrap();
    for p in &offsets.partitions {
        assert_eq!(p.replicas.len(), 2, "{p:?}");
        assert_eq!((p.leader, p.isr.as_slice()), (Some(0), &[0][..]), "{p:?}");
        assert_eq!(p.offline_replicas, [1], "{p:?}");
    }
    fault.heal_dir(&dirs[1]);
    log.restore_dir(&dirs[1]).unwrap();
    let offsets = log.describe_topic("__consumer_offsets").unwrap();
    assert!(offsets.partitions.iter().all(|p| p.isr.len() == 2));
    commit(4);
    log.close().unwrap();
    assert_offset_survives_losing_dir_0(root.path(), &dirs, &tp, 4);
}

/// A log over `dirs` (two) through a fault injector, with topic `t` (two replicas) holding
/// three records, and directory 1 failed before group `g` commits offset 3 of `t-0` (which
/// creates `__consumer_offsets`). Returns the log, its fault injector and `t-0`.
fn dir_1_offline_at_the_first_commit(
    dirs: &[PathBuf],
) -> (Log, FaultStorage, tarnlog::TopicPartition) {
    let (log, fault) = common::faulty_log(dirs);
    let tp = tarnlog::TopicPartition::new("t", 0);
    let config = TopicConfig::default().replication_factor(2);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b", "c"]).unwrap();
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    let _ = partition.append_values(["d"]);
    assert!(!log.dir_status()[1].online);
    log.commit_offsets("g", &[(tp.clone(), tarnlog::OffsetAndMetadata::new(3))])
        .unwrap();
    (log, fault, tp)
}

/// Directory 0 of the (closed) log over `dirs` is lost and an empty one takes its place:
/// group `g`'s committed offset of `tp` is still `offset`.
fn assert_offset_survives_losing_dir_0(
    root: &Path,
    dirs: &[PathBuf],
    tp: &tarnlog::TopicPartition,
    offset: u64,
) {
    std::fs::rename(&dirs[0], root.join("lost")).unwrap();
    let log = Log::builder().dirs(dirs).open().unwrap();
    assert_eq!(
        log.committed_offset("g", tp).unwrap().map(|o| o.offset),
        Some(offset)
    );
    log.close().unwrap();
}

/// As above, with the offline directory back at a reopen instead of `restore_dir`: the
/// open builds its offsets replicas, and the offsets survive losing the other directory.
#[test]
fn the_offsets_replicas_of_a_directory_offline_at_creation_are_built_at_reopen() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault, tp) = dir_1_offline_at_the_first_commit(&dirs);
    log.close().unwrap();
    fault.heal_dir(&dirs[1]);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let offsets = log.describe_topic("__consumer_offsets").unwrap();
    assert!(
        offsets.partitions.iter().all(|p| p.isr.len() == 2),
        "{:?}",
        offsets.partitions[0]
    );
    log.close().unwrap();
    assert_offset_survives_losing_dir_0(root.path(), &dirs, &tp, 3);
}

/// With four directories, three of them offline at the first commit, every partition of
/// `__consumer_offsets` (three replicas each) gets a replica in the online one and leads
/// there; the commit succeeds.
#[test]
fn every_offsets_partition_leads_in_the_one_online_directory() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 4);
    let (log, fault) = common::faulty_log(&dirs);
    let tp = tarnlog::TopicPartition::new("t", 0);
    let config = TopicConfig::default().replication_factor(4);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    for (d, dir) in dirs.iter().enumerate().filter(|&(d, _)| d != leader) {
        fault.fail_dir(dir, FaultKind::Eio);
        let _ = partition.append_values(["b"]);
        assert!(!log.dir_status()[d].online);
    }
    log.commit_offsets("g", &[(tp.clone(), tarnlog::OffsetAndMetadata::new(1))])
        .unwrap();
    let offsets = log.describe_topic("__consumer_offsets").unwrap();
    for p in &offsets.partitions {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        assert_eq!(p.leader, Some(leader), "{p:?}");
        assert_eq!(p.offline_replicas.len(), 2, "{p:?}");
    }
    assert_eq!(
        log.committed_offset("g", &tp).unwrap().map(|o| o.offset),
        Some(1)
    );
}

/// A replica restored into an offline partition that it may lead (it was in sync) leads at
/// once, and the other replicas present follow it step by step, handing the partition's
/// order lock to appends between steps: an append goes in while a far-behind follower on
/// a slow disk catches up (before, the follower was copied whole under the lock).
#[test]
fn appends_go_on_while_followers_catch_up_with_a_restored_leader() {
    let root = common::scratch("tarnlog-failover-");
    let (dirs, log, fault, partition, leader, follower) = far_behind_follower(root.path());
    // The leader's directory fails too: the partition is offline. The follower returns
    // first; out of sync, it cannot lead.
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    let error = partition.append_values(["lost"]).unwrap_err();
    assert!(matches!(error, Error::PartitionOffline { .. }), "{error}");
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    assert!(partition.append_values(["lost"]).is_err());
    fault.heal_dir(&dirs[leader]);
    append_while_restoring(&dirs, log, &fault, &partition, leader, &dirs[leader]);
}

/// `restore_dir` gives every offline partition that the returning directory's replicas may
/// lead its leader before any follower catches up: while a far-behind follower of one
/// partition is copied on a slow disk, another partition the directory leads takes
/// appends already (before, it stayed offline until the first partition's copy ended).
#[test]
fn every_partition_leads_again_before_the_followers_catch_up() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .partitions(2)
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let topic = log.create_topic("t", config).unwrap();
    let partitions: Vec<_> = (0..2).map(|p| topic.partition(p).unwrap()).collect();
    let (leader, follower) = (0, 1);
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    // 16 MiB each that the follower misses: 16 steps each, each synced on a slow disk.
    let value = vec![b'v'; 256 << 10];
    for _ in 0..64 {
        for partition in &partitions {
            partition.append_values([&value]).unwrap();
        }
    }
    assert!(
        log.describe_topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.isr == [leader])
    );
    fault.fail_dir(&dirs[leader], FaultKind::Eio);
    for partition in &partitions {
        assert!(partition.append_values(["lost"]).is_err());
    }
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    fault.slow_dir(&dirs[follower], std::time::Duration::from_millis(100));
    fault.heal_dir(&dirs[leader]);
    let copied = |p: usize| replica_size(&log, "t", p, follower);
    std::thread::scope(|s| {
        let restore = s.spawn(|| log.restore_dir(&dirs[leader]));
        let _heal = HealOnDrop(&fault, &dirs[follower]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let first = loop {
            if let Some(p) = (0..2).find(|&p| copied(p) >= 2 << 20) {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "no catch-up");
            assert!(!restore.is_finished());
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let other = 1 - first;
        let described = log.describe_topic("t").unwrap().partitions[other].clone();
        assert_eq!(described.leader, Some(leader), "{described:?}");
        assert!(
            copied(other) < 2 << 20,
            "both copied at once: nothing tested"
        );
        // (Not with a hung sync, as the tests above: the append's step to the follower
        // writes its first batch of the new epoch, whose epoch checkpoint is synced.)
        partitions[other].append_values(["during"]).unwrap();
        assert!(
            !restore.is_finished(),
            "the copies ended first: nothing tested"
        );
        restore.join().unwrap().unwrap();
    });
    fault.heal_dir(&dirs[follower]);
    for p in log.describe_topic("t").unwrap().partitions {
        assert_eq!((p.leader, p.isr.len()), (Some(leader), 2), "{p:?}");
    }
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 2);
}

/// Asserts that the leader-epoch checkpoint of `t-0` in `dir` holds `text` (its body is
/// Kafka's text form, after a 20-byte frame header).
fn assert_epoch_checkpoint_holds(dir: &Path, text: &str) {
    let checkpoint = std::fs::read(dir.join("t-0/leader-epoch-checkpoint")).unwrap();
    assert!(
        checkpoint.windows(text.len()).any(|w| w == text.as_bytes()),
        "{}: {:?}",
        dir.display(),
        String::from_utf8_lossy(checkpoint.get(20..).unwrap_or_default())
    );
}

/// Appends `count` single-record batches to `partition` on a thread, each of which must
/// return within ten seconds (the follower in `hung` hangs every fsync meanwhile): appends
/// must not wait under the partition's order lock for a follower's disk.
fn appends_go_on_past_a_hung_follower(
    fault: &FaultStorage,
    hung: &Path,
    partition: &tarnlog::Partition,
    count: usize,
) {
    use std::time::{Duration, Instant};
    fault.slow_dir(hung, Duration::from_secs(3600));
    let _heal = HealOnDrop(fault, hung);
    std::thread::scope(|s| {
        let appends = s.spawn(|| {
            for i in 0..count {
                partition.append_values([format!("during-{i}")]).unwrap();
            }
        });
        let started = Instant::now();
        while !appends.is_finished() && started.elapsed() < Duration::from_secs(10 * count as u64) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = appends.is_finished();
        fault.heal_dir(hung);
        appends.join().unwrap();
        assert!(finished, "the appends waited for the hung follower");
    });
}

/// A follower's first batch of a new leader epoch (a reopen bumps it) does not fsync the
/// follower's leader-epoch checkpoint under the order lock: with the follower's disk hung,
/// appends go on. The checkpoint is written by the follower's next sync (here the close),
/// so the follower knows the new epoch at the next open.
#[test]
fn a_hung_follower_does_not_hold_up_the_first_appends_of_a_new_epoch() {
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 200);
    let config = TopicConfig::default().replication_factor(2);
    log.create_topic("t", config).unwrap();
    log.topic("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .append_values(["a"])
        .unwrap();
    log.close().unwrap();
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .replica_lag_time_max_ms(200)
        .open()
        .unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert!(described.leader_epoch > 0, "the reopen bumped the epoch");
    let (_, follower) = leader_and_follower(&log, "t");
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    appends_go_on_past_a_hung_follower(&fault, &dirs[follower], &partition, 2);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
    let entry = format!("\n{} 1\n", described.leader_epoch);
    assert_epoch_checkpoint_holds(&dirs[follower], &entry);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_eq!(values(&log, "t", 0), ["a", "during-0", "during-1"]);
    log.close().unwrap();
}

/// A follower's copy that rolls a segment does not fsync the sealed segment under the
/// order lock (its next sync, outside the lock, does): with the follower's disk hung and
/// every batch synced, appends go on once the follower leaves the in-sync set.
#[test]
fn a_hung_follower_does_not_hold_up_appends_that_roll_its_segments() {
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 200);
    let config = TopicConfig::default()
        .replication_factor(2)
        .segment_bytes(200)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let (partition, follower) = topic_t_and_its_follower(&log, config, &["a"]);
    appends_go_on_past_a_hung_follower(&fault, &dirs[follower], &partition, 4);
    // Healed: the follower catches up and rejoins (once its background sync ended).
    for i in 0.. {
        partition.append_values([format!("after-{i}")]).unwrap();
        if log.describe_topic("t").unwrap().partitions[0].isr.len() == 2 {
            break;
        }
        assert!(i < 100, "the follower never rejoined");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
}

/// Truncates `partition` to `offset` on one thread and, once the cut shows, appends
/// `values` on another; then heals `hung`. The appends must not wait for the hung
/// directory (the truncation itself may wait for its checkpoint until healed).
fn cut_then_append_past_a_hung_dir(
    fault: &FaultStorage,
    hung: &Path,
    partition: &tarnlog::Partition,
    offset: u64,
    values: &[&str],
) {
    use std::time::{Duration, Instant};
    std::thread::scope(|s| {
        let truncated = s.spawn(|| partition.truncate_to(offset));
        let started = Instant::now();
        while partition.log_end_offset() != offset && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let appended = s.spawn(|| {
            for value in values {
                partition.append_values([value])?;
            }
            tarnlog::Result::<()>::Ok(())
        });
        while !appended.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let went_in = appended.is_finished();
        fault.heal_dir(hung);
        appended.join().unwrap().unwrap();
        truncated.join().unwrap().unwrap();
        assert!(
            went_in,
            "the cut or the appends waited for the hung directory"
        );
    });
}

/// A follower out of sync on a hung disk that must be cut (the partition is truncated
/// while it is out) does not hold up appends: a cut syncs, so it waits for the
/// follower's disk, outside the order lock (the truncation itself waits for the
/// checkpoints of every directory, that one's too, as `delete_records` does). Once the
/// disk answers, the follower is cut at its next step, catches up and rejoins.
#[test]
fn a_hung_follower_that_must_be_cut_does_not_hold_up_appends() {
    use std::time::Duration;
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 200);
    let config = TopicConfig::default()
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let (partition, follower) = topic_t_and_its_follower(&log, config, &["a", "b", "c", "d"]);
    fault.slow_dir(&dirs[follower], Duration::from_secs(3600));
    let _heal = HealOnDrop(&fault, &dirs[follower]);
    // The follower's sync hangs: it leaves the in-sync set after the lag time.
    partition.append_values(["e"]).unwrap();
    assert_eq!(log.describe_topic("t").unwrap().partitions[0].isr.len(), 1);
    cut_then_append_past_a_hung_dir(&fault, &dirs[follower], &partition, 2, &["x", "y"]);
    // Healed: the follower is cut at its next step, catches up and rejoins.
    for i in 0.. {
        partition.append_values([format!("after-{i}")]).unwrap();
        if log.describe_topic("t").unwrap().partitions[0].isr.len() == 2 {
            break;
        }
        assert!(i < 100, "the follower never rejoined");
        std::thread::sleep(Duration::from_millis(20));
    }
    log.close().unwrap();
    assert_identical_and_starting_with(&dirs, &["a", "b", "x", "y"]);
}

/// After a close: the replicas of `t-0` are byte-identical, and its records start with
/// `values` after a reopen.
fn assert_identical_and_starting_with(dirs: &[PathBuf], expected: &[&str]) {
    assert_replicas_identical(dirs, "t", 1);
    let log = Log::builder().dirs(dirs).open().unwrap();
    assert_eq!(&values(&log, "t", 0)[..expected.len()], expected);
    log.close().unwrap();
}

/// The same with the follower's disk hung by another partition's sync, which holds up the
/// directory's queued work (this partition's follower's sync waits behind it, never
/// started): the cut still waits outside the order lock.
#[test]
fn a_follower_behind_another_partitions_hung_sync_does_not_hold_up_appends() {
    cut_behind_another_partitions_hung_sync(false);
}

/// And with the follower still in sync (nothing appended to its partition since the disk
/// hung): stuck for the lag time, it leaves the in-sync set instead of being cut.
#[test]
fn a_follower_in_sync_on_a_stuck_disk_leaves_the_in_sync_set_at_a_truncation() {
    cut_behind_another_partitions_hung_sync(true);
}

/// Truncates a partition whose follower's directory is held up by another partition's
/// hung sync, the follower still in sync or (after an append) not, and appends after the
/// cut: neither may wait for that directory.
fn cut_behind_another_partitions_hung_sync(still_in_sync: bool) {
    use std::time::Duration;
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 200);
    let config = TopicConfig::default()
        .partitions(3)
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let topic = log.create_topic("t", config).unwrap();
    let described = log.describe_topic("t").unwrap().partitions;
    // Two partitions whose followers share a directory.
    let followers: Vec<(u32, usize)> = described
        .iter()
        .map(|p| {
            (
                p.partition,
                p.replicas
                    .iter()
                    .copied()
                    .find(|&r| Some(r) != p.leader)
                    .unwrap(),
            )
        })
        .collect();
    let (first, shared) = followers[0];
    let (second, _) = *followers[1..]
        .iter()
        .find(|(_, dir)| *dir == shared)
        .unwrap();
    let (first, second) = (
        topic.partition(first).unwrap(),
        topic.partition(second).unwrap(),
    );
    for value in ["a", "b", "c", "d"] {
        first.append_values([value]).unwrap();
        second.append_values([value]).unwrap();
    }
    fault.slow_dir(&dirs[shared], Duration::from_secs(3600));
    let _heal = HealOnDrop(&fault, &dirs[shared]);
    // The first partition's follower sync hangs on the directory's worker (it leaves the
    // in-sync set after the lag time); the second's, if any, waits behind it.
    first.append_values(["e"]).unwrap();
    if !still_in_sync {
        second.append_values(["e"]).unwrap();
    }
    let p = second.topic_partition().partition as usize;
    let isr = || log.describe_topic("t").unwrap().partitions[p].isr.len();
    assert_eq!(isr(), if still_in_sync { 2 } else { 1 });
    cut_then_append_past_a_hung_dir(&fault, &dirs[shared], &second, 2, &["x"]);
    assert_eq!(isr(), 1);
    log.close().unwrap();
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let p = second.topic_partition().partition;
    assert_eq!(values(&log, "t", p), ["a", "b", "x"]);
    log.close().unwrap();
}

/// Moving the log start (`delete_records`, as retention does) trims a follower's
/// leader-epoch cache in memory only, its checkpoint written by its next sync (Kafka's
/// `truncateFromStartAsyncFlush`): with the follower's disk hung, the move does not hold
/// the partition's order lock on an fsync, and appends go on meanwhile.
#[test]
fn a_hung_follower_does_not_hold_up_appends_while_the_log_start_moves() {
    use std::time::{Duration, Instant};
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 200);
    let config = TopicConfig::default().replication_factor(2);
    let written: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let written: Vec<&str> = written.iter().map(String::as_str).collect();
    let (partition, follower) = topic_t_and_its_follower(&log, config, &written);
    fault.slow_dir(&dirs[follower], Duration::from_secs(3600));
    let _heal = HealOnDrop(&fault, &dirs[follower]);
    std::thread::scope(|s| {
        let moved = s.spawn(|| partition.delete_records(5));
        // The move takes the order lock first; then an append must get it.
        std::thread::sleep(Duration::from_millis(100));
        let appended = s.spawn(|| partition.append_values(["after"]));
        let started = Instant::now();
        while !appended.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let went_in = appended.is_finished();
        fault.heal_dir(&dirs[follower]);
        appended.join().unwrap().unwrap();
        moved.join().unwrap().unwrap();
        assert!(went_in, "the append waited for the hung follower");
    });
    assert_eq!(partition.log_start_offset(), 5);
    let epoch = log.describe_topic("t").unwrap().partitions[0].leader_epoch;
    log.close().unwrap();
    // Each replica's checkpoint starts its epoch at the new log start (written by the
    // close's sync at the latest).
    for dir in &dirs {
        assert_epoch_checkpoint_holds(dir, &format!("\n1\n{epoch} 5\n"));
    }
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_eq!(values(&log, "t", 0).first().unwrap(), "v5");
    log.close().unwrap();
}

/// A follower out of sync on a hung disk when an `acks=All` append finds fewer in-sync
/// replicas than `min_insync_replicas`: the step that tries to bring the follower back
/// before refusing copies to it (it is level then) but does not count it back in sync
/// while its sync hangs, so the append is refused at once (`NotEnoughReplicas`), rather
/// than written and then waiting the lag time for that sync, and `acks=Leader` appends go
/// on. Once the disk answers the follower rejoins.
#[test]
fn a_hung_follower_below_min_insync_replicas_does_not_hold_up_appends() {
    use std::time::{Duration, Instant};
    let (_root, dirs, fault, log) = lagging_faulty_dirs(2, 200);
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let (partition, follower) = topic_t_and_its_follower(&log, config, &["a"]);
    fault.slow_dir(&dirs[follower], Duration::from_secs(3600));
    let _heal = HealOnDrop(&fault, &dirs[follower]);
    // The follower's sync hangs: it leaves the in-sync set after the lag time, and the
    // append is answered as not enough replicas after it was written.
    assert!(matches!(
        partition.append_values(["b"]),
        Err(Error::NotEnoughReplicasAfterAppend { .. })
    ));
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        let appended = s.spawn(|| {
            // `acks=Leader` needs no in-sync follower: the follower gets a copy to sync.
            producer.send(ProducerRecord::new("t").value("c"))?.wait()?;
            let refused = partition.append_values(["d"]);
            producer.send(ProducerRecord::new("t").value("e"))?.wait()?;
            Ok::<_, Error>(refused)
        });
        while !appended.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let went_in = appended.is_finished();
        fault.heal_dir(&dirs[follower]);
        let refused = appended.join().unwrap().unwrap();
        assert!(went_in, "an append waited for the hung directory");
        assert!(
            matches!(
                refused,
                Err(Error::NotEnoughReplicas {
                    in_sync: 1,
                    required: 2
                })
            ),
            "{refused:?}"
        );
    });
    // Healed: the follower catches up and rejoins; acks=All appends go in again.
    for i in 0.. {
        if partition.append_values([format!("after-{i}")]).is_ok() {
            break;
        }
        assert!(i < 100, "the follower never rejoined");
        std::thread::sleep(Duration::from_millis(20));
    }
    producer.close().unwrap();
    log.close().unwrap();
    assert_identical_and_starting_with(&dirs, &["a", "b", "c", "e"]);
}

/// An I/O error at any step of an `acks=All` append over two directories (a full disk, once,
/// at each storage call in turn; the first sync after an open writes the leader-epoch
/// checkpoint too) takes the directory it hit offline: an append that fails for it never
/// leaves every directory online (before, a failed checkpoint write in a sync answered
/// `Poisoned` for a directory still online, and leadership never moved), the next append
/// goes in, and every acknowledged record is there after a reopen.
#[test]
fn an_io_error_in_any_step_of_a_replicated_append_takes_its_directory_offline() {
    let mut step = 0;
    loop {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path(), 2);
        {
            let log = Log::builder().dirs(&dirs).open().unwrap();
            let config = TopicConfig::default()
                .replication_factor(2)
                .fsync(tarnlog::FsyncPolicy::EveryBatch);
            log.create_topic("t", config).unwrap();
            log.topic("t")
                .unwrap()
                .partition(0)
                .unwrap()
                .append_values(["a"])
                .unwrap();
            log.close().unwrap();
        }
        let fault = FaultStorage::new(OsStorage::shared());
        let log = Log::builder()
            .dirs(&dirs)
            .storage(fault.shared())
            .prefault(false)
            .open()
            .unwrap();
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        fault.fail_at(fault.ops() + 1 + step, FaultKind::NoSpace, false);
        let appended = partition.append_values(["b"]);
        let injected = fault.injected() > 0;
        let offline = log.dir_status().iter().any(|d| !d.online);
        // A full disk met by any storage call: its directory is offline, whether the
        // append failed or went in (a follower's failed sync).
        assert!(
            offline || !injected,
            "step {step}: {appended:?} with every directory online"
        );
        let mut acknowledged = vec!["a".to_owned()];
        if appended.is_ok() {
            acknowledged.push("b".into());
        }
        if partition.append_values(["c"]).is_ok() {
            acknowledged.push("c".into());
        }
        assert!(
            acknowledged.len() > 1,
            "step {step}: no append went in after the fault"
        );
        drop(partition);
        drop(log);
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let found = values(&log, "t", 0);
        for value in &acknowledged {
            assert!(
                found.contains(value),
                "step {step}: {value} lost: {found:?}"
            );
        }
        log.close().unwrap();
        if !injected {
            break;
        }
        step += 1;
    }
    assert!(step > 5, "only {step} steps");
}

/// An `acks=All` append whose follower's sync hangs, when that follower takes over as leader
/// before the append gives up waiting for it (the leader's directory failed under another
/// append): the append is not acknowledged, since the new leader, the in-sync set now,
/// never synced it (before, the timed-out follower was kept in sync for leading and
/// counted). A third directory holds only metadata.
#[test]
fn an_append_is_not_acknowledged_by_a_leader_that_never_synced_it() {
    use std::time::{Duration, Instant};
    let (_root, dirs, fault, log) = lagging_faulty_dirs(3, 300);
    let config = TopicConfig::default()
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    let leader = described.leader.unwrap();
    let follower = *described.replicas.iter().find(|&&r| r != leader).unwrap();
    fault.slow_dir(&dirs[follower], Duration::from_secs(3600));
    let _heal = HealOnDrop(&fault, &dirs[follower]);
    let (answered, finished, leader_after) = std::thread::scope(|s| {
        let first = s.spawn(|| partition.append_values(["b"]));
        // While `b` waits for the follower's sync, the leader's directory fails under
        // another append, which fails over to the follower (and then waits for its sync).
        std::thread::sleep(Duration::from_millis(50));
        fault.fail_dir(&dirs[leader], FaultKind::Eio);
        let second = s.spawn(|| partition.append_values(["c"]));
        let started = Instant::now();
        while !first.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let finished = first.is_finished();
        let leader_after = log.describe_topic("t").unwrap().partitions[0].leader;
        // Healed before anything is asserted: the threads must end.
        fault.heal_dir(&dirs[follower]);
        let answered = first.join().unwrap();
        drop(second.join().unwrap());
        (answered, finished, leader_after)
    });
    assert!(finished, "the first append hung");
    assert_eq!(leader_after, Some(follower));
    assert!(
        answered.is_err(),
        "acknowledged by a leader whose sync of it hung: {answered:?}"
    );
}

/// One group's metadata that cannot be written (its `__consumer_offsets` partition's one
/// replica is in a failed directory) stays queued for that group alone: the consumers of
/// another group go on polling and committing (they failed with the other group's
/// `PartitionOffline`, stopped heartbeating and lost their sessions).
#[test]
fn one_groups_unwritable_metadata_does_not_stop_another_group() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .offsets_topic_replication_factor(1)
        .offsets_topic_partitions(2)
        .group_initial_rebalance_delay_ms(0)
        .open()
        .unwrap();
    let config = TopicConfig::default().replication_factor(2);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b", "c"]).unwrap();
    // Polls until `n` records came, then commits.
    let read_and_commit = |consumer: &mut tarnlog::Consumer, n: usize| {
        let mut read = 0;
        for _ in 0..100 {
            read += consumer
                .poll(std::time::Duration::from_millis(20))
                .unwrap()
                .count();
            if read == n {
                break;
            }
        }
        assert_eq!(read, n);
        consumer.commit_sync().unwrap();
    };
    let member = |group: &str| {
        let config = tarnlog::ConsumerConfig::default()
            .group_id(group)
            .auto_offset_reset(tarnlog::AutoOffsetReset::Earliest)
            .enable_auto_commit(false);
        let mut consumer = log.consumer(config).unwrap();
        consumer.subscribe(["t"]).unwrap();
        read_and_commit(&mut consumer, 3);
        consumer
    };
    // Java's hash of one letter: "a" (97) maps to offsets partition 1, "b" (98) to 0.
    let a = member("a");
    let mut b = member("b");
    let offsets = log.describe_topic("__consumer_offsets").unwrap();
    let a_dir = offsets.partitions[1].leader.unwrap();
    assert_ne!(
        offsets.partitions[0].leader,
        Some(a_dir),
        "one group per directory"
    );
    fault.fail_dir(&dirs[a_dir], FaultKind::Eio);
    // Leaving, `a`'s member queues the group's new metadata, which cannot be written.
    assert!(a.close().is_err());
    partition.append_values(["d"]).unwrap();
    read_and_commit(&mut b, 1);
    assert_eq!(
        log.committed_offset("b", &tarnlog::TopicPartition::new("t", 0))
            .unwrap()
            .map(|o| o.offset),
        Some(4)
    );
}

/// A `__consumer_offsets` partition left without a leader at the open (its one in-sync
/// replica's directory failing) while an out-of-sync replica of it is present:
/// the open succeeds (the replay used to fail it on the offline partition); the groups of
/// that partition can neither read nor commit offsets (`PartitionOffline`, never a silent
/// "none" that would reset consumers) until the partition has a leader again and is
/// replayed.
#[test]
fn an_offsets_partition_without_a_leader_does_not_fail_the_open() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let open = |storage: Option<&FaultStorage>| {
        let builder = Log::builder()
            .dirs(&dirs)
            .offsets_topic_partitions(1)
            .offsets_topic_replication_factor(2)
            .group_initial_rebalance_delay_ms(0);
        match storage {
            Some(fault) => builder.storage(fault.shared()),
            None => builder,
        }
        .open()
    };
    let fault = FaultStorage::new(OsStorage::shared());
    let log = open(Some(&fault)).unwrap();
    let config = TopicConfig::default().replication_factor(3);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    let commit = |log: &Log, offset| {
        log.commit_offsets(
            "g",
            &[(tp.clone(), tarnlog::OffsetAndMetadata::new(offset))],
        )
    };
    commit(&log, 1).unwrap();
    // Every replica's high watermark checkpointed past the commit.
    log.close().unwrap();
    let log = open(Some(&fault)).unwrap();
    let described = log.describe_topic("__consumer_offsets").unwrap().partitions[0].clone();
    let leader = described.leader.unwrap();
    let follower = *described.replicas.iter().find(|&&d| d != leader).unwrap();
    fault.fail_dir(&dirs[follower], FaultKind::NoSpace);
    commit(&log, 2).unwrap();
    let described = log.describe_topic("__consumer_offsets").unwrap().partitions[0].clone();
    assert_eq!(described.isr, [leader]);
    log.close().unwrap();
    let fault = FaultStorage::new(OsStorage::shared());
    fault.fail_dir(&dirs[leader], FaultKind::Eio);

    let log = open(Some(&fault)).unwrap();
    let described = log.describe_topic("__consumer_offsets").unwrap().partitions[0].clone();
    assert_eq!(described.leader, None, "{described:?}");
    // The group's offsets are unknown, not absent: a consumer must not reset its position.
    let offline = |e: &Error| matches!(e, Error::PartitionOffline { partition: 0, .. });
    assert!(offline(&log.committed_offset("g", &tp).unwrap_err()));
    assert!(offline(&log.describe_group("g").unwrap_err()));
    assert!(offline(&commit(&log, 2).unwrap_err()));
    assert!(offline(&log.delete_group("g").unwrap_err()));
    assert!(log.maintain().unwrap().expired_groups.is_empty());
    // Nor does a member join the group meanwhile.
    let mut member = log
        .consumer(tarnlog::ConsumerConfig::default().group_id("g"))
        .unwrap();
    member.subscribe(["t"]).unwrap();
    assert!(offline(
        &member
            .poll(std::time::Duration::from_millis(10))
            .unwrap_err()
    ));
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    // A consumer of the group that seeks to the beginning or the end needs no committed
    // offset: it reads on (Kafka resolves those seeks without the coordinator), where one
    // resuming from its committed offset cannot.
    let mut reader = log
        .consumer(tarnlog::ConsumerConfig::default().group_id("g"))
        .unwrap();
    reader.assign([tp.clone()]).unwrap();
    assert!(offline(&reader.position(&tp).unwrap_err()));
    reader.seek_to_end(&[]).unwrap();
    assert_eq!(reader.position(&tp).unwrap(), 2);
    reader.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    let polled = reader.poll(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(
        polled.into_iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1]
    );
    drop(reader);
    // Back with its leader, the partition is replayed: the offsets are there again.
    fault.heal_dir(&dirs[leader]);
    log.restore_dir(&dirs[leader]).unwrap();
    let committed = log.committed_offset("g", &tp).unwrap().map(|c| c.offset);
    assert_eq!(committed, Some(2));
    commit(&log, 1).unwrap();
    let mut read = Vec::new();
    for _ in 0..100 {
        for record in member.poll(std::time::Duration::from_millis(10)).unwrap() {
            read.push(record.offset);
        }
        if !read.is_empty() {
            break;
        }
    }
    assert_eq!(read, [1], "from the committed offset");
    drop(member);
    log.close().unwrap();
}

/// A directory whose `meta` was damaged while it was offline: `restore_dir` takes it back
/// as an open does (an unreadable copy is ignored while another is readable, and written
/// afresh), instead of failing with `Corruption` at every try until a reopen.
#[test]
fn a_directory_with_damaged_meta_is_restored() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default().replication_factor(2);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    partition.append_values(["b"]).unwrap();
    assert!(!log.dir_status()[1].online);
    let meta = dirs[1].join("meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&meta, bytes).unwrap();
    fault.heal_dir(&dirs[1]);
    log.restore_dir(&dirs[1]).unwrap();
    assert!(log.dir_status().iter().all(|d| d.online));
    assert_fully_replicated(&log);
    log.close().unwrap();
    assert_replicas_identical(&dirs, "t", 1);
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert!(log.recovery_report().repaired.is_empty());
    assert_eq!(values(&log, "t", 0), ["a", "b"]);
    log.close().unwrap();
}

/// An I/O error at any storage call of `create_topic` (two partitions, replication factor
/// 2, two directories; one-shot, and persistent from that call on): after a reopen the
/// topic is absent (and can be created) or whole, every partition led.
#[test]
fn a_fault_at_any_call_of_create_topic_leaves_no_half_made_topic() {
    let config = TopicConfig::default().partitions(2).replication_factor(2);
    let calls = {
        let root = common::scratch("tarnlog-failover-");
        let dirs = dirs(root.path(), 2);
        let (log, fault) = common::faulty_log(&dirs);
        let before = fault.ops();
        log.create_topic("t", config.clone()).unwrap();
        let calls = fault.ops() - before;
        log.close().unwrap();
        calls
    };
    assert!(calls > 10, "{calls} calls");
    let mut failed = 0;
    for (k, persistent) in (1..=calls).flat_map(|k| [(k, false), (k, true)]) {
        let root = common::scratch("tarnlog-failover-");
        let dirs = dirs(root.path(), 2);
        let (log, fault) = common::faulty_log(&dirs);
        fault.fail_at(fault.ops() + k, FaultKind::Eio, persistent);
        let created = log.create_topic("t", config.clone());
        failed += usize::from(created.is_err());
        fault.heal();
        log.simulate_crash();
        let log = Log::builder().dirs(&dirs).open().unwrap();
        match log.describe_topic("t") {
            Ok(described) => assert!(
                described.partitions.iter().all(|p| p.leader.is_some()),
                "call {k} ({persistent}): {created:?}, then {described:?}"
            ),
            Err(Error::UnknownTopic { .. }) => {
                log.create_topic("t", config.clone()).unwrap();
            }
            Err(other) => panic!("call {k} ({persistent}): {other}"),
        }
        log.close().unwrap();
    }
    assert!(failed > 0);
}

/// `add_partitions` while the directory of partition 0's preferred leader is offline:
/// Kafka's `createNewPartitionsAssignment` starts the placement at the first online
/// directory at or after it (`indexWhere(_ >= leader)`), not at the first online one.
#[test]
fn new_partitions_start_after_an_offline_first_leader_as_kafka() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let (log, fault) = common::faulty_log(&dirs);
    // A topic whose partition 0 is led from directory 1 (the log rotates placements).
    let name = (0..3)
        .map(|i| format!("t{i}"))
        .find(|name| {
            log.create_topic(name, TopicConfig::default()).unwrap();
            log.describe_topic(name).unwrap().partitions[0].leader == Some(1)
        })
        .expect("some topic starts in directory 1");
    fault.fail_dir(&dirs[1], FaultKind::Eio);
    let partition = log.topic(&name).unwrap().partition(0).unwrap();
    assert!(partition.append_values(["x"]).is_err());
    assert!(!log.dir_status()[1].online);
    log.add_partitions(&name, 2).unwrap();
    // Online directories [0, 2]; Kafka's start index is that of 2 (the first >= 1), and
    // partition 1 goes to online[(1 + 1) % 2] = directory 0.
    let described = log.describe_topic(&name).unwrap();
    assert_eq!(described.partitions[1].replicas, [0]);
}

/// The value of the visible record at `offset` of `partition` (`None` when no visible record
/// has that offset).
fn value_at(partition: &tarnlog::Partition, offset: u64) -> tarnlog::Result<Option<String>> {
    let read = partition.read(offset, 1 << 20)?;
    for record in read.records() {
        let record = record?;
        if record.offset as u64 == offset {
            return Ok(record
                .value
                .map(|v| String::from_utf8_lossy(&v).into_owned()));
        }
    }
    Ok(None)
}

/// One run of the sweep below. Topic `t` (replication factor 2 over three directories, the
/// third holding only `meta`; unclean election allowed; an index entry at every batch after
/// a segment's first; every batch synced) gets `a b c d` on both replicas. The follower's
/// disk hangs, so `e` leaves it out of the in-sync set holding `a b c d e`; the partition is
/// cut to 2 while that disk hangs: the leader holds `a b`, and the follower, busy, keeps its
/// five records (it is cut only at a step after its disk answers). Then `y` is appended
/// (`acks=All`) with the `k`-th storage call from there failing once (`Eio`).
///
/// Whatever the outcome, `y` acknowledged at an offset must be the record read there.
/// Returns whether the fault was met, and whether it was met by a write after which the
/// follower leads holding only its own five records: the leader's directory failed with `y`
/// in its log (an index entry written after the batch was visible) and the divergent
/// follower won the unclean election.
fn append_past_a_divergent_follower_with_call_k_failing(k: u64) -> (bool, bool) {
    use std::time::{Duration, Instant};
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 3);
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .replica_lag_time_max_ms(200)
        // No background allocation: the calls counted after the plan are the append's.
        .prefault(false)
        .open()
        .unwrap();
    let config = TopicConfig::default()
        .replication_factor(2)
        .unclean_leader_election(true)
        .index_interval_bytes(0)
        .fsync(tarnlog::FsyncPolicy::EveryBatch);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for value in ["a", "b", "c", "d"] {
        partition.append_values([value]).unwrap();
    }
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    let leader = described.leader.unwrap();
    let follower = *described.replicas.iter().find(|&&r| r != leader).unwrap();
    // Only syncs there hang (writes go through); `heal_dir` releases them.
    fault.slow_dir(&dirs[follower], Duration::from_secs(3600));
    let (appended, met) = std::thread::scope(|s| {
        // In the scope's closure: a failed assertion heals the disk before the scope waits
        // for its threads.
        let _heal = HealOnDrop(&fault, &dirs[follower]);
        // The follower's sync hangs: it leaves the in-sync set after the lag time.
        partition.append_values(["e"]).unwrap();
        assert_eq!(log.describe_topic("t").unwrap().partitions[0].isr, [leader]);
        // The cut shows at once; the truncation then waits for the hung disk's checkpoint,
        // outside the order lock.
        let truncated = s.spawn(|| partition.truncate_to(2));
        let started = Instant::now();
        while partition.log_end_offset() != 2 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(partition.log_end_offset(), 2, "the cut did not show");
        // Until the truncation's own calls are over (no call for 100 ms).
        let mut calls = fault.ops();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = fault.ops();
            if now == calls || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            calls = now;
        }
        assert!(
            replica_size(&log, "t", 0, follower) > replica_size(&log, "t", 0, leader),
            "the follower was cut: it must still hold `c d e` past the leader's end"
        );
        let at = fault.ops() + k;
        fault.fail_at(at, FaultKind::Eio, false);
        let appended = s.spawn(|| partition.append_values(["y"]));
        // Until the append answers, or the follower leads (a log end of 5 or more: the
        // leader holds 3 with `y`); its disk's speed decides nothing after that. A failover
        // may wait for the hung disk (a checkpoint written as the new leader joins the
        // in-sync set), so the disk is healed then.
        let started = Instant::now();
        while !appended.is_finished()
            && partition.log_end_offset() < 5
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        // No fault for the calls from here on (the truncation's, released by the heal).
        fault.heal();
        fault.heal_dir(&dirs[follower]);
        let appended = appended.join().unwrap();
        drop(truncated.join().unwrap());
        let met = fault
            .op_log()
            .iter()
            .find(|&&(n, _)| n == at)
            .map(|&(_, kind)| kind)
            .filter(|_| fault.injected() > 0);
        (appended, met)
    });
    let now = log.describe_topic("t").unwrap().partitions[0].clone();
    if let Ok(info) = &appended {
        let found = value_at(&partition, info.base_offset);
        assert!(
            matches!(&found, Ok(Some(v)) if v == "y"),
            "call {k} failed ({met:?}): `y` acknowledged at offset {} which holds {found:?} \
             (leader was {leader}, follower {follower}; now {now:?})",
            info.base_offset
        );
    }
    let reached = met == Some(OpKind::Write)
        && now.leader == Some(follower)
        && partition.log_end_offset() == 5;
    drop(partition);
    drop(log);
    (met.is_some(), reached)
}

/// A leader whose directory fails after a batch is in its log (here its index entry's
/// write fails) while its only follower is out of sync, on a hung disk, holding a longer,
/// divergent tail it could not be cut back from: with unclean election the follower leads,
/// and the append must not be acknowledged at an offset where the new leader holds another
/// record (before, `ReplicaSet::write` accepted the batch whenever the new leader's log
/// reached past it, in sync or not). Each storage call of the append fails in turn.
#[test]
fn a_batch_in_a_failed_leaders_log_is_not_acknowledged_by_a_divergent_new_leader() {
    let mut reached = 0;
    let mut k = 1;
    loop {
        let (met, divergent) = append_past_a_divergent_follower_with_call_k_failing(k);
        if !met {
            break;
        }
        reached += usize::from(divergent);
        k += 1;
        assert!(k < 40, "the fault is still met at call {k}");
    }
    assert!(k > 3, "the append made only {} storage calls", k - 1);
    assert!(
        reached > 0,
        "no fault met the leader with `y` in its log and then elected the divergent follower"
    );
}

/// A replica rebuilt from its leader at an open is synced before it counts as in sync (and
/// its rebuilding marker goes), whatever the fsync policy asks of appends, as a replica
/// rebuilt while the log runs is: a power loss must not leave an in-sync replica that
/// holds less than `meta` says.
#[test]
fn a_replica_rebuilt_at_open_is_synced_before_it_counts_in_sync() {
    let root = common::scratch("tarnlog-failover-");
    let dirs = dirs(root.path(), 2);
    let config = TopicConfig::default()
        .replication_factor(2)
        .fsync(tarnlog::FsyncPolicy::EveryRecords(1_000_000));
    let follower = {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        partition.append_values(["a", "b", "c"]).unwrap();
        let (_, follower) = leader_and_follower(&log, "t");
        log.close().unwrap();
        follower
    };
    std::fs::remove_dir_all(dirs[follower].join("t-0")).unwrap();
    let fault = FaultStorage::new(OsStorage::shared());
    let log = open_over(&dirs, &fault);
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert!(described.isr.contains(&follower), "{described:?}");
    assert!(!dirs[follower].join("t-0").join("rebuilding").exists());
    // A sync that fails now shows what was never synced there.
    fault.fail_dir(&dirs[follower], FaultKind::FailedWriteback);
    let _ = log.flush();
    let lost: Vec<_> = lost_segment_bytes(&fault)
        .into_iter()
        .filter(|(path, _, _)| path.starts_with(&dirs[follower]))
        .collect();
    assert!(lost.is_empty(), "the rebuilt copy was unsynced: {lost:?}");
}
