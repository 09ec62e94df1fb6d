// The register-loaded FP8 GEMV (fp8_gemv_direct.cu): the M <= 4 kernel behind launch_fp8_gemv
// (common/launchers.h), with the split-K kernel's plan, workspace and results.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"

namespace qk {

// Activation rows it can serve (one 8-row tensor-core tile), and the rows the dispatch sends it by
// default: on an H200 it beat the ring kernel by 0-5 % at M = 1, tied at M = 4 and lost by 2-10 % at
// M = 8, each with its best split count (benchmarks/results/gemv_notes.md, v8).
constexpr int64_t kFp8GemvDirectMaxM = 8;
constexpr int64_t kFp8GemvDirectDefaultM = 4;
// 16-row blocks of K one split may own: a block stages its split's activations in shared memory
// (256 bytes per block, 32 KB at this limit).
constexpr int64_t kFp8GemvDirectMaxBlocks = 128;

// Whether the kernel takes an M x N x K product split `splits` ways (shape already validated).
bool fp8_gemv_direct_fits(int64_t m, int64_t n, int64_t k, int splits);

// As launch_fp8_gemv; cudaErrorInvalidValue where fp8_gemv_direct_fits is false.
cudaError_t launch_fp8_gemv_direct(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                                   float* ws, int64_t m, int64_t n, int64_t k, int splits, DType dt,
                                   cudaStream_t stream);

}  // namespace qk
