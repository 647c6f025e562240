#!/usr/bin/env python3
"""Decoding throughput of faery (PyPI; Rust core) on the same files inflor's decode bench reads.

Usage: python scripts/bench_faery.py [--repeat N] FILE...
Prints one line per file: events, median seconds, events/s. Each run decodes the whole file
into faery's numpy event arrays, exactly what a faery user gets (faery.events_stream_from_file).
Run it from a venv that has faery installed (see BENCHMARKS.md); it is never part of CI.
"""
import argparse
import statistics
import sys
import time

import faery


def decode(path: str) -> int:
    n = 0
    for chunk in faery.events_stream_from_file(path):
        n += len(chunk)
    return n


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for path in args.files:
        try:
            n = decode(path)  # warm-up: page cache and faery's first-call costs
        except Exception as e:  # faery rejects some formats (e.g. DAT Event2D)
            print(f"{path}\tfaery-error\t{e}")
            continue
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            decode(path)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{path}\t{n}\t{med:.6f}\t{n / med / 1e6:.1f} Mev/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
