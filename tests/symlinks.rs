//! Symbolic links inside a storage directory are refused (reliability plan, bad input): a
//! link in place of a segment file, a checkpoint, `meta` or a partition directory fails
//! the open (or takes that directory offline when there are several) with an error naming
//! the link, and nothing outside the storage directory is read, truncated or written. The
//! storage directory itself may be reached through a link.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use tarnlog::{BatchBuilder, Error, Log, Partition, TopicConfig};

mod common;
use common::{TOPIC, create, files, reopen, scratch};

/// Appends `n` one-record batches with values `v0`, `v1`, ….
fn append(partition: &Partition, n: usize) {
    for i in 0..n {
        let mut builder = BatchBuilder::new();
        builder.push(
            1_000 + i as i64,
            None,
            Some(format!("v{i}").as_bytes()),
            &[],
        );
        partition.append(builder.finish().unwrap()).unwrap();
    }
}

/// The values of every record of `partition`.
fn values(partition: &Partition) -> Vec<String> {
    let mut out = Vec::new();
    let read = partition.read(0, usize::MAX).unwrap();
    for batch in read.batches() {
        for record in &batch.unwrap() {
            out.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

/// A log in `root` with ten records in `TOPIC`, closed.
fn ten_records(root: &Path) {
    let (log, partition) = create(root, TopicConfig::default());
    append(&partition, 10);
    log.close().unwrap();
}

/// Replaces `path` by a link to a copy of it under `outside`, and returns the copy's path.
fn link_away(path: &Path, outside: &Path) -> PathBuf {
    let copy = outside.join(path.file_name().unwrap());
    fs::rename(path, &copy).unwrap();
    symlink(&copy, path).unwrap();
    copy
}

/// The open's error, which must be an I/O error naming `link` as a symbolic link.
fn assert_refused(result: tarnlog::Result<Log>, link: &Path) {
    let error = result.expect_err("the open refuses the link");
    let text = error.to_string();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(
        text.contains("symbolic link") && text.contains(&link.display().to_string()),
        "{text}"
    );
}

/// Every file under `dir` with its bytes and its length on disk.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u64)> {
    files(dir)
        .into_iter()
        .map(|(path, bytes)| {
            let len = fs::metadata(&path).unwrap().len();
            (path, (bytes, len))
        })
        .collect()
}

#[test]
fn a_segment_file_that_is_a_link_is_refused_and_its_target_untouched() {
    let (root, outside) = (scratch("links"), scratch("outside"));
    ten_records(root.path());
    let segment = root.path().join(format!("{TOPIC}-0/{:020}.log", 0));
    let copy = link_away(&segment, outside.path());
    let before = snapshot(outside.path());
    assert_refused(Log::open(root.path()), &segment);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "the link's target is untouched"
    );
    // Put back, the log is whole.
    fs::remove_file(&segment).unwrap();
    fs::rename(&copy, &segment).unwrap();
    let (_log, partition) = reopen(root.path());
    assert_eq!(values(&partition).len(), 10);
}

#[test]
fn a_segment_link_is_refused_after_a_crash_too() {
    // After a kill the open rescans the active segment and cuts a torn tail: through a
    // link, that cut would shorten the file outside.
    let (root, outside) = (scratch("links"), scratch("outside"));
    let (log, partition) = create(root.path(), TopicConfig::default());
    append(&partition, 10);
    drop(partition);
    log.simulate_crash(); // no clean close: the next open recovers
    let segment = root.path().join(format!("{TOPIC}-0/{:020}.log", 0));
    let copy = outside.path().join("segment");
    fs::copy(&segment, &copy).unwrap();
    // A torn tail the recovery would cut.
    let mut bytes = fs::read(&copy).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes.truncate(end);
    bytes.extend_from_slice(&[0xFF; 40]);
    fs::write(&copy, &bytes).unwrap();
    fs::remove_file(&segment).unwrap();
    symlink(&copy, &segment).unwrap();
    let before = snapshot(outside.path());
    assert_refused(Log::open(root.path()), &segment);
    assert_eq!(snapshot(outside.path()), before, "nothing cut outside");
}

#[test]
fn a_partition_directory_that_is_a_link_is_refused() {
    let (root, outside) = (scratch("links"), scratch("outside"));
    ten_records(root.path());
    let partition_dir = root.path().join(format!("{TOPIC}-0"));
    link_away(&partition_dir, outside.path());
    let before = snapshot(outside.path());
    assert_refused(Log::open(root.path()), &partition_dir);
    assert_eq!(snapshot(outside.path()), before);
}

#[test]
fn a_link_among_a_partitions_files_is_refused() {
    // Not one of the log's own names, and a dangling one: still refused by name.
    for target in [None, Some("/nonexistent/tarnlog-target")] {
        let (root, outside) = (scratch("links"), scratch("outside"));
        ten_records(root.path());
        let link = root.path().join(format!("{TOPIC}-0/{:020}.index", 0));
        match target {
            None => {
                link_away(&link, outside.path());
            }
            Some(target) => {
                fs::remove_file(&link).unwrap();
                symlink(target, &link).unwrap();
            }
        }
        let before = snapshot(outside.path());
        assert_refused(Log::open(root.path()), &link);
        assert_eq!(snapshot(outside.path()), before);
    }
}

#[test]
fn a_deleted_topics_leftover_that_is_a_link_is_neither_followed_nor_removed() {
    let (root, outside) = (scratch("links"), scratch("outside"));
    ten_records(root.path());
    fs::write(outside.path().join("keep"), b"outside").unwrap();
    let link = root.path().join("gone-0.delete");
    symlink(outside.path(), &link).unwrap();
    assert_refused(Log::open(root.path()), &link);
    assert!(fs::symlink_metadata(&link).is_ok(), "the link stays");
    assert_eq!(fs::read(outside.path().join("keep")).unwrap(), b"outside");
}

#[test]
fn meta_and_checkpoints_that_are_links_are_refused() {
    for name in ["meta", "recovery-point-offset-checkpoint"] {
        let (root, outside) = (scratch("links"), scratch("outside"));
        ten_records(root.path());
        let file = root.path().join(name);
        assert!(file.exists(), "{name} is one of the log's files");
        link_away(&file, outside.path());
        let before = snapshot(outside.path());
        assert_refused(Log::open(root.path()), &file);
        assert_eq!(snapshot(outside.path()), before, "{name}");
    }
}

#[test]
fn create_topic_refuses_a_link_in_the_way_and_writes_nothing_through_it() {
    let (root, outside) = (scratch("links"), scratch("outside"));
    let log = Log::open(root.path()).unwrap();
    let link = root.path().join("orders-0");
    symlink(outside.path(), &link).unwrap();
    let error = log
        .create_topic("orders", TopicConfig::default())
        .expect_err("refused");
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert!(log.topic("orders").is_err(), "no topic was made");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    // The log carries on: another topic, and the same one once the link is gone.
    log.create_topic("other", TopicConfig::default()).unwrap();
    fs::remove_file(&link).unwrap();
    let orders = log.create_topic("orders", TopicConfig::default()).unwrap();
    append(&orders.partition(0).unwrap(), 3);
    assert_eq!(values(&orders.partition(0).unwrap()), ["v0", "v1", "v2"]);
}

#[test]
fn with_two_directories_the_one_holding_a_link_goes_offline_and_the_records_stay() {
    let (a, b, outside) = (scratch("links-a"), scratch("links-b"), scratch("outside"));
    let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
    let log = Log::builder().dirs(dirs.clone()).open().unwrap();
    let topic = log
        .create_topic(TOPIC, TopicConfig::default().replication_factor(2))
        .unwrap();
    append(&topic.partition(0).unwrap(), 10);
    log.close().unwrap();
    let partition_dir = b.path().join(format!("{TOPIC}-0"));
    link_away(&partition_dir, outside.path());
    let before = snapshot(outside.path());
    let log = Log::builder().dirs(dirs).open().unwrap();
    let status = log.dir_status();
    assert!(status[0].online && !status[1].online, "{status:?}");
    let partition = log.topic(TOPIC).unwrap().partition(0).unwrap();
    assert_eq!(values(&partition).len(), 10);
    append(&partition, 2);
    assert_eq!(values(&partition).len(), 12);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "nothing written through the link"
    );
    // Once the link is gone, the directory comes back and its replica is rebuilt.
    fs::remove_file(&partition_dir).unwrap();
    log.restore_dir(b.path()).unwrap();
    assert!(log.dir_status()[1].online);
    let described = log.describe_topic(TOPIC).unwrap();
    assert_eq!(described.partitions[0].isr.len(), 2, "{described:?}");
    log.close().unwrap();
    let segment = format!("{TOPIC}-0/{:020}.log", 0);
    let (in_a, in_b) = (
        fs::read(a.path().join(&segment)).unwrap(),
        fs::read(b.path().join(&segment)).unwrap(),
    );
    assert_eq!(
        in_a, in_b,
        "the rebuilt replica is byte for byte the leader's"
    );
}

#[test]
fn a_storage_directory_reached_through_a_link_opens() {
    let (real, elsewhere) = (scratch("links-real"), scratch("links-via"));
    let via = elsewhere.path().join("data");
    symlink(real.path(), &via).unwrap();
    ten_records(&via);
    let (_log, partition) = reopen(&via);
    assert_eq!(values(&partition).len(), 10);
    assert!(real.path().join(format!("{TOPIC}-0")).is_dir());
}
