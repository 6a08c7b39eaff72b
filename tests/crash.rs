//! Process crash tests: a child process (this test binary, run as `crash_child`) appends
//! and acknowledges every record on a pipe only after `append` returned; the parent kills
//! it (SIGKILL at random moments, `abort` right after a chosen append, or `abort` at every
//! counted storage call of a fixed workload in turn, over one directory or three), reopens
//! the log and checks that every acknowledged record survived, exactly, with nothing
//! invented.
//!
//! `TARNLOG_SEED` replays a run's choices (kill timing still varies); `TARNLOG_SOAK=1`
//! raises the kill count from 250 to 5,000 per fsync policy.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tarnlog::storage::{FaultKind, FaultStorage, OsStorage, Storage};
use tarnlog::{BatchBuilder, Error, FsyncPolicy, Log, Partition, TopicConfig};

const TOPIC: &str = "crash";
/// The child's storage directory; its presence makes `crash_child` run.
const ENV_CHILD: &str = "TARNLOG_CRASH_CHILD";
/// The child's fsync policy: `every_batch` or `none`.
const ENV_FSYNC: &str = "TARNLOG_CRASH_FSYNC";
/// When set to `k`, the child aborts right after its `k`-th append.
const ENV_ABORT: &str = "TARNLOG_CRASH_ABORT_AFTER";
/// When set to `k`, the child's storage aborts the process at its `k`-th counted call
/// (write, resize, sync, rename, remove); `0` counts calls without aborting.
const ENV_CRASH_AT_OP: &str = "TARNLOG_CRASH_AT_OP";
/// When set to `n`, the child stops after `n` appends: it closes the log, prints
/// `DONE <counted calls>` and exits.
const ENV_APPENDS: &str = "TARNLOG_CRASH_APPENDS";
/// When set, the child creates its topic with this `segment_bytes` instead of 64 KiB.
const ENV_SEGMENT_BYTES: &str = "TARNLOG_CRASH_SEGMENT_BYTES";
/// When set to `n`, the child's log spans `n` storage directories (`r0`, `r1`, ... inside
/// its directory) and its topic has `replication_factor` n and `min_insync_replicas` 2
/// (at most n): appends are Kafka's `acks=all`.
const ENV_REPLICAS: &str = "TARNLOG_CRASH_REPLICAS";
/// A fresh directory every this many kills keeps the log (and each reopen) small.
const KILLS_PER_DIR: u32 = 50;
const SIGKILL: i32 = 9;
const SIGABRT: i32 = 6;

/// Tiny xorshift64* generator: no dependency, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: never zero, and nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed(test: &str) -> u64 {
    let seed = std::env::var("TARNLOG_SEED").map_or_else(
        |_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            now.as_secs() ^ u64::from(now.subsec_nanos()) << 20 ^ u64::from(std::process::id())
        },
        |s| s.parse().expect("TARNLOG_SEED must be a u64"),
    );
    println!("{test}: seed {seed} (replay with TARNLOG_SEED={seed})");
    seed
}

fn soak() -> bool {
    std::env::var("TARNLOG_SOAK").is_ok_and(|v| v == "1")
}

fn policy_name(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::EveryBatch => "every_batch",
        _ => "none",
    }
}

// ---------------------------------------------------------------------------------------
// The deterministic data: record `seq` has one key and one value, whoever wrote it.

/// Records in the batch that starts with `seq`: 1–8.
fn batch_len(seq: u64) -> u64 {
    1 + Rng::new(seq ^ 0xBA7C).below(8)
}

fn key_of(seq: u64) -> Vec<u8> {
    seq.to_string().into_bytes()
}

/// The 8-byte big-endian `seq` followed by 40–200 bytes of a `seq`-seeded pattern.
fn value_of(seq: u64) -> Vec<u8> {
    let mut rng = Rng::new(seq);
    let len = 8 + 40 + rng.below(161) as usize;
    let mut value = Vec::with_capacity(len + 8);
    value.extend_from_slice(&seq.to_be_bytes());
    while value.len() < len {
        value.extend_from_slice(&rng.next().to_le_bytes());
    }
    value.truncate(len);
    value
}

fn timestamp_of(seq: u64) -> i64 {
    1_700_000_000_000 + seq as i64
}

fn topic_config(policy: FsyncPolicy) -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(64 * 1024)
        .fsync(policy)
}

// ---------------------------------------------------------------------------------------
// The child.

// Child mode of the crash tests (not a test by itself): appends forever, acknowledging each
// record on stdout only after `append` returned Ok.
#[test]
#[ignore = "child process of the crash tests, which run it"]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    if let Err(error) = child_main(Path::new(&dir), &mut out) {
        let _ = writeln!(out, "\nFAIL {error}");
        let _ = out.flush();
        std::process::exit(3);
    }
}

fn child_main(dir: &Path, out: &mut impl Write) -> Result<(), Box<dyn std::error::Error>> {
    let policy = match std::env::var(ENV_FSYNC).as_deref() {
        Ok("every_batch") => FsyncPolicy::EveryBatch,
        Ok("none") => FsyncPolicy::None,
        other => return Err(format!("{ENV_FSYNC} must be every_batch or none: {other:?}").into()),
    };
    let number = |name: &str| -> Result<Option<u64>, Box<dyn std::error::Error>> {
        Ok(std::env::var(name).ok().map(|k| k.parse()).transpose()?)
    };
    let abort_after = number(ENV_ABORT)?;
    let appends_limit = number(ENV_APPENDS)?;
    let crash_at = number(ENV_CRASH_AT_OP)?;
    let fault = FaultStorage::new(OsStorage::shared());
    if let Some(k) = crash_at.filter(|&k| k > 0) {
        fault.fail_at(k, FaultKind::Abort, false);
    }
    let shared = fault.shared();
    let replicas = number(ENV_REPLICAS)?.map_or(1, |n| n as u32);
    let log = open_log(dir, replicas, crash_at.map(|_| &shared))?;
    let mut config = topic_config(policy)
        .replication_factor(replicas)
        .min_insync_replicas(replicas.min(2));
    if let Some(bytes) = number(ENV_SEGMENT_BYTES)? {
        config = config.segment_bytes(bytes);
    }
    let topic = match log.topic(TOPIC) {
        Ok(topic) => topic,
        Err(Error::UnknownTopic { .. }) => log.create_topic(TOPIC, config)?,
        Err(error) => return Err(error.into()),
    };
    let partition = topic.partition(0)?;
    let mut seq = next_seq(&partition)?;
    // The harness may have left "test crash_child ... " unterminated on stdout.
    writeln!(out, "\nREADY {seq}")?;
    out.flush()?;
    let mut builder = BatchBuilder::new();
    let mut acks = String::new();
    let mut appends = 0;
    loop {
        let count = batch_len(seq);
        for s in seq..seq + count {
            builder.push(timestamp_of(s), Some(&key_of(s)), Some(&value_of(s)), &[]);
        }
        let info = partition.append(builder.finish().ok_or("empty batch")?)?;
        acks.clear();
        for i in 0..count {
            let _ = writeln!(acks, "ACK {} {}", seq + i, info.base_offset + i);
        }
        out.write_all(acks.as_bytes())?;
        out.flush()?;
        seq += count;
        appends += 1;
        if abort_after == Some(appends) {
            std::process::abort();
        }
        if appends_limit == Some(appends) {
            log.close()?;
            writeln!(out, "DONE {}", fault.ops())?;
            out.flush()?;
            return Ok(());
        }
    }
}

/// Opens the log, waiting out a `Locked` that a sibling's fork holds: the tests here run
/// in parallel, and a child forked by one inherits the other's open `LOCK` descriptor
/// (and so its flock) until it execs.
fn open_log(dir: &Path, replicas: u32, storage: Option<&Arc<dyn Storage>>) -> tarnlog::Result<Log> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut builder = if replicas > 1 {
            Log::builder().dirs((0..replicas).map(|i| dir.join(format!("r{i}"))))
        } else {
            Log::builder().dir(dir)
        };
        if let Some(storage) = storage {
            builder = builder.storage(Arc::clone(storage));
        }
        match builder.open() {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

/// The sequence number after the last record of the log (0 for an empty log).
fn next_seq(partition: &Partition) -> tarnlog::Result<u64> {
    let end = partition.log_end_offset();
    if end == partition.log_start_offset() {
        return Ok(0);
    }
    let read = partition.read(end - 1, 1 << 20)?;
    let last = read.records().last().ok_or(Error::InvalidRecord {
        reason: "no record below the log end".into(),
    })??;
    let value = last.value.unwrap_or_default();
    let seq = value.get(..8).ok_or(Error::InvalidRecord {
        reason: "payload shorter than a sequence number".into(),
    })?;
    Ok(u64::from_be_bytes(seq.try_into().unwrap()) + 1)
}

// ---------------------------------------------------------------------------------------
// The parent.

/// What the reader thread saw on a child's stdout (complete lines only).
#[derive(Default)]
struct ChildOutput {
    acks: Vec<(u64, u64)>,
    fail: Option<String>,
    /// `DONE <calls>`: the child finished its appends and closed the log.
    done: Option<u64>,
}

struct Running {
    child: Child,
    started: Instant,
    ready: mpsc::Receiver<Instant>,
    reader: JoinHandle<ChildOutput>,
}

fn spawn_child(dir: &Path, policy: FsyncPolicy, env: &[(&str, u64)]) -> Running {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_CHILD, dir)
        .env(ENV_FSYNC, policy_name(policy))
        .env_remove(ENV_ABORT)
        .env_remove(ENV_APPENDS)
        .env_remove(ENV_CRASH_AT_OP)
        .env_remove(ENV_SEGMENT_BYTES)
        .env_remove(ENV_REPLICAS)
        // A core dump of `abort` lands in the temporary directory, not in the repository.
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value.to_string());
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let reader = std::thread::spawn(move || read_child(stdout, &ready_tx));
    Running {
        child,
        started,
        ready,
        reader,
    }
}

fn read_child(stdout: std::process::ChildStdout, ready: &mpsc::Sender<Instant>) -> ChildOutput {
    let mut output = ChildOutput::default();
    let mut stdout = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdout.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return output,
            Ok(_) => {}
        }
        // A line cut by the kill has no newline: it was never fully acknowledged.
        let Some(text) = line
            .strip_suffix(b"\n")
            .and_then(|l| std::str::from_utf8(l).ok())
        else {
            return output;
        };
        if let Some(ack) = text.strip_prefix("ACK ") {
            let (seq, offset) = ack.split_once(' ').expect("ACK <seq> <offset>");
            output
                .acks
                .push((seq.parse().unwrap(), offset.parse().unwrap()));
        } else if text.starts_with("READY ") {
            let _ = ready.send(Instant::now());
        } else if let Some(calls) = text.strip_prefix("DONE ") {
            output.done = Some(calls.parse().expect("DONE <calls>"));
        } else if let Some(fail) = text.strip_prefix("FAIL ") {
            output.fail = Some(fail.to_owned());
        }
    }
}

/// Totals over one test.
#[derive(Default)]
struct Stats {
    kills: u64,
    kills_before_ready: u64,
    acked: u64,
    lost: u64,
    phantom: u64,
    duplicate: u64,
    truncations: u64,
    torn_tails: u64,
    max_log_end: u64,
}

impl Stats {
    fn summary(&self, test: &str, elapsed: Duration) -> String {
        format!(
            "{test}: {} kills ({} before the child was ready), {} acked, {} lost, {} phantom, \
             {} duplicate, {} torn tails truncated ({} truncations), largest log end {}, {:.1} s",
            self.kills,
            self.kills_before_ready,
            self.acked,
            self.lost,
            self.phantom,
            self.duplicate,
            self.torn_tails,
            self.truncations,
            self.max_log_end,
            elapsed.as_secs_f64(),
        )
    }
}

/// The reopened log's partition 0 against the acknowledgements; violations are counted in
/// `stats` and described in the returned list.
fn check_log(
    log: &Log,
    acked: &BTreeMap<u64, u64>,
    stats: &mut Stats,
) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let partition = match log.topic(TOPIC) {
        Ok(topic) => topic.partition(0)?,
        // The first child may die before it created the topic.
        Err(Error::UnknownTopic { .. }) if acked.is_empty() => return Ok(problems),
        Err(error) => return Err(error),
    };
    let start = partition.log_start_offset();
    let end = partition.log_end_offset();
    stats.max_log_end = stats.max_log_end.max(end);
    if start != 0 {
        problems.push(format!("log start {start}, expected 0"));
    }
    // present[i] = the sequence number found at offset start + i, when its bytes are exact.
    let mut present: Vec<Option<u64>> = Vec::new();
    let mut offset = start;
    while offset < end {
        let read = partition.read(offset, 1 << 20)?;
        if read.is_empty() {
            problems.push(format!("read at {offset} is empty below the log end {end}"));
            break;
        }
        for record in read.records() {
            let record = record?;
            if record.offset as u64 != offset {
                problems.push(format!("offset {} where {offset} was next", record.offset));
                return Ok(problems);
            }
            let index = offset - start;
            let value = record.value.as_deref().unwrap_or_default();
            let seq = value
                .get(..8)
                .map(|s| u64::from_be_bytes(s.try_into().unwrap()));
            let exact = seq.is_some_and(|s| {
                record.key.as_deref() == Some(&key_of(s)[..])
                    && value == value_of(s)
                    && record.timestamp == timestamp_of(s)
            });
            match seq {
                Some(s) if exact && s == index => {}
                Some(s) if exact && s < index => {
                    stats.duplicate += 1;
                    problems.push(format!("offset {offset}: duplicate of seq {s}"));
                }
                _ => {
                    stats.phantom += 1;
                    problems.push(format!(
                        "offset {offset}: phantom record (seq {seq:?}, exact payload {exact}), \
                         expected seq {index}"
                    ));
                }
            }
            present.push(seq.filter(|_| exact));
            offset += 1;
        }
    }
    for (&seq, &at) in acked {
        let found = at
            .checked_sub(start)
            .and_then(|i| present.get(i as usize).copied().flatten());
        if found != Some(seq) {
            stats.lost += 1;
            problems.push(format!(
                "acked seq {seq} at offset {at} lost (found {found:?}, log end {end})"
            ));
        }
    }
    check_report(log, end, stats, &mut problems);
    Ok(problems)
}

/// The recovery report agrees with the log it left: each replica's truncation is at the
/// end it recovered to; with one directory that is the partition's end, with several the
/// end of one of them (the leader's; followers catch up or truncate after the open).
fn check_report(log: &Log, end: u64, stats: &mut Stats, problems: &mut Vec<String>) {
    let report = log.recovery_report();
    let replicated = log.dirs().len() > 1;
    // A process crash damages nothing (checkpoints are replaced atomically): no directory
    // offline, no checkpoint unreadable, no replica set aside and rebuilt.
    if !report.offline_dirs.is_empty()
        || !report.unreadable_checkpoints.is_empty()
        || !report.repaired.is_empty()
    {
        problems.push(format!(
            "a crash left damage: offline {:?}, unreadable {:?}, repaired {:?}",
            report.offline_dirs, report.unreadable_checkpoints, report.repaired
        ));
    }
    for partition in &report.partitions {
        let recovered = partition.log_end_offset;
        if !replicated && recovered != end {
            problems.push(format!(
                "report says log end {recovered}, partition says {end}"
            ));
        }
        if let Some(cut) = &partition.truncation {
            stats.truncations += 1;
            if cut.bytes_discarded > 0 {
                stats.torn_tails += 1;
            }
            if cut.offset != recovered {
                problems.push(format!(
                    "{}: truncation at offset {}, recovered log end {recovered}",
                    partition.path.display(),
                    cut.offset
                ));
            }
        }
    }
    let ends: Vec<u64> = report.partitions.iter().map(|p| p.log_end_offset).collect();
    if replicated && !report.partitions.is_empty() && !ends.contains(&end) {
        problems.push(format!(
            "no replica recovered to the partition's end {end}: {ends:?}"
        ));
    }
}

/// Everything one kill round needs to remember between rounds.
struct Round<'a> {
    test: &'a str,
    seed: u64,
    policy: FsyncPolicy,
    /// Storage directories of the log (and replicas of its topic).
    replicas: u32,
    stats: Stats,
    /// Acknowledged records of the current directory: seq -> offset.
    acked: BTreeMap<u64, u64>,
    /// How long the last child took from spawn to READY (for the early kills).
    ready_latency: Duration,
}

impl Round<'_> {
    /// Panics with what went wrong, keeping the directory for a post-mortem.
    fn fail(&self, dir: tempfile::TempDir, kill: u64, what: &str) -> ! {
        let path = dir.keep();
        panic!(
            "{}\n{}: kill {kill}, seed {}: {what}\n(directory kept: {})",
            self.stats.summary(self.test, Duration::ZERO),
            self.test,
            self.seed,
            path.display()
        );
    }

    /// Waits for the child to die (killed or aborted) and collects its acknowledgements.
    fn reap(&mut self, running: Running, expected_signal: i32) -> Result<ChildOutput, String> {
        self.reap_if(running, expected_signal == SIGKILL, |status, _| {
            status.signal() == Some(expected_signal)
        })
    }

    /// Waits for the child (killing it first if `kill`) and collects its
    /// acknowledgements, provided `expected` accepts how it ended.
    fn reap_if(
        &mut self,
        running: Running,
        kill: bool,
        expected: impl Fn(ExitStatus, &ChildOutput) -> bool,
    ) -> Result<ChildOutput, String> {
        let Running {
            mut child, reader, ..
        } = running;
        if kill {
            child.kill().unwrap();
        }
        // A child that hangs (in recovery, say) fails the test instead of stalling it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                return Err("child still running after 60 s: killed".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let output = reader.join().unwrap();
        if let Some(fail) = &output.fail {
            return Err(format!("child failed: {fail}"));
        }
        if !expected(status, &output) {
            return Err(format!("child ended unexpectedly: {status}"));
        }
        for &(seq, offset) in &output.acks {
            self.stats.acked += 1;
            if let Some(before) = self.acked.insert(seq, offset).filter(|&o| o != offset) {
                return Err(format!(
                    "seq {seq} acked at offset {before}, then at {offset}"
                ));
            }
        }
        Ok(output)
    }

    /// Reopens, checks, and closes (or, before an early kill, drops as a crash would, so
    /// that the next child recovers an unclean log while it is being killed).
    fn verify(&mut self, dir: &Path, leave_unclean: bool) -> Result<(), String> {
        let log = open_log(dir, self.replicas, None).map_err(|e| format!("reopen failed: {e}"))?;
        let mut problems = check_log(&log, &self.acked, &mut self.stats)
            .map_err(|e| format!("reading the reopened log failed: {e}"))?;
        if self.replicas > 1
            && let Ok(described) = log.describe_topic(TOPIC)
            && described.under_replicated().count() > 0
        {
            problems.push(format!("under-replicated after the reopen: {described:?}"));
        }
        if !problems.is_empty() {
            let shown: Vec<&str> = problems.iter().take(20).map(String::as_str).collect();
            return Err(format!(
                "{} violations, first ones:\n  {}\nrecovery report: {:#?}",
                problems.len(),
                shown.join("\n  "),
                log.recovery_report()
            ));
        }
        if leave_unclean {
            log.simulate_crash();
            Ok(())
        } else {
            log.close().map_err(|e| format!("close failed: {e}"))
        }
    }
}

// SIGKILL at random moments while a child appends (and, one kill in ten, while it opens and
// recovers an unclean log): prevents losing an acknowledged record, resurrecting a torn one,
// or recovery that cuts, duplicates or misnumbers valid data.
fn kill_loop(policy: FsyncPolicy) {
    let test = format!("crash({})", policy_name(policy));
    let seed = seed(&test);
    let kills: u64 = if soak() { 5_000 } else { 250 };
    let mut rng = Rng::new(seed);
    let mut round = Round {
        test: &test,
        seed,
        policy,
        replicas: 1,
        stats: Stats::default(),
        acked: BTreeMap::new(),
        ready_latency: Duration::from_millis(5),
    };
    let began = Instant::now();
    let mut dir = tempfile::tempdir().unwrap();
    let mut early = false;
    for kill in 0..kills {
        if kill > 0 && kill % u64::from(KILLS_PER_DIR) == 0 {
            dir = tempfile::tempdir().unwrap();
            round.acked.clear();
        }
        let running = spawn_child(dir.path(), round.policy, &[]);
        let ready_at = if early {
            // Anywhere from process start to a little after the open is expected to end.
            let window = round.ready_latency + Duration::from_millis(2);
            std::thread::sleep(window * rng.below(1_001) as u32 / 1_000);
            running.ready.try_recv().ok()
        } else {
            let ready = running.ready.recv_timeout(Duration::from_secs(30)).ok();
            std::thread::sleep(Duration::from_micros(rng.below(20_001)));
            ready
        };
        match ready_at {
            Some(at) => round.ready_latency = at - running.started,
            None => round.stats.kills_before_ready += 1,
        }
        round.stats.kills += 1;
        early = rng.below(10) == 0;
        let checked = round
            .reap(running, SIGKILL)
            .and_then(|_| round.verify(dir.path(), early));
        if let Err(what) = checked {
            round.fail(dir, kill, &what);
        }
    }
    println!("{}", round.stats.summary(&test, began.elapsed()));
}

// Kill loop under group commit: an append acknowledged after its fdatasync is never lost.
#[test]
fn crash_kill_every_batch() {
    kill_loop(FsyncPolicy::EveryBatch);
}

// Kill loop without fsync: the page cache survives SIGKILL, so no acknowledged append is lost.
#[test]
fn crash_kill_none() {
    kill_loop(FsyncPolicy::None);
}

// abort() right after the k-th acknowledged append, for a sweep of k: prevents a completed
// append being cut (or an empty truncation being reported) when nothing was torn.
#[test]
fn crash_abort_after_append() {
    let sweep = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89];
    for policy in [FsyncPolicy::EveryBatch, FsyncPolicy::None] {
        let test = format!("crash_abort({})", policy_name(policy));
        let mut round = Round {
            test: &test,
            seed: 0,
            policy,
            replicas: 1,
            stats: Stats::default(),
            acked: BTreeMap::new(),
            ready_latency: Duration::ZERO,
        };
        let began = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let mut expected_end = 0;
        for (kill, &k) in (0u64..).zip(&sweep) {
            let running = spawn_child(dir.path(), policy, &[(ENV_ABORT, k)]);
            round.stats.kills += 1;
            let checked = round.reap(running, SIGABRT).and_then(|output| {
                // The child acknowledged all k batches before it aborted.
                let mut seq = expected_end;
                for _ in 0..k {
                    seq += batch_len(seq);
                }
                if output.acks.len() as u64 != seq - expected_end {
                    return Err(format!(
                        "{} acks for {k} appends, expected {}",
                        output.acks.len(),
                        seq - expected_end
                    ));
                }
                expected_end = seq;
                round.verify(dir.path(), false)?;
                let truncations = round.stats.truncations;
                let end = round.stats.max_log_end;
                if end != expected_end || truncations != 0 {
                    return Err(format!(
                        "after {k} appends: log end {end} (expected {expected_end}), \
                         {truncations} truncations (expected none)"
                    ));
                }
                Ok(())
            });
            if let Err(what) = checked {
                round.fail(dir, kill, &what);
            }
        }
        println!("{}", round.stats.summary(&test, began.elapsed()));
    }
}

/// The sweep's workload: appends of 1–8 records into 4 KiB segments (a roll every few
/// appends), then a clean close.
const SWEEP_APPENDS: u64 = 30;
const SWEEP_SEGMENT_BYTES: u64 = 4096;

/// Where the sweep's directories go: tmpfs when there is one (its fsyncs cost nothing, and
/// `abort` keeps the page cache either way), else the default temporary directory.
fn sweep_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    tempfile::tempdir_in(shm).unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

/// The child aborted at its planned call, or finished its appends before reaching it.
fn crashed_or_done(status: ExitStatus, output: &ChildOutput) -> bool {
    status.signal() == Some(SIGABRT) || status.success() && output.done.is_some()
}

// abort() at the k-th storage call (write, resize, sync, rename, remove) of a fixed
// workload — creating the topic, appends, segment rolls, checkpoints, the close — for every
// k, with and without fsync, over one directory and over three (replication factor 3,
// `acks=all`, min ISR 2); each crash is followed by a second child that aborts at one of the first calls of its
// own run (inside the open and recovery of the crashed log, or just after). Prevents any
// single I/O point, or a crash inside recovery, from losing an acknowledged record,
// inventing one, or leaving a log that does not open.
#[test]
fn crash_at_every_storage_call() {
    let test = "crash_at_op";
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let configs = [
        (FsyncPolicy::EveryBatch, 1),
        (FsyncPolicy::None, 1),
        (FsyncPolicy::EveryBatch, 3),
        (FsyncPolicy::None, 3),
    ];
    for (policy, replicas) in configs {
        let workload = |crash_at: u64, appends: u64| {
            [
                (ENV_CRASH_AT_OP, crash_at),
                (ENV_APPENDS, appends),
                (ENV_SEGMENT_BYTES, SWEEP_SEGMENT_BYTES),
                (ENV_REPLICAS, u64::from(replicas)),
            ]
        };
        let name = format!("{test}({}, {replicas} replicas)", policy_name(policy));
        let mut round = Round {
            test: &name,
            seed,
            policy,
            replicas,
            stats: Stats::default(),
            acked: BTreeMap::new(),
            ready_latency: Duration::ZERO,
        };
        let began = Instant::now();
        // The whole workload without a crash, to learn how many calls it makes.
        let dir = sweep_dir();
        let running = spawn_child(dir.path(), policy, &workload(0, SWEEP_APPENDS));
        let calls = match round.reap_if(running, false, |status, output| {
            status.success() && output.done.is_some()
        }) {
            Ok(output) => output.done.unwrap_or_default(),
            Err(what) => round.fail(dir, 0, &what),
        };
        assert!(
            calls > 20,
            "{name}: only {calls} storage calls in the workload"
        );
        let mut finished = 0;
        for k in 1..=calls {
            let dir = sweep_dir();
            round.acked.clear();
            round.stats.kills += 1;
            let first = spawn_child(dir.path(), policy, &workload(k, SWEEP_APPENDS));
            let checked = round
                .reap_if(first, false, crashed_or_done)
                .and_then(|output| {
                    finished += u64::from(output.done.is_some());
                    let second = spawn_child(dir.path(), policy, &workload(1 + rng.below(16), 2));
                    round.reap_if(second, false, crashed_or_done)
                })
                .and_then(|_| round.verify(dir.path(), false));
            if let Err(what) = checked {
                round.fail(dir, k, &what);
            }
        }
        // A run ends before its call only if the calls of a run vary (background work).
        assert!(
            finished * 10 < calls,
            "{name}: {finished} of {calls} runs never reached their call"
        );
        println!(
            "{} ({calls} calls swept; {finished} runs ended before their call)",
            round.stats.summary(&name, began.elapsed())
        );
    }
}
