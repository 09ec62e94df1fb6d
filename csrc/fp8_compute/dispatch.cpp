// Which FP8 tensor-core kernel serves a device, and the one launch entry for both.
#include <cstdlib>
#include <cstring>
#include "fp8_compute/fp8_compute.h"

namespace qk {

Fp8ComputeKernel fp8_compute_kernel_for(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    return kFp8ComputeNone;
  }
  const int cc = major * 10 + minor;
  if (cc < 89) return kFp8ComputeNone;  // FP8 tensor cores start with Ada (sm_89)
  if (cc == 90 && fp8_compute_has_sm90_kernel()) {
    // Test and benchmark override: run the portable kernel on Hopper too.
    const char* force = std::getenv("QK_FP8_COMPUTE_KERNEL");
    if (force != nullptr && std::strcmp(force, "mma") == 0) return kFp8ComputeMma;
    return kFp8ComputeWgmma;
  }
  return kFp8ComputeMma;
}

cudaError_t launch_fp8_compute_gemm(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales,
                                    const void* bias, void* out, int64_t m, int64_t n, int64_t k, DType dt,
                                    Fp8ComputeKernel kernel, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  switch (kernel) {
    case kFp8ComputeWgmma:
      return launch_fp8_compute_gemm_sm90(xq, xs, w, scales, bias, out, m, n, k, dt, stream);
    case kFp8ComputeMma:
      return launch_fp8_compute_gemm_mma(xq, xs, w, scales, bias, out, m, n, k, dt, stream);
    default:
      return cudaErrorNotSupported;
  }
}

}  // namespace qk
