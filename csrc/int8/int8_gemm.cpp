// Tile choice and dispatch of the int8 GEMM (int8_gemm.h); the kernels are in int8_gemm_t*.cu.
#include "int8/int8_gemm.h"

#include "common/env.h"
#include "int8/int8_gemm_tiles.h"

namespace qk {

bool int8_gemm_built() {
#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
  return true;
#else
  return false;
#endif
}

Int8GemmTile plan_int8_gemm(int64_t m, int64_t n, int64_t k) {
  (void)n;
  (void)k;
  switch (env_int("QK_INT8_GEMM_TILE", 0)) {
    case 64: return Int8GemmTile::C128xT64;
    case 128: return Int8GemmTile::C128xT128;
    case 256: return Int8GemmTile::C128xT256;
    default: break;
  }
  if (m <= 64) return Int8GemmTile::C128xT64;
  if (m <= 1024) return Int8GemmTile::C128xT128;
  return Int8GemmTile::C128xT256;
}

#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
namespace {
template <class F>
cudaError_t with_tile(Int8GemmTile tile, int64_t m, int64_t n, int64_t k, F&& f) {
  if (tile == Int8GemmTile::Auto) tile = plan_int8_gemm(m, n, k);
  switch (tile) {
    case Int8GemmTile::C128xT64: return f(int8_gemm_cutlass::Tile<64>{});
    case Int8GemmTile::C128xT128: return f(int8_gemm_cutlass::Tile<128>{});
    case Int8GemmTile::C128xT256: return f(int8_gemm_cutlass::Tile<256>{});
    default: return cudaErrorInvalidValue;
  }
}
}  // namespace
#endif

cudaError_t int8_gemm_workspace_bytes(Int8GemmTile tile, int64_t m, int64_t n, int64_t k, DType dt, int sm_count,
                                      size_t* bytes) {
#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
  return with_tile(tile, m, n, k, [&](auto t) { return decltype(t)::workspace_bytes(dt, m, n, k, sm_count, bytes); });
#else
  (void)tile, (void)m, (void)n, (void)k, (void)dt, (void)sm_count;
  *bytes = 0;
  return cudaErrorNotSupported;
#endif
}

cudaError_t launch_int8_gemm(Int8GemmTile tile, const void* a, const int8_t* w, const void* scales,
                             const void* bias, void* out, void* workspace, size_t workspace_bytes, int64_t m,
                             int64_t n, int64_t k, DType dt, int sm_count, cudaStream_t stream) {
#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
  return with_tile(tile, m, n, k, [&](auto t) {
    return decltype(t)::run(dt, a, w, scales, bias, out, workspace, workspace_bytes, m, n, k, sm_count, stream);
  });
#else
  (void)tile, (void)a, (void)w, (void)scales, (void)bias, (void)out, (void)workspace, (void)workspace_bytes;
  (void)m, (void)n, (void)k, (void)dt, (void)sm_count, (void)stream;
  return cudaErrorNotSupported;
#endif
}

}  // namespace qk
