//! Train/test split conventions: which recordings of a labelled dataset are test data.
//!
//! CIFAR10-DVS ships without a split, so papers use one of these conventions:
//!
//! - **`default`** = `test-below:100`: per class, the recordings numbered `_0` … `_99` are the
//!   test set and the rest (`_100` … `_999`) the training set, 9000/1000 in all. This is the
//!   split SpikingJelly's `CIFAR10DVSTEBNSplit` builds (its `_move_data` links files
//!   `0..100` to `test/` and `100..1000` to `train/`), used by TET, TEBN and the InfLoR
//!   authors. `test-below:N` generalises it to any N (DVS-Digits uses `test-below:36`).
//! - **`ratio:R`**: per class, the first ⌈n·R⌉ recordings are training data and the rest test
//!   data, exactly as SpikingJelly's `split_to_train_test_set(R, dataset, num_classes)` with
//!   `random_split=False` computes it: `pos = math.ceil(len(indices) * train_ratio)`, in f64.
//!   "First" is in the order of torchvision's `DatasetFolder`, which sorts file names as
//!   **strings** (`sorted(fnames)`), not numerically: `_0, _1, _10, _100, _101, …`. So for
//!   CIFAR10-DVS `ratio:0.9` does **not** give `_900` … `_999` as test data but the last 100
//!   names in string order (`_909`, `_91`, `_910` … `_999`, …). We sort the same way (by UTF-8
//!   bytes, which is code-point order like Python's `sorted`), so the sets match exactly.
//! - **`list:PATH`**: an explicit list file. One recording per line, `train <relative path>`
//!   or `test <relative path>`, the path relative to the dataset root with `/` separators;
//!   blank lines and lines starting with `#` are ignored. Every recording must be listed
//!   exactly once and every listed path must be a recording of the dataset; all problems are
//!   reported together, with line numbers.
//! - **`auto`**: a `split.txt` list file in the dataset root if there is one (`inflor synth`
//!   writes it), else `default` when every file name carries a `_<n>` number, else
//!   `ratio:0.9`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::{DatasetError, Sample, Split};

/// The file name `auto` looks for in the dataset root.
pub const SPLIT_FILE: &str = "split.txt";

/// The number of test recordings per class of the CIFAR10-DVS `default` split.
pub const DEFAULT_TEST_PER_CLASS: u64 = 100;

/// A rule assigning each recording to the training or test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitRule {
    /// Recordings whose `_<n>` number is below N are test data (`default` is N = 100).
    TestBelow(u64),
    /// The first ⌈n·R⌉ recordings of each class, in file-name string order, are training data.
    Ratio(f64),
    /// An explicit list file.
    List(PathBuf),
}

impl fmt::Display for SplitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitRule::TestBelow(n) if *n == DEFAULT_TEST_PER_CLASS => {
                write!(f, "default (test-below:{n})")
            }
            SplitRule::TestBelow(n) => write!(f, "test-below:{n}"),
            SplitRule::Ratio(r) => write!(f, "ratio:{r}"),
            SplitRule::List(p) => write!(f, "list:{}", p.display()),
        }
    }
}

/// What the user asked for: a rule, or `auto` (decided from the dataset's contents).
#[derive(Debug, Clone, PartialEq)]
pub enum SplitSpec {
    /// Decide from the dataset (see the module documentation).
    Auto,
    /// Use this rule.
    Rule(SplitRule),
}

impl FromStr for SplitSpec {
    type Err = String;

    /// Parses `auto`, `default`, `test-below:N`, `ratio:R` (0 ≤ R ≤ 1) or `list:PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "unknown split {s:?}: expected auto, default, test-below:N, ratio:R (0 to 1) \
                 or list:PATH"
            )
        };
        if s == "auto" {
            return Ok(SplitSpec::Auto);
        }
        if s == "default" {
            return Ok(SplitSpec::Rule(SplitRule::TestBelow(
                DEFAULT_TEST_PER_CLASS,
            )));
        }
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        let rule = match kind {
            "test-below" => SplitRule::TestBelow(arg.parse().map_err(|_| bad())?),
            "ratio" => {
                let r: f64 = arg.parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(bad());
                }
                SplitRule::Ratio(r)
            }
            "list" if !arg.is_empty() => SplitRule::List(PathBuf::from(arg)),
            _ => return Err(bad()),
        };
        Ok(SplitSpec::Rule(rule))
    }
}

/// Resolves `auto` for a dataset rooted at `root` whose recordings are `samples`; returns the
/// rule and why it was chosen.
pub(crate) fn resolve(spec: &SplitSpec, root: &Path, samples: &[Sample]) -> (SplitRule, String) {
    match spec {
        SplitSpec::Rule(rule) => (rule.clone(), "given".to_string()),
        SplitSpec::Auto => {
            let list = root.join(SPLIT_FILE);
            if list.is_file() {
                (
                    SplitRule::List(list),
                    format!("auto: {SPLIT_FILE} found in the dataset root"),
                )
            } else if samples.iter().all(|s| s.index.is_some()) {
                (
                    SplitRule::TestBelow(DEFAULT_TEST_PER_CLASS),
                    "auto: every file name ends in _<n>".to_string(),
                )
            } else {
                (
                    SplitRule::Ratio(0.9),
                    "auto: file names carry no _<n> number".to_string(),
                )
            }
        }
    }
}

/// Assigns `split` to every sample. `samples` must be grouped by label and, within a label,
/// in file-name string order (as [`super::Dataset::open`] lists them).
pub(crate) fn assign(
    rule: &SplitRule,
    num_classes: usize,
    samples: &mut [Sample],
) -> Result<(), DatasetError> {
    match rule {
        SplitRule::TestBelow(n) => {
            let unnumbered: Vec<String> = samples
                .iter()
                .filter(|s| s.index.is_none())
                .map(|s| s.relative.clone())
                .collect();
            if !unnumbered.is_empty() {
                return Err(DatasetError::Unnumbered {
                    rule: rule.to_string(),
                    files: unnumbered,
                });
            }
            for s in samples.iter_mut() {
                s.split = match s.index {
                    Some(i) if i < *n => Split::Test,
                    _ => Split::Train,
                };
            }
            Ok(())
        }
        SplitRule::Ratio(r) => {
            let mut per_class = vec![0usize; num_classes];
            for s in samples.iter() {
                if let Some(c) = per_class.get_mut(s.label) {
                    *c += 1;
                }
            }
            let train_count: Vec<usize> = per_class
                .iter()
                .map(|&n| ratio_train_count(n, *r))
                .collect();
            let mut seen = vec![0usize; num_classes];
            for s in samples.iter_mut() {
                let (Some(k), Some(&limit)) = (seen.get_mut(s.label), train_count.get(s.label))
                else {
                    continue;
                };
                s.split = if *k < limit {
                    Split::Train
                } else {
                    Split::Test
                };
                *k += 1;
            }
            Ok(())
        }
        SplitRule::List(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
                path: path.clone(),
                source,
            })?;
            apply_list(path, &text, samples)
        }
    }
}

/// SpikingJelly's `math.ceil(len(indices) * train_ratio)`, in the same f64 arithmetic.
pub fn ratio_train_count(n: usize, ratio: f64) -> usize {
    let pos = (n as f64 * ratio).ceil();
    // `ratio` is within [0, 1], so `pos` is within [0, n]; the clamp only guards rounding.
    (pos.max(0.0) as usize).min(n)
}

/// Applies a list file's text to the samples, collecting every problem before failing.
fn apply_list(path: &Path, text: &str, samples: &mut [Sample]) -> Result<(), DatasetError> {
    let mut problems = Vec::new();
    let by_path: HashMap<&str, usize> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| (s.relative.as_str(), i))
        .collect();
    let mut assigned: Vec<Option<(Split, usize)>> = vec![None; samples.len()];
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rel) = match line.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (line, ""),
        };
        let split = match keyword {
            "train" => Split::Train,
            "test" => Split::Test,
            other => {
                problems.push(format!(
                    "line {line_no}: expected \"train <path>\" or \"test <path>\", found {other:?}"
                ));
                continue;
            }
        };
        if rel.is_empty() {
            problems.push(format!("line {line_no}: {keyword} without a path"));
            continue;
        }
        let rel = rel.strip_prefix("./").unwrap_or(rel);
        match by_path.get(rel) {
            None => problems.push(format!(
                "line {line_no}: {rel:?} is not a recording of the dataset (missing file or \
                 not in a class folder)"
            )),
            Some(&i) => match assigned[i] {
                Some((_, first)) => problems.push(format!(
                    "line {line_no}: {rel:?} listed again (first on line {first})"
                )),
                None => assigned[i] = Some((split, line_no)),
            },
        }
    }
    let unlisted: Vec<&str> = samples
        .iter()
        .zip(&assigned)
        .filter(|(_, a)| a.is_none())
        .map(|(s, _)| s.relative.as_str())
        .collect();
    if !unlisted.is_empty() {
        let shown: Vec<&str> = unlisted.iter().take(5).copied().collect();
        problems.push(format!(
            "{} recording(s) of the dataset are not listed, e.g. {}",
            unlisted.len(),
            shown.join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(DatasetError::SplitList {
            path: path.to_path_buf(),
            problems,
        });
    }
    for (s, a) in samples.iter_mut().zip(assigned) {
        if let Some((split, _)) = a {
            s.split = split;
        }
    }
    Ok(())
}

/// Writes a list file assigning each `(relative path, split)`; the inverse of `list:` parsing.
pub fn format_list<'a>(entries: impl IntoIterator<Item = (&'a str, Split)>) -> String {
    let mut out =
        String::from("# inflor split list: \"train|test <path relative to this folder>\"\n");
    for (rel, split) in entries {
        out.push_str(split.name());
        out.push(' ');
        out.push_str(rel);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(per_class: &[usize]) -> Vec<Sample> {
        let mut out = Vec::new();
        for (label, &n) in per_class.iter().enumerate() {
            let mut names: Vec<String> = (0..n)
                .map(|i| format!("c{label}/x_c{label}_{i}.aedat"))
                .collect();
            // String order, as the dataset lists them.
            names.sort();
            for rel in names {
                let index = super::super::cifar10dvs::sample_index(&rel);
                out.push(Sample {
                    path: PathBuf::from(&rel),
                    relative: rel,
                    label,
                    index,
                    split: Split::Train,
                });
            }
        }
        out
    }

    #[test]
    fn parses_specs() {
        assert_eq!("auto".parse(), Ok(SplitSpec::Auto));
        assert_eq!(
            "default".parse(),
            Ok(SplitSpec::Rule(SplitRule::TestBelow(100)))
        );
        assert_eq!(
            "test-below:36".parse(),
            Ok(SplitSpec::Rule(SplitRule::TestBelow(36)))
        );
        assert_eq!(
            "ratio:0.9".parse(),
            Ok(SplitSpec::Rule(SplitRule::Ratio(0.9)))
        );
        assert_eq!(
            "list:a/b.txt".parse(),
            Ok(SplitSpec::Rule(SplitRule::List(PathBuf::from("a/b.txt"))))
        );
        for bad in [
            "",
            "ratio:1.5",
            "ratio:-0.1",
            "ratio:x",
            "test-below:-1",
            "list:",
            "foo:1",
        ] {
            assert!(bad.parse::<SplitSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_split_is_0_to_99_test() {
        let mut s = samples(&[1000, 1000]);
        assign(&SplitRule::TestBelow(100), 2, &mut s).unwrap();
        for x in &s {
            assert_eq!(
                x.split == Split::Test,
                x.index.unwrap() < 100,
                "{}",
                x.relative
            );
        }
        assert_eq!(s.iter().filter(|x| x.split == Split::Test).count(), 200);
    }

    /// The test set of `ratio:0.9` on 1000 files named `_0` … `_999`, as Python's
    /// `sorted()` + `math.ceil(1000 * 0.9)` gives it (computed with Python 3.11 and
    /// committed here): the last 100 names in string order.
    #[test]
    fn ratio_split_matches_spikingjelly_string_order() {
        let mut s = samples(&[1000]);
        assign(&SplitRule::Ratio(0.9), 1, &mut s).unwrap();
        let mut test: Vec<u64> = s
            .iter()
            .filter(|x| x.split == Split::Test)
            .map(|x| x.index.unwrap())
            .collect();
        test.sort_unstable();
        let mut expected: Vec<u64> = vec![909, 91, 92, 93, 94, 95, 96, 97, 98, 99];
        expected.extend(910..1000);
        expected.sort_unstable();
        assert_eq!(test, expected);
    }

    #[test]
    fn ratio_rounds_up_like_python_ceil() {
        // Python: math.ceil(179 * 0.9) == 162, math.ceil(1000 * 0.9) == 900,
        // math.ceil(10 * 0.7) == 7 (10 * 0.7 is exactly 7.0 in f64), math.ceil(3 * 0.1) == 1.
        assert_eq!(ratio_train_count(179, 0.9), 162);
        assert_eq!(ratio_train_count(1000, 0.9), 900);
        assert_eq!(ratio_train_count(10, 0.7), 7);
        assert_eq!(ratio_train_count(3, 0.1), 1);
        assert_eq!(ratio_train_count(5, 0.0), 0);
        assert_eq!(ratio_train_count(5, 1.0), 5);
        let mut s = samples(&[179, 10]);
        assign(&SplitRule::Ratio(0.9), 2, &mut s).unwrap();
        let train = |l| {
            s.iter()
                .filter(|x| x.label == l && x.split == Split::Train)
                .count()
        };
        assert_eq!((train(0), train(1)), (162, 9));
    }

    #[test]
    fn list_file_round_trip_and_problems() {
        let mut s = samples(&[3]);
        let text = format_list(s.iter().map(|x| {
            let split = if x.index == Some(1) {
                Split::Test
            } else {
                Split::Train
            };
            (x.relative.as_str(), split)
        }));
        apply_list(Path::new("l.txt"), &text, &mut s).unwrap();
        let test: Vec<_> = s
            .iter()
            .filter(|x| x.split == Split::Test)
            .map(|x| x.index)
            .collect();
        assert_eq!(test, vec![Some(1)]);

        let bad = "train c0/x_c0_0.aedat\n# ok\ntest ./c0/x_c0_0.aedat\nvalid c0/x_c0_1.aedat\n\
                   train c0/nope.aedat\ntest\n";
        let err = apply_list(Path::new("l.txt"), bad, &mut s).unwrap_err();
        let DatasetError::SplitList { problems, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("line 3") && problems[0].contains("first on line 1"));
        assert!(problems[1].contains("line 4") && problems[1].contains("\"valid\""));
        assert!(problems[2].contains("line 5") && problems[2].contains("nope.aedat"));
        assert!(problems[3].contains("line 6"));
        assert!(problems[4].starts_with("2 recording(s)"));
        let shown = err.to_string();
        assert!(shown.contains("l.txt"), "{shown}");
    }

    proptest::proptest! {
        #[test]
        fn list_file_round_trips(
            per_class in proptest::collection::vec(1usize..20, 1..4),
            test_mask in proptest::collection::vec(proptest::bool::ANY, 80),
        ) {
            let mut s = samples(&per_class);
            let wanted: Vec<Split> = (0..s.len())
                .map(|i| if test_mask[i % test_mask.len()] { Split::Test } else { Split::Train })
                .collect();
            let text = format_list(s.iter().zip(&wanted).map(|(x, &w)| (x.relative.as_str(), w)));
            apply_list(Path::new("l.txt"), &text, &mut s).unwrap();
            let got: Vec<Split> = s.iter().map(|x| x.split).collect();
            proptest::prop_assert_eq!(got, wanted);
        }
    }

    #[test]
    fn test_below_needs_numbers() {
        let mut s = samples(&[2]);
        s[0].index = None;
        let err = assign(&SplitRule::TestBelow(1), 1, &mut s).unwrap_err();
        assert!(err.to_string().contains(&s[0].relative), "{err}");
    }
}
