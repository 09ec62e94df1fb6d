// Decoding e4m3fn codes of quanto's FP8 Marlin layout into packed 16-bit pairs, in registers.
// Shared by the dequantize kernel and the GEMV format policy (docs/numerics.md, "FP8 decode").
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {
namespace fp8 {

// __byte_perm selectors placing two bytes of a word at bits 8..15 and 24..31 (zeros elsewhere):
// bytes (0, 2) give the (k, k+1) pair, bytes (1, 3) the (k+8, k+9) pair.
constexpr uint32_t kSelLo = 0x2404u;
constexpr uint32_t kSelHi = 0x3414u;

// Two e4m3fn codes -> two exact fp16/bf16 values (low half = first code). The 7 exponent+mantissa
// bits are placed under the target's exponent field and the product with 2^(bias difference)
// rebiases them exactly, subnormal codes included. The NaN codes come out as +-480
// here; fix_nan_pair turns them into NaN to match fp8e4m3_to_float.
template <DType D, uint32_t kSel>
QK_DEVICE QK_FORCEINLINE uint32_t fp8_pair(uint32_t x) {
  const uint32_t y = __byte_perm(x, 0u, kSel);
  uint32_t r;
  if constexpr (D == DType::F16) {
    const uint32_t v = (y & 0x80008000u) | ((y >> 1) & 0x3F803F80u);
    QK_ASM("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(v), "r"(0x5C005C00u));  // x 2^8
  } else {
    const uint32_t v = (y & 0x80008000u) | ((y >> 4) & 0x07F007F0u);
    // x 2^120; adding -0 keeps the sign of zero products (sm_80 has no bf16x2 mul).
    QK_ASM("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(v), "r"(0x7B807B80u), "r"(0x80008000u));
  }
  return r;
}

// Sets the halves whose code is 0x7F / 0xFF to a quiet NaN of the same sign (480 | NaN bits).
template <DType D, uint32_t kSel>
QK_DEVICE QK_FORCEINLINE uint32_t fix_nan_pair(uint32_t r, uint32_t x) {
  const uint32_t y = __byte_perm(x, 0u, kSel) & 0x7F007F00u;
  const uint32_t is_nan = __vcmpeq2(y, 0x7F007F00u);
  return r | (is_nan & (D == DType::F16 ? 0x7E007E00u : 0x7FC07FC0u));
}

// Nonzero iff some byte of x is a NaN code: (b & 0x7F) + 1 reaches bit 7 only for 0x7F.
QK_DEVICE QK_FORCEINLINE uint32_t nan_bytes(uint32_t x) { return (x & 0x7F7F7F7Fu) + 0x01010101u; }

// The 8 words lane (g, t) holds of a 1 KB Marlin unit (16 k x 64 channels), words[2 sub + h] = channel
// 16 sub + 8h + g at k 2t + (0, 8, 1, 9), as the A fragments of the unit's four 16-channel sub-tiles:
// af[sub] = {channel g k (2t, 2t+1), channel g+8 same k, channel g k (2t+8, 2t+9), channel g+8 same k}.
// NaN codes come out as +-480 here (fix_unit_nans corrects them).
template <DType D>
QK_DEVICE QK_FORCEINLINE void decode_unit_pairs(const uint32_t (&words)[8], uint32_t (&af)[4][4]) {
#pragma unroll
  for (int sub = 0; sub < 4; ++sub) {
    af[sub][0] = fp8_pair<D, kSelLo>(words[2 * sub]);
    af[sub][1] = fp8_pair<D, kSelLo>(words[2 * sub + 1]);
    af[sub][2] = fp8_pair<D, kSelHi>(words[2 * sub]);
    af[sub][3] = fp8_pair<D, kSelHi>(words[2 * sub + 1]);
  }
}

// Bit 7 of some byte is set iff one of the 8 words holds a NaN code (OR these over several units to
// test them at once: (flags & 0x80808080) != 0).
QK_DEVICE QK_FORCEINLINE uint32_t unit_nan_flags(const uint32_t (&words)[8]) {
  uint32_t any_nan = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) any_nan |= nan_bytes(words[j]);
  return any_nan;
}

template <DType D>
QK_DEVICE QK_FORCEINLINE void fix_unit_nans(const uint32_t (&words)[8], uint32_t (&af)[4][4]) {
#pragma unroll
  for (int sub = 0; sub < 4; ++sub) {
    af[sub][0] = fix_nan_pair<D, kSelLo>(af[sub][0], words[2 * sub]);
    af[sub][1] = fix_nan_pair<D, kSelLo>(af[sub][1], words[2 * sub + 1]);
    af[sub][2] = fix_nan_pair<D, kSelHi>(af[sub][2], words[2 * sub]);
    af[sub][3] = fix_nan_pair<D, kSelHi>(af[sub][3], words[2 * sub + 1]);
  }
}

// decode_unit_pairs with NaN codes made NaN; the test costs two instructions per word, the fix-up only
// runs when one is there.
template <DType D>
QK_DEVICE QK_FORCEINLINE void decode_unit(const uint32_t (&words)[8], uint32_t (&af)[4][4]) {
  decode_unit_pairs<D>(words, af);
  if ((unit_nan_flags(words) & 0x80808080u) != 0u) fix_unit_nans<D>(words, af);  // rare: quanto never produces them
}

// Two exact 16-bit values times a pair of scales, rounded once (fp16: mul; bf16: fma with -0, as
// sm_80 has no bf16x2 mul and -0 keeps the sign of zero products).
template <DType D>
QK_DEVICE QK_FORCEINLINE uint32_t scale_pair(uint32_t v, uint32_t s2) {
  uint32_t r;
  if constexpr (D == DType::F16) {
    QK_ASM("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(r) : "r"(v), "r"(s2));
  } else {
    QK_ASM("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(v), "r"(s2), "r"(0x80008000u));
  }
  return r;
}

template <DType D>
QK_DEVICE QK_FORCEINLINE uint32_t float_to_bits16(float v);
template <>
QK_DEVICE QK_FORCEINLINE uint32_t float_to_bits16<DType::F16>(float v) {
  return __half_as_ushort(__float2half_rn(v));
}
template <>
QK_DEVICE QK_FORCEINLINE uint32_t float_to_bits16<DType::BF16>(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

}  // namespace fp8
}  // namespace qk
