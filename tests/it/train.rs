//! `inflor train` and `inflor eval` end to end on a small generated dataset (no shared data
//! needed): the export loads and records its run, resuming continues it, a run is
//! deterministic, and evaluation through `Session` with the dense and the event-driven
//! executors agrees with the trainer's own evaluation pass (same predictions, logits within
//! 1e-4).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inflor::dataset::generate::{GenerateConfig, LabelledImage, generate};
use inflor::dataset::images::GrayImage;
use inflor::dataset::synth::{PixelParams, SceneParams, SynthParams};
use inflor::dataset::{Dataset, Split};
use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::format::{DecodeOptions, read_file};
use inflor::model::Model;
use inflor::session::{Session, SessionOptions};
use inflor::train::data::{batch_frames, bin_bytes};
use inflor::train::{Net, SpikingConfig, TrainConfig, TrainGraph, Trainer};

use crate::support::run_inflor;

/// Class 0: a filled square; class 1: a horizontal bar; class 2: a vertical bar (sizes vary).
fn shape(label: usize, size: usize) -> GrayImage {
    let pixels = (0..size * size)
        .map(|i| {
            let (x, y) = (i % size, i / size);
            let (lo, hi) = (size / 4, size - size / 4);
            let on = match label {
                0 => (lo..hi).contains(&x) && (lo..hi).contains(&y),
                1 => (size / 2 - 1..=size / 2).contains(&y) && (1..size - 1).contains(&x),
                _ => (size / 2 - 1..=size / 2).contains(&x) && (1..size - 1).contains(&y),
            };
            if on { 0.9 } else { 0.05 }
        })
        .collect();
    GrayImage::new(size, size, pixels).unwrap()
}

/// 18 recordings, 3 classes, the first 2 of each class for testing.
pub(crate) fn dataset(root: &Path) -> PathBuf {
    let out = root.join("shapes");
    let inputs: Vec<LabelledImage> = (0..18)
        .map(|i| LabelledImage {
            image: shape(i % 3, 8 + (i / 3) % 3),
            label: i % 3,
        })
        .collect();
    let config = GenerateConfig {
        out: out.clone(),
        classes: vec!["bar-h".into(), "bar-v".into(), "square".into()],
        prefix: "s".into(),
        test_per_class: 2,
        seed: 5,
        params: SynthParams {
            pixel: PixelParams::default(),
            scene: SceneParams {
                image_size: 32.0,
                duration_ms: 100.0,
                loop_ms: 50.0,
                render_hz: 500.0,
                ..SceneParams::default()
            },
        },
        source: "test shapes".into(),
    };
    generate(&inputs, &config, &|| {}).unwrap();
    out
}

pub(crate) fn train(ds: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = [
        "train",
        ds.to_str().unwrap(),
        "--input",
        "2x16x16",
        "--timesteps",
        "4",
        "--batch",
        "4",
        "--threads",
        "1",
        "--seed",
        "3",
        "--lr",
        "0.05",
        "--out",
        out.to_str().unwrap(),
        "--cache",
        out.with_extension("cache").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = run_inflor(&args);
    assert!(
        output.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The logits of one recording through a session on `executor`.
pub(crate) fn session_logits(model: &Model, executor: ExecutorKind, path: &Path) -> Vec<f32> {
    let plan: Arc<Plan> = Plan::new(
        model.network.clone(),
        executor,
        PlanOptions {
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let rec = read_file(path, None, &DecodeOptions::default()).unwrap();
    let mut session = Session::new(
        plan,
        model,
        (rec.info.width, rec.info.height),
        SessionOptions::default(),
    )
    .unwrap();
    let mut outputs = Vec::new();
    session.push(&rec.events, &mut outputs).unwrap();
    session.finish(&mut outputs).unwrap();
    outputs.swap_remove(0).logits
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn train_exports_a_model_that_sessions_evaluate_as_the_trainer_does() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let out = dir.path().join("m.safetensors");
    let metrics = dir.path().join("m.jsonl");
    let stdout = train(
        &ds,
        &out,
        &["--epochs", "2", "--metrics-out", metrics.to_str().unwrap()],
    )
    .stdout;
    let text = String::from_utf8_lossy(&stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("epoch")).count(),
        2,
        "{text}"
    );

    let model = Model::load(&out).unwrap();
    let m = &model.metadata;
    assert_eq!(m.class_names, ["bar-h", "bar-v", "square"]);
    assert_eq!(m.provenance.origin, "trained");
    let record = &m.provenance.extra["training"];
    assert_eq!(record["config"]["epochs"], 2);
    assert_eq!(record["config"]["batch"], 4);
    assert_eq!(record["train_samples"], 12);
    assert_eq!(record["test_samples"], 6);
    assert_eq!(record["history"].as_array().unwrap().len(), 2);
    assert!(
        record["command_lines"][0]
            .as_str()
            .unwrap()
            .contains("--seed 3")
    );
    assert_eq!(
        std::fs::read_to_string(&metrics).unwrap().lines().count(),
        2
    );

    // The trainer's own evaluation pass on the exported weights.
    let graph = TrainGraph::from_graph(&m.graph, SpikingConfig::default()).unwrap();
    let net = Net::from_parameters(graph, &model.parameters).unwrap();
    let t = m.input.timesteps;
    let mut trainer = Trainer::new(net, TrainConfig::default(), t);
    let dataset = Dataset::open(&ds, &"auto".parse().unwrap()).unwrap();
    let test: Vec<_> = dataset.split_samples(Split::Test).collect();
    assert_eq!(test.len(), 6);
    let mut correct = 0;
    for s in &test {
        let bytes = std::fs::read(&s.path).unwrap();
        let frames = bin_bytes(&s.path, &bytes, &m.input, &DecodeOptions::default()).unwrap();
        let mut batch = Vec::new();
        batch_frames(&[&frames], t, &mut batch);
        let (expected, _) = trainer.evaluate(&batch, &[s.label]);
        correct += usize::from(argmax(&expected) == s.label);
        for executor in [ExecutorKind::Dense, ExecutorKind::Event] {
            let got = session_logits(&model, executor, &s.path);
            assert_eq!(
                argmax(&got),
                argmax(&expected),
                "{executor:?} {}",
                s.relative
            );
            for (a, b) in got.iter().zip(&expected) {
                assert!(
                    (a - b).abs() <= 1e-4,
                    "{executor:?} {}: {a} vs {b}",
                    s.relative
                );
            }
        }
    }

    // `inflor eval` reports the same accuracy with both executors.
    for executor in ["dense", "event"] {
        let report = eval_json(&out, &ds, executor);
        assert_eq!(report["samples"], 6);
        let top1 = report["top1"].as_f64().unwrap();
        assert!((top1 - correct as f64 / 6.0).abs() < 1e-12, "{executor}");
        let confusion: usize = report["confusion"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
            })
            .sum();
        assert_eq!(confusion, 6);
    }
}

#[test]
fn runs_are_deterministic_and_resume_continues_them() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    // Two epochs in one go, and one epoch then a resume for the second: same weights.
    train(&ds, &a, &["--epochs", "2"]);
    train(&ds, &b, &["--epochs", "1"]);
    let ckpt = dir.path().join("b.safetensors.ckpt");
    assert!(ckpt.is_file());
    let resumed = dir.path().join("b2.safetensors");
    train(
        &ds,
        &resumed,
        &["--epochs", "2", "--resume", ckpt.to_str().unwrap()],
    );
    let pa = Model::load(&a).unwrap().parameters;
    let pr = Model::load(&resumed).unwrap();
    let history = &pr.metadata.provenance.extra["training"]["history"];
    assert_eq!(history.as_array().unwrap().len(), 2);
    // Epoch 1's cosine rate is the base rate whatever T_max, so the one-epoch run followed by
    // a resume to two epochs took exactly the steps of the two-epoch run: weights, BN
    // statistics and momentum buffers all came back from the checkpoint.
    assert_eq!(pa, pr.parameters);
    assert_ne!(pa, Model::load(&b).unwrap().parameters);
    // A rerun of the same command gives the same weights bit for bit.
    let again = dir.path().join("a2.safetensors");
    train(&ds, &again, &["--epochs", "2"]);
    assert_eq!(pa, Model::load(&again).unwrap().parameters);
}

#[test]
fn one_step_with_dump_writes_the_exact_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let out = dir.path().join("s.safetensors");
    let dump = dir.path().join("batch.npy");
    train(
        &ds,
        &out,
        &[
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--no-augment",
            "--no-shuffle",
            "--momentum",
            "0",
            "--weight-decay",
            "0",
            "--loss",
            "tet",
            "--surrogate",
            "dspike:3:1",
            "--detach-reset",
            "--dump-batch",
            dump.to_str().unwrap(),
        ],
    );
    let frames = dir.path().join("batch.e0.s0.npy");
    let labels = dir.path().join("batch.e0.s0.labels.npy");
    let f = inflor::binner::npy::read_f32(std::fs::File::open(&frames).unwrap(), 1 << 24).unwrap();
    assert_eq!(f.shape, [4, 4, 2, 16, 16]);
    let l = inflor::binner::npy::read_f32(std::fs::File::open(&labels).unwrap(), 1 << 20).unwrap();
    // No shuffle: the first four training recordings in dataset order (grouped by class).
    assert_eq!(l.values, [0.0, 0.0, 0.0, 0.0]);
    let model = Model::load(&out).unwrap();
    let record = &model.metadata.provenance.extra["training"];
    assert_eq!(record["config"]["loss"]["kind"], "tet");
    assert_eq!(record["detach_reset"], true);
    assert_eq!(
        model.metadata.neuron.surrogate,
        inflor::snn::neuron::Surrogate::Dspike { b: 3.0, r: 1.0 }
    );
}

#[test]
fn bad_recordings_are_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    std::fs::remove_file(ds.join("split.txt")).unwrap();
    std::fs::write(
        ds.join("square/s_square_9.aedat"),
        b"#!AER-DAT2.0\r\n\x00\x01",
    )
    .unwrap();
    let out = dir.path().join("k.safetensors");
    let o = train(
        &ds,
        &out,
        &[
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--split",
            "test-below:2",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s_square_9.aedat"), "{err}");
    let model = Model::load(&out).unwrap();
    let skipped = &model.metadata.provenance.extra["training"]["skipped"];
    assert_eq!(skipped[0], "square/s_square_9.aedat");
}

/// The Python interpreter with NumPy and safetensors (`INFLOR_PYTHON`, default `python3`);
/// None (the test skips) without them, except under `CI`, where that fails.
fn python() -> Option<String> {
    let python = std::env::var("INFLOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", "import numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{python} lacks numpy/safetensors and CI is set (install python/requirements.txt)"
    );
    eprintln!("skipped: needs {python} with numpy and safetensors (python/requirements.txt)");
    None
}

fn logits_of(model: &Path, recording: &Path) -> Vec<serde_json::Value> {
    let o = run_inflor(&[
        "infer",
        "--json",
        "--model",
        model.to_str().unwrap(),
        recording.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["logits"].clone())
        .collect()
}

#[test]
fn a_pytorch_state_dict_converts_to_the_same_model() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let o = run_inflor(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "3",
        "--input",
        "2x16x16",
        "--timesteps",
        "3",
        "--seed",
        "4",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // What a PyTorch user has: the state_dict as NumPy arrays (np.savez of
    // {k: v.numpy()}), here taken from the model's tensors, plus an int64 counter that
    // BatchNorm2d adds and the converter must drop.
    let npz = dir.path().join("state_dict.npz");
    let script = "import sys, numpy as np\n\
                  from safetensors.numpy import load_file\n\
                  sd = load_file(sys.argv[1])\n\
                  sd['features.0.bn.num_batches_tracked'] = np.array(7, dtype=np.int64)\n\
                  np.savez(sys.argv[2], **sd)\n";
    let status = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&model)
        .arg(&npz)
        .status()
        .unwrap();
    assert!(status.success());
    let converted = dir.path().join("converted.safetensors");
    let o = std::process::Command::new(&python)
        .arg(crate::support::repo_file("python/from_pytorch.py"))
        .args(["--state-dict"])
        .arg(&npz)
        .args(["--tiny", "16x16:3", "--class-names", "class0,class1,class2"])
        .args(["--timesteps", "3", "--out"])
        .arg(&converted)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recording = crate::support::repo_file("assets/dvs-digits-0.aedat");
    let expected = logits_of(&model, &recording);
    assert!(!expected.is_empty());
    assert_eq!(logits_of(&converted, &recording), expected);
    // A state_dict missing a tensor is refused, naming it.
    let partial = dir.path().join("partial.npz");
    let script = "import sys, numpy as np\n\
                  z = dict(np.load(sys.argv[1]))\n\
                  del z['classifier.bias']\n\
                  np.savez(sys.argv[2], **z)\n";
    let status = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&npz)
        .arg(&partial)
        .status()
        .unwrap();
    assert!(status.success());
    let o = std::process::Command::new(&python)
        .arg(crate::support::repo_file("python/from_pytorch.py"))
        .args(["--state-dict"])
        .arg(&partial)
        .args(["--tiny", "16x16:3", "--out"])
        .arg(dir.path().join("never.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("classifier.bias"));
}

#[test]
fn ablate_trains_every_configuration_and_tabulates_the_means() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let runs = dir.path().join("runs");
    let table = dir.path().join("table.md");
    let cache = dir.path().join("cache");
    let o = run_inflor(&[
        "ablate",
        ds.to_str().unwrap(),
        "--seeds",
        "2",
        "--out-dir",
        runs.to_str().unwrap(),
        "--table",
        table.to_str().unwrap(),
        "--",
        "--input",
        "2x16x16",
        "--timesteps",
        "4",
        "--epochs",
        "1",
        "--batch",
        "4",
        "--threads",
        "1",
        "--lr",
        "0.05",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&table).unwrap();
    let mut finals = Vec::new();
    for (name, mpr) in [
        ("srif", false),
        ("if-hard", false),
        ("lif-hard", false),
        ("srif", true),
    ] {
        let mut accs = Vec::new();
        for seed in 0..2 {
            let file = format!(
                "{name}{}-seed{seed}.safetensors",
                if mpr { "-mpr" } else { "" }
            );
            let model = Model::load(&runs.join(file)).unwrap();
            assert_eq!(model.metadata.neuron.mpr, mpr);
            let record = &model.metadata.provenance.extra["training"];
            assert_eq!(record["config"]["seed"], seed);
            accs.push(record["final_test_accuracy"].as_f64().unwrap());
        }
        finals.push(100.0 * (accs[0] + accs[1]) / 2.0);
    }
    let row = |label: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label} in\n{text}"))
            .to_owned()
    };
    assert!(
        row("SRIF").contains(&format!("{:.2} ±", finals[0])),
        "{text}"
    );
    assert!(
        row("hard-reset IF").contains(&format!("{:.2} ±", finals[1])),
        "{text}"
    );
    assert!(
        row("with MPR").contains(&format!("{:.2} ±", finals[3])),
        "{text}"
    );
    assert!(row("SRIF + MPR").contains("±"), "{text}");
}

/// `inflor eval --json` of `model` on `ds` with `executor`, which must succeed.
pub(crate) fn eval_json(model: &Path, ds: &Path, executor: &str) -> serde_json::Value {
    let o = run_inflor(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        ds.to_str().unwrap(),
        "--executor",
        executor,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
