//! A partition's replicas inside one process (DESIGN.md §5): a leader and followers, each in
//! its own storage directory, the followers holding byte-for-byte copies of the leader's
//! batches.
//!
//! Design: the leader's appender copies each batch to every in-sync follower in the same
//! call, in offset order, under the partition's order lock (memory copies only); then,
//! outside the lock, it syncs the leader while the followers' syncs run on their
//! directories' workers, so appenders share fsyncs. An `acks=All` append returns once every
//! in-sync replica holds it under the topic's fsync policy; a follower whose sync takes
//! longer than `replica_lag_time_max_ms` leaves the in-sync set instead. The high watermark
//! is the smallest log end among the in-sync replicas, and does not move while fewer than
//! `min(min_insync_replicas, RF)` are in sync.
//!
//! Failure: an I/O error on a replica takes its whole directory offline (the directory is
//! poisoned, as Kafka takes a failed log directory offline). A follower there leaves the
//! in-sync set; a leader there hands leadership to the first in-sync replica in assignment
//! order (or, with `unclean_leader_election`, to the live replica holding the most), in a
//! new leader epoch, and the append that met the failure is finished on the new leader.
//! Every change of leader, epoch or in-sync set is written to `meta` before anything that
//! relies on it is acknowledged.
//!
//! A follower that starts following (at open, after a failover, when it comes back) first
//! cuts whatever its log holds that the leader's does not, found by comparing leader-epoch
//! caches (KIP-101/279), then copies from the leader.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::config::{FsyncPolicy, TopicConfig};
use crate::describe::PartitionDescription;
use crate::error::{Error, Result};
use crate::metadata::Leadership;
use crate::replica::{Cleaned, Deleted, ReplicaLog};
use crate::storage::Completion;
use crate::types::{AppendInfo, TopicPartition};

/// Bytes read from the leader per step while a follower catches up.
const CATCH_UP_BYTES: usize = 1 << 20;
/// `leader` when no replica leads.
const NO_LEADER: usize = usize::MAX;

/// Writes a partition's leadership to `meta`.
pub(crate) struct PersistHook(pub PersistFn);

/// The function behind a [`PersistHook`].
pub(crate) type PersistFn = Box<dyn Fn(&Leadership) -> Result<()> + Send + Sync>;

/// Wakes the log's readers when the high watermark moved (records became visible).
pub(crate) struct VisibleHook(pub Box<dyn Fn() + Send + Sync>);

impl fmt::Debug for VisibleHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VisibleHook")
    }
}

impl fmt::Debug for PersistHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersistHook")
    }
}

/// How a replica was found when its partition was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Loaded from its directory: it may lead if it was in sync as last recorded.
    Loaded,
    /// Its data had to be recreated (empty): it follows and rejoins once level.
    Stale,
    /// Its directory is offline: absent until the directory is restored.
    Offline,
}

/// What every replica set of a log shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetOptions {
    /// Directories in the log (epochs are numbered per leader directory).
    pub dir_count: u32,
    /// Kafka's `replica.lag.time.max.ms`: how long an append waits for an in-sync
    /// follower's sync before that follower leaves the in-sync set.
    pub replica_lag_time_max_ms: u64,
}

/// A replica, or `None` while its directory is offline since the log opened.
pub(crate) type Slot = Option<Arc<ReplicaLog>>;

/// An append's writes, done under the order lock, before its fsyncs.
struct Written {
    info: AppendInfo,
    /// The leader that holds the batch.
    leader: Arc<ReplicaLog>,
    /// In-sync followers whose copies wait for the fsync policy.
    pending: Vec<Pending>,
}

/// A follower's copies awaiting the fsync policy.
struct Pending {
    index: usize,
    replica: Arc<ReplicaLog>,
    /// Its log end after the copies.
    end: u64,
    records: u64,
}

/// One partition's replicas.
#[derive(Debug)]
pub(crate) struct ReplicaSet {
    tp: TopicPartition,
    /// In assignment order (preferred leader first). Replaced only under `order`.
    replicas: RwLock<Vec<Slot>>,
    /// Each replica's storage directory index.
    dirs: Vec<u32>,
    /// Index into `replicas`, or `NO_LEADER`.
    leader: AtomicUsize,
    /// Per replica; the leader's is always set.
    in_sync: Vec<AtomicBool>,
    epoch: AtomicI32,
    /// Serialises the replicated appends, elections and truncations of the partition.
    order: Mutex<()>,
    min_insync_replicas: std::sync::atomic::AtomicU32,
    unclean: AtomicBool,
    /// Directories in the log (epochs are numbered per leader directory).
    dir_count: u32,
    /// See [`SetOptions::replica_lag_time_max_ms`].
    lag: std::time::Duration,
    /// Per replica: a background sync of an out-of-sync follower's catch-up is running (it
    /// rejoins only once that is done).
    syncing: Arc<Vec<AtomicBool>>,
    persist: OnceLock<PersistHook>,
    /// Called whenever the high watermark moves up.
    visible: OnceLock<VisibleHook>,
    /// The open raised a replica's log start (to the highest among the replicas, or a
    /// follower's to its leader's): only memory holds it until checkpoints are written.
    raised_log_start: bool,
}

impl ReplicaSet {
    /// Opens the partition over `replicas` (assignment order; `dirs` their directory
    /// indexes), electing a leader from what was recorded: the in-sync replica holding the
    /// most (the recorded leader on a tie), else — only with `unclean_leader_election` —
    /// the live replica holding the most; with none the partition is offline. A replicated
    /// partition's leader starts a new epoch; every follower is reconciled with it and
    /// caught up. Returns the set and its leadership, for `meta`.
    pub(crate) fn open(
        tp: TopicPartition,
        replicas: Vec<Slot>,
        dirs: Vec<u32>,
        standing: &[Standing],
        recorded: &Leadership,
        config: &TopicConfig,
        options: SetOptions,
    ) -> ReplicaSet {
        let dir_count = options.dir_count;
        let replicated = replicas.len() > 1;
        let eligible = |i: usize| {
            standing[i] == Standing::Loaded && recorded.isr.contains(&dirs[i]) && live(&replicas[i])
        };
        let recorded_leader = recorded
            .leader
            .and_then(|d| dirs.iter().position(|&x| x == d));
        // Among the in-sync replicas, the one holding the most leads: they all copied the
        // same leader in the same epoch, so each holds a prefix of the longest, and a
        // recorded leader whose tail recovery had to cut (damage it could not tell from a
        // torn write) must not cut the others. Ties go to the recorded leader, then to
        // assignment order.
        let most_in_sync = (0..replicas.len())
            .filter(|&i| eligible(i))
            .max_by_key(|&i| {
                let end = replicas[i].as_ref().map_or(0, |r| r.log_end_offset());
                (end, Some(i) == recorded_leader, std::cmp::Reverse(i))
            });
        let leader = if replicated {
            most_in_sync.or_else(|| {
                config
                    .unclean_leader_election
                    .then(|| most_complete(&replicas, None))
                    .flatten()
            })
        } else {
            live(&replicas[0]).then_some(0)
        };
        let latest = replicas
            .iter()
            .flatten()
            .filter_map(|r| r.latest_epoch())
            .max()
            .unwrap_or(0);
        let mut epoch = recorded.epoch.max(latest);
        if let Some(l) = leader.filter(|_| replicated) {
            epoch = next_epoch(epoch, dirs[l], dir_count);
        }
        let mut set = ReplicaSet {
            tp,
            in_sync: (0..replicas.len())
                .map(|i| AtomicBool::new(Some(i) == leader))
                .collect(),
            replicas: RwLock::new(replicas),
            dirs,
            leader: AtomicUsize::new(leader.unwrap_or(NO_LEADER)),
            epoch: AtomicI32::new(epoch),
            order: Mutex::new(()),
            min_insync_replicas: config.min_insync_replicas.into(),
            unclean: config.unclean_leader_election.into(),
            dir_count,
            lag: std::time::Duration::from_millis(options.replica_lag_time_max_ms),
            syncing: Arc::new(
                std::iter::repeat_with(|| AtomicBool::new(false))
                    .take(standing.len())
                    .collect(),
            ),
            persist: OnceLock::new(),
            visible: OnceLock::new(),
            raised_log_start: false,
        };
        let replicas = set.replicas();
        for replica in replicas.iter().flatten() {
            replica.set_replicated(replicated);
            if !replicated {
                // One replica: everything in it is committed.
                replica.reset_high_watermark(replica.log_end_offset());
            }
        }
        if let Some((l, leader)) = leader.and_then(|l| Some((l, Arc::clone(replicas[l].as_ref()?))))
        {
            leader.set_leader_epoch(epoch);
            // Before any reconciliation: one that cuts a follower may lower its start.
            let starts: Vec<Option<u64>> = replicas
                .iter()
                .map(|r| r.as_ref().map(|r| r.log_start_offset()))
                .collect();
            let floors = log_start_floors(&replicas, standing, &set.dirs, &recorded.isr);
            set.raised_log_start = raise_after_reconciling(&leader, floors);
            for (i, follower) in replicas.iter().enumerate() {
                if let Some(follower) = follower.as_ref().filter(|_| i != l) {
                    let start = starts[i].unwrap_or_else(|| follower.log_start_offset());
                    let level = level_at_open(&leader, follower);
                    set.in_sync[i].store(level, Ordering::Release);
                    // Raised to the leader's, or lowered by a restart from it: either way
                    // the checkpoint must say so before the follower counts as in sync at
                    // the next open.
                    set.raised_log_start |= follower.log_start_offset() != start;
                }
            }
            set.advance_high_watermark(&leader);
            set.rebuilt();
        } else {
            // Offline: the recorded in-sync replicas stay the ones to wait for, less any
            // whose data is gone (recreated empty). As in Kafka the in-sync set never
            // empties: when every member's data is gone they stay the ones waited for
            // (unclean election is the way out).
            let keep =
                |i: usize, d: &u32| recorded.isr.contains(d) && standing[i] != Standing::Stale;
            let any = set.dirs.iter().enumerate().any(|(i, d)| keep(i, d));
            for (i, d) in set.dirs.iter().enumerate() {
                let wait_for = if any {
                    keep(i, d)
                } else {
                    recorded.isr.contains(d)
                };
                set.in_sync[i].store(wait_for, Ordering::Release);
            }
        }
        set
    }

    /// Whether the open raised (or a restart lowered) a replica's log start, which then
    /// needs checkpoints written.
    pub(crate) fn raised_log_start(&self) -> bool {
        self.raised_log_start
    }

    /// Installs the hook that writes leadership changes to `meta` (once).
    pub(crate) fn set_persist(&self, hook: PersistHook) {
        let _ = self.persist.set(hook);
    }

    /// Installs the hook that wakes readers when the high watermark moves (once).
    pub(crate) fn set_visible(&self, hook: VisibleHook) {
        let _ = self.visible.set(hook);
    }

    /// Every replica slot, in assignment order.
    fn replicas(&self) -> Vec<Slot> {
        self.replicas.read().clone()
    }

    /// The replicas present (their directory was online when they were loaded).
    pub(crate) fn present(&self) -> Vec<Arc<ReplicaLog>> {
        self.replicas.read().iter().flatten().cloned().collect()
    }

    /// The replica at `i`, when present.
    fn replica(&self, i: usize) -> Slot {
        self.replicas.read().get(i).cloned().flatten()
    }

    /// The partition as `describe_topic` reports it; a leader whose directory went offline
    /// is replaced first.
    pub(crate) fn describe(&self) -> PartitionDescription {
        // An offline partition is described as such; the error adds nothing.
        let _ = self.leader();
        let leadership = self.leadership();
        let current = self.current();
        let figure = |f: fn(&ReplicaLog) -> u64| current.as_deref().map_or(0, f);
        let replicas = self.replicas();
        PartitionDescription {
            partition: self.tp.partition,
            leader: leadership.leader.map(|d| d as usize),
            leader_epoch: leadership.epoch,
            replicas: self.dirs.iter().map(|&d| d as usize).collect(),
            isr: leadership.isr.iter().map(|&d| d as usize).collect(),
            offline_replicas: self
                .dirs
                .iter()
                .zip(&replicas)
                .filter(|(_, r)| !live(r))
                .map(|(&d, _)| d as usize)
                .collect(),
            log_start_offset: figure(ReplicaLog::log_start_offset),
            log_end_offset: figure(ReplicaLog::log_end_offset),
            high_watermark: figure(ReplicaLog::high_watermark),
            size_bytes: figure(ReplicaLog::size_bytes),
            replica_size_bytes: replicas
                .iter()
                .map(|r| {
                    r.as_ref()
                        .filter(|r| !r.dir().is_poisoned())
                        .map(|r| r.size_bytes())
                })
                .collect(),
        }
    }

    /// Whether the partition has more than one replica.
    pub(crate) fn is_replicated(&self) -> bool {
        self.dirs.len() > 1
    }

    /// The current leader epoch.
    pub(crate) fn epoch(&self) -> i32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current leadership, as `meta` records it.
    pub(crate) fn leadership(&self) -> Leadership {
        let leader = self.leader.load(Ordering::Acquire);
        Leadership {
            leader: (leader != NO_LEADER).then(|| self.dirs[leader]),
            epoch: self.epoch.load(Ordering::Acquire),
            isr: self
                .dirs
                .iter()
                .zip(&self.in_sync)
                .filter(|(_, s)| s.load(Ordering::Acquire))
                .map(|(d, _)| *d)
                .collect(),
        }
    }

    /// The epoch replica `i` takes when it becomes leader (see [`next_epoch`]).
    fn next_epoch(&self, i: usize) -> i32 {
        let dir = self.dirs.get(i).copied().unwrap_or(0);
        // Past the new leader's own latest epoch too (one that led alone in runs this set
        // never heard of): a lower one would rewrite its epoch cache's history.
        let own = self.replica(i).and_then(|r| r.latest_epoch()).unwrap_or(0);
        let current = self.epoch.load(Ordering::Acquire).max(own);
        next_epoch(current, dir, self.dir_count)
    }

    /// Kafka's bar for `acks=All` and the high watermark: `min(min_insync_replicas, RF)`.
    fn required_in_sync(&self) -> u32 {
        self.min_insync_replicas
            .load(Ordering::Acquire)
            .min(self.dirs.len() as u32)
    }

    /// How many replicas, the leader included, are in sync.
    pub(crate) fn in_sync_count(&self) -> u32 {
        self.in_sync
            .iter()
            .filter(|s| s.load(Ordering::Acquire))
            .count() as u32
    }

    fn offline(&self) -> Error {
        Error::PartitionOffline {
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
        }
    }

    /// The leader, for reads and offsets; a leader whose directory went offline is replaced
    /// first.
    ///
    /// # Errors
    /// `PartitionOffline` when no replica can lead.
    pub(crate) fn leader(&self) -> Result<Arc<ReplicaLog>> {
        let i = self.leader.load(Ordering::Acquire);
        if let Some(leader) = self.replica(i)
            && (self.dir_count <= 1 || !leader.dir().is_poisoned())
        {
            return Ok(leader);
        }
        let _order = self.order.lock();
        self.ensure_leader()
    }

    /// The leader, or when the partition is offline its first present replica (for figures
    /// that stay readable while offline); `None` when no replica is present.
    pub(crate) fn current(&self) -> Slot {
        let i = self.leader.load(Ordering::Acquire);
        self.replica(i)
            .or_else(|| self.present().into_iter().next())
    }

    /// The leader under `order`, failing over from one whose directory went offline.
    fn ensure_leader(&self) -> Result<Arc<ReplicaLog>> {
        let i = self.leader.load(Ordering::Acquire);
        let leader = self.replica(i).ok_or_else(|| self.offline())?;
        if leader.dir().is_poisoned() {
            if self.is_replicated() {
                self.fail_over(i)?;
                return self.ensure_leader();
            }
            // One replica in an offline directory of a log with others: offline until the
            // directory is restored (with one directory the error says `Poisoned`).
            if self.dir_count > 1 {
                return Err(self.offline());
            }
        }
        Ok(leader)
    }

    /// Appends `batch` on the leader, copies it to every follower that is or can be brought
    /// in sync and moves the high watermark — all under the partition's order lock — then,
    /// outside it, calls `on_appended` if the batch reached the leader's log (which is what
    /// `acks=Leader` waits for; even when the append then fails; an append whose copies
    /// change the in-sync set answers after `meta` recorded it) and waits for the fsync
    /// policy on the leader and on each in-sync follower, so concurrent appenders share
    /// fsyncs (group commit). With
    /// `acks_all`, fewer than `min_insync_replicas` in-sync replicas refuse the append
    /// before anything is written (`NotEnoughReplicas`), and too few after it answer
    /// `NotEnoughReplicasAfterAppend` (the batch stays, as in Kafka). A leader whose
    /// directory fails hands over to an in-sync follower and the append finishes there.
    pub(crate) fn append(
        &self,
        batch: &[u8],
        acks_all: bool,
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        if !self.is_replicated() {
            let leader = self.leader()?;
            let appended = leader.append_then(batch, on_appended);
            if let Err(error) = &appended
                && self.dir_count > 1
            {
                // With several directories any I/O error takes the directory offline.
                Self::dir_failed(&leader, error);
            }
            return appended;
        }
        // Called once the order lock is released: it answers a producer's futures, whose
        // callbacks may send (a topic created then takes the admin lock, which
        // `alter_topic_config` holds while it takes this lock) or ask for the leader.
        let mut landed = None;
        let written = self.write(batch, acks_all, &mut landed);
        if let Some(info) = &landed {
            on_appended(info);
        }
        let written = written?;
        let info = written.info;
        // The followers' syncs run on their directories' workers while this thread syncs
        // the leader: one fsync's time, not one per replica.
        let followers = Arc::new(Completion::new(written.pending.len()));
        for (slot, pending) in written.pending.iter().enumerate() {
            if pending.replica.sync_due_now(pending.records) {
                let (replica, end, done) = (
                    Arc::clone(&pending.replica),
                    pending.end,
                    Arc::clone(&followers),
                );
                pending.replica.dir().run_in_background(Box::new(move || {
                    // Any I/O error takes the directory offline (a failed fsync has already).
                    let synced = replica.sync_to(end);
                    if let Err(error) = &synced {
                        Self::dir_failed(&replica, error);
                    }
                    done.finish(slot, synced);
                }));
            } else {
                followers.finish(slot, Ok(()));
            }
        }
        let leader_synced = written
            .leader
            .await_durable(info.last_offset + 1, u64::from(info.record_count));
        if let Err(error) = &leader_synced {
            // Not only a failed fsync: any I/O error of the sync (its leader-epoch
            // checkpoint write, say) takes the directory offline, so that a follower leads.
            Self::dir_failed(&written.leader, error);
        }
        let leader_ok = leader_synced.is_ok();
        // A follower whose sync fails (its directory is then poisoned) or takes longer than
        // `replica_lag_time_max_ms` leaves the in-sync set.
        let results = followers.wait_for(self.lag);
        let synced_on = |index: usize| {
            written
                .pending
                .iter()
                .zip(&results)
                .any(|(p, r)| p.index == index && matches!(r, Some(Ok(()))))
        };
        let dropped: Vec<&Pending> = written
            .pending
            .iter()
            .zip(&results)
            .filter(|(_, result)| !matches!(result, Some(Ok(()))))
            .map(|(p, _)| p)
            .collect();
        if leader_synced.is_err() || !dropped.is_empty() {
            let _order = self.order.lock();
            let current = self.leader.load(Ordering::Acquire);
            for p in &dropped {
                // Only the replica that lagged, and never the leader (one may have taken
                // over meanwhile): a slot restored meanwhile holds another replica.
                if p.index != current
                    && self
                        .replica(p.index)
                        .is_some_and(|r| Arc::ptr_eq(&r, &p.replica))
                {
                    self.in_sync[p.index].store(false, Ordering::Release);
                }
            }
            self.persist()?;
            if let Err(error) = leader_synced {
                // A failed leader hands over; the batch counts only if the new leader is a
                // follower that held it synced (after an unclean election its offsets may
                // hold other batches).
                let leader = self.ensure_leader().map_err(|_| error)?;
                let index = self.leader.load(Ordering::Acquire);
                if !synced_on(index) || leader.log_end_offset() <= info.last_offset {
                    return Err(Error::Poisoned {
                        dir: written.leader.dir().path().to_path_buf(),
                    });
                }
                self.advance_high_watermark(&leader);
            }
        }
        if acks_all {
            self.confirm_in_sync(&written, leader_ok, &results, info)?;
        }
        self.check_after_append(info, acks_all)
    }

    /// `acks=All`: every replica in sync now holds the batch durably (per the fsync policy),
    /// not only as many as required. One that joined the set after the batch's syncs were
    /// started (a follower level again in another append's step), or a follower that leads
    /// now (the leader's directory failed meanwhile) whose sync timed out, was not among
    /// the syncs waited for or did not answer: each is waited for, on its directory's
    /// worker, up to the lag time. A follower that does not answer leaves the in-sync set;
    /// a leader that does not fails the append (`NotEnoughReplicasAfterAppend`: written,
    /// not acknowledged).
    fn confirm_in_sync(
        &self,
        written: &Written,
        leader_ok: bool,
        results: &[Option<Result<()>>],
        info: AppendInfo,
    ) -> Result<()> {
        let end = info.last_offset + 1;
        let confirmed = |index: usize, replica: &Arc<ReplicaLog>| {
            (leader_ok && Arc::ptr_eq(replica, &written.leader))
                || written.pending.iter().zip(results).any(|(p, r)| {
                    p.index == index
                        && Arc::ptr_eq(&p.replica, replica)
                        && matches!(r, Some(Ok(())))
                })
        };
        let unconfirmed: Vec<(usize, Arc<ReplicaLog>)> = self
            .replicas()
            .iter()
            .zip(&self.in_sync)
            .enumerate()
            .filter(|(_, (_, in_sync))| in_sync.load(Ordering::Acquire))
            .filter_map(|(i, (replica, _))| Some((i, Arc::clone(replica.as_ref()?))))
            .filter(|(i, replica)| !confirmed(*i, replica))
            .collect();
        if unconfirmed.is_empty() {
            return Ok(());
        }
        let done = Arc::new(Completion::new(unconfirmed.len()));
        for (slot, (_, target)) in unconfirmed.iter().enumerate() {
            let (replica, done) = (Arc::clone(target), Arc::clone(&done));
            target.dir().run_in_background(Box::new(move || {
                // A batch cut since (a truncation) has nothing left to be durable. Only a
                // policy that syncs every batch waits here: the others' counts already
                // hold these records, and counting them again would sync early.
                let synced = if replica.log_end_offset() < end
                    || replica.synced_through(end)
                    || !replica.syncs_every_batch()
                {
                    Ok(())
                } else {
                    replica.sync_to(end)
                };
                if let Err(error) = &synced {
                    Self::dir_failed(&replica, error);
                }
                done.finish(slot, synced);
            }));
        }
        let answers = done.wait_for(self.lag);
        let failed: Vec<&(usize, Arc<ReplicaLog>)> = unconfirmed
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| !matches!(answer, Some(Ok(()))))
            .map(|(u, _)| u)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let _order = self.order.lock();
        let current = self.leader.load(Ordering::Acquire);
        let mut leader_failed = false;
        for (i, replica) in failed {
            if *i == current {
                leader_failed = true;
            } else if self.replica(*i).is_some_and(|r| Arc::ptr_eq(&r, replica)) {
                self.in_sync[*i].store(false, Ordering::Release);
            }
        }
        self.persist()?;
        if leader_failed {
            return Err(Error::NotEnoughReplicasAfterAppend {
                in_sync: self.in_sync_count(),
                required: self.required_in_sync(),
            });
        }
        Ok(())
    }

    /// The part of an append done under the order lock: the leader's write and the
    /// followers' copies, none waiting for fsync. `landed` is set once the batch is in the
    /// leader's log, whatever comes after.
    fn write(
        &self,
        batch: &[u8],
        acks_all: bool,
        landed: &mut Option<AppendInfo>,
    ) -> Result<Written> {
        let _order = self.order.lock();
        let mut failures = 0;
        loop {
            let leader = self.ensure_leader()?;
            let required = self.required_in_sync();
            if acks_all {
                self.drop_failed_followers(&leader)?;
            }
            if acks_all && self.in_sync_count() < required {
                // A follower that fell out may be back: try before refusing.
                self.copy_to_followers(&leader, true)?;
                let in_sync = self.in_sync_count();
                if in_sync < required {
                    return Err(Error::NotEnoughReplicas { in_sync, required });
                }
            }
            let before = leader.log_end_offset();
            let appended = leader.append_unsynced(batch, |info| {
                *landed = Some(*info);
            });
            let in_log = leader.log_end_offset() > before;
            let error = match appended {
                Ok(info) => {
                    let pending = self.copy_to_followers(&leader, false)?;
                    self.advance_high_watermark(&leader);
                    return Ok(Written {
                        info,
                        leader,
                        pending,
                    });
                }
                Err(error) if Self::dir_failed(&leader, &error) => error,
                Err(error) => {
                    // A leader error after the batch became part of its log (an index
                    // entry) still replicates it, as an unreplicated partition shows it.
                    if in_log {
                        self.copy_to_followers(&leader, true)?;
                        self.advance_high_watermark(&leader);
                    }
                    return Err(error);
                }
            };
            // The leader's directory failed. A batch already in its log reaches the in-sync
            // followers from the leader's pages (synced there); then a follower leads.
            if in_log {
                self.copy_to_followers(&leader, true)?;
            }
            // The replicas in sync now hold the batch; another may hold other records at
            // its offsets (a divergent tail no cut has reached yet).
            let held: Vec<bool> = self
                .in_sync
                .iter()
                .map(|in_sync| in_sync.load(Ordering::Acquire))
                .collect();
            let old = self.leader.load(Ordering::Acquire);
            self.fail_over(old)?;
            if let Some(info) = landed.filter(|_| in_log) {
                let new_leader = self.ensure_leader().map_err(|_| error)?;
                let index = self.leader.load(Ordering::Acquire);
                // Only a follower that held it makes the batch count: one elected
                // uncleanly may reach past it with other batches.
                if held.get(index).copied().unwrap_or(false)
                    && new_leader.log_end_offset() > info.last_offset
                {
                    self.advance_high_watermark(&new_leader);
                    return Ok(Written {
                        info,
                        leader: new_leader,
                        pending: Vec::new(),
                    });
                }
                // The batch died with the directory: report it lost, do not write it twice.
                return Err(Error::Poisoned {
                    dir: leader.dir().path().to_path_buf(),
                });
            }
            failures += 1;
            if failures >= self.dirs.len() {
                return Err(error);
            }
        }
    }

    /// The `acks=All` check after an append.
    fn check_after_append(&self, info: AppendInfo, acks_all: bool) -> Result<AppendInfo> {
        let in_sync = self.in_sync_count();
        let required = self.required_in_sync();
        if acks_all && in_sync < required {
            return Err(Error::NotEnoughReplicasAfterAppend { in_sync, required });
        }
        Ok(info)
    }

    /// Whether `error`, met on `replica`, means its directory failed: any I/O error takes a
    /// replicated partition's directory offline (Kafka's log-directory failure), as a failed
    /// fsync does every directory.
    fn dir_failed(replica: &ReplicaLog, error: &Error) -> bool {
        // A deleted topic's files go while its last syncs may still run.
        if matches!(error, Error::Io { .. }) && !replica.is_retired() {
            replica.dir().poison();
        }
        replica.dir().is_poisoned()
    }

    /// Catches the in-sync followers up with the leader (one that fails leaves the set) and
    /// moves each out-of-sync one at most one step closer (it rejoins once level), so a
    /// returning follower's backlog is spread over appends rather than paid by one, and a
    /// follower whose directory failed costs one check. Changes of the in-sync set are
    /// written to `meta`. Without `wait`, the in-sync followers' copies do not wait for
    /// the fsync policy: they are returned, for the caller to wait on. Out-of-sync steps
    /// always wait (a follower rejoins with what it copied durable).
    fn copy_to_followers(&self, leader: &Arc<ReplicaLog>, wait: bool) -> Result<Vec<Pending>> {
        let replicas = self.replicas();
        let mut changed = false;
        let mut pending = Vec::new();
        for (index, (follower, in_sync)) in replicas.iter().zip(&self.in_sync).enumerate() {
            let Some(follower) = follower.as_ref().filter(|f| !Arc::ptr_eq(f, leader)) else {
                continue;
            };
            let was = in_sync.load(Ordering::Acquire);
            // An in-sync follower holds exactly the leader's log: only one that fell out
            // (or follows a new leader after an unclean election) may have diverged.
            // A follower with a sync still running (a slow directory) does not rejoin.
            let busy = !was && self.busy(index, follower);
            let copied = if was {
                follow(leader, follower, usize::MAX, false, wait)
            } else if busy && needs_cut(leader, follower) {
                // A cut syncs on the follower's disk, whose sync has not answered yet
                // (perhaps it hangs): not under the order lock. The follower waits out of
                // sync until its disk answers; the step after that cuts it.
                Ok(0)
            } else {
                // One step. In an append it is not synced under the order lock: when it
                // leaves the follower level (and nothing of it is still syncing) the
                // follower rejoins and this append waits for its sync like any in-sync
                // follower's; otherwise the step is synced in the background.
                let step = follow(leader, follower, 1, true, wait);
                let level = follower.log_end_offset() == leader.log_end_offset();
                if let Ok(records) = step
                    && records > 0
                    && !wait
                    && (!level || busy)
                {
                    self.sync_in_background(index, follower, records);
                }
                step
            };
            if let Err(error) = &copied {
                Self::dir_failed(follower, error);
            }
            let level = follower.log_end_offset() == leader.log_end_offset();
            let now = copied.is_ok() && level && (was || !busy);
            in_sync.store(now, Ordering::Release);
            changed |= now != was;
            if let Ok(records) = copied
                && now
                && !wait
                && records > 0
            {
                pending.push(Pending {
                    index,
                    replica: Arc::clone(follower),
                    end: follower.log_end_offset(),
                    records,
                });
            }
        }
        if changed {
            self.persist()?;
        }
        Ok(pending)
    }

    /// Takes in-sync followers whose directory has failed (through another partition) out
    /// of the in-sync set, written to `meta`, so that the `min_insync_replicas` check
    /// before an append counts only live ones: removal is otherwise lazy (at the next copy),
    /// and an append let through would be written to the leader, then answered
    /// `NotEnoughReplicas` with its batch in the log.
    fn drop_failed_followers(&self, leader: &Arc<ReplicaLog>) -> Result<()> {
        let mut changed = false;
        for (replica, in_sync) in self.replicas.read().iter().zip(&self.in_sync) {
            if let Some(replica) = replica
                && !Arc::ptr_eq(replica, leader)
                && replica.dir().is_poisoned()
                && in_sync.load(Ordering::Acquire)
            {
                in_sync.store(false, Ordering::Release);
                changed = true;
            }
        }
        if changed {
            self.persist()?;
        }
        Ok(())
    }

    /// Whether follower `index`'s disk is busy: a sync of it running (its own, or a
    /// background one of its catch-up), or its directory's worker stuck on one job (of any
    /// replica there) for the lag time, its queued syncs waiting behind. A cut, which
    /// syncs, waits for it outside the order lock.
    fn busy(&self, index: usize, follower: &ReplicaLog) -> bool {
        self.busy_at(follower, &self.syncing[index])
    }

    /// [`busy`](Self::busy), with the follower's background-sync flag.
    fn busy_at(&self, follower: &ReplicaLog, syncing: &AtomicBool) -> bool {
        follower.sync_in_progress()
            || syncing.load(Ordering::Acquire)
            || follower.dir().stalled_for() >= self.lag
    }

    /// Applies the fsync policy to an out-of-sync follower's copies on its directory's
    /// worker, unless one such sync is already running (the next covers these copies too).
    fn sync_in_background(&self, index: usize, follower: &Arc<ReplicaLog>, records: u64) {
        if self.syncing[index].swap(true, Ordering::AcqRel) {
            return;
        }
        let (replica, syncing, end) = (
            Arc::clone(follower),
            Arc::clone(&self.syncing),
            follower.log_end_offset(),
        );
        follower.dir().run_in_background(Box::new(move || {
            // A failure takes the directory offline: the next step finds it so.
            if let Err(error) = replica.await_durable(end, records) {
                Self::dir_failed(&replica, &error);
            }
            syncing[index].store(false, Ordering::Release);
        }));
    }

    /// Moves leadership away from replica `old` (whose directory failed): to the first
    /// in-sync replica in assignment order whose directory is online, else — with
    /// `unclean_leader_election` — to the live replica holding the most, else nobody (the
    /// partition is offline and `old` stays the in-sync replica to wait for). Bumps the
    /// epoch and writes the change to `meta`.
    fn fail_over(&self, old: usize) -> Result<()> {
        let replicas = self.replicas();
        let live = |i: usize| i != old && live(&replicas[i]);
        // An offline partition's replica being rebuilt (recreated empty) is no clean
        // choice, even when kept as one to wait for: its data is gone. (Under a leader one
        // in sync is level and synced, its mark cleared at the next `meta` write.)
        let offline = self.leader.load(Ordering::Acquire) == NO_LEADER;
        let clean = (0..replicas.len()).find(|&i| {
            live(i)
                && self.in_sync[i].load(Ordering::Acquire)
                && !(offline && replicas[i].as_ref().is_some_and(|r| r.is_rebuilding()))
        });
        let next = clean.or_else(|| {
            self.unclean
                .load(Ordering::Acquire)
                .then(|| most_complete(&replicas, Some(old)))
                .flatten()
        });
        if let Some((n, leader)) = next.and_then(|n| Some((n, replicas[n].as_ref()?))) {
            let unclean = clean.is_none();
            let epoch = self.next_epoch(n);
            self.epoch.store(epoch, Ordering::Release);
            leader.set_leader_epoch(epoch);
            self.leader.store(n, Ordering::Release);
            for (i, in_sync) in self.in_sync.iter().enumerate() {
                if i == n {
                    in_sync.store(true, Ordering::Release);
                } else if i == old || unclean {
                    in_sync.store(false, Ordering::Release);
                }
            }
            // Followers left out of sync by an unclean election reconcile on their
            // next step; in-sync ones hold exactly the new leader's log already.
            self.advance_high_watermark(leader);
        } else {
            self.leader.store(NO_LEADER, Ordering::Release);
            for (i, in_sync) in self.in_sync.iter().enumerate() {
                in_sync.store(i == old, Ordering::Release);
            }
        }
        self.persist()
    }

    /// Puts `replica`, loaded from directory `dir` once it came back, in its slot: out of
    /// sync under a leader, or, without one, leading if it was the in-sync replica waited
    /// for (or, under `unclean_leader_election`, whatever it holds), in a new epoch, alone
    /// in sync. [`catch_up_restored`](Self::catch_up_restored) then brings the followers
    /// level; `restore_dir` restores every partition first, so that each offline one leads
    /// again without waiting for the others' copies.
    pub(crate) fn restore(
        &self,
        dir: u32,
        replica: &Arc<ReplicaLog>,
        standing: Standing,
    ) -> Result<()> {
        let _order = self.order.lock();
        let Some(i) = self.dirs.iter().position(|&d| d == dir) else {
            return Ok(());
        };
        // A leader in a failed directory hands over first (an offline partition stays so);
        // a leader installed by a hand-over whose `meta` write failed counts below too.
        let _ = self.ensure_leader();
        replica.set_replicated(self.is_replicated());
        if self.is_replicated() && self.leader.load(Ordering::Acquire) != NO_LEADER {
            // Out of sync before it is in its slot: a cleaning must not take it for one
            // (see `clean`) before it is reconciled.
            self.in_sync[i].store(false, Ordering::Release);
        }
        self.replicas.write()[i] = Some(Arc::clone(replica));
        // A background sync of the replaced replica says nothing of this one.
        self.syncing[i].store(false, Ordering::Release);
        if !self.is_replicated() {
            self.leader.store(0, Ordering::Release);
            return Ok(());
        }
        if let Ok(leader) = self.ensure_leader() {
            self.in_sync[i].store(false, Ordering::Release);
            // Its own high watermark is from before it left: never above the leader's.
            replica.reset_high_watermark(replica.high_watermark().min(leader.high_watermark()));
            // Cut where its history parts from the leader's now, under this hold of the
            // lock (a cut is cheap; the copy waits for `catch_up_restored`): an unclean
            // election meanwhile must not pick a tail the leader never had.
            if let Err(error) = reconcile(&leader, replica) {
                Self::dir_failed(replica, &error);
            }
        } else {
            let waited_for =
                standing == Standing::Loaded && self.in_sync[i].load(Ordering::Acquire);
            if waited_for || self.unclean.load(Ordering::Acquire) {
                self.lead_from(i, replica);
            }
        }
        self.persist()
    }

    /// After [`restore`](Self::restore) of `replica` from directory `dir`: when it leads,
    /// the other replicas present follow it; otherwise it follows the leader. Each is
    /// reconciled and copied step by step (see [`rebuild_stepwise`](Self::rebuild_stepwise)),
    /// appends going in between steps, against the leader of the moment (whose directory
    /// may fail meanwhile, or an unclean election may choose another).
    pub(crate) fn catch_up_restored(&self, dir: u32, replica: &Arc<ReplicaLog>) -> Result<()> {
        if !self.is_replicated() {
            return Ok(());
        }
        let mut order = self.order.lock();
        let Some(i) = self.dirs.iter().position(|&d| d == dir) else {
            return Ok(());
        };
        if !self.replica(i).is_some_and(|r| Arc::ptr_eq(&r, replica)) {
            return Ok(());
        }
        let leads = self
            .ensure_leader()
            .is_ok_and(|leader| Arc::ptr_eq(&leader, replica));
        let followers: Vec<usize> = if leads {
            (0..self.dirs.len()).filter(|&j| j != i).collect()
        } else {
            vec![i]
        };
        for j in followers {
            let Ok(leader) = self.ensure_leader() else {
                break;
            };
            let Some(follower) = self.replica(j) else {
                continue;
            };
            if Arc::ptr_eq(&leader, &follower)
                || self.in_sync[j].load(Ordering::Acquire)
                || follower.dir().is_poisoned()
            {
                continue;
            }
            self.rebuild_stepwise(&mut order, j, &follower, leader);
        }
        self.persist()
    }

    /// Reconciles replica `i` (restored, or following a restored leader) with `leader` and
    /// copies the leader's batches to
    /// it one step (`CATCH_UP_BYTES`) at a time, handing the order lock to a waiting append
    /// between steps, until it is level (then in sync) or a step fails: a large replica
    /// rebuilt from its leader does not hold up the partition's appends for the whole copy.
    /// The syncs the fsync policy asks for run with the lock released, and a level replica
    /// counts as in sync only once everything it holds is synced (unless the policy is
    /// `None`): an append's step (each append meanwhile copies a step to it too, and may
    /// bring it back in sync itself) may have copied records that no running sync covers.
    fn rebuild_stepwise(
        &self,
        order: &mut MutexGuard<'_, ()>,
        i: usize,
        replica: &Arc<ReplicaLog>,
        mut leader: Arc<ReplicaLog>,
    ) {
        loop {
            let Ok(records) = follow(&leader, replica, 1, true, false) else {
                self.in_sync[i].store(false, Ordering::Release);
                break;
            };
            let end = replica.log_end_offset();
            let level = end == leader.log_end_offset();
            let unsynced =
                replica.fsync_policy() != FsyncPolicy::None && !replica.synced_through(end);
            if (records > 0 && replica.sync_due_now(records)) || (level && unsynced) {
                if let Err(error) = MutexGuard::unlocked(order, || replica.sync_to(end)) {
                    Self::dir_failed(replica, &error);
                    self.in_sync[i].store(false, Ordering::Release);
                    break;
                }
            } else if level {
                self.in_sync[i].store(true, Ordering::Release);
                break;
            } else {
                MutexGuard::bump(order);
            }
            // Meanwhile an append may have brought it back in sync, its directory may have
            // failed, or another replica (or, by an unclean election, this one) may lead.
            let current = self.replica(i).is_some_and(|r| Arc::ptr_eq(&r, replica));
            if !current || self.in_sync[i].load(Ordering::Acquire) || replica.dir().is_poisoned() {
                break;
            }
            match self.ensure_leader() {
                Ok(next) if !Arc::ptr_eq(&next, replica) => leader = next,
                _ => break,
            }
        }
        if let Ok(leader) = self.ensure_leader() {
            self.advance_high_watermark(&leader);
        }
    }

    /// Makes replica `i` (restored into an offline partition) the leader in a new epoch,
    /// alone in sync: the other replicas present follow it afterwards, step by step.
    fn lead_from(&self, i: usize, replica: &Arc<ReplicaLog>) {
        // The log starts of the others in sync as recorded (offline, but as they were) are
        // floors for its own, which its directory's checkpoint may not hold yet (see
        // `open`); offline ones cannot be reconciled, and their starts count as they were,
        // capped at its end. One out of sync may hold a history an unclean election
        // superseded (a `delete_records` there): its start counts for nothing, as at an
        // open (else records appended and acknowledged since would go below the start).
        let in_sync: Vec<Arc<ReplicaLog>> = self
            .replicas()
            .into_iter()
            .zip(&self.in_sync)
            .filter(|(_, in_sync)| in_sync.load(Ordering::Acquire))
            .filter_map(|(r, _)| r)
            .collect();
        raise_to_highest_log_start(replica, in_sync.iter());
        let epoch = self.next_epoch(i);
        self.epoch.store(epoch, Ordering::Release);
        replica.set_leader_epoch(epoch);
        for (j, in_sync) in self.in_sync.iter().enumerate() {
            in_sync.store(j == i, Ordering::Release);
        }
        self.leader.store(i, Ordering::Release);
        self.advance_high_watermark(replica);
    }

    /// Clears the rebuilding mark of each in-sync replica while there is a leader: it has
    /// been level with the leader (an in-sync set waited for by an offline partition says
    /// nothing of its members' data, so then nothing is cleared). A marker that cannot be
    /// removed stays, and its replica stays one to rebuild at the next open.
    fn rebuilt(&self) {
        if self.leader.load(Ordering::Acquire) == NO_LEADER {
            return;
        }
        for (replica, in_sync) in self.replicas().iter().zip(&self.in_sync) {
            if let Some(replica) = replica.as_ref().filter(|r| !r.dir().is_poisoned())
                && in_sync.load(Ordering::Acquire)
            {
                let _ = replica.finish_rebuilding();
            }
        }
    }

    /// Writes the leadership to `meta` (no hook: not yet part of an open log), after
    /// clearing the rebuilding mark of replicas now in sync.
    fn persist(&self) -> Result<()> {
        self.persist_as(&self.leadership())
    }

    /// [`persist`](Self::persist) of `leadership`, which the set is about to take.
    fn persist_as(&self, leadership: &Leadership) -> Result<()> {
        self.rebuilt();
        match self.persist.get() {
            Some(hook) => (hook.0)(leadership),
            None => Ok(()),
        }
    }

    /// Syncs the leader and the in-sync followers up to `offset`. A follower that fails
    /// leaves the set (its directory is poisoned by the failure); a leader that fails hands
    /// over, and the sync is done on the new leader.
    pub(crate) fn sync_to(&self, offset: u64) -> Result<()> {
        let leader = self.leader()?;
        if let Err(error) = leader.sync_to(offset.min(leader.log_end_offset())) {
            if !self.is_replicated() || !Self::dir_failed(&leader, &error) {
                return Err(error);
            }
            let leader = self.leader().map_err(|_| error)?;
            leader.sync_to(offset.min(leader.log_end_offset()))?;
        }
        if !self.is_replicated() {
            return Ok(());
        }
        let leader = self.leader()?;
        let mut failed = Vec::new();
        for (i, (follower, in_sync)) in self.replicas().iter().zip(&self.in_sync).enumerate() {
            let Some(follower) = follower else { continue };
            if !Arc::ptr_eq(follower, &leader)
                && in_sync.load(Ordering::Acquire)
                && let Err(error) = follower.sync_to(offset.min(follower.log_end_offset()))
            {
                Self::dir_failed(follower, &error);
                failed.push((i, Arc::clone(follower)));
            }
        }
        if !failed.is_empty() {
            let _order = self.order.lock();
            let current = self.leader.load(Ordering::Acquire);
            // Only the replica that failed leaves, and never the leader (one may have taken
            // over meanwhile): a slot restored meanwhile holds another.
            for (i, follower) in failed {
                if i != current && self.replica(i).is_some_and(|r| Arc::ptr_eq(&r, &follower)) {
                    self.in_sync[i].store(false, Ordering::Release);
                }
            }
            self.persist()?;
        }
        Ok(())
    }

    /// Applies a changed topic config (`alter_topic_config`) to the set and every present
    /// replica, in step with appends. A replica that fails (re-making its empty active
    /// segment) is handled as at an append: with several directories its directory goes
    /// offline; with one the segment stays active at its old size (unless the failure came
    /// between the new files' renames, which takes the directory offline in any case).
    pub(crate) fn set_config(&self, config: &TopicConfig) {
        let _order = self.order.lock();
        self.min_insync_replicas
            .store(config.min_insync_replicas, Ordering::Release);
        self.unclean
            .store(config.unclean_leader_election, Ordering::Release);
        for replica in self.replicas().into_iter().flatten() {
            if let Err(error) = replica.set_config(config.clone()) {
                self.failed(&replica, &error);
            }
        }
        if config.unclean_leader_election
            && self.is_replicated()
            && self.leader.load(Ordering::Acquire) == NO_LEADER
        {
            // Offline, waiting for its last in-sync replica: turned on, the setting elects
            // one of the others now (Kafka's controller runs an unclean election for
            // leaderless partitions when it is enabled), not at a restore or reopen. Without
            // one present the set keeps waiting. `alter_topic_config` has already recorded
            // the setting; a directory that fails to record the election goes offline as
            // at any `meta` write.
            let waited = self
                .in_sync
                .iter()
                .position(|s| s.load(Ordering::Acquire))
                .unwrap_or(NO_LEADER);
            let _ = self.fail_over(waited);
        }
        // A lowered `min_insync_replicas` may let the high watermark past records held
        // back under the old one: they show now, not at the next append.
        if self.is_replicated()
            && let Ok(leader) = self.ensure_leader()
        {
            self.advance_high_watermark(&leader);
        }
    }

    /// Retention (see [`ReplicaLog::delete_old_segments`]) on the leader, in step with
    /// appends; every other live replica then raises its log start to the leader's and
    /// deletes the segments wholly below it (their segments line up with the leader's). A
    /// follower that fails is handled as at an append: its directory goes offline.
    pub(crate) fn delete_old_segments(&self, now: i64) -> Result<Deleted> {
        let _order = self.order.lock();
        let leader = self.ensure_leader()?;
        let deleted = leader
            .delete_old_segments(now)
            .inspect_err(|error| self.failed(&leader, error))?;
        Ok(self.follow_log_start(&leader, deleted))
    }

    /// Log compaction (see `clean.rs`): when the leader's log is due at `now`, cleans the
    /// leader and then every other live in-sync replica with the leader's end offset and
    /// `now`. Appends go on meanwhile (only the swaps take each replica's writer lock). A
    /// replica whose cleaning fails on an I/O error is handled as at an append.
    ///
    /// An out-of-sync follower is left for a later cleaning: it may not be reconciled
    /// with the leader yet (restored, or behind an unclean election), and a tail the
    /// leader does not have would let its cleaning remove older values of keys that the
    /// leader still holds, which the cut of that tail would not bring back.
    pub(crate) fn clean(
        &self,
        now: i64,
        map_entries: usize,
        stop: &AtomicBool,
    ) -> Result<Option<Cleaned>> {
        let leader = self.leader()?;
        let cleanable = leader.cleanable(now);
        if !cleanable.due {
            return Ok(None);
        }
        let mut cleaned = leader
            .clean(now, cleanable.end, map_entries, stop)
            .inspect_err(|error| self.failed(&leader, error))?;
        if cleaned.segments == 0 {
            // Nothing swapped in (changed meanwhile, or another cleaning runs).
            return Ok(None);
        }
        for (follower, in_sync) in self.replicas().into_iter().zip(&self.in_sync) {
            let Some(follower) = follower else { continue };
            if Arc::ptr_eq(&follower, &leader)
                || follower.dir().is_poisoned()
                || !in_sync.load(Ordering::Acquire)
            {
                continue;
            }
            match follower.clean(now, cleanable.end, map_entries, stop) {
                Ok(more) => cleaned.add(more),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(error) => self.failed(&follower, &error),
            }
        }
        Ok(Some(cleaned))
    }

    /// Kafka's `DeleteRecords`: raises the log start of every live replica to `offset`,
    /// which may not pass the high watermark; returns the new log start.
    pub(crate) fn delete_records(&self, offset: u64) -> Result<(u64, Deleted)> {
        let _order = self.order.lock();
        let leader = self.ensure_leader()?;
        let (start, high_watermark) = (leader.log_start_offset(), leader.high_watermark());
        if offset > high_watermark {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                earliest: start,
                latest: high_watermark,
            });
        }
        let deleted = leader
            .raise_log_start(offset)
            .inspect_err(|error| self.failed(&leader, error))?;
        let deleted = self.follow_log_start(&leader, deleted);
        Ok((leader.log_start_offset(), deleted))
    }

    /// Gives the leader's log start to the other live replicas; adds what they deleted.
    fn follow_log_start(&self, leader: &Arc<ReplicaLog>, mut deleted: Deleted) -> Deleted {
        let start = leader.log_start_offset();
        for follower in self.replicas().into_iter().flatten() {
            if Arc::ptr_eq(&follower, leader) || follower.dir().is_poisoned() {
                continue;
            }
            match follower.raise_log_start(start) {
                Ok(more) => {
                    deleted.segments += more.segments;
                    deleted.bytes += more.bytes;
                }
                Err(error) => self.failed(&follower, &error),
            }
        }
        deleted
    }

    /// A replicated partition's directory goes offline at any I/O error met in
    /// maintenance; the next append then fails over.
    fn failed(&self, replica: &ReplicaLog, error: &Error) {
        if self.dir_count > 1 {
            Self::dir_failed(replica, error);
        }
    }

    /// Removes every record at or after `offset` from the leader and its followers, in
    /// step with appends.
    pub(crate) fn truncate(&self, offset: u64) -> Result<()> {
        let _order = self.order.lock();
        let leader = self.ensure_leader()?;
        let cuts_leader = offset < leader.log_end_offset();
        if cuts_leader {
            // A truncation it would refuse changes nothing, `meta` and the in-sync set
            // included.
            leader.check_truncation(offset)?;
        }
        // A follower holding records to cut whose disk has been stuck on one job for the
        // lag time (it is about to leave the in-sync set) leaves it now, in the same `meta`
        // write as the new epoch: it is not cut here (see below), and a reopen must not
        // find it in sync with the records the cut removed.
        let mut changed = false;
        for (follower, in_sync) in self.replicas().iter().zip(&self.in_sync) {
            if let Some(follower) = follower
                && !Arc::ptr_eq(follower, &leader)
                && follower.log_end_offset() > offset
                && follower.dir().stalled_for() >= self.lag
            {
                changed |= in_sync.swap(false, Ordering::AcqRel);
            }
        }
        // What is appended from here on must not pass for the cut records, in a replica
        // that missed the cut (an offline one) or for a consumer that read them (KIP-320):
        // a new epoch tells them apart. It is written to `meta` before anything is cut (no
        // batch carries it until the next append, and a reopen before that must keep it,
        // with one replica too), and shown only after the cut: a consumer validating its
        // position against it before the cut would pass over the records appended there.
        if cuts_leader {
            let epoch = self.next_epoch(self.leader.load(Ordering::Acquire));
            let mut next = self.leadership();
            next.epoch = epoch;
            self.persist_as(&next)?;
            changed = false;
            // Shown even when the cut failed part way: `meta` holds it already.
            let truncated = leader.truncate_in_epoch(offset, Some(epoch));
            self.epoch.store(epoch, Ordering::Release);
            leader.set_leader_epoch(epoch);
            truncated?;
        }
        for ((follower, in_sync), syncing) in self
            .replicas()
            .iter()
            .zip(&self.in_sync)
            .zip(self.syncing.iter())
        {
            let Some(follower) = follower else { continue };
            // A follower out of sync whose disk is busy (a sync of it running, perhaps hung,
            // or its directory stuck, above) is left to its next step, which cuts it where
            // its history leaves the leader's (the new epoch tells) once its disk answers:
            // a cut syncs, and must not wait for that disk under the order lock. It cannot
            // rejoin before.
            if !Arc::ptr_eq(follower, &leader)
                && !in_sync.load(Ordering::Acquire)
                && follower.log_end_offset() > offset
                && self.busy_at(follower, syncing)
            {
                continue;
            }
            if !Arc::ptr_eq(follower, &leader) && follower.truncate_to(offset).is_err() {
                // It may still hold the cut records: it must never rejoin with them, so its
                // directory goes offline.
                follower.dir().poison();
                changed |= in_sync.swap(false, Ordering::AcqRel);
            }
        }
        if changed {
            self.persist()?;
        }
        Ok(())
    }

    /// The smallest log end among the in-sync replicas, given to all; unchanged while
    /// fewer than `min_insync_replicas` are in sync (Kafka's `isUnderMinIsr`).
    fn advance_high_watermark(&self, leader: &ReplicaLog) {
        let replicas = self.replicas();
        if self.in_sync_count() < self.required_in_sync() {
            return;
        }
        let before = leader.high_watermark();
        let high_watermark = replicas
            .iter()
            .zip(&self.in_sync)
            .filter(|(_, s)| s.load(Ordering::Acquire))
            .filter_map(|(r, _)| r.as_ref())
            .map(|r| r.log_end_offset())
            .fold(leader.log_end_offset(), u64::min);
        for replica in replicas.iter().flatten() {
            replica.advance_high_watermark(high_watermark);
        }
        // Readers waiting for records see them now: not only after an append (a restored
        // follower or a follower's catch-up copy moves it too).
        if leader.high_watermark() > before
            && let Some(hook) = self.visible.get()
        {
            (hook.0)();
        }
    }
}

/// The replicas whose log starts are floors for a leader's at open: each loaded one (to be
/// reconciled with the leader first, a cut at a divergence lowering it). An empty replica
/// cannot be reconciled (it keeps no epochs): its start counts only if it was in sync as
/// recorded, since one outside may be from a history the leader's superseded (a
/// `delete_records` there, then an unclean election), and raising to it would delete what
/// the leader appended since.
fn log_start_floors<'a>(
    replicas: &'a [Slot],
    standing: &'a [Standing],
    dirs: &'a [u32],
    isr: &'a [u32],
) -> impl Iterator<Item = &'a Arc<ReplicaLog>> {
    replicas
        .iter()
        .zip(standing)
        .zip(dirs)
        .filter(|((r, s), _)| **s == Standing::Loaded && live(r))
        .filter_map(|((r, _), d)| Some((r.as_ref()?, d)))
        .filter(|(r, d)| r.log_end_offset() > r.log_start_offset() || isr.contains(d))
        .map(|(r, _)| r)
}

/// [`raise_to_highest_log_start`] from the replicas that reconcile with `leader` first: a
/// replica's log start from a history the leader's superseded (a `delete_records` there,
/// then an unclean election) would delete what the leader appended since; its cut at the
/// divergence lowers it first. A replica that cannot be reconciled (its directory failed)
/// counts for nothing.
fn raise_after_reconciling<'a>(
    leader: &Arc<ReplicaLog>,
    replicas: impl Iterator<Item = &'a Arc<ReplicaLog>>,
) -> bool {
    let reconciled: Vec<&Arc<ReplicaLog>> = replicas
        .filter(|r| {
            Arc::ptr_eq(r, leader) || r.dir().check().and_then(|()| reconcile(leader, r)).is_ok()
        })
        .collect();
    raise_to_highest_log_start(leader, reconciled.into_iter())
}

/// Raises `leader`'s log start to the highest among `replicas`; true when it moved. Every
/// replica's log start is one the partition had (`delete_records` and retention move the
/// leader's, then the followers' to it), so the highest is a floor for the leader's: one
/// whose own checkpoint lags (a follower rebuilt after a deletion, which a crash stopped
/// before its checkpoint) must not bring deleted records back. As Kafka's, the high
/// watermark is then not below the log start.
fn raise_to_highest_log_start<'a>(
    leader: &ReplicaLog,
    replicas: impl Iterator<Item = &'a Arc<ReplicaLog>>,
) -> bool {
    let highest = replicas.map(|r| r.log_start_offset()).max();
    let Some(start) = highest.filter(|&s| s > leader.log_start_offset()) else {
        return false;
    };
    // Files left by it go once a checkpoint holds the new start; a failure takes the
    // directory offline like any other.
    let _ = leader.raise_log_start(start);
    leader.advance_high_watermark(leader.log_start_offset());
    true
}

/// Brings `follower` level with `leader` at an open; whether it is. What it copied (or
/// holds as a replica being rebuilt) is synced before it counts as in sync (and its
/// rebuilding mark goes), as a step of a running log syncs it (`rebuild_stepwise`); under
/// `None` nothing is.
fn level_at_open(leader: &ReplicaLog, follower: &ReplicaLog) -> bool {
    let copied = follow(leader, follower, usize::MAX, true, true);
    let end = follower.log_end_offset();
    if copied.is_err() || end != leader.log_end_offset() {
        return false;
    }
    // Also one being rebuilt that copied everything before a crash: its tail may be
    // unsynced.
    if (copied.is_ok_and(|records| records > 0) || follower.is_rebuilding())
        && follower.fsync_policy() != FsyncPolicy::None
        && !follower.synced_through(end)
        && let Err(error) = follower.sync_to(end)
    {
        ReplicaSet::dir_failed(follower, &error);
        return false;
    }
    true
}

/// The first epoch after `current` that a leader in directory `dir` takes. Epochs are
/// numbered by directory (`epoch % dir_count == dir`), so two directories that each became
/// leader without hearing of the other (each opened while the other was unreadable) never
/// stamp the same epoch, and reconciliation tells their histories apart.
fn next_epoch(current: i32, dir: u32, dir_count: u32) -> i32 {
    let n = i64::from(dir_count.max(1));
    let next = i64::from(current) + 1;
    let epoch = next + (i64::from(dir) - next).rem_euclid(n);
    i32::try_from(epoch).unwrap_or(i32::MAX)
}

/// The live replica (directory online, not `except`) with the furthest log end, the first in
/// assignment order on a tie: an unclean election's choice, losing the least.
fn most_complete(replicas: &[Slot], except: Option<usize>) -> Option<usize> {
    replicas
        .iter()
        .enumerate()
        .filter(|(i, r)| Some(*i) != except && live(r))
        .filter_map(|(i, r)| Some((i, r.as_ref()?)))
        .max_by_key(|(i, r)| (r.log_end_offset(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// Whether a replica is present and its directory online.
fn live(slot: &Slot) -> bool {
    slot.as_ref().is_some_and(|r| !r.dir().is_poisoned())
}

/// Brings `follower` in line with `leader`: with `check`, first cuts what the leader does
/// not have (`reconcile`); then copies at most `steps` reads (see `catch_up`). Returns the
/// records copied.
fn follow(
    leader: &ReplicaLog,
    follower: &ReplicaLog,
    steps: usize,
    check: bool,
    wait: bool,
) -> Result<u64> {
    follower.dir().check()?;
    if check {
        reconcile(leader, follower)?;
    }
    catch_up(leader, follower, steps, wait)
}

/// Finds where the follower's history diverges from the leader's and truncates it there
/// (Kafka's `getOffsetTruncationState`, KIP-279): ask the leader where the follower's
/// latest epoch ends; if the follower knows that epoch, cut at the smaller end, else cut
/// where the follower's own copy of it ends and ask again with the epoch before.
fn reconcile(leader: &ReplicaLog, follower: &ReplicaLog) -> Result<()> {
    // Each round cuts the follower's log or ends, and the epochs it asks about decrease.
    for _ in 0..=follower.epoch_entries().len() + 1 {
        let end = follower.log_end_offset();
        if end == follower.log_start_offset() {
            return Ok(());
        }
        // Kafka falls back to the follower's high watermark when epochs cannot tell; a
        // replica's high watermark is not known to be committed after a reopen, so the
        // follower starts over instead (a log without epochs cannot come from tarnlog).
        let Some(epoch) = follower.latest_epoch() else {
            return follower.truncate_to(follower.log_start_offset());
        };
        let (leader_epoch, leader_end) = leader.end_offset_for(epoch);
        let Some(leader_end) = leader_end else {
            // The leader has never seen an epoch this new.
            return follower.truncate_to(follower.log_start_offset());
        };
        let (follower_epoch, follower_end) = follower.end_offset_for(leader_epoch);
        let follower_end = follower_end.unwrap_or(end).min(end);
        if follower_epoch == leader_epoch {
            let cut = leader_end.min(follower_end);
            return follower.truncate_to(cut);
        }
        follower.truncate_to(follower_end)?;
        if follower.log_end_offset() == end && follower.latest_epoch() == Some(epoch) {
            // Nothing moved: the follower's history before this epoch matches.
            return follower.truncate_to(leader_end.min(end));
        }
    }
    Ok(())
}

/// Whether [`reconcile`] would cut the follower, by its first round and without cutting: a
/// follower whose disk is busy is not cut under the order lock. (When it says no where
/// `reconcile` would cut after all, the cut runs as before.)
fn needs_cut(leader: &ReplicaLog, follower: &ReplicaLog) -> bool {
    let end = follower.log_end_offset();
    if end == follower.log_start_offset() {
        return false;
    }
    let Some(epoch) = follower.latest_epoch() else {
        return true;
    };
    let (leader_epoch, leader_end) = leader.end_offset_for(epoch);
    let Some(leader_end) = leader_end else {
        return true;
    };
    let (follower_epoch, follower_end) = follower.end_offset_for(leader_epoch);
    let follower_end = follower_end.unwrap_or(end).min(end);
    if follower_epoch == leader_epoch {
        leader_end.min(follower_end) < end
    } else {
        follower_end < end || leader_end < end
    }
}

/// Copies the leader's batches from the follower's log end towards the leader's, in at
/// most `steps` reads of `CATCH_UP_BYTES`, each followed (with `wait`) by one sync under the
/// topic's fsync policy; returns the records copied. A follower ahead of the leader or
/// ending before the leader's log starts cannot be caught up.
fn catch_up(leader: &ReplicaLog, follower: &ReplicaLog, steps: usize, wait: bool) -> Result<u64> {
    let behind = |reason: &str| {
        Err(Error::InvalidRecord {
            reason: format!("{}: {reason}", follower.topic_partition()),
        })
    };
    let mut records = 0;
    for _ in 0..steps {
        let from = follower.log_end_offset();
        let end = leader.log_end_offset();
        let start = leader.log_start_offset();
        // An empty follower at the leader's end is level only if its start is the
        // leader's too (see below).
        if from == end && (follower.log_start_offset() != from || from <= start) {
            break;
        }
        if from > end {
            if follower.log_start_offset() != from {
                return behind("the follower is ahead of its leader");
            }
            // An empty follower past the leader's end (cut to its own log start when no
            // epoch could tell where it diverged, after an unclean election) starts over
            // as a whole copy of the leader.
            follower.restart_at(batch_base(leader, start, end)?)?;
            continue;
        }
        if from <= start || follower.log_start_offset() == from {
            // A follower wholly below the leader's log start (deleted there), or an empty
            // one, starts afresh where the leader's batch holding the log start begins (a
            // log start may fall inside a batch): Kafka's follower on
            // `UnexpectedAppendOffset`. An empty one starts there even when its own start
            // is higher: that start may be from a history the leader's superseded, and
            // once the follower is in sync a later open would raise the leader's to it.
            let base = batch_base(leader, start, end)?;
            if base != from {
                follower.restart_at(base)?;
                continue;
            }
        }
        let read = leader.read(from.max(start), CATCH_UP_BYTES, end)?;
        if let Some(first) = read.batches().next() {
            let base = u64::try_from(first?.base_offset()).unwrap_or(from);
            if base < from && from > start {
                // The leader's cleaner merged batches the follower holds part of into one
                // empty batch (see `clean.rs`): the follower takes it whole.
                follower.truncate_to(base)?;
                continue;
            }
        }
        records += follower.append_copies(&read, wait)?;
        if follower.log_end_offset() == from {
            return behind("no progress copying from the leader");
        }
    }
    if follower.log_start_offset() < leader.log_start_offset() {
        // What the leader deleted (retention, `delete_records`) is gone here too, before the
        // follower can rejoin and perhaps lead.
        follower.raise_log_start(leader.log_start_offset())?;
    }
    Ok(records)
}

/// The base offset of the leader's batch holding `offset` (`offset` itself at its log end).
fn batch_base(leader: &ReplicaLog, offset: u64, end: u64) -> Result<u64> {
    let read = leader.read(offset, 1, end)?;
    match read.batches().next() {
        Some(batch) => Ok(u64::try_from(batch?.base_offset()).unwrap_or(offset)),
        None => Ok(offset),
    }
}

#[cfg(test)]
mod tests {
    //! Ported from Kafka's `AbstractFetcherThreadTest`: a follower whose history diverged
    //! from its leader's converges to exactly the leader's log.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::clock::SystemClock;
    use crate::codec::BatchBuilder;
    use crate::replica::LoadOptions;
    use crate::replica::epochs::EpochCache;
    use crate::storage::{OsStorage, StorageDir};

    /// Opening `topic-0` in `dir`, unclean, with the default config.
    fn options(dir: &Arc<StorageDir>) -> LoadOptions {
        LoadOptions {
            tp: TopicPartition::new("topic", 0),
            dir: Arc::clone(dir),
            config: TopicConfig::default(),
            clock: Arc::new(SystemClock),
            clean: false,
            recovery_point: None,
            log_start: None,
            high_watermark: None,
            prefaulter: None,
        }
    }

    fn replica(root: &std::path::Path, name: &str) -> ReplicaLog {
        let dir = StorageDir::open(OsStorage::shared(), &root.join(name)).unwrap();
        ReplicaLog::create(options(&Arc::new(dir))).unwrap()
    }

    /// One single-record batch per `(epoch, value)`, each stamped with its epoch.
    fn write(log: &ReplicaLog, batches: &[(i32, &str)]) {
        for &(epoch, value) in batches {
            log.set_leader_epoch(epoch);
            let mut builder = BatchBuilder::new();
            builder.push(0, None, Some(value.as_bytes()), &[]);
            log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
        }
    }

    /// `(epoch, value)` of each batch.
    fn contents(log: &ReplicaLog) -> Vec<(i32, String)> {
        let read = log.read(0, 1 << 20, log.log_end_offset()).unwrap();
        read.batches()
            .map(|batch| {
                let batch = batch.unwrap();
                let record = batch.records().next().unwrap().unwrap();
                let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                (batch.header().partition_leader_epoch, value)
            })
            .collect()
    }

    fn converge(follower: &[(i32, &str)], leader: &[(i32, &str)]) {
        let root = tempfile::tempdir().unwrap();
        let (f, l) = (replica(root.path(), "f"), replica(root.path(), "l"));
        write(&f, follower);
        write(&l, leader);
        follow(&l, &f, usize::MAX, true, true).unwrap();
        assert_eq!(contents(&f), contents(&l));
        assert_eq!(f.epoch_entries(), l.epoch_entries());
        assert_eq!(f.log_end_offset(), l.log_end_offset());
    }

    /// A leader and a follower of a compacted topic: the follower copied offsets 0..10 of
    /// one key; the leader wrote 10..20 more, rolled and cleaned, so one empty batch holds
    /// 0..=18 and the follower's end lies inside it.
    fn cleaned_run(
        root: &std::path::Path,
        policy: crate::config::CleanupPolicy,
    ) -> (ReplicaLog, ReplicaLog) {
        let config = TopicConfig::default()
            .cleanup_policy(policy)
            .segment_bytes(4096);
        let open = |name: &str| {
            let dir = StorageDir::open(OsStorage::shared(), &root.join(name)).unwrap();
            let mut options = options(&Arc::new(dir));
            options.config = config.clone();
            ReplicaLog::create(options).unwrap()
        };
        let (leader, follower) = (open("l"), open("f"));
        let put = |value: &str| {
            let mut builder = BatchBuilder::new();
            builder.push(0, Some(b"k"), Some(value.as_bytes()), &[]);
            leader
                .append_then(builder.finish().unwrap(), |_| {})
                .unwrap();
        };
        for i in 0..10 {
            put(&i.to_string());
        }
        follow(&leader, &follower, usize::MAX, true, true).unwrap();
        for i in 10..20 {
            put(&i.to_string());
        }
        leader.roll(&mut leader.writer.lock(), 0, 0).unwrap();
        leader
            .clean(0, u64::MAX, 100, &AtomicBool::new(false))
            .unwrap();
        let first = leader.read(0, 1 << 20, 20).unwrap();
        let first = first.batches().next().unwrap().unwrap();
        assert_eq!((first.base_offset(), first.last_offset()), (0, 18));
        (leader, follower)
    }

    /// A follower whose log ends inside a run of batches the leader's cleaner merged into
    /// one empty batch truncates to the run's start and copies it whole.
    #[test]
    fn follower_inside_a_cleaned_run_takes_it_whole() {
        let root = tempfile::tempdir().unwrap();
        let (leader, follower) = cleaned_run(root.path(), crate::config::CleanupPolicy::Compact);
        follow(&leader, &follower, usize::MAX, true, true).unwrap();
        let bytes = |log: &ReplicaLog| -> Vec<Vec<u8>> {
            let read = log.read(0, 1 << 20, 20).unwrap();
            read.batches()
                .map(|b| b.unwrap().bytes().to_vec())
                .collect()
        };
        assert_eq!(bytes(&follower), bytes(&leader));
        assert_eq!(follower.log_end_offset(), 20);
    }

    /// The same when the leader's log start lies inside that run, at the follower's end.
    #[test]
    fn follower_at_a_log_start_inside_a_cleaned_run() {
        let root = tempfile::tempdir().unwrap();
        let policy = crate::config::CleanupPolicy::CompactDelete;
        let (leader, follower) = cleaned_run(root.path(), policy);
        leader.raise_log_start(10).unwrap();
        follow(&leader, &follower, usize::MAX, true, true).unwrap();
        assert_eq!(follower.log_end_offset(), 20);
        assert_eq!(follower.log_start_offset(), 10);
    }

    /// An empty follower whose log starts past its leader's end (after an unclean
    /// election cut it to its own log start) becomes a whole copy of the leader instead of
    /// being refused as "ahead".
    #[test]
    fn an_empty_follower_past_the_leaders_end_starts_over() {
        let root = tempfile::tempdir().unwrap();
        let (follower, leader) = (replica(root.path(), "f"), replica(root.path(), "l"));
        write(&leader, &[(0, "a"), (0, "b"), (0, "c")]);
        follower.restart_at(10).unwrap();
        follow(&leader, &follower, usize::MAX, true, true).unwrap();
        assert_eq!(contents(&follower), contents(&leader));
        assert_eq!(
            (follower.log_start_offset(), follower.log_end_offset()),
            (0, 3)
        );
    }

    /// `testTruncation`: follower epochs [0, 2, 4], leader [1, 3, 5], offsets 0, 1, 2.
    #[test]
    fn truncation_to_the_common_prefix() {
        converge(
            &[(0, "a"), (2, "b"), (4, "c")],
            &[(1, "a"), (3, "b"), (5, "c")],
        );
    }

    /// `testDivergingEpochs`: follower [0 a, 2 b, 4 c], leader [0 a, 2 b, 5 d]: the
    /// follower keeps a and b, drops c, and copies d.
    #[test]
    fn diverging_epochs_keep_the_shared_prefix() {
        let root = tempfile::tempdir().unwrap();
        let (f, l) = (replica(root.path(), "f"), replica(root.path(), "l"));
        write(&f, &[(0, "a"), (2, "b"), (4, "c")]);
        write(&l, &[(0, "a"), (2, "b"), (5, "d")]);
        reconcile(&l, &f).unwrap();
        assert_eq!(
            f.log_end_offset(),
            2,
            "cut where epoch 2 ends on the leader"
        );
        assert_eq!(f.epoch_entries(), [(0, 0), (2, 1)]);
        catch_up(&l, &f, usize::MAX, true).unwrap();
        assert_eq!(contents(&f), contents(&l));
        assert_eq!(f.epoch_entries(), [(0, 0), (2, 1), (5, 2)]);
    }

    /// A follower that is a prefix of its leader loses nothing; one that is ahead in the
    /// leader's own epoch is cut back to the leader's end; an empty one copies everything.
    #[test]
    fn prefixes_and_longer_tails() {
        converge(&[(0, "a")], &[(0, "a"), (0, "b"), (3, "c")]);
        converge(&[(0, "a"), (0, "b"), (0, "x")], &[(0, "a"), (0, "b")]);
        converge(&[], &[(1, "a"), (2, "b")]);
        converge(&[(7, "a")], &[(1, "a"), (2, "b")]);
    }

    /// A cleaning leaves an out-of-sync follower alone: here one holding a tail its leader
    /// never had (as a returning replica does until it is reconciled), whose newer value
    /// of `k` would have removed the older one the leader still holds.
    #[test]
    fn an_out_of_sync_follower_is_not_cleaned() {
        let root = tempfile::tempdir().unwrap();
        let config = TopicConfig::default()
            .cleanup_policy(crate::config::CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.0);
        let open = |name: &str| {
            let dir = StorageDir::open(OsStorage::shared(), &root.path().join(name)).unwrap();
            let mut options = options(&Arc::new(dir));
            options.config = config.clone();
            Arc::new(ReplicaLog::create(options).unwrap())
        };
        let put = |log: &ReplicaLog, key: &str, value: &str| {
            let mut builder = BatchBuilder::new();
            builder.push(0, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
            log.append_then(builder.finish().unwrap(), |_| {}).unwrap();
        };
        let records = |log: &ReplicaLog| -> Vec<(i64, String)> {
            let read = log.read(0, 1 << 20, log.log_end_offset()).unwrap();
            read.records()
                .map(|r| {
                    let r = r.unwrap();
                    let value = r.value.unwrap();
                    (r.offset, String::from_utf8(value.to_vec()).unwrap())
                })
                .collect()
        };
        let (leader, follower) = (open("l"), open("f"));
        for (key, value) in [("a", "1"), ("a", "2"), ("k", "old")] {
            put(&leader, key, value);
        }
        let recorded = Leadership {
            leader: Some(0),
            epoch: 0,
            isr: vec![0, 1],
        };
        let set = ReplicaSet::open(
            TopicPartition::new("topic", 0),
            vec![Some(Arc::clone(&leader)), Some(Arc::clone(&follower))],
            vec![0, 1],
            &[Standing::Loaded; 2],
            &recorded,
            &config,
            SetOptions {
                dir_count: 2,
                replica_lag_time_max_ms: 30_000,
            },
        );
        assert_eq!(follower.log_end_offset(), 3);
        for key in ["b", "c", "d"] {
            put(&leader, key, "x");
        }
        // The follower's own tail, in an epoch the leader never had.
        follower.set_leader_epoch(101);
        put(&follower, "k", "new");
        set.in_sync[1].store(false, Ordering::Release);
        for log in [&leader, &follower] {
            log.roll(&mut log.writer.lock(), 0, 0).unwrap();
            log.advance_high_watermark(u64::MAX);
        }
        let before = records(&follower);
        let cleaned = set.clean(0, 100, &AtomicBool::new(false)).unwrap();
        assert!(cleaned.is_some_and(|c| c.segments > 0));
        assert_eq!(
            records(&leader)[0],
            (1, "2".to_owned()),
            "the leader cleaned"
        );
        assert_eq!(records(&follower), before);
    }

    /// A truncation writes its new epoch to `meta` before the cut and shows it (to
    /// consumers validating their positions, and to appends) only after: shown before,
    /// a position past the cut would be checked against a log not yet cut, pass, and then
    /// skip the records appended at the cut.
    #[test]
    fn a_truncations_epoch_is_recorded_before_the_cut_and_shown_after() {
        let root = tempfile::tempdir().unwrap();
        let leader = Arc::new(replica(root.path(), "l"));
        write(&leader, &[(0, "a"), (0, "b"), (0, "c")]);
        let recorded = Leadership {
            leader: Some(0),
            epoch: 0,
            isr: vec![0],
        };
        let set = Arc::new(ReplicaSet::open(
            TopicPartition::new("topic", 0),
            vec![Some(Arc::clone(&leader))],
            vec![0],
            &[Standing::Loaded],
            &recorded,
            &TopicConfig::default(),
            SetOptions {
                dir_count: 1,
                replica_lag_time_max_ms: 30_000,
            },
        ));
        let before = set.epoch();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (weak, log) = (Arc::downgrade(&set), Arc::downgrade(&leader));
        let record = Arc::clone(&seen);
        set.set_persist(PersistHook(Box::new(move |leadership| {
            let (set, log) = (weak.upgrade().unwrap(), log.upgrade().unwrap());
            record.lock().push((
                leadership.epoch,
                set.epoch(),
                log.leader_epoch.load(Ordering::Acquire),
                log.log_end_offset(),
            ));
            Ok(())
        })));
        set.truncate(1).unwrap();
        let after = set.epoch();
        assert!(after > before);
        assert_eq!(*seen.lock(), [(after, before, before, 3)]);
        assert_eq!(leader.log_end_offset(), 1);
        let mut builder = BatchBuilder::new();
        builder.push(0, None, Some(b"x"), &[]);
        set.append(builder.finish().unwrap(), false, |_| {})
            .unwrap();
        assert_eq!(leader.epoch_entries(), [(before, 0), (after, 1)]);
    }

    /// Epochs are numbered by leader directory: never the same for two directories, always
    /// after the current one.
    #[test]
    fn epochs_are_numbered_by_directory() {
        assert_eq!(next_epoch(0, 0, 1), 1);
        assert_eq!(next_epoch(0, 0, 3), 3);
        assert_eq!(next_epoch(0, 1, 3), 1);
        assert_eq!(next_epoch(4, 2, 3), 5);
        assert_eq!(next_epoch(5, 2, 3), 8);
        assert_eq!(next_epoch(i32::MAX - 1, 1, 3), i32::MAX);
        for current in 0..50 {
            let chosen: Vec<i32> = (0..3).map(|d| next_epoch(current, d, 3)).collect();
            for (d, &epoch) in chosen.iter().enumerate() {
                assert!(epoch > current);
                assert_eq!(epoch % 3, d as i32);
            }
        }
    }

    /// The cache survives a reopen, and is rebuilt from the batches when its file is gone.
    #[test]
    fn epoch_cache_persists_and_rebuilds() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path(), "r");
        write(&log, &[(0, "a"), (2, "b"), (2, "c"), (4, "d")]);
        let expected = vec![(0, 0), (2, 1), (4, 3)];
        assert_eq!(log.epoch_entries(), expected);
        let path = log.path().to_path_buf();
        let dir = Arc::clone(log.dir());
        drop(log);
        let options = || options(&dir);
        let (reopened, _) = ReplicaLog::load(options()).unwrap();
        assert_eq!(reopened.epoch_entries(), expected);
        drop(reopened);
        std::fs::remove_file(path.join(crate::replica::epochs::FILE)).unwrap();
        let (rebuilt, _) = ReplicaLog::load(options()).unwrap();
        assert_eq!(rebuilt.epoch_entries(), expected);
        assert!(path.join(crate::replica::epochs::FILE).exists());
        drop(rebuilt);
        std::fs::write(path.join(crate::replica::epochs::FILE), b"garbage").unwrap();
        let (rebuilt, _) = ReplicaLog::load(options()).unwrap();
        assert_eq!(rebuilt.epoch_entries(), expected);
        rebuilt.truncate_to(2).unwrap();
        assert_eq!(rebuilt.epoch_entries(), [(0, 0), (2, 1)]);
    }

    /// An append's new epoch reaches the checkpoint with the sync that covers the batch,
    /// not before; a crash before that sync leaves it to the batches above the recovery
    /// point, which load assigns again (as Kafka's recovery does).
    #[test]
    fn new_epochs_are_checkpointed_by_the_sync_and_recovered_from_the_batches() {
        let root = tempfile::tempdir().unwrap();
        let log = replica(root.path(), "r");
        let on_disk = |log: &ReplicaLog| {
            let cache = EpochCache::read(log.dir(), log.path()).unwrap();
            cache.map(|c| c.entries().to_vec()).unwrap_or_default()
        };
        write(&log, &[(0, "a"), (0, "b")]);
        log.flush().unwrap();
        assert_eq!(on_disk(&log), [(0, 0)]);
        write(&log, &[(3, "c"), (5, "d")]);
        assert_eq!(log.epoch_entries(), [(0, 0), (3, 2), (5, 3)]);
        assert_eq!(on_disk(&log), [(0, 0)], "written by the append");
        // A crash now: the recovery point (2) is below the new epochs' batches.
        let mut crashed = log.unclean_options();
        crashed.recovery_point = Some(log.recovery_point());
        assert_eq!(crashed.recovery_point, Some(2));
        let (reopened, _) = ReplicaLog::load(crashed).unwrap();
        assert_eq!(reopened.epoch_entries(), [(0, 0), (3, 2), (5, 3)]);
        drop(reopened);
        // (The load wrote what it recovered.) A new epoch again, then the sync.
        write(&log, &[(7, "e")]);
        assert_eq!(on_disk(&log), [(0, 0), (3, 2), (5, 3)]);
        log.flush().unwrap();
        assert_eq!(on_disk(&log), [(0, 0), (3, 2), (5, 3), (7, 4)]);
        assert_eq!(log.recovery_point(), 5);
        // A crash with the recovery point inside an epoch whose entry the file holds: its
        // start stays where the file says, not at the recovery point.
        let other = replica(root.path(), "s");
        write(&other, &[(3, "a"), (3, "b"), (5, "c")]);
        other.flush().unwrap();
        let mut crashed = other.unclean_options();
        crashed.recovery_point = Some(1);
        drop(other);
        let (reopened, _) = ReplicaLog::load(crashed).unwrap();
        assert_eq!(reopened.epoch_entries(), [(3, 0), (5, 2)]);
    }

    /// A roll that syncs the sealed segment (the recovery point passes its batches) writes
    /// their epochs first.
    #[test]
    fn a_synced_roll_checkpoints_the_epochs_it_covers() {
        let root = tempfile::tempdir().unwrap();
        let config = TopicConfig::default()
            .segment_bytes(200)
            .fsync(FsyncPolicy::EveryRecords(1000));
        let log = crate::replica::test_replica(root.path(), config, 0);
        write(&log, &[(2, "a"), (4, "b")]);
        assert_eq!(log.recovery_point(), 0);
        while log.recovery_point() == 0 {
            write(&log, &[(4, "more")]);
        }
        let on_disk = EpochCache::read(log.dir(), log.path()).unwrap().unwrap();
        assert_eq!(on_disk.entries(), [(2, 0), (4, 1)]);
    }
}
