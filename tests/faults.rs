//! SQLite-style countdown fault injection: a fixed workload is run once to count its K
//! counted storage calls, then once per (call n, fault kind, one-shot/persistent) with that
//! call failing. The directory is then reopened with the real storage and checked: every
//! fault surfaced as an `Err`, no acknowledged record lost, no phantom record, a failed
//! fsync poisons, nothing panics.
//!
//! Error policy of the workload, per run kind (9 runs per counted call):
//! - one-shot, continue + `close()`: every step is attempted after the error (a failed
//!   `create_topic` is retried once), so appends acknowledged *after* a one-shot fault
//!   must survive too, and the clean-shutdown path runs after the fault;
//! - one-shot, stop at the first error + `simulate_crash()`: the unclean recovery path;
//! - persistent (a dead device), continue + `simulate_crash()`.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tarnlog::storage::{FaultKind, FaultStorage, OpKind, OsStorage};
use tarnlog::{Error, FsyncPolicy, Log, ManualClock, TopicConfig};

const TOPIC: &str = "t";
const APPENDS: usize = 60;
const PARTITIONS: u32 = 2;

fn topic_config() -> TopicConfig {
    TopicConfig::default()
        .partitions(PARTITIONS)
        .segment_bytes(2048)
        .segment_index_bytes(4096)
        .index_interval_bytes(256)
        .fsync(FsyncPolicy::EveryBatch)
}

/// The workload's topic: `EveryBatch` writes appends with `pwritev`; with `mapped`, a
/// policy that syncs rarely (`IntervalMs` on a clock that stands still: at rolls, flushes and
/// close) stores them
/// through the mapping instead, so both write paths meet every fault.
fn workload_config(mapped: bool) -> TopicConfig {
    if mapped {
        topic_config().fsync(FsyncPolicy::IntervalMs(3_600_000))
    } else {
        topic_config()
    }
}

/// The values of append attempt `i` (to partition `i % 2`): 1..=3 values of 40..120 bytes,
/// each starting with `a<attempt>r<index>-` so that a record found on disk names its origin.
fn values(i: usize) -> Vec<Vec<u8>> {
    (0..=i % 3)
        .map(|j| {
            let len = 40 + (i * 37 + j * 11) % 80;
            let mut v = format!("a{i:04}r{j}-").into_bytes();
            while v.len() < len {
                v.push(b'a' + ((v.len() + i) % 26) as u8);
            }
            v
        })
        .collect()
}

/// The (attempt, index) a value was made for, when it is one of ours.
fn origin(value: &[u8]) -> Option<(usize, usize)> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix('a')?;
    let (attempt, rest) = rest.split_at_checked(4)?;
    let rest = rest.strip_prefix('r')?;
    let (index, _) = rest.split_once('-')?;
    let (attempt, index): (usize, usize) = (attempt.parse().ok()?, index.parse().ok()?);
    (values(attempt).get(index)?.as_slice() == value).then_some((attempt, index))
}

fn scratch() -> tempfile::TempDir {
    common::scratch("tarnlog-faults-")
}

/// How a faulted run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Every step is attempted, then `close()`.
    Close,
    /// The workload stops at its first error, then `simulate_crash()`.
    CrashAtFirstError,
    /// Every step is attempted, then `simulate_crash()` (a dead device: nothing to close).
    Crash,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    at: u64,
    kind: FaultKind,
    persistent: bool,
    ending: Ending,
    /// Appends stored through the mapping rather than written (see `workload_config`).
    mapped: bool,
}

impl Plan {
    fn hits(&self, n: u64) -> bool {
        n == self.at || (self.persistent && n > self.at)
    }
}

/// What one workload run did.
#[derive(Debug, Default)]
struct Run {
    /// Acknowledged appends: (attempt, base offset).
    acked: Vec<(usize, u64)>,
    topic_created: bool,
    /// Every `Err` an API call returned: (step, error).
    errors: Vec<(String, Error)>,
    violations: Vec<String>,
}

/// Whether a planned fault has hit a `Sync` call so far (the directory must be poisoned;
/// not by an interruption, which is made again).
fn sync_fault_seen(fs: &FaultStorage, plan: Option<Plan>) -> bool {
    let Some(plan) = plan else { return false };
    plan.kind != FaultKind::Interrupted
        && fs.injected() > 0
        && fs
            .op_log()
            .iter()
            .any(|&(n, kind)| kind == OpKind::Sync && plan.hits(n))
}

fn workload(dir: &Path, fs: &FaultStorage, plan: Option<Plan>) -> Run {
    let mut run = Run::default();
    let ending = plan.map_or(Ending::Close, |p| p.ending);
    // In `CrashAtFirstError` runs, no call is made after the first error.
    let go_on = |run: &Run| ending != Ending::CrashAtFirstError || run.errors.is_empty();
    // A manual clock: timestamps decide time-index entries, so the call count must not
    // depend on the wall clock.
    let clock = ManualClock::new(1_700_000_000_000);
    let log = match Log::builder()
        .dir(dir)
        .storage(fs.shared())
        .clock(Arc::new(clock.clone()))
        .open()
    {
        Ok(log) => log,
        Err(e) => {
            run.errors.push(("open".into(), e));
            return run;
        }
    };
    let mut topic = None;
    for attempt in 0..2 {
        if !go_on(&run) {
            break;
        }
        let poisoned = sync_fault_seen(fs, plan);
        match log.create_topic(TOPIC, workload_config(plan.is_some_and(|p| p.mapped))) {
            Ok(t) => {
                if poisoned {
                    run.violations
                        .push("create_topic succeeded on a poisoned directory".into());
                }
                topic = Some(t);
                break;
            }
            Err(e) => {
                if poisoned && !matches!(e, Error::Poisoned { .. }) {
                    run.violations
                        .push(format!("create_topic after a failed fsync: {e:?}"));
                }
                run.errors.push((format!("create_topic#{attempt}"), e));
            }
        }
    }
    run.topic_created = topic.is_some();
    if let Some(topic) = &topic {
        let partitions: Vec<_> = (0..PARTITIONS)
            .map(|p| topic.partition(p).unwrap())
            .collect();
        for i in 0..APPENDS {
            if !go_on(&run) {
                break;
            }
            clock.advance(1);
            let poisoned = sync_fault_seen(fs, plan);
            match partitions[i % 2].append_values(values(i)) {
                Ok(info) => {
                    if poisoned {
                        run.violations
                            .push(format!("append {i} acknowledged after a failed fsync"));
                    }
                    run.acked.push((i, info.base_offset));
                }
                Err(e) => {
                    if poisoned && !matches!(e, Error::Poisoned { .. }) {
                        run.violations
                            .push(format!("append {i} after a failed fsync: {e:?}"));
                    }
                    run.errors.push((format!("append {i}"), e));
                }
            }
        }
    }
    if go_on(&run)
        && let Err(e) = log.flush()
    {
        run.errors.push(("flush".into(), e));
    }
    drop(topic);
    if ending == Ending::Close {
        if let Err(e) = log.close() {
            run.errors.push(("close".into(), e));
        }
    } else {
        log.simulate_crash();
    }
    run
}

/// Every record of every partition, read batch by batch: per partition (offset, attempt, index).
type Contents = Vec<Vec<(u64, usize, usize)>>;

/// Reads everything back; a hole, a foreign record or a read error is a violation.
fn read_all(log: &Log, violations: &mut Vec<String>) -> Option<Contents> {
    let topic = match log.topic(TOPIC) {
        Ok(t) => t,
        Err(Error::UnknownTopic { .. }) => return None,
        Err(e) => {
            violations.push(format!("topic() after reopen: {e:?}"));
            return None;
        }
    };
    let mut all = Vec::new();
    for p in 0..topic.partitions() {
        let partition = topic.partition(p).unwrap();
        let mut records = Vec::new();
        let end = partition.log_end_offset();
        let mut next = partition.log_start_offset();
        if next != 0 {
            violations.push(format!("partition {p}: log start {next}, expected 0"));
        }
        while next < end {
            let read = match partition.read(next, 1 << 20) {
                Ok(read) => read,
                Err(e) => {
                    violations.push(format!("partition {p}: read({next}): {e:?}"));
                    break;
                }
            };
            let before = next;
            for record in read.records() {
                match record {
                    Ok(r) => {
                        let offset = r.offset as u64;
                        if offset != next {
                            violations.push(format!(
                                "partition {p}: offset {offset} where {next} was expected"
                            ));
                        }
                        let value = r.value.as_deref().unwrap_or_default();
                        match origin(value) {
                            Some((a, j)) => records.push((offset, a, j)),
                            None => violations.push(format!(
                                "partition {p} offset {offset}: phantom value {:?}",
                                String::from_utf8_lossy(value)
                            )),
                        }
                        next = offset + 1;
                    }
                    Err(e) => {
                        violations.push(format!("partition {p}: record near {next}: {e:?}"));
                        break;
                    }
                }
            }
            if next == before {
                violations.push(format!(
                    "partition {p}: read({next}) returned nothing below the log end {end}"
                ));
                break;
            }
        }
        all.push(records);
    }
    Some(all)
}

/// Counts of lost acknowledged batches and phantom records in `contents`.
fn check_contents(run: &Run, contents: &Contents, violations: &mut Vec<String>) -> (u64, u64) {
    let mut phantom = 0;
    for (p, records) in contents.iter().enumerate() {
        // Whole attempts, in attempt order, each complete.
        let mut k = 0;
        let mut last_attempt = None;
        while k < records.len() {
            let (offset, attempt, index) = records[k];
            let count = values(attempt).len();
            let whole = attempt % 2 == p
                && index == 0
                && last_attempt.is_none_or(|l| attempt > l)
                && (0..count).all(|j| {
                    records
                        .get(k + j)
                        .is_some_and(|r| r.1 == attempt && r.2 == j)
                });
            if !whole {
                phantom += 1;
                violations.push(format!(
                    "partition {p} offset {offset}: attempt {attempt} record {index} is out of \
                     order, partial or misplaced"
                ));
                k += 1;
                continue;
            }
            last_attempt = Some(attempt);
            k += count;
        }
    }
    let mut lost = 0;
    for &(attempt, base) in &run.acked {
        let records = &contents[attempt % 2];
        let present = (0..values(attempt).len()).all(|j| {
            records
                .iter()
                .any(|&(o, a, i)| o == base + j as u64 && a == attempt && i == j)
        });
        if !present {
            lost += 1;
            violations.push(format!(
                "acknowledged attempt {attempt} at offset {base} is lost or changed"
            ));
        }
    }
    (lost, phantom)
}

/// Reopens with the real storage, checks, appends one more batch to each partition, closes,
/// reopens once more and checks that nothing moved.
fn verify(dir: &Path, run: &Run, violations: &mut Vec<String>) -> (u64, u64) {
    let log = match Log::open(dir) {
        Ok(log) => log,
        Err(e) => {
            violations.push(format!("reopen failed: {e:?}"));
            return (run.acked.len() as u64, 0);
        }
    };
    let Some(mut contents) = read_all(&log, violations) else {
        if run.topic_created {
            violations.push("the acknowledged topic is gone after reopen".into());
        }
        let _ = log.close();
        return (run.acked.len() as u64, 0);
    };
    let counts = check_contents(run, &contents, violations);
    let topic = log.topic(TOPIC).unwrap();
    for (p, records) in contents.iter_mut().enumerate() {
        let partition = topic.partition(p as u32).unwrap();
        let end = partition.log_end_offset();
        let marker = 1000 + p;
        match partition.append_values(values(marker)) {
            Ok(info) if info.base_offset == end => {
                records.extend((0..values(marker).len()).map(|j| (end + j as u64, marker, j)));
            }
            Ok(info) => violations.push(format!(
                "partition {p}: append after reopen got offset {}, log end was {end}",
                info.base_offset
            )),
            Err(e) => violations.push(format!("partition {p}: append after reopen: {e:?}")),
        }
    }
    drop(topic);
    if let Err(e) = log.close() {
        violations.push(format!("close after reopen: {e:?}"));
    }
    match Log::open(dir) {
        Ok(log) => {
            let again = read_all(&log, violations);
            if again.as_ref() != Some(&contents) {
                violations.push("a second reopen shows different records".into());
            }
            let _ = log.close();
        }
        Err(e) => violations.push(format!("second reopen failed: {e:?}")),
    }
    counts
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records panics of quiet threads instead of printing them; others print as usual.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if QUIET.with(Cell::get) {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
        } else {
            previous(info);
        }
    }));
}

fn errno(kind: FaultKind) -> i32 {
    match kind {
        FaultKind::NoSpace => libc::ENOSPC,
        FaultKind::Eio | FaultKind::ShortWrite | FaultKind::FailedWriteback => libc::EIO,
        FaultKind::ReadOnly => libc::EROFS,
        FaultKind::Interrupted => libc::EINTR,
        FaultKind::Abort => unreachable!("these tests plan errors, not crashes"),
    }
}

#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    injected_runs: u64,
    injected_faults: u64,
    surfaced: u64,
    absorbed: u64,
    lost: u64,
    phantom: u64,
    panics: u64,
    failures: Vec<String>,
}

fn one_run(plan: Plan, k: u64, totals: &mut Totals) {
    let dir = scratch();
    let fs = FaultStorage::new(OsStorage::shared());
    fs.fail_at(plan.at, plan.kind, plan.persistent);
    QUIET.with(|q| q.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut run = workload(dir.path(), &fs, Some(plan));
        let mut violations = std::mem::take(&mut run.violations);
        let injected = fs.injected();
        let op_kind = fs.op_log().get(plan.at as usize - 1).map(|&(_, kind)| kind);
        if injected == 0 && !run.errors.is_empty() {
            violations.push(format!("error without an injected fault: {:?}", run.errors));
        }
        if plan.kind == FaultKind::Interrupted && !plan.persistent && !run.errors.is_empty() {
            violations.push(format!(
                "a one-off interruption was not made again: {:?}",
                run.errors
            ));
        }
        let mut absorbed = false;
        if injected > 0 && run.errors.is_empty() {
            // A one-shot short `write_at` is a legal short write: `write_all_at` retries the
            // rest with one more call, and nothing is wrong.
            absorbed = plan.kind == FaultKind::ShortWrite
                && !plan.persistent
                && op_kind == Some(OpKind::Write)
                && fs.op_log().get(plan.at as usize).map(|&(_, k)| k) == Some(OpKind::Write)
                && fs.ops() == k + 1;
            // A one-shot EINTR: the call is made again (`storage::retry`), once more.
            absorbed |=
                plan.kind == FaultKind::Interrupted && !plan.persistent && fs.ops() == k + 1;
            if !absorbed {
                violations.push(format!("{injected} injected fault(s) surfaced nowhere"));
            }
        }
        match run.errors.first() {
            Some((step, Error::Io { source, .. }))
                if source.raw_os_error() != Some(errno(plan.kind)) =>
            {
                violations.push(format!(
                    "first error ({step}) lost the injected errno: {source:?}"
                ));
            }
            Some((_, Error::Io { .. })) | None => {}
            Some((step, e)) => violations.push(format!("first error ({step}) is not Io: {e:?}")),
        }
        for (step, e) in &run.errors {
            if !matches!(e, Error::Io { .. } | Error::Poisoned { .. }) {
                violations.push(format!("{step}: unexpected error variant {e:?}"));
            }
        }
        let (lost, phantom) = verify(dir.path(), &run, &mut violations);
        (
            injected,
            !run.errors.is_empty(),
            absorbed,
            lost,
            phantom,
            violations,
        )
    }));
    QUIET.with(|q| q.set(false));
    totals.runs += 1;
    let label = format!(
        "fail_at({}, {:?}, persistent={}) then {:?} [op {:?}]",
        plan.at,
        plan.kind,
        plan.persistent,
        plan.ending,
        fs.op_log().get(plan.at as usize - 1).map(|&(_, k)| k)
    );
    if let Ok((injected, surfaced, absorbed, lost, phantom, violations)) = outcome {
        if injected > 0 {
            totals.injected_runs += 1;
            totals.injected_faults += injected;
        }
        totals.surfaced += u64::from(surfaced);
        totals.absorbed += u64::from(absorbed);
        totals.lost += lost;
        totals.phantom += phantom;
        if !violations.is_empty() {
            totals
                .failures
                .push(format!("{label}: {}", violations.join("; ")));
        }
    } else {
        totals.panics += 1;
        let message = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        totals.failures.push(format!("{label}: PANIC {message}"));
    }
}

// Every counted storage call of a fixed workload fails once and persistently with EIO, ENOSPC
// and a short write; prevents swallowed I/O errors, lost acknowledged or phantom records after
// a fault, writes acknowledged after a failed fsync, and panics on error paths.
#[test]
fn countdown_fault_injection() {
    countdown(false);
}

/// The same with appends stored through the mapping.
#[test]
fn countdown_fault_injection_mapped_stores() {
    countdown(true);
}

/// The kinds a countdown injects: EINTR one-off only (a persistent one fails as an
/// ordinary error once the calls made again run out).
fn fault_kinds(persistent: bool) -> Vec<FaultKind> {
    let mut kinds = vec![FaultKind::Eio, FaultKind::NoSpace, FaultKind::ShortWrite];
    if !persistent {
        kinds.push(FaultKind::Interrupted);
    }
    kinds
}

fn countdown(mapped: bool) {
    install_panic_hook();
    let started = Instant::now();
    let baseline = |fs: &FaultStorage, ending: Ending| {
        let dir = scratch();
        let plan = Plan {
            at: u64::MAX,
            kind: FaultKind::Eio,
            persistent: false,
            ending,
            mapped,
        };
        let run = workload(dir.path(), fs, Some(plan));
        assert!(
            run.errors.is_empty(),
            "unfaulted run failed: {:?}",
            run.errors
        );
        assert_eq!(run.acked.len(), APPENDS);
        let mut violations = Vec::new();
        let (lost, phantom) = verify(dir.path(), &run, &mut violations);
        assert!(
            violations.is_empty() && lost == 0 && phantom == 0,
            "{violations:#?}"
        );
        fs.ops()
    };
    let first = FaultStorage::new(OsStorage::shared());
    let k = baseline(&first, Ending::Close);
    let second = FaultStorage::new(OsStorage::shared());
    assert_eq!(
        baseline(&second, Ending::Close),
        k,
        "the workload must be deterministic"
    );
    let k_crash = baseline(&FaultStorage::new(OsStorage::shared()), Ending::Crash);
    let kinds = first
        .op_log()
        .iter()
        .fold([0u32; 5], |mut acc, &(_, kind)| {
            acc[kind as usize] += 1;
            acc
        });
    println!(
        "faults: workload of {k} counted calls (write, resize, sync, rename, remove) = {kinds:?}"
    );

    let mut totals = Totals::default();
    let modes = [
        (false, Ending::Close),
        (false, Ending::CrashAtFirstError),
        (true, Ending::Crash),
    ];
    for (persistent, ending) in modes {
        for kind in fault_kinds(persistent) {
            for at in 1..=k {
                let plan = Plan {
                    at,
                    kind,
                    persistent,
                    ending,
                    mapped,
                };
                let unfaulted = if ending == Ending::Close { k } else { k_crash };
                one_run(plan, unfaulted, &mut totals);
            }
        }
    }
    let mut summary = String::new();
    let _ = write!(
        summary,
        "faults (mapped: {mapped}): K={k} ops, {} runs (11*K), injected {} ({} faults), surfaced {} (+{} short \
         writes and interruptions retried), {} lost, {} phantom, {} panics, {} failing runs, {:.1} s",
        totals.runs,
        totals.injected_runs,
        totals.injected_faults,
        totals.surfaced,
        totals.absorbed,
        totals.lost,
        totals.phantom,
        totals.panics,
        totals.failures.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{summary}");
    for failure in totals.failures.iter().take(40) {
        let short: String = failure.chars().take(400).collect();
        println!("  {short}");
    }
    assert!(
        totals.failures.is_empty(),
        "{summary}\nfirst failures:\n{}",
        totals
            .failures
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(totals.surfaced + totals.absorbed, totals.injected_runs);
}

// A close that fails (here: a failed fsync) must still release the directory's LOCK, so the
// documented remedy "reopen the log" works while old handles are alive; prevents a leaked lock.
#[test]
fn failed_close_releases_the_lock() {
    let dir = scratch();
    let fs = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dir(dir.path())
        .storage(fs.shared())
        .open()
        .unwrap();
    let partition = log
        .create_topic(TOPIC, topic_config())
        .unwrap()
        .partition(0)
        .unwrap();
    partition.append_values(values(0)).unwrap();
    // Every later sync fails: close cannot succeed.
    fs.fail_at(fs.ops() + 1, FaultKind::Eio, true);
    let err = log.close().unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::Poisoned { .. }),
        "{err:?}"
    );
    assert!(matches!(
        partition.append_values(values(2)),
        Err(Error::Closed)
    ));
    let reopened = Log::open(dir.path());
    assert!(
        reopened.is_ok(),
        "reopen after a failed close while a handle is alive: {:?}",
        reopened.err()
    );
    drop(partition);
    let log = reopened.unwrap();
    let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
    assert_eq!(p.log_end_offset(), 1);
    drop(p);
    log.close().unwrap();
}

/// A one-partition log on a fault storage whose 2048-byte active segment holds two ~670-byte
/// batches (offsets 0 and 1): an 800-byte value must roll a new segment, a small one fits.
fn nearly_full_segment(dir: &Path) -> (FaultStorage, Log, tarnlog::Partition) {
    let fs = FaultStorage::new(OsStorage::shared());
    let log = Log::builder().dir(dir).storage(fs.shared()).open().unwrap();
    let config = TopicConfig::default().segment_bytes(2048);
    let partition = log
        .create_topic(TOPIC, config)
        .unwrap()
        .partition(0)
        .unwrap();
    for i in 0..2u8 {
        assert_eq!(
            partition
                .append_values([vec![b'a' + i; 600]])
                .unwrap()
                .base_offset,
            u64::from(i)
        );
    }
    assert_eq!(partition.segment_count(), 1);
    (fs, log, partition)
}

/// Every record of partition 0 as (offset, value length, first byte), read segment by segment.
fn all_values(log: &Log) -> tarnlog::Result<Vec<(u64, usize, u8)>> {
    let partition = log.topic(TOPIC)?.partition(0)?;
    let mut out = Vec::new();
    let mut next = partition.log_start_offset();
    while next < partition.log_end_offset() {
        let read = partition.read(next, 1 << 20)?;
        let before = next;
        for record in read.records() {
            let record = record?;
            next = record.offset as u64 + 1;
            let value = record.value.unwrap_or_default();
            out.push((
                record.offset as u64,
                value.len(),
                value.first().copied().unwrap_or(0),
            ));
        }
        assert!(next > before, "read({next}) is empty below the log end");
    }
    Ok(out)
}

// A roll that fails (ENOSPC creating the next segment) and then a crash: recovery must keep
// the full segment readable; prevents recovery sealing a segment with its preallocated zero
// tail, which makes every read of it fail with Corruption.
#[test]
fn crash_after_failed_roll_keeps_segment_readable() {
    let dir = scratch();
    let (fs, log, partition) = nearly_full_segment(dir.path());
    fs.fail_at(fs.ops() + 1, FaultKind::NoSpace, false);
    let err = partition.append_values([vec![b'x'; 800]]).unwrap_err();
    assert!(err.is_disk_full(), "{err:?}");
    drop(partition);
    log.simulate_crash();
    let log = Log::open(dir.path()).unwrap();
    let values = all_values(&log);
    assert!(
        values.as_ref().is_ok_and(|v| v.len() == 2),
        "acknowledged records after recovery: {values:?}",
    );
    log.close().unwrap();
}

// A roll that fails once, then a smaller append that still fits the old segment, then a clean
// close: the record must survive the reopen; prevents a leftover empty segment file of the
// failed roll shadowing acknowledged offsets.
#[test]
fn failed_roll_then_fitting_append_survives_clean_close() {
    let dir = scratch();
    let (fs, log, partition) = nearly_full_segment(dir.path());
    fs.fail_at(fs.ops() + 1, FaultKind::NoSpace, false);
    partition.append_values([vec![b'x'; 800]]).unwrap_err();
    let info = partition.append_values([b"small".to_vec()]).unwrap();
    assert_eq!(info.base_offset, 2);
    drop(partition);
    log.close().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let end = log
        .topic(TOPIC)
        .unwrap()
        .partition(0)
        .unwrap()
        .log_end_offset();
    let values = all_values(&log);
    assert!(
        end == 3
            && values
                .as_ref()
                .is_ok_and(|v| v.len() == 3 && v[2] == (2, 5, b's')),
        "log end {end} after reopen, records {values:?}"
    );
    log.close().unwrap();
}

/// The values of partition 0 of `t`, in offset order, read without a consumer.
fn partition_values(log: &Log) -> Vec<(u64, String)> {
    let partition = log.topic("t").unwrap().partition(0).unwrap();
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    while offset < partition.log_end_offset() {
        let read = partition.read(offset, 1 << 20).unwrap();
        let before = offset;
        for batch in read.batches() {
            for record in batch.unwrap().records() {
                let record = record.unwrap();
                let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                out.push((record.offset as u64, value));
                offset = record.offset as u64 + 1;
            }
        }
        assert!(offset > before, "no progress reading at {before}");
    }
    out
}

/// A truncation that fails part way (an I/O error or a full disk at each of its steps in
/// turn) never leaves the log taking appends it would lose: the records below the cut
/// survive, and an append acknowledged after the failure is there at its offset when the
/// log is opened again (before, a failure after the later segments were removed let
/// appends go on into the removed files, acknowledged and then gone).
#[test]
fn a_truncation_failing_part_way_loses_no_later_append() {
    let expected: Vec<(u64, String)> = (0..12).map(|i| (i, format!("value-{i}"))).collect();
    for kind in [FaultKind::Eio, FaultKind::NoSpace] {
        let mut step = 0;
        loop {
            let root = tempfile::tempdir().unwrap();
            let fault = FaultStorage::new(OsStorage::shared());
            let log = Log::builder()
                .dir(root.path())
                .storage(fault.shared())
                .prefault(false)
                .open()
                .unwrap();
            let config = TopicConfig::default().segment_bytes(1024);
            let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
            for i in 0..30 {
                partition.append_values([format!("value-{i}")]).unwrap();
            }
            let files = || -> Vec<(std::path::PathBuf, u64)> {
                let mut files: Vec<_> = std::fs::read_dir(root.path().join("t-0"))
                    .unwrap()
                    .map(|e| e.unwrap())
                    .map(|e| (e.path(), e.metadata().unwrap().len()))
                    .collect();
                files.sort();
                files
            };
            let before = files();
            let at = fault.ops() + 1 + step;
            fault.fail_at(at, kind, false);
            let cut = partition.truncate_to(12);
            let injected = fault.injected() > 0;
            let failed_op = fault.op_log().into_iter().find(|(n, _)| *n == at);
            fault.heal();
            let unchanged = files() == before;
            let after = partition.append_values(["after"]);
            if cut.is_ok() {
                assert_eq!(
                    after.as_ref().unwrap().base_offset,
                    12,
                    "{kind:?} step {step}"
                );
            } else if unchanged && !matches!(failed_op, Some((_, OpKind::Sync))) {
                // Nothing changed on disk (the kept part's copy failed): the directory
                // stays online, and the log takes appends at its old end.
                assert_eq!(
                    after.as_ref().map(|info| info.base_offset).ok(),
                    Some(30),
                    "{kind:?} step {step}: {failed_op:?}"
                );
            }
            drop(partition);
            drop(log);
            let log = Log::open(root.path()).unwrap();
            let found = partition_values(&log);
            assert_eq!(found[..12], expected[..], "{kind:?} step {step}");
            if let Ok(info) = after {
                assert!(
                    found.contains(&(info.base_offset, "after".into())),
                    "{kind:?} step {step}: the acknowledged append is gone: {found:?}"
                );
            }
            log.close().unwrap();
            if !injected {
                break;
            }
            step += 1;
        }
        assert!(step > 3, "{kind:?}: only {step} steps");
    }
}

/// A log in `root` over a fault-injecting storage, without background maintenance, with
/// `more` settings.
fn faulty_log_in(
    root: &Path,
    more: impl FnOnce(tarnlog::LogBuilder) -> tarnlog::LogBuilder,
) -> (FaultStorage, Log) {
    let fault = FaultStorage::new(Arc::new(OsStorage));
    let builder = Log::builder()
        .dir(root)
        .storage(Arc::new(fault.clone()))
        .background_maintenance(false);
    (fault, more(builder).open().unwrap())
}

/// A topic deleted while a sync of its partition runs (here a slow one, started by
/// `flush`): the deletion waits for it, so the sync never meets the files moving away,
/// and the directory stays online for every other topic (it was poisoned: the sync's
/// directory fsync failed on the removed partition directory).
#[test]
fn deleting_a_topic_during_its_sync_keeps_the_directory_online() {
    let root = scratch();
    let (fault, log) = faulty_log_in(root.path(), |builder| builder);
    let config = TopicConfig::default().fsync(FsyncPolicy::None);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    partition.append_values([vec![7u8; 1024]]).unwrap();
    fault.slow_dir(
        root.path().join("t-0"),
        std::time::Duration::from_millis(400),
    );
    std::thread::scope(|s| {
        let flush = s.spawn(|| log.flush());
        std::thread::sleep(std::time::Duration::from_millis(100));
        log.delete_topic("t").unwrap();
        flush.join().unwrap().unwrap();
    });
    fault.heal_dir(root.path().join("t-0"));
    assert!(log.dir_status()[0].online, "{:?}", log.dir_status());
    let other = log.create_topic("u", TopicConfig::default()).unwrap();
    other
        .partition(0)
        .unwrap()
        .append_values(["after"])
        .unwrap();
    log.flush().unwrap();
    assert!(!root.path().join("t-0").exists());
    log.close().unwrap();
}

/// The first commit of a log (`__consumer_offsets` not created yet) racing the deletion of
/// its topic: it passed its checks before the deletion and creates the offsets topic after
/// it (the deletion, holding the admin lock on a slow disk, owed no tombstones without an
/// offsets topic). It must fail with `UnknownTopic`, not leave the old topic's offset for a
/// new topic of the name.
#[test]
fn the_first_commit_racing_its_topics_deletion_does_not_reach_a_new_topic() {
    let root = scratch();
    let (fault, log) = faulty_log_in(root.path(), |builder| builder.offsets_topic_partitions(2));
    let partition = log.create_topic("t", None).unwrap().partition(0).unwrap();
    partition.append_values(["a", "b"]).unwrap();
    let tp = tarnlog::TopicPartition::new("t", 0);
    fault.slow_dir(root.path(), std::time::Duration::from_millis(300));
    let committed = std::thread::scope(|s| {
        let delete = s.spawn(|| log.delete_topic("t"));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let commit = s
            .spawn(|| log.commit_offsets("g", &[(tp.clone(), tarnlog::OffsetAndMetadata::new(2))]));
        delete.join().unwrap().unwrap();
        fault.heal_dir(root.path());
        commit.join().unwrap()
    });
    assert!(
        matches!(committed, Err(Error::UnknownTopic { .. })),
        "{committed:?}"
    );
    log.create_topic("t", None).unwrap();
    assert_eq!(log.committed_offset("g", &tp).unwrap(), None);
    log.close().unwrap();
    let log = Log::open(root.path()).unwrap();
    assert_eq!(log.committed_offset("g", &tp).unwrap(), None);
}

/// `close` while `create_topic` runs (held up by a slow disk): the close waits for it, so
/// the call never writes to the directory after its lock is released (a log opened on the
/// directory then would have `meta` or partition files change under it).
#[test]
fn close_waits_for_an_administrative_call_in_progress() {
    let root = scratch();
    let (fault, log) = faulty_log_in(root.path(), |builder| builder);
    fault.slow_dir(root.path(), std::time::Duration::from_millis(200));
    let (created, finished_first) = std::thread::scope(|s| {
        let create = s.spawn(|| log.create_topic("t", None).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(100));
        log.clone().close().unwrap();
        let finished_first = create.is_finished();
        (create.join().unwrap(), finished_first)
    });
    assert!(
        finished_first,
        "the creation went on after the close: {created:?}"
    );
    fault.heal_dir(root.path());
    let log = Log::open(root.path()).unwrap();
    assert!(log.recovery_report().unclean_dirs.is_empty());
    assert_eq!(log.topics().contains(&"t".to_string()), created.is_ok());
    log.close().unwrap();
}

/// A log in `root` over `fs`, on a manual clock.
fn manual_clock_log(root: &Path, fs: &FaultStorage) -> Log {
    Log::builder()
        .dir(root)
        .storage(fs.shared())
        .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
        .open()
        .unwrap()
}

/// A sync must not count a sealed segment synced when it could not open its files to
/// fsync them (no file descriptors left, an I/O error): only a file removed meanwhile (a
/// truncation) needs nothing. Segment 0 here was sealed by a roll under `None`, so its
/// last batches, trimmed length and indexes were never fsynced; a flush that answered Ok
/// moved the recovery point past records a power loss could take. Once the files open
/// again, the next flush syncs them.
#[test]
fn a_sync_that_cannot_open_a_sealed_segment_fails() {
    let root = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new(OsStorage::shared());
    let log = manual_clock_log(root.path(), &fs);
    let config = TopicConfig::default()
        .segment_bytes(4096)
        .fsync(FsyncPolicy::None);
    let p = log.create_topic("t", config).unwrap().partition(0).unwrap();
    p.append_values([&[b'a'; 100][..]]).unwrap();
    p.flush().unwrap();
    while p.segment_count() < 2 {
        p.append_values([&[b'b'; 1000][..]]).unwrap();
    }
    let synced = |fs: &FaultStorage| {
        fs.op_log()
            .iter()
            .filter(|(_, kind)| *kind == OpKind::Sync)
            .count()
    };
    fs.fail_read_at(fs.reads() + 1, FaultKind::Eio, true);
    let before = synced(&fs);
    assert!(
        p.flush().is_err(),
        "segment 0 could not be opened to be synced"
    );
    fs.heal();
    let failed = synced(&fs) - before;
    p.flush().unwrap();
    // Segment 0's three files, the active log and the directory.
    assert!(
        synced(&fs) - before - failed >= 5,
        "segment 0 synced on the next flush"
    );
    log.simulate_crash();
}

/// `alter_topic_config` of `segment_bytes` makes a partition's empty active segment again
/// at the new size, in new files renamed over the old ones (cutting the old files, which
/// the old segment's mappings still cover, made the next index entry a store into an
/// unbacked page: SIGBUS). A failure at any storage call of it (a full disk, an I/O error)
/// before the renames leaves the old segment active and whole: the partition keeps taking
/// appends (with one directory, nothing goes offline) and the new size applies from the
/// next segment. Only a failure between the renames (some files new, some old) takes the
/// directory offline. Either way the log reopens whole.
#[test]
fn a_failed_resize_of_the_empty_active_segment_leaves_the_old_one_whole() {
    let config = |segment_bytes: u64| {
        TopicConfig::default()
            .segment_bytes(segment_bytes)
            .index_interval_bytes(0)
            .fsync(FsyncPolicy::None)
    };
    let (calls, meta_written, remake_renames) = {
        let root = tempfile::tempdir().unwrap();
        let fs = FaultStorage::new(OsStorage::shared());
        let log = manual_clock_log(root.path(), &fs);
        log.create_topic("t", config(1 << 20)).unwrap();
        let before = fs.ops();
        log.alter_topic_config("t", config(2 << 20)).unwrap();
        let calls = fs.ops() - before;
        // The segment's three renames are the call's last ones (`meta` is renamed first).
        let renames: Vec<u64> = fs
            .op_log()
            .into_iter()
            .filter(|&(n, kind)| n > before && kind == OpKind::Rename)
            .map(|(n, _)| n - before)
            .collect();
        assert!(
            renames.len() >= 4,
            "meta and the segment's three files: {renames:?}"
        );
        // `meta`'s rename is followed by the directory's sync.
        let meta_synced = renames[renames.len() - 4] + 1;
        assert_eq!(
            fs.op_log()[(before + meta_synced - 1) as usize].1,
            OpKind::Sync
        );
        log.simulate_crash();
        (calls, meta_synced, renames[renames.len() - 3..].to_vec())
    };
    let mut kept = 0;
    for k in 1..=calls {
        for kind in [FaultKind::NoSpace, FaultKind::Eio] {
            let root = tempfile::tempdir().unwrap();
            let fs = FaultStorage::new(OsStorage::shared());
            let log = manual_clock_log(root.path(), &fs);
            let partition = log
                .create_topic("t", config(1 << 20))
                .unwrap()
                .partition(0)
                .unwrap();
            let start = fs.ops();
            fs.fail_at(start + k, kind, false);
            let altered = log.alter_topic_config("t", config(2 << 20));
            fs.heal();
            let appended = partition.append_values([&b"first"[..]]);
            if k > meta_written {
                // The config change itself was recorded before the segment was made again.
                assert!(altered.is_ok(), "call {k} ({kind:?}): {altered:?}");
                let between_renames = remake_renames[1..].contains(&k);
                assert_eq!(
                    appended.is_ok(),
                    !between_renames,
                    "call {k} ({kind:?}): only a failure between the renames takes the \
                     directory offline, but the append answered {appended:?}"
                );
                if k <= remake_renames[0] {
                    kept += 1;
                }
            }
            if appended.is_ok() {
                for name in [
                    "00000000000000000000.index",
                    "00000000000000000000.timeindex",
                ] {
                    let path = partition.path().join(name);
                    let len = std::fs::metadata(&path).map_or(1, |m| m.len());
                    assert!(
                        len > 0,
                        "call {k} ({kind:?}), alter answered {altered:?}: {name} is empty under \
                         the mapping of a partition that takes appends"
                    );
                }
                for i in 0..4 {
                    partition
                        .append_values([format!("v{i}").as_bytes()])
                        .unwrap();
                }
            }
            let written = partition.log_end_offset();
            log.simulate_crash();
            let log = Log::open(root.path()).unwrap();
            let partition = log.topic("t").unwrap().partition(0).unwrap();
            assert_eq!(partition.log_end_offset(), written, "call {k} ({kind:?})");
            let leftovers: Vec<_> = std::fs::read_dir(partition.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| Path::new(n).extension().is_some_and(|e| e == "tmp"))
                .collect();
            assert!(leftovers.is_empty(), "call {k} ({kind:?}): {leftovers:?}");
            partition.append_values([&b"after"[..]]).unwrap();
            log.close().unwrap();
        }
    }
    assert!(
        kept >= 2 * 7,
        "the files' resizes and writes, then the first rename"
    );
}

/// Two fsyncs through one open file at once could let a failed writeback, which Linux
/// reports once per open file (to whichever looks first), answer the other `Ok` for the
/// lost bytes, and acknowledge them before the first had poisoned the directory: the
/// group-commit syncer's `fdatasync` of the active segment and a roll's (or a close's)
/// fsync of the same segment must never overlap. Syncs are slowed to widen the window;
/// four threads append, rolling small segments all the time, with one replica and with
/// two (followers sync on their own threads).
#[test]
fn no_two_syncs_run_through_one_file_at_once() {
    for replicas in [1, 2] {
        syncs_through_one_file(replicas);
    }
}

fn syncs_through_one_file(replicas: u32) {
    let root = tempfile::tempdir().unwrap();
    let fs = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs((0..replicas).map(|d| root.path().join(format!("d{d}"))))
        .storage(fs.shared())
        .open()
        .unwrap();
    let config = TopicConfig::default()
        .segment_bytes(2048)
        .replication_factor(replicas)
        .fsync(FsyncPolicy::EveryBatch);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    fs.slow_dir(root.path(), std::time::Duration::from_millis(2));
    std::thread::scope(|s| {
        for t in 0..4 {
            let partition = &partition;
            s.spawn(move || {
                for i in 0..40 {
                    partition
                        .append_values([format!("{t}-{i}-{}", "x".repeat(200))])
                        .unwrap();
                }
            });
        }
    });
    let segments = common::log_files(&partition.path());
    assert!(
        segments > 20,
        "the appends rolled often: {segments} segments"
    );
    log.close().unwrap();
    assert_eq!(fs.overlapping_syncs(), 1, "{replicas} replicas");
}

/// A full disk met while an append's index entry needs the index file to grow (past its
/// first 64 KiB here) fails the append before its batch goes in: the log end is unchanged
/// (the entry's room is allocated first). It used to fail after the batch was published,
/// so the caller saw an error for a batch in the log and a retry wrote it twice.
#[test]
fn a_full_disk_while_an_index_grows_leaves_the_log_end() {
    // Offset-index entries are 8 bytes, one for every batch after the first: entry 8193
    // is the first past 64 KiB.
    const GROWS_AT: usize = 8193;
    let setup = |root: &Path, fs: &FaultStorage| {
        let log = manual_clock_log(root, fs);
        let config = TopicConfig::default()
            .segment_bytes(64 << 20)
            .index_interval_bytes(0)
            .fsync(FsyncPolicy::None);
        let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
        for i in 0..GROWS_AT {
            partition.append_values([format!("{i}")]).unwrap();
        }
        (log, partition)
    };
    // The append's allocations: where a real disk reports ENOSPC (stores into allocated
    // pages of a mapping cannot fail for want of space).
    let allocations: Vec<u64> = {
        let root = tempfile::tempdir().unwrap();
        let fs = FaultStorage::new(OsStorage::shared());
        let (log, partition) = setup(root.path(), &fs);
        let before = fs.ops();
        partition.append_values(["grows"]).unwrap();
        log.simulate_crash();
        fs.op_log()
            .into_iter()
            .filter(|&(n, kind)| n > before && kind == OpKind::Resize)
            .map(|(n, _)| n - before)
            .collect()
    };
    assert!(!allocations.is_empty(), "the append grows the index");
    for k in allocations {
        let root = tempfile::tempdir().unwrap();
        let fs = FaultStorage::new(OsStorage::shared());
        let (log, partition) = setup(root.path(), &fs);
        let end = partition.log_end_offset();
        fs.fail_at(fs.ops() + k, FaultKind::NoSpace, false);
        let appended = partition.append_values(["grows"]);
        fs.heal();
        match appended {
            Ok(info) => assert_eq!(info.base_offset, end, "call {k}"),
            Err(error) => assert_eq!(partition.log_end_offset(), end, "call {k}: {error}"),
        }
        partition.append_values(["after"]).unwrap();
        log.simulate_crash();
    }
}

/// `delete_topic` cut short at any storage call (a crash: from that call on nothing
/// reaches the disk) is all or nothing after the reopen: the topic is there with its
/// records, or it is gone with its partition directories. `meta` written without the
/// topic names it as being deleted, and the open finishes the removal; before, the
/// directories stayed for good (the open removes only what a directory's older `meta`
/// placed), holding data the application had deleted.
#[test]
fn a_topic_deletion_cut_short_is_all_or_nothing_after_a_reopen() {
    for k in 1..=60u64 {
        let root = tempfile::tempdir().unwrap();
        let fs = FaultStorage::new(OsStorage::shared());
        let log = Log::builder()
            .dir(root.path())
            .storage(fs.shared())
            .background_maintenance(false)
            .open()
            .unwrap();
        let topic = log
            .create_topic("t", TopicConfig::default().partitions(2))
            .unwrap();
        topic
            .partition(0)
            .unwrap()
            .append_values(["a", "b"])
            .unwrap();
        drop(topic);
        log.flush().unwrap();
        fs.fail_at(fs.ops() + k, FaultKind::Eio, true);
        let deleted = log.delete_topic("t");
        let injected = fs.injected() > 0;
        log.simulate_crash();
        let log = Log::open(root.path()).unwrap();
        let left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("t-"))
            .collect();
        if log.topics().iter().any(|name| name == "t") {
            let p = log.topic("t").unwrap().partition(0).unwrap();
            assert_eq!(p.log_end_offset(), 2, "k={k}");
        } else {
            assert!(
                left.is_empty(),
                "k={k}: `t` is gone ({deleted:?}), {left:?} stayed"
            );
            // The name is free again, and its new partitions start empty.
            let topic = log.create_topic("t", None).unwrap();
            assert_eq!(topic.partition(0).unwrap().log_end_offset(), 0, "k={k}");
        }
        log.close().unwrap();
        if !injected {
            break;
        }
    }
}

/// `deleting` lines do not pile up in `meta`: once a deletion's directories are gone, the
/// next `meta` written drops its name, in the same run or after the open that finished a
/// deletion a crash cut short.
#[test]
fn finished_deletions_leave_meta() {
    let root = tempfile::tempdir().unwrap();
    let names = |root: &Path| {
        let bytes = std::fs::read(root.join("meta")).unwrap();
        String::from_utf8_lossy(&bytes[20..])
            .lines()
            .filter_map(|line| line.strip_prefix("deleting ").map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let log = Log::open(root.path()).unwrap();
    log.create_topic("gone", None).unwrap();
    log.delete_topic("gone").unwrap();
    assert_eq!(names(root.path()), ["gone"], "written with the deletion");
    log.create_topic("other", None).unwrap();
    assert!(names(root.path()).is_empty(), "dropped by the next write");
    log.create_topic("cut", None).unwrap();
    log.delete_topic("cut").unwrap();
    log.simulate_crash();
    assert_eq!(names(root.path()), ["cut"]);
    let log = Log::open(root.path()).unwrap();
    log.create_topic("later", None).unwrap();
    assert!(names(root.path()).is_empty(), "dropped after the open");
    log.close().unwrap();
}

/// The names of `root`'s entries starting with `prefix`, sorted.
fn entries(root: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Runs `op` on a fresh log (prepared by `setup`) cut short at its k-th storage call (a
/// crash: from that call on nothing reaches the disk), for k = 1, 2, … up to the first run
/// in which it makes no more calls; `check` gets each run's `op` result, the log reopened
/// after the crash, and its directory.
fn cut_short_at_each_call<T: std::fmt::Debug>(
    setup: impl Fn(&Log),
    op: impl Fn(&Log) -> tarnlog::Result<T>,
    check: impl Fn(u64, &tarnlog::Result<T>, &Log, &Path),
) {
    for k in 1..=80u64 {
        let root = tempfile::tempdir().unwrap();
        let (fs, log) = faulty_log_in(root.path(), |b| b);
        setup(&log);
        log.flush().unwrap();
        fs.fail_at(fs.ops() + k, FaultKind::Eio, true);
        let result = op(&log);
        let injected = fs.injected() > 0;
        log.simulate_crash();
        let log = Log::open(root.path()).unwrap();
        check(k, &result, &log, root.path());
        log.close().unwrap();
        if !injected {
            assert!(k > 1, "the operation made no storage call");
            return;
        }
    }
    panic!("the operation made more than 80 storage calls");
}

/// `create_topic` cut short at any storage call leaves, after the reopen, the topic whole or
/// no directory of it. `meta` names the topic as being created before its partition
/// directories are made, and the open removes those the `meta` placing them never reached;
/// before, they stayed for good (until the name was created again).
#[test]
fn a_topic_creation_cut_short_leaves_no_directory_after_a_reopen() {
    cut_short_at_each_call(
        |log| drop(log.create_topic("other", None).unwrap()),
        |log| log.create_topic("t", TopicConfig::default().partitions(3)),
        |k, created, log, root| {
            if log.topics().iter().any(|name| name == "t") {
                let topic = log.topic("t").unwrap();
                assert_eq!(topic.partitions(), 3, "k={k}");
                assert_eq!(entries(root, "t-"), ["t-0", "t-1", "t-2"], "k={k}");
                topic.partition(2).unwrap().append_values(["a"]).unwrap();
            } else {
                assert!(created.is_err(), "k={k}: created, then lost");
                assert!(
                    entries(root, "t-").is_empty(),
                    "k={k}: {created:?} left {:?}",
                    entries(root, "t-")
                );
                log.create_topic("t", None).unwrap();
            }
            assert_eq!(log.topic("other").unwrap().partitions(), 1, "k={k}");
        },
    );
}

/// `add_partitions` cut short at any storage call: after the reopen the topic has its new
/// partitions, or its old ones only, with their records, and no directory of a partition
/// it does not have.
#[test]
fn adding_partitions_cut_short_leaves_no_directory_after_a_reopen() {
    cut_short_at_each_call(
        |log| {
            let topic = log.create_topic("t", None).unwrap();
            let p = topic.partition(0).unwrap();
            p.append_values(["kept"]).unwrap();
        },
        |log| log.add_partitions("t", 3),
        |k, added, log, root| {
            let topic = log.topic("t").unwrap();
            let expected: &[&str] = if topic.partitions() == 3 {
                &["t-0", "t-1", "t-2"]
            } else {
                assert!(added.is_err(), "k={k}: added, then lost");
                assert_eq!(topic.partitions(), 1, "k={k}");
                &["t-0"]
            };
            assert_eq!(entries(root, "t-"), expected, "k={k}: {added:?}");
            assert_eq!(topic.partition(0).unwrap().log_end_offset(), 1, "k={k}");
            drop(topic);
            log.add_partitions("t", 4).unwrap();
        },
    );
}

/// A deletion cut short (its directory's removal failed, the directory online) and the
/// name created again in the same run with the partition in another directory: the old
/// partition directory, which neither `meta` places, holding the deleted topic's record,
/// is set aside as `.stray` by the next open (while the name is live, where it is is all
/// that tells it from the live topic's); deleted again before that open, the name's
/// directories all go. Before, the creation dropped the name from those being deleted,
/// and the directory stayed as an unplaced partition.
#[test]
fn leftovers_of_a_deletion_cut_short_go_when_the_name_is_created_elsewhere() {
    let mut cut = 0;
    for (k, again) in (1..=40u64).flat_map(|k| [(k, false), (k, true)]) {
        let root = tempfile::tempdir().unwrap();
        let dirs = [root.path().join("d0"), root.path().join("d1")];
        let fs = FaultStorage::new(OsStorage::shared());
        let log = Log::builder()
            .dirs(dirs.clone())
            .storage(fs.shared())
            .background_maintenance(false)
            .open()
            .unwrap();
        let topic = log.create_topic("t", None).unwrap();
        topic.partition(0).unwrap().append_values(["old"]).unwrap();
        drop(topic);
        let holder = |log: &Log| log.describe_topic("t").unwrap().partitions[0].replicas[0];
        let old = holder(&log);
        fs.fail_at(fs.ops() + k, FaultKind::Eio, false);
        let deleted = log.delete_topic("t");
        fs.heal();
        let injected = fs.injected() > 0;
        let stranded = deleted.is_err()
            && !log.topics().contains(&"t".to_owned())
            && entries(&dirs[old], "t-") == ["t-0"];
        if stranded {
            cut += 1;
            // Topics rotate their first replica over the directories: after one in the
            // old directory, `t` lands in the other one.
            let mut pads = 0;
            while holder_of_next(&log, &mut pads) != old {}
            log.create_topic("t", None).unwrap();
            assert_ne!(holder(&log), old, "k={k}");
            log.topic("t")
                .unwrap()
                .partition(0)
                .unwrap()
                .append_values(["new"])
                .unwrap();
            if again {
                log.delete_topic("t").unwrap();
                // A `meta` written after the deletion finished.
                log.create_topic("later", None).unwrap();
            }
            log.close().unwrap();
            let log = Log::builder().dirs(dirs.clone()).open().unwrap();
            let left = entries(&dirs[old], "t-");
            if again {
                assert!(left.is_empty(), "k={k}: {deleted:?} left {left:?}");
                assert!(!log.topics().contains(&"t".to_owned()));
            } else {
                assert_eq!(left, ["t-0.stray"], "k={k}: {deleted:?}");
                let p = log.topic("t").unwrap().partition(0).unwrap();
                assert_eq!(p.log_end_offset(), 1, "k={k}: the new topic's record");
            }
            log.close().unwrap();
        } else {
            log.close().unwrap();
        }
        if !injected && again {
            break;
        }
    }
    assert!(
        cut > 1,
        "{cut} faults cut the deletion short with its directory left"
    );
}

/// Creates a topic `pad{n}` and returns the directory of its partition 0's first replica:
/// the next topic's placement starts one directory further on.
fn holder_of_next(log: &Log, pads: &mut u32) -> usize {
    let name = format!("pad{pads}");
    *pads += 1;
    log.create_topic(&name, None).unwrap();
    log.describe_topic(&name).unwrap().partitions[0].replicas[0]
}

/// `creating` lines do not stay in `meta`: the write that places a topic's new partitions
/// drops its name, and the open that removed what a creation cut short left lets the next
/// write drop it.
#[test]
fn finished_creations_leave_meta() {
    let lines = |root: &Path, kind: &str| {
        let bytes = std::fs::read(root.join("meta")).unwrap();
        String::from_utf8_lossy(&bytes[20..])
            .lines()
            .filter_map(|line| line.strip_prefix(kind))
            .filter_map(|rest| rest.split(' ').next().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let names = |root: &Path| lines(root, "creating ");
    let mut cut = false;
    for k in 1..=80u64 {
        let root = tempfile::tempdir().unwrap();
        let (fs, log) = faulty_log_in(root.path(), |b| b);
        log.create_topic("made", None).unwrap();
        log.add_partitions("made", 2).unwrap();
        assert!(names(root.path()).is_empty(), "dropped by the creation");
        fs.fail_at(fs.ops() + k, FaultKind::Eio, true);
        let created = log.create_topic("cut", TopicConfig::default().partitions(2));
        log.simulate_crash();
        // Only a cut after the mark and a partition directory, before the `meta` placing
        // them, tells anything.
        let placed = lines(root.path(), "topic ").contains(&"cut".to_owned());
        if created.is_err() && !placed && !entries(root.path(), "cut-").is_empty() {
            cut = true;
            assert_eq!(names(root.path()), ["cut"], "k={k}");
            let log = Log::open(root.path()).unwrap();
            assert!(
                entries(root.path(), "cut-").is_empty(),
                "k={k}: left by the open"
            );
            log.create_topic("later", None).unwrap();
            assert!(names(root.path()).is_empty(), "k={k}: kept after the open");
            log.close().unwrap();
        }
        if created.is_ok() {
            break;
        }
    }
    assert!(cut, "no fault cut the creation short with a directory made");
}
