//! Every decoder over the committed corpus of malformed inputs (`tests/data/malformed/<format>/`)
//! and over seeded random bytes: a clean typed error (or a clean result for random bytes that
//! happen to be valid), never a panic, and the same events, outcome and counts for whole and
//! split input.

use inflor::format::{DecodeOptions, Format};
use inflor::testkit::decode_split;
use proptest::prelude::*;

use crate::support::test_data;

fn dir_name(format: Format) -> &'static str {
    match format {
        Format::Aedat2 => "aedat2",
        Format::Aedat3 => "aedat3",
        Format::Aedat4 => "aedat4",
        Format::DvNetwork => "dv_network",
        Format::Evt2 => "evt2",
        Format::Evt3 => "evt3",
        Format::Dat => "dat",
        Format::Atis => "atis",
        Format::Es => "es",
    }
}

#[test]
fn every_malformed_file_gets_a_typed_error_in_strict_mode() {
    let strict = DecodeOptions {
        max_record_bytes: 1 << 20,
        ..DecodeOptions::default()
    };
    let lenient = DecodeOptions {
        lenient: true,
        ..strict.clone()
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for format in Format::ALL {
        let dir = test_data("malformed").join(dir_name(format));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let input = std::fs::read(&path).unwrap();
            let whole = decode_split(format, &input, &strict, &[usize::MAX]);
            let split = decode_split(format, &input, &strict, &[3]);
            match (&whole.result, &split.result) {
                (Err(a), Err(_)) if whole == split => {
                    let message = a.to_string();
                    assert!(message.contains("at byte"), "{}: {message}", path.display());
                }
                _ => problems.push(format!(
                    "{}: whole {:?}, split {:?}",
                    path.display(),
                    whole.result,
                    split.result
                )),
            }
            // Lenient mode must not panic either; it may succeed by skipping.
            let _ = decode_split(format, &input, &lenient, &[5]);
            checked += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 9, "the corpus has only {checked} files");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_split_equals_whole(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
        chunk in 1usize..64,
        which in 0usize..Format::ALL.len(),
    ) {
        let format = Format::ALL[which];
        let options = DecodeOptions { max_record_bytes: 1 << 16, ..DecodeOptions::default() };
        let whole = decode_split(format, &input, &options, &[usize::MAX]);
        let split = decode_split(format, &input, &options, &[chunk]);
        prop_assert_eq!(whole, split);
    }
}
