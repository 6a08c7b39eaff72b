//! What `Log::dir_status` and `Log::describe_topic` report: the health of each storage
//! directory, and each partition's leader, epoch and in-sync replicas (Kafka's
//! `describeLogDirs` and `describeTopics`, with directories in the place of brokers).

use std::path::PathBuf;

use crate::config::TopicConfig;

/// One storage directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirStatus {
    /// Its position in [`Log::dirs`](crate::Log::dirs), the index replicas are placed by.
    pub index: usize,
    /// Its path.
    pub path: PathBuf,
    /// False once an I/O or fsync error took it offline (it stays offline until
    /// [`Log::restore_dir`](crate::Log::restore_dir) or a reopen).
    pub online: bool,
    /// Partition replicas it holds.
    pub replicas: usize,
    /// Partitions whose leader it holds.
    pub leaders: usize,
    /// Log bytes of the replicas it holds (the sum of their segments' data, as Kafka's
    /// `describeLogDirs`; preallocated space beyond the data is not counted).
    pub size_bytes: u64,
}

/// One topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDescription {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: TopicConfig,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionDescription>,
}

impl TopicDescription {
    /// Partitions with fewer in-sync replicas than replicas.
    pub fn under_replicated(&self) -> impl Iterator<Item = &PartitionDescription> {
        self.partitions.iter().filter(|p| p.is_under_replicated())
    }

    /// Partitions without a leader.
    pub fn offline(&self) -> impl Iterator<Item = &PartitionDescription> {
        self.partitions.iter().filter(|p| p.is_offline())
    }

    /// Log bytes of the topic's leaders (one copy of its data).
    pub fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.size_bytes).sum()
    }
}

/// One partition. Replicas are named by their directory's index in
/// [`Log::dirs`](crate::Log::dirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition number.
    pub partition: u32,
    /// The directory of its leader; `None` while it is offline.
    pub leader: Option<usize>,
    /// The leader epoch: a replicated partition takes a new one at every change of leader,
    /// at every open and at a truncation (epochs are numbered by the leader's directory).
    pub leader_epoch: i32,
    /// Its replicas' directories, preferred leader first.
    pub replicas: Vec<usize>,
    /// The in-sync replicas' directories, the leader included.
    pub isr: Vec<usize>,
    /// Replicas whose directory is offline.
    pub offline_replicas: Vec<usize>,
    /// The leader's log start offset.
    pub log_start_offset: u64,
    /// The leader's log end offset.
    pub log_end_offset: u64,
    /// The high watermark: offsets below it are visible to consumers.
    pub high_watermark: u64,
    /// The leader's log bytes (the sum of its segments' data).
    pub size_bytes: u64,
    /// Each replica's log bytes, in the order of `replicas`; `None` for a replica whose
    /// directory is offline.
    pub replica_size_bytes: Vec<Option<u64>>,
}

impl PartitionDescription {
    /// Fewer replicas in sync than assigned.
    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    /// No replica leads.
    pub fn is_offline(&self) -> bool {
        self.leader.is_none()
    }
}

/// What one maintenance pass did ([`Log::maintain`](crate::Log::maintain)).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Segments deleted by retention, over all replicas.
    pub segments_deleted: u64,
    /// Log bytes those segments held.
    pub bytes_deleted: u64,
    /// Groups whose committed offsets expired.
    pub expired_groups: Vec<String>,
    /// Partitions the log cleaner compacted.
    pub partitions_cleaned: u64,
    /// Log bytes of the segments it rewrote, over all replicas.
    pub cleaned_bytes_read: u64,
    /// Log bytes of the cleaned segments that replaced them.
    pub cleaned_bytes_written: u64,
    /// Records the cleaning removed (older values of a key, expired tombstones, records
    /// without a key), over all replicas.
    pub cleaned_records_removed: u64,
    /// Partitions whose retention or cleaning failed, with the error (with several
    /// directories, theirs went offline).
    pub failures: Vec<(crate::TopicPartition, crate::Error)>,
}
