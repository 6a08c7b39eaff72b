//! The producer: Kafka's `KafkaProducer` in process — partitioning, batching per partition
//! with `batch_size` and `linger_ms`, `acks`, back-pressure with `buffer_memory` and
//! `max_block_ms`, and retries with `retries`, `retry_backoff_ms` and
//! `delivery_timeout_ms`.
//!
//! Design: `send` validates the record, chooses its partition and adds it to that
//! partition's open batch, built once in Kafka's v2 form (`BatchBuilder`). One sender
//! thread per producer takes batches that are full, whose linger passed, or that a `flush`
//! or `close` released, appends each as-is to its partition and completes the records'
//! futures. Batches of one partition are taken and appended in the order they were
//! opened, so records of one partition keep their send order. A batch whose append wrote
//! nothing and failed with a retriable error is parked by the sender (`Sender::parked`)
//! with the partition's later batches behind it, and tried again after its backoff. With
//! `linger_ms = 0`, a send that finds nothing pending may append its record itself instead
//! (`direct_start`). A batch the log refuses as too large (its limit lowered since) is
//! split into parts appended in its place (`split_batch`).
//!
//! Invariants: every byte counted in `State::used` belongs to a record in an open, full or
//! in-flight (parked included) batch, or in a batch the sender answered and settles at the
//! start of its next
//! round (when it next takes the lock); a batch's futures complete exactly once, after its append (and, for
//! `acks = All`, after the fsync policy is satisfied).

mod partitioner;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};

pub use partitioner::{
    Partitioner, RoundRobinPartitioner, murmur2, partition_for_key, to_positive,
};

use crate::codec::{self, BatchBuilder, BatchHeader, RECORD_BATCH_OVERHEAD};
use crate::config::{FsyncPolicy, TimestampLimits};
use crate::describe::PartitionDescription;
use crate::error::{Error, Result};
use crate::log::{Log, Partition, Topic};
use crate::types::{AppendInfo, TopicPartition};
use partitioner::Sticky;

/// When a send counts as successful (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: the future completes as soon as the record is accepted into a batch, with
    /// no offset; a later failure to append is not reported (one of an append `send` made
    /// itself is, see [`ProducerConfig::linger_ms`]). Lost with the process.
    None,
    /// `acks=1`: the future completes once the batch is in the leader's log (on a
    /// replicated topic, once it is also copied to the in-sync followers, unsynced, and the
    /// high watermark passed it), before the topic's fsync policy runs. Survives a crash of the process; may be lost
    /// with power if the policy's fsync then fails or never ran, and, on a replicated
    /// topic, if the leader's directory fails before a follower has the batch (as in
    /// Kafka, where it is lost with the leader broker).
    Leader,
    /// `acks=all` (Kafka's default): the future completes once the batch is durable as the
    /// topic's fsync policy promises (with `EveryBatch`, after the `fdatasync` covering it).
    #[default]
    All,
}

/// Producer settings, named and defaulted as Kafka's `ProducerConfig`. Set fields directly
/// or with the same-named builder methods; [`ProducerConfig::validate`] runs at
/// [`Log::producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When a send is acknowledged. Default [`Acks::All`].
    pub acks: Acks,
    /// Bytes at which a partition's batch is sent (`batch.size`), default 16384; 0 sends
    /// every record in its own batch. A record larger than this gets a batch of its own.
    pub batch_size: usize,
    /// How long a batch that is not full waits for more records (`linger.ms`). Default 0:
    /// batches form while the sender is busy with earlier ones. (Kafka 4.0 moved its default
    /// to 5; in process, 0 gives the lowest latency at no cost in throughput under load.)
    ///
    /// With 0, a record that finds nothing of the producer pending, for a topic with
    /// [`FsyncPolicy::None`], is appended by `send` itself, in the calling thread, as a
    /// batch of its own: its future is complete when `send` returns, without the hand-off
    /// to the sender thread (a wake-up, on a busy machine up to a scheduler slice). `send`
    /// then takes as long as that append (microseconds; more when a segment rolls). Such a
    /// future answers as the sender's would: below `Acks::All`, with the record's offset
    /// once its batch is in the log, even if a later step of the append fails (its index
    /// entry's write, say); an error before that, with every `acks` (with `Acks::None`
    /// too; one that [`retries`](Self::retries) covers goes to the sender to be retried
    /// instead); and on a `LogAppendTime` topic the log's timestamp. A caller sending back to
    /// back hands its records to the sender, which batches them; one that sends a few
    /// hundred thousand records a second with work between them gets batches of one, and
    /// `linger_ms = 1` batches them. Wakers and callbacks (which run on the sender thread)
    /// never append that way, nor does a send with a callback
    /// ([`Producer::send_with_callback`]), which always goes to the sender.
    pub linger_ms: u64,
    /// Bytes of records sent but not yet acknowledged (`buffer.memory`), default 32 MiB.
    pub buffer_memory: usize,
    /// How long `send` blocks for buffer memory before failing with `Timeout`
    /// (`max.block.ms`), default 60000.
    pub max_block_ms: u64,
    /// Largest record, with its batch header, that `send` accepts (`max.request.size`),
    /// default 1048576.
    pub max_request_size: usize,
    /// A custom partitioner (`partitioner.class`); `None` uses Kafka's built-in rule:
    /// murmur2 of the key, sticky for records without one.
    pub partitioner: Option<Arc<dyn Partitioner>>,
    /// The built-in partitioner ignores record keys (`partitioner.ignore.keys`, KIP-794),
    /// default false: keyed records are then placed as records without a key are (sticky),
    /// which spreads a few hot keys over every partition at the cost of per-key order.
    /// An explicit partition and a custom [`partitioner`](Self::partitioner) are not
    /// affected (Kafka applies the flag only to its built-in rule).
    pub partitioner_ignore_keys: bool,
    /// How many times a batch is tried again after a failure that a later attempt may not
    /// meet (`retries`), default `i32::MAX` as in Kafka; allowed 0..=`i32::MAX`. Only
    /// failures that wrote nothing are retried: `NotEnoughReplicas` (fewer replicas in
    /// sync than `min_insync_replicas`, as while a directory is offline or a replica is
    /// rebuilt), `PartitionOffline` (no replica can lead until a directory is restored)
    /// and a full disk. A batch whose append reached the log and then failed
    /// (`NotEnoughReplicasAfterAppend`, a failed sync) is never sent twice: with
    /// `Acks::All` its error reaches the futures (below it they were answered when the
    /// batch reached the log). Retries keep a partition's order: its later batches wait
    /// behind the one being retried. With [`Acks::None`] nothing is retried (the futures
    /// completed at `send`, as Kafka's `acks=0` never learns of failures).
    pub retries: u32,
    /// Wait before the first retry of a batch (`retry.backoff.ms`), default 100; each
    /// further retry waits twice as long as the one before, up to `retry_backoff_max_ms`,
    /// and at least 1 ms (a wait of 0 would spin the sender). A record that a `send`
    /// appended in its own thread (see [`linger_ms`](Self::linger_ms)) and handed to the
    /// sender on such a failure gets one try more, the sender's first without a wait.
    pub retry_backoff_ms: u64,
    /// Longest wait between retries (`retry.backoff.max.ms`), default 1000. Kafka adds
    /// ±20 % jitter to spread many clients' retries; one process has no herd to spread,
    /// so there is none. A `retry_backoff_ms` above it waits this long every time.
    pub retry_backoff_max_ms: u64,
    /// Upper bound on the time from a batch's creation to its answer, retries included
    /// (`delivery.timeout.ms`), default 120000: a batch still failing then fails with
    /// `Timeout`. A value below `linger_ms` counts as `linger_ms` (Kafka raises its default
    /// to `linger.ms` + `request.timeout.ms` the same way; a request timeout has no
    /// counterpart in process). Measured by the log's clock from the batch's creation to
    /// the moment the sender holds it back (its first failure, or queued behind a batch of
    /// its partition being retried), and by the real clock from then on, so that a manual
    /// clock that never moves cannot hold a failing batch for ever. `close` and `flush`
    /// wait for retries.
    pub delivery_timeout_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_size: 16_384,
            linger_ms: 0,
            buffer_memory: 32 << 20,
            max_block_ms: 60_000,
            max_request_size: 1 << 20,
            partitioner: None,
            partitioner_ignore_keys: false,
            retries: i32::MAX as u32,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            delivery_timeout_ms: 120_000,
        }
    }
}

impl ProducerConfig {
    /// Sets [`acks`](Self::acks).
    #[must_use]
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Sets [`batch_size`](Self::batch_size).
    #[must_use]
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }

    /// Sets [`linger_ms`](Self::linger_ms).
    #[must_use]
    pub fn linger_ms(mut self, ms: u64) -> Self {
        self.linger_ms = ms;
        self
    }

    /// Sets [`buffer_memory`](Self::buffer_memory).
    #[must_use]
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }

    /// Sets [`max_block_ms`](Self::max_block_ms).
    #[must_use]
    pub fn max_block_ms(mut self, ms: u64) -> Self {
        self.max_block_ms = ms;
        self
    }

    /// Sets [`max_request_size`](Self::max_request_size).
    #[must_use]
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Sets a custom [`partitioner`](Self::partitioner), e.g. [`RoundRobinPartitioner`].
    #[must_use]
    pub fn partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = Some(partitioner);
        self
    }

    /// Sets [`partitioner_ignore_keys`](Self::partitioner_ignore_keys).
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use tarnlog::{Log, ProducerConfig, ProducerRecord, TopicConfig};
    ///
    /// let log = Log::temp()?;
    /// log.create_topic("clicks", TopicConfig::default().partitions(4))?;
    /// let config = ProducerConfig::default().partitioner_ignore_keys(true).linger_ms(1_000);
    /// let producer = log.producer(config)?;
    /// // One hot key no longer pins every record to one partition: the batch decides.
    /// let futures: Vec<_> = ["home", "cart", "home", "pay"]
    ///     .into_iter()
    ///     .map(|page| producer.send(ProducerRecord::new("clicks").key(page).value("1")))
    ///     .collect::<tarnlog::Result<_>>()?;
    /// producer.flush()?;
    /// let partitions: Vec<u32> = futures
    ///     .into_iter()
    ///     .map(|f| f.wait().map(|m| m.partition))
    ///     .collect::<tarnlog::Result<_>>()?;
    /// assert!(partitions.iter().all(|&p| p == partitions[0]), "one sticky batch");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn partitioner_ignore_keys(mut self, ignore: bool) -> Self {
        self.partitioner_ignore_keys = ignore;
        self
    }

    /// Sets [`retries`](Self::retries).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`retry_backoff_ms`](Self::retry_backoff_ms).
    #[must_use]
    pub fn retry_backoff_ms(mut self, ms: u64) -> Self {
        self.retry_backoff_ms = ms;
        self
    }

    /// Sets [`retry_backoff_max_ms`](Self::retry_backoff_max_ms).
    #[must_use]
    pub fn retry_backoff_max_ms(mut self, ms: u64) -> Self {
        self.retry_backoff_max_ms = ms;
        self
    }

    /// Sets [`delivery_timeout_ms`](Self::delivery_timeout_ms).
    #[must_use]
    pub fn delivery_timeout_ms(mut self, ms: u64) -> Self {
        self.delivery_timeout_ms = ms;
        self
    }

    /// Checks every field against its allowed range.
    ///
    /// # Errors
    /// `InvalidConfig` naming the first field out of range and the range.
    pub fn validate(&self) -> Result<()> {
        let max_i32 = i32::MAX as usize;
        let checks: [(&'static str, u64, u64, u64); 9] = [
            ("batch_size", self.batch_size as u64, 0, max_i32 as u64),
            ("linger_ms", self.linger_ms, 0, MAX_WAIT_MS),
            (
                "buffer_memory",
                self.buffer_memory as u64,
                1,
                usize::MAX as u64,
            ),
            ("max_block_ms", self.max_block_ms, 0, MAX_WAIT_MS),
            (
                "max_request_size",
                self.max_request_size as u64,
                RECORD_BATCH_OVERHEAD as u64 + 1,
                max_i32 as u64,
            ),
            ("retries", u64::from(self.retries), 0, max_i32 as u64),
            ("retry_backoff_ms", self.retry_backoff_ms, 0, MAX_WAIT_MS),
            (
                "retry_backoff_max_ms",
                self.retry_backoff_max_ms,
                0,
                MAX_WAIT_MS,
            ),
            (
                "delivery_timeout_ms",
                self.delivery_timeout_ms,
                0,
                MAX_WAIT_MS,
            ),
        ];
        for (field, value, min, max) in checks {
            crate::config::range(field, value, min, max)?;
        }
        Ok(())
    }
}

/// Longest wait a config may ask for: about 292 million years fits an `Instant` anywhere.
const MAX_WAIT_MS: u64 = i64::MAX as u64 / 1_000_000;

/// A record to send (Kafka's `ProducerRecord`). Key, value and header values are
/// [`Bytes`]: pass `Vec<u8>`, `String`, `&'static [u8]` or `Bytes` without copying.
///
/// ```
/// use tarnlog::ProducerRecord;
/// let record = ProducerRecord::new("orders")
///     .key("user-7")
///     .value(r#"{"pizza":"margherita"}"#)
///     .header("source", "web");
/// assert_eq!(record.partition, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// An explicit partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
    /// The key; records with equal keys go to the same partition.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone (for compacted topics).
    pub value: Option<Bytes>,
    /// Headers, in order; a header value may be null.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The `CreateTime` in ms since the epoch; `None` takes the log's clock at `send`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with no key, a null value and no headers.
    pub fn new(topic: impl Into<String>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    #[must_use]
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Sends the record to this partition.
    #[must_use]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the `CreateTime`.
    #[must_use]
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where an acknowledged record landed (Kafka's `RecordMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset; `None` under [`Acks::None`] (Kafka reports -1).
    pub offset: Option<u64>,
    /// The record's timestamp: the append time on `LogAppendTime` topics, else its
    /// `CreateTime`.
    pub timestamp: i64,
}

impl RecordMetadata {
    /// The topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// How a batch ended.
#[derive(Debug)]
enum Outcome {
    Appended {
        base_offset: u64,
        log_append_time: Option<i64>,
    },
    Failed(Error),
    /// It was split (see [`split_batch`]): each part's first record (its index in this
    /// batch) and outcome, in record order.
    Split(Vec<(u32, Outcome)>),
}

impl Outcome {
    /// The outcome of the batch's record `index`, with that record's index in the part
    /// it was appended with.
    fn of_record(&self, mut index: u32) -> (&Outcome, u32) {
        let mut outcome = self;
        while let Outcome::Split(parts) = outcome {
            let k = parts.partition_point(|&(first, _)| first <= index);
            let Some((first, part)) = k.checked_sub(1).and_then(|k| parts.get(k)) else {
                break;
            };
            index -= first;
            outcome = part;
        }
        (outcome, index)
    }
}

/// The completion shared by the futures of one batch's records, with what they have in
/// common (so that a record's future holds one reference).
#[derive(Debug)]
struct Completion {
    topic: Arc<str>,
    partition: u32,
    state: Mutex<CompletionState>,
    done: Condvar,
    /// Set once the outcome is and the wakers it woke have run (`settled`): read without
    /// the lock.
    finished: AtomicBool,
    /// A part of a split batch: the whole batch's completion and the part's place in it,
    /// where its outcome goes (the records' futures wait on the whole; nothing waits on a
    /// part, which keeps no outcome of its own).
    whole: Option<(Arc<Completion>, usize)>,
}

#[derive(Debug, Default)]
struct CompletionState {
    outcome: Option<Outcome>,
    wakers: Vec<Waker>,
    /// A split batch's parts: each one's first record and outcome once known.
    parts: Vec<(u32, Option<Outcome>)>,
    /// The outcome is set and the wakers it woke have run: `flush` and `close` wait for
    /// this, so that the callbacks of what they waited for have run when they return (as
    /// Kafka completes a batch's future after its callbacks).
    settled: bool,
    /// Callbacks of [`Producer::send_with_callback`], in record order (added under the
    /// accumulator's lock as the records join the batch).
    callbacks: Vec<RecordCallback>,
}

/// What [`Producer::send_with_callback`] calls with a record's outcome.
type Callback = Box<dyn FnOnce(Result<RecordMetadata>) + Send>;

/// A record's callback, waiting for the record's answer.
struct RecordCallback {
    /// The record's index in its batch.
    index: u32,
    timestamp: i64,
    callback: Callback,
}

impl std::fmt::Debug for RecordCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCallback")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Callbacks with their records' outcomes, to run in this order.
type ReadyCallbacks = Vec<(Callback, Result<RecordMetadata>)>;

/// Runs callbacks in order; one that panics (the panic hook has reported it) does not keep
/// the others from running, nor unwinds into the sender or the caller.
fn run_callbacks(ready: ReadyCallbacks) {
    for (callback, result) in ready {
        if std::panic::catch_unwind(AssertUnwindSafe(|| callback(result))).is_err() {
            #[cfg(test)]
            tests::WAKER_PANICS.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The outcome of record `index` of a batch and the record's index in the batch it was
/// appended with, once known: its part's (a split batch answers each part's records as
/// the part completes), else the batch's.
fn answer_of(state: &CompletionState, index: u32) -> Option<(&Outcome, u32)> {
    let k = state.parts.partition_point(|&(first, _)| first <= index);
    if let Some((first, Some(outcome))) = k.checked_sub(1).and_then(|k| state.parts.get(k)) {
        return Some(outcome.of_record(index - first));
    }
    let outcome = state.outcome.as_ref()?;
    Some(outcome.of_record(index))
}

impl Completion {
    fn new(topic: Arc<str>, partition: u32) -> Completion {
        Completion {
            topic,
            partition,
            state: Mutex::default(),
            done: Condvar::new(),
            finished: AtomicBool::new(false),
            whole: None,
        }
    }

    /// Completions for the parts of this batch that start at records `firsts` (ascending,
    /// the first 0): this one completes once they all have, with their outcomes.
    fn split(self: &Arc<Self>, firsts: &[u32]) -> Vec<Arc<Completion>> {
        self.state.lock().parts = firsts.iter().map(|&first| (first, None)).collect();
        (0..firsts.len())
            .map(|k| {
                Arc::new(Completion {
                    whole: Some((Arc::clone(self), k)),
                    ..Completion::new(Arc::clone(&self.topic), self.partition)
                })
            })
            .collect()
    }

    /// Part `k`'s outcome: its records' futures are answered now (as Kafka chains each
    /// record's future to its part's); the whole completes with the last part.
    fn part_done(&self, k: usize, outcome: Outcome) {
        let (wakers, callbacks) = {
            let mut state = self.state.lock();
            if let Some(slot) = state.parts.get_mut(k) {
                slot.1.get_or_insert(outcome);
            }
            // (Kept when the whole was answered already: the sender failed.)
            let all = state.parts.iter().all(|(_, outcome)| outcome.is_some());
            if all && state.outcome.is_none() {
                let parts = std::mem::take(&mut state.parts)
                    .into_iter()
                    .map(|(first, outcome)| outcome.map(|outcome| (first, outcome)))
                    .collect::<Option<Vec<_>>>();
                let Some(parts) = parts else { return };
                if self.whole.is_some() {
                    // A part split again: its own whole hears of it.
                    drop(state);
                    self.complete(Outcome::Split(parts));
                    return;
                }
                // In the same hold of the lock as the parts' answers leave `parts`: a
                // record answered by its part stays answered (`answer_of`).
                state.outcome = Some(Outcome::Split(parts));
                let callbacks = self.answered_callbacks(&mut state);
                let wakers = std::mem::take(&mut state.wakers);
                drop(state);
                self.settle(callbacks, wakers);
                return;
            }
            let callbacks = self.answered_callbacks(&mut state);
            (std::mem::take(&mut state.wakers), callbacks)
        };
        run_callbacks(callbacks);
        self.wake(wakers);
    }

    /// Adds the callback of the batch's record `index` (after those of earlier records).
    fn add_callback(&self, index: u32, timestamp: i64, callback: Callback) {
        self.state.lock().callbacks.push(RecordCallback {
            index,
            timestamp,
            callback,
        });
    }

    /// Takes the callbacks whose records are answered, with their outcomes, in record
    /// order up to the first record not answered yet (a later part answered first waits
    /// for it, so that callbacks keep record order).
    fn answered_callbacks(&self, state: &mut CompletionState) -> ReadyCallbacks {
        let mut waiting = std::mem::take(&mut state.callbacks).into_iter();
        let mut ready = Vec::new();
        for record in waiting.by_ref() {
            let Some((outcome, index)) = answer_of(state, record.index) else {
                state.callbacks.push(record);
                break;
            };
            let result = metadata_of(
                &self.topic,
                self.partition,
                record.timestamp,
                outcome,
                index,
            );
            ready.push((record.callback, result));
        }
        state.callbacks.extend(waiting);
        ready
    }

    /// Sets the outcome unless one is set already, and wakes every waiter (a part's goes
    /// to its whole batch).
    fn complete(&self, outcome: Outcome) {
        if let Some((whole, k)) = &self.whole {
            if !self.finished.swap(true, Ordering::AcqRel) {
                whole.part_done(*k, outcome);
            }
            return;
        }
        let (wakers, callbacks) = {
            let mut state = self.state.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            let callbacks = self.answered_callbacks(&mut state);
            (std::mem::take(&mut state.wakers), callbacks)
        };
        self.settle(callbacks, wakers);
    }

    /// Runs what an outcome just set answered, then marks the completion finished.
    fn settle(&self, callbacks: ReadyCallbacks, wakers: Vec<Waker>) {
        // Callbacks first, as Kafka fires a batch's callbacks before completing its future.
        run_callbacks(callbacks);
        self.wake(wakers);
        self.state.lock().settled = true;
        self.finished.store(true, Ordering::Release);
        self.done.notify_all();
    }

    /// Wakes the threads and the tasks waiting on this completion.
    fn wake(&self, wakers: Vec<Waker>) {
        self.done.notify_all();
        for waker in wakers {
            // An application's waker runs on the sender thread: one that panics (the panic
            // hook has reported it) must not stop the others being woken, nor the sender.
            if std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake())).is_err() {
                #[cfg(test)]
                tests::WAKER_PANICS.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn appended(&self, info: &AppendInfo) {
        self.complete(Outcome::Appended {
            base_offset: info.base_offset,
            log_append_time: info.log_append_time,
        });
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Waits until the outcome is set and the wakers it woke have run.
    fn wait(&self) {
        let mut state = self.state.lock();
        while !state.settled {
            self.done.wait(&mut state);
        }
    }
}

/// The answer to one [`Producer::send`]: wait for it with [`SendFuture::wait`] or `.await`
/// it (it needs no particular executor).
#[derive(Debug)]
#[must_use = "a send's failure is reported only through its future"]
pub struct SendFuture {
    pending: Option<Pending>,
    ready: Option<Result<RecordMetadata>>,
}

#[derive(Debug)]
struct Pending {
    completion: Arc<Completion>,
    /// The record's index in its batch: its offset is the batch's base offset plus this.
    index: u32,
    timestamp: i64,
}

impl Pending {
    /// The record's outcome and its index in the batch it was appended with, once known:
    /// its part's (a split batch answers each part's records as the part completes), else
    /// the batch's.
    fn answer<'a>(&self, state: &'a CompletionState) -> Option<(&'a Outcome, u32)> {
        answer_of(state, self.index)
    }

    /// The record's metadata from its `outcome`, where it is record `index`.
    fn result(&self, outcome: &Outcome, index: u32) -> Result<RecordMetadata> {
        let completion = &self.completion;
        metadata_of(
            &completion.topic,
            completion.partition,
            self.timestamp,
            outcome,
            index,
        )
    }
}

/// A record's metadata from its batch's (or part's) `outcome`, where it is record `index`.
fn metadata_of(
    topic: &str,
    partition: u32,
    timestamp: i64,
    outcome: &Outcome,
    index: u32,
) -> Result<RecordMetadata> {
    match outcome {
        Outcome::Appended {
            base_offset,
            log_append_time,
        } => Ok(RecordMetadata {
            topic: topic.to_owned(),
            partition,
            offset: Some(base_offset + u64::from(index)),
            timestamp: log_append_time.unwrap_or(timestamp),
        }),
        Outcome::Failed(error) => Err(error.duplicate()),
        Outcome::Split(_) => Err(Error::IllegalState {
            reason: "a split batch without a part holding the record",
        }),
    }
}

impl SendFuture {
    fn ready(result: Result<RecordMetadata>) -> SendFuture {
        SendFuture {
            pending: None,
            ready: Some(result),
        }
    }

    /// Blocks until the send is acknowledged or fails.
    ///
    /// # Errors
    /// The error that failed the record's batch: `Io`, `Poisoned`, `Closed`,
    /// `NotEnoughReplicasAfterAppend`, `UnknownTopic` (deleted meanwhile), or a batch the
    /// log refused (`InvalidRecord`; `InvalidTimestamp` when a record of the batch, this
    /// one or another, was outside the topic's timestamp limits by the time the batch was
    /// appended: grown older than `timestamp_before_max_ms` since its `send`, or the limits
    /// were lowered meanwhile; `RecordTooLarge` for a record alone over a
    /// `max_message_bytes` or `segment_bytes` lowered since it was sent: a larger batch
    /// is split, see [`Log::alter_topic_config`]); after its retries,
    /// `NotEnoughReplicas`, `PartitionOffline` or a full disk's `Io`, or `Timeout` once
    /// `delivery_timeout_ms` passed (see [`ProducerConfig::retries`]). Those come at once
    /// without retries: with `Acks::None`, with `retries = 0`, or from a send appending in
    /// its own thread whose hand-off to the sender met a closed producer or no buffer
    /// memory within `max_block_ms`. `IllegalState` when
    /// called on a producer's sender thread (from a waker or callback) before the send is done: only
    /// that thread could complete it.
    pub fn wait(mut self) -> Result<RecordMetadata> {
        if let Some(result) = self.ready.take() {
            return result;
        }
        let Some(pending) = self.pending.take() else {
            return Err(Error::Closed);
        };
        let mut state = pending.completion.state.lock();
        loop {
            if let Some((outcome, index)) = pending.answer(&state) {
                return pending.result(outcome, index);
            }
            if ON_A_SENDER_THREAD.get() {
                return Err(Error::IllegalState {
                    reason: "waiting on a producer's sender thread (in a waker) would wait for itself",
                });
            }
            pending.completion.done.wait(&mut state);
        }
    }

    /// True once [`wait`](Self::wait) would return without blocking (also once the future
    /// was polled to completion).
    pub fn is_done(&self) -> bool {
        self.pending.as_ref().is_none_or(|p| {
            p.completion.is_finished() || p.answer(&p.completion.state.lock()).is_some()
        })
    }
}

impl Future for SendFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.ready.take() {
            return Poll::Ready(result);
        }
        let Some(pending) = &self.pending else {
            // Polled after it completed: the futures contract makes this the caller's bug.
            return Poll::Ready(Err(Error::Closed));
        };
        let result = {
            let mut state = pending.completion.state.lock();
            if let Some((outcome, index)) = pending.answer(&state) {
                pending.result(outcome, index)
            } else {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            }
        };
        self.pending = None;
        Poll::Ready(result)
    }
}

/// A topic as the producer last looked it up: the handles `send` needs, without a lookup
/// in the log per record.
#[derive(Debug)]
struct CachedTopic {
    /// Key of the topic's open batches in `State::open`.
    id: u32,
    name: Arc<str>,
    topic: Topic,
    partitions: Vec<Partition>,
    /// Largest batch the topic takes: `max_message_bytes`, and no more than a segment.
    max_batch_bytes: usize,
    /// The topic is compacted: it takes only records with a key.
    compacts: bool,
    /// The limits its timestamp settings put on a record's `CreateTime`, if any.
    timestamp_limits: Option<TimestampLimits>,
    /// [`Topic::changes`] read before the rest: the entry is current while it is equal.
    changes: u64,
    /// The topic's fsync policy is `None`: an append never waits for a sync, so a send may
    /// append its record in the calling thread (see [`Producer::direct_start`]).
    appends_without_sync: bool,
}

/// Whether a cached topic is still the topic as it is. Deleted is checked apart: a topic
/// fetched just as it was deleted may carry the count its deletion left, which never moves
/// again.
fn cache_current(cached: &CachedTopic) -> bool {
    cached.topic.changes() == cached.changes && !cached.topic.is_deleted()
}

/// A hasher for the producer's lookups on every send (topic ids and partitions, topic
/// names): one multiply per 8 bytes, as `FxHash` does. The keys are the application's own
/// topics, not input from outside, so hash flooding is not a concern.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A partition's batch that is still taking records (and, once taken, being sent).
#[derive(Debug)]
struct OpenBatch {
    /// Its key in `State::open`: (cached topic id, partition).
    key: (u32, u32),
    partition: Partition,
    builder: BatchBuilder,
    completion: Arc<Completion>,
    /// Opening order, across partitions.
    seq: u64,
    /// When it opened, by the log's clock (linger is measured on it).
    created_ms: i64,
    /// Largest size this batch may reach.
    limit: usize,
    /// Buffer memory its records hold.
    reserved: usize,
    /// Appends tried so far.
    tries: u32,
}

/// Accumulator state, under one lock.
#[derive(Debug, Default)]
struct State {
    /// Open batches by (cached topic id, partition).
    open: HashMap<(u32, u32), OpenBatch, BuildHasherDefault<IdHasher>>,
    /// Topics looked up so far, by name. Under this lock rather than one of their own: a
    /// send takes this lock anyway, and each lock taken costs a send more than the lookup.
    topics: HashMap<String, Arc<CachedTopic>, BuildHasherDefault<IdHasher>>,
    /// Batches closed for records, in the order they closed: sent before any open batch.
    closed_batches: VecDeque<OpenBatch>,
    /// Batches the sender took and has not finished.
    in_flight: Vec<Arc<Completion>>,
    /// Buffer memory held by records not yet acknowledged.
    used: usize,
    /// The partition choice for records without a key.
    sticky: Sticky,
    /// The next batch's `seq`.
    next_seq: u64,
    /// The sender thread waits for work: the next ready batch must wake it.
    sender_idle: bool,
    /// Builders of sent batches, kept for new ones (at most [`SPARE_BUILDERS`]).
    spare: Vec<BatchBuilder>,
    /// Sends blocked for buffer memory, by ticket, in the order they came (Kafka's
    /// `BufferPool` waiters): memory goes to the first, and a send finding any waiting
    /// queues behind them even if its record would fit, so that a large record is not
    /// starved by smaller ones. While there are any, every batch is ready (as Kafka's
    /// accumulator does), so that memory comes free.
    memory_queue: VecDeque<u64>,
    /// The next send's ticket in `memory_queue`.
    next_ticket: u64,
    /// Sends appending their record in the calling thread right now: `close` waits for
    /// them.
    direct_sends: usize,
    /// No send appends in the calling thread before this: half the last such append's
    /// duration after its end, so that a caller sending back to back hands its records to
    /// the sender (to be batched) instead.
    direct_after: Option<Instant>,
    closed: bool,
    /// The sender thread has appended everything and returned (or failed what was left).
    sender_done: bool,
}

#[derive(Debug)]
struct Shared {
    log: Log,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Wakes the sender: a batch is ready, or the producer closes.
    work: Condvar,
    /// Wakes senders blocked for buffer memory, and flushes.
    space: Condvar,
    next_topic_id: AtomicU32,
    /// Mirrors `State::closed`, for checks without the lock.
    closed: AtomicBool,
    /// A `close_timeout`'s time passed: the sender fails what is left with `Closed`.
    forced: AtomicBool,
    /// The sender thread, once it runs: a `close` there (a waker's, which must not block)
    /// does not wait for sends appending in their own threads, nor for the sender itself.
    sender_thread: OnceLock<ThreadId>,
}

thread_local! {
    /// This thread is a producer's sender (any producer's): a waker it runs may send, and
    /// no send there appends in its own thread (an append waits for the disk; a waker must
    /// not block the sender).
    static ON_A_SENDER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Shared {
    fn on_sender_thread(&self) -> bool {
        self.sender_thread.get() == Some(&std::thread::current().id())
    }
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close(None);
    }
}

impl Handle {
    /// Closes the producer; with a `timeout`, what is not sent by then fails with `Closed`
    /// (at once on the sender thread: Kafka's `close` in a callback is `close(0)`).
    fn close(&self, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        {
            let mut state = self.shared.state.lock();
            state.closed = true;
            self.shared.closed.store(true, Ordering::Release);
            release_open(&mut state);
        }
        self.shared.work.notify_all();
        self.shared.space.notify_all();
        if !self.shared.on_sender_thread() {
            let mut state = self.shared.state.lock();
            while state.direct_sends > 0 {
                self.shared.space.wait(&mut state);
            }
        } else if timeout.is_some() {
            self.force();
        }
        // Waits for the sender up to the deadline, then forces it to give up.
        let wait_or_force = |deadline: Option<Instant>| {
            let mut state = self.shared.state.lock();
            while !state.sender_done {
                let timed_out = match deadline {
                    Some(deadline) => self
                        .shared
                        .space
                        .wait_until(&mut state, deadline)
                        .timed_out(),
                    None => false,
                };
                if timed_out && !state.sender_done {
                    drop(state);
                    self.force();
                    return;
                }
                if deadline.is_none() {
                    self.shared.space.wait(&mut state);
                }
            }
        };
        // Taken apart from the join: a close that waits for the sender must not hold the
        // lock another close (from a waker on the sender thread) takes.
        let sender = self.sender.lock().take();
        if let Some(sender) = sender
            // The last clone dropped by an application's waker, on the sender thread
            // itself: it returns once it sees the producer closed.
            && sender.thread().id() != std::thread::current().id()
        {
            if let Some(deadline) = deadline {
                wait_or_force(deadline);
            }
            // The sender only ends by returning (`run_sender` catches its panics).
            let _ = sender.join();
        } else if !self.shared.on_sender_thread() {
            // Another close joins the sender: this one waits for it to finish too.
            if let Some(deadline) = deadline {
                wait_or_force(deadline);
            }
            let mut state = self.shared.state.lock();
            while !state.sender_done {
                self.shared.space.wait(&mut state);
            }
        }
    }

    /// Has the sender fail every batch not yet appended with `Closed` and stop.
    fn force(&self) {
        {
            // Under the lock: the sender reads the flag under it before it sleeps.
            let _state = self.shared.state.lock();
            self.shared.forced.store(true, Ordering::Release);
        }
        self.shared.work.notify_all();
    }
}

/// Moves every open batch to the closed list, in a stable order per partition.
fn release_open(state: &mut State) {
    let mut open: Vec<OpenBatch> = state.open.drain().map(|(_, batch)| batch).collect();
    open.sort_by_key(|batch| batch.seq);
    state.closed_batches.extend(open);
}

/// Kafka's producer in process: `Send + Sync`, cheap to clone; the clones share one
/// accumulator and one sender thread. Dropping the last clone closes it (as
/// [`Producer::close`], which waits for the batches being retried).
///
/// ```
/// # fn main() -> tarnlog::Result<()> {
/// use tarnlog::{Log, ProducerConfig, ProducerRecord, TopicConfig};
///
/// let log = Log::temp()?;
/// log.create_topic("orders", TopicConfig::default().partitions(3))?;
/// let producer = log.producer(ProducerConfig::default())?;
/// let sent = producer.send(ProducerRecord::new("orders").key("user-7").value("pizza"))?;
/// let metadata = sent.wait()?;
/// // Equal keys always land in the same partition, as in Kafka.
/// assert_eq!(metadata.partition, tarnlog::partition_for_key(b"user-7", 3));
/// assert_eq!(metadata.offset, Some(0));
/// producer.close()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

/// A record checked and placed, ready to join its partition's batch.
struct Placed {
    topic: Arc<CachedTopic>,
    /// `None`: the sticky partition, chosen under the accumulator's lock.
    partition: Option<u32>,
    size: usize,
    timestamp: i64,
    /// The clock's reading if `place` took one (it dates a batch the record opens).
    now: Option<i64>,
}

impl Producer {
    pub(crate) fn start(log: Log, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        let shared = Arc::new(Shared {
            log,
            config,
            state: Mutex::new(State {
                sticky: Sticky::new(seed),
                ..State::default()
            }),
            work: Condvar::new(),
            space: Condvar::new(),
            next_topic_id: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            sender_thread: OnceLock::new(),
        });
        let for_thread = Arc::clone(&shared);
        let sender = std::thread::Builder::new()
            .name("tarnlog-producer".into())
            .spawn(move || run_sender(&for_thread))
            .map_err(|e| Error::io("spawn producer thread", std::path::PathBuf::new(), e))?;
        Ok(Producer {
            handle: Arc::new(Handle {
                shared,
                sender: Mutex::new(Some(sender)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The producer's configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared().config
    }

    /// Adds the record to its partition's batch and returns its future. Blocks while
    /// buffer memory is exhausted, up to `max_block_ms`; with `linger_ms = 0` it may append
    /// the record itself (see [`ProducerConfig::linger_ms`]), which takes as long as an
    /// append: microseconds, more when a segment rolls, the partition's leadership moves
    /// or another append to the partition is in progress (the sender's, wakers included:
    /// they must not block).
    ///
    /// # Errors
    /// Nothing is sent when `send` fails: `UnknownTopic` (unless the log auto-creates
    /// topics; creating one can fail as [`Log::create_topic`] does: `InvalidTopicName`,
    /// `Io`, `Poisoned`, `PartitionOffline`), `InternalTopic`, `UnknownPartition` (explicit or from a custom
    /// partitioner), `RecordTooLarge` (over `max_request_size`, the topic's
    /// `max_message_bytes` or `buffer_memory`), `InvalidRecord` (a negative timestamp, a
    /// record without a key for a compacted topic), `InvalidTimestamp` (a timestamp the
    /// record carries outside the topic's `timestamp_before_max_ms` /
    /// `timestamp_after_max_ms`), `Timeout` (no buffer memory within
    /// `max_block_ms`), `IllegalState` (no buffer memory for a send in a waker, on a
    /// producer's sender thread, which must not block), `Closed`.
    // The record is taken (as Kafka's `send` does) so that callers hand over its buffers;
    // it is read in place and dropped on return.
    #[allow(clippy::needless_pass_by_value)]
    pub fn send(&self, record: ProducerRecord) -> Result<SendFuture> {
        self.send_inner(&record, None, true)
    }

    /// [`send`](Self::send), with the record's callback when it has one. Only a send
    /// `may_append_here` without a callback can be appended in the calling thread (a
    /// callback joins its batch's, in order).
    fn send_inner(
        &self,
        record: &ProducerRecord,
        callback: Option<Callback>,
        may_append_here: bool,
    ) -> Result<SendFuture> {
        let shared = self.shared();
        let mut now = None;
        let mut state = shared.state.lock();
        let placed = if let Some(placed) = self.place_locked(&state, record, &mut now) {
            placed?
        } else {
            drop(state);
            let placed = self.place(record, &mut now)?;
            state = shared.state.lock();
            placed
        };
        if callback.is_none()
            && may_append_here
            && let Some(start) = self.direct_start(&mut state, &placed)
        {
            return Ok(self.send_direct(state, &placed, record, start));
        }
        let mut callback = callback;
        let enqueued = self.enqueue(&mut state, &placed, record, &mut callback);
        drop(state);
        // A callback left (the send failed) is dropped without the lock: its drop is the
        // application's code.
        drop(callback);
        let (future, wake) = enqueued?;
        if wake {
            shared.work.notify_one();
        }
        Ok(future)
    }

    /// Kafka's `send(record, callback)`: sends the record as [`send`](Self::send) does, and
    /// calls `callback` with its outcome once it is acknowledged or fails. Callbacks of one
    /// partition run in the order of the records' offsets, whichever threads sent them (as
    /// Kafka's), on the producer's sender thread (as Kafka runs them on its I/O thread), so
    /// they must be quick and must not block: no [`SendFuture::wait`] there (it fails with
    /// `IllegalState`), no [`flush`](Self::flush) (refused too); a send is fine, to a
    /// topic it creates too. As futures' wakers, they must not append to a partition
    /// directly ([`Partition::append`](crate::Partition::append)) or change a topic
    /// ([`Log::alter_topic_config`], [`Log::delete_records`]): each waits for the disk; nor
    /// close (or drop the last clone of) another producer. Such a
    /// record always goes to the sender, never appended by the call itself (see
    /// [`ProducerConfig::linger_ms`]). With [`Acks::None`] the send is answered at once
    /// and the callback runs in the calling thread before the call returns. A callback
    /// that panics does not keep the others from running (nor unwinds into the caller).
    /// [`flush`](Self::flush) and `close` return once the callbacks of what they waited
    /// for have run.
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use std::sync::mpsc;
    /// use tarnlog::{Log, ProducerConfig, ProducerRecord};
    ///
    /// let log = Log::temp()?;
    /// log.create_topic("events", None)?;
    /// let producer = log.producer(ProducerConfig::default())?;
    /// let (acked, offsets) = mpsc::channel();
    /// for value in ["a", "b", "c"] {
    ///     let acked = acked.clone();
    ///     producer.send_with_callback(ProducerRecord::new("events").value(value), move |result| {
    ///         let _ = acked.send(result.map(|metadata| metadata.offset));
    ///     })?;
    /// }
    /// producer.flush()?;
    /// let offsets: Vec<_> = offsets.try_iter().collect::<tarnlog::Result<_>>()?;
    /// assert_eq!(offsets, [Some(0), Some(1), Some(2)]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`send`](Self::send): nothing is sent and `callback` is not called. The
    /// record's own failures (after the call returned) go to `callback`, as
    /// [`SendFuture::wait`] would return them.
    // Taken as `send` takes it.
    #[allow(clippy::needless_pass_by_value)]
    pub fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        let callback: Callback = Box::new(callback);
        if self.config().acks == Acks::None {
            // Answered at once (Kafka's `acks=0` learns nothing more).
            // Through the sender as any send with a callback: answered at enqueueing.
            let result = self.send_inner(&record, None, false)?.wait();
            run_callbacks(vec![(callback, result)]);
            return Ok(());
        }
        // The callback answers; its future is not needed.
        drop(self.send_inner(&record, Some(callback), true)?);
        Ok(())
    }

    /// Sends the records in order. Every record is checked first: if any would fail
    /// [`send`](Self::send)'s checks, none is sent.
    ///
    /// # Errors
    /// As [`send`](Self::send); a `Timeout`, `Closed` or `IllegalState` met for buffer
    /// memory leaves the records before it sent (their futures are then dropped unawaited).
    pub fn send_batch(
        &self,
        records: impl IntoIterator<Item = ProducerRecord>,
    ) -> Result<Vec<SendFuture>> {
        // One clock reading stamps every record of the call that has no timestamp.
        let mut now = None;
        let records: Vec<ProducerRecord> = records.into_iter().collect();
        // A custom partitioner (which may count its calls) is asked only once every record
        // passed the checks: none is moved by a call that sends nothing.
        if self.shared().config.partitioner.is_some() {
            let mut topics: Vec<Arc<CachedTopic>> = Vec::new();
            for record in &records {
                let topic = self.topic_of_call(&mut topics, &record.topic)?;
                // A partition beyond the cached count is left to the placing below.
                let _ = self.place_in(topic, record, &mut now, false)?;
            }
        }
        // Placed before the lock (which the sender needs meanwhile), each topic of the call
        // looked up once.
        let mut topics: Vec<Arc<CachedTopic>> = Vec::new();
        let placed: Vec<Placed> = records
            .iter()
            .map(|record| {
                let topic = self.topic_of_call(&mut topics, &record.topic)?;
                if let Ok(placed) = self.place_in(topic, record, &mut now, true)? {
                    Ok(placed)
                } else {
                    // A partition beyond the cached count: looked up again, for the
                    // call's later records too.
                    let placed = self.place(record, &mut now)?;
                    topics.retain(|t| *t.name != *record.topic);
                    topics.push(Arc::clone(&placed.topic));
                    Ok(placed)
                }
            })
            .collect::<Result<_>>()?;
        drop(topics);
        let shared = self.shared();
        let mut futures = Vec::with_capacity(placed.len());
        // One lock for the call, lent to the sender when a batch is ready for it.
        let mut state = shared.state.lock();
        for (i, (placed, record)) in placed.iter().zip(&records).enumerate() {
            let (future, wake) = self.enqueue(&mut state, placed, record, &mut None)?;
            futures.push(future);
            if wake {
                MutexGuard::unlocked(&mut state, || shared.work.notify_one());
            } else if i % 64 == 63 {
                MutexGuard::bump(&mut state);
            }
        }
        Ok(futures)
    }

    /// Topic `name` of a `send_batch` call: among those the call looked up already, else
    /// looked up (and kept in `topics`).
    fn topic_of_call(
        &self,
        topics: &mut Vec<Arc<CachedTopic>>,
        name: &str,
    ) -> Result<Arc<CachedTopic>> {
        if let Some(topic) = topics.iter().find(|t| *t.name == *name) {
            return Ok(Arc::clone(topic));
        }
        let topic = self.cached_topic(name, false)?;
        topics.push(Arc::clone(&topic));
        Ok(topic)
    }

    /// The partitions of `topic`, each with its leader, replicas, in-sync replicas and
    /// offsets (Kafka's `partitionsFor`, as [`Log::describe_topic`] reports them). A topic
    /// the log does not have is created first when the log auto-creates topics, as a Kafka
    /// producer's metadata request creates it.
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use tarnlog::{Log, ProducerConfig, TopicConfig};
    ///
    /// let log = Log::temp()?;
    /// log.create_topic("orders", TopicConfig::default().partitions(3))?;
    /// let producer = log.producer(ProducerConfig::default())?;
    /// let partitions = producer.partitions_for("orders")?;
    /// assert_eq!(partitions.len(), 3);
    /// assert!(partitions.iter().all(|p| p.leader.is_some()));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `UnknownTopic` (unless the log auto-creates topics; a name it cannot create gets
    /// `InvalidTopicName`); `Closed` once the producer or the log is closed.
    pub fn partitions_for(&self, topic: &str) -> Result<Vec<PartitionDescription>> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !crate::log::INTERNAL_TOPICS.contains(&topic) {
            shared.log.topic_for_write(topic)?;
        }
        Ok(shared.log.describe_topic(topic)?.partitions)
    }

    /// Makes every batch sendable now and returns once every record sent before the call
    /// is acknowledged or failed (their futures say which) and their callbacks
    /// ([`send_with_callback`](Self::send_with_callback)) and wakers have run. A batch
    /// counts as pending while its callbacks and wakers run, so a `flush` in one of this
    /// producer's callbacks or wakers on its sender thread is always refused (as Kafka's;
    /// an `Acks::None` callback runs in the calling thread, where `flush` works).
    ///
    /// # Errors
    /// `Closed` when the producer was closed before the call; `IllegalState` when called
    /// on a producer's sender thread (from a waker) with something still to wait for,
    /// which only that thread could send (as Kafka refuses `flush` in a callback).
    pub fn flush(&self) -> Result<()> {
        let shared = self.shared();
        let waiting: Vec<Arc<Completion>> = {
            let mut state = shared.state.lock();
            if state.closed {
                return Err(Error::Closed);
            }
            release_open(&mut state);
            state
                .closed_batches
                .iter()
                .map(|b| Arc::clone(&b.completion))
                .chain(state.in_flight.iter().cloned())
                .collect()
        };
        if ON_A_SENDER_THREAD.get() && waiting.iter().any(|c| !c.is_finished()) {
            return Err(Error::IllegalState {
                reason: "flush on a producer's sender thread (in a waker) would wait for itself",
            });
        }
        shared.work.notify_all();
        for completion in waiting {
            completion.wait();
        }
        Ok(())
    }

    /// Sends everything pending, waits for it, and stops the sender thread. Later sends
    /// fail with `Closed`. Other clones of this producer are closed too; a close running
    /// in another thread meanwhile returns once this one's work is done too (or failed
    /// with `Closed` by a `close_timeout` whose time passed).
    ///
    /// Batches being retried are waited for too, up to `delivery_timeout_ms` (two minutes
    /// by default) while their partition cannot take them; closing the log ends them at
    /// once (with `Closed`), and [`close_timeout`](Self::close_timeout) bounds the wait. From a waker or callback of this producer's records (on its sender thread)
    /// it returns without waiting. Wakers and callbacks must not block, so they must not close (or drop the last clone
    /// of) another producer: that waits for the other's sender, which may be running a
    /// callback that closes this one (neither would end).
    ///
    /// # Errors
    /// None today; the `Result` leaves room for failures of a clean shutdown.
    pub fn close(&self) -> Result<()> {
        self.handle.close(None);
        Ok(())
    }

    /// [`close`](Self::close) that waits at most `timeout` (Kafka's `close(Duration)`):
    /// what is not appended by then, batches being retried included, fails with
    /// `Closed`. An append already running is not interrupted: the call may return that
    /// much later, and so may sends appending in their own threads. On the producer's
    /// sender thread (in a waker) it fails what is left at once, as Kafka's `close` in a
    /// callback is `close(0)` (a plain `close` there lets it go on, retries included).
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use std::time::Duration;
    /// use tarnlog::{Log, ProducerConfig, ProducerRecord};
    ///
    /// let log = Log::temp()?;
    /// log.create_topic("events", None)?;
    /// let producer = log.producer(ProducerConfig::default())?;
    /// let sent = producer.send(ProducerRecord::new("events").value("last"))?;
    /// producer.close_timeout(Duration::from_secs(5))?;
    /// assert!(sent.is_done());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// None today, as `close`.
    pub fn close_timeout(&self, timeout: Duration) -> Result<()> {
        self.handle.close(Some(timeout));
        Ok(())
    }

    /// Checks a record and chooses its partition, without touching the accumulator. A
    /// record without a timestamp gets `now`, read from the clock if still `None`.
    fn place(&self, record: &ProducerRecord, now: &mut Option<i64>) -> Result<Placed> {
        match self.place_in(self.cached_topic(&record.topic, false)?, record, now, true)? {
            Ok(placed) => Ok(placed),
            // Partitions were added just after the topic was cached: look it up again (a
            // custom partitioner is asked again too).
            Err(_) => self.place_in(self.cached_topic(&record.topic, true)?, record, now, true)?,
        }
    }

    /// [`place`](Self::place) under the accumulator's lock, for a send that needs nothing
    /// beyond it: `None` (the caller unlocks and places the record with `place`) when the
    /// topic is not cached or its entry is behind, when a custom partitioner must be asked
    /// (the application's code, never run under the lock), or when an explicit partition
    /// is beyond the cached count (`place` looks the topic up again).
    fn place_locked(
        &self,
        state: &State,
        record: &ProducerRecord,
        now: &mut Option<i64>,
    ) -> Option<Result<Placed>> {
        if self.shared().config.partitioner.is_some() {
            return None;
        }
        let topic = state.topics.get(record.topic.as_str())?;
        if !cache_current(topic)
            || record
                .partition
                .is_some_and(|p| p as usize >= topic.partitions.len())
        {
            return None;
        }
        match self.place_in(Arc::clone(topic), record, now, true) {
            Ok(Ok(placed)) => Some(Ok(placed)),
            Err(error) => Some(Err(error)),
            // Only for a partition beyond the cached count, excluded above.
            Ok(Err(_)) => None,
        }
    }

    /// [`place`](Self::place) with the topic as cached: the inner error is a partition
    /// that the live topic has but the cached one lacks.
    fn place_in(
        &self,
        topic: Arc<CachedTopic>,
        record: &ProducerRecord,
        now: &mut Option<i64>,
        partition_it: bool,
    ) -> Result<Result<Placed>> {
        let shared = self.shared();
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if topic.compacts && record.key.is_none() {
            // Kafka's broker refuses it (`LogValidator`), failing every record batched
            // with it; refused here, it fails alone.
            return Err(Error::InvalidRecord {
                reason: format!(
                    "topic {} is compacted and cannot accept a record without a key",
                    topic.name
                ),
            });
        }
        let partitions = topic.partitions.len() as u32;
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let (key_len, value_len) = (
            record.key.as_ref().map(Bytes::len),
            record.value.as_ref().map(Bytes::len),
        );
        let size = BatchBuilder::estimate_record_size(key_len, value_len, &headers);
        let limits = [
            shared.config.max_request_size,
            topic.max_batch_bytes,
            shared.config.buffer_memory,
        ];
        // A record too large for a batch it shares is sent in one of its own, where both
        // its deltas are 0: the limits apply to that batch's exact size, worked out only
        // when the estimate (an upper bound) is over one of them.
        if limits.iter().any(|&max| size + RECORD_BATCH_OVERHEAD > max) {
            let with_header = BatchBuilder::new().next_record_size(0, key_len, value_len, &headers)
                + RECORD_BATCH_OVERHEAD;
            if let Some(&max) = limits.iter().filter(|&&max| with_header > max).min() {
                return Err(Error::RecordTooLarge {
                    size: with_header,
                    max,
                });
            }
        }
        // Every check comes before the partition is chosen: a refused record must not move
        // a stateful partitioner (a custom one, counting its calls).
        let timestamp = match record.timestamp {
            Some(t) if t < 0 => {
                return Err(Error::InvalidRecord {
                    reason: format!("invalid timestamp {t}: timestamps may not be negative"),
                });
            }
            Some(t) => {
                if let Some(limits) = topic.timestamp_limits {
                    // The log checks again at the append, where a record that passed here
                    // may have grown too old meanwhile (it then fails with its batch).
                    limits.check(t, *now.get_or_insert_with(|| shared.log.now_ms()), 0)?;
                }
                t
            }
            None => *now.get_or_insert_with(|| shared.log.now_ms()),
        };
        let partition = match (record.partition, &shared.config.partitioner, &record.key) {
            (Some(p), _, _) => Some(p),
            // Only checked (see `send_batch`): a custom partitioner is not asked yet.
            (None, Some(_), _) if !partition_it => None,
            (None, Some(custom), key) => Some(custom.partition(
                &topic.name,
                key.as_deref(),
                record.value.as_deref(),
                partitions,
            )),
            (None, None, Some(key)) if !shared.config.partitioner_ignore_keys => {
                Some(partition_for_key(key, partitions))
            }
            (None, None, _) => None,
        };
        if let Some(index) = partition
            && index >= partitions
        {
            // The log's own error, with the topic's partition count.
            topic.topic.partition(index)?;
            // The live topic has it: the cached one is from before partitions were added.
            return Ok(Err(Error::UnknownPartition {
                topic: record.topic.clone(),
                partition: index,
                partitions,
            }));
        }
        Ok(Ok(Placed {
            topic,
            partition,
            size,
            timestamp,
            now: *now,
        }))
    }

    /// The topic's cached handles, looked up (or auto-created) on first use, and again
    /// after the topic was deleted, its partitions added or its config altered (a lowered
    /// `max_message_bytes` bounds the next batches), or when `refresh` says the cached
    /// ones are behind.
    fn cached_topic(&self, name: &str, refresh: bool) -> Result<Arc<CachedTopic>> {
        let shared = self.shared();
        if !refresh
            && let Some(cached) = shared.state.lock().topics.get(name)
            && cache_current(cached)
        {
            return Ok(Arc::clone(cached));
        }
        // A topic deleted between its lookup and the lock is looked up again: cached, its
        // entry would give the name's next incarnation a second id on the next lookup, and
        // that incarnation's partitions two open batches each.
        let mut tries = 0;
        let (topic, changes, partitions, mut state) = loop {
            let topic = shared.log.topic_for_write(name)?;
            let changes = topic.changes();
            let partitions = (0..topic.partitions())
                .map(|p| topic.partition(p))
                .collect::<Result<Vec<_>>>()?;
            let state = shared.state.lock();
            if !topic.is_deleted() {
                break (topic, changes, partitions, state);
            }
            drop(state);
            tries += 1;
            if tries == 3 {
                return Err(Error::UnknownTopic { topic: name.into() });
            }
        };
        let topics = &mut state.topics;
        // Deleted topics leave the cache: their partitions hold their segments' mappings,
        // whose files (unlinked) would keep their disk space for the producer's lifetime.
        // Dropped after the lock: unmapping takes a while.
        let deleted: Vec<String> = topics
            .iter()
            .filter(|(_, cached)| cached.topic.is_deleted())
            .map(|(name, _)| name.clone())
            .collect();
        let mut gone: Vec<Arc<CachedTopic>> = deleted
            .iter()
            .filter_map(|name| topics.remove(name))
            .collect();
        // Another thread may have cached it meanwhile: one entry per live topic, so that a
        // partition never has two open batches.
        if let Some(cached) = topics.get(name)
            && cache_current(cached)
            && cached.partitions.len() >= partitions.len()
        {
            let cached = Arc::clone(cached);
            drop(state);
            drop(gone);
            return Ok(cached);
        }
        // The same topic (grown, or its config altered) keeps its id: its partitions' open
        // batches stay the same ones. Another incarnation under the name gets a new one.
        let id = topics
            .get(name)
            .filter(|cached| cached.topic.same_topic(&topic))
            .map_or_else(
                || shared.next_topic_id.fetch_add(1, Ordering::Relaxed),
                |cached| cached.id,
            );
        let cached = Arc::new(CachedTopic {
            id,
            name: Arc::from(name),
            max_batch_bytes: (topic.config().max_message_bytes as usize)
                .min(topic.config().segment_bytes as usize),
            compacts: topic.config().cleanup_policy.compacts(),
            timestamp_limits: topic.config().timestamp_limits(),
            appends_without_sync: topic.config().fsync == FsyncPolicy::None,
            topic,
            partitions,
            changes,
        });
        gone.extend(topics.insert(name.to_owned(), Arc::clone(&cached)));
        drop(state);
        drop(gone);
        Ok(cached)
    }

    /// Waits for buffer memory, then adds the record to its partition's open batch. True
    /// with the future when the caller must wake the sender (after unlocking, ideally).
    fn enqueue(
        &self,
        state: &mut MutexGuard<'_, State>,
        placed: &Placed,
        record: &ProducerRecord,
        callback: &mut Option<Callback>,
    ) -> Result<(SendFuture, bool)> {
        let shared = self.shared();
        let config = &shared.config;
        self.reserve_memory(state, placed.size)?;
        if state.closed {
            return Err(Error::Closed);
        }
        let topic = &placed.topic;
        let index = placed.partition.unwrap_or_else(|| {
            let partitions = topic.partitions.len() as u32;
            let sticky = &mut state.sticky;
            sticky.partition(topic.id, partitions, placed.size, config.batch_size)
        });
        let key = (topic.id, index);
        let needed = placed.size;
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let exact_size = |open: &OpenBatch| {
            open.builder.next_record_size(
                placed.timestamp,
                record.key.as_ref().map(Bytes::len),
                record.value.as_ref().map(Bytes::len),
                &headers,
            )
        };
        let new_batch = |seq: u64, spare: &mut Vec<BatchBuilder>| {
            let limit = config
                .batch_size
                .max(needed + RECORD_BATCH_OVERHEAD)
                .min(config.max_request_size)
                .min(placed.topic.max_batch_bytes);
            OpenBatch {
                key,
                limit,
                partition: topic.partitions[index as usize].clone(),
                builder: spare_builder(spare, limit),
                completion: Arc::new(Completion::new(Arc::clone(&topic.name), index)),
                seq,
                created_ms: placed.now.unwrap_or_else(|| shared.log.now_ms()),
                reserved: 0,
                tries: 0,
            }
        };
        let State {
            open,
            closed_batches,
            next_seq,
            spare,
            ..
        } = &mut **state;
        // `opened`: a new batch, whose linger the sender must start timing.
        let (mut full, mut opened) = (false, false);
        let batch = match open.entry(key) {
            Entry::Occupied(entry) => {
                let batch = entry.into_mut();
                // The topic's limit may have been lowered since the batch opened.
                let limit = batch.limit.min(placed.topic.max_batch_bytes);
                if batch.builder.size_in_bytes() + exact_size(batch) > limit {
                    (full, opened) = (true, true);
                    *next_seq += 1;
                    closed_batches.push_back(std::mem::replace(batch, new_batch(*next_seq, spare)));
                }
                batch
            }
            Entry::Vacant(entry) => {
                opened = true;
                *next_seq += 1;
                entry.insert(new_batch(*next_seq, spare))
            }
        };
        let index_in_batch = batch.builder.len() as u32;
        batch.builder.push(
            placed.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        batch.reserved += needed;
        if let Some(callback) = callback.take() {
            // Under the accumulator's lock: callbacks join the batch in record order.
            batch
                .completion
                .add_callback(index_in_batch, placed.timestamp, callback);
        }
        let completion = Arc::clone(&batch.completion);
        let now_full = batch.builder.size_in_bytes() >= config.batch_size;
        if now_full && let Some(batch) = open.remove(&key) {
            closed_batches.push_back(batch);
        }
        state.used += needed;
        // Wake the sender only when it waits and has something to take.
        let wake = state.sender_idle && (now_full || full || opened || config.linger_ms == 0);
        if wake {
            state.sender_idle = false;
        }
        let future = future_for(config.acks, placed, index, completion, index_in_batch);
        Ok((future, wake))
    }

    /// When a send may append its record in the calling thread, the time it starts.
    ///
    /// With `linger_ms = 0` a record that finds nothing pending would be taken by the
    /// sender thread alone, in a batch of one: appending it in the calling thread gives the
    /// same batch without the hand-off (a wake-up of the sender, on a busy machine up to a
    /// scheduler slice). Only when nothing of the producer is pending, so that no record
    /// sent earlier can land after it; only for topics whose appends never wait for an
    /// fsync (the sender's hand-off is there to keep that wait off the caller); and only
    /// if the last such append ended at least half its duration ago: a caller sending back
    /// to back hands its records to the sender, which batches them (the gap between its
    /// sends is far shorter than an append), while records a few microseconds apart
    /// (100 k a second, say) are each appended by their `send`, even when an append's
    /// wake-up of a waiting reader makes it several microseconds long.
    fn direct_start(&self, state: &mut State, placed: &Placed) -> Option<Instant> {
        if self.shared().config.linger_ms != 0
            || !placed.topic.appends_without_sync
            || ON_A_SENDER_THREAD.get()
            || state.closed
            || !state.memory_queue.is_empty()
            || !state.open.is_empty()
            || !state.closed_batches.is_empty()
        {
            return None;
        }
        // A batch the sender took is appended once its completion is finished.
        state.in_flight.retain(|c| !c.is_finished());
        if !state.in_flight.is_empty() {
            return None;
        }
        let now = Instant::now();
        state
            .direct_after
            .is_none_or(|after| now >= after)
            .then_some(now)
    }

    /// Appends the record as a batch of its own in the calling thread (see
    /// [`direct_start`](Self::direct_start)) and returns its completed future.
    fn send_direct(
        &self,
        mut state: MutexGuard<'_, State>,
        placed: &Placed,
        record: &ProducerRecord,
        start: Instant,
    ) -> SendFuture {
        let shared = self.shared();
        let topic = &placed.topic;
        let index = placed.partition.unwrap_or_else(|| {
            let partitions = topic.partitions.len() as u32;
            let batch_size = shared.config.batch_size;
            state
                .sticky
                .partition(topic.id, partitions, placed.size, batch_size)
        });
        state.direct_sends += 1;
        drop(state);
        // Counted out even if the append panics, so that `close` never waits for ever.
        let counted = DirectSend { shared, start };
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        let mut builder = BatchBuilder::with_capacity(placed.size + RECORD_BATCH_OVERHEAD);
        builder.push(
            placed.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
        let acks = shared.config.acks;
        let mut in_log = false;
        // Below `Acks::All` the answer is the append's, given once the batch is in the log
        // (as the sender completes its futures then): an error after it (an index entry's
        // write, say) does not make a record in the log look lost, which a retry would
        // write twice.
        let mut landed = None;
        let appended = match builder.finish() {
            Some(bytes) => {
                topic.partitions[index as usize].append_then(bytes, acks == Acks::All, |info| {
                    in_log = true;
                    if acks != Acks::All {
                        landed = Some(*info);
                    }
                })
            }
            None => Err(Error::InvalidRecord {
                reason: "empty producer batch".into(),
            }),
        };
        let appended = match (appended, landed) {
            (Err(_), Some(info)) => Ok(info),
            (appended, _) => appended,
        };
        if let Err(error) = &appended
            && !in_log
            && acks != Acks::None
            && shared.config.retries > 0
            && error.is_retriable()
        {
            // Nothing was written: the sender retries it as any batch (this attempt is
            // one more than `retries` counts, and the sender's first comes without a
            // backoff). A producer closed meanwhile, or no buffer memory in time, leaves
            // the append's own error. Counted out first: the append is over (its time
            // dates the next such send), and `close` refuses the hand-off once closed.
            drop(counted);
            let placed = Placed {
                topic: Arc::clone(&placed.topic),
                partition: Some(index),
                ..*placed
            };
            let mut state = shared.state.lock();
            if let Ok((future, wake)) = self.enqueue(&mut state, &placed, record, &mut None) {
                drop(state);
                if wake {
                    shared.work.notify_one();
                }
                return future;
            }
        }
        SendFuture::ready(appended.map(|info| RecordMetadata {
            topic: topic.name.to_string(),
            partition: index,
            offset: (acks != Acks::None).then_some(info.base_offset),
            timestamp: info.log_append_time.unwrap_or(placed.timestamp),
        }))
    }

    /// Waits, if it must, until `size` bytes of buffer memory can be taken (not on a
    /// sender thread, which must not block).
    fn reserve_memory(&self, state: &mut MutexGuard<'_, State>, size: usize) -> Result<()> {
        let buffer_memory = self.shared().config.buffer_memory;
        if state.used + size > buffer_memory || !state.memory_queue.is_empty() {
            if !ON_A_SENDER_THREAD.get() {
                self.wait_for_memory(state, size)?;
            } else if state.closed {
                return Err(Error::Closed);
            } else if state.used + size > buffer_memory {
                // A waker's send: on this producer's sender thread only this thread frees
                // memory, so a wait would last `max_block_ms` for nothing (and hold up
                // every send queued for memory); on another producer's, it would hold this
                // sender, and every batch behind it, up to `max_block_ms`.
                return Err(Error::IllegalState {
                    reason: "no buffer memory for a send on a producer's sender thread (in \
                             a waker), which must not block",
                });
            }
        }
        Ok(())
    }

    /// Blocks until `size` bytes of buffer memory are free and every send that waited for
    /// memory before this one has had its turn, up to `max_block_ms`.
    fn wait_for_memory(&self, state: &mut MutexGuard<'_, State>, size: usize) -> Result<()> {
        let shared = self.shared();
        let config = &shared.config;
        let deadline = Instant::now().checked_add(Duration::from_millis(config.max_block_ms));
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.memory_queue.push_back(ticket);
        let served = |state: &State| {
            state.memory_queue.front() == Some(&ticket) && state.used + size <= config.buffer_memory
        };
        let result = loop {
            if served(state) {
                break Ok(());
            }
            if state.closed {
                break Err(Error::Closed);
            }
            shared.work.notify_one();
            let timed_out = if let Some(deadline) = deadline {
                shared.space.wait_until(state, deadline).timed_out()
            } else {
                shared.space.wait(state);
                false
            };
            if timed_out && !served(state) {
                break Err(Error::Timeout {
                    what: "producer buffer memory",
                    ms: config.max_block_ms,
                });
            }
        };
        if let Some(at) = state.memory_queue.iter().position(|&t| t == ticket) {
            state.memory_queue.remove(at);
        }
        // The next in line may be served now: memory may be left, or this one gave up.
        if !state.memory_queue.is_empty() {
            shared.space.notify_all();
        }
        result
    }
}

/// A send appending in the calling thread: when it ends, it is counted out and dates the
/// next such send.
struct DirectSend<'a> {
    shared: &'a Shared,
    start: Instant,
}

impl Drop for DirectSend<'_> {
    fn drop(&mut self) {
        let end = Instant::now();
        let mut state = self.shared.state.lock();
        state.direct_sends -= 1;
        state.direct_after = Some(end + end.saturating_duration_since(self.start) / 2);
        let last = state.closed && state.direct_sends == 0;
        drop(state);
        if last {
            self.shared.space.notify_all();
        }
    }
}

/// The future `send` returns for a record at `index` of the batch behind `completion`.
fn future_for(
    acks: Acks,
    placed: &Placed,
    partition: u32,
    completion: Arc<Completion>,
    index: u32,
) -> SendFuture {
    if acks == Acks::None {
        return SendFuture::ready(Ok(RecordMetadata {
            topic: placed.topic.name.to_string(),
            partition,
            offset: None,
            timestamp: placed.timestamp,
        }));
    }
    SendFuture {
        pending: Some(Pending {
            completion,
            index,
            timestamp: placed.timestamp,
        }),
        ready: None,
    }
}

/// Longest the sender sleeps while a batch lingers, so that a manual clock's advance is
/// seen promptly.
const LINGER_POLL: Duration = Duration::from_millis(10);

/// Longest the sender sleeps while batches wait to be retried, so that a closed log ends
/// them promptly.
const CLOSE_POLL: Duration = Duration::from_millis(50);

/// The sender thread: takes ready batches, appends them, completes their futures.
///
/// It takes the accumulator's lock once a round: the round's settling of the batches it
/// sent last (their buffer memory, their finished completions, their builders kept for
/// reuse) rides on the lock that takes the next batches. Fewer and shorter holds matter:
/// every send takes the same lock.
fn run_sender(shared: &Shared) {
    let _ = shared.sender_thread.set(std::thread::current().id());
    ON_A_SENDER_THREAD.set(true);
    if std::panic::catch_unwind(AssertUnwindSafe(|| sender_loop(shared))).is_err() {
        fail_pending(shared);
    }
    shared.state.lock().sender_done = true;
    shared.space.notify_all();
}

/// After the sender panicked (a bug, which the panic hook has reported): the producer
/// closes, and every record not yet acknowledged fails with `Closed`, so that no future,
/// flush or blocked send waits for ever.
fn fail_pending(shared: &Shared) {
    let pending: Vec<Arc<Completion>> = {
        let mut state = shared.state.lock();
        state.closed = true;
        shared.closed.store(true, Ordering::Release);
        release_open(&mut state);
        let closed = std::mem::take(&mut state.closed_batches);
        let in_flight = std::mem::take(&mut state.in_flight);
        // The older first, so that callbacks keep each partition's order.
        in_flight
            .into_iter()
            .chain(closed.into_iter().map(|batch| batch.completion))
            .collect()
    };
    shared.work.notify_all();
    shared.space.notify_all();
    for completion in pending {
        completion.complete(Outcome::Failed(Error::Closed));
    }
}

/// The sender's rounds, until the producer closes and nothing is left to retry.
fn sender_loop(shared: &Shared) {
    let linger = shared.config.linger_ms.min(i64::MAX as u64) as i64;
    let mut batches: Vec<OpenBatch> = Vec::new();
    let mut ready: Vec<(u32, u32)> = Vec::new();
    let mut sender = Sender {
        shared,
        parked: HashMap::default(),
        released: 0,
        spent: Vec::new(),
        spare_limit: shared.config.batch_size.max(RECORD_BATCH_OVERHEAD) * 2,
    };
    loop {
        let mut state = shared.state.lock();
        state.used -= sender.released;
        let mut wake_waiters = sender.released > 0 && !state.memory_queue.is_empty();
        sender.released = 0;
        state.in_flight.retain(|c| !c.is_finished());
        let room = SPARE_BUILDERS.saturating_sub(state.spare.len());
        let spent = &mut sender.spent;
        state.spare.extend(spent.drain(..room.min(spent.len())));
        loop {
            let now = shared.log.now_ms();
            let drain_all = !state.memory_queue.is_empty();
            ready.clear();
            for (key, batch) in &mut state.open {
                // A clock set back restarts the batch's linger instead of holding the
                // batch until the clock is past its creation again (Kafka's waited time
                // is never negative either).
                // Written only when it changes: the sending thread writes this batch, and
                // a store here would take its cache line away from it on every round.
                if now < batch.created_ms {
                    batch.created_ms = now;
                }
                if drain_all || now.saturating_sub(batch.created_ms) >= linger {
                    ready.push(*key);
                }
            }
            // Batches closed earlier go first, in the order they closed; then the open
            // ones in the order they opened.
            batches.extend(state.closed_batches.drain(..));
            let first = batches.len();
            for key in &ready {
                batches.extend(state.open.remove(key));
            }
            batches[first..].sort_by_key(|b| b.seq);
            let retry = sender.next_due();
            let forced = shared.forced.load(Ordering::Acquire) && retry.is_some();
            if !batches.is_empty() || forced || retry.is_some_and(|due| due <= Instant::now()) {
                break;
            }
            if state.closed && retry.is_none() {
                return;
            }
            let oldest = state.open.values().map(|b| b.created_ms).min();
            state.sender_idle = true;
            if std::mem::take(&mut wake_waiters) {
                shared.space.notify_all();
            }
            let lingering = oldest.map(|created| {
                let left = linger.saturating_sub(now.saturating_sub(created)).max(1);
                Duration::from_millis(left.unsigned_abs()).min(LINGER_POLL)
            });
            // Woken at least every `CLOSE_POLL` while batches are parked, to see the log
            // closed (nothing wakes the sender then).
            let retrying = retry.map(|due| {
                due.saturating_duration_since(Instant::now())
                    .min(CLOSE_POLL)
            });
            match lingering.into_iter().chain(retrying).min() {
                Some(wait) => {
                    shared.work.wait_for(&mut state, wait);
                }
                None => shared.work.wait(&mut state),
            }
        }
        state.sender_idle = false;
        let State { in_flight, .. } = &mut *state;
        in_flight.extend(batches.iter().map(|b| Arc::clone(&b.completion)));
        drop(state);
        // Builders the pool had no room for are freed here, not under the lock.
        sender.spent.clear();
        if wake_waiters {
            shared.space.notify_all();
        }
        // A forced close fails each batch not yet appended (checked batch by batch).
        for batch in batches.drain(..) {
            sender.send(batch);
        }
        sender.retry_due();
    }
}

/// What the sender thread keeps between its rounds.
struct Sender<'a> {
    shared: &'a Shared,
    /// Batches held back, by partition (`OpenBatch::key`), in the partition's order: the
    /// first failed and waits to be retried, the others wait behind it.
    parked: HashMap<(u32, u32), VecDeque<Parked>, BuildHasherDefault<IdHasher>>,
    /// Buffer memory of the batches finished since the last round.
    released: usize,
    /// Builders of the batches finished since the last round, for the pool.
    spent: Vec<BatchBuilder>,
    /// Largest builder kept for reuse.
    spare_limit: usize,
}

/// A batch the sender holds back.
#[derive(Debug)]
struct Parked {
    batch: OpenBatch,
    /// Its next append is not tried before this.
    retry_at: Instant,
    /// It fails with `Timeout` then (`delivery_timeout_ms`): set when it is parked;
    /// `None` when the time is past what an `Instant` can hold.
    deadline: Option<Instant>,
}

impl Sender<'_> {
    /// Appends a batch, or parks it: behind its partition's batch being retried, or as
    /// that batch when it failed and may be tried again.
    fn send(&mut self, mut batch: OpenBatch) {
        let now = Instant::now();
        // Behind its partition's parked batches even when forced, so that they fail first
        // (their callbacks keep the partition's order).
        if self.parked.contains_key(&batch.key) {
            // Its delivery timeout runs from now on as a failed batch's does, so that a
            // queue behind a parked batch is bounded by about one timeout (on a manual
            // clock that never moves as well).
            let deadline = self.deadline(&batch, now);
            if let Some(queue) = self.parked.get_mut(&batch.key) {
                queue.push_back(Parked {
                    batch,
                    retry_at: now,
                    deadline,
                });
            }
            return;
        }
        if self.shared.forced.load(Ordering::Acquire) {
            self.abandon(batch);
            return;
        }
        match send_batch(&self.shared.config, &mut batch) {
            Attempt::Retry => {
                let mut parked = Parked {
                    batch,
                    retry_at: now,
                    deadline: None,
                };
                self.back_off(&mut parked);
                self.parked
                    .entry(parked.batch.key)
                    .or_default()
                    .push_back(parked);
            }
            Attempt::Done => self.finished(batch),
            Attempt::Split(parts) => {
                self.finished(batch);
                // In order: one that must wait parks the rest behind it.
                for part in parts {
                    self.send(part);
                }
            }
        }
    }

    /// Tries each partition's parked batches that are due, in order, until one must wait.
    fn retry_due(&mut self) {
        let mut parked = std::mem::take(&mut self.parked);
        parked.retain(|_, queue| {
            self.drain(queue);
            !queue.is_empty()
        });
        self.parked = parked;
    }

    fn drain(&mut self, queue: &mut VecDeque<Parked>) {
        if self.shared.forced.load(Ordering::Acquire) {
            for parked in queue.drain(..) {
                self.abandon(parked.batch);
            }
            return;
        }
        while let Some(head) = queue.front_mut() {
            let now = Instant::now();
            if head.deadline.is_some_and(|deadline| now >= deadline) {
                let Some(head) = queue.pop_front() else { break };
                head.batch
                    .completion
                    .complete(Outcome::Failed(Error::Timeout {
                        what: "delivery of a producer batch (delivery_timeout_ms)",
                        ms: (self.shared.config.delivery_timeout_ms)
                            .max(self.shared.config.linger_ms),
                    }));
                self.finished(head.batch);
                continue;
            }
            // After a close of the log the try fails at once, with `Closed`.
            if head.retry_at > now && !self.shared.log.is_closed() {
                break;
            }
            let deadline = head.deadline;
            match send_batch(&self.shared.config, &mut head.batch) {
                Attempt::Retry => {
                    self.back_off(head);
                    break;
                }
                Attempt::Done => {
                    let Some(head) = queue.pop_front() else { break };
                    self.finished(head.batch);
                }
                Attempt::Split(parts) => {
                    let Some(head) = queue.pop_front() else { break };
                    self.finished(head.batch);
                    // The parts take its place, tried next, under its deadline.
                    for batch in parts.into_iter().rev() {
                        queue.push_front(Parked {
                            batch,
                            retry_at: now,
                            deadline,
                        });
                    }
                }
            }
        }
    }

    /// When a batch parked `now` fails with `Timeout`: `delivery_timeout_ms` after its
    /// creation, which Kafka counts from. The time since is read on the log's clock (a
    /// clock set back counts as none); `None` past what an `Instant` holds.
    fn deadline(&self, batch: &OpenBatch, now: Instant) -> Option<Instant> {
        let config = &self.shared.config;
        let waited = self
            .shared
            .log
            .now_ms()
            .saturating_sub(batch.created_ms)
            .max(0)
            .unsigned_abs();
        let timeout = config.delivery_timeout_ms.max(config.linger_ms);
        now.checked_add(Duration::from_millis(timeout.saturating_sub(waited)))
    }

    /// Dates the next try of a batch that just failed: `retry_backoff_ms` doubled for each
    /// try before, up to `retry_backoff_max_ms`, and at least 1 ms (so that a backoff of 0
    /// does not spin the sender); its deadline is set if it has none yet.
    fn back_off(&self, parked: &mut Parked) {
        let config = &self.shared.config;
        let now = Instant::now();
        if parked.deadline.is_none() {
            parked.deadline = self.deadline(&parked.batch, now);
        }
        let doublings = (parked.batch.tries - 1).min(63);
        let backoff = config
            .retry_backoff_ms
            .saturating_mul(1 << doublings)
            .min(config.retry_backoff_max_ms)
            .max(1);
        // Past what an `Instant` holds: never again before the deadline (if any).
        parked.retry_at = now
            .checked_add(Duration::from_millis(backoff))
            .unwrap_or_else(|| parked.deadline.unwrap_or(now));
    }

    /// When the sender must next look at its parked batches: the earliest retry or
    /// deadline of a partition's first one; now once the log was closed.
    fn next_due(&self) -> Option<Instant> {
        let due = self
            .parked
            .values()
            .filter_map(VecDeque::front)
            .map(|head| {
                head.deadline
                    .map_or(head.retry_at, |d| d.min(head.retry_at))
            })
            .min()?;
        // A closed log fails each parked batch's next try with `Closed`: due now.
        Some(if self.shared.log.is_closed() {
            Instant::now()
        } else {
            due
        })
    }

    /// Fails a batch with `Closed` (a forced close) without appending it.
    fn abandon(&mut self, batch: OpenBatch) {
        batch.completion.complete(Outcome::Failed(Error::Closed));
        self.finished(batch);
    }

    /// A batch is answered: its memory is released at the next round and its builder kept
    /// for reuse (only an ordinary batch's, as Kafka's buffer pool keeps only `batch.size`
    /// ones: a large record's buffer is freed).
    fn finished(&mut self, batch: OpenBatch) {
        self.released += batch.reserved;
        if batch.builder.buffer_capacity() <= self.spare_limit {
            self.spent.push(batch.builder);
        }
    }
}

/// A builder for a batch of up to `limit` bytes: a spare one if there is one.
fn spare_builder(spare: &mut Vec<BatchBuilder>, limit: usize) -> BatchBuilder {
    match spare.pop() {
        Some(mut builder) => {
            builder.clear();
            builder.set_capacity(limit);
            builder
        }
        None => BatchBuilder::with_capacity(limit),
    }
}

/// Builders the sender keeps for new batches, so that an ordinary batch's buffer is not
/// allocated by the sending thread and freed by the sender (a cross-thread free each
/// batch); others are freed as before. Each
/// holds at most twice `batch_size`, so they add at most 64 × `batch_size` bytes (1 MiB
/// by default) to `buffer_memory`.
const SPARE_BUILDERS: usize = 32;

/// What became of a try to append a batch.
enum Attempt {
    /// Its futures are answered.
    Done,
    /// It failed before writing anything, with an error a later try may not meet, and
    /// `retries` allows another try: its futures are still pending.
    Retry,
    /// It is over the topic's limit now (lowered since it was built) and holds more than
    /// one record: these parts of it go in its place, in order (see [`split_batch`]).
    Split(Vec<OpenBatch>),
}

/// Appends one batch and completes its futures, unless it must be tried again or split
/// (see [`Attempt`]).
fn send_batch(config: &ProducerConfig, batch: &mut OpenBatch) -> Attempt {
    let acks = config.acks;
    batch.tries += 1;
    let bytes = if batch.tries == 1 {
        batch.builder.finish()
    } else {
        Some(batch.builder.finished_batch())
    };
    let Some(bytes) = bytes else {
        batch
            .completion
            .complete(Outcome::Failed(Error::InvalidRecord {
                reason: "empty producer batch".into(),
            }));
        return Attempt::Done;
    };
    let completion = &batch.completion;
    let mut in_log = false;
    let result = batch
        .partition
        .append_then(bytes, acks == Acks::All, |info| {
            in_log = true;
            if acks != Acks::All {
                completion.appended(info);
            }
        });
    match result {
        Ok(info) => completion.appended(&info),
        Err(error)
            if !in_log
                && acks != Acks::None
                && batch.tries <= config.retries
                && error.is_retriable() =>
        {
            return Attempt::Retry;
        }
        Err(Error::RecordTooLarge { size, max }) if !in_log => {
            match split_batch(config, batch, max) {
                Ok(Some(parts)) => return Attempt::Split(parts),
                Ok(None) => batch
                    .completion
                    .complete(Outcome::Failed(Error::RecordTooLarge { size, max })),
                Err(error) => batch.completion.complete(Outcome::Failed(error)),
            }
        }
        Err(error) => completion.complete(Outcome::Failed(error)),
    }
    Attempt::Done
}

/// Kafka's `ProducerBatch.split` (its sender's answer to `MESSAGE_TOO_LARGE`): the
/// records of a built batch that the topic refused as over `max` bytes, in order, in
/// batches of at most the topic's limit now and `batch_size` bytes (Kafka splits to
/// `batch.size` alone, and splits again whatever is still too large; a record larger than
/// that alone in one, to fail alone), each a part of the batch's completion, sharing its
/// buffer memory (each part the estimates its records reserved), creation time (its
/// delivery timeout) and place in the partition's order. `None` when that leaves one
/// batch (one record).
fn split_batch(
    config: &ProducerConfig,
    batch: &mut OpenBatch,
    max: usize,
) -> Result<Option<Vec<OpenBatch>>> {
    let bytes = batch.builder.finished_batch();
    let header = BatchHeader::parse(bytes, bytes.len())?;
    let limit = max
        .min(batch.partition.max_batch_bytes())
        .min(config.batch_size);
    // Each part's first record, builder and reserved memory.
    let mut builders: Vec<(u32, BatchBuilder, usize)> = Vec::new();
    let mut headers = Vec::new();
    for (index, record) in (0u32..).zip(codec::records(bytes, &header)) {
        let record = record?;
        headers.clear();
        for header in record.headers {
            headers.push(header?);
        }
        let (key, value) = (record.key.map(<[u8]>::len), record.value.map(<[u8]>::len));
        let fits = |builder: &BatchBuilder| {
            builder.size_in_bytes()
                + builder.next_record_size(record.timestamp, key, value, &headers)
                <= limit
        };
        if builders.last().is_none_or(|(_, builder, _)| !fits(builder)) {
            let builder = BatchBuilder::with_capacity(limit.min(bytes.len()));
            builders.push((index, builder, 0));
        }
        if let Some((_, builder, reserved)) = builders.last_mut() {
            builder.push(record.timestamp, record.key, record.value, &headers);
            *reserved += BatchBuilder::estimate_record_size(key, value, &headers);
        }
    }
    if builders.len() < 2 {
        // Nothing to gain (and a part as large as the batch would be refused again).
        return Ok(None);
    }
    let firsts: Vec<u32> = builders.iter().map(|&(first, ..)| first).collect();
    let completions = batch.completion.split(&firsts);
    // What `send` reserved for each record, so the shares add up (the last takes any rest).
    let mut reserved = std::mem::take(&mut batch.reserved);
    let count = builders.len();
    let parts = builders
        .into_iter()
        .zip(completions)
        .enumerate()
        .map(|(k, ((_, builder, estimate), completion))| {
            let share = if k + 1 == count {
                reserved
            } else {
                estimate.min(reserved)
            };
            reserved -= share;
            OpenBatch {
                key: batch.key,
                partition: batch.partition.clone(),
                builder,
                completion,
                seq: batch.seq,
                created_ms: batch.created_ms,
                limit,
                reserved: share,
                tries: 0,
            }
        })
        .collect();
    Ok(Some(parts))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::TopicConfig;
    use std::sync::atomic::AtomicUsize;

    /// Wakers that panicked when a completion woke them.
    pub(super) static WAKER_PANICS: AtomicUsize = AtomicUsize::new(0);

    /// A split keeps each record whole (timestamp, key, null value, headers with a null
    /// value), in order, in parts within the limit, and shares the batch's buffer memory
    /// as `send` reserved it, record by record.
    #[test]
    fn a_split_keeps_records_and_shares_their_memory() {
        let log = Log::temp().unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let config = ProducerConfig::default();
        let mut builder = BatchBuilder::with_capacity(4096);
        let mut reserved = 0;
        let value = [b'v'; 80];
        for i in 0..8u8 {
            let key = [i];
            let headers: &[(&str, Option<&[u8]>)] = &[("h", Some(&[i][..])), ("n", None)];
            let value = (i != 5).then_some(&value[..]);
            builder.push(1_000 - i64::from(i), Some(&key), value, headers);
            reserved +=
                BatchBuilder::estimate_record_size(Some(1), value.map(<[u8]>::len), headers);
        }
        builder.finish().unwrap();
        let mut batch = OpenBatch {
            key: (0, 0),
            partition: log.topic("t").unwrap().partition(0).unwrap(),
            builder,
            completion: Arc::new(Completion::new(Arc::from("t"), 0)),
            seq: 1,
            created_ms: 0,
            limit: 4096,
            reserved,
            tries: 1,
        };
        // Within the limit (the batch is about 900 bytes): nothing to split.
        assert!(split_batch(&config, &mut batch, 1 << 20).unwrap().is_none());
        assert_eq!(batch.reserved, reserved);
        let parts = split_batch(&config, &mut batch, 300).unwrap().unwrap();
        assert_eq!(batch.reserved, 0);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let mut shares = 0;
        let mut index = 0u8;
        for mut part in parts {
            let bytes = part.builder.finish().unwrap().to_vec();
            assert!(bytes.len() <= 300, "{} bytes", bytes.len());
            let header = BatchHeader::parse(&bytes, bytes.len()).unwrap();
            let mut estimates = 0;
            for record in codec::records(&bytes, &header) {
                let record = record.unwrap();
                let headers: Vec<_> = record.headers.iter().map(|h| h.unwrap()).collect();
                assert_eq!(record.timestamp, 1_000 - i64::from(index));
                assert_eq!(record.key, Some(&[index][..]));
                assert_eq!(record.value.is_none(), index == 5);
                assert_eq!(headers, [("h", Some(&[index][..])), ("n", None)]);
                estimates += BatchBuilder::estimate_record_size(
                    Some(1),
                    record.value.map(<[u8]>::len),
                    &headers,
                );
                index += 1;
            }
            assert_eq!(part.reserved, estimates);
            shares += part.reserved;
        }
        assert_eq!((index, shares), (8, reserved));
    }

    /// The futures of a split batch's records wait on the whole batch, which completes
    /// once every part has (parts split again included), and each answers with its own
    /// part's outcome and offset.
    #[test]
    fn a_split_batchs_futures_answer_with_their_parts_outcome() {
        let whole = Arc::new(Completion::new(Arc::from("t"), 0));
        let futures: Vec<SendFuture> = (0..6)
            .map(|index| SendFuture {
                pending: Some(Pending {
                    completion: Arc::clone(&whole),
                    index,
                    timestamp: 7,
                }),
                ready: None,
            })
            .collect();
        let appended = |base_offset| Outcome::Appended {
            base_offset,
            log_append_time: None,
        };
        // Records 0–1, 2–4 (split again: 2–3, 4), 5.
        let parts = whole.split(&[0, 2, 5]);
        let again = parts[1].split(&[0, 2]);
        // A thread blocked on record 1 is woken by its part.
        let (tx, rx) = std::sync::mpsc::channel();
        let blocked = SendFuture {
            pending: Some(Pending {
                completion: Arc::clone(&whole),
                index: 1,
                timestamp: 7,
            }),
            ready: None,
        };
        let waiter = std::thread::spawn(move || tx.send(blocked.wait().unwrap().offset));
        std::thread::sleep(Duration::from_millis(20));
        parts[0].complete(appended(10));
        let woken = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(woken, Ok(Some(11)), "not woken by its part");
        waiter.join().unwrap().unwrap();
        parts[0].complete(appended(99));
        // A part's records are answered as it completes, before the whole.
        let done: Vec<bool> = futures.iter().map(SendFuture::is_done).collect();
        assert_eq!(done, [true, true, false, false, false, false]);
        again[1].complete(Outcome::Failed(Error::Closed));
        again[0].complete(appended(12));
        assert!(!whole.is_finished());
        assert!(futures[4].is_done() && !futures[5].is_done());
        parts[2].complete(appended(14));
        assert!(whole.is_finished());
        let offsets: Vec<Option<u64>> = futures
            .into_iter()
            .map(|future| future.wait().ok().and_then(|m| m.offset))
            .collect();
        assert_eq!(
            offsets,
            [Some(10), Some(11), Some(12), Some(13), None, Some(14)]
        );
    }

    /// A batch the sender took and has not appended yet holds back a send that would
    /// append in the calling thread: its record would land before that batch's.
    #[test]
    fn a_batch_in_flight_keeps_a_send_from_appending_in_the_calling_thread() {
        let log = Log::temp().unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let producer = log
            .producer(ProducerConfig::default().acks(Acks::Leader))
            .unwrap();
        // As the sender leaves a batch between taking it and appending it.
        let taken = Arc::new(Completion::new(Arc::from("t"), 0));
        producer
            .shared()
            .state
            .lock()
            .in_flight
            .push(Arc::clone(&taken));
        let sent = producer
            .send(ProducerRecord::new("t").partition(0).value("after"))
            .unwrap();
        // A fresh producer's first send appends in its own thread unless held back.
        assert!(producer.shared().state.lock().direct_after.is_none());
        taken.complete(Outcome::Failed(Error::Closed));
        assert_eq!(sent.wait().unwrap().offset, Some(0));
        // With nothing in flight, the next one appends in this thread.
        std::thread::sleep(Duration::from_millis(20));
        let next = producer
            .send(ProducerRecord::new("t").partition(0).value("next"))
            .unwrap();
        assert!(next.is_done());
        assert!(producer.shared().state.lock().direct_after.is_some());
    }

    /// The sender keeps the builders of ordinary batches for reuse, and frees the buffer a
    /// large record needed.
    #[test]
    fn spare_builders_are_ordinary_sized_and_bounded() {
        let log = Log::temp().unwrap();
        log.create_topic("t", TopicConfig::default().partitions(8))
            .unwrap();
        let producer = log.producer(ProducerConfig::default()).unwrap();
        let spare = |producer: &Producer| {
            let state = producer.shared().state.lock();
            let sizes: Vec<usize> = state
                .spare
                .iter()
                .map(BatchBuilder::buffer_capacity)
                .collect();
            sizes
        };
        producer
            .send(ProducerRecord::new("t").value(vec![1u8; 200_000]))
            .unwrap()
            .wait()
            .unwrap();
        // A small send makes the sender settle the round that sent the large record.
        producer
            .send(ProducerRecord::new("t").value("x"))
            .unwrap()
            .wait()
            .unwrap();
        producer.flush().unwrap();
        let limit = 2 * producer.config().batch_size;
        assert!(
            spare(&producer).iter().all(|&c| c <= limit),
            "{:?}",
            spare(&producer)
        );
        // Many batches on many partitions: the pool stays at its bound.
        for round in 0..100u32 {
            let records = (0..8).map(|p| {
                ProducerRecord::new("t")
                    .partition(p)
                    .value(vec![round as u8; 100])
            });
            for future in producer.send_batch(records).unwrap() {
                future.wait().unwrap();
            }
        }
        producer.flush().unwrap();
        // Builders return to the pool when the sender starts its next round, which a flush
        // does not wait for.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sizes = spare(&producer);
        while sizes.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            sizes = spare(&producer);
        }
        assert!(
            !sizes.is_empty() && sizes.len() <= SPARE_BUILDERS,
            "{sizes:?}"
        );
        assert!(sizes.iter().all(|&c| c <= limit), "{sizes:?}");
    }

    /// A send to a partition the live topic has but the producer's cached topic lacks (the
    /// moment while partitions are added, before the topic's change count moves) looks the
    /// topic up again instead of indexing past the cached partitions.
    #[test]
    fn a_partition_added_after_the_topic_was_cached_is_looked_up_again() {
        let (_log, producer) = producer_with_t_cached_a_partition_short();
        let metadata = producer
            .send(ProducerRecord::new("t").partition(1).value("b"))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!((metadata.partition, metadata.offset), (1, Some(0)));
        let error = producer
            .send(ProducerRecord::new("t").partition(2).value("c"))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(error, Error::UnknownPartition { partitions: 2, .. }),
            "{error:?}"
        );
        producer.close().unwrap();
    }

    /// A log with topic `t` (two partitions) and a producer that sent to it, its cached
    /// topic then made as it is while partitions are added (`cache_one_partition_short`).
    fn producer_with_t_cached_a_partition_short() -> (Log, Producer) {
        let log = Log::temp().unwrap();
        log.create_topic("t", TopicConfig::default().partitions(2))
            .unwrap();
        let producer = log.producer(ProducerConfig::default()).unwrap();
        producer
            .send(ProducerRecord::new("t").partition(0).value("a"))
            .unwrap()
            .wait()
            .unwrap();
        cache_one_partition_short(&producer);
        (log, producer)
    }

    /// Makes the producer's cached topic `t` as it is while partitions are added: the change
    /// count current, a partition short.
    fn cache_one_partition_short(producer: &Producer) {
        let mut guard = producer.shared().state.lock();
        let topics = &mut guard.topics;
        let cached = topics.get("t").unwrap();
        let stale = Arc::new(CachedTopic {
            id: cached.id,
            name: Arc::clone(&cached.name),
            topic: cached.topic.clone(),
            partitions: cached.partitions[..cached.partitions.len() - 1].to_vec(),
            max_batch_bytes: cached.max_batch_bytes,
            compacts: cached.compacts,
            timestamp_limits: cached.timestamp_limits,
            changes: cached.changes,
            appends_without_sync: cached.appends_without_sync,
        });
        topics.insert("t".into(), stale);
    }

    /// In a `send_batch` call, a record that made the producer look its topic up again
    /// (an explicit partition beyond the cached count) leaves the later records of the call
    /// partitioned over the count looked up, not the cached one.
    #[test]
    fn a_send_batch_partitions_after_a_lookup_by_the_count_looked_up() {
        let (_log, producer) = producer_with_t_cached_a_partition_short();
        let records = std::iter::once(ProducerRecord::new("t").partition(1).value("b"))
            .chain((0..32).map(|k| ProducerRecord::new("t").key(format!("key-{k}")).value("c")));
        let partitions: std::collections::BTreeSet<u32> = producer
            .send_batch(records)
            .unwrap()
            .into_iter()
            .skip(1)
            .map(|future| future.wait().unwrap().partition)
            .collect();
        assert_eq!(partitions, [0, 1].into());
        producer.close().unwrap();
    }

    /// A log in `dir` on a manual clock, with topic `t` and a producer lingering 1 s, and
    /// the future of one record sent (held until the clock passes the linger).
    fn lingering_send(
        dir: &std::path::Path,
    ) -> (Log, Arc<crate::ManualClock>, Producer, SendFuture) {
        let clock = Arc::new(crate::ManualClock::new(1_700_000_000_000));
        let log = Log::builder().dir(dir).clock(clock.clone()).open().unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let producer = log
            .producer(ProducerConfig::default().linger_ms(1_000))
            .unwrap();
        let future = producer.send(ProducerRecord::new("t").value("a")).unwrap();
        (log, clock, producer, future)
    }

    /// Flushes its producer after a send when woken, keeping what `flush` answered.
    struct FlushesProducer(Producer, Mutex<Option<Result<()>>>);

    impl std::task::Wake for FlushesProducer {
        fn wake(self: Arc<Self>) {
            let sent = self.0.send(ProducerRecord::new("t").value("b"));
            let flushed = sent.and_then(|_| self.0.flush());
            *self.1.lock() = Some(flushed);
        }
    }

    /// `flush` in an application's waker, which runs on the sender thread, with a record
    /// still to send: only that thread could send it, so the flush is refused with
    /// `IllegalState` (as Kafka refuses `flush` in a callback) instead of waiting for ever;
    /// the record goes out all the same.
    #[test]
    fn a_flush_in_a_waker_on_the_sender_thread_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, clock, producer, mut future) = lingering_send(dir.path());
        let waker = Arc::new(FlushesProducer(producer.clone(), Mutex::new(None)));
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&Waker::from(Arc::clone(&waker))))
                .is_pending()
        );
        clock.advance(2_000);
        assert_eq!(future.wait().unwrap().offset, Some(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        while waker.1.lock().is_none() {
            assert!(Instant::now() < deadline, "the waker did not run");
            std::thread::sleep(Duration::from_millis(1));
        }
        let flushed = waker.1.lock().take().unwrap();
        assert!(
            matches!(flushed, Err(Error::IllegalState { .. })),
            "{flushed:?}"
        );
        producer.flush().unwrap();
        assert_eq!(
            log.topic("t")
                .unwrap()
                .partition(0)
                .unwrap()
                .log_end_offset(),
            2
        );
        producer.close().unwrap();
    }

    /// Sends a record through its producer when woken, keeping what `send` answered.
    struct SendsRecord(Producer, Mutex<Option<Result<()>>>);

    impl std::task::Wake for SendsRecord {
        fn wake(self: Arc<Self>) {
            let sent = self.0.send(ProducerRecord::new("t").value(vec![3u8; 100]));
            *self.1.lock() = Some(sent.map(|_| ()));
        }
    }

    /// A send in a waker (on the sender thread) that finds no buffer memory is refused at
    /// once with `IllegalState`: only that thread frees memory, so waiting would last
    /// `max_block_ms` for nothing, and hold up the sends queued for memory behind it.
    #[test]
    fn a_send_in_a_waker_without_buffer_memory_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::ManualClock::new(1_700_000_000_000));
        let log = Log::builder().dir(dir.path()).clock(clock).open().unwrap();
        log.create_topic("t", TopicConfig::default()).unwrap();
        let each = BatchBuilder::estimate_record_size(None, Some(100), &[]);
        let producer = log
            .producer(
                ProducerConfig::default()
                    .linger_ms(3_600_000)
                    .buffer_memory(2 * each)
                    .max_block_ms(60_000),
            )
            .unwrap();
        let value = || ProducerRecord::new("t").value(vec![1u8; 100]);
        let mut first = producer.send(value()).unwrap();
        let _second = producer.send(value()).unwrap();
        let waker = Arc::new(SendsRecord(producer.clone(), Mutex::new(None)));
        assert!(
            Pin::new(&mut first)
                .poll(&mut Context::from_waker(&Waker::from(Arc::clone(&waker))))
                .is_pending()
        );
        // The batch goes; its memory is still counted when the waker sends.
        let start = Instant::now();
        producer.flush().unwrap();
        assert_eq!(first.wait().unwrap().offset, Some(0));
        while waker.1.lock().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the waker waited"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent = waker.1.lock().take().unwrap();
        assert!(matches!(sent, Err(Error::IllegalState { .. })), "{sent:?}");
        producer.close().unwrap();
    }

    /// Holds the last clone of a producer and drops it when woken.
    struct DropsProducer(Mutex<Option<Producer>>, AtomicBool);

    impl std::task::Wake for DropsProducer {
        fn wake(self: Arc<Self>) {
            drop(self.0.lock().take());
            self.1.store(true, Ordering::Release);
        }
    }

    /// An application's waker that drops the last clone of the producer runs on the
    /// sender thread: the close this makes does not join the sender thread from itself
    /// (which panics with a deadlock error), and the sender stops.
    #[test]
    fn the_last_clone_dropped_by_a_waker_on_the_sender_thread_closes_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, clock, producer, mut future) = lingering_send(dir.path());
        let shared = Arc::clone(&producer.handle.shared);
        let waker = Arc::new(DropsProducer(Mutex::new(None), AtomicBool::new(false)));
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&Waker::from(Arc::clone(&waker))))
                .is_pending()
        );
        // The waker holds the only handle; the batch leaves once its linger has passed.
        *waker.0.lock() = Some(producer);
        let panics_before = WAKER_PANICS.load(Ordering::Acquire);
        clock.advance(2_000);
        assert_eq!(future.wait().unwrap().offset, Some(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waker.1.load(Ordering::Acquire) || Arc::strong_count(&shared) > 1 {
            assert!(Instant::now() < deadline, "the sender thread still runs");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(shared.closed.load(Ordering::Acquire));
        assert_eq!(WAKER_PANICS.load(Ordering::Acquire), panics_before);
    }
}
