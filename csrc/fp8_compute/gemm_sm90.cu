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
// Block tile: 128 channels (two 64-channel column tiles of the layout) x 2 * kTpw tokens (kTpw = 128, or
// 64 when the larger tile would leave multiprocessors idle), 128 k per pipeline stage. Two warpgroups
// compute (kTpw tokens each, all 128 channels: two m64 x kTpw x 32 products per 32 k); thread 0 also
// issues the copies (one tensor copy of the activation box and one of the weight box per stage) and
// refills a stage once all eight warps have released it. (A separate producer warp would put three warps
// on some of the four schedulers and cap every thread at 168 registers, fewer than the accumulators plus
// the weight registers of a stage need.)
//
// Weight words of one warp (w = warp in its warpgroup): column tile cb = w / 2 and channel quarter pair
// p = w % 2; its 16-byte load at lane t covers words 8t + 4p .. 8t + 4p + 3 of a 16-deep slice, i.e.
// 16-channel sub-tiles 2p (words 0, 1) and 2p + 1 (words 2, 3): the first product's rows are sub-tile 2p
// of each warp, the second's sub-tile 2p + 1. Row r of product j at warp w is therefore channel
//   64 * cb + 16 * (2p + j) + r          (r in 0..15: the lane's g = t / 4 and g + 8)
//
// Epilogue: scales (and bias) are applied in fp32, the tile is rounded once to the output type into
// shared memory (free once both warpgroups finished), then written with 16-byte row-contiguous stores
// (measured on an H200: 2-byte stores straight from the accumulators cost ~25% of the kernel).
// Measurements and rejected variants: benchmarks/results/fp8_compute_notes.md.
#include <cuda.h>
#include <cuda_runtime.h>
#include "api/device.h"
#include "common/numeric.cuh"
#include "common/scale_perm.cuh"
#include "common/sm90.cuh"
#include "common/tma.h"
#include "fp8_compute/fp8_compute.h"

namespace qk {
namespace {

constexpr int kChannels = 128;  // per block
constexpr int kStageK = 128;    // k per pipeline stage (one 128-byte swizzle row of activations)
constexpr int kSlicesPerStage = kStageK / 16;
constexpr int kStepsPerStage = kStageK / 32;
constexpr int kWeightSliceBytes = kChannels * 16;                 // 2 KB: two 1 KB column tiles
constexpr int kWeightBytes = kSlicesPerStage * kWeightSliceBytes;  // 16 KB
constexpr int kThreads = 256;
constexpr int kOutRowBytes = kChannels * 2 + 16;  // staged output row; +16 B keeps 4 rows in distinct banks

template <int kTpw>
struct Tile {
  static constexpr int kTokens = 2 * kTpw;
  static constexpr int kActBytes = kTokens * kStageK;
  static constexpr int kStageBytes = kActBytes + kWeightBytes;
  static constexpr int kStages = kTpw == 128 ? 4 : 6;  // ~192 KB of buffers either way
  static constexpr int kOutWgBytes = kTpw * kOutRowBytes;
  static_assert(2 * kOutWgBytes <= kStages * kStageBytes, "output staging must fit in the pipeline buffers");
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024 /* alignment */ + 2 * kStages * 8 /* barriers */;
};

struct Args {
  const float* xs;
  const void* scales;
  const void* bias;
  void* out;
  int64_t m, n, k;
};

// A stage's weight fragments for this thread: two 16-byte words per 32 k (see the header comment).
[[maybe_unused]] QK_DEVICE QK_FORCEINLINE void load_weight_fragments(uint4 (&a)[2 * kStepsPerStage],
                                                                     const uint8_t* wst) {
#pragma unroll
  for (int i = 0; i < 2 * kStepsPerStage; ++i) a[i] = *reinterpret_cast<const uint4*>(wst + i * kWeightSliceBytes);
}

// One stage's products for one warpgroup: two 64-channel products per 32 k, issued as one group.
template <int kTpw>
QK_DEVICE QK_FORCEINLINE void issue_stage(float (&acc0)[kTpw / 2], float (&acc1)[kTpw / 2],
                                          const uint4 (&a)[2 * kStepsPerStage], uint32_t b_tile) {
  sm90::fence_registers(acc0);
  sm90::fence_registers(acc1);
  sm90::wgmma_fence();
#pragma unroll
  for (int st = 0; st < kStepsPerStage; ++st) {
    const uint64_t desc = sm90::desc_kmajor_sw128(b_tile + st * 32);
    const uint4 lo = a[2 * st], hi = a[2 * st + 1];
    sm90::wgmma_k32_e4m3_rs<kTpw>(acc0, lo.x, lo.y, hi.x, hi.y, desc);
    sm90::wgmma_k32_e4m3_rs<kTpw>(acc1, lo.z, lo.w, hi.z, hi.w, desc);
  }
  sm90::wgmma_commit();
}

template <DType D, int kTpw>
__global__ void __launch_bounds__(kThreads, 1)
    fp8_compute_sm90_kernel(const __grid_constant__ CUtensorMap act_map, const __grid_constant__ CUtensorMap wgt_map,
                            const Args args) {
#if defined(QK_SM90A_DEVICE)
  using TL = Tile<kTpw>;
  extern __shared__ uint8_t smem_raw[];
  // Tensor copies with the 128-byte swizzle need 1024-byte aligned destinations.
  const uint32_t raw = shared_addr(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t act0 = base;                                  // stage s: act0 + s * kActBytes
  const uint32_t wgt0 = base + TL::kStages * TL::kActBytes;    // stage s: wgt0 + s * kWeightBytes
  const uint32_t full0 = wgt0 + TL::kStages * kWeightBytes;    // kStages barriers
  const uint32_t empty0 = full0 + TL::kStages * 8;             // kStages barriers
  uint8_t* const smem = smem_raw + (base - raw);

  const int64_t col_tile0 = int64_t(blockIdx.x) * (kChannels / 64);  // first 64-channel column tile
  const int64_t tok0 = int64_t(blockIdx.y) * TL::kTokens;
  const int64_t k_blocks = (args.k + kStageK - 1) / kStageK;
  const int col_tiles_here = args.n / 64 - col_tile0 >= 2 ? 2 : 1;

  if (threadIdx.x == 0) {
    for (int s = 0; s < TL::kStages; ++s) {
      sm90::mbar_init(full0 + 8 * s, 1);
      sm90::mbar_init(empty0 + 8 * s, kThreads / 32);  // one arrival per warp
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  // Copies of k-block kb into its stage (thread 0). Boxes are always whole: parts past M, N or K arrive as
  // zeros and still count as bytes, so every stage runs the same instruction stream.
  auto issue = [&](int64_t kb) {
    const int s = static_cast<int>(kb % TL::kStages);
    sm90::mbar_arrive_expect_tx(full0 + 8 * s, TL::kStageBytes);
    sm90::tma_load_2d(act0 + s * TL::kActBytes, &act_map, static_cast<int32_t>(kb * kStageK),
                      static_cast<int32_t>(tok0), full0 + 8 * s);
    sm90::tma_load_3d(wgt0 + s * kWeightBytes, &wgt_map, 0, static_cast<int32_t>(col_tile0),
                      static_cast<int32_t>(kb * kSlicesPerStage), full0 + 8 * s);
  };
  if (threadIdx.x == 0) {
    for (int64_t kb = 0; kb < k_blocks && kb < TL::kStages; ++kb) issue(kb);
  }

  const int wg = threadIdx.x / 128;         // tokens wg*kTpw .. of the block
  const int warp = (threadIdx.x / 32) % 4;  // warp within its warpgroup
  const int lane = threadIdx.x % 32;
  const int cb = warp >> 1, p = warp & 1;
  const uint32_t a_offset = cb * 1024 + lane * 32 + p * 16;  // this thread's 16 bytes of a slice

  float acc0[kTpw / 2], acc1[kTpw / 2];
#pragma unroll
  for (int i = 0; i < kTpw / 2; ++i) acc0[i] = acc1[i] = 0.0f;

  for (int64_t kb = 0; kb < k_blocks; ++kb) {
    const int s = static_cast<int>(kb % TL::kStages);
    const uint32_t round = static_cast<uint32_t>(kb / TL::kStages);
    sm90::mbar_wait(full0 + 8 * s, round & 1);
    uint4 a[2 * kStepsPerStage];
    load_weight_fragments(a, smem + (wgt0 - base) + s * kWeightBytes + a_offset);
    issue_stage<kTpw>(acc0, acc1, a, act0 + s * TL::kActBytes + wg * (kTpw * 128));
    // Waiting for this stage's products before the next stage's weight loads: ptxas serialises the
    // products anyway when registers feeding a pending product group are written (measured no gain from
    // keeping a group in flight).
    sm90::wgmma_wait<0>();
    sm90::fence_registers(acc0);
    sm90::fence_registers(acc1);
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(empty0 + 8 * s);
    // Refill this stage with k-block kb + kStages once all eight warps have released it.
    if (threadIdx.x == 0 && kb + TL::kStages < k_blocks) {
      sm90::mbar_wait(empty0 + 8 * s, round & 1);
      issue(kb + TL::kStages);
    }
  }

  // ---------------- epilogue: out[token, channel] = acc * xs[token] * s[channel] + bias[channel] ----
  using T = typename Elem<D>::T;
  const T* scales = static_cast<const T*>(args.scales);
  const T* bias = static_cast<const T*>(args.bias);
  const int g = lane >> 2, q = lane & 3;
  const bool cb_valid = cb < col_tiles_here;
  float ws[2][2], bs[2][2];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t ch = (col_tile0 + cb) * 64 + 16 * (2 * p + j) + 8 * h + g;
      ws[j][h] = cb_valid ? Elem<D>::to_float(scales[block32_slot(ch)]) : 0.0f;
      bs[j][h] = cb_valid && bias != nullptr ? Elem<D>::to_float(bias[ch]) : 0.0f;
    }
  }
  __syncthreads();  // both warpgroups are done with the pipeline buffers, which now stage the output
  uint8_t* const stage_out = smem + wg * TL::kOutWgBytes;
#pragma unroll
  for (int i = 0; i < kTpw / 8; ++i) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int t_local = 8 * i + 2 * q + e;
      const int64_t tok = tok0 + wg * kTpw + t_local;
      const float xv = tok < args.m ? args.xs[tok] : 0.0f;
      T* row = reinterpret_cast<T*>(stage_out + t_local * kOutRowBytes);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int c0 = 64 * cb + 16 * (2 * p) + 8 * h + g;
        row[c0] = Elem<D>::from_float(acc0[4 * i + 2 * h + e] * xv * ws[0][h] + bs[0][h]);
        row[c0 + 16] = Elem<D>::from_float(acc1[4 * i + 2 * h + e] * xv * ws[1][h] + bs[1][h]);
      }
    }
  }
  // Warpgroup-local barrier (ids 1 and 2; 0 is __syncthreads) before reading the other warps' values.
  if (wg == 0) {
    QK_ASM_VOLATILE("bar.sync 1, 128;\n" ::: "memory");
  } else {
    QK_ASM_VOLATILE("bar.sync 2, 128;\n" ::: "memory");
  }
  const int t = threadIdx.x % 128;
  const int chunk = t % 16;  // 8 channels = 16 bytes
  const bool chunk_ok = chunk < 8 * col_tiles_here;
  T* out = static_cast<T*>(args.out);
#pragma unroll 4
  for (int r = t / 16; r < kTpw; r += 8) {
    const int64_t tok = tok0 + wg * kTpw + r;
    if (chunk_ok && tok < args.m) {
      const uint4 v = *reinterpret_cast<const uint4*>(stage_out + r * kOutRowBytes + chunk * 16);
      *reinterpret_cast<uint4*>(out + tok * args.n + col_tile0 * 64 + chunk * 8) = v;
    }
  }
#endif
}

template <DType D, int kTpw>
cudaError_t launch_tile(const void* xq, const uint32_t* w, const Args& args, cudaStream_t stream) {
  using TL = Tile<kTpw>;
  // Activations: (M rows, K bytes) read in boxes of kTokens rows x 128 bytes with the 128-byte swizzle.
  CUtensorMap act_map, wgt_map;
  const uint64_t act_dims[2] = {static_cast<uint64_t>(args.k), static_cast<uint64_t>(args.m)};
  const uint64_t act_strides[1] = {static_cast<uint64_t>(args.k)};
  const uint32_t act_box[2] = {kStageK, TL::kTokens};
  cudaError_t err = make_tma_map(&act_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, xq, act_dims, act_strides, act_box,
                                 CU_TENSOR_MAP_SWIZZLE_128B);
  if (err != cudaSuccess) return err;
  // Weight: words viewed as (256 words of one column tile, N/64 column tiles, K/16 slices); a box is the
  // block's two column tiles over one stage's eight slices, copied as stored.
  const uint64_t wgt_dims[3] = {256, static_cast<uint64_t>(args.n / 64), static_cast<uint64_t>(args.k / 16)};
  const uint64_t wgt_strides[2] = {1024, static_cast<uint64_t>(args.n) * 16};
  const uint32_t wgt_box[3] = {256, kChannels / 64, kSlicesPerStage};
  err = make_tma_map(&wgt_map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, w, wgt_dims, wgt_strides, wgt_box,
                     CU_TENSOR_MAP_SWIZZLE_NONE);
  if (err != cudaSuccess) return err;
  // Raising the dynamic shared-memory limit is per kernel and idempotent; done once per process.
  static const cudaError_t attr = cudaFuncSetAttribute(
      fp8_compute_sm90_kernel<D, kTpw>, cudaFuncAttributeMaxDynamicSharedMemorySize, TL::kSmemBytes);
  if (attr != cudaSuccess) return attr;
  // Channel tiles fastest: neighbouring blocks share the activation box in L2.
  const dim3 grid(static_cast<unsigned>((args.n + kChannels - 1) / kChannels),
                  static_cast<unsigned>((args.m + TL::kTokens - 1) / TL::kTokens));
  fp8_compute_sm90_kernel<D, kTpw><<<grid, kThreads, TL::kSmemBytes, stream>>>(act_map, wgt_map, args);
  return cudaGetLastError();
}

template <DType D>
cudaError_t launch_typed(const void* xq, const uint32_t* w, const Args& args, cudaStream_t stream) {
  // The 256-token tile unless it would give fewer than two blocks per multiprocessor over the grid.
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const int64_t blocks_large = ((args.n + kChannels - 1) / kChannels) * ((args.m + 255) / 256);
  if (blocks_large < 2 * int64_t(sm_count(device))) return launch_tile<D, 64>(xq, w, args, stream);
  return launch_tile<D, 128>(xq, w, args, stream);
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
  if (m > int64_t(65535) * 128) return cudaErrorInvalidValue;  // grid.y limit of the smaller tile
  const Args args{xs, scales, bias, out, m, n, k};
  return dt == DType::F16 ? launch_typed<DType::F16>(xq, w, args, stream)
                          : launch_typed<DType::BF16>(xq, w, args, stream);
}

}  // namespace qk
