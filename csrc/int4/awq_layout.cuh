// The AWQ v2 layout as a policy of the int4 kernel templates (int4_gemv.cuh, int4_dequant.cuh);
// docs/layouts.md, "AWQ v2 layout".
//
// Layout reminder: P is int16 (N/4, K). Packed row nb holds channels 4nb..4nb+3; the 8 words
// 64q + 16i + 8h .. +7 (one 16-byte load) hold channel 4nb + i at the 32 consecutive k
// [64q + 32h, 64q + 32h + 32): word u, nibble j is k = 64q + 32h + u + 8j. So the 32-bit word r of
// such a load (int16 words 2r, 2r+1) gives, at nibble j of each half, the adjacent pair
// (k0 + 8j + 2r, k0 + 8j + 2r + 1): exactly one 16-bit pair after dequantization.
// Scales and zeros are (K/G, N) in natural channel order.
#pragma once

#include "int4/act.cuh"
#include "int4/int4_common.cuh"

namespace qk {
namespace i4 {

struct AwqLayout {
  // ---- fused product ---------------------------------------------------------------------------
  //
  // Column warp = 32 channels (8 packed rows); K unit = 128 k. Lane (g, t) = (lane/4, lane%4) loads
  // the four 16-byte words of packed row nbase + g at k0 = 128u + 32t (channels 4(nbase+g) + i,
  // i < 4), 32 consecutive k each. The weights are the mma A operand: tile T (0, 1) has rows g <->
  // channel i = 2T and g + 8 <-> channel i = 2T + 1. The 16 k of one mma are a permutation of
  // physical k chosen per lane column t: logical (2t, 2t+1) <-> k0 + 8(2p) + 2r + (0, 1) and
  // (2t+8, 2t+9) <-> k0 + 8(2p+1) + 2r + (0, 1), for step (p, r), p < 2, r < 4. The B operand
  // (activations) is read with the same permutation, so every mma is a sum over 16 distinct k.

  static constexpr int kColWarps = 4;
  static constexpr int kBlockCols = 32 * kColWarps;
  static constexpr int kTiles = 2;
  static constexpr int kUnitK = 128;
  static constexpr int kUnitChunks = kUnitK / 8;  // 16-byte activation chunks per row per unit

  struct Unit {
    uint4 w[4];  // channel i = 0..3 of the lane's packed row, 32 consecutive k
    uint2 s, z;  // their scales / zeros for the group of those k
  };

  struct Lane {
    const uint16_t* w;  // the lane's first weight word
    int64_t nb;         // the lane's packed row
    int g, t;
    bool ok;  // the packed row exists (N need not fill the last block)
  };

  static QK_HOST_DEVICE QK_FORCEINLINE int units(int k) { return (k + kUnitK - 1) / kUnitK; }

  static QK_DEVICE QK_FORCEINLINE Lane lane_context(const GemvArgs& p, int64_t col_warp, int lane) {
    Lane ln;
    ln.g = lane >> 2;
    ln.t = lane & 3;
    ln.nb = 8 * col_warp + ln.g;
    ln.ok = ln.nb < p.n / 4;
    ln.w = static_cast<const uint16_t*>(p.w) + (ln.ok ? ln.nb : 0) * p.k + 64 * (ln.t >> 1) + 8 * (ln.t & 1);
    return ln;
  }

  static QK_DEVICE QK_FORCEINLINE int64_t channel(const Lane& ln, int T, int e) { return 4 * ln.nb + 2 * T + (e >> 1); }

  static QK_DEVICE QK_FORCEINLINE void load(Unit& u, const Lane& ln, const GemvArgs& p, int unit) {
    const int k0 = unit * kUnitK + 32 * ln.t;
    if (ln.ok && k0 < p.k) {
      const uint16_t* const w = ln.w + unit * kUnitK;
#pragma unroll
      for (int i = 0; i < 4; ++i) u.w[i] = load_stream16(w + 16 * i);
      const int64_t off = static_cast<int64_t>(k0 / p.group) * p.n + 4 * ln.nb;
      if (p.vec_sz) {
        u.s = __ldg(reinterpret_cast<const uint2*>(p.scales + off));
        u.z = __ldg(reinterpret_cast<const uint2*>(p.zeros + off));
      } else {
        u.s = make_uint2(pack_halves(__ldg(p.scales + off), __ldg(p.scales + off + 1)),
                         pack_halves(__ldg(p.scales + off + 2), __ldg(p.scales + off + 3)));
        u.z = make_uint2(pack_halves(__ldg(p.zeros + off), __ldg(p.zeros + off + 1)),
                         pack_halves(__ldg(p.zeros + off + 2), __ldg(p.zeros + off + 3)));
      }
    } else {
      // Past K (K % 128 == 64) or past N: all-zero codes with zero scale/zero dequantize to
      // exactly 0 in either dtype, and the staged activations there are 0 too.
#pragma unroll
      for (int i = 0; i < 4; ++i) u.w[i] = make_uint4(0u, 0u, 0u, 0u);
      u.s = make_uint2(0u, 0u);
      u.z = make_uint2(0u, 0u);
    }
  }

  // Swizzled slot of 16-byte chunk c of staged activation row `row`. A quarter warp reads rows
  // with both parities and chunks 4t + l (t < 4) of one unit; flipping the low two chunk bits by
  // (row parity, bit 3 of c) spreads those 8 reads over 8 distinct bank groups. Row strides are
  // multiples of 128 bytes, and the XOR stays inside aligned groups of 8 chunks.
  static QK_DEVICE QK_FORCEINLINE int act_slot(int row, int c) { return c ^ (((row & 1) << 1) | ((c >> 3) & 1)); }

  // Copies activation rows 0..MT-1 of units [sl, sl + nunits) into the swizzled slice buffer;
  // rows >= m and k >= K are stored as zeros.
  template <int MT>
  static QK_DEVICE QK_FORCEINLINE void stage(uint4* act, const GemvArgs& p, int sl, int nunits, int tid,
                                             int nthreads) {
    constexpr int kBatch = 4;  // loads in flight per thread before the matching stores
    const int chunk_row = p.slice_units * kUnitChunks;
    const int cols = nunits * kUnitChunks;
    const int k_lo = sl * kUnitK;
    const int total = MT * cols;
    for (int base = tid; base < total; base += nthreads * kBatch) {
      uint4 v[kBatch];
      int slot[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int idx = base + j * nthreads;
        v[j] = make_uint4(0u, 0u, 0u, 0u);
        slot[j] = -1;
        if (idx < total) {
          const int row = idx / cols;
          const int c = idx - row * cols;
          const int kk = k_lo + 8 * c;
          if (row < p.m && kk < p.k)
            v[j] = __ldg(reinterpret_cast<const uint4*>(p.a + static_cast<int64_t>(row) * p.k + kk));
          slot[j] = row * chunk_row + act_slot(row, c);
        }
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (slot[j] >= 0) act[slot[j]] = v[j];
    }
  }

  template <class A, int MT>
  static QK_DEVICE QK_FORCEINLINE void compute(float (&acc)[kTiles][MT > 8 ? 2 : 1][4], const Unit& u,
                                               const uint4* act, const GemvArgs& p, int unit_in_slice,
                                               const Lane& ln) {
    constexpr int NB = MT > 8 ? 2 : 1;
    const int chunk_row = p.slice_units * kUnitChunks;
    const int c_first = unit_in_slice * kUnitChunks + 4 * ln.t;
    const uint4 sv = make_uint4(u.s.x, u.s.y, 0u, 0u);
    const uint4 zv = make_uint4(u.z.x, u.z.y, 0u, 0u);
    typename A::V2 s2[4], z2[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s2[i] = A::as_v2(bcast_bits(sv, i));
      z2[i] = A::as_v2(bcast_bits(zv, i));
    }
#pragma unroll
    for (int pp = 0; pp < 2; ++pp) {
      // Activation chunks 2pp, 2pp+1 of the lane's 32 k: rows g (and g + 8), k0 + 16pp .. +15.
      uint4 b[NB][2];
#pragma unroll
      for (int h = 0; h < NB; ++h) {
        const int row = ln.g + 8 * h;
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int c = c_first + 2 * pp + q;
          b[h][q] = (MT >= 8 || row < MT) ? act[row * chunk_row + act_slot(row, c)] : make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int T = 0; T < 2; ++T) {
          const uint32_t wlo = word_of(u.w[2 * T], r);
          const uint32_t whi = word_of(u.w[2 * T + 1], r);
          const uint32_t a0 = A::dequant2(wlo, 8 * pp, s2[2 * T], z2[2 * T]);              // ch 2T, nibble 2pp
          const uint32_t a1 = A::dequant2(whi, 8 * pp, s2[2 * T + 1], z2[2 * T + 1]);      // ch 2T+1
          const uint32_t a2 = A::dequant2(wlo, 8 * pp + 4, s2[2 * T], z2[2 * T]);          // ch 2T, nibble 2pp+1
          const uint32_t a3 = A::dequant2(whi, 8 * pp + 4, s2[2 * T + 1], z2[2 * T + 1]);  // ch 2T+1
#pragma unroll
          for (int h = 0; h < NB; ++h) A::mma(acc[T][h], a0, a1, a2, a3, word_of(b[h][0], r), word_of(b[h][1], r));
        }
      }
    }
  }

  // Host: units staged at a time (at most kActSmemHalves activation elements over MT rows).
  static int slice_units(int mt, int64_t per_split) {
    int64_t s = kActSmemHalves / mt / kUnitK;
    if (s > per_split) s = per_split;
    return static_cast<int>(s < 1 ? 1 : s);
  }
  static size_t smem_bytes(int mt, int slice) { return static_cast<size_t>(mt) * slice * kUnitK * 2; }
  // A lane's 4 channels are 4 adjacent values: one 8-byte load when the tensors allow it.
  static bool vector_scales(const GemvArgs& p) { return aligned_to(p.scales, 8) && aligned_to(p.zeros, 8); }

  // ---- dequantization ----------------------------------------------------------------------------
  //
  // Task = packed row nb, k window [kbase, kbase + kDqTaskK). Lane l's load r reads words
  // kbase + 256r + 8l .. +7, i.e. channel i = (l/2)%4, k0 = kbase + 256r + 64(l/8) + 32(l%2): loads
  // are 512 contiguous bytes per warp. The 4 output rows are assembled in the warp's tile and
  // written back as 512 contiguous bytes per store instruction.

  static constexpr int kDqWarps = 8;
  static constexpr int kDqLoads = 2;               // 16-byte loads per lane per task
  static constexpr int kDqTaskK = 256 * kDqLoads;  // k per task (= int16 words per packed row)
  static constexpr int kDqChunks = kDqTaskK / 8;   // 16-byte output chunks per channel per task

  struct DqTile {
    uint4 c[4][kDqChunks];
  };
  struct DqTask {
    uint4 v[kDqLoads];
    uint32_t s[kDqLoads], z[kDqLoads];  // the load's scale / zero in both halves
    int64_t nb;
    int kbase;
  };

  // Chunk c of tile row i lives at slot c ^ i: the 8 lanes of a quarter warp write the same chunk
  // offset of 4 rows x 2 halves, which the XOR spreads over 8 distinct 16-byte bank groups.
  static QK_DEVICE QK_FORCEINLINE int dq_slot(int row, int c) { return c ^ row; }

  static void dq_plan(DequantArgs& p) {
    p.k_tasks = (p.k + kDqTaskK - 1) / kDqTaskK;
    p.tasks = (p.n / 4) * p.k_tasks;
    p.vec_sz = 0;
  }

  static QK_DEVICE QK_FORCEINLINE void dq_load(DqTask& tk, const DequantArgs& p, int64_t task, int lane) {
    tk.nb = task / p.k_tasks;
    tk.kbase = static_cast<int>(task - tk.nb * p.k_tasks) * kDqTaskK;
    const uint16_t* const wrow = static_cast<const uint16_t*>(p.w) + tk.nb * p.k;
    const int i = (lane >> 1) & 3;
#pragma unroll
    for (int r = 0; r < kDqLoads; ++r) {
      const int word = tk.kbase + 256 * r + 8 * lane;  // word and its k window share one 64-block
      tk.v[r] = make_uint4(0u, 0u, 0u, 0u);
      uint16_t s = 0, z = 0;
      if (word < p.k) {
        tk.v[r] = load_stream16(wrow + word);
        const int k0 = tk.kbase + 256 * r + 64 * (lane >> 3) + 32 * (lane & 1);
        const int64_t off = static_cast<int64_t>(k0 / p.group) * p.n + 4 * tk.nb + i;
        s = __ldg(p.scales + off);
        z = __ldg(p.zeros + off);
      }
      tk.s[r] = pack_halves(s, s);
      tk.z[r] = pack_halves(z, z);
    }
  }

  template <class A>
  static QK_DEVICE QK_FORCEINLINE void dq_fill(DqTile& tile, const DqTask& tk, const DequantArgs& p, int lane) {
    (void)p;
    const int i = (lane >> 1) & 3;  // channel inside the packed row
#pragma unroll
    for (int r = 0; r < kDqLoads; ++r) {
      const typename A::V2 s2 = A::as_v2(tk.s[r]), z2 = A::as_v2(tk.z[r]);
      const int c0 = 32 * r + 8 * (lane >> 3) + 4 * (lane & 1);  // first chunk of this load's 32 k
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // chunk j = nibble j of the 8 words = k0 + 8j .. +7
        uint4 o;
        o.x = A::dequant2(tk.v[r].x, 4 * j, s2, z2);
        o.y = A::dequant2(tk.v[r].y, 4 * j, s2, z2);
        o.z = A::dequant2(tk.v[r].z, 4 * j, s2, z2);
        o.w = A::dequant2(tk.v[r].w, 4 * j, s2, z2);
        tile.c[i][dq_slot(i, c0 + j)] = o;
      }
    }
  }

  static QK_DEVICE QK_FORCEINLINE void dq_store(const DqTile& tile, const DqTask& tk, const DequantArgs& p,
                                                int lane) {
#pragma unroll
    for (int row = 0; row < 4; ++row) {
      uint16_t* const orow = p.out + (4 * tk.nb + row) * p.k + tk.kbase;
#pragma unroll
      for (int q = 0; q < kDqLoads; ++q) {
        const int c = 32 * q + lane;
        if (tk.kbase + 8 * c < p.k) *reinterpret_cast<uint4*>(orow + 8 * c) = tile.c[row][dq_slot(row, c)];
      }
    }
  }
};

}  // namespace i4
}  // namespace qk
