//! Integration tests: AEDAT 4.0 files and the DV network stream. Real recordings (counts and
//! events cross-checked once against python `aedat` 2.3.0, values committed here), files that
//! dv-processing 2.0.4 wrote in each of DV's five compressions, the dv-processing network
//! capture, encoder round trips, chunk-split equivalence, bombs and malformed inputs.

use std::path::Path;

use aedat::base::ioheader_generated::{
    Compression as FbCompression, Ioheader, IoheaderArgs, size_prefixed_root_as_ioheader,
};
use aedat::events_generated::{Event as FbEvent, EventPacket, EventPacketArgs};
use flatbuffers::FlatBufferBuilder;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use inflor::event::{Event, StreamInfo};
use inflor::format::aedat4::{Aedat4Decoder, Aedat4Encoder, Aedat4EncoderOptions, Compression};
use inflor::format::dv_network::{DvNetworkDecoder, DvNetworkEncoder, looks_like_dv_network};
use inflor::format::{DecodeError, DecodeErrorKind, DecodeOptions, Decoder, Encoder, Format};

use inflor::testkit::{Decoded, decode, decode_split, drive};

use crate::support::{has_shared_data, run_inflor, shared_data, test_data};

const DAVIS346: &str = "davis346_sample.aedat4";
const DVXPLORER: &str = "dvxplorer_tonic/sample.aedat4";
const CAPTURE: &str = "dv_network/dvprocessing_network_lz4.bin";

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strict() -> DecodeOptions {
    DecodeOptions::default()
}

fn lenient() -> DecodeOptions {
    DecodeOptions {
        lenient: true,
        ..DecodeOptions::default()
    }
}

/// Decodes a file with the concrete decoder, to see the data-table check.
fn decode_file(bytes: &[u8]) -> (Decoded, Option<u64>, Option<Compression>) {
    let mut decoder = Aedat4Decoder::new(&strict());
    let decoded = drive(&mut decoder, bytes, &strict(), &[usize::MAX]);
    (decoded, decoder.data_table_packets(), decoder.compression())
}

// ---------------------------------------------------------------------------------------------
// Real recordings

/// Order-independent digests of a recording, computed with python `aedat` 2.3.0.
struct Digest {
    on: usize,
    sum_x: u64,
    sum_y: u64,
    xor_t: i64,
}

fn digest(events: &[Event]) -> Digest {
    Digest {
        on: events.iter().filter(|e| e.polarity).count(),
        sum_x: events.iter().map(|e| u64::from(e.x)).sum(),
        sum_y: events.iter().map(|e| u64::from(e.y)).sum(),
        xor_t: events.iter().fold(0, |acc, e| acc ^ e.t),
    }
}

#[test]
fn davis346_sample_matches_python_aedat() {
    if !has_shared_data() {
        return;
    }
    let (decoded, table, compression) = decode_file(&read(&shared_data(DAVIS346)));
    assert_eq!(decoded.result, Ok(()));
    let events = &decoded.events;
    assert_eq!(events.len(), 78_830);
    assert_eq!(
        decoded.info,
        Some(StreamInfo {
            source: Some("DAVIS346_00000002".to_string()),
            ..StreamInfo::new(346, 260, "AEDAT 4.0")
        })
    );
    let stats = &decoded.stats;
    assert_eq!(
        (
            stats.events,
            stats.frames_skipped,
            stats.imu_skipped,
            stats.triggers_skipped
        ),
        (78_830, 59, 2_363, 236)
    );
    assert_eq!(
        (
            stats.other_skipped,
            stats.bad_records_skipped,
            stats.timestamp_regressions
        ),
        (0, 0, 0)
    );
    assert_eq!(stats.bytes, 6_144_209);
    assert_eq!(compression, Some(Compression::Lz4));
    assert_eq!(table, Some(708), "the FileDataTable lists all 708 packets");
    assert_eq!(
        &events[..3],
        &[
            Event::new(1_589_163_147_368_868, 215, 164, true),
            Event::new(1_589_163_147_368_950, 226, 160, true),
            Event::new(1_589_163_147_368_974, 40, 236, true),
        ]
    );
    assert_eq!(
        &events[events.len() - 3..],
        &[
            Event::new(1_589_163_149_728_806, 214, 210, true),
            Event::new(1_589_163_149_728_809, 240, 171, true),
            Event::new(1_589_163_149_728_813, 233, 205, true),
        ]
    );
    let d = digest(events);
    assert_eq!((d.on, events.len() - d.on), (41_257, 37_573));
    assert_eq!(
        (d.sum_x, d.sum_y, d.xor_t),
        (14_861_513, 15_061_593, 64_310)
    );
    assert_eq!(events[events.len() - 1].t - events[0].t, 2_359_945);
}

#[test]
fn dvxplorer_sample_matches_python_aedat() {
    if !has_shared_data() {
        return;
    }
    let (decoded, table, compression) = decode_file(&read(&shared_data(DVXPLORER)));
    assert_eq!(decoded.result, Ok(()));
    let events = &decoded.events;
    assert_eq!(events.len(), 111_954);
    let info = decoded.info.clone().unwrap_or_else(|| panic!("no info"));
    assert_eq!((info.width, info.height), (320, 240));
    assert_eq!(info.source.as_deref(), Some("DVXplorer_DXB00010"));
    assert_eq!(compression, Some(Compression::Lz4));
    assert!(table.is_some_and(|n| n > 0));
    let stats = &decoded.stats;
    assert_eq!(
        (
            stats.events,
            stats.frames_skipped,
            stats.imu_skipped,
            stats.triggers_skipped
        ),
        (111_954, 0, 475, 0)
    );
    assert_eq!(
        &events[..3],
        &[
            Event::new(1_605_537_493_718_345, 154, 204, false),
            Event::new(1_605_537_493_718_348, 149, 206, false),
            Event::new(1_605_537_493_718_349, 148, 199, true),
        ]
    );
    assert_eq!(
        &events[events.len() - 3..],
        &[
            Event::new(1_605_537_494_308_260, 92, 194, false),
            Event::new(1_605_537_494_308_261, 90, 132, false),
            Event::new(1_605_537_494_308_262, 88, 237, true),
        ]
    );
    let d = digest(events);
    assert_eq!((d.on, events.len() - d.on), (55_023, 56_931));
    assert_eq!(
        (d.sum_x, d.sum_y, d.xor_t),
        (18_342_405, 15_105_898, 297_246)
    );
    assert_eq!(events[events.len() - 1].t - events[0].t, 589_917);
}

#[test]
fn resolution_option_overrides_the_header() {
    if !has_shared_data() {
        return;
    }
    let options = DecodeOptions {
        resolution: Some((400, 300)),
        ..strict()
    };
    let decoded = decode(Format::Aedat4, &read(&shared_data(DVXPLORER)), &options);
    assert_eq!(decoded.result, Ok(()));
    assert_eq!(decoded.info.map(|i| (i.width, i.height)), Some((400, 300)));
    // A smaller override turns events outside it into errors.
    let options = DecodeOptions {
        resolution: Some((100, 100)),
        ..strict()
    };
    let decoded = decode(Format::Aedat4, &read(&shared_data(DVXPLORER)), &options);
    assert!(matches!(
        decoded.result,
        Err(DecodeError {
            kind: DecodeErrorKind::OutOfRange {
                width: 100,
                height: 100,
                ..
            },
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Files written by dv-processing (tests/data/aedat4/make_fixtures.py)

/// The events `make_fixtures.py` writes.
fn fixture_events() -> Vec<Event> {
    let mut events = Vec::new();
    for k in 0..4u16 {
        for i in 0..500u16 {
            let n = i64::from(k) * 500 + i64::from(i);
            events.push(Event::new(
                1000 + 7 * n,
                (13 * k + 5 * i) % 64,
                (3 * i + k) % 48,
                (i + k) % 3 == 0,
            ));
        }
    }
    events
}

#[test]
fn dv_processing_files_decode_in_every_compression() {
    let want = fixture_events();
    for (name, compression) in [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("lz4_high", Compression::Lz4High),
        ("zstd", Compression::Zstd),
        ("zstd_high", Compression::ZstdHigh),
    ] {
        let bytes = read(&test_data(&format!("aedat4/dvp_{name}.aedat4")));
        let (decoded, table, found) = decode_file(&bytes);
        assert_eq!(decoded.result, Ok(()), "{name}");
        assert_eq!(found, Some(compression), "{name}");
        assert_eq!(decoded.events, want, "{name}");
        let stats = &decoded.stats;
        assert_eq!(
            (
                stats.frames_skipped,
                stats.imu_skipped,
                stats.triggers_skipped
            ),
            (2, 12, 5),
            "{name}"
        );
        assert!(table.is_some_and(|n| n >= 4), "{name}: {table:?}");
        assert_eq!(
            decoded.info.map(|i| (i.width, i.height, i.source)),
            Some((64, 48, Some("DVP_FIXTURE".to_string())))
        );
    }
}

#[test]
fn unknown_stream_types_fail_strict_and_are_skipped_lenient() {
    // dv-processing wrote a bounding-box stream (type BBOX) beside the events.
    let bytes = read(&test_data("aedat4/dvp_bbox_lz4.aedat4"));
    let decoded = decode(Format::Aedat4, &bytes, &strict());
    assert!(
        matches!(&decoded.result, Err(DecodeError { kind: DecodeErrorKind::UnknownStreamType(m), .. }) if m.contains("BBOX")),
        "{:?}",
        decoded.result
    );
    let decoded = decode(Format::Aedat4, &bytes, &lenient());
    assert_eq!(decoded.result, Ok(()));
    assert_eq!(decoded.events, fixture_events());
    assert_eq!(decoded.stats.other_skipped, 1);
    assert_eq!(decoded.stats.bad_records_skipped, 0);
}

// ---------------------------------------------------------------------------------------------
// The dv-processing network capture

/// The events the capture's README documents, for `packets` packets of 100.
fn capture_events(packets: u32) -> Vec<Event> {
    let mut events = Vec::new();
    let mut t = 0;
    for k in 0..packets {
        for i in 0..100u32 {
            t += 10;
            events.push(Event::new(
                t,
                ((k + i) % 128) as u16,
                ((3 * i) % 128) as u16,
                i & 1 == 1,
            ));
        }
    }
    events
}

/// Absolute offsets of every packet in a network stream, and where the last complete one ends.
fn packet_offsets(stream: &[u8]) -> (Vec<usize>, usize) {
    let header = u32::from_le_bytes(stream[..4].try_into().unwrap_or_default()) as usize;
    let mut offsets = Vec::new();
    let mut position = 4 + header;
    while position + 8 <= stream.len() {
        let size = i32::from_le_bytes(
            stream[position + 4..position + 8]
                .try_into()
                .unwrap_or_default(),
        );
        let end = position + 8 + size as usize;
        if end > stream.len() {
            break;
        }
        offsets.push(position);
        position = end;
    }
    (offsets, position)
}

#[test]
fn network_capture_matches_the_generating_loop() {
    if !has_shared_data() {
        return;
    }
    let capture = read(&shared_data(CAPTURE));
    let decoded = decode(Format::DvNetwork, &capture, &strict());
    // The capture happens to end exactly at a packet boundary: 187 complete packets.
    let (offsets, end) = packet_offsets(&capture);
    assert_eq!((offsets.len(), end), (187, capture.len()));
    assert_eq!(decoded.result, Ok(()));
    assert_eq!(decoded.events, capture_events(187));
    assert_eq!(decoded.stats.events, 18_700);
    assert_eq!(decoded.stats.timestamp_regressions, 0);
    assert_eq!(
        decoded.info,
        Some(StreamInfo {
            source: Some("DVS128_NET".to_string()),
            ..StreamInfo::new(128, 128, "DV network stream")
        })
    );
    let mut decoder = DvNetworkDecoder::new(&strict());
    let mut events = Vec::new();
    decoder.feed_all(&capture[..800], &mut events).unwrap();
    assert_eq!(decoder.compression(), Some(Compression::Lz4));
}

#[test]
fn network_capture_cut_mid_packet_reports_truncated_after_every_complete_packet() {
    if !has_shared_data() {
        return;
    }
    let capture = read(&shared_data(CAPTURE));
    let (offsets, _) = packet_offsets(&capture);
    let header_end = offsets[0];
    let cuts = [
        1,
        3,
        header_end - 1,
        header_end + 5,
        offsets[1] + 8,
        offsets[100] + 9,
        offsets[186] + 1,
        capture.len() - 1,
    ];
    for cut in cuts {
        let decoded = decode(Format::DvNetwork, &capture[..cut], &strict());
        let complete = offsets
            .iter()
            .filter(|&&o| o < cut)
            .count()
            .saturating_sub(1);
        let partial_at = offsets
            .iter()
            .rev()
            .find(|&&o| o < cut)
            .copied()
            .unwrap_or(0);
        let (what, at) = if cut < header_end {
            (
                if cut < 4 {
                    "IOHeader length"
                } else {
                    "IOHeader"
                },
                0,
            )
        } else if cut - partial_at < 8 {
            ("packet header", partial_at)
        } else {
            ("packet", partial_at)
        };
        assert_eq!(decoded.events, capture_events(complete as u32), "cut {cut}");
        match &decoded.result {
            Err(DecodeError {
                format: Format::DvNetwork,
                offset,
                kind:
                    DecodeErrorKind::Truncated {
                        what: found_what,
                        found,
                        ..
                    },
            }) => {
                assert_eq!((*found_what, *offset), (what, at as u64), "cut {cut}");
                assert_eq!(*found, (cut - at) as u64, "cut {cut}");
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn network_encoder_reproduces_the_capture() {
    if !has_shared_data() {
        return;
    }
    let capture = read(&shared_data(CAPTURE));
    let decoded = decode(Format::DvNetwork, &capture, &strict());
    let info = decoded.info.clone().unwrap_or_else(|| panic!("no info"));
    let mut encoder = DvNetworkEncoder::new(Aedat4EncoderOptions {
        events_per_packet: 100,
        ..Aedat4EncoderOptions::default()
    });
    let mut ours = Vec::new();
    encoder
        .begin(&info, &mut ours)
        .unwrap_or_else(|e| panic!("{e}"));
    encoder
        .encode(&decoded.events, &mut ours)
        .unwrap_or_else(|e| panic!("{e}"));
    encoder.end(&mut ours).unwrap_or_else(|e| panic!("{e}"));

    // Same events back.
    let again = decode(Format::DvNetwork, &ours, &strict());
    assert_eq!(again.result, Ok(()));
    assert_eq!(again.events, decoded.events);
    assert_eq!(again.info, decoded.info);

    // Same IOHeader: fields, and the infoNode text but for the module name.
    let header = |stream: &[u8]| {
        let length = u32::from_le_bytes(stream[..4].try_into().unwrap_or_default()) as usize;
        let header =
            size_prefixed_root_as_ioheader(&stream[..4 + length]).unwrap_or_else(|e| panic!("{e}"));
        (
            header.compression().0,
            header.file_data_position(),
            header.description().unwrap_or_default().to_string(),
        )
    };
    let (theirs_compression, theirs_position, theirs_xml) = header(&capture);
    assert_eq!(
        header(&ours),
        (
            theirs_compression,
            theirs_position,
            theirs_xml.replace(">dv-processing<", ">inflor<"),
        )
    );
    assert_eq!((theirs_compression, theirs_position), (1, -1));

    // Same packet framing, and byte-identical flatbuffers once decompressed.
    let (their_packets, _) = packet_offsets(&capture);
    let (our_packets, end) = packet_offsets(&ours);
    assert_eq!((our_packets.len(), end), (their_packets.len(), ours.len()));
    let body = |stream: &[u8], at: usize| {
        let size = i32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap_or_default());
        let compressed = &stream[at + 8..at + 8 + size as usize];
        let mut raw = Vec::new();
        std::io::Read::read_to_end(
            &mut lz4_flex::frame::FrameDecoder::new(compressed),
            &mut raw,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (stream[at..at + 4].to_vec(), compressed[..7].to_vec(), raw)
    };
    for (&theirs, &ours_at) in their_packets.iter().zip(&our_packets) {
        assert_eq!(
            body(&capture, theirs),
            body(&ours, ours_at),
            "packet at {theirs}"
        );
    }
}

#[test]
fn dv_network_probe_accepts_streams_only() {
    if !has_shared_data() {
        return;
    }
    let capture = read(&shared_data(CAPTURE));
    assert!(looks_like_dv_network(&capture));
    assert!(looks_like_dv_network(&capture[..800]));
    let header_end = 4 + u32::from_le_bytes(capture[..4].try_into().unwrap_or_default()) as usize;
    assert!(looks_like_dv_network(&capture[..header_end]));
    assert!(!looks_like_dv_network(&capture[..header_end - 1]));
    let file = read(&shared_data(DVXPLORER));
    assert!(!looks_like_dv_network(&file));
    assert!(
        !looks_like_dv_network(&file[14..]),
        "a file's IOHeader has a table position"
    );
    assert!(!looks_like_dv_network(b""));
    assert!(!looks_like_dv_network(&[0xFF; 64]));
    let mut garbage = capture[..header_end].to_vec();
    garbage[40] ^= 0x55;
    assert!(!looks_like_dv_network(&garbage));
}

// ---------------------------------------------------------------------------------------------
// Encoders

fn sensor(width: u16, height: u16) -> StreamInfo {
    StreamInfo {
        source: Some("inflor test".to_string()),
        ..StreamInfo::new(width, height, "")
    }
}

fn encode_with<E: Encoder>(
    mut encoder: E,
    info: &StreamInfo,
    batches: &[&[Event]],
) -> (E, Vec<u8>) {
    let mut out = Vec::new();
    encoder
        .begin(info, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    for batch in batches {
        encoder
            .encode(batch, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    encoder.end(&mut out).unwrap_or_else(|e| panic!("{e}"));
    (encoder, out)
}

fn events_strategy() -> impl Strategy<Value = (u16, u16, Vec<Event>)> {
    (1u16..400, 1u16..300).prop_flat_map(|(width, height)| {
        let event = (any::<i64>(), 0..width, 0..height, any::<bool>())
            .prop_map(|(t, x, y, p)| Event::new(t, x, y, p));
        (
            Just(width),
            Just(height),
            prop::collection::vec(event, 0..2500),
        )
    })
}

fn writable() -> impl Strategy<Value = Compression> {
    prop::sample::select(vec![
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::ZstdHigh,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: RngSeed::Fixed(0xAED4),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// File encoder then decoder gives the events back, in every compression and packet
    /// size, and with the FileDataTable patched in, the decoder verifies it.
    #[test]
    fn file_round_trip((width, height, events) in events_strategy(),
                       compression in writable(),
                       events_per_packet in 1usize..700,
                       cut in any::<prop::sample::Index>(),
                       data_table in any::<bool>()) {
        let options = Aedat4EncoderOptions { compression, events_per_packet, data_table };
        let split = cut.index(events.len() + 1);
        let (encoder, mut bytes) = encode_with(
            Aedat4Encoder::new(options),
            &sensor(width, height),
            &[&events[..split], &events[split..]],
        );
        if let Some(patch) = encoder.header_patch() {
            let at = patch.offset as usize;
            bytes[at..at + patch.bytes.len()].copy_from_slice(&patch.bytes);
        }
        prop_assert_eq!(encoder.header_patch().is_some(), data_table);
        let (decoded, table, found) = decode_file(&bytes);
        prop_assert_eq!(&decoded.result, &Ok(()));
        prop_assert_eq!(&decoded.events, &events);
        prop_assert_eq!(found, Some(compression));
        let packets = events.len().div_ceil(events_per_packet) as u64;
        prop_assert_eq!(table, data_table.then_some(packets));
        let info = decoded.info.unwrap_or_else(|| panic!("no info"));
        prop_assert_eq!((info.width, info.height, info.source.as_deref()), (width, height, Some("inflor test")));
    }

    /// Network encoder then decoder gives the events back, whatever the batches.
    #[test]
    fn network_round_trip((width, height, events) in events_strategy(),
                          compression in writable(),
                          events_per_packet in 1usize..700,
                          cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        points.sort_unstable();
        let mut batches: Vec<&[Event]> = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([events.len()]) {
            batches.push(&events[start..p]);
            start = p;
        }
        let options = Aedat4EncoderOptions { compression, events_per_packet, data_table: false };
        let (_, bytes) = encode_with(DvNetworkEncoder::new(options), &sensor(width, height), &batches);
        prop_assert!(looks_like_dv_network(&bytes));
        let decoded = decode(Format::DvNetwork, &bytes, &strict());
        prop_assert_eq!(&decoded.result, &Ok(()));
        prop_assert_eq!(&decoded.events, &events);
    }
}

#[test]
fn write_file_patches_the_data_table_position() {
    let events = fixture_events();
    let directory = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = directory.path().join("out.aedat4");
    let options = Aedat4EncoderOptions {
        events_per_packet: 300,
        ..Aedat4EncoderOptions::default()
    };
    inflor::format::aedat4::write_file(&path, &sensor(64, 48), &events, &options)
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = read(&path);
    let length = i32::from_le_bytes(bytes[14..18].try_into().unwrap_or_default()) as usize;
    let header =
        size_prefixed_root_as_ioheader(&bytes[14..18 + length]).unwrap_or_else(|e| panic!("{e}"));
    let position = header.file_data_position();
    assert!(
        position > 18 && (position as usize) < bytes.len(),
        "{position}"
    );
    let (decoded, table, _) = decode_file(&bytes);
    assert_eq!(decoded.result, Ok(()));
    assert_eq!(decoded.events, events);
    assert_eq!(table, Some(7));
}

#[test]
fn encoders_reject_what_the_format_cannot_hold() {
    let mut out = Vec::new();
    let mut encoder = Aedat4Encoder::new(Aedat4EncoderOptions::default());
    assert_eq!(encoder.begin(&sensor(0, 10), &mut out), Ok(()));
    assert!(
        encoder
            .encode(&[Event::new(0, 0, 0, true)], &mut out)
            .is_err()
    );
    assert_eq!(encoder.begin(&sensor(40_000, 10), &mut out), Ok(()));
    assert_eq!(
        encoder.encode(&[Event::new(0, 32_767, 0, true)], &mut out),
        Ok(())
    );
    assert!(matches!(
        encoder.encode(&[Event::new(0, 32_768, 0, true)], &mut out),
        Err(inflor::format::EncodeError::Unrepresentable { index: 1, .. })
    ));
    let mut encoder = Aedat4Encoder::new(Aedat4EncoderOptions {
        compression: Compression::Lz4High,
        ..Aedat4EncoderOptions::default()
    });
    assert!(encoder.begin(&sensor(10, 10), &mut out).is_err());
    // A packet size of 0 is clamped to 1.
    let events = [Event::new(0, 1, 1, true), Event::new(1, 2, 2, false)];
    let (_, bytes) = encode_with(
        Aedat4Encoder::new(Aedat4EncoderOptions {
            events_per_packet: 0,
            ..Aedat4EncoderOptions::default()
        }),
        &sensor(10, 10),
        &[&events],
    );
    assert_eq!(decode(Format::Aedat4, &bytes, &strict()).events, events);
    let mut encoder = DvNetworkEncoder::new(Aedat4EncoderOptions::default());
    assert!(
        encoder.encode(&[], &mut out).is_err(),
        "encode before begin"
    );
    assert_eq!(encoder.begin(&sensor(10, 10), &mut out), Ok(()));
    let outside = [Event::new(0, 1, 1, true), Event::new(5, 10, 3, false)];
    assert!(matches!(
        encoder.encode(&outside, &mut out),
        Err(inflor::format::EncodeError::Unrepresentable { index: 1, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Hand-built inputs: malformed files, bombs, lenient mode

/// The magic line (files) and IOHeader of an encoder-written stream on a 346x260 sensor.
fn header(format: Format, compression: Compression) -> Vec<u8> {
    let options = Aedat4EncoderOptions {
        compression,
        ..Aedat4EncoderOptions::default()
    };
    let info = sensor(346, 260);
    let mut out = Vec::new();
    let begun = match format {
        Format::DvNetwork => DvNetworkEncoder::new(options).begin(&info, &mut out),
        _ => Aedat4Encoder::new(options).begin(&info, &mut out),
    };
    begun.unwrap_or_else(|e| panic!("{e}"));
    out
}

/// An IOHeader (size-prefixed) with a hand-written infoNode and table position.
fn custom_header(xml: &str, compression: i32, data_table_position: i64) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    fbb.force_defaults(true);
    let description = fbb.create_string(xml);
    let root = Ioheader::create(
        &mut fbb,
        &IoheaderArgs {
            compression: FbCompression(compression),
            file_data_position: data_table_position,
            description: Some(description),
        },
    );
    fbb.finish_size_prefixed(root, Some("IOHE"));
    fbb.finished_data().to_vec()
}

/// A size-prefixed EVTS flatbuffer holding raw (t, x, y, polarity byte) events.
fn event_buffer(events: &[(i64, i16, i16, u8)]) -> Vec<u8> {
    let raw: Vec<FbEvent> = events
        .iter()
        .map(|&(t, x, y, p)| {
            let mut event = FbEvent::new(t, x, y, false);
            event.0[12] = p;
            event
        })
        .collect();
    let mut fbb = FlatBufferBuilder::new();
    let elements = fbb.create_vector(&raw);
    let root = EventPacket::create(
        &mut fbb,
        &EventPacketArgs {
            elements: Some(elements),
        },
    );
    fbb.finish_size_prefixed(root, Some("EVTS"));
    fbb.finished_data().to_vec()
}

/// A size-prefixed IMUS flatbuffer holding `samples` IMU samples.
fn imu_buffer(samples: i64) -> Vec<u8> {
    use aedat::imus_generated::{Imu, ImuArgs, ImuPacket, ImuPacketArgs};
    let mut fbb = FlatBufferBuilder::new();
    let imus: Vec<_> = (0..samples)
        .map(|i| {
            Imu::create(
                &mut fbb,
                &ImuArgs {
                    t: i,
                    temperature: 20.0,
                    ..ImuArgs::default()
                },
            )
        })
        .collect();
    let elements = fbb.create_vector(&imus);
    let root = ImuPacket::create(
        &mut fbb,
        &ImuPacketArgs {
            elements: Some(elements),
        },
    );
    fbb.finish_size_prefixed(root, Some("IMUS"));
    fbb.finished_data().to_vec()
}

fn compress(compression: Compression, raw: &[u8]) -> Vec<u8> {
    match compression {
        Compression::None => raw.to_vec(),
        Compression::Lz4 | Compression::Lz4High => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            std::io::Write::write_all(&mut encoder, raw).unwrap_or_else(|e| panic!("{e}"));
            encoder.finish().unwrap_or_else(|e| panic!("{e}"))
        }
        Compression::Zstd | Compression::ZstdHigh => {
            zstd::bulk::compress(raw, 3).unwrap_or_else(|e| panic!("{e}"))
        }
    }
}

fn packet(stream_id: i32, body: &[u8]) -> Vec<u8> {
    let mut out = stream_id.to_le_bytes().to_vec();
    out.extend_from_slice(&(body.len() as i32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn good_events() -> Vec<(i64, i16, i16, u8)> {
    (0..50)
        .map(|i| {
            (
                i * 3,
                (i * 7 % 346) as i16,
                (i * 5 % 260) as i16,
                (i % 2) as u8,
            )
        })
        .collect()
}

fn good_packet(compression: Compression) -> Vec<u8> {
    packet(0, &compress(compression, &event_buffer(&good_events())))
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Info node declaring stream 0 (EVTS, 346x260) and stream 5 of type `kind`.
fn two_stream_xml(kind: &str) -> String {
    format!(
        "<dv version=\"2.0\"><node name=\"outInfo\" path=\"/outInfo/\">\
         <node name=\"0\"><attr key=\"typeIdentifier\" type=\"string\">EVTS</attr>\
         <node name=\"info\"><attr key=\"sizeX\" type=\"int\">346</attr>\
         <attr key=\"sizeY\" type=\"int\">260</attr></node></node>\
         <node name=\"5\"><attr key=\"typeIdentifier\" type=\"string\">{kind}</attr></node>\
         </node></dv>"
    )
}

type Expect = fn(&DecodeErrorKind) -> bool;

/// An uncompressed file of 60 events with its FileDataTable, and where the table starts.
fn tabled_file(events_per_packet: usize) -> (Vec<u8>, usize) {
    let mut bytes = Vec::new();
    let mut encoder = Aedat4Encoder::new(Aedat4EncoderOptions {
        events_per_packet,
        data_table: true,
        compression: Compression::None,
    });
    encoder
        .begin(&sensor(346, 260), &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<Event> = (0..60).map(|i| Event::new(i, 1, 1, true)).collect();
    encoder
        .encode(&events, &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    encoder.end(&mut bytes).unwrap_or_else(|e| panic!("{e}"));
    let patch = encoder.header_patch().unwrap_or_else(|| panic!("no patch"));
    let at = patch.offset as usize;
    bytes[at..at + patch.bytes.len()].copy_from_slice(&patch.bytes);
    // The table is the last thing written; its offset is in the patched header.
    let table_at = bytes.len() - table_len(&bytes);
    (bytes, table_at)
}

/// Length of the trailing FileDataTable of a file whose header points at it.
fn table_len(bytes: &[u8]) -> usize {
    let length = i32::from_le_bytes(bytes[14..18].try_into().unwrap_or_default()) as usize;
    let header =
        size_prefixed_root_as_ioheader(&bytes[14..18 + length]).unwrap_or_else(|e| panic!("{e}"));
    bytes.len() - header.file_data_position() as usize
}

/// Every malformed input: name, format, bytes, the error strict decoding must give.
fn malformed_cases() -> Vec<(&'static str, Format, Vec<u8>, Expect)> {
    let file = header(Format::Aedat4, Compression::Lz4);
    let plain = header(Format::Aedat4, Compression::None);
    let stream = header(Format::DvNetwork, Compression::Lz4);
    let good = good_packet(Compression::Lz4);
    let mut bad_polarity = good_events();
    bad_polarity[7].3 = 2;
    let mut out_of_range = good_events();
    out_of_range[9].1 = 346;
    let mut negative = good_events();
    negative[3].2 = -4;
    let polarity = packet(0, &compress(Compression::Lz4, &event_buffer(&bad_polarity)));
    let garbage: Vec<u8> = (0..300u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut bad_identifier = event_buffer(&good_events());
    bad_identifier[8..12].copy_from_slice(b"IMUS");
    let mut lying_prefix = event_buffer(&good_events());
    lying_prefix[0] = lying_prefix[0].wrapping_add(16);
    let forged: [u8; 8] = [0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F];
    // A root table whose vtable offset is i32::MIN (found by fuzzing: flatbuffers 2.1.2's
    // verifier negates it, which must fail verification, not overflow).
    let with_min_soffset = |buffer: &[u8]| {
        let mut buffer = buffer.to_vec();
        let root = 4 + u32::from_le_bytes(buffer[4..8].try_into().unwrap_or_default()) as usize;
        buffer[root..root + 4].copy_from_slice(&i32::MIN.to_le_bytes());
        buffer
    };
    let min_soffset_header = with_min_soffset(&stream);
    // The same in the second IMU sample's table, which the verifier reaches through the vector.
    let min_soffset_imu = {
        let mut buffer = imu_buffer(3);
        let word = |b: &[u8], at: usize| {
            u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default()) as usize
        };
        let root = 4 + word(&buffer, 4);
        let vtable = (root as i64 - i64::from(word(&buffer, root) as i32)) as usize;
        let field = root + u16::from_le_bytes([buffer[vtable + 4], buffer[vtable + 5]]) as usize;
        let vector = field + word(&buffer, field);
        let element = vector + 8;
        let table = element + word(&buffer, element);
        buffer[table..table + 4].copy_from_slice(&i32::MIN.to_le_bytes());
        buffer
    };
    let min_soffset_packet = packet(0, &with_min_soffset(&event_buffer(&good_events())));
    // Two packets, but the FileDataTable of a one-packet file.
    let (tabled, _) = tabled_file(30);
    let (two_packets, table_at) = tabled_file(30);
    let (one_packet, other_table_at) = tabled_file(60);
    let wrong_table = concat(&[&two_packets[..table_at], &one_packet[other_table_at..]]);

    let t = |kind: Expect| kind;
    vec![
        (
            "bad_magic",
            Format::Aedat4,
            concat(&[b"#!AER-DAT3.1\r\n", &file[14..]]),
            t(|k| matches!(k, DecodeErrorKind::BadMagic { .. })),
        ),
        (
            "truncated_magic",
            Format::Aedat4,
            file[..9].to_vec(),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::Truncated {
                        what: "AEDAT4 magic line",
                        ..
                    }
                )
            }),
        ),
        (
            "truncated_header",
            Format::Aedat4,
            file[..file.len() - 20].to_vec(),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::Truncated {
                        what: "IOHeader",
                        ..
                    }
                )
            }),
        ),
        (
            "truncated_packet",
            Format::Aedat4,
            concat(&[&file, &good, &good[..good.len() - 3]]),
            t(|k| matches!(k, DecodeErrorKind::Truncated { what: "packet", .. })),
        ),
        (
            "truncated_packet_header",
            Format::Aedat4,
            concat(&[&file, &good[..5]]),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::Truncated {
                        what: "packet header",
                        expected: 8,
                        found: 5
                    }
                )
            }),
        ),
        (
            "forged_packet_size",
            Format::Aedat4,
            concat(&[&file, &forged]),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::TooLarge {
                        what: "packet",
                        claimed: 0x7FFF_FFFF,
                        ..
                    }
                )
            }),
        ),
        (
            "negative_packet_size",
            Format::Aedat4,
            concat(&[&file, &[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]]),
            t(|k| matches!(k, DecodeErrorKind::Unexpected { .. })),
        ),
        (
            "forged_header_length",
            Format::Aedat4,
            concat(&[&file[..14], &[0xFF, 0xFF, 0xFF, 0x7F]]),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::TooLarge {
                        what: "IOHeader",
                        ..
                    }
                )
            }),
        ),
        (
            "polarity_2",
            Format::Aedat4,
            concat(&[&file, &good, &polarity]),
            t(|k| matches!(k, DecodeErrorKind::BadPolarity(2))),
        ),
        (
            "x_out_of_range",
            Format::Aedat4,
            concat(&[
                &file,
                &packet(0, &compress(Compression::Lz4, &event_buffer(&out_of_range))),
            ]),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::OutOfRange {
                        x: 346,
                        width: 346,
                        ..
                    }
                )
            }),
        ),
        (
            "negative_y",
            Format::Aedat4,
            concat(&[
                &file,
                &packet(0, &compress(Compression::Lz4, &event_buffer(&negative))),
            ]),
            t(|k| matches!(k, DecodeErrorKind::OutOfRange { y: -4, .. })),
        ),
        (
            "undeclared_stream",
            Format::Aedat4,
            concat(&[
                &file,
                &packet(
                    7,
                    &compress(Compression::Lz4, &event_buffer(&good_events())),
                ),
            ]),
            t(|k| matches!(k, DecodeErrorKind::UnknownStreamType(m) if m.contains("stream 7"))),
        ),
        (
            "unknown_stream_type",
            Format::Aedat4,
            concat(&[
                b"#!AER-DAT4.0\r\n",
                &custom_header(&two_stream_xml("POSE"), 0, -1),
                &packet(5, &event_buffer(&good_events())),
            ]),
            t(|k| matches!(k, DecodeErrorKind::UnknownStreamType(m) if m.contains("POSE"))),
        ),
        (
            "flatbuffer_garbage",
            Format::Aedat4,
            concat(&[&plain, &packet(0, &garbage)]),
            t(|k| matches!(k, DecodeErrorKind::Flatbuffer { .. })),
        ),
        (
            "min_soffset_imu",
            Format::Aedat4,
            concat(&[
                b"#!AER-DAT4.0\r\n",
                &custom_header(&two_stream_xml("IMUS"), 0, -1),
                &packet(5, &imu_buffer(2)),
                &packet(5, &min_soffset_imu),
            ]),
            t(
                |k| matches!(k, DecodeErrorKind::Flatbuffer { message, .. } if message.contains("-2^31")),
            ),
        ),
        (
            "min_soffset_packet",
            Format::Aedat4,
            concat(&[&plain, &min_soffset_packet]),
            t(
                |k| matches!(k, DecodeErrorKind::Flatbuffer { message, .. } if message.contains("-2^31")),
            ),
        ),
        (
            "wrong_identifier",
            Format::Aedat4,
            concat(&[&plain, &packet(0, &bad_identifier)]),
            t(
                |k| matches!(k, DecodeErrorKind::Flatbuffer { message, .. } if message.contains("identifier")),
            ),
        ),
        (
            "lying_size_prefix",
            Format::Aedat4,
            concat(&[&plain, &packet(0, &lying_prefix)]),
            t(
                |k| matches!(k, DecodeErrorKind::Flatbuffer { message, .. } if message.contains("size prefix")),
            ),
        ),
        (
            "lz4_garbage",
            Format::Aedat4,
            concat(&[&file, &packet(0, &garbage)]),
            t(|k| matches!(k, DecodeErrorKind::Decompress { codec: "LZ4", .. })),
        ),
        (
            "zstd_garbage",
            Format::Aedat4,
            concat(&[
                &header(Format::Aedat4, Compression::Zstd),
                &packet(0, &garbage),
            ]),
            t(|k| matches!(k, DecodeErrorKind::Decompress { codec: "zstd", .. })),
        ),
        (
            "bad_compression",
            Format::Aedat4,
            concat(&[
                b"#!AER-DAT4.0\r\n",
                &custom_header(&two_stream_xml("IMUS"), 7, -1),
            ]),
            t(|k| matches!(k, DecodeErrorKind::BadHeader(m) if m.contains("compression 7"))),
        ),
        (
            "table_past_end",
            Format::Aedat4,
            concat(&[
                b"#!AER-DAT4.0\r\n",
                &custom_header(&two_stream_xml("IMUS"), 0, 100_000),
                &good_packet(Compression::None),
            ]),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::Truncated {
                        what: "packets before the FileDataTable",
                        ..
                    }
                )
            }),
        ),
        (
            "table_mismatch",
            Format::Aedat4,
            wrong_table,
            t(|k| matches!(k, DecodeErrorKind::Unexpected { .. })),
        ),
        (
            "table_truncated",
            Format::Aedat4,
            tabled[..tabled.len() - 10].to_vec(),
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::Truncated {
                        what: "FileDataTable",
                        ..
                    }
                )
            }),
        ),
        (
            "truncated_packet",
            Format::DvNetwork,
            concat(&[&stream, &good, &good[..good.len() / 2]]),
            t(|k| matches!(k, DecodeErrorKind::Truncated { what: "packet", .. })),
        ),
        (
            "forged_header_length",
            Format::DvNetwork,
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0],
            t(|k| {
                matches!(
                    k,
                    DecodeErrorKind::TooLarge {
                        what: "IOHeader",
                        claimed: 0xFFFF_FFFF,
                        ..
                    }
                )
            }),
        ),
        (
            "table_position",
            Format::DvNetwork,
            custom_header(&two_stream_xml("TRIG"), 1, 64),
            t(|k| matches!(k, DecodeErrorKind::BadHeader(m) if m.contains("network stream"))),
        ),
        (
            "min_soffset_header",
            Format::DvNetwork,
            min_soffset_header,
            t(|k| matches!(k, DecodeErrorKind::BadHeader(m) if m.contains("vtable offset -2^31"))),
        ),
        (
            "polarity_2",
            Format::DvNetwork,
            concat(&[&stream, &polarity]),
            t(|k| matches!(k, DecodeErrorKind::BadPolarity(2))),
        ),
        (
            "lz4_garbage",
            Format::DvNetwork,
            concat(&[&stream, &good, &packet(0, &garbage)]),
            t(|k| matches!(k, DecodeErrorKind::Decompress { .. })),
        ),
        (
            "garbage_header",
            Format::DvNetwork,
            concat(&[&200u32.to_le_bytes(), &garbage[..200]]),
            t(|k| matches!(k, DecodeErrorKind::BadHeader(_))),
        ),
    ]
}

fn malformed_path(format: Format, name: &str) -> std::path::PathBuf {
    match format {
        Format::DvNetwork => test_data(&format!("malformed/dv_network/{name}.bin")),
        _ => test_data(&format!("malformed/aedat4/{name}.aedat4")),
    }
}

/// Every committed malformed file is the one built here, and fails strict decoding with the
/// expected error. `INFLOR_REGENERATE_FIXTURES=1` rewrites them.
#[test]
fn malformed_inputs_fail_strict_with_the_expected_error() {
    let regenerate = std::env::var_os("INFLOR_REGENERATE_FIXTURES").is_some();
    for (name, format, bytes, expect) in malformed_cases() {
        let path = malformed_path(format, name);
        if regenerate {
            let written = path
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&path, &bytes));
            written.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        assert_eq!(read(&path), bytes, "{} is stale", path.display());
        let decoded = decode(format, &bytes, &strict());
        match &decoded.result {
            Err(error) if error.format == format && expect(&error.kind) => {}
            other => panic!("{format:?} {name}: {other:?}"),
        }
    }
}

#[test]
fn every_committed_malformed_file_fails_strict() {
    for (folder, format) in [
        ("aedat4", Format::Aedat4),
        ("dv_network", Format::DvNetwork),
    ] {
        let directory = test_data(&format!("malformed/{folder}"));
        let entries = std::fs::read_dir(&directory).unwrap_or_else(|e| panic!("{e}"));
        let mut count = 0;
        for entry in entries.flatten() {
            let decoded = decode(format, &read(&entry.path()), &strict());
            assert!(decoded.result.is_err(), "{}", entry.path().display());
            count += 1;
        }
        assert!(count >= 5, "{folder}: {count} files");
    }
}

#[test]
fn lenient_mode_skips_and_counts_bad_records() {
    let file = header(Format::Aedat4, Compression::Lz4);
    let good = good_packet(Compression::Lz4);
    let mut events = good_events();
    events[7].3 = 2; // bad polarity
    events[9].1 = -1; // negative x
    let mixed = packet(0, &compress(Compression::Lz4, &event_buffer(&events)));
    let garbage = packet(0, b"definitely not an LZ4 frame");
    let undeclared = packet(
        9,
        &compress(Compression::Lz4, &event_buffer(&good_events())),
    );
    let input = concat(&[&file, &good, &mixed, &garbage, &undeclared, &good]);

    let decoded = decode(Format::Aedat4, &input, &lenient());
    assert_eq!(decoded.result, Ok(()));
    let valid = |e: &&(i64, i16, i16, u8)| e.3 <= 1 && e.1 >= 0;
    let to_event = |&(t, x, y, p): &(i64, i16, i16, u8)| Event::new(t, x as u16, y as u16, p == 1);
    let want: Vec<Event> = [good_events(), events.clone(), good_events()]
        .iter()
        .flat_map(|packet| {
            packet
                .iter()
                .filter(valid)
                .map(to_event)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(decoded.events, want);
    assert_eq!(
        decoded.stats.bad_records_skipped, 4,
        "2 events, 1 packet, 1 unknown stream"
    );
    assert!(
        decoded
            .stats
            .first_bad_record
            .as_deref()
            .is_some_and(|m| m.contains("polarity byte 2"))
    );
    assert_eq!(decoded.stats.events, want.len() as u64);
    assert!(
        decoded.stats.timestamp_regressions > 0,
        "the packets restart at t = 0"
    );

    // Strict mode stops at the mixed packet, keeping only the first packet's events.
    let decoded = decode(Format::Aedat4, &input, &strict());
    assert_eq!(decoded.events.len(), 50);
    assert!(
        matches!(decoded.result, Err(DecodeError { kind: DecodeErrorKind::BadPolarity(2), offset, .. }) if offset == (file.len() + good.len()) as u64)
    );
}

/// Streams `total` zero bytes through an LZ4 frame (without holding them in memory).
fn lz4_zeros(total: usize) -> Vec<u8> {
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        std::io::Write::write_all(&mut encoder, &chunk).unwrap_or_else(|e| panic!("{e}"));
    }
    encoder.finish().unwrap_or_else(|e| panic!("{e}"))
}

fn zstd_zeros(total: usize, record_size: bool) -> Vec<u8> {
    let mut encoder =
        zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap_or_else(|e| panic!("{e}"));
    if record_size {
        encoder
            .set_pledged_src_size(Some(total as u64))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        std::io::Write::write_all(&mut encoder, &chunk).unwrap_or_else(|e| panic!("{e}"));
    }
    encoder.finish().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn decompression_bombs_stop_at_the_record_limit() {
    let limit = DecodeOptions::default().max_record_bytes;
    // LZ4 bombs are found by decoding up to the limit; zstd ones by their frame headers
    // (the declared content size, or RLE blocks), before any decoding.
    let declared =
        format!("bytes of output, more than the {limit} bytes allowed (not decompressed)");
    let exceeds = format!("output exceeds {limit} bytes");
    let bombs = [
        (Compression::Lz4, lz4_zeros(200 << 20), "LZ4", &exceeds),
        (
            Compression::Zstd,
            zstd_zeros(200 << 20, true),
            "zstd",
            &declared,
        ),
        (
            Compression::Zstd,
            zstd_zeros(200 << 20, false),
            "zstd",
            &declared,
        ),
    ];
    for (compression, body, codec, message) in bombs {
        assert!(body.len() < 1 << 20, "{codec} bomb of {} bytes", body.len());
        for format in [Format::Aedat4, Format::DvNetwork] {
            let input = concat(&[&header(format, compression), &packet(0, &body)]);
            let decoded = decode(format, &input, &strict());
            assert!(
                matches!(&decoded.result, Err(DecodeError { kind: DecodeErrorKind::Decompress { codec: c, message: m }, .. }) if *c == codec && m.ends_with(message.as_str())),
                "{codec}: {:?}",
                decoded.result
            );
        }
    }
}

#[test]
fn forged_sizes_fail_before_buffering() {
    if !has_shared_data() {
        return;
    }
    // Only the 8 packet-header bytes arrive: the decoder must refuse at once, not wait for
    // (or allocate) 2 GiB.
    let mut decoder = Aedat4Decoder::new(&strict());
    let mut events = Vec::new();
    let file = header(Format::Aedat4, Compression::Lz4);
    decoder.feed_all(&file, &mut events).unwrap();
    let error = decoder
        .feed(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F], &mut events)
        .map(|_| ());
    assert!(
        matches!(error, Err(DecodeError { kind: DecodeErrorKind::TooLarge { .. }, offset, .. }) if offset == file.len() as u64)
    );
    // The error sticks.
    assert_eq!(decoder.feed(&[], &mut events).map(|_| ()), error);
    assert_eq!(decoder.finish(&mut events), error);

    let options = DecodeOptions {
        max_record_bytes: 100,
        ..strict()
    };
    let decoded = decode(Format::DvNetwork, &read(&shared_data(CAPTURE)), &options);
    assert!(matches!(
        decoded.result,
        Err(DecodeError {
            kind: DecodeErrorKind::TooLarge {
                what: "IOHeader",
                claimed: 724,
                max: 100
            },
            offset: 0,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Chunk-split equivalence

fn split_inputs() -> Vec<(Format, Vec<u8>)> {
    let mut inputs = vec![
        (Format::DvNetwork, read(&shared_data(CAPTURE))),
        (Format::Aedat4, read(&shared_data(DVXPLORER))),
        (Format::Aedat4, read(&test_data("aedat4/dvp_zstd.aedat4"))),
        (Format::Aedat4, read(&test_data("aedat4/dvp_none.aedat4"))),
        (
            Format::Aedat4,
            read(&test_data("aedat4/dvp_bbox_lz4.aedat4")),
        ),
    ];
    inputs.extend(
        malformed_cases()
            .into_iter()
            .map(|(_, format, bytes, _)| (format, bytes)),
    );
    inputs
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![3 => Just(1usize), 3 => 1usize..64, 2 => 64usize..5000, 1 => 5000usize..200_000],
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5EED),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any chunking, and any event bound per call, gives the same events, the same outcome
    /// (error included) and the same counts as one call on the whole input, strict and
    /// lenient.
    #[test]
    fn any_chunking_decodes_like_the_whole_input(
        which in any::<prop::sample::Index>(),
        sizes in chunk_sizes(),
        lenient_mode in any::<bool>(),
        bound in prop_oneof![Just(usize::MAX), 12usize..3000],
    ) {
        if !has_shared_data() { return Ok(()); }
        let inputs = split_inputs();
        let (format, input) = &inputs[which.index(inputs.len())];
        let options = if lenient_mode { lenient() } else { strict() };
        let whole = decode(*format, input, &options);
        // Any event bound too: `decode_split` checks every call against it.
        let bounded = DecodeOptions { max_events_per_feed: bound, ..options };
        let split = decode_split(*format, input, &bounded, &sizes);
        prop_assert_eq!(split, whole);
    }
}

#[test]
fn one_byte_chunks_decode_the_real_file() {
    if !has_shared_data() {
        return;
    }
    let input = read(&shared_data(DVXPLORER));
    let whole = decode(Format::Aedat4, &input, &strict());
    assert_eq!(decode_split(Format::Aedat4, &input, &strict(), &[1]), whole);
}

// ---------------------------------------------------------------------------------------------
// Bounded output: a small compressed input that inflates to millions of events

/// A zstd packet of `n` identical in-range events (a few kilobytes for millions of events).
fn identical_events_packet(n: usize) -> Vec<u8> {
    let raw = event_buffer(&vec![(5, 1, 2, 1); n]);
    packet(0, &compress(Compression::Zstd, &raw))
}

#[test]
fn a_feed_never_returns_more_than_the_bound() {
    let body = identical_events_packet(100_000);
    for format in [Format::Aedat4, Format::DvNetwork] {
        let file = concat(&[&header(format, Compression::Zstd), &body, &body]);
        let whole = decode(format, &file, &strict());
        assert_eq!(whole.result, Ok(()));
        assert_eq!(whole.events.len(), 200_000);
        for bound in [12, 1000, 99_999, 150_000] {
            let options = DecodeOptions {
                max_events_per_feed: bound,
                ..strict()
            };
            // `decode_split` checks every call against the bound.
            let split = decode_split(format, &file, &options, &[1 << 20, 7]);
            assert_eq!(split, whole, "{format:?}, bound {bound}");
        }
    }
    // A bad event late in a packet larger than the bound fails the whole packet, strict,
    // before any of it is emitted.
    let mut events = vec![(5, 1, 2, 1); 50_000];
    events.push((6, 1, 2, 7));
    let bad = packet(0, &compress(Compression::Zstd, &event_buffer(&events)));
    let file = concat(&[&header(Format::Aedat4, Compression::Zstd), &bad]);
    let options = DecodeOptions {
        max_events_per_feed: 1000,
        ..strict()
    };
    let decoded = decode(Format::Aedat4, &file, &options);
    assert!(decoded.events.is_empty());
    assert!(matches!(
        decoded.result,
        Err(DecodeError {
            kind: DecodeErrorKind::BadPolarity(7),
            ..
        })
    ));
}

#[test]
fn lenient_mode_skips_zstd_bombs_without_decompressing_them() {
    let bomb = packet(0, &zstd_zeros(200 << 20, false));
    let good = good_packet(Compression::Zstd);
    let file = concat(&[
        &header(Format::Aedat4, Compression::Zstd),
        &bomb,
        &good,
        &bomb,
        &good,
    ]);
    let decoded = decode(Format::Aedat4, &file, &lenient());
    assert_eq!(decoded.result, Ok(()));
    assert_eq!(decoded.events.len(), 2 * good_events().len());
    assert_eq!(decoded.stats.bad_records_skipped, 2);
    let first = decoded.stats.first_bad_record.unwrap_or_default();
    assert!(first.contains("(not decompressed)"), "{first}");
}

/// `inflor inspect` on 16 zstd packets of 4 M identical events each (an 88 KB-sized file that
/// holds 64 M events, 1 GB of them decoded) runs under an address-space limit of 768 MiB and
/// counts every event: one `feed` call may not decode a chunk's packets all at once.
#[test]
fn inspect_counts_a_compressed_flood_under_a_memory_cap() {
    const PER_PACKET: usize = 4_000_000;
    const PACKETS: usize = 16;
    let body = identical_events_packet(PER_PACKET);
    let mut file = header(Format::Aedat4, Compression::Zstd);
    for _ in 0..PACKETS {
        file.extend_from_slice(&body);
    }
    assert!(file.len() < 200_000, "{} bytes", file.len());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("flood.aedat4");
    std::fs::write(&path, &file).unwrap_or_else(|e| panic!("{e}"));
    let limit_kib = 768 * 1024;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {limit_kib} && exec \"$0\" inspect --json \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_inflor"))
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let expected = (PER_PACKET * PACKETS) as u64;
    assert_eq!(report["summary"]["events"], expected);
    assert_eq!(report["summary"]["on"], expected);
    assert_eq!(report["decode"]["events"], expected);
}

#[test]
fn time_extremes_give_exact_durations_and_a_clean_rebase_error() {
    let events = [
        Event::new(i64::MIN, 1, 2, true),
        Event::new(0, 3, 4, false),
        Event::new(i64::MAX, 5, 6, true),
    ];
    let (_, bytes) = encode_with(
        Aedat4Encoder::new(Aedat4EncoderOptions::default()),
        &sensor(346, 260),
        &[&events],
    );
    assert_eq!(decode(Format::Aedat4, &bytes, &strict()).events, events);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("extremes.aedat4");
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let run = run_inflor(&["inspect".as_ref(), path.as_os_str()]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}");
    assert!(
        text.contains("duration:    18446744073709.551615 s"),
        "{text}"
    );
    let run = run_inflor(&["inspect".as_ref(), "--json".as_ref(), path.as_os_str()]);
    let report: serde_json::Value =
        serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["duration_us"], i64::MAX);
    // Rebasing on the first event cannot measure the last one in 64 bits: a clear error, no
    // wrapped timestamps and no output.
    let output = dir.path().join("rebased.aedat4");
    let run = run_inflor(&[
        "convert".as_ref(),
        path.as_os_str(),
        output.as_os_str(),
        "--rebase-time".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--rebase-time: event #1 at 0 µs"),
        "{stderr}"
    );
    assert!(!output.exists());
    // Without rebasing, the extremes are kept exactly.
    let run = run_inflor(&["convert".as_ref(), path.as_os_str(), output.as_os_str()]);
    assert!(run.status.success());
    assert_eq!(
        decode(
            Format::Aedat4,
            &std::fs::read(&output).unwrap_or_default(),
            &strict()
        )
        .events,
        events
    );
}

#[test]
fn lenient_mode_resumes_through_held_events_that_are_all_bad() {
    // A packet larger than the bound whose held-back events are all skipped (bad polarity):
    // a call that emits none of them must still count as progress.
    let mut events = vec![(5, 1, 2, 1); 20];
    events.extend(std::iter::repeat_n((6, 1, 2, 9), 80));
    events.push((7, 3, 4, 0));
    let body = packet(0, &compress(Compression::Zstd, &event_buffer(&events)));
    let file = concat(&[&header(Format::Aedat4, Compression::Zstd), &body]);
    let options = DecodeOptions {
        max_events_per_feed: 12,
        ..lenient()
    };
    let decoded = decode_split(Format::Aedat4, &file, &options, &[1, 7, 4096]);
    assert_eq!(decoded.result, Ok(()));
    assert_eq!(decoded.events.len(), 21);
    assert_eq!(decoded.stats.bad_records_skipped, 80);
    assert_eq!(decoded, decode(Format::Aedat4, &file, &lenient()));
}
