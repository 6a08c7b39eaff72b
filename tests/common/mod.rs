//! Helpers shared by the integration tests: a replayable seed and a small PRNG.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use tarnlog::{Log, Partition, TopicConfig};

/// The topic the single-partition tests use.
pub const TOPIC: &str = "t";

/// A log in `root` whose background thread runs retention every millisecond.
pub fn busy_maintenance_log(root: &Path) -> Log {
    Log::builder()
        .dir(root)
        .retention_check_interval_ms(1)
        .background_tick_ms(1)
        .open()
        .unwrap()
}

/// A new log in `root` with topic `TOPIC` and its partition 0.
pub fn create(root: &Path, config: TopicConfig) -> (Log, Partition) {
    let log = Log::open(root).unwrap();
    let p = log
        .create_topic(TOPIC, config)
        .unwrap()
        .partition(0)
        .unwrap();
    (log, p)
}

/// The log in `root` reopened, and partition 0 of `TOPIC`.
pub fn reopen(root: &Path) -> (Log, Partition) {
    let log = Log::open(root).unwrap();
    let p = log.topic(TOPIC).unwrap().partition(0).unwrap();
    (log, p)
}

/// Writes a checkpoint file `name` in `root` holding `offset` for partition 0 of `TOPIC`,
/// framed as tarnlog frames it (`storage/atomic.rs`).
pub fn write_checkpoint(root: &Path, name: &str, offset: u64) {
    let body = format!("0\n1\n{TOPIC} 0 {offset}\n");
    let mut bytes = b"TNLCKPT\0".to_vec();
    bytes.extend(1u32.to_be_bytes());
    bytes.extend((body.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[8..16]);
    crc.update(body.as_bytes());
    bytes.extend(crc.finalize().to_be_bytes());
    bytes.extend(body.as_bytes());
    std::fs::write(root.join(name), bytes).unwrap();
}

/// The seed of a randomized test: `TARNLOG_SEED` or the time. Printed, so a failure replays.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TARNLOG_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            nanos ^ (u64::from(std::process::id()) << 32)
        });
    println!("{test}: TARNLOG_SEED={seed}");
    seed
}

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn nonzero_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() % 255) as u8 + 1).collect()
    }
}

/// Every file under `root` with its bytes, to show that a refused call changed nothing.
pub fn files(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, &mut out);
    out
}

/// A scratch directory, on tmpfs when there is one (fsync is then cheap), named with
/// `prefix`.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix(prefix).tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// A tmpfs mounted on a fresh directory; unmounted (lazily if busy) when dropped, also
/// when the test panics.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `Err(reason)` when the test cannot run here.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not root: cannot mount a tmpfs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// A log over `dirs` whose storage can fail directory by directory.
pub fn faulty_log(dirs: &[std::path::PathBuf]) -> (Log, tarnlog::storage::FaultStorage) {
    use tarnlog::storage::{FaultStorage, OsStorage};
    let fault = FaultStorage::new(OsStorage::shared());
    let log = Log::builder()
        .dirs(dirs)
        .storage(fault.shared())
        .open()
        .unwrap();
    (log, fault)
}

/// How many segment `.log` files `dir` (a partition directory) holds.
pub fn log_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

/// A log in `dir` whose maintenance runs only in `Log::maintain` (the crash tests' logs).
pub fn manual_log(dir: &Path) -> tarnlog::Result<Log> {
    Log::builder().dir(dir).background_maintenance(false).open()
}

/// In a crash test's child process (`env` names its directory): the log there and
/// partition 0 of `topic`, created with `config` unless it exists; "READY" is printed.
/// `None` in any other process.
pub fn child_partition(env: &str, topic: &str, config: TopicConfig) -> Option<(Log, Partition)> {
    let dir = std::env::var(env).ok()?;
    let log = manual_log(Path::new(&dir)).unwrap();
    let handle = match log.create_topic(topic, config) {
        Ok(handle) => handle,
        Err(tarnlog::Error::TopicExists { .. }) => log.topic(topic).unwrap(),
        Err(error) => panic!("{error}"),
    };
    let partition = handle.partition(0).unwrap();
    println!("READY");
    Some((log, partition))
}

/// Runs test `name` of this test binary as a child process with `env = dir`, lets it work
/// for `run`, SIGKILLs it and returns the lines it printed (each printed only after what it
/// names was acknowledged) and how it ended.
pub fn run_and_kill(
    name: &str,
    env: &str,
    dir: &Path,
    run: std::time::Duration,
) -> (Vec<String>, std::process::ExitStatus) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(run);
    let _ = child.kill();
    let status = child.wait().unwrap();
    (reader.join().unwrap(), status)
}
