//! `Log::alter_topic_config`: live changes of retention, segment size, fsync policy and
//! min ISR; persistence; refusals that leave everything as it was.
#![allow(clippy::unwrap_used)]

mod common;

use tarnlog::storage::{FaultKind, OpKind};
use tarnlog::{Error, FsyncPolicy, Log, TopicConfig};

use common::log_files;

/// Topic `t` (`config`, two replicas) with one record, then its follower's directory failed;
/// partition 0 and the leader's directory index.
fn follower_failed(
    log: &Log,
    fault: &tarnlog::storage::FaultStorage,
    dirs: &[std::path::PathBuf],
    config: TopicConfig,
) -> (tarnlog::Partition, usize) {
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    fault.fail_dir(&dirs[1 - leader], FaultKind::Eio);
    (partition, leader)
}

fn quiet_log(root: &std::path::Path) -> Log {
    Log::builder()
        .dir(root)
        .background_maintenance(false)
        .open()
        .unwrap()
}

/// Retention switched on later applies at the next pass; the change survives a reopen.
#[test]
fn retention_changes_live_and_persists() {
    let root = tempfile::tempdir().unwrap();
    let log = quiet_log(root.path());
    let config = TopicConfig::default().segment_bytes(300).retention_ms(-1);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    for _ in 0..10 {
        partition.append_values([&[1u8; 100][..]]).unwrap();
    }
    let segments = log_files(&partition.path());
    assert!(segments >= 5, "{segments} segments");
    assert_eq!(log.maintain().unwrap().segments_deleted, 0, "kept forever");

    let mut config = log.topic("t").unwrap().config();
    config.retention_bytes = 300;
    let old = log.alter_topic_config("t", config).unwrap();
    assert_eq!(old.retention_bytes, -1);
    assert!(log.maintain().unwrap().segments_deleted > 0);
    assert!(log_files(&partition.path()) < segments);
    assert!(partition.log_start_offset() > 0);
    drop(partition);
    log.close().unwrap();

    let log = quiet_log(root.path());
    let config = log.topic("t").unwrap().config();
    assert_eq!((config.retention_bytes, config.retention_ms), (300, -1));
}

/// A larger `segment_bytes` takes effect at once on an empty active segment (a batch too
/// big for the old size fits), a smaller one from the next roll.
#[test]
fn segment_size_changes_live() {
    let root = tempfile::tempdir().unwrap();
    let log = quiet_log(root.path());
    let config = TopicConfig::default().segment_bytes(1000);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let big = vec![7u8; 5000];
    assert!(matches!(
        partition.append_values([&big[..]]),
        Err(Error::RecordTooLarge { max: 1000, .. })
    ));
    let config = log.topic("t").unwrap().config().segment_bytes(100_000);
    log.alter_topic_config("t", config).unwrap();
    partition.append_values([&big[..]]).unwrap();
    partition.append_values([&big[..]]).unwrap();
    assert_eq!(log_files(&partition.path()), 1);

    let config = log.topic("t").unwrap().config().segment_bytes(6000);
    log.alter_topic_config("t", config).unwrap();
    partition.append_values([&big[..]]).unwrap();
    partition.append_values([&big[..]]).unwrap();
    assert_eq!(
        log_files(&partition.path()),
        3,
        "rolled at the smaller size"
    );
    let mut offsets = Vec::new();
    let mut next = 0u64;
    while next < partition.log_end_offset() {
        let read = partition.read(next, 1 << 20).unwrap();
        for batch in read.batches() {
            let batch = batch.unwrap();
            offsets.push(u64::try_from(batch.base_offset()).unwrap());
            next = u64::try_from(batch.last_offset()).unwrap() + 1;
        }
    }
    assert_eq!(offsets, [0, 1, 2, 3]);
    drop(partition);
    log.simulate_crash();
    let log = quiet_log(root.path());
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_end_offset(), 4, "recovered across sizes");
}

/// `min_insync_replicas` raised while one of two replicas is offline gates `acks=All`
/// appends at once; lowered again, they pass.
#[test]
fn min_insync_replicas_changes_live() {
    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default().replication_factor(2);
    let (partition, _leader) = follower_failed(&log, &fault, &dirs, config);
    partition.append_values(["b"]).unwrap();
    let config = log.topic("t").unwrap().config().min_insync_replicas(2);
    log.alter_topic_config("t", config.clone()).unwrap();
    assert!(matches!(
        partition.append_values(["c"]),
        Err(Error::NotEnoughReplicas {
            in_sync: 1,
            required: 2
        })
    ));
    log.alter_topic_config("t", config.min_insync_replicas(1))
        .unwrap();
    partition.append_values(["c"]).unwrap();
    assert_eq!(partition.log_end_offset(), 3);
}

/// The fsync policy changes from the next append: `EveryBatch` appends after the change
/// are synced (counted through the storage seam), `None` ones are not.
#[test]
fn fsync_policy_changes_live() {
    let root = tempfile::tempdir().unwrap();
    let (log, fault) = common::faulty_log(&[root.path().to_path_buf()]);
    let partition = log
        .create_topic("t", TopicConfig::default())
        .unwrap()
        .partition(0)
        .unwrap();
    let syncs = |from: usize| {
        fault.op_log()[from..]
            .iter()
            .filter(|(_, kind)| *kind == OpKind::Sync)
            .count()
    };
    // The first append writes the leader-epoch checkpoint (synced); the second writes only.
    partition.append_values(["a"]).unwrap();
    let before = fault.op_log().len();
    partition.append_values(["a"]).unwrap();
    assert_eq!(syncs(before), 0, "policy None: no sync");
    let config = log
        .topic("t")
        .unwrap()
        .config()
        .fsync(FsyncPolicy::EveryBatch);
    log.alter_topic_config("t", config).unwrap();
    let before = fault.op_log().len();
    partition.append_values(["b"]).unwrap();
    assert!(syncs(before) > 0, "an EveryBatch append syncs");
}

/// Refusals name the problem and change nothing, on disk or in memory.
#[test]
fn bad_changes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let log = quiet_log(root.path());
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    let current = log.topic("t").unwrap().config();
    let before = common::files(root.path());
    let refused = [
        (current.clone().partitions(3), "partitions"),
        (current.clone().replication_factor(2), "replication_factor"),
        (
            current.clone().segment_index_bytes(4096),
            "segment_index_bytes",
        ),
        (current.clone().retention_ms(-7), "retention_ms"),
        (current.clone().segment_bytes(3), "segment_bytes"),
    ];
    for (config, field) in refused {
        match log.alter_topic_config("t", config) {
            Err(Error::InvalidConfig { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(matches!(
        log.alter_topic_config("missing", current.clone()),
        Err(Error::UnknownTopic { .. })
    ));
    assert!(matches!(
        log.alter_topic_config("__consumer_offsets", current.clone()),
        Err(Error::InternalTopic { .. })
    ));
    assert_eq!(common::files(root.path()), before, "nothing written");
    assert_eq!(log.topic("t").unwrap().config(), current);
}

/// `add_partitions` (Kafka's `CreatePartitions`): the new partitions take appends at once,
/// survive a reopen and a crash, and a producer that cached the topic sees them.
#[test]
fn add_partitions_grows_the_topic() {
    use tarnlog::{ProducerConfig, ProducerRecord};
    for crash in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let log = quiet_log(root.path());
        log.create_topic("t", TopicConfig::default().partitions(2))
            .unwrap();
        let producer = log.producer(ProducerConfig::default()).unwrap();
        producer
            .send(ProducerRecord::new("t").partition(1).value("before"))
            .unwrap()
            .wait()
            .unwrap();
        assert!(matches!(
            producer.send(ProducerRecord::new("t").partition(3).value("x")),
            Err(Error::UnknownPartition { partitions: 2, .. })
        ));
        let topic = log.add_partitions("t", 5).unwrap();
        assert_eq!(topic.partitions(), 5);
        assert_eq!(log.topic("t").unwrap().config().partitions, 5);
        let meta = producer
            .send(ProducerRecord::new("t").partition(3).value("after"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!((meta.partition, meta.offset), (3, Some(0)));
        topic.partition(4).unwrap().append_values(["four"]).unwrap();
        producer.close().unwrap();
        if crash {
            log.simulate_crash();
        } else {
            log.close().unwrap();
        }
        let log = quiet_log(root.path());
        let topic = log.topic("t").unwrap();
        assert_eq!(topic.partitions(), 5, "crash: {crash}");
        let ends: Vec<u64> = (0..5)
            .map(|p| topic.partition(p).unwrap().log_end_offset())
            .collect();
        assert_eq!(ends, [0, 1, 0, 1, 1]);
    }
}

/// A decrease or no change is refused with `InvalidPartitions`; internal and unknown
/// topics and counts over the limit are refused too; nothing changes.
#[test]
fn add_partitions_refuses_bad_counts() {
    let root = tempfile::tempdir().unwrap();
    let log = quiet_log(root.path());
    log.create_topic("t", TopicConfig::default().partitions(3))
        .unwrap();
    let before = common::files(root.path());
    for requested in [1, 3] {
        assert!(matches!(
            log.add_partitions("t", requested),
            Err(Error::InvalidPartitions { current: 3, requested: r, .. }) if r == requested
        ));
    }
    assert!(matches!(
        log.add_partitions("t", 10_001),
        Err(Error::InvalidConfig {
            field: "partitions",
            ..
        })
    ));
    assert!(matches!(
        log.add_partitions("missing", 4),
        Err(Error::UnknownTopic { .. })
    ));
    assert!(matches!(
        log.add_partitions("__consumer_offsets", 60),
        Err(Error::InternalTopic { .. })
    ));
    assert_eq!(common::files(root.path()), before, "nothing written");
    assert_eq!(log.topic("t").unwrap().partitions(), 3);
}

/// With two directories and replication factor 2 every new partition has two replicas,
/// its leaders spread over both directories, and a subscribed group rebalances onto it.
#[test]
fn added_partitions_are_replicated_and_assigned() {
    use std::time::Duration;
    use tarnlog::ConsumerConfig;
    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let log = Log::builder()
        .dirs(&dirs)
        .group_initial_rebalance_delay_ms(0)
        .open()
        .unwrap();
    let config = TopicConfig::default().replication_factor(2);
    log.create_topic("t", config).unwrap();
    let mut consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id("g")
                .auto_offset_reset(tarnlog::AutoOffsetReset::Earliest),
        )
        .unwrap();
    consumer.subscribe(["t"]).unwrap();
    consumer.poll(Duration::from_millis(50)).unwrap();
    assert_eq!(consumer.assignment().len(), 1);

    log.add_partitions("t", 4).unwrap();
    let described = log.describe_topic("t").unwrap();
    assert_eq!(described.partitions.len(), 4);
    for partition in &described.partitions {
        assert_eq!(partition.replicas.len(), 2);
        assert_eq!(partition.isr.len(), 2);
    }
    let leaders: std::collections::BTreeSet<usize> = described
        .partitions
        .iter()
        .filter_map(|p| p.leader)
        .collect();
    assert_eq!(leaders.len(), 2, "leaders spread over both directories");
    log.topic("t")
        .unwrap()
        .partition(3)
        .unwrap()
        .append_values(["new"])
        .unwrap();
    let mut values = Vec::new();
    for _ in 0..100 {
        for record in consumer.poll(Duration::from_millis(20)).unwrap() {
            values.push(record.value.unwrap());
        }
        if consumer.assignment().len() == 4 && !values.is_empty() {
            break;
        }
    }
    assert_eq!(
        consumer.assignment().len(),
        4,
        "rebalanced onto the new partitions"
    );
    assert_eq!(values, [bytes::Bytes::from_static(b"new")]);
}

/// A `segment_bytes` lowered below what the active segment already holds: the log reopens
/// (after a close and after a crash) and rolls at the next append; a follower that comes
/// back copies the leader's older, larger batches.
#[test]
fn lowered_segment_size_with_larger_data() {
    for crash in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let log = quiet_log(root.path());
        let config = TopicConfig::default().segment_bytes(100_000);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        let big = vec![3u8; 5000];
        for _ in 0..4 {
            partition.append_values([&big[..]]).unwrap();
        }
        let config = log.topic("t").unwrap().config().segment_bytes(1000);
        log.alter_topic_config("t", config).unwrap();
        drop(partition);
        if crash {
            log.simulate_crash();
        } else {
            log.close().unwrap();
        }
        let log = quiet_log(root.path());
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        assert_eq!(partition.log_end_offset(), 4, "crash: {crash}");
        partition.append_values(["small"]).unwrap();
        assert_eq!(
            log_files(&partition.path()),
            2,
            "rolled at the smaller size"
        );
    }

    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .replication_factor(2)
        .segment_bytes(100_000);
    let (partition, leader) = follower_failed(&log, &fault, &dirs, config);
    let big = vec![4u8; 5000];
    for _ in 0..3 {
        partition.append_values([&big[..]]).unwrap();
    }
    let config = log.topic("t").unwrap().config().segment_bytes(1000);
    log.alter_topic_config("t", config).unwrap();
    fault.heal_dir(&dirs[1 - leader]);
    log.restore_dir(&dirs[1 - leader]).unwrap();
    let described = log.describe_topic("t").unwrap().partitions[0].clone();
    assert_eq!(
        described.isr.len(),
        2,
        "the follower copied the large batches"
    );
    assert_eq!(
        described.replica_size_bytes[0],
        described.replica_size_bytes[1]
    );
}
