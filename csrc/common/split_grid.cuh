// The grid of the register-loaded small-M kernels (csrc/fp8_marlin/fp8_gemv_direct.cu,
// csrc/int8/int8_gemv_direct.cu): one block per (K-split, 64-channel tile). Plain: a 1-D grid, split-major.
// Clustered (sm_90+): grid (splits, tiles), a tile's splits one cluster that finishes them in the same
// launch (cluster_finish.cuh). Clusters only for exactly two splits: on an H200 they were 4-6 % faster
// than the split-K reduce there and 5-9 % slower with 4 or 8 splits (benchmarks/results/gemv_notes.md, v6).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/cluster_launch.h"
#include "common/env.h"

namespace qk {
namespace split_grid {

constexpr int kClusterSplits = 2;
static_assert(kClusterSplits <= cluster::kPortableMax, "clusters beyond 8 blocks need an opt-in");

struct Item {
  int split;
  int64_t tile;
};

// Split `split` of `splits` contiguous, possibly uneven ranges over [0, total): [begin, begin + count).
// Every range is non-empty when splits <= total (the split-K kernels' K ranges).
struct Range {
  int64_t begin;
  int64_t count;
};
QK_HOST_DEVICE QK_FORCEINLINE Range range(int64_t total, int split, int splits) {
  const int64_t begin = total * split / splits;
  return {begin, total * (split + 1) / splits - begin};
}

// This block's (split, tile).
template <bool kCluster>
QK_DEVICE QK_FORCEINLINE Item item(int64_t tiles) {
  if (kCluster) return {static_cast<int>(blockIdx.x), static_cast<int64_t>(blockIdx.y)};
  const int split = static_cast<int>(blockIdx.x / tiles);
  return {split, blockIdx.x - static_cast<int64_t>(split) * tiles};
}

// Whether to launch clustered: exactly kClusterSplits splits, the tile count fits grid.y, the image of
// `clustered` loaded for this GPU was built for sm_90+, and the environment variable `off_env` is not 0
// (a test and benchmark override, read at every launch).
template <typename Kernel>
bool use_clusters(Kernel clustered, int64_t tiles, int splits, const char* off_env) {
  if (splits != kClusterSplits || tiles > 65535) return false;
  if (env_int(off_env, 1) == 0) return false;
  return cluster::image_supports_clusters(clustered);
}

// Launches `clustered` as above, or `plain` on the 1-D grid; both take the same arguments.
template <typename... Params, typename... Args>
cudaError_t launch(void (*plain)(Params...), void (*clustered)(Params...), bool with_clusters, int64_t tiles,
                   int splits, int threads, int smem, cudaStream_t stream, Args... args) {
  if (with_clusters) {
    return cluster::launch(clustered, dim3(static_cast<unsigned>(splits), static_cast<unsigned>(tiles)),
                           dim3(static_cast<unsigned>(threads)), smem, stream, static_cast<unsigned>(splits), args...);
  }
  plain<<<static_cast<unsigned>(tiles * splits), threads, smem, stream>>>(static_cast<Params>(args)...);
  return cudaGetLastError();
}

}  // namespace split_grid
}  // namespace qk
