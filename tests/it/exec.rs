//! Integration tests: the executors through `exec::Plan`. The event-driven executor
//! (`exec::sparse`) against the reference executor: "same" means identical spikes at every
//! neuron layer and timestep, bit-identical logits (the contract; the 1e-5 relative bound is
//! checked first so a failure says how far off it is), identical activity counters and an
//! identical final state — on every built-in architecture with random weights and random
//! sparse inputs, with inputs confined to a patch (so most neurons keep the background), and
//! on real DVS recordings. Then the stream semantics of every executor: `step` against `run`,
//! streams interleaved on one scratch against each alone, windows reset or continuous against
//! the reference's one long run; and that each plan runs its own model's weights and biases.

use std::sync::Arc;

use inflor::binner::{
    FrameBinner, FrameShape, FrameSpec, RecordingWindows, ResizeMode, SparseFrame,
};
use inflor::exec::{
    EventOptions, ExecutorKind, Plan, PlanOptions, Pool, RunOptions, RunOutput, State,
};
use inflor::format::{DecodeOptions, read_file};
use inflor::model::{ArchSpec, Architecture, BatchNormConfig, NodeOp, Parameters};
use inflor::snn::{Network, NeuronKind};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::shared_data;

/// A built-in architecture with random weights and random batch norms, so the folded biases
/// drive some neurons without any input (a non-trivial background).
fn random_network(arch: Architecture, h: usize, w: usize, seed: u64, kind: NeuronKind) -> Network {
    let spec = ArchSpec {
        arch,
        channels: 2,
        height: h,
        width: w,
        classes: 10,
    };
    let graph = spec.graph(BatchNormConfig::default()).expect("graph");
    let mut params: Parameters = graph.random_parameters(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let (mut bn_biases, mut bn_weights) = (Vec::new(), Vec::new());
    for node in &graph.nodes {
        if let NodeOp::BatchNorm { weight, bias, .. } = &node.op {
            bn_weights.push(weight.clone());
            bn_biases.push(bias.clone());
        }
    }
    for (name, tensor) in params.iter_mut() {
        let range = if name.ends_with(".running_mean") {
            Some((-0.3, 0.3))
        } else if name.ends_with(".running_var") {
            Some((0.5, 2.0))
        } else if bn_biases.contains(name) {
            Some((-0.2, 0.4))
        } else if bn_weights.contains(name) {
            Some((0.6, 1.6))
        } else {
            None
        };
        if let Some((lo, hi)) = range {
            for v in &mut tensor.data {
                *v = rng.random_range(lo..hi);
            }
        }
    }
    graph.network(&params, kind).expect("build")
}

fn shape(h: usize, w: usize) -> FrameShape {
    FrameShape {
        channels: 2,
        height: h,
        width: w,
    }
}

/// `t` frames with each value nonzero with probability `density`: 1 if `binary`, else an
/// event count 1–3.
fn random_frames(
    h: usize,
    w: usize,
    t: usize,
    density: f64,
    binary: bool,
    seed: u64,
) -> Vec<SparseFrame> {
    let shape = shape(h, w);
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

/// Frames whose events all fall in the square `[lo, hi)²`.
fn patch_frames(h: usize, w: usize, t: usize, lo: usize, hi: usize, seed: u64) -> Vec<SparseFrame> {
    let shape = shape(h, w);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..t)
        .map(|_| {
            let mut dense = vec![0.0f32; shape.len()];
            for y in lo..hi {
                for x in lo..hi {
                    if rng.random_bool(0.3) {
                        dense[shape.index(rng.random_range(0..2), y, x)] = 1.0;
                    }
                }
            }
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

/// A plan of `kind` for `network` with the given event options (and pool).
fn plan(
    network: &Arc<Network>,
    kind: ExecutorKind,
    event: EventOptions,
    background_steps: usize,
    pool: Option<Pool>,
) -> Arc<Plan> {
    let options = PlanOptions {
        pool,
        background_steps,
        event,
    };
    Plan::new(Arc::clone(network), kind, options).expect("plan")
}

/// One run from rest: the output and the exact final membranes.
fn run_fresh(plan: &Plan, frames: &[SparseFrame], options: &RunOptions) -> (RunOutput, State) {
    let mut state = plan.new_state();
    let out = plan
        .run(&mut plan.new_scratch(), &mut state, frames, options)
        .expect("run");
    (out, state)
}

/// Checks that `got` (final state `got_state` of plan `got_plan`) is the same run as
/// `expect` (of `expect_plan`).
fn assert_same(
    network: &Network,
    (expect_plan, expect, expect_state): (&Plan, &RunOutput, &State),
    (got_plan, got, got_state): (&Plan, &RunOutput, &State),
) {
    let (Some(es), Some(gs)) = (&expect.spikes, &got.spikes) else {
        panic!("spikes not recorded");
    };
    assert_eq!(es.len(), gs.len());
    for (e, g) in es.iter().zip(gs) {
        assert_eq!(e.node, g.node);
        assert_eq!(e.steps.len(), g.steps.len());
        for (t, (a, b)) in e.steps.iter().zip(&g.steps).enumerate() {
            assert!(
                a == b,
                "node {} ({}) differs at t={t}: {} vs {} spikes",
                e.node,
                network.nodes()[e.node].name,
                a.len(),
                b.len()
            );
        }
    }
    for (a, b) in expect.logits.iter().zip(&got.logits) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(b.abs()),
            "logits {:?} vs {:?}",
            expect.logits,
            got.logits
        );
    }
    assert_eq!(expect.logits, got.logits, "logits are not bit-identical");
    assert_eq!(expect.stats.timesteps, got.stats.timesteps);
    for (e, g) in expect.stats.nodes.iter().zip(&got.stats.nodes) {
        assert_eq!(e.spikes, g.spikes, "spike count of {}", e.name);
        assert_eq!(e.synaptic_ops, g.synaptic_ops, "synaptic ops of {}", e.name);
        assert_eq!(e.dense_macs, g.dense_macs, "dense MACs of {}", e.name);
        assert_eq!(
            e.neuron_updates_total, g.neuron_updates_total,
            "neurons of {}",
            e.name
        );
        assert!(g.neuron_updates <= g.neuron_updates_total);
        assert!(g.performed_ops <= g.dense_macs);
    }
    // The membranes left behind (background ones included) are the reference's; `==` so a
    // zero's sign does not count.
    assert!(
        expect_plan.membranes(expect_state).expect("own state")
            == got_plan.membranes(got_state).expect("own state"),
        "final membranes differ"
    );
    assert_eq!(expect_state.logits(), got_state.logits());
    assert_eq!(expect_state.timesteps(), got_state.timesteps());
}

/// Runs the reference and the event-driven executor from rest and checks they are the same.
fn check(
    network: Network,
    frames: &[SparseFrame],
    event: EventOptions,
    background_steps: usize,
    pool: Option<Pool>,
) -> RunOutput {
    let network = Arc::new(network);
    let reference = plan(
        &network,
        ExecutorKind::Reference,
        EventOptions::default(),
        0,
        None,
    );
    let (expect, expect_state) = run_fresh(&reference, frames, &recording());
    let event_plan = plan(&network, ExecutorKind::Event, event, background_steps, pool);
    let mut scratch = event_plan.new_scratch();
    let mut state = event_plan.new_state();
    let got = event_plan
        .run(&mut scratch, &mut state, frames, &recording())
        .expect("event run");
    assert_same(
        &network,
        (&reference, &expect, &expect_state),
        (&event_plan, &got, &state),
    );
    // A second run through the same scratch (warm buffers) from a reset state agrees too.
    state.reset();
    let again = event_plan
        .run(&mut scratch, &mut state, frames, &recording())
        .expect("event run");
    assert_eq!(again, got, "second run differs");
    got
}

#[test]
fn tiny_48x48_matches_the_reference() {
    let network = random_network(Architecture::Tiny, 48, 48, 1, NeuronKind::Srif);
    let frames = random_frames(48, 48, 6, 0.05, false, 2);
    let out = check(network, &frames, EventOptions::default(), 6, None);
    assert!(out.stats.total_spikes() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random architecture, weights, neuron model, input density and kind (counts or
    /// spikes), thread count, region settings and the densities above which convs run as
    /// im2col + GEMM: always the reference's run.
    #[test]
    fn random_networks_and_inputs_match_the_reference(
        arch in prop::sample::select(Architecture::ALL.to_vec()),
        seed in any::<u64>(),
        density in 0.0f64..0.3,
        binary in any::<bool>(),
        threads in 0usize..3,
        tracking in any::<bool>(),
        max_active_fraction in 0.0f64..1.0,
        gemm_above in prop::sample::select(vec![0.0f64, 0.1, 0.5, 2.0]),
        kind in prop::sample::select(vec![
            NeuronKind::Srif,
            NeuronKind::IfHard,
            NeuronKind::LifHard { tau: 0.25 },
        ]),
    ) {
        let network = random_network(arch, 16, 16, seed, kind);
        let frames = random_frames(16, 16, 3, density, binary, seed.wrapping_add(1));
        let options = EventOptions {
            tracking,
            max_active_fraction,
            gemm_above_binary: gemm_above,
            gemm_above_valued: gemm_above,
            ..EventOptions::default()
        };
        let pool = (threads > 0).then(|| Pool::new(threads).expect("pool"));
        check(network, &frames, options, 3, pool);
    }
}

/// Events only in a patch: most neurons of the early layers never see one, so the executor
/// steps fewer neurons than there are (counted), keeps the background elsewhere, and still
/// agrees exactly — including the membranes it never stepped.
#[test]
fn events_in_a_patch_touch_few_neurons_and_match_the_reference() {
    for (arch, side) in [
        (Architecture::Tiny, 32),
        (Architecture::Resnet20, 24),
        (Architecture::VggSnn, 16),
        (Architecture::Resnet19, 16),
    ] {
        let network = random_network(arch, side, side, 11, NeuronKind::Srif);
        let frames = patch_frames(side, side, 4, side / 2 - 2, side / 2 + 1, 5);
        let out = check(network, &frames, EventOptions::default(), 4, None);
        let (done, total) = out.stats.neuron_updates();
        assert!(done < total, "{arch}: {done} of {total} neuron updates");
    }
}

/// Forcing every conv onto the im2col + GEMM path, or never, gives the same run.
#[test]
fn gemm_path_gives_the_same_bits() {
    for arch in [
        Architecture::Tiny,
        Architecture::Resnet20,
        Architecture::VggSnn,
    ] {
        let network = Arc::new(random_network(arch, 24, 24, 13, NeuronKind::Srif));
        let frames = random_frames(24, 24, 3, 0.2, false, 13);
        let mut outputs = Vec::new();
        for gemm_above in [-1.0, 2.0] {
            let options = EventOptions {
                gemm_above_binary: gemm_above,
                gemm_above_valued: gemm_above,
                ..EventOptions::default()
            };
            let p = plan(&network, ExecutorKind::Event, options, 3, None);
            let mut scratch = p.new_scratch();
            let out = p
                .run(&mut scratch, &mut p.new_state(), &frames, &recording())
                .expect("run");
            let gemm_steps: u64 = scratch.gemm_steps().iter().sum();
            assert_eq!(
                gemm_steps > 0,
                gemm_above < 0.0,
                "{arch}: {gemm_steps} GEMM steps"
            );
            outputs.push(out);
        }
        assert_eq!(outputs[0].spikes, outputs[1].spikes);
        assert_eq!(outputs[0].logits, outputs[1].logits);
    }
}

/// A run longer than the background covers switches to computing everything at that
/// timestep, giving never-reached neurons their background membranes: still the same run.
#[test]
fn runs_longer_than_the_background_match_the_reference() {
    for arch in [Architecture::Tiny, Architecture::Resnet20] {
        let network = random_network(arch, 24, 24, 17, NeuronKind::Srif);
        let frames = patch_frames(24, 24, 5, 10, 13, 17);
        let out = check(network, &frames, EventOptions::default(), 2, None);
        let (done, total) = out.stats.neuron_updates();
        assert!(done < total, "{arch}: {done} of {total}");
    }
}

/// An empty input is exactly the background: no neuron of a tracked layer is stepped.
#[test]
fn empty_frames_step_only_untracked_layers() {
    let network = random_network(Architecture::Tiny, 32, 32, 3, NeuronKind::Srif);
    let frames = vec![SparseFrame::empty(shape(32, 32)); 5];
    let got = check(network.clone(), &frames, EventOptions::default(), 5, None);
    let network = Arc::new(network);
    let p = plan(
        &network,
        ExecutorKind::Event,
        EventOptions::default(),
        5,
        None,
    );
    let event = p.event().expect("event plan");
    for n in network.neuron_nodes() {
        let row = &got.stats.nodes[n];
        if event.tracks(n) {
            assert_eq!(row.neuron_updates, 0, "{} was stepped", row.name);
        }
    }
    assert!(
        network.neuron_nodes().any(|n| event.tracks(n)),
        "no layer tracked"
    );
}

/// The quantization statistic observes every neuron, so it matches the reference's exactly.
#[test]
fn quantization_statistic_matches_the_reference() {
    let network = Arc::new(random_network(
        Architecture::Tiny,
        24,
        24,
        9,
        NeuronKind::Srif,
    ));
    let frames = random_frames(24, 24, 4, 0.1, false, 9);
    let reference = plan(
        &network,
        ExecutorKind::Reference,
        EventOptions::default(),
        0,
        None,
    );
    let event = plan(
        &network,
        ExecutorKind::Event,
        EventOptions::default(),
        4,
        None,
    );
    for node in network.neuron_nodes() {
        let options = RunOptions {
            record_spikes: false,
            quantization_node: Some(node),
        };
        let (expect, _) = run_fresh(&reference, &frames, &options);
        let (got, _) = run_fresh(&event, &frames, &options);
        assert_eq!(expect.stats.quantization, got.stats.quantization);
        assert!(got.stats.quantization.is_some_and(|q| q.samples > 0));
    }
}

/// Two models of the same architecture and shape with different weights and biases: every
/// executor's plan gives each model the reference's logits for that model, whichever plan
/// was built first or ran last.
#[test]
fn each_plan_runs_its_own_weights_and_biases() {
    let a = Arc::new(random_network(
        Architecture::Tiny,
        16,
        16,
        31,
        NeuronKind::Srif,
    ));
    let b = Arc::new(random_network(
        Architecture::Tiny,
        16,
        16,
        32,
        NeuronKind::Srif,
    ));
    let frames = random_frames(16, 16, 3, 0.1, false, 31);
    let options = RunOptions::default();
    let expect: Vec<Vec<f32>> = [&a, &b]
        .iter()
        .map(|n| {
            let p = plan(n, ExecutorKind::Reference, EventOptions::default(), 0, None);
            run_fresh(&p, &frames, &options).0.logits
        })
        .collect();
    assert_ne!(expect[0], expect[1], "the two models must differ");
    for kind in ExecutorKind::ALL {
        let plans = [
            plan(&a, kind, EventOptions::default(), 3, None),
            plan(&b, kind, EventOptions::default(), 3, None),
        ];
        let mut scratches: Vec<_> = plans.iter().map(|p| p.new_scratch()).collect();
        for round in 0..2 {
            for (k, p) in plans.iter().enumerate() {
                let mut state = p.new_state();
                let got = p
                    .run(&mut scratches[k], &mut state, &frames, &options)
                    .expect("run");
                assert_eq!(got.logits, expect[k], "{kind}: model {k}, round {round}");
            }
        }
    }
}

/// Sums of every counter over a sequence of calls.
fn total_stats(outputs: &[RunOutput]) -> Vec<(u64, u64, u64, u64)> {
    let mut total = vec![(0, 0, 0, 0); outputs[0].stats.nodes.len()];
    for out in outputs {
        for (t, n) in total.iter_mut().zip(&out.stats.nodes) {
            t.0 += n.spikes;
            t.1 += n.synaptic_ops;
            t.2 += n.neuron_updates;
            t.3 += n.performed_ops;
        }
    }
    total
}

/// Spikes of a sequence of calls, concatenated per layer.
fn all_spikes(outputs: &[RunOutput]) -> Vec<Vec<Vec<u32>>> {
    let layers = outputs[0].spikes.as_ref().map_or(0, Vec::len);
    (0..layers)
        .map(|l| {
            outputs
                .iter()
                .flat_map(|o| o.spikes.as_ref().expect("recorded")[l].steps.clone())
                .collect()
        })
        .collect()
}

/// `step` T times equals `run` on T frames: spikes, logits, counters and membranes, for
/// every executor, from a tracked start and beyond the background.
#[test]
fn steps_equal_one_run() {
    let network = Arc::new(random_network(
        Architecture::Resnet20,
        16,
        16,
        41,
        NeuronKind::Srif,
    ));
    let frames = patch_frames(16, 16, 6, 6, 10, 41);
    for kind in ExecutorKind::ALL {
        let p = plan(&network, kind, EventOptions::default(), 4, None);
        let mut scratch = p.new_scratch();
        let mut whole = p.new_state();
        let run = p
            .run(&mut scratch, &mut whole, &frames, &recording())
            .expect("run");
        let mut stepped = p.new_state();
        let steps: Vec<RunOutput> = frames
            .iter()
            .map(|f| {
                p.step(&mut scratch, &mut stepped, f, &recording())
                    .expect("step")
            })
            .collect();
        assert_eq!(
            all_spikes(&steps),
            all_spikes(std::slice::from_ref(&run)),
            "{kind}"
        );
        assert_eq!(steps.last().expect("steps").logits, run.logits, "{kind}");
        assert_eq!(
            total_stats(&steps),
            total_stats(std::slice::from_ref(&run)),
            "{kind}"
        );
        assert!(p.membranes(&stepped) == p.membranes(&whole), "{kind}");
        assert_eq!(stepped.timesteps(), 6);
        if kind == ExecutorKind::Event {
            // The patch keeps most early neurons at the background, so the stream's regions
            // (the part of the state that `step` must carry) are exercised.
            let (done, total) = run.stats.neuron_updates();
            assert!(done < total, "{done} of {total} neuron updates");
        }
    }
}

/// Two streams' states interleaved timestep by timestep on one scratch give each stream
/// exactly what it gets alone, for every executor.
#[test]
fn interleaved_streams_on_one_scratch_equal_each_alone() {
    let network = Arc::new(random_network(
        Architecture::Resnet20,
        16,
        16,
        43,
        NeuronKind::Srif,
    ));
    let a = patch_frames(16, 16, 5, 2, 6, 43);
    let b = random_frames(16, 16, 5, 0.05, false, 44);
    for kind in ExecutorKind::ALL {
        let p = plan(&network, kind, EventOptions::default(), 5, None);
        let alone: Vec<(RunOutput, State)> = [&a, &b]
            .iter()
            .map(|frames| run_fresh(&p, frames, &recording()))
            .collect();
        let mut scratch = p.new_scratch();
        let mut states = [p.new_state(), p.new_state()];
        let mut outputs: [Vec<RunOutput>; 2] = [Vec::new(), Vec::new()];
        for t in 0..5 {
            for (k, frames) in [&a, &b].iter().enumerate() {
                outputs[k].push(
                    p.step(&mut scratch, &mut states[k], &frames[t], &recording())
                        .expect("step"),
                );
            }
        }
        if kind == ExecutorKind::Event {
            let (done, total) = alone[0].0.stats.neuron_updates();
            assert!(done < total, "stream 0 not tracked: {done} of {total}");
        }
        for k in 0..2 {
            let (run, state) = &alone[k];
            assert_eq!(
                all_spikes(&outputs[k]),
                all_spikes(std::slice::from_ref(run)),
                "{kind}: stream {k}"
            );
            assert_eq!(outputs[k][4].logits, run.logits, "{kind}: stream {k}");
            assert_eq!(
                total_stats(&outputs[k]),
                total_stats(std::slice::from_ref(run)),
                "{kind}: stream {k}"
            );
            assert!(
                p.membranes(&states[k]) == p.membranes(state),
                "{kind}: stream {k}"
            );
        }
    }
}

/// The two live-stream semantics against the reference's one long run of three windows:
/// reset at each window gives each window its independent classification; continuous
/// membranes (`reset_output` only) carry the membranes over, so the windows together are the
/// long run, longer than the event-driven executor's background, and each window's logits
/// average that window's outputs.
#[test]
fn windows_reset_or_continuous_match_the_reference() {
    let network = Arc::new(random_network(
        Architecture::Tiny,
        24,
        24,
        47,
        NeuronKind::Srif,
    ));
    let t = 4;
    let frames = patch_frames(24, 24, 3 * t, 9, 14, 47);
    let windows: Vec<&[SparseFrame]> = frames.chunks(t).collect();
    let reference = plan(
        &network,
        ExecutorKind::Reference,
        EventOptions::default(),
        0,
        None,
    );
    // The reference's one long run (its spikes and final membranes), and below, window by
    // window, its continuous run with the output reset at each window (its logits).
    let (long, long_state) = run_fresh(&reference, &frames, &recording());
    for kind in ExecutorKind::ALL {
        let p = plan(&network, kind, EventOptions::default(), t, None);
        let mut scratch = p.new_scratch();
        // Reset at each window: each window from rest.
        let mut state = p.new_state();
        for w in &windows {
            state.reset();
            let got = p
                .run(&mut scratch, &mut state, w, &recording())
                .expect("run");
            let (expect, _) = run_fresh(&reference, w, &recording());
            assert_eq!(got.logits, expect.logits, "{kind}: reset windows");
            assert_eq!(got.spikes, expect.spikes, "{kind}: reset windows");
        }
        // Continuous: the same spikes as the long run, window after window.
        let mut state = p.new_state();
        let mut expect_state = reference.new_state();
        let mut outputs = Vec::new();
        for w in &windows {
            state.reset_output();
            expect_state.reset_output();
            let got = p
                .run(&mut scratch, &mut state, w, &recording())
                .expect("run");
            let expect = reference
                .run(
                    &mut reference.new_scratch(),
                    &mut expect_state,
                    w,
                    &recording(),
                )
                .expect("reference");
            assert_eq!(
                got.logits, expect.logits,
                "{kind}: continuous window logits"
            );
            assert_eq!(state.output_timesteps() as usize, t);
            outputs.push(got);
        }
        assert_eq!(
            all_spikes(&outputs),
            all_spikes(std::slice::from_ref(&long)),
            "{kind}"
        );
        assert!(
            p.membranes(&state).expect("own") == reference.membranes(&long_state).expect("own"),
            "{kind}: continuous membranes"
        );
        assert_eq!(state.timesteps(), (3 * t) as u64);
    }
}

/// Real MNIST-DVS recordings (DVS128, AEDAT 2.0), binned by the binner into T frames of
/// 2×48×48 with bilinear resizing (so inputs are real-valued, not counts): tiny is checked
/// against the reference executor, resnet20 (with two threads) against the dense executor
/// (which the snn tests check against the reference).
#[test]
fn real_recordings_match() {
    let files = [
        "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
        "mnist_dvs/mnist_0_scale08_0001_qt1.aedat",
        "mnist_dvs/mnist_0_scale16_0001_qt1.aedat",
    ];
    let (side, t) = (48u16, 6usize);
    let tiny = random_network(Architecture::Tiny, 48, 48, 21, NeuronKind::Srif);
    let resnet20 = Arc::new(random_network(
        Architecture::Resnet20,
        48,
        48,
        22,
        NeuronKind::Srif,
    ));
    let dense = plan(
        &resnet20,
        ExecutorKind::Dense,
        EventOptions::default(),
        0,
        None,
    );
    let pool = Pool::new(2).expect("pool");
    let event = plan(
        &resnet20,
        ExecutorKind::Event,
        EventOptions::default(),
        t,
        Some(pool),
    );
    for file in files {
        let rec = read_file(&shared_data(file), None, &DecodeOptions::default()).expect("decode");
        assert!(!rec.events.is_empty(), "{file} has no events");
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
        assert!(frames.iter().any(|f| f.nnz() > 0));
        let out = check(tiny.clone(), &frames, EventOptions::default(), t, None);
        assert!(out.stats.total_spikes() > 0);
        let (expect, expect_state) = run_fresh(&dense, &frames, &recording());
        let (got, state) = run_fresh(&event, &frames, &recording());
        assert_same(
            &resnet20,
            (&dense, &expect, &expect_state),
            (&event, &got, &state),
        );
    }
}
