//! Two disks, one dies: an edge device keeps telemetry on two storage directories with
//! replication factor 2. Midway through a stream of `acks=All` sends one directory fails
//! (here every call on it is made to fail through the storage seam, as a dead disk would);
//! leadership moves to the other directory and no send fails. Every acknowledged record is
//! then read back, the disk is "replaced" (healed) and restored while the log runs, and its
//! replicas are rebuilt until they are byte-identical to the survivors'.
//!
//! Run with `cargo run --release --example two_disks [DATA_DIR]` (default
//! `./tarnlog-two-disks`; it is emptied first).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tarnlog::storage::{FaultKind, FaultStorage, OsStorage};
use tarnlog::{Acks, FsyncPolicy, Log, ProducerConfig, ProducerRecord, TopicConfig};

const RECORDS: usize = 2000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "tarnlog-two-disks".into()),
    );
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let disks = [root.join("disk-a"), root.join("disk-b")];
    let storage = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(&disks)
        .storage(storage.shared())
        .open()?;
    let config = TopicConfig::default()
        .partitions(2)
        .replication_factor(2)
        .fsync(FsyncPolicy::EveryBatch);
    log.create_topic("telemetry", config)?;
    print_topic(&log, "created")?;

    let producer = log.producer(ProducerConfig::default().acks(Acks::All))?;
    let mut sends = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        if i == RECORDS / 2 {
            println!("\n-- disk-b dies after {i} sends --\n");
            storage.fail_dir(&disks[1], FaultKind::Eio);
        }
        let record = ProducerRecord::new("telemetry")
            .key(format!("sensor-{}", i % 8))
            .value(format!("reading {i}"));
        sends.push((format!("reading {i}"), producer.send(record)?));
    }
    let mut acked = Vec::with_capacity(RECORDS);
    for (value, send) in sends {
        let meta = send.wait()?;
        acked.push((meta.partition, meta.offset.unwrap_or_default(), value));
    }
    producer.close()?;
    println!("{} of {RECORDS} sends acknowledged", acked.len());
    print_dirs(&log);
    print_topic(&log, "after the failure")?;
    assert!(
        !log.dir_status()[1].online,
        "disk-b should have gone offline"
    );

    let read = read_all(&log)?;
    let missing = acked
        .iter()
        .filter(|(p, offset, value)| read.get(&(*p, *offset)) != Some(value))
        .count();
    println!("read back every partition: {missing} acknowledged records missing");
    assert_eq!(missing, 0, "an acknowledged record was lost");

    println!("\n-- disk-b replaced; restoring it while the log runs --\n");
    storage.heal_dir(&disks[1]);
    log.restore_dir(&disks[1])?;
    print_dirs(&log);
    assert!(log.dir_status().iter().all(|d| d.online));
    print_topic(&log, "after the restore")?;
    log.close()?;
    let identical = (0..2).all(|p| segments(&disks[0], p) == segments(&disks[1], p));
    println!("replicas byte-identical on both disks: {identical}");
    assert!(identical);
    println!("data left in {}", root.display());
    Ok(())
}

fn print_dirs(log: &Log) {
    for dir in log.dir_status() {
        println!(
            "  {}: {}, {} replicas, leads {}",
            dir.path.display(),
            if dir.online { "online" } else { "OFFLINE" },
            dir.replicas,
            dir.leaders
        );
    }
}

fn print_topic(log: &Log, when: &str) -> tarnlog::Result<()> {
    println!("telemetry {when}:");
    for p in log.describe_topic("telemetry")?.partitions {
        println!(
            "  partition {}: leader disk {:?}, epoch {}, in sync {:?}, offline {:?}, \
             high watermark {}",
            p.partition, p.leader, p.leader_epoch, p.isr, p.offline_replicas, p.high_watermark
        );
    }
    Ok(())
}

/// (partition, offset) → value of every visible record.
fn read_all(log: &Log) -> tarnlog::Result<BTreeMap<(u32, u64), String>> {
    let topic = log.topic("telemetry")?;
    let mut out = BTreeMap::new();
    for p in 0..topic.partitions() {
        let partition = topic.partition(p)?;
        let mut offset = partition.log_start_offset();
        while offset < partition.high_watermark() {
            let read = partition.read(offset, 1 << 20)?;
            for record in read.records() {
                let record = record?;
                offset = record.offset as u64 + 1;
                let value = record
                    .value
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                out.insert((p, record.offset as u64), value.unwrap_or_default());
            }
        }
    }
    Ok(out)
}

/// The segment files of `telemetry-p` on one disk.
fn segments(disk: &Path, p: u32) -> BTreeMap<PathBuf, Vec<u8>> {
    let dir = disk.join(format!("telemetry-{p}"));
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            (
                path.strip_prefix(disk)
                    .map(Path::to_path_buf)
                    .unwrap_or(path),
                bytes,
            )
        })
        .collect()
}
