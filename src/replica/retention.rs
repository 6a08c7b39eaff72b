//! Retention: deleting a replica's oldest segments (Kafka's `deleteOldSegments`) and moving
//! its log start (`DeleteRecords`).
//!
//! Only whole segments are deleted, oldest first, and only segments lying wholly below the
//! high watermark. Files are unlinked, never shortened: a reader holding `Bytes` from a
//! deleted segment keeps its mapping (and the inode) alive until it drops them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{ReplicaLog, Writer};
use crate::codec::NO_TIMESTAMP;
use crate::error::{Error, Result};
use crate::segment::Segment;

/// What a retention pass removed from one replica.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deleted {
    /// Segments deleted.
    pub segments: u64,
    /// Log bytes they held.
    pub bytes: u64,
}

impl ReplicaLog {
    /// Kafka's `deleteOldSegments` on the leader: the time pass (`retention_ms`: the
    /// segment's newest record is older, or its last write when its records carry no
    /// timestamp), the size pass (`retention_bytes`: the partition
    /// would still hold at least that much without the segment) and the log-start pass (the
    /// next segment starts at or below the log start), each stopping at the first segment
    /// it keeps. A segment is deleted only when it lies wholly below the high watermark, so
    /// nothing a consumer cannot see yet goes. When every segment is due the log rolls first,
    /// so that an empty active segment remains at the log end. The log start then moves to
    /// the first offset kept.
    pub(crate) fn delete_old_segments(&self, now: i64) -> Result<Deleted> {
        let mut w = self.writer.lock();
        if w.closed {
            return Err(Error::Closed);
        }
        self.dir.check()?;
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let count = self.due_for_deletion(&w, &segments, now);
        if count == 0 {
            return Ok(Deleted::default());
        }
        if count == segments.len() {
            // Everything goes, the active segment too: a new one starts at the log end.
            self.roll(&mut w, now, 0)?;
        }
        let start = segments.get(count).map_or(w.next_offset, |s| s.base_offset);
        self.log_start.fetch_max(start, Ordering::AcqRel);
        Ok(self.remove_prefix(&w, count))
    }

    /// How many of the oldest `segments` the three passes of `delete_old_segments` delete.
    fn due_for_deletion(&self, w: &Writer, segments: &[Arc<Segment>], now: i64) -> usize {
        let n = segments.len();
        let high_watermark = self.high_watermark();
        let upper = |i: usize| segments.get(i + 1).map_or(w.next_offset, |s| s.base_offset);
        // Wholly below the high watermark, and never an empty active segment.
        let deletable = |i: usize| {
            i < n && high_watermark >= upper(i) && !(i + 1 == n && segments[i].size() == 0)
        };
        let mut count = 0;
        // A compact-only topic keeps its segments: only the log-start pass applies.
        let deletes = self.config().cleanup_policy.deletes();
        if deletes && self.config().retention_ms >= 0 {
            while deletable(count) {
                let segment = &segments[count];
                let newest = if count + 1 == n {
                    w.index_state.max_timestamp
                } else {
                    segment
                        .time_index
                        .last_time_entry()
                        .map_or(NO_TIMESTAMP, |(timestamp, _)| timestamp)
                };
                // Kafka's `largestTimestamp`: a segment whose records carry no timestamp
                // ages from its last write; one whose last write is unknown is kept.
                let newest = if newest < 0 {
                    segment.last_modified()
                } else {
                    newest
                };
                if newest == NO_TIMESTAMP
                    || now.saturating_sub(newest) <= self.config().retention_ms
                {
                    break;
                }
                count += 1;
            }
        }
        if let Ok(limit) = u64::try_from(self.config().retention_bytes).map_err(|_| ())
            && deletes
        {
            let size: u64 = segments[count..].iter().map(|s| s.size() as u64).sum();
            let mut excess = size.saturating_sub(limit);
            while deletable(count) && excess >= segments[count].size() as u64 {
                excess -= segments[count].size() as u64;
                count += 1;
            }
        }
        let start = self.log_start_offset();
        while deletable(count) && count + 1 < n && segments[count + 1].base_offset <= start {
            count += 1;
        }
        count
    }

    /// Raises the log start to `offset` (at most the log end) and deletes the segments
    /// wholly below it (Kafka's `maybeIncrementLogStartOffset` and the log-start pass). On a
    /// leader the caller checks `offset` against the high watermark; a follower follows its
    /// leader's start.
    pub(crate) fn raise_log_start(&self, offset: u64) -> Result<Deleted> {
        let w = self.writer.lock();
        if w.closed {
            return Err(Error::Closed);
        }
        self.dir.check()?;
        let start = offset.min(w.next_offset);
        self.log_start.fetch_max(start, Ordering::AcqRel);
        let start = self.log_start_offset();
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let count = segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset <= start)
            .count();
        Ok(self.remove_prefix(&w, count))
    }

    /// Takes the oldest `count` segments (never the active one) out of the map and queues
    /// their files for [`ReplicaLog::unlink_deleted`]; trims the epoch cache to the log
    /// start. Readers find the log start raised before a segment leaves the map.
    fn remove_prefix(&self, w: &Writer, count: usize) -> Deleted {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write();
            let bases: Vec<u64> = segments.keys().copied().take(count).collect();
            bases
                .iter()
                .filter(|&&base| base != w.active.base_offset)
                .filter_map(|base| segments.remove(base))
                .collect()
        };
        let mut deleted = Deleted::default();
        for segment in &removed {
            deleted.segments += 1;
            deleted.bytes += segment.size() as u64;
        }
        let start = self.log_start_offset();
        self.unlinking
            .lock()
            .extend(removed.iter().map(|s| (s.base_offset, start)));
        self.trim_epochs_to_start();
        deleted
    }

    /// A checkpoint holding log start `start` for this replica, read when its truncation
    /// count was `truncations`, is on disk in its directory. Not counted after a cut since
    /// (which may have lowered the start below it).
    pub(crate) fn log_start_checkpointed(&self, start: u64, truncations: u64) {
        if self.truncation_count() == truncations {
            self.start_checkpointed.fetch_max(start, Ordering::AcqRel);
        }
    }

    /// Whether segment files wait for `unlink_deleted`.
    pub(crate) fn has_unlinking(&self) -> bool {
        !self.unlinking.lock().is_empty()
    }

    /// Unlinks the files of the segments retention deleted, oldest first, and syncs the
    /// directory: those whose removing log start a checkpoint in this replica's directory
    /// holds (see [`ReplicaLog::log_start_checkpointed`]), so that a crash leaves at most
    /// files below the checkpointed start, which the open skips and the next pass deletes,
    /// whatever order the unlinks reached the disk in. Not those another deletion queued
    /// after the checkpoint was written, nor any whose checkpoint failed (its directory
    /// then went offline). Files that could not be unlinked stay queued for the next call.
    pub(crate) fn unlink_deleted(&self) -> Result<()> {
        // Under the writer lock: a topic being deleted (retired) keeps its files for the
        // deletion, which moves the whole directory.
        let w = self.writer.lock();
        let mut queued = self.unlinking.lock();
        let checkpointed = self.start_checkpointed.load(Ordering::Acquire);
        if w.closed
            || queued
                .first()
                .is_none_or(|&(_, start)| start > checkpointed)
        {
            return Ok(());
        }
        let storage = self.dir.storage();
        while let Some(&(base, start)) = queued.first() {
            if start > checkpointed {
                break;
            }
            for file in Segment::paths(&self.path, base) {
                if storage.exists(&file) {
                    storage
                        .remove_file(&file)
                        .map_err(|e| Error::io("remove", &file, e))?;
                }
            }
            queued.remove(0);
        }
        self.dir.sync_dir(&self.path)
    }

    /// Log bytes of this replica: the sum of its segments' data (what retention counts).
    pub(crate) fn size_bytes(&self) -> u64 {
        self.segments.read().values().map(|s| s.size() as u64).sum()
    }

    /// Drops leader-epoch entries below the log start, in memory: the checkpoint is
    /// written by the next sync (Kafka's `truncateFromStartAsyncFlush`). A follower's log
    /// start moves under its partition's order lock, which must not wait for its disk; and
    /// a crash before the write leaves entries below the log start, which load trims.
    fn trim_epochs_to_start(&self) {
        let start = self.log_start_offset();
        self.epochs.change(|cache| cache.truncate_from_start(start));
    }
}

#[cfg(test)]
mod tests {
    //! Ported from Kafka's `UnifiedLogTest`.
    #![allow(clippy::unwrap_used)]

    use crate::codec::BatchBuilder;
    use crate::config::TopicConfig;
    use crate::replica::ReplicaLog;

    const NOW: i64 = 1_700_000_000_000;

    fn replica(root: &std::path::Path, config: TopicConfig) -> ReplicaLog {
        crate::replica::test_replica(root, config, NOW)
    }

    fn append(log: &ReplicaLog, timestamp: i64, value: &[u8]) {
        let mut builder = BatchBuilder::new();
        builder.push(timestamp, None, Some(value), &[]);
        log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
    }

    /// `testCannotDeleteSegmentsAtOrAboveHighWatermark`: every segment is past
    /// `retention_ms`, yet only those wholly below the high watermark go; at the end the log
    /// rolled and one empty segment remains at the log end.
    #[test]
    fn cannot_delete_segments_at_or_above_the_high_watermark() {
        let root = tempfile::tempdir().unwrap();
        let config = TopicConfig::default()
            .segment_bytes(512)
            .segment_index_bytes(1000)
            .retention_ms(999);
        let log = replica(root.path(), config);
        log.set_replicated(true);
        for i in 0..100 {
            append(&log, NOW - 1000, format!("test{i}").as_bytes());
        }
        assert!(log.segment_count() > 5);
        assert_eq!(
            (
                log.high_watermark(),
                log.log_start_offset(),
                log.log_end_offset()
            ),
            (0, 0, 100)
        );
        for high_watermark in 0..=100 {
            log.reset_high_watermark(high_watermark);
            assert_eq!(log.high_watermark(), high_watermark);
            log.delete_old_segments(NOW).unwrap();
            let start = log.log_start_offset();
            assert!(
                start <= high_watermark,
                "log start {start} above {high_watermark}"
            );
            let bases = log.segment_bases();
            assert!(bases[0] <= start, "the first segment holds the log start");
            for &base in &bases[1..] {
                assert!(
                    base > high_watermark,
                    "segment {base} at or below {high_watermark}"
                );
            }
        }
        assert_eq!(log.log_start_offset(), 100);
        assert_eq!(log.segment_bases(), [100]);
        assert_eq!(log.writer.lock().active.size(), 0);
    }

    /// Retention by size (`shouldDeleteSizeBasedSegments` and the under-size case): five
    /// records per segment, fifteen records.
    #[test]
    fn size_based_retention() {
        for (segments_kept, limit_in_records) in [(2, 10), (3, 15)] {
            let root = tempfile::tempdir().unwrap();
            let probe = replica(root.path(), TopicConfig::default());
            append(&probe, NOW, b"test");
            let size: usize = probe.segments.read().values().map(|s| s.size()).sum();
            drop(probe);
            let root = tempfile::tempdir().unwrap();
            let config = TopicConfig::default()
                .segment_bytes(5 * size as u64)
                .retention_bytes(limit_in_records * size as i64);
            let log = replica(root.path(), config);
            for _ in 0..15 {
                append(&log, NOW, b"test");
            }
            assert_eq!(log.segment_count(), 3);
            log.delete_old_segments(NOW).unwrap();
            assert_eq!(
                log.segment_count(),
                segments_kept,
                "limit {limit_in_records}"
            );
        }
    }

    /// Retention by time with the injected clock: nothing is due until the newest record
    /// of a segment is older than `retention_ms`; an old active segment rolls and goes.
    #[test]
    fn time_based_retention() {
        let root = tempfile::tempdir().unwrap();
        let config = TopicConfig::default().retention_ms(10_000);
        let log = replica(root.path(), config);
        for _ in 0..3 {
            append(&log, 10, b"old");
        }
        assert_eq!(log.delete_old_segments(10_010).unwrap().segments, 0);
        let deleted = log.delete_old_segments(NOW).unwrap();
        assert_eq!(deleted.segments, 1);
        assert_eq!(log.segment_bases(), [3]);
        assert_eq!(log.log_start_offset(), 3);
    }
}
