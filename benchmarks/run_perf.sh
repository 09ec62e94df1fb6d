#!/usr/bin/env bash
# The whole performance comparison on the GPU machine (after benchmarks/device_run.sh has installed the
# package). Two parts, each fits one device call; `all` runs both:
#   upstream: quanto's own JIT kernels (QUANTO_KERNELS_DISABLE=1; compiled there, cold, and timed as
#             start-up), the per-layer benchmark and the FLUX step on them (plus bf16, the reference);
#   ours:     start-up with quanto_kernels, kernel-only floors, the per-layer benchmark (ours, fallback,
#             dense), the FLUX step (bf16, ours, fallback), then the report (it merges whatever JSON of
#             the other part is already in $OUT).
set -uo pipefail
part="${1:-all}"
OUT="${OUT:-/tmp/out}"
here="$(cd "$(dirname "$0")" && pwd)"
cd /tmp
if [[ "$part" == upstream || "$part" == all ]]; then
  QUANTO_KERNELS_DISABLE=1 python3 "$here/startup.py" > "$OUT/startup_upstream.json" && cat "$OUT/startup_upstream.json"
  QUANTO_KERNELS_DISABLE=1 python3 "$here/bench_linear.py" --mode upstream --out "$OUT" 2>&1 | tail -2
  QUANTO_KERNELS_DISABLE=1 python3 "$here/flux_step.py" --variants bf16,upstream --out "$OUT" 2>&1 | grep -E "^flux|Error"
fi
if [[ "$part" == ours || "$part" == all ]]; then
  python3 "$here/startup.py" > "$OUT/startup_ours.json" && cat "$OUT/startup_ours.json"
  python3 "$here/kernel_floor.py" --out "$OUT" 2>&1 | tail -9
  python3 "$here/bench_linear.py" --mode ours --out "$OUT" 2>&1 | tail -2
  python3 "$here/flux_step.py" --variants bf16,ours,fallback --out "$OUT" 2>&1 | grep -E "^flux|Error"
  python3 "$here/report.py" --inp "$OUT" --out "$OUT" --tag "${TAG:-h100}" > /dev/null && echo "report written"
fi
