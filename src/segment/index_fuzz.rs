//! The `index_lookup` fuzz oracle (`crate::testing::fuzz_index_lookup`): a sealed segment of
//! valid batches whose offset and time indexes are arbitrary bytes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Segment;
use super::index::{Index, IndexKind};
use crate::codec::BatchBuilder;
use crate::storage::{OsStorage, StorageDir};

/// Offset of the segment's first record: lookups below it are asked too.
const BASE: u64 = 100;

/// Numbers the oracle's scratch directories within the process.
static RUN: AtomicU64 = AtomicU64::new(0);

/// Removes the scratch directory however the oracle ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A batch of the segment: where it starts and its offsets.
struct Written {
    position: usize,
    base: u64,
    last: u64,
}

/// Input: a shape byte (batch count, records per batch), a split byte, then the offset
/// index's bytes and the time index's (each cut to whole entries). An index the open would
/// trust (it passes `sanity_check`) may mislead a lookup only into `Corruption`: an offset
/// lookup answers the batch a scan of the log finds, a timestamp search a record of the log
/// at or after the timestamp (Kafka trusts its time index for which one), and `None` only
/// when no record is that late. Nothing panics.
pub(crate) fn index_lookup(data: &[u8]) {
    let [shape, split, rest @ ..] = data else {
        return;
    };
    let (offset_bytes, time_bytes) = rest.split_at((usize::from(*split) * 8).min(rest.len()));
    let offset_bytes = &offset_bytes[..offset_bytes.len() / 8 * 8];
    let time_bytes = &time_bytes[..time_bytes.len() / 12 * 12];

    // Timestamps rise with the offset: 1000 + 10 per record.
    let timestamp = |offset: u64| 1_000 + 10 * (offset - BASE) as i64;
    let mut log = Vec::new();
    let mut written = Vec::new();
    let mut next = BASE;
    for b in 0..=usize::from(shape & 7) {
        let count = (usize::from(shape >> 3) + b) % 3 + 1;
        let mut builder = BatchBuilder::new();
        for r in 0..count as u64 {
            builder.push(timestamp(next + r), None, Some(&[7u8; 20]), &[]);
        }
        let mut batch = builder.finish_vec().expect("records were pushed");
        batch[..8].copy_from_slice(&(next as i64).to_be_bytes());
        written.push(Written {
            position: log.len(),
            base: next,
            last: next + count as u64 - 1,
        });
        log.extend_from_slice(&batch);
        next += count as u64;
    }

    let root = std::env::temp_dir().join(format!(
        "tarnlog-index-fuzz-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _scratch = Scratch(root.clone());
    std::fs::create_dir_all(&root).expect("scratch directory");
    let [log_path, index_path, time_path] = Segment::paths(&root, BASE);
    std::fs::write(&log_path, &log).expect("scratch log");
    std::fs::write(&index_path, offset_bytes).expect("scratch index");
    std::fs::write(&time_path, time_bytes).expect("scratch time index");
    let dir = StorageDir::open(OsStorage::shared(), &root).expect("scratch storage directory");
    let max_relative = (next - 1 - BASE) as u32;
    let sane = |path: PathBuf, kind| {
        let index = Index::open_sealed(&dir, path, kind).ok()??;
        index.sanity_check(log.len() as u64, max_relative).ok()?;
        Some(index)
    };
    // An index that fails the check is rebuilt by the open: nothing to look up through.
    let (Some(index), Some(time_index)) = (
        sane(index_path, IndexKind::Offset),
        sane(time_path, IndexKind::Time),
    ) else {
        return;
    };
    let segment =
        Segment::open_sealed(&dir, &root, BASE, index, time_index).expect("the segment opens");

    for offset in BASE - 1..=next + 1 {
        let expected = written
            .iter()
            .find(|w| w.last >= offset)
            .map(|w| (w.position, w.base));
        match segment.translate_offset(offset) {
            Ok(found) => {
                let found = found.map(|(position, h)| (position, h.base_offset as u64));
                assert_eq!(found, expected, "offset {offset}");
            }
            Err(error) => assert!(error.is_corruption(), "offset {offset}: {error}"),
        }
    }
    for target in (0..=(next - BASE) as i64 * 10 + 1_010).step_by(5) {
        let latest = timestamp(next - 1);
        match segment.find_offset_by_timestamp(target, BASE) {
            Ok(Some(found)) => {
                assert!(
                    (BASE..next).contains(&found.offset)
                        && found.timestamp == timestamp(found.offset)
                        && found.timestamp >= target,
                    "timestamp {target}: {found:?}"
                );
            }
            Ok(None) => assert!(latest < target, "timestamp {target}: none found"),
            Err(error) => assert!(error.is_corruption(), "timestamp {target}: {error}"),
        }
    }
}
