#!/usr/bin/env bash
# cibuildwheel before-all on Linux: CUDA toolkits inside the manylinux_2_28 container (AlmaLinux 8)
# from NVIDIA's rhel8 repository, side by side under /usr/local/cuda-X.Y.
#   bash scripts/ci/install_cuda_manylinux.sh 12-8 13-0
# Then proves each toolkit compiles and links what the library needs (cuda_fp16/bf16 headers, the
# static CUDA runtime) with the container's compiler. (CMake checks that libstdc++ links statically:
# the release build passes -DQK_STATIC_LIBSTDCXX=ON, which fails if it cannot.)
set -euxo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 12-8 13-0 ..." >&2; exit 2; }

dnf install -y dnf-plugins-core
dnf config-manager --add-repo https://developer.download.nvidia.com/compute/cuda/repos/rhel8/x86_64/cuda-rhel8.repo
pkgs=()
for v in "$@"; do
  pkgs+=("cuda-nvcc-$v" "cuda-cudart-devel-$v" "cuda-crt-$v" "cuda-cccl-$v")
done
dnf install -y --setopt=install_weak_deps=False "${pkgs[@]}"
dnf clean all

g++ --version | head -1
probe=$(mktemp -d)
cat > "$probe/probe.cu" <<'CU'
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cstdio>
__global__ void k(__half* h, __nv_bfloat16* b) { h[0] = __float2half(1.f); b[0] = __float2bfloat16(2.f); }
int main() { int v = 0; cudaRuntimeGetVersion(&v); std::printf("runtime %d\n", v); return v > 0 ? 0 : 1; }
CU
for v in "$@"; do
  home="/usr/local/cuda-${v/-/.}"
  "$home/bin/nvcc" --version | tail -2
  "$home/bin/nvcc" -O2 -arch=sm_80 -cudart static -o "$probe/probe-$v" "$probe/probe.cu"
  "$probe/probe-$v"
done
rm -rf "$probe"
