//! Committed offsets across process kills: a child process (this test binary, run as
//! `offsets_child`) produces records and commits a consumer group's position in a loop,
//! reporting each acknowledged produce (`P end`) and commit (`C offset`) on a pipe. The
//! parent SIGKILLs it at random moments, reopens the log and checks that the offsets topic
//! replays, the recovered commit is at least the last acknowledged one and never points
//! past the recovered data, and every record below it is readable.
//!
//! `TARNLOG_SEED` replays a run's kill timings; `TARNLOG_SOAK=1` raises the kills from 40
//! to 1,000.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tarnlog::{
    Acks, AutoOffsetReset, ConsumerConfig, Log, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

const ENV_CHILD: &str = "TARNLOG_OFFSETS_CHILD";
const TOPIC: &str = "data";
const GROUP: &str = "g";

fn open(dir: &Path) -> Log {
    Log::builder()
        .dir(dir)
        .offsets_topic_partitions(4)
        .open()
        .unwrap()
}

#[test]
fn offsets_child() {
    let Ok(dir) = std::env::var(ENV_CHILD) else {
        return;
    };
    let log = open(Path::new(&dir));
    if log.topic(TOPIC).is_err() {
        log.create_topic(TOPIC, TopicConfig::default()).unwrap();
    }
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let mut consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id(GROUP)
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .enable_auto_commit(false)
                .max_poll_records(37),
        )
        .unwrap();
    consumer.assign([TopicPartition::new(TOPIC, 0)]).unwrap();
    let mut out = std::io::stdout().lock();
    for round in 0u64.. {
        let futures: Vec<_> = (0..50)
            .map(|i| {
                let value = format!("{round}-{i}");
                producer.send(ProducerRecord::new(TOPIC).partition(0).value(value))
            })
            .collect::<tarnlog::Result<_>>()
            .unwrap();
        let mut end = 0;
        for future in futures {
            end = future.wait().unwrap().offset.unwrap() + 1;
        }
        writeln!(out, "P {end}").unwrap();
        out.flush().unwrap();
        consumer.poll(Duration::ZERO).unwrap();
        consumer.commit_sync().unwrap();
        let committed = consumer
            .committed(&TopicPartition::new(TOPIC, 0))
            .unwrap()
            .unwrap()
            .offset;
        writeln!(out, "C {committed}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn committed_offsets_survive_kills_and_never_pass_the_data() {
    let mut rng = common::Rng(common::seed("offsets_crash") | 1);
    let kills = if std::env::var("TARNLOG_SOAK").is_ok_and(|v| v == "1") {
        1_000
    } else {
        40
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut last_produced, mut last_committed) = (0u64, 0u64);
    for kill in 0..kills {
        let run = Duration::from_millis(20 + rng.below(80) as u64);
        let (lines, _) = common::run_and_kill("offsets_child", ENV_CHILD, dir.path(), run);
        let acks = lines.iter().filter_map(|line| {
            let mut parts = line.split(' ');
            let (Some(kind), Some(n)) = (parts.next(), parts.next()) else {
                return None;
            };
            match (kind, n.parse::<u64>()) {
                ("P" | "C", Ok(n)) => Some((kind.to_owned(), n)),
                _ => None,
            }
        });
        for (kind, n) in acks {
            match kind.as_str() {
                "P" => last_produced = last_produced.max(n),
                _ => last_committed = last_committed.max(n),
            }
        }
        let log = open(dir.path());
        let tp = TopicPartition::new(TOPIC, 0);
        let Ok(topic) = log.topic(TOPIC) else {
            assert_eq!(
                last_produced, 0,
                "kill {kill}: acknowledged data but no topic"
            );
            continue;
        };
        let partition = topic.partition(0).unwrap();
        let end = partition.log_end_offset();
        assert!(
            end >= last_produced,
            "kill {kill}: end {end} < acked {last_produced}"
        );
        let committed = log
            .committed_offset(GROUP, &tp)
            .unwrap()
            .map_or(0, |c| c.offset);
        assert!(
            committed >= last_committed,
            "kill {kill}: commit {committed} < acknowledged {last_committed}"
        );
        assert!(
            committed <= end,
            "kill {kill}: commit {committed} past data end {end}"
        );
        // Everything below the commit is there, in order.
        let mut offset = 0;
        while offset < committed {
            for record in partition.read(offset, 1 << 20).unwrap().records() {
                let record = record.unwrap();
                assert_eq!(record.offset as u64, offset, "kill {kill}: gap");
                offset += 1;
            }
        }
        log.close().unwrap();
    }
    assert!(last_committed > 0, "the child never committed");
    println!("offsets_crash: {kills} kills, {last_produced} records, commit at {last_committed}");
}
