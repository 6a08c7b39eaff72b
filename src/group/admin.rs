//! What the admin calls say about consumer groups (Kafka's `kafka-consumer-groups` view):
//! [`Log::list_groups`](crate::Log::list_groups),
//! [`Log::describe_group`](crate::Log::describe_group),
//! [`Log::reset_offsets`](crate::Log::reset_offsets) and
//! [`Log::delete_group`](crate::Log::delete_group).

use crate::offsets::OffsetAndMetadata;
use crate::types::TopicPartition;

/// A group's state, with Kafka's names. A group known only by its committed offsets (no
/// member) is `Empty`; an unknown group is `Dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; committed offsets may exist.
    Empty,
    /// Members are (re)joining.
    PreparingRebalance,
    /// Members joined; the assignment is being handed out.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// The group does not exist (or was deleted).
    Dead,
}

/// One partition in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub tp: TopicPartition,
    /// What the group committed for it.
    pub committed: OffsetAndMetadata,
    /// Its high watermark: the offset the next visible record gets.
    pub end_offset: u64,
    /// Records the group has yet to consume: `end_offset - committed` (0 when the commit
    /// is at or past the end).
    pub lag: u64,
}

/// A member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Its member id.
    pub member_id: String,
    /// Its partitions in the current generation (empty while the group rebalances).
    pub assignment: Vec<TopicPartition>,
}

/// A group as [`Log::describe_group`](crate::Log::describe_group) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Its state.
    pub state: GroupState,
    /// Its generation, while it has members.
    pub generation: Option<i32>,
    /// Its members, by member id.
    pub members: Vec<MemberDescription>,
    /// Its committed partitions, sorted, with their end offsets and lag.
    pub offsets: Vec<PartitionLag>,
}

impl GroupDescription {
    /// Total lag over the group's partitions.
    pub fn total_lag(&self) -> u64 {
        self.offsets.iter().map(|p| p.lag).sum()
    }
}

/// Where [`Log::reset_offsets`](crate::Log::reset_offsets) moves a group's committed
/// offsets (the `--to-*` options of `kafka-consumer-groups --reset-offsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// This offset, clamped to `[log start, high watermark]` as Kafka's tool does.
    Offset(u64),
    /// The first record at or after this timestamp (ms), or the high watermark if none.
    Timestamp(i64),
}
