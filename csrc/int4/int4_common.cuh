// Pieces shared by the two int4 weight families (AWQ v2 and Marlin with zero points): nibble ->
// fp16 dequantization, the m16n8k16 tensor-core step, and the sizing rules of the fused small-M
// kernels. Both families compute Wd = S * W + Z with W an unsigned 4-bit code.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {
namespace i4 {

// ---- host-side sizing ------------------------------------------------------------------------

// Activation rows a fused kernel is compiled for: m rounded up to 1, 2, 4, 8 or 16.
inline int row_tile(int64_t m) { return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : (m <= 8 ? 8 : 16))); }

// fp16 activation elements one block stages in shared memory at a time, over all its rows
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

QK_DEVICE QK_FORCEINLINE __half2 u32_as_h2(uint32_t v) { return *reinterpret_cast<const __half2*>(&v); }
QK_DEVICE QK_FORCEINLINE uint32_t h2_as_u32(__half2 v) { return *reinterpret_cast<const uint32_t*>(&v); }

// Component r (0..3) of a 16-byte vector; r is a compile-time constant after unrolling.
QK_DEVICE QK_FORCEINLINE uint32_t word_of(const uint4& v, int r) {
  return r == 0 ? v.x : (r == 1 ? v.y : (r == 2 ? v.z : v.w));
}

// Putting a 4-bit code into the mantissa of fp16 1024.0 (0x6400) gives exactly 1024 + code, because
// fp16 values in [1024, 2048) are spaced 1 apart; subtracting 1024 then recovers the code exactly.
constexpr uint32_t kMagic2 = 0x64006400u;
constexpr uint32_t kNibbleMask2 = 0x000F000Fu;

// The codes at bits [shift, shift + 4) and [shift + 16, shift + 20) of `word` become the low and
// high half of s * w + z. s * w is exact (at most 15 significant bits) and __hfma2 rounds the
// exact sum once, so each value is the correctly rounded fp16 of S*W + Z.
QK_DEVICE QK_FORCEINLINE uint32_t dequant2(uint32_t word, int shift, __half2 s, __half2 z) {
  const __half2 w = __hsub2(u32_as_h2(((word >> shift) & kNibbleMask2) | kMagic2), u32_as_h2(kMagic2));
  return h2_as_u32(__hfma2(w, s, z));
}

// Half `idx` (0..7) of an 8-half vector, broadcast to both lanes of a half2.
QK_DEVICE QK_FORCEINLINE __half2 bcast(const uint4& v, int idx) {
  const uint32_t word = word_of(v, idx >> 1);
  const uint32_t bits = (idx & 1) ? (word >> 16) : (word & 0xFFFFu);
  return u32_as_h2(bits | (bits << 16));
}

// Weights are read exactly once per kernel: stream them (evict-first) so that the activations and
// scales stay cached.
QK_DEVICE QK_FORCEINLINE uint4 load_stream16(const void* p) { return __ldcs(static_cast<const uint4*>(p)); }

// acc += A (16x16, row-major) * B (16x8, column-major) with fp16 inputs and fp32 accumulation.
// Fragment ownership (lane = 4g + t): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..],
// a3 = A[g+8][2t+8..]; b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; acc = C[g][2t], C[g][2t+1],
// C[g+8][2t], C[g+8][2t+1]. The int4 kernels use the weights as A (16 channels x 16 k) and the
// activations as B (16 k x 8 activation rows).
QK_DEVICE QK_FORCEINLINE void mma_16816(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  QK_ASM_VOLATILE(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  // The fused int4 kernels need sm_80 tensor cores; the API only routes sm_80+ devices here.
  (void)acc; (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
  __trap();
#endif
}

}  // namespace i4
}  // namespace qk
