//! A storage that fails chosen calls: the fault-injection seam for tests (`SQLite`'s countdown
//! loop). Every mutating call (write, allocate, `set_len`, fsync, rename, remove) is counted;
//! the n-th one — or every one from the n-th on — fails the way the plan says. Read-side
//! calls (open, listing, length, read, mapping) are counted apart and can be failed the
//! same way. A whole
//! directory can also be failed (`fail_dir`): every call under it then fails, as a dead disk
//! would.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
            }),
        }
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

    /// Fails a read-side call on `path` in a failed directory (not in a read-only one).
    fn check_dir_read(&self, path: &Path) -> io::Result<()> {
        match self.dir_fault(path) {
            None | Some(FaultKind::ReadOnly) => Ok(()),
            Some(fault) => Err(error(fault)),
        }
    }

    /// Fails an uncounted call on `path` in a failed directory.
    fn check_dir(&self, path: &Path) -> io::Result<()> {
        match self.dir_fault(path) {
            None => Ok(()),
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
        if let Some(fault) = self.dir_fault(path) {
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
        FaultKind::Eio | FaultKind::ShortWrite | FaultKind::Abort => {
            io::Error::from_raw_os_error(libc::EIO)
        }
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn StorageFile>,
    shared: Arc<Shared>,
    path: PathBuf,
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
        let inner = self.shared.inner.open(path, mode)?;
        Ok(Arc::new(FaultFile {
            inner,
            shared: Arc::clone(&self.shared),
            path: path.to_path_buf(),
        }))
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
        self.shared.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Remove, path)?;
        self.shared.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Remove, path)?;
        self.shared.inner.remove_dir_all(path)
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
        self.shared.check_read(&self.path)?;
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.shared.check_read(&self.path)?;
        self.inner.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        match self.shared.tick(OpKind::Write, &self.path) {
            None => self.inner.write_at(buf, position),
            Some(FaultKind::ShortWrite) if buf.len() > 1 => {
                let half = buf.len() / 2;
                self.inner.write_at(&buf[..half], position)
            }
            Some(fault) => Err(error(fault)),
        }
    }

    fn write_vectored_at(&self, bufs: &[io::IoSlice<'_>], position: u64) -> io::Result<usize> {
        match self.shared.tick(OpKind::Write, &self.path) {
            None => self.inner.write_vectored_at(bufs, position),
            Some(FaultKind::ShortWrite) => {
                // A prefix reaches the file, then the call fails, as a store through a
                // mapping can.
                if let Some(buf) = bufs.iter().find(|b| b.len() > 1) {
                    self.inner.write_at(&buf[..buf.len() / 2], position)?;
                }
                Err(error(FaultKind::Eio))
            }
            Some(fault) => Err(error(fault)),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.check(OpKind::Resize, &self.path)?;
        self.inner.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.shared.check(OpKind::Resize, &self.path)?;
        self.inner.allocate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.shared.check(OpKind::Sync, &self.path)?;
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.shared.check(OpKind::Sync, &self.path)?;
        self.inner.sync_all()
    }

    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile> {
        self.shared.check_read(&self.path)?;
        self.shared.check_dir(&self.path)?;
        self.inner.map_writable(capacity, published)
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedFile> {
        self.shared.check_read(&self.path)?;
        self.inner.map_read_only(len)
    }

    fn write_mapped(&self, map: &MappedFile, position: usize, data: &[u8]) -> io::Result<()> {
        match self.shared.tick(OpKind::Write, &self.path) {
            None => self.inner.write_mapped(map, position, data),
            Some(FaultKind::ShortWrite) => {
                // A torn store: a prefix reaches the page cache, then the call fails.
                self.inner
                    .write_mapped(map, position, &data[..data.len() / 2])?;
                Err(error(FaultKind::ShortWrite))
            }
            Some(fault) => Err(error(fault)),
        }
    }
}
