//! The result of a read: whole record batches as one zero-copy `Bytes` slice of a segment
//! mapping, with the offsets a consumer needs next to them.

use std::path::PathBuf;

use bytes::Bytes;

use crate::codec::{self, Batch, Record};
use crate::error::Result;

/// Whole record batches read from a partition, starting with the batch that holds the
/// requested offset (so the first batch may begin before it, as in Kafka).
#[derive(Debug, Clone)]
pub struct LogRead {
    requested: u64,
    bytes: Bytes,
    segment: PathBuf,
    position: u64,
    log_start_offset: u64,
    log_end_offset: u64,
    high_watermark: u64,
}

impl LogRead {
    pub(crate) fn new(
        requested: u64,
        bytes: Bytes,
        segment: PathBuf,
        position: u64,
        log_start_offset: u64,
        log_end_offset: u64,
        high_watermark: u64,
    ) -> LogRead {
        LogRead {
            requested,
            bytes,
            segment,
            position,
            log_start_offset,
            log_end_offset,
            high_watermark,
        }
    }

    /// The offset that was asked for.
    pub fn requested_offset(&self) -> u64 {
        self.requested
    }

    /// The raw batches (Kafka `RecordBatch` v2 bytes), zero-copy.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// True when no batch was returned (the offset is at the high watermark).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The log start offset when the read was made.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// The log end offset when the read was made.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end_offset
    }

    /// The high watermark when the read was made.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// Whether the read starts at the beginning of a segment file (and holds a batch).
    pub(crate) fn starts_segment(&self) -> bool {
        self.position == 0 && !self.bytes.is_empty()
    }

    /// The batches, each checked (header, length, CRC) as it is reached; a bad one yields
    /// `Error::Corruption` located in its segment file, and iteration stops.
    pub fn batches(&self) -> Batches {
        Batches {
            rest: self.bytes.clone(),
            segment: self.segment.clone(),
            position: self.position,
            failed: false,
            check_crcs: true,
        }
    }

    /// The records at or after the requested offset, owned and zero-copy. A damaged batch
    /// or record yields `Error::Corruption` located in its segment file, then iteration stops.
    pub fn records(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        let requested = self.requested;
        let mut batches = self.batches();
        // The current batch's records, decoded together (a batch's records borrow it).
        let mut current: Option<(u64, std::vec::IntoIter<Result<Record>>)> = None;
        let mut failed = false;
        std::iter::from_fn(move || {
            while !failed {
                if let Some((position, records)) = &mut current {
                    match records.next() {
                        None => current = None,
                        Some(Ok(record)) if (record.offset as u64) < requested => {}
                        Some(Ok(record)) => return Some(Ok(record)),
                        Some(Err(error)) => {
                            failed = true;
                            return Some(Err(error.in_file(&self.segment, *position)));
                        }
                    }
                    continue;
                }
                let position = batches.position;
                match batches.next()? {
                    Ok(batch) => {
                        current = Some((position, batch.records().collect::<Vec<_>>().into_iter()));
                    }
                    Err(error) => {
                        failed = true;
                        return Some(Err(error));
                    }
                }
            }
            None
        })
    }
}

/// Iterator over the batches of a [`LogRead`].
#[derive(Debug)]
pub struct Batches {
    rest: Bytes,
    segment: PathBuf,
    position: u64,
    failed: bool,
    check_crcs: bool,
}

impl Batches {
    /// Whether each batch's CRC is checked (by default it is): without, only its header
    /// and length are (Kafka's consumer `check.crcs=false`).
    pub(crate) fn check_crcs(mut self, check: bool) -> Self {
        self.check_crcs = check;
        self
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let size = codec::peek_batch_size(&self.rest)
            .filter(|&s| s <= self.rest.len())
            .unwrap_or(self.rest.len());
        let bytes = self.rest.split_to(size);
        let max = size.max(codec::RECORD_BATCH_OVERHEAD);
        let batch = if self.check_crcs {
            Batch::new(bytes, max)
        } else {
            Batch::new_unverified(bytes, max)
        };
        match batch {
            Ok(batch) => {
                self.position += size as u64;
                Some(Ok(batch))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error.in_file(&self.segment, self.position)))
            }
        }
    }
}
