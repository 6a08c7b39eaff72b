//! A partition's followers inside one process (DESIGN.md §5): each keeps a byte-for-byte
//! copy of the leader's batches in another storage directory.
//!
//! Design: the leader's appender copies each batch to every in-sync follower in the same
//! call, in offset order (one appender at a time per replicated partition). No thread hop,
//! so an `acks=All` append returns once every in-sync replica holds it under the topic's
//! fsync policy; the cost is that a replicated partition's appends are serialised (no group
//! commit across appenders). The high watermark is the smallest log end among the leader and
//! its in-sync followers. A follower whose copy fails leaves the in-sync set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::replica::ReplicaLog;
use crate::types::AppendInfo;

/// Bytes read from the leader per step while a follower catches up.
const CATCH_UP_BYTES: usize = 1 << 20;

/// The followers of one partition's leader.
#[derive(Debug, Default)]
pub(crate) struct Followers {
    replicas: Vec<Arc<ReplicaLog>>,
    in_sync: Vec<AtomicBool>,
    /// Serialises the replicated appends of the partition, so copies follow offset order.
    order: Mutex<()>,
    min_insync_replicas: u32,
}

impl Followers {
    /// Followers of `leader` (none: an unreplicated partition). Each is truncated to the
    /// leader's log end if it is ahead (records no leader holds were never acknowledged by
    /// all replicas), then caught up; one that cannot be starts out of sync.
    pub(crate) fn new(
        leader: &ReplicaLog,
        replicas: Vec<Arc<ReplicaLog>>,
        min_insync_replicas: u32,
    ) -> Followers {
        let replicated = !replicas.is_empty();
        leader.set_replicated(replicated);
        let mut in_sync = Vec::with_capacity(replicas.len());
        for follower in &replicas {
            follower.set_replicated(true);
            let ok = reconcile(leader, follower).is_ok();
            in_sync.push(AtomicBool::new(ok));
        }
        let followers = Followers {
            replicas,
            in_sync,
            order: Mutex::new(()),
            min_insync_replicas,
        };
        followers.advance_high_watermark(leader);
        followers
    }

    /// Every follower, in sync or not.
    pub(crate) fn replicas(&self) -> &[Arc<ReplicaLog>] {
        &self.replicas
    }

    /// How many replicas, the leader included, are in sync.
    pub(crate) fn in_sync_count(&self) -> u32 {
        1 + self
            .in_sync
            .iter()
            .filter(|s| s.load(Ordering::Acquire))
            .count() as u32
    }

    /// Appends `batch` on `leader` (calling `on_appended` once it is visible there, which is
    /// what `acks=Leader` waits for), then copies it to every in-sync follower and moves the
    /// high watermark. `NotEnoughReplicas` before anything is written when fewer than
    /// `min_insync_replicas` replicas are in sync.
    pub(crate) fn append(
        &self,
        leader: &ReplicaLog,
        batch: &[u8],
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        if self.replicas.is_empty() {
            return leader.append_then(batch, on_appended);
        }
        let _order = self.order.lock();
        let in_sync = self.in_sync_count();
        if in_sync < self.min_insync_replicas {
            return Err(Error::NotEnoughReplicas {
                in_sync,
                required: self.min_insync_replicas,
            });
        }
        let info = leader.append_then(batch, on_appended)?;
        for (follower, in_sync) in self.replicas.iter().zip(&self.in_sync) {
            if in_sync.load(Ordering::Acquire) && catch_up(leader, follower).is_err() {
                in_sync.store(false, Ordering::Release);
            }
        }
        self.advance_high_watermark(leader);
        let in_sync = self.in_sync_count();
        if in_sync < self.min_insync_replicas {
            // The leader has the batch, but not enough replicas do: not acknowledged.
            return Err(Error::NotEnoughReplicas {
                in_sync,
                required: self.min_insync_replicas,
            });
        }
        Ok(info)
    }

    /// The smallest log end among the leader and its in-sync followers, given to all.
    fn advance_high_watermark(&self, leader: &ReplicaLog) {
        let high_watermark = self
            .replicas
            .iter()
            .zip(&self.in_sync)
            .filter(|(_, s)| s.load(Ordering::Acquire))
            .map(|(f, _)| f.log_end_offset())
            .fold(leader.log_end_offset(), u64::min);
        leader.advance_high_watermark(high_watermark);
        for follower in &self.replicas {
            follower.advance_high_watermark(high_watermark);
        }
    }
}

/// Brings a follower in line with its leader at open: cut what the leader lacks, copy what
/// the follower lacks.
fn reconcile(leader: &ReplicaLog, follower: &ReplicaLog) -> Result<()> {
    let end = leader.log_end_offset();
    if follower.log_end_offset() > end {
        follower.truncate_to(end)?;
    }
    if follower.log_end_offset() < leader.log_start_offset() {
        return Err(Error::InvalidRecord {
            reason: "the follower ends before the leader's log starts".into(),
        });
    }
    catch_up(leader, follower)
}

/// Copies the leader's batches from the follower's log end to the leader's.
fn catch_up(leader: &ReplicaLog, follower: &ReplicaLog) -> Result<()> {
    loop {
        let from = follower.log_end_offset();
        let end = leader.log_end_offset();
        if from >= end {
            return Ok(());
        }
        let read = leader.read(from, CATCH_UP_BYTES, end)?;
        for batch in read.batches() {
            follower.append_copy(batch?.bytes())?;
        }
    }
}
