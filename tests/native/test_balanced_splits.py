"""The small-M kernels' split-K planner (csrc/common/balanced_splits.cpp), compiled on its own with the host C++
compiler. No GPU: the plan is host-only code; the FP8 and int8 workspace queries and launches follow it.

  * the count is within [min, max] and never past the K units (no empty split);
  * it is the cheapest count under the documented cost (busiest SM's blocks x (units per block x unit bytes
    + block cost) + the reduce launch past two splits, scaled up for grids of fewer than 3 blocks per SM),
    the smallest on ties: checked against a brute force written here from the header's description;
  * on the H200's 132 SMs it picks the counts the measured sweep found best for the layer shapes it was fitted
    on (gemv_notes.md, v8): e.g. 224 tiles x 256 FP8 units -> 4 splits (896 blocks), not 2 (448: 4 blocks on
    some SMs, 3 on others);
  * degenerate inputs (no tiles, no K, no SMs, bounds out of order) give 1 or the clamped bound, never 0.
"""

from __future__ import annotations

import math

import pytest

import support as sp

BLOCK, FINISH, FILL = 4096, 10240, 3  # the header's default costs

DRIVER = r"""
#include <cstdio>
#include <cstdint>
#include "common/balanced_splits.h"
using namespace qk;
int main() {
  const int64_t tiles[] = {0, 1, 2, 7, 48, 64, 130, 192, 224, 288, 1000};
  const int64_t units[] = {0, 1, 3, 16, 48, 64, 192, 256, 768, 896, 2064};
  const int sms[] = {0, 1, 46, 132};
  const int mins[] = {0, 1, 2, 5, 17};
  const int maxs[] = {1, 16};
  const int64_t unit_bytes[] = {1024, 4096};
  for (int64_t t : tiles) for (int64_t u : units) for (int sm : sms) for (int lo : mins) for (int hi : maxs)
    for (int64_t ub : unit_bytes) {
      const SplitCost c{ub, kBlockCostBytes, kFinishCostBytes};
      std::printf("%lld %lld %d %d %d %lld %d\n", (long long)t, (long long)u, sm, lo, hi, (long long)ub,
                  plan_balanced_splits(t, u, sm, lo, hi, c));
    }
  std::printf("defaults %lld %lld %lld\n", (long long)kBlockCostBytes, (long long)kFinishCostBytes,
              (long long)kFillBlocks);
  return 0;
}
"""


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    lines = sp.run_host_driver(tmp_path_factory.mktemp("balanced"), DRIVER, ["common/balanced_splits.cpp"]).splitlines()
    assert lines[-1] == f"defaults {BLOCK} {FINISH} {FILL}", lines[-1]
    return {tuple(int(v) for v in ln.split()[:6]): int(ln.split()[6]) for ln in lines[:-1]}


def cost(tiles, units, sms, s, unit_bytes):
    blocks = tiles * s
    total = math.ceil(blocks / sms) * (math.ceil(units / s) * unit_bytes + BLOCK) + (FINISH if s > 2 else 0)
    return total * FILL * sms // blocks if blocks < FILL * sms else total


def brute(tiles, units, sms, lo, hi, unit_bytes):
    if tiles <= 0 or units <= 0 or sms <= 0:
        return 1
    hi = min(max(hi, 1), units)
    lo = min(max(lo, 1), hi)
    return min(range(lo, hi + 1), key=lambda s: (cost(tiles, units, sms, s, unit_bytes), s))


def test_matches_the_documented_cost(plans):
    assert len(plans) == 11 * 11 * 4 * 5 * 2 * 2
    for (t, u, sm, lo, hi, ub), s in plans.items():
        assert s == brute(t, u, sm, lo, hi, ub), (t, u, sm, lo, hi, ub, s)


def test_bounds(plans):
    for (t, u, sm, lo, hi, ub), s in plans.items():
        assert s >= 1
        if t > 0 and u > 0 and sm > 0:
            assert s <= max(hi, 1) and s <= u, (t, u, sm, lo, hi, s)
            assert s >= min(max(lo, 1), max(hi, 1), u), (t, u, sm, lo, hi, s)


@pytest.mark.parametrize("tiles,units,unit_bytes,lo,want", [
    (224, 256, 1024, 1, 4),   # FP8 1 x 4096 x 14336: 896 blocks, 6-7 per SM
    (192, 192, 1024, 1, 2),   # FP8 1 x 3072 x 12288: 384 blocks, 2-3 per SM
    (64, 896, 1024, 5, 8),    # FP8 1 x 14336 x 4096
    (64, 896, 1024, 1, 8),    # the same at M > 4 (ring kernel): 2 splits would be one block per SM
    (48, 768, 1024, 1, 11),   # FP8 1 x 12288 x 3072: 528 blocks, 4 per SM
    (224, 64, 4096, 2, 4),    # int8 1 x 4096 x 14336 (64-k units)
    (288, 48, 4096, 2, 4),    # int8 1 x 3072 x 18432
])
def test_h200_layer_shapes(plans, tiles, units, unit_bytes, lo, want):
    assert plans[(tiles, units, 132, lo, 16, unit_bytes)] == want
