//! The real file system.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{LockGuard, MappedFile, OpenMode, Storage, StorageFile};

/// Storage on the operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

impl OsStorage {
    /// The shared instance.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(OsStorage)
    }
}

#[derive(Debug)]
struct OsFile(File);

#[derive(Debug)]
struct FileLock(File);

impl LockGuard for FileLock {}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than by closing: a child forked by another thread of the
        // process holds a copy of the descriptor until it execs, and the lock (shared by
        // the copies) would outlive this close until then.
        let _ = self.0.unlock();
    }
}

/// The error for a symbolic link met where tarnlog keeps its own files and directories.
fn link_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link; tarnlog does not follow links inside its storage directories",
            path.display()
        ),
    )
}

/// Fails with [`link_refused`] when `path` is a symbolic link (a missing path is not).
fn refuse_link(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(link_refused(path)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options that refuse to open a symbolic link (`O_NOFOLLOW`), so that no file tarnlog
/// opens, truncates or maps can lie outside its directory.
fn no_follow() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed());
    options
}

/// `options.open(path)`, with the error for a symbolic link (`ELOOP` under `O_NOFOLLOW`)
/// saying so.
fn open_no_follow(options: &OpenOptions, path: &Path) -> io::Result<File> {
    options.open(path).map_err(|e| {
        let link = || fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) && link() {
            link_refused(path)
        } else {
            e
        }
    })
}

// Symbolic links inside a storage directory are refused: a file is opened with
// `O_NOFOLLOW`, a listing fails on an entry that is a link, and a link is neither created
// over nor removed as a directory. A link would let a truncation, a recovery or a deletion
// reach files outside the directory, or two partitions share files. The storage directory
// itself may be reached through links.
impl Storage for OsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        refuse_link(path)?;
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = no_follow();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::Create => {
                options.write(true).create(true);
            }
            OpenMode::Truncate => {
                options.write(true).create(true).truncate(true);
            }
        }
        Ok(Arc::new(OsFile(open_no_follow(&options, path)?)))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_symlink() {
                return Err(link_refused(&entry.path()));
            }
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// True for a symbolic link too, even a dangling one: what is done with it next (an
    /// open, a listing) then refuses it by name instead of taking it for missing.
    fn exists(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        refuse_link(path)?;
        fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn LockGuard>> {
        let path = dir.join("LOCK");
        let file = open_no_follow(
            no_follow()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &path,
        )?;
        // flock: per open file description, so a second open in this process conflicts too.
        match file.try_lock() {
            Ok(()) => Ok(Box::new(FileLock(file))),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl StorageFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn modified(&self) -> io::Result<Option<std::time::SystemTime>> {
        self.0.metadata()?.modified().map(Some)
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.0.read_at(buf, position)
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        self.0.write_at(buf, position)
    }

    fn write_vectored_at(&self, bufs: &[io::IoSlice<'_>], position: u64) -> io::Result<usize> {
        Ok(rustix::io::pwritev(&self.0, bufs, position)?)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        allocate(&self.0, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile> {
        MappedFile::writable(&self.0, capacity, published)
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedFile> {
        MappedFile::read_only(&self.0, len)
    }
}

/// Reserves blocks up to `len` so stores through a mapping never meet a full disk.
#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let current = file.metadata()?.len();
    if len <= current {
        return Ok(());
    }
    loop {
        match rustix::fs::fallocate(
            file,
            rustix::fs::FallocateFlags::empty(),
            current,
            len - current,
        ) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            // File systems without fallocate: writing zeros also allocates, and reports
            // ENOSPC the same way.
            Err(rustix::io::Errno::OPNOTSUPP) => return zero_fill(file, current, len),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let current = file.metadata()?.len();
    if len <= current {
        return Ok(());
    }
    zero_fill(file, current, len)
}

fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = vec![0u8; CHUNK];
    let mut position = from;
    while position < to {
        let n = ((to - position) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], position)?;
        position += n as u64;
    }
    Ok(())
}
