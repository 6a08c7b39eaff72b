//! Small files replaced atomically: tarnlog's `meta` and its checkpoints.
//!
//! Layout (big-endian): `magic [8] | version u32 | body_len u32 | crc32 u32 | body`, where
//! the CRC (IEEE, `crc32fast`) covers version, `body_len` and body. Replacement order:
//! write `<name>.tmp`, fsync it, rename over `<name>`, fsync the directory. A crash leaves
//! either the old file or the new one, never a mix.

use std::path::{Component, Path};

use super::{OpenMode, StorageDir, read_exact_at, write_all_at};
use crate::error::{Error, Location, Result};

const HEADER: usize = 20;
/// Bodies larger than this are refused before allocating (bounds a corrupt length).
const MAX_BODY: usize = 64 << 20;

/// Atomically replaces `dir/sub/name` with a framed `body`. `sub` is relative to `dir`, or
/// a path under it (an absolute one, as `dir`'s own path is absolute, replaces it in the
/// join).
pub(crate) fn write_framed(
    dir: &StorageDir,
    sub: &Path,
    name: &str,
    magic: [u8; 8],
    version: u32,
    body: &[u8],
) -> Result<()> {
    dir.check()?;
    let folder = dir.path().join(sub);
    let climbs = sub.components().any(|c| c == Component::ParentDir);
    if climbs || !folder.starts_with(dir.path()) {
        let outside = std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not under the storage directory {}", dir.path().display()),
        );
        return Err(Error::io("create", &folder, outside));
    }
    let target = folder.join(name);
    let temp = folder.join(format!("{name}.tmp"));
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[8..16]);
    crc.update(body);
    bytes.extend_from_slice(&crc.finalize().to_be_bytes());
    bytes.extend_from_slice(body);

    let storage = dir.storage();
    let file = storage
        .open(&temp, OpenMode::Truncate)
        .map_err(|e| Error::io("create", &temp, e))?;
    write_all_at(file.as_ref(), &bytes, 0).map_err(|e| Error::io("write", &temp, e))?;
    dir.sync("fsync", &temp, || file.sync_all())?;
    drop(file);
    // Again: a write that waited long on a hung disk may belong to a log that was closed
    // meanwhile (see `StorageDir::drain_and_unlock`); its file must not replace a newer one.
    dir.check()?;
    storage
        .rename(&temp, &target)
        .map_err(|e| Error::io("rename", &target, e))?;
    dir.sync_dir(&folder)
}

/// Reads a framed file: `Ok(None)` when it does not exist, `Corruption` when its frame,
/// magic, version or CRC is wrong. Returns `(version, body)`.
pub(crate) fn read_framed(
    dir: &StorageDir,
    path: &Path,
    magic: [u8; 8],
    max_version: u32,
) -> Result<Option<(u32, Vec<u8>)>> {
    let storage = dir.storage();
    if !storage.exists(path) {
        return Ok(None);
    }
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))? as usize;
    let corrupt = |position: u64, what: &'static str, detail: String| Error::Corruption {
        location: Location::File {
            path: path.to_path_buf(),
            position,
        },
        what,
        detail,
    };
    if !(HEADER..=HEADER + MAX_BODY).contains(&len) {
        return Err(corrupt(0, "file length", format!("{len} bytes")));
    }
    let mut bytes = vec![0u8; len];
    read_exact_at(file.as_ref(), &mut bytes, 0).map_err(|e| Error::io("read", path, e))?;
    if bytes[..8] != magic {
        return Err(corrupt(0, "file magic", format!("{:02x?}", &bytes[..8])));
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (version, body_len, stored) = (word(8), word(12) as usize, word(16));
    if body_len != len - HEADER {
        return Err(corrupt(
            12,
            "body length",
            format!("{body_len}, file holds {}", len - HEADER),
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[8..16]);
    crc.update(&bytes[HEADER..]);
    let computed = crc.finalize();
    if computed != stored {
        return Err(corrupt(
            16,
            "file CRC",
            format!("stored {stored:08x}, computed {computed:08x}"),
        ));
    }
    if version == 0 || version > max_version {
        return Err(corrupt(
            8,
            "file version",
            format!("{version}, known up to {max_version}"),
        ));
    }
    bytes.drain(..HEADER);
    Ok(Some((version, bytes)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::storage::OsStorage;

    #[test]
    fn a_file_is_written_only_under_its_storage_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = StorageDir::open(OsStorage::shared(), &root.path().join("d")).unwrap();
        std::fs::create_dir_all(root.path().join("d/p-0")).unwrap();
        let magic = *b"TESTFILE";
        // Relative, and absolute under the directory: both land in `d/p-0`.
        write_framed(&dir, Path::new("p-0"), "a", magic, 1, b"one").unwrap();
        let absolute = dir.path().join("p-0");
        write_framed(&dir, &absolute, "b", magic, 1, b"two").unwrap();
        for (name, body) in [("a", &b"one"[..]), ("b", b"two")] {
            let read = read_framed(&dir, &absolute.join(name), magic, 1).unwrap();
            assert_eq!(read.map(|(_, b)| b), Some(body.to_vec()));
        }
        // Anywhere else is refused, and nothing is written there.
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        for sub in [elsewhere.clone(), PathBuf::from("../elsewhere")] {
            let error = write_framed(&dir, &sub, "c", magic, 1, b"x").unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("not under the storage directory"),
                "{error}"
            );
        }
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
