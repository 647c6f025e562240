//! Format detection: magic lines first (a file shorter than a magic that starts it is that
//! format, cut short, so its decoder can say "truncated"), then headers, then the DV network
//! stream's shape, and only last the file extension (for headerless formats such as ATIS
//! `.bin` and kAER `.dat`, and for a damaged magic, which the decoder then names).

use std::path::Path;

use super::{Format, dv_network, prophesee_header};

/// Guesses the format of an input from its first bytes, and from its path for formats that
/// carry no header. Returns `None` when nothing matches; callers then ask for `--format`.
pub fn detect(path: Option<&Path>, prefix: &[u8]) -> Option<Format> {
    if let Some(&(_, format)) = MAGICS.iter().find(|(magic, _)| prefix.starts_with(magic)) {
        return Some(format);
    }
    let by_extension = extension_format(path);
    // A whole input shorter than a magic that it starts: that format, cut short.
    let cut: Vec<Format> = MAGICS
        .iter()
        .filter(|(magic, _)| !prefix.is_empty() && magic.starts_with(prefix))
        .map(|&(_, format)| format)
        .collect();
    if let Some(&first) = cut.first() {
        return Some(by_extension.filter(|f| cut.contains(f)).unwrap_or(first));
    }
    if prefix.starts_with(b"%") {
        return prophesee_header::sniff(prefix);
    }
    if dv_network::looks_like_dv_network(prefix) {
        return Some(Format::DvNetwork);
    }
    by_extension
}

/// The magic lines, longest first where one starts another.
const MAGICS: [(&[u8], Format); 5] = [
    (b"#!AER-DAT2.0", Format::Aedat2),
    (b"#!AER-DAT1.0", Format::Aedat2),
    (b"#!AER-DAT4.0", Format::Aedat4),
    (b"#!AER-DAT3", Format::Aedat3),
    (b"Event Stream", Format::Es),
];

/// The format a file name's extension suggests.
fn extension_format(path: Option<&Path>) -> Option<Format> {
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
        // kAER `_td.dat` files (Poker-DVS, HOTS) have no header; a Prophesee DAT file has its
        // `%` header and was recognised above.
        Some("dat") => Some(Format::Dat),
        // A damaged magic: the decoder says what it expected.
        Some("aedat4") => Some(Format::Aedat4),
        Some("es") => Some(Format::Es),
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
        assert_eq!(
            detect(Some(Path::new("a/b_td.dat")), &[0, 1, 2, 3, 4, 5, 6, 7]),
            Some(Format::Dat)
        );
        assert_eq!(detect(None, &[]), None);
    }

    #[test]
    fn a_cut_magic_is_its_format() {
        assert_eq!(detect(None, b"#!AER-DAT4"), Some(Format::Aedat4));
        assert_eq!(detect(None, b"#!AER-DAT"), Some(Format::Aedat2));
        assert_eq!(
            detect(Some(Path::new("x.aedat4")), b"#!AER-DAT"),
            Some(Format::Aedat4)
        );
        assert_eq!(detect(None, b"#!AER-DAT4.0"), Some(Format::Aedat4));
        assert_eq!(detect(None, b"Event Str"), Some(Format::Es));
        assert_eq!(detect(None, b"#!AER-DAT3.1"), Some(Format::Aedat3));
    }
}
