#!/usr/bin/env bash
# Training throughput of inflor and of PyTorch on the CPU, side by side in one run.
# Usage: scripts/bench_train_vs_torch.sh PYTHON   (PYTHON: an interpreter with torch installed)
# Runs `cargo bench --bench train` (tiny and resnet20, batch 16, T = 10, 2x48x48), then the
# PyTorch peer (scripts/bench_torch_train.py) with the same thread count, and prints the CPU
# and the load before each part. Only ratios from one run of this script count.
set -euo pipefail
python=${1:?usage: $0 PYTHON}
threads=${THREADS:-2}
cd "$(dirname "$0")/.."
grep -m1 'model name' /proc/cpuinfo
grep -m1 -o -w -E 'avx512f|avx512_vnni|amx_tile|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
echo "load before inflor: $(cut -d' ' -f1-3 /proc/loadavg)"
RAYON_NUM_THREADS=$threads cargo bench --bench train -- --noplot 2>&1 |
    grep -E 'peak heap|train_step/|time:|thrpt:'
echo "load before PyTorch: $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" scripts/bench_torch_train.py --threads "$threads" --steps 10
