// Host side of thread-block clusters: whether a kernel can be launched with clusters on the current
// device, and the launch itself (cudaLaunchKernelEx with a cluster-dimension attribute).
#pragma once

#include <atomic>
#include <cuda_runtime.h>

namespace qk {
namespace cluster {

// Blocks per cluster every sm_90+ GPU schedules (larger clusters need an opt-in per kernel).
constexpr int kPortableMax = 8;

// True when the image of `kernel` loaded for the current device was compiled for sm_90 or newer (a
// GPU newer than every SASS target may run PTX or older SASS, whose cluster code paths are empty).
// Cached per device for the process: the image does not change while it runs.
template <typename Kernel>
bool image_supports_clusters(Kernel kernel) {
  static std::atomic<signed char> cache[64];  // 0 unknown, 1 yes, -1 no (zero-initialised: static)
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (device >= 0 && device < 64) {
    const signed char c = cache[device].load(std::memory_order_relaxed);
    if (c != 0) return c > 0;
  }
  cudaFuncAttributes attr{};
  const bool yes = cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.binaryVersion >= 90;
  if (device >= 0 && device < 64) cache[device].store(yes ? 1 : -1, std::memory_order_relaxed);
  return yes;
}

// Launches kernel<<<grid, block, smem, stream>>> in clusters of cluster_x x 1 x 1 blocks.
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, int smem, cudaStream_t stream, unsigned cluster_x,
                   Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster_x;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

}  // namespace cluster
}  // namespace qk
