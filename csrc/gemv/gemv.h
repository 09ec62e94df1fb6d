// Launchers of the GEMV engine (csrc/gemv/engine.cuh), one pair per weight format (today: int8): a plan (grid
// and workspace, from the shape and the device) and a launch that follows that plan. The C entry
// points size the caller's workspace with the same plan they launch with.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"
#include "gemv/schedule.h"

namespace qk {

// Largest M the engine takes (8 activation-row tiles of 8).
constexpr int64_t kMaxEngineGemvM = 64;

// Plans need the device: the grid is sized from its SM count and the blocks that fit per SM.
// Return cudaSuccess and fill `plan`, or the error of the device query.
cudaError_t plan_int8_gemv(int64_t m, int64_t n, int64_t k, int32_t device, gemv::Plan* plan);

// int8: w (N, K) row-major int8, scales N values of dt in channel order.
// ws: plan.workspace_bytes() bytes (may be null when that is 0), 16-byte aligned.
cudaError_t launch_int8_gemv(const void* a, const int8_t* w, const void* scales, void* out, void* ws,
                             const gemv::Plan& plan, DType dt, cudaStream_t stream);

}  // namespace qk
