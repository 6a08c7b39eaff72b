//! `CrashStorage`: a storage over real files that also keeps what a power loss would leave
//! of them (the reliability plan's §(a2), after `SQLite`'s test6.c and redb's crash backend).
//!
//! Every call goes to the wrapped storage (the real one, [`OsStorage`], or a fault-injecting
//! wrapper of it) and is also entered in a model:
//! - per file (inode): its *durable* sectors and length, and the sectors written since its
//!   last sync (their live bytes are read back from the file when needed);
//! - per directory: its *durable* entries and the entry operations (creations, renames,
//!   removals) made since its last `sync_dir`.
//!
//! The rules: a file's bytes become durable at its `sync_data`/`sync_all`; its length at
//! `sync_all`, and also at `sync_data` unless [`SizeRule::SyncAll`] (POSIX lets
//! `fdatasync` skip metadata not needed to read the data; Linux file systems persist the
//! size); a directory's entries at `sync_dir` of that directory.
//!
//! At a crash point (the n-th mutating call, before it is made) a callback can write
//! post-crash images. In each, every unsynced change is applied or dropped: a directory
//! keeps a prefix of its unsynced entry operations; a file keeps its durable or its live
//! length; each 4 KiB page written since the last sync keeps its old bytes, takes the new
//! ones, or is torn — each 512-byte sector of it old, new, or *garbled* (the bytes the
//! write changed replaced by noise; bytes it did not change keep their value, as on a disk
//! that writes a sector whole or not at all). Synced bytes are never touched.
//!
//! Every call is made under one lock, so the model sees the calls in one order. A sync
//! reads the sectors it covers before it is made and records them only if it succeeds; a
//! failed one leaves them *lost* (Linux marks the pages clean after a failed writeback,
//! so no later sync writes them): an image keeps their old or new bytes at random until
//! they are written again. A failed write marks every sector it could have touched.
//! `remove_dir_all` removes a directory's entries one by one before the directory.
//!
//! What the model does not cover (assumptions and limits):
//! - a directory's unsynced entry operations survive as a prefix, in order (ext4 and xfs
//!   give that; POSIX does not promise it);
//! - a torn sector garbles only the bytes the write changed (a disk that writes a sector
//!   whole or not at all);
//! - only the last version of a sector or length since the last sync is offered as the
//!   new one, not the ones between;
//! - a rename across directories is two independent entry operations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use tarnlog::storage::{LockGuard, MappedFile, OpenMode, OsStorage, Storage, StorageFile};

use crate::common::Rng;

pub const SECTOR: u64 = 512;
const SECTORS_PER_PAGE: u64 = 8;

/// When a file's length becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// At `sync_data` and `sync_all` (Linux file systems: `fdatasync` persists the size
    /// needed to read the data).
    AnySync,
    /// Only at `sync_all` (the strictest reading of POSIX; the redb growth bug).
    SyncAll,
}

/// What an image keeps of the unsynced changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: only what was synced.
    Synced,
    /// Everything (what a process crash leaves).
    All,
    /// A random choice for each change.
    Random,
}

type Ino = usize;
type DirId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(Ino),
    Dir(DirId),
}

#[derive(Debug, Clone)]
enum DirOp {
    Put(String, Node),
    Remove(String),
    Rename(String, String),
}

fn apply(entries: &mut BTreeMap<String, Node>, op: &DirOp) {
    match op {
        DirOp::Put(name, node) => {
            entries.insert(name.clone(), *node);
        }
        DirOp::Remove(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to) => {
            if let Some(node) = entries.remove(from) {
                entries.insert(to.clone(), node);
            }
        }
    }
}

#[derive(Debug, Default)]
struct DirState {
    durable: BTreeMap<String, Node>,
    live: BTreeMap<String, Node>,
    /// Applied to `durable` in order, they give `live`.
    unsynced: Vec<DirOp>,
}

impl DirState {
    fn change(&mut self, op: DirOp) {
        apply(&mut self.live, &op);
        self.unsynced.push(op);
    }
}

struct Inode {
    /// A descriptor of the real file: its live bytes stay readable after it is unlinked.
    handle: Arc<dyn StorageFile>,
    durable: BTreeMap<u64, Box<[u8]>>,
    durable_len: u64,
    /// Sectors written (or cut off) since the last sync.
    dirty: BTreeSet<u64>,
    /// Sectors a failed sync may have dropped: Linux marks the pages clean after a failed
    /// writeback, so no later sync writes them (fsyncgate). Until written again, an image
    /// keeps their old or new bytes at random, whatever later syncs did.
    lost: BTreeSet<u64>,
}

impl fmt::Debug for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inode")
            .field("durable_sectors", &self.durable.len())
            .field("durable_len", &self.durable_len)
            .field("dirty", &self.dirty.len())
            .field("lost", &self.lost.len())
            .finish_non_exhaustive()
    }
}

impl Inode {
    fn live_len(&self) -> io::Result<u64> {
        self.handle.len()
    }

    /// The live bytes of sector `s` (zeros past the end).
    fn live_sector(&self, s: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; SECTOR as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .handle
                .read_at(&mut buf[done..], s * SECTOR + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(buf)
    }

    /// The durable bytes of sector `s` (zeros where nothing was synced; an image cuts
    /// what lies past the length it keeps).
    fn durable_sector(&self, s: u64) -> Vec<u8> {
        match self.durable.get(&s) {
            Some(bytes) => bytes.to_vec(),
            None => vec![0u8; SECTOR as usize],
        }
    }

    fn mark(&mut self, position: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = position / SECTOR;
        let last = (position + len - 1) / SECTOR;
        self.dirty.extend(first..=last);
        self.lost.retain(|s| !(first..=last).contains(s));
    }

    /// A failed sync: what it was to write may never be written.
    fn sync_failed(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        self.lost.extend(dirty);
    }

    /// The length set to `len`: when that cuts, the sectors cut off (and the one cut
    /// inside) differ from their durable bytes until the next sync.
    fn cut_to(&mut self, len: u64) {
        let first = len / SECTOR;
        let cut: Vec<u64> = self.durable.range(first..).map(|(s, _)| *s).collect();
        self.dirty.extend(cut);
        if !len.is_multiple_of(SECTOR) {
            self.dirty.insert(first);
        }
    }

    /// Reads what a sync would make durable (before the sync is made).
    fn pending(&self) -> io::Result<Vec<(u64, Vec<u8>)>> {
        self.dirty
            .iter()
            .map(|&s| Ok((s, self.live_sector(s)?)))
            .collect()
    }

    /// Records a successful sync of the bytes read by `pending`.
    fn synced(&mut self, pending: Vec<(u64, Vec<u8>)>, len: Option<u64>) {
        for (s, bytes) in pending {
            if bytes.iter().all(|&b| b == 0) {
                self.durable.remove(&s);
            } else {
                self.durable.insert(s, bytes.into_boxed_slice());
            }
        }
        self.dirty.clear();
        if let Some(len) = len {
            self.durable_len = len;
        }
    }
}

#[derive(Debug)]
struct Model {
    roots: Vec<(PathBuf, DirId)>,
    dirs: Vec<DirState>,
    inodes: Vec<Inode>,
    /// Mutating calls made so far.
    ops: u64,
    size_rule: SizeRule,
}

/// The model's view at a crash point, given to the callback.
pub struct Crash<'a> {
    model: &'a Model,
    /// The number of the call about to be made (counting from 1).
    pub op: u64,
    /// Asked for with [`CrashStorage::crash_now`] rather than met before a call.
    pub forced: bool,
}

type Callback = Box<dyn FnMut(&Crash<'_>) + Send>;

struct Shared {
    /// The storage the calls go to (the real one, or a fault-injecting wrapper of it).
    inner: Arc<dyn Storage>,
    model: Mutex<Model>,
    /// Called before each mutating call (and by [`CrashStorage::crash_now`]).
    on_crash: Mutex<Option<Callback>>,
}

/// A [`Storage`] over real files that models what a power loss keeps.
#[derive(Clone)]
pub struct CrashStorage {
    shared: Arc<Shared>,
}

impl fmt::Debug for CrashStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashStorage").finish_non_exhaustive()
    }
}

impl CrashStorage {
    /// A model over the existing directories `roots`; what they hold is taken as durable.
    ///
    /// # Errors
    /// Reading the directories.
    pub fn new(roots: &[PathBuf], size_rule: SizeRule) -> io::Result<CrashStorage> {
        Self::over(Arc::new(OsStorage), roots, size_rule)
    }

    /// As [`CrashStorage::new`], with the calls going to `inner` (which must reach the
    /// real files: the model reads them back directly).
    ///
    /// # Errors
    /// Reading the directories.
    pub fn over(
        inner: Arc<dyn Storage>,
        roots: &[PathBuf],
        size_rule: SizeRule,
    ) -> io::Result<CrashStorage> {
        let mut model = Model {
            roots: Vec::new(),
            dirs: Vec::new(),
            inodes: Vec::new(),
            ops: 0,
            size_rule,
        };
        for root in roots {
            let id = model.new_dir();
            model.roots.push((std::path::absolute(root)?, id));
            model.import(id, root)?;
        }
        Ok(CrashStorage {
            shared: Arc::new(Shared {
                inner,
                model: Mutex::new(model),
                on_crash: Mutex::new(None),
            }),
        })
    }

    /// Calls `callback` before every mutating call, with the model as a crash there
    /// would find it. The callback runs under the model's lock: other calls wait.
    pub fn on_crash(&self, callback: impl FnMut(&Crash<'_>) + Send + 'static) {
        *self.shared.on_crash.lock() = Some(Box::new(callback));
    }

    /// Stops calling the callback.
    pub fn clear_callback(&self) {
        *self.shared.on_crash.lock() = None;
    }

    /// Calls the callback now (a crash after the last call).
    pub fn crash_now(&self) {
        let model = self.shared.model.lock();
        let op = model.ops + 1;
        self.shared.call(&model, op, true);
    }
}

impl Shared {
    fn call(&self, model: &Model, op: u64, forced: bool) {
        if let Some(callback) = self.on_crash.lock().as_mut() {
            callback(&Crash { model, op, forced });
        }
    }

    /// Takes the model for a mutating call: counts it and first offers the crash point.
    fn mutate(&self) -> MutexGuard<'_, Model> {
        let mut model = self.model.lock();
        model.ops += 1;
        let op = model.ops;
        self.call(&model, op, false);
        model
    }
}

impl Model {
    /// The root directory `path` lies under, and the names below it.
    fn split(&self, path: &Path) -> Option<(DirId, Vec<String>)> {
        let path = std::path::absolute(path).ok()?;
        let (root, dir) = self.roots.iter().find(|(r, _)| path.starts_with(r))?;
        let names = path
            .strip_prefix(root)
            .ok()?
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        Some((*dir, names))
    }

    /// The live node at `path`, with its parent directory and name (`None` for a root, a
    /// path outside the roots, or one whose parent is missing).
    fn lookup(&self, path: &Path) -> Option<(DirId, String, Option<Node>)> {
        let (mut dir, names) = self.split(path)?;
        let (name, parents) = names.split_last()?;
        for part in parents {
            match self.dirs[dir].live.get(part) {
                Some(Node::Dir(d)) => dir = *d,
                _ => return None,
            }
        }
        let node = self.dirs[dir].live.get(name).copied();
        Some((dir, name.clone(), node))
    }

    /// Enters the directories of `path` that are missing (after `create_dir_all`).
    fn ensure_dirs(&mut self, path: &Path) {
        let Some((mut dir, names)) = self.split(path) else {
            return;
        };
        for part in names {
            dir = match self.dirs[dir].live.get(&part) {
                Some(Node::Dir(d)) => *d,
                Some(Node::File(_)) => return,
                None => {
                    let id = self.new_dir();
                    self.dirs[dir].change(DirOp::Put(part, Node::Dir(id)));
                    id
                }
            };
        }
    }

    /// The directory at `path` (a root or below one).
    fn dir_at(&self, path: &Path) -> Option<DirId> {
        let (root, names) = self.split(path)?;
        if names.is_empty() {
            return Some(root);
        }
        match self.lookup(path)? {
            (_, _, Some(Node::Dir(id))) => Some(id),
            _ => None,
        }
    }

    /// Enters what directory `path` holds as durable, under `id`.
    fn import(&mut self, id: DirId, path: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let node = if entry.file_type()?.is_dir() {
                let dir = self.new_dir();
                self.import(dir, &entry.path())?;
                Node::Dir(dir)
            } else {
                let handle = OsStorage.open(&entry.path(), OpenMode::Read)?;
                let mut inode = Inode {
                    handle,
                    durable: BTreeMap::new(),
                    durable_len: 0,
                    dirty: BTreeSet::new(),
                    lost: BTreeSet::new(),
                };
                inode.durable_len = inode.live_len()?;
                for s in 0..inode.durable_len.div_ceil(SECTOR) {
                    let bytes = inode.live_sector(s)?;
                    if bytes.iter().any(|&b| b != 0) {
                        inode.durable.insert(s, bytes.into_boxed_slice());
                    }
                }
                self.inodes.push(inode);
                Node::File(self.inodes.len() - 1)
            };
            self.dirs[id].live.insert(name.clone(), node);
            self.dirs[id].durable.insert(name, node);
        }
        Ok(())
    }

    /// The entries of directory `id` at `path` (and of every directory below it) that
    /// are gone from the disk, removed one by one as `remove_dir_all` removes them.
    fn empty_dir(&mut self, id: DirId, path: &Path) {
        let entries: Vec<(String, Node)> = self.dirs[id]
            .live
            .iter()
            .map(|(n, node)| (n.clone(), *node))
            .collect();
        for (name, node) in entries {
            let child_path = path.join(&name);
            if let Node::Dir(child) = node {
                self.empty_dir(child, &child_path);
            }
            if std::fs::symlink_metadata(&child_path).is_err() {
                self.dirs[id].change(DirOp::Remove(name));
            }
        }
    }

    fn new_dir(&mut self) -> DirId {
        self.dirs.push(DirState::default());
        self.dirs.len() - 1
    }

    fn file(&self, path: &Path) -> Option<Ino> {
        match self.lookup(path)? {
            (_, _, Some(Node::File(ino))) => Some(ino),
            _ => None,
        }
    }
}

impl Crash<'_> {
    /// Writes a post-crash image of the model's roots under `into` (one directory per
    /// root, in order, which must exist and be empty).
    ///
    /// # Errors
    /// Reading the live files or writing the image.
    pub fn write_image(&self, into: &[PathBuf], keep: Keep, rng: &mut Rng) -> io::Result<()> {
        let mut writer = ImageWriter {
            model: self.model,
            keep,
            rng,
            contents: HashMap::new(),
        };
        for ((_, root), target) in self.model.roots.iter().zip(into) {
            writer.dir(*root, target)?;
        }
        Ok(())
    }
}

/// A file's post-crash length and non-zero sectors.
type Sectors = (u64, Vec<(u64, Vec<u8>)>);
type Content = Arc<Sectors>;

struct ImageWriter<'a> {
    model: &'a Model,
    keep: Keep,
    rng: &'a mut Rng,
    contents: HashMap<Ino, Content>,
}

impl ImageWriter<'_> {
    fn dir(&mut self, id: DirId, target: &Path) -> io::Result<()> {
        let state = &self.model.dirs[id];
        let kept = match self.keep {
            Keep::Synced => 0,
            Keep::All => state.unsynced.len(),
            Keep::Random => self.rng.below(state.unsynced.len() + 1),
        };
        let mut entries = state.durable.clone();
        for op in &state.unsynced[..kept] {
            apply(&mut entries, op);
        }
        for (name, node) in entries {
            let path = target.join(&name);
            match node {
                Node::Dir(d) => {
                    std::fs::create_dir(&path)?;
                    self.dir(d, &path)?;
                }
                Node::File(ino) => {
                    let content = if let Some(c) = self.contents.get(&ino) {
                        Arc::clone(c)
                    } else {
                        let c = Arc::new(self.content(ino)?);
                        self.contents.insert(ino, Arc::clone(&c));
                        c
                    };
                    write_file(&path, &content)?;
                }
            }
        }
        Ok(())
    }

    fn content(&mut self, ino: Ino) -> io::Result<Sectors> {
        let inode = &self.model.inodes[ino];
        let live_len = inode.live_len()?;
        let len = match self.keep {
            Keep::Synced => inode.durable_len,
            Keep::All => live_len,
            Keep::Random => {
                if self.rng.below(2) == 0 {
                    live_len
                } else {
                    inode.durable_len
                }
            }
        };
        let mut sectors: BTreeMap<u64, Vec<u8>> = inode
            .durable
            .iter()
            .filter(|(s, _)| !inode.dirty.contains(s) && !inode.lost.contains(s))
            .map(|(s, b)| (*s, b.to_vec()))
            .collect();
        // The dirty (and lost) sectors, page by page: old, new, or torn sector by sector.
        let unsynced: BTreeSet<u64> = inode.dirty.union(&inode.lost).copied().collect();
        let mut page: Option<(u64, usize)> = None;
        for &s in &unsynced {
            let old = inode.durable_sector(s);
            let new = inode.live_sector(s)?;
            let this_page = s / SECTORS_PER_PAGE;
            let choice = match self.keep {
                Keep::Synced => 0,
                Keep::All => 1,
                Keep::Random => match page {
                    Some((p, c)) if p == this_page => c,
                    _ => {
                        let r = self.rng.below(100);
                        let c = if r < 45 {
                            0
                        } else if r < 90 {
                            1
                        } else {
                            2
                        };
                        page = Some((this_page, c));
                        c
                    }
                },
            };
            let bytes = match choice {
                0 => old,
                1 => new,
                _ => match self.rng.below(3) {
                    0 => old,
                    1 => new,
                    _ => {
                        let mut garbled = old;
                        for (g, n) in garbled.iter_mut().zip(&new) {
                            if *g != *n {
                                *g = self.rng.next_u64() as u8;
                            }
                        }
                        garbled
                    }
                },
            };
            sectors.insert(s, bytes);
        }
        let kept = sectors
            .into_iter()
            .filter(|(s, b)| s * SECTOR < len && b.iter().any(|&x| x != 0))
            .collect();
        Ok((len, kept))
    }
}

fn write_file(path: &Path, content: &Content) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (len, sectors) = &**content;
    let file = std::fs::File::create(path)?;
    file.set_len(*len)?;
    for (s, bytes) in sectors {
        let at = s * SECTOR;
        let n = (len - at).min(SECTOR) as usize;
        file.write_all_at(&bytes[..n], at)?;
    }
    Ok(())
}

struct ModelFile {
    inner: Arc<dyn StorageFile>,
    shared: Arc<Shared>,
    ino: Option<Ino>,
}

impl fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFile")
            .field("ino", &self.ino)
            .finish_non_exhaustive()
    }
}

impl Storage for CrashStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut model = self.shared.mutate();
        self.shared.inner.create_dir_all(path)?;
        model.ensure_dirs(path);
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let (inner, ino) = if mode == OpenMode::Read {
            let model = self.shared.model.lock();
            (self.shared.inner.open(path, mode)?, model.file(path))
        } else {
            let mut model = self.shared.mutate();
            let found = model.lookup(path);
            let inner = self.shared.inner.open(path, mode)?;
            let ino = match found {
                Some((_, _, Some(Node::File(ino)))) => {
                    if mode == OpenMode::Truncate {
                        // The same inode, cut to nothing.
                        model.inodes[ino].cut_to(0);
                    }
                    Some(ino)
                }
                Some((parent, name, None)) => {
                    model.inodes.push(Inode {
                        handle: OsStorage.open(path, OpenMode::Read)?,
                        durable: BTreeMap::new(),
                        durable_len: 0,
                        dirty: BTreeSet::new(),
                        lost: BTreeSet::new(),
                    });
                    let ino = model.inodes.len() - 1;
                    model.dirs[parent].change(DirOp::Put(name, Node::File(ino)));
                    Some(ino)
                }
                _ => None,
            };
            (inner, ino)
        };
        Ok(Arc::new(ModelFile {
            inner,
            shared: Arc::clone(&self.shared),
            ino,
        }))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.shared.inner.list_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.shared.inner.exists(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut model = self.shared.mutate();
        let source = model.lookup(from);
        let target = model.lookup(to);
        self.shared.inner.rename(from, to)?;
        if let (Some((pf, nf, Some(node))), Some((pt, nt, _))) = (source, target) {
            if pf == pt {
                model.dirs[pf].change(DirOp::Rename(nf, nt));
            } else {
                model.dirs[pt].change(DirOp::Put(nt, node));
                model.dirs[pf].change(DirOp::Remove(nf));
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut model = self.shared.mutate();
        let found = model.lookup(path);
        self.shared.inner.remove_file(path)?;
        if let Some((parent, name, Some(_))) = found {
            model.dirs[parent].change(DirOp::Remove(name));
        }
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut model = self.shared.mutate();
        let found = model.lookup(path);
        let result = self.shared.inner.remove_dir_all(path);
        // Removed child by child, each directory's entries first (a crash can leave any
        // prefix of that in each directory), then the directory itself — when the call
        // got that far.
        if let Some((parent, name, Some(Node::Dir(id)))) = found {
            model.empty_dir(id, path);
            if result.is_ok() {
                model.dirs[parent].change(DirOp::Remove(name));
            }
        }
        result
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut model = self.shared.mutate();
        self.shared.inner.sync_dir(path)?;
        let id = model.dir_at(path);
        if let Some(id) = id {
            let state = &mut model.dirs[id];
            state.durable = state.live.clone();
            state.unsynced.clear();
        }
        Ok(())
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.shared.inner.lock(dir)
    }
}

impl ModelFile {
    /// A mutating call on this file: `call` runs under the model's lock, then `then`
    /// updates the inode.
    fn mutate<T>(
        &self,
        call: impl FnOnce() -> io::Result<T>,
        then: impl FnOnce(&mut Inode, &T),
        failed: impl FnOnce(&mut Inode),
    ) -> io::Result<T> {
        let mut model = self.shared.mutate();
        let result = call();
        if let Some(ino) = self.ino {
            match &result {
                Ok(done) => then(&mut model.inodes[ino], done),
                // A failed call may have had part of its effect (a short write that then
                // failed): the sectors it could have touched are dirty.
                Err(_) => failed(&mut model.inodes[ino]),
            }
        }
        result
    }

    fn sync(&self, all: bool, call: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut model = self.shared.mutate();
        let Some(ino) = self.ino else {
            return call();
        };
        let pending = model.inodes[ino].pending()?;
        let len = model.inodes[ino].live_len()?;
        if let Err(error) = call() {
            model.inodes[ino].sync_failed();
            return Err(error);
        }
        let len = (all || model.size_rule == SizeRule::AnySync).then_some(len);
        model.inodes[ino].synced(pending, len);
        Ok(())
    }
}

impl StorageFile for ModelFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        self.mutate(
            || self.inner.write_at(buf, position),
            |inode, n| inode.mark(position, *n as u64),
            |inode| inode.mark(position, buf.len() as u64),
        )
    }

    fn write_vectored_at(&self, bufs: &[io::IoSlice<'_>], position: u64) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.mutate(
            || self.inner.write_vectored_at(bufs, position),
            |inode, n| inode.mark(position, *n as u64),
            |inode| inode.mark(position, len as u64),
        )
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mutate(
            || self.inner.set_len(len),
            |inode, ()| inode.cut_to(len),
            |inode| inode.cut_to(len),
        )
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.mutate(|| self.inner.allocate(len), |_, ()| {}, |_| {})
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync(false, || self.inner.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync(true, || self.inner.sync_all())
    }

    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile> {
        self.inner.map_writable(capacity, published)
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedFile> {
        self.inner.map_read_only(len)
    }

    fn write_mapped(&self, map: &MappedFile, position: usize, data: &[u8]) -> io::Result<()> {
        let mark = |inode: &mut Inode| inode.mark(position as u64, data.len() as u64);
        self.mutate(
            || self.inner.write_mapped(map, position, data),
            |inode, ()| mark(inode),
            mark,
        )
    }
}
