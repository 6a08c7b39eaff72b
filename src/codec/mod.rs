//! Kafka's on-disk and on-wire record format, `RecordBatch` v2 (magic 2), without compression.
//!
//! The codec is the only place that knows the byte layout. It decodes untrusted bytes: every
//! malformed input becomes [`Error::Corruption`] with the
//! buffer position of the bad field, never a panic, and no allocation is sized by a length
//! read from the input before that length has been checked against the bytes present.
//!
//! Layout (all integers big-endian; see the `*_OFFSET` constants):
//! a 61-byte batch header, then `records_count` records, each framed by a zig-zag varint length.
//! The CRC-32C covers bytes `[ATTRIBUTES_OFFSET, end)`, so `baseOffset`, `batchLength`,
//! `partitionLeaderEpoch` and `magic` can be patched without recomputing it.

mod batch;
mod builder;
mod crc;
mod record;
mod varint;

pub use batch::{
    Batch, BatchHeader, compute_crc, peek_batch_size, set_base_offset, set_log_append_time,
    set_partition_leader_epoch, validate_batch, verify_crc,
};
pub(crate) use batch::{max_timestamp_of, validate_batch_timestamps};
pub use builder::BatchBuilder;
pub(crate) use crc::{crc32c, crc32c_parts};
pub use record::{Header, HeaderIter, HeadersView, Record, RecordIter, RecordView, records};
pub(crate) use record::{RecordCursor, rebase_record};

use crate::error::{Error, Location};

/// Bytes before a batch's length-delimited part: `baseOffset` (8) + `batchLength` (4).
pub const LOG_OVERHEAD: usize = 12;
/// Bytes needed to read `baseOffset`, `batchLength`, `partitionLeaderEpoch` and `magic`.
pub const HEADER_SIZE_UP_TO_MAGIC: usize = 17;
/// Size of the fixed v2 batch header; the first record starts here.
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// The only batch format version tarnlog reads and writes.
pub const MAGIC_V2: i8 = 2;

/// Offset of `baseOffset` (i64).
pub const BASE_OFFSET_OFFSET: usize = 0;
/// Offset of `batchLength` (i32): the number of bytes after this field.
pub const LENGTH_OFFSET: usize = BASE_OFFSET_OFFSET + size_of::<i64>();
/// Offset of `partitionLeaderEpoch` (i32).
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = LENGTH_OFFSET + size_of::<i32>();
/// Offset of `magic` (i8).
pub const MAGIC_OFFSET: usize = PARTITION_LEADER_EPOCH_OFFSET + size_of::<i32>();
/// Offset of `crc` (u32, CRC-32C of bytes `[ATTRIBUTES_OFFSET, end)`).
pub const CRC_OFFSET: usize = MAGIC_OFFSET + size_of::<i8>();
/// Offset of `attributes` (i16); the CRC-covered part starts here.
pub const ATTRIBUTES_OFFSET: usize = CRC_OFFSET + size_of::<u32>();
/// Offset of `lastOffsetDelta` (i32).
pub const LAST_OFFSET_DELTA_OFFSET: usize = ATTRIBUTES_OFFSET + size_of::<i16>();
/// Offset of `baseTimestamp` (i64).
pub const BASE_TIMESTAMP_OFFSET: usize = LAST_OFFSET_DELTA_OFFSET + size_of::<i32>();
/// Offset of `maxTimestamp` (i64).
pub const MAX_TIMESTAMP_OFFSET: usize = BASE_TIMESTAMP_OFFSET + size_of::<i64>();
/// Offset of `producerId` (i64).
pub const PRODUCER_ID_OFFSET: usize = MAX_TIMESTAMP_OFFSET + size_of::<i64>();
/// Offset of `producerEpoch` (i16).
pub const PRODUCER_EPOCH_OFFSET: usize = PRODUCER_ID_OFFSET + size_of::<i64>();
/// Offset of `baseSequence` (i32).
pub const BASE_SEQUENCE_OFFSET: usize = PRODUCER_EPOCH_OFFSET + size_of::<i16>();
/// Offset of `recordsCount` (i32).
pub const RECORDS_COUNT_OFFSET: usize = BASE_SEQUENCE_OFFSET + size_of::<i32>();

const _: () = assert!(LENGTH_OFFSET + size_of::<i32>() == LOG_OVERHEAD);
const _: () = assert!(MAGIC_OFFSET + size_of::<i8>() == HEADER_SIZE_UP_TO_MAGIC);
const _: () = assert!(ATTRIBUTES_OFFSET == 21);
const _: () = assert!(RECORDS_COUNT_OFFSET + size_of::<i32>() == RECORD_BATCH_OVERHEAD);

/// `baseTimestamp`/`maxTimestamp`/record timestamp meaning "no timestamp".
pub const NO_TIMESTAMP: i64 = -1;
/// `producerId` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch from a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;
/// `partitionLeaderEpoch` before a leader has stamped the batch.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// Attribute bits 0–2.
const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: 1 = `LogAppendTime`.
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
/// Attribute bit 4.
const TRANSACTIONAL_MASK: i16 = 0x10;
/// Attribute bit 5.
const CONTROL_MASK: i16 = 0x20;
/// Attribute bit 6: `baseTimestamp` holds the delete horizon the log cleaner set (KIP-534).
pub(crate) const DELETE_HORIZON_MASK: i16 = 0x40;
/// Bits 7–15 are unassigned in v2; a set one means the header is not what a writer produced.
const UNUSED_ATTRIBUTES_MASK: i16 = !0x7F;

/// The codec named by a batch's attribute bits 0–2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// 0: records stored as they are.
    None,
    /// 1: gzip.
    Gzip,
    /// 2: Snappy (xerial framing).
    Snappy,
    /// 3: LZ4 frame.
    Lz4,
    /// 4: Zstandard.
    Zstd,
}

impl Compression {
    /// Kafka's name for the codec (`"none"`, `"gzip"`, `"snappy"`, `"lz4"`, `"zstd"`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec for attribute bits 0–2, or `None` for the unassigned values 5–7.
    fn from_bits(bits: i16) -> Option<Compression> {
        match bits & COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Set by the producer; each record carries its own.
    #[default]
    CreateTime,
    /// Set by the broker on append; every record's timestamp is the batch's `maxTimestamp`.
    LogAppendTime,
}

/// Builds the corruption error for a bad field found at `position` of the input buffer.
/// Cold so that the formatting stays off the decoding fast paths.
#[cold]
#[inline(never)]
pub(crate) fn corruption(position: usize, what: &'static str, detail: String) -> Error {
    Error::Corruption {
        location: Location::Buffer { position },
        what,
        detail,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
