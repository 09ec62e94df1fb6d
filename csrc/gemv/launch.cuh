// Host side of the GEMV engine shared by the format instantiations: picking the activation-row
// tile count, sizing the persistent grid from what fits per SM, and the launch itself.
#pragma once

#include <atomic>
#include <cstdint>
#include <cuda_runtime.h>
#include "gemv/engine.cuh"
#include "gemv/schedule.h"

namespace qk {
namespace gemv {

inline int row_tiles(int64_t m) { return m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8; }

template <class F, DType D, int MT>
cudaError_t allow_smem() {
  return cudaFuncSetAttribute(gemv_kernel<F, D, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              ConfigOf<F, MT>::kSmemBytes);
}

// Blocks of gemv_kernel<F, *, MT> resident per SM on the current device (the smaller of the two
// dtypes' counts, so that the plan does not depend on the dtype).
template <class F, int MT>
cudaError_t resident_blocks(int* blocks) {
  int b16 = 0, b32 = 0;
  cudaError_t err = allow_smem<F, DType::F16, MT>();
  if (err == cudaSuccess) err = allow_smem<F, DType::BF16, MT>();
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b16, gemv_kernel<F, DType::F16, MT>, kThreads,
                                                        ConfigOf<F, MT>::kSmemBytes);
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b32, gemv_kernel<F, DType::BF16, MT>, kThreads,
                                                        ConfigOf<F, MT>::kSmemBytes);
  *blocks = b16 < b32 ? b16 : b32;
  return err;
}

// Per device and MT: blocks per SM times SM count, computed once (0 = not yet known).
constexpr int kMaxDevices = 64;
template <class F>
struct GridCache {
  static std::atomic<int> slots[kMaxDevices][4];
};
template <class F>
std::atomic<int> GridCache<F>::slots[kMaxDevices][4];

template <class F>
cudaError_t make_plan_for(int64_t m, int64_t n, int64_t k, int32_t device, Plan* plan) {
  const int mt = row_tiles(m);
  const int mt_index = mt == 1 ? 0 : mt == 2 ? 1 : mt == 4 ? 2 : 3;
  std::atomic<int>* cached = device >= 0 && device < kMaxDevices ? &GridCache<F>::slots[device][mt_index] : nullptr;
  int ctas = cached ? cached->load(std::memory_order_relaxed) : 0;
  if (ctas == 0) {
    int previous = -1;
    cudaError_t err = cudaGetDevice(&previous);
    if (err == cudaSuccess && previous != device) err = cudaSetDevice(device);
    int sms = 0, per_sm = 0;
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess) {
      switch (mt) {
        case 1: err = resident_blocks<F, 1>(&per_sm); break;
        case 2: err = resident_blocks<F, 2>(&per_sm); break;
        case 4: err = resident_blocks<F, 4>(&per_sm); break;
        default: err = resident_blocks<F, 8>(&per_sm); break;
      }
    }
    if (previous >= 0 && previous != device) cudaSetDevice(previous);
    if (err != cudaSuccess) return err;
    if (per_sm < 1) return cudaErrorInvalidConfiguration;  // the kernel does not fit on this device
    ctas = sms * per_sm;
    if (cached) cached->store(ctas, std::memory_order_relaxed);
  }
  *plan = make_plan(m, n, k, kUnitK * F::kSteps, ctas, 1);
  return cudaSuccess;
}

template <class F, DType D, int MT>
cudaError_t launch_typed(const typename F::Args& args, const void* a, void* out, void* ws, const Plan& plan,
                         cudaStream_t stream) {
  // Raising the dynamic shared-memory limit is per function and device; it is cheap, and doing it
  // at every launch keeps multi-GPU processes correct without more bookkeeping.
  cudaError_t err = allow_smem<F, D, MT>();
  if (err != cudaSuccess) return err;
  int* counters = nullptr;
  float* partials = nullptr;
  if (plan.workspace_bytes() > 0) {
    counters = static_cast<int*>(ws);
    partials = reinterpret_cast<float*>(static_cast<char*>(ws) + plan.counter_bytes);
    err = cudaMemsetAsync(counters, 0, static_cast<size_t>(plan.tiles) * sizeof(int), stream);
    if (err != cudaSuccess) return err;
  }
  gemv_kernel<F, D, MT><<<static_cast<unsigned>(plan.ctas), kThreads, ConfigOf<F, MT>::kSmemBytes, stream>>>(
      args, static_cast<const uint16_t*>(a), static_cast<uint16_t*>(out), static_cast<int>(plan.m), plan, counters,
      partials);
  return cudaGetLastError();
}

template <class F, DType D>
cudaError_t launch_rows(const typename F::Args& args, const void* a, void* out, void* ws, const Plan& plan,
                        cudaStream_t stream) {
  switch (row_tiles(plan.m)) {
    case 1: return launch_typed<F, D, 1>(args, a, out, ws, plan, stream);
    case 2: return launch_typed<F, D, 2>(args, a, out, ws, plan, stream);
    case 4: return launch_typed<F, D, 4>(args, a, out, ws, plan, stream);
    default: return launch_typed<F, D, 8>(args, a, out, ws, plan, stream);
  }
}

template <class F>
cudaError_t launch(const typename F::Args& args, const void* a, void* out, void* ws, const Plan& plan, DType dt,
                   cudaStream_t stream) {
  if (plan.m <= 0 || plan.units <= 0) return cudaSuccess;
  return dt == DType::BF16 ? launch_rows<F, DType::BF16>(args, a, out, ws, plan, stream)
                           : launch_rows<F, DType::F16>(args, a, out, ws, plan, stream);
}

}  // namespace gemv
}  // namespace qk
