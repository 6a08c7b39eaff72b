//! Opening a replica (recovery) and truncating one.
//!
//! Recovery rules (docs/DESIGN.md "Recovery"):
//! 1. A cleaner swap that was committed (`<base>.log.swap`) is finished; other leftovers of
//!    interrupted operations (`*.cleaned`, `*.swap`, `*.tmp`, `*.deleted`) and index files
//!    without a `.log` are removed.
//! 2. After a clean close nothing is rescanned: sealed indexes are sanity-checked, and the
//!    active segment is read from its last index entry to its end.
//! 3. Otherwise every segment from the one holding the recovery point on is scanned: the
//!    longest valid prefix is kept, indexes are rebuilt, a torn tail is cut and later
//!    segments are deleted — unless the damage lies below the recovery point, which is
//!    `Error::Corruption` with its location (acknowledged-synced data is never cut).
//! 4. A missing or insane index of a trusted segment is rebuilt by a strict scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64};

use parking_lot::{Condvar, Mutex, RwLock};

use super::{EpochCache, Epochs, ReplicaLog, SyncState, Writer};
use crate::clock::Clock;
use crate::codec::{self, NO_TIMESTAMP};
use crate::config::TopicConfig;
use crate::error::{Error, Location, Result};
use crate::recovery::{PartitionRecovery, Truncation};
use crate::segment::scan::{self, IndexState, ScanLimits, ScanOutcome};
use crate::segment::{Index, IndexKind, Segment, file_name, parse_file_name};
use crate::storage::{MappedFile, OpenMode, StorageDir};
use crate::types::TopicPartition;

/// What a replica is opened with.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    pub tp: TopicPartition,
    pub dir: Arc<StorageDir>,
    pub config: TopicConfig,
    pub clock: Arc<dyn Clock>,
    /// The directory was closed cleanly.
    pub clean: bool,
    /// From `recovery-point-offset-checkpoint`.
    pub recovery_point: Option<u64>,
    /// From `log-start-offset-checkpoint`.
    pub log_start: Option<u64>,
    /// From `replication-offset-checkpoint`: where a replicated partition's high watermark
    /// starts (unknown: its log start; an unreplicated one's is always its log end).
    pub high_watermark: Option<u64>,
    /// Background allocation and prefaulting of active segments, when enabled.
    pub prefaulter: Option<super::Prefaulter>,
}

/// A replica's directory name: `<topic>-<partition>`.
pub(crate) fn partition_dir_name(tp: &TopicPartition) -> String {
    format!("{}-{}", tp.topic, tp.partition)
}

/// The file in a partition directory that says its replica was recreated empty and has not
/// been level with a leader since: it is not the in-sync copy `meta` may still record it
/// as (its directory was replaced, or the copy set aside), so it must not lead.
pub(crate) const REBUILDING: &str = "rebuilding";

/// Creates the partition directory `path` (missing) holding the [`REBUILDING`] marker, as
/// one step: it is built under a name an open removes (`.delete`), then renamed into
/// place, so that after a crash the directory is either missing or marked. The staging
/// name is short and fixed in length (a hash of the partition's), so that a topic name
/// of any valid length fits the file system's limit.
fn create_rebuilding(dir: &StorageDir, path: &Path) -> Result<()> {
    use std::hash::{Hash, Hasher};
    let storage = dir.storage();
    let mut hasher = std::hash::DefaultHasher::new();
    path.hash(&mut hasher);
    let staging = dir
        .path()
        .join(format!(".rebuild-{:016x}.delete", hasher.finish()));
    if storage.exists(&staging) {
        storage
            .remove_dir_all(&staging)
            .map_err(|e| Error::io("remove", &staging, e))?;
    }
    storage
        .create_dir_all(&staging)
        .map_err(|e| Error::io("create directory", &staging, e))?;
    let marker = staging.join(REBUILDING);
    storage
        .open(&marker, OpenMode::Create)
        .map_err(|e| Error::io("create", &marker, e))?;
    dir.sync_dir(&staging)?;
    storage
        .rename(&staging, path)
        .map_err(|e| Error::io("rename", &staging, e))?;
    dir.sync_dir(dir.path())
}

/// Segments found and the recovery decisions made while loading.
struct Loaded {
    sealed: Vec<Arc<Segment>>,
    writer: Writer,
    report: PartitionRecovery,
}

impl ReplicaLog {
    /// Options to open this replica's directory again, unclean, without checkpoints.
    pub(super) fn unclean_options(&self) -> LoadOptions {
        LoadOptions {
            tp: self.tp.clone(),
            dir: Arc::clone(&self.dir),
            config: self.config(),
            clock: Arc::clone(&self.clock),
            clean: false,
            recovery_point: None,
            log_start: None,
            high_watermark: None,
            prefaulter: None,
        }
    }

    /// Creates a new, empty replica (a new topic's partition).
    pub(crate) fn create(options: LoadOptions) -> Result<ReplicaLog> {
        let path = options.dir.path().join(partition_dir_name(&options.tp));
        let storage = options.dir.storage();
        if storage.exists(&path) {
            // A leftover of a topic deleted before a crash: nothing of it is wanted.
            storage
                .remove_dir_all(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        storage
            .create_dir_all(&path)
            .map_err(|e| Error::io("create directory", &path, e))?;
        let (log, _) = Self::load(options)?;
        Ok(log)
    }

    /// Opens (and when needed recovers) a replica.
    pub(crate) fn load(options: LoadOptions) -> Result<(ReplicaLog, PartitionRecovery)> {
        let path = options.dir.path().join(partition_dir_name(&options.tp));
        let storage = options.dir.storage();
        // A missing directory is recreated marked: the replica's data is gone, and it
        // stays a replica to rebuild (`Stale`) at every open until it has been level with a
        // leader, however often the log reopens before then.
        let created = !storage.exists(&path);
        if created {
            create_rebuilding(&options.dir, &path)?;
        }
        let rebuilding = created || storage.exists(&path.join(REBUILDING));
        // A cut that a crash may have stopped before the recovery-point checkpoint went
        // down with it: the log may end below that checkpoint, legitimately.
        let floor = super::floor::read(&options.dir, &path)?;
        let mut options = options;
        if let Some(floor) = floor {
            options.recovery_point = options.recovery_point.map(|point| point.min(floor));
        }
        let mut loaded = load_segments(&options, &path)?;
        loaded.report.created = rebuilding;
        let writer = loaded.writer;
        let next = writer.next_offset;
        let first_base = loaded
            .sealed
            .first()
            .map_or(writer.active.base_offset, |s| s.base_offset);
        let checkpointed_start = options.log_start.unwrap_or(0).max(first_base);
        let log_start = checkpointed_start.min(next);
        let recovery_point = if options.clean {
            next
        } else {
            options.recovery_point.unwrap_or(0).min(next)
        };
        let high_watermark = match options.high_watermark {
            Some(high) => high.clamp(log_start, next),
            None if options.config.replication_factor > 1 => log_start,
            None => next,
        };
        let mut segments = BTreeMap::new();
        for segment in loaded.sealed {
            segments.insert(segment.base_offset, segment);
        }
        segments.insert(writer.active.base_offset, Arc::clone(&writer.active));
        loaded.report.log_end_offset = next;
        let log = ReplicaLog {
            tp: options.tp,
            dir: options.dir,
            path,
            config: RwLock::new(options.config),
            clock: options.clock,
            segments: RwLock::new(segments),
            unlinking: Mutex::new(Vec::new()),
            start_checkpointed: AtomicU64::new(0),
            writer: Mutex::new(writer),
            log_end: AtomicU64::new(next),
            log_start: AtomicU64::new(log_start),
            high_watermark: AtomicU64::new(high_watermark),
            recovery_point: AtomicU64::new(recovery_point),
            leader_epoch: AtomicI32::new(0),
            epochs: Epochs::default(),
            sealed_unsynced: Mutex::new(std::collections::BTreeSet::new()),
            replicated: std::sync::atomic::AtomicBool::new(false),
            prefaulter: options.prefaulter,
            cleaner_point: AtomicU64::new(0),
            cleaning: Mutex::new(()),
            cleaner_file: Mutex::new(u64::MAX),
            truncations: AtomicU64::new(0),
            floor: Mutex::new(super::floor::Floor::loaded(floor)),
            retired: std::sync::atomic::AtomicBool::new(false),
            rebuilding: std::sync::atomic::AtomicBool::new(rebuilding),
            sync: Mutex::new(SyncState {
                synced_to: recovery_point,
                ..SyncState::default()
            }),
            synced: Condvar::new(),
        };
        if checkpointed_start > next {
            log.restart_at_checkpointed_start(checkpointed_start, &mut loaded.report)?;
        }
        log.load_epochs()?;
        log.load_cleaner_point()?;
        if !options.clean && log.dir.needs_resync() {
            log.resync_unsynced()?;
        }
        Ok((log, loaded.report))
    }

    /// Kafka's `LogLoader`: a log that recovered to an end below its checkpointed start
    /// (a power loss took unsynced records, while the deletion up to `start` was synced)
    /// restarts empty at `start`, so that no offset below it is handed out again.
    fn restart_at_checkpointed_start(
        &self,
        start: u64,
        report: &mut PartitionRecovery,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        report.removed_files.extend(
            self.segments
                .read()
                .keys()
                .flat_map(|&base| Segment::paths(&self.path, base)),
        );
        let mut w = self.writer.lock();
        // The recovery point on disk may lie above every offset this restart passes
        // through (the one in memory is already cut to the log end): the floor is
        // written whatever it is.
        let lowest = self.restart_floor(start);
        let mut floor = self.floor.lock();
        restart(self, &mut w, start, self.clock.now_ms(), || {
            self.write_floor(&mut floor, lowest)
        })?;
        drop(floor);
        drop(w);
        self.high_watermark.fetch_max(start, Ordering::AcqRel);
        self.recovery_point.store(start, Ordering::Release);
        self.sync.lock().synced_to = start;
        report.log_end_offset = start;
        Ok(())
    }

    /// Reads the leader-epoch checkpoint, rebuilding it from the batch headers when it is
    /// missing or damaged, and trims it to the log as recovered. Its entries from the
    /// recovery point on are made again from the batches there (Kafka's recovery assigns
    /// the epochs of the batches it recovers): the checkpoint is written by the sync that
    /// moves the recovery point past an epoch's first batch (see [`Epochs`]), so a crash
    /// may leave it without the newest.
    fn load_epochs(&self) -> Result<()> {
        let start = self.log_start_offset();
        let (mut cache, mut dirty, from) = match EpochCache::read(&self.dir, &self.path) {
            Ok(Some(cache)) => (cache, false, self.recovery_point().max(start)),
            Ok(None) | Err(Error::Corruption { .. }) => (EpochCache::default(), true, start),
            Err(error) => return Err(error),
        };
        // Entries from `from` on are the batches' to tell: one the file holds there for an
        // epoch whose batches start below (say `(3, 0)`, with the recovery point inside
        // epoch 3) would otherwise be moved up to `from`.
        dirty |= cache.truncate_from_end(from.min(self.log_end_offset()));
        dirty |= self.assign_batch_epochs(&mut cache, from)?;
        dirty |= cache.truncate_from_start(start);
        if dirty && !cache.entries().is_empty() {
            cache.write(&self.dir, &self.path)?;
        }
        if let Some(epoch) = cache.latest_epoch() {
            self.leader_epoch
                .store(epoch, std::sync::atomic::Ordering::Release);
        }
        self.epochs.install(cache);
        Ok(())
    }

    /// Assigns the epochs of the batches from `from` to the log end in `cache` (a walk
    /// over their headers); whether that changed it.
    fn assign_batch_epochs(&self, cache: &mut EpochCache, from: u64) -> Result<bool> {
        let mut changed = false;
        let end = self.log_end_offset();
        let mut offset = from;
        while offset < end {
            let read = self.read(offset, 1 << 20, end)?;
            let mut progressed = false;
            for batch in read.batches() {
                let batch = batch?;
                let header = batch.header();
                let next = u64::try_from(batch.next_offset()).unwrap_or(0);
                if next <= offset {
                    // A base offset is outside the CRC: a damaged one must not loop.
                    return Err(Error::Corruption {
                        location: Location::File {
                            path: self.path.clone(),
                            position: 0,
                        },
                        what: "batch offsets",
                        detail: format!("a batch ends at {next}, not after {offset}"),
                    });
                }
                changed |= cache.assign(header.partition_leader_epoch, header.base_offset as u64);
                offset = next;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        Ok(changed)
    }
}

/// Lists the directory, finishes an interrupted cleaner swap, removes leftovers, and
/// returns the segment base offsets found.
///
/// A `<base>.log.swap` that holds whole, CRC-valid batches running contiguously from `base`
/// is a cleaned segment whose swap was committed (see `clean.rs`): every file of the
/// segments its offsets cover goes and it takes its final name; its indexes are rebuilt.
/// One that does not is a leftover when `<base>.log` is still there (nothing was replaced),
/// else `Corruption`. Swaps are finished first; then everything else unfinished
/// (`.cleaned`, other `.swap`, `.tmp`, `.deleted`) goes, and so do index files without a
/// `.log`.
fn list_segments(dir: &StorageDir, path: &Path, removed: &mut Vec<PathBuf>) -> Result<Vec<u64>> {
    let storage = dir.storage();
    let list = || {
        storage
            .list_dir(path)
            .map_err(|e| Error::io("list", path, e))
    };
    let remove = |file: PathBuf, removed: &mut Vec<PathBuf>| {
        storage
            .remove_file(&file)
            .map_err(|e| Error::io("remove", &file, e))?;
        removed.push(file);
        Ok::<(), Error>(())
    };
    let names = list()?;
    for name in &names {
        let Some((base, "log.swap")) = parse_file_name(name) else {
            continue;
        };
        let swap = path.join(name);
        let original = path.join(file_name(base, "log"));
        // While the segment it replaces is still there, a committed swap's indexes are
        // `.swap` files too (they are renamed first): without them, this is no cleaner's
        // swap (an older version's truncation left it) and goes with the leftovers.
        let indexes = ["index", "timeindex"]
            .iter()
            .all(|ext| storage.exists(&path.join(format!("{}.swap", file_name(base, ext)))));
        let original_exists = storage.exists(&original);
        if original_exists && !indexes {
            continue;
        }
        let Some(end) = swap_end(dir, &swap, base, original_exists)? else {
            continue;
        };
        // Indexes too: a kill can leave a segment's indexes after its log was renamed away.
        for other in &names {
            let covered = parse_file_name(other).is_some_and(|(b, ext)| {
                (base..end).contains(&b) && matches!(ext, "log" | "index" | "timeindex")
            });
            if covered {
                remove(path.join(other), removed)?;
            }
        }
        storage
            .rename(&swap, &original)
            .map_err(|e| Error::io("rename", &swap, e))?;
        dir.sync_dir(path)?;
    }
    let mut logs = std::collections::BTreeSet::new();
    let mut indexes = Vec::new();
    for name in list()? {
        let leftover = [".swap", ".tmp", ".deleted", ".cleaned"]
            .iter()
            .any(|s| name.ends_with(s));
        match parse_file_name(&name) {
            _ if leftover => remove(path.join(&name), removed)?,
            Some((base, "log")) => {
                logs.insert(base);
            }
            Some((base, "index" | "timeindex")) => indexes.push((base, name)),
            _ => {}
        }
    }
    for (base, name) in indexes {
        if !logs.contains(&base) {
            remove(path.join(name), removed)?;
        }
    }
    Ok(logs.into_iter().collect())
}

/// Where a committed swap file's offsets end, after checking that it holds whole batches
/// with valid CRCs running contiguously from `base` (it was synced whole before its
/// rename). `None` when it does not and `original` (`<base>.log`) still exists: then it is
/// no committed swap (a copy cut short, or a leftover of an older version's truncation) and
/// goes with the other leftovers. Without the original it is `Corruption`.
fn swap_end(dir: &StorageDir, swap: &Path, base: u64, original: bool) -> Result<Option<u64>> {
    let file = dir
        .storage()
        .open(swap, OpenMode::Read)
        .map_err(|e| Error::io("open", swap, e))?;
    let len = file.len().map_err(|e| Error::io("stat", swap, e))? as usize;
    let map = file
        .map_read_only(len)
        .map_err(|e| Error::io("mmap", swap, e))?;
    let bytes = map.slice(0, map.published());
    let (mut position, mut next) = (0, base);
    let checked = loop {
        if position == bytes.len() {
            break if position == 0 {
                Err(codec::corruption(0, "cleaned segment", "no batch".into()))
            } else {
                Ok(next)
            };
        }
        let batch = codec::peek_batch_size(&bytes[position..])
            .filter(|&size| size <= bytes.len() - position)
            .map(|size| &bytes[position..position + size])
            .ok_or_else(|| codec::corruption(8, "batch length", "runs past the end".into()))
            .and_then(|batch| Ok((codec::validate_batch(batch, batch.len())?, batch.len())));
        match batch {
            Ok((header, size)) if header.base_offset as u64 == next => {
                next = header.next_offset() as u64;
                position += size;
            }
            Ok((header, _)) => {
                let detail = format!("expected {next}, found {}", header.base_offset);
                break Err(codec::corruption(0, "batch base offset", detail));
            }
            Err(error) => break Err(error),
        }
    };
    match checked {
        Ok(end) => Ok(Some(end)),
        Err(_) if original => Ok(None),
        Err(error) => Err(error.in_file(swap, position as u64)),
    }
}

fn limits(config: &TopicConfig) -> ScanLimits {
    ScanLimits {
        // Not `segment_bytes`: it may have been lowered since older segments were written.
        max_batch_bytes: i32::MAX as usize,
        max_offset_entries: config.segment_index_bytes as usize / 8,
        max_time_entries: config.segment_index_bytes as usize / 12,
    }
}

fn load_segments(options: &LoadOptions, path: &Path) -> Result<Loaded> {
    let dir = &options.dir;
    let mut report = PartitionRecovery {
        topic_partition: options.tp.clone(),
        path: path.to_path_buf(),
        recovery_point: options.recovery_point.unwrap_or(0),
        segments_scanned: 0,
        truncation: None,
        rebuilt_indexes: Vec::new(),
        removed_files: Vec::new(),
        created: false,
        log_end_offset: 0,
    };
    let mut bases = list_segments(dir, path, &mut report.removed_files)?;
    // Segments wholly below the checkpointed log start (the next one starts at or below
    // it) are ones whose unlink never reached the disk, perhaps while a later one's did
    // (unlinks are not synced one by one): removed as their deletion meant, never scanned,
    // where a missing segment after one would read as a gap in the log.
    if let Some(start) = options.log_start {
        let below = bases.windows(2).take_while(|w| w[1] <= start).count();
        if below > 0 {
            let removed = delete_segments(dir, path, &bases[..below])?;
            report.removed_files.extend(removed);
            bases.drain(..below);
        }
    }
    let now = options.clock.now_ms();
    if bases.is_empty() {
        let base = options.log_start.unwrap_or(0);
        let active = Segment::create(dir, path, base, sizes(&options.config))?;
        dir.sync_dir(path)?;
        return Ok(Loaded {
            sealed: Vec::new(),
            writer: new_writer(active, &options.config, base, now),
            report,
        });
    }
    let recovery_point = if options.clean {
        u64::MAX
    } else {
        options.recovery_point.unwrap_or(0)
    };
    // Segments before `first_scanned` lie wholly below the recovery point.
    let first_scanned = bases
        .iter()
        .rposition(|&b| b <= recovery_point)
        .unwrap_or(0);
    let mut sealed = Vec::new();
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate().take(first_scanned.min(last)) {
        sealed.push(Arc::new(open_trusted_sealed(
            options,
            path,
            base,
            bases[i + 1],
            &mut report,
        )?));
    }
    if options.clean {
        let writer = open_trusted_active(options, path, bases[last], now, &mut report)?;
        return Ok(Loaded {
            sealed,
            writer,
            report,
        });
    }
    let writer = scan_segments(
        options,
        path,
        &bases[first_scanned..],
        recovery_point,
        now,
        &mut sealed,
        &mut report,
    )?;
    Ok(Loaded {
        sealed,
        writer,
        report,
    })
}

/// Scans `bases` (the segments from the one holding the recovery point on), sealing each
/// complete one, and returns the writer of the last one kept. Damage, or an end of data,
/// below the recovery point is `Corruption`; above it, the tail is cut.
fn scan_segments(
    options: &LoadOptions,
    path: &Path,
    bases: &[u64],
    recovery_point: u64,
    now: i64,
    sealed: &mut Vec<Arc<Segment>>,
    report: &mut PartitionRecovery,
) -> Result<Writer> {
    let dir = &options.dir;
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate() {
        let outcome = scan_file(dir, path, base, &options.config)?;
        report.segments_scanned += 1;
        let gap = i < last && outcome.stop.is_none() && outcome.next_offset != bases[i + 1];
        let short = i == last && outcome.next_offset < recovery_point;
        if outcome.stop.is_some() || gap || short {
            let reason = stop_reason(&outcome, gap, bases.get(i + 1).copied());
            if outcome.next_offset < recovery_point {
                return Err(below_recovery_point(
                    path,
                    base,
                    &outcome,
                    &reason,
                    recovery_point,
                ));
            }
            let deleted = delete_segments(dir, path, &bases[i + 1..])?;
            report.truncation = Some(Truncation {
                segment: path.join(file_name(base, "log")),
                position: outcome.valid_len as u64,
                bytes_discarded: outcome.garbage_bytes as u64,
                offset: outcome.next_offset,
                deleted_segments: deleted,
                reason,
            });
            return active_from_scan(options, path, base, outcome, now);
        }
        if i == last {
            return active_from_scan(options, path, base, outcome, now);
        }
        let [log_path, index_path, time_path] = Segment::paths(path, base);
        // A crash while rolling can leave a sealed segment at its allocated length: cut the
        // zeros after its data (nothing maps it yet), or reads would run into them.
        cut_to(dir, &log_path, outcome.valid_len as u64)?;
        let index = Index::write_sealed(dir, index_path, IndexKind::Offset, &outcome.offset_index)?;
        let time_index =
            Index::write_sealed(dir, time_path, IndexKind::Time, &finish_time_index(outcome))?;
        sealed.push(Arc::new(Segment::open_sealed(
            dir, path, base, index, time_index,
        )?));
    }
    unreachable!("the last segment returns from the loop")
}

/// Cuts a file that nothing maps to `len` bytes, when it is longer.
fn cut_to(dir: &StorageDir, path: &Path, len: u64) -> Result<()> {
    let file = dir
        .storage()
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", path, e))?;
    if file.len().map_err(|e| Error::io("stat", path, e))? > len {
        file.set_len(len)
            .map_err(|e| Error::io("truncate", path, e))?;
    }
    Ok(())
}

fn stop_reason(outcome: &ScanOutcome, gap: bool, next_base: Option<u64>) -> String {
    match (&outcome.stop, gap) {
        (Some(error), _) => error.to_string(),
        (None, false) => format!("the data ends at offset {}", outcome.next_offset),
        (None, true) => format!(
            "segment ends at offset {} but the next segment starts at {}",
            outcome.next_offset,
            next_base.unwrap_or_default()
        ),
    }
}

fn below_recovery_point(
    path: &Path,
    base: u64,
    outcome: &ScanOutcome,
    reason: &str,
    recovery_point: u64,
) -> Error {
    let file = path.join(file_name(base, "log"));
    match &outcome.stop {
        Some(Error::Corruption {
            location,
            what,
            detail,
        }) => Error::Corruption {
            location: location.clone().in_file(&file, 0),
            what,
            detail: format!(
                "{detail} (below the recovery point {recovery_point}: synced data is damaged)"
            ),
        },
        _ => Error::Corruption {
            location: Location::File {
                path: file,
                position: outcome.valid_len as u64,
            },
            what: "segment sequence",
            detail: format!("{reason} (below the recovery point {recovery_point})"),
        },
    }
}

/// The time index of a segment being sealed: its entries plus the final one for its
/// largest timestamp (Kafka's `onBecomeInactiveSegment`).
fn finish_time_index(mut outcome: ScanOutcome) -> Vec<u8> {
    if let Some(entry) = outcome.index_state.time_entry() {
        outcome.time_index.extend_from_slice(&entry);
    }
    outcome.time_index
}

fn sizes(config: &TopicConfig) -> crate::segment::SegmentSizes {
    crate::segment::SegmentSizes {
        segment_bytes: config.segment_bytes,
        index_bytes: config.segment_index_bytes,
    }
}

fn new_writer(active: Segment, config: &TopicConfig, next_offset: u64, now: i64) -> Writer {
    Writer {
        requested_ahead: 0,
        active: Arc::new(active),
        index_state: IndexState::new(config.index_interval_bytes),
        first_batch_timestamp: NO_TIMESTAMP,
        created_ms: now,
        next_offset,
        closed: false,
    }
}

/// Maps a whole log file read-only (nothing else maps it yet).
fn map_log(dir: &StorageDir, path: &Path, base: u64) -> Result<MappedFile> {
    let file_path = path.join(file_name(base, "log"));
    let file = dir
        .storage()
        .open(&file_path, OpenMode::Read)
        .map_err(|e| Error::io("open", &file_path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &file_path, e))?;
    file.map_read_only(len as usize)
        .map_err(|e| Error::io("mmap", &file_path, e))
}

fn scan_file(
    dir: &StorageDir,
    path: &Path,
    base: u64,
    config: &TopicConfig,
) -> Result<ScanOutcome> {
    let map = map_log(dir, path, base)?;
    let bytes = map.slice(0, map.published());
    Ok(scan::scan(
        bytes,
        base,
        0,
        base,
        IndexState::new(config.index_interval_bytes),
        limits(config),
    ))
}

/// Turns a scanned segment into the active one, cutting it to its valid prefix.
fn active_from_scan(
    options: &LoadOptions,
    path: &Path,
    base: u64,
    outcome: ScanOutcome,
    now: i64,
) -> Result<Writer> {
    let active = Segment::reopen_active(
        &options.dir,
        path,
        base,
        outcome.valid_len,
        &outcome.offset_index,
        &outcome.time_index,
        sizes(&options.config),
    )?;
    Ok(Writer {
        requested_ahead: 0,
        active: Arc::new(active),
        index_state: outcome.index_state,
        first_batch_timestamp: outcome.first_batch_timestamp,
        created_ms: now,
        next_offset: outcome.next_offset,
        closed: false,
    })
}

/// Deletes whole segments (log and indexes); returns the log files removed.
fn delete_segments(dir: &StorageDir, path: &Path, bases: &[u64]) -> Result<Vec<PathBuf>> {
    let storage = dir.storage();
    let mut deleted = Vec::new();
    for &base in bases.iter().rev() {
        for file in Segment::paths(path, base) {
            if storage.exists(&file) {
                storage
                    .remove_file(&file)
                    .map_err(|e| Error::io("remove", &file, e))?;
            }
        }
        deleted.push(path.join(file_name(base, "log")));
    }
    deleted.reverse();
    if !bases.is_empty() {
        dir.sync_dir(path)?;
    }
    Ok(deleted)
}

/// Opens a sealed segment below the recovery point, rebuilding bad indexes strictly.
fn open_trusted_sealed(
    options: &LoadOptions,
    path: &Path,
    base: u64,
    next_base: u64,
    report: &mut PartitionRecovery,
) -> Result<Segment> {
    let dir = &options.dir;
    let [log_path, index_path, time_path] = Segment::paths(path, base);
    let log_len = dir
        .storage()
        .open(&log_path, OpenMode::Read)
        .and_then(|f| f.len())
        .map_err(|e| Error::io("stat", &log_path, e))?;
    let max_relative =
        (next_base.saturating_sub(base).saturating_sub(1)).min(u64::from(u32::MAX)) as u32;
    let index = sane_index(dir, &index_path, IndexKind::Offset, log_len, max_relative);
    let time_index = sane_index(dir, &time_path, IndexKind::Time, log_len, max_relative);
    if let (Some(index), Some(time_index)) = (index, time_index) {
        let segment = Segment::open_sealed(dir, path, base, index, time_index)?;
        if let Some(end) = sealed_end(&segment, next_base)? {
            // A roll was interrupted after it created the next segment and before it
            // trimmed this one: only the preallocated zeros go.
            drop(segment);
            let file = dir
                .storage()
                .open(&log_path, OpenMode::ReadWrite)
                .map_err(|e| Error::io("open", &log_path, e))?;
            file.set_len(end as u64)
                .map_err(|e| Error::io("truncate", &log_path, e))?;
            dir.sync("fsync", &log_path, || file.sync_all())?;
            return open_trusted_sealed(options, path, base, next_base, report);
        }
        return Ok(segment);
    }
    // The indexes are rebuilt from the log; a roll cut short may have left both them (at
    // their allocated length) and the log (zeros after its data) untrimmed.
    trim_zero_tail(dir, path, base, next_base)?;
    let outcome = strict_scan(dir, path, base, &options.config)?;
    report.rebuilt_indexes.push(index_path.clone());
    report.rebuilt_indexes.push(time_path.clone());
    let index = Index::write_sealed(dir, index_path, IndexKind::Offset, &outcome.offset_index)?;
    let time_index =
        Index::write_sealed(dir, time_path, IndexKind::Time, &finish_time_index(outcome))?;
    let segment = Segment::open_sealed(dir, path, base, index, time_index)?;
    check_sealed_end(&segment, next_base)?;
    Ok(segment)
}

/// Cuts a sealed segment's log file after its data when only zeros follow whole batches
/// that end exactly at `next_base` (see `sealed_end`); anything else is left for the scan
/// to judge. Maps the file rather than reading it into memory (its length is whatever the
/// disk says: a damaged or sparse file may claim far more than any segment holds), and
/// looks past its last byte only when that is zero.
fn trim_zero_tail(dir: &StorageDir, path: &Path, base: u64, next_base: u64) -> Result<()> {
    let log_path = path.join(file_name(base, "log"));
    let map = map_log(dir, path, base)?;
    let bytes = map.slice(0, map.published());
    if bytes.last() != Some(&0) {
        return Ok(());
    }
    let (mut position, mut next) = (0, base);
    while position < bytes.len() {
        match crate::codec::BatchHeader::parse(&bytes[position..], bytes.len()) {
            Ok(header) if position + header.size() <= bytes.len() => {
                next = header.next_offset() as u64;
                position += header.size();
            }
            _ => break,
        }
    }
    if position == 0 || position == bytes.len() || next != next_base {
        return Ok(());
    }
    if bytes[position..].iter().any(|&b| b != 0) {
        return Ok(());
    }
    drop(map);
    let file = dir
        .storage()
        .open(&log_path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", &log_path, e))?;
    file.set_len(position as u64)
        .map_err(|e| Error::io("truncate", &log_path, e))?;
    dir.sync("fsync", &log_path, || file.sync_all())
}

/// A trusted sealed segment must end at whole batches and must not reach into the next
/// segment's offsets (reads only its tail: from the last index entry to the end).
fn check_sealed_end(segment: &Segment, next_base: u64) -> Result<()> {
    match sealed_end(segment, next_base)? {
        None => Ok(()),
        Some(position) => segment.header_at(position).map(|_| ()),
    }
}

/// As `check_sealed_end`, but a file that holds only zeros after whole batches ending
/// exactly at `next_base` (an interrupted roll never trimmed it) answers where its data
/// ends.
fn sealed_end(segment: &Segment, next_base: u64) -> Result<Option<usize>> {
    let mut position = segment
        .index
        .last_offset_entry()
        .map_or(0, |(_, p)| p as usize);
    let mut next = segment.base_offset;
    while position < segment.size() {
        let header = match segment.header_at(position) {
            Ok(header) => header,
            Err(error) => {
                let tail = &segment.bytes()[position..];
                if next == next_base && position > 0 && tail.iter().all(|&b| b == 0) {
                    return Ok(Some(position));
                }
                return Err(error);
            }
        };
        next = header.next_offset() as u64;
        position += header.size();
    }
    if next > next_base {
        return Err(Error::Corruption {
            location: Location::File {
                path: segment.log_path().to_path_buf(),
                position: position as u64,
            },
            what: "segment sequence",
            detail: format!(
                "the segment ends at offset {next} but the next segment starts at {next_base}"
            ),
        });
    }
    Ok(None)
}

/// A sealed index that exists and passes its sanity check, else `None`.
fn sane_index(
    dir: &StorageDir,
    path: &Path,
    kind: IndexKind,
    log_len: u64,
    max_relative: u32,
) -> Option<Index> {
    let index = Index::open_sealed(dir, path.to_path_buf(), kind).ok()??;
    index.sanity_check(log_len, max_relative).ok()?;
    Some(index)
}

/// Scans a segment that must be wholly valid: any damage is `Corruption` in the file.
fn strict_scan(
    dir: &StorageDir,
    path: &Path,
    base: u64,
    config: &TopicConfig,
) -> Result<ScanOutcome> {
    let mut outcome = scan_file(dir, path, base, config)?;
    if let Some(error) = outcome.stop.take() {
        return Err(error.in_file(&path.join(file_name(base, "log")), 0));
    }
    if outcome.garbage_end > outcome.valid_len {
        return Err(Error::Corruption {
            location: Location::File {
                path: path.join(file_name(base, "log")),
                position: outcome.valid_len as u64,
            },
            what: "segment tail",
            detail: "non-zero bytes after the last valid batch".into(),
        });
    }
    Ok(outcome)
}

/// Opens the active segment after a clean close: reads only from its last index entry on.
fn open_trusted_active(
    options: &LoadOptions,
    path: &Path,
    base: u64,
    now: i64,
    report: &mut PartitionRecovery,
) -> Result<Writer> {
    let dir = &options.dir;
    let [_, index_path, time_path] = Segment::paths(path, base);
    let map = map_log(dir, path, base)?;
    let bytes = map.slice(0, map.published());
    let max_relative = i32::MAX as u32;
    let index = sane_index(
        dir,
        &index_path,
        IndexKind::Offset,
        bytes.len() as u64,
        max_relative,
    );
    let time_index = sane_index(
        dir,
        &time_path,
        IndexKind::Time,
        bytes.len() as u64,
        max_relative,
    );
    // One holding more entries than its file may (damage) is rebuilt: the segment reopens
    // for appends with its indexes mapped at that size, and would be written past it.
    let within = |index: Option<Index>, kind: IndexKind| {
        let capacity = options.config.segment_index_bytes as usize / kind.entry_size();
        index.filter(|index| index.entries() <= capacity)
    };
    let (index, time_index) = (
        within(index, IndexKind::Offset),
        within(time_index, IndexKind::Time),
    );
    let tail = match (&index, &time_index) {
        (Some(index), Some(time_index)) => {
            tail_scan(bytes, base, index, time_index, &options.config)
        }
        _ => None,
    };
    let outcome = if let Some(outcome) = tail {
        outcome
    } else {
        {
            report.rebuilt_indexes.push(index_path);
            report.rebuilt_indexes.push(time_path);
            let mut outcome = scan::scan(
                bytes,
                base,
                0,
                base,
                IndexState::new(options.config.index_interval_bytes),
                limits(&options.config),
            );
            if let Some(error) = outcome.stop.take() {
                return Err(error.in_file(&path.join(file_name(base, "log")), 0));
            }
            outcome
        }
    };
    drop(map);
    if outcome.garbage_end > outcome.valid_len {
        return Err(Error::Corruption {
            location: Location::File {
                path: path.join(file_name(base, "log")),
                position: outcome.valid_len as u64,
            },
            what: "segment tail",
            detail: "non-zero bytes after the last valid batch of a cleanly closed segment".into(),
        });
    }
    // The close checkpointed the log end as the recovery point: a log ending below it lost
    // synced records since (its tail cut or zeroed), whose offsets must not be handed out
    // again. Checked before the segment is opened for appends, which would cut its tail.
    if let Some(point) = options
        .recovery_point
        .filter(|&point| outcome.next_offset < point)
    {
        return Err(Error::Corruption {
            location: Location::File {
                path: path.join(file_name(base, "log")),
                position: outcome.valid_len as u64,
            },
            what: "segment tail",
            detail: format!(
                "a cleanly closed log ends at offset {} below its recovery point {point}",
                outcome.next_offset
            ),
        });
    }
    active_from_scan(options, path, base, outcome, now)
}

/// Scans a cleanly closed active segment from its last offset-index entry; `None` when
/// that fails (the caller falls back to a full scan).
fn tail_scan(
    bytes: &[u8],
    base: u64,
    index: &Index,
    time_index: &Index,
    config: &TopicConfig,
) -> Option<ScanOutcome> {
    let entry = index.last_offset_entry();
    if entry.is_some_and(|(_, position)| position == 0) {
        // A segment's first batch is never indexed: the entry is damaged, and a scan from
        // byte 0 would find the entries before it again.
        return None;
    }
    let position = entry.map_or(0, |(_, p)| p as usize);
    let mut state = IndexState::new(config.index_interval_bytes);
    if let Some((ts, rel)) = time_index.last_time_entry() {
        state.max_timestamp = ts;
        state.offset_of_max_timestamp = rel;
        state.last_time_entry = Some(ts);
    }
    let expected = match entry {
        Some((relative, position)) if position != 0 => {
            // The batch the entry points at starts the scan, so its base offset (which its
            // CRC does not cover) is checked against the entry, which names its last
            // offset: a damaged one would otherwise become the log's end. A mismatch means
            // the full scan, which checks every batch from the segment's base.
            let header =
                codec::BatchHeader::parse(bytes.get(position as usize..)?, bytes.len()).ok()?;
            let last = header.last_offset() as u64;
            if last != base + u64::from(relative) {
                return None;
            }
            header.base_offset as u64
        }
        _ => base,
    };
    // The entries found are added to those kept: together they must fit the indexes.
    let mut limits = limits(config);
    limits.max_offset_entries = limits
        .max_offset_entries
        .saturating_sub(index.bytes().len() / 8);
    limits.max_time_entries = limits
        .max_time_entries
        .saturating_sub(time_index.bytes().len() / 12);
    let mut outcome = scan::scan(bytes, base, position, expected, state, limits);
    if outcome.stop.is_some() {
        return None;
    }
    let mut offset_index = index.bytes().to_vec();
    offset_index.extend_from_slice(&outcome.offset_index);
    outcome.offset_index = offset_index;
    let mut times = time_index.bytes().to_vec();
    times.extend_from_slice(&outcome.time_index);
    outcome.time_index = times;
    if position != 0 {
        outcome.first_batch_timestamp = codec::BatchHeader::parse(bytes, bytes.len())
            .ok()?
            .max_timestamp;
    }
    Some(outcome)
}

/// Deletes every segment and starts the log afresh, empty, at `offset` (its log start).
///
/// `before_cut` runs before the first file is removed (see `ReplicaLog::lower_floor`).
pub(super) fn restart(
    log: &ReplicaLog,
    w: &mut Writer,
    offset: u64,
    now: i64,
    before_cut: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let dir = &log.dir;
    before_cut()?;
    let restarted = (|| {
        let mut bases: Vec<u64> = log.unlinking.lock().drain(..).map(|(b, _)| b).collect();
        bases.extend(log.segments.read().keys().copied());
        // Queued or not, no old file may stay to be taken for the new segment's (or
        // unlinked under it).
        delete_segments(dir, &log.path, &bases)?;
        let active = Segment::create(dir, &log.path, offset, log.sizes())?;
        dir.sync_dir(&log.path)?;
        *w = new_writer(active, &log.config(), offset, now);
        log.log_start
            .store(offset, std::sync::atomic::Ordering::Release);
        finish_truncate(log, w, BTreeMap::new());
        Ok(())
    })();
    restarted.inspect_err(|_| dir.poison())
}

/// Removes every record at or after `offset` (see `ReplicaLog::truncate_to`). `before_cut`
/// runs once the cut is known to be possible, before the first record goes.
pub(super) fn truncate(
    log: &ReplicaLog,
    w: &mut Writer,
    offset: u64,
    now: i64,
    before_cut: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let dir = &log.dir;
    // Files queued by retention at or above the cut go now: a later roll may create a
    // segment at one of their bases, which the queued unlink would then remove.
    let doomed: Vec<u64> = {
        let mut queued = log.unlinking.lock();
        let doomed = queued
            .iter()
            .filter(|&&(base, _)| base >= offset)
            .map(|&(base, _)| base)
            .collect();
        queued.retain(|&(base, _)| base < offset);
        doomed
    };
    delete_segments(dir, &log.path, &doomed)?;
    let segments: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    let bases: Vec<u64> = segments.iter().map(|s| s.base_offset).collect();
    let Some((keep, cut, outcome)) = kept_part(log, &segments, offset)? else {
        return restart(log, w, offset, now, before_cut);
    };
    let containing = &segments[keep];
    let base = containing.base_offset;
    before_cut()?;
    // The kept prefix's new file is written and synced before any file changes: a failure
    // there (a full disk) leaves the log as it was, and its directory online.
    let prefix = if cut < containing.size() || containing.log_file().is_none() {
        Some(write_prefix(
            dir,
            &log.path,
            base,
            &containing.bytes()[..cut],
        )?)
    } else {
        None
    };
    // Once files go, a failure leaves them out of step with the writer, which may still
    // point into a removed file: the directory goes offline rather than take appends that
    // no open would find.
    let cut = (|| {
        delete_segments(dir, &log.path, &bases[keep + 1..])?;
        if let Some(copy) = &prefix {
            replace_with_prefix(dir, &log.path, base, copy)?;
        }
        *w = active_from_scan(&log.unclean_options(), &log.path, base, outcome, now)?;
        let kept = segments[..keep]
            .iter()
            .map(|s| (s.base_offset, Arc::clone(s)))
            .collect();
        // Kafka's `min(logStartOffset, target)`: a cut below the log start moves it down.
        log.log_start
            .fetch_min(offset, std::sync::atomic::Ordering::AcqRel);
        finish_truncate(log, w, kept);
        Ok(())
    })();
    cut.inspect_err(|_| dir.poison())
}

/// Whether a truncation to `offset` would be refused (see [`kept_part`]), changing
/// nothing: for a caller that must record something before the cut.
pub(super) fn check_truncation(log: &ReplicaLog, offset: u64) -> Result<()> {
    let segments: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    kept_part(log, &segments, offset).map(|_| ())
}

/// What a truncation to `offset` keeps of `segments`: the index of the last segment kept,
/// the length of its prefix kept and that prefix's scan; `None` when the cut lies below
/// the first segment (the log restarts). The kept part becomes the active segment, which
/// must run without gaps from its base: one that does not (a sealed segment with Kafka's
/// gaps) is refused before anything changes, instead of being cut at its first gap.
fn kept_part(
    log: &ReplicaLog,
    segments: &[Arc<Segment>],
    offset: u64,
) -> Result<Option<(usize, usize, ScanOutcome)>> {
    let Some(keep) = segments.iter().rposition(|s| s.base_offset <= offset) else {
        return Ok(None);
    };
    let containing = &segments[keep];
    let cut = containing
        .translate_offset(offset)?
        .map_or(containing.size(), |(position, _)| position);
    let base = containing.base_offset;
    let outcome = scan::scan(
        &containing.bytes()[..cut],
        base,
        0,
        base,
        IndexState::new(log.config().index_interval_bytes),
        limits(&log.config()),
    );
    if let Some(stop) = outcome.stop {
        return Err(Error::Corruption {
            location: Location::File {
                path: containing.log_path().to_path_buf(),
                position: outcome.valid_len as u64,
            },
            what: "truncation",
            detail: format!(
                "the part kept by a truncation to offset {offset} must run without gaps, \
                 but stops at byte {} of {cut}: {stop}",
                outcome.valid_len
            ),
        });
    }
    Ok(Some((keep, cut, outcome)))
}

/// Writes `bytes`, the new content of a segment's log, to `<log>.tmp` and fsyncs it;
/// returns its path. (Not `.swap`: that suffix marks a committed cleaner swap, which an
/// open finishes.) On a failure the copy is removed (an open would remove it too).
fn write_prefix(dir: &StorageDir, path: &Path, base: u64, bytes: &[u8]) -> Result<PathBuf> {
    let copy = path.join(format!("{}.tmp", file_name(base, "log")));
    let written = (|| {
        let file = dir
            .storage()
            .open(&copy, OpenMode::Truncate)
            .map_err(|e| Error::io("create", &copy, e))?;
        crate::storage::write_all_at(file.as_ref(), bytes, 0)
            .map_err(|e| Error::io("write", &copy, e))?;
        dir.sync("fsync", &copy, || file.sync_all())
    })();
    if written.is_err() && dir.storage().exists(&copy) {
        let _ = dir.storage().remove_file(&copy);
    }
    written.map(|()| copy)
}

/// Puts the copy [`write_prefix`] made in place of the segment's log: rename, fsync dir.
fn replace_with_prefix(dir: &StorageDir, path: &Path, base: u64, copy: &Path) -> Result<()> {
    let target = path.join(file_name(base, "log"));
    dir.storage()
        .rename(copy, &target)
        .map_err(|e| Error::io("rename", &target, e))?;
    dir.sync_dir(path)
}

fn finish_truncate(log: &ReplicaLog, w: &Writer, mut segments: BTreeMap<u64, Arc<Segment>>) {
    use std::sync::atomic::Ordering;
    segments.insert(w.active.base_offset, Arc::clone(&w.active));
    *log.segments.write() = segments;
    let end = w.next_offset;
    log.log_end.store(end, Ordering::Release);
    log.high_watermark.fetch_min(end, Ordering::AcqRel);
    log.recovery_point.fetch_min(end, Ordering::AcqRel);
    // A log start the cut lowered: a checkpoint of a higher one covers no file removed
    // from now on, and the files still queued wait for one of this start (they lie below
    // it: they were below the old start, and the cut removed all at or above its offset).
    let start = log.log_start.load(Ordering::Acquire);
    log.start_checkpointed.fetch_min(start, Ordering::AcqRel);
    for queued in log.unlinking.lock().iter_mut() {
        queued.1 = queued.1.min(start);
    }
    let mut sync = log.sync.lock();
    sync.synced_to = sync.synced_to.min(end);
}
