// int8 weights in quanto's own layout: (N, K) row-major codes, N per-channel scales.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include "common/launchers.h"

namespace qk {

// out: (N, K) of dt, out[n, k] = dt(w[n, k] * scales[n]).
cudaError_t launch_int8_dequant(const int8_t* w, const void* scales, void* out, int64_t n, int64_t k, DType dt,
                                cudaStream_t stream);

}  // namespace qk
