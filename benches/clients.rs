//! Producer and consumer throughput: `send` of 100-byte records from one thread through
//! partitioning and batching, and `poll` over a filled partition. Figures go to
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tarnlog::{
    Acks, AutoOffsetReset, ConsumerConfig, Log, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

fn topic_config(partitions: u32) -> TopicConfig {
    TopicConfig::default()
        .partitions(partitions)
        .segment_bytes(256 << 20)
}

/// Sends `records` values of 100 bytes (keyed with 64 keys, or without keys: sticky
/// partitioning) over 4 partitions, one `send` each or `send_batch` calls of `per_call`
/// records, then flushes.
fn send(records: u64, keyed: bool, linger_ms: u64, per_call: usize) -> Duration {
    let dir = common::scratch();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("bench", topic_config(4)).unwrap();
    let producer = log
        .producer(
            ProducerConfig::default()
                .acks(Acks::Leader)
                .linger_ms(linger_ms),
        )
        .unwrap();
    let value = Bytes::from_static(&[7u8; 100]);
    let keys: Vec<Bytes> = (0..64).map(|k| Bytes::from(format!("key-{k}"))).collect();
    let record = |i: u64| {
        let record = ProducerRecord::new("bench").value(value.clone());
        if keyed {
            record.key(keys[i as usize % keys.len()].clone())
        } else {
            record
        }
    };
    let start = Instant::now();
    if per_call > 1 {
        let mut calls = (0..records).map(record).peekable();
        while calls.peek().is_some() {
            let records: Vec<ProducerRecord> = calls.by_ref().take(per_call).collect();
            drop(black_box(producer.send_batch(records).unwrap()));
        }
    } else {
        for i in 0..records {
            drop(black_box(producer.send(record(i)).unwrap()));
        }
    }
    producer.flush().unwrap();
    let elapsed = start.elapsed();
    drop(producer);
    log.simulate_crash();
    elapsed
}

/// Records per criterion iteration of the `send` benchmarks: enough that the flush that
/// ends each sample (a wake-up of the sender thread, tens of microseconds when its vCPU
/// is idle) is a small part of it even when criterion asks for few iterations.
const SENDS_PER_ITERATION: u64 = 1_000;

fn producer(c: &mut Criterion) {
    let mut group = c.benchmark_group("producer_send");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(SENDS_PER_ITERATION));
    let per = SENDS_PER_ITERATION;
    group.bench_function("unkeyed_sticky", |b| {
        b.iter_custom(|n| send(n * per, false, 0, 1));
    });
    group.bench_function("keyed_murmur2", |b| {
        b.iter_custom(|n| send(n * per, true, 0, 1));
    });
    group.bench_function("keyed_murmur2_linger_5ms", |b| {
        b.iter_custom(|n| send(n * per, true, 5, 1));
    });
    group.bench_function("unkeyed_sticky_send_batch_100", |b| {
        b.iter_custom(|n| send(n * per, false, 0, 100));
    });
    group.finish();
}

const POLL_RECORDS: u64 = 1 << 20;

fn consumer(c: &mut Criterion) {
    let dir = common::scratch();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("bench", topic_config(1)).unwrap();
    // Large batches, as a producer under load makes them.
    let producer = log
        .producer(
            ProducerConfig::default()
                .batch_size(128 << 10)
                .linger_ms(100),
        )
        .unwrap();
    let value = Bytes::from_static(&[7u8; 100]);
    for _ in 0..POLL_RECORDS {
        drop(
            producer
                .send(ProducerRecord::new("bench").value(value.clone()))
                .unwrap(),
        );
    }
    producer.close().unwrap();
    let mut group = c.benchmark_group("consumer_poll");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(POLL_RECORDS));
    // Kafka's default (CRCs checked) at two poll sizes, then `check_crcs(false)`; each with
    // owned records (by value), then the borrowed `views`.
    for (max_poll_records, check_crcs, views) in [
        (500, true, false),
        (10_000, true, false),
        (500, false, false),
        (500, true, true),
        (10_000, true, true),
    ] {
        let mut name = format!("max_poll_records_{max_poll_records}");
        if !check_crcs {
            name.push_str("_check_crcs_off");
        }
        if views {
            name.push_str("_views");
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut consumer = log
                    .consumer(
                        ConsumerConfig::default()
                            .auto_offset_reset(AutoOffsetReset::Earliest)
                            .max_poll_records(max_poll_records)
                            .check_crcs(check_crcs),
                    )
                    .unwrap();
                consumer.assign([TopicPartition::new("bench", 0)]).unwrap();
                let (mut count, mut bytes) = (0u64, 0usize);
                while count < POLL_RECORDS {
                    let records = consumer.poll(Duration::ZERO).unwrap();
                    if views {
                        for record in records.views() {
                            bytes += record.value().map_or(0, <[u8]>::len);
                            count += 1;
                        }
                    } else {
                        for record in records {
                            bytes += record.value.map_or(0, |v| v.len());
                            count += 1;
                        }
                    }
                }
                assert_eq!(bytes as u64, POLL_RECORDS * 100);
            });
        });
    }
    group.finish();
    log.close().unwrap();
}

/// A consumer of group `group` subscribed to "bench", reading from the start.
fn member(log: &Log, group: &str) -> tarnlog::Consumer {
    let mut consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id(group)
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .enable_auto_commit(false)
                .max_poll_records(10_000),
        )
        .unwrap();
    consumer.subscribe(["bench"]).unwrap();
    consumer
}

/// Polls the members in turn (zero timeouts) until all hold one generation's assignment;
/// returns how many records those polls returned.
fn settle(members: &mut [tarnlog::Consumer]) -> u64 {
    let mut read = 0;
    loop {
        for m in members.iter_mut() {
            read += m.poll(Duration::ZERO).unwrap().count() as u64;
        }
        let generations: std::collections::BTreeSet<Option<i32>> = members
            .iter()
            .map(|m| m.group_membership().map(|(_, g)| g))
            .collect();
        if generations.len() == 1 && !generations.contains(&None) {
            return read;
        }
    }
}

/// A log for the group benchmarks (no initial rebalance delay) with topic `bench` of
/// `partitions` partitions; the directory lives as long as the returned guard.
fn group_log(partitions: u32) -> (tempfile::TempDir, Log) {
    let dir = common::scratch();
    let log = Log::builder()
        .dir(dir.path())
        .group_initial_rebalance_delay_ms(0)
        .offsets_topic_partitions(1)
        .open()
        .unwrap();
    log.create_topic("bench", topic_config(partitions)).unwrap();
    (dir, log)
}

/// Rebalance time: 8 members join a group over 256 partitions, from the first join to all
/// members stable.
fn rebalance(c: &mut Criterion) {
    let (_dir, log) = group_log(256);
    let mut group = c.benchmark_group("group");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut round = 0u64;
    group.bench_function("rebalance_8_members_256_partitions", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let name = format!("g{round}");
                let start = Instant::now();
                let mut members: Vec<_> = (0..8).map(|_| member(&log, &name)).collect();
                black_box(settle(&mut members));
                total += start.elapsed();
                for m in members {
                    m.close().unwrap();
                }
            }
            total
        });
    });
    group.finish();
}

/// Group throughput: 4 member threads against 1, draining 16 partitions.
fn group_throughput(c: &mut Criterion) {
    const PER_PARTITION: u64 = 1 << 16;
    let mut round = 0u64;
    let (_dir, log) = group_log(16);
    let mut builder = tarnlog::BatchBuilder::new();
    for p in 0..16 {
        let partition = log.topic("bench").unwrap().partition(p).unwrap();
        for _ in 0..PER_PARTITION / 1024 {
            for _ in 0..1024 {
                builder.push(1_700_000_000_000, None, Some(&[7u8; 100]), &[]);
            }
            partition.append(builder.finish().unwrap()).unwrap();
        }
    }
    let mut group = c.benchmark_group("group_throughput");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(16 * PER_PARTITION));
    for consumers in [1usize, 4] {
        group.bench_function(format!("{consumers}_consumers_16_partitions"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let name = format!("t{round}");
                    let mut members: Vec<_> = (0..consumers).map(|_| member(&log, &name)).collect();
                    let early = settle(&mut members);
                    let start = Instant::now();
                    let threads: Vec<_> = members
                        .into_iter()
                        .map(|mut m| {
                            std::thread::spawn(move || {
                                let mut n = 0u64;
                                let mut idle = 0;
                                while idle < 3 {
                                    let got = m.poll(Duration::from_millis(5)).unwrap().count();
                                    n += got as u64;
                                    idle = if got == 0 { idle + 1 } else { 0 };
                                }
                                (n, m)
                            })
                        })
                        .collect();
                    let mut read = early;
                    let mut done = Vec::new();
                    for t in threads {
                        let (n, m) = t.join().unwrap();
                        read += n;
                        done.push(m);
                    }
                    total += start.elapsed();
                    // At least once: records read while the group settled (before any
                    // commit) are read again by their final owner.
                    assert!(read >= 16 * PER_PARTITION, "read {read}");
                    for m in done {
                        m.close().unwrap();
                    }
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, producer, consumer, rebalance, group_throughput);
criterion_main!(benches);
