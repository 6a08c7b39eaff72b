//! A storage that fails chosen calls: the fault-injection seam for tests (`SQLite`'s countdown
//! loop). Every mutating call (write, allocate, `set_len`, fsync, rename, remove) is counted;
//! the n-th one — or every one from the n-th on — fails the way the plan says. Read-side
//! calls (open, listing, length, read, mapping) are counted apart and can be failed the
//! same way. A whole
//! directory can also be failed (`fail_dir`): every call under it then fails, as a dead disk
//! would.
//!
//! It also keeps Linux's page-cache rule for a failed fsync (`PostgreSQL`'s "fsyncgate"): the
//! bytes a file was written since its last good sync are not retried by later syncs once a
//! sync of it fails (the kernel marks their pages clean). [`FaultStorage::lost_writes`]
//! lists such bytes that were not written again since: a later sync that succeeds does not
//! make them durable.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{LockGuard, MappedFile, OpenMode, Storage, StorageFile};

/// The kind of a counted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `write_at` or a store through a mapping.
    Write,
    /// `allocate` or `set_len`.
    Resize,
    /// `sync_data`, `sync_all` or `sync_dir`.
    Sync,
    /// `rename`.
    Rename,
    /// `remove_file` or `remove_dir_all`.
    Remove,
}

/// How an injected fault fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO`.
    Eio,
    /// `ENOSPC`.
    NoSpace,
    /// A write that stores only a prefix of its bytes, then fails with `EIO` (for other
    /// calls the same as `Eio`).
    ShortWrite,
    /// `EROFS`, as a file system remounted read-only: with `fail_dir`, every call that
    /// would change the directory fails (writes, resizes, syncs, renames, removals,
    /// creating files or opening them for writing) while reads, listings and read-only
    /// opens still work.
    ReadOnly,
    /// `EINTR`: a signal interrupted the call before it did anything. The log makes such
    /// calls again (at most 64 times in a row), so a one-off interruption changes nothing.
    Interrupted,
    /// With `fail_dir`: only syncs fail (`EIO`), as when the disk rejects writeback while
    /// writes still reach the page cache; at each failed sync the dirty bytes of every file
    /// there are lost, as [`FaultStorage::lost_writes`] says. Planned with `fail_at`, the
    /// same as `Eio`.
    FailedWriteback,
    /// No error: the process ends (`abort`) at the call, before it is made — a crash at
    /// exactly that point, for crash tests that sweep every call of a workload. Planned
    /// with `fail_at` or `fail_read_at`; a directory failed with it (`fail_dir`) fails
    /// with `EIO`.
    Abort,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    at: u64,
    kind: FaultKind,
    persistent: bool,
}

#[derive(Debug)]
struct Shared {
    inner: Arc<dyn Storage>,
    ops: AtomicU64,
    injected: AtomicU64,
    plan: Mutex<Option<Plan>>,
    /// Read-side calls (opens, listings, lengths, reads, mappings), counted apart.
    reads: AtomicU64,
    read_plan: Mutex<Option<Plan>>,
    log: Mutex<Vec<(u64, OpKind)>>,
    /// Directories whose every call fails, and how.
    failed_dirs: Mutex<Vec<(PathBuf, FaultKind)>>,
    /// Directories whose syncs take at least this long.
    slow_dirs: Mutex<Vec<(PathBuf, std::time::Duration)>>,
    /// The page cache as the model sees it, by file.
    pages: Mutex<PageCache>,
    /// The most syncs seen running at once through one open file.
    overlapping_syncs: AtomicU64,
    /// The files opened through the wrapper, to follow renames.
    open_files: Mutex<Vec<Weak<FaultFile>>>,
}

/// Byte ranges `[start, end)` of each file, by path.
type Ranges = HashMap<PathBuf, Vec<(u64, u64)>>;

/// Which written bytes of each file a sync would write, and which it never will.
#[derive(Debug, Default)]
struct PageCache {
    /// Written since the file's last sync that succeeded.
    dirty: Ranges,
    /// Written before a sync of the file failed, and not written since: clean pages
    /// that hold what the disk may lack.
    lost: Ranges,
}

/// Adds `[start, end)` to `ranges`.
fn add_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    if start < end {
        ranges.push((start, end));
    }
}

/// Where a path `rest` below a renamed `to` lands (`to` itself for an empty `rest`, with
/// no trailing separator).
fn moved_to(to: &Path, rest: &Path) -> PathBuf {
    if rest.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rest)
    }
}

/// Removes `[start, end)` from `ranges`.
fn remove_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    let mut kept = Vec::with_capacity(ranges.len());
    for &(s, e) in ranges.iter() {
        if e <= start || s >= end {
            kept.push((s, e));
            continue;
        }
        add_range(&mut kept, s, start.min(e));
        add_range(&mut kept, end.max(s), e);
    }
    *ranges = kept;
}

impl PageCache {
    /// `[start, end)` of `path` was written: dirty, no longer lost.
    fn written(&mut self, path: &Path, start: u64, end: u64) {
        if let Some(lost) = self.lost.get_mut(path) {
            remove_range(lost, start, end);
        }
        add_range(
            self.dirty.entry(path.to_path_buf()).or_default(),
            start,
            end,
        );
    }

    /// A sync of `path` ended: what was dirty is durable, or with a failure lost.
    fn synced(&mut self, path: &Path, ok: bool) {
        let dirty = self.dirty.remove(path).unwrap_or_default();
        if !ok {
            self.lost
                .entry(path.to_path_buf())
                .or_default()
                .extend(dirty);
        }
    }

    /// The file was cut to `len` bytes.
    fn cut(&mut self, path: &Path, len: u64) {
        for ranges in [&mut self.dirty, &mut self.lost] {
            if let Some(r) = ranges.get_mut(path) {
                remove_range(r, len, u64::MAX);
            }
        }
    }

    /// The dirty bytes of every file under `dir` are lost (its writeback failed).
    fn lose_under(&mut self, dir: &Path) {
        let paths: Vec<PathBuf> = self
            .dirty
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in paths {
            self.synced(&path, false);
        }
    }

    /// Everything under `path` is gone.
    fn forget(&mut self, path: &Path) {
        for ranges in [&mut self.dirty, &mut self.lost] {
            ranges.retain(|p, _| !p.starts_with(path));
        }
    }

    /// Everything under `from` is now under `to` (which it replaced).
    fn renamed(&mut self, from: &Path, to: &Path) {
        self.forget(to);
        for ranges in [&mut self.dirty, &mut self.lost] {
            let moved: Vec<PathBuf> = ranges
                .keys()
                .filter(|p| p.starts_with(from))
                .cloned()
                .collect();
            for old in moved {
                if let (Some(r), Ok(rest)) = (ranges.remove(&old), old.strip_prefix(from)) {
                    ranges.insert(moved_to(to, rest), r);
                }
            }
        }
    }
}

/// `path` made absolute (as `StorageDir` holds its directory), so that a directory given
/// relative matches the paths the log uses.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A [`Storage`] wrapper that counts mutating calls and fails the chosen ones.
#[derive(Debug, Clone)]
pub struct FaultStorage {
    shared: Arc<Shared>,
}

impl FaultStorage {
    /// Wraps `inner`; no fault is planned yet.
    pub fn new(inner: Arc<dyn Storage>) -> FaultStorage {
        FaultStorage {
            shared: Arc::new(Shared {
                inner,
                ops: AtomicU64::new(0),
                injected: AtomicU64::new(0),
                plan: Mutex::new(None),
                reads: AtomicU64::new(0),
                read_plan: Mutex::new(None),
                log: Mutex::new(Vec::new()),
                failed_dirs: Mutex::new(Vec::new()),
                slow_dirs: Mutex::new(Vec::new()),
                pages: Mutex::default(),
                overlapping_syncs: AtomicU64::new(0),
                open_files: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The most fsyncs (`sync_data`, `sync_all`) seen running at the same time through one
    /// open file. Linux reports a failed writeback once per open file, to whichever of
    /// those syncs looks first: the others answer success for the lost bytes. The log
    /// never runs two at once through one file.
    pub fn overlapping_syncs(&self) -> u64 {
        self.shared.overlapping_syncs.load(Ordering::SeqCst)
    }

    /// Fails the call numbered `at` (counting from 1, over all counted calls since creation),
    /// and with `persistent` every later one too.
    pub fn fail_at(&self, at: u64, kind: FaultKind, persistent: bool) {
        *self.shared.plan.lock() = Some(Plan {
            at,
            kind,
            persistent,
        });
    }

    /// Fails the read-side call numbered `at` (counting from 1, apart from the counted
    /// mutating calls): an `open` or `list_dir`, or a file's `len`, `read_at` or mapping.
    /// With `persistent` every later one too. `ShortWrite` fails as `Eio`; `Abort` ends the
    /// process at the call.
    pub fn fail_read_at(&self, at: u64, kind: FaultKind, persistent: bool) {
        *self.shared.read_plan.lock() = Some(Plan {
            at,
            kind,
            persistent,
        });
    }

    /// Removes the plans: later calls succeed (failed directories stay failed).
    pub fn heal(&self) {
        *self.shared.plan.lock() = None;
        *self.shared.read_plan.lock() = None;
    }

    /// Fails every call on a path under `dir` from now on — opens, listings, reads, writes,
    /// syncs, renames — with `kind`, as a disk that died or filled up; with
    /// [`FaultKind::ReadOnly`] only the calls that would change it.
    /// `dir` is made absolute, as the log's directories are.
    pub fn fail_dir(&self, dir: impl AsRef<Path>, kind: FaultKind) {
        let dir = absolute(dir.as_ref());
        let mut failed = self.shared.failed_dirs.lock();
        failed.retain(|(d, _)| *d != dir);
        failed.push((dir, kind));
    }

    /// Makes every sync (fsync, fdatasync, directory fsync) under `dir` take `delay` longer,
    /// as a slow or overloaded disk; until [`FaultStorage::heal_dir`], which also ends the
    /// syncs waiting then (so a long `delay` is a hung disk released by the test).
    pub fn slow_dir(&self, dir: impl AsRef<Path>, delay: std::time::Duration) {
        let dir = absolute(dir.as_ref());
        let mut slow = self.shared.slow_dirs.lock();
        slow.retain(|(d, _)| *d != dir);
        slow.push((dir, delay));
    }

    /// Undoes [`FaultStorage::fail_dir`] and [`FaultStorage::slow_dir`] for `dir`.
    pub fn heal_dir(&self, dir: impl AsRef<Path>) {
        let dir = absolute(dir.as_ref());
        self.shared.failed_dirs.lock().retain(|(d, _)| *d != dir);
        self.shared.slow_dirs.lock().retain(|(d, _)| *d != dir);
    }

    /// Counted calls so far.
    pub fn ops(&self) -> u64 {
        self.shared.ops.load(Ordering::SeqCst)
    }

    /// Read-side calls so far (see [`FaultStorage::fail_read_at`]).
    pub fn reads(&self) -> u64 {
        self.shared.reads.load(Ordering::SeqCst)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// The kinds of the counted calls so far, in order.
    pub fn op_log(&self) -> Vec<(u64, OpKind)> {
        self.shared.log.lock().clone()
    }

    /// Bytes written to a file before a sync of it failed and not written again since,
    /// as `(path, start, end)`, sorted: on Linux they stay in the page cache as clean pages
    /// (readable, so a read finds them) that no later sync writes, so they may never reach
    /// the disk, whatever later syncs return. Files removed since are not listed.
    pub fn lost_writes(&self) -> Vec<(PathBuf, u64, u64)> {
        let pages = self.shared.pages.lock();
        let mut lost: Vec<(PathBuf, u64, u64)> = pages
            .lost
            .iter()
            .flat_map(|(path, ranges)| ranges.iter().map(|&(s, e)| (path.clone(), s, e)))
            .collect();
        lost.sort();
        lost
    }

    /// As a shared [`Storage`].
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::new(self.clone())
    }
}

impl Shared {
    /// How calls on `path` fail, when it lies in a failed directory.
    fn dir_fault(&self, path: &Path) -> Option<FaultKind> {
        let failed = self.failed_dirs.lock();
        failed
            .iter()
            .find(|(dir, _)| path.starts_with(dir))
            .map(|&(_, kind)| kind)
    }

    /// The failed directory holding `path`, if its fault is [`FaultKind::FailedWriteback`].
    fn failed_writeback_dir(&self, path: &Path) -> Option<PathBuf> {
        self.failed_dirs
            .lock()
            .iter()
            .find(|(dir, kind)| path.starts_with(dir) && *kind == FaultKind::FailedWriteback)
            .map(|(dir, _)| dir.clone())
    }

    /// Fails a read-side call on `path` in a failed directory (not in a read-only one, nor
    /// in one whose writeback fails).
    fn check_dir_read(&self, path: &Path) -> io::Result<()> {
        match self.dir_fault(path) {
            None | Some(FaultKind::ReadOnly | FaultKind::FailedWriteback) => Ok(()),
            Some(fault) => Err(error(fault)),
        }
    }

    /// Fails an uncounted call on `path` in a failed directory (not in one whose writeback
    /// fails: those calls are not syncs).
    fn check_dir(&self, path: &Path) -> io::Result<()> {
        match self.dir_fault(path) {
            None | Some(FaultKind::FailedWriteback) => Ok(()),
            Some(fault) => Err(error(fault)),
        }
    }

    /// Counts a call on `path` and says whether (and how) it fails.
    fn tick(&self, kind: OpKind, path: &Path) -> Option<FaultKind> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.lock().push((n, kind));
        if kind == OpKind::Sync {
            // In short steps, so that `heal_dir` ends the wait at once (a very long delay
            // is a hung disk that a test releases).
            let started = std::time::Instant::now();
            loop {
                // Its own statement: the guard must not live across the sleep.
                let left = self
                    .slow_dirs
                    .lock()
                    .iter()
                    .find(|(dir, _)| path.starts_with(dir))
                    .and_then(|&(_, delay)| delay.checked_sub(started.elapsed()));
                let Some(left) = left else { break };
                std::thread::sleep(left.min(std::time::Duration::from_millis(5)));
            }
        }
        if let Some(fault) = self.dir_fault(path)
            && (fault != FaultKind::FailedWriteback || kind == OpKind::Sync)
        {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Some(fault);
        }
        let plan = (*self.plan.lock())?;
        let hit = n == plan.at || (plan.persistent && n > plan.at);
        if hit && plan.kind == FaultKind::Abort {
            std::process::abort();
        }
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
            Some(plan.kind)
        } else {
            None
        }
    }

    /// Checks a read-side call on `path`: its directory, then the read plan.
    fn check_read(&self, path: &Path) -> io::Result<()> {
        self.check_dir_read(path)?;
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(plan) = *self.read_plan.lock() else {
            return Ok(());
        };
        if n == plan.at || (plan.persistent && n > plan.at) {
            if plan.kind == FaultKind::Abort {
                std::process::abort();
            }
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(error(plan.kind));
        }
        Ok(())
    }

    fn check(&self, kind: OpKind, path: &Path) -> io::Result<()> {
        match self.tick(kind, path) {
            None => Ok(()),
            Some(fault) => Err(error(fault)),
        }
    }
}

fn error(fault: FaultKind) -> io::Error {
    match fault {
        FaultKind::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        FaultKind::ReadOnly => io::Error::from_raw_os_error(libc::EROFS),
        FaultKind::Interrupted => io::Error::from_raw_os_error(libc::EINTR),
        // `Abort` never returns from the call (see `tick`).
        FaultKind::Eio | FaultKind::ShortWrite | FaultKind::FailedWriteback | FaultKind::Abort => {
            io::Error::from_raw_os_error(libc::EIO)
        }
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn StorageFile>,
    shared: Arc<Shared>,
    /// Where the file is now: a rename moves open files too.
    path: Mutex<PathBuf>,
    /// Syncs running through this file now.
    syncing: AtomicU64,
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.check_dir(path)?;
        self.shared.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        self.shared.check_read(path)?;
        if mode != OpenMode::Read {
            self.shared.check_dir(path)?;
        }
        let fresh = mode == OpenMode::Truncate || !self.shared.inner.exists(path);
        let inner = self.shared.inner.open(path, mode)?;
        if fresh && mode != OpenMode::Read {
            // A new (or emptied) file: nothing of an earlier one under the name is in it.
            self.shared.pages.lock().forget(path);
        }
        let file = Arc::new(FaultFile {
            inner,
            shared: Arc::clone(&self.shared),
            path: Mutex::new(path.to_path_buf()),
            syncing: AtomicU64::new(0),
        });
        let mut open = self.shared.open_files.lock();
        open.retain(|f| f.strong_count() > 0);
        open.push(Arc::downgrade(&file));
        Ok(file)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.shared.check_read(path)?;
        self.shared.inner.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.inner.exists(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.check_dir(to)?;
        self.shared.check(OpKind::Rename, from)?;
        self.shared.inner.rename(from, to)?;
        self.shared.pages.lock().renamed(from, to);
        // Open files move with their names (writes through them go on under the new one);
        // one the rename replaced keeps its directory but no name a file can have.
        for file in self
            .shared
            .open_files
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
        {
            let mut path = file.path.lock();
            if *path == to {
                let mut replaced = path.clone().into_os_string();
                replaced.push("\0replaced");
                *path = PathBuf::from(replaced);
            } else if let Ok(rest) = path.strip_prefix(from) {
                *path = moved_to(to, rest);
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Remove, path)?;
        self.shared.inner.remove_file(path)?;
        self.shared.pages.lock().forget(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Remove, path)?;
        self.shared.inner.remove_dir_all(path)?;
        self.shared.pages.lock().forget(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Sync, path)?;
        self.shared.inner.sync_dir(path)
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.shared.check_dir(dir)?;
        self.shared.inner.lock(dir)
    }
}

impl StorageFile for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.shared.check_read(&self.path())?;
        self.inner.len()
    }

    fn modified(&self) -> io::Result<Option<std::time::SystemTime>> {
        self.shared.check_read(&self.path())?;
        self.inner.modified()
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.shared.check_read(&self.path())?;
        self.inner.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        let written = match self.shared.tick(OpKind::Write, &self.path()) {
            None => self.inner.write_at(buf, position)?,
            Some(FaultKind::ShortWrite) if buf.len() > 1 => {
                let half = buf.len() / 2;
                self.inner.write_at(&buf[..half], position)?
            }
            Some(fault) => return Err(error(fault)),
        };
        self.written(position, written);
        Ok(written)
    }

    fn write_vectored_at(&self, bufs: &[io::IoSlice<'_>], position: u64) -> io::Result<usize> {
        match self.shared.tick(OpKind::Write, &self.path()) {
            None => {
                let written = self.inner.write_vectored_at(bufs, position)?;
                self.written(position, written);
                Ok(written)
            }
            Some(FaultKind::ShortWrite) => {
                // A prefix reaches the file, then the call fails, as a store through a
                // mapping can.
                if let Some(buf) = bufs.iter().find(|b| b.len() > 1) {
                    let written = self.inner.write_at(&buf[..buf.len() / 2], position)?;
                    self.written(position, written);
                }
                Err(error(FaultKind::Eio))
            }
            Some(fault) => Err(error(fault)),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.check(OpKind::Resize, &self.path())?;
        self.inner.set_len(len)?;
        self.shared.pages.lock().cut(&self.path(), len);
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.shared.check(OpKind::Resize, &self.path())?;
        self.inner.allocate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(|inner| inner.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(|inner| inner.sync_all())
    }

    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile> {
        self.shared.check_read(&self.path())?;
        self.shared.check_dir(&self.path())?;
        self.inner.map_writable(capacity, published)
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedFile> {
        self.shared.check_read(&self.path())?;
        self.inner.map_read_only(len)
    }

    fn write_mapped(&self, map: &MappedFile, position: usize, data: &[u8]) -> io::Result<()> {
        match self.shared.tick(OpKind::Write, &self.path()) {
            None => {
                self.inner.write_mapped(map, position, data)?;
                self.written(position as u64, data.len());
                Ok(())
            }
            Some(FaultKind::ShortWrite) => {
                // A torn store: a prefix reaches the page cache, then the call fails.
                let half = &data[..data.len() / 2];
                self.inner.write_mapped(map, position, half)?;
                self.written(position as u64, half.len());
                Err(error(FaultKind::ShortWrite))
            }
            Some(fault) => Err(error(fault)),
        }
    }
}

impl FaultFile {
    fn path(&self) -> PathBuf {
        self.path.lock().clone()
    }

    /// `len` bytes at `position` reached the page cache.
    fn written(&self, position: u64, len: usize) {
        self.shared
            .pages
            .lock()
            .written(&self.path(), position, position + len as u64);
    }

    /// A counted sync, and what it does to the file's dirty bytes.
    fn sync(&self, call: impl FnOnce(&dyn StorageFile) -> io::Result<()>) -> io::Result<()> {
        let running = self.syncing.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared
            .overlapping_syncs
            .fetch_max(running, Ordering::SeqCst);
        let result = match self.shared.tick(OpKind::Sync, &self.path()) {
            None => call(self.inner.as_ref()),
            Some(fault) => Err(error(fault)),
        };
        // An interrupted call did nothing; any other failure leaves the pages clean.
        if !matches!(&result, Err(e) if e.kind() == io::ErrorKind::Interrupted) {
            let mut pages = self.shared.pages.lock();
            pages.synced(&self.path(), result.is_ok());
            if let Some(dir) = self.shared.failed_writeback_dir(&self.path()) {
                // The disk's writeback fails for every file there, synced or not.
                pages.lose_under(&dir);
            }
        }
        self.syncing.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::storage::OsStorage;

    #[test]
    fn ranges_are_cut_around_a_removed_range() {
        let mut ranges = vec![(0, 10), (20, 30)];
        remove_range(&mut ranges, 5, 25);
        assert_eq!(ranges, [(0, 5), (25, 30)]);
        remove_range(&mut ranges, 0, 100);
        assert_eq!(ranges, []);
        let mut inside = vec![(0, 10)];
        remove_range(&mut inside, 3, 4);
        assert_eq!(inside, [(0, 3), (4, 10)]);
    }

    /// Bytes written before a failed sync stay lost through later good syncs, until they
    /// are written again; a removed file takes its entries with it.
    #[test]
    fn a_failed_sync_loses_what_it_covered_until_it_is_written_again() {
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        let path = root.path().join("f");
        let file = fault.open(&path, OpenMode::Create).unwrap();
        file.write_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        file.write_at(b"cached", 7).unwrap();
        fault.fail_at(fault.ops() + 1, FaultKind::Eio, false);
        assert!(file.sync_data().is_err());
        file.write_at(b"later", 13).unwrap();
        file.sync_data().unwrap();
        assert_eq!(fault.lost_writes(), [(path.clone(), 7, 13)]);
        file.write_at(b"ca", 7).unwrap();
        assert_eq!(fault.lost_writes(), [(path.clone(), 9, 13)]);
        file.set_len(10).unwrap();
        assert_eq!(fault.lost_writes(), [(path.clone(), 9, 10)]);
        fault.remove_file(&path).unwrap();
        assert_eq!(fault.lost_writes(), []);
    }

    /// A file renamed while open is written and synced under its new name: what a failed
    /// sync loses is reported there, and a new file under the old name forgets nothing of
    /// it.
    #[test]
    fn an_open_file_follows_its_rename() {
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        let (temp, path) = (root.path().join("f.tmp"), root.path().join("f"));
        let file = fault.open(&temp, OpenMode::Create).unwrap();
        file.write_at(b"before", 0).unwrap();
        fault.rename(&temp, &path).unwrap();
        file.write_at(b"after", 6).unwrap();
        drop(fault.open(&temp, OpenMode::Truncate).unwrap());
        // A file renamed over while open is no longer the one under the name.
        let other = root.path().join("g");
        let replaced = fault.open(&other, OpenMode::Create).unwrap();
        fault.rename(&temp, &other).unwrap();
        replaced.write_at(b"gone", 0).unwrap();
        fault.fail_at(fault.ops() + 1, FaultKind::Eio, false);
        assert!(file.sync_data().is_err());
        assert_eq!(fault.lost_writes(), [(path.clone(), 0, 6), (path, 6, 11)]);
        // What the replaced file loses is not the new file's under the name.
        fault.fail_at(fault.ops() + 1, FaultKind::Eio, false);
        assert!(replaced.sync_data().is_err());
        assert!(
            fault.lost_writes().iter().all(|(p, _, _)| *p != other),
            "{:?}",
            fault.lost_writes()
        );
    }

    /// `FailedWriteback` fails only the syncs of a directory.
    #[test]
    fn failed_writeback_fails_only_syncs() {
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        fault.fail_dir(root.path(), FaultKind::FailedWriteback);
        let path = root.path().join("f");
        let file = fault.open(&path, OpenMode::Create).unwrap();
        file.write_at(b"bytes", 0).unwrap();
        assert_eq!(file.len().unwrap(), 5);
        assert!(file.sync_all().is_err());
        assert!(fault.sync_dir(root.path()).is_err());
        fault.rename(&path, &root.path().join("g")).unwrap();
        assert_eq!(fault.lost_writes(), [(root.path().join("g"), 0, 5)]);
    }
}
