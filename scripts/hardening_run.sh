#!/usr/bin/env bash
# Hardening run on a CUDA GPU machine: the hardening test files (bad inputs, fuzz, concurrency, CUDA graphs
# and torch.compile, memory, huge shapes, device/stream checks) and, side by side, compute-sanitizer.
#
# Usage: bash scripts/hardening_run.sh OUTDIR [single|multi]
#        python tasks.py hardening --out OUTDIR [--multi]     (installs the package first)
#   single (default): one GPU, every hardening file plus scripts/sanitize.sh in the background
#   multi:            2+ GPUs, test_gpu_multi.py and the cross-device bad-input cases only
# quanto_kernels, optimum-quanto and pytest must be installed in $PYTHON (default python3); the tests run
# from OUTDIR, so they import the installed package and not the source tree.
# Results in OUTDIR: pytest_hardening.txt, junit_hardening.xml, fuzz_<op>.json (the tests write them to
# $QK_REPORT_DIR), sanitizer_summary.md and the sanitizer logs, gpu.txt, diagnostics.txt.
# Environment: HARDENING_TESTS_TIMEOUT (seconds, default 330), SANITIZE_* (see scripts/sanitize.sh).
set -uo pipefail
OUT="${1:?usage: hardening_run.sh OUTDIR [single|multi]}"
mode="${2:-single}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
TESTS_TIMEOUT="${HARDENING_TESTS_TIMEOUT:-330}"
t0=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 QK_REPORT_DIR="$OUT"
cd "$OUT" || exit 1

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > gpu.txt 2>&1
cat gpu.txt
"$PY" -m quanto_kernels > diagnostics.txt 2>&1 || { cat diagnostics.txt; echo "diagnostics failed"; exit 1; }

# The hardening suites, wherever they sit under tests/: test files by name, plus the bad-input folder.
pick() {
  local name found=()
  for name in "$@"; do
    while IFS= read -r f; do found+=("$f"); done < <(find "$REPO/tests" -name "$name.py" -not -path "*/__pycache__/*" | sort)
  done
  [[ -d "$REPO/tests/bad_inputs" && " $* " == *" test_bad_inputs "* ]] && found+=("$REPO/tests/bad_inputs")
  printf '%s\n' "${found[@]}"
}
if [[ "$mode" == multi ]]; then
  mapfile -t files < <(pick test_gpu_multi test_bad_inputs)
  sel=(-k "multi or other-gpu")
  sanitize=0
else
  mapfile -t files < <(pick test_bad_inputs test_gpu_fuzz test_gpu_concurrency test_gpu_graphs test_gpu_memory \
                            test_gpu_huge test_gpu_multi)
  sel=()
  sanitize=1
fi
[[ ${#files[@]} -gt 0 ]] || { echo "no hardening test files found under $REPO/tests"; exit 2; }
echo "hardening files: ${files[*]#"$REPO/"}"

if [[ "$sanitize" == 1 ]]; then
  # compute-sanitizer in the background (its own processes; little GPU memory) while the tests run.
  SANITIZE_TIMEOUT="${SANITIZE_TIMEOUT:-330}" PYTHON="$PY" bash "$REPO/scripts/sanitize.sh" "$OUT" \
    > "$OUT/sanitizer_run.txt" 2>&1 &
  san_pid=$!
fi

t1=$(date +%s)
timeout --kill-after=20 "$TESTS_TIMEOUT" "$PY" -m pytest "${files[@]}" ${sel[@]+"${sel[@]}"} -q -ra --durations=20 \
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
echo "total: $(( $(date +%s) - t0 )) s; results in $OUT"
exit $rc
