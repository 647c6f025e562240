//! `inflor plot` end to end on a small generated dataset (no shared data needed): a trained
//! model and its metrics file give the same curves, every PNG decodes at its size and is drawn
//! on, the membrane histograms are the same from all three executors and count every
//! neuron-timestep, and files without a training history fail with exit code 2 naming them.

use std::path::{Path, PathBuf};

use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::format::{DecodeOptions, read_file};
use inflor::model::Model;
use inflor::session::{Session, SessionOptions};
use inflor::snn::network::Op;

use crate::support::run_inflor;
use crate::train::{dataset, train};

/// Decodes a PNG: its size and its RGB(A) pixels.
fn decode(path: &Path) -> ((u32, u32), Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    ((info.width, info.height), pixels)
}

/// Distinct colours in an RGB image: a blank or single-colour canvas has 1 or 2.
fn colours(rgb: &[u8]) -> usize {
    let mut seen: Vec<[u8; 3]> = rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// The paths `inflor plot` printed, in order.
fn written(stdout: &[u8]) -> Vec<PathBuf> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .map(PathBuf::from)
        .collect()
}

fn plot(args: &[&str]) -> std::process::Output {
    let mut all = vec!["plot"];
    all.extend(args);
    run_inflor(&all)
}

#[test]
fn plots_of_a_model_and_of_its_metrics_file() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let model = dir.path().join("m.safetensors");
    let metrics = dir.path().join("m.jsonl");
    train(
        &ds,
        &model,
        &["--epochs", "3", "--metrics-out", metrics.to_str().unwrap()],
    );

    let out = dir.path().join("plots/from-model");
    let o = plot(&[
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--layer",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names = ["loss.png", "accuracy.png", "firing.png", "membrane.png"];
    let expected: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
    assert_eq!(written(&o.stdout), expected);
    for path in &expected {
        let (size, rgb) = decode(path);
        let want = if path.ends_with("membrane.png") {
            (1400, 620)
        } else {
            (960, 600)
        };
        assert_eq!(size, want, "{}", path.display());
        assert_eq!(rgb.len(), (want.0 * want.1 * 3) as usize);
        // Text is anti-aliased and the curves are coloured: many colours, not a blank canvas.
        assert!(colours(&rgb) > 20, "{} looks blank", path.display());
    }

    // The metrics file holds the same epochs, so the curves are the same pixels.
    let from_metrics = dir.path().join("plots/from-metrics");
    let o = plot(&[
        metrics.to_str().unwrap(),
        "--out",
        from_metrics.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(written(&o.stdout).len(), 3);
    for name in &names[..3] {
        assert_eq!(
            decode(&out.join(name)),
            decode(&from_metrics.join(name)),
            "{name}"
        );
    }
    assert!(!from_metrics.join("membrane.png").exists());
}

/// The quantization statistic of one recording through a session on `executor`.
fn quantization(
    model: &Model,
    executor: ExecutorKind,
    node: usize,
    path: &Path,
) -> inflor::session::QuantizationStats {
    let plan = Plan::new(
        model.network.clone(),
        executor,
        PlanOptions {
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )
    .unwrap();
    let rec = read_file(path, None, &DecodeOptions::default()).unwrap();
    let options = SessionOptions {
        quantization_node: Some(node),
        ..SessionOptions::default()
    };
    let mut session =
        Session::new(plan, model, (rec.info.width, rec.info.height), options).unwrap();
    let mut outputs = Vec::new();
    session.push(&rec.events, &mut outputs).unwrap();
    session.finish(&mut outputs).unwrap();
    outputs.swap_remove(0).quantization.unwrap()
}

#[test]
fn membrane_histograms_agree_across_executors_and_count_every_neuron_timestep() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let path = dir.path().join("m.safetensors");
    train(&ds, &path, &["--epochs", "1"]);
    let model = Model::load(&path).unwrap();
    let recording = std::fs::read_dir(ds.join("square"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "aedat"))
        .unwrap();
    for (i, node) in model.network.nodes().iter().enumerate() {
        if !matches!(node.op, Op::Neuron(_)) {
            continue;
        }
        let reference = quantization(&model, ExecutorKind::Reference, i, &recording);
        let h = &reference.histograms;
        assert_eq!(h.potential.total(), reference.samples, "{}", node.name);
        assert_eq!(h.rectified.total(), reference.samples, "{}", node.name);
        // Every neuron once per timestep of the one window.
        let t = model.metadata.input.timesteps as u64;
        assert_eq!(
            reference.samples,
            node.shape.len() as u64 * t,
            "{}",
            node.name
        );
        // φ maps [−1, 2) into itself, so no rectified value is out of range there unless H is.
        assert!(h.rectified.underflow <= h.potential.underflow);
        assert!(h.rectified.overflow <= h.potential.overflow);
        for executor in [ExecutorKind::Dense, ExecutorKind::Event] {
            let got = quantization(&model, executor, i, &recording);
            assert_eq!(
                got.histograms, reference.histograms,
                "{executor:?} {}",
                node.name
            );
        }
    }
}

#[test]
fn files_without_a_training_history_fail_with_exit_code_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let untrained = dir.path().join("untrained.safetensors");
    let o = run_inflor(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "3",
        "--input",
        "2x16x16",
        "--no-calibrate",
        untrained.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let garbled = dir.path().join("run.jsonl");
    std::fs::write(&garbled, "{\"epoch\": 1, \"lr\": \"fast\"}\n").unwrap();
    let recording = dir.path().join("events.bin");
    std::fs::write(&recording, [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let missing = dir.path().join("missing.safetensors");
    let out = dir.path().join("plots");
    for (file, says) in [
        (&untrained, "no training history"),
        (&empty, "no training history"),
        (&garbled, "line 1"),
        (&recording, "neither a model file"),
        (&missing, "cannot read"),
    ] {
        let o = plot(&[file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {stderr}", file.display());
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!out.exists(), "nothing is written for {}", file.display());
    }
}

#[test]
fn the_membrane_plot_needs_a_model_and_an_existing_layer() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let model = dir.path().join("m.safetensors");
    let metrics = dir.path().join("m.jsonl");
    train(
        &ds,
        &model,
        &["--epochs", "1", "--metrics-out", metrics.to_str().unwrap()],
    );
    let out = dir.path().join("plots");
    let o = plot(&[
        metrics.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs a model file"), "{stderr}");
    let o = plot(&[
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--layer",
        "99",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no neuron layer 99"), "{stderr}");
    assert!(!out.exists());
}
