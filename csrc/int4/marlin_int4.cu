// The Marlin int4 launchers the C entry points call (docs/layouts.md, "Int4 Marlin layout"): last
// argument checks, the unit depth for the group size, then the instantiation for the activation
// dtype (marlin_f16.cu, marlin_bf16.cu). The kernels themselves are the shared int4 templates
// over the MarlinLayout policy.
#include "common/launchers.h"
#include "int4/marlin_layout.cuh"

namespace qk {

namespace {

// 16-k rows of P per fused-kernel unit: 4 when every 64-k unit lies inside one group.
int marlin_unit_kt(int64_t group) { return group % 64 == 0 ? 4 : 1; }

template <DType D>
cudaError_t gemv_for_dtype(const i4::GemvArgs& p, cudaStream_t stream) {
  return marlin_unit_kt(p.group) == 4 ? i4::launch_int4_gemv<i4::MarlinLayout<4>, D>(p, stream)
                                      : i4::launch_int4_gemv<i4::MarlinLayout<1>, D>(p, stream);
}

}  // namespace

cudaError_t launch_marlin_i4_dequant(const uint32_t* w, const void* scales, const void* zeros, void* out,
                                     int64_t n, int64_t k, int64_t group_size, ScalePerm perm, DType dt,
                                     cudaStream_t stream) {
  if (n <= 0 || k <= 0) return cudaSuccess;
  if (k > 0x7FFFFFFF || group_size <= 0 || group_size % 16 != 0 || n % 64 != 0 || k % 16 != 0)
    return cudaErrorInvalidValue;
  i4::DequantArgs p{};
  p.w = w;
  p.scales = static_cast<const uint16_t*>(scales);
  p.zeros = static_cast<const uint16_t*>(zeros);
  p.out = static_cast<uint16_t*>(out);
  p.n = n;
  p.k = static_cast<int>(k);
  p.group = static_cast<int>(group_size);
  p.perm = perm;
  switch (dt) {
    case DType::F16: return i4::launch_int4_dequant<i4::MarlinLayout<4>, DType::F16>(p, stream);
    case DType::BF16: return i4::launch_int4_dequant<i4::MarlinLayout<4>, DType::BF16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_marlin_i4_gemv(const void* a, const uint32_t* w, const void* scales, const void* zeros,
                                  void* out, float* ws, int64_t m, int64_t n, int64_t k, int64_t group_size,
                                  ScalePerm perm, int splits, DType dt, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (m > kMaxGemvM || k < 0 || k > 0x7FFFFFFF || group_size <= 0 || group_size % 16 != 0 || n % 64 != 0 ||
      k % group_size != 0 || splits < 1 || splits > kMaxSplits || (splits > 1 && ws == nullptr))
    return cudaErrorInvalidValue;
  i4::GemvArgs p{};
  p.a = static_cast<const uint16_t*>(a);
  p.w = w;
  p.scales = static_cast<const uint16_t*>(scales);
  p.zeros = static_cast<const uint16_t*>(zeros);
  p.out = static_cast<uint16_t*>(out);
  p.ws = ws;
  p.m = static_cast<int>(m);
  p.n = n;
  p.k = static_cast<int>(k);
  p.group = static_cast<int>(group_size);
  p.perm = perm;
  p.splits = splits;
  switch (dt) {
    case DType::F16: return gemv_for_dtype<DType::F16>(p, stream);
    case DType::BF16: return gemv_for_dtype<DType::BF16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

int plan_marlin_i4_gemv_splits(int64_t m, int64_t n, int64_t k, int64_t group_size, int sm_count) {
  // Column unit: one block of channels; K unit: one fused-kernel unit (never straddles a group).
  const int64_t unit_k = 16 * static_cast<int64_t>(group_size > 0 ? marlin_unit_kt(group_size) : 1);
  return plan_splits(m, (n + i4::MarlinLayout<1>::kBlockCols - 1) / i4::MarlinLayout<1>::kBlockCols, k / unit_k, sm_count);
}

}  // namespace qk
