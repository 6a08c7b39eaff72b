//! Readers racing writers and retention: two appenders, two readers and a thread that
//! deletes records and runs retention, over small segments that roll, get deleted and are
//! unmapped while readers hold views of them. Nothing may panic or fault (no SIGBUS), every
//! read must hand out intact records at contiguous offsets, and every value a reader kept
//! must still read the same after its segment was deleted.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tarnlog::{Error, Log, Partition, TopicConfig};

mod common;

/// A value that names itself: writer, sequence number, then filler derived from both.
fn value(writer: u8, seq: u32) -> Vec<u8> {
    let mut v = vec![writer];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend((0..60u32).map(|i| (i ^ seq) as u8 ^ writer));
    v
}

/// Checks a value made by [`value`]: the one it says it is.
fn check(v: &[u8]) {
    assert_eq!(v.len(), 65, "a value of the wrong length");
    let seq = u32::from_be_bytes(v[1..5].try_into().unwrap());
    assert_eq!(v, value(v[0], seq), "a damaged value");
}

/// Reads from the log start to the end over and over, checking every record and keeping
/// some values (zero-copy views into segments that retention later deletes).
fn reader(partition: &Partition, stop: &AtomicBool) -> (u64, Vec<(Bytes, Vec<u8>)>) {
    let (mut read, mut kept) = (0u64, Vec::new());
    let mut offset = 0;
    while !stop.load(Ordering::Relaxed) {
        let result = partition.read(offset, 32 << 10);
        let chunk = match result {
            Ok(chunk) => chunk,
            Err(Error::OffsetOutOfRange { earliest, .. }) => {
                offset = earliest;
                continue;
            }
            Err(error) => panic!("read at {offset}: {error}"),
        };
        let mut next = None;
        for record in chunk.records() {
            let record = record.unwrap();
            let at = record.offset as u64;
            assert!(at >= offset, "offset {at} before the requested {offset}");
            if let Some(next) = next {
                assert_eq!(at, next, "offsets not contiguous");
            }
            next = Some(at + 1);
            let v = record.value.unwrap();
            check(&v);
            if read % 997 == 0 && kept.len() < 500 {
                kept.push((v.clone(), v.to_vec()));
            }
            read += 1;
        }
        match next {
            Some(next) => offset = next,
            // At the end: start over from the log start (records there may be gone by now).
            None => offset = 0,
        }
    }
    (read, kept)
}

/// Runs its closure when dropped, also while a panic unwinds: a thread that others wait for
/// signals them even when it fails (a scope waits for every thread, so one left waiting
/// would turn that failure into a hang).
struct Defer<F: FnMut()>(F);

impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Retention passes the deleter of `readers_race_appends_rolls_and_retention` makes at least.
const MIN_PASSES: u32 = 10;

#[test]
fn readers_race_appends_rolls_and_retention() {
    let root = tempfile::tempdir().unwrap();
    let log = common::busy_maintenance_log(root.path());
    let config = TopicConfig::default()
        .segment_bytes(16 << 10)
        .retention_bytes(64 << 10)
        .index_interval_bytes(512);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let stop = AtomicBool::new(false);
    // Three seconds, and at least `MIN_PASSES` retention passes however slow the disk's
    // syncs are today (each pass checkpoints the log start durably).
    let deadline = Instant::now() + Duration::from_secs(3);
    let passes = AtomicU32::new(0);
    let running = || Instant::now() < deadline || passes.load(Ordering::Relaxed) < MIN_PASSES;
    let (partition_ref, log_ref, stop, running, passes) =
        (&partition, &log, &stop, &running, &passes);
    std::thread::scope(|s| {
        let _stop = Defer(|| stop.store(true, Ordering::Relaxed));
        let (partition, log) = (partition_ref, log_ref);
        let writers: Vec<_> = (0..2u8)
            .map(|writer| {
                s.spawn(move || {
                    let mut seq = 0u32;
                    while running() {
                        let values: Vec<Vec<u8>> =
                            (0..=seq % 7).map(|i| value(writer, seq + i)).collect();
                        seq += values.len() as u32;
                        partition.append_values(values).unwrap();
                    }
                    seq
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| s.spawn(move || reader(partition, stop)))
            .collect();
        let deleter = s.spawn(move || {
            // Failed: the writers no longer wait for the passes.
            let _failed = Defer(|| passes.store(u32::MAX, Ordering::Relaxed));
            let tp = tarnlog::TopicPartition::new("t", 0);
            while running() {
                let end = partition.log_end_offset();
                log.delete_records(&tp, end.saturating_sub(300)).unwrap();
                log.maintain().unwrap();
                passes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let written: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        deleter.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            let (read, kept) = reader.join().unwrap();
            assert!(read > 1_000, "a reader read only {read} records");
            // Views taken before their segments were deleted still hold the same bytes.
            for (view, copy) in kept {
                assert_eq!(&view[..], &copy[..]);
            }
        }
        assert_eq!(u64::from(written), partition.log_end_offset());
        assert!(partition.log_start_offset() > 0, "retention never ran");
    });
    log.close().unwrap();
}

/// A read takes no lock, so a truncation can swap segments under it (a replica cut back to
/// where its history diverged); what the read then sees must never be reported as damage:
/// every read succeeds, or finds its offset gone (`OffsetOutOfRange`), and hands out
/// intact records at contiguous offsets.
#[test]
fn reads_racing_truncations_never_report_damage() {
    let root = tempfile::tempdir().unwrap();
    let log = Log::open(root.path()).unwrap();
    let config = TopicConfig::default()
        .segment_bytes(8 << 10)
        .index_interval_bytes(256);
    let partition = log.create_topic("t", config).unwrap().partition(0).unwrap();
    let stop = AtomicBool::new(false);
    // Two seconds, and at least 10 cuts and 100 reads by each reader however loaded the
    // machine is.
    let deadline = Instant::now() + Duration::from_secs(2);
    let reads = [AtomicU64::new(0), AtomicU64::new(0)];
    let (partition, stop, reads) = (&partition, &stop, &reads);
    std::thread::scope(|s| {
        let cutter = s.spawn(move || {
            let _stop = Defer(|| stop.store(true, Ordering::Relaxed));
            let (mut seq, mut cuts) = (0u32, 0);
            let fewest_reads = || reads.iter().map(|r| r.load(Ordering::Relaxed)).min();
            while Instant::now() < deadline || cuts < 10 || fewest_reads() < Some(100) {
                // Mostly short cuts followed by a batch that reaches past the old end: where
                // a read that loaded the end before the cut finds newer data.
                let batches = if seq % 50 == 0 { 40 } else { 1 };
                for _ in 0..batches {
                    let values: Vec<Vec<u8>> =
                        (0..8 + seq % 9).map(|i| value(0, seq + i)).collect();
                    seq += values.len() as u32;
                    partition.append_values(values).unwrap();
                }
                let end = partition.log_end_offset();
                partition
                    .truncate_to(end - end.min(u64::from(seq % 7) + 1))
                    .unwrap();
                cuts += 1;
            }
            cuts
        });
        let readers: Vec<_> = (0..2)
            .map(|r: usize| {
                s.spawn(move || {
                    // Finished (or failed): the cutter no longer waits for this reader.
                    let _finished = Defer(|| reads[r].store(u64::MAX, Ordering::Relaxed));
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let end = partition.log_end_offset();
                        // Near the end, where the cuts are.
                        let offset = end.saturating_sub(1 + (done * 7 + r as u64) % 24);
                        let chunk = match partition.read(offset, 16 << 10) {
                            Ok(chunk) => chunk,
                            Err(Error::OffsetOutOfRange { .. }) => continue,
                            Err(error) => panic!("read at {offset}: {error}"),
                        };
                        let mut next = None;
                        for record in chunk.records() {
                            let record = record.unwrap();
                            if let Some(next) = next {
                                assert_eq!(record.offset as u64, next, "offsets not contiguous");
                            }
                            next = Some(record.offset as u64 + 1);
                            check(&record.value.unwrap());
                        }
                        done += 1;
                        reads[r].store(done, Ordering::Relaxed);
                    }
                    done
                })
            })
            .collect();
        assert!(cutter.join().unwrap() >= 10);
        for reader in readers {
            assert!(reader.join().unwrap() >= 100);
        }
    });
    log.close().unwrap();
}

/// An append racing its topic's deletion answers `UnknownTopic` (Kafka's
/// `UNKNOWN_TOPIC_OR_PARTITION`), as `Partition::append` documents, not `Closed`: one that
/// passed the deleted check just before `delete_topic` reached the writer after the
/// deletion closed it, though the log was open. Many rounds: the window is narrow.
#[test]
fn an_append_racing_its_topics_deletion_answers_unknown_topic() {
    for round in 0..100 {
        let log = Log::temp().unwrap();
        let partition = log.create_topic("t", None).unwrap().partition(0).unwrap();
        let failure = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for i in 0..1_000_000u64 {
                    if let Err(error) = partition.append_values([i.to_be_bytes()]) {
                        return Some(error);
                    }
                }
                None
            });
            std::thread::sleep(std::time::Duration::from_micros(200));
            log.delete_topic("t").unwrap();
            writer.join().unwrap()
        });
        if let Some(error) = failure {
            assert!(
                matches!(error, Error::UnknownTopic { .. }),
                "round {round}: {error:?}"
            );
        }
        log.close().unwrap();
    }
}
