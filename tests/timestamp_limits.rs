//! A topic's `timestamp_before_max_ms` / `timestamp_after_max_ms` (Kafka's
//! `message.timestamp.before.max.ms` / `after.max.ms`, KIP-937): a `CreateTime` record
//! further from the log's clock is refused with `InvalidTimestamp` and nothing of its
//! batch is written. Ported from Kafka's `LogValidatorTest`
//! (`testInvalidCreateTimeNonCompressedV2`, `testRecordWithPastTimestampIsRejected`,
//! `testRecordWithFutureTimestampIsRejected`, `testInvalidTimestampExceptionHasBatchIndex`).
//! Also the leader's `maxTimestamp` of a `CreateTime` batch: its records' largest, whatever
//! the client's header said (`testCreateTimeNonCompressedV2`'s `maxTimestampMs`), and
//! `LogAppendTime` stamps in offset order.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tarnlog::codec::{CRC_OFFSET, MAX_TIMESTAMP_OFFSET, compute_crc, verify_crc};
use tarnlog::{
    BatchBuilder, Error, Log, ManualClock, Partition, ProducerConfig, ProducerRecord,
    TimestampType, TopicConfig,
};

const NOW: i64 = 1_700_000_000_000;

fn log_at(root: &std::path::Path) -> (Log, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW));
    let log = Log::builder()
        .dir(root)
        .clock(Arc::clone(&clock) as Arc<dyn tarnlog::Clock>)
        .open()
        .unwrap();
    (log, clock)
}

fn limited(before: i64, after: i64) -> TopicConfig {
    TopicConfig::default()
        .timestamp_before_max_ms(before)
        .timestamp_after_max_ms(after)
}

/// Partition 0 of a new topic.
fn partition(log: &Log, name: &str, config: TopicConfig) -> Partition {
    log.create_topic(name, config)
        .unwrap()
        .partition(0)
        .unwrap()
}

/// A batch of one record per timestamp.
fn batch(timestamps: &[i64]) -> Vec<u8> {
    batch_with_headers(timestamps, &[])
}

/// A batch of one record per timestamp, each with `headers`.
fn batch_with_headers(timestamps: &[i64], headers: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, &ts) in timestamps.iter().enumerate() {
        builder.push(ts, None, Some(format!("v{i}").as_bytes()), headers);
    }
    builder.finish_vec().unwrap()
}

fn timestamps(partition: &Partition) -> Vec<i64> {
    let read = partition.read(0, 1 << 20).unwrap();
    let mut out = Vec::new();
    for batch in read.batches() {
        for record in batch.unwrap().records() {
            out.push(record.unwrap().timestamp);
        }
    }
    out
}

/// `testInvalidCreateTimeNonCompressedV2`: with both limits at one second, records a
/// second and a millisecond away either way are refused; the bounds themselves pass.
#[test]
fn create_time_outside_the_limits_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (log, _clock) = log_at(root.path());
    let p = partition(&log, "t", limited(1000, 1000));
    for ts in [NOW - 1001, NOW + 1001] {
        let err = p.append(&batch(&[NOW, ts])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidTimestamp { timestamp, index: 1, earliest, latest }
                    if timestamp == ts && earliest == NOW - 1000 && latest == NOW + 1000
            ),
            "{err:?}"
        );
        assert_eq!(p.log_end_offset(), 0, "nothing of the batch is written");
    }
    p.append(&batch(&[NOW - 1000, NOW + 1000, NOW])).unwrap();
    assert_eq!(timestamps(&p), [NOW - 1000, NOW + 1000, NOW]);
}

/// `testRecordWithPastTimestampIsRejected` / `testRecordWithFutureTimestampIsRejected`:
/// each limit alone, five minutes, the other unlimited.
#[test]
fn each_limit_works_alone() {
    const FIVE_MIN: i64 = 5 * 60 * 1000;
    let root = tempfile::tempdir().unwrap();
    let (log, _clock) = log_at(root.path());
    let past = partition(&log, "past", limited(FIVE_MIN, i64::MAX));
    assert!(matches!(
        past.append(&batch(&[NOW - FIVE_MIN - 1])),
        Err(Error::InvalidTimestamp { .. })
    ));
    past.append(&batch(&[NOW + 100 * FIVE_MIN])).unwrap();
    let future = partition(&log, "future", limited(i64::MAX, FIVE_MIN));
    assert!(matches!(
        future.append(&batch(&[NOW + FIVE_MIN + 1])),
        Err(Error::InvalidTimestamp { .. })
    ));
    future.append(&batch(&[0, NOW - 100 * FIVE_MIN])).unwrap();
    assert_eq!(past.log_end_offset(), 1);
    assert_eq!(future.log_end_offset(), 2);
}

/// `testInvalidTimestampExceptionHasBatchIndex`: the error names the first bad record's
/// position in its batch; a record without a timestamp (-1) is never refused (Kafka checks
/// only records that carry one).
#[test]
fn the_error_names_the_record_and_records_without_a_timestamp_pass() {
    let root = tempfile::tempdir().unwrap();
    let (log, _clock) = log_at(root.path());
    let p = partition(&log, "t", limited(0, 0));
    let err = p.append(&batch(&[NOW, -1, NOW - 1, NOW + 1])).unwrap_err();
    assert!(
        matches!(err, Error::InvalidTimestamp { index: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("record 2"), "{err}");
    p.append(&batch(&[NOW, -1])).unwrap();
    assert_eq!(timestamps(&p), [NOW, -1]);
}

/// Under `LogAppendTime` the log stamps its own time: the limits do not apply (Kafka
/// checks only `CreateTime` topics).
#[test]
fn log_append_time_topics_ignore_the_limits() {
    let root = tempfile::tempdir().unwrap();
    let (log, _clock) = log_at(root.path());
    let p = partition(
        &log,
        "t",
        limited(0, 0).timestamp_type(TimestampType::LogAppendTime),
    );
    p.append(&batch(&[12, NOW + 1_000_000])).unwrap();
    assert_eq!(timestamps(&p), [NOW, NOW]);
}

/// The limits follow the log's clock, change live with `alter_topic_config`, persist
/// across a reopen, and refuse negative values without changing anything.
#[test]
fn limits_change_live_persist_and_refuse_bad_values() {
    let root = tempfile::tempdir().unwrap();
    {
        let (log, clock) = log_at(root.path());
        let p = partition(&log, "t", TopicConfig::default());
        p.append(&batch(&[0])).unwrap();
        log.alter_topic_config("t", limited(60_000, 0)).unwrap();
        assert!(matches!(
            p.append(&batch(&[0])),
            Err(Error::InvalidTimestamp { .. })
        ));
        p.append(&batch(&[NOW - 60_000])).unwrap();
        clock.advance(1);
        assert!(matches!(
            p.append(&batch(&[NOW - 60_000])),
            Err(Error::InvalidTimestamp { .. })
        ));
        for bad in [limited(-1, 0), limited(0, -1)] {
            let err = log.alter_topic_config("t", bad.clone()).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
            assert!(
                matches!(log.create_topic("u", bad), Err(Error::InvalidConfig { .. })),
                "refused at creation too"
            );
        }
        assert_eq!(log.topic("t").unwrap().config().timestamp_after_max_ms, 0);
        assert!(log.topic("u").is_err());
        log.close().unwrap();
    }
    let (log, _clock) = log_at(root.path());
    let config = log.topic("t").unwrap().config();
    assert_eq!(
        (
            config.timestamp_before_max_ms,
            config.timestamp_after_max_ms
        ),
        (60_000, 0)
    );
    let p = log.topic("t").unwrap().partition(0).unwrap();
    assert!(matches!(
        p.append(&batch(&[NOW + 1])),
        Err(Error::InvalidTimestamp { .. })
    ));
    assert_eq!(p.log_end_offset(), 2);
}

/// A producer refuses a record whose own timestamp is outside the limits at `send`, alone
/// (its batch-mates are appended); records stamped by the producer's clock pass at `send`.
/// A record that passed at `send` but grew too old before its batch was appended fails
/// at the append, with its batch-mates (as in Kafka, where the broker fails the batch).
#[test]
fn a_producer_refuses_out_of_range_timestamps_at_send() {
    let root = tempfile::tempdir().unwrap();
    let (log, clock) = log_at(root.path());
    let p = partition(&log, "t", limited(1000, 1000));
    let producer = log
        .producer(ProducerConfig::default().linger_ms(60_000))
        .unwrap();
    let first = producer
        .send(ProducerRecord::new("t").value("a").timestamp(NOW - 1000))
        .unwrap();
    let err = producer
        .send(ProducerRecord::new("t").value("b").timestamp(NOW - 1001))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidTimestamp { timestamp, .. } if timestamp == NOW - 1001),
        "{err:?}"
    );
    let stamped = producer.send(ProducerRecord::new("t").value("c")).unwrap();
    producer.flush().unwrap();
    assert_eq!(first.wait().unwrap().offset, Some(0));
    assert_eq!(stamped.wait().unwrap().offset, Some(1));
    assert_eq!(timestamps(&p), [NOW - 1000, NOW]);

    let late = producer
        .send(ProducerRecord::new("t").value("d").timestamp(NOW - 1000))
        .unwrap();
    let mate = producer.send(ProducerRecord::new("t").value("e")).unwrap();
    clock.advance(1);
    producer.flush().unwrap();
    for future in [late, mate] {
        let err = future.wait().unwrap_err();
        assert!(matches!(err, Error::InvalidTimestamp { .. }), "{err:?}");
    }
    assert_eq!(p.log_end_offset(), 2);
    producer.close().unwrap();
}

/// A client batch whose header names another `maxTimestamp` than its records' largest
/// (higher or lower, CRC made valid again) is stored with the records' largest, its CRC
/// recomputed: the time index and `offset_for_time` go by it. A batch whose header is
/// right is stored byte for byte (but for the offset and epoch outside the CRC).
#[test]
fn the_stored_max_timestamp_is_the_records_largest() {
    let root = tempfile::tempdir().unwrap();
    let (log, _clock) = log_at(root.path());
    let p = partition(&log, "t", TopicConfig::default().index_interval_bytes(0));
    let records = [NOW - 3000, NOW - 1000, NOW - 2000];
    // With a record header too: the append checks such records on its slower path.
    let header: &[(&str, Option<&[u8]>)] = &[("h", Some(b"x"))];
    for (claimed, headers) in [
        (NOW - 5000, &[][..]),
        (NOW + 5000, &[][..]),
        (NOW - 1000, &[][..]),
        (NOW - 5000, header),
        (NOW + 5000, header),
    ] {
        let mut bytes = batch_with_headers(&records, headers);
        bytes[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&claimed.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let info = p.append(&bytes).unwrap();
        assert_eq!(info.max_timestamp, NOW - 1000, "claimed {claimed}");
        let read = p.read(info.base_offset, 1 << 20).unwrap();
        let stored = read.batches().next().unwrap().unwrap();
        assert_eq!(
            stored.header().max_timestamp,
            NOW - 1000,
            "claimed {claimed}"
        );
        verify_crc(stored.bytes()).unwrap();
        // Beyond the offset and epoch (outside the CRC), only the max timestamp and the
        // CRC may differ from what the client sent, and only when the first was wrong.
        let mut expected = bytes.clone();
        expected[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&(NOW - 1000).to_be_bytes());
        let crc = compute_crc(&expected);
        expected[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            stored.bytes()[CRC_OFFSET..],
            expected[CRC_OFFSET..],
            "claimed {claimed}"
        );
        if claimed == NOW - 1000 {
            assert_eq!(expected, bytes);
        }
    }
    // Lookups by time go by the records' largest: the first batch holds NOW - 1000.
    let found = p.offset_for_time(NOW - 1000).unwrap().unwrap();
    assert_eq!((found.offset, found.timestamp), (1, NOW - 1000));
    assert!(p.offset_for_time(NOW - 999).unwrap().is_none());
}

/// A record refused at `send` for its timestamp (negative, or outside the topic's limits)
/// does not move a stateful partitioner (Kafka refuses a negative one before asking; its
/// broker checks the limits).
#[test]
fn a_refused_record_leaves_the_partitioner_where_it_was() {
    let root = tempfile::tempdir().unwrap();
    let (log, _clock) = log_at(root.path());
    log.create_topic("t", limited(1000, 1000).partitions(3))
        .unwrap();
    let producer = log
        .producer(
            ProducerConfig::default()
                .partitioner(Arc::new(tarnlog::RoundRobinPartitioner::default())),
        )
        .unwrap();
    for timestamp in [-5, NOW - 1001, NOW + 1001, NOW + 5000] {
        assert!(
            producer
                .send(ProducerRecord::new("t").value("x").timestamp(timestamp))
                .is_err()
        );
    }
    let partitions: Vec<u32> = (0..2)
        .map(|_| {
            producer
                .send(ProducerRecord::new("t").value("y"))
                .unwrap()
                .wait()
                .unwrap()
                .partition
        })
        .collect();
    assert_eq!(partitions, [0, 1]);
    producer.close().unwrap();
}

/// A clock counting up by one a read, that holds the first read made on a thread named
/// `stalled` until released: that thread has its time but has not appended yet.
#[derive(Debug, Default)]
struct StallingClock {
    reads: std::sync::atomic::AtomicI64,
    stalled: std::sync::atomic::AtomicBool,
    released: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

impl tarnlog::Clock for StallingClock {
    fn now_ms(&self) -> i64 {
        use std::sync::atomic::Ordering;
        let now = NOW + self.reads.fetch_add(1, Ordering::SeqCst);
        if std::thread::current().name() == Some("stalled")
            && !self.stalled.swap(true, Ordering::SeqCst)
        {
            let mut released = self.released.lock().unwrap();
            while !*released {
                released = self.wake.wait(released).unwrap();
            }
        }
        now
    }
}

/// `LogAppendTime` stamps follow offset order: the time is read under the partition's
/// writer lock, as Kafka reads it under its log's lock. Here an appender reads the clock,
/// another appends meanwhile, then the first goes on: read before the lock, its earlier
/// time would land after the other's later one.
#[test]
fn append_times_follow_offset_order() {
    use std::sync::atomic::Ordering;
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(StallingClock::default());
    let log = Log::builder()
        .dir(root.path())
        .clock(Arc::clone(&clock) as Arc<dyn tarnlog::Clock>)
        .open()
        .unwrap();
    let p = partition(
        &log,
        "t",
        TopicConfig::default().timestamp_type(TimestampType::LogAppendTime),
    );
    let stalled = {
        let p = p.clone();
        std::thread::Builder::new()
            .name("stalled".into())
            .spawn(move || p.append(&batch(&[NOW])).unwrap())
            .unwrap()
    };
    while !clock.stalled.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let first = p.append(&batch(&[NOW])).unwrap();
    *clock.released.lock().unwrap() = true;
    clock.wake.notify_all();
    let second = stalled.join().unwrap();
    assert_eq!((first.base_offset, second.base_offset), (0, 1));
    let stamped = timestamps(&p);
    assert!(
        stamped[0] <= stamped[1],
        "append times {stamped:?} fall in offset order"
    );
}
