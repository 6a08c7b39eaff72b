//! Consumer groups through `subscribe`: generations, queue and publish/subscribe semantics,
//! leaving, session expiry, the rebalance listener, commit fencing, admin views, restarts.
//! All time is the log's `ManualClock`; consumers of one test are polled from one thread
//! with short timeouts, so a rebalance completes as each member polls in turn.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tarnlog::{
    Assignor, AutoOffsetReset, Consumer, ConsumerConfig, Error, GroupState, Log, ManualClock,
    RangeAssignor, RebalanceListener, ResetTo, RoundRobinAssignor, TopicConfig, TopicPartition,
};

const T0: i64 = 1_700_000_000_000;
const SHORT: Duration = Duration::from_millis(20);

fn open(root: &Path) -> (Log, Arc<ManualClock>) {
    open_at(root, T0)
}

/// The log in `root` with its clock at `at`.
fn open_at(root: &Path, at: i64) -> (Log, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(at));
    let log = Log::builder()
        .dir(root)
        .clock(clock.clone())
        .offsets_topic_partitions(2)
        .group_initial_rebalance_delay_ms(0)
        .open()
        .unwrap();
    (log, clock)
}

/// A new log with topic `jobs` of `partitions` partitions (the directory lives as long as
/// the returned guard).
fn jobs_log(partitions: u32) -> (tempfile::TempDir, Log, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let (log, clock) = open(dir.path());
    log.create_topic("jobs", TopicConfig::default().partitions(partitions))
        .unwrap();
    (dir, log, clock)
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .session_timeout_ms(10_000)
        .max_poll_interval_ms(30_000)
}

fn member(log: &Log, group: &str, topics: &[&str]) -> Consumer {
    let mut consumer = log.consumer(config(group)).unwrap();
    consumer.subscribe(topics.iter().copied()).unwrap();
    consumer
}

/// Polls every consumer in turn until each holds an assignment of one generation; returns
/// the generation and the values the polls returned meanwhile.
fn settle(consumers: &mut [&mut Consumer]) -> (i32, Vec<String>) {
    let mut read = Vec::new();
    for _ in 0..200 {
        for consumer in consumers.iter_mut() {
            for record in consumer.poll(SHORT).unwrap() {
                read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
        let generations: BTreeSet<Option<i32>> = consumers
            .iter()
            .map(|c| c.group_membership().map(|(_, g)| g))
            .collect();
        if generations.len() == 1 && !generations.contains(&None) {
            return (generations.into_iter().next().flatten().unwrap(), read);
        }
    }
    panic!("the group never settled");
}

fn fill(log: &Log, topic: &str, partitions: u32, per_partition: usize) {
    for p in 0..partitions {
        let values: Vec<String> = (0..per_partition).map(|i| format!("{p}-{i}")).collect();
        log.topic(topic)
            .unwrap()
            .partition(p)
            .unwrap()
            .append_values(&values)
            .unwrap();
    }
}

fn partitions_of(consumer: &Consumer) -> BTreeSet<TopicPartition> {
    consumer.assignment().into_iter().collect()
}

#[test]
fn generations_increment_and_partitions_are_shared() {
    let (_dir, log, _clock) = jobs_log(4);
    let mut a = member(&log, "workers", &["jobs"]);
    assert_eq!(settle(&mut [&mut a]).0, 1);
    assert_eq!(a.assignment().len(), 4);
    let mut b = member(&log, "workers", &["jobs"]);
    assert_eq!(settle(&mut [&mut a, &mut b]).0, 2);
    let (pa, pb) = (partitions_of(&a), partitions_of(&b));
    assert_eq!(pa.len() + pb.len(), 4);
    assert!(pa.is_disjoint(&pb), "one owner per partition");
    let description = log.describe_group("workers").unwrap();
    assert_eq!(description.state, GroupState::Stable);
    assert_eq!(description.generation, Some(2));
    assert_eq!(description.members.len(), 2);
    assert_eq!(log.list_groups(), ["workers"]);
}

#[test]
fn a_group_is_a_queue_and_groups_are_publish_subscribe() {
    let (_dir, log, _clock) = jobs_log(4);
    let mut a = member(&log, "workers", &["jobs"]);
    let mut b = member(&log, "workers", &["jobs"]);
    let mut audit = member(&log, "audit", &["jobs"]);
    settle(&mut [&mut a, &mut b]);
    settle(&mut [&mut audit]);
    fill(&log, "jobs", 4, 25);
    let mut by_worker: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut audited = Vec::new();
    for _ in 0..50 {
        for (i, consumer) in [&mut a, &mut b].into_iter().enumerate() {
            for r in consumer.poll(SHORT).unwrap() {
                by_worker[i].push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
        for r in audit.poll(SHORT).unwrap() {
            audited.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    let workers: BTreeSet<&String> = by_worker.iter().flatten().collect();
    assert_eq!(
        by_worker[0].len() + by_worker[1].len(),
        100,
        "each job once"
    );
    assert_eq!(workers.len(), 100);
    assert!(!by_worker[0].is_empty() && !by_worker[1].is_empty());
    assert_eq!(audited.len(), 100, "another group sees every record");
}

#[test]
fn extra_members_stay_idle_and_take_over_when_one_leaves() {
    let (_dir, log, _clock) = jobs_log(2);
    let mut a = member(&log, "g", &["jobs"]);
    let mut b = member(&log, "g", &["jobs"]);
    let mut c = member(&log, "g", &["jobs"]);
    settle(&mut [&mut a, &mut b, &mut c]);
    let counts: Vec<usize> = [&a, &b, &c].iter().map(|m| m.assignment().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 2);
    assert_eq!(counts.iter().filter(|&&n| n == 0).count(), 1, "{counts:?}");
    // The first member leaves by closing: the others rebalance at once, no timeout.
    let before = log.describe_group("g").unwrap().generation.unwrap();
    a.close().unwrap();
    let (generation, _) = settle(&mut [&mut b, &mut c]);
    assert_eq!(generation, before + 1);
    assert_eq!(b.assignment().len() + c.assignment().len(), 2);
    assert_eq!(b.assignment().len(), 1);
}

#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        // Revocation comes before the partitions go: the member may still commit.
        let committed = consumer.commit_sync().is_ok();
        self.0.lock().unwrap().push(format!(
            "revoked {} commit_ok={committed}",
            partitions.len()
        ));
    }

    fn on_partitions_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(format!("assigned {}", partitions.len()));
    }

    fn on_partitions_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(format!("lost {}", partitions.len()));
    }
}

#[test]
fn the_listener_hears_revocation_before_assignment_and_may_commit() {
    let (_dir, log, _clock) = jobs_log(4);
    let events = Recorder::default();
    let mut a = log.consumer(config("g").enable_auto_commit(false)).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    settle(&mut [&mut a]);
    fill(&log, "jobs", 4, 3);
    let mut read = 0;
    while read < 12 {
        read += a.poll(SHORT).unwrap().count();
    }
    let mut b = member(&log, "g", &["jobs"]);
    let (_, reread) = settle(&mut [&mut a, &mut b]);
    assert!(reread.is_empty(), "nothing is read twice: {reread:?}");
    assert_eq!(
        *events.0.lock().unwrap(),
        ["assigned 4", "revoked 4 commit_ok=true", "assigned 2"]
    );
    // The commit made in the revocation callback stuck: b resumes after it.
    let end: u64 = b
        .assignment()
        .iter()
        .map(|tp| log.committed_offset("g", tp).unwrap().unwrap().offset)
        .sum();
    assert_eq!(end, 6);
    assert!(b.poll(SHORT).unwrap().is_empty(), "nothing is read twice");
}

/// Eager rebalancing (Kafka's `onJoinPrepare`): a member of a generation hears
/// `on_partitions_revoked` before every rejoin, even when it owns nothing, and
/// `on_partitions_assigned` after, even with nothing.
#[test]
fn an_eager_member_owning_nothing_still_hears_the_revocation() {
    let (_dir, log, _clock) = jobs_log(1);
    let listening = |events: &Recorder| {
        let mut consumer = log.consumer(config("g").enable_auto_commit(false)).unwrap();
        consumer
            .subscribe_with_listener(["jobs"], events.clone())
            .unwrap();
        consumer
    };
    let (a_events, b_events) = (Recorder::default(), Recorder::default());
    let mut a = listening(&a_events);
    let mut b = listening(&b_events);
    settle(&mut [&mut a, &mut b]);
    assert_eq!(a.assignment().len() + b.assignment().len(), 1);
    let idle = if a.assignment().is_empty() {
        &a_events
    } else {
        &b_events
    };
    idle.0.lock().unwrap().clear();
    let mut c = member(&log, "g", &["jobs"]);
    settle(&mut [&mut a, &mut b, &mut c]);
    assert_eq!(
        *idle.0.lock().unwrap(),
        ["revoked 0 commit_ok=true", "assigned 0"]
    );
}

/// `subscribe` with no topics is `unsubscribe` (Kafka's `KafkaConsumer.subscribe`): the
/// member leaves its group at once, so the group can be administered (it stayed a member
/// with no topics, and `reset_offsets` answered `GroupNotEmpty`).
#[test]
fn subscribing_to_nothing_leaves_the_group() {
    let (_dir, log, _clock) = jobs_log(2);
    let mut a = member(&log, "g", &["jobs"]);
    settle(&mut [&mut a]);
    assert_eq!(a.assignment().len(), 2);
    a.subscribe(Vec::<String>::new()).unwrap();
    assert!(a.assignment().is_empty());
    assert!(a.group_membership().is_none());
    assert_eq!(log.describe_group("g").unwrap().members.len(), 0);
    log.reset_offsets("g", &[TopicPartition::new("jobs", 0)], ResetTo::Earliest)
        .unwrap();
    // As Kafka's: neither subscribed nor assigned.
    assert!(matches!(a.poll(SHORT), Err(Error::NoAssignment)));
}

/// A member that stops polling leaves once `max_poll_interval_ms` passed (Kafka's heartbeat
/// thread sends `LeaveGroup` when the poll timer runs out; until then it keeps the session
/// alive); the survivor takes everything, and the stale member learns it lost its
/// partitions, with its commits refused.
#[test]
fn a_silent_member_is_removed_and_its_commits_refused() {
    let (_dir, log, clock) = jobs_log(4);
    fill(&log, "jobs", 4, 2);
    let events = Recorder::default();
    let mut a = log.consumer(config("g").enable_auto_commit(false)).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    let mut b = member(&log, "g", &["jobs"]);
    settle(&mut [&mut a, &mut b]);
    // Only b polls while the clock passes a's poll interval (30 s).
    for _ in 0..8 {
        clock.advance(4_000);
        b.poll(SHORT).unwrap();
    }
    settle(&mut [&mut b]);
    assert_eq!(b.assignment().len(), 4);
    // a's commit is fenced: it is no longer a member.
    assert!(matches!(a.commit_sync(), Err(Error::UnknownMemberId)));
    // Its next poll finds it out of the group: lost, not revoked; then it rejoins.
    settle(&mut [&mut a, &mut b]);
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("lost"))
    );
    assert_eq!(a.assignment().len() + b.assignment().len(), 4);
}

#[test]
fn clients_outside_the_group_cannot_commit_or_reset_while_it_has_members() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("jobs", None).unwrap();
    fill(&log, "jobs", 1, 5);
    let mut a = member(&log, "g", &["jobs"]);
    settle(&mut [&mut a]);
    let tp = TopicPartition::new("jobs", 0);
    let commit = [(tp.clone(), tarnlog::OffsetAndMetadata::new(1))];
    assert!(matches!(
        log.commit_offsets("g", &commit),
        Err(Error::UnknownMemberId)
    ));
    assert!(matches!(
        log.reset_offsets("g", std::slice::from_ref(&tp), ResetTo::Earliest),
        Err(Error::GroupNotEmpty { .. })
    ));
    assert!(matches!(
        log.delete_group("g"),
        Err(Error::GroupNotEmpty { .. })
    ));
    // A consumer using assign with the same group id is such a client too.
    let mut simple = log.consumer(config("g")).unwrap();
    simple.assign([tp.clone()]).unwrap();
    simple.poll(SHORT).unwrap();
    assert!(matches!(simple.commit_sync(), Err(Error::UnknownMemberId)));
    drop(simple);
    a.close().unwrap();
    log.commit_offsets("g", &commit).unwrap();
    assert_eq!(log.describe_group("g").unwrap().state, GroupState::Empty);
}

#[test]
fn assign_and_subscribe_are_exclusive() {
    let log = Log::temp().unwrap();
    log.create_topic("t", None).unwrap();
    let mut consumer = log.consumer(config("g")).unwrap();
    consumer.subscribe(["t"]).unwrap();
    assert!(matches!(
        consumer.assign([TopicPartition::new("t", 0)]),
        Err(Error::IllegalState { .. })
    ));
    consumer.unsubscribe().unwrap();
    consumer.assign([TopicPartition::new("t", 0)]).unwrap();
    assert!(matches!(
        consumer.subscribe(["t"]),
        Err(Error::IllegalState { .. })
    ));
    let mut lone = log.consumer(ConsumerConfig::default()).unwrap();
    assert!(matches!(
        lone.subscribe(["t"]),
        Err(Error::InvalidConfig {
            field: "group_id",
            ..
        })
    ));
}

#[test]
fn the_leaders_assignor_is_used_when_all_members_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("a", TopicConfig::default().partitions(3))
        .unwrap();
    log.create_topic("b", TopicConfig::default().partitions(3))
        .unwrap();
    let round_robin =
        || config("g").partition_assignment_strategy(vec![Arc::new(RoundRobinAssignor)]);
    let mut x = log.consumer(round_robin()).unwrap();
    x.subscribe(["a", "b"]).unwrap();
    let mut y = log.consumer(round_robin()).unwrap();
    y.subscribe(["a", "b"]).unwrap();
    settle(&mut [&mut x, &mut y]);
    // Round robin over a0 a1 a2 b0 b1 b2: 3 each, alternating.
    let (px, py) = (partitions_of(&x), partitions_of(&y));
    assert_eq!((px.len(), py.len()), (3, 3));
    let topics_x: BTreeSet<&str> = px.iter().map(|tp| tp.topic.as_str()).collect();
    assert_eq!(topics_x.len(), 2, "round robin mixes topics: {px:?}");
}

/// KIP-62: a member busy with its records for longer than `session_timeout_ms` (but within
/// `max_poll_interval_ms`) stays in the group, as Kafka's background heartbeat thread keeps
/// its session alive: no rebalance, its partitions and commits its own. Past the poll
/// interval it leaves.
#[test]
fn a_member_busy_past_its_session_timeout_stays_until_its_poll_interval() {
    let (_dir, log, clock) = jobs_log(4);
    fill(&log, "jobs", 4, 2);
    let mut a = log.consumer(config("g").enable_auto_commit(false)).unwrap();
    a.subscribe(["jobs"]).unwrap();
    let mut b = member(&log, "g", &["jobs"]);
    let (generation, _) = settle(&mut [&mut a, &mut b]);
    let held = partitions_of(&a);
    // 28 s without a poll of a (session 10 s, poll interval 30 s); b polls meanwhile.
    for _ in 0..7 {
        clock.advance(4_000);
        b.poll(SHORT).unwrap();
    }
    assert_eq!(log.describe_group("g").unwrap().members.len(), 2);
    a.commit_sync().unwrap();
    let (again, _) = settle(&mut [&mut a, &mut b]);
    assert_eq!(again, generation, "no rebalance");
    assert_eq!(partitions_of(&a), held);
    // Now 32 s: a's poll timer runs out.
    for _ in 0..8 {
        clock.advance(4_000);
        b.poll(SHORT).unwrap();
    }
    assert_eq!(log.describe_group("g").unwrap().members.len(), 1);
    assert!(matches!(a.commit_sync(), Err(Error::UnknownMemberId)));
}

/// A static member that stops polling does not leave when its poll timer runs out (KIP-345:
/// static members never send `LeaveGroup`): its heartbeats stop, and its session ends
/// `session_timeout_ms` later. A static member whose consumer closed stays a session
/// timeout from the close.
#[test]
fn a_static_member_that_stops_polling_stays_a_session_timeout_past_its_poll_interval() {
    let (_dir, log, clock) = jobs_log(2);
    let mut a = log.consumer(config("g").group_instance_id("w1")).unwrap();
    a.subscribe(["jobs"]).unwrap();
    settle(&mut [&mut a]);
    let members = |log: &Log| log.describe_group("g").unwrap().members.len();
    clock.advance(39_000);
    assert_eq!(
        members(&log),
        1,
        "poll interval 30 s + session 10 s not passed"
    );
    clock.advance(1_001);
    assert_eq!(members(&log), 0);
    // Back: it rejoins (a new member); closed, it stays 10 s more.
    settle(&mut [&mut a]);
    assert_eq!(members(&log), 1);
    clock.advance(25_000);
    a.close().unwrap();
    clock.advance(9_999);
    assert_eq!(members(&log), 1, "within its session after the close");
    clock.advance(2);
    assert_eq!(members(&log), 0);
}

/// A static member whose poll timer ran out is no member to its own client any more
/// (Kafka's resets its generation then): its commit fails, its next poll hears its
/// partitions lost and takes its own place back under its instance id, without a
/// rebalance; closed past its poll timer (auto-commit on), its session ends a session
/// timeout after the timer ran out, not after the close.
#[test]
fn a_static_member_past_its_poll_timer_rejoins_in_its_own_place() {
    let (_dir, log, clock) = jobs_log(2);
    fill(&log, "jobs", 2, 1);
    let events = Recorder::default();
    let mut a = log.consumer(config("g").group_instance_id("w1")).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    let (generation, _) = settle(&mut [&mut a]);
    // Past the poll interval (30 s), within the session after it (10 s).
    clock.advance(35_000);
    assert!(matches!(a.commit_sync(), Err(Error::UnknownMemberId)));
    let (again, _) = settle(&mut [&mut a]);
    assert_eq!(again, generation, "its own place back, no rebalance");
    assert!(events.0.lock().unwrap().contains(&"lost 2".to_owned()));
    assert_eq!(a.assignment().len(), 2);
    clock.advance(35_000);
    // Its auto-commit is refused; the consumer closes all the same.
    let _ = a.close();
    let members = |log: &Log| log.describe_group("g").unwrap().members.len();
    clock.advance(4_999);
    assert_eq!(members(&log), 1, "within its session after its poll timer");
    clock.advance(2);
    assert_eq!(members(&log), 0, "the close did not lengthen its session");
}

/// A member whose poll timer ran out has left (Kafka's heartbeat thread leaves then):
/// `describe_group` shows the group without it (Empty), as `delete_group` already treated
/// it.
#[test]
fn views_of_a_group_drop_members_whose_poll_timer_ran_out() {
    let (_dir, log, clock) = jobs_log(2);
    let mut a = member(&log, "g", &["jobs"]);
    settle(&mut [&mut a]);
    let described = log.describe_group("g").unwrap();
    assert_eq!(described.state, GroupState::Stable);
    assert_eq!(described.members.len(), 1);
    clock.advance(30_001);
    let described = log.describe_group("g").unwrap();
    assert_eq!(described.state, GroupState::Empty, "{described:?}");
    assert!(described.members.is_empty(), "{described:?}");
    log.delete_group("g").unwrap();
    drop(a);
}

/// Kafka's `selectProtocol`: each member votes for its own most preferred assignor among
/// those all support, and the most votes win, whoever leads.
#[test]
fn the_assignor_most_members_prefer_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    for topic in ["a", "b"] {
        log.create_topic(topic, TopicConfig::default().partitions(2))
            .unwrap();
    }
    let prefer = |first: Arc<dyn Assignor>, second: Arc<dyn Assignor>| {
        config("g").partition_assignment_strategy(vec![first, second])
    };
    let range_first = || prefer(Arc::new(RangeAssignor), Arc::new(RoundRobinAssignor));
    let round_robin_first = || prefer(Arc::new(RoundRobinAssignor), Arc::new(RangeAssignor));
    // x is alone at first, and leads from then on.
    let mut x = log.consumer(range_first()).unwrap();
    x.subscribe(["a", "b"]).unwrap();
    settle(&mut [&mut x]);
    let mut y = log.consumer(round_robin_first()).unwrap();
    y.subscribe(["a", "b"]).unwrap();
    let mut z = log.consumer(round_robin_first()).unwrap();
    z.subscribe(["a", "b"]).unwrap();
    settle(&mut [&mut x, &mut y, &mut z]);
    // Round robin (two votes to one) deals a0 a1 b0 b1 to all three; range, the leader's
    // choice, would give each topic's two partitions to two members and the third none.
    let mut sizes: Vec<usize> = [&x, &y, &z]
        .iter()
        .map(|c| partitions_of(c).len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 1, 2]);
}

#[test]
fn offsets_survive_a_restart_and_the_group_resumes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _clock) = open(dir.path());
        log.create_topic("jobs", TopicConfig::default().partitions(2))
            .unwrap();
        let mut a = member(&log, "g", &["jobs"]);
        let (_, early) = settle(&mut [&mut a]);
        assert!(early.is_empty());
        fill(&log, "jobs", 2, 10);
        let mut read = 0;
        while read < 20 {
            read += a.poll(SHORT).unwrap().count();
        }
        a.commit_sync().unwrap();
        a.close().unwrap();
        log.close().unwrap();
    }
    let (log, _clock) = open(dir.path());
    fill(&log, "jobs", 2, 1);
    let mut a = member(&log, "g", &["jobs"]);
    let (_, mut values) = settle(&mut [&mut a]);
    for _ in 0..10 {
        for r in a.poll(SHORT).unwrap() {
            values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    values.sort();
    assert_eq!(values, ["0-0", "1-0"], "only the records after the commit");
}

#[test]
fn a_static_member_that_restarts_in_time_gets_its_partitions_back_without_a_rebalance() {
    let (_dir, log, clock) = jobs_log(4);
    let static_config = || config("g").group_instance_id("worker-1");
    let mut a = log.consumer(static_config()).unwrap();
    a.subscribe(["jobs"]).unwrap();
    let mut b = member(&log, "g", &["jobs"]);
    let (generation, _) = settle(&mut [&mut a, &mut b]);
    let before = partitions_of(&a);
    // A static member's close does not leave the group.
    a.close().unwrap();
    clock.advance(5_000);
    b.poll(SHORT).unwrap();
    let mut restarted = log.consumer(static_config()).unwrap();
    restarted.subscribe(["jobs"]).unwrap();
    let (again, _) = settle(&mut [&mut restarted, &mut b]);
    assert_eq!(again, generation, "no rebalance");
    assert_eq!(partitions_of(&restarted), before);
    // Gone for longer than its session: removed, and the others rebalance.
    drop(restarted);
    for _ in 0..3 {
        clock.advance(5_000);
        b.poll(SHORT).unwrap();
    }
    let (later, _) = settle(&mut [&mut b]);
    assert!(later > generation);
    assert_eq!(b.assignment().len(), 4);
}

/// A pattern matching no topic yet is a subscription all the same (unlike `subscribe`
/// with no topics, which unsubscribes): a matching topic created later is assigned.
#[test]
fn a_pattern_matching_nothing_yet_stays_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    let mut consumer = log.consumer(config("g")).unwrap();
    consumer.subscribe_pattern("orders-.*").unwrap();
    assert!(consumer.subscription().is_empty());
    log.create_topic("orders-eu", TopicConfig::default().partitions(2))
        .unwrap();
    settle(&mut [&mut consumer]);
    assert_eq!(consumer.assignment().len(), 2);
}

#[test]
fn a_pattern_subscription_picks_up_new_topics() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    log.create_topic("orders-eu", TopicConfig::default().partitions(2))
        .unwrap();
    log.create_topic("payments", None).unwrap();
    let mut consumer = log.consumer(config("g")).unwrap();
    consumer.subscribe_pattern("orders-.*").unwrap();
    assert_eq!(consumer.subscription(), ["orders-eu"]);
    let (generation, _) = settle(&mut [&mut consumer]);
    let topics = |c: &Consumer| -> BTreeSet<String> {
        c.assignment().into_iter().map(|tp| tp.topic).collect()
    };
    assert_eq!(topics(&consumer), BTreeSet::from(["orders-eu".to_owned()]));
    log.create_topic("orders-us", TopicConfig::default().partitions(3))
        .unwrap();
    let (later, _) = settle(&mut [&mut consumer]);
    assert!(later > generation);
    assert_eq!(consumer.assignment().len(), 5);
    assert!(topics(&consumer).contains("orders-us"));
    assert!(matches!(
        consumer.subscribe_pattern("orders-("),
        Err(Error::InvalidConfig {
            field: "pattern",
            ..
        })
    ));
    // Internal topics never match, even a pattern that would.
    let tp = TopicPartition::new("payments", 0);
    log.commit_offsets("other", &[(tp, tarnlog::OffsetAndMetadata::new(0))])
        .unwrap();
    assert!(
        log.topics_with_internal()
            .contains(&tarnlog::CONSUMER_OFFSETS.to_owned())
    );
    let mut everything = log.consumer(config("all")).unwrap();
    everything.subscribe_pattern(".*").unwrap();
    assert!(
        !everything
            .subscription()
            .iter()
            .any(|t| t.starts_with("__"))
    );
}

/// Cooperative rebalancing (cooperative-sticky): when a member joins, only the partitions
/// that move are revoked; the others keep their positions and are never read twice.
#[test]
fn a_cooperative_rebalance_revokes_only_the_partitions_that_move() {
    let (_dir, log, _clock) = jobs_log(4);
    let cooperative = || {
        config("g")
            .enable_auto_commit(false)
            .partition_assignment_strategy(vec![Arc::new(tarnlog::CooperativeStickyAssignor)])
    };
    let events = Recorder::default();
    let mut a = log.consumer(cooperative()).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    settle(&mut [&mut a]);
    fill(&log, "jobs", 4, 5);
    let mut read = 0;
    while read < 20 {
        read += a.poll(SHORT).unwrap().count();
    }
    let mut b = log.consumer(cooperative()).unwrap();
    b.subscribe(["jobs"]).unwrap();
    let mut reread = Vec::new();
    for _ in 0..100 {
        for c in [&mut a, &mut b] {
            reread.extend(c.poll(SHORT).unwrap().into_iter().map(|r| r.offset));
        }
        if a.assignment().len() == 2 && b.assignment().len() == 2 {
            break;
        }
    }
    assert_eq!((a.assignment().len(), b.assignment().len()), (2, 2));
    assert!(partitions_of(&a).is_disjoint(&partitions_of(&b)));
    let events = events.0.lock().unwrap().clone();
    assert_eq!(events[0], "assigned 4");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("revoked"))
            .collect::<Vec<_>>(),
        ["revoked 2 commit_ok=true"],
        "only the two moving partitions are revoked: {events:?}"
    );
    assert!(
        reread.is_empty(),
        "kept partitions kept their positions: {reread:?}"
    );
    fill(&log, "jobs", 4, 1);
    let (mut from_a, mut from_b) = (0, 0);
    for _ in 0..10 {
        from_a += a.poll(SHORT).unwrap().count();
        from_b += b.poll(SHORT).unwrap().count();
    }
    assert_eq!((from_a, from_b), (2, 2));
}

/// Group metadata (`GroupMetadata` records in `__consumer_offsets`) survives a restart: the
/// group comes back empty with its generation, and the next member continues from it.
#[test]
fn groups_and_generations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let (log, _clock) = open(dir.path());
        log.create_topic("jobs", TopicConfig::default().partitions(2))
            .unwrap();
        let mut a = member(&log, "g", &["jobs"]);
        let mut b = member(&log, "g", &["jobs"]);
        settle(&mut [&mut a, &mut b]);
        a.close().unwrap();
        b.close().unwrap();
        let description = log.describe_group("g").unwrap();
        assert_eq!(description.state, GroupState::Empty);
        log.close().unwrap();
        description.generation.unwrap()
    };
    {
        let (log, _clock) = open(dir.path());
        let description = log.describe_group("g").unwrap();
        assert_eq!(description.state, GroupState::Empty);
        assert_eq!(description.generation, Some(before));
        assert_eq!(log.list_groups(), ["g"]);
        let mut c = member(&log, "g", &["jobs"]);
        let (generation, _) = settle(&mut [&mut c]);
        assert_eq!(generation, before + 1);
        c.close().unwrap();
        assert!(log.delete_group("g").unwrap());
        log.close().unwrap();
    }
    let (log, _clock) = open(dir.path());
    assert_eq!(log.describe_group("g").unwrap().state, GroupState::Dead);
    assert!(log.list_groups().is_empty());
}

fn cooperative_config(group: &str) -> ConsumerConfig {
    config(group)
        .enable_auto_commit(false)
        .partition_assignment_strategy(vec![Arc::new(tarnlog::CooperativeStickyAssignor)])
}

/// A cooperative member that changes its subscription (Kafka's `onJoinPrepare` under the
/// cooperative protocol) gives up only the partitions of topics it drops: adding a topic
/// revokes nothing and keeps the positions (nothing is read twice); dropping one revokes
/// only its partitions. Before, every change revoked everything, as an eager member does.
#[test]
fn a_cooperative_subscription_change_revokes_only_dropped_topics() {
    let (_dir, log, _clock) = jobs_log(2);
    log.create_topic("more", TopicConfig::default().partitions(2))
        .unwrap();
    fill(&log, "jobs", 2, 2);
    let events = Recorder::default();
    let mut a = log.consumer(cooperative_config("g")).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    let (_, read) = settle(&mut [&mut a]);
    let mut read = read.len();
    while read < 4 {
        read += a.poll(SHORT).unwrap().count();
    }
    events.0.lock().unwrap().clear();
    a.subscribe(["jobs", "more"]).unwrap();
    fill(&log, "more", 2, 1);
    let mut again = Vec::new();
    for _ in 0..100 {
        for record in a.poll(SHORT).unwrap() {
            again.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
        if a.assignment().len() == 4 && again.len() == 2 {
            break;
        }
    }
    assert_eq!(a.assignment().len(), 4);
    assert_eq!(again.len(), 2, "only the new topic's records: {again:?}");
    assert_eq!(*events.0.lock().unwrap(), ["assigned 2"]);
    events.0.lock().unwrap().clear();
    a.subscribe(["more"]).unwrap();
    assert_eq!(*events.0.lock().unwrap(), ["revoked 2 commit_ok=true"]);
    assert!(a.assignment().iter().all(|tp| tp.topic == "more"));
}

/// An async commit made before a rebalance runs in the generation it was made in, before
/// the member rejoins: it is applied, not refused as "rebalance in progress".
#[test]
fn an_async_commit_made_before_a_rebalance_lands_in_its_generation() {
    /// Sums the group's committed offsets when the partitions are revoked.
    struct SeenAtRevocation(Arc<Mutex<Option<u64>>>);
    impl RebalanceListener for SeenAtRevocation {
        fn on_partitions_revoked(&mut self, consumer: &mut Consumer, parts: &[TopicPartition]) {
            let sum = parts
                .iter()
                .map(|tp| consumer.committed(tp).unwrap().map_or(0, |c| c.offset))
                .sum();
            *self.0.lock().unwrap() = Some(sum);
        }
        fn on_partitions_assigned(&mut self, _: &mut Consumer, _: &[TopicPartition]) {}
    }
    let (_dir, log, _clock) = jobs_log(4);
    let seen = Arc::new(Mutex::new(None));
    let mut a = log.consumer(config("g").enable_auto_commit(false)).unwrap();
    a.subscribe_with_listener(["jobs"], SeenAtRevocation(Arc::clone(&seen)))
        .unwrap();
    settle(&mut [&mut a]);
    fill(&log, "jobs", 4, 3);
    let mut read = 0;
    while read < 12 {
        read += a.poll(SHORT).unwrap().count();
    }
    let outcome: Arc<Mutex<Option<tarnlog::Result<()>>>> = Arc::default();
    let slot = Arc::clone(&outcome);
    a.commit_async(move |result| *slot.lock().unwrap() = Some(result))
        .unwrap();
    // b's join starts a round; a's next poll meets it.
    let mut b = member(&log, "g", &["jobs"]);
    assert!(b.poll(SHORT).unwrap().is_empty());
    a.poll(SHORT).unwrap();
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
    assert_eq!(
        *seen.lock().unwrap(),
        Some(12),
        "the async commit ran before the partitions were revoked"
    );
    let (_, reread) = settle(&mut [&mut a, &mut b]);
    assert!(reread.is_empty(), "the async commit held: {reread:?}");
    let committed: u64 = (0..4)
        .map(|p| {
            log.committed_offset("g", &TopicPartition::new("jobs", p))
                .unwrap()
                .unwrap()
                .offset
        })
        .sum();
    assert_eq!(committed, 12);
}

/// As Kafka's client: a member that offers any eager assignor rebalances eagerly (gives
/// everything up), even when the group picks cooperative-sticky; a member offering only
/// cooperative-sticky is refused by a group of range-only members.
#[test]
fn the_rebalance_protocol_follows_every_offered_assignor() {
    let (_dir, log, _clock) = jobs_log(4);
    let events = Recorder::default();
    let mixed = config("g").partition_assignment_strategy(vec![
        Arc::new(tarnlog::CooperativeStickyAssignor),
        Arc::new(tarnlog::RangeAssignor),
    ]);
    let mut a = log.consumer(mixed).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    settle(&mut [&mut a]);
    let mut b = log
        .consumer(config("g").partition_assignment_strategy(vec![Arc::new(tarnlog::RangeAssignor)]))
        .unwrap();
    b.subscribe(["jobs"]).unwrap();
    settle(&mut [&mut a, &mut b]);
    assert_eq!(
        *events.0.lock().unwrap(),
        ["assigned 4", "revoked 4 commit_ok=true", "assigned 2"]
    );
    assert!(partitions_of(&a).is_disjoint(&partitions_of(&b)));
    let mut c = log.consumer(cooperative_config("g")).unwrap();
    c.subscribe(["jobs"]).unwrap();
    let error = c.poll(SHORT).unwrap_err();
    assert!(
        matches!(&error, Error::InconsistentGroupProtocol { offered } if offered == &["cooperative-sticky"]),
        "{error:?}"
    );
}

/// A subscribed topic deleted under the group does not stall its consumers: they go on
/// with the other topics, and the deletion rebalances the group. A subscribed topic that
/// is created later is picked up the same way.
#[test]
fn deleted_and_created_topics_rebalance_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    for topic in ["a", "b"] {
        log.create_topic(topic, TopicConfig::default().partitions(2))
            .unwrap();
    }
    let mut c = member(&log, "g", &["a", "b", "later"]);
    settle(&mut [&mut c]);
    assert_eq!(c.assignment().len(), 4);
    let (generation, _) = settle(&mut [&mut c]);
    log.delete_topic("b").unwrap();
    fill(&log, "a", 2, 3);
    let mut read = 0;
    for _ in 0..50 {
        read += c.poll(SHORT).unwrap().count();
    }
    assert_eq!(read, 6, "topic a is read on");
    assert!(c.group_membership().unwrap().1 > generation);
    assert!(c.assignment().iter().all(|tp| tp.topic == "a"));
    log.create_topic("later", TopicConfig::default().partitions(3))
        .unwrap();
    for _ in 0..50 {
        c.poll(SHORT).unwrap();
        if c.assignment().len() == 5 {
            break;
        }
    }
    assert_eq!(c.assignment().len(), 5, "{:?}", c.assignment());
    // Deleted and created again with the same partition count: another topic, which the
    // group picks up (its records are read from the start).
    log.delete_topic("a").unwrap();
    log.create_topic("a", TopicConfig::default().partitions(2))
        .unwrap();
    fill(&log, "a", 2, 2);
    let mut read = 0;
    for _ in 0..50 {
        read += c.poll(SHORT).unwrap().count();
        if read == 4 {
            break;
        }
    }
    assert_eq!(read, 4, "the new incarnation of topic a is read");
}

/// A cooperative member removed (poll timer run out) while it was rejoining still holding
/// partitions learns they are lost; it rejoins as a new member holding nothing.
#[test]
fn a_cooperative_member_removed_while_rejoining_loses_its_partitions() {
    let (_dir, log, clock) = jobs_log(4);
    let events = Recorder::default();
    let mut a = log.consumer(cooperative_config("g")).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    settle(&mut [&mut a]);
    let mut b = log.consumer(cooperative_config("g")).unwrap();
    b.subscribe(["jobs"]).unwrap();
    // b joins; a gives two partitions up and starts the round that hands them over, but
    // b has not joined that one yet.
    b.poll(SHORT).unwrap();
    a.poll(SHORT).unwrap();
    a.poll(SHORT).unwrap();
    assert_eq!(a.assignment().len(), 2);
    // a goes silent past its poll interval; b carries on and takes everything.
    for _ in 0..8 {
        clock.advance(4_000);
        b.poll(SHORT).unwrap();
    }
    for _ in 0..5 {
        b.poll(SHORT).unwrap();
    }
    assert_eq!(b.assignment().len(), 4);
    // a rejoins as a new member; b hands two partitions over in two cooperative rounds.
    for _ in 0..100 {
        a.poll(SHORT).unwrap();
        b.poll(SHORT).unwrap();
        if a.assignment().len() == 2 && b.assignment().len() == 2 {
            break;
        }
    }
    let events = events.0.lock().unwrap().clone();
    assert!(events.contains(&"lost 2".to_owned()), "{events:?}");
    assert!(partitions_of(&a).is_disjoint(&partitions_of(&b)));
    assert_eq!((a.assignment().len(), b.assignment().len()), (2, 2));
}

/// Two live consumers under one `group_instance_id`: the later one takes the place, and
/// the earlier one is fenced (Kafka's `FENCED_INSTANCE_ID`) instead of both taking turns.
#[test]
fn a_second_consumer_with_the_same_instance_id_fences_the_first() {
    let (_dir, log, _clock) = jobs_log(4);
    let mut first = log.consumer(config("g").group_instance_id("w1")).unwrap();
    first.subscribe(["jobs"]).unwrap();
    let (generation, _) = settle(&mut [&mut first]);
    let mut second = log.consumer(config("g").group_instance_id("w1")).unwrap();
    second.subscribe(["jobs"]).unwrap();
    let (again, _) = settle(&mut [&mut second]);
    assert_eq!(again, generation, "no rebalance");
    assert_eq!(second.assignment().len(), 4);
    let error = first.poll(SHORT).unwrap_err();
    assert!(
        matches!(&error, Error::FencedInstanceId { instance } if instance == "w1"),
        "{error:?}"
    );
    assert!(first.assignment().is_empty());
    // Fenced for good: polling again does not take the place back.
    for _ in 0..3 {
        assert!(matches!(
            first.poll(SHORT),
            Err(Error::FencedInstanceId { .. })
        ));
    }
    let (second_id, _) = second.group_membership().unwrap();
    second.poll(SHORT).unwrap();
    assert_eq!(second.group_membership().unwrap(), (second_id, generation));
    assert_eq!(second.assignment().len(), 4);
    // A third replaces the second; the first, two replacements back, is still fenced, and
    // so is the second.
    let mut third = log.consumer(config("g").group_instance_id("w1")).unwrap();
    third.subscribe(["jobs"]).unwrap();
    settle(&mut [&mut third]);
    assert!(matches!(
        second.poll(SHORT),
        Err(Error::FencedInstanceId { .. })
    ));
    assert!(matches!(
        first.commit_sync(),
        Err(Error::FencedInstanceId { .. })
    ));
    third.poll(SHORT).unwrap();
    assert_eq!(third.assignment().len(), 4);
    assert_eq!(log.describe_group("g").unwrap().members.len(), 1);
}

#[test]
fn group_instance_ids_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _clock) = open(dir.path());
    for bad in [String::new(), "a b".into(), "x".repeat(250)] {
        let error = log
            .consumer(config("g").group_instance_id(bad.clone()))
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidConfig {
                    field: "group_instance_id",
                    ..
                }
            ),
            "{bad:?}: {error:?}"
        );
    }
    log.consumer(config("g").group_instance_id("x".repeat(249)))
        .unwrap();
}

/// A listener that unsubscribes the consumer from its callback is gone with the
/// subscription: a later `subscribe` without a listener does not call it.
#[test]
fn a_listener_that_unsubscribes_is_not_called_again() {
    #[derive(Clone, Default)]
    struct Quitter(Arc<Mutex<usize>>);
    impl RebalanceListener for Quitter {
        fn on_partitions_revoked(&mut self, _: &mut Consumer, _: &[TopicPartition]) {}
        fn on_partitions_assigned(&mut self, consumer: &mut Consumer, _: &[TopicPartition]) {
            *self.0.lock().unwrap() += 1;
            consumer.unsubscribe().unwrap();
        }
    }
    let (_dir, log, _clock) = jobs_log(2);
    let calls = Quitter::default();
    let mut c = log.consumer(config("g")).unwrap();
    c.subscribe_with_listener(["jobs"], calls.clone()).unwrap();
    for _ in 0..20 {
        c.poll(SHORT).unwrap();
        if *calls.0.lock().unwrap() > 0 {
            break;
        }
    }
    assert_eq!(*calls.0.lock().unwrap(), 1);
    assert!(c.subscription().is_empty());
    c.subscribe(["jobs"]).unwrap();
    settle(&mut [&mut c]);
    assert_eq!(*calls.0.lock().unwrap(), 1);
}

/// A group that still had members when the log stopped (a static member does not leave on
/// close) comes back empty as of the reopen: its offsets' retention counts from then.
#[test]
fn a_group_restored_with_members_is_idle_from_the_reopen() {
    const DAY_MS: i64 = 24 * 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _clock) = open_at(dir.path(), T0);
        log.create_topic("jobs", TopicConfig::default().partitions(2))
            .unwrap();
        fill(&log, "jobs", 2, 1);
        let mut c = log.consumer(config("g").group_instance_id("w1")).unwrap();
        c.subscribe(["jobs"]).unwrap();
        let (_, mut read) = settle(&mut [&mut c]);
        for _ in 0..100 {
            if read.len() == 2 {
                break;
            }
            read.extend(
                c.poll(SHORT)
                    .unwrap()
                    .into_iter()
                    .map(|r| r.offset.to_string()),
            );
        }
        assert_eq!(read.len(), 2);
        c.commit_sync().unwrap();
        c.close().unwrap();
        assert_eq!(log.describe_group("g").unwrap().members.len(), 1);
        log.close().unwrap();
    }
    let (log, clock) = open_at(dir.path(), T0 + 6 * DAY_MS);
    let description = log.describe_group("g").unwrap();
    assert_eq!(description.state, GroupState::Empty);
    assert!(description.members.is_empty());
    clock.advance(2 * DAY_MS);
    assert!(
        log.maintain().unwrap().expired_groups.is_empty(),
        "7 days from the reopen"
    );
    assert!(
        log.committed_offset("g", &TopicPartition::new("jobs", 0))
            .unwrap()
            .is_some()
    );
    clock.advance(6 * DAY_MS);
    assert_eq!(log.maintain().unwrap().expired_groups, ["g"]);
}

/// A listener that unsubscribes its consumer when partitions are revoked.
struct QuitOnRevoke;

impl RebalanceListener for QuitOnRevoke {
    fn on_partitions_revoked(&mut self, consumer: &mut Consumer, _: &[TopicPartition]) {
        consumer.unsubscribe().unwrap();
    }
    fn on_partitions_assigned(&mut self, _: &mut Consumer, _: &[TopicPartition]) {}
}

/// A listener that unsubscribes the consumer from `on_partitions_revoked` leaves no member
/// behind: the consumer does not rejoin with its old subscription.
#[test]
fn unsubscribing_from_a_revocation_leaves_no_member_behind() {
    let (_dir, log, _clock) = jobs_log(4);
    let mut a = log.consumer(config("g")).unwrap();
    a.subscribe_with_listener(["jobs"], QuitOnRevoke).unwrap();
    settle(&mut [&mut a]);
    let mut b = member(&log, "g", &["jobs"]);
    assert!(b.poll(SHORT).unwrap().is_empty());
    assert!(a.poll(SHORT).unwrap().is_empty());
    assert!(a.subscription().is_empty());
    assert!(a.assignment().is_empty());
    settle(&mut [&mut b]);
    assert_eq!(b.assignment().len(), 4);
    assert_eq!(log.describe_group("g").unwrap().members.len(), 1);
}

/// The same when the revocation comes from a subscription change (eager: everything;
/// cooperative: the dropped topic's partitions): the change does not bring the membership
/// back, nor the kept partitions.
#[test]
fn unsubscribing_from_a_subscription_changes_revocation_stays_unsubscribed() {
    for cooperative in [false, true] {
        let (_dir, log, _clock) = jobs_log(2);
        log.create_topic("more", TopicConfig::default().partitions(2))
            .unwrap();
        let config = if cooperative {
            cooperative_config("g")
        } else {
            config("g")
        };
        let mut a = log.consumer(config).unwrap();
        a.subscribe_with_listener(["jobs", "more"], QuitOnRevoke)
            .unwrap();
        settle(&mut [&mut a]);
        assert_eq!(a.assignment().len(), 4);
        a.subscribe(["jobs"]).unwrap();
        assert!(a.subscription().is_empty(), "cooperative {cooperative}");
        assert!(a.assignment().is_empty(), "cooperative {cooperative}");
        assert!(a.group_membership().is_none());
        assert_eq!(log.describe_group("g").unwrap().members.len(), 0);
    }
}

/// A member waiting in a long `poll` on quiet partitions is polling all the while: it is
/// still a member when another joins after its poll interval (and session timeout) has
/// passed, instead of being removed while it waits, and it takes part in the round. The
/// real clock, since the wait is timed by it.
#[test]
fn a_member_waiting_in_a_long_poll_stays_in_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder()
        .dir(dir.path())
        .offsets_topic_partitions(2)
        .group_initial_rebalance_delay_ms(0)
        .open()
        .unwrap();
    log.create_topic("jobs", TopicConfig::default().partitions(2))
        .unwrap();
    let session = ConsumerConfig::default()
        .group_id("g")
        .session_timeout_ms(1_500)
        .max_poll_interval_ms(1_500);
    let mut a = log.consumer(session.clone()).unwrap();
    a.subscribe(["jobs"]).unwrap();
    settle(&mut [&mut a]);
    let waiting = std::thread::spawn(move || {
        // Longer than the session, with nothing to read.
        a.poll(Duration::from_secs(7)).unwrap();
        a
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut b = log.consumer(session).unwrap();
    b.subscribe(["jobs"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(3_500);
    while b.assignment().is_empty() && std::time::Instant::now() < deadline {
        b.poll(SHORT).unwrap();
    }
    let members = log.describe_group("g").unwrap().members.len();
    let a = waiting.join().unwrap();
    assert_eq!(members, 2, "a was removed while it waited in poll");
    assert_eq!(b.assignment().len(), 1);
    drop(a);
}

/// `enforce_rebalance` (Kafka's `enforceRebalance`, KIP-568): the next poll rejoins and the
/// group runs a new round with every member, though nothing changed. Eager members give
/// up and get back their partitions (the listener hears both); a second call while the
/// round runs adds no round; nothing is read twice.
#[test]
fn enforce_rebalance_runs_one_new_round_with_every_member() {
    let (_dir, log, _clock) = jobs_log(4);
    let events = Recorder::default();
    let mut a = log.consumer(config("g").enable_auto_commit(false)).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    let mut b = member(&log, "g", &["jobs"]);
    let (generation, _) = settle(&mut [&mut a, &mut b]);
    fill(&log, "jobs", 4, 3);
    let mut read = 0;
    while read < 12 {
        read += a.poll(SHORT).unwrap().count() + b.poll(SHORT).unwrap().count();
    }
    let before = (partitions_of(&a), partitions_of(&b));
    events.0.lock().unwrap().clear();
    b.enforce_rebalance().unwrap();
    // b's poll starts the round; a's call meanwhile asks for nothing more.
    assert!(b.poll(SHORT).unwrap().is_empty());
    assert_eq!(
        log.describe_group("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    a.enforce_rebalance().unwrap();
    let (next, reread) = settle(&mut [&mut a, &mut b]);
    assert_eq!(next, generation + 1);
    assert!(reread.is_empty(), "nothing is read twice: {reread:?}");
    assert_eq!(
        *events.0.lock().unwrap(),
        ["revoked 2 commit_ok=true", "assigned 2"]
    );
    // The same inputs give the same assignment.
    assert_eq!((partitions_of(&a), partitions_of(&b)), before);
    for _ in 0..5 {
        a.poll(SHORT).unwrap();
        b.poll(SHORT).unwrap();
    }
    assert_eq!(
        log.describe_group("g").unwrap().generation,
        Some(generation + 1),
        "one round only"
    );
    assert_eq!(log.describe_group("g").unwrap().state, GroupState::Stable);
}

/// With a cooperative assignor the round that `enforce_rebalance` asks for moves nothing:
/// members keep their partitions and positions, and no revocation is heard.
#[test]
fn enforce_rebalance_keeps_a_cooperative_members_partitions() {
    let (_dir, log, _clock) = jobs_log(4);
    let events = Recorder::default();
    let mut a = log.consumer(cooperative_config("g")).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    let mut b = log.consumer(cooperative_config("g")).unwrap();
    b.subscribe(["jobs"]).unwrap();
    // Settled: the partitions that moved reached b in the cooperative follow-up round,
    // and no round is owed (the generation stays put).
    let generation = loop_until_stable(&log, &mut [&mut a, &mut b]);
    let held = partitions_of(&a);
    assert_eq!((held.len(), b.assignment().len()), (2, 2));
    events.0.lock().unwrap().clear();
    a.enforce_rebalance().unwrap();
    for _ in 0..100 {
        a.poll(SHORT).unwrap();
        b.poll(SHORT).unwrap();
        if a.group_membership().map(|(_, g)| g) == Some(generation + 1)
            && b.group_membership().map(|(_, g)| g) == Some(generation + 1)
        {
            break;
        }
    }
    assert_eq!(
        log.describe_group("g").unwrap().generation,
        Some(generation + 1)
    );
    assert_eq!(partitions_of(&a), held);
    assert!(
        !events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("revoked")),
        "{:?}",
        events.0.lock().unwrap()
    );
}

/// Polls the members until the group's generation has not moved for ten rounds of polls
/// with every member in it; returns that generation.
fn loop_until_stable(log: &Log, consumers: &mut [&mut Consumer]) -> i32 {
    let (mut last, mut still) = (None, 0);
    for _ in 0..300 {
        for consumer in consumers.iter_mut() {
            consumer.poll(SHORT).unwrap();
        }
        let generation = log.describe_group("g").unwrap().generation;
        let all_in = consumers
            .iter()
            .all(|c| c.group_membership().map(|(_, g)| g) == generation);
        still = if generation == last && all_in {
            still + 1
        } else {
            0
        };
        last = generation;
        if still == 10 {
            return generation.unwrap();
        }
    }
    panic!("the group never settled");
}

/// A second call from a member whose own join (asked for by the first) is still running
/// asks for nothing more: the round it is in is the one it asked for.
#[test]
fn enforce_rebalance_during_the_members_own_join_adds_no_round() {
    let (_dir, log, _clock) = jobs_log(4);
    let mut a = member(&log, "g", &["jobs"]);
    let mut b = member(&log, "g", &["jobs"]);
    let generation = loop_until_stable(&log, &mut [&mut a, &mut b]);
    b.enforce_rebalance().unwrap();
    b.poll(SHORT).unwrap();
    assert_eq!(b.group_membership(), None, "b waits for a to rejoin");
    // a's poll completes the round; b has not seen it yet and calls again.
    a.poll(SHORT).unwrap();
    b.enforce_rebalance().unwrap();
    assert_eq!(
        loop_until_stable(&log, &mut [&mut a, &mut b]),
        generation + 1
    );
}

/// A member removed (its poll timer ran out) before the poll that acts on its
/// `enforce_rebalance` learns it from the coordinator first: its listener hears that the
/// partitions were lost, not revoked (they may be someone else's already).
#[test]
fn enforce_rebalance_by_a_removed_member_reports_its_partitions_lost() {
    let (_dir, log, clock) = jobs_log(4);
    let events = Recorder::default();
    let mut a = log.consumer(config("g").enable_auto_commit(false)).unwrap();
    a.subscribe_with_listener(["jobs"], events.clone()).unwrap();
    let mut b = member(&log, "g", &["jobs"]);
    loop_until_stable(&log, &mut [&mut a, &mut b]);
    events.0.lock().unwrap().clear();
    clock.advance(30_001);
    b.poll(SHORT).unwrap();
    a.enforce_rebalance().unwrap();
    a.poll(SHORT).unwrap();
    assert_eq!(
        events.0.lock().unwrap().first().map(String::as_str),
        Some("lost 2")
    );
}

/// Without a group there is nothing to rebalance (`IllegalState`, as Kafka's "consumer
/// does not have a group"); a group consumer that `assign`ed its partitions has no
/// membership, so nothing happens.
#[test]
fn enforce_rebalance_needs_a_group_membership() {
    let (_dir, log, _clock) = jobs_log(2);
    let mut loner = log.consumer(ConsumerConfig::default()).unwrap();
    assert!(matches!(
        loner.enforce_rebalance(),
        Err(Error::IllegalState { .. })
    ));
    let mut assigned = log.consumer(config("g")).unwrap();
    assigned.assign([TopicPartition::new("jobs", 0)]).unwrap();
    assigned.enforce_rebalance().unwrap();
    assigned.poll(SHORT).unwrap();
    assert_eq!(assigned.group_membership(), None);
    assert_eq!(assigned.assignment(), [TopicPartition::new("jobs", 0)]);
    assigned.close().unwrap();
}
