// FP8 tensor-core compute for qfloat8 weights (W8A8): the activations are quantized per row to e4m3
// by our own kernel, then multiplied by the weight as stored in quanto's FP8 Marlin layout
// (docs/layouts.md) on FP8 tensor cores, with fp32 accumulation. Numerics: docs/numerics.md,
// "FP8 compute".
//
// Two kernels do the product: a warpgroup (wgmma) kernel for sm_90 built with the sm_90a target, and an
// mma.sync kernel for every other GPU with FP8 tensor cores (sm_89, sm_100, sm_120, and sm_90 when the
// library was built without sm_90a). launch_fp8_compute_gemm picks one.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"
#include "compat/qk_compat.h"

namespace qk {

// The quantized activations are stored in "fragment order": inside every run of 16 consecutive k, byte
// slot 4*q + b holds k = 2*q + d[b] with d = (0, 8, 1, 9), q in 0..3, b in 0..3. That is the order in
// which one 32-bit word of the FP8 Marlin layout holds its four weight codes, so a thread's weight word
// and its activation word line up without any byte shuffling. Slot -> k:
//   0 8 1 9 | 2 10 3 11 | 4 12 5 13 | 6 14 7 15
QK_HOST_DEVICE QK_FORCEINLINE int fp8c_slot_to_k(int slot) {
  const int q = (slot & 15) >> 2, b = slot & 3;
  return (slot & ~15) + 2 * q + ((b & 1) ? 8 : 0) + (b >> 1);
}

// Shape rules of both products (checked by the C entry points before any launch).
constexpr int64_t kFp8ComputeKMultiple = 32;  // one tensor-core k-step of e4m3
constexpr int64_t kFp8ComputeNMultiple = 64;  // one column tile of the FP8 Marlin layout
// Rows per call: 65535 blocks of 128 tokens (the grid's second dimension); callers split larger batches.
constexpr int64_t kFp8ComputeMaxM = int64_t(65535) * 128;

// Which kernel launch_fp8_compute_gemm uses on `device`: kNone (no FP8 tensor cores: compute capability
// below 8.9), kMma or kWgmma. The environment variable QK_FP8_COMPUTE_KERNEL=mma (a test and benchmark
// override, read at each call) makes an sm_90 GPU take the mma.sync kernel too, so both run on one GPU.
enum Fp8ComputeKernel : int32_t { kFp8ComputeNone = 0, kFp8ComputeMma = 1, kFp8ComputeWgmma = 2 };
Fp8ComputeKernel fp8_compute_kernel_for(int device);

// Per-row quantization of x (M x K, dtype dt, row stride ldx elements, 16-byte aligned rows):
//   amax = max(max_k |x[m,k]|, 1e-12), xs[m] = amax / 448, xq[m, slot] = e4m3_satfinite(x[m, k(slot)] * (448 / amax)),
// each division and the product rounded to fp32, the code to nearest even (an all-zero row gives codes 0). xq is M x K bytes, row-major, fragment order; xs is M floats.
// K must be a multiple of 16.
cudaError_t launch_fp8_act_quant(const void* x, int64_t ldx, uint8_t* xq, float* xs, int64_t m, int64_t k, DType dt,
                                 cudaStream_t stream);

// out[m, n] = dt( xs[m] * s[n] * sum_k e4m3(xq[m, k]) * e4m3(W[n, k]) + bias[n] ), fp32 accumulation.
// w: (K/16, 4N) words, FP8 Marlin layout; scales: N values of dt, Block32-permuted (as quanto stores
// them); bias: N values of dt in channel order, or nullptr; out: M x N of dt, row-major.
// K % 32 == 0, N % 64 == 0.
cudaError_t launch_fp8_compute_gemm(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales,
                                    const void* bias, void* out, int64_t m, int64_t n, int64_t k, DType dt,
                                    Fp8ComputeKernel kernel, cudaStream_t stream);

// The two implementations behind launch_fp8_compute_gemm (same contract).
cudaError_t launch_fp8_compute_gemm_mma(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales,
                                        const void* bias, void* out, int64_t m, int64_t n, int64_t k, DType dt,
                                        cudaStream_t stream);
cudaError_t launch_fp8_compute_gemm_sm90(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales,
                                         const void* bias, void* out, int64_t m, int64_t n, int64_t k, DType dt,
                                         cudaStream_t stream);
// True when this build carries the sm_90a warpgroup kernel (the library was compiled for sm_90a).
bool fp8_compute_has_sm90_kernel();


}  // namespace qk
