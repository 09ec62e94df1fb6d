// Split-K count for the small-M kernels whose blocks each own one (K split, 64-channel tile): the count
// whose grid leaves the busiest multiprocessor the least work. Host-only and compiler-neutral (the C API
// sizes workspaces with it; tests compile it on its own).
//
// Why not "about 4 blocks per SM": on an H200 (132 SMs) 224 tiles x 2 splits = 448 blocks put 4 on some
// SMs and 3 on others, and the grid finished with the busiest ones; 4 splits (896 blocks, 6-7 per SM over
// two waves) were faster although every block carried a fixed cost more. A sweep of split counts over
// five layer shapes and M = 1..16 (benchmarks/results/gemv_notes.md, "v8") fits the cost below to within
// a few percent of the best count measured for each row.
#pragma once

#include <cstdint>

namespace qk {

struct SplitCost {
  int64_t unit_bytes;      // weight bytes of one (tile, K unit): the grain a split's K range is counted in
  int64_t block_bytes;     // fixed cost of one block, in weight bytes streamed in the same time
  int64_t finish_bytes;    // fixed cost of finishing more than two splits (the split-K reduce launch)
};

// Default costs fitted on H200 (gemv_notes.md, v8): a block ~4 KB, the extra reduce launch ~10 KB.
constexpr int64_t kBlockCostBytes = 4096;
constexpr int64_t kFinishCostBytes = 10240;
// Below this many blocks per SM on average too few warps hide the load latency: the cost is scaled by
// kFillBlocks / average (e.g. 288 blocks on 132 SMs measured 1.19x slower than 384).
constexpr int64_t kFillBlocks = 3;

// The split count in [min_splits, max_splits], at most k_units, with the least cost (the smallest such
// count on ties); 1 for an empty shape or no SMs. The cost of a grid of col_tiles x s blocks, each
// ceil(k_units / s) units: ceil(blocks / SMs) x (units x unit_bytes + block_bytes), + finish_bytes past
// two splits, scaled by kFillBlocks x SMs / blocks when that is above 1. A min_splits past the other
// bounds is clamped to min(max_splits, k_units).
int plan_balanced_splits(int64_t col_tiles, int64_t k_units, int sm_count, int min_splits, int max_splits,
                         const SplitCost& cost);

}  // namespace qk
