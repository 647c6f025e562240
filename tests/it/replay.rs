//! `inflor replay` end to end, on a small generated DVS-Digits-shaped dataset (ten class
//! folders of short emulated recordings, plus the bundled DVS-Digits recordings; no shared
//! data needed): it gives the same prediction and the same logits as `inflor eval` for every
//! recording (per-recording and stream window policies, one and two threads, paced or not),
//! its JSON report carries every part of the report, the confusion PNG decodes at its
//! documented size, `--limit` takes each class in turn, and bad input exits 2 naming the
//! problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use inflor::dataset::generate::{GenerateConfig, LabelledImage, generate};
use inflor::dataset::images::GrayImage;
use inflor::dataset::synth::{PixelParams, SceneParams, SynthParams};
use serde_json::Value;

use crate::support::{repo_file, run_inflor};

/// A pattern per class and variant: stripes whose count and direction depend on both.
fn pattern(label: usize, variant: usize) -> GrayImage {
    let size = 10;
    let stripes = 1 + label % 4;
    let pixels = (0..size * size)
        .map(|i| {
            let (x, y) = (i % size, i / size);
            let along = if label < 5 { x } else { y };
            let inside = (1..size - 1).contains(&x) && (1..size - 1).contains(&y);
            if inside && (along * stripes / size + variant).is_multiple_of(2) {
                0.9
            } else {
                0.05
            }
        })
        .collect();
    GrayImage::new(size, size, pixels).unwrap()
}

/// Ten classes `0`…`9`: two emulated recordings each (`s_<class>_0`, `_1`), and the bundled
/// recordings of the digits 0, 3, 7 and 9 as `s_<digit>_2`; every file is in the test split
/// (the `default` rule: numbers below 100).
fn dataset(root: &Path) -> PathBuf {
    let out = root.join("digits");
    let inputs: Vec<LabelledImage> = (0..20)
        .map(|i| LabelledImage {
            image: pattern(i % 10, i / 10),
            label: i % 10,
        })
        .collect();
    let config = GenerateConfig {
        out: out.clone(),
        classes: (0..10).map(|d| d.to_string()).collect(),
        prefix: "s".into(),
        test_per_class: 2,
        seed: 11,
        params: SynthParams {
            pixel: PixelParams::default(),
            scene: SceneParams {
                image_size: 48.0,
                duration_ms: 120.0,
                loop_ms: 60.0,
                render_hz: 500.0,
                ..SceneParams::default()
            },
        },
        source: "test patterns".into(),
    };
    generate(&inputs, &config, &|| {}).unwrap();
    // The bundled recordings are not in the generated split list: split by file number.
    std::fs::remove_file(out.join("split.txt")).unwrap();
    for d in [0, 3, 7, 9] {
        std::fs::copy(
            repo_file(&format!("assets/dvs-digits-{d}.aedat")),
            out.join(format!("{d}/s_{d}_2.aedat")),
        )
        .unwrap();
    }
    out
}

fn ok(args: &[&str]) -> std::process::Output {
    let o = run_inflor(args);
    assert!(
        o.status.success(),
        "inflor {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn replay_json(args: &[&str]) -> Value {
    let mut all = vec!["replay", "--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&ok(&all).stdout).expect("replay --json prints one JSON object")
}

/// `eval --logits-out`: each recording's (prediction, logits) by relative path.
fn eval_predictions(dir: &Path, ds: &Path, model: &[&str]) -> HashMap<String, (Value, Value)> {
    let logits = dir.join("eval-logits.jsonl");
    let mut args = vec![
        "eval",
        ds.to_str().unwrap(),
        "--logits-out",
        logits.to_str().unwrap(),
    ];
    args.extend_from_slice(model);
    ok(&args);
    std::fs::read_to_string(&logits)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                (v["predicted"].clone(), v["logits"].clone()),
            )
        })
        .collect()
}

fn assert_agree(eval: &HashMap<String, (Value, Value)>, report: &Value, what: &str) {
    let recordings = report["recordings"].as_array().unwrap();
    assert_eq!(recordings.len(), eval.len(), "{what}");
    for r in recordings {
        let path = r["path"].as_str().unwrap();
        let (predicted, logits) = &eval[path];
        assert_eq!(&r["predicted"], predicted, "{what}: {path}");
        assert_eq!(&r["logits"], logits, "{what}: {path}");
    }
}

#[test]
fn replay_and_eval_give_the_same_prediction_for_every_recording() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let d = ds.to_str().unwrap();

    // The bundled model (whole recordings in T = 10 equal-count bins).
    let eval = eval_predictions(dir.path(), &ds, &[]);
    assert_eq!(eval.len(), 24);
    let predictions: std::collections::HashSet<String> =
        eval.values().map(|(p, _)| p.to_string()).collect();
    assert!(
        predictions.len() > 1,
        "a test that every prediction is alike proves little"
    );
    for threads in ["1", "2"] {
        let report = replay_json(&[d, "--threads", threads]);
        assert_agree(&eval, &report, &format!("bundled model, {threads} threads"));
        assert_eq!(report["windows"], 24);
    }
    // Paced by the timestamps (each recording lasts 0.12 s; 50x makes that 2.4 ms).
    let paced = replay_json(&[d, "--threads", "2", "--speed", "50"]);
    assert_eq!(paced["speed"], 50.0);
    assert_agree(&eval, &paced, "paced at 50x");

    // A stream window policy: many windows per recording, classified by the first, as eval
    // does.
    let model = dir.path().join("stream.safetensors");
    let names = (0..10).map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    ok(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "10",
        "--class-names",
        &names,
        "--input",
        "2x16x16",
        "--timesteps",
        "4",
        "--window",
        "count:300",
        model.to_str().unwrap(),
    ]);
    let m = ["--model", model.to_str().unwrap()];
    let eval = eval_predictions(dir.path(), &ds, &m);
    let report = replay_json(&[d, m[0], m[1], "--threads", "2"]);
    assert_agree(&eval, &report, "stream policy");
    assert!(
        report["windows"].as_u64().unwrap() > 24,
        "{}",
        report["windows"]
    );
}

#[test]
fn the_report_has_accuracy_latency_throughput_rates_energy_and_quantization() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let png = dir.path().join("confusion.png");
    let r = replay_json(&[
        ds.to_str().unwrap(),
        "--quant-error",
        "--confusion-png",
        png.to_str().unwrap(),
    ]);
    assert_eq!(r["samples"], 24);
    assert_eq!(r["failed"].as_array().unwrap().len(), 0);
    let top1 = r["top1"].as_f64().unwrap();
    let top5 = r["top5"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1) && top1 <= top5 && top5 <= 1.0);
    let per_class = r["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    assert_eq!(per_class[3]["count"], 3);
    let confusion = r["confusion"].as_array().unwrap();
    let row_sums: Vec<u64> = confusion
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .sum()
        })
        .collect();
    assert_eq!(row_sums, [3, 2, 2, 3, 2, 2, 2, 3, 2, 3]);
    let correct: u64 = (0..10).map(|c| confusion[c][c].as_u64().unwrap()).sum();
    assert!((top1 - correct as f64 / 24.0).abs() < 1e-12);

    for key in ["latency_us", "compute_us", "recording_wall_us"] {
        let p = &r[key];
        let (p50, p95, p99) = (
            p["p50"].as_f64().unwrap(),
            p["p95"].as_f64().unwrap(),
            p["p99"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{key}: {p}");
    }
    let t = &r["throughput"];
    let recordings = r["recordings"].as_array().unwrap();
    let events: u64 = recordings
        .iter()
        .map(|x| x["events"].as_u64().unwrap())
        .sum();
    assert!(events > 0);
    assert_eq!(t["events"], events);
    for key in [
        "wall_s",
        "recordings_per_s",
        "events_per_s",
        "real_time_factor",
    ] {
        assert!(t[key].as_f64().unwrap() > 0.0, "{key}: {t}");
    }
    // Each recording lasts about 0.12 s (the emulated ones) or 1 s (the bundled ones).
    let recorded = t["recorded_s"].as_f64().unwrap();
    assert!((4.5..=6.5).contains(&recorded), "{recorded}");

    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "tiny has three neuron layers");
    for l in layers {
        let rate = l["firing_rate"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&rate) && l["neurons"].as_u64().unwrap() > 0,
            "{l}"
        );
    }
    assert!(
        layers
            .iter()
            .any(|l| l["firing_rate"].as_f64().unwrap() > 0.0)
    );
    let s = &r["per_sample"];
    let ops = s["synaptic_ops"].as_f64().unwrap();
    assert!(ops > 0.0 && ops < s["dense_macs"].as_f64().unwrap(), "{s}");
    let energy = s["energy_pj"].as_f64().unwrap();
    assert!(
        energy > 0.0 && energy < s["dense_energy_pj"].as_f64().unwrap(),
        "{s}"
    );

    let q = &r["quantization"];
    assert_eq!(q["layer"], 0);
    assert!(q["samples"].as_u64().unwrap() > 0);
    // MPR pulls membranes towards the spike values (the paper's Table 3).
    assert!(
        q["mpr"].as_f64().unwrap() < q["plain"].as_f64().unwrap(),
        "{q}"
    );

    // Without --quant-error there is no quantization entry.
    let plain = replay_json(&[ds.to_str().unwrap(), "--limit", "2"]);
    assert!(plain.get("quantization").is_none());

    // The PNG decodes, 8-bit RGB, at the documented size for ten classes (140 + 48·10).
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (620, 620));
    assert_eq!(info.color_type, png::ColorType::Rgb);
}

#[test]
fn the_text_report_says_everything_and_limit_takes_each_class_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let o = ok(&["replay", ds.to_str().unwrap(), "--limit", "12"]);
    let text = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "12 recordings",
        "top-1",
        "top-5",
        "per class:",
        "confusion matrix",
        "p50",
        "p95",
        "p99",
        "recordings/s",
        "events/s",
        "real time",
        "features.0.sn",
        "synaptic ops",
        "µJ",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    // Not a terminal: no progress bar on stderr.
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let r = replay_json(&[ds.to_str().unwrap(), "--limit", "12"]);
    assert_eq!(r["samples"], 12);
    let paths: Vec<&str> = r["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    // The first recording of every class, then the second of the first two.
    assert_eq!(
        paths,
        [
            "0/s_0_0.aedat",
            "0/s_0_1.aedat",
            "1/s_1_0.aedat",
            "1/s_1_1.aedat",
            "2/s_2_0.aedat",
            "3/s_3_0.aedat",
            "4/s_4_0.aedat",
            "5/s_5_0.aedat",
            "6/s_6_0.aedat",
            "7/s_7_0.aedat",
            "8/s_8_0.aedat",
            "9/s_9_0.aedat",
        ]
    );
}

fn fails_with(args: &[&str], needle: &str) {
    let o = run_inflor(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {needle:?} missing from {stderr}"
    );
}

#[test]
fn bad_input_exits_2_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let d = ds.to_str().unwrap();
    let missing = dir.path().join("nowhere");
    fails_with(&["replay", missing.to_str().unwrap()], "nowhere");
    fails_with(
        &["replay", d, "--split", "train"],
        "no recordings in the train split",
    );
    // A model for other classes than the dataset's.
    let model = dir.path().join("three.safetensors");
    ok(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "3",
        "--input",
        "2x16x16",
        model.to_str().unwrap(),
    ]);
    fails_with(
        &["replay", d, "--model", model.to_str().unwrap()],
        "are not the model's",
    );
    let not_a_model = ds.join("0/s_0_0.aedat");
    fails_with(
        &["replay", d, "--model", not_a_model.to_str().unwrap()],
        "loading model",
    );
    let png = dir.path().join("no-such-folder/c.png");
    fails_with(
        &["replay", d, "--confusion-png", png.to_str().unwrap()],
        "does not exist",
    );
    fails_with(&["replay", d, "--speed", "0"], "positive real-time factor");
    fails_with(&["replay", d, "--limit", "0"], "--limit");
    fails_with(&["replay", d, "--realtime", "--speed", "2"], "--speed");
    // A recording that does not decode is named, the others are still scored.
    std::fs::write(ds.join("5/s_5_7.aedat"), b"#!AER-DAT2.0\r\n\xff\xff").unwrap();
    let o = run_inflor(&["replay", d, "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["failed"], serde_json::json!(["5/s_5_7.aedat"]));
    assert_eq!(r["samples"], 24);
    assert!(String::from_utf8_lossy(&o.stderr).contains("s_5_7.aedat"));
}
