// Finishes a split-K product: sums the fp32 partials of every split, applies an optional
// per-channel scale and an optional per-channel bias, and rounds once to the output dtype.
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"

namespace qk {
namespace {

template <DType D>
__global__ void splitk_reduce_kernel(const float* QK_RESTRICT ws, int splits, int64_t m, int64_t n,
                                     const uint16_t* QK_RESTRICT scales, ScalePerm perm,
                                     const uint16_t* QK_RESTRICT bias, typename Elem<D>::T* QK_RESTRICT out) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < splits; ++s) acc += ws[s * total + i];  // fixed order: deterministic
    const int64_t col = i % n;
    const float scale = scales != nullptr ? bits16_to_float<D>(scales[scale_slot(col, perm)]) : 1.f;
    out[i] = Elem<D>::from_float(scale_add_bias<D>(acc, scale, bias, col));
  }
}

template <DType D>
cudaError_t launch_typed(const float* ws, int splits, int64_t m, int64_t n, const void* scales, ScalePerm perm,
                         const void* bias, void* out, cudaStream_t stream) {
  const int threads = 256;
  int64_t blocks = (m * n + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;  // grid-stride loop covers the rest
  splitk_reduce_kernel<D><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      ws, splits, m, n, static_cast<const uint16_t*>(scales), perm, static_cast<const uint16_t*>(bias),
      static_cast<typename Elem<D>::T*>(out));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_splitk_reduce(const float* ws, int splits, int64_t m, int64_t n, const void* scales,
                                 ScalePerm perm, DType dt, void* out, cudaStream_t stream, const void* bias) {
  if (m * n == 0) return cudaSuccess;
  return dt == DType::BF16 ? launch_typed<DType::BF16>(ws, splits, m, n, scales, perm, bias, out, stream)
                           : launch_typed<DType::F16>(ws, splits, m, n, scales, perm, bias, out, stream);
}

}  // namespace qk
