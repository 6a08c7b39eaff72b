//! A segment: `<base offset, 20 digits>.log` with its `.index` and `.timeindex`.
//!
//! The `.log` file is a plain concatenation of Kafka v2 record batches. An active segment
//! is mapped at `segment_bytes` and its file is allocated ahead of the writer in chunks, so a
//! full disk shows up as `ENOSPC` from `allocate`, never as SIGBUS from a store. A sealed
//! segment is trimmed to its data, mapped read-only and holds no file descriptor.

pub(crate) mod index;
pub(crate) mod index_fuzz;
pub(crate) mod scan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use bytes::Bytes;

use crate::codec::{self, BatchHeader};
use crate::error::{Error, Result};
use crate::storage::{MappedFile, OpenMode, StorageDir, StorageFile};
use crate::types::TimestampOffset;

pub(crate) use index::{Index, IndexKind};

/// `<base offset, 20 digits>.<extension>`.
pub(crate) fn file_name(base_offset: u64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses a segment file name: `Some((base offset, extension))`. A base past Kafka's
/// largest offset (`i64::MAX`) names no segment of a log (its offsets could not be
/// written in a batch, and would overflow arithmetic on them).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base: u64 = stem.parse().ok()?;
    i64::try_from(base).is_ok().then_some((base, extension))
}

/// `file`'s modification time in ms since the Unix epoch; `NO_TIMESTAMP` when the storage
/// does not tell (or fails to).
fn modified_ms(file: &dyn StorageFile) -> i64 {
    file.modified()
        .ok()
        .flatten()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_millis()).ok())
        .unwrap_or(codec::NO_TIMESTAMP)
}

/// One segment's files.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: u64,
    log_path: PathBuf,
    /// Open only while the segment is active.
    log_file: Option<Arc<dyn StorageFile>>,
    log: Arc<MappedFile>,
    pub(crate) index: Index,
    pub(crate) time_index: Index,
    /// Bytes of the active log file known to be allocated; grows until sealed.
    allocated: AtomicUsize,
    /// The allocated length an `fsync` made durable (`fdatasync` need not persist a
    /// length; see [`Segment::sync_log`]).
    length_synced: AtomicUsize,
    /// Serialises growth with sealing: `true` once the files were trimmed.
    sealed: Mutex<bool>,
    /// Held across an fsync through one of the segment's descriptors and the poisoning of
    /// the directory when it fails (see [`Segment::sync_one_at_a_time`]).
    syncing: Mutex<()>,
    /// When the segment was last written, in ms since the Unix epoch (Kafka's
    /// `lastModified`): the clock at its last append, or the file's modification time
    /// when opened; `NO_TIMESTAMP` when neither is known.
    last_modified: AtomicI64,
}

/// Sizes an active segment is created with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentSizes {
    pub segment_bytes: u64,
    pub index_bytes: u64,
}

impl Segment {
    /// Paths of the three files.
    pub(crate) fn paths(partition_dir: &Path, base_offset: u64) -> [PathBuf; 3] {
        ["log", "index", "timeindex"].map(|ext| partition_dir.join(file_name(base_offset, ext)))
    }

    /// Creates a new, empty, active segment.
    pub(crate) fn create(
        dir: &StorageDir,
        partition_dir: &Path,
        base_offset: u64,
        sizes: SegmentSizes,
    ) -> Result<Segment> {
        let [log_path, index_path, time_path] = Self::paths(partition_dir, base_offset);
        let file = dir
            .storage()
            .open(&log_path, OpenMode::Truncate)
            .map_err(|e| Error::io("create", &log_path, e))?;
        let index = Index::create(dir, index_path, IndexKind::Offset, sizes.index_bytes)?;
        let time_index = Index::create(dir, time_path, IndexKind::Time, sizes.index_bytes)?;
        Self::active(base_offset, log_path, file, 0, index, time_index, sizes)
    }

    /// Makes a new, empty, active segment at `base_offset` in place of the empty one there
    /// (other sizes). The new files are built under `.tmp` names and renamed over the old
    /// ones: the old segment's mappings stay backed (a file renamed over lives on while
    /// mapped, where one cut to length 0 would turn a store through them into SIGBUS). On a
    /// failure before the first rename nothing changed (the `.tmp` files are removed, or
    /// the next open removes them). One after it leaves the old segment writing into files
    /// no longer in the directory: the directory goes offline.
    pub(crate) fn create_replacing(
        dir: &StorageDir,
        partition_dir: &Path,
        base_offset: u64,
        sizes: SegmentSizes,
    ) -> Result<Segment> {
        let storage = dir.storage();
        let finals = Self::paths(partition_dir, base_offset);
        let temps = finals.clone().map(|path| {
            let mut name = path.into_os_string();
            name.push(".tmp");
            PathBuf::from(name)
        });
        let remove_temps = || {
            for temp in &temps {
                if storage.exists(temp) {
                    let _ = storage.remove_file(temp);
                }
            }
        };
        let [log_temp, index_temp, time_temp] = temps.clone();
        let made = (|| {
            let file = storage
                .open(&log_temp, OpenMode::Truncate)
                .map_err(|e| Error::io("create", &log_temp, e))?;
            let index = Index::create(dir, index_temp, IndexKind::Offset, sizes.index_bytes)?;
            let time_index = Index::create(dir, time_temp, IndexKind::Time, sizes.index_bytes)?;
            Self::active(base_offset, log_temp, file, 0, index, time_index, sizes)
        })();
        let mut segment = made.inspect_err(|_| remove_temps())?;
        for (i, (temp, path)) in temps.iter().zip(&finals).enumerate() {
            if let Err(e) = storage.rename(temp, path) {
                if i == 0 {
                    remove_temps();
                } else {
                    dir.poison();
                }
                return Err(Error::io("rename", temp, e));
            }
        }
        let [log_path, index_path, time_path] = finals;
        segment.log_path = log_path;
        segment.index.renamed(index_path);
        segment.time_index.renamed(time_path);
        Ok(segment)
    }

    /// Opens the log of an active segment whose first `valid_len` bytes are valid, with
    /// its indexes rewritten from `offset_entries` / `time_entries`.
    pub(crate) fn reopen_active(
        dir: &StorageDir,
        partition_dir: &Path,
        base_offset: u64,
        valid_len: usize,
        offset_entries: &[u8],
        time_entries: &[u8],
        sizes: SegmentSizes,
    ) -> Result<Segment> {
        let [log_path, index_path, time_path] = Self::paths(partition_dir, base_offset);
        let file = dir
            .storage()
            .open(&log_path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &log_path, e))?;
        let index = Index::recreate(
            dir,
            index_path,
            IndexKind::Offset,
            sizes.index_bytes,
            offset_entries,
        )?;
        let time_index = Index::recreate(
            dir,
            time_path,
            IndexKind::Time,
            sizes.index_bytes,
            time_entries,
        )?;
        Self::active(
            base_offset,
            log_path,
            file,
            valid_len,
            index,
            time_index,
            sizes,
        )
    }

    fn active(
        base_offset: u64,
        log_path: PathBuf,
        file: Arc<dyn StorageFile>,
        valid_len: usize,
        index: Index,
        time_index: Index,
        sizes: SegmentSizes,
    ) -> Result<Segment> {
        let len = file.len().map_err(|e| Error::io("stat", &log_path, e))?;
        if len != valid_len as u64 {
            // Nothing maps this file yet, so cutting it cannot fault a reader.
            file.set_len(valid_len as u64)
                .map_err(|e| Error::io("truncate", &log_path, e))?;
        }
        // A segment written under a larger `segment_bytes` (lowered since) keeps its data
        // mapped; the writer rolls it at the next append.
        let capacity = (sizes.segment_bytes as usize).max(valid_len);
        let map = file
            .map_writable(capacity, valid_len)
            .map_err(|e| Error::io("mmap", &log_path, e))?;
        Ok(Segment {
            base_offset,
            log_path,
            last_modified: AtomicI64::new(modified_ms(file.as_ref())),
            log_file: Some(file),
            log: Arc::new(map),
            index,
            time_index,
            allocated: AtomicUsize::new(valid_len),
            length_synced: AtomicUsize::new(0),
            sealed: Mutex::new(false),
            syncing: Mutex::new(()),
        })
    }

    /// Opens a sealed segment read-only, with the indexes found on disk (the caller checks
    /// them and rebuilds them when they fail).
    pub(crate) fn open_sealed(
        dir: &StorageDir,
        partition_dir: &Path,
        base_offset: u64,
        index: Index,
        time_index: Index,
    ) -> Result<Segment> {
        let [log_path, ..] = Self::paths(partition_dir, base_offset);
        let file = dir
            .storage()
            .open(&log_path, OpenMode::Read)
            .map_err(|e| Error::io("open", &log_path, e))?;
        let len = file.len().map_err(|e| Error::io("stat", &log_path, e))?;
        let map = file
            .map_read_only(len as usize)
            .map_err(|e| Error::io("mmap", &log_path, e))?;
        Ok(Segment {
            base_offset,
            log_path,
            log_file: None,
            log: Arc::new(map),
            index,
            time_index,
            allocated: AtomicUsize::new(len as usize),
            length_synced: AtomicUsize::new(0),
            sealed: Mutex::new(true),
            syncing: Mutex::new(()),
            last_modified: AtomicI64::new(modified_ms(file.as_ref())),
        })
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The open log file of an active segment.
    pub(crate) fn log_file(&self) -> Option<&Arc<dyn StorageFile>> {
        self.log_file.as_ref()
    }

    /// Makes the active log's data durable: `fdatasync`, or `fsync` when the file may
    /// have grown since its last `fsync`. POSIX lets `fdatasync` leave a new length
    /// volatile (Linux file systems persist it), and a length lost to a power loss would
    /// take the synced bytes above it along.
    pub(crate) fn sync_log(&self) -> std::io::Result<()> {
        let Some(file) = &self.log_file else {
            return Ok(());
        };
        let allocated = self.allocated.load(Ordering::Acquire);
        if allocated <= self.length_synced.load(Ordering::Acquire) {
            return file.sync_data();
        }
        file.sync_all()?;
        self.length_synced.fetch_max(allocated, Ordering::AcqRel);
        Ok(())
    }

    /// Runs `sync`, an fsync through one of the segment's open descriptors, with `dir`'s
    /// poisoning on failure ([`StorageDir::sync`]), never beside another such sync of the
    /// segment. Linux reports a failed writeback once per open file: of two fsyncs through
    /// one descriptor at once (the group-commit syncer's and a roll's or a close's), one
    /// may see the error and the other answer `Ok` for the lost bytes, and acknowledge
    /// them before the first has poisoned the directory. One at a time, the second
    /// finds the directory poisoned (`StorageDir::sync` checks first).
    pub(crate) fn sync_one_at_a_time(
        &self,
        dir: &StorageDir,
        op: &'static str,
        path: &Path,
        sync: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<()> {
        let _one = self.syncing.lock();
        dir.sync(op, path, sync)
    }

    /// When the segment was last written (ms since the Unix epoch; `NO_TIMESTAMP` when
    /// unknown).
    pub(crate) fn last_modified(&self) -> i64 {
        self.last_modified.load(Ordering::Relaxed)
    }

    /// Records a write at `now` (ms since the Unix epoch).
    pub(crate) fn touch(&self, now: i64) {
        self.last_modified.store(now, Ordering::Relaxed);
    }

    /// Published bytes.
    pub(crate) fn size(&self) -> usize {
        self.log.published()
    }

    /// Bytes the mapping can take (the segment size limit).
    pub(crate) fn capacity(&self) -> usize {
        self.log.capacity()
    }

    /// All published bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.log.slice(0, self.size())
    }

    /// A zero-copy view of published bytes.
    pub(crate) fn view(&self, position: usize, len: usize) -> Bytes {
        self.log.view(position, len)
    }

    /// Bytes of the active log file known to be allocated.
    pub(crate) fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Acquire)
    }

    /// Allocates the active log file up to at least `end`, in whole `chunk`s: a full disk
    /// answers `ENOSPC` here, before any store.
    pub(crate) fn allocate_to(&self, end: usize, chunk: usize) -> Result<()> {
        let sealed = self.sealed.lock();
        let current = self.allocated.load(Ordering::Acquire);
        if end <= current {
            return Ok(());
        }
        let (false, Some(file)) = (*sealed, &self.log_file) else {
            // Only after a failed seal, which poisoned the directory.
            return Err(Error::io(
                "allocate",
                &self.log_path,
                std::io::Error::other("the segment was sealed by a failed roll"),
            ));
        };
        let target = end
            .div_ceil(chunk)
            .saturating_mul(chunk)
            .min(self.capacity())
            .max(end);
        file.allocate(target as u64)
            .map_err(|e| Error::io("allocate", &self.log_path, e))?;
        self.allocated.store(target, Ordering::Release);
        Ok(())
    }

    /// Background growth: allocates up to `target` and, with `populate`, faults the new pages
    /// in for writing, so the writer neither allocates nor faults. Failures are ignored: the
    /// writer allocates for itself when it gets there and sees them then.
    pub(crate) fn grow_ahead(&self, target: usize, populate: bool) {
        let (from, to) = {
            let sealed = self.sealed.lock();
            let current = self.allocated.load(Ordering::Acquire);
            let target = target.min(self.capacity());
            let (false, Some(file)) = (*sealed, &self.log_file) else {
                return;
            };
            if target <= current || file.allocate(target as u64).is_err() {
                return;
            }
            self.allocated.store(target, Ordering::Release);
            (current, target)
        };
        if populate {
            self.log.prefault(from, to);
        }
    }

    /// Stores bytes above the published end (the writer's lock is held).
    pub(crate) fn write(&self, position: usize, data: &[u8]) -> Result<()> {
        let Some(file) = &self.log_file else {
            unreachable!("write to a sealed segment")
        };
        file.write_mapped(&self.log, position, data)
            .map_err(|e| Error::io("write", &self.log_path, e))
    }

    /// Writes `head` then `body` above the published end with the file's `pwritev` instead of
    /// stores through the mapping (the writer's lock is held). Readers see the same page
    /// cache through the mapping; the pages are never mapped writable, so syncing them needs
    /// no write-protection round (see `ReplicaLog::writes_through`).
    pub(crate) fn write_through(&self, position: usize, head: &[u8], body: &[u8]) -> Result<()> {
        let Some(file) = &self.log_file else {
            unreachable!("write to a sealed segment")
        };
        debug_assert!(position >= self.size(), "write below the published end");
        if position + head.len() + body.len() > self.capacity() {
            // The writer rolls first; past the mapping, readers could not see the bytes.
            return Err(Error::io(
                "write",
                &self.log_path,
                std::io::Error::other("write beyond the segment's mapping"),
            ));
        }
        crate::storage::write_pair_at(file.as_ref(), head, body, position as u64)
            .map_err(|e| Error::io("write", &self.log_path, e))
    }

    /// Makes `[0, end)` visible to readers.
    pub(crate) fn publish(&self, end: usize) {
        self.log.publish(end);
    }

    /// Trims the files to their data and reopens everything read-only.
    pub(crate) fn seal(&self) -> Result<Segment> {
        let Some(file) = &self.log_file else {
            unreachable!("seal of a sealed segment")
        };
        let mut sealed = self.sealed.lock();
        *sealed = true;
        let len = self.size();
        // Readers of the old mapping only touch [0, len), which stays in the file.
        file.set_len(len as u64)
            .map_err(|e| Error::io("truncate", &self.log_path, e))?;
        let map = file
            .map_read_only(len)
            .map_err(|e| Error::io("mmap", &self.log_path, e))?;
        Ok(Segment {
            base_offset: self.base_offset,
            log_path: self.log_path.clone(),
            log_file: None,
            log: Arc::new(map),
            index: self.index.seal()?,
            time_index: self.time_index.seal()?,
            allocated: AtomicUsize::new(len),
            length_synced: AtomicUsize::new(0),
            sealed: Mutex::new(true),
            syncing: Mutex::new(()),
            last_modified: AtomicI64::new(self.last_modified()),
        })
    }

    /// Cuts the active files to their published data (clean close).
    pub(crate) fn trim_files(&self) -> Result<()> {
        let mut sealed = self.sealed.lock();
        *sealed = true;
        if let Some(file) = &self.log_file {
            file.set_len(self.size() as u64)
                .map_err(|e| Error::io("truncate", &self.log_path, e))?;
        }
        for index in [&self.index, &self.time_index] {
            if let Some(file) = index.file() {
                file.set_len(index.bytes().len() as u64)
                    .map_err(|e| Error::io("truncate", index.path(), e))?;
            }
        }
        Ok(())
    }

    /// Parses the header of the batch at `position` (a published position).
    pub(crate) fn header_at(&self, position: usize) -> Result<BatchHeader> {
        let bytes = self.bytes();
        codec::BatchHeader::parse(&bytes[position..], self.capacity().max(bytes.len()))
            .and_then(|h| {
                if position + h.size() > bytes.len() {
                    Err(Error::Corruption {
                        location: crate::error::Location::Buffer { position: 8 },
                        what: "batch length",
                        detail: format!(
                            "{} bytes run past the segment end {}",
                            h.size(),
                            bytes.len()
                        ),
                    })
                } else {
                    Ok(h)
                }
            })
            .map_err(|e| e.in_file(&self.log_path, position as u64))
    }

    /// Position and header of the first batch whose last offset is ≥ `offset`, scanning
    /// from the index's floor entry (Kafka's `translateOffset`). `None` when no batch in this
    /// segment reaches `offset`.
    pub(crate) fn translate_offset(&self, offset: u64) -> Result<Option<(usize, BatchHeader)>> {
        let relative = offset
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        let entry = self.index.lookup_offset(relative);
        let start = entry.map_or(0, |(_, position)| position as usize);
        // An entry names the last offset of the batch at its position: checked, so that a
        // damaged index or header is reported rather than followed.
        let entry_last = entry.map(|(rel, _)| self.base_offset + u64::from(rel));
        self.scan_from(start, entry_last, |h| h.last_offset() as u64 >= offset)
    }

    /// Walks batch headers from `position` to the first one `stop` accepts.
    ///
    /// Every batch stepped over has its CRC checked (at most about one index interval of
    /// bytes), offsets must increase (gaps are legal, as after compaction), and the first
    /// batch must match the index entry that led to it: a damaged length or offset field is
    /// reported where it is, never followed.
    fn scan_from(
        &self,
        mut position: usize,
        entry_last: Option<u64>,
        stop: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(usize, BatchHeader)>> {
        let size = self.size();
        let mut expected: Option<u64> = None;
        while position < size {
            let header = self.header_at(position)?;
            let (base, last) = (header.base_offset as u64, header.last_offset() as u64);
            let fits = match (expected, entry_last) {
                (Some(next), _) => base >= next,
                (None, Some(entry)) => last == entry,
                (None, None) => base >= self.base_offset,
            };
            if !fits {
                return Err(index::corrupt(
                    &self.log_path,
                    position as u64,
                    "batch offsets",
                    format!(
                        "batch {base}..={last} does not continue the batch before it (expected {expected:?}, index {entry_last:?})"
                    ),
                ));
            }
            if stop(&header) {
                return Ok(Some((position, header)));
            }
            let batch = &self.bytes()[position..position + header.size()];
            codec::verify_crc(batch).map_err(|e| e.in_file(&self.log_path, position as u64))?;
            expected = Some(last + 1);
            position += header.size();
        }
        Ok(None)
    }

    /// First record with timestamp ≥ `timestamp` and offset ≥ `starting_offset`
    /// (Kafka's `findOffsetByTimestamp`).
    pub(crate) fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
        starting_offset: u64,
    ) -> Result<Option<TimestampOffset>> {
        let from = self
            .time_index
            .lookup_time(timestamp)
            .map_or(self.base_offset, |(_, rel)| {
                self.base_offset + u64::from(rel)
            })
            .max(starting_offset);
        let relative = from
            .saturating_sub(self.base_offset)
            .min(u64::from(u32::MAX)) as u32;
        // A position past 4 GiB (a hostile file; segments are smaller) must not wrap.
        let mut position = self
            .index
            .lookup_offset(relative)
            .map_or(0, |(_, p)| p as usize);
        let size = self.size();
        while position < size {
            let header = self.header_at(position)?;
            let end = position + header.size();
            if header.max_timestamp >= timestamp && header.last_offset() as u64 >= starting_offset {
                let bytes = &self.bytes()[position..end];
                for record in codec::records(bytes, &header) {
                    let record = record.map_err(|e| e.in_file(&self.log_path, position as u64))?;
                    if record.timestamp >= timestamp && record.offset as u64 >= starting_offset {
                        return Ok(Some(TimestampOffset {
                            timestamp: record.timestamp,
                            offset: record.offset as u64,
                        }));
                    }
                }
            }
            position = end;
        }
        Ok(None)
    }
}
