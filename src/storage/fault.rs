//! A storage that fails chosen calls: the fault-injection seam for tests (`SQLite`'s countdown
//! loop). Every mutating call (write, allocate, `set_len`, fsync, rename, remove) is counted;
//! the n-th one — or every one from the n-th on — fails the way the plan says.

use std::io;
use std::path::Path;
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
    log: Mutex<Vec<(u64, OpKind)>>,
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
                log: Mutex::new(Vec::new()),
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

    /// Removes the plan: later calls succeed.
    pub fn heal(&self) {
        *self.shared.plan.lock() = None;
    }

    /// Counted calls so far.
    pub fn ops(&self) -> u64 {
        self.shared.ops.load(Ordering::SeqCst)
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
    /// Counts a call and says whether (and how) it fails.
    fn tick(&self, kind: OpKind) -> Option<FaultKind> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst) + 1;
        self.log.lock().push((n, kind));
        let plan = (*self.plan.lock())?;
        let hit = n == plan.at || (plan.persistent && n > plan.at);
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
            Some(plan.kind)
        } else {
            None
        }
    }

    fn check(&self, kind: OpKind) -> io::Result<()> {
        match self.tick(kind) {
            None => Ok(()),
            Some(fault) => Err(error(fault)),
        }
    }
}

fn error(fault: FaultKind) -> io::Error {
    match fault {
        FaultKind::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        FaultKind::Eio | FaultKind::ShortWrite => io::Error::from_raw_os_error(libc::EIO),
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn StorageFile>,
    shared: Arc<Shared>,
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.inner.create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let inner = self.shared.inner.open(path, mode)?;
        Ok(Arc::new(FaultFile {
            inner,
            shared: Arc::clone(&self.shared),
        }))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.shared.inner.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.inner.exists(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Rename)?;
        self.shared.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Remove)?;
        self.shared.inner.remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Remove)?;
        self.shared.inner.remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.shared.check(OpKind::Sync)?;
        self.shared.inner.sync_dir(path)
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.shared.inner.lock(dir)
    }
}

impl StorageFile for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        match self.shared.tick(OpKind::Write) {
            None => self.inner.write_at(buf, position),
            Some(FaultKind::ShortWrite) if buf.len() > 1 => {
                let half = buf.len() / 2;
                self.inner.write_at(&buf[..half], position)
            }
            Some(fault) => Err(error(fault)),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.check(OpKind::Resize)?;
        self.inner.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.shared.check(OpKind::Resize)?;
        self.inner.allocate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.shared.check(OpKind::Sync)?;
        self.inner.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.shared.check(OpKind::Sync)?;
        self.inner.sync_all()
    }

    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile> {
        self.inner.map_writable(capacity, published)
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedFile> {
        self.inner.map_read_only(len)
    }

    fn write_mapped(&self, map: &MappedFile, position: usize, data: &[u8]) -> io::Result<()> {
        match self.shared.tick(OpKind::Write) {
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
