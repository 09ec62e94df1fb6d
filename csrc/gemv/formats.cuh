// Weight formats of the GEMV engine (int8 rows; FP8 Marlin, which serves FP8 only behind the
// QK_GEMV_FP8_ENGINE test override until measurements decide, see csrc/gemv/gemv.h). A format
// says where the 16-byte pieces of one work unit (64 channels x 16 kSteps k) come from, how a lane
// turns the unit (staged in shared memory) into the A fragments of four m16n8k16 products per k
// step, where the activations of the same k land in the stage and how their B fragment is read
// back in the format's k order, and which scale each output channel takes. Everything else
// (pipeline, schedule, reduction, epilogue) is the engine's (csrc/gemv/engine.cuh, engine_v4.cuh).
//
// Activation stage layout: row r holds the unit's 16 * kSteps k as 2 * kSteps quarters of 8 k
// (16 bytes); act_word(r, q) says where quarter q of row r goes, swizzled per format so that the
// rows one fragment read touches fall in different banks.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"
#include "fp8_marlin/fp8_decode.cuh"
#include "gemv/schedule.h"

namespace qk {
namespace gemv {

// ---- FP8 e4m3fn in quanto's Marlin layout (docs/layouts.md, "FP8 Marlin layout") ----------------
// A unit is the 1 KB block (kslice, tile): 256 consecutive words of packed row kslice, so the units
// of adjacent tiles at one kslice are adjacent in memory (what engine v4 exploits). Word
// 8t + 2s + h holds channel 16s + 8h + t/4 at k 2(t%4) + (0, 8, 1, 9): lane t's two 16-byte pieces
// are exactly the A fragments of the four 16-channel sub-tiles, so no data moves between lanes.
// Semantics are those of the split-K kernel (csrc/fp8_marlin/fp8_gemv.cu): exact decode, NaN codes
// give NaN, fp32 accumulation, one Block32-permuted scale per channel applied once at the end.
struct Fp8Marlin {
  static constexpr int kSteps = 1;  // 16 k per unit: one contiguous 1 KB block
  struct Args {
    const uint32_t* w;
    const uint16_t* scales;  // Block32-permuted, dtype of the activations
    int64_t n, k;
    const uint16_t* bias = nullptr;  // natural channel order, dtype of the activations; optional
  };

  static QK_DEVICE QK_FORCEINLINE const void* piece(const Args& a, int tile, int ks, int p, bool& valid) {
    valid = true;  // N is a multiple of 64 for this layout: every tile is whole
    return a.w + static_cast<int64_t>(ks) * 4 * a.n + 256 * static_cast<int64_t>(tile) + 4 * p;
  }
  // Pieces 8..15 of every 16 trade places in pairs, so that the 16-byte reads of a quarter warp
  // (lanes read pieces 2t and 2t + 1) cover all 32 banks.
  static QK_DEVICE QK_FORCEINLINE int slot(int p) { return p ^ ((p >> 3) & 1); }

  // Rows 4..7 of every 8 swap their two quarters: a fragment read (rows g = 0..7, word tig of
  // one quarter) then covers 32 distinct banks.
  static QK_DEVICE QK_FORCEINLINE int act_word(int row, int quarter) { return row * 8 + 4 * (quarter ^ ((row >> 2) & 1)); }

  template <DType D>
  static QK_DEVICE QK_FORCEINLINE void fragments(const uint32_t* st, int lane, int /*step*/, uint32_t (&af)[4][4]) {
    const uint4 w0 = *reinterpret_cast<const uint4*>(st + 4 * slot(2 * lane));
    const uint4 w1 = *reinterpret_cast<const uint4*>(st + 4 * slot(2 * lane + 1));
    decode<D>(w0, w1, af);
  }

  // Lane t's words 8t .. 8t + 7 of a unit (pieces 2t, 2t + 1) -> the A fragments of the four sub-tiles
  // (fp8_decode.cuh: channel g and g + 8, k 2tig + (0, 1) and + (8, 9); NaN codes made NaN).
  template <DType D>
  static QK_DEVICE QK_FORCEINLINE void decode(const uint4& w0, const uint4& w1, uint32_t (&af)[4][4]) {
    const uint32_t words[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    fp8::decode_unit<D>(words, af);
  }

  // Natural k order: b0 = k (2tig, 2tig + 1), b1 = k (8 + 2tig, 9 + 2tig).
  static QK_DEVICE QK_FORCEINLINE void b_fragment(const uint32_t* act, int row, int tig, int /*step*/,
                                                  uint32_t (&b)[2]) {
    b[0] = act[act_word(row, 0) + tig];
    b[1] = act[act_word(row, 1) + tig];
  }

  template <DType D>
  static QK_DEVICE QK_FORCEINLINE float scale(const Args& a, int64_t col) {
    return bits16_to_float<D>(a.scales[block32_slot(col)]);
  }
};

// FP8 Marlin read straight into registers (engine v4's direct mainloop, QK_GEMV_V4_LOADS=direct): a
// lane's two 16-byte pieces of a unit are exactly its A fragments, so no shared-memory staging is
// needed; the activations' B fragments come through the read-only cache.
struct Fp8MarlinDirect : Fp8Marlin {};

// ---- int8, quanto's own (N, K) row-major layout with one scale per channel -----------------------
// A unit is rows 64 tile .. 64 tile + 63, bytes 16 kSteps ks .. 16 kSteps (ks + 1) - 1 of each:
// kSteps = 2 reads one 32-byte memory sector per row, kSteps = 4 two adjacent sectors (64 bytes),
// so a warp's consecutive units walk each row in longer runs. Piece p is 16-byte chunk p % kSteps
// of channel p / kSteps. The mma sums over its 16 k slots in any order, so the engine uses one
// that suits row-major data: in k step j, lane (g, tig) gives slots (2tig, 2tig + 1, 2tig + 8,
// 2tig + 9) the k 16j + 4tig .. 16j + 4tig + 3, one word of the channel's row; the activations' B
// fragment is read with the same order.
template <int kStepsT>
struct Int8RowsT {
  static constexpr int kSteps = kStepsT;
  static_assert(kSteps == 2 || kSteps == 4, "int8 units are 32 or 64 k");
  struct Args {
    const int8_t* w;
    const uint16_t* scales;  // natural channel order, dtype of the activations
    int64_t n, k;
    const uint16_t* bias = nullptr;  // natural channel order, dtype of the activations; optional
  };

  static QK_DEVICE QK_FORCEINLINE const void* piece(const Args& a, int tile, int ks, int p, bool& valid) {
    const int64_t row = static_cast<int64_t>(kTileN) * tile + p / kSteps;
    valid = row < a.n;  // the last tile of an N that is no multiple of 64 is zero-filled
    return a.w + (valid ? row : 0) * a.k + 16 * kSteps * static_cast<int64_t>(ks) + 16 * (p % kSteps);
  }
  // Channel rows are 4 kSteps words apart, so 8 / kSteps rows share one pass over the 32 banks;
  // XOR-ing the chunk with the row's pass index puts the 8 rows of a fragment read (same chunk,
  // words tig) in 8 different bank quads.
  static QK_DEVICE QK_FORCEINLINE int chunk_swizzle(int r) { return kSteps == 2 ? (r >> 2) & 1 : (r >> 1) & 3; }
  static QK_DEVICE QK_FORCEINLINE int slot(int p) {
    const int r = p / kSteps;
    return r * kSteps + ((p % kSteps) ^ chunk_swizzle(r));
  }
  // Word `tig` of chunk j of channel r.
  static QK_DEVICE QK_FORCEINLINE int word(int r, int j, int tig) { return 4 * (r * kSteps + (j ^ chunk_swizzle(r))) + tig; }

  // Activation row r: kSteps pairs of quarters (8 words, the 16 k of one step). A B-fragment read is
  // a 64-bit load, served per half warp (rows g = 0..3 or 4..7). kSteps = 4: XOR-ing the pair with
  // the row spreads those 4 rows' 8-word runs over the 4 bank octets. kSteps = 2 keeps the v3
  // engine's measured layout (rows 4..7 of every 8 swap their quarters pairwise).
  static QK_DEVICE QK_FORCEINLINE int act_word(int row, int quarter) {
    if constexpr (kSteps == 2) return row * 16 + 4 * (quarter ^ ((row >> 2) & 1));
    else return row * 8 * kSteps + 8 * ((quarter >> 1) ^ (row & 3)) + 4 * (quarter & 1);
  }

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

  // b0 = k (16j + 4tig, +1), b1 = k (16j + 4tig + 2, +3): words 8j + 2tig and 8j + 2tig + 1 of the
  // row, i.e. words 2 (tig & 1), +1 of quarter 2j + tig / 2.
  static QK_DEVICE QK_FORCEINLINE void b_fragment(const uint32_t* act, int row, int tig, int j, uint32_t (&b)[2]) {
    const uint2 v = *reinterpret_cast<const uint2*>(act + act_word(row, 2 * j + (tig >> 1)) + 2 * (tig & 1));
    b[0] = v.x;
    b[1] = v.y;
  }

  template <DType D>
  static QK_DEVICE QK_FORCEINLINE float scale(const Args& a, int64_t col) {
    return bits16_to_float<D>(a.scales[col]);
  }
};

// The v3 engine's int8 format (32 k per unit), kept as measured in v2/v3 (its code generation is
// what the notes' numbers belong to; Int8RowsT<2> computes the same thing for engine v4).
template <int kSteps>
QK_DEVICE QK_FORCEINLINE int act_word(int row, int quarter) {
  return row * 8 * kSteps + 4 * (quarter ^ ((row >> 2) & 1));
}

struct Int8Rows {
  static constexpr int kSteps = 2;  // 32 k per unit
  struct Args {
    const int8_t* w;
    const uint16_t* scales;  // natural channel order, dtype of the activations
    int64_t n, k;
    const uint16_t* bias = nullptr;  // natural channel order, dtype of the activations; optional
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

  // Where the engine copies activation quarter q of row r: the v3 layout (act_word below).
  static QK_DEVICE QK_FORCEINLINE int act_word(int row, int quarter) { return gemv::act_word<kSteps>(row, quarter); }

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
    const uint2 v = *reinterpret_cast<const uint2*>(act + gemv::act_word<kSteps>(row, 2 * j + (tig >> 1)) + 2 * (tig & 1));
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
