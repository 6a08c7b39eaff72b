//! Basic end-to-end behaviour of the storage core.
#![allow(clippy::unwrap_used)]

use tarnlog::{BatchBuilder, Error, FsyncPolicy, Log, TopicConfig};

// A log opened at a relative path (as the quickstart's `./tarnlog-data`): topics with
// partitions, their epoch and cleaner checkpoints, a producer and a consumer, then a
// reopen; prevents paths joined twice under a relative directory.
#[test]
fn a_relative_directory_works() {
    use tarnlog::{
        AutoOffsetReset, ConsumerConfig, ProducerConfig, ProducerRecord, TopicPartition,
    };
    // `cargo test` runs in the package root; `target` is ours to write in.
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    let relative = dir
        .path()
        .strip_prefix(std::env::current_dir().unwrap())
        .unwrap_or(dir.path())
        .to_path_buf();
    assert!(relative.is_relative(), "{relative:?}");
    for round in 0..2 {
        let log = Log::open(&relative).unwrap();
        if round == 0 {
            log.create_topic("t", TopicConfig::default().partitions(3))
                .unwrap();
        }
        let producer = log.producer(ProducerConfig::default()).unwrap();
        producer
            .send(
                ProducerRecord::new("t")
                    .partition(2)
                    .value(format!("v{round}")),
            )
            .unwrap()
            .wait()
            .unwrap();
        producer.close().unwrap();
        let mut consumer = log
            .consumer(
                ConsumerConfig::default()
                    .group_id("g")
                    .auto_offset_reset(AutoOffsetReset::Earliest),
            )
            .unwrap();
        consumer.assign([TopicPartition::new("t", 2)]).unwrap();
        // The group resumes after what it committed (auto-commit on close) last round.
        let mut seen = Vec::new();
        for _ in 0..50 {
            let records = consumer.poll(std::time::Duration::from_millis(20)).unwrap();
            seen.extend(records.into_iter().map(|r| r.value.unwrap()));
            if !seen.is_empty() {
                break;
            }
        }
        assert_eq!(seen, [format!("v{round}")]);
        consumer.close().unwrap();
        log.close().unwrap();
    }
}

// Append across segment rolls, read every offset, close and reopen cleanly; prevents a clean
// reopen that rescans or loses the tail.
#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic(
            "t",
            TopicConfig::default().partitions(2).segment_bytes(1024),
        )
        .unwrap();
    let p = topic.partition(1).unwrap();
    for i in 0..100u32 {
        let info = p.append_values([format!("value-{i}")]).unwrap();
        assert_eq!(info.base_offset, u64::from(i));
    }
    assert!(p.segment_count() > 1);
    let values: Vec<String> = (0..100)
        .map(|o| {
            let read = p.read(o, 1).unwrap();
            let r = read.records().next().unwrap().unwrap();
            assert_eq!(r.offset as u64, o);
            String::from_utf8(r.value.unwrap().to_vec()).unwrap()
        })
        .collect();
    assert_eq!(values[42], "value-42");
    log.close().unwrap();

    let log = Log::open(dir.path()).unwrap();
    assert!(
        log.recovery_report().is_clean(),
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(log.recovery_report().clean_dirs.len(), 1);
    let p = log.topic("t").unwrap().partition(1).unwrap();
    assert_eq!(p.log_end_offset(), 100);
    let all: Vec<_> = p
        .read(0, usize::MAX)
        .unwrap()
        .records()
        .map(|r| r.unwrap().offset)
        .collect();
    assert!(!all.is_empty());
    p.append_values(["after"]).unwrap();
    assert_eq!(p.log_end_offset(), 101);
    log.close().unwrap();
}

// A simulated kill after synced appends reopens unclean with every record and a working time
// index, and the directory lock keeps a second opener out; prevents lost acknowledged data.
#[test]
fn crash_reopen_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let p = log
        .create_topic(
            "t",
            TopicConfig::default()
                .segment_bytes(4096)
                .fsync(FsyncPolicy::EveryBatch),
        )
        .unwrap()
        .partition(0)
        .unwrap();
    let mut b = BatchBuilder::new();
    for i in 0..300u32 {
        b.push(1000 + i64::from(i), Some(b"k"), Some(&i.to_be_bytes()), &[]);
        p.append(b.finish().unwrap()).unwrap();
    }
    log.simulate_crash();
    let log = Log::open(dir.path()).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.unclean_dirs.len(), 1);
    let p = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(p.log_end_offset(), 300);
    assert_eq!(p.offset_for_time(1150).unwrap().unwrap().offset, 150);
    let second = Log::open(dir.path());
    assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
    log.close().unwrap();
}
