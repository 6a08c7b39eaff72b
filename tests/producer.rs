//! The producer: partitioning (murmur2, sticky, custom), batching with `batch_size` and
//! `linger_ms` on an injected clock, `flush`, acks, back-pressure, bad input, restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tarnlog::storage::{FaultKind, FaultStorage, OpKind, OsStorage};
use tarnlog::{
    Acks, BatchBuilder, Error, FsyncPolicy, Log, ManualClock, Partitioner, Producer,
    ProducerConfig, ProducerRecord, Record, RoundRobinPartitioner, SendFuture, TimestampType,
    TopicConfig, partition_for_key,
};

const T0: i64 = 1_700_000_000_000;

/// Every record of a partition, in offset order (a read returns one segment's batches at
/// most, as a Kafka fetch does, so this reads on to the log end).
fn read_all(log: &Log, topic: &str, partition: u32) -> Vec<Record> {
    let p = log.topic(topic).unwrap().partition(partition).unwrap();
    let mut records = Vec::new();
    let mut offset = p.log_start_offset();
    while offset < p.high_watermark() {
        for record in p.read(offset, usize::MAX).unwrap().records() {
            let record = record.unwrap();
            offset = record.offset as u64 + 1;
            records.push(record);
        }
    }
    records
}

/// How many batches partition `partition` holds.
fn batch_count(log: &Log, topic: &str, partition: u32) -> usize {
    let p = log.topic(topic).unwrap().partition(partition).unwrap();
    p.read(0, usize::MAX).unwrap().batches().count()
}

fn value_of(record: &Record) -> String {
    String::from_utf8(record.value.as_deref().unwrap().to_vec()).unwrap()
}

/// A log in `root` whose storage calls go through a fault injector.
fn log_with_faults(root: &Path) -> (Log, FaultStorage) {
    let faults = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dir(root)
        .storage(faults.shared())
        .open()
        .unwrap();
    (log, faults)
}

/// A manual clock and a log in `root` that reads it.
fn log_with_clock(root: &Path) -> (Log, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::builder()
        .dir(root)
        .clock(clock.clone())
        .open()
        .unwrap();
    (log, clock)
}

/// [`log_with_clock`] with topic `t` of `partitions` partitions.
fn topic_t_on_a_manual_clock(root: &Path, partitions: u32) -> (Log, Arc<ManualClock>) {
    let (log, clock) = log_with_clock(root);
    log.create_topic("t", TopicConfig::default().partitions(partitions))
        .unwrap();
    (log, clock)
}

#[test]
fn producer_and_log_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Producer>();
    send_sync::<Log>();
    send::<SendFuture>();
}

#[test]
fn keyed_records_land_where_kafka_puts_them_in_send_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("orders", TopicConfig::default().partitions(4))
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut futures = Vec::new();
    for i in 0..300 {
        let user = users[i % users.len()];
        let record = ProducerRecord::new("orders")
            .key(user)
            .value(format!("{user}-{i}"))
            .header("n", i.to_string())
            .timestamp(T0 + i as i64);
        futures.push((user, i, producer.send(record).unwrap()));
    }
    let mut next_offset = [0u64; 4];
    for (user, i, future) in futures {
        let metadata = future.wait().unwrap();
        assert_eq!(metadata.topic, "orders");
        assert_eq!(metadata.partition, partition_for_key(user.as_bytes(), 4));
        assert_eq!(metadata.timestamp, T0 + i as i64);
        // Offsets per partition follow send order.
        let p = metadata.partition as usize;
        assert_eq!(metadata.offset, Some(next_offset[p]), "record {i}");
        next_offset[p] += 1;
    }
    for partition in 0..4 {
        for record in read_all(&log, "orders", partition) {
            let user = std::str::from_utf8(record.key.as_deref().unwrap()).unwrap();
            assert_eq!(partition_for_key(user.as_bytes(), 4), partition);
            assert!(value_of(&record).starts_with(user));
            assert_eq!(record.headers.len(), 1);
            assert_eq!(record.timestamp_type, TimestampType::CreateTime);
        }
    }
    producer.close().unwrap();
    log.close().unwrap();
}

#[test]
fn order_within_a_partition_holds_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let topic_config = TopicConfig::default().partitions(3);
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic("t", topic_config).unwrap();
        let producer = log
            .producer(ProducerConfig::default().batch_size(500))
            .unwrap();
        for i in 0..200 {
            let record = ProducerRecord::new("t")
                .key(format!("k{}", i % 7))
                .value(i.to_string());
            drop(producer.send(record).unwrap());
        }
        producer.flush().unwrap();
        producer.close().unwrap();
        log.close().unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    for i in 200..300 {
        let record = ProducerRecord::new("t")
            .key(format!("k{}", i % 7))
            .value(i.to_string());
        drop(producer.send(record).unwrap());
    }
    producer.flush().unwrap();
    let mut per_key: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    let mut total = 0;
    for partition in 0..3 {
        let records = read_all(&log, "t", partition);
        for (expected_offset, record) in records.iter().enumerate() {
            assert_eq!(
                record.offset as usize, expected_offset,
                "offsets are contiguous"
            );
            let n: u64 = value_of(record).parse().unwrap();
            per_key
                .entry(record.key.as_deref().unwrap().to_vec())
                .or_default()
                .push(n);
            total += 1;
        }
    }
    assert_eq!(total, 300);
    for (key, values) in per_key {
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "key {key:?} out of order: {values:?}"
        );
    }
}

#[test]
fn records_without_key_stick_to_a_partition_for_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = topic_t_on_a_manual_clock(dir.path(), 4);
    // About 1000 bytes per batch: about 8 records of 100 bytes stick together.
    let producer = log
        .producer(ProducerConfig::default().batch_size(1000).linger_ms(60_000))
        .unwrap();
    let mut partitions = Vec::new();
    let mut futures = Vec::new();
    for _ in 0..400 {
        let future = producer
            .send(ProducerRecord::new("t").value(vec![1u8; 100]))
            .unwrap();
        futures.push(future);
    }
    producer.flush().unwrap();
    for future in futures {
        partitions.push(future.wait().unwrap().partition);
    }
    // Runs of one partition, each about a batch long, and every partition used.
    let mut runs = Vec::new();
    let mut run = 1;
    for pair in partitions.windows(2) {
        if pair[0] == pair[1] {
            run += 1;
        } else {
            runs.push(run);
            run = 1;
        }
    }
    runs.push(run);
    assert!(runs.len() > 10, "sticky never moved: {runs:?}");
    assert!(
        runs[..runs.len() - 1]
            .iter()
            .all(|&r| (7..=10).contains(&r)),
        "runs are not batch-sized: {runs:?}"
    );
    for p in 0..4 {
        assert!(partitions.contains(&p), "partition {p} never chosen");
    }
    drop(clock);
}

#[test]
fn linger_holds_a_batch_until_the_clock_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(1_000))
        .unwrap();
    let futures: Vec<SendFuture> = (0..3)
        .map(|i| {
            producer
                .send(ProducerRecord::new("t").value(format!("v{i}")))
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let p = log.topic("t").unwrap().partition(0).unwrap();
    // The clock has not moved: the batch cannot have been sent.
    assert!(futures.iter().all(|f| !f.is_done()));
    assert_eq!(p.log_end_offset(), 0);
    clock.advance(999);
    std::thread::sleep(Duration::from_millis(30));
    assert!(futures.iter().all(|f| !f.is_done()));
    clock.advance(1);
    let offsets: Vec<_> = futures
        .into_iter()
        .map(|f| f.wait().unwrap().offset)
        .collect();
    assert_eq!(offsets, [Some(0), Some(1), Some(2)]);
    // The three records went as one batch.
    assert_eq!(batch_count(&log, "t", 0), 1);
}

#[test]
fn a_full_batch_goes_without_waiting_for_linger() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    // Each record takes 109 bytes after the 61-byte header: three fit a 400-byte batch.
    let producer = log
        .producer(ProducerConfig::default().batch_size(400).linger_ms(60_000))
        .unwrap();
    let futures: Vec<SendFuture> = (0..7)
        .map(|_| {
            producer
                .send(ProducerRecord::new("t").partition(0).value(vec![0u8; 100]))
                .unwrap()
        })
        .collect();
    let mut futures = futures.into_iter();
    // The 4th and 7th records found their batch full: the first two batches were sent
    // although the clock stands still.
    for expected in 0..6 {
        let offset = futures.next().unwrap().wait().unwrap().offset;
        assert_eq!(offset, Some(expected));
    }
    let last = futures.next().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(!last.is_done(), "a lingering batch of one went early");
    producer.flush().unwrap();
    assert_eq!(last.wait().unwrap().offset, Some(6));
    assert_eq!(batch_count(&log, "t", 0), 3);
    let p = log.topic("t").unwrap().partition(0).unwrap();
    for batch in p.read(0, usize::MAX).unwrap().batches() {
        assert!(batch.unwrap().bytes().len() <= 400);
    }
}

#[test]
fn batch_size_zero_sends_each_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", None).unwrap();
    let producer = log
        .producer(ProducerConfig::default().batch_size(0).linger_ms(60_000))
        .unwrap();
    let futures: Vec<SendFuture> = (0..5)
        .map(|_| producer.send(ProducerRecord::new("t").value("x")).unwrap())
        .collect();
    for future in futures {
        future.wait().unwrap();
    }
    assert_eq!(batch_count(&log, "t", 0), 5);
}

#[test]
fn flush_waits_for_everything_sent_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = topic_t_on_a_manual_clock(dir.path(), 3);
    let producer = log
        .producer(ProducerConfig::default().linger_ms(3_600_000))
        .unwrap();
    let futures: Vec<SendFuture> = (0..100)
        .map(|i| {
            producer
                .send(ProducerRecord::new("t").key(format!("{i}")).value("v"))
                .unwrap()
        })
        .collect();
    producer.flush().unwrap();
    assert!(futures.iter().all(SendFuture::is_done));
    let total: u64 = (0..3)
        .map(|p| {
            log.topic("t")
                .unwrap()
                .partition(p)
                .unwrap()
                .log_end_offset()
        })
        .sum();
    assert_eq!(total, 100);
}

#[test]
fn acks_none_leader_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default().fsync(FsyncPolicy::EveryBatch))
        .unwrap();
    let none = log
        .producer(ProducerConfig::default().acks(Acks::None))
        .unwrap();
    let metadata = none
        .send(ProducerRecord::new("t").value("a").timestamp(T0))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        metadata.offset, None,
        "acks=0 reports no offset, as Kafka's -1"
    );
    assert_eq!(metadata.timestamp, T0);
    none.flush().unwrap();
    let leader = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let offset = leader
        .send(ProducerRecord::new("t").value("b"))
        .unwrap()
        .wait()
        .unwrap()
        .offset;
    assert_eq!(offset, Some(1));
    let all = log.producer(ProducerConfig::default()).unwrap();
    let offset = all
        .send(ProducerRecord::new("t").value("c"))
        .unwrap()
        .wait()
        .unwrap()
        .offset;
    assert_eq!(offset, Some(2));
    // acks=All under EveryBatch: acknowledged means synced, so a crash keeps it.
    drop((none, leader, all));
    log.simulate_crash();
    let log = Log::open(dir.path()).unwrap();
    let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
    assert_eq!(values, ["a", "b", "c"]);
}

#[test]
fn acks_all_fails_when_the_fsync_fails_but_leader_was_already_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (log, faults) = log_with_faults(dir.path());
    log.create_topic("t", TopicConfig::default().fsync(FsyncPolicy::EveryBatch))
        .unwrap();
    let leader = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let all = log.producer(ProducerConfig::default()).unwrap();
    // acks=All: answered after its fsync, so no call of it is still running.
    all.send(ProducerRecord::new("t").value("warm-up"))
        .unwrap()
        .wait()
        .unwrap();
    // One more append shows where its fsync falls among its storage calls.
    let before = faults.ops();
    // acks=All: answered after its fsync, so no call of it is still running.
    all.send(ProducerRecord::new("t").value("warm-up"))
        .unwrap()
        .wait()
        .unwrap();
    let sync_at = faults
        .op_log()
        .iter()
        .find(|&&(n, kind)| n > before && kind == OpKind::Sync)
        .map(|&(n, _)| n - before)
        .unwrap();
    // Fail that fsync of the next append: the directory is poisoned from then on.
    faults.fail_at(faults.ops() + sync_at, FaultKind::Eio, true);
    let answered = leader
        .send(ProducerRecord::new("t").value("appended"))
        .unwrap()
        .wait();
    assert!(
        answered.is_ok(),
        "acks=1 answers once appended: {answered:?}"
    );
    let failed = all
        .send(ProducerRecord::new("t").value("never durable"))
        .unwrap()
        .wait();
    assert!(
        matches!(failed, Err(Error::Poisoned { .. } | Error::Io { .. })),
        "{failed:?}"
    );
    assert!(
        faults
            .op_log()
            .iter()
            .any(|&(_, kind)| kind == OpKind::Sync),
        "the fault hit a sync"
    );
}

/// A waker that blocks the thread that wakes it (the producer's sender) until released:
/// while it blocks, the sender frees no buffer memory.
struct Gate(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        let _ = self.0.lock().unwrap().recv();
    }
}

/// A producer with buffer memory for `records` 100-byte records (memory is counted by the
/// upper-bound estimate of each record) and batches that linger for an hour.
fn small_buffer(log: &Log, records: usize, max_block_ms: u64) -> Producer {
    let each = BatchBuilder::estimate_record_size(None, Some(100), &[]);
    log.producer(
        ProducerConfig::default()
            .buffer_memory(records * each + each / 2)
            .linger_ms(3_600_000)
            .max_block_ms(max_block_ms),
    )
    .unwrap()
}

#[test]
fn back_pressure_times_out_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = small_buffer(&log, 5, 50);
    let value = || ProducerRecord::new("t").value(vec![9u8; 100]);
    // The first record's future holds a waker that stalls the sender once it completes.
    let (release, gate) = std::sync::mpsc::channel();
    let waker = Waker::from(Arc::new(Gate(std::sync::Mutex::new(gate))));
    let mut first = producer.send(value()).unwrap();
    assert!(
        std::pin::Pin::new(&mut first)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let mut held = vec![first];
    for _ in 0..4 {
        held.push(producer.send(value()).unwrap());
    }
    // The buffer is full: the sixth send makes the batch ready (as Kafka does for a
    // waiting send), the sender appends it and stalls in the waker before it frees
    // memory, so the send gives up after max_block_ms.
    let error = producer.send(value()).map(|_| ()).unwrap_err();
    assert!(matches!(error, Error::Timeout { ms: 50, .. }), "{error:?}");
    release.send(()).unwrap();
    // The five records were acknowledged, and the refused one never appears.
    let offsets: Vec<_> = held.into_iter().map(|f| f.wait().unwrap().offset).collect();
    assert_eq!(offsets, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
    producer.flush().unwrap();
    assert_eq!(read_all(&log, "t", 0).len(), 5);
    // With memory free again, sends work.
    let future = producer.send(value()).unwrap();
    producer.flush().unwrap();
    assert_eq!(future.wait().unwrap().offset, Some(5));
}

/// Buffer memory goes to waiting sends in the order they came (Kafka's `BufferPool`): a
/// small record sent while a large one waits queues behind it even though it would fit,
/// so a stream of small records cannot starve the large one.
#[test]
fn buffer_memory_goes_to_waiting_sends_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = small_buffer(&log, 5, 5_000);
    let value = |size: usize| ProducerRecord::new("t").value(vec![7u8; size]);
    // The first record's future holds a waker that stalls the sender once it completes,
    // before it frees the memory of the records sent so far.
    let (release, gate) = std::sync::mpsc::channel();
    let waker = Waker::from(Arc::new(Gate(std::sync::Mutex::new(gate))));
    let mut first = producer.send(value(100)).unwrap();
    assert!(
        std::pin::Pin::new(&mut first)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let mut held = vec![first];
    for _ in 0..3 {
        held.push(producer.send(value(100)).unwrap());
    }
    std::thread::scope(|s| {
        // Four records' memory is held: a record of three waits.
        let large = s.spawn(|| producer.send(value(300)).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!large.is_finished());
        // One more would fit, but it comes after the large one.
        let small = s.spawn(|| producer.send(value(100)).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !small.is_finished(),
            "the small record went before the large one"
        );
        release.send(()).unwrap();
        let (large, small) = (large.join().unwrap(), small.join().unwrap());
        producer.flush().unwrap();
        assert_eq!(large.wait().unwrap().offset, Some(4));
        assert_eq!(small.wait().unwrap().offset, Some(5));
    });
    for future in held {
        future.wait().unwrap();
    }
}

/// Kafka's accumulator: while a send waits for memory, lingering batches are sent at once.
#[test]
fn a_send_waiting_for_memory_releases_lingering_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = small_buffer(&log, 2, 60_000);
    let value = |n: u8| ProducerRecord::new("t").value(vec![n; 100]);
    let first = producer.send(value(1)).unwrap();
    let second = producer.send(value(2)).unwrap();
    // The clock never moves: only the waiting send can release the batch.
    let third = producer.send(value(3)).unwrap();
    producer.flush().unwrap();
    let offsets: Vec<_> = [first, second, third]
        .into_iter()
        .map(|f| f.wait().unwrap().offset)
        .collect();
    assert_eq!(offsets, [Some(0), Some(1), Some(2)]);
    assert_eq!(batch_count(&log, "t", 0), 2);
}

/// One `send_batch` holding more records than the buffer has memory for goes through: the
/// call lends its lock to the sender, which frees memory as it appends. The records keep
/// their order and their offsets.
#[test]
fn a_send_batch_larger_than_buffer_memory_goes_through_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = small_buffer(&log, 50, 60_000);
    let records = (0..2_000u32).map(|n| ProducerRecord::new("t").value(vec![(n % 251) as u8; 100]));
    let futures = producer.send_batch(records).unwrap();
    // The last batch lingers (for an hour) until flushed.
    producer.flush().unwrap();
    let offsets: Vec<_> = futures
        .into_iter()
        .map(|f| f.wait().unwrap().offset)
        .collect();
    assert_eq!(offsets, (0..2_000).map(Some).collect::<Vec<_>>());
    let values: Vec<u8> = read_all(&log, "t", 0)
        .iter()
        .map(|r| r.value.as_ref().unwrap()[0])
        .collect();
    assert_eq!(
        values,
        (0..2_000u32).map(|n| (n % 251) as u8).collect::<Vec<_>>()
    );
}

/// A record sent to an idle producer with a linger goes out once the linger passes, with
/// no flush and no full batch (a lost wake-up here would stall it forever).
#[test]
fn a_lone_record_goes_out_after_its_linger() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", None).unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(5))
        .unwrap();
    for round in 0..3u64 {
        // Let the sender go idle first.
        std::thread::sleep(Duration::from_millis(30));
        let future = producer.send(ProducerRecord::new("t").value("x")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(future.wait()));
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the lingering record was never sent");
        assert_eq!(result.unwrap().offset, Some(round));
    }
}

#[test]
fn batches_never_exceed_a_small_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default().segment_bytes(1_024))
        .unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(3_600_000))
        .unwrap();
    let futures: Vec<SendFuture> = (0..10)
        .map(|_| {
            producer
                .send(ProducerRecord::new("t").value(vec![0u8; 200]))
                .unwrap()
        })
        .collect();
    producer.flush().unwrap();
    for (i, future) in futures.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap().offset, Some(i as u64));
    }
    // A record that cannot fit a segment at all is refused at send.
    assert_too_large(&producer, 1_000, 1_024);
}

#[test]
fn negative_timestamps_are_refused() {
    let log = Log::temp().unwrap();
    log.create_topic("t", None).unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let error = producer
        .send(ProducerRecord::new("t").value("v").timestamp(-5))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRecord { .. }), "{error:?}");
}

#[derive(Debug)]
struct Fixed(u32);

impl Partitioner for Fixed {
    fn partition(&self, _: &str, _: Option<&[u8]>, _: Option<&[u8]>, _: u32) -> u32 {
        self.0
    }
}

#[test]
fn custom_and_round_robin_partitioners() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default().partitions(3))
        .unwrap();
    let fixed = log
        .producer(ProducerConfig::default().partitioner(Arc::new(Fixed(2))))
        .unwrap();
    let metadata = fixed
        .send(ProducerRecord::new("t").key("k").value("v"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(
        metadata.partition, 2,
        "a custom partitioner overrides the key hash"
    );
    // An explicit partition still wins.
    let metadata = fixed
        .send(ProducerRecord::new("t").partition(0).value("v"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(metadata.partition, 0);
    let round_robin = log
        .producer(ProducerConfig::default().partitioner(Arc::new(RoundRobinPartitioner::default())))
        .unwrap();
    let chosen: Vec<u32> = (0..6)
        .map(|_| {
            round_robin
                .send(ProducerRecord::new("t").key("same").value("v"))
                .unwrap()
                .wait()
                .unwrap()
                .partition
        })
        .collect();
    assert_eq!(chosen, [0, 1, 2, 0, 1, 2]);
    // A `send_batch` refused for one of its records sends none and asks the partitioner
    // nothing: the round goes on where it was.
    let too_large = ProducerRecord::new("t").value(vec![0u8; 2 << 20]);
    let refused = round_robin.send_batch([ProducerRecord::new("t").value("v"), too_large]);
    assert!(
        matches!(refused, Err(Error::RecordTooLarge { .. })),
        "{refused:?}"
    );
    let futures = round_robin
        .send_batch((0..3).map(|_| ProducerRecord::new("t").value("v")))
        .unwrap();
    let chosen: Vec<u32> = futures
        .into_iter()
        .map(|f| f.wait().unwrap().partition)
        .collect();
    assert_eq!(chosen, [0, 1, 2]);
}

#[test]
fn partitioner_ignore_keys_places_keyed_records_as_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = topic_t_on_a_manual_clock(dir.path(), 4);
    let keys: Vec<String> = (0..40).map(|k| format!("key-{k}")).collect();
    // The keys' own partitions cover all four: without the flag they would spread.
    let hashed: std::collections::BTreeSet<u32> = keys
        .iter()
        .map(|k| partition_for_key(k.as_bytes(), 4))
        .collect();
    assert_eq!(hashed.len(), 4);
    // About 1000 bytes per batch, the clock still: batches close only when full.
    let config = ProducerConfig::default()
        .batch_size(1000)
        .linger_ms(60_000)
        .partitioner_ignore_keys(true);
    let producer = log.producer(config).unwrap();
    let futures: Vec<SendFuture> = keys
        .iter()
        .map(|k| {
            let record = ProducerRecord::new("t")
                .key(k.clone())
                .value(vec![1u8; 100]);
            producer.send(record).unwrap()
        })
        .collect();
    producer.flush().unwrap();
    let partitions: Vec<u32> = futures
        .into_iter()
        .map(|f| f.wait().unwrap().partition)
        .collect();
    // Sticky runs of about a batch (8 records), whatever the keys.
    let runs: Vec<&[u32]> = partitions.chunk_by(|a, b| a == b).collect();
    assert!(
        runs.len() >= 4
            && runs[..runs.len() - 1]
                .iter()
                .all(|r| (7..=10).contains(&r.len())),
        "not sticky: {partitions:?}"
    );
    // An explicit partition still wins, and a custom partitioner is still asked.
    let explicit = producer
        .send(
            ProducerRecord::new("t")
                .key("key-0")
                .partition(3)
                .value("v"),
        )
        .unwrap();
    producer.flush().unwrap();
    assert_eq!(explicit.wait().unwrap().partition, 3);
    let fixed = log
        .producer(
            ProducerConfig::default()
                .partitioner(Arc::new(Fixed(2)))
                .partitioner_ignore_keys(true),
        )
        .unwrap();
    let metadata = fixed
        .send(ProducerRecord::new("t").key("k").value("v"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(metadata.partition, 2);
}

/// Callbacks' answers: which record, and its outcome.
type Answers = Arc<std::sync::Mutex<Vec<(u32, tarnlog::Result<tarnlog::RecordMetadata>)>>>;

/// Kafka's `send(record, callback)`: each record's callback gets its metadata or its
/// error once its batch is answered, on the sender thread, in send order within a
/// partition; one that panics does not stop the others, and one may send again.
#[test]
fn send_with_callback_answers_each_record_in_send_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = topic_t_on_a_manual_clock(dir.path(), 2);
    // The clock stands still: batches wait for `flush`.
    let producer = log
        .producer(ProducerConfig::default().linger_ms(60_000))
        .unwrap();
    let answers: Answers = Arc::default();
    // The last one takes its time: `flush` returns only once it has run too (Kafka
    // completes a batch's future after its callbacks).
    let answer_to = |i: u32| {
        let answers = Arc::clone(&answers);
        move |result| {
            if i == 39 {
                std::thread::sleep(Duration::from_millis(100));
            }
            answers.lock().unwrap().push((i, result));
        }
    };
    // First one whose callback panics: the callbacks after it run all the same.
    producer
        .send_with_callback(ProducerRecord::new("t").partition(0).value("p"), |_| {
            panic!("a callback that panics")
        })
        .unwrap();
    for i in 0..40 {
        let record = ProducerRecord::new("t")
            .partition(i % 2)
            .value(format!("v{i}"));
        producer.send_with_callback(record, answer_to(i)).unwrap();
    }
    // And one whose callback sends again.
    let again = {
        let (producer, answer) = (producer.clone(), answer_to(100));
        move |result: tarnlog::Result<tarnlog::RecordMetadata>| {
            result.unwrap();
            let record = ProducerRecord::new("t").partition(1).value("again");
            producer.send_with_callback(record, answer).unwrap();
        }
    };
    producer
        .send_with_callback(ProducerRecord::new("t").partition(1).value("a"), again)
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        answers.lock().unwrap().is_empty(),
        "answered before the append"
    );
    producer.flush().unwrap();
    producer.flush().unwrap();
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    assert_eq!(answers.len(), 41, "{answers:?}");
    for p in 0..2 {
        let mut offsets = Vec::new();
        for (i, result) in answers.iter().filter(|(i, _)| *i < 100 && i % 2 == p) {
            let metadata = result.as_ref().unwrap();
            assert_eq!(metadata.partition, p);
            offsets.push((*i, metadata.offset.unwrap()));
        }
        // Partition 0's first record is the one whose callback panicked.
        let first = u64::from(p == 0);
        let expected: Vec<(u32, u64)> =
            (0..20).map(|k| (2 * k + p, first + u64::from(k))).collect();
        assert_eq!(offsets, expected, "partition {p} answered out of order");
    }
    let (_, chained) = answers.iter().find(|(i, _)| *i == 100).unwrap();
    assert_eq!(chained.as_ref().unwrap().offset, Some(21));
    assert_eq!(value_of(&read_all(&log, "t", 1)[21]), "again");

    // A record that fails: its callback gets the error.
    let (sender, failed) = std::sync::mpsc::channel();
    let big = ProducerRecord::new("t").partition(0).value(vec![1u8; 500]);
    producer
        .send_with_callback(big, move |result| sender.send(result).unwrap())
        .unwrap();
    max_message_bytes_to_300(&log);
    producer.flush().unwrap();
    let result = failed.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        matches!(result, Err(Error::RecordTooLarge { .. })),
        "{result:?}"
    );
    // Refused at once: the error is returned and the callback never runs.
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&called);
    let refused = producer.send_with_callback(ProducerRecord::new("nope").value("v"), move |_| {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(matches!(refused, Err(Error::UnknownTopic { .. })));
    producer.close().unwrap();
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
}

/// Callbacks follow offsets within a partition even when several threads send to it at
/// once with `linger_ms = 0` (Kafka's guarantee), and one that panics in the calling
/// thread (`Acks::None` answers at once) does not unwind into the caller.
#[test]
fn callbacks_of_a_partition_run_in_offset_order_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", None).unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let offsets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (producer, offsets) = (producer.clone(), Arc::clone(&offsets));
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    let offsets = Arc::clone(&offsets);
                    let record = ProducerRecord::new("t").value("v");
                    producer
                        .send_with_callback(record, move |result| {
                            offsets
                                .lock()
                                .unwrap()
                                .push(result.unwrap().offset.unwrap());
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    producer.flush().unwrap();
    let offsets = std::mem::take(&mut *offsets.lock().unwrap());
    assert_eq!(offsets.len(), 8_000);
    let out_of_order: Vec<_> = offsets.windows(2).filter(|w| w[0] >= w[1]).collect();
    assert!(
        out_of_order.is_empty(),
        "callbacks out of offset order: {out_of_order:?}"
    );

    let fire_and_forget = log
        .producer(ProducerConfig::default().acks(Acks::None))
        .unwrap();
    let (told, answers) = std::sync::mpsc::channel();
    fire_and_forget
        .send_with_callback(ProducerRecord::new("t").value("x"), |_| {
            panic!("a callback that panics in the calling thread")
        })
        .unwrap();
    fire_and_forget
        .send_with_callback(ProducerRecord::new("t").value("y"), move |result| {
            told.send(result.map(|m| m.offset)).unwrap();
        })
        .unwrap();
    assert_eq!(
        answers.try_recv().unwrap().unwrap(),
        None,
        "acks=0 has no offset"
    );
}

/// A close that gives up at once fails a partition's batch being retried before the batch
/// behind it, so that their callbacks keep the partition's order.
#[test]
fn a_forced_close_fails_a_partitions_batches_in_order() {
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let (log, _fault, _dirs, _follower) = too_few_in_sync_on(root.path(), clock);
    // A full batch goes at once and is refused (too few in sync): it waits to be retried.
    // The clock stands still, so the next batch lingers until the close.
    let config = ProducerConfig::default()
        .batch_size(300)
        .linger_ms(60_000)
        .retry_backoff_ms(60_000)
        .retry_backoff_max_ms(60_000);
    let producer = log.producer(config).unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let note = |name: &'static str| {
        let order = Arc::clone(&order);
        move |result: tarnlog::Result<tarnlog::RecordMetadata>| {
            assert!(matches!(result, Err(Error::Closed)), "{result:?}");
            order.lock().unwrap().push(name);
        }
    };
    let first = ProducerRecord::new("t").partition(0).value(vec![1u8; 300]);
    producer.send_with_callback(first, note("first")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let second = ProducerRecord::new("t").partition(0).value("second");
    producer.send_with_callback(second, note("second")).unwrap();
    producer.close_timeout(Duration::ZERO).unwrap();
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
}

/// Closing the log ends the batches waiting to be retried at once, with `Closed`: the
/// producer's close does not wait out their backoff or delivery timeout.
#[test]
fn closing_the_log_ends_batches_waiting_for_a_retry() {
    use std::time::Instant;
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let (log, _fault, _dirs, _follower) = too_few_in_sync_on(root.path(), clock);
    let config = ProducerConfig::default()
        .acks(Acks::All)
        .retry_backoff_ms(60_000)
        .retry_backoff_max_ms(60_000);
    let producer = log.producer(config).unwrap();
    let future = producer
        .send(ProducerRecord::new("t").partition(0).value("v"))
        .unwrap();
    // Refused (too few in sync): it waits a minute for its next try.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!future.is_done());
    let started = Instant::now();
    let _ = log.close();
    let result = future.wait();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    producer.close().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// [`log_with_clock`] with topic `t` stamped with the log's append time.
fn log_append_time_topic_t(root: &Path) -> (Log, Arc<ManualClock>) {
    let (log, clock) = log_with_clock(root);
    log.create_topic(
        "t",
        TopicConfig::default().timestamp_type(TimestampType::LogAppendTime),
    )
    .unwrap();
    (log, clock)
}

#[test]
fn log_append_time_topics_report_the_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = log_append_time_topic_t(dir.path());
    let producer = log.producer(ProducerConfig::default()).unwrap();
    clock.set(T0 + 5_000);
    let metadata = producer
        .send(ProducerRecord::new("t").value("v").timestamp(T0))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(metadata.timestamp, T0 + 5_000);
    let record = &read_all(&log, "t", 0)[0];
    assert_eq!(record.timestamp, T0 + 5_000);
    assert_eq!(record.timestamp_type, TimestampType::LogAppendTime);
    // A record without a timestamp takes the log's clock as its CreateTime.
    log.create_topic("c", None).unwrap();
    let metadata = producer
        .send(ProducerRecord::new("c").value("v"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(metadata.timestamp, T0 + 5_000);
}

/// `send_with_callback` under `Acks::None` goes through the sender as every send with a
/// callback does, never appended by the call: its callback hears what Kafka's `acks=0`
/// reports (no offset, the record's own timestamp), not the append's outcome (the log's
/// append time here), whatever else is pending.
#[test]
fn an_acks_none_callback_hears_no_more_than_acks_none_tells() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = log_append_time_topic_t(dir.path());
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::None))
        .unwrap();
    clock.set(T0 + 5_000);
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..3 {
        let heard = Arc::clone(&heard);
        let record = ProducerRecord::new("t").value("v").timestamp(T0 + i);
        producer
            .send_with_callback(record, move |result| {
                heard.lock().unwrap().push(result.unwrap());
            })
            .unwrap();
        producer.flush().unwrap();
    }
    let heard = std::mem::take(&mut *heard.lock().unwrap());
    let told: Vec<(Option<u64>, i64)> = heard.iter().map(|m| (m.offset, m.timestamp)).collect();
    assert_eq!(told, [(None, T0), (None, T0 + 1), (None, T0 + 2)]);
    assert_eq!(read_all(&log, "t", 0).len(), 3);
}

#[test]
fn tombstones_and_null_headers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", None).unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let mut record = ProducerRecord::new("t").key("gone");
    record.headers.push(("null-header".into(), None));
    producer.send(record).unwrap().wait().unwrap();
    let read = &read_all(&log, "t", 0)[0];
    assert_eq!(read.value, None);
    assert_eq!(read.key.as_deref(), Some(&b"gone"[..]));
    assert_eq!(read.headers[0].value, None);
}

#[test]
fn send_from_many_threads_keeps_each_keys_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default().partitions(4))
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                let futures: Vec<SendFuture> = (0..2_000)
                    .map(|i| {
                        producer
                            .send(
                                ProducerRecord::new("t")
                                    .key(format!("thread-{t}"))
                                    .value(format!("{i}")),
                            )
                            .unwrap()
                    })
                    .collect();
                futures
                    .into_iter()
                    .map(|f| f.wait().unwrap().offset.unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    for thread in threads {
        let offsets = thread.join().unwrap();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }
    let mut seen = BTreeMap::<Vec<u8>, Vec<u64>>::new();
    for p in 0..4 {
        for record in read_all(&log, "t", p) {
            seen.entry(record.key.as_deref().unwrap().to_vec())
                .or_default()
                .push(value_of(&record).parse().unwrap());
        }
    }
    assert_eq!(seen.len(), 4);
    for values in seen.values() {
        assert_eq!(values, &(0..2_000).collect::<Vec<u64>>());
    }
}

/// A waker that unparks the polling thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

#[test]
fn send_future_can_be_awaited_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(500))
        .unwrap();
    let future = producer.send(ProducerRecord::new("t").value("v")).unwrap();
    let advance = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        clock.advance(500);
    });
    let metadata = block_on(future).unwrap();
    assert_eq!(metadata.offset, Some(0));
    advance.join().unwrap();
}

#[test]
fn auto_creation_is_off_by_default_and_uses_the_defaults_when_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let producer = log.producer(ProducerConfig::default()).unwrap();
        let error = producer
            .send(ProducerRecord::new("new").value("v"))
            .unwrap_err();
        assert!(matches!(error, Error::UnknownTopic { .. }), "{error:?}");
        // Kafka's `partitionsFor` answers the same.
        let error = producer.partitions_for("new").unwrap_err();
        assert!(matches!(error, Error::UnknownTopic { .. }), "{error:?}");
        assert!(log.topics().is_empty());
    }
    let log = Log::builder()
        .dir(dir.path())
        .default_topic_config(TopicConfig::default().partitions(2))
        .auto_create_topics(true)
        .open()
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    producer
        .send(ProducerRecord::new("new").key("k").value("v"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(log.topic("new").unwrap().partitions(), 2);
    // `partitions_for` creates a topic too, as a Kafka producer's metadata request does.
    let partitions = producer.partitions_for("other").unwrap();
    let numbers: Vec<u32> = partitions.iter().map(|p| p.partition).collect();
    assert_eq!(numbers, [0, 1]);
    assert_eq!(partitions[0].leader, Some(0));
    assert!(log.topics().contains(&"other".to_owned()));
    assert!(matches!(
        producer.partitions_for("bad/name"),
        Err(Error::InvalidTopicName { .. })
    ));
    producer.close().unwrap();
    assert!(matches!(producer.partitions_for("new"), Err(Error::Closed)));
}

/// A producer that cached a topic follows its deletion (`UnknownTopic`) and its creation
/// again under the name with fewer partitions: the new topic's records land in it, from
/// offset 0, and none goes to a partition it does not have.
#[test]
fn a_producer_follows_a_topic_deleted_and_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default().partitions(4))
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    for _ in 0..20 {
        producer
            .send(ProducerRecord::new("t").value("old"))
            .unwrap()
            .wait()
            .unwrap();
    }
    log.delete_topic("t").unwrap();
    let error = producer
        .send(ProducerRecord::new("t").value("gone"))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, Error::UnknownTopic { .. }), "{error:?}");
    log.create_topic("t", TopicConfig::default().partitions(1))
        .unwrap();
    for i in 0..20 {
        let metadata = producer
            .send(ProducerRecord::new("t").value("new"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!((metadata.partition, metadata.offset), (0, Some(i)));
    }
    producer.close().unwrap();
}

/// Sends a record of `size` bytes to "t" and checks it is refused as over `max`.
fn assert_too_large(producer: &Producer, size: usize, max: usize) {
    let error = producer
        .send(ProducerRecord::new("t").value(vec![0u8; size]))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(error, Error::RecordTooLarge { max: m, .. } if m == max),
        "{error:?}"
    );
}

/// Lowering a topic's `max_message_bytes` reaches a producer that is already sending to
/// it: the batch open at the change and every later one stay within the new limit, so
/// every record is acknowledged, and a record over it is refused at `send`.
#[test]
fn a_lowered_max_message_bytes_reaches_a_running_producer() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    // Batches leave only when full (16 KiB) or flushed.
    let producer = log
        .producer(ProducerConfig::default().linger_ms(600_000))
        .unwrap();
    let mut sent = vec![
        producer
            .send(ProducerRecord::new("t").value(vec![0u8; 100]))
            .unwrap(),
    ];
    let config = log.topic("t").unwrap().config().max_message_bytes(2_000);
    log.alter_topic_config("t", config).unwrap();
    for i in 1..=100u8 {
        sent.push(
            producer
                .send(ProducerRecord::new("t").value(vec![i; 100]))
                .unwrap(),
        );
    }
    producer.flush().unwrap();
    for (i, future) in sent.into_iter().enumerate() {
        let metadata = future.wait().unwrap();
        assert_eq!(metadata.offset, Some(i as u64));
    }
    assert_too_large(&producer, 2_100, 2_000);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    let read = partition.read(0, 1 << 20).unwrap();
    let mut records = 0;
    for batch in read.batches() {
        let batch = batch.unwrap();
        assert!(
            batch.bytes().len() <= 2_000,
            "{} bytes",
            batch.bytes().len()
        );
        records += batch.len();
    }
    assert_eq!(records, 101);
    producer.close().unwrap();
}

/// Every batch of partition 0 of `t` holds at most `max` bytes; the values, in order.
fn batches_within(log: &Log, max: usize) -> Vec<String> {
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    let read = partition.read(0, 1 << 20).unwrap();
    for batch in read.batches() {
        let size = batch.unwrap().bytes().len();
        assert!(size <= max, "a batch of {size} bytes");
    }
    read_all(log, "t", 0).iter().map(value_of).collect()
}

/// A batch built before the topic's `max_message_bytes` was lowered, and too large for it
/// now, is split and its parts appended in order (Kafka's producer splits a batch answered
/// `MESSAGE_TOO_LARGE`), instead of failing every record in it; a record too large alone
/// fails alone, the others around it go in.
#[test]
fn a_batch_over_a_lowered_max_message_bytes_is_split() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(600_000))
        .unwrap();
    let value = |i: usize, size: usize| format!("{i:03}{}", "x".repeat(size - 3));
    let sizes = [100, 100, 100, 300, 100, 100, 100, 100, 100, 100];
    let sent: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            producer
                .send(ProducerRecord::new("t").value(value(i, size)))
                .unwrap()
        })
        .collect();
    // The open batch (about 1.4 KB) no longer fits; no send follows to close it first.
    let config = log.topic("t").unwrap().config().max_message_bytes(250);
    log.alter_topic_config("t", config).unwrap();
    producer.flush().unwrap();
    let mut offsets = Vec::new();
    for (i, future) in sent.into_iter().enumerate() {
        match future.wait() {
            Ok(metadata) => offsets.push(metadata.offset.unwrap()),
            Err(Error::RecordTooLarge { max: 250, .. }) if i == 3 => {}
            other => panic!("record {i}: {other:?}"),
        }
    }
    assert_eq!(offsets, (0..9).collect::<Vec<u64>>());
    let expected: Vec<String> = (0..10)
        .filter(|&i| i != 3)
        .map(|i| value(i, sizes[i]))
        .collect();
    assert_eq!(batches_within(&log, 250), expected);
    producer.close().unwrap();
}

/// Sends "c0xxx…" to "c4xxx…" (about 100 bytes each) to partition 0 of `t`.
fn five_records_of_about_100_bytes(producer: &Producer) -> Vec<tarnlog::SendFuture> {
    (0..5)
        .map(|i| {
            producer
                .send(to_t0(&format!("c{i}{}", "x".repeat(100))))
                .unwrap()
        })
        .collect()
}

/// Lowers `t`'s `max_message_bytes` to 300.
fn max_message_bytes_to_300(log: &Log) {
    let config = log.topic("t").unwrap().config().max_message_bytes(300);
    log.alter_topic_config("t", config).unwrap();
}

/// A batch waiting to be retried when `max_message_bytes` is lowered is split at its next
/// try, its parts taking its place ahead of the partition's later batches.
#[test]
fn a_batch_being_retried_is_split_when_the_limit_falls() {
    let root = tempfile::tempdir().unwrap();
    let (log, fault, dirs, follower) = too_few_in_sync(root.path());
    let producer = log
        .producer(ProducerConfig::default().retry_backoff_ms(20).linger_ms(20))
        .unwrap();
    let sent = five_records_of_about_100_bytes(&producer);
    // Refused (too few in sync) and parked.
    std::thread::sleep(Duration::from_millis(200));
    assert!(sent.iter().all(|f| !f.is_done()));
    max_message_bytes_to_300(&log);
    let later = producer.send(to_t0("d")).unwrap();
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let offsets: Vec<u64> = sent
        .into_iter()
        .map(|f| f.wait().unwrap().offset.unwrap())
        .collect();
    assert_eq!(offsets, [2, 3, 4, 5, 6]);
    assert_eq!(later.wait().unwrap().offset, Some(7));
    let values = batches_within(&log, 300);
    assert_eq!(values.len(), 8);
    assert_eq!(&values[..2], ["a", "b"]);
    assert!(values[2].starts_with("c0") && values[6].starts_with("c4"));
    assert_eq!(values[7], "d");
    producer.close().unwrap();
}

/// A producer (`linger_ms` 500 on a clock that never moves, so its batch waits for a
/// flush or close; `delivery_timeout_ms` as given, on the real clock once a batch waits)
/// that sent five records of about 100 bytes in one batch, whose topic then lowered
/// `max_message_bytes` to 300 and whose disk then filled: the batch will be split, and its
/// parts refused (a full disk is retried).
fn a_batch_to_split_onto_a_full_disk(
    root: &Path,
    delivery_timeout_ms: u64,
) -> (Log, FaultStorage, Producer, Vec<tarnlog::SendFuture>) {
    let faults = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dir(root)
        .storage(faults.shared())
        .clock(Arc::new(ManualClock::new(T0)))
        .open()
        .unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let producer = log
        .producer(
            ProducerConfig::default()
                .retry_backoff_ms(20)
                .linger_ms(500)
                .delivery_timeout_ms(delivery_timeout_ms),
        )
        .unwrap();
    let sent = five_records_of_about_100_bytes(&producer);
    max_message_bytes_to_300(&log);
    faults.fail_dir(root, FaultKind::NoSpace);
    (log, faults, producer, sent)
}

/// The parts of a split batch that cannot be appended either (the disk is full) wait as
/// the batch would and time out with its delivery timeout: every record is answered, with
/// `Timeout`, not with the `RecordTooLarge` that split the batch.
#[test]
fn the_parts_of_a_split_batch_time_out_with_it() {
    let root = tempfile::tempdir().unwrap();
    let (log, faults, producer, sent) = a_batch_to_split_onto_a_full_disk(root.path(), 1_000);
    producer.flush().unwrap();
    for future in sent {
        let error = future.wait().unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    }
    faults.heal_dir(root.path());
    assert!(read_all(&log, "t", 0).is_empty(), "no part was appended");
    producer.close().unwrap();
}

/// `close_timeout` fails the parts of a split batch still waiting to be retried with
/// `Closed`, every record answered.
#[test]
fn close_timeout_fails_the_waiting_parts_of_a_split_batch() {
    let root = tempfile::tempdir().unwrap();
    let (log, faults, producer, sent) = a_batch_to_split_onto_a_full_disk(root.path(), 120_000);
    let started = std::time::Instant::now();
    producer.close_timeout(Duration::from_millis(300)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    for future in sent {
        let error = future.wait().unwrap_err();
        assert!(matches!(error, Error::Closed), "{error:?}");
    }
    faults.heal_dir(root.path());
    assert!(read_all(&log, "t", 0).is_empty(), "no part was appended");
}

#[test]
fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "t",
        TopicConfig::default()
            .partitions(2)
            .max_message_bytes(2_000),
    )
    .unwrap();
    let producer = log
        .producer(
            ProducerConfig::default()
                .max_request_size(1_500)
                .buffer_memory(1_200),
        )
        .unwrap();
    let bad = log
        .producer(ProducerConfig::default().partitioner(Arc::new(Fixed(7))))
        .unwrap();
    log.flush().unwrap();
    let before = common::files(dir.path());
    let cases: Vec<(&str, tarnlog::Result<SendFuture>)> = vec![
        (
            "unknown topic",
            producer.send(ProducerRecord::new("nope").value("v")),
        ),
        (
            "internal topic",
            producer.send(ProducerRecord::new("__consumer_offsets").value("v")),
        ),
        (
            "partition out of range",
            producer.send(ProducerRecord::new("t").partition(2).value("v")),
        ),
        (
            "custom partitioner out of range",
            bad.send(ProducerRecord::new("t").value("v")),
        ),
        (
            "over buffer_memory",
            producer.send(ProducerRecord::new("t").value(vec![0u8; 1_300])),
        ),
        (
            "over max_request_size",
            log.producer(ProducerConfig::default().max_request_size(1_500))
                .unwrap()
                .send(ProducerRecord::new("t").value(vec![0u8; 1_600])),
        ),
        (
            "over the topic's max_message_bytes",
            log.producer(ProducerConfig::default())
                .unwrap()
                .send(ProducerRecord::new("t").value(vec![0u8; 2_100])),
        ),
    ];
    for (case, result) in cases {
        let error = result.map(|_| ()).unwrap_err();
        let expected = match case {
            "unknown topic" => matches!(error, Error::UnknownTopic { .. }),
            "internal topic" => matches!(error, Error::InternalTopic { .. }),
            "partition out of range" | "custom partitioner out of range" => {
                matches!(error, Error::UnknownPartition { partitions: 2, .. })
            }
            "over buffer_memory" => matches!(error, Error::RecordTooLarge { max: 1_200, .. }),
            "over max_request_size" => matches!(error, Error::RecordTooLarge { max: 1_500, .. }),
            _ => matches!(error, Error::RecordTooLarge { max: 2_000, .. }),
        };
        assert!(expected, "{case}: {error:?}");
    }
    // A batch with one bad record sends none of them.
    let error = producer
        .send_batch([
            ProducerRecord::new("t").value("ok"),
            ProducerRecord::new("t").partition(9).value("bad"),
        ])
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, Error::UnknownPartition { .. }), "{error:?}");
    producer.flush().unwrap();
    bad.flush().unwrap();
    assert_eq!(
        common::files(dir.path()),
        before,
        "a refused send changed the directory"
    );
    for p in 0..2 {
        assert_eq!(
            log.topic("t")
                .unwrap()
                .partition(p)
                .unwrap()
                .log_end_offset(),
            0
        );
    }
}

#[test]
fn invalid_config_names_the_field() {
    let log = Log::temp().unwrap();
    let cases = [
        ("buffer_memory", ProducerConfig::default().buffer_memory(0)),
        (
            "max_request_size",
            ProducerConfig::default().max_request_size(10),
        ),
        (
            "batch_size",
            ProducerConfig::default().batch_size(i32::MAX as usize + 1),
        ),
        ("linger_ms", ProducerConfig::default().linger_ms(u64::MAX)),
        (
            "max_block_ms",
            ProducerConfig::default().max_block_ms(u64::MAX),
        ),
        ("retries", ProducerConfig::default().retries(u32::MAX)),
        (
            "retry_backoff_ms",
            ProducerConfig::default().retry_backoff_ms(u64::MAX),
        ),
        (
            "retry_backoff_max_ms",
            ProducerConfig::default().retry_backoff_max_ms(u64::MAX),
        ),
        (
            "delivery_timeout_ms",
            ProducerConfig::default().delivery_timeout_ms(u64::MAX),
        ),
    ];
    for (field, config) in cases {
        match log.producer(config) {
            Err(Error::InvalidConfig {
                field: f, allowed, ..
            }) => {
                assert_eq!(f, field);
                assert!(allowed.contains("..="), "{allowed}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn close_sends_what_is_pending_and_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(3_600_000))
        .unwrap();
    let clone = producer.clone();
    let pending = producer.send(ProducerRecord::new("t").value("v")).unwrap();
    producer.close().unwrap();
    assert_eq!(pending.wait().unwrap().offset, Some(0));
    let error = clone.send(ProducerRecord::new("t").value("v")).unwrap_err();
    assert!(matches!(error, Error::Closed), "{error:?}");
    assert!(matches!(clone.flush(), Err(Error::Closed)));
    // Dropping a producer with pending records sends them too.
    let producer = log
        .producer(ProducerConfig::default().linger_ms(3_600_000))
        .unwrap();
    let pending = producer.send(ProducerRecord::new("t").value("w")).unwrap();
    drop(producer);
    assert_eq!(pending.wait().unwrap().offset, Some(1));
}

#[test]
fn a_closed_log_fails_pending_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = log_with_clock(dir.path());
    log.create_topic("t", None).unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(3_600_000))
        .unwrap();
    let pending = producer.send(ProducerRecord::new("t").value("v")).unwrap();
    log.close().unwrap();
    producer.flush().unwrap();
    let error = pending.wait().unwrap_err();
    assert!(matches!(error, Error::Closed), "{error:?}");
}

/// The size limits apply to the exact size of the batch a record would be sent in alone:
/// a record whose batch is exactly `max_request_size` is sent, one byte more is refused
/// with that exact size.
#[test]
fn a_record_whose_batch_is_exactly_max_request_size_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let producer = log
        .producer(ProducerConfig::default().max_request_size(1_000))
        .unwrap();
    // 61 bytes of batch header, then the record: its length (2 bytes), attributes,
    // timestamp and offset deltas, a null key (1 byte each), the value's length (2 bytes)
    // and 930 bytes, the header count (1 byte).
    let metadata = producer
        .send(ProducerRecord::new("t").value(vec![7u8; 930]))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(metadata.offset, Some(0));
    let p = log.topic("t").unwrap().partition(0).unwrap();
    let batch = p
        .read(0, usize::MAX)
        .unwrap()
        .batches()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(batch.bytes().len(), 1_000);
    let error = producer
        .send(ProducerRecord::new("t").value(vec![7u8; 931]))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::RecordTooLarge {
                size: 1_001,
                max: 1_000
            }
        ),
        "{error:?}"
    );
    producer.close().unwrap();
}

/// A record without a key is refused at `send` for a compacted topic (as Kafka's broker
/// refuses its batch), instead of failing every keyed record batched with it.
#[test]
fn a_record_without_a_key_is_refused_by_a_compacted_topic_and_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic(
        "t",
        TopicConfig::default().cleanup_policy(tarnlog::CleanupPolicy::Compact),
    )
    .unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(600_000))
        .unwrap();
    let keyed = producer
        .send(ProducerRecord::new("t").key("k").value("v"))
        .unwrap();
    let error = producer
        .send(ProducerRecord::new("t").value("no key"))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRecord { .. }), "{error:?}");
    let error = producer
        .send_batch([
            ProducerRecord::new("t").key("k").value("v2"),
            ProducerRecord::new("t").value("no key"),
        ])
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRecord { .. }), "{error:?}");
    producer.flush().unwrap();
    assert_eq!(keyed.wait().unwrap().offset, Some(0));
    assert_eq!(read_all(&log, "t", 0).len(), 1);
    producer.close().unwrap();
}

/// A partitioner that sets the log's clock back an hour, as an NTP step would.
#[derive(Debug)]
struct SetsClockBack(Arc<ManualClock>);

impl Partitioner for SetsClockBack {
    fn partition(&self, _: &str, _: Option<&[u8]>, _: Option<&[u8]>, _: u32) -> u32 {
        self.0.set(T0 - 3_600_000);
        0
    }
}

/// A clock set back while a batch waits does not hold the batch until the clock is past
/// its creation again: with `linger_ms = 0` it is sent at once.
#[test]
fn a_clock_set_back_does_not_hold_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = log_with_clock(dir.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    let producer = log
        .producer(
            ProducerConfig::default()
                .acks(Acks::Leader)
                .partitioner(Arc::new(SetsClockBack(Arc::clone(&clock)))),
        )
        .unwrap();
    // The first record dates the batch by the clock before the second one's partitioner
    // sets it back.
    let futures = producer
        .send_batch([
            ProducerRecord::new("t").partition(0).value("a"),
            ProducerRecord::new("t").value("b"),
        ])
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !futures.iter().all(SendFuture::is_done) {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch waits for the clock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let offsets: Vec<_> = futures
        .into_iter()
        .map(|f| f.wait().unwrap().offset)
        .collect();
    assert_eq!(offsets, [Some(0), Some(1)]);
    producer.close().unwrap();
}

/// A waker that panics when woken.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("an application's waker panics (expected by this test)");
    }
}

/// A waker that panics runs on the sender thread: it neither stops the other records'
/// sends nor leaves `flush` waiting.
#[test]
fn a_panicking_waker_does_not_stop_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    let producer = log
        .producer(ProducerConfig::default().linger_ms(3_600_000))
        .unwrap();
    let mut first = producer
        .send(ProducerRecord::new("t").partition(0).value("a"))
        .unwrap();
    let waker = Waker::from(Arc::new(PanickingWaker));
    assert!(
        std::pin::Pin::new(&mut first)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let second = producer
        .send(ProducerRecord::new("t").partition(1).value("b"))
        .unwrap();
    let flushing = producer.clone();
    let (done, flushed) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(flushing.flush()).unwrap());
    flushed
        .recv_timeout(Duration::from_secs(30))
        .expect("flush returns")
        .unwrap();
    assert_eq!(first.wait().unwrap().offset, Some(0));
    assert_eq!(second.wait().unwrap().offset, Some(0));
    // The sender still runs.
    let third = producer
        .send(ProducerRecord::new("t").partition(1).value("c"))
        .unwrap();
    producer.flush().unwrap();
    assert_eq!(third.wait().unwrap().offset, Some(1));
    producer.close().unwrap();
}

/// A producer with `linger_ms = 0` whose sends find nothing pending: `send` appends the
/// record itself, so its future is complete when `send` returns and the record readable.
#[test]
fn a_send_that_finds_nothing_pending_is_appended_before_it_returns() {
    let log = Log::temp().unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    for acks in [Acks::None, Acks::Leader, Acks::All] {
        let producer = log.producer(ProducerConfig::default().acks(acks)).unwrap();
        let before = read_all(&log, "t", 0).len();
        let sent = producer
            .send(ProducerRecord::new("t").partition(0).value("now"))
            .unwrap();
        assert!(sent.is_done(), "{acks:?}");
        assert_eq!(read_all(&log, "t", 0).len(), before + 1, "{acks:?}");
        let metadata = sent.wait().unwrap();
        let expected = (acks != Acks::None).then_some(before as u64);
        assert_eq!((metadata.partition, metadata.offset), (0, expected));
        producer.close().unwrap();
    }
}

/// A temporary log with topic `t` (one partition) and an `acks=Leader` producer.
fn temp_log_with_t() -> (Log, Producer) {
    let log = Log::temp().unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    (log, producer)
}

/// A record for partition 0 of topic `t`.
fn to_t0(value: &str) -> ProducerRecord {
    ProducerRecord::new("t")
        .partition(0)
        .value(value.to_owned())
}

/// Sends to partition 0 of `t` until a record goes to the sender thread with `waker` in its
/// future before the sender completes it (a send right after one appended in this thread
/// goes to the sender; tried again if the sender was done before the waker was in place).
/// Returns that record's future and how many records were sent.
fn send_with_waker_to_the_sender(producer: &Producer, waker: &Waker) -> (SendFuture, usize) {
    let mut sent = 0;
    // Bounded: a producer that never hands a record to its sender fails here rather than
    // fill the disk.
    for _ in 0..10_000 {
        producer.send(to_t0("before")).unwrap().wait().unwrap();
        let mut next = producer.send(to_t0("by the sender")).unwrap();
        sent += 2;
        if std::pin::Pin::new(&mut next)
            .poll(&mut Context::from_waker(waker))
            .is_pending()
        {
            return (next, sent);
        }
    }
    panic!("no send of {sent} went to the sender");
}

/// Stalls the sender thread in a waker once it appended a record: returns the record's
/// future, how many records were sent, and the channel that releases the sender. Returns
/// once the record is readable, so that the sender is in (or on its way into) the waker.
fn stall_the_sender(
    log: &Log,
    producer: &Producer,
) -> (SendFuture, usize, std::sync::mpsc::Sender<()>) {
    let (release, gate) = std::sync::mpsc::channel();
    let waker = Waker::from(Arc::new(Gate(std::sync::Mutex::new(gate))));
    let (stalled, sent) = send_with_waker_to_the_sender(producer, &waker);
    while read_all(log, "t", 0).len() < sent {
        std::thread::yield_now();
    }
    (stalled, sent, release)
}

/// Records still pending when a send comes keep their place: the send does not append in
/// the calling thread but goes after them.
#[test]
fn a_send_after_pending_records_lands_after_them() {
    let (log, producer) = temp_log_with_t();
    let (stalled, sent, release) = stall_the_sender(&log, &producer);
    let pending = producer
        .send_batch((0..100).map(|i| to_t0(&i.to_string())))
        .unwrap();
    // Long after the last append in this thread: only the pending records hold it back.
    std::thread::sleep(Duration::from_millis(50));
    let last = producer.send(to_t0("last")).unwrap();
    assert!(!last.is_done(), "the send waits behind the pending records");
    release.send(()).unwrap();
    assert_eq!(last.wait().unwrap().offset, Some(sent as u64 + 100));
    stalled.wait().unwrap();
    for (i, future) in pending.into_iter().enumerate() {
        assert_eq!(future.wait().unwrap().offset, Some((sent + i) as u64));
    }
    let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
    assert_eq!(values[sent - 1], "by the sender");
    assert_eq!(values[sent], "0");
    assert_eq!(values[sent + 100], "last");
}

/// A caller sending as fast as it can still has its records batched by the sender: only
/// sends that come at least an append's time apart append alone.
///
/// The best of three runs counts: on a loaded machine (the suite's other tests on both
/// CPUs) the sender woken for a hand-off may preempt the sending thread at once, each
/// time, which makes batches of one with or without appends in the calling thread (one
/// run of twelve of the whole suite made 12,183 batches).
#[test]
fn a_tight_loop_of_sends_is_still_batched() {
    let records = 20_000;
    let mut counts = Vec::new();
    for _ in 0..3 {
        let (log, producer) = temp_log_with_t();
        // Made first: the loop does nothing but send.
        let values: Vec<bytes::Bytes> = (0..records)
            .map(|i| format!("{i:0100}").into_bytes().into())
            .collect();
        for value in values {
            drop(
                producer
                    .send(ProducerRecord::new("t").partition(0).value(value))
                    .unwrap(),
            );
        }
        producer.flush().unwrap();
        let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
        assert_eq!(values.len(), records);
        assert!(values.windows(2).all(|w| w[0] < w[1]), "send order kept");
        counts.push(batch_count(&log, "t", 0));
        if counts.last().is_some_and(|&batches| batches <= records / 2) {
            return;
        }
    }
    panic!("batches in each run: {counts:?}");
}

/// Sends "first" to `t`, which the call appends in this thread, then waits longer than that
/// append took: the next send appends in this thread too.
fn send_first_in_this_thread(producer: &Producer) {
    let first = producer
        .send(ProducerRecord::new("t").value("first"))
        .unwrap();
    assert!(first.is_done());
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(50));
}

/// A send appending in the calling thread reports the append's failure through its
/// future, as the sender does.
#[test]
fn a_failed_append_in_the_calling_thread_fails_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let (log, faults) = log_with_faults(dir.path());
    // A tiny segment: the second record rolls a new one, which the fault fails.
    log.create_topic("t", TopicConfig::default().segment_bytes(100))
        .unwrap();
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    send_first_in_this_thread(&producer);
    faults.fail_dir(dir.path(), FaultKind::Eio);
    let failed = producer
        .send(ProducerRecord::new("t").value("second"))
        .unwrap();
    assert!(failed.is_done());
    let failed = failed.wait();
    assert!(
        matches!(failed, Err(Error::Io { .. } | Error::Poisoned { .. })),
        "{failed:?}"
    );
    faults.heal_dir(dir.path());
    assert_eq!(read_all(&log, "t", 0).len(), 1);
}

/// A send appending in the calling thread (`Acks::Leader`) answers as the sender does once
/// its batch is in the log: with its offset, even when a storage call after it fails (the
/// index entry's, say). Before, that error reached the future, and an application
/// retrying on it wrote the record twice. A fault at each storage call of the send in
/// turn: the answer always agrees with the log.
#[test]
fn a_send_in_the_calling_thread_answers_as_its_batch_landed() {
    let mut landed_with_error = 0;
    for k in 1..=60u64 {
        let dir = tempfile::tempdir().unwrap();
        let (log, faults) = log_with_faults(dir.path());
        // An index entry for every batch.
        log.create_topic("t", TopicConfig::default().index_interval_bytes(1))
            .unwrap();
        let producer = log
            .producer(ProducerConfig::default().acks(Acks::Leader).retries(0))
            .unwrap();
        send_first_in_this_thread(&producer);
        let ops = faults.ops();
        faults.fail_at(ops + k, FaultKind::Eio, false);
        let sent = producer
            .send(ProducerRecord::new("t").value("second"))
            .unwrap();
        assert!(sent.is_done(), "k={k}: not appended in the calling thread");
        let answer = sent.wait();
        let injected = faults.injected() > 0;
        faults.heal();
        let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
        let landed = values.contains(&"second".to_owned());
        match &answer {
            Ok(metadata) => {
                assert!(landed, "k={k}: acknowledged, not in the log");
                assert_eq!(metadata.offset, Some(1), "k={k}");
            }
            Err(error) => assert!(!landed, "k={k}: in the log, answered {error:?}"),
        }
        if landed && injected {
            landed_with_error += 1;
        }
        drop(producer);
        drop(log);
        if !injected {
            break;
        }
    }
    assert!(
        landed_with_error > 0,
        "no fault met a send whose batch landed"
    );
}

/// A topic whose appends wait for an fsync keeps that wait on the sender thread: `send`
/// returns at once even with nothing pending.
#[test]
fn a_send_to_a_topic_that_syncs_every_batch_does_not_wait_for_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (log, faults) = log_with_faults(dir.path());
    log.create_topic("t", TopicConfig::default().fsync(FsyncPolicy::EveryBatch))
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    faults.slow_dir(dir.path(), Duration::from_millis(500));
    let sent = producer
        .send(ProducerRecord::new("t").value("synced"))
        .unwrap();
    assert!(!sent.is_done(), "send waited for the fsync");
    faults.heal_dir(dir.path());
    assert_eq!(sent.wait().unwrap().offset, Some(0));
}

/// A waker that sends a record when woken (on the producer's sender thread).
struct SendOnWake {
    producer: Producer,
    done: std::sync::Mutex<std::sync::mpsc::Sender<bool>>,
}

impl Wake for SendOnWake {
    fn wake(self: Arc<Self>) {
        // Long after any append in the test's thread: only being the sender thread keeps
        // this send from appending in its own thread.
        std::thread::sleep(Duration::from_millis(20));
        let sent = self
            .producer
            .send(
                ProducerRecord::new("t")
                    .partition(0)
                    .value("from the waker"),
            )
            .is_ok();
        let _ = self.done.lock().unwrap().send(sent);
    }
}

/// A waker on the sender thread that sends to the same partition of a replicated topic
/// (whose wakers run while the partition's append lock is held) does not append in its
/// own thread, which would wait for that lock for ever.
#[test]
fn a_waker_that_sends_on_the_sender_thread_does_not_hang() {
    waker_sends_to_the_partition(false);
}

/// As above, through a second producer: no sender thread's waker appends in its thread.
#[test]
fn a_waker_that_sends_through_another_producer_does_not_hang() {
    waker_sends_to_the_partition(true);
}

fn waker_sends_to_the_partition(through_another: bool) {
    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let log = Log::builder().dirs(&dirs).open().unwrap();
    log.create_topic("t", TopicConfig::default().replication_factor(2))
        .unwrap();
    let config = ProducerConfig::default().acks(Acks::Leader);
    let producer = log.producer(config.clone()).unwrap();
    let (done, woken) = std::sync::mpsc::channel();
    let waker = Waker::from(Arc::new(SendOnWake {
        producer: if through_another {
            log.producer(config).unwrap()
        } else {
            producer.clone()
        },
        done: std::sync::Mutex::new(done),
    }));
    let (stalled, _) = send_with_waker_to_the_sender(&producer, &waker);
    let sent = woken.recv_timeout(Duration::from_secs(10));
    if sent != Ok(true) {
        // Hung: closing the producers would wait for the hung sender thread for ever.
        std::mem::forget((producer, stalled, waker, log));
        panic!("the waker's send did not return: {sent:?}");
    }
    let stalled = stalled.wait().unwrap().offset.unwrap();
    producer.flush().unwrap();
    // Readable once the follower has it too (the high watermark).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut values: Vec<String> = Vec::new();
    while values.len() as u64 <= stalled + 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        values = read_all(&log, "t", 0).iter().map(value_of).collect();
    }
    assert_eq!(values.len() as u64, stalled + 2);
    assert_eq!(values.last().map(String::as_str), Some("from the waker"));
}

/// Two threads closing one producer at once: each returns only once everything pending is
/// appended (the second used to return at once, while the first waited for the sender).
#[test]
fn a_second_concurrent_close_waits_for_the_sender_too() {
    let (log, producer) = temp_log_with_t();
    // The sender stalled in a waker, with more records pending.
    let (_stalled, sent, release) = stall_the_sender(&log, &producer);
    let pending = producer
        .send_batch((0..10).map(|i| to_t0(&i.to_string())))
        .unwrap();
    let (returned, closes) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let (producer, returned) = (producer.clone(), returned.clone());
        std::thread::spawn(move || {
            producer.close().unwrap();
            returned.send(()).unwrap();
        });
    }
    assert!(
        closes.recv_timeout(Duration::from_millis(200)).is_err(),
        "a close returned while the sender still had records to append"
    );
    release.send(()).unwrap();
    for _ in 0..2 {
        closes.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    // Appended before either close returned.
    assert_eq!(read_all(&log, "t", 0).len(), sent + 10);
    for future in pending {
        future.wait().unwrap();
    }
}

/// A producer that wrote to a topic later deleted lets go of it (its partitions, and so the
/// mappings of its unlinked segment files, whose disk space would otherwise stay taken
/// while the producer lives) once it looks up another topic: a long-lived producer writing
/// to one topic a day, the old ones deleted, does not keep them all.
#[test]
fn a_producer_lets_go_of_deleted_topics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let log = Log::open(&root).unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    log.create_topic("day1", TopicConfig::default()).unwrap();
    let sent = producer
        .send(ProducerRecord::new("day1").value("a"))
        .unwrap();
    producer.flush().unwrap();
    sent.wait().unwrap();
    log.delete_topic("day1").unwrap();
    let held = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|line| line.contains(root.to_str().unwrap()) && line.ends_with("(deleted)"))
            .count()
    };
    assert!(
        held() > 0,
        "the deleted topic's files are still mapped here"
    );
    log.create_topic("day2", TopicConfig::default()).unwrap();
    let sent = producer
        .send(ProducerRecord::new("day2").value("b"))
        .unwrap();
    producer.flush().unwrap();
    sent.wait().unwrap();
    // The sender thread drops the batch it appended just after completing it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still mapped: {}",
            held()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    producer.close().unwrap();
    log.close().unwrap();
}

/// A log over two directories through a fault injector, with topic `t` (two replicas,
/// `min_insync_replicas` 2) holding `a` and `b`, topic `u` (two replicas), and `t`'s
/// follower's directory failed: `acks=All` appends to `t` are refused with
/// `NotEnoughReplicas` until the directory is restored.
fn too_few_in_sync(root: &Path) -> (Log, FaultStorage, Vec<std::path::PathBuf>, usize) {
    too_few_in_sync_on(root, Arc::new(tarnlog::SystemClock))
}

/// [`too_few_in_sync`] on `clock`.
fn too_few_in_sync_on(
    root: &Path,
    clock: Arc<dyn tarnlog::Clock>,
) -> (Log, FaultStorage, Vec<std::path::PathBuf>, usize) {
    let dirs: Vec<_> = ["a", "b"].iter().map(|d| root.join(d)).collect();
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(&dirs)
        .storage(fault.shared())
        .clock(clock)
        .open()
        .unwrap();
    let config = TopicConfig::default()
        .replication_factor(2)
        .min_insync_replicas(2);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    log.create_topic("u", TopicConfig::default().replication_factor(2))
        .unwrap();
    let leader = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    let follower = 1 - leader;
    fault.fail_dir(&dirs[follower], FaultKind::Eio);
    // The failure is noticed at the next append that needs the follower.
    let error = partition.append_values(["b"]).unwrap_err();
    assert!(
        matches!(error, Error::NotEnoughReplicasAfterAppend { .. }),
        "{error:?}"
    );
    assert!(matches!(
        partition.append_values(["refused"]),
        Err(Error::NotEnoughReplicas { .. })
    ));
    (log, fault, dirs, follower)
}

/// Kafka's producer retries `NOT_ENOUGH_REPLICAS` until `delivery.timeout.ms`: sends made
/// while a replica is missing are held, in order, while other partitions go on; `close`
/// waits for them, and once the directory is restored each record is appended once.
#[test]
fn sends_are_retried_until_enough_replicas_are_back() {
    let root = tempfile::tempdir().unwrap();
    let (log, fault, dirs, follower) = too_few_in_sync(root.path());
    let producer = log
        .producer(ProducerConfig::default().retry_backoff_ms(5))
        .unwrap();
    let first = producer.send(to_t0("c")).unwrap();
    let second = producer.send(to_t0("d")).unwrap();
    // Another partition (min_insync_replicas 1) is not held up by them.
    let other = producer
        .send(ProducerRecord::new("u").value("x"))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(other.offset, Some(0));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!first.is_done() && !second.is_done());
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    assert_eq!(
        partition.log_end_offset(),
        2,
        "nothing written while refused"
    );
    let closer = {
        let producer = producer.clone();
        std::thread::spawn(move || producer.close())
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!closer.is_finished(), "close waits for the retries");
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    closer.join().unwrap().unwrap();
    let (first, second) = (first.wait().unwrap(), second.wait().unwrap());
    assert_eq!((first.offset, second.offset), (Some(2), Some(3)));
    let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
    assert_eq!(values, ["a", "b", "c", "d"]);
}

/// After `retries` retries the batch fails with the last error; the retries are spaced by
/// `retry_backoff_ms`, doubled each time (Kafka's exponential backoff, KIP-580).
#[test]
fn retries_run_out_with_the_last_error_after_backing_off() {
    let root = tempfile::tempdir().unwrap();
    let (log, _fault, _dirs, _) = too_few_in_sync(root.path());
    let producer = log
        .producer(
            ProducerConfig::default()
                .retries(3)
                .retry_backoff_ms(40)
                .linger_ms(1),
        )
        .unwrap();
    let start = std::time::Instant::now();
    let error = producer.send(to_t0("c")).unwrap().wait().unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(error, Error::NotEnoughReplicas { .. }),
        "{error:?}"
    );
    // 40 + 80 + 160 ms between the four tries.
    assert!(elapsed >= Duration::from_millis(280), "{elapsed:?}");
    assert_eq!(
        log.topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_end_offset(),
        2
    );
    // Without retries the error comes at once.
    let producer = log
        .producer(
            ProducerConfig::default()
                .retries(0)
                .retry_backoff_ms(60_000),
        )
        .unwrap();
    let error = producer.send(to_t0("c")).unwrap().wait().unwrap_err();
    assert!(
        matches!(error, Error::NotEnoughReplicas { .. }),
        "{error:?}"
    );
}

/// A batch still failing when `delivery_timeout_ms` has passed since it was created fails
/// with `Timeout`; the later batches of its partition are tried after it, and its buffer
/// memory is free again.
#[test]
fn a_batch_failing_past_the_delivery_timeout_times_out() {
    let root = tempfile::tempdir().unwrap();
    let (log, fault, dirs, follower) = too_few_in_sync(root.path());
    // Buffer memory for two records, sent lingering (a send appending in its own thread
    // takes none).
    let value = |v: &str| v.repeat(100);
    let each = BatchBuilder::estimate_record_size(None, Some(100), &[]);
    let producer = log
        .producer(
            ProducerConfig::default()
                .delivery_timeout_ms(300)
                .retry_backoff_ms(20)
                .linger_ms(1)
                .buffer_memory(each * 2)
                .max_block_ms(10_000),
        )
        .unwrap();
    let start = std::time::Instant::now();
    let first = producer.send(to_t0(&value("c"))).unwrap();
    let error = first.wait().unwrap_err();
    assert!(matches!(error, Error::Timeout { ms: 300, .. }), "{error:?}");
    assert!(start.elapsed() >= Duration::from_millis(290));
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    // The failed batch's memory is free (at the sender's next round): two sends fit again
    // (one more would wait `max_block_ms` and fail).
    let sent: Vec<_> = ["d", "e"]
        .iter()
        .map(|v| producer.send(to_t0(&value(v))).unwrap())
        .collect();
    let offsets: Vec<_> = sent.into_iter().map(|s| s.wait().unwrap().offset).collect();
    assert_eq!(offsets, [Some(2), Some(3)]);
    let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
    assert_eq!(values, ["a", "b", &value("d"), &value("e")]);
}

/// A partition with no replica able to lead (`PartitionOffline`) is retried too, until its
/// directory is restored; an I/O error met by the append itself is not (the batch may be
/// partly written), and `acks=None` sends are never retried.
#[test]
fn an_offline_partition_is_retried_until_its_directory_returns() {
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b"].iter().map(|d| root.path().join(d)).collect();
    let (log, fault) = common::faulty_log(&dirs);
    let partition = log.create_topic("t", None).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    let dir = log.describe_topic("t").unwrap().partitions[0]
        .leader
        .unwrap();
    fault.fail_dir(&dirs[dir], FaultKind::Eio);
    let producer = log
        .producer(ProducerConfig::default().retry_backoff_ms(5))
        .unwrap();
    let error = producer.send(to_t0("lost")).unwrap().wait().unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    let none = log
        .producer(ProducerConfig::default().acks(Acks::None))
        .unwrap();
    let error = none.send(to_t0("dropped")).unwrap().wait();
    assert!(
        matches!(error, Err(Error::PartitionOffline { .. })),
        "{error:?}"
    );
    let held = producer.send(to_t0("b")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!held.is_done());
    fault.heal_dir(&dirs[dir]);
    log.restore_dir(&dirs[dir]).unwrap();
    assert_eq!(held.wait().unwrap().offset, Some(1));
    let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
    assert_eq!(values, ["a", "b"]);
}

/// A batch sent while an earlier one of its partition waits for its retry goes after it,
/// even when it could be appended at once (the replicas came back during the backoff).
#[test]
fn a_later_batch_waits_behind_the_one_being_retried() {
    let root = tempfile::tempdir().unwrap();
    let (log, fault, dirs, follower) = too_few_in_sync(root.path());
    let producer = log
        .producer(ProducerConfig::default().retry_backoff_ms(2_000))
        .unwrap();
    let first = producer.send(to_t0("c")).unwrap();
    // Its first tries have failed (the sender's unless it did not run for that long, which
    // would leave this test proving nothing); the next one is two seconds away.
    std::thread::sleep(Duration::from_millis(200));
    fault.heal_dir(&dirs[follower]);
    log.restore_dir(&dirs[follower]).unwrap();
    let second = producer.send(to_t0("d")).unwrap();
    assert_eq!(second.wait().unwrap().offset, Some(3));
    assert_eq!(first.wait().unwrap().offset, Some(2));
    let values: Vec<String> = read_all(&log, "t", 0).iter().map(value_of).collect();
    assert_eq!(values, ["a", "b", "c", "d"]);
}

/// Batches queued behind one being retried share its delivery timeout, by the real clock
/// once held back: on a manual clock that never moves, three one-record batches all time
/// out about one `delivery_timeout_ms` after they were sent, not one after another.
#[test]
fn batches_queued_behind_a_retried_one_time_out_with_it() {
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let (log, _fault, _dirs, _) = too_few_in_sync_on(root.path(), clock);
    let producer = log
        .producer(
            ProducerConfig::default()
                .batch_size(0)
                .delivery_timeout_ms(1_000)
                .retry_backoff_ms(20),
        )
        .unwrap();
    let start = std::time::Instant::now();
    let sent: Vec<_> = ["c", "d", "e"]
        .iter()
        .map(|v| producer.send(to_t0(v)).unwrap())
        .collect();
    for future in sent {
        let error = future.wait().unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    }
    let elapsed = start.elapsed();
    // One after another they would take three seconds.
    assert!(
        elapsed >= Duration::from_millis(990) && elapsed < Duration::from_millis(2_500),
        "{elapsed:?}"
    );
}

/// `close_timeout` (Kafka's `close(Duration)`) waits for what is pending up to its time,
/// then fails what is left, a batch being retried included, with `Closed`: nothing of it
/// is written, and later sends are refused.
#[test]
fn close_timeout_fails_what_is_still_being_retried() {
    let root = tempfile::tempdir().unwrap();
    let (log, _fault, _dirs, _) = too_few_in_sync(root.path());
    let producer = log
        .producer(ProducerConfig::default().retry_backoff_ms(10))
        .unwrap();
    let other = producer.send(ProducerRecord::new("u").value("x")).unwrap();
    let held = producer.send(to_t0("c")).unwrap();
    let start = std::time::Instant::now();
    producer.close_timeout(Duration::from_millis(200)).unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(60),
        "{elapsed:?}"
    );
    assert_eq!(other.wait().unwrap().offset, Some(0));
    let error = held.wait().unwrap_err();
    assert!(matches!(error, Error::Closed), "{error:?}");
    assert_eq!(
        log.topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_end_offset(),
        2
    );
    assert!(matches!(
        producer.send(to_t0("d")).map(|_| ()),
        Err(Error::Closed)
    ));
}

/// A callback may send to a topic its send creates (`auto_create_topics`) while another
/// thread changes the config of the replicated partition the callback's record went to:
/// `acks=Leader` answers once the partition's order lock is released, so the callback's
/// topic creation (the admin lock) and the config change (the admin lock, then the order
/// lock) do not wait for each other.
#[test]
fn a_callback_creating_a_topic_does_not_deadlock_with_a_config_change() {
    use std::sync::mpsc;
    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let log = Log::builder()
        .dirs(&dirs)
        .auto_create_topics(true)
        .open()
        .unwrap();
    log.create_topic("t", TopicConfig::default().replication_factor(2))
        .unwrap();
    let producer = log
        .producer(ProducerConfig::default().acks(Acks::Leader))
        .unwrap();
    let (entered, wait_entered) = mpsc::channel::<()>();
    let (done, wait_done) = mpsc::channel::<tarnlog::Result<()>>();
    let callback = {
        let producer = producer.clone();
        move |result: tarnlog::Result<tarnlog::RecordMetadata>| {
            result.unwrap();
            entered.send(()).unwrap();
            // Time for the other thread to take the admin lock and wait for the partition.
            std::thread::sleep(Duration::from_millis(200));
            let sent = producer.send(ProducerRecord::new("brand-new").value("x"));
            done.send(sent.map(drop)).unwrap();
        }
    };
    let record = ProducerRecord::new("t").partition(0).value("v");
    producer.send_with_callback(record, callback).unwrap();
    let alter = {
        let log = log.clone();
        std::thread::spawn(move || {
            wait_entered.recv().unwrap();
            let config = log.topic("t").unwrap().config().retention_ms(1234);
            log.alter_topic_config("t", config).unwrap();
        })
    };
    let sent = wait_done
        .recv_timeout(Duration::from_secs(20))
        .expect("the callback's send never returned (deadlock)");
    sent.unwrap();
    alter.join().unwrap();
    producer.flush().unwrap();
    assert_eq!(log.topic("t").unwrap().config().retention_ms, 1234);
    assert_eq!(read_all(&log, "brand-new", 0).len(), 1);
}
