//! CIFAR10-DVS naming: the ten class names in canonical order and the `<prefix>_<class>_<n>`
//! file-name convention that the distributed dataset (and `inflor synth`) uses.
//!
//! The dataset (Li et al., 2017) is distributed as one archive per class, each holding
//! `cifar10_<class>_<n>.aedat` for n = 0..999 (jAER AEDAT 2.0, DVS128). Once extracted it is
//! either a folder per class or, when archives are flattened, one folder of such files.

use std::path::Path;

/// The ten classes in canonical order: label = position. This is CIFAR-10's order, which is
/// also alphabetical, so sorting the class folders gives the same labels.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The label of a CIFAR10-DVS class name.
pub fn class_label(name: &str) -> Option<usize> {
    CLASSES.iter().position(|&c| c == name)
}

/// The parts of a recording's file name `<prefix>_<class>_<n>.<ext>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleName<'a> {
    /// Everything before the class, e.g. `cifar10`.
    pub prefix: &'a str,
    /// The class, e.g. `airplane`.
    pub class: &'a str,
    /// The per-class recording number `n`.
    pub index: u64,
}

/// The file stem without its last extension (`cifar10_cat_7.aedat` → `cifar10_cat_7`).
fn stem(file_name: &str) -> &str {
    match file_name.rfind('.') {
        Some(dot) if dot > 0 => &file_name[..dot],
        _ => file_name,
    }
}

/// The number after the last `_` of the stem: `cifar10_cat_7.aedat` → 7. The `default` split
/// rule needs it. `None` when the stem has no `_<digits>` suffix.
pub fn sample_index(file_name: &str) -> Option<u64> {
    let stem = stem(file_name);
    let (_, digits) = stem.rsplit_once('_')?;
    parse_digits(digits)
}

fn parse_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Splits `<prefix>_<class>_<n>.<ext>` where `<class>` is one of `classes`. The class is
/// matched as a whole `_`-delimited part, so a class name may itself contain `_`.
pub fn parse_sample_name<'a>(file_name: &'a str, classes: &[&str]) -> Option<SampleName<'a>> {
    let stem = stem(file_name);
    let (head, digits) = stem.rsplit_once('_')?;
    let index = parse_digits(digits)?;
    classes.iter().find_map(|&class| {
        let prefix = head.strip_suffix(class)?.strip_suffix('_')?;
        (!prefix.is_empty()).then(|| SampleName {
            prefix,
            class: &head[head.len() - class.len()..],
            index,
        })
    })
}

/// The file name `inflor synth` and CIFAR10-DVS use: `<prefix>_<class>_<n>.aedat`.
pub fn sample_file_name(prefix: &str, class: &str, index: u64) -> String {
    format!("{prefix}_{class}_{index}.aedat")
}

/// Whether `path`'s name is a CIFAR10-DVS recording name (`<prefix>_<class>_<n>.<ext>` with a
/// canonical class).
pub fn is_flat_sample(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| parse_sample_name(n, &CLASSES))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distributed_names() {
        assert_eq!(
            parse_sample_name("cifar10_automobile_123.aedat", &CLASSES),
            Some(SampleName {
                prefix: "cifar10",
                class: "automobile",
                index: 123
            })
        );
        assert_eq!(sample_index("cifar10_automobile_0.aedat"), Some(0));
        assert_eq!(sample_index("dvsdigits_7_35.aedat"), Some(35));
        assert_eq!(sample_index("recording.aedat"), None);
        assert_eq!(sample_index("a_b_.aedat"), None);
        assert_eq!(sample_index("a_-3.aedat"), None);
        assert_eq!(parse_sample_name("cifar10_plane_1.aedat", &CLASSES), None);
        assert_eq!(parse_sample_name("_cat_1.aedat", &CLASSES), None);
        assert_eq!(parse_sample_name("cifar10cat_1.aedat", &CLASSES), None);
        let odd = ["big_cat"];
        assert_eq!(
            parse_sample_name("x_big_cat_4.png", &odd).map(|s| (s.prefix, s.class, s.index)),
            Some(("x", "big_cat", 4))
        );
    }

    #[test]
    fn classes_are_alphabetical_so_sorted_folders_agree() {
        let mut sorted = CLASSES;
        sorted.sort_unstable();
        assert_eq!(sorted, CLASSES);
        assert_eq!(class_label("truck"), Some(9));
    }
}
