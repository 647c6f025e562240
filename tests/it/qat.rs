//! Integration tests: quantization-aware training (`inflor train --quantize int8`). The
//! fake-quant weights are post-training quantization's grid, the forward and backward passes
//! are those of the int8 weights (straight-through gradients on the float ones); a run exports
//! the int8 model it trained, whose executors reproduce the trainer's logits and whose `inflor
//! eval` accuracy is the trainer's final figure; fine-tuning a float model works; bad
//! combinations are refused with exit 2.

use inflor::dataset::{Dataset, Split};
use inflor::exec::ExecutorKind;
use inflor::format::DecodeOptions;
use inflor::model::quantize::{dequantize, quantizable_nodes, scale_name, to_grid, weight_of};
use inflor::model::{ArchSpec, Architecture, Model, QuantizeMethod, file, quantize};
use inflor::train::data::{batch_frames, bin_bytes};
use inflor::train::{Mode, Net, SpikingConfig, TrainConfig, TrainGraph, Trainer};

use crate::support::run_inflor;
use crate::train::{argmax, dataset, session_logits, train};

/// The weight tensors post-training quantization makes int8.
fn quantized_weights(model: &Model) -> Vec<String> {
    quantizable_nodes(model)
        .iter()
        .map(|n| weight_of(model.graph(), n).unwrap().to_owned())
        .collect()
}

#[test]
fn fake_quant_weights_are_the_ptq_grid() {
    let spec = ArchSpec {
        arch: Architecture::Tiny,
        channels: 2,
        height: 16,
        width: 16,
        classes: 3,
    };
    let model = Model::random(spec, 4, 7).unwrap();
    let weights = quantized_weights(&model);
    assert!(!weights.is_empty());
    let graph = TrainGraph::from_graph(&model.metadata.graph, SpikingConfig::default()).unwrap();
    let mut net = Net::<f32>::from_parameters(graph, &model.parameters).unwrap();
    net.fake_quantize(&weights).unwrap();
    assert_eq!(net.fake_quantized(), weights);
    let fake = net.fake_quantized_parameters();
    let ptq = quantize(&model, QuantizeMethod::MaxAbs).unwrap();
    for (name, float) in &model.parameters {
        let got = &fake[name];
        if !weights.contains(name) {
            assert_eq!(got, float, "{name} is not quantized");
            continue;
        }
        let scales = &ptq.parameters[&scale_name(name)].data;
        let per_channel = got.data.len() / scales.len();
        let mut off_grid = 0;
        for (i, (&v, &w)) in got.data.iter().zip(&float.data).enumerate() {
            let scale = scales[i / per_channel];
            let q =
                to_grid(v, scale).unwrap_or_else(|| panic!("{name}[{i}] = {v} is off the grid"));
            assert_eq!(dequantize(q, scale), v);
            assert_eq!(v, ptq.parameters[name].data[i], "{name}[{i}]");
            off_grid += usize::from(v != w);
        }
        assert!(
            off_grid > 0,
            "{name}: the float weights were on the grid already"
        );
    }
    // The float (shadow) weights are what the network keeps and exports.
    for (name, t) in net.to_parameters() {
        assert_eq!(t, model.parameters[&name], "{name}");
    }
}

/// The exported model's `inflor eval --json` top-1 on `executor`.
fn eval_top1(model: &std::path::Path, ds: &std::path::Path, executor: &str) -> f64 {
    let report = crate::train::eval_json(model, ds, executor);
    assert_eq!(report["samples"], 6);
    report["top1"].as_f64().unwrap()
}

#[test]
fn qat_exports_the_int8_model_it_trained() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let out = dir.path().join("q.safetensors");
    let o = train(&ds, &out, &["--epochs", "2", "--quantize", "int8"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("quantization-aware training"), "{stderr}");

    let model = Model::load(&out).unwrap();
    assert!(model.network.is_quantized());
    let record = &model.metadata.provenance.extra["training"];
    assert_eq!(record["quantize"], "int8");
    let final_accuracy = record["final_test_accuracy"].as_f64().unwrap();

    // The checkpoint keeps the float weights; quantizing them gives the export exactly.
    let bytes = std::fs::read(out.with_extension("safetensors.ckpt")).unwrap();
    let (metadata, mut tensors) = file::read(&bytes).unwrap();
    assert!(metadata.quantization.is_none());
    tensors.retain(|name, _| !name.starts_with("optimizer."));
    let float = Model::new(metadata, tensors).unwrap();
    let q = model.metadata.quantization.as_ref().unwrap();
    assert_eq!(q.nodes, quantizable_nodes(&float));
    assert_eq!(
        quantize(&float, QuantizeMethod::MaxAbs).unwrap().parameters,
        model.parameters
    );

    // The trainer's fake-quant evaluation of the checkpoint's float weights is the int8
    // model's arithmetic: the same predictions, logits to rounding.
    let m = &float.metadata;
    let graph = TrainGraph::from_graph(&m.graph, SpikingConfig::default()).unwrap();
    let mut net = Net::from_parameters(graph, &float.parameters).unwrap();
    net.fake_quantize(&quantized_weights(&float)).unwrap();
    let t = m.input.timesteps;
    let mut trainer = Trainer::new(net, TrainConfig::default(), t);
    let dataset = Dataset::open(&ds, &"auto".parse().unwrap()).unwrap();
    let mut correct = 0;
    for s in dataset.split_samples(Split::Test) {
        let bytes = std::fs::read(&s.path).unwrap();
        let frames = bin_bytes(&s.path, &bytes, &m.input, &DecodeOptions::default()).unwrap();
        let mut batch = Vec::new();
        batch_frames(&[&frames], t, &mut batch);
        let (expected, _) = trainer.evaluate(&batch, &[s.label]);
        correct += usize::from(argmax(&expected) == s.label);
        for executor in [
            ExecutorKind::Reference,
            ExecutorKind::Dense,
            ExecutorKind::Event,
        ] {
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
    assert!((correct as f64 / 6.0 - final_accuracy).abs() < 1e-12);

    // The trainer's per-epoch test accuracy is the int8 model's, on every executor.
    for executor in ["reference", "dense", "event"] {
        let top1 = eval_top1(&out, &ds, executor);
        assert!(
            (top1 - final_accuracy).abs() < 1e-12,
            "{executor}: eval {top1}, trainer {final_accuracy}"
        );
    }
}

#[test]
fn qat_fine_tunes_a_float_model_and_refuses_bad_combinations() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let float = dir.path().join("float.safetensors");
    train(&ds, &float, &["--epochs", "1", "--max-steps", "2"]);
    let tuned = dir.path().join("tuned.safetensors");
    train(
        &ds,
        &tuned,
        &[
            "--init",
            float.to_str().unwrap(),
            "--quantize",
            "int8",
            "--epochs",
            "1",
            "--max-steps",
            "2",
        ],
    );
    let model = Model::load(&tuned).unwrap();
    assert!(model.network.is_quantized());
    let record = &model.metadata.provenance.extra["training"];
    assert_eq!(record["quantize"], "int8");
    let final_accuracy = record["final_test_accuracy"].as_f64().unwrap();
    assert!((eval_top1(&tuned, &ds, "event") - final_accuracy).abs() < 1e-12);

    let bad = |extra: &[&str], needle: &str| {
        let mut args = vec![
            "train".to_owned(),
            ds.to_str().unwrap().to_owned(),
            "--out".to_owned(),
            dir.path()
                .join("bad.safetensors")
                .to_str()
                .unwrap()
                .to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = run_inflor(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    };
    // Only int8 exists.
    bad(&["--quantize", "int4"], "int4");
    // A resumed run keeps its checkpoint's settings, quantization included.
    let ckpt = float.with_extension("safetensors.ckpt");
    bad(
        &["--resume", ckpt.to_str().unwrap(), "--quantize", "int8"],
        "--resume",
    );
}

/// The potentials of every neuron node and the parameter gradients of one training step of
/// `net` on a fixed input and output gradient.
fn step(net: &mut Net<f32>) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let (t, b) = (4, 2);
    let len = t * b * net.graph().input_shape().len();
    let input: Vec<f32> = (0..len)
        .map(|k| ((k as u64 * 2_654_435_761) >> 7) as f32 % 3.0)
        .collect();
    let tape = net.forward(&input, t, b, Mode::Train);
    let potentials = (0..net.graph().nodes().len())
        .filter_map(|i| tape.potential(i).map(<[f32]>::to_vec))
        .collect();
    let grad: Vec<f32> = (0..tape.outputs().len())
        .map(|k| (k % 7) as f32 * 0.01 - 0.03)
        .collect();
    net.zero_grad();
    net.backward(tape, grad);
    (
        potentials,
        net.params.iter().map(|p| p.grad.clone()).collect(),
    )
}

#[test]
fn the_fake_quant_passes_are_those_of_the_int8_weights_with_straight_through_gradients() {
    let spec = ArchSpec {
        arch: Architecture::Tiny,
        channels: 2,
        height: 16,
        width: 16,
        classes: 3,
    };
    let model = Model::random(spec, 4, 9).unwrap();
    let graph = TrainGraph::from_graph(&model.metadata.graph, SpikingConfig::default()).unwrap();
    let mut qat = Net::<f32>::from_parameters(graph.clone(), &model.parameters).unwrap();
    qat.fake_quantize(&quantized_weights(&model)).unwrap();
    // A float network holding the int8 weights' values.
    let mut grid =
        Net::<f32>::from_parameters(graph.clone(), &qat.fake_quantized_parameters()).unwrap();
    let mut float = Net::<f32>::from_parameters(graph, &model.parameters).unwrap();
    let (qat_h, qat_g) = step(&mut qat);
    let (grid_h, grid_g) = step(&mut grid);
    let (float_h, _) = step(&mut float);
    assert_eq!(qat_h, grid_h);
    assert_ne!(qat_h, float_h, "fake-quant changed nothing");
    // Straight through: the float weights get the gradient of the int8 weights.
    assert_eq!(qat_g, grid_g);
    // The float weights are untouched by the forward pass: they match the float network's
    // before any update.
    let fresh = Net::<f32>::from_parameters(
        TrainGraph::from_graph(&model.metadata.graph, SpikingConfig::default()).unwrap(),
        &model.parameters,
    )
    .unwrap();
    for (a, b) in qat.params.iter().zip(&fresh.params) {
        assert_eq!(a.value, b.value, "{}", a.name);
    }
}

#[test]
fn a_resumed_qat_run_is_the_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    train(&ds, &a, &["--epochs", "2", "--quantize", "int8"]);
    train(&ds, &b, &["--epochs", "1", "--quantize", "int8"]);
    let resumed = dir.path().join("b2.safetensors");
    let ckpt = b.with_extension("safetensors.ckpt");
    let o = train(
        &ds,
        &resumed,
        &["--epochs", "2", "--resume", ckpt.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("quantization-aware training"), "{stderr}");
    let (a, resumed) = (Model::load(&a).unwrap(), Model::load(&resumed).unwrap());
    assert!(resumed.network.is_quantized());
    assert_eq!(a.parameters, resumed.parameters);
    // Every epoch's losses, the fake-quant network's, are the same too (timings aside).
    let losses = |m: &Model| -> Vec<(serde_json::Value, serde_json::Value)> {
        m.metadata.provenance.extra["training"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["train_loss"].clone(), e["test_loss"].clone()))
            .collect()
    };
    assert_eq!(losses(&a), losses(&resumed));
    assert_eq!(losses(&a).len(), 2);
}
