#!/usr/bin/env python3
"""PyTorch CPU peer of `cargo bench --bench execute`: runs the same folded networks on the same
inputs and reports the median latency per sample (batch 1, T frames).

The Rust bench writes, with INFLOR_EXECUTE_REPORT=1 INFLOR_EXECUTE_EXPORT=DIR:
  DIR/{arch}.json   nodes (op, inputs, NHWC shapes, conv/linear geometry, parameter offsets)
  DIR/{arch}.bin    parameters, f32 little-endian; conv weights [Cin][Kh][Kw][Cout] with BN
                    folded, linear weights [In][Out] over NHWC-flattened inputs
  DIR/{arch}_d{density}.frames   the input, u8 [T][C][H][W]
  DIR/{arch}_d{density}.json     the Rust executors' logits for that input

This script builds the network from those files with torch.nn.functional and runs it the way
SpikingJelly's multi-step mode does: each conv / pool / add over all T frames at once
([T, C, H, W] as a batch), then the neuron scan over T (SRIF: H = U + X, O = H >= 0.5,
U = H - O). It checks that its logits match the Rust ones (f32 summation order differs, so a
few threshold decisions may flip; the check is loose) and prints the median of several runs.

Usage:
  "$INFLOR_PYTHON" scripts/bench_torch_execute.py DIR --threads 2 [--archs tiny,resnet19]
"""

import argparse
import json
import pathlib
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def load(dir_: pathlib.Path, arch: str):
    manifest = json.loads((dir_ / f"{arch}.json").read_text())
    blob = np.fromfile(dir_ / f"{arch}.bin", dtype="<f4")
    params = {}
    for i, n in enumerate(manifest["nodes"]):
        if n["op"] == "conv2d":
            cin, cout = n["in_ch"], n["out_ch"]
            kh, kw = n["kernel"]
            w = blob[n["weight"] : n["weight"] + cin * kh * kw * cout].reshape(cin, kh, kw, cout)
            b = blob[n["bias"] : n["bias"] + cout]
            params[i] = (
                torch.from_numpy(np.ascontiguousarray(w.transpose(3, 0, 1, 2))),
                torch.from_numpy(b.copy()),
            )
        elif n["op"] == "linear":
            fin, fout = n["in_features"], n["out_features"]
            w = blob[n["weight"] : n["weight"] + fin * fout].reshape(fin, fout)
            b = blob[n["bias"] : n["bias"] + fout]
            params[i] = (torch.from_numpy(np.ascontiguousarray(w.T)), torch.from_numpy(b.copy()))
    return manifest, params


def run(manifest, params, frames: torch.Tensor) -> torch.Tensor:
    """frames: [T, C, H, W] float32. Returns the logits (mean over T of the output node)."""
    nodes = manifest["nodes"]
    values = [None] * len(nodes)
    for i, n in enumerate(nodes):
        op = n["op"]
        x = values[n["inputs"][0]] if n["inputs"] else None
        if op == "input":
            y = frames
        elif op == "conv2d":
            w, b = params[i]
            y = F.conv2d(x, w, b, stride=n["stride"], padding=n["padding"])
        elif op == "avgpool":
            y = F.avg_pool2d(x, n["k"], n["stride"])
        elif op == "sumpool":
            y = F.avg_pool2d(x, n["k"], n["stride"]) * (n["k"] * n["k"])
        elif op == "global_avgpool":
            y = x.mean(dim=(2, 3))
        elif op == "add":
            y = x + values[n["inputs"][1]]
        elif op == "flatten":
            # Our linear weights index the NHWC flattening.
            y = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) if x.dim() == 4 else x
        elif op == "linear":
            w, b = params[i]
            y = F.linear(x, w, b)
        elif op == "neuron":
            u = torch.zeros_like(x[0])
            out = torch.empty_like(x)
            for t in range(x.shape[0]):
                h = u + x[t]
                o = (h >= 0.5).to(x.dtype)
                u = h - o
                out[t] = o
            y = out
        elif op == "output":
            y = x.mean(dim=0)
        else:
            raise ValueError(f"unsupported op {op}")
        values[i] = y
    return values[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default="tiny,resnet20,resnet19")
    ap.add_argument("--reps", type=int, default=0, help="runs per input (default: 9, 3 for resnet19)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}")
    for arch in args.archs.split(","):
        manifest, params = load(args.dir, arch)
        for frames_path in sorted(args.dir.glob(f"{arch}_d*.frames")):
            meta = json.loads(frames_path.with_suffix(".json").read_text())
            t = meta["timesteps"]
            h, w, c = manifest["nodes"][0]["shape"]
            raw = np.fromfile(frames_path, dtype=np.uint8).reshape(t, c, h, w)
            frames = torch.from_numpy(raw.astype(np.float32))
            logits = run(manifest, params, frames)
            ours = torch.tensor(meta["logits"])
            diff = (logits - ours).abs().max().item()
            reps = args.reps or (3 if arch == "resnet19" else 9)
            times, cpus = [], []
            for _ in range(reps):
                t0, c0 = time.perf_counter(), time.process_time()
                run(manifest, params, frames)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            load_avg = pathlib.Path("/proc/loadavg").read_text().split()[0]
            print(
                f"{arch} density={meta['density']:.2f} threads={args.threads} load={load_avg}: "
                f"torch wall {statistics.median(times) * 1e3:.2f} ms cpu {statistics.median(cpus) * 1e3:.2f} ms "
                f"(median of {reps}) | max |logit - rust logit| {diff:.2e}, argmax equal {bool(logits.argmax() == ours.argmax())}"
            )


if __name__ == "__main__":
    main()
