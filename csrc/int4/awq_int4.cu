// AWQ-v2 int4 weights (docs/layouts.md, "AWQ v2 layout"): dequantization to a natural (N, K) fp16 matrix, and the
// fused small-M product out = a * Wd^T on tensor cores.
//
// Layout reminder: P is int16 (N/4, K). Packed row nb holds channels 4nb..4nb+3; the 8 words
// 64q + 16i + 8h .. +7 (one 16-byte load) hold channel 4nb + i at the 32 consecutive k
// [64q + 32h, 64q + 32h + 32): word u, nibble j is k = 64q + 32h + u + 8j. So the 32-bit word r of
// such a load (int16 words 2r, 2r+1) gives, at nibble j of each half, the adjacent pair
// (k0 + 8j + 2r, k0 + 8j + 2r + 1): exactly one fp16x2 after dequantization.
#include "common/launchers.h"
#include "int4/int4_common.cuh"

namespace qk {
namespace {

using i4::bcast;
using i4::dequant2;
using i4::load_stream16;
using i4::mma_16816;
using i4::word_of;

QK_DEVICE QK_FORCEINLINE uint32_t pack_halves(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// ---- dequantization --------------------------------------------------------------------------
//
// Work item = one warp task: packed row nb, k window [kbase, kbase + kDqTaskK). Lane l's load r
// reads words kbase + 256r + 8l .. +7, i.e. channel i = (l/2)%4, k0 = kbase + 256r + 64(l/8) +
// 32(l%2): loads are 512 contiguous bytes per warp. The 4 output rows are assembled in a per-warp
// shared tile and written back as 512 contiguous bytes per store instruction.

constexpr int kDqWarps = 8;
constexpr int kDqLoads = 2;                 // 16-byte loads per lane per task
constexpr int kDqTaskK = 256 * kDqLoads;    // k per task (= int16 words per packed row)
constexpr int kDqChunks = kDqTaskK / 8;     // 16-byte output chunks per channel per task

// Chunk c of tile row i lives at slot c ^ i: the 8 lanes of a quarter warp write the same chunk
// offset t of 4 rows x 2 halves, which the XOR spreads over 8 distinct 16-byte bank groups.
QK_DEVICE QK_FORCEINLINE int dq_slot(int row, int c) { return c ^ row; }

__global__ void __launch_bounds__(kDqWarps * 32)
    awq_dequant_kernel(const uint16_t* QK_RESTRICT w, const uint16_t* QK_RESTRICT scales,
                       const uint16_t* QK_RESTRICT zeros, uint16_t* QK_RESTRICT out, int64_t n, int k, int group,
                       int64_t tasks, int tasks_per_row) {
  __shared__ uint4 tile[kDqWarps][4][kDqChunks];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int i = (lane >> 1) & 3;  // channel inside the packed row
  uint4(&my)[4][kDqChunks] = tile[warp];

  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kDqWarps + warp; task < tasks;
       task += static_cast<int64_t>(gridDim.x) * kDqWarps) {
    const int64_t nb = task / tasks_per_row;
    const int kbase = static_cast<int>(task - nb * tasks_per_row) * kDqTaskK;
    const uint16_t* const wrow = w + nb * k;

    uint4 v[kDqLoads];
    __half2 s2[kDqLoads], z2[kDqLoads];
#pragma unroll
    for (int r = 0; r < kDqLoads; ++r) {
      const int word = kbase + 256 * r + 8 * lane;  // word and its k window share one 64-block
      v[r] = make_uint4(0u, 0u, 0u, 0u);
      uint16_t s = 0, z = 0;
      if (word < k) {
        v[r] = load_stream16(wrow + word);
        const int k0 = kbase + 256 * r + 64 * (lane >> 3) + 32 * (lane & 1);
        const int64_t off = static_cast<int64_t>(k0 / group) * n + 4 * nb + i;
        s = __ldg(scales + off);
        z = __ldg(zeros + off);
      }
      s2[r] = i4::u32_as_h2(pack_halves(s, s));
      z2[r] = i4::u32_as_h2(pack_halves(z, z));
    }

    __syncwarp();  // the previous task's tile reads are done
#pragma unroll
    for (int r = 0; r < kDqLoads; ++r) {
      const int c0 = 32 * r + 8 * (lane >> 3) + 4 * (lane & 1);  // first chunk of this load's 32 k
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // chunk j = nibble j of the 8 words = k0 + 8j .. +7
        uint4 o;
        o.x = dequant2(v[r].x, 4 * j, s2[r], z2[r]);
        o.y = dequant2(v[r].y, 4 * j, s2[r], z2[r]);
        o.z = dequant2(v[r].z, 4 * j, s2[r], z2[r]);
        o.w = dequant2(v[r].w, 4 * j, s2[r], z2[r]);
        my[i][dq_slot(i, c0 + j)] = o;
      }
    }
    __syncwarp();

#pragma unroll
    for (int row = 0; row < 4; ++row) {
      uint16_t* const orow = out + (4 * nb + row) * k + kbase;
#pragma unroll
      for (int p = 0; p < kDqLoads; ++p) {
        const int c = 32 * p + lane;
        if (kbase + 8 * c < k) *reinterpret_cast<uint4*>(orow + 8 * c) = my[row][dq_slot(row, c)];
      }
    }
  }
}

// ---- fused small-M product ------------------------------------------------------------------
//
// Block = 128 channels (4 column warps x 32) x one split's K range; two warps share each column
// tile and take alternate 128-k units. The activation rows of the split are staged in shared
// memory slice by slice and read by all 8 warps.
//
// Per unit, lane (g, t) = (lane/4, lane%4) of a warp with packed rows nbase..nbase+7 loads the
// four 16-byte words of packed row nbase + g at k0 = 128u + 32t (channels 4(nbase+g) + i, i < 4),
// 32 consecutive k each. The weights are the mma A operand: tile T (0, 1) has rows g <-> channel
// i = 2T and g + 8 <-> channel i = 2T + 1. The 16 k of one mma are a permutation of physical k
// chosen per lane column t: logical (2t, 2t+1) <-> k0 + 8(2p) + 2r + (0, 1) and (2t+8, 2t+9) <->
// k0 + 8(2p+1) + 2r + (0, 1), for step (p, r), p < 2, r < 4. The B operand (activations) is read
// with the same permutation, so every mma is a sum over 16 distinct physical k.

constexpr int kGvColWarps = 4;
constexpr int kGvKWarps = 2;
constexpr int kGvThreads = 32 * kGvColWarps * kGvKWarps;
constexpr int kGvCols = 32 * kGvColWarps;  // channels per block
constexpr int kUnitK = 128;                // k per warp step
constexpr int kUnitChunks = kUnitK / 8;    // 16-byte activation chunks per row per unit
static_assert(kGvKWarps == 2, "the reduction below pairs two K warps");

// Swizzled slot of 16-byte chunk c of staged activation row `row`. A quarter warp reads rows with
// both parities and chunks 4t + l (t < 4) of one unit; flipping the low two chunk bits by
// (row parity, bit 3 of c) spreads those 8 reads over 8 distinct bank groups. Row strides are
// multiples of 128 bytes, and the XOR stays inside aligned groups of 8 chunks.
QK_DEVICE QK_FORCEINLINE int act_slot(int row, int c) { return c ^ (((row & 1) << 1) | ((c >> 3) & 1)); }

struct AwqUnit {
  uint4 w[4];  // channel i = 0..3 of the lane's packed row, 32 consecutive k
  uint2 s, z;  // their scales / zeros (fp16) for the group of those k
};

QK_DEVICE QK_FORCEINLINE void awq_load_unit(AwqUnit& u, const uint16_t* wlane, const uint16_t* scales,
                                            const uint16_t* zeros, int64_t sz_col, int64_t n, int k, int group,
                                            int unit, int t, bool row_ok, bool vec_sz) {
  const int k0 = unit * kUnitK + 32 * t;
  if (row_ok && k0 < k) {
    const uint16_t* const p = wlane + unit * kUnitK;
#pragma unroll
    for (int i = 0; i < 4; ++i) u.w[i] = load_stream16(p + 16 * i);
    const int64_t off = static_cast<int64_t>(k0 / group) * n + sz_col;
    if (vec_sz) {
      u.s = __ldg(reinterpret_cast<const uint2*>(scales + off));
      u.z = __ldg(reinterpret_cast<const uint2*>(zeros + off));
    } else {
      u.s = make_uint2(pack_halves(__ldg(scales + off), __ldg(scales + off + 1)),
                       pack_halves(__ldg(scales + off + 2), __ldg(scales + off + 3)));
      u.z = make_uint2(pack_halves(__ldg(zeros + off), __ldg(zeros + off + 1)),
                       pack_halves(__ldg(zeros + off + 2), __ldg(zeros + off + 3)));
    }
  } else {
    // Past K (K % 128 == 64) or past N: all-zero codes with zero scale/zero dequantize to exactly
    // 0, and the staged activations there are 0 too.
#pragma unroll
    for (int i = 0; i < 4; ++i) u.w[i] = make_uint4(0u, 0u, 0u, 0u);
    u.s = make_uint2(0u, 0u);
    u.z = make_uint2(0u, 0u);
  }
}

template <int MT>
QK_DEVICE QK_FORCEINLINE void awq_compute_unit(float (&acc)[2][MT > 8 ? 2 : 1][4], const AwqUnit& u,
                                               const uint4* act, int chunk_row, int c_first, int g) {
  constexpr int NB = MT > 8 ? 2 : 1;  // activation row groups of 8 (mma B operands)
  const uint4 sv = make_uint4(u.s.x, u.s.y, 0u, 0u);
  const uint4 zv = make_uint4(u.z.x, u.z.y, 0u, 0u);
  __half2 s2[4], z2[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    s2[i] = bcast(sv, i);
    z2[i] = bcast(zv, i);
  }
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    // Activation chunks 2p, 2p+1 of the lane's 32 k: rows g (and g + 8), k0 + 16p .. +15.
    uint4 b[NB][2];
#pragma unroll
    for (int h = 0; h < NB; ++h) {
      const int row = g + 8 * h;
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int c = c_first + 2 * p + q;
        b[h][q] = (MT >= 8 || row < MT) ? act[row * chunk_row + act_slot(row, c)] : make_uint4(0u, 0u, 0u, 0u);
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
#pragma unroll
      for (int T = 0; T < 2; ++T) {
        const uint32_t wlo = word_of(u.w[2 * T], r);
        const uint32_t whi = word_of(u.w[2 * T + 1], r);
        const uint32_t a0 = dequant2(wlo, 8 * p, s2[2 * T], z2[2 * T]);              // ch 2T, nibble 2p
        const uint32_t a1 = dequant2(whi, 8 * p, s2[2 * T + 1], z2[2 * T + 1]);      // ch 2T+1
        const uint32_t a2 = dequant2(wlo, 8 * p + 4, s2[2 * T], z2[2 * T]);          // ch 2T, nibble 2p+1
        const uint32_t a3 = dequant2(whi, 8 * p + 4, s2[2 * T + 1], z2[2 * T + 1]);  // ch 2T+1
#pragma unroll
        for (int h = 0; h < NB; ++h) mma_16816(acc[T][h], a0, a1, a2, a3, word_of(b[h][0], r), word_of(b[h][1], r));
      }
    }
  }
}

// Copies activation rows 0..MT-1, k in [k_lo, k_lo + 8 * cols), into the swizzled slice buffer;
// rows >= m and k >= K are stored as zeros.
template <int MT>
QK_DEVICE QK_FORCEINLINE void awq_stage(uint4* act, const uint16_t* a, int m, int k, int k_lo, int cols,
                                        int chunk_row, int tid) {
  constexpr int kBatch = 4;  // loads in flight per thread before the matching stores
  const int total = MT * cols;
  for (int base = tid; base < total; base += kGvThreads * kBatch) {
    uint4 v[kBatch];
    int slot[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int idx = base + j * kGvThreads;
      v[j] = make_uint4(0u, 0u, 0u, 0u);
      slot[j] = -1;
      if (idx < total) {
        const int row = idx / cols;
        const int c = idx - row * cols;
        const int kk = k_lo + 8 * c;
        if (row < m && kk < k) v[j] = __ldg(reinterpret_cast<const uint4*>(a + static_cast<int64_t>(row) * k + kk));
        slot[j] = row * chunk_row + act_slot(row, c);
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (slot[j] >= 0) act[slot[j]] = v[j];
  }
}

template <int MT>
__global__ void __launch_bounds__(kGvThreads)
    awq_gemv_kernel(const uint16_t* QK_RESTRICT a, const uint16_t* QK_RESTRICT w,
                    const uint16_t* QK_RESTRICT scales, const uint16_t* QK_RESTRICT zeros,
                    uint16_t* QK_RESTRICT out, float* QK_RESTRICT ws, int m, int64_t n, int k, int group,
                    int splits, int slice_units, int vec_sz) {
  constexpr int NB = MT > 8 ? 2 : 1;
  constexpr int kAcc = 2 * NB * 4;  // fp32 partial sums per lane
  extern __shared__ uint4 act[];    // [MT][slice_units * kUnitChunks], swizzled with act_slot
  __shared__ float red[kGvColWarps * kAcc * 32];

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int cw = warp % kGvColWarps;
  const int kw = warp / kGvColWarps;
  const int g = lane >> 2;
  const int t = lane & 3;

  // This split's K units: contiguous, possibly uneven; empty ones still write zero partials.
  const int units = (k + kUnitK - 1) / kUnitK;
  const int split = static_cast<int>(blockIdx.y);
  const int u_begin = static_cast<int>(static_cast<int64_t>(units) * split / splits);
  const int u_end = static_cast<int>(static_cast<int64_t>(units) * (split + 1) / splits);

  const int64_t nbase = static_cast<int64_t>(blockIdx.x) * (kGvCols / 4) + 8 * cw;  // warp's first packed row
  const int64_t nb = nbase + g;
  const bool row_ok = nb < n / 4;
  const uint16_t* const wlane = w + (row_ok ? nb : 0) * k + 64 * (t >> 1) + 8 * (t & 1);
  const int64_t sz_col = 4 * nb;
  const int chunk_row = slice_units * kUnitChunks;

  float acc[2][NB][4];
#pragma unroll
  for (int T = 0; T < 2; ++T)
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[T][h][e] = 0.f;

  // Software pipeline: the next unit's weights are in flight while the current one is consumed,
  // also across slice boundaries (the weights do not depend on the staged activations).
  AwqUnit cur = {}, nxt = {};
  int u = u_begin + kw;
  if (u < u_end) awq_load_unit(cur, wlane, scales, zeros, sz_col, n, k, group, u, t, row_ok, vec_sz != 0);
  for (int sl = u_begin; sl < u_end; sl += slice_units) {
    const int sl_end = sl + slice_units < u_end ? sl + slice_units : u_end;
    __syncthreads();  // every warp is done with the previous slice
    awq_stage<MT>(act, a, m, k, sl * kUnitK, (sl_end - sl) * kUnitChunks, chunk_row, tid);
    __syncthreads();
    for (; u < sl_end; u += kGvKWarps) {
      if (u + kGvKWarps < u_end)
        awq_load_unit(nxt, wlane, scales, zeros, sz_col, n, k, group, u + kGvKWarps, t, row_ok, vec_sz != 0);
      awq_compute_unit<MT>(acc, cur, act, chunk_row, (u - sl) * kUnitChunks + 4 * t, g);
      cur = nxt;
    }
  }

  // The two K warps of a column tile meet in shared memory; the sum order is fixed.
  if (kw == 1) {
#pragma unroll
    for (int T = 0; T < 2; ++T)
#pragma unroll
      for (int h = 0; h < NB; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[((cw * kAcc) + (T * NB + h) * 4 + e) * 32 + lane] = acc[T][h][e];
  }
  __syncthreads();
  if (kw != 0) return;

  // acc[T][h]: e = 0, 1 -> channel 4nb + 2T, rows 8h + 2t + (0, 1); e = 2, 3 -> channel 4nb + 2T + 1.
#pragma unroll
  for (int T = 0; T < 2; ++T)
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = acc[T][h][e] + red[((cw * kAcc) + (T * NB + h) * 4 + e) * 32 + lane];
        const int row = 8 * h + 2 * t + (e & 1);
        const int64_t ch = 4 * nb + 2 * T + (e >> 1);
        if (row_ok && row < m) {
          if (splits == 1) {
            out[row * n + ch] = __half_as_ushort(__float2half_rn(v));
          } else {
            ws[(static_cast<int64_t>(split) * m + row) * n + ch] = v;
          }
        }
      }
}

template <int MT>
cudaError_t launch_awq_gemv_mt(const void* a, const uint16_t* w, const void* scales, const void* zeros, void* out,
                               float* ws, int64_t m, int64_t n, int64_t k, int64_t group, int splits,
                               cudaStream_t stream) {
  const int64_t units = (k + kUnitK - 1) / kUnitK;
  int64_t per_split = (units + splits - 1) / splits;
  if (per_split < 1) per_split = 1;
  int64_t slice_units = i4::kActSmemHalves / MT / kUnitK;
  if (slice_units > per_split) slice_units = per_split;
  const size_t smem = static_cast<size_t>(MT) * static_cast<size_t>(slice_units) * kUnitK * 2;
  const bool vec_sz = i4::aligned_to(scales, 8) && i4::aligned_to(zeros, 8);
  const dim3 grid(static_cast<unsigned>((n + kGvCols - 1) / kGvCols), static_cast<unsigned>(splits));
  awq_gemv_kernel<MT><<<grid, kGvThreads, smem, stream>>>(
      static_cast<const uint16_t*>(a), w, static_cast<const uint16_t*>(scales), static_cast<const uint16_t*>(zeros),
      static_cast<uint16_t*>(out), ws, static_cast<int>(m), n, static_cast<int>(k), static_cast<int>(group), splits,
      static_cast<int>(slice_units), vec_sz ? 1 : 0);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  return launch_splitk_reduce(ws, splits, m, n, nullptr, ScalePerm::None, DType::F16, out, stream);
}

}  // namespace

cudaError_t launch_awq_dequant(const uint16_t* w, const void* scales, const void* zeros, void* out, int64_t n,
                               int64_t k, int64_t group_size, cudaStream_t stream) {
  if (n <= 0 || k <= 0) return cudaSuccess;
  if (k > 0x7FFFFFFF || group_size <= 0 || n % 4 != 0 || k % 64 != 0) return cudaErrorInvalidValue;
  const int tasks_per_row = static_cast<int>((k + kDqTaskK - 1) / kDqTaskK);
  const int64_t tasks = (n / 4) * tasks_per_row;
  awq_dequant_kernel<<<i4::grid_for(tasks, kDqWarps), kDqWarps * 32, 0, stream>>>(
      w, static_cast<const uint16_t*>(scales), static_cast<const uint16_t*>(zeros), static_cast<uint16_t*>(out), n,
      static_cast<int>(k), static_cast<int>(group_size), tasks, tasks_per_row);
  return cudaGetLastError();
}

cudaError_t launch_awq_gemv(const void* a, const uint16_t* w, const void* scales, const void* zeros, void* out,
                            float* ws, int64_t m, int64_t n, int64_t k, int64_t group_size, int splits,
                            cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (m > kMaxGemvM || k < 0 || k > 0x7FFFFFFF || group_size <= 0 || n % 4 != 0 || k % 64 != 0 || splits < 1 ||
      splits > kMaxSplits || (splits > 1 && ws == nullptr))
    return cudaErrorInvalidValue;
  switch (i4::row_tile(m)) {
    case 1: return launch_awq_gemv_mt<1>(a, w, scales, zeros, out, ws, m, n, k, group_size, splits, stream);
    case 2: return launch_awq_gemv_mt<2>(a, w, scales, zeros, out, ws, m, n, k, group_size, splits, stream);
    case 4: return launch_awq_gemv_mt<4>(a, w, scales, zeros, out, ws, m, n, k, group_size, splits, stream);
    case 8: return launch_awq_gemv_mt<8>(a, w, scales, zeros, out, ws, m, n, k, group_size, splits, stream);
    default: return launch_awq_gemv_mt<16>(a, w, scales, zeros, out, ws, m, n, k, group_size, splits, stream);
  }
}

int plan_awq_gemv_splits(int64_t m, int64_t n, int64_t k, int64_t group_size, int sm_count) {
  (void)group_size;  // a lane's 32 k always lie in one group (G % 32 == 0): no alignment needed
  // Column unit: one 128-channel block; K unit: one 128-k warp step.
  return plan_splits(m, (n + kGvCols - 1) / kGvCols, (k + kUnitK - 1) / kUnitK, sm_count);
}

}  // namespace qk
