// Weight-only FP8 product on Hopper's warpgroup tensor cores (sm_90a): activations in fp16/bf16 times
// e4m3 weights stored in quanto's FP8 Marlin layout, the weight decoded to the activation type in registers
// and fed to wgmma as its register operand; no dense copy of the weight. This is the 16-bit operand policy
// of the Marlin-layout GEMM (common/sm90_marlin_gemm.cuh describes tile, pipeline and epilogue).
//
// Fragment fit: a 16-bit wgmma A fragment holds, for rows g and g + 8, the k pairs (2q, 2q + 1) and
// (2q + 8, 2q + 9) of a 16-deep slice (q = lane % 4). A Marlin word holds one channel's codes for exactly
// those four k (bytes: 2q, 2q + 8, 2q + 1, 2q + 9), so each word decodes into two of the fragment's
// registers (fp8_decode.cuh) with no data exchange between lanes. A stage is 64 k (four slices).
//
// Numerics: the decode is exact (every e4m3 value is a bf16 and an fp16 value), products are summed in
// fp32 by the tensor cores, the channel scale is applied once to the fp32 sum, then one rounding to the
// output type. A NaN code makes its channel NaN, as in every other FP8 path of the library.
#include <cstdlib>
#include <cuda.h>
#include <cuda_runtime.h>
#include "api/device.h"
#include "common/sm90_marlin_gemm.cuh"
#include "fp8_marlin/fp8_decode.cuh"
#include "fp8_marlin/fp8_mm.h"

namespace qk {
namespace {

using sm90_marlin::kSliceBytes;

template <DType D>
struct Fp8WeightOperand {
  static constexpr int kSlices = 4;
  static constexpr bool kRowScale = false;
  static constexpr CUtensorMapDataType kActType = CU_TENSOR_MAP_DATA_TYPE_UINT16;
  static constexpr int kActBytes = 2;

  // NaN codes decode to +-480 here; load() flags them and the epilogue makes those channels NaN.
  static constexpr bool kNanFlags = true;
  struct Regs {
    uint32_t a[kSlices][4][2];  // [slice][word][low k pair, high k pair]
  };

  // Per slice, words (x, y) are product 0's rows g and g + 8, (z, w) product 1's.
  static QK_DEVICE QK_FORCEINLINE void load(Regs& r, const uint8_t* w, uint32_t (&nan)[4]) {
#pragma unroll
    for (int i = 0; i < kSlices; ++i) {
      const uint4 v = *reinterpret_cast<const uint4*>(w + i * kSliceBytes);
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        r.a[i][j][0] = fp8::fp8_pair<D, fp8::kSelLo>(words[j]);
        r.a[i][j][1] = fp8::fp8_pair<D, fp8::kSelHi>(words[j]);
        nan[j] |= fp8::nan_bytes(words[j]) & 0x80808080u;
      }
    }
  }

  template <int kTpw>
  static QK_DEVICE QK_FORCEINLINE void issue(float (&acc0)[kTpw / 2], float (&acc1)[kTpw / 2], const Regs& r,
                                             uint32_t b_tile) {
    sm90::wgmma_fence();
    constexpr bool kBf16 = D == DType::BF16;
#pragma unroll
    for (int i = 0; i < kSlices; ++i) {
      const uint64_t desc = sm90::desc_kmajor_sw128(b_tile + i * 32);  // 16 k of 2 bytes per slice
      sm90::wgmma_k16_rs<kTpw, kBf16>(acc0, r.a[i][0][0], r.a[i][1][0], r.a[i][0][1], r.a[i][1][1], desc);
      sm90::wgmma_k16_rs<kTpw, kBf16>(acc1, r.a[i][2][0], r.a[i][3][0], r.a[i][2][1], r.a[i][3][1], desc);
    }
    sm90::wgmma_commit();
  }
};

template <DType D>
cudaError_t launch_typed(const void* a, const uint32_t* w, const sm90_marlin::Args& args, cudaStream_t stream) {
  using Op = Fp8WeightOperand<D>;
  switch (fp8_mm_sm90_tile(args.m, args.n)) {
    case 32:
      return sm90_marlin::launch_marlin_rs_gemm<Op, D, 32>(a, args.k, w, args, stream);
    case 64:
      return sm90_marlin::launch_marlin_rs_gemm<Op, D, 64>(a, args.k, w, args, stream);
    default:
      return sm90_marlin::launch_marlin_rs_gemm<Op, D, 128>(a, args.k, w, args, stream);
  }
}

}  // namespace

int fp8_mm_sm90_tile(int64_t m, int64_t n) {
  // Tokens per warpgroup: the smallest tile the rows fill. Measured on an H200 (fp8_mm_notes.md): every
  // stage costs about the same time whatever its width, so above 128 rows the 256-token tile wins even
  // when it leaves multiprocessors idle.
  (void)n;
  if (const char* forced = std::getenv("QK_FP8_MM_TILE")) {  // benchmark and test override: 32, 64 or 128
    const int t = std::atoi(forced);
    if (t == 32 || t == 64 || t == 128) return t;
  }
  if (m <= 64) return 32;
  return m <= 128 ? 64 : 128;
}

bool fp8_mm_has_sm90_kernel() {
#if defined(QK_HAS_SM90A)
  return true;
#else
  return false;
#endif
}

cudaError_t launch_fp8_mm_sm90(const void* a, const uint32_t* w, const void* scales, const void* bias, void* out,
                               int64_t m, int64_t n, int64_t k, DType dt, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  if (m > kFp8MmMaxM) return cudaErrorInvalidValue;
  const sm90_marlin::Args args{nullptr, scales, bias, out, m, n, k};
  return dt == DType::F16 ? launch_typed<DType::F16>(a, w, args, stream)
                          : launch_typed<DType::BF16>(a, w, args, stream);
}

}  // namespace qk
