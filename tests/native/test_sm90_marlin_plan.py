"""The Hopper Marlin-layout GEMM's work plan (csrc/common/sm90_marlin_plan.cpp), compiled on its own with the host
C++ compiler and checked over a grid of shapes and device sizes. No GPU: the plan is host-only code, and the
workspace query and the launch both follow it, so its invariants are what keeps split-K safe:

  * every K stage belongs to exactly one split and no split is empty;
  * the workspace holds one counter per tile and one fp32 partial per split, tile, thread and accumulator;
  * a grid of more than half the multiprocessors runs unsplit; smaller grids split, never past the
    partial-sum cap (half the weight's bytes) or below 4 stages per split;
  * two blocks per multiprocessor only for the 32- and 64-token tiles; forced choices are honoured.
"""

from __future__ import annotations

import pytest

import support as sp

DRIVER = r"""
#include <cstdio>
#include <cstdint>
#include "common/sm90_marlin_plan.h"
using namespace qk::sm90_marlin;
int main() {
  const int64_t ms[] = {1, 17, 64, 65, 128, 129, 256, 300, 1024, 4096};
  const int64_t ns[] = {64, 192, 3072, 4096, 12288, 14336, 18432, 65536};
  const int64_t ks[] = {16, 48, 272, 3072, 4096, 12288, 15360};
  const int tpws[] = {32, 64, 128};
  const int sms[] = {1, 46, 132};
  const int stage_ks[] = {64, 128};
  const int forced_splits[] = {0, 1, 3, 64};
  const int forced_bps[] = {0, 1, 2};
  for (int64_t m : ms) for (int64_t n : ns) for (int64_t k : ks) for (int tpw : tpws) for (int sm : sms)
    for (int sk : stage_ks) for (int fs : forced_splits) for (int fb : forced_bps) {
      PlanOverrides f; f.splits = fs; f.blocks_per_sm = fb;
      const SplitPlan p = plan_split(m, n, k, sk, tpw, sm, f);
      std::printf("%lld %lld %lld %d %d %d %d %d | %d %d %d %lld %lld %lld %lld\n", (long long)m, (long long)n,
                  (long long)k, tpw, sm, sk, fs, fb, p.tpw, p.blocks_per_sm, p.splits, (long long)p.tiles,
                  (long long)p.stages_per_split, (long long)p.counter_bytes(), (long long)p.partial_bytes());
    }
  return 0;
}
"""


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    out = sp.run_host_driver(tmp_path_factory.mktemp("plan"), DRIVER, ["common/sm90_marlin_plan.cpp"])
    rows = []
    for line in out.splitlines():
        args, res = line.split("|")
        rows.append((tuple(int(v) for v in args.split()), tuple(int(v) for v in res.split())))
    return rows


def test_every_stage_in_exactly_one_nonempty_split(plans):
    for (m, n, k, tpw, sm, sk, fs, fb), (ptpw, bps, splits, tiles, sps, cb, pb) in plans:
        stages = -(-k // sk)
        assert splits >= 1 and sps >= 1, (m, n, k, tpw, sm, sk, fs, fb)
        assert (splits - 1) * sps < stages <= splits * sps, (m, n, k, tpw, sm, sk, fs, fb, splits, sps)
        assert ptpw == tpw and tiles == -(-n // 128) * -(-m // (2 * tpw))


def test_workspace_holds_counters_and_partials(plans):
    for (m, n, k, tpw, sm, sk, fs, fb), (_, _, splits, tiles, _, cb, pb) in plans:
        if splits == 1:
            assert cb == 0 and pb == 0
        else:
            assert cb >= 4 * tiles and cb % 256 == 0  # the partials start 256-byte aligned
            assert pb == splits * tiles * 256 * tpw * 4


def _normalized(requested: int, stages: int) -> int:
    """Splits after the plan drops empty ones: ceil(stages / ceil(stages / requested))."""
    requested = max(1, min(requested, stages))
    return -(-stages // -(-stages // requested))


def test_planner_rules(plans):
    for (m, n, k, tpw, sm, sk, fs, fb), (_, bps, splits, tiles, _, _, pb) in plans:
        case = (m, n, k, tpw, sm, sk, fs, fb)
        stages = -(-k // sk)
        two_fit = tpw <= 64
        if fb == 1:
            assert bps == 1, case
        elif fb == 2:
            assert bps == (2 if two_fit else 1), case
        elif bps == 2:
            assert two_fit, case
        if fs:
            assert splits == _normalized(fs, stages), case  # forced, clamped to the stages
            continue
        if 2 * tiles > sm:
            assert splits == 1, case  # more than half the multiprocessors: unsplit
            continue
        want_bps = 2 if two_fit and fb != 1 else 1
        cap = n * k // 2 // (tiles * 256 * tpw * 4)
        requested = min(want_bps * sm // tiles, stages // 4, cap)
        assert splits == _normalized(requested, stages), (case, requested, splits)
        if splits > 1:
            assert pb <= n * k // 2, case  # partial sums at most half the weight's bytes
        elif fb == 0:
            assert bps == 1, case  # an unsplit grid that fits keeps one deep pipeline per multiprocessor


ENV_DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include "common/sm90_marlin_plan.h"
using namespace qk::sm90_marlin;
int main() {
  // rows, then the environment of the case: tile, splits, blocks per SM, slices ("" = unset)
  const long long ms[] = {1, 64, 65, 128, 129, 4096};
  const char* cases[][4] = {{"", "", "", ""}, {"128", "", "", ""}, {"", "3", "2", ""}, {"32", "", "", "4"},
                            {"64", "", "1", "4"}, {"7", "", "", ""}};
  const char* names[] = {"QK_T_TILE", "QK_T_SPLITS", "QK_T_BLOCKS_PER_SM", "QK_T_SLICES"};
  for (auto& c : cases) {
    for (int i = 0; i < 4; ++i) setenv(names[i], c[i], 1);
    for (long long m : ms) {
      const SplitPlan p = plan_weight_only(m, 256, 4096, 132, "QK_T_");
      std::printf("%lld %s %s %s %s | %d %d %d %d\n", m, c[0][0] ? c[0] : "-", c[1][0] ? c[1] : "-",
                  c[2][0] ? c[2] : "-", c[3][0] ? c[3] : "-", p.tpw, p.stage_k, p.splits, p.blocks_per_sm);
    }
  }
  return 0;
}
"""


def test_weight_only_plan_reads_its_environment(tmp_path):
    """plan_weight_only: the tile for M (32 / 64 / 128 tokens per warpgroup), 128-k stages for the 32-token
    tile unless <prefix>SLICES=4, and every forced choice under the caller's prefix; an invalid tile is ignored."""
    out = sp.run_host_driver(tmp_path, ENV_DRIVER, ["common/sm90_marlin_plan.cpp"])
    rows = 0
    for line in out.splitlines():
        args, res = line.split("|")
        m, tile, splits, bps, slices = args.split()
        tpw, stage_k, got_splits, got_bps = (int(v) for v in res.split())
        m = int(m)
        want_tpw = int(tile) if tile in ("32", "64", "128") else (32 if m <= 64 else 64 if m <= 128 else 128)
        assert tpw == want_tpw, line
        assert stage_k == (128 if tpw == 32 and slices != "4" else 64), line
        if splits != "-":
            assert got_splits == min(int(splits), 4096 // stage_k), line
        if bps == "1" or tpw > 64:
            assert got_bps == 1, line
        elif bps == "2":
            assert got_bps == 2, line
        rows += 1
    assert rows == 36
