#!/usr/bin/env bash
# Counts the instructions two inflor binaries execute on the same decode, binning and executor
# jobs, under valgrind's callgrind (instruction counts do not depend on the machine's load, so
# a before/after comparison holds on a busy machine). Needs ../shared/data beside the repository.
#
#   scripts/compare_instructions.sh BEFORE_BINARY AFTER_BINARY
#
# Prints one Markdown row per job: instructions before, after, and after/before.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?before binary}
after=${2:?after binary}
data=../shared/data
model=tests/data/model/tiny-v1.safetensors
jobs=(
  "decode AEDAT 4.0 (LZ4, DAVIS346)|inspect $data/davis346_sample.aedat4"
  "decode AEDAT 2.0 (DAVIS240C)|inspect $data/davis240c_aedat2/IMU_rotDisk.aedat"
  "decode EVT 2.0|inspect $data/prophesee_evt2/evt2_sample.raw"
  "decode EVT 3.0|inspect $data/prophesee_evt3/evt3_sample.raw"
  "decode Event Stream|inspect $data/event_stream/dvs.es"
  "bin + event-driven executor (tiny)|infer --model $model --executor event assets/dvs-digits-0.aedat"
  "bin + dense executor (tiny)|infer --model $model --executor dense assets/dvs-digits-0.aedat"
)
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "| job | before (instructions) | after | after / before |"
echo "|---|---|---|---|"
for job in "${jobs[@]}"; do
  name=${job%%|*}
  args=${job#*|}
  # shellcheck disable=SC2086
  b=$(count "$before" $args)
  # shellcheck disable=SC2086
  a=$(count "$after" $args)
  printf '| %s | %s | %s | %.3f |\n' "$name" "$b" "$a" "$(echo "$a / $b" | bc -l)"
done
