// Where quanto stores the scale (or zero) of natural output channel n, for each ScalePerm.
// Both patterns permute within fixed-size channel blocks; N is a multiple of the block size.
#pragma once

#include <cstdint>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {

// Block32: stored[32b + 8i + e] = natural[32b + 2i + d_e], d = (0,1,8,9,16,17,24,25).
// For natural offset r = 2i + d_e inside the block: i = (r % 8) / 2, e = 2 * (r / 8) + r % 2.
QK_HOST_DEVICE QK_FORCEINLINE int64_t block32_slot(int64_t n) {
  const int64_t r = n & 31;
  return (n - r) + 8 * ((r & 7) >> 1) + 2 * (r >> 3) + (r & 1);
}

// Block64: stored[64b + 8i + j] = natural[64b + i + 8j]: an 8x8 transpose inside each block.
QK_HOST_DEVICE QK_FORCEINLINE int64_t block64_slot(int64_t n) {
  const int64_t r = n & 63;
  return (n - r) + 8 * (r & 7) + (r >> 3);
}

QK_HOST_DEVICE QK_FORCEINLINE int64_t scale_slot(int64_t n, ScalePerm p) {
  return p == ScalePerm::Block32 ? block32_slot(n) : (p == ScalePerm::Block64 ? block64_slot(n) : n);
}

}  // namespace qk
