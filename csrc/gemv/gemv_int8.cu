// The GEMV engine instantiated for int8 weights in quanto's own (N, K) layout, one scale per channel.
#include "gemv/gemv.h"
#include "gemv/launch.cuh"

namespace qk {

cudaError_t plan_int8_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::Plan* plan) {
  return gemv::make_plan_for<gemv::Int8Rows>(m, n, k, device, plan);
}

cudaError_t launch_int8_gemv(const void* a, const int8_t* w, const void* scales, void* out, void* ws,
                             const gemv::Plan& plan, DType dt, cudaStream_t stream) {
  const gemv::Int8Rows::Args args{w, static_cast<const uint16_t*>(scales), plan.n, plan.k};
  return gemv::launch<gemv::Int8Rows>(args, a, out, ws, plan, dt, stream);
}

}  // namespace qk
