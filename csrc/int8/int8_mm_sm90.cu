// Weight-only int8 product on Hopper's warpgroup tensor cores (sm_90a): activations in fp16/bf16 times
// quanto's int8 codes as stored ((N, K) row-major), each code converted to the activation type in
// registers and fed to wgmma as its register operand; no dense copy of the weight. This is the int8 operand
// policy of the shared Marlin-layout GEMM (common/sm90_marlin_gemm.cuh: tile, pipeline, split-K and
// epilogue), with its own weight layout.
//
// Fragment fit: a 16-bit wgmma A fragment holds, for rows g and g + 8, the k pairs (2q, 2q + 1) and
// (2q + 8, 2q + 9) of a 16-deep slice (q = lane % 4). In a row-major code row those pairs are the
// (q % 2) halves of words q / 2 and 2 + q / 2 of the slice's 16 bytes: two 4-byte shared-memory loads
// per row and slice, and the byte selection folds into the conversion's first byte permute. The stage's
// box (128 channels x 64 or 128 k) is copied with the swizzle of its row length, under which the eight
// rows a warp's lanes read per load fall in distinct banks.
//
// Numerics: the conversion is exact (every int8 value is an fp16 and a bf16 value), products are summed
// in fp32 by the tensor cores, the channel scale is applied once to the fp32 sum, then one rounding to
// the output type (docs/numerics.md, "int8").
#include <cuda.h>
#include <cuda_runtime.h>
#include "api/device.h"
#include "common/sm90_marlin_gemm.cuh"
#include "int8/int8_decode.cuh"
#include "int8/int8_mm.h"

namespace qk {
// The operand policy lives outside the unnamed namespace: in builds without sm_90a its members are
// referenced only by the (empty) kernel body, which nvcc would report as unused entities.
namespace sm90_marlin_ops {

// quanto's int8 codes, (N, K) row-major. A stage's box is the block's 128 channels x kStageK k (one row of
// kStageK bytes per channel), copied with the swizzle of that row length: 16-byte chunk c of box row r lands
// at chunk c ^ ((r >> 1) & 3) (64-byte rows) or c ^ (r & 7) (128-byte rows).
template <int kStageKT>
struct RowMajorInt8Weights {
  static constexpr int kStageK = kStageKT;
  static_assert(kStageK == 64 || kStageK == 128, "64- or 128-byte rows: the 64- or 128-byte swizzle");
  static cudaError_t make_map(CUtensorMap* map, const void* w, int64_t n, int64_t k, int slices) {
    if (slices * 16 != kStageK) return cudaErrorInvalidValue;
    const uint64_t dims[2] = {static_cast<uint64_t>(k), static_cast<uint64_t>(n)};
    const uint64_t strides[1] = {static_cast<uint64_t>(k)};
    const uint32_t box[2] = {kStageK, sm90_marlin::kChannels};
    return make_tma_map(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, w, dims, strides, box,
                        kStageK == 64 ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_128B);
  }
  static QK_DEVICE QK_FORCEINLINE void copy(uint32_t dst, const CUtensorMap* map, int64_t col_tile0, int64_t slice0,
                                            uint32_t bar) {
    sm90::tma_load_2d(dst, map, static_cast<int32_t>(slice0 * 16), static_cast<int32_t>(col_tile0 * 64), bar);
  }
  // Row g of the warp's 16-channel sub-tile, word q / 2 of a 16-byte chunk (before the swizzle).
  static QK_DEVICE QK_FORCEINLINE uint32_t thread_offset(int wg, int warp, int lane) {
    return (64 * wg + 16 * warp + (lane >> 2)) * kStageK + 4 * ((lane & 3) >> 1);
  }
  // What the swizzle XORs into the chunk index of the thread's rows g and g + 8 (box rows are 16-aligned
  // per warp, so both rows give the same value). Either way the eight rows a load's lanes read fall in
  // distinct banks.
  static QK_DEVICE QK_FORCEINLINE int chunk_xor(int lane) {
    const int g = lane >> 2;
    return kStageK == 64 ? (g >> 1) & 3 : g & 7;
  }
  static QK_DEVICE QK_FORCEINLINE int64_t scale_slot(int64_t ch) { return ch; }
};

// kSlicesT: 16-deep slices per stage, 4 (64 k: one activation box) or 8 (128 k: two boxes).
template <DType D, int kSlicesT>
struct Int8WeightOperand {
  using Layout = RowMajorInt8Weights<kSlicesT * 16>;
  static constexpr int kSlices = kSlicesT;
  static constexpr bool kRowScale = false;
  static constexpr CUtensorMapDataType kActType = CU_TENSOR_MAP_DATA_TYPE_UINT16;
  static constexpr int kActBytes = 2;

  // One stage: per slice, rows g and g + 8 give the low-k and high-k registers of the A fragment.
  template <int kN, int kParts>
  static QK_DEVICE QK_FORCEINLINE void stage(float (&acc)[kParts][kN / 2], const uint8_t* w, uint32_t b_tile) {
    const int lane = threadIdx.x % 32;
    const int swizzle = Layout::chunk_xor(lane);
    // byte_perm selector: bytes j0, j0 + 1 of x (j0 = 2 (q % 2)) under the 0x43 / 0x64 byte of the constant
    const uint32_t sel = (lane & 1) ? kInt8SelHi : kInt8SelLo;
    uint32_t a[kSlices][4];  // [slice][fragment register]
#pragma unroll
    for (int i = 0; i < kSlices; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint8_t* chunk = w + h * 8 * Layout::kStageK + 16 * (i ^ swizzle);
        const uint32_t lo = *reinterpret_cast<const uint32_t*>(chunk);      // k 2q, 2q + 1 (among 4)
        const uint32_t hi = *reinterpret_cast<const uint32_t*>(chunk + 8);  // k 2q + 8, 2q + 9
        a[i][h] = int8_pair<D>(lo, sel);
        a[i][2 + h] = int8_pair<D>(hi, sel);
      }
    }
    sm90_marlin::products_16bit<kN, kParts, kSlices, D == DType::BF16>(acc, a, b_tile);
  }
};

}  // namespace sm90_marlin_ops

sm90_marlin::SplitPlan plan_int8_mm_sm90(int64_t m, int64_t n, int64_t k, int sm_count) {
  return sm90_marlin::plan_weight_only(m, n, k, sm_count, "QK_INT8_MM_");
}

cudaError_t launch_int8_mm_sm90(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                                void* workspace, const sm90_marlin::SplitPlan& plan, int64_t m, int64_t n, int64_t k,
                                DType dt, cudaStream_t stream) {
  return sm90_marlin::launch_weight_only<sm90_marlin_ops::Int8WeightOperand>(a, w, scales, bias, out, workspace, plan,
                                                                             m, n, k, dt, stream);
}

}  // namespace qk
