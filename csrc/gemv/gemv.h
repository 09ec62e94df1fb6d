// Launchers of the GEMV engine (csrc/gemv/engine.cuh: v3; engine_v4.cuh: v4), one pair per weight
// format: a plan (grid and workspace, from the shape and the device) and a launch that follows that
// plan. The C entry points size the caller's workspace with the same plan they launch with.
// Which engine serves a call (measured, benchmarks/results/gemv_notes.md): int8 -> v4 (v3 behind
// QK_GEMV_INT8_ENGINE=v3); FP8 -> the split-K kernel (csrc/fp8_marlin/fp8_gemv.cu), faster than every
// engine version so far (v4 behind QK_GEMV_FP8_ENGINE=1). Both are test / benchmark overrides
// (csrc/gemv/schedule.h).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"
#include "common/splitk_tail.h"
#include "gemv/schedule.h"

namespace qk {

// Largest M the engine takes (8 activation-row tiles of 8).
constexpr int64_t kMaxEngineGemvM = 64;

namespace gemv {
// A plan of either engine version: what the workspace query and the launch share.
struct GemvPlan {
  int version = 3;      // 3 or 4; 5: int8's register-loaded kernel (csrc/int8/int8_gemv_direct.cu)
  int int8_unit_k = 32;  // v4 int8 only: 32 or 64 k per unit
  bool fp8_direct = false;  // v4 FP8 only: register-ring mainloop (QK_GEMV_V4_LOADS=direct)
  Plan v3;
  Plan4 v4;
  int direct_splits = 0;  // version 5: K-splits
  int64_t m = 0, n = 0, k = 0;  // version 5: the product's sizes
  int64_t workspace_bytes() const {
    // Partials and one arrival word per column tile (the in-launch finish: common/splitk_tail.h).
    if (version == 5) return splitk_tail::workspace_bytes(direct_splits, m, n, n / 64);
    return version == 4 ? v4.workspace_bytes() : v3.workspace_bytes();
  }
};
}  // namespace gemv

// Plans need the device: the grid is sized from its SM count and the blocks that fit per SM.
// Return cudaSuccess and fill `plan`, or the error of the device query.
cudaError_t plan_int8_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::GemvPlan* plan);

// int8: w (N, K) row-major int8, scales N values of dt in channel order.
// ws: plan.workspace_bytes() bytes (may be null when that is 0), 16-byte aligned.
// bias: N values of dt added before the single rounding, or nullptr (every plan version).
cudaError_t launch_int8_gemv(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                             void* ws, const gemv::GemvPlan& plan, DType dt, cudaStream_t stream);

// FP8 Marlin on engine v4 (behind QK_GEMV_FP8_ENGINE=1): w (K/16, 4N) int32, scales N values of dt,
// Block32-permuted; N % 64 == 0, K % 16 == 0, M <= kMaxEngineGemvM.
cudaError_t plan_fp8_engine_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::GemvPlan* plan);
cudaError_t launch_fp8_engine_gemv(const void* a, const uint32_t* w, const void* scales, const void* bias,
                                   void* out, void* ws, const gemv::GemvPlan& plan, DType dt, cudaStream_t stream);

}  // namespace qk
