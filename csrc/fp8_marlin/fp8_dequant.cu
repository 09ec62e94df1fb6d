// FP8 (e4m3fn) Marlin weights, (K/16, 4N) int32: dequantization to a natural (N, K) matrix, for the
// dequantize op and for the dequantize + dense GEMM path at large M. The layout is described in
// docs/layouts.md, "FP8 Marlin layout"; the fused product lives in csrc/gemv/.
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"
#include "fp8_marlin/fp8_decode.cuh"

namespace qk {
namespace {

using namespace fp8;

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

}  // namespace

cudaError_t launch_fp8_dequant(const uint32_t* w, const void* scales, void* out, int64_t n, int64_t k, DType dt,
                               cudaStream_t stream) {
  return dt == DType::BF16 ? launch_dequant_typed<DType::BF16>(w, scales, out, n, k, stream)
                           : launch_dequant_typed<DType::F16>(w, scales, out, n, k, stream);
}

}  // namespace qk
