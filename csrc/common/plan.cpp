// Split-K planning shared by the fused small-M kernels.
#include "common/launchers.h"

namespace qk {

int plan_splits(int64_t m, int64_t col_tiles, int64_t k_tiles, int sm_count, int blocks_per_sm, int min_splits) {
  (void)m;
  if (col_tiles <= 0 || k_tiles <= 1 || sm_count <= 0) return 1;
  // Aim for about blocks_per_sm (default 4) blocks per SM: enough loads in flight for a
  // bandwidth-bound kernel. Rounding down keeps the grid inside one wave of resident blocks (a
  // second, partial wave costs ~30%).
  const int64_t want_blocks = static_cast<int64_t>(blocks_per_sm) * sm_count;
  int64_t splits = want_blocks / col_tiles;
  if (splits < min_splits) splits = min_splits;
  if (splits > k_tiles) splits = k_tiles;
  if (splits > kMaxSplits) splits = kMaxSplits;
  if (splits < 1) splits = 1;
  return static_cast<int>(splits);
}

}  // namespace qk
