// Balanced split-K planning (balanced_splits.h).
#include "common/balanced_splits.h"

namespace qk {
namespace {

// The busiest SM's cost of a grid of col_tiles x splits blocks (balanced_splits.h).
int64_t split_grid_cost(int64_t col_tiles, int64_t k_units, int sm_count, int splits, const SplitCost& cost) {
  const int64_t blocks = col_tiles * splits;
  const int64_t busiest = (blocks + sm_count - 1) / sm_count;  // blocks the busiest SM runs
  const int64_t per_block = (k_units + splits - 1) / splits * cost.unit_bytes + cost.block_bytes;
  const int64_t total = busiest * per_block + (splits > 2 ? cost.finish_bytes : 0);
  const int64_t fill = kFillBlocks * sm_count;
  return blocks < fill ? total * fill / blocks : total;
}

}  // namespace

int plan_balanced_splits(int64_t col_tiles, int64_t k_units, int sm_count, int min_splits, int max_splits,
                         const SplitCost& cost) {
  if (col_tiles <= 0 || k_units <= 0 || sm_count <= 0) return 1;
  int64_t hi = max_splits < 1 ? 1 : max_splits;
  if (hi > k_units) hi = k_units;
  int64_t lo = min_splits < 1 ? 1 : min_splits;
  if (lo > hi) lo = hi;
  // Past 16 TB of weight the costs could overflow; no GPU holds such a layer, so take the least count.
  const int64_t ub = cost.unit_bytes > 0 ? cost.unit_bytes : 1;
  if (col_tiles > (int64_t(1) << 31) || k_units > (int64_t(1) << 44) / ub / col_tiles) return static_cast<int>(lo);
  int best = static_cast<int>(lo);
  int64_t best_cost = split_grid_cost(col_tiles, k_units, sm_count, best, cost);
  for (int s = best + 1; s <= hi; ++s) {
    const int64_t c = split_grid_cost(col_tiles, k_units, sm_count, s, cost);
    if (c < best_cost) {
      best = s;
      best_cost = c;
    }
  }
  return best;
}

}  // namespace qk
