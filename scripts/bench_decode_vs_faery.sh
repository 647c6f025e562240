#!/usr/bin/env bash
# Decoding throughput of inflor and faery, side by side in one run, on the same files:
# the real recordings in ../shared/data and the generated 10 M-event recordings that
# `cargo bench --bench decode` writes to target/bench-data/.
# Usage: scripts/bench_decode_vs_faery.sh PYTHON   (a Python with faery installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: $0 PYTHON-with-faery}
mkdir -p target/bench-data
cargo bench --bench decode -- --warm-up-time 1 --measurement-time 4 decode/ 2>&1 \
  | grep -E '^decode/|thrpt' | tee target/bench-data/inflor.txt
D=../shared/data
"$PY" scripts/bench_faery.py \
  $D/davis346_sample.aedat4 $D/dvxplorer_tonic/sample.aedat4 \
  $D/prophesee_evt2/evt2_sample.raw $D/prophesee_evt2/evt2_test_sparklers.raw \
  $D/prophesee_evt3/evt3_sample.raw $D/event_stream/dvs.es $D/ncars/NCARS_obj_004397_td.dat \
  target/bench-data/generated.aedat4 target/bench-data/generated.evt2.raw \
  target/bench-data/generated.evt3.raw target/bench-data/generated.dat \
  target/bench-data/generated.es | tee target/bench-data/faery.txt
