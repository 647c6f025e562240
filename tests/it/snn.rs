//! Integration tests: the neuron (paper Figure 2) and the reference and dense executors
//! agreeing bit for bit on every architecture; `infer` end to end on a real recording.

use std::sync::Arc;

use inflor::binner::SparseFrame;
use inflor::exec::{
    ExecError, ExecutorKind, Plan, PlanOptions, RunOptions, RunOutput as Output, input_frame_shape,
    synthetic_frames,
};
use inflor::model::{Architecture, Model};
use inflor::snn::{Network, NeuronKind, Node, Op, Shape, VTH};
use proptest::prelude::*;

use crate::model::{calibrated_model, spec};

/// One run from rest on a fresh plan of `kind`.
fn run_on(
    network: &Arc<Network>,
    kind: ExecutorKind,
    frames: &[SparseFrame],
    options: &RunOptions,
) -> Output {
    let plan = Plan::new(Arc::clone(network), kind, PlanOptions::default()).unwrap();
    let mut state = plan.new_state();
    plan.run(&mut plan.new_scratch(), &mut state, frames, options)
        .unwrap()
}

fn run_both(
    network: &Arc<Network>,
    frames: &[SparseFrame],
    quantization: Option<usize>,
) -> (Output, Output) {
    let options = RunOptions {
        record_spikes: true,
        quantization_node: quantization,
    };
    let reference = run_on(network, ExecutorKind::Reference, frames, &options);
    let dense = run_on(network, ExecutorKind::Dense, frames, &options);
    (reference, dense)
}

/// Spikes identical at every layer and timestep, logits bit-identical, same counters.
fn assert_identical(reference: &Output, dense: &Output) {
    let (rs, ds) = (
        reference.spikes.as_ref().unwrap(),
        dense.spikes.as_ref().unwrap(),
    );
    assert_eq!(rs.len(), ds.len());
    for (r, d) in rs.iter().zip(ds) {
        assert_eq!(r.node, d.node);
        for (t, (a, b)) in r.steps.iter().zip(&d.steps).enumerate() {
            assert_eq!(a, b, "spikes differ at node {} timestep {t}", r.node);
        }
    }
    let bits = |o: &Output| o.logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(reference), bits(dense), "logits differ");
    for (r, d) in reference.stats.nodes.iter().zip(&dense.stats.nodes) {
        assert_eq!(r.spikes, d.spikes, "{}", r.name);
        assert_eq!(r.synaptic_ops, d.synaptic_ops, "{}", r.name);
        assert_eq!(r.dense_macs, d.dense_macs, "{}", r.name);
        assert_eq!(r.neuron_updates, d.neuron_updates, "{}", r.name);
    }
    assert_eq!(reference.stats.quantization, dense.stats.quantization);
}

#[test]
fn figure2_srif_fires_three_times_and_hard_reset_if_four() {
    let inputs = [1.5f32, 1.2, 1.5, 0.9, 1.4].map(|k| k * VTH);
    let count = |kind: NeuronKind| {
        let mut u = 0.0;
        inputs
            .iter()
            .map(|&x| {
                let (o, next) = kind.step(u, x);
                u = next;
                o
            })
            .sum::<f32>()
    };
    assert_eq!(count(NeuronKind::Srif), 3.0);
    assert_eq!(count(NeuronKind::IfHard), 4.0);
}

#[test]
fn reference_equals_dense_bit_for_bit_on_every_architecture() {
    for (arch, side) in [
        (Architecture::Tiny, 16),
        (Architecture::VggSnn, 16),
        (Architecture::Resnet19, 8),
        (Architecture::Resnet20, 8),
    ] {
        let model = calibrated_model(arch, side, 11, NeuronKind::Srif);
        let network = &model.network;
        let frames = synthetic_frames(input_frame_shape(network), 3, 0.1, 99);
        let first_neuron = network.neuron_nodes().next();
        let (reference, dense) = run_both(network, &frames, first_neuron);
        assert_identical(&reference, &dense);
        // The comparison means something only if the network is active but not saturated.
        let rate = dense.stats.mean_firing_rate();
        assert!(rate > 0.02 && rate < 0.6, "{arch}: mean firing rate {rate}");
        for node in network.neuron_nodes() {
            assert!(
                dense.stats.nodes[node].spikes > 0,
                "{arch}: node {node} silent"
            );
        }
        // MPR pulls every potential toward its spike, so it never increases the error.
        let q = dense.stats.quantization.unwrap();
        assert!(
            q.samples > 0 && q.mean_mpr() < q.mean_plain(),
            "{arch}: {q:?}"
        );
    }
}

#[test]
fn reference_equals_dense_for_hard_reset_neurons() {
    for neuron in [NeuronKind::IfHard, NeuronKind::LifHard { tau: 0.25 }] {
        let model = calibrated_model(Architecture::Resnet20, 8, 5, neuron);
        let frames = synthetic_frames(input_frame_shape(&model.network), 3, 0.1, 4);
        let (reference, dense) = run_both(&model.network, &frames, None);
        assert_identical(&reference, &dense);
        assert!(dense.stats.total_spikes() > 0);
    }
}

#[test]
fn reference_equals_dense_on_a_hand_made_graph_with_sum_pooling() {
    let conv_w: Vec<f32> = (0..2 * 3 * 3 * 4)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 20.0)
        .collect();
    let nodes = vec![
        Node::new("input", Op::Input, vec![], Shape::new(6, 6, 2)),
        Node::new(
            "conv",
            Op::Conv2d {
                in_ch: 2,
                out_ch: 4,
                kernel: (3, 3),
                stride: 1,
                padding: 1,
                weight: conv_w,
                bias: vec![0.1, 0.2, -0.1, 0.3],
            },
            vec![0],
            Shape::new(6, 6, 4),
        ),
        Node::new(
            "sn0",
            Op::Neuron(NeuronKind::Srif),
            vec![1],
            Shape::new(6, 6, 4),
        ),
        Node::new(
            "sum",
            Op::SumPool { k: 3, stride: 3 },
            vec![2],
            Shape::new(2, 2, 4),
        ),
        Node::new("flat", Op::Flatten, vec![3], Shape::vector(16)),
        Node::new(
            "fc",
            Op::Linear {
                in_features: 16,
                out_features: 3,
                weight: (0..48).map(|i| (i as f32 - 24.0) / 50.0).collect(),
                bias: vec![0.0, 0.5, -0.5],
            },
            vec![4],
            Shape::vector(3),
        ),
        Node::new("out", Op::Output, vec![5], Shape::vector(3)),
    ];
    let network = Arc::new(Network::new(nodes).unwrap());
    let frames = synthetic_frames(input_frame_shape(&network), 4, 0.3, 1);
    let (reference, dense) = run_both(&network, &frames, Some(2));
    assert_identical(&reference, &dense);
    assert!(dense.stats.total_spikes() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn reference_equals_dense_on_random_tiny_networks(
        seed in 0u64..1000,
        density in 0.0f64..0.4,
        timesteps in 1usize..4,
        lif in any::<bool>(),
    ) {
        let mut model = Model::random(spec(Architecture::Tiny, 8, 4), timesteps, seed).unwrap();
        let params = &mut model.parameters;
        // Uncalibrated but lively: amplify and offset every BN.
        for (name, t) in params.iter_mut() {
            if name.ends_with(".running_var") {
                t.data.iter_mut().for_each(|v| *v = 0.02);
            }
            if name.ends_with("bn.bias") {
                t.data.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 5) as f32 * 0.1 - 0.1);
            }
        }
        let neuron = if lif { NeuronKind::LifHard { tau: 0.25 } } else { NeuronKind::Srif };
        model.metadata.neuron.model = neuron;
        model.rebuild().unwrap();
        let frames = synthetic_frames(input_frame_shape(&model.network), timesteps, density, seed + 1);
        let (reference, dense) = run_both(&model.network, &frames, Some(3));
        assert_identical(&reference, &dense);
    }
}

#[test]
fn executors_reject_bad_frames_and_foreign_states() {
    let model = Model::random(spec(Architecture::Tiny, 8, 2), 2, 0).unwrap();
    let network = &model.network;
    let other = Model::random(spec(Architecture::Tiny, 16, 2), 2, 0).unwrap();
    let options = RunOptions::default();
    for kind in ExecutorKind::ALL {
        let plan = Plan::new(Arc::clone(network), kind, PlanOptions::default()).unwrap();
        let mut state = plan.new_state();
        let mut scratch = plan.new_scratch();
        assert_eq!(
            plan.run(&mut scratch, &mut state, &[], &options)
                .unwrap_err(),
            ExecError::NoFrames
        );
        let mut wrong = input_frame_shape(network);
        wrong.width += 1;
        let frames = vec![SparseFrame::empty(wrong)];
        assert!(matches!(
            plan.run(&mut scratch, &mut state, &frames, &options),
            Err(ExecError::FrameShape { index: 0, .. })
        ));
        let mut frame = SparseFrame::empty(input_frame_shape(network));
        frame.indices = vec![5, 3];
        frame.values = vec![1.0, 1.0];
        assert!(matches!(
            plan.run(&mut scratch, &mut state, &[frame], &options),
            Err(ExecError::BadFrame { .. })
        ));
        // States and scratches of any other plan are refused: another network, and another
        // plan of the very same network.
        let frames = synthetic_frames(input_frame_shape(network), 1, 0.1, 0);
        let foreign = Plan::new(Arc::clone(&other.network), kind, PlanOptions::default()).unwrap();
        let twin = Plan::new(Arc::clone(network), kind, PlanOptions::default()).unwrap();
        for stranger in [&foreign, &twin] {
            assert_eq!(
                plan.run(&mut scratch, &mut stranger.new_state(), &frames, &options)
                    .unwrap_err(),
                ExecError::StateMismatch
            );
            assert_eq!(
                plan.run(&mut stranger.new_scratch(), &mut state, &frames, &options)
                    .unwrap_err(),
                ExecError::ScratchMismatch
            );
        }
        assert!(
            plan.run(&mut scratch, &mut state, &frames, &options)
                .is_ok()
        );
    }
}

#[test]
fn state_memory_is_four_bytes_per_neuron() {
    let model = Model::random(spec(Architecture::Resnet19, 48, 10), 10, 0).unwrap();
    let options = PlanOptions {
        background_steps: 1,
        ..PlanOptions::default()
    };
    for kind in ExecutorKind::ALL {
        let plan = Plan::new(Arc::clone(&model.network), kind, options.clone()).unwrap();
        let state = plan.new_state();
        let neurons = model.network.neuron_count();
        assert!(
            state.heap_bytes() <= 4 * neurons + (1 << 20),
            "{kind}: {} bytes for {neurons} neurons",
            state.heap_bytes()
        );
        assert!(std::mem::size_of_val(&state) < 128);
    }
}

/// `inflor infer` end to end on a real N-MNIST recording, with frames dumped.
#[test]
fn cli_infer_on_a_real_recording() {
    use std::process::Command;
    let Some(recording) = crate::support::shared_data_or_skip("nmnist/sample_nmnist.bin") else {
        return;
    };
    let bin = env!("CARGO_BIN_EXE_inflor");
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.safetensors");
    let status = Command::new(bin)
        .args([
            "model",
            "init",
            "--arch",
            "tiny",
            "--classes",
            "10",
            "--input",
            "2x34x34",
        ])
        .args(["--seed", "3", "--timesteps", "4"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let frames = dir.path().join("frames.npy");
    let infer = Command::new(bin)
        .args([
            "infer", "--json", "--format", "atis", "--top-k", "3", "--model",
        ])
        .arg(&model)
        .arg(&recording)
        .arg("--dump-frames")
        .arg(&frames)
        .output()
        .unwrap();
    assert!(
        infer.status.success(),
        "{}",
        String::from_utf8_lossy(&infer.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&infer.stdout).unwrap();
    assert_eq!(line["events"], 4325);
    assert_eq!(line["top_k"].as_array().unwrap().len(), 3);
    assert!(line["predicted"].as_u64().unwrap() < 10);
    let rate = line["stats"]["firing_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 0.6, "firing rate {rate}");
    let npy = std::fs::read(&frames).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY"));

    // A file that is not a model is bad input: exit code 2.
    let bad = Command::new(bin)
        .args(["infer", "--model"])
        .arg(&recording)
        .arg(&recording)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
