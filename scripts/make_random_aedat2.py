#!/usr/bin/env python3
"""Writes N random DVS128 events as a jAER AEDAT 2.0 file (CIFAR10-DVS's container), for the
memory and throughput measurements in BENCHMARKS.md. Needs numpy (python/requirements.txt).

    "$INFLOR_PYTHON" scripts/make_random_aedat2.py 12000000 ../big12m.aedat --seed 1
"""

import argparse

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("events", type=int)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=1e6, help="mean events per second")
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    x = rng.integers(0, 128, a.events, dtype=np.uint32)
    y = rng.integers(0, 128, a.events, dtype=np.uint32)
    pol = rng.integers(0, 2, a.events, dtype=np.uint32)
    # DVS128 address: y in bits 8..14, x in bits 1..7, polarity in bit 0.
    address = (y << 8) | (x << 1) | pol
    gaps = rng.exponential(1e6 / a.rate, a.events)
    t = np.cumsum(gaps).astype(np.uint64).astype(np.uint32)
    records = np.empty(a.events, dtype=[("address", ">u4"), ("t", ">u4")])
    records["address"] = address
    records["t"] = t
    with open(a.out, "wb") as f:
        f.write(b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n")
        f.write(b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n")
        records.tofile(f)


if __name__ == "__main__":
    main()
