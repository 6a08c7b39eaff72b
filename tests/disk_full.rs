//! Real `ENOSPC` from the kernel: appends into an 8 MiB tmpfs until it is full. The failing
//! append must be a typed `Error::Io` with `is_disk_full()` (never SIGBUS: segment files are
//! allocated before they are written through their mapping), nothing acknowledged may be
//! lost, and appends must work again once space is freed. Needs root (to mount); skipped
//! otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::Tmpfs;

use tarnlog::{Error, FsyncPolicy, Log, TopicConfig};

const TOPIC: &str = "fill";
const PARTITIONS: u32 = 2;
/// Written before the log, deleted to make room again.
const FILLER_BYTES: usize = 1 << 20;

/// The seed: `TARNLOG_SEED` or the clock; printed so that a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("TARNLOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("disk_full: TARNLOG_SEED={seed}");
    seed
}

/// xorshift64*: small, deterministic, good enough for sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The value of append attempt `i`: `v<i>-` then filler up to `len` bytes.
fn value(i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("v{i:06}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + ((v.len() * 7 + i) % 26) as u8);
    }
    v
}

/// An acknowledged append: partition, offset, value.
type Acked = Vec<(u32, u64, Vec<u8>)>;

/// Big segments (full disk met while growing a segment) or small ones with small indexes
/// (full disk met while rolling, too).
fn config(small_segments: bool) -> TopicConfig {
    let config = TopicConfig::default()
        .partitions(PARTITIONS)
        .fsync(FsyncPolicy::EveryBatch);
    if small_segments {
        config.segment_bytes(96 << 10).segment_index_bytes(8 << 10)
    } else {
        config.segment_bytes(1 << 20)
    }
}

/// Appends (random sizes, alternating partitions) until 20 appends in a row have failed;
/// returns everything acknowledged and the first error. Every failure must be a full disk
/// and leave the log end where it was; appends that still fit (into space allocated
/// earlier, or smaller ones) are acknowledged like any other.
fn fill(log: &Log, rng: &mut Rng, small_segments: bool) -> (Acked, Error) {
    let topic = log.create_topic(TOPIC, config(small_segments)).unwrap();
    let mut acked = Acked::new();
    let mut first_error = None;
    let mut failures_in_a_row = 0;
    for i in 0.. {
        let p = (i % PARTITIONS as usize) as u32;
        let partition = topic.partition(p).unwrap();
        let len = 100 + (rng.next() % 6000) as usize;
        let v = value(i, len);
        let end = partition.log_end_offset();
        match partition.append_values([&v]) {
            Ok(info) => {
                assert_eq!(info.base_offset, end);
                acked.push((p, info.base_offset, v));
                failures_in_a_row = 0;
            }
            Err(error) => {
                assert_disk_full(&error);
                assert_eq!(
                    partition.log_end_offset(),
                    end,
                    "a failed append ({error}) moved the log end: something was appended"
                );
                first_error.get_or_insert(error);
                failures_in_a_row += 1;
                if failures_in_a_row == 20 {
                    break;
                }
            }
        }
        assert!(i < 100_000, "8 MiB never filled up");
    }
    (acked, first_error.unwrap())
}

/// Every record of every partition (read segment by segment) equals what was acknowledged,
/// with nothing else in between.
fn verify(log: &Log, acked: &Acked) {
    let topic = log.topic(TOPIC).unwrap();
    for p in 0..PARTITIONS {
        let partition = topic.partition(p).unwrap();
        let expected: Vec<&(u32, u64, Vec<u8>)> = acked.iter().filter(|a| a.0 == p).collect();
        let mut found = Vec::new();
        let mut next = partition.log_start_offset();
        while next < partition.log_end_offset() {
            let read = partition.read(next, 1 << 20).unwrap();
            let before = next;
            for record in read.records() {
                let record = record.unwrap();
                next = record.offset as u64 + 1;
                found.push((record.offset as u64, record.value.unwrap().to_vec()));
            }
            assert!(
                next > before,
                "partition {p}: read({next}) is empty below the log end"
            );
        }
        assert_eq!(
            found.len(),
            expected.len(),
            "partition {p}: {} records on disk, {} acknowledged",
            found.len(),
            expected.len()
        );
        for ((offset, value), (_, acked_offset, acked_value)) in found.iter().zip(expected) {
            assert_eq!(offset, acked_offset, "partition {p}");
            assert!(
                value == acked_value,
                "partition {p} offset {offset}: value changed"
            );
        }
    }
}

fn write_filler(root: &Path) -> PathBuf {
    let filler = root.join("filler");
    std::fs::write(&filler, vec![0x5a; FILLER_BYTES]).unwrap();
    filler
}

fn assert_disk_full(error: &Error) {
    assert!(
        matches!(error, Error::Io { .. }) && error.is_disk_full() && error.is_retriable(),
        "an append that met a full disk must be Io(ENOSPC), got {error:?}"
    );
}

/// After the disk filled up: frees the filler, reopens, verifies, appends again, closes,
/// reopens and verifies again.
fn recover_and_resume(root: &Path, filler: &Path, mut acked: Acked) {
    // While still full, a reopen may fail, but only as a full disk.
    match Log::open(root.join("log")) {
        Ok(log) => {
            verify(&log, &acked);
            if let Err(error) = log.close() {
                assert!(
                    matches!(error, Error::Io { .. }),
                    "close while full: {error:?}"
                );
            }
        }
        Err(error) => assert!(error.is_disk_full(), "reopen while full: {error:?}"),
    }
    std::fs::remove_file(filler).unwrap();
    let log = Log::open(root.join("log")).unwrap();
    verify(&log, &acked);
    let topic = log.topic(TOPIC).unwrap();
    for i in 0..40 {
        let p = (i % PARTITIONS as usize) as u32;
        let partition = topic.partition(p).unwrap();
        let v = value(1_000_000 + i, 2000);
        let info = partition
            .append_values([&v])
            .unwrap_or_else(|e| panic!("append {i} after freeing space: {e:?}"));
        acked.push((p, info.base_offset, v));
    }
    drop(topic);
    log.close().unwrap();
    let log = Log::open(root.join("log")).unwrap();
    verify(&log, &acked);
    log.close().unwrap();
}

/// Mounts the tmpfs or explains why the test is skipped.
fn mounted() -> Option<Tmpfs> {
    match Tmpfs::mount("8m") {
        Ok(tmpfs) => Some(tmpfs),
        Err(reason) => {
            println!("disk_full: skipped: {reason}");
            None
        }
    }
}

// Fill a real 8 MiB tmpfs, then close: the failing append is Io(ENOSPC), not SIGBUS; every
// acknowledged record survives; appends resume after space is freed. Prevents SIGBUS on a
// full disk and lost or half-appended batches at ENOSPC.
#[test]
fn full_tmpfs_then_close() {
    let Some(tmpfs) = mounted() else { return };
    let mut rng = Rng(seed() | 1);
    let filler = write_filler(tmpfs.path());
    let log = Log::open(tmpfs.path().join("log")).unwrap();
    let (acked, error) = fill(&log, &mut rng, false);
    assert!(acked.len() > 100, "only {} appends fit", acked.len());
    if let Err(error) = log.close() {
        assert!(
            matches!(error, Error::Io { .. }),
            "close on a full disk: {error:?}"
        );
    }
    println!(
        "disk_full (close): {} appends acknowledged, then {error}",
        acked.len()
    );
    recover_and_resume(tmpfs.path(), &filler, acked);
}

// Fill a real 8 MiB tmpfs with small segments (so a roll can meet the full disk), then crash
// (kill -9), in 4 rounds (round r uses seed + r): recovery keeps every acknowledged record and
// appends resume after space is freed. Prevents recovery choking on a preallocated tail or on
// the leftovers of a roll that met ENOSPC.
#[test]
fn full_tmpfs_then_crash() {
    let base = seed();
    for round in 0..4 {
        let Some(tmpfs) = mounted() else { return };
        let seed = base.wrapping_add(round);
        let mut rng = Rng(seed.rotate_left(17) | 1);
        let filler = write_filler(tmpfs.path());
        let log = Log::open(tmpfs.path().join("log")).unwrap();
        let (acked, error) = fill(&log, &mut rng, true);
        log.simulate_crash();
        println!(
            "disk_full (crash, round {round}, TARNLOG_SEED={seed}): {} appends acknowledged, \
             then {error}",
            acked.len()
        );
        recover_and_resume(tmpfs.path(), &filler, acked);
    }
}
