//! The `ops_model` fuzz oracle (reliability plan §(e)): a sequence of operations decoded
//! from arbitrary bytes runs against a real log in a scratch directory and against a model
//! of its one partition (records by offset, batch boundaries, log start, committed
//! offsets), and every answer is checked against the model: appends, reads at any offset,
//! `delete_records`, truncation, commits, retention after the clock moves, flushes, clean
//! reopens and crashes (`simulate_crash`: the process's writes stay in the page cache, so
//! everything must come back).
//!
//! Each operation takes one tag byte and up to three parameter bytes (missing bytes read as
//! 0); at most [`MAX_OPS`] operations run, so that one input stays quick. An input whose
//! length leaves three bytes over (`len % 4 == 3`) runs against a compacted topic instead:
//! every record keyed, `delete_records` refused, no truncation, and the retention step
//! runs the cleaner, after which the whole log must be the model's records in order with
//! some left out, the latest of every key among them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::{Clock, ManualClock};
use crate::codec::BatchBuilder;
use crate::config::{CleanupPolicy, TopicConfig};
use crate::error::Error;
use crate::log::{Log, Partition};
use crate::offsets::OffsetAndMetadata;
use crate::types::TopicPartition;

/// Operations an input runs at most.
pub const MAX_OPS: usize = 48;
const START_MS: i64 = 1_700_000_000_000;
const RETENTION_MS: i64 = 600_000;
const TOPIC: &str = "t";
const GROUPS: [&str; 3] = ["g0", "g1", "g2"];

/// One record as the model holds it.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: i64,
}

/// What the partition must hold.
#[derive(Debug, Default)]
struct Model {
    /// Every record ever appended and not truncated, by offset (below `start` too).
    records: Vec<Rec>,
    /// Base offsets of the batches, ascending.
    batches: Vec<u64>,
    start: u64,
    committed: BTreeMap<&'static str, u64>,
    /// The topic is compacted: records may be missing from reads (never changed).
    compacted: bool,
}

impl Model {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    /// An offset from `start` to one past the end, picked by `pick`.
    fn pick(&self, pick: u16) -> u64 {
        self.start + u64::from(pick) % (self.end() - self.start + 2)
    }
}

/// A scratch directory of its own for one input, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tarnlog-ops-model-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(root: &Path, clock: &Arc<ManualClock>) -> Log {
    Log::builder()
        .dir(root)
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .background_maintenance(false)
        .offsets_topic_partitions(1)
        .open()
        .expect("the log opens")
}

fn partition(log: &Log) -> Partition {
    log.topic(TOPIC)
        .and_then(|t| t.partition(0))
        .expect("the partition is there")
}

/// The record at `offset` of an append's batch, made from the operation's parameters.
fn record(offset: u64, index: usize, len: usize, keyed: bool, timestamp: i64) -> Rec {
    Rec {
        key: keyed.then(|| format!("k{}", offset % 5).into_bytes()),
        value: (0..len)
            .map(|j| {
                (offset as u8)
                    .wrapping_add(j as u8)
                    .wrapping_mul(index as u8 | 1)
            })
            .collect(),
        timestamp,
    }
}

/// Runs the operations `data` encodes; panics when the log disagrees with the model.
///
/// # Panics
/// When the oracle finds a violation.
pub fn fuzz_ops_model(data: &[u8]) {
    let scratch = Scratch::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut log = open(&scratch.0, &clock);
    // Small segments and index intervals: rolls, index entries and retention of whole
    // segments come within a few appends.
    let compacted = data.len() % 4 == 3;
    let mut config = TopicConfig::default()
        .partitions(1)
        .segment_bytes(1024)
        .index_interval_bytes(64)
        .retention_ms(RETENTION_MS);
    if compacted {
        config = config
            .cleanup_policy(CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.0);
    }
    log.create_topic(TOPIC, config)
        .expect("the topic is created");
    let mut model = Model {
        compacted,
        ..Model::default()
    };
    let tp = TopicPartition::new(TOPIC, 0);
    for (step, op) in data.chunks(4).take(MAX_OPS).enumerate() {
        let byte = |i: usize| op.get(i).copied().unwrap_or(0);
        let pick = u16::from_le_bytes([byte(1), byte(2)]);
        let p = partition(&log);
        let what = match byte(0) % 10 {
            0..=2 => append(
                &p,
                &mut model,
                &clock,
                byte(1),
                byte(2),
                byte(3) | u8::from(compacted),
            ),
            3 => read(&p, &model, pick, byte(3)),
            4 => delete_records(&p, &mut model, pick),
            5 => truncate(&p, &mut model, pick),
            6 => commit(&log, &tp, &mut model, byte(1), pick),
            7 if compacted => compact(&log, &p, &model),
            7 => retain(&log, &p, &mut model, &clock, byte(1)),
            8 => {
                p.flush().expect("flush");
                "flush"
            }
            _ => {
                drop(p);
                if byte(1) & 1 == 0 {
                    log.close().expect("close");
                } else {
                    log.simulate_crash();
                }
                log = open(&scratch.0, &clock);
                check_committed(&log, &tp, &model);
                "reopen"
            }
        };
        check_shape(&partition(&log), &model, step, what);
    }
    log.close().expect("close");
}

/// Appends a batch of 1 to 8 records; one too large for a segment is refused whole.
fn append(
    p: &Partition,
    model: &mut Model,
    clock: &ManualClock,
    n: u8,
    len: u8,
    keyed: u8,
) -> &'static str {
    let base = model.end();
    let now = clock.now_ms();
    let records: Vec<Rec> = (0..=usize::from(n % 8))
        .map(|i| {
            record(
                base + i as u64,
                i,
                usize::from(len) % 120,
                keyed & 1 == 1,
                now,
            )
        })
        .collect();
    let mut builder = BatchBuilder::new();
    for r in &records {
        builder.push(r.timestamp, r.key.as_deref(), Some(&r.value), &[]);
    }
    let bytes = builder
        .finish_vec()
        .expect("a batch of at least one record");
    match p.append(&bytes) {
        Ok(info) => {
            assert_eq!(info.base_offset, base, "append: base offset");
            assert_eq!(info.last_offset, base + records.len() as u64 - 1);
            model.batches.push(base);
            model.records.extend(records);
        }
        Err(Error::RecordTooLarge { .. }) => assert!(bytes.len() > 1024, "refused: {bytes:?}"),
        Err(error) => panic!("append: {error}"),
    }
    "append"
}

/// Reads at an offset from below the log start to past the end: records from there on,
/// the model's, in order; `OffsetOutOfRange` outside the log; nothing at its end.
fn read(p: &Partition, model: &Model, pick: u16, max: u8) -> &'static str {
    let offset = if pick & 0x8000 != 0 && model.start > 0 {
        model.start - 1
    } else {
        model.pick(pick)
    };
    let max_bytes = usize::from(max) * 16;
    match p.read(offset, max_bytes) {
        Ok(read) => {
            assert!(
                offset >= model.start && offset <= model.end(),
                "read {offset}"
            );
            let mut next = offset;
            for record in read.records() {
                let record = record.expect("a stored record decodes");
                let at = record.offset as u64;
                if at < offset {
                    continue;
                }
                if model.compacted {
                    assert!(
                        at >= next && at < model.end(),
                        "read {offset}: {at} after {next}"
                    );
                } else {
                    assert_eq!(at, next, "read {offset}: offsets in order");
                }
                check_record(model, at, &record);
                next = at + 1;
            }
            // KIP-74: the first batch comes whole whatever `max_bytes` says (compaction may
            // have left nothing from `offset` on).
            if !model.compacted {
                assert_eq!(next > offset, offset < model.end(), "read {offset}: {next}");
            }
        }
        Err(Error::OffsetOutOfRange { .. }) => {
            assert!(
                offset < model.start || offset > model.end(),
                "read {offset}"
            );
        }
        Err(error) => panic!("read {offset}: {error}"),
    }
    "read"
}

/// `delete_records` up to one past the end: the log start moves up to it (never back);
/// past the high watermark it is refused and nothing changes, and so on a compacted topic.
fn delete_records(p: &Partition, model: &mut Model, pick: u16) -> &'static str {
    let before = if pick & 0x8000 != 0 && model.start > 0 {
        model.start - 1
    } else {
        model.pick(pick)
    };
    let deleted = p.delete_records(before);
    if model.compacted {
        assert!(
            matches!(deleted, Err(Error::PolicyViolation { .. })),
            "delete_records on a compacted topic: {deleted:?}"
        );
        return "delete_records";
    }
    match deleted {
        Ok(start) => {
            assert!(before <= model.end(), "deleted before {before}");
            model.start = model.start.max(before);
            assert_eq!(start, model.start, "the new log start");
        }
        Err(Error::OffsetOutOfRange { .. }) => assert!(before > model.end()),
        Err(error) => panic!("delete_records({before}): {error}"),
    }
    "delete_records"
}

/// Truncation to an offset at or above the log start: everything from the base of the
/// batch holding it on goes (the log then ends at its start if that batch began below).
fn truncate(p: &Partition, model: &mut Model, pick: u16) -> &'static str {
    if model.compacted {
        // Batch boundaries after cleaning are the cleaner's.
        return "no truncation";
    }
    let target = model.pick(pick);
    let Some(&base) = model.batches.iter().rev().find(|&&b| b <= target) else {
        return "no truncation";
    };
    if target >= model.end() {
        return "no truncation";
    }
    p.truncate_to(target).expect("truncate");
    // A batch that began below the log start goes whole, and the log ends at its start.
    model.records.truncate(base.max(model.start) as usize);
    model.batches.retain(|&b| b < base);
    "truncate"
}

/// A commit of an offset up to one past the high watermark: refused past it.
fn commit(log: &Log, tp: &TopicPartition, model: &mut Model, group: u8, pick: u16) -> &'static str {
    let group = GROUPS[usize::from(group) % GROUPS.len()];
    let offset = u64::from(pick) % (model.end() + 2);
    match log.commit_offsets(group, &[(tp.clone(), OffsetAndMetadata::new(offset))]) {
        Ok(()) => {
            assert!(offset <= model.end(), "committed {offset}");
            model.committed.insert(group, offset);
        }
        Err(Error::OffsetOutOfRange { .. }) => assert!(offset > model.end()),
        Err(error) => panic!("commit {offset}: {error}"),
    }
    check_committed(log, tp, model);
    "commit"
}

/// Moves the clock on and runs maintenance: retention may move the log start up to a
/// segment's base, and removes only records older than the retention period.
fn retain(
    log: &Log,
    p: &Partition,
    model: &mut Model,
    clock: &ManualClock,
    secs: u8,
) -> &'static str {
    clock.advance(i64::from(secs) * 10_000);
    log.maintain().expect("maintain");
    let start = p.log_start_offset();
    assert!(
        start >= model.start && start <= model.end(),
        "retention: start {start}"
    );
    let cutoff = clock.now_ms() - RETENTION_MS;
    for at in model.start..start {
        let timestamp = model.records[at as usize].timestamp;
        assert!(
            timestamp < cutoff,
            "retention removed {at} of {timestamp} (cut-off {cutoff})"
        );
    }
    assert!(
        start == model.end()
            || start == model.start
            || p.segment_base_offsets().first() == Some(&start),
        "retention: start {start} is not a segment's base"
    );
    // Kafka deletes every leading segment whose newest record is older than the cut-off:
    // the first one left, unless it is the active one, holds a record at or past it.
    if let [first, next, ..] = p.segment_base_offsets()[..] {
        let newest = model.records[first as usize..next as usize]
            .iter()
            .map(|r| r.timestamp)
            .max();
        assert!(
            newest.is_some_and(|t| t >= cutoff),
            "retention kept the segment at {first} (newest {newest:?}, cut-off {cutoff})"
        );
    }
    model.start = start;
    "retain"
}

/// Runs the cleaner, then reads the whole log: the model's records, in order, some left
/// out, none changed, the latest of every key kept.
fn compact(log: &Log, p: &Partition, model: &Model) -> &'static str {
    log.maintain().expect("maintain");
    let mut latest: BTreeMap<&[u8], u64> = BTreeMap::new();
    for (at, rec) in model.records.iter().enumerate().skip(model.start as usize) {
        latest.insert(rec.key.as_deref().expect("keyed"), at as u64);
    }
    let mut offset = model.start;
    let mut kept = std::collections::BTreeSet::new();
    while offset < model.end() {
        let read = p.read(offset, 1 << 20).expect("read after cleaning");
        let before = offset;
        for record in read.records() {
            let record = record.expect("a cleaned record decodes");
            let at = record.offset as u64;
            if at < offset {
                continue;
            }
            check_record(model, at, &record);
            kept.insert(at);
            offset = at + 1;
        }
        if offset == before {
            // Nothing from `offset` on in that read (a cleaned batch may keep only records
            // below it): look from the next offset.
            offset += 1;
        }
    }
    for (key, at) in latest {
        assert!(
            kept.contains(&at),
            "the latest record of key {key:?} ({at}) was cleaned"
        );
    }
    "compact"
}

/// The record read at `at` is the model's.
fn check_record(model: &Model, at: u64, record: &crate::codec::Record) {
    let want = &model.records[at as usize];
    assert_eq!(record.key.as_deref(), want.key.as_deref(), "key at {at}");
    assert_eq!(
        record.value.as_deref(),
        Some(&want.value[..]),
        "value at {at}"
    );
    assert_eq!(record.timestamp, want.timestamp, "timestamp at {at}");
}

fn check_shape(p: &Partition, model: &Model, step: usize, what: &str) {
    let found = (p.log_start_offset(), p.log_end_offset(), p.high_watermark());
    let want = (model.start, model.end(), model.end());
    assert_eq!(
        found, want,
        "step {step} ({what}): (start, end, high watermark)"
    );
}

fn check_committed(log: &Log, tp: &TopicPartition, model: &Model) {
    for group in GROUPS {
        let found = log
            .committed_offset(group, tp)
            .expect("committed offsets read")
            .map(|o| o.offset);
        assert_eq!(
            found,
            model.committed.get(group).copied(),
            "{group}'s offset"
        );
    }
}
