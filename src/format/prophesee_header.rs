//! The `%`-line ASCII header shared by Prophesee RAW (EVT 2.0 / 3.0) and DAT files.

/// Detects EVT 2.0 / EVT 3.0 / DAT from a `%` header (placeholder until its owner lands it).
pub fn sniff(_prefix: &[u8]) -> Option<super::Format> {
    None
}
