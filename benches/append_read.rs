//! Append and read throughput of tarnlog against the `commitlog` crate on the same workload
//! (100-byte values, no fsync; appends both into a fresh log per sample, cold start
//! included, and sustained into a long-lived one), group-commit throughput with `fdatasync`, and the time to
//! open a 1 GiB log after a clean close and after a kill. Figures go to BENCHMARKS.md.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use commitlog::message::MessageSet;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tarnlog::{BatchBuilder, FsyncPolicy, Log, TopicConfig};

const VALUE: [u8; 100] = [7u8; 100];
const BATCH_SIZES: [usize; 3] = [1, 64, 1024];

fn topic_config() -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(256 << 20)
        .max_message_bytes(1 << 24)
}

/// Appends `batches` batches of `per_batch` records, building each batch as a producer would.
fn tarnlog_append(batches: u64, per_batch: usize) -> Duration {
    let dir = common::scratch();
    let log = Log::open(dir.path()).unwrap();
    let partition = log
        .create_topic("bench", topic_config())
        .unwrap()
        .partition(0)
        .unwrap();
    let mut builder = BatchBuilder::with_capacity(per_batch * 120 + 128);
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..per_batch {
            builder.push(1_700_000_000_000, None, Some(&VALUE), &[]);
        }
        black_box(partition.append(builder.finish().unwrap()).unwrap());
    }
    let elapsed = start.elapsed();
    log.simulate_crash();
    elapsed
}

/// A `commitlog` log in `dir` with the benchmarks' segment and message limits.
fn commitlog_open(dir: &std::path::Path) -> commitlog::CommitLog {
    let mut options = commitlog::LogOptions::new(dir);
    options.segment_max_bytes(256 << 20);
    options.message_max_bytes(1 << 24);
    commitlog::CommitLog::new(options).unwrap()
}

/// Appends `batches` message sets of `per_batch` values to the peer (single messages when
/// `per_batch` is 1), then flushes; the time it took.
fn commitlog_batches(log: &mut commitlog::CommitLog, batches: u64, per_batch: usize) -> Duration {
    use commitlog::message::MessageBuf;
    let mut buf = MessageBuf::default();
    let start = Instant::now();
    for _ in 0..batches {
        if per_batch == 1 {
            black_box(log.append_msg(VALUE).unwrap());
        } else {
            for _ in 0..per_batch {
                buf.push(VALUE).unwrap();
            }
            black_box(log.append(&mut buf).unwrap());
            buf = MessageBuf::default();
        }
    }
    log.flush().unwrap();
    start.elapsed()
}

fn commitlog_append(batches: u64, per_batch: usize) -> Duration {
    let dir = common::scratch();
    let mut log = commitlog_open(dir.path());
    commitlog_batches(&mut log, batches, per_batch)
}

/// Bytes a sustained-append log takes before it is replaced (outside the timed part), so
/// the run stays within tmpfs while almost every sample writes into a warm, rolling log.
const SUSTAINED_RESET_BYTES: u64 = 2 << 30;

/// A long-lived tarnlog partition for the sustained benchmarks.
struct TarnlogSink {
    _dir: tempfile::TempDir,
    log: Log,
    partition: tarnlog::Partition,
    written: u64,
}

impl TarnlogSink {
    fn new() -> TarnlogSink {
        let dir = common::scratch();
        let log = Log::open(dir.path()).unwrap();
        let partition = log
            .create_topic("bench", topic_config())
            .unwrap()
            .partition(0)
            .unwrap();
        TarnlogSink {
            _dir: dir,
            log,
            partition,
            written: 0,
        }
    }
}

/// Appends to a long-lived log (replaced every `SUSTAINED_RESET_BYTES`, untimed): the
/// sustained rate, segment rolls included, without a fresh log's cold start in every sample.
fn tarnlog_sustained(sink: &mut Option<TarnlogSink>, batches: u64, per_batch: usize) -> Duration {
    if sink
        .as_ref()
        .is_none_or(|s| s.written > SUSTAINED_RESET_BYTES)
    {
        if let Some(old) = sink.take() {
            old.log.simulate_crash();
        }
        *sink = Some(TarnlogSink::new());
    }
    let sink = sink.as_mut().unwrap();
    let mut builder = BatchBuilder::with_capacity(per_batch * 120 + 128);
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..per_batch {
            builder.push(1_700_000_000_000, None, Some(&VALUE), &[]);
        }
        black_box(sink.partition.append(builder.finish().unwrap()).unwrap());
    }
    let elapsed = start.elapsed();
    sink.written += batches * per_batch as u64 * 116;
    elapsed
}

/// The peer's long-lived log, under the same rule.
fn commitlog_sustained(
    sink: &mut Option<(tempfile::TempDir, commitlog::CommitLog, u64)>,
    batches: u64,
    per_batch: usize,
) -> Duration {
    if sink
        .as_ref()
        .is_none_or(|(_, _, written)| *written > SUSTAINED_RESET_BYTES)
    {
        *sink = None;
        let dir = common::scratch();
        let log = commitlog_open(dir.path());
        *sink = Some((dir, log, 0));
    }
    let (_, log, written) = sink.as_mut().unwrap();
    let elapsed = commitlog_batches(log, batches, per_batch);
    *written += batches * per_batch as u64 * 116;
    elapsed
}

/// A benchmark group with this file's usual settings: 10 samples, 1 s warm-up, 3 s.
fn group_of<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

fn append_sustained(c: &mut Criterion) {
    let mut group = group_of(c, "append_sustained");
    for per_batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(per_batch as u64));
        let mut ours = None;
        group.bench_with_input(
            BenchmarkId::new("tarnlog", per_batch),
            &per_batch,
            |b, &n| {
                b.iter_custom(|iters| tarnlog_sustained(&mut ours, iters, n));
            },
        );
        if let Some(sink) = ours {
            sink.log.simulate_crash();
        }
        let mut peer = None;
        group.bench_with_input(
            BenchmarkId::new("commitlog", per_batch),
            &per_batch,
            |b, &n| {
                b.iter_custom(|iters| commitlog_sustained(&mut peer, iters, n));
            },
        );
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    let mut group = group_of(c, "append");
    for per_batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(per_batch as u64));
        group.bench_with_input(
            BenchmarkId::new("tarnlog", per_batch),
            &per_batch,
            |b, &n| {
                b.iter_custom(|iters| tarnlog_append(iters, n));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("commitlog", per_batch),
            &per_batch,
            |b, &n| {
                b.iter_custom(|iters| commitlog_append(iters, n));
            },
        );
    }
    group.finish();
}

const READ_RECORDS: u64 = 1 << 20;

fn read(c: &mut Criterion) {
    let dir = common::scratch();
    let log = Log::open(dir.path()).unwrap();
    let partition = log
        .create_topic("bench", topic_config())
        .unwrap()
        .partition(0)
        .unwrap();
    let mut builder = BatchBuilder::new();
    for _ in 0..READ_RECORDS / 1024 {
        for _ in 0..1024 {
            builder.push(1_700_000_000_000, None, Some(&VALUE), &[]);
        }
        partition.append(builder.finish().unwrap()).unwrap();
    }
    let peer_dir = common::scratch();
    let mut peer = commitlog_open(peer_dir.path());
    for _ in 0..READ_RECORDS / 1024 {
        let mut buf = commitlog::message::MessageBuf::default();
        for _ in 0..1024 {
            buf.push(VALUE).unwrap();
        }
        peer.append(&mut buf).unwrap();
    }
    peer.flush().unwrap();

    let mut group = group_of(c, "read");
    group.throughput(Throughput::Elements(READ_RECORDS));
    group.bench_function("tarnlog_zero_copy_crc_checked", |b| {
        b.iter(|| {
            let (mut offset, mut bytes) = (0u64, 0usize);
            while offset < READ_RECORDS {
                let read = partition.read(offset, 1 << 20).unwrap();
                for batch in read.batches() {
                    let batch = batch.unwrap();
                    for record in &batch {
                        let record = record.unwrap();
                        bytes += record.value.map_or(0, <[u8]>::len);
                    }
                    offset = batch.next_offset() as u64;
                }
            }
            assert_eq!(bytes as u64, READ_RECORDS * 100);
        });
    });
    group.bench_function("commitlog", |b| {
        b.iter(|| {
            let (mut offset, mut bytes) = (0u64, 0usize);
            while offset < READ_RECORDS {
                let messages = peer
                    .read(offset, commitlog::ReadLimit::max_bytes(1 << 20))
                    .unwrap();
                for m in messages.iter() {
                    bytes += m.payload().len();
                    offset = m.offset() + 1;
                }
            }
            assert_eq!(bytes as u64, READ_RECORDS * 100);
        });
    });
    group.finish();
    log.close().unwrap();
}

/// `threads` threads each appending `batches` batches of `per_batch` records; the time
/// until all are done.
fn threaded_appends(
    partition: &tarnlog::Partition,
    threads: usize,
    batches: u64,
    per_batch: usize,
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let partition = partition.clone();
            s.spawn(move || {
                let mut builder = BatchBuilder::new();
                for _ in 0..batches {
                    for _ in 0..per_batch {
                        builder.push(1_700_000_000_000, None, Some(&VALUE), &[]);
                    }
                    partition.append(builder.finish().unwrap()).unwrap();
                }
            });
        }
    });
    start.elapsed()
}

/// Appends from `threads` threads for a second before a durable benchmark, so that its
/// first samples find the disk as sustained syncing leaves it. Criterion's `--quick` mode
/// has no warm-up and may stop after 0.1 s of samples: without this it timed bursts into
/// an idle disk's write cache, which flattered the cheapest configuration (replication
/// factor 1 by about a third against sustained runs).
fn settle(partition: &tarnlog::Partition, threads: usize, per_batch: usize) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        threaded_appends(partition, threads, 20, per_batch);
    }
}

/// Replication's cost: 64-record batches into a three-directory log (all on one disk) with
/// replication factor 1, 2 and 3 (`acks=All`), without fsync (tmpfs, one thread) and with
/// `EveryBatch` from 16 threads (a real disk: the replicas' fsyncs are shared by the
/// appenders waiting on them, outside the partition's order lock).
fn replication(c: &mut Criterion) {
    const PER_BATCH: usize = 64;
    const THREADS: usize = 16;
    let mut group = group_of(c, "replication");
    for (name, durable) in [("no_fsync", false), ("every_batch_16_threads", true)] {
        for rf in [1u32, 2, 3] {
            let root = if durable {
                tempfile::tempdir().unwrap()
            } else {
                common::scratch()
            };
            let dirs = ["a", "b", "c"].map(|d| root.path().join(d));
            let log = Log::builder().dirs(&dirs).open().unwrap();
            let mut config = topic_config().replication_factor(rf);
            if durable {
                config = config.fsync(FsyncPolicy::EveryBatch);
            }
            let partition = log
                .create_topic("replicated", config)
                .unwrap()
                .partition(0)
                .unwrap();
            let threads = if durable { THREADS } else { 1 };
            if durable {
                settle(&partition, threads, PER_BATCH);
            }
            group.throughput(Throughput::Elements((threads * PER_BATCH) as u64));
            group.bench_function(format!("{name}/replication_factor_{rf}"), |b| {
                b.iter_custom(|iters| threaded_appends(&partition, threads, iters, PER_BATCH));
            });
            log.simulate_crash();
        }
    }
    group.finish();
}

/// Time to rebuild a 1 GiB replica: a two-directory log with replication factor 2 is
/// opened with one directory emptied, and the open copies the partition back from the
/// survivor (real disk, no fsync policy: the copy is synced at close).
fn rebuild(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let dirs = ["a", "b"].map(|d| root.path().join(d));
    write_one_gib(&dirs, 2);
    let mut group = c.benchmark_group("rebuild_1GiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(1 << 30));
    group.bench_function("replica_from_its_peer_at_open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                // Alternate the emptied directory, so each rebuild copies from a full one.
                let lost = &dirs[(i % 2) as usize];
                std::fs::remove_dir_all(lost).unwrap();
                let start = Instant::now();
                let log = Log::builder().dirs(&dirs).open().unwrap();
                total += start.elapsed();
                log.close().unwrap();
            }
            total
        });
    });
    group.finish();
}

/// A log over `dirs` holding 1 GiB in partition 0 of topic `big` (replication factor `rf`),
/// closed cleanly.
fn write_one_gib(dirs: &[std::path::PathBuf], rf: u32) {
    let log = Log::builder().dirs(dirs).open().unwrap();
    let partition = log
        .create_topic("big", topic_config().replication_factor(rf))
        .unwrap()
        .partition(0)
        .unwrap();
    fill(&partition, 1 << 30);
    log.close().unwrap();
}

/// Appends 1024-record batches to `partition` until `bytes` are written.
fn fill(partition: &tarnlog::Partition, bytes: usize) {
    let mut builder = BatchBuilder::new();
    let mut written = 0usize;
    while written < bytes {
        for _ in 0..1024 {
            builder.push(1_700_000_000_000, None, Some(&VALUE), &[]);
        }
        written += partition
            .append(builder.finish().unwrap())
            .unwrap()
            .size_bytes as usize;
    }
}

/// 16 threads appending 64-record batches with `EveryBatch`: one fdatasync serves many.
fn group_commit(c: &mut Criterion) {
    const THREADS: usize = 16;
    const PER_BATCH: usize = 64;
    let dir = tempfile::tempdir().unwrap(); // a real disk: fsync must cost what it costs
    let log = Log::open(dir.path()).unwrap();
    let config = topic_config().fsync(FsyncPolicy::EveryBatch);
    let partition = log
        .create_topic("durable", config)
        .unwrap()
        .partition(0)
        .unwrap();
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    settle(&partition, THREADS, PER_BATCH);
    group.throughput(Throughput::Elements((THREADS * PER_BATCH) as u64));
    group.bench_function("16_threads_x_64_records_every_batch", |b| {
        b.iter_custom(|iters| threaded_appends(&partition, THREADS, iters, PER_BATCH));
    });
    group.finish();
    log.close().unwrap();
}

/// Opening a 1 GiB log after a clean close, and after a kill (full rescan from offset 0).
fn open(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_one_gib(&[dir.path().to_path_buf()], 1);
    let mut group = c.benchmark_group("open_1GiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("after_clean_close", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = Log::open(dir.path()).unwrap();
                total += start.elapsed();
                log.close().unwrap();
            }
            total
        });
    });
    group.bench_function("after_kill", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A kill leaves no clean-shutdown marker: the next open rescans everything
                // above the recovery point (0 here, as nothing was flushed after the kill).
                Log::open(dir.path()).unwrap().simulate_crash();
                std::fs::write(dir.path().join("recovery-point-offset-checkpoint"), b"").unwrap();
                let start = Instant::now();
                let log = Log::open(dir.path()).unwrap();
                total += start.elapsed();
                assert!(log.recovery_report().partitions[0].segments_scanned > 0);
                log.simulate_crash();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    append,
    append_sustained,
    read,
    replication,
    rebuild,
    group_commit,
    open
);
criterion_main!(benches);
