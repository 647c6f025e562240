#!/usr/bin/env python3
"""SpikingJelly peer for inflor's binner: throughput of SpikingJelly's frame integration followed
by torch's resize, on the same events as `benches/binner.rs`, plus the expected values the Rust
tests check against.

    python scripts/bench_spikingjelly_binning.py bench      # throughput, 1 and 2 torch threads
    python scripts/bench_spikingjelly_binning.py expected   # constants for tests/it/binner.rs
    python scripts/bench_spikingjelly_binning.py criterion  # best/median of `cargo bench` samples

Needs numpy, torch and spikingjelly 2.0 (run it with the interpreter of a venv that has them, e.g. `$INFLOR_PYTHON`). The pipeline
measured is what a CIFAR10-DVS user runs per sample:
`integrate_events_by_fixed_frames_number(events, 'number', T, 128, 128)` and then
`torch.nn.functional.interpolate(torch.from_numpy(frames).float(), size=(48, 48), mode=...)`.
"""

import argparse
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine, torch's spinning
# worker steals the core that numpy's (single-threaded) integration needs. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MNIST_DVS = REPO / ".." / "shared" / "data" / "mnist_dvs" / "mnist_0_scale04_0001.aedat"
MASK64 = (1 << 64) - 1


class SplitMix64:
    """The generator `benches/binner.rs` and `tests/it/binner.rs` use (same constants)."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def random_walk(n, width, height, seed, walkers=16):
    """Events from `walkers` edges doing a random walk: each event moves one walker by at most
    one pixel, sometimes flips its polarity, and advances time by 0-3 µs. Returns t, x, y, p
    (p = 1 for ON) as int64 arrays."""
    rng = SplitMix64(seed)
    wx, wy, wp = [], [], []
    for _ in range(walkers):
        v = rng.next()
        wx.append((v & 0xFFFF) % width)
        wy.append(((v >> 16) & 0xFFFF) % height)
        wp.append((v >> 32) & 1)
    t = np.empty(n, np.int64)
    x = np.empty(n, np.int64)
    y = np.empty(n, np.int64)
    p = np.empty(n, np.int64)
    now = 0
    for i in range(n):
        v = rng.next()
        w = v % walkers
        wx[w] = min(max(wx[w] + (v >> 8) % 3 - 1, 0), width - 1)
        wy[w] = min(max(wy[w] + (v >> 16) % 3 - 1, 0), height - 1)
        if (v >> 24) & 15 == 0:
            wp[w] ^= 1
        now += (v >> 32) & 3
        t[i], x[i], y[i], p[i] = now, wx[w], wy[w], wp[w]
    return t, x, y, p


def read_mnist_dvs(path):
    """AEDAT 2.0 DVS128 with SpikingJelly's CIFAR10-DVS conventions: x = 127 - y_raw,
    y = 127 - x_raw, p = 1 - pol_raw (so p = 1 is ON)."""
    data = path.read_bytes()
    pos = 0
    while data[pos:pos + 1] == b"#":
        pos = data.index(b"\n", pos) + 1
    words = np.frombuffer(data[pos:], dtype=">u4")
    addr, t = words[0::2].astype(np.int64), words[1::2].astype(np.int64)
    x_raw, y_raw, pol = (addr >> 1) & 0x7F, (addr >> 8) & 0x7F, addr & 1
    return t, 127 - y_raw, 127 - x_raw, 1 - pol


def checksum(t, x, y, p):
    """Printed by the Rust bench too, to show both ran on identical events."""
    return int(t.sum()), int(x.sum()), int(y.sum()), int(p.sum())


def spikingjelly_frames(events, bins, size, mode, split_by="number"):
    t, x, y, p = events
    frames = integrate_events_by_fixed_frames_number(
        {"t": t, "x": x, "y": y, "p": p}, split_by, bins, 128, 128)
    tensor = torch.from_numpy(frames).float()
    if size is None:
        return tensor
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(tensor, size=size, mode=mode, **kwargs)


def fnv1a64(array):
    h = 0xCBF29CE484222325
    for b in np.ascontiguousarray(array, dtype="<f4").tobytes():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def as_loader_dtypes(events):
    """The dtypes SpikingJelly's own CIFAR10-DVS loader produces (t, x, y uint32; p int64)."""
    t, x, y, p = events
    return t.astype(np.uint32), x.astype(np.uint32), y.astype(np.uint32), p.astype(np.int64)


def bench(args):
    walk = random_walk(1_000_000, 128, 128, seed=1)
    print(f"random walk 1M events, checksum {checksum(*walk)}")
    t, x, y, p = read_mnist_dvs(MNIST_DVS)
    span = int(t[-1] - t[0]) + 1
    tiles = 64
    tiled = tuple(np.concatenate(parts) for parts in zip(*[
        (t + k * span, x, y, p) for k in range(tiles)]))
    print(f"mnist_dvs x{tiles}: {len(tiled[0])} events, checksum {checksum(*tiled)}")
    inputs = [
        ("random_walk_1M", walk),
        ("random_walk_1M_loader_dtypes", as_loader_dtypes(walk)),
        (f"mnist_dvs_x{tiles}", tiled),
        ("mnist_dvs_single", (t, x, y, p)),
    ]
    print(f"torch {torch.__version__}, numpy {np.__version__}, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print("| input | mode | threads | SpikingJelly bin only (Mev/s) | bin + resize (Mev/s) |")
    print("|---|---|---|---|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, events in inputs:
            n = len(events[0])
            repeats = args.repeats if n > 100_000 else args.repeats * 20
            only = best_time(lambda: spikingjelly_frames(events, 10, None, None), repeats)
            for mode in ("nearest", "bilinear", "area"):
                full = best_time(
                    lambda: spikingjelly_frames(events, 10, (48, 48), mode), repeats)
                print(f"| {name} | {mode} | {threads} | {n / only / 1e6:.0f} | "
                      f"{n / full / 1e6:.0f} |")
    sys.stdout.flush()


def rust_f32(v):
    return f"{np.float32(v)!r}".removeprefix("np.float32(").removesuffix(")")


def expected(_args):
    torch.set_num_threads(1)
    print(f"// torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}")
    # A 16x16 count frame of 3000 events resized to 6x6.
    events = random_walk(3000, 16, 16, seed=7)
    t, x, y, p = events
    frame = np.zeros((1, 2, 16, 16), np.float32)
    np.add.at(frame, (0, p, y, x), 1)
    print(f"// 16x16 -> 6x6, random_walk(3000, 16, 16, seed 7), checksum {checksum(*events)}")
    for mode in ("nearest", "bilinear", "area"):
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        out = F.interpolate(torch.from_numpy(frame), size=(6, 6), mode=mode, **kwargs)
        values = ", ".join(rust_f32(v) for v in out.numpy().ravel())
        print(f"const TORCH_16_TO_6_{mode.upper()}: [f32; 72] = [{values}];")
    # Bilinear with out_h + out_w > 128: torch's separable kernel (not bit-identical to ours).
    events = random_walk(4000, 20, 6, seed=11)
    t, x, y, p = events
    frame = np.zeros((1, 2, 6, 20), np.float32)
    np.add.at(frame, (0, p, y, x), 1)
    out = F.interpolate(torch.from_numpy(frame), size=(2, 127), mode="bilinear",
                        align_corners=False)
    print(f"// 20x6 -> 127x2 bilinear, random_walk(4000, 20, 6, seed 11), "
          f"checksum {checksum(*events)}")
    values = ", ".join(rust_f32(v) for v in out.numpy().ravel())
    print(f"const TORCH_20X6_TO_127X2_BILINEAR: [f32; 508] = [{values}];")
    # Whole pipelines: FNV-1a of the [10, 2, 48, 48] float32 frames, and their sum.
    walk = random_walk(20_000, 128, 128, seed=1)
    mnist = read_mnist_dvs(MNIST_DVS)
    for name, ev in (("WALK", walk), ("MNIST_DVS", mnist)):
        print(f"// {name}: {len(ev[0])} events, checksum {checksum(*ev)}")
        for mode in ("nearest", "bilinear", "area"):
            out = spikingjelly_frames(ev, 10, (48, 48), mode)
            print(f"const {name}_{mode.upper()}_48: (u64, f64) = "
                  f"({fnv1a64(out.numpy()):#x}, {float(out.double().sum())!r});")
    out = spikingjelly_frames(mnist, 10, None, None, split_by="time")
    print(f"const MNIST_DVS_TIME_128: (u64, f64) = "
          f"({fnv1a64(out.numpy()):#x}, {float(out.double().sum())!r});")


def criterion(_args):
    """Best and median time per iteration over the samples of the last `cargo bench --bench
    binner` run (criterion's own report gives a mean, which a shared machine inflates)."""
    import json

    root = REPO / "target" / "criterion"
    print("| benchmark | best (ms) | median (ms) | best (Mev/s) | median (Mev/s) |")
    print("|---|---|---|---|---|")
    for sample_file in sorted(root.glob("**/new/sample.json")):
        sample = json.loads(sample_file.read_text())
        meta = json.loads((sample_file.parent / "benchmark.json").read_text())
        per_iter = sorted(t / n for t, n in zip(sample["times"], sample["iters"]))
        best, median = per_iter[0], per_iter[len(per_iter) // 2]
        events = (meta.get("throughput") or {}).get("Elements", 0)
        print(f"| {meta['full_id']} | {best / 1e6:.3f} | {median / 1e6:.3f} | "
              f"{events / best * 1e3:.0f} | {events / median * 1e3:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("bench", "expected", "criterion"), nargs="?",
                        default="bench")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    {"bench": bench, "expected": expected, "criterion": criterion}[args.command](args)


if __name__ == "__main__":
    main()
