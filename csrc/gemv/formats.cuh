// Weight formats of the GEMV engine (today int8; the FP8 Marlin format measured faster on its own
// split-K kernel, csrc/fp8_marlin/fp8_gemv.cu, and stays there until the engine beats it). A format says where the 64 pieces of 16 bytes of one work unit
// (64 channels x 16 k) come from, how a lane turns the unit (staged in shared memory) into the A
// fragments of four m16n8k16 products, how the activations' B fragment is read with the same k
// order, and which scale each output channel takes. Everything else (pipeline, schedule,
// reduction, epilogue) is the engine's (csrc/gemv/engine.cuh).
//
// Activation stage layout (shared by the formats): row r holds the unit's 16 * kSteps k as
// 8 * kSteps words in 16-byte quarters of 8 k; quarters 2i and 2i + 1 swap places for rows 4..7 of
// every 8, so rows g and g + 4 of one fragment read fall in different banks.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"
#include "gemv/schedule.h"

namespace qk {
namespace gemv {

template <int kSteps>
QK_DEVICE QK_FORCEINLINE int act_word(int row, int quarter) {
  return row * 8 * kSteps + 4 * (quarter ^ ((row >> 2) & 1));
}

// ---- int8, quanto's own (N, K) row-major layout with one scale per channel -----------------------
// A unit is rows 64 tile .. 64 tile + 63, bytes 32 ks .. 32 ks + 31 of each (one 32-byte memory
// sector per row): piece p is half p % 2 of channel p / 2, and the two halves of rows 4..7 of every
// 8 swap places in shared memory (conflict-free fragment reads). The mma sums over its 16 k slots
// in any order, so the engine uses one that suits row-major data: in k step j, lane (g, tig) gives
// slots (2tig, 2tig + 1, 2tig + 8, 2tig + 9) the k 16j + 4tig .. 16j + 4tig + 3, one word of the
// channel's row; the activations' B fragment is read with the same order.
struct Int8Rows {
  static constexpr int kSteps = 2;  // 32 k per unit
  struct Args {
    const int8_t* w;
    const uint16_t* scales;  // natural channel order, dtype of the activations
    int64_t n, k;
  };

  static QK_DEVICE QK_FORCEINLINE const void* piece(const Args& a, int tile, int ks, int p, bool& valid) {
    const int64_t row = static_cast<int64_t>(kTileN) * tile + (p >> 1);
    valid = row < a.n;  // the last tile of an N that is no multiple of 64 is zero-filled
    return a.w + (valid ? row : 0) * a.k + 32 * static_cast<int64_t>(ks) + 16 * (p & 1);
  }
  static QK_DEVICE QK_FORCEINLINE int slot(int p) { return p ^ ((p >> 3) & 1); }

  // Signed bytes 0 and 1 (lo) or 2 and 3 (hi) of x as two exact 16-bit values.
  template <DType D, bool kHi>
  static QK_DEVICE QK_FORCEINLINE uint32_t int8_pair(uint32_t x) {
    const uint32_t u = x ^ 0x80808080u;  // biased: u = x + 128 in 0..255
    if constexpr (D == DType::F16) {
      // 0x64uu is 1024 + u exactly; subtracting 1152 leaves x.
      const uint32_t v = __byte_perm(u, 0x64646464u, kHi ? 0x5352u : 0x5150u);
      uint32_t r;
      QK_ASM("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(v), "r"(0x64806480u));
      return r;
    } else {
      // bf16 has too few mantissa bits for that trick: go through fp32 (2^23 + u, exact), then pack.
      const float f0 = __uint_as_float(__byte_perm(u, 0x4B000000u, kHi ? 0x7442u : 0x7440u)) - 8388736.f;
      const float f1 = __uint_as_float(__byte_perm(u, 0x4B000000u, kHi ? 0x7443u : 0x7441u)) - 8388736.f;
      const __nv_bfloat162 p = __floats2bfloat162_rn(f0, f1);
      return *reinterpret_cast<const uint32_t*>(&p);
    }
  }

  // Word `tig` of half j of channel r (8 words per channel, halves swapped as slot() does).
  static QK_DEVICE QK_FORCEINLINE int word(int r, int j, int tig) { return 8 * r + 4 * (j ^ ((r >> 2) & 1)) + tig; }

  template <DType D>
  static QK_DEVICE QK_FORCEINLINE void fragments(const uint32_t* st, int lane, int j, uint32_t (&af)[4][4]) {
    const int g = lane >> 2;
    const int tig = lane & 3;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint32_t lo_row = st[word(16 * s + g, j, tig)];      // channel 16s + g
      const uint32_t hi_row = st[word(16 * s + 8 + g, j, tig)];  // channel 16s + 8 + g
      af[s][0] = int8_pair<D, false>(lo_row);
      af[s][1] = int8_pair<D, false>(hi_row);
      af[s][2] = int8_pair<D, true>(lo_row);
      af[s][3] = int8_pair<D, true>(hi_row);
    }
  }

  // b0 = k (16j + 4tig, +1), b1 = k (16j + 4tig + 2, +3): words 8j + 2tig and 8j + 2tig + 1 of the row.
  static QK_DEVICE QK_FORCEINLINE void b_fragment(const uint32_t* act, int row, int tig, int j, uint32_t (&b)[2]) {
    const uint2 v = *reinterpret_cast<const uint2*>(act + act_word<kSteps>(row, 2 * j + (tig >> 1)) + 2 * (tig & 1));
    b[0] = v.x;
    b[1] = v.y;
  }

  template <DType D>
  static QK_DEVICE QK_FORCEINLINE float scale(const Args& a, int64_t col) {
    return bits16_to_float<D>(a.scales[col]);
  }
};

}  // namespace gemv
}  // namespace qk
