//! Format detection from magic bytes, headers and, last, the file extension.

use std::path::Path;

use super::Format;

/// Guesses the format of an input from its first bytes (and its path, for headerless formats).
pub fn detect(path: Option<&Path>, prefix: &[u8]) -> Option<Format> {
    if prefix.starts_with(b"#!AER-DAT2.0") || prefix.starts_with(b"#!AER-DAT1.0") {
        return Some(Format::Aedat2);
    }
    if prefix.starts_with(b"#!AER-DAT3") {
        return Some(Format::Aedat3);
    }
    if prefix.starts_with(b"#!AER-DAT4.0") {
        return Some(Format::Aedat4);
    }
    let _ = path;
    None
}
