//! Kafka's own log tests, ported to tarnlog's public API (reference: kafka-semantics.md §8).
//! Each test is named after the Kafka test it ports; where Kafka drives a `LogSegment` or an
//! `OffsetIndex` directly, the same setup is built through a partition (or, for the gaps
//! compaction leaves, by writing the segment files a compacted log would have) and the same
//! lookups are asserted through reads, timestamp lookups and the index files.
//!
//! Randomized tests print their seed; set `TARNLOG_SEED` to replay one.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tarnlog::codec::{BatchHeader, NO_TIMESTAMP, set_base_offset, set_partition_leader_epoch};
use tarnlog::{BatchBuilder, Clock as _, Error, Log, LogRead, ManualClock, Partition, TopicConfig};

// ------------------------------------------------------------------------------------------
// Helpers (self-contained).
// ------------------------------------------------------------------------------------------

mod common;
use common::{Rng, TOPIC, create, reopen, seed};

/// One single-record batch, as `TestUtils.singletonRecords` builds it.
fn single(ts: i64, value: &[u8]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(ts, None, Some(value), &[]);
    builder.finish_vec().unwrap()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn close(log: Log, p: Partition) {
    drop(p);
    log.close().unwrap();
}

fn crash(log: Log, p: Partition) {
    drop(p);
    log.simulate_crash();
}

fn pdir(root: &Path) -> PathBuf {
    root.join(format!("{TOPIC}-0"))
}

fn seg(root: &Path, base: u64, ext: &str) -> PathBuf {
    pdir(root).join(format!("{base:020}.{ext}"))
}

fn files_with(root: &Path, ext: &str) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(pdir(root))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let wanted = name.rsplit('.').next() == Some(ext);
            wanted.then(|| (name, fs::read(e.path()).unwrap()))
        })
        .collect()
}

/// (offset, timestamp, value) of every record of a read at or after its requested offset.
fn records(read: &LogRead) -> Vec<(u64, i64, Vec<u8>)> {
    read.records()
        .map(|r| {
            let r = r.unwrap();
            (
                r.offset as u64,
                r.timestamp,
                r.value.as_deref().unwrap_or_default().to_vec(),
            )
        })
        .collect()
}

fn offsets(read: &LogRead) -> Vec<u64> {
    records(read).into_iter().map(|(o, _, _)| o).collect()
}

/// The whole log, batch after batch.
fn read_all(p: &Partition) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    loop {
        let read = p.read(offset, 1 << 16).unwrap();
        if read.is_empty() {
            return out;
        }
        out.extend(records(&read));
        offset = read.batches().last().unwrap().unwrap().next_offset() as u64;
    }
}

/// Batches of a segment file: (position, size, base offset, next offset).
fn spans(bytes: &[u8]) -> Vec<(usize, usize, u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(h) = BatchHeader::parse(&bytes[pos..], usize::MAX) {
        if pos + h.size() > bytes.len() {
            break;
        }
        out.push((pos, h.size(), h.base_offset as u64, h.next_offset() as u64));
        pos += h.size();
    }
    out
}

/// Offset-index entries (relative offset, position) up to the first all-zero slot (an
/// active index is preallocated with zeros; a relative offset of 0 never gets an entry).
fn offset_entries(path: &Path) -> Vec<(u32, u32)> {
    fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|c| {
            (
                u32::from_be_bytes(c[..4].try_into().unwrap()),
                u32::from_be_bytes(c[4..].try_into().unwrap()),
            )
        })
        .take_while(|&e| e != (0, 0))
        .collect()
}

/// Time-index entries (timestamp, relative offset) of a trimmed (closed) time index.
fn time_entries(path: &Path) -> Vec<(i64, u32)> {
    fs::read(path)
        .unwrap()
        .chunks_exact(12)
        .map(|c| {
            (
                i64::from_be_bytes(c[..8].try_into().unwrap()),
                u32::from_be_bytes(c[8..].try_into().unwrap()),
            )
        })
        .collect()
}

/// Opens the log "with recovery point N", as Kafka's tests do.
fn write_recovery_point(root: &Path, offset: u64) {
    common::write_checkpoint(root, "recovery-point-offset-checkpoint", offset);
}

/// The recovery point recorded for the partition, as text.
fn recorded_recovery_point(root: &Path) -> u64 {
    let bytes = fs::read(root.join("recovery-point-offset-checkpoint")).unwrap();
    let body = String::from_utf8(bytes[20..].to_vec()).unwrap();
    let line = body.lines().nth(2).unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Makes the next open unclean: the clean-shutdown marker is removed.
fn forget_clean_shutdown(root: &Path) {
    fs::remove_file(root.join("clean-shutdown")).unwrap();
}

fn append_at_end(path: &Path, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.write_all_at(bytes, len).unwrap();
}

/// Writes the segment files a compacted log would have, then closes cleanly: `segments` are
/// (base, batches as (first offset, record count)); record `o` has value `value-o` and
/// timestamp `o × 10`. Sealed segments are trusted after a clean close, so gaps survive.
fn craft_log(root: &Path, segments: &[(u64, &[(u64, usize)])]) {
    let (log, p) = create(root, TopicConfig::default());
    close(log, p);
    for entry in fs::read_dir(pdir(root)).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for &(base, batches) in segments {
        let mut bytes = Vec::new();
        for &(offset, count) in batches {
            let mut builder = BatchBuilder::new();
            for o in offset..offset + count as u64 {
                let value = format!("value-{o}");
                builder.push(o as i64 * 10, None, Some(value.as_bytes()), &[]);
            }
            let mut batch = builder.finish_vec().unwrap();
            set_base_offset(&mut batch, offset as i64);
            set_partition_leader_epoch(&mut batch, 0);
            bytes.extend(batch);
        }
        fs::write(seg(root, base, "log"), bytes).unwrap();
        fs::write(seg(root, base, "index"), b"").unwrap();
        fs::write(seg(root, base, "timeindex"), b"").unwrap();
    }
}

// ------------------------------------------------------------------------------------------
// Roll.
// ------------------------------------------------------------------------------------------

// UnifiedLogTest.testSizeBasedLogRoll: segment.bytes = 10 × (set size − 1); 11 single-record
// sets make exactly 2 segments.
#[test]
fn test_size_based_log_roll() {
    let set = single(1_000, b"test");
    let dir = tempdir();
    let config = TopicConfig::default().segment_bytes(10 * (set.len() as u64 - 1));
    let (log, p) = create(dir.path(), config);
    assert_eq!(p.segment_count(), 1, "a log begins with one segment");
    for _ in 0..11 {
        p.append(&set).unwrap();
    }
    assert_eq!(p.segment_count(), 2);
    // Nine sets fit in 10 × (size − 1) bytes, the tenth does not.
    assert_eq!(p.segment_base_offsets(), [0, 9]);
    close(log, p);
}

// UnifiedLogTest.testTimeBasedLogRollDuringAppend: segment.ms = 1 h. Records without
// timestamps roll on the clock since the segment was created; an empty segment never rolls;
// records with timestamps roll on newTs − firstBatchTs, not on the clock; an empty append
// rolls nothing.
#[test]
fn test_time_based_log_roll_during_append() {
    let segment_ms: i64 = 3_600_000;
    let clock = ManualClock::new(1_700_000_000_000);
    let dir = tempdir();
    let log = Log::builder()
        .dir(dir.path())
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let config = TopicConfig::default().segment_ms(segment_ms as u64);
    let p = log
        .create_topic(TOPIC, config)
        .unwrap()
        .partition(0)
        .unwrap();
    let without_ts = single(NO_TIMESTAMP, b"test");
    assert_eq!(
        p.segment_count(),
        1,
        "log begins with a single empty segment"
    );

    clock.advance(segment_ms + 1);
    p.append(&without_ts).unwrap();
    assert_eq!(p.segment_count(), 1, "an empty segment is not rolled");
    p.append(&without_ts).unwrap();
    assert_eq!(
        p.segment_count(),
        2,
        "time has expired since the segment was made"
    );
    for segments in 3..5 {
        clock.advance(segment_ms + 1);
        p.append(&without_ts).unwrap();
        assert_eq!(p.segment_count(), segments);
    }

    // A timestamped record in a segment whose first batch had none: the wall clock decides.
    let timestamp = clock.now_ms() + segment_ms + 1;
    let with_ts = single(timestamp, b"test");
    p.append(&with_ts).unwrap();
    assert_eq!(p.segment_count(), 4, "rolling follows the wall clock here");
    clock.advance(segment_ms + 1);
    p.append(&with_ts).unwrap();
    assert_eq!(p.segment_count(), 5, "a new segment is rolled");
    clock.advance(segment_ms + 1);
    p.append(&with_ts).unwrap();
    assert_eq!(
        p.segment_count(),
        5,
        "no roll: it depends on the first batch's timestamp, not the clock"
    );
    p.append(&single(clock.now_ms(), b"test")).unwrap();
    assert_eq!(
        p.segment_count(),
        6,
        "the record's timestamp makes the segment expire"
    );

    clock.advance(segment_ms + 1);
    assert!(matches!(
        p.append_values(Vec::<&[u8]>::new()),
        Err(Error::InvalidRecord { .. })
    ));
    assert!(p.append(&[]).is_err());
    assert_eq!(p.segment_count(), 6, "an empty append never rolls");
    drop(p);
    log.close().unwrap();
}

// ------------------------------------------------------------------------------------------
// Reads.
// ------------------------------------------------------------------------------------------

// LogSegmentTest.testReadBeforeFirstOffset: segment base 40, batch 50..53 → a read at 41
// returns the batch from 50. Through the API, a read inside a batch returns the whole batch
// and the records from the requested offset.
#[test]
fn test_read_before_first_offset() {
    let dir = tempdir();
    let root = dir.path();
    craft_log(root, &[(40, &[(50, 4)]), (54, &[(54, 1)])]);
    let (log, p) = reopen(root);
    assert_eq!(p.log_start_offset(), 40);
    let read = p.read(41, 300).unwrap();
    assert_eq!(offsets(&read), [50, 51, 52, 53]);
    let first = read.batches().next().unwrap().unwrap();
    assert_eq!((first.base_offset(), first.last_offset()), (50, 53));
    assert_eq!(
        records(&read)[0],
        (50, 500, b"value-50".to_vec()),
        "records are intact"
    );
    close(log, p);

    let dir = tempdir();
    let (log, p) = create(dir.path(), TopicConfig::default());
    p.append_values(["a", "b", "c", "d"]).unwrap();
    let read = p.read(2, 1).unwrap();
    assert_eq!(read.batches().next().unwrap().unwrap().base_offset(), 0);
    assert_eq!(offsets(&read), [2, 3]);
    close(log, p);
}

// LogSegmentTest.testReadAfterLast: batch 50..51 in segment 40 → nothing at 52. Through the
// log: a read at the log end is empty, one past it is out of range.
#[test]
fn test_read_after_last() {
    let dir = tempdir();
    let root = dir.path();
    craft_log(root, &[(40, &[(50, 2)]), (52, &[])]);
    let (log, p) = reopen(root);
    assert_eq!(p.log_end_offset(), 52);
    assert!(p.read(52, 200).unwrap().is_empty());
    assert!(matches!(
        p.read(53, 200),
        Err(Error::OffsetOutOfRange {
            requested: 53,
            earliest: 40,
            latest: 52
        })
    ));
    close(log, p);
}

// LogSegmentTest.testReadFromGap: batches 50..51 and 60..61 in segment 40 → a read at 55
// starts at 60.
#[test]
fn test_read_from_gap() {
    let dir = tempdir();
    let root = dir.path();
    craft_log(root, &[(40, &[(50, 2), (60, 2)]), (62, &[])]);
    let (log, p) = reopen(root);
    let read = p.read(55, 200).unwrap();
    assert_eq!(offsets(&read), [60, 61]);
    assert_eq!(read.batches().next().unwrap().unwrap().base_offset(), 60);
    close(log, p);
}

// UnifiedLogTest.testReadAtLogGap: the segment holding the offset has nothing at or after it
// → the read continues in the next segment.
#[test]
fn test_read_at_log_gap() {
    let dir = tempdir();
    let root = dir.path();
    craft_log(
        root,
        &[(40, &[(50, 2)]), (60, &[(60, 2)]), (62, &[(62, 1)])],
    );
    let (log, p) = reopen(root);
    assert_eq!(offsets(&p.read(55, 200).unwrap()), [60, 61]);
    assert_eq!(offsets(&p.read(52, 200).unwrap()), [60, 61]);
    let all: Vec<u64> = read_all(&p).into_iter().map(|(o, _, _)| o).collect();
    assert_eq!(all, [50, 51, 60, 61, 62]);
    close(log, p);
}

// The same gap with the next segment the active one: a read in the gap continues there.
#[test]
fn test_read_at_log_gap_before_the_active_segment() {
    let dir = tempdir();
    let root = dir.path();
    craft_log(root, &[(40, &[(50, 2)]), (60, &[(60, 2)])]);
    let (log, p) = reopen(root);
    assert_eq!(offsets(&p.read(55, 200).unwrap()), [60, 61]);
    assert_eq!(offsets(&p.read(52, 200).unwrap()), [60, 61]);
    close(log, p);
}

// A truncation into a segment with gaps would make an active segment with gaps: refused,
// with nothing changed (it used to cut at the first gap, losing 50 and 51 here).
#[test]
fn a_truncation_into_a_segment_with_gaps_is_refused_and_changes_nothing() {
    let dir = tempdir();
    let root = dir.path();
    craft_log(root, &[(40, &[(50, 2), (60, 2)]), (62, &[(62, 1)])]);
    let (log, p) = reopen(root);
    let before = common::files(root);
    let error = p.truncate_to(61).unwrap_err();
    assert!(matches!(error, Error::Corruption { .. }), "{error}");
    assert_eq!(common::files(root), before, "no file changed");
    let all: Vec<u64> = read_all(&p).into_iter().map(|(o, _, _)| o).collect();
    assert_eq!(all, [50, 51, 60, 61, 62]);
    // Into the gap-free segment it works as before.
    p.truncate_to(62).unwrap();
    assert_eq!(p.log_end_offset(), 62);
    close(log, p);
}

// UnifiedLogTest.testReadOutOfRange: a log starting at 1024 with one record → reading 1025
// is empty; 0, 1023 and 1026 are out of range.
#[test]
fn test_read_out_of_range() {
    let dir = tempdir();
    let root = dir.path();
    // Kafka's createEmptyLogs(logDir, 1024): empty segment files with base 1024.
    craft_log(root, &[(1024, &[])]);
    forget_clean_shutdown(root);
    let (log, p) = reopen(root);
    assert_eq!(p.log_start_offset(), 1024);
    assert_eq!(p.append_values(["42"]).unwrap().base_offset, 1024);
    assert_eq!(offsets(&p.read(1024, 1000).unwrap()), [1024]);
    assert!(p.read(1025, 1000).unwrap().is_empty(), "at the log end");
    for offset in [0, 1023, 1026, u64::MAX] {
        match p.read(offset, 1000) {
            Err(Error::OffsetOutOfRange {
                requested,
                earliest,
                latest,
            }) => assert_eq!((requested, earliest, latest), (offset, 1024, 1025)),
            other => panic!("read({offset}): {other:?}"),
        }
    }
    close(log, p);
}

// LogSegmentTest.testFindOffsetByTimestamp: offsets 40..49 with ts = offset × 10 in a segment
// at base 40, an index entry every two records → ts 420→42, 421→43, 430→43, 431→44, 401→41,
// 399→40, 491→none; largest timestamp 490. The segment at 40 comes from a time roll after 40
// filler records (ts 0..39).
#[test]
fn test_find_offset_by_timestamp() {
    let dir = tempdir();
    let root = dir.path();
    let size = single(400, b"msg40").len() as u64;
    let config = TopicConfig::default()
        .segment_ms(300)
        .index_interval_bytes(2 * size - 1);
    let (log, p) = create(root, config);
    for o in 0..40 {
        p.append(&single(o, format!("f{o:02}").as_bytes())).unwrap();
    }
    for o in 40..50 {
        p.append(&single(o * 10, format!("msg{o}").as_bytes()))
            .unwrap();
    }
    assert_eq!(p.segment_base_offsets(), [0, 40]);
    let lookups = [
        (420, Some(42)),
        (421, Some(43)),
        (430, Some(43)),
        (431, Some(44)),
        (401, Some(41)),
        (399, Some(40)),
        (491, None),
    ];
    let check = |p: &Partition| {
        for (ts, expected) in lookups {
            let found = p.offset_for_time(ts).unwrap();
            assert_eq!(found.map(|f| f.offset), expected, "ts {ts}");
            if let Some(found) = found {
                assert_eq!(found.timestamp, found.offset as i64 * 10);
            }
        }
    };
    check(&p);
    close(log, p);
    // The sparse index has entries, and the largest timestamp is 490 at offset 49.
    assert!(offset_entries(&seg(root, 40, "index")).len() >= 3);
    assert_eq!(
        time_entries(&seg(root, 40, "timeindex")).last(),
        Some(&(490, 9))
    );
    let (log, p) = reopen(root);
    check(&p);
    close(log, p);
}

// ------------------------------------------------------------------------------------------
// Offset index.
// ------------------------------------------------------------------------------------------

/// Ten single-record batches of the same size with an index entry for each but the first:
/// Kafka's `OffsetIndexTest` fixture (entries 1..9), with position = offset × batch size.
fn index_fixture(root: &Path) -> (Log, Partition, usize) {
    let (log, p) = create(root, TopicConfig::default().index_interval_bytes(0));
    let mut size = 0;
    for o in 0..10 {
        let batch = single(1_000 + o, format!("value-{o}").as_bytes());
        size = batch.len();
        p.append(&batch).unwrap();
    }
    (log, p, size)
}

/// Reads every offset and checks it comes from the batch at `offset × size` in the file.
fn check_positions(root: &Path, p: &Partition, size: usize) {
    let bytes = fs::read(seg(root, 0, "log")).unwrap();
    for o in 0..p.log_end_offset() {
        let read = p.read(o, 1).unwrap();
        let at = o as usize * size;
        assert!(read.bytes()[..] == bytes[at..at + size], "offset {o}");
        assert_eq!(offsets(&read), [o]);
    }
    assert!(p.read(p.log_end_offset(), 1).unwrap().is_empty());
}

// OffsetIndexTest.truncate: entries 1..9 → truncateTo(12) changes nothing (lookup(10) is
// (9, 9)); truncateTo(9) leaves 8 as the last entry; truncateTo(5) leaves 4.
#[test]
fn offset_index_truncate() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p, size) = index_fixture(root);
    let index = seg(root, 0, "index");
    let entries =
        |last: u32| -> Vec<(u32, u32)> { (1..=last).map(|o| (o, o * size as u32)).collect() };
    assert_eq!(offset_entries(&index), entries(9));
    p.truncate_to(12).unwrap();
    assert_eq!(offset_entries(&index), entries(9));
    assert_eq!(p.log_end_offset(), 10);
    check_positions(root, &p, size);
    p.truncate_to(9).unwrap();
    assert_eq!(offset_entries(&index), entries(8));
    check_positions(root, &p, size);
    p.truncate_to(5).unwrap();
    assert_eq!(offset_entries(&index), entries(4));
    check_positions(root, &p, size);
    close(log, p);
    assert_eq!(offset_entries(&index), entries(4));
    assert_eq!(
        fs::metadata(&index).unwrap().len(),
        4 * 8,
        "trimmed on close"
    );
}

// OffsetIndexTest.lookupExtremeCases: a lookup below the first entry answers (base, 0), the
// largest one the last entry; an empty index answers (base, 0): reads at every offset, at the
// extremes and with an empty index start at the right positions.
#[test]
fn offset_index_lookup_extreme_cases() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p, size) = index_fixture(root);
    check_positions(root, &p, size);
    p.truncate_to(1).unwrap();
    assert_eq!(offset_entries(&seg(root, 0, "index")), []);
    check_positions(root, &p, size);
    p.truncate_to(0).unwrap();
    assert!(p.read(0, 1).unwrap().is_empty());
    p.append(&single(5, b"again")).unwrap();
    assert_eq!(offsets(&p.read(0, 1).unwrap()), [0]);
    close(log, p);
}

// ------------------------------------------------------------------------------------------
// Recovery.
// ------------------------------------------------------------------------------------------

// LogSegmentTest.testRecoveryWithCorruptMessage: 20 single-record batches; garbage from a
// random byte of a random batch's first 15 to the end of the file; recovery keeps exactly the
// batches before it.
#[test]
fn test_recovery_with_corrupt_message() {
    let mut rng = Rng(seed("test_recovery_with_corrupt_message"));
    for _ in 0..10 {
        let dir = tempdir();
        let root = dir.path();
        let (log, p) = create(root, TopicConfig::default().segment_bytes(1 << 20));
        for o in 0..20 {
            p.append(&single(1_000 + o, format!("value-{o}").as_bytes()))
                .unwrap();
        }
        crash(log, p);
        let path = seg(root, 0, "log");
        let bytes = fs::read(&path).unwrap();
        let batches = spans(&bytes);
        let (pos, _, corrupt, _) = batches[rng.below(batches.len())];
        let position = pos + rng.below(15);
        let garbage: Vec<u8> = rng
            .bytes(bytes.len() - position)
            .into_iter()
            .map(|b| b | 1)
            .collect();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&garbage, position as u64)
            .unwrap();

        let (log, p) = reopen(root);
        assert_eq!(p.log_end_offset(), corrupt);
        let kept: Vec<u64> = read_all(&p).into_iter().map(|(o, _, _)| o).collect();
        assert_eq!(kept, (0..corrupt).collect::<Vec<_>>());
        let t = log.recovery_report().partitions[0]
            .truncation
            .clone()
            .unwrap();
        assert_eq!((t.position, t.offset), (pos as u64, corrupt));
        assert_eq!(t.bytes_discarded, (bytes.len() - pos) as u64);
        close(log, p);
    }
}

// LogLoaderTest.testLogRecoversToCorrectOffset: 100 × 100 B records, 700 B segments, index
// every 300 B; reopened uncleanly with recovery point 10 → the same log end and the same
// index and time-index entries as a log closed cleanly; the recovery point stays 10 until a
// flush, then it is the log end.
#[test]
fn test_log_recovers_to_correct_offset() {
    let config = TopicConfig::default()
        .segment_bytes(700)
        .index_interval_bytes(300);
    let batch = |o: i64| single(1_000 + o, &[o as u8; 100]);
    let reference = tempdir();
    let (log, p) = create(reference.path(), config.clone());
    for o in 0..100 {
        p.append(&batch(o)).unwrap();
    }
    close(log, p);

    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, config);
    for o in 0..10 {
        p.append(&batch(o)).unwrap();
    }
    log.flush().unwrap();
    for o in 10..100 {
        p.append(&batch(o)).unwrap();
    }
    let segments = p.segment_base_offsets();
    crash(log, p);
    assert_eq!(recorded_recovery_point(root), 10);

    let (log, p) = reopen(root);
    let report = &log.recovery_report().partitions[0];
    assert_eq!(report.recovery_point, 10);
    assert_eq!(report.truncation, None);
    // Segments from the one holding offset 10 on are rescanned.
    let holder = *segments.iter().rev().find(|&&b| b <= 10).unwrap();
    let rescanned = segments.iter().filter(|&&b| b >= holder).count();
    assert_eq!(report.segments_scanned, rescanned);
    assert_eq!(p.log_end_offset(), 100);
    assert_eq!(p.segment_base_offsets(), segments);
    assert_eq!(recorded_recovery_point(root), 10, "open does not move it");
    log.flush().unwrap();
    assert_eq!(recorded_recovery_point(root), 100);
    close(log, p);
    for ext in ["log", "index", "timeindex"] {
        assert!(
            files_with(root, ext) == files_with(reference.path(), ext),
            ".{ext} files differ from a cleanly closed log"
        );
    }
}

/// 200 single-record batches with ts = t + i × 10 in 200-byte segments, an index entry per
/// batch; closed cleanly. Returns the index files.
fn index_rebuild_fixture(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let config = TopicConfig::default()
        .segment_bytes(200)
        .index_interval_bytes(1);
    let (log, p) = create(root, config);
    for i in 0..200 {
        p.append(&single(1_000_000 + i * 10, b"test")).unwrap();
    }
    assert!(p.segment_count() >= 60);
    close(log, p);
    let mut files = files_with(root, "index");
    files.extend(files_with(root, "timeindex"));
    files
}

/// Reopens and checks LEO 200, every offset readable, every timestamp found.
fn check_index_rebuild(root: &Path, original: &BTreeMap<String, Vec<u8>>, clean: bool) {
    let (log, p) = reopen(root);
    let report = &log.recovery_report().partitions[0];
    if clean {
        // Sealed segments are not rescanned: their bad indexes are rebuilt and reported.
        assert_eq!(report.rebuilt_indexes.len(), original.len());
    } else {
        assert_eq!(report.segments_scanned, p.segment_count());
    }
    assert_eq!(p.log_end_offset(), 200);
    for i in 0..200u64 {
        assert_eq!(offsets(&p.read(i, 1).unwrap()), [i]);
        let ts = 1_000_000 + i as i64 * 10;
        let found = p.offset_for_time(ts).unwrap().unwrap();
        assert_eq!((found.offset, found.timestamp), (i, ts));
    }
    close(log, p);
    let mut files = files_with(root, "index");
    files.extend(files_with(root, "timeindex"));
    assert!(
        files == *original,
        "rebuilt indexes differ from the originals"
    );
}

// LogLoaderTest.testIndexRebuild: every .index and .timeindex deleted; reopen (unclean with
// recovery point 0, and clean) → log end 200, every offset readable, offsetsForTimes exact.
#[test]
fn test_index_rebuild() {
    for clean in [false, true] {
        let dir = tempdir();
        let root = dir.path();
        let original = index_rebuild_fixture(root);
        for name in original.keys() {
            fs::remove_file(pdir(root).join(name)).unwrap();
        }
        if !clean {
            forget_clean_shutdown(root);
            write_recovery_point(root, 0);
        }
        check_index_rebuild(root, &original, clean);
    }
}

// LogLoaderTest.testCorruptIndexRebuild: every .index and .timeindex overwritten with two
// spaces; reopen → as testIndexRebuild.
#[test]
fn test_corrupt_index_rebuild() {
    for clean in [false, true] {
        let dir = tempdir();
        let root = dir.path();
        let original = index_rebuild_fixture(root);
        for name in original.keys() {
            fs::write(pdir(root).join(name), b"  ").unwrap();
        }
        if !clean {
            forget_clean_shutdown(root);
            write_recovery_point(root, 0);
        }
        check_index_rebuild(root, &original, clean);
    }
}

// LogLoaderTest.testCorruptLog: 50–99 single records, clean close, random bytes appended to
// the active .log and .index, reopen uncleanly with recovery point 50 → the log end is
// unchanged and every record is identical.
#[test]
fn test_corrupt_log() {
    let mut rng = Rng(seed("test_corrupt_log"));
    for _ in 0..10 {
        let dir = tempdir();
        let root = dir.path();
        let config = TopicConfig::default()
            .segment_bytes(1000)
            .index_interval_bytes(1);
        let (log, p) = create(root, config);
        let count = 50 + rng.below(50) as u64;
        for i in 0..count {
            p.append(&single(1_000 + i as i64, b"test")).unwrap();
        }
        let records = read_all(&p);
        let active = *p.segment_base_offsets().last().unwrap();
        close(log, p);
        let log_path = seg(root, active, "log");
        let end = fs::metadata(&log_path).unwrap().len();
        let len = rng.below(1024) + 1;
        let garbage = rng.bytes(len);
        append_at_end(&log_path, &garbage);
        let len = rng.below(1024) + 1;
        append_at_end(&seg(root, active, "index"), &rng.bytes(len));
        forget_clean_shutdown(root);
        write_recovery_point(root, 50);

        let (log, p) = reopen(root);
        assert_eq!(p.log_end_offset(), count);
        assert_eq!(read_all(&p), records);
        let report = &log.recovery_report().partitions[0];
        assert_eq!(report.recovery_point, 50);
        let nonzero = garbage.iter().rposition(|&b| b != 0);
        match (&report.truncation, nonzero) {
            (Some(t), Some(last)) => {
                assert_eq!((t.segment.clone(), t.position), (log_path.clone(), end));
                assert_eq!((t.offset, t.bytes_discarded), (count, last as u64 + 1));
            }
            (None, None) => {}
            (t, _) => panic!("garbage {garbage:?}, truncation {t:?}"),
        }
        close(log, p);
    }
}

// LogLoaderTest.testCleanShutdownFile: 100 records, clean close; reopened with recovery point
// 0 but the clean-shutdown marker → no recovery (nothing rescanned), log end 100.
#[test]
fn test_clean_shutdown_file() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, TopicConfig::default().segment_bytes(1000));
    for i in 0..100 {
        p.append(&single(1_000 + i, b"test")).unwrap();
    }
    let records = read_all(&p);
    close(log, p);
    write_recovery_point(root, 0);
    let (log, p) = reopen(root);
    let report = log.recovery_report();
    assert_eq!(report.clean_dirs, [root.to_path_buf()]);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.partitions[0].segments_scanned, 0);
    assert_eq!(p.log_end_offset(), 100);
    assert_eq!(read_all(&p), records);
    crash(log, p);
    // The marker was consumed by that open: the next one is unclean.
    let (log, p) = reopen(root);
    assert_eq!(log.recovery_report().unclean_dirs, [root.to_path_buf()]);
    assert!(log.recovery_report().partitions[0].segments_scanned > 0);
    close(log, p);
}

// LogLoaderTest.testBogusIndexSegmentsAreRemoved: index files without a log segment are
// deleted on open; the real segment's are kept.
#[test]
fn test_bogus_index_segments_are_removed() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, TopicConfig::default());
    p.append_values(["test"]).unwrap();
    close(log, p);
    let bogus = [seg(root, 5, "index"), seg(root, 5, "timeindex")];
    for path in &bogus {
        fs::write(path, [0u8; 24]).unwrap();
    }
    let (log, p) = reopen(root);
    let mut removed = log.recovery_report().partitions[0].removed_files.clone();
    removed.sort();
    assert_eq!(removed, bogus);
    assert!(bogus.iter().all(|b| !b.exists()));
    assert!(seg(root, 0, "index").exists() && seg(root, 0, "timeindex").exists());
    assert_eq!(p.log_end_offset(), 1);
    close(log, p);
}

// LogLoaderTest.testOpenDeletesObsoleteFiles: segments marked `.deleted` are removed on open
// and do not come back.
#[test]
fn test_open_deletes_obsolete_files() {
    let dir = tempdir();
    let root = dir.path();
    let (log, p) = create(root, TopicConfig::default().segment_bytes(1000));
    for i in 0..100 {
        p.append(&single(1_000 + i, b"test")).unwrap();
    }
    let bases = p.segment_base_offsets();
    close(log, p);
    // The first two segments were being deleted (renamed `.deleted`) when the log stopped.
    for &base in &bases[..2] {
        for ext in ["log", "index", "timeindex"] {
            let path = seg(root, base, ext);
            fs::rename(&path, path.with_extension(format!("{ext}.deleted"))).unwrap();
        }
    }
    let (log, p) = reopen(root);
    assert_eq!(log.recovery_report().partitions[0].removed_files.len(), 6);
    assert_eq!(p.segment_base_offsets(), bases[2..]);
    assert_eq!(p.log_start_offset(), bases[2]);
    close(log, p);
    let (log, p) = reopen(root);
    assert_eq!(p.segment_base_offsets(), bases[2..]);
    close(log, p);
}
