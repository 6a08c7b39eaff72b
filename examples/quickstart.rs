//! Quick start: create a topic in a local data directory, append records, read them back,
//! close, reopen, and show that everything survived.
//!
//! Run with `cargo run --release --example quickstart [DATA_DIR]` (default `./tarnlog-data`).

use std::time::Instant;

use tarnlog::{BatchBuilder, FsyncPolicy, Log, TopicConfig};

fn main() -> tarnlog::Result<()> {
    let data_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tarnlog-data".into());
    let log = Log::open(&data_dir)?;
    println!(
        "opened log in {data_dir}: {} topic(s) already there",
        log.topics().len()
    );

    let topic = match log.topic("orders") {
        Ok(topic) => topic,
        Err(tarnlog::Error::UnknownTopic { .. }) => {
            let config = TopicConfig::default()
                .partitions(3)
                .fsync(FsyncPolicy::EveryBatch);
            println!("creating topic 'orders' with 3 partitions, fsync every batch (group commit)");
            log.create_topic("orders", config)?
        }
        Err(e) => return Err(e),
    };

    // One batch of keyed records per partition, built once in Kafka's v2 format.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let started = Instant::now();
    for p in 0..topic.partitions() {
        let partition = topic.partition(p)?;
        let mut batch = BatchBuilder::new();
        for i in 0..1000 {
            let key = format!("user-{}", i % 10);
            let value = format!(
                r#"{{"order":{i},"partition":{p},"amount":{}}}"#,
                i * 7 % 100
            );
            batch.push(
                now,
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[("source", Some(b"quickstart"))],
            );
        }
        let info = partition.append(batch.finish().expect("the batch has records"))?;
        println!(
            "partition {p}: appended offsets {}..={} ({} bytes) and synced",
            info.base_offset, info.last_offset, info.size_bytes
        );
    }
    println!(
        "appended and synced 3000 records in {:?}",
        started.elapsed()
    );

    // Read partition 0 back from its first offset: zero-copy records straight from the mapping.
    let partition = topic.partition(0)?;
    let read = partition.read(partition.log_start_offset(), 64 * 1024)?;
    let mut shown = 0;
    for record in read.records() {
        let record = record?;
        if shown < 3 {
            println!(
                "  offset {} key {} value {}",
                record.offset,
                String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()),
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()),
            );
        }
        shown += 1;
    }
    println!(
        "read {shown} records of partition 0 in one fetch (high watermark {})",
        read.high_watermark()
    );

    if let Some(found) = partition.offset_for_time(now)? {
        println!("first record at or after {now}: offset {}", found.offset);
    }

    let ends: Vec<u64> = (0..topic.partitions())
        .map(|p| topic.partition(p).map(|p| p.log_end_offset()))
        .collect::<tarnlog::Result<_>>()?;
    log.close()?;
    println!("closed cleanly; log end offsets {ends:?}");

    let log = Log::open(&data_dir)?;
    let reopened: Vec<u64> = (0..3)
        .map(|p| {
            log.topic("orders")?
                .partition(p)
                .map(|p| p.log_end_offset())
        })
        .collect::<tarnlog::Result<_>>()?;
    println!(
        "reopened: log end offsets {reopened:?}, rescanned segments: {}",
        log.recovery_report()
            .partitions
            .iter()
            .map(|p| p.segments_scanned)
            .sum::<usize>()
    );
    assert_eq!(ends, reopened, "everything acknowledged survived");
    println!(
        "data lives in {}",
        std::path::Path::new(&data_dir).join("orders-0").display()
    );
    log.close()
}
