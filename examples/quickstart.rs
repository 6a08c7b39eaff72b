//! Quick start: open a log in a local data directory, produce keyed records with a
//! producer, read them with a consumer in a group that commits its position, close,
//! reopen, and show that the records and the group's offsets survived.
//!
//! Run with `cargo run --release --example quickstart [DATA_DIR]` (default `./tarnlog-data`).
//! Run it twice: the second run's consumer continues where the first one committed.

use std::time::{Duration, Instant};

use tarnlog::{
    Acks, AutoOffsetReset, ConsumerConfig, FsyncPolicy, Log, ProducerConfig, ProducerRecord,
    TopicConfig, TopicPartition,
};

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

    // A producer: records with the same key land in the same partition (Kafka's murmur2),
    // batched per partition; acks=All answers once the batch is synced.
    let producer = log.producer(ProducerConfig::default().acks(Acks::All))?;
    let started = Instant::now();
    let mut sends = Vec::new();
    for i in 0..3000 {
        let record = ProducerRecord::new("orders")
            .key(format!("user-{}", i % 10))
            .value(format!(r#"{{"order":{i},"amount":{}}}"#, i * 7 % 100))
            .header("source", "quickstart");
        sends.push(producer.send(record)?);
    }
    let last = sends.pop().expect("3000 sends").wait()?;
    producer.flush()?;
    println!(
        "produced and synced 3000 records in {:?}; the last went to partition {} at offset {:?}",
        started.elapsed(),
        last.partition,
        last.offset
    );
    producer.close()?;

    // A consumer in group "billing": it starts where the group committed, or at the start.
    let mut consumer = log.consumer(
        ConsumerConfig::default()
            .group_id("billing")
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false),
    )?;
    consumer.assign((0..topic.partitions()).map(|p| TopicPartition::new("orders", p)))?;
    let mut read_count = 0;
    loop {
        let records = consumer.poll(Duration::from_millis(100))?;
        if records.is_empty() {
            break;
        }
        for record in records.iter().take(3 - read_count.min(3)) {
            println!(
                "  {}-{} offset {} key {} value {}",
                record.topic,
                record.partition,
                record.offset,
                String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()),
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()),
            );
        }
        read_count += records.count();
    }
    consumer.commit_sync()?;
    println!("group 'billing' read {read_count} new records and committed its positions");
    consumer.close()?;

    let ends: Vec<u64> = (0..topic.partitions())
        .map(|p| topic.partition(p).map(|p| p.log_end_offset()))
        .collect::<tarnlog::Result<_>>()?;
    log.close()?;
    println!("closed cleanly; log end offsets {ends:?}");

    let log = Log::open(&data_dir)?;
    let mut reopened = Vec::new();
    for p in 0..3 {
        let end = log.topic("orders")?.partition(p)?.log_end_offset();
        let committed = log
            .committed_offset("billing", &TopicPartition::new("orders", p))?
            .map(|c| c.offset);
        println!("  orders-{p}: log end {end}, committed by 'billing' {committed:?}");
        assert_eq!(committed, Some(end), "the group's commit survived");
        reopened.push(end);
    }
    assert_eq!(ends, reopened, "everything acknowledged survived");
    println!(
        "reopened with everything in place; data lives in {}",
        std::path::Path::new(&data_dir).join("orders-0").display()
    );
    log.close()
}
