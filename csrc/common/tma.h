// Host side of Hopper's tensor memory accelerator: building tensor maps (the descriptors that
// cp.async.bulk.tensor copies read). The driver's encoder is reached through the runtime's entry-point
// query, so the library still links only the static CUDA runtime.
#pragma once

#include <cstdint>
#include <cuda.h>
#include <cuda_runtime.h>

namespace qk {

// A tiled map over a dense tensor of `rank` (1..5) dimensions, innermost first: dims[i] elements of
// `type`, strides[i] = byte distance between consecutive indices of dimension i + 1 (rank - 1 values,
// multiples of 16), boxes of box[i] elements (box[0] * element size a multiple of 16; at most 128 bytes
// with the 128-byte swizzle). Elements outside the tensor read as zero. The base must be 16-byte aligned.
cudaError_t make_tma_map(CUtensorMap* map, CUtensorMapDataType type, uint32_t rank, const void* base,
                         const uint64_t* dims, const uint64_t* strides, const uint32_t* box,
                         CUtensorMapSwizzle swizzle);

}  // namespace qk
