//! Integration tests: the binner. They cover SpikingJelly's window conventions, the resize
//! against torch (committed values) and against a direct frame resize, streaming against whole
//! and against the window definitions, the per-pixel path against per-event splatting, and the
//! `.npy` round trip.

use inflor::binner::npy;
use inflor::binner::{
    FrameBinner, FrameShape, FrameSpec, Normalization, RecordingWindows, ResizeMode, SparseFrame,
    StreamBinner, StreamWindows, Window,
};
use inflor::event::Event;
// The random-walk generator shared with the other tests and benches (Python twin:
// `scripts/bench_spikingjelly_binning.py`).
use inflor::testkit::random_walk;
use proptest::prelude::*;

use crate::support::shared_data;

const MODES: [ResizeMode; 3] = [ResizeMode::Nearest, ResizeMode::Bilinear, ResizeMode::Area];

/// `(Σt, Σx, Σy, Σp)`, as the Python script prints it.
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

/// A minimal AEDAT 2.0 DVS128 reader with SpikingJelly's CIFAR10-DVS conventions, so this test
/// does not depend on the format module: x = 127 − y_raw, y = 127 − x_raw, ON = raw polarity 0.
fn read_mnist_dvs() -> Vec<Event> {
    let bytes = std::fs::read(shared_data("mnist_dvs/mnist_0_scale04_0001.aedat")).unwrap();
    let mut pos = 0;
    while bytes.get(pos) == Some(&b'#') {
        pos += bytes[pos..].iter().position(|&b| b == b'\n').unwrap() + 1;
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

fn spec(sensor: (u16, u16), out: (u16, u16), resize: ResizeMode) -> FrameSpec {
    FrameSpec {
        sensor_width: sensor.0,
        sensor_height: sensor.1,
        width: out.0,
        height: out.1,
        resize,
        normalization: Normalization::None,
    }
}

fn dense(frames: &[SparseFrame]) -> Vec<f32> {
    frames.iter().flat_map(SparseFrame::to_dense).collect()
}

/// FNV-1a over the little-endian f32 bytes, as the Python script hashes torch's output.
fn fnv1a64(values: &[f32]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for b in values.iter().flat_map(|v| v.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// `[2][H][W]` event counts at sensor resolution.
fn count_frame(events: &[Event], width: usize, height: usize) -> Vec<f32> {
    let mut frame = vec![0f32; 2 * width * height];
    for e in events {
        let (x, y) = (usize::from(e.x), usize::from(e.y));
        if x < width && y < height {
            frame[(usize::from(e.polarity) * height + y) * width + x] += 1.0;
        }
    }
    frame
}

/// torch's source index for `mode='nearest'`, written independently of the binner.
fn torch_nearest(o: usize, n_in: usize, n_out: usize) -> usize {
    match () {
        _ if n_in == n_out => o,
        _ if n_out == 2 * n_in => o / 2,
        _ => ((o as f32 * (n_in as f32 / n_out as f32)).floor() as usize).min(n_in - 1),
    }
}

/// torch's `compute_source_index_and_lambda`, `align_corners=False`, FMA build.
fn torch_linear(o: usize, n_in: usize, n_out: usize) -> (usize, usize, f32, f32) {
    if n_in == n_out {
        return (o, o, 1.0, 0.0);
    }
    let scale = n_in as f32 / n_out as f32;
    let real = scale.mul_add(o as f32 + 0.5, -0.5).max(0.0);
    let i0 = (real.floor() as usize).min(n_in - 1);
    let l1 = (real - i0 as f32).clamp(0.0, 1.0);
    (i0, if i0 + 1 < n_in { i0 + 1 } else { i0 }, 1.0 - l1, l1)
}

/// Resizes a dense `[2][H][W]` frame the way torch's CPU kernels pull each output from the input
/// (the "direct" resize the splat must equal).
fn direct_resize(
    frame: &[f32],
    from: (usize, usize),
    to: (usize, usize),
    mode: ResizeMode,
) -> Vec<f32> {
    let ((iw, ih), (ow, oh)) = (from, to);
    let at = |c: usize, y: usize, x: usize| frame[(c * ih + y) * iw + x];
    let mut out = Vec::with_capacity(2 * ow * oh);
    for c in 0..2 {
        for oy in 0..oh {
            for ox in 0..ow {
                out.push(match mode {
                    ResizeMode::Nearest => {
                        at(c, torch_nearest(oy, ih, oh), torch_nearest(ox, iw, ow))
                    }
                    ResizeMode::Area => {
                        let (y0, y1) = (oy * ih / oh, ((oy + 1) * ih).div_ceil(oh));
                        let (x0, x1) = (ox * iw / ow, ((ox + 1) * iw).div_ceil(ow));
                        let mut sum = 0f32;
                        for y in y0..y1 {
                            for x in x0..x1 {
                                sum += at(c, y, x);
                            }
                        }
                        sum / (y1 - y0) as f32 / (x1 - x0) as f32
                    }
                    ResizeMode::Bilinear => {
                        let (y0, y1, ly0, ly1) = torch_linear(oy, ih, oh);
                        let (x0, x1, lx0, lx1) = torch_linear(ox, iw, ow);
                        let (w00, w01, w10, w11) = (ly0 * lx0, ly0 * lx1, ly1 * lx0, ly1 * lx1);
                        let v = at(c, y0, x0).mul_add(w00, at(c, y0, x1) * w01);
                        let v = at(c, y1, x0).mul_add(w10, v);
                        at(c, y1, x1).mul_add(w11, v)
                    }
                });
            }
        }
    }
    out
}

fn bin_whole(spec: &FrameSpec, events: &[Event]) -> Vec<f32> {
    let mut binner = FrameBinner::new(spec).unwrap();
    binner.add(events);
    binner.finish_frame().to_dense()
}

#[test]
fn resize_matches_torch_16_to_6() {
    let events = random_walk(3000, 16, 16, 7);
    assert_eq!(checksum(&events), (6_789_270, 20_608, 21_796, 1_562));
    for (mode, expected) in [
        (ResizeMode::Nearest, &TORCH_16_TO_6_NEAREST),
        (ResizeMode::Bilinear, &TORCH_16_TO_6_BILINEAR),
        (ResizeMode::Area, &TORCH_16_TO_6_AREA),
    ] {
        let got = bin_whole(&spec((16, 16), (6, 6), mode), &events);
        let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        let want_bits: Vec<u32> = expected.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got_bits, want_bits, "{mode:?}: {got:?}");
    }
}

#[test]
fn bilinear_large_output_within_tolerance_of_torch() {
    // out_h + out_w > 128: torch switches to its separable kernel, which rounds differently.
    let events = random_walk(4000, 20, 6, 11);
    assert_eq!(checksum(&events), (12_101_098, 32_913, 10_636, 1_913));
    let got = bin_whole(&spec((20, 6), (127, 2), ResizeMode::Bilinear), &events);
    let counts = count_frame(&events, 20, 6);
    let max_count = counts.iter().copied().fold(0f32, f32::max);
    let mut differing = 0;
    for (g, t) in got.iter().zip(&TORCH_20X6_TO_127X2_BILINEAR) {
        assert!((g - t).abs() <= 4e-6 * max_count, "{g} vs torch {t}");
        differing += usize::from(g != t);
    }
    assert!(
        differing > 0,
        "torch's large-output kernel was expected to round differently"
    );
    // And it is still exactly the direct resize of the count frame.
    assert_eq!(
        got,
        direct_resize(&counts, (20, 6), (127, 2), ResizeMode::Bilinear)
    );
}

fn check_pipeline(
    events: &[Event],
    windows: RecordingWindows,
    spec: FrameSpec,
    expected: (u64, f64),
) {
    let mut binner = FrameBinner::new(&spec).unwrap();
    let frames = binner.bin_recording(events, windows).unwrap();
    assert_eq!(frames.len(), windows.bins());
    let values = dense(&frames);
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    assert_eq!(
        fnv1a64(&values),
        expected.0,
        "{:?} {windows:?}: frames differ from SpikingJelly + torch (sum {sum}, expected {})",
        spec.resize,
        expected.1
    );
}

#[test]
fn equal_count_pipeline_matches_spikingjelly_and_torch() {
    let walk = random_walk(20_000, 128, 128, 1);
    assert_eq!(checksum(&walk), (300_873_431, 1_204_539, 1_200_206, 9_971));
    let mnist = read_mnist_dvs();
    assert_eq!(
        checksum(&mnist),
        (16_402_402_820, 1_011_526, 946_367, 7_870)
    );
    let windows = RecordingWindows::EqualCount { bins: 10 };
    for (events, expected) in [
        (&walk, [WALK_NEAREST_48, WALK_BILINEAR_48, WALK_AREA_48]),
        (
            &mnist,
            [
                MNIST_DVS_NEAREST_48,
                MNIST_DVS_BILINEAR_48,
                MNIST_DVS_AREA_48,
            ],
        ),
    ] {
        for (mode, expected) in MODES.into_iter().zip(expected) {
            check_pipeline(events, windows, spec((128, 128), (48, 48), mode), expected);
        }
    }
}

#[test]
fn equal_duration_matches_spikingjelly_split_by_time() {
    let mnist = read_mnist_dvs();
    check_pipeline(
        &mnist,
        RecordingWindows::EqualDuration { bins: 10 },
        FrameSpec::native(128, 128),
        MNIST_DVS_TIME_128,
    );
}

#[test]
fn equal_count_bins_are_spikingjelly_segments() {
    // Bin i is events [i*(N/T), (i+1)*(N/T)), the last bin takes the remainder, N < T fills only
    // the last bin.
    let events = random_walk(1003, 32, 32, 3);
    let spec = FrameSpec::native(32, 32);
    let mut binner = FrameBinner::new(&spec).unwrap();
    for (n, bins) in [(1003, 10), (1000, 10), (7, 10), (0, 4), (5, 1)] {
        let events = &events[..n];
        let frames = binner
            .bin_recording(events, RecordingWindows::EqualCount { bins })
            .unwrap();
        let per = n / bins;
        for (i, frame) in frames.iter().enumerate() {
            let end = if i + 1 == bins { n } else { (i + 1) * per };
            assert_eq!(frame.to_dense(), bin_whole(&spec, &events[i * per..end]));
        }
    }
}

#[test]
fn npy_round_trip_through_a_file() {
    let events = read_mnist_dvs();
    let mut binner = FrameBinner::new(&spec((128, 128), (48, 48), ResizeMode::Area)).unwrap();
    let frames = binner
        .bin_recording(&events, RecordingWindows::EqualCount { bins: 10 })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames.npy");
    npy::write_frames(
        std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
        binner.shape(),
        &frames,
    )
    .unwrap();
    let array = npy::read_f32(std::fs::File::open(&path).unwrap(), 1 << 24).unwrap();
    assert_eq!(array.shape, [10, 2, 48, 48]);
    assert_eq!(array.values, dense(&frames));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        128 + 10 * 2 * 48 * 48 * 4
    );
}

#[test]
fn normalisation_applies_per_frame() {
    let events = read_mnist_dvs();
    for (normalization, check) in [
        (
            Normalization::Binary,
            (|v: f32| v == 1.0) as fn(f32) -> bool,
        ),
        (Normalization::MaxPerFrame, |v| v > 0.0 && v <= 1.0),
        (Normalization::Log1p, |v| v > 0.0),
    ] {
        let spec = FrameSpec {
            normalization,
            ..spec((128, 128), (48, 48), ResizeMode::Bilinear)
        };
        let frames = FrameBinner::new(&spec)
            .unwrap()
            .bin_recording(&events, RecordingWindows::EqualCount { bins: 4 })
            .unwrap();
        for frame in &frames {
            assert!(frame.nnz() > 0);
            assert!(frame.values.iter().all(|&v| check(v)), "{normalization:?}");
        }
        if normalization == Normalization::MaxPerFrame {
            assert!(frames.iter().all(|f| f.values.contains(&1.0)));
        }
    }
}

/// Runs a stream binner over `events` pushed in `batches` (split points) and finishes it.
fn stream(
    spec: &FrameSpec,
    windows: StreamWindows,
    events: &[Event],
    cuts: &[usize],
) -> Vec<Window> {
    let mut binner = StreamBinner::new(spec, windows).unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, events.len());
        binner.push(&events[start..cut], &mut out);
        start = cut;
    }
    binner.push(&events[start..], &mut out);
    binner.finish(&mut out);
    out
}

/// The windows by definition, for time-ordered events (no idle skipping).
fn reference_windows(
    spec: &FrameSpec,
    windows: StreamWindows,
    events: &[Event],
) -> Vec<(u64, bool, Vec<f32>)> {
    let Some(first) = events.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match windows {
        StreamWindows::Duration { window_us, hop_us } => {
            let (window, hop) = (window_us as i64, hop_us as i64);
            let last_t = events.last().unwrap().t;
            let mut k = 0i64;
            while first.t + k * hop <= last_t {
                let (lo, hi) = (first.t + k * hop, first.t + k * hop + window);
                let inside: Vec<Event> = events
                    .iter()
                    .filter(|e| e.t >= lo && e.t < hi)
                    .copied()
                    .collect();
                out.push((k as u64, hi <= last_t, bin_whole(spec, &inside)));
                k += 1;
            }
        }
        StreamWindows::Count {
            window_events,
            hop_events,
        } => {
            let (window, hop) = (window_events as usize, hop_events as usize);
            let mut k = 0;
            while k * hop < events.len() {
                let end = (k * hop + window).min(events.len());
                out.push((
                    k as u64,
                    k * hop + window <= events.len(),
                    bin_whole(spec, &events[k * hop..end]),
                ));
                k += 1;
            }
        }
    }
    out
}

fn windows_strategy() -> impl Strategy<Value = StreamWindows> {
    (1u64..40, 1u64..40, any::<bool>()).prop_map(|(window, hop, by_time)| {
        // Keep the overlap within the policy limit.
        let hop = hop.max(window.div_ceil(8));
        if by_time {
            StreamWindows::Duration {
                window_us: window,
                hop_us: hop,
            }
        } else {
            StreamWindows::Count {
                window_events: window,
                hop_events: hop,
            }
        }
    })
}

/// Events on a 12×10 sensor (a few off it), time steps 0..6 µs, and, if `regress`, occasional
/// jumps back in time.
fn events_strategy(regress: bool) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (0u16..13, 0u16..11, any::<bool>(), 0i64..6, 0u8..10),
        0..300,
    )
    .prop_map(move |raw| {
        let mut t = 1_000;
        raw.into_iter()
            .map(|(x, y, on, dt, roll)| {
                t += dt;
                let stamp = if regress && roll == 0 {
                    t - 3 * dt - 5
                } else {
                    t
                };
                Event::new(stamp, x, y, on)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn splat_equals_direct_resize(
        sensor in (1u16..40, 1u16..40),
        out in (1u16..40, 1u16..40),
        mode in prop::sample::select(MODES.to_vec()),
        events in prop::collection::vec((0u16..42, 0u16..42, any::<bool>()), 0..400),
    ) {
        let events: Vec<Event> = events.into_iter().map(|(x, y, p)| Event::new(0, x, y, p)).collect();
        let got = bin_whole(&spec(sensor, out, mode), &events);
        let from = (usize::from(sensor.0), usize::from(sensor.1));
        let to = (usize::from(out.0), usize::from(out.1));
        let want = direct_resize(&count_frame(&events, from.0, from.1), from, to, mode);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn per_pixel_counting_equals_splatting_each_event(
        mode in prop::sample::select(MODES.to_vec()),
        out in (1u16..30, 1u16..30),
        events in events_strategy(false),
        cut in 0usize..300,
    ) {
        let spec = spec((12, 10), out, mode);
        let mut counted = FrameBinner::new(&spec).unwrap();
        let mut splatted = FrameBinner::new(&spec).unwrap();
        let cut = cut.min(events.len());
        counted.add(&events);
        splatted.add_splatting_each_event(&events[..cut]);
        splatted.add(&events[cut..]);
        prop_assert_eq!(counted.finish_frame(), splatted.finish_frame());
        prop_assert_eq!(counted.stats(), splatted.stats());
    }

    #[test]
    fn streaming_in_batches_equals_whole(
        windows in windows_strategy(),
        mode in prop::sample::select(MODES.to_vec()),
        events in events_strategy(true),
        cuts in prop::collection::vec(0usize..300, 0..12),
    ) {
        let spec = spec((12, 10), (5, 4), mode);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let whole = stream(&spec, windows, &events, &[]);
        let split = stream(&spec, windows, &events, &cuts);
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn stream_windows_follow_their_definition(
        windows in windows_strategy(),
        mode in prop::sample::select(MODES.to_vec()),
        events in events_strategy(false),
    ) {
        let spec = spec((12, 10), (7, 3), mode);
        let got: Vec<(u64, bool, Vec<f32>)> = stream(&spec, windows, &events, &[])
            .into_iter()
            .map(|w| (w.index, w.complete, w.frame.to_dense()))
            .collect();
        prop_assert_eq!(got, reference_windows(&spec, windows, &events));
    }

    #[test]
    fn equal_duration_unsorted_matches_by_timestamp(
        events in events_strategy(true),
        bins in 1usize..12,
    ) {
        let spec = FrameSpec::native(12, 10);
        let frames = FrameBinner::new(&spec)
            .unwrap()
            .bin_recording(&events, RecordingWindows::EqualDuration { bins })
            .unwrap();
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            prop_assert!(frames.iter().all(|f| f.nnz() == 0));
            return Ok(());
        };
        let dt = (last.t - first.t).max(0) / bins as i64;
        for (i, frame) in frames.iter().enumerate() {
            let inside: Vec<Event> = events
                .iter()
                .filter(|e| {
                    let bin = if dt == 0 { bins - 1 } else { (((e.t - first.t).max(0) / dt) as usize).min(bins - 1) };
                    bin == i
                })
                .copied()
                .collect();
            prop_assert_eq!(frame.to_dense(), bin_whole(&spec, &inside));
        }
    }
}

#[test]
fn sparse_windows_on_a_large_sensor() {
    // 1280×720 with 100 events per window: frames are sparse and ascending.
    let events = random_walk(5_000, 1280, 720, 5);
    let spec = FrameSpec::native(1280, 720);
    let mut binner = StreamBinner::new(&spec, StreamWindows::tumbling_count(100)).unwrap();
    let mut out = Vec::new();
    binner.push(&events, &mut out);
    assert_eq!(out.len(), 50);
    for window in &out {
        assert_eq!(window.events, 100);
        assert!(window.frame.indices.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(window.frame.values.iter().sum::<f32>(), 100.0);
        assert!(window.frame.density() < 1e-4);
    }
    let shape: FrameShape = binner.shape();
    assert_eq!((shape.channels, shape.height, shape.width), (2, 720, 1280));
}

// Expected values, printed by `scripts/bench_spikingjelly_binning.py expected` (SpikingJelly
// 2.0.0 frames, torch.nn.functional.interpolate on CPU).
// torch 2.15.0+cu132, cpu capability AVX512
// 16x16 -> 6x6, random_walk(3000, 16, 16, seed 7), checksum (6789270, 20608, 21796, 1562)
const TORCH_16_TO_6_NEAREST: [f32; 72] = [
    21.0, 16.0, 3.0, 4.0, 1.0, 9.0, 11.0, 2.0, 0.0, 7.0, 3.0, 3.0, 1.0, 2.0, 1.0, 3.0, 9.0, 7.0,
    4.0, 4.0, 5.0, 6.0, 7.0, 2.0, 12.0, 3.0, 8.0, 7.0, 3.0, 3.0, 6.0, 3.0, 6.0, 3.0, 6.0, 4.0, 9.0,
    9.0, 9.0, 3.0, 8.0, 0.0, 8.0, 12.0, 11.0, 7.0, 9.0, 3.0, 5.0, 7.0, 2.0, 6.0, 3.0, 10.0, 5.0,
    2.0, 0.0, 4.0, 1.0, 6.0, 9.0, 7.0, 2.0, 1.0, 4.0, 7.0, 5.0, 9.0, 3.0, 6.0, 6.0, 3.0,
];
const TORCH_16_TO_6_BILINEAR: [f32; 72] = [
    15.583333, 9.5, 7.166666, 5.3888893, 4.4166665, 16.027777, 4.3333335, 6.0, 3.833335, 4.416665,
    5.0, 4.666667, 2.1111126, 3.999999, 3.972224, 3.6111128, 4.333333, 10.611107, 7.1944456,
    4.083333, 4.583334, 7.111114, 2.083333, 2.083333, 9.0, 6.5, 6.5, 8.666668, 4.25, 1.333333,
    4.3333335, 3.833334, 8.277782, 7.666668, 4.0, 1.3888894, 14.833334, 8.5, 4.0833335, 5.7777786,
    6.5, 2.7777803, 8.833333, 8.5, 8.5, 8.083331, 5.0, 6.9166656, 1.3333337, 3.0833344, 2.7777772,
    2.0000014, 5.666668, 7.083332, 8.888893, 5.083331, 1.4999989, 3.4444427, 7.583331, 3.4166663,
    11.25, 12.75, 1.9166675, 5.333332, 3.5, 5.833334, 4.61111, 10.666666, 6.5000014, 11.361112,
    4.0833344, 3.5833344,
];
const TORCH_16_TO_6_AREA: [f32; 72] = [
    14.555556, 8.416667, 3.888889, 4.3333335, 3.8333333, 9.777778, 3.8333333, 4.375, 3.75,
    5.4166665, 4.9375, 6.4166665, 3.4444444, 3.6666667, 3.888889, 4.7777777, 5.4166665, 6.777778,
    7.3333335, 4.6666665, 6.222222, 5.3333335, 2.5833333, 2.4444444, 7.5, 5.5, 6.75, 6.0833335,
    4.0, 2.0, 4.7777777, 5.5, 9.222222, 8.222222, 5.3333335, 1.8888888, 10.444445, 8.916667,
    6.888889, 7.222222, 6.3333335, 3.2222223, 8.0, 7.5625, 7.75, 6.6666665, 5.6875, 6.8333335,
    3.5555556, 3.8333333, 2.7777777, 3.7777777, 5.5833335, 7.4444447, 6.222222, 5.1666665,
    2.1111112, 3.5555556, 6.5833335, 3.7777777, 9.5, 8.25, 2.9166667, 5.25, 4.6875, 5.25, 5.888889,
    7.3333335, 5.888889, 9.777778, 5.5833335, 4.444444,
];
// 20x6 -> 127x2 bilinear, random_walk(4000, 20, 6, seed 11), checksum (12101098, 32913, 10636, 1913)
const TORCH_20X6_TO_127X2_BILINEAR: [f32; 508] = [
    23.0, 23.0, 23.0, 22.795277, 22.165354, 21.535433, 20.905512, 20.27559, 19.64567, 19.015749,
    18.385826, 17.755905, 17.125984, 16.496063, 15.866141, 15.23622, 15.393701, 16.023623,
    16.653543, 17.283464, 17.913385, 18.543306, 18.740158, 17.795277, 16.850393, 15.905512,
    14.96063, 14.015749, 13.070868, 12.271652, 11.484251, 10.69685, 9.909449, 9.122047, 8.334646,
    8.181103, 8.496063, 8.811024, 9.125984, 9.440945, 9.755905, 10.283463, 11.543308, 12.80315,
    14.062992, 15.322834, 16.582676, 17.842518, 17.862206, 17.704723, 17.547245, 17.389763,
    17.232285, 17.074802, 16.255909, 14.838586, 13.421264, 12.003942, 10.586611, 9.169289,
    8.082678, 8.555119, 9.027559, 9.5, 9.972441, 10.444881, 10.917322, 10.350395, 9.562994,
    8.775593, 7.988187, 7.2007856, 6.4133844, 6.2992134, 6.9291344, 7.5590553, 8.188976, 8.818897,
    9.448818, 10.137794, 11.240155, 12.342517, 13.444879, 14.547247, 15.649609, 16.75197,
    16.633858, 16.161417, 15.688976, 15.216536, 14.744095, 14.271654, 14.401573, 15.346455,
    16.291336, 17.236217, 18.181105, 19.125986, 19.90551, 18.645668, 17.385826, 16.125984,
    14.866135, 13.606293, 12.346451, 12.685043, 13.629925, 14.574806, 15.519688, 16.46457,
    17.40945, 17.704723, 16.917322, 16.129921, 15.34252, 14.555119, 13.767717, 12.996063,
    12.838583, 12.681103, 12.5236225, 12.366142, 12.208662, 12.051182, 12.0, 12.0, 12.0, 19.0,
    19.0, 19.0, 19.665354, 21.712599, 23.759842, 25.807087, 27.854332, 29.901575, 31.948818,
    31.07874, 30.133858, 29.188976, 28.244095, 27.299212, 26.35433, 25.507874, 24.720472,
    23.933071, 23.145668, 22.358269, 21.570866, 20.870079, 20.397638, 19.925198, 19.452755,
    18.980316, 18.507874, 18.035435, 19.019686, 20.122047, 21.224411, 22.32677, 23.429134,
    24.531494, 25.181103, 25.496063, 25.811024, 26.125984, 26.440945, 26.755905, 27.177164,
    27.964567, 28.751968, 29.53937, 30.32677, 31.114172, 31.901573, 31.72441, 31.409449, 31.094488,
    30.779528, 30.464567, 30.149607, 29.338585, 28.078743, 26.818901, 25.55906, 24.29921,
    23.039368, 21.779526, 20.519684, 19.259842, 18.0, 16.740158, 15.480316, 14.220474, 13.220474,
    12.275593, 11.330711, 10.385824, 9.440943, 8.496061, 8.22441, 8.696851, 9.1692915, 9.641732,
    10.114173, 10.586614, 11.118109, 12.06299, 13.007872, 13.952753, 14.89764, 15.842522,
    16.787403, 15.779526, 14.204723, 12.629921, 11.055119, 9.480316, 7.905514, 7.468502, 8.570864,
    9.673225, 10.775587, 11.877955, 12.980317, 14.0236225, 14.338583, 14.653543, 14.968504,
    15.283466, 15.598427, 15.913387, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0,
    16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 16.0, 19.0, 19.0, 19.0,
    18.897638, 18.582678, 18.267717, 17.952757, 17.637796, 17.322836, 17.007874, 17.767717,
    18.555119, 19.34252, 20.129921, 20.917324, 21.704725, 21.80315, 21.48819, 21.17323, 20.858269,
    20.543308, 20.228348, 19.82677, 19.19685, 18.566929, 17.937008, 17.307087, 16.677166,
    16.047245, 15.417322, 14.787401, 14.15748, 13.527559, 12.897638, 12.267717, 11.909449,
    11.751968, 11.594488, 11.437008, 11.279528, 11.122047, 10.964567, 10.807087, 10.649607,
    10.492126, 10.334646, 10.177166, 10.019686, 10.688977, 11.476378, 12.26378, 13.051181,
    13.838582, 14.625983, 14.503939, 13.559057, 12.614176, 11.669294, 10.724407, 9.779526,
    9.330711, 11.220474, 13.110237, 15.0, 16.889763, 18.779526, 20.669289, 20.480316, 19.850395,
    19.220474, 18.59055, 17.960629, 17.330708, 16.700787, 16.070866, 15.440945, 14.811024,
    14.181103, 13.551182, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0,
    13.0, 12.665356, 11.8779545, 11.090553, 10.303152, 9.515746, 8.728345, 8.0, 8.0, 8.0, 8.0, 8.0,
    8.0, 8.0, 8.456696, 9.0866165, 9.716537, 10.346458, 10.976379, 11.6063, 12.236221, 12.866142,
    13.496063, 14.125984, 14.755905, 15.385826, 16.02362, 16.968502, 17.913383, 18.858265,
    19.803146, 20.748028, 21.69291, 22.0, 22.0, 22.0, 15.0, 15.0, 15.0, 15.460629, 16.877953,
    18.295275, 19.712599, 21.129923, 22.547245, 23.964567, 23.846457, 23.688976, 23.531496,
    23.374016, 23.216536, 23.059055, 23.0, 23.0, 23.0, 23.0, 23.0, 23.0, 22.610237, 21.192915,
    19.775589, 18.358269, 16.940945, 15.523623, 14.106301, 15.019686, 16.122047, 17.224411,
    18.32677, 19.429134, 20.531494, 21.814962, 23.232285, 24.649607, 26.066929, 27.484251,
    28.901573, 30.177164, 30.964567, 31.751968, 32.53937, 33.32677, 34.114174, 34.901573,
    33.622047, 32.04724, 30.47244, 28.897638, 27.322834, 25.748035, 24.007877, 22.118114,
    20.228352, 18.338589, 16.448814, 14.5590515, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0, 13.0,
    12.480316, 11.850395, 11.220474, 10.590549, 9.9606285, 9.330708, 8.850393, 8.535433, 8.220472,
    7.905512, 7.5905514, 7.275591, 7.0590544, 7.531495, 8.003936, 8.476377, 8.94882, 9.421261,
    9.893702, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.334644, 11.1220455, 11.909447, 12.696848,
    13.484254, 14.271655, 15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 15.0, 15.456696, 16.086617,
    16.716537, 17.346458, 17.97638, 18.6063, 19.11811, 19.433071, 19.748032, 20.062992, 20.377953,
    20.692913, 20.98819, 20.515749, 20.043308, 19.570868, 19.098427, 18.625986, 18.153545, 18.0,
    18.0, 18.0,
];
// WALK: 20000 events, checksum (300873431, 1204539, 1200206, 9971)
const WALK_NEAREST_48: (u64, f64) = (0x4155dfb1a471de95, 2839.0);
const WALK_BILINEAR_48: (u64, f64) = (0x5a328ae720f9284b, 2763.833316616714);
const WALK_AREA_48: (u64, f64) = (0x249cd571bb4e658a, 2800.4166614860296);
// MNIST_DVS: 15744 events, checksum (16402402820, 1011526, 946367, 7870)
const MNIST_DVS_NEAREST_48: (u64, f64) = (0xcd39a02c0b938deb, 2209.0);
const MNIST_DVS_BILINEAR_48: (u64, f64) = (0x7a65a039a0b0aba9, 2231.0561805069447);
const MNIST_DVS_AREA_48: (u64, f64) = (0x9f916436b7bfebaa, 2235.8958302736282);
const MNIST_DVS_TIME_128: (u64, f64) = (0x147f19c73f19246b, 15744.0);
