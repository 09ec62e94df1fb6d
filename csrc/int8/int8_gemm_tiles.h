// The configurations of the int8 GEMM, one translation unit each (int8_gemm_t*.cu, explicit
// instantiations of int8_gemm_cutlass.cuh) so a build compiles them in parallel; int8_gemm.cpp picks one.
// Defined only where the kernel is built (QK_HAS_CUTLASS and QK_HAS_SM90A).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"

namespace qk::int8_gemm_cutlass {

// kTokens: tokens per block tile (the GEMM's N side); every tile has 128 channels and 64 k per stage.
// kClusterChannels: blocks per cluster along the channels (2: the pair shares each activation tile, copied
// once and multicast). kStreamK: CUTLASS's stream-K tile scheduler (K split over blocks where the tiles do
// not fill the GPU, partial sums reduced in a fixed order; needs a workspace) instead of the persistent one.
template <int kTokens, int kClusterChannels, bool kStreamK>
struct Tile {
  static cudaError_t workspace_bytes(DType dt, int64_t m, int64_t n, int64_t k, int sm_count, size_t* bytes);
  static cudaError_t run(DType dt, const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                         void* workspace, size_t workspace_bytes, int64_t m, int64_t n, int64_t k, int sm_count,
                         cudaStream_t stream);
};

#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
extern template struct Tile<64, 1, false>;
extern template struct Tile<64, 1, true>;
extern template struct Tile<128, 1, false>;
extern template struct Tile<128, 1, true>;
extern template struct Tile<256, 2, false>;
extern template struct Tile<256, 1, true>;
#endif

}  // namespace qk::int8_gemm_cutlass
