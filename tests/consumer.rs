//! The consumer: assign, poll (limits, fairness, wake-up, high watermark), seek and the
//! offset queries, `auto_offset_reset`, pause, and committed offsets in
//! `__consumer_offsets` (sync, async, auto-commit, restart, crash ordering, bad input).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
use tarnlog::{
    AutoOffsetReset, CONSUMER_OFFSETS, Consumer, ConsumerConfig, ConsumerRecord, Error, Log,
    ManualClock, OffsetAndMetadata, ProducerConfig, ProducerRecord, TopicConfig, TopicPartition,
    partition_for_group, partition_for_key,
};

const T0: i64 = 1_700_000_000_000;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// A log in `root` on a manual clock, with a small offsets topic (fast to create).
fn open(root: &Path) -> (Log, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::builder()
        .dir(root)
        .clock(clock.clone())
        .offsets_topic_partitions(3)
        .open()
        .unwrap();
    (log, clock)
}

/// Appends `values` to partition `p` of `topic`, one record per batch, timestamps T0 + i.
fn fill(log: &Log, topic: &str, p: u32, values: &[&str]) {
    let partition = log.topic(topic).unwrap().partition(p).unwrap();
    for value in values {
        partition.append_values([value.as_bytes()]).unwrap();
    }
}

fn earliest(group: Option<&str>) -> ConsumerConfig {
    let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    match group {
        Some(group) => config.group_id(group),
        None => config,
    }
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.as_deref().unwrap().to_vec()).unwrap())
        .collect()
}

fn poll(consumer: &mut Consumer) -> Vec<ConsumerRecord> {
    consumer
        .poll(Duration::from_millis(100))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn consumer_is_send() {
    fn send<T: Send>() {}
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send::<Consumer>();
    send_sync_clone::<tarnlog::ConsumerWakeup>();
}

/// Kafka's `wakeup()`: a `poll` waiting for records returns at once with `Wakeup` when
/// another thread wakes the consumer, once: the next `poll` reads as before. A wake-up
/// while no `poll` runs fails the next one, at its start; records there come with the one
/// after. Other consumers of the log are not woken.
#[test]
fn wakeup_interrupts_a_waiting_poll_once() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let wakeup = consumer.wakeup_handle();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        wakeup.wakeup();
    });
    let started = Instant::now();
    let polled = consumer.poll(Duration::from_secs(60));
    assert!(matches!(polled, Err(Error::Wakeup)), "{polled:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    waker.join().unwrap();
    // Once: the next poll waits and reads as before.
    assert!(poll(&mut consumer).is_empty());
    fill(&log, "t", 0, &["a"]);
    assert_eq!(values(&poll(&mut consumer)), ["a"]);
    // Woken while not polling: the next poll fails, records there or not.
    fill(&log, "t", 0, &["b"]);
    consumer.wakeup_handle().wakeup();
    let polled = consumer.poll(Duration::from_secs(60));
    assert!(matches!(polled, Err(Error::Wakeup)), "{polled:?}");
    assert_eq!(values(&poll(&mut consumer)), ["b"]);
    // Another consumer of the log, waiting, is not woken.
    log.create_topic("quiet", TopicConfig::default()).unwrap();
    let mut other = log.consumer(earliest(None)).unwrap();
    other.assign([tp("quiet", 0)]).unwrap();
    let waiting =
        std::thread::spawn(move || other.poll(Duration::from_millis(300)).map(|r| r.count()));
    std::thread::sleep(Duration::from_millis(50));
    consumer.wakeup_handle().wakeup();
    assert_eq!(waiting.join().unwrap().unwrap(), 0);
    assert!(matches!(consumer.poll(Duration::ZERO), Err(Error::Wakeup)));
    // An iterator ends at a wake-up, once it has handed out what it holds.
    let wakeup = consumer.wakeup_handle();
    fill(&log, "t", 0, &["c"]);
    let mut taken = Vec::new();
    for record in consumer.iter() {
        taken.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
        wakeup.wakeup();
    }
    assert_eq!(taken, ["c"]);
}

/// As Kafka's, a pending wake-up is taken by the next call that can throw
/// `WakeupException`, not only by `poll`: a commit fails with nothing committed, an
/// offset query with nothing returned, each once. `commit_async`, `seek` and `close` do not
/// take it.
#[test]
fn a_pending_wakeup_fails_the_next_commit_or_offset_query_once() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    let t0 = tp("t", 0);
    let mut consumer = log.consumer(earliest(Some("g"))).unwrap();
    consumer.assign([t0.clone()]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a", "b"]);
    let wakeup = consumer.wakeup_handle();
    let woken = |result: Result<(), Error>| matches!(result, Err(Error::Wakeup));
    wakeup.wakeup();
    assert!(woken(consumer.commit_sync()));
    assert_eq!(log.committed_offset("g", &t0).unwrap(), None, "committed");
    wakeup.wakeup();
    let offsets = [(t0.clone(), OffsetAndMetadata::new(1))];
    assert!(woken(consumer.commit_sync_offsets(offsets.clone())));
    assert_eq!(log.committed_offset("g", &t0).unwrap(), None, "committed");
    wakeup.wakeup();
    assert!(woken(consumer.committed(&t0).map(drop)));
    wakeup.wakeup();
    assert!(woken(
        consumer
            .committed_offsets(std::slice::from_ref(&t0))
            .map(drop)
    ));
    wakeup.wakeup();
    assert!(woken(consumer.position(&t0).map(drop)));
    wakeup.wakeup();
    // A query refused for its argument (as Kafka's `IllegalArgumentException`, thrown
    // first) leaves the wake-up for the next.
    assert!(matches!(
        consumer.offsets_for_times(&[(t0.clone(), -1)]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(woken(
        consumer.offsets_for_times(&[(t0.clone(), T0)]).map(drop)
    ));
    wakeup.wakeup();
    assert!(woken(
        consumer
            .beginning_offsets(std::slice::from_ref(&t0))
            .map(drop)
    ));
    wakeup.wakeup();
    assert!(woken(
        consumer.end_offsets(std::slice::from_ref(&t0)).map(drop)
    ));
    wakeup.wakeup();
    assert!(woken(consumer.partitions_for("t").map(drop)));
    wakeup.wakeup();
    assert!(woken(consumer.list_topics().map(drop)));
    // Once each: the calls then work, and the position never moved.
    assert_eq!(consumer.position(&t0).unwrap(), 2);
    consumer.commit_sync().unwrap();
    assert_eq!(consumer.committed(&t0).unwrap().unwrap().offset, 2);
    // `commit_async` and `seek` leave it pending for the next such call.
    wakeup.wakeup();
    consumer.commit_async(|result| result.unwrap()).unwrap();
    consumer.seek(&t0, 1).unwrap();
    assert!(woken(consumer.poll(Duration::ZERO).map(drop)));
    assert_eq!(values(&poll(&mut consumer)), ["b"]);
    // `close` commits (auto-commit) despite one pending.
    consumer.seek(&t0, 1).unwrap();
    wakeup.wakeup();
    consumer.close().unwrap();
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 1);
}

/// Kafka's `currentLag`, `partitionsFor`, `listTopics` and `commitAsync(offsets, callback)`.
#[test]
fn lag_metadata_and_async_commits_of_given_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    fill(&log, "t", 0, &["a", "b", "c"]);
    let (t0, t1) = (tp("t", 0), tp("t", 1));
    let mut consumer = log.consumer(earliest(Some("g"))).unwrap();
    consumer.assign([t0.clone(), t1.clone()]).unwrap();
    assert_eq!(consumer.current_lag(&t0).unwrap(), None, "no position yet");
    assert_eq!(values(&poll(&mut consumer)), ["a", "b", "c"]);
    assert_eq!(consumer.current_lag(&t0).unwrap(), Some(0));
    assert_eq!(consumer.current_lag(&t1).unwrap(), Some(0));
    fill(&log, "t", 0, &["d", "e"]);
    assert_eq!(consumer.current_lag(&t0).unwrap(), Some(2));
    consumer.seek(&t0, 1).unwrap();
    assert_eq!(consumer.current_lag(&t0).unwrap(), Some(4));
    consumer.seek_to_end(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(consumer.current_lag(&t0).unwrap(), None);
    assert!(matches!(
        consumer.current_lag(&tp("t", 5)),
        Err(Error::NotAssigned { .. })
    ));

    let partitions = consumer.partitions_for("t").unwrap();
    let numbers: Vec<u32> = partitions.iter().map(|p| p.partition).collect();
    assert_eq!(numbers, [0, 1]);
    assert_eq!(partitions[0].high_watermark, 5);
    assert!(consumer.partitions_for("nope").unwrap().is_empty());
    log.create_topic("u", None).unwrap();
    let topics = consumer.list_topics().unwrap();
    let mut names: Vec<&String> = topics.keys().collect();
    names.sort();
    assert_eq!(names, ["t", "u"], "internal topics are not listed");
    assert_eq!(topics["t"].len(), 2);

    // Given offsets, committed at the next poll, the callback told.
    let (told, answers) = std::sync::mpsc::channel();
    let offsets = [(t0.clone(), OffsetAndMetadata::new(2))];
    consumer
        .commit_async_offsets(offsets, move |result| told.send(result).unwrap())
        .unwrap();
    assert_eq!(log.committed_offset("g", &t0).unwrap(), None);
    poll(&mut consumer);
    answers.try_recv().unwrap().unwrap();
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 2);
    // Kafka's `committed(Set)`: every partition asked for, `None` without a commit.
    let committed = consumer
        .committed_offsets(&[t0.clone(), t1.clone()])
        .unwrap();
    assert_eq!(committed.len(), 2);
    assert_eq!(committed[&t0].as_ref().unwrap().offset, 2);
    assert_eq!(committed[&t1], None);
    // A partition the log lacks is refused at the call, with nothing queued.
    let refused = consumer
        .commit_async_offsets([(tp("nope", 0), OffsetAndMetadata::new(1))], |_| {
            panic!("a refused commit's callback ran")
        });
    assert!(
        matches!(refused, Err(Error::UnknownTopic { .. })),
        "{refused:?}"
    );
    let mut lone = log.consumer(earliest(None)).unwrap();
    assert!(matches!(
        lone.commit_async_offsets([(t0.clone(), OffsetAndMetadata::new(1))], |_| {}),
        Err(Error::InvalidConfig {
            field: "group_id",
            ..
        })
    ));
    consumer.close().unwrap();
}

/// Kafka's `seek(tp, OffsetAndMetadata)`: a position with a leader epoch is checked
/// against the partition's history at the next poll (KIP-320), where a plain seek is not.
#[test]
fn a_seek_with_an_epoch_is_checked_against_a_truncation() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let mut saved = OffsetAndMetadata::new(4);
    saved.leader_epoch = Some(log.describe_topic("t").unwrap().partitions[0].leader_epoch);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.truncate_to(2).unwrap();
    fill(&log, "t", 0, &["x", "y", "z"]);
    let t0 = tp("t", 0);
    let mut checked = log.consumer(earliest(None)).unwrap();
    checked.assign([t0.clone()]).unwrap();
    checked.seek_with_metadata(&t0, &saved).unwrap();
    assert_eq!(values(&poll(&mut checked)), ["x", "y", "z"]);
    // A plain seek to the same offset trusts it.
    let mut plain = log.consumer(earliest(None)).unwrap();
    plain.assign([t0.clone()]).unwrap();
    plain.seek(&t0, 4).unwrap();
    assert_eq!(values(&poll(&mut plain)), ["z"]);
    // Checked even by a consumer that checked its position under this epoch already.
    plain.seek_with_metadata(&t0, &saved).unwrap();
    assert_eq!(values(&poll(&mut plain)), ["x", "y", "z"]);
    // Without a reset policy the truncation is reported.
    let strict = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None);
    let mut strict = log.consumer(strict).unwrap();
    strict.assign([t0.clone()]).unwrap();
    strict.seek_with_metadata(&t0, &saved).unwrap();
    let error = strict.poll(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(error, Error::LogTruncation { .. }), "{error:?}");
    // Without an epoch it is a plain seek.
    checked
        .seek_with_metadata(&t0, &OffsetAndMetadata::new(4))
        .unwrap();
    assert_eq!(values(&poll(&mut checked)), ["z"]);
}

/// Kafka's `ConsumerRecord.leaderEpoch`: each record carries the leader epoch of its batch
/// (owned and borrowed alike), which a commit of the next offset can carry (KIP-320).
#[test]
fn records_carry_their_leader_epoch() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    let first = log.describe_topic("t").unwrap().partitions[0].leader_epoch;
    // A truncation starts a new epoch.
    log.topic("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .truncate_to(1)
        .unwrap();
    fill(&log, "t", 0, &["c"]);
    let second = log.describe_topic("t").unwrap().partitions[0].leader_epoch;
    assert!(second > first);
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let records = consumer.poll(Duration::from_millis(100)).unwrap();
    let epochs: Vec<Option<i32>> = records.views().map(|r| r.leader_epoch()).collect();
    assert_eq!(epochs, [Some(first), Some(second)]);
    let owned: Vec<Option<i32>> = records.into_iter().map(|r| r.leader_epoch).collect();
    assert_eq!(owned, epochs);
}

/// A `poll` waiting for its group's rebalance to complete (another member has not rejoined)
/// is woken too, as Kafka's `wakeup` interrupts a join.
#[test]
fn wakeup_interrupts_a_poll_waiting_for_a_rebalance() {
    let root = tempfile::tempdir().unwrap();
    let (log, clock) = open(root.path());
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    let mut first = log.consumer(earliest(Some("g"))).unwrap();
    first.subscribe(["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "the first member never joined");
        // Past the group's initial rebalance delay.
        clock.advance(4_000);
        assert!(poll(&mut first).is_empty());
    }
    // The second member's join waits for the first to rejoin, which it does not.
    let mut second = log.consumer(earliest(Some("g"))).unwrap();
    second.subscribe(["t"]).unwrap();
    let wakeup = second.wakeup_handle();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let polled = second.poll(Duration::from_secs(60)).map(|r| r.count());
        (polled, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    wakeup.wakeup();
    let (polled, waited) = waiting.join().unwrap();
    assert!(matches!(polled, Err(Error::Wakeup)), "{polled:?}");
    assert!(waited < Duration::from_secs(30), "{waited:?}");
}

#[test]
fn produced_records_come_back_in_order_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("orders", TopicConfig::default().partitions(3))
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    for i in 0..90 {
        let user = format!("user-{}", i % 9);
        let record = ProducerRecord::new("orders")
            .key(user)
            .value(format!("{i}"))
            .header("h", "x")
            .timestamp(T0 + i);
        drop(producer.send(record).unwrap());
    }
    producer.flush().unwrap();
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign((0..3).map(|p| tp("orders", p))).unwrap();
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut total = 0;
    while total < 90 {
        for record in consumer.poll(Duration::from_secs(5)).unwrap() {
            let key = String::from_utf8(record.key.as_deref().unwrap().to_vec()).unwrap();
            assert_eq!(record.partition, partition_for_key(key.as_bytes(), 3));
            assert_eq!(record.headers[0].key, "h");
            let n: i64 = std::str::from_utf8(record.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(record.timestamp, T0 + n);
            seen.entry(key).or_default().push(n);
            total += 1;
        }
    }
    for (key, ns) in seen {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
        assert_eq!(ns.len(), 10);
    }
}

/// Kafka's `check.crcs`: a value damaged on disk (framing intact) makes `poll` fail with
/// the batch's CRC by default, after returning the records before it, and every later
/// `poll` fails the same way; with the check off it is returned as it reads.
#[test]
fn check_crcs_off_returns_a_damaged_batch_as_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    // Enough after the damaged batch that the open, which checks only the batches after
    // the segment's last index entry, does not read it.
    let filler: Vec<String> = (0..200).map(|i| format!("filler-{i}")).collect();
    let mut all: Vec<&str> = vec!["first", "HELLO-WORLD"];
    all.extend(filler.iter().map(String::as_str));
    fill(&log, "t", 0, &all);
    log.close().unwrap();
    let segment = dir.path().join("t-0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(11).position(|w| w == b"HELLO-WORLD").unwrap();
    bytes[at] = b'J';
    std::fs::write(&segment, &bytes).unwrap();

    let (log, _clock) = open(dir.path());
    let mut checked = log.consumer(earliest(None)).unwrap();
    checked.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut checked)), ["first"]);
    for _ in 0..2 {
        let error = checked.poll(Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(
                &error,
                Error::Corruption {
                    what: "batch CRC",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(checked.position(&tp("t", 0)).unwrap(), 1);
    }
    let mut trusting = log.consumer(earliest(None).check_crcs(false)).unwrap();
    trusting.assign([tp("t", 0)]).unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        if seen.len() >= all.len() {
            break;
        }
        seen.extend(values(&poll(&mut trusting)));
    }
    all[1] = "JELLO-WORLD";
    assert_eq!(seen, all);
    drop((checked, trusting));
    log.close().unwrap();
}

/// Kafka's `FetcherTest.testFetchMaxPollRecords`: `max.poll.records` splits the records
/// over polls, in order, the position following what was returned.
#[test]
fn max_poll_records_splits_records_across_polls() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition
        .append_values(["0", "1", "2", "3", "4", "5"])
        .unwrap();
    let mut consumer = log.consumer(earliest(None).max_poll_records(2)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    consumer.seek(&tp("t", 0), 1).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["1", "2"]);
    assert_eq!(consumer.position(&tp("t", 0)).unwrap(), 3);
    assert_eq!(values(&poll(&mut consumer)), ["3", "4"]);
    assert_eq!(values(&poll(&mut consumer)), ["5"]);
    assert_eq!(consumer.position(&tp("t", 0)).unwrap(), 6);
    assert!(poll(&mut consumer).is_empty());
}

/// A poll that fills `max_poll_records` on the last record of a batch leaves nothing behind
/// that would keep the next poll from reading the log: records appended meanwhile come
/// back at once, not after the poll's timeout (or another append).
#[test]
fn a_poll_filled_on_a_batchs_last_record_does_not_hide_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values(["0", "1"]).unwrap();
    let mut consumer = log.consumer(earliest(None).max_poll_records(2)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["0", "1"]);
    partition.append_values(["2"]).unwrap();
    let started = Instant::now();
    let records: Vec<ConsumerRecord> = consumer
        .poll(Duration::from_secs(30))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(values(&records), ["2"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the poll waited {:?} with a record there",
        started.elapsed()
    );
}

#[test]
fn polls_take_turns_over_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", TopicConfig::default().partitions(3))
        .unwrap();
    for p in 0..3 {
        let batch: Vec<String> = (0..50).map(|i| format!("{p}-{i}")).collect();
        log.topic("t")
            .unwrap()
            .partition(p)
            .unwrap()
            .append_values(&batch)
            .unwrap();
    }
    let mut consumer = log.consumer(earliest(None).max_poll_records(20)).unwrap();
    consumer.assign((0..3).map(|p| tp("t", p))).unwrap();
    let firsts: Vec<u32> = (0..6).map(|_| poll(&mut consumer)[0].partition).collect();
    assert_eq!(
        firsts,
        [0, 1, 2, 0, 1, 2],
        "each poll starts after the last served"
    );
    // A fetch_max_bytes smaller than a batch still returns that batch (progress).
    let mut small = log.consumer(earliest(None).fetch_max_bytes(1)).unwrap();
    small.assign([tp("t", 0)]).unwrap();
    assert_eq!(poll(&mut small).len(), 50);
}

#[test]
fn a_waiting_poll_wakes_on_append_and_a_quiet_one_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let start = Instant::now();
    assert!(consumer.poll(Duration::from_millis(50)).unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(50));
    let producer_log = log.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let producer = producer_log.producer(ProducerConfig::default()).unwrap();
        producer
            .send(ProducerRecord::new("t").value("wake"))
            .unwrap()
            .wait()
            .unwrap();
    });
    let start = Instant::now();
    let records = consumer.poll(Duration::from_secs(30)).unwrap();
    assert_eq!(values(&records.into_iter().collect::<Vec<_>>()), ["wake"]);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "poll slept through the append"
    );
    writer.join().unwrap();
}

#[test]
fn seek_positions_and_offset_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    for i in 0..5 {
        clock.set(T0 + 10 * i);
        partition.append_values([format!("{i}")]).unwrap();
    }
    let t0 = tp("t", 0);
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([t0.clone()]).unwrap();
    assert_eq!(consumer.position(&t0).unwrap(), 0);
    consumer.seek(&t0, 3).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["3", "4"]);
    consumer.seek_to_beginning(&[]).unwrap();
    assert_eq!(consumer.position(&t0).unwrap(), 0);
    consumer.seek_to_end(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(consumer.position(&t0).unwrap(), 5);
    assert!(poll(&mut consumer).is_empty());
    let times = consumer
        .offsets_for_times(&[(t0.clone(), T0 + 15), (t0.clone(), T0 + 20)])
        .unwrap();
    // One answer per partition: the later query wins in the map.
    assert_eq!(times[&t0].unwrap().offset, 2);
    let times = consumer
        .offsets_for_times(&[(t0.clone(), T0 + 15)])
        .unwrap();
    assert_eq!(times[&t0].unwrap().offset, 2);
    assert_eq!(times[&t0].unwrap().timestamp, T0 + 20);
    let none = consumer
        .offsets_for_times(&[(t0.clone(), T0 + 1_000)])
        .unwrap();
    assert_eq!(none[&t0], None);
    // Kafka's consumer refuses a negative target time (`IllegalArgumentException`); -1..-3
    // are not the `ListOffsets` markers here.
    for negative in [-1, -2, -3] {
        let refused = consumer.offsets_for_times(&[(t0.clone(), T0), (t0.clone(), negative)]);
        assert!(
            matches!(&refused, Err(Error::InvalidArgument { reason }) if reason.contains("negative")),
            "{refused:?}"
        );
    }
    assert_eq!(
        consumer
            .beginning_offsets(std::slice::from_ref(&t0))
            .unwrap()[&t0],
        0
    );
    assert_eq!(
        consumer.end_offsets(std::slice::from_ref(&t0)).unwrap()[&t0],
        5
    );
    // Calls on partitions that are not assigned are refused.
    let other = tp("t", 1);
    assert!(matches!(
        consumer.seek(&other, 0),
        Err(Error::NotAssigned { partition: 1, .. })
    ));
    assert!(matches!(
        consumer.pause(std::slice::from_ref(&other)),
        Err(Error::NotAssigned { .. })
    ));
    let unknown = consumer.end_offsets(&[tp("nope", 0)]).unwrap_err();
    assert!(matches!(unknown, Error::UnknownTopic { .. }), "{unknown:?}");
}

#[test]
fn auto_offset_reset_earliest_latest_and_none() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    let t0 = tp("t", 0);
    let mut latest = log.consumer(ConsumerConfig::default()).unwrap();
    latest.assign([t0.clone()]).unwrap();
    assert_eq!(latest.position(&t0).unwrap(), 2, "latest is the default");
    fill(&log, "t", 0, &["c"]);
    assert_eq!(values(&poll(&mut latest)), ["c"]);
    let mut none = log
        .consumer(ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None))
        .unwrap();
    none.assign([t0.clone()]).unwrap();
    let error = none.poll(Duration::ZERO).unwrap_err();
    assert!(
        matches!(error, Error::NoOffsetForPartition { partition: 0, .. }),
        "{error:?}"
    );
    // Out of range under `None`: the typed error with the valid range.
    none.seek(&t0, 10).unwrap();
    match none.poll(Duration::ZERO) {
        Err(Error::OffsetOutOfRange {
            requested: 10,
            earliest: 0,
            latest: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    // Out of range with a reset policy: the position moves and polling goes on.
    let mut reset = log.consumer(earliest(None)).unwrap();
    reset.assign([t0.clone()]).unwrap();
    reset.seek(&t0, 99).unwrap();
    // The same poll resets and returns what is at the new position.
    let records: Vec<_> = reset.poll(Duration::ZERO).unwrap().into_iter().collect();
    assert_eq!(values(&records), ["a", "b", "c"]);
    assert_eq!(reset.position(&t0).unwrap(), 3);
    // No assignment: Kafka's IllegalStateException, typed.
    let mut idle = log.consumer(ConsumerConfig::default()).unwrap();
    assert!(matches!(
        idle.poll(Duration::ZERO),
        Err(Error::NoAssignment)
    ));
}

#[test]
fn paused_partitions_are_skipped_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    fill(&log, "t", 0, &["p0"]);
    fill(&log, "t", 1, &["p1"]);
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0), tp("t", 1)]).unwrap();
    consumer.pause(&[tp("t", 0)]).unwrap();
    assert_eq!(consumer.paused(), [tp("t", 0)]);
    assert_eq!(values(&poll(&mut consumer)), ["p1"]);
    assert!(poll(&mut consumer).is_empty());
    consumer.resume(&[tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["p0"]);
}

#[test]
fn the_blocking_iterator_yields_records_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["1", "2", "3"]);
    let mut consumer = log.consumer(earliest(None).max_poll_records(2)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let got: Vec<u64> = consumer.iter().take(3).map(|r| r.unwrap().offset).collect();
    assert_eq!(got, [0, 1, 2]);
}

/// Kafka's KIP-74: only the first partition of a fetch that reads anything returns a first
/// batch over `max_partition_fetch_bytes` whole; a later partition whose first batch is
/// over it returns nothing in that fetch and goes first in the next (never starved by a
/// busy partition before it).
#[test]
fn only_a_fetchs_first_partition_returns_a_batch_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    let big = vec![7u8; 1500];
    for p in 0..2 {
        let partition = log.topic("t").unwrap().partition(p).unwrap();
        partition.append_values([&big[..], &big[..]]).unwrap();
    }
    let mut consumer = log
        .consumer(earliest(None).max_partition_fetch_bytes(1024))
        .unwrap();
    consumer.assign([tp("t", 0), tp("t", 1)]).unwrap();
    let partitions =
        |records: &[ConsumerRecord]| -> Vec<u32> { records.iter().map(|r| r.partition).collect() };
    let first = poll(&mut consumer);
    let second = poll(&mut consumer);
    assert_eq!(
        (partitions(&first), partitions(&second)),
        (vec![0, 0], vec![1, 1]),
        "one oversized batch a fetch"
    );
    // Partitions with small records around one whose batch is over the limit: the big
    // batch leads the next fetch, however many small records the others still have.
    log.create_topic("u", TopicConfig::default().partitions(3))
        .unwrap();
    for p in [0, 2] {
        let partition = log.topic("u").unwrap().partition(p).unwrap();
        for _ in 0..200 {
            partition.append_values([&b"small"[..]]).unwrap();
        }
    }
    let partition = log.topic("u").unwrap().partition(1).unwrap();
    partition.append_values([&big[..], &big[..]]).unwrap();
    consumer
        .assign([tp("u", 0), tp("u", 1), tp("u", 2)])
        .unwrap();
    let third = poll(&mut consumer);
    assert_eq!(
        partitions(&third).into_iter().collect::<BTreeSet<_>>(),
        [0, 2].into(),
        "the big batch waits"
    );
    let fourth = poll(&mut consumer);
    assert_eq!(partitions(&fourth)[..2], [1, 1], "and leads the next fetch");
}

/// `fetch_min_bytes` counts a partition's readable bytes up to `max_partition_fetch_bytes`,
/// as Kafka's `DelayedFetch` does, an oversized first batch too: it alone does not end the
/// wait.
#[test]
fn an_oversized_batch_counts_up_to_the_partition_limit_for_fetch_min_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values([vec![7u8; 2500]]).unwrap();
    let mut consumer = log
        .consumer(
            earliest(None)
                .max_partition_fetch_bytes(1000)
                .fetch_min_bytes(2000)
                .fetch_max_wait_ms(300),
        )
        .unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let start = Instant::now();
    assert_eq!(consumer.poll(Duration::from_secs(60)).unwrap().count(), 1);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "returned after {:?}",
        start.elapsed()
    );
}

/// An error ends the blocking iterator once handed out (a loop going on past it would
/// spin: nothing can change while the iterator holds the consumer); a new iterator goes on
/// once the application dealt with it.
#[test]
fn an_error_ends_the_blocking_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["1", "2"]);
    let mut consumer = log
        .consumer(ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None))
        .unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let mut iter = consumer.iter();
    let first = iter.next();
    assert!(
        matches!(first, Some(Err(Error::NoOffsetForPartition { .. }))),
        "{first:?}"
    );
    assert!(iter.next().is_none());
    drop(iter);
    consumer.seek_to_beginning(&[]).unwrap();
    let got: Vec<u64> = consumer.iter().take(2).map(|r| r.unwrap().offset).collect();
    assert_eq!(got, [0, 1]);
}

const VALUE: [u8; 200] = [7; 200];

/// A log in `root` with topic `t` holding one record of `value` in partition 0.
fn one_record_of(value: &[u8], root: &Path) -> (Log, tarnlog::Partition) {
    let (log, _clock) = open(root);
    log.create_topic("t", None).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.append_values([value]).unwrap();
    (log, partition)
}

/// Kafka's `fetch.min.bytes` / `fetch.max.wait.ms`: a `poll` that finds fewer bytes than
/// the minimum waits for more, and returns them at once when they come; what is there is
/// returned once the maximum wait has passed. That wait runs across polls, as Kafka's
/// fetch in flight does: polls shorter than it return nothing until it has passed.
#[test]
fn fetch_min_bytes_holds_polls_until_enough_bytes_or_fetch_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (log, partition) = one_record_of(&VALUE, dir.path());
    let value = VALUE;
    let batch_bytes = partition.read(0, usize::MAX).unwrap().bytes().len();
    // Enough bytes: five batches. No wait runs out during the test.
    let config = earliest(None)
        .fetch_min_bytes(5 * batch_bytes)
        .fetch_max_wait_ms(600_000);
    let mut consumer = log.consumer(config).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert!(consumer.poll(Duration::from_millis(50)).unwrap().is_empty());
    for _ in 0..3 {
        partition.append_values([&value[..]]).unwrap();
    }
    assert!(
        consumer.poll(Duration::from_millis(50)).unwrap().is_empty(),
        "four batches are too few"
    );
    // The fifth comes while a poll waits: it returns the five at once.
    let appender = {
        let partition = partition.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            partition.append_values([&value[..]]).unwrap();
        })
    };
    let start = Instant::now();
    let records = consumer.poll(Duration::from_secs(60)).unwrap();
    assert_eq!(records.count(), 5);
    assert!(start.elapsed() < Duration::from_secs(30));
    appender.join().unwrap();
    // The minimum counts whole batches from the position, per partition within
    // `max_partition_fetch_bytes`: with room for one batch a partition never has five.
    let mut capped = log
        .consumer(
            earliest(None)
                .fetch_min_bytes(5 * batch_bytes)
                .fetch_max_wait_ms(600_000)
                .max_partition_fetch_bytes(batch_bytes),
        )
        .unwrap();
    capped.assign([tp("t", 0)]).unwrap();
    assert!(capped.poll(Duration::from_millis(50)).unwrap().is_empty());
    // Records left over from a read (past `max_poll_records`) are returned at once, as
    // Kafka returns a fetch it holds already.
    let mut small = log
        .consumer(
            earliest(None)
                .max_poll_records(1)
                .fetch_min_bytes(1 << 20)
                .fetch_max_wait_ms(300),
        )
        .unwrap();
    small.assign([tp("t", 0)]).unwrap();
    partition.append_values([&value[..], &value[..]]).unwrap();
    small.seek(&tp("t", 0), 5).unwrap();
    let start = Instant::now();
    assert_eq!(small.poll(Duration::from_secs(60)).unwrap().count(), 1);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(small.poll(Duration::from_millis(20)).unwrap().count(), 1);
    // A batch a poll finished on its last record holds nothing left to return: the next
    // poll waits for the minimum (up to the wait, counted from the last return) as after
    // any other.
    let returned = Instant::now();
    partition.append_values([&value[..]]).unwrap();
    assert_eq!(small.poll(Duration::from_secs(60)).unwrap().count(), 1);
    assert!(
        returned.elapsed() >= Duration::from_millis(250),
        "returned after {:?}",
        returned.elapsed()
    );
}

/// `fetch.max.wait.ms` runs across polls, as Kafka's fetch in flight does: polls shorter
/// than it return nothing until it has passed since the first, then what there is; a wait
/// that passes with nothing readable starts the next (Kafka's next fetch).
#[test]
fn fetch_max_wait_runs_across_polls() {
    let dir = tempfile::tempdir().unwrap();
    let (log, partition) = one_record_of(&VALUE, dir.path());
    let value = VALUE;
    // Too few bytes for ever: the polls return the record once two seconds have passed
    // since the first of them, however short each one is.
    let mut waiting = log
        .consumer(
            earliest(None)
                .fetch_min_bytes(1 << 20)
                .fetch_max_wait_ms(2_000),
        )
        .unwrap();
    waiting.assign([tp("t", 0)]).unwrap();
    let start = Instant::now();
    let mut polls = 0;
    let returned = loop {
        polls += 1;
        let records = waiting.poll(Duration::from_millis(20)).unwrap();
        if !records.is_empty() {
            break records.count();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the wait restarted with every poll"
        );
    };
    assert_eq!(returned, 1);
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(polls > 2, "each poll waited the whole wait: {polls}");
    // The next wait started as the records were returned (Kafka's consumer sends its next
    // fetch before it returns them): a record appended a second later is returned two
    // seconds after that return, within a poll of 1.8 seconds begun a second after it.
    std::thread::sleep(Duration::from_secs(1));
    partition.append_values([&value[..]]).unwrap();
    assert_eq!(
        waiting.poll(Duration::from_millis(1_800)).unwrap().count(),
        1,
        "the wait started at the poll, not at the return before it"
    );
    // With the wait passed and nothing readable, the next wait starts: a record appended
    // later waits for it.
    std::thread::sleep(Duration::from_millis(2_200));
    assert!(waiting.poll(Duration::from_millis(20)).unwrap().is_empty());
    partition.append_values([&value[..]]).unwrap();
    assert!(waiting.poll(Duration::from_millis(20)).unwrap().is_empty());
    let start = Instant::now();
    assert_eq!(waiting.poll(Duration::from_secs(60)).unwrap().count(), 1);
    assert!(start.elapsed() < Duration::from_secs(30));

    // Out of range.
    for config in [
        ConsumerConfig::default().fetch_min_bytes(i32::MAX as usize + 1),
        ConsumerConfig::default().fetch_max_wait_ms(i32::MAX as u64 + 1),
    ] {
        let error = log.consumer(config).unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidConfig {
                    field: "fetch_min_bytes" | "fetch_max_wait_ms",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}

/// Breaking out of the blocking iterator loses nothing: the next `poll` goes on from the
/// record after the last one the loop took, and a commit covers only the records taken.
#[test]
fn leaving_the_blocking_iterator_skips_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let mut consumer = log
        .consumer(earliest(Some("g")).enable_auto_commit(false))
        .unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    for record in consumer.iter() {
        if record.unwrap().offset == 1 {
            break;
        }
    }
    consumer.commit_sync().unwrap();
    assert_eq!(consumer.committed(&tp("t", 0)).unwrap().unwrap().offset, 2);
    assert_eq!(values(&poll(&mut consumer)), ["c", "d"]);
}

#[test]
fn a_group_resumes_after_its_committed_offset_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = tp("t", 0);
    {
        let (log, _clock) = open(dir.path());
        log.create_topic("t", None).unwrap();
        fill(&log, "t", 0, &["a", "b", "c", "d"]);
        let mut consumer = log
            .consumer(
                earliest(Some("g"))
                    .max_poll_records(2)
                    .enable_auto_commit(false),
            )
            .unwrap();
        consumer.assign([t0.clone()]).unwrap();
        assert_eq!(values(&poll(&mut consumer)), ["a", "b"]);
        consumer.commit_sync().unwrap();
        assert_eq!(consumer.committed(&t0).unwrap().unwrap().offset, 2);
        // Read on without committing: a restart replays from the commit.
        assert_eq!(values(&poll(&mut consumer)), ["c", "d"]);
        consumer.close().unwrap();
        log.close().unwrap();
    }
    let (log, _clock) = open(dir.path());
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 2);
    let mut consumer = log.consumer(earliest(Some("g"))).unwrap();
    consumer.assign([t0.clone()]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["c", "d"]);
    // Another group is independent.
    let mut other = log.consumer(earliest(Some("other"))).unwrap();
    other.assign([t0]).unwrap();
    assert_eq!(values(&poll(&mut other)), ["a", "b", "c", "d"]);
}

#[test]
fn commit_async_runs_at_the_next_poll_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let t0 = tp("t", 0);
    let mut consumer = log
        .consumer(
            earliest(Some("g"))
                .max_poll_records(1)
                .enable_auto_commit(false),
        )
        .unwrap();
    consumer.assign([t0.clone()]).unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    assert_eq!(values(&poll(&mut consumer)), ["a"]);
    for _ in 0..2 {
        let outcomes = Arc::clone(&outcomes);
        let position = consumer.position(&t0).unwrap();
        consumer
            .commit_async(move |result| outcomes.lock().unwrap().push((position, result.is_ok())))
            .unwrap();
        // A seek runs no commit; the second commit_async takes the new position.
        consumer.seek(&t0, position + 1).unwrap();
    }
    assert!(
        outcomes.lock().unwrap().is_empty(),
        "async commits wait for poll"
    );
    assert_eq!(consumer.committed(&t0).unwrap(), None);
    assert_eq!(values(&poll(&mut consumer)), ["d"]);
    assert_eq!(*outcomes.lock().unwrap(), [(1, true), (2, true)]);
    assert_eq!(consumer.committed(&t0).unwrap().unwrap().offset, 2);
}

/// Auto-commit commits, from within `poll`, only positions that earlier polls already
/// returned: at-least-once.
#[test]
fn auto_commit_commits_what_poll_already_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let t0 = tp("t", 0);
    let mut consumer = log
        .consumer(
            earliest(Some("g"))
                .max_poll_records(1)
                .auto_commit_interval_ms(1_000),
        )
        .unwrap();
    consumer.assign([t0.clone()]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a"]);
    assert_eq!(values(&poll(&mut consumer)), ["b"]);
    assert_eq!(
        log.committed_offset("g", &t0).unwrap(),
        None,
        "interval not passed"
    );
    clock.advance(1_000);
    // This poll commits offset 2 (a and b were returned) before returning c.
    assert_eq!(values(&poll(&mut consumer)), ["c"]);
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 2);
    assert_eq!(values(&poll(&mut consumer)), ["d"]);
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 2);
    // Closing commits the final position.
    consumer.close().unwrap();
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 4);
    // Without a group there is nothing to commit to.
    let mut lone = log.consumer(earliest(None)).unwrap();
    lone.assign([t0.clone()]).unwrap();
    assert!(matches!(
        lone.commit_sync(),
        Err(Error::InvalidConfig {
            field: "group_id",
            ..
        })
    ));
}

#[test]
fn offsets_live_in_consumer_offsets_with_kafkas_schema_and_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    let commit = OffsetAndMetadata::new(2).with_metadata("m");
    log.commit_offsets("billing", &[(tp("t", 0), commit)])
        .unwrap();
    assert_eq!(log.topics(), ["t"], "internal topics are hidden");
    assert_eq!(log.topics_with_internal(), [CONSUMER_OFFSETS, "t"]);
    let offsets = log.topic(CONSUMER_OFFSETS).unwrap();
    assert_eq!(offsets.partitions(), 3);
    let home = partition_for_group("billing", 3);
    for p in 0..3 {
        let end = offsets.partition(p).unwrap().log_end_offset();
        assert_eq!(end, u64::from(p == home), "partition {p}");
    }
    let record = offsets
        .partition(home)
        .unwrap()
        .read(0, 1 << 20)
        .unwrap()
        .records()
        .next()
        .unwrap()
        .unwrap();
    // OffsetCommitKey v1: version, group, topic, partition.
    let mut key = vec![0, 1, 0, 7];
    key.extend_from_slice(b"billing");
    key.extend_from_slice(&[0, 1, b't', 0, 0, 0, 0]);
    assert_eq!(record.key.as_deref(), Some(&key[..]));
    // OffsetCommitValue v3: version, offset, leader epoch, metadata, commit timestamp.
    let value = record.value.unwrap();
    assert_eq!(&value[..2], [0, 3]);
    assert_eq!(&value[2..10], 2i64.to_be_bytes());
    assert_eq!(&value[10..14], (-1i32).to_be_bytes());
    assert_eq!(&value[14..17], [0, 1, b'm']);
    assert_eq!(&value[17..], T0.to_be_bytes());
}

#[test]
fn the_offsets_topic_cannot_be_written_created_or_deleted_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a"]);
    log.commit_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(1))])
        .unwrap();
    let producer = log.producer(ProducerConfig::default()).unwrap();
    let sent = producer.send(ProducerRecord::new(CONSUMER_OFFSETS).value("x"));
    assert!(matches!(sent, Err(Error::InternalTopic { .. })));
    let partition = log.topic(CONSUMER_OFFSETS).unwrap().partition(0).unwrap();
    let appended = partition.append_values(["x"]);
    assert!(
        matches!(appended, Err(Error::InternalTopic { .. })),
        "{appended:?}"
    );
    assert!(matches!(
        log.delete_topic(CONSUMER_OFFSETS),
        Err(Error::InternalTopic { .. })
    ));
    assert!(matches!(
        log.create_topic(CONSUMER_OFFSETS, None),
        Err(Error::InvalidTopicName { .. })
    ));
}

/// A refused commit: its name, group and offsets.
type BadCommit = (
    &'static str,
    &'static str,
    Vec<(TopicPartition, OffsetAndMetadata)>,
);

#[test]
#[allow(clippy::too_many_lines)]
fn bad_commits_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    log.commit_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(1))])
        .unwrap();
    log.flush().unwrap();
    let before = common::files(dir.path());
    let oversized = "x".repeat(4097);
    let cases: Vec<BadCommit> = vec![
        (
            "metadata",
            "g",
            vec![(
                tp("t", 0),
                OffsetAndMetadata::new(1).with_metadata(oversized),
            )],
        ),
        (
            "past the high watermark",
            "g",
            vec![(tp("t", 0), OffsetAndMetadata::new(3))],
        ),
        (
            "unknown topic",
            "g",
            vec![(tp("nope", 0), OffsetAndMetadata::new(0))],
        ),
        (
            "unknown partition",
            "g",
            vec![(tp("t", 5), OffsetAndMetadata::new(0))],
        ),
        (
            "empty group",
            "",
            vec![(tp("t", 0), OffsetAndMetadata::new(0))],
        ),
        (
            "one bad among good",
            "g",
            vec![
                (tp("t", 0), OffsetAndMetadata::new(2)),
                (tp("t", 9), OffsetAndMetadata::new(0)),
            ],
        ),
    ];
    for (case, group, offsets) in cases {
        let error = log.commit_offsets(group, &offsets).unwrap_err();
        let expected = match case {
            "metadata" => matches!(
                error,
                Error::OffsetMetadataTooLarge {
                    size: 4097,
                    max: 4096
                }
            ),
            "past the high watermark" => matches!(
                error,
                Error::OffsetOutOfRange {
                    requested: 3,
                    latest: 2,
                    ..
                }
            ),
            "unknown topic" => matches!(error, Error::UnknownTopic { .. }),
            "empty group" => matches!(
                error,
                Error::InvalidConfig {
                    field: "group_id",
                    ..
                }
            ),
            _ => matches!(error, Error::UnknownPartition { .. }),
        };
        assert!(expected, "{case}: {error:?}");
    }
    assert!(matches!(
        log.consumer(ConsumerConfig::default().group_id("")),
        Err(Error::InvalidConfig {
            field: "group_id",
            ..
        })
    ));
    assert!(matches!(
        log.consumer(ConsumerConfig::default().max_poll_records(0)),
        Err(Error::InvalidConfig {
            field: "max_poll_records",
            ..
        })
    ));
    assert_eq!(
        common::files(dir.path()),
        before,
        "a refused commit changed the directory"
    );
    assert_eq!(
        log.committed_offset("g", &tp("t", 0))
            .unwrap()
            .unwrap()
            .offset,
        1
    );
}

/// The data a commit covers is synced before the commit is written: when that sync fails,
/// the commit fails and no commit record exists, before or after a reopen.
#[test]
fn a_commit_is_never_durable_before_the_data_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultStorage::new(OsStorage::shared());
    {
        let log = Log::builder()
            .dir(dir.path())
            .storage(faults.shared())
            .offsets_topic_partitions(1)
            .open()
            .unwrap();
        // Policy None: appends are never synced on their own.
        log.create_topic("t", None).unwrap();
        fill(&log, "t", 0, &["a", "b"]);
        // The next storage call is the data partition's fdatasync: fail it.
        faults.fail_at(faults.ops() + 1, FaultKind::Eio, false);
        let error = log
            .commit_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(2))])
            .unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{error:?}");
        assert_eq!(log.committed_offset("g", &tp("t", 0)).unwrap(), None);
        assert!(
            !log.topics_with_internal()
                .contains(&CONSUMER_OFFSETS.to_owned())
        );
        log.simulate_crash();
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.committed_offset("g", &tp("t", 0)).unwrap(), None);
}

#[test]
fn a_damaged_offsets_record_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _clock) = open(dir.path());
        log.create_topic("t", None).unwrap();
        fill(&log, "t", 0, &["a"]);
        log.commit_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(1))])
            .unwrap();
        log.close().unwrap();
    }
    // Replace the commit batch with a valid batch of the same size whose value does not
    // follow the schema (a metadata string longer than the value).
    let home = partition_for_group("g", 3);
    let segment = dir
        .path()
        .join(format!("{CONSUMER_OFFSETS}-{home}"))
        .join("00000000000000000000.log");
    let mut data = std::fs::read(&segment).unwrap();
    let original = 12 + i32::from_be_bytes(data[8..12].try_into().unwrap()) as usize;
    let key = [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 0];
    let mut value = vec![0, 3];
    value.extend_from_slice(&1i64.to_be_bytes());
    value.extend_from_slice(&(-1i32).to_be_bytes());
    value.extend_from_slice(&[0x7f, 0xff]);
    value.extend_from_slice(&T0.to_be_bytes());
    let mut batch = tarnlog::BatchBuilder::new();
    batch.push(T0, Some(&key), Some(&value), &[]);
    let bytes = batch.finish().unwrap().to_vec();
    assert_eq!(bytes.len(), original);
    data[..original].copy_from_slice(&bytes);
    std::fs::write(&segment, &data).unwrap();
    let error = Log::open(dir.path()).unwrap_err();
    assert!(error.is_corruption(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("metadata"), "{message}");
    assert!(
        message.contains(&format!("record at offset 0 of {CONSUMER_OFFSETS}-{home}")),
        "{message}"
    );
}

/// A consumer of `t-0` (`a b`) and `t-1` (no position, no reset policy) whose poll returned
/// `a b` and kept `t-1`'s `NoOffsetForPartition` for the next.
fn a_poll_keeping_an_error(root: &Path) -> (Log, Consumer) {
    let (log, _clock) = open(root);
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    let mut consumer = log
        .consumer(ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::None))
        .unwrap();
    consumer.assign([tp("t", 0), tp("t", 1)]).unwrap();
    consumer.seek(&tp("t", 0), 0).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a", "b"]);
    (log, consumer)
}

/// An error met after records were read from another partition is raised by the next
/// poll: the records are returned first, so none is skipped.
#[test]
fn records_read_before_an_error_are_returned_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut consumer) = a_poll_keeping_an_error(dir.path());
    let error = consumer.poll(Duration::ZERO).unwrap_err();
    assert!(
        matches!(error, Error::NoOffsetForPartition { partition: 1, .. }),
        "{error:?}"
    );
    assert_eq!(consumer.position(&tp("t", 0)).unwrap(), 2);
}

/// An error kept for the next poll is dropped once its partition is sought, paused or
/// unassigned (as Kafka's fetcher drops a failed fetch then): the next poll goes on with
/// what is readable instead of failing for a partition the application dealt with.
#[test]
fn a_kept_error_is_dropped_once_its_partition_is_sought_paused_or_unassigned() {
    type Action = fn(&mut Consumer);
    let actions: [(&str, Action); 5] = [
        ("seek", |c| c.seek(&tp("t", 1), 0).unwrap()),
        ("seek_to_beginning", |c| {
            c.seek_to_beginning(&[tp("t", 1)]).unwrap();
        }),
        ("pause", |c| c.pause(&[tp("t", 1)]).unwrap()),
        ("assign", |c| c.assign([tp("t", 0)]).unwrap()),
        // Another partition's seek changes nothing: the error stands.
        ("seek elsewhere", |c| c.seek(&tp("t", 0), 2).unwrap()),
    ];
    for (name, action) in actions {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut consumer) = a_poll_keeping_an_error(dir.path());
        action(&mut consumer);
        fill(&log, "t", 0, &["c"]);
        let next = consumer.poll(Duration::ZERO);
        if name == "seek elsewhere" {
            assert!(
                matches!(next, Err(Error::NoOffsetForPartition { partition: 1, .. })),
                "{name}: {next:?}"
            );
        } else {
            let next = next.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                values(&next.into_iter().collect::<Vec<_>>()),
                ["c"],
                "{name}"
            );
        }
    }
}

#[test]
fn a_failed_assign_leaves_the_assignment_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    fill(&log, "t", 0, &["a", "b"]);
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a", "b"]);
    let error = consumer.assign([tp("t", 0), tp("missing", 0)]).unwrap_err();
    assert!(matches!(error, Error::UnknownTopic { .. }), "{error:?}");
    assert_eq!(consumer.assignment(), [tp("t", 0)]);
    assert_eq!(consumer.position(&tp("t", 0)).unwrap(), 2);
    fill(&log, "t", 0, &["c"]);
    assert_eq!(values(&poll(&mut consumer)), ["c"]);
}

/// Deleting a topic removes its committed offsets (Kafka's deleted-partition cleanup): a
/// topic created again under the name is read from its start, also after a restart.
#[test]
fn deleting_a_topic_forgets_its_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = tp("t", 0);
    {
        let (log, _clock) = open(dir.path());
        log.create_topic("t", None).unwrap();
        log.create_topic("kept", None).unwrap();
        fill(&log, "t", 0, &["a", "b", "c"]);
        fill(&log, "kept", 0, &["k"]);
        log.commit_offsets(
            "g",
            &[
                (t0.clone(), OffsetAndMetadata::new(3)),
                (tp("kept", 0), OffsetAndMetadata::new(1)),
            ],
        )
        .unwrap();
        log.delete_topic("t").unwrap();
        assert_eq!(log.committed_offset("g", &t0).unwrap(), None);
        log.create_topic("t", None).unwrap();
        fill(&log, "t", 0, &["new-a", "new-b"]);
        let mut consumer = log.consumer(earliest(Some("g"))).unwrap();
        consumer.assign([t0.clone()]).unwrap();
        assert_eq!(values(&poll(&mut consumer)), ["new-a", "new-b"]);
        consumer.close().unwrap();
        log.close().unwrap();
    }
    let (log, _clock) = open(dir.path());
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 2);
    assert_eq!(
        log.committed_offset("g", &tp("kept", 0))
            .unwrap()
            .unwrap()
            .offset,
        1
    );
}

#[test]
fn closing_the_log_wakes_a_waiting_poll() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let waiting = std::thread::spawn(move || {
        let start = Instant::now();
        let result = consumer.poll(Duration::from_secs(60));
        (result.map(|r| r.count()), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    log.close().unwrap();
    let (result, waited) = waiting.join().unwrap();
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    assert!(
        waited < Duration::from_secs(30),
        "poll slept through the close"
    );
}

#[test]
fn names_that_collide_with_internal_topics_are_reserved() {
    let log = Log::temp().unwrap();
    for name in [
        CONSUMER_OFFSETS,
        "__consumer.offsets",
        "__transaction.state",
    ] {
        let error = log.create_topic(name, None).unwrap_err();
        assert!(
            matches!(error, Error::InvalidTopicName { .. }),
            "{name}: {error:?}"
        );
    }
}

/// A deleted topic among the assigned partitions is skipped (as Kafka's consumer waits on
/// its metadata), not an error that stops the other partitions being read.
#[test]
fn an_assigned_partition_of_a_deleted_topic_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("a", None).unwrap();
    log.create_topic("b", None).unwrap();
    fill(&log, "a", 0, &["a1"]);
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("a", 0), tp("b", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a1"]);
    log.delete_topic("a").unwrap();
    fill(&log, "b", 0, &["b1", "b2"]);
    assert_eq!(values(&poll(&mut consumer)), ["b1", "b2"]);
    fill(&log, "b", 0, &["b3"]);
    assert_eq!(values(&poll(&mut consumer)), ["b3"]);
    assert!(poll(&mut consumer).is_empty());
}

/// A partition that fails every read (its only directory failed) does not keep the
/// consumer from the other partitions: their records come, and the failure is reported.
#[test]
fn a_failing_partition_does_not_stop_the_others() {
    let root = common::scratch("tarnlog-consumer-");
    let dirs: Vec<_> = (0..2).map(|i| root.path().join(format!("d{i}"))).collect();
    let (log, fault) = common::faulty_log(&dirs);
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    let described = log.describe_topic("t").unwrap();
    let leader = |p: usize| described.partitions[p].leader.unwrap();
    assert_ne!(leader(0), leader(1), "placement spreads the two partitions");
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0), tp("t", 1)]).unwrap();
    fault.fail_dir(&dirs[leader(0)], FaultKind::Eio);
    // The failure is noticed at the partition's next use.
    let p0 = log.topic("t").unwrap().partition(0).unwrap();
    assert!(p0.append_values(["lost"]).is_err());
    fill(&log, "t", 1, &["x", "y"]);
    let (mut got, mut errors) = (Vec::new(), 0);
    for _ in 0..6 {
        match consumer.poll(Duration::from_millis(50)) {
            Ok(records) => got.extend(records),
            Err(error) => {
                assert!(
                    matches!(error, Error::PartitionOffline { partition: 0, .. }),
                    "{error}"
                );
                errors += 1;
            }
        }
    }
    assert_eq!(values(&got), ["x", "y"]);
    assert!(errors > 0, "the failing partition is reported");
    // Its offsets are not known either (Kafka's `ListOffsets` finds no leader): an error,
    // not 0.
    for offsets in [
        consumer.beginning_offsets(&[tp("t", 1), tp("t", 0)]),
        consumer.end_offsets(&[tp("t", 0)]),
    ] {
        assert!(
            matches!(offsets, Err(Error::PartitionOffline { partition: 0, .. })),
            "{offsets:?}"
        );
    }
    assert_eq!(consumer.end_offsets(&[tp("t", 1)]).unwrap()[&tp("t", 1)], 2);
}

/// An async commit queued before its topic was deleted and created again under the name
/// runs at the next `poll`: it fails with `UnknownTopic` instead of committing the old
/// topic's positions for the new one (whose first records the group would then skip).
#[test]
fn an_async_commit_of_a_deleted_topic_does_not_land_on_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("t", None).unwrap();
    let old: Vec<String> = (0..10).map(|i| format!("old-{i}")).collect();
    fill(
        &log,
        "t",
        0,
        &old.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut consumer = log
        .consumer(earliest(Some("g")).enable_auto_commit(false))
        .unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(poll(&mut consumer).len(), 10);
    let outcome = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&outcome);
    consumer
        .commit_async(move |result| *seen.lock().unwrap() = Some(result))
        .unwrap();
    log.delete_topic("t").unwrap();
    log.create_topic("t", None).unwrap();
    let new: Vec<String> = (0..20).map(|i| format!("new-{i}")).collect();
    fill(
        &log,
        "t",
        0,
        &new.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    poll(&mut consumer);
    let result = outcome.lock().unwrap().take().expect("the callback ran");
    assert!(
        matches!(result, Err(Error::UnknownTopic { .. })),
        "{result:?}"
    );
    assert!(log.committed_offset("g", &tp("t", 0)).unwrap().is_none());
}

/// A committed offset whose leader epoch the partition's leader does not know (KIP-320's
/// undefined answer to `OffsetsForLeaderEpoch`): the truncation cannot be placed, so the
/// position is reset by the policy, or, under `None`, `poll` fails with `LogTruncation`
/// and no divergent offset. A commit with a known epoch resumes where it says.
#[test]
fn a_committed_offset_of_an_unknown_leader_epoch_is_reset_by_the_policy() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let commit = |group: &str, epoch: i32| {
        let mut offset = OffsetAndMetadata::new(3);
        offset.leader_epoch = Some(epoch);
        log.commit_offsets(group, &[(tp("t", 0), offset)]).unwrap();
    };
    commit("known", 0);
    let mut consumer = log.consumer(earliest(Some("known"))).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["d"]);
    drop(consumer);
    commit("unknown", 99);
    let mut consumer = log.consumer(earliest(Some("unknown"))).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a", "b", "c", "d"]);
    drop(consumer);
    commit("strict", 99);
    let strict = ConsumerConfig::default()
        .group_id("strict")
        .auto_offset_reset(AutoOffsetReset::None);
    let mut consumer = log.consumer(strict).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    match consumer.poll(Duration::from_millis(100)) {
        Err(Error::LogTruncation {
            offset: 3,
            divergent_offset: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    consumer.seek(&tp("t", 0), 3).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["d"]);
}

/// The same with the log reopened between the cut and the next append: the new epoch is
/// kept (in `meta`) though no batch carries it yet, so a group member resuming from an
/// offset committed past the cut goes back to it.
#[test]
fn a_committed_offset_past_a_truncation_goes_back_to_the_cut_after_a_reopen() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let mut consumer = log.consumer(earliest(Some("g"))).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a", "b", "c", "d"]);
    consumer.commit_sync().unwrap();
    drop(consumer);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.truncate_to(2).unwrap();
    let epoch = log.describe_topic("t").unwrap().partitions[0].leader_epoch;
    log.close().unwrap();
    let (log, _) = open(root.path());
    assert_eq!(
        log.describe_topic("t").unwrap().partitions[0].leader_epoch,
        epoch
    );
    fill(&log, "t", 0, &["x", "y", "z"]);
    let mut consumer = log.consumer(earliest(Some("g"))).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["x", "y", "z"]);
}

/// `truncate_to` on a partition with one replica starts a new leader epoch, so that a
/// consumer that read the cut records goes back to the cut (KIP-320) instead of skipping
/// the records appended there since.
#[test]
fn a_consumer_past_a_truncation_goes_back_to_the_cut() {
    let root = tempfile::tempdir().unwrap();
    let (log, _) = open(root.path());
    log.create_topic("t", TopicConfig::default()).unwrap();
    fill(&log, "t", 0, &["a", "b", "c", "d"]);
    let mut consumer = log.consumer(earliest(None)).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    assert_eq!(values(&poll(&mut consumer)), ["a", "b", "c", "d"]);
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    partition.truncate_to(2).unwrap();
    fill(&log, "t", 0, &["x", "y", "z"]);
    assert_eq!(values(&poll(&mut consumer)), ["x", "y", "z"]);
}
