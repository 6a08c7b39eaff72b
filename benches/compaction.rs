//! Log compaction: the cleaner's throughput (MB/s of log cleaned, one `maintain` pass over
//! a 32 MiB partition of 100-byte values on 10,000 keys) and the throughput of a producer
//! sending into a compacted topic with and without the cleaner thread running beside it.
//! No peer crate compacts (see peers-bench.md), so there is no ratio. Figures go to
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tarnlog::{
    Acks, BatchBuilder, CleanupPolicy, Log, ProducerConfig, ProducerRecord, TopicConfig,
};

const VALUE: [u8; 100] = [7u8; 100];
const KEYS: u64 = 10_000;
const LOG_BYTES: u64 = 32 << 20;
const PER_BATCH: usize = 64;

fn config() -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(4 << 20)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
}

/// Appends `batches` batches of `PER_BATCH` keyed records, keys cycling over `KEYS`.
fn write(partition: &tarnlog::Partition, batches: u64, first: u64) {
    let mut builder = BatchBuilder::with_capacity(PER_BATCH * 140 + 128);
    let mut i = first;
    for _ in 0..batches {
        for _ in 0..PER_BATCH {
            let key = format!("key-{:08}", i % KEYS);
            builder.push(1_700_000_000_000, Some(key.as_bytes()), Some(&VALUE), &[]);
            i += 1;
        }
        partition.append(builder.finish().unwrap()).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A log in `dir`; `cleaning`: with the cleaner thread passing every 10 ms.
fn open(dir: &Path, cleaning: bool) -> Log {
    Log::builder()
        .dir(dir)
        .background_maintenance(cleaning)
        .cleaner_backoff_ms(10)
        .open()
        .unwrap()
}

fn cleaner_throughput(c: &mut Criterion) {
    let template = common::scratch();
    let size = {
        let log = open(template.path(), false);
        let partition = log
            .create_topic("c", config())
            .unwrap()
            .partition(0)
            .unwrap();
        let batch_bytes = (PER_BATCH * 125) as u64;
        write(&partition, LOG_BYTES / batch_bytes, 0);
        let size = log.describe_topic("c").unwrap().size_bytes();
        log.close().unwrap();
        size
    };
    let mut group = c.benchmark_group("cleaner");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(size));
    group.bench_function("clean_32MiB_10k_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = common::scratch();
                copy_dir(template.path(), dir.path());
                let log = open(dir.path(), false);
                let start = Instant::now();
                let report = log.maintain().unwrap();
                total += start.elapsed();
                assert_eq!(report.partitions_cleaned, 1);
                log.simulate_crash();
            }
            total
        });
    });
    group.finish();
}

/// A producer (`acks=Leader`, 64 KiB batches) sends 400,000 keyed records (about 50 MiB)
/// into a compacted topic with 4 MiB segments, with the cleaner thread passing every 10 ms
/// or not at all; the time until `flush` returns.
fn produce_beside_cleaner(c: &mut Criterion) {
    const RECORDS: u64 = 400_000;
    let mut group = c.benchmark_group("cleaner");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    let keys: Vec<Bytes> = (0..KEYS)
        .map(|i| Bytes::from(format!("key-{i:08}")))
        .collect();
    let value = Bytes::from_static(&VALUE);
    for cleaning in [false, true] {
        let name = if cleaning {
            "produce_with_cleaner"
        } else {
            "produce_without_cleaner"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = common::scratch();
                    let log = open(dir.path(), cleaning);
                    log.create_topic("c", config()).unwrap();
                    let config = ProducerConfig::default()
                        .acks(Acks::Leader)
                        .batch_size(64 << 10);
                    let producer = log.producer(config).unwrap();
                    let start = Instant::now();
                    for i in 0..RECORDS {
                        let key = keys[(i % KEYS) as usize].clone();
                        let record = ProducerRecord::new("c").key(key).value(value.clone());
                        drop(producer.send(record).unwrap());
                    }
                    producer.flush().unwrap();
                    total += start.elapsed();
                    producer.close().unwrap();
                    log.simulate_crash();
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, cleaner_throughput, produce_beside_cleaner);
criterion_main!(benches);
