// GEMV engine v4: the weight streamed in DRAM-friendly order (benchmarks/results/gemv_notes.md, v4).
// Same formats, fragments and numerics as the v3 engine (csrc/gemv/engine.cuh); what changes is who
// reads what:
//   schedule  - a block owns a group of adjacent column tiles and one K range (csrc/gemv/schedule.h,
//               Plan4); each warp streams one tile of the group, so a block step reads the group's
//               units at one k slice (FP8 Marlin: group_tiles KB in one run), and split-major block
//               numbering keeps the resident blocks on the same few packed rows;
//   mainloop  - per-warp ring of cp.async stages (weight marked evict-first + the matching
//               activations), sized from bytes in flight rather than a fixed depth (Config4); or,
//               for FP8 at M <= 16 behind a test override, a ring of registers filled by
//               ld.global.nc (gemv_v4_direct_kernel);
//   epilogue  - warps that share a tile sum through shared memory in warp order; a block alone on
//               its K range (one split) scales and stores, otherwise it writes fp32 partials and the
//               last block of the group to arrive sums all splits in split order, scales and stores.
#pragma once

#include <cstdint>
#include "../compat/qk_compat.h"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "gemv/engine.cuh"
#include "gemv/formats.cuh"
#include "gemv/schedule.h"

namespace qk {
namespace gemv {

// Epilogue sizes shared by both mainloops: activation rows summed per pass, padded row stride.
template <int MT>
struct Red4 {
  static constexpr int kRows = MT < 2 ? 8 : 16;
  static constexpr int kStride = 68;  // floats per row: rows 2 apart land 8 banks apart
  static constexpr int kWords = kWarps * kRows * kStride;
};

template <class F, int MT>
struct Config4 {
  static constexpr int kUnitBytes = 1024 * F::kSteps;
  static constexpr int kActRows = 8 * MT;
  static constexpr int kWeightWords = 256 * F::kSteps;
  static constexpr int kActWords = kActRows * 8 * F::kSteps;
  static constexpr int kStageWords = kWeightWords + kActWords;
  // Blocks per SM the register budget must allow (the accumulators grow with MT), but no more than
  // fit in shared memory with two stages per warp (large units with many activation rows).
  static constexpr int kMinBlocksRegs = MT == 1 ? 6 : MT == 2 ? 4 : MT == 4 ? 3 : 2;
  static constexpr int kMinBlocksSmem = 228 * 1024 / (kWarps * 2 * kStageWords * 4 + 1024 + 64);
  static constexpr int kMinBlocks =
      kMinBlocksSmem < 1 ? 1 : (kMinBlocksRegs < kMinBlocksSmem ? kMinBlocksRegs : kMinBlocksSmem);
  // Little's law: ~4.3 TB/s x ~1 us loaded latency is ~4.3 MB chip-wide, ~32 KB per SM; aim at
  // twice that (latency grows under load), shared by the warps resident on the SM.
  static constexpr int kSmInFlight = 64 * 1024;
  static constexpr int kWarpInFlight = kSmInFlight / (kWarps * kMinBlocks);
  static constexpr int kStagesWanted = (kWarpInFlight + kUnitBytes - 1) / kUnitBytes + 1;
  // What fits: 228 KB of shared memory per SM, 1 KB of it reserved per block.
  static constexpr int kSmemCapBytes = 228 * 1024 / kMinBlocks - 1024 - 64;
  static constexpr int kStagesFit = kSmemCapBytes / (kWarps * kStageWords * 4);
  static constexpr int kStages = kStagesWanted < kStagesFit ? kStagesWanted : kStagesFit;
  static_assert(kStages >= 2, "the ring needs two stages");
  static constexpr int kRingWords = kWarps * kStages * kStageWords;
  static constexpr int kRedWords = Red4<MT>::kWords;
  static constexpr int kPoolWords = kRingWords > kRedWords ? kRingWords : kRedWords;  // ring, then `red`
  static constexpr int kSmemBytes = (kPoolWords + 4) * 4;
  static constexpr int kPieces = 64 * F::kSteps;  // 16-byte weight pieces per unit
  static constexpr int kPiecesPerLane = kPieces / 32;
  static constexpr int kActCopies = (2 * F::kSteps * kActRows + 31) / 32;  // 16-byte activation pieces per lane
  static constexpr int64_t kInFlightPerSm = int64_t(kMinBlocks) * kWarps * (kStages - 1) * kUnitBytes;
};

// What one warp of a block streams (Plan4): group `group` of tiles, K range split `split`; the warp
// owns tile `tile` and takes its k units first, first + stride, ... (`count` of them).
struct Work4 {
  int group, split, gt, tile, stride, first, count;
};

QK_DEVICE QK_FORCEINLINE Work4 work_of(const Plan4& plan, int warp) {
  Work4 w;
  const int b = static_cast<int>(blockIdx.x);
  w.group = plan.split_major ? b % plan.groups : b / plan.splits;
  w.split = plan.split_major ? b / plan.groups : b % plan.splits;
  const int kb = static_cast<int>(static_cast<int64_t>(plan.k_units) * w.split / plan.splits);
  const int ke = static_cast<int>(static_cast<int64_t>(plan.k_units) * (w.split + 1) / plan.splits);
  w.gt = plan.group_tiles;
  w.tile = w.group * w.gt + warp % w.gt;  // warps w and w + gt share a tile ...
  w.stride = kWarps / w.gt;               // ... and interleave its k units
  w.first = kb + warp / w.gt;
  w.count = (w.tile < plan.tiles && w.first < ke) ? (ke - w.first + w.stride - 1) / w.stride : 0;
  return w;
}

// Epilogue: the warps sharing a tile are summed through shared memory (`red`, Red4<MT>::kWords floats)
// in warp order; one split: scale and store; several: fp32 partials, and the last block of the group to
// arrive sums the splits in split order, scales and stores. Called by all threads of the block, after a
// barrier that frees `red`.
template <class F, DType D, int MT>
QK_DEVICE QK_FORCEINLINE void epilogue4(float (&acc)[4][MT][4], const Work4& w, const typename F::Args& args,
                                        uint16_t* QK_RESTRICT out, const Plan4& plan, int* QK_RESTRICT counters,
                                        float* QK_RESTRICT partials, float* red, int* last_flag) {
  using R = Red4<MT>;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5;
  const int g = (tid & 31) >> 2;
  const int tig = tid & 3;
  const int m = static_cast<int>(plan.m);
  const int gt = w.gt;
  // acc[s][t] = (channel 16s + g, row 8t + 2tig), (same, row + 1), (channel + 8, row), (channel + 8, row + 1).
  const int group_cols = gt * kTileN;
  const int64_t col0 = static_cast<int64_t>(w.group) * group_cols;
  const bool alone = plan.splits == 1;
  constexpr int kTilesPerPass = R::kRows / 8;
#pragma unroll
  for (int pass = 0; pass < MT / kTilesPerPass; ++pass) {
    const int row_base = pass * R::kRows;
    if (row_base >= m) break;  // uniform across the block
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int tt = 0; tt < kTilesPerPass; ++tt) {
        const int t = pass * kTilesPerPass + tt;
        float* const base = red + (warp * R::kRows + 8 * tt + 2 * tig) * R::kStride + 16 * s + g;
        base[0] = acc[s][t][0];
        base[R::kStride] = acc[s][t][1];
        base[8] = acc[s][t][2];
        base[R::kStride + 8] = acc[s][t][3];
      }
    __syncthreads();
    const int rows = m - row_base < R::kRows ? m - row_base : R::kRows;
    for (int idx = tid; idx < rows * group_cols; idx += kThreads) {
      const int r = idx / group_cols;
      const int c = idx - r * group_cols;  // column inside the group
      const int to = c >> 6;               // tile offset
      const int ch = c & 63;
      float sum = 0.f;
      for (int ph = 0; ph < w.stride; ++ph) sum += red[((ph * gt + to) * R::kRows + r) * R::kStride + ch];
      const int64_t col = col0 + c;
      const int row = row_base + r;
      if (alone) {
        if (col < args.n) out[row * args.n + col] = to_bits16<D>(scale_add_bias<D>(sum, F::template scale<D>(args, col), args.bias, col));
      } else {
        partials[(static_cast<int64_t>(w.split) * m + row) * plan.n_pad + col] = sum;
      }
    }
    __syncthreads();  // `red` is rewritten by the next pass
  }
  if (alone) return;

  // ---- split reduction: the last block of the group to arrive sums the splits in order ----
  __threadfence();  // this thread's partials are visible device-wide before the block reports
  __syncthreads();
  if (tid == 0) {
    const int old = atomicAdd(counters + w.group, 1);
    *last_flag = old == plan.splits - 1 ? 1 : 0;
  }
  __syncthreads();
  if (*last_flag == 0) return;
  __threadfence();
  const int quads = group_cols / 4;
  const int64_t split_stride = static_cast<int64_t>(m) * plan.n_pad;
  for (int idx = tid; idx < m * quads; idx += kThreads) {
    const int row = idx / quads;
    const int c = 4 * (idx - row * quads);
    const float* src = partials + static_cast<int64_t>(row) * plan.n_pad + col0 + c;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int s = 0; s < plan.splits; ++s) {  // loads independent, adds in split order
      const float4 v = __ldcg(reinterpret_cast<const float4*>(src + s * split_stride));
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    const float vals[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t col = col0 + c + e;
      if (col < args.n) out[row * args.n + col] = to_bits16<D>(scale_add_bias<D>(vals[e], F::template scale<D>(args, col), args.bias, col));
    }
  }
}

template <int MT>
QK_DEVICE QK_FORCEINLINE void zero_acc(float (&acc)[4][MT][4]) {
#pragma unroll
  for (int s = 0; s < 4; ++s)
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[s][t][e] = 0.f;
}

// ---- mainloop 1: cp.async rings in shared memory (every format) ----
template <class F, DType D, int MT>
__global__ void __launch_bounds__(kThreads, Config4<F, MT>::kMinBlocks)
    gemv_v4_kernel(const typename F::Args args, const uint16_t* QK_RESTRICT a, uint16_t* QK_RESTRICT out,
                   const Plan4 plan, int* QK_RESTRICT counters, float* QK_RESTRICT partials) {
  using C = Config4<F, MT>;
  extern __shared__ QK_ALIGN(16) uint32_t smem[];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;  // fragment row (channel) / column (activation row)
  const int tig = lane & 3;
  const int m = static_cast<int>(plan.m);
  const int64_t k = args.k;
  const Work4 w = work_of(plan, warp);

  // ---- producer: unit pks of w.tile into the next ring slot ----
  uint32_t* const ring = smem + warp * C::kStages * C::kStageWords;
  const uint64_t policy = l2_evict_first_policy();
  int pks = w.first;
  int left = w.count;
  int fill_slot = 0;
  // Always commits a group (empty past the end) so that the wait count stays uniform.
  auto issue = [&]() {
    if (left > 0) {
      uint32_t* const st = ring + fill_slot * C::kStageWords;
#pragma unroll
      for (int h = 0; h < C::kPiecesPerLane; ++h) {
        const int p = lane + 32 * h;
        bool valid;
        const void* src = F::piece(args, w.tile, pks, p, valid);
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
      pks += w.stride;
      --left;
    }
    cp_async_commit();
    fill_slot = fill_slot + 1 == C::kStages ? 0 : fill_slot + 1;
  };

#pragma unroll
  for (int i = 0; i < C::kStages - 1; ++i) issue();

  float acc[4][MT][4];
  zero_acc<MT>(acc);
  int read_slot = 0;
  for (int i = 0; i < w.count; ++i) {
    cp_async_wait<C::kStages - 2>();  // this lane's copies of the oldest stage have landed
    __syncwarp();                     // ... every lane's; and every lane is done with the previous stage
    issue();                          // refills the previous stage: kStages - 1 units stay in flight
    const uint32_t* const st = ring + read_slot * C::kStageWords;
    read_slot = read_slot + 1 == C::kStages ? 0 : read_slot + 1;
#pragma unroll
    for (int j = 0; j < F::kSteps; ++j) {  // decode one k step at a time: few live fragment registers
      uint32_t af[4][4];
      uint32_t bf[MT][2];
      F::template fragments<D>(st, lane, j, af);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        const int row = 8 * t + g;
        if (row < m) {
          F::b_fragment(st + C::kWeightWords, row, tig, j, bf[t]);
        } else {  // rows past m hold stale data: feed zeros
          bf[t][0] = 0u;
          bf[t][1] = 0u;
        }
      }
#pragma unroll
      for (int s = 0; s < 4; ++s)
#pragma unroll
        for (int t = 0; t < MT; ++t) mma_16816<D>(acc[s][t], af[s], bf[t]);
    }
  }
  cp_async_wait<0>();  // only empty groups remain, but the ring becomes `red` below
  __syncthreads();
  epilogue4<F, D, MT>(acc, w, args, out, plan, counters, partials, reinterpret_cast<float*>(smem),
                      reinterpret_cast<int*>(smem + C::kPoolWords));
}

// ---- mainloop 2: FP8 Marlin straight into registers (M <= 16) ----
// A lane's two 16-byte pieces of a unit are its A fragments, so the weight needs no shared memory:
// each lane keeps kDepth units of its pieces in registers (ld.global.nc, evict-first), issued kDepth
// units before their use, and the B fragments (4 bytes per row tile) come through L1, where the
// block's four warps and the split's other blocks share them. Fewer instructions per byte than the
// cp.async ring (no shared-memory round trip, no per-stage wait/commit); bytes in flight per SM =
// blocks x 4 warps x kDepth KB.
template <int MT>
struct Direct4 {
  static_assert(MT <= 2, "the register ring holds the activations of at most 16 rows");
  static constexpr int kDepth = 4;
  static constexpr int kMinBlocks = MT == 1 ? 4 : 3;
};

template <DType D, int MT>
__global__ void __launch_bounds__(kThreads, Direct4<MT>::kMinBlocks)
    gemv_v4_direct_kernel(const Fp8Marlin::Args args, const uint16_t* QK_RESTRICT a, uint16_t* QK_RESTRICT out,
                          const Plan4 plan, int* QK_RESTRICT counters, float* QK_RESTRICT partials) {
  constexpr int kDepth = Direct4<MT>::kDepth;
  __shared__ QK_ALIGN(16) float red[Red4<MT>::kWords];
  __shared__ int last_flag;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;
  const int tig = lane & 3;
  const int m = static_cast<int>(plan.m);
  const int64_t k = args.k;
  const Work4 w = work_of(plan, warp);
  const uint64_t policy = l2_evict_first_policy();

  // Unit ks of this warp's tile: words 256 tile .. + 255 of packed row ks; lane t reads words 8t .. 8t + 7.
  const uint32_t* const w_lane = args.w + 256 * static_cast<int64_t>(w.tile) + 8 * lane;
  const int64_t row_words = 4 * args.n;
  uint4 wbuf[kDepth][2];
  uint32_t abuf[kDepth][MT][2];
  auto load = [&](int d, int i) {  // unit i of this warp (if any) into slot d
    if (i < w.count) {
      const int ks = w.first + i * w.stride;
      const uint32_t* const src = w_lane + ks * row_words;
      wbuf[d][0] = ld_stream_v4(src, policy);
      wbuf[d][1] = ld_stream_v4(src + 4, policy);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        const int row = 8 * t + g;
        const uint16_t* const ap = a + row * k + 16 * static_cast<int64_t>(ks) + 2 * tig;
        abuf[d][t][0] = row < m ? __ldg(reinterpret_cast<const unsigned int*>(ap)) : 0u;
        abuf[d][t][1] = row < m ? __ldg(reinterpret_cast<const unsigned int*>(ap + 8)) : 0u;
      }
    }
  };
#pragma unroll
  for (int d = 0; d < kDepth; ++d) load(d, d);

  float acc[4][MT][4];
  zero_acc<MT>(acc);
  for (int i0 = 0; i0 < w.count; i0 += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {  // slot d is fixed at compile time: the registers are the ring
      if (i0 + d < w.count) {           // uniform across the warp
        const uint4 w0 = wbuf[d][0];
        const uint4 w1 = wbuf[d][1];
        uint32_t bf[MT][2];
#pragma unroll
        for (int t = 0; t < MT; ++t) {
          bf[t][0] = abuf[d][t][0];
          bf[t][1] = abuf[d][t][1];
        }
        load(d, i0 + d + kDepth);  // refill the slot kDepth units ahead
        uint32_t af[4][4];
        Fp8Marlin::decode<D>(w0, w1, af);
#pragma unroll
        for (int s = 0; s < 4; ++s)
#pragma unroll
          for (int t = 0; t < MT; ++t) mma_16816<D>(acc[s][t], af[s], bf[t]);
      }
    }
  }
  __syncthreads();
  epilogue4<Fp8Marlin, D, MT>(acc, w, args, out, plan, counters, partials, red, &last_flag);
}

}  // namespace gemv
}  // namespace qk
