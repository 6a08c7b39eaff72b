//! The sparse offset index (`.index`) and time index (`.timeindex`) of a segment.
//!
//! Entries, big-endian as Kafka's:
//! ```text
//! .index      relative_offset u32 | position u32            (8 bytes)
//! .timeindex  timestamp i64       | relative_offset u32     (12 bytes)
//! ```
//! Invariants: relative offsets strictly increase in `.index` and never decrease in
//! `.timeindex`, timestamps strictly increase in `.timeindex`; positions strictly increase.
//! An active index is mapped at its maximum size and grown by `allocate` ahead of the
//! writer; a sealed one is trimmed to its entries and mapped read-only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Location, Result};
use crate::storage::{MappedFile, OpenMode, StorageDir, StorageFile};

/// Which of the two indexes a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// `.index`: offset → position.
    Offset,
    /// `.timeindex`: timestamp → offset.
    Time,
}

impl IndexKind {
    pub(crate) const fn entry_size(self) -> usize {
        match self {
            IndexKind::Offset => 8,
            IndexKind::Time => 12,
        }
    }
}

/// Growth step of an active index file.
const INDEX_CHUNK: usize = 64 * 1024;

/// One index file.
#[derive(Debug)]
pub(crate) struct Index {
    kind: IndexKind,
    path: PathBuf,
    /// Open only while the index is active (writable).
    file: Option<Arc<dyn StorageFile>>,
    map: Arc<MappedFile>,
    allocated: AtomicUsize,
}

impl Index {
    /// Creates an empty, writable index holding at most `max_bytes` of entries.
    pub(crate) fn create(
        dir: &StorageDir,
        path: PathBuf,
        kind: IndexKind,
        max_bytes: u64,
    ) -> Result<Index> {
        let file = dir
            .storage()
            .open(&path, OpenMode::Truncate)
            .map_err(|e| Error::io("create", &path, e))?;
        Self::writable(path, kind, file, max_bytes, &[])
    }

    /// Opens a writable index holding `entries` (already encoded), rewriting the file.
    pub(crate) fn writable(
        path: PathBuf,
        kind: IndexKind,
        file: Arc<dyn StorageFile>,
        max_bytes: u64,
        entries: &[u8],
    ) -> Result<Index> {
        let size = kind.entry_size();
        let capacity = (max_bytes as usize / size) * size;
        debug_assert!(entries.len() <= capacity && entries.len().is_multiple_of(size));
        file.set_len(0)
            .map_err(|e| Error::io("truncate", &path, e))?;
        let allocated = chunk_len(entries.len(), capacity);
        file.allocate(allocated as u64)
            .map_err(|e| Error::io("allocate", &path, e))?;
        let map = file
            .map_writable(capacity, 0)
            .map_err(|e| Error::io("mmap", &path, e))?;
        file.write_mapped(&map, 0, entries)
            .map_err(|e| Error::io("write", &path, e))?;
        map.publish(entries.len());
        Ok(Index {
            kind,
            path,
            file: Some(file),
            map: Arc::new(map),
            allocated: AtomicUsize::new(allocated),
        })
    }

    /// Opens a sealed index read-only. `None` when the file is missing; `Err(Corruption)`
    /// when its length is not a whole number of entries (the caller rebuilds it).
    pub(crate) fn open_sealed(
        dir: &StorageDir,
        path: PathBuf,
        kind: IndexKind,
    ) -> Result<Option<Index>> {
        let storage = dir.storage();
        if !storage.exists(&path) {
            return Ok(None);
        }
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))? as usize;
        if !len.is_multiple_of(kind.entry_size()) {
            return Err(corrupt(
                &path,
                0,
                "index length",
                format!("{len} is not a multiple of {}", kind.entry_size()),
            ));
        }
        let map = file
            .map_read_only(len)
            .map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Some(Index {
            kind,
            path,
            file: None,
            map: Arc::new(map),
            allocated: AtomicUsize::new(len),
        }))
    }

    /// Writes a sealed index holding `entries` (already encoded) as a new file, and maps it
    /// read-only. A file of that name is unlinked first, so old mappings of it stay valid.
    pub(crate) fn write_sealed(
        dir: &StorageDir,
        path: PathBuf,
        kind: IndexKind,
        entries: &[u8],
    ) -> Result<Index> {
        let storage = dir.storage();
        if storage.exists(&path) {
            storage
                .remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        let file = storage
            .open(&path, OpenMode::Truncate)
            .map_err(|e| Error::io("create", &path, e))?;
        crate::storage::write_all_at(file.as_ref(), entries, 0)
            .map_err(|e| Error::io("write", &path, e))?;
        let map = file
            .map_read_only(entries.len())
            .map_err(|e| Error::io("mmap", &path, e))?;
        Ok(Index {
            kind,
            path,
            file: None,
            map: Arc::new(map),
            allocated: AtomicUsize::new(entries.len()),
        })
    }

    /// Creates a writable index as a new file holding `entries`; a file of that name is
    /// unlinked first, so old mappings of it stay valid.
    pub(crate) fn recreate(
        dir: &StorageDir,
        path: PathBuf,
        kind: IndexKind,
        max_bytes: u64,
        entries: &[u8],
    ) -> Result<Index> {
        let storage = dir.storage();
        if storage.exists(&path) {
            storage
                .remove_file(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
        }
        let file = storage
            .open(&path, OpenMode::Truncate)
            .map_err(|e| Error::io("create", &path, e))?;
        Self::writable(path, kind, file, max_bytes, entries)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records the path the file was renamed to.
    pub(crate) fn renamed(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Entries published so far.
    pub(crate) fn entries(&self) -> usize {
        self.map.published() / self.kind.entry_size()
    }

    /// Entries this index can hold.
    pub(crate) fn max_entries(&self) -> usize {
        self.map.capacity() / self.kind.entry_size()
    }

    /// The encoded entries.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.slice(0, self.map.published())
    }

    /// Appends one encoded entry. The caller checked ordering and fullness.
    pub(crate) fn push(&self, entry: &[u8]) -> Result<()> {
        let Some(file) = &self.file else {
            unreachable!("push to a sealed index")
        };
        let end = self.map.published();
        let new_end = end + entry.len();
        if new_end > self.map.capacity() {
            unreachable!("push to a full index");
        }
        self.allocate_for(file.as_ref(), new_end)?;
        file.write_mapped(&self.map, end, entry)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.map.publish(new_end);
        Ok(())
    }

    /// Allocates room for one more entry (when the index has room for it), so that the
    /// push after a batch is written cannot fail for want of disk space: a full disk
    /// answers before the batch goes in, with the log end unchanged.
    pub(crate) fn reserve_entry(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let new_end = self.map.published() + self.kind.entry_size();
        if new_end > self.map.capacity() {
            return Ok(());
        }
        self.allocate_for(file.as_ref(), new_end)
    }

    /// Grows the file (a chunk at a time) to hold `end` bytes of entries.
    fn allocate_for(&self, file: &dyn StorageFile, end: usize) -> Result<()> {
        let allocated = self.allocated.load(Ordering::Relaxed);
        if end > allocated {
            let grown = chunk_len(end, self.map.capacity()).max(allocated);
            file.allocate(grown as u64)
                .map_err(|e| Error::io("allocate", &self.path, e))?;
            self.allocated.store(grown, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The open file of an active index.
    pub(crate) fn file(&self) -> Option<&Arc<dyn StorageFile>> {
        self.file.as_ref()
    }

    /// Trims the file to its entries and reopens it read-only.
    pub(crate) fn seal(&self) -> Result<Index> {
        let Some(file) = &self.file else {
            unreachable!("seal of a sealed index")
        };
        let len = self.map.published();
        file.set_len(len as u64)
            .map_err(|e| Error::io("truncate", &self.path, e))?;
        let map = file
            .map_read_only(len)
            .map_err(|e| Error::io("mmap", &self.path, e))?;
        Ok(Index {
            kind: self.kind,
            path: self.path.clone(),
            file: None,
            map: Arc::new(map),
            allocated: AtomicUsize::new(len),
        })
    }

    // ---- offset index ----

    /// Offset index entry `i`: (relative offset, position).
    pub(crate) fn offset_entry(&self, i: usize) -> (u32, u32) {
        let b = self.map.slice(i * 8, 8);
        (be_u32(&b[..4]), be_u32(&b[4..]))
    }

    /// Largest entry with relative offset ≤ `relative`: its (relative offset, position),
    /// or `None` when there is none (Kafka's `lookup` answers the segment start then).
    pub(crate) fn lookup_offset(&self, relative: u32) -> Option<(u32, u32)> {
        let n = self.entries();
        let count = partition_point(n, |i| self.offset_entry(i).0 <= relative);
        count.checked_sub(1).map(|i| self.offset_entry(i))
    }

    /// The last offset entry.
    pub(crate) fn last_offset_entry(&self) -> Option<(u32, u32)> {
        self.entries().checked_sub(1).map(|i| self.offset_entry(i))
    }

    // ---- time index ----

    /// Time index entry `i`: (timestamp, relative offset).
    pub(crate) fn time_entry(&self, i: usize) -> (i64, u32) {
        let b = self.map.slice(i * 12, 12);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        (i64::from_be_bytes(ts), be_u32(&b[8..]))
    }

    /// Largest entry with timestamp ≤ `timestamp`: (timestamp, relative offset), or `None`.
    pub(crate) fn lookup_time(&self, timestamp: i64) -> Option<(i64, u32)> {
        let n = self.entries();
        let count = partition_point(n, |i| self.time_entry(i).0 <= timestamp);
        count.checked_sub(1).map(|i| self.time_entry(i))
    }

    /// The last time entry.
    pub(crate) fn last_time_entry(&self) -> Option<(i64, u32)> {
        self.entries().checked_sub(1).map(|i| self.time_entry(i))
    }

    /// Checks the entries of a sealed index against its segment: `Err(Corruption)` when
    /// they are out of order or point outside the segment (the caller rebuilds the index).
    pub(crate) fn sanity_check(&self, log_len: u64, max_relative: u32) -> Result<()> {
        let n = self.entries();
        let mut previous: Option<(i64, u32)> = None;
        for i in 0..n {
            let (key, relative, position) = match self.kind {
                IndexKind::Offset => {
                    let (rel, pos) = self.offset_entry(i);
                    (i64::from(rel), rel, u64::from(pos))
                }
                IndexKind::Time => {
                    let (ts, rel) = self.time_entry(i);
                    (ts, rel, 0)
                }
            };
            let ordered = previous.is_none_or(|(pk, prel)| key > pk && relative >= prel);
            if !ordered || relative > max_relative || position >= log_len.max(1) {
                return Err(corrupt(
                    &self.path,
                    (i * self.kind.entry_size()) as u64,
                    "index entry",
                    format!("entry {i} ({key}, {relative}) is out of order or outside the segment"),
                ));
            }
            previous = Some((key, relative));
        }
        Ok(())
    }
}

/// Encodes an offset index entry.
pub(crate) fn offset_entry(relative: u32, position: u32) -> [u8; 8] {
    let mut e = [0u8; 8];
    e[..4].copy_from_slice(&relative.to_be_bytes());
    e[4..].copy_from_slice(&position.to_be_bytes());
    e
}

/// Encodes a time index entry.
pub(crate) fn time_entry(timestamp: i64, relative: u32) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[..8].copy_from_slice(&timestamp.to_be_bytes());
    e[8..].copy_from_slice(&relative.to_be_bytes());
    e
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Number of leading indexes `i < n` for which `pred` holds (pred is monotone: true then false).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Allocation for `needed` bytes: whole chunks, at most `capacity`.
fn chunk_len(needed: usize, capacity: usize) -> usize {
    needed
        .div_ceil(INDEX_CHUNK)
        .max(1)
        .saturating_mul(INDEX_CHUNK)
        .min(capacity)
}

pub(crate) fn corrupt(path: &Path, position: u64, what: &'static str, detail: String) -> Error {
    Error::Corruption {
        location: Location::File {
            path: path.to_path_buf(),
            position,
        },
        what,
        detail,
    }
}
