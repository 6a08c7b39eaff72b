//! Replication across storage directories (issue 5, first part): placement, byte-for-byte
//! follower copies, the high watermark, and followers rebuilt from the leader at open.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tarnlog::{Error, Log, TopicConfig};

/// Every file under `dir` (relative path → bytes).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The segment files (`.log`) of partition `p` of `topic` under each directory.
fn segments(dirs: &[PathBuf], topic: &str, p: u32) -> Vec<BTreeMap<PathBuf, Vec<u8>>> {
    dirs.iter()
        .map(|d| {
            files(&d.join(format!("{topic}-{p}")))
                .into_iter()
                .filter(|(path, _)| path.extension().is_some_and(|e| e == "log"))
                .collect()
        })
        .collect()
}

fn two_dirs() -> (tempfile::TempDir, Vec<PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    let dirs = vec![root.path().join("a"), root.path().join("b")];
    (root, dirs)
}

fn values(log: &Log, topic: &str, p: u32) -> Vec<String> {
    let partition = log.topic(topic).unwrap().partition(p).unwrap();
    let read = partition.read(0, 1 << 20).unwrap();
    read.records()
        .map(|r| String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap())
        .collect()
}

/// A log over `dirs` with topic `t` of `partitions` partitions, two replicas each.
fn replicated(dirs: &[PathBuf], partitions: u32) -> (Log, tarnlog::Topic) {
    let log = Log::builder().dirs(dirs).open().unwrap();
    let config = TopicConfig::default()
        .partitions(partitions)
        .replication_factor(2);
    let topic = log.create_topic("t", config).unwrap();
    (log, topic)
}

#[test]
fn every_replica_holds_the_same_bytes() {
    let (_root, dirs) = two_dirs();
    {
        let (log, topic) = replicated(&dirs, 3);
        for p in 0..3 {
            let partition = topic.partition(p).unwrap();
            for i in 0..5 {
                partition.append_values([format!("{p}-{i}")]).unwrap();
            }
            assert_eq!(partition.high_watermark(), 5);
        }
        assert_eq!(values(&log, "t", 1), ["1-0", "1-1", "1-2", "1-3", "1-4"]);
        log.close().unwrap();
    }
    for p in 0..3 {
        let copies = segments(&dirs, "t", p);
        assert!(!copies[0].is_empty());
        assert_eq!(copies[0], copies[1], "partition {p}: the replicas differ");
    }
    let log = Log::builder().dirs(&dirs).open().unwrap();
    assert_eq!(values(&log, "t", 2), ["2-0", "2-1", "2-2", "2-3", "2-4"]);
    log.close().unwrap();
}

/// Whichever replica a replaced (empty) directory held — the preferred leader's or a
/// follower's — the other one keeps every record, leads, and refills it at open.
#[test]
fn a_lost_leader_or_follower_is_rebuilt_from_the_other() {
    let (_root, dirs) = two_dirs();
    {
        let (log, topic) = replicated(&dirs, 2);
        for p in 0..2 {
            topic
                .partition(p)
                .unwrap()
                .append_values(["x", "y"])
                .unwrap();
        }
        log.close().unwrap();
    }
    // The second directory is replaced by an empty one: the first topic's placement is
    // partition 0 on [0, 1] and partition 1 on [1, 0], so partition 0 loses its follower
    // and partition 1 its preferred leader.
    std::fs::remove_dir_all(&dirs[1]).unwrap();
    std::fs::create_dir(&dirs[1]).unwrap();
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        for p in 0..2 {
            assert_eq!(values(&log, "t", p), ["x", "y"], "partition {p}");
            let partition = log.topic("t").unwrap().partition(p).unwrap();
            partition.append_values(["z"]).unwrap();
            assert_eq!(partition.high_watermark(), 3);
        }
        log.close().unwrap();
    }
    for p in 0..2 {
        let copies = segments(&dirs, "t", p);
        assert_eq!(copies[0], copies[1], "partition {p}");
    }
    let log = Log::builder().dirs(&dirs).open().unwrap();
    for p in 0..2 {
        assert_eq!(values(&log, "t", p), ["x", "y", "z"]);
    }
    log.close().unwrap();
}

/// Truncation cuts every replica in step, so later appends keep them identical.
#[test]
fn truncation_cuts_every_replica() {
    let (_root, dirs) = two_dirs();
    {
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let partition = log
            .create_topic("t", TopicConfig::default().replication_factor(2))
            .unwrap()
            .partition(0)
            .unwrap();
        for v in ["a", "b", "c", "d"] {
            partition.append_values([v]).unwrap();
        }
        partition.truncate_to(2).unwrap();
        partition.append_values(["z"]).unwrap();
        assert_eq!(values(&log, "t", 0), ["a", "b", "z"]);
        log.close().unwrap();
    }
    let copies = segments(&dirs, "t", 0);
    assert_eq!(copies[0], copies[1]);
}

#[test]
fn more_replicas_than_directories_is_refused() {
    let (_root, dirs) = two_dirs();
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let error = log
        .create_topic("t", TopicConfig::default().replication_factor(3))
        .unwrap_err();
    assert!(matches!(
        error,
        Error::InvalidReplicationFactor {
            requested: 3,
            available: 2
        }
    ));
    assert!(log.topics().is_empty());
}

/// The directory of partition `t-0`'s follower, made to fail every call.
fn fail_follower(log: &Log, dirs: &[PathBuf], fault: &tarnlog::storage::FaultStorage) {
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let follower = (0..dirs.len()).find(|&d| d != leader).unwrap();
    fault.fail_dir(&dirs[follower], tarnlog::storage::FaultKind::Eio);
}

/// Fewer in-sync replicas than `min_insync_replicas`: the append that loses the follower
/// stays in the log but answers `NOT_ENOUGH_REPLICAS_AFTER_APPEND`; the next is refused
/// before anything is written (`NOT_ENOUGH_REPLICAS`). A `min_insync_replicas` above the
/// replication factor asks for every replica, as in Kafka.
#[test]
fn too_few_in_sync_replicas_refuse_the_append() {
    let (_root, dirs) = two_dirs();
    let (log, fault) = common::faulty_log(&dirs);
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(3);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    fail_follower(&log, &dirs, &fault);
    let error = partition.append_values(["b"]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::NotEnoughReplicasAfterAppend {
                in_sync: 1,
                required: 2
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        partition.log_end_offset(),
        2,
        "the batch stays, as in Kafka"
    );
    let error = partition.append_values(["c"]).unwrap_err();
    assert!(matches!(
        error,
        Error::NotEnoughReplicas {
            in_sync: 1,
            required: 2
        }
    ));
    assert_eq!(partition.log_end_offset(), 2, "nothing written");
    assert_eq!(partition.high_watermark(), 1, "not advanced under min ISR");
    log.close().unwrap();
}

/// Where the kill test's child writes (its presence makes `replication_kill_child` run).
const CHILD_ENV: &str = "TARNLOG_REPLICATION_CHILD";

/// The child of `a_killed_writer_loses_no_acknowledged_record`: appends to a topic with
/// replication factor 3 and `EveryBatch` over three directories forever, printing each
/// acknowledged offset.
#[test]
fn replication_kill_child() {
    use std::io::Write as _;
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dirs = three_dirs(Path::new(&root));
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let topic = match log.topic("t") {
        Ok(topic) => topic,
        Err(_) => log
            .create_topic(
                "t",
                TopicConfig::default()
                    .replication_factor(3)
                    .min_insync_replicas(2)
                    .fsync(tarnlog::FsyncPolicy::EveryBatch),
            )
            .unwrap(),
    };
    let partition = topic.partition(0).unwrap();
    let mut out = std::io::stdout().lock();
    for i in partition.log_end_offset().. {
        let info = partition.append_values([format!("v{i}")]).unwrap();
        assert_eq!(info.base_offset, i);
        writeln!(out, "{}", info.base_offset).unwrap();
        out.flush().unwrap();
    }
}

fn three_dirs(root: &Path) -> Vec<PathBuf> {
    vec![root.join("a"), root.join("b"), root.join("c")]
}

/// Runs the child until it is killed after `wait`; returns the last offset it acknowledged.
fn run_child_until_killed(root: &Path, wait: std::time::Duration) -> Option<u64> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "replication_kill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(offset) = line.trim().parse::<u64>() {
                last = Some(offset);
            }
        }
        last
    });
    std::thread::sleep(wait);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Damages directory `dir` of a killed writer's log: round by round, its whole directory
/// is deleted, or a byte in the middle of its replica's segment is flipped.
fn damage(dirs: &[PathBuf], round: u64) -> String {
    let dir = &dirs[(round % 3) as usize];
    if round.is_multiple_of(2) {
        std::fs::remove_dir_all(dir).unwrap();
        return format!("deleted {}", dir.display());
    }
    let segment = dir.join("t-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap_or(0);
    if used < 100 {
        return "nothing to damage yet".into();
    }
    let at = detectable(&bytes, used / 2);
    bytes[at] ^= 0x5a;
    std::fs::write(&segment, bytes).unwrap();
    format!("flipped byte {at} of {}", segment.display())
}

/// `at`, or the first CRC-covered byte of its batch when `at` falls in the batch's
/// partition-leader-epoch or magic bytes (12..17): Kafka's format leaves the epoch outside
/// the CRC, so damage there cannot be detected (by Kafka either) and is not what this test
/// exercises.
fn detectable(segment: &[u8], at: usize) -> usize {
    let mut start = 0;
    while start + 12 <= segment.len() {
        let length = i32::from_be_bytes(segment[start + 8..start + 12].try_into().unwrap());
        let end = start + 12 + usize::try_from(length).unwrap_or(0);
        if at < end || length <= 0 {
            break;
        }
        start = end;
    }
    if (12..17).contains(&(at - start)) {
        start + 21
    } else {
        at
    }
}

/// SIGKILL a process appending with replication factor 3, then delete one directory or
/// corrupt its replica: after reopening, every acknowledged record is there, the damaged
/// replica has been rebuilt, and all three replicas agree byte for byte.
#[test]
fn a_killed_writer_loses_no_acknowledged_record() {
    let root = tempfile::tempdir().unwrap();
    let dirs = three_dirs(root.path());
    let mut acked = 0u64;
    for round in 0..8u64 {
        let wait = std::time::Duration::from_millis(30 + round * 17);
        if let Some(last) = run_child_until_killed(root.path(), wait) {
            acked = acked.max(last + 1);
        }
        let damaged = if dirs[0].join("t-0").exists() {
            damage(&dirs, round)
        } else {
            "nothing (no topic yet)".into()
        };
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let Ok(topic) = log.topic("t") else {
            // Killed before the child created its topic (a slow start).
            assert_eq!(
                acked, 0,
                "round {round}: acknowledged records without a topic"
            );
            log.close().unwrap();
            continue;
        };
        let partition = topic.partition(0).unwrap();
        assert!(
            partition.high_watermark() >= acked,
            "round {round} ({damaged}): {} visible, {acked} acknowledged",
            partition.high_watermark()
        );
        let read = partition.read(0, 64 << 20).unwrap();
        for (i, record) in read.records().take(acked as usize).enumerate() {
            let record = record.unwrap();
            assert_eq!(record.offset as usize, i, "round {round} ({damaged})");
            assert_eq!(record.value.unwrap(), format!("v{i}").as_bytes());
        }
        let described = log.describe_topic("t").unwrap();
        assert_eq!(
            described.under_replicated().count(),
            0,
            "round {round}: rebuilt"
        );
        log.close().unwrap();
        let copies = segments(&dirs, "t", 0);
        assert_eq!(
            copies[0], copies[1],
            "round {round} ({damaged}): replicas differ"
        );
        assert_eq!(
            copies[0], copies[2],
            "round {round} ({damaged}): replicas differ"
        );
    }
    eprintln!("replication kill test: {acked} records acknowledged over 8 kills");
    assert!(acked > 0, "the child acknowledged something");
}

/// `min_insync_replicas` binds `acks=All` only, as in Kafka: an `acks=Leader` producer
/// still writes to a partition with too few in-sync replicas (what it writes stays
/// invisible until the in-sync set is back to the minimum).
#[test]
fn min_insync_replicas_binds_only_acks_all() {
    use tarnlog::{Acks, ProducerConfig, ProducerRecord};
    let (_root, dirs) = two_dirs();
    let (log, fault) = common::faulty_log(&dirs);
    log.create_topic(
        "t",
        TopicConfig::default()
            .replication_factor(2)
            .min_insync_replicas(2),
    )
    .unwrap();
    fail_follower(&log, &dirs, &fault);
    let leader_acks = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let sent = leader_acks
        .send(ProducerRecord::new("t").value("fine"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(sent.offset, Some(0));
    // Without retries (it would wait for the follower up to `delivery_timeout_ms`).
    let all_acks = log
        .producer(ProducerConfig::default().acks(Acks::All).retries(0))
        .unwrap();
    let refused = all_acks
        .send(ProducerRecord::new("t").value("refused"))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        matches!(refused, Error::NotEnoughReplicas { .. }),
        "{refused:?}"
    );
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(partition.log_end_offset(), 1);
    assert!(values(&log, "t", 0).is_empty());
    drop((leader_acks, all_acks));
    log.close().unwrap();
}

/// `__consumer_offsets` is replicated too (factor 3 capped at the directory count): a
/// group's committed offsets survive losing either directory.
#[test]
fn committed_offsets_survive_losing_a_directory() {
    use tarnlog::{OffsetAndMetadata, TopicPartition};
    for lost in 0..2 {
        let (_root, dirs) = two_dirs();
        let tp = TopicPartition::new("t", 0);
        {
            let (log, topic) = replicated(&dirs, 1);
            topic
                .partition(0)
                .unwrap()
                .append_values(["a", "b"])
                .unwrap();
            log.commit_offsets("g", &[(tp.clone(), OffsetAndMetadata::new(2))])
                .unwrap();
            log.close().unwrap();
        }
        std::fs::remove_dir_all(&dirs[lost]).unwrap();
        std::fs::create_dir(&dirs[lost]).unwrap();
        let log = Log::builder().dirs(&dirs).open().unwrap();
        assert_eq!(
            log.committed_offset("g", &tp).unwrap().map(|c| c.offset),
            Some(2),
            "directory {lost} lost"
        );
        log.close().unwrap();
    }
}
