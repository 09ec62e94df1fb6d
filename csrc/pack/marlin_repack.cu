// Marlin repack (quanto::pack_fp8_marlin): rearranges a K-packed weight into the tile order the
// Marlin kernels read, one 16 (K) x 64 (N) tile per contiguous block of output words. This is a
// one-time permutation, so each thread simply gathers the codes of one output word from the
// input; reads are scattered but stay inside a few input rows, which the caches absorb.
#include "common/launchers.h"
#include "../compat/qk_compat.h"

namespace qk {
namespace {

// The code of logical weight row k (in-feature k) for column n, after the optional act-order
// permutation. kPer = codes per input word (4 for 8 bits, 8 for 4 bits).
template <int kBits>
QK_DEVICE QK_FORCEINLINE uint32_t source_code(const uint32_t* QK_RESTRICT in, const int32_t* QK_RESTRICT perm,
                                              int64_t n_total, int64_t n, int64_t k) {
  constexpr int kPer = 32 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1u;
  const int64_t src = perm != nullptr ? static_cast<int64_t>(perm[k]) : k;
  const uint32_t word = in[(src / kPer) * n_total + n];
  return (word >> (kBits * static_cast<int>(src % kPer))) & kMask;
}

// 8 bits: out is (K/16, 4N). Inside a 256-word block for (kt, c), word 8t + 2w + h holds the
// codes of column 64c + 16w + 8h + t/4 at rows 16kt + 2(t%4) + (0, 8, 1, 9), one per byte.
__global__ void repack8_kernel(const uint32_t* QK_RESTRICT in, const int32_t* QK_RESTRICT perm,
                               uint32_t* QK_RESTRICT out, int64_t k_total, int64_t n_total) {
  const int64_t row_words = 4 * n_total;
  const int64_t total = (k_total / 16) * row_words;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t kt = o / row_words;
    const int64_t col = o - kt * row_words;
    const int64_t c = col >> 8;
    const int rem = static_cast<int>(col & 255);
    const int t = rem >> 3;
    const int w = (rem & 7) >> 1;
    const int h = rem & 1;
    const int64_t n = 64 * c + 16 * w + 8 * h + (t >> 2);
    const int64_t k0 = 16 * kt + 2 * (t & 3);
    // Byte order (k, k+8, k+1, k+9): the two fp16 pairs of one mma B fragment.
    const uint32_t b0 = source_code<8>(in, perm, n_total, n, k0);
    const uint32_t b1 = source_code<8>(in, perm, n_total, n, k0 + 8);
    const uint32_t b2 = source_code<8>(in, perm, n_total, n, k0 + 1);
    const uint32_t b3 = source_code<8>(in, perm, n_total, n, k0 + 9);
    out[o] = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
  }
}

// 4 bits: out is (K/16, 2N). Inside a 128-word block for (kt, c), nibble e of word 4i + j holds
// column 64c + 16j + 8((e>>1)&1) + i/4 at row 16kt + 2(i%4) + (e>>2) + 8(e&1).
__global__ void repack4_kernel(const uint32_t* QK_RESTRICT in, const int32_t* QK_RESTRICT perm,
                               uint32_t* QK_RESTRICT out, int64_t k_total, int64_t n_total) {
  const int64_t row_words = 2 * n_total;
  const int64_t total = (k_total / 16) * row_words;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t kt = o / row_words;
    const int64_t col = o - kt * row_words;
    const int64_t c = col >> 7;
    const int rem = static_cast<int>(col & 127);
    const int i = rem >> 2;
    const int j = rem & 3;
    const int64_t n_base = 64 * c + 16 * j + (i >> 2);
    const int64_t k_base = 16 * kt + 2 * (i & 3);
    uint32_t word = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t n = n_base + 8 * ((e >> 1) & 1);
      const int64_t k = k_base + (e >> 2) + 8 * (e & 1);
      word |= source_code<4>(in, perm, n_total, n, k) << (4 * e);
    }
    out[o] = word;
  }
}

}  // namespace

cudaError_t launch_marlin_repack(const uint32_t* in, const int32_t* perm, uint32_t* out, int64_t k, int64_t n,
                                 int bits, cudaStream_t stream) {
  if (bits != 8 && bits != 4) return cudaErrorInvalidValue;
  const int64_t total = (k / 16) * n * (bits == 8 ? 4 : 2);
  if (total <= 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = (total + threads - 1) / threads;
  // Enough blocks to fill any GPU many times over; the grid-stride loop covers the rest.
  if (blocks > 65536) blocks = 65536;
  if (bits == 8) {
    repack8_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(in, perm, out, k, n);
  } else {
    repack4_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(in, perm, out, k, n);
  }
  return cudaGetLastError();
}

}  // namespace qk
