//! Log compaction: Kafka's log cleaner (`LogCleaner`, `LogCleanerManager`) on one replica.
//!
//! A cleaning keeps, below the cleanable end, the latest record of each key; offsets never
//! change. Kafka's rules, with tarnlog's choices marked:
//!
//! - **What is cleanable** ([`ReplicaLog::cleanable`], on the leader). The dirty part starts
//!   at the cleaner checkpoint (the log start when there is none) and ends at the first
//!   uncleanable offset: the active segment's base, the first segment not wholly below the
//!   high watermark, or the first dirty segment holding a record newer than
//!   `min_compaction_lag_ms`. A cleaning is due when the dirty share of the log exceeds
//!   `min_cleanable_dirty_ratio`, or when the oldest dirty segment's first batch is older
//!   than `max_compaction_lag_ms`.
//! - **The offset map.** Key → latest offset over the dirty part, at most `map_entries`
//!   keys; when it fills, only the part mapped so far counts as cleaned and the next
//!   cleaning continues from there (Kafka's `SkimpyOffsetMap`, which holds MD5 digests;
//!   tarnlog maps the key bytes themselves, borrowed from the segments, so two keys never
//!   collide).
//! - **Which records stay.** Everything at or past the mapped end; below it, a record with
//!   a key whose offset is the key's latest (or whose key the map does not hold), unless it
//!   is a tombstone (null value) whose batch's delete horizon has passed. Records without a
//!   key go (a compacted topic refuses them at append). The first cleaning that keeps a
//!   tombstone stores `now + delete_retention_ms` in its batch (attribute bit 6 and
//!   `baseTimestamp`, KIP-534), so a tombstone lives at least that long after it was first
//!   cleaned. Control batches stay as they are.
//! - **Batches.** A batch that keeps every record is copied byte for byte; one that loses
//!   some is rebuilt with the same base offset and last offset delta (so offsets, epochs
//!   and producer fields stay). *tarnlog's choice:* batches that lose every record are not
//!   dropped but replaced by one empty batch per run of them (same leader epoch), so the
//!   log's offsets stay contiguous from batch to batch, as recovery and follower copies
//!   check; a reader sees exactly what Kafka's gaps show: no records at those offsets.
//! - **Groups and the swap.** Segments from the log start to the mapped end are cleaned in
//!   groups that fit one segment (`segment_bytes`, index sizes, offset span), each written
//!   as `<first base>.{log,index,timeindex}.cleaned` and synced, then swapped in (Kafka's
//!   protocol): rename to `.swap` (the log last: its rename commits the swap), the old
//!   segments' files to `.deleted`, the `.swap` files to their final names, then unlink the
//!   `.deleted` ones, syncing the directory after each step. Opening a replica finishes a
//!   committed swap and removes the rest (see `load::list_segments`), so a kill at any
//!   point leaves either the old segments or the cleaned one, never both or neither.
//! - **Replicas.** Each replica cleans its own log with the leader's end offset (never past
//!   its own high watermark) and clock reading; replicas whose segments match clean to the
//!   same bytes. A record is removed only once the later record of its key is synced.
//!
//! Cleaning reads sealed segments only and takes the writer lock only for the swap, which
//! it abandons when retention, truncation or an earlier swap changed those segments
//! meanwhile. Readers holding records of a replaced segment keep its mapping.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ReplicaLog;
use crate::codec::{
    self, BatchHeader, DELETE_HORIZON_MASK, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    NO_TIMESTAMP, RECORD_BATCH_OVERHEAD, TimestampType,
};
use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::segment::scan::IndexState;
use crate::segment::{Index, IndexKind, Segment, file_name};
use crate::storage::{OpenMode, StorageFile, read_framed, write_framed};

/// The cleaner checkpoint, in the partition directory: where the next cleaning starts.
const CHECKPOINT: &str = "cleaner-offset-checkpoint";
const CHECKPOINT_MAGIC: [u8; 8] = *b"TNLCLEAN";
const CHECKPOINT_VERSION: u32 = 1;

/// The leader's view of how much of its log a cleaning would cover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cleanable {
    /// Where the dirty part starts.
    pub first_dirty: u64,
    /// Offsets below this may be cleaned (a segment base).
    pub end: u64,
    /// Dirty bytes over all bytes below `end`.
    pub dirty_ratio: f64,
    /// Whether a cleaning is due now (dirty ratio or maximum compaction lag).
    pub due: bool,
}

/// What one cleaning of one replica did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cleaned {
    /// Segments read and rewritten.
    pub segments: u64,
    /// Log bytes they held.
    pub bytes_read: u64,
    /// Log bytes of the cleaned segments that replaced them.
    pub bytes_written: u64,
    /// Records removed.
    pub records_removed: u64,
}

impl Cleaned {
    pub(crate) fn add(&mut self, other: Cleaned) {
        self.segments += other.segments;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.records_removed += other.records_removed;
    }
}

impl ReplicaLog {
    /// Where the next cleaning starts: the cleaner checkpoint, or the log start when the
    /// checkpoint lies outside the log.
    pub(crate) fn first_dirty_offset(&self) -> u64 {
        let start = self.log_start_offset();
        let point = self.cleaner_point.load(Ordering::Acquire);
        if point < start || point > self.log_end_offset() {
            start
        } else {
            point
        }
    }

    /// Reads the cleaner checkpoint at open. A damaged one, or one past the log end (which
    /// a cleaning never leaves, but a truncation cut short by a crash can), is dropped and
    /// overwritten at once: the next cleaning starts at the log start, and a stale value
    /// can never come back once the log grows past it again.
    pub(super) fn load_cleaner_point(&self) -> Result<()> {
        let path = self.path.join(CHECKPOINT);
        let point = match read_framed(&self.dir, &path, CHECKPOINT_MAGIC, CHECKPOINT_VERSION) {
            Ok(Some((_, body))) => std::str::from_utf8(&body)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok()),
            Ok(None) | Err(Error::Corruption { .. }) => None,
            Err(error) => return Err(error),
        };
        match point.filter(|&p| p <= self.log_end_offset()) {
            Some(point) => {
                self.cleaner_point.store(point, Ordering::Release);
                *self.cleaner_file.lock() = point;
                Ok(())
            }
            None if self.dir.storage().exists(&path) => self.write_cleaner_point(),
            None => {
                *self.cleaner_file.lock() = 0;
                Ok(())
            }
        }
    }

    /// Writes the cleaner checkpoint as it is in memory now.
    fn write_cleaner_point(&self) -> Result<()> {
        let mut written = self.cleaner_file.lock();
        let point = self.cleaner_point.load(Ordering::Acquire);
        // Unknown until written.
        *written = u64::MAX;
        write_framed(
            &self.dir,
            &self.path,
            CHECKPOINT,
            CHECKPOINT_MAGIC,
            CHECKPOINT_VERSION,
            point.to_string().as_bytes(),
        )?;
        *written = point;
        Ok(())
    }

    /// After a truncation to `end`: a checkpoint past it moves down to it, durably, before
    /// anything is appended again (Kafka's `maybeTruncateCheckpoint`): what is appended
    /// there was never cleaned.
    pub(super) fn lower_cleaner_point(&self, end: u64) -> Result<()> {
        self.cleaner_point.fetch_min(end, Ordering::AcqRel);
        let written = *self.cleaner_file.lock();
        if written > end {
            // The file may say more (a failed write leaves it unknown).
            self.write_cleaner_point()?;
        }
        Ok(())
    }

    /// Kafka's `cleanableOffsets` and dirty ratio on this log (the leader's), at `now`.
    pub(crate) fn cleanable(&self, now: i64) -> Cleanable {
        let config = self.config();
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let first_dirty = self.first_dirty_offset();
        let high_watermark = self.high_watermark();
        let upper = |i: usize| segments.get(i + 1).map(|s| s.base_offset);
        let mut end = segments.last().map_or(first_dirty, |s| s.base_offset);
        for (i, segment) in segments.iter().enumerate() {
            let Some(next) = upper(i) else { break };
            let too_new = config.min_compaction_lag_ms > 0 && next > first_dirty && {
                // A segment whose newest record time is unknown stays (as retention keeps
                // one).
                let newest = newest_timestamp(segment);
                newest == NO_TIMESTAMP || newest > now.saturating_sub(config.min_compaction_lag_ms)
            };
            if next > high_watermark || too_new {
                end = segment.base_offset;
                break;
            }
        }
        let end = end.max(first_dirty);
        let (mut clean, mut dirty) = (0u64, 0u64);
        let mut oldest_dirty: Option<&Arc<Segment>> = None;
        for (i, segment) in segments.iter().enumerate() {
            let Some(next) = upper(i) else { break };
            if next <= first_dirty {
                clean += segment.size() as u64;
            } else if segment.base_offset < end && first_dirty < end {
                dirty += segment.size() as u64;
                oldest_dirty.get_or_insert(segment);
            }
        }
        let dirty_ratio = share(dirty, clean + dirty);
        // Kafka's `maxCompactionDelay`: the earliest first-batch timestamp (a positive one)
        // among the dirty segments that are not active, past the lag.
        let earliest_first = segments
            .iter()
            .enumerate()
            .filter(|&(i, _)| upper(i).is_some_and(|next| next > first_dirty))
            .filter_map(|(_, segment)| segment.header_at(0).ok())
            .map(|header| header.max_timestamp)
            .filter(|&timestamp| timestamp > 0)
            .min();
        let lag_due = oldest_dirty.is_some()
            && earliest_first
                .is_some_and(|first| first < now.saturating_sub(config.max_compaction_lag_ms));
        Cleanable {
            first_dirty,
            end,
            dirty_ratio,
            due: dirty > 0 && (dirty_ratio > config.min_cleanable_dirty_ratio || lag_due),
        }
    }

    /// Cleans this replica below `limit` (the leader's cleanable end, rounded down to one of
    /// this replica's segment bases) at time `now`, with an offset map of at most
    /// `map_entries` keys. Returns at once, having done nothing, while another cleaning of
    /// this replica runs; `stop` aborts it between batches (`Error::Closed`).
    pub(crate) fn clean(
        &self,
        now: i64,
        limit: u64,
        map_entries: usize,
        stop: &AtomicBool,
    ) -> Result<Cleaned> {
        let Some(_cleaning) = self.cleaning.try_lock() else {
            return Ok(Cleaned::default());
        };
        if self.retired.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let result = self.clean_below(now, limit, map_entries, stop);
        if result.is_err() && self.writer.lock().closed {
            // The topic was deleted meanwhile (its files moved away under the cleaning).
            return Err(Error::Closed);
        }
        result
    }

    fn clean_below(
        &self,
        now: i64,
        limit: u64,
        map_entries: usize,
        stop: &AtomicBool,
    ) -> Result<Cleaned> {
        self.dir.check()?;
        let truncations = self.truncations.load(Ordering::Acquire);
        let config = self.config();
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let Some(active) = segments.last() else {
            return Ok(Cleaned::default());
        };
        // Never into the active segment, never past what consumers may see here.
        let limit = limit.min(active.base_offset).min(self.high_watermark());
        let end = segments
            .iter()
            .map(|s| s.base_offset)
            .filter(|&base| base <= limit)
            .max()
            .unwrap_or(0);
        let first_dirty = self.first_dirty_offset();
        if end <= first_dirty {
            return Ok(Cleaned::default());
        }
        let map = OffsetMap::build(&segments, first_dirty, end, map_entries.max(1), &|| {
            stopped(stop, &self.retired)
        })?;
        // A record is removed because a later one of its key exists: that one must survive
        // a power loss first (under `FsyncPolicy::None` a sealed segment may be unsynced).
        self.sync_to(map.end)?;
        // From the segment holding the log start: one wholly below it (left by a kill
        // while retention unlinked the segments it dropped, until its next pass) is read
        // by no one, and may not run on into the next (one between may be gone).
        let start = self.log_start_offset();
        let cleaning: Vec<Arc<Segment>> = segments
            .iter()
            .zip(
                segments
                    .iter()
                    .skip(1)
                    .map(|s| Some(s.base_offset))
                    .chain([None]),
            )
            .filter(|(s, next)| s.base_offset < map.end && next.is_none_or(|n| n > start))
            .map(|(s, _)| Arc::clone(s))
            .collect();
        let filter = Filter {
            map: &map,
            now,
            horizon: now.saturating_add(config.delete_retention_ms),
        };
        let mut cleaned = Cleaned::default();
        for group in groups(&cleaning, &segments, &config) {
            match self.clean_group(group, &filter, &config, truncations, stop)? {
                Some(done) => cleaned.add(done),
                // Changed meanwhile (retention, a truncation): cleaned next time.
                None => return Ok(cleaned),
            }
        }
        {
            let w = self.writer.lock();
            if self.truncations.load(Ordering::Acquire) != truncations || w.closed {
                return Ok(cleaned);
            }
            self.cleaner_point
                .fetch_max(map.end.min(w.next_offset), Ordering::AcqRel);
        }
        // A checkpoint lost in a crash only makes the next cleaning start earlier.
        self.write_cleaner_point()?;
        Ok(cleaned)
    }

    /// Writes the cleaned copy of `group` and swaps it in; `None` when the group changed
    /// meanwhile and the copy was discarded.
    fn clean_group(
        &self,
        group: &[Arc<Segment>],
        filter: &Filter<'_>,
        config: &TopicConfig,
        truncations: u64,
        stop: &AtomicBool,
    ) -> Result<Option<Cleaned>> {
        let base = group[0].base_offset;
        let written = self.write_cleaned(group, filter, config, stop);
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                self.remove_files(base, &["cleaned"]);
                return Err(error);
            }
        };
        Ok(self
            .swap_in(group, base, filter.map.end, truncations)?
            .then_some(written))
    }

    /// Writes `<base>.{log,index,timeindex}.cleaned` from `group`, synced.
    fn write_cleaned(
        &self,
        group: &[Arc<Segment>],
        filter: &Filter<'_>,
        config: &TopicConfig,
        stop: &AtomicBool,
    ) -> Result<Cleaned> {
        let base = group[0].base_offset;
        let [log_path, index_path, time_path] = suffixed(&self.path, base, "cleaned");
        let storage = self.dir.storage();
        let file = storage
            .open(&log_path, OpenMode::Truncate)
            .map_err(|e| Error::io("create", &log_path, e))?;
        let mut out = CleanedLog::new(Arc::clone(&file), &log_path, base, config);
        let mut cleaned = Cleaned::default();
        let mut run: Option<EmptyRun> = None;
        let mut scratch = Vec::new();
        let mut expected = base;
        for segment in group {
            cleaned.segments += 1;
            cleaned.bytes_read += segment.size() as u64;
            let bytes = segment.bytes();
            let mut position = 0;
            while position < bytes.len() {
                // At each batch: a `retire` (topic deletion) or the log's close waits for
                // this cleaning, so it stops within one batch, not one group of segments.
                if stopped(stop, &self.retired) {
                    return Err(Error::Closed);
                }
                let header = segment.header_at(position)?;
                let in_file = |e: Error| e.in_file(segment.log_path(), position as u64);
                if header.base_offset as u64 != expected {
                    // The base offset is outside the CRC: what recovery would refuse is
                    // never written into a cleaned segment.
                    let detail = format!("expected {expected}, found {}", header.base_offset);
                    return Err(in_file(codec::corruption(0, "batch base offset", detail)));
                }
                expected = header.next_offset() as u64;
                let batch = &bytes[position..position + header.size()];
                if !filter.map.verified(&header) {
                    codec::verify_crc(batch).map_err(in_file)?;
                }
                let kept = filter
                    .batch(batch, &header, &mut scratch)
                    .map_err(in_file)?;
                cleaned.records_removed += kept.removed;
                if kept.output == Output::Drop {
                    // A batch that does not continue the run starts another.
                    if !run.as_mut().is_some_and(|open| open.extend(&header))
                        && let Some(done) = run.replace(EmptyRun::start(&header))
                    {
                        out.push_empty(&done)?;
                    }
                } else {
                    if let Some(done) = run.take() {
                        out.push_empty(&done)?;
                    }
                    let bytes: &[u8] = if kept.output == Output::Copy {
                        batch
                    } else {
                        &scratch
                    };
                    let header = BatchHeader::parse(bytes, bytes.len())?;
                    out.push(bytes, &header)?;
                }
                position += header.size();
            }
        }
        if let Some(done) = run.take() {
            out.push_empty(&done)?;
        }
        let (len, offset_entries, time_entries) = out.finish()?;
        self.dir.sync("fsync", &log_path, || file.sync_all())?;
        cleaned.bytes_written = len;
        for (path, entries) in [(&index_path, offset_entries), (&time_path, time_entries)] {
            let file = storage
                .open(path, OpenMode::Truncate)
                .map_err(|e| Error::io("create", path, e))?;
            crate::storage::write_all_at(file.as_ref(), &entries, 0)
                .map_err(|e| Error::io("write", path, e))?;
            self.dir.sync("fsync", path, || file.sync_all())?;
        }
        Ok(cleaned)
    }

    /// Kafka's `replaceSegments`: swaps the cleaned files of `base` in for `group`. Returns
    /// false, having removed the cleaned files, when the group changed since the cleaning
    /// began, or the log was truncated (the records the offset map rests on, up to
    /// `mapped`, may be gone). A failure after the swap was committed takes the directory
    /// offline (the files on disk and the segments in memory would disagree); opening it
    /// finishes the swap.
    fn swap_in(
        &self,
        group: &[Arc<Segment>],
        base: u64,
        mapped: u64,
        truncations: u64,
    ) -> Result<bool> {
        let w = self.writer.lock();
        let unchanged =
            self.truncations.load(Ordering::Acquire) == truncations && w.next_offset >= mapped && {
                let segments = self.segments.read();
                group.iter().all(|s| {
                    segments
                        .get(&s.base_offset)
                        .is_some_and(|current| Arc::ptr_eq(current, s))
                })
            };
        let usable = if w.closed {
            Err(Error::Closed)
        } else {
            self.dir.check()
        };
        if usable.is_err() || !unchanged {
            self.remove_files(base, &["cleaned"]);
            return usable.map(|()| false);
        }
        let storage = self.dir.storage();
        let rename = |from: &PathBuf, to: &PathBuf| {
            storage
                .rename(from, to)
                .map_err(|e| Error::io("rename", from, e))
        };
        let cleaned = suffixed(&self.path, base, "cleaned");
        let swap = suffixed(&self.path, base, "swap");
        let committed = (|| {
            // The log's rename commits the swap: the indexes go first.
            for i in [1, 2, 0] {
                rename(&cleaned[i], &swap[i])?;
            }
            self.dir.sync_dir(&self.path)
        })();
        if let Err(error) = committed {
            self.remove_files(base, &["cleaned", "swap"]);
            return Err(error);
        }
        let finished = (|| {
            for segment in group {
                for (path, doomed) in Segment::paths(&self.path, segment.base_offset)
                    .iter()
                    .zip(suffixed(&self.path, segment.base_offset, "deleted"))
                {
                    if storage.exists(path) {
                        rename(path, &doomed)?;
                    }
                }
            }
            self.dir.sync_dir(&self.path)?;
            let finals = Segment::paths(&self.path, base);
            for i in [1, 2, 0] {
                rename(&swap[i], &finals[i])?;
            }
            self.dir.sync_dir(&self.path)?;
            let open = |path: &PathBuf, kind| {
                Index::open_sealed(&self.dir, path.clone(), kind)?.ok_or_else(|| {
                    Error::io(
                        "open",
                        path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    )
                })
            };
            let index = open(&finals[1], IndexKind::Offset)?;
            let time_index = open(&finals[2], IndexKind::Time)?;
            Segment::open_sealed(&self.dir, &self.path, base, index, time_index)
        })();
        let fresh = match finished {
            Ok(segment) => {
                // Kafka's cleaned segment keeps the last replaced one's modification time:
                // time retention of records without timestamps counts from their writes,
                // not from the cleaning (in this run; after an open, from the file's).
                if let Some(last) = group.last() {
                    segment.touch(last.last_modified());
                }
                Arc::new(segment)
            }
            Err(error) => {
                self.dir.poison();
                return Err(error);
            }
        };
        {
            let mut segments = self.segments.write();
            for segment in group {
                segments.remove(&segment.base_offset);
            }
            segments.insert(base, fresh);
        }
        drop(w);
        // The swap is done: a file a kill leaves here is removed at the next open. A removal
        // that fails is an I/O error like any other (with several directories this one
        // goes offline, as Kafka's log directory does when it cannot delete a file).
        for segment in group {
            for path in suffixed(&self.path, segment.base_offset, "deleted") {
                if storage.exists(&path) {
                    storage
                        .remove_file(&path)
                        .map_err(|e| Error::io("remove", &path, e))?;
                }
            }
        }
        Ok(true)
    }

    /// Removes `<base>.{log,index,timeindex}.<suffix>` for each suffix, ignoring failures
    /// (the next open removes leftovers).
    fn remove_files(&self, base: u64, suffixes: &[&str]) {
        let storage = self.dir.storage();
        for suffix in suffixes {
            for path in suffixed(&self.path, base, suffix) {
                if storage.exists(&path) {
                    let _ = storage.remove_file(&path);
                }
            }
        }
    }
}

/// Whether a cleaning must stop: the log is closing or the replica was retired.
fn stopped(stop: &AtomicBool, retired: &AtomicBool) -> bool {
    stop.load(Ordering::Acquire) || retired.load(Ordering::Acquire)
}

/// `part / whole` (0 for an empty whole); a ratio compared with a configured one, where
/// the precision lost above 2^52 bytes does not matter.
#[allow(clippy::cast_precision_loss)]
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `<base>.{log,index,timeindex}.<suffix>`.
fn suffixed(dir: &std::path::Path, base: u64, suffix: &str) -> [PathBuf; 3] {
    ["log", "index", "timeindex"].map(|ext| dir.join(format!("{}.{suffix}", file_name(base, ext))))
}

/// The newest timestamp of a sealed segment (its last time-index entry); for one whose
/// records carry no timestamp, its last write (Kafka's `largestTimestamp`), as retention
/// counts it.
fn newest_timestamp(segment: &Segment) -> i64 {
    let newest = segment
        .time_index
        .last_time_entry()
        .map_or(NO_TIMESTAMP, |(timestamp, _)| timestamp);
    if newest < 0 {
        segment.last_modified()
    } else {
        newest
    }
}

/// Splits `cleaning` (consecutive segments) into groups that fit one segment: their log
/// bytes at most `segment_bytes`, their index entries at most what `segment_index_bytes`
/// holds, their offsets within 32 bits of the first base (Kafka's `groupSegmentsBySize`).
/// `all` is the whole log, for where each segment ends.
fn groups<'a>(
    cleaning: &'a [Arc<Segment>],
    all: &[Arc<Segment>],
    config: &TopicConfig,
) -> Vec<&'a [Arc<Segment>]> {
    let next_base = |segment: &Segment| {
        all.iter()
            .map(|s| s.base_offset)
            .find(|&b| b > segment.base_offset)
            .unwrap_or(segment.base_offset)
    };
    let max_offset_entries = (config.segment_index_bytes / 8) as usize;
    let max_time_entries = (config.segment_index_bytes / 12) as usize;
    let mut out = Vec::new();
    let mut start = 0;
    while start < cleaning.len() {
        let first = &cleaning[start];
        let (mut bytes, mut offsets, mut times) = (
            first.size() as u64,
            first.index.entries(),
            first.time_index.entries(),
        );
        let mut end = start + 1;
        while let Some(next) = cleaning.get(end) {
            bytes += next.size() as u64;
            offsets += next.index.entries();
            times += next.time_index.entries();
            let span = next_base(next) - 1 - first.base_offset;
            if bytes > config.segment_bytes
                || offsets > max_offset_entries
                || times + 1 > max_time_entries
                || span > i32::MAX as u64
            {
                break;
            }
            end += 1;
        }
        out.push(&cleaning[start..end]);
        start = end;
    }
    out
}

/// Key → latest offset over the dirty part, borrowing the keys from the segments.
struct OffsetMap<'a> {
    latest: HashMap<&'a [u8], u64>,
    /// Where mapping started (the first dirty offset).
    start: u64,
    /// Offsets below this were mapped; records at or past it are all kept.
    end: u64,
}

impl<'a> OffsetMap<'a> {
    /// Kafka's `buildOffsetMap`: maps `[first_dirty, end)` batch by batch until the map
    /// holds `capacity` keys and another keyed record comes (the batch being mapped then
    /// does not count, unless it is the first).
    fn build(
        segments: &'a [Arc<Segment>],
        first_dirty: u64,
        end: u64,
        capacity: usize,
        stopped: &dyn Fn() -> bool,
    ) -> Result<OffsetMap<'a>> {
        let mut latest = HashMap::new();
        let mut mapped = first_dirty;
        let mut any_batch = false;
        'segments: for (i, segment) in segments.iter().enumerate() {
            let next_base = segments.get(i + 1).map_or(u64::MAX, |s| s.base_offset);
            if next_base <= first_dirty {
                continue;
            }
            if segment.base_offset >= end {
                break;
            }
            let bytes = segment.bytes();
            let mut position = if segment.base_offset < first_dirty {
                segment
                    .translate_offset(first_dirty)?
                    .map_or(bytes.len(), |(position, _)| position)
            } else {
                0
            };
            while position < bytes.len() {
                if stopped() {
                    return Err(Error::Closed);
                }
                let header = segment.header_at(position)?;
                if header.base_offset as u64 >= end {
                    break 'segments;
                }
                let batch = &bytes[position..position + header.size()];
                let in_file = |e: Error| e.in_file(segment.log_path(), position as u64);
                codec::verify_crc(batch).map_err(in_file)?;
                let mut batch_latest = Vec::new();
                if !header.is_control() {
                    for record in codec::records(batch, &header) {
                        let record = record.map_err(in_file)?;
                        let offset = record.offset as u64;
                        if offset < first_dirty {
                            continue;
                        }
                        if let Some(key) = record.key {
                            batch_latest.push((key, offset));
                        }
                    }
                }
                if any_batch && latest.len() + new_keys(&latest, &batch_latest) > capacity {
                    break 'segments;
                }
                for (key, offset) in batch_latest {
                    latest.insert(key, offset);
                }
                any_batch = true;
                mapped = mapped.max(header.next_offset() as u64);
                position += header.size();
            }
        }
        Ok(OffsetMap {
            latest,
            start: first_dirty,
            end: mapped.min(end),
        })
    }

    /// Whether mapping CRC-checked this batch already (it lies within what was mapped).
    fn verified(&self, header: &BatchHeader) -> bool {
        header.base_offset as u64 >= self.start && header.next_offset() as u64 <= self.end
    }
}

/// How many of `batch`'s keys `map` does not hold yet.
fn new_keys(map: &HashMap<&[u8], u64>, batch: &[(&[u8], u64)]) -> usize {
    let mut fresh: Vec<&[u8]> = batch
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !map.contains_key(k))
        .collect();
    fresh.sort_unstable();
    fresh.dedup();
    fresh.len()
}

/// Which records a cleaning keeps.
struct Filter<'a> {
    map: &'a OffsetMap<'a>,
    now: i64,
    /// The delete horizon stored in batches whose tombstones are kept for the first time.
    horizon: i64,
}

/// What becomes of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// Every record stays as it is.
    Copy,
    /// Some records (or its horizon) changed: the rebuilt batch is in the scratch buffer.
    Rebuilt,
    /// No record stays.
    Drop,
}

struct Kept {
    output: Output,
    removed: u64,
}

impl Filter<'_> {
    /// Kafka's `shouldRetainRecord` over one batch; a rebuilt batch goes to `scratch`.
    fn batch(&self, batch: &[u8], header: &BatchHeader, scratch: &mut Vec<u8>) -> Result<Kept> {
        if header.is_control() {
            return Ok(Kept {
                output: Output::Copy,
                removed: 0,
            });
        }
        let mut kept: Vec<(usize, usize, i64)> = Vec::new();
        let mut tombstones = false;
        let mut total = 0u64;
        let mut records = codec::records(batch, header);
        loop {
            let start = records.position();
            let Some(record) = records.next() else { break };
            let record = record?;
            total += 1;
            let offset = record.offset as u64;
            let keep = offset >= self.map.end
                || record.key.is_some_and(|key| {
                    let latest = self.map.latest.get(key).is_none_or(|&l| offset >= l);
                    let live = record.value.is_some()
                        || header.delete_horizon().is_none_or(|h| self.now < h);
                    latest && live
                });
            if keep {
                tombstones |= record.value.is_none();
                kept.push((start, records.position(), record.timestamp));
            }
        }
        let removed = total - kept.len() as u64;
        if kept.is_empty() {
            return Ok(Kept {
                output: Output::Drop,
                removed,
            });
        }
        let set_horizon = tombstones && header.delete_horizon().is_none();
        if removed == 0 && !set_horizon {
            return Ok(Kept {
                output: Output::Copy,
                removed,
            });
        }
        let mut head = *header;
        head.records_count = kept.len() as i32;
        if head.timestamp_type() == TimestampType::CreateTime {
            head.max_timestamp = kept.iter().map(|k| k.2).max().unwrap_or(NO_TIMESTAMP);
        }
        let shift = if set_horizon {
            head.attributes |= DELETE_HORIZON_MASK;
            head.base_timestamp = self.horizon;
            self.horizon.wrapping_sub(header.base_timestamp)
        } else {
            0
        };
        scratch.clear();
        scratch.resize(RECORD_BATCH_OVERHEAD, 0);
        for (start, end, _) in kept {
            let record = &batch[start..end];
            if shift == 0 {
                scratch.extend_from_slice(record);
            } else {
                codec::rebase_record(record, shift, scratch)?;
            }
        }
        head.batch_length = (scratch.len() - codec::LOG_OVERHEAD) as i32;
        head.write_to(scratch);
        let crc = codec::compute_crc(scratch);
        scratch[codec::CRC_OFFSET..codec::ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
        Ok(Kept {
            output: Output::Rebuilt,
            removed,
        })
    }
}

/// A run of consecutive batches of one leader epoch that lost every record: written as one
/// empty batch covering their offsets.
struct EmptyRun {
    base: u64,
    last: u64,
    epoch: i32,
    max_timestamp: i64,
    append_time: bool,
}

impl EmptyRun {
    fn start(header: &BatchHeader) -> EmptyRun {
        EmptyRun {
            base: header.base_offset as u64,
            last: header.last_offset() as u64,
            epoch: header.partition_leader_epoch,
            max_timestamp: header.max_timestamp,
            append_time: header.timestamp_type() == TimestampType::LogAppendTime,
        }
    }

    /// Takes `header`'s batch into the run when it continues it.
    fn extend(&mut self, header: &BatchHeader) -> bool {
        let last = header.last_offset() as u64;
        let fits = header.base_offset as u64 == self.last + 1
            && header.partition_leader_epoch == self.epoch
            && i32::try_from(last - self.base).is_ok();
        if fits {
            self.last = last;
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        }
        fits
    }

    /// The empty batch: the run's offsets and epoch, its newest timestamp (so retention by
    /// time and the time index see the segment as old as its records were), no records.
    fn batch(&self) -> [u8; RECORD_BATCH_OVERHEAD] {
        let mut out = [0u8; RECORD_BATCH_OVERHEAD];
        self.header().write_to(&mut out);
        let crc = codec::compute_crc(&out);
        out[codec::CRC_OFFSET..codec::ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

impl EmptyRun {
    fn header(&self) -> BatchHeader {
        let run = self;
        BatchHeader {
            base_offset: run.base as i64,
            batch_length: (RECORD_BATCH_OVERHEAD - codec::LOG_OVERHEAD) as i32,
            partition_leader_epoch: run.epoch,
            magic: codec::MAGIC_V2,
            crc: 0,
            attributes: if run.append_time { 0x08 } else { 0 },
            last_offset_delta: (run.last - run.base) as i32,
            base_timestamp: run.max_timestamp,
            max_timestamp: run.max_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            records_count: 0,
        }
    }
}

/// The cleaned log file being written, with its index entries (Kafka's rule, as at append).
struct CleanedLog<'a> {
    file: Arc<dyn StorageFile>,
    path: &'a PathBuf,
    base: u64,
    buffer: Vec<u8>,
    /// Bytes written to the file so far.
    flushed: u64,
    index_state: IndexState,
    offset_entries: Vec<u8>,
    time_entries: Vec<u8>,
    max_offset_entries: usize,
    max_time_entries: usize,
}

/// Bytes gathered before each write.
const WRITE_CHUNK: usize = 1 << 20;

impl<'a> CleanedLog<'a> {
    fn new(
        file: Arc<dyn StorageFile>,
        path: &'a PathBuf,
        base: u64,
        config: &TopicConfig,
    ) -> CleanedLog<'a> {
        CleanedLog {
            file,
            path,
            base,
            buffer: Vec::with_capacity(WRITE_CHUNK),
            flushed: 0,
            index_state: IndexState::new(config.index_interval_bytes),
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            max_offset_entries: (config.segment_index_bytes / 8) as usize,
            max_time_entries: (config.segment_index_bytes / 12) as usize,
        }
    }

    fn push(&mut self, batch: &[u8], header: &BatchHeader) -> Result<()> {
        let position = self.flushed + self.buffer.len() as u64;
        let relative = (header.last_offset() as u64 - self.base) as u32;
        let entries = self.index_state.on_batch(
            relative,
            position as u32,
            batch.len() as u64,
            header.max_timestamp,
            self.offset_entries.len() / 8 < self.max_offset_entries,
            self.time_entries.len() / 12 + 1 < self.max_time_entries,
        );
        if let Some(entry) = entries.offset {
            self.offset_entries.extend_from_slice(&entry);
        }
        if let Some(entry) = entries.time {
            self.time_entries.extend_from_slice(&entry);
        }
        self.buffer.extend_from_slice(batch);
        if self.buffer.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        crate::storage::write_all_at(self.file.as_ref(), &self.buffer, self.flushed)
            .map_err(|e| Error::io("write", self.path, e))?;
        self.flushed += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn push_empty(&mut self, run: &EmptyRun) -> Result<()> {
        self.push(&run.batch(), &run.header())
    }

    /// Writes what is left (the caller syncs); returns the length and the index entries.
    fn finish(mut self) -> Result<(u64, Vec<u8>, Vec<u8>)> {
        self.flush()?;
        if let Some(entry) = self.index_state.time_entry() {
            self.time_entries.extend_from_slice(&entry);
        }
        Ok((self.flushed, self.offset_entries, self.time_entries))
    }
}

#[cfg(test)]
mod tests {
    //! Ported from Kafka's `LogCleanerTest`.
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::AtomicBool;

    use crate::codec::BatchBuilder;
    use crate::config::{CleanupPolicy, TopicConfig};
    use crate::replica::ReplicaLog;

    const NOW: i64 = 1_700_000_000_000;
    const DAY: i64 = 24 * 60 * 60 * 1000;

    fn replica(root: &std::path::Path) -> ReplicaLog {
        let config = TopicConfig::default()
            .segment_bytes(1024)
            .cleanup_policy(CleanupPolicy::Compact);
        crate::replica::test_replica(root, config, NOW)
    }

    fn append(log: &ReplicaLog, timestamp: i64, key: &str, value: Option<&str>) {
        let mut builder = BatchBuilder::new();
        builder.push(
            timestamp,
            Some(key.as_bytes()),
            value.map(str::as_bytes),
            &[],
        );
        log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
    }

    fn roll(log: &ReplicaLog) {
        let mut w = log.writer.lock();
        log.roll(&mut w, NOW, 0).unwrap();
    }

    fn clean(log: &ReplicaLog, first_dirty: u64, now: i64, map_entries: usize) {
        log.cleaner_point
            .store(first_dirty, std::sync::atomic::Ordering::Release);
        log.clean(now, u64::MAX, map_entries, &AtomicBool::new(false))
            .unwrap();
    }

    /// Every record: (offset, key, value).
    fn records(log: &ReplicaLog) -> Vec<(u64, String, Option<String>)> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let read = log.read(offset, 1 << 20, end).unwrap();
            for batch in read.batches() {
                let batch = batch.unwrap();
                for record in batch.records() {
                    let record = record.unwrap();
                    out.push((
                        record.offset as u64,
                        text(&record.key.unwrap()),
                        record.value.as_deref().map(text),
                    ));
                }
                offset = batch.next_offset() as u64;
            }
        }
        out
    }

    fn keys_and_offsets(log: &ReplicaLog) -> (Vec<String>, Vec<u64>) {
        records(log).into_iter().map(|(o, k, _)| (k, o)).unzip()
    }

    /// A segment wholly below the log start, with the one after it gone (a kill while
    /// retention unlinked the segments it dropped leaves such a map at the next open,
    /// until its next pass), is left out of a cleaning: before, the cleaning read on from
    /// it into the segment at the log start and failed at the gap between them.
    #[test]
    fn a_stale_segment_below_the_log_start_is_not_cleaned() {
        use std::sync::atomic::Ordering;
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        for segment in 0..4 {
            for key in ["a", "b", "a"] {
                append(&log, NOW, key, Some(&format!("{segment}")));
            }
            roll(&log);
        }
        let bases: Vec<u64> = log.segments.read().keys().copied().collect();
        assert_eq!(bases, [0, 3, 6, 9, 12]);
        log.segments.write().remove(&3);
        log.log_start.store(6, Ordering::Release);
        clean(&log, 6, NOW, 10);
        assert_eq!(
            records(&log),
            [
                (10, "b".into(), Some("3".into())),
                (11, "a".into(), Some("3".into()))
            ]
        );
    }

    /// `testPartialSegmentClean`: an offset map that holds one key still makes progress,
    /// one dirty offset per cleaning, and offsets never change.
    /// A cleaned segment keeps the last replaced one's modification time (Kafka's
    /// `cleanSegments`): time retention of records without timestamps counts from their
    /// writes, not from the cleaning.
    #[test]
    fn a_cleaned_segment_keeps_the_modification_time_of_the_last_it_replaces() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        for key in ["a", "b", "a"] {
            append(&log, -1, key, Some("v"));
        }
        roll(&log);
        let first = || log.segments.read().values().next().unwrap().last_modified();
        assert_eq!(first(), NOW, "the clock at the appends");
        clean(&log, 0, NOW, 10);
        assert_eq!(keys_and_offsets(&log).1, [1, 2], "cleaned");
        assert_eq!(first(), NOW);
    }

    #[test]
    fn partial_segment_clean() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        for key in ["0", "1", "0", "1", "0"] {
            append(&log, NOW, key, Some(key));
        }
        roll(&log);
        let expect = |keys: &[&str], offsets: &[u64]| {
            let (k, o) = keys_and_offsets(&log);
            assert_eq!(
                (k, o),
                (
                    keys.iter().map(ToString::to_string).collect(),
                    offsets.to_vec()
                )
            );
        };
        clean(&log, 2, NOW, 1);
        expect(&["1", "0", "1", "0"], &[1, 2, 3, 4]);
        clean(&log, 3, NOW, 1);
        expect(&["0", "1", "0"], &[2, 3, 4]);
        clean(&log, 4, NOW, 1);
        expect(&["1", "0"], &[3, 4]);
        assert_eq!(log.log_end_offset(), 5);
    }

    /// `testCleanTombstone`: a tombstone stays however old its timestamp, until the delete
    /// horizon set by the first cleaning that kept it (`now + delete_retention_ms`) passes.
    #[test]
    fn tombstone_kept_until_its_horizon() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        append(&log, NOW + DAY + 10_000, "0", Some("0"));
        roll(&log);
        clean(&log, 0, NOW, 10);
        append(&log, NOW - DAY - 10_000, "0", None);
        roll(&log);
        clean(&log, 1, NOW, 10);
        assert_eq!(records(&log), [(1, "0".to_string(), None)]);
        append(&log, NOW, "1", Some("1"));
        roll(&log);
        clean(&log, 2, NOW, 10);
        assert_eq!(
            records(&log),
            [
                (1, "0".to_string(), None),
                (2, "1".into(), Some("1".into()))
            ],
            "the tombstone stays until its horizon"
        );
        append(&log, NOW, "2", Some("2"));
        roll(&log);
        clean(&log, 3, NOW + DAY - 1, 10);
        assert_eq!(records(&log).len(), 3, "one millisecond before the horizon");
        append(&log, NOW, "3", Some("3"));
        roll(&log);
        clean(&log, 4, NOW + DAY, 10);
        let keys: Vec<String> = records(&log).into_iter().map(|(_, k, _)| k).collect();
        assert_eq!(keys, ["1", "2", "3"], "gone at the horizon");
        assert_eq!(log.log_end_offset(), 5);
    }

    /// A truncation below the cleaner checkpoint lowers it durably (Kafka's
    /// `maybeTruncateCheckpoint`): what is appended again is cleaned, so a tombstone written
    /// there still removes the older value, which would otherwise come back once the
    /// tombstone's horizon passed.
    #[test]
    fn truncation_lowers_the_cleaner_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        append(&log, NOW, "k", Some("v1"));
        for i in 0..6 {
            append(&log, NOW, &format!("a{i}"), Some("x"));
        }
        roll(&log);
        clean(&log, 0, NOW, 100);
        assert_eq!(log.first_dirty_offset(), 7);
        log.truncate_to(2).unwrap();
        assert_eq!(log.first_dirty_offset(), 2);
        let reopened = crate::replica::test_reopen(&log);
        assert_eq!(reopened.log_end_offset(), 2);
        assert_eq!(
            reopened.first_dirty_offset(),
            2,
            "the lowered checkpoint is durable"
        );
        drop(reopened);
        append(&log, NOW, "k", None);
        for i in 0..8 {
            append(&log, NOW, &format!("b{i}"), Some("y"));
        }
        roll(&log);
        let stop = AtomicBool::new(false);
        log.clean(NOW, u64::MAX, 100, &stop).unwrap();
        append(&log, NOW, "c", Some("z"));
        roll(&log);
        log.clean(NOW + DAY, u64::MAX, 100, &stop).unwrap();
        assert!(
            records(&log).iter().all(|(_, key, _)| key != "k"),
            "{:?}",
            records(&log)
        );
    }

    /// A truncation inside a batch cuts at the batch's start: the checkpoint goes there
    /// too, not to the offset asked for.
    #[test]
    fn truncation_inside_a_batch_lowers_the_checkpoint_to_its_start() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        append(&log, NOW, "k", Some("v1"));
        let mut builder = BatchBuilder::new();
        for key in ["a", "b", "c", "d"] {
            builder.push(NOW, Some(key.as_bytes()), Some(b"x"), &[]);
        }
        log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
        roll(&log);
        clean(&log, 0, NOW, 100);
        assert_eq!(log.first_dirty_offset(), 5);
        log.truncate_to(3).unwrap();
        assert_eq!(log.log_end_offset(), 1);
        assert_eq!(log.first_dirty_offset(), 1);
        assert_eq!(crate::replica::test_reopen(&log).first_dirty_offset(), 1);
    }

    /// A checkpoint past the log end (a truncation cut short by a crash) is dropped and
    /// overwritten at open, so that it cannot come back once the log grows past it.
    #[test]
    fn a_checkpoint_past_the_log_end_is_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        append(&log, NOW, "k", Some("v"));
        log.cleaner_point
            .store(1000, std::sync::atomic::Ordering::Release);
        log.write_cleaner_point().unwrap();
        let reopened = crate::replica::test_reopen(&log);
        assert_eq!(reopened.first_dirty_offset(), 0);
        let (_, body) = crate::storage::read_framed(
            &log.dir,
            &log.path.join(super::CHECKPOINT),
            super::CHECKPOINT_MAGIC,
            super::CHECKPOINT_VERSION,
        )
        .unwrap()
        .unwrap();
        assert_eq!(body, b"0");
    }

    /// `testCleaningWithDeletes`: a tombstone removes every earlier value of its key.
    #[test]
    fn tombstones_remove_earlier_values() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path());
        for i in 0..20 {
            let key = (i % 4).to_string();
            append(&log, NOW, &key, Some(&i.to_string()));
        }
        append(&log, NOW, "2", None);
        roll(&log);
        clean(&log, 0, NOW, 100);
        let left = records(&log);
        assert_eq!(
            left,
            [
                (16, "0".to_string(), Some("16".to_string())),
                (17, "1".into(), Some("17".into())),
                (19, "3".into(), Some("19".into())),
                (20, "2".into(), None),
            ]
        );
        // The log still covers every offset, in a few batches.
        assert_eq!(log.log_end_offset(), 21);
        assert!(log.size_bytes() < 21 * 70 / 2, "{}", log.size_bytes());
    }
}
