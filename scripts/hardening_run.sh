#!/usr/bin/env bash
# Hardening run (issues 4 and 5) on the GPU machine, in one call: build and diagnostics
# (benchmarks/device_run.sh none), then the hardening test files and compute-sanitizer side by side.
#
# Usage (device tool, carry .whl):
#   bash scripts/hardening_run.sh          # one GPU: bad inputs, fuzz, concurrency, graphs/compile, memory,
#                                          # huge shapes, device/stream checks; plus compute-sanitizer
#   bash scripts/hardening_run.sh multi    # 2+ GPUs (nvidia-h200-x2): test_gpu_multi.py and the
#                                          # cross-device bad-input cases only
# Results in $OUT: pytest_hardening.txt, junit_hardening.xml, fuzz_<op>.json, sanitizer_summary.md and
# the sanitizer logs, gpu.txt, build.txt, diagnostics.txt.
set -uo pipefail
mode="${1:-single}"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTS_TIMEOUT="${HARDENING_TESTS_TIMEOUT:-330}"
t0=$(date +%s)

cd "$REPO" && bash benchmarks/device_run.sh none || exit 1  # (carried wheels in .whl/, build, diagnostics)
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 QK_REPORT_DIR="$OUT"
cd /tmp  # the installed package, not the source tree

if [[ "$mode" == multi ]]; then
  files=("$REPO/tests/test_gpu_multi.py" "$REPO/tests/test_bad_inputs.py")
  sel=(-k "multi or other-gpu")
  sanitize=0
else
  files=()
  for f in test_bad_inputs test_gpu_fuzz test_gpu_concurrency test_gpu_graphs test_gpu_memory test_gpu_huge \
           test_gpu_multi; do
    files+=("$REPO/tests/$f.py")
  done
  sel=()
  sanitize=1
fi

if [[ "$sanitize" == 1 ]]; then
  # compute-sanitizer in the background (its own processes; little GPU memory) while the tests run.
  SANITIZE_TIMEOUT="${SANITIZE_TIMEOUT:-330}" OUT="$OUT" bash "$REPO/scripts/sanitize.sh" > "$OUT/sanitizer_run.txt" 2>&1 &
  san_pid=$!
fi

t1=$(date +%s)
timeout --kill-after=20 "$TESTS_TIMEOUT" python3 -m pytest "${files[@]}" ${sel[@]+"${sel[@]}"} -q -rs --durations=20 \
  --junitxml="$OUT/junit_hardening.xml" -p no:cacheprovider > "$OUT/pytest_hardening.txt" 2>&1
rc=$?
echo "hardening tests: exit $rc, $(( $(date +%s) - t1 )) s"
grep -E "passed|failed|error" "$OUT/pytest_hardening.txt" | tail -3
grep -E "^(FAILED|ERROR)" "$OUT/pytest_hardening.txt" | head -40

if [[ "$sanitize" == 1 ]]; then
  wait "$san_pid"
  src=$?
  echo "compute-sanitizer: exit $src"
  cat "$OUT/sanitizer_summary.md" 2>/dev/null || tail -20 "$OUT/sanitizer_run.txt"
  [[ $src -ne 0 && $rc -eq 0 ]] && rc=$src
fi
echo "total: $(( $(date +%s) - t0 )) s"
# The device tool returns at most 8 files: bundle the logs, keep the two summaries beside them.
(cd "$OUT" && tar czf hardening_logs.tgz --exclude=hardening_logs.tgz ./* && \
  find . -maxdepth 1 -type f ! -name hardening_logs.tgz ! -name sanitizer_summary.md ! -name pytest_hardening.txt -delete)
exit $rc
