//! # tarnlog
//!
//! Apache Kafka's log model as an embeddable Rust library: topics, partitions and offsets
//! over memory-mapped segment files, byte-compatible with Kafka's `RecordBatch` v2 format.
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
//! Producers and consumers work as Kafka's clients do: see [`Producer`] and [`Consumer`].
//!
//! ## Durability
//!
//! | fsync policy of the topic | an acknowledged record survives |
//! |---|---|
//! | [`FsyncPolicy::None`] (Kafka's default) | a crash of the process (`kill -9`) |
//! | [`FsyncPolicy::EveryBatch`] (group commit) | power loss, unless its directory is lost |
//! | [`FsyncPolicy::EveryRecords`] / [`FsyncPolicy::IntervalMs`] | power loss, for what the last fsync covered |
//!
//! A [`Producer`]'s [`Acks`] say when a send is answered: `None` at acceptance, `Leader` once
//! appended and visible, `All` (the default) once the topic's fsync policy covers it. A
//! committed consumer offset ([`Consumer::commit_sync`]) is durable when the call returns,
//! and never points past data that a crash could lose.
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
mod consumer;
mod describe;
mod error;
pub mod group;
mod log;
mod metadata;
mod notify;
mod offsets;
mod ops_model;
mod placement;
mod producer;
mod read;
mod recovery;
mod replica;
mod segment;
pub mod storage;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Batch, BatchBuilder, Compression, Header, Record, TimestampType};
pub use config::{CleanupPolicy, FsyncPolicy, TopicConfig};
pub use consumer::{
    AutoOffsetReset, CommitCallback, Consumer, ConsumerConfig, ConsumerRecord, ConsumerRecords,
    ConsumerWakeup, Iter, OwnedRecords, RebalanceListener, RecordHeaders, RecordRef, RecordViews,
};
pub use describe::{DirStatus, MaintenanceReport, PartitionDescription, TopicDescription};
pub use error::{Error, Location, Result};
pub use group::admin::{GroupDescription, GroupState, MemberDescription, PartitionLag, ResetTo};
pub use group::assignor::{
    Assignor, CooperativeStickyAssignor, RangeAssignor, RebalanceProtocol, RoundRobinAssignor,
    StickyAssignor, Subscription,
};
pub use log::{Log, LogBuilder, Partition, Topic};
pub use offsets::{
    CONSUMER_OFFSETS, OFFSET_METADATA_MAX_BYTES, OffsetAndMetadata, partition_for_group,
};
pub use producer::{
    Acks, Partitioner, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    RoundRobinPartitioner, SendFuture, murmur2, partition_for_key, to_positive,
};
pub use read::{Batches, LogRead};
pub use recovery::{PartitionRecovery, RecoveryReport, Truncation};
pub use types::{AppendInfo, TimestampOffset, TopicPartition};

#[doc(hidden)]
pub mod testing {
    //! Internals exposed for fuzz targets and tests; not part of the stable API.
    pub use crate::ops_model::{MAX_OPS, fuzz_ops_model};
    pub use crate::segment::scan::{IndexState, ScanLimits, ScanOutcome, scan};

    /// Fuzz oracle for `decode_batch`: never panics; an accepted batch decodes fully, to
    /// exactly its record count, with offsets inside its range. Checked on the bytes as
    /// given, and again with the batch length and CRC made to fit them, so that mutations
    /// reach the records' framing instead of stopping at the checksum; that copy's records
    /// are also read by the fast path and by the full reader alone, which must agree, and
    /// `validate_batch` must accept it exactly when they read every record without an error.
    ///
    /// # Panics
    /// When the oracle finds a violation.
    pub fn fuzz_decode_batch(data: &[u8]) {
        use crate::codec::{CRC_OFFSET, LENGTH_OFFSET, LOG_OVERHEAD, RECORD_BATCH_OVERHEAD};
        check_decoded(data);
        if data.len() < RECORD_BATCH_OVERHEAD {
            return;
        }
        let Ok(length) = i32::try_from(data.len() - LOG_OVERHEAD) else {
            return;
        };
        let mut fitted = data.to_vec();
        fitted[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        let crc = crate::codec::compute_crc(&fitted);
        fitted[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        if fitted != data {
            check_decoded(&fitted);
        }
        check_framing(&fitted);
    }

    /// For a batch whose length and CRC fit it: the fast path and the full reader yield the
    /// same records and errors, and `validate_batch` accepts it exactly when that is
    /// `records_count` records and no error.
    fn check_framing(data: &[u8]) {
        use crate::codec::{BatchHeader, RecordView, records, validate_batch};
        fn shown(r: crate::Result<RecordView<'_>>) -> Result<RecordView<'_>, String> {
            r.map_err(|e| e.to_string())
        }
        let Ok(header) = BatchHeader::parse(data, 1 << 20) else {
            return;
        };
        let fast: Vec<_> = records(data, &header).map(shown).collect();
        let mut full = records(data, &header);
        let full: Vec<_> = std::iter::from_fn(|| full.next_full()).map(shown).collect();
        assert_eq!(fast, full, "the fast path and the full reader disagree");
        let read_all =
            fast.iter().all(Result::is_ok) && fast.len() == header.records_count.max(0) as usize;
        assert_eq!(
            validate_batch(data, 1 << 20).is_ok(),
            read_all,
            "validate_batch and the readers disagree"
        );
        // The largest timestamp the append stores as a `CreateTime` batch's `maxTimestamp`
        // (from -1, as Kafka's `LogValidator`), on whichever path found it.
        if let Ok((_, max)) = crate::codec::validate_batch_timestamps(data, 1 << 20) {
            let expected = if header.timestamp_type() == crate::TimestampType::CreateTime {
                fast.iter()
                    .filter_map(|r| r.as_ref().ok().map(|r| r.timestamp))
                    .fold(crate::codec::NO_TIMESTAMP, i64::max)
            } else {
                header.max_timestamp
            };
            assert_eq!(max, expected, "the largest timestamp");
        }
    }

    /// The oracle of [`fuzz_decode_batch`] for one input.
    fn check_decoded(data: &[u8]) {
        let Ok(header) = crate::codec::validate_batch(data, 1 << 20) else {
            return;
        };
        let batch = crate::codec::Batch::new(bytes::Bytes::copy_from_slice(data), 1 << 20)
            .expect("validate_batch accepted it, so Batch::new must");
        let mut count = 0;
        for record in batch.records() {
            let record = record.expect("validate_batch accepted every record");
            assert!(record.offset >= header.base_offset && record.offset <= header.last_offset());
            count += 1;
        }
        assert_eq!(count, header.records_count);
        round_trip(data, &header);
    }

    /// Rebuilds an accepted batch's records with `BatchBuilder` and checks that they decode
    /// to the same records, for a batch a builder could have made (`CreateTime`, not a
    /// control batch, offset deltas `0..count`).
    fn round_trip(data: &[u8], header: &crate::codec::BatchHeader) {
        use crate::codec::{self, BatchBuilder, RecordView, TimestampType};
        if header.is_control() || header.timestamp_type() != TimestampType::CreateTime {
            return;
        }
        let views: Vec<RecordView<'_>> = codec::records(data, header)
            .map(|r| r.expect("validate_batch accepted every record"))
            .collect();
        let base = header.base_offset;
        let relative = |i: usize, v: &RecordView<'_>| v.offset.wrapping_sub(base) == i as i64;
        if views.is_empty() || !views.iter().enumerate().all(|(i, v)| relative(i, v)) {
            return;
        }
        let headers_of = |v: &RecordView<'_>| -> Vec<(String, Option<Vec<u8>>)> {
            v.headers
                .iter()
                .map(|h| h.expect("validate_batch accepted every header"))
                .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                .collect()
        };
        let mut builder = BatchBuilder::new();
        builder.set_producer(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
        );
        for v in &views {
            let owned = headers_of(v);
            let headers: Vec<(&str, Option<&[u8]>)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            builder.push(v.timestamp, v.key, v.value, &headers);
        }
        let rebuilt = builder.finish().expect("records were pushed").to_vec();
        let again_header =
            codec::validate_batch(&rebuilt, usize::MAX).expect("a built batch is valid");
        let again: Vec<RecordView<'_>> = codec::records(&rebuilt, &again_header)
            .map(|r| r.expect("a built batch decodes"))
            .collect();
        assert_eq!(again.len(), views.len());
        for (i, (a, b)) in views.iter().zip(&again).enumerate() {
            assert_eq!(b.offset, i as i64, "record {i}");
            assert_eq!(
                (a.timestamp, a.key, a.value),
                (b.timestamp, b.key, b.value),
                "record {i}"
            );
            assert_eq!(headers_of(a), headers_of(b), "record {i}");
        }
    }

    /// Fuzz oracle for `offsets_record`: arbitrary bytes as one record of
    /// `__consumer_offsets` (the first byte says where the key ends; no value when the rest
    /// is empty). Never panics; what decodes encodes back to bytes that decode the same.
    ///
    /// # Panics
    /// When the oracle finds a violation.
    pub fn fuzz_offsets_record(data: &[u8]) {
        use crate::offsets::{self, Entry};
        let Some((&split, rest)) = data.split_first() else {
            return;
        };
        let (key, value) = rest.split_at(usize::from(split).min(rest.len()));
        let value = (!value.is_empty()).then_some(value);
        let Ok(entry) = offsets::decode(Some(key), value) else {
            return;
        };
        let (key, value) = match &entry {
            Entry::Offset { group, tp, commit } => (
                offsets::encode_key(group, tp),
                commit.as_ref().map(offsets::encode_value),
            ),
            Entry::Group { group, meta } => (
                offsets::encode_group_key(group),
                meta.as_ref().map(offsets::encode_group_value),
            ),
            Entry::Other => return,
        };
        // Encoding refuses only what it could never have written (say, an oversized
        // string); anything it writes must read back as the same entry.
        let (Ok(key), Ok(value)) = (key, value.transpose()) else {
            return;
        };
        let value = value.as_deref();
        let again = offsets::decode(Some(&key), value).expect("an encoded entry decodes");
        assert_eq!(again, entry, "encode then decode changed the entry");
    }

    /// Fuzz oracle for `topic_name`: a name is accepted exactly when it follows Kafka's
    /// rule (1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`), so the directories built from
    /// it stay inside the log's root; never panics.
    ///
    /// # Panics
    /// When the oracle finds a violation.
    pub fn fuzz_topic_name(data: &[u8]) {
        let Ok(name) = std::str::from_utf8(data) else {
            return;
        };
        let kafka = (1..=249).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let accepted = crate::metadata::validate_topic_name(name).is_ok();
        assert_eq!(accepted, kafka, "{name:?}");
        if accepted {
            let dir = std::path::Path::new("/root").join(format!("{name}-0"));
            assert_eq!(
                dir.parent(),
                Some(std::path::Path::new("/root")),
                "{name:?}"
            );
        }
    }

    /// Fuzz oracle for `config_parse`: arbitrary text as a directory's `meta` body and as a
    /// topic config's words. Nothing panics; a `meta` that decodes names only valid topics
    /// with valid configs and encodes back to itself; config words that parse write words
    /// that parse to the same config.
    ///
    /// # Panics
    /// When the oracle finds a violation.
    pub fn fuzz_config_parse(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        crate::metadata::check_meta_text(text);
        if let Ok(config) = crate::TopicConfig::from_words(text.split(' ')) {
            let words = config.to_words();
            let again =
                crate::TopicConfig::from_words(words.split(' ')).expect("written words parse");
            assert_eq!(again.to_words(), words, "config words round trip");
        }
    }

    /// Fuzz oracle for `index_lookup`: a sealed segment of valid batches with arbitrary
    /// bytes as its offset and time indexes. Offset lookups through an index that passes
    /// the open's sanity check find the batch a scan finds or report `Corruption`;
    /// timestamp searches find a record at or after the timestamp (or `None` only when
    /// there is none) or report `Corruption`; nothing panics.
    ///
    /// # Panics
    /// When the oracle finds a violation.
    pub fn fuzz_index_lookup(data: &[u8]) {
        crate::segment::index_fuzz::index_lookup(data);
    }

    /// Fuzz oracle for `recover_segment`: never panics; the valid prefix is self-consistent
    /// (scanning just the prefix accepts all of it with the same end offset). Checked on the
    /// bytes as given, and again with the CRC of every batch their length fields frame made
    /// to fit, so that mutations reach the checks after the checksum.
    ///
    /// # Panics
    /// When the oracle finds a violation.
    pub fn fuzz_recover_segment(data: &[u8]) {
        use crate::codec::{CRC_OFFSET, RECORD_BATCH_OVERHEAD};
        check_recovered(data);
        let mut fitted = data.to_vec();
        let mut position = 0;
        while let Some(size) = fitted
            .get(position..)
            .and_then(crate::codec::peek_batch_size)
            .filter(|&size| size >= RECORD_BATCH_OVERHEAD && size <= fitted.len() - position)
        {
            let batch = &mut fitted[position..position + size];
            let crc = crate::codec::compute_crc(batch);
            batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            position += size;
        }
        if fitted != data {
            check_recovered(&fitted);
        }
    }

    /// The oracle of [`fuzz_recover_segment`] for one input.
    fn check_recovered(data: &[u8]) {
        let limits = ScanLimits {
            max_batch_bytes: 1 << 20,
            max_offset_entries: 1024,
            max_time_entries: 1024,
        };
        let outcome = scan(data, 0, 0, 0, IndexState::new(64), limits);
        assert!(outcome.valid_len <= data.len());
        assert!(outcome.garbage_end >= outcome.valid_len && outcome.garbage_end <= data.len());
        let again = scan(
            &data[..outcome.valid_len],
            0,
            0,
            0,
            IndexState::new(64),
            limits,
        );
        assert!(again.stop.is_none());
        assert_eq!(again.valid_len, outcome.valid_len);
        assert_eq!(again.next_offset, outcome.next_offset);
        assert_eq!(again.offset_index, outcome.offset_index);
    }
}
