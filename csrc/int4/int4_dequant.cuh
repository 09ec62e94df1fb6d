// Dequantization of an int4 weight into a natural (N, K) row-major matrix, written once for every
// layout L (awq_layout.cuh, marlin_layout.cuh) and activation dtype D (act.cuh).
//
// Each warp takes tasks from a grid-stride loop. A task is a piece of the packed weight the layout
// chooses so that the warp's loads are long contiguous runs: the warp loads it into registers,
// decodes it into a private shared-memory tile in output order, and writes the tile back in long
// contiguous runs. The layout provides the task plan, the Task registers, the Tile, and load, fill
// and store.
#pragma once

#include "common/launchers.h"
#include "int4/act.cuh"
#include "int4/int4_common.cuh"

namespace qk {
namespace i4 {

template <class L, DType D>
__global__ void __launch_bounds__(L::kDqWarps * 32) int4_dequant_kernel(const DequantArgs p) {
  __shared__ typename L::DqTile tile[L::kDqWarps];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * L::kDqWarps + warp; task < p.tasks;
       task += static_cast<int64_t>(gridDim.x) * L::kDqWarps) {
    typename L::DqTask tk;
    L::dq_load(tk, p, task, lane);
    __syncwarp();  // the previous task's tile reads are done
    L::template dq_fill<Act<D>>(tile[warp], tk, p, lane);
    __syncwarp();
    L::dq_store(tile[warp], tk, p, lane);
  }
}

// Arguments validated by the caller (the layout's public launcher).
template <class L, DType D>
cudaError_t launch_int4_dequant(DequantArgs p, cudaStream_t stream) {
  L::dq_plan(p);
  int4_dequant_kernel<L, D><<<grid_for(p.tasks, L::kDqWarps), L::kDqWarps * 32, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace i4
}  // namespace qk
