//! Binning throughput: events into `[10, 2, 48, 48]` frames (SpikingJelly's equal-count
//! convention) with each resize mode, on ≥ 1 M events; the per-event splatting reference; and
//! causal stream windows. `scripts/bench_spikingjelly_binning.py bench` measures SpikingJelly on
//! the same events (both print the same event checksums).
//!
//! `cargo bench --bench binner` (see BENCHMARKS.md, Binning, for the figures).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inflor::binner::{
    FrameBinner, FrameSpec, Normalization, RecordingWindows, ResizeMode, SparseFrame, StreamBinner,
    StreamWindows,
};
use inflor::event::Event;
// The random-walk generator shared with the other tests and benches (Python twin:
// `scripts/bench_spikingjelly_binning.py`).
use inflor::testkit::random_walk;

/// The MNIST-DVS recording (DVS128, AEDAT 2.0), decoded by a few lines here with SpikingJelly's
/// CIFAR10-DVS conventions (x = 127 − y_raw, y = 127 − x_raw, ON = raw polarity 0).
fn mnist_dvs() -> Vec<Event> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/mnist_dvs/mnist_0_scale04_0001.aedat");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut pos = 0;
    while bytes.get(pos) == Some(&b'#') {
        pos += bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len() - pos, |n| n + 1);
    }
    bytes[pos..]
        .chunks_exact(8)
        .map(|word| {
            let addr = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            let t = u32::from_be_bytes([word[4], word[5], word[6], word[7]]);
            let (x_raw, y_raw) = ((addr >> 1) & 0x7F, (addr >> 8) & 0x7F);
            Event::new(
                i64::from(t),
                (127 - y_raw) as u16,
                (127 - x_raw) as u16,
                addr & 1 == 0,
            )
        })
        .collect()
}

/// The recording repeated `times` times back to back in time.
fn tile(events: &[Event], times: usize) -> Vec<Event> {
    let span = events.last().map_or(0, |l| l.t) - events.first().map_or(0, |f| f.t) + 1;
    (0..times as i64)
        .flat_map(|k| {
            events.iter().map(move |e| Event {
                t: e.t + k * span,
                ..*e
            })
        })
        .collect()
}

fn checksum(events: &[Event]) -> (i64, u64, u64, u64) {
    events.iter().fold((0, 0, 0, 0), |(t, x, y, p), e| {
        (
            t + e.t,
            x + u64::from(e.x),
            y + u64::from(e.y),
            p + u64::from(e.polarity),
        )
    })
}

fn spec(out: u16, resize: ResizeMode) -> FrameSpec {
    FrameSpec {
        sensor_width: 128,
        sensor_height: 128,
        width: out,
        height: out,
        resize,
        normalization: Normalization::None,
    }
}

/// `(label, output side, mode)`: no resize (SpikingJelly's own output) and 48×48 by each mode.
const CASES: [(&str, u16, ResizeMode); 4] = [
    ("none_128", 128, ResizeMode::Nearest),
    ("nearest_48", 48, ResizeMode::Nearest),
    ("bilinear_48", 48, ResizeMode::Bilinear),
    ("area_48", 48, ResizeMode::Area),
];

fn recordings(c: &mut Criterion) {
    let walk = random_walk(1_000_000, 128, 128, 1);
    let mnist = mnist_dvs();
    let tiled = tile(&mnist, 64);
    eprintln!("random walk 1M events, checksum {:?}", checksum(&walk));
    eprintln!(
        "mnist_dvs x64: {} events, checksum {:?}",
        tiled.len(),
        checksum(&tiled)
    );
    let windows = RecordingWindows::EqualCount { bins: 10 };
    for (name, events) in [
        ("random_walk_1M", &walk),
        ("mnist_dvs_x64", &tiled),
        ("mnist_dvs_single", &mnist),
    ] {
        let mut group = c.benchmark_group(format!("bin_recording/{name}"));
        group.throughput(Throughput::Elements(events.len() as u64));
        for (label, out, mode) in CASES {
            let mut binner = FrameBinner::new(&spec(out, mode)).expect("valid spec");
            let mut frames: Vec<SparseFrame> = Vec::new();
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| {
                    binner
                        .bin_recording_into(black_box(events), windows, &mut frames)
                        .expect("valid windows");
                    black_box(&frames);
                });
            });
        }
        group.finish();
    }
}

/// Splatting every event through the table versus counting per pixel and splatting once per
/// window (what `bin_recording` does); same frames.
fn strategies(c: &mut Criterion) {
    let walk = random_walk(1_000_000, 128, 128, 1);
    let mut group = c.benchmark_group("strategy/random_walk_1M");
    group.throughput(Throughput::Elements(walk.len() as u64));
    for (label, out, mode) in &CASES[1..] {
        let mut binner = FrameBinner::new(&spec(*out, *mode)).expect("valid spec");
        let mut frame = SparseFrame::empty(binner.shape());
        group.bench_function(BenchmarkId::new("per_event_splat", label), |b| {
            b.iter(|| {
                for chunk in walk.chunks(walk.len() / 10) {
                    binner.add_splatting_each_event(black_box(chunk));
                    binner.finish_frame_into(&mut frame);
                }
                black_box(&frame);
            });
        });
        group.bench_function(BenchmarkId::new("per_pixel_count", label), |b| {
            b.iter(|| {
                for chunk in walk.chunks(walk.len() / 10) {
                    binner.add(black_box(chunk));
                    binner.finish_frame_into(&mut frame);
                }
                black_box(&frame);
            });
        });
    }
    group.finish();
}

/// Causal windows over a live stream, pushed in 4096-event batches.
fn streams(c: &mut Criterion) {
    let walk = random_walk(1_000_000, 128, 128, 1);
    let hd = random_walk(1_000_000, 1280, 720, 2);
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Elements(walk.len() as u64));
    let cases = [
        (
            "tumbling_10ms_area_48",
            spec(48, ResizeMode::Area),
            StreamWindows::tumbling_duration(10_000),
            &walk,
        ),
        (
            "sliding_50ms_hop_10ms_area_48",
            spec(48, ResizeMode::Area),
            StreamWindows::Duration {
                window_us: 50_000,
                hop_us: 10_000,
            },
            &walk,
        ),
        (
            "tumbling_5000_events_bilinear_48",
            spec(48, ResizeMode::Bilinear),
            StreamWindows::tumbling_count(5_000),
            &walk,
        ),
        (
            "hd_1280x720_native_tumbling_1ms",
            FrameSpec::native(1280, 720),
            StreamWindows::tumbling_duration(1_000),
            &hd,
        ),
    ];
    for (label, spec, windows, events) in cases {
        let mut binner = StreamBinner::new(&spec, windows).expect("valid policy");
        let mut out = Vec::new();
        group.bench_function(label, |b| {
            b.iter(|| {
                for batch in events.chunks(4096) {
                    binner.push(black_box(batch), &mut out);
                    out.clear();
                }
                binner.finish(&mut out);
                out.clear();
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = recordings, strategies, streams
}
criterion_main!(benches);
