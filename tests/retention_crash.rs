//! Retention under process kills: a child process (this test binary, run as
//! `retention_child`) appends single-record batches with `EveryBatch`, moves the log start
//! with `delete_records` and runs `maintain` passes, printing each acknowledged append and
//! each returned log start; the parent SIGKILLs it at random moments, reopens the log and
//! checks that the log start never went back, that every acknowledged record at or above it
//! survived exactly, that nothing below it is readable, and that the offsets run without a
//! gap. `TARNLOG_SOAK=1` raises the kill count from 30 to 300.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use tarnlog::{Error, FsyncPolicy, TopicConfig};

const TOPIC: &str = "r";
const ENV_CHILD: &str = "TARNLOG_RETENTION_CHILD";

fn value_of(seq: u64) -> Vec<u8> {
    let mut value = seq.to_le_bytes().to_vec();
    value.resize(40 + (seq % 50) as usize, (seq % 251) as u8);
    value
}

/// The child: appends and prints `A <offset>` after each acknowledged append, moves the log
/// start every few appends and prints `S <start>` once `delete_records` returned.
#[test]
fn retention_child() {
    let config = TopicConfig::default()
        .segment_bytes(2048)
        .retention_ms(-1)
        .fsync(FsyncPolicy::EveryBatch);
    let Some((log, partition)) = common::child_partition(ENV_CHILD, TOPIC, config) else {
        return;
    };
    loop {
        let seq = partition.log_end_offset();
        let info = partition.append_values([value_of(seq)]).unwrap();
        assert_eq!(info.base_offset, seq);
        println!("A {seq}");
        if seq % 7 == 0 {
            let start = partition.delete_records(seq.saturating_sub(30)).unwrap();
            println!("S {start}");
        }
        if seq % 11 == 0 {
            log.maintain().unwrap();
        }
    }
}

#[test]
fn kill_during_retention() {
    if std::env::var(ENV_CHILD).is_ok() {
        return;
    }
    let kills = if std::env::var("TARNLOG_SOAK").is_ok() {
        300
    } else {
        30
    };
    let dir = tempfile::tempdir().unwrap();
    let mut acked_start = 0u64;
    let mut acked: Vec<u64> = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for kill in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run = Duration::from_millis(30 + rng % 120);
        let (lines, status) = common::run_and_kill("retention_child", ENV_CHILD, dir.path(), run);
        assert!(
            lines.iter().any(|l| l == "READY") || status.code().is_none(),
            "kill {kill}: the child failed: {status:?} {lines:?}"
        );
        for line in &lines {
            if let Some(seq) = line.strip_prefix("A ") {
                acked.push(seq.parse().unwrap());
            } else if let Some(start) = line.strip_prefix("S ") {
                acked_start = acked_start.max(start.parse().unwrap());
            }
        }
        check(dir.path(), acked_start, &acked, kill);
    }
    let segments = common::log_files(&dir.path().join(format!("{TOPIC}-0")));
    println!(
        "retention crash: {kills} kills, {} appends acknowledged, log start {acked_start} \
         acknowledged, {segments} segments left",
        acked.len()
    );
    assert!(acked_start > 0, "no delete_records was acknowledged");
    assert!(
        segments < acked.len() / 30,
        "retention deleted too little: {segments} segments"
    );
}

/// The reopened log against what the child acknowledged.
fn check(dir: &Path, acked_start: u64, acked: &[u64], kill: u32) {
    let log = common::manual_log(dir).unwrap_or_else(|error| panic!("kill {kill}: {error:?}"));
    let Ok(topic) = log.topic(TOPIC) else {
        assert!(acked.is_empty(), "kill {kill}: the topic is gone");
        return;
    };
    let partition = topic.partition(0).unwrap();
    let start = partition.log_start_offset();
    let end = partition.log_end_offset();
    assert!(
        start >= acked_start,
        "kill {kill}: log start {start} below the acknowledged {acked_start}"
    );
    if start > 0 {
        assert!(
            matches!(
                partition.read(start - 1, 1 << 20),
                Err(Error::OffsetOutOfRange { .. })
            ),
            "kill {kill}: offset {} below the log start {start} is readable",
            start - 1
        );
    }
    let mut next = start;
    while next < end {
        let read = partition.read(next, 1 << 20).unwrap();
        for batch in read.batches() {
            let batch = batch.unwrap_or_else(|error| {
                let mut files: Vec<(String, u64)> = std::fs::read_dir(dir.join("r-0"))
                    .unwrap()
                    .map(|e| {
                        let e = e.unwrap();
                        (
                            e.file_name().into_string().unwrap(),
                            e.metadata().unwrap().len(),
                        )
                    })
                    .collect();
                files.sort();
                panic!(
                    "kill {kill}: {error} reading at {next} (start {start}, end {end}); \
                     files {files:?}; report {:?}",
                    log.recovery_report()
                )
            });
            for record in batch.records() {
                let record = record.unwrap();
                let offset = u64::try_from(record.offset).unwrap();
                if offset < start {
                    continue;
                }
                assert_eq!(offset, next, "kill {kill}: a gap before {offset}");
                assert_eq!(
                    record.value.as_deref(),
                    Some(&value_of(offset)[..]),
                    "kill {kill}: offset {offset} changed"
                );
                next += 1;
            }
        }
    }
    let last = acked.iter().max().copied();
    assert!(
        last.is_none_or(|l| l < end),
        "kill {kill}: acknowledged {last:?} missing (log end {end})"
    );
    log.close().unwrap();
}
