//! Countdown fault injection over consumer groups: a fixed workload (a subscribed consumer
//! polling and committing, so the log writes `__consumer_offsets` commits and group
//! metadata) is run once to count its storage calls, then once per (call n, fault kind,
//! one-shot/persistent, close/crash) with that call failing. Then the directory is reopened
//! with the real storage and checked:
//! - nothing panicked, and every error is `Io` or `Poisoned`;
//! - every acknowledged commit survived: the committed offset after reopen is at least the
//!   last acknowledged one and at most the last attempted one (commits only move forward
//!   here), and never past the partition's recovered data;
//! - the group comes back (`Empty`) and takes a new member and a new commit.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tarnlog::storage::{FaultKind, FaultStorage, OsStorage, Storage};
use tarnlog::{
    AutoOffsetReset, ConsumerConfig, Error, FsyncPolicy, GroupState, Log, ManualClock, TopicConfig,
    TopicPartition,
};

const PARTITIONS: u32 = 2;
const PER_PARTITION: usize = 10;
const STEPS: usize = 6;

fn scratch() -> tempfile::TempDir {
    common::scratch("tarnlog-group-faults-")
}

fn open(dir: &Path, storage: Arc<dyn Storage>) -> tarnlog::Result<Log> {
    Log::builder()
        .dir(dir)
        .storage(storage)
        .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
        .offsets_topic_partitions(1)
        .group_initial_rebalance_delay_ms(0)
        .open()
}

fn consumer_config() -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id("g")
        .enable_auto_commit(false)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .max_poll_records(3)
}

#[derive(Debug, Default)]
struct Run {
    /// Per partition: the last acknowledged commit and the highest attempted one.
    acked: BTreeMap<TopicPartition, u64>,
    attempted: BTreeMap<TopicPartition, u64>,
    errors: Vec<(&'static str, Error)>,
}

/// The workload; it stops at its first error and then closes or crashes the log.
fn workload(dir: &Path, fs: &FaultStorage, crash: bool) -> Run {
    let mut run = Run::default();
    let Some(log) = step(&mut run, "open", open(dir, fs.shared())) else {
        return run;
    };
    let body = |run: &mut Run| -> Option<()> {
        let config = TopicConfig::default()
            .partitions(PARTITIONS)
            .fsync(FsyncPolicy::EveryBatch);
        let topic = step(run, "create_topic", log.create_topic("jobs", config))?;
        for p in 0..PARTITIONS {
            let values: Vec<String> = (0..PER_PARTITION).map(|i| format!("{p}-{i}")).collect();
            let partition = step(run, "partition", topic.partition(p))?;
            step(run, "append", partition.append_values(&values))?;
        }
        let mut consumer = step(run, "consumer", log.consumer(consumer_config()))?;
        step(run, "subscribe", consumer.subscribe(["jobs"]))?;
        for _ in 0..STEPS {
            step(run, "poll", consumer.poll(Duration::from_millis(5)))?;
            let positions: Vec<(TopicPartition, u64)> = consumer
                .assignment()
                .into_iter()
                .map(|tp| {
                    let position = consumer.position(&tp).unwrap();
                    (tp, position)
                })
                .collect();
            for (tp, offset) in &positions {
                run.attempted.insert(tp.clone(), *offset);
            }
            step(run, "commit_sync", consumer.commit_sync())?;
            run.acked.extend(positions);
        }
        step(run, "consumer close", consumer.close())
    };
    let finished = body(&mut run).is_some();
    if crash {
        log.simulate_crash();
    } else {
        let closed = log.close();
        if finished {
            step(&mut run, "close", closed);
        }
    }
    run
}

fn step<T>(run: &mut Run, name: &'static str, result: tarnlog::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            run.errors.push((name, error));
            None
        }
    }
}

/// Reopens with the real storage and checks the commits and the group.
fn verify(dir: &Path, run: &Run, violations: &mut Vec<String>) {
    let log = match open(dir, OsStorage::shared()) {
        Ok(log) => log,
        Err(e) => return violations.push(format!("reopen failed: {e:?}")),
    };
    for (tp, acked) in &run.acked {
        let attempted = run.attempted[tp];
        let end = log
            .topic(&tp.topic)
            .and_then(|t| t.partition(tp.partition))
            .map(|p| p.log_end_offset());
        match (log.committed_offset("g", tp), end) {
            (Ok(Some(c)), Ok(end)) if c.offset >= *acked && c.offset <= attempted.min(end) => {}
            (committed, end) => violations.push(format!(
                "{tp:?}: committed {committed:?} after acknowledging {acked} (attempted \
                 {attempted}), log end {end:?}"
            )),
        }
    }
    match log.describe_group("g") {
        Ok(d) if run.acked.is_empty() || d.state == GroupState::Empty => {}
        other => violations.push(format!("describe_group after reopen: {other:?}")),
    }
    if log.topic("jobs").is_ok() {
        let resumed = log.consumer(consumer_config()).and_then(|mut c| {
            c.subscribe(["jobs"])?;
            c.poll(Duration::from_millis(5))?;
            c.commit_sync()?;
            c.close()
        });
        if let Err(e) = resumed {
            violations.push(format!("a new member after reopen: {e:?}"));
        }
    }
    if let Err(e) = log.close() {
        violations.push(format!("close after reopen: {e:?}"));
    }
}

// Every counted storage call of a groups workload fails (EIO, ENOSPC; once and for good;
// then close or crash); prevents lost acknowledged commits, commits past the data, group
// metadata that cannot be read back, non-I/O errors and panics on the commit paths.
#[test]
fn countdown_fault_injection_over_groups() {
    let baseline = FaultStorage::new(OsStorage::shared());
    let dir = scratch();
    let run = workload(dir.path(), &baseline, false);
    assert!(run.errors.is_empty(), "unfaulted run: {:?}", run.errors);
    assert_eq!(run.acked.len(), PARTITIONS as usize);
    let mut violations = Vec::new();
    verify(dir.path(), &run, &mut violations);
    assert!(violations.is_empty(), "unfaulted run: {violations:?}");
    let k = baseline.ops();
    assert!(k > 10, "the workload makes storage calls ({k})");
    let (mut runs, mut injected_runs, mut failures) = (0, 0, Vec::new());
    for at in 1..=k {
        for kind in [FaultKind::Eio, FaultKind::NoSpace] {
            for persistent in [false, true] {
                for crash in [false, true] {
                    runs += 1;
                    let dir = scratch();
                    let fs = FaultStorage::new(OsStorage::shared());
                    fs.fail_at(at, kind, persistent);
                    let label =
                        format!("fail_at({at}, {kind:?}, persistent={persistent}, crash={crash})");
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        let run = workload(dir.path(), &fs, crash);
                        let mut violations = Vec::new();
                        for (name, e) in &run.errors {
                            if !matches!(e, Error::Io { .. } | Error::Poisoned { .. }) {
                                violations.push(format!("{name}: not an I/O error: {e:?}"));
                            }
                        }
                        if fs.injected() > 0 && run.errors.is_empty() {
                            violations.push("an injected fault surfaced nowhere".into());
                        }
                        verify(dir.path(), &run, &mut violations);
                        (fs.injected() > 0, violations)
                    }));
                    match outcome {
                        Ok((injected, mut violations)) => {
                            if !violations.is_empty() {
                                violations
                                    .push(format!("op {:?}", fs.op_log().get(at as usize - 1)));
                            }
                            injected_runs += u64::from(injected);
                            if !violations.is_empty() {
                                failures.push(format!("{label}: {}", violations.join("; ")));
                            }
                        }
                        Err(_) => failures.push(format!("{label}: PANIC")),
                    }
                }
            }
        }
    }
    eprintln!("group faults: {k} storage calls, {runs} runs, {injected_runs} with a fault");
    assert!(injected_runs > 0);
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
