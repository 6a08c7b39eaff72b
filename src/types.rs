//! Small value types shared by the API.

use std::fmt;

/// A topic and a partition number: Kafka's `TopicPartition`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// Builds one.
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// Records in the batch.
    pub record_count: u32,
    /// The batch's largest timestamp as stored (the append time under `LogAppendTime`).
    pub max_timestamp: i64,
    /// The time the log stamped, when the topic uses `LogAppendTime`.
    pub log_append_time: Option<i64>,
    /// Bytes the batch takes in the log.
    pub size_bytes: u32,
}

/// A timestamp and the first offset at or after it, answered by `offset_for_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The timestamp of the record found.
    pub timestamp: i64,
    /// Its offset.
    pub offset: u64,
}
