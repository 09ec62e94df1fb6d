// int8 GEMM, 128 channels x 256 tokens per block, stream-K schedule, no cluster (see int8_gemm_tiles.h).
#include "int8/int8_gemm_tiles.h"
#if defined(QK_HAS_CUTLASS) && defined(QK_HAS_SM90A)
#include "int8/int8_gemm_cutlass.cuh"
template struct qk::int8_gemm_cutlass::Tile<256, 1, true>;
#endif
