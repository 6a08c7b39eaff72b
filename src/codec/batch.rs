//! The 61-byte v2 batch header, whole-batch checks (length, CRC, record framing) and the
//! in-place patches a broker applies on append.
//!
//! Invariants: a [`BatchHeader`] returned by [`BatchHeader::parse`] has magic 2, a length of at
//! least the header's and at most the caller's limit, no unassigned attribute bits, and
//! `base_offset + last_offset_delta + 1` fits an i64, so the offset accessors cannot overflow.
//! A [`Batch`] always holds exactly one batch whose length field and CRC match its bytes.

use bytes::Bytes;

use crate::codec::record::{Record, RecordIter, records};
use crate::codec::{
    ATTRIBUTES_OFFSET, BASE_OFFSET_OFFSET, BASE_SEQUENCE_OFFSET, BASE_TIMESTAMP_OFFSET,
    COMPRESSION_MASK, CONTROL_MASK, CRC_OFFSET, Compression, DELETE_HORIZON_MASK,
    HEADER_SIZE_UP_TO_MAGIC, LAST_OFFSET_DELTA_OFFSET, LENGTH_OFFSET, LOG_OVERHEAD, MAGIC_OFFSET,
    MAGIC_V2, MAX_TIMESTAMP_OFFSET, NO_TIMESTAMP, PARTITION_LEADER_EPOCH_OFFSET,
    PRODUCER_EPOCH_OFFSET, PRODUCER_ID_OFFSET, RECORD_BATCH_OVERHEAD, RECORDS_COUNT_OFFSET,
    TIMESTAMP_TYPE_MASK, TRANSACTIONAL_MASK, TimestampType, UNUSED_ATTRIBUTES_MASK, corruption,
};
use crate::error::{Error, Result};

/// Smallest legal `batchLength`: the header after the length field, with no records.
const MIN_BATCH_LENGTH: i32 = (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32;

/// Parsed fixed header (no CRC check). Fields are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (`baseOffset`).
    pub base_offset: i64,
    /// Bytes after the length field (`batchLength`): the batch's size minus [`LOG_OVERHEAD`].
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch (`partitionLeaderEpoch`).
    pub partition_leader_epoch: i32,
    /// Format version; always [`MAGIC_V2`] once parsed.
    pub magic: i8,
    /// Stored CRC-32C of bytes `[ATTRIBUTES_OFFSET, end)`.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset` (`lastOffsetDelta`).
    pub last_offset_delta: i32,
    /// Timestamp the record deltas are relative to (`baseTimestamp`).
    pub base_timestamp: i64,
    /// Largest record timestamp, or the append time for `LogAppendTime` (`maxTimestamp`).
    pub max_timestamp: i64,
    /// Idempotent producer id, or [`NO_PRODUCER_ID`](crate::codec::NO_PRODUCER_ID).
    pub producer_id: i64,
    /// Producer epoch, or [`NO_PRODUCER_EPOCH`](crate::codec::NO_PRODUCER_EPOCH).
    pub producer_epoch: i16,
    /// Sequence number of the first record, or [`NO_SEQUENCE`](crate::codec::NO_SEQUENCE).
    pub base_sequence: i32,
    /// Number of records in the batch (`recordsCount`).
    pub records_count: i32,
}

/// The `N` bytes at `at`; callers have checked that `buf` holds them.
#[inline]
fn field<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&buf[at..at + N]);
    a
}

/// Writes `bytes` at `at` if they fit; patches on short slices do nothing in release builds.
#[inline]
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf`. Corruption if `buf.len() < 61`
    /// (`"batch header"`), magic is not 2 (`"batch magic"`), `batch_length < 49` or
    /// `batch_length + 12 > max_batch_size` (`"batch length"`), `base_offset < 0`
    /// (`"base offset"`), unused attribute bits are set (`"batch attributes"`),
    /// `last_offset_delta < 0` or the last offset overflows (`"last offset delta"`), or
    /// `records_count < 0` (`"records count"`). It does NOT require `buf` to hold the whole batch.
    pub fn parse(buf: &[u8], max_batch_size: usize) -> Result<BatchHeader> {
        if buf.len() < RECORD_BATCH_OVERHEAD {
            let detail = format!(
                "{} bytes, a v2 batch header needs {RECORD_BATCH_OVERHEAD}",
                buf.len()
            );
            return Err(corruption(0, "batch header", detail));
        }
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(field(buf, BASE_OFFSET_OFFSET)),
            batch_length: i32::from_be_bytes(field(buf, LENGTH_OFFSET)),
            partition_leader_epoch: i32::from_be_bytes(field(buf, PARTITION_LEADER_EPOCH_OFFSET)),
            magic: i8::from_be_bytes(field(buf, MAGIC_OFFSET)),
            crc: u32::from_be_bytes(field(buf, CRC_OFFSET)),
            attributes: i16::from_be_bytes(field(buf, ATTRIBUTES_OFFSET)),
            last_offset_delta: i32::from_be_bytes(field(buf, LAST_OFFSET_DELTA_OFFSET)),
            base_timestamp: i64::from_be_bytes(field(buf, BASE_TIMESTAMP_OFFSET)),
            max_timestamp: i64::from_be_bytes(field(buf, MAX_TIMESTAMP_OFFSET)),
            producer_id: i64::from_be_bytes(field(buf, PRODUCER_ID_OFFSET)),
            producer_epoch: i16::from_be_bytes(field(buf, PRODUCER_EPOCH_OFFSET)),
            base_sequence: i32::from_be_bytes(field(buf, BASE_SEQUENCE_OFFSET)),
            records_count: i32::from_be_bytes(field(buf, RECORDS_COUNT_OFFSET)),
        };
        header.check(max_batch_size)?;
        Ok(header)
    }

    /// The field checks of [`BatchHeader::parse`]: the magic first, as it says whether the
    /// rest can be read as v2 at all, then the length, then the others in wire order.
    fn check(&self, max_batch_size: usize) -> Result<()> {
        if self.magic != MAGIC_V2 {
            let detail = format!("magic {}, only {MAGIC_V2} is supported", self.magic);
            return Err(corruption(MAGIC_OFFSET, "batch magic", detail));
        }
        let size = i64::from(self.batch_length) + LOG_OVERHEAD as i64;
        if self.batch_length < MIN_BATCH_LENGTH || size as u64 > max_batch_size as u64 {
            let detail = format!(
                "length {} (batch of {size} bytes), allowed {MIN_BATCH_LENGTH}..={}",
                self.batch_length,
                max_batch_size.saturating_sub(LOG_OVERHEAD)
            );
            return Err(corruption(LENGTH_OFFSET, "batch length", detail));
        }
        if self.base_offset < 0 {
            let detail = format!("negative base offset {}", self.base_offset);
            return Err(corruption(BASE_OFFSET_OFFSET, "base offset", detail));
        }
        if self.attributes & UNUSED_ATTRIBUTES_MASK != 0 {
            let detail = format!("unassigned bits set in {:#06x}", self.attributes as u16);
            return Err(corruption(ATTRIBUTES_OFFSET, "batch attributes", detail));
        }
        // The next offset must fit an i64 too, so `next_offset` cannot overflow.
        let last_ok = self.last_offset_delta >= 0
            && self
                .base_offset
                .checked_add(i64::from(self.last_offset_delta) + 1)
                .is_some();
        if !last_ok {
            let detail = format!(
                "last offset delta {} with base offset {}",
                self.last_offset_delta, self.base_offset
            );
            return Err(corruption(
                LAST_OFFSET_DELTA_OFFSET,
                "last offset delta",
                detail,
            ));
        }
        if self.records_count < 0 {
            let detail = format!("negative records count {}", self.records_count);
            return Err(corruption(RECORDS_COUNT_OFFSET, "records count", detail));
        }
        Ok(())
    }

    /// Writes every field, CRC included as stored in `self`, into `dst[..61]`.
    pub(crate) fn write_to(&self, dst: &mut [u8]) {
        put(dst, BASE_OFFSET_OFFSET, &self.base_offset.to_be_bytes());
        put(dst, LENGTH_OFFSET, &self.batch_length.to_be_bytes());
        put(
            dst,
            PARTITION_LEADER_EPOCH_OFFSET,
            &self.partition_leader_epoch.to_be_bytes(),
        );
        put(dst, MAGIC_OFFSET, &self.magic.to_be_bytes());
        put(dst, CRC_OFFSET, &self.crc.to_be_bytes());
        put(dst, ATTRIBUTES_OFFSET, &self.attributes.to_be_bytes());
        put(
            dst,
            LAST_OFFSET_DELTA_OFFSET,
            &self.last_offset_delta.to_be_bytes(),
        );
        put(
            dst,
            BASE_TIMESTAMP_OFFSET,
            &self.base_timestamp.to_be_bytes(),
        );
        put(dst, MAX_TIMESTAMP_OFFSET, &self.max_timestamp.to_be_bytes());
        put(dst, PRODUCER_ID_OFFSET, &self.producer_id.to_be_bytes());
        put(
            dst,
            PRODUCER_EPOCH_OFFSET,
            &self.producer_epoch.to_be_bytes(),
        );
        put(dst, BASE_SEQUENCE_OFFSET, &self.base_sequence.to_be_bytes());
        put(dst, RECORDS_COUNT_OFFSET, &self.records_count.to_be_bytes());
    }

    /// Whole batch size in bytes: `12 + batch_length` (0 length counted for a negative one).
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    /// Wrapping, so a hand-built header cannot panic; a parsed one never wraps.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset after the batch: `last_offset() + 1`.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The codec of attribute bits 0–2; Corruption (`"batch compression"`) for 5–7.
    pub fn compression(&self) -> Result<Compression> {
        Compression::from_bits(self.attributes).ok_or_else(|| {
            let bits = self.attributes & COMPRESSION_MASK;
            corruption(
                ATTRIBUTES_OFFSET,
                "batch compression",
                format!("unknown codec {bits}"),
            )
        })
    }

    /// Attribute bit 3.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_MASK == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        }
    }

    /// Attribute bit 4: the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_MASK != 0
    }

    /// Attribute bit 5: the batch holds a control record (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }

    /// The delete horizon the log cleaner stored in `baseTimestamp` (attribute bit 6), once
    /// a cleaning kept a tombstone of this batch: tombstones go at the first cleaning after it.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_MASK != 0).then_some(self.base_timestamp)
    }
}

/// Reads only `baseOffset`/`batchLength`: returns `Some(total size)` if `buf` has at least
/// [`HEADER_SIZE_UP_TO_MAGIC`] bytes and the length field is not negative, else `None`.
/// No validation beyond that.
pub fn peek_batch_size(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_SIZE_UP_TO_MAGIC {
        return None;
    }
    let length = i32::from_be_bytes(field(buf, LENGTH_OFFSET));
    usize::try_from(length).ok().map(|l| l + LOG_OVERHEAD)
}

/// CRC-32C of `batch[ATTRIBUTES_OFFSET..]` (of nothing if `batch` is shorter).
pub fn compute_crc(batch: &[u8]) -> u32 {
    super::crc32c(batch.get(ATTRIBUTES_OFFSET..).unwrap_or_default())
}

/// Checks stored CRC == `crc32c(batch[21..])`. `batch` is exactly one whole batch.
/// Corruption `"batch CRC"` (with expected and found values in hex), or `"batch header"` if
/// `batch` is shorter than a header.
pub fn verify_crc(batch: &[u8]) -> Result<()> {
    if batch.len() < RECORD_BATCH_OVERHEAD {
        let detail = format!("{} bytes, no room for a CRC-covered header", batch.len());
        return Err(corruption(0, "batch header", detail));
    }
    let found = u32::from_be_bytes(field(batch, CRC_OFFSET));
    let expected = compute_crc(batch);
    if found != expected {
        let detail = format!(
            "expected {expected:#010x} over bytes {ATTRIBUTES_OFFSET}..{}, found {found:#010x}",
            batch.len()
        );
        return Err(corruption(CRC_OFFSET, "batch CRC", detail));
    }
    Ok(())
}

/// Sets `baseOffset` in place. It is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    debug_assert!(batch.len() >= RECORD_BATCH_OVERHEAD, "not a whole batch");
    put(batch, BASE_OFFSET_OFFSET, &base_offset.to_be_bytes());
}

/// The `maxTimestamp` field of a batch at least a header long.
pub(crate) fn max_timestamp_of(batch: &[u8]) -> i64 {
    i64::from_be_bytes(field(batch, MAX_TIMESTAMP_OFFSET))
}

/// Sets `partitionLeaderEpoch` in place. It is outside the CRC, so the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    debug_assert!(batch.len() >= RECORD_BATCH_OVERHEAD, "not a whole batch");
    put(batch, PARTITION_LEADER_EPOCH_OFFSET, &epoch.to_be_bytes());
}

/// Sets attribute bit 3 (`LogAppendTime`) and `maxTimestamp = ts`, then recomputes the CRC
/// (Kafka's `setMaxTimestamp`). Afterwards every record's timestamp reads as `ts`.
pub fn set_log_append_time(batch: &mut [u8], ts: i64) {
    debug_assert!(batch.len() >= RECORD_BATCH_OVERHEAD, "not a whole batch");
    if batch.len() < RECORD_BATCH_OVERHEAD {
        return;
    }
    let attributes = i16::from_be_bytes(field(batch, ATTRIBUTES_OFFSET)) | TIMESTAMP_TYPE_MASK;
    put(batch, ATTRIBUTES_OFFSET, &attributes.to_be_bytes());
    put(batch, MAX_TIMESTAMP_OFFSET, &ts.to_be_bytes());
    let crc = compute_crc(batch);
    put(batch, CRC_OFFSET, &crc.to_be_bytes());
}

/// Corruption (`"batch length"`) unless the header's size is exactly `batch.len()`.
fn check_whole(header: &BatchHeader, batch: &[u8]) -> Result<()> {
    if header.size() != batch.len() {
        let detail = format!(
            "length field says {} bytes, the buffer holds {}",
            header.size(),
            batch.len()
        );
        return Err(corruption(LENGTH_OFFSET, "batch length", detail));
    }
    Ok(())
}

/// `UnsupportedCompression` for a compressed batch, Corruption for codecs 5–7.
pub(crate) fn check_uncompressed(header: &BatchHeader) -> Result<()> {
    match header.compression()? {
        Compression::None => Ok(()),
        codec => Err(Error::UnsupportedCompression {
            codec: codec.name(),
        }),
    }
}

/// Full check of one whole batch: header ([`BatchHeader::parse`]), length == `batch.len()`,
/// CRC, compression (`UnsupportedCompression`), and every record's framing: exactly
/// `records_count` records, each record's length field matching the bytes it consumed,
/// offset deltas strictly increasing within `0..=last_offset_delta`, header keys UTF-8, no
/// trailing bytes. Returns the header. Allocates nothing unless it fails.
pub fn validate_batch(batch: &[u8], max_batch_size: usize) -> Result<BatchHeader> {
    validate_batch_timestamps(batch, max_batch_size).map(|(header, _)| header)
}

/// [`validate_batch`], with the largest timestamp of the records, at least
/// `NO_TIMESTAMP` (-1), as Kafka's leader computes a `CreateTime` batch's `maxTimestamp`
/// (`LogValidator` starts from -1); for a `LogAppendTime` batch, whose records all read
/// its `maxTimestamp`, that.
pub(crate) fn validate_batch_timestamps(
    batch: &[u8],
    max_batch_size: usize,
) -> Result<(BatchHeader, i64)> {
    let header = BatchHeader::parse(batch, max_batch_size)?;
    check_whole(&header, batch)?;
    verify_crc(batch)?;
    check_uncompressed(&header)?;
    let create_time = header.timestamp_type() == TimestampType::CreateTime;
    if let Some(max) = crate::codec::record::fast_framing(&batch[..header.size()], &header) {
        return Ok((
            header,
            if create_time {
                max
            } else {
                header.max_timestamp
            },
        ));
    }
    let mut max = NO_TIMESTAMP;
    for record in records(batch, &header) {
        max = max.max(record?.timestamp);
    }
    Ok((
        header,
        if create_time {
            max
        } else {
            header.max_timestamp
        },
    ))
}

/// A whole batch held as `Bytes` (zero-copy from wherever it came from).
#[derive(Debug, Clone)]
pub struct Batch {
    bytes: Bytes,
    header: BatchHeader,
}

impl Batch {
    /// Parses the header and checks length (== `bytes.len()`) and CRC. Not the records: they
    /// are checked lazily by iteration.
    pub fn new(bytes: Bytes, max_batch_size: usize) -> Result<Batch> {
        let header = BatchHeader::parse(&bytes, max_batch_size)?;
        check_whole(&header, &bytes)?;
        verify_crc(&bytes)?;
        Ok(Batch { bytes, header })
    }

    /// As [`Batch::new`] without the CRC check, for readers that chose not to check.
    pub(crate) fn new_unverified(bytes: Bytes, max_batch_size: usize) -> Result<Batch> {
        let header = BatchHeader::parse(&bytes, max_batch_size)?;
        check_whole(&header, &bytes)?;
        Ok(Batch { bytes, header })
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// The offset after the batch.
    pub fn next_offset(&self) -> i64 {
        self.header.next_offset()
    }

    /// Number of records (the header's `records_count`).
    pub fn len(&self) -> usize {
        self.header.records_count as usize
    }

    /// True if the batch holds no records (possible after compaction).
    pub fn is_empty(&self) -> bool {
        self.header.records_count == 0
    }

    /// Borrowed views of the records, checked as they are read.
    pub fn iter(&self) -> RecordIter<'_> {
        records(&self.bytes, &self.header)
    }

    /// Owned records whose keys and values are `Bytes` slices of this batch.
    pub fn records(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        let timestamp_type = self.header.timestamp_type();
        self.iter()
            .map(move |view| Record::from_view(&self.bytes, &view?, timestamp_type))
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = Result<crate::codec::RecordView<'a>>;
    type IntoIter = RecordIter<'a>;

    fn into_iter(self) -> RecordIter<'a> {
        self.iter()
    }
}
