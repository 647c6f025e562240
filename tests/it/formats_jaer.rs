//! Integration tests for the jAER-family decoders and encoders: AEDAT 1.0/2.0, AEDAT 3.1 and
//! ATIS `.bin`. Real recordings are checked against an independent plain numpy decode (the
//! expected values below were computed once with it); chunk-split and round-trip claims are
//! proptested on real and generated inputs.

use inflor::event::{Event, StreamInfo};
use inflor::format::aedat2::{Aedat2Encoder, encode_dvs128};
use inflor::format::aedat3::Aedat3Encoder;
use inflor::format::atis::AtisEncoder;
use inflor::format::{
    Aedat2Layout, DecodeErrorKind, DecodeOptions, Encoder, Format, JaerOrientation, Recording,
    decode_bytes, read_file,
};
use proptest::prelude::*;

use inflor::testkit::{decode, decode_split};

use crate::support::{has_shared_data, run_inflor, shared_data, test_data};

/// Reads a shared recording, failing the test on any error.
fn read_shared(rel: &str, format: Format, options: &DecodeOptions) -> Recording {
    let path = shared_data(rel);
    match read_file(&path, Some(format), options) {
        Ok(recording) => recording,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

fn bytes_of(rel: &str) -> Vec<u8> {
    let path = shared_data(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that every split gives the same events, outcome, statistics and stream info as
/// one call.
fn assert_split_invariant(format: Format, options: &DecodeOptions, input: &[u8], sizes: &[usize]) {
    let whole = decode(format, input, options);
    let split = decode_split(format, input, options, sizes);
    assert_eq!(
        whole.result, split.result,
        "outcome differs (sizes {sizes:?})"
    );
    assert_eq!(
        whole.events.len(),
        split.events.len(),
        "event count differs (sizes {sizes:?})"
    );
    assert!(
        whole.events == split.events,
        "events differ (sizes {sizes:?})"
    );
    assert_eq!(
        whole.stats, split.stats,
        "statistics differ (sizes {sizes:?})"
    );
    assert_eq!(
        whole.info, split.info,
        "stream info differs (sizes {sizes:?})"
    );
}

/// What the independent decode found in a real file.
struct Expected {
    rel: &'static str,
    events: usize,
    on: usize,
    first: [Event; 5],
    last: [Event; 5],
    /// Sums of x and y over all events: a cheap fingerprint of every coordinate.
    sum_xy: (u64, u64),
}

fn check_expected(recording: &Recording, expected: &Expected) {
    let events = &recording.events;
    assert_eq!(
        events.len(),
        expected.events,
        "{}: event count",
        expected.rel
    );
    assert_eq!(
        recording.stats.events as usize, expected.events,
        "{}",
        expected.rel
    );
    let on = events.iter().filter(|e| e.polarity).count();
    assert_eq!(on, expected.on, "{}: ON count", expected.rel);
    assert_eq!(
        events[..5],
        expected.first,
        "{}: first events",
        expected.rel
    );
    assert_eq!(
        events[events.len() - 5..],
        expected.last,
        "{}: last events",
        expected.rel
    );
    let sum_x: u64 = events.iter().map(|e| u64::from(e.x)).sum();
    let sum_y: u64 = events.iter().map(|e| u64::from(e.y)).sum();
    assert_eq!(
        (sum_x, sum_y),
        expected.sum_xy,
        "{}: coordinate sums",
        expected.rel
    );
    assert_eq!(recording.stats.timestamp_regressions, 0, "{}", expected.rel);
}

fn ev(t: i64, x: u16, y: u16, on: bool) -> Event {
    Event::new(t, x, y, on)
}

// ---------------------------------------------------------------------------------------------
// AEDAT 2.0, real files. Spikingjelly orientation for DVS128 (the default); DAVIS with
// x = 239 − x_raw, y = 179 − y_raw.

fn mnist_expected() -> [Expected; 4] {
    [
        Expected {
            rel: "mnist_dvs/mnist_0_scale04_0001.aedat",
            events: 15_744,
            on: 7_870,
            first: [
                ev(0, 60, 55, true),
                ev(85, 68, 61, true),
                ev(140, 69, 50, true),
                ev(149, 65, 70, false),
                ev(187, 65, 50, true),
            ],
            last: [
                ev(2_209_284, 58, 66, true),
                ev(2_209_436, 64, 75, false),
                ev(2_209_585, 67, 61, false),
                ev(2_210_292, 66, 65, false),
                ev(2_210_588, 66, 63, false),
            ],
            sum_xy: (1_011_526, 946_367),
        },
        Expected {
            rel: "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
            events: 1_782,
            on: 943,
            first: [
                ev(0, 60, 55, true),
                ev(85, 68, 61, true),
                ev(140, 69, 50, true),
                ev(149, 65, 70, false),
                ev(187, 65, 50, true),
            ],
            last: [
                ev(196_294, 61, 62, true),
                ev(196_378, 71, 70, false),
                ev(196_403, 62, 46, true),
                ev(196_516, 69, 64, false),
                ev(196_581, 64, 46, true),
            ],
            sum_xy: (114_362, 104_206),
        },
        Expected {
            rel: "mnist_dvs/mnist_0_scale08_0001_qt1.aedat",
            events: 5_078,
            on: 2_734,
            first: [
                ev(0, 88, 59, false),
                ev(13, 69, 69, true),
                ev(57, 80, 70, false),
                ev(70, 58, 61, false),
                ev(219, 63, 42, true),
            ],
            last: [
                ev(196_517, 86, 53, false),
                ev(196_529, 71, 52, true),
                ev(196_531, 71, 74, false),
                ev(196_543, 70, 74, false),
                ev(196_557, 82, 75, false),
            ],
            sum_xy: (323_920, 301_616),
        },
        Expected {
            rel: "mnist_dvs/mnist_0_scale16_0001_qt1.aedat",
            events: 11_209,
            on: 5_858,
            first: [
                ev(0, 104, 37, true),
                ev(46, 70, 79, true),
                ev(55, 50, 60, false),
                ev(87, 31, 63, true),
                ev(112, 33, 101, false),
            ],
            last: [
                ev(196_599, 100, 71, false),
                ev(196_600, 45, 7, false),
                ev(196_602, 42, 77, false),
                ev(196_602, 81, 91, false),
                ev(196_604, 48, 66, false),
            ],
            sum_xy: (703_866, 678_787),
        },
    ]
}

#[test]
fn mnist_dvs_files_match_the_reference_decode() {
    if !has_shared_data() {
        return;
    }
    let options = DecodeOptions::default();
    for expected in mnist_expected() {
        let recording = read_shared(expected.rel, Format::Aedat2, &options);
        check_expected(&recording, &expected);
        assert_eq!((recording.info.width, recording.info.height), (128, 128));
        assert_eq!(
            recording.info.source, None,
            "MNIST-DVS headers name no chip"
        );
        let skipped = &recording.stats;
        assert_eq!(
            skipped.frames_skipped + skipped.imu_skipped + skipped.triggers_skipped,
            0
        );
    }
}

#[test]
fn mnist_dvs_durations_match_the_readme() {
    if !has_shared_data() {
        return;
    }
    let options = DecodeOptions::default();
    let durations = [2_210_588, 196_581, 196_557, 196_604];
    for (expected, duration) in mnist_expected().iter().zip(durations) {
        let events = read_shared(expected.rel, Format::Aedat2, &options).events;
        let span = events[events.len() - 1].t - events[0].t;
        assert_eq!(span, duration, "{}", expected.rel);
    }
}

#[test]
fn raw_orientation_is_spikingjelly_transposed_and_flipped() {
    if !has_shared_data() {
        return;
    }
    let rel = "mnist_dvs/mnist_0_scale04_0001_qt1.aedat";
    let sj = read_shared(rel, Format::Aedat2, &DecodeOptions::default()).events;
    let raw_options = DecodeOptions {
        jaer_orientation: JaerOrientation::Raw,
        ..DecodeOptions::default()
    };
    let raw = read_shared(rel, Format::Aedat2, &raw_options).events;
    assert_eq!(sj.len(), raw.len());
    for (a, b) in sj.iter().zip(&raw) {
        assert_eq!((a.t, a.polarity), (b.t, b.polarity));
        assert_eq!((a.x, a.y), (127 - b.y, 127 - b.x));
    }
}

fn davis_expected() -> [(Expected, u64); 2] {
    [
        (
            Expected {
                rel: "davis240c_aedat2/IMU_translBoxes.aedat",
                events: 162_771,
                on: 82_944,
                first: [
                    ev(294_976_755, 83, 143, false),
                    ev(294_976_892, 34, 51, false),
                    ev(294_976_940, 70, 133, true),
                    ev(294_976_963, 145, 62, false),
                    ev(294_977_020, 80, 115, true),
                ],
                last: [
                    ev(297_049_050, 231, 69, false),
                    ev(297_049_153, 147, 118, false),
                    ev(297_049_154, 233, 96, false),
                    ev(297_049_319, 231, 97, false),
                    ev(297_049_406, 6, 139, false),
                ],
                sum_xy: (24_301_911, 17_174_673),
            },
            33_837,
        ),
        (
            Expected {
                rel: "davis240c_aedat2/IMU_rotDisk.aedat",
                events: 374_296,
                on: 163_098,
                first: [
                    ev(341_678, 228, 164, true),
                    ev(341_678, 185, 10, false),
                    ev(341_685, 4, 15, true),
                    ev(341_698, 192, 0, false),
                    ev(341_720, 0, 17, true),
                ],
                last: [
                    ev(3_508_408, 168, 118, false),
                    ev(3_508_427, 187, 124, false),
                    ev(3_508_427, 93, 127, true),
                    ev(3_508_431, 188, 130, false),
                    ev(3_508_437, 195, 132, false),
                ],
                sum_xy: (38_691_524, 35_342_954),
            },
            51_688,
        ),
    ]
}

#[test]
fn davis240c_files_match_the_reference_decode() {
    if !has_shared_data() {
        return;
    }
    let options = DecodeOptions::default();
    for (expected, non_dvs_words) in davis_expected() {
        let recording = read_shared(expected.rel, Format::Aedat2, &options);
        check_expected(&recording, &expected);
        assert_eq!((recording.info.width, recording.info.height), (240, 180));
        assert_eq!(
            recording.info.source.as_deref(),
            Some("eu.seebetter.ini.chips.davis.DAVIS240C")
        );
        // Both recordings hold IMU words only (7 per sample, but translBoxes starts or ends
        // mid-sample), no APS frame readout.
        assert_eq!(
            recording.stats.imu_skipped, non_dvs_words,
            "{}",
            expected.rel
        );
        assert_eq!(recording.stats.frames_skipped, 0);
        assert_eq!(recording.stats.triggers_skipped, 0);
        assert_eq!(recording.stats.bytes, bytes_of(expected.rel).len() as u64);
    }
}

#[test]
fn davis240c_durations_match_the_readme() {
    if !has_shared_data() {
        return;
    }
    // README: 2.073 s and 3.167 s.
    let options = DecodeOptions::default();
    let spans: Vec<i64> = davis_expected()
        .iter()
        .map(|(e, _)| {
            let events = read_shared(e.rel, Format::Aedat2, &options).events;
            events[events.len() - 1].t - events[0].t
        })
        .collect();
    assert_eq!(spans, [2_072_651, 3_166_759]);
}

#[test]
fn header_only_file_reports_davis346red_and_no_events() {
    if !has_shared_data() {
        return;
    }
    let recording = read_shared(
        "jaer_header/sample_aedat_header.aedat",
        Format::Aedat2,
        &DecodeOptions::default(),
    );
    assert!(recording.events.is_empty());
    assert_eq!((recording.info.width, recording.info.height), (346, 260));
    assert_eq!(
        recording.info.source.as_deref(),
        Some("eu.seebetter.ini.chips.davis.Davis346red")
    );
    assert_eq!(recording.info.format, "AEDAT 2.0");
    assert_eq!(recording.stats.bytes, 599);
}

#[test]
fn layout_and_resolution_options_override_the_header() {
    if !has_shared_data() {
        return;
    }
    let rel = "mnist_dvs/mnist_0_scale04_0001_qt1.aedat";
    // The 128×128 events do not all fit a 64×64 override: strict fails, lenient skips.
    let small = DecodeOptions {
        resolution: Some((64, 64)),
        ..DecodeOptions::default()
    };
    let bytes = bytes_of(rel);
    let error = decode_bytes(Format::Aedat2, &bytes, &small).unwrap_err();
    assert!(matches!(
        error.kind,
        DecodeErrorKind::OutOfRange {
            width: 64,
            height: 64,
            ..
        }
    ));
    assert!(
        error.offset >= 216 && (error.offset - 216).is_multiple_of(8),
        "{error}"
    );
    let lenient = DecodeOptions {
        lenient: true,
        ..small
    };
    let recording = decode_bytes(Format::Aedat2, &bytes, &lenient).unwrap();
    let all = decode_bytes(Format::Aedat2, &bytes, &DecodeOptions::default()).unwrap();
    let inside = all.events.iter().filter(|e| e.x < 64 && e.y < 64).count();
    assert_eq!(recording.events.len(), inside);
    assert_eq!(
        recording.stats.bad_records_skipped as usize,
        all.events.len() - inside
    );
    assert!(recording.stats.first_bad_record.is_some());
    // Forcing the DAVIS layout on the DAVIS240C file without its chip line needs a resolution.
    let davis = DecodeOptions {
        aedat2_layout: Some(Aedat2Layout::Davis),
        ..DecodeOptions::default()
    };
    let mnist_as_davis = decode_bytes(Format::Aedat2, &bytes, &davis).unwrap_err();
    assert!(matches!(mnist_as_davis.kind, DecodeErrorKind::BadHeader(_)));
}

#[test]
fn aedat2_real_files_decode_identically_byte_by_byte() {
    if !has_shared_data() {
        return;
    }
    let options = DecodeOptions::default();
    for rel in [
        "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
        "jaer_header/sample_aedat_header.aedat",
    ] {
        assert_split_invariant(Format::Aedat2, &options, &bytes_of(rel), &[1]);
    }
}

#[test]
fn aedat2_truncated_record_is_reported_by_finish() {
    if !has_shared_data() {
        return;
    }
    let bytes = bytes_of("mnist_dvs/mnist_0_scale04_0001_qt1.aedat");
    for cut in [1, 3, 7] {
        let input = &bytes[..bytes.len() - cut];
        let (events, result, _) =
            decode_split(Format::Aedat2, input, &DecodeOptions::default(), &[4096]).into_parts();
        assert_eq!(events.len(), 1_781);
        let error = result.unwrap_err();
        assert_eq!(
            error.kind,
            DecodeErrorKind::Truncated {
                what: "AEDAT 2.0 event record",
                expected: 8,
                found: 8 - cut as u64,
            }
        );
        assert_eq!(error.offset, 216 + 1_781 * 8);
    }
    // Cut inside the header: the unterminated line is truncation too.
    let error = decode_bytes(Format::Aedat2, &bytes[..100], &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(error.kind, DecodeErrorKind::Truncated { .. }),
        "{error}"
    );
}

#[test]
fn aedat2_header_cap_stops_endless_text() {
    let options = DecodeOptions {
        max_record_bytes: 4096,
        ..DecodeOptions::default()
    };
    let mut input = b"#!AER-DAT2.0\r\n".to_vec();
    while input.len() < 10_000 {
        input.extend_from_slice(b"# lorem ipsum\r\n");
    }
    let error = decode_bytes(Format::Aedat2, &input, &options).unwrap_err();
    assert!(
        matches!(error.kind, DecodeErrorKind::TooLarge { max: 4096, .. }),
        "{error}"
    );
}

#[test]
fn aedat1_records_are_six_bytes_with_16_bit_addresses() {
    // x_raw = 5, y_raw = 9, OFF (raw 1) at t = 70000; then a sync-bit special event.
    let mut input = b"#!AER-DAT1.0\r\n# old\r\n".to_vec();
    input.extend_from_slice(&((9u16 << 8) | (5 << 1) | 1).to_be_bytes());
    input.extend_from_slice(&70_000u32.to_be_bytes());
    input.extend_from_slice(&0x8000u16.to_be_bytes());
    input.extend_from_slice(&70_001u32.to_be_bytes());
    let raw = DecodeOptions {
        jaer_orientation: JaerOrientation::Raw,
        ..DecodeOptions::default()
    };
    let recording = decode_bytes(Format::Aedat2, &input, &raw).unwrap();
    assert_eq!(recording.events, [Event::new(70_000, 5, 9, false)]);
    assert_eq!(recording.stats.triggers_skipped, 1);
    assert_eq!(recording.info.format, "AEDAT 1.0");
}

#[test]
fn aedat2_unknown_chip_needs_the_layout() {
    let input = b"#!AER-DAT2.0\r\n# AEChip: org.example.Mystery\r\n".to_vec();
    let error = decode_bytes(Format::Aedat2, &input, &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(error.kind, DecodeErrorKind::BadHeader(_)),
        "{error}"
    );
    let given = DecodeOptions {
        aedat2_layout: Some(Aedat2Layout::Davis),
        resolution: Some((100, 50)),
        ..DecodeOptions::default()
    };
    let recording = decode_bytes(Format::Aedat2, &input, &given).unwrap();
    assert_eq!((recording.info.width, recording.info.height), (100, 50));
}

#[test]
fn aedat2_version_3_is_refused_with_a_pointer() {
    let input = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n".to_vec();
    let error = decode_bytes(Format::Aedat2, &input, &DecodeOptions::default()).unwrap_err();
    assert!(error.to_string().contains("aedat3"), "{error}");
}

/// Events in time order on a `width`×`height` sensor, from `start` µs.
fn arb_events(width: u16, height: u16, max: usize) -> impl Strategy<Value = Vec<Event>> {
    (
        0i64..1_000_000_000,
        prop::collection::vec((0i64..3_000, 0..width, 0..height, any::<bool>()), 0..max),
    )
        .prop_map(|(start, steps)| {
            let mut t = start;
            steps
                .into_iter()
                .map(|(dt, x, y, on)| {
                    t += dt;
                    Event::new(t, x, y, on)
                })
                .collect()
        })
}

/// Random chunk sizes, small ones likely.
fn arb_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..4, 1usize..64, 1usize..5000], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn aedat2_real_files_are_split_invariant(sizes in arb_sizes(), lenient in any::<bool>()) {
        if !has_shared_data() { return Ok(()); }
        let options = DecodeOptions { lenient, ..DecodeOptions::default() };
        let mnist = bytes_of("mnist_dvs/mnist_0_scale08_0001_qt1.aedat");
        assert_split_invariant(Format::Aedat2, &options, &mnist, &sizes);
        // The DAVIS header (175 kB of preferences) and the first 30,000 words.
        let davis = bytes_of("davis240c_aedat2/IMU_translBoxes.aedat");
        assert_split_invariant(Format::Aedat2, &options, &davis[..175_268 + 240_000], &sizes);
    }

    #[test]
    fn aedat2_generated_inputs_are_split_invariant(
        header in prop::sample::select(vec![
            &b"#!AER-DAT2.0\r\n"[..],
            &b"#!AER-DAT2.0\n# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\n"[..],
            &b"#!AER-DAT1.0\r\n"[..],
            &b""[..],
        ]),
        body in prop::collection::vec(any::<u8>(), 0..600),
        sizes in arb_sizes(),
        lenient in any::<bool>(),
    ) {
        let options = DecodeOptions { lenient, max_record_bytes: 1 << 12, ..DecodeOptions::default() };
        let mut input = header.to_vec();
        input.extend_from_slice(&body);
        assert_split_invariant(Format::Aedat2, &options, &input, &sizes);
    }

    #[test]
    fn aedat2_dvs128_round_trips(
        events in arb_events(128, 128, 300),
        raw in any::<bool>(),
        sizes in arb_sizes(),
    ) {
        let orientation = if raw { JaerOrientation::Raw } else { JaerOrientation::Spikingjelly };
        let bytes = encode_dvs128(&events, orientation).unwrap();
        let options = DecodeOptions { jaer_orientation: orientation, ..DecodeOptions::default() };
        let (decoded, result, _) = decode_split(Format::Aedat2, &bytes, &options, &sizes).into_parts();
        prop_assert!(result.is_ok());
        prop_assert_eq!(decoded, events);
    }

    #[test]
    fn aedat2_davis_round_trips(
        (width, height, events) in prop_oneof![Just((240u16, 180u16)), Just((346, 260)), (1u16..=1024, 1u16..=512)]
            .prop_flat_map(|(w, h)| (Just(w), Just(h), arb_events(w, h, 300))),
        sizes in arb_sizes(),
    ) {
        let mut encoder = Aedat2Encoder::davis(width, height, JaerOrientation::default());
        let mut bytes = Vec::new();
        let info = StreamInfo::new(width, height, "AEDAT 2.0");
        encoder.begin(&info, &mut bytes).unwrap();
        for chunk in events.chunks(7) {
            encoder.encode(chunk, &mut bytes).unwrap();
        }
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, _) = decode_split(Format::Aedat2, &bytes, &DecodeOptions::default(), &sizes).into_parts();
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(decoded, events);
    }
}

#[test]
fn malformed_aedat2_files_fail_in_strict_mode() {
    check_malformed_dir("aedat2", Format::Aedat2);
}

/// Every file in `tests/data/malformed/<dir>/` must make the strict decoder fail, identically
/// for whole and byte-by-byte input.
fn check_malformed_dir(dir: &str, format: Format) {
    let path = test_data(&format!("malformed/{dir}"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let file = entry.unwrap().path();
        let bytes = std::fs::read(&file).unwrap();
        let options = DecodeOptions::default();
        let (_, result, _) =
            decode_split(format, &bytes, &options, &[bytes.len().max(1)]).into_parts();
        assert!(result.is_err(), "{} decoded without error", file.display());
        assert_split_invariant(format, &options, &bytes, &[1]);
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected at least 3 malformed {dir} files, found {seen}"
    );
}

#[test]
fn malformed_aedat3_files_fail_in_strict_mode() {
    check_malformed_dir("aedat3", Format::Aedat3);
}

#[test]
fn malformed_atis_files_fail_in_strict_mode() {
    check_malformed_dir("atis", Format::Atis);
}

// ---------------------------------------------------------------------------------------------
// ATIS .bin, real files.

fn atis_expected() -> [(Expected, (u16, u16), i64); 2] {
    [
        (
            Expected {
                rel: "nmnist/sample_nmnist.bin",
                events: 4_325,
                on: 2_145,
                first: [
                    ev(654, 7, 15, true),
                    ev(2_999, 19, 18, false),
                    ev(3_017, 21, 17, false),
                    ev(3_893, 10, 18, false),
                    ev(4_023, 12, 9, true),
                ],
                last: [
                    ev(305_704, 18, 14, true),
                    ev(308_000, 30, 12, true),
                    ev(308_251, 20, 15, true),
                    ev(310_771, 33, 12, true),
                    ev(311_175, 21, 14, true),
                ],
                sum_xy: (74_457, 71_931),
            },
            (34, 34),
            310_521,
        ),
        (
            Expected {
                rel: "ncaltech101/faces_easy_0001.bin",
                events: 67_445,
                on: 33_770,
                first: [
                    ev(6, 131, 2, true),
                    ev(106, 12, 146, true),
                    ev(120, 7, 128, false),
                    ev(214, 54, 94, false),
                    ev(226, 120, 46, true),
                ],
                last: [
                    ev(299_278, 115, 79, false),
                    ev(299_333, 41, 17, false),
                    ev(299_334, 37, 21, false),
                    ev(299_359, 44, 141, true),
                    ev(299_364, 40, 15, true),
                ],
                sum_xy: (4_337_148, 4_922_131),
            },
            (240, 180),
            299_358,
        ),
    ]
}

#[test]
fn atis_files_match_the_reference_decode() {
    if !has_shared_data() {
        return;
    }
    for (expected, size, duration) in atis_expected() {
        let recording = read_shared(expected.rel, Format::Atis, &DecodeOptions::default());
        check_expected(&recording, &expected);
        assert_eq!(
            (recording.info.width, recording.info.height),
            size,
            "{}",
            expected.rel
        );
        let events = &recording.events;
        assert_eq!(events[events.len() - 1].t - events[0].t, duration);
    }
}

#[test]
fn atis_resolution_option_is_kept_and_enforced() {
    if !has_shared_data() {
        return;
    }
    let bytes = bytes_of("ncaltech101/faces_easy_0001.bin");
    let options = DecodeOptions {
        resolution: Some((150, 172)),
        ..DecodeOptions::default()
    };
    let error = decode_bytes(Format::Atis, &bytes, &options).unwrap_err();
    assert!(
        matches!(error.kind, DecodeErrorKind::OutOfRange { x: 150, .. }),
        "{error}"
    );
    assert_eq!(error.offset % 5, 0);
    let lenient = DecodeOptions {
        lenient: true,
        ..options
    };
    let recording = decode_bytes(Format::Atis, &bytes, &lenient).unwrap();
    assert_eq!((recording.info.width, recording.info.height), (150, 172));
    let outside = recording.stats.bad_records_skipped as usize;
    assert!(outside > 0);
    assert_eq!(recording.events.len() + outside, 67_445);
}

#[test]
fn atis_truncated_record_is_reported_by_finish() {
    if !has_shared_data() {
        return;
    }
    let bytes = bytes_of("nmnist/sample_nmnist.bin");
    let (events, result, _) = decode_split(
        Format::Atis,
        &bytes[..bytes.len() - 2],
        &DecodeOptions::default(),
        &[1000],
    )
    .into_parts();
    assert_eq!(events.len(), 4_324);
    let error = result.unwrap_err();
    assert_eq!(error.offset, 4_324 * 5);
    assert!(matches!(
        error.kind,
        DecodeErrorKind::Truncated {
            expected: 5,
            found: 3,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// AEDAT 3.1: a fixture written from the specification by tests/data/jaer/make_fixtures.py,
// independently of our encoder (no real recording is available).

#[test]
fn aedat31_fixture_decodes_every_packet_kind() {
    let bytes = std::fs::read(test_data("jaer/aedat31_mixed_packets.aedat")).unwrap();
    for sizes in [vec![bytes.len()], vec![1], vec![3, 29, 7]] {
        let (events, result, stats) =
            decode_split(Format::Aedat3, &bytes, &DecodeOptions::default(), &sizes).into_parts();
        result.unwrap();
        assert_eq!(
            events,
            [
                ev(100, 10, 20, true),
                ev(200, 127, 127, false),
                ev((1 << 31) + 5, 0, 0, true)
            ]
        );
        assert_eq!(stats.triggers_skipped, 2);
        assert_eq!(stats.other_skipped, 1, "the invalid polarity event");
        assert_eq!(stats.frames_skipped, 1);
        assert_eq!(stats.imu_skipped, 2);
        assert_eq!(stats.bytes, bytes.len() as u64);
    }
    let recording = decode_bytes(Format::Aedat3, &bytes, &DecodeOptions::default()).unwrap();
    assert_eq!((recording.info.width, recording.info.height), (128, 128));
    assert_eq!(recording.info.source.as_deref(), Some("DVS128"));
}

#[test]
fn aedat31_truncation_and_forged_lengths() {
    let bytes = std::fs::read(test_data("jaer/aedat31_mixed_packets.aedat")).unwrap();
    // Every cut inside the packets is truncation, never a clean end.
    let header_end = bytes
        .windows(14)
        .position(|w| w == b"#!END-HEADER\r\n")
        .unwrap()
        + 14;
    // Packet payloads in the fixture: special 2×8, polarity 4×8, frame 36, polarity 8, IMU 2×36.
    let packet_ends: Vec<usize> = [16, 32, 36, 8, 72]
        .iter()
        .scan(header_end, |end, payload| {
            *end += 28 + payload;
            Some(*end)
        })
        .collect();
    assert_eq!(packet_ends.last(), Some(&bytes.len()));
    for cut in header_end + 1..bytes.len() {
        let result = decode_bytes(Format::Aedat3, &bytes[..cut], &DecodeOptions::default());
        if packet_ends.contains(&cut) {
            assert!(result.is_ok(), "cut at {cut}");
        } else {
            let error = result.expect_err("a cut inside a packet must fail");
            assert!(
                matches!(error.kind, DecodeErrorKind::Truncated { .. }),
                "{error}"
            );
        }
    }
    // A forged 2^31-event capacity is refused from its header, before any payload arrives.
    let mut forged = bytes[..header_end].to_vec();
    for field in [1i16, 1] {
        forged.extend_from_slice(&field.to_le_bytes());
    }
    for field in [8i32, 4, 0, i32::MAX, 1, 1] {
        forged.extend_from_slice(&field.to_le_bytes());
    }
    let mut decoder = Format::Aedat3.decoder(&DecodeOptions::default());
    let error = decoder.feed(&forged, &mut Vec::new()).unwrap_err();
    assert_eq!(
        error.kind,
        DecodeErrorKind::TooLarge {
            what: "AEDAT 3.1 packet (eventSize x eventCapacity)",
            claimed: 8 * i32::MAX as u64,
            max: 64 << 20,
        }
    );
    assert_eq!(error.offset, header_end as u64);
}

#[test]
fn aedat31_lenient_skips_bad_events_and_counts_them() {
    let bytes = std::fs::read(test_data("malformed/aedat3/x_out_of_range.aedat")).unwrap();
    let strict = decode_bytes(Format::Aedat3, &bytes, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(
        strict.kind,
        DecodeErrorKind::OutOfRange { x: 200, .. }
    ));
    let lenient = DecodeOptions {
        lenient: true,
        ..DecodeOptions::default()
    };
    let recording = decode_bytes(Format::Aedat3, &bytes, &lenient).unwrap();
    assert!(recording.events.is_empty());
    assert_eq!(recording.stats.bad_records_skipped, 1);
    // A self-contradicting packet header has no trustworthy length: fatal even when lenient.
    let bytes = std::fs::read(test_data("malformed/aedat3/number_exceeds_capacity.aedat")).unwrap();
    assert!(decode_bytes(Format::Aedat3, &bytes, &lenient).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn atis_real_files_are_split_invariant(sizes in arb_sizes(), lenient in any::<bool>()) {
        if !has_shared_data() { return Ok(()); }
        let options = DecodeOptions { lenient, ..DecodeOptions::default() };
        assert_split_invariant(Format::Atis, &options, &bytes_of("nmnist/sample_nmnist.bin"), &sizes);
        let caltech = bytes_of("ncaltech101/faces_easy_0001.bin");
        assert_split_invariant(Format::Atis, &options, &caltech[..100_003], &sizes);
    }

    #[test]
    fn atis_generated_inputs_are_split_invariant(
        body in prop::collection::vec(any::<u8>(), 0..700),
        sizes in arb_sizes(),
        lenient in any::<bool>(),
    ) {
        let options = DecodeOptions { lenient, ..DecodeOptions::default() };
        assert_split_invariant(Format::Atis, &options, &body, &sizes);
    }

    #[test]
    fn atis_round_trips(
        events in arb_events(256, 240, 300),
        sizes in arb_sizes(),
    ) {
        let mut bytes = Vec::new();
        let mut encoder = AtisEncoder::new();
        encoder.encode(&events, &mut bytes).unwrap();
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, _) = decode_split(Format::Atis, &bytes, &DecodeOptions::default(), &sizes).into_parts();
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(decoded, events);
    }

    #[test]
    fn aedat3_round_trips(
        (width, height, events) in prop_oneof![Just((128u16, 128u16)), Just((346, 260)), (1u16..=2000, 1u16..=2000)]
            .prop_flat_map(|(w, h)| (Just(w), Just(h), arb_events(w, h, 300))),
        jump in 0i64..(1 << 40),
        sizes in arb_sizes(),
    ) {
        // Shift the second half far ahead so packets cross timestamp-overflow boundaries.
        let half = events.len() / 2;
        let events: Vec<Event> = events
            .iter()
            .enumerate()
            .map(|(i, e)| if i >= half { Event { t: e.t + jump, ..*e } } else { *e })
            .collect();
        let mut encoder = Aedat3Encoder::new(width, height);
        let mut bytes = Vec::new();
        let info = StreamInfo::new(width, height, "AEDAT 3.1");
        encoder.begin(&info, &mut bytes).unwrap();
        for chunk in events.chunks(50) {
            encoder.encode(chunk, &mut bytes).unwrap();
        }
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, _) = decode_split(Format::Aedat3, &bytes, &DecodeOptions::default(), &sizes).into_parts();
        prop_assert!(result.is_ok(), "{:?}", result);
        prop_assert_eq!(decoded, events);
    }

    #[test]
    fn aedat3_fixture_with_noise_is_split_invariant(
        cut in 0usize..432,
        noise in prop::collection::vec(any::<u8>(), 0..200),
        sizes in arb_sizes(),
        lenient in any::<bool>(),
    ) {
        // A valid prefix followed by random bytes exercises every packet-header check.
        let bytes = std::fs::read(test_data("jaer/aedat31_mixed_packets.aedat")).unwrap();
        let mut input = bytes[..cut.min(bytes.len())].to_vec();
        input.extend_from_slice(&noise);
        let options = DecodeOptions { lenient, max_record_bytes: 1 << 12, ..DecodeOptions::default() };
        assert_split_invariant(Format::Aedat3, &options, &input, &sizes);
    }
}

// ---------------------------------------------------------------------------------------------
// The command line on these formats: convert and inspect.

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn convert_keeps_the_atis_resolution_inspect_reports() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // N-MNIST-sized events: the file has no header, so only a first pass can settle 34x34.
    let events: Vec<Event> = (0..500u16)
        .map(|i| Event::new(i64::from(i) * 10, i % 34, (i * 7) % 34, i % 3 == 0))
        .collect();
    let mut bytes = Vec::new();
    AtisEncoder::new()
        .encode(&events, &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("digit.bin");
    std::fs::write(&input, &bytes).unwrap_or_else(|e| panic!("{e}"));
    for out in ["digit.aedat4", "digit.aedat"] {
        let output = dir.path().join(out);
        let run = run_inflor(&["convert".as_ref(), input.as_os_str(), output.as_os_str()]);
        assert!(run.status.success(), "{}", stderr_of(&run));
        let rec =
            read_file(&output, None, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rec.info.width, rec.info.height), (34, 34), "{out}");
        assert_eq!(rec.events, events, "{out}");
    }
    if !has_shared_data() {
        return;
    }
    for (rel, size) in [
        ("nmnist/sample_nmnist.bin", (34, 34)),
        ("ncaltech101/faces_easy_0001.bin", (240, 180)),
    ] {
        let output = dir.path().join("real.aedat4");
        let run = run_inflor(&[
            "convert".as_ref(),
            shared_data(rel).as_os_str(),
            output.as_os_str(),
            "--force".as_ref(),
        ]);
        assert!(run.status.success(), "{}", stderr_of(&run));
        let rec =
            read_file(&output, None, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((rec.info.width, rec.info.height), size, "{rel}");
    }
}

#[test]
fn convert_refuses_to_overwrite_without_force_and_bad_paths_up_front() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("in.aedat");
    let events = [Event::new(1, 2, 3, true), Event::new(5, 6, 7, false)];
    let bytes =
        encode_dvs128(&events, JaerOrientation::Spikingjelly).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&input, bytes).unwrap_or_else(|e| panic!("{e}"));
    let output = dir.path().join("out.aedat4");
    std::fs::write(&output, b"precious").unwrap_or_else(|e| panic!("{e}"));
    let run = run_inflor(&["convert".as_ref(), input.as_os_str(), output.as_os_str()]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr_of(&run).contains("--force"), "{}", stderr_of(&run));
    assert_eq!(
        std::fs::read(&output).ok().as_deref(),
        Some(&b"precious"[..])
    );
    let run = run_inflor(&[
        "convert".as_ref(),
        input.as_os_str(),
        output.as_os_str(),
        "--force".as_ref(),
    ]);
    assert!(run.status.success(), "{}", stderr_of(&run));
    let rec = read_file(&output, None, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.events, events);
    // A missing folder, a folder as output, the input as output: exit 2 before any work.
    for bad in [
        dir.path().join("no/such/folder/out.aedat4"),
        dir.path().to_path_buf(),
    ] {
        let run = run_inflor(&["convert".as_ref(), input.as_os_str(), bad.as_os_str()]);
        assert_eq!(
            run.status.code(),
            Some(2),
            "{}: {}",
            bad.display(),
            stderr_of(&run)
        );
        assert!(!stderr_of(&run).contains("wrote"), "{}", stderr_of(&run));
    }
    let run = run_inflor(&[
        "convert".as_ref(),
        input.as_os_str(),
        input.as_os_str(),
        "--force".as_ref(),
        "--to".as_ref(),
        "aedat2".as_ref(),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr_of(&run));
    assert!(
        stderr_of(&run).contains("is the input itself"),
        "{}",
        stderr_of(&run)
    );
}

#[test]
fn empty_files_are_one_clear_error_for_every_format() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for name in [
        "e.aedat", "e.bin", "e.raw", "e.aedat4", "e.dat", "e.es", "e.xyz",
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
        let run = run_inflor(&["inspect".as_ref(), path.as_os_str()]);
        assert_eq!(run.status.code(), Some(2), "{name}");
        let stderr = stderr_of(&run);
        assert!(
            stderr.contains(&format!("{name} is empty")),
            "{name}: {stderr}"
        );
        let forced = run_inflor(&[
            "inspect".as_ref(),
            path.as_os_str(),
            "--format".as_ref(),
            "atis".as_ref(),
        ]);
        assert!(
            stderr_of(&forced).contains("is empty"),
            "{name} --format atis"
        );
    }
    // A file cut inside its magic line says so.
    let cut = dir.path().join("cut.aedat4");
    std::fs::write(&cut, b"#!AER-DAT4").unwrap_or_else(|e| panic!("{e}"));
    let run = run_inflor(&["inspect".as_ref(), cut.as_os_str()]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr_of(&run).contains("truncated AEDAT4 magic line"),
        "{}",
        stderr_of(&run)
    );
    // A missing file is named once, its cause once.
    let missing = dir.path().join("missing.aedat");
    let run = run_inflor(&["inspect".as_ref(), missing.as_os_str()]);
    let stderr = stderr_of(&run);
    let name = missing.display().to_string();
    assert_eq!(
        stderr.matches(&format!("{name}: {name}")).count(),
        0,
        "{stderr}"
    );
    assert!(stderr.contains(&format!("cannot read {name}")), "{stderr}");
}

#[test]
fn orientation_raw_applies_to_davis_and_inspect_names_it() {
    // A DAVIS240C stream written raw: the address bits are the coordinates.
    let events = [Event::new(10, 0, 0, true), Event::new(20, 239, 5, false)];
    let mut encoder = Aedat2Encoder::davis(240, 180, JaerOrientation::Raw);
    let mut bytes = Vec::new();
    encoder
        .begin(&StreamInfo::new(240, 180, "AEDAT 2.0"), &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    encoder
        .encode(&events, &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let raw = DecodeOptions {
        jaer_orientation: JaerOrientation::Raw,
        ..DecodeOptions::default()
    };
    let decoded = decode(Format::Aedat2, &bytes, &raw);
    assert_eq!(decoded.events, events);
    // The default rotates by 180 degrees.
    let upright = decode(Format::Aedat2, &bytes, &DecodeOptions::default());
    let rotated: Vec<Event> = events
        .iter()
        .map(|e| Event::new(e.t, 239 - e.x, 179 - e.y, e.polarity))
        .collect();
    assert_eq!(upright.events, rotated);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("davis.aedat");
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    for (args, says) in [
        (&[][..], "orientation: rotated 180 degrees"),
        (&["--orientation", "raw"][..], "orientation: raw"),
    ] {
        let mut all = vec!["inspect".as_ref(), path.as_os_str()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        let run = run_inflor(&all);
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(text.contains(says), "{text}");
    }
}

#[test]
fn aedat2_output_that_cannot_hold_a_timestamp_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = test_data("faery/evt2_t0.raw");
    let output = dir.path().join("out.aedat");
    let run = run_inflor(&["convert".as_ref(), input.as_os_str(), output.as_os_str()]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = stderr_of(&run);
    for absent in ["wrote 0 events", "Event {", "decoded before"] {
        assert!(!stderr.contains(absent), "{absent:?} in {stderr}");
    }
    assert!(stderr.contains("--rebase-time"), "{stderr}");
    assert!(
        std::fs::read_dir(dir.path())
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
    );
    // Rebased, the same events measured from the first.
    let run = run_inflor(&[
        "convert".as_ref(),
        input.as_os_str(),
        output.as_os_str(),
        "--rebase-time".as_ref(),
    ]);
    assert!(run.status.success(), "{}", stderr_of(&run));
    let source =
        read_file(&input, None, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let rebased =
        read_file(&output, None, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let first = source.events[0].t;
    let expected: Vec<(i64, bool)> = source
        .events
        .iter()
        .map(|e| (e.t - first, e.polarity))
        .collect();
    let got: Vec<(i64, bool)> = rebased.events.iter().map(|e| (e.t, e.polarity)).collect();
    assert_eq!(got, expected);
}

#[test]
fn convert_says_what_it_dropped() {
    if !has_shared_data() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = dir.path().join("out.aedat4");
    let run = run_inflor(&[
        "convert".as_ref(),
        shared_data("davis346_sample.aedat4").as_os_str(),
        output.as_os_str(),
    ]);
    assert!(run.status.success());
    let stderr = stderr_of(&run);
    assert!(
        stderr.contains("wrote 78830 events")
            && stderr.contains("dropped 59 frames/APS, 2363 IMU, 236 triggers"),
        "{stderr}"
    );
}
