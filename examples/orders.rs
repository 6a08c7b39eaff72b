//! Orders: one producer writes orders keyed by user; three independent consumer groups —
//! kitchen, delivery and billing — each read every order at their own pace. Billing stops
//! halfway (its process "restarts"), and its new consumer continues from the offset it
//! committed: nothing is read twice, nothing is missed.
//!
//! Run with `cargo run --release --example orders`.

use std::collections::BTreeMap;
use std::time::Duration;

use tarnlog::{
    AutoOffsetReset, Consumer, ConsumerConfig, Log, ProducerConfig, ProducerRecord, TopicConfig,
    TopicPartition,
};

const ORDERS: u64 = 2_000;
const PARTITIONS: u32 = 4;

fn consumer(log: &Log, group: &str) -> tarnlog::Result<Consumer> {
    let mut consumer = log.consumer(
        ConsumerConfig::default()
            .group_id(group)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false)
            .max_poll_records(100),
    )?;
    consumer.assign((0..PARTITIONS).map(|p| TopicPartition::new("orders", p)))?;
    Ok(consumer)
}

/// Reads up to `limit` orders (committing after each poll) and returns the order numbers.
fn drain(consumer: &mut Consumer, limit: usize) -> tarnlog::Result<Vec<u64>> {
    let mut seen = Vec::new();
    while seen.len() < limit {
        let records = consumer.poll(Duration::from_millis(200))?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
            let number = value
                .split(':')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .expect("order values are 'order:<n>:<user>'");
            seen.push(number);
        }
        // Commit after processing: a restart resumes right after what was handled.
        consumer.commit_sync()?;
    }
    Ok(seen)
}

fn main() -> tarnlog::Result<()> {
    let log = Log::temp()?;
    log.create_topic("orders", TopicConfig::default().partitions(PARTITIONS))?;
    let producer = log.producer(ProducerConfig::default())?;
    for n in 0..ORDERS {
        let user = format!("user-{}", n % 17);
        let record = ProducerRecord::new("orders")
            .key(user.clone())
            .value(format!("order:{n}:{user}"));
        drop(producer.send(record)?);
    }
    producer.flush()?;
    println!("produced {ORDERS} orders over {PARTITIONS} partitions, keyed by user");

    let mut kitchen = consumer(&log, "kitchen")?;
    let mut delivery = consumer(&log, "delivery")?;
    let kitchen_seen = drain(&mut kitchen, usize::MAX)?;
    let delivery_seen = drain(&mut delivery, usize::MAX)?;
    println!(
        "kitchen read {} orders, delivery read {} — each group sees every order",
        kitchen_seen.len(),
        delivery_seen.len()
    );

    // Billing handles about half, then its consumer goes away (a restart).
    let mut billing = consumer(&log, "billing")?;
    let mut billing_seen = drain(&mut billing, ORDERS as usize / 2)?;
    billing.close()?;
    let committed: BTreeMap<u32, Option<u64>> = (0..PARTITIONS)
        .map(|p| {
            let tp = TopicPartition::new("orders", p);
            Ok((p, log.committed_offset("billing", &tp)?.map(|c| c.offset)))
        })
        .collect::<tarnlog::Result<_>>()?;
    println!(
        "billing stopped after {} orders; committed offsets {committed:?}",
        billing_seen.len()
    );
    let mut billing = consumer(&log, "billing")?;
    let rest = drain(&mut billing, usize::MAX)?;
    println!(
        "billing restarted and read the remaining {} orders",
        rest.len()
    );
    billing_seen.extend(rest);

    for (group, mut seen) in [
        ("kitchen", kitchen_seen),
        ("delivery", delivery_seen),
        ("billing", billing_seen),
    ] {
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..ORDERS).collect::<Vec<_>>(),
            "{group} saw every order exactly once"
        );
    }
    println!("every group saw each of the {ORDERS} orders exactly once");
    log.close()
}
