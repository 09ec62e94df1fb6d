// Tile choice and dispatch of the int8 GEMM (int8_gemm.h); the kernels are in int8_gemm_t*.cu.
#include "int8/int8_gemm.h"

#include <string>

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

namespace {
Int8GemmTile forced_tile() {
  const char* v = env_get("QK_INT8_GEMM_TILE");
  if (v == nullptr) return Int8GemmTile::Auto;
  const std::string s(v);
  if (s == "64") return Int8GemmTile::C128xT64;
  if (s == "64s") return Int8GemmTile::C128xT64StreamK;
  if (s == "128") return Int8GemmTile::C128xT128;
  if (s == "128s") return Int8GemmTile::C128xT128StreamK;
  if (s == "256c2") return Int8GemmTile::C128xT256Cluster2;
  if (s == "256s") return Int8GemmTile::C128xT256StreamK;
  return Int8GemmTile::Auto;
}
}  // namespace

Int8GemmTile plan_int8_gemm(int64_t m, int64_t n, int64_t k, int sm_count) {
  const Int8GemmTile forced = forced_tile();
  if (forced != Int8GemmTile::Auto) return forced;
  const int64_t sms = sm_count > 0 ? sm_count : 1;
  // Blocks the tile grid gives; below half the multiprocessors the persistent schedule leaves most of the
  // GPU idle on long K, and stream-K splits K instead (measured: 32 or 24 channel tiles at M <= 256).
  const int64_t channel_tiles = (n + 127) / 128;
  const auto tiles = [&](int64_t tokens) { return channel_tiles * ((m + tokens - 1) / tokens); };
  const auto fills = [&](int64_t tokens) { return tiles(tokens) * 2 >= sms; };
  if (m <= 64) return fills(64) ? Int8GemmTile::C128xT64 : Int8GemmTile::C128xT64StreamK;
  if (m <= 128) return fills(128) ? Int8GemmTile::C128xT128 : Int8GemmTile::C128xT128StreamK;
  // Past 128 rows the 256-token tile is the fastest per block: in two-block clusters with the persistent
  // schedule where its grid fills >= 90 % of its last wave of multiprocessors; elsewhere part of the last
  // wave would idle, and stream-K spreads the work evenly wherever each multiprocessor's share of K is long
  // enough (>= 32 stages of 64) to pay for summing partial tiles. Measured on an H200 (int8_gemm_notes.md,
  // v3): stream-K 3-37 % faster at 512-4608 rows where the fill was 73-87 %; on short K (3072 x 3072 at
  // 512 rows) 27 % slower.
  const int64_t t256 = tiles(256);
  const int64_t waves = (t256 + sms - 1) / sms;
  if (t256 * 10 >= waves * sms * 9) return Int8GemmTile::C128xT256Cluster2;
  const bool long_k = t256 * ((k + 63) / 64) >= 32 * sms;
  if ((m > 256 || fills(256)) && long_k) return Int8GemmTile::C128xT256StreamK;
  return fills(256) ? Int8GemmTile::C128xT256Cluster2 : Int8GemmTile::C128xT128StreamK;
}

#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
namespace {
using int8_gemm_cutlass::Tile;
template <class F>
cudaError_t with_tile(Int8GemmTile tile, int64_t m, int64_t n, int64_t k, int sm_count, F&& f) {
  if (tile == Int8GemmTile::Auto) tile = plan_int8_gemm(m, n, k, sm_count);
  switch (tile) {
    case Int8GemmTile::C128xT64: return f(Tile<64, 1, false>{});
    case Int8GemmTile::C128xT64StreamK: return f(Tile<64, 1, true>{});
    case Int8GemmTile::C128xT128: return f(Tile<128, 1, false>{});
    case Int8GemmTile::C128xT128StreamK: return f(Tile<128, 1, true>{});
    case Int8GemmTile::C128xT256Cluster2: return f(Tile<256, 2, false>{});
    case Int8GemmTile::C128xT256StreamK: return f(Tile<256, 1, true>{});
    default: return cudaErrorInvalidValue;
  }
}
}  // namespace
#endif

cudaError_t int8_gemm_workspace_bytes(Int8GemmTile tile, int64_t m, int64_t n, int64_t k, DType dt, int sm_count,
                                      size_t* bytes) {
#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
  return with_tile(tile, m, n, k, sm_count, [&](auto t) { return decltype(t)::workspace_bytes(dt, m, n, k, sm_count, bytes); });
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
  return with_tile(tile, m, n, k, sm_count, [&](auto t) {
    return decltype(t)::run(dt, a, w, scales, bias, out, workspace, workspace_bytes, m, n, k, sm_count, stream);
  });
#else
  (void)tile, (void)a, (void)w, (void)scales, (void)bias, (void)out, (void)workspace, (void)workspace_bytes;
  (void)m, (void)n, (void)k, (void)dt, (void)sm_count, (void)stream;
  return cudaErrorNotSupported;
#endif
}

}  // namespace qk
