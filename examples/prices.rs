//! Prices: a compacted topic used as a table. A producer writes price updates keyed by
//! product (thousands of them for a dozen products) and one deletion (a tombstone: a record
//! with no value); the cleaner keeps only the latest record of each key, at its offset. A
//! consumer then rebuilds the table from the beginning of the topic, reading a few hundred
//! records instead of thousands (the active segment is never cleaned), and the tombstone
//! goes at the first cleaning after its `delete_retention_ms` (a day) passed.
//!
//! Run with `cargo run --release --example prices`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tarnlog::{
    AutoOffsetReset, CleanupPolicy, ConsumerConfig, Log, ManualClock, ProducerConfig,
    ProducerRecord, TopicConfig, TopicPartition,
};

const PRODUCTS: [&str; 12] = [
    "apple",
    "banana",
    "cherry",
    "date",
    "elderberry",
    "fig",
    "grape",
    "kiwi",
    "lemon",
    "mango",
    "nectarine",
    "orange",
];

/// Reads the whole topic into a table; returns it with the number of records and of
/// tombstones read.
fn table(log: &Log) -> tarnlog::Result<(BTreeMap<String, String>, usize, usize)> {
    let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config)?;
    let tp = TopicPartition::new("prices", 0);
    consumer.assign([tp.clone()])?;
    let end = log.topic("prices")?.partition(0)?.high_watermark();
    let (mut table, mut read, mut tombstones) = (BTreeMap::new(), 0, 0);
    while consumer.position(&tp)? < end {
        for record in consumer.poll(Duration::from_millis(100))? {
            read += 1;
            let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
            if let Some(value) = record.value.as_deref() {
                table.insert(
                    key.into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            } else {
                tombstones += 1;
                table.remove(key.as_ref());
            }
        }
    }
    Ok((table, read, tombstones))
}

fn main() -> tarnlog::Result<()> {
    let dir = std::env::temp_dir().join(format!("tarnlog-prices-{}", std::process::id()));
    // A run that failed may have left one behind under a pid now reused.
    let _ = std::fs::remove_dir_all(&dir);
    // A manual clock, so that the example can let a day pass for the tombstone.
    let clock = ManualClock::new(1_700_000_000_000);
    let log = Log::builder()
        .dir(&dir)
        .clock(Arc::new(clock.clone()))
        .background_maintenance(false)
        .open()?;
    let config = TopicConfig::default()
        .segment_bytes(16 << 10)
        .cleanup_policy(CleanupPolicy::Compact);
    log.create_topic("prices", config)?;
    let producer = log.producer(ProducerConfig::default())?;
    for i in 0..6_000u32 {
        let product = PRODUCTS[i as usize % PRODUCTS.len()];
        let price = format!("{}.{:02}", 1 + i % 9, i % 100);
        // Failures show at `flush`; the futures are not needed.
        drop(producer.send(ProducerRecord::new("prices").key(product).value(price))?);
    }
    // Kiwi is off the menu: a record without a value deletes the key.
    producer
        .send(ProducerRecord::new("prices").key("kiwi"))?
        .wait()?;
    producer.flush()?;
    let (before, read_before, _) = table(&log)?;
    println!(
        "{read_before} records written for {} products, in {}",
        before.len(),
        dir.display()
    );

    let report = log.maintain()?;
    println!(
        "cleaned: {} records removed, {} bytes of log became {}",
        report.cleaned_records_removed, report.cleaned_bytes_read, report.cleaned_bytes_written
    );
    let (after, read_after, tombstones) = table(&log)?;
    assert_eq!(after, before, "compaction keeps the table as it was");
    assert_eq!(tombstones, 1, "the tombstone stays for delete_retention_ms");
    println!(
        "the table rebuilt from {read_after} records (the kiwi tombstone among them): {after:?}"
    );

    // The tombstone was still in the active segment, which is never cleaned. Once more
    // updates rolled it out, a cleaning keeps it with a delete horizon one day
    // (`delete_retention_ms`) ahead; the first cleaning after that removes it.
    let partition = log.topic("prices")?.partition(0)?;
    for _day in 0..2 {
        // More updates, until the active segment rolls and the tombstone's is sealed.
        let segments = partition.segment_count();
        while partition.segment_count() == segments {
            for product in &PRODUCTS[..3] {
                drop(producer.send(ProducerRecord::new("prices").key(*product).value("9.99"))?);
            }
            producer.flush()?;
        }
        log.maintain()?;
        clock.advance(24 * 60 * 60 * 1000);
    }
    let (later, read_later, tombstones) = table(&log)?;
    assert_eq!(tombstones, 0, "the tombstone is gone");
    assert!(!later.contains_key("kiwi"));
    println!("two days later: {read_later} records, the kiwi tombstone gone");
    producer.close()?;
    log.close()?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
