#!/usr/bin/env bash
# The whole performance comparison in one GPU-machine call (after benchmarks/device_run.sh has
# installed the package): ours, fallback and dense; then quanto's own JIT kernels in a second
# process (QUANTO_KERNELS_DISABLE=1, compiled there, timed); then the FLUX step for every variant.
set -uo pipefail
OUT="${OUT:-/tmp/out}"
here="$(cd "$(dirname "$0")" && pwd)"
cd /tmp
python3 "$here/startup.py" > "$OUT/startup_ours.json" && cat "$OUT/startup_ours.json"
QUANTO_KERNELS_DISABLE=1 python3 "$here/startup.py" > "$OUT/startup_upstream.json" && cat "$OUT/startup_upstream.json"
python3 "$here/startup.py" > "$OUT/startup_ours_again.json"  # upstream's build now cached: nothing changes for us
python3 "$here/bench_linear.py" --mode ours --out "$OUT" 2>&1 | tail -4
QUANTO_KERNELS_DISABLE=1 python3 "$here/bench_linear.py" --mode upstream --out "$OUT" 2>&1 | tail -4
python3 "$here/flux_step.py" --variants bf16,ours,fallback --out "$OUT" 2>&1 | grep -E "^flux|Error" 
QUANTO_KERNELS_DISABLE=1 python3 "$here/flux_step.py" --variants upstream --out "$OUT" 2>&1 | grep -E "^flux|Error"
python3 "$here/report.py" --inp "$OUT" --out "$OUT" --tag "${TAG:-h100}" > /dev/null && echo "report written"
