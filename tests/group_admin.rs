//! Admin calls on consumer groups: list, describe with lag, reset offsets, delete — and
//! that each survives a restart.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tarnlog::{
    AutoOffsetReset, ConsumerConfig, Error, GroupState, Log, ManualClock, OffsetAndMetadata,
    ResetTo, TopicConfig, TopicPartition,
};

const T0: i64 = 1_700_000_000_000;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// A log with topic "t" (2 partitions): partition 0 holds 10 records stamped T0 + 10 i,
/// partition 1 holds 4.
fn setup(root: &Path) -> (Log, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::builder()
        .dir(root)
        .clock(clock.clone())
        .offsets_topic_partitions(2)
        .open()
        .unwrap();
    log.create_topic("t", TopicConfig::default().partitions(2))
        .unwrap();
    let p0 = log.topic("t").unwrap().partition(0).unwrap();
    for i in 0..10 {
        clock.set(T0 + 10 * i);
        p0.append_values([format!("{i}")]).unwrap();
    }
    let p1 = log.topic("t").unwrap().partition(1).unwrap();
    p1.append_values(["a", "b", "c", "d"]).unwrap();
    (log, clock)
}

#[test]
fn list_and_describe_groups_with_their_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = setup(dir.path());
    assert!(log.list_groups().is_empty());
    log.commit_offsets(
        "billing",
        &[
            (tp("t", 0), OffsetAndMetadata::new(4)),
            (tp("t", 1), OffsetAndMetadata::new(4)),
        ],
    )
    .unwrap();
    log.commit_offsets("audit", &[(tp("t", 0), OffsetAndMetadata::new(10))])
        .unwrap();
    assert_eq!(log.list_groups(), ["audit", "billing"]);
    let billing = log.describe_group("billing").unwrap();
    assert_eq!(billing.state, GroupState::Empty);
    let lags: Vec<(u32, u64, u64, u64)> = billing
        .offsets
        .iter()
        .map(|p| (p.tp.partition, p.committed.offset, p.end_offset, p.lag))
        .collect();
    assert_eq!(lags, [(0, 4, 10, 6), (1, 4, 4, 0)]);
    assert_eq!(billing.total_lag(), 6);
    assert_eq!(log.describe_group("audit").unwrap().total_lag(), 0);
    let unknown = log.describe_group("nobody").unwrap();
    assert_eq!(unknown.state, GroupState::Dead);
    assert!(unknown.offsets.is_empty());
    assert!(matches!(
        log.describe_group(""),
        Err(Error::InvalidConfig {
            field: "group_id",
            ..
        })
    ));
}

#[test]
fn reset_offsets_to_each_target_and_a_consumer_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = setup(dir.path());
    let t0 = tp("t", 0);
    log.commit_offsets("g", &[(t0.clone(), OffsetAndMetadata::new(7))])
        .unwrap();
    let reset = |to| log.reset_offsets("g", &[], to).unwrap();
    assert_eq!(reset(ResetTo::Earliest), [(t0.clone(), 0)]);
    assert_eq!(reset(ResetTo::Latest), [(t0.clone(), 10)]);
    // Offsets outside the log are clamped, as Kafka's tool does.
    assert_eq!(reset(ResetTo::Offset(99)), [(t0.clone(), 10)]);
    assert_eq!(reset(ResetTo::Offset(3)), [(t0.clone(), 3)]);
    // The first record at or after T0 + 25 is offset 3 (T0 + 30).
    assert_eq!(reset(ResetTo::Timestamp(T0 + 25)), [(t0.clone(), 3)]);
    assert_eq!(reset(ResetTo::Timestamp(T0 + 1_000)), [(t0.clone(), 10)]);
    // Named partitions may be ones the group never committed.
    let both = log
        .reset_offsets("g", &[t0.clone(), tp("t", 1)], ResetTo::Offset(2))
        .unwrap();
    assert_eq!(both, [(t0.clone(), 2), (tp("t", 1), 2)]);
    let mut consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id("g")
                .auto_offset_reset(AutoOffsetReset::None),
        )
        .unwrap();
    consumer.assign([t0.clone()]).unwrap();
    let first = consumer.poll(Duration::from_millis(100)).unwrap();
    assert_eq!(first.iter().next().unwrap().offset, 2);
    // An unknown partition refuses the whole reset.
    let error = log
        .reset_offsets("g", &[t0.clone(), tp("t", 7)], ResetTo::Earliest)
        .unwrap_err();
    assert!(matches!(error, Error::UnknownPartition { .. }), "{error:?}");
    assert_eq!(log.committed_offset("g", &t0).unwrap().unwrap().offset, 2);
}

#[test]
fn deleted_groups_are_gone_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _clock) = setup(dir.path());
        log.commit_offsets("g", &[(tp("t", 0), OffsetAndMetadata::new(5))])
            .unwrap();
        log.commit_offsets("h", &[(tp("t", 1), OffsetAndMetadata::new(1))])
            .unwrap();
        assert!(log.delete_group("g").unwrap());
        assert!(!log.delete_group("g").unwrap(), "nothing left to delete");
        assert_eq!(log.list_groups(), ["h"]);
        assert_eq!(log.describe_group("g").unwrap().state, GroupState::Dead);
        log.close().unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.list_groups(), ["h"]);
    assert_eq!(log.committed_offset("g", &tp("t", 0)).unwrap(), None);
    assert_eq!(
        log.committed_offset("h", &tp("t", 1))
            .unwrap()
            .unwrap()
            .offset,
        1
    );
}

const DAY_MS: i64 = 24 * 3_600_000;

/// A group never joined (a standalone consumer's commits; Kafka's group without a protocol
/// type): each offset expires a retention after its own commit (Kafka's
/// `removeExpiredOffsets`), the group with the last of them.
#[test]
fn a_simple_groups_offsets_expire_each_after_its_own_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = setup(dir.path());
    let (tp0, tp1) = (tp("t", 0), tp("t", 1));
    log.commit_offsets("simple", &[(tp0.clone(), OffsetAndMetadata::new(1))])
        .unwrap();
    clock.advance(3 * DAY_MS);
    log.commit_offsets("simple", &[(tp1.clone(), OffsetAndMetadata::new(2))])
        .unwrap();
    clock.advance(4 * DAY_MS - 1);
    assert!(log.maintain().unwrap().expired_groups.is_empty());
    assert!(log.committed_offset("simple", &tp0).unwrap().is_some());
    clock.advance(1);
    assert!(log.maintain().unwrap().expired_groups.is_empty());
    assert_eq!(
        log.committed_offset("simple", &tp0).unwrap(),
        None,
        "its own week"
    );
    assert_eq!(
        log.committed_offset("simple", &tp1)
            .unwrap()
            .unwrap()
            .offset,
        2
    );
    assert_eq!(log.list_groups(), ["simple"]);
    clock.advance(3 * DAY_MS);
    assert_eq!(log.maintain().unwrap().expired_groups, ["simple"]);
    assert!(log.list_groups().is_empty());
    // Gone from the offsets topic too: a reopen finds neither.
    log.close().unwrap();
    let log = Log::builder()
        .dir(dir.path())
        .clock(clock.clone())
        .offsets_topic_partitions(2)
        .open()
        .unwrap();
    assert_eq!(log.committed_offset("simple", &tp0).unwrap(), None);
    assert_eq!(log.committed_offset("simple", &tp1).unwrap(), None);
}

/// Kafka's `offsets.retention.minutes` (KIP-211): a group without members loses its
/// offsets a retention period after its last commit or after it became empty; a group with
/// members keeps them.
#[test]
fn offsets_of_idle_groups_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, clock) = setup(dir.path());
        let tp0 = tp("t", 0);
        log.commit_offsets("idle", &[(tp0.clone(), OffsetAndMetadata::new(1))])
            .unwrap();
        log.commit_offsets("left", &[(tp0.clone(), OffsetAndMetadata::new(2))])
            .unwrap();
        // "left" has a member for six days, then it leaves.
        let mut member = log
            .consumer(
                ConsumerConfig::default()
                    .group_id("left")
                    .session_timeout_ms(u64::MAX / 4_000_000)
                    .max_poll_interval_ms(u64::MAX / 4_000_000),
            )
            .unwrap();
        member.subscribe(["t"]).unwrap();
        member.poll(Duration::from_millis(50)).unwrap();
        clock.advance(6 * DAY_MS);
        member.close().unwrap();
        clock.advance(DAY_MS - 1);
        assert!(log.maintain().unwrap().expired_groups.is_empty(), "not yet");
        clock.advance(1);
        assert_eq!(log.maintain().unwrap().expired_groups, ["idle"]);
        assert_eq!(log.committed_offset("idle", &tp0).unwrap(), None);
        assert_eq!(log.list_groups(), ["left"]);
        // Seven days after it became empty, "left" goes too — here found by a commit of
        // another group, as the expiry check runs every ten minutes of commits.
        clock.advance(6 * DAY_MS);
        log.commit_offsets("new", &[(tp0.clone(), OffsetAndMetadata::new(3))])
            .unwrap();
        assert_eq!(log.list_groups(), ["new"]);
        log.close().unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.list_groups(), ["new"], "expiry survives a restart");
}

/// KIP-496 (Kafka's `removeExpiredOffsets`): in a Stable group, the offsets of topics no
/// member subscribes to any more expire a retention period after their commit; those of
/// subscribed topics stay as long as the group has members.
#[test]
fn offsets_of_topics_a_stable_group_left_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::builder()
        .dir(dir.path())
        .clock(clock.clone())
        .offsets_topic_partitions(2)
        .group_initial_rebalance_delay_ms(0)
        .open()
        .unwrap();
    for topic in ["t", "u"] {
        log.create_topic(topic, TopicConfig::default()).unwrap();
    }
    let forever = u64::MAX / 4_000_000;
    let mut member = log
        .consumer(
            ConsumerConfig::default()
                .group_id("g")
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .enable_auto_commit(false)
                .session_timeout_ms(forever)
                .max_poll_interval_ms(forever),
        )
        .unwrap();
    let assigned = |member: &mut tarnlog::Consumer, topic: &str| {
        for _ in 0..200 {
            if member.assignment() == [tp(topic, 0)] {
                return;
            }
            member.poll(Duration::from_millis(10)).unwrap();
        }
        panic!("{topic}-0 never assigned");
    };
    member.subscribe(["t"]).unwrap();
    assigned(&mut member, "t");
    member
        .commit_sync_offsets([(tp("t", 0), OffsetAndMetadata::new(0))])
        .unwrap();
    member.subscribe(["u"]).unwrap();
    assigned(&mut member, "u");
    clock.advance(DAY_MS);
    member
        .commit_sync_offsets([(tp("u", 0), OffsetAndMetadata::new(0))])
        .unwrap();
    clock.advance(6 * DAY_MS - 1);
    member.poll(Duration::from_millis(20)).unwrap();
    log.maintain().unwrap();
    assert!(
        log.committed_offset("g", &tp("t", 0)).unwrap().is_some(),
        "not yet"
    );
    clock.advance(1);
    member.poll(Duration::from_millis(20)).unwrap();
    log.maintain().unwrap();
    assert_eq!(log.committed_offset("g", &tp("t", 0)).unwrap(), None);
    // The subscribed topic's offset stays, however old, while the group has members.
    clock.advance(30 * DAY_MS);
    member.poll(Duration::from_millis(20)).unwrap();
    log.maintain().unwrap();
    assert!(log.committed_offset("g", &tp("u", 0)).unwrap().is_some());
    member.close().unwrap();
}

#[test]
fn offsets_retention_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let error = Log::builder()
        .dir(dir.path())
        .offsets_retention_minutes(0)
        .open()
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidConfig {
                field: "offsets_retention_minutes",
                ..
            }
        ),
        "{error:?}"
    );
}
