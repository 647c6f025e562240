//! Decoding throughput (events/s) per format, single thread, on the real recordings in
//! `../shared/data/` and on generated 10 M-event recordings written by inflor's own encoders.
//! Also the batch-layout experiment that justifies event batches being arrays of structs.
//!
//! Each iteration decodes a whole in-memory file into a reused `Vec<Event>` (the steady state
//! of a streaming source, which reuses its batch buffers), through `Decoder::feed_all`, so
//! with the default event bound per `feed` call. Run: `cargo bench --bench decode`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inflor::event::Event;
use inflor::format::{DecodeOptions, Format};
use inflor::testkit::{drifting_blob, encode};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

const REAL: &[(&str, Format)] = &[
    ("mnist_dvs/mnist_0_scale04_0001.aedat", Format::Aedat2),
    ("davis240c_aedat2/IMU_rotDisk.aedat", Format::Aedat2),
    ("davis346_sample.aedat4", Format::Aedat4),
    ("dvxplorer_tonic/sample.aedat4", Format::Aedat4),
    ("prophesee_evt2/evt2_sample.raw", Format::Evt2),
    ("prophesee_evt2/evt2_test_sparklers.raw", Format::Evt2),
    ("prophesee_evt3/evt3_sample.raw", Format::Evt3),
    ("ncars/NCARS_obj_004397_td.dat", Format::Dat),
    ("ncaltech101/faces_easy_0001.bin", Format::Atis),
    ("event_stream/dvs.es", Format::Es),
];

/// Decodes `input` whole into `out` (cleared first); returns the event count.
fn decode_into(
    format: Format,
    options: &DecodeOptions,
    input: &[u8],
    out: &mut Vec<Event>,
) -> usize {
    out.clear();
    let mut decoder = format.decoder(options);
    decoder.feed_all(input, out).expect("bench inputs decode");
    decoder.finish(out).expect("bench inputs decode");
    out.len()
}

fn real_files(c: &mut Criterion) {
    let options = DecodeOptions::default();
    let mut group = c.benchmark_group("decode/real");
    for &(rel, format) in REAL {
        let Ok(input) = std::fs::read(shared(rel)) else {
            eprintln!("skipping {rel}: not found");
            continue;
        };
        let n = match inflor::format::decode_bytes(format, &input, &options) {
            Ok(recording) => recording.events.len(),
            Err(e) => {
                eprintln!("skipping {rel}: {e}");
                continue;
            }
        };
        let mut out = Vec::new();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("{format:?}"), rel),
            &input,
            |b, input| b.iter(|| decode_into(format, &options, black_box(input), &mut out)),
        );
    }
    group.finish();
}

/// The batch-layout experiment: AEDAT 2.0 DVS128 words decoded into an array of structs versus
/// four parallel arrays, then consumed by a binning-style pass that reads every field.
fn batch_layout(c: &mut Criterion) {
    const N: usize = 1 << 22;
    let mut words = Vec::with_capacity(N * 8);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..N as u32 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let addr = (state as u32) & 0x7ffe | (state as u32 >> 20) & 1;
        words.extend_from_slice(&addr.to_be_bytes());
        words.extend_from_slice(&(i * 3).to_be_bytes());
    }
    #[derive(Default)]
    struct Soa {
        t: Vec<i64>,
        x: Vec<u16>,
        y: Vec<u16>,
        p: Vec<bool>,
    }
    let mut aos: Vec<Event> = Vec::with_capacity(N);
    let mut soa = Soa::default();
    let mut group = c.benchmark_group("decode/layout");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("aos decode+consume", |b| {
        b.iter(|| {
            aos.clear();
            for w in words.chunks_exact(8) {
                let a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                let t = u32::from_be_bytes([w[4], w[5], w[6], w[7]]);
                aos.push(Event::new(
                    i64::from(t),
                    ((a >> 1) & 0x7f) as u16,
                    ((a >> 8) & 0x7f) as u16,
                    a & 1 == 0,
                ));
            }
            let mut counts = [0u32; 2 * 128 * 128];
            for e in &aos {
                counts[usize::from(e.polarity) * 16384
                    + usize::from(e.y) * 128
                    + usize::from(e.x)] += 1;
            }
            black_box((counts[5], aos.last().map(|e| e.t)))
        })
    });
    group.bench_function("soa decode+consume", |b| {
        b.iter(|| {
            soa.t.clear();
            soa.x.clear();
            soa.y.clear();
            soa.p.clear();
            for w in words.chunks_exact(8) {
                let a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
                let t = u32::from_be_bytes([w[4], w[5], w[6], w[7]]);
                soa.t.push(i64::from(t));
                soa.x.push(((a >> 1) & 0x7f) as u16);
                soa.y.push(((a >> 8) & 0x7f) as u16);
                soa.p.push(a & 1 == 0);
            }
            let mut counts = [0u32; 2 * 128 * 128];
            for i in 0..soa.t.len() {
                counts[usize::from(soa.p[i]) * 16384
                    + usize::from(soa.y[i]) * 128
                    + usize::from(soa.x[i])] += 1;
            }
            black_box((counts[5], soa.t.last().copied()))
        })
    });
    group.finish();
}

/// Events in each generated recording.
const GENERATED_EVENTS: usize = 10_000_000;

/// (format, width, height, file extension) for the generated recordings.
const GENERATED: &[(Format, u16, u16, &str)] = &[
    (Format::Aedat2, 128, 128, "aedat"),
    (Format::Aedat3, 346, 260, "aedat3"),
    (Format::Aedat4, 346, 260, "aedat4"),
    (Format::DvNetwork, 128, 128, "dvnet"),
    (Format::Evt2, 640, 480, "evt2.raw"),
    (Format::Evt3, 1280, 720, "evt3.raw"),
    (Format::Dat, 304, 240, "dat"),
    (Format::Atis, 240, 180, "bin"),
    (Format::Es, 320, 240, "es"),
];

/// Decoding the generated 10 M-event recordings. Each is also written to
/// `target/bench-data/generated.<ext>` so `scripts/bench_faery.py` reads the very same bytes.
fn generated(c: &mut Criterion) {
    let options = DecodeOptions {
        max_record_bytes: 256 << 20,
        ..DecodeOptions::default()
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("target/bench-data");
    let mut group = c.benchmark_group("decode/generated-10M");
    group.sample_size(10);
    group.throughput(Throughput::Elements(GENERATED_EVENTS as u64));
    let mut out = Vec::with_capacity(GENERATED_EVENTS);
    for &(format, width, height, ext) in GENERATED {
        let events = drifting_blob(GENERATED_EVENTS, width, height, 7);
        let info = inflor::event::StreamInfo {
            source: Some("inflor-bench".to_string()),
            ..inflor::event::StreamInfo::new(width, height, format.name())
        };
        let bytes = encode(format, &info, &events).expect("encode");
        drop(events);
        std::fs::write(dir.join(format!("generated.{ext}")), &bytes).expect("write bench data");
        let n = decode_into(format, &options, &bytes, &mut out);
        assert_eq!(n, GENERATED_EVENTS, "{format} round trip");
        group.bench_function(format!("{format:?}"), |b| {
            b.iter(|| decode_into(format, &options, black_box(&bytes), &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, real_files, generated, batch_layout);
criterion_main!(benches);
