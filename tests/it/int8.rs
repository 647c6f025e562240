//! Integration tests: int8 models. Quantized built-in architectures run bit-identically on the
//! reference, dense and event-driven executors (spikes at every layer and timestep, logits,
//! final membranes) for every neuron kind, on random inputs and on real DVS recordings; the
//! integer accumulator cannot overflow at the largest fan-in a model may have, and a larger
//! one is refused; the model file round-trips int8 weights as `I8` tensors and refuses broken
//! ones; and `inflor model quantize` writes a model that `inflor infer` runs.

use std::sync::Arc;

use inflor::binner::{
    FrameBinner, FrameShape, FrameSpec, RecordingWindows, ResizeMode, SparseFrame,
};
use inflor::exec::{
    EventOptions, ExecutorKind, Plan, PlanOptions, Pool, RunOptions, RunOutput, State,
};
use inflor::format::{DecodeOptions, read_file};
use inflor::model::{ArchSpec, Architecture, Model, NodeOp, QuantizeMethod, quantize};
use inflor::snn::network::{INT8_MAX_WEIGHT, Int8Weights, MAX_INT8_FAN_IN, Node};
use inflor::snn::{Network, NeuronKind, Op, Shape};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::{run_inflor, shared_data_or_skip};

/// A built-in architecture with random weights and random batch norms (so the folded biases
/// drive some neurons without input), quantized with per-channel max-abs scales.
fn int8_model(arch: Architecture, side: usize, seed: u64, kind: NeuronKind) -> Model {
    let spec = ArchSpec {
        arch,
        channels: 2,
        height: side,
        width: side,
        classes: 10,
    };
    let mut model = Model::random(spec, 4, seed).expect("random model");
    model.metadata.neuron.model = kind;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut bn = Vec::new();
    for node in &model.metadata.graph.nodes {
        if let NodeOp::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            ..
        } = &node.op
        {
            bn.push((weight.clone(), (0.6, 1.6)));
            bn.push((bias.clone(), (-0.2, 0.4)));
            bn.push((running_mean.clone(), (-0.3, 0.3)));
            bn.push((running_var.clone(), (0.5, 2.0)));
        }
    }
    for (name, (lo, hi)) in bn {
        if let Some(t) = model.parameters.get_mut(&name) {
            for v in &mut t.data {
                *v = rng.random_range(lo..hi);
            }
        }
    }
    model.rebuild().expect("rebuild");
    quantize(&model, QuantizeMethod::MaxAbs).expect("quantize")
}

fn frame_shape(side: usize) -> FrameShape {
    FrameShape {
        channels: 2,
        height: side,
        width: side,
    }
}

/// `t` frames with each value nonzero with probability `density`: 1 if `binary`, else an
/// event count 1–3.
fn random_frames(side: usize, t: usize, density: f64, binary: bool, seed: u64) -> Vec<SparseFrame> {
    let shape = frame_shape(side);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..t)
        .map(|_| {
            let dense: Vec<f32> = (0..shape.len())
                .map(|_| match rng.random_bool(density) {
                    false => 0.0,
                    true if binary => 1.0,
                    true => rng.random_range(1..4) as f32,
                })
                .collect();
            SparseFrame::from_dense(shape, &dense)
        })
        .collect()
}

fn recording() -> RunOptions {
    RunOptions {
        record_spikes: true,
        quantization_node: None,
    }
}

/// One run from rest of `kind` on `network`: the output and the exact final membranes.
fn run(
    network: &Arc<Network>,
    kind: ExecutorKind,
    frames: &[SparseFrame],
    pool: Option<Pool>,
    event: EventOptions,
) -> (RunOutput, Vec<f32>) {
    let options = PlanOptions {
        pool,
        background_steps: frames.len(),
        event,
    };
    let plan = Plan::new(Arc::clone(network), kind, options).expect("plan");
    let mut state: State = plan.new_state();
    let out = plan
        .run(&mut plan.new_scratch(), &mut state, frames, &recording())
        .expect("run");
    let membranes = plan.membranes(&state).expect("own state");
    (out, membranes)
}

/// Reference, dense and event-driven runs are the same run: spikes of every neuron node at
/// every timestep, logits bit for bit, final membranes. Returns the reference's output.
fn check_all(
    network: Network,
    frames: &[SparseFrame],
    threads: usize,
    event: EventOptions,
) -> RunOutput {
    let network = Arc::new(network);
    let (expect, expect_membranes) = run(
        &network,
        ExecutorKind::Reference,
        frames,
        None,
        EventOptions::default(),
    );
    for kind in [ExecutorKind::Dense, ExecutorKind::Event] {
        let pool = (threads > 1).then(|| Pool::new(threads).expect("pool"));
        let (got, membranes) = run(&network, kind, frames, pool, event);
        let (Some(es), Some(gs)) = (&expect.spikes, &got.spikes) else {
            panic!("spikes not recorded");
        };
        assert_eq!(es.len(), gs.len());
        for (e, g) in es.iter().zip(gs) {
            assert_eq!(e.node, g.node);
            for (t, (a, b)) in e.steps.iter().zip(&g.steps).enumerate() {
                assert!(
                    a == b,
                    "{kind}: node {} ({}) differs at t={t}: {} vs {} spikes",
                    e.node,
                    network.nodes()[e.node].name,
                    a.len(),
                    b.len()
                );
            }
        }
        let bits = |l: &[f32]| l.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&expect.logits),
            bits(&got.logits),
            "{kind}: logits {:?} vs {:?}",
            expect.logits,
            got.logits
        );
        assert!(
            expect_membranes == membranes,
            "{kind}: final membranes differ"
        );
        for (e, g) in expect.stats.nodes.iter().zip(&got.stats.nodes) {
            assert_eq!(e.spikes, g.spikes, "{kind}: spike count of {}", e.name);
            assert_eq!(
                e.synaptic_ops, g.synaptic_ops,
                "{kind}: synaptic ops of {}",
                e.name
            );
        }
    }
    expect
}

/// Every conv and linear that reads spikes is int8; the first conv (event counts) and a
/// classifier after a global average pool (a mean of spikes) keep f32 weights.
#[test]
fn quantize_picks_the_nodes_that_read_spikes() {
    for arch in Architecture::ALL {
        let model = int8_model(arch, 16, 1, NeuronKind::Srif);
        let net = &model.network;
        assert!(net.is_quantized(), "{arch}");
        for (i, node) in net.nodes().iter().enumerate() {
            if !node.op.is_weighted() {
                assert!(net.int8(i).is_none());
                continue;
            }
            let binary = net.is_binary(node.inputs[0]);
            assert_eq!(net.int8(i).is_some(), binary, "{arch}: {}", node.name);
        }
        let first = net.nodes().iter().position(|n| n.op.is_weighted()).unwrap();
        assert!(
            net.int8(first).is_none(),
            "{arch}: the first conv stays f32"
        );
    }
}

#[test]
fn tiny_48x48_int8_executors_agree() {
    let model = int8_model(Architecture::Tiny, 48, 3, NeuronKind::Srif);
    let frames = random_frames(48, 6, 0.05, false, 4);
    let out = check_all(
        (*model.network).clone(),
        &frames,
        1,
        EventOptions::default(),
    );
    assert!(out.stats.total_spikes() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any architecture, neuron kind, weights, input density and kind (counts or spikes),
    /// thread count, region tracking and GEMM thresholds of the event-driven executor (its
    /// float first conv may take the GEMM path; int8 convs always gather): the three
    /// executors give the same run.
    #[test]
    fn int8_executors_agree_on_every_architecture_and_neuron(
        arch in prop::sample::select(Architecture::ALL.to_vec()),
        seed in any::<u64>(),
        density in 0.0f64..0.3,
        binary in any::<bool>(),
        threads in 1usize..3,
        tracking in any::<bool>(),
        max_active_fraction in 0.0f64..1.0,
        gemm_above in prop::sample::select(vec![-1.0f64, 0.1, 0.5, 2.0]),
        kind in prop::sample::select(vec![
            NeuronKind::Srif,
            NeuronKind::IfHard,
            NeuronKind::LifHard { tau: 0.25 },
        ]),
    ) {
        let model = int8_model(arch, 16, seed, kind);
        let frames = random_frames(16, 3, density, binary, seed.wrapping_add(1));
        let options = EventOptions {
            tracking,
            max_active_fraction,
            gemm_above_binary: gemm_above,
            gemm_above_valued: gemm_above,
            gemm_above_int8: gemm_above,
            ..EventOptions::default()
        };
        check_all((*model.network).clone(), &frames, threads, options);
    }
}

/// Forcing every conv onto the event-driven executor's GEMM path (int8 convs onto the integer
/// GEMM) gives the reference's run, and int8 convs did take that path.
#[test]
fn int8_gemm_path_inside_the_event_executor_gives_the_same_bits() {
    for arch in [
        Architecture::Tiny,
        Architecture::Resnet20,
        Architecture::VggSnn,
    ] {
        let model = int8_model(arch, 24, 13, NeuronKind::Srif);
        let network = Arc::new((*model.network).clone());
        let frames = random_frames(24, 3, 0.2, false, 13);
        let options = EventOptions {
            gemm_above_binary: -1.0,
            gemm_above_valued: -1.0,
            gemm_above_int8: -1.0,
            ..EventOptions::default()
        };
        check_all((*network).clone(), &frames, 2, options);
        let plan = Plan::new(
            Arc::clone(&network),
            ExecutorKind::Event,
            PlanOptions {
                background_steps: 3,
                event: options,
                ..PlanOptions::default()
            },
        )
        .expect("plan");
        let mut scratch = plan.new_scratch();
        plan.run(&mut scratch, &mut plan.new_state(), &frames, &recording())
            .expect("run");
        let int8_gemm_steps: u64 = scratch
            .gemm_steps()
            .iter()
            .enumerate()
            .filter(|&(i, _)| network.int8(i).is_some())
            .map(|(_, &n)| n)
            .sum();
        assert!(
            int8_gemm_steps > 0,
            "{arch}: no int8 conv took the GEMM path"
        );
    }
}

/// Real MNIST-DVS recordings (DVS128, AEDAT 2.0), binned into 6 frames of 2×48×48 with
/// bilinear resizing, through int8 tiny and resnet20 (two threads): the same run on all three
/// executors. Needs ../shared/data (skipped without it, except under CI).
#[test]
fn int8_real_recordings_agree() {
    let files = [
        "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
        "mnist_dvs/mnist_0_scale16_0001_qt1.aedat",
    ];
    let mut paths = Vec::new();
    for f in files {
        let Some(p) = shared_data_or_skip(f) else {
            return;
        };
        paths.push(p);
    }
    let (side, t) = (48u16, 6usize);
    let tiny = int8_model(Architecture::Tiny, 48, 21, NeuronKind::Srif);
    let resnet20 = int8_model(Architecture::Resnet20, 48, 22, NeuronKind::Srif);
    for path in paths {
        let rec = read_file(&path, None, &DecodeOptions::default()).expect("decode");
        assert!(!rec.events.is_empty());
        let spec = FrameSpec {
            sensor_width: rec.info.width,
            sensor_height: rec.info.height,
            width: side,
            height: side,
            resize: ResizeMode::Bilinear,
            normalization: Default::default(),
        };
        let frames = FrameBinner::new(&spec)
            .expect("binner")
            .bin_recording(&rec.events, RecordingWindows::EqualCount { bins: t })
            .expect("bin");
        let out = check_all((*tiny.network).clone(), &frames, 1, EventOptions::default());
        assert!(out.stats.total_spikes() > 0);
        check_all(
            (*resnet20.network).clone(),
            &frames,
            2,
            EventOptions::default(),
        );
    }
}

/// Input → neuron → flatten → linear (int8, `fan_in` inputs, 2 outputs with every weight
/// +127 and −127) → output.
fn widest_linear(fan_in: usize) -> Result<Network, inflor::snn::GraphError> {
    let nodes = vec![
        Node::new("input", Op::Input, vec![], Shape::new(1, 1, fan_in)),
        Node::new(
            "sn",
            Op::Neuron(NeuronKind::Srif),
            vec![0],
            Shape::new(1, 1, fan_in),
        ),
        Node::new("flat", Op::Flatten, vec![1], Shape::vector(fan_in)),
        Node::new(
            "fc",
            Op::Linear {
                in_features: fan_in,
                out_features: 2,
                weight: vec![0.0; fan_in * 2],
                bias: vec![0.0; 2],
            },
            vec![2],
            Shape::vector(2),
        ),
        Node::new("out", Op::Output, vec![3], Shape::vector(2)),
    ];
    let weight = (0..fan_in)
        .flat_map(|_| [INT8_MAX_WEIGHT, -INT8_MAX_WEIGHT])
        .collect();
    Network::new(nodes)?.with_int8(
        3,
        Int8Weights {
            weight,
            scale: vec![1.0, 1.0],
        },
    )
}

/// The accumulator bound: at the largest fan-in a model may have, every input spiking into
/// weights of ±127 sums to ±127·MAX_INT8_FAN_IN, which is inside i32 and exact in f32, and all
/// three executors return exactly that; one more input is refused when the weights are
/// attached (and so when a model file is loaded).
#[test]
fn the_integer_sum_cannot_overflow_at_the_largest_fan_in() {
    let worst = i64::from(INT8_MAX_WEIGHT) * MAX_INT8_FAN_IN as i64;
    assert!(worst <= i64::from(i32::MAX));
    assert!(worst <= 1 << 24, "the sum converts to f32 exactly");
    assert_eq!(worst as i32 as f32 as i64, worst);

    let network = widest_linear(MAX_INT8_FAN_IN).expect("the largest fan-in is accepted");
    let shape = FrameShape {
        channels: MAX_INT8_FAN_IN,
        height: 1,
        width: 1,
    };
    // A current of 1 makes every SRIF neuron spike at t = 0.
    let frames = vec![SparseFrame::from_dense(shape, &vec![1.0; MAX_INT8_FAN_IN])];
    let out = check_all(network, &frames, 1, EventOptions::default());
    assert_eq!(out.logits, vec![worst as f32, -worst as f32]);

    let refused = widest_linear(MAX_INT8_FAN_IN + 1);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("fan-in")),
        "{refused:?}"
    );
}

/// Int8 weights only on nodes that read spikes: the first conv (event counts) is refused.
#[test]
fn int8_weights_need_spike_inputs() {
    let model = int8_model(Architecture::Tiny, 16, 5, NeuronKind::Srif);
    let network = (*model.network).clone();
    let first = network
        .nodes()
        .iter()
        .position(|n| n.op.is_weighted())
        .unwrap();
    let Op::Conv2d { weight, out_ch, .. } = &network.nodes()[first].op else {
        panic!("the first weighted node is a conv");
    };
    let q = Int8Weights {
        weight: vec![1; weight.len()],
        scale: vec![0.1; *out_ch],
    };
    let err = network.with_int8(first, q).unwrap_err();
    assert!(err.to_string().contains("binary"), "{err}");
}

/// The file stores int8 weights as I8 tensors with their scales, and reads back the same
/// model (parameters and network, integers included).
#[test]
fn int8_models_round_trip_through_the_file() {
    for arch in [Architecture::Tiny, Architecture::Resnet20] {
        let model = int8_model(arch, 16, 7, NeuronKind::Srif);
        let bytes = model.to_bytes().expect("serialise");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("container");
        let q = model.metadata.quantization.as_ref().expect("quantized");
        assert!(!q.nodes.is_empty());
        for name in &q.nodes {
            let weight = format!("{name}.weight");
            assert_eq!(st.tensor(&weight).unwrap().dtype(), safetensors::Dtype::I8);
            let scale = st.tensor(&format!("{weight}_scale")).unwrap();
            assert_eq!(scale.dtype(), safetensors::Dtype::F32);
        }
        let back = Model::from_bytes(&bytes).expect("reload");
        assert_eq!(back.metadata, model.metadata);
        assert_eq!(back.parameters, model.parameters);
        assert_eq!(*back.network, *model.network);
    }
}

/// Broken int8 files are refused with an error naming the tensor: a weight moved off its
/// grid (in memory, before saving), and an int8 weight whose scales are missing.
#[test]
fn broken_int8_models_are_refused() {
    let model = int8_model(Architecture::Tiny, 16, 8, NeuronKind::Srif);
    let node = model.metadata.quantization.as_ref().unwrap().nodes[0].clone();
    let weight = format!("{node}.weight");

    let mut params = model.parameters.clone();
    params.get_mut(&weight).unwrap().data[0] *= 1.0001;
    let err = Model::new(model.metadata.clone(), params).unwrap_err();
    assert!(err.to_string().contains(&weight), "{err}");

    let mut params = model.parameters.clone();
    params.remove(&format!("{weight}_scale"));
    let err = Model::new(model.metadata.clone(), params).unwrap_err();
    assert!(err.to_string().contains("_scale"), "{err}");

    let err = quantize(&model, QuantizeMethod::MaxAbs).unwrap_err();
    assert!(err.to_string().contains("already quantized"), "{err}");
}

/// `inflor model quantize` on a generated dataset reports float and int8 test accuracy and
/// writes a model that `inflor model info` and `inflor infer` accept.
#[test]
fn model_quantize_cli_reports_accuracy_and_writes_an_int8_model() {
    let dir = tempfile::tempdir().unwrap();
    let ds = crate::train::dataset(dir.path());
    let float = dir.path().join("float.safetensors");
    let int8 = dir.path().join("int8.safetensors");
    let init = run_inflor(&[
        "model",
        "init",
        "--arch",
        "tiny",
        "--classes",
        "3",
        "--class-names",
        "bar-h,bar-v,square",
        "--input",
        "2x16x16",
        "--timesteps",
        "4",
        float.to_str().unwrap(),
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = run_inflor(&[
        "model",
        "quantize",
        float.to_str().unwrap(),
        int8.to_str().unwrap(),
        "--calibrate",
        ds.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("float") && stdout.contains("int8"),
        "{stdout}"
    );
    assert!(stdout.contains("recordings"), "{stdout}");
    let model = Model::load(&int8).expect("the int8 model loads");
    assert!(model.network.is_quantized());
    // Writing over an existing file needs --force.
    let again = run_inflor(&[
        "model",
        "quantize",
        float.to_str().unwrap(),
        int8.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    let info = run_inflor(&["model", "info", int8.to_str().unwrap()]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let recording = crate::support::repo_file("assets/dvs-digits-0.aedat");
    let infer = run_inflor(&[
        "infer",
        "--json",
        "--model",
        int8.to_str().unwrap(),
        recording.to_str().unwrap(),
    ]);
    assert!(
        infer.status.success(),
        "{}",
        String::from_utf8_lossy(&infer.stderr)
    ); // Fine-tuning starts from float weights: an int8 model is refused up front, by name.
    let train = run_inflor(&[
        "train",
        ds.to_str().unwrap(),
        "--init",
        int8.to_str().unwrap(),
        "--epochs",
        "1",
        "--out",
        dir.path().join("tuned.safetensors").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&train.stderr);
    assert_eq!(train.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("int8 model"), "{stderr}");
}
