// The GEMV engine instantiated for int8 weights in quanto's own (N, K) layout, one scale per channel:
// v4 with one column tile per block by default (measured on an H200, 2026-12-01: 15-60 % faster than v3
// at M = 1..64 on 4096 x 14336, 14336 x 4096, 3072 x 12288 and 12288 x 3072; one tile per block beat the
// wider groups; benchmarks/results/gemv_notes.md), v3 behind QK_GEMV_INT8_ENGINE=v3 (csrc/gemv/schedule.h).
// M <= 8 on shapes it takes (N % 64 == 0, K % 64 == 0) goes to the register-loaded kernel
// (csrc/int8/int8_gemv_direct.cu) where its grid spreads evenly over the SMs (int8_gemv_direct_balanced);
// QK_INT8_GEMV_KERNEL=engine keeps every shape on engine v4, =direct takes the kernel wherever it fits
// (test and benchmark overrides, read at every plan).
#include "common/env.h"
#include "gemv/gemv.h"
#include "gemv/launch.cuh"
#include "gemv/launch_v4.cuh"
#include "int8/int8_gemv_direct.h"

namespace qk {
namespace {

// 'e': engine forced, 'd': the register-loaded kernel forced where it fits, 0: the rule.
char int8_kernel_override() {
  const char* v = env_get("QK_INT8_GEMV_KERNEL");
  return (v != nullptr && (v[0] == 'e' || v[0] == 'd')) ? v[0] : 0;
}

}  // namespace

cudaError_t plan_int8_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::GemvPlan* plan) {
  const char override_kernel = int8_kernel_override();
  if (!gemv::int8_v3_requested() && override_kernel != 'e' && int8_gemv_direct_fits(m, n, k)) {
    int sms = 0;
    const cudaError_t err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess) return err;
    const int splits = plan_int8_gemv_direct_splits(m, n, k, sms);
    if (override_kernel == 'd' || int8_gemv_direct_balanced(n, splits, sms)) {
      plan->version = 5;
      plan->m = m;
      plan->n = n;
      plan->k = k;
      plan->direct_splits = splits;
      return cudaSuccess;
    }
  }
  if (gemv::int8_v3_requested()) {
    plan->version = 3;
    return gemv::make_plan_for<gemv::Int8Rows>(m, n, k, device, &plan->v3);
  }
  gemv::V4Options opt = gemv::read_v4_options();
  if (opt.group_tiles == 0) opt.group_tiles = 1;  // measured best for int8 (see above)
  plan->version = 4;
  // 64 k units double the activation stage too: past 32 rows they no longer fit the registers.
  plan->int8_unit_k = (opt.int8_unit_k == 64 && k % 64 == 0 && m <= 32) ? 64 : 32;
  return plan->int8_unit_k == 64 ? gemv::make_plan4_for<gemv::Int8RowsT<4>>(m, n, k, device, opt, &plan->v4)
                                 : gemv::make_plan4_for<gemv::Int8RowsT<2>>(m, n, k, device, opt, &plan->v4);
}

cudaError_t launch_int8_gemv(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                             void* ws, const gemv::GemvPlan& plan, DType dt, cudaStream_t stream) {
  const auto* s = static_cast<const uint16_t*>(scales);
  const auto* b = static_cast<const uint16_t*>(bias);
  if (plan.version == 5) {
    return launch_int8_gemv_direct(a, w, scales, bias, out, static_cast<float*>(ws), plan.m, plan.n, plan.k,
                                   plan.direct_splits, dt, stream);
  }
  if (plan.version != 4) {
    const gemv::Int8Rows::Args args{w, s, plan.v3.n, plan.v3.k, b};
    return gemv::launch<gemv::Int8Rows>(args, a, out, ws, plan.v3, dt, stream);
  }
  if (plan.int8_unit_k == 64) {
    const gemv::Int8RowsT<4>::Args args{w, s, plan.v4.n, plan.v4.k, b};
    return gemv::launch_v4<gemv::Int8RowsT<4>>(args, a, out, ws, plan.v4, dt, stream);
  }
  const gemv::Int8RowsT<2>::Args args{w, s, plan.v4.n, plan.v4.k, b};
  return gemv::launch_v4<gemv::Int8RowsT<2>>(args, a, out, ws, plan.v4, dt, stream);
}

}  // namespace qk
