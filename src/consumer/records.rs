//! What `poll` returns: [`ConsumerRecords`], with owned [`ConsumerRecord`]s and borrowed
//! [`RecordRef`]s.
//!
//! Design: `poll` walks each batch's records once — the walk checks their framing, so
//! nothing after it can fail — and keeps, per record, a compact entry (offset, timestamp,
//! where its key, value and headers lie in the batch). The batch itself is held once per
//! run of records taken from it. Owned records, whose topic and `Bytes` reference counts
//! cost atomic operations, are made only when asked for: all at once by [`iter`] (kept for
//! later calls), one at a time by the by-value iterator, never by [`views`].
//!
//! [`iter`]: ConsumerRecords::iter
//! [`views`]: ConsumerRecords::views

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::codec::{Batch, Header, HeaderIter, HeadersView, RecordCursor, TimestampType};
use crate::error::Result;
use crate::types::TopicPartition;

/// One record as `poll` returns it (Kafka's `ConsumerRecord`). Key, value and header
/// values are zero-copy slices of the log's mapping; they stay valid after the log moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Its timestamp, meaning given by `timestamp_type`.
    pub timestamp: i64,
    /// `CreateTime` or `LogAppendTime`.
    pub timestamp_type: TimestampType,
    /// The key; `None` for null.
    pub key: Option<Bytes>,
    /// The value; `None` for null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// The leader epoch its batch was appended in (Kafka's `ConsumerRecord.leaderEpoch`);
    /// `None` for a batch without one. Commit it with the next offset
    /// ([`OffsetAndMetadata::leader_epoch`](crate::OffsetAndMetadata::leader_epoch)) so
    /// that a consumer resuming there can tell whether an unclean leader election cut the
    /// log under it (KIP-320).
    pub leader_epoch: Option<i32>,
}

impl ConsumerRecord {
    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }
}

/// Where a key, value or the headers lie in their batch; `len == NULL` for a null.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

const NULL: u32 = u32::MAX;

impl Span {
    /// The span of `part`, a slice of `batch` (or null).
    #[inline]
    fn of(batch: &[u8], part: Option<&[u8]>) -> Span {
        match part {
            Some(part) => Span {
                start: part.as_ptr().addr().wrapping_sub(batch.as_ptr().addr()) as u32,
                len: part.len() as u32,
            },
            None => Span {
                start: 0,
                len: NULL,
            },
        }
    }

    /// The bytes of the span in `batch`. The span was taken from that batch by `poll`, so
    /// the range is always inside it; were it not, the answer is empty, never a panic.
    #[inline]
    fn get(self, batch: &[u8]) -> Option<&[u8]> {
        if self.len == NULL {
            return None;
        }
        let start = self.start as usize;
        let bytes = batch.get(start..start + self.len as usize);
        debug_assert!(bytes.is_some(), "a span outside its batch");
        Some(bytes.unwrap_or_default())
    }
}

impl Span {
    /// The span as a zero-copy slice of `batch` (empty were it outside, never a panic).
    #[inline]
    fn slice(self, batch: &Bytes) -> Option<Bytes> {
        if self.len == NULL {
            return None;
        }
        let (start, end) = (self.start as usize, self.start as usize + self.len as usize);
        debug_assert!(end <= batch.len(), "a span outside its batch");
        Some(if end <= batch.len() {
            batch.slice(start..end)
        } else {
            Bytes::new()
        })
    }
}

/// One record of a poll, without reference counts: 48 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    timestamp: i64,
    key: Span,
    value: Span,
    /// The headers' bytes after their count (always present; empty without headers).
    headers: Span,
    header_count: u32,
}

/// A run of a poll's records taken from one batch.
#[derive(Debug, Clone)]
struct Chunk {
    topic: Arc<str>,
    partition: u32,
    timestamp_type: TimestampType,
    leader_epoch: Option<i32>,
    batch: Bytes,
    /// One past the index of the run's last entry.
    end: usize,
}

/// What one `poll` returned, in partition-then-offset order.
///
/// Three ways to read it:
/// - by value (`for record in records`): owned [`ConsumerRecord`]s, made one at a time;
/// - by reference ([`iter`](Self::iter), `for record in &records`,
///   [`records`](Self::records)): all owned records are made at the first such call and
///   kept;
/// - [`views`](Self::views): borrowed [`RecordRef`]s, made from what `poll` already holds
///   without touching any reference count — the fastest way through a poll.
///
/// ```
/// use std::time::Duration;
/// use tarnlog::{AutoOffsetReset, ConsumerConfig, Log, ProducerConfig, ProducerRecord};
/// use tarnlog::{TopicConfig, TopicPartition};
///
/// let log = Log::temp()?;
/// log.create_topic("events", TopicConfig::default())?;
/// let producer = log.producer(ProducerConfig::default())?;
/// producer.send(ProducerRecord::new("events").key("k").value("hello"))?.wait()?;
///
/// let config = ConsumerConfig::default().auto_offset_reset(AutoOffsetReset::Earliest);
/// let mut consumer = log.consumer(config)?;
/// consumer.assign([TopicPartition::new("events", 0)])?;
/// let records = consumer.poll(Duration::from_secs(1))?;
/// for record in records.views() {
///     assert_eq!(record.value(), Some(&b"hello"[..]));
///     // An owned copy (zero-copy slices) when the record must outlive the poll.
///     let owned = record.to_record();
///     assert_eq!(owned.offset, 0);
/// }
/// # Ok::<(), tarnlog::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ConsumerRecords {
    chunks: Vec<Chunk>,
    entries: Vec<Entry>,
    /// The owned records, made at the first call that lends them out.
    owned: OnceLock<Vec<ConsumerRecord>>,
}

impl ConsumerRecords {
    /// How many records.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// True when the poll returned nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The records, in order, as owned records (made at the first call and kept).
    pub fn iter(&self) -> std::slice::Iter<'_, ConsumerRecord> {
        self.owned().iter()
    }

    /// The records, in order, borrowed from the poll: no reference count is touched.
    pub fn views(&self) -> RecordViews<'_> {
        RecordViews {
            chunks: &self.chunks,
            entries: self.entries.iter(),
            index: 0,
            chunk: 0,
        }
    }

    /// The records of one partition, in offset order.
    pub fn records(&self, tp: &TopicPartition) -> Vec<&ConsumerRecord> {
        self.iter()
            .filter(|r| r.partition == tp.partition && *r.topic == *tp.topic)
            .collect()
    }

    /// The partitions with records in this poll.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut out: Vec<TopicPartition> = Vec::new();
        for chunk in &self.chunks {
            let tp = TopicPartition::new(&*chunk.topic, chunk.partition);
            if !out.contains(&tp) {
                out.push(tp);
            }
        }
        out
    }

    fn owned(&self) -> &Vec<ConsumerRecord> {
        self.owned.get_or_init(|| {
            let mut chunk = 0;
            let mut out = Vec::with_capacity(self.entries.len());
            for (index, entry) in self.entries.iter().enumerate() {
                chunk = chunk_of(&self.chunks, chunk, index);
                if let Some(chunk) = self.chunks.get(chunk) {
                    out.push(owned(chunk, entry));
                }
            }
            out
        })
    }
}

impl fmt::Debug for ConsumerRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.views()).finish()
    }
}

impl PartialEq for ConsumerRecords {
    fn eq(&self, other: &Self) -> bool {
        self.count() == other.count() && self.views().eq(other.views())
    }
}

impl Eq for ConsumerRecords {}

impl IntoIterator for ConsumerRecords {
    type Item = ConsumerRecord;
    type IntoIter = OwnedRecords;

    fn into_iter(mut self) -> OwnedRecords {
        OwnedRecords {
            owned: self.owned.take().map(Vec::into_iter),
            chunks: self.chunks,
            entries: self.entries.into_iter(),
            index: 0,
            chunk: 0,
        }
    }
}

impl<'a> IntoIterator for &'a ConsumerRecords {
    type Item = &'a ConsumerRecord;
    type IntoIter = std::slice::Iter<'a, ConsumerRecord>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The index of the chunk holding entry `index`, searching on from `chunk`.
#[inline]
fn chunk_of(chunks: &[Chunk], mut chunk: usize, index: usize) -> usize {
    while chunks.get(chunk).is_some_and(|c| c.end <= index) {
        chunk += 1;
    }
    chunk
}

/// The borrowed view of `entry`, a record of `chunk`.
#[inline]
fn view<'a>(chunk: &'a Chunk, entry: &Entry) -> RecordRef<'a> {
    let batch = &chunk.batch;
    RecordRef {
        topic: &chunk.topic,
        partition: chunk.partition,
        offset: entry.offset,
        timestamp: entry.timestamp,
        timestamp_type: chunk.timestamp_type,
        leader_epoch: chunk.leader_epoch,
        key: entry.key.get(batch),
        value: entry.value.get(batch),
        headers: entry.headers.get(batch).unwrap_or_default(),
        header_count: entry.header_count,
        batch,
    }
}

/// The owned record of `entry`, a record of `chunk`: the same as
/// `view(chunk, entry).to_record()`, without going through the view.
#[inline]
fn owned(chunk: &Chunk, entry: &Entry) -> ConsumerRecord {
    ConsumerRecord {
        topic: Arc::clone(&chunk.topic),
        partition: chunk.partition,
        offset: entry.offset,
        timestamp: entry.timestamp,
        timestamp_type: chunk.timestamp_type,
        key: entry.key.slice(&chunk.batch),
        value: entry.value.slice(&chunk.batch),
        headers: if entry.header_count == 0 {
            Vec::new()
        } else {
            view(chunk, entry).owned_headers()
        },
        leader_epoch: chunk.leader_epoch,
    }
}

/// The by-value iterator of [`ConsumerRecords`]: owned records made one at a time.
pub struct OwnedRecords {
    /// Records already made by [`ConsumerRecords::iter`], handed out instead.
    owned: Option<std::vec::IntoIter<ConsumerRecord>>,
    chunks: Vec<Chunk>,
    entries: std::vec::IntoIter<Entry>,
    index: usize,
    chunk: usize,
}

impl Iterator for OwnedRecords {
    type Item = ConsumerRecord;

    #[inline]
    fn next(&mut self) -> Option<ConsumerRecord> {
        if let Some(owned) = &mut self.owned {
            return owned.next();
        }
        let entry = self.entries.next()?;
        self.chunk = chunk_of(&self.chunks, self.chunk, self.index);
        self.index += 1;
        let chunk = self.chunks.get(self.chunk)?;
        Some(owned(chunk, &entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.owned {
            Some(owned) => owned.size_hint(),
            None => self.entries.size_hint(),
        }
    }
}

impl ExactSizeIterator for OwnedRecords {}

impl std::iter::FusedIterator for OwnedRecords {}

impl fmt::Debug for OwnedRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRecords")
            .field("remaining", &self.len())
            .finish_non_exhaustive()
    }
}

/// The iterator of [`ConsumerRecords::views`].
#[derive(Clone)]
pub struct RecordViews<'a> {
    chunks: &'a [Chunk],
    entries: std::slice::Iter<'a, Entry>,
    index: usize,
    chunk: usize,
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = RecordRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordRef<'a>> {
        let entry = self.entries.next()?;
        self.chunk = chunk_of(self.chunks, self.chunk, self.index);
        self.index += 1;
        Some(view(self.chunks.get(self.chunk)?, entry))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for RecordViews<'_> {}

impl std::iter::FusedIterator for RecordViews<'_> {}

impl fmt::Debug for RecordViews<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordViews")
            .field("remaining", &self.len())
            .finish_non_exhaustive()
    }
}

/// One record of a poll, borrowed from it: what [`ConsumerRecord`] holds, without the
/// reference counts. [`RecordRef::to_record`] makes the owned record.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    topic: &'a Arc<str>,
    partition: u32,
    offset: u64,
    timestamp: i64,
    timestamp_type: TimestampType,
    leader_epoch: Option<i32>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
    batch: &'a Bytes,
}

impl<'a> RecordRef<'a> {
    /// The topic.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&**self.topic, self.partition)
    }

    /// The record's offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its timestamp, meaning given by [`RecordRef::timestamp_type`].
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// `CreateTime` or `LogAppendTime`.
    pub fn timestamp_type(&self) -> TimestampType {
        self.timestamp_type
    }

    /// The leader epoch its batch was appended in, if any (see
    /// [`ConsumerRecord::leader_epoch`]).
    pub fn leader_epoch(&self) -> Option<i32> {
        self.leader_epoch
    }

    /// The key; `None` for null.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value; `None` for null (a tombstone).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }

    /// The headers in order, as `(key, value)`; a `None` value is a null.
    pub fn headers(&self) -> RecordHeaders<'a> {
        RecordHeaders {
            inner: HeadersView::from_raw(self.headers, self.header_count as usize).iter(),
        }
    }

    /// The owned record: the same bytes, as zero-copy `Bytes` slices of the log.
    pub fn to_record(&self) -> ConsumerRecord {
        let batch = self.batch;
        ConsumerRecord {
            topic: Arc::clone(self.topic),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key: self.key.map(|k| batch.slice_ref(k)),
            value: self.value.map(|v| batch.slice_ref(v)),
            headers: if self.header_count == 0 {
                Vec::new()
            } else {
                self.owned_headers()
            },
            leader_epoch: self.leader_epoch,
        }
    }

    #[inline(never)]
    fn owned_headers(&self) -> Vec<Header> {
        self.headers()
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.map(|v| self.batch.slice_ref(v)),
            })
            .collect()
    }
}

impl PartialEq for RecordRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self.topic == **other.topic
            && self.partition == other.partition
            && self.offset == other.offset
            && self.timestamp == other.timestamp
            && self.timestamp_type == other.timestamp_type
            && self.key == other.key
            && self.value == other.value
            && self.headers().eq(other.headers())
    }
}

impl Eq for RecordRef<'_> {}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("timestamp_type", &self.timestamp_type)
            .field("key", &self.key.map(Bytes::copy_from_slice))
            .field("value", &self.value.map(Bytes::copy_from_slice))
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

/// The headers of a [`RecordRef`], as `(key, value)` pairs in order.
#[derive(Debug)]
pub struct RecordHeaders<'a> {
    inner: HeaderIter<'a>,
}

impl<'a> Iterator for RecordHeaders<'a> {
    type Item = (&'a str, Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        // `poll` walked every header of the record before handing it out, so the framing
        // is known good; an error here cannot happen and would only end the iteration.
        self.inner.next()?.ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// Builds a poll's records: [`take_records`] adds the records of one batch at a time.
#[derive(Debug, Default)]
pub(super) struct PollBuilder {
    chunks: Vec<Chunk>,
    entries: Vec<Entry>,
}

impl PollBuilder {
    /// An empty poll with room for `records` records.
    pub(super) fn with_capacity(records: usize) -> Self {
        PollBuilder {
            chunks: Vec::new(),
            entries: Vec::with_capacity(records),
        }
    }

    /// How many records so far.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True while no record was added.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The poll's records.
    pub(super) fn finish(self) -> ConsumerRecords {
        debug_assert_eq!(self.chunks.last().map_or(0, |c| c.end), self.entries.len());
        debug_assert!(self.chunks.windows(2).all(|w| w[0].end < w[1].end));
        ConsumerRecords {
            chunks: self.chunks,
            entries: self.entries,
            owned: OnceLock::new(),
        }
    }

    /// Adds the records of `batch` at or after `next`, from `cursor` (where an earlier
    /// call stopped), until the poll holds `max_records`; `next` becomes the offset after
    /// the last one taken. True when the poll filled up first, with `cursor` at the next
    /// record. Records taken before a framing error stay in the poll.
    pub(super) fn take_records(
        &mut self,
        batch: &Batch,
        cursor: &mut Option<RecordCursor>,
        topic: &Arc<str>,
        partition: u32,
        next: &mut u64,
        max_records: usize,
    ) -> Result<bool> {
        let before = self.entries.len();
        let taken = take_records(batch, cursor, next, max_records, &mut self.entries);
        if self.entries.len() > before {
            self.chunks.push(Chunk {
                topic: Arc::clone(topic),
                partition,
                timestamp_type: batch.header().timestamp_type(),
                leader_epoch: Some(batch.header().partition_leader_epoch).filter(|&e| e >= 0),
                batch: batch.bytes().clone(),
                end: self.entries.len(),
            });
        }
        taken
    }
}

/// The loop of [`PollBuilder::take_records`]. Kept out of line: inlined into `poll`, an
/// earlier form of the same loop measured a fifth slower, and its speed had swung with
/// unrelated edits to `poll`.
#[inline(never)]
fn take_records(
    batch: &Batch,
    cursor: &mut Option<RecordCursor>,
    next: &mut u64,
    max_records: usize,
    out: &mut Vec<Entry>,
) -> Result<bool> {
    let bytes: &[u8] = batch.bytes();
    let mut records = batch.iter().resume(*cursor);
    loop {
        if out.len() >= max_records {
            *cursor = records.cursor();
            return Ok(true);
        }
        let Some(view) = records.next() else {
            return Ok(false);
        };
        let view = view?;
        let offset = view.offset as u64;
        if offset < *next {
            continue;
        }
        let (headers, header_count) = view.headers.raw();
        out.push(Entry {
            offset,
            timestamp: view.timestamp,
            key: Span::of(bytes, view.key),
            value: Span::of(bytes, view.value),
            headers: Span::of(bytes, Some(headers)),
            header_count: header_count as u32,
        });
        *next = offset + 1;
    }
}
