"""PyTorch CPU training throughput for inflor's `tiny` and `resnet20` (the train bench's peer).

A straightforward SRIF with a custom autograd function: per timestep H = U + X,
O = Dspike-MPR-surrogate spike of H, U = H - O; tdBN as batch norm over T*B*H*W with the
scale alpha*Vth; cross-entropy on the mean over T; SGD lr 0.01, momentum 0.9, weight decay
5e-4. Batch 16, T = 10, 2x48x48 inputs of sparse event counts, 10 classes.

Usage: PYTHON scripts/bench_torch_train.py [--threads N] [--steps N] [--arch tiny|resnet20]
Prints one JSON line per architecture: samples/s and peak RSS.
Requirements: torch (CPU is enough).
"""

import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VTH = 0.5
T, B, C, H, W, CLASSES = 10, 16, 2, 48, 48, 10
TANH15 = math.tanh(1.5)


def phi(u):
    mid = 0.5 + 0.5 * torch.tanh(3.0 * (u - 0.5)) / TANH15
    low = 1.0 - (1.0 - u).clamp(min=0).pow(1.0 / 3.0)
    high = u.clamp(min=0).pow(1.0 / 3.0)
    return torch.where(u < 0, low, torch.where(u > 1, high, mid))


def phi_prime(u):
    t = torch.tanh(3.0 * (u - 0.5))
    mid = 1.5 * (1.0 - t * t) / TANH15
    low = (1.0 - u).clamp(min=1e-12).pow(-2.0 / 3.0) / 3.0
    high = u.clamp(min=1e-12).pow(-2.0 / 3.0) / 3.0
    return torch.where(u < 0, low, torch.where(u > 1, high, mid))


class SpikeMPR(torch.autograd.Function):
    """Heaviside forward; Dspike(b=3, r=1/2) through MPR backward."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return (h >= VTH).to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        x = phi(h) - VTH
        b, r = 3.0, 0.5
        g = b * (1.0 - torch.tanh(b * x) ** 2) / (2.0 * math.tanh(b * r))
        g = torch.where(x.abs() <= r, g, torch.zeros_like(g))
        return grad * g * phi_prime(h)


class SRIF(nn.Module):
    """Multi-step SRIF over [T*B, ...] inputs."""

    def forward(self, x):
        xs = x.view(T, -1, *x.shape[1:])
        u = torch.zeros_like(xs[0])
        out = []
        for t in range(T):
            h = u + xs[t]
            o = SpikeMPR.apply(h)
            u = h - o
            out.append(o)
        return torch.stack(out).flatten(0, 1)


class TdBN(nn.BatchNorm2d):
    def __init__(self, c, alpha=1.0):
        super().__init__(c)
        self.alpha = alpha

    def forward(self, x):
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight * (self.alpha * VTH),
            self.bias, self.training, 0.1, self.eps)


def conv_bn(cin, cout, k=3, stride=1, alpha=1.0):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), TdBN(cout, alpha))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], C
        for ch in (16, 32, 64):
            layers += [conv_bn(cin, ch), nn.AvgPool2d(2), SRIF()]
            cin = ch
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(64 * 6 * 6, CLASSES)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        a = 1 / math.sqrt(2)
        self.c1 = conv_bn(cin, planes, 3, stride)
        self.s1 = SRIF()
        self.c2 = conv_bn(planes, planes, 3, 1, a)
        self.down = conv_bn(cin, planes, 1, stride, a) if stride != 1 or cin != planes else None
        self.s2 = SRIF()

    def forward(self, x):
        y = self.c2(self.s1(self.c1(x)))
        return self.s2(y + (self.down(x) if self.down is not None else x))


class Resnet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(C, 64), SRIF(), conv_bn(64, 64), SRIF(), conv_bn(64, 64), nn.AvgPool2d(2),
            SRIF())
        blocks, cin = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [Block(cin, planes, stride), Block(planes, planes, 1)]
            cin = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, CLASSES)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def batch(gen):
    # Sparse event counts: about 10 % of pixels hold 1-3 events.
    mask = torch.rand(T * B, C, H, W, generator=gen) < 0.1
    counts = torch.randint(1, 4, (T * B, C, H, W), generator=gen).float()
    return counts * mask, torch.randint(0, CLASSES, (B,), generator=gen)


def run(arch, steps):
    torch.manual_seed(0)
    model = {"tiny": Tiny, "resnet20": Resnet20}[arch]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    x, y = batch(gen)

    def step():
        out = model(x).view(T, B, CLASSES).mean(0)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    return {
        "arch": arch,
        "samples_per_s": steps * B / elapsed,
        "seconds_per_step": elapsed / steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="0: 10 for tiny, 3 for resnet20")
    p.add_argument("--arch", choices=["tiny", "resnet20"], action="append")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for arch in a.arch or ["tiny", "resnet20"]:
        steps = a.steps or {"tiny": 10, "resnet20": 3}[arch]
        print(json.dumps(run(arch, steps)), flush=True)


if __name__ == "__main__":
    main()
