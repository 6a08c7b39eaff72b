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
    /// Followers of `leader` (none: an unreplicated partition), each caught up from it; one
    /// that cannot be starts out of sync. The caller makes the replica with the furthest log
    /// end the leader, so every follower holds a prefix of the leader's log (copies are
    /// byte-for-byte and in offset order) and nothing is cut.
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
            let ok = catch_up(leader, follower, usize::MAX).is_ok();
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

    /// Appends `batch` on `leader` (calling `on_appended` once it is in the leader's log,
    /// which is what `acks=Leader` waits for), then copies it to every follower that is or
    /// can be brought in sync and moves the high watermark. With `acks_all`, fewer than
    /// `min_insync_replicas` in-sync replicas refuse the append before anything is written
    /// (`NotEnoughReplicas`), and too few after it answer `NotEnoughReplicasAfterAppend`
    /// (the batch stays, as in Kafka).
    pub(crate) fn append(
        &self,
        leader: &ReplicaLog,
        batch: &[u8],
        acks_all: bool,
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        if self.replicas.is_empty() {
            return leader.append_then(batch, on_appended);
        }
        let _order = self.order.lock();
        let required = self.min_insync_replicas;
        if acks_all && self.in_sync_count() < required {
            // A follower that fell out may be back: try before refusing.
            self.copy_to_followers(leader);
            let in_sync = self.in_sync_count();
            if in_sync < required {
                return Err(Error::NotEnoughReplicas { in_sync, required });
            }
        }
        let before = leader.log_end_offset();
        let appended = leader.append_then(batch, on_appended);
        // A leader error after the batch became part of its log (an index entry, the
        // fsync) still replicates it, as an unreplicated partition would show it.
        if appended.is_ok() || leader.log_end_offset() > before {
            self.copy_to_followers(leader);
            self.advance_high_watermark(leader);
        }
        let info = appended?;
        let in_sync = self.in_sync_count();
        if acks_all && in_sync < required {
            return Err(Error::NotEnoughReplicasAfterAppend { in_sync, required });
        }
        Ok(info)
    }

    /// Catches the in-sync followers up with the leader (one that fails leaves the set) and
    /// moves each out-of-sync one at most one step closer (it rejoins once level), so a
    /// returning follower's backlog is spread over appends rather than paid by one, and a
    /// follower whose directory failed costs one check.
    fn copy_to_followers(&self, leader: &ReplicaLog) {
        for (follower, in_sync) in self.replicas.iter().zip(&self.in_sync) {
            let now_in_sync = if in_sync.load(Ordering::Acquire) {
                catch_up(leader, follower, usize::MAX).is_ok()
            } else {
                catch_up(leader, follower, 1).is_ok()
                    && follower.log_end_offset() == leader.log_end_offset()
            };
            in_sync.store(now_in_sync, Ordering::Release);
        }
    }

    /// Syncs the in-sync followers up to `offset`; one that fails leaves the set (its
    /// directory is poisoned by the failure) instead of failing the caller.
    pub(crate) fn sync_to(&self, offset: u64) {
        for (follower, in_sync) in self.replicas.iter().zip(&self.in_sync) {
            if in_sync.load(Ordering::Acquire)
                && follower
                    .sync_to(offset.min(follower.log_end_offset()))
                    .is_err()
            {
                in_sync.store(false, Ordering::Release);
            }
        }
    }

    /// Removes every record at or after `offset` from the leader and its followers, in
    /// step with appends.
    pub(crate) fn truncate(&self, leader: &ReplicaLog, offset: u64) -> Result<()> {
        let _order = self.order.lock();
        leader.truncate_to(offset)?;
        for (follower, in_sync) in self.replicas.iter().zip(&self.in_sync) {
            if follower.truncate_to(offset).is_err() {
                // It may still hold the cut records: it must never rejoin with them, so its
                // directory goes offline.
                follower.dir().poison();
                in_sync.store(false, Ordering::Release);
            }
        }
        Ok(())
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

/// Copies the leader's batches from the follower's log end towards the leader's, in at
/// most `steps` reads. A follower whose directory failed, ahead of the leader, or ending
/// before the leader's log starts cannot be caught up.
fn catch_up(leader: &ReplicaLog, follower: &ReplicaLog, steps: usize) -> Result<()> {
    let behind = |reason: &str| {
        Err(Error::InvalidRecord {
            reason: format!("{}: {reason}", follower.topic_partition()),
        })
    };
    follower.dir().check()?;
    for _ in 0..steps {
        let from = follower.log_end_offset();
        let end = leader.log_end_offset();
        if from == end {
            return Ok(());
        }
        if from > end {
            return behind("the follower is ahead of its leader");
        }
        if from < leader.log_start_offset() {
            return behind("the follower ends before its leader's log starts");
        }
        let read = leader.read(from, CATCH_UP_BYTES, end)?;
        for batch in read.batches() {
            follower.append_copy(batch?.bytes())?;
        }
        if follower.log_end_offset() == from {
            return behind("no progress copying from the leader");
        }
    }
    Ok(())
}
