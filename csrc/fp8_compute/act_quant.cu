// Dynamic per-row quantization of activations to e4m3 in fragment order (fp8_compute.h).
// One block per row: a first pass finds the row's absolute maximum, a second pass (reading the row
// again, now from L1/L2) scales, rounds and writes 16 codes per 16-element group with one 16-byte store.
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include "common/numeric.cuh"
#include "fp8_compute/fp8_compute.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr float kE4m3Max = 448.0f;
// Rows whose largest magnitude is below this quantize as if it were this: keeps 448/amax finite. Such
// rows are all-zero in practice; their codes are 0 and their products are 0.
constexpr float kMinAmax = 1e-12f;

// 16 consecutive elements of one group (two 16-byte loads) as floats.
template <DType D>
QK_DEVICE QK_FORCEINLINE void load_group(const typename Elem<D>::T* p, float (&v)[16]) {
  using T = typename Elem<D>::T;
  const uint4 lo = *reinterpret_cast<const uint4*>(p);
  const uint4 hi = *reinterpret_cast<const uint4*>(p + 8);
  const T* a = reinterpret_cast<const T*>(&lo);
  const T* b = reinterpret_cast<const T*>(&hi);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    v[i] = Elem<D>::to_float(a[i]);
    v[8 + i] = Elem<D>::to_float(b[i]);
  }
}

QK_DEVICE QK_FORCEINLINE uint32_t e4m3_pair(float lo, float hi) {
  // The first argument lands in the low byte.
  const __nv_fp8x2_storage_t r = __nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
  return static_cast<uint32_t>(r);
}

template <DType D>
__global__ void __launch_bounds__(kThreads) act_quant_kernel(const typename Elem<D>::T* QK_RESTRICT x, int64_t ldx,
                                                             uint8_t* QK_RESTRICT xq, float* QK_RESTRICT xs,
                                                             int64_t k) {
  using T = typename Elem<D>::T;
  const int64_t row = blockIdx.x;
  const T* xr = x + row * ldx;
  const int64_t groups = k / 16;

  float amax = 0.0f;
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    float v[16];
    load_group<D>(xr + g * 16, v);
#pragma unroll
    for (int i = 0; i < 16; ++i) amax = fmaxf(amax, fabsf(v[i]));
  }
  // fmaxf drops NaN; a NaN in the row must still poison the row's outputs, which the second pass does
  // by converting it (satfinite keeps NaN as NaN).
  __shared__ float warp_max[kThreads / 32];
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = amax;
  __syncthreads();
  amax = warp_max[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) amax = fmaxf(amax, warp_max[w]);
  amax = fmaxf(amax, kMinAmax);
  const float inv = kE4m3Max / amax;
  if (threadIdx.x == 0) xs[row] = amax / kE4m3Max;

  uint8_t* qr = xq + row * k;
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    float v[16];
    load_group<D>(xr + g * 16, v);
    // Slot 4q+b takes k = 2q + (0, 8, 1, 9)[b]: word q = codes of k (2q, 2q+8, 2q+1, 2q+9).
    uint32_t word[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint32_t p0 = e4m3_pair(v[2 * q] * inv, v[2 * q + 8] * inv);
      const uint32_t p1 = e4m3_pair(v[2 * q + 1] * inv, v[2 * q + 9] * inv);
      word[q] = p0 | (p1 << 16);
    }
    *reinterpret_cast<uint4*>(qr + g * 16) = make_uint4(word[0], word[1], word[2], word[3]);
  }
}

}  // namespace

cudaError_t launch_fp8_act_quant(const void* x, int64_t ldx, uint8_t* xq, float* xs, int64_t m, int64_t k, DType dt,
                                 cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(m));
  if (dt == DType::F16) {
    act_quant_kernel<DType::F16><<<grid, kThreads, 0, stream>>>(static_cast<const __half*>(x), ldx, xq, xs, k);
  } else {
    act_quant_kernel<DType::BF16>
        <<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), ldx, xq, xs, k);
  }
  return cudaGetLastError();
}

}  // namespace qk
