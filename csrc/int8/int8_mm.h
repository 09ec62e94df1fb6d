// Weight-only int8 tensor-core product over quanto's own int8 layout ((N, K) row-major codes, N scales in
// channel order): the sm_90a kernel of int8_mm_sm90.cu, for medium M. Smaller M is the GEMV engine's
// (gemv/gemv_int8.cu); other GPUs and shapes dequantize and let a dense GEMM multiply (the Python dispatch
// decides, docs/ops.md).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"
#include "common/sm90_marlin_plan.h"

namespace qk {

// Rows per call (sm90_marlin::kMaxRows); callers take another path beyond.
constexpr int64_t kInt8MmMaxM = sm90_marlin::kMaxRows;

// The plan of an M x N x K product on a GPU with sm_count multiprocessors: sm90_marlin::plan_weight_only
// with the environment prefix QK_INT8_MM_ (tests and benchmarks force tile, split-K, blocks per
// multiprocessor and stage depth through QK_INT8_MM_TILE, _SPLITS, _BLOCKS_PER_SM, _SLICES).
sm90_marlin::SplitPlan plan_int8_mm_sm90(int64_t m, int64_t n, int64_t k, int sm_count);

// out[m, n] = dt( s[n] * sum_k a[m, k] * W[n, k] + bias[n] ), fp32 accumulation.
// a: M x K of dt, row stride K (16-byte aligned); w: (N, K) int8, row-major, 16-byte aligned; scales: N
// values of dt in channel order; bias: N values of dt or nullptr; out: M x N of dt. K % 16 == 0,
// N % 64 == 0. workspace: plan.workspace_bytes() bytes, 16-byte aligned (nullptr when that is 0).
cudaError_t launch_int8_mm_sm90(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                                void* workspace, const sm90_marlin::SplitPlan& plan, int64_t m, int64_t n, int64_t k,
                                DType dt, cudaStream_t stream);

}  // namespace qk
