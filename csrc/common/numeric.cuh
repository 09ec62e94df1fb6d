// Element conversions shared by the kernel families: 16-bit float load/store by DType, and the
// fp8-e4m3fn decode. Device code only.
#pragma once

#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {

template <DType D> struct Elem;
template <> struct Elem<DType::F16> {
  using T = __half;
  static QK_DEVICE QK_FORCEINLINE float to_float(T v) { return __half2float(v); }
  static QK_DEVICE QK_FORCEINLINE T from_float(float v) { return __float2half_rn(v); }
};
template <> struct Elem<DType::BF16> {
  using T = __nv_bfloat16;
  static QK_DEVICE QK_FORCEINLINE float to_float(T v) { return __bfloat162float(v); }
  static QK_DEVICE QK_FORCEINLINE T from_float(float v) { return __float2bfloat16_rn(v); }
};

// Raw 16-bit pattern -> float, for the two 16-bit float types.
template <DType D> QK_DEVICE QK_FORCEINLINE float bits16_to_float(uint16_t b);
template <> QK_DEVICE QK_FORCEINLINE float bits16_to_float<DType::F16>(uint16_t b) {
  return __half2float(__ushort_as_half(b));
}
template <> QK_DEVICE QK_FORCEINLINE float bits16_to_float<DType::BF16>(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);  // bf16 is the top half of a float
}

// The fused small-M kernels' last step for one output before the single rounding: the fp32 sum times
// the channel's scale, plus the channel's bias when there is one (bias: N values of D, or nullptr).
// Both steps are explicit round-to-nearest operations so that no compiler contraction makes two
// kernels that finish the same sums disagree in a bit.
template <DType D>
QK_DEVICE QK_FORCEINLINE float scale_add_bias(float acc, float scale, const uint16_t* bias, int64_t col) {
  const float v = __fmul_rn(acc, scale);
  return bias != nullptr ? __fadd_rn(v, bits16_to_float<D>(bias[col])) : v;
}

// fp8 e4m3fn code -> float, exact for every finite code (subnormals included).
// e4m3 has bias 7 and float bias 127: placing the 7 exponent+mantissa bits at the top of a float's
// exponent/mantissa field and multiplying by 2^120 rebiases normals exactly. Subnormal codes
// (exponent 0) are m * 2^-9, computed directly so that flush-to-zero builds stay exact.
// The two NaN codes (0x7F, 0xFF) decode to NaN, as torch's float8_e4m3fn does.
QK_DEVICE QK_FORCEINLINE float fp8e4m3_to_float(uint32_t code) {
  const uint32_t em = code & 0x7Fu;
  const uint32_t sign = (code & 0x80u) << 24;
  const float mag = em < 8u ? static_cast<float>(em) * 0x1p-9f : __uint_as_float(em << 20) * 0x1p120f;
  const float v = __uint_as_float(sign | __float_as_uint(mag));
  return em == 0x7Fu ? __uint_as_float(sign | 0x7FC00000u) : v;
}

}  // namespace qk
