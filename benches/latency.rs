//! End-to-end latency, as histograms (not a criterion benchmark: it measures
//! distributions at a fixed offered rate). Figures go to BENCHMARKS.md.
//!
//! 1. `send` → `poll` returning the record, non-durable (tmpfs, acks=Leader), at 100 k
//!    records/s; the clock starts at each record's scheduled send time, so a stalled
//!    sender is charged (no coordinated omission).
//! 2. Durable acks: fsync every batch on the real disk (`/tmp`), acks=All, at 20 k
//!    records/s: time from scheduled send to the acknowledgement, and the producer's
//!    throughput when it sends as fast as it can; next to the disk's own `fdatasync`
//!    latency measured in the same run.
//!
//! Run with `cargo bench --bench latency`.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tarnlog::{
    Acks, AutoOffsetReset, ConsumerConfig, FsyncPolicy, Log, ProducerConfig, ProducerRecord,
    SendFuture, TopicConfig, TopicPartition,
};

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

fn print(name: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "{name}: n={} p50={:.1}us p90={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
        h.len(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1_000.0
    );
}

/// Sleeps (coarsely) then spins until `at`.
fn wait_until(at: Instant) {
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        let left = at - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left.saturating_sub(Duration::from_micros(100)));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn send_to_poll(dir: &Path, rate: u64, seconds: u64) {
    let log = Log::open(dir).unwrap();
    log.create_topic("lat", TopicConfig::default().segment_bytes(256 << 20))
        .unwrap();
    let base = Instant::now();
    let total = rate * seconds;
    let consumer_log = log.clone();
    let reader = std::thread::spawn(move || {
        let mut consumer = consumer_log
            .consumer(ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest))
            .unwrap();
        consumer.assign([TopicPartition::new("lat", 0)]).unwrap();
        let mut h = histogram();
        let mut seen = 0;
        while seen < total {
            for record in consumer.poll(Duration::from_secs(5)).unwrap() {
                let now = base.elapsed().as_nanos() as u64;
                let value = record.value.unwrap();
                let scheduled = u64::from_le_bytes(value[..8].try_into().unwrap());
                // The first second warms up.
                if scheduled > 1_000_000_000 {
                    h.record(now.saturating_sub(scheduled).max(1)).unwrap();
                }
                seen += 1;
            }
        }
        h
    });
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let interval = 1_000_000_000 / rate;
    for i in 0..total {
        let scheduled = i * interval;
        wait_until(base + Duration::from_nanos(scheduled));
        let mut value = vec![0u8; 100];
        value[..8].copy_from_slice(&scheduled.to_le_bytes());
        drop(
            producer
                .send(ProducerRecord::new("lat").value(value))
                .unwrap(),
        );
    }
    let h = reader.join().unwrap();
    print(
        &format!("send->poll, non-durable, {rate} rec/s (after 1 s warm-up)"),
        &h,
    );
    drop(producer);
    log.close().unwrap();
}

/// Ack latency and throughput of `acks=All` sends with fsync every batch, into a log over
/// three directories of `dir` (one disk) with replication factor `rf`.
fn durable(dir: &Path, rf: u32, rate: u64, seconds: u64) {
    let dirs = ["a", "b", "c"].map(|d| dir.join(d));
    let log = Log::builder().dirs(&dirs).open().unwrap();
    let config = TopicConfig::default()
        .fsync(FsyncPolicy::EveryBatch)
        .replication_factor(rf);
    log.create_topic("dur", config).unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, SendFuture)>();
    let waiter = std::thread::spawn(move || {
        let mut h = histogram();
        for (scheduled, future) in rx {
            future.wait().unwrap();
            h.record(scheduled.elapsed().as_nanos() as u64).unwrap();
        }
        h
    });
    let base = Instant::now();
    let interval = 1_000_000_000 / rate;
    for i in 0..rate * seconds {
        let scheduled = base + Duration::from_nanos(i * interval);
        wait_until(scheduled);
        let future = producer
            .send(ProducerRecord::new("dur").value(vec![1u8; 100]))
            .unwrap();
        tx.send((scheduled, future)).unwrap();
    }
    drop(tx);
    print(
        &format!(
            "ack latency, acks=All + fsync every batch, replication factor {rf}, {rate} rec/s"
        ),
        &waiter.join().unwrap(),
    );
    // Throughput: as fast as the producer takes records.
    let records = 200_000u64;
    let start = Instant::now();
    for _ in 0..records {
        drop(
            producer
                .send(ProducerRecord::new("dur").value(vec![1u8; 100]))
                .unwrap(),
        );
    }
    producer.flush().unwrap();
    let elapsed = start.elapsed();
    println!(
        "throughput, acks=All + fsync every batch, replication factor {rf}: {:.0} rec/s ({records} records in {elapsed:?})",
        records as f64 / elapsed.as_secs_f64()
    );
    drop(producer);
    log.close().unwrap();
}

fn fdatasync_latency(dir: &Path) {
    let path = dir.join("fdatasync-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let page = [7u8; 4096];
    let mut h = histogram();
    for i in 0..300u64 {
        file.write_all_at(&page, i * 4096).unwrap();
        let start = Instant::now();
        file.sync_data().unwrap();
        h.record(start.elapsed().as_nanos() as u64).unwrap();
    }
    print("disk fdatasync after a 4 KiB append", &h);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg at start: {}", loadavg.trim());
    let shm = Path::new("/dev/shm");
    let fast = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    send_to_poll(fast.path(), 100_000, 5);
    let disk = tempfile::tempdir().unwrap();
    fdatasync_latency(disk.path());
    durable(&disk.path().join("rf1"), 1, 20_000, 3);
    durable(&disk.path().join("rf3"), 3, 20_000, 3);
    fdatasync_latency(disk.path());
    std::io::stdout().flush().unwrap();
}
