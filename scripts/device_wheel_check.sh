#!/usr/bin/env bash
# On a CUDA GPU machine: install a prebuilt quanto-kernels wheel (nothing is compiled) into a throw-away
# venv that sees the machine's torch, then run the diagnostics + self-check and the whole test suite
# against it, once for each CUDA build the wheel holds (QUANTO_KERNELS_CUDA_MAJOR=12, 13), and report
# which build the loader picks by itself for this driver.
#
# Usage: bash scripts/device_wheel_check.sh WHEEL OUTDIR [--wheels DIR]
#        python tasks.py wheel-check WHEEL --out OUTDIR [--wheels DIR]
#   WHEEL         the quanto_kernels-*.whl to test (scripts/verify_wheel.sh or the wheels workflow makes it)
#   OUTDIR        where gpu.txt, diagnostics_cu<N>.txt, pytest_cu<N>.txt, junit_cu<N>.xml go
#   --wheels DIR  a machine without a package index: the test dependencies (optimum-quanto 0.2.7 and its
#                 requirements, diffusers, pytest) come from this folder of wheels only
# PYTHON picks the interpreter (default python3; it must have torch with CUDA). PYTEST_EXTRA adds pytest
# arguments (e.g. --ignore=... for suites already run elsewhere).
set -uo pipefail
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheel="${1:?usage: device_wheel_check.sh WHEEL OUTDIR [--wheels DIR]}"
OUT="${2:?usage: device_wheel_check.sh WHEEL OUTDIR [--wheels DIR]}"
shift 2
wheels=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) wheels="$(cd "${2:?--wheels needs a folder}" && pwd)"; shift 2 ;;
    *) echo "unknown argument: $1"; exit 2 ;;
  esac
done
[[ -f "$wheel" ]] || { echo "no wheel at $wheel"; exit 2; }
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/qk-wheel-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 XDG_CACHE_HOME="$work/cache" \
  TORCHINDUCTOR_CACHE_DIR="$work/cache/inductor" TRITON_CACHE_DIR="$work/cache/triton" HF_HOME="$work/cache/hf"

"$PY" -m venv --system-site-packages "$work/venv" || exit 1
vpy="$work/venv/bin/python"
if [[ -n "$wheels" ]]; then
  deps=()
  for w in "$wheels"/*.whl; do [[ "$(basename "$w")" == quanto_kernels-* ]] || deps+=("$w"); done
  "$vpy" -m pip install -q --no-index --no-deps --no-compile "${deps[@]}" "$wheel" || exit 1
else
  "$vpy" -m pip install -q --no-compile "$wheel" "optimum-quanto==0.2.7" diffusers pytest || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
cd "$work" || exit 1  # the installed wheel, not the source tree
where="$("$vpy" -c 'import quanto_kernels, os; print(os.path.dirname(quanto_kernels.__file__))')"
echo "wheel: $(basename "$wheel"); quanto_kernels from $where" | tee "$OUT/wheel.txt"
[[ "$where" == "$work/venv/"* ]] || { echo "FAIL: not the installed wheel"; exit 1; }
majors="$("$vpy" - <<'PYEOF'
import re, zipfile, sys, quanto_kernels, pathlib
pkg = pathlib.Path(quanto_kernels.__file__).parent
print(" ".join(sorted({m.group(1) for p in pkg.iterdir() if (m := re.match(r"^(?:lib)?quanto_kernels_cu(\d+)\.(?:so|dll)$", p.name))})))
PYEOF
)"
rc=0
for major in $majors; do
  echo "== CUDA $major build"
  QUANTO_KERNELS_CUDA_MAJOR=$major "$vpy" -m quanto_kernels 2>&1 | tee "$OUT/diagnostics_cu$major.txt" || rc=1
  QUANTO_KERNELS_CUDA_MAJOR=$major "$vpy" -m pytest "$src/tests" -q -ra -p no:cacheprovider \
    --junitxml="$OUT/junit_cu$major.xml" ${PYTEST_EXTRA:-} > "$OUT/pytest_cu$major.txt" 2>&1 || rc=1
  tail -5 "$OUT/pytest_cu$major.txt"
done
# And the library the loader picks by itself for this driver:
"$vpy" -m quanto_kernels --no-self-check 2>&1 | grep -E "driver CUDA|^library|loaded" | tee "$OUT/auto_choice.txt"
exit $rc
