//! The crate's one error type.
//!
//! `Io` and `Corruption` are always different variants: an I/O error says the device or the
//! kernel refused an operation; corruption says bytes were read that cannot be what tarnlog
//! wrote. No conversion turns one into the other.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout tarnlog.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where corrupt bytes were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A position inside an in-memory buffer (decoding bytes handed to the codec).
    Buffer {
        /// Byte position from the start of the buffer.
        position: usize,
    },
    /// A position inside a file.
    File {
        /// The file.
        path: PathBuf,
        /// Byte position from the start of the file.
        position: u64,
    },
}

impl Location {
    /// Moves a buffer location into a file: `base` is the file position of the buffer's first
    /// byte. A file location is returned unchanged.
    #[must_use]
    pub fn in_file(self, path: impl Into<PathBuf>, base: u64) -> Location {
        match self {
            Location::Buffer { position } => Location::File {
                path: path.into(),
                position: base + position as u64,
            },
            file @ Location::File { .. } => file,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Buffer { position } => write!(f, "buffer byte {position}"),
            Location::File { path, position } => write!(f, "{} byte {position}", path.display()),
        }
    }
}

/// Everything that can go wrong in tarnlog.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an I/O operation (including `ENOSPC` for a full disk).
    #[error("I/O error: {op} {}: {source}", path.display())]
    Io {
        /// What tarnlog was doing (`"write"`, `"fsync"`, `"rename"`, …).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// Bytes were read that cannot be what tarnlog wrote.
    #[error("corruption at {location}: {what}: {detail}")]
    Corruption {
        /// Where the bad bytes are.
        location: Location,
        /// What was being read (`"batch CRC"`, `"record key length"`, …).
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A batch uses a compression codec tarnlog cannot decode yet.
    #[error("compressed record batches ({codec}) are not supported yet")]
    UnsupportedCompression {
        /// The codec named by attribute bits 0–2.
        codec: &'static str,
    },
    /// An fsync failed earlier in this directory; it refuses every write until reopened
    /// (or restored with `Log::restore_dir`). From an append whose leader's directory
    /// failed this way, the batch's outcome is unknown (see `Partition::append`).
    #[error("storage directory {} is poisoned after a failed fsync; reopen the log", dir.display())]
    Poisoned {
        /// The poisoned storage directory.
        dir: PathBuf,
    },
    /// Another `Log` (in this process or another) holds the directory's `LOCK`.
    #[error("storage directory {} is locked by another Log", dir.display())]
    Locked {
        /// The locked directory.
        dir: PathBuf,
    },
    /// A topic name breaks Kafka's rule: `[a-zA-Z0-9._-]`, 1–249 characters, not `.` or `..`.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The rejected name.
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },
    /// A configuration value is out of its allowed range.
    #[error("invalid config {field} = {value}: allowed {allowed}")]
    InvalidConfig {
        /// The field's name (Kafka's name with `_`).
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The allowed range or set.
        allowed: String,
    },
    /// A topic asked for more replicas than the log has storage directories (Kafka's
    /// `INVALID_REPLICATION_FACTOR`).
    #[error("replication factor {requested} is larger than the {available} storage directories")]
    InvalidReplicationFactor {
        /// The replication factor asked for.
        requested: u32,
        /// The storage directories the log has.
        available: u32,
    },
    /// `add_partitions` asked for no more partitions than the topic has: the count only
    /// grows (Kafka's `INVALID_PARTITIONS`).
    #[error("topic {topic} has {current} partitions; {requested} is not more")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// Fewer replicas are in sync than the topic's `min_insync_replicas` (Kafka's
    /// `NOT_ENOUGH_REPLICAS`): nothing was written.
    #[error("{in_sync} replicas in sync, {required} required")]
    NotEnoughReplicas {
        /// In-sync replicas, the leader included.
        in_sync: u32,
        /// The topic's `min_insync_replicas`.
        required: u32,
    },
    /// The batch was appended, but afterwards fewer replicas than the topic's
    /// `min_insync_replicas` hold it (Kafka's `NOT_ENOUGH_REPLICAS_AFTER_APPEND`): it is in
    /// the log and may become visible, so a retry can duplicate it.
    #[error("appended, but only {in_sync} replicas in sync, {required} required")]
    NotEnoughReplicasAfterAppend {
        /// In-sync replicas, the leader included.
        in_sync: u32,
        /// The topic's `min_insync_replicas`.
        required: u32,
    },
    /// No replica of the partition can lead: every in-sync replica's directory is offline
    /// (Kafka's `LEADER_NOT_AVAILABLE`; with `unclean_leader_election` a live out-of-sync
    /// replica would lead instead). It comes back when such a directory is restored.
    #[error("partition {topic}-{partition} is offline: no in-sync replica's directory is online")]
    PartitionOffline {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The topic does not exist.
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },
    /// A topic of that name exists already.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// The topic's name.
        topic: String,
    },
    /// The partition number is not below the topic's partition count.
    #[error("topic {topic:?} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// A record batch is larger than the limit that applies to it.
    #[error("record batch of {size} bytes is larger than the maximum {max}")]
    RecordTooLarge {
        /// The batch's size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A read asked for an offset outside `[earliest, latest]`.
    #[error("offset {requested} is out of range [{earliest}, {latest}]")]
    OffsetOutOfRange {
        /// The requested offset.
        requested: u64,
        /// The log start offset.
        earliest: u64,
        /// The log end offset.
        latest: u64,
    },
    /// A batch handed to `append` breaks a rule a leader enforces (Kafka's `InvalidRecordException`).
    #[error("invalid record batch: {reason}")]
    InvalidRecord {
        /// The rule broken.
        reason: String,
    },
    /// A record's `CreateTime` timestamp lies further from the log's clock than its topic's
    /// `timestamp_before_max_ms` / `timestamp_after_max_ms` allow (Kafka's
    /// `InvalidTimestampException`); nothing of its batch is written.
    #[error(
        "timestamp {timestamp} (record {index} of its batch) is out of range: \
         the timestamp should be within [{earliest}, {latest}]"
    )]
    InvalidTimestamp {
        /// The record's timestamp.
        timestamp: i64,
        /// The record's position in its batch (0 for the first; 0 too when a producer's
        /// `send` refused the record before it joined a batch).
        index: usize,
        /// The earliest timestamp allowed: the clock at the append less
        /// `timestamp_before_max_ms`.
        earliest: i64,
        /// The latest timestamp allowed: the clock at the append plus
        /// `timestamp_after_max_ms`.
        latest: i64,
    },
    /// The handle's `Log` was closed.
    #[error("the log is closed")]
    Closed,
    /// A consumer's `poll`, or another of its calls that Kafka's wake-up interrupts (a
    /// commit, an offset query), was interrupted by [`ConsumerWakeup::wakeup`] (Kafka's
    /// `WakeupException`).
    ///
    /// [`ConsumerWakeup::wakeup`]: crate::ConsumerWakeup::wakeup
    #[error("the consumer was woken up (ConsumerWakeup::wakeup)")]
    Wakeup,
    /// A blocking call gave up after its time limit (e.g. a producer `send` waiting for
    /// buffer memory beyond `max_block_ms`, Kafka's `TimeoutException`).
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// What the call was waiting for.
        what: &'static str,
        /// The limit that passed, in milliseconds.
        ms: u64,
    },
    /// A commit's metadata is longer than Kafka's `offset.metadata.max.bytes` (4096).
    #[error("offset metadata of {size} bytes is larger than the maximum {max}")]
    OffsetMetadataTooLarge {
        /// The metadata's size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A consumer's position lies in records its partition no longer has: an unclean
    /// leader election cut them after the consumer read them, and the offsets were given
    /// to other records since (Kafka's `LogTruncationException`, KIP-320). Returned by
    /// `poll` and `position` under `auto_offset_reset = None` until the consumer seeks
    /// (`seek`, `seek_to_beginning`, `seek_to_end`); under the other policies the position
    /// moves to `divergent_offset` instead.
    #[error(
        "{topic}-{partition} was truncated below the position {offset} (first divergent offset {divergent_offset:?})"
    )]
    LogTruncation {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The consumer's position.
        offset: u64,
        /// The first offset where the partition's history and the records the consumer
        /// read differ, when the leader knows it.
        divergent_offset: Option<u64>,
    },
    /// A consumer has no position for a partition, no committed offset, and
    /// `auto_offset_reset` is `None` (Kafka's `NoOffsetForPartitionException`).
    #[error("no offset for {topic}-{partition}: nothing committed and auto_offset_reset is none")]
    NoOffsetForPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A consumer call named a partition that is not assigned to it.
    #[error("{topic}-{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// `poll` on a consumer with no assigned partition.
    #[error("the consumer has no assigned partition; call assign first")]
    NoAssignment,
    /// The consumer group is rebalancing: rejoin (`poll` does) before committing.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// A member's generation is not the group's (Kafka's `ILLEGAL_GENERATION`): it missed a
    /// rebalance, and its commit is refused.
    #[error("generation {generation} is not the group's current generation {current}")]
    IllegalGeneration {
        /// The member's generation.
        generation: i32,
        /// The group's.
        current: i32,
    },
    /// The member is not (or no longer) in the group (Kafka's `UNKNOWN_MEMBER_ID`), or a
    /// client outside the group committed while the group has members.
    #[error("unknown member of the group")]
    UnknownMemberId,
    /// Another consumer joined the group under this consumer's `group_instance_id` and took
    /// its place (Kafka's `FENCED_INSTANCE_ID`): two live consumers must not share one. The
    /// fenced consumer cannot continue; close it.
    #[error("group instance id {instance:?} was taken over by another consumer")]
    FencedInstanceId {
        /// The instance id.
        instance: String,
    },
    /// A member's assignors have none in common with the group's other members (Kafka's
    /// `INCONSISTENT_GROUP_PROTOCOL`); the member is not admitted.
    #[error("no assignor in common with the group: this member offers {offered:?}")]
    InconsistentGroupProtocol {
        /// The assignor names this member offered.
        offered: Vec<String>,
    },
    /// An admin change that needs a group without members (reset, delete).
    #[error("group {group:?} has active members")]
    GroupNotEmpty {
        /// The group.
        group: String,
    },
    /// A call that does not fit the client's state (Kafka's `IllegalStateException`), such
    /// as `assign` after `subscribe`, or a producer's `flush` in a waker on its sender
    /// thread.
    #[error("illegal state: {reason}")]
    IllegalState {
        /// What is wrong.
        reason: &'static str,
    },
    /// An argument a call cannot take (Kafka's `IllegalArgumentException`), such as a
    /// negative target time for `offsets_for_times`.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// Clients may not write to an internal topic such as `__consumer_offsets`.
    #[error("topic {topic:?} is internal; clients cannot write to it")]
    InternalTopic {
        /// The topic.
        topic: String,
    },
    /// The topic's configuration forbids the request (Kafka's `PolicyViolationException`),
    /// e.g. `delete_records` on a topic whose `cleanup_policy` does not delete.
    #[error("topic {topic:?}: {reason}")]
    PolicyViolation {
        /// The topic.
        topic: String,
        /// What the policy forbids.
        reason: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// True for errors where the same call may succeed later without reopening anything:
    /// a full disk may be freed, a lock may be released.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            Error::Locked { .. }
            | Error::NotEnoughReplicas { .. }
            | Error::PartitionOffline { .. } => true,
            _ => false,
        }
    }

    /// True when the error is the operating system's "no space left on device".
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }

    /// An equal error for a second receiver (one failed batch answers every record's
    /// future). An `Io` source keeps its OS error code, or else its kind and message.
    #[expect(
        clippy::too_many_lines,
        reason = "one flat arm per variant; splitting it would only scatter the list"
    )]
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: source.raw_os_error().map_or_else(
                    || io::Error::new(source.kind(), source.to_string()),
                    io::Error::from_raw_os_error,
                ),
            },
            Error::Corruption {
                location,
                what,
                detail,
            } => Error::Corruption {
                location: location.clone(),
                what,
                detail: detail.clone(),
            },
            Error::UnsupportedCompression { codec } => Error::UnsupportedCompression { codec },
            Error::Poisoned { dir } => Error::Poisoned { dir: dir.clone() },
            Error::Locked { dir } => Error::Locked { dir: dir.clone() },
            Error::InvalidTopicName { name, reason } => Error::InvalidTopicName {
                name: name.clone(),
                reason,
            },
            Error::InvalidConfig {
                field,
                value,
                allowed,
            } => Error::InvalidConfig {
                field,
                value: value.clone(),
                allowed: allowed.clone(),
            },
            Error::UnknownTopic { topic } => Error::UnknownTopic {
                topic: topic.clone(),
            },
            Error::TopicExists { topic } => Error::TopicExists {
                topic: topic.clone(),
            },
            Error::UnknownPartition {
                topic,
                partition,
                partitions,
            } => Error::UnknownPartition {
                topic: topic.clone(),
                partition: *partition,
                partitions: *partitions,
            },
            Error::RecordTooLarge { size, max } => Error::RecordTooLarge {
                size: *size,
                max: *max,
            },
            Error::OffsetOutOfRange {
                requested,
                earliest,
                latest,
            } => Error::OffsetOutOfRange {
                requested: *requested,
                earliest: *earliest,
                latest: *latest,
            },
            Error::InvalidRecord { reason } => Error::InvalidRecord {
                reason: reason.clone(),
            },
            Error::InvalidTimestamp {
                timestamp,
                index,
                earliest,
                latest,
            } => Error::InvalidTimestamp {
                timestamp: *timestamp,
                index: *index,
                earliest: *earliest,
                latest: *latest,
            },
            Error::InvalidArgument { reason } => Error::InvalidArgument {
                reason: reason.clone(),
            },
            Error::Closed => Error::Closed,
            Error::Wakeup => Error::Wakeup,
            Error::Timeout { what, ms } => Error::Timeout { what, ms: *ms },
            Error::InternalTopic { topic } => Error::InternalTopic {
                topic: topic.clone(),
            },
            Error::PolicyViolation { topic, reason } => Error::PolicyViolation {
                topic: topic.clone(),
                reason: reason.clone(),
            },
            Error::NotAssigned { topic, partition } => Error::NotAssigned {
                topic: topic.clone(),
                partition: *partition,
            },
            Error::NoAssignment => Error::NoAssignment,
            Error::RebalanceInProgress => Error::RebalanceInProgress,
            Error::IllegalGeneration {
                generation,
                current,
            } => Error::IllegalGeneration {
                generation: *generation,
                current: *current,
            },
            Error::UnknownMemberId => Error::UnknownMemberId,
            Error::NotEnoughReplicas { in_sync, required } => Error::NotEnoughReplicas {
                in_sync: *in_sync,
                required: *required,
            },
            Error::PartitionOffline { topic, partition } => Error::PartitionOffline {
                topic: topic.clone(),
                partition: *partition,
            },
            Error::NotEnoughReplicasAfterAppend { in_sync, required } => {
                Error::NotEnoughReplicasAfterAppend {
                    in_sync: *in_sync,
                    required: *required,
                }
            }
            Error::InvalidPartitions {
                topic,
                current,
                requested,
            } => Error::InvalidPartitions {
                topic: topic.clone(),
                current: *current,
                requested: *requested,
            },
            Error::InvalidReplicationFactor {
                requested,
                available,
            } => Error::InvalidReplicationFactor {
                requested: *requested,
                available: *available,
            },
            Error::FencedInstanceId { instance } => Error::FencedInstanceId {
                instance: instance.clone(),
            },
            Error::InconsistentGroupProtocol { offered } => Error::InconsistentGroupProtocol {
                offered: offered.clone(),
            },
            Error::GroupNotEmpty { group } => Error::GroupNotEmpty {
                group: group.clone(),
            },
            Error::IllegalState { reason } => Error::IllegalState { reason },
            Error::OffsetMetadataTooLarge { size, max } => Error::OffsetMetadataTooLarge {
                size: *size,
                max: *max,
            },
            Error::NoOffsetForPartition { topic, partition } => Error::NoOffsetForPartition {
                topic: topic.clone(),
                partition: *partition,
            },
            Error::LogTruncation {
                topic,
                partition,
                offset,
                divergent_offset,
            } => Error::LogTruncation {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                divergent_offset: *divergent_offset,
            },
        }
    }

    /// Re-anchors a corruption found in a buffer at its place in a file; other errors pass.
    pub(crate) fn in_file(self, path: &std::path::Path, base: u64) -> Error {
        match self {
            Error::Corruption {
                location,
                what,
                detail,
            } => Error::Corruption {
                location: location.in_file(path, base),
                what,
                detail,
            },
            other => other,
        }
    }
}
