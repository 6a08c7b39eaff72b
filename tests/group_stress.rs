//! Randomized group stress test (seeded, printed; `TARNLOG_SEED` replays it): up to 8
//! consumers in one group over 16 partitions join, poll, stall, leave and get killed for
//! many rounds while records are appended, on a manual clock. Checked: within a generation
//! every partition has at most one owner; with commit-after-process no record is lost; the
//! records delivered twice are bounded by what was processed but not committed when a
//! member lost its partitions. `TARNLOG_SOAK=1` runs 20 times the rounds.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tarnlog::{
    Assignor, AutoOffsetReset, Consumer, ConsumerConfig, CooperativeStickyAssignor, Log,
    ManualClock, RangeAssignor, TopicConfig, TopicPartition,
};

const PARTITIONS: u32 = 16;
const SLOTS: usize = 8;
const SESSION_MS: u64 = 10_000;

fn consumer(log: &Log, cooperative: bool) -> Consumer {
    let strategy: Arc<dyn Assignor> = if cooperative {
        Arc::new(CooperativeStickyAssignor)
    } else {
        Arc::new(RangeAssignor)
    };
    let mut consumer = log
        .consumer(
            ConsumerConfig::default()
                .group_id("stress")
                .partition_assignment_strategy(vec![strategy])
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .enable_auto_commit(false)
                .max_poll_records(20)
                .session_timeout_ms(SESSION_MS)
                .max_poll_interval_ms(SESSION_MS),
        )
        .unwrap();
    consumer.subscribe(["jobs"]).unwrap();
    consumer
}

/// Polls once and "processes" what came (records it in `seen`); returns how many.
fn poll_and_process(consumer: &mut Consumer, seen: &mut BTreeMap<u64, u32>) -> u64 {
    let records = consumer.poll(Duration::from_millis(1)).unwrap();
    let n = records.count() as u64;
    for record in records {
        let value: u64 = std::str::from_utf8(record.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        *seen.entry(value).or_default() += 1;
    }
    n
}

/// A member slot: the consumer and the records it processed but has not committed.
#[derive(Default)]
struct Slot {
    consumer: Option<Consumer>,
    uncommitted: u64,
}

#[test]
fn one_owner_per_partition_and_no_record_lost_eager() {
    stress(false);
}

#[test]
fn one_owner_per_partition_and_no_record_lost_cooperative() {
    stress(true);
}

#[allow(clippy::too_many_lines)] // one randomized scenario, read top to bottom
fn stress(cooperative: bool) {
    let mut rng = common::Rng(common::seed("group_stress"));
    let rounds = if std::env::var("TARNLOG_SOAK").is_ok_and(|v| v == "1") {
        20_000
    } else {
        1_000
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let log = Log::builder()
        .dir(tempfile::tempdir().unwrap().keep())
        .clock(clock.clone())
        .offsets_topic_partitions(1)
        .group_initial_rebalance_delay_ms(0)
        .open()
        .unwrap();
    let topic = log
        .create_topic("jobs", TopicConfig::default().partitions(PARTITIONS))
        .unwrap();
    let mut slots: Vec<Slot> = (0..SLOTS).map(|_| Slot::default()).collect();
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut next_value = 0u64;
    // Records processed but not committed when their member lost or gave up its
    // partitions: the most that may be delivered twice.
    let mut at_risk = 0u64;
    let mut owners: BTreeMap<(i32, TopicPartition), usize> = BTreeMap::new();
    let (mut kills, mut leaves, mut joins) = (0, 0, 0);
    for round in 0..rounds {
        // Produce a few records to random partitions.
        for _ in 0..rng.below(6) {
            let p = rng.below(PARTITIONS as usize) as u32;
            topic
                .partition(p)
                .unwrap()
                .append_values([next_value.to_string()])
                .unwrap();
            next_value += 1;
        }
        for slot in &mut slots {
            let action = rng.below(100);
            let Some(c) = &mut slot.consumer else {
                if action < 10 {
                    slot.consumer = Some(consumer(&log, cooperative));
                    joins += 1;
                }
                continue;
            };
            match action {
                0 => {
                    // Killed: gone without leaving; the coordinator finds out by timeout.
                    std::mem::forget(slot.consumer.take());
                    at_risk += std::mem::take(&mut slot.uncommitted);
                    kills += 1;
                }
                1 => {
                    // Leaves without committing what it processed since its last commit.
                    slot.consumer.take().unwrap().close().unwrap();
                    at_risk += std::mem::take(&mut slot.uncommitted);
                    leaves += 1;
                }
                2..=11 => {} // stalls this round
                _ => {
                    let before = c.group_membership();
                    let n = poll_and_process(c, &mut seen);
                    if c.group_membership() != before {
                        // A rebalance took its partitions before it committed.
                        at_risk += std::mem::take(&mut slot.uncommitted);
                    }
                    slot.uncommitted += n;
                    // Slow processing: sometimes the commit waits for a later round.
                    if action >= 30 {
                        match c.commit_sync() {
                            Ok(()) => slot.uncommitted = 0,
                            Err(_) => at_risk += std::mem::take(&mut slot.uncommitted),
                        }
                    }
                }
            }
        }
        // Every live member's view: one owner per partition per generation.
        for (index, slot) in slots.iter().enumerate() {
            let Some(c) = &slot.consumer else { continue };
            let Some((_, generation)) = c.group_membership() else {
                continue;
            };
            for tp in c.assignment() {
                let owner = *owners.entry((generation, tp.clone())).or_insert(index);
                assert_eq!(
                    owner, index,
                    "round {round}: {tp} owned by slots {owner} and {index} in generation {generation}"
                );
            }
        }
        // Now and then a long pause: sessions expire and members find themselves out.
        let pause = if rng.below(100) == 0 {
            11_000
        } else {
            rng.below(2_500)
        };
        clock.advance(pause as i64);
    }
    // Drain: one fresh consumer takes over everything once the dead sessions expire.
    for slot in &mut slots {
        if let Some(c) = slot.consumer.take() {
            c.close().unwrap();
            at_risk += std::mem::take(&mut slot.uncommitted);
        }
    }
    clock.advance(SESSION_MS as i64 + 1);
    let mut last = consumer(&log, cooperative);
    for _ in 0..10_000 {
        poll_and_process(&mut last, &mut seen);
        last.commit_sync().unwrap();
        if seen.len() as u64 == next_value {
            break;
        }
    }
    let missing: Vec<u64> = (0..next_value).filter(|v| !seen.contains_key(v)).collect();
    assert!(
        missing.is_empty(),
        "lost records: {:?}",
        &missing[..missing.len().min(20)]
    );
    let duplicates: u64 = seen.values().map(|&n| u64::from(n - 1)).sum();
    assert!(
        duplicates <= at_risk,
        "{duplicates} duplicates but only {at_risk} records were uncommitted when commits failed"
    );
    let generations: BTreeSet<i32> = owners.keys().map(|(g, _)| *g).collect();
    println!(
        "group_stress (cooperative: {cooperative}): {rounds} rounds, {next_value} records, {} generations, {joins} joins, \
         {leaves} leaves, {kills} kills, {duplicates} duplicates (bound {at_risk})",
        generations.len()
    );
}
