//! What `poll` returns: the owned records (`iter`, by value) and the borrowed ones
//! (`views`) are the same records, whichever way and in whichever order they are read, and
//! a batch whose records break off returns the records before the break, then an error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tarnlog::codec::{CRC_OFFSET, compute_crc};
use tarnlog::{
    AutoOffsetReset, BatchBuilder, ConsumerConfig, ConsumerRecord, ConsumerRecords, Error, Header,
    Log, RecordRef, TimestampType, TopicConfig, TopicPartition,
};

const T0: i64 = 1_700_000_000_000;

/// One record to send: key, value, headers, partition.
type Sent = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    u32,
);

fn sent() -> impl Strategy<Value = Sent> {
    let bytes =
        |max| proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..max));
    let header = ("[a-z]{0,4}", bytes(6));
    (
        bytes(8),
        bytes(64),
        proptest::collection::vec(header, 0..3),
        0u32..3,
    )
}

/// Everything a `RecordRef` says equals what its owned record says.
fn assert_view_matches(view: &RecordRef<'_>, owned: &ConsumerRecord) {
    assert_eq!(view.topic(), &*owned.topic);
    assert_eq!(view.partition(), owned.partition);
    assert_eq!(view.topic_partition(), owned.topic_partition());
    assert_eq!(view.offset(), owned.offset);
    assert_eq!(view.timestamp(), owned.timestamp);
    assert_eq!(view.timestamp_type(), owned.timestamp_type);
    assert_eq!(view.key(), owned.key.as_deref());
    assert_eq!(view.value(), owned.value.as_deref());
    assert_eq!(view.header_count(), owned.headers.len());
    let headers: Vec<(&str, Option<&[u8]>)> = view.headers().collect();
    let expected: Vec<(&str, Option<&[u8]>)> = owned
        .headers
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_deref()))
        .collect();
    assert_eq!(headers, expected);
}

/// Reads one poll every way there is and checks they agree; returns its records.
fn read_every_way(records: &ConsumerRecords) -> Vec<ConsumerRecord> {
    // By value before anything made the owned records: made one at a time.
    let lazy: Vec<ConsumerRecord> = records.clone().into_iter().collect();
    assert_eq!(records.clone().into_iter().len(), records.count());
    // Borrowed, then owned from the borrowed.
    let from_views: Vec<ConsumerRecord> = records.views().map(|v| v.to_record()).collect();
    assert_eq!(records.views().len(), records.count());
    // By reference: all made at once and kept.
    let by_ref: Vec<ConsumerRecord> = records.iter().cloned().collect();
    for (view, owned) in records.views().zip(&by_ref) {
        assert_view_matches(&view, owned);
    }
    // By value after `iter`: the kept records handed out.
    let kept: Vec<ConsumerRecord> = records.clone().into_iter().collect();
    assert_eq!(lazy, by_ref);
    assert_eq!(from_views, by_ref);
    assert_eq!(kept, by_ref);
    assert_eq!(records.count(), by_ref.len());
    assert_eq!(records.is_empty(), by_ref.is_empty());
    assert_eq!(records.clone(), *records);
    let mut partitions: Vec<TopicPartition> = Vec::new();
    for record in &by_ref {
        if !partitions.contains(&record.topic_partition()) {
            partitions.push(record.topic_partition());
        }
    }
    assert_eq!(records.partitions(), partitions);
    for tp in &partitions {
        let of_tp: Vec<ConsumerRecord> = records.records(tp).into_iter().cloned().collect();
        let expected: Vec<ConsumerRecord> = by_ref
            .iter()
            .filter(|r| r.topic_partition() == *tp)
            .cloned()
            .collect();
        assert_eq!(of_tp, expected);
    }
    by_ref
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random records (null keys and values, headers with null values) over three
    /// partitions, in batches of random sizes, polled in random sizes: every way of reading a poll gives the same
    /// records, and together the polls give back exactly what was sent, in order.
    #[test]
    fn owned_and_borrowed_records_agree(
        records in proptest::collection::vec(sent(), 1..80),
        max_poll_records in 1usize..40,
        batch_len in 1usize..8,
        log_append_time in any::<bool>(),
    ) {
        let log = Log::temp().unwrap();
        let mut config = TopicConfig::default().partitions(3);
        if log_append_time {
            config = config.timestamp_type(TimestampType::LogAppendTime);
        }
        log.create_topic("t", config).unwrap();
        // Batches of up to `batch_len` records per partition, appended as they fill.
        let topic = log.topic("t").unwrap();
        let mut builders: Vec<BatchBuilder> = (0..3).map(|_| BatchBuilder::new()).collect();
        for (i, (key, value, headers, partition)) in records.iter().enumerate() {
            let headers: Vec<(&str, Option<&[u8]>)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
            let builder = &mut builders[*partition as usize];
            builder.push(T0 + i as i64, key.as_deref(), value.as_deref(), &headers);
            if builder.len() >= batch_len {
                let batch = builder.finish().unwrap();
                topic.partition(*partition).unwrap().append(batch).unwrap();
            }
        }
        for (p, builder) in builders.iter_mut().enumerate() {
            if !builder.is_empty() {
                let batch = builder.finish().unwrap();
                topic.partition(p as u32).unwrap().append(batch).unwrap();
            }
        }
        let mut consumer = log
            .consumer(
                ConsumerConfig::default()
                    .auto_offset_reset(AutoOffsetReset::Earliest)
                    .max_poll_records(max_poll_records),
            )
            .unwrap();
        consumer.assign((0..3).map(|p| TopicPartition::new("t", p))).unwrap();
        let mut got: BTreeMap<u32, Vec<ConsumerRecord>> = BTreeMap::new();
        let mut total = 0;
        while total < records.len() {
            let poll = consumer.poll(Duration::from_secs(5)).unwrap();
            prop_assert!(!poll.is_empty() && poll.count() <= max_poll_records);
            for record in read_every_way(&poll) {
                got.entry(record.partition).or_default().push(record);
                total += 1;
            }
        }
        prop_assert_eq!(total, records.len());
        for p in 0..3 {
            let expected: Vec<(usize, &Sent)> =
                records.iter().enumerate().filter(|(_, r)| r.3 == p).collect();
            let got = got.remove(&p).unwrap_or_default();
            prop_assert_eq!(got.len(), expected.len());
            for (offset, (record, (i, (key, value, headers, _)))) in got.iter().zip(expected).enumerate() {
                prop_assert_eq!(record.offset, offset as u64);
                prop_assert_eq!(record.key.as_deref(), key.as_deref());
                prop_assert_eq!(record.value.as_deref(), value.as_deref());
                let expected_headers: Vec<Header> = headers
                    .iter()
                    .map(|(k, v)| Header { key: k.clone(), value: v.clone().map(Into::into) })
                    .collect();
                prop_assert_eq!(&record.headers, &expected_headers);
                if log_append_time {
                    prop_assert_eq!(record.timestamp_type, TimestampType::LogAppendTime);
                } else {
                    prop_assert_eq!(record.timestamp_type, TimestampType::CreateTime);
                    prop_assert_eq!(record.timestamp, T0 + i as i64);
                }
            }
        }
        drop(consumer);
        log.close().unwrap();
    }
}

/// A batch whose CRC is right but whose third record's value length runs past the record
/// (a writer's bug, not a flipped bit): `poll` returns the two records before it, by value
/// and borrowed alike, then fails with `Corruption` at every poll, its position after the
/// records it returned. The same with the CRC check off, which does not cover framing.
#[test]
fn records_before_a_framing_error_are_returned_then_the_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let partition = log.create_topic("t", None).unwrap().partition(0).unwrap();
        one_batch(&partition, "val", 5);
        add_fillers(&partition);
        log.close().unwrap();
    }
    break_third_record(&dir.path().join("t-0"));

    let log = Log::open(dir.path()).unwrap();
    for check_crcs in [true, false] {
        for borrowed in [true, false] {
            let mut consumer = log
                .consumer(
                    ConsumerConfig::default()
                        .auto_offset_reset(AutoOffsetReset::Earliest)
                        .check_crcs(check_crcs),
                )
                .unwrap();
            let tp = TopicPartition::new("t", 0);
            consumer.assign([tp.clone()]).unwrap();
            let records = consumer.poll(Duration::from_millis(100)).unwrap();
            let values: Vec<Vec<u8>> = if borrowed {
                records
                    .views()
                    .map(|r| r.value().unwrap().to_vec())
                    .collect()
            } else {
                records
                    .into_iter()
                    .map(|r| r.value.unwrap().to_vec())
                    .collect()
            };
            assert_eq!(values, [b"val-0".to_vec(), b"val-1".to_vec()]);
            for _ in 0..2 {
                let error = consumer.poll(Duration::from_millis(10)).unwrap_err();
                assert!(matches!(error, Error::Corruption { .. }), "{error}");
                assert_eq!(consumer.position(&tp).unwrap(), 2);
            }
        }
    }
    log.close().unwrap();
}

/// Appends 200 one-record batches: enough after a batch to be damaged that the open, which
/// checks only the batches after the segment's last index entry, does not read it.
fn add_fillers(partition: &tarnlog::Partition) {
    for i in 0..200 {
        partition
            .append_values([format!("filler-{i}").as_bytes()])
            .unwrap();
    }
}

/// In the first segment of the partition directory `dir`, whose first batch holds
/// `val-0`..`val-4`, makes the third record's value length one longer (5, zig-zag 10,
/// becomes 6, zig-zag 12) and recomputes the batch CRC: the framing breaks, the CRC holds.
fn break_third_record(dir: &std::path::Path) {
    let segment = dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(5).position(|w| w == b"val-2").unwrap();
    assert_eq!(bytes[at - 1], 10);
    bytes[at - 1] = 12;
    let batch_len = 12 + u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let crc = compute_crc(&bytes[..batch_len]);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&segment, &bytes).unwrap();
}

/// Writes `count` records `{prefix}-{i}` to `partition` as one batch.
fn one_batch(partition: &tarnlog::Partition, prefix: &str, count: usize) {
    let mut builder = BatchBuilder::new();
    for i in 0..count {
        builder.push(T0, None, Some(format!("{prefix}-{i}").as_bytes()), &[]);
    }
    partition.append(builder.finish().unwrap()).unwrap();
}

/// Records of several partitions and topics in one poll, the second partition's batch
/// breaking off at its third record (CRC-valid): the first poll returns the first
/// partition's records and the two before the break, each under its own topic and
/// partition; the next poll raises the kept error, and so does every poll until the
/// damaged partition is paused, when the other topic's records come (`LogAppendTime`). A
/// seek into the middle of a batch returns its records from there.
#[test]
fn records_of_several_partitions_keep_their_own_batch_and_a_deferred_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let t = log
            .create_topic("t", TopicConfig::default().partitions(2))
            .unwrap();
        log.create_topic(
            "u",
            TopicConfig::default().timestamp_type(TimestampType::LogAppendTime),
        )
        .unwrap();
        one_batch(&t.partition(0).unwrap(), "a", 7);
        one_batch(&t.partition(1).unwrap(), "val", 5);
        one_batch(&log.topic("u").unwrap().partition(0).unwrap(), "u", 2);
        add_fillers(&t.partition(1).unwrap());
        log.close().unwrap();
    }
    break_third_record(&dir.path().join("t-1"));

    let log = Log::open(dir.path()).unwrap();
    let earliest = || ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    let tp = |topic: &str, p| TopicPartition::new(topic, p);
    let mut consumer = log.consumer(earliest()).unwrap();
    consumer
        .assign([tp("t", 0), tp("t", 1), tp("u", 0)])
        .unwrap();
    let described = |records: &ConsumerRecords| -> Vec<(String, u32, u64, TimestampType, String)> {
        records
            .views()
            .map(|r| {
                let value = String::from_utf8(r.value().unwrap().to_vec()).unwrap();
                (
                    r.topic().to_owned(),
                    r.partition(),
                    r.offset(),
                    r.timestamp_type(),
                    value,
                )
            })
            .collect()
    };
    let create = TimestampType::CreateTime;
    let first = consumer.poll(Duration::from_millis(100)).unwrap();
    let mut expected: Vec<_> = (0..7)
        .map(|i| ("t".to_owned(), 0, i, create, format!("a-{i}")))
        .collect();
    expected.push(("t".to_owned(), 1, 0, create, "val-0".to_owned()));
    expected.push(("t".to_owned(), 1, 1, create, "val-1".to_owned()));
    assert_eq!(described(&first), expected);
    assert_eq!(first.partitions(), [tp("t", 0), tp("t", 1)]);
    assert_eq!(read_every_way(&first).len(), 9);
    let error = consumer.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
    assert_eq!(consumer.position(&tp("t", 1)).unwrap(), 2);
    // As in Kafka, the damaged partition stays in the way until it is sought past or
    // paused.
    let error = consumer.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
    consumer.pause(&[tp("t", 1)]).unwrap();
    let third = consumer.poll(Duration::from_millis(100)).unwrap();
    let got = described(&third);
    assert_eq!(got.len(), 2, "{got:?}");
    for (i, (topic, partition, offset, timestamp_type, value)) in got.into_iter().enumerate() {
        assert_eq!((topic.as_str(), partition, offset), ("u", 0, i as u64));
        assert_eq!(timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(value, format!("u-{i}"));
    }
    consumer.resume(&[tp("t", 1)]).unwrap();
    let error = consumer.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");

    let mut middle = log.consumer(earliest()).unwrap();
    middle.assign([tp("t", 0)]).unwrap();
    middle.seek(&tp("t", 0), 3).unwrap();
    let records = middle.poll(Duration::from_millis(100)).unwrap();
    let offsets: Vec<u64> = records.views().map(|r| r.offset()).collect();
    assert_eq!(offsets, [3, 4, 5, 6]);
    assert_eq!(read_every_way(&records).len(), 4);
    drop((consumer, middle));
    log.close().unwrap();
}
