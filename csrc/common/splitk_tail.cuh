// Split-K finished inside the launch (device side; layout and tickets: common/splitk_tail.h). The last
// block of a tile to arrive sums every split's partials in split order from 0, the order of the split-K
// reduce kernel, so both finishes give the same bits; then scale, bias, one rounding.
#pragma once

#include <cstdint>
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"
#include "common/splitk_tail.h"

namespace qk {
namespace splitk_tail {

// The last arrival's sum: one element a thread, four splits loaded before any is added (one block
// finishes the tile, so its loads must overlap). Wider batches or float4 loads made register-capped
// kernels (72 and 96 registers) spill in their main loops.
template <DType D, ScalePerm kPerm>
QK_DEVICE QK_FORCEINLINE void sum_splits(const float* ws, int splits, int m, int64_t n, int64_t col0,
                                         const uint16_t* scales, const uint16_t* bias, typename Elem<D>::T* out,
                                         int threads) {
  const int64_t total = static_cast<int64_t>(m) * n;
  constexpr int kBatch = 4;
  for (int idx = static_cast<int>(threadIdx.x); idx < m * 64; idx += threads) {
    const int64_t col = col0 + (idx & 63);
    const int64_t i = (idx >> 6) * n + col;
    float acc = 0.f;
    for (int s0 = 0; s0 < splits; s0 += kBatch) {
      float v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (s0 + j < splits) v[j] = __ldcg(ws + (s0 + j) * total + i);
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (s0 + j < splits) acc += v[j];  // split order, no padding term: the reduce kernel's sum, bit for bit
    }
    const float sc = bits16_to_float<D>(scales[scale_slot(col, kPerm)]);
    out[i] = Elem<D>::from_float(scale_add_bias<D>(acc, sc, bias, col));
  }
}

// Called by every thread of a block after it stored its partials of tile `tile` (rows < m, the 64
// channels from col0) at ws[(split * m + row) * n + col]. No block waits for another. `flag`: a word of
// the block's shared memory that it no longer reads (written after the first barrier here), so the
// kernels need no static shared memory for it.
template <DType D, ScalePerm kPerm>
QK_DEVICE QK_FORCEINLINE void arrive_and_finish(const float* ws, unsigned long long* counters,
                                                unsigned long long ticket, int64_t tile, int splits, int m,
                                                int64_t n, int64_t col0, const uint16_t* scales,
                                                const uint16_t* bias, typename Elem<D>::T* out, int threads,
                                                int* flag) {
  __threadfence();  // this thread's partials are visible to every block ...
  __syncthreads();  // ... and so are all of this block's, before it counts as arrived
  if (threadIdx.x == 0) {
    unsigned long long* const word = counters + tile;
    unsigned long long seen = *reinterpret_cast<volatile unsigned long long*>(word);
    unsigned long long arrived;
    for (;;) {
      arrived = (seen >> 8) == ticket ? (seen & 0xFFull) : 0ull;  // another ticket: stale, count from 0
      const unsigned long long prev = atomicCAS(word, seen, (ticket << 8) | (arrived + 1));
      if (prev == seen) break;
      seen = prev;
    }
    const bool last = arrived + 1 == static_cast<unsigned long long>(splits);
    *flag = last;
    if (last) {
      atomicExch(word, 0ull);  // clean for a graph that replays this ticket
      __threadfence();         // the other splits' partials, published before they counted, are read after
    }
  }
  __syncthreads();
  if (!*flag) return;
  sum_splits<D, kPerm>(ws, splits, m, n, col0, scales, bias, out, threads);
}

}  // namespace splitk_tail
}  // namespace qk
