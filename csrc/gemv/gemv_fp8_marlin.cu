// The GEMV engine instantiated for FP8 e4m3fn weights in quanto's Marlin layout.
#include "gemv/gemv.h"
#include "gemv/launch.cuh"

namespace qk {

cudaError_t plan_fp8_marlin_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::Plan* plan) {
  return gemv::make_plan_for<gemv::Fp8Marlin>(m, n, k, device, plan);
}

cudaError_t launch_fp8_marlin_gemv(const void* a, const uint32_t* w, const void* scales, void* out, void* ws,
                                   const gemv::Plan& plan, DType dt, cudaStream_t stream) {
  const gemv::Fp8Marlin::Args args{w, static_cast<const uint16_t*>(scales), plan.n, plan.k};
  return gemv::launch<gemv::Fp8Marlin>(args, a, out, ws, plan, dt, stream);
}

}  // namespace qk
