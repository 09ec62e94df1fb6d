// Host side of GEMV engine v4: grid capacity from the occupancy of the v4 kernel, the plan, and the
// launch (csrc/gemv/engine_v4.cuh).
#pragma once

#include <atomic>
#include <cstdint>
#include <cuda_runtime.h>
#include "gemv/engine_v4.cuh"
#include "gemv/launch.cuh"
#include "gemv/schedule.h"

namespace qk {
namespace gemv {

// The kernel (and its dynamic shared memory) that serves format F at MT activation row tiles:
// the cp.async-ring kernel, or for Fp8MarlinDirect at M <= 16 the register-ring kernel (larger M
// falls back to the ring: the register ring holds at most 16 activation rows).
template <class F, DType D, int MT>
struct KernelOf {
  static auto get() { return &gemv_v4_kernel<F, D, MT>; }
  static constexpr int kSmemBytes = Config4<F, MT>::kSmemBytes;
};
template <DType D, int MT>
struct KernelOf<Fp8MarlinDirect, D, MT> : KernelOf<Fp8Marlin, D, MT> {};
template <DType D>
struct KernelOf<Fp8MarlinDirect, D, 1> {
  static auto get() { return &gemv_v4_direct_kernel<D, 1>; }
  static constexpr int kSmemBytes = 0;
};
template <DType D>
struct KernelOf<Fp8MarlinDirect, D, 2> {
  static auto get() { return &gemv_v4_direct_kernel<D, 2>; }
  static constexpr int kSmemBytes = 0;
};

template <class F, DType D, int MT>
cudaError_t allow_smem_v4() {
  using K = KernelOf<F, D, MT>;
  return K::kSmemBytes > 0
             ? cudaFuncSetAttribute(K::get(), cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes)
             : cudaSuccess;
}

// Blocks of the v4 kernel resident per SM (the smaller of the two dtypes' counts, so that the plan,
// and the workspace it asks for, do not depend on the dtype).
template <class F, int MT>
cudaError_t resident_blocks_v4(int* blocks) {
  using K16 = KernelOf<F, DType::F16, MT>;
  using K32 = KernelOf<F, DType::BF16, MT>;
  int b16 = 0, b32 = 0;
  cudaError_t err = allow_smem_v4<F, DType::F16, MT>();
  if (err == cudaSuccess) err = allow_smem_v4<F, DType::BF16, MT>();
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b16, K16::get(), kThreads, K16::kSmemBytes);
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b32, K32::get(), kThreads, K32::kSmemBytes);
  *blocks = b16 < b32 ? b16 : b32;
  return err;
}

// Per device: SM count, and per MT the v4 kernel's resident blocks per SM (0 = not yet known).
template <class F>
struct GridCacheV4 {
  static std::atomic<int> sms[kMaxDevices];
  static std::atomic<int> per_sm[kMaxDevices][4];
};
template <class F>
std::atomic<int> GridCacheV4<F>::sms[kMaxDevices];
template <class F>
std::atomic<int> GridCacheV4<F>::per_sm[kMaxDevices][4];

// Blocks of the v4 kernel for this M resident on the whole device at once (cached per device, MT),
// capped at `max_per_sm` blocks per SM when that is > 0 (a test override: fewer bytes in flight).
template <class F>
cudaError_t capacity_v4(int64_t m, int32_t device, int max_per_sm, int64_t* capacity) {
  const int mt = row_tiles(m);
  const int mt_index = mt == 1 ? 0 : mt == 2 ? 1 : mt == 4 ? 2 : 3;
  const bool cacheable = device >= 0 && device < kMaxDevices;
  int sms = cacheable ? GridCacheV4<F>::sms[device].load(std::memory_order_relaxed) : 0;
  int per_sm = cacheable ? GridCacheV4<F>::per_sm[device][mt_index].load(std::memory_order_relaxed) : 0;
  if (sms == 0 || per_sm == 0) {
    int previous = -1;
    cudaError_t err = cudaGetDevice(&previous);
    if (err == cudaSuccess && previous != device) err = cudaSetDevice(device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err == cudaSuccess) {
      switch (mt) {
        case 1: err = resident_blocks_v4<F, 1>(&per_sm); break;
        case 2: err = resident_blocks_v4<F, 2>(&per_sm); break;
        case 4: err = resident_blocks_v4<F, 4>(&per_sm); break;
        default: err = resident_blocks_v4<F, 8>(&per_sm); break;
      }
    }
    if (previous >= 0 && previous != device) cudaSetDevice(previous);
    if (err != cudaSuccess) return err;
    if (per_sm < 1 || sms < 1) return cudaErrorInvalidConfiguration;  // the kernel does not fit on this device
    if (cacheable) {
      GridCacheV4<F>::sms[device].store(sms, std::memory_order_relaxed);
      GridCacheV4<F>::per_sm[device][mt_index].store(per_sm, std::memory_order_relaxed);
    }
  }
  if (max_per_sm > 0 && per_sm > max_per_sm) per_sm = max_per_sm;
  *capacity = static_cast<int64_t>(sms) * per_sm;
  return cudaSuccess;
}

template <class F>
cudaError_t make_plan4_for(int64_t m, int64_t n, int64_t k, int32_t device, const V4Options& opt, Plan4* plan) {
  int64_t capacity = 0;
  const cudaError_t err = capacity_v4<F>(m, device, opt.max_blocks_per_sm, &capacity);
  if (err != cudaSuccess) return err;
  *plan = make_plan4(m, n, k, kUnitK * F::kSteps, capacity, opt.group_tiles, opt.split_major, opt.max_splits);
  // The kernel counts units, tiles and blocks in 32-bit integers.
  if (k / (kUnitK * F::kSteps) > 0x7FFFFFFF || plan->ctas > 0x7FFFFFFF || (n + kTileN - 1) / kTileN > 0x7FFFFFFF)
    return cudaErrorInvalidValue;
  return cudaSuccess;
}

template <class F, DType D, int MT>
cudaError_t launch_v4_typed(const typename F::Args& args, const void* a, void* out, void* ws, const Plan4& plan,
                            cudaStream_t stream) {
  cudaError_t err = allow_smem_v4<F, D, MT>();  // per function and device; cheap
  if (err != cudaSuccess) return err;
  int* counters = nullptr;
  float* partials = nullptr;
  if (plan.workspace_bytes() > 0) {
    counters = static_cast<int*>(ws);
    partials = reinterpret_cast<float*>(static_cast<char*>(ws) + plan.counter_bytes);
    err = cudaMemsetAsync(counters, 0, static_cast<size_t>(plan.groups) * sizeof(int), stream);
    if (err != cudaSuccess) return err;
  }
  using K = KernelOf<F, D, MT>;
  K::get()<<<static_cast<unsigned>(plan.ctas), kThreads, K::kSmemBytes, stream>>>(
      args, static_cast<const uint16_t*>(a), static_cast<uint16_t*>(out), plan, counters, partials);
  return cudaGetLastError();
}

template <class F, DType D>
cudaError_t launch_v4_rows(const typename F::Args& args, const void* a, void* out, void* ws, const Plan4& plan,
                           cudaStream_t stream) {
  switch (row_tiles(plan.m)) {
    case 1: return launch_v4_typed<F, D, 1>(args, a, out, ws, plan, stream);
    case 2: return launch_v4_typed<F, D, 2>(args, a, out, ws, plan, stream);
    case 4: return launch_v4_typed<F, D, 4>(args, a, out, ws, plan, stream);
    default: return launch_v4_typed<F, D, 8>(args, a, out, ws, plan, stream);
  }
}

template <class F>
cudaError_t launch_v4(const typename F::Args& args, const void* a, void* out, void* ws, const Plan4& plan, DType dt,
                      cudaStream_t stream) {
  if (plan.m <= 0 || plan.ctas <= 0 || plan.k_units <= 0) return cudaSuccess;
  return dt == DType::BF16 ? launch_v4_rows<F, DType::BF16>(args, a, out, ws, plan, stream)
                           : launch_v4_rows<F, DType::F16>(args, a, out, ws, plan, stream);
}

}  // namespace gemv
}  // namespace qk
