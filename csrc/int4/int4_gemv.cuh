// The fused small-M int4 product out = a * Wd^T, written once for every layout (L, a policy from
// awq_layout.cuh or marlin_layout.cuh) and activation dtype (D, act.cuh).
//
// A block owns L::kBlockCols output channels (L::kColWarps column warps) and one split's range of
// K units; two warps share each column tile and take alternate units. The split's activation rows
// are staged into shared memory slice by slice in the order the layout reads them, and read by
// every warp. Each warp streams its units through a two-deep software pipeline (the next unit's
// weights are in flight while the current one is decoded and multiplied, also across slices: the
// weights do not depend on the staged activations). The two K warps of a column tile then meet in
// shared memory in a fixed order, and the sum is either rounded and stored (one split) or written
// as fp32 partials for launch_splitk_reduce (several splits).
//
// What a layout provides: kColWarps, kBlockCols, kTiles (16-channel mma tiles per warp), a Unit
// (one warp's registers for one K unit), a Lane context, units(k), load(), stage<MT>(), compute<A,
// MT>(), channel() for the epilogue, and the host-side slice/shared-memory sizing.
#pragma once

#include "common/launchers.h"
#include "int4/act.cuh"
#include "int4/int4_common.cuh"

namespace qk {
namespace i4 {

constexpr int kKWarps = 2;  // warps sharing one column tile; the reduction below pairs them

template <class L, DType D, int MT>
__global__ void __launch_bounds__(32 * L::kColWarps * kKWarps) int4_gemv_kernel(const GemvArgs p) {
  using A = Act<D>;
  constexpr int NB = MT > 8 ? 2 : 1;         // activation row groups of 8 (mma B operands)
  constexpr int kAcc = L::kTiles * NB * 4;   // fp32 partial sums per lane
  extern __shared__ uint4 act_smem[];        // the staged slice, in the layout's order
  __shared__ float red[L::kColWarps * kAcc * 32];

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int cw = warp % L::kColWarps;
  const int kw = warp / L::kColWarps;

  // This split's K units: contiguous, possibly uneven; empty ones still write zero partials.
  const int units = L::units(p.k);
  const int split = static_cast<int>(blockIdx.y);
  const int u_begin = static_cast<int>(static_cast<int64_t>(units) * split / p.splits);
  const int u_end = static_cast<int>(static_cast<int64_t>(units) * (split + 1) / p.splits);

  const typename L::Lane ln = L::lane_context(p, static_cast<int64_t>(blockIdx.x) * L::kColWarps + cw, lane);

  float acc[L::kTiles][NB][4];
#pragma unroll
  for (int T = 0; T < L::kTiles; ++T)
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[T][h][e] = 0.f;

  typename L::Unit cur = {}, nxt = {};
  int u = u_begin + kw;
  if (u < u_end) L::load(cur, ln, p, u);
  for (int sl = u_begin; sl < u_end; sl += p.slice_units) {
    const int sl_end = sl + p.slice_units < u_end ? sl + p.slice_units : u_end;
    __syncthreads();  // every warp is done with the previous slice
    L::template stage<MT>(act_smem, p, sl, sl_end - sl, tid, 32 * L::kColWarps * kKWarps);
    __syncthreads();
    for (; u < sl_end; u += kKWarps) {
      if (u + kKWarps < u_end) L::load(nxt, ln, p, u + kKWarps);
      L::template compute<A, MT>(acc, cur, act_smem, p, u - sl, ln);
      cur = nxt;
    }
  }

  // The two K warps of a column tile meet in shared memory; the sum order is fixed.
  if (kw == 1) {
#pragma unroll
    for (int T = 0; T < L::kTiles; ++T)
#pragma unroll
      for (int h = 0; h < NB; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[((cw * kAcc) + (T * NB + h) * 4 + e) * 32 + lane] = acc[T][h][e];
  }
  __syncthreads();
  if (kw != 0 || !ln.ok) return;  // no barrier follows

  // acc[T][h][e] is activation row 8h + 2t + (e & 1) of the channel L::channel(ln, T, e) names.
  const int t = lane & 3;
#pragma unroll
  for (int T = 0; T < L::kTiles; ++T)
#pragma unroll
    for (int h = 0; h < NB; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = acc[T][h][e] + red[((cw * kAcc) + (T * NB + h) * 4 + e) * 32 + lane];
        const int row = 8 * h + 2 * t + (e & 1);
        const int64_t ch = L::channel(ln, T, e);
        if (row < p.m) {
          if (p.splits == 1) {
            p.out[row * p.n + ch] = A::store(v);
          } else {
            p.ws[(static_cast<int64_t>(split) * p.m + row) * p.n + ch] = v;
          }
        }
      }
}

template <class L, DType D, int MT>
cudaError_t launch_int4_gemv_mt(GemvArgs p, cudaStream_t stream) {
  int64_t per_split = (L::units(p.k) + p.splits - 1) / p.splits;
  if (per_split < 1) per_split = 1;
  p.slice_units = L::slice_units(MT, per_split);
  p.vec_sz = L::vector_scales(p) ? 1 : 0;
  const size_t smem = L::smem_bytes(MT, p.slice_units);
  const dim3 grid(static_cast<unsigned>((p.n + L::kBlockCols - 1) / L::kBlockCols), static_cast<unsigned>(p.splits));
  int4_gemv_kernel<L, D, MT><<<grid, 32 * L::kColWarps * kKWarps, smem, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.splits == 1) return err;
  return launch_splitk_reduce(p.ws, p.splits, p.m, p.n, nullptr, ScalePerm::None, D, p.out, stream);
}

// Arguments validated by the caller (the layout's public launcher).
template <class L, DType D>
cudaError_t launch_int4_gemv(GemvArgs p, cudaStream_t stream) {
  switch (row_tile(p.m)) {
    case 1: return launch_int4_gemv_mt<L, D, 1>(p, stream);
    case 2: return launch_int4_gemv_mt<L, D, 2>(p, stream);
    case 4: return launch_int4_gemv_mt<L, D, 4>(p, stream);
    case 8: return launch_int4_gemv_mt<L, D, 8>(p, stream);
    default: return launch_int4_gemv_mt<L, D, 16>(p, stream);
  }
}

}  // namespace i4
}  // namespace qk
