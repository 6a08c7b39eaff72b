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

/// Sends `records` values of 100 bytes without keys (sticky partitioning) over 4
/// partitions, then flushes.
fn send(records: u64, keyed: bool, linger_ms: u64) -> Duration {
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
    let start = Instant::now();
    for i in 0..records {
        let mut record = ProducerRecord::new("bench").value(value.clone());
        if keyed {
            record = record.key(keys[i as usize % keys.len()].clone());
        }
        drop(black_box(producer.send(record).unwrap()));
    }
    producer.flush().unwrap();
    let elapsed = start.elapsed();
    drop(producer);
    log.simulate_crash();
    elapsed
}

fn producer(c: &mut Criterion) {
    let mut group = c.benchmark_group("producer_send");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    group.bench_function("unkeyed_sticky", |b| b.iter_custom(|n| send(n, false, 0)));
    group.bench_function("keyed_murmur2", |b| b.iter_custom(|n| send(n, true, 0)));
    group.bench_function("keyed_murmur2_linger_5ms", |b| {
        b.iter_custom(|n| send(n, true, 5));
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
    for max_poll_records in [500, 10_000] {
        group.bench_function(format!("max_poll_records_{max_poll_records}"), |b| {
            b.iter(|| {
                let mut consumer = log
                    .consumer(
                        ConsumerConfig::default()
                            .auto_offset_reset(AutoOffsetReset::Earliest)
                            .max_poll_records(max_poll_records),
                    )
                    .unwrap();
                consumer.assign([TopicPartition::new("bench", 0)]).unwrap();
                let (mut count, mut bytes) = (0u64, 0usize);
                while count < POLL_RECORDS {
                    for record in consumer.poll(Duration::ZERO).unwrap() {
                        bytes += record.value.map_or(0, |v| v.len());
                        count += 1;
                    }
                }
                assert_eq!(bytes as u64, POLL_RECORDS * 100);
            });
        });
    }
    group.finish();
    log.close().unwrap();
}

criterion_group!(benches, producer, consumer);
criterion_main!(benches);
