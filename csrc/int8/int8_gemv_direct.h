// The register-loaded int8 GEMV (int8_gemv_direct.cu): M <= 8 products over quanto's (N, K) int8 codes
// and per-channel scales, behind qk_int8_gemv (csrc/gemv/gemv_int8.cu chooses it in the plan).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"

namespace qk {

// Activation rows it serves (one 8-row tensor-core tile).
constexpr int64_t kInt8GemvDirectMaxM = 8;
// The k span one split may own: a block stages its split's activations (8 rows) in shared memory.
constexpr int64_t kInt8GemvDirectMaxSpanK = 2048;

// Whether the kernel takes an M x N x K product: M <= 8, N % 64 == 0, K % 64 == 0, K within 16 splits.
bool int8_gemv_direct_fits(int64_t m, int64_t n, int64_t k);

// K-splits for a shape it fits (the split-K workspace is splits * M * N floats when splits > 1): the
// balanced plan (common/balanced_splits.h), or about QK_INT8_GEMV_BLOCKS_PER_SM blocks per SM where that
// override is set; at least enough for the staging limit.
int plan_int8_gemv_direct_splits(int64_t m, int64_t n, int64_t k, int sm_count);

// Whether its grid spreads evenly: the busiest SM has at most 10 % more blocks than the average.
// Measured on H200 (gemv_notes.md, v7): on the even grids (384-528 blocks on 132 SMs) the kernel was
// 0-20 % faster than GEMV engine v4, on 448 blocks (4 on some SMs, 3 on others) 17 % slower; the
// engine's plan balances uneven shapes better, so those stay on it.
bool int8_gemv_direct_balanced(int64_t n, int splits, int sm_count);

// out[m, n] = dt(s[n] * sum_k a[m, k] * w[n, k] + bias[n]); a: M x K of dt (16-byte aligned rows), w: (N, K)
// int8, scales: N values of dt, bias: N values of dt or nullptr. splits > 1 without a cluster: ws holds splits * M * N floats and the split-K
// reduce finishes. cudaErrorInvalidValue for a shape or split count it does not take.
cudaError_t launch_int8_gemv_direct(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                                    float* ws, int64_t m, int64_t n, int64_t k, int splits, DType dt,
                                    cudaStream_t stream);

}  // namespace qk
