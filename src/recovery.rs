//! What opening a log found and repaired: returned by `Log::recovery_report`.

use std::path::PathBuf;

use crate::types::TopicPartition;

/// What `Log::open` did to bring every partition to a consistent state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Storage directories that were closed cleanly (no data was rescanned in them).
    pub clean_dirs: Vec<PathBuf>,
    /// Storage directories that were not closed cleanly.
    pub unclean_dirs: Vec<PathBuf>,
    /// Storage directories that could not be opened (with the error): with several
    /// directories the log opens without them, their replicas offline until
    /// `Log::restore_dir`.
    pub offline_dirs: Vec<(PathBuf, String)>,
    /// Checkpoint files that could not be read, so their hints were ignored.
    pub unreadable_checkpoints: Vec<(PathBuf, String)>,
    /// One entry per partition replica.
    pub partitions: Vec<PartitionRecovery>,
    /// Replicas that could not be loaded (damaged below their recovery point, unreadable)
    /// while a peer could lead: each was moved aside to the path given (with the error
    /// found), recreated empty and rebuilt from its leader.
    pub repaired: Vec<(PathBuf, String)>,
    /// Replicas moved aside (to the paths given) because their directory's history forked
    /// from the one the log opened with: the directory was offline while the others went
    /// on, then written alone by a log opened without them (a double failure). Each may
    /// hold acknowledged records the log no longer has; it is kept, never deleted, and the
    /// replica is rebuilt from its leader.
    pub diverged: Vec<PathBuf>,
}

impl RecoveryReport {
    /// Every truncation, across partitions.
    pub fn truncations(&self) -> impl Iterator<Item = &Truncation> {
        self.partitions.iter().filter_map(|p| p.truncation.as_ref())
    }

    /// True when nothing was truncated, rebuilt or removed.
    pub fn is_clean(&self) -> bool {
        self.repaired.is_empty()
            && self.diverged.is_empty()
            && self.offline_dirs.is_empty()
            && self.partitions.iter().all(|p| {
                p.truncation.is_none()
                    && p.rebuilt_indexes.is_empty()
                    && p.removed_files.is_empty()
                    && !p.created
            })
    }
}

/// What recovery did to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecovery {
    /// The partition.
    pub topic_partition: TopicPartition,
    /// Its directory.
    pub path: PathBuf,
    /// The recovery point it started from (offsets below it were known synced).
    pub recovery_point: u64,
    /// Segments whose bytes were scanned and checked.
    pub segments_scanned: usize,
    /// The torn or corrupt tail that was cut, if any.
    pub truncation: Option<Truncation>,
    /// Index files rebuilt from the log because they were missing or wrong.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Leftover files removed (temporary files of interrupted operations, orphan indexes,
    /// the log files of segments wholly below the log start whose deletion a crash
    /// interrupted).
    pub removed_files: Vec<PathBuf>,
    /// The partition's directory was missing and was created empty.
    pub created: bool,
    /// The log end offset after recovery.
    pub log_end_offset: u64,
}

/// A cut tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file that was cut.
    pub segment: PathBuf,
    /// Byte position of the cut (the end of the valid prefix).
    pub position: u64,
    /// Bytes discarded after the cut in that segment, up to its last non-zero byte; runs of
    /// 64 or more zeros (preallocated space) are not counted.
    pub bytes_discarded: u64,
    /// The offset the log ends at after the cut.
    pub offset: u64,
    /// Later segment files deleted because they followed the cut.
    pub deleted_segments: Vec<PathBuf>,
    /// Why the valid prefix ended there.
    pub reason: String,
}
