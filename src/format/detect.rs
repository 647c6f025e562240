//! Format detection: magic lines first, then headers, then the DV network stream's shape, and
//! only last the file extension (for headerless formats such as ATIS `.bin`).

use std::path::Path;

use super::{Format, dv_network, prophesee_header};

/// Guesses the format of an input from its first bytes, and from its path for formats that
/// carry no header. Returns `None` when nothing matches; callers then ask for `--format`.
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
    if prefix.starts_with(b"Event Stream") {
        return Some(Format::Es);
    }
    if prefix.starts_with(b"%") {
        return prophesee_header::sniff(prefix);
    }
    if dv_network::looks_like_dv_network(prefix) {
        return Some(Format::DvNetwork);
    }
    let extension = path
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        // ATIS recordings (N-MNIST, N-Caltech101) have no header at all.
        Some("bin") => Some(Format::Atis),
        // jAER wrote headerless AEDAT 1.0/2.0 files only in its earliest versions; such a file is
        // still a stream of big-endian words, which the AEDAT 2.0 decoder reads without a header.
        Some("aedat") => Some(Format::Aedat2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_lines_win_over_extensions() {
        let p = Path::new("x.bin");
        assert_eq!(detect(Some(p), b"#!AER-DAT2.0\r\n"), Some(Format::Aedat2));
        assert_eq!(detect(Some(p), b"#!AER-DAT3.1\r\n"), Some(Format::Aedat3));
        assert_eq!(detect(Some(p), b"#!AER-DAT4.0\r\n"), Some(Format::Aedat4));
        assert_eq!(detect(Some(p), b"Event Stream\x02"), Some(Format::Es));
    }

    #[test]
    fn headerless_inputs_fall_back_to_the_extension() {
        assert_eq!(
            detect(Some(Path::new("a/b.BIN")), &[0, 1, 2, 3, 4]),
            Some(Format::Atis)
        );
        assert_eq!(detect(Some(Path::new("a/b.txt")), &[0, 1, 2, 3, 4]), None);
        assert_eq!(detect(None, &[]), None);
    }
}
