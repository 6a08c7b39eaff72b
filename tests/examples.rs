//! The examples run to success, each from a fresh working directory with its default
//! (relative) data directory, twice (the quickstart's second run reopens what the first
//! left). `cargo test` builds the examples next to the test binaries but does not run
//! them; the README's main command is the quickstart, so it must not break unnoticed.
//! (`cargo test --test examples` alone does not build them: it runs what an earlier build
//! left, or fails naming the missing binary.)
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, built by the same `cargo test`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/examples-<hash>
    let profile = exe.parent().unwrap().parent().unwrap();
    profile.join("examples").join(name)
}

fn run_twice(name: &str) {
    let binary = example(name);
    assert!(binary.exists(), "{} was not built", binary.display());
    let cwd = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let output = Command::new(&binary)
            .current_dir(cwd.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name} (run {round}) failed: {}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn quickstart() {
    run_twice("quickstart");
}

#[test]
fn orders() {
    run_twice("orders");
}

#[test]
fn two_disks() {
    run_twice("two_disks");
}

#[test]
fn prices() {
    run_twice("prices");
}

#[test]
fn workers() {
    run_twice("workers");
}
