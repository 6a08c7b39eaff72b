//! Corruption and recovery: damage segment, index, checkpoint and `meta` files, reopen, and
//! check the exact outcome — what is kept, what is cut, what is reported, and that a log
//! recovered from damage is byte for byte the log that was never damaged.
//!
//! Randomized tests print their seed; set `TARNLOG_SEED` to replay one.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use proptest::prelude::{TestCaseError, prop};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use proptest::{prop_assert, prop_assert_eq};
use tarnlog::codec::{BatchHeader, set_base_offset, set_partition_leader_epoch};
use tarnlog::testing::{IndexState, ScanLimits, scan};
use tarnlog::{BatchBuilder, Error, Location, Log, LogRead, Partition, TopicConfig, Truncation};

// ------------------------------------------------------------------------------------------
// Helpers (self-contained: other test files are owned by other people).
// ------------------------------------------------------------------------------------------

mod common;
use common::{Rng, TOPIC, create, reopen, seed, write_checkpoint};

/// One record as the tests expect to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: u64,
    ts: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// One batch to append: record `j` gets timestamp `ts + j`.
#[derive(Debug, Clone)]
struct Spec {
    ts: i64,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// `count` batches of 1–4 records with 8–80 byte values; timestamps rise by 10 per batch.
fn gen_specs(rng: &mut Rng, count: usize, first_ts: i64) -> Vec<Spec> {
    (0..count)
        .map(|i| {
            let n = rng.between(1, 4);
            let records = (0..n)
                .map(|j| {
                    let len = rng.between(8, 80);
                    (
                        format!("key-{first_ts}-{i}-{j}").into_bytes(),
                        rng.bytes(len),
                    )
                })
                .collect();
            Spec {
                ts: first_ts + i as i64 * 10,
                records,
            }
        })
        .collect()
}

fn encode(spec: &Spec) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (j, (key, value)) in spec.records.iter().enumerate() {
        builder.push(
            spec.ts + j as i64,
            Some(key.as_slice()),
            Some(value.as_slice()),
            &[],
        );
    }
    builder.finish_vec().unwrap()
}

/// Appends the batches, extending `model` with what they should read back as.
fn append(p: &Partition, specs: &[Spec], model: &mut Vec<Rec>) {
    for spec in specs {
        let end = p.log_end_offset();
        let info = p.append(&encode(spec)).unwrap();
        assert_eq!(info.base_offset, end);
        for (j, (key, value)) in spec.records.iter().enumerate() {
            model.push(Rec {
                offset: info.base_offset + j as u64,
                ts: spec.ts + j as i64,
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
}

fn rec(r: &tarnlog::Record) -> Rec {
    Rec {
        offset: r.offset as u64,
        ts: r.timestamp,
        key: r.key.as_deref().unwrap_or_default().to_vec(),
        value: r.value.as_deref().unwrap_or_default().to_vec(),
    }
}

/// Every record of a read, checking every batch; the first error is returned.
fn records_of(read: &LogRead) -> tarnlog::Result<Vec<Rec>> {
    let mut out = Vec::new();
    for batch in read.batches() {
        let batch = batch?;
        for r in batch.records() {
            let r = r?;
            if r.offset as u64 >= read.requested_offset() {
                out.push(rec(&r));
            }
        }
    }
    Ok(out)
}

/// The whole log from its start to its end, every batch checked.
fn read_all(p: &Partition) -> tarnlog::Result<Vec<Rec>> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    loop {
        let read = p.read(offset, 1 << 16)?;
        if read.is_empty() {
            assert_eq!(offset, p.log_end_offset(), "read ended before the log end");
            return Ok(out);
        }
        let records = records_of(&read)?;
        let last = read.batches().last().unwrap()?;
        offset = last.next_offset() as u64;
        out.extend(records);
    }
}

/// The record at `offset` alone.
fn read_one(p: &Partition, offset: u64) -> tarnlog::Result<Rec> {
    let read = p.read(offset, 1)?;
    let batch = read.batches().next().unwrap()?;
    for r in batch.records() {
        let r = r?;
        if r.offset as u64 == offset {
            return Ok(rec(&r));
        }
    }
    panic!("offset {offset} is not in the batch read for it");
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn config() -> TopicConfig {
    TopicConfig::default()
        .segment_bytes(4096)
        .index_interval_bytes(200)
        .segment_index_bytes(4096)
}

/// `kill -9`: nothing synced, no checkpoint, no clean-shutdown marker.
fn crash(log: Log, p: Partition) {
    drop(p);
    log.simulate_crash();
}

fn close(log: Log, p: Partition) {
    drop(p);
    log.close().unwrap();
}

fn pdir(root: &Path) -> PathBuf {
    root.join(format!("{TOPIC}-0"))
}

fn seg(root: &Path, base: u64, ext: &str) -> PathBuf {
    pdir(root).join(format!("{base:020}.{ext}"))
}

/// Base offsets of the `.log` files on disk, ascending.
fn bases(root: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = fs::read_dir(pdir(root))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    out.sort_unstable();
    out
}

/// Every file of the partition directory, by name.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(pdir(root))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The partition files of a log that got exactly `specs`, closed cleanly.
fn reference(specs: &[Spec], config: TopicConfig) -> BTreeMap<String, Vec<u8>> {
    let dir = tempdir();
    let (log, p) = create(dir.path(), config);
    append(&p, specs, &mut Vec::new());
    close(log, p);
    files(dir.path())
}

/// Partition files with each batch's leader epoch zeroed and the leader-epoch checkpoint
/// left out, for comparing logs that differ only in their epochs.
fn without_epochs(mut files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files.remove("leader-epoch-checkpoint");
    for (name, bytes) in &mut files {
        if Path::new(name).extension().is_none_or(|x| x != "log") {
            continue;
        }
        // baseOffset (8), batchLength (4), partitionLeaderEpoch (4), ...
        let mut at = 0;
        while at + 16 <= bytes.len() {
            let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            if length <= 0 {
                break;
            }
            bytes[at + 12..at + 16].fill(0);
            at += 12 + length as usize;
        }
    }
    files
}

fn assert_same_files(actual: &BTreeMap<String, Vec<u8>>, expected: &BTreeMap<String, Vec<u8>>) {
    let names: Vec<&String> = actual.keys().collect();
    assert_eq!(
        names,
        expected.keys().collect::<Vec<_>>(),
        "file names differ"
    );
    for (name, bytes) in expected {
        assert!(
            actual[name] == *bytes,
            "{name} differs: {} bytes, expected {}",
            actual[name].len(),
            bytes.len()
        );
    }
}

/// A batch found in a segment file.
#[derive(Debug, Clone, Copy)]
struct Span {
    pos: usize,
    size: usize,
    base: u64,
    next: u64,
}

impl Span {
    fn end(&self) -> usize {
        self.pos + self.size
    }

    fn holds(&self, position: u64) -> bool {
        (self.pos as u64..self.end() as u64).contains(&position)
    }
}

/// The batches of a segment file, up to the first thing that is not a whole batch header.
fn spans(bytes: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(h) = BatchHeader::parse(&bytes[pos..], usize::MAX) {
        if pos + h.size() > bytes.len() {
            break;
        }
        out.push(Span {
            pos,
            size: h.size(),
            base: h.base_offset as u64,
            next: h.next_offset() as u64,
        });
        pos += h.size();
    }
    out
}

fn write_at(path: &Path, position: u64, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, position).unwrap();
}

fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip_bit(path: &Path, position: usize, bit: u32) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

/// Non-zero bytes a scan discards from `position` on: up to the last non-zero byte.
fn discarded(bytes: &[u8], position: usize) -> u64 {
    bytes[position..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Unwraps a corruption located in a file.
fn corruption_at(error: &Error) -> (PathBuf, u64) {
    match error {
        Error::Corruption {
            location: Location::File { path, position },
            ..
        } => (path.clone(), *position),
        other => panic!("expected a corruption located in a file, got {other:?}"),
    }
}

fn report(log: &Log) -> tarnlog::PartitionRecovery {
    log.recovery_report().partitions[0].clone()
}

// ------------------------------------------------------------------------------------------
// Torn tail, garbage, zeros.
// ------------------------------------------------------------------------------------------

// Unclean stop, then the last batch of the active segment is torn at a random byte: reopen
// cuts exactly that batch and reports the cut; the log continues at its offset and ends up
// byte-identical to a log that was never torn.
#[test]
fn torn_tail_of_active_segment_is_cut() {
    let mut rng = Rng(seed("torn_tail_of_active_segment_is_cut"));
    for round in 0..6 {
        let flushed = round % 2 == 1;
        let dir = tempdir();
        let root = dir.path();
        let count = rng.between(40, 90);
        let specs = gen_specs(&mut rng, count, 1_000);
        let (log, p) = create(root, config());
        let mut model = Vec::new();
        append(&p, &specs[..count - 1], &mut model);
        if flushed {
            // The recovery point is then exactly the torn batch's base offset.
            log.flush().unwrap();
        }
        append(&p, &specs[count - 1..], &mut model);
        crash(log, p);

        let active = *bases(root).last().unwrap();
        let path = seg(root, active, "log");
        let bytes = fs::read(&path).unwrap();
        let last = *spans(&bytes).last().unwrap();
        assert_eq!(last.next, model.len() as u64);
        let cut = last.pos + rng.between(1, last.size - 1);
        set_len(&path, cut as u64);

        let (log, p) = reopen(root);
        let r = report(&log);
        assert_eq!(log.recovery_report().unclean_dirs, [root.to_path_buf()]);
        let discarded = discarded(&bytes[..cut], last.pos);
        let expected = (discarded > 0).then(|| Truncation {
            segment: path.clone(),
            position: last.pos as u64,
            bytes_discarded: discarded,
            offset: last.base,
            deleted_segments: Vec::new(),
            reason: r
                .truncation
                .as_ref()
                .map(|t| t.reason.clone())
                .unwrap_or_default(),
        });
        assert_eq!(
            r.truncation, expected,
            "cut at {cut}, batch at {}",
            last.pos
        );
        assert_eq!(r.recovery_point, if flushed { last.base } else { 0 });
        assert_eq!(r.log_end_offset, last.base);
        assert_eq!(p.log_end_offset(), last.base);
        model.truncate(last.base as usize);
        assert_eq!(read_all(&p).unwrap(), model);

        // Appends continue at the cut; the result is the log that was never torn.
        let more = gen_specs(&mut rng, 20, 5_000);
        append(&p, &specs[count - 1..], &mut model);
        append(&p, &more, &mut model);
        assert_eq!(read_all(&p).unwrap(), model);
        close(log, p);
        let all: Vec<Spec> = specs.iter().chain(&more).cloned().collect();
        assert_same_files(&files(root), &reference(&all, config()));

        let (log, p) = reopen(root);
        assert!(log.recovery_report().is_clean());
        assert_eq!(report(&log).segments_scanned, 0);
        assert_eq!(read_all(&p).unwrap(), model);
        close(log, p);
    }
}

#[derive(Debug, Clone, Copy)]
enum Garbage {
    /// Random non-zero bytes right after the last batch.
    LogRandom,
    /// A copy of an earlier valid batch right after the last one (a misdirected write).
    LogCopy,
    /// Random bytes after the offset-index entries and at the end of the file.
    Index,
    /// Random bytes after the time-index entries and at the end of the file.
    TimeIndex,
    /// All of the above.
    All,
}

/// First `entry`-aligned all-zero slot: the end of the entries of a preallocated index.
fn entries_end(bytes: &[u8], entry: usize) -> usize {
    bytes
        .chunks(entry)
        .position(|c| c.iter().all(|&b| b == 0))
        .map_or(bytes.len(), |i| i * entry)
}

fn damage_index(rng: &mut Rng, path: &Path, entry: usize) {
    let bytes = fs::read(path).unwrap();
    let len = rng.between(1, 3 * entry);
    write_at(path, entries_end(&bytes, entry) as u64, &rng.bytes(len));
    let len = rng.between(1, 40);
    write_at(path, fs::metadata(path).unwrap().len(), &rng.bytes(len));
}

// Kafka's LogLoaderTest.testCorruptLog, for each kind of garbage: after an unclean stop, junk
// in the active segment's log, offset index or time index loses no record; the log and its
// indexes end up byte-identical to a log that never saw the junk.
#[test]
fn garbage_after_active_segment_is_discarded() {
    let mut rng = Rng(seed("garbage_after_active_segment_is_discarded"));
    for (round, kind) in [
        Garbage::LogRandom,
        Garbage::LogCopy,
        Garbage::Index,
        Garbage::TimeIndex,
        Garbage::All,
    ]
    .into_iter()
    .enumerate()
    {
        let flushed = round % 2 == 0;
        let dir = tempdir();
        let root = dir.path();
        let count = rng.between(30, 80);
        let specs = gen_specs(&mut rng, count, 1_000);
        let (log, p) = create(root, config());
        let mut model = Vec::new();
        append(&p, &specs, &mut model);
        if flushed {
            log.flush().unwrap();
        }
        crash(log, p);

        let active = *bases(root).last().unwrap();
        let log_path = seg(root, active, "log");
        let bytes = fs::read(&log_path).unwrap();
        let end = spans(&bytes).last().unwrap().end();
        let damages_log = matches!(kind, Garbage::LogRandom | Garbage::LogCopy | Garbage::All);
        match kind {
            Garbage::LogRandom | Garbage::All => {
                let len = rng.between(1, 300);
                write_at(&log_path, end as u64, &rng.nonzero_bytes(len));
            }
            Garbage::LogCopy => {
                let first = fs::read(seg(root, bases(root)[0], "log")).unwrap();
                let all = spans(&first);
                let copy = all[rng.below(all.len())];
                write_at(&log_path, end as u64, &first[copy.pos..copy.end()]);
            }
            Garbage::Index | Garbage::TimeIndex => {}
        }
        if matches!(kind, Garbage::Index | Garbage::All) {
            damage_index(&mut rng, &seg(root, active, "index"), 8);
        }
        if matches!(kind, Garbage::TimeIndex | Garbage::All) {
            damage_index(&mut rng, &seg(root, active, "timeindex"), 12);
        }
        let damaged = fs::read(&log_path).unwrap();

        let (log, p) = reopen(root);
        let r = report(&log);
        assert_eq!(p.log_end_offset(), model.len() as u64, "{kind:?}");
        if damages_log {
            let t = r.truncation.clone().expect("the garbage is cut");
            assert_eq!(t.segment, log_path);
            assert_eq!(t.position, end as u64);
            assert_eq!(t.offset, model.len() as u64);
            assert_eq!(t.bytes_discarded, discarded(&damaged, end), "{kind:?}");
            assert!(t.deleted_segments.is_empty());
        } else {
            assert_eq!(r.truncation, None, "{kind:?}");
        }
        assert_eq!(read_all(&p).unwrap(), model, "{kind:?}");
        close(log, p);
        assert_same_files(&files(root), &reference(&specs, config()));
    }
}

// Preallocated zeros after the last batch are not damage: nothing is cut or counted. A last
// batch whose end never reached the disk (zeros) is cut, counting only its non-zero bytes.
#[test]
fn zero_filled_tail_is_not_counted_as_discarded() {
    let mut rng = Rng(seed("zero_filled_tail_is_not_counted_as_discarded"));
    let dir = tempdir();
    let root = dir.path();
    let specs = gen_specs(&mut rng, 30, 1_000);
    let (log, p) = create(root, config());
    let mut model = Vec::new();
    append(&p, &specs, &mut model);
    crash(log, p);
    let active = *bases(root).last().unwrap();
    let path = seg(root, active, "log");
    let bytes = fs::read(&path).unwrap();
    let last = *spans(&bytes).last().unwrap();
    assert!(
        bytes.len() > last.end(),
        "the active segment is preallocated"
    );
    // More zeros than were preallocated.
    set_len(&path, bytes.len() as u64 + 10_000);

    let (log, p) = reopen(root);
    assert_eq!(report(&log).truncation, None);
    assert_eq!(p.log_end_offset(), model.len() as u64);
    assert_eq!(read_all(&p).unwrap(), model);
    crash(log, p);

    // The second half of the last batch is zeros: it is cut at its start, and only the bytes
    // up to its last non-zero byte are counted.
    let zero_from = last.pos + last.size / 2;
    write_at(&path, zero_from as u64, &vec![0; last.end() - zero_from]);
    let expected = discarded(&bytes[..zero_from], last.pos);
    let (log, p) = reopen(root);
    let t = report(&log).truncation.unwrap();
    assert_eq!(t.position, last.pos as u64);
    assert_eq!(t.bytes_discarded, expected);
    assert_eq!(t.offset, last.base);
    assert_eq!(p.log_end_offset(), last.base);
    model.truncate(last.base as usize);
    assert_eq!(read_all(&p).unwrap(), model);
    close(log, p);
}

// Garbage written past the preallocated zeros (at the end of the file): the zeros between the
// last batch and the garbage are preallocation, not discarded data, so only the garbage's
// non-zero bytes count (`Truncation::bytes_discarded`: "preallocated zeros are not counted").
#[test]
fn garbage_past_preallocated_zeros_counts_only_the_garbage() {
    let mut rng = Rng(seed(
        "garbage_past_preallocated_zeros_counts_only_the_garbage",
    ));
    let dir = tempdir();
    let root = dir.path();
    let specs = gen_specs(&mut rng, 10, 1_000);
    let (log, p) = create(root, config());
    let mut model = Vec::new();
    append(&p, &specs, &mut model);
    crash(log, p);
    let path = seg(root, *bases(root).last().unwrap(), "log");
    let file_len = fs::metadata(&path).unwrap().len();
    let end = spans(&fs::read(&path).unwrap()).last().unwrap().end();
    assert!(
        file_len > end as u64 + 100,
        "preallocated zeros follow the data"
    );
    let garbage = rng.nonzero_bytes(50);
    write_at(&path, file_len, &garbage);

    let (log, p) = reopen(root);
    let t = report(&log).truncation.unwrap();
    assert_eq!(t.position, end as u64);
    assert_eq!(p.log_end_offset(), model.len() as u64);
    assert_eq!(read_all(&p).unwrap(), model);
    assert_eq!(
        t.bytes_discarded,
        garbage.len() as u64,
        "{} zero bytes of preallocation counted as discarded",
        t.bytes_discarded - garbage.len() as u64
    );
    close(log, p);
}

// ------------------------------------------------------------------------------------------
// Index files of sealed segments.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum IndexDamage {
    Delete,
    Zero,
    OddLength,
}

fn damage(path: &Path, how: IndexDamage) {
    match how {
        IndexDamage::Delete => fs::remove_file(path).unwrap(),
        IndexDamage::Zero => {
            let len = fs::metadata(path).unwrap().len() as usize;
            assert!(
                len >= 24,
                "{} has too few entries to be out of order",
                path.display()
            );
            fs::write(path, vec![0; len]).unwrap();
        }
        IndexDamage::OddLength => {
            let len = fs::metadata(path).unwrap().len();
            assert!(len >= 8);
            set_len(path, len - 3);
        }
    }
}

/// Every offset readable alone, every timestamp found exactly.
fn check_lookups(p: &Partition, model: &[Rec]) {
    for r in model {
        assert_eq!(&read_one(p, r.offset).unwrap(), r);
        let found = p.offset_for_time(r.ts).unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp), (r.offset, r.ts));
    }
    let first = &model[0];
    let found = p.offset_for_time(first.ts - 1_000).unwrap().unwrap();
    assert_eq!(found.offset, first.offset);
    let last = model.last().unwrap();
    assert_eq!(p.offset_for_time(last.ts + 1).unwrap(), None);
}

// Deleted, zeroed and odd-length .index / .timeindex files of sealed segments (and of the
// active one) after a clean close: reopen rebuilds and reports them; every offset is
// readable, every timestamp lookup exact, and the rebuilt files equal the originals.
#[test]
fn damaged_indexes_are_rebuilt_after_clean_close() {
    let mut rng = Rng(seed("damaged_indexes_are_rebuilt_after_clean_close"));
    let specs = gen_specs(&mut rng, 120, 1_000);
    for how in [
        IndexDamage::Delete,
        IndexDamage::Zero,
        IndexDamage::OddLength,
    ] {
        for ext in ["index", "timeindex"] {
            let dir = tempdir();
            let root = dir.path();
            let (log, p) = create(root, config());
            let mut model = Vec::new();
            append(&p, &specs, &mut model);
            close(log, p);
            let original = files(root);
            let all = bases(root);
            assert!(all.len() >= 4, "several sealed segments");
            let (sealed, active) = all.split_at(all.len() - 1);
            let mut damaged = Vec::new();
            for &base in sealed {
                damage(&seg(root, base, ext), how);
                damaged.push(seg(root, base, ext));
            }
            if matches!(how, IndexDamage::Delete) {
                damage(&seg(root, active[0], ext), how);
                damaged.push(seg(root, active[0], ext));
            }

            let (log, p) = reopen(root);
            let r = report(&log);
            assert_eq!(log.recovery_report().clean_dirs, [root.to_path_buf()]);
            let rebuilt: BTreeSet<&PathBuf> = r.rebuilt_indexes.iter().collect();
            for path in &damaged {
                assert!(
                    rebuilt.contains(path),
                    "{how:?}: {} not reported",
                    path.display()
                );
            }
            assert_eq!(p.log_end_offset(), model.len() as u64);
            check_lookups(&p, &model);
            close(log, p);
            assert_same_files(&files(root), &original);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Damage below the recovery point.
// ------------------------------------------------------------------------------------------

/// Checks that every record reads back exactly or fails with a corruption located in
/// `damaged` of `path`, and that every record of the damaged batch fails.
fn check_reads_report(p: &Partition, model: &[Rec], path: &Path, damaged: Span) {
    for r in model {
        match read_one(p, r.offset) {
            Ok(got) => {
                assert_eq!(&got, r);
                assert!(
                    !(damaged.base..damaged.next).contains(&r.offset),
                    "offset {} of the damaged batch read back without error",
                    r.offset
                );
            }
            Err(error) => {
                let (file, position) = corruption_at(&error);
                assert_eq!(file, path, "{error}");
                assert!(damaged.holds(position), "{error} is outside {damaged:?}");
            }
        }
    }
    // A read over the whole log hands out the batches before, then stops at the damage.
    let error = read_all(p).unwrap_err();
    let (file, position) = corruption_at(&error);
    assert_eq!(file, path);
    assert!(damaged.holds(position), "{error} is outside {damaged:?}");
}

/// A random sealed segment and a random batch in it; flips a bit in its CRC-covered bytes
/// or its magic byte, except `lastOffsetDelta` (see
/// `flip_in_last_offset_delta_is_not_silently_skipped`). Returns the segment path and the
/// damaged batch.
fn flip_in_sealed(rng: &mut Rng, root: &Path) -> (PathBuf, Span) {
    let all = bases(root);
    let base = all[rng.below(all.len() - 1)];
    let path = seg(root, base, "log");
    let batches = spans(&fs::read(&path).unwrap());
    let damaged = batches[rng.below(batches.len())];
    let mut position = damaged.pos + rng.between(16, damaged.size - 5);
    if (damaged.pos + 23..damaged.pos + 27).contains(&position) {
        position += 4;
    }
    flip_bit(&path, position, rng.below(8) as u32);
    (path, damaged)
}

// A bit flip inside a sealed segment below the recovery point (after `flush` and an unclean
// stop, or after a clean close) is not rescanned on open; reading it returns `Corruption`
// naming the segment file and a position inside the damaged batch. Nothing is dropped. (A
// flip in one of the last headers, which the open reads, fails the open the same way.)
#[test]
fn bit_flip_in_sealed_segment_is_reported_on_read() {
    let mut rng = Rng(seed("bit_flip_in_sealed_segment_is_reported_on_read"));
    for round in 0..8 {
        let clean = round % 2 == 0;
        let dir = tempdir();
        let root = dir.path();
        let specs = gen_specs(&mut rng, 80, 1_000);
        let (log, p) = create(root, config());
        let mut model = Vec::new();
        append(&p, &specs, &mut model);
        if clean {
            close(log, p);
        } else {
            log.flush().unwrap();
            crash(log, p);
        }
        let (path, damaged) = flip_in_sealed(&mut rng, root);
        // The open reads the headers after a sealed segment's last index entry (to check
        // where it ends): damage there is reported by the open, with its place.
        let log = match Log::open(root) {
            Ok(log) => log,
            Err(error) => {
                let (file, position) = corruption_at(&error);
                assert_eq!(file, path, "{error}");
                assert!(damaged.holds(position), "{error} is outside {damaged:?}");
                continue;
            }
        };
        let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
        assert_eq!(p.log_end_offset(), model.len() as u64);
        assert_eq!(report(&log).truncation, None);
        check_reads_report(&p, &model, &path, damaged);
        close(log, p);
    }
}

// A bit flip in the CRC-covered `lastOffsetDelta` of a sealed batch (4 records, delta 3 → 1):
// a read of the batch's third record must report the corruption, not skip to the next batch
// and silently drop two records.
#[test]
fn flip_in_last_offset_delta_is_not_silently_skipped() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    for i in 0..40 {
        let values: Vec<String> = (0..4).map(|j| format!("v-{i}-{j}")).collect();
        p.append_values(values).unwrap();
    }
    close(log, p);
    let path = seg(root, 0, "log");
    let damaged = spans(&fs::read(&path).unwrap())[2];
    assert_eq!((damaged.base, damaged.next), (8, 12));
    flip_bit(&path, damaged.pos + 26, 1);

    let (log, p) = reopen(root);
    match p.read(10, 1).and_then(|read| records_of(&read)) {
        Ok(records) => panic!(
            "read(10) returned offsets {:?}: 10 and 11 silently skipped",
            offsets(&records)
        ),
        Err(error) => {
            let (file, position) = corruption_at(&error);
            assert_eq!(file, path);
            assert!(damaged.holds(position), "{error} is outside {damaged:?}");
        }
    }
    close(log, p);
}

// A record whose framing is broken inside a batch whose CRC matches (what a writer bug
// produces) in the third batch of a read: the corruption's position must be inside that
// batch, not counted from the first batch of the read.
#[test]
fn corrupt_record_in_later_batch_of_read_is_located_in_its_batch() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    for i in 0..40 {
        p.append_values([format!("value-{i:04}")]).unwrap();
    }
    close(log, p);
    let path = seg(root, 0, "log");
    let mut bytes = fs::read(&path).unwrap();
    let third = spans(&bytes)[2];
    // The record's value length ("value-0002": 10 bytes, zig-zag varint 20) is raised to 11,
    // so the record claims a byte it does not have.
    let batch = &mut bytes[third.pos..third.end()];
    let value_len = batch.len() - 1 - 10 - 1;
    assert_eq!(batch[value_len], 20, "layout of a one-record batch");
    batch[value_len] = 22;
    let crc = tarnlog::codec::compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    fs::write(&path, &bytes).unwrap();

    let (log, p) = reopen(root);
    let read = p.read(0, 1 << 16).unwrap();
    let error = read
        .records()
        .find_map(Result::err)
        .expect("the broken record is reported");
    let (file, position) = corruption_at(&error);
    assert_eq!(file, path);
    // The record runs out of bytes at the batch's end: that position, or one inside it.
    assert!(
        (third.pos as u64..=third.end() as u64).contains(&position),
        "{error} is outside the third batch {third:?}"
    );
    close(log, p);
}

// Damage in the active segment below the recovery point after an unclean stop: open fails
// with `Corruption` at the damaged batch, and the file is left as it was (never cut).
#[test]
fn damage_below_recovery_point_fails_open() {
    let mut rng = Rng(seed("damage_below_recovery_point_fails_open"));
    for round in 0..6 {
        let dir = tempdir();
        let root = dir.path();
        // One big segment, or several with the recovery point in a later one.
        let config = if round % 2 == 0 {
            config().segment_bytes(1 << 20)
        } else {
            config()
        };
        let specs = gen_specs(&mut rng, 80, 1_000);
        let (log, p) = create(root, config);
        let mut model = Vec::new();
        append(&p, &specs[..60], &mut model);
        log.flush().unwrap();
        let recovery_point = model.len() as u64;
        append(&p, &specs[60..], &mut model);
        crash(log, p);

        // The segment holding the recovery point is the first one recovery rescans.
        let all = bases(root);
        let holder = *all.iter().rev().find(|&&b| b <= recovery_point).unwrap();
        let path = seg(root, holder, "log");
        let synced: Vec<Span> = spans(&fs::read(&path).unwrap())
            .into_iter()
            .filter(|s| s.next <= recovery_point)
            .collect();
        if synced.is_empty() {
            continue;
        }
        let damaged = synced[rng.below(synced.len())];
        let position = damaged.pos + rng.between(16, damaged.size - 1);
        flip_bit(&path, position, rng.below(8) as u32);
        let before = fs::read(&path).unwrap();

        let error = Log::open(root).unwrap_err();
        let (file, at) = corruption_at(&error);
        assert_eq!(file, path, "{error}");
        assert!(damaged.holds(at), "{error} is outside {damaged:?}");
        assert!(
            fs::read(&path).unwrap() == before,
            "the damaged file was changed"
        );
        assert_eq!(bases(root), all, "segments were deleted");
    }
}

// An active segment's offset index that passes the open's checks (ordered, inside the
// segment, its last entry true) but holds more entries than `segment_index_bytes` allows
// (damage) is rebuilt at a clean open: the segment reopens for appends with its index
// mapped at that size, and writing the entries past it panicked.
#[test]
fn an_active_index_longer_than_its_capacity_is_rebuilt() {
    let dir = tempdir();
    let root = dir.path();
    // Room for 3 offset entries: one before every batch but the first.
    let config = config().segment_index_bytes(24).index_interval_bytes(0);
    let (log, p) = create(root, config);
    p.append_values([[1u8; 20], [2; 20], [3; 20]]).unwrap();
    p.append_values([[4u8; 20]]).unwrap();
    close(log, p);
    let index = seg(root, 0, "index");
    let kept = fs::read(&index).unwrap();
    assert_eq!(kept.len(), 8, "one entry, for the second batch");
    // Three earlier entries, in order and inside the segment, then the true one.
    let mut forged = Vec::new();
    for relative in 0..3u32 {
        forged.extend_from_slice(&relative.to_be_bytes());
        forged.extend_from_slice(&1u32.to_be_bytes());
    }
    forged.extend_from_slice(&kept);
    fs::write(&index, forged).unwrap();
    let (log, p) = reopen(root);
    assert_eq!(p.log_end_offset(), 4);
    assert_eq!(read_all(&p).unwrap().len(), 4);
    p.append_values([[5u8; 20]]).unwrap();
    close(log, p);
    let (log, p) = reopen(root);
    assert_eq!(read_all(&p).unwrap().len(), 5);
    close(log, p);
}

// A checkpointed offset no Kafka offset can be (past `i64::MAX`) makes the checkpoint
// unreadable: taken as the log start, it restarted the partition empty there, deleting
// every record, and the next append's offsets overflowed.
#[test]
fn a_checkpointed_offset_past_the_largest_offset_is_refused() {
    for bogus in [1u64 << 63, u64::MAX] {
        let dir = tempdir();
        let root = dir.path();
        let (log, p) = create(root, config());
        p.append_values([[1u8; 50]]).unwrap();
        p.append_values([[2u8; 50]]).unwrap();
        close(log, p);
        write_checkpoint(root, "log-start-offset-checkpoint", bogus);
        let (log, p) = reopen(root);
        assert_eq!(p.log_start_offset(), 0, "{bogus}");
        assert_eq!(
            read_all(&p).unwrap().len(),
            2,
            "{bogus}: records were deleted"
        );
        assert_eq!(p.append_values([[3u8; 50]]).unwrap().base_offset, 2);
        close(log, p);
    }
}

// Synced data that is missing altogether (the active segment ends, or turns to zeros,
// before the recovery point): open must fail with `Corruption` rather than silently end the
// log below the recovery point and hand the lost offsets out again.
#[test]
fn synced_tail_missing_below_recovery_point_fails_open() {
    let mut rng = Rng(seed("synced_tail_missing_below_recovery_point_fails_open"));
    let mut failures = Vec::new();
    for (zeroed, clean) in [(false, false), (true, false), (false, true), (true, true)] {
        let dir = tempdir();
        let root = dir.path();
        let specs = gen_specs(&mut rng, 20, 1_000);
        let (log, p) = create(root, config().segment_bytes(1 << 20));
        append(&p, &specs, &mut Vec::new());
        log.flush().unwrap();
        let end = p.log_end_offset();
        // A clean close checkpoints the log end as the recovery point; the open then
        // trusts the indexes and scans only the tail, and must still see the loss.
        if clean {
            close(log, p);
        } else {
            crash(log, p);
        }
        let path = seg(root, 0, "log");
        let last = *spans(&fs::read(&path).unwrap()).last().unwrap();
        if zeroed {
            write_at(&path, last.pos as u64, &vec![0; last.size]);
        } else {
            set_len(&path, last.pos as u64);
        }
        match Log::open(root) {
            Err(error) => assert!(error.is_corruption(), "{error}"),
            Ok(log) => {
                let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
                failures.push(format!(
                    "last batch {} after {} stop: open succeeded with log end {} below the \
                     recovery point {end}, report {:?}",
                    if zeroed { "zeroed" } else { "cut off" },
                    if clean { "a clean" } else { "an unclean" },
                    p.log_end_offset(),
                    report(&log)
                ));
                close(log, p);
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ------------------------------------------------------------------------------------------
// Checkpoints, leftovers, meta.
// ------------------------------------------------------------------------------------------

// A corrupted recovery-point checkpoint (after a clean close, or after `flush` and an
// unclean stop): open succeeds, reports the file as unreadable and rescans every segment.
#[test]
fn corrupt_checkpoint_is_reported_and_everything_rescanned() {
    let mut rng = Rng(seed(
        "corrupt_checkpoint_is_reported_and_everything_rescanned",
    ));
    for clean in [true, false] {
        let dir = tempdir();
        let root = dir.path();
        let specs = gen_specs(&mut rng, 60, 1_000);
        let (log, p) = create(root, config());
        let mut model = Vec::new();
        append(&p, &specs, &mut model);
        if clean {
            close(log, p);
        } else {
            log.flush().unwrap();
            crash(log, p);
        }
        let checkpoint = root.join("recovery-point-offset-checkpoint");
        let len = fs::metadata(&checkpoint).unwrap().len() as usize;
        flip_bit(&checkpoint, rng.between(20, len - 1), rng.below(8) as u32);

        let (log, p) = reopen(root);
        let unreadable = &log.recovery_report().unreadable_checkpoints;
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        assert_eq!(unreadable[0].0, checkpoint);
        let r = report(&log);
        assert_eq!(r.segments_scanned, bases(root).len());
        assert_eq!(r.truncation, None);
        assert_eq!(read_all(&p).unwrap(), model);
        close(log, p);
    }
}

// A corrupted log-start checkpoint after `delete_records`: open succeeds and reports the
// file; as in Kafka (which then starts the log at its first segment), the log starts at
// the first segment left, so the records deleted inside that segment are readable again —
// exactly as written, nothing invented — until the next `delete_records`, which holds.
#[test]
fn corrupt_log_start_checkpoint_starts_the_log_at_its_first_segment() {
    let mut rng = Rng(seed(
        "corrupt_log_start_checkpoint_starts_the_log_at_its_first_segment",
    ));
    let dir = tempdir();
    let root = dir.path();
    let specs = gen_specs(&mut rng, 60, 1_000);
    let (log, p) = create(root, config());
    let mut model = Vec::new();
    append(&p, &specs, &mut model);
    let end = p.log_end_offset();
    let before = 1 + rng.below(end as usize - 1) as u64;
    p.delete_records(before).unwrap();
    assert_eq!(p.log_start_offset(), before);
    close(log, p);
    let first = bases(root)[0];
    assert!(first <= before);
    let checkpoint = root.join("log-start-offset-checkpoint");
    let len = fs::metadata(&checkpoint).unwrap().len() as usize;
    flip_bit(&checkpoint, rng.between(20, len - 1), rng.below(8) as u32);

    let (log, p) = reopen(root);
    let unreadable = &log.recovery_report().unreadable_checkpoints;
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(unreadable[0].0, checkpoint);
    assert_eq!(p.log_start_offset(), first);
    let expected: Vec<Rec> = model
        .iter()
        .filter(|r| r.offset >= first)
        .cloned()
        .collect();
    assert_eq!(read_all(&p).unwrap(), expected);
    p.delete_records(before).unwrap();
    close(log, p);
    let (log, p) = reopen(root);
    assert_eq!(p.log_start_offset(), before);
    let expected: Vec<Rec> = model
        .iter()
        .filter(|r| r.offset >= before)
        .cloned()
        .collect();
    assert_eq!(read_all(&p).unwrap(), expected);
    close(log, p);
}

// Kafka's UnifiedLogTest.testLogEndLessThanStartAfterReopen: a log that recovers to an
// end below its checkpointed log start (here a power loss took unsynced records while the
// `delete_records` checkpoint had been synced) restarts empty at that start; offsets below
// it, which readers may have seen deleted, are never handed out again.
#[test]
fn a_log_end_below_the_log_start_checkpoint_restarts_the_log_there() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config().fsync(tarnlog::FsyncPolicy::None));
    for i in 0..6u8 {
        p.append_values([[i; 50]]).unwrap();
    }
    assert_eq!(p.delete_records(4).unwrap(), 4);
    crash(log, p);
    // The power loss: nothing above batch 2 reached the disk.
    let log_file = seg(root, 0, "log");
    let bytes = fs::read(&log_file).unwrap();
    let cut = spans(&bytes)[2].pos;
    set_len(&log_file, cut as u64);

    let (log, p) = reopen(root);
    assert_eq!(
        (p.log_start_offset(), p.log_end_offset(), p.high_watermark()),
        (4, 4, 4)
    );
    assert_eq!(bases(root), vec![4]);
    let report = report(&log);
    assert!(report.removed_files.contains(&log_file), "{report:?}");
    assert_eq!(report.log_end_offset, 4);
    assert!(p.read(4, 1 << 20).unwrap().is_empty());
    assert!(matches!(
        p.read(2, 1 << 20),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(p.append_values([[9u8; 50]]).unwrap().base_offset, 4);
    close(log, p);
    let (log, p) = reopen(root);
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (4, 5));
    assert_eq!(read_all(&p).unwrap().len(), 1);
    close(log, p);
}

// A partition directory that vanished is recreated empty at open, while the directory's
// recovery-point checkpoint still names where the lost data had been synced to. The open
// sets that entry to 0, durably, before it recreates the directory: otherwise a crash before
// the next checkpoint would leave the new data below the old recovery point, and the open
// after it would take the new data for damaged synced data (`Corruption`, fatal with one
// directory).
#[test]
fn a_recreated_partition_forgets_its_old_recovery_point() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config().fsync(tarnlog::FsyncPolicy::None));
    for i in 0..40u8 {
        p.append_values([[i; 50]]).unwrap();
    }
    close(log, p);
    fs::remove_dir_all(pdir(root)).unwrap();

    let (log, p) = reopen(root);
    assert!(report(&log).created, "{:?}", report(&log));
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (0, 0));
    for i in 0..5u8 {
        p.append_values([[i; 50]]).unwrap();
    }
    crash(log, p);

    let (log, p) = reopen(root);
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (0, 5));
    assert_eq!(read_all(&p).unwrap().len(), 5);
    close(log, p);
}

// A directory whose checkpoint could not be read was rescanned, so the report must not list
// it among the cleanly closed directories ("no data was rescanned in them").
#[test]
fn dir_with_unreadable_checkpoint_is_not_reported_clean() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    for i in 0..100 {
        p.append_values([format!("value-{i}")]).unwrap();
    }
    close(log, p);
    flip_bit(&root.join("recovery-point-offset-checkpoint"), 22, 0);
    let (log, p) = reopen(root);
    let report = log.recovery_report();
    assert!(report.partitions[0].segments_scanned > 0);
    assert!(
        !report.clean_dirs.contains(&root.to_path_buf()),
        "rescanned directory reported clean: {report:?}"
    );
    close(log, p);
}

// Leftovers of interrupted operations (`.swap`, `.tmp`, `.deleted`, `.cleaned`) and index
// files without a `.log` are removed and reported; the data is untouched.
#[test]
fn leftover_files_are_removed_and_reported() {
    for clean in [true, false] {
        let dir = tempdir();
        let root = dir.path();
        let (log, p) = create(root, config());
        let mut model = Vec::new();
        append(&p, &gen_specs(&mut Rng(7), 60, 1_000), &mut model);
        if clean {
            close(log, p);
        } else {
            crash(log, p);
        }
        let names = [
            "00000000000000000000.timeindex.swap",
            "00000000000000000000.index.swap",
            "00000000000000000000.log.deleted",
            "00000000000000000000.log.cleaned",
            "00000000000000000000.timeindex.tmp",
            "00000000000000099999.index",
            "00000000000000099999.timeindex",
        ];
        let leftovers: BTreeSet<PathBuf> = names.iter().map(|n| pdir(root).join(n)).collect();
        for path in &leftovers {
            fs::write(path, b"leftover").unwrap();
        }
        let (log, p) = reopen(root);
        let removed: BTreeSet<PathBuf> = report(&log).removed_files.into_iter().collect();
        assert_eq!(removed, leftovers);
        assert!(!log.recovery_report().is_clean());
        for path in &leftovers {
            assert!(!path.exists(), "{} still exists", path.display());
        }
        assert_eq!(read_all(&p).unwrap(), model);
        close(log, p);
    }
}

/// Flips a bit of the body of `dir/meta`.
fn corrupt_meta(dir: &Path) {
    let meta = dir.join("meta");
    let len = fs::metadata(&meta).unwrap().len() as usize;
    flip_bit(&meta, len - 5, 1);
}

// `meta` corrupted in the only directory: open fails with `Corruption` naming it.
#[test]
fn corrupt_meta_in_only_dir_fails_open() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    p.append_values(["a"]).unwrap();
    close(log, p);
    corrupt_meta(root);
    let error = Log::open(root).unwrap_err();
    let (file, _) = corruption_at(&error);
    assert_eq!(file, root.join("meta"));
}

// With two directories, one corrupt copy of `meta` is outvoted by the other; both corrupt
// fails.
#[test]
fn corrupt_meta_copy_with_two_dirs_uses_the_other() {
    for corrupt in [0, 1] {
        let a = tempdir();
        let b = tempdir();
        let dirs = [a.path().join("a"), b.path().join("b")];
        let log = Log::builder().dirs(&dirs).open().unwrap();
        let topic = log.create_topic(TOPIC, config().partitions(2)).unwrap();
        for p in 0..2 {
            let p = topic.partition(p).unwrap();
            for i in 0..30 {
                p.append_values([format!("p{}-{i}", p.topic_partition().partition)])
                    .unwrap();
            }
        }
        drop(topic);
        log.close().unwrap();
        corrupt_meta(&dirs[corrupt]);

        let log = Log::builder().dirs(&dirs).open().unwrap();
        let topic = log.topic(TOPIC).unwrap();
        assert_eq!(topic.partitions(), 2);
        for p in 0..2 {
            let p = topic.partition(p).unwrap();
            assert_eq!(p.log_end_offset(), 30);
            let values: Vec<Vec<u8>> = read_all(&p).unwrap().into_iter().map(|r| r.value).collect();
            let index = p.topic_partition().partition;
            let expected: Vec<Vec<u8>> = (0..30)
                .map(|i| format!("p{index}-{i}").into_bytes())
                .collect();
            assert_eq!(values, expected);
        }
        drop(topic);
        log.close().unwrap();

        corrupt_meta(&dirs[1 - corrupt]);
        let error = Log::builder().dirs(&dirs).open().unwrap_err();
        assert!(error.is_corruption(), "{error}");
    }
}

// ------------------------------------------------------------------------------------------
// truncate_to.
// ------------------------------------------------------------------------------------------

/// Builds a log of `specs`, truncates it to `target`, and checks log end, reads, continued
/// appends, the files (equal to a log that got only the kept batches and the new ones), a
/// clean and an unclean reopen.
fn check_truncation(specs: &[Spec], target: u64, rng: &mut Rng) {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    let mut model = Vec::new();
    append(&p, specs, &mut model);
    p.truncate_to(target).unwrap();
    // The whole batch holding `target` goes.
    let mut kept = Vec::new();
    let mut end = 0;
    for spec in specs {
        if end + spec.records.len() as u64 > target {
            break;
        }
        end += spec.records.len() as u64;
        kept.push(spec.clone());
    }
    assert_eq!(p.log_end_offset(), end, "truncate_to({target})");
    // Cut at a segment's first batch: that segment stays, empty (as Kafka's `truncateTo`
    // keeps the segment whose base is the target), so the layout then differs from a log
    // that never held the removed batches.
    let at_boundary = end > 0 && p.segment_base_offsets().last() == Some(&end);
    assert_eq!(p.high_watermark(), end);
    model.truncate(end as usize);
    assert_eq!(read_all(&p).unwrap(), model);
    assert!(matches!(
        p.read(end + 1, 1),
        Err(Error::OffsetOutOfRange { .. })
    ));

    let more = gen_specs(rng, 40, 50_000);
    append(&p, &more, &mut model);
    assert_eq!(read_all(&p).unwrap(), model);
    // A cut starts a new leader epoch (so that consumers past it go back: KIP-320); the
    // batches appended after it carry it, and otherwise the files are a plain log's.
    let total: u64 = specs.iter().map(|s| s.records.len() as u64).sum();
    let epoch = log.describe_topic(TOPIC).unwrap().partitions[0].leader_epoch;
    assert_eq!(epoch > 0, end < total, "truncate_to({target}) from {total}");
    close(log, p);
    kept.extend(more);
    if !at_boundary {
        assert_same_files(
            &without_epochs(files(root)),
            &without_epochs(reference(&kept, config())),
        );
    }

    let (log, p) = reopen(root);
    assert_eq!(report(&log).segments_scanned, 0);
    assert_eq!(read_all(&p).unwrap(), model);
    let extra = gen_specs(rng, 5, 90_000);
    append(&p, &extra, &mut model);
    crash(log, p);
    let (log, p) = reopen(root);
    assert_eq!(report(&log).truncation, None);
    assert_eq!(read_all(&p).unwrap(), model);
    close(log, p);
}

// truncate_to inside the active segment, inside a sealed segment, at a segment's base, to
// 0, and at or past the log end (a no-op).
#[test]
fn truncate_to_plain_offsets() {
    let mut rng = Rng(seed("truncate_to_plain_offsets"));
    let specs = gen_specs(&mut rng, 100, 1_000);
    let total: u64 = specs.iter().map(|s| s.records.len() as u64).sum();
    let probe = tempdir();
    let (log, p) = create(probe.path(), config());
    append(&p, &specs, &mut Vec::new());
    let segment_bases = p.segment_base_offsets();
    close(log, p);
    assert!(segment_bases.len() >= 4);
    let active = *segment_bases.last().unwrap();
    let mut targets = vec![
        0,
        1,
        segment_bases[1],
        segment_bases[1] + 1,
        segment_bases[2] - 1,
        active,
        active + 1,
        total - 1,
        total,
        total + 10,
    ];
    for _ in 0..3 {
        targets.push(rng.below(total as usize) as u64);
    }
    for target in targets {
        check_truncation(&specs, target, &mut rng);
    }
}

/// Writes a log whose segments hold exactly the given batches, closed cleanly (as a
/// compacted log would be: offsets may have gaps). `segments` are (base, batches as
/// (base offset, record count)).
fn craft_clean_log(root: &Path, segments: &[(u64, Vec<(u64, usize)>)]) {
    let (log, p) = create(root, config());
    close(log, p);
    for entry in fs::read_dir(pdir(root)).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (base, batches) in segments {
        let mut bytes = Vec::new();
        for &(offset, count) in batches {
            let mut builder = BatchBuilder::new();
            for j in 0..count as u64 {
                let value = format!("value-{}", offset + j);
                builder.push(
                    1_000 + (offset + j) as i64,
                    None,
                    Some(value.as_bytes()),
                    &[],
                );
            }
            let mut batch = builder.finish_vec().unwrap();
            set_base_offset(&mut batch, offset as i64);
            set_partition_leader_epoch(&mut batch, 0);
            bytes.extend(batch);
        }
        fs::write(seg(root, *base, "log"), bytes).unwrap();
        fs::write(seg(root, *base, "index"), b"").unwrap();
        fs::write(seg(root, *base, "timeindex"), b"").unwrap();
    }
}

fn offsets(records: &[Rec]) -> Vec<u64> {
    records.iter().map(|r| r.offset).collect()
}

// Kafka's LogSegmentTest.shouldTruncateEvenIfOffsetPointsToAGapInTheLog: batches at 40 and 43
// (41 and 42 compacted away) → truncate_to(41) → only the batch at 40 remains, and appends
// continue at 41. Also the plain form: truncating to an offset inside a multi-record batch
// removes the whole batch.
#[test]
fn truncate_to_offset_in_a_gap() {
    let dir = tempdir();
    let root = dir.path();
    craft_clean_log(root, &[(40, vec![(40, 1), (43, 1)]), (44, vec![(44, 1)])]);
    let (log, p) = reopen(root);
    assert_eq!(p.log_start_offset(), 40);
    assert_eq!(p.log_end_offset(), 45);
    assert_eq!(offsets(&read_all(&p).unwrap()), [40, 43, 44]);
    p.truncate_to(41).unwrap();
    assert_eq!(p.log_end_offset(), 41);
    assert_eq!(p.segment_base_offsets(), [40]);
    assert_eq!(offsets(&read_all(&p).unwrap()), [40]);
    assert_eq!(p.append_values(["x", "y"]).unwrap().base_offset, 41);
    assert_eq!(offsets(&read_all(&p).unwrap()), [40, 41, 42]);
    close(log, p);
    let (log, p) = reopen(root);
    assert_eq!(offsets(&read_all(&p).unwrap()), [40, 41, 42]);
    crash(log, p);
    let (log, p) = reopen(root);
    assert_eq!(report(&log).truncation, None);
    assert_eq!(offsets(&read_all(&p).unwrap()), [40, 41, 42]);
    close(log, p);

    let dir = tempdir();
    let (log, p) = create(dir.path(), config());
    p.append_values(["a"]).unwrap();
    p.append_values(["b", "c", "d"]).unwrap();
    p.truncate_to(2).unwrap();
    assert_eq!(p.log_end_offset(), 1);
    assert_eq!(offsets(&read_all(&p).unwrap()), [0]);
    close(log, p);
}

// A `LogRead` obtained before a truncation keeps returning its original bytes afterwards
// (zero-copy views of the active segment, a sealed segment that is cut, and a segment that
// is deleted), also once new appends reuse the truncated offsets.
#[test]
fn log_read_stays_valid_across_truncation() {
    let mut rng = Rng(seed("log_read_stays_valid_across_truncation"));
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    let mut model = Vec::new();
    append(&p, &gen_specs(&mut rng, 120, 1_000), &mut model);
    let segment_bases = p.segment_base_offsets();
    let target = segment_bases[1] + 2;
    let reads: Vec<LogRead> = [
        target,
        segment_bases[2],
        *segment_bases.last().unwrap(),
        p.log_end_offset() - 1,
    ]
    .iter()
    .map(|&o| p.read(o, 1 << 16).unwrap())
    .collect();
    let copies: Vec<Vec<u8>> = reads.iter().map(|r| r.bytes().to_vec()).collect();
    let decoded: Vec<Vec<Rec>> = reads.iter().map(|r| records_of(r).unwrap()).collect();

    p.truncate_to(target).unwrap();
    append(&p, &gen_specs(&mut rng, 60, 90_000), &mut Vec::new());
    p.truncate_to(target - 1).unwrap();
    append(&p, &gen_specs(&mut rng, 60, 95_000), &mut Vec::new());
    for ((read, copy), records) in reads.iter().zip(&copies).zip(&decoded) {
        assert!(
            read.bytes()[..] == copy[..],
            "a view changed after truncation"
        );
        assert_eq!(&records_of(read).unwrap(), records);
    }
    close(log, p);
    for ((read, copy), records) in reads.iter().zip(&copies).zip(&decoded) {
        assert!(read.bytes()[..] == copy[..], "a view changed after close");
        assert_eq!(&records_of(read).unwrap(), records);
    }
}

// After a `flush` (recovery point 100) the log is truncated to 50 and new, unsynced records
// are appended; an unclean stop tears the last of them. The recovery point recorded on disk
// must not still claim offsets the truncation removed: reopen cuts the torn batch.
#[test]
fn unclean_reopen_after_truncation_below_flushed_point() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    for i in 0..100 {
        p.append_values([format!("old-{i}")]).unwrap();
    }
    log.flush().unwrap();
    p.truncate_to(50).unwrap();
    for i in 50..60 {
        p.append_values([format!("new-{i}")]).unwrap();
    }
    crash(log, p);
    let path = seg(root, *bases(root).last().unwrap(), "log");
    let last = *spans(&fs::read(&path).unwrap()).last().unwrap();
    assert_eq!(last.base, 59);
    set_len(&path, last.end() as u64 - 3);

    let log = Log::open(root).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
    assert_eq!(p.log_end_offset(), 59);
    let values: Vec<String> = read_all(&p)
        .unwrap()
        .into_iter()
        .map(|r| String::from_utf8(r.value).unwrap())
        .collect();
    let expected: Vec<String> = (0..50)
        .map(|i| format!("old-{i}"))
        .chain((50..59).map(|i| format!("new-{i}")))
        .collect();
    assert_eq!(values, expected);
    close(log, p);
}

// The same stale recovery point through topic deletion: a topic is flushed at 100, deleted
// and created again under the same name, gets 5 unsynced records, and an unclean stop tears
// the last one. Reopen must cut the torn batch, not call the new topic's data corrupt.
#[test]
fn unclean_reopen_after_topic_recreated() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    for i in 0..100 {
        p.append_values([format!("old-{i}")]).unwrap();
    }
    log.flush().unwrap();
    drop(p);
    log.delete_topic(TOPIC).unwrap();
    let p = log
        .create_topic(TOPIC, config())
        .unwrap()
        .partition(0)
        .unwrap();
    for i in 0..5 {
        p.append_values([format!("new-{i}")]).unwrap();
    }
    crash(log, p);
    let path = seg(root, 0, "log");
    let last = *spans(&fs::read(&path).unwrap()).last().unwrap();
    set_len(&path, last.end() as u64 - 3);
    let log = Log::open(root).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
    assert_eq!(p.log_end_offset(), 4);
    close(log, p);
}

// ------------------------------------------------------------------------------------------
// Every cut position.
// ------------------------------------------------------------------------------------------

/// The encoded batches of `counts` one after another from offset 0, and their spans.
fn encoded_segment(counts: &[(usize, usize)]) -> (Vec<u8>, Vec<Span>) {
    let mut bytes = Vec::new();
    let mut offset = 0u64;
    for (i, &(records, len)) in counts.iter().enumerate() {
        let mut builder = BatchBuilder::new();
        for j in 0..records {
            let value = vec![b'v'; len + j];
            builder.push(1_000 + i as i64, None, Some(value.as_slice()), &[]);
        }
        let mut batch = builder.finish_vec().unwrap();
        set_base_offset(&mut batch, offset as i64);
        offset += records as u64;
        bytes.extend(batch);
    }
    let found = spans(&bytes);
    assert_eq!(found.last().unwrap().end(), bytes.len());
    (bytes, found)
}

// The pure scanner, at every cut of a segment (with and without preallocated zeros after
// it): it keeps exactly the batches wholly before the cut, and reports a stop exactly when
// non-zero bytes follow them.
#[test]
fn scanner_keeps_whole_batches_before_every_cut() {
    let (bytes, batches) = encoded_segment(&[(1, 10), (3, 40), (1, 0), (2, 100), (4, 7)]);
    let limits = ScanLimits {
        max_batch_bytes: 1 << 20,
        max_offset_entries: 1024,
        max_time_entries: 1024,
    };
    for cut in 0..=bytes.len() {
        for zeros in [0, 64] {
            let mut data = bytes[..cut].to_vec();
            data.resize(cut + zeros, 0);
            // A batch survives when its bytes are intact; zeros may complete one whose last
            // bytes are zeros (a record batch often ends with a zero headers count).
            let kept: Vec<&Span> = batches
                .iter()
                .take_while(|s| data.get(s.pos..s.end()) == Some(&bytes[s.pos..s.end()]))
                .collect();
            let valid = kept.last().map_or(0, |s| s.end());
            let next = kept.last().map_or(0, |s| s.next);
            let outcome = scan(&data, 0, 0, 0, IndexState::new(32), limits);
            assert_eq!(outcome.valid_len, valid, "cut {cut}");
            assert_eq!(outcome.next_offset, next, "cut {cut}");
            assert_eq!(outcome.batches, kept.len() as u64, "cut {cut}");
            let nonzero = data[valid..].iter().any(|&b| b != 0);
            assert_eq!(outcome.stop.is_some(), nonzero, "cut {cut}");
            assert_eq!(
                outcome.garbage_end,
                valid + discarded(&data, valid) as usize
            );
        }
    }
}

/// One proptest case: a log of `batches` (record count, value length), crashed, its active
/// segment cut at `cut` (a fraction of its data, in thousandths, past the end when > 1000).
fn torn_case(batches: &[(usize, usize)], cut_permille: usize) -> Result<(), TestCaseError> {
    let dir = tempdir();
    let root = dir.path();
    let specs: Vec<Spec> = batches
        .iter()
        .enumerate()
        .map(|(i, &(records, len))| Spec {
            ts: 1_000 + i as i64,
            records: (0..records)
                .map(|j| (vec![b'k'; j], vec![(i + j) as u8; len]))
                .collect(),
        })
        .collect();
    let (log, p) = create(root, config().segment_bytes(2048));
    let mut model = Vec::new();
    append(&p, &specs, &mut model);
    crash(log, p);
    let path = seg(root, *bases(root).last().unwrap(), "log");
    let bytes = fs::read(&path).unwrap();
    let found = spans(&bytes);
    let data_end = found.last().map_or(0, Span::end);
    let cut = (data_end * cut_permille / 1000).min(bytes.len());
    set_len(&path, cut as u64);

    let (log, p) = reopen(root);
    let end = found
        .iter()
        .find(|s| s.end() > cut)
        .map_or(model.len() as u64, |s| s.base);
    prop_assert_eq!(p.log_end_offset(), end);
    model.truncate(end as usize);
    prop_assert_eq!(read_all(&p).unwrap(), model);
    let r = report(&log);
    if let Some(t) = &r.truncation {
        prop_assert_eq!(t.offset, end);
        prop_assert!(t.deleted_segments.is_empty());
    }
    // Appends continue right there.
    prop_assert_eq!(p.append_values(["after"]).unwrap().base_offset, end);
    crash(log, p);
    Ok(())
}

// Proptest: random record sets; the active .log is cut at any position after an unclean
// stop → reopen keeps exactly the batches wholly before the cut.
#[test]
fn torn_active_segment_keeps_whole_batches_before_cut() {
    let seed = seed("torn_active_segment_keeps_whole_batches_before_cut");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = (
        prop::collection::vec((1usize..=4, 0usize..=120), 1..40),
        0usize..=1100,
    );
    runner
        .run(&strategy, |(batches, cut)| torn_case(&batches, cut))
        .unwrap();
}

// A roll cut short after it created the next segment and before it trimmed the old one
// leaves the old segment at its allocated length, zeros after its data. Below the recovery
// point (here: after a clean close) the open trusts it; it trims the zeros instead of
// failing, and every record reads back.
#[test]
fn untrimmed_sealed_segment_below_the_recovery_point_opens() {
    // With its indexes trimmed (they pass their check), and with them at their allocated
    // length too (they are rebuilt from the log).
    for untrimmed_indexes in [false, true] {
        untrimmed_sealed_segment(untrimmed_indexes);
    }
}

fn untrimmed_sealed_segment(untrimmed_indexes: bool) {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config());
    let mut model = Vec::new();
    for i in 0..60u32 {
        let value = format!("record-{i}-{}", "x".repeat(60));
        p.append_values([value.as_bytes()]).unwrap();
        model.push(value);
    }
    close(log, p);
    let all = bases(root);
    assert!(all.len() >= 3);
    let path = seg(root, all[1], "log");
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(4096).unwrap();
    assert!(len < 4096);
    if untrimmed_indexes {
        for ext in ["index", "timeindex"] {
            let index = fs::OpenOptions::new()
                .write(true)
                .open(seg(root, all[1], ext))
                .unwrap();
            index.set_len(4096).unwrap();
        }
    }
    let (log, p) = reopen(root);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        len,
        "the zeros were cut"
    );
    let mut got = Vec::new();
    let mut next = 0;
    while next < p.log_end_offset() {
        for batch in p.read(next, 1 << 20).unwrap().batches() {
            let batch = batch.unwrap();
            for record in batch.records() {
                got.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
            }
            next = u64::try_from(batch.last_offset()).unwrap() + 1;
        }
    }
    assert_eq!(got, model);
    close(log, p);
}

/// A raised base offset in one of the active segment's last batches, after a clean close
/// (when the open reads only the segment's tail, from its last index entry): the open fails
/// with `Corruption` there (the data was synced), or the log is exactly as written; it
/// never takes the raised offset for the log's end.
#[test]
fn a_raised_base_offset_in_the_active_segment_tail_is_caught() {
    for back in 1..=6 {
        for (byte, low_bit) in [(7, 2), (6, 1)] {
            let dir = tempdir();
            let root = dir.path();
            let (log, p) = create(root, config());
            for i in 0..120u64 {
                p.append_values((0..4).map(|j| value_of_offset(i * 4 + j)))
                    .unwrap();
            }
            close(log, p);
            let active = *bases(root).last().unwrap();
            let path = seg(root, active, "log");
            let batches = spans(&fs::read(&path).unwrap());
            let damaged = batches[batches.len() - back];
            let mut bytes = fs::read(&path).unwrap();
            // A raise: the lowest clear bit from `low_bit` up.
            let bit = (low_bit..8)
                .find(|b| bytes[damaged.pos + byte] & (1 << b) == 0)
                .unwrap();
            bytes[damaged.pos + byte] |= 1 << bit;
            fs::write(&path, bytes).unwrap();
            let case = format!("batch {back} from the end, byte {byte} bit {bit}");
            let log = match Log::open(root) {
                Ok(log) => log,
                Err(error) => {
                    let (file, position) = corruption_at(&error);
                    assert_eq!(file, path, "{case}");
                    assert!(position <= damaged.end() as u64, "{case}: {error}");
                    continue;
                }
            };
            // Opened: the damage lies before the tail the open read, and reads report it.
            let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
            assert_eq!(p.log_end_offset(), 480, "{case}");
            let mut failed = false;
            for offset in 0..480 {
                match p.read(offset, 1 << 20).and_then(|r| records_of(&r)) {
                    Ok(records) => {
                        for (i, record) in records.iter().enumerate() {
                            assert_eq!(record.offset, offset + i as u64, "{case}");
                            assert_eq!(record.value, value_of_offset(record.offset).into_bytes());
                        }
                    }
                    Err(error) => {
                        assert_eq!(corruption_at(&error).0, path, "{case}");
                        failed = true;
                    }
                }
            }
            assert!(failed, "{case}: no read met the damage");
        }
    }
}

/// The value written at `offset` by `a_damaged_base_offset_is_reported_not_misread`.
fn value_of_offset(offset: u64) -> String {
    format!("v-{}-{}", offset / 4, offset % 4)
}

// A bit flip in a sealed batch's base offset, which its CRC does not cover: a read hands out
// no record under a wrong offset. Offsets must increase from batch to batch and stay below
// the next segment's, so the damaged batch and its neighbour disagree, and the read that
// reaches them fails with `Corruption` at one of the two (which one is damaged cannot be
// told from the bytes); every read before them returns exactly what was written.
#[test]
fn a_damaged_base_offset_is_reported_not_misread() {
    let mut rng = Rng(seed("a_damaged_base_offset_is_reported_not_misread"));
    for round in 0..12 {
        let dir = tempdir();
        let root = dir.path();
        let (log, p) = create(root, config());
        let value = value_of_offset;
        for i in 0..120u64 {
            p.append_values((0..4).map(|j| value(i * 4 + j))).unwrap();
        }
        close(log, p);
        let all = bases(root);
        let path = seg(root, all[rng.below(all.len() - 1)], "log");
        let batches = spans(&fs::read(&path).unwrap());
        // The last batch of a segment in every third round (bounded by the next segment).
        let index = if round % 3 == 0 {
            batches.len() - 1
        } else {
            rng.below(batches.len())
        };
        let damaged = batches[index];
        let before = batches[index.saturating_sub(1)];
        // At either batch, or at the damaged one's end (where an open finds that a
        // segment's last batch runs into the next segment).
        let blamed = |position: u64| (before.pos as u64..=damaged.end() as u64).contains(&position);
        // The low 16 bits of the 8-byte field: both raised and lowered offsets.
        flip_bit(&path, damaged.pos + 6 + rng.below(2), rng.below(8) as u32);
        let log = match Log::open(root) {
            Ok(log) => log,
            Err(error) => {
                let (file, position) = corruption_at(&error);
                assert!(
                    file == path && blamed(position),
                    "{error}: not at {damaged:?}"
                );
                continue;
            }
        };
        let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
        let mut failed = false;
        for offset in 0..480 {
            match p.read(offset, 1 << 20).and_then(|read| records_of(&read)) {
                Ok(records) => {
                    for (i, record) in records.iter().enumerate() {
                        assert_eq!(record.offset, offset + i as u64, "round {round}");
                        assert_eq!(record.value, value(record.offset).into_bytes());
                    }
                    assert!(
                        records
                            .iter()
                            .all(|r| r.offset < damaged.base || r.offset >= damaged.next),
                        "round {round}: records of the damaged batch {damaged:?} read back"
                    );
                }
                Err(error) => {
                    let (file, position) = corruption_at(&error);
                    assert!(
                        file == path && blamed(position),
                        "{error}: not at {damaged:?}"
                    );
                    failed = true;
                }
            }
        }
        assert!(
            failed,
            "round {round}: no read met the damage at {damaged:?}"
        );
        // A consumer reading from the start gets the records before the damage, in order,
        // then the error; never a record under a wrong offset.
        let mut consumer = log
            .consumer(
                tarnlog::ConsumerConfig::default()
                    .auto_offset_reset(tarnlog::AutoOffsetReset::Earliest),
            )
            .unwrap();
        consumer
            .assign([tarnlog::TopicPartition::new(TOPIC, 0)])
            .unwrap();
        let mut expected_offset = 0;
        let error = loop {
            match consumer.poll(std::time::Duration::ZERO) {
                Ok(records) => {
                    assert!(!records.is_empty(), "round {round}: the consumer stalled");
                    for record in records {
                        assert_eq!(record.offset, expected_offset, "round {round}");
                        let value = record.value.unwrap();
                        assert_eq!(&value[..], value_of_offset(record.offset).as_bytes());
                        expected_offset += 1;
                    }
                }
                Err(error) => break error,
            }
        };
        let (file, position) = corruption_at(&error);
        assert!(
            file == path && blamed(position),
            "{error}: not at {damaged:?}"
        );
        assert!(expected_offset <= damaged.base, "round {round}");
        drop(consumer);
        close(log, p);
    }
}

/// Copies the directory tree `from` into `to` (created).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `root` made a fresh copy of `template`.
fn fresh_copy(template: &Path, root: &Path) {
    let _ = fs::remove_dir_all(root);
    copy_tree(template, root);
}

/// Reads `p` from its log start for as long as reads succeed (a log opened under faults
/// may fail them): every record read is the one `expected` holds at its offset.
fn read_as_written(p: &Partition, expected: &[Rec], what: &str) {
    let mut offset = p.log_start_offset();
    while let Ok(read) = p.read(offset, 1 << 16) {
        let Ok(records) = records_of(&read) else {
            break;
        };
        let Some(next) = records.last().map(|r| r.offset + 1) else {
            break;
        };
        for r in &records {
            assert_eq!(Some(r), expected.get(r.offset as usize), "{what}");
        }
        offset = next;
    }
}

/// A log in `template` for the fault-during-open tests: 40 synced batches of 3 records and
/// 20 more after the flush; then a clean close, or a crash with the last batch torn (above
/// the recovery point: cut, not an error) and a sealed segment's index lost. Returns the
/// records a fault-free open of a copy reads, after checking that only the torn batch is
/// cut.
fn fault_template(dir: &Path, template: &Path, clean: bool) -> Vec<Rec> {
    let (log, p) = create(template, config());
    for i in 0..40 {
        p.append_values((0..3).map(|j| format!("synced-{i}-{j}")))
            .unwrap();
    }
    log.flush().unwrap();
    for i in 0..20 {
        p.append_values((0..3).map(|j| format!("unsynced-{i}-{j}")))
            .unwrap();
    }
    let survivors = if clean {
        close(log, p);
        180
    } else {
        crash(log, p);
        let all = bases(template);
        let active = seg(template, *all.last().unwrap(), "log");
        let last = *spans(&fs::read(&active).unwrap()).last().unwrap();
        let file = fs::OpenOptions::new().write(true).open(&active).unwrap();
        file.write_all_at(&[0u8; 8], (last.end() - 8) as u64)
            .unwrap();
        fs::remove_file(seg(template, all[0], "index")).unwrap();
        last.base
    };
    let scratch = dir.join(format!("expected-{clean}"));
    copy_tree(template, &scratch);
    let (log, p) = reopen(&scratch);
    let records = read_all(&p).unwrap();
    close(log, p);
    assert_eq!(
        records.len() as u64,
        survivors,
        "clean {clean}: only the torn batch is cut"
    );
    records
}

// Every counted storage call of an open that recovers (a torn tail to cut, a missing index
// to rebuild, checkpoints to write) fails once, or from then on, with EIO, ENOSPC or a short
// write. The open fails with an error or opens; nothing panics; whatever it opens reads as a
// prefix of the records written before the tear; and a later open without faults finds all
// of them, with no spurious `Corruption`.
#[test]
fn faults_during_recovery_never_lose_or_invent_records() {
    use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
    let dir = tempdir();
    let template = dir.path().join("template");
    let expected = fault_template(dir.path(), &template, false);

    let root = dir.path().join("run");
    let fresh = || fresh_copy(&template, &root);
    let open = |fs: &FaultStorage| Log::builder().dir(&root).storage(fs.shared()).open();
    fresh();
    let counting = FaultStorage::new(OsStorage::shared());
    let log = open(&counting).unwrap();
    let calls = counting.ops();
    assert!(calls > 3, "the open made only {calls} counted calls");
    drop(log);
    let mut opened = 0;
    for kind in [FaultKind::Eio, FaultKind::NoSpace, FaultKind::ShortWrite] {
        for persistent in [false, true] {
            for at in 1..=calls {
                fresh();
                let faulty = FaultStorage::new(OsStorage::shared());
                faulty.fail_at(at, kind, persistent);
                if let Ok(log) = open(&faulty) {
                    opened += 1;
                    let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
                    read_as_written(&p, &expected, &format!("{kind:?} at {at}"));
                    drop(p);
                    let _ = log.close();
                }
                let (log, p) = reopen(&root);
                assert_eq!(
                    read_all(&p).unwrap(),
                    expected,
                    "{kind:?} at {at}, persistent {persistent}"
                );
                close(log, p);
            }
        }
    }
    println!("faults during recovery: {calls} counted calls, {opened} faulted opens succeeded");
}

// Every read-side storage call of an open (opening and listing files, lengths, reads,
// mappings) fails once, or from then on, with EIO: after a clean close and after a crash
// that left a torn tail and a missing index. The open fails with an error or opens; nothing
// panics; whatever it opens reads exactly the records written (none invented, none moved);
// and a later open without faults finds all of them.
#[test]
fn read_errors_during_open_never_lose_or_invent_records() {
    use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
    let dir = tempdir();
    for clean in [true, false] {
        let template = dir.path().join(format!("template-{clean}"));
        let expected = fault_template(dir.path(), &template, clean);
        let survivors = expected.len() as u64;
        let root = dir.path().join(format!("run-{clean}"));
        let fresh = || fresh_copy(&template, &root);
        let open = |fs: &FaultStorage| Log::builder().dir(&root).storage(fs.shared()).open();
        fresh();
        let counting = FaultStorage::new(OsStorage::shared());
        let log = open(&counting).unwrap();
        let reads = counting.reads();
        assert!(reads > 10, "the open made only {reads} read-side calls");
        drop(log);
        let mut opened = 0;
        for persistent in [false, true] {
            for at in 1..=reads {
                fresh();
                let faulty = FaultStorage::new(OsStorage::shared());
                faulty.fail_read_at(at, FaultKind::Eio, persistent);
                let what = format!("clean {clean}, read {at} of {reads}, persistent {persistent}");
                match open(&faulty) {
                    Ok(log) => {
                        opened += 1;
                        let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
                        read_as_written(&p, &expected, &what);
                        // With the disk working again, the log it opened holds everything.
                        faulty.heal();
                        assert_eq!(p.log_end_offset(), survivors, "{what}");
                        assert_eq!(read_all(&p).unwrap(), expected, "{what}");
                        drop(p);
                        let _ = log.close();
                    }
                    Err(error) => assert!(
                        matches!(error, Error::Io { .. } | Error::Corruption { .. }),
                        "{what}: {error:?}"
                    ),
                }
                let (log, p) = reopen(&root);
                assert_eq!(read_all(&p).unwrap(), expected, "{what}");
                close(log, p);
            }
        }
        // A one-off EINTR on any read-side call is made again: the open does not notice.
        for at in 1..=reads {
            fresh();
            let faulty = FaultStorage::new(OsStorage::shared());
            faulty.fail_read_at(at, FaultKind::Interrupted, false);
            let log = open(&faulty).unwrap_or_else(|e| panic!("interrupted read {at}: {e:?}"));
            assert_eq!(faulty.injected(), 1, "read {at}");
            assert!(log.recovery_report().offline_dirs.is_empty(), "read {at}");
            let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
            assert_eq!(read_all(&p).unwrap(), expected, "interrupted read {at}");
            close(log, p);
        }
        println!(
            "read errors during open (clean {clean}): {reads} read-side calls, {opened} faulted opens succeeded"
        );
    }
}

/// A partition directory recreated at open (it vanished) is built under a staging name
/// that fits the file system's limit whatever the topic name's length (Kafka allows 249
/// characters).
#[test]
fn a_vanished_partition_of_a_topic_with_a_long_name_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let name = "t".repeat(249);
    {
        let log = Log::open(dir.path()).unwrap();
        log.create_topic(&name, TopicConfig::default()).unwrap();
        log.close().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join(format!("{name}-0"))).unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert!(log.recovery_report().partitions.iter().any(|p| p.created));
    let partition = log.topic(&name).unwrap().partition(0).unwrap();
    partition.append_values(["a"]).unwrap();
    log.close().unwrap();
}

/// A topic with the longest name Kafka allows (249 characters) and partitions numbered up
/// to two digits is deleted (its directories renamed to a doomed name that fits the file
/// system's 255 bytes) and created again.
#[test]
fn a_topic_with_the_longest_name_is_deleted_and_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let name = "t".repeat(249);
    let log = Log::open(dir.path()).unwrap();
    let topic = log
        .create_topic(&name, TopicConfig::default().partitions(12))
        .unwrap();
    topic.partition(11).unwrap().append_values(["a"]).unwrap();
    drop(topic);
    log.delete_topic(&name).unwrap();
    assert!(log.topic(&name).is_err());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('t'))
        .collect();
    assert!(left.is_empty(), "{} entries left", left.len());
    let topic = log
        .create_topic(&name, TopicConfig::default().partitions(12))
        .unwrap();
    assert_eq!(topic.partition(11).unwrap().log_end_offset(), 0);
    log.close().unwrap();
}

/// A deletion whose removal of the renamed partition directory failed leaves
/// `<partition>.delete` (an open removes it). A topic created again under the name and
/// deleted in the same run must not fail on it (the rename cannot replace a directory that
/// is not empty).
#[test]
fn a_topic_deleted_again_over_a_leftover_of_its_last_deletion_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_topic("t", TopicConfig::default()).unwrap();
    let leftover = dir.path().join("t-0.delete");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("00000000000000000000.log"), b"old").unwrap();
    log.delete_topic("t").unwrap();
    assert!(!leftover.exists());
    let partition = log.create_topic("t", TopicConfig::default()).unwrap();
    partition
        .partition(0)
        .unwrap()
        .append_values(["a"])
        .unwrap();
    log.close().unwrap();
}

/// A kill at any storage call of a truncation below the recovery point (every call fails
/// from that one on, then the process is dropped as `kill -9` would) leaves a log the next
/// open takes: every record below the cut is there in order, and the log ends between the
/// cut and its old end. Before the recovery floor, a kill after the cut and before the
/// next checkpoint left a log ending below the recovery point on disk, which the open
/// refused as damage to synced data. Checked for a cut inside a segment (the part kept
/// rewritten) and for one at a segment's base (seven records to a segment here).
#[test]
fn a_kill_at_any_point_of_a_truncation_leaves_a_log_that_opens() {
    use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
    let values: Vec<String> = (0..40)
        .map(|i| format!("value-{i:02}-{}", "x".repeat(60)))
        .collect();
    for cut in [13, 28] {
        for at in 1.. {
            let dir = tempdir();
            let fault = FaultStorage::new(OsStorage::shared());
            let open = || {
                Log::builder()
                    .dir(dir.path())
                    .storage(fault.shared())
                    .open()
            };
            let log = open().unwrap();
            let config = TopicConfig::default().segment_bytes(1024);
            let partition = log
                .create_topic(TOPIC, config)
                .unwrap()
                .partition(0)
                .unwrap();
            for value in &values {
                partition.append_values([value]).unwrap();
            }
            // The recovery point on disk: the log's end.
            log.flush().unwrap();
            assert!(partition.segment_count() > 3);
            fault.fail_at(fault.ops() + at, FaultKind::Eio, true);
            let result = partition.truncate_to(cut);
            let finished = fault.injected() == 0;
            assert_eq!(result.is_ok(), finished, "kill at call {at}: {result:?}");
            drop(partition);
            log.simulate_crash();
            fault.heal();
            let log = open().unwrap_or_else(|e| panic!("cut {cut}, kill at call {at}: {e}"));
            let partition = log.topic(TOPIC).unwrap().partition(0).unwrap();
            let read: Vec<String> = read_all(&partition)
                .unwrap()
                .into_iter()
                .map(|r| String::from_utf8(r.value).unwrap())
                .collect();
            assert!(
                (cut as usize..=values.len()).contains(&read.len()),
                "cut {cut}, kill at call {at}: {} records",
                read.len()
            );
            assert_eq!(
                read[..],
                values[..read.len()],
                "cut {cut}, kill at call {at}"
            );
            if finished {
                assert_eq!(read.len(), cut as usize);
                // The floor went with the checkpoint that covered the cut.
                assert!(!pdir(dir.path()).join("recovery-floor").exists());
                log.close().unwrap();
                break;
            }
            drop(partition);
            log.close().unwrap();
        }
    }
}

/// A cleanly closed active segment whose offset index ends in an entry damaged to position
/// 0 (no real entry has it: a segment's first batch is never indexed) gets its indexes
/// rebuilt by a full scan at open, not merged with the entries a scan from byte 0 finds
/// again (an index out of order, or one over its capacity: a panic). Every offset reads
/// back, and appends go on.
#[test]
fn a_clean_segments_last_index_entry_damaged_to_position_zero_is_rebuilt() {
    let dir = tempdir();
    let config = TopicConfig::default()
        .segment_bytes(1 << 20)
        .index_interval_bytes(100)
        .segment_index_bytes(64);
    let (log, p) = create(dir.path(), config);
    let values: Vec<String> = (0..12).map(|i| format!("value-{i:02}")).collect();
    for value in &values {
        p.append_values([value]).unwrap();
    }
    let before = read_all(&p).unwrap();
    assert_eq!(before.len(), 12);
    drop(p);
    log.close().unwrap();
    let index = dir.path().join("t-0").join(format!("{:020}.index", 0));
    let mut bytes = fs::read(&index).unwrap();
    assert!(bytes.len() >= 32, "at least four entries: {}", bytes.len());
    let len = bytes.len();
    bytes[len - 4..].fill(0);
    fs::write(&index, &bytes).unwrap();
    let (log, p) = reopen(dir.path());
    assert_eq!(read_all(&p).unwrap(), before);
    for offset in 0..12 {
        assert_eq!(read_one(&p, offset).unwrap(), before[offset as usize]);
    }
    p.append_values(["after"]).unwrap();
    assert_eq!(read_all(&p).unwrap().len(), 13);
    drop(p);
    log.close().unwrap();
}

/// A file named like a segment whose base offset is past Kafka's largest offset
/// (`i64::MAX`) is no segment of the log: an open leaves it alone and the log is the one
/// written (its offsets would overflow the arithmetic on them).
#[test]
fn a_file_named_past_the_largest_offset_is_not_taken_for_a_segment() {
    let dir = tempdir();
    let (log, p) = create(dir.path(), config());
    p.append_values(["a", "b"]).unwrap();
    let before = read_all(&p).unwrap();
    drop(p);
    log.close().unwrap();
    let partition_dir = dir.path().join("t-0");
    // Empty: taken for the active segment, it made the log end there.
    let stray = partition_dir.join("18000000000000000000.log");
    fs::write(&stray, b"").unwrap();
    let (log, p) = reopen(dir.path());
    assert_eq!(read_all(&p).unwrap(), before);
    assert_eq!(p.log_end_offset(), 2);
    p.append_values(["c"]).unwrap();
    assert_eq!(read_all(&p).unwrap().len(), 3);
    drop(p);
    log.close().unwrap();
    assert!(stray.exists(), "left alone");
}
