// Weight-only FP8 tensor-core product over quanto's FP8 Marlin layout (medium and large M): the sm_90a
// kernel of fp8_mm_sm90.cu. Smaller M is the GEMV kernels' (fp8_gemv.cu, gemv/); GPUs without the sm_90a
// kernel dequantize and let a dense GEMM multiply (the Python dispatch decides, docs/ops.md).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"
#include "common/sm90_marlin_plan.h"

namespace qk {

// Rows per call (sm90_marlin::kMaxRows); callers take another path beyond.
constexpr int64_t kFp8MmMaxM = sm90_marlin::kMaxRows;

// The plan of an M x N x K product on a GPU with sm_count multiprocessors: sm90_marlin::plan_weight_only
// with the environment prefix QK_FP8_MM_ (tests and benchmarks force tile, split-K, blocks per
// multiprocessor and stage depth through QK_FP8_MM_TILE, _SPLITS, _BLOCKS_PER_SM, _SLICES).
sm90_marlin::SplitPlan plan_fp8_mm_sm90(int64_t m, int64_t n, int64_t k, int sm_count);

// out[m, n] = dt( s[n] * sum_k a[m, k] * fp8(W[n, k]) + bias[n] ), fp32 accumulation.
// a: M x K of dt, row stride K (16-byte aligned); w: (K/16, 4N) words; scales: N values of dt,
// Block32-permuted; bias: N values of dt or nullptr; out: M x N of dt. K % 16 == 0, N % 64 == 0.
// workspace: plan.workspace_bytes() bytes, 16-byte aligned (nullptr when that is 0).
cudaError_t launch_fp8_mm_sm90(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                               void* workspace, const sm90_marlin::SplitPlan& plan, int64_t m, int64_t n, int64_t k,
                               DType dt, cudaStream_t stream);

}  // namespace qk
