// The end of a split-K tile whose splits run as one thread-block cluster (sm_90+): every split has left
// its fp32 partials of the tile (up to 8 rows x 64 channels) in its own shared memory; split s then
// finishes channels [64 s / splits, 64 (s + 1) / splits) from all splits' partials, summed in split
// order from 0 (the order of the split-K reduce kernel, so both ways give the same bits), scaled, the
// bias added, and rounded once.
#pragma once

#include <cstdint>
#include "common/cluster.cuh"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"

namespace qk {
namespace cluster {

// part: this block's partials, row r and tile channel ch at part[r * 64 + ch], written by the block
// before the call; bias: N values of D or nullptr. Called by every thread of every block of the cluster.
template <DType D, ScalePerm kPerm>
QK_DEVICE QK_FORCEINLINE void finish_tile(const float* part, int split, int splits, int m, int64_t n, int64_t col0,
                                          const uint16_t* scales, const uint16_t* bias, typename Elem<D>::T* out,
                                          int threads) {
  sync();
  const int lo = 64 * split / splits;
  const int width = 64 * (split + 1) / splits - lo;
  for (int idx = static_cast<int>(threadIdx.x); idx < m * width; idx += threads) {
    const int r = idx / width;
    const int ch = lo + idx - r * width;
    float acc = 0.f;
    for (int s = 0; s < splits; ++s) acc += load_remote(part + r * 64 + ch, static_cast<uint32_t>(s));
    const int64_t col = col0 + ch;
    const float sc = bits16_to_float<D>(scales[scale_slot(col, kPerm)]);
    out[r * n + col] = Elem<D>::from_float(scale_add_bias<D>(acc, sc, bias, col));
  }
  sync();  // no block leaves while another may still read its shared memory
}

}  // namespace cluster
}  // namespace qk
