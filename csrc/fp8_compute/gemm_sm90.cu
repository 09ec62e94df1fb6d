// FP8 x FP8 product on Hopper's warpgroup tensor cores (wgmma), for the sm_90a target.
//
// Operand roles. The weight is the wgmma "A" operand, read from registers: in quanto's FP8 Marlin layout
// the four words a thread needs for one 64 x 32 (channels x k) step are already its A fragment (see
// docs/layouts.md and fp8_compute.h: the activations are quantized in the matching k order), so the weight
// goes from shared memory to the tensor cores with two 16-byte loads per thread and no byte shuffles. The
// quantized activations are the "B" operand (tokens x k, K-major), loaded by the tensor memory accelerator
// with the 128-byte swizzle that the wgmma descriptor reads. The product is therefore out^T: rows are
// channels, columns are tokens, and the epilogue writes it transposed.
//
// Block tile: 128 channels (two 64-channel column tiles of the layout) x 256 tokens, 128 k per pipeline
// stage, 4 stages (48 KB each). A producer warp (one thread issues a tensor copy of the activation box
// and one bulk copy per 16-deep k slice of the weight, completing on the stage's "full" barrier) and two
// consumer warpgroups (128 tokens each, all 128 channels: two m64n128k32 products per 32 k).
// Consumers release a stage through its "empty" barrier once their products reading it have completed.
//
// Weight words of one warp (w = warp in its warpgroup): column tile cb = w / 2 and channel quarter pair
// p = w % 2; its 16-byte load at lane t covers words 8t + 4p .. 8t + 4p + 3 of a 16-deep slice, i.e.
// 16-channel sub-tiles 2p (words 0, 1) and 2p + 1 (words 2, 3): the first product's rows are sub-tile 2p
// of each warp, the second's sub-tile 2p + 1. Row r of product j at warp w is therefore channel
//   64 * cb + 16 * (2p + j) + r          (r in 0..15: the lane's g = t / 4 and g + 8)
#include <cuda.h>
#include <cuda_runtime.h>
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"
#include "common/sm90.cuh"
#include "common/tma.h"
#include "fp8_compute/fp8_compute.h"

namespace qk {
namespace {

constexpr int kChannels = 128;       // per block
constexpr int kTokens = 256;         // per block
[[maybe_unused]] constexpr int kTokensPerWg = 128;    // per consumer warpgroup
constexpr int kStageK = 128;         // k per pipeline stage (one 128-byte swizzle row of activations)
constexpr int kStages = 4;
constexpr int kSlicesPerStage = kStageK / 16;
constexpr int kActBytes = kTokens * kStageK;                      // 32 KB
constexpr int kWeightSliceBytes = kChannels * 16;                 // 2 KB: two 1 KB column tiles
constexpr int kWeightBytes = kSlicesPerStage * kWeightSliceBytes;  // 16 KB
constexpr int kStageBytes = kActBytes + kWeightBytes;
// Two warpgroups, both computing; thread 0 also issues the copies. (A separate producer warp or warpgroup
// would put three warps on some of the four schedulers and cap every thread at 168 registers, fewer than
// the 128 accumulators plus the 32 weight registers of a stage that must stay live until the products
// reading them complete.)
constexpr int kThreads = 256;
constexpr int kSmemBytes = kStages * kStageBytes + 1024 /* alignment */ + 2 * kStages * 8 /* barriers */;

[[maybe_unused]] QK_DEVICE QK_FORCEINLINE int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

struct Args {
  const uint32_t* w;
  const float* xs;
  const void* scales;
  const void* bias;
  void* out;
  int64_t m, n, k;
};

// One stage's products for one consumer warpgroup: kSteps k-steps of 32, two 64-channel products each.
[[maybe_unused]] QK_DEVICE QK_FORCEINLINE void consume_stage(float (&acc0)[64], float (&acc1)[64], const uint8_t* wst, uint32_t b_tile) {
  constexpr int kSteps = kStageK / 32;
  uint4 a[2 * kSteps];
#pragma unroll
  for (int i = 0; i < 2 * kSteps; ++i) a[i] = *reinterpret_cast<const uint4*>(wst + i * kWeightSliceBytes);
  sm90::fence_registers(acc0);
  sm90::fence_registers(acc1);
  sm90::wgmma_fence();
#pragma unroll
  for (int st = 0; st < kSteps; ++st) {
    const uint64_t desc = sm90::desc_kmajor_sw128(b_tile + st * 32);
    const uint4 lo = a[2 * st], hi = a[2 * st + 1];
    sm90::wgmma_m64n128k32_e4m3_rs(acc0, lo.x, lo.y, hi.x, hi.y, desc);
    sm90::wgmma_m64n128k32_e4m3_rs(acc1, lo.z, lo.w, hi.z, hi.w, desc);
  }
}

template <DType D>
__global__ void __launch_bounds__(kThreads, 1)
    fp8_compute_sm90_kernel(const __grid_constant__ CUtensorMap act_map, const __grid_constant__ CUtensorMap wgt_map,
                            const Args args) {
#if defined(QK_SM90A_DEVICE)
  extern __shared__ uint8_t smem_raw[];
  // Tensor copies with the 128-byte swizzle need 1024-byte aligned destinations.
  const uint32_t raw = shared_addr(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t act0 = base;                                  // stage s: act0 + s * kActBytes
  const uint32_t wgt0 = base + kStages * kActBytes;            // stage s: wgt0 + s * kWeightBytes
  const uint32_t full0 = wgt0 + kStages * kWeightBytes;        // kStages barriers
  const uint32_t empty0 = full0 + kStages * 8;                 // kStages barriers
  const uint8_t* wgt_generic = smem_raw + (wgt0 - raw);

  const int64_t col_tile0 = int64_t(blockIdx.x) * (kChannels / 64);  // first 64-channel column tile
  const int64_t tok0 = int64_t(blockIdx.y) * kTokens;
  const int64_t k_blocks = (args.k + kStageK - 1) / kStageK;
  const int col_tiles_here = static_cast<int>(imin64(2, args.n / 64 - col_tile0));

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbar_init(full0 + 8 * s, 1);
      sm90::mbar_init(empty0 + 8 * s, 8);  // one arrival per consumer warp
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  // Issues the copies of k-block kb into its stage (thread 0 only).
  auto issue = [&](int64_t kb) {
    const int s = static_cast<int>(kb % kStages);
    // Both boxes are always whole: parts past M, N or K arrive as zeros and still count as bytes.
    sm90::mbar_arrive_expect_tx(full0 + 8 * s, kStageBytes);
    sm90::tma_load_2d(act0 + s * kActBytes, &act_map, static_cast<int32_t>(kb * kStageK), static_cast<int32_t>(tok0),
                      full0 + 8 * s);
    sm90::tma_load_3d(wgt0 + s * kWeightBytes, &wgt_map, 0, static_cast<int32_t>(col_tile0),
                      static_cast<int32_t>(kb * kSlicesPerStage), full0 + 8 * s);
  };
  if (threadIdx.x == 0) {
    for (int64_t kb = 0; kb < k_blocks && kb < kStages; ++kb) issue(kb);
  }
  {
    // ---------------- consumers ----------------
    const int cw = threadIdx.x / 128;         // consumer index: tokens cw*128 .. cw*128+127 of the block
    const int warp = (threadIdx.x / 32) % 4;  // warp within its warpgroup
    const int lane = threadIdx.x % 32;
    const int cb = warp >> 1, p = warp & 1;
    const uint32_t a_offset = cb * 1024 + lane * 32 + p * 16;  // this thread's 16 bytes of a slice

    float acc0[64], acc1[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc0[i] = acc1[i] = 0.0f;

    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      const int s = static_cast<int>(kb % kStages);
      const uint32_t round = static_cast<uint32_t>(kb / kStages);
      sm90::mbar_wait(full0 + 8 * s, round & 1);
      const uint8_t* wst = wgt_generic + s * kWeightBytes + a_offset;
      const uint32_t b_tile = act0 + s * kActBytes + cw * (kTokensPerWg * 128);
      // Every stage is whole (zeros past K), so the instruction stream is the same for all of them.
      consume_stage(acc0, acc1, wst, b_tile);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::fence_registers(acc0);
      sm90::fence_registers(acc1);
      __syncwarp();
      if (lane == 0) sm90::mbar_arrive(empty0 + 8 * s);
      // Refill this stage with k-block kb + kStages once all eight warps have released it.
      if (threadIdx.x == 0 && kb + kStages < k_blocks) {
        sm90::mbar_wait(empty0 + 8 * s, round & 1);
        issue(kb + kStages);
      }
    }

    // ---------------- epilogue: out[token, channel] = acc * xs[token] * s[channel] + bias[channel] ----
    using T = typename Elem<D>::T;
    const T* scales = static_cast<const T*>(args.scales);
    const T* bias = static_cast<const T*>(args.bias);
    T* out = static_cast<T*>(args.out);
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float* acc = j == 0 ? acc0 : acc1;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t ch = (col_tile0 + cb) * 64 + 16 * (2 * p + j) + 8 * h + g;
        if (cb >= col_tiles_here) continue;
        const float ws = Elem<D>::to_float(scales[block32_slot(ch)]);
        const float bs = bias != nullptr ? Elem<D>::to_float(bias[ch]) : 0.0f;
#pragma unroll
        for (int i = 0; i < 16; ++i) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t tok = tok0 + cw * kTokensPerWg + 8 * i + 2 * q + e;
            if (tok < args.m) {
              const float v = acc[4 * i + 2 * h + e] * args.xs[tok] * ws + bs;
              out[tok * args.n + ch] = Elem<D>::from_float(v);
            }
          }
        }
      }
    }
  }
#endif
}

template <DType D>
cudaError_t launch_typed(const CUtensorMap& act_map, const CUtensorMap& wgt_map, const Args& args, cudaStream_t stream) {
  // Raising the dynamic shared-memory limit is per kernel and idempotent; done once per process.
  static const cudaError_t attr = cudaFuncSetAttribute(fp8_compute_sm90_kernel<D>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((args.n + kChannels - 1) / kChannels),
                  static_cast<unsigned>((args.m + kTokens - 1) / kTokens));
  fp8_compute_sm90_kernel<D><<<grid, kThreads, kSmemBytes, stream>>>(act_map, wgt_map, args);
  return cudaGetLastError();
}

}  // namespace

bool fp8_compute_has_sm90_kernel() {
#if defined(QK_HAS_SM90A)
  return true;
#else
  return false;
#endif
}

cudaError_t launch_fp8_compute_gemm_sm90(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales,
                                         const void* bias, void* out, int64_t m, int64_t n, int64_t k, DType dt,
                                         cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  if (m > int64_t(65535) * kTokens) return cudaErrorInvalidValue;  // grid.y limit
  // Activations: (M rows, K bytes), boxes of 256 rows x 128 bytes, 128-byte swizzle (what wgmma reads).
  CUtensorMap act_map, wgt_map;
  const uint64_t act_dims[2] = {static_cast<uint64_t>(k), static_cast<uint64_t>(m)};
  const uint64_t act_strides[1] = {static_cast<uint64_t>(k)};
  const uint32_t act_box[2] = {kStageK, kTokens};
  cudaError_t err = make_tma_map(&act_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, xq, act_dims, act_strides, act_box,
                                 CU_TENSOR_MAP_SWIZZLE_128B);
  if (err != cudaSuccess) return err;
  // Weight: words viewed as (256 words of one column tile, N/64 column tiles, K/16 slices); a box is the
  // block's two column tiles over one stage's eight slices, copied as stored.
  const uint64_t wgt_dims[3] = {256, static_cast<uint64_t>(n / 64), static_cast<uint64_t>(k / 16)};
  const uint64_t wgt_strides[2] = {1024, static_cast<uint64_t>(n) * 16};
  const uint32_t wgt_box[3] = {256, kChannels / 64, kSlicesPerStage};
  err = make_tma_map(&wgt_map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, w, wgt_dims, wgt_strides, wgt_box,
                     CU_TENSOR_MAP_SWIZZLE_NONE);
  if (err != cudaSuccess) return err;
  const Args args{w, xs, scales, bias, out, m, n, k};
  return dt == DType::F16 ? launch_typed<DType::F16>(act_map, wgt_map, args, stream)
                          : launch_typed<DType::BF16>(act_map, wgt_map, args, stream);
}

}  // namespace qk
