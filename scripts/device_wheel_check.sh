#!/usr/bin/env bash
# On the GPU machine: install a prebuilt quanto-kernels wheel (nothing is compiled there) and run the
# diagnostics + self-check and the whole test suite against the installed wheel, once for each CUDA
# build the wheel holds (QUANTO_KERNELS_CUDA_MAJOR=12, 13).
# Usage (device tool, carry ["wheelhouse", ".whl"]):
#   bash scripts/device_wheel_check.sh [wheelhouse/quanto_kernels-*.whl]
# PYTEST_EXTRA adds pytest arguments (e.g. --ignore=... for suites already run in another call).
# wheelhouse/ holds the wheel to test (scripts/verify_wheel.sh or the wheels workflow makes it);
# .whl/ holds the other wheels the tests need (optimum-quanto, diffusers), as for benchmarks/device_run.sh.
set -uo pipefail
src="$(pwd)"
wheel="${1:-$(find wheelhouse -name "quanto_kernels-*.whl" 2>/dev/null | sort | tail -1)}"
[[ -f "$wheel" ]] || { echo "no wheel: put one in wheelhouse/ or pass its path"; exit 2; }
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
deps=()
for w in .whl/*.whl; do [[ "$(basename "$w")" == quanto_kernels-* ]] || deps+=("$w"); done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  "${deps[@]}" "$wheel" || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
cd /tmp || exit 1  # the installed wheel, not the source tree
where="$(python3 -c 'import quanto_kernels, os; print(os.path.dirname(quanto_kernels.__file__))')"
echo "wheel: $(basename "$wheel"); quanto_kernels from $where" | tee "$OUT/wheel.txt"
[[ "$where" == /tmp/site/* ]] || { echo "FAIL: not the installed wheel"; exit 1; }
majors="$(python3 -c 'from quanto_kernels import _loader; print(" ".join(map(str, sorted(_loader.find_candidates()))))')"
rc=0
for major in $majors; do
  echo "== CUDA $major build"
  QUANTO_KERNELS_CUDA_MAJOR=$major python3 -m quanto_kernels 2>&1 | tee "$OUT/diagnostics_cu$major.txt" || rc=1
  QUANTO_KERNELS_CUDA_MAJOR=$major python3 -m pytest "$src/tests" -q -rs -p no:cacheprovider \
    --junitxml="$OUT/junit_cu$major.xml" ${PYTEST_EXTRA:-} > "$OUT/pytest_cu$major.txt" 2>&1 || rc=1
  tail -5 "$OUT/pytest_cu$major.txt"
done
# And the library the loader picks by itself for this driver:
python3 -m quanto_kernels --no-self-check 2>&1 | grep -E "driver CUDA|^library|loaded" | tee "$OUT/auto_choice.txt"
exit $rc
