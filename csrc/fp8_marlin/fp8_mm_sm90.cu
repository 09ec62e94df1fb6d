// Weight-only FP8 product on Hopper's warpgroup tensor cores (sm_90a): activations in fp16/bf16 times
// e4m3 weights stored in quanto's FP8 Marlin layout, the weight decoded to the activation type in registers
// and fed to wgmma as its register operand; no dense copy of the weight. This is the 16-bit operand policy
// of the Marlin-layout GEMM (common/sm90_marlin_gemm.cuh describes tile, pipeline and epilogue).
//
// Fragment fit: a 16-bit wgmma A fragment holds, for rows g and g + 8, the k pairs (2q, 2q + 1) and
// (2q + 8, 2q + 9) of a 16-deep slice (q = lane % 4). A Marlin word holds one channel's codes for exactly
// those four k (bytes: 2q, 2q + 8, 2q + 1, 2q + 9), so each word decodes into two of the fragment's
// registers (fp8_decode.cuh) with no data exchange between lanes. A stage is 128 k (eight slices) for the
// 32-tokens-per-warpgroup tile, 64 k (four slices) for the others (sm90_marlin::plan_weight_only).
//
// Numerics: the decode is exact (every e4m3 value is a bf16 and an fp16 value), products are summed in
// fp32 by the tensor cores, the channel scale is applied once to the fp32 sum, then one rounding to the
// output type. NaN codes give NaN, as in every other FP8 path of the library.
#include <cuda.h>
#include <cuda_runtime.h>
#include "api/device.h"
#include "common/sm90_marlin_gemm.cuh"
#include "fp8_marlin/fp8_decode.cuh"
#include "fp8_marlin/fp8_mm.h"

namespace qk {
// The operand policy lives outside the unnamed namespace: in builds without sm_90a its members are
// referenced only by the (empty) kernel body, which nvcc would report as unused entities.
namespace sm90_marlin_ops {

using sm90_marlin::kSliceBytes;

// kSlicesT: 16-deep slices per stage, 4 (64 k: one activation box) or 8 (128 k: two boxes).
template <DType D, int kSlicesT>
struct Fp8WeightOperand {
  using Layout = sm90_marlin::MarlinWeights;
  static constexpr int kSlices = kSlicesT;
  static constexpr bool kRowScale = false;
  static constexpr CUtensorMapDataType kActType = CU_TENSOR_MAP_DATA_TYPE_UINT16;
  static constexpr int kActBytes = 2;

  // One stage: per slice, word x holds the thread's row g and word y its row g + 8 (k 2q, 2q + 8,
  // 2q + 1, 2q + 9 each), decoded into the A fragment (rows g, g + 8) x (k pair low, k pair high).
  template <int kN, int kParts>
  static QK_DEVICE QK_FORCEINLINE void stage(float (&acc)[kParts][kN / 2], const uint8_t* w, uint32_t b_tile) {
    uint32_t words[kSlices][2];
#pragma unroll
    for (int i = 0; i < kSlices; ++i) {
      const uint2 v = *reinterpret_cast<const uint2*>(w + i * kSliceBytes);
      words[i][0] = v.x;
      words[i][1] = v.y;
    }
    uint32_t a[kSlices][4];  // [slice][fragment register]
#pragma unroll
    for (int i = 0; i < kSlices; ++i) {
      a[i][0] = fp8::fp8_pair<D, fp8::kSelLo>(words[i][0]);
      a[i][1] = fp8::fp8_pair<D, fp8::kSelLo>(words[i][1]);
      a[i][2] = fp8::fp8_pair<D, fp8::kSelHi>(words[i][0]);
      a[i][3] = fp8::fp8_pair<D, fp8::kSelHi>(words[i][1]);
    }
    uint32_t any_nan = 0;
#pragma unroll
    for (int i = 0; i < kSlices; ++i) any_nan |= fp8::nan_bytes(words[i][0]) | fp8::nan_bytes(words[i][1]);
    if ((any_nan & 0x80808080u) != 0u) {  // rare: quanto never stores the NaN codes
#pragma unroll
      for (int i = 0; i < kSlices; ++i) {
        a[i][0] = fp8::fix_nan_pair<D, fp8::kSelLo>(a[i][0], words[i][0]);
        a[i][1] = fp8::fix_nan_pair<D, fp8::kSelLo>(a[i][1], words[i][1]);
        a[i][2] = fp8::fix_nan_pair<D, fp8::kSelHi>(a[i][2], words[i][0]);
        a[i][3] = fp8::fix_nan_pair<D, fp8::kSelHi>(a[i][3], words[i][1]);
      }
    }
    sm90_marlin::products_16bit<kN, kParts, kSlices, D == DType::BF16>(acc, a, b_tile);
  }
};

}  // namespace sm90_marlin_ops

sm90_marlin::SplitPlan plan_fp8_mm_sm90(int64_t m, int64_t n, int64_t k, int sm_count) {
  return sm90_marlin::plan_weight_only(m, n, k, sm_count, "QK_FP8_MM_");
}

cudaError_t launch_fp8_mm_sm90(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                               void* workspace, const sm90_marlin::SplitPlan& plan, int64_t m, int64_t n, int64_t k,
                               DType dt, cudaStream_t stream) {
  return sm90_marlin::launch_weight_only<sm90_marlin_ops::Fp8WeightOperand>(a, w, scales, bias, out, workspace, plan, m,
                                                                            n, k, dt, stream);
}

}  // namespace qk
