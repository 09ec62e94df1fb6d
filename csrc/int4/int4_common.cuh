// Pieces shared by the two int4 weight layouts (AWQ v2 and Marlin with zero points): the sizing
// rules of the fused small-M kernels, the argument blocks of the kernel templates, and the
// launchers each instantiation provides. Both layouts compute Wd = S * W + Z with W an unsigned
// 4-bit code; the element type (fp16 or bf16) is act.cuh's business.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {
namespace i4 {

// ---- host-side sizing ------------------------------------------------------------------------

// Activation rows a fused kernel is compiled for: m rounded up to 1, 2, 4, 8 or 16.
inline int row_tile(int64_t m) { return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : (m <= 8 ? 8 : 16))); }

// 16-bit activation elements one block stages in shared memory at a time, over all its rows
// (32 KB: with the 8 KB reduction buffer this stays under the 48 KB a launch gets without opt-in).
constexpr int kActSmemHalves = 16384;

inline bool aligned_to(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; }

// Grid size for grid-stride loops over `items` work items of `per_block` each.
inline unsigned grid_for(int64_t items, int per_block) {
  int64_t blocks = (items + per_block - 1) / per_block;
  if (blocks > (int64_t(1) << 22)) blocks = int64_t(1) << 22;  // the loop covers the rest
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

// ---- device helpers ----------------------------------------------------------------------------

QK_DEVICE QK_FORCEINLINE uint32_t pack_halves(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Weights are read exactly once per kernel: stream them (evict-first) so that the activations and
// scales stay cached.
QK_DEVICE QK_FORCEINLINE uint4 load_stream16(const void* p) { return __ldcs(static_cast<const uint4*>(p)); }

// ---- what a launch passes to the kernel templates (int4_gemv.cuh, int4_dequant.cuh) --------------
//
// Every pointer is raw bits: the layouts move 16-bit values without looking at them, and the
// activation policy (act.cuh) gives them a type.

struct GemvArgs {
  const uint16_t* a;       // (M, K) activations
  const void* w;           // packed weight, in the layout's own word type
  const uint16_t* scales;  // (K/G, N)
  const uint16_t* zeros;   // (K/G, N)
  uint16_t* out;           // (M, N)
  float* ws;               // split-K partials, splits * M * N (splits > 1 only)
  int m;
  int64_t n;
  int k;
  int group;
  ScalePerm perm;
  int splits;
  int slice_units;  // K units staged in shared memory at a time (set by the launcher)
  int vec_sz;       // scales and zeros may be read with vector loads (set by the launcher)
};

struct DequantArgs {
  const void* w;
  const uint16_t* scales;
  const uint16_t* zeros;
  uint16_t* out;  // (N, K), row-major
  int64_t n;
  int k;
  int group;
  ScalePerm perm;
  int vec_sz;
  int64_t tasks;  // warp tasks in the whole weight (set by the layout's plan)
  int k_tasks;    // of those, per row of tasks along K
};

// The layout policies (awq_layout.cuh, marlin_layout.cuh) and the launchers each thin .cu
// instantiates for one layout and one activation dtype.
struct AwqLayout;
template <int UKT>
struct MarlinLayout;

template <class L, DType D>
cudaError_t launch_int4_gemv(GemvArgs p, cudaStream_t stream);
template <class L, DType D>
cudaError_t launch_int4_dequant(DequantArgs p, cudaStream_t stream);

}  // namespace i4
}  // namespace qk
