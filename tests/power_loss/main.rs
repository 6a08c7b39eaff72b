//! Simulated power loss (the reliability plan's §(a2)): a workload runs over
//! [`model::CrashStorage`], which models what the disk holds durably. Before every
//! mutating storage call the model writes post-crash images — only the synced state, the
//! whole live state, and random mixes (unsynced directory entries, lengths and pages each
//! kept, dropped or torn) — and each image is opened with the real recovery code and
//! checked:
//! - it opens (crash-only damage is never "corrupt, refuse to open");
//! - every record acknowledged as durable is there, at its offset, with its bytes;
//! - nothing else is there: every record is one the workload wrote at that offset;
//! - an acknowledged `delete_records` or retention pass stays; a committed offset never
//!   points past data; an acknowledged commit is there; a topic deleted and created again
//!   shows only the life the workload had reached, never records of the other.
//!
//! One more image per crash point is opened and closed over a model of its own, and a
//! second power loss at one of that recovery's calls is checked the same way.
//!
//! `TARNLOG_POWER_LOSS_IMAGES=N` sets the random images per crash point (default 2; with
//! three replicas 1, at every second crash point; when set, at every one; 20 under
//! `TARNLOG_SOAK=1`);
//! `TARNLOG_SEED` replays a run.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{Rng, seed};
use model::{Crash, CrashStorage, Keep, SizeRule};
use tarnlog::codec::BatchHeader;
use tarnlog::storage::{FaultKind, FaultStorage, OsStorage, Storage};
use tarnlog::{
    BatchBuilder, CleanupPolicy, Error, FsyncPolicy, Log, OffsetAndMetadata, TopicConfig,
    TopicPartition,
};

const TOPIC: &str = "t";
const PARTITIONS: u32 = 2;
const APPENDS: u64 = 24;
const GROUP: &str = "g";
/// A topic deleted and created again midway.
const GONE: &str = "gone";
/// A compacted topic: keyed records, cleaned by the retention passes.
const COMPACTED: &str = "c";
const KEYS: u64 = 8;

#[derive(Debug, Clone, Copy)]
struct Config {
    policy: FsyncPolicy,
    replicas: u32,
    size_rule: SizeRule,
    /// Whether the log's background thread allocates and faults segment pages ahead.
    prefault: bool,
}

/// What the workload wrote and what it was told was durable, for the checks.
#[derive(Debug, Clone, Default)]
struct Expect {
    topic_acked: bool,
    /// Per partition: the value written at each offset (appends not yet answered too).
    written: Vec<BTreeMap<u64, Vec<u8>>>,
    /// Per partition: every offset below this is acknowledged as durable.
    acked_end: Vec<u64>,
    /// Per partition: the log starts `delete_records` asked for (0 first), and the
    /// acknowledged one.
    starts: Vec<BTreeSet<u64>>,
    acked_start: Vec<u64>,
    /// Commits of partition 0 asked for, and the acknowledged one.
    commits: BTreeSet<u64>,
    acked_commit: Option<u64>,
    /// Topic `GONE`: its first life's records, its second's, how far it got, and
    /// whether each life's records are acknowledged as durable.
    gone: [BTreeMap<u64, Vec<u8>>; 2],
    gone_stage: Gone,
    gone_durable: [bool; 2],
    /// Topic `COMPACTED`: whether its creation was acknowledged, the key and value written
    /// at each offset, and the end of the acknowledged ones.
    compacted_created: bool,
    compacted: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    compacted_acked: u64,
    /// The model, for a crash point right after each acknowledgement (which a call on
    /// another thread could otherwise pass unchecked).
    storage: Option<CrashStorage>,
}

/// Records an acknowledgement, then checks a crash right after it.
fn ack(expect: &Mutex<Expect>, record: impl FnOnce(&mut Expect)) {
    let storage = {
        let mut e = expect.lock().unwrap();
        record(&mut e);
        e.storage.clone()
    };
    if let Some(storage) = storage {
        storage.crash_now();
    }
}

/// Where topic `GONE` is in its deletion and re-creation: each step asked for, then
/// acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Gone {
    #[default]
    NotCreated,
    Created,
    DeleteAsked,
    Deleted,
    RecreateAsked,
    Recreated,
}

impl Expect {
    fn new() -> Expect {
        let n = PARTITIONS as usize;
        Expect {
            written: vec![BTreeMap::new(); n],
            acked_end: vec![0; n],
            starts: vec![BTreeSet::from([0]); n],
            acked_start: vec![0; n],
            ..Expect::default()
        }
    }

    /// Everything written so far is durable (a flush or a close answered).
    fn all_durable(&mut self) {
        for (end, written) in self.acked_end.iter_mut().zip(&self.written) {
            *end = written.keys().next_back().map_or(0, |last| last + 1);
        }
        if self.gone_stage <= Gone::DeleteAsked {
            self.gone_durable[0] = true;
        }
        self.compacted_acked = self.compacted.keys().next_back().map_or(0, |last| last + 1);
        self.gone_durable[1] |= self.gone_stage == Gone::Recreated;
    }
}

/// The value of the record at `offset` of partition `p`: unique, about 100 bytes.
fn value_of(p: u32, offset: u64) -> Vec<u8> {
    let mut value = format!("p{p}-o{offset}-").into_bytes();
    value.extend((0..90u64).map(|i| (offset.wrapping_mul(31) + i * 7 + u64::from(p)) as u8));
    value
}

fn topic_config(config: Config) -> TopicConfig {
    TopicConfig::default()
        .partitions(PARTITIONS)
        .replication_factor(config.replicas)
        .min_insync_replicas(config.replicas.min(2))
        .segment_bytes(2048)
        .segment_index_bytes(1024)
        .retention_bytes(1000)
        .fsync(config.policy)
}

/// Opens a log over `roots`: the workload's over the model (`storage`), an image's over the
/// real storage.
fn open(
    roots: &[PathBuf],
    storage: Option<Arc<dyn Storage>>,
    prefault: bool,
) -> tarnlog::Result<Log> {
    let mut builder = Log::builder()
        .dirs(roots)
        .offsets_topic_partitions(1)
        .offsets_topic_segment_bytes(4096)
        .background_maintenance(false)
        // Callbacks hold the model's lock for long: no follower may drop out meanwhile.
        .replica_lag_time_max_ms(3_600_000)
        .prefault(prefault);
    if let Some(storage) = storage {
        builder = builder.storage(storage);
    }
    builder.open()
}

/// The workload: a topic of two partitions (appends of one to three records, a flush every
/// eight appends under `FsyncPolicy::None`, a commit, a `delete_records`, two retention
/// passes), a topic deleted and created again, a compacted topic, a close and reopen, and
/// a close. With several directories one of them also fails (through `faults`) and is
/// restored while it runs.
fn workload(
    roots: &[PathBuf],
    storage: &CrashStorage,
    faults: &FaultStorage,
    expect: &Mutex<Expect>,
    config: Config,
) -> tarnlog::Result<()> {
    let shared: Arc<dyn Storage> = Arc::new(storage.clone());
    let mut log = open(roots, Some(Arc::clone(&shared)), config.prefault)?;
    log.create_topic(TOPIC, topic_config(config))?;
    ack(expect, |e| e.topic_acked = true);
    let gone_config = || topic_config(config).partitions(1);
    log.create_topic(GONE, gone_config())?;
    ack(expect, |e| e.gone_stage = Gone::Created);
    log.create_topic(
        COMPACTED,
        topic_config(config)
            .partitions(1)
            .segment_bytes(1024)
            .cleanup_policy(CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.0),
    )?;
    ack(expect, |e| e.compacted_created = true);
    append_gone(&log, expect, config, 0, 2)?;
    for i in 0..APPENDS {
        append_values(&log, expect, config, i)?;
        if i % 2 == 1 {
            append_compacted(&log, expect, config, i)?;
        }
        if roots.len() > 1 && i == 5 {
            // Its next call fails, and it goes offline with its replicas.
            faults.fail_dir(&roots[1], FaultKind::Eio);
        }
        if roots.len() > 1 && i == 11 {
            let online = |log: &Log| {
                log.dir_status()
                    .iter()
                    .map(|d| d.online)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                online(&log),
                [true, false, true],
                "directory 1 went offline"
            );
            faults.heal_dir(&roots[1]);
            log.restore_dir(&roots[1])?;
            assert_eq!(online(&log), [true, true, true], "directory 1 is back");
        }
        if config.policy == FsyncPolicy::None && i % 8 == 7 {
            log.flush()?;
            ack(expect, Expect::all_durable);
        }
        if i == 9 {
            let tp = TopicPartition::new(TOPIC, 0);
            let at = log.topic(TOPIC)?.partition(0)?.high_watermark();
            expect.lock().unwrap().commits.insert(at);
            log.commit_offsets(GROUP, &[(tp, OffsetAndMetadata::new(at))])?;
            ack(expect, |e| e.acked_commit = Some(at));
        }
        if i == 13 {
            let partition = log.topic(TOPIC)?.partition(1)?;
            let before = partition.high_watermark().saturating_sub(2);
            expect.lock().unwrap().starts[1].insert(before);
            partition.delete_records(before)?;
            ack(expect, |e| e.acked_start[1] = before);
        }
        if i == 14 || i == 22 {
            retention_pass(&log, expect)?;
        }
        if i == 19 {
            expect.lock().unwrap().gone_stage = Gone::DeleteAsked;
            log.delete_topic(GONE)?;
            ack(expect, |e| e.gone_stage = Gone::Deleted);
        }
        if i == 20 {
            expect.lock().unwrap().gone_stage = Gone::RecreateAsked;
            log.create_topic(GONE, gone_config())?;
            ack(expect, |e| e.gone_stage = Gone::Recreated);
            append_gone(&log, expect, config, 1, 1)?;
        }
        if i == 17 {
            log.close()?;
            ack(expect, Expect::all_durable);
            log = open(roots, Some(Arc::clone(&shared)), config.prefault)?;
        }
    }
    log.close()?;
    ack(expect, Expect::all_durable);
    Ok(())
}

/// Appends one to three records to partition `i % 2` of topic `TOPIC`, one batch.
fn append_values(log: &Log, expect: &Mutex<Expect>, config: Config, i: u64) -> tarnlog::Result<()> {
    let p = (i % u64::from(PARTITIONS)) as u32;
    let partition = log.topic(TOPIC)?.partition(p)?;
    let base = partition.log_end_offset();
    let values: Vec<Vec<u8>> = (base..base + 1 + i % 3).map(|o| value_of(p, o)).collect();
    {
        let mut e = expect.lock().unwrap();
        for (o, v) in (base..).zip(&values) {
            e.written[p as usize].insert(o, v.clone());
        }
    }
    let info = partition.append_values(&values)?;
    assert_eq!(
        info.base_offset, base,
        "append {i} went to an unexpected offset"
    );
    if config.policy == FsyncPolicy::EveryBatch {
        ack(expect, |e| e.acked_end[p as usize] = info.last_offset + 1);
    }
    Ok(())
}

/// `Log::maintain` over topic `TOPIC`: retention may delete anything below the high
/// watermarks, and what it deleted must stay deleted.
fn retention_pass(log: &Log, expect: &Mutex<Expect>) -> tarnlog::Result<()> {
    {
        let topic = log.topic(TOPIC)?;
        let mut e = expect.lock().unwrap();
        for p in 0..PARTITIONS {
            let hw = topic.partition(p)?.high_watermark();
            e.starts[p as usize].insert(hw);
        }
    }
    log.maintain()?;
    let topic = log.topic(TOPIC)?;
    let mut starts = Vec::new();
    for p in 0..PARTITIONS {
        starts.push(topic.partition(p)?.log_start_offset());
    }
    ack(expect, |e| {
        for (acked, start) in e.acked_start.iter_mut().zip(starts) {
            *acked = (*acked).max(start);
        }
    });
    Ok(())
}

/// Appends two keyed records to topic `COMPACTED`, one batch.
fn append_compacted(
    log: &Log,
    expect: &Mutex<Expect>,
    config: Config,
    i: u64,
) -> tarnlog::Result<()> {
    let partition = log.topic(COMPACTED)?.partition(0)?;
    let base = partition.log_end_offset();
    let records: Vec<(Vec<u8>, Vec<u8>)> = (base..base + 2)
        .map(|o| {
            let key = format!("k{}", (o + i) % KEYS).into_bytes();
            (key, value_of(20, o))
        })
        .collect();
    let mut batch = BatchBuilder::new();
    for (key, value) in &records {
        batch.push(1_000 + i as i64, Some(key), Some(value), &[]);
    }
    expect
        .lock()
        .unwrap()
        .compacted
        .extend((base..).zip(records));
    let info = partition.append(batch.finish().unwrap())?;
    assert_eq!(info.base_offset, base);
    if config.policy == FsyncPolicy::EveryBatch {
        ack(expect, |e| e.compacted_acked = info.last_offset + 1);
    }
    Ok(())
}

/// Topic `COMPACTED` in an image: every record is one written at its offset, and every
/// acknowledged record is there unless a later record of its key is.
fn check_compacted(
    log: &Log,
    expect: &Expect,
    problems: &mut Vec<String>,
    tally: &mut Tally,
) -> tarnlog::Result<()> {
    let partition = match log.topic(COMPACTED) {
        Ok(topic) => topic.partition(0)?,
        Err(Error::UnknownTopic { .. }) if !expect.compacted_created => return Ok(()),
        Err(error) => return Err(error),
    };
    let end = partition.log_end_offset();
    let mut present: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut offset = partition.log_start_offset();
    while offset < end {
        let read = partition.read(offset, 1 << 20)?;
        let mut moved = false;
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records() {
                let record = record?;
                let at = record.offset as u64;
                let found = (
                    record.key.unwrap_or_default().to_vec(),
                    record.value.unwrap_or_default().to_vec(),
                );
                if expect.compacted.get(&at) != Some(&found) {
                    problems.push(format!(
                        "{COMPACTED}: offset {at} holds a record never written there"
                    ));
                }
                present.insert(at, found.0);
            }
            offset = offset.max(batch.next_offset() as u64);
            moved = true;
        }
        if !moved {
            problems.push(format!("{COMPACTED}: empty read at {offset} below {end}"));
            break;
        }
    }
    for (&at, (key, _)) in expect.compacted.range(..expect.compacted_acked) {
        if present.contains_key(&at) {
            continue;
        }
        tally.superseded += 1;
        if !present.range(at + 1..).any(|(_, later)| later == key) {
            problems.push(format!(
                "{COMPACTED}: acknowledged record at {at} lost, and no later record of its key \
                 (log {}..{end})",
                partition.log_start_offset()
            ));
        }
    }
    Ok(())
}

/// Appends `count` records to topic `GONE` in its `life` (0 or 1), one batch.
fn append_gone(
    log: &Log,
    expect: &Mutex<Expect>,
    config: Config,
    life: usize,
    count: u64,
) -> tarnlog::Result<()> {
    let values: Vec<Vec<u8>> = (0..count).map(|o| value_of(10 + life as u32, o)).collect();
    {
        let mut e = expect.lock().unwrap();
        for (o, v) in (0..).zip(&values) {
            e.gone[life].insert(o, v.clone());
        }
    }
    log.topic(GONE)?.partition(0)?.append_values(&values)?;
    if config.policy == FsyncPolicy::EveryBatch {
        ack(expect, |e| e.gone_durable[life] = true);
    }
    Ok(())
}

/// Topic `GONE` in an image: present only in a life the workload had asked for, with no
/// record of the other, and all of its second life's records once acknowledged.
fn check_gone(log: &Log, expect: &Expect, problems: &mut Vec<String>) -> tarnlog::Result<()> {
    let stage = expect.gone_stage;
    let partition = match log.topic(GONE) {
        Ok(topic) => topic.partition(0)?,
        Err(Error::UnknownTopic { .. }) => {
            if matches!(stage, Gone::Created | Gone::Recreated) {
                problems.push(format!("topic {GONE} missing at stage {stage:?}"));
            }
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    let read = partition.read(0, 1 << 20)?;
    let mut found = Vec::new();
    for record in read.records() {
        let record = record?;
        found.push((
            record.offset as u64,
            record.value.unwrap_or_default().to_vec(),
        ));
    }
    let life_of = |life: usize| {
        found
            .iter()
            .all(|(o, v)| expect.gone[life].get(o) == Some(v))
    };
    let whole = |life: usize| {
        life_of(life) && (!expect.gone_durable[life] || found.len() == expect.gone[life].len())
    };
    let ok = match stage {
        Gone::NotCreated | Gone::Created | Gone::DeleteAsked => whole(0),
        Gone::Deleted => false,
        Gone::RecreateAsked => life_of(1),
        Gone::Recreated => whole(1),
    };
    if !ok {
        problems.push(format!(
            "topic {GONE} at stage {stage:?} holds {} records: {:?}",
            found.len(),
            found
                .iter()
                .map(|(o, v)| (o, String::from_utf8_lossy(&v[..6])))
                .collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Opens an image and checks it against what was acknowledged; the problems found.
fn check_image(roots: &[PathBuf], expect: &Expect, tally: &mut Tally) -> Vec<String> {
    let log = match open(roots, None, false) {
        Ok(log) => log,
        Err(error) => return vec![format!("the image does not open: {error}")],
    };
    let mut problems = Vec::new();
    // Only unsynced state was lost: nothing synced may read as damaged.
    let report = log.recovery_report();
    for (what, found) in [
        ("offline directories", format!("{:?}", report.offline_dirs)),
        (
            "unreadable checkpoints",
            format!("{:?}", report.unreadable_checkpoints),
        ),
        ("repaired replicas", format!("{:?}", report.repaired)),
    ] {
        if found != "[]" {
            problems.push(format!("{what} after the power loss: {found}"));
        }
    }
    // Every replica caught up during the open (followers copy from the leader there).
    for topic in [TOPIC, GONE, COMPACTED] {
        if let Ok(described) = log.describe_topic(topic)
            && described.under_replicated().count() > 0
        {
            problems.push(format!("under-replicated after the open: {described:?}"));
        }
    }
    if let Err(error) = check_log(&log, expect, &mut problems, tally) {
        problems.push(format!("reading the image failed: {error}"));
    }
    if let Err(error) = log.close() {
        problems.push(format!("closing the image failed: {error}"));
    }
    if roots.len() > 1 {
        compare_replicas(roots, &mut problems);
    }
    problems
}

/// After a close, the replicas of each partition hold the same batches, byte for byte,
/// from the first offset all of them hold on. (Not the compacted topics: each replica
/// cleans on its own, so a power loss can catch one replica cleaned and another not.)
fn compare_replicas(roots: &[PathBuf], problems: &mut Vec<String>) {
    for name in ["t-0", "t-1", "gone-0"] {
        let copies: Vec<BTreeMap<u64, Vec<u8>>> = roots
            .iter()
            .map(|root| batches_in(&root.join(name)))
            .filter(|batches| !batches.is_empty())
            .collect();
        let from = copies
            .iter()
            .filter_map(|c| c.keys().next().copied())
            .max()
            .unwrap_or(0);
        let tails: Vec<Vec<(&u64, &Vec<u8>)>> =
            copies.iter().map(|c| c.range(from..).collect()).collect();
        if tails.windows(2).any(|pair| pair[0] != pair[1]) {
            let bases: Vec<Vec<u64>> = tails
                .iter()
                .map(|t| t.iter().map(|(b, _)| **b).collect())
                .collect();
            problems.push(format!(
                "{name}: the replicas differ from offset {from} (batch bases {bases:?})"
            ));
        }
    }
}

/// The batches of a partition directory's segment files, by base offset.
fn batches_in(dir: &Path) -> BTreeMap<u64, Vec<u8>> {
    let mut batches = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return batches;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        let mut at = 0;
        while let Ok(header) = BatchHeader::parse(&bytes[at..], usize::MAX) {
            let end = at + header.size();
            if end > bytes.len() {
                break;
            }
            batches.insert(header.base_offset as u64, bytes[at..end].to_vec());
            at = end;
        }
    }
    batches
}

fn check_log(
    log: &Log,
    expect: &Expect,
    problems: &mut Vec<String>,
    tally: &mut Tally,
) -> tarnlog::Result<()> {
    let topic = match log.topic(TOPIC) {
        Ok(topic) => topic,
        Err(Error::UnknownTopic { .. }) if !expect.topic_acked => return Ok(()),
        Err(error) => return Err(error),
    };
    for p in 0..PARTITIONS {
        let i = p as usize;
        let partition = topic.partition(p)?;
        let start = partition.log_start_offset();
        let end = partition.log_end_offset();
        let hw = partition.high_watermark();
        // An unanswered deletion may have removed part of what it asked for.
        let asked = expect.starts[i].last().copied().unwrap_or(0);
        if start < expect.acked_start[i] || start > asked {
            problems.push(format!(
                "partition {p}: log start {start} (asked for {:?}, acknowledged {})",
                expect.starts[i], expect.acked_start[i]
            ));
        }
        if hw < expect.acked_end[i] {
            problems.push(format!(
                "partition {p}: high watermark {hw} below the acknowledged end {}",
                expect.acked_end[i]
            ));
        }
        let mut offset = start;
        while offset < end {
            let read = partition.read(offset, 1 << 20)?;
            if read.is_empty() {
                problems.push(format!("partition {p}: empty read at {offset} below {end}"));
                break;
            }
            for record in read.records() {
                let record = record?;
                let expected = expect.written[i].get(&offset);
                if record.offset as u64 != offset {
                    problems.push(format!(
                        "partition {p}: offset {} where {offset} was next",
                        record.offset
                    ));
                    return Ok(());
                }
                if expected.is_none() || record.value.as_deref() != expected.map(Vec::as_slice) {
                    problems.push(format!(
                        "partition {p}: offset {offset} holds a record never written there"
                    ));
                }
                offset += 1;
                tally.records += 1;
            }
        }
        tally.acked += expect.acked_end[i].saturating_sub(start);
        let durable_from = start.max(expect.acked_start[i]);
        if end < expect.acked_end[i] && durable_from < expect.acked_end[i] {
            problems.push(format!(
                "partition {p}: acknowledged records {}..{} lost (log end {end})",
                end.max(durable_from),
                expect.acked_end[i]
            ));
        }
    }
    check_gone(log, expect, problems)?;
    check_compacted(log, expect, problems, tally)?;
    let tp = TopicPartition::new(TOPIC, 0);
    let committed = log.committed_offset(GROUP, &tp)?.map(|c| c.offset);
    let end = topic.partition(0)?.log_end_offset();
    match committed {
        Some(c) if !expect.commits.contains(&c) => {
            problems.push(format!("committed offset {c} was never committed"));
        }
        Some(c) if c > end => {
            problems.push(format!("committed offset {c} is past the log end {end}"));
        }
        None if expect.acked_commit.is_some() => {
            problems.push(format!(
                "acknowledged commit {:?} lost",
                expect.acked_commit
            ));
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Tally {
    points: u64,
    images: u64,
    /// Records read back, and acknowledged ones among them.
    records: u64,
    acked: u64,
    /// Acknowledged records of `COMPACTED` found cleaned away.
    superseded: u64,
    /// Second power losses, and how many of them came after the recovery had ended.
    doubles: u64,
    doubles_after: u64,
    failures: Vec<String>,
}

/// Writes an image of `crash` into `roots`. With several directories a random image also
/// loses one of them, which comes back empty: the contract allows losing replication
/// factor − min ISR of them on top of the power loss.
fn write_image(crash: &Crash<'_>, roots: &[PathBuf], keep: Keep, seed: u64) -> std::io::Result<()> {
    crash.write_image(roots, keep, &mut Rng(seed))?;
    if roots.len() > 1 && keep == Keep::Random {
        let lost = &roots[Rng(seed ^ 0x10_57d1).below(roots.len())];
        std::fs::remove_dir_all(lost)?;
        std::fs::create_dir(lost)?;
    }
    Ok(())
}

/// Writes and checks the images of one crash point.
fn check_point(
    crash: &Crash<'_>,
    config: Config,
    expect: &Expect,
    rng: &mut Rng,
    randoms: u64,
    tally: &mut Tally,
) {
    tally.points += 1;
    let keeps = [Keep::Synced, Keep::All]
        .into_iter()
        .chain((0..randoms).map(|_| Keep::Random));
    for keep in keeps {
        let image_seed = rng.next_u64();
        let dir = common::scratch("tarnlog-power-");
        let roots = roots_in(dir.path(), config.replicas);
        let written = write_image(crash, &roots, keep, image_seed);
        tally.images += 1;
        let problems = match written {
            Ok(()) => check_image(&roots, expect, tally),
            Err(error) => vec![format!("writing the image failed: {error}")],
        };
        if !problems.is_empty() && tally.failures.len() < 5 {
            // The same image again, as it was before the check opened it.
            let kept = tempfile::Builder::new()
                .prefix("tarnlog-power-failed-")
                .tempdir()
                .unwrap()
                .keep();
            let _ = write_image(crash, &roots_in(&kept, config.replicas), keep, image_seed);
            tally.failures.push(format!(
                "{config:?}: crash before call {} ({keep:?}, image seed {image_seed}), image kept in \
                 {}:\n  {}",
                crash.op,
                kept.display(),
                problems.join("\n  ")
            ));
        }
    }
    check_double(crash, config, expect, rng, tally);
}

/// A second power loss, during the recovery of the first: a random image of `crash` is
/// opened and closed over a model of its own, which writes a random image at one call of
/// that run (or after it) to be checked as the first ones are.
fn check_double(
    crash: &Crash<'_>,
    config: Config,
    expect: &Expect,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    let (first_seed, second_seed) = (rng.next_u64(), rng.next_u64());
    let first = common::scratch("tarnlog-power-");
    let first_roots = roots_in(first.path(), config.replicas);
    let mut problems = Vec::new();
    if let Err(error) = crash.write_image(&first_roots, Keep::Random, &mut Rng(first_seed)) {
        problems.push(format!("writing the image failed: {error}"));
    }
    let storage = CrashStorage::new(&first_roots, config.size_rule).unwrap();
    // The call to crash at; 0 once the run is over (a crash after it).
    let at = Arc::new(AtomicU64::new(1 + rng.below(160) as u64));
    let second = common::scratch("tarnlog-power-");
    let second_roots = roots_in(second.path(), config.replicas);
    let found = Arc::new(Mutex::new(None::<(u64, bool, Vec<String>, Tally)>));
    {
        let (at, found, roots, expect) = (
            Arc::clone(&at),
            Arc::clone(&found),
            second_roots.clone(),
            expect.clone(),
        );
        storage.on_crash(move |inner| {
            let target = at.load(Ordering::Acquire);
            let mut found = found.lock().unwrap();
            if found.is_some() || (inner.op != target && target != 0) {
                return;
            }
            let mut counts = Tally::default();
            let problems = match inner.write_image(&roots, Keep::Random, &mut Rng(second_seed)) {
                Ok(()) => check_image(&roots, &expect, &mut counts),
                Err(error) => vec![format!("writing the second image failed: {error}")],
            };
            *found = Some((inner.op, inner.forced, problems, counts));
        });
    }
    let shared: Arc<dyn Storage> = Arc::new(storage.clone());
    if let Err(error) = open(&first_roots, Some(shared), false).and_then(Log::close) {
        problems.push(format!("recovering the first image failed: {error}"));
    }
    at.store(0, Ordering::Release);
    storage.crash_now();
    storage.clear_callback();
    let (op, after, second_problems, counts) = found.lock().unwrap().take().unwrap();
    tally.images += 1;
    tally.doubles += 1;
    tally.doubles_after += u64::from(after);
    tally.records += counts.records;
    tally.acked += counts.acked;
    tally.superseded += counts.superseded;
    problems.extend(second_problems);
    if !problems.is_empty() && tally.failures.len() < 5 {
        let kept = tempfile::Builder::new()
            .prefix("tarnlog-power-failed-")
            .tempdir()
            .unwrap()
            .keep();
        let _ = crash.write_image(
            &roots_in(&kept, config.replicas),
            Keep::Random,
            &mut Rng(first_seed),
        );
        tally.failures.push(format!(
            "{config:?}: crash before call {} (Random, image seed {first_seed}; first image \
             kept in {}), then a crash before call {op} of its recovery (second image seed \
             {second_seed}):\n  {}",
            crash.op,
            kept.display(),
            problems.join("\n  ")
        ));
    }
}

fn roots_in(dir: &Path, replicas: u32) -> Vec<PathBuf> {
    (0..replicas)
        .map(|r| {
            let root = dir.join(format!("r{r}"));
            std::fs::create_dir_all(&root).unwrap();
            root
        })
        .collect()
}

fn power_loss(name: &str, config: Config) {
    let seed = seed(name);
    let soak: Option<u64> = std::env::var("TARNLOG_POWER_LOSS_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            std::env::var("TARNLOG_SOAK")
                .is_ok_and(|v| v == "1")
                .then_some(20)
        });
    let randoms = soak.unwrap_or(if config.replicas > 1 { 1 } else { 2 });
    // With three replicas one crash point in two (chosen at random; every one right after
    // an acknowledgement), unless soaking: the runs cost three times as much.
    let stride = if config.replicas > 1 && soak.is_none() {
        2
    } else {
        1
    };
    let began = Instant::now();
    let dir = common::scratch("tarnlog-power-run-");
    let roots = roots_in(dir.path(), config.replicas);
    let faults = FaultStorage::new(OsStorage::shared());
    let storage = CrashStorage::over(faults.shared(), &roots, config.size_rule).unwrap();
    let expect = Arc::new(Mutex::new(Expect {
        storage: Some(storage.clone()),
        ..Expect::new()
    }));
    let tally = Arc::new(Mutex::new(Tally::default()));
    {
        let (expect, tally) = (Arc::clone(&expect), Arc::clone(&tally));
        let mut rng = Rng(seed);
        storage.on_crash(move |crash| {
            if !crash.forced && rng.below(stride) != 0 {
                return;
            }
            let expect = expect.lock().unwrap().clone();
            let mut tally = tally.lock().unwrap();
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_point(crash, config, &expect, &mut rng, randoms, &mut tally);
            }));
            if checked.is_err() {
                tally.failures.push(format!(
                    "{config:?}: a panic checking the crash before call {}",
                    crash.op
                ));
            }
        });
    }
    workload(&roots, &storage, &faults, &expect, config).expect("the workload fails");
    // A crash after the workload: everything is durable.
    storage.crash_now();
    storage.clear_callback();
    let tally = tally.lock().unwrap();
    let e = expect.lock().unwrap();
    println!(
        "{name}: {} crash points, {} images ({} records read back, {} of them acknowledged; \
         log starts at the end {:?}; {} acknowledged records compacted away; {} second power \
         losses, {} of them after the recovery) in {:.1} s, {} failing",
        tally.points,
        tally.images,
        tally.records,
        tally.acked,
        e.acked_start,
        tally.superseded,
        tally.doubles,
        tally.doubles_after,
        began.elapsed().as_secs_f64(),
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{name}: power-loss images failed (TARNLOG_SEED={seed}):\n{}",
        tally.failures.join("\n")
    );
    assert!(
        tally.points > 100,
        "{name}: only {} crash points",
        tally.points
    );
}

#[test]
fn power_loss_every_batch() {
    power_loss(
        "power_loss_every_batch",
        Config {
            policy: FsyncPolicy::EveryBatch,
            replicas: 1,
            size_rule: SizeRule::AnySync,
            prefault: false,
        },
    );
}

#[test]
fn power_loss_no_fsync() {
    power_loss(
        "power_loss_no_fsync",
        Config {
            policy: FsyncPolicy::None,
            replicas: 1,
            size_rule: SizeRule::AnySync,
            prefault: true,
        },
    );
}

// Stores through the mapping, synced by flushes and rolls, with lengths durable only at
// `fsync`.
#[test]
fn power_loss_no_fsync_size_durable_only_at_fsync() {
    power_loss(
        "power_loss_no_fsync_size_durable_only_at_fsync",
        Config {
            policy: FsyncPolicy::None,
            replicas: 1,
            size_rule: SizeRule::SyncAll,
            prefault: false,
        },
    );
}

#[test]
fn power_loss_three_replicas() {
    power_loss(
        "power_loss_three_replicas",
        Config {
            policy: FsyncPolicy::EveryBatch,
            replicas: 3,
            size_rule: SizeRule::AnySync,
            prefault: false,
        },
    );
}

#[test]
fn power_loss_size_durable_only_at_fsync() {
    power_loss(
        "power_loss_size_durable_only_at_fsync",
        Config {
            policy: FsyncPolicy::EveryBatch,
            replicas: 1,
            size_rule: SizeRule::SyncAll,
            prefault: false,
        },
    );
}

/// A topic that ran under `FsyncPolicy::None` (its sealed segments never synced) and then
/// under `EveryBatch`: once a `flush` after the change returned, a power loss keeps every
/// record, also after a roll under the new policy. (That roll synced only the segment it
/// sealed and took it for covering those sealed before it, so the flush skipped them.)
#[test]
fn segments_sealed_without_fsync_are_synced_after_the_policy_changes() {
    let dir = common::scratch("tarnlog-power-run-");
    let roots = roots_in(dir.path(), 1);
    let image = common::scratch("tarnlog-power-image-");
    let image_roots = roots_in(image.path(), 1);
    let storage = CrashStorage::new(&roots, SizeRule::AnySync).unwrap();
    {
        let image_roots = image_roots.clone();
        storage.on_crash(move |crash| {
            if crash.forced {
                crash
                    .write_image(&image_roots, Keep::Synced, &mut Rng(1))
                    .unwrap();
            }
        });
    }
    let log = open(&roots, Some(Arc::new(storage.clone())), false).unwrap();
    let config = TopicConfig::default()
        .segment_bytes(512)
        .fsync(FsyncPolicy::None);
    let partition = log
        .create_topic(TOPIC, config)
        .unwrap()
        .partition(0)
        .unwrap();
    let values: Vec<String> = (0..30)
        .map(|i| format!("{i:03}-{}", "v".repeat(40)))
        .collect();
    for value in &values[..15] {
        partition.append_values([value]).unwrap();
    }
    assert!(partition.segment_count() >= 3);
    let config = log
        .topic(TOPIC)
        .unwrap()
        .config()
        .fsync(FsyncPolicy::EveryBatch);
    log.alter_topic_config(TOPIC, config).unwrap();
    // The first append under the new policy rolls (it cannot fit after what the active
    // segment holds), before it syncs anything.
    let before = partition.segment_count();
    partition.append_values([&values[15..20].concat()]).unwrap();
    assert!(
        partition.segment_count() > before,
        "a roll under EveryBatch"
    );
    for value in &values[20..] {
        partition.append_values([value]).unwrap();
    }
    log.flush().unwrap();
    // The power goes now: only what was synced is on the disk.
    storage.crash_now();
    storage.clear_callback();
    drop(partition);
    log.simulate_crash();
    let log = open(&image_roots, None, false).unwrap();
    let partition = log.topic(TOPIC).unwrap().partition(0).unwrap();
    let mut read = Vec::new();
    let mut offset = 0;
    while offset < partition.log_end_offset() {
        for record in partition.read(offset, 1 << 20).unwrap().records() {
            let record = record.unwrap();
            read.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            offset = record.offset as u64 + 1;
        }
    }
    let mut expected = values[..15].to_vec();
    expected.push(values[15..20].concat());
    expected.extend_from_slice(&values[20..]);
    assert_eq!(read, expected);
    log.close().unwrap();
}
