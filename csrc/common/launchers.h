// Internal launcher interface between csrc/api (argument checks, device guard) and the kernel
// families (csrc/pack, csrc/fp8_marlin, csrc/int4, csrc/int8). Launchers assume validated arguments,
// enqueue on `stream` on the current device, and return the launch's cudaError_t (cudaGetLastError
// after the launch).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace qk {

// Activation / output element type. Values match the C ABI's QK_DTYPE_* codes.
enum class DType : int32_t { F16 = 1, BF16 = 2 };

// How per-channel scale (and zero) vectors are stored (see csrc/common/scale_perm.cuh).
enum class ScalePerm : int32_t {
  None = 0,      // natural channel order
  Block32 = 1,   // quanto's 32-channel pattern (fp8 scales; int4 Marlin when K/group == 1)
  Block64 = 2,   // quanto's 8x8 transpose inside 64-channel blocks (int4 Marlin, K/group >= 2)
};

// ---- unpack (csrc/pack/unpack.cu) -------------------------------------------------------
// out has v*numel bytes, v = 8/bits: out[i*numel + f] = (in[f] >> (bits*i)) & mask.
cudaError_t launch_unpack(const uint8_t* in, uint8_t* out, int64_t numel, int bits, cudaStream_t stream);

// ---- Marlin repack (csrc/pack/marlin_repack.cu) -----------------------------------------
// bits == 8: in is (K/4, N) int32 (4 fp8 codes per word along K), out is (K/16, 4N).
// bits == 4: in is (K/8, N) int32 (8 nibbles per word along K), out is (K/16, 2N).
// perm: nullptr, or K int32 source-row indices (already range-checked by the caller).
cudaError_t launch_marlin_repack(const uint32_t* in, const int32_t* perm, uint32_t* out, int64_t k, int64_t n,
                                 int bits, cudaStream_t stream);

// ---- FP8 Marlin weight (csrc/fp8_marlin/) -------------------------------------------------
// w: (K/16, 4N) repacked fp8 codes; scales: N values of `dt`, Block32-permuted.
// Dequantize into a natural (N, K) row-major matrix of `dt`: out[n,k] = dt(fp8(W[n,k]) * s[n]).
cudaError_t launch_fp8_dequant(const uint32_t* w, const void* scales, void* out, int64_t n, int64_t k, DType dt,
                               cudaStream_t stream);
// Fused small-M product (csrc/fp8_marlin/fp8_gemv.cu; M <= 4 where it fits: fp8_gemv_direct.cu):
// out[m,n] = dt(s[n] * sum_k a[m,k] * fp8(W[n,k]) + bias[n]), fp32 accumulation, bias optional (N values
// of dt, or nullptr). splits > 1: each K-split writes
// fp32 partials to ws (splits*M*N floats) and launch_splitk_reduce finishes (or, for two splits on
// sm_90+, a cluster finishes them in the same launch). splits == 1: ws may be nullptr.
cudaError_t launch_fp8_gemv(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                            float* ws, int64_t m, int64_t n, int64_t k, int splits, DType dt, cudaStream_t stream);
// K-splits the fused kernel wants for this shape (1 <= result <= kMaxSplits); the caller sizes ws from it.
int plan_fp8_gemv_splits(int64_t m, int64_t n, int64_t k, int sm_count);

// ---- int4 weights (csrc/int4/: layout policies over shared kernel templates) ---------------
// Wd[n,k] = S[k/G, n] * W[n,k] + Z[k/G, n]; activations, scales, zeros and outputs are all of
// dtype `dt` (fp16 or bf16); products accumulate in fp32.
// AWQ v2: w (N/4, K) int16; scales, zeros (K/G, N), natural channel order.
cudaError_t launch_awq_dequant(const uint16_t* w, const void* scales, const void* zeros, void* out, int64_t n,
                               int64_t k, int64_t group_size, DType dt, cudaStream_t stream);
cudaError_t launch_awq_gemv(const void* a, const uint16_t* w, const void* scales, const void* zeros, void* out,
                            float* ws, int64_t m, int64_t n, int64_t k, int64_t group_size, int splits, DType dt,
                            cudaStream_t stream);
int plan_awq_gemv_splits(int64_t m, int64_t n, int64_t k, int64_t group_size, int sm_count);

// Marlin int4 with zero points: w (K/16, 2N) int32; scales, zeros (K/G, N) stored with `perm`.
cudaError_t launch_marlin_i4_dequant(const uint32_t* w, const void* scales, const void* zeros, void* out,
                                     int64_t n, int64_t k, int64_t group_size, ScalePerm perm, DType dt,
                                     cudaStream_t stream);
cudaError_t launch_marlin_i4_gemv(const void* a, const uint32_t* w, const void* scales, const void* zeros,
                                  void* out, float* ws, int64_t m, int64_t n, int64_t k, int64_t group_size,
                                  ScalePerm perm, int splits, DType dt, cudaStream_t stream);
int plan_marlin_i4_gemv_splits(int64_t m, int64_t n, int64_t k, int64_t group_size, int sm_count);

// Largest M the int4 fused kernels accept; larger M goes to dequantize + dense GEMM. The FP8 kernel
// keeps its weight tile in registers across up to 64 activation rows; int8 runs on the GEMV engine
// (csrc/gemv/gemv.h).
constexpr int64_t kMaxGemvM = 16;
constexpr int64_t kMaxFp8GemvM = 64;

// ---- shared split-K finish (csrc/common/splitk_reduce.cu) ---------------------------------
// out[m,n] = dt( (sum_s ws[(s*M + m)*N + n]) * (scales ? scale_of(n) : 1) + (bias ? bias[n] : 0) ), where
// scale_of reads `scales` (N values of dt) through `perm`; bias: N values of dt in natural order, or nullptr.
cudaError_t launch_splitk_reduce(const float* ws, int splits, int64_t m, int64_t n, const void* scales,
                                 ScalePerm perm, DType dt, void* out, cudaStream_t stream,
                                 const void* bias = nullptr);

// ---- planning (csrc/common/plan.cpp) -----------------------------------------------------
// Shared rule behind the plan_*_splits functions: enough blocks (col_tiles * splits) to give every
// SM a few, never more than `k_tiles` (the smallest unit of K one split may own) nor kMaxSplits, and
// at least min_splits (within those bounds: what a kernel's staging needs).
constexpr int kMaxSplits = 16;
int plan_splits(int64_t m, int64_t col_tiles, int64_t k_tiles, int sm_count, int blocks_per_sm = 4,
                int min_splits = 1);

}  // namespace qk
