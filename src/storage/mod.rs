//! Files and directories: the `Storage` seam every byte of I/O goes through, the mapping
//! wrapper, atomic replacement of small files, and per-directory health.
//!
//! Invariants:
//! - every write, fsync, rename and removal goes through a [`Storage`]; tests swap in
//!   [`FaultStorage`] to fail any one of them;
//! - a failed fsync poisons its [`StorageDir`]: from then on every mutation there answers
//!   [`Error::Poisoned`] (Linux may have dropped the dirty pages, so a retry proves nothing).

mod atomic;
mod fault;
pub(crate) mod mmap;
mod os;
mod retry;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use atomic::{read_framed, write_framed};
pub use fault::{FaultKind, FaultStorage, OpKind};
pub use mmap::MappedFile;
pub use os::OsStorage;
pub(crate) use retry::Retrying;

use crate::error::{Error, Result};

/// How [`Storage::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read-only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; created when missing, kept when present.
    Create,
    /// Read and write; created empty, replacing any file of that name.
    Truncate,
}

/// Directory-level operations: the seam through which tarnlog reaches the file system.
///
/// [`OsStorage`] is the real one; [`FaultStorage`] wraps another and fails chosen calls.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Names of the entries of a directory (not sorted).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Atomically renames a file, replacing the target.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes a directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of a directory; `ErrorKind::WouldBlock` when another
    /// holder (this process or another) has it. The lock lasts as long as the guard.
    fn lock(&self, dir: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// A held directory lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// One open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads at `position`; returns how many bytes were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    /// Writes at `position`; may write fewer bytes than asked.
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize>;
    /// Writes `bufs` one after another from `position` in one call where the platform
    /// allows (`pwritev`); may write fewer bytes than asked. The default writes only the
    /// first non-empty buffer.
    fn write_vectored_at(&self, bufs: &[io::IoSlice<'_>], position: u64) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(buf) => self.write_at(buf, position),
            None => Ok(0),
        }
    }
    /// Sets the length, cutting or zero-extending.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk blocks so that the file is at least `len` bytes long and writes through
    /// a mapping below `len` cannot fail for want of space (`ENOSPC` is returned here).
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data and the metadata needed to read it are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and all metadata are durable.
    fn sync_all(&self) -> io::Result<()>;
    /// The file's last modification time, when the storage knows it (the default does
    /// not). Retention falls back on it for a segment whose records carry no timestamp, as
    /// Kafka does with the file's `lastModified`.
    fn modified(&self) -> io::Result<Option<std::time::SystemTime>> {
        Ok(None)
    }
    /// Maps `capacity` bytes for writing; `published` bytes are valid already.
    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile>;
    /// Maps the first `len` bytes read-only.
    fn map_read_only(&self, len: usize) -> io::Result<MappedFile>;
    /// Copies `data` into `map` at `position` (a store into the page cache). A fault-injecting
    /// storage may fail here, or copy a prefix and then fail.
    fn write_mapped(&self, map: &MappedFile, position: usize, data: &[u8]) -> io::Result<()> {
        map.write(position, data);
        Ok(())
    }
}

/// Writes `head` then `body` from `position`, in one vectored write when the storage
/// allows, retrying short writes.
pub(crate) fn write_pair_at(
    file: &dyn StorageFile,
    mut head: &[u8],
    mut body: &[u8],
    mut position: u64,
) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let written = if head.is_empty() {
            file.write_at(body, position)
        } else {
            file.write_vectored_at(&[io::IoSlice::new(head), io::IoSlice::new(body)], position)
        };
        match written {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => {
                let from_head = n.min(head.len());
                head = &head[from_head..];
                body = &body[n - from_head..];
                position += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `position`, retrying short writes.
pub(crate) fn write_all_at(
    file: &dyn StorageFile,
    mut buf: &[u8],
    mut position: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, position) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => {
                buf = &buf[n..];
                position += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `position`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(
    file: &dyn StorageFile,
    mut buf: &mut [u8],
    mut position: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, position) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                position += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The file a failed fsync leaves in its directory: the replicas loaded there next (in
/// this run, by `restore_dir`, or at a later open) write their unsynced bytes again before
/// anything is acknowledged from them (`ReplicaLog::resync_unsynced`). Linux marks the pages
/// of a failed writeback clean, so no later fsync writes them, while reads still find them
/// in the page cache. The file is not synced: it is needed only while that page cache
/// lives, and a reboot (which loses it) also shows recovery the disk's true bytes.
pub(crate) const SYNC_FAILED: &str = "sync-failed";

/// The name [`SYNC_FAILED`] has while no fsync failed: made when the directory opens, and
/// renamed at a failure, so that a full disk (which may be why the fsync failed, and
/// where a new file cannot be made) still gets the marker.
pub(crate) const SYNC_OK: &str = "sync-ok";

/// One storage directory: its path, its storage, its lock and its health.
#[derive(Debug)]
pub struct StorageDir {
    path: PathBuf,
    storage: Arc<dyn Storage>,
    poisoned: AtomicBool,
    /// An fsync here failed (the page cache may hold what never reached the disk).
    sync_failed: AtomicBool,
    /// Replicas loaded here write their unsynced bytes again ([`SYNC_FAILED`]).
    resync: AtomicBool,
    lock: parking_lot::Mutex<Option<Box<dyn LockGuard>>>,
    /// The directory's background worker, started at its first job.
    worker: parking_lot::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    /// When the job the worker runs now started, if it runs one: a job running long (a
    /// hung disk) holds up every job queued behind it.
    job_started: Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    /// The body of each checkpoint file this `StorageDir` wrote and synced, by file name:
    /// writing the same body again would only repeat the syncs.
    checkpoints: parking_lot::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

/// Work for a directory's background worker.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

impl StorageDir {
    /// Creates the directory if needed and takes its `LOCK`.
    pub(crate) fn open(storage: Arc<dyn Storage>, path: &Path) -> Result<StorageDir> {
        // Absolute, so that every path joined to it stays right whatever the callers join
        // (a partition path under it, or a name) and if the working directory changes.
        let path = std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))?;
        // Only when missing: the directory itself may be a link (to another disk).
        if !storage.exists(&path) {
            storage
                .create_dir_all(&path)
                .map_err(|e| Error::io("create directory", &path, e))?;
        }
        let lock = storage.lock(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                Error::Locked { dir: path.clone() }
            } else {
                Error::io("lock", path.join("LOCK"), e)
            }
        })?;
        let resync = storage.exists(&path.join(SYNC_FAILED));
        if !resync && !storage.exists(&path.join(SYNC_OK)) {
            // Best effort: without it, a failure makes the marker anew.
            let _ = storage.open(&path.join(SYNC_OK), OpenMode::Create);
        }
        Ok(StorageDir {
            path,
            storage,
            poisoned: AtomicBool::new(false),
            sync_failed: AtomicBool::new(false),
            resync: AtomicBool::new(resync),
            lock: parking_lot::Mutex::new(Some(lock)),
            worker: parking_lot::Mutex::new(None),
            job_started: Arc::default(),
            checkpoints: parking_lot::Mutex::default(),
        })
    }

    /// A directory that could not be opened: offline (poisoned) from the start, unlocked.
    pub(crate) fn offline(storage: Arc<dyn Storage>, path: PathBuf) -> StorageDir {
        StorageDir {
            path: std::path::absolute(&path).unwrap_or(path),
            storage,
            poisoned: AtomicBool::new(true),
            sync_failed: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            lock: parking_lot::Mutex::new(None),
            worker: parking_lot::Mutex::new(None),
            job_started: Arc::default(),
            checkpoints: parking_lot::Mutex::default(),
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint bodies written and synced here by this `StorageDir`, by file name
    /// (empty at open: the files found then are read, never assumed).
    pub(crate) fn checkpoints(
        &self,
    ) -> parking_lot::MutexGuard<'_, std::collections::HashMap<String, Vec<u8>>> {
        self.checkpoints.lock()
    }

    /// The storage this directory lives on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// `Err(Poisoned)` once an fsync here has failed.
    pub fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned {
                dir: self.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Runs `job` on the directory's worker thread (one per directory, started at the
    /// first job; it ends when the directory is dropped), so that work on several
    /// directories — a replicated append's fsyncs — runs at once. Runs it here when the
    /// thread cannot be started.
    pub(crate) fn run_in_background(&self, job: Job) {
        let mut worker = self.worker.lock();
        if worker.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let started = Arc::clone(&self.job_started);
            let spawned = std::thread::Builder::new()
                .name("tarnlog-dir".into())
                .spawn(move || {
                    for job in rx {
                        *started.lock() = Some(std::time::Instant::now());
                        // A job that panics must not take the worker, and every later job
                        // on this directory, with it.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        *started.lock() = None;
                    }
                });
            if spawned.is_ok() {
                *worker = Some(tx);
            }
        }
        let unsent = match worker.as_ref() {
            Some(tx) => tx.send(job).err().map(|e| e.0),
            None => Some(job),
        };
        drop(worker);
        if let Some(job) = unsent {
            job();
        }
    }

    /// A job on the directory's worker that does several writes in turn (the `meta`
    /// writer, while newer versions keep coming) made progress: it counts as running since
    /// now, so that a busy but working disk does not look stuck.
    pub(crate) fn job_progressed(&self) {
        let mut started = self.job_started.lock();
        if started.is_some() {
            *started = Some(std::time::Instant::now());
        }
    }

    /// How long the job the directory's worker runs now has been running (zero when it
    /// runs none): long on a hung disk, whose queued work (syncs, `meta` writes) waits
    /// behind it. A job run in the calling thread (when the worker cannot be started) is
    /// not counted: its caller waits for it anyway.
    pub(crate) fn stalled_for(&self) -> std::time::Duration {
        self.job_started
            .lock()
            .map_or(std::time::Duration::ZERO, |started| started.elapsed())
    }

    /// Waits (at most `timeout`) until the work queued on the directory's worker so far is
    /// done, so that nothing queued for it runs after the directory is closed or reopened.
    /// False when the time ran out first.
    pub(crate) fn drain(&self, timeout: std::time::Duration) -> bool {
        if self.worker.lock().is_none() {
            return true;
        }
        let done = Arc::new(Completion::new(1));
        let signal = Arc::clone(&done);
        self.run_in_background(Box::new(move || signal.finish(0, Ok(()))));
        done.wait_for(timeout).iter().all(Option::is_some)
    }

    /// Waits as [`StorageDir::drain`], then releases the directory's `LOCK`. A job still
    /// running then (a write stuck on a hung disk) could otherwise finish its file
    /// replacement in a directory another `Log` has opened since: the directory is marked
    /// failed first, which that job checks before its rename. False when the time ran out.
    pub(crate) fn drain_and_unlock(&self, timeout: std::time::Duration) -> bool {
        let drained = self.drain(timeout);
        if !drained {
            self.poison();
        }
        self.unlock();
        drained
    }

    /// Releases the directory's `LOCK` (the log is closed; stale handles may live on).
    pub(crate) fn unlock(&self) {
        self.lock.lock().take();
    }

    /// Whether an fsync here has failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Whether an fsync here has failed (rather than another I/O call).
    pub(crate) fn sync_failed(&self) -> bool {
        self.sync_failed.load(Ordering::Acquire)
    }

    /// Marks the directory failed.
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Whether replicas loaded here must write their unsynced bytes again: an fsync here
    /// failed, in this run (for a directory opened again by `restore_dir`) or in an
    /// earlier one whose page cache may live on ([`SYNC_FAILED`]).
    pub(crate) fn needs_resync(&self) -> bool {
        self.resync.load(Ordering::Acquire)
    }

    /// Makes the replicas loaded here write their unsynced bytes again (the directory is
    /// opened again after an fsync of its earlier `StorageDir` failed).
    pub(crate) fn require_resync(&self) {
        self.resync.store(true, Ordering::Release);
    }

    /// Every replica here was loaded, its unsynced bytes written again and synced: the
    /// [`SYNC_FAILED`] file goes back to [`SYNC_OK`]. Not after a failure here (the
    /// marker stays for the next open); a failure to rename it costs the next open the
    /// same rewrite, nothing else.
    pub(crate) fn resynced(&self) -> Result<()> {
        self.check()?;
        if !self.resync.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let failed = self.path.join(SYNC_FAILED);
        if self.storage.exists(&failed)
            && self
                .storage
                .rename(&failed, &self.path.join(SYNC_OK))
                .is_ok()
        {
            self.sync_dir(&self.path)?;
        }
        Ok(())
    }

    /// Runs an fsync-like call; its failure poisons the directory and leaves the
    /// [`SYNC_FAILED`] file (best effort: a directory that fails every call takes none).
    pub(crate) fn sync(
        &self,
        op: &'static str,
        path: &Path,
        call: impl FnOnce() -> io::Result<()>,
    ) -> Result<()> {
        self.check()?;
        call().map_err(|e| {
            self.sync_failed.store(true, Ordering::Release);
            self.poison();
            let failed = self.path.join(SYNC_FAILED);
            if self
                .storage
                .rename(&self.path.join(SYNC_OK), &failed)
                .is_err()
            {
                let _ = self.storage.open(&failed, OpenMode::Create);
            }
            Error::io(op, path, e)
        })
    }

    /// fsyncs a directory inside this one (or itself).
    pub(crate) fn sync_dir(&self, path: &Path) -> Result<()> {
        self.sync("fsync directory", path, || self.storage.sync_dir(path))
    }
}

/// The outcomes of jobs run on other threads, one slot each, and a wait for all of them.
pub(crate) struct Completion {
    results: parking_lot::Mutex<(usize, Vec<Option<Result<()>>>)>,
    done: parking_lot::Condvar,
}

impl Completion {
    /// Room for `jobs` results.
    pub(crate) fn new(jobs: usize) -> Completion {
        Completion {
            results: parking_lot::Mutex::new((jobs, (0..jobs).map(|_| None).collect())),
            done: parking_lot::Condvar::new(),
        }
    }

    /// Records job `slot`'s result.
    pub(crate) fn finish(&self, slot: usize, result: Result<()>) {
        let mut results = self.results.lock();
        if results.1[slot].replace(result).is_none() {
            results.0 -= 1;
        }
        self.done.notify_all();
    }

    /// Waits until every job finished or `timeout` passed; each slot's result, `None` for a
    /// job still running.
    pub(crate) fn wait_for(&self, timeout: std::time::Duration) -> Vec<Option<Result<()>>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut results = self.results.lock();
        while results.0 > 0 {
            if self.done.wait_until(&mut results, deadline).timed_out() {
                break;
            }
        }
        results.1.iter_mut().map(Option::take).collect()
    }
}
