//! Integration tests: datasets and the DVS emulator. Split rules on synthetic file names
//! (CIFAR10-DVS folders, flat folder, generic labels, list files), the emulator's physics
//! (static scenes, steps, threshold scaling, noise rates), determinism across thread counts,
//! AEDAT 2.0 round trips, `dataset info` with a corrupt file, and the `synth` CLI.

use std::path::Path;
use std::process::Command;

use inflor::dataset::generate::{GenerateConfig, LabelledImage, generate};
use inflor::dataset::images::{GrayImage, load_digits_csv, load_image};
use inflor::dataset::info::report;
use inflor::dataset::synth::{
    Emulator, PixelParams, SENSOR_HEIGHT, SENSOR_WIDTH, SceneParams, Sensor, SynthParams,
    log_intensity, recording_rng, simulate,
};
use inflor::dataset::{Dataset, Layout, Split, SplitRule, SplitSpec};
use inflor::event::Event;
use inflor::format::{DecodeOptions, read_file};

use crate::support::{shared_data_or_skip, test_data};

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

fn spec(s: &str) -> SplitSpec {
    s.parse().unwrap()
}

/// `cifar10_<class>_0` … `_149` for three classes, in class folders.
fn cifar_folders(root: &Path) {
    for class in ["airplane", "bird", "cat"] {
        for i in 0..150 {
            touch(&root.join(class).join(format!("cifar10_{class}_{i}.aedat")));
        }
    }
}

fn test_indices(ds: &Dataset, label: usize) -> Vec<u64> {
    let mut v: Vec<u64> = ds
        .samples
        .iter()
        .filter(|s| s.label == label && s.split == Split::Test)
        .map(|s| s.index.unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn cifar10dvs_folders_default_and_ratio_splits() {
    let dir = tempfile::tempdir().unwrap();
    cifar_folders(dir.path());
    touch(&dir.path().join("README.txt")); // not a recording: root files are ignored

    let ds = Dataset::open(dir.path(), &spec("auto")).unwrap();
    assert_eq!(ds.layout, Layout::Cifar10DvsFolders);
    assert_eq!(
        ds.classes.len(),
        10,
        "canonical classes even when some are missing"
    );
    assert_eq!(ds.split, SplitRule::TestBelow(100));
    assert_eq!(ds.samples.len(), 450);
    for label in [0, 2, 3] {
        assert_eq!(ds.count(label, Split::Test), 100);
        assert_eq!(ds.count(label, Split::Train), 50);
        assert_eq!(test_indices(&ds, label), (0..100).collect::<Vec<_>>());
    }
    assert_eq!(ds.count(1, Split::Train) + ds.count(1, Split::Test), 0);

    // SpikingJelly's split_to_train_test_set(0.9): ceil(150 * 0.9) = 135 train per class,
    // in string order; the test set (from Python's sorted()) is below.
    let ds = Dataset::open(dir.path(), &spec("ratio:0.9")).unwrap();
    let expected: Vec<u64> = [9].into_iter().chain(86..100).collect();
    for label in [0, 2, 3] {
        assert_eq!(ds.count(label, Split::Train), 135);
        assert_eq!(test_indices(&ds, label), expected);
    }
}

#[test]
fn cifar10dvs_flat_folder_gives_the_same_dataset() {
    let folders = tempfile::tempdir().unwrap();
    cifar_folders(folders.path());
    let flat = tempfile::tempdir().unwrap();
    for class in ["airplane", "bird", "cat"] {
        for i in 0..150 {
            touch(&flat.path().join(format!("cifar10_{class}_{i}.aedat")));
        }
    }
    touch(&flat.path().join("notes.txt"));
    let a = Dataset::open(folders.path(), &spec("default")).unwrap();
    let b = Dataset::open(flat.path(), &spec("default")).unwrap();
    assert_eq!(b.layout, Layout::Cifar10DvsFlat);
    assert_eq!(b.samples.len(), 450);
    let key = |d: &Dataset| -> Vec<(usize, Option<u64>, Split)> {
        d.samples
            .iter()
            .map(|s| (s.label, s.index, s.split))
            .collect()
    };
    assert_eq!(key(&a), key(&b));
}

#[test]
fn generic_class_folders_use_sorted_names() {
    let dir = tempfile::tempdir().unwrap();
    for (class, n) in [("zebra", 3), ("ant", 2)] {
        for i in 0..n {
            touch(&dir.path().join(class).join(format!("rec{i}.raw")));
        }
    }
    touch(&dir.path().join(".hidden").join("x.raw"));
    let ds = Dataset::open(dir.path(), &spec("auto")).unwrap();
    assert_eq!(ds.layout, Layout::ClassFolders);
    assert_eq!(ds.classes, vec!["ant", "zebra"]);
    // No _<n> numbers, so auto falls back to ratio:0.9 (ceil(2*0.9) = 2, ceil(3*0.9) = 3).
    assert_eq!(ds.split, SplitRule::Ratio(0.9));
    assert_eq!(ds.count(0, Split::Train), 2);
    assert_eq!(ds.count(1, Split::Train), 3);
    let err = Dataset::open(dir.path(), &spec("default")).unwrap_err();
    assert!(err.to_string().contains("ant/rec0.raw"), "{err}");
}

#[test]
fn list_file_split_and_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        touch(&dir.path().join("a").join(format!("x_a_{i}.aedat")));
        touch(&dir.path().join("b").join(format!("x_b_{i}.aedat")));
    }
    let list = dir.path().join("my-split.txt");
    let mut text = String::from("# a comment\n\n");
    for i in 0..3 {
        let split = if i == 2 { "test" } else { "train" };
        text.push_str(&format!(
            "{split} a/x_a_{i}.aedat\n{split}\tb/x_b_{i}.aedat\n"
        ));
    }
    std::fs::write(&list, &text).unwrap();
    let ds = Dataset::open(dir.path(), &spec(&format!("list:{}", list.display()))).unwrap();
    assert_eq!(test_indices(&ds, 0), vec![2]);
    assert_eq!(test_indices(&ds, 1), vec![2]);

    // One unknown entry, one recording left out.
    let bad = text.replace("b/x_b_0.aedat", "b/x_b_7.aedat");
    std::fs::write(&list, bad).unwrap();
    let msg = Dataset::open(dir.path(), &spec(&format!("list:{}", list.display())))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2 problem(s)"), "{msg}");
    assert!(
        msg.contains("line 4") && msg.contains("b/x_b_7.aedat"),
        "{msg}"
    );
    assert!(
        msg.contains("not listed") && msg.contains("b/x_b_0.aedat"),
        "{msg}"
    );

    // `auto` picks up split.txt in the root.
    std::fs::write(dir.path().join("split.txt"), &text).unwrap();
    let ds = Dataset::open(dir.path(), &spec("auto")).unwrap();
    assert!(matches!(ds.split, SplitRule::List(_)));
    assert_eq!(ds.split_samples(Split::Test).count(), 2);
}

/// A bright disc on black, `size`×`size`.
fn disc(size: usize) -> GrayImage {
    let c = (size as f32 - 1.0) / 2.0;
    let r = size as f32 * 0.35;
    let pixels = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f32, (i / size) as f32);
            if ((x - c).powi(2) + (y - c).powi(2)).sqrt() < r {
                0.9
            } else {
                0.1
            }
        })
        .collect();
    GrayImage::new(size, size, pixels).unwrap()
}

/// Short recordings, for fast tests.
fn quick_params() -> SynthParams {
    SynthParams {
        pixel: PixelParams {
            shot_noise_hz: 1.0,
            ..PixelParams::default()
        },
        scene: SceneParams {
            image_size: 24.0,
            duration_ms: 120.0,
            loop_ms: 60.0,
            render_hz: 500.0,
            ..SceneParams::default()
        },
    }
}

fn images(n: usize) -> Vec<LabelledImage> {
    (0..n)
        .map(|i| LabelledImage {
            image: disc(6 + i % 5),
            label: i % 3,
        })
        .collect()
}

fn config(out: &Path, params: SynthParams) -> GenerateConfig {
    GenerateConfig {
        out: out.to_path_buf(),
        classes: vec!["alpha".into(), "beta".into(), "gamma".into()],
        prefix: "t".into(),
        test_per_class: 1,
        seed: 42,
        params,
        source: "test".into(),
    }
}

fn run_in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Every file under `root` except the provenance record (which names the output folder), as
/// (relative path, bytes), sorted.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                if rel != "synth.json" {
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn emulated_dataset_is_byte_identical_across_runs_and_thread_counts() {
    let inputs = images(7);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut trees = Vec::new();
    for (dir, threads) in dirs.iter().zip([1, 3, 3]) {
        let out = dir.path().join("ds");
        let cfg = config(&out, quick_params());
        let summary = run_in_pool(threads, || generate(&inputs, &cfg, &|| {})).unwrap();
        assert_eq!(summary.recordings, 7);
        assert!(summary.total_events > 0);
        assert!(out.join("synth.json").is_file());
        trees.push(tree(&out));
    }
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(trees[0].len(), 7 + 1, "7 recordings and split.txt");
    for other in &trees[1..] {
        assert_eq!(names(&trees[0]), names(other));
        for ((name, a), (_, b)) in trees[0].iter().zip(other) {
            // Not assert_eq!: a failure would print megabytes.
            assert!(a == b, "{name} differs");
        }
    }
    // A different seed changes the noise.
    let other = dirs[0].path().join("other");
    let mut cfg = config(&other, quick_params());
    cfg.seed = 43;
    generate(&inputs, &cfg, &|| {}).unwrap();
    let a = std::fs::read(dirs[0].path().join("ds/alpha/t_alpha_0.aedat")).unwrap();
    let b = std::fs::read(other.join("alpha/t_alpha_0.aedat")).unwrap();
    assert!(a != b, "the seed must matter");
}

#[test]
fn written_files_decode_back_to_the_emulated_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let inputs = images(4);
    let cfg = config(&out, quick_params());
    generate(&inputs, &cfg, &|| {}).unwrap();
    let sensor = Sensor::new(SENSOR_WIDTH, SENSOR_HEIGHT, &cfg.params.pixel, cfg.seed);
    let names = [
        "alpha/t_alpha_0",
        "beta/t_beta_0",
        "gamma/t_gamma_0",
        "alpha/t_alpha_1",
    ];
    for (i, name) in names.iter().enumerate() {
        let expected = simulate(
            &inputs[i].image,
            &cfg.params,
            &sensor,
            &mut recording_rng(cfg.seed, i as u64),
        );
        let rec = read_file(
            &out.join(format!("{name}.aedat")),
            None,
            &DecodeOptions::default(),
        )
        .unwrap();
        assert_eq!(rec.info.width, 128);
        assert_eq!(rec.info.height, 128);
        assert!(!expected.events.is_empty());
        assert_eq!(rec.events, expected.events, "{name}");
    }
    // The synth output is a dataset like CIFAR10-DVS: split.txt gives 1 test per class.
    let ds = Dataset::open(&out, &spec("auto")).unwrap();
    assert_eq!(ds.split_samples(Split::Test).count(), 3);
    let by_rule = Dataset::open(&out, &spec("test-below:1")).unwrap();
    let splits = |d: &Dataset| d.samples.iter().map(|s| s.split).collect::<Vec<_>>();
    assert_eq!(splits(&ds), splits(&by_rule));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

    /// Any emulated recording survives the AEDAT 2.0 encoder and decoder unchanged.
    #[test]
    fn emulated_recordings_round_trip_through_aedat2(
        pixels in proptest::collection::vec(0.0f32..=1.0, 16),
        seed in proptest::prelude::any::<u64>(),
        index in 0u64..1000,
        amplitude in 0.0f32..6.0,
        size in 4.0f32..128.0,
    ) {
        let image = GrayImage::new(4, 4, pixels).unwrap();
        let mut params = quick_params();
        params.scene.duration_ms = 20.0;
        params.scene.amplitude = amplitude;
        params.scene.image_size = size;
        let sensor = Sensor::new(SENSOR_WIDTH, SENSOR_HEIGHT, &params.pixel, seed);
        let rec = simulate(&image, &params, &sensor, &mut recording_rng(seed, index));
        let bytes = inflor::format::aedat2::encode_dvs128(&rec.events, inflor::format::JaerOrientation::Spikingjelly).unwrap();
        let decoded = inflor::format::decode_bytes(inflor::format::Format::Aedat2, &bytes, &DecodeOptions::default()).unwrap();
        proptest::prop_assert!(decoded.events == rec.events);
        proptest::prop_assert!(rec.events.windows(2).all(|w| w[0].t <= w[1].t));
    }
}

fn count(events: &[Event], polarity: bool) -> usize {
    events.iter().filter(|e| e.polarity == polarity).count()
}

#[test]
fn static_image_gives_only_noise_events() {
    let image = disc(16);
    let mut params = quick_params();
    params.scene.amplitude = 0.0;
    params.scene.duration_ms = 1000.0;
    params.pixel.shot_noise_hz = 0.0;
    params.pixel.leak_hz = 0.0;
    let sensor = |p: &SynthParams| Sensor::new(128, 128, &p.pixel, 5);
    let rec = simulate(&image, &params, &sensor(&params), &mut recording_rng(5, 0));
    assert!(
        rec.events.is_empty(),
        "{} events without noise",
        rec.events.len()
    );

    // Shot noise only: Poisson with mean 2 · 2 Hz · 16384 px · 1 s = 65536 (σ 256), half OFF.
    params.pixel.shot_noise_hz = 2.0;
    let rec = simulate(&image, &params, &sensor(&params), &mut recording_rng(5, 0));
    assert_eq!(
        rec.stats.on + rec.stats.off,
        0,
        "the change detectors stay silent"
    );
    let n = rec.events.len() as f64;
    assert!((n - 65_536.0).abs() < 5.0 * 256.0, "{n}");
    // The noise covers the sensor uniformly: the 24×24 image area (3.5 %) gets its share.
    let inside = rec
        .events
        .iter()
        .filter(|e| (52..76).contains(&e.x) && (52..76).contains(&e.y))
        .count() as f64;
    let share = n * 576.0 / 16384.0;
    assert!(
        (inside - share).abs() < 5.0 * share.sqrt(),
        "{inside} vs {share}"
    );

    // Leak only, thresholds without mismatch: each pixel's memory drifts down by
    // leak_hz · C_on per second from a uniform start in (−C_off, C_on) with C_off = C_on,
    // so it fires floor(U(−1, 1) + 2·s) ON events in 1 s at 2 Hz, whose mean is 2·E[s] − 1/2,
    // with s log-normal at 0.1 decade: E[s] = exp((0.1 · ln 10)² / 2). The count's standard
    // deviation is about 90 (0.35 %), so 1.5 % is a wide band that still catches a wrong model.
    params.pixel.shot_noise_hz = 0.0;
    params.pixel.leak_hz = 2.0;
    params.pixel.threshold_sigma = 0.0;
    let rec = simulate(&image, &params, &sensor(&params), &mut recording_rng(5, 0));
    assert_eq!(count(&rec.events, false), 0, "leak gives ON events only");
    let mean_spread = ((0.1 * std::f64::consts::LN_10).powi(2) / 2.0).exp();
    let expected = 16384.0 * (2.0 * mean_spread - 0.5);
    let n = rec.events.len() as f64;
    assert!((n - expected).abs() < 0.015 * expected, "{n} vs {expected}");
}

/// Pixels (x, y) of a 16×16 sensor that change in the step tests: a cross and a corner.
fn changed(x: usize, y: usize) -> bool {
    x == 7 || y == 3 || (x >= 13 && y >= 13)
}

#[test]
fn steps_fire_on_and_off_exactly_where_the_image_changed() {
    let params = PixelParams {
        shot_noise_hz: 0.0,
        leak_hz: 0.0,
        ..PixelParams::default()
    };
    let sensor = Sensor::new(16, 16, &params, 9);
    let mut emu = Emulator::new(sensor.clone(), params.refractory_us);
    let dim = log_intensity(0.2, params.log_eps);
    let bright = log_intensity(0.8, params.log_eps); // ln 4 ≈ 1.39, above C_on + C_off
    let frame = |on: bool| -> Vec<f32> {
        (0..256)
            .map(|p| {
                if on && changed(p % 16, p / 16) {
                    bright
                } else {
                    dim
                }
            })
            .collect()
    };
    // Frames 10 ms apart, so successive crossings of a step (≥ 0.7 ms apart) clear the
    // 100 µs refractory period and every crossing is an event.
    emu.start_random(0.0, &frame(false), &mut recording_rng(9, 0))
        .unwrap();
    let mut out = Vec::new();
    emu.step(10_000.0, &frame(false), &mut out).unwrap();
    assert!(out.is_empty());
    emu.step(20_000.0, &frame(true), &mut out).unwrap();
    let step_up = std::mem::take(&mut out);
    emu.step(30_000.0, &frame(true), &mut out).unwrap();
    assert!(out.is_empty(), "holding the new level fires nothing");
    emu.step(40_000.0, &frame(false), &mut out).unwrap();
    let step_down = out;
    let delta = bright - dim;
    for (events, polarity) in [(&step_up, true), (&step_down, false)] {
        assert!(events.iter().all(|e| e.polarity == polarity));
        let after = if polarity { 10_000 } else { 30_000 };
        assert!(events.iter().all(|e| e.t > after && e.t <= after + 10_000));
        for y in 0..16u16 {
            for x in 0..16u16 {
                let n = events.iter().filter(|e| e.x == x && e.y == y).count();
                if changed(usize::from(x), usize::from(y)) {
                    let on = sensor.threshold_on(x.into(), y.into()).unwrap();
                    let off = sensor.threshold_off(x.into(), y.into()).unwrap();
                    let (c, other) = if polarity { (on, off) } else { (off, on) };
                    // One event per threshold crossed. The memory starts anywhere strictly
                    // between −other and +c from the input, so Δ/c is off by less than one
                    // threshold either way.
                    let low = ((delta - other) / c).floor().max(0.0) as usize;
                    let high = ((delta + c) / c).floor() as usize;
                    assert!(
                        n >= low && n <= high && n > 0,
                        "({x},{y}): {n} not in [{low}, {high}]"
                    );
                } else {
                    assert_eq!(n, 0, "({x},{y}) did not change");
                }
            }
        }
    }
}

/// Events of a linear log-intensity ramp on every pixel of a 32×32 sensor, pixel p rising by
/// 1 + 2·p/1024 over 20 frames, from a reset start.
fn ramp_events(threshold: f32, sigma: f32) -> (usize, usize) {
    let params = PixelParams {
        threshold_on: threshold,
        threshold_off: threshold,
        threshold_sigma: sigma,
        ..PixelParams::ideal()
    };
    let mut emu = Emulator::new(Sensor::new(32, 32, &params, 17), 0.0);
    let rise = |p: usize| 1.0 + 2.0 * p as f32 / 1024.0;
    emu.start_reset(0.0, &[0.0; 1024]).unwrap();
    let mut out = Vec::new();
    for f in 1..=20 {
        let frame: Vec<f32> = (0..1024).map(|p| rise(p) * f as f32 / 20.0).collect();
        emu.step(f64::from(f) * 1000.0, &frame, &mut out).unwrap();
    }
    (out.len(), count(&out, true))
}

#[test]
fn halving_the_threshold_doubles_the_events_of_a_ramp() {
    // Each pixel fires floor(Δ/C) events; with C/2 (and σ/2, the same relative mismatch from
    // the same seed) floor(2Δ/C) ∈ {2·floor(Δ/C), 2·floor(Δ/C) + 1}. So the ratio lies in
    // [2, 2 + pixels / events at C]; a little slack covers rounding of thresholds near an
    // integer ratio.
    let (at_c, on) = ramp_events(0.2, 0.03);
    assert_eq!(on, at_c, "a rising ramp gives ON events only");
    let (at_half, _) = ramp_events(0.1, 0.015);
    let ratio = at_half as f64 / at_c as f64;
    let upper = 2.0 + 1024.0 / at_c as f64;
    assert!(at_c > 5 * 1024, "{at_c}");
    assert!(
        (2.0 - 0.002..=upper + 0.002).contains(&ratio),
        "ratio {ratio}, band [2, {upper}]"
    );
}

#[test]
fn dataset_info_reports_everything_and_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let inputs = images(5);
    let summary = generate(&inputs, &config(&out, quick_params()), &|| {}).unwrap();
    // Drop the list so the extra files may join the dataset, then add a truncated recording
    // (a header and half a record) and a file no decoder recognises.
    std::fs::remove_file(out.join("split.txt")).unwrap();
    let good = std::fs::read(out.join("beta/t_beta_0.aedat")).unwrap();
    let header_end = good.windows(2).rposition(|w| w == b"\r\n").unwrap() + 2;
    let mut truncated = good[..header_end].to_vec();
    truncated.extend_from_slice(&[0, 0, 1]);
    std::fs::write(out.join("beta/t_beta_9.aedat"), truncated).unwrap();
    std::fs::write(out.join("gamma/t_gamma_8.txt"), b"hello").unwrap();

    let ds = Dataset::open(&out, &spec("test-below:1")).unwrap();
    assert_eq!(ds.samples.len(), 7);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let r = report(&ds, &DecodeOptions::default(), &|| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(counter.into_inner(), 7);
    assert_eq!(r.decoded, 5);
    assert_eq!(r.total_events, summary.total_events);
    assert_eq!(r.formats.get("AEDAT 2.0"), Some(&5));
    assert_eq!(r.resolutions.get("128x128"), Some(&5));
    assert_eq!(r.events_per_recording.as_ref().unwrap().count, 5);
    let d = r.duration_s.as_ref().unwrap();
    assert!(d.max <= 0.120 && d.min > 0.1, "{d:?}");
    let classes: Vec<(usize, usize)> = r.classes.iter().map(|c| (c.train, c.test)).collect();
    // alpha: images 0 and 3; beta: 1 and 4 plus the truncated _9; gamma: 2 plus the text _8.
    assert_eq!(classes, vec![(1, 1), (2, 1), (1, 1)]);
    assert_eq!(r.failures.len(), 2);
    assert!(
        r.failures[0].path.ends_with("beta/t_beta_9.aedat"),
        "{:?}",
        r.failures
    );
    assert!(
        r.failures[0].error.to_lowercase().contains("truncated"),
        "{}",
        r.failures[0].error
    );
    assert!(r.failures[1].path.ends_with("gamma/t_gamma_8.txt"));
    assert!(
        r.failures[1].error.contains("unrecognised format"),
        "{}",
        r.failures[1].error
    );
    // The command reports everything, then exits 2 as `inspect` does.
    let cli = inflor()
        .args(["dataset", "info", "--split", "test-below:1"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2));
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(text.contains("failures      2"), "{text}");
    assert!(String::from_utf8_lossy(&cli.stderr).contains("2 of 7 recordings"));
}

#[test]
fn image_fixtures_load() {
    let pgm = load_image(&test_data("dataset/images/square/square.pgm")).unwrap();
    assert_eq!((pgm.width, pgm.height), (12, 12));
    assert_eq!(pgm.pixels[0], 0.0);
    assert_eq!(pgm.pixels[6 * 12 + 6], 1.0);
    let png = load_image(&test_data("dataset/images/ring/ring.png")).unwrap();
    assert_eq!((png.width, png.height), (12, 12));
    assert!(png.pixels.iter().any(|&v| v > 0.9) && png.pixels.iter().any(|&v| v < 0.1));
}

/// The UCI digits CSV bundled in `assets/` (so a fresh clone can make DVS-Digits).
fn bundled_digits_csv() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/digits.csv.gz")
}

#[test]
fn bundled_digits_csv_is_the_shared_data_copy() {
    let Some(csv) = shared_data_or_skip("digits/digits.csv.gz") else {
        return;
    };
    assert!(
        std::fs::read(&csv).unwrap() == std::fs::read(bundled_digits_csv()).unwrap(),
        "assets/digits.csv.gz differs from {}",
        csv.display()
    );
}

#[test]
fn digits_csv_loads() {
    let csv = bundled_digits_csv();
    let digits = load_digits_csv(&csv).unwrap();
    assert_eq!(digits.len(), 1797);
    let mut per_class = [0usize; 10];
    for d in &digits {
        per_class[usize::from(d.label)] += 1;
    }
    assert_eq!(
        per_class,
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
}

/// `assets/dvs-digits-0.aedat` (compiled into the binary) is DVS-Digits recording 0 as the
/// emulator writes it today: any change to the emulator's output shows up here, and the asset
/// must then be regenerated (see assets/README.md).
#[test]
fn bundled_dvs_digits_recording_is_what_the_emulator_writes() {
    let csv = bundled_digits_csv();
    let digits = load_digits_csv(&csv).unwrap();
    let inputs = inflor::dataset::digits::inputs(&digits[..1]).unwrap();
    assert_eq!(inputs[0].label, 0);
    let params = SynthParams::default();
    let sensor = Sensor::new(SENSOR_WIDTH, SENSOR_HEIGHT, &params.pixel, 1);
    let rec = simulate(&inputs[0].image, &params, &sensor, &mut recording_rng(1, 0));
    let bytes = inflor::format::aedat2::encode_dvs128(
        &rec.events,
        inflor::format::JaerOrientation::Spikingjelly,
    )
    .unwrap();
    let asset = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/dvs-digits-0.aedat"
    ))
    .unwrap();
    assert!(
        bytes == asset,
        "emulator output ({} bytes) differs from the asset ({} bytes)",
        bytes.len(),
        asset.len()
    );
}

fn inflor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_inflor"))
}

#[test]
fn synth_and_dataset_info_commands() {
    let csv = bundled_digits_csv();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits");
    let synth = inflor()
        .args(["synth", "--digits"])
        .arg(csv)
        .arg("--out")
        .arg(&out)
        .args([
            "--limit",
            "40",
            "--duration-ms",
            "60",
            "--loop-ms",
            "30",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    assert!(String::from_utf8_lossy(&synth.stderr).contains("wrote 40 recordings"));
    assert!(out.join("0/dvsdigits_0_0.aedat").is_file());
    let output = inflor()
        .args(["dataset", "info", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["decoded"], 40);
    assert_eq!(json["failures"].as_array().unwrap().len(), 0);
    // With 40 digits, each class has about 4 recordings: all of them below 36 are test data.
    assert_eq!(json["test"], 40);
    assert!(json["split"].as_str().unwrap().starts_with("list:"));

    // Image folders: class subfolders of PGM/PNG, default CIFAR10-DVS numbering.
    let out2 = dir.path().join("images");
    let status = inflor()
        .args(["synth", "--images"])
        .arg(test_data("dataset/images"))
        .arg("--out")
        .arg(&out2)
        .args(["--duration-ms", "40", "--seed", "3"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let output = inflor()
        .args(["dataset", "info"])
        .arg(&out2)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("recordings    2 in 2 classes"), "{text}");
    assert!(text.contains("failures      0"), "{text}");

    // Refuses to overwrite.
    let again = inflor()
        .args(["synth", "--images"])
        .arg(test_data("dataset/images"))
        .arg("--out")
        .arg(&out2)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
