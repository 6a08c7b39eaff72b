//! Bad input (reliability plan §7h): every rejected call answers its exact, typed error and
//! changes no byte on disk. Each case snapshots the whole scratch tree (every file's path and
//! bytes, plus the in-memory log ends and topic list) before the call and compares after.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tarnlog::codec::{
    ATTRIBUTES_OFFSET, BASE_SEQUENCE_OFFSET, CRC_OFFSET, LAST_OFFSET_DELTA_OFFSET, LENGTH_OFFSET,
    MAGIC_OFFSET, MAX_TIMESTAMP_OFFSET, PRODUCER_ID_OFFSET, RECORD_BATCH_OVERHEAD,
    RECORDS_COUNT_OFFSET, compute_crc, set_base_offset, set_log_append_time,
};
use tarnlog::{BatchBuilder, Error, FsyncPolicy, Log, Partition, Result, TopicConfig};

/// Environment variable that turns `lock_holder_child_process` into the lock holder.
const CHILD_ENV: &str = "TARNLOG_BAD_INPUT_LOCK_CHILD";

/// Every file under `root` with its bytes (`None` for a directory).
type Files = BTreeMap<PathBuf, Option<Vec<u8>>>;

fn files(root: &Path) -> Files {
    fn walk(dir: &Path, out: &mut Files) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.insert(path.clone(), None);
                walk(&path, out);
            } else {
                out.insert(path.clone(), Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Files::new();
    walk(root, &mut out);
    out
}

/// What a case must leave unchanged: the files and what the log says about itself.
#[derive(PartialEq)]
struct Snapshot {
    files: Files,
    state: String,
}

struct Cases {
    root: PathBuf,
    /// Handles whose log ends are part of the state.
    watched: Vec<Partition>,
    log: Option<Log>,
    count: usize,
    changed: usize,
    failures: Vec<String>,
}

impl Cases {
    fn snapshot(&self) -> Snapshot {
        let mut state = String::new();
        if let Some(log) = &self.log {
            let _ = write!(state, "{:?}", log.topics());
        }
        for p in &self.watched {
            let _ = write!(
                state,
                " {}@{}..{}",
                p.topic_partition(),
                p.log_start_offset(),
                p.log_end_offset()
            );
        }
        Snapshot {
            files: files(&self.root),
            state,
        }
    }

    /// Runs a call that must be rejected with an error `expected` accepts, changing nothing.
    fn reject<T: std::fmt::Debug>(
        &mut self,
        name: &str,
        call: impl FnOnce() -> Result<T>,
        expected: impl FnOnce(&Error) -> bool,
    ) {
        self.count += 1;
        let before = self.snapshot();
        let result = call();
        self.compare(name, &before);
        match result {
            Ok(value) => self
                .failures
                .push(format!("{name}: accepted ({value:?}), expected an error")),
            Err(error) if !expected(&error) => {
                self.failures.push(format!("{name}: wrong error {error:?}"));
            }
            Err(_) => {}
        }
    }

    /// Runs a call that must succeed and change nothing (a read).
    fn accept<T>(
        &mut self,
        name: &str,
        call: impl FnOnce() -> Result<T>,
        check: impl FnOnce(&T) -> bool,
    ) {
        self.count += 1;
        let before = self.snapshot();
        let result = call();
        self.compare(name, &before);
        match result {
            Ok(value) if check(&value) => {}
            Ok(_) => self.failures.push(format!("{name}: wrong result")),
            Err(error) => self.failures.push(format!("{name}: failed with {error:?}")),
        }
    }

    fn compare(&mut self, name: &str, before: &Snapshot) {
        let after = self.snapshot();
        if after == *before {
            return;
        }
        self.changed += 1;
        let mut diff = Vec::new();
        if after.state != before.state {
            diff.push(format!("state {:?} -> {:?}", before.state, after.state));
        }
        for (path, bytes) in &before.files {
            match after.files.get(path) {
                None => diff.push(format!("{} removed", path.display())),
                Some(now) if now != bytes => diff.push(format!("{} changed", path.display())),
                Some(_) => {}
            }
        }
        for path in after
            .files
            .keys()
            .filter(|p| !before.files.contains_key(*p))
        {
            diff.push(format!("{} created", path.display()));
        }
        self.failures
            .push(format!("{name}: changed the disk: {}", diff.join(", ")));
    }
}

/// The seed: `TARNLOG_SEED` or the clock; printed so that a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("TARNLOG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("bad_input: TARNLOG_SEED={seed}");
    seed | 1
}

fn batch(values: &[&[u8]]) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for (i, v) in values.iter().enumerate() {
        builder.push(
            1_700_000_000_000 + i as i64,
            Some(b"k"),
            Some(v),
            &[("h", Some(b"v"))],
        );
    }
    builder.finish_vec().unwrap()
}

/// `batch` with bytes at `at` replaced, and the CRC recomputed so only the field is wrong.
fn patched(batch: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut b = batch.to_vec();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = compute_crc(&b);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A batch whose `maxTimestamp` is far below the next one's (here one no client sends)
/// still lets the next one roll the segment by time: the wait between them saturates
/// instead of wrapping around to a negative, which never rolled (and, with overflow
/// checks, panicked).
#[test]
fn far_apart_batch_timestamps_roll_the_segment() {
    let root = tempfile::tempdir().unwrap();
    let log = Log::open(root.path()).unwrap();
    let p = log
        .create_topic("t", TopicConfig::default())
        .unwrap()
        .partition(0)
        .unwrap();
    let one = |timestamp: i64| {
        let mut builder = BatchBuilder::new();
        builder.push(timestamp, None, Some(b"v"), &[]);
        builder.finish_vec().unwrap()
    };
    let first = patched(&one(0), MAX_TIMESTAMP_OFFSET, &(-2i64).to_be_bytes());
    p.append(&first).unwrap();
    p.append(&one(i64::MAX)).unwrap();
    assert_eq!(p.segment_count(), 2, "a week and more apart: rolled");
    assert_eq!(p.log_end_offset(), 2);
    log.close().unwrap();
}

/// An open refused for its directory list (one added, or the order changed) creates
/// nothing: the directories are checked against the recorded layout after they are
/// opened, and one the open created (its lock file and marker) went unremoved.
#[test]
fn an_open_refused_for_its_directory_list_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, extra) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("extra"),
    );
    let log = Log::builder().dirs([&a, &b]).open().unwrap();
    log.create_topic("t", None).unwrap();
    log.close().unwrap();
    let before = files(root.path());
    for dirs in [vec![&a, &b, &extra], vec![&extra, &a, &b]] {
        let error = Log::builder().dirs(dirs).open().unwrap_err();
        assert!(
            matches!(error, Error::InvalidConfig { field: "dirs", .. }),
            "{error}"
        );
        assert!(
            !extra.exists(),
            "a refused open created {}",
            extra.display()
        );
    }
    assert_eq!(
        files(root.path()),
        before,
        "a refused open changed the disk"
    );
    Log::builder()
        .dirs([&a, &b])
        .open()
        .unwrap()
        .close()
        .unwrap();
}

fn attributes(batch: &[u8], value: i16) -> Vec<u8> {
    patched(batch, ATTRIBUTES_OFFSET, &value.to_be_bytes())
}

fn is_invalid_name(name: &str) -> impl FnOnce(&Error) -> bool + '_ {
    move |e| matches!(e, Error::InvalidTopicName { name: n, reason } if n == name && !reason.is_empty())
}

fn is_invalid_config<'a>(field: &'static str, value: &'a str) -> impl FnOnce(&Error) -> bool + 'a {
    move |e| matches!(e, Error::InvalidConfig { field: f, value: v, allowed } if *f == field && v == value && !allowed.is_empty())
}

fn is_corruption(e: &Error) -> bool {
    matches!(e, Error::Corruption { .. })
}

fn is_invalid_record(e: &Error) -> bool {
    matches!(e, Error::InvalidRecord { reason } if !reason.is_empty())
}

/// Creates a closed one-topic log in `dirs`.
fn make_log(dirs: &[PathBuf]) {
    let log = Log::builder().dirs(dirs).open().unwrap();
    let topic = log
        .create_topic("m", TopicConfig::default().partitions(2))
        .unwrap();
    topic.partition(0).unwrap().append_values(["x"]).unwrap();
    drop(topic);
    log.close().unwrap();
}

/// A child process (this test binary) that holds `dir`'s lock until its stdin closes.
struct LockHolder(std::process::Child);

impl LockHolder {
    fn spawn(dir: &Path) -> LockHolder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_holder_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let locked = BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
            .any(|line| line.ends_with("LOCKED"));
        assert!(locked, "the child process did not take the lock");
        LockHolder(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        if self.0.wait().is_err() {
            let _ = self.0.kill();
        }
    }
}

// Not a test of its own: the body of the child process of `bad_input_is_typed_and_harmless`,
// which holds a directory's lock from another process; prevents a second process sharing a log.
#[test]
fn lock_holder_child_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = Log::open(&dir).unwrap();
    println!("LOCKED");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(log);
}

// Every rejected call of the public API answers its exact typed error and changes no byte on
// disk; prevents path traversal through topic names, partial appends of bad batches, config
// typos accepted silently and handles writing after close.
#[test]
#[allow(clippy::too_many_lines)]
fn bad_input_is_typed_and_harmless() {
    let mut rng = seed();
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().to_path_buf();
    let data = root.join("data");
    let (m0, m1, ext) = (root.join("m0"), root.join("m1"), root.join("ext"));
    make_log(&[m0.clone(), m1.clone()]);
    make_log(std::slice::from_ref(&ext));

    let log = Log::open(&data).unwrap();
    let config = TopicConfig::default()
        .partitions(2)
        .segment_bytes(4096)
        .max_message_bytes(1024)
        .fsync(FsyncPolicy::EveryBatch);
    let topic = log.create_topic("existing", config).unwrap();
    log.create_topic("a.b", None).unwrap();
    let small = log
        .create_topic("small-seg", TopicConfig::default().segment_bytes(512))
        .unwrap()
        .partition(0)
        .unwrap();
    let p0 = topic.partition(0).unwrap();
    for i in 0..5 {
        p0.append_values([format!("value-{i}")]).unwrap();
    }
    let end = p0.log_end_offset();
    log.flush().unwrap();

    let mut cases = Cases {
        root: root.clone(),
        watched: vec![p0.clone(), topic.partition(1).unwrap(), small.clone()],
        log: Some(log.clone()),
        count: 0,
        changed: 0,
        failures: Vec::new(),
    };

    // Topic names.
    let too_long = "x".repeat(250);
    let names: [&str; 17] = [
        "",
        ".",
        "..",
        "a/b",
        "../x",
        "..\\x",
        "/etc/passwd",
        "a\0b",
        "a\tb",
        "a\nb",
        "\x7f",
        "a b",
        &too_long,
        "é",
        "日本",
        "__consumer_offsets",
        "__transaction_state",
    ];
    for name in names {
        cases.reject(
            &format!("create_topic({name:?})"),
            || log.create_topic(name, None),
            is_invalid_name(name),
        );
    }
    assert!(!Path::new("/etc/passwd-0").exists() && !root.join("x-0").exists());
    cases.reject(
        "create_topic(a_b) colliding with a.b",
        || log.create_topic("a_b", None),
        is_invalid_name("a_b"),
    );
    cases.reject(
        "create_topic(existing_) no collision but bad config",
        || log.create_topic("existing_", TopicConfig::default().partitions(0)),
        is_invalid_config("partitions", "0"),
    );
    cases.reject(
        "create_topic with more replicas than directories",
        || log.create_topic("replicated", TopicConfig::default().replication_factor(9)),
        |e| {
            matches!(
                e,
                Error::InvalidReplicationFactor { requested: 9, available } if *available < 9
            )
        },
    );
    cases.reject(
        "create_topic with replication_factor 0",
        || log.create_topic("replicated", TopicConfig::default().replication_factor(0)),
        is_invalid_config("replication_factor", "0"),
    );
    cases.reject(
        "create_topic with min_insync_replicas 0",
        || log.create_topic("replicated", TopicConfig::default().min_insync_replicas(0)),
        is_invalid_config("min_insync_replicas", "0"),
    );
    for name in ["existing", "a.b"] {
        cases.reject(
            &format!("create_topic({name}) again"),
            || log.create_topic(name, None),
            |e| matches!(e, Error::TopicExists { topic } if topic == name),
        );
    }

    // Topic configs out of range.
    let configs: Vec<(TopicConfig, &'static str, &str)> = vec![
        (TopicConfig::default().partitions(0), "partitions", "0"),
        (
            TopicConfig::default().partitions(10_001),
            "partitions",
            "10001",
        ),
        (
            TopicConfig::default().segment_bytes(13),
            "segment_bytes",
            "13",
        ),
        (
            TopicConfig::default().segment_bytes(1 << 31),
            "segment_bytes",
            "2147483648",
        ),
        (TopicConfig::default().segment_ms(0), "segment_ms", "0"),
        (
            TopicConfig::default().segment_index_bytes(23),
            "segment_index_bytes",
            "23",
        ),
        (
            TopicConfig::default().index_interval_bytes(1 << 31),
            "index_interval_bytes",
            "2147483648",
        ),
        (
            TopicConfig::default().max_message_bytes(60),
            "max_message_bytes",
            "60",
        ),
        (
            TopicConfig::default().fsync(FsyncPolicy::EveryRecords(0)),
            "fsync.every_records",
            "0",
        ),
        (
            TopicConfig::default().fsync(FsyncPolicy::IntervalMs(0)),
            "fsync.interval_ms",
            "0",
        ),
    ];
    for (config, field, value) in configs {
        cases.reject(
            &format!("create_topic(fresh, {field}={value})"),
            || log.create_topic("fresh", config),
            is_invalid_config(field, value),
        );
    }

    // Unknown topics and partitions.
    cases.reject(
        "topic(nope)",
        || log.topic("nope"),
        |e| matches!(e, Error::UnknownTopic { topic } if topic == "nope"),
    );
    cases.reject(
        "delete_topic(nope)",
        || log.delete_topic("nope"),
        |e| matches!(e, Error::UnknownTopic { topic } if topic == "nope"),
    );
    for partition in [2, u32::MAX] {
        cases.reject(
            &format!("partition({partition})"),
            || topic.partition(partition),
            |e| matches!(e, Error::UnknownPartition { topic, partition: p, partitions: 2 } if topic == "existing" && *p == partition),
        );
    }

    // Reads.
    for offset in [end + 1, end + 1000, u64::MAX] {
        cases.reject(
            &format!("read({offset})"),
            || p0.read(offset, 1 << 20),
            |e| matches!(e, Error::OffsetOutOfRange { requested, earliest: 0, latest } if *requested == offset && *latest == end),
        );
    }
    cases.accept(
        "read(log end)",
        || p0.read(end, 1 << 20),
        |r| r.is_empty() && r.records().next().is_none(),
    );
    cases.accept("read(0, 0 bytes)", || p0.read(0, 0), |r| !r.is_empty());

    // Appends.
    let good = batch(&[b"one", b"two", b"three"]);
    let big = batch(&[&[b'b'; 1100]]);
    cases.reject(
        "append over max_message_bytes",
        || p0.append(&big),
        |e| matches!(e, Error::RecordTooLarge { size, max: 1024 } if *size == big.len()),
    );
    let over_segment = batch(&[&[b's'; 600]]);
    cases.reject(
        "append over segment_bytes",
        || small.append(&over_segment),
        |e| matches!(e, Error::RecordTooLarge { size, max: 512 } if *size == over_segment.len()),
    );
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    cases.reject(
        "append with a flipped record byte",
        || p0.append(&bad_crc),
        |e| {
            matches!(
                e,
                Error::Corruption {
                    what: "batch CRC",
                    ..
                }
            )
        },
    );
    let mut bad_crc_field = good.clone();
    bad_crc_field[CRC_OFFSET] ^= 0x80;
    cases.reject(
        "append with a wrong CRC",
        || p0.append(&bad_crc_field),
        |e| {
            matches!(
                e,
                Error::Corruption {
                    what: "batch CRC",
                    ..
                }
            )
        },
    );
    cases.reject(
        "append truncated by 5 bytes",
        || p0.append(&good[..good.len() - 5]),
        is_corruption,
    );
    cases.reject(
        "append of a header fragment",
        || p0.append(&good[..30]),
        is_corruption,
    );
    cases.reject(
        "append of the header only",
        || p0.append(&good[..RECORD_BATCH_OVERHEAD]),
        is_corruption,
    );
    cases.reject("append of nothing", || p0.append(&[]), is_corruption);
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 7]);
    cases.reject(
        "append with trailing bytes",
        || p0.append(&longer),
        is_corruption,
    );
    cases.reject(
        "append with magic 1",
        || p0.append(&patched(&good, MAGIC_OFFSET, &[1])),
        |e| {
            matches!(
                e,
                Error::Corruption {
                    what: "batch magic",
                    ..
                }
            )
        },
    );
    cases.reject(
        "append with a negative length",
        || p0.append(&patched(&good, LENGTH_OFFSET, &(-1i32).to_be_bytes())),
        is_corruption,
    );
    cases.reject(
        "append with unassigned attribute bits",
        || p0.append(&attributes(&good, 0x80)),
        is_corruption,
    );
    cases.reject(
        "append with compression codec 5",
        || p0.append(&attributes(&good, 5)),
        is_corruption,
    );
    for i in 0..20 {
        let len = (rng_next(&mut rng) % 300) as usize;
        let noise: Vec<u8> = (0..len).map(|_| rng_next(&mut rng) as u8).collect();
        cases.reject(
            &format!("append of random bytes #{i}"),
            || p0.append(&noise),
            is_corruption,
        );
    }
    let mut offset_5 = good.clone();
    set_base_offset(&mut offset_5, 5);
    cases.reject(
        "append with base offset 5",
        || p0.append(&offset_5),
        is_invalid_record,
    );
    cases.reject(
        "append of a control batch",
        || p0.append(&attributes(&good, 0x20)),
        is_invalid_record,
    );
    cases.reject(
        "append with the delete-horizon bit",
        || p0.append(&attributes(&good, 0x40)),
        is_invalid_record,
    );
    let mut append_time = good.clone();
    set_log_append_time(&mut append_time, 1_700_000_000_000);
    cases.reject(
        "append with the LogAppendTime bit",
        || p0.append(&append_time),
        is_invalid_record,
    );
    cases.reject(
        "append with last offset delta != count - 1",
        || {
            p0.append(&patched(
                &good,
                LAST_OFFSET_DELTA_OFFSET,
                &3i32.to_be_bytes(),
            ))
        },
        |e| is_invalid_record(e) || is_corruption(e),
    );
    let mut empty = good[..RECORD_BATCH_OVERHEAD].to_vec();
    empty[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&49i32.to_be_bytes());
    let empty = patched(
        &patched(&empty, RECORDS_COUNT_OFFSET, &0i32.to_be_bytes()),
        LAST_OFFSET_DELTA_OFFSET,
        &0i32.to_be_bytes(),
    );
    cases.reject(
        "append of a batch of no records",
        || p0.append(&empty),
        |e| is_invalid_record(e) || is_corruption(e),
    );
    let idempotent = patched(
        &patched(&good, PRODUCER_ID_OFFSET, &7i64.to_be_bytes()),
        BASE_SEQUENCE_OFFSET,
        &(-1i32).to_be_bytes(),
    );
    cases.reject(
        "append idempotent without a sequence",
        || p0.append(&idempotent),
        is_invalid_record,
    );
    for (bits, codec) in [(1, "gzip"), (2, "snappy"), (3, "lz4"), (4, "zstd")] {
        cases.reject(
            &format!("append compressed with {codec}"),
            || p0.append(&attributes(&good, bits)),
            |e| matches!(e, Error::UnsupportedCompression { codec: c } if *c == codec),
        );
    }
    cases.reject(
        "append_values of nothing",
        || p0.append_values(Vec::<Vec<u8>>::new()),
        is_invalid_record,
    );

    // Opening.
    cases.reject(
        "open with no dirs",
        || Log::builder().open(),
        is_invalid_config("dirs", "[]"),
    );
    let fresh = root.join("fresh");
    cases.reject(
        "open with a repeated dir",
        || Log::builder().dir(&fresh).dir(&fresh).open(),
        |e| matches!(e, Error::InvalidConfig { field: "dirs", .. }),
    );
    cases.reject(
        "open with nested dirs",
        || Log::builder().dir(&fresh).dir(fresh.join("inner")).open(),
        |e| matches!(e, Error::InvalidConfig { field: "dirs", .. }),
    );
    cases.reject(
        "open with one dir spelled two ways",
        || {
            Log::builder()
                .dir(&fresh)
                .dir(m0.join("..").join("fresh"))
                .open()
        },
        |e| matches!(e, Error::InvalidConfig { field: "dirs", .. }),
    );
    for ms in [0, 60_001] {
        cases.reject(
            &format!("open with background_tick_ms {ms}"),
            || Log::builder().dir(&fresh).background_tick_ms(ms).open(),
            is_invalid_config("background_tick_ms", &ms.to_string()),
        );
    }
    cases.reject(
        "open with a bad default topic config",
        || {
            Log::builder()
                .dir(&fresh)
                .default_topic_config(TopicConfig::default().segment_bytes(13))
                .open()
        },
        is_invalid_config("segment_bytes", "13"),
    );
    cases.reject(
        "reopen with the dirs swapped",
        || Log::builder().dirs([&m1, &m0]).open(),
        |e| matches!(e, Error::InvalidConfig { field: "dirs", .. }),
    );
    cases.reject(
        "reopen with one of two dirs",
        || Log::open(&m1),
        |e| matches!(e, Error::InvalidConfig { field: "dirs", .. }),
    );
    cases.reject(
        "second open in this process",
        || Log::open(&data),
        |e| matches!(e, Error::Locked { dir } if *dir == data),
    );
    {
        let _holder = LockHolder::spawn(&ext);
        cases.reject(
            "open of a dir another process holds",
            || Log::open(&ext),
            |e| matches!(e, Error::Locked { dir } if *dir == ext),
        );
    }

    // Handles after close.
    let other = log.clone();
    cases.log = None;
    log.close().unwrap();
    let closed = |e: &Error| matches!(e, Error::Closed);
    cases.reject("append after close", || p0.append(&good), closed);
    cases.reject(
        "append_values after close",
        || p0.append_values(["late"]),
        closed,
    );
    cases.reject("read after close", || p0.read(0, 1 << 20), closed);
    cases.reject("flush partition after close", || p0.flush(), closed);
    cases.reject(
        "offset_for_time after close",
        || p0.offset_for_time(0),
        closed,
    );
    cases.reject("topic() after close", || other.topic("existing"), closed);
    cases.reject(
        "create_topic after close",
        || other.create_topic("late", None),
        closed,
    );
    cases.reject(
        "delete_topic after close",
        || other.delete_topic("existing"),
        closed,
    );
    cases.reject("flush log after close", || other.flush(), closed);

    println!(
        "bad_input: {} cases, {} changed bytes, {} failures",
        cases.count,
        cases.changed,
        cases.failures.len()
    );
    assert!(cases.failures.is_empty(), "{:#?}", cases.failures);
}

/// xorshift64*.
fn rng_next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
