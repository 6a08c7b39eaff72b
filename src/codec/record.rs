//! Records inside an uncompressed v2 batch: borrowed views, an iterator that checks framing as
//! it reads and allocates nothing, and owned records that share the batch's `Bytes`.
//!
//! Invariants: [`RecordIter`] yields a view only after checking that record's whole framing
//! (length field equal to the bytes its fields use, offset delta strictly above the previous one
//! and at most `lastOffsetDelta`, every header framed and its key UTF-8). So a [`HeadersView`]
//! it yields iterates without error. After its first error it yields nothing more. Error
//! positions are relative to the batch start.

use bytes::Bytes;

use crate::codec::batch::check_uncompressed;
use crate::codec::varint::{VarintError, read_varint, read_varlong};
use crate::codec::{
    BatchHeader, LENGTH_OFFSET, NO_TIMESTAMP, RECORD_BATCH_OVERHEAD, TimestampType, corruption,
};
use crate::error::{Error, Result};

/// A failed read; the error itself is in [`Reader::error`]. Zero-sized so that the readers'
/// results fit in registers on the hot path, where an `Error` would be moved through memory.
struct Failed;

/// Result of a [`Reader`] method.
type Read<T> = std::result::Result<T, Failed>;

/// A cursor over `buf` whose errors report `base + pos`, so that a sub-slice (a record, a
/// header section) still names positions in the whole input.
#[derive(Debug)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    /// Set exactly when a method returns `Err(Failed)`.
    error: Option<Error>,
}

impl<'a> Reader<'a> {
    #[inline]
    fn new(buf: &'a [u8], pos: usize, base: usize) -> Self {
        Reader {
            buf,
            pos,
            base,
            error: None,
        }
    }

    /// The error of the last failed read.
    fn take_error(&mut self) -> Error {
        self.error.take().unwrap_or_else(|| {
            corruption(
                self.base + self.pos,
                "record",
                "unreported read failure".into(),
            )
        })
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Records a corruption at `at` (relative to `buf`).
    #[cold]
    #[inline(never)]
    fn fail(&mut self, at: usize, what: &'static str, detail: std::fmt::Arguments<'_>) -> Failed {
        self.error = Some(corruption(self.base + at, what, detail.to_string()));
        Failed
    }

    /// [`Reader::fail`] for bytes that are not a varint.
    #[cold]
    #[inline(never)]
    fn fail_varint(&mut self, what: &'static str, e: VarintError) -> Failed {
        self.fail(self.pos, what, format_args!("{}", e.detail()))
    }

    /// [`Reader::fail`] for a byte string running past the end of `buf`.
    #[cold]
    #[inline(never)]
    fn fail_short(&mut self, what: &'static str, n: usize) -> Failed {
        let remaining = self.remaining();
        self.fail(
            self.pos,
            what,
            format_args!("{n} bytes needed, {remaining} remain"),
        )
    }

    #[inline]
    fn varint(&mut self, what: &'static str) -> Read<i32> {
        match read_varint(self.buf, self.pos) {
            Ok((v, end)) => {
                self.pos = end;
                Ok(v)
            }
            Err(e) => Err(self.fail_varint(what, e)),
        }
    }

    #[inline]
    fn varlong(&mut self, what: &'static str) -> Read<i64> {
        match read_varlong(self.buf, self.pos) {
            Ok((v, end)) => {
                self.pos = end;
                Ok(v)
            }
            Err(e) => Err(self.fail_varint(what, e)),
        }
    }

    /// The next `n` bytes.
    #[inline]
    fn bytes(&mut self, n: usize, what: &'static str) -> Read<&'a [u8]> {
        // `get(pos..)` then `get(..n)` so that no `pos + n` can overflow.
        if let Some(b) = self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            self.pos += n;
            Ok(b)
        } else {
            Err(self.fail_short(what, n))
        }
    }

    /// A varint length (`-1` = null) followed by that many bytes.
    #[inline]
    fn nullable(&mut self, len_what: &'static str, what: &'static str) -> Read<Option<&'a [u8]>> {
        let len_pos = self.pos;
        let len = self.varint(len_what)?;
        match usize::try_from(len) {
            Ok(n) => self.bytes(n, what).map(Some),
            Err(_) if len == -1 => Ok(None),
            Err(_) => Err(self.fail(len_pos, len_what, format_args!("length {len} is below -1"))),
        }
    }
}

/// A borrowed view of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset: `baseOffset + offsetDelta`.
    pub offset: i64,
    /// `maxTimestamp` for `LogAppendTime` batches, else `baseTimestamp + timestampDelta`.
    pub timestamp: i64,
    /// The key, `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value, `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The record's headers.
    pub headers: HeadersView<'a>,
}

/// The raw header bytes of a record and their count; iterate with [`HeadersView::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersView<'a> {
    bytes: &'a [u8],
    count: usize,
    position: usize,
}

impl<'a> HeadersView<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the record has no headers.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The headers' bytes (after their count) and the count, as kept by a poll.
    pub(crate) fn raw(&self) -> (&'a [u8], usize) {
        (self.bytes, self.count)
    }

    /// The view of headers already walked once (by [`HeadersView::raw`]'s caller).
    pub(crate) fn from_raw(bytes: &'a [u8], count: usize) -> Self {
        HeadersView {
            bytes,
            count,
            position: 0,
        }
    }

    /// Owned headers whose values are slices of `bytes`, the buffer this view borrows.
    #[inline]
    pub(crate) fn owned_in(&self, bytes: &Bytes) -> Result<Vec<Header>> {
        if self.count == 0 {
            return Ok(Vec::new());
        }
        self.owned_slow(bytes)
    }

    /// [`HeadersView::owned_in`] for a record that has headers.
    #[inline(never)]
    fn owned_slow(&self, bytes: &Bytes) -> Result<Vec<Header>> {
        let mut headers = Vec::with_capacity(self.count);
        for header in self {
            let (key, value) = header?;
            headers.push(Header {
                key: key.to_owned(),
                value: value.map(|v| bytes.slice_ref(v)),
            });
        }
        Ok(headers)
    }

    /// Iterates `(key, value)` pairs in wire order.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            reader: Reader::new(self.bytes, 0, self.position),
            remaining: self.count,
        }
    }
}

impl<'a> IntoIterator for HeadersView<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>)>;
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &HeadersView<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>)>;
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over a record's headers, yielding `(key, value)`; a framing error is yielded once,
/// then `None`.
#[derive(Debug)]
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    remaining: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        if let Ok(header) = read_header(&mut self.reader) {
            self.remaining -= 1;
            Some(Ok(header))
        } else {
            // One error, then the end.
            self.remaining = 0;
            Some(Err(self.reader.take_error()))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl std::iter::FusedIterator for HeaderIter<'_> {}

/// One header: key length (>= 0), UTF-8 key, nullable value.
fn read_header<'a>(r: &mut Reader<'a>) -> Read<(&'a str, Option<&'a [u8]>)> {
    let len_pos = r.pos;
    let key_len = r.varint("record header key length")?;
    let Ok(key_len) = usize::try_from(key_len) else {
        let detail = format_args!("negative length {key_len}; header keys cannot be null");
        return Err(r.fail(len_pos, "record header key length", detail));
    };
    let key_pos = r.pos;
    let key = r.bytes(key_len, "record header key")?;
    let key = match std::str::from_utf8(key) {
        Ok(key) => key,
        Err(e) => return Err(r.fail(key_pos, "record header key", format_args!("not UTF-8: {e}"))),
    };
    let value = r.nullable("record header value length", "record header value")?;
    Ok((key, value))
}

/// Reads the headers count and walks every header so the record's length can be checked and
/// the view is known good. The reader is bounded by the record's end.
fn read_headers<'a>(r: &mut Reader<'a>) -> Read<HeadersView<'a>> {
    let count_pos = r.pos;
    let count = r.varint("record headers count")?;
    // Each header takes at least 2 bytes, so a larger count cannot be honest; checked before
    // anyone sizes a Vec by it.
    let count = match usize::try_from(count) {
        Ok(n) if n <= r.remaining() / 2 => n,
        _ => {
            let left = r.remaining();
            let detail = format_args!("{count} headers in {left} remaining bytes");
            return Err(r.fail(count_pos, "record headers count", detail));
        }
    };
    let start = r.pos;
    for _ in 0..count {
        read_header(r)?;
    }
    Ok(HeadersView {
        bytes: &r.buf[start..r.pos],
        count,
        position: r.base + start,
    })
}

/// Iterates records of one whole batch whose header was already validated (and CRC checked by
/// the caller if wanted). Yields `Err(Corruption)` once on bad framing, then `None`.
/// Positions in errors are relative to the batch start.
#[derive(Debug)]
pub struct RecordIter<'a> {
    /// The batch, cut at the header's size.
    buf: &'a [u8],
    pos: usize,
    /// Records still expected; 0 once done or while an error is pending, so that the fast
    /// path in [`Iterator::next`] needs this one test.
    remaining: usize,
    /// The header's `records_count` (at least 0), for error messages.
    count: usize,
    /// Offset delta of the previous record; -1 before the first.
    prev_delta: i64,
    last_offset_delta: i32,
    base_offset: i64,
    base_timestamp: i64,
    /// `Some(maxTimestamp)` for a `LogAppendTime` batch.
    append_time: Option<i64>,
    /// An error found when the iterator was made (compression, size), yielded first.
    pending: Option<Error>,
    done: bool,
}

/// Where a [`RecordIter`] stands between two records (see [`RecordIter::cursor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordCursor {
    pos: usize,
    remaining: usize,
    prev_delta: i64,
}

/// Iterates the records of `batch`, one whole batch described by `header`. A compressed
/// batch yields `UnsupportedCompression` once. If `batch` is longer than `header.size()`
/// the extra bytes are ignored; if shorter, Corruption (`"batch length"`) is yielded.
pub fn records<'a>(batch: &'a [u8], header: &BatchHeader) -> RecordIter<'a> {
    let count = header.records_count.max(0) as usize;
    let mut iter = RecordIter {
        buf: &[],
        pos: RECORD_BATCH_OVERHEAD,
        remaining: count,
        count,
        prev_delta: -1,
        last_offset_delta: header.last_offset_delta,
        base_offset: header.base_offset,
        base_timestamp: header.base_timestamp,
        append_time: match header.timestamp_type() {
            TimestampType::CreateTime => None,
            TimestampType::LogAppendTime => Some(header.max_timestamp),
        },
        pending: None,
        done: false,
    };
    match usable_bytes(batch, header) {
        Ok(buf) => iter.buf = buf,
        Err(e) => {
            iter.pending = Some(e);
            iter.remaining = 0;
        }
    }
    iter
}

/// The part of `batch` the records live in, after checks that guard against a header that
/// was not parsed from these bytes.
fn usable_bytes<'a>(batch: &'a [u8], header: &BatchHeader) -> Result<&'a [u8]> {
    check_uncompressed(header)?;
    let size = header.size();
    if size < RECORD_BATCH_OVERHEAD || batch.len() < size {
        let detail = format!("batch of {size} bytes, buffer holds {}", batch.len());
        return Err(corruption(LENGTH_OFFSET, "batch length", detail));
    }
    Ok(&batch[..size])
}

impl<'a> RecordIter<'a> {
    /// Where the next record starts, relative to the batch start (after the last record
    /// once all were read).
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Records read so far.
    fn read(&self) -> usize {
        self.count.saturating_sub(self.remaining)
    }

    /// Where the iteration stands, to go on from there later with [`RecordIter::resume`];
    /// `None` once it ended or failed, or while an error waits to be yielded.
    pub(crate) fn cursor(&self) -> Option<RecordCursor> {
        (!self.done && self.pending.is_none()).then_some(RecordCursor {
            pos: self.pos,
            remaining: self.remaining,
            prev_delta: self.prev_delta,
        })
    }

    /// Goes on from `cursor`, taken from an iterator over the same batch. `None` leaves the
    /// iterator at the start, and so does a cursor that cannot belong to this batch (past
    /// its end); one from another batch that passes that gives errors or wrong records,
    /// never a panic.
    pub(crate) fn resume(mut self, cursor: Option<RecordCursor>) -> Self {
        if let Some(cursor) = cursor
            && self.cursor().is_some()
            && (RECORD_BATCH_OVERHEAD..=self.buf.len()).contains(&cursor.pos)
        {
            self.pos = cursor.pos;
            self.remaining = cursor.remaining.min(self.count);
            self.prev_delta = cursor.prev_delta;
        }
        self
    }

    /// One record through the full reader, moving past it on success.
    fn read_record(&mut self) -> Result<RecordView<'a>> {
        let mut r = Reader::new(self.buf, self.pos, 0);
        if let Ok(view) = self.read_framed(&mut r) {
            self.pos = r.pos;
            Ok(view)
        } else {
            Err(r.take_error())
        }
    }

    /// The common record (short varints, no headers) read with no error bookkeeping, moving
    /// past it; `None` (having moved nowhere) for anything else, which the full reader then
    /// handles. Accepts exactly what the full reader accepts for such records.
    #[allow(
        clippy::inline_always,
        reason = "left to itself the compiler calls it out of line, which costs a third of \
                  read throughput (measured with the read benchmark)"
    )]
    #[inline(always)]
    fn fast_record(&mut self) -> Option<RecordView<'a>> {
        let buf = self.buf;
        // A batch read from a segment or a fetch is usually followed in memory by the next
        // one, read next: its lines at the same distance into it are fetched now, while this
        // walk is bound by its own chain of lengths, instead of by that batch's CRC pass
        // (measured: a record read from memory about a fifth faster; a hint, never a fault).
        let ahead = buf
            .as_ptr()
            .wrapping_add((buf.len() + self.pos).wrapping_sub(RECORD_BATCH_OVERHEAD));
        crate::storage::mmap::prefetch(ahead);
        crate::storage::mmap::prefetch(ahead.wrapping_add(64));
        let (len, body) = small_length(buf, self.pos)?;
        let end = body.checked_add(len).filter(|&e| e <= buf.len())?;
        let record = &buf[..end];
        // Deltas within 8 s take the two-byte path; longer ones an inlined full varint read.
        let (timestamp_delta, p) = match small_varint(record, body + 1) {
            Some(read) => read,
            None => read_varlong(record, body + 1).ok()?,
        };
        let (delta, p) = small_length(record, p)?;
        let delta = delta as i64;
        if delta <= self.prev_delta || delta > i64::from(self.last_offset_delta) {
            return None;
        }
        let (key, p) = small_nullable(record, p)?;
        let (value, p) = small_nullable(record, p)?;
        if record.get(p) != Some(&0) || p + 1 != end {
            return None;
        }
        self.prev_delta = delta;
        self.pos = end;
        let timestamp = match self.append_time {
            Some(ts) => ts,
            None => self.base_timestamp.wrapping_add(timestamp_delta),
        };
        let headers = HeadersView {
            bytes: &record[end..],
            count: 0,
            position: p + 1,
        };
        Some(RecordView {
            offset: self.base_offset.wrapping_add(delta),
            timestamp,
            key,
            value,
            headers,
        })
    }

    /// A record's length varint, then its body within exactly that many bytes.
    #[inline]
    fn read_framed(&mut self, r: &mut Reader<'a>) -> Read<RecordView<'a>> {
        let start = r.pos;
        let len = r.varint("record length")?;
        let body = r.pos;
        let end = match usize::try_from(len) {
            Ok(n) if n <= r.remaining() => body + n,
            _ => {
                let left = r.remaining();
                let detail = format_args!("length {len}, {left} bytes left in the batch");
                return Err(r.fail(start, "record length", detail));
            }
        };
        // Bound the reader so no field can run into the next record.
        r.buf = &r.buf[..end];
        let view = self.read_body(r)?;
        if r.pos != end {
            let used = r.pos - body;
            let detail = format_args!("length {len}, but the fields use {used} bytes");
            return Err(r.fail(start, "record length", detail));
        }
        Ok(view)
    }

    /// The fields after the length, read through `r`, which ends at the record's end.
    #[inline]
    fn read_body(&mut self, r: &mut Reader<'a>) -> Read<RecordView<'a>> {
        // Record attributes are unused in v2; Kafka ignores their value and so does tarnlog.
        r.bytes(1, "record attributes")?;
        let timestamp_delta = r.varlong("record timestamp delta")?;
        let delta_pos = r.pos;
        let offset_delta = r.varint("record offset delta")?;
        if i64::from(offset_delta) <= self.prev_delta || offset_delta > self.last_offset_delta {
            let (prev, last) = (self.prev_delta, self.last_offset_delta);
            let detail = format_args!("offset delta {offset_delta} after {prev} (last {last})");
            return Err(r.fail(delta_pos, "record offset delta", detail));
        }
        self.prev_delta = i64::from(offset_delta);
        let key = r.nullable("record key length", "record key")?;
        let value = r.nullable("record value length", "record value")?;
        let headers = read_headers(r)?;
        // Wrapping: Kafka's Java arithmetic wraps, and a builder's delta is a wrapping difference.
        let timestamp = match self.append_time {
            Some(ts) => ts,
            None => self.base_timestamp.wrapping_add(timestamp_delta),
        };
        Ok(RecordView {
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp,
            key,
            value,
            headers,
        })
    }

    /// [`Iterator::next`] for everything but the fast path.
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<RecordView<'a>>> {
        if self.done {
            return None;
        }
        if let Some(e) = self.pending.take() {
            return Some(Err(self.finish(e)));
        }
        if self.remaining == 0 {
            self.done = true;
            return self.check_end().err().map(Err);
        }
        if self.pos == self.buf.len() {
            let detail = format!(
                "the header says {} records, the bytes end after {}",
                self.count,
                self.read()
            );
            return Some(Err(self.finish(corruption(
                self.pos,
                "records count",
                detail,
            ))));
        }
        match self.read_record() {
            Ok(view) => {
                self.remaining -= 1;
                Some(Ok(view))
            }
            Err(e) => Some(Err(self.finish(e))),
        }
    }

    /// Ends the iteration after `error`, which it returns.
    fn finish(&mut self, error: Error) -> Error {
        self.done = true;
        self.remaining = 0;
        error
    }

    /// The check after the last expected record: no bytes may follow it.
    fn check_end(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            return Ok(());
        }
        let detail = format!(
            "{} bytes follow the last of {} records",
            self.buf.len().saturating_sub(self.pos),
            self.read()
        );
        Err(corruption(self.pos, "records count", detail))
    }
}

impl<'a> RecordIter<'a> {
    /// [`Iterator::next`] through the full reader alone: the reference that the fast path
    /// is tested against (by the unit tests and the `decode_batch` fuzz oracle).
    pub(crate) fn next_full(&mut self) -> Option<Result<RecordView<'a>>> {
        self.next_slow()
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>>;

    /// The common record takes the inlined fast path; everything else (headers, long
    /// varints, errors, the end) goes through `RecordIter::next_slow`, kept out of line so
    /// that a caller's loop holds the iterator in registers.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining != 0
            && let Some(view) = self.fast_record()
        {
            self.remaining -= 1;
            return Some(Ok(view));
        }
        self.next_slow()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.remaining.saturating_add(1)))
        }
    }
}

impl std::iter::FusedIterator for RecordIter<'_> {}

/// A record header with an owned key and a zero-copy value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header key.
    pub key: String,
    /// The header value, `None` for null.
    pub value: Option<Bytes>,
}

/// An owned record: key, value and header values are `Bytes` slices of the batch (zero-copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset.
    pub offset: i64,
    /// Timestamp, meaning given by `timestamp_type`.
    pub timestamp: i64,
    /// The batch's timestamp type.
    pub timestamp_type: TimestampType,
    /// The key, `None` for null.
    pub key: Option<Bytes>,
    /// The value, `None` for null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in wire order.
    pub headers: Vec<Header>,
}

impl Record {
    /// Copies a view's fields, slicing `bytes` (the buffer the view borrows) for the payloads.
    pub(crate) fn from_view(
        bytes: &Bytes,
        view: &RecordView<'_>,
        timestamp_type: TimestampType,
    ) -> Result<Record> {
        Ok(Record {
            offset: view.offset,
            timestamp: view.timestamp,
            timestamp_type,
            key: view.key.map(|k| bytes.slice_ref(k)),
            value: view.value.map(|v| bytes.slice_ref(v)),
            headers: view.headers.owned_in(bytes)?,
        })
    }
}

/// Fast check of every record's framing, building no views: when the records of an
/// uncompressed batch are exactly as [`RecordIter`] would accept them, the largest of their
/// `CreateTime` timestamps (`baseTimestamp + timestampDelta`), at least `NO_TIMESTAMP`
/// (-1): Kafka's `LogValidator` starts from it. Any doubt answers `None`, and the caller
/// then runs the iterator for the exact error. Used on the append path, where nearly every
/// batch is valid.
pub(crate) fn fast_framing(buf: &[u8], header: &BatchHeader) -> Option<i64> {
    // The read fast path's decoding (`fast_record`), without building views: lengths and
    // the offset delta as halved zig-zag values of at most two bytes.
    let mut pos = RECORD_BATCH_OVERHEAD;
    let mut prev_delta = -1i64;
    let mut max_timestamp = NO_TIMESTAMP;
    for _ in 0..header.records_count.max(0) {
        let (len, body) = small_length(buf, pos)?;
        let end = body.checked_add(len).filter(|&e| e <= buf.len())?;
        let record = &buf[..end];
        // Attributes byte, then the timestamp delta (any varlong the slow path would take).
        let (timestamp_delta, after_ts) = match small_varint(record, body + 1) {
            Some(read) => read,
            None => read_varlong(record, body + 1).ok()?,
        };
        max_timestamp = max_timestamp.max(header.base_timestamp.wrapping_add(timestamp_delta));
        let (delta, p) = small_length(record, after_ts)?;
        let delta = delta as i64;
        if delta <= prev_delta || delta > i64::from(header.last_offset_delta) {
            return None;
        }
        prev_delta = delta;
        let (_, p) = small_nullable(record, p)?;
        let (_, p) = small_nullable(record, p)?;
        // Headers are rare on the hot path: leave any to the full iterator.
        if record.get(p) != Some(&0) || p + 1 != end {
            return None;
        }
        pos = end;
    }
    (pos == buf.len()).then_some(max_timestamp)
}

/// A nullable byte string with a short length varint, inside `record`; `None` when unsure.
#[allow(
    clippy::inline_always,
    reason = "part of the read fast path; see `fast_record`"
)]
#[inline(always)]
fn small_nullable(record: &[u8], pos: usize) -> Option<(Option<&[u8]>, usize)> {
    // -1 (null) is the one-byte varint 1.
    if record.get(pos) == Some(&1) {
        return Some((None, pos + 1));
    }
    let (n, p) = small_length(record, pos)?;
    let end = p.checked_add(n)?;
    Some((Some(record.get(p..end)?), end))
}

/// A varint at `pos` that takes at most two bytes and is not negative (a length, an offset
/// delta), and the position after it; `None` for anything else. The value is the zig-zag
/// value halved, its sign bit checked apart: for a record's length, the next record's start
/// (which depends on it) then waits on as few instructions as possible.
#[allow(
    clippy::inline_always,
    reason = "part of the read fast path; see `fast_record`"
)]
#[inline(always)]
fn small_length(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let b0 = usize::from(*buf.get(pos)?);
    if b0 < 0x80 {
        return (b0 & 1 == 0).then_some((b0 >> 1, pos + 1));
    }
    let b1 = usize::from(*buf.get(pos + 1)?);
    if b1 >= 0x80 || b0 & 1 != 0 {
        return None;
    }
    Some((((b0 & 0x7F) >> 1) | (b1 << 6), pos + 2))
}

/// A varint of at most two bytes, zig-zag decoded; `None` for anything longer.
#[allow(
    clippy::inline_always,
    reason = "part of the read fast path; see `fast_record`"
)]
#[inline(always)]
fn small_varint(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    let b0 = *buf.get(pos)?;
    let z = if b0 < 0x80 {
        return Some((unzig(u64::from(b0)), pos + 1));
    } else {
        let b1 = *buf.get(pos + 1)?;
        if b1 >= 0x80 {
            return None;
        }
        u64::from(b0 & 0x7F) | (u64::from(b1) << 7)
    };
    Some((unzig(z), pos + 2))
}

#[inline]
fn unzig(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Appends `record` (one whole record, from its length varint to its end, as framed in a
/// batch) to `out` with its timestamp delta lowered by `shift`: the record as it reads in a
/// batch whose base timestamp was raised by `shift` (the cleaner's delete horizon).
pub(crate) fn rebase_record(record: &[u8], shift: i64, out: &mut Vec<u8>) -> Result<()> {
    use super::varint::{varint_size, varlong_size, write_varint_at, write_varlong_at};
    let bad = |what: &'static str, e: super::varint::VarintError| corruption(0, what, e.detail());
    let (_, body) = read_varint(record, 0).map_err(|e| bad("record length", e))?;
    let (delta, rest) =
        read_varlong(record, body + 1).map_err(|e| bad("record timestamp delta", e))?;
    let delta = delta.wrapping_sub(shift);
    let body_len = 1 + varlong_size(delta) + (record.len() - rest);
    let body_len = i32::try_from(body_len)
        .map_err(|_| corruption(0, "record length", format!("{body_len} bytes")))?;
    let mut head = [0u8; 16];
    let mut at = write_varint_at(&mut head, 0, body_len);
    head[at] = record[body];
    at = write_varlong_at(&mut head, at + 1, delta);
    debug_assert_eq!(at, varint_size(body_len) + 1 + varlong_size(delta));
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(&record[rest..]);
    Ok(())
}
