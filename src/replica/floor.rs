//! The recovery floor: a file in a partition directory that caps the recovery point an
//! open trusts for that replica.
//!
//! The recovery point lives in a checkpoint shared by every partition of the directory,
//! written after the fact (by the background thread, a flush, a close). A truncation cuts
//! the log below it: a crash before the next checkpoint would leave a log that ends below
//! the recovery point on disk, which an open must take for damage to synced data
//! (`Corruption`). So before a cut below the recovery point, the cut's offset is written
//! here, durably; an open takes the smaller of the two. The file goes (durably) once a
//! recovery-point checkpoint taken after the cut is on disk.
//!
//! Kept as a framed file (`storage::write_framed`) whose body is the offset in decimal.

use std::path::Path;

use crate::error::{Error, Result};
use crate::storage::{StorageDir, read_framed, write_framed};

use super::ReplicaLog;

/// Name of the file in the partition directory.
pub(crate) const FILE: &str = "recovery-floor";
const MAGIC: [u8; 8] = *b"TNLFLOOR";
const VERSION: u32 = 1;

/// What a replica knows of its floor file.
#[derive(Debug, Default)]
pub(crate) struct Floor {
    /// The offset the file on disk holds, if there is one.
    on_disk: Option<u64>,
    /// The truncation count from which a recovery-point checkpoint covers every cut the
    /// file stands for (`u64::MAX` while one runs, or after one failed: kept this run).
    needed_until: u64,
}

impl Floor {
    /// A floor found on disk at open: the recovery point loaded is already below it, so
    /// the first checkpoint covers it.
    pub(crate) fn loaded(on_disk: Option<u64>) -> Floor {
        Floor {
            on_disk,
            needed_until: 0,
        }
    }

    /// After a cut that succeeded, which left the truncation count at `truncations` (the
    /// recovery point in memory is now at most its end): a checkpoint taken from here on
    /// covers it.
    pub(super) fn covered_from(&mut self, truncations: u64) {
        self.needed_until = truncations;
    }
}

/// Reads the floor in partition directory `path`: `None` without the file. A file that
/// does not read as an offset (written whole by `write_framed`, so it never should) counts
/// as a floor of 0: the open then checks nothing below the recovery point strictly, rather
/// than take a legitimate cut for damage.
pub(crate) fn read(dir: &StorageDir, path: &Path) -> Result<Option<u64>> {
    match read_framed(dir, &path.join(FILE), MAGIC, VERSION) {
        Ok(Some((_, body))) => Ok(Some(
            std::str::from_utf8(&body)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(0),
        )),
        Ok(None) => Ok(None),
        Err(Error::Corruption { .. }) => Ok(Some(0)),
        Err(error) => Err(error),
    }
}

impl ReplicaLog {
    /// Before a cut (a truncation or a restart) that leaves the log ending at `end`, under
    /// the writer lock: writes the floor at `end` when the recovery point on disk may lie
    /// above it. (It can be above the one in memory only after an earlier cut, whose floor
    /// is then on disk and at most that cut.)
    pub(super) fn lower_floor(&self, floor: &mut Floor, end: u64) -> Result<()> {
        floor.needed_until = u64::MAX;
        let above = floor.on_disk.unwrap_or_else(|| self.recovery_point());
        if end < above {
            self.write_floor(floor, end)?;
        }
        Ok(())
    }

    /// Writes the floor at `end` unless the one on disk is at most that already.
    pub(super) fn write_floor(&self, floor: &mut Floor, end: u64) -> Result<()> {
        if floor.on_disk.is_some_and(|on_disk| on_disk <= end) {
            return Ok(());
        }
        write_framed(
            &self.dir,
            &self.path,
            FILE,
            MAGIC,
            VERSION,
            end.to_string().as_bytes(),
        )?;
        floor.on_disk = Some(end);
        Ok(())
    }

    /// The lowest offset the log may end at while it restarts: its segments (and the files
    /// retention queued for unlinking, below them) are deleted newest first, so a kill
    /// midway leaves a prefix of them, ending at the base of the last one deleted; at
    /// least the lowest base (or `offset`, when lower).
    pub(super) fn restart_floor(&self, offset: u64) -> u64 {
        let first = self.segments.read().keys().next().copied();
        let queued = self.unlinking.lock().iter().map(|&(base, _)| base).min();
        [first, queued].into_iter().flatten().fold(offset, u64::min)
    }

    /// Whether a floor file is on disk (as far as this replica knows), or a cut that may
    /// write one runs now.
    pub(crate) fn has_recovery_floor(&self) -> bool {
        self.floor
            .try_lock()
            .is_none_or(|floor| floor.on_disk.is_some())
    }

    /// A recovery-point checkpoint of this replica, read after its truncation count was
    /// `truncations`, is on disk: the floor goes when that covers it. Best effort (a
    /// floor left behind costs the next open a scan from it); skipped while a cut runs.
    pub(crate) fn recovery_point_checkpointed(&self, truncations: u64) {
        let Some(mut floor) = self.floor.try_lock() else {
            return;
        };
        if floor.on_disk.is_none() || truncations < floor.needed_until {
            return;
        }
        let file = self.path.join(FILE);
        let removed = match self.dir.storage().remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(()),
            _ => self.dir.sync_dir(&self.path).map_err(|_| ()),
        };
        if removed.is_ok() {
            floor.on_disk = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::codec::BatchBuilder;
    use crate::config::TopicConfig;

    /// A restart deletes the files retention queued for unlinking too (newest first, after
    /// the segments in the map): until they are unlinked, the lowest of them bounds where
    /// a kill midway may leave the log's end.
    #[test]
    fn a_restarts_floor_counts_files_queued_for_unlinking() {
        let root = tempfile::tempdir().unwrap();
        let log = crate::replica::test_replica(root.path(), TopicConfig::default(), 0);
        for _ in 0..3 {
            for value in ["a", "b"] {
                let mut builder = BatchBuilder::new();
                builder.push(0, None, Some(value.as_bytes()), &[]);
                log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
            }
            let mut w = log.writer.lock();
            log.roll(&mut w, 0, 0).unwrap();
        }
        assert_eq!(log.restart_floor(100), 0);
        log.raise_log_start(4).unwrap();
        assert_eq!(log.segments.read().keys().next(), Some(&4));
        assert_eq!(log.restart_floor(100), 0, "queued, not yet unlinked");
        assert_eq!(log.restart_floor(0), 0);
        // A truncation below the first segment restarts the log: its floor too.
        log.flush().unwrap();
        log.truncate_to(2).unwrap();
        assert_eq!(log.floor.lock().on_disk, Some(0));
        assert_eq!(super::read(&log.dir, &log.path).unwrap(), Some(0));
        log.unlink_deleted().unwrap();
        assert_eq!(log.restart_floor(100), 2);
        assert_eq!(log.restart_floor(1), 1);
    }
}
