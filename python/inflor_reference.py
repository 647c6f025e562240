#!/usr/bin/env python3
"""A reference forward pass of an inflor model file, written from docs/model-format.md alone.

It reads the graph and the tensors of a `.safetensors` model file, and runs the network on
frames (a NumPy array `[windows, T, 2, H, W]` as written by `inflor infer --dump-frames`),
printing one JSON line of logits per window.

Arithmetic follows inflor's documented contract so the logits match `inflor infer` exactly:
each batch norm is folded into the conv or linear before it in float64 and rounded to float32
once; every conv, linear and pool sums float32 operands in float64 and rounds to float32 once;
neurons run in float32; the output sums float32 values in time order and divides by T.

An int8 model (metadata `quantization`) stores the weights of the nodes it lists as int8 with a
float32 `<weight>_scale` tensor [Cout]. Their inputs are spikes, so the sum of the selected
integer weights is exact (computed here in int64); each output value is then
`float32(sum) * scale + bias` in float32, with the batch norm's scale folded into `scale` in
float64 and rounded once.

Requirements: numpy and safetensors (see python/requirements.txt).

    python3 python/inflor_reference.py MODEL.safetensors FRAMES.npy
"""

import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

VTH = np.float32(0.5)
F32, F64 = np.float32, np.float64


def load(path):
    with safe_open(path, "np") as f:
        meta = json.loads(f.metadata()["inflor"])
    if meta["format_version"] != 2:
        sys.exit(f"{path}: this reference reads format version 2, found {meta['format_version']}")
    return meta, load_file(path)


def fold(nodes, tensors, vth, quantized=()):
    """Per weighted node name: (float32 weight, float32 bias) with its batch norm folded in;
    for a node in `quantized`, (int64 weight, float32 bias, float32 per-channel scale)."""
    by_name = {n["name"]: n for n in nodes}
    follows = {}
    for n in nodes:
        if n["op"]["type"] == "batch_norm":
            follows[n["inputs"][0]] = n["op"]
    folded = {}
    for n in nodes:
        op = n["op"]
        if op["type"] not in ("conv2d", "linear"):
            continue
        int8 = n["name"] in quantized
        w = tensors[op["weight"]].astype(F64)
        if int8:
            assert tensors[op["weight"]].dtype == np.int8
            channel_scale = tensors[op["weight"] + "_scale"].astype(F64)
        out = w.shape[0]
        b = tensors[op["bias"]].astype(F64) if op.get("bias") else np.zeros(out, F64)
        bn = follows.get(n["name"])
        if bn is not None:
            factor = F64(bn["alpha"]) * F64(vth) if bn["threshold_scaled"] else 1.0
            lam = tensors[bn["weight"]].astype(F64)
            beta = tensors[bn["bias"]].astype(F64)
            mean = tensors[bn["running_mean"]].astype(F64)
            var = tensors[bn["running_var"]].astype(F64)
            scale = lam * factor / np.sqrt(var + F64(F32(bn["eps"])))
            shift = beta - mean * scale
            if int8:
                channel_scale = channel_scale * scale
            else:
                w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            b = scale * b + shift
        if int8:
            folded[n["name"]] = (w.astype(np.int64), b.astype(F32), channel_scale.astype(F32))
        else:
            folded[n["name"]] = (w.astype(F32), b.astype(F32))
    assert all(name in by_name for name in folded)
    return folded


def int8_current(sums, scale, b):
    """The one float32 expression of an int8 node: float32(sum) * scale + bias."""
    shape = (-1,) + (1,) * (sums.ndim - 1)
    return sums.astype(F32) * scale.reshape(shape) + b.reshape(shape)


def conv2d(x, w, b, stride, padding, scale=None):
    """x [C, H, W] float32, w [Cout, Cin, kh, kw] float32: sums in float64, one rounding.
    With a `scale` (an int8 node), w is int64 and x spikes: exact integer sums."""
    c, h, wd = x.shape
    cout, cin, kh, kw = w.shape
    dtype = np.int64 if scale is not None else F64
    xp = np.zeros((c, h + 2 * padding, wd + 2 * padding), dtype)
    xp[:, padding:padding + h, padding:padding + wd] = x
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    cols = np.empty((cin, kh, kw, oh, ow), dtype)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, ky, kx] = xp[:, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
    if scale is not None:
        assert np.all((x == 0) | (x == 1)), "an int8 node's input must be spikes"
        sums = np.tensordot(w, cols, axes=([1, 2, 3], [0, 1, 2]))
        return int8_current(sums, scale, b)
    y = np.tensordot(w.astype(F64), cols, axes=([1, 2, 3], [0, 1, 2]))
    return (y + b.astype(F64)[:, None, None]).astype(F32)


def avg_pool(x, k, stride):
    c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    acc = np.zeros((c, oh, ow), F64)
    for dy in range(k):
        for dx in range(k):
            acc += x[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride].astype(F64)
    return (acc / F64(k * k)).astype(F32)


def neuron_step(kind, u, x):
    """One timestep of the model's neuron, in float32. Returns (spikes, next membrane)."""
    if kind["kind"] == "lif_hard":
        h = F32(kind["tau"]) * u + x
    else:
        h = u + x
    o = (h >= VTH).astype(F32)
    if kind["kind"] == "srif":
        return o, h - o
    return o, np.where(o != 0, F32(0), h).astype(F32)


def run(meta, tensors, frames):
    """frames [T, 2, H, W] float32 -> logits [classes] float32."""
    nodes = meta["graph"]["nodes"]
    kind = meta["neuron"]["model"]
    quantized = set((meta.get("quantization") or {}).get("nodes", []))
    folded = fold(nodes, tensors, meta["neuron"]["vth"], quantized)
    bn_of = {n["inputs"][0] for n in nodes if n["op"]["type"] == "batch_norm"}
    membranes = {}
    out_sum = None
    for t in range(frames.shape[0]):
        values = {}
        for n in nodes:
            op, name = n["op"], n["name"]
            xs = [values[i] for i in n["inputs"]]
            kind_ = op["type"]
            if kind_ == "input":
                y = frames[t].astype(F32)
            elif kind_ == "conv2d":
                y = conv2d(xs[0], *folded[name][:2], op["stride"], op["padding"],
                           *folded[name][2:])
            elif kind_ == "batch_norm":
                y = xs[0]  # folded into the node before it
            elif kind_ == "avg_pool":
                y = avg_pool(xs[0], op["kernel"], op["stride"])
            elif kind_ == "global_avg_pool":
                x = xs[0]
                y = (x.astype(F64).sum(axis=(1, 2)) / F64(x.shape[1] * x.shape[2])).astype(F32)
                y = y.reshape(-1, 1, 1)
            elif kind_ == "neuron":
                u = membranes.get(name, np.zeros_like(xs[0], F32))
                y, membranes[name] = neuron_step(kind, u, xs[0])
            elif kind_ == "add":
                y = (xs[0].astype(F64) + xs[1].astype(F64)).astype(F32)
            elif kind_ == "flatten":
                y = xs[0].reshape(-1, 1, 1)
            elif kind_ == "linear":
                w, b = folded[name][:2]
                if name in quantized:
                    x = xs[0].reshape(-1)
                    assert np.all((x == 0) | (x == 1)), "an int8 node's input must be spikes"
                    y = int8_current(w @ x.astype(np.int64), folded[name][2], b)
                else:
                    x = xs[0].reshape(-1).astype(F64)
                    y = (w.astype(F64) @ x + b.astype(F64)).astype(F32)
                y = y.reshape(-1, 1, 1)
            elif kind_ == "output":
                y = xs[0].reshape(-1)
                out_sum = y.copy() if out_sum is None else (out_sum + y).astype(F32)
            else:
                sys.exit(f"node {name}: unknown op {kind_}")
            assert name not in bn_of or kind_ in ("conv2d", "linear")
            values[name] = y
    return (out_sum / F32(frames.shape[0])).astype(F32)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    meta, tensors = load(sys.argv[1])
    frames = np.load(sys.argv[2])
    if frames.ndim != 5:
        sys.exit(f"{sys.argv[2]}: expected [windows, T, 2, H, W], found shape {frames.shape}")
    for window in frames:
        logits = run(meta, tensors, window)
        print(json.dumps({"logits": [float(v) for v in logits],
                          "predicted": int(np.argmax(logits))}))


if __name__ == "__main__":
    main()
