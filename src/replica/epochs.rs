//! A replica's leader-epoch cache (Kafka's `LeaderEpochFileCache`, KIP-101/279): for each
//! leader epoch seen in the log, the offset of its first batch. It is what lets a returning
//! replica find where its history diverged from the leader's.
//!
//! Kept in the partition directory as `leader-epoch-checkpoint`, a framed file
//! (`storage::write_framed`) whose body is Kafka's text form: `0`, the entry count, then
//! `<epoch> <start offset>` lines in ascending order.

use std::fmt::Write as _;
use std::path::Path;

use parking_lot::Mutex;

use crate::error::{Error, Location, Result};
use crate::storage::{StorageDir, read_framed, write_framed};

/// Name of the file in the partition directory.
pub(crate) const FILE: &str = "leader-epoch-checkpoint";
const MAGIC: [u8; 8] = *b"TNLEPOCH";
const VERSION: u32 = 1;

/// Kafka's `UNDEFINED_EPOCH`.
pub(crate) const UNDEFINED_EPOCH: i32 = -1;

/// Epoch → start offset, ascending in both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<(i32, u64)>,
}

impl EpochCache {
    /// A cache holding `entries` (ascending epochs and offsets).
    #[cfg(test)]
    pub(crate) fn from_entries(entries: &[(i32, u64)]) -> EpochCache {
        EpochCache {
            entries: entries.to_vec(),
        }
    }

    /// The entries, oldest first.
    pub(crate) fn entries(&self) -> &[(i32, u64)] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// Whether `assign(epoch, start)` would change the cache.
    pub(crate) fn needs(&self, epoch: i32, start: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(last, last_start)) => epoch != last || start < last_start,
            None => true,
        }
    }

    /// Records that `epoch` starts at `start` (Kafka's `assign`): negative epochs are
    /// ignored; entries at or after it in epoch or offset are dropped first, so both columns
    /// stay ascending. Returns whether anything changed.
    pub(crate) fn assign(&mut self, epoch: i32, start: u64) -> bool {
        if !self.needs(epoch, start) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|&(e, s)| e >= epoch || s >= start)
        {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and the offset
    /// where the next epoch starts (the log end for the latest epoch). `(-1, None)` when the
    /// epoch is undefined or newer than every entry.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end: u64) -> (i32, Option<u64>) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, None);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, Some(log_end));
        }
        let higher = self.entries.iter().position(|&(e, _)| e > requested);
        let Some(higher) = higher else {
            return (UNDEFINED_EPOCH, None);
        };
        let start = self.entries[higher].1;
        match higher.checked_sub(1) {
            Some(floor) => (self.entries[floor].0, Some(start)),
            None => (requested, Some(start)),
        }
    }

    /// Drops entries starting at or after `end` (Kafka's `truncateFromEnd`). Returns whether
    /// anything changed.
    pub(crate) fn truncate_from_end(&mut self, end: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, start)| start < end);
        self.entries.len() != before
    }

    /// Drops entries wholly below `start` and moves the first kept one up to it (Kafka's
    /// `truncateFromStart`). Returns whether anything changed.
    pub(crate) fn truncate_from_start(&mut self, start: u64) -> bool {
        let covering = self.entries.iter().rposition(|&(_, s)| s <= start);
        match covering {
            Some(i) if i > 0 || self.entries[0].1 != start => {
                self.entries.drain(..i);
                self.entries[0].1 = start;
                true
            }
            _ => false,
        }
    }

    /// Kafka's text body.
    fn encode(&self) -> String {
        let mut out = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            let _ = writeln!(out, "{epoch} {start}");
        }
        out
    }

    fn decode(body: &[u8], path: &Path) -> Result<EpochCache> {
        let bad = |detail: String| Error::Corruption {
            location: Location::File {
                path: path.to_path_buf(),
                position: 20,
            },
            what: "leader epoch checkpoint",
            detail,
        };
        let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
        let (count, lines) = crate::metadata::checkpoint_body(text, &bad)?;
        let mut cache = EpochCache::default();
        for line in lines {
            let entry = line
                .split_once(' ')
                .and_then(|(e, s)| Some((e.parse::<i32>().ok()?, s.parse::<u64>().ok()?)));
            let Some((epoch, start)) = entry else {
                return Err(bad(format!("line {line:?}")));
            };
            let ascending = cache
                .entries
                .last()
                .is_none_or(|&(e, s)| epoch > e && start > s);
            if epoch < 0 || !ascending {
                return Err(bad(format!("line {line:?} out of order")));
            }
            cache.entries.push((epoch, start));
        }
        if cache.entries.len() != count {
            return Err(bad(format!(
                "{} entries, header says {count}",
                cache.entries.len()
            )));
        }
        Ok(cache)
    }

    /// Reads the cache of the partition directory `sub` (its path under `dir`, or relative
    /// to it): `None` when the file does not exist.
    pub(crate) fn read(dir: &StorageDir, sub: &Path) -> Result<Option<EpochCache>> {
        let path = dir.path().join(sub).join(FILE);
        match read_framed(dir, &path, MAGIC, VERSION)? {
            None => Ok(None),
            Some((_, body)) => EpochCache::decode(&body, &path).map(Some),
        }
    }

    /// Replaces the file atomically.
    pub(crate) fn write(&self, dir: &StorageDir, sub: &Path) -> Result<()> {
        write_framed(dir, sub, FILE, MAGIC, VERSION, self.encode().as_bytes())
    }
}

/// A replica's epoch cache and its checkpoint file. A change made by an append stays in
/// memory until the replica's next sync writes the file, before the recovery point moves
/// past the batch (see `ReplicaLog::sync_active`; a leader's synced roll and `close` write
/// it too): an append's new epoch never waits for the checkpoint's fsync under the writer
/// lock, which a follower's copy holds under its partition's order lock (Kafka took the
/// same flush off its append path, KAFKA-15046). What a crash leaves unwritten, the batches
/// from the recovery point on tell again at load.
#[derive(Debug, Default)]
pub(crate) struct Epochs {
    /// The cache and its version, bumped by every change.
    cache: Mutex<(EpochCache, u64)>,
    /// The version the file holds. Held while the file is written, so that writes land in
    /// the order of the versions they hold.
    file: Mutex<u64>,
}

impl Epochs {
    /// `f` of the cache as it is in memory.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&EpochCache) -> R) -> R {
        f(&self.cache.lock().0)
    }

    /// Applies `change` (which says whether it changed anything) in memory only.
    pub(crate) fn change(&self, change: impl FnOnce(&mut EpochCache) -> bool) {
        let mut cache = self.cache.lock();
        if change(&mut cache.0) {
            cache.1 += 1;
        }
    }

    /// Replaces the cache with `cache`, as the file holds it (or as good: at load, stale
    /// entries past the log end, which the next load trims again).
    pub(crate) fn install(&self, cache: EpochCache) {
        let mut file = self.file.lock();
        let mut current = self.cache.lock();
        current.0 = cache;
        current.1 += 1;
        *file = current.1;
    }

    /// Writes the file of partition directory `sub` when it lags the cache.
    pub(crate) fn persist(&self, dir: &StorageDir, sub: &Path) -> Result<()> {
        let mut file = self.file.lock();
        let (cache, version) = {
            let current = self.cache.lock();
            if current.1 == *file {
                return Ok(());
            }
            (current.0.clone(), current.1)
        };
        cache.write(dir, sub)?;
        *file = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `LeaderEpochFileCacheTest` vectors: entries {0@10, 2@13, 4@17}.
    fn kafka_cache() -> EpochCache {
        EpochCache::from_entries(&[(0, 10), (2, 13), (4, 17)])
    }

    #[test]
    fn end_offset_for_matches_kafka() {
        let cache = kafka_cache();
        // shouldReturnNextAvailableEpochIfThereIsNoExactEpochForTheOneRequested
        assert_eq!(cache.end_offset_for(1, 20), (0, Some(13)));
        assert_eq!(cache.end_offset_for(2, 20), (2, Some(17)));
        assert_eq!(cache.end_offset_for(3, 20), (2, Some(17)));
        // The latest epoch ends at the log end.
        assert_eq!(cache.end_offset_for(4, 20), (4, Some(20)));
        // shouldReturnUnsupportedIfNoEpochRecorded / requested newer than any.
        assert_eq!(cache.end_offset_for(5, 20), (UNDEFINED_EPOCH, None));
        assert_eq!(cache.end_offset_for(-1, 20), (UNDEFINED_EPOCH, None));
        assert_eq!(
            EpochCache::default().end_offset_for(0, 0),
            (UNDEFINED_EPOCH, None)
        );
        // Older than the first entry: the requested epoch, ending where the first starts.
        let later = EpochCache::from_entries(&[(3, 5)]);
        assert_eq!(later.end_offset_for(1, 9), (1, Some(5)));
    }

    /// `shouldGetFirstOffsetOfSubsequentEpochWhenOffsetRequestedForPreviousEpoch`: an epoch
    /// assigned again at later offsets keeps its first; a previous epoch ends where the next
    /// one starts.
    #[test]
    fn a_previous_epoch_ends_where_the_next_starts() {
        let mut cache = EpochCache::default();
        for (epoch, offset) in [(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)] {
            cache.assign(epoch, offset);
        }
        assert_eq!(cache.entries(), &[(1, 11), (2, 13), (3, 15)]);
        assert_eq!(cache.end_offset_for(2, 17), (2, Some(15)));
        assert_eq!(cache.end_offset_for(1, 17), (1, Some(13)));
        assert_eq!(cache.end_offset_for(3, 17), (3, Some(17)));
    }

    #[test]
    fn assign_follows_kafka() {
        let mut cache = EpochCache::default();
        // shouldNotStoreNegativeEpoch
        assert!(!cache.assign(-1, 0));
        assert!(cache.assign(2, 6));
        // Same epoch, later offset: no change (shouldNotOverwriteOffsetForALeaderEpochOnceItHasBeenAssigned).
        assert!(!cache.assign(2, 7));
        // Same epoch, earlier offset: replaced.
        assert!(cache.assign(2, 5));
        assert_eq!(cache.entries(), &[(2, 5)]);
        assert!(cache.assign(3, 8));
        // An older epoch at a later offset drops what is newer (shouldDropEntriesOnEpochBoundaryWhenRemovingLatestEntries).
        assert!(cache.assign(1, 9));
        assert_eq!(cache.entries(), &[(1, 9)]);
        // A newer epoch at an older offset drops the entries at or after that offset.
        let mut cache = kafka_cache();
        assert!(cache.assign(5, 13));
        assert_eq!(cache.entries(), &[(0, 10), (5, 13)]);
    }

    #[test]
    fn truncation_follows_kafka() {
        // shouldRetainLatestEpochOnClearAllEarliestAndUpdateItsOffset
        let mut cache = kafka_cache();
        assert!(cache.truncate_from_start(15));
        assert_eq!(cache.entries(), &[(2, 15), (4, 17)]);
        // shouldNotClearAnythingIfOffsetToEarly
        let mut cache = kafka_cache();
        assert!(!cache.truncate_from_start(10));
        assert!(!cache.truncate_from_start(5));
        assert_eq!(cache, kafka_cache());
        // shouldClearLatestOnTheEndOffset / shouldDropEntriesBetweenEpochBoundaryWhenRemovingNewest
        let mut cache = kafka_cache();
        assert!(cache.truncate_from_end(17));
        assert_eq!(cache.entries(), &[(0, 10), (2, 13)]);
        assert!(cache.truncate_from_end(11));
        assert_eq!(cache.entries(), &[(0, 10)]);
        // shouldNotClearAnythingIfOffsetToLate
        assert!(!cache.truncate_from_end(100));
        assert!(cache.truncate_from_end(0));
        assert_eq!(cache.latest_epoch(), None);
    }

    #[test]
    fn text_round_trips_and_refuses_damage() {
        let cache = kafka_cache();
        let path = Path::new("x");
        assert_eq!(
            EpochCache::decode(cache.encode().as_bytes(), path).expect("decodes"),
            cache
        );
        assert_eq!(cache.encode(), "0\n3\n0 10\n2 13\n4 17\n");
        for bad in [
            "1\n0\n",
            "0\n2\n0 10\n",
            "0\n2\n2 10\n1 12\n",
            "0\n1\nx 1\n",
            "0\n1\n-3 1\n",
        ] {
            assert!(matches!(
                EpochCache::decode(bad.as_bytes(), path),
                Err(Error::Corruption { .. })
            ));
        }
    }
}
