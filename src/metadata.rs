//! Topics, their configs and replica placement, kept in every storage directory as `meta`,
//! plus the per-directory offset checkpoints. Both are framed files replaced atomically
//! (`storage::write_framed`).
//!
//! `meta` body (text, one item per line):
//! ```text
//! generation <n>
//! dirs <count> this <index of this directory>
//! lineage <run> <generation>:<run> …
//! topic <name> placement=<replicas>,… state=<leader>/<epoch>/<isr>,… <config words>
//! ```
//! where each partition's `<replicas>` are directory indexes joined by `:`, preferred leader
//! first (`0:1`); a single index (the only form before replication) is one replica. `state`
//! records each partition's leadership: the leader's directory index (`-` when the
//! partition is offline), its leader epoch, and the in-sync replicas' directory indexes
//! joined by `:`. Without it (files written before failover existed) the preferred replica
//! leads at epoch 0 with every replica in sync.
//! `lineage` (absent in files written before it existed) names the run of the log (one
//! open to its close) that wrote this copy, then, per directory, the last generation that
//! run or an earlier one offered that directory and the run that offered it: a directory
//! holding anything else wrote `meta` where this copy's history cannot see it, in a run
//! that did not open this directory (see [`Meta::forked`]).
//! The copy with the highest generation wins on open. Checkpoint bodies are Kafka's text
//! checkpoint format: `0`, the entry count, then `<topic> <partition> <offset>` lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::config::TopicConfig;
use crate::error::{Error, Location, Result};
use crate::storage::{StorageDir, read_framed, write_framed};
use crate::types::TopicPartition;

const META_MAGIC: [u8; 8] = *b"TNLMETA\0";
const CHECKPOINT_MAGIC: [u8; 8] = *b"TNLCKPT\0";
const CLEAN_MAGIC: [u8; 8] = *b"TNLCLEAN";
const VERSION: u32 = 1;

/// Name of the clean-shutdown marker.
pub(crate) const CLEAN_SHUTDOWN: &str = "clean-shutdown";
/// Recovery points (offsets below are synced).
pub(crate) const RECOVERY_POINT: &str = "recovery-point-offset-checkpoint";
/// Log start offsets.
pub(crate) const LOG_START: &str = "log-start-offset-checkpoint";
/// High watermarks.
pub(crate) const HIGH_WATERMARK: &str = "replication-offset-checkpoint";

/// One topic as recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopicMeta {
    pub config: TopicConfig,
    /// Storage directory indexes of each partition's replicas, preferred leader first.
    pub placement: Vec<Vec<u32>>,
    /// Each partition's leadership.
    pub leadership: Vec<Leadership>,
}

/// Who leads a partition, in which epoch, and which replicas are in sync (Kafka keeps this
/// in the controller; here it is part of `meta`, in every directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leadership {
    /// Directory index of the leader; `None` while the partition is offline.
    pub leader: Option<u32>,
    /// The leader epoch.
    pub epoch: i32,
    /// Directory indexes of the in-sync replicas, the leader included.
    pub isr: Vec<u32>,
}

impl Leadership {
    /// The preferred replica leads at epoch 0, every replica in sync.
    pub(crate) fn initial(replicas: &[u32]) -> Leadership {
        Leadership {
            leader: replicas.first().copied(),
            epoch: 0,
            isr: replicas.to_vec(),
        }
    }

    fn encode(&self) -> String {
        let leader = self
            .leader
            .map_or_else(|| "-".to_owned(), |d| d.to_string());
        let isr: Vec<String> = self.isr.iter().map(u32::to_string).collect();
        format!("{leader}/{}/{}", self.epoch, isr.join(":"))
    }

    fn decode(word: &str) -> Option<Leadership> {
        let mut parts = word.split('/');
        let leader = match parts.next()? {
            "-" => None,
            d => Some(d.parse().ok()?),
        };
        let epoch = parts.next()?.parse().ok().filter(|e: &i32| *e >= 0)?;
        let isr = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(':')
                .map(|d| d.parse().ok())
                .collect::<Option<Vec<u32>>>()?,
        };
        parts
            .next()
            .is_none()
            .then_some(Leadership { leader, epoch, isr })
    }
}

/// The whole picture.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Meta {
    pub generation: u64,
    pub dir_count: u32,
    pub topics: BTreeMap<String, TopicMeta>,
    /// The run of the log that wrote this copy (0: unknown, a file from before lineage).
    pub run: u64,
    /// Per directory, the last `meta` offered to it: what it holds unless it wrote one
    /// since in a run that did not know this copy's (empty: unknown).
    pub offered: Vec<Offered>,
    /// Deleted topics whose committed offsets may still be in `__consumer_offsets` without
    /// their tombstones: no topic of these names is created until they are written.
    pub forgotten: std::collections::BTreeSet<String>,
    /// Deleted topics whose partition directories may still be on disk (a deletion cut
    /// short by a crash or an error after this `meta` was written): the open removes the
    /// name's directories that `meta` does not place (sets aside those holding records
    /// while the name is live again). Dropped by the next write once the deletion
    /// finished, or, when leftovers may remain, after the open that tidied them.
    pub deleting: std::collections::BTreeSet<String>,
    /// Topics getting new partition directories (`create_topic`, `add_partitions`), written
    /// before the directories are made: those that the `meta` placing them never reached
    /// (a crash or an error in between) are removed by the open (set aside as `.stray` if
    /// one holds records, which such a directory cannot). Dropped by the write that places
    /// the new partitions, or after the open that removed them.
    pub creating: std::collections::BTreeSet<String>,
}

/// A `meta` generation offered to a directory, and the run that offered it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Offered {
    pub generation: u64,
    pub run: u64,
}

impl Meta {
    /// Whether this copy was written without directory `other`: its generation is past
    /// the last one it offered `other` (unknown: no).
    pub(crate) fn wrote_without(&self, other: usize) -> bool {
        self.offered
            .get(other)
            .is_some_and(|offered| offered.run != 0 && offered.generation < self.generation)
    }

    /// Whether `own`, the `meta` directory `index` holds, forked from the history of this
    /// copy, which the directories `holders` hold: `own` was written past what this history
    /// offered it (see [`Offered::forked`]), this copy was written without it, and it was
    /// written without every holder. A directory that ran on alone while this one had
    /// merely stopped (a crash cut this copy's writes short, say) continues this history:
    /// it is newer, not forked.
    pub(crate) fn forked(&self, holders: &[usize], own: &Meta, index: usize) -> bool {
        self.offered
            .get(index)
            .is_some_and(|offered| offered.forked(own))
            && self.wrote_without(index)
            && !holders.is_empty()
            && holders.iter().all(|&h| own.wrote_without(h))
    }
}

/// The directory whose `meta` the open goes by among `owns` (each directory's own, where
/// readable): the highest generation; on a tie the first copy no other beats, where `k`
/// beats `i` when `k` was written without `i` and `i` not without `k` (`k` ran on after
/// `i` stopped); the first when every one is beaten.
pub(crate) fn newest(owns: &[Option<Meta>]) -> Option<usize> {
    let top = owns.iter().flatten().map(|m| m.generation).max()?;
    let tied: Vec<(usize, &Meta)> = owns
        .iter()
        .enumerate()
        .filter_map(|(i, own)| own.as_ref().filter(|m| m.generation == top).map(|m| (i, m)))
        .collect();
    let beaten = |i: usize, mi: &Meta| {
        tied.iter()
            .any(|&(k, mk)| k != i && mk.wrote_without(i) && !mi.wrote_without(k))
    };
    tied.iter()
        .find(|&&(i, m)| !beaten(i, m))
        .or(tied.first())
        .map(|&(i, _)| i)
}

impl Offered {
    /// Whether `own`, the `meta` the directory holds, forked from the history that made
    /// this offer: it was written after the generation offered, or at that generation by
    /// another run. That happens when the directory was offline while this history went
    /// on, and then a log opened without this history's directories and wrote to it alone:
    /// both histories may hold acknowledged records the other lacks. A directory holding
    /// less than it was offered is only behind (its write failed or it went offline).
    /// Unknown (either written before lineage) is not a fork.
    pub(crate) fn forked(&self, own: &Meta) -> bool {
        own.run != 0
            && self.run != 0
            && (own.generation > self.generation
                || (own.generation == self.generation && own.run != self.run))
    }
}

impl Meta {
    fn encode(&self, this: u32) -> String {
        let mut out = format!(
            "generation {}\ndirs {} this {this}\n",
            self.generation, self.dir_count
        );
        if self.run != 0 {
            let _ = write!(out, "lineage {}", self.run);
            for offered in &self.offered {
                let _ = write!(out, " {}:{}", offered.generation, offered.run);
            }
            out.push('\n');
        }
        for (name, topic) in &self.topics {
            let placement: Vec<String> = topic
                .placement
                .iter()
                .map(|replicas| {
                    let dirs: Vec<String> = replicas.iter().map(u32::to_string).collect();
                    dirs.join(":")
                })
                .collect();
            let states: Vec<String> = topic.leadership.iter().map(Leadership::encode).collect();
            let _ = writeln!(
                out,
                "topic {name} placement={} state={} {}",
                placement.join(","),
                states.join(","),
                topic.config.to_words()
            );
        }
        for name in &self.forgotten {
            let _ = writeln!(out, "forgotten {name}");
        }
        for name in &self.deleting {
            let _ = writeln!(out, "deleting {name}");
        }
        for name in &self.creating {
            let _ = writeln!(out, "creating {name}");
        }
        out
    }

    fn decode(body: &str, path: &Path) -> Result<(Meta, u32)> {
        let mut meta = Meta::default();
        let mut this = None;
        let mut position = 0;
        for line in body.lines() {
            let bad = |what: &'static str| Error::Corruption {
                location: Location::File {
                    path: path.to_path_buf(),
                    position: position as u64,
                },
                what,
                detail: format!("line {line:?}"),
            };
            let mut words = line.split(' ');
            match words.next() {
                Some("generation") => {
                    meta.generation = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| bad("meta generation"))?;
                }
                // Once, and before the lines checked against its count.
                Some("dirs") if this.is_some() => return Err(bad("meta dirs")),
                Some("lineage" | "topic") if this.is_none() => return Err(bad("meta dirs")),
                Some("dirs") => {
                    let numbers: Vec<&str> = words.collect();
                    let [count, "this", index] = numbers[..] else {
                        return Err(bad("meta dirs"));
                    };
                    meta.dir_count = count.parse().map_err(|_| bad("meta dirs"))?;
                    this = Some(index.parse().map_err(|_| bad("meta dirs"))?);
                }
                Some("lineage") => {
                    meta.run = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .filter(|&run| run != 0)
                        .ok_or_else(|| bad("meta lineage"))?;
                    meta.offered = words
                        .map(|w| {
                            let (generation, run) = w.split_once(':')?;
                            Some(Offered {
                                generation: generation.parse().ok()?,
                                run: run.parse().ok()?,
                            })
                        })
                        .collect::<Option<Vec<_>>>()
                        .filter(|offered| offered.len() == meta.dir_count as usize)
                        .ok_or_else(|| bad("meta lineage"))?;
                }
                Some("topic") => {
                    let (name, topic) = decode_topic(words, meta.dir_count).map_err(bad)?;
                    meta.topics.insert(name, topic);
                }
                Some(kind @ ("forgotten" | "deleting" | "creating")) => {
                    let (what, names) = match kind {
                        "forgotten" => ("meta forgotten topic", &mut meta.forgotten),
                        "deleting" => ("meta deleting topic", &mut meta.deleting),
                        _ => ("meta creating topic", &mut meta.creating),
                    };
                    let name = words
                        .next()
                        .filter(|name| validate_topic_name(name).is_ok())
                        .ok_or_else(|| bad(what))?;
                    if words.next().is_some() {
                        return Err(bad(what));
                    }
                    names.insert(name.to_owned());
                }
                _ if line.is_empty() => {}
                _ => return Err(bad("meta line")),
            }
            position += line.len() + 1;
        }
        let this = this.ok_or_else(|| Error::Corruption {
            location: Location::File {
                path: path.to_path_buf(),
                position: 0,
            },
            what: "meta dirs",
            detail: "missing".into(),
        })?;
        Ok((meta, this))
    }
}

/// One `topic` line after its first word: the name and what is recorded of the topic, or
/// what was wrong with it.
fn decode_topic<'a>(
    mut words: impl Iterator<Item = &'a str>,
    dir_count: u32,
) -> std::result::Result<(String, TopicMeta), &'static str> {
    // A name the log would refuse (a path separator, `..`) never names a directory.
    let name = words
        .next()
        .filter(|name| validate_topic_name(name).is_ok())
        .ok_or("meta topic")?
        .to_owned();
    let placement = words
        .next()
        .and_then(|w| w.strip_prefix("placement="))
        .ok_or("meta placement")?
        .split(',')
        .map(|replicas| {
            replicas
                .split(':')
                .map(str::parse)
                .collect::<std::result::Result<Vec<u32>, _>>()
        })
        .collect::<std::result::Result<Vec<Vec<u32>>, _>>()
        .map_err(|_| "meta placement")?;
    let mut words = words.peekable();
    let leadership = match words.peek().and_then(|w| w.strip_prefix("state=")) {
        Some(states) => {
            let states = states
                .split(',')
                .map(Leadership::decode)
                .collect::<Option<Vec<_>>>()
                .ok_or("meta partition state")?;
            words.next();
            states
        }
        None => placement.iter().map(|r| Leadership::initial(r)).collect(),
    };
    let config = TopicConfig::from_words(words).map_err(|_| "meta topic config")?;
    let placed = placement.iter().all(|replicas| {
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == replicas.len()
            && replicas.len() == config.replication_factor as usize
            && replicas.iter().all(|&d| d < dir_count)
    });
    if !placed || placement.len() != config.partitions as usize || config.validate().is_err() {
        return Err("meta topic config");
    }
    let consistent = leadership.len() == placement.len()
        && leadership.iter().zip(&placement).all(|(state, replicas)| {
            state.leader.is_none_or(|l| replicas.contains(&l))
                && state.isr.iter().all(|d| replicas.contains(d))
        });
    if !consistent {
        return Err("meta partition state");
    }
    Ok((
        name,
        TopicMeta {
            config,
            placement,
            leadership,
        },
    ))
}

/// The `config_parse` fuzz oracle's part for `meta` text: never panics; a body that
/// decodes names only valid topics with valid configs, and encodes back to itself.
///
/// # Panics
/// When the oracle finds a violation.
pub(crate) fn check_meta_text(text: &str) {
    let Ok((meta, this)) = Meta::decode(text, Path::new("meta")) else {
        return;
    };
    for (name, topic) in &meta.topics {
        assert!(validate_topic_name(name).is_ok(), "topic name {name:?}");
        assert!(topic.config.validate().is_ok(), "config of {name:?}");
    }
    let again =
        Meta::decode(&meta.encode(this), Path::new("meta")).expect("an encoded meta decodes");
    assert_eq!(again, (meta, this), "meta round trip");
}

/// Writes `meta` into directory number `this`.
pub(crate) fn write_meta(dir: &StorageDir, meta: &Meta, this: u32) -> Result<()> {
    write_framed(
        dir,
        Path::new(""),
        "meta",
        META_MAGIC,
        VERSION,
        meta.encode(this).as_bytes(),
    )
}

/// Reads a directory's `meta`: `None` when there is none; `(meta, this)` otherwise.
pub(crate) fn read_meta(dir: &StorageDir) -> Result<Option<(Meta, u32)>> {
    let path = dir.path().join("meta");
    let Some((_, body)) = read_framed(dir, &path, META_MAGIC, VERSION)? else {
        return Ok(None);
    };
    let body = String::from_utf8(body).map_err(|e| Error::Corruption {
        location: Location::File {
            path: path.clone(),
            position: 20 + e.utf8_error().valid_up_to() as u64,
        },
        what: "meta text",
        detail: "not UTF-8".into(),
    })?;
    Meta::decode(&body, &path).map(Some)
}

/// Writes a checkpoint file; unless `always`, not when this `StorageDir` already wrote and
/// synced the same entries there (a `delete_records`, say, changes only the log-start file;
/// rewriting the others would cost their syncs and change nothing on disk).
pub(crate) fn write_checkpoint(
    dir: &StorageDir,
    name: &str,
    entries: &BTreeMap<TopicPartition, u64>,
    always: bool,
) -> Result<()> {
    dir.check()?;
    let mut body = format!("0\n{}\n", entries.len());
    for (tp, offset) in entries {
        let _ = writeln!(body, "{} {} {offset}", tp.topic, tp.partition);
    }
    if !always
        && dir
            .checkpoints()
            .get(name)
            .is_some_and(|held| *held == body.as_bytes())
    {
        return Ok(());
    }
    write_framed(
        dir,
        Path::new(""),
        name,
        CHECKPOINT_MAGIC,
        VERSION,
        body.as_bytes(),
    )?;
    dir.checkpoints().insert(name.to_owned(), body.into_bytes());
    Ok(())
}

/// Reads a checkpoint file (empty when missing).
pub(crate) fn read_checkpoint(
    dir: &StorageDir,
    name: &str,
) -> Result<BTreeMap<TopicPartition, u64>> {
    let path = dir.path().join(name);
    let Some((_, body)) = read_framed(dir, &path, CHECKPOINT_MAGIC, VERSION)? else {
        return Ok(BTreeMap::new());
    };
    let bad = |detail: String| Error::Corruption {
        location: Location::File {
            path: path.clone(),
            position: 20,
        },
        what: "checkpoint entry",
        detail,
    };
    let text = String::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
    let (count, lines) = checkpoint_body(&text, &bad)?;
    let mut entries = BTreeMap::new();
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let [topic, partition, offset] = parts[..] else {
            return Err(bad(format!("line {line:?}")));
        };
        let partition = partition
            .parse()
            .map_err(|_| bad(format!("line {line:?}")))?;
        // No Kafka offset is past `i64::MAX` (batches carry them signed).
        let offset = offset
            .parse::<u64>()
            .ok()
            .filter(|&offset| i64::try_from(offset).is_ok())
            .ok_or_else(|| bad(format!("line {line:?}")))?;
        entries.insert(TopicPartition::new(topic, partition), offset);
    }
    if entries.len() != count {
        return Err(bad(format!(
            "{} entries, header says {count}",
            entries.len()
        )));
    }
    Ok(entries)
}

/// The start of Kafka's text checkpoint body: version `0`, then the entry count. Returns
/// the count and the entry lines.
pub(crate) fn checkpoint_body<'a>(
    text: &'a str,
    bad: &dyn Fn(String) -> Error,
) -> Result<(usize, std::str::Lines<'a>)> {
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(bad("version is not 0".into()));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad("entry count".into()))?;
    Ok((count, lines))
}

/// Writes the clean-shutdown marker.
pub(crate) fn write_clean_marker(dir: &StorageDir) -> Result<()> {
    write_framed(
        dir,
        Path::new(""),
        CLEAN_SHUTDOWN,
        CLEAN_MAGIC,
        VERSION,
        b"",
    )
}

/// Whether a valid clean-shutdown marker exists.
pub(crate) fn has_clean_marker(dir: &StorageDir) -> bool {
    matches!(
        read_framed(dir, &dir.path().join(CLEAN_SHUTDOWN), CLEAN_MAGIC, VERSION),
        Ok(Some(_))
    )
}

/// Removes the clean-shutdown marker (before anything is written) and syncs the directory.
pub(crate) fn remove_clean_marker(dir: &StorageDir) -> Result<()> {
    let path = dir.path().join(CLEAN_SHUTDOWN);
    if dir.storage().exists(&path) {
        dir.storage()
            .remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
        dir.sync_dir(dir.path())?;
    }
    Ok(())
}

/// Checks a topic name against Kafka's rule.
pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    let fail = |reason: &'static str| {
        Err(Error::InvalidTopicName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("empty");
    }
    if name == "." || name == ".." {
        return fail("'.' and '..' are not allowed");
    }
    if name.len() > 249 {
        return fail("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return fail("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for good in ["a", "orders", "a.b-c_d", &"x".repeat(249)] {
            validate_topic_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "..\\x",
            "/etc/passwd",
            "a\0b",
            "é",
            "a b",
            &"x".repeat(250),
        ] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(Error::InvalidTopicName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn meta_round_trips() {
        let mut meta = Meta {
            generation: 7,
            dir_count: 2,
            run: 99,
            offered: vec![
                Offered {
                    generation: 7,
                    run: 99,
                },
                Offered {
                    generation: 5,
                    run: 12,
                },
            ],
            ..Meta::default()
        };
        meta.forgotten.insert("gone".into());
        meta.forgotten.insert("gone.too".into());
        meta.deleting.insert("going".into());
        meta.creating.insert("coming".into());
        meta.topics.insert(
            "t".into(),
            TopicMeta {
                config: TopicConfig::default().partitions(2),
                placement: vec![vec![0], vec![1]],
                leadership: vec![Leadership::initial(&[0]), Leadership::initial(&[1])],
            },
        );
        meta.topics.insert(
            "replicated".into(),
            TopicMeta {
                config: TopicConfig::default()
                    .partitions(2)
                    .replication_factor(2)
                    .min_insync_replicas(2)
                    .unclean_leader_election(true),
                placement: vec![vec![0, 1], vec![1, 0]],
                leadership: vec![
                    Leadership {
                        leader: Some(1),
                        epoch: 4,
                        isr: vec![1],
                    },
                    Leadership {
                        leader: None,
                        epoch: 2,
                        isr: vec![],
                    },
                ],
            },
        );
        let path = Path::new("meta");
        assert_eq!(Meta::decode(&meta.encode(1), path).unwrap(), (meta, 1));
    }

    /// The lineage rule: a directory holding less than it was offered is behind; one
    /// holding more, or the same generation from another run, forked; unknown is neither.
    #[test]
    fn forks_are_told_from_lagging_directories() {
        let offered = Offered {
            generation: 5,
            run: 7,
        };
        let own = |generation, run| Meta {
            generation,
            run,
            ..Meta::default()
        };
        assert!(!offered.forked(&own(5, 7)), "what was offered");
        assert!(!offered.forked(&own(4, 3)), "behind: a write failed");
        assert!(offered.forked(&own(6, 9)), "written past the offer");
        assert!(
            offered.forked(&own(5, 9)),
            "the same generation by another run"
        );
        assert!(!offered.forked(&own(9, 0)), "written before lineage");
        let unknown = Offered::default();
        assert!(!unknown.forked(&own(9, 9)));
    }

    /// A `meta` of generation 6 by `run`, with its offers (generation, run) per directory.
    fn copy(run: u64, offered: &[(u64, u64)]) -> Meta {
        Meta {
            generation: 6,
            run,
            offered: offered
                .iter()
                .map(|&(generation, run)| Offered { generation, run })
                .collect(),
            ..Meta::default()
        }
    }

    /// Two directories, 0 and 1, each holding a `meta` of generation 6 (runs 8 and 9).
    /// A fork needs each to have been written without the other; one that merely stopped
    /// (its last offer to the other is its own generation) is behind the one that ran on,
    /// which the open then goes by.
    #[test]
    fn a_fork_needs_both_sides_written_alone() {
        // Directory 0 went offline at generation 4; 1 ran on alone (runs 7, then 9), and 0
        // alone too (run 8, which had found 1 unreadable at 4).
        let zero = copy(8, &[(6, 8), (4, 7)]);
        let one = copy(9, &[(4, 7), (6, 9)]);
        assert!(zero.forked(&[0], &one, 1) && one.forked(&[1], &zero, 0));
        // Run 8 offered 6 to both and crashed before 1 stored it; run 9 opened without 0
        // and wrote its own 6 to 1 alone: 1 continues 0's history.
        let zero = copy(8, &[(6, 8), (6, 8)]);
        let one = copy(9, &[(5, 8), (6, 9)]);
        assert!(!zero.forked(&[0], &one, 1) && !one.forked(&[1], &zero, 0));
        assert_eq!(newest(&[Some(zero.clone()), Some(one.clone())]), Some(1));
        assert_eq!(newest(&[Some(one), Some(zero)]), Some(0));
        assert_eq!(newest(&[None, None]), None);
        // Files without lineage: the first of the highest generation.
        let plain = |generation| Meta {
            generation,
            ..Meta::default()
        };
        assert_eq!(
            newest(&[Some(plain(3)), Some(plain(5)), Some(plain(5))]),
            Some(1)
        );
        assert!(!plain(5).forked(&[0], &plain(6), 1));
    }

    /// Three directories. Run 1 (X=0, Y=1, Z=2 at 4): Y goes offline, X and Z reach 5; the
    /// offer of 6 reaches X and not Z (a crash). Run 2 opens without X, goes by Z's 5 and
    /// writes 6 to Y and Z. No fork: Z carries run 1's history on. The open goes by run 2's
    /// copy, and X (run 1's 6, written without Y but not without Z) is behind, not forked.
    #[test]
    fn three_directories_that_ran_on_are_no_fork() {
        let x = copy(1, &[(6, 1), (4, 1), (6, 1)]);
        let y = copy(2, &[(5, 1), (6, 2), (6, 2)]);
        let z = y.clone();
        let owns = [Some(x.clone()), Some(y.clone()), Some(z)];
        let chosen = newest(&owns).unwrap();
        assert_eq!(chosen, 1, "run 2's copy, which ran on");
        assert!(!y.forked(&[1, 2], &x, 0));
        // A real fork: X ran alone too (run 3, without Y and Z).
        let x = copy(3, &[(6, 3), (4, 1), (5, 1)]);
        assert!(y.forked(&[1, 2], &x, 0));
        assert!(!y.forked(&[], &x, 0), "no holder: nothing to fork from");
    }

    /// A `lineage` line must name a run and one offer per directory.
    #[test]
    fn bad_lineage_is_refused() {
        for lineage in [
            "lineage",
            "lineage 0 1:2",
            "lineage 5 1:2",
            "lineage 5 1:2 x:3",
            "lineage 5 1-2 3:4",
        ] {
            let body = format!("generation 1\ndirs 2 this 0\n{lineage}\n");
            let error = Meta::decode(&body, Path::new("meta")).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::Corruption {
                        what: "meta lineage",
                        ..
                    }
                ),
                "{lineage}: {error}"
            );
        }
        let body = "generation 1\ndirs 2 this 0\nlineage 5 1:2 3:4\n";
        let (meta, _) = Meta::decode(body, Path::new("meta")).unwrap();
        assert_eq!(meta.run, 5);
        assert_eq!(
            meta.offered,
            [
                Offered {
                    generation: 1,
                    run: 2
                },
                Offered {
                    generation: 3,
                    run: 4
                }
            ]
        );
    }

    /// A `meta` written before replication (one directory per partition, no replication
    /// words) reads as replication factor 1.
    #[test]
    fn meta_before_replication_still_reads() {
        let body = "generation 3\ndirs 2 this 0\ntopic t placement=0,1 partitions=2 \
                    segment_bytes=1073741824 segment_ms=604800000 segment_index_bytes=10485760 \
                    index_interval_bytes=4096 max_message_bytes=1048588 \
                    timestamp_type=CreateTime fsync=none\n";
        let (meta, this) = Meta::decode(body, Path::new("meta")).unwrap();
        assert_eq!(this, 0);
        let topic = &meta.topics["t"];
        assert_eq!(topic.placement, vec![vec![0], vec![1]]);
        assert_eq!(topic.config.replication_factor, 1);
        assert_eq!(topic.config.min_insync_replicas, 1);
        assert_eq!(
            topic.leadership,
            vec![Leadership::initial(&[0]), Leadership::initial(&[1])]
        );
    }

    /// Partition states that name a directory outside the replica list, a negative epoch,
    /// or the wrong number of partitions are corruption.
    #[test]
    fn bad_partition_states_are_refused() {
        let config = TopicConfig::default().partitions(1).replication_factor(2);
        for state in [
            "2/0/0:1",
            "0/-1/0",
            "0/0/0:3",
            "0/0",
            "x/0/0",
            "0/0/0,1/0/1",
            "0/0/0/1",
        ] {
            let body = format!(
                "generation 1\ndirs 2 this 0\ntopic t placement=0:1 state={state} {}\n",
                config.to_words()
            );
            assert!(
                matches!(
                    Meta::decode(&body, Path::new("meta")),
                    Err(Error::Corruption { .. })
                ),
                "{state}"
            );
        }
    }

    /// A second `dirs` line, or a replica list or lineage before the first, is corruption:
    /// they are checked against its count (found by the `config_parse` fuzzer; the log
    /// indexed its directories with a later, smaller count).
    #[test]
    fn replica_lists_and_lineage_come_after_one_dirs_line() {
        let topic = format!(
            "topic t placement=2 {}",
            TopicConfig::default().partitions(1).to_words()
        );
        for body in [
            format!("generation 1\ndirs 3 this 0\n{topic}\ndirs 1 this 0\n"),
            format!("generation 1\n{topic}\ndirs 3 this 0\n"),
            "generation 7\nlineage 4\ndirs 2 this 1\n".to_owned(),
        ] {
            assert!(
                matches!(
                    Meta::decode(&body, Path::new("meta")),
                    Err(Error::Corruption {
                        what: "meta dirs",
                        ..
                    })
                ),
                "{body}"
            );
        }
    }

    /// The `config_parse` fuzz seeds are accepted, so that the fuzzer starts from bodies
    /// that reach every line kind.
    #[test]
    fn the_config_parse_seeds_decode() {
        for seed in [
            include_str!("../fuzz/corpus/config_parse/seed-meta"),
            include_str!("../fuzz/corpus/config_parse/seed-meta-short"),
        ] {
            let (meta, _) = Meta::decode(seed, Path::new("meta")).unwrap();
            assert_eq!(meta.topics.len(), 1);
        }
        let words = include_str!("../fuzz/corpus/config_parse/seed-words");
        let config = TopicConfig::from_words(words.split(' ')).unwrap();
        assert_eq!(
            (config.partitions, config.timestamp_before_max_ms),
            (3, 3_600_000)
        );
    }

    /// A topic line whose name the log would refuse (a path, `..`) is corruption: it would
    /// name a directory outside the storage directory.
    #[test]
    fn topic_names_the_log_refuses_are_corruption() {
        let config = TopicConfig::default().partitions(1);
        for name in ["../x", "a/b", "..", ""] {
            let body = format!(
                "generation 1\ndirs 1 this 0\ntopic {name} placement=0 {}\n",
                config.to_words()
            );
            assert!(
                matches!(
                    Meta::decode(&body, Path::new("meta")),
                    Err(Error::Corruption { .. })
                ),
                "{name}"
            );
        }
    }

    /// Replica lists that repeat a directory, name a missing one or disagree with the
    /// replication factor are corruption.
    #[test]
    fn bad_replica_lists_are_refused() {
        let config = TopicConfig::default().partitions(1).replication_factor(2);
        for placement in ["0:0", "0:2", "0", "0:1:1"] {
            let body = format!(
                "generation 1\ndirs 2 this 0\ntopic t placement={placement} {}\n",
                config.to_words()
            );
            assert!(
                matches!(
                    Meta::decode(&body, Path::new("meta")),
                    Err(Error::Corruption { .. })
                ),
                "{placement}"
            );
        }
    }
}
