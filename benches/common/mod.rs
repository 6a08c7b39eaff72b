//! Helpers shared by the benchmarks.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::PathBuf;

/// A fresh directory on tmpfs when there is one (no writeback noise), else in /tmp.
pub fn scratch() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}
