// FP8 e4m3fn weights in quanto's Marlin layout, M <= 8 (the dispatch sends it M <= 4 by default,
// fp8_gemv_direct.h): the fused product with the weight loaded straight into registers. Same work split and results as the split-K kernel (fp8_gemv.cu), fewer
// instructions per weight byte: at M <= 8 that kernel is issue-bound, not memory-bound (gemv_notes.md).
//
// What it saves per 1 KB weight unit and warp, against the shared-memory ring:
// * no copy into shared memory and back (one 32-byte register load per lane instead of two copies,
//   a wait, a warp barrier and two shared loads);
// * no per-unit activation copy: the block stages its split's activations once, already in the
//   tensor-core B-fragment order, so each unit reads its fragment with one 8-byte shared load;
// * a register ring of kDepth units, unrolled, so no slot index arithmetic.
// On sm_90+ a tile's two K-splits run as one thread-block cluster and sum their partials through
// distributed shared memory: one launch, no fp32 workspace, no second kernel (same summation order as
// the split-K reduce, so the results are bit-identical either way; common/split_grid.cuh).
#include "common/cluster_finish.cuh"
#include "common/split_grid.cuh"
#include "common/splitk_tail.cuh"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "common/scale_perm.cuh"
#include "fp8_marlin/fp8_decode.cuh"
#include "fp8_marlin/fp8_gemv_direct.h"

namespace qk {
namespace {

using namespace fp8;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kDepth = 4;           // weight units (1 KB per warp) in flight per warp
constexpr int kRedStride = 68;      // floats per partial row: rows 2 apart land 8 banks apart
constexpr int kRedBytes = kWarps * 8 * kRedStride * 4;
constexpr int kPartBytes = 8 * 64 * 4;   // a block's summed partials, read by its cluster
constexpr int kFragBytes = 256;     // one 16-k block of 8 activation rows, in B-fragment order

// Dynamic shared memory of a launch whose splits own at most `blocks` 16-row blocks each.
int smem_bytes(int64_t blocks) {
  const int64_t staged = blocks * kFragBytes;
  return static_cast<int>(staged > kRedBytes + kPartBytes ? staged : kRedBytes + kPartBytes);
}

// Stages activation rows 0..7 (zeros past m) of k blocks [kb, kb + blocks) as B fragments of the
// m16n8k16 product: entry (j, lane) holds, for row lane / 4, the k pairs 2 (lane % 4) and that + 8
// of block j. One thread fills the four lanes of one (block, row).
QK_DEVICE QK_FORCEINLINE void stage_activations(uint2* act, const uint16_t* QK_RESTRICT a, int m, int64_t k,
                                                int64_t kb, int blocks) {
  for (int e = static_cast<int>(threadIdx.x); e < blocks * 8; e += kThreads) {
    const int j = e >> 3;
    const int r = e & 7;
    uint4 lo = make_uint4(0u, 0u, 0u, 0u), hi = lo;
    if (r < m) {
      const uint4* src = reinterpret_cast<const uint4*>(a + r * k + 16 * (kb + j));
      lo = src[0];
      hi = src[1];
    }
    uint2* dst = act + j * 32 + r * 4;
    dst[0] = make_uint2(lo.x, hi.x);
    dst[1] = make_uint2(lo.y, hi.y);
    dst[2] = make_uint2(lo.z, hi.z);
    dst[3] = make_uint2(lo.w, hi.w);
  }
}

// One weight unit of the register ring: decode the slot (kNanFree: its group was tested free of NaN
// codes; else tested and fixed here), refill it when `refill` (the load may reuse the decoded words'
// registers), and multiply against the next staged activation fragment.
template <DType D, bool kNanFree>
QK_DEVICE QK_FORCEINLINE void consume_unit(uint4 (&slot)[2], bool refill, const uint8_t*& next, int64_t step,
                                           uint64_t policy, const uint2*& frag, float (&acc)[4][4]) {
  // words[2 * sub + h]: channel 16 * sub + 8h + g of the tile, k 2 * tig + (0, 8, 1, 9).
  const uint32_t words[8] = {slot[0].x, slot[0].y, slot[0].z, slot[0].w, slot[1].x, slot[1].y, slot[1].z, slot[1].w};
  const uint2 bv = *frag;
  frag += kWarps * 32;
  const uint32_t bf[2] = {bv.x, bv.y};
  uint32_t af[4][4];
  if (kNanFree) {
    decode_unit_pairs<D>(words, af);
  } else {
    decode_unit<D>(words, af);
  }
  if (refill) {
    slot[0] = ld_stream_v4(next, policy);
    slot[1] = ld_stream_v4(next + 16, policy);
    next += step;
  }
#pragma unroll
  for (int sub = 0; sub < 4; ++sub) mma_16816<D>(acc[sub], af[sub], bf);
}

// The NaN-code flags of a ring slot (fp8_decode.cuh, unit_nan_flags).
QK_DEVICE QK_FORCEINLINE uint32_t slot_nan_flags(const uint4 (&slot)[2]) {
  const uint32_t words[8] = {slot[0].x, slot[0].y, slot[0].z, slot[0].w, slot[1].x, slot[1].y, slot[1].z, slot[1].w};
  return unit_nan_flags(words);
}

// Work item = (split, 64-channel tile), one per block. Warp w takes the item's 16-row blocks
// w, w + kWarps, ...; lane t holds bytes 32t..32t+31 of each (the same words the split-K kernel's
// lane t reads from its ring), kDepth units ahead. kCluster: the clustered grid of split_grid.cuh.
// At least 5 blocks per SM: the interleaved groups of units would take up to 128 registers, 4 blocks;
// capped at 102 they fit in ~96 without spilling, the occupancy of the unit-by-unit loop.
template <DType D, bool kCluster>
__global__ void __launch_bounds__(kThreads, 5)
    fp8_gemv_direct_kernel(const uint16_t* QK_RESTRICT a, const uint32_t* QK_RESTRICT w,
                           const uint16_t* QK_RESTRICT scales, const uint16_t* QK_RESTRICT bias,
                           uint16_t* QK_RESTRICT out, float* QK_RESTRICT ws,
                           unsigned long long* counters, unsigned long long ticket, int m,
                           int64_t n, int64_t k, int splits) {
  extern __shared__ uint4 smem[];
  uint2* const act = reinterpret_cast<uint2*>(smem);

  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2;
  const int tig = lane & 3;
  const split_grid::Item it = split_grid::item<kCluster>(n / 64);
  const int split = it.split;
  const int64_t c = it.tile;
  const split_grid::Range ks = split_grid::range(k / 16, split, splits);  // this split's 16-row blocks
  const int64_t kb = ks.begin;
  const int blocks = static_cast<int>(ks.count);
  const int count = blocks > warp ? (blocks - warp + kWarps - 1) / kWarps : 0;

  // Weight loads first, so they are in flight while the activations are staged.
  const uint64_t policy = l2_evict_first_policy();
  const int64_t step = static_cast<int64_t>(kWarps) * 16 * n;  // bytes between a warp's units
  const uint8_t* next = reinterpret_cast<const uint8_t*>(w) + (kb + warp) * 16 * n + 1024 * c + 32 * lane;
  uint4 ring[kDepth][2];
#pragma unroll
  for (int d = 0; d < kDepth; ++d) {
    if (d < count) {
      ring[d][0] = ld_stream_v4(next, policy);
      ring[d][1] = ld_stream_v4(next + 16, policy);
      next += step;
    }
  }
  stage_activations(act, a, m, k, kb, blocks);
  __syncthreads();

  float acc[4][4];
#pragma unroll
  for (int s = 0; s < 4; ++s)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[s][e] = 0.f;

  const uint2* frag = act + warp * 32 + lane;
  // Whole groups of kDepth units first, with one NaN test per group: a group is then one straight run
  // of code in which the compiler interleaves the units' decodes, loads and MMAs (a branch per unit, as
  // in the tail below, keeps them in sequence; gemv_notes.md, v10).
  int base = 0;
  for (; base + kDepth <= count; base += kDepth) {
    uint32_t nan_flags = 0;
#pragma unroll
    for (int d = 0; d < kDepth; ++d) nan_flags |= slot_nan_flags(ring[d]);
    if ((nan_flags & 0x80808080u) == 0u) {
#pragma unroll
      for (int d = 0; d < kDepth; ++d)
        consume_unit<D, true>(ring[d], base + d + kDepth < count, next, step, policy, frag, acc);
    } else {  // rare: quanto never produces NaN codes
#pragma unroll
      for (int d = 0; d < kDepth; ++d)
        consume_unit<D, false>(ring[d], base + d + kDepth < count, next, step, policy, frag, acc);
    }
  }
  // The last, partial group: nothing left to load.
#pragma unroll
  for (int d = 0; d < kDepth - 1; ++d) {
    if (base + d >= count) break;  // uniform across the warp
    consume_unit<D, false>(ring[d], false, next, step, policy, frag, acc);
  }
  __syncthreads();  // every warp is done with the staged activations: reuse them for the partials

  // acc[sub] = (channel 16 sub + g, row 2 tig), (same, row + 1), (channel + 8, row), (channel + 8, row + 1).
  float* const red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int sub = 0; sub < 4; ++sub) {
    float* const base = red + (warp * 8 + 2 * tig) * kRedStride + 16 * sub + g;
    base[0] = acc[sub][0];
    base[kRedStride] = acc[sub][1];
    base[8] = acc[sub][2];
    base[kRedStride + 8] = acc[sub][3];
  }
  __syncthreads();
  for (int idx = static_cast<int>(threadIdx.x); idx < m * 64; idx += kThreads) {
    const int r = idx >> 6;
    const int ch = idx & 63;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kWarps; ++j) sum += red[(j * 8 + r) * kRedStride + ch];  // fixed order
    const int64_t col = 64 * c + ch;
    if (kCluster) {
      red[kWarps * 8 * kRedStride + idx] = sum;  // this split's partial, for the cluster to read
    } else if (splits == 1) {
      const float s = bits16_to_float<D>(scales[block32_slot(col)]);
      out[r * n + col] = static_cast<uint16_t>(float_to_bits16<D>(scale_add_bias<D>(sum, s, bias, col)));
    } else {
      ws[(static_cast<int64_t>(split) * m + r) * n + col] = sum;  // unscaled; the last split or the reduce finishes
    }
  }
  if constexpr (kCluster) {
    cluster::finish_tile<D, ScalePerm::Block32>(red + kWarps * 8 * kRedStride, split, splits, m, n, 64 * c, scales, bias,
                                                reinterpret_cast<typename Elem<D>::T*>(out), kThreads);
  } else {
    if (splits > 1 && counters != nullptr) {
      splitk_tail::arrive_and_finish<D, ScalePerm::Block32>(ws, counters, ticket, c, splits, m, n, 64 * c, scales, bias,
                                                            reinterpret_cast<typename Elem<D>::T*>(out), kThreads,
                                                            reinterpret_cast<int*>(smem));
    }
  }
}

template <DType D>
cudaError_t launch_typed(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out, float* ws,
                         int64_t m,
                         int64_t n, int64_t k, int splits, cudaStream_t stream) {
  const int64_t blocks = (k / 16 + splits - 1) / splits;
  const int smem = smem_bytes(blocks);
  const bool clustered =
      split_grid::use_clusters(fp8_gemv_direct_kernel<D, true>, n / 64, splits, "QK_FP8_GEMV_CLUSTER");
  // Eagerly at small M the last split of each tile finishes it in this launch (common/splitk_tail.h).
  const splitk_tail::Tail tail = splitk_tail::plan(ws, splits, m, n, clustered, "QK_FP8_GEMV_FINISH", stream);
  const cudaError_t err = split_grid::launch(
      fp8_gemv_direct_kernel<D, false>, fp8_gemv_direct_kernel<D, true>, clustered, n / 64, splits, kThreads, smem,
      stream, static_cast<const uint16_t*>(a), w, static_cast<const uint16_t*>(scales),
      static_cast<const uint16_t*>(bias), static_cast<uint16_t*>(out), ws, tail.counters, tail.ticket,
      static_cast<int>(m), n, k, splits);
  if (err != cudaSuccess || splits == 1 || clustered || tail.counters != nullptr) return err;
  return launch_splitk_reduce(ws, splits, m, n, scales, ScalePerm::Block32, D, out, stream, bias);
}

}  // namespace

bool fp8_gemv_direct_fits(int64_t m, int64_t n, int64_t k, int splits) {
  if (m < 1 || m > kFp8GemvDirectMaxM || splits < 1 || n < 64) return false;
  const int64_t blocks = (k / 16 + splits - 1) / splits;
  return blocks <= kFp8GemvDirectMaxBlocks && (n / 64) * splits <= 0x7FFFFFFF;
}

cudaError_t launch_fp8_gemv_direct(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                                   float* ws, int64_t m, int64_t n, int64_t k, int splits, DType dt,
                                   cudaStream_t stream) {
  if (!fp8_gemv_direct_fits(m, n, k, splits) || (splits > 1 && ws == nullptr)) return cudaErrorInvalidValue;
  return dt == DType::BF16 ? launch_typed<DType::BF16>(a, w, scales, bias, out, ws, m, n, k, splits, stream)
                           : launch_typed<DType::F16>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
}

}  // namespace qk
