"""Turn a PyTorch state_dict plus a graph description into an inflor model file.

Train anywhere (PyTorch, SpikingJelly, a GPU), run here: inflor needs only the tensors, named
as in the state_dict, and the JSON document of docs/model-format.md (graph, neuron, input,
class names). This script writes the two into one .safetensors file with NumPy and
safetensors alone; torch is not needed to run it.

Worked example, for inflor's `tiny` architecture written in PyTorch (tdBN as a BatchNorm2d
whose output is scaled by alpha * Vth, so its weight is tdBN's lambda):

    class TdBN(nn.BatchNorm2d):
        def __init__(self, c, alpha=1.0, vth=0.5):
            super().__init__(c); self.scale = alpha * vth
        def forward(self, x):           # x: [T*B, C, H, W]
            mean, var = ...             # batch statistics (training) or running ones
            return self.weight[:, None, None] * self.scale * (x - mean) / sqrt(var + eps) \
                   + self.bias[:, None, None]

    class Tiny(nn.Module):              # state_dict keys: features.{0,1,2}.conv.weight,
        ...                             # features.{i}.bn.{weight,bias,running_mean,running_var},
                                        # classifier.weight, classifier.bias
        # per stage: conv3x3 (no bias) -> TdBN -> avg_pool2d(2) -> SRIF neuron
        # then flatten (C, H, W order) -> linear -> mean over T

After training:

    sd = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez("tiny.npz", **sd)

and, with this file:

    python python/from_pytorch.py --state-dict tiny.npz --tiny 32x32:10 \
        --class-names 0,1,2,3,4,5,6,7,8,9 --timesteps 10 --out tiny.safetensors
    inflor model info tiny.safetensors

For any other network, describe it in a JSON file (`--document`) holding "graph", "neuron",
"input" and "class_names" as docs/model-format.md defines them; `--tiny` only builds that
document for the example. Tensors the graph does not name (num_batches_tracked, optimiser
state) are dropped; missing or misshapen ones are reported and nothing is written.
"""

import argparse
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

FORMAT_VERSION = 2


def tiny_graph(height, width, classes, channels=(16, 32, 64), alpha=1.0, eps=1e-5):
    """The node list of inflor's `tiny` (three conv-tdBN-pool-neuron stages, then linear)."""
    nodes = [{"name": "input", "inputs": [], "op": {"type": "input"}, "shape": [2, height, width]}]
    prev, cin, h, w = "input", 2, height, width
    for i, c in enumerate(channels):
        conv, bn, pool, sn = (f"features.{i}.{s}" for s in ("conv", "bn", "pool", "sn"))
        nodes.append({"name": conv, "inputs": [prev], "op": {
            "type": "conv2d", "in_channels": cin, "out_channels": c, "kernel": [3, 3],
            "stride": 1, "padding": 1, "weight": f"{conv}.weight"}})
        nodes.append({"name": bn, "inputs": [conv], "op": {
            "type": "batch_norm", "channels": c, "eps": eps, "alpha": alpha,
            "threshold_scaled": True, "weight": f"{bn}.weight", "bias": f"{bn}.bias",
            "running_mean": f"{bn}.running_mean", "running_var": f"{bn}.running_var"}})
        nodes.append({"name": pool, "inputs": [bn], "op": {"type": "avg_pool", "kernel": 2, "stride": 2}})
        nodes.append({"name": sn, "inputs": [pool], "op": {"type": "neuron"}})
        prev, cin, h, w = sn, c, h // 2, w // 2
    nodes.append({"name": "flatten", "inputs": [prev], "op": {"type": "flatten"}})
    nodes.append({"name": "classifier", "inputs": ["flatten"], "op": {
        "type": "linear", "in_features": cin * h * w, "out_features": classes,
        "weight": "classifier.weight", "bias": "classifier.bias"}})
    nodes.append({"name": "output", "inputs": ["classifier"], "op": {"type": "output"}})
    return {"nodes": nodes}


def default_input(height, width, timesteps):
    """inflor's default input spec: the whole recording in T equal-count bins, bilinear resize."""
    return {"height": height, "width": width, "timesteps": timesteps,
            "window": {"kind": "recording", "split_by": "equal_count"},
            "resize": "bilinear", "normalization": "none"}


def expected_tensors(graph):
    """name -> shape of every tensor the graph names (docs/model-format.md)."""
    out = {}
    for node in graph["nodes"]:
        op = node["op"]
        if op["type"] == "conv2d":
            kh, kw = op["kernel"]
            out[op["weight"]] = (op["out_channels"], op["in_channels"], kh, kw)
            if op.get("bias"):
                out[op["bias"]] = (op["out_channels"],)
        elif op["type"] == "batch_norm":
            for key in ("weight", "bias", "running_mean", "running_var"):
                out[op[key]] = (op["channels"],)
        elif op["type"] == "linear":
            out[op["weight"]] = (op["out_features"], op["in_features"])
            if op.get("bias"):
                out[op["bias"]] = (op["out_features"],)
    return out


def convert(state_dict, document, provenance=None):
    """The tensors and the metadata of the model file; raises ValueError naming every problem."""
    wanted = expected_tensors(document["graph"])
    problems, tensors = [], {}
    for name, shape in wanted.items():
        if name not in state_dict:
            problems.append(f"missing tensor {name} {list(shape)}")
            continue
        value = np.asarray(state_dict[name])
        if tuple(value.shape) != shape:
            problems.append(f"{name}: shape {list(value.shape)}, the graph needs {list(shape)}")
            continue
        value = value.astype(np.float32)
        if not np.all(np.isfinite(value)):
            problems.append(f"{name}: non-finite values")
        tensors[name] = np.ascontiguousarray(value)
    if problems:
        raise ValueError("; ".join(problems))
    meta = {
        "format_version": FORMAT_VERSION,
        "graph": document["graph"],
        "neuron": document.get("neuron", {"model": {"kind": "srif"}, "vth": 0.5,
                                          "surrogate": {"kind": "dspike", "b": 3.0, "r": 0.5},
                                          "mpr": True}),
        "input": document["input"],
        "class_names": document["class_names"],
        "provenance": provenance or {"created_by": "python/from_pytorch.py", "origin": "converted"},
    }
    metadata = {"inflor": json.dumps(meta), "inflor_format_version": str(FORMAT_VERSION),
                "format": "pt"}
    return tensors, metadata


def load_state_dict(path):
    """A state_dict saved as .npz (np.savez) or .safetensors, as name -> NumPy array."""
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    return load_file(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--state-dict", required=True, help=".npz or .safetensors of NumPy arrays")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--document", help="JSON with graph, neuron, input and class_names")
    g.add_argument("--tiny", help="HxW:CLASSES: build the document of the worked example")
    p.add_argument("--class-names", help="comma-separated (with --tiny; default 0..CLASSES-1)")
    p.add_argument("--timesteps", type=int, default=10, help="T (with --tiny)")
    p.add_argument("--out", required=True, help="the .safetensors model file to write")
    args = p.parse_args(argv)
    if args.document:
        with open(args.document) as f:
            document = json.load(f)
    else:
        size, classes = args.tiny.split(":")
        h, w = (int(v) for v in size.lower().split("x"))
        classes = int(classes)
        names = args.class_names.split(",") if args.class_names else [str(c) for c in range(classes)]
        document = {"graph": tiny_graph(h, w, classes), "input": default_input(h, w, args.timesteps),
                    "class_names": names}
    try:
        tensors, metadata = convert(load_state_dict(args.state_dict), document)
    except ValueError as e:
        print(f"cannot convert {args.state_dict}: {e}", file=sys.stderr)
        return 2
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}: {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
