//! Gradient checks: every layer's backward pass against central finite differences in f64,
//! the neuron BPTT against a plainly written per-neuron loop, and whole training steps
//! against finite differences of the loss.
//!
//! Spikes are steps, so the loss of a spiking network is piecewise constant in most
//! parameters and finite differences say nothing about the surrogate gradient. But the
//! surrogate backward pass is the exact derivative of the same network with each spike
//! replaced by the surrogate's value g(φ(H) − Vth) ([`Firing::Surrogate`]); the end-to-end
//! checks differentiate that network. With real spikes, the parameters after the last neuron
//! layer still have a true gradient, and it is checked too.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::ConvGeometry;
use crate::model::graph::{Graph, GraphNode, NodeOp};
use crate::model::tensor::Parameters;
use crate::snn::neuron::{Firing, NeuronKind, Surrogate, phi_f64, phi_prime_f64};
use crate::train::graph::{SpikingConfig, TrainGraph};
use crate::train::layers::{self, SpikeIndex};
use crate::train::loss::{Loss, TET_LAMBDA};
use crate::train::net::{Mode, Net};

const EPS: f64 = 1e-6;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Asserts an analytic gradient equals the central difference of `f` at `x` in every entry.
fn check_fd(what: &str, x: &[f64], analytic: &[f64], mut f: impl FnMut(&[f64]) -> f64) {
    assert_eq!(x.len(), analytic.len(), "{what}");
    let mut p = x.to_vec();
    for i in 0..x.len() {
        p[i] = x[i] + EPS;
        let up = f(&p);
        p[i] = x[i] - EPS;
        let down = f(&p);
        p[i] = x[i];
        let fd = (up - down) / (2.0 * EPS);
        let tol = 1e-6 * (1.0 + fd.abs().max(analytic[i].abs()));
        assert!(
            (fd - analytic[i]).abs() <= tol,
            "{what}[{i}]: finite difference {fd}, backward {}",
            analytic[i]
        );
    }
}

#[test]
fn conv_backward_matches_finite_differences() {
    for (shape, kernel, stride, padding, cout) in [
        ((5, 4, 3), (3, 2), 2, 1, 4),
        ((4, 4, 2), (3, 3), 1, 1, 3),
        ((3, 3, 5), (1, 1), 1, 0, 2),
    ] {
        let g = ConvGeometry::new(shape, kernel, stride, padding).unwrap();
        let frames = 2;
        let mut r = rng(1);
        let x = uniform(&mut r, frames * g.in_len(), -1.0, 1.0);
        let w = uniform(&mut r, g.columns() * cout, -1.0, 1.0);
        let b = uniform(&mut r, cout, -1.0, 1.0);
        let out_len = frames * g.out_pixels() * cout;
        let v = uniform(&mut r, out_len, -1.0, 1.0);
        let forward = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut y = vec![0.0; out_len];
            layers::conv_forward(&g, cout, frames, x, w, Some(b), None, &mut y);
            dot(&y, &v)
        };
        let (mut gw, mut gb, mut gx) = (vec![0.0; w.len()], vec![0.0; cout], vec![0.0; x.len()]);
        layers::conv_backward(
            &g,
            cout,
            frames,
            &x,
            &w,
            None,
            &v,
            &mut gw,
            Some(&mut gb),
            Some(&mut gx),
        );
        check_fd("conv input", &x, &gx, |p| forward(p, &w, &b));
        check_fd("conv weight", &w, &gw, |p| forward(&x, p, &b));
        check_fd("conv bias", &b, &gb, |p| forward(&x, &w, p));
    }
}

#[test]
fn sparse_conv_equals_dense_conv_on_spikes() {
    sparse_conv_equals_dense_conv(false);
}

#[test]
fn sparse_conv_equals_dense_conv_on_event_counts() {
    sparse_conv_equals_dense_conv(true);
}

/// The row-sum convolution and weight gradient against im2col + GEMM, on 0/1 spikes or (with
/// `counts`) on sparse event counts of 1 to 3 through a valued index, with stride 2 and
/// padding so that border pixels are covered.
fn sparse_conv_equals_dense_conv(counts: bool) {
    for (g, frames, cout) in [
        (ConvGeometry::new((6, 5, 8), (3, 3), 1, 1).unwrap(), 3, 20),
        (ConvGeometry::new((7, 6, 2), (3, 3), 2, 1).unwrap(), 2, 16),
    ] {
        let mut r = rng(2);
        let x: Vec<f32> = (0..frames * g.in_len())
            .map(|_| match (r.random_bool(0.2), counts) {
                (false, _) => 0.0,
                (true, false) => 1.0,
                (true, true) => r.random_range(1..4) as f32,
            })
            .collect();
        let w: Vec<f32> = (0..g.columns() * cout)
            .map(|_| r.random_range(-1.0..1.0))
            .collect();
        let gy: Vec<f32> = (0..frames * g.out_pixels() * cout)
            .map(|_| r.random_range(-1.0..1.0))
            .collect();
        let pixels = g.in_height * g.in_width;
        let index = if counts {
            SpikeIndex::build_valued(&x, frames, pixels, g.in_channels)
        } else {
            SpikeIndex::build(&x, frames, pixels, g.in_channels)
        };
        assert!(index.density() < layers::SPARSE_MAX_DENSITY);
        let run = |spikes: Option<&SpikeIndex<f32>>| {
            let mut y = vec![0.0f32; gy.len()];
            layers::conv_forward(&g, cout, frames, &x, &w, None, spikes, &mut y);
            let mut gw = vec![0.0f32; w.len()];
            layers::conv_backward(&g, cout, frames, &x, &w, spikes, &gy, &mut gw, None, None);
            (y, gw)
        };
        let (dense_y, dense_gw) = run(None);
        let (sparse_y, sparse_gw) = run(Some(&index));
        for (a, b) in dense_y.iter().zip(&sparse_y) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        for (a, b) in dense_gw.iter().zip(&sparse_gw) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

#[test]
fn batch_norm_backward_matches_finite_differences() {
    let (rows, c) = (12, 3);
    let mut r = rng(3);
    let x = uniform(&mut r, rows * c, -2.0, 3.0);
    let gamma = uniform(&mut r, c, 0.5, 1.5);
    let beta = uniform(&mut r, c, -0.5, 0.5);
    let v = uniform(&mut r, rows * c, -1.0, 1.0);
    for factor in [1.0, std::f64::consts::FRAC_1_SQRT_2 * 0.5] {
        let forward = |x: &[f64], g: &[f64], b: &[f64]| {
            let mut y = vec![0.0; x.len()];
            layers::bn_forward_train(x, c, g, b, factor, 1e-5, &mut y);
            dot(&y, &v)
        };
        let mut y = vec![0.0; x.len()];
        let saved = layers::bn_forward_train(&x, c, &gamma, &beta, factor, 1e-5, &mut y);
        let mut gx = vec![0.0; x.len()];
        let (dg, db) = layers::bn_backward(&x, c, &gamma, factor, &saved, &v, &mut gx);
        check_fd("bn input", &x, &gx, |p| forward(p, &gamma, &beta));
        check_fd("bn weight", &gamma, &dg, |p| forward(&x, p, &beta));
        check_fd("bn bias", &beta, &db, |p| forward(&x, &gamma, p));
        // Training normalises with the biased variance.
        let m0: f64 = (0..rows).map(|i| x[i * c]).sum::<f64>() / rows as f64;
        let v0: f64 = (0..rows).map(|i| (x[i * c] - m0).powi(2)).sum::<f64>() / rows as f64;
        assert!((saved.var[0] - v0).abs() < 1e-12);
    }
}

#[test]
fn pooling_backward_matches_finite_differences() {
    let (h, w, c, frames) = (5, 4, 2, 2);
    let mut r = rng(4);
    let x = uniform(&mut r, frames * h * w * c, -1.0, 1.0);
    for (k, stride) in [(2, 2), (2, 1), (3, 2)] {
        let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
        let v = uniform(&mut r, frames * oh * ow * c, -1.0, 1.0);
        let forward = |x: &[f64]| {
            let mut y = vec![0.0; v.len()];
            layers::avg_pool_forward((h, w, c), k, stride, (oh, ow), frames, x, &mut y);
            dot(&y, &v)
        };
        let mut gx = vec![0.0; x.len()];
        layers::avg_pool_backward((h, w, c), k, stride, (oh, ow), frames, &v, &mut gx);
        check_fd("avg pool", &x, &gx, forward);
    }
    let v = uniform(&mut r, frames * c, -1.0, 1.0);
    let forward = |x: &[f64]| {
        let mut y = vec![0.0; v.len()];
        layers::global_pool_forward(h * w, c, frames, x, &mut y);
        dot(&y, &v)
    };
    let mut gx = vec![0.0; x.len()];
    layers::global_pool_backward(h * w, c, frames, &v, &mut gx);
    check_fd("global pool", &x, &gx, forward);
}

#[test]
fn linear_backward_matches_finite_differences() {
    let (inputs, outputs, frames) = (7, 4, 3);
    let mut r = rng(5);
    let x = uniform(&mut r, frames * inputs, -1.0, 1.0);
    let w = uniform(&mut r, inputs * outputs, -1.0, 1.0);
    let b = uniform(&mut r, outputs, -1.0, 1.0);
    let v = uniform(&mut r, frames * outputs, -1.0, 1.0);
    let forward = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; v.len()];
        layers::linear_forward(inputs, outputs, frames, x, w, Some(b), false, &mut y);
        dot(&y, &v)
    };
    let (mut gw, mut gb, mut gx) = (vec![0.0; w.len()], vec![0.0; outputs], vec![0.0; x.len()]);
    layers::linear_backward(
        inputs,
        outputs,
        frames,
        &x,
        &w,
        &v,
        &mut gw,
        Some(&mut gb),
        Some(&mut gx),
    );
    check_fd("linear input", &x, &gx, |p| forward(p, &w, &b));
    check_fd("linear weight", &w, &gw, |p| forward(&x, p, &b));
    check_fd("linear bias", &b, &gb, |p| forward(&x, &w, p));
    // Binary inputs take the row-sum path and give the same outputs.
    let spikes: Vec<f64> = x.iter().map(|v| f64::from(*v > 0.3)).collect();
    let mut dense = vec![0.0; v.len()];
    let mut sparse = vec![0.0; v.len()];
    layers::linear_forward(
        inputs,
        outputs,
        frames,
        &spikes,
        &w,
        Some(&b),
        false,
        &mut dense,
    );
    layers::linear_forward(
        inputs,
        outputs,
        frames,
        &spikes,
        &w,
        Some(&b),
        true,
        &mut sparse,
    );
    for (a, b) in dense.iter().zip(&sparse) {
        assert!((a - b).abs() < 1e-12);
    }
}

const KINDS: [NeuronKind; 3] = [
    NeuronKind::Srif,
    NeuronKind::IfHard,
    NeuronKind::LifHard { tau: 0.25 },
];

/// BPTT of one neuron written out plainly from the method's equations, sharing nothing with
/// the layer code but the definitions of g′, φ and φ′.
fn plain_neuron(cfg: &SpikingConfig, x: &[f64], grad_o: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let t_len = x.len();
    let (leak, hard) = match cfg.kind {
        NeuronKind::Srif => (1.0, false),
        NeuronKind::IfHard => (1.0, true),
        NeuronKind::LifHard { tau } => (f64::from(tau), true),
    };
    let (mut h, mut o) = (vec![0.0; t_len], vec![0.0; t_len]);
    let mut u = 0.0;
    for t in 0..t_len {
        h[t] = leak * u + x[t];
        o[t] = if h[t] >= 0.5 { 1.0 } else { 0.0 };
        u = if hard {
            h[t] * (1.0 - o[t])
        } else {
            h[t] - o[t]
        };
    }
    let Surrogate::Dspike { b, r } = cfg.surrogate else {
        unreachable!("the plain loop knows Dspike only")
    };
    let (b, r) = (f64::from(b), f64::from(r));
    let dspike = |x: f64| {
        if x.abs() > r {
            0.0
        } else {
            b * (1.0 - (b * x).tanh().powi(2)) / (2.0 * (b * r).tanh())
        }
    };
    let mut grad_x = vec![0.0; t_len];
    let mut grad_u = 0.0;
    for t in (0..t_len).rev() {
        let g = if cfg.mpr {
            dspike(phi_f64(h[t]) - 0.5) * phi_prime_f64(h[t])
        } else {
            dspike(h[t] - 0.5)
        };
        // dU/dH along every path through the reset.
        let du_dh = match (hard, cfg.detach_reset) {
            (false, false) => 1.0 - g,
            (false, true) => 1.0,
            (true, false) => 1.0 - o[t] - h[t] * g,
            (true, true) => 1.0 - o[t],
        };
        let gh = grad_o[t] * g + grad_u * du_dh;
        grad_x[t] = gh;
        grad_u = leak * gh;
    }
    (o, grad_x)
}

#[test]
fn neuron_bptt_matches_a_plain_per_neuron_loop() {
    let (t, l) = (6, 40);
    for kind in KINDS {
        for mpr in [false, true] {
            for detach_reset in [false, true] {
                for surrogate in [Surrogate::default(), Surrogate::Dspike { b: 2.0, r: 1.0 }] {
                    let cfg = SpikingConfig {
                        kind,
                        mpr,
                        surrogate,
                        detach_reset,
                    };
                    let mut r = rng(6);
                    let x = uniform(&mut r, t * l, -0.4, 1.2);
                    let go = uniform(&mut r, t * l, -1.0, 1.0);
                    let (mut h, mut o, mut gx) =
                        (vec![0.0; t * l], vec![0.0; t * l], vec![0.0; t * l]);
                    layers::neuron_forward(&cfg, Firing::Spike, t, &x, &mut h, &mut o);
                    layers::neuron_backward(&cfg, t, &h, &o, &go, &mut gx);
                    // The same in f32, through the fast surrogate kernel.
                    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    let go32: Vec<f32> = go.iter().map(|&v| v as f32).collect();
                    let (mut h32, mut o32, mut gx32) = (
                        vec![0.0f32; t * l],
                        vec![0.0f32; t * l],
                        vec![0.0f32; t * l],
                    );
                    layers::neuron_forward(&cfg, Firing::Spike, t, &x32, &mut h32, &mut o32);
                    layers::neuron_backward(&cfg, t, &h32, &o32, &go32, &mut gx32);
                    for n in 0..l {
                        let xs: Vec<f64> = (0..t).map(|s| x[s * l + n]).collect();
                        let gs: Vec<f64> = (0..t).map(|s| go[s * l + n]).collect();
                        let (os, want) = plain_neuron(&cfg, &xs, &gs);
                        for s in 0..t {
                            assert_eq!(o[s * l + n], os[s], "{cfg:?} spike n={n} t={s}");
                            let got = gx[s * l + n];
                            assert!(
                                (got - want[s]).abs() < 1e-12,
                                "{cfg:?} n={n} t={s}: {got} vs {}",
                                want[s]
                            );
                            if f64::from(o32[s * l + n]) == os[s] {
                                let g32 = f64::from(gx32[s * l + n]);
                                assert!(
                                    (g32 - want[s]).abs() < 1e-4 * (1.0 + want[s].abs()),
                                    "f32 {cfg:?} n={n} t={s}: {g32} vs {}",
                                    want[s]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn neuron_bptt_is_the_derivative_of_the_surrogate_forward() {
    let (t, l) = (5, 12);
    for kind in KINDS {
        for mpr in [false, true] {
            let cfg = SpikingConfig {
                kind,
                mpr,
                surrogate: Surrogate::Dspike { b: 3.0, r: 0.5 },
                detach_reset: false,
            };
            let mut r = rng(7);
            let x = uniform(&mut r, t * l, -0.3, 1.0);
            let v = uniform(&mut r, t * l, -1.0, 1.0);
            let forward = |x: &[f64]| {
                let (mut h, mut o) = (vec![0.0; t * l], vec![0.0; t * l]);
                layers::neuron_forward(&cfg, Firing::Surrogate, t, x, &mut h, &mut o);
                dot(&o, &v)
            };
            let (mut h, mut o, mut gx) = (vec![0.0; t * l], vec![0.0; t * l], vec![0.0; t * l]);
            layers::neuron_forward(&cfg, Firing::Surrogate, t, &x, &mut h, &mut o);
            layers::neuron_backward(&cfg, t, &h, &o, &v, &mut gx);
            check_fd(&format!("{cfg:?}"), &x, &gx, forward);
        }
    }
}

/// input 2×6×6 → conv(bias) → tdBN → neuron → pool → [conv → tdBN(α = 1/√2)] + [conv 1×1 →
/// tdBN(α = 1/√2)] → add → neuron → (flatten | global pool) → linear → output, as a model
/// graph (tensors named `{node}.weight` and so on).
fn small_model_graph(global: bool) -> Graph {
    let alpha = std::f32::consts::FRAC_1_SQRT_2;
    let node = |name: &str, op: NodeOp, inputs: &[&str]| GraphNode {
        name: name.into(),
        inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
        op,
        shape: None,
    };
    let conv = |name: &str, cin, out, k: usize, bias: bool, input: &str| {
        node(
            name,
            NodeOp::Conv2d {
                in_channels: cin,
                out_channels: out,
                kernel: [k, k],
                stride: 1,
                padding: k / 2,
                weight: format!("{name}.weight"),
                bias: bias.then(|| format!("{name}.bias")),
            },
            &[input],
        )
    };
    let bn = |name: &str, alpha, input: &str| {
        node(
            name,
            NodeOp::BatchNorm {
                channels: 4,
                eps: 1e-5,
                alpha,
                threshold_scaled: true,
                weight: format!("{name}.weight"),
                bias: format!("{name}.bias"),
                running_mean: format!("{name}.running_mean"),
                running_var: format!("{name}.running_var"),
            },
            &[input],
        )
    };
    let mut input = node("input", NodeOp::Input, &[]);
    input.shape = Some([2, 6, 6]);
    let (head, features) = if global {
        (NodeOp::GlobalAvgPool, 4)
    } else {
        (NodeOp::Flatten, 36)
    };
    Graph {
        nodes: vec![
            input,
            conv("c1", 2, 4, 3, true, "input"),
            bn("b1", 1.0, "c1"),
            node("s1", NodeOp::Neuron, &["b1"]),
            node(
                "p1",
                NodeOp::AvgPool {
                    kernel: 2,
                    stride: 2,
                },
                &["s1"],
            ),
            conv("c2", 4, 4, 3, false, "p1"),
            bn("b2", alpha, "c2"),
            conv("c3", 4, 4, 1, false, "p1"),
            bn("b3", alpha, "c3"),
            node("add", NodeOp::Add, &["b2", "b3"]),
            node("s2", NodeOp::Neuron, &["add"]),
            node("head", head, &["s2"]),
            node(
                "fc",
                NodeOp::Linear {
                    in_features: features,
                    out_features: 3,
                    weight: "fc.weight".into(),
                    bias: Some("fc.bias".into()),
                },
                &["head"],
            ),
            node("output", NodeOp::Output, &["fc"]),
        ],
    }
}

fn small_graph(cfg: SpikingConfig, global: bool) -> TrainGraph {
    TrainGraph::from_graph(&small_model_graph(global), cfg).unwrap()
}

/// Random parameters with BN scales and shifts that keep potentials in the surrogate's
/// support often.
fn small_params(global: bool, seed: u64) -> Parameters {
    let mut p = small_model_graph(global).random_parameters(seed);
    let mut r = rng(seed + 100);
    for (name, t) in p.iter_mut() {
        if name.ends_with("b1.weight") || name.ends_with("b2.weight") || name.ends_with("b3.weight")
        {
            t.data
                .iter_mut()
                .for_each(|v| *v = r.random_range(1.0..2.0));
        }
        if name.ends_with("b1.bias") || name.ends_with("b2.bias") || name.ends_with("b3.bias") {
            t.data
                .iter_mut()
                .for_each(|v| *v = r.random_range(0.2..0.6));
        }
        if name.ends_with("c1.bias") {
            t.data
                .iter_mut()
                .for_each(|v| *v = r.random_range(-0.5..0.5));
        }
    }
    p
}

fn loss_of(net: &mut Net<f64>, input: &[f64], t: usize, labels: &[usize], loss: Loss) -> f64 {
    let tape = net.forward(input, t, labels.len(), Mode::Train);
    loss.evaluate(tape.outputs(), t, labels).loss
}

/// The gradient of every parameter of `net` against finite differences of the loss;
/// `only` restricts the check to parameters whose name starts with it.
fn check_net(
    net: &mut Net<f64>,
    input: &[f64],
    t: usize,
    labels: &[usize],
    loss: Loss,
    only: &str,
) {
    let tape = net.forward(input, t, labels.len(), Mode::Train);
    let out = loss.evaluate(tape.outputs(), t, labels);
    net.zero_grad();
    net.backward(tape, out.grad);
    let mut nonzero = 0;
    for p in 0..net.params.len() {
        if !net.params[p].name.starts_with(only) {
            continue;
        }
        let name = net.params[p].name.clone();
        let x = net.params[p].value.clone();
        let analytic = net.params[p].grad.clone();
        nonzero += analytic.iter().filter(|v| v.abs() > 1e-9).count();
        check_fd(&name, &x, &analytic, |v| {
            net.params[p].value.copy_from_slice(v);
            let l = loss_of(net, input, t, labels, loss);
            net.params[p].value.copy_from_slice(&x);
            l
        });
    }
    assert!(nonzero > 0, "no gradient reached the checked parameters");
}

#[test]
fn a_training_step_matches_finite_differences_of_the_loss() {
    let (t, b) = (3, 2);
    for (kind, mpr, global, loss) in [
        (NeuronKind::Srif, true, false, Loss::Ce),
        (
            NeuronKind::Srif,
            false,
            true,
            Loss::Tet { lambda: TET_LAMBDA },
        ),
        (NeuronKind::IfHard, true, true, Loss::Ce),
        (
            NeuronKind::LifHard { tau: 0.25 },
            false,
            false,
            Loss::Tet { lambda: 0.1 },
        ),
    ] {
        let cfg = SpikingConfig {
            kind,
            mpr,
            ..SpikingConfig::default()
        };
        let graph = small_graph(cfg, global);
        let params = small_params(global, 11);
        let mut net = Net::<f64>::from_parameters(graph, &params).unwrap();
        net.firing = Firing::Surrogate;
        let mut r = rng(12);
        let input = uniform(&mut r, t * b * 72, 0.0, 2.0);
        check_net(&mut net, &input, t, &[0, 2], loss, "");
        // One SGD step moves every parameter by −lr·gradient.
        let before: Vec<Vec<f64>> = net.params.iter().map(|p| p.value.clone()).collect();
        let mut opt = crate::train::optim::Optimizer::new(
            crate::train::optim::OptimizerKind::Sgd { momentum: 0.0 },
            0.0,
            net.params.len(),
        );
        let l0 = loss_of(&mut net, &input, t, &[0, 2], loss);
        opt.step(
            1e-3,
            net.params
                .iter_mut()
                .map(|p| (&mut p.value[..], &p.grad[..], p.decays)),
        );
        for (p, old) in net.params.iter().zip(&before) {
            for ((v, o), g) in p.value.iter().zip(old).zip(&p.grad) {
                assert!((v - (o - 1e-3 * g)).abs() < 1e-15);
            }
        }
        assert!(
            loss_of(&mut net, &input, t, &[0, 2], loss) < l0,
            "the step lowered the loss"
        );
    }
}

#[test]
fn with_real_spikes_the_head_gradient_is_exact() {
    let (t, b) = (3, 2);
    let graph = small_graph(SpikingConfig::default(), false);
    let params = small_params(false, 13);
    let mut net = Net::<f64>::from_parameters(graph, &params).unwrap();
    let mut r = rng(14);
    let input = uniform(&mut r, t * b * 72, 0.0, 2.0);
    check_net(&mut net, &input, t, &[1, 0], Loss::Ce, "fc.");
}

#[test]
fn f32_training_matches_f64() {
    // Same network and batch in f32 (sparse kernels, fast surrogate) and f64 (dense,
    // definitions): same spikes, gradients within f32 rounding.
    let (t, b) = (4, 3);
    let graph = small_graph(SpikingConfig::default(), true);
    let params = small_params(true, 15);
    let mut n64 = Net::<f64>::from_parameters(graph.clone(), &params).unwrap();
    let mut n32 = Net::<f32>::from_parameters(graph, &params).unwrap();
    let mut r = rng(16);
    let input: Vec<f32> = (0..t * b * 72)
        .map(|_| {
            if r.random_bool(0.3) {
                r.random_range(0..3) as f32
            } else {
                0.0
            }
        })
        .collect();
    let input64: Vec<f64> = input.iter().map(|&v| f64::from(v)).collect();
    let labels = [0, 1, 2];
    let tape64 = n64.forward(&input64, t, b, Mode::Train);
    let tape32 = n32.forward(&input, t, b, Mode::Train);
    assert_eq!(tape64.spikes, tape32.spikes);
    let l64 = Loss::Ce.evaluate(tape64.outputs(), t, &labels);
    let out32: Vec<f64> = tape32.outputs().iter().map(|&v| f64::from(v)).collect();
    let l32 = Loss::Ce.evaluate(&out32, t, &labels);
    assert!((l64.loss - l32.loss).abs() < 1e-5);
    n64.backward(tape64, l64.grad);
    n32.backward(tape32, l32.grad.iter().map(|&v| v as f32).collect());
    for (p64, p32) in n64.params.iter().zip(&n32.params) {
        let scale = p64
            .grad
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-3);
        for (a, b) in p64.grad.iter().zip(&p32.grad) {
            assert!(
                (a - f64::from(*b)).abs() < 1e-4 * scale,
                "{}: {a} vs {b}",
                p64.name
            );
        }
    }
}

#[test]
fn parameters_round_trip_through_pytorch_layouts() {
    let graph = small_graph(SpikingConfig::default(), false);
    let params = small_params(false, 17);
    let net = Net::<f32>::from_parameters(graph.clone(), &params).unwrap();
    assert_eq!(net.to_parameters(), params);
    let mut missing = params.clone();
    missing.remove("b2.running_var");
    assert!(Net::<f32>::from_parameters(graph.clone(), &missing).is_err());
    let mut bad = params;
    bad.get_mut("fc.weight").unwrap().data[3] = f32::NAN;
    assert!(Net::<f32>::from_parameters(graph, &bad).is_err());
}

#[test]
fn running_statistics_follow_pytorch() {
    let graph = small_graph(SpikingConfig::default(), true);
    let params = small_params(true, 18);
    let mut net = Net::<f64>::from_parameters(graph, &params).unwrap();
    let (t, b) = (2, 2);
    let mut r = rng(19);
    let input = uniform(&mut r, t * b * 72, 0.0, 2.0);
    let tape = net.forward(&input, t, b, Mode::Train);
    // b1 normalises c1's output: n = T·B·H·W = 2·2·36 per channel.
    let x = tape.value(1);
    let n = (t * b * 36) as f64;
    let mean0: f64 = x.chunks_exact(4).map(|p| p[0]).sum::<f64>() / n;
    let var0: f64 = x
        .chunks_exact(4)
        .map(|p| (p[0] - mean0).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    let s = &net.stats[0];
    assert!((s.mean[0] - 0.1 * mean0).abs() < 1e-12);
    assert!((s.var[0] - (0.9 + 0.1 * var0)).abs() < 1e-12);
    // Evaluation uses them and changes nothing.
    let before = net.stats.clone();
    net.forward(&input, t, b, Mode::Eval);
    assert_eq!(net.stats, before);
}
