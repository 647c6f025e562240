//! Shared test helpers: where the real recordings live, whether they are there, and running
//! the binary.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// `../shared/data/` beside the repository (read-only real recordings).
#[allow(dead_code)]
pub fn shared_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

/// Whether `../shared/data/` is there. A test that needs it starts with
/// `if !has_shared_data() { return; }`: without the folder it is skipped (and says so), except
/// when the `CI` environment variable is set, where the missing folder fails the test.
#[allow(dead_code)]
pub fn has_shared_data() -> bool {
    let dir = shared_data("");
    if dir.is_dir() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing and CI is set: the real recordings must be there",
        dir.display()
    );
    eprintln!("skipped: needs {} (the real recordings)", dir.display());
    false
}

/// `tests/data/` in the repository.
#[allow(dead_code)]
pub fn test_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A file in the repository.
#[allow(dead_code)]
pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A recording under `../shared/data/`, or `None` when that folder is absent and the test is
/// skipped (see [`has_shared_data`]). A file missing from a folder that is there is a failure.
#[allow(dead_code)]
pub fn shared_data_or_skip(rel: &str) -> Option<PathBuf> {
    if !has_shared_data() {
        return None;
    }
    let path = shared_data(rel);
    assert!(
        path.exists(),
        "{} is missing from the shared recordings",
        path.display()
    );
    Some(path)
}

/// Runs the `inflor` binary with `args`.
#[allow(dead_code)]
pub fn run_inflor<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inflor"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the inflor binary runs: {e}"))
}
