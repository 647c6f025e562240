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
