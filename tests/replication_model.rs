//! Replication under random schedules (issue 5; the reliability plan's randomized
//! replication test): appends with `acks=all` interleaved with directory failures (EIO,
//! ENOSPC, read-only), one-off faults in the middle of an operation (EIO, short writes),
//! restores, clean and unclean reopens (some with directories still failed),
//! `delete_records` and retention passes, over three directories with replication factor 3
//! and `min_insync_replicas` 2. After every step, while the partition is online: every
//! acknowledged record below the high watermark reads back at its offset; every one is
//! below it whenever enough replicas are in sync; nothing below it is a record never sent
//! or a record twice. At the end, with every directory back, the
//! replicas hold byte-identical batches from the log start on.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
use tarnlog::{Error, FsyncPolicy, Log, TopicConfig, TopicPartition};

#[derive(Debug, Clone)]
enum Op {
    /// Append this many records in one batch.
    Append(usize),
    /// Every call under this directory fails from now on (EIO, ENOSPC), or every call that
    /// would change it (EROFS).
    Fail(usize, FaultKind),
    /// One of the next few counted storage calls, in whichever directory, fails once (EIO,
    /// or a write that stores a prefix): a fault in the middle of an operation.
    FaultSoon(u64, FaultKind),
    /// The directory works again and is restored into the running log.
    Restore(usize),
    /// The log is closed (or crashes) and reopens; with `heal` every directory works again
    /// first, else those the log took offline stay failed through the open.
    Reopen { clean: bool, heal: bool },
    /// `delete_records` up to this share (in 1/8ths) of the way from the log start to the
    /// high watermark.
    DeleteRecords(u64),
    /// A maintenance pass: retention (`retention_bytes`) deletes the oldest segments.
    Maintain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4).prop_map(Op::Append),
        2 => (0usize..3, prop_oneof![
            3 => Just(FaultKind::Eio),
            1 => Just(FaultKind::NoSpace),
            1 => Just(FaultKind::ReadOnly),
        ]).prop_map(|(i, kind)| Op::Fail(i, kind)),
        1 => (1u64..6, prop_oneof![Just(FaultKind::Eio), Just(FaultKind::ShortWrite)])
            .prop_map(|(k, kind)| Op::FaultSoon(k, kind)),
        2 => (0usize..3).prop_map(Op::Restore),
        1 => (any::<bool>(), proptest::bool::weighted(0.7))
            .prop_map(|(clean, heal)| Op::Reopen { clean, heal }),
        1 => (0u64..=8).prop_map(Op::DeleteRecords),
        1 => Just(Op::Maintain),
    ]
}

fn try_open(dirs: &[PathBuf], fault: &FaultStorage) -> tarnlog::Result<Log> {
    Log::builder().dirs(dirs).storage(fault.shared()).open()
}

fn open(dirs: &[PathBuf], fault: &FaultStorage) -> Log {
    try_open(dirs, fault).unwrap()
}

/// What the test knows of the partition.
#[derive(Default)]
struct Model {
    /// Acknowledged records: offset -> value.
    acked: BTreeMap<u64, String>,
    /// Every value ever sent, acknowledged or not.
    sent: BTreeSet<String>,
    /// The highest log start `delete_records` returned: records below it are gone.
    deleted_before: u64,
    /// Directories failed by the schedule and not yet healed.
    failed: [bool; 3],
    /// A one-off fault was planned since the last reopen (it may not have hit yet).
    fault_planned: bool,
    next_value: u64,
}

impl Model {
    /// Checks what the partition shows against the model; `Ok(false)` when it is offline.
    fn check(&self, log: &Log) -> Result<bool, String> {
        let described = log.describe_topic("t").map_err(|e| e.to_string())?;
        let p = &described.partitions[0];
        if p.leader.is_none() {
            // Offline: only when no in-sync replica is left (no unclean election) — or when
            // the one left had an fsync fail (a one-off fault may have hit one): its data is
            // never trusted again, so it cannot lead when its directory returns.
            if let Some(d) = p.isr.iter().find(|d| !p.offline_replicas.contains(d))
                && !self.fault_planned
            {
                return Err(format!("offline with in-sync replica {d} online: {p:?}"));
            }
            return Ok(false);
        }
        let partition = log.topic("t").unwrap().partition(0).unwrap();
        let (hw, end) = (partition.high_watermark(), partition.log_end_offset());
        let start = partition.log_start_offset();
        if start < self.deleted_before {
            return Err(format!(
                "log start {start} below {}, where delete_records moved it",
                self.deleted_before
            ));
        }
        // As Kafka's: a leader that came back from disk starts from its checkpointed high
        // watermark, which moves only with `min_insync_replicas` in sync.
        if let Some((&last, _)) = self.acked.last_key_value()
            && last >= hw
            && p.isr.len() >= 2
        {
            return Err(format!(
                "acked offset {last} at or above the high watermark {hw}"
            ));
        }
        if hw > end || hw < start {
            return Err(format!(
                "high watermark {hw} outside the log start {start} and end {end}"
            ));
        }
        // Clean elections only: the leader holds every acknowledged record, whatever the
        // high watermark says.
        if let Some((&last, _)) = self.acked.last_key_value()
            && last >= end
        {
            return Err(format!("acked offset {last} at or above the log end {end}"));
        }
        // Reads stop at the high watermark.
        let mut seen = BTreeSet::new();
        let mut offset = partition.log_start_offset();
        while offset < hw {
            let read = match partition.read(offset, 1 << 20) {
                Ok(read) => read,
                // Its last in-sync directory failed meanwhile (found by background work,
                // a checkpoint or a deletion): offline now, as `describe` must agree.
                Err(Error::PartitionOffline { .. })
                    if log
                        .describe_topic("t")
                        .is_ok_and(|d| d.partitions[0].leader.is_none()) =>
                {
                    return Ok(false);
                }
                Err(e) => {
                    return Err(format!(
                        "read at {offset} below the high watermark {hw}: {e}"
                    ));
                }
            };
            if read.is_empty() {
                return Err(format!(
                    "empty read at {offset} below the high watermark {hw}"
                ));
            }
            for record in read.records() {
                let record = record.map_err(|e| e.to_string())?;
                let at = record.offset as u64;
                if at >= hw {
                    break;
                }
                let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                if !self.sent.contains(&value) {
                    return Err(format!("offset {at}: {value} was never sent"));
                }
                if !seen.insert(value.clone()) {
                    return Err(format!("offset {at}: {value} a second time"));
                }
                if let Some(expected) = self.acked.get(&at)
                    && *expected != value
                {
                    return Err(format!("offset {at}: {value}, acked {expected}"));
                }
                offset = at + 1;
            }
        }
        for (at, value) in self.acked.range(start..hw) {
            if !seen.contains(value) {
                return Err(format!(
                    "acked {value} at {at} is gone (high watermark {hw})"
                ));
            }
        }
        Ok(true)
    }
}

/// The batches of `t-0` in each directory that hold an offset at or above `start`, each
/// with its bytes, in the order of the `.log` files. Below the log start replicas may
/// differ: one rebuilt after `delete_records` starts at the batch holding the log start.
fn batches_from(dirs: &[PathBuf], start: u64) -> Vec<Vec<Vec<u8>>> {
    dirs.iter()
        .map(|d| {
            let mut names: Vec<PathBuf> = std::fs::read_dir(d.join("t-0"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "log"))
                .collect();
            names.sort();
            let mut out = Vec::new();
            for name in names {
                let bytes = std::fs::read(&name).unwrap();
                let mut at = 0;
                while at + 61 <= bytes.len() {
                    let field = |from: usize, n: usize| &bytes[at + from..at + from + n];
                    let len = 12 + u32::from_be_bytes(field(8, 4).try_into().unwrap()) as usize;
                    let base = u64::from_be_bytes(field(0, 8).try_into().unwrap());
                    let delta = u32::from_be_bytes(field(23, 4).try_into().unwrap());
                    if base + u64::from(delta) >= start {
                        out.push(bytes[at..at + len].to_vec());
                    }
                    at += len;
                }
            }
            out
        })
        .collect()
}

/// Runs one step of the schedule.
fn apply(
    op: &Op,
    log: &Log,
    dirs: &[PathBuf],
    fault: &FaultStorage,
    model: &mut Model,
) -> Result<(), String> {
    match op {
        Op::Append(n) => {
            let values: Vec<String> = (0..*n)
                .map(|i| format!("v{}-{i}", model.next_value))
                .collect();
            model.next_value += 1;
            model.sent.extend(values.iter().cloned());
            let partition = log.topic("t").unwrap().partition(0).unwrap();
            match partition.append_values(values.iter().map(String::as_bytes)) {
                Ok(info) => {
                    for (i, value) in values.into_iter().enumerate() {
                        let at = info.base_offset + i as u64;
                        if let Some(old) = model.acked.insert(at, value) {
                            return Err(format!("offset {at} acknowledged again (was {old})"));
                        }
                    }
                }
                // With every directory working and online, an append must go through.
                Err(error)
                    if !model.failed.iter().any(|&f| f)
                        && !model.fault_planned
                        && log.dir_status().iter().all(|d| d.online) =>
                {
                    return Err(format!(
                        "append failed with every directory healthy: {error}"
                    ));
                }
                // Refused or not acknowledged: the records may or may not be there.
                Err(
                    Error::NotEnoughReplicas { .. }
                    | Error::NotEnoughReplicasAfterAppend { .. }
                    | Error::Io { .. }
                    | Error::Poisoned { .. }
                    | Error::PartitionOffline { .. },
                ) => {}
                Err(error) => return Err(format!("append failed: {error}")),
            }
        }
        Op::Fail(i, kind) => {
            fault.fail_dir(&dirs[*i], *kind);
            model.failed[*i] = true;
        }
        Op::FaultSoon(k, kind) => {
            fault.fail_at(fault.ops() + k, *kind, false);
            model.fault_planned = true;
        }
        Op::DeleteRecords(eighths) => {
            let partition = log.topic("t").unwrap().partition(0).unwrap();
            let (start, hw) = (partition.log_start_offset(), partition.high_watermark());
            let before = start + (hw.saturating_sub(start)) * eighths / 8;
            match log.delete_records(&TopicPartition::new("t", 0), before) {
                Ok(start) => {
                    if start != before {
                        return Err(format!("delete_records to {before} gave {start}"));
                    }
                    model.deleted_before = model.deleted_before.max(start);
                }
                Err(Error::Io { .. } | Error::Poisoned { .. } | Error::PartitionOffline { .. }) => {
                }
                Err(error) => return Err(format!("delete_records failed: {error}")),
            }
        }
        Op::Restore(i) => {
            fault.heal_dir(&dirs[*i]);
            model.failed[*i] = false;
            let online = log.dir_status()[*i].online;
            if !online {
                // Accepted failures: a planned one-off fault may hit the restore itself;
                // and, documented, a directory whose `meta` is newer than the log's (it
                // failed after the log's others, which an open without it could not see)
                // needs a reopen and stays offline until then. (A rebuild cut short by a
                // fault once left a recovery point above its data, `Corruption` at the next
                // restore; the checkpoint is now lowered before any rebuild.)
                match log.restore_dir(&dirs[*i]) {
                    Err(Error::Io { .. } | Error::Poisoned { .. }) if model.fault_planned => {}
                    Ok(()) | Err(Error::InvalidConfig { field: "dir", .. }) => {}
                    Err(e) => return Err(format!("restore failed: {e}")),
                }
            }
        }
        Op::Maintain => {
            // What retention deleted must stay deleted; a pass that failed may or may not
            // have moved the start.
            if log.maintain().is_ok()
                && let Ok(described) = log.describe_topic("t")
                && described.partitions[0].leader.is_some()
            {
                let start = described.partitions[0].log_start_offset;
                model.deleted_before = model.deleted_before.max(start);
            }
        }
        Op::Reopen { .. } => unreachable!("`run` reopens"),
    }
    Ok(())
}

fn run(ops: &[Op], fsync: FsyncPolicy, root: &Path) -> Result<(), String> {
    let dirs: Vec<PathBuf> = (0..3).map(|i| root.join(format!("d{i}"))).collect();
    let fault = FaultStorage::new(OsStorage::shared());
    let mut log = open(&dirs, &fault);
    let config = TopicConfig::default()
        .replication_factor(3)
        .min_insync_replicas(2)
        .segment_bytes(256)
        .retention_bytes(512)
        .fsync(fsync);
    log.create_topic("t", config).unwrap();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let at = |what: String| format!("step {step} ({op:?}): {what}");
        if let Op::Reopen { clean, heal } = op {
            fault.heal();
            model.fault_planned = false;
            // Without `heal`, only directories the log already took offline stay failed, and
            // none when every one is offline: one it still counts online holds the newest
            // `meta`, and opening without it is the double failure DESIGN.md leaves
            // unhandled (an older `meta` can elect a replica that lacks acknowledged
            // records or a deletion).
            let status = log.dir_status();
            let none_online = status.iter().all(|d| !d.online);
            for (i, dir) in dirs.iter().enumerate() {
                if *heal || status[i].online || none_online {
                    fault.heal_dir(dir);
                    model.failed[i] = false;
                }
            }
            if *clean {
                // A close may meet a directory that failed and was not restored.
                let _ = log.close();
            } else {
                log.simulate_crash();
            }
            log = match try_open(&dirs, &fault) {
                Ok(log) => log,
                // Refused with failed directories (all of them, say): they are mended.
                Err(_) if model.failed.iter().any(|&f| f) => {
                    for dir in &dirs {
                        fault.heal_dir(dir);
                    }
                    model.failed = [false; 3];
                    open(&dirs, &fault)
                }
                Err(error) => return Err(at(format!("reopen failed: {error}"))),
            };
            // The schedule never forks a history (no double failure): none is found.
            if !log.recovery_report().diverged.is_empty() {
                return Err(at(format!(
                    "a history taken for forked: {:?}",
                    log.recovery_report()
                )));
            }
        } else {
            apply(op, &log, &dirs, &fault, &mut model).map_err(at)?;
        }
        model.check(&log).map_err(at)?;
    }
    // Everything back: every directory restored, then a clean reopen reconciles them all.
    fault.heal();
    for dir in &dirs {
        fault.heal_dir(dir);
    }
    let _ = log.close();
    let log = open(&dirs, &fault);
    if !model.check(&log).map_err(|e| format!("at the end: {e}"))? {
        return Err("offline at the end, with every directory back".into());
    }
    let described = log.describe_topic("t").unwrap();
    if described.under_replicated().count() != 0 {
        return Err(format!("under-replicated at the end: {described:?}"));
    }
    let start = log
        .topic("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .log_start_offset();
    log.close().unwrap();
    // Nor did a restore or the last open take one for forked.
    for dir in &dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name();
            if name.to_string_lossy().contains(".diverged") {
                return Err(format!("{} set aside in {}", name.display(), dir.display()));
            }
        }
    }
    let copies = batches_from(&dirs, start);
    for (i, copy) in copies.iter().enumerate().skip(1) {
        if *copy != copies[0] {
            return Err(format!(
                "replica d{i} differs from d0 from the log start {start}: {} against {} batches",
                copy.len(),
                copies[0].len()
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_failures_restores_and_reopens_lose_no_acknowledged_record(
        ops in proptest::collection::vec(op(), 1..40),
        synced in any::<bool>(),
    ) {
        let root = common::scratch("tarnlog-replication-model-");
        let fsync = if synced { FsyncPolicy::EveryBatch } else { FsyncPolicy::None };
        if let Err(what) = run(&ops, fsync, root.path()) {
            let kept = root.keep();
            prop_assert!(false, "{what}\n(directories kept: {})", kept.display());
        }
    }
}
