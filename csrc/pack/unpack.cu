// quanto::unpack: splits each byte into its 8/bits bit-fields; field i of every byte forms the
// i-th consecutive chunk of the output (the inverse of quanto's pack_weights along dim 0).
#include "common/launchers.h"
#include "../compat/qk_compat.h"

namespace qk {
namespace {

// One thread per 4 input bytes (one 32-bit word), so every load is a full word when possible.
template <int Bits>
__global__ void unpack_kernel(const uint8_t* QK_RESTRICT in, uint8_t* QK_RESTRICT out, int64_t numel) {
  constexpr int kFields = 8 / Bits;
  constexpr uint32_t kMask = (1u << Bits) - 1u;
  const int64_t words = (numel + 3) / 4;
  for (int64_t wi = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; wi < words;
       wi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t base = wi * 4;
    const int count = numel - base >= 4 ? 4 : static_cast<int>(numel - base);
    uint8_t bytes[4];
#pragma unroll
    for (int b = 0; b < 4; ++b) bytes[b] = b < count ? in[base + b] : 0;
#pragma unroll
    for (int f = 0; f < kFields; ++f) {
      uint8_t* dst = out + f * numel + base;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        if (b < count) dst[b] = static_cast<uint8_t>((bytes[b] >> (Bits * f)) & kMask);
      }
    }
  }
}

}  // namespace

cudaError_t launch_unpack(const uint8_t* in, uint8_t* out, int64_t numel, int bits, cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  const int threads = 256;
  int64_t blocks = ((numel + 3) / 4 + threads - 1) / threads;
  if (blocks > 65535) blocks = 65535;  // grid-stride loop covers the rest
  if (bits == 2) {
    unpack_kernel<2><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(in, out, numel);
  } else {
    unpack_kernel<4><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(in, out, numel);
  }
  return cudaGetLastError();
}

}  // namespace qk
