// FP8 x FP8 product on Hopper's warpgroup tensor cores (wgmma), for the sm_90a target: the e4m3 operand
// policy of the Marlin-layout GEMM (common/sm90_marlin_gemm.cuh, which describes the tile, pipeline and
// epilogue).
//
// In quanto's FP8 Marlin layout the four words a thread loads for one 64 x 32 (channels x k) step are
// already its e4m3 A fragment, because the activations are quantized in the matching k order
// (fp8_compute.h, "fragment order"): the weight goes from shared memory to the tensor cores with two
// 8-byte loads per thread per 32 k and no byte shuffles. A stage is 128 k (eight slices).
// Measurements and rejected variants: benchmarks/results/fp8_compute_notes.md.
#include <cuda.h>
#include <cuda_runtime.h>
#include "api/device.h"
#include "common/sm90_marlin_gemm.cuh"
#include "fp8_compute/fp8_compute.h"

namespace qk {
// The operand policy lives outside the unnamed namespace: in builds without sm_90a its members are
// referenced only by the (empty) kernel body, which nvcc would report as unused entities.
namespace sm90_marlin_ops {

using sm90_marlin::kSliceBytes;

struct E4m3Operand {
  using Layout = sm90_marlin::MarlinWeights;
  static constexpr int kSlices = 8;
  static constexpr bool kRowScale = true;
  static constexpr CUtensorMapDataType kActType = CU_TENSOR_MAP_DATA_TYPE_UINT8;
  static constexpr int kActBytes = 1;

  // One stage: per 32 k, slices 2st and 2st + 1 hold the two k halves of the thread's fragment (words x,
  // y: rows g and g + 8), one product per part of the token tile.
  template <int kN, int kParts>
  static QK_DEVICE QK_FORCEINLINE void stage(float (&acc)[kParts][kN / 2], const uint8_t* w, uint32_t b_tile) {
    uint2 a[kSlices];
#pragma unroll
    for (int i = 0; i < kSlices; ++i) a[i] = *reinterpret_cast<const uint2*>(w + i * kSliceBytes);
#pragma unroll
    for (int p = 0; p < kParts; ++p) sm90::fence_registers(acc[p]);
    sm90::wgmma_fence();
#pragma unroll
    for (int st = 0; st < kSlices / 2; ++st) {
      const uint2 lo = a[2 * st], hi = a[2 * st + 1];
#pragma unroll
      for (int p = 0; p < kParts; ++p) {
        const uint64_t desc = sm90::desc_kmajor_sw128(b_tile + p * kN * 128 + st * 32);
        sm90::wgmma_k32_e4m3_rs<kN>(acc[p], lo.x, lo.y, hi.x, hi.y, desc);
      }
    }
    sm90::wgmma_commit();
  }
};

}  // namespace sm90_marlin_ops

namespace {

using sm90_marlin_ops::E4m3Operand;

template <DType D>
cudaError_t launch_typed(const uint8_t* xq, const uint32_t* w, const sm90_marlin::Args& args, cudaStream_t stream) {
  // The 256-token tile unless it would give fewer than two blocks per multiprocessor over the grid.
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  if (sm90_marlin::blocks_of_256_token_tiles(args.m, args.n) < 2 * int64_t(sm_count(device))) {
    return sm90_marlin::launch_marlin_rs_gemm<E4m3Operand, D, 64>(xq, args.k, w, args, 1, stream);
  }
  return sm90_marlin::launch_marlin_rs_gemm<E4m3Operand, D, 128>(xq, args.k, w, args, 1, stream);
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
  const sm90_marlin::Args args{xs, scales, bias, out, m, n, k};
  return dt == DType::F16 ? launch_typed<DType::F16>(xq, w, args, stream)
                          : launch_typed<DType::BF16>(xq, w, args, stream);
}

}  // namespace qk
