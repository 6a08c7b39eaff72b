//! The storage every log talks to: the configured one, with calls that fail with `EINTR`
//! (a signal arrived before the call did anything) made again. POSIX leaves the file as it
//! was then, so trying again is the whole remedy; `EINTR` never reaches the log's error
//! handling, where it would take a directory offline. A call interrupted
//! [`MAX_ATTEMPTS`] times in a row fails with an error that is no longer `Interrupted`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{LockGuard, MappedFile, OpenMode, Storage, StorageFile};

/// Attempts of one call before an interruption is reported.
pub(crate) const MAX_ATTEMPTS: usize = 64;

/// `call`, made again while it fails with `ErrorKind::Interrupted`.
fn again<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    for _ in 1..MAX_ATTEMPTS {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
    call().map_err(|e| {
        if e.kind() == io::ErrorKind::Interrupted {
            io::Error::other(format!("interrupted {MAX_ATTEMPTS} times in a row: {e}"))
        } else {
            e
        }
    })
}

/// A [`Storage`] that makes interrupted calls again (see the module doc).
#[derive(Debug)]
pub(crate) struct Retrying(pub(crate) Arc<dyn Storage>);

#[derive(Debug)]
struct RetryingFile(Arc<dyn StorageFile>);

impl Storage for Retrying {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        again(|| self.0.create_dir_all(path))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let file = again(|| self.0.open(path, mode))?;
        Ok(Arc::new(RetryingFile(file)))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        again(|| self.0.list_dir(path))
    }

    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        again(|| self.0.rename(from, to))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        again(|| self.0.remove_file(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        again(|| self.0.remove_dir_all(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        again(|| self.0.sync_dir(path))
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn LockGuard>> {
        again(|| self.0.lock(dir))
    }
}

impl StorageFile for RetryingFile {
    fn len(&self) -> io::Result<u64> {
        again(|| self.0.len())
    }

    fn modified(&self) -> io::Result<Option<std::time::SystemTime>> {
        again(|| self.0.modified())
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        again(|| self.0.read_at(buf, position))
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<usize> {
        again(|| self.0.write_at(buf, position))
    }

    fn write_vectored_at(&self, bufs: &[io::IoSlice<'_>], position: u64) -> io::Result<usize> {
        again(|| self.0.write_vectored_at(bufs, position))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        again(|| self.0.set_len(len))
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        again(|| self.0.allocate(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        again(|| self.0.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        again(|| self.0.sync_all())
    }

    fn map_writable(&self, capacity: usize, published: usize) -> io::Result<MappedFile> {
        again(|| self.0.map_writable(capacity, published))
    }

    fn map_read_only(&self, len: usize) -> io::Result<MappedFile> {
        again(|| self.0.map_read_only(len))
    }

    fn write_mapped(&self, map: &MappedFile, position: usize, data: &[u8]) -> io::Result<()> {
        again(|| self.0.write_mapped(map, position, data))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;

    use super::*;

    #[test]
    fn an_interrupted_call_is_made_again_then_reported_past_the_bound() {
        let calls = Cell::new(0);
        let interrupted_twice = again(|| {
            calls.set(calls.get() + 1);
            if calls.get() <= 2 {
                Err(io::Error::from(io::ErrorKind::Interrupted))
            } else {
                Ok(7)
            }
        });
        assert_eq!((interrupted_twice.unwrap(), calls.get()), (7, 3));

        calls.set(0);
        let always = again(|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(io::Error::from(io::ErrorKind::Interrupted))
        });
        let error = always.unwrap_err();
        assert_eq!(calls.get(), MAX_ATTEMPTS);
        assert_ne!(error.kind(), io::ErrorKind::Interrupted);

        calls.set(0);
        let other = again(|| -> io::Result<()> {
            calls.set(calls.get() + 1);
            Err(io::Error::from(io::ErrorKind::NotFound))
        });
        assert_eq!(
            (other.unwrap_err().kind(), calls.get()),
            (io::ErrorKind::NotFound, 1)
        );
    }
}
