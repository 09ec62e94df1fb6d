// Weight-only int8 GEMM for M past the GEMV and medium-M kernels, on Hopper (sm_90a): quanto's int8 codes as
// stored ((N, K) row-major, one scale per channel) times fp16/bf16 activations, with no dense copy of the
// weight. Built on CUTLASS's warp-specialised mixed-input mainloop (int8_gemm_cutlass.cuh); only compiled
// when the build has sm_90a and CUTLASS's headers (CMakeLists.txt, docs/building.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"

namespace qk {

// Configuration: output tile of one block (channels x tokens) and schedule; Auto lets plan_int8_gemm choose.
// StreamK: K split over blocks where the tiles do not fill the GPU; Cluster2: two blocks per cluster.
enum class Int8GemmTile : int32_t {
  Auto = 0,
  C128xT64 = 1,
  C128xT64StreamK = 2,
  C128xT128 = 3,
  C128xT128StreamK = 4,
  C128xT256Cluster2 = 5,
  C128xT256StreamK = 6,
};

// Whether this library was built with the kernel (sm_90a target and CUTLASS headers present).
bool int8_gemm_built();

// The configuration for an M x N x K product on sm_count multiprocessors (measured on an H200:
// benchmarks/results/int8_gemm_notes.md); QK_INT8_GEMM_TILE = 64 | 64s | 128 | 128s | 256c2 | 256s (tokens
// per tile, s: stream-K, c2: two-block clusters) overrides it, for tests and benchmarks.
Int8GemmTile plan_int8_gemm(int64_t m, int64_t n, int64_t k, int sm_count);

// Workspace bytes the launch needs (0 for the persistent schedules; the stream-K schedule keeps partial sums
// and tile locks there).
cudaError_t int8_gemm_workspace_bytes(Int8GemmTile tile, int64_t m, int64_t n, int64_t k, DType dt, int sm_count,
                                      size_t* bytes);

// out[m, n] = dt( s[n] * sum_k a[m, k] * W[n, k] + bias[n] ), fp32 accumulation; a: M x K of dt, row stride
// K; w: (N, K) int8 row-major; scales: N values of dt; bias: N values of dt or nullptr; out: M x N of dt.
// K % 16 == 0, N % 8 == 0, every pointer 16-byte aligned (the copies are TMA boxes).
cudaError_t launch_int8_gemm(Int8GemmTile tile, const void* a, const int8_t* w, const void* scales,
                             const void* bias, void* out, void* workspace, size_t workspace_bytes, int64_t m,
                             int64_t n, int64_t k, DType dt, int sm_count, cudaStream_t stream);

}  // namespace qk
