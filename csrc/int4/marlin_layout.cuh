// The Marlin int4 layout (with zero points) as a policy of the int4 kernel templates
// (int4_gemv.cuh, int4_dequant.cuh); docs/layouts.md, "Int4 Marlin layout".
//
// Layout reminder: P is int32 (K/16, 2N). The 16-byte load of words 128c + 4i .. +3 in row kt gives
// lane i = 4g + t the words j = 0..3 of channels 64c + 16j + (g, g + 8) at k = 16kt + 2t + (0, 1, 8, 9):
// nibbles (0, 4) = channel 16j + g at (2t, 2t+1), (1, 5) = same channel at (2t+8, 2t+9), (2, 6) and
// (3, 7) = channel 16j + 8 + g at those k. Word j is therefore, after dequantization, exactly lane
// i's m16n8k16 A fragment of the 16-channel tile j (a0 = nibbles 0/4, a1 = 2/6, a2 = 1/5, a3 = 3/7).
// Scales and zeros are (K/G, N) with channel n of group g at [g, scale_slot(n, perm)]; lane (g, t)
// needs channels 64c + 8u + g (u = 2j + b), which Block64 stores at 64c + 8g + u: 16 bytes.
//
// UKT: 16-k rows of P per fused-kernel unit; 4 when every 64-k unit lies inside one group
// (G % 64 == 0), else 1, so that a unit never straddles a group.
#pragma once

#include "common/scale_perm.cuh"
#include "int4/act.cuh"
#include "int4/int4_common.cuh"

namespace qk {
namespace i4 {

// Scales (or zeros) of channels 64c + 8u + g, u = 0..7, for group `grp`, as 8 values in u order.
QK_DEVICE QK_FORCEINLINE uint4 marlin_lane_scales(const uint16_t* QK_RESTRICT p, int64_t n, int64_t c, int g, int grp,
                                                  ScalePerm perm, bool vec) {
  const uint16_t* const row = p + static_cast<int64_t>(grp) * n;
  if (vec) return __ldg(reinterpret_cast<const uint4*>(row + 64 * c + 8 * g));  // Block64, 16-byte aligned
  uint16_t h[8];
#pragma unroll
  for (int u = 0; u < 8; ++u) h[u] = __ldg(row + scale_slot(64 * c + 8 * u + g, perm));
  return make_uint4(pack_halves(h[0], h[1]), pack_halves(h[2], h[3]), pack_halves(h[4], h[5]),
                    pack_halves(h[6], h[7]));
}

template <int UKT>
struct MarlinLayout {
  // ---- fused product ---------------------------------------------------------------------------
  //
  // Column warp = one 64-channel block c; K unit = UKT rows kt. The activation rows are staged with
  // each 16-k block in the order (0,1,8,9, 2,3,10,11, ...) so that lane t finds its B fragment
  // (k 2t, 2t+1, 2t+8, 2t+9) as 8 contiguous bytes. Weights are the mma A operand (4 tiles of 16
  // channels per kt), activations the B operand (rows 0..7, and 8..15 when MT > 8).

  static constexpr int kColWarps = 2;
  static constexpr int kBlockCols = 64 * kColWarps;
  static constexpr int kTiles = 4;
  static constexpr int kUnitK = 16 * UKT;

  struct Unit {
    uint4 w[UKT];  // words j = 0..3 of rows kt = UKT * unit + kk
    uint4 s, z;    // scales / zeros of channels 64c + 8u + g for the unit's group
  };

  struct Lane {
    const uint32_t* w;  // the lane's word in row kt = 0
    int64_t c;          // the warp's 64-channel block
    int g, t;
    bool ok;  // the block exists (N need not fill the last grid block)
  };

  static QK_HOST_DEVICE QK_FORCEINLINE int units(int k) { return k / kUnitK; }

  static QK_DEVICE QK_FORCEINLINE Lane lane_context(const GemvArgs& p, int64_t col_warp, int lane) {
    Lane ln;
    ln.g = lane >> 2;
    ln.t = lane & 3;
    ln.c = col_warp;
    ln.ok = col_warp < p.n / 64;
    ln.w = static_cast<const uint32_t*>(p.w) + (ln.ok ? col_warp : 0) * 128 + 4 * lane;
    return ln;
  }

  static QK_DEVICE QK_FORCEINLINE int64_t channel(const Lane& ln, int T, int e) {
    return 64 * ln.c + 16 * T + 8 * (e >> 1) + ln.g;
  }

  static QK_DEVICE QK_FORCEINLINE void load(Unit& u, const Lane& ln, const GemvArgs& p, int unit) {
    if (ln.ok) {
#pragma unroll
      for (int kk = 0; kk < UKT; ++kk) u.w[kk] = load_stream16(ln.w + static_cast<int64_t>(UKT * unit + kk) * (2 * p.n));
      const int grp = kUnitK * unit / p.group;
      u.s = marlin_lane_scales(p.scales, p.n, ln.c, ln.g, grp, p.perm, p.vec_sz != 0);
      u.z = marlin_lane_scales(p.zeros, p.n, ln.c, ln.g, grp, p.perm, p.vec_sz != 0);
    } else {
#pragma unroll
      for (int kk = 0; kk < UKT; ++kk) u.w[kk] = make_uint4(0u, 0u, 0u, 0u);
      u.s = make_uint4(0u, 0u, 0u, 0u);
      u.z = u.s;
    }
  }

  // 16-bit values per staged activation row: the slice's k rounded up to 64, plus 16. The row
  // stride is then 32 mod 128 bytes, so the 8-byte reads of lanes (g, t), g < 4, hit distinct banks.
  static QK_HOST_DEVICE QK_FORCEINLINE int row_halves(int slice_units) {
    return (slice_units * kUnitK + 63) / 64 * 64 + 16;
  }

  // Copies activation rows 0..MT-1 of units [sl, sl + nunits) into the slice buffer in fragment
  // order; rows >= m are stored as zeros. K is a whole number of units, so no k guard.
  template <int MT>
  static QK_DEVICE QK_FORCEINLINE void stage(uint4* act_raw, const GemvArgs& p, int sl, int nunits, int tid,
                                             int nthreads) {
    uint16_t* const act = reinterpret_cast<uint16_t*>(act_raw);
    constexpr int kBatch = 2;  // 16-k blocks (2 loads each) in flight per thread before the stores
    const int rh = row_halves(p.slice_units);
    const int kt_lo = sl * UKT;
    const int blocks = nunits * UKT;
    const int total = MT * blocks;
    for (int base = tid; base < total; base += nthreads * kBatch) {
      uint4 lo[kBatch], hi[kBatch];
      int dst[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int idx = base + j * nthreads;
        lo[j] = make_uint4(0u, 0u, 0u, 0u);
        hi[j] = lo[j];
        dst[j] = -1;
        if (idx < total) {
          const int row = idx / blocks;
          const int kb = idx - row * blocks;
          if (row < p.m) {
            const uint4* const src = reinterpret_cast<const uint4*>(p.a + static_cast<int64_t>(row) * p.k +
                                                                    16 * static_cast<int64_t>(kt_lo + kb));
            lo[j] = __ldg(src);
            hi[j] = __ldg(src + 1);
          }
          dst[j] = row * rh + 16 * kb;
        }
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        if (dst[j] >= 0) {
          // lo = k pairs (0,1) (2,3) (4,5) (6,7), hi = (8,9) .. (14,15) -> (0,1)(8,9)(2,3)(10,11)...
          const uint4 v0 = make_uint4(lo[j].x, hi[j].x, lo[j].y, hi[j].y);
          const uint4 v1 = make_uint4(lo[j].z, hi[j].z, lo[j].w, hi[j].w);
          // Neighbouring lanes write 32 bytes apart; lanes 4..7 of each 8 store their halves in the
          // other order, so that each quarter-warp store instruction covers 8 distinct bank groups.
          const int sw = ((base + j * nthreads) >> 2) & 1;
          uint4* const d = reinterpret_cast<uint4*>(act + dst[j]);
          d[sw] = sw ? v1 : v0;
          d[sw ^ 1] = sw ? v0 : v1;
        }
      }
    }
  }

  template <class A, int MT>
  static QK_DEVICE QK_FORCEINLINE void compute(float (&acc)[kTiles][MT > 8 ? 2 : 1][4], const Unit& u,
                                               const uint4* act_raw, const GemvArgs& p, int unit_in_slice,
                                               const Lane& ln) {
    constexpr int NB = MT > 8 ? 2 : 1;
    const uint16_t* const act = reinterpret_cast<const uint16_t*>(act_raw);
    const int rh = row_halves(p.slice_units);
    const int kt_first = unit_in_slice * UKT;
#pragma unroll
    for (int kk = 0; kk < UKT; ++kk) {
      uint2 b[NB];
#pragma unroll
      for (int h = 0; h < NB; ++h) {
        const int row = ln.g + 8 * h;
        b[h] = (MT >= 8 || row < MT) ? *reinterpret_cast<const uint2*>(act + row * rh + 16 * (kt_first + kk) + 4 * ln.t)
                                     : make_uint2(0u, 0u);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t word = word_of(u.w[kk], j);
        const typename A::V2 s0 = A::as_v2(bcast_bits(u.s, 2 * j)), z0 = A::as_v2(bcast_bits(u.z, 2 * j));  // 16j + g
        const typename A::V2 s1 = A::as_v2(bcast_bits(u.s, 2 * j + 1)),
                             z1 = A::as_v2(bcast_bits(u.z, 2 * j + 1));  // channel 16j + 8 + g
        const uint32_t a0 = A::dequant2(word, 0, s0, z0);   // nibbles 0, 4: row g,     k 2t, 2t+1
        const uint32_t a1 = A::dequant2(word, 8, s1, z1);   // nibbles 2, 6: row g + 8, k 2t, 2t+1
        const uint32_t a2 = A::dequant2(word, 4, s0, z0);   // nibbles 1, 5: row g,     k 2t+8, 2t+9
        const uint32_t a3 = A::dequant2(word, 12, s1, z1);  // nibbles 3, 7: row g + 8, k 2t+8, 2t+9
#pragma unroll
        for (int h = 0; h < NB; ++h) A::mma(acc[j][h], a0, a1, a2, a3, b[h].x, b[h].y);
      }
    }
  }

  static int slice_units(int mt, int64_t per_split) {
    int64_t s = (kActSmemHalves / mt - 64) / kUnitK;
    if (s > per_split) s = per_split;
    return static_cast<int>(s < 1 ? 1 : s);
  }
  static size_t smem_bytes(int mt, int slice) { return static_cast<size_t>(mt) * row_halves(slice) * 2; }
  // Block64 puts a lane's 8 channels side by side: one 16-byte load when the tensors allow it.
  static bool vector_scales(const GemvArgs& p) {
    return p.perm == ScalePerm::Block64 && aligned_to(p.scales, 16) && aligned_to(p.zeros, 16);
  }

  // ---- dequantization ----------------------------------------------------------------------------
  //
  // Task = 64 channels (c) x 64 k (4 rows kt of P). The 4 loads per lane are 512 contiguous bytes
  // per warp each. The warp scatters its values into its [64][64 + 8] tile and writes it back row
  // by row: each store instruction covers 4 full 128-byte lines. (The dequantize kernel does not
  // depend on UKT.)

  static constexpr int kDqWarps = 4;
  static constexpr int kDqKt = 4;                        // 16-k rows of P per task
  static constexpr int kDqRowWords = (16 * kDqKt + 8) / 2;  // tile row: 64 k + 8 values of padding

  // Padding: lane (g, t) writes word 36 * row + 8kk + t (+4) with row = 16j + 8b + g, i.e. bank
  // 4g + t + const, so each scatter instruction is conflict-free.
  struct DqTile {
    QK_ALIGN(16) uint32_t w[64 * kDqRowWords];
  };
  struct DqTask {
    uint4 v[kDqKt];
    int64_t c;
    int kt0, nkt;
  };

  static void dq_plan(DequantArgs& p) {
    p.k_tasks = (p.k / 16 + kDqKt - 1) / kDqKt;
    p.tasks = (p.n / 64) * p.k_tasks;
    p.vec_sz = (p.perm == ScalePerm::Block64 && aligned_to(p.scales, 16) && aligned_to(p.zeros, 16)) ? 1 : 0;
  }

  static QK_DEVICE QK_FORCEINLINE void dq_load(DqTask& tk, const DequantArgs& p, int64_t task, int lane) {
    tk.c = task / p.k_tasks;
    tk.kt0 = kDqKt * static_cast<int>(task - tk.c * p.k_tasks);
    const int k_blocks = p.k / 16;
    tk.nkt = k_blocks - tk.kt0 < kDqKt ? k_blocks - tk.kt0 : kDqKt;
    const uint32_t* const w = static_cast<const uint32_t*>(p.w);
#pragma unroll
    for (int kk = 0; kk < kDqKt; ++kk) {
      tk.v[kk] = make_uint4(0u, 0u, 0u, 0u);
      if (kk < tk.nkt) tk.v[kk] = load_stream16(w + static_cast<int64_t>(tk.kt0 + kk) * (2 * p.n) + 128 * tk.c + 4 * lane);
    }
  }

  template <class A>
  static QK_DEVICE QK_FORCEINLINE void dq_fill(DqTile& tile, const DqTask& tk, const DequantArgs& p, int lane) {
    const int g = lane >> 2;
    const int t = lane & 3;
    uint4 s = make_uint4(0u, 0u, 0u, 0u), z = s;
    int cur_grp = -1;
#pragma unroll
    for (int kk = 0; kk < kDqKt; ++kk) {
      if (kk < tk.nkt) {
        const int grp = 16 * (tk.kt0 + kk) / p.group;
        if (grp != cur_grp) {  // warp-uniform; at most once per task when G % 64 == 0
          s = marlin_lane_scales(p.scales, p.n, tk.c, g, grp, p.perm, p.vec_sz != 0);
          z = marlin_lane_scales(p.zeros, p.n, tk.c, g, grp, p.perm, p.vec_sz != 0);
          cur_grp = grp;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t word = word_of(tk.v[kk], j);
#pragma unroll
          for (int b = 0; b < 2; ++b) {
            const typename A::V2 sv = A::as_v2(bcast_bits(s, 2 * j + b));
            const typename A::V2 zv = A::as_v2(bcast_bits(z, 2 * j + b));
            uint32_t* const dst = tile.w + (16 * j + 8 * b + g) * kDqRowWords + 8 * kk + t;
            dst[0] = A::dequant2(word, 8 * b, sv, zv);      // k 16kk + 2t, +1
            dst[4] = A::dequant2(word, 8 * b + 4, sv, zv);  // k 16kk + 2t + 8, +9
          }
        }
      }
    }
  }

  static QK_DEVICE QK_FORCEINLINE void dq_store(const DqTile& tile, const DqTask& tk, const DequantArgs& p,
                                                int lane) {
    const int64_t k0 = 16 * static_cast<int64_t>(tk.kt0);
#pragma unroll
    for (int pass = 0; pass < 16; ++pass) {
      const int row = 4 * pass + (lane >> 3);
      const int piece = lane & 7;  // 8 values
      if (8 * piece < 16 * tk.nkt)
        *reinterpret_cast<uint4*>(p.out + (64 * tk.c + row) * p.k + k0 + 8 * piece) =
            *reinterpret_cast<const uint4*>(tile.w + row * kDqRowWords + 4 * piece);
    }
  }
};

}  // namespace i4
}  // namespace qk
