// mma.sync FP8 product for sm_89 and newer (placeholder until the kernel lands).
#include "fp8_compute/fp8_compute.h"

namespace qk {

cudaError_t launch_fp8_compute_gemm_mma(const uint8_t*, const float*, const uint32_t*, const void*, const void*,
                                        void*, int64_t, int64_t, int64_t, DType, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace qk
