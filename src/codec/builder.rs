//! Encodes uncompressed v2 batches the way a Kafka producer does.
//!
//! Invariants: while records are pending, `buf` holds a 61-byte header placeholder followed by
//! exactly the encoded records; each record's length varint is computed from its fields before
//! writing, so no second buffer or back-patching is needed. The header (counts, timestamps,
//! CRC) is written only by `finish`. Offset deltas are the record's index and timestamp deltas
//! are wrapping differences from the first record's timestamp.

use crate::codec::varint::{varint_size, varlong_size, write_varint_at, zigzag32, zigzag64};
use crate::codec::{
    BatchHeader, CRC_OFFSET, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID, NO_SEQUENCE, NO_TIMESTAMP, RECORD_BATCH_OVERHEAD, compute_crc,
};

/// Largest batch the format can describe: `batchLength` is an i32.
const MAX_ENCODED_BATCH: usize = LOG_OVERHEAD + i32::MAX as usize;

/// Builds one uncompressed v2 batch, the way a Kafka producer does: `baseOffset` 0,
/// `partitionLeaderEpoch` -1, producer id/epoch/sequence -1 (settable), `CreateTime`,
/// `offsetDelta` = index, `timestampDelta` relative to the first record's timestamp.
///
/// Reusable: one buffer is kept across batches. [`BatchBuilder::finish`] and
/// [`BatchBuilder::clear`] return it to the state of a new builder (producer fields included).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    /// Capacity to reserve when a batch starts (the buffer may have been handed out).
    capacity: usize,
    count: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Encoded size of a length-prefixed optional byte string.
#[inline]
fn nullable_size(len: Option<usize>) -> usize {
    match len {
        None => 1,
        Some(n) => varint_size(n as i32) + n,
    }
}

/// Encoded size of the headers count and headers.
#[inline]
fn headers_size(headers: &[(&str, Option<&[u8]>)]) -> usize {
    let each: usize = headers
        .iter()
        .map(|(k, v)| nullable_size(Some(k.len())) + nullable_size(v.map(<[u8]>::len)))
        .sum();
    varint_size(headers.len() as i32) + each
}

/// Encoded size of a record's body (everything after its length varint).
#[allow(
    clippy::inline_always,
    reason = "left out of line by the compiler in the producer's `push`, where the call cost a twentieth of the sending thread's time"
)]
#[inline(always)]
fn record_body_size(
    timestamp_delta: i64,
    offset_delta: i32,
    key_len: Option<usize>,
    value_len: Option<usize>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    1 + varlong_size(timestamp_delta)
        + varint_size(offset_delta)
        + nullable_size(key_len)
        + nullable_size(value_len)
        + headers_size(headers)
}

/// Bytes of the widest `Prefix`: a length varint, the attributes byte, a varlong and three
/// more varints (27 when the key is null), rounded up to two 16-byte words.
const PREFIX_BYTES: usize = 32;

/// The small fields before a record's key or value, gathered in two registers so they
/// reach the batch in fixed-size stores. Gathering them in a byte array instead made the
/// copy out of it wait on a store-forwarding stall (many one-byte stores read back as one
/// wide load), the largest single cost of `push` in a profile.
struct Prefix {
    /// Bytes 0..16, the first in the low byte.
    low: u128,
    /// Bytes 16..32.
    high: u128,
    len: usize,
}

impl Prefix {
    #[inline]
    fn new() -> Prefix {
        Prefix {
            low: 0,
            high: 0,
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        debug_assert!(self.len < PREFIX_BYTES);
        if self.len < 16 {
            self.low |= u128::from(b) << (8 * self.len);
        } else {
            self.high |= u128::from(b) << (8 * (self.len - 16));
        }
        self.len += 1;
    }

    #[inline]
    fn unsigned(&mut self, mut z: u64) {
        while z >= 0x80 {
            self.byte((z as u8) | 0x80);
            z >>= 7;
        }
        self.byte(z as u8);
    }

    #[inline]
    fn varint(&mut self, v: i32) {
        self.unsigned(u64::from(zigzag32(v)));
    }

    #[inline]
    fn varlong(&mut self, v: i64) {
        self.unsigned(zigzag64(v));
    }

    /// Appends the bytes gathered to `out`, which has room reserved for them.
    ///
    /// With room for `PREFIX_BYTES` more, the two words go in whole and the length is cut
    /// back, so the copy has a fixed size. Near the end of the buffer's capacity (the last
    /// record of a batch that fills the capacity it was given) only the bytes gathered are
    /// copied, so that the buffer never grows past what the record needs.
    #[inline]
    fn append_to(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        if out.capacity() - out.len() >= PREFIX_BYTES {
            out.extend_from_slice(&self.low.to_le_bytes());
            if self.len > 16 {
                out.extend_from_slice(&self.high.to_le_bytes());
            }
            out.truncate(end);
        } else {
            let (low, high) = (self.low.to_le_bytes(), self.high.to_le_bytes());
            out.extend_from_slice(&low[..self.len.min(16)]);
            out.extend_from_slice(&high[..self.len.saturating_sub(16)]);
        }
    }
}

/// Appends `v` as a varint.
#[inline]
fn put_varint(out: &mut Vec<u8>, v: i32) {
    let mut bytes = [0u8; 5];
    let len = write_varint_at(&mut bytes, 0, v);
    out.extend_from_slice(&bytes[..len]);
}

/// Appends a length-prefixed optional byte string.
#[inline]
fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

impl BatchBuilder {
    /// An empty builder; the buffer is allocated on the first push.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty builder that reserves `bytes` of buffer for each batch.
    pub fn with_capacity(bytes: usize) -> Self {
        BatchBuilder {
            buf: Vec::with_capacity(bytes),
            capacity: bytes,
            count: 0,
            base_timestamp: NO_TIMESTAMP,
            max_timestamp: NO_TIMESTAMP,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }

    /// Sets the idempotent producer fields of the batch being built.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
    }

    /// Appends one record. `timestamp` is the `CreateTime` (`NO_TIMESTAMP` allowed).
    ///
    /// # Panics
    /// If the batch would exceed the format's limit of `i32::MAX` bytes after the length field.
    #[inline]
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        if self.count == 0 {
            self.start(timestamp);
        }
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        // Bounded by the size assertion below: every record takes at least 7 bytes.
        let offset_delta = self.count as i32;
        let body = record_body_size(
            timestamp_delta,
            offset_delta,
            key.map(<[u8]>::len),
            value.map(<[u8]>::len),
            headers,
        );
        let total = varint_size(body as i32) + body;
        assert!(
            i32::try_from(body).is_ok() && self.buf.len() + total <= MAX_ENCODED_BATCH,
            "record batch would exceed {MAX_ENCODED_BATCH} bytes"
        );
        let start = self.buf.len();
        // Reserved once, then appended piece by piece: no zero-fill of bytes about to be
        // written, and each append's capacity check is a branch that always passes.
        self.buf.reserve(total);
        self.prefetch_ahead(start + total);
        // Length, attributes (unused in v2), the two deltas and the key's length.
        let mut prefix = Prefix::new();
        prefix.varint(body as i32);
        prefix.byte(0);
        prefix.varlong(timestamp_delta);
        prefix.varint(offset_delta);
        match key {
            None => prefix.varint(-1),
            Some(k) => {
                prefix.varint(k.len() as i32);
                prefix.append_to(&mut self.buf);
                self.buf.extend_from_slice(k);
                prefix = Prefix::new();
            }
        }
        prefix.varint(value.map_or(-1, |v| v.len() as i32));
        prefix.append_to(&mut self.buf);
        if let Some(v) = value {
            self.buf.extend_from_slice(v);
        }
        if headers.is_empty() {
            self.buf.push(0);
        } else {
            put_varint(&mut self.buf, headers.len() as i32);
            for (k, v) in headers {
                put_nullable(&mut self.buf, Some(k.as_bytes()));
                put_nullable(&mut self.buf, *v);
            }
        }
        debug_assert_eq!(self.buf.len() - start, total);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
    }

    /// Fetches for writing the buffer's cache lines from `from` to a few records past it
    /// (within its capacity), so that the next pushes' stores do not wait for them: a
    /// producer's pooled buffer was last read by its sender thread, on another core
    /// (measured: a send's first atomic operation after its `push` waited there for a fifth
    /// of the sending thread's time).
    #[inline]
    fn prefetch_after(&self, from: usize) {
        const LINE: usize = 64;
        const AHEAD: usize = 256;
        let base = self.buf.as_ptr();
        let end = (from + AHEAD).min(self.buf.capacity());
        let mut at = from & !(LINE - 1);
        while at < end {
            crate::storage::mmap::prefetch_write(base.wrapping_add(at));
            at += LINE;
        }
    }

    /// [`prefetch_after`](Self::prefetch_after) for a push that ended at `end`: only the
    /// two lines entering the window (the earlier pushes fetched the rest), since on a
    /// buffer that stays in this core's cache each hint still costs a little.
    #[inline]
    fn prefetch_ahead(&self, end: usize) {
        let base = self.buf.as_ptr();
        for at in [end + 128, end + 192] {
            if at < self.buf.capacity() {
                crate::storage::mmap::prefetch_write(base.wrapping_add(at));
            }
        }
    }

    /// Starts a batch whose first record has `timestamp`: the header placeholder.
    #[cold]
    fn start(&mut self, timestamp: i64) {
        self.buf.clear();
        self.buf.reserve(self.capacity.max(RECORD_BATCH_OVERHEAD));
        self.prefetch_after(0);
        self.buf.resize(RECORD_BATCH_OVERHEAD, 0);
        self.base_timestamp = timestamp;
    }

    /// Exact bytes a record would add if pushed next (Kafka's `DefaultRecord.sizeInBytes`
    /// with this batch's next offset delta and timestamp delta), for deciding whether it
    /// still fits a batch.
    pub fn next_record_size(
        &self,
        timestamp: i64,
        key_len: Option<usize>,
        value_len: Option<usize>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let (timestamp_delta, offset_delta) = if self.count == 0 {
            (0, 0)
        } else {
            (
                timestamp.wrapping_sub(self.base_timestamp),
                self.count.min(i32::MAX as usize) as i32,
            )
        };
        let body = record_body_size(timestamp_delta, offset_delta, key_len, value_len, headers);
        varint_size(body.min(i32::MAX as usize) as i32) + body
    }

    /// Number of records pushed since the last `finish`/`clear`.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if no record is pending.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far, including the 61-byte header (61 when empty).
    pub fn size_in_bytes(&self) -> usize {
        if self.count == 0 {
            RECORD_BATCH_OVERHEAD
        } else {
            self.buf.len()
        }
    }

    /// Size a record would add, for batch-size decisions. An upper bound: it assumes the
    /// widest timestamp and offset deltas, so it exceeds the exact size by at most 14 bytes.
    pub fn estimate_record_size(
        key_len: Option<usize>,
        value_len: Option<usize>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let body = 1
            + 10 // timestamp delta
            + 5 // offset delta
            + nullable_size(key_len)
            + nullable_size(value_len)
            + headers_size(headers);
        varint_size(body.min(i32::MAX as usize) as i32) + body
    }

    /// Fills the header (`lastOffsetDelta`, base/max timestamp, count, CRC) and returns the
    /// finished batch, borrowed from the internal buffer until the next `push` or `clear`.
    /// The builder is then empty and reusable. `None` if no record was pushed.
    pub fn finish(&mut self) -> Option<&[u8]> {
        if self.count == 0 {
            return None;
        }
        let header = BatchHeader {
            base_offset: 0,
            batch_length: (self.buf.len() - LOG_OVERHEAD) as i32,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            magic: MAGIC_V2,
            crc: 0,
            attributes: 0,
            last_offset_delta: (self.count - 1) as i32,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.count as i32,
        };
        header.write_to(&mut self.buf);
        let crc = compute_crc(&self.buf);
        self.buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        self.reset();
        Some(&self.buf)
    }

    /// As [`BatchBuilder::finish`], handing over the buffer itself (no copy); the next batch
    /// allocates a new one.
    pub fn finish_vec(&mut self) -> Option<Vec<u8>> {
        self.finish()?;
        Some(std::mem::take(&mut self.buf))
    }

    /// The batch the last [`finish`](Self::finish) returned, again (for a retry of its
    /// append), until the next `push` or `clear`.
    pub(crate) fn finished_batch(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes the buffer holds allocated now.
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Sets the buffer capacity reserved when the next batch starts; the buffer kept so far
    /// stays.
    pub(crate) fn set_capacity(&mut self, bytes: usize) {
        self.capacity = bytes;
    }

    /// Drops pending records and producer fields; keeps the buffer's capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.reset();
    }

    /// Back to a new builder's state, leaving `buf`'s contents alone.
    fn reset(&mut self) {
        self.count = 0;
        self.base_timestamp = NO_TIMESTAMP;
        self.max_timestamp = NO_TIMESTAMP;
        self.producer_id = NO_PRODUCER_ID;
        self.producer_epoch = NO_PRODUCER_EPOCH;
        self.base_sequence = NO_SEQUENCE;
    }
}
