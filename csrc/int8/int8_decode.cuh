// Exact int8 -> fp16 / bf16 conversion of byte pairs, in registers: shared by the int8 tensor-core
// kernel (int8_mm_sm90.cu) and the register-loaded int8 GEMV (int8_gemv_direct.cu).
#pragma once

#include <cstdint>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {

// __byte_perm selectors of int8_pair: bytes (0, 1) and (2, 3) of a word.
constexpr uint32_t kInt8SelLo = 0x4140u;
constexpr uint32_t kInt8SelHi = 0x4342u;

// Bytes j0, j0 + 1 of x (j0 = 0 or 2, chosen by sel) as two exact 16-bit values (low half = byte j0).
// bf16: the code's low 7 bits under the exponent of 128 give 128 + (b & 127); subtracting 128, or 256
// when the sign bit is set, gives b. fp16: b + 128 under the exponent of 1024, minus 1152.
template <DType D>
QK_DEVICE QK_FORCEINLINE uint32_t int8_pair(uint32_t x, uint32_t sel) {
  uint32_t r;
  if constexpr (D == DType::BF16) {
    const uint32_t t = __byte_perm(x, 0x43u, sel);  // halves 0x43bb
    const uint32_t v = t & 0xFF7FFF7Fu;
    const uint32_t c = (t & 0x00800080u) | 0xC300C300u;  // -128 or -256
    QK_ASM("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(v), "r"(0x3F803F80u), "r"(c));
  } else {
    const uint32_t t = __byte_perm(x ^ 0x80808080u, 0x64u, sel);  // halves 0x64uu = 1024 + b + 128
    QK_ASM("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(t), "r"(0x3C003C00u), "r"(0xE480E480u));
  }
  return r;
}

}  // namespace qk
