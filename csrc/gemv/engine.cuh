// The GEMV engine: out[m, n] = dt(scale[n] * sum_k a[m, k] * W[n, k] + bias[n]) for small M, reading the
// quantized weight once at the memory system's pace. Three parts, each replaceable on its own:
//   mainloop  - every warp streams its work units through a private ring of cp.async stages
//               (1 KB of weight, marked evict-first, plus the matching 16 k of the activations),
//               decodes the weight in registers (the format's job) and feeds m16n8k16 products;
//   schedule  - the stream-K split of units over a persistent grid (csrc/gemv/schedule.h);
//   epilogue  - the four warps' partial tiles are summed through shared memory in a fixed order;
//               a tile owned whole by one block is scaled and stored, a tile shared by several
//               blocks goes to the workspace and the last block to arrive sums the parts (in block
//               order, so results do not depend on timing), scales and stores it.
// Formats (csrc/gemv/formats.cuh) plug into the mainloop and the epilogue's scale.
#pragma once

#include <cstdint>
#include "../compat/qk_compat.h"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "gemv/formats.cuh"
#include "gemv/schedule.h"

namespace qk {
namespace gemv {

// Per activation-row-tile count MT (8 rows each; MT = 1, 2, 4, 8 covers M <= 64).
template <int MT, int kSteps>
struct Config {
  // Ring depth per warp. Measured on H200: occupancy (warps per SM to hide the decode's latency)
  // matters more than depth once ~3 KB per warp are in flight, so the ring stays short enough for
  // kMinBlocks blocks per SM (benchmarks/results/gemv_notes.md).
  static constexpr int kStagesWanted = (MT == 8 ? 3 : 4) / kSteps;
  static constexpr int kStages = kStagesWanted < 3 ? 3 : kStagesWanted;
  static constexpr int kActRows = 8 * MT;
  static constexpr int kWeightWords = 256 * kSteps;
  static constexpr int kActRowWords = 8 * kSteps;
  static constexpr int kStageWords = kWeightWords + kActRows * kActRowWords;
  static constexpr int kRingWords = kWarps * kStages * kStageWords;
  static constexpr int kRedRows = MT < 2 ? 8 : 16;  // activation rows summed per epilogue pass
  static constexpr int kRedStride = 68;             // floats per row: rows 2 apart land 8 banks apart
  static constexpr int kRedWords = kWarps * kRedRows * kRedStride;
  static constexpr int kSmemBytes = (kRingWords + kRedWords + 4) * 4;
  static constexpr int kActCopies = (2 * kSteps * kActRows + 31) / 32;  // 16-byte activation pieces per lane
  // Blocks per SM the register budget must allow (the accumulators grow with MT).
  static constexpr int kMinBlocks = MT == 1 ? (kSteps == 1 ? 7 : 5) : MT == 2 ? (kSteps == 1 ? 5 : 4) : MT == 4 ? 3 : 2;
};

QK_DEVICE QK_FORCEINLINE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <DType D>
QK_DEVICE QK_FORCEINLINE uint16_t to_bits16(float v) {
  if constexpr (D == DType::F16) return __half_as_ushort(__float2half_rn(v));
  else return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

template <class F, int MT>
using ConfigOf = Config<MT, F::kSteps>;

template <class F, DType D, int MT>
__global__ void __launch_bounds__(kThreads, ConfigOf<F, MT>::kMinBlocks)
    gemv_kernel(const typename F::Args args, const uint16_t* QK_RESTRICT a, uint16_t* QK_RESTRICT out, int m,
                const Plan plan, int* QK_RESTRICT counters, float* QK_RESTRICT partials) {
  using C = ConfigOf<F, MT>;
  extern __shared__ QK_ALIGN(16) uint32_t smem[];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;  // fragment row (channel) / column (activation row)
  const int tig = lane & 3;
  uint32_t* const ring = smem + warp * C::kStages * C::kStageWords;
  float* const red = reinterpret_cast<float*>(smem + C::kRingWords);
  int* const last_flag = reinterpret_cast<int*>(smem + C::kRingWords + C::kRedWords);

  // This block's units [u0, u1) as (tile, k unit) pairs: one 64-bit division per block, 32-bit
  // cursors in the loops (units < 2^31 is guaranteed by the entry points' size limits).
  const int ku = static_cast<int>(plan.k_units);
  const int64_t cta = blockIdx.x;
  const int64_t u0 = cta_start(cta, plan.units, plan.ctas);
  const int64_t u1 = cta_start(cta + 1, plan.units, plan.ctas);
  const int t0 = static_cast<int>(u0 / ku);
  const int ks0 = static_cast<int>(u0 - static_cast<int64_t>(t0) * ku);
  const int t_last = static_cast<int>((u1 - 1) / ku);
  const int ks_last_end = static_cast<int>(u1 - static_cast<int64_t>(t_last) * ku);
  const int64_t k = args.k;
  const uint64_t policy = l2_evict_first_policy();

  // ---- producer: in each tile's segment this warp takes k units begin + warp, +4, ... ----
  int ptile = t0;
  int pks = ks0 + warp;
  int pend = t0 == t_last ? ks_last_end : ku;
  auto next_segment = [&]() {
    while (pks >= pend && ptile < t_last) {
      ++ptile;
      pks = warp;
      pend = ptile == t_last ? ks_last_end : ku;
    }
  };
  next_segment();
  uint32_t issued = 0;
  // Always commits a group (empty past the end) so that the wait count stays uniform.
  auto issue = [&]() {
    if (pks < pend) {
      uint32_t* const st = ring + static_cast<int>(issued % C::kStages) * C::kStageWords;
#pragma unroll
      for (int h = 0; h < 2 * F::kSteps; ++h) {
        const int p = lane + 32 * h;
        bool valid;
        const void* src = F::piece(args, ptile, pks, p, valid);
        if (valid) cp_async16_stream(shared_addr(st + 4 * F::slot(p)), src, policy);
        else cp_async16_zfill(shared_addr(st + 4 * F::slot(p)), src, 0u);
      }
      const uint16_t* const a_unit = a + static_cast<int64_t>(pks) * (kUnitK * F::kSteps);
#pragma unroll
      for (int j = 0; j < C::kActCopies; ++j) {
        const int piece = lane + 32 * j;
        const int row = piece / (2 * F::kSteps);
        const int quarter = piece % (2 * F::kSteps);
        if (row < m && row < C::kActRows)
          cp_async16(shared_addr(st + C::kWeightWords + F::act_word(row, quarter)), a_unit + row * k + 8 * quarter);
      }
      pks += kWarps;
      next_segment();
    }
    cp_async_commit();
    ++issued;
  };

#pragma unroll
  for (int i = 0; i < C::kStages - 1; ++i) issue();

  uint32_t consumed = 0;
  for (int tile = t0; tile <= t_last; ++tile) {  // one segment = this block's k units of one tile
    const int seg_begin = tile == t0 ? ks0 : 0;
    const int seg_end = tile == t_last ? ks_last_end : ku;
    const int len = seg_end - seg_begin;
    const int mine = len > warp ? (len - warp + kWarps - 1) / kWarps : 0;

    // ---- mainloop ----
    float acc[4][MT][4];
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[s][t][e] = 0.f;

    for (int i = 0; i < mine; ++i) {
      cp_async_wait<C::kStages - 2>();  // this lane's copies of the oldest stage have landed
      __syncwarp();                     // ... every lane's; and every lane is done with the stage refilled next
      const uint32_t* const st = ring + static_cast<int>(consumed % C::kStages) * C::kStageWords;
      uint32_t af[F::kSteps][4][4];
      uint32_t bf[F::kSteps][MT][2];
#pragma unroll
      for (int j = 0; j < F::kSteps; ++j) {
        F::template fragments<D>(st, lane, j, af[j]);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          const int row = 8 * t + g;
          if (row < m) {
            F::b_fragment(st + C::kWeightWords, row, tig, j, bf[j][t]);
          } else {  // rows past m hold stale data: feed zeros
            bf[j][t][0] = 0u;
            bf[j][t][1] = 0u;
          }
        }
      }
      issue();
      ++consumed;
#pragma unroll
      for (int j = 0; j < F::kSteps; ++j)
#pragma unroll
        for (int s = 0; s < 4; ++s)
#pragma unroll
          for (int t = 0; t < MT; ++t) mma_16816<D>(acc[s][t], af[j][s], bf[j][t]);
    }

    // ---- epilogue ----
    // acc[s][t] = (channel 16s + g, row 8t + 2tig), (same, row + 1), (channel + 8, row), (channel + 8, row + 1).
    const bool whole = len == ku;
    float* const part = partials + (cta * plan.max_segs + (tile - t0)) * m * kTileN;
    constexpr int kTilesPerPass = C::kRedRows / 8;
#pragma unroll
    for (int pass = 0; pass < MT / kTilesPerPass; ++pass) {
      const int row_base = pass * C::kRedRows;
      if (row_base >= m) break;  // uniform across the block
#pragma unroll
      for (int s = 0; s < 4; ++s)
#pragma unroll
        for (int tt = 0; tt < kTilesPerPass; ++tt) {
          const int t = pass * kTilesPerPass + tt;
          float* const base = red + (warp * C::kRedRows + 8 * tt + 2 * tig) * C::kRedStride + 16 * s + g;
          base[0] = acc[s][t][0];
          base[C::kRedStride] = acc[s][t][1];
          base[8] = acc[s][t][2];
          base[C::kRedStride + 8] = acc[s][t][3];
        }
      __syncthreads();
      const int rows = m - row_base < C::kRedRows ? m - row_base : C::kRedRows;
      for (int idx = tid; idx < rows * kTileN; idx += kThreads) {
        const int r = idx >> 6;
        const int ch = idx & 63;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kWarps; ++j) sum += red[(j * C::kRedRows + r) * C::kRedStride + ch];  // fixed order
        const int64_t col = static_cast<int64_t>(kTileN) * tile + ch;
        const int row = row_base + r;
        if (whole) {
          if (col < args.n) out[row * args.n + col] = to_bits16<D>(scale_add_bias<D>(sum, F::template scale<D>(args, col), args.bias, col));
        } else {
          part[row * kTileN + ch] = sum;
        }
      }
      __syncthreads();  // `red` is rewritten by the next pass or segment
    }

    if (!whole) {
      __threadfence();  // this thread's partials are visible device-wide before the block reports
      __syncthreads();
      if (tid == 0) {
        const int old = atomicAdd(counters + tile, static_cast<int>(len));
        *last_flag = (old + len == ku) ? 1 : 0;
      }
      __syncthreads();
      if (*last_flag) {  // every other part of this tile has landed: sum them in block order
        __threadfence();
        const int64_t w_lo = cta_of(static_cast<int64_t>(tile) * ku, plan.units, plan.ctas);
        const int64_t w_hi = cta_of(static_cast<int64_t>(tile + 1) * ku - 1, plan.units, plan.ctas);
        for (int idx = tid; idx < m * kTileN; idx += kThreads) {
          float sum = 0.f;
          for (int64_t w = w_lo; w <= w_hi; ++w) {
            const int64_t s = tile - cta_start(w, plan.units, plan.ctas) / ku;
            sum += __ldcg(partials + (w * plan.max_segs + s) * m * kTileN + idx);
          }
          const int64_t col = static_cast<int64_t>(kTileN) * tile + (idx & 63);
          const int row = idx >> 6;
          if (col < args.n) out[row * args.n + col] = to_bits16<D>(scale_add_bias<D>(sum, F::template scale<D>(args, col), args.bias, col));
        }
      }
      // last_flag is rewritten only after the next segment's epilogue barriers.
    }
  }
  cp_async_wait<0>();
}

}  // namespace gemv
}  // namespace qk
