// The GEMV engine v4 instantiated for FP8 e4m3fn weights in quanto's Marlin layout. Serves
// qk_fp8_marlin_gemv only behind QK_GEMV_FP8_ENGINE=1 (test / benchmark override); by default FP8
// stays on the split-K kernel (csrc/fp8_marlin/fp8_gemv.cu) until measurements decide.
#include "gemv/gemv.h"
#include "gemv/launch_v4.cuh"

namespace qk {

cudaError_t plan_fp8_engine_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::GemvPlan* plan) {
  const gemv::V4Options opt = gemv::read_v4_options();
  plan->version = 4;
  plan->fp8_direct = opt.direct_loads;
  return opt.direct_loads ? gemv::make_plan4_for<gemv::Fp8MarlinDirect>(m, n, k, device, opt, &plan->v4)
                          : gemv::make_plan4_for<gemv::Fp8Marlin>(m, n, k, device, opt, &plan->v4);
}

cudaError_t launch_fp8_engine_gemv(const void* a, const uint32_t* w, const void* scales, const void* bias,
                                   void* out, void* ws, const gemv::GemvPlan& plan, DType dt, cudaStream_t stream) {
  const gemv::Fp8Marlin::Args args{w, static_cast<const uint16_t*>(scales), plan.v4.n, plan.v4.k,
                                   static_cast<const uint16_t*>(bias)};
  return plan.fp8_direct ? gemv::launch_v4<gemv::Fp8MarlinDirect>(args, a, out, ws, plan.v4, dt, stream)
                         : gemv::launch_v4<gemv::Fp8Marlin>(args, a, out, ws, plan.v4, dt, stream);
}

}  // namespace qk
