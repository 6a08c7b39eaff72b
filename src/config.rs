//! Topic configuration: Kafka's names with units last, Kafka's defaults, validated when used.
//!
//! Setters never panic; `validate` (run by `Log::create_topic` and on open) answers
//! [`Error::InvalidConfig`] naming the field and its allowed range.

use std::fmt::Write as _;

use crate::codec::TimestampType;
use crate::error::{Error, Result};

/// When appended data is made durable with `fdatasync` (DESIGN.md §4).
///
/// | policy | an acknowledged record survives |
/// |---|---|
/// | `None` (Kafka's default) | a crash of the process (`kill -9`) |
/// | `EveryBatch` | power loss, unless its directory is lost |
/// | `EveryRecords(n)` / `IntervalMs(m)` | power loss, for what the last fsync covered |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// The operating system decides when to write back; data is synced at `close`/`flush`.
    #[default]
    None,
    /// Sync once at least `n` records were appended since the last sync (Kafka's
    /// `flush.messages`). The append that crosses the threshold waits for the sync.
    EveryRecords(u64),
    /// Sync when the oldest unsynced append is `m` milliseconds old (Kafka's `flush.ms`):
    /// checked on append and by the log's background thread.
    IntervalMs(u64),
    /// Every append waits for an fsync covering it; concurrent appenders share one
    /// `fdatasync` (group commit).
    EveryBatch,
}

/// What happens to a topic's old data (`cleanup.policy`).
///
/// | policy | old segments | older values of a key |
/// |---|---|---|
/// | `Delete` (default) | deleted by `retention_ms` / `retention_bytes` | kept |
/// | `Compact` | kept | removed by the cleaner |
/// | `CompactDelete` | deleted by retention | removed by the cleaner |
///
/// ```
/// # fn main() -> tarnlog::Result<()> {
/// use tarnlog::{BatchBuilder, CleanupPolicy, Log, TopicConfig};
/// let log = Log::temp()?;
/// let config = TopicConfig::default()
///     .segment_bytes(200)
///     .cleanup_policy(CleanupPolicy::Compact);
/// let partition = log.create_topic("prices", config)?.partition(0)?;
/// for (i, key) in ["apple", "pear", "apple", "apple", "pear", "fig"].iter().enumerate() {
///     let mut batch = BatchBuilder::new();
///     batch.push(0, Some(key.as_bytes()), Some(i.to_string().as_bytes()), &[]);
///     partition.append(batch.finish().unwrap())?;
/// }
/// let report = log.maintain()?; // cleans the sealed segments
/// assert!(report.cleaned_records_removed > 0);
/// // The latest value of each key stays, at the offset it was written at.
/// let (mut left, mut next) = (Vec::new(), 0);
/// while next < partition.log_end_offset() {
///     for batch in partition.read(next, 1 << 20)?.batches() {
///         let batch = batch?;
///         for record in batch.records() {
///             let record = record?;
///             left.push((record.offset, record.key.unwrap()));
///         }
///         next = batch.next_offset() as u64;
///     }
/// }
/// assert!(left.iter().any(|(offset, key)| *offset == 3 && &key[..] == b"apple"));
/// assert!(left.iter().all(|(offset, _)| *offset != 0), "the old apple is gone");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Kafka's `delete`: whole segments go once retention says so.
    #[default]
    Delete,
    /// Kafka's `compact`: the cleaner keeps the latest record of each key (and tombstones for
    /// `delete_retention_ms`); records without a key are refused at append.
    Compact,
    /// Kafka's `compact,delete`: both.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether the cleaner compacts the topic.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether retention by time and size deletes the topic's old segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    fn word(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// Configuration of one topic. Start from `TopicConfig::default()` and chain setters.
///
/// ```
/// use tarnlog::{FsyncPolicy, TopicConfig};
/// let config = TopicConfig::default()
///     .partitions(3)
///     .segment_bytes(64 << 20)
///     .fsync(FsyncPolicy::EveryBatch);
/// assert_eq!(config.partitions, 3);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TopicConfig {
    /// Number of partitions. Default 1; allowed 1..=10000.
    pub partitions: u32,
    /// Maximum size of a segment file (`segment.bytes`). Default 1 GiB; allowed 14..=2^31-1.
    pub segment_bytes: u64,
    /// Roll a segment when its first batch is this old (`segment.ms`). Default 7 days;
    /// allowed 1..=2^63-1.
    pub segment_ms: u64,
    /// Maximum size of each index file (`segment.index.bytes`). Default 10 MiB;
    /// allowed 24..=2^31-1 (room for two time-index entries).
    pub segment_index_bytes: u64,
    /// Log bytes between two offset-index entries (`index.interval.bytes`). Default 4096;
    /// allowed 0..=2^31-1.
    pub index_interval_bytes: u64,
    /// Largest record batch accepted (`max.message.bytes`). Default 1048588;
    /// allowed 61..=2^31-1.
    pub max_message_bytes: u64,
    /// Whose timestamp a record keeps (`message.timestamp.type`). Default `CreateTime`.
    pub timestamp_type: TimestampType,
    /// Under `CreateTime`, an append refuses a record whose timestamp is more than this
    /// many ms before the log's clock (`message.timestamp.before.max.ms`, KIP-937), with
    /// [`Error::InvalidTimestamp`]. Default 2^63-1 (no limit); allowed 0..=2^63-1.
    pub timestamp_before_max_ms: i64,
    /// Under `CreateTime`, an append refuses a record whose timestamp is more than this
    /// many ms after the log's clock (`message.timestamp.after.max.ms`). Default 2^63-1
    /// (no limit, Kafka's default before 4.0, whose other defaults tarnlog keeps too, such
    /// as `linger_ms` 0; Kafka 4.0 lowered this one to an hour); allowed 0..=2^63-1.
    pub timestamp_after_max_ms: i64,
    /// When appends are synced (`flush.messages` / `flush.ms`, and group commit).
    /// Default `None`.
    pub fsync: FsyncPolicy,
    /// Replicas of each partition, each in another storage directory
    /// (`replication.factor`). Default 1; at most the log's directory count
    /// (`Error::InvalidReplicationFactor` otherwise).
    pub replication_factor: u32,
    /// In-sync replicas an `acks=All` write needs (`min.insync.replicas`); below it sends
    /// fail with `NotEnoughReplicas`. Default 1; allowed 1..=32767.
    pub min_insync_replicas: u32,
    /// Whether a replica that was not in sync may become leader when no in-sync one is
    /// left, at the cost of acknowledged records (`unclean.leader.election.enable`).
    /// Default false.
    pub unclean_leader_election: bool,
    /// Sealed segments whose newest record is older than this are deleted (`retention.ms`);
    /// a segment whose records carry no timestamp, once its last write is (Kafka's
    /// fallback on the file's modification time). Default 7 days; -1 keeps them forever;
    /// allowed -1..=2^63-1.
    pub retention_ms: i64,
    /// Oldest segments are deleted while the partition would still hold at least this many
    /// bytes without them (`retention.bytes`, per partition). Default -1 (no limit);
    /// allowed -1..=2^63-1.
    pub retention_bytes: i64,
    /// Deletion by retention, compaction, or both (`cleanup.policy`). Default `Delete`.
    pub cleanup_policy: CleanupPolicy,
    /// How long the cleaner keeps a tombstone (a record with a null value) after the first
    /// cleaning that saw it, so that consumers catch the deletion (`delete.retention.ms`).
    /// Default 1 day; allowed 0..=2^63-1.
    pub delete_retention_ms: i64,
    /// A record is not compacted until it is at least this old (`min.compaction.lag.ms`).
    /// Default 0; allowed 0..=2^63-1.
    pub min_compaction_lag_ms: i64,
    /// A record is compacted at the latest this long after it was written, whatever the dirty
    /// ratio (`max.compaction.lag.ms`). Default 2^63-1 (never forced); allowed 1..=2^63-1.
    pub max_compaction_lag_ms: i64,
    /// The cleaner cleans a partition once this share of its log is dirty (written since
    /// its last cleaning; `min.cleanable.dirty.ratio`). Default 0.5; allowed 0..=1.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for TopicConfig {
    fn default() -> TopicConfig {
        TopicConfig {
            partitions: 1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            fsync: FsyncPolicy::None,
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

const I32_MAX: u64 = i32::MAX as u64;

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
}

impl TopicConfig {
    setter!(
        /// Sets `partitions`.
        partitions: u32
    );
    setter!(
        /// Sets `segment_bytes`.
        segment_bytes: u64
    );
    setter!(
        /// Sets `segment_ms`.
        segment_ms: u64
    );
    setter!(
        /// Sets `segment_index_bytes`.
        segment_index_bytes: u64
    );
    setter!(
        /// Sets `index_interval_bytes`.
        index_interval_bytes: u64
    );
    setter!(
        /// Sets `max_message_bytes`.
        max_message_bytes: u64
    );
    setter!(
        /// Sets `timestamp_type`.
        timestamp_type: TimestampType
    );
    setter!(
        /// Sets `timestamp_before_max_ms`.
        timestamp_before_max_ms: i64
    );
    setter!(
        /// Sets `timestamp_after_max_ms`.
        timestamp_after_max_ms: i64
    );
    setter!(
        /// Sets `fsync`.
        fsync: FsyncPolicy
    );
    setter!(
        /// Sets `replication_factor`.
        replication_factor: u32
    );
    setter!(
        /// Sets `min_insync_replicas`.
        min_insync_replicas: u32
    );
    setter!(
        /// Sets `unclean_leader_election`.
        unclean_leader_election: bool
    );
    setter!(
        /// Sets `retention_ms` (-1: forever).
        retention_ms: i64
    );
    setter!(
        /// Sets `retention_bytes` (-1: no limit).
        retention_bytes: i64
    );
    setter!(
        /// Sets `cleanup_policy`.
        cleanup_policy: CleanupPolicy
    );
    setter!(
        /// Sets `delete_retention_ms`.
        delete_retention_ms: i64
    );
    setter!(
        /// Sets `min_compaction_lag_ms`.
        min_compaction_lag_ms: i64
    );
    setter!(
        /// Sets `max_compaction_lag_ms`.
        max_compaction_lag_ms: i64
    );
    setter!(
        /// Sets `min_cleanable_dirty_ratio`.
        min_cleanable_dirty_ratio: f64
    );

    /// Checks every field against its allowed range.
    pub fn validate(&self) -> Result<()> {
        range("partitions", u64::from(self.partitions), 1, 10_000)?;
        range("segment_bytes", self.segment_bytes, 14, I32_MAX)?;
        range("segment_ms", self.segment_ms, 1, i64::MAX as u64)?;
        range("segment_index_bytes", self.segment_index_bytes, 24, I32_MAX)?;
        range(
            "index_interval_bytes",
            self.index_interval_bytes,
            0,
            I32_MAX,
        )?;
        range("max_message_bytes", self.max_message_bytes, 61, I32_MAX)?;
        range(
            "replication_factor",
            u64::from(self.replication_factor),
            1,
            i16::MAX as u64,
        )?;
        range(
            "min_insync_replicas",
            u64::from(self.min_insync_replicas),
            1,
            i16::MAX as u64,
        )?;
        signed_range("retention_ms", self.retention_ms)?;
        signed_range("retention_bytes", self.retention_bytes)?;
        at_least("timestamp_before_max_ms", self.timestamp_before_max_ms, 0)?;
        at_least("timestamp_after_max_ms", self.timestamp_after_max_ms, 0)?;
        at_least("delete_retention_ms", self.delete_retention_ms, 0)?;
        at_least("min_compaction_lag_ms", self.min_compaction_lag_ms, 0)?;
        at_least("max_compaction_lag_ms", self.max_compaction_lag_ms, 1)?;
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(Error::InvalidConfig {
                field: "min_cleanable_dirty_ratio",
                value: self.min_cleanable_dirty_ratio.to_string(),
                allowed: "0..=1".into(),
            });
        }
        match self.fsync {
            FsyncPolicy::EveryRecords(n) => range("fsync.every_records", n, 1, u64::MAX),
            FsyncPolicy::IntervalMs(m) => range("fsync.interval_ms", m, 1, i64::MAX as u64),
            FsyncPolicy::None | FsyncPolicy::EveryBatch => Ok(()),
        }
    }

    /// The limits `timestamp_before_max_ms` and `timestamp_after_max_ms` put on an
    /// appended record's timestamp; `None` when they cannot refuse one (`LogAppendTime`,
    /// or neither limited), so that appends need not read the records for them.
    pub(crate) fn timestamp_limits(&self) -> Option<TimestampLimits> {
        let unlimited =
            self.timestamp_before_max_ms == i64::MAX && self.timestamp_after_max_ms == i64::MAX;
        (self.timestamp_type == TimestampType::CreateTime && !unlimited).then_some(
            TimestampLimits {
                before_max_ms: self.timestamp_before_max_ms,
                after_max_ms: self.timestamp_after_max_ms,
            },
        )
    }

    /// The config as `key=value` words, the form kept in the `meta` file.
    pub(crate) fn to_words(&self) -> String {
        let mut out = String::new();
        let fsync = match self.fsync {
            FsyncPolicy::None => "none".to_owned(),
            FsyncPolicy::EveryBatch => "every_batch".to_owned(),
            FsyncPolicy::EveryRecords(n) => format!("records:{n}"),
            FsyncPolicy::IntervalMs(m) => format!("interval_ms:{m}"),
        };
        let ts = match self.timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        };
        let _ = write!(
            out,
            "partitions={} segment_bytes={} segment_ms={} segment_index_bytes={} \
             index_interval_bytes={} max_message_bytes={} timestamp_type={ts} \
             timestamp_before_max_ms={} timestamp_after_max_ms={} fsync={fsync} \
             replication_factor={} min_insync_replicas={} unclean_leader_election={} \
             retention_ms={} retention_bytes={} cleanup_policy={} delete_retention_ms={} \
             min_compaction_lag_ms={} max_compaction_lag_ms={} min_cleanable_dirty_ratio={}",
            self.partitions,
            self.segment_bytes,
            self.segment_ms,
            self.segment_index_bytes,
            self.index_interval_bytes,
            self.max_message_bytes,
            self.timestamp_before_max_ms,
            self.timestamp_after_max_ms,
            self.replication_factor,
            self.min_insync_replicas,
            self.unclean_leader_election,
            self.retention_ms,
            self.retention_bytes,
            self.cleanup_policy.word(),
            self.delete_retention_ms,
            self.min_compaction_lag_ms,
            self.max_compaction_lag_ms,
            self.min_cleanable_dirty_ratio,
        );
        out
    }

    /// Parses `key=value` words written by `to_words`; `None` names the bad word.
    pub(crate) fn from_words<'a>(
        words: impl Iterator<Item = &'a str>,
    ) -> std::result::Result<TopicConfig, String> {
        let mut config = TopicConfig::default();
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| word.to_owned())?;
            let number = || value.parse::<u64>().map_err(|_| word.to_owned());
            match key {
                "partitions" => config.partitions = value.parse().map_err(|_| word.to_owned())?,
                "segment_bytes" => config.segment_bytes = number()?,
                "segment_ms" => config.segment_ms = number()?,
                "segment_index_bytes" => config.segment_index_bytes = number()?,
                "index_interval_bytes" => config.index_interval_bytes = number()?,
                "max_message_bytes" => config.max_message_bytes = number()?,
                "timestamp_type" => {
                    config.timestamp_type = match value {
                        "CreateTime" => TimestampType::CreateTime,
                        "LogAppendTime" => TimestampType::LogAppendTime,
                        _ => return Err(word.to_owned()),
                    }
                }
                "timestamp_before_max_ms" => {
                    config.timestamp_before_max_ms = value.parse().map_err(|_| word.to_owned())?;
                }
                "timestamp_after_max_ms" => {
                    config.timestamp_after_max_ms = value.parse().map_err(|_| word.to_owned())?;
                }
                "fsync" => config.fsync = parse_fsync(value).ok_or_else(|| word.to_owned())?,
                "replication_factor" => {
                    config.replication_factor = value.parse().map_err(|_| word.to_owned())?;
                }
                "min_insync_replicas" => {
                    config.min_insync_replicas = value.parse().map_err(|_| word.to_owned())?;
                }
                "unclean_leader_election" => {
                    config.unclean_leader_election = value.parse().map_err(|_| word.to_owned())?;
                }
                "retention_ms" => {
                    config.retention_ms = value.parse().map_err(|_| word.to_owned())?;
                }
                "retention_bytes" => {
                    config.retention_bytes = value.parse().map_err(|_| word.to_owned())?;
                }
                "cleanup_policy" => {
                    config.cleanup_policy = match value {
                        "delete" => CleanupPolicy::Delete,
                        "compact" => CleanupPolicy::Compact,
                        "compact,delete" => CleanupPolicy::CompactDelete,
                        _ => return Err(word.to_owned()),
                    }
                }
                "delete_retention_ms" => {
                    config.delete_retention_ms = value.parse().map_err(|_| word.to_owned())?;
                }
                "min_compaction_lag_ms" => {
                    config.min_compaction_lag_ms = value.parse().map_err(|_| word.to_owned())?;
                }
                "max_compaction_lag_ms" => {
                    config.max_compaction_lag_ms = value.parse().map_err(|_| word.to_owned())?;
                }
                "min_cleanable_dirty_ratio" => {
                    config.min_cleanable_dirty_ratio =
                        value.parse().map_err(|_| word.to_owned())?;
                }
                // Unknown keys come from newer versions; ignoring them keeps old data readable.
                _ => {}
            }
        }
        Ok(config)
    }
}

/// A topic's `timestamp_before_max_ms` and `timestamp_after_max_ms` (see
/// [`TopicConfig::timestamp_limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimestampLimits {
    before_max_ms: i64,
    after_max_ms: i64,
}

impl TimestampLimits {
    /// Kafka's `LogValidator.validateTimestamp` for the record at `index` of a batch
    /// appended when the clock read `now`: a record without a timestamp (-1) passes.
    pub(crate) fn check(self, timestamp: i64, now: i64, index: usize) -> Result<()> {
        let earliest = now.saturating_sub(self.before_max_ms);
        let latest = now.saturating_add(self.after_max_ms);
        if timestamp == crate::codec::NO_TIMESTAMP || (earliest..=latest).contains(&timestamp) {
            Ok(())
        } else {
            Err(Error::InvalidTimestamp {
                timestamp,
                index,
                earliest,
                latest,
            })
        }
    }
}

fn parse_fsync(value: &str) -> Option<FsyncPolicy> {
    match value {
        "none" => Some(FsyncPolicy::None),
        "every_batch" => Some(FsyncPolicy::EveryBatch),
        _ => {
            let (kind, n) = value.split_once(':')?;
            let n = n.parse().ok()?;
            match kind {
                "records" => Some(FsyncPolicy::EveryRecords(n)),
                "interval_ms" => Some(FsyncPolicy::IntervalMs(n)),
                _ => None,
            }
        }
    }
}

/// `InvalidConfig` naming `field` unless `value` is -1 (off) or positive.
fn signed_range(field: &'static str, value: i64) -> Result<()> {
    if value >= -1 {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            field,
            value: value.to_string(),
            allowed: format!("-1..={}", i64::MAX),
        })
    }
}

/// `InvalidConfig` naming `field` unless `value >= min`.
fn at_least(field: &'static str, value: i64, min: i64) -> Result<()> {
    if value >= min {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            field,
            value: value.to_string(),
            allowed: format!("{min}..={}", i64::MAX),
        })
    }
}

/// `InvalidConfig` naming `field` and the range unless `min <= value <= max`.
pub(crate) fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            field,
            value: value.to_string(),
            allowed: format!("{min}..={max}"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let config = TopicConfig::default()
            .partitions(7)
            .fsync(FsyncPolicy::IntervalMs(250))
            .timestamp_type(TimestampType::LogAppendTime)
            .cleanup_policy(CleanupPolicy::CompactDelete)
            .min_cleanable_dirty_ratio(0.25)
            .delete_retention_ms(5);
        let words = config.to_words();
        assert_eq!(TopicConfig::from_words(words.split(' ')).unwrap(), config);
    }

    #[test]
    fn compaction_settings_are_checked() {
        let field_of = |config: TopicConfig| match config.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let base = TopicConfig::default;
        assert_eq!(
            field_of(base().min_cleanable_dirty_ratio(1.5)),
            "min_cleanable_dirty_ratio"
        );
        assert_eq!(
            field_of(base().min_cleanable_dirty_ratio(f64::NAN)),
            "min_cleanable_dirty_ratio"
        );
        assert_eq!(
            field_of(base().delete_retention_ms(-1)),
            "delete_retention_ms"
        );
        assert_eq!(
            field_of(base().min_compaction_lag_ms(-5)),
            "min_compaction_lag_ms"
        );
        assert_eq!(
            field_of(base().max_compaction_lag_ms(0)),
            "max_compaction_lag_ms"
        );
        base()
            .cleanup_policy(CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.0)
            .validate()
            .unwrap();
        assert!(TopicConfig::from_words(["cleanup_policy=shred"].into_iter()).is_err());
    }

    #[test]
    fn out_of_range_names_the_field() {
        let err = TopicConfig::default().partitions(0).validate().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "partitions",
                    ..
                }
            ),
            "{err}"
        );
        let err = TopicConfig::default()
            .segment_bytes(1 << 40)
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "segment_bytes",
                    ..
                }
            ),
            "{err}"
        );
        let err = TopicConfig::default()
            .fsync(FsyncPolicy::EveryRecords(0))
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                field: "fsync.every_records",
                ..
            }
        ));
    }
}
