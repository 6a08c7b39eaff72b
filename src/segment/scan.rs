//! The pure half of recovery: walk a segment's bytes, keep the longest valid prefix, and
//! rebuild the index entries Kafka's rule would have written for it. No I/O here, so the
//! fuzz target `recover_segment` and unit tests drive it directly.
//!
//! A batch is valid when its header parses, its length fits in what remains, its CRC and
//! record framing check out ([`codec::validate_batch`]), and its base offset is exactly the
//! next offset expected (the first one being the segment's base offset): an all-zero
//! header, a torn batch and a misdirected copy of another batch all end the prefix.

use crate::codec::{self, HEADER_SIZE_UP_TO_MAGIC, NO_TIMESTAMP};
use crate::error::{Error, Location};

use super::index::{offset_entry, time_entry};

/// Kafka's rule for sparse index entries, shared by append and recovery.
#[derive(Debug, Clone)]
pub struct IndexState {
    /// `index.interval.bytes`.
    pub interval_bytes: u64,
    /// Log bytes appended since the last offset-index entry.
    pub bytes_since_entry: u64,
    /// Largest timestamp in the segment so far, `NO_TIMESTAMP` when none.
    pub max_timestamp: i64,
    /// Relative offset of the last record of the batch holding `max_timestamp`.
    pub offset_of_max_timestamp: u32,
    /// Timestamp of the last time-index entry.
    pub last_time_entry: Option<i64>,
}

/// Index entries a batch asks for.
#[derive(Debug, Default)]
pub struct NewEntries {
    /// An offset-index entry.
    pub offset: Option<[u8; 8]>,
    /// A time-index entry.
    pub time: Option<[u8; 12]>,
}

impl IndexState {
    /// A fresh state for an empty segment.
    pub fn new(interval_bytes: u64) -> IndexState {
        IndexState {
            interval_bytes,
            bytes_since_entry: 0,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: 0,
            last_time_entry: None,
        }
    }

    /// Accounts a batch of `size` bytes at `position` whose last record has relative
    /// offset `last_relative` and whose largest timestamp is `max_timestamp`.
    /// `offset_room` / `time_room` say whether the indexes can take another entry.
    pub(crate) fn on_batch(
        &mut self,
        last_relative: u32,
        position: u32,
        size: u64,
        max_timestamp: i64,
        offset_room: bool,
        time_room: bool,
    ) -> NewEntries {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max_timestamp = last_relative;
        }
        let mut entries = NewEntries::default();
        if self.bytes_since_entry > self.interval_bytes && offset_room {
            entries.offset = Some(offset_entry(last_relative, position));
            if time_room {
                entries.time = self.time_entry();
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += size;
        entries
    }

    /// The time-index entry for the largest timestamp so far, when it is newer than the
    /// last entry (Kafka's `maybeAppend`); the entry is then taken as written.
    pub(crate) fn time_entry(&mut self) -> Option<[u8; 12]> {
        if self.max_timestamp == NO_TIMESTAMP
            || self
                .last_time_entry
                .is_some_and(|t| t >= self.max_timestamp)
        {
            return None;
        }
        self.last_time_entry = Some(self.max_timestamp);
        Some(time_entry(self.max_timestamp, self.offset_of_max_timestamp))
    }
}

/// What a scan found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Bytes of the valid prefix.
    pub valid_len: usize,
    /// The offset after the valid prefix's last record.
    pub next_offset: u64,
    /// Valid batches.
    pub batches: u64,
    /// Rebuilt offset-index entries, encoded.
    pub offset_index: Vec<u8>,
    /// Rebuilt time-index entries, encoded.
    pub time_index: Vec<u8>,
    /// Index state after the prefix, for further appends.
    pub index_state: IndexState,
    /// The first batch's largest timestamp (`NO_TIMESTAMP` when none): the segment-roll clock.
    pub first_batch_timestamp: i64,
    /// Why the scan stopped before the end, when bytes other than zeros follow the prefix.
    pub stop: Option<Error>,
    /// End of the non-zero bytes after the valid prefix (`valid_len` when only zeros follow).
    pub garbage_end: usize,
    /// Non-zero bytes after the valid prefix (preallocated zeros are not garbage).
    pub garbage_bytes: usize,
}

/// Limits of a scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Largest batch accepted (the segment size: no batch can be larger).
    pub max_batch_bytes: usize,
    /// Index entries that fit in the offset and time indexes.
    /// Entries the offset index can hold.
    pub max_offset_entries: usize,
    /// Entries the time index can hold.
    pub max_time_entries: usize,
}

/// Scans `bytes` (a whole segment, base offset `base_offset`) from position `start`, where
/// the batch at `start` must begin with offset `expected`.
pub fn scan(
    bytes: &[u8],
    base_offset: u64,
    start: usize,
    expected: u64,
    mut state: IndexState,
    limits: ScanLimits,
) -> ScanOutcome {
    let mut position = start;
    let mut next = expected;
    let mut batches = 0;
    let mut offset_index = Vec::new();
    let mut time_index = Vec::new();
    let mut first_batch_timestamp = NO_TIMESTAMP;
    let mut stop = None;
    while position < bytes.len() {
        match check_batch(
            &bytes[position..],
            base_offset,
            next,
            limits.max_batch_bytes,
        ) {
            Ok((size, last_offset, max_timestamp)) => {
                if position == 0 {
                    first_batch_timestamp = max_timestamp;
                }
                let offset_room = offset_index.len() / 8 < limits.max_offset_entries;
                let time_room = time_index.len() / 12 + 1 < limits.max_time_entries;
                let last_relative = (last_offset - base_offset) as u32;
                let entries = state.on_batch(
                    last_relative,
                    position as u32,
                    size as u64,
                    max_timestamp,
                    offset_room,
                    time_room,
                );
                if let Some(e) = entries.offset {
                    offset_index.extend_from_slice(&e);
                }
                if let Some(e) = entries.time {
                    time_index.extend_from_slice(&e);
                }
                next = last_offset + 1;
                position += size;
                batches += 1;
            }
            Err(error) => {
                stop = Some(match error {
                    Error::Corruption {
                        location: Location::Buffer { position: p },
                        what,
                        detail,
                    } => Error::Corruption {
                        location: Location::Buffer {
                            position: position + p,
                        },
                        what,
                        detail,
                    },
                    other => other,
                });
                break;
            }
        }
    }
    let garbage_end = bytes[position..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(position, |i| position + i + 1);
    if garbage_end == position {
        stop = None;
    }
    let garbage_bytes = discarded_bytes(&bytes[position..garbage_end]);
    ScanOutcome {
        valid_len: position,
        next_offset: next,
        batches,
        offset_index,
        time_index,
        index_state: state,
        first_batch_timestamp,
        stop,
        garbage_end,
        garbage_bytes,
    }
}

/// Bytes of a cut tail that held something: all of them except runs of 64 or more zeros,
/// which are preallocated space rather than written data (random or torn bytes almost never
/// hold such a run; a record of zeros would be undercounted, which only affects the report).
fn discarded_bytes(tail: &[u8]) -> usize {
    const RUN: usize = 64;
    let (mut count, mut zeros) = (0, 0);
    for &b in tail {
        if b == 0 {
            zeros += 1;
        } else {
            if zeros < RUN {
                count += zeros;
            }
            zeros = 0;
            count += 1;
        }
    }
    count
}

/// Checks the batch at the start of `rest`: returns (size, last offset, max timestamp).
fn check_batch(
    rest: &[u8],
    base_offset: u64,
    expected: u64,
    max_batch: usize,
) -> Result<(usize, u64, i64), Error> {
    let corrupt = |position: usize, what: &'static str, detail: String| Error::Corruption {
        location: Location::Buffer { position },
        what,
        detail,
    };
    if rest.len() < HEADER_SIZE_UP_TO_MAGIC {
        return Err(corrupt(
            0,
            "batch header",
            format!("only {} bytes left", rest.len()),
        ));
    }
    let size = codec::peek_batch_size(rest)
        .ok_or_else(|| corrupt(8, "batch length", "negative".into()))?;
    if size > rest.len() {
        return Err(corrupt(
            8,
            "batch length",
            format!("{size} bytes, only {} left (torn write)", rest.len()),
        ));
    }
    let header = codec::validate_batch(&rest[..size], max_batch)?;
    if header.base_offset as u64 != expected {
        return Err(corrupt(
            0,
            "batch base offset",
            format!("expected {expected}, found {}", header.base_offset),
        ));
    }
    let last = header.last_offset() as u64;
    if last - base_offset > i32::MAX as u64 {
        return Err(corrupt(
            23,
            "batch last offset",
            format!("{last} is too far from segment base {base_offset}"),
        ));
    }
    Ok((size, last, header.max_timestamp))
}
