//! Execute stage: latency per sample (batch 1, T = 10, 2×48×48 binary input frames) of the
//! event-driven executor versus the dense executor, for `tiny`, `resnet20` and `resnet19`, at
//! input densities 2 %, 5 % and 10 %.
//!
//! The networks have seeded random weights whose batch norms are calibrated by
//! `exec::dense::calibrate` so every hidden layer fires about 15 % of the time on 5 % input,
//! like a trained network (cached as model files, see `calibrated`); the report prints the
//! rates measured on each benchmark input.
//!
//! `cargo bench --bench execute` runs the criterion groups. With `INFLOR_EXECUTE_REPORT=1` it
//! instead prints a table per architecture and density: latency of each executor, firing
//! rates, synaptic ops, neuron updates and the per-node times of the event-driven executor.
//! `INFLOR_EXECUTE_ARCHS=tiny,resnet19` restricts the architectures, `INFLOR_EXECUTE_THREADS`
//! sets the thread counts (default `1,2`), and `INFLOR_EXECUTE_EXPORT=dir` writes each
//! calibrated network and its frames for the PyTorch peer (`scripts/bench_torch_execute.py`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use inflor::binner::{FrameShape, SparseFrame};
use inflor::exec::dense::DenseExecutor;
use inflor::exec::dense::{Calibration, calibrate};
use inflor::exec::sparse::kernels::{Isa, sum_rows};
use inflor::exec::sparse::{SparseExecutor, SparseOptions};
use inflor::exec::{Executor, RunOptions};
use inflor::snn::{
    ArchSpec, Architecture, BatchNormConfig, Blueprint, Metadata, Model, Network, NeuronKind, Node,
    Op, Parameters, Shape, State,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const T: usize = 10;
const SIDE: usize = 48;

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

/// The benchmark network of `arch`: seeded random weights with BN statistics calibrated by
/// `exec::dense::calibrate` (15 % target rate on 5 % synthetic input), cached as a model file
/// in `INFLOR_EXECUTE_MODELS` (default `target/execute-models`) because calibrating resnet19
/// takes minutes.
fn calibrated(arch: Architecture) -> Arc<Network> {
    let dir = std::env::var("INFLOR_EXECUTE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/execute-models")
        });
    let path = dir.join(format!("{}.safetensors", arch.name()));
    if let Ok(model) = Model::load(&path) {
        return model.network;
    }
    let started = Instant::now();
    let spec = spec(arch);
    let blueprint = Blueprint::new(spec).expect("blueprint");
    let mut params: Parameters = blueprint.random_parameters(0);
    let report = calibrate(
        &blueprint,
        &mut params,
        NeuronKind::Srif,
        BatchNormConfig::default(),
        &Calibration::default(),
    )
    .expect("calibration");
    let mut metadata = Metadata::new(spec, T);
    metadata.provenance.origin = "random, calibrated for the execute benchmark".into();
    metadata.provenance.seed = Some(0);
    let model = Model::new(metadata, params).expect("model");
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = model.save(&path) {
        eprintln!("cannot cache {}: {e}", path.display());
    }
    eprintln!(
        "# {arch}: calibrated in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        report
            .layers
            .iter()
            .map(|(n, r)| format!("{n}={r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    model.network
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time of every thread of this process (`CLOCK_PROCESS_CPUTIME_ID`), which other
/// processes competing for the cores do not inflate.
fn cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two longs on x86_64 Linux) into `ts`.
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.sec as u64, ts.nsec as u32)
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

fn event_options(threads: usize, profile: bool) -> SparseOptions {
    SparseOptions {
        threads,
        profile,
        ..SparseOptions::default()
    }
}

/// The kernel's add rate with its rows in L1 (128 channels, 64 rows): the practical peak.
fn kernel_peak() -> f64 {
    let isa = Isa::detect();
    let cout = 128;
    let weight: Vec<f32> = (0..64 * cout).map(|i| (i % 13) as f32 * 0.01).collect();
    let bias = vec![0.0f32; cout];
    let rows: Vec<u32> = (0..256).map(|i| ((i * 7) % 64 * cout) as u32).collect();
    let mut out = vec![0.0f32; cout];
    let reps = 20_000;
    let (_, cpu) = time(
        || {
            for _ in 0..reps {
                sum_rows(isa, &weight, &bias, &rows, &mut out);
                std::hint::black_box(&mut out);
            }
        },
        3,
    );
    (reps * rows.len() * cout) as f64 / cpu.as_secs_f64()
}

fn report() {
    let peak = kernel_peak();
    println!(
        "# machine: {} logical CPUs, kernel ISA {}, kernel peak (L1) {:.1} G f64 adds/s per core",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Isa::detect().name(),
        peak / 1e9
    );
    let export = std::env::var("INFLOR_EXECUTE_EXPORT")
        .ok()
        .map(PathBuf::from);
    for arch in archs() {
        let network = calibrated(arch);
        let name = arch.name();
        if let Some(dir) = &export {
            export_network(dir, name, &network);
        }
        for density in densities() {
            let input = frames(density, T, 1234);
            let reps = if arch == Architecture::Resnet19 { 3 } else { 9 };
            let mut state = State::new(&network);
            let mut dense = DenseExecutor::new(&network);
            let reference = dense
                .run(&network, &mut state, &input, &RunOptions::default())
                .expect("dense");
            if let Some(dir) = &export {
                export_frames(dir, name, density, &input, &reference.logits);
            }
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
                    event_options(threads, true),
                )
                .expect("prepare");
                let out = ex
                    .run(&network, &mut state, &input, &RunOptions::default())
                    .expect("run");
                assert_eq!(
                    out.logits, reference.logits,
                    "event and dense logits differ"
                );
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
                let rates: Vec<f64> = network.neuron_nodes().map(|n| s.firing_rate(n)).collect();
                let (lo, hi) = rates
                    .iter()
                    .fold((f64::MAX, 0.0f64), |(a, b), &r| (a.min(r), b.max(r)));
                let floor = s.total_synaptic_ops() as f64 / (peak * threads as f64);
                println!(
                    "{name} density={density:.2} threads={threads} load={}: event wall {:.2} ms cpu {:.2} ms | dense (1 thread) wall {:.2} ms cpu {:.2} ms | dense/event cpu {:.1}x | hidden rate mean {:.3} (layers {:.3}..{:.3}) | synaptic ops {:.3} G, performed {:.3} G, dense MACs {:.3} G | neuron updates {:.1} % | floor {:.2} ms | {:.1} G adds per cpu-s | background {:.1} MiB, {} nodes tracked",
                    load_average(),
                    wall.as_secs_f64() * 1e3,
                    cpu.as_secs_f64() * 1e3,
                    dense_wall.as_secs_f64() * 1e3,
                    dense_cpu.as_secs_f64() * 1e3,
                    dense_cpu.as_secs_f64() / cpu.as_secs_f64(),
                    s.mean_firing_rate(),
                    lo,
                    hi,
                    s.total_synaptic_ops() as f64 / 1e9,
                    s.total_performed_ops() as f64 / 1e9,
                    s.total_dense_macs() as f64 / 1e9,
                    100.0 * nu as f64 / nt.max(1) as f64,
                    floor * 1e3,
                    s.total_performed_ops() as f64 / cpu.as_secs_f64() / 1e9,
                    ex.background().bytes() as f64 / (1 << 20) as f64,
                    (0..network.nodes().len()).filter(|&i| ex.tracks(i)).count(),
                );
                let runs = (reps + 1) as f64;
                let total: f64 = ex.node_times().iter().map(|d| d.as_secs_f64()).sum();
                let mut line = String::new();
                for (i, d) in ex.node_times().iter().enumerate() {
                    if d.as_secs_f64() > 0.03 * total {
                        line.push_str(&format!(
                            " {}:{:.2}",
                            network.nodes()[i].name,
                            d.as_secs_f64() / runs * 1e3
                        ));
                    }
                }
                println!("    wall ms per node (>3 %):{line}");
            }
        }
    }
    let state_bytes: Vec<String> = archs()
        .into_iter()
        .map(|arch| {
            let network = calibrated(arch);
            let state = State::new(&network);
            format!(
                "{arch}: {} neurons, State {} bytes ({:.3} bytes/neuron)",
                network.neuron_count(),
                state.heap_bytes() + std::mem::size_of::<State>(),
                (state.heap_bytes() + std::mem::size_of::<State>()) as f64
                    / network.neuron_count() as f64
            )
        })
        .collect();
    println!("# state memory: {}", state_bytes.join("; "));
}

/// Writes the folded network for the PyTorch peer: `{name}.json` (nodes, shapes, parameter
/// offsets; conv weights [Cin][Kh][Kw][Cout], linear [In][Out] over NHWC-flattened inputs)
/// and `{name}.bin` (the parameters, f32 little-endian).
fn export_network(dir: &Path, name: &str, network: &Network) {
    let mut blob: Vec<u8> = Vec::new();
    let mut push = |v: &[f32]| -> usize {
        let offset = blob.len() / 4;
        blob.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        offset
    };
    let nodes: Vec<serde_json::Value> = network
        .nodes()
        .iter()
        .map(|n| {
            let mut j = serde_json::json!({
                "name": n.name,
                "op": n.op.name(),
                "inputs": n.inputs,
                "shape": [n.shape.height, n.shape.width, n.shape.channels],
            });
            match &n.op {
                Op::Conv2d {
                    in_ch,
                    out_ch,
                    kernel,
                    stride,
                    padding,
                    weight,
                    bias,
                } => {
                    j["in_ch"] = (*in_ch).into();
                    j["out_ch"] = (*out_ch).into();
                    j["kernel"] = serde_json::json!([kernel.0, kernel.1]);
                    j["stride"] = (*stride).into();
                    j["padding"] = (*padding).into();
                    j["weight"] = push(weight).into();
                    j["bias"] = push(bias).into();
                }
                Op::Linear {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => {
                    j["in_features"] = (*in_features).into();
                    j["out_features"] = (*out_features).into();
                    j["weight"] = push(weight).into();
                    j["bias"] = push(bias).into();
                }
                Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                    j["k"] = (*k).into();
                    j["stride"] = (*stride).into();
                }
                _ => {}
            }
            j
        })
        .collect();
    let _ = std::fs::create_dir_all(dir);
    let manifest = serde_json::json!({ "name": name, "timesteps": T, "nodes": nodes });
    std::fs::write(dir.join(format!("{name}.json")), manifest.to_string()).expect("write manifest");
    std::fs::write(dir.join(format!("{name}.bin")), blob).expect("write parameters");
}

/// Writes one input (dense u8 [T][C][H][W]) and the executors' logits for the PyTorch peer.
fn export_frames(dir: &Path, name: &str, density: f64, frames: &[SparseFrame], logits: &[f32]) {
    let mut bytes = Vec::new();
    for f in frames {
        bytes.extend(f.to_dense().iter().map(|&v| v as u8));
    }
    let stem = format!("{name}_d{density:.2}");
    std::fs::write(dir.join(format!("{stem}.frames")), bytes).expect("write frames");
    let j = serde_json::json!({ "density": density, "timesteps": frames.len(), "logits": logits });
    std::fs::write(dir.join(format!("{stem}.json")), j.to_string()).expect("write logits");
}

fn benches(c: &mut Criterion) {
    for arch in archs() {
        let network = calibrated(arch);
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
                    event_options(threads, false),
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

/// One conv layer (C→C, 3×3, padding 1) on H×W×C inputs of a given density, then a neuron,
/// a global pool and a classifier: the event-driven gather against the dense executor's
/// im2col + GEMM, to find the density where one overtakes the other.
fn crossover() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (side, c) in [(48usize, 64usize), (48, 128), (24, 256), (12, 512)] {
        let conv = Op::Conv2d {
            in_ch: c,
            out_ch: c,
            kernel: (3, 3),
            stride: 1,
            padding: 1,
            weight: (0..c * 9 * c)
                .map(|_| rng.random_range(-0.05f32..0.05))
                .collect(),
            bias: (0..c).map(|_| rng.random_range(-0.1f32..0.3)).collect(),
        };
        let linear = Op::Linear {
            in_features: c,
            out_features: 10,
            weight: (0..c * 10)
                .map(|_| rng.random_range(-0.1f32..0.1))
                .collect(),
            bias: vec![0.0; 10],
        };
        let s = Shape::new(side, side, c);
        let network = Arc::new(
            Network::new(vec![
                Node::new("input", Op::Input, vec![], s),
                Node::new("conv", conv, vec![0], s),
                Node::new("sn", Op::Neuron(NeuronKind::Srif), vec![1], s),
                Node::new("pool", Op::GlobalAvgPool, vec![2], Shape::vector(c)),
                Node::new("fc", linear, vec![3], Shape::vector(10)),
                Node::new("out", Op::Output, vec![4], Shape::vector(10)),
            ])
            .expect("network"),
        );
        let shape = FrameShape {
            channels: c,
            height: side,
            width: side,
        };
        let mut line = format!("crossover {side}x{side}x{c} (ms cpu per timestep, event/dense):");
        for density in [0.05, 0.1, 0.2, 0.4, 0.7, 1.0] {
            let frames: Vec<SparseFrame> = (0..4)
                .map(|_| {
                    let dense: Vec<f32> = (0..shape.len())
                        .map(|_| if rng.random_bool(density) { 1.0 } else { 0.0 })
                        .collect();
                    SparseFrame::from_dense(shape, &dense)
                })
                .collect();
            let mut state = State::new(&network);
            let mut ex =
                SparseExecutor::with_options(Arc::clone(&network), event_options(1, false))
                    .expect("prepare");
            let mut dense = DenseExecutor::new(&network);
            let (_, event) = time(
                || {
                    ex.run(&network, &mut state, &frames, &RunOptions::default())
                        .expect("run");
                },
                5,
            );
            let (_, gemm) = time(
                || {
                    dense
                        .run(&network, &mut state, &frames, &RunOptions::default())
                        .expect("run");
                },
                3,
            );
            line.push_str(&format!(
                " d={density}: {:.2}/{:.2}",
                event.as_secs_f64() * 1e3 / 4.0,
                gemm.as_secs_f64() * 1e3 / 4.0
            ));
        }
        println!("{line}");
    }
}

fn main() {
    if std::env::var("INFLOR_EXECUTE_CROSSOVER").is_ok() {
        crossover();
        return;
    }
    if std::env::var("INFLOR_EXECUTE_REPORT").is_ok() {
        report();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
