// int8 weights in quanto's own (N, K) layout with one scale per channel: dequantization to a dense
// (N, K) matrix of the activation dtype, out[n, k] = dt(w[n, k] * s[n]) rounded once (the product
// of an int8 and a 16-bit float is exact in fp32), for the dequantize + dense GEMM path.
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "int8/int8.h"

namespace qk {
namespace {

constexpr int kThreads = 256;

// 16 consecutive codes of one row per thread (rows are whole 16-byte pieces when K % 16 == 0).
template <DType D>
__global__ void __launch_bounds__(kThreads)
    int8_dequant_vec16(const int8_t* QK_RESTRICT w, const uint16_t* QK_RESTRICT scales,
                       typename Elem<D>::T* QK_RESTRICT out, int64_t n, int64_t k) {
  const int64_t pieces_per_row = k / 16;
  const int64_t pieces = n * pieces_per_row;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; p < pieces;
       p += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = p / pieces_per_row;
    const float s = bits16_to_float<D>(scales[row]);
    const int4 v = __ldcs(reinterpret_cast<const int4*>(w) + p);  // read once: streaming
    const int32_t words[4] = {v.x, v.y, v.z, v.w};
    uint32_t packed[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int32_t word = words[i / 2];
      const int shift = 16 * (i % 2);
      const float lo = static_cast<float>(static_cast<int8_t>((word >> shift) & 0xFF)) * s;
      const float hi = static_cast<float>(static_cast<int8_t>((word >> (shift + 8)) & 0xFF)) * s;
      const typename Elem<D>::T l = Elem<D>::from_float(lo);
      const typename Elem<D>::T h = Elem<D>::from_float(hi);
      packed[i] = static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&l)) |
                  (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&h)) << 16);
    }
    uint4* const dst = reinterpret_cast<uint4*>(out + 16 * p);
    dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
  }
}

// Any K: one element per thread.
template <DType D>
__global__ void __launch_bounds__(kThreads)
    int8_dequant_scalar(const int8_t* QK_RESTRICT w, const uint16_t* QK_RESTRICT scales,
                        typename Elem<D>::T* QK_RESTRICT out, int64_t n, int64_t k) {
  const int64_t total = n * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    out[i] = Elem<D>::from_float(static_cast<float>(w[i]) * bits16_to_float<D>(scales[i / k]));
  }
}

template <DType D>
cudaError_t launch_typed(const int8_t* w, const void* scales, void* out, int64_t n, int64_t k,
                         cudaStream_t stream) {
  const bool vec = k % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t items = vec ? n * (k / 16) : n * k;
  if (items <= 0) return cudaSuccess;
  int64_t blocks = (items + kThreads - 1) / kThreads;
  if (blocks > (int64_t(1) << 20)) blocks = int64_t(1) << 20;  // grid-stride loop covers the rest
  auto* o = static_cast<typename Elem<D>::T*>(out);
  const auto* s = static_cast<const uint16_t*>(scales);
  if (vec) int8_dequant_vec16<D><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(w, s, o, n, k);
  else int8_dequant_scalar<D><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(w, s, o, n, k);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_int8_dequant(const int8_t* w, const void* scales, void* out, int64_t n, int64_t k, DType dt,
                                cudaStream_t stream) {
  return dt == DType::BF16 ? launch_typed<DType::BF16>(w, scales, out, n, k, stream)
                           : launch_typed<DType::F16>(w, scales, out, n, k, stream);
}

}  // namespace qk
