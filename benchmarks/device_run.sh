#!/usr/bin/env bash
# One call on the lent GPU machine: install the carried wheels (optimum-quanto, diffusers), build the
# library for the local GPU, then diagnostics, the whole test suite and (optionally) the benchmark.
# Usage (device tool, carry .whl):  bash benchmarks/device_run.sh [tests|bench|all|none]
set -uo pipefail
what="${1:-all}"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
QUANTO_KERNELS_CUDA_ARCHS="${QUANTO_KERNELS_CUDA_ARCHS:-90}" QUANTO_KERNELS_BUILD_JOBS=16 \
  python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.txt" 2>&1 || { tail -40 "$OUT/build.txt"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
cd /tmp  # run against the installed package, not the source tree
python3 -m quanto_kernels 2>&1 | tee "$OUT/diagnostics.txt"
rc=0
if [[ "$what" == tests || "$what" == all ]]; then
  python3 -m pytest "$OLDPWD/tests" -q -rs --junitxml="$OUT/junit.xml" -p no:cacheprovider > "$OUT/pytest.txt" 2>&1 || rc=$?
  tail -60 "$OUT/pytest.txt"
fi
if [[ "$what" == bench || "$what" == all ]]; then
  OUT="$OUT" bash "$OLDPWD/benchmarks/run_perf.sh"
fi
exit $rc
