//! Execute stage: latency per sample (batch 1, T = 10, 2×48×48 binary input frames) of the
//! event-driven executor versus the dense executor, for `tiny`, `resnet20` and `resnet19`, at
//! input densities 2 %, 5 % and 10 %.
//!
//! The networks have random weights whose batch norms are calibrated here (the β of each BN,
//! layer by layer, by bisection) so every hidden layer fires about 15 % of the time at 5 %
//! input density, like a trained network; the measured rates are printed.
//!
//! `cargo bench --bench execute` runs the criterion groups. With `INFLOR_EXECUTE_REPORT=1` it
//! instead prints a table per architecture and density: latency of each executor, firing
//! rates, synaptic ops, neuron updates and the per-node times of the event-driven executor.
//! `INFLOR_EXECUTE_ARCHS=tiny,resnet19` restricts the architectures, `INFLOR_EXECUTE_THREADS`
//! sets the thread counts (default `1,2`), and `INFLOR_EXECUTE_EXPORT=dir` writes each
//! calibrated network and its frames for the PyTorch peer (`scripts/bench_torch_execute.py`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use inflor::binner::{FrameShape, SparseFrame};
use inflor::exec::dense::DenseExecutor;
use inflor::exec::sparse::{SparseExecutor, SparseOptions};
use inflor::exec::{Executor, Output, RunOptions};
use inflor::snn::{
    ArchSpec, Architecture, BatchNormConfig, Blueprint, Network, NeuronKind, Node, Op, Parameters,
    State,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const T: usize = 10;
const SIDE: usize = 48;
const TARGET_RATE: f64 = 0.15;

fn spec(arch: Architecture) -> ArchSpec {
    ArchSpec {
        arch,
        channels: 2,
        height: SIDE,
        width: SIDE,
        classes: 10,
    }
}

/// `t` binary frames with each value set with probability `density`.
fn frames(density: f64, t: usize, seed: u64) -> Vec<SparseFrame> {
    let shape = FrameShape {
        channels: 2,
        height: SIDE,
        width: SIDE,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..t)
        .map(|_| {
            let dense: Vec<f32> = (0..shape.len())
                .map(|_| if rng.random_bool(density) { 1.0 } else { 0.0 })
                .collect();
            SparseFrame::from_dense(shape, &dense)
        })
        .collect()
}

/// The weighted node whose bias sets the drive of neuron node `neuron`: the conv or linear
/// feeding it, directly or through a pool or (its first input) a residual sum.
fn drive_node(network: &Network, neuron: usize) -> Option<usize> {
    let nodes = network.nodes();
    let mut i = nodes[neuron].inputs[0];
    loop {
        match &nodes[i].op {
            Op::Conv2d { .. } | Op::Linear { .. } => return Some(i),
            Op::Add | Op::AvgPool { .. } | Op::SumPool { .. } => i = nodes[i].inputs[0],
            _ => return None,
        }
    }
}

/// `nodes` with `delta` added to every bias of weighted node `i`.
fn shift_bias(nodes: &mut [Node], i: usize, base: &[f32], delta: f32) {
    if let Op::Conv2d { bias, .. } | Op::Linear { bias, .. } = &mut nodes[i].op {
        for (b, &b0) in bias.iter_mut().zip(base) {
            *b = b0 + delta;
        }
    }
}

/// A network of `arch` with random weights (Kaiming, as `Blueprint::random_parameters`) whose
/// folded biases are shifted, layer by layer, so each hidden layer fires at about
/// `TARGET_RATE` on 5 % input. Returns the network and each layer's rate.
fn calibrated(arch: Architecture) -> (Network, Vec<(String, f64)>) {
    let blueprint = Blueprint::new(spec(arch)).expect("blueprint");
    let params: Parameters = blueprint.random_parameters(7);
    let network = blueprint
        .build(&params, NeuronKind::Srif, BatchNormConfig::default())
        .expect("build");
    let probe = frames(0.05, 4, 99);
    let neurons: Vec<usize> = network.neuron_nodes().collect();
    let mut nodes = network.nodes().to_vec();
    let mut rates = Vec::new();
    for &n in &neurons {
        let Some(d) = drive_node(&network, n) else {
            continue;
        };
        let base = match &nodes[d].op {
            Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => bias.clone(),
            _ => continue,
        };
        let (mut lo, mut hi) = (-3.0f32, 3.0f32);
        let mut rate = 0.0;
        for _ in 0..12 {
            let mid = 0.5 * (lo + hi);
            shift_bias(&mut nodes, d, &base, mid);
            let candidate = Network::new(nodes.clone()).expect("network");
            let out = run_sparse(candidate, &probe, 1);
            rate = out.stats.firing_rate(n);
            if rate > TARGET_RATE {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        rates.push((network.nodes()[n].name.clone(), rate));
    }
    (Network::new(nodes).expect("network"), rates)
}

fn run_sparse(network: Network, frames: &[SparseFrame], threads: usize) -> Output {
    let network = Arc::new(network);
    let mut ex = SparseExecutor::with_options(
        Arc::clone(&network),
        SparseOptions {
            threads,
            ..SparseOptions::default()
        },
    )
    .expect("prepare");
    let mut state = State::new(&network);
    ex.run(&network, &mut state, frames, &RunOptions::default())
        .expect("run")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// On-CPU time of every thread of this process (the scheduler's `sum_exec_runtime`), which
/// other processes competing for the 2 cores do not inflate.
fn cpu_time() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// Median wall time and median on-CPU time of `reps` runs (after one warm-up run).
fn time<F: FnMut()>(mut f: F, reps: usize) -> (Duration, Duration) {
    f();
    let (wall, cpu): (Vec<Duration>, Vec<Duration>) = (0..reps)
        .map(|_| {
            let c = cpu_time();
            let t = Instant::now();
            f();
            (t.elapsed(), cpu_time().saturating_sub(c))
        })
        .unzip();
    (median(wall), median(cpu))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn archs() -> Vec<Architecture> {
    env_list("INFLOR_EXECUTE_ARCHS", "tiny,resnet20,resnet19")
        .iter()
        .map(|a| a.parse().expect("architecture name"))
        .collect()
}

fn densities() -> Vec<f64> {
    env_list("INFLOR_EXECUTE_DENSITIES", "0.02,0.05,0.10")
        .iter()
        .map(|d| d.parse().expect("density"))
        .collect()
}

fn threads() -> Vec<usize> {
    env_list("INFLOR_EXECUTE_THREADS", "1,2")
        .iter()
        .map(|t| t.parse().expect("thread count"))
        .collect()
}

fn report() {
    let mut networks = BTreeMap::new();
    for arch in archs() {
        let started = Instant::now();
        let (network, rates) = calibrated(arch);
        println!(
            "# {arch}: calibrated in {:.1} s; rates at 5 % input: {}",
            started.elapsed().as_secs_f64(),
            rates
                .iter()
                .map(|(n, r)| format!("{n}={r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        networks.insert(arch.name(), network);
    }
    for (name, network) in &networks {
        let network = Arc::new(network.clone());
        for density in densities() {
            let input = frames(density, T, 1234);
            let reps = if *name == "resnet19" { 3 } else { 9 };
            let mut state = State::new(&network);
            let mut dense = DenseExecutor::new(&network);
            let (dense_wall, dense_cpu) = if std::env::var("INFLOR_EXECUTE_NO_DENSE").is_ok() {
                (Duration::ZERO, Duration::ZERO)
            } else {
                time(
                    || {
                        dense
                            .run(&network, &mut state, &input, &RunOptions::default())
                            .expect("dense");
                    },
                    reps.min(3),
                )
            };
            for &threads in &threads() {
                let mut ex = SparseExecutor::with_options(
                    Arc::clone(&network),
                    SparseOptions {
                        threads,
                        profile: true,
                        ..SparseOptions::default()
                    },
                )
                .expect("prepare");
                let out = ex
                    .run(&network, &mut state, &input, &RunOptions::default())
                    .expect("run");
                ex.reset_node_times();
                let (wall, cpu) = time(
                    || {
                        ex.run(&network, &mut state, &input, &RunOptions::default())
                            .expect("run");
                    },
                    reps,
                );
                let s = &out.stats;
                let (nu, nt) = s.neuron_updates();
                println!(
                    "{name} d={density:.2} threads={threads} (load {}): event wall {:.2} ms cpu {:.2} ms | dense(1 thread) wall {:.2} ms cpu {:.2} ms | dense/event cpu {:.1}x | rate {:.3} | synops {:.3} G performed {:.3} G dense {:.3} G | updates {:.1} % | {:.2} G adds per cpu-s",
                    load_average(),
                    wall.as_secs_f64() * 1e3,
                    cpu.as_secs_f64() * 1e3,
                    dense_wall.as_secs_f64() * 1e3,
                    dense_cpu.as_secs_f64() * 1e3,
                    dense_cpu.as_secs_f64() / cpu.as_secs_f64(),
                    s.mean_firing_rate(),
                    s.total_synaptic_ops() as f64 / 1e9,
                    s.total_performed_ops() as f64 / 1e9,
                    s.total_dense_macs() as f64 / 1e9,
                    100.0 * nu as f64 / nt.max(1) as f64,
                    s.total_performed_ops() as f64 / cpu.as_secs_f64() / 1e9,
                );
                let runs = (reps + 2) as f64;
                let total: f64 = ex.node_times().iter().map(|d| d.as_secs_f64()).sum();
                let mut line = String::new();
                for (i, d) in ex.node_times().iter().enumerate() {
                    let share = d.as_secs_f64() / total;
                    if share > 0.02 {
                        line.push_str(&format!(
                            " {}:{:.2}ms",
                            network.nodes()[i].name,
                            d.as_secs_f64() / runs * 1e3
                        ));
                    }
                }
                println!("   nodes >2 %:{line}");
            }
        }
    }
    if let Ok(dir) = std::env::var("INFLOR_EXECUTE_EXPORT") {
        let _ = Path::new(&dir);
    }
}

fn benches(c: &mut Criterion) {
    for arch in archs() {
        let (network, _) = calibrated(arch);
        let network = Arc::new(network);
        let mut group = c.benchmark_group(format!("execute/{arch}"));
        group.sampling_mode(SamplingMode::Flat);
        if arch == Architecture::Resnet19 {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(10));
        } else {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(5));
        }
        for density in densities() {
            let input = frames(density, T, 1234);
            let mut state = State::new(&network);
            for threads in threads() {
                let mut ex = SparseExecutor::with_options(
                    Arc::clone(&network),
                    SparseOptions {
                        threads,
                        ..SparseOptions::default()
                    },
                )
                .expect("prepare");
                group.bench_with_input(
                    BenchmarkId::new(format!("event/{threads}t"), density),
                    &input,
                    |b, input| {
                        b.iter(|| {
                            ex.run(&network, &mut state, input, &RunOptions::default())
                                .expect("run")
                        })
                    },
                );
            }
            let mut dense = DenseExecutor::new(&network);
            group.bench_with_input(BenchmarkId::new("dense/1t", density), &input, |b, input| {
                b.iter(|| {
                    dense
                        .run(&network, &mut state, input, &RunOptions::default())
                        .expect("run")
                })
            });
        }
        group.finish();
    }
}

fn main() {
    if std::env::var("INFLOR_EXECUTE_REPORT").is_ok() {
        report();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
