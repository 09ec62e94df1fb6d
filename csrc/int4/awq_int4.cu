// The AWQ v2 int4 launchers the C entry points call (docs/layouts.md, "AWQ v2 layout"): last
// argument checks, then the instantiation for the activation dtype (awq_f16.cu, awq_bf16.cu).
// The kernels themselves are the shared int4 templates over the AwqLayout policy.
#include "common/launchers.h"
#include "int4/awq_layout.cuh"

namespace qk {

cudaError_t launch_awq_dequant(const uint16_t* w, const void* scales, const void* zeros, void* out, int64_t n,
                               int64_t k, int64_t group_size, DType dt, cudaStream_t stream) {
  if (n <= 0 || k <= 0) return cudaSuccess;
  if (k > 0x7FFFFFFF || group_size <= 0 || n % 4 != 0 || k % 64 != 0) return cudaErrorInvalidValue;
  i4::DequantArgs p{};
  p.w = w;
  p.scales = static_cast<const uint16_t*>(scales);
  p.zeros = static_cast<const uint16_t*>(zeros);
  p.out = static_cast<uint16_t*>(out);
  p.n = n;
  p.k = static_cast<int>(k);
  p.group = static_cast<int>(group_size);
  p.perm = ScalePerm::None;
  switch (dt) {
    case DType::F16: return i4::launch_int4_dequant<i4::AwqLayout, DType::F16>(p, stream);
    case DType::BF16: return i4::launch_int4_dequant<i4::AwqLayout, DType::BF16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_awq_gemv(const void* a, const uint16_t* w, const void* scales, const void* zeros, void* out,
                            float* ws, int64_t m, int64_t n, int64_t k, int64_t group_size, int splits, DType dt,
                            cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (m > kMaxGemvM || k < 0 || k > 0x7FFFFFFF || group_size <= 0 || n % 4 != 0 || k % 64 != 0 || splits < 1 ||
      splits > kMaxSplits || (splits > 1 && ws == nullptr))
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
  p.perm = ScalePerm::None;
  p.splits = splits;
  switch (dt) {
    case DType::F16: return i4::launch_int4_gemv<i4::AwqLayout, DType::F16>(p, stream);
    case DType::BF16: return i4::launch_int4_gemv<i4::AwqLayout, DType::BF16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

int plan_awq_gemv_splits(int64_t m, int64_t n, int64_t k, int64_t group_size, int sm_count) {
  (void)group_size;  // a lane's 32 k always lie in one group (G % 32 == 0): no alignment needed
  // Column unit: one block of channels; K unit: one warp step.
  using L = i4::AwqLayout;
  return plan_splits(m, (n + L::kBlockCols - 1) / L::kBlockCols, (k + L::kUnitK - 1) / L::kUnitK, sm_count);
}

}  // namespace qk
