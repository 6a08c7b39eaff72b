//! # tarnlog
//!
//! Apache Kafka's log model as an embeddable Rust library: topics, partitions and offsets
//! over memory-mapped segment files, byte-compatible with Kafka's RecordBatch v2 format.
//! No broker, no network, no JVM.
//!
//! ```
//! # fn main() -> tarnlog::Result<()> {
//! use tarnlog::{BatchBuilder, Log, TopicConfig};
//!
//! let log = Log::temp()?;
//! log.create_topic("orders", TopicConfig::default().partitions(3))?;
//! let partition = log.topic("orders")?.partition(1)?;
//!
//! let mut batch = BatchBuilder::new();
//! batch.push(1_700_000_000_000, Some(b"user-10"), Some(br#"{"amount":50}"#), &[("source", Some(b"web"))]);
//! let info = partition.append(batch.finish().expect("one record"))?;
//! assert_eq!(info.base_offset, 0);
//!
//! for record in partition.read(0, 1 << 20)?.records() {
//!     let record = record?;
//!     assert_eq!(record.key.as_deref(), Some(&b"user-10"[..]));
//! }
//! log.close()
//! # }
//! ```
//!
//! ## Durability
//!
//! | fsync policy of the topic | an acknowledged record survives |
//! |---|---|
//! | [`FsyncPolicy::None`] (Kafka's default) | a crash of the process (`kill -9`) |
//! | [`FsyncPolicy::EveryBatch`] (group commit) | power loss, unless its directory is lost |
//! | [`FsyncPolicy::EveryRecords`] / [`FsyncPolicy::IntervalMs`] | power loss, for what the last fsync covered |
//!
//! A failed fsync poisons its directory ([`Error::Poisoned`] until reopened). A full disk is
//! an [`Error::Io`] (`ENOSPC`), never SIGBUS: segment files are allocated before they are
//! written through their mapping. Recovery on open keeps the longest valid prefix and
//! reports what it cut ([`Log::recovery_report`]); damage below the last synced point is
//! [`Error::Corruption`], never cut silently.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod clock;
pub mod codec;
mod config;
mod error;
mod log;
mod metadata;
mod read;
mod recovery;
mod replica;
mod segment;
pub mod storage;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Batch, BatchBuilder, Compression, Header, Record, TimestampType};
pub use config::{FsyncPolicy, TopicConfig};
pub use error::{Error, Location, Result};
pub use log::{Log, LogBuilder, Partition, Topic};
pub use read::{Batches, LogRead};
pub use recovery::{PartitionRecovery, RecoveryReport, Truncation};
pub use types::{AppendInfo, TimestampOffset, TopicPartition};

#[doc(hidden)]
pub mod testing {
    //! Internals exposed for fuzz targets and tests; not part of the stable API.
    pub use crate::segment::scan::{IndexState, ScanLimits, ScanOutcome, scan};
}
