//! The facade: open and close, topic administration, and the `Topic` / `Partition` handles.
//!
//! Invariants: administration (create/delete topic) is serialised by `admin`; `meta` is
//! rewritten (atomically, in every directory) only after the files it names exist, and
//! before files it no longer names are removed. Every handle operation first checks that the
//! log is open.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::clock::{Clock, SystemClock};
use crate::codec::{BatchBuilder, NO_TIMESTAMP};
use crate::config::TopicConfig;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::describe::{DirStatus, MaintenanceReport, PartitionDescription, TopicDescription};
use crate::error::{Error, Result};
use crate::group::admin::{GroupDescription, GroupState, MemberDescription, PartitionLag, ResetTo};
use crate::group::coordinator::{Coordinator, MemberRef, TopicShape};
use crate::metadata::{self, Leadership, Meta, Offered, TopicMeta};
use crate::notify::Notifier;
use crate::offsets::{CONSUMER_OFFSETS, OffsetAndMetadata, OffsetStore};
use crate::producer::{Producer, ProducerConfig};
use crate::read::LogRead;
use crate::recovery::RecoveryReport;
use crate::replica::{
    LoadOptions, PersistHook, Prefaulter, ReplicaLog, ReplicaSet, SetOptions, Slot, Standing,
    VisibleHook,
};
use crate::storage::{OpenMode, OsStorage, Storage, StorageDir};
use crate::types::{AppendInfo, TimestampOffset, TopicPartition};

/// Names reserved for Kafka's internal topics.
pub(crate) const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// Kafka's `offsets.retention.check.interval.ms`.
const OFFSETS_RETENTION_CHECK_MS: i64 = 600_000;

/// Builds a [`Log`] with more than the defaults.
///
/// ```
/// # fn main() -> tarnlog::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let log = tarnlog::Log::builder()
///     .dir(dir.path())
///     .default_topic_config(tarnlog::TopicConfig::default().partitions(4))
///     .open()?;
/// log.create_topic("events", None)?;
/// assert_eq!(log.topic("events")?.partitions(), 4);
/// log.close()
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LogBuilder {
    dirs: Vec<PathBuf>,
    defaults: TopicConfig,
    clock: Arc<dyn Clock>,
    storage: Arc<dyn Storage>,
    background_tick_ms: u64,
    replica_lag_time_max_ms: u64,
    temp_root: Option<PathBuf>,
    prefault: Option<bool>,
    checkpoint_interval_ms: u64,
    auto_create_topics: bool,
    offsets_topic_partitions: u32,
    offsets_topic_segment_bytes: u64,
    offsets_topic_replication_factor: u32,
    group_initial_rebalance_delay_ms: u64,
    offsets_retention_minutes: u64,
    retention_check_interval_ms: u64,
    background_maintenance: bool,
    cleaner_dedupe_buffer_size: u64,
    cleaner_backoff_ms: u64,
}

impl Default for LogBuilder {
    fn default() -> Self {
        LogBuilder {
            dirs: Vec::new(),
            defaults: TopicConfig::default(),
            clock: Arc::new(SystemClock),
            storage: OsStorage::shared(),
            background_tick_ms: 100,
            replica_lag_time_max_ms: 30_000,
            temp_root: None,
            prefault: None,
            checkpoint_interval_ms: 60_000,
            auto_create_topics: false,
            offsets_topic_partitions: 50,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_topic_replication_factor: 3,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_retention_minutes: 10_080,
            retention_check_interval_ms: 300_000,
            background_maintenance: true,
            cleaner_dedupe_buffer_size: 128 << 20,
            cleaner_backoff_ms: 15_000,
        }
    }
}

impl LogBuilder {
    /// Adds a storage directory (created if missing). Partitions are spread over all of them.
    #[must_use]
    pub fn dir(mut self, path: impl AsRef<Path>) -> Self {
        self.dirs.push(path.as_ref().to_path_buf());
        self
    }

    /// Sets all storage directories at once, replacing earlier ones. Their order matters:
    /// it is recorded, and reopening with another order is refused.
    #[must_use]
    pub fn dirs<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.dirs = paths
            .into_iter()
            .map(|p| p.as_ref().to_path_buf())
            .collect();
        self
    }

    /// The config of topics created without one.
    #[must_use]
    pub fn default_topic_config(mut self, config: TopicConfig) -> Self {
        self.defaults = config;
        self
    }

    /// The clock every time-dependent decision reads (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The storage every file operation goes through (default: the OS). Tests pass a
    /// [`FaultStorage`](crate::storage::FaultStorage) to inject I/O errors.
    #[must_use]
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self.prefault = self.prefault.or(Some(false));
        self
    }

    /// Whether a background thread allocates and faults in segment pages ahead of writers,
    /// taking page faults off the append path. Default: on with the OS storage, off when a
    /// custom [`storage`](Self::storage) is set (so fault-injection tests see a
    /// deterministic sequence of calls).
    #[must_use]
    pub fn prefault(mut self, enabled: bool) -> Self {
        self.prefault = Some(enabled);
        self
    }

    /// Whether a producer sending to a topic that does not exist creates it with the
    /// [default topic config](Self::default_topic_config) (Kafka's
    /// `auto.create.topics.enable`). Default `false`: such sends fail with `UnknownTopic`.
    #[must_use]
    pub fn auto_create_topics(mut self, enabled: bool) -> Self {
        self.auto_create_topics = enabled;
        self
    }

    /// Partitions of `__consumer_offsets` when the first commit creates it (Kafka's
    /// `offsets.topic.num.partitions`). Default 50; allowed 1..=1000. An existing topic
    /// keeps its count.
    #[must_use]
    pub fn offsets_topic_partitions(mut self, partitions: u32) -> Self {
        self.offsets_topic_partitions = partitions;
        self
    }

    /// Segment size of `__consumer_offsets` when the first commit creates it (Kafka's
    /// `offsets.topic.segment.bytes`). Default 100 MiB; allowed 14..=2^31-1. The topic is
    /// compacted: the cleaner keeps each group's latest commits once a segment is sealed.
    #[must_use]
    pub fn offsets_topic_segment_bytes(mut self, bytes: u64) -> Self {
        self.offsets_topic_segment_bytes = bytes;
        self
    }

    /// Replicas of each `__consumer_offsets` partition when the first commit creates it
    /// (Kafka's `offsets.topic.replication.factor`), capped at the number of storage
    /// directories. Default 3; allowed 1..=32767. Directories offline at that moment get
    /// their replicas when they are restored (Kafka instead refuses to create the topic
    /// until enough brokers are up): a disk that is out when a fresh log first commits does
    /// not leave the group offsets on fewer disks for good.
    #[must_use]
    pub fn offsets_topic_replication_factor(mut self, replicas: u32) -> Self {
        self.offsets_topic_replication_factor = replicas;
        self
    }

    /// How long the first rebalance of an empty group waits for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`), so that consumers starting together share one
    /// generation; in a new group it runs again while new members came during it, up to
    /// the rebalance timeout, as Kafka's. Default 3000, on the log's clock; 0 assigns at
    /// once.
    #[must_use]
    pub fn group_initial_rebalance_delay_ms(mut self, ms: u64) -> Self {
        self.group_initial_rebalance_delay_ms = ms;
        self
    }

    /// How long the committed offsets of a group without members are kept after its last
    /// commit or after it became empty (Kafka's `offsets.retention.minutes`), those of a
    /// group never joined (a standalone consumer's) each after its own commit, and those of
    /// topics a Stable group no longer subscribes to after their commit (KIP-496). Default
    /// 10080 (7 days); allowed 1..=1000000000. Expiry runs every 10 minutes of commits and at
    /// [`Log::maintain`].
    #[must_use]
    pub fn offsets_retention_minutes(mut self, minutes: u64) -> Self {
        self.offsets_retention_minutes = minutes;
        self
    }

    /// How often the recovery points are checkpointed by the background thread (Kafka's
    /// `log.flush.offset.checkpoint.interval.ms`). Default 60000; allowed 1..=2^63-1. After a
    /// crash, recovery rescans from the last checkpoint.
    #[must_use]
    pub fn checkpoint_interval_ms(mut self, ms: u64) -> Self {
        self.checkpoint_interval_ms = ms;
        self
    }

    /// How often the background thread applies retention (`retention_ms`,
    /// `retention_bytes`) to every topic: Kafka's `log.retention.check.interval.ms`
    /// (default 300000; allowed 1..=2^63-1).
    #[must_use]
    pub fn retention_check_interval_ms(mut self, ms: u64) -> Self {
        self.retention_check_interval_ms = ms;
        self
    }

    /// Memory for the log cleaner's offset map (Kafka's `log.cleaner.dedupe.buffer.size`,
    /// default 128 MiB; allowed 24..=2^40). As in Kafka it holds `bytes / 24 × 0.9` keys
    /// per cleaning; a partition with more distinct keys in its dirty part is cleaned over
    /// several passes. (tarnlog maps the key bytes themselves, borrowed from the segments:
    /// about twice Kafka's 24 bytes per key, whatever the key's length.)
    #[must_use]
    pub fn cleaner_dedupe_buffer_size(mut self, bytes: u64) -> Self {
        self.cleaner_dedupe_buffer_size = bytes;
        self
    }

    /// How long the cleaner thread sleeps between passes over the compacted topics
    /// (Kafka's `log.cleaner.backoff.ms`, default 15000; allowed 1..=2^63-1).
    #[must_use]
    pub fn cleaner_backoff_ms(mut self, ms: u64) -> Self {
        self.cleaner_backoff_ms = ms;
        self
    }

    /// Whether maintenance runs on its own (default true): retention on the background
    /// thread, compaction on the cleaner thread. With `false`, both run only when
    /// [`Log::maintain`] is called: for deterministic tests and embedded main loops.
    #[must_use]
    pub fn background_maintenance(mut self, enabled: bool) -> Self {
        self.background_maintenance = enabled;
        self
    }

    /// How often the background thread wakes for interval fsyncs (default 100 ms;
    /// allowed 1..=60000).
    #[must_use]
    pub fn background_tick_ms(mut self, ms: u64) -> Self {
        self.background_tick_ms = ms;
        self
    }

    /// Kafka's `replica.lag.time.max.ms` (default 30000; allowed 1..=86400000): an in-sync
    /// follower whose copy of an append is not durable within this time leaves the in-sync
    /// set, so a slow directory stops holding `acks=All` appends back; it rejoins once
    /// level with the leader and synced.
    #[must_use]
    pub fn replica_lag_time_max_ms(mut self, ms: u64) -> Self {
        self.replica_lag_time_max_ms = ms;
        self
    }

    /// Opens the log: locks every directory, reads the topics, and recovers every
    /// partition (see [`Log::recovery_report`]).
    ///
    /// # Errors
    /// `InvalidConfig` for no directory, a repeated or nested one, a bad default config or
    /// a directory order that differs from the recorded one; `Locked` when another `Log`
    /// holds a directory; `Corruption` when synced data or all copies of `meta` are damaged;
    /// `Io` when the file system refuses.
    pub fn open(self) -> Result<Log> {
        self.validate()?;
        let canonical: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|d| canonical_dir(d))
            .collect::<Result<_>>()?;
        check_dirs(&canonical)?;
        let existed: Vec<bool> = self.dirs.iter().map(|d| self.storage.exists(d)).collect();
        let (dirs, offline) = self.open_dirs()?;
        let (mut meta, lineage) = load_meta(&dirs).inspect_err(|_| self.undo_created(&existed))?;
        let prefaulter = self.start_prefaulter()?;
        let mut report = RecoveryReport {
            offline_dirs: offline,
            ..RecoveryReport::default()
        };
        let set_options = SetOptions {
            dir_count: dirs.len() as u32,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
        };
        let topics = load_topics(
            &dirs,
            &meta,
            &lineage,
            &self,
            prefaulter.as_ref(),
            set_options,
            &mut report,
        )?;
        finish_deletions(&dirs, &mut meta);
        let meta_slots = (0..dirs.len()).map(|_| Arc::default()).collect();
        let inner = Arc::new(Inner {
            dir_count: dirs.len(),
            dirs: RwLock::new(dirs),
            clock: self.clock,
            defaults: self.defaults,
            state: RwLock::new(State { meta, topics }),
            admin: Mutex::new(()),
            closed: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            report,
            temp_root: self.temp_root,
            auto_create_topics: self.auto_create_topics,
            offsets: OffsetStore::new(self.offsets_topic_partitions),
            coordinator: Coordinator::new(self.group_initial_rebalance_delay_ms),
            offsets_retention_ms: (self.offsets_retention_minutes * 60_000) as i64,
            last_offsets_expiry_ms: AtomicI64::new(i64::MIN),
            appended: Arc::new(Notifier::default()),
            restoring: Mutex::new(Vec::new()),
            #[cfg(test)]
            restore_step: Mutex::new(None),
            background: Mutex::new(None),
            cleaner: Mutex::new(None),
            offsets_topic_segment_bytes: self.offsets_topic_segment_bytes,
            offsets_topic_replication_factor: self.offsets_topic_replication_factor,
            cleaner_map_entries: (self.cleaner_dedupe_buffer_size / 24 * 9 / 10).max(1) as usize,
            wake: Condvar::new(),
            stop: Mutex::new(false),
            next_placement: AtomicU64::new(0),
            prefaulter,
            checkpoint_lock: Mutex::new(()),
            meta_lock: Mutex::new(()),
            meta_slots: Mutex::new(meta_slots),
            run: new_run_id(),
            offered: Mutex::new(lineage.offered),
            set_options,
        });
        // Log starts an open moved are checkpointed before `meta` names their replicas in
        // sync (as `persist_leadership` orders them while the log runs): a crash between
        // must not leave an in-sync replica with its old start on disk.
        inner.checkpoint_raised_log_starts();
        inner.adopt_leadership(lineage.forked.contains(&true))?;
        let worker = Arc::clone(&inner);
        let tick = Duration::from_millis(self.background_tick_ms);
        let every = Intervals {
            checkpoint_ms: self.checkpoint_interval_ms as i64,
            retention_ms: self
                .background_maintenance
                .then_some(self.retention_check_interval_ms as i64),
        };
        let handle = std::thread::Builder::new()
            .name("tarnlog-background".into())
            .spawn(move || background(&worker, tick, &every))
            .map_err(|e| Error::io("spawn background thread", PathBuf::new(), e))?;
        *inner.background.lock() = Some(handle);
        if self.background_maintenance {
            let worker = Arc::clone(&inner);
            let backoff = Duration::from_millis(self.cleaner_backoff_ms);
            let handle = std::thread::Builder::new()
                .name("tarnlog-cleaner".into())
                .spawn(move || cleaner(&worker, backoff))
                .map_err(|e| Error::io("spawn cleaner thread", PathBuf::new(), e))?;
            *inner.cleaner.lock() = Some(handle);
        }
        let open = Arc::new(OpenToken(Arc::clone(&inner)));
        let log = Log { inner, _open: open };
        log.inner.offsets.load(&log)?;
        log.settle_forgotten_at_open();
        let now = log.now_ms();
        for (group, meta) in log.inner.offsets.group_metas() {
            log.inner.coordinator.restore(&group, &meta, now);
        }
        // Best effort: what cannot be written now (an offsets partition offline) stays
        // queued for the next write, rather than fail the open of every other group.
        let _ = log.persist_groups();
        Ok(log)
    }

    /// The prefault thread, unless the builder turned it off.
    fn start_prefaulter(&self) -> Result<Option<Prefaulter>> {
        if !self.prefault.unwrap_or(true) {
            return Ok(None);
        }
        Prefaulter::start()
            .map(Some)
            .map_err(|e| Error::io("spawn prefault thread", PathBuf::new(), e))
    }

    /// Checks the builder's settings (each with its allowed range).
    fn validate(&self) -> Result<()> {
        use crate::config::range;
        self.defaults.validate()?;
        range("background_tick_ms", self.background_tick_ms, 1, 60_000)?;
        range(
            "replica_lag_time_max_ms",
            self.replica_lag_time_max_ms,
            1,
            86_400_000,
        )?;
        range(
            "offsets_retention_minutes",
            self.offsets_retention_minutes,
            1,
            1_000_000_000,
        )?;
        range(
            "offsets_topic_segment_bytes",
            self.offsets_topic_segment_bytes,
            14,
            i32::MAX as u64,
        )?;
        range(
            "offsets_topic_partitions",
            u64::from(self.offsets_topic_partitions),
            1,
            1000,
        )?;
        range(
            "offsets_topic_replication_factor",
            u64::from(self.offsets_topic_replication_factor),
            1,
            i16::MAX as u64,
        )?;
        range(
            "retention_check_interval_ms",
            self.retention_check_interval_ms,
            1,
            i64::MAX as u64,
        )?;
        range(
            "cleaner_dedupe_buffer_size",
            self.cleaner_dedupe_buffer_size,
            24,
            1 << 40,
        )?;
        range(
            "cleaner_backoff_ms",
            self.cleaner_backoff_ms,
            1,
            i64::MAX as u64,
        )?;
        range(
            "checkpoint_interval_ms",
            self.checkpoint_interval_ms,
            1,
            i64::MAX as u64,
        )
    }

    /// After a refused open: removes the directories it created (`existed` false; their
    /// lock file and marker only), so that the refusal leaves no trace. Their locks were
    /// taken by `open_dirs`; flock locks do not keep a directory from being removed.
    fn undo_created(&self, existed: &[bool]) {
        let own = |name: &String| name == "LOCK" || name == crate::storage::SYNC_OK;
        for (path, existed) in self.dirs.iter().zip(existed) {
            // Only a directory holding nothing but what the open put there (`exists` may
            // have failed on one that was there).
            let created = !existed
                && self
                    .storage
                    .list_dir(path)
                    .is_ok_and(|names| names.iter().all(own));
            if created {
                let _ = self.storage.remove_dir_all(path);
            }
        }
    }

    /// Opens (and locks) every storage directory. With several, one that cannot be opened
    /// is offline — returned with its error — and the others carry on; a lock held elsewhere
    /// is never skipped, and at least one directory must open.
    fn open_dirs(&self) -> Result<(Vec<Arc<StorageDir>>, Vec<OfflineDir>)> {
        let mut dirs = Vec::with_capacity(self.dirs.len());
        let mut offline = Vec::new();
        // Interrupted calls are made again before the log sees them (`storage::retry`).
        let storage: Arc<dyn Storage> =
            Arc::new(crate::storage::Retrying(Arc::clone(&self.storage)));
        for path in &self.dirs {
            let opened = StorageDir::open(Arc::clone(&storage), path);
            dirs.push(Arc::new(match opened {
                Err(error) if self.dirs.len() > 1 && !matches!(error, Error::Locked { .. }) => {
                    let dir = StorageDir::offline(Arc::clone(&storage), path.clone());
                    // Reported as the directory's (absolute) path, as every later report.
                    offline.push((dir.path().to_path_buf(), error.to_string()));
                    dir
                }
                opened => opened?,
            }));
        }
        if offline.len() == dirs.len() {
            return Err(Error::InvalidConfig {
                field: "dirs",
                value: format!("{} directories, none usable", dirs.len()),
                allowed: format!("at least one usable directory ({})", offline[0].1),
            });
        }
        Ok((dirs, offline))
    }
}

/// The path with symlinks and `..` resolved as far as it exists, made absolute, so that one
/// directory spelled two ways is seen as one. Nothing is created.
fn canonical_dir(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let absolute = std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))?;
    let mut existing = PathBuf::new();
    let mut rest = Vec::new();
    for component in absolute.components() {
        if rest.is_empty() && existing.join(component).exists() {
            existing.push(component);
        } else {
            rest.push(component);
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| Error::io("resolve", &existing, e))?;
    // What does not exist yet holds no symlink: `..` there is plain text.
    for component in rest {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => resolved.push(name),
            _ => {}
        }
    }
    Ok(resolved)
}

fn check_dirs(dirs: &[PathBuf]) -> Result<()> {
    let invalid = |value: String, allowed: &str| Error::InvalidConfig {
        field: "dirs",
        value,
        allowed: allowed.into(),
    };
    if dirs.is_empty() {
        return Err(invalid("[]".into(), "at least one storage directory"));
    }
    for (i, a) in dirs.iter().enumerate() {
        for b in &dirs[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(invalid(
                    format!("{} and {}", a.display(), b.display()),
                    "distinct, non-nested directories",
                ));
            }
        }
    }
    Ok(())
}

/// The newest valid `meta` among the directories (`metadata::newest`), and what the
/// directories' own say of its history.
fn load_meta(dirs: &[Arc<StorageDir>]) -> Result<(Meta, Lineage)> {
    let mut owns = vec![None; dirs.len()];
    let mut first_error = None;
    let mut found_any = false;
    for (i, dir) in dirs.iter().enumerate().filter(|(_, d)| !d.is_poisoned()) {
        match metadata::read_meta(dir) {
            Ok(None) => {}
            Ok(Some((meta, this))) => {
                found_any = true;
                if this as usize != i || meta.dir_count as usize != dirs.len() {
                    return Err(Error::InvalidConfig {
                        field: "dirs",
                        value: format!(
                            "{} as directory {i} of {}",
                            dir.path().display(),
                            dirs.len()
                        ),
                        allowed: format!(
                            "the recorded layout: directory {this} of {}",
                            meta.dir_count
                        ),
                    });
                }
                owns[i] = Some(meta);
            }
            Err(error) => {
                found_any = true;
                first_error.get_or_insert(error);
            }
        }
    }
    let chosen = metadata::newest(&owns);
    let best = match (chosen.and_then(|i| owns[i].clone()), first_error) {
        (Some(meta), _) => meta,
        (None, Some(error)) if found_any => return Err(error),
        _ => Meta {
            generation: 0,
            dir_count: dirs.len() as u32,
            ..Meta::default()
        },
    };
    let lineage = Lineage::new(&best, &owns);
    Ok((best, lineage))
}

/// What the open learned of each directory's `meta` history.
#[derive(Debug)]
struct Lineage {
    /// Per directory: the `meta` it holds forked from the chosen one's history (see
    /// `Meta::forked`).
    forked: Vec<bool>,
    /// Per directory: the last `meta` known to be offered to it.
    offered: Vec<Offered>,
}

impl Lineage {
    fn new(best: &Meta, owns: &[Option<Meta>]) -> Lineage {
        // The directories holding the chosen copy itself.
        let holders: Vec<usize> = owns
            .iter()
            .enumerate()
            .filter(|(_, own)| {
                own.as_ref()
                    .is_some_and(|o| o.generation == best.generation && o.run == best.run)
            })
            .map(|(i, _)| i)
            .collect();
        let forked: Vec<bool> = owns
            .iter()
            .enumerate()
            .map(|(i, own)| {
                own.as_ref()
                    .is_some_and(|own| best.forked(&holders, own, i))
            })
            .collect();
        // A directory read now holds its own; one that could not be read, what the chosen
        // history last offered it; so does a forked one, which then stays forked until
        // this history writes to it (if it goes offline first, the next open finds it
        // forked again instead of taking its `meta` for this history's).
        let offered = owns
            .iter()
            .zip(&forked)
            .enumerate()
            .map(|(i, (own, &forked))| match own {
                Some(own) if !forked => Offered {
                    generation: own.generation,
                    run: own.run,
                },
                _ => best.offered.get(i).copied().unwrap_or_default(),
            })
            .collect();
        Lineage { forked, offered }
    }
}

/// An id for this run of the log: distinct across runs (the clock's nanoseconds and the
/// process id), never 0.
fn new_run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let id = nanos ^ (u64::from(std::process::id()) << 40).rotate_left(7);
    id.max(1)
}

type Topics = BTreeMap<String, Arc<TopicState>>;

/// A replica loaded from a restored directory, for its partition.
type Restored = (Arc<ReplicaSet>, Arc<ReplicaLog>, Standing);

/// A test's call between the partitions a restore restores.
#[cfg(test)]
struct RestoreStep(Box<dyn Fn() + Send>);

#[cfg(test)]
impl std::fmt::Debug for RestoreStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestoreStep")
    }
}

/// Empties [`Inner::restoring`] when a restore ends, however it ends.
struct RestoringGuard<'a>(&'a Inner);

impl Drop for RestoringGuard<'_> {
    fn drop(&mut self) {
        self.0.restoring.lock().clear();
    }
}

/// After the open tidied every directory: when each was online with a readable `meta`,
/// deletions and creations cut short are finished, and the next `meta` written need not
/// name them.
fn finish_deletions(dirs: &[Arc<StorageDir>], meta: &mut Meta) {
    if dirs
        .iter()
        .all(|d| !d.is_poisoned() && metadata::read_meta(d).is_ok())
    {
        meta.deleting.clear();
        meta.creating.clear();
    }
}

/// What a directory's checkpoints say, for loading its replicas.
#[derive(Debug, Default)]
struct Hints {
    /// Closed cleanly.
    clean: bool,
    recovery: BTreeMap<TopicPartition, u64>,
    start: BTreeMap<TopicPartition, u64>,
    high: BTreeMap<TopicPartition, u64>,
}

/// A directory that could not be opened, and why.
type OfflineDir = (PathBuf, String);

/// Recovers every partition of every topic.
fn load_topics(
    dirs: &[Arc<StorageDir>],
    meta: &Meta,
    lineage: &Lineage,
    builder: &LogBuilder,
    prefaulter: Option<&Prefaulter>,
    set_options: SetOptions,
    report: &mut RecoveryReport,
) -> Result<Topics> {
    let mut hints = Vec::new();
    let every_meta_readable = dirs
        .iter()
        .all(|d| !d.is_poisoned() && metadata::read_meta(d).is_ok());
    for (index, dir) in dirs.iter().enumerate() {
        if dir.is_poisoned() {
            hints.push(Hints::default());
            continue;
        }
        let marker = metadata::has_clean_marker(dir);
        let unreadable_before = report.unreadable_checkpoints.len();
        let mut read = |name: &str| {
            metadata::read_checkpoint(dir, name).unwrap_or_else(|error| {
                report
                    .unreadable_checkpoints
                    .push((dir.path().join(name), error.to_string()));
                BTreeMap::new()
            })
        };
        let recovery = read(metadata::RECOVERY_POINT);
        let start = read(metadata::LOG_START);
        let high = read(metadata::HIGH_WATERMARK);
        // A clean marker whose checkpoints cannot be read proves nothing.
        let clean = marker && report.unreadable_checkpoints.len() == unreadable_before;
        if clean {
            &mut report.clean_dirs
        } else {
            &mut report.unclean_dirs
        }
        .push(dir.path().to_path_buf());
        let tidied = tidy_dir(dir, index, meta, every_meta_readable, lineage, report);
        match tidied {
            // With several directories one that fails here is offline; the others go on.
            Err(error) if dirs.len() > 1 => {
                dir.poison();
                report
                    .offline_dirs
                    .push((dir.path().to_path_buf(), error.to_string()));
                hints.push(Hints::default());
                continue;
            }
            tidied => tidied?,
        }
        hints.push(Hints {
            clean,
            recovery,
            start,
            high,
        });
    }
    let mut topics = BTreeMap::new();
    for (name, topic) in &meta.topics {
        let mut sets = Vec::with_capacity(topic.placement.len());
        for (p, replicas) in topic.placement.iter().enumerate() {
            let tp = TopicPartition::new(name.clone(), p as u32);
            let recorded = &topic.leadership[p];
            let options = |d: u32| {
                let hints = &hints[d as usize];
                LoadOptions {
                    tp: tp.clone(),
                    dir: Arc::clone(&dirs[d as usize]),
                    config: topic.config.clone(),
                    clock: Arc::clone(&builder.clock),
                    clean: hints.clean && hints.recovery.contains_key(&tp),
                    recovery_point: hints.recovery.get(&tp).copied(),
                    log_start: hints.start.get(&tp).copied(),
                    high_watermark: hints.high.get(&tp).copied(),
                    prefaulter: prefaulter.cloned(),
                }
            };
            let mut loaded = Vec::with_capacity(replicas.len());
            for &d in replicas {
                let dir = &dirs[d as usize];
                loaded.push((!dir.is_poisoned()).then(|| {
                    forget_if_missing(dir, &tp).and_then(|()| ReplicaLog::load(options(d)))
                }));
            }
            let (set, standing) =
                repair_damaged(&tp, topic, &lineage.forked, loaded, &options, report)?;
            sets.push(ReplicaSet::open(
                tp,
                set,
                replicas.clone(),
                &standing,
                recorded,
                &topic.config,
                set_options,
            ));
        }
        topics.insert(
            name.clone(),
            Arc::new(TopicState::new(name.clone(), topic.clone(), sets)),
        );
    }
    finish_resync(dirs, every_meta_readable, report)?;
    Ok(topics)
}

/// After every replica loaded: directories whose replicas wrote their unsynced bytes again
/// as they loaded drop their `sync-failed` marker. Not while a `meta` was unreadable:
/// partitions not loaded then were kept (strays a later `meta` may place), and they still
/// need it. A failed fsync of a directory here takes it offline as any other does (with
/// one directory, the open fails).
fn finish_resync(
    dirs: &[Arc<StorageDir>],
    every_meta_readable: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    if !every_meta_readable {
        return Ok(());
    }
    for dir in dirs.iter().filter(|d| !d.is_poisoned()) {
        match dir.resynced() {
            Err(error) if dirs.len() > 1 => take_offline(dir, &error, report),
            resynced => resynced?,
        }
    }
    Ok(())
}

/// Takes the loaded replicas of one partition. A replica found damaged (a load error) is
/// moved aside as `<partition>.damaged` and recreated empty, to be rebuilt from its leader,
/// as long as another replica can lead — one in sync as recorded, or any live one under
/// `unclean_leader_election`; otherwise the first error is returned (nothing is cut). A
/// replica in a directory whose history `forked` from `meta`'s is moved aside the same way,
/// as `<partition>.diverged`, when a replica outside such directories can lead: it may hold
/// acknowledged records of the other history, which reconciling would cut. With several
/// directories (`forked` has one entry per directory) an I/O error takes the replica's
/// directory offline.
fn repair_damaged(
    tp: &TopicPartition,
    topic: &TopicMeta,
    forked: &[bool],
    loaded: Vec<Option<Result<(ReplicaLog, crate::recovery::PartitionRecovery)>>>,
    options: &dyn Fn(u32) -> LoadOptions,
    report: &mut RecoveryReport,
) -> Result<(Vec<Slot>, Vec<Standing>)> {
    let p = tp.partition as usize;
    let (dirs, recorded, config) = (&topic.placement[p], &topic.leadership[p], &topic.config);
    let multi_dir = forked.len() > 1;
    let leads =
        |l: &Option<Result<(ReplicaLog, crate::recovery::PartitionRecovery)>>, d: &u32| match l {
            Some(Ok((_, recovered))) => {
                config.unclean_leader_election || (recorded.isr.contains(d) && !recovered.created)
            }
            _ => false,
        };
    let can_lead = loaded.iter().zip(dirs).any(|(l, d)| leads(l, d));
    // A replica with data: under unclean election an empty one would do for `leads`, and
    // setting the forked one aside would leave the partition without its records.
    let can_lead_unforked = loaded.iter().zip(dirs).any(|(l, d)| {
        !forked[*d as usize]
            && matches!(l, Some(Ok((_, recovered))) if !recovered.created)
            && leads(l, d)
    });
    let mut set = Vec::with_capacity(loaded.len());
    let mut standing = Vec::with_capacity(loaded.len());
    for (result, &d) in loaded.into_iter().zip(dirs) {
        match result {
            None => {
                standing.push(Standing::Offline);
                set.push(None);
            }
            Some(Ok((replica, recovered)))
                if forked[d as usize] && can_lead_unforked && !recovered.created =>
            {
                // Closed before its directory is renamed; rebuilt without the other
                // history's hints (its log start would raise this history's).
                drop(replica);
                let options = LoadOptions {
                    clean: false,
                    recovery_point: None,
                    log_start: None,
                    high_watermark: None,
                    ..options(d)
                };
                let (slot, stands) = rebuild_aside(tp, options, "diverged", report, |r, aside| {
                    r.diverged.push(aside);
                });
                set.push(slot);
                standing.push(stands);
            }
            Some(Ok((replica, recovered))) => {
                standing.push(if recovered.created {
                    Standing::Stale
                } else {
                    Standing::Loaded
                });
                report.partitions.push(recovered);
                set.push(Some(Arc::new(replica)));
            }
            Some(Err(error)) if multi_dir && can_lead && error.is_corruption() => {
                let (slot, stands) =
                    rebuild_aside(tp, options(d), "damaged", report, |r, aside| {
                        r.repaired.push((aside, error.to_string()));
                    });
                set.push(slot);
                standing.push(stands);
            }
            // Several directories: one that cannot be read is offline, not fatal.
            Some(Err(error @ Error::Io { .. })) if multi_dir => {
                take_offline(&options(d).dir, &error, report);
                standing.push(Standing::Offline);
                set.push(None);
            }
            Some(Err(error)) => return Err(error),
        }
    }
    Ok((set, standing))
}

/// Moves a replica's directory aside as `<partition>.<why>` (`record` notes the new path in
/// the report) and loads the replica again, empty, to be rebuilt from its leader; a failure
/// takes its directory offline.
fn rebuild_aside(
    tp: &TopicPartition,
    options: LoadOptions,
    why: &str,
    report: &mut RecoveryReport,
    record: impl FnOnce(&mut RecoveryReport, PathBuf),
) -> (Slot, Standing) {
    let dir = Arc::clone(&options.dir);
    let rebuilt = set_aside(&dir, tp, why).and_then(|aside| {
        record(report, aside);
        ReplicaLog::load(options)
    });
    match rebuilt {
        Ok((replica, recovered)) => {
            report.partitions.push(recovered);
            (Some(Arc::new(replica)), Standing::Stale)
        }
        Err(error) => {
            take_offline(&dir, &error, report);
            (None, Standing::Offline)
        }
    }
}

/// Marks a directory offline at open after `error`, and reports it (once).
fn take_offline(dir: &StorageDir, error: &Error, report: &mut RecoveryReport) {
    dir.poison();
    if !report.offline_dirs.iter().any(|(p, _)| p == dir.path()) {
        report
            .offline_dirs
            .push((dir.path().to_path_buf(), error.to_string()));
    }
}

/// `<name>.<suffix>`, or, when that is longer than a file name may be (255 bytes), `name`
/// cut short and followed by a hash of the whole of it (`<cut>~<hash>.<suffix>`): the
/// longest topic names (249 characters) make partition directories that leave no room for
/// a suffix.
fn aside_name(name: &str, suffix: &str) -> String {
    use std::hash::{Hash, Hasher};
    const MAX_FILE_NAME: usize = 255;
    let full = format!("{name}.{suffix}");
    if full.len() <= MAX_FILE_NAME {
        return full;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    name.hash(&mut hasher);
    let tail = format!("~{:016x}.{suffix}", hasher.finish());
    let mut cut = MAX_FILE_NAME.saturating_sub(tail.len()).min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &name[..cut])
}

/// Renames a replica's directory to `<topic>-<partition>.<why>` (`damaged`, `diverged`;
/// `.<why>.1`, `.<why>.2`, … when earlier ones are there; see [`aside_name`] for names too
/// long for that) and returns the new path.
fn set_aside(dir: &StorageDir, tp: &TopicPartition, why: &str) -> Result<PathBuf> {
    let storage = dir.storage();
    let path = dir.path().join(format!("{}-{}", tp.topic, tp.partition));
    // Earlier copies set aside are kept: one may hold the only trace of something.
    let name = format!("{}-{}", tp.topic, tp.partition);
    let mut aside = dir.path().join(aside_name(&name, why));
    let mut n = 0u32;
    while storage.exists(&aside) && n < u32::MAX {
        n += 1;
        aside = dir.path().join(aside_name(&name, &format!("{why}.{n}")));
    }
    storage
        .rename(&path, &aside)
        .map_err(|e| Error::io("rename", &path, e))?;
    dir.sync_dir(dir.path())?;
    // After the rename: forgotten first, a crash would leave the damaged copy in place with
    // no recovery point, where its damage would read as a torn tail and be cut. Now a crash
    // leaves the directory missing, which the next open handles as any missing one.
    forget_recovery_point(dir, tp)?;
    if why == "diverged" {
        // The other history's log start and high watermark say nothing of this one's
        // offsets: left there, a crash before the next checkpoint would restart the rebuilt
        // replica at that start and raise its leader's to it.
        forget_entry(dir, metadata::LOG_START, tp)?;
        forget_entry(dir, metadata::HIGH_WATERMARK, tp)?;
    }
    Ok(aside)
}

/// Sets `tp`'s entry in `dir`'s recovery-point checkpoint to 0, durably, before its replica
/// is recreated empty (set aside as damaged, or its directory vanished). The entry describes
/// the data that is gone: left there, a crash or a fault before the next checkpoint would
/// leave the new data below it, which the open after it takes for damaged synced data (fatal
/// with no peer to repair it from). A 0 only means a rescan from the start.
fn forget_recovery_point(dir: &StorageDir, tp: &TopicPartition) -> Result<()> {
    forget_entry(dir, metadata::RECOVERY_POINT, tp)
}

/// Sets `tp`'s entry in `dir`'s checkpoint `name` to 0, durably (see
/// [`forget_recovery_point`]); an unreadable checkpoint is replaced by an empty one.
fn forget_entry(dir: &StorageDir, name: &str, tp: &TopicPartition) -> Result<()> {
    let entries = match metadata::read_checkpoint(dir, name) {
        Ok(mut entries) => {
            if entries.get(tp).is_none_or(|&entry| entry == 0) {
                return Ok(());
            }
            entries.insert(tp.clone(), 0);
            entries
        }
        // Unreadable now, perhaps readable later: replaced by an empty one (every replica
        // here then goes without the hint at the next open).
        Err(_) => BTreeMap::new(),
    };
    metadata::write_checkpoint(dir, name, &entries, false)
}

/// What [`Log::create_sets`] made.
struct NewSets {
    /// One replica set per new partition.
    sets: Vec<ReplicaSet>,
    /// The replicas created, for a cleanup if a later step fails.
    created: Vec<Arc<ReplicaLog>>,
    /// The leadership each partition starts with (its epoch already the first leader's),
    /// for `meta`.
    leadership: Vec<Leadership>,
}

/// Gives each partition of `placement` placed only in offline directories a replica in an
/// online one (of `online`, which is not empty) in place of its last, so that it has a
/// leader from the start.
fn with_an_online_replica(placement: &mut [Vec<u32>], online: &[u32]) {
    for (p, replicas) in placement.iter_mut().enumerate() {
        if !replicas.iter().any(|d| online.contains(d))
            && let Some(last) = replicas.last_mut()
        {
            *last = online[p % online.len()];
        }
    }
}

/// [`forget_recovery_point`] when `tp` has no directory in `dir` (the load will create it).
fn forget_if_missing(dir: &StorageDir, tp: &TopicPartition) -> Result<()> {
    let path = dir.path().join(crate::replica::partition_dir_name(tp));
    if dir.storage().exists(&path) {
        return Ok(());
    }
    forget_recovery_point(dir, tp)
}

/// Removes partition directories left by a topic deletion that a crash interrupted.
fn remove_deleted_dirs(dir: &StorageDir) -> Result<()> {
    let storage = dir.storage();
    let names = storage
        .list_dir(dir.path())
        .map_err(|e| Error::io("list", dir.path(), e))?;
    for name in names.iter().filter(|n| n.ends_with(".delete")) {
        let path = dir.path().join(name);
        storage
            .remove_dir_all(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
    }
    Ok(())
}

/// Whether `path`, named like a partition directory, is a directory: false for a file;
/// an error for one that cannot be listed (a symbolic link among its entries too), so that
/// it is not passed over unnoticed.
fn is_listable_dir(dir: &StorageDir, path: &Path) -> Result<bool> {
    match dir.storage().list_dir(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(Error::io("list", path, e)),
    }
}

/// Removes partition directories of directory `index` that the current `meta` does not
/// place there and that either its own `meta` (`own`, older) placed there (replicas of
/// topics deleted while the directory was offline), or belong to a topic the current one
/// names as being deleted (a deletion cut short, the name perhaps created again since) or
/// created (a creation or an `add_partitions` cut short before the `meta` placing the new
/// partitions: such a directory holds no record, and one that does is set aside as
/// `.stray` instead). Without that evidence nothing is removed; set-aside `.damaged`
/// copies and anything that is not a partition directory stay. The caller checked that
/// every directory's `meta` was readable (else the one in hand may be older than one that
/// places them).
fn remove_stray_partitions(
    dir: &StorageDir,
    index: usize,
    current: &Meta,
    own: Option<&Meta>,
) -> Result<()> {
    let own = own.filter(|own| own.generation < current.generation);
    if own.is_none() && current.deleting.is_empty() && current.creating.is_empty() {
        return Ok(());
    }
    let placed = |meta: &Meta, topic: &str, partition: usize| {
        meta.topics
            .get(topic)
            .and_then(|t| t.placement.get(partition))
            .is_some_and(|replicas| replicas.contains(&(index as u32)))
    };
    let storage = dir.storage();
    let names = storage
        .list_dir(dir.path())
        .map_err(|e| Error::io("list", dir.path(), e))?;
    for name in &names {
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(number) = partition.parse::<usize>() else {
            continue;
        };
        let path = dir.path().join(name);
        // Evidence that the directory's data is unwanted: a deletion (an older `meta` of
        // the directory placed it, or the topic is named as deleted), or a creation.
        let deleted_here = own.is_some_and(|own| placed(own, topic, number));
        let deleting = current.deleting.contains(topic);
        let created = current.creating.contains(topic);
        if number.to_string() != partition
            || !(deleted_here || deleting || created)
            || placed(current, topic, number)
            || !is_listable_dir(dir, &path)?
        {
            continue;
        }
        // Its records are surely unwanted when a deletion is the evidence and the name is
        // not live. Otherwise (a creation cut short never took a record; the leftovers of
        // a deleted name created again may be told from the live topic's only by where
        // they are) records mean that a `meta` placing them may have been lost (an
        // unreadable copy replaced by an older one): set aside, not removed.
        let sure = deleted_here || (deleting && !current.topics.contains_key(topic));
        if !sure && holds_records(dir, &path) {
            let tp = TopicPartition::new(topic, number as u32);
            set_aside(dir, &tp, "stray")?;
            continue;
        }
        let doomed = dir.path().join(aside_name(name, "delete"));
        storage
            .rename(&path, &doomed)
            .map_err(|e| Error::io("rename", &path, e))?;
        dir.sync_dir(dir.path())?;
        storage
            .remove_dir_all(&doomed)
            .map_err(|e| Error::io("remove", &doomed, e))?;
    }
    Ok(())
}

/// Whether a partition directory holds a record, or an offset past 0: a segment whose base
/// is not 0, or a log file (`.log`, or one of a cleaning or deletion in progress) whose
/// first batch has a length (what a creation makes is one all-zero segment at 0). An error
/// reading counts as yes.
fn holds_records(dir: &StorageDir, path: &Path) -> bool {
    let storage = dir.storage();
    let Ok(names) = storage.list_dir(path) else {
        return true;
    };
    let past_zero = names.iter().any(|name| {
        name.split('.')
            .next()
            .and_then(|base| base.parse::<u64>().ok())
            .is_some_and(|base| base > 0)
    });
    past_zero
        || names
            .iter()
            .filter(|name| name.contains(".log"))
            .any(|name| {
                let mut length = [0u8; 4];
                storage
                    .open(&path.join(name), OpenMode::Read)
                    .and_then(|file| {
                        if file.len()? < 12 {
                            return Ok(false);
                        }
                        crate::storage::read_exact_at(file.as_ref(), &mut length, 8)?;
                        Ok(length != [0; 4])
                    })
                    .unwrap_or(true)
            })
}

/// Before directory `index`'s replicas load: removes its clean marker, what a deletion left,
/// and its stray partitions; in a forked one, moves aside what `meta` does not place.
fn tidy_dir(
    dir: &StorageDir,
    index: usize,
    meta: &Meta,
    every_meta_readable: bool,
    lineage: &Lineage,
    report: &mut RecoveryReport,
) -> Result<()> {
    metadata::remove_clean_marker(dir)?;
    remove_deleted_dirs(dir)?;
    if lineage.forked[index] {
        // What `meta` does not place there may be a topic of the other history: kept.
        report
            .diverged
            .extend(set_aside_unplaced(dir, index, meta)?);
        return Ok(());
    }
    // Strays only when every directory opened with a readable `meta`: otherwise the
    // `meta` in hand may be older than one that places them.
    if !every_meta_readable {
        return Ok(());
    }
    let own = metadata::read_meta(dir).ok().flatten().map(|(own, _)| own);
    remove_stray_partitions(dir, index, meta, own.as_ref())
}

/// Moves aside as `.diverged` the partition directories in directory `index`, whose history
/// forked, that `current` does not place there: replicas of the other history's topics
/// (created there, or deleted here), which a topic created again under the name would
/// otherwise replace. Returns their new paths.
fn set_aside_unplaced(dir: &StorageDir, index: usize, current: &Meta) -> Result<Vec<PathBuf>> {
    let storage = dir.storage();
    let names = storage
        .list_dir(dir.path())
        .map_err(|e| Error::io("list", dir.path(), e))?;
    let mut aside = Vec::new();
    for name in &names {
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(number) = partition.parse::<u32>() else {
            continue;
        };
        let placed = current
            .topics
            .get(topic)
            .and_then(|t| t.placement.get(number as usize))
            .is_some_and(|replicas| replicas.contains(&(index as u32)));
        let path = dir.path().join(name);
        if number.to_string() != partition || placed || !is_listable_dir(dir, &path)? {
            continue;
        }
        let tp = TopicPartition::new(topic, number);
        aside.push(set_aside(dir, &tp, "diverged")?);
    }
    Ok(aside)
}

/// The `meta` writes of one directory: only the newest waiting `meta` is written, by one job
/// at a time on the directory's worker.
#[derive(Debug, Default)]
struct MetaSlot {
    state: Mutex<MetaSlotState>,
    written: Condvar,
}

#[derive(Debug, Default)]
struct MetaSlotState {
    /// The newest `meta` not yet taken by the job.
    latest: Option<Meta>,
    /// A job is queued or writing.
    busy: bool,
    /// The newest generation written (durably) here.
    generation: u64,
    /// The last write failed (the directory went offline).
    failed: Option<Error>,
}

impl MetaSlotState {
    /// Written at `generation` or newer, or failed for good.
    fn settled(&self, generation: u64) -> bool {
        self.generation >= generation || (self.failed.is_some() && !self.busy)
    }
}

impl MetaSlot {
    /// Hands `meta` to the directory; starts a job unless one is running. Returns whether
    /// the directory was idle (a caller waits only for those).
    fn offer(self: &Arc<Self>, meta: &Meta, dir: &Arc<StorageDir>, index: u32) -> bool {
        let mut state = self.state.lock();
        state.latest = Some(meta.clone());
        if state.busy {
            return false;
        }
        state.busy = true;
        let (slot, target) = (Arc::clone(self), Arc::clone(dir));
        dir.run_in_background(Box::new(move || slot.run(&target, index)));
        true
    }

    /// The job: writes the newest `meta` until none is waiting.
    fn run(&self, dir: &StorageDir, index: u32) {
        let mut state = self.state.lock();
        while let Some(meta) = state.latest.take() {
            drop(state);
            let written = if dir.is_poisoned() {
                Err(Error::Poisoned {
                    dir: dir.path().to_path_buf(),
                })
            } else {
                metadata::write_meta(dir, &meta, index)
            };
            dir.job_progressed();
            state = self.state.lock();
            match written {
                Ok(()) => state.generation = state.generation.max(meta.generation),
                Err(error) => {
                    dir.poison();
                    state.failed = Some(error);
                }
            }
            self.written.notify_all();
        }
        state.busy = false;
        self.written.notify_all();
    }

    /// Whether `generation` (or a newer one) is written here.
    fn holds(&self, generation: u64) -> bool {
        self.state.lock().generation >= generation
    }

    /// Whether this directory is done with `generation`: written, or failed for good.
    fn settled(&self, generation: u64) -> bool {
        self.state.lock().settled(generation)
    }

    /// Waits until `waited` (the directories that were idle) all settled `generation`, or
    /// `lag` passed, and at least one of `all` holds it; fails when every one failed.
    fn wait(
        all: &[Arc<MetaSlot>],
        waited: &[Arc<MetaSlot>],
        generation: u64,
        lag: Duration,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + lag;
        loop {
            // Settled first: a slot settled by failing never holds later, and generations
            // only grow, so `held` read after it is never stale against it.
            let all_settled = all.iter().all(|s| s.settled(generation));
            let waited_settled = waited.iter().all(|s| s.settled(generation));
            let held = all.iter().any(|s| s.holds(generation));
            let late = std::time::Instant::now() >= deadline;
            if held && (late || waited_settled) {
                return Ok(());
            }
            if !held && all_settled {
                let failure = all
                    .iter()
                    .find_map(|s| s.state.lock().failed.as_ref().map(Error::duplicate));
                return Err(failure.unwrap_or(Error::Poisoned {
                    dir: PathBuf::new(),
                }));
            }
            // Sleep on a directory still at work (an awaited one first); others may settle
            // meanwhile, so the wait is short.
            let slot = waited
                .iter()
                .chain(all)
                .find(|s| !s.settled(generation))
                .unwrap_or(&all[0]);
            let mut state = slot.state.lock();
            if !state.settled(generation) {
                let _ = slot.written.wait_for(&mut state, Duration::from_millis(5));
            }
        }
    }
}

/// Shared state of a [`Log`] and its handles.
#[derive(Debug)]
struct Inner {
    /// The storage directories; an entry is replaced only by `restore_dir`.
    dirs: RwLock<Vec<Arc<StorageDir>>>,
    /// How many there are (fixed).
    dir_count: usize,
    clock: Arc<dyn Clock>,
    defaults: TopicConfig,
    state: RwLock<State>,
    admin: Mutex<()>,
    closed: AtomicBool,
    /// Set by `Log::simulate_crash`: drop without a clean shutdown.
    crashed: AtomicBool,
    report: RecoveryReport,
    temp_root: Option<PathBuf>,
    auto_create_topics: bool,
    /// Committed offsets of consumer groups.
    offsets: OffsetStore,
    /// Membership of subscribed consumers' groups.
    coordinator: Coordinator,
    /// Kafka's `offsets.retention.minutes`, in ms.
    offsets_retention_ms: i64,
    /// When offsets expiry last ran (log clock).
    last_offsets_expiry_ms: AtomicI64,
    /// Signalled after every append, for consumers waiting in `poll`.
    appended: Arc<Notifier>,
    /// Replicas a `restore_dir` loaded and has not yet put in their partitions: their
    /// checkpoint entries (as their directory's checkpoints gave them) are written with the
    /// installed ones meanwhile, not dropped.
    restoring: Mutex<Vec<Arc<ReplicaLog>>>,
    /// Called between the partitions a `restore_dir` restores (tests).
    #[cfg(test)]
    restore_step: Mutex<Option<RestoreStep>>,
    background: Mutex<Option<JoinHandle<()>>>,
    /// The log cleaner's thread (compaction), when maintenance runs on its own.
    cleaner: Mutex<Option<JoinHandle<()>>>,
    /// `segment_bytes` of `__consumer_offsets` when it is created.
    offsets_topic_segment_bytes: u64,
    /// Its replicas per partition, before the cap at the directory count.
    offsets_topic_replication_factor: u32,
    /// Keys one cleaning maps at most (`cleaner_dedupe_buffer_size / 24 × 0.9`).
    cleaner_map_entries: usize,
    wake: Condvar,
    stop: Mutex<bool>,
    next_placement: AtomicU64,
    prefaulter: Option<Prefaulter>,
    /// Serialises checkpoint writers (they share `<name>.tmp`).
    checkpoint_lock: Mutex<()>,
    /// What every replica set is opened with.
    set_options: SetOptions,
    /// Serialises changes of `meta` (topic administration, leadership changes): each takes
    /// the current one, writes its successor and installs it under this lock.
    meta_lock: Mutex<()>,
    /// Per directory (by index): the newest `meta` to write there (see `write_meta`).
    meta_slots: Mutex<Vec<Arc<MetaSlot>>>,
    /// This run's id, recorded in every `meta` it writes (see `Meta::forked`).
    run: u64,
    /// Per directory: the last `meta` offered to it, by this run or (for a directory not
    /// written since the open) as the open found it.
    offered: Mutex<Vec<Offered>>,
}

#[derive(Debug)]
struct State {
    meta: Meta,
    topics: Topics,
}

/// One topic's partitions.
#[derive(Debug)]
pub(crate) struct TopicState {
    name: String,
    meta: TopicMeta,
    /// Each partition's replicas (`add_partitions` appends).
    sets: RwLock<Vec<Arc<ReplicaSet>>>,
    /// Each partition's replica directories (`meta.placement` grown by `add_partitions`).
    placement: RwLock<Vec<Vec<u32>>>,
    deleted: AtomicBool,
    /// Unique in the process: a topic deleted and created again under its name is another
    /// incarnation (groups rebalance on it).
    incarnation: u64,
    /// The config now (`meta.config` is the one it was opened with; `alter_topic_config`
    /// replaces this one).
    config: RwLock<TopicConfig>,
    /// Counts the changes that handles caching the topic's shape must see: config
    /// altered, partitions added, topic deleted. Bumped after each is in place.
    changes: AtomicU64,
}

impl TopicState {
    /// A topic over its partitions' opened replica sets; `meta` takes their leadership.
    fn new(name: String, mut meta: TopicMeta, sets: Vec<ReplicaSet>) -> TopicState {
        static INCARNATIONS: AtomicU64 = AtomicU64::new(1);
        meta.leadership = sets.iter().map(ReplicaSet::leadership).collect();
        TopicState {
            name,
            config: RwLock::new(meta.config.clone()),
            changes: AtomicU64::new(0),
            placement: RwLock::new(meta.placement.clone()),
            meta,
            sets: RwLock::new(sets.into_iter().map(Arc::new).collect()),
            deleted: AtomicBool::new(false),
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Every replica of every partition.
    fn all_replicas(&self) -> Vec<Arc<ReplicaLog>> {
        self.sets().iter().flat_map(|s| s.present()).collect()
    }

    /// Each partition's replica set, in order.
    fn sets(&self) -> Vec<Arc<ReplicaSet>> {
        self.sets.read().clone()
    }

    /// Has every partition write its leadership changes to `meta`.
    fn install_persist_hooks(&self, inner: &Arc<Inner>) {
        for (p, set) in self.sets().iter().enumerate() {
            self.install_persist_hook(inner, p, set);
        }
    }

    /// Has partition `p` (replica set `set`) write its leadership changes to `meta` (with
    /// one replica only a truncation's new epoch changes it).
    fn install_persist_hook(&self, inner: &Arc<Inner>, p: usize, set: &ReplicaSet) {
        let weak = Arc::downgrade(inner);
        let name = self.name.clone();
        let incarnation = self.incarnation;
        set.set_persist(PersistHook(Box::new(move |leadership| {
            match weak.upgrade() {
                Some(inner) => inner.persist_leadership(&name, incarnation, p, leadership),
                None => Ok(()),
            }
        })));
        let weak = Arc::downgrade(inner);
        set.set_visible(VisibleHook(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.appended.notify();
            }
        })));
    }
}

/// Runs interval fsyncs and periodic checkpoints until the log stops (`stop` is set when it
/// closes, crashes or loses its last user handle; the thread is then joined).
/// How often the background thread does its periodic work.
struct Intervals {
    checkpoint_ms: i64,
    /// `None`: retention runs only in `Log::maintain`.
    retention_ms: Option<i64>,
}

/// The cleaner thread: a pass over the compacted topics every `backoff` (Kafka's
/// `CleanerThread`, which also backs off when nothing is due). A long cleaning runs here, not
/// on the background thread, so interval fsyncs and checkpoints never wait for it.
fn cleaner(inner: &Arc<Inner>, backoff: Duration) {
    loop {
        {
            let mut stop = inner.stop.lock();
            if *stop {
                return;
            }
            inner.wake.wait_for(&mut stop, backoff);
            if *stop {
                return;
            }
        }
        // Failures take directories offline; `dir_status` and the next append report them.
        let mut report = MaintenanceReport::default();
        inner.clean_logs(inner.clock.now_ms(), &mut report);
    }
}

fn background(inner: &Arc<Inner>, tick: Duration, every: &Intervals) {
    let mut last_checkpoint = inner.clock.now_ms();
    let mut last_retention = last_checkpoint;
    let mut checkpointed: Vec<u64> = Vec::new();
    loop {
        {
            let mut stop = inner.stop.lock();
            if *stop {
                return;
            }
            inner.wake.wait_for(&mut stop, tick);
            if *stop {
                return;
            }
        }
        let now = inner.clock.now_ms();
        let replicas: Vec<Arc<ReplicaLog>> = inner
            .state
            .read()
            .topics
            .values()
            .flat_map(|t| t.all_replicas())
            .collect();
        for replica in &replicas {
            // A failure poisons the directory; the next append reports it.
            let _ = replica.flush_if_due(now);
        }
        if every
            .retention_ms
            .is_some_and(|interval| now - last_retention >= interval)
        {
            last_retention = now;
            // Failures take directories offline; `dir_status` and the next append report them.
            let _ = inner.enforce_retention(now);
        }
        if now - last_checkpoint >= every.checkpoint_ms {
            last_checkpoint = now;
            let points: Vec<u64> = replicas.iter().map(|r| r.recovery_point()).collect();
            // A recovery floor goes with the next checkpoint: until then an open checks
            // less below the recovery point strictly.
            if points != checkpointed || replicas.iter().any(|r| r.has_recovery_floor()) {
                // A failure here leaves the older checkpoint: recovery then rescans more.
                if inner.write_checkpoints().is_ok() {
                    checkpointed = points;
                }
            }
        }
    }
}

/// A handle on an open log: topics and partitions in one or more storage directories.
/// Cheap to clone, `Send + Sync`.
///
/// ```
/// # fn main() -> tarnlog::Result<()> {
/// let log = tarnlog::Log::temp()?;
/// log.create_topic("orders", tarnlog::TopicConfig::default().partitions(2))?;
/// let partition = log.topic("orders")?.partition(0)?;
/// let info = partition.append_values(["first", "second"])?;
/// assert_eq!((info.base_offset, info.last_offset), (0, 1));
/// let read = partition.read(0, 1 << 20)?;
/// let values: Vec<_> = read.records().map(|r| r.unwrap().value.unwrap()).collect();
/// assert_eq!(values, ["first", "second"]);
/// log.close()
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
    /// Shared by every user handle (`Log`, `Topic`, `Partition`), never by the log's own
    /// threads: when the last one goes, the log closes at once.
    _open: Arc<OpenToken>,
}

/// Closes the log when the last user handle is dropped.
#[derive(Debug)]
struct OpenToken(Arc<Inner>);

impl Drop for OpenToken {
    fn drop(&mut self) {
        let inner = &self.0;
        if inner.closed.load(Ordering::Acquire) {
            inner.stop_background();
            for dir in &inner.dirs() {
                dir.unlock();
            }
        } else {
            // Best effort, as `close` would: a failure leaves the log to be recovered on the
            // next open. Never panics; bounded by one sync per partition, and by a call
            // changing topics or directories in progress (a `restore_dir` stops after the
            // partition it copies).
            let _ = inner.shutdown();
        }
        if let Some(root) = &inner.temp_root {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

impl Log {
    /// Opens (or creates) a log in one directory with default settings.
    ///
    /// # Errors
    /// As [`LogBuilder::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        LogBuilder::default().dir(dir).open()
    }

    /// A builder for everything else.
    pub fn builder() -> LogBuilder {
        LogBuilder::default()
    }

    /// A log in a new temporary directory, removed when the last handle is dropped.
    ///
    /// # Errors
    /// `Io` when the temporary directory cannot be created.
    pub fn temp() -> Result<Log> {
        let root = temp_dir()?;
        let mut builder = LogBuilder::default().dir(&root);
        builder.temp_root = Some(root);
        builder.open()
    }

    /// A producer writing to this log's topics (Kafka's `KafkaProducer`); see [`Producer`].
    ///
    /// # Errors
    /// `InvalidConfig` for a field out of range; `Closed`; `Io` when its sender thread
    /// cannot start.
    pub fn producer(&self, config: ProducerConfig) -> Result<Producer> {
        self.check_open()?;
        Producer::start(self.clone(), config)
    }

    /// The log's clock, in milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// A handle on topic `name` for a client that writes to it: internal topics are
    /// refused, and a missing topic is created when the log auto-creates topics (a
    /// concurrent creation of the same topic is fine).
    pub(crate) fn topic_for_write(&self, name: &str) -> Result<Topic> {
        if INTERNAL_TOPICS.contains(&name) {
            return Err(Error::InternalTopic { topic: name.into() });
        }
        match self.topic(name) {
            Err(Error::UnknownTopic { .. }) if self.inner.auto_create_topics => {
                match self.create_topic(name, None) {
                    Err(Error::TopicExists { .. }) => self.topic(name),
                    created => created,
                }
            }
            found => found,
        }
    }

    /// Whether the log was closed (or dropped as by a crash).
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The admin lock, for a call that changes topics or directories. `close` takes it
    /// too, after marking the log closed, so it waits for a call holding it; a call that
    /// gets it after that answers `Closed` rather than write to directories whose lock the
    /// close released.
    fn admin(&self) -> Result<parking_lot::MutexGuard<'_, ()>> {
        let admin = self.inner.admin.lock();
        self.check_open()?;
        Ok(admin)
    }

    /// The storage directories, in order.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.inner
            .dirs()
            .iter()
            .map(|d| d.path().to_path_buf())
            .collect()
    }

    /// What opening the log found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// Changes a topic's configuration while the log runs (Kafka's `AlterConfigs` on a
    /// topic) and returns the previous one. The new config is validated as at creation,
    /// written to `meta` in every online directory, and then applied to every replica:
    /// retention, `segment_bytes` and `segment_ms` (from the next roll on; an empty active
    /// segment is made again at the new size, or, when that fails, a full disk say, stays
    /// at its old size as a non-empty one does; with several directories the failing one
    /// goes offline, as at an append, and so does any directory where the failure came
    /// between the renames of the new files over the old; the call answers `Ok` in every
    /// case, the change being recorded), the fsync policy (from the next append),
    /// `min_insync_replicas` and `unclean_leader_election` (from the next append or
    /// election; turned on, it elects a leader at once for a partition offline waiting for
    /// its last in-sync replica, as Kafka's controller does), `max_message_bytes`,
    /// `timestamp_type` and `index_interval_bytes`, and the cleanup policy with the
    /// compaction settings (from the next cleaner pass; a topic that turns compacted
    /// refuses records without a key from then on).
    /// Producers see a lowered `max_message_bytes` from the first send that starts after
    /// this returns: the batch they have open closes before it would pass the new limit,
    /// and later batches keep to it. A batch already past it, already handed to the
    /// append, or grown past it by a send already under way on another thread, is refused
    /// at the append with `RecordTooLarge` and split by the producer's sender (as Kafka's
    /// producer splits a batch answered `MESSAGE_TOO_LARGE`): its parts are appended in its
    /// place, and only a record over the limit alone fails, with `RecordTooLarge`.
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use tarnlog::{FsyncPolicy, Log, TopicConfig};
    /// let log = Log::temp()?;
    /// log.create_topic("events", TopicConfig::default())?;
    /// let mut config = log.topic("events")?.config();
    /// config.retention_ms = 60 * 60 * 1000;
    /// config.fsync = FsyncPolicy::EveryBatch;
    /// let old = log.alter_topic_config("events", config)?;
    /// assert_eq!(old.retention_ms, 7 * 24 * 60 * 60 * 1000);
    /// assert_eq!(log.topic("events")?.config().fsync, FsyncPolicy::EveryBatch);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `InvalidConfig` for a value out of its range or a change of `partitions`,
    /// `replication_factor` or `segment_index_bytes`, which are
    /// fixed at creation; `UnknownTopic`; `InternalTopic`; `Io` when `meta` could not be
    /// written (nothing changed then); `Closed`.
    pub fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<TopicConfig> {
        self.check_open()?;
        if INTERNAL_TOPICS.contains(&name) {
            return Err(Error::InternalTopic { topic: name.into() });
        }
        config.validate()?;
        let _admin = self.admin()?;
        self.inner.online_dirs()?;
        let meta_guard = self.inner.meta_lock.lock();
        let (mut meta, state) = self.meta_and_topic(name)?;
        let old = state.config.read().clone();
        let fixed = |field: &'static str, was: u64, now: u64| {
            if was == now {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    field,
                    value: now.to_string(),
                    allowed: format!("{was} (fixed at creation)"),
                })
            }
        };
        fixed(
            "partitions",
            old.partitions.into(),
            config.partitions.into(),
        )?;
        fixed(
            "replication_factor",
            old.replication_factor.into(),
            config.replication_factor.into(),
        )?;
        fixed(
            "segment_index_bytes",
            old.segment_index_bytes,
            config.segment_index_bytes,
        )?;
        if let Some(recorded) = meta.topics.get_mut(name) {
            recorded.config = config.clone();
        }
        meta.generation += 1;
        self.write_meta(&meta)?;
        self.inner.state.write().meta = meta;
        // Before the sets' order locks: under them, leadership changes take `meta_lock`.
        drop(meta_guard);
        for set in &state.sets() {
            set.set_config(&config);
        }
        *state.config.write() = config;
        state.changes.fetch_add(1, Ordering::Release);
        Ok(old)
    }

    /// Creates a topic; `None` uses the log's default topic config.
    ///
    /// # Errors
    /// `InvalidTopicName` (Kafka's rule, reserved internal names, or a name that collides
    /// with an existing one when `.` and `_` are considered equal); `InvalidConfig`;
    /// `TopicExists`; `Io`; `PartitionOffline` when every directory a partition was placed
    /// in failed during the call. A rejected call changes nothing on disk. A topic of a deleted
    /// topic's name whose committed offsets' tombstones could not be written then (see
    /// [`delete_topic`](Self::delete_topic)) is created only once they are: until then the
    /// error that writing them meets, or `PartitionOffline` of `__consumer_offsets` when
    /// the open could not read one of its partitions (tombstones written before a later
    /// refusal stay written); `Poisoned`. A producer that auto-creates topics meets the
    /// same.
    pub fn create_topic(
        &self,
        name: &str,
        config: impl Into<Option<TopicConfig>>,
    ) -> Result<Topic> {
        let config = config.into().unwrap_or_else(|| self.inner.defaults.clone());
        let folded = name.replace('.', "_");
        if INTERNAL_TOPICS
            .iter()
            .any(|t| t.replace('.', "_") == folded)
        {
            return Err(Error::InvalidTopicName {
                name: name.into(),
                reason: "reserved for an internal topic",
            });
        }
        self.create_any_topic(name, config)
    }

    /// Creates `__consumer_offsets` (Kafka's internal-topic settings: 100 MiB segments
    /// unless [`LogBuilder::offsets_topic_segment_bytes`] says otherwise;
    /// compacted, so only each group's latest commit per partition stays; every batch
    /// synced, as a commit is acknowledged only once durable;
    /// [`LogBuilder::offsets_topic_replication_factor`] replicas, capped at the directory
    /// count, placed over every directory: those offline now get theirs when restored).
    pub(crate) fn create_offsets_topic(&self, partitions: u32) -> Result<Topic> {
        let replicas = (self.inner.offsets_topic_replication_factor)
            .min(self.inner.dir_count as u32)
            .max(1);
        let config = TopicConfig::default()
            .partitions(partitions)
            .segment_bytes(self.inner.offsets_topic_segment_bytes)
            .cleanup_policy(crate::config::CleanupPolicy::Compact)
            .replication_factor(replicas)
            .fsync(crate::config::FsyncPolicy::EveryBatch);
        match self.create_any_topic(CONSUMER_OFFSETS, config) {
            Err(Error::TopicExists { .. }) => self.topic(CONSUMER_OFFSETS),
            created => created,
        }
    }

    /// Creates the replicas of partitions `first..` of topic `name` in the directories
    /// `placement` names (one entry per partition) and opens their replica sets, with the
    /// leadership each starts with. A replica in an offline directory is left out (it is
    /// built when the directory is restored): `__consumer_offsets` is placed there on
    /// purpose, other topics only when the directory failed after they were placed. On
    /// failure (`PartitionOffline` when no directory a partition was placed in is online)
    /// removes what it created.
    fn create_sets(
        &self,
        name: &str,
        first: u32,
        placement: &[Vec<u32>],
        config: &TopicConfig,
    ) -> Result<NewSets> {
        let mut created = Vec::new();
        let mut sets = Vec::with_capacity(placement.len());
        let mut leadership = Vec::with_capacity(placement.len());
        for (p, replicas) in (first..).zip(placement) {
            let tp = TopicPartition::new(name, p);
            let mut set = Vec::with_capacity(replicas.len());
            let mut standing = Vec::with_capacity(replicas.len());
            for &d in replicas {
                if self.inner.multi_dir() && self.inner.dir(d as usize).is_poisoned() {
                    set.push(None);
                    standing.push(Standing::Offline);
                    continue;
                }
                let options = self.load_options(tp.clone(), d, config);
                match ReplicaLog::create(options) {
                    Ok(replica) => {
                        let replica = Arc::new(replica);
                        created.push(Arc::clone(&replica));
                        set.push(Some(replica));
                        standing.push(Standing::Loaded);
                    }
                    Err(error) => {
                        Self::remove_partition_dirs(&created);
                        return Err(error);
                    }
                }
            }
            // The first replica online leads; those online are in sync.
            let isr: Vec<u32> = (replicas.iter().zip(&standing))
                .filter(|(_, s)| **s == Standing::Loaded)
                .map(|(&d, _)| d)
                .collect();
            let Some(&leader) = isr.first() else {
                // Every directory it was placed in went offline meanwhile.
                Self::remove_partition_dirs(&created);
                return Err(Error::PartitionOffline {
                    topic: name.to_owned(),
                    partition: p,
                });
            };
            let recorded = Leadership {
                leader: Some(leader),
                epoch: 0,
                isr,
            };
            sets.push(ReplicaSet::open(
                tp,
                set,
                replicas.clone(),
                &standing,
                &recorded,
                config,
                self.inner.set_options,
            ));
            leadership.push(sets.last().map_or(recorded, ReplicaSet::leadership));
        }
        Ok(NewSets {
            sets,
            created,
            leadership,
        })
    }

    /// Raises a topic's partition count to `total` (Kafka's `CreatePartitions`). The new
    /// partitions are placed over the online directories as Kafka continues an assignment,
    /// from the directory of partition 0's preferred leader, and start empty; the change is
    /// written to `meta` in every online directory before it shows. Producers see the new
    /// count at their next send (keyed records may then map to other partitions, as in
    /// Kafka), and consumer groups subscribed to the topic rebalance.
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use tarnlog::{Log, TopicConfig};
    /// let log = Log::temp()?;
    /// log.create_topic("events", TopicConfig::default().partitions(2))?;
    /// let topic = log.add_partitions("events", 5)?;
    /// assert_eq!(topic.partitions(), 5);
    /// assert_eq!(topic.partition(4)?.log_end_offset(), 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `InvalidPartitions` when `total` is not more than the current count; `InvalidConfig`
    /// above 10000; `InvalidReplicationFactor` when fewer directories than the topic's
    /// replication factor are online; `UnknownTopic`; `InternalTopic`; `Io` (nothing
    /// changed then); `PartitionOffline` when every directory a new partition was placed
    /// in failed during the call; `Closed`.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<Topic> {
        self.check_open()?;
        if INTERNAL_TOPICS.contains(&name) {
            return Err(Error::InternalTopic { topic: name.into() });
        }
        let _admin = self.admin()?;
        let online = self.inner.online_dirs()?;
        let state = self.topic(name)?.state;
        let mut config = state.config.read().clone();
        let current = config.partitions;
        if total <= current {
            return Err(Error::InvalidPartitions {
                topic: name.into(),
                current,
                requested: total,
            });
        }
        config.partitions = total;
        config.validate()?;
        let available = online.len() as u32;
        if config.replication_factor > available {
            return Err(Error::InvalidReplicationFactor {
                requested: config.replication_factor,
                available,
            });
        }
        let first_leader = state
            .placement
            .read()
            .first()
            .and_then(|r| r.first().copied());
        // Kafka's `createNewPartitionsAssignment`: from the first online directory at or
        // after partition 0's preferred leader (`indexWhere(_ >= leader)`), else the first.
        let start = online
            .iter()
            .position(|&d| first_leader.is_some_and(|leader| d >= leader))
            .unwrap_or(0) as u32;
        let placement: Vec<Vec<u32>> = crate::placement::assign(
            total - current,
            current,
            config.replication_factor,
            available,
            start,
        )
        .into_iter()
        .map(|replicas| replicas.into_iter().map(|i| online[i as usize]).collect())
        .collect();
        let marked = self.mark_creating(name)?;
        let NewSets {
            sets,
            created,
            leadership,
        } = self.create_sets(name, current, &placement, &config)?;
        if let Err(error) = self.write_checkpoints() {
            Self::remove_partition_dirs(&created);
            return Err(error);
        }
        let _meta = self.inner.meta_lock.lock();
        let mut meta = self.inner.state.read().meta.clone();
        meta.generation += 1;
        if let Some(recorded) = meta.topics.get_mut(name) {
            recorded.config = config.clone();
            recorded.placement.extend(placement.iter().cloned());
            recorded.leadership.extend(leadership);
        }
        if !marked {
            meta.creating.remove(name);
        }
        if let Err(error) = self.write_meta(&meta) {
            Self::remove_partition_dirs(&created);
            return Err(error);
        }
        self.inner.state.write().meta = meta;
        state.placement.write().extend(placement);
        {
            let mut guard = state.sets.write();
            for set in sets {
                let set = Arc::new(set);
                state.install_persist_hook(&self.inner, guard.len(), &set);
                guard.push(set);
            }
        }
        *state.config.write() = config;
        state.changes.fetch_add(1, Ordering::Release);
        Ok(Topic {
            log: self.clone(),
            state,
        })
    }

    /// Writes `meta` naming topic `name` as being created, before its new partition
    /// directories are made: if the `meta` placing them is never written (a crash, an
    /// error whose cleanup failed too), the open removes them. True when `meta` named it
    /// already (an earlier creation's leftovers may be on disk: the mark stays until the
    /// open removed them).
    fn mark_creating(&self, name: &str) -> Result<bool> {
        let _meta = self.inner.meta_lock.lock();
        let mut meta = self.inner.state.read().meta.clone();
        if meta.creating.contains(name) {
            return Ok(true);
        }
        meta.generation += 1;
        meta.creating.insert(name.to_owned());
        self.write_meta(&meta)?;
        self.inner.state.write().meta = meta;
        Ok(false)
    }

    fn create_any_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        self.check_open()?;
        metadata::validate_topic_name(name)?;
        config.validate()?;
        let _admin = self.admin()?;
        // A poisoned directory takes no change at all, not even a cleanup. With several
        // directories the new topic is placed over the online ones; `__consumer_offsets`
        // over all of them, those offline getting their replicas when restored (at least
        // one directory must be online).
        let online = self.inner.online_dirs()?;
        let is_offsets = name == CONSUMER_OFFSETS;
        let placed_over: Vec<u32> = if is_offsets && !online.is_empty() {
            (0..self.inner.dir_count as u32).collect()
        } else {
            online.clone()
        };
        {
            let state = self.inner.state.read();
            if state.topics.contains_key(name) {
                return Err(Error::TopicExists { topic: name.into() });
            }
            let folded = name.replace('.', "_");
            if state.topics.keys().any(|t| t.replace('.', "_") == folded) {
                return Err(Error::InvalidTopicName {
                    name: name.into(),
                    reason: "collides with an existing topic ('.' and '_' collide)",
                });
            }
        }
        let available = placed_over.len() as u32;
        if config.replication_factor > available {
            return Err(Error::InvalidReplicationFactor {
                requested: config.replication_factor,
                available,
            });
        }
        // Committed offsets of a deleted topic of this name whose tombstones could not be
        // written when it was deleted would come back for the new topic at the next open:
        // they are written first, or the topic is not created.
        if !INTERNAL_TOPICS.contains(&name) && self.inner.state.read().meta.forgotten.contains(name)
        {
            self.settle_forgotten_locked(Some(name))?;
        }
        let start = self.inner.next_placement.fetch_add(1, Ordering::Relaxed);
        let mut placement: Vec<Vec<u32>> = crate::placement::assign(
            config.partitions,
            0,
            config.replication_factor,
            available,
            (start % u64::from(available)) as u32,
        )
        .into_iter()
        .map(|replicas| {
            replicas
                .into_iter()
                .map(|i| placed_over[i as usize])
                .collect()
        })
        .collect();
        if is_offsets {
            with_an_online_replica(&mut placement, &online);
        }
        let marked = self.mark_creating(name)?;
        let NewSets {
            sets,
            created,
            leadership,
        } = self.create_sets(name, 0, &placement, &config)?;
        // Checkpoints may still name an earlier topic of this name: rewrite them without it,
        // so a crash cannot apply its recovery point to the new partitions.
        if let Err(error) = self.write_checkpoints() {
            Self::remove_partition_dirs(&created);
            return Err(error);
        }
        let state = Arc::new(TopicState::new(
            name.to_owned(),
            TopicMeta {
                config,
                placement,
                leadership,
            },
            sets,
        ));
        let _meta = self.inner.meta_lock.lock();
        let mut meta = self.inner.state.read().meta.clone();
        meta.generation += 1;
        meta.topics.insert(name.to_owned(), state.meta.clone());
        // An earlier deletion's leftovers where the new placement puts a replica went with
        // `ReplicaLog::create`; those elsewhere (a deletion cut short, in this run) are the
        // open's to remove: the name stays among those being deleted until then.
        if !marked {
            meta.creating.remove(name);
        }
        if let Err(error) = self.write_meta(&meta) {
            Self::remove_partition_dirs(&created);
            return Err(error);
        }
        state.install_persist_hooks(&self.inner);
        let mut guard = self.inner.state.write();
        guard.meta = meta;
        guard.topics.insert(name.to_owned(), Arc::clone(&state));
        Ok(Topic {
            log: self.clone(),
            state,
        })
    }

    fn load_options(&self, tp: TopicPartition, dir: u32, config: &TopicConfig) -> LoadOptions {
        self.load_options_in(self.inner.dir(dir as usize), tp, config, None)
    }

    /// Options to load `tp` from `dir`, unclean (a full scan), starting its high watermark
    /// at `high_watermark` when known.
    fn load_options_in(
        &self,
        dir: Arc<StorageDir>,
        tp: TopicPartition,
        config: &TopicConfig,
        high_watermark: Option<u64>,
    ) -> LoadOptions {
        LoadOptions {
            tp,
            dir,
            config: config.clone(),
            clock: Arc::clone(&self.inner.clock),
            clean: false,
            recovery_point: None,
            log_start: None,
            high_watermark,
            prefaulter: self.inner.prefaulter.clone(),
        }
    }

    fn remove_partition_dirs(partitions: &[Arc<ReplicaLog>]) {
        for replica in partitions {
            // Best effort: `meta` names the topic as being created, so the next open
            // removes a leftover directory.
            let _ = replica.dir().storage().remove_dir_all(replica.path());
        }
    }

    fn write_meta(&self, meta: &Meta) -> Result<()> {
        self.inner.write_meta(meta)
    }

    /// Deletes a topic and its data, and every group's committed offsets for it. Handles on
    /// it answer `UnknownTopic` from then on; records already read stay valid.
    ///
    /// # Errors
    /// `UnknownTopic`; `Io`; `Poisoned`. An error writing the tombstones of its committed
    /// offsets to `__consumer_offsets` (`PartitionOffline`, say) comes after the topic is
    /// deleted: they are owed, retried by [`maintain`](Self::maintain) and the next open,
    /// and written before a topic of the name is created again.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if INTERNAL_TOPICS.contains(&name) {
            return Err(Error::InternalTopic { topic: name.into() });
        }
        self.check_open()?;
        let removed = self.remove_topic(name);
        // Committed offsets of the topic go too, so that a topic created again under this
        // name is read from its start (Kafka removes a deleted partition's offsets): once
        // the topic left `meta`, whatever failed after it.
        let settled = if self.inner.state.read().meta.forgotten.contains(name) {
            self.settle_forgotten(Some(name), true)
        } else {
            Ok(())
        };
        removed.and(settled)
    }

    /// After the replay at open: deleted topics whose offsets' tombstones the replay wrote
    /// (or found written) can be created again; with an offsets partition offline they
    /// wait (see `settle_forgotten`).
    fn settle_forgotten_at_open(&self) {
        // Topics the replay found offsets of without their tombstones (deleted by a version
        // without `forgotten`) are recorded first, in case those cannot be written now.
        let owed = self.inner.offsets.owed_topics();
        if self
            .change_forgotten(|forgotten| forgotten.extend(owed.iter().cloned()))
            .is_err()
        {
            // Refused at create all the same; `meta` takes them at its next write.
            self.inner.state.write().meta.forgotten.extend(owed);
        }
        let _ = self.settle_forgotten(None, true);
    }

    /// Writes the tombstones of the committed offsets of the deleted topics `meta` lists as
    /// forgotten (only `only`, when given), dropping each name from `meta` once its are
    /// written, so that a topic of that name can be created again. Refused while the replay
    /// at open could not read every offsets partition (an offset of the topic may be in one
    /// it did not read). Under the admin lock (taken here; with `wait` false, only if free:
    /// `restore_dir` holds it for a whole rebuild), so that no deletion or creation of a
    /// name runs between reading the names and dropping them.
    fn settle_forgotten(&self, only: Option<&str>, wait: bool) -> Result<()> {
        let _admin = if wait {
            self.admin()?
        } else {
            match self.inner.admin.try_lock() {
                Some(admin) => admin,
                None => return Ok(()),
            }
        };
        self.check_open()?;
        self.settle_forgotten_locked(only)
    }

    /// [`settle_forgotten`](Self::settle_forgotten) with the admin lock held.
    fn settle_forgotten_locked(&self, only: Option<&str>) -> Result<()> {
        let names: Vec<String> = self
            .inner
            .state
            .read()
            .meta
            .forgotten
            .iter()
            .filter(|name| only.is_none_or(|only| only == name.as_str()))
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        self.inner.offsets.check_complete(self)?;
        let mut result = Ok(());
        let mut settled = Vec::new();
        for name in names {
            match self.inner.offsets.write_owed(self, Some(&name)) {
                Ok(()) => settled.push(name),
                Err(error) => result = result.and(Err(error)),
            }
        }
        if !settled.is_empty() {
            self.change_forgotten(|forgotten| forgotten.retain(|n| !settled.contains(n)))?;
        }
        result
    }

    /// Applies `change` to `meta`'s forgotten names, writing `meta` when they changed.
    fn change_forgotten(&self, change: impl FnOnce(&mut BTreeSet<String>)) -> Result<()> {
        let _meta = self.inner.meta_lock.lock();
        let mut meta = self.inner.state.read().meta.clone();
        let before = meta.forgotten.clone();
        change(&mut meta.forgotten);
        if meta.forgotten != before {
            meta.generation += 1;
            self.write_meta(&meta)?;
            self.inner.state.write().meta = meta;
        }
        Ok(())
    }

    /// The current `meta` and topic `name` (`UnknownTopic` when there is none).
    fn meta_and_topic(&self, name: &str) -> Result<(Meta, Arc<TopicState>)> {
        let state = self.inner.state.read();
        let topic = state
            .topics
            .get(name)
            .ok_or_else(|| Error::UnknownTopic { topic: name.into() })?;
        Ok((state.meta.clone(), Arc::clone(topic)))
    }

    pub(crate) fn remove_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin()?;
        self.inner.online_dirs()?;
        let meta_guard = self.inner.meta_lock.lock();
        let (mut meta, state) = self.meta_and_topic(name)?;
        meta.generation += 1;
        meta.topics.remove(name);
        // Groups may have committed offsets of it: until their tombstones are written, no
        // topic of the name is created (see `settle_forgotten`), across reopens too.
        let offsets = meta.topics.contains_key(CONSUMER_OFFSETS);
        if offsets {
            meta.forgotten.insert(name.to_owned());
        }
        // Until its directories are gone: a deletion cut short is finished by the open. Named
        // already, an earlier deletion's leftovers may remain: the open removes them first.
        let leftovers = !meta.deleting.insert(name.to_owned());
        self.write_meta(&meta)?;
        state.deleted.store(true, Ordering::Release);
        state.changes.fetch_add(1, Ordering::Release);
        {
            let mut guard = self.inner.state.write();
            guard.meta = meta;
            guard.topics.remove(name);
        }
        drop(meta_guard);
        if offsets {
            // Still under the admin lock: before a topic of the name can exist.
            self.inner.offsets.owe_topic(name);
        }
        let lag = Duration::from_millis(self.inner.set_options.replica_lag_time_max_ms);
        for replica in &state.all_replicas() {
            // No append, roll or retention pass touches its files from here on (one running
            // now finishes first): they are about to move.
            replica.retire(lag);
        }
        self.write_checkpoints()?;
        for replica in &state.all_replicas() {
            if !self.inner.online(replica.dir()) {
                // Left in the offline directory; a topic created under the name again
                // removes it first.
                continue;
            }
            let storage = replica.dir().storage();
            // Only the file name changes: a lossy `display()` of the whole path would break
            // one that is not UTF-8 (the working directory is part of it).
            let name = format!(
                "{}-{}",
                replica.topic_partition().topic,
                replica.topic_partition().partition
            );
            let doomed = replica.path().with_file_name(aside_name(&name, "delete"));
            if storage.exists(&doomed) {
                // What an earlier deletion under the name could not remove (an open would
                // have): the rename cannot replace a directory that is not empty.
                storage
                    .remove_dir_all(&doomed)
                    .map_err(|e| Error::io("remove", &doomed, e))?;
            }
            storage
                .rename(replica.path(), &doomed)
                .map_err(|e| Error::io("rename", replica.path(), e))?;
            replica.dir().sync_dir(replica.dir().path())?;
            storage
                .remove_dir_all(&doomed)
                .map_err(|e| Error::io("remove", &doomed, e))?;
        }
        // Done (an offline directory's replicas go when it returns, as strays): the next
        // `meta` written need not name it, unless an earlier deletion's leftovers may
        // remain.
        let _meta = self.inner.meta_lock.lock();
        let mut guard = self.inner.state.write();
        if !leftovers && !guard.meta.topics.contains_key(name) {
            guard.meta.deleting.remove(name);
        }
        Ok(())
    }

    /// Names of the topics, sorted, without internal ones such as `__consumer_offsets`.
    pub fn topics(&self) -> Vec<String> {
        self.inner
            .state
            .read()
            .topics
            .keys()
            .filter(|name| !INTERNAL_TOPICS.contains(&name.as_str()))
            .cloned()
            .collect()
    }

    /// Names of every topic, internal ones included, sorted.
    pub fn topics_with_internal(&self) -> Vec<String> {
        self.inner.state.read().topics.keys().cloned().collect()
    }

    /// A consumer of this log's topics (Kafka's `KafkaConsumer`); see [`Consumer`].
    ///
    /// # Errors
    /// `InvalidConfig` for a field out of range; `Closed`.
    pub fn consumer(&self, config: ConsumerConfig) -> Result<Consumer> {
        self.check_open()?;
        Consumer::new(self.clone(), config)
    }

    /// The offset `group` committed for `tp` (Kafka's `OffsetFetch`), if any.
    ///
    /// # Errors
    /// `InvalidConfig` for an empty or over-long group id; `PartitionOffline` while the
    /// group's `__consumer_offsets` partition has not been read (it had no leader at the
    /// open, and has none yet): its offsets are unknown, not absent; `Closed`.
    pub fn committed_offset(
        &self,
        group: &str,
        tp: &TopicPartition,
    ) -> Result<Option<OffsetAndMetadata>> {
        self.check_open()?;
        crate::offsets::check_group_id(group)?;
        self.inner.offsets.committed(self, group, tp)
    }

    /// Commits offsets for `group` (Kafka's `OffsetCommit`): one atomic record batch in
    /// `__consumer_offsets`, returned once durable. The data each offset covers is synced
    /// first, so after any crash a recovered commit never points past recovered data.
    ///
    /// # Errors
    /// `UnknownTopic`/`UnknownPartition`; `OffsetOutOfRange` for an offset above the high
    /// watermark; `OffsetMetadataTooLarge`; `InvalidConfig` for a bad group id;
    /// `PartitionOffline` (the group's offsets partition offline, or not read yet: see
    /// [`Log::committed_offset`]); `Io`, `Poisoned`, `Closed`. A refused commit writes
    /// nothing.
    pub fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.commit_offsets_as(group, None, offsets)
    }

    /// Commits as a member `(member id, generation)` of the group, or as a client outside
    /// it (`None`, allowed only while the group has no members), fenced by the coordinator.
    pub(crate) fn commit_offsets_as(
        &self,
        group: &str,
        member: Option<MemberRef<'_>>,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.check_open()?;
        crate::offsets::check_group_id(group)?;
        let now = self.now_ms();
        // The check happens under the commit lock and its fence holds off the group's next
        // round until the commit is in the log: a commit checked against this generation
        // can never land after a later one began, nor after a later-checked write.
        let committed = self.inner.offsets.commit(self, group, offsets, || {
            self.inner.coordinator.fence(group, member, now)
        });
        self.persist_group(group)?;
        committed?;
        // Kafka checks for expired offsets every 10 minutes (offsets.retention.check.interval.ms).
        let last = self.inner.last_offsets_expiry_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= OFFSETS_RETENTION_CHECK_MS
            && self
                .inner
                .last_offsets_expiry_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // The commit succeeded; an expiry failure is met again at the next check, as
            // are tombstones still owed.
            let _ = self.expire_offsets();
            let _ = self.settle_forgotten(None, false);
        }
        Ok(())
    }

    /// One pass of background maintenance, for deterministic tests and embedded main
    /// loops (see [`LogBuilder::background_maintenance`]), at the clock's time: retention
    /// on every topic (`retention_ms`, `retention_bytes`, the log start moved by
    /// [`Partition::delete_records`]), then the expiry of committed offsets of groups
    /// without members (Kafka's `offsets.retention.minutes`), then another try at the
    /// tombstones of deleted topics' offsets that could not be written before (see
    /// [`delete_topic`](Self::delete_topic); best effort: a failure shows at
    /// [`create_topic`](Self::create_topic) of the name).
    ///
    /// A partition whose retention fails (its directory goes offline) does not stop the
    /// pass; it is listed in [`MaintenanceReport::failures`].
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use tarnlog::{Log, TopicConfig};
    /// let log = Log::temp()?;
    /// let config = TopicConfig::default().segment_bytes(200).retention_bytes(300);
    /// let partition = log.create_topic("events", config)?.partition(0)?;
    /// for _ in 0..10 {
    ///     partition.append_values([&[7u8; 100][..]])?;
    /// }
    /// let report = log.maintain()?;
    /// assert!(report.segments_deleted > 0);
    /// assert!(partition.log_start_offset() > 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `Io`, `Poisoned` from writing group tombstones; `Closed`.
    pub fn maintain(&self) -> Result<MaintenanceReport> {
        self.check_open()?;
        let now = self.now_ms();
        let mut report = self.inner.enforce_retention(now);
        self.inner.clean_logs(now, &mut report);
        self.inner
            .last_offsets_expiry_ms
            .store(now, Ordering::Relaxed);
        report.expired_groups = self.expire_offsets()?;
        // Retried while the offsets topic's partition is offline; a topic of the name is
        // not created again before they are written (see `create_topic`).
        let _ = self.settle_forgotten(None, false);
        Ok(report)
    }

    /// Kafka's `DeleteRecords`: moves the log start of `tp` to `before_offset` (every
    /// replica), so records below it are no longer readable, and deletes the segments
    /// wholly below it. Returns the new log start. See [`Partition::delete_records`].
    ///
    /// # Errors
    /// As [`Partition::delete_records`], and `UnknownTopic` / `UnknownPartition`.
    pub fn delete_records(&self, tp: &TopicPartition, before_offset: u64) -> Result<u64> {
        self.topic(&tp.topic)?
            .partition(tp.partition)?
            .delete_records(before_offset)
    }

    fn expire_offsets(&self) -> Result<Vec<String>> {
        let expired = self.inner.offsets.expire(
            self,
            &self.inner.coordinator,
            self.inner.offsets_retention_ms,
        );
        // Best effort: metadata that cannot be written (another group's offsets partition
        // offline, say) stays queued for its group; the expiry's own errors come below.
        let _ = self.persist_groups();
        expired
    }

    /// Writes the group metadata the coordinator changed (completed rounds, groups that
    /// became empty) to `__consumer_offsets`.
    pub(crate) fn persist_groups(&self) -> Result<()> {
        let failed = self
            .inner
            .offsets
            .write_groups(self, &self.inner.coordinator);
        failed.into_iter().next().map_or(Ok(()), |(_, e)| Err(e))
    }

    /// As [`persist_groups`](Self::persist_groups), failing only when `group`'s own
    /// metadata could not be written: another group's failure (its offsets partition
    /// offline) stays queued for that group and is no concern of this caller's.
    pub(crate) fn persist_group(&self, group: &str) -> Result<()> {
        let failed = self
            .inner
            .offsets
            .write_groups(self, &self.inner.coordinator);
        failed
            .into_iter()
            .find(|(g, _)| g == group)
            .map_or(Ok(()), |(_, e)| Err(e))
    }

    /// `PartitionOffline` while `group`'s offsets partition has not been read (see
    /// `OffsetStore::ensure_read`).
    pub(crate) fn ensure_group_read(&self, group: &str) -> Result<()> {
        self.inner.offsets.ensure_read(self, group)
    }

    /// The group coordinator.
    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.inner.coordinator
    }

    /// Groups with committed offsets, sorted (Kafka's `ListGroups`; groups with members
    /// come with the coordinator of issue 4).
    pub fn list_groups(&self) -> Vec<String> {
        let mut groups = self.inner.offsets.groups();
        self.inner.coordinator.expire(None, self.now_ms());
        groups.extend(self.inner.coordinator.active_groups());
        groups.sort();
        groups.dedup();
        groups
    }

    /// A group's state and, for each partition it committed, the committed offset, the
    /// end offset and the lag. An unknown group is `Dead` with no offsets, as in Kafka.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad group id; `PartitionOffline` while the group's offsets are
    /// unknown (see [`Log::committed_offset`]); `Closed`.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.check_open()?;
        crate::offsets::check_group_id(group)?;
        let committed = self.inner.offsets.group_offsets(self, group)?;
        self.inner.coordinator.expire(Some(group), self.now_ms());
        let active = self.inner.coordinator.describe(group);
        let (state, generation, members) = match active {
            Some((state, generation, members)) => (state, Some(generation), members),
            None if committed.is_empty() => (GroupState::Dead, None, Vec::new()),
            None => (GroupState::Empty, None, Vec::new()),
        };
        let generation = generation.filter(|&g| g > 0);
        let members = members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.member_id,
                assignment: m.assignment,
            })
            .collect();
        let offsets = committed
            .into_iter()
            .map(|(tp, committed)| {
                let end_offset = self
                    .topic(&tp.topic)
                    .and_then(|t| t.partition(tp.partition))
                    .map_or(0, |p| p.high_watermark());
                let lag = end_offset.saturating_sub(committed.offset);
                PartitionLag {
                    tp,
                    committed,
                    end_offset,
                    lag,
                }
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state,
            generation,
            members,
            offsets,
        })
    }

    /// Moves `group`'s committed offsets of `partitions` (all partitions it committed, when
    /// empty) to `to`, as `kafka-consumer-groups --reset-offsets --execute` does, and
    /// returns the new offsets. One atomic commit.
    ///
    /// # Errors
    /// `UnknownTopic` / `UnknownPartition`; `Corruption` from a timestamp lookup; as
    /// [`Log::commit_offsets`]. Nothing changes on error.
    pub fn reset_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, u64)>> {
        self.check_open()?;
        crate::offsets::check_group_id(group)?;
        self.check_group_empty(group)?;
        let targets: Vec<TopicPartition> = if partitions.is_empty() {
            self.inner
                .offsets
                .group_offsets(self, group)?
                .into_keys()
                .collect()
        } else {
            partitions.to_vec()
        };
        let mut commits = Vec::with_capacity(targets.len());
        for tp in targets {
            let partition = self.topic(&tp.topic)?.partition(tp.partition)?;
            let (start, end) = (partition.log_start_offset(), partition.high_watermark());
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(offset) => offset.clamp(start, end),
                ResetTo::Timestamp(timestamp) => partition
                    .offset_for_time(timestamp)?
                    .map_or(end, |found| found.offset.min(end)),
            };
            commits.push((tp, OffsetAndMetadata::new(offset)));
        }
        // A member that joined since the check above makes the commit unknown-member.
        self.commit_offsets(group, &commits).map_err(|e| match e {
            Error::UnknownMemberId => Error::GroupNotEmpty {
                group: group.to_owned(),
            },
            e => e,
        })?;
        Ok(commits.into_iter().map(|(tp, c)| (tp, c.offset)).collect())
    }

    /// Deletes a group: tombstones for all its committed offsets. `Ok(false)` when it had
    /// none.
    ///
    /// # Errors
    /// `InvalidConfig` for a bad group id; `Io`, `Poisoned`, `Closed`.
    pub fn delete_group(&self, group: &str) -> Result<bool> {
        self.check_open()?;
        crate::offsets::check_group_id(group)?;
        self.check_group_empty(group)?;
        let deleted = self
            .inner
            .offsets
            .delete_group(self, &self.inner.coordinator, group);
        self.persist_group(group)?;
        deleted
    }

    /// `GroupNotEmpty` while `group` has members.
    fn check_group_empty(&self, group: &str) -> Result<()> {
        if self
            .inner
            .coordinator
            .idle_since(group, self.now_ms())
            .is_none()
        {
            return Err(Error::GroupNotEmpty {
                group: group.to_owned(),
            });
        }
        Ok(())
    }

    /// The append signal consumers wait on.
    pub(crate) fn appended(&self) -> &Notifier {
        &self.inner.appended
    }

    /// The append signal, to be held apart from the log (see `ConsumerWakeup`).
    pub(crate) fn appended_signal(&self) -> Arc<Notifier> {
        Arc::clone(&self.inner.appended)
    }

    /// Brings an offline storage directory back while the log runs (after the disk was
    /// replaced, remounted or made writable again): the directory is opened afresh, each of
    /// its replicas is recovered — or, when damaged, set aside as `<partition>.damaged` and
    /// recreated — then reconciled with its partition's leader and rebuilt from it until it
    /// is back in sync. A partition that was offline waiting for this directory gets its
    /// leader back. An empty directory in the old one's place is filled entirely from the
    /// other replicas (a partition without another replica comes back empty, as its data
    /// went with the disk). An online directory is left alone. After a failed fsync the
    /// directory's replicas of partitions led elsewhere are set aside and rebuilt: the page
    /// cache may hold what never reached the disk (an fsync failed in this run, or in an
    /// earlier one that left its `sync-failed` file there).
    ///
    /// ```no_run
    /// # fn main() -> tarnlog::Result<()> {
    /// let log = tarnlog::Log::builder().dirs(["/mnt/a/log", "/mnt/b/log"]).open()?;
    /// // … /mnt/b failed, its disk was replaced and mounted again …
    /// if log.dir_status().iter().any(|d| !d.online) {
    ///     log.restore_dir("/mnt/b/log")?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `InvalidConfig` when `path` is not one of the log's directories, when the log has a
    /// single directory (reopen it instead), or when the directory's `meta` is newer than
    /// the log's (reopen to adopt it); `Corruption` for a damaged replica with no other copy
    /// (its data is left where it was); `Io` or `Locked` when it cannot be opened or read;
    /// `Poisoned` when it failed again while its replicas were being copied. The directory
    /// then stays offline. `Closed`.
    pub fn restore_dir(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_open()?;
        let path = path.as_ref();
        let refuse = |allowed: &str| Error::InvalidConfig {
            field: "dir",
            value: path.display().to_string(),
            allowed: allowed.into(),
        };
        if !self.inner.multi_dir() {
            return Err(refuse(
                "a directory of a log over several; a single-directory log is reopened",
            ));
        }
        let _admin = self.admin()?;
        let dirs = self.inner.dirs();
        let wanted = canonical_dir(path)?;
        let index = dirs
            .iter()
            .position(|d| d.path() == path || canonical_dir(d.path()).is_ok_and(|c| c == wanted))
            .ok_or_else(|| refuse("one of the log's storage directories"))?;
        let old = &dirs[index];
        if !old.is_poisoned() {
            return Ok(());
        }
        // Work still queued for the old directory (a `meta` write) must not race the new:
        // it is waited for, and one still stuck sees the old directory failed (as it is)
        // before it replaces a file.
        let drained = old.drain_and_unlock(Duration::from_millis(
            self.inner.set_options.replica_lag_time_max_ms,
        ));
        let dir = Arc::new(StorageDir::open(Arc::clone(old.storage()), old.path())?);
        // After a failed fsync the page cache may hold what never reached the disk: what
        // the directory holds is rebuilt from the leaders, never trusted. Read after the
        // drain (an fsync of work queued there may have failed in it; work still stuck
        // there may fail one yet) and from the directory's `sync-failed` file too,
        // whatever left it (an fsync of this run that failed after the directory went
        // offline, or one of an earlier run).
        let untrusted = !drained || old.sync_failed() || dir.needs_resync();
        if untrusted {
            // Replicas it keeps (those with no leader elsewhere) write their unsynced
            // bytes again as they load.
            dir.require_resync();
        }
        let loaded = self
            .load_restored(&dir, index, untrusted)
            .and_then(|loaded| dir.resynced().map(|()| loaded))
            .inspect_err(|_| {
                dir.poison();
                dir.unlock();
            })?;
        // Checkpoints written while the restore runs (the background thread, a flush, a
        // truncation) keep the entries of replicas not yet installed.
        *self.inner.restoring.lock() = loaded.iter().map(|(_, r, _)| Arc::clone(r)).collect();
        let _restoring = RestoringGuard(&self.inner);
        {
            // Under the meta lock, so that no `meta` write pairs the new directory with the
            // old one's slot (whose writer may still be stuck).
            let _meta = self.inner.meta_lock.lock();
            self.inner.dirs.write()[index] = Arc::clone(&dir);
            self.inner.meta_slots.lock()[index] = Arc::default();
            // The directory's own `meta` is from before it went offline and may name its
            // replicas in sync: the current one goes there before any of them changes, so
            // that a crash during the copies never reopens one as in sync (with the other
            // directories lost it would lead, at whatever start and end the copy left).
            let mut meta = self.inner.state.read().meta.clone();
            meta.generation += 1;
            // Failed, the directory is offline again, so that a retry starts over.
            self.inner.write_meta(&meta).inspect_err(|_| dir.poison())?;
            self.inner.state.write().meta = meta;
        }
        // Every replica goes in its slot first (an offline partition it may lead takes
        // appends again at once), then the copies run, partition by partition.
        for (set, replica, standing) in &loaded {
            #[cfg(test)]
            if let Some(step) = self.inner.restore_step.lock().as_ref() {
                (step.0)();
            }
            if let Err(error) = set.restore(index as u32, replica, *standing) {
                // Half restored: offline again, so that a retry starts over.
                dir.poison();
                return Err(error);
            }
        }
        for (set, replica, _) in &loaded {
            if self.inner.closed.load(Ordering::Acquire) {
                // `close` waits for this call (it holds the admin lock): the copies stop
                // here, and the directory, offline again, is restored at the next open.
                dir.poison();
                return Err(Error::Closed);
            }
            if let Err(error) = set.catch_up_restored(index as u32, replica) {
                dir.poison();
                return Err(error);
            }
        }
        // A copy that failed there (the catch-ups stop at such an error) took it offline
        // again.
        if dir.is_poisoned() {
            return Err(Error::Poisoned {
                dir: dir.path().to_path_buf(),
            });
        }
        // The restored replicas' checkpoints first: this `meta` is the first in their
        // directory to name them in sync, and a crash after it must not reopen one at an
        // older log start (see `persist_leadership`).
        self.write_checkpoints()?;
        let _meta = self.inner.meta_lock.lock();
        let mut meta = self.inner.state.read().meta.clone();
        meta.generation += 1;
        self.inner.write_meta(&meta)?;
        self.inner.state.write().meta = meta;
        Ok(())
    }

    /// Loads every replica placed in directory `index` from `dir` (opened again), without
    /// touching the running partitions: a damaged replica of a partition that has a leader
    /// elsewhere is set aside and recreated; any other failure is returned.
    fn load_restored(
        &self,
        dir: &Arc<StorageDir>,
        index: usize,
        untrusted: bool,
    ) -> Result<Vec<Restored>> {
        // A directory whose metadata is newer than the log's picture moved on without it
        // (the log was opened while it was unreadable): adopting it takes a reopen.
        let generation = self.inner.state.read().meta.generation;
        // A copy that does not read (damaged while the directory was away) counts for none,
        // as at open, where another directory's is readable: this log's is written there
        // at the end of the restore.
        let own = match metadata::read_meta(dir) {
            Err(Error::Corruption { .. }) => None,
            read => read?.map(|(own, _)| own),
        };
        if let Some(meta) = &own
            && meta.generation > generation
        {
            return Err(Error::InvalidConfig {
                field: "dir",
                value: dir.path().display().to_string(),
                allowed: format!(
                    "a directory whose metadata (generation {}) is not newer than the log's \
                     ({generation}); reopen the log to adopt it",
                    meta.generation
                ),
            });
        }
        // Its checkpoints bound recovery as at open: damage below the recovery point is
        // corruption, not a tail to cut.
        let checkpoint = |name| metadata::read_checkpoint(dir, name).unwrap_or_default();
        let high = checkpoint(metadata::HIGH_WATERMARK);
        let recovery = checkpoint(metadata::RECOVERY_POINT);
        let start = checkpoint(metadata::LOG_START);
        metadata::remove_clean_marker(dir)?;
        remove_deleted_dirs(dir)?;
        let meta = self.inner.state.read().meta.clone();
        // A directory that wrote `meta` in a run without this log's history (opened while
        // this log's directories were unreadable) may hold acknowledged records of that
        // history: its replicas are set aside whole, as `.diverged`, and rebuilt, and so is
        // what this log does not place there (a topic of that history).
        // As at open (`Meta::forked`): past what this log offered it, this log written
        // without it since, and it written without every directory holding this log's
        // history now.
        let offered = self.inner.offered.lock()[index];
        let online: Vec<usize> = (0..self.inner.dir_count)
            .filter(|&j| j != index && !self.inner.dir(j).is_poisoned())
            .collect();
        let forked = !online.is_empty()
            && own.as_ref().is_some_and(|own| {
                offered.forked(own)
                    && meta.generation > offered.generation
                    && online.iter().all(|&j| own.wrote_without(j))
            });
        if forked {
            set_aside_unplaced(dir, index, &meta)?;
        } else {
            remove_stray_partitions(dir, index, &meta, own.as_ref())?;
        }
        let reset = untrusted || forked;
        let why = if forked { "diverged" } else { "damaged" };
        let topics: Vec<Arc<TopicState>> =
            self.inner.state.read().topics.values().cloned().collect();
        let mut loaded = Vec::new();
        for topic in &topics {
            let sets = topic.sets();
            for (p, replicas) in topic.placement.read().clone().iter().enumerate() {
                if !replicas.contains(&(index as u32)) {
                    continue;
                }
                let set = &sets[p];
                let tp = TopicPartition::new(topic.name.clone(), p as u32);
                let led_elsewhere = set.is_replicated() && set.leader().is_ok();
                // A forked directory's hints belong to the other history: they go with a
                // replica that is rebuilt (its log start would raise the leader's).
                let hinted = !(forked && led_elsewhere);
                let mut options = self.load_options_in(
                    Arc::clone(dir),
                    tp.clone(),
                    &topic.config.read().clone(),
                    high.get(&tp).copied().filter(|_| hinted),
                );
                if hinted {
                    options.recovery_point = recovery.get(&tp).copied();
                    options.log_start = start.get(&tp).copied();
                }
                if reset
                    && led_elsewhere
                    && dir
                        .storage()
                        .exists(&dir.path().join(format!("{}-{}", tp.topic, tp.partition)))
                {
                    // What recovery would read may be the page cache, not the disk: start
                    // over from the leader (the old copy is kept aside).
                    set_aside(dir, &tp, why)?;
                }
                forget_if_missing(dir, &tp)?;
                let (replica, standing) = match ReplicaLog::load(options.clone()) {
                    // Distrusted (a failed fsync, a forked history) only when a leader
                    // elsewhere has better: with none, it is what a reopen would load and
                    // lead from, so it may lead now too.
                    Ok((replica, recovered)) if recovered.created || reset && led_elsewhere => {
                        (replica, Standing::Stale)
                    }
                    Ok((replica, _)) => (replica, Standing::Loaded),
                    Err(error) if error.is_corruption() && led_elsewhere => {
                        set_aside(dir, &tp, "damaged")?;
                        (ReplicaLog::load(options)?.0, Standing::Stale)
                    }
                    Err(error) => return Err(error),
                };
                loaded.push((Arc::clone(set), Arc::new(replica), standing));
            }
        }
        Ok(loaded)
    }

    /// Each storage directory's health and load (Kafka's `describeLogDirs`). A directory
    /// goes offline at its first I/O or fsync error; with several directories the others
    /// carry on (see the durability table in README.md).
    pub fn dir_status(&self) -> Vec<DirStatus> {
        let topics: Vec<Arc<TopicState>> =
            self.inner.state.read().topics.values().cloned().collect();
        let descriptions: Vec<PartitionDescription> = topics
            .iter()
            .flat_map(|t| t.sets().iter().map(|s| s.describe()).collect::<Vec<_>>())
            .collect();
        self.inner
            .dirs()
            .iter()
            .enumerate()
            .map(|(index, dir)| DirStatus {
                index,
                path: dir.path().to_path_buf(),
                online: !dir.is_poisoned(),
                replicas: descriptions
                    .iter()
                    .filter(|p| p.replicas.contains(&index))
                    .count(),
                leaders: descriptions
                    .iter()
                    .filter(|p| p.leader == Some(index))
                    .count(),
                size_bytes: descriptions
                    .iter()
                    .flat_map(|p| p.replicas.iter().zip(&p.replica_size_bytes))
                    .filter(|(d, _)| **d == index)
                    .filter_map(|(_, size)| *size)
                    .sum(),
            })
            .collect()
    }

    /// A topic's partitions: leader, epoch, replicas, in-sync replicas, offline replicas and
    /// offsets (Kafka's `describeTopics`). A partition whose leader's directory went offline
    /// fails over first, so the answer is current.
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// # let root = tempfile::tempdir().map_err(|e| tarnlog::Error::Io { op: "temp", path: "".into(), source: e })?;
    /// let dirs = [root.path().join("a"), root.path().join("b")];
    /// let log = tarnlog::Log::builder().dirs(&dirs).open()?;
    /// log.create_topic("t", tarnlog::TopicConfig::default().replication_factor(2))?;
    /// let partition = &log.describe_topic("t")?.partitions[0];
    /// assert_eq!(partition.replicas.len(), 2);
    /// assert_eq!(partition.isr.len(), 2);
    /// assert!(!partition.is_under_replicated());
    /// assert!(log.dir_status().iter().all(|d| d.online));
    /// # log.close()
    /// # }
    /// ```
    ///
    /// # Errors
    /// `UnknownTopic`; `Closed`.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let topic = self.topic(name)?;
        Ok(TopicDescription {
            name: name.to_owned(),
            config: topic.config(),
            partitions: topic.state.sets().iter().map(|s| s.describe()).collect(),
        })
    }

    /// A handle on a topic.
    ///
    /// # Errors
    /// `UnknownTopic`; `Closed`.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        self.check_open()?;
        let state = self
            .inner
            .state
            .read()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic { topic: name.into() })?;
        Ok(Topic {
            log: self.clone(),
            state,
        })
    }

    /// Syncs every partition and records the recovery points, whatever the fsync policies.
    ///
    /// # Errors
    /// `Io` (the directory is then poisoned) or `Poisoned`.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let topics: Vec<Arc<TopicState>> =
            self.inner.state.read().topics.values().cloned().collect();
        for topic in &topics {
            for set in topic.sets() {
                match set.sync_to(u64::MAX) {
                    // Nothing of an offline partition can be synced; `describe_topic` says so.
                    Err(Error::PartitionOffline { .. } | Error::Poisoned { .. })
                        if self.inner.multi_dir() => {}
                    // Deleted since the list was taken: nothing of it is left to sync.
                    Err(Error::Closed) if topic.deleted.load(Ordering::Acquire) => {}
                    synced => synced?,
                }
            }
        }
        // Every file written, changed or not: an explicit flush also finds out that a
        // directory vanished or turned read-only, with nothing else to write.
        self.inner.write_checkpoint_files(true)
    }

    fn write_checkpoints(&self) -> Result<()> {
        self.inner.write_checkpoints()
    }

    /// Closes the log cleanly: syncs everything, writes the checkpoints and the clean-shutdown
    /// marker, so the next open rescans nothing. Other handles answer `Closed` afterwards.
    /// A call changing topics or directories in progress on another handle
    /// (`create_topic`, `delete_topic`, `restore_dir`, …) finishes first; one that has not
    /// begun yet answers `Closed`.
    ///
    /// Group metadata still queued (a write that failed earlier) is written first.
    ///
    /// # Errors
    /// `Io` or `Poisoned` when data could not be synced or queued group metadata written;
    /// the marker is then not written and the next open recovers.
    pub fn close(self) -> Result<()> {
        let groups = match self.check_open() {
            Ok(()) => self.persist_groups(),
            Err(_) => Ok(()),
        };
        let shutdown = self.inner.shutdown();
        groups.and(shutdown)
    }

    /// Drops the log as a `kill -9` would: no sync, no checkpoint, no clean-shutdown marker
    /// (written bytes stay in the page cache). For crash tests.
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.inner.crashed.store(true, Ordering::Release);
        self.inner.closed.store(true, Ordering::Release);
        self.inner.appended.notify();
        self.inner.stop_background();
        let lag = Duration::from_millis(self.inner.set_options.replica_lag_time_max_ms);
        for dir in &self.inner.dirs() {
            // Work already handed to a directory's worker counts as done before the "kill".
            let _ = dir.drain_and_unlock(lag);
        }
    }
}

impl Inner {
    /// Whether a directory's failures take only it offline (more than one directory) rather
    /// than stopping the log.
    fn multi_dir(&self) -> bool {
        self.dir_count > 1
    }

    /// Indexes of the directories a change may touch: every one with a single directory
    /// (`Poisoned` when it failed), the online ones with several (`Poisoned` when none is).
    fn online_dirs(&self) -> Result<Vec<u32>> {
        let dirs = self.dirs();
        if !self.multi_dir() {
            dirs[0].check()?;
            return Ok(vec![0]);
        }
        let online: Vec<u32> = (0..dirs.len() as u32)
            .filter(|&i| !dirs[i as usize].is_poisoned())
            .collect();
        if online.is_empty() {
            dirs[0].check()?;
        }
        Ok(online)
    }

    /// The storage directories, in order.
    fn dirs(&self) -> Vec<Arc<StorageDir>> {
        self.dirs.read().clone()
    }

    /// Storage directory `i`.
    fn dir(&self, i: usize) -> Arc<StorageDir> {
        Arc::clone(&self.dirs.read()[i])
    }

    /// Whether `dir` is usable: always with one directory (its errors are reported), and
    /// while not offline with several.
    fn online(&self, dir: &StorageDir) -> bool {
        !self.multi_dir() || !dir.is_poisoned()
    }

    /// Writes `meta` into every online directory. With several directories the writes run
    /// at once on the directories' workers; one that fails goes offline. Each directory
    /// writes only the newest `meta` it was given (a slow one skips the generations that
    /// came while it was busy). The call returns once every directory that was idle took
    /// it, or after `replica_lag_time_max_ms` once at least one did; a directory still busy
    /// with an earlier `meta` is not waited for again, so a slow or hung directory delays
    /// only the first write (the newest `meta` wins at open).
    fn write_meta(&self, meta: &Meta) -> Result<()> {
        let online: Vec<(usize, Arc<StorageDir>)> = self
            .dirs()
            .into_iter()
            .enumerate()
            .filter(|(_, d)| !self.multi_dir() || !d.is_poisoned())
            .collect();
        if online.is_empty() {
            return Err(Error::Poisoned {
                dir: self.dir(0).path().to_path_buf(),
            });
        }
        // The lineage: this run, and per directory the last generation offered to it (an
        // offline one keeps what it was offered before it went).
        let mut meta = meta.clone();
        meta.run = self.run;
        {
            let mut offered = self.offered.lock();
            for (i, _) in &online {
                offered[*i] = Offered {
                    generation: meta.generation,
                    run: self.run,
                };
            }
            meta.offered.clone_from(&offered);
        }
        let meta = &meta;
        if !self.multi_dir() {
            return metadata::write_meta(&self.dir(0), meta, 0);
        }
        let slots: Vec<Arc<MetaSlot>> = {
            let all = self.meta_slots.lock();
            online.iter().map(|(i, _)| Arc::clone(&all[*i])).collect()
        };
        let mut waited = Vec::new();
        for (slot, (i, dir)) in slots.iter().zip(&online) {
            if slot.offer(meta, dir, *i as u32) {
                waited.push(Arc::clone(slot));
            }
        }
        let lag = Duration::from_millis(self.set_options.replica_lag_time_max_ms);
        MetaSlot::wait(&slots, &waited, meta.generation, lag)
    }

    /// Checkpoints at once the log starts the open raised (see `ReplicaSet::open`), so a
    /// crash cannot bring deleted records back. A failure takes its directory offline; the
    /// next checkpoint tries again.
    fn checkpoint_raised_log_starts(&self) {
        let raised = self
            .state
            .read()
            .topics
            .values()
            .any(|t| t.sets.read().iter().any(|s| s.raised_log_start()));
        if raised {
            let _ = self.write_checkpoints();
        }
    }

    /// After open: records the leadership the replica sets settled on (new epochs, in-sync
    /// sets) in `meta`, and has them record later changes.
    ///
    /// With `rejoin` (a directory's history forked) `meta` is written even when no
    /// leadership changed: the forked directory takes this history's `lineage`, so that
    /// later opens do not find it forked again.
    fn adopt_leadership(self: &Arc<Self>, rejoin: bool) -> Result<()> {
        let _meta = self.meta_lock.lock();
        let mut state = self.state.write();
        let mut changed = rejoin;
        let topics: Vec<Arc<TopicState>> = state.topics.values().cloned().collect();
        for topic in &topics {
            let Some(recorded) = state.meta.topics.get_mut(&topic.name) else {
                continue;
            };
            if recorded.leadership != topic.meta.leadership {
                recorded.leadership.clone_from(&topic.meta.leadership);
                changed = true;
            }
            topic.install_persist_hooks(self);
        }
        if changed {
            state.meta.generation += 1;
            self.write_meta(&state.meta)?;
        }
        Ok(())
    }

    /// Writes a partition's new leadership to `meta` (unless its topic is gone).
    fn persist_leadership(
        &self,
        topic: &str,
        incarnation: u64,
        partition: usize,
        leadership: &Leadership,
    ) -> Result<()> {
        // A replica joining the in-sync set may have moved its log start (a follower
        // restarted at its leader's start, or cut below its own): the start is checkpointed
        // first, so that a crash after `meta` names it in sync never reopens it at an older
        // start (records `delete_records` removed shown again once it leads, or the
        // leader's raised to it at the open). Before the `meta` lock, which no checkpoint
        // write waits for.
        let joins = {
            let state = self.state.read();
            state
                .meta
                .topics
                .get(topic)
                .and_then(|t| t.leadership.get(partition))
                .is_some_and(|current| leadership.isr.iter().any(|d| !current.isr.contains(d)))
        };
        if joins {
            self.write_checkpoints()?;
        }
        let _meta = self.meta_lock.lock();
        if self.dirs().iter().all(|d| d.is_poisoned()) {
            // Nowhere to record it, and nothing can be acknowledged until a directory is
            // restored (which records the leadership then).
            return Ok(());
        }
        let mut meta = {
            let state = self.state.read();
            if state
                .topics
                .get(topic)
                .is_none_or(|t| t.incarnation != incarnation)
            {
                return Ok(());
            }
            state.meta.clone()
        };
        let Some(slot) = meta
            .topics
            .get_mut(topic)
            .and_then(|t| t.leadership.get_mut(partition))
        else {
            return Ok(());
        };
        if slot == leadership {
            return Ok(());
        }
        *slot = leadership.clone();
        meta.generation += 1;
        self.write_meta(&meta)?;
        self.state.write().meta = meta;
        Ok(())
    }

    /// Retention over every topic but the internal ones (`__consumer_offsets` is compacted
    /// instead); checkpoints the moved log starts.
    fn enforce_retention(&self, now: i64) -> MaintenanceReport {
        let topics: Vec<Arc<TopicState>> = self.state.read().topics.values().cloned().collect();
        let mut report = MaintenanceReport::default();
        for topic in topics.iter().filter(|t| {
            !INTERNAL_TOPICS.contains(&t.name.as_str()) && !t.deleted.load(Ordering::Acquire)
        }) {
            for (partition, set) in (0u32..).zip(&topic.sets()) {
                match set.delete_old_segments(now) {
                    Ok(deleted) => {
                        report.segments_deleted += deleted.segments;
                        report.bytes_deleted += deleted.bytes;
                    }
                    // Offline partitions and closed logs have nothing to delete now.
                    Err(Error::PartitionOffline { .. } | Error::Closed) => {}
                    Err(error) => report
                        .failures
                        .push((TopicPartition::new(topic.name.clone(), partition), error)),
                }
            }
        }
        self.unlink_deleted(&topics, &mut report.failures);
        report
    }

    /// Checkpoints the log starts retention moved, then unlinks the files of the segments
    /// it deleted (see `ReplicaLog::unlink_deleted`). Until the checkpoint is written
    /// nothing is unlinked; a file that cannot be unlinked stays queued for the next pass
    /// (and with several directories its directory goes offline, as at any I/O error).
    fn unlink_deleted(
        &self,
        topics: &[Arc<TopicState>],
        failures: &mut Vec<(TopicPartition, Error)>,
    ) {
        let replicas: Vec<Arc<ReplicaLog>> = topics
            .iter()
            .filter(|t| !t.deleted.load(Ordering::Acquire))
            .flat_map(|t| t.all_replicas())
            .filter(|r| r.has_unlinking())
            .collect();
        if replicas.is_empty() {
            return;
        }
        if let Err(error) = self.write_checkpoints() {
            if let Some(replica) = replicas.first() {
                failures.push((replica.topic_partition().clone(), error));
            }
            return;
        }
        for replica in &replicas {
            if let Err(error) = replica.unlink_deleted() {
                if self.dirs().len() > 1 {
                    replica.dir().poison();
                }
                failures.push((replica.topic_partition().clone(), error));
            }
        }
    }

    fn write_checkpoints(&self) -> Result<()> {
        self.write_checkpoint_files(false)
    }

    /// Writes each online directory's checkpoints; unless `all`, only the files whose
    /// entries changed since this `StorageDir` last wrote them.
    fn write_checkpoint_files(&self, all: bool) -> Result<()> {
        let _writer = self.checkpoint_lock.lock();
        let topics: Vec<Arc<TopicState>> = self.state.read().topics.values().cloned().collect();
        let mut replicas: Vec<Arc<ReplicaLog>> =
            topics.iter().flat_map(|t| t.all_replicas()).collect();
        // Loaded by a restore, not yet installed (an installed one is there twice, alike).
        replicas.extend(self.restoring.lock().iter().cloned());
        for dir in self.dirs().iter().filter(|d| self.online(d)) {
            let mut recovery = BTreeMap::new();
            let mut start = BTreeMap::new();
            let mut high = BTreeMap::new();
            let mut covered = Vec::new();
            let mut starts = Vec::new();
            for replica in replicas.iter().filter(|r| Arc::ptr_eq(r.dir(), dir)) {
                let tp = replica.topic_partition().clone();
                // Before the recovery point: a cut counted here has lowered it.
                let truncations = replica.truncation_count();
                covered.push((replica, truncations));
                recovery.insert(tp.clone(), replica.recovery_point());
                let log_start = replica.log_start_offset();
                starts.push((replica, log_start, truncations));
                start.insert(tp.clone(), log_start);
                high.insert(tp, replica.high_watermark());
            }
            let write = |name, entries: &_| metadata::write_checkpoint(dir, name, entries, all);
            let written = write(metadata::RECOVERY_POINT, &recovery)
                .inspect(|()| {
                    for (replica, truncations) in covered {
                        replica.recovery_point_checkpointed(truncations);
                    }
                })
                .and_then(|()| write(metadata::LOG_START, &start))
                .inspect(|()| {
                    // Segments wholly below these starts may now be unlinked.
                    for (replica, log_start, truncations) in starts {
                        replica.log_start_checkpointed(log_start, truncations);
                    }
                })
                .and_then(|()| write(metadata::HIGH_WATERMARK, &high));
            match written {
                // With several directories a failing one goes offline (its partitions fail
                // over at their next use) and the others carry on; this is also how a
                // directory that vanished or turned read-only is noticed.
                Err(_) if self.multi_dir() => dir.poison(),
                written => written?,
            }
        }
        Ok(())
    }

    fn stop_background(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
        // A cleaning in progress sees `closed` and gives up at its next batch.
        for thread in [&self.background, &self.cleaner] {
            let handle = thread.lock().take();
            if let Some(handle) = handle.filter(|h| h.thread().id() != std::thread::current().id())
            {
                let _ = handle.join();
            }
        }
    }

    /// One cleaner pass: every partition of a compacted topic whose leader is due (see
    /// `ReplicaSet::clean`).
    fn clean_logs(&self, now: i64, report: &mut MaintenanceReport) {
        let topics: Vec<Arc<TopicState>> = self.state.read().topics.values().cloned().collect();
        for topic in topics.iter().filter(|t| {
            !t.deleted.load(Ordering::Acquire) && t.config.read().cleanup_policy.compacts()
        }) {
            for (partition, set) in (0u32..).zip(&topic.sets()) {
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                match set.clean(now, self.cleaner_map_entries, &self.closed) {
                    Ok(Some(cleaned)) => {
                        report.partitions_cleaned += 1;
                        report.cleaned_bytes_read += cleaned.bytes_read;
                        report.cleaned_bytes_written += cleaned.bytes_written;
                        report.cleaned_records_removed += cleaned.records_removed;
                    }
                    Ok(None) | Err(Error::PartitionOffline { .. } | Error::Closed) => {}
                    Err(error) => report
                        .failures
                        .push((TopicPartition::new(topic.name.clone(), partition), error)),
                }
            }
        }
    }

    fn shutdown(self: &Arc<Self>) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Consumers asleep in `poll` wake up to find the log closed.
        self.appended.notify();
        // A call changing topics or directories (holding the admin lock) finishes first;
        // one waiting for it answers `Closed` (`Log::admin`).
        let _admin = self.admin.lock();
        let result = self.clean_shutdown();
        // Whatever happened, the directories are free again: reopening is how a failed log
        // is recovered. Work still queued on a directory (a `meta` write) finishes first.
        let lag = Duration::from_millis(self.set_options.replica_lag_time_max_ms);
        for dir in &self.dirs() {
            let _ = dir.drain_and_unlock(lag);
        }
        result
    }

    fn clean_shutdown(self: &Arc<Self>) -> Result<()> {
        self.stop_background();
        let topics: Vec<Arc<TopicState>> = self.state.read().topics.values().cloned().collect();
        let mut result = Ok(());
        for replica in topics.iter().flat_map(|t| t.all_replicas()) {
            // An offline directory's replicas are not closed cleanly: the next open
            // recovers them (or finds the directory still failed).
            if !self.online(replica.dir()) {
                continue;
            }
            if let Err(error) = replica.close() {
                result = result.and(Err(error));
            }
        }
        result?;
        self.write_checkpoints()?;
        for dir in self.dirs().iter().filter(|d| self.online(d)) {
            metadata::write_clean_marker(dir)?;
        }
        Ok(())
    }
}

fn temp_dir() -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("tarnlog-{}-{nanos}-{n}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create directory", path, e)),
        }
    }
    Err(Error::io(
        "create directory",
        base,
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

/// A handle on a topic. Cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Topic {
    log: Log,
    state: Arc<TopicState>,
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Its configuration as it is now (see [`Log::alter_topic_config`]).
    pub fn config(&self) -> TopicConfig {
        self.state.config.read().clone()
    }

    /// True once the topic was deleted (handles then fail with `UnknownTopic`).
    pub(crate) fn is_deleted(&self) -> bool {
        self.state.deleted.load(Ordering::Acquire)
    }

    /// Whether `other` is a handle on the same topic (the same incarnation of its name).
    pub(crate) fn same_topic(&self, other: &Topic) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// How many times the topic's config, partition count or existence changed: read it
    /// before reading those, and a later different answer says they may have changed.
    pub(crate) fn changes(&self) -> u64 {
        self.state.changes.load(Ordering::Acquire)
    }

    /// Its number of partitions.
    pub fn partitions(&self) -> u32 {
        self.state.sets.read().len() as u32
    }

    /// What a group coordinator watches of a subscribed topic.
    pub(crate) fn shape(&self) -> TopicShape {
        TopicShape {
            partitions: self.partitions(),
            incarnation: self.state.incarnation,
        }
    }

    /// A handle on partition `index`.
    ///
    /// # Errors
    /// `UnknownPartition` when `index` is not below the partition count.
    pub fn partition(&self, index: u32) -> Result<Partition> {
        let set = self.state.sets.read().get(index as usize).cloned();
        let set = set.ok_or_else(|| Error::UnknownPartition {
            topic: self.state.name.clone(),
            partition: index,
            partitions: self.partitions(),
        })?;
        Ok(Partition {
            topic: self.clone(),
            index,
            set,
        })
    }
}

/// A handle on one partition: an ordered log with offsets 0, 1, 2, … Cheap to clone,
/// `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Partition {
    topic: Topic,
    index: u32,
    /// Its replicas; reads and appends go to the current leader.
    set: Arc<ReplicaSet>,
}

impl Partition {
    /// The largest batch its topic takes now: `max_message_bytes`, and no more than a
    /// segment.
    pub(crate) fn max_batch_bytes(&self) -> usize {
        let config = self.topic.config();
        (config.max_message_bytes as usize).min(config.segment_bytes as usize)
    }

    fn check(&self) -> Result<()> {
        self.topic.log.check_open()?;
        if self.topic.state.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownTopic {
                topic: self.topic.state.name.clone(),
            });
        }
        Ok(())
    }

    /// True once its topic was deleted.
    pub(crate) fn is_deleted(&self) -> bool {
        self.topic.is_deleted()
    }

    /// The partition's current leader epoch.
    pub(crate) fn leader_epoch(&self) -> i32 {
        self.set.epoch()
    }

    /// Kafka's `OffsetsForLeaderEpoch` as a consumer asks it, answered by the leader: the
    /// largest epoch at or below `epoch` in its history and the offset where the next one
    /// starts (its log end for its latest epoch); `(-1, None)` when it does not know it.
    ///
    /// # Errors
    /// `UnknownTopic` (deleted), `Closed`, `PartitionOffline`, `Poisoned` (one directory).
    pub(crate) fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, Option<u64>)> {
        self.check()?;
        let leader = self.set.leader()?;
        Ok(match leader.end_offset_for(epoch) {
            // A leader that has appended nothing in its epoch (an empty log keeps no
            // entry): its log in that epoch ends at its end, as Kafka's cache would say.
            (_, None) if epoch == self.set.epoch() => (epoch, Some(leader.log_end_offset())),
            answer => answer,
        })
    }

    /// The topic and partition number.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.name(), self.index)
    }

    /// Appends one record batch in Kafka's v2 format with base offset 0 (as built by
    /// [`BatchBuilder`]): the log assigns its offsets, stamps the leader epoch and, under
    /// `LogAppendTime`, the time. Returns once the topic's fsync policy is satisfied.
    ///
    /// # Errors
    /// `RecordTooLarge` (over `max_message_bytes` or `segment_bytes`), `Corruption` (the
    /// bytes are not a valid batch), `UnsupportedCompression`, `InvalidRecord` (a rule a
    /// Kafka leader enforces), `InvalidTimestamp` (a record's `CreateTime` outside the
    /// topic's `timestamp_before_max_ms` / `timestamp_after_max_ms` around the log's clock:
    /// nothing of the batch is appended), `Io` (e.g. a full disk: nothing is appended),
    /// `Poisoned`.
    ///
    /// On a replicated topic it returns once every in-sync replica holds the batch (Kafka's
    /// `acks=all`): `NotEnoughReplicas` when fewer than `min_insync_replicas` are in sync
    /// (nothing written), `NotEnoughReplicasAfterAppend` when too few were left after it.
    /// An `Io` or `Poisoned` from a leader whose directory failed once the batch was in its
    /// log leaves the outcome unknown, as a Kafka producer's timeout does: under
    /// `unclean_leader_election` the replica elected in its place may hold the batch (and
    /// show it), so that an application that sends it again may write it twice.
    pub fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_then(batch, true, |_| {})
    }

    /// As [`Partition::append`], calling `on_appended` once the batch is in the (leader's)
    /// log — on a replicated partition once it is also copied to the in-sync followers and
    /// the partition's order lock is released — before waiting for the fsync policy (a
    /// producer's `acks = Leader`). `min_insync_replicas` applies only with `acks_all`, as in Kafka.
    pub(crate) fn append_then(
        &self,
        batch: &[u8],
        acks_all: bool,
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        self.check()?;
        if INTERNAL_TOPICS.contains(&self.topic.name()) {
            return Err(Error::InternalTopic {
                topic: self.topic.name().into(),
            });
        }
        self.append_unchecked(batch, acks_all, on_appended)
    }

    /// Appends to any topic, internal ones included (the log's own writers), calling
    /// `on_appended` once the batch is in the log.
    pub(crate) fn append_internal(
        &self,
        batch: &[u8],
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        self.check()?;
        self.append_unchecked(batch, true, on_appended)
    }

    fn append_unchecked(
        &self,
        batch: &[u8],
        acks_all: bool,
        on_appended: impl FnOnce(&AppendInfo),
    ) -> Result<AppendInfo> {
        let appended = self.topic.log.appended();
        // A replicated partition's readers are woken again when its high watermark moves
        // (the replica set's visible hook).
        let result = self.set.append(batch, acks_all, |info| {
            appended.notify();
            on_appended(info);
        });
        match result {
            // The topic was deleted while the append ran (its replicas retired under it):
            // the deletion is the answer, not a closed log.
            Err(Error::Closed) if self.is_deleted() && self.topic.log.check_open().is_ok() => {
                Err(Error::UnknownTopic {
                    topic: self.topic.state.name.clone(),
                })
            }
            other => other,
        }
    }

    /// Returns once every offset below `offset` (at most the log end) is durable,
    /// whatever the fsync policy.
    pub(crate) fn sync_to(&self, offset: u64) -> Result<()> {
        self.check()?;
        self.set.sync_to(offset)
    }

    /// Appends the values as one batch of records without keys, stamped with the clock.
    ///
    /// # Errors
    /// As [`Partition::append`]; `InvalidRecord` for no values.
    pub fn append_values<V: AsRef<[u8]>>(
        &self,
        values: impl IntoIterator<Item = V>,
    ) -> Result<AppendInfo> {
        let now = self.topic.log.inner.clock.now_ms();
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(now, None, Some(value.as_ref()), &[]);
        }
        let batch = builder.finish().ok_or_else(|| Error::InvalidRecord {
            reason: "a batch needs at least one record".into(),
        })?;
        self.append(batch)
    }

    /// Reads whole batches from `offset` up to about `max_bytes` (the first batch is
    /// returned even when larger), never past the high watermark.
    ///
    /// # Errors
    /// `OffsetOutOfRange` when `offset` is below the log start or above the log end (at
    /// the end the read is empty); `Corruption` when a batch header on the way is damaged.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<LogRead> {
        self.check()?;
        let leader = self.set.leader()?;
        leader.read(offset, max_bytes, leader.high_watermark())
    }

    /// The first record whose timestamp is at or after `timestamp` (Kafka's
    /// `offsetsForTimes`), or `None` when every record is older.
    ///
    /// # Errors
    /// `Corruption` when a batch on the way is damaged.
    pub fn offset_for_time(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        self.check()?;
        if timestamp == NO_TIMESTAMP {
            return Ok(None);
        }
        self.set.leader()?.offset_for_time(timestamp)
    }

    /// Kafka's `DeleteRecords`: moves the log start to `before_offset` on every replica,
    /// so records below it are no longer readable (consumers positioned there follow
    /// `auto_offset_reset`), deletes the segments wholly below it and checkpoints the new
    /// start. The log start never moves back: an offset below it changes nothing. Returns
    /// the log start after the call (Kafka's low watermark).
    ///
    /// ```
    /// # fn main() -> tarnlog::Result<()> {
    /// use tarnlog::{Log, TopicConfig};
    /// let log = Log::temp()?;
    /// let partition = log.create_topic("jobs", TopicConfig::default())?.partition(0)?;
    /// for _ in 0..5 {
    ///     partition.append_values([&b"job"[..]])?;
    /// }
    /// assert_eq!(partition.delete_records(3)?, 3);
    /// assert!(partition.read(0, 1 << 20).is_err(), "below the log start");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `OffsetOutOfRange` when `before_offset` is beyond the high watermark (`earliest` and
    /// `latest` are the log start and the high watermark); `InternalTopic` for
    /// `__consumer_offsets`; `PolicyViolation` when the topic's `cleanup_policy` is
    /// `Compact` (Kafka requires `delete`); `PartitionOffline`, also when no replica's
    /// directory could record the new start (the deletion may then not last a restart);
    /// `Io` / `Poisoned` when files could not be deleted (the directory then goes
    /// offline); `Closed`, `UnknownTopic` after deletion.
    pub fn delete_records(&self, before_offset: u64) -> Result<u64> {
        self.check()?;
        if INTERNAL_TOPICS.contains(&self.topic.name()) {
            return Err(Error::InternalTopic {
                topic: self.topic.name().into(),
            });
        }
        if !self.topic.state.config.read().cleanup_policy.deletes() {
            return Err(Error::PolicyViolation {
                topic: self.topic.name().into(),
                reason: "delete_records needs a cleanup policy that deletes".into(),
            });
        }
        let (start, _deleted) = self.set.delete_records(before_offset)?;
        // The new start is durable before any file goes (see `ReplicaLog::unlink_deleted`).
        self.topic.log.write_checkpoints()?;
        // With several directories a failed checkpoint takes its directory offline rather
        // than failing the call: the deletion holds only if some replica's directory still
        // took it (an open raises the leader's log start to the highest it finds).
        let durable = self
            .set
            .present()
            .iter()
            .any(|r| !r.dir().is_poisoned() && r.log_start_offset() >= start);
        if !durable {
            return Err(Error::PartitionOffline {
                topic: self.topic.name().into(),
                partition: self.index,
            });
        }
        for replica in self.set.present() {
            if !replica.dir().is_poisoned() {
                replica.unlink_deleted()?;
            }
        }
        Ok(start)
    }

    /// The first offset in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.set.current().map_or(0, |r| r.log_start_offset())
    }

    /// The offset the next record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.set.current().map_or(0, |r| r.log_end_offset())
    }

    /// Records below this offset are visible to readers.
    pub fn high_watermark(&self) -> u64 {
        self.set.current().map_or(0, |r| r.high_watermark())
    }

    /// Whether the partition has a leader (is not offline).
    pub(crate) fn is_led(&self) -> bool {
        self.set.leader().is_ok()
    }

    /// Syncs this partition's data now, whatever its fsync policy.
    ///
    /// # Errors
    /// `Io` (the directory is then poisoned) or `Poisoned`.
    pub fn flush(&self) -> Result<()> {
        self.check()?;
        self.set.sync_to(u64::MAX)
    }

    /// Number of segment files (of the leader).
    pub fn segment_count(&self) -> usize {
        self.set.current().map_or(0, |r| r.segment_count())
    }

    /// Base offsets of the leader's segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<u64> {
        self.set
            .current()
            .map_or_else(Vec::new, |r| r.segment_bases())
    }

    /// The leader's directory for this partition (empty while no replica is present).
    pub fn path(&self) -> PathBuf {
        self.set
            .current()
            .map_or_else(PathBuf::new, |r| r.path().to_path_buf())
    }

    /// Removes every record at or after `offset` (the whole batch holding it). For
    /// replication, where a replica whose history diverged from its leader's must cut it;
    /// applications rarely want this.
    ///
    /// # Errors
    /// `Io`, `Poisoned`.
    #[doc(hidden)]
    pub fn truncate_to(&self, offset: u64) -> Result<()> {
        self.check()?;
        self.set.truncate(offset)?;
        // The recovery point may have moved down: a crash must not trust the old one.
        self.topic.log.write_checkpoints()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::{FaultKind, FaultStorage};

    /// `__consumer_offsets` placed over five directories, three replicas a partition, with
    /// only directory 4 online: every partition placed only in offline ones gets a replica
    /// in 4 in place of its last; the others keep their placement.
    #[test]
    fn every_offsets_partition_gets_an_online_replica() {
        let mut placement = crate::placement::assign(10, 0, 3, 5, 0);
        let before = placement.clone();
        with_an_online_replica(&mut placement, &[4]);
        for (replicas, old) in placement.iter().zip(&before) {
            assert!(replicas.contains(&4), "{replicas:?}");
            if old.contains(&4) {
                assert_eq!(replicas, old);
            } else {
                assert_eq!(replicas[..2], old[..2]);
            }
        }
        assert!(before.iter().any(|r| !r.contains(&4)), "nothing to move");
    }

    /// Unplaced partition directories named by `creating`, or by `deleting` while the name
    /// is live: one holding records (or an offset past 0) may be one whose placing `meta` was
    /// lost, and is set aside as `.stray` (numbered when the name is taken), not removed;
    /// one without is removed. One of a name being deleted and not live goes, records and
    /// all.
    #[test]
    fn unplaced_directories_holding_records_are_set_aside_unless_surely_deleted() {
        let root = tempfile::tempdir().unwrap();
        let log = Log::open(root.path()).unwrap();
        let names = ["kept", "empty", "gone", "live", "moved"];
        for name in names {
            log.create_topic(name, None).unwrap();
        }
        for name in ["kept", "gone", "live"] {
            let p = log.topic(name).unwrap().partition(0).unwrap();
            p.append_values(["acknowledged"]).unwrap();
        }
        log.close().unwrap();
        // An offset past 0 with no record left: a segment file at base 5.
        let moved = root.path().join("moved-0");
        for entry in std::fs::read_dir(&moved).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        std::fs::write(moved.join("00000000000000000005.log"), [0u8; 64]).unwrap();
        std::fs::create_dir(root.path().join("kept-0.stray")).unwrap();
        let dir = StorageDir::open(crate::storage::OsStorage::shared(), root.path()).unwrap();
        let (mut meta, _) = metadata::read_meta(&dir).unwrap().unwrap();
        for name in names {
            meta.topics.remove(name);
        }
        // `live` is live again, under another placement (its partition not here).
        let mut elsewhere = log_meta_topic_elsewhere();
        elsewhere.placement = vec![vec![1]];
        meta.topics.insert("live".to_owned(), elsewhere);
        meta.creating
            .extend(["kept", "empty", "moved"].map(str::to_owned));
        meta.deleting.extend(["gone", "live"].map(str::to_owned));
        remove_stray_partitions(&dir, 0, &meta, None).unwrap();
        let exists = |name: &str| root.path().join(name).exists();
        assert!(
            !exists("kept-0") && exists("kept-0.stray.1"),
            "set aside, numbered"
        );
        assert!(!exists("empty-0") && !exists("empty-0.stray"), "removed");
        assert!(!exists("gone-0") && !exists("gone-0.stray"), "removed");
        assert!(!exists("live-0") && exists("live-0.stray"), "set aside");
        assert!(!exists("moved-0") && exists("moved-0.stray"), "set aside");
    }

    /// A one-partition topic's `meta` entry.
    fn log_meta_topic_elsewhere() -> TopicMeta {
        TopicMeta {
            config: TopicConfig::default(),
            placement: vec![vec![0]],
            leadership: vec![Leadership::initial(&[0])],
        }
    }

    /// Names set aside or doomed fit a file name (255 bytes) for the longest topic names,
    /// stay distinct per partition, and are unchanged when they fit.
    #[test]
    fn names_set_aside_fit_a_file_name() {
        assert_eq!(aside_name("t-0", "delete"), "t-0.delete");
        assert_eq!(aside_name("t-0", "damaged.2"), "t-0.damaged.2");
        let topic = "t".repeat(249);
        let mut seen = std::collections::HashSet::new();
        for partition in [0u32, 9, 10, 4_294_967_295] {
            let name = format!("{topic}-{partition}");
            for suffix in ["delete", "damaged", "diverged", "diverged.4294967295"] {
                let aside = aside_name(&name, suffix);
                assert!(aside.len() <= 255, "{} bytes", aside.len());
                assert!(aside.ends_with(&format!(".{suffix}")));
                assert!(aside.starts_with(&topic[..200]));
                assert!(seen.insert(aside));
            }
        }
    }

    /// A log over directories `d0` and `d1` of a fresh root, on fault-injecting storage.
    fn two_faulty_dirs() -> (tempfile::TempDir, FaultStorage, Log) {
        let root = tempfile::tempdir().unwrap();
        let fault = FaultStorage::new(OsStorage::shared());
        let log = Log::builder()
            .dirs([root.path().join("d0"), root.path().join("d1")])
            .storage(fault.shared())
            .open()
            .unwrap();
        (root, fault, log)
    }

    /// Checkpoints written while `restore_dir` runs (the background thread's, a flush's)
    /// keep the entries of the replicas it has not yet put back: without them a crash then
    /// would reopen those replicas with no recovery point (damage below it read as a torn
    /// tail and cut) and no log start (deleted records back).
    #[test]
    fn checkpoints_during_a_restore_keep_the_replicas_not_yet_restored() {
        let (root, fault, log) = two_faulty_dirs();
        let dirs = [root.path().join("d0"), root.path().join("d1")];
        let mut in_d1 = Vec::new();
        for name in ["a", "b"] {
            let topic = log
                .create_topic(name, TopicConfig::default().partitions(2))
                .unwrap();
            for (p, described) in log
                .describe_topic(name)
                .unwrap()
                .partitions
                .iter()
                .enumerate()
            {
                let partition = topic.partition(p as u32).unwrap();
                partition
                    .append_values((0..10).map(|i| i.to_string()))
                    .unwrap();
                partition.delete_records(5).unwrap();
                if described.replicas == [1] {
                    in_d1.push(partition);
                }
            }
        }
        assert!(in_d1.len() >= 2, "placement spreads the partitions");
        log.flush().unwrap();
        fault.fail_dir(&dirs[1], FaultKind::Eio);
        assert!(in_d1[0].append_values(["x"]).is_err());
        fault.heal_dir(&dirs[1]);
        let expected: BTreeMap<TopicPartition, u64> =
            in_d1.iter().map(|p| (p.topic_partition(), 5)).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (inner, record) = (Arc::clone(&log.inner), Arc::clone(&seen));
        *log.inner.restore_step.lock() = Some(RestoreStep(Box::new(move || {
            inner.write_checkpoint_files(true).unwrap();
            let dir = Arc::clone(&inner.dirs()[1]);
            let starts = metadata::read_checkpoint(&dir, metadata::LOG_START).unwrap();
            record.lock().push(starts);
        })));
        log.restore_dir(&dirs[1]).unwrap();
        *log.inner.restore_step.lock() = None;
        let seen = seen.lock();
        assert_eq!(seen.len(), in_d1.len());
        for starts in seen.iter() {
            assert_eq!(*starts, expected);
        }
        drop(seen);
        log.close().unwrap();
    }

    /// `close` during a `restore_dir` (which holds the admin lock `close` waits for) stops
    /// its copies at the next partition: the restore answers `Closed`, the directory stays
    /// offline, and the next open restores it.
    #[test]
    fn a_restore_stops_its_copies_when_the_log_closes() {
        let (root, fault, log) = two_faulty_dirs();
        let dirs = [root.path().join("d0"), root.path().join("d1")];
        let config = TopicConfig::default().partitions(2).replication_factor(2);
        let topic = log.create_topic("t", config).unwrap();
        fault.fail_dir(&dirs[1], FaultKind::Eio);
        for p in 0..2 {
            topic
                .partition(p)
                .unwrap()
                .append_values(["a", "b"])
                .unwrap();
        }
        assert!(!log.dir_status()[1].online);
        fault.heal_dir(&dirs[1]);
        let inner = Arc::clone(&log.inner);
        let closing = log.clone();
        let closer: Arc<Mutex<Option<std::thread::JoinHandle<Result<()>>>>> = Arc::default();
        let slot = Arc::clone(&closer);
        *log.inner.restore_step.lock() = Some(RestoreStep(Box::new(move || {
            let mut slot = slot.lock();
            if slot.is_none() {
                let closing = closing.clone();
                *slot = Some(std::thread::spawn(move || closing.close()));
                while !inner.closed.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
            }
        })));
        let restored = log.restore_dir(&dirs[1]);
        // The hook holds the log: it goes, or the log is never freed.
        *log.inner.restore_step.lock() = None;
        assert!(matches!(restored, Err(Error::Closed)), "{restored:?}");
        let close = closer.lock().take().unwrap();
        close.join().unwrap().unwrap();
        drop(topic);
        drop(log);
        let log = Log::builder().dirs(&dirs).open().unwrap();
        assert!(log.dir_status().iter().all(|d| d.online));
        for p in 0..2 {
            let partition = log.topic("t").unwrap().partition(p).unwrap();
            assert_eq!(partition.high_watermark(), 2);
        }
        log.close().unwrap();
    }
}
