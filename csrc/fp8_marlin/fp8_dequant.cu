// FP8 (e4m3fn) Marlin weights, (K/16, 4N) int32: dequantization to a natural (N, K) matrix and
// the fused small-M product.
//
// Layout reminder (spec section 5): the 256 words of block (kt, c) cover columns 64c..64c+63 and
// rows 16kt..16kt+15; word 8t + 2w + h holds column 64c + 16w + 8h + t/4 at rows
// 16kt + 2(t%4) + (0, 8, 1, 9), one code per byte. For lane t of a warp, bytes (0, 2) of word
// (w, h) are the (k, k+1) pair and bytes (1, 3) the (k+8, k+9) pair of an m16n8k16 fragment whose
// 16 rows are the columns 64c + 16w + (0..15). The fused kernel therefore uses the weight as the
// mma A operand (16 channels x 16 k) and the activations as the B operand (16 k x 8 rows of a).
#include "launchers.h"
#include "numeric.cuh"
#include "scale_perm.cuh"

namespace qk {
namespace {

// ---- PTX wrappers (sm_80+: cp.async and mma.sync m16n8k16) ------------------------------

QK_DEVICE QK_FORCEINLINE uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1 (each weight byte is used once).
QK_DEVICE QK_FORCEINLINE void cp_async16(uint32_t dst, const void* src) {
  QK_ASM_VOLATILE("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
QK_DEVICE QK_FORCEINLINE void cp_async_commit() { QK_ASM_VOLATILE("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
QK_DEVICE QK_FORCEINLINE void cp_async_wait() {
  QK_ASM_VOLATILE("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// acc += A(16x16, row) * B(16x8, col), fp32 accumulation.
template <DType D>
QK_DEVICE QK_FORCEINLINE void mma_16816(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (D == DType::F16) {
    QK_ASM_VOLATILE(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    QK_ASM_VOLATILE(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// ---- fp8 -> packed 16-bit pairs -----------------------------------------------------------

// __byte_perm selectors placing two bytes of a word at bits 8..15 and 24..31 (zeros elsewhere):
// bytes (0, 2) give the (k, k+1) pair, bytes (1, 3) the (k+8, k+9) pair.
constexpr uint32_t kSelLo = 0x2404u;
constexpr uint32_t kSelHi = 0x3414u;

// Two e4m3fn codes -> two exact fp16/bf16 values (low half = first code). The 7 exponent+mantissa
// bits are placed under the target's exponent field and the product with 2^(bias difference)
// rebiases them exactly, subnormal codes included (spec 6.3). The NaN codes come out as +-480
// here; fix_nan_pair turns them into NaN to match fp8e4m3_to_float.
template <DType D, uint32_t kSel>
QK_DEVICE QK_FORCEINLINE uint32_t fp8_pair(uint32_t x) {
  const uint32_t y = __byte_perm(x, 0u, kSel);
  uint32_t r;
  if constexpr (D == DType::F16) {
    const uint32_t v = (y & 0x80008000u) | ((y >> 1) & 0x3F803F80u);
    QK_ASM("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(v), "r"(0x5C005C00u));  // x 2^8
  } else {
    const uint32_t v = (y & 0x80008000u) | ((y >> 4) & 0x07F007F0u);
    // x 2^120; adding -0 keeps the sign of zero products (sm_80 has no bf16x2 mul).
    QK_ASM("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(v), "r"(0x7B807B80u), "r"(0x80008000u));
  }
  return r;
}

// Sets the halves whose code is 0x7F / 0xFF to a quiet NaN of the same sign (480 | NaN bits).
template <DType D, uint32_t kSel>
QK_DEVICE QK_FORCEINLINE uint32_t fix_nan_pair(uint32_t r, uint32_t x) {
  const uint32_t y = __byte_perm(x, 0u, kSel) & 0x7F007F00u;
  const uint32_t is_nan = __vcmpeq2(y, 0x7F007F00u);
  return r | (is_nan & (D == DType::F16 ? 0x7E007E00u : 0x7FC07FC0u));
}

// Nonzero iff some byte of x is a NaN code: (b & 0x7F) + 1 reaches bit 7 only for 0x7F.
QK_DEVICE QK_FORCEINLINE uint32_t nan_bytes(uint32_t x) { return (x & 0x7F7F7F7Fu) + 0x01010101u; }

// Two exact 16-bit values times a pair of scales, rounded once (fp16: mul; bf16: fma with -0, as
// sm_80 has no bf16x2 mul and -0 keeps the sign of zero products).
template <DType D>
QK_DEVICE QK_FORCEINLINE uint32_t scale_pair(uint32_t v, uint32_t s2) {
  uint32_t r;
  if constexpr (D == DType::F16) {
    QK_ASM("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(v), "r"(s2));
  } else {
    QK_ASM("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(v), "r"(s2), "r"(0x80008000u));
  }
  return r;
}

template <DType D>
QK_DEVICE QK_FORCEINLINE uint32_t float_to_bits16(float v);
template <>
QK_DEVICE QK_FORCEINLINE uint32_t float_to_bits16<DType::F16>(float v) {
  return __half_as_ushort(__float2half_rn(v));
}
template <>
QK_DEVICE QK_FORCEINLINE uint32_t float_to_bits16<DType::BF16>(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// ---- dequantization -------------------------------------------------------------------------
//
// One CTA handles a tile of 64 channels x kDqKt 16-row blocks (128 k). Reads: each thread takes
// 16 contiguous bytes of a 1 KB block (fully coalesced), decodes and scales them in fp32, and
// scatters the 16 resulting values into a [channel][k] tile in shared memory. Writes: each row
// of the tile is 256 contiguous bytes of the output, stored with 16-byte vector stores.

constexpr int kDqKt = 8;
constexpr int kDqThreads = 256;
constexpr int kDqLoads = kDqKt * 64 / kDqThreads;  // 16-byte loads per thread per tile
// Words (bf16/fp16 pairs) per tile row: 64 pairs plus 4 of padding, so that the scatter (rows
// 8 apart map 4 banks apart) is conflict-free together with the XOR below.
constexpr int kDqRowWords = kDqKt * 8 + 4;

// Rows 32..63 of the tile store their pairs with word index ^ 16: the scatter of one warp
// touches rows r and r + 32 at the same word, which the padding alone would map to one bank.
QK_DEVICE QK_FORCEINLINE int dq_word(int row, int pair) { return row * kDqRowWords + (pair ^ ((row & 32) >> 1)); }

template <DType D>
__global__ void __launch_bounds__(kDqThreads)
    fp8_dequant_kernel(const uint32_t* QK_RESTRICT w, const uint16_t* QK_RESTRICT scales,
                       uint16_t* QK_RESTRICT out, int64_t n, int64_t k) {
  __shared__ QK_ALIGN(16) uint32_t tile[64 * kDqRowWords];
  __shared__ uint32_t tile_scale[64];
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t k_blocks = k / 16;
  const int64_t col_tiles = n / 64;
  const int64_t tiles = col_tiles * ((k_blocks + kDqKt - 1) / kDqKt);
  const int64_t row_words = 4 * n;

  for (int64_t tix = blockIdx.x; tix < tiles; tix += gridDim.x) {
    // Channel tile fastest: neighbouring CTAs read neighbouring 1 KB blocks of one packed row.
    const int64_t kq = tix / col_tiles;
    const int64_t c = tix - kq * col_tiles;
    const int64_t kt0 = kq * kDqKt;
    const int nkt = static_cast<int>(k_blocks - kt0 < kDqKt ? k_blocks - kt0 : kDqKt);

    // The scale as a pair of identical 16-bit values: a (k, k+1) pair shares its channel.
    if (tid < 64) {
      const uint32_t sb = scales[block32_slot(64 * c + tid)];
      tile_scale[tid] = sb | (sb << 16);
    }

    // Issue all loads before decoding so that they are in flight together.
    uint4 v[kDqLoads];
#pragma unroll
    for (int i = 0; i < kDqLoads; ++i) {
      const int l = tid + kDqThreads * i;
      const int kl = l >> 6;  // 16-row block inside the tile
      const int q = l & 63;   // 16-byte piece inside the 1 KB block: words 4q..4q+3
      v[i] = make_uint4(0u, 0u, 0u, 0u);
      if (kl < nkt) v[i] = __ldg(reinterpret_cast<const uint4*>(w + (kt0 + kl) * row_words + 256 * c + 4 * q));
    }
    __syncthreads();  // tile_scale ready

#pragma unroll
    for (int i = 0; i < kDqLoads; ++i) {
      const int l = tid + kDqThreads * i;
      const int kl = l >> 6;
      const int q = l & 63;
      if (kl < nkt) {
        // Word 4q + r is word 8t + 2w + h with t = q/2, 2w + h = 4(q%2) + r: channel
        // 16w + 8h + t/4 = 32(q%2) + 8r + q/8, rows 16kl + 2(t%4) + (0, 8, 1, 9).
        const int pair = 8 * kl + ((q >> 1) & 3);  // k/2 of the (k, k+1) pair inside the tile row
        const int row0 = 32 * (q & 1) + (q >> 3);
        const uint32_t words[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
        const uint32_t any_nan = nan_bytes(words[0]) | nan_bytes(words[1]) | nan_bytes(words[2]) | nan_bytes(words[3]);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int row = row0 + 8 * r;
          const uint32_t s2 = tile_scale[row];
          const uint32_t x = words[r];
          // Exact 16-bit values of the codes times the scale: one rounding of the exact product,
          // the same result as the fp32 product rounded to the output type (both are exact in fp32).
          uint32_t lo = scale_pair<D>(fp8_pair<D, kSelLo>(x), s2);  // (k, k+1)
          uint32_t hi = scale_pair<D>(fp8_pair<D, kSelHi>(x), s2);  // (k+8, k+9)
          if ((any_nan & 0x80808080u) != 0u) {  // rare: quanto never produces NaN codes
            lo = fix_nan_pair<D, kSelLo>(lo, x);
            hi = fix_nan_pair<D, kSelHi>(hi, x);
          }
          tile[dq_word(row, pair)] = lo;
          tile[dq_word(row, pair + 4)] = hi;
        }
      }
    }
    __syncthreads();  // tile complete

    // Each tile row is 16 * nkt consecutive outputs: 2 * nkt pieces of 16 bytes.
    const int pieces = 2 * nkt;
    for (int idx = tid; idx < 64 * pieces; idx += kDqThreads) {
      const int row = idx / pieces;
      const int p = idx - row * pieces;
      const uint4 val = *reinterpret_cast<const uint4*>(&tile[dq_word(row, 4 * p)]);
      *reinterpret_cast<uint4*>(out + (64 * c + row) * k + 16 * kt0 + 8 * p) = val;
    }
    __syncthreads();  // tile and tile_scale are rewritten by the next iteration
  }
}

template <DType D>
cudaError_t launch_dequant_typed(const uint32_t* w, const void* scales, void* out, int64_t n, int64_t k,
                                 cudaStream_t stream) {
  const int64_t tiles = (n / 64) * ((k / 16 + kDqKt - 1) / kDqKt);
  if (tiles <= 0) return cudaSuccess;
  int64_t blocks = tiles;
  if (blocks > (int64_t(1) << 22)) blocks = int64_t(1) << 22;  // grid-stride loop covers the rest
  fp8_dequant_kernel<D><<<static_cast<unsigned>(blocks), kDqThreads, 0, stream>>>(
      w, static_cast<const uint16_t*>(scales), static_cast<uint16_t*>(out), n, k);
  return cudaGetLastError();
}

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
                    const uint16_t* QK_RESTRICT scales, uint16_t* QK_RESTRICT out, float* QK_RESTRICT ws, int m,
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
    // Contiguous, possibly uneven K ranges; every split is non-empty when splits <= K/16.
    const int64_t kb = k_blocks * split / splits;
    const int64_t ke = k_blocks * (split + 1) / splits;
    const int64_t first = kb + warp;
    const int64_t count = first < ke ? (ke - first + kGemvWarps - 1) / kGemvWarps : 0;
    const uint32_t* const w_tile = w + 256 * c;

    // Stage i holds block first + i * kGemvWarps. Always commits a group (possibly empty) so
    // that the wait count below stays uniform at the tail.
    auto issue = [&](int64_t i) {
      if (i < count) {
        const int64_t kt = first + i * kGemvWarps;
        uint32_t* const st = ring + static_cast<int>(i % kGemvStages) * Shape::kStageWords;
        const uint32_t* const src = w_tile + kt * row_words;
        cp_async16(shared_addr(st + 4 * w_piece(lane)), src + 4 * lane);
        cp_async16(shared_addr(st + 4 * w_piece(lane + 32)), src + 4 * (lane + 32));
#pragma unroll
        for (int j = 0; j < Shape::kActCopies; ++j) {
          const int a_row = (lane >> 1) + 16 * j;
          if (a_row < m && a_row < MT * 8)
            cp_async16(shared_addr(st + 256 + a_word(a_row, a_half)), a + a_row * k + 16 * kt + 8 * a_half);
        }
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
    for (int i = 0; i < kGemvStages - 1; ++i) issue(i);

    for (int64_t i = 0; i < count; ++i) {
      cp_async_wait<kGemvStages - 2>();  // this lane's copies for stage i have landed
      __syncwarp();                      // ... and every lane's; also: all reads of stage i-1 are done
      const uint32_t* const st = ring + static_cast<int>(i % kGemvStages) * Shape::kStageWords;
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
      issue(i + kGemvStages - 1);  // refills the stage read in iteration i - 1

      // words[2 * sub + h]: channel 16 * sub + 8h + g of the tile, rows 2 * tig + (0, 8, 1, 9).
      const uint32_t words[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
      uint32_t af[4][4];
#pragma unroll
      for (int sub = 0; sub < 4; ++sub) {
        af[sub][0] = fp8_pair<D, kSelLo>(words[2 * sub]);      // channel g,     k 2tig, +1
        af[sub][1] = fp8_pair<D, kSelLo>(words[2 * sub + 1]);  // channel g + 8, k 2tig, +1
        af[sub][2] = fp8_pair<D, kSelHi>(words[2 * sub]);      // channel g,     k 2tig + 8, +9
        af[sub][3] = fp8_pair<D, kSelHi>(words[2 * sub + 1]);  // channel g + 8, k 2tig + 8, +9
      }
      uint32_t any_nan = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) any_nan |= nan_bytes(words[j]);
      if ((any_nan & 0x80808080u) != 0u) {  // rare: quanto never produces NaN codes
#pragma unroll
        for (int sub = 0; sub < 4; ++sub) {
          af[sub][0] = fix_nan_pair<D, kSelLo>(af[sub][0], words[2 * sub]);
          af[sub][1] = fix_nan_pair<D, kSelLo>(af[sub][1], words[2 * sub + 1]);
          af[sub][2] = fix_nan_pair<D, kSelHi>(af[sub][2], words[2 * sub]);
          af[sub][3] = fix_nan_pair<D, kSelHi>(af[sub][3], words[2 * sub + 1]);
        }
      }
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
          out[row * n + col] = static_cast<uint16_t>(float_to_bits16<D>(sum * s));
        } else {
          ws[(static_cast<int64_t>(split) * m + row) * n + col] = sum;  // unscaled; the reduce scales
        }
      }
    }
    __syncthreads();  // the next item refills the ring
  }
}

template <DType D, int MT>
cudaError_t launch_gemv_typed(const void* a, const uint32_t* w, const void* scales, void* out, float* ws, int64_t m,
                              int64_t n, int64_t k, int splits, cudaStream_t stream) {
  const int64_t items = (n / 64) * splits;
  int64_t blocks = items;
  if (blocks > 0x7FFFFFFF) blocks = 0x7FFFFFFF;  // grid-stride loop covers the rest
  fp8_gemv_kernel<D, MT><<<static_cast<unsigned>(blocks), kGemvThreads, 0, stream>>>(
      static_cast<const uint16_t*>(a), w, static_cast<const uint16_t*>(scales), static_cast<uint16_t*>(out), ws,
      static_cast<int>(m), n, k, splits);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  return launch_splitk_reduce(ws, splits, m, n, scales, ScalePerm::Block32, D, out, stream);
}

template <DType D>
cudaError_t launch_gemv_dtype(const void* a, const uint32_t* w, const void* scales, void* out, float* ws, int64_t m,
                              int64_t n, int64_t k, int splits, cudaStream_t stream) {
  switch (gemv_row_tiles(m)) {
    case 1: return launch_gemv_typed<D, 1>(a, w, scales, out, ws, m, n, k, splits, stream);
    case 2: return launch_gemv_typed<D, 2>(a, w, scales, out, ws, m, n, k, splits, stream);
    case 4: return launch_gemv_typed<D, 4>(a, w, scales, out, ws, m, n, k, splits, stream);
    default: return launch_gemv_typed<D, 8>(a, w, scales, out, ws, m, n, k, splits, stream);
  }
}

}  // namespace

cudaError_t launch_fp8_dequant(const uint32_t* w, const void* scales, void* out, int64_t n, int64_t k, DType dt,
                               cudaStream_t stream) {
  return dt == DType::BF16 ? launch_dequant_typed<DType::BF16>(w, scales, out, n, k, stream)
                           : launch_dequant_typed<DType::F16>(w, scales, out, n, k, stream);
}

cudaError_t launch_fp8_gemv(const void* a, const uint32_t* w, const void* scales, void* out, float* ws, int64_t m,
                            int64_t n, int64_t k, int splits, DType dt, cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0) return cudaSuccess;
  if (m > kMaxFp8GemvM || splits < 1 || (splits > 1 && ws == nullptr)) return cudaErrorInvalidValue;
  return dt == DType::BF16 ? launch_gemv_dtype<DType::BF16>(a, w, scales, out, ws, m, n, k, splits, stream)
                           : launch_gemv_dtype<DType::F16>(a, w, scales, out, ws, m, n, k, splits, stream);
}

int plan_fp8_gemv_splits(int64_t m, int64_t n, int64_t k, int sm_count) {
  // Column unit: one 64-channel tile; K unit: one 16-row block (the smallest range a split owns).
  // Blocks per SM: what the register budget keeps resident for this M (GemvOccupancy), capped at 4.
  const int tiles = gemv_row_tiles(m);
  const int per_sm = tiles <= 2 ? 4 : tiles == 4 ? 3 : 2;
  return plan_splits(m, n / 64, k / 16, sm_count, per_sm);
}

}  // namespace qk
