// int8 weights in quanto's own (N, K) layout, M <= 8: the fused product with the weight loaded straight
// into registers, the int8 sibling of the FP8 register-loaded kernel (fp8_gemv_direct.cu).
//
// Block = 64 channels x one K-split; warp w owns channels 16w..16w+15 over the whole split, so no
// partial sums cross warps. A unit is 16 channels x 64 k (1 KB): lane (g, t) loads 16 bytes of channel
// g and 16 of channel g + 8, at k 16t..16t+15 of the unit. The product over k does not care about the
// order of k, so the four tensor-core steps of a unit take their k from those bytes directly: step s
// reads k 16t + 4s..+3 as the fragment's (2t, 2t+1, 2t+8, 2t+9); the activations are staged once per
// block as plain rows, and the same k come out of them with one 16-byte shared load per two steps.
// On sm_90+ a tile's two K-splits run as one cluster (split_grid.cuh, cluster_finish.cuh), as for FP8.
#include "common/balanced_splits.h"
#include "common/cluster_finish.cuh"
#include "common/env.h"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "common/split_grid.cuh"
#include "common/splitk_tail.cuh"
#include "int8/int8_decode.cuh"
#include "int8/int8_gemv_direct.h"

namespace qk {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kDepth = 4;      // units (1 KB per warp) in flight per warp
constexpr int kUnitK = 64;
constexpr int kRowPad = 8;     // activation row stride = span + 8 values: rows 16 bytes apart in banks
constexpr int kPartBytes = 8 * 64 * 4;

int smem_bytes(int64_t units) {
  const int64_t staged = 8 * (units * kUnitK + kRowPad) * 2;
  return static_cast<int>(staged > kPartBytes ? staged : kPartBytes);
}

// Rows 0..7 (zeros past m) of k [k0, k0 + span) as bf16/fp16 rows of `stride` values.
QK_DEVICE QK_FORCEINLINE void stage_rows(uint16_t* act, const uint16_t* QK_RESTRICT a, int m, int64_t k, int64_t k0,
                                         int span, int stride) {
  const int pieces = span / 8;  // 16-byte pieces per row
  for (int e = static_cast<int>(threadIdx.x); e < 8 * pieces; e += kThreads) {
    const int r = e / pieces;
    const int p = e - r * pieces;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < m) v = *reinterpret_cast<const uint4*>(a + r * k + k0 + 8 * p);
    *reinterpret_cast<uint4*>(act + r * stride + 8 * p) = v;
  }
}

// One weight unit of the register ring: decode the slot (channel g and g + 8, 64 k each), refill it
// when `refill` (the load may reuse the decoded words' registers), multiply against the staged rows.
template <DType D>
QK_DEVICE QK_FORCEINLINE void consume_unit(uint4 (&slot)[2], bool refill, const int8_t*& next, int64_t hi_off,
                                           uint64_t policy, const uint16_t*& frag, float (&acc)[2][4]) {
  const uint32_t lo[4] = {slot[0].x, slot[0].y, slot[0].z, slot[0].w};  // channel g
  const uint32_t hi[4] = {slot[1].x, slot[1].y, slot[1].z, slot[1].w};  // channel g + 8
  uint32_t af[4][4];
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    af[s][0] = int8_pair<D>(lo[s], kInt8SelLo);
    af[s][1] = int8_pair<D>(hi[s], kInt8SelLo);
    af[s][2] = int8_pair<D>(lo[s], kInt8SelHi);
    af[s][3] = int8_pair<D>(hi[s], kInt8SelHi);
  }
  if (refill) {
    slot[0] = ld_stream_v4(next, policy);
    slot[1] = ld_stream_v4(next + hi_off, policy);
    next += kUnitK;
  }
  const uint4 b01 = *reinterpret_cast<const uint4*>(frag);      // k 16 tig + 0..7: steps 0, 1
  const uint4 b23 = *reinterpret_cast<const uint4*>(frag + 8);  // k 16 tig + 8..15: steps 2, 3
  frag += kUnitK;
  const uint32_t bf[4][2] = {{b01.x, b01.y}, {b01.z, b01.w}, {b23.x, b23.y}, {b23.z, b23.w}};
#pragma unroll
  for (int s = 0; s < 4; ++s) mma_16816<D>(acc[s & 1], af[s], bf[s]);
}

// At least 5 blocks per SM: the interleaved groups of units would take up to 121 registers (4 blocks);
// capped at 102 they take ~96 without spilling (the unit-by-unit loop took 80, 6 blocks; a cap for 6
// spills here).
template <DType D, bool kCluster>
__global__ void __launch_bounds__(kThreads, 5)
    int8_gemv_direct_kernel(const uint16_t* QK_RESTRICT a, const int8_t* QK_RESTRICT w,
                            const uint16_t* QK_RESTRICT scales, const uint16_t* QK_RESTRICT bias,
                            uint16_t* QK_RESTRICT out, float* QK_RESTRICT ws,
                            unsigned long long* counters, unsigned long long ticket, int m,
                            int64_t n, int64_t k, int splits) {
  extern __shared__ uint4 smem[];
  uint16_t* const act = reinterpret_cast<uint16_t*>(smem);

  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2;
  const int tig = lane & 3;
  const split_grid::Item it = split_grid::item<kCluster>(n / 64);
  const int split = it.split;
  const int64_t c = it.tile;
  const split_grid::Range ks = split_grid::range(k / kUnitK, split, splits);  // this split's k units
  const int64_t u0 = ks.begin;
  const int units = static_cast<int>(ks.count);
  const int stride = units * kUnitK + kRowPad;

  // Weight loads first, in flight while the activations are staged.
  const uint64_t policy = l2_evict_first_policy();
  const int64_t ch = 64 * c + 16 * warp + g;
  const int8_t* next = w + ch * k + kUnitK * u0 + 16 * tig;
  const int64_t hi_off = 8 * k;  // channel g + 8
  uint4 ring[kDepth][2];
#pragma unroll
  for (int d = 0; d < kDepth; ++d) {
    if (d < units) {
      ring[d][0] = ld_stream_v4(next, policy);
      ring[d][1] = ld_stream_v4(next + hi_off, policy);
      next += kUnitK;
    }
  }
  stage_rows(act, a, m, k, kUnitK * u0, units * kUnitK, stride);
  __syncthreads();

  float acc[2][4];
#pragma unroll
  for (int p = 0; p < 2; ++p)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[p][e] = 0.f;

  const uint16_t* frag = act + g * stride + 16 * tig;  // row g, k 16 tig of unit 0
  // Whole groups of kDepth units first: no branch between a group's units, so the compiler interleaves
  // their decodes, loads and MMAs (a branch per unit, as in the tail, keeps them in sequence;
  // gemv_notes.md, v10).
  int base = 0;
  for (; base + kDepth <= units; base += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d)
      consume_unit<D>(ring[d], base + d + kDepth < units, next, hi_off, policy, frag, acc);
  }
  // The last, partial group: nothing left to load.
#pragma unroll
  for (int d = 0; d < kDepth - 1; ++d) {
    if (base + d >= units) break;  // uniform across the block
    consume_unit<D>(ring[d], false, next, hi_off, policy, frag, acc);
  }

  // acc: (channel g, row 2 tig), (g, row 2 tig + 1), (g + 8, row 2 tig), (g + 8, row 2 tig + 1).
  const float v[4] = {acc[0][0] + acc[1][0], acc[0][1] + acc[1][1], acc[0][2] + acc[1][2], acc[0][3] + acc[1][3]};
  if constexpr (kCluster) {
    __syncthreads();  // every warp is done with the staged activations: reuse them for the partials
    float* const part = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = 2 * tig + (e & 1);
      if (row < m) part[row * 64 + 16 * warp + g + 8 * (e >> 1)] = v[e];
    }
    cluster::finish_tile<D, ScalePerm::None>(part, split, splits, m, n, 64 * c, scales, bias,
                                             reinterpret_cast<typename Elem<D>::T*>(out), kThreads);
  } else {
    auto* const o = reinterpret_cast<typename Elem<D>::T*>(out);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = 2 * tig + (e & 1);
      const int64_t col = ch + 8 * (e >> 1);
      if (row >= m) continue;
      if (splits == 1) {
        o[row * n + col] = Elem<D>::from_float(scale_add_bias<D>(v[e], bits16_to_float<D>(scales[col]), bias, col));
      } else {
        ws[(static_cast<int64_t>(split) * m + row) * n + col] = v[e];  // unscaled; the last split or the reduce finishes
      }
    }
    if (splits > 1 && counters != nullptr) {
      splitk_tail::arrive_and_finish<D, ScalePerm::None>(ws, counters, ticket, c, splits, m, n, 64 * c, scales, bias,
                                                         o, kThreads, reinterpret_cast<int*>(smem));
    }
  }
}

template <DType D>
cudaError_t launch_typed(const void* a, const int8_t* w, const void* scales, const void* bias, void* out, float* ws,
                         int64_t m, int64_t n, int64_t k, int splits, cudaStream_t stream) {
  const int64_t units = (k / kUnitK + splits - 1) / splits;
  const int smem = smem_bytes(units);
  const auto* a16 = static_cast<const uint16_t*>(a);
  const auto* s16 = static_cast<const uint16_t*>(scales);
  const auto* b16 = static_cast<const uint16_t*>(bias);
  auto* o16 = static_cast<uint16_t*>(out);
  const bool clustered =
      split_grid::use_clusters(int8_gemv_direct_kernel<D, true>, n / 64, splits, "QK_INT8_GEMV_CLUSTER");
  // Eagerly at small M the last split of each tile finishes it in this launch (common/splitk_tail.h).
  const splitk_tail::Tail tail = splitk_tail::plan(ws, splits, m, n, clustered, "QK_INT8_GEMV_FINISH", stream);
  const cudaError_t err =
      split_grid::launch(int8_gemv_direct_kernel<D, false>, int8_gemv_direct_kernel<D, true>, clustered, n / 64,
                         splits, kThreads, smem, stream, a16, w, s16, b16, o16, ws, tail.counters, tail.ticket,
                         static_cast<int>(m), n, k, splits);
  if (err != cudaSuccess || splits == 1 || clustered || tail.counters != nullptr) return err;
  return launch_splitk_reduce(ws, splits, m, n, scales, ScalePerm::None, D, out, stream, bias);
}

}  // namespace

bool int8_gemv_direct_fits(int64_t m, int64_t n, int64_t k) {
  return m >= 1 && m <= kInt8GemvDirectMaxM && n >= 64 && n % 64 == 0 && k >= kUnitK && k % kUnitK == 0 &&
         k <= kMaxSplits * kInt8GemvDirectMaxSpanK && n / 64 * kMaxSplits <= 0x7FFFFFFF;
}

int plan_int8_gemv_direct_splits(int64_t m, int64_t n, int64_t k, int sm_count) {
  const int64_t k_units = k / kUnitK;
  // Each split stages its activations (8 rows x its k span) in shared memory: at most kMaxSpanK.
  const int min_splits = static_cast<int>((k + kInt8GemvDirectMaxSpanK - 1) / kInt8GemvDirectMaxSpanK);
  const int forced_per_sm = env_int("QK_INT8_GEMV_BLOCKS_PER_SM", 0);
  if (forced_per_sm > 0) {  // tests and benchmarks: about that many blocks per SM
    return plan_splits(m, n / 64, k_units, sm_count, forced_per_sm, min_splits);
  }
  // A (tile, K unit) is 64 channels x kUnitK bytes of weight.
  return plan_balanced_splits(n / 64, k_units, sm_count, min_splits, kMaxSplits,
                              SplitCost{64 * kUnitK, kBlockCostBytes, kFinishCostBytes});
}

bool int8_gemv_direct_balanced(int64_t n, int splits, int sm_count) {
  const int64_t ctas = (n / 64) * splits;
  if (ctas <= 0 || sm_count <= 0) return false;
  const int64_t per_sm = (ctas + sm_count - 1) / sm_count;  // blocks on the busiest SM
  return per_sm * sm_count * 10 <= ctas * 11;
}

cudaError_t launch_int8_gemv_direct(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                                    float* ws, int64_t m, int64_t n, int64_t k, int splits, DType dt,
                                    cudaStream_t stream) {
  if (!int8_gemv_direct_fits(m, n, k) || splits < 1 || splits > k / kUnitK ||
      (k / kUnitK + splits - 1) / splits * kUnitK > kInt8GemvDirectMaxSpanK || (splits > 1 && ws == nullptr)) {
    return cudaErrorInvalidValue;
  }
  return dt == DType::BF16 ? launch_typed<DType::BF16>(a, w, scales, bias, out, ws, m, n, k, splits, stream)
                           : launch_typed<DType::F16>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
}

}  // namespace qk
