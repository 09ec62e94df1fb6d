// Marlin int4 weights with zero points (docs/layouts.md, "Int4 Marlin layout"): dequantization to a natural (N, K) fp16
// matrix, and the fused small-M product out = a * Wd^T on tensor cores.
//
// Layout reminder: P is int32 (K/16, 2N). The 16-byte load of words 128c + 4i .. +3 in row kt gives
// lane i = 4g + t the words j = 0..3 of channels 64c + 16j + (g, g + 8) at k = 16kt + 2t + (0, 1, 8, 9):
// nibbles (0, 4) = channel 16j + g at (2t, 2t+1), (1, 5) = same channel at (2t+8, 2t+9), (2, 6) and
// (3, 7) = channel 16j + 8 + g at those k. Word j is therefore, after dequantization, exactly lane
// i's m16n8k16 A fragment of the 16-channel tile j (a0 = nibbles 0/4, a1 = 2/6, a2 = 1/5, a3 = 3/7).
// Scales and zeros are (K/G, N) fp16 with channel n of group g at [g, scale_slot(n, perm)]; lane
// (g, t) needs channels 64c + 8u + g (u = 2j + b), which Block64 stores at 64c + 8g + u: 16 bytes.
#include "common/launchers.h"
#include "int4/int4_common.cuh"
#include "common/scale_perm.cuh"

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

// Scales (or zeros) of channels 64c + 8u + g, u = 0..7, for group `grp`, as 8 halves in u order.
QK_DEVICE QK_FORCEINLINE uint4 load_lane_scales(const uint16_t* QK_RESTRICT p, int64_t n, int64_t c, int g, int grp,
                                                ScalePerm perm, bool vec) {
  const uint16_t* const row = p + static_cast<int64_t>(grp) * n;
  if (vec) return __ldg(reinterpret_cast<const uint4*>(row + 64 * c + 8 * g));  // Block64, 16-byte aligned
  uint16_t h[8];
#pragma unroll
  for (int u = 0; u < 8; ++u) h[u] = __ldg(row + scale_slot(64 * c + 8 * u + g, perm));
  return make_uint4(pack_halves(h[0], h[1]), pack_halves(h[2], h[3]), pack_halves(h[4], h[5]),
                    pack_halves(h[6], h[7]));
}

// ---- dequantization --------------------------------------------------------------------------
//
// Work item = one warp task: 64 channels (c) x 64 k (4 rows kt of P). The 4 loads per lane are
// 512 contiguous bytes per warp each. The warp scatters its values into a private [64][64 + 8]
// fp16 tile and writes it back row by row: each store instruction covers 4 full 128-byte lines.

constexpr int kMdWarps = 4;
constexpr int kMdKt = 4;                        // 16-k rows of P per task
constexpr int kMdRowWords = (16 * kMdKt + 8) / 2;  // tile row: 64 k + 8 halves of padding, in words

__global__ void __launch_bounds__(kMdWarps * 32)
    marlin_dequant_kernel(const uint32_t* QK_RESTRICT w, const uint16_t* QK_RESTRICT scales,
                          const uint16_t* QK_RESTRICT zeros, uint16_t* QK_RESTRICT out, int64_t n, int k, int group,
                          ScalePerm perm, int vec_sz, int64_t tasks, int k_tasks) {
  // Padding: lane (g, t) writes word 36 * row + 8kk + t (+4) with row = 16j + 8b + g, i.e. bank
  // 4g + t + const, so each scatter instruction is conflict-free.
  __shared__ QK_ALIGN(16) uint32_t tile[kMdWarps][64 * kMdRowWords];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  uint32_t* const my = tile[warp];
  const int k_blocks = k / 16;

  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kMdWarps + warp; task < tasks;
       task += static_cast<int64_t>(gridDim.x) * kMdWarps) {
    const int64_t c = task / k_tasks;
    const int kq = static_cast<int>(task - c * k_tasks);
    const int kt0 = kMdKt * kq;
    const int nkt = k_blocks - kt0 < kMdKt ? k_blocks - kt0 : kMdKt;

    uint4 v[kMdKt];
#pragma unroll
    for (int kk = 0; kk < kMdKt; ++kk) {
      v[kk] = make_uint4(0u, 0u, 0u, 0u);
      if (kk < nkt) v[kk] = load_stream16(w + static_cast<int64_t>(kt0 + kk) * (2 * n) + 128 * c + 4 * lane);
    }

    __syncwarp();  // the previous task's tile reads are done
    uint4 s = make_uint4(0u, 0u, 0u, 0u), z = s;
    int cur_grp = -1;
#pragma unroll
    for (int kk = 0; kk < kMdKt; ++kk) {
      if (kk < nkt) {
        const int grp = 16 * (kt0 + kk) / group;
        if (grp != cur_grp) {  // warp-uniform; at most once per task when G % 64 == 0
          s = load_lane_scales(scales, n, c, g, grp, perm, vec_sz != 0);
          z = load_lane_scales(zeros, n, c, g, grp, perm, vec_sz != 0);
          cur_grp = grp;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t word = word_of(v[kk], j);
#pragma unroll
          for (int b = 0; b < 2; ++b) {
            const __half2 sv = bcast(s, 2 * j + b);
            const __half2 zv = bcast(z, 2 * j + b);
            uint32_t* const dst = my + (16 * j + 8 * b + g) * kMdRowWords + 8 * kk + t;
            dst[0] = dequant2(word, 8 * b, sv, zv);      // k 16kk + 2t, +1
            dst[4] = dequant2(word, 8 * b + 4, sv, zv);  // k 16kk + 2t + 8, +9
          }
        }
      }
    }
    __syncwarp();

    const int64_t k0 = 16 * static_cast<int64_t>(kt0);
#pragma unroll
    for (int pass = 0; pass < 16; ++pass) {
      const int row = 4 * pass + (lane >> 3);
      const int piece = lane & 7;  // 8 halves
      if (8 * piece < 16 * nkt)
        *reinterpret_cast<uint4*>(out + (64 * c + row) * k + k0 + 8 * piece) =
            *reinterpret_cast<const uint4*>(my + row * kMdRowWords + 4 * piece);
    }
  }
}

// ---- fused small-M product ------------------------------------------------------------------
//
// Block = 128 channels (2 column warps x 64) x one split's K range; two warps share each column
// tile and take alternate units of UKT rows kt (64 k when G % 64 == 0, else 16 k, so that a unit
// never straddles a group). The activation rows are staged in shared memory slice by slice, each
// 16-k block stored in the order (0,1,8,9, 2,3,10,11, ...) so that lane t finds its B fragment
// (k 2t, 2t+1, 2t+8, 2t+9) as 8 contiguous bytes. Weights are the mma A operand (4 tiles of 16
// channels per kt), activations the B operand (rows 0..7, and 8..15 when MT > 8).

constexpr int kMgColWarps = 2;
constexpr int kMgKWarps = 2;
constexpr int kMgThreads = 32 * kMgColWarps * kMgKWarps;
constexpr int kMgCols = 64 * kMgColWarps;  // channels per block
static_assert(kMgKWarps == 2, "the reduction below pairs two K warps");

// Halves per staged activation row: units * 16 * UKT k, rounded up to 64, plus 16. The row stride
// is then 32 mod 128 bytes, so the 8-byte reads of lanes (g, t), g < 4, hit distinct banks.
QK_HOST_DEVICE QK_FORCEINLINE int act_row_halves(int k_per_slice) { return (k_per_slice + 63) / 64 * 64 + 16; }

template <int UKT>
struct MarlinUnit {
  uint4 w[UKT];  // words j = 0..3 of rows kt = UKT * unit + kk
  uint4 s, z;    // scales / zeros of channels 64c + 8u + g for the unit's group
};

template <int UKT>
QK_DEVICE QK_FORCEINLINE void marlin_load_unit(MarlinUnit<UKT>& u, const uint32_t* wlane, const uint16_t* scales,
                                               const uint16_t* zeros, int64_t n, int64_t c, int g, int group,
                                               int unit, ScalePerm perm, bool col_ok, bool vec_sz) {
  if (col_ok) {
#pragma unroll
    for (int kk = 0; kk < UKT; ++kk) u.w[kk] = load_stream16(wlane + static_cast<int64_t>(UKT * unit + kk) * (2 * n));
    const int grp = 16 * UKT * unit / group;
    u.s = load_lane_scales(scales, n, c, g, grp, perm, vec_sz);
    u.z = load_lane_scales(zeros, n, c, g, grp, perm, vec_sz);
  } else {
#pragma unroll
    for (int kk = 0; kk < UKT; ++kk) u.w[kk] = make_uint4(0u, 0u, 0u, 0u);
    u.s = make_uint4(0u, 0u, 0u, 0u);
    u.z = u.s;
  }
}

template <int MT, int UKT>
QK_DEVICE QK_FORCEINLINE void marlin_compute_unit(float (&acc)[4][MT > 8 ? 2 : 1][4], const MarlinUnit<UKT>& u,
                                                  const uint16_t* act, int row_halves, int kt_first, int g, int t) {
  constexpr int NB = MT > 8 ? 2 : 1;
#pragma unroll
  for (int kk = 0; kk < UKT; ++kk) {
    uint2 b[NB];
#pragma unroll
    for (int h = 0; h < NB; ++h) {
      const int row = g + 8 * h;
      b[h] = (MT >= 8 || row < MT)
                 ? *reinterpret_cast<const uint2*>(act + row * row_halves + 16 * (kt_first + kk) + 4 * t)
                 : make_uint2(0u, 0u);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t word = word_of(u.w[kk], j);
      const __half2 s0 = bcast(u.s, 2 * j), z0 = bcast(u.z, 2 * j);          // channel 16j + g
      const __half2 s1 = bcast(u.s, 2 * j + 1), z1 = bcast(u.z, 2 * j + 1);  // channel 16j + 8 + g
      const uint32_t a0 = dequant2(word, 0, s0, z0);   // nibbles 0, 4: row g,     k 2t, 2t+1
      const uint32_t a1 = dequant2(word, 8, s1, z1);   // nibbles 2, 6: row g + 8, k 2t, 2t+1
      const uint32_t a2 = dequant2(word, 4, s0, z0);   // nibbles 1, 5: row g,     k 2t+8, 2t+9
      const uint32_t a3 = dequant2(word, 12, s1, z1);  // nibbles 3, 7: row g + 8, k 2t+8, 2t+9
#pragma unroll
      for (int h = 0; h < NB; ++h) mma_16816(acc[j][h], a0, a1, a2, a3, b[h].x, b[h].y);
    }
  }
}

// Copies activation rows 0..MT-1, 16-k blocks [kt_lo, kt_lo + blocks), into the slice buffer in
// fragment order; rows >= m are stored as zeros. K is a whole number of units, so no k guard.
template <int MT>
QK_DEVICE QK_FORCEINLINE void marlin_stage(uint16_t* act, const uint16_t* a, int m, int k, int kt_lo, int blocks,
                                           int row_halves, int tid) {
  constexpr int kBatch = 2;  // 16-k blocks (2 loads each) in flight per thread before the stores
  const int total = MT * blocks;
  for (int base = tid; base < total; base += kMgThreads * kBatch) {
    uint4 lo[kBatch], hi[kBatch];
    int dst[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int idx = base + j * kMgThreads;
      lo[j] = make_uint4(0u, 0u, 0u, 0u);
      hi[j] = lo[j];
      dst[j] = -1;
      if (idx < total) {
        const int row = idx / blocks;
        const int kb = idx - row * blocks;
        if (row < m) {
          const uint4* const src =
              reinterpret_cast<const uint4*>(a + static_cast<int64_t>(row) * k + 16 * static_cast<int64_t>(kt_lo + kb));
          lo[j] = __ldg(src);
          hi[j] = __ldg(src + 1);
        }
        dst[j] = row * row_halves + 16 * kb;
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
        const int sw = ((base + j * kMgThreads) >> 2) & 1;
        uint4* const d = reinterpret_cast<uint4*>(act + dst[j]);
        d[sw] = sw ? v1 : v0;
        d[sw ^ 1] = sw ? v0 : v1;
      }
    }
  }
}

template <int MT, int UKT>
__global__ void __launch_bounds__(kMgThreads)
    marlin_gemv_kernel(const uint16_t* QK_RESTRICT a, const uint32_t* QK_RESTRICT w,
                       const uint16_t* QK_RESTRICT scales, const uint16_t* QK_RESTRICT zeros,
                       uint16_t* QK_RESTRICT out, float* QK_RESTRICT ws, int m, int64_t n, int k, int group,
                       ScalePerm perm, int splits, int slice_units, int vec_sz) {
  constexpr int NB = MT > 8 ? 2 : 1;
  constexpr int kAcc = 4 * NB * 4;  // fp32 partial sums per lane
  extern __shared__ uint4 act_raw[];
  uint16_t* const act = reinterpret_cast<uint16_t*>(act_raw);  // [MT][row_halves], fragment order
  __shared__ float red[kMgColWarps * kAcc * 32];

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int cw = warp % kMgColWarps;
  const int kw = warp / kMgColWarps;
  const int g = lane >> 2;
  const int t = lane & 3;

  const int units = k / (16 * UKT);
  const int split = static_cast<int>(blockIdx.y);
  const int u_begin = static_cast<int>(static_cast<int64_t>(units) * split / splits);
  const int u_end = static_cast<int>(static_cast<int64_t>(units) * (split + 1) / splits);

  const int64_t c = static_cast<int64_t>(blockIdx.x) * kMgColWarps + cw;  // 64-channel block of this warp
  const bool col_ok = c < n / 64;
  const uint32_t* const wlane = w + (col_ok ? c : 0) * 128 + 4 * lane;
  const int row_halves = act_row_halves(slice_units * 16 * UKT);

  float acc[4][NB][4];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][h][e] = 0.f;

  // Software pipeline as in the AWQ kernel: the next unit is in flight while this one is consumed.
  MarlinUnit<UKT> cur = {}, nxt = {};
  int u = u_begin + kw;
  if (u < u_end) marlin_load_unit<UKT>(cur, wlane, scales, zeros, n, c, g, group, u, perm, col_ok, vec_sz != 0);
  for (int sl = u_begin; sl < u_end; sl += slice_units) {
    const int sl_end = sl + slice_units < u_end ? sl + slice_units : u_end;
    __syncthreads();  // every warp is done with the previous slice
    marlin_stage<MT>(act, a, m, k, sl * UKT, (sl_end - sl) * UKT, row_halves, tid);
    __syncthreads();
    for (; u < sl_end; u += kMgKWarps) {
      if (u + kMgKWarps < u_end)
        marlin_load_unit<UKT>(nxt, wlane, scales, zeros, n, c, g, group, u + kMgKWarps, perm, col_ok, vec_sz != 0);
      marlin_compute_unit<MT, UKT>(acc, cur, act, row_halves, (u - sl) * UKT, g, t);
      cur = nxt;
    }
  }

  if (kw == 1) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < NB; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[((cw * kAcc) + (j * NB + h) * 4 + e) * 32 + lane] = acc[j][h][e];
  }
  __syncthreads();
  if (kw != 0 || !col_ok) return;

  // acc[j][h]: e = 0, 1 -> channel 64c + 16j + g, rows 8h + 2t + (0, 1); e = 2, 3 -> channel + 8.
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = acc[j][h][e] + red[((cw * kAcc) + (j * NB + h) * 4 + e) * 32 + lane];
        const int row = 8 * h + 2 * t + (e & 1);
        const int64_t ch = 64 * c + 16 * j + 8 * (e >> 1) + g;
        if (row < m) {
          if (splits == 1) {
            out[row * n + ch] = __half_as_ushort(__float2half_rn(v));
          } else {
            ws[(static_cast<int64_t>(split) * m + row) * n + ch] = v;
          }
        }
      }
}

// 16-k rows of P per fused-kernel unit: 4 when every 64-k unit lies inside one group.
int marlin_unit_kt(int64_t group) { return group % 64 == 0 ? 4 : 1; }

template <int MT, int UKT>
cudaError_t launch_marlin_gemv_mt(const void* a, const uint32_t* w, const void* scales, const void* zeros, void* out,
                                  float* ws, int64_t m, int64_t n, int64_t k, int64_t group, ScalePerm perm,
                                  int splits, cudaStream_t stream) {
  const int64_t units = k / (16 * UKT);
  int64_t per_split = (units + splits - 1) / splits;
  if (per_split < 1) per_split = 1;
  int64_t slice_units = (i4::kActSmemHalves / MT - 64) / (16 * UKT);
  if (slice_units > per_split) slice_units = per_split;
  if (slice_units < 1) slice_units = 1;
  const size_t smem = static_cast<size_t>(MT) * act_row_halves(static_cast<int>(slice_units) * 16 * UKT) * 2;
  const bool vec_sz = perm == ScalePerm::Block64 && i4::aligned_to(scales, 16) && i4::aligned_to(zeros, 16);
  const dim3 grid(static_cast<unsigned>((n + kMgCols - 1) / kMgCols), static_cast<unsigned>(splits));
  marlin_gemv_kernel<MT, UKT><<<grid, kMgThreads, smem, stream>>>(
      static_cast<const uint16_t*>(a), w, static_cast<const uint16_t*>(scales), static_cast<const uint16_t*>(zeros),
      static_cast<uint16_t*>(out), ws, static_cast<int>(m), n, static_cast<int>(k), static_cast<int>(group), perm,
      splits, static_cast<int>(slice_units), vec_sz ? 1 : 0);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  return launch_splitk_reduce(ws, splits, m, n, nullptr, ScalePerm::None, DType::F16, out, stream);
}

template <int UKT>
cudaError_t launch_marlin_gemv_ukt(const void* a, const uint32_t* w, const void* scales, const void* zeros, void* out,
                                   float* ws, int64_t m, int64_t n, int64_t k, int64_t group, ScalePerm perm,
                                   int splits, cudaStream_t stream) {
  switch (i4::row_tile(m)) {
    case 1: return launch_marlin_gemv_mt<1, UKT>(a, w, scales, zeros, out, ws, m, n, k, group, perm, splits, stream);
    case 2: return launch_marlin_gemv_mt<2, UKT>(a, w, scales, zeros, out, ws, m, n, k, group, perm, splits, stream);
    case 4: return launch_marlin_gemv_mt<4, UKT>(a, w, scales, zeros, out, ws, m, n, k, group, perm, splits, stream);
    case 8: return launch_marlin_gemv_mt<8, UKT>(a, w, scales, zeros, out, ws, m, n, k, group, perm, splits, stream);
    default:
      return launch_marlin_gemv_mt<16, UKT>(a, w, scales, zeros, out, ws, m, n, k, group, perm, splits, stream);
  }
}

}  // namespace

cudaError_t launch_marlin_i4_dequant(const uint32_t* w, const void* scales, const void* zeros, void* out,
                                     int64_t n, int64_t k, int64_t group_size, ScalePerm perm, cudaStream_t stream) {
  if (n <= 0 || k <= 0) return cudaSuccess;
  if (k > 0x7FFFFFFF || group_size <= 0 || group_size % 16 != 0 || n % 64 != 0 || k % 16 != 0)
    return cudaErrorInvalidValue;
  const int k_tasks = static_cast<int>((k / 16 + kMdKt - 1) / kMdKt);
  const int64_t tasks = (n / 64) * k_tasks;
  const bool vec_sz = perm == ScalePerm::Block64 && i4::aligned_to(scales, 16) && i4::aligned_to(zeros, 16);
  marlin_dequant_kernel<<<i4::grid_for(tasks, kMdWarps), kMdWarps * 32, 0, stream>>>(
      w, static_cast<const uint16_t*>(scales), static_cast<const uint16_t*>(zeros), static_cast<uint16_t*>(out), n,
      static_cast<int>(k), static_cast<int>(group_size), perm, vec_sz ? 1 : 0, tasks, k_tasks);
  return cudaGetLastError();
}

cudaError_t launch_marlin_i4_gemv(const void* a, const uint32_t* w, const void* scales, const void* zeros,
                                  void* out, float* ws, int64_t m, int64_t n, int64_t k, int64_t group_size,
                                  ScalePerm perm, int splits, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (m > kMaxGemvM || k < 0 || k > 0x7FFFFFFF || group_size <= 0 || group_size % 16 != 0 || n % 64 != 0 ||
      k % group_size != 0 || splits < 1 || splits > kMaxSplits || (splits > 1 && ws == nullptr))
    return cudaErrorInvalidValue;
  return marlin_unit_kt(group_size) == 4
             ? launch_marlin_gemv_ukt<4>(a, w, scales, zeros, out, ws, m, n, k, group_size, perm, splits, stream)
             : launch_marlin_gemv_ukt<1>(a, w, scales, zeros, out, ws, m, n, k, group_size, perm, splits, stream);
}

int plan_marlin_i4_gemv_splits(int64_t m, int64_t n, int64_t k, int64_t group_size, int sm_count) {
  // Column unit: one 128-channel block; K unit: one fused-kernel unit (never straddles a group).
  const int64_t unit_k = 16 * static_cast<int64_t>(group_size > 0 ? marlin_unit_kt(group_size) : 1);
  return plan_splits(m, (n + kMgCols - 1) / kMgCols, k / unit_k, sm_count);
}

}  // namespace qk
