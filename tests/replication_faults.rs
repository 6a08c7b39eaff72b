//! Countdown fault injection over a replicated workload: two storage directories, a topic
//! with replication factor 2 and `EveryBatch`, appends to every partition. Each counted
//! storage call fails once and for good (EIO, ENOSPC), then the log is closed or crashed and
//! reopened on the real storage, which must show:
//! - nothing panicked, and every error is `Io`, `Poisoned` or (both directories failed)
//!   `PartitionOffline`;
//! - every acknowledged batch at its offset, and nothing that was never attempted;
//! - after the reopen's reconciliation, both replicas of every partition byte-identical.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tarnlog::storage::{FaultKind, FaultStorage, OsStorage, Storage};
use tarnlog::{Error, FsyncPolicy, Log, TopicConfig};

const PARTITIONS: u32 = 2;
const BATCHES: usize = 6;

fn open(dirs: &[PathBuf], storage: Arc<dyn Storage>) -> tarnlog::Result<Log> {
    Log::builder().dirs(dirs).storage(storage).open()
}

fn value(p: u32, i: usize) -> String {
    format!("{p}-{i}")
}

#[derive(Debug, Default)]
struct Run {
    /// Acknowledged appends: (partition, batch number) → offset.
    acked: BTreeMap<(u32, usize), u64>,
    errors: Vec<(&'static str, Error)>,
}

fn workload(dirs: &[PathBuf], fs: &FaultStorage, crash: bool) -> Run {
    let mut run = Run::default();
    let log = match open(dirs, fs.shared()) {
        Ok(log) => log,
        Err(e) => {
            run.errors.push(("open", e));
            return run;
        }
    };
    let config = TopicConfig::default()
        .partitions(PARTITIONS)
        .replication_factor(2)
        .fsync(FsyncPolicy::EveryBatch);
    match log.create_topic("t", config) {
        Ok(topic) => {
            'work: for i in 0..BATCHES {
                for p in 0..PARTITIONS {
                    let appended = topic
                        .partition(p)
                        .and_then(|partition| partition.append_values([value(p, i)]));
                    match appended {
                        Ok(info) => {
                            run.acked.insert((p, i), info.base_offset);
                        }
                        Err(e) => {
                            run.errors.push(("append", e));
                            break 'work;
                        }
                    }
                }
            }
        }
        Err(e) => run.errors.push(("create_topic", e)),
    }
    if crash {
        log.simulate_crash();
    } else if let Err(e) = log.close() {
        run.errors.push(("close", e));
    }
    run
}

/// The `.log` files of partition `p` in each directory.
fn replica_bytes(dirs: &[PathBuf], p: u32) -> Vec<BTreeMap<String, Vec<u8>>> {
    dirs.iter()
        .map(|dir| {
            let path = dir.join(format!("t-{p}"));
            let mut out = BTreeMap::new();
            if let Ok(entries) = std::fs::read_dir(&path) {
                for entry in entries {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|e| e == "log") {
                        let name = path.file_name().unwrap().to_string_lossy().into_owned();
                        out.insert(name, std::fs::read(&path).unwrap());
                    }
                }
            }
            out
        })
        .collect()
}

fn verify(dirs: &[PathBuf], run: &Run, violations: &mut Vec<String>) {
    let log = match open(dirs, OsStorage::shared()) {
        Ok(log) => log,
        Err(e) => return violations.push(format!("reopen failed: {e:?}")),
    };
    if let Ok(topic) = log.topic("t") {
        for p in 0..PARTITIONS {
            let partition = topic.partition(p).unwrap();
            let mut found = BTreeMap::new();
            match partition.read(0, 1 << 20) {
                Ok(read) => {
                    for record in read.records() {
                        match record {
                            Ok(r) => {
                                let v = String::from_utf8_lossy(&r.value.unwrap()).into_owned();
                                found.insert(v, r.offset as u64);
                            }
                            Err(e) => violations.push(format!("partition {p}: {e:?}")),
                        }
                    }
                }
                Err(Error::OffsetOutOfRange { .. }) => {}
                Err(e) => violations.push(format!("partition {p}: read {e:?}")),
            }
            for ((q, i), offset) in &run.acked {
                if *q == p && found.get(&value(p, *i)) != Some(offset) {
                    violations.push(format!("partition {p}: acknowledged batch {i} lost"));
                }
            }
            for v in found.keys() {
                let known = (0..BATCHES).any(|i| *v == value(p, i));
                if !known {
                    violations.push(format!("partition {p}: phantom {v:?}"));
                }
            }
        }
    } else if !run.acked.is_empty() {
        violations.push("the topic is gone after reopen".into());
    }
    let exists = log.topic("t").is_ok();
    if let Err(e) = log.close() {
        violations.push(format!("close after reopen: {e:?}"));
    }
    // A topic whose creation failed may leave an unused directory behind (removed when the
    // name is created again); only a topic's real replicas must agree.
    for p in (0..PARTITIONS).filter(|_| exists) {
        let copies = replica_bytes(dirs, p);
        if copies[0] != copies[1] {
            let sizes = |c: &BTreeMap<String, Vec<u8>>| {
                c.iter()
                    .map(|(n, b)| format!("{n}:{}", b.len()))
                    .collect::<Vec<_>>()
            };
            violations.push(format!(
                "partition {p}: replicas differ after reconciliation: {:?} vs {:?}",
                sizes(&copies[0]),
                sizes(&copies[1])
            ));
        }
    }
}

// Every counted storage call of a replicated workload fails (EIO, ENOSPC; once and for
// good; then close or crash); prevents lost acknowledged batches, phantom batches, replicas
// left different after reopen, non-I/O errors and panics on the replication paths.
#[test]
fn countdown_fault_injection_over_replication() {
    let dirs_in = |root: &Path| vec![root.join("a"), root.join("b")];
    let baseline = FaultStorage::new(OsStorage::shared());
    let root = common::scratch("tarnlog-replication-faults-");
    let dirs = dirs_in(root.path());
    let run = workload(&dirs, &baseline, false);
    assert!(run.errors.is_empty(), "unfaulted run: {:?}", run.errors);
    assert_eq!(run.acked.len(), BATCHES * PARTITIONS as usize);
    let mut violations = Vec::new();
    verify(&dirs, &run, &mut violations);
    assert!(violations.is_empty(), "unfaulted run: {violations:?}");
    let k = baseline.ops();
    let (mut runs, mut failures) = (0, Vec::new());
    for at in 1..=k {
        for kind in [FaultKind::Eio, FaultKind::NoSpace] {
            for persistent in [false, true] {
                for crash in [false, true] {
                    runs += 1;
                    let root = common::scratch("tarnlog-replication-faults-");
                    let dirs = dirs_in(root.path());
                    let fs = FaultStorage::new(OsStorage::shared());
                    fs.fail_at(at, kind, persistent);
                    let label =
                        format!("fail_at({at}, {kind:?}, persistent={persistent}, crash={crash})");
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        let run = workload(&dirs, &fs, crash);
                        let mut violations = Vec::new();
                        for (name, e) in &run.errors {
                            let expected = matches!(
                                e,
                                Error::Io { .. }
                                    | Error::Poisoned { .. }
                                    | Error::PartitionOffline { .. }
                            );
                            if !expected {
                                violations.push(format!("{name}: not an I/O error: {e:?}"));
                            }
                        }
                        verify(&dirs, &run, &mut violations);
                        violations
                    }));
                    match outcome {
                        Ok(violations) if violations.is_empty() => {}
                        Ok(violations) => {
                            failures.push(format!("{label}: {}", violations.join("; ")));
                        }
                        Err(_) => failures.push(format!("{label}: PANIC")),
                    }
                }
            }
        }
    }
    eprintln!("replication faults: {k} storage calls, {runs} runs");
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
