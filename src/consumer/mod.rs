//! The consumer: Kafka's `KafkaConsumer` over assigned partitions — positions, `poll`,
//! `seek`, pause, and committed offsets in `__consumer_offsets`.
//!
//! Design: a consumer owns one state per assigned partition (its position, a pending
//! reset, paused or not). `poll` resolves missing positions (committed offset, else
//! `auto_offset_reset`), reads zero-copy from the partitions in turn — starting after the
//! partition that last returned records, so every partition gets its share — and, when
//! nothing is there, sleeps on the log's append signal until data or the timeout.
//! Records are only ever read below the high watermark.
//!
//! Invariant: a partition's position is the offset after the last record `poll` returned
//! for it (or where a seek or reset put it); auto-commit commits only such positions, so
//! what it commits was already handed out (Kafka's at-least-once behaviour).

mod records;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::codec::{Batch, RecordCursor};
use crate::describe::PartitionDescription;
use crate::error::{Error, Result};
use crate::group::assignor::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol,
};
use crate::group::coordinator::{JoinOutcome, JoinRequest, MemberRef};
use crate::log::{Log, Partition};
use crate::offsets::OffsetAndMetadata;
use crate::types::{TimestampOffset, TopicPartition};

use records::PollBuilder;
pub use records::{
    ConsumerRecord, ConsumerRecords, OwnedRecords, RecordHeaders, RecordRef, RecordViews,
};

/// Where a consumer starts when it has no position and its group no committed offset
/// (Kafka's `auto.offset.reset`), and what it does when its position leaves the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records appended from now on (Kafka's default).
    #[default]
    Latest,
    /// No reset: `poll` fails with `NoOffsetForPartition`, `OffsetOutOfRange` or
    /// `LogTruncation`.
    None,
}

/// A partition's failure kept for the next `poll`: raised then only while it still
/// applies — the partition assigned, not paused, at the position it failed at (a seek, a
/// pause or a rebalance drops it, as Kafka's fetcher drops a failed fetch's buffer then).
#[derive(Debug)]
struct Deferred {
    tp: TopicPartition,
    position: Option<u64>,
    error: Error,
}

/// Consumer settings, named and defaulted as Kafka's `ConsumerConfig`. Set fields directly
/// or with the same-named builder methods.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group whose committed offsets this consumer reads and writes. Without
    /// one, nothing can be committed and auto-commit is off.
    pub group_id: Option<String>,
    /// See [`AutoOffsetReset`]. Default `Latest`.
    pub auto_offset_reset: AutoOffsetReset,
    /// Commit positions every `auto_commit_interval_ms` from within `poll`, and on close.
    /// Default `true` (it needs a `group_id`).
    pub enable_auto_commit: bool,
    /// Default 5000, measured on the log's clock.
    pub auto_commit_interval_ms: u64,
    /// Most records one `poll` returns. Default 500.
    pub max_poll_records: usize,
    /// About the most bytes one `poll` reads over all partitions. As in Kafka (KIP-74), the
    /// first partition of a fetch that reads anything takes its first batch whole even when
    /// it is larger than this or `max_partition_fetch_bytes`, so that the consumer always
    /// makes progress; the partitions after it stay within the limits (one whose first
    /// batch is over them reads nothing, and the first such goes first in the next fetch).
    /// Default 52428800.
    pub fetch_max_bytes: usize,
    /// About the most bytes one `poll` reads from one partition (see `fetch_max_bytes` for
    /// a first batch larger than it). Default 1048576.
    pub max_partition_fetch_bytes: usize,
    /// Least bytes of records a `poll` waits for (`fetch.min.bytes`). Default 1: a poll
    /// returns as soon as there is anything. With more, a poll that finds fewer bytes
    /// readable over its unpaused partitions (whole batches from each position, at most
    /// `max_partition_fetch_bytes` a partition, as Kafka's `DelayedFetch` counts them)
    /// waits for more, up to [`fetch_max_wait_ms`](Self::fetch_max_wait_ms): fewer, fuller
    /// polls at the cost of latency. Records already read and not yet returned (past
    /// `max_poll_records`) are returned at once.
    pub fetch_min_bytes: usize,
    /// Longest a `poll` waits for `fetch_min_bytes` (`fetch.max.wait.ms`), default 500; then
    /// it returns what there is. Timed as Kafka's fetch in flight: from the moment the last
    /// `poll` returned records (Kafka's consumer sends its next fetch then, so the wait runs
    /// while the application handles them), or else the first poll that found too few
    /// bytes (after a seek or a new assignment), across polls: a `poll` whose own timeout
    /// ends first returns nothing and a later one returns the records once this wait has
    /// passed. A wait that passes with nothing readable starts the next at once, as
    /// Kafka's consumer sends its next fetch. 0 returns what there is at once. Real time,
    /// as `poll`'s timeout.
    pub fetch_max_wait_ms: u64,
    /// How long a member's session outlives its last heartbeat. As Kafka's consumer
    /// heartbeats from a background thread while it is open (KIP-62), so does this one (in
    /// effect: the coordinator counts it alive), until `max_poll_interval_ms` passes
    /// without a `poll`; the session timeout then matters for static members
    /// (`group_instance_id`), which stay in the group this long after their consumer
    /// closed or stopped polling. Default 45000.
    pub session_timeout_ms: u64,
    /// The longest gap between polls: a member that does not `poll` for this long leaves
    /// its group (a static member stops heartbeating, and is removed `session_timeout_ms`
    /// later), as Kafka's heartbeat thread makes it. Also how long a rebalance waits for
    /// members to rejoin. Default 300000.
    pub max_poll_interval_ms: u64,
    /// Static membership (`group.instance.id`): a consumer that restarts under the same id
    /// within the session timeout gets its partitions back without a rebalance; closing it
    /// does not leave the group (its session expiring does). Unique within the group: a
    /// second consumer joining under it takes the place, and the first then fails with
    /// `FencedInstanceId`. 1 to 249 of `[a-zA-Z0-9._-]`.
    pub group_instance_id: Option<String>,
    /// Assignors in preference order (`partition.assignment.strategy`); of those every
    /// member has, each member votes for its first and the group uses the most voted (a
    /// tie: the leader's order), as Kafka's `selectProtocol` (a consumer with none in
    /// common with the group is refused with `InconsistentGroupProtocol`). Default range,
    /// then cooperative-sticky. As in Kafka, a consumer rebalances incrementally (keeping the
    /// partitions that do not move) only when every assignor it lists is cooperative, e.g.
    /// `vec![Arc::new(CooperativeStickyAssignor)]`; otherwise it gives up all its
    /// partitions at each rebalance.
    pub partition_assignment_strategy: Vec<Arc<dyn Assignor>>,
    /// Check each batch's CRC-32C before returning its records (Kafka's `check.crcs`).
    /// Default `true`. Without it a batch damaged on disk is returned as it reads, as
    /// Kafka's consumer does then: its records are still decoded safely (bad framing is
    /// `Corruption`, never a panic), but a damaged key, value, timestamp or header field
    /// goes unnoticed (a damaged base offset can skip records or move the position).
    /// It saves the CRC pass over every batch read.
    pub check_crcs: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: AutoOffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            max_poll_records: 500,
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            fetch_min_bytes: 1,
            fetch_max_wait_ms: 500,
            group_instance_id: None,
            session_timeout_ms: 45_000,
            max_poll_interval_ms: 300_000,
            partition_assignment_strategy: vec![
                Arc::new(RangeAssignor),
                Arc::new(CooperativeStickyAssignor),
            ],
            check_crcs: true,
        }
    }
}

impl ConsumerConfig {
    /// Sets [`group_id`](Self::group_id).
    #[must_use]
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Sets [`auto_offset_reset`](Self::auto_offset_reset).
    #[must_use]
    pub fn auto_offset_reset(mut self, reset: AutoOffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// Sets [`enable_auto_commit`](Self::enable_auto_commit).
    #[must_use]
    pub fn enable_auto_commit(mut self, enabled: bool) -> Self {
        self.enable_auto_commit = enabled;
        self
    }

    /// Sets [`auto_commit_interval_ms`](Self::auto_commit_interval_ms).
    #[must_use]
    pub fn auto_commit_interval_ms(mut self, ms: u64) -> Self {
        self.auto_commit_interval_ms = ms;
        self
    }

    /// Sets [`max_poll_records`](Self::max_poll_records).
    #[must_use]
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.max_poll_records = records;
        self
    }

    /// Sets [`fetch_max_bytes`](Self::fetch_max_bytes).
    #[must_use]
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.fetch_max_bytes = bytes;
        self
    }

    /// Sets [`max_partition_fetch_bytes`](Self::max_partition_fetch_bytes).
    #[must_use]
    pub fn max_partition_fetch_bytes(mut self, bytes: usize) -> Self {
        self.max_partition_fetch_bytes = bytes;
        self
    }

    /// Sets [`fetch_min_bytes`](Self::fetch_min_bytes).
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use std::time::Duration;
    /// use tarnlog::{AutoOffsetReset, ConsumerConfig, Log, ProducerConfig, ProducerRecord};
    /// use tarnlog::TopicPartition;
    ///
    /// let log = Log::temp()?;
    /// log.create_topic("metrics", None)?;
    /// let producer = log.producer(ProducerConfig::default())?;
    /// producer.send(ProducerRecord::new("metrics").value("cpu=3"))?.wait()?;
    /// // Polls of at least 64 KiB, or whatever there is after 50 ms.
    /// let config = ConsumerConfig::default()
    ///     .auto_offset_reset(AutoOffsetReset::Earliest)
    ///     .fetch_min_bytes(64 << 10)
    ///     .fetch_max_wait_ms(50);
    /// let mut consumer = log.consumer(config)?;
    /// consumer.assign([TopicPartition::new("metrics", 0)])?;
    /// assert!(consumer.poll(Duration::ZERO)?.is_empty(), "one small record waits");
    /// let records = consumer.poll(Duration::from_secs(5))?;
    /// assert_eq!(records.count(), 1, "returned once the 50 ms have passed");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn fetch_min_bytes(mut self, bytes: usize) -> Self {
        self.fetch_min_bytes = bytes;
        self
    }

    /// Sets [`fetch_max_wait_ms`](Self::fetch_max_wait_ms).
    #[must_use]
    pub fn fetch_max_wait_ms(mut self, ms: u64) -> Self {
        self.fetch_max_wait_ms = ms;
        self
    }

    /// Sets [`group_instance_id`](Self::group_instance_id).
    #[must_use]
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// Sets [`session_timeout_ms`](Self::session_timeout_ms).
    #[must_use]
    pub fn session_timeout_ms(mut self, ms: u64) -> Self {
        self.session_timeout_ms = ms;
        self
    }

    /// Sets [`max_poll_interval_ms`](Self::max_poll_interval_ms).
    #[must_use]
    pub fn max_poll_interval_ms(mut self, ms: u64) -> Self {
        self.max_poll_interval_ms = ms;
        self
    }

    /// Sets [`partition_assignment_strategy`](Self::partition_assignment_strategy).
    #[must_use]
    pub fn partition_assignment_strategy(mut self, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        self.partition_assignment_strategy = assignors;
        self
    }

    /// Sets [`check_crcs`](Self::check_crcs).
    #[must_use]
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.check_crcs = check;
        self
    }

    /// Checks every field against its allowed range.
    ///
    /// # Errors
    /// `InvalidConfig` naming the first field out of range and the range.
    pub fn validate(&self) -> Result<()> {
        if let Some(group) = &self.group_id {
            crate::offsets::check_group_id(group)?;
        }
        if let Some(instance) = &self.group_instance_id {
            check_instance_id(instance)?;
        }
        if self.partition_assignment_strategy.is_empty() {
            return Err(Error::InvalidConfig {
                field: "partition_assignment_strategy",
                value: "[]".into(),
                allowed: "at least one assignor".into(),
            });
        }
        for assignor in &self.partition_assignment_strategy {
            let name = assignor.name();
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return Err(Error::InvalidConfig {
                    field: "partition_assignment_strategy",
                    value: format!("{name:?}"),
                    allowed: format!("assignor names of 1 to {MAX_NAME_BYTES} bytes"),
                });
            }
        }
        crate::config::range("session_timeout_ms", self.session_timeout_ms, 1, MAX_MS)?;
        crate::config::range("max_poll_interval_ms", self.max_poll_interval_ms, 1, MAX_MS)?;
        let checks: [(&'static str, u64, u64, u64); 6] = [
            (
                "auto_commit_interval_ms",
                self.auto_commit_interval_ms,
                1,
                i64::MAX as u64,
            ),
            (
                "max_poll_records",
                self.max_poll_records as u64,
                1,
                i32::MAX as u64,
            ),
            (
                "fetch_max_bytes",
                self.fetch_max_bytes as u64,
                1,
                i32::MAX as u64,
            ),
            (
                "max_partition_fetch_bytes",
                self.max_partition_fetch_bytes as u64,
                1,
                i32::MAX as u64,
            ),
            (
                "fetch_min_bytes",
                self.fetch_min_bytes as u64,
                0,
                i32::MAX as u64,
            ),
            (
                "fetch_max_wait_ms",
                self.fetch_max_wait_ms,
                0,
                i32::MAX as u64,
            ),
        ];
        for (field, value, min, max) in checks {
            crate::config::range(field, value, min, max)?;
        }
        Ok(())
    }
}

/// Longest timeout a consumer config takes (about 292 years).
const MAX_MS: u64 = i64::MAX as u64 / 1_000_000;

/// Longest `group_instance_id` and assignor name, in bytes (Kafka's limit for names).
const MAX_NAME_BYTES: usize = 249;

/// A `group_instance_id` as Kafka accepts it: 1 to 249 of `[a-zA-Z0-9._-]`.
fn check_instance_id(instance: &str) -> Result<()> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if instance.is_empty() || instance.len() > MAX_NAME_BYTES || !instance.chars().all(legal) {
        return Err(Error::InvalidConfig {
            field: "group_instance_id",
            value: format!("{instance:?}"),
            allowed: format!("1 to {MAX_NAME_BYTES} of a-z, A-Z, 0-9, '.', '_', '-'"),
        });
    }
    Ok(())
}

/// An async commit waiting for the next `poll`, `commit_sync` or revocation.
type PendingCommit = (
    Committer,
    Vec<(TopicPartition, OffsetAndMetadata)>,
    // The partitions the positions were read from: a topic deleted (and perhaps created
    // again under its name) before the commit runs fails it, not the new topic.
    Vec<Partition>,
    CommitCallback,
);

/// Who a commit is made as: captured when an async commit is queued, so that it runs
/// under the membership it was made in.
#[derive(Debug, Clone)]
enum Committer {
    /// A consumer outside any group's membership (`assign`).
    Outside,
    /// A member of a generation.
    Member(String, i32),
    /// A subscribed consumer between generations: refused with `RebalanceInProgress`.
    Joining,
}

/// Callbacks around a subscribed consumer's rebalances (Kafka's
/// `ConsumerRebalanceListener`). They run inside `poll` (and `close`), with the consumer, so
/// they can commit, seek or read positions.
pub trait RebalanceListener: Send {
    /// Before the partitions are taken away in a rebalance: commit what was processed here.
    fn on_partitions_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]);

    /// After a rebalance, with the partitions now assigned.
    fn on_partitions_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]);

    /// When the member found itself out of the group (its poll timer ran out, or its
    /// session expired): the partitions
    /// may already be someone else's, so committing is pointless. Kafka's default calls
    /// `on_partitions_revoked`; so does this one.
    fn on_partitions_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(consumer, partitions);
    }
}

/// A subscribed consumer's place in its group.
#[derive(Debug, Clone, Default)]
struct Membership {
    topics: Vec<String>,
    /// With `subscribe_pattern`: the topics are the ones matching, looked up at each poll.
    pattern: Option<regex::Regex>,
    member_id: Option<String>,
    /// The generation whose assignment the consumer holds; `None` while (re)joining.
    generation: Option<i32>,
    /// How the group rebalances, as of the last join.
    protocol: Option<RebalanceProtocol>,
    /// Cooperative: the member keeps its partitions (and generation, for commits) but must
    /// join again.
    rejoin: bool,
    /// `enforce_rebalance` was called: the next join asks for a rebalance.
    enforce: bool,
}

/// What one partition's fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    /// Read this many bytes from the log (0 when served from buffered batches).
    Read(usize),
    /// The position was out of range and was reset.
    Reset,
    /// The leader epoch moved: the position was validated (and moved if truncated), or a
    /// read that met the change was dropped. Fetched again at once: it happens once per
    /// change of leader.
    Revalidated,
    /// Nothing read: the first batch at the position is over the limits, and another
    /// partition of the pass read first.
    TooLarge,
}

/// A reset asked for by `seek_to_beginning`/`seek_to_end`, resolved at the next use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    Beginning,
    End,
}

#[derive(Debug)]
struct PartitionState {
    topic: Arc<str>,
    partition: Partition,
    position: Option<u64>,
    /// The leader epoch of the last record returned (or of the committed offset the
    /// position came from): Kafka's `FetchPosition.offsetEpoch`, committed with the
    /// position and checked against the leader's history when its epoch moves (KIP-320).
    /// `None` after a seek or a reset.
    epoch: Option<i32>,
    /// The partition's leader epoch when the position was last validated.
    validated_epoch: Option<i32>,
    reset: Option<Reset>,
    paused: bool,
    /// Batches read and checked but not yet returned in full, so the next poll goes on
    /// without reading (and checking) them again, each with where its records were left
    /// (`None`: at its start). Cleared by every seek.
    buffered: VecDeque<(Batch, Option<RecordCursor>)>,
}

/// The leader epoch stamped on a batch, if any.
fn batch_epoch(batch: &Batch) -> Option<i32> {
    let epoch = batch.header().partition_leader_epoch;
    (epoch >= 0).then_some(epoch)
}

/// Kafka's position validation (KIP-320). Once the partition's leader epoch has moved since
/// the position was last validated, drops what was buffered and asks the leader where the
/// epoch of the last record returned ends in its log. A position past that end lies in
/// records an unclean election cut: the records at the position now follow a different
/// history, and reading on would skip the new ones before it. Then, as Kafka's consumer
/// does, the position moves to the first offset known to diverge under `Earliest` or
/// `Latest` (by the policy when the leader does not know the epoch), and `poll` fails with
/// `LogTruncation` under `None` until the application seeks. True when it moved.
fn validate_position(
    state: &mut PartitionState,
    tp: &TopicPartition,
    position: u64,
    policy: AutoOffsetReset,
) -> Result<bool> {
    let current = state.partition.leader_epoch();
    if state.validated_epoch == Some(current) {
        return Ok(false);
    }
    // Read under another leadership: it may hold records the new leader's log lacks.
    state.buffered.clear();
    let Some(epoch) = state.epoch else {
        state.validated_epoch = Some(current);
        return Ok(false);
    };
    let (end_epoch, end) = state.partition.end_offset_for_epoch(epoch)?;
    let divergent = match end {
        Some(end) if end >= position => {
            state.validated_epoch = Some(current);
            return Ok(false);
        }
        Some(end) => Some(end),
        None => None,
    };
    match (policy, divergent) {
        (AutoOffsetReset::None, _) => {
            return Err(Error::LogTruncation {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: position,
                divergent_offset: divergent,
            });
        }
        (_, Some(end)) => {
            state.position = Some(end);
            state.epoch = (end_epoch >= 0).then_some(end_epoch);
        }
        (AutoOffsetReset::Earliest, None) => {
            state.position = None;
            state.reset = Some(Reset::Beginning);
        }
        (AutoOffsetReset::Latest, None) => {
            state.position = None;
            state.reset = Some(Reset::End);
        }
    }
    state.validated_epoch = Some(current);
    Ok(true)
}

/// Called with the outcome of a [`Consumer::commit_async`].
pub type CommitCallback = Box<dyn FnOnce(Result<()>) + Send>;

/// Kafka's consumer in process. `Send`, used from one thread at a time (as Kafka's).
/// Dropping it closes it (as [`Consumer::close`], errors ignored).
///
/// ```
/// # fn main() -> tarnlog::Result<()> {
/// use std::time::Duration;
/// use tarnlog::{AutoOffsetReset, ConsumerConfig, Log, ProducerConfig, ProducerRecord, TopicPartition};
///
/// let log = Log::temp()?;
/// log.create_topic("events", None)?;
/// let producer = log.producer(ProducerConfig::default())?;
/// producer.send(ProducerRecord::new("events").value("hello"))?.wait()?;
///
/// let mut consumer = log.consumer(
///     ConsumerConfig::default()
///         .group_id("readers")
///         .auto_offset_reset(AutoOffsetReset::Earliest),
/// )?;
/// consumer.assign([TopicPartition::new("events", 0)])?;
/// let records = consumer.poll(Duration::from_secs(1))?;
/// assert_eq!(records.iter().next().unwrap().value.as_deref(), Some(&b"hello"[..]));
/// consumer.commit_sync()?; // the group resumes at offset 1
/// # Ok(())
/// # }
/// ```
pub struct Consumer {
    log: Log,
    config: ConsumerConfig,
    /// Assigned partitions, in assignment order.
    assignment: Vec<TopicPartition>,
    states: HashMap<TopicPartition, PartitionState>,
    /// Index in `assignment` where the next fetch starts.
    next_start: usize,
    last_auto_commit_ms: i64,
    pending_async: VecDeque<PendingCommit>,
    /// An error met by a `poll` that had records to return first: the next `poll` raises it,
    /// unless its partition was sought, paused or unassigned since (see [`Deferred`]).
    deferred: Option<Deferred>,
    /// The last auto-commit's failure, if it failed (auto-commit does not fail `poll`).
    auto_commit_error: Option<Error>,
    /// Set by `subscribe`: the group hands out the assignment.
    membership: Option<Membership>,
    listener: Option<Box<dyn RebalanceListener>>,
    /// Another consumer took this one's `group_instance_id`: every later call fails with
    /// `FencedInstanceId` (Kafka treats it as fatal), so the two never take turns.
    fenced: Option<String>,
    /// Set by [`ConsumerWakeup::wakeup`]: the running `poll`, or the next call that takes
    /// a wake-up, fails with `Wakeup`.
    woken: Arc<AtomicBool>,
    /// When the wait for `fetch_min_bytes` began (Kafka's fetch in flight since then): at
    /// the first poll that found too few bytes, or as a poll returned records; `None`
    /// after a seek or a new assignment.
    fetch_wait_since: Option<Instant>,
    closed: bool,
}

/// Interrupts a [`Consumer`]'s `poll` from another thread: Kafka's `KafkaConsumer.wakeup()`,
/// the usual way to stop a polling loop at shutdown. After [`wakeup`](Self::wakeup) the
/// `poll` waiting now (for records, or for its group's rebalance to complete) returns with
/// [`Error::Wakeup`] within milliseconds, or, if none waits, the next `poll` does, at its
/// start (records it would return stay for the one after); once, after which the consumer
/// polls as before (a rebalance it left goes on). [`Consumer::iter`] ends instead. As in
/// Kafka, the other calls that can throw `WakeupException` take a pending wake-up too,
/// failing at their start with nothing done: `commit_sync`, `commit_sync_offsets`,
/// `committed`, `committed_offsets`, `position`, `offsets_for_times`, `beginning_offsets`,
/// `end_offsets`,
/// `partitions_for` and `list_topics`
/// (not `commit_async`, `seek` or `close`, which Kafka's does not interrupt either). Cheap
/// to clone, `Send + Sync`; it does not keep the log open.
///
/// ```
/// # fn main() -> tarnlog::Result<()> {
/// use std::time::Duration;
/// use tarnlog::{ConsumerConfig, Error, Log, TopicPartition};
/// let log = Log::temp()?;
/// log.create_topic("events", None)?;
/// let mut consumer = log.consumer(ConsumerConfig::default())?;
/// consumer.assign([TopicPartition::new("events", 0)])?;
/// let wakeup = consumer.wakeup_handle();
/// let stopper = std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_millis(50));
///     wakeup.wakeup();
/// });
/// // Nothing arrives: without the wake-up this would wait an hour.
/// match consumer.poll(Duration::from_secs(3600)) {
///     Err(Error::Wakeup) => {}
///     other => panic!("{other:?}"),
/// }
/// stopper.join().unwrap();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerWakeup {
    woken: Arc<AtomicBool>,
    appended: Arc<crate::notify::Notifier>,
}

impl ConsumerWakeup {
    /// Wakes the consumer: its `poll` waiting now, or else its next call that Kafka's
    /// wake-up interrupts (see [`ConsumerWakeup`]), fails with [`Error::Wakeup`].
    pub fn wakeup(&self) {
        self.woken.store(true, Ordering::SeqCst);
        // Every waiter of the log wakes and looks again; this consumer's finds the flag.
        self.appended.notify();
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("assignment", &self.assignment)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

impl Consumer {
    pub(crate) fn new(log: Log, config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let now = log.now_ms();
        Ok(Consumer {
            log,
            config,
            assignment: Vec::new(),
            states: HashMap::new(),
            next_start: 0,
            last_auto_commit_ms: now,
            pending_async: VecDeque::new(),
            deferred: None,
            auto_commit_error: None,
            membership: None,
            listener: None,
            fenced: None,
            woken: Arc::new(AtomicBool::new(false)),
            fetch_wait_since: None,
            closed: false,
        })
    }

    /// A handle that interrupts this consumer's `poll` from another thread (see
    /// [`ConsumerWakeup`]).
    pub fn wakeup_handle(&self) -> ConsumerWakeup {
        ConsumerWakeup {
            woken: Arc::clone(&self.woken),
            appended: self.log.appended_signal(),
        }
    }

    /// Fails with `Wakeup` (once) if a wake-up is pending.
    fn check_wakeup(&self) -> Result<()> {
        if self.woken.swap(false, Ordering::SeqCst) {
            return Err(Error::Wakeup);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(instance) = &self.fenced {
            return Err(Error::FencedInstanceId {
                instance: instance.clone(),
            });
        }
        Ok(())
    }

    /// The consumer's configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Reads exactly these partitions from now on (Kafka's manual `assign`). Partitions
    /// kept from the previous assignment keep their positions; an empty list unassigns.
    ///
    /// # Errors
    /// `UnknownTopic` / `UnknownPartition` (the assignment is then unchanged); `Closed`.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> Result<()> {
        self.check_open()?;
        if self.membership.is_some() {
            return Err(Error::IllegalState {
                reason: "assign and subscribe are exclusive: unsubscribe first",
            });
        }
        self.set_assignment(partitions)
    }

    /// Replaces the assignment, keeping the states of partitions that stay.
    fn set_assignment(
        &mut self,
        partitions: impl IntoIterator<Item = TopicPartition>,
    ) -> Result<()> {
        let mut assignment: Vec<TopicPartition> = Vec::new();
        for tp in partitions {
            if !assignment.contains(&tp) {
                assignment.push(tp);
            }
        }
        // Every new partition is looked up before anything changes.
        let mut fresh = HashMap::new();
        for tp in &assignment {
            let kept = self
                .states
                .get(tp)
                .is_some_and(|s| !s.partition.is_deleted());
            if !kept {
                let partition = self.log.topic(&tp.topic)?.partition(tp.partition)?;
                fresh.insert(tp.clone(), partition);
            }
        }
        let mut states = HashMap::new();
        for tp in &assignment {
            let state = match fresh.remove(tp) {
                Some(partition) => PartitionState {
                    topic: Arc::from(tp.topic.as_str()),
                    partition,
                    position: None,
                    epoch: None,
                    validated_epoch: None,
                    reset: None,
                    paused: false,
                    buffered: VecDeque::new(),
                },
                None => self
                    .states
                    .remove(tp)
                    .unwrap_or_else(|| unreachable!("kept states exist")),
            };
            states.insert(tp.clone(), state);
        }
        self.assignment = assignment;
        self.fetch_wait_since = None;
        self.states = states;
        self.next_start = 0;
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.clone()
    }

    fn state(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState> {
        self.states.get_mut(tp).ok_or_else(|| Error::NotAssigned {
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
    }

    /// Returns records after the positions of the assigned, unpaused partitions — at
    /// least one if any arrive before `timeout`, at most `max_poll_records` — and moves
    /// the positions past them. Runs due auto-commits and pending async commits first. A
    /// subscribed consumer heartbeats while it waits (every third of its session timeout or
    /// poll interval, whichever is shorter), and a
    /// rebalance found then completes within the call, as in Kafka.
    ///
    /// # Errors
    /// `NoAssignment`; `NoOffsetForPartition` / `OffsetOutOfRange` / `LogTruncation` under
    /// `AutoOffsetReset::None` (the last when an unclean leader election cut records the
    /// consumer had read: Kafka's KIP-320 check, run when the partition's leader epoch
    /// moves or a committed offset with an epoch is resumed; under the other policies the
    /// position moves back to where the histories diverge); `Corruption`, `Io`, `Poisoned`,
    /// `PartitionOffline` from
    /// reads or commits; `Closed`. A damaged partition (`Corruption`) stays in the way, as
    /// in Kafka, until it is sought past or paused; one that cannot be read for another
    /// reason does not keep the others from being read: their records come first, and its
    /// error with the next `poll` (not if that partition was sought, paused or unassigned
    /// meanwhile). A deleted topic's partitions are skipped. `Wakeup`
    /// once after [`ConsumerWakeup::wakeup`] (Kafka's `WakeupException`).
    pub fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        self.check_open()?;
        self.check_wakeup()?;
        let max_records = self.config.max_poll_records;
        let deadline = Instant::now().checked_add(timeout);
        // Before any rejoin, while the generation they were made in may still take them.
        self.run_async_commits();
        if self.membership.is_some() {
            if !self.ensure_member(deadline)? {
                return Ok(ConsumerRecords::default());
            }
        } else if self.assignment.is_empty() {
            return Err(Error::NoAssignment);
        }
        if let Some(deferred) = self.deferred.take()
            && self.still_applies(&deferred)
        {
            return Err(deferred.error);
        }
        self.maybe_auto_commit();
        let mut refetched = false;
        // A member heartbeats while it waits (a poll in progress is a poll: its timer does
        // not run out however long the wait on quiet partitions).
        let beat = self.membership.as_ref().map(|_| {
            let session = self
                .config
                .session_timeout_ms
                .min(self.config.max_poll_interval_ms);
            Duration::from_millis((session / 3).max(1))
        });
        let mut next_beat = beat.and_then(|beat| Instant::now().checked_add(beat));
        loop {
            let seen = self.log.appended().seq();
            // After `seen` was read: a wake-up from now on ends the wait below.
            self.check_wakeup()?;
            let hold = self.hold_for_min_bytes();
            let (records, moved, advanced) = match hold {
                Some(_) => (PollBuilder::default(), false, false),
                None => self.fetch(max_records)?,
            };
            if !records.is_empty() {
                // Kafka's consumer sends its next fetch before it returns records: that
                // fetch's wait runs while the application handles them.
                self.fetch_wait_since = Some(Instant::now());
                return Ok(records.finish());
            }
            if advanced && deadline.is_none_or(|d| Instant::now() < d) {
                // Past batches without records (a compacted log's emptied ones), or a
                // position checked after its leader changed: there may be records right
                // there. Each pass moves a position forward or settles an epoch change.
                continue;
            }
            if moved && !refetched {
                // A position was reset: there may be records at the new one already.
                refetched = true;
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(ConsumerRecords::default());
            }
            let wake_by = deadline.unwrap_or(now + Duration::from_secs(3600));
            let wake_by = hold.map_or(wake_by, |until| until.min(wake_by));
            self.log
                .appended()
                .wait_until(seen, next_beat.map_or(wake_by, |b| b.min(wake_by)));
            if let (Some(beat), Some(due)) = (beat, next_beat)
                && Instant::now() >= due
            {
                // A rebalance found here completes here too, as in Kafka's `poll`; the
                // fetch then goes on with the assignment it leaves.
                if !self.ensure_member(deadline)? {
                    return Ok(ConsumerRecords::default());
                }
                next_beat = Instant::now().checked_add(beat);
            }
        }
    }

    /// With `fetch_min_bytes` over 1, until when `poll` must wait for more bytes before it
    /// fetches (Kafka's broker holding a fetch); `None` when it may fetch now: enough bytes
    /// are readable, the wait has passed with some, or a partition needs a fetch anyway
    /// (its position moved by a check after a leader change, records left from the last
    /// read, an error to report).
    fn hold_for_min_bytes(&mut self) -> Option<Instant> {
        let min = self.config.fetch_min_bytes;
        let max_wait = Duration::from_millis(self.config.fetch_max_wait_ms);
        if min <= 1 || max_wait.is_zero() {
            return None;
        }
        let available = self.readable_bytes(min);
        if available >= min {
            return None;
        }
        let now = Instant::now();
        let since = *self.fetch_wait_since.get_or_insert(now);
        match since.checked_add(max_wait) {
            Some(until) if now < until => Some(until),
            // About 292 years: as good as for ever.
            None => Some(now + Duration::from_secs(3600)),
            Some(_) if available > 0 => None,
            Some(_) => {
                // The wait passed with nothing to return: the next one starts now.
                self.fetch_wait_since = Some(now);
                now.checked_add(max_wait)
            }
        }
    }

    /// Bytes of whole batches readable from the positions of the unpaused partitions, at
    /// most `max_partition_fetch_bytes` each (Kafka's `DelayedFetch` caps each partition,
    /// not the total), counted up to `cap`; `cap` when a partition needs a fetch whatever
    /// its bytes (see [`hold_for_min_bytes`](Self::hold_for_min_bytes)).
    /// Positions are resolved and validated first, as a fetch does.
    fn readable_bytes(&mut self, cap: usize) -> usize {
        let mut total = 0usize;
        for index in 0..self.assignment.len() {
            let tp = self.assignment[index].clone();
            let Some(state) = self.states.get(&tp) else {
                continue;
            };
            if state.paused || state.partition.is_deleted() {
                continue;
            }
            let policy = self.config.auto_offset_reset;
            let Ok(position) = self.resolve_position(&tp) else {
                return cap;
            };
            let Some(state) = self.states.get_mut(&tp) else {
                continue;
            };
            // A position checked against a new leader's history may move (KIP-320): the
            // fetch reads from where it lands.
            // Batches a poll finished on their last record hold nothing more to return.
            let unreturned = state
                .buffered
                .iter()
                .any(|(b, _)| b.next_offset() as u64 > position);
            if unreturned || !matches!(validate_position(state, &tp, position, policy), Ok(false)) {
                return cap;
            }
            match state
                .partition
                .read(position, self.config.max_partition_fetch_bytes)
            {
                // A first batch over the limit counts only up to it, as in Kafka's count.
                Ok(read) => {
                    total += read
                        .bytes()
                        .len()
                        .min(self.config.max_partition_fetch_bytes);
                }
                Err(_) => return cap,
            }
            if total >= cap {
                return cap;
            }
        }
        total
    }

    /// A blocking iterator over records for simple loops, forever; stop by breaking out of
    /// the loop, or from another thread with [`ConsumerWakeup::wakeup`], which ends it
    /// (once it has handed out what it holds). A `poll` error is handed out once and ends
    /// it too: while the iterator holds the consumer nothing can change what most errors
    /// name (no `seek` past damage, no `assign`), so a loop that went on past them would
    /// spin on the same error; handle it, then call `iter` again. It polls whenever it has
    /// handed out every record of the last poll (so auto-commit, which runs in `poll`,
    /// never covers a record the loop has not taken), and when it is dropped the positions
    /// go back to the first record not taken: after a break, the next `poll`, `iter` or
    /// commit goes on from there.
    pub fn iter(&mut self) -> Iter<'_> {
        Iter {
            consumer: self,
            buffer: VecDeque::new(),
            ended: false,
        }
    }

    /// One pass over the partitions, in turn from `next_start`: the records, whether a
    /// position was reset on the way, and whether one moved forward over batches holding no
    /// records. An error is returned when no records were read, else kept for the next
    /// `poll` (so that records whose positions moved are never dropped). `Corruption` ends
    /// the pass and stays first in turn; a partition that cannot be read for another reason
    /// does not stop the others: the pass goes on, and the next one starts after it.
    fn fetch(&mut self, max_records: usize) -> Result<(PollBuilder, bool, bool)> {
        let n = self.assignment.len();
        let mut out = PollBuilder::with_capacity(max_records.min(4096));
        let mut bytes_left = self.config.fetch_max_bytes;
        let mut last_with_records = None;
        let mut failed: Option<(usize, Error)> = None;
        let mut moved = false;
        let mut advanced = false;
        // Kafka's `minOneMessage` (KIP-74): until a partition of the pass has read bytes,
        // a first batch larger than the limits is taken whole; after that, not.
        let mut first_read = true;
        // The first partition that read nothing for that: the next pass starts there (as
        // Kafka's consumer moves partitions that returned records to the end of its order).
        let mut too_large = None;
        let policy = self.config.auto_offset_reset;
        for step in 0..n {
            if out.len() >= max_records || bytes_left == 0 {
                break;
            }
            let index = (self.next_start + step) % n;
            let tp = self.assignment[index].clone();
            let state = self.state(&tp)?;
            // A deleted topic's partitions are skipped, not an error (Kafka's consumer
            // waits on its metadata too): a subscribed consumer's leave at the rebalance
            // the deletion starts, an assigned one's at the next `assign`.
            if state.partition.is_deleted() {
                continue;
            }
            if state.paused {
                // Validated all the same (as Kafka does), so that its position can be
                // committed; a failure waits for its resume, and until then it is not.
                if let Some(position) = state.position {
                    let _ = validate_position(state, &tp, position, policy);
                }
                continue;
            }
            let before = out.len();
            let position = state.position;
            let mut read = false;
            match self.fetch_partition(&tp, bytes_left, first_read, max_records, &mut out) {
                Ok(Fetched::Read(bytes)) => {
                    bytes_left = bytes_left.saturating_sub(bytes);
                    first_read &= bytes == 0;
                    read = true;
                }
                Ok(Fetched::Reset) => moved = true,
                // Not counted as a reset: the one refetch a `poll` allows for those may
                // be spent already, and nothing would wake it (a failover appends nothing).
                Ok(Fetched::Revalidated) => advanced = true,
                Ok(Fetched::TooLarge) => {
                    too_large.get_or_insert(index);
                }
                // Damage stays in the way, as in Kafka (whose fetcher throws at the damaged
                // partition's turn, every poll, until it is sought past or paused).
                Err(error) if error.is_corruption() && out.is_empty() => return Err(error),
                Err(error) if error.is_corruption() => {
                    self.defer(&tp, error);
                    break;
                }
                // A partition that cannot be read now (offline, its directory failed, its
                // topic gone) does not keep the others from being read (Kafka's fetcher
                // skips a partition without a leader).
                Err(error) => {
                    if failed.is_none() {
                        failed = Some((index, error));
                    }
                    continue;
                }
            }
            if out.len() > before {
                last_with_records = Some(index);
            } else if read && self.state(&tp)?.position > position {
                advanced = true;
            }
        }
        if let Some(index) = too_large {
            self.next_start = index;
        } else if let Some(index) = last_with_records {
            self.next_start = (index + 1) % n;
        }
        if let Some((index, error)) = failed {
            if out.is_empty() {
                self.next_start = too_large.unwrap_or((index + 1) % n);
                return Err(error);
            }
            let tp = self.assignment[index].clone();
            self.defer(&tp, error);
        }
        Ok((out, moved, advanced))
    }

    /// Keeps `error`, met reading `tp`, for the next `poll`.
    fn defer(&mut self, tp: &TopicPartition, error: Error) {
        let position = self.states.get(tp).and_then(|s| s.position);
        self.deferred = Some(Deferred {
            tp: tp.clone(),
            position,
            error,
        });
    }

    /// Whether a kept failure still stands: its partition assigned, not paused, not sought
    /// since (its position as it was then).
    fn still_applies(&self, deferred: &Deferred) -> bool {
        self.assignment.contains(&deferred.tp)
            && self
                .states
                .get(&deferred.tp)
                .is_some_and(|s| !s.paused && s.position == deferred.position)
    }

    /// Reads records of `tp` into `out`: at most `bytes_left` and `max_partition_fetch_bytes`
    /// of the log, but for a first batch over them, which is read whole when `first_read`
    /// (no partition of the pass read anything yet) and left for a later pass otherwise.
    fn fetch_partition(
        &mut self,
        tp: &TopicPartition,
        bytes_left: usize,
        first_read: bool,
        max_records: usize,
        out: &mut PollBuilder,
    ) -> Result<Fetched> {
        let position = self.resolve_position(tp)?;
        let limit = self.config.max_partition_fetch_bytes.min(bytes_left);
        let reset = self.config.auto_offset_reset;
        let check_crcs = self.config.check_crcs;
        let state = self.state(tp)?;
        if validate_position(state, tp, position, reset)? {
            return Ok(Fetched::Revalidated);
        }
        if state
            .buffered
            .front()
            .is_some_and(|(b, _)| b.base_offset() as u64 > position)
        {
            state.buffered.clear();
        }
        // A batch that a poll filled up on the last record of is done with: dropped now, so
        // that an empty buffer reads from the log (else this fetch would take nothing and
        // the poll would wait for an append although records are there).
        while state
            .buffered
            .front()
            .is_some_and(|(b, _)| b.next_offset() as u64 <= position)
        {
            state.buffered.pop_front();
        }
        let mut bytes = 0;
        if state.buffered.is_empty() {
            let read = match state.partition.read(position, limit) {
                Ok(read) => read,
                Err(Error::OffsetOutOfRange { .. })
                    if state.validated_epoch != Some(state.partition.leader_epoch()) =>
                {
                    // The leader changed while the read ran (an election the read itself
                    // may have started): the position is checked against the new leader's
                    // history (KIP-320) before any reset, which would lose its epoch.
                    return Ok(Fetched::Revalidated);
                }
                Err(Error::OffsetOutOfRange {
                    requested,
                    earliest,
                    latest,
                }) => {
                    state.epoch = None;
                    state.position = Some(match reset {
                        AutoOffsetReset::Earliest => earliest,
                        AutoOffsetReset::Latest => state.partition.high_watermark(),
                        AutoOffsetReset::None => {
                            return Err(Error::OffsetOutOfRange {
                                requested,
                                earliest,
                                latest,
                            });
                        }
                    });
                    return Ok(Fetched::Reset);
                }
                Err(error) => return Err(error),
            };
            if state.validated_epoch != Some(state.partition.leader_epoch()) {
                // The leader changed while the read ran (an election, perhaps started by
                // the read itself): its records may follow a history not checked yet.
                // Dropped; the next pass validates first.
                return Ok(Fetched::Revalidated);
            }
            bytes = read.bytes().len();
            if bytes > limit && !first_read {
                // A read always holds its first batch: alone over the limit here.
                return Ok(Fetched::TooLarge);
            }
            for batch in read.batches().check_crcs(check_crcs) {
                match batch {
                    Ok(batch) => state.buffered.push_back((batch, None)),
                    // The records before a damaged batch are returned first (as Kafka's
                    // fetcher does); the read after them meets it again.
                    Err(_) if !state.buffered.is_empty() => break,
                    Err(error) => return Err(error),
                }
            }
        }
        let mut next = position;
        while let Some((batch, cursor)) = state.buffered.front_mut() {
            let before = next;
            let full = out.take_records(
                batch,
                cursor,
                &state.topic,
                tp.partition,
                &mut next,
                max_records,
            );
            if next > before {
                state.epoch = batch_epoch(batch);
            }
            // Past the records taken before a damaged one, so that they are not returned
            // twice; the next poll meets the damage again, with nothing before it.
            let full = full.inspect_err(|_| state.position = Some(next))?;
            if full {
                state.position = Some(next);
                return Ok(Fetched::Read(bytes));
            }
            // Past the whole batch, including offsets it no longer holds (as Kafka does,
            // the position takes the epoch of every batch it enters, one that compaction
            // emptied too: its end is in that epoch).
            let end = batch.next_offset() as u64;
            if end > next {
                next = end;
                state.epoch = batch_epoch(batch);
            }
            state.buffered.pop_front();
        }
        state.position = Some(next);
        Ok(Fetched::Read(bytes))
    }

    /// The position of `tp`, resolving a pending reset, the committed offset or
    /// `auto_offset_reset` when it has none.
    fn resolve_position(&mut self, tp: &TopicPartition) -> Result<u64> {
        if let Some(position) = self.state(tp)?.position {
            return Ok(position);
        }
        // A pending `seek_to_beginning`/`seek_to_end` needs no committed offset (nor the
        // offsets topic being readable).
        let pending_reset = self.state(tp)?.reset.is_some();
        let committed = match &self.config.group_id {
            Some(group) if !pending_reset => self.log.committed_offset(group, tp)?,
            _ => None,
        };
        let reset = self.config.auto_offset_reset;
        let state = self.state(tp)?;
        let partition = &state.partition;
        state.epoch = None;
        let position = match (state.reset.take(), committed, reset) {
            (Some(Reset::Beginning), _, _) | (None, None, AutoOffsetReset::Earliest) => {
                partition.log_start_offset()
            }
            (Some(Reset::End), _, _) | (None, None, AutoOffsetReset::Latest) => {
                partition.high_watermark()
            }
            (None, Some(commit), _) => {
                // Checked against the leader's history at the next fetch (KIP-320).
                state.epoch = commit.leader_epoch;
                state.validated_epoch = None;
                commit.offset
            }
            (None, None, AutoOffsetReset::None) => {
                return Err(Error::NoOffsetForPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                });
            }
        };
        state.position = Some(position);
        Ok(position)
    }

    /// Sets the next offset `poll` returns for `tp`. A position outside the log is
    /// handled by `auto_offset_reset` at the next poll, as in Kafka.
    ///
    /// # Errors
    /// `NotAssigned`; `Closed`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.check_open()?;
        let state = self.state(tp)?;
        state.position = Some(offset);
        state.epoch = None;
        state.reset = None;
        state.buffered.clear();
        self.fetch_wait_since = None;
        self.forget_deferred(std::slice::from_ref(tp));
        Ok(())
    }

    /// Kafka's `seek(TopicPartition, OffsetAndMetadata)`: moves to `position.offset` with
    /// the leader epoch it carries (a committed offset's, say, read from elsewhere), so that
    /// the next `poll` checks it against the partition's history first (KIP-320), as it
    /// checks a committed offset it resumes: a position past records an unclean leader
    /// election cut moves back to where the histories diverge (or `poll` fails with
    /// `LogTruncation` under `AutoOffsetReset::None`). Without an epoch it is
    /// [`seek`](Self::seek).
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use std::time::Duration;
    /// use tarnlog::{ConsumerConfig, Log, OffsetAndMetadata, TopicPartition};
    ///
    /// let log = Log::temp()?;
    /// log.create_topic("events", None)?;
    /// let partition = log.topic("events")?.partition(0)?;
    /// for value in ["a", "b", "c"] {
    ///     partition.append_values([value])?;
    /// }
    /// // A position saved with its epoch, then the log cut under it.
    /// let mut saved = OffsetAndMetadata::new(3);
    /// saved.leader_epoch = Some(log.describe_topic("events")?.partitions[0].leader_epoch);
    /// partition.truncate_to(1)?;
    /// partition.append_values(["x"])?;
    /// let mut consumer = log.consumer(ConsumerConfig::default())?;
    /// let tp = TopicPartition::new("events", 0);
    /// consumer.assign([tp.clone()])?;
    /// consumer.seek_with_metadata(&tp, &saved)?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// // Back to the cut: the record that replaced the cut ones is not skipped.
    /// assert_eq!(records.iter().next().map(|r| r.offset), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `NotAssigned`; `Closed`.
    pub fn seek_with_metadata(
        &mut self,
        tp: &TopicPartition,
        position: &OffsetAndMetadata,
    ) -> Result<()> {
        self.seek(tp, position.offset)?;
        let state = self.state(tp)?;
        state.epoch = position.leader_epoch;
        // Checked at the next poll whatever the partition's epoch is now.
        state.validated_epoch = None;
        Ok(())
    }

    /// Moves `tp` back to `offset`, a record polled but not taken, keeping the epoch the
    /// position had (a later record's: it can only miss a truncation, never report one
    /// that did not happen).
    fn rewind(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        let state = self.state(tp)?;
        state.position = Some(offset);
        state.reset = None;
        state.buffered.clear();
        self.fetch_wait_since = None;
        Ok(())
    }

    /// Moves to the log start of each partition (all assigned ones for an empty list),
    /// resolved at the next `poll` or `position`.
    ///
    /// # Errors
    /// `NotAssigned`; `Closed`.
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_lazily(partitions, Reset::Beginning)
    }

    /// Moves to the high watermark of each partition (all assigned ones for an empty
    /// list), resolved at the next `poll` or `position`.
    ///
    /// # Errors
    /// `NotAssigned`; `Closed`.
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_lazily(partitions, Reset::End)
    }

    fn seek_lazily(&mut self, partitions: &[TopicPartition], reset: Reset) -> Result<()> {
        self.check_open()?;
        let all = if partitions.is_empty() {
            self.assignment.clone()
        } else {
            partitions.to_vec()
        };
        for tp in &all {
            self.state(tp)?;
        }
        for tp in &all {
            let state = self.state(tp)?;
            state.position = None;
            state.epoch = None;
            state.reset = Some(reset);
            state.buffered.clear();
        }
        self.fetch_wait_since = None;
        self.forget_deferred(&all);
        Ok(())
    }

    /// The offset of the next record `poll` would return for `tp`.
    ///
    /// # Errors
    /// `NotAssigned`; `NoOffsetForPartition` or `LogTruncation` (see [`poll`](Self::poll))
    /// under `AutoOffsetReset::None`; `Closed`. When the leader epoch moved and the check
    /// against the leader cannot run now (its partition offline, say), the position is
    /// returned unchecked; `poll` checks it before reading. `Wakeup` when a wake-up is
    /// pending (see [`ConsumerWakeup`]).
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        self.check_open()?;
        self.state(tp)?;
        self.check_wakeup()?;
        let position = self.resolve_position(tp)?;
        let policy = self.config.auto_offset_reset;
        match validate_position(self.state(tp)?, tp, position, policy) {
            Ok(true) => self.resolve_position(tp),
            Err(error @ Error::LogTruncation { .. }) => Err(error),
            // Unvalidated for now (its partition offline, say): `poll` validates it.
            Ok(false) | Err(_) => Ok(position),
        }
    }

    /// Stops fetching from these partitions until [`resume`](Self::resume); positions
    /// stay.
    ///
    /// # Errors
    /// `NotAssigned` (nothing is paused then); `Closed`.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, true)
    }

    /// Fetches from these partitions again.
    ///
    /// # Errors
    /// `NotAssigned` (nothing is resumed then); `Closed`.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.set_paused(partitions, false)
    }

    fn set_paused(&mut self, partitions: &[TopicPartition], paused: bool) -> Result<()> {
        self.check_open()?;
        for tp in partitions {
            self.state(tp)?;
        }
        for tp in partitions {
            self.state(tp)?.paused = paused;
        }
        if paused {
            self.forget_deferred(partitions);
        }
        Ok(())
    }

    /// Drops a kept failure of one of `partitions` (sought or paused: Kafka's fetcher drops
    /// what it buffered for them, a failed fetch included).
    fn forget_deferred(&mut self, partitions: &[TopicPartition]) {
        if self
            .deferred
            .as_ref()
            .is_some_and(|d| partitions.contains(&d.tp))
        {
            self.deferred = None;
        }
    }

    /// The paused partitions, in assignment order.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|tp| self.states.get(*tp).is_some_and(|s| s.paused))
            .cloned()
            .collect()
    }

    /// For each partition, the first record at or after the timestamp below the high
    /// watermark (Kafka's `offsetsForTimes`), `None` when there is none. Partitions need
    /// not be assigned.
    ///
    /// # Errors
    /// `InvalidArgument` for a negative target time (as Kafka's consumer refuses it; nothing
    /// is looked up); `UnknownTopic` / `UnknownPartition`; `Corruption`; `Closed`; `Wakeup`
    /// when a wake-up is pending.
    pub fn offsets_for_times(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<HashMap<TopicPartition, Option<TimestampOffset>>> {
        self.check_open()?;
        // Before the wake-up check: refused, the call leaves a pending wake-up for the next.
        if let Some((tp, timestamp)) = query.iter().find(|(_, timestamp)| *timestamp < 0) {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "the target time for partition {tp} is {timestamp}: the target time \
                     cannot be negative"
                ),
            });
        }
        self.check_wakeup()?;
        let mut out = HashMap::new();
        for (tp, timestamp) in query {
            let partition = self.log.topic(&tp.topic)?.partition(tp.partition)?;
            let found = partition
                .offset_for_time(*timestamp)?
                .filter(|found| found.offset < partition.high_watermark());
            out.insert(tp.clone(), found);
        }
        Ok(out)
    }

    /// How far `tp`'s position is behind its high watermark (Kafka's `currentLag`):
    /// `None` while the position is not known (before the first `poll` or `position`
    /// resolves it, or after `seek_to_beginning` / `seek_to_end`).
    ///
    /// # Errors
    /// `NotAssigned`; `Closed`.
    pub fn current_lag(&mut self, tp: &TopicPartition) -> Result<Option<u64>> {
        self.check_open()?;
        let state = self.state(tp)?;
        Ok(state
            .position
            .map(|position| state.partition.high_watermark().saturating_sub(position)))
    }

    /// The partitions of `topic`, each with its leader, replicas, in-sync replicas and
    /// offsets (Kafka's `partitionsFor`, as [`Log::describe_topic`] reports them); empty
    /// when the log has no such topic, as Kafka's consumer answers.
    ///
    /// # Errors
    /// `Closed`; `Wakeup` when a wake-up is pending.
    pub fn partitions_for(&self, topic: &str) -> Result<Vec<PartitionDescription>> {
        self.check_open()?;
        self.check_wakeup()?;
        match self.log.describe_topic(topic) {
            Ok(description) => Ok(description.partitions),
            Err(Error::UnknownTopic { .. }) => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// Every topic the application can see (not the internal ones, as
    /// [`Log::topics`]) with its partitions, as [`partitions_for`](Self::partitions_for)
    /// gives them (Kafka's `listTopics`).
    ///
    /// # Errors
    /// `Closed`; `Wakeup` when a wake-up is pending.
    pub fn list_topics(&self) -> Result<HashMap<String, Vec<PartitionDescription>>> {
        self.check_open()?;
        self.check_wakeup()?;
        let mut topics = HashMap::new();
        for name in self.log.topics() {
            // One deleted meanwhile is left out.
            if let Ok(description) = self.log.describe_topic(&name) {
                topics.insert(name, description.partitions);
            }
        }
        Ok(topics)
    }

    /// The log start offset of each partition.
    ///
    /// # Errors
    /// `UnknownTopic` / `UnknownPartition`; `PartitionOffline` (no leader to ask); `Closed`;
    /// `Wakeup` when a wake-up is pending.
    pub fn beginning_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, u64>> {
        self.offsets_of(partitions, Partition::log_start_offset)
    }

    /// The high watermark of each partition: the offset the next visible record gets
    /// (Kafka's `endOffsets` under `read_uncommitted`).
    ///
    /// # Errors
    /// `UnknownTopic` / `UnknownPartition`; `PartitionOffline` (no leader to ask); `Closed`;
    /// `Wakeup` when a wake-up is pending.
    pub fn end_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, u64>> {
        self.offsets_of(partitions, Partition::high_watermark)
    }

    fn offsets_of(
        &self,
        partitions: &[TopicPartition],
        offset: fn(&Partition) -> u64,
    ) -> Result<HashMap<TopicPartition, u64>> {
        self.check_open()?;
        self.check_wakeup()?;
        partitions
            .iter()
            .map(|tp| {
                let partition = self.log.topic(&tp.topic)?.partition(tp.partition)?;
                // Kafka's `ListOffsets` needs the leader; an offline partition's figures
                // (from a replica out of sync, or 0 without one) are no answer.
                if !partition.is_led() {
                    return Err(Error::PartitionOffline {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                    });
                }
                Ok((tp.clone(), offset(&partition)))
            })
            .collect()
    }

    fn group(&self) -> Result<&str> {
        self.config
            .group_id
            .as_deref()
            .ok_or_else(|| Error::InvalidConfig {
                field: "group_id",
                value: "None".into(),
                allowed: "a group id, to commit or fetch committed offsets".into(),
            })
    }

    /// The positions of assigned partitions that have one, within the log (a seek past
    /// the high watermark is not committed until records there are consumed).
    fn positions(&self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        self.assignment
            .iter()
            .filter_map(|tp| {
                let state = self.states.get(tp)?;
                let position = state.position?;
                if state.partition.is_deleted() {
                    return None;
                }
                // One awaiting validation may lie in records an unclean election cut (as
                // Kafka's `allConsumed` leaves such partitions out).
                if state.epoch.is_some()
                    && state.validated_epoch != Some(state.partition.leader_epoch())
                {
                    return None;
                }
                let mut commit = OffsetAndMetadata::new(position);
                commit.leader_epoch = state.epoch;
                (position <= state.partition.high_watermark()).then(|| (tp.clone(), commit))
            })
            .collect()
    }

    /// Commits the current positions of the assigned partitions for the group, durably.
    /// Pending async commits run first, so commits apply in call order.
    ///
    /// # Errors
    /// `InvalidConfig` without a `group_id`; as [`Log::commit_offsets`]; `Closed`;
    /// `Wakeup` when a wake-up is pending (nothing is committed then, pending async
    /// commits included).
    pub fn commit_sync(&mut self) -> Result<()> {
        self.check_open()?;
        let offsets = self.positions();
        self.commit_sync_offsets(offsets)
    }

    /// Commits the given offsets (each the next offset to consume) for the group.
    ///
    /// # Errors
    /// As [`commit_sync`](Self::commit_sync).
    pub fn commit_sync_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, OffsetAndMetadata)>,
    ) -> Result<()> {
        self.check_open()?;
        let group = self.group()?.to_owned();
        self.check_wakeup()?;
        self.run_async_commits();
        let offsets: Vec<_> = offsets.into_iter().collect();
        self.commit(&group, &offsets)
    }

    /// Who this consumer commits as now.
    fn committer(&self) -> Committer {
        match &self.membership {
            None => Committer::Outside,
            Some(Membership {
                member_id: Some(id),
                generation: Some(generation),
                ..
            }) => Committer::Member(id.clone(), *generation),
            Some(_) => Committer::Joining,
        }
    }

    /// Commits as this consumer: as a member of its generation when subscribed (fenced by
    /// the coordinator), else as a client outside the group.
    fn commit(&self, group: &str, offsets: &[(TopicPartition, OffsetAndMetadata)]) -> Result<()> {
        self.commit_as(group, &self.committer(), offsets)
    }

    fn commit_as(
        &self,
        group: &str,
        committer: &Committer,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        match committer {
            Committer::Outside => self.log.commit_offsets(group, offsets),
            Committer::Member(id, generation) => {
                let member = MemberRef {
                    member_id: id,
                    generation: *generation,
                    instance_id: self.config.group_instance_id.as_deref(),
                };
                self.log.commit_offsets_as(group, Some(member), offsets)
            }
            Committer::Joining => Err(Error::RebalanceInProgress),
        }
    }

    /// Commits the current positions without blocking the caller: the commit runs at the
    /// next `poll`, `commit_sync`, `close` or revocation, and `callback` then gets its
    /// outcome (as Kafka runs `commitAsync` callbacks from `poll`). Commits apply in call
    /// order, each as the group generation it was made in: one made before a rebalance is
    /// fenced like any stale commit if the group moved on first.
    ///
    /// # Errors
    /// `InvalidConfig` without a `group_id`; `Closed`. The callback gets `UnknownTopic`
    /// when a topic of the positions was deleted before the commit ran (nothing is then
    /// committed, not even for a topic created again under its name).
    pub fn commit_async(
        &mut self,
        callback: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        self.check_open()?;
        self.group()?;
        let offsets = self.positions();
        let partitions = offsets
            .iter()
            .filter_map(|(tp, _)| Some(self.states.get(tp)?.partition.clone()))
            .collect();
        self.pending_async
            .push_back((self.committer(), offsets, partitions, Box::new(callback)));
        Ok(())
    }

    /// [`commit_async`](Self::commit_async) of the given offsets (each the next offset to
    /// consume), as Kafka's `commitAsync(offsets, callback)`: the commit runs at the next
    /// `poll`, `commit_sync`, `close` or revocation, in call order with the others.
    ///
    /// # Errors
    /// `InvalidConfig` without a `group_id`; `UnknownTopic` / `UnknownPartition` for a
    /// partition the log does not have (nothing is queued then); `Closed`. The callback
    /// gets the commit's own errors, as [`commit_sync_offsets`](Self::commit_sync_offsets)
    /// would return them, and `UnknownTopic` when a topic was deleted before the commit
    /// ran.
    pub fn commit_async_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, OffsetAndMetadata)>,
        callback: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        self.check_open()?;
        self.group()?;
        let offsets: Vec<_> = offsets.into_iter().collect();
        let partitions = offsets
            .iter()
            .map(|(tp, _)| self.log.topic(&tp.topic)?.partition(tp.partition))
            .collect::<Result<_>>()?;
        self.pending_async
            .push_back((self.committer(), offsets, partitions, Box::new(callback)));
        Ok(())
    }

    fn run_async_commits(&mut self) {
        let Some(group) = self.config.group_id.clone() else {
            return;
        };
        while let Some((committer, offsets, partitions, callback)) = self.pending_async.pop_front()
        {
            let gone = partitions.iter().find(|p| p.is_deleted());
            callback(match gone {
                Some(partition) => Err(Error::UnknownTopic {
                    topic: partition.topic_partition().topic,
                }),
                None => self.commit_as(&group, &committer, &offsets),
            });
        }
    }

    /// Commits positions when auto-commit is on and its interval has passed. As in Kafka a
    /// failure does not fail `poll`: it is kept for `auto_commit_error` and the next
    /// interval tries again.
    fn maybe_auto_commit(&mut self) {
        let (true, Some(group)) = (self.config.enable_auto_commit, &self.config.group_id) else {
            return;
        };
        let now = self.log.now_ms();
        let interval = self.config.auto_commit_interval_ms.min(i64::MAX as u64) as i64;
        if now.saturating_sub(self.last_auto_commit_ms) < interval {
            return;
        }
        let group = group.clone();
        let offsets = self.positions();
        self.auto_commit_error = self.commit(&group, &offsets).err();
        self.last_auto_commit_ms = now;
    }

    /// Why the last auto-commit failed, if it did (`None` after a successful one).
    pub fn auto_commit_error(&self) -> Option<&Error> {
        self.auto_commit_error.as_ref()
    }

    /// The offset the group committed for `tp`, if any.
    ///
    /// # Errors
    /// `InvalidConfig` without a `group_id`; `PartitionOffline` while the group's offsets
    /// are unknown (see [`Log::committed_offset`](crate::Log::committed_offset)); `Closed`;
    /// `Wakeup` when a wake-up is pending.
    pub fn committed(&self, tp: &TopicPartition) -> Result<Option<OffsetAndMetadata>> {
        self.check_open()?;
        let group = self.group()?;
        self.check_wakeup()?;
        self.log.committed_offset(group, tp)
    }

    /// The offsets the group committed for each of `partitions` (Kafka's
    /// `committed(Set<TopicPartition>)`), `None` for one without a commit. Partitions need
    /// not be assigned.
    ///
    /// # Errors
    /// `InvalidConfig` without a `group_id`; `Closed`; `Wakeup` when a wake-up is pending.
    pub fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        self.check_open()?;
        let group = self.group()?;
        self.check_wakeup()?;
        partitions
            .iter()
            .map(|tp| Ok((tp.clone(), self.log.committed_offset(group, tp)?)))
            .collect()
    }

    /// Runs pending async commits and, with auto-commit on, commits the positions; a
    /// subscribed (dynamic) member then leaves its group at once. Later calls fail with
    /// `Closed`.
    ///
    /// # Errors
    /// The auto-commit's error, or the failed write of the group's metadata after leaving
    /// (it stays queued for the next write); the consumer is closed regardless.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.run_async_commits();
        let result = if self.membership.is_some() {
            // Revocation commits (auto-commit) and tells the listener; then leave at once.
            let result = self.revoke_all(false);
            let left = self.leave_group();
            result.and(left)
        } else {
            match (&self.config.group_id, self.config.enable_auto_commit) {
                (Some(group), true) => self.commit(group, &self.positions()),
                _ => Ok(()),
            }
        };
        self.closed = true;
        result
    }

    /// Joins the group for `topics`: the group assigns partitions at the next `poll`
    /// (Kafka's `subscribe`). Replaces an earlier subscription. No topics is
    /// [`unsubscribe`](Self::unsubscribe), as in Kafka.
    ///
    /// # Errors
    /// `InvalidConfig` without a `group_id`; `IllegalState` after `assign`; `Closed`; as
    /// `unsubscribe` for no topics.
    pub fn subscribe<S: Into<String>>(
        &mut self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        self.check_open()?;
        self.group()?;
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return self.unsubscribe();
        }
        self.subscribe_to(topics, None)
    }

    /// `subscribe` to `topics` (sorted, without duplicates), from `pattern` if any.
    fn subscribe_to(&mut self, topics: Vec<String>, pattern: Option<regex::Regex>) -> Result<()> {
        self.group()?;
        if self.membership.is_none() && !self.assignment.is_empty() {
            return Err(Error::IllegalState {
                reason: "assign and subscribe are exclusive: assign an empty list first",
            });
        }
        self.change_subscription(topics, pattern);
        Ok(())
    }

    /// Subscribes to every topic whose whole name matches `pattern` (a regular expression,
    /// as Kafka's `subscribe(Pattern)`); topics created or deleted later join or leave the
    /// subscription at the next `poll`, which then rebalances. Internal topics never match.
    ///
    /// # Errors
    /// `InvalidConfig` for a pattern that does not compile or without a `group_id`;
    /// `IllegalState` after `assign`; `Closed`.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let regex =
            regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| Error::InvalidConfig {
                field: "pattern",
                value: format!("{pattern:?}"),
                allowed: format!("a regular expression ({e})"),
            })?;
        self.check_open()?;
        let topics = self.matching(&regex);
        self.subscribe_to(topics, Some(regex))
    }

    /// The topics whose whole name matches, sorted.
    fn matching(&self, regex: &regex::Regex) -> Vec<String> {
        self.log
            .topics()
            .into_iter()
            .filter(|topic| regex.is_match(topic))
            .collect()
    }

    /// With a pattern subscription, takes up topics created or deleted since the last look
    /// (see `change_subscription`); the next join rebalances.
    fn refresh_pattern(&mut self) {
        let Some(regex) = self.membership.as_ref().and_then(|m| m.pattern.clone()) else {
            return;
        };
        let topics = self.matching(&regex);
        if self.membership.as_ref().is_some_and(|m| m.topics == topics) {
            return;
        }
        self.change_subscription(topics, Some(regex));
    }

    /// Takes up a new subscription (`topics`, from `pattern` if any); the next poll rejoins
    /// with it. As Kafka's `onJoinPrepare`: an eager member gives up everything first (its
    /// listener hears it, even owning nothing, once it holds a generation); a cooperative
    /// one gives up only the partitions of topics it no longer subscribes to, and keeps the
    /// others (and their positions), claiming them in its rejoin under its generation.
    fn change_subscription(&mut self, topics: Vec<String>, pattern: Option<regex::Regex>) {
        let changes = self.membership.as_ref().is_some_and(|m| m.topics != topics);
        let eager =
            !crate::group::coordinator::cooperative(&self.config.partition_assignment_strategy);
        let holds_generation = self
            .membership
            .as_ref()
            .is_some_and(|m| m.generation.is_some());
        let had_membership = self.membership.is_some();
        if changes && eager && (!self.assignment.is_empty() || holds_generation) {
            if let Err(error) = self.revoke_all(true) {
                self.auto_commit_error = Some(error);
            }
        } else if changes && !eager {
            let dropped: Vec<TopicPartition> = self
                .assignment
                .iter()
                .filter(|tp| !topics.contains(&tp.topic))
                .cloned()
                .collect();
            if !dropped.is_empty()
                && let Err(error) = self.revoke_some(&dropped)
            {
                self.auto_commit_error = Some(error);
            }
        }
        if had_membership && self.membership.is_none() {
            // The revocation's listener unsubscribed.
            return;
        }
        let membership = self.membership.get_or_insert_with(Membership::default);
        membership.pattern = pattern;
        if membership.topics != topics {
            membership.topics = topics;
            if eager || membership.generation.is_none() {
                membership.generation = None;
            } else {
                membership.rejoin = true;
            }
        }
    }

    /// A cooperative member gives up `partitions` (of topics it no longer subscribes to):
    /// auto-commit of its positions (as Kafka's `onJoinPrepare`), the listener, then the
    /// assignment without them.
    fn revoke_some(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.run_async_commits();
        let mut result = Ok(());
        if self.config.enable_auto_commit
            && self
                .membership
                .as_ref()
                .is_some_and(|m| m.generation.is_some())
            && let Some(group) = self.config.group_id.clone()
        {
            result = self.commit(&group, &self.positions());
        }
        self.with_listener(|l, c| l.on_partitions_revoked(c, partitions));
        self.run_async_commits();
        if self.membership.is_some() {
            // Taken out directly: rebuilding the assignment would look up the kept
            // partitions again, and fail on one of a deleted topic.
            self.assignment.retain(|tp| !partitions.contains(tp));
            self.states.retain(|tp, _| !partitions.contains(tp));
            self.next_start = 0;
        }
        result
    }

    /// As [`subscribe`](Self::subscribe), with callbacks around rebalances.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub fn subscribe_with_listener<S: Into<String>>(
        &mut self,
        topics: impl IntoIterator<Item = S>,
        listener: impl RebalanceListener + 'static,
    ) -> Result<()> {
        self.subscribe(topics)?;
        self.listener = Some(Box::new(listener));
        Ok(())
    }

    /// Asks the group for a rebalance at the next [`poll`](Self::poll), even though nothing
    /// changed (Kafka's `enforceRebalance`, KIP-568): for example when an assignor's
    /// inputs outside the subscription changed. It only marks the consumer; the `poll`
    /// rejoins and the group's round runs as for any other change: every member rejoins, the
    /// leader's assignor runs again and the generation moves on. An eager member gives up
    /// its partitions first (committing them when auto-commit is on, its listener hearing
    /// the revocation); a cooperative one keeps them and only those that move are
    /// revoked. While a rebalance is already running (this consumer's own join included)
    /// it changes nothing. A consumer with a
    /// group that `assign`ed its partitions has no membership to rebalance: nothing
    /// happens, as in Kafka.
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use std::time::Duration;
    /// use tarnlog::{ConsumerConfig, Log, TopicConfig};
    ///
    /// # let dir = tempfile::tempdir().unwrap();
    /// // No wait for more members before the group's first round.
    /// let log = Log::builder()
    ///     .dir(dir.path())
    ///     .group_initial_rebalance_delay_ms(0)
    ///     .open()?;
    /// log.create_topic("jobs", TopicConfig::default().partitions(2))?;
    /// let mut consumer = log.consumer(ConsumerConfig::default().group_id("workers"))?;
    /// consumer.subscribe(["jobs"])?;
    /// while consumer.group_membership().is_none() {
    ///     consumer.poll(Duration::from_millis(10))?;
    /// }
    /// let (_, generation) = consumer.group_membership().unwrap();
    /// consumer.enforce_rebalance()?;
    /// consumer.poll(Duration::from_millis(10))?;
    /// assert_eq!(consumer.group_membership().unwrap().1, generation + 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `IllegalState` without a `group_id` (Kafka's "consumer does not have a group");
    /// `FencedInstanceId` once another consumer took this one's static place; `Closed`.
    pub fn enforce_rebalance(&mut self) -> Result<()> {
        self.check_open()?;
        if self.config.group_id.is_none() {
            return Err(Error::IllegalState {
                reason: "enforce_rebalance needs a group: the consumer has no group_id",
            });
        }
        // A member without a generation (joining) or rejoining is in a round already.
        if let Some(m) = &mut self.membership
            && m.generation.is_some()
            && !m.rejoin
        {
            m.enforce = true;
        }
        Ok(())
    }

    /// Leaves the group and drops the assignment (Kafka's `unsubscribe`).
    ///
    /// # Errors
    /// The revocation's auto-commit error, or the failed write of the group's metadata
    /// (the consumer has left regardless); `Closed`.
    pub fn unsubscribe(&mut self) -> Result<()> {
        self.check_open()?;
        if self.membership.is_none() {
            return self.set_assignment([]);
        }
        let result = self.revoke_all(false);
        let left = self.leave_group();
        self.membership = None;
        self.listener = None;
        result.and(left)
    }

    /// The topics subscribed to (empty when assigned manually).
    pub fn subscription(&self) -> Vec<String> {
        self.membership
            .as_ref()
            .map(|m| m.topics.clone())
            .unwrap_or_default()
    }

    /// The member id and generation while the consumer is in its group.
    pub fn group_membership(&self) -> Option<(String, i32)> {
        let membership = self.membership.as_ref()?;
        Some((membership.member_id.clone()?, membership.generation?))
    }

    /// Makes sure this subscribed consumer holds the assignment of the group's current
    /// generation, rejoining when the group rebalances; `false` when `deadline` came first.
    fn ensure_member(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let group = self.group()?.to_owned();
        self.refresh_pattern();
        let log = self.log.clone();
        let lookup = |topic: &str| log.topic(topic).ok().map(|t| t.shape());
        loop {
            let now = self.log.now_ms();
            // A listener may have unsubscribed the consumer.
            let Some(membership) = self.membership.clone() else {
                return Ok(false);
            };
            // No member joins a group whose offsets (and stored generation) are not read
            // yet, as Kafka's coordinator answers a group it is still loading.
            self.log.ensure_group_read(&group)?;
            self.log.persist_group(&group)?;
            // As Kafka's client: cooperative only when every assignor it offers is.
            let cooperative =
                crate::group::coordinator::cooperative(&self.config.partition_assignment_strategy);
            if let (Some(id), Some(generation), false) = (
                &membership.member_id,
                membership.generation,
                membership.rejoin,
            ) {
                let me = MemberRef {
                    member_id: id,
                    generation,
                    instance_id: self.config.group_instance_id.as_deref(),
                };
                match self.log.coordinator().heartbeat(&group, me, now, &lookup) {
                    Ok(()) if !membership.enforce => return Ok(true),
                    // `enforce_rebalance`: still a member in its generation, it rejoins
                    // as for a round begun elsewhere; the join asks for the round.
                    Err(Error::RebalanceInProgress) | Ok(()) if cooperative => {
                        // Cooperative: keep the partitions; the round tells what moves.
                        if let Some(m) = &mut self.membership {
                            m.rejoin = true;
                        }
                    }
                    Err(Error::RebalanceInProgress | Error::IllegalGeneration { .. }) | Ok(()) => {
                        // Eager: give everything up, then rejoin.
                        if let Err(error) = self.revoke_all(true) {
                            self.auto_commit_error = Some(error);
                        }
                    }
                    Err(Error::UnknownMemberId) => self.lose_all(),
                    Err(error @ Error::FencedInstanceId { .. }) => return Err(self.fence(error)),
                    Err(error) => return Err(error),
                }
                if self.membership.is_none() {
                    // The revocation's listener unsubscribed.
                    return Ok(false);
                }
            }
            let held_since = self
                .membership
                .as_ref()
                .and_then(|m| m.generation)
                .filter(|_| !self.assignment.is_empty());
            let request = JoinRequest {
                member_id: self.membership.as_ref().and_then(|m| m.member_id.clone()),
                instance_id: self.config.group_instance_id.clone(),
                topics: membership.topics.clone(),
                assignors: self.config.partition_assignment_strategy.clone(),
                session_timeout_ms: self.config.session_timeout_ms,
                rebalance_timeout_ms: self.config.max_poll_interval_ms,
                // Kafka's heartbeat thread, which runs while the consumer is open.
                background_heartbeat: true,
                owned: self.assignment.clone(),
                generation: held_since,
                force_rebalance: membership.enforce,
            };
            let joined = self.log.coordinator().join(&group, request, now, &lookup);
            if joined.is_ok()
                && let Some(m) = &mut self.membership
            {
                // The group took the request (or was rebalancing already).
                m.enforce = false;
            }
            // The outcome is taken even when the group's new metadata could not be written
            // (it stays queued): the coordinator counts this member in its round, which a
            // consumer that forgot its member id would leave holding partitions until its
            // poll timer ran out.
            let persisted = self.log.persist_group(&group);
            match joined {
                Ok(JoinOutcome::Joined {
                    member_id,
                    generation,
                    assignment,
                    protocol,
                }) => {
                    self.take_assignment(member_id, generation, &assignment, protocol)?;
                    persisted?;
                    return Ok(true);
                }
                Ok(JoinOutcome::Pending { member_id }) => {
                    if let Some(m) = &mut self.membership {
                        m.member_id = Some(member_id);
                    }
                    persisted?;
                }
                Err(Error::UnknownMemberId) => {
                    // Removed while it held partitions (a cooperative rejoin): they are lost.
                    self.lose_all();
                    continue;
                }
                Err(error @ Error::FencedInstanceId { .. }) => return Err(self.fence(error)),
                Err(error) => return Err(error),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            // A wake-up ends the wait for the round (as Kafka's does); the join goes on at
            // the next `poll`. The coordinator's wait returns within `CLOCK_POLL`.
            self.check_wakeup()?;
            let wait_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            self.log.coordinator().wait(wait_until);
        }
    }

    /// Installs the assignment of a completed round. Eager: the member held nothing, and the
    /// listener hears the whole assignment. Cooperative: only the partitions that moved are
    /// revoked (after a commit, if auto-commit is on) and assigned, kept ones keep their
    /// positions, and a member that gave some up rejoins at once so that their new owners
    /// get them.
    fn take_assignment(
        &mut self,
        member_id: String,
        generation: i32,
        assignment: &[TopicPartition],
        protocol: RebalanceProtocol,
    ) -> Result<()> {
        // Partitions of topics deleted since the round are left out; the deletion starts
        // the next round.
        let assignment: Vec<TopicPartition> = assignment
            .iter()
            .filter(|tp| {
                self.log
                    .topic(&tp.topic)
                    .is_ok_and(|t| tp.partition < t.partitions())
            })
            .cloned()
            .collect();
        let assignment = assignment.as_slice();
        let revoked: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|tp| !assignment.contains(tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = assignment
            .iter()
            .filter(|tp| !self.assignment.contains(tp))
            .cloned()
            .collect();
        if let Some(m) = &mut self.membership {
            m.member_id = Some(member_id);
            m.generation = Some(generation);
            m.protocol = Some(protocol);
            m.rejoin = protocol == RebalanceProtocol::Cooperative && !revoked.is_empty();
        }
        // Revoked partitions are withheld from everyone in the new generation: the member
        // may still commit them (as the new generation) before they go.
        if !revoked.is_empty() {
            if self.config.enable_auto_commit
                && let Some(group) = self.config.group_id.clone()
                && let Err(error) = self.commit(&group, &self.positions())
            {
                self.auto_commit_error = Some(error);
            }
            self.with_listener(|l, c| l.on_partitions_revoked(c, &revoked));
            // Async commits made so far (the listener's too) run before the partitions go.
            self.run_async_commits();
        }
        self.set_assignment(assignment.iter().cloned())?;
        let heard: &[TopicPartition] = match protocol {
            RebalanceProtocol::Eager => assignment,
            RebalanceProtocol::Cooperative => &added,
        };
        self.with_listener(|l, c| l.on_partitions_assigned(c, heard));
        Ok(())
    }

    /// Eager revocation before a rebalance: auto-commit (synchronously, as Kafka's
    /// `onJoinPrepare`), the listener, then no assignment and no generation. The listener
    /// hears it even with nothing owned when the member `rejoins` (Kafka's `onJoinPrepare`
    /// always calls it), only with something owned when it leaves (`onLeavePrepare`).
    fn revoke_all(&mut self, rejoins: bool) -> Result<()> {
        self.run_async_commits();
        let owned = self.assignment.clone();
        let mut result = Ok(());
        let holds_generation = self
            .membership
            .as_ref()
            .is_some_and(|m| m.generation.is_some());
        if self.config.enable_auto_commit
            && holds_generation
            && let Some(group) = self.config.group_id.clone()
        {
            result = self.commit(&group, &self.positions());
        }
        if rejoins || !owned.is_empty() {
            self.with_listener(|l, c| l.on_partitions_revoked(c, &owned));
        }
        self.run_async_commits();
        self.drop_assignment();
        result
    }

    /// Another consumer took this one's static place: its partitions are lost and every
    /// later call fails with `error`.
    fn fence(&mut self, error: Error) -> Error {
        self.lose_all();
        if let Error::FencedInstanceId { instance } = &error {
            self.fenced = Some(instance.clone());
        }
        error
    }

    /// The member was removed from its group: its partitions are lost, not revoked.
    fn lose_all(&mut self) {
        // Pending async commits are refused now; their callbacks hear why.
        self.run_async_commits();
        let owned = self.assignment.clone();
        if !owned.is_empty() {
            self.with_listener(|l, c| l.on_partitions_lost(c, &owned));
        }
        self.run_async_commits();
        self.drop_assignment();
        if let Some(m) = &mut self.membership {
            m.member_id = None;
        }
    }

    fn drop_assignment(&mut self) {
        self.assignment.clear();
        self.states.clear();
        self.next_start = 0;
        if let Some(m) = &mut self.membership {
            m.generation = None;
            m.rejoin = false;
        }
    }

    /// Leaves the group at once. The member is gone either way; an error is the failed
    /// write of the group's new metadata, which stays queued for the next write.
    fn leave_group(&mut self) -> Result<()> {
        let member_id = self.membership.as_mut().and_then(|m| m.member_id.take());
        if self.config.group_instance_id.is_some() {
            // A static member keeps its place until its session expires (KIP-345): from
            // now, as its heartbeats stop with the consumer.
            if let (Some(group), Some(id)) = (&self.config.group_id, member_id) {
                let now = self.log.now_ms();
                self.log.coordinator().stop_heartbeats(group, &id, now);
            }
            return Ok(());
        }
        if let (Some(group), Some(id)) = (&self.config.group_id, member_id) {
            self.log.coordinator().leave(group, &id, self.log.now_ms());
            return self.log.persist_group(group);
        }
        Ok(())
    }

    /// Runs `call` with the listener taken out, so that it may use the consumer. The
    /// listener goes back unless the call unsubscribed or installed another.
    fn with_listener(&mut self, call: impl FnOnce(&mut dyn RebalanceListener, &mut Consumer)) {
        if let Some(mut listener) = self.listener.take() {
            call(listener.as_mut(), self);
            if self.listener.is_none() && self.membership.is_some() {
                self.listener = Some(listener);
            }
        }
    }
}

/// The blocking iterator of [`Consumer::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    consumer: &'a mut Consumer,
    buffer: VecDeque<ConsumerRecord>,
    /// An error or a wake-up ended it.
    ended: bool,
}

impl Iterator for Iter<'_> {
    type Item = Result<ConsumerRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.buffer.pop_front() {
                return Some(Ok(record));
            }
            if self.ended {
                return None;
            }
            match self.consumer.poll(Duration::from_secs(1)) {
                Ok(records) => self.buffer.extend(records),
                // The way to stop a loop over it from another thread.
                Err(Error::Wakeup) => {
                    self.ended = true;
                    return None;
                }
                Err(error) => {
                    self.ended = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

impl Drop for Iter<'_> {
    /// Records polled but not taken go back: each partition's position returns to the
    /// first of them (a partition no longer assigned has no position to return).
    fn drop(&mut self) {
        let mut first: HashMap<TopicPartition, u64> = HashMap::new();
        for record in &self.buffer {
            first
                .entry(TopicPartition::new(&*record.topic, record.partition))
                .or_insert(record.offset);
        }
        for (tp, offset) in first {
            let _ = self.consumer.rewind(&tp, offset);
        }
    }
}
