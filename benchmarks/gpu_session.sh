#!/usr/bin/env bash
# One call on a CUDA machine without internet: install the wheels the benchmarks need, build and install
# quanto-kernels for the local GPU, then run one stage.
#
# Usage: bash benchmarks/gpu_session.sh OUT WHEELS STAGE [extra arguments for the stage]
#   OUT     output folder (flat; every stage writes at most 6 files there)
#   WHEELS  folder of wheels to install without dependencies (e.g. optimum-quanto, diffusers, torchao, ninja);
#           torch itself must already be installed
#   STAGE   tests         pytest -ra over tests/ (JUnit XML + log in OUT)                      ~3-6 min
#           bench-layers  python benchmarks/run.py --part layers                               ~5-7 min
#           bench-sweep   python benchmarks/run.py --part sweep                                ~2-3 min
#           bench-flux    python benchmarks/run.py --part flux                                 ~8-9 min
#           bench-blocks  python benchmarks/flux_block_accuracy.py (per-block FLUX accuracy)   ~3-5 min
#           sanitize      scripts/sanitize.py (under scripts/sanitize.sh when present)
#           install       install + build only
# Environment: QK_SITE_DIR (where the wheels go, put on PYTHONPATH; default: build/gpu-site in the
# checkout, kept between calls on a warm machine), QUANTO_KERNELS_CUDA_ARCHS (default: the GPU's own,
# e.g. 90a on sm_90), GPU_TAG (default: from the GPU name, e.g. h200), BUDGET_S (run.py --budget-s).
# The install and build take ~1-2 min (skipped when this checkout's build is already installed).
set -uo pipefail
[[ $# -ge 3 ]] || { sed -n '2,19p' "$0"; exit 2; }
OUT="$1"; WHEELS="$2"; STAGE="$3"; shift 3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"; OUT="$(cd "$OUT" && pwd)"
SITE="${QK_SITE_DIR:-$ROOT/build/gpu-site}"
mkdir -p "$SITE"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1

# 1. wheels (once per set of wheels)
stamp="$SITE/.wheels-$(ls "$WHEELS"/*.whl 2>/dev/null | xargs -n1 basename 2>/dev/null | sort | md5sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  ls "$WHEELS"/*.whl > /dev/null 2>&1 || { echo "no wheels in $WHEELS"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl \
    > "$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
  touch "$stamp"
fi

# 2. quanto-kernels for this GPU
cap="$("$PY" -c 'import torch; c = torch.cuda.get_device_capability(); print(f"{c[0]}{c[1]}")' 2>/dev/null)"
[[ -n "$cap" ]] || { echo "no CUDA GPU visible to torch"; exit 3; }
arch="${QUANTO_KERNELS_CUDA_ARCHS:-$cap}"
[[ -z "${QUANTO_KERNELS_CUDA_ARCHS:-}" && "$cap" == 90 ]] && arch=90a
rev="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
# The build is keyed on the sources' content, not on git (a copy of the tree may have no .git).
src="$(cd "$ROOT" && find csrc python setup.py CMakeLists.txt pyproject.toml -type f -not -path '*/__pycache__/*' \
        -not -name '*.so' -not -name '*.dll' -not -name 'build_record.json' 2>/dev/null | sort | xargs md5sum | md5sum | cut -c1-12)"
bstamp="$SITE/.built-$src-$arch"
if [[ ! -f "$bstamp" ]] || ! (cd "$OUT" && "$PY" -c "import quanto_kernels" 2>/dev/null); then
  t0=$(date +%s)
  ( cd "$ROOT" && QUANTO_KERNELS_CUDA_ARCHS="$arch" QUANTO_KERNELS_BUILD_JOBS="${QUANTO_KERNELS_BUILD_JOBS:-$(nproc)}" \
      "$PY" -m pip install --no-build-isolation --no-deps -q . ) > "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; exit 1; }
  rm -f "$SITE"/.built-*; touch "$bstamp"
  echo "quanto-kernels built for sm_$arch in $(( $(date +%s) - t0 )) s (commit $rev)"
fi
[[ "$rev" != unknown ]] && export QUANTO_KERNELS_GIT_REV="${QUANTO_KERNELS_GIT_REV:-$rev}"
if [[ -z "${GPU_TAG:-}" ]]; then
  GPU_TAG="$("$PY" -c 'import re, torch; n = torch.cuda.get_device_name().lower(); m = re.search(r"\b([a-z]+\d{2,4}[a-z]?)\b", n.replace("nvidia", "")); print(m.group(1) if m else "gpu")')"
fi

cd "$OUT"  # import the installed package, not the source tree
bench() { "$PY" "$ROOT/benchmarks/run.py" --out "$OUT" --gpu-tag "$GPU_TAG" ${BUDGET_S:+--budget-s "$BUDGET_S"} "$@"; }
case "$STAGE" in
  install) "$PY" -m quanto_kernels ;;
  tests)
    "$PY" -m quanto_kernels > "$OUT/diagnostics.txt" 2>&1; rc=$?
    tail -25 "$OUT/diagnostics.txt"
    "$PY" -m pytest "$ROOT/tests" -ra -p no:cacheprovider --junitxml="$OUT/junit.xml" "$@" > "$OUT/pytest.txt" 2>&1 || rc=$?
    tail -60 "$OUT/pytest.txt"
    exit "$rc" ;;
  bench-layers) bench --part layers "$@" ;;
  bench-sweep) bench --part sweep "$@" ;;
  bench-flux) bench --part flux "$@" ;;
  bench-blocks) "$PY" "$ROOT/benchmarks/flux_block_accuracy.py" --out "$OUT" "$@" ;;
  sanitize)
    if [[ -f "$ROOT/scripts/sanitize.sh" ]]; then
      PYTHON="$PY" bash "$ROOT/scripts/sanitize.sh" "$OUT" "$@"
    elif [[ -f "$ROOT/scripts/sanitize.py" ]]; then
      "$PY" "$ROOT/scripts/sanitize.py" "$@"
    else
      echo "scripts/sanitize.py is not in this checkout"; exit 2
    fi ;;
  *) echo "unknown stage $STAGE (tests, bench-layers, bench-sweep, bench-flux, bench-blocks, sanitize, install)"; exit 2 ;;
esac
