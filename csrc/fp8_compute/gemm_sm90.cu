// wgmma FP8 product for sm_90a (placeholder until the kernel lands).
#include "fp8_compute/fp8_compute.h"

namespace qk {

bool fp8_compute_has_sm90_kernel() {
#if defined(QK_HAS_SM90A)
  return true;
#else
  return false;
#endif
}

cudaError_t launch_fp8_compute_gemm_sm90(const uint8_t*, const float*, const uint32_t*, const void*, const void*,
                                         void*, int64_t, int64_t, int64_t, DType, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace qk
