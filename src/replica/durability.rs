//! When appended bytes become durable: the fsync policies and group commit.
//!
//! Group commit: an append that must be synced calls `sync_to(end)`. If a sync is already
//! running it waits; otherwise it becomes the syncer, snapshots the current log end
//! (covering every append so far, its own and others'), runs one `fdatasync`, and wakes
//! everyone. Each appender is acknowledged only after a sync that started after its bytes
//! were stored. A failed sync poisons the directory: the syncer gets the I/O error, the
//! waiters `Poisoned`, and nothing is acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;

use super::ReplicaLog;
use crate::config::FsyncPolicy;
use crate::error::{Error, Result};
use crate::segment::Segment;

/// Sync bookkeeping of one replica.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Offsets below this are durable.
    pub synced_to: u64,
    /// A sync is running.
    pub in_progress: bool,
    /// Records appended since the last sync (`EveryRecords`).
    pub unsynced_records: u64,
    /// When the oldest unsynced append happened (`IntervalMs`).
    pub oldest_unsynced_ms: Option<i64>,
}

impl ReplicaLog {
    /// Applies the fsync policy after an append that ended at `end`.
    /// `now` is the time the append read (one clock read per append).
    pub(super) fn after_append(&self, end: u64, records: u64, now: i64) -> Result<()> {
        if self.sync_due(records, now) {
            self.sync_to(end)
        } else {
            Ok(())
        }
    }

    /// Counts `records` appended at `now` against the fsync policy; whether a sync is due.
    pub(crate) fn sync_due(&self, records: u64, now: i64) -> bool {
        let fsync = self.fsync_policy();
        if fsync == FsyncPolicy::None {
            // Nothing to count: `flush`/`close` sync whatever is there.
            return false;
        }
        let mut state = self.sync.lock();
        state.unsynced_records += records;
        let oldest = *state.oldest_unsynced_ms.get_or_insert(now);
        match fsync {
            FsyncPolicy::None => false,
            FsyncPolicy::EveryBatch => true,
            FsyncPolicy::EveryRecords(n) => state.unsynced_records >= n,
            FsyncPolicy::IntervalMs(m) => now - oldest >= m.min(i64::MAX as u64) as i64,
        }
    }

    /// Returns once every offset below `target` is durable (group commit).
    pub(crate) fn sync_to(&self, target: u64) -> Result<()> {
        let mut state = self.sync.lock();
        loop {
            self.dir.check()?;
            // A truncation since the caller appended lowers the log end: what was cut needs
            // no sync (waiting for it would wait for appends that may never come).
            let target = target.min(self.log_end_offset());
            if state.synced_to >= target {
                return Ok(());
            }
            if state.in_progress {
                self.synced.wait(&mut state);
                continue;
            }
            if self.is_retired() {
                // Its topic was deleted: the files are going (see `retire`).
                return Err(Error::Closed);
            }
            state = self.run_sync(state)?;
        }
    }

    /// Whether everything up to `offset` (at most the log end) is synced.
    pub(crate) fn synced_through(&self, offset: u64) -> bool {
        self.sync.lock().synced_to >= offset.min(self.log_end_offset())
    }

    /// Whether the fsync policy makes every batch durable before it is acknowledged
    /// (`EveryBatch`, or a sync every record).
    pub(crate) fn syncs_every_batch(&self) -> bool {
        matches!(
            self.fsync_policy(),
            FsyncPolicy::EveryBatch | FsyncPolicy::EveryRecords(0 | 1)
        )
    }

    /// Whether a sync of this replica is running now.
    pub(crate) fn sync_in_progress(&self) -> bool {
        self.sync.lock().in_progress
    }

    /// Runs one sync as the syncer (the lock is released meanwhile) and wakes the waiters.
    fn run_sync<'a>(
        &'a self,
        mut state: MutexGuard<'a, SyncState>,
    ) -> Result<MutexGuard<'a, SyncState>> {
        state.in_progress = true;
        let from = state.synced_to;
        drop(state);
        let result = self.sync_active(from);
        let mut state = self.sync.lock();
        state.in_progress = false;
        self.synced.notify_all();
        let (upto, truncations) = result?;
        self.note_sync(&mut state, upto, truncations);
        Ok(state)
    }

    /// Records a sync of the log up to `upto`, which was read at truncation count
    /// `truncations`. Not after a truncation since then (it lowered the synced point under
    /// the sync lock, held here): `upto` is stale, and what is appended again below it is
    /// not synced yet.
    fn note_sync(&self, state: &mut SyncState, upto: u64, truncations: u64) {
        if self.truncations.load(Ordering::Acquire) != truncations {
            return;
        }
        state.synced_to = state.synced_to.max(upto);
        state.unsynced_records = 0;
        state.oldest_unsynced_ms = None;
        self.recovery_point.fetch_max(upto, Ordering::AcqRel);
    }

    /// fdatasyncs the active segment; returns the log end it covers. Sealed segments were
    /// synced when they were rolled (a leader's roll under a policy other than `None`) or
    /// are synced here. Also returns the truncation count as it was when the log end was
    /// read.
    fn sync_active(&self, synced_to: u64) -> Result<(u64, u64)> {
        let (active, upto, truncations) = {
            let w = self.writer.lock();
            let truncations = self.truncations.load(Ordering::Acquire);
            (Arc::clone(&w.active), w.next_offset, truncations)
        };
        // The leader-epoch checkpoint as it is now covers every batch below `upto`; written
        // before the recovery point passes them (see `Epochs`).
        self.persist_epochs()?;
        // Taken after `upto` was read: every segment sealed unsynced below it is here (one
        // sealed since then is synced too, harmlessly). A failed fsync below poisons the
        // directory; a file that could not be opened puts them back for the next sync: so
        // none is lost to a later sync.
        let rolled = std::mem::take(&mut *self.sealed_unsynced.lock());
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        // Sealed segments holding offsets at or above `synced_to` may never have been synced
        // (sealed under policy `None`, or found by recovery), nor those a roll left unsynced
        // (a follower's, or under `None`), even when the synced point passed their offsets
        // (an append read it just before the roll sealed them). Their data, trimmed lengths
        // and directory entries become durable here.
        let mut new_entries = active.base_offset >= synced_to && upto > active.base_offset;
        for pair in segments.windows(2) {
            let (segment, next) = (&pair[0], &pair[1]);
            let unsynced = next.base_offset > synced_to || rolled.contains(&segment.base_offset);
            if unsynced && segment.log_file().is_none() {
                for path in [
                    segment.log_path(),
                    segment.index.path(),
                    segment.time_index.path(),
                ] {
                    if let Err(error) = self.sync_path(path) {
                        self.sealed_unsynced.lock().extend(rolled.iter().copied());
                        return Err(error);
                    }
                }
                new_entries = true;
            }
        }
        active.sync_one_at_a_time(&self.dir, "fdatasync", active.log_path(), || {
            active.sync_log()
        })?;
        if new_entries {
            self.dir.sync_dir(&self.path)?;
        }
        Ok((upto, truncations))
    }

    /// fsyncs a file by path (one of a sealed segment, which keeps no descriptor). A file
    /// removed meanwhile (truncation) needs nothing; any other failure to open it (no file
    /// descriptors left, an I/O error) fails the sync, which must not count it synced.
    fn sync_path(&self, path: &std::path::Path) -> Result<()> {
        let file = match self
            .dir
            .storage()
            .open(path, crate::storage::OpenMode::Read)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        self.dir.sync("fsync", path, || file.sync_all())
    }

    /// Writes the bytes at and above the synced point again, through the file, then syncs
    /// them (at load, in a directory where an fsync failed: see [`SYNC_FAILED`]). Linux
    /// marks the pages of a failed writeback clean: a read finds the bytes in the page
    /// cache (recovery checked their CRCs), but no later fsync writes them, so the next
    /// sync would acknowledge bytes the disk may lack. Written again, they are dirty, and
    /// reach the disk or fail the sync.
    ///
    /// [`SYNC_FAILED`]: crate::storage::SYNC_FAILED
    pub(crate) fn resync_unsynced(&self) -> Result<()> {
        /// Bytes copied out of the mapping per write (not written from the mapping
        /// itself: the source and the target would be the same page).
        const CHUNK: usize = 1 << 20;
        let from = self.sync.lock().synced_to;
        let end = self.log_end_offset();
        if from >= end {
            return Ok(());
        }
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let storage = self.dir.storage();
        let mut chunk = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            if segments
                .get(i + 1)
                .is_some_and(|next| next.base_offset <= from)
            {
                continue;
            }
            let Some((position, _)) = segment.translate_offset(from)? else {
                continue;
            };
            let path = segment.log_path();
            let file = match segment.log_file() {
                Some(file) => Arc::clone(file),
                None => storage
                    .open(path, crate::storage::OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open", path, e))?,
            };
            let bytes = &segment.bytes()[position..];
            for (k, piece) in bytes.chunks(CHUNK).enumerate() {
                chunk.clear();
                chunk.extend_from_slice(piece);
                let at = (position + k * CHUNK) as u64;
                crate::storage::write_all_at(file.as_ref(), &chunk, at)
                    .map_err(|e| Error::io("write", path, e))?;
            }
        }
        self.sync_to(end)
    }

    /// Records that the offsets from `from` to `end` are durable (a roll synced the segment
    /// holding them). Only when everything before `from` was synced already: segments
    /// sealed under `None` before the policy changed, sealed by a follower's copies, or
    /// found by recovery, are synced by the next [`sync_active`](Self::sync_to), which
    /// starts at what is recorded here.
    pub(super) fn note_synced(&self, from: u64, end: u64) {
        let mut state = self.sync.lock();
        if state.synced_to < from {
            return;
        }
        state.synced_to = state.synced_to.max(end);
        self.recovery_point.fetch_max(end, Ordering::AcqRel);
    }

    /// fsyncs a segment's log and index files (data and metadata: used before sealing).
    pub(super) fn sync_segment_files(&self, segment: &Segment) -> Result<()> {
        if let Some(file) = segment.log_file() {
            segment
                .sync_one_at_a_time(&self.dir, "fsync", segment.log_path(), || file.sync_all())?;
        }
        for index in [&segment.index, &segment.time_index] {
            if let Some(file) = index.file() {
                segment.sync_one_at_a_time(&self.dir, "fsync", index.path(), || file.sync_all())?;
            }
        }
        Ok(())
    }

    /// Syncs everything appended so far, whatever the policy (`Log::flush`, `close`).
    pub(crate) fn flush(&self) -> Result<()> {
        self.sync_to(self.log_end_offset())
    }

    /// Under `IntervalMs`, syncs when the oldest unsynced append is old enough
    /// (called by the log's background thread).
    pub(crate) fn flush_if_due(&self, now: i64) -> Result<()> {
        let FsyncPolicy::IntervalMs(interval) = self.fsync_policy() else {
            return Ok(());
        };
        let due = self
            .sync
            .lock()
            .oldest_unsynced_ms
            .is_some_and(|oldest| now - oldest >= interval.min(i64::MAX as u64) as i64);
        if due { self.flush() } else { Ok(()) }
    }
}

impl ReplicaLog {
    /// Syncs everything and trims the active segment's files to their data, so that a clean
    /// open finds exact lengths. Appends answer `Closed` afterwards.
    pub(crate) fn close(&self) -> Result<()> {
        self.flush()?;
        let mut w = self.writer.lock();
        if w.closed {
            return Ok(());
        }
        w.closed = true;
        drop(w);
        // An append (or a copy's roll) between the flush and the flag is made durable too,
        // with its epoch: the recovery point below covers it, and a clean open trusts it.
        self.flush()?;
        self.persist_epochs()?;
        let mut w = self.writer.lock();
        let active = Arc::clone(&w.active);
        if let Some(entry) = w.index_state.time_entry() {
            active.time_index.push(&entry)?;
        }
        // Only bytes beyond the published end are cut; no reader touches them.
        active.trim_files()?;
        self.sync_segment_files(&active)?;
        let end = w.next_offset;
        drop(w);
        self.recovery_point.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::codec::BatchBuilder;
    use crate::config::{FsyncPolicy, TopicConfig};

    /// A sync that read the log end before a truncation and finished after it (an
    /// appender's group commit, outside the partition's order lock) records nothing: it
    /// would put the synced point, and the recovery point, back above the cut, and the
    /// records appended there again would then pass for synced without an fsync.
    #[test]
    fn a_sync_overtaken_by_a_truncation_records_nothing() {
        let root = tempfile::tempdir().unwrap();
        let config = TopicConfig::default().fsync(FsyncPolicy::None);
        let log = crate::replica::test_replica(root.path(), config, 1_700_000_000_000);
        for i in 0..40 {
            let mut builder = BatchBuilder::new();
            builder.push(0, None, Some(format!("v{i}").as_bytes()), &[]);
            log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
        }
        let (upto, truncations) = log.sync_active(0).unwrap();
        assert_eq!(upto, 40);
        log.truncate_to(13).unwrap();
        let mut state = log.sync.lock();
        log.note_sync(&mut state, upto, truncations);
        assert!(state.synced_to <= 13, "synced to {}", state.synced_to);
        drop(state);
        assert!(log.recovery_point() <= 13);
        // A sync that read the log end after the cut counts.
        let (upto, truncations) = log.sync_active(0).unwrap();
        log.note_sync(&mut log.sync.lock(), upto, truncations);
        assert_eq!((log.sync.lock().synced_to, log.recovery_point()), (13, 13));
    }

    /// A segment sealed by a roll that does not sync (policy `None`, a follower's copy)
    /// just after a sync read the log end is synced by the next sync, though the synced
    /// point already passed its offsets: else its trimmed length and indexes never are.
    #[test]
    fn a_segment_sealed_unsynced_behind_a_running_sync_is_synced_by_the_next() {
        use crate::storage::{FaultStorage, OpKind, OsStorage, StorageDir};
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        let dir = StorageDir::open(fault.shared(), &root.path().join("d")).unwrap();
        let config = TopicConfig::default()
            .fsync(FsyncPolicy::None)
            .segment_bytes(200);
        let log = crate::replica::ReplicaLog::create(crate::replica::LoadOptions {
            tp: crate::types::TopicPartition::new("t", 0),
            dir: std::sync::Arc::new(dir),
            config,
            clock: std::sync::Arc::new(crate::clock::ManualClock::new(0)),
            clean: false,
            recovery_point: None,
            log_start: None,
            high_watermark: None,
            prefaulter: None,
        })
        .unwrap();
        let append = |value: &[u8]| {
            let mut builder = BatchBuilder::new();
            builder.push(0, None, Some(value), &[]);
            log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
        };
        append(b"a");
        // A sync reads the log end (1), then a roll seals segment 0 before it is noted.
        let (upto, truncations) = log.sync_active(0).unwrap();
        append(&[b'b'; 100]);
        assert_eq!(log.segments.read().len(), 2, "rolled");
        log.note_sync(&mut log.sync.lock(), upto, truncations);
        assert_eq!(log.sync.lock().synced_to, 1);
        let syncs = || {
            let ops = fault.op_log();
            ops.iter().filter(|(_, kind)| *kind == OpKind::Sync).count()
        };
        let before = syncs();
        log.flush().unwrap();
        // Segment 0's log and indexes, the active log, the directory.
        assert_eq!(syncs() - before, 5);
    }
}
