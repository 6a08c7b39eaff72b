//! Memory mappings of segment and index files, and a cache prefetch hint for reading them:
//! the only module with `unsafe` code.
//!
//! A [`MappedFile`] is a shared mapping of a file with a *published* length. Its invariants
//! make every access sound (docs/SAFETY.md says why in full):
//! - bytes below the published length are never written again, so a `&[u8]` or `Bytes`
//!   view of them stays valid and unchanged for as long as it lives;
//! - the only writer (one per file, serialised by the partition lock) writes at or above
//!   the published length, and only inside the file's allocated length, so it never races a
//!   reader and never faults a page beyond the end of the file (no SIGBUS);
//! - the published length only grows; shrinking data means writing a new file (see
//!   `segment::Segment::truncate_to`), never rewriting a mapped one;
//! - other processes are kept out by the directory's `LOCK`.
#![expect(
    unsafe_code,
    reason = "mapping files is inherently unsafe; the invariants above make it sound"
)]

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

/// Asks the CPU to start loading the cache line holding `address` into its caches, without
/// waiting for it: a hint with no other effect, so `address` may be anything. The record
/// iterator uses it to fetch the next batch of a read (the bytes after the one it walks)
/// while it walks, so that the next batch's CRC pass finds it in cache.
#[inline(always)]
#[allow(
    clippy::inline_always,
    reason = "one instruction on the read fast path; a call would cost more than it saves"
)]
pub(crate) fn prefetch(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and never faults, whatever the
    // address (Intel SDM, PREFETCHh); SSE, which it needs, is part of every x86_64 CPU.
    // (`unused_unsafe`: the standard library may make the intrinsic safe to call.)
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Asks the CPU to fetch the cache line holding `address` for writing (`PREFETCHW`): a
/// hint with no other effect, so `address` may be anything. A store into a line another
/// core last read must first take it back from that core; without the hint the store waits
/// in the store buffer, and the next atomic operation waits for it. The batch builder uses
/// it ahead of its writes, since a producer's buffers are last read by its sender thread,
/// on another core. A no-op where the CPU lacks the instruction.
#[inline(always)]
#[allow(
    clippy::inline_always,
    reason = "an instruction or two on the producer's send path; a call would cost more"
)]
pub(crate) fn prefetch_write(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    if has_prefetchw() {
        // SAFETY: PREFETCHW reads and writes nothing architecturally and never faults,
        // whatever the address (Intel SDM, PREFETCHW); the CPU has it (checked above).
        unsafe {
            std::arch::asm!(
                "prefetchw [{0}]",
                in(reg) address,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Whether the CPU has `PREFETCHW` (CPUID leaf `0x8000_0001`, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: CPUID is available on every x86_64 CPU, and the extended leaf is read only
        // when the highest extended leaf reported covers it.
        #[allow(unused_unsafe)]
        unsafe {
            use std::arch::x86_64::__cpuid;
            __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
        }
    })
}

/// A shared mapping of a file with a published length.
#[derive(Debug)]
pub struct MappedFile {
    /// `None` when the capacity is zero (mmap refuses empty mappings).
    raw: Option<MmapRaw>,
    capacity: usize,
    writable: bool,
    published: AtomicUsize,
}

impl MappedFile {
    /// Maps `capacity` bytes of `file` for reading and writing; `published` bytes are
    /// already valid. The mapping may extend beyond the file's end: those pages must be
    /// allocated before they are written (the caller's `allocate`), and are never read.
    pub fn writable(file: &File, capacity: usize, published: usize) -> io::Result<MappedFile> {
        Self::map(file, capacity, published, true)
    }

    /// Maps the first `len` bytes of `file` read-only; all of them are published.
    pub fn read_only(file: &File, len: usize) -> io::Result<MappedFile> {
        Self::map(file, len, len, false)
    }

    fn map(
        file: &File,
        capacity: usize,
        published: usize,
        writable: bool,
    ) -> io::Result<MappedFile> {
        assert!(published <= capacity, "published beyond the mapping");
        let raw = if capacity == 0 {
            None
        } else {
            let mut options = MmapOptions::new();
            options.len(capacity);
            Some(if writable {
                options.map_raw(file)?
            } else {
                options.map_raw_read_only(file)?
            })
        };
        Ok(MappedFile {
            raw,
            capacity,
            writable,
            published: AtomicUsize::new(published),
        })
    }

    /// Bytes that may be written at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes readers may see.
    pub fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Copies `data` to `position`, which must be at or above the published length.
    ///
    /// # Panics
    /// On a read-only mapping, below the published length or beyond the capacity: each is a
    /// broken invariant of the caller, never a property of data read from disk.
    pub fn write(&self, position: usize, data: &[u8]) {
        assert!(self.writable, "write to a read-only mapping");
        assert!(
            position >= self.published() && position + data.len() <= self.capacity,
            "mapped write outside [published, capacity)"
        );
        if data.is_empty() {
            return;
        }
        let Some(raw) = &self.raw else {
            unreachable!("a non-empty write fits only a non-empty mapping")
        };
        // SAFETY: the range is inside the mapping (checked above) and above the published
        // length, which no reader touches; the single writer is serialised by its caller's
        // lock, and `data` cannot overlap the mapping's unpublished region because no
        // reference to that region is ever handed out.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                raw.as_mut_ptr().add(position),
                data.len(),
            );
        }
    }

    /// Faults in the pages of `[start, end)` for writing, ahead of the writer (Linux
    /// `MADV_POPULATE_WRITE`), so its stores take no page faults. Contents do not change.
    /// The range must lie within the file's allocated length; failures (an old kernel, a file
    /// trimmed meanwhile) are ignored, as this is only a hint.
    pub fn prefault(&self, start: usize, end: usize) {
        const PAGE: usize = 4096;
        let end = end.min(self.capacity);
        let start = start & !(PAGE - 1);
        let (true, Some(raw)) = (self.writable && start < end, &self.raw) else {
            return;
        };
        #[cfg(target_os = "linux")]
        // SAFETY: the range is inside the mapping; MADV_POPULATE_WRITE only fills page tables
        // as write faults would, without changing any byte, and returns an error (EFAULT)
        // instead of raising SIGBUS where the file does not reach.
        unsafe {
            let _ = rustix::mm::madvise(
                raw.as_mut_ptr().add(start).cast(),
                end - start,
                rustix::mm::Advice::LinuxPopulateWrite,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = raw;
    }

    /// Makes `[0, end)` visible to readers. `end` never moves backwards.
    ///
    /// # Panics
    /// When `end` is below the published length or beyond the capacity.
    pub fn publish(&self, end: usize) {
        assert!(end <= self.capacity, "publish beyond the mapping");
        let previous = self.published.swap(end, Ordering::AcqRel);
        assert!(previous <= end, "published length moved backwards");
    }

    /// The published bytes `[position, position + len)`.
    ///
    /// # Panics
    /// When the range reaches beyond the published length.
    pub fn slice(&self, position: usize, len: usize) -> &[u8] {
        assert!(
            position
                .checked_add(len)
                .is_some_and(|end| end <= self.published()),
            "read beyond the published length"
        );
        match &self.raw {
            None => &[],
            // SAFETY: the range is inside the published prefix, which is mapped, backed by
            // the file (it was written through this mapping or existed when it was made),
            // and never written again while `self` lives (module invariants).
            Some(raw) => unsafe { std::slice::from_raw_parts(raw.as_ptr().add(position), len) },
        }
    }

    /// A zero-copy `Bytes` view of published bytes; it keeps the mapping alive.
    ///
    /// # Panics
    /// When the range reaches beyond the published length.
    pub fn view(self: &Arc<Self>, position: usize, len: usize) -> Bytes {
        // Check now, so the owner's `as_ref` cannot fail later.
        let _ = self.slice(position, len);
        Bytes::from_owner(View {
            map: Arc::clone(self),
            position,
            len,
        })
    }
}

/// Owner of a `Bytes` view: the mapping plus the published range it shows.
struct View {
    map: Arc<MappedFile>,
    position: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.map.slice(self.position, self.len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn published_bytes_are_visible_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(4096).unwrap();
        let map = Arc::new(MappedFile::writable(&file, 1 << 20, 0).unwrap());
        map.write(0, b"hello");
        map.publish(5);
        let view = map.view(0, 5);
        map.write(5, b" world");
        map.publish(11);
        assert_eq!(&view[..], b"hello");
        assert_eq!(map.slice(0, 11), b"hello world");
        drop(map);
        // The view keeps the mapping alive.
        assert_eq!(&view[..], b"hello");
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn writing_below_published_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(4096).unwrap();
        let map = MappedFile::writable(&file, 4096, 0).unwrap();
        map.write(0, b"abc");
        map.publish(3);
        map.write(1, b"x");
    }
}
