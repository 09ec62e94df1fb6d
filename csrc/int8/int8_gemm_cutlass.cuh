// One weight-only int8 GEMM configuration on CUTLASS 3's sm_90 collectives (used through its public
// headers). The product is computed transposed, D(N, M) = W(N, K) . A(M, K)^T, so that the int8 weight is
// the wgmma register operand (the mixed-input mainloop converts the narrow operand in registers and reads
// the 16-bit one from shared memory) and D written column-major is exactly out[M, N] row-major.
//
// Epilogue: a visitor tree computing s[n] * acc + bias[n] in fp32 and rounding once to the output type;
// with the transposed product the channel is D's row, so scale and bias are column-vector broadcasts (a
// null bias reads as 0). Numerics match the library's other int8 kernels (docs/numerics.md, "int8").
#pragma once

#include <cutlass/cutlass.h>
#include <cute/tensor.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/kernel_hardware_info.h>

#include "int8/int8_gemm.h"
#include "int8/int8_gemm_tiles.h"

namespace qk::int8_gemm_cutlass {

// cudaError_t from CUTLASS's status, for the library's error path.
inline cudaError_t to_cuda(cutlass::Status s) {
  if (s == cutlass::Status::kSuccess) return cudaSuccess;
  if (s == cutlass::Status::kErrorInternal) {
    const cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? cudaErrorUnknown : e;
  }
  return cudaErrorInvalidValue;
}

// T: cutlass::half_t or cutlass::bfloat16_t. TileShape: (channels, tokens, k) of one block; ClusterShape:
// blocks per cluster; Scheduler: void (persistent) or cutlass::gemm::StreamKScheduler.
template <class T, class TileShape, class ClusterShape, class Scheduler>
struct Config {
  using Schedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
  using EpilogueSchedule = cutlass::epilogue::TmaWarpSpecializedCooperative;

  using ChannelVector =
      cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, T, float, cute::Stride<cute::_1, cute::_0, int64_t>>;
  using ScaleBias = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, T, float,
                                             cutlass::FloatRoundStyle::round_to_nearest>,
      ChannelVector, cutlass::epilogue::fusion::Sm90AccFetch, ChannelVector>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::ColumnMajor, 8, T,
      cutlass::layout::ColumnMajor, 8, EpilogueSchedule, ScaleBias>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16, T,
      cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      Schedule>::CollectiveOp;

  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue, Scheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const void* a, const int8_t* w, const void* scales, const void* bias,
                                            void* out, int64_t m, int64_t n, int64_t k, int sm_count) {
    using StrideA = typename Kernel::StrideA;  // W: (N, K), k contiguous
    using StrideB = typename Kernel::StrideB;  // A^T: (M, K) as the GEMM's B, k contiguous
    using StrideD = typename Kernel::StrideD;  // D: (N, M), n contiguous
    StrideA stride_w = cute::make_stride(k, cute::_1{}, int64_t(0));
    StrideB stride_a = cute::make_stride(k, cute::_1{}, int64_t(0));
    StrideD stride_d = cute::make_stride(cute::_1{}, n, int64_t(0));

    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = {static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), 1};
    args.mainloop.ptr_A = w;
    args.mainloop.dA = stride_w;
    args.mainloop.ptr_B = static_cast<const T*>(a);
    args.mainloop.dB = stride_a;
    // visitor arguments, children first (op_0 scale, op_1 accumulator, op_2 bias), then the node (op_3)
    args.epilogue.thread.op_0.ptr_col = static_cast<const T*>(scales);
    args.epilogue.thread.op_2.ptr_col = static_cast<const T*>(bias);
    args.epilogue.ptr_C = nullptr;
    args.epilogue.ptr_D = static_cast<T*>(out);
    args.epilogue.dD = stride_d;
    args.hw_info.device_id = 0;  // unused when sm_count is given
    args.hw_info.sm_count = sm_count;
    return args;
  }

  static cudaError_t workspace_bytes(int64_t m, int64_t n, int64_t k, int sm_count, size_t* bytes) {
    auto args = arguments(nullptr, nullptr, nullptr, nullptr, nullptr, m, n, k, sm_count);
    *bytes = Gemm::get_workspace_size(args);
    return cudaSuccess;
  }

  static cudaError_t run(const void* a, const int8_t* w, const void* scales, const void* bias, void* out,
                         void* workspace, size_t workspace_bytes, int64_t m, int64_t n, int64_t k, int sm_count,
                         cudaStream_t stream) {
    auto args = arguments(a, w, scales, bias, out, m, n, k, sm_count);
    if (Gemm::get_workspace_size(args) > workspace_bytes) return cudaErrorInvalidValue;
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
    Gemm gemm;
    cutlass::Status s = gemm.initialize(args, workspace, stream);
    if (s != cutlass::Status::kSuccess) return to_cuda(s);
    s = gemm.run(stream);
    if (s != cutlass::Status::kSuccess) return to_cuda(s);
    return cudaGetLastError();
  }
};

}  // namespace qk::int8_gemm_cutlass

namespace qk::int8_gemm_cutlass {

// Tile (int8_gemm_tiles.h): 128 channels x kTokens tokens x 64 k per stage.
template <class T, int kTokens, int kClusterChannels, bool kStreamK>
using TileConfig =
    Config<T, cute::Shape<cute::_128, cute::Int<kTokens>, cute::_64>,
           cute::Shape<cute::Int<kClusterChannels>, cute::_1, cute::_1>,
           cute::conditional_t<kStreamK, cutlass::gemm::StreamKScheduler, void>>;

template <int kTokens, int kClusterChannels, bool kStreamK>
cudaError_t Tile<kTokens, kClusterChannels, kStreamK>::workspace_bytes(DType dt, int64_t m, int64_t n, int64_t k,
                                                                      int sm_count, size_t* bytes) {
  using Bf16 = TileConfig<cutlass::bfloat16_t, kTokens, kClusterChannels, kStreamK>;
  using F16 = TileConfig<cutlass::half_t, kTokens, kClusterChannels, kStreamK>;
  return dt == DType::BF16 ? Bf16::workspace_bytes(m, n, k, sm_count, bytes)
                           : F16::workspace_bytes(m, n, k, sm_count, bytes);
}

template <int kTokens, int kClusterChannels, bool kStreamK>
cudaError_t Tile<kTokens, kClusterChannels, kStreamK>::run(DType dt, const void* a, const int8_t* w,
                                                          const void* scales, const void* bias, void* out,
                                                          void* workspace, size_t workspace_bytes, int64_t m,
                                                          int64_t n, int64_t k, int sm_count, cudaStream_t stream) {
  using Bf16 = TileConfig<cutlass::bfloat16_t, kTokens, kClusterChannels, kStreamK>;
  using F16 = TileConfig<cutlass::half_t, kTokens, kClusterChannels, kStreamK>;
  return dt == DType::BF16
             ? Bf16::run(a, w, scales, bias, out, workspace, workspace_bytes, m, n, k, sm_count, stream)
             : F16::run(a, w, scales, bias, out, workspace, workspace_bytes, m, n, k, sm_count, stream);
}

}  // namespace qk::int8_gemm_cutlass
