//! Execute stage: latency per sample (batch 1, T = 10, 2×48×48 binary input frames) of the
//! event-driven executor beside the dense executor, for all four built-in architectures
//! (`tiny`, `vgg-snn`, `resnet20`, `resnet19`), at input densities 2 %, 5 % and 10 %.
//!
//! The networks have seeded random weights (`Model::random(spec, T, 0)`) whose batch
//! norms are calibrated by `inflor::calibrate`, as `inflor model init` does, so every
//! hidden layer fires about 15 % of the time on 5 % input, like a trained network (cached as
//! model files, see `calibrated`); the report prints the rates measured on each input. Every
//! sample is one classification: `State::reset`, then `Plan::run` on T frames.
//!
//! Modes (environment variables):
//! - none: the criterion groups `execute/{arch}`: `event/{1,2}t/{density}` (the event-driven
//!   plan without a pool, and with a 2-thread `exec::Pool`) and `dense/{1,2}t/{density}`;
//!   then the same network quantized to int8 (`inflor model quantize`, per-channel max-abs):
//!   `event-int8/{1,2}t/{density}` and `dense-int8/{1,2}t/{density}`.
//! - `INFLOR_EXECUTE_REPORT=1`: a table per architecture and density with wall and CPU time
//!   of both executors side by side, firing rates, synaptic ops, neuron updates, the floor,
//!   per-node times and which convs took the GEMM path; then the memory lines.
//!   `INFLOR_EXECUTE_EXPORT=dir` also writes each network and input for the PyTorch peer
//!   (`scripts/bench_torch_execute.py`). `INFLOR_EXECUTE_INT8=1` reports the int8 copies
//!   instead of the float networks.
//! - `INFLOR_EXECUTE_CROSSOVER=1`: one conv layer at input densities 5–100 %, binary and
//!   quarter-valued, gather versus im2col + GEMM (where `EventOptions`'s GEMM thresholds
//!   come from), then the same for an int8 conv (`=int8`: only that).
//! - `INFLOR_EXECUTE_MEMORY=1`: only the memory lines (per stream, per worker, per network).
//! - `INFLOR_EXECUTE_REAL=1`: a real MNIST-DVS recording through each network, with and
//!   without region tracking, and how many spikes differ from the background.
//!
//!   Each architecture also gets a plan-build line (CPU time of building the event plan,
//!   background included, and the dense plan), and each density a line adding the build to
//!   1, 10 and 50 windows' runs: what a file costs end to end with either executor.
//!
//! The comparison of the default executor with the dense one, all four architectures, plan
//! build included: `INFLOR_EXECUTE_REPORT=1 INFLOR_EXECUTE_THREADS=1 nice -n 19 cargo bench
//! --bench execute` (the first run calibrates and caches the models, about two minutes).
//!
//! `INFLOR_EXECUTE_ARCHS=tiny,resnet19`, `INFLOR_EXECUTE_THREADS=1,2` and
//! `INFLOR_EXECUTE_DENSITIES=0.05` narrow the runs; `INFLOR_EXECUTE_NO_DENSE=1` skips timing
//! the dense executor in the report; `INFLOR_EXECUTE_MODELS=dir` moves the model cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use inflor::binner::{
    FrameBinner, FrameShape, FrameSpec, RecordingWindows, ResizeMode, SparseFrame,
};
use inflor::calibrate::{Calibration, calibrate};
use inflor::exec::{
    EventOptions, ExecutorKind, Plan, PlanOptions, Pool, RunOptions, RunOutput, Scratch, State,
};
use inflor::format::{DecodeOptions, read_file};
use inflor::kernels::{Int8Isa, Isa, TapSpan, sum_rows, sum_taps_i8};
use inflor::model::{ArchSpec, Architecture, Model, QuantizeMethod, quantize};
use inflor::snn::{Int8Weights, Network, NeuronKind, Node, Op, Shape};
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
/// `inflor::calibrate` (15 % target rate on 5 % synthetic input), cached as a model file
/// in `INFLOR_EXECUTE_MODELS` (default `target/execute-models`) because calibrating resnet19
/// takes minutes.
fn calibrated(arch: Architecture) -> Arc<Network> {
    calibrated_model(arch).network
}

/// The int8 copy of [`calibrated`]'s network (`inflor model quantize`'s per-channel max-abs
/// post-training quantization).
fn calibrated_int8(arch: Architecture) -> Arc<Network> {
    quantize(&calibrated_model(arch), QuantizeMethod::MaxAbs)
        .expect("quantize")
        .network
}

/// The calibrated model behind [`calibrated`].
fn calibrated_model(arch: Architecture) -> Model {
    let dir = std::env::var("INFLOR_EXECUTE_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/execute-models")
        });
    let path = dir.join(format!("{}.safetensors", arch.name()));
    if let Ok(model) = Model::load(&path) {
        return model;
    }
    let started = Instant::now();
    let spec = spec(arch);
    let mut model = Model::random(spec, T, 0).expect("model");
    let report =
        calibrate(&mut model, &Calibration::default(), &mut |_, _, _| {}).expect("calibration");
    model.metadata.provenance.origin = "random, calibrated for the execute benchmark".into();
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
    model
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
    env_list("INFLOR_EXECUTE_ARCHS", "tiny,vgg-snn,resnet20,resnet19")
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

/// A plan of `kind` for `network` with a background of T steps: `threads` > 1 gets a pool of
/// that many threads, 1 runs on the caller's thread.
fn plan(
    network: &Arc<Network>,
    kind: ExecutorKind,
    threads: usize,
    event: EventOptions,
) -> Arc<Plan> {
    let options = PlanOptions {
        pool: (threads > 1).then(|| Pool::new(threads).expect("pool")),
        background_steps: T,
        event,
    };
    Plan::new(Arc::clone(network), kind, options).expect("plan")
}

/// One classification: from rest, T frames.
fn classify(
    plan: &Plan,
    scratch: &mut Scratch,
    state: &mut State,
    frames: &[SparseFrame],
) -> RunOutput {
    state.reset();
    plan.run(scratch, state, frames, &RunOptions::default())
        .expect("run")
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

/// The int8 row sums' add rate with their rows in L1 (256 channels, 64 rows, 9 taps of 28
/// spikes): the practical peak of this CPU's integer adds, which the int8 floor divides by.
fn kernel_peak_int8() -> f64 {
    let cout = 256;
    let weight: Vec<i8> = (0..64 * cout).map(|i| (i % 13) as i8 - 6).collect();
    let channels: Vec<u32> = (0..9 * 28).map(|i| (i * 7 % 64) as u32).collect();
    let spans: Vec<TapSpan> = (0..9)
        .map(|t| TapSpan {
            base: 0,
            start: t * 28,
            len: 28,
        })
        .collect();
    let mut out = vec![0i32; cout];
    let reps = 20_000;
    let (_, cpu) = time(
        || {
            for _ in 0..reps {
                sum_taps_i8(&weight, &channels, &spans, &mut out);
                std::hint::black_box(&mut out);
            }
        },
        3,
    );
    (reps * channels.len() * cout) as f64 / cpu.as_secs_f64()
}

fn report() {
    let int8 = std::env::var("INFLOR_EXECUTE_INT8").is_ok();
    let peak = if int8 {
        kernel_peak_int8()
    } else {
        kernel_peak()
    };
    println!(
        "# machine: {} logical CPUs, kernel ISA {}, kernel peak (L1) {:.1} G {} adds/s per core, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if int8 {
            Int8Isa::detect().name()
        } else {
            Isa::detect().name()
        },
        peak / 1e9,
        if int8 { "int8 (i16)" } else { "f64" },
        load_average()
    );
    let export = std::env::var("INFLOR_EXECUTE_EXPORT")
        .ok()
        .map(PathBuf::from);
    for arch in archs() {
        let network = if int8 {
            calibrated_int8(arch)
        } else {
            calibrated(arch)
        };
        let name = arch.name();
        if let Some(dir) = &export {
            export_network(dir, name, &network);
        }
        let (built, cpu_built) = (Instant::now(), cpu_time());
        let dense = plan(&network, ExecutorKind::Dense, 1, EventOptions::default());
        let dense_build = (built.elapsed(), cpu_time().saturating_sub(cpu_built));
        let (built, cpu_built) = (Instant::now(), cpu_time());
        plan(&network, ExecutorKind::Event, 1, EventOptions::default());
        let event_build = (built.elapsed(), cpu_time().saturating_sub(cpu_built));
        println!(
            "{name} plan build (1 thread): event wall {:.1} ms cpu {:.1} ms (background of {T} steps) | dense wall {:.1} ms cpu {:.1} ms",
            event_build.0.as_secs_f64() * 1e3,
            event_build.1.as_secs_f64() * 1e3,
            dense_build.0.as_secs_f64() * 1e3,
            dense_build.1.as_secs_f64() * 1e3,
        );
        let events: Vec<(usize, Arc<Plan>)> = threads()
            .into_iter()
            .map(|t| {
                let options = EventOptions {
                    profile: true,
                    ..EventOptions::default()
                };
                (t, plan(&network, ExecutorKind::Event, t, options))
            })
            .collect();
        for density in densities() {
            let input = frames(density, T, 1234);
            let reps = if arch == Architecture::Resnet19 { 3 } else { 9 };
            let mut state = dense.new_state();
            let mut scratch = dense.new_scratch();
            let reference = classify(&dense, &mut scratch, &mut state, &input);
            if let Some(dir) = &export {
                export_frames(dir, name, density, &input, &reference.logits);
            }
            let (dense_wall, dense_cpu) = if std::env::var("INFLOR_EXECUTE_NO_DENSE").is_ok() {
                (Duration::ZERO, Duration::ZERO)
            } else {
                time(
                    || {
                        classify(&dense, &mut scratch, &mut state, &input);
                    },
                    reps.min(3),
                )
            };
            for (threads, event) in &events {
                let threads = *threads;
                let mut state = event.new_state();
                let mut scratch = event.new_scratch();
                let out = classify(event, &mut scratch, &mut state, &input);
                assert_eq!(
                    out.logits, reference.logits,
                    "event and dense logits differ"
                );
                scratch.reset_counters();
                let (wall, cpu) = time(
                    || {
                        classify(event, &mut scratch, &mut state, &input);
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
                let info = event.event().expect("event plan");
                println!(
                    "{name} density={density:.2} threads={threads} load={}: event wall {:.2} ms cpu {:.2} ms | dense (1 thread) wall {:.2} ms cpu {:.2} ms | dense/event cpu {:.2}x | hidden rate mean {:.3} (layers {:.3}..{:.3}) | synaptic ops {:.3} G, performed {:.3} G, dense MACs {:.3} G | neuron updates {:.1} % | floor {:.2} ms | {:.1} G adds per cpu-s | background {:.1} MiB, {} nodes tracked",
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
                    info.background().bytes() as f64 / (1 << 20) as f64,
                    (0..network.nodes().len())
                        .filter(|&i| info.tracks(i))
                        .count(),
                );
                if threads == 1 && dense_cpu > Duration::ZERO {
                    // What a user sees end to end: one plan build, then a file's windows.
                    let mut line = String::new();
                    for windows in [1u32, 10, 50] {
                        let event_total = event_build.1 + cpu * windows;
                        let dense_total = dense_build.1 + dense_cpu * windows;
                        line.push_str(&format!(
                            " | {windows} windows: event {:.1} ms dense {:.1} ms ({:.2}x)",
                            event_total.as_secs_f64() * 1e3,
                            dense_total.as_secs_f64() * 1e3,
                            dense_total.as_secs_f64() / event_total.as_secs_f64(),
                        ));
                    }
                    println!(
                        "    file cpu, plan build + runs (default is {}){line}",
                        ExecutorKind::default()
                    );
                }
                let runs = (reps + 1) as f64;
                let total: f64 = scratch.node_times().iter().map(|d| d.as_secs_f64()).sum();
                let mut line = String::new();
                for (i, d) in scratch.node_times().iter().enumerate() {
                    if d.as_secs_f64() > 0.03 * total {
                        line.push_str(&format!(
                            " {}:{:.2}",
                            network.nodes()[i].name,
                            d.as_secs_f64() / runs * 1e3
                        ));
                    }
                }
                println!("    wall ms per node (>3 %):{line}");
                let gemm: Vec<String> = scratch
                    .gemm_steps()
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| format!("{}:{:.1}", network.nodes()[i].name, *n as f64 / runs))
                    .collect();
                println!("    GEMM timesteps per run: {}", gemm.join(" "));
            }
        }
    }
    memory_report();
}

/// Memory per stream (the event plan's `State`), per worker (its `Scratch`) and per network
/// (the plan's caches), after one 5 % run.
fn memory_report() {
    for arch in archs() {
        let network = calibrated(arch);
        let event = plan(&network, ExecutorKind::Event, 1, EventOptions::default());
        let mut state = event.new_state();
        let mut scratch = event.new_scratch();
        classify(&event, &mut scratch, &mut state, &frames(0.05, T, 1));
        let state_total = state.heap_bytes() + std::mem::size_of::<State>();
        let info = event.event().expect("event plan");
        println!(
            "# memory: {arch}: {} neurons, State {} bytes ({:.3} bytes/neuron); event scratch {:.1} MiB per worker; plan cache {:.1} MiB (background {:.1} MiB); network {:.1} MiB",
            network.neuron_count(),
            state_total,
            state_total as f64 / network.neuron_count() as f64,
            scratch.heap_bytes() as f64 / (1 << 20) as f64,
            event.cache_bytes() as f64 / (1 << 20) as f64,
            info.background().bytes() as f64 / (1 << 20) as f64,
            (network.parameter_count() * 4) as f64 / (1 << 20) as f64,
        );
    }
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
        let events: Vec<(usize, Arc<Plan>)> = threads()
            .into_iter()
            .map(|t| {
                (
                    t,
                    plan(&network, ExecutorKind::Event, t, EventOptions::default()),
                )
            })
            .collect();
        let denses: Vec<(usize, Arc<Plan>)> = threads()
            .into_iter()
            .map(|t| {
                (
                    t,
                    plan(&network, ExecutorKind::Dense, t, EventOptions::default()),
                )
            })
            .collect();
        let int8 = calibrated_int8(arch);
        let int8_events: Vec<(usize, Arc<Plan>)> = threads()
            .into_iter()
            .map(|t| {
                (
                    t,
                    plan(&int8, ExecutorKind::Event, t, EventOptions::default()),
                )
            })
            .collect();
        let int8_denses: Vec<(usize, Arc<Plan>)> = threads()
            .into_iter()
            .map(|t| {
                (
                    t,
                    plan(&int8, ExecutorKind::Dense, t, EventOptions::default()),
                )
            })
            .collect();
        for density in densities() {
            let input = frames(density, T, 1234);
            for (threads, event) in &events {
                let mut state = event.new_state();
                let mut scratch = event.new_scratch();
                group.bench_with_input(
                    BenchmarkId::new(format!("event/{threads}t"), density),
                    &input,
                    |b, input| b.iter(|| classify(event, &mut scratch, &mut state, input)),
                );
            }
            for (threads, dense) in &denses {
                let mut state = dense.new_state();
                let mut scratch = dense.new_scratch();
                group.bench_with_input(
                    BenchmarkId::new(format!("dense/{threads}t"), density),
                    &input,
                    |b, input| b.iter(|| classify(dense, &mut scratch, &mut state, input)),
                );
            }
            for (threads, event) in &int8_events {
                let mut state = event.new_state();
                let mut scratch = event.new_scratch();
                group.bench_with_input(
                    BenchmarkId::new(format!("event-int8/{threads}t"), density),
                    &input,
                    |b, input| b.iter(|| classify(event, &mut scratch, &mut state, input)),
                );
            }
            for (threads, dense) in &int8_denses {
                let mut state = dense.new_state();
                let mut scratch = dense.new_scratch();
                group.bench_with_input(
                    BenchmarkId::new(format!("dense-int8/{threads}t"), density),
                    &input,
                    |b, input| b.iter(|| classify(dense, &mut scratch, &mut state, input)),
                );
            }
        }
        group.finish();
    }
}

/// One conv layer (C→C, 3×3, padding 1) on H×W×C inputs of a given density, then a neuron,
/// a global pool and a classifier: the event-driven gather against im2col + GEMM inside the
/// event-driven executor and the dense executor, on binary inputs and on quarter-valued ones
/// (what a 2×2 average pool of spikes gives), to find the density where one overtakes the
/// other.
fn crossover() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    if std::env::var("INFLOR_EXECUTE_CROSSOVER").as_deref() == Ok("int8") {
        crossover_int8(&mut rng);
        return;
    }
    for valued in [false, true] {
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
            let mut line = format!(
                "crossover {} {side}x{side}x{c} (ms cpu per timestep, gather/GEMM/event as shipped/dense):",
                if valued { "valued" } else { "binary" }
            );
            let always = |gemm: bool| EventOptions {
                gemm_above_binary: if gemm { -1.0 } else { f64::INFINITY },
                gemm_above_valued: if gemm { -1.0 } else { f64::INFINITY },
                ..EventOptions::default()
            };
            let plans = [
                plan(&network, ExecutorKind::Event, 1, always(false)),
                plan(&network, ExecutorKind::Event, 1, always(true)),
                plan(&network, ExecutorKind::Event, 1, EventOptions::default()),
                plan(&network, ExecutorKind::Dense, 1, EventOptions::default()),
            ];
            line.push_str(&crossover_row(&plans, shape, valued, &mut rng));
            println!("{line}");
        }
    }
    crossover_int8(&mut rng);
}

/// One crossover line's figures: for each input density, 4 random frames (binary, or
/// quarter-valued when `valued`) and the ms of CPU per timestep of each plan, `a/b/c/d`.
fn crossover_row(
    plans: &[Arc<Plan>],
    shape: FrameShape,
    valued: bool,
    rng: &mut ChaCha8Rng,
) -> String {
    let mut row = String::new();
    for density in [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0] {
        let frames: Vec<SparseFrame> = (0..4)
            .map(|_| {
                let dense: Vec<f32> = (0..shape.len())
                    .map(|_| match rng.random_bool(density) {
                        false => 0.0,
                        true if valued => rng.random_range(1..5) as f32 * 0.25,
                        true => 1.0,
                    })
                    .collect();
                SparseFrame::from_dense(shape, &dense)
            })
            .collect();
        let ms: Vec<String> = plans
            .iter()
            .map(|p| {
                let mut state = p.new_state();
                let mut scratch = p.new_scratch();
                let reps = if p.kind() == ExecutorKind::Dense {
                    3
                } else {
                    5
                };
                let (_, cpu) = time(
                    || {
                        classify(p, &mut scratch, &mut state, &frames);
                    },
                    reps,
                );
                format!("{:.2}", cpu.as_secs_f64() * 1e3 / 4.0)
            })
            .collect();
        row.push_str(&format!(" d={density}: {}", ms.join("/")));
    }
    row
}

/// The int8 twin of [`crossover`]'s binary case: a spiking layer (which passes the 0/1 input
/// through) feeding an int8 3×3 conv, gathered (`sum_taps_i8`) or as im2col + the VNNI GEMM.
fn crossover_int8(rng: &mut ChaCha8Rng) {
    for (side, c) in [(48usize, 64usize), (48, 128), (24, 256), (12, 512)] {
        let weight: Vec<i8> = (0..c * 9 * c)
            .map(|_| rng.random_range(-127..=127))
            .collect();
        let conv = Op::Conv2d {
            in_ch: c,
            out_ch: c,
            kernel: (3, 3),
            stride: 1,
            padding: 1,
            weight: weight.iter().map(|&w| f32::from(w) * 4e-4).collect(),
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
                Node::new("sn0", Op::Neuron(NeuronKind::Srif), vec![0], s),
                Node::new("conv", conv, vec![1], s),
                Node::new("sn", Op::Neuron(NeuronKind::Srif), vec![2], s),
                Node::new("pool", Op::GlobalAvgPool, vec![3], Shape::vector(c)),
                Node::new("fc", linear, vec![4], Shape::vector(10)),
                Node::new("out", Op::Output, vec![5], Shape::vector(10)),
            ])
            .expect("network")
            .with_int8(
                2,
                Int8Weights {
                    weight,
                    scale: vec![4e-4; c],
                },
            )
            .expect("int8 conv"),
        );
        let shape = FrameShape {
            channels: c,
            height: side,
            width: side,
        };
        let always = |gemm: bool| EventOptions {
            gemm_above_int8: if gemm { -1.0 } else { f64::INFINITY },
            ..EventOptions::default()
        };
        let plans = [
            plan(&network, ExecutorKind::Event, 1, always(false)),
            plan(&network, ExecutorKind::Event, 1, always(true)),
            plan(&network, ExecutorKind::Event, 1, EventOptions::default()),
            plan(&network, ExecutorKind::Dense, 1, EventOptions::default()),
        ];
        let mut line = format!(
            "crossover int8 {side}x{side}x{c} (ms cpu per timestep, gather/GEMM/event as shipped/dense):"
        );
        line.push_str(&crossover_row(&plans, shape, false, rng));
        println!("{line}");
    }
}

/// How much a "background plus deviation" update would have to propagate: over every neuron
/// layer and timestep, the spikes S of a run, the background spikes S₀ (empty input) and the
/// spikes that differ, |S △ S₀|. A deviation update adds (or subtracts) one weight row per
/// differing spike where a direct update adds one per spike, so it pays only when
/// |S △ S₀| < |S|.
fn deviation(network: &Arc<Network>, frames: &[SparseFrame]) -> (u64, u64, u64) {
    let options = RunOptions {
        record_spikes: true,
        quantization_node: None,
    };
    let event = plan(network, ExecutorKind::Event, 1, EventOptions::default());
    let mut scratch = event.new_scratch();
    let mut state = event.new_state();
    let run = event
        .run(&mut scratch, &mut state, frames, &options)
        .expect("run");
    let empty = vec![SparseFrame::empty(frames[0].shape); frames.len()];
    state.reset();
    let background = event
        .run(&mut scratch, &mut state, &empty, &options)
        .expect("run");
    let (Some(s), Some(s0)) = (run.spikes, background.spikes) else {
        return (0, 0, 0);
    };
    let (mut n, mut n0, mut differ) = (0u64, 0u64, 0u64);
    for (layer, layer0) in s.iter().zip(&s0) {
        for (a, b) in layer.steps.iter().zip(&layer0.steps) {
            n += a.len() as u64;
            n0 += b.len() as u64;
            let common = a.iter().filter(|i| b.binary_search(i).is_ok()).count() as u64;
            differ += a.len() as u64 + b.len() as u64 - 2 * common;
        }
    }
    (n, n0, differ)
}
/// A real recording (MNIST-DVS, DVS128, 2.2 s of a digit "0") binned into T frames of 2×48×48
/// with bilinear resizing: the digit covers the middle of the frame, the rest stays empty.
fn mnist_dvs_frames() -> Option<Vec<SparseFrame>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/mnist_dvs/mnist_0_scale04_0001.aedat");
    let rec = read_file(&path, None, &DecodeOptions::default()).ok()?;
    let spec = FrameSpec {
        sensor_width: rec.info.width,
        sensor_height: rec.info.height,
        width: SIDE as u16,
        height: SIDE as u16,
        resize: ResizeMode::Bilinear,
        normalization: Default::default(),
    };
    FrameBinner::new(&spec)
        .ok()?
        .bin_recording(&rec.events, RecordingWindows::EqualCount { bins: T })
        .ok()
}

/// The real recording through each network: latency, work done and neurons stepped, and the
/// deviation counts on it and on 5 % random input.
fn report_real() {
    let frames = mnist_dvs_frames();
    for arch in archs() {
        let network = calibrated(arch);
        let random = frames_at(0.05);
        let (n, n0, differ) = deviation(&network, &random);
        println!(
            "{arch} random 5 %: spikes {n}, background spikes {n0}, differing {differ} ({:.2} of the spikes)",
            differ as f64 / n.max(1) as f64
        );
        let Some(frames) = &frames else {
            println!("# MNIST-DVS recording not found");
            continue;
        };
        let (n, n0, differ) = deviation(&network, frames);
        let density: f64 = frames.iter().map(|f| f.density()).sum::<f64>() / frames.len() as f64;
        for tracking in [true, false] {
            let options = EventOptions {
                tracking,
                ..EventOptions::default()
            };
            let event = plan(&network, ExecutorKind::Event, 1, options);
            let mut state = event.new_state();
            let mut scratch = event.new_scratch();
            let out = classify(&event, &mut scratch, &mut state, frames);
            let (_, cpu) = time(
                || {
                    classify(&event, &mut scratch, &mut state, frames);
                },
                5,
            );
            let (nu, nt) = out.stats.neuron_updates();
            println!(
                "{arch} MNIST-DVS (input density {density:.3}) tracking={tracking}: cpu {:.2} ms | rate {:.3} | synaptic ops {:.3} G, performed {:.3} G | neuron updates {:.1} % | spikes {n}, background {n0}, differing {differ} ({:.2} of the spikes)",
                cpu.as_secs_f64() * 1e3,
                out.stats.mean_firing_rate(),
                out.stats.total_synaptic_ops() as f64 / 1e9,
                out.stats.total_performed_ops() as f64 / 1e9,
                100.0 * nu as f64 / nt.max(1) as f64,
                differ as f64 / n.max(1) as f64,
            );
        }
    }
}

fn frames_at(density: f64) -> Vec<SparseFrame> {
    frames(density, T, 1234)
}

fn main() {
    if std::env::var("INFLOR_EXECUTE_MEMORY").is_ok() {
        memory_report();
        return;
    }
    if std::env::var("INFLOR_EXECUTE_REAL").is_ok() {
        report_real();
        return;
    }
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
