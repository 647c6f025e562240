//! Shared test helpers: where the real recordings live.

use std::path::PathBuf;

/// `../shared/data/` beside the repository (read-only real recordings).
#[allow(dead_code)]
pub fn shared_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
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

/// A recording under `../shared/data/`, or `None` with a one-line notice when that folder is
/// absent (a fresh clone). Under `CI` its absence is a failure: CI must never skip these.
#[allow(dead_code)]
pub fn shared_data_or_skip(rel: &str) -> Option<PathBuf> {
    let path = shared_data(rel);
    if path.exists() {
        return Some(path);
    }
    let root = shared_data("");
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing and CI is set: the shared recordings must be beside the repository",
            path.display()
        );
    }
    if !root.exists() {
        eprintln!("skipped: needs the shared recordings in {}", root.display());
        return None;
    }
    panic!("{} is missing from the shared recordings", path.display());
}
