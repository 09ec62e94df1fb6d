// Activation-dtype policies of the int4 kernels: how a pair of 4-bit codes becomes a pair of 16-bit
// floats S*W + Z, which tensor-core instruction multiplies them, and how an fp32 sum is stored.
// The layouts (awq_layout.cuh, marlin_layout.cuh) only move bits; everything that depends on the
// element type is here, so one layout serves fp16 and bf16 alike.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {
namespace i4 {

// Component r (0..3) of a 16-byte vector; r is a compile-time constant after unrolling.
QK_DEVICE QK_FORCEINLINE uint32_t word_of(const uint4& v, int r) {
  return r == 0 ? v.x : (r == 1 ? v.y : (r == 2 ? v.z : v.w));
}

// 16-bit element `idx` (0..7) of an 8-element vector, copied into both halves of a 32-bit word.
QK_DEVICE QK_FORCEINLINE uint32_t bcast_bits(const uint4& v, int idx) {
  const uint32_t word = word_of(v, idx >> 1);
  const uint32_t bits = (idx & 1) ? (word >> 16) : (word & 0xFFFFu);
  return bits | (bits << 16);
}

constexpr uint32_t kNibbleMask2 = 0x000F000Fu;

// Both policies decode with the same trick, chosen over an int -> float conversion because it
// handles two codes with one OR and one packed subtract, and is exact for every code 0..15: OR-ing
// a code into the low mantissa bits of a power of two P whose format has spacing 1 on [P, 2P) gives
// exactly P + code, and subtracting P (exact: both are small integers) leaves the code.
// fp16: P = 1024 (10 mantissa bits); bf16: P = 128 (7 mantissa bits). The multiply-add then rounds
// the exact S*W + Z once, in the activation dtype.

template <DType D>
struct Act;

template <>
struct Act<DType::F16> {
  using V2 = __half2;
  static constexpr uint32_t kMagic2 = 0x64006400u;  // fp16 1024.0 in both halves

  static QK_DEVICE QK_FORCEINLINE V2 as_v2(uint32_t v) { return *reinterpret_cast<const V2*>(&v); }
  static QK_DEVICE QK_FORCEINLINE uint32_t as_u32(V2 v) { return *reinterpret_cast<const uint32_t*>(&v); }

  // The codes at bits [shift, shift + 4) and [shift + 16, shift + 20) of `word` -> (s*w + z) x2.
  static QK_DEVICE QK_FORCEINLINE uint32_t dequant2(uint32_t word, int shift, V2 s, V2 z) {
    const V2 w = __hsub2(as_v2(((word >> shift) & kNibbleMask2) | kMagic2), as_v2(kMagic2));
    return as_u32(__hfma2(w, s, z));
  }

  static QK_DEVICE QK_FORCEINLINE uint16_t store(float v) { return __half_as_ushort(__float2half_rn(v)); }

  // acc += A (16x16 row-major) * B (16x8 column-major), fp16 inputs, fp32 accumulation.
  static QK_DEVICE QK_FORCEINLINE void mma(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
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
};

template <>
struct Act<DType::BF16> {
  using V2 = __nv_bfloat162;
  static constexpr uint32_t kMagic2 = 0x43004300u;  // bf16 128.0 in both halves

  static QK_DEVICE QK_FORCEINLINE V2 as_v2(uint32_t v) { return *reinterpret_cast<const V2*>(&v); }
  static QK_DEVICE QK_FORCEINLINE uint32_t as_u32(V2 v) { return *reinterpret_cast<const uint32_t*>(&v); }

  static QK_DEVICE QK_FORCEINLINE uint32_t dequant2(uint32_t word, int shift, V2 s, V2 z) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const V2 w = __hsub2(as_v2(((word >> shift) & kNibbleMask2) | kMagic2), as_v2(kMagic2));
    return as_u32(__hfma2(w, s, z));  // fma.rn.bf16x2: one rounding of the exact s*w + z
#else
    (void)word; (void)shift; (void)s; (void)z;
    __trap();
    return 0u;
#endif
  }

  static QK_DEVICE QK_FORCEINLINE uint16_t store(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

  static QK_DEVICE QK_FORCEINLINE void mma(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                           uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    QK_ASM_VOLATILE(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)acc; (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
    __trap();
#endif
  }
};

}  // namespace i4
}  // namespace qk
