//! One replica of one partition in one storage directory: its segments, append, read,
//! roll, truncation and durability.
//!
//! Concurrency: one writer at a time (the `writer` lock) stores bytes above the active
//! segment's published end, publishes them, then advances `log_end` (Release). Readers load
//! `log_end`/`high_watermark` (Acquire), clone the segment `Arc`s they need under a brief
//! read lock, and read published bytes only, so a read never blocks an append for long and
//! never sees a torn batch. A sealed or deleted segment stays mapped while a reader holds it.

mod clean;
mod durability;
pub(crate) mod epochs;
mod floor;
mod load;
mod retention;
mod set;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::clock::Clock;
use crate::codec::{
    self, BatchHeader, LAST_OFFSET_DELTA_OFFSET, NO_TIMESTAMP, RECORD_BATCH_OVERHEAD, TimestampType,
};
use crate::config::{FsyncPolicy, TopicConfig};
use crate::error::{Error, Location, Result};
use crate::read::LogRead;
use crate::segment::scan::IndexState;
use crate::segment::{Segment, SegmentSizes};
use crate::storage::StorageDir;
use crate::types::{AppendInfo, TimestampOffset, TopicPartition};

pub(crate) use clean::Cleaned;
pub(crate) use durability::SyncState;
use epochs::{EpochCache, Epochs};
pub(crate) use load::{LoadOptions, partition_dir_name};
pub(crate) use retention::Deleted;
pub(crate) use set::{PersistHook, ReplicaSet, SetOptions, Slot, Standing, VisibleHook};

/// Largest growth step of an active segment file.
const LOG_CHUNK_MAX: usize = 4 << 20;
/// Smallest growth step.
const LOG_CHUNK_MIN: usize = 256 << 10;

/// The writer's state, behind the writer lock.
#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    /// How far background growth of the active segment was asked to go.
    requested_ahead: usize,
    index_state: IndexState,
    /// Largest timestamp of the active segment's first batch (the time-roll clock).
    first_batch_timestamp: i64,
    /// When the active segment was created (for segments whose first batch has no time).
    created_ms: i64,
    next_offset: u64,
    /// Set by `close`: the files are trimmed, nothing more may be written.
    closed: bool,
}

/// One partition replica.
#[derive(Debug)]
pub(crate) struct ReplicaLog {
    tp: TopicPartition,
    dir: Arc<StorageDir>,
    path: PathBuf,
    /// The topic's config; `alter_topic_config` replaces it while the log runs.
    config: RwLock<TopicConfig>,
    clock: Arc<dyn Clock>,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Segments retention took out of the map whose files are still to be unlinked: each
    /// one's base offset and the log start that removed it, which must be checkpointed in
    /// this replica's directory first (see `unlink_deleted`).
    unlinking: Mutex<Vec<(u64, u64)>>,
    /// The highest log start a checkpoint written to this replica's directory holds.
    start_checkpointed: AtomicU64,
    writer: Mutex<Writer>,
    log_end: AtomicU64,
    log_start: AtomicU64,
    high_watermark: AtomicU64,
    recovery_point: AtomicU64,
    leader_epoch: AtomicI32,
    /// Where each leader epoch starts in this log, and its checkpoint file; behind the
    /// writer lock when both are taken.
    epochs: Epochs,
    /// Base offsets of segments a roll sealed without syncing them (a follower's copy,
    /// policy `None`): the next sync does (see `sync_active`).
    sealed_unsynced: Mutex<std::collections::BTreeSet<u64>>,
    /// Part of a replicated partition: the high watermark moves only when the replica set
    /// says so (the smallest log end among in-sync replicas), not at each append.
    replicated: std::sync::atomic::AtomicBool,
    prefaulter: Option<Prefaulter>,
    /// Where the next cleaning starts (the cleaner checkpoint; see `first_dirty_offset`).
    cleaner_point: AtomicU64,
    /// Held while the log is being cleaned: one cleaning at a time.
    cleaning: Mutex<()>,
    /// Serialises writes of the cleaner checkpoint file (each writes the value current
    /// under it, so the last one written is the newest); holds the value last written
    /// (`u64::MAX`: unknown).
    cleaner_file: Mutex<u64>,
    /// Bumped (under the writer lock) before and after each truncation or restart, so odd
    /// while one runs: a cleaning gives up when one happened meanwhile, as its offset map may
    /// rest on records cut since; a read that found offsets out of order tries again.
    truncations: AtomicU64,
    /// The recovery floor file (see [`floor`]); held through each cut.
    floor: Mutex<floor::Floor>,
    /// Set by `retire`: a cleaning running now stops at its next batch.
    retired: std::sync::atomic::AtomicBool,
    /// Its directory holds the `REBUILDING` marker: recreated empty and not yet level
    /// with a leader (see `ReplicaSet::rebuilt`).
    rebuilding: std::sync::atomic::AtomicBool,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

impl ReplicaLog {
    pub(crate) fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// Whether the replica is being rebuilt (recreated empty; its `REBUILDING` marker on
    /// disk): it holds nothing `meta` may say it holds.
    pub(crate) fn is_rebuilding(&self) -> bool {
        self.rebuilding.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Removes the `REBUILDING` marker, durably, once the replica has been level with its
    /// leader (its copies synced as an in-sync follower's are): from then on it is what
    /// `meta` records. A failure keeps the marker, and the replica stays one to rebuild.
    pub(crate) fn finish_rebuilding(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if !self.rebuilding.load(Ordering::Acquire) {
            return Ok(());
        }
        let marker = self.path.join(load::REBUILDING);
        match self.dir.storage().remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", &marker, e));
            }
            _ => {}
        }
        self.dir.sync_dir(&self.path)?;
        self.rebuilding.store(false, Ordering::Release);
        Ok(())
    }

    pub(crate) fn dir(&self) -> &Arc<StorageDir> {
        &self.dir
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The topic's config as it is now.
    pub(crate) fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    /// The topic's fsync policy as it is now (the append path's reads of the config take
    /// the fields they need, not a copy of all of it).
    pub(crate) fn fsync_policy(&self) -> FsyncPolicy {
        self.config.read().fsync
    }

    /// Replaces the config (`alter_topic_config`): appends, rolls, syncs and retention use
    /// the new values from their next decision on. A non-empty active segment keeps its
    /// mapping, so a larger `segment_bytes` applies from the next segment; an empty one is
    /// made again at the new size. When that fails (a full disk, say) the empty segment
    /// stays active at its old size, as a non-empty one would, and the error is returned
    /// (the new config is in place either way); a failure between the new files' renames
    /// takes the directory offline ([`Segment::create_replacing`]).
    pub(crate) fn set_config(&self, config: TopicConfig) -> Result<()> {
        let mut w = self.writer.lock();
        let resize =
            !w.closed && w.active.size() == 0 && w.active.capacity() as u64 != config.segment_bytes;
        *self.config.write() = config;
        if resize {
            self.remake_empty_active(&mut w, 0)?;
        }
        Ok(())
    }

    /// The next offset to be assigned.
    pub(crate) fn log_end_offset(&self) -> u64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// The first offset still in the log.
    pub(crate) fn log_start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Offsets below this are visible to consumers. With one replica it equals the log end.
    pub(crate) fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Offsets below this are known to be synced.
    pub(crate) fn recovery_point(&self) -> u64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    /// How many times a truncation or restart began or ended here (odd while one runs).
    /// Read before [`recovery_point`](Self::recovery_point) for a checkpoint, it says which
    /// cuts that checkpoint covers (see [`ReplicaLog::recovery_point_checkpointed`]).
    pub(crate) fn truncation_count(&self) -> u64 {
        self.truncations.load(Ordering::Acquire)
    }

    /// Number of segments.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Base offsets of the segments, oldest first.
    pub(crate) fn segment_bases(&self) -> Vec<u64> {
        self.segments.read().keys().copied().collect()
    }

    /// Segment sizes for a new segment that must hold at least `at_least` bytes.
    fn sizes_for(&self, at_least: usize) -> SegmentSizes {
        let mut sizes = self.sizes();
        sizes.segment_bytes = sizes.segment_bytes.max(at_least as u64);
        sizes
    }

    /// Makes the empty active segment again at the current `segment_bytes` (at least
    /// `at_least` bytes), in new files renamed over the old ones, which stay whole under the
    /// old segment's mappings (a prefault still running there finds its pages backed). A
    /// failure before the renames leaves the old segment active and whole, for the caller
    /// to go on with; one between them takes the directory offline
    /// ([`Segment::create_replacing`]).
    fn remake_empty_active(&self, w: &mut Writer, at_least: usize) -> Result<()> {
        self.dir.check()?;
        let base = w.active.base_offset;
        let fresh = Arc::new(Segment::create_replacing(
            &self.dir,
            &self.path,
            base,
            self.sizes_for(at_least),
        )?);
        self.segments.write().insert(base, Arc::clone(&fresh));
        w.active = fresh;
        w.requested_ahead = 0;
        Ok(())
    }

    fn sizes(&self) -> SegmentSizes {
        // One read guard: two at once could deadlock behind a waiting writer.
        let config = self.config.read();
        SegmentSizes {
            segment_bytes: config.segment_bytes,
            index_bytes: config.segment_index_bytes,
        }
    }

    /// Appends one client batch (Kafka v2, base offset 0): assigns offsets, stamps the leader
    /// epoch and, under `LogAppendTime`, the append time; then waits for the durability the
    /// topic's fsync policy asks for, calling `on_appended` in between (once the batch is
    /// visible). When the sync then fails the batch stays in the log (as in Kafka, where
    /// an `acks=1` write can outlive a failed flush) and the error is returned.
    pub(crate) fn append_then(
        &self,
        batch: &[u8],
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        let info = self.append_unsynced(batch, on_appended)?;
        self.await_durable(info.last_offset + 1, u64::from(info.record_count))?;
        Ok(info)
    }

    /// As [`ReplicaLog::append_then`] without waiting for the fsync policy: the caller
    /// calls [`ReplicaLog::await_durable`] next (a replicated append does, once it has
    /// released the partition's order lock, so that appenders share fsyncs).
    pub(crate) fn append_unsynced(
        &self,
        batch: &[u8],
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        let now = self.clock.now_ms();
        let header = self.validate_client_batch(batch, now)?;
        let (info, index_result) = self.append_validated(batch, &header, now, Stamp::Leader)?;
        // The batch is in the log and visible even when an index entry failed.
        on_appended(&info);
        index_result?;
        Ok(info)
    }

    /// Waits for what the topic's fsync policy asks after `records` records were appended
    /// up to offset `end` (one sync shared by concurrent appenders under `EveryBatch`).
    pub(crate) fn await_durable(&self, end: u64, records: u64) -> Result<()> {
        self.after_append(end, records, self.clock.now_ms())
    }

    /// Counts `records` just appended against the fsync policy, now; whether a sync is due.
    pub(crate) fn sync_due_now(&self, records: u64) -> bool {
        self.sync_due(records, self.clock.now_ms())
    }

    /// Sets the epoch stamped on the batches appended as leader from now on.
    pub(crate) fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// The newest leader epoch in this log.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.epochs.with(EpochCache::latest_epoch)
    }

    /// The leader-epoch cache's entries, oldest first.
    pub(crate) fn epoch_entries(&self) -> Vec<(i32, u64)> {
        self.epochs.with(|cache| cache.entries().to_vec())
    }

    /// Kafka's `OffsetsForLeaderEpoch` answer for `epoch` from this log (see
    /// [`EpochCache::end_offset_for`]).
    pub(crate) fn end_offset_for(&self, epoch: i32) -> (i32, Option<u64>) {
        self.epochs.with(|cache| {
            let end = self.log_end_offset();
            let current = self.leader_epoch.load(Ordering::Acquire);
            if cache.latest_epoch().is_some_and(|latest| current > latest) {
                // A leader's epoch starts at its log end when it is elected (Kafka assigns
                // it then); here the entry is made with the epoch's first batch, so it is
                // added for the answer.
                let mut with_current = cache.clone();
                with_current.assign(current, end);
                return with_current.end_offset_for(epoch, end);
            }
            cache.end_offset_for(epoch, end)
        })
    }

    /// Records that `epoch` starts at `start` when that is news, in memory: the checkpoint
    /// is written by the next sync (see [`Epochs`]). Called under the writer lock.
    fn assign_epoch(&self, epoch: i32, start: u64) {
        self.epochs.change(|cache| cache.assign(epoch, start));
    }

    /// Writes the leader-epoch checkpoint when it lags the cache.
    fn persist_epochs(&self) -> Result<()> {
        self.epochs.persist(&self.dir, &self.path)
    }

    /// Drops cache entries at or after the log end (after a truncation) and persists.
    fn trim_epochs(&self, end: u64) -> Result<()> {
        self.epochs.change(|cache| cache.truncate_from_end(end));
        self.persist_epochs()
    }

    /// Appends every batch of `read` (a leader's log from this replica's end) as copies and
    /// returns how many records they held. With `wait` it then waits once for the topic's
    /// fsync policy (a catch-up pays one sync per step, not one per batch); without, the
    /// caller calls [`ReplicaLog::await_durable`].
    pub(crate) fn append_copies(&self, read: &LogRead, wait: bool) -> Result<u64> {
        let now = self.clock.now_ms();
        let mut records = 0;
        let mut result = Ok(());
        // A read never spans two of the leader's segments; one that starts a segment makes
        // the copy start one too, so the replicas' segment files match the leader's.
        let mut stamp = if read.starts_segment() {
            Stamp::CopyStartingSegment
        } else {
            Stamp::Copy
        };
        for batch in read.batches() {
            let appended = batch.and_then(|batch| {
                let bytes = batch.bytes();
                let max = (self.config.read().max_message_bytes as usize).max(bytes.len());
                let header = codec::validate_batch(bytes, max)?;
                let (info, index_result) = self.append_validated(bytes, &header, now, stamp)?;
                stamp = Stamp::Copy;
                records += u64::from(info.record_count);
                index_result
            });
            if appended.is_err() {
                result = appended;
                break;
            }
        }
        if wait && records > 0 {
            let synced = self.after_append(self.log_end_offset(), records, now);
            result = result.and(synced);
        }
        result.map(|()| records)
    }

    /// Marks the replica as part of a replicated partition (see `replicated`).
    pub(crate) fn set_replicated(&self, replicated: bool) {
        self.replicated.store(replicated, Ordering::Release);
    }

    /// Sets the high watermark to `offset` (at most the log end), down as well as up.
    pub(crate) fn reset_high_watermark(&self, offset: u64) {
        let offset = offset.min(self.log_end_offset());
        self.high_watermark.store(offset, Ordering::Release);
    }

    /// Moves the high watermark up to `offset` (never past the log end, never down).
    pub(crate) fn advance_high_watermark(&self, offset: u64) {
        let offset = offset.min(self.log_end_offset());
        self.high_watermark.fetch_max(offset, Ordering::AcqRel);
    }

    /// Kafka's leader-side checks of a client batch (`LogValidator`), `now` being the
    /// clock at the append (for the topic's timestamp limits).
    fn validate_client_batch(&self, batch: &[u8], now: i64) -> Result<BatchHeader> {
        let (max, segment_bytes, compacts, timestamp_limits) = {
            let config = self.config.read();
            (
                config.max_message_bytes as usize,
                config.segment_bytes as usize,
                config.cleanup_policy.compacts(),
                config.timestamp_limits(),
            )
        };
        if batch.len() > max {
            return Err(Error::RecordTooLarge {
                size: batch.len(),
                max,
            });
        }
        if batch.len() > segment_bytes {
            return Err(Error::RecordTooLarge {
                size: batch.len(),
                max: segment_bytes,
            });
        }
        let (mut header, records_max_timestamp) = codec::validate_batch_timestamps(batch, max)?;
        let invalid = |reason: &str| {
            Err(Error::InvalidRecord {
                reason: reason.to_owned(),
            })
        };
        if header.base_offset != 0 {
            return invalid("a client batch must have base offset 0");
        }
        if header.records_count <= 0 || header.last_offset_delta + 1 != header.records_count {
            return invalid(
                "last offset delta + 1 must equal the record count, which must be positive",
            );
        }
        if header.is_control() {
            return invalid("clients may not append control batches");
        }
        if header.timestamp_type() == TimestampType::LogAppendTime {
            return invalid("clients may not set the LogAppendTime attribute");
        }
        if header.delete_horizon().is_some() {
            // Only the cleaner sets it (KIP-534); a client's would make the cleaner take
            // the base timestamp for a deadline and drop its tombstones at the wrong time.
            return invalid("clients may not set the delete-horizon attribute (bit 6)");
        }
        if header.producer_id >= 0 && header.base_sequence < 0 {
            return invalid("an idempotent batch needs a base sequence");
        }
        if compacts || timestamp_limits.is_some() {
            for (index, record) in codec::records(batch, &header).enumerate() {
                let record = record?;
                if compacts && record.key.is_none() {
                    // Kafka's `LogValidator`: the cleaner could never keep it.
                    return invalid("a compacted topic cannot accept a record without a key");
                }
                if let Some(limits) = timestamp_limits {
                    limits.check(record.timestamp, now, index)?;
                }
            }
        }
        // Kafka's `LogValidator` sets a `CreateTime` batch's `maxTimestamp` to its records'
        // largest, whatever the client wrote there (the time index, rolls and retention go
        // by it); `append_validated` writes it into the stored header.
        header.max_timestamp = records_max_timestamp;
        Ok(header)
    }

    /// Writes a validated batch at the log end. Once the batch is visible the append has
    /// happened: a failure to write its index entries (hints) comes back beside the info.
    fn append_validated(
        &self,
        batch: &[u8],
        header: &BatchHeader,
        now: i64,
        stamp: Stamp,
    ) -> Result<(AppendInfo, Result<()>)> {
        let mut w = self.writer.lock();
        if w.closed {
            return Err(Error::Closed);
        }
        let log_append = stamp == Stamp::Leader
            && self.config.read().timestamp_type == TimestampType::LogAppendTime;
        // The append time is read under the writer lock, as Kafka's under its log's lock:
        // read before it, two appenders could stamp times out of offset order.
        let now = if log_append { self.clock.now_ms() } else { now };
        let log_append_time = log_append.then_some(now);
        let max_timestamp = log_append_time.unwrap_or(header.max_timestamp);
        self.dir.check()?;
        if stamp != Stamp::Leader && u64::try_from(header.base_offset) != Ok(w.next_offset) {
            return Err(Error::InvalidRecord {
                reason: format!(
                    "a replica copy must start at the log end {}, not {}",
                    w.next_offset, header.base_offset
                ),
            });
        }
        let roll = match stamp {
            Stamp::Leader => self.should_roll(&w, header, batch.len(), max_timestamp, now),
            // Copies roll where the leader did (by its size and time rules), and otherwise
            // only when the batch cannot go into the active segment.
            Stamp::CopyStartingSegment => w.active.size() > 0,
            Stamp::Copy => self.must_roll(&w, header, batch.len()),
        };
        if roll {
            // A copy's roll leaves the sealed segment to the follower's next sync: it runs
            // under its partition's order lock, which must not wait for a follower's disk.
            self.roll_synced(&mut w, now, batch.len(), stamp == Stamp::Leader)?;
        }
        if w.active.size() == 0 && batch.len() > w.active.capacity() {
            // A copy larger than an empty active segment made under a smaller `segment_bytes`
            // (lowered since the leader wrote it; client batches over it are refused above).
            self.remake_empty_active(&mut w, batch.len())?;
        }
        let position = w.active.size();
        let end = position + batch.len();
        let chunk = allocation_chunk(w.active.capacity());
        if end > w.active.allocated() {
            w.active.allocate_to(end, chunk)?;
        }
        // Index entries are pushed after the batch is in the log: their room is taken now.
        w.active.index.reserve_entry()?;
        w.active.time_index.reserve_entry()?;
        self.grow_ahead(&mut w, end, chunk);
        let base_offset = w.next_offset;
        let epoch = match stamp {
            Stamp::Leader => self.leader_epoch.load(Ordering::Relaxed),
            Stamp::Copy | Stamp::CopyStartingSegment => header.partition_leader_epoch,
        };
        self.assign_epoch(epoch, base_offset);
        // The leader's `maxTimestamp`: the append time, or the records' largest when the
        // client's header said otherwise (a copy keeps the leader's bytes).
        let new_max_timestamp = match log_append_time {
            Some(time) => Some((time, TimestampType::LogAppendTime)),
            None => (stamp == Stamp::Leader
                && header.max_timestamp != codec::max_timestamp_of(batch))
            .then_some((header.max_timestamp, TimestampType::CreateTime)),
        };
        let head = patched_header(batch, base_offset, epoch, new_max_timestamp);
        let body = &batch[RECORD_BATCH_OVERHEAD..];
        if self.writes_through() {
            w.active.write_through(position, &head, body)?;
        } else {
            w.active.write(position, &head)?;
            w.active.write(position + RECORD_BATCH_OVERHEAD, body)?;
        }
        w.active.publish(position + batch.len());
        w.active.touch(now);
        if position == 0 {
            w.first_batch_timestamp = max_timestamp;
        }
        let last_offset = base_offset + header.last_offset_delta as u64;
        w.next_offset = last_offset + 1;
        self.log_end.store(w.next_offset, Ordering::Release);
        if !self.replicated.load(Ordering::Acquire) {
            self.high_watermark.store(w.next_offset, Ordering::Release);
        }
        // The batch is visible; index entries are hints, pushed after it.
        let index_result =
            Self::index_batch(&mut w, last_offset, position, batch.len(), max_timestamp);
        drop(w);
        let info = AppendInfo {
            base_offset,
            last_offset,
            record_count: header.records_count as u32,
            max_timestamp,
            log_append_time,
            size_bytes: batch.len() as u32,
        };
        Ok((info, index_result))
    }

    fn index_batch(
        w: &mut Writer,
        last_offset: u64,
        position: usize,
        size: usize,
        max_timestamp: i64,
    ) -> Result<()> {
        let active = Arc::clone(&w.active);
        let offset_room = active.index.entries() < active.index.max_entries();
        let time_room = active.time_index.entries() + 1 < active.time_index.max_entries();
        let relative = (last_offset - active.base_offset) as u32;
        let entries = w.index_state.on_batch(
            relative,
            position as u32,
            size as u64,
            max_timestamp,
            offset_room,
            time_room,
        );
        if let Some(entry) = entries.offset {
            active.index.push(&entry)?;
        }
        if let Some(entry) = entries.time {
            active.time_index.push(&entry)?;
        }
        Ok(())
    }

    /// Kafka's `shouldRoll`: size, time (first-batch timestamp rule), full index, or a
    /// relative offset that would not fit. An empty segment never rolls.
    fn should_roll(
        &self,
        w: &Writer,
        header: &BatchHeader,
        size: usize,
        max_timestamp: i64,
        now: i64,
    ) -> bool {
        let active = &w.active;
        let current = active.size();
        if current == 0 {
            return false;
        }
        // Saturating: timestamps come from the batches (and from disk), unbounded.
        let waited = if w.first_batch_timestamp == NO_TIMESTAMP {
            now.saturating_sub(w.created_ms)
        } else {
            max_timestamp.saturating_sub(w.first_batch_timestamp)
        };
        let (segment_ms, compacts, max_compaction_lag_ms) = {
            let config = self.config.read();
            (
                config.segment_ms.min(i64::MAX as u64) as i64,
                config.cleanup_policy.compacts(),
                config.max_compaction_lag_ms,
            )
        };
        let mut segment_ms = segment_ms;
        if compacts {
            // Kafka's `maxSegmentMs`: the active segment is never cleaned, so it rolls in
            // time for `max_compaction_lag_ms`.
            segment_ms = segment_ms.min(max_compaction_lag_ms);
        }
        waited > segment_ms || self.must_roll(w, header, size)
    }

    /// Whether a batch of `size` bytes cannot go into the active segment: it would pass
    /// `segment_bytes`, an index is full, or its offsets would not fit in 32 bits relative
    /// to the segment's base.
    fn must_roll(&self, w: &Writer, header: &BatchHeader, size: usize) -> bool {
        let active = &w.active;
        let current = active.size();
        if current == 0 {
            return false;
        }
        let last = w.next_offset + header.last_offset_delta as u64;
        // The mapping's capacity is the `segment_bytes` the segment was made with.
        let segment_bytes = self.config.read().segment_bytes as usize;
        current + size > segment_bytes.min(active.capacity())
            || active.index.entries() >= active.index.max_entries()
            || active.time_index.entries() + 1 >= active.time_index.max_entries()
            || last - active.base_offset > i32::MAX as u64
    }

    /// Seals the active segment and starts a new one at the log end.
    /// The new segment holds at least `at_least` bytes (a copy of a batch written under a
    /// larger `segment_bytes`).
    fn roll(&self, w: &mut Writer, now: i64, at_least: usize) -> Result<()> {
        self.roll_synced(w, now, at_least, true)
    }

    /// [`roll`](Self::roll) that syncs the sealed segment now only with `sync` (and a
    /// policy other than `None`); else the next sync does (see `sync_active`).
    fn roll_synced(&self, w: &mut Writer, now: i64, at_least: usize, sync: bool) -> Result<()> {
        let durable = sync && self.fsync_policy() != FsyncPolicy::None;
        if durable {
            // The epochs of the batches the recovery point is about to pass, before anything
            // changes: a failure leaves the log as it was.
            self.persist_epochs()?;
        }
        let old = Arc::clone(&w.active);
        let new_base = w.next_offset;
        if let Some(entry) = w.index_state.time_entry() {
            old.time_index.push(&entry)?;
        }
        let fresh = match Segment::create(&self.dir, &self.path, new_base, self.sizes_for(at_least))
        {
            Ok(segment) => Arc::new(segment),
            Err(error) => {
                // A stale segment file would later claim offsets the old segment still takes.
                self.discard_segment_files(new_base);
                return Err(error);
            }
        };
        // A half-sealed segment can take no more writes: the directory goes offline.
        let sealed = Arc::new(old.seal().inspect_err(|_| self.dir.poison())?);
        if durable {
            // After the trim, so that the files' final lengths are durable too.
            self.sync_segment_files(&old)?;
            self.dir.sync_dir(&self.path)?;
            self.note_synced(old.base_offset, new_base);
        }
        {
            let mut segments = self.segments.write();
            segments.insert(old.base_offset, sealed);
            segments.insert(new_base, Arc::clone(&fresh));
        }
        if !durable {
            // The next sync syncs it (see `sync_active`). Queued after the map shows it
            // sealed: a sync that takes the queue then finds it there, not still active.
            self.sealed_unsynced.lock().insert(old.base_offset);
        }
        w.active = fresh;
        w.requested_ahead = 0;
        w.index_state = IndexState::new(self.config.read().index_interval_bytes);
        w.first_batch_timestamp = NO_TIMESTAMP;
        w.created_ms = now;
        if let Some(prefaulter) = &self.prefaulter {
            prefaulter.retire(old);
        }
        Ok(())
    }

    /// Removes the files of a segment that failed to come into use; when that fails too, the
    /// directory goes offline rather than keep a file that recovery would misread.
    fn discard_segment_files(&self, base: u64) {
        let storage = self.dir.storage();
        for path in Segment::paths(&self.path, base) {
            if storage.exists(&path) && storage.remove_file(&path).is_err() {
                self.dir.poison();
            }
        }
    }

    /// Whether appends are written with `pwritev` rather than stored through the mapping:
    /// under a policy that syncs every batch or every few records. A sync of pages dirtied
    /// through a mapping write-protects each of them again (a TLB shootdown per page, which
    /// costs an inter-processor interrupt on a VM), and the next append into the page faults
    /// it back; measured on the 2-vCPU box, a third of the CPU went there with `EveryBatch`.
    /// Pages written by `pwritev` are never mapped writable, so syncing them costs only the
    /// I/O. Without frequent syncs the mapping is faster (no system call per append).
    fn writes_through(&self) -> bool {
        matches!(
            self.fsync_policy(),
            FsyncPolicy::EveryBatch | FsyncPolicy::EveryRecords(_)
        )
    }

    /// Asks the background prefaulter to keep two chunks allocated (and, for stores through
    /// the mapping, faulted in) ahead of the writer (it runs on another core; the writer
    /// allocates for itself if it lags).
    fn grow_ahead(&self, w: &mut Writer, end: usize, chunk: usize) {
        let Some(prefaulter) = &self.prefaulter else {
            return;
        };
        let capacity = w.active.capacity();
        if w.active.allocated() >= (end + chunk).min(capacity)
            || w.requested_ahead >= (end + chunk).min(capacity)
        {
            return;
        }
        w.requested_ahead = (end + 2 * chunk).min(capacity);
        // Pages written through the file need no write faults: faulting them in for writing
        // would only map them writable, for the next sync to write-protect again.
        prefaulter.request(&w.active, w.requested_ahead, !self.writes_through());
    }

    /// Reads whole batches from `offset` up to `max_bytes` (at least one batch), never past
    /// `upper` (the high watermark for consumers, the log end for followers).
    ///
    /// A read takes no lock, so a truncation may swap segments under it: a read that fails
    /// while one ran, or was running, is tried again, so that the log moving is never
    /// reported as damage (offsets out of order, see `batches_within`).
    pub(crate) fn read(&self, offset: u64, max_bytes: usize, upper: u64) -> Result<LogRead> {
        loop {
            let before = self.truncations.load(Ordering::Acquire);
            let result = self.read_once(offset, max_bytes, upper);
            if result.is_ok()
                || before.is_multiple_of(2) && self.truncations.load(Ordering::Acquire) == before
            {
                return result;
            }
            std::thread::yield_now();
        }
    }

    /// One attempt of [`ReplicaLog::read`].
    fn read_once(&self, offset: u64, max_bytes: usize, upper: u64) -> Result<LogRead> {
        let start = self.log_start_offset();
        let end = self.log_end_offset();
        let high_watermark = self.high_watermark();
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                earliest: start,
                latest: end,
            });
        }
        let upper = upper.min(end);
        let empty = |bytes: Bytes, path: PathBuf, position: u64| {
            LogRead::new(offset, bytes, path, position, start, end, high_watermark)
        };
        if offset >= upper {
            return Ok(empty(Bytes::new(), self.path.clone(), 0));
        }
        let mut cursor = self
            .segments
            .read()
            .range(..=offset)
            .next_back()
            .map(|(_, s)| Arc::clone(s));
        while let Some(segment) = cursor {
            if let Some((position, first)) = segment.translate_offset(offset)? {
                // This segment's offsets end where the next one's begin (or at the log end).
                let next_segment = self
                    .segments
                    .read()
                    .range((Bound::Excluded(segment.base_offset), Bound::Unbounded))
                    .next()
                    .map(|(&base, _)| base);
                if let Some(limit) = next_segment
                    && first.next_offset() as u64 > limit
                {
                    // A damaged base offset (not covered by the CRC), not a batch to wait for.
                    let detail = format!(
                        "batch {}..={} runs past offset {limit}, where the next segment starts",
                        first.base_offset,
                        first.last_offset()
                    );
                    return Err(offsets_corrupt(&segment, position, detail));
                }
                if next_segment.is_none()
                    && first.base_offset as u64 > offset.max(segment.base_offset)
                {
                    // The active segment holds every offset from its base on without a gap
                    // (the open scans its tail, appends and rolls keep it so): a batch
                    // starting past `offset` has a damaged base offset. Not a batch to wait
                    // for: its offsets would never be read. (An `offset` below its base
                    // comes from a gap in the sealed segment before it: Kafka's, legal.)
                    let detail = format!(
                        "batch {}..={} starts past offset {offset}, which the active segment holds",
                        first.base_offset,
                        first.last_offset()
                    );
                    return Err(offsets_corrupt(&segment, position, detail));
                }
                if first.base_offset as u64 >= upper {
                    break;
                }
                let limit = next_segment.unwrap_or(end);
                let len = batches_within(&segment, position, first, max_bytes, upper, limit)?;
                let bytes = segment.view(position, len);
                return Ok(empty(
                    bytes,
                    segment.log_path().to_path_buf(),
                    position as u64,
                ));
            }
            // Nothing at or after `offset` here (a gap): continue in the next segment.
            cursor = self
                .segments
                .read()
                .range((Bound::Excluded(segment.base_offset), Bound::Unbounded))
                .next()
                .map(|(_, s)| Arc::clone(s));
        }
        Ok(empty(Bytes::new(), self.path.clone(), 0))
    }

    /// The first record with timestamp ≥ `timestamp` below the high watermark.
    pub(crate) fn offset_for_time(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let start = self.log_start_offset();
        let upper = self.high_watermark();
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        for segment in segments {
            if let Some(found) = segment.find_offset_by_timestamp(timestamp, start)? {
                return Ok((found.offset < upper).then_some(found));
            }
        }
        Ok(None)
    }

    /// Removes every record at or after `offset` (the whole batch holding it), for a replica
    /// whose history diverged. Readers holding older views keep them: the cut segment is
    /// rewritten to a new file and swapped in, never shortened under a mapping.
    pub(crate) fn truncate_to(&self, offset: u64) -> Result<()> {
        self.truncate_in_epoch(offset, None)
    }

    /// [`truncate_to`](Self::truncate_to) that also makes `epoch` the leader epoch of the
    /// batches appended from the cut on, under the writer lock once the cut is made (made
    /// or failed part way), so that no append lands between the two: one before is cut,
    /// one after carries `epoch`.
    pub(crate) fn truncate_in_epoch(&self, offset: u64, epoch: Option<i32>) -> Result<()> {
        let mut w = self.writer.lock();
        if w.closed {
            return Err(Error::Closed);
        }
        self.dir.check()?;
        if offset >= w.next_offset {
            return Ok(());
        }
        let now = self.clock.now_ms();
        // Kafka's `maybeTruncateCheckpoint`: what is appended again after the cut is dirty;
        // the checkpoint says so (durably) before anything is cut. The cut falls at the
        // start of the batch holding `offset`; the recovery point an open trusts goes
        // down to it first too.
        let cut = self.batch_start(offset)?;
        self.lower_cleaner_point(cut)?;
        let restart_at = self.restart_instead(cut, offset);
        // Below the first segment the truncation restarts the log (see `restart_floor`).
        let first = self.segments.read().keys().next().copied();
        let lowest = if restart_at.is_some() || first.is_some_and(|first| offset < first) {
            self.restart_floor(cut)
        } else {
            cut
        };
        let mut floor = self.floor.lock();
        self.truncations.fetch_add(1, Ordering::AcqRel);
        let before_cut = || self.lower_floor(&mut floor, lowest);
        let truncated = match restart_at {
            Some(start) => load::restart(self, &mut w, start, now, before_cut),
            None => load::truncate(self, &mut w, offset, now, before_cut),
        };
        // After the segments changed: a cleaning that reads the new count sees them too.
        let count = self.truncations.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(epoch) = epoch {
            self.leader_epoch.store(epoch, Ordering::Release);
        }
        truncated?;
        floor.covered_from(count);
        drop(floor);
        // An empty log holds no epoch (as `restart_at`).
        let kept_epochs = if restart_at.is_some() {
            0
        } else {
            w.next_offset
        };
        self.trim_epochs(kept_epochs)?;
        self.lower_cleaner_point(w.next_offset)
    }

    /// Refuses as [`truncate_to`](Self::truncate_to) would, changing nothing (a kept part
    /// with gaps); for a caller that must record something before the cut, with appends
    /// held off.
    pub(crate) fn check_truncation(&self, offset: u64) -> Result<()> {
        self.dir.check()?;
        if self
            .restart_instead(self.batch_start(offset)?, offset)
            .is_some()
        {
            // Nothing is kept, so nothing kept needs to be whole.
            return Ok(());
        }
        load::check_truncation(self, offset)
    }

    /// Where a truncation to `offset` whose cut falls at `cut` (the start of the batch
    /// holding `offset`) restarts the log instead, if it does. The log start after a cut
    /// is Kafka's `min(logStartOffset, target)`. A cut below it (a start inside the batch
    /// holding `offset`, where `delete_records` may leave it) keeps nothing readable, and
    /// would leave the start above the end, the offsets in between handed out again below
    /// it: the log restarts empty at that start instead, as Kafka's
    /// `truncateFullyAndStartAt` (Kafka's cuts fall between batches, so its start never
    /// passes its end).
    fn restart_instead(&self, cut: u64, offset: u64) -> Option<u64> {
        let start = self.log_start_offset().min(offset);
        (cut < start).then_some(start)
    }

    /// The base offset of the batch holding `offset` (`offset` itself when none does).
    fn batch_start(&self, offset: u64) -> Result<u64> {
        let segment = self
            .segments
            .read()
            .range(..=offset)
            .next_back()
            .map(|(_, s)| Arc::clone(s));
        let Some(segment) = segment else {
            return Ok(offset);
        };
        Ok(segment
            .translate_offset(offset)?
            .map_or(offset, |(_, header)| {
                (header.base_offset as u64).min(offset)
            }))
    }

    /// Whether the replica's topic was deleted ([`retire`](Self::retire)): an I/O error met
    /// by a sync that ran after it (its files are going) says nothing of the directory.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Ends all writing (the topic is being deleted): appends, rolls, truncations,
    /// retention and syncs answer `Closed` from now on; one running now finishes first (a
    /// sync, for at most `patience`).
    pub(crate) fn retire(&self, patience: std::time::Duration) {
        self.retired.store(true, Ordering::Release);
        self.writer.lock().closed = true;
        // A cleaning running now stops at its next batch and removes what it wrote; none
        // touches the files after this.
        drop(self.cleaning.lock());
        // Nor a sync: one running now (a flush, a group commit) finishes first, and none
        // starts after (`sync_to` answers `Closed`). Its directory fsync or epoch
        // checkpoint would otherwise fail on the moved files and take the directory
        // offline, or write into a new topic's directory of the same name. Not for ever:
        // an offline directory's files are not moved, and a sync hung longer than
        // `patience` is a disk failing anyway (whose late error may then take it offline).
        if self.dir.is_poisoned() {
            return;
        }
        let deadline = std::time::Instant::now() + patience;
        let mut state = self.sync.lock();
        while state.in_progress && !self.synced.wait_until(&mut state, deadline).timed_out() {}
    }

    /// Deletes everything and starts afresh, empty, at `offset`: a follower whose whole log
    /// lies below its leader's log start.
    pub(crate) fn restart_at(&self, offset: u64) -> Result<()> {
        let mut w = self.writer.lock();
        if w.closed {
            return Err(Error::Closed);
        }
        self.dir.check()?;
        let now = self.clock.now_ms();
        self.lower_cleaner_point(offset)?;
        let mut floor = self.floor.lock();
        self.truncations.fetch_add(1, Ordering::AcqRel);
        let lowest = self.restart_floor(offset);
        let restarted = load::restart(self, &mut w, offset, now, || {
            self.lower_floor(&mut floor, lowest)
        });
        let count = self.truncations.fetch_add(1, Ordering::AcqRel) + 1;
        restarted?;
        floor.covered_from(count);
        drop(floor);
        // An empty log holds no epoch: the copies bring the leader's.
        self.trim_epochs(0)
    }
}

/// A new replica of `t-0` in `<root>/d` on a manual clock at `now`, for unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_replica(root: &Path, config: TopicConfig, now: i64) -> ReplicaLog {
    let dir = StorageDir::open(crate::storage::OsStorage::shared(), &root.join("d")).unwrap();
    ReplicaLog::create(LoadOptions {
        tp: TopicPartition::new("t", 0),
        dir: Arc::new(dir),
        config,
        clock: Arc::new(crate::clock::ManualClock::new(now)),
        clean: false,
        recovery_point: None,
        log_start: None,
        high_watermark: None,
        prefaulter: None,
    })
    .unwrap()
}

/// [`test_replica`] with the log's prefault thread.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn test_replica_prefaulted(root: &Path, config: TopicConfig) -> ReplicaLog {
    let dir = StorageDir::open(crate::storage::OsStorage::shared(), &root.join("d")).unwrap();
    ReplicaLog::create(LoadOptions {
        tp: TopicPartition::new("t", 0),
        dir: Arc::new(dir),
        config,
        clock: Arc::new(crate::clock::ManualClock::new(0)),
        clean: false,
        recovery_point: None,
        log_start: None,
        high_watermark: None,
        prefaulter: Some(Prefaulter::start().unwrap()),
    })
    .unwrap()
}

/// `log` opened again from its directory (while `log` stays open: for reading what it
/// made durable), for unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_reopen(log: &ReplicaLog) -> ReplicaLog {
    ReplicaLog::load(log.unclean_options()).unwrap().0
}

/// How an append stamps a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// A leader's append: the next offset, the leader epoch, `LogAppendTime` if configured.
    Leader,
    /// A follower's copy: everything as the leader stamped it.
    Copy,
    /// A copy of the first batch of one of the leader's segments: it starts a segment too.
    CopyStartingSegment,
}

/// Growth step of an active segment file: a sixteenth of the segment, 256 KiB to 4 MiB.
fn allocation_chunk(capacity: usize) -> usize {
    (capacity / 16).clamp(LOG_CHUNK_MIN, LOG_CHUNK_MAX)
}

/// A background thread that allocates and faults in segment pages ahead of writers, and
/// unmaps the writable mappings of segments rolled away from.
#[derive(Debug, Clone)]
pub(crate) struct Prefaulter(std::sync::mpsc::SyncSender<GrowRequest>);

/// A request to the prefaulter.
enum GrowRequest {
    /// The segment, the length to allocate it to, and whether to fault the pages in for
    /// writing.
    Grow(std::sync::Weak<Segment>, usize, bool),
    /// A segment just sealed (replaced by its read-only copy), to be dropped there.
    Retire(Arc<Segment>),
}

impl Prefaulter {
    /// Starts the thread; it ends when the last `Prefaulter` handle is dropped.
    pub(crate) fn start() -> std::io::Result<Prefaulter> {
        // Bounded: at most a few requests per active segment are ever useful.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<GrowRequest>(256);
        std::thread::Builder::new()
            .name("tarnlog-prefault".into())
            .spawn(move || {
                while let Ok(request) = receiver.recv() {
                    match request {
                        GrowRequest::Grow(segment, target, populate) => {
                            if let Some(segment) = segment.upgrade() {
                                segment.grow_ahead(target, populate);
                            }
                        }
                        GrowRequest::Retire(segment) => drop(segment),
                    }
                }
            })?;
        Ok(Prefaulter(sender))
    }

    fn request(&self, segment: &Arc<Segment>, target: usize, populate: bool) {
        // A full queue drops the request: the writer then allocates for itself.
        let grow = GrowRequest::Grow(Arc::downgrade(segment), target, populate);
        let _ = self.0.try_send(grow);
    }

    /// Drops `segment` on the prefault thread: unmapping a large mapping whose pages were
    /// all faulted in takes milliseconds, which a roll would otherwise add to an append.
    /// With the queue full it is dropped here.
    fn retire(&self, segment: Arc<Segment>) {
        let _ = self.0.try_send(GrowRequest::Retire(segment));
    }
}

/// The 61-byte header of `batch` with the log's fields stamped in.
fn patched_header(
    batch: &[u8],
    base_offset: u64,
    epoch: i32,
    max_timestamp: Option<(i64, TimestampType)>,
) -> [u8; RECORD_BATCH_OVERHEAD] {
    let mut head = [0u8; RECORD_BATCH_OVERHEAD];
    head.copy_from_slice(&batch[..RECORD_BATCH_OVERHEAD]);
    codec::set_base_offset(&mut head, base_offset as i64);
    codec::set_partition_leader_epoch(&mut head, epoch);
    if let Some((time, timestamp_type)) = max_timestamp {
        // Attributes and maxTimestamp are covered by the CRC: recompute it over the new
        // header tail and the unchanged records.
        if timestamp_type == TimestampType::LogAppendTime {
            let attributes = i16::from_be_bytes([
                head[codec::ATTRIBUTES_OFFSET],
                head[codec::ATTRIBUTES_OFFSET + 1],
            ]) | 0x08;
            head[codec::ATTRIBUTES_OFFSET..LAST_OFFSET_DELTA_OFFSET]
                .copy_from_slice(&attributes.to_be_bytes());
        }
        head[codec::MAX_TIMESTAMP_OFFSET..codec::PRODUCER_ID_OFFSET]
            .copy_from_slice(&time.to_be_bytes());
        let crc = codec::crc32c_parts(&[
            &head[codec::ATTRIBUTES_OFFSET..],
            &batch[RECORD_BATCH_OVERHEAD..],
        ]);
        head[codec::CRC_OFFSET..codec::ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    }
    head
}

/// Damaged batch offsets in `segment`, found at the batch at `position`.
fn offsets_corrupt(segment: &Segment, position: usize, detail: String) -> Error {
    Error::Corruption {
        location: Location::File {
            path: segment.log_path().to_path_buf(),
            position: position as u64,
        },
        what: "batch offsets",
        detail,
    }
}

/// Bytes of the whole batches from `position` that fit `max_bytes` (at least the first)
/// and end at or below `upper`.
///
/// Offsets must increase from batch to batch (gaps are legal, as after compaction) and end
/// by `limit`, where the next segment begins (or the log ends). A batch's base offset is
/// not covered by its CRC, so a damaged one shows only as offsets that run into the next
/// batch's: either of the two may be the damaged one, so neither is handed out. When the
/// first batch is one of them, the read fails with `Corruption` at it; otherwise the read
/// ends before the pair, and the next read, which starts there, fails.
fn batches_within(
    segment: &Segment,
    position: usize,
    first: BatchHeader,
    max_bytes: usize,
    upper: u64,
    limit: u64,
) -> Result<usize> {
    let disorder = |detail: String| offsets_corrupt(segment, position, detail);
    let range = |h: &BatchHeader| format!("{}..={}", h.base_offset, h.last_offset());
    if first.next_offset() as u64 > limit {
        return Err(disorder(format!(
            "batch {} runs past offset {limit}, where the next segment or the log end is",
            range(&first)
        )));
    }
    let (mut len, mut before_last) = (first.size(), 0);
    let mut next = first.next_offset() as u64;
    let size = segment.size();
    while position + len < size {
        let header = segment.header_at(position + len)?;
        if (header.base_offset as u64) < next {
            return match before_last {
                0 => Err(disorder(format!(
                    "batch {} is followed by batch {}: offsets must increase",
                    range(&first),
                    range(&header)
                ))),
                _ => Ok(before_last),
            };
        }
        if len + header.size() > max_bytes || header.next_offset() as u64 > upper {
            break;
        }
        if header.next_offset() as u64 > limit {
            return Ok(len);
        }
        before_last = len;
        len += header.size();
        next = header.next_offset() as u64;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::codec::BatchBuilder;

    /// A roll hands the segment it leaves (with its writable mapping) to the prefault thread,
    /// which drops it: nothing keeps it, and the sealed copy reads the same records.
    #[test]
    fn a_segment_rolled_away_from_is_dropped_by_the_prefault_thread() {
        let root = tempfile::tempdir().unwrap();
        let log = test_replica_prefaulted(root.path(), TopicConfig::default().segment_bytes(4096));
        let mut builder = BatchBuilder::new();
        builder.push(0, None, Some(&[1u8; 1500]), &[]);
        let batch = builder.finish().unwrap().to_vec();
        log.append_then(&batch, |_| {}).unwrap();
        let rolled_from = Arc::downgrade(&log.writer.lock().active);
        log.append_then(&batch, |_| {}).unwrap();
        log.append_then(&batch, |_| {}).unwrap();
        assert_eq!(log.segments.read().len(), 2, "one roll");
        let started = std::time::Instant::now();
        while rolled_from.strong_count() > 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the segment rolled away from was kept"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A read stays within one segment: the sealed one, then the new one.
        let end = log.log_end_offset();
        assert_eq!(log.read(0, usize::MAX, end).unwrap().batches().count(), 2);
        assert_eq!(log.read(2, usize::MAX, end).unwrap().batches().count(), 1);
    }
}
