//! Training throughput: one step (forward, backward, SGD update) at batch 16, T = 10,
//! 2×48×48 inputs, for `tiny` and `resnet20`, with the binary-spike kernels on and off, and
//! the peak heap a step needs.
//!
//! Run: `cargo bench --bench train` (criterion reports samples/s as elements/s).
//! The inputs are sparse event counts (about 10 % of pixels hold 1–3 events), drawn from a
//! fixed seed; the networks are randomly initialised (seed 0). Before the timings the bench
//! prints, per architecture, the peak heap of one step and the fraction of ones in the input
//! of each spike-fed layer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inflor::model::{ArchSpec, Architecture, BatchNormConfig};
use inflor::train::{Net, SpikingConfig, TrainConfig, TrainGraph, Trainer};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The system allocator, counting live and peak bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed through.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed through.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed through.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const T: usize = 10;
const B: usize = 16;
const SIDE: usize = 48;

fn trainer(arch: Architecture, binary_kernels: bool) -> Trainer {
    let spec = ArchSpec {
        arch,
        channels: 2,
        height: SIDE,
        width: SIDE,
        classes: 10,
    };
    let model_graph = spec
        .graph(BatchNormConfig::default())
        .expect("built-in architecture");
    let graph = TrainGraph::from_graph(&model_graph, SpikingConfig::default())
        .expect("generated graphs are trainable");
    let mut net = Net::from_parameters(graph, &model_graph.random_parameters(0)).expect("complete");
    net.binary_kernels = binary_kernels;
    let config = TrainConfig {
        batch: B,
        augment: false,
        ..TrainConfig::default()
    };
    Trainer::new(net, config, T)
}

fn batch() -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let frames = (0..T * B * 2 * SIDE * SIDE)
        .map(|_| {
            if rng.random_bool(0.1) {
                rng.random_range(1..4) as f32
            } else {
                0.0
            }
        })
        .collect();
    let labels = (0..B).map(|_| rng.random_range(0..10)).collect();
    (frames, labels)
}

fn bench(c: &mut Criterion) {
    let (frames, labels) = batch();
    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements(B as u64));
    group.sample_size(10);
    for arch in [Architecture::Tiny, Architecture::Resnet20] {
        for binary in [true, false] {
            let mut tr = trainer(arch, binary);
            // One step outside the timing: the peak heap and the spike densities.
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let stats = tr.step(&frames, &labels, &[], 0.01);
            let peak = PEAK.load(Ordering::Relaxed) - before;
            let rates: Vec<String> = stats
                .firing
                .iter()
                .map(|(node, rate)| format!("{}={rate:.3}", tr.net.graph().nodes()[*node].name))
                .collect();
            eprintln!(
                "{arch} binary_kernels={binary}: peak heap of a step {:.0} MiB; firing {}",
                peak as f64 / (1 << 20) as f64,
                rates.join(" ")
            );
            let name = format!("{arch}/{}", if binary { "binary" } else { "dense" });
            group.bench_function(name, |b| {
                b.iter(|| black_box(tr.step(&frames, &labels, &[], 0.01)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
