//! Workers: a queue of jobs drained by a group of worker threads. Each worker is a consumer
//! in group "workers" (the group shares the topic's partitions out); one worker is killed
//! midway — it just stops, without leaving — and once its poll interval passes the others take
//! over its partitions from its last commit. No job is lost; a job the dead worker handled
//! but had not committed may run twice (at-least-once).
//!
//! Run with `cargo run --release --example workers`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tarnlog::{
    AutoOffsetReset, Consumer, ConsumerConfig, Error, Log, ProducerConfig, ProducerRecord,
    TopicConfig,
};

const JOBS: u64 = 3_000;
const WORKERS: usize = 4;

fn worker(log: &Log) -> tarnlog::Result<Consumer> {
    let mut consumer = log.consumer(
        ConsumerConfig::default()
            .group_id("workers")
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .enable_auto_commit(false)
            .max_poll_records(50)
            // Short, so the example does not wait long for the dead worker to be dropped
            // from the group (its poll timer runs out, as with Kafka's heartbeat thread).
            .session_timeout_ms(1_500)
            .max_poll_interval_ms(1_500),
    )?;
    consumer.subscribe(["jobs"])?;
    Ok(consumer)
}

fn main() -> tarnlog::Result<()> {
    let log = Log::builder()
        .dir(tempfile_dir())
        .group_initial_rebalance_delay_ms(300)
        .open()?;
    log.create_topic("jobs", TopicConfig::default().partitions(8))?;
    let producer = log.producer(ProducerConfig::default())?;
    for job in 0..JOBS {
        drop(
            producer.send(
                ProducerRecord::new("jobs")
                    .key(format!("job-{job}"))
                    .value(job.to_string()),
            )?,
        );
    }
    producer.flush()?;
    println!("queued {JOBS} jobs over 8 partitions; starting {WORKERS} workers");

    // How many times each job ran, and by whom.
    let done: Arc<Mutex<BTreeMap<u64, Vec<usize>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for id in 0..WORKERS {
        let mut consumer = worker(&log)?;
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || -> tarnlog::Result<usize> {
            let mut handled = 0;
            while !stop.load(Ordering::Acquire) {
                let jobs = consumer.poll(Duration::from_millis(100))?;
                for record in &jobs {
                    let job: u64 =
                        String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                            .parse()
                            .unwrap_or(u64::MAX);
                    std::thread::sleep(Duration::from_micros(200)); // the work
                    done.lock()
                        .expect("no worker panics")
                        .entry(job)
                        .or_default()
                        .push(id);
                    handled += 1;
                }
                // Worker 0 dies a third of the way through: no commit, no goodbye.
                if id == 0 && done.lock().expect("no worker panics").len() as u64 > JOBS / 3 {
                    println!("worker 0 killed after {handled} jobs (its last poll uncommitted)");
                    std::mem::forget(consumer);
                    return Ok(handled);
                }
                if !jobs.is_empty() {
                    match consumer.commit_sync() {
                        // Committed, or the group rebalanced since the poll (Kafka's
                        // CommitFailedException): then these jobs run again wherever
                        // their partitions went, and the next poll rejoins.
                        Ok(())
                        | Err(
                            Error::RebalanceInProgress
                            | Error::IllegalGeneration { .. }
                            | Error::UnknownMemberId,
                        ) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
            consumer.close()?;
            Ok(handled)
        }));
    }
    while (done.lock().expect("no worker panics").len() as u64) < JOBS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the workers stalled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Release);
    for (id, thread) in threads.into_iter().enumerate() {
        let handled = thread.join().expect("no worker panics")?;
        println!("worker {id} handled {handled} jobs");
    }
    let done = done.lock().expect("no worker panics");
    let twice = done.values().filter(|runs| runs.len() > 1).count();
    assert_eq!(done.len() as u64, JOBS, "every job ran");
    println!(
        "all {JOBS} jobs done in {:?}; {twice} ran twice (handled by the dead worker after its last commit)",
        started.elapsed()
    );
    let dirs = log.dirs();
    drop(log);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

/// A fresh directory for the example's log.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tarnlog-workers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
