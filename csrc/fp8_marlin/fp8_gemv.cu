// FP8 e4m3fn weights in quanto's Marlin layout (docs/layouts.md, "FP8 Marlin layout"): the fused
// small-M product, split-K over a grid planned from the SM count, finished by the shared split-K
// reduction. launch_fp8_gemv sends M <= 4 to the register-loaded kernel (fp8_gemv_direct.cu) where it
// fits; this shared-memory ring kernel serves the rest (measured on H200: faster than the stream-K GEMV
// engine, csrc/gemv/, at every M it serves; benchmarks/results/gemv_notes.md).
#include "common/balanced_splits.h"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "common/scale_perm.cuh"
#include "common/split_grid.cuh"
#include "common/env.h"
#include "fp8_marlin/fp8_decode.cuh"
#include "fp8_marlin/fp8_gemv_direct.h"

namespace qk {
namespace {

using namespace fp8;

// ---- fused small-M product --------------------------------------------------------------------
//
// Work item = (split, 64-channel tile). A CTA of kGemvWarps warps owns one item at a time; warp
// j takes the item's 16-row blocks kb + j, kb + j + kGemvWarps, ... Each warp streams its blocks
// through a private kGemvStages-deep cp.async ring in shared memory (1 KB of weights plus the
// matching 16 k of every activation row per stage), so several KB per warp are in flight without
// holding them in registers. Per block, lane t reads its 8 words, converts them to the four A
// fragments of the four 16-channel sub-tiles, and runs 4 * MT mma (MT = activation row tiles of
// 8; MT = 1, 2, 4, 8 covers M <= 64). The warps' fp32 partials are then summed through shared
// memory in a fixed order, 16 activation rows at a time (bounded shared memory for any MT).

// Activation row tiles of 8 for m rows: 1, 2, 4 or 8 (m <= kMaxFp8GemvM).
inline int gemv_row_tiles(int64_t m) { return m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8; }

constexpr int kGemvWarps = 4;
constexpr int kGemvThreads = kGemvWarps * 32;
constexpr int kGemvStages = 4;
constexpr int kRedStride = 68;  // floats per partial row: 2 rows apart land 8 banks apart
// CTAs per SM that the register budget (65536 per SM) must allow: 7 with one activation row tile
// (72 registers; 6 from sm_100 on, where ptxas needs a few more), 5 with two (96). plan_splits
// asks for a few CTAs per SM plus rounding, so more resident CTAs keep more grids in a single wave;
// on H100 a second wave cost 15-30% (e.g. M = 16 at 120 registers, 4 CTAs per SM).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1000
constexpr int kGemvMinBlocksOneTile = 6;
#else
constexpr int kGemvMinBlocksOneTile = 7;
#endif
// MT = 4 and 8 hold 64 and 128 fp32 accumulators per thread: 3 and 2 CTAs per SM.
template <int MT>
struct GemvOccupancy {
  static constexpr int kMinBlocks = MT == 1 ? kGemvMinBlocksOneTile : MT == 2 ? 5 : MT == 4 ? 3 : 2;
};

template <int MT>
struct GemvShape {
  static constexpr int kActWords = MT * 8 * 8;  // MT*8 rows x 16 k of 16-bit values
  static constexpr int kStageWords = 256 + kActWords;
  static constexpr int kPipeWords = kGemvWarps * kGemvStages * kStageWords;
  static constexpr int kRedRows = MT < 2 ? MT * 8 : 16;  // activation rows reduced per pass
  static constexpr int kRedWords = kGemvWarps * kRedRows * kRedStride;
  static constexpr int kActCopies = MT < 2 ? 1 : MT / 2;  // 16-byte activation pieces per lane per stage
  static constexpr int kSmemWords = kPipeWords > kRedWords ? kPipeWords : kRedWords;
};

// Position (in 16-byte pieces) of weight piece p (words 4p..4p+3) inside a stage. Lane t reads
// pieces 2t and 2t+1; flipping bit 0 for pieces 8..15 of each 16 spreads the eight lanes of a
// quarter warp over all 32 banks.
QK_DEVICE QK_FORCEINLINE int w_piece(int p) { return p ^ ((p >> 3) & 1); }
// Word offset of half `half` (k 0..7 or 8..15) of activation row `row` inside the activation part
// of a stage; rows 4..7 of each 8 swap their halves so that rows g and g + 4 use different banks.
QK_DEVICE QK_FORCEINLINE int a_word(int row, int half) { return row * 8 + 4 * (half ^ ((row >> 2) & 1)); }

template <DType D, int MT>
__global__ void __launch_bounds__(kGemvThreads, GemvOccupancy<MT>::kMinBlocks)
    fp8_gemv_kernel(const uint16_t* QK_RESTRICT a, const uint32_t* QK_RESTRICT w,
                    const uint16_t* QK_RESTRICT scales, const uint16_t* QK_RESTRICT bias, uint16_t* QK_RESTRICT out,
                    float* QK_RESTRICT ws, int m,
                    int64_t n, int64_t k, int splits) {
  using Shape = GemvShape<MT>;
  __shared__ QK_ALIGN(16) uint32_t smem[Shape::kSmemWords];

  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2;  // mma group: fragment row (channel) / column (activation row)
  const int tig = lane & 3;
  const int64_t k_blocks = k / 16;
  const int64_t row_words = 4 * n;
  const int64_t col_tiles = n / 64;
  const int64_t items = col_tiles * splits;
  uint32_t* const ring = smem + warp * kGemvStages * Shape::kStageWords;

  // Activation pieces this lane copies per stage: piece lane + 32j is row (lane + 32j)/2, k half lane%2.
  const int a_half = lane & 1;

  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int split = static_cast<int>(item / col_tiles);
    const int64_t c = item - static_cast<int64_t>(split) * col_tiles;
    const split_grid::Range ks = split_grid::range(k_blocks, split, splits);  // non-empty: splits <= K/16
    const int64_t kb = ks.begin;
    const int64_t ke = ks.begin + ks.count;
    const int64_t first = kb + warp;
    const int64_t count = first < ke ? (ke - first + kGemvWarps - 1) / kGemvWarps : 0;
    const uint32_t* const w_tile = w + 256 * c;

    // Unit u (block first + u * kGemvWarps) goes to ring slot u % kGemvStages. The sources advance one
    // unit per issue and the slots rotate, so the loop does no 64-bit index arithmetic per unit. Always
    // commits a group (possibly empty) so that the wait count below stays uniform at the tail.
    const int units = static_cast<int>(count);
    const uint32_t ring_s = shared_addr(ring);
    const uint32_t w_dst0 = ring_s + 16 * w_piece(lane), w_dst1 = ring_s + 16 * w_piece(lane + 32);
    const uint32_t* w_src = w_tile + first * row_words + 4 * lane;
    const int64_t w_step = kGemvWarps * row_words;
    const uint16_t* a_src[Shape::kActCopies];
    uint32_t a_dst[Shape::kActCopies];
    bool a_live[Shape::kActCopies];
#pragma unroll
    for (int j = 0; j < Shape::kActCopies; ++j) {
      const int a_row = (lane >> 1) + 16 * j;
      a_live[j] = a_row < m && a_row < MT * 8;
      a_src[j] = a + static_cast<int64_t>(a_live[j] ? a_row : 0) * k + 16 * first + 8 * a_half;
      a_dst[j] = ring_s + 4 * (256 + a_word(a_row, a_half));
    }
    int issued = 0, issue_slot = 0;
    auto issue = [&]() {
      if (issued < units) {
        const uint32_t off = static_cast<uint32_t>(issue_slot) * (4 * Shape::kStageWords);
        cp_async16(w_dst0 + off, w_src);
        cp_async16(w_dst1 + off, w_src + 128);
        w_src += w_step;
#pragma unroll
        for (int j = 0; j < Shape::kActCopies; ++j) {
          if (a_live[j]) cp_async16(a_dst[j] + off, a_src[j]);
          a_src[j] += 16 * kGemvWarps;
        }
        issue_slot = issue_slot == kGemvStages - 1 ? 0 : issue_slot + 1;
        ++issued;
      }
      cp_async_commit();
    };

    float acc[4][MT][4];
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[s][t][e] = 0.f;

#pragma unroll
    for (int i = 0; i < kGemvStages - 1; ++i) issue();

    int read_slot = 0;
    for (int i = 0; i < units; ++i) {
      cp_async_wait<kGemvStages - 2>();  // this lane's copies for stage i have landed
      __syncwarp();                      // ... and every lane's; also: all reads of stage i-1 are done
      const uint32_t* const st = ring + read_slot * Shape::kStageWords;
      read_slot = read_slot == kGemvStages - 1 ? 0 : read_slot + 1;
      const uint4 w0 = *reinterpret_cast<const uint4*>(st + 4 * w_piece(2 * lane));
      const uint4 w1 = *reinterpret_cast<const uint4*>(st + 4 * w_piece(2 * lane + 1));
      uint32_t bf[MT][2];
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        const int row = 8 * t + g;
        const bool live = row < m;  // rows past m may hold stale data: feed zeros instead
        bf[t][0] = live ? st[256 + a_word(row, 0) + tig] : 0u;
        bf[t][1] = live ? st[256 + a_word(row, 1) + tig] : 0u;
      }
      issue();  // unit i + kGemvStages - 1: refills the stage read in iteration i - 1

      // words[2 * sub + h]: channel 16 * sub + 8h + g of the tile, rows 2 * tig + (0, 8, 1, 9).
      const uint32_t words[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
      uint32_t af[4][4];
      decode_unit<D>(words, af);
#pragma unroll
      for (int sub = 0; sub < 4; ++sub)
#pragma unroll
        for (int t = 0; t < MT; ++t) mma_16816<D>(acc[sub][t], af[sub], bf[t]);
    }
    cp_async_wait<0>();  // only empty groups remain, but the ring is reused below
    __syncthreads();     // every warp is done with its ring: reuse it for the partials

    // acc[sub][t] = (channel 16 sub + g, row 8t + 2tig), (same, row + 1), (channel + 8, row),
    // (channel + 8, row + 1). Pass p reduces activation rows [kRedRows p, kRedRows (p + 1)).
    float* const red = reinterpret_cast<float*>(smem);
    constexpr int kTilesPerPass = Shape::kRedRows / 8;
#pragma unroll
    for (int pass = 0; pass < MT / kTilesPerPass; ++pass) {
      const int row_base = pass * Shape::kRedRows;
      if (row_base >= m) break;  // uniform across the CTA
      if (pass > 0) __syncthreads();  // the previous pass has read `red`
#pragma unroll
      for (int sub = 0; sub < 4; ++sub)
#pragma unroll
        for (int tt = 0; tt < kTilesPerPass; ++tt) {
          const int t = pass * kTilesPerPass + tt;
          float* const base = red + (warp * Shape::kRedRows + 8 * tt + 2 * tig) * kRedStride + 16 * sub + g;
          base[0] = acc[sub][t][0];
          base[kRedStride] = acc[sub][t][1];
          base[8] = acc[sub][t][2];
          base[kRedStride + 8] = acc[sub][t][3];
        }
      __syncthreads();

      const int rows = m - row_base < Shape::kRedRows ? m - row_base : Shape::kRedRows;
      for (int idx = static_cast<int>(threadIdx.x); idx < rows * 64; idx += kGemvThreads) {
        const int r = idx >> 6;
        const int ch = idx & 63;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kGemvWarps; ++j) sum += red[(j * Shape::kRedRows + r) * kRedStride + ch];  // fixed order
        const int64_t col = 64 * c + ch;
        const int row = row_base + r;
        if (splits == 1) {
          const float s = bits16_to_float<D>(scales[block32_slot(col)]);
          out[row * n + col] = static_cast<uint16_t>(float_to_bits16<D>(scale_add_bias<D>(sum, s, bias, col)));
        } else {
          ws[(static_cast<int64_t>(split) * m + row) * n + col] = sum;  // unscaled; the reduce finishes
        }
      }
    }
    __syncthreads();  // the next item refills the ring
  }
}

template <DType D, int MT>
cudaError_t launch_gemv_typed(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                              float* ws, int64_t m,
                              int64_t n, int64_t k, int splits, cudaStream_t stream) {
  const int64_t items = (n / 64) * splits;
  int64_t blocks = items;
  if (blocks > 0x7FFFFFFF) blocks = 0x7FFFFFFF;  // grid-stride loop covers the rest
  fp8_gemv_kernel<D, MT><<<static_cast<unsigned>(blocks), kGemvThreads, 0, stream>>>(
      static_cast<const uint16_t*>(a), w, static_cast<const uint16_t*>(scales), static_cast<const uint16_t*>(bias),
      static_cast<uint16_t*>(out), ws,
      static_cast<int>(m), n, k, splits);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  return launch_splitk_reduce(ws, splits, m, n, scales, ScalePerm::Block32, D, out, stream, bias);
}

template <DType D>
cudaError_t launch_gemv_dtype(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                              float* ws, int64_t m,
                              int64_t n, int64_t k, int splits, cudaStream_t stream) {
  switch (gemv_row_tiles(m)) {
    case 1: return launch_gemv_typed<D, 1>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
    case 2: return launch_gemv_typed<D, 2>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
    case 4: return launch_gemv_typed<D, 4>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
    default: return launch_gemv_typed<D, 8>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
  }
}

// Which kernel serves m rows: the register-loaded one at M <= kFp8GemvDirectDefaultM (where it fits),
// the shared-memory ring above. QK_FP8_GEMV_KERNEL=ring or =direct (tests and benchmarks, read at every
// plan and launch) forces one: direct up to the kernel's kFp8GemvDirectMaxM rows.
bool fp8_gemv_wants_direct(int64_t m) {
  const char* v = env_get("QK_FP8_GEMV_KERNEL");
  if (v != nullptr && v[0] == 'r') return false;
  if (v != nullptr && v[0] == 'd') return m <= kFp8GemvDirectMaxM;
  return m <= kFp8GemvDirectDefaultM;
}

}  // namespace

cudaError_t launch_fp8_gemv(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                            float* ws, int64_t m,
                            int64_t n, int64_t k, int splits, DType dt, cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0) return cudaSuccess;
  if (m > kMaxFp8GemvM || splits < 1 || (splits > 1 && ws == nullptr)) return cudaErrorInvalidValue;
  if (fp8_gemv_wants_direct(m) && fp8_gemv_direct_fits(m, n, k, splits))
    return launch_fp8_gemv_direct(a, w, scales, bias, out, ws, m, n, k, splits, dt, stream);
  return dt == DType::BF16 ? launch_gemv_dtype<DType::BF16>(a, w, scales, bias, out, ws, m, n, k, splits, stream)
                           : launch_gemv_dtype<DType::F16>(a, w, scales, bias, out, ws, m, n, k, splits, stream);
}

int plan_fp8_gemv_splits(int64_t m, int64_t n, int64_t k, int sm_count) {
  // Column unit: one 64-channel tile (1 KB of weight per 16-row block); K unit: one 16-row block.
  const int64_t col_tiles = n / 64;
  const int64_t k_units = k / 16;
  // The register-loaded kernel stages a split's activations: at most kFp8GemvDirectMaxBlocks K units
  // each (past 16 splits' worth it does not fit and the ring runs).
  const int min_splits = fp8_gemv_wants_direct(m)
                             ? static_cast<int>((k_units + kFp8GemvDirectMaxBlocks - 1) / kFp8GemvDirectMaxBlocks)
                             : 1;
  const int forced_per_sm = env_int("QK_FP8_GEMV_BLOCKS_PER_SM", 0);
  const int tiles = gemv_row_tiles(m);
  if (forced_per_sm > 0 || tiles > 2) {
    // Forced (tests and benchmarks), or M > 16 (not swept): about that many blocks per SM, what the
    // register budget keeps resident (GemvOccupancy), capped at 4.
    const int per_sm = forced_per_sm > 0 ? forced_per_sm : tiles == 4 ? 3 : 2;
    return plan_splits(m, col_tiles, k_units, sm_count, per_sm, min_splits);
  }
  return plan_balanced_splits(col_tiles, k_units, sm_count, min_splits, kMaxSplits,
                              SplitCost{1024, kBlockCostBytes, kFinishCostBytes});
}

}  // namespace qk
