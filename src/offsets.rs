//! Committed offsets, kept as Kafka keeps them: records in the internal, compacted topic
//! `__consumer_offsets`, one partition per group by Kafka's hash rule, with Kafka's
//! `OffsetCommitKey` (v1) / `OffsetCommitValue` (v3) schemas (reference §7); values of
//! versions 0 to 4 are read, 4 being Kafka's first flexible version.
//!
//! Invariants: the in-memory cache equals the replay of the topic's records in offset
//! order (latest record per key wins, a null value removes the key), so the cache changes
//! once a commit is in the log, before its sync: `committed` may show a commit whose sync
//! then fails (its committer gets the error), which a crash can take back — an offset that
//! goes back, never one past data; before a commit of offset `o` for a partition is
//! appended, that partition's data below `o` is synced, so after any crash a recovered
//! commit never points past recovered data.

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};

use crate::codec::{BatchBuilder, Record};
use crate::error::{Error, Location, Result};
use crate::group::coordinator::Coordinator;
use crate::log::{Log, Topic};
use crate::types::TopicPartition;

/// The internal topic's name.
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";

/// Kafka's `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// A committed position (Kafka's `OffsetAndMetadata`): the next offset to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset the group will consume.
    pub offset: u64,
    /// Free text stored with the commit (at most 4096 bytes).
    pub metadata: String,
    /// The leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<i32>,
    /// When the commit was made, by the log's clock (ms since the epoch); set by the log.
    pub commit_timestamp: i64,
}

impl OffsetAndMetadata {
    /// A commit of `offset` with no metadata.
    pub fn new(offset: u64) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            metadata: String::new(),
            leader_epoch: None,
            commit_timestamp: -1,
        }
    }

    /// Sets the metadata string.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// Kafka's group-to-partition rule: `abs(groupId.hashCode()) % partitions`, with Java's
/// `String.hashCode` over UTF-16 code units and `abs(Integer.MIN_VALUE) = 0`.
///
/// # Panics
/// When `partitions` is 0 (no topic has no partitions).
pub fn partition_for_group(group: &str, partitions: u32) -> u32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive.unsigned_abs() % partitions
}

/// `OffsetCommitKey` v1: group, topic, partition.
pub(crate) fn encode_key(group: &str, tp: &TopicPartition) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(10 + group.len() + tp.topic.len());
    out.extend_from_slice(&1i16.to_be_bytes());
    put_string(&mut out, group)?;
    put_string(&mut out, &tp.topic)?;
    out.extend_from_slice(&(tp.partition as i32).to_be_bytes());
    Ok(out)
}

/// `OffsetCommitValue` v3: offset, leader epoch, metadata, commit timestamp.
pub(crate) fn encode_value(commit: &OffsetAndMetadata) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(24 + commit.metadata.len());
    out.extend_from_slice(&3i16.to_be_bytes());
    out.extend_from_slice(&(commit.offset as i64).to_be_bytes());
    out.extend_from_slice(&commit.leader_epoch.unwrap_or(-1).to_be_bytes());
    put_string(&mut out, &commit.metadata)?;
    out.extend_from_slice(&commit.commit_timestamp.to_be_bytes());
    Ok(out)
}

/// Kafka's `STRING`: int16 length, then UTF-8. Every string written here is validated far
/// below the limit (group and instance ids, topic names, assignor names, metadata); one that
/// is not is refused rather than cut.
fn put_string(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let Ok(len) = i16::try_from(s.len()) else {
        let preview: String = s.chars().take(32).collect();
        return Err(Error::InvalidConfig {
            field: "string in __consumer_offsets",
            value: format!("{preview:?}… ({} bytes)", s.len()),
            allowed: format!("at most {} bytes", i16::MAX),
        });
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// What one record of the offsets topic says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// An offset commit; `None` is a tombstone.
    Offset {
        group: String,
        tp: TopicPartition,
        commit: Option<OffsetAndMetadata>,
    },
    /// A group's metadata (`GroupMetadataKey` v2); `None` is a tombstone.
    Group {
        group: String,
        meta: Option<GroupMeta>,
    },
    /// A record kind this version does not keep (KIP-848 records).
    Other,
}

/// What `__consumer_offsets` keeps about a group itself (`GroupMetadataValue`): written
/// when a rebalance completes and when the group becomes empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMeta {
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state (log clock).
    pub state_timestamp: i64,
    pub members: Vec<MemberMeta>,
}

/// One member in a [`GroupMeta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberMeta {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
}

/// `GroupMetadataKey` v2: the group.
pub(crate) fn encode_group_key(group: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(4 + group.len());
    out.extend_from_slice(&2i16.to_be_bytes());
    put_string(&mut out, group)?;
    Ok(out)
}

/// `GroupMetadataValue` v3. Member subscriptions and assignments are written empty: they
/// live in the members' processes, which a restart ends.
pub(crate) fn encode_group_value(meta: &GroupMeta) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&3i16.to_be_bytes());
    put_string(&mut out, "consumer")?;
    out.extend_from_slice(&meta.generation.to_be_bytes());
    put_nullable_string(&mut out, meta.protocol.as_deref())?;
    put_nullable_string(&mut out, meta.leader.as_deref())?;
    out.extend_from_slice(&meta.state_timestamp.to_be_bytes());
    out.extend_from_slice(&(meta.members.len() as i32).to_be_bytes());
    for member in &meta.members {
        put_string(&mut out, &member.member_id)?;
        put_nullable_string(&mut out, member.instance_id.as_deref())?;
        put_string(&mut out, "tarnlog")?;
        put_string(&mut out, "/in-process")?;
        out.extend_from_slice(&member.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&member.session_timeout_ms.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // subscription
        out.extend_from_slice(&0i32.to_be_bytes()); // assignment
    }
    Ok(out)
}

/// Kafka's `NULLABLE_STRING`: `int16` length (-1 for null), then UTF-8.
fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) -> Result<()> {
    if let Some(s) = s {
        return put_string(out, s);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(())
}

/// Decodes a `GroupMetadataValue` of versions 0 to 4 (4 is Kafka's first flexible version,
/// KIP-915: compact strings, bytes and arrays, and tagged fields after each struct).
fn decode_group_value(v: &mut Cursor<'_>) -> Result<GroupMeta> {
    let version = v.i16("group value version")?;
    if !(0..=4).contains(&version) {
        return Err(v.bad(
            "group value version",
            &format!("unsupported version {version}"),
        ));
    }
    v.flexible = version >= 4;
    let _protocol_type = v.string("protocol type")?;
    let generation = v.i32("generation")?;
    let protocol = v.nullable_string("protocol")?;
    let leader = v.nullable_string("leader")?;
    let state_timestamp = if version >= 2 {
        v.i64("current state timestamp")?
    } else {
        -1
    };
    let count = v.array_len("member count")?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = v.string("member id")?;
        let instance_id = if version >= 3 {
            v.nullable_string("group instance id")?
        } else {
            None
        };
        v.string("client id")?;
        v.string("client host")?;
        let session_first = v.i32("timeout")?;
        let (rebalance_timeout_ms, session_timeout_ms) = if version >= 1 {
            (session_first, v.i32("session timeout")?)
        } else {
            (session_first, session_first)
        };
        v.bytes("subscription")?;
        v.bytes("assignment")?;
        v.tagged_fields("member tagged fields")?;
        members.push(MemberMeta {
            member_id,
            instance_id,
            rebalance_timeout_ms,
            session_timeout_ms,
        });
    }
    v.tagged_fields("group value tagged fields")?;
    Ok(GroupMeta {
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// A cursor over Kafka's big-endian schema types that names what it failed to read.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
    /// Reading a flexible version: strings, bytes and arrays carry an unsigned varint of
    /// their length plus one (0 for null), and each struct ends with tagged fields.
    flexible: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::Corruption {
                location: Location::Buffer { position: self.pos },
                what: self.what,
                detail: format!(
                    "{field} needs {n} bytes, {} left",
                    self.buf.len() - self.pos
                ),
            });
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn i16(&mut self, field: &str) -> Result<i16> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &str) -> Result<i32> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, field: &str) -> Result<i64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// Kafka's `UNSIGNED_VARINT`: at most five bytes, seven bits each, low group first.
    fn uvarint(&mut self, field: &str) -> Result<u32> {
        let mut value = 0u32;
        for i in 0..5 {
            let byte = self.take(1, field)?[0];
            if i == 4 && byte > 0x0f {
                return Err(self.bad(field, "varint longer than 32 bits"));
            }
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.bad(field, "varint longer than 32 bits"))
    }

    /// A length with null: `int16` (strings) or `int32` (bytes, arrays) with -1 for null,
    /// or in a flexible version the unsigned varint of the length plus one, 0 for null.
    fn length(&mut self, field: &str, wide: bool) -> Result<Option<usize>> {
        let len = if self.flexible {
            i64::from(self.uvarint(field)?) - 1
        } else if wide {
            i64::from(self.i32(field)?)
        } else {
            i64::from(self.i16(field)?)
        };
        if len == -1 {
            return Ok(None);
        }
        usize::try_from(len)
            .map(Some)
            .map_err(|_| self.bad(field, "negative length"))
    }

    fn string(&mut self, field: &str) -> Result<String> {
        self.nullable_string(field)?
            .ok_or_else(|| self.bad(field, "null where a string is required"))
    }

    fn nullable_string(&mut self, field: &str) -> Result<Option<String>> {
        let Some(len) = self.length(field, false)? else {
            return Ok(None);
        };
        // Kafka refuses longer strings in every version (the compact form could say more).
        if len > i16::MAX as usize {
            return Err(self.bad(field, "longer than 32767 bytes"));
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| self.bad(field, "not UTF-8"))
    }

    /// Kafka's `BYTES` (`COMPACT_BYTES` when flexible), not null; the bytes are skipped.
    fn bytes(&mut self, field: &str) -> Result<()> {
        let len = self
            .length(field, true)?
            .ok_or_else(|| self.bad(field, "null where bytes are required"))?;
        self.take(len, field)?;
        Ok(())
    }

    /// An array's element count (`int32`, or `COMPACT_ARRAY` when flexible); not null.
    fn array_len(&mut self, field: &str) -> Result<usize> {
        self.length(field, true)?
            .ok_or_else(|| self.bad(field, "null where an array is required"))
    }

    /// The tagged fields ending a struct of a flexible version: a count, then each field's
    /// tag, size and bytes. None are known here, so all are skipped, as Kafka skips the
    /// tags it does not know.
    fn tagged_fields(&mut self, field: &str) -> Result<()> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint(field)?;
        for _ in 0..count {
            self.uvarint(field)?;
            let size = self.uvarint(field)? as usize;
            self.take(size, field)?;
        }
        Ok(())
    }

    fn bad(&self, field: &str, why: &str) -> Error {
        Error::Corruption {
            location: Location::Buffer { position: self.pos },
            what: self.what,
            detail: format!("{field}: {why}"),
        }
    }
}

/// Decodes one record of the offsets topic. Unknown key versions are ignored, as Kafka's
/// loader does; a known key or value that does not parse is corruption.
pub(crate) fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Entry> {
    let Some(key) = key else {
        return Err(Error::Corruption {
            location: Location::Buffer { position: 0 },
            what: "offsets topic key",
            detail: "a record without a key".into(),
        });
    };
    let mut k = Cursor {
        buf: key,
        pos: 0,
        what: "offsets topic key",
        flexible: false,
    };
    let version = k.i16("key version")?;
    if version == 2 {
        let group = k.string("group")?;
        let meta = match value {
            None => None,
            Some(value) => Some(decode_group_value(&mut Cursor {
                buf: value,
                pos: 0,
                what: "offsets topic group value",
                flexible: false,
            })?),
        };
        return Ok(Entry::Group { group, meta });
    }
    if !(0..=1).contains(&version) {
        return Ok(Entry::Other);
    }
    let group = k.string("group")?;
    let topic = k.string("topic")?;
    let partition = k.i32("partition")?;
    let partition = u32::try_from(partition).map_err(|_| k.bad("partition", "negative"))?;
    let tp = TopicPartition::new(topic, partition);
    let Some(value) = value else {
        return Ok(Entry::Offset {
            group,
            tp,
            commit: None,
        });
    };
    let mut v = Cursor {
        buf: value,
        pos: 0,
        what: "offsets topic value",
        flexible: false,
    };
    let version = v.i16("value version")?;
    if !(0..=4).contains(&version) {
        return Err(v.bad("value version", &format!("unsupported version {version}")));
    }
    // v4 is Kafka's first flexible version (KIP-915): a compact metadata string and tagged
    // fields at the end.
    v.flexible = version >= 4;
    let offset = v.i64("offset")?;
    let offset = u64::try_from(offset).map_err(|_| v.bad("offset", "negative"))?;
    // v3 adds the leader epoch before the metadata; v1 alone has an expire timestamp.
    let epoch = if version >= 3 {
        v.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = v.string("metadata")?;
    let commit_timestamp = v.i64("commit timestamp")?;
    if version == 1 {
        v.i64("expire timestamp")?;
    }
    v.tagged_fields("value tagged fields")?;
    let commit = OffsetAndMetadata {
        offset,
        metadata,
        leader_epoch: (epoch >= 0).then_some(epoch),
        commit_timestamp,
    };
    Ok(Entry::Offset {
        group,
        tp,
        commit: Some(commit),
    })
}

/// The committed offsets of every group, and the topic that keeps them.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    /// Partition count used when the topic is first created.
    partitions: u32,
    cache: RwLock<Cache>,
    groups: RwLock<Groups>,
    /// Serialises commits, so that cache updates follow append order.
    commit_lock: Mutex<()>,
    /// Tombstones of deleted topics' offsets not written yet, per group: the offsets of a
    /// topic move here from the cache when it is deleted, and leave once written. (A
    /// deleted topic's name stays in `meta`'s `forgotten` until they are, and no topic of
    /// the name is created meanwhile; the next open finds them again in the replay.)
    owed: Mutex<Vec<(String, Vec<TopicPartition>)>>,
    /// The partitions of the offsets topic that the replay at open could not read (no
    /// leader then): only once it read them all does the cache (with `owed`) hold every
    /// committed offset. A group of an unread partition neither reads nor commits offsets
    /// (`PartitionOffline`, as Kafka's coordinator answers a group it is still loading)
    /// until the partition, led again, is replayed (`ensure_read`).
    unread: Mutex<Unread>,
}

/// See [`OffsetStore::unread`].
#[derive(Debug, Default)]
struct Unread {
    /// The offsets topic's partition count at the replay.
    partitions: u32,
    set: std::collections::BTreeSet<u32>,
}

impl OffsetStore {
    pub(crate) fn new(partitions: u32) -> OffsetStore {
        OffsetStore {
            partitions,
            cache: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            commit_lock: Mutex::new(()),
            owed: Mutex::new(Vec::new()),
            unread: Mutex::new(Unread::default()),
        }
    }

    /// Rebuilds the cache from the topic, when it exists.
    pub(crate) fn load(&self, log: &Log) -> Result<()> {
        let Ok(topic) = log.topic(CONSUMER_OFFSETS) else {
            return Ok(());
        };
        let mut cache = HashMap::new();
        let mut groups = HashMap::new();
        let mut unread = Unread {
            partitions: topic.partitions(),
            set: std::collections::BTreeSet::new(),
        };
        for p in 0..topic.partitions() {
            let partition = topic.partition(p)?;
            if !partition.is_led() {
                // Unreadable until it has a leader (a present follower out of sync has a
                // high watermark, but reads go to the leader).
                unread.set.insert(p);
                continue;
            }
            replay(&partition, p, &mut cache, &mut groups)?;
        }
        let orphaned = orphans(log, &mut cache);
        *self.cache.write() = cache;
        *self.groups.write() = groups;
        *self.unread.lock() = unread;
        *self.owed.lock() = orphaned;
        // The offsets topic's partition may be offline: what is not written now stays owed.
        let _ = self.write_owed(log, None);
        Ok(())
    }

    /// Replays the partitions the open could not read that have a leader now (only `only`,
    /// when given) into the cache (their groups had nothing there: they could not commit
    /// meanwhile), under the commit lock. Every partition is tried; the first error is
    /// returned.
    fn replay_unread(&self, log: &Log, only: Option<u32>) -> Result<()> {
        if self.unread.lock().set.is_empty() {
            return Ok(());
        }
        let _serial = self.commit_lock.lock();
        let pending: Vec<u32> = self
            .unread
            .lock()
            .set
            .iter()
            .copied()
            .filter(|&p| only.is_none_or(|only| only == p))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let topic = log.topic(CONSUMER_OFFSETS)?;
        let mut result = Ok(());
        for p in pending {
            if let Err(error) = self.replay_one(log, &topic, p) {
                result = result.and(Err(error));
            }
        }
        result
    }

    /// Replays offsets partition `p` (see `replay_unread`) if it has a leader now.
    fn replay_one(&self, log: &Log, topic: &crate::Topic, p: u32) -> Result<()> {
        let partition = topic.partition(p)?;
        if !partition.is_led() {
            return Ok(());
        }
        let mut cache = HashMap::new();
        let mut groups = HashMap::new();
        replay(&partition, p, &mut cache, &mut groups)?;
        let orphaned = orphans(log, &mut cache);
        self.cache.write().extend(cache);
        // As at open, the coordinator takes the groups up (their generations go on from
        // the stored ones; no member could join them before: see `ensure_read`).
        let now = log.now_ms();
        for (group, meta) in &groups {
            log.coordinator().restore(group, meta, now);
        }
        {
            let mut known = self.groups.write();
            for (group, meta) in groups {
                keep_newer(&mut known, group, meta);
            }
        }
        self.owed.lock().extend(orphaned);
        self.unread.lock().set.remove(&p);
        Ok(())
    }

    /// `PartitionOffline` while the offsets partition of `group` could not be read (see
    /// `unread`), after replaying it if it has a leader now.
    pub(crate) fn ensure_read(&self, log: &Log, group: &str) -> Result<()> {
        let unread = |this: &OffsetStore| {
            let unread = this.unread.lock();
            if unread.set.is_empty() {
                return None;
            }
            let p = partition_for_group(group, unread.partitions);
            unread.set.contains(&p).then_some(p)
        };
        let Some(p) = unread(self) else {
            return Ok(());
        };
        self.replay_unread(log, Some(p))?;
        match unread(self) {
            None => Ok(()),
            Some(partition) => Err(Error::PartitionOffline {
                topic: CONSUMER_OFFSETS.into(),
                partition,
            }),
        }
    }
}

/// Applies every record of offsets partition `p` to `cache` and `groups`.
fn replay(
    partition: &crate::Partition,
    p: u32,
    cache: &mut Cache,
    groups: &mut Groups,
) -> Result<()> {
    let mut offset = partition.log_start_offset();
    while offset < partition.high_watermark() {
        let read = partition.read(offset, 1 << 20)?;
        let mut advanced = false;
        for batch in read.batches() {
            let batch = batch?;
            for record in batch.records() {
                let record = record?;
                if (record.offset as u64) < offset {
                    continue;
                }
                apply(cache, groups, &record).map_err(|e| at_record(e, p, &record))?;
            }
            offset = batch.next_offset() as u64;
            advanced = true;
        }
        if !advanced {
            break;
        }
    }
    Ok(())
}

/// Takes out of `cache` the offsets of topics that no longer exist and returns them, one
/// entry per group and topic: offsets of topics deleted before their tombstones were
/// written (a crash, or a failed write) get their tombstones, so that a topic created
/// again under the name at a later open does not bring them back.
fn orphans(log: &Log, cache: &mut Cache) -> Vec<(String, Vec<TopicPartition>)> {
    let mut orphaned = Vec::new();
    {
        for (group, offsets) in cache.iter_mut() {
            let gone: Vec<TopicPartition> = offsets
                .keys()
                .filter(|tp| log.topic(&tp.topic).is_err())
                .cloned()
                .collect();
            for tp in &gone {
                offsets.remove(tp);
            }
            // One entry per topic: a name's tombstones are written (and it is freed)
            // without waiting on another's.
            let mut by_topic: Vec<Vec<TopicPartition>> = Vec::new();
            for tp in gone {
                match by_topic.iter_mut().find(|tps| tps[0].topic == tp.topic) {
                    Some(tps) => tps.push(tp),
                    None => by_topic.push(vec![tp]),
                }
            }
            orphaned.extend(by_topic.into_iter().map(|tps| (group.clone(), tps)));
        }
    }
    cache.retain(|_, offsets| !offsets.is_empty());
    orphaned
}

impl OffsetStore {
    /// The topics whose offsets' tombstones are owed.
    pub(crate) fn owed_topics(&self) -> std::collections::BTreeSet<String> {
        self.owed
            .lock()
            .iter()
            .flat_map(|(_, tps)| tps.iter().map(|tp| tp.topic.clone()))
            .collect()
    }

    /// Whether every committed offset is known (see `unread`, whose partitions with a
    /// leader now are replayed first); `Err` names an offsets partition not read yet.
    pub(crate) fn check_complete(&self, log: &Log) -> Result<()> {
        self.replay_unread(log, None)?;
        match self.unread.lock().set.first() {
            None => Ok(()),
            Some(&partition) => Err(Error::PartitionOffline {
                topic: CONSUMER_OFFSETS.into(),
                partition,
            }),
        }
    }

    /// Writes the tombstones owed for deleted topics' offsets (see `owed`), only those of
    /// `topic` when given. The first that cannot be written is returned; it and the rest
    /// stay owed.
    pub(crate) fn write_owed(&self, log: &Log, topic: Option<&str>) -> Result<()> {
        let wanted =
            |tps: &[TopicPartition]| topic.is_none_or(|t| tps.iter().any(|tp| tp.topic == t));
        if !self.owed.lock().iter().any(|(_, tps)| wanted(tps)) {
            // Nothing owed (the usual case): no wait for the commit lock.
            return Ok(());
        }
        let _serial = self.commit_lock.lock();
        // Each entry leaves the list only once written (all entries are added under the
        // commit lock, so the list is stable here).
        let todo: Vec<(String, Vec<TopicPartition>)> = self
            .owed
            .lock()
            .iter()
            .filter(|(_, tps)| wanted(tps))
            .cloned()
            .collect();
        for (group, tps) in todo {
            self.tombstone(log, &group, &tps)?;
            self.owed.lock().retain(|(g, t)| (g, t) != (&group, &tps));
        }
        Ok(())
    }

    /// The committed offset of `group` for `tp`.
    pub(crate) fn committed(
        &self,
        log: &Log,
        group: &str,
        tp: &TopicPartition,
    ) -> Result<Option<OffsetAndMetadata>> {
        self.ensure_read(log, group)?;
        Ok(self
            .cache
            .read()
            .get(group)
            .and_then(|offsets| offsets.get(tp))
            .cloned())
    }

    /// Commits `offsets` for `group` atomically (one batch), after syncing the data they
    /// cover. Returns once the commit is durable. `check` runs under the commit lock, after
    /// the offsets were validated and before anything is written; what it returns (a group
    /// fence) is held until the commit is in the log.
    pub(crate) fn commit<G>(
        &self,
        log: &Log,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
        check: impl FnOnce() -> Result<G>,
    ) -> Result<()> {
        check_group_id(group)?;
        if offsets.is_empty() {
            return Ok(());
        }
        // Its earlier commits must be known first (see `unread`).
        self.ensure_read(log, group)?;
        // Checks first: a refused commit writes nothing.
        let mut data = Vec::with_capacity(offsets.len());
        for (tp, commit) in offsets {
            if commit.metadata.len() > OFFSET_METADATA_MAX_BYTES {
                return Err(Error::OffsetMetadataTooLarge {
                    size: commit.metadata.len(),
                    max: OFFSET_METADATA_MAX_BYTES,
                });
            }
            let partition = log.topic(&tp.topic)?.partition(tp.partition)?;
            let high_watermark = partition.high_watermark();
            if commit.offset > high_watermark {
                return Err(Error::OffsetOutOfRange {
                    requested: commit.offset,
                    earliest: partition.log_start_offset(),
                    latest: high_watermark,
                });
            }
            data.push(partition);
        }
        let _serial = self.commit_lock.lock();
        // A topic deleted since the checks above moved its offsets to `owed` under this
        // lock (`owe_topic`): a commit of it must not land in the cache after that.
        let refuse_deleted = || match data.iter().find(|p| p.is_deleted()) {
            Some(deleted) => Err(Error::UnknownTopic {
                topic: deleted.topic_partition().topic,
            }),
            None => Ok(()),
        };
        refuse_deleted()?;
        let _checked = check()?;
        let now = log.now_ms();
        // The data first: a recovered commit must never point past recovered data.
        for (partition, (_, commit)) in data.iter().zip(offsets) {
            partition.sync_to(commit.offset)?;
        }
        let topic = self.topic(log)?;
        // Again: a deletion that finished while this created `__consumer_offsets` (it
        // waited for the deletion's admin lock) owed no tombstones, the offsets topic not
        // existing then. One after it owes them under this lock, after the append.
        refuse_deleted()?;
        let index = partition_for_group(group, topic.partitions());
        let mut builder = BatchBuilder::new();
        let mut stamped = Vec::with_capacity(offsets.len());
        for (tp, commit) in offsets {
            let commit = OffsetAndMetadata {
                commit_timestamp: now,
                ..commit.clone()
            };
            builder.push(
                now,
                Some(&encode_key(group, tp)?),
                Some(&encode_value(&commit)?),
                &[],
            );
            stamped.push((tp.clone(), commit));
        }
        let batch = builder
            .finish()
            .unwrap_or_else(|| unreachable!("at least one offset was pushed"));
        // The cache changes once the batch is in the log, even if a later step fails, so
        // that it always equals what a replay would find.
        topic.partition(index)?.append_internal(batch, |_| {
            let mut cache = self.cache.write();
            let group_offsets = cache.entry(group.to_owned()).or_default();
            for (tp, commit) in stamped {
                group_offsets.insert(tp, commit);
            }
        })?;
        Ok(())
    }

    /// Moves every group's offsets for `topic` (deleted) from the cache to `owed`, whose
    /// tombstones [`write_owed`](Self::write_owed) writes (as Kafka removes a deleted
    /// partition's offsets). Called as the topic is deleted, before a topic of the name can
    /// exist again; under the commit lock, so a commit of the topic that passed its checks
    /// before the deletion lands in the cache first and moves too.
    ///
    /// Lock order: `admin` (held by the caller) before `commit_lock`. A commit takes
    /// `admin` under `commit_lock` only to create `__consumer_offsets`, which exists
    /// whenever this is called (and once created never goes), so the two never meet.
    pub(crate) fn owe_topic(&self, topic: &str) {
        let _serial = self.commit_lock.lock();
        let mut cache = self.cache.write();
        let mut owed = self.owed.lock();
        for (group, offsets) in cache.iter_mut() {
            let tps: Vec<TopicPartition> = offsets
                .keys()
                .filter(|tp| tp.topic == topic)
                .cloned()
                .collect();
            if !tps.is_empty() {
                offsets.retain(|tp, _| tp.topic != topic);
                owed.push((group.clone(), tps));
            }
        }
        cache.retain(|_, offsets| !offsets.is_empty());
    }

    /// Removes all of `group`'s offsets and its metadata, with tombstones, and makes the
    /// coordinator forget it; `false` if it had none. `GroupNotEmpty` while it has members.
    pub(crate) fn delete_group(
        &self,
        log: &Log,
        coordinator: &Coordinator,
        group: &str,
    ) -> Result<bool> {
        // Its offsets must be known to be deleted (see `unread`).
        self.ensure_read(log, group)?;
        let _serial = self.commit_lock.lock();
        let mut fence =
            coordinator
                .fence(group, None, log.now_ms())
                .map_err(|_| Error::GroupNotEmpty {
                    group: group.to_owned(),
                })?;
        let deleted = self.delete_group_locked(log, group)?;
        fence.forget();
        Ok(deleted)
    }

    /// As `delete_group`, with `commit_lock` held and the group fenced.
    fn delete_group_locked(&self, log: &Log, group: &str) -> Result<bool> {
        let tps: Vec<TopicPartition> = self
            .cache
            .read()
            .get(group)
            .map(|offsets| offsets.keys().cloned().collect())
            .unwrap_or_default();
        let had_meta = self.groups.read().contains_key(group);
        if tps.is_empty() && !had_meta {
            return Ok(false);
        }
        self.tombstone(log, group, &tps)?;
        if had_meta {
            self.write_group_locked(log, group, None)?;
        }
        Ok(true)
    }

    /// Writes the group metadata the coordinator queued, in order, under `commit_lock` (so
    /// a group deleted meanwhile is not written back). A group whose write fails (its
    /// offsets partition offline, say) keeps that change and its later ones queued, in
    /// order, for the next call; the other groups' are written. Returns the failures, the
    /// first of each group.
    pub(crate) fn write_groups(
        &self,
        log: &Log,
        coordinator: &Coordinator,
    ) -> Vec<(String, Error)> {
        let _serial = self.commit_lock.lock();
        let mut failed: Vec<(String, Error)> = Vec::new();
        let mut unwritten = Vec::new();
        for (group, meta) in coordinator.take_changes() {
            if failed.iter().any(|(g, _)| *g == group) {
                unwritten.push((group, meta));
            } else if let Err(error) = self.write_group_locked(log, &group, Some(&meta)) {
                failed.push((group.clone(), error));
                unwritten.push((group, meta));
            }
        }
        if !unwritten.is_empty() {
            coordinator.requeue(unwritten);
        }
        failed
    }

    fn write_group_locked(&self, log: &Log, group: &str, meta: Option<&GroupMeta>) -> Result<()> {
        let offsets_topic = self.topic(log)?;
        let mut builder = BatchBuilder::new();
        let key = encode_group_key(group)?;
        let value = meta.map(encode_group_value).transpose()?;
        builder.push(log.now_ms(), Some(&key), value.as_deref(), &[]);
        let batch = builder
            .finish()
            .unwrap_or_else(|| unreachable!("one record was pushed"));
        let index = partition_for_group(group, offsets_topic.partitions());
        offsets_topic
            .partition(index)?
            .append_internal(batch, |_| {
                let mut groups = self.groups.write();
                match meta {
                    Some(meta) => keep_newer(&mut groups, group.to_owned(), meta.clone()),
                    None => {
                        groups.remove(group);
                    }
                }
            })?;
        Ok(())
    }

    /// The metadata of every group the topic knows.
    pub(crate) fn group_metas(&self) -> Vec<(String, GroupMeta)> {
        self.groups
            .read()
            .iter()
            .map(|(g, m)| (g.clone(), m.clone()))
            .collect()
    }

    /// Writes tombstones for `group`'s offsets of `tps` (one batch) and drops them from the
    /// cache once the batch is in the log. The caller holds `commit_lock`.
    fn tombstone(&self, log: &Log, group: &str, tps: &[TopicPartition]) -> Result<()> {
        let offsets_topic = self.topic(log)?;
        let now = log.now_ms();
        let mut builder = BatchBuilder::new();
        for tp in tps {
            builder.push(now, Some(&encode_key(group, tp)?), None, &[]);
        }
        let Some(batch) = builder.finish() else {
            return Ok(());
        };
        let index = partition_for_group(group, offsets_topic.partitions());
        offsets_topic
            .partition(index)?
            .append_internal(batch, |_| remove(&mut self.cache.write(), group, tps))?;
        Ok(())
    }

    /// Removes (with tombstones) the offsets of groups that have had no member and no commit
    /// for `retention_ms` (Kafka's `offsets.retention.minutes` for empty groups, KIP-211),
    /// and a Stable group's offsets of topics it no longer subscribes to (KIP-496):
    /// the clock starts at the group's last commit or when it last became empty here,
    /// whichever is later. Each group is checked again under `commit_lock` and fenced, so a
    /// commit arriving meanwhile keeps its offsets and a member that joined before the
    /// check keeps them too; one joining during the deletion gets its first generation only
    /// after it (and then starts from `auto_offset_reset`). Returns the groups removed.
    pub(crate) fn expire(
        &self,
        log: &Log,
        coordinator: &Coordinator,
        retention_ms: i64,
    ) -> Result<Vec<String>> {
        let now = log.now_ms();
        let mut expired = Vec::new();
        for group in self.groups() {
            // A group whose offsets are not all known (see `unread`) is not judged.
            if self.ensure_read(log, &group).is_err() {
                continue;
            }
            let _serial = self.commit_lock.lock();
            // Members: their offsets stay, but those of topics none of them subscribes to.
            let Ok(mut fence) = coordinator.fence(&group, None, now) else {
                self.expire_unsubscribed(log, coordinator, &group, retention_ms, now)?;
                continue;
            };
            if !self.groups.read().contains_key(&group) {
                // A group never joined (a standalone consumer's offsets only; Kafka's group
                // without a protocol type): each offset expires a retention after its own
                // commit, and the group with the last of them.
                let (stale, total) = self.stale_offsets(&group, |_| true, retention_ms, now);
                if !stale.is_empty() && stale.len() == total {
                    if self.delete_group_locked(log, &group)? {
                        fence.forget();
                        expired.push(group);
                    }
                } else if !stale.is_empty() {
                    self.tombstone(log, &group, &stale)?;
                }
                continue;
            }
            let last_commit = self
                .cache
                .read()
                .get(&group)
                .and_then(|offsets| offsets.values().map(|c| c.commit_timestamp).max())
                .unwrap_or(i64::MIN);
            let state_since = self
                .groups
                .read()
                .get(&group)
                .map_or(i64::MIN, |meta| meta.state_timestamp);
            let since = last_commit.max(state_since).max(fence.empty_since_ms);
            if now.saturating_sub(since) >= retention_ms && self.delete_group_locked(log, &group)? {
                fence.forget();
                expired.push(group);
            }
        }
        Ok(expired)
    }

    /// KIP-496 (Kafka's `removeExpiredOffsets` for a Stable consumer group): the offsets
    /// of topics none of `group`'s members subscribes to expire each a retention period
    /// after its own commit; the subscribed topics' stay. The caller holds `commit_lock`.
    fn expire_unsubscribed(
        &self,
        log: &Log,
        coordinator: &Coordinator,
        group: &str,
        retention_ms: i64,
        now: i64,
    ) -> Result<()> {
        let Some(subscribed) = coordinator.stable_subscriptions(group) else {
            return Ok(());
        };
        let (stale, _) = self.stale_offsets(
            group,
            |tp| !subscribed.contains(&tp.topic),
            retention_ms,
            now,
        );
        if stale.is_empty() {
            return Ok(());
        }
        self.tombstone(log, group, &stale)
    }

    /// `group`'s offsets that `eligible` takes and whose commit is a retention old, with
    /// the count of all its offsets.
    fn stale_offsets(
        &self,
        group: &str,
        eligible: impl Fn(&TopicPartition) -> bool,
        retention_ms: i64,
        now: i64,
    ) -> (Vec<TopicPartition>, usize) {
        self.cache
            .read()
            .get(group)
            .map(|offsets| {
                let stale = offsets
                    .iter()
                    .filter(|(tp, committed)| {
                        eligible(tp)
                            && now.saturating_sub(committed.commit_timestamp) >= retention_ms
                    })
                    .map(|(tp, _)| tp.clone())
                    .collect();
                (stale, offsets.len())
            })
            .unwrap_or_default()
    }

    /// The groups with committed offsets, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.cache.read().keys().cloned().collect();
        groups.extend(self.groups.read().keys().cloned());
        groups.sort();
        groups.dedup();
        groups
    }

    /// Every offset `group` committed, by partition.
    pub(crate) fn group_offsets(
        &self,
        log: &Log,
        group: &str,
    ) -> Result<std::collections::BTreeMap<TopicPartition, OffsetAndMetadata>> {
        self.ensure_read(log, group)?;
        Ok(self
            .cache
            .read()
            .get(group)
            .map(|offsets| {
                offsets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The offsets topic, created on first use.
    fn topic(&self, log: &Log) -> Result<Topic> {
        match log.topic(CONSUMER_OFFSETS) {
            Err(Error::UnknownTopic { .. }) => log.create_offsets_topic(self.partitions),
            found => found,
        }
    }
}

/// Group ids: non-empty, at most 255 bytes (Kafka accepts longer ones, but they must fit
/// an `int16` string here with room to spare).
pub(crate) fn check_group_id(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 {
        return Err(Error::InvalidConfig {
            field: "group_id",
            value: format!("{group:?}"),
            allowed: "1 to 255 bytes".into(),
        });
    }
    Ok(())
}

/// Names the record a schema error was found in.
fn at_record(error: Error, partition: u32, record: &Record) -> Error {
    match error {
        Error::Corruption {
            location,
            what,
            detail,
        } => Error::Corruption {
            location,
            what,
            detail: format!(
                "{detail} (record at offset {} of {CONSUMER_OFFSETS}-{partition})",
                record.offset
            ),
        },
        other => other,
    }
}

/// Removes `group`'s offsets of `tps` from the cache.
fn remove(cache: &mut Cache, group: &str, tps: &[TopicPartition]) {
    if let Some(offsets) = cache.get_mut(group) {
        for tp in tps {
            offsets.remove(tp);
        }
        if offsets.is_empty() {
            cache.remove(group);
        }
    }
}

/// Committed offsets by group, then partition.
type Cache = HashMap<String, HashMap<TopicPartition, OffsetAndMetadata>>;

/// Group metadata by group.
type Groups = HashMap<String, GroupMeta>;

/// Records `meta` unless a later generation is already known (records of one group may be
/// appended by several threads in any order).
fn keep_newer(groups: &mut Groups, group: String, meta: GroupMeta) {
    match groups.get(&group) {
        Some(known) if known.generation > meta.generation => {}
        _ => {
            groups.insert(group, meta);
        }
    }
}

/// Applies one replayed record to the cache.
fn apply(cache: &mut Cache, groups: &mut Groups, record: &Record) -> Result<()> {
    match decode(record.key.as_deref(), record.value.as_deref())? {
        Entry::Group {
            group,
            meta: Some(meta),
        } => keep_newer(groups, group, meta),
        Entry::Group { group, meta: None } => {
            groups.remove(&group);
        }
        Entry::Offset {
            group,
            tp,
            commit: Some(commit),
        } => {
            cache.entry(group).or_default().insert(tp, commit);
        }
        Entry::Offset {
            group,
            tp,
            commit: None,
        } => remove(cache, &group, std::slice::from_ref(&tp)),
        Entry::Other => {}
    }
    Ok(())
}

/// A tombstone value, for tests of replay.
#[cfg(test)]
fn tombstone() -> Option<bytes::Bytes> {
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A topic deleted before its committed offsets' tombstones were written (a crash
    /// between the two): the next open writes them, so the offsets stay gone when the
    /// topic is created again under the name, across later opens too.
    #[test]
    fn offsets_of_a_topic_deleted_before_its_tombstones_do_not_come_back() {
        use crate::TopicConfig;
        let dir = tempfile::tempdir().unwrap();
        let tp = TopicPartition::new("t", 0);
        let fill = |log: &Log| {
            let partition = log.topic("t").unwrap().partition(0).unwrap();
            partition
                .append_values((0..20).map(|i| i.to_string()))
                .unwrap();
        };
        {
            let log = Log::open(dir.path()).unwrap();
            log.create_topic("t", TopicConfig::default()).unwrap();
            fill(&log);
            log.commit_offsets("g", &[(tp.clone(), OffsetAndMetadata::new(10))])
                .unwrap();
            log.remove_topic("t").unwrap();
            log.simulate_crash();
        }
        {
            let log = Log::open(dir.path()).unwrap();
            assert!(log.committed_offset("g", &tp).unwrap().is_none());
            log.create_topic("t", TopicConfig::default()).unwrap();
            fill(&log);
            log.close().unwrap();
        }
        let log = Log::open(dir.path()).unwrap();
        assert!(log.committed_offset("g", &tp).unwrap().is_none());
        log.close().unwrap();
    }

    #[test]
    fn group_partition_follows_java_hash_code() {
        // Java: "group".hashCode() == 98629247; "".hashCode() == 0.
        assert_eq!(partition_for_group("group", 50), 98_629_247 % 50);
        assert_eq!(partition_for_group("", 50), 0);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: abs gives 0 in Kafka.
        assert_eq!(partition_for_group("polygenelubricants", 50), 0);
        // Negative hash codes are made positive by abs: "zzzzzzzz".hashCode() < 0.
        let h = "zzzzzzzz"
            .bytes()
            .fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
        assert!(h < 0);
        assert_eq!(partition_for_group("zzzzzzzz", 50), h.unsigned_abs() % 50);
        // Non-ASCII counts UTF-16 code units, as Java does.
        let java: i32 = "é€𝄞"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
        assert_eq!(partition_for_group("é€𝄞", 7), java.unsigned_abs() % 7);
    }

    #[test]
    fn key_and_value_bytes_match_kafkas_schema() {
        let key = encode_key("g", &TopicPartition::new("t", 3)).unwrap();
        assert_eq!(key, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        let value = encode_value(&OffsetAndMetadata {
            offset: 5,
            metadata: "m".into(),
            leader_epoch: None,
            commit_timestamp: 7,
        })
        .unwrap();
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&5i64.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&[0, 1, b'm']);
        expected.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(value, expected);
    }

    #[test]
    fn decode_round_trips_and_reads_older_value_versions() {
        let tp = TopicPartition::new("orders", 2);
        let commit = OffsetAndMetadata {
            offset: 42,
            metadata: "ok".into(),
            leader_epoch: Some(3),
            commit_timestamp: 1_000,
        };
        let entry = decode(
            Some(&encode_key("g", &tp).unwrap()),
            Some(&encode_value(&commit).unwrap()),
        )
        .unwrap();
        assert_eq!(
            entry,
            Entry::Offset {
                group: "g".into(),
                tp: tp.clone(),
                commit: Some(commit)
            }
        );
        // v1 value: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&9i64.to_be_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&11i64.to_be_bytes());
        v1.extend_from_slice(&99i64.to_be_bytes());
        let Entry::Offset {
            commit: Some(c), ..
        } = decode(Some(&encode_key("g", &tp).unwrap()), Some(&v1)).unwrap()
        else {
            panic!("not an offset");
        };
        assert_eq!((c.offset, c.commit_timestamp), (9, 11));
        // Tombstone.
        let entry = decode(Some(&encode_key("g", &tp).unwrap()), tombstone().as_deref()).unwrap();
        assert!(matches!(entry, Entry::Offset { commit: None, .. }));
        // Group metadata (key v2): a tombstone, and a value round trip.
        assert_eq!(
            decode(Some(&[0, 2, 0, 1, b'g']), None).unwrap(),
            Entry::Group {
                group: "g".into(),
                meta: None
            }
        );
        let meta = GroupMeta {
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp: 42,
            members: vec![MemberMeta {
                member_id: "m-1".into(),
                instance_id: Some("static".into()),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
            }],
        };
        let value = encode_group_value(&meta).unwrap();
        assert_eq!(
            decode(Some(&encode_group_key("g").unwrap()), Some(&value)).unwrap(),
            Entry::Group {
                group: "g".into(),
                meta: Some(meta)
            }
        );
        for cut in 0..value.len() {
            let result = decode(Some(&encode_group_key("g").unwrap()), Some(&value[..cut]));
            assert!(
                result.is_err_and(|e| e.is_corruption()),
                "group value cut at {cut}"
            );
        }
        // Unknown key versions (KIP-848 records) are skipped.
        assert_eq!(decode(Some(&[0, 9]), Some(&[1])).unwrap(), Entry::Other);
    }

    /// `OffsetCommitValue` v4, Kafka's first flexible version (KIP-915), built by hand
    /// from the schema: compact strings, bytes and arrays (an
    /// unsigned varint of the length plus one), and tagged fields after each struct, which
    /// are skipped whatever their tags.
    #[test]
    fn flexible_version_4_values_are_read() {
        let tp = TopicPartition::new("orders", 2);
        let key = encode_key("g", &tp).unwrap();
        let mut v4 = vec![0, 4];
        v4.extend_from_slice(&42i64.to_be_bytes());
        v4.extend_from_slice(&7i32.to_be_bytes()); // leader epoch
        v4.extend_from_slice(&[3, b'o', b'k']); // compact "ok"
        v4.extend_from_slice(&1_000i64.to_be_bytes());
        // Two tagged fields: tag 0 with 3 bytes, tag 200 (a two-byte varint) with none.
        v4.extend_from_slice(&[2, 0, 3, 9, 9, 9, 0xc8, 0x01, 0]);
        let expected = Entry::Offset {
            group: "g".into(),
            tp: tp.clone(),
            commit: Some(OffsetAndMetadata {
                offset: 42,
                metadata: "ok".into(),
                leader_epoch: Some(7),
                commit_timestamp: 1_000,
            }),
        };
        assert_eq!(decode(Some(&key), Some(&v4)).unwrap(), expected);
        for cut in 0..v4.len() {
            let result = decode(Some(&key), Some(&v4[..cut]));
            assert!(result.is_err_and(|e| e.is_corruption()), "v4 cut at {cut}");
        }
        // Each of these would read as a whole record if its field were taken leniently: a
        // null metadata (compact length 0); a length of 2 spelt in six varint bytes, or
        // in five whose last has bits past the 32nd; a string over 32767 bytes.
        let with_metadata = |metadata: &[u8]| {
            let mut value = v4[..14].to_vec();
            value.extend_from_slice(metadata);
            value.extend_from_slice(&1_000i64.to_be_bytes());
            value.push(0);
            value
        };
        let long = vec![b'x'; 32_768];
        let mut over_long = vec![0x81, 0x80, 0x02];
        over_long.extend_from_slice(&long);
        for bad in [
            vec![0],
            vec![0x83, 0x80, 0x80, 0x80, 0x80, 0x00, b'o', b'k'],
            vec![0x83, 0x80, 0x80, 0x80, 0x10, b'o', b'k'],
            over_long.clone(),
        ] {
            let result = decode(Some(&key), Some(&with_metadata(&bad)));
            assert!(
                result.is_err_and(|e| e.is_corruption()),
                "{:?}",
                &bad[..8.min(bad.len())]
            );
        }
        // The five-byte spelling of the same length is Kafka's limit, and is read.
        let entry = decode(
            Some(&key),
            Some(&with_metadata(&[0x83, 0x80, 0x80, 0x80, 0x00, b'o', b'k'])),
        );
        assert_eq!(entry.unwrap(), expected);
        // Version 5 is not a version Kafka has written.
        let mut v5 = v4;
        v5[1] = 5;
        assert!(decode(Some(&key), Some(&v5)).is_err_and(|e| e.is_corruption()));
    }

    /// `GroupMetadataValue` v4 built by hand, as [`flexible_version_4_values_are_read`].
    #[test]
    fn flexible_version_4_group_values_are_read() {
        let mut group = vec![0, 4];
        group.extend_from_slice(&[9]); // compact "consumer"
        group.extend_from_slice(b"consumer");
        group.extend_from_slice(&7i32.to_be_bytes());
        group.extend_from_slice(&[6, b'r', b'a', b'n', b'g', b'e']);
        group.extend_from_slice(&[0]); // null leader
        group.extend_from_slice(&42i64.to_be_bytes());
        group.extend_from_slice(&[2]); // one member
        group.extend_from_slice(&[4, b'm', b'-', b'1']);
        group.extend_from_slice(&[0]); // null group instance id
        group.extend_from_slice(&[2, b'c', 1]); // client id "c", client host ""
        group.extend_from_slice(&300_000i32.to_be_bytes());
        group.extend_from_slice(&45_000i32.to_be_bytes());
        group.extend_from_slice(&[3, 1, 2, 1]); // subscription of 2 bytes, empty assignment
        group.extend_from_slice(&[1, 5, 1, 0]); // the member's tagged field 5
        group.extend_from_slice(&[0]); // no tagged fields for the group
        let expected = Entry::Group {
            group: "g".into(),
            meta: Some(GroupMeta {
                generation: 7,
                protocol: Some("range".into()),
                leader: None,
                state_timestamp: 42,
                members: vec![MemberMeta {
                    member_id: "m-1".into(),
                    instance_id: None,
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                }],
            }),
        };
        let group_key = encode_group_key("g").unwrap();
        assert_eq!(decode(Some(&group_key), Some(&group)).unwrap(), expected);
        for cut in 0..group.len() {
            let result = decode(Some(&group_key), Some(&group[..cut]));
            assert!(
                result.is_err_and(|e| e.is_corruption()),
                "group cut at {cut}"
            );
        }
        // A null assignment is corruption (non-nullable bytes, as in Kafka).
        let mut null_assignment = group.clone();
        let at = null_assignment.len() - 6;
        assert_eq!(null_assignment[at], 1);
        null_assignment[at] = 0;
        assert!(decode(Some(&group_key), Some(&null_assignment)).is_err_and(|e| e.is_corruption()));
        // A null member array is corruption.
        let mut null_members = group[..31].to_vec();
        assert_eq!(null_members.pop(), Some(2));
        null_members.extend_from_slice(&[0, 0]);
        assert!(decode(Some(&group_key), Some(&null_members)).is_err_and(|e| e.is_corruption()));
    }

    #[test]
    fn malformed_records_are_corruption_never_a_panic() {
        let tp = TopicPartition::new("t", 0);
        let key = encode_key("group", &tp).unwrap();
        let value = encode_value(&OffsetAndMetadata::new(1)).unwrap();
        for cut in 0..key.len() {
            let result = decode(Some(&key[..cut]), Some(&value));
            assert!(result.is_err_and(|e| e.is_corruption()), "key cut at {cut}");
        }
        for cut in 0..value.len() {
            let result = decode(Some(&key), Some(&value[..cut]));
            assert!(
                result.is_err_and(|e| e.is_corruption()),
                "value cut at {cut}"
            );
        }
        assert!(decode(None, Some(&value)).is_err());
        let mut negative = value.clone();
        negative[2] = 0xff;
        assert!(decode(Some(&key), Some(&negative)).is_err());
        let mut bad_version = value;
        bad_version[1] = 8;
        assert!(decode(Some(&key), Some(&bad_version)).is_err());
    }

    #[test]
    fn an_overlong_string_is_refused_not_cut() {
        let long = "x".repeat(i16::MAX as usize + 1);
        assert!(matches!(
            encode_group_key(&long),
            Err(Error::InvalidConfig { .. })
        ));
        let mut out = Vec::new();
        put_string(&mut out, &long[1..]).unwrap();
        assert_eq!(out.len(), 2 + i16::MAX as usize);
    }
}
