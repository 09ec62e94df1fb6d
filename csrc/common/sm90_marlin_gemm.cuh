// Hopper (sm_90a) GEMM over quantized weights as quanto stores them, with the weight as the register
// operand of wgmma: the mainloop, tile shapes, split-K and epilogue shared by every weight format. A format
// is an operand policy (`Op`) that names its weight layout (quanto's Marlin tiles for FP8, its row-major
// codes for int8) and turns one pipeline stage of weight bytes into products. The name comes from the
// first layout it served.
//
// Roles. The weight is wgmma's "A" operand (64 channels x k, from registers): in the Marlin layout the
// words a thread needs for a 64-channel product are one 16-byte shared-memory load per 16-deep slice (see
// docs/layouts.md); in the int8 row-major layout two 4-byte loads per row and slice. The activations
// are the "B" operand (tokens x k, K-major), copied by the tensor memory accelerator with the 128-byte
// swizzle that the wgmma descriptor reads. The product is out^T (rows are
// channels, columns tokens); the epilogue writes it transposed.
//
// Block tile: 128 channels (two 64-channel column tiles of the layout) x 2 * kTpw tokens; a pipeline
// stage holds kActBoxes 128-byte rows of activations per token (each 128 k of e4m3 or 64 k of 16-bit
// values), every box a separate tensor copy. Warpgroup g
// computes column tile g for every token of the tile: each weight word is loaded and decoded once per
// block (an earlier split by tokens decoded every word in both warpgroups, and ncu showed the integer
// pipe, i.e. the decode, as the limiter). Its products per k-step are kParts wgmmas of 64 channels x
// kPartN tokens (kPartN = min(2 * kTpw, 128)) sharing the A registers. Thread 0 also issues the copies
// (kActBoxes activation boxes and one weight box per stage) and refills a stage once all eight warps
// released it; a separate producer warp would cap every thread at 168 registers, fewer than the accumulators plus a
// stage's weight registers need.
//
// Weight rows of one warp (w = warp in its warpgroup g): whatever the layout, warp w's products cover
// 16-channel sub-tile w of column tile g (in the Marlin layout its 8-byte load at lane t covers words
// 8t + 2w, 8t + 2w + 1 of column tile g's 256 words of a slice). Row r of its products is channel
//   64 * g + 16 * w + r          (r in 0..15: the lane's g = t / 4 and g + 8)
//
// Split-K (for grids of at most half the multiprocessors, sm90_marlin_plan.h): blocks along grid z take
// consecutive ranges of the stages; each writes its fp32 sums to the workspace, and the last block of a
// tile to arrive (counter per tile, zeroed before the launch) adds them in split order (deterministic)
// and runs the epilogue. Narrow layers (24-32 tiles) run 3-5x faster split; wider grids ran faster
// unsplit, and a second block per multiprocessor did not overlap a stage's cost (fp8_mm_notes.md, v4-v6).
//
// Epilogue: per-channel scale (times a per-token scale when the policy has one) and bias in fp32, the
// tile rounded once to the output type into shared memory (free once both warpgroups finished), then
// written with 16-byte row-contiguous stores (2-byte stores straight from the accumulators measured ~25%
// slower on an H200). Measurements: benchmarks/results/fp8_compute_notes.md and fp8_mm_notes.md.
//
// Operand policy interface:
//   Layout         how the weight is stored: its tensor map, the copy of one stage's box, this thread's
//                  first byte in a stage and where channel ch's scale is (MarlinWeights below: quanto's
//                  Marlin tiles; int8/int8_mm_sm90.cu: quanto's row-major int8 codes)
//   kSlices        16-deep k slices per stage (the stage's k; 16 * kSlices * activation bytes is a multiple
//                  of 128: the stage's boxes of activations, 128 bytes per token each)
//   kRowScale      true: the epilogue multiplies by xs[token] (fp32)
//   kActType       element type of the activation tensor map
//   kActBytes      bytes per activation element
//   stage<kPartN, kParts>(acc, w, b_tile)
//                  loads this thread's words of the stage (w: its first byte, Layout::thread_offset),
//                  issues the warpgroup's products for the stage as one committed group: per k-step, part
//                  p multiplies into acc[p] the tokens p * kPartN .. of the tile: box j of the stage starts at
//                  b_tile + j * kTokens * 128, part p at + p * kPartN * 128 in it
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>
#include "api/device.h"
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "common/scale_perm.cuh"
#include "common/sm90.cuh"
#include "common/sm90_marlin_plan.h"
#include "common/tma.h"

namespace qk {
namespace sm90_marlin {

constexpr int kSliceBytes = kChannels * 16;   // one 16-deep slice of the block's two column tiles: 2 KB
constexpr int kOutRowBytes = kChannels * 2 + 16;  // staged output row; +16 B keeps 4 rows in distinct banks
constexpr int kBufferBudget = 200 * 1024;     // pipeline buffers of a multiprocessor's blocks together

// kBlocks: blocks per multiprocessor the tile is sized for (1, or 2: sm90_marlin_plan.h).
template <class Op, int kTpw, int kBlocks = 1>
struct Tile {
  static constexpr int kTokens = 2 * kTpw;
  static constexpr int kPartN = kTokens < 128 ? kTokens : 128;  // tokens per wgmma
  static constexpr int kParts = kTokens / kPartN;
  static constexpr int kActBoxes = Op::kSlices * 16 * Op::kActBytes / 128;
  static constexpr int kActBytes = kTokens * 128 * kActBoxes;
  static constexpr int kWeightBytes = Op::kSlices * kSliceBytes;
  static constexpr int kStageBytes = kActBytes + kWeightBytes;
  static constexpr int kBudget = kBufferBudget / kBlocks;
  static constexpr int kStages = kBudget / kStageBytes < 12 ? kBudget / kStageBytes : 12;
  static constexpr int kOutBytes = kTokens * kOutRowBytes;
  static_assert(kStages >= 2, "at least a double-buffered pipeline");
  static_assert(kOutBytes <= kStages * kStageBytes, "output staging must fit in the pipeline buffers");
  static_assert(kActBoxes >= 1 && Op::kSlices * 16 * Op::kActBytes == 128 * kActBoxes,
                "a stage is whole 128-byte rows of activations");
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024 /* alignment */ + 2 * kStages * 8 /* barriers */;
};

// quanto's Marlin tiles ((K/16, 4N) words): a stage's box is the block's two column tiles over the stage's
// slices, copied as stored (2 KB per slice); scales are Block32-permuted.
struct MarlinWeights {
  static cudaError_t make_map(CUtensorMap* map, const void* w, int64_t n, int64_t k, int slices) {
    // Words viewed as (256 words of one column tile, N/64 column tiles, K/16 slices).
    const uint64_t dims[3] = {256, static_cast<uint64_t>(n / 64), static_cast<uint64_t>(k / 16)};
    const uint64_t strides[2] = {1024, static_cast<uint64_t>(n) * 16};
    const uint32_t box[3] = {256, kChannels / 64, static_cast<uint32_t>(slices)};
    return make_tma_map(map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, w, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE);
  }
  static QK_DEVICE QK_FORCEINLINE void copy(uint32_t dst, const CUtensorMap* map, int64_t col_tile0, int64_t slice0,
                                            uint32_t bar) {
    sm90::tma_load_3d(dst, map, 0, static_cast<int32_t>(col_tile0), static_cast<int32_t>(slice0), bar);
  }
  // Warp w of warpgroup g loads, at lane t, words 8t + 2w, 8t + 2w + 1 of column tile g's 256 words of a
  // slice (16-channel sub-tile w); slices are kSliceBytes apart.
  static QK_DEVICE QK_FORCEINLINE uint32_t thread_offset(int wg, int warp, int lane) {
    return wg * 1024 + lane * 32 + warp * 8;
  }
  static QK_DEVICE QK_FORCEINLINE int64_t scale_slot(int64_t ch) { return block32_slot(ch); }
};

// One stage's products for policies whose weight is a 16-bit A fragment: a[i] holds the thread's four
// fragment registers of 16-deep slice i (rows g, g + 8 x k pairs low, high). Per slice, part p multiplies
// the tokens p * kN ..; the stage's activations are 128-byte boxes of four slices each (box j at
// b_tile + j * kParts * kN * 128). Issued as one committed group.
template <int kN, int kParts, int kSlices, bool kBf16>
QK_DEVICE QK_FORCEINLINE void products_16bit(float (&acc)[kParts][kN / 2], const uint32_t (&a)[kSlices][4],
                                             uint32_t b_tile) {
#pragma unroll
  for (int p = 0; p < kParts; ++p) sm90::fence_registers(acc[p]);
  sm90::wgmma_fence();
#pragma unroll
  for (int i = 0; i < kSlices; ++i) {
#pragma unroll
    for (int p = 0; p < kParts; ++p) {
      const uint32_t box = b_tile + (i / 4) * (kParts * kN * 128);
      const uint64_t desc = sm90::desc_kmajor_sw128(box + p * kN * 128 + (i % 4) * 32);
      sm90::wgmma_k16_rs<kN, kBf16>(acc[p], a[i][0], a[i][1], a[i][2], a[i][3], desc);
    }
  }
  sm90::wgmma_commit();
}

struct Args {
  const float* xs;     // per-token scales (policies with kRowScale) or nullptr
  const void* scales;  // N per-channel scales of the output type, in Op::Layout::scale_slot order
  const void* bias;    // N values of the output type in channel order, or nullptr
  void* out;           // M x N, row-major
  int64_t m, n, k;
  // Split-K (grid z > 1): stages per split, per-tile arrival counters (zeroed) and fp32 partial sums
  // (splits x tiles x kThreads x kTpw, SplitPlan::partial_bytes). Unused with one split.
  int64_t stages_per_split = 0;
  int* counters = nullptr;
  float* partials = nullptr;
};

// Split-K: stores this block's sums, and for the last block of the tile to arrive replaces them by the
// sum over all splits in split order (the same bits whichever block is last). Returns false for the
// other blocks, which are then done.
template <int kParts, int kAcc>
QK_DEVICE QK_FORCEINLINE bool finish_split(float (&acc)[kParts][kAcc], const Args& args) {
  __shared__ int last;
  constexpr int64_t kFloats = int64_t(kThreads) * kParts * kAcc;
  const int64_t tile = int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
  const int64_t tiles = int64_t(gridDim.x) * gridDim.y;
  const int t = threadIdx.x;
  // Element i of thread t at [i][t]: every store and load of a warp covers 128 contiguous bytes.
  float* mine = args.partials + (int64_t(blockIdx.z) * tiles + tile) * kFloats;
#pragma unroll
  for (int p = 0; p < kParts; ++p) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) mine[(p * kAcc + i) * kThreads + t] = acc[p][i];
  }
  __threadfence();  // the sums are visible device-wide before this block counts as arrived
  __syncthreads();
  if (t == 0) last = atomicAdd(args.counters + tile, 1) == static_cast<int>(gridDim.z) - 1;
  __syncthreads();
  if (!last) return false;
  __threadfence();  // order the other blocks' sums (seen through the counter) before reading them
#pragma unroll
  for (int p = 0; p < kParts; ++p) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[p][i] = 0.0f;
  }
  for (unsigned z = 0; z < gridDim.z; ++z) {
    const float* part = args.partials + (int64_t(z) * tiles + tile) * kFloats;
#pragma unroll
    for (int p = 0; p < kParts; ++p) {
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[p][i] += __ldcg(part + (p * kAcc + i) * kThreads + t);
    }
  }
  return true;
}

template <class Op, DType D, int kTpw, int kBlocks>
__global__ void __launch_bounds__(kThreads, kBlocks)
    marlin_rs_gemm_kernel(const __grid_constant__ CUtensorMap act_map, const __grid_constant__ CUtensorMap wgt_map,
                          const Args args) {
#if defined(QK_SM90A_DEVICE)
  using TL = Tile<Op, kTpw, kBlocks>;
  extern __shared__ uint8_t smem_raw[];
  // Tensor copies with the 128-byte swizzle need 1024-byte aligned destinations.
  const uint32_t raw = shared_addr(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t act0 = base;                                     // stage s: act0 + s * kActBytes
  const uint32_t wgt0 = base + TL::kStages * TL::kActBytes;       // stage s: wgt0 + s * kWeightBytes
  const uint32_t full0 = wgt0 + TL::kStages * TL::kWeightBytes;   // kStages barriers
  const uint32_t empty0 = full0 + TL::kStages * 8;                // kStages barriers
  uint8_t* const smem = smem_raw + (base - raw);

  const int64_t col_tile0 = int64_t(blockIdx.x) * (kChannels / 64);  // first 64-channel column tile
  const int64_t tok0 = int64_t(blockIdx.y) * TL::kTokens;
  constexpr int kStageK = Op::kSlices * 16;
  const int64_t k_blocks_all = (args.k + kStageK - 1) / kStageK;
  // This block's stages: all of them, or its split's range (never empty: the plan sizes the splits).
  const int64_t kb_first = gridDim.z > 1 ? int64_t(blockIdx.z) * args.stages_per_split : 0;
  const int64_t k_left = k_blocks_all - kb_first;
  const int64_t k_blocks = gridDim.z > 1 && args.stages_per_split < k_left ? args.stages_per_split : k_left;
  const int col_tiles_here = args.n / 64 - col_tile0 >= 2 ? 2 : 1;

  if (threadIdx.x == 0) {
    for (int s = 0; s < TL::kStages; ++s) {
      sm90::mbar_init(full0 + 8 * s, 1);
      sm90::mbar_init(empty0 + 8 * s, kThreads / 32);  // one arrival per warp
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  // Copies of k-block kb (counted from the block's first) into its stage (thread 0). Boxes are always
  // whole: parts past M, N or K arrive as zeros and still count as bytes, so every stage runs the same
  // instruction stream.
  auto issue = [&](int64_t kb) {
    const int s = static_cast<int>(kb % TL::kStages);
    sm90::mbar_arrive_expect_tx(full0 + 8 * s, TL::kStageBytes);
#pragma unroll
    for (int j = 0; j < TL::kActBoxes; ++j) {
      sm90::tma_load_2d(act0 + s * TL::kActBytes + j * (TL::kTokens * 128), &act_map,
                        static_cast<int32_t>((kb_first + kb) * kStageK + j * (128 / Op::kActBytes)),
                        static_cast<int32_t>(tok0), full0 + 8 * s);
    }
    Op::Layout::copy(wgt0 + s * TL::kWeightBytes, &wgt_map, col_tile0, (kb_first + kb) * Op::kSlices,
                     full0 + 8 * s);
  };
  if (threadIdx.x == 0) {
    for (int64_t kb = 0; kb < k_blocks && kb < TL::kStages; ++kb) issue(kb);
  }

  const int wg = threadIdx.x / 128;         // column tile of the block
  const int warp = (threadIdx.x / 32) % 4;  // warp within its warpgroup: 16-channel sub-tile
  const int lane = threadIdx.x % 32;
  const uint32_t a_offset = Op::Layout::thread_offset(wg, warp, lane);  // this thread's first byte of a stage

  constexpr int kAcc = TL::kPartN / 2;
  float acc[TL::kParts][kAcc];
#pragma unroll
  for (int p = 0; p < TL::kParts; ++p) {
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[p][i] = 0.0f;
  }

  for (int64_t kb = 0; kb < k_blocks; ++kb) {
    const int s = static_cast<int>(kb % TL::kStages);
    const uint32_t round = static_cast<uint32_t>(kb / TL::kStages);
    sm90::mbar_wait(full0 + 8 * s, round & 1);
    Op::template stage<TL::kPartN, TL::kParts>(acc, smem + (wgt0 - base) + s * TL::kWeightBytes + a_offset,
                                               act0 + s * TL::kActBytes);
    // Waiting for this stage's products before the next stage's weight registers are written: ptxas
    // serialises the products anyway when registers feeding a pending group are written.
    sm90::wgmma_wait<0>();
#pragma unroll
    for (int p = 0; p < TL::kParts; ++p) sm90::fence_registers(acc[p]);
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(empty0 + 8 * s);
    // Refill this stage with k-block kb + kStages once all eight warps have released it.
    if (threadIdx.x == 0 && kb + TL::kStages < k_blocks) {
      sm90::mbar_wait(empty0 + 8 * s, round & 1);
      issue(kb + TL::kStages);
    }
  }

  if (gridDim.z > 1 && !finish_split(acc, args)) return;

  // ---------------- epilogue: out[token, channel] = acc * xs[token] * s[channel] + bias[channel] ----
  using T = typename Elem<D>::T;
  const T* scales = static_cast<const T*>(args.scales);
  const T* bias = static_cast<const T*>(args.bias);
  const int g = lane >> 2, q = lane & 3;
  const bool cb_valid = wg < col_tiles_here;
  float ws[2], bs[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t ch = (col_tile0 + wg) * 64 + 16 * warp + 8 * h + g;
    ws[h] = cb_valid ? Elem<D>::to_float(scales[Op::Layout::scale_slot(ch)]) : 0.0f;
    bs[h] = cb_valid && bias != nullptr ? Elem<D>::to_float(bias[ch]) : 0.0f;
  }
  __syncthreads();  // both warpgroups are done with the pipeline buffers, which now stage the output
#pragma unroll
  for (int p = 0; p < TL::kParts; ++p) {
#pragma unroll
    for (int i = 0; i < TL::kPartN / 8; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t_local = p * TL::kPartN + 8 * i + 2 * q + e;
        float xv = 1.0f;
        if constexpr (Op::kRowScale) {
          const int64_t tok = tok0 + t_local;
          xv = tok < args.m ? args.xs[tok] : 0.0f;
        }
        T* row = reinterpret_cast<T*>(smem + t_local * kOutRowBytes);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          row[64 * wg + 16 * warp + 8 * h + g] = Elem<D>::from_float(acc[p][4 * i + 2 * h + e] * xv * ws[h] + bs[h]);
        }
      }
    }
  }
  __syncthreads();
  const int chunk = threadIdx.x % 16;  // 8 channels = 16 bytes
  const bool chunk_ok = chunk < 8 * col_tiles_here;
  T* out = static_cast<T*>(args.out);
#pragma unroll 4
  for (int r = threadIdx.x / 16; r < TL::kTokens; r += kThreads / 16) {
    const int64_t tok = tok0 + r;
    if (chunk_ok && tok < args.m) {
      const uint4 v = *reinterpret_cast<const uint4*>(smem + r * kOutRowBytes + chunk * 16);
      *reinterpret_cast<uint4*>(out + tok * args.n + col_tile0 * 64 + chunk * 8) = v;
    }
  }
#endif
}

// Launches one tile configuration. act: M rows of K elements, row stride lda elements (16-byte aligned
// rows); w: the weight in Op::Layout (N % 64 == 0, K % 16 == 0). Grid: channel tiles fastest, so
// neighbouring blocks share the activation box in L2.
// splits > 1: args carries the stages per split and the workspace; the counters are zeroed here.
template <class Op, DType D, int kTpw, int kBlocks = 1>
cudaError_t launch_marlin_rs_gemm(const void* act, int64_t lda, const void* w, const Args& args, int splits,
                                  cudaStream_t stream) {
  using TL = Tile<Op, kTpw, kBlocks>;
  CUtensorMap act_map, wgt_map;
  // Activations: (M rows, K elements) read in boxes of kTokens rows x 128 bytes with the 128-byte swizzle.
  const uint64_t act_dims[2] = {static_cast<uint64_t>(args.k), static_cast<uint64_t>(args.m)};
  const uint64_t act_strides[1] = {static_cast<uint64_t>(lda) * Op::kActBytes};
  const uint32_t act_box[2] = {static_cast<uint32_t>(128 / Op::kActBytes), TL::kTokens};
  cudaError_t err = make_tma_map(&act_map, Op::kActType, 2, act, act_dims, act_strides, act_box,
                                 CU_TENSOR_MAP_SWIZZLE_128B);
  if (err != cudaSuccess) return err;
  err = Op::Layout::make_map(&wgt_map, w, args.n, args.k, Op::kSlices);
  if (err != cudaSuccess) return err;
  // Raising the dynamic shared-memory limit is per kernel and idempotent; done once per process.
  static const cudaError_t attr = cudaFuncSetAttribute(
      marlin_rs_gemm_kernel<Op, D, kTpw, kBlocks>, cudaFuncAttributeMaxDynamicSharedMemorySize, TL::kSmemBytes);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((args.n + kChannels - 1) / kChannels),
                  static_cast<unsigned>((args.m + TL::kTokens - 1) / TL::kTokens), static_cast<unsigned>(splits));
  if (splits > 1) {
    err = cudaMemsetAsync(args.counters, 0, sizeof(int) * size_t(grid.x) * grid.y, stream);
    if (err != cudaSuccess) return err;
  }
  marlin_rs_gemm_kernel<Op, D, kTpw, kBlocks><<<grid, kThreads, TL::kSmemBytes, stream>>>(act_map, wgt_map, args);
  return cudaGetLastError();
}

// One tile with the plan's blocks per multiprocessor (two only for the tiles that fit them).
template <class Op, DType D, int kTpw>
cudaError_t launch_tile(const void* act, const void* w, const Args& args, const SplitPlan& plan,
                        cudaStream_t stream) {
  if constexpr (kTpw <= 64) {
    if (plan.blocks_per_sm == 2) {
      return launch_marlin_rs_gemm<Op, D, kTpw, 2>(act, args.k, w, args, plan.splits, stream);
    }
  }
  return launch_marlin_rs_gemm<Op, D, kTpw, 1>(act, args.k, w, args, plan.splits, stream);
}

// The plan's configuration: tile (tokens per warpgroup), blocks per multiprocessor and split-K.
template <class Op, DType D>
cudaError_t launch_plan(const void* act, const void* w, const Args& args, const SplitPlan& plan, cudaStream_t stream) {
  switch (plan.tpw) {
    case 32:
      return launch_tile<Op, D, 32>(act, w, args, plan, stream);
    case 64:
      return launch_tile<Op, D, 64>(act, w, args, plan, stream);
    default:
      return launch_tile<Op, D, 128>(act, w, args, plan, stream);
  }
}

// Points args at the split-K workspace of a split plan (counters first, then the partial sums).
inline cudaError_t attach_workspace(Args* args, const SplitPlan& plan, void* workspace) {
  if (plan.splits <= 1) return cudaSuccess;
  if (workspace == nullptr) return cudaErrorInvalidValue;
  args->stages_per_split = plan.stages_per_split;
  args->counters = static_cast<int*>(workspace);
  args->partials = reinterpret_cast<float*>(static_cast<char*>(workspace) + plan.counter_bytes());
  return cudaSuccess;
}

// A weight-only product (policy family OpT<dtype, slices per stage>) on the plan: the 32-token tile with
// 128-k stages runs OpT<D, 8>, every other configuration OpT<D, 4>; the split-K workspace is attached.
template <template <DType, int> class OpT, DType D>
cudaError_t launch_weight_only_typed(const void* act, const void* w, const Args& args, const SplitPlan& plan,
                                     cudaStream_t stream) {
  if (plan.tpw == 32 && plan.stage_k == 128) return launch_tile<OpT<D, 8>, D, 32>(act, w, args, plan, stream);
  return launch_plan<OpT<D, 4>, D>(act, w, args, plan, stream);
}

template <template <DType, int> class OpT>
cudaError_t launch_weight_only(const void* act, const void* w, const void* scales, const void* bias, void* out,
                               void* workspace, const SplitPlan& plan, int64_t m, int64_t n, int64_t k, DType dt,
                               cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  if (m > kMaxRows) return cudaErrorInvalidValue;
  Args args{nullptr, scales, bias, out, m, n, k};
  const cudaError_t err = attach_workspace(&args, plan, workspace);
  if (err != cudaSuccess) return err;
  return dt == DType::F16 ? launch_weight_only_typed<OpT, DType::F16>(act, w, args, plan, stream)
                          : launch_weight_only_typed<OpT, DType::BF16>(act, w, args, plan, stream);
}

// Blocks of the 256-token tile over an M x N product (the tile rules compare it with the SM count).
inline int64_t blocks_of_256_token_tiles(int64_t m, int64_t n) {
  return ((n + kChannels - 1) / kChannels) * ((m + 255) / 256);
}

}  // namespace sm90_marlin
}  // namespace qk
