"""The rule that picks who sums a small-M launch's K-splits (csrc/common/splitk_tail_rule.h), compiled on its own
with the host C++ compiler. No GPU: the rule is host-only; whether a launch is being captured into a CUDA graph
is asked of the CUDA runtime only when the rule says it matters (the GPU suite covers that query).

  * one split, or a two-split cluster: no split finish to choose;
  * eagerly at M <= 4 the last split of each tile finishes in the launch, unless the launch is being captured
    (then the split-K reduce kernel); past M = 4 the reduce kernel;
  * QK_*_GEMV_FINISH=reduce... always the reduce kernel, =launch... always the in-launch finish (any M, also
    under capture); any other value, or unset, the rule.
"""

from __future__ import annotations

import pytest

import support as sp

DRIVER = r"""
#include <cstdio>
#include <cstdint>
#include "common/splitk_tail_rule.h"
using namespace qk::splitk_tail;
int main() {
  const int splits[] = {0, 1, 2, 3, 16};
  const int64_t ms[] = {1, 2, 4, 5, 8, 16, 64};
  const char* overrides[] = {nullptr, "reduce", "launch", "", "auto", "r", "l"};
  for (int s : splits) for (int64_t m : ms) for (int c = 0; c < 2; ++c) for (int o = 0; o < 7; ++o)
    std::printf("%d %lld %d %d %d\n", s, (long long)m, c, o, static_cast<int>(choose(s, m, c != 0, overrides[o])));
  std::printf("eager_max_m %lld\n", (long long)kEagerMaxM);
  return 0;
}
"""
OVERRIDES = [None, "reduce", "launch", "", "auto", "r", "l"]
OTHER, IN_LAUNCH, IF_EAGER = 0, 1, 2


@pytest.fixture(scope="module")
def choices(tmp_path_factory):
    lines = sp.run_host_driver(tmp_path_factory.mktemp("tail_rule"), DRIVER, []).splitlines()
    assert lines[-1] == "eager_max_m 4", lines[-1]
    return {tuple(int(v) for v in ln.split()[:4]): int(ln.split()[4]) for ln in lines[:-1]}


def expected(splits: int, m: int, clustered: bool, override) -> int:
    if splits <= 1 or clustered:
        return OTHER
    if override is not None and override.startswith("r"):
        return OTHER
    if override is not None and override.startswith("l"):
        return IN_LAUNCH
    return IF_EAGER if m <= 4 else OTHER


def test_every_input_follows_the_rule(choices):
    assert len(choices) == 5 * 7 * 2 * 7
    for (splits, m, clustered, o), got in choices.items():
        assert got == expected(splits, m, bool(clustered), OVERRIDES[o]), (splits, m, clustered, OVERRIDES[o], got)


def test_the_measured_cases(choices):
    # 1 x 4096 x 14336 on an H200: 4 splits, no cluster -> the in-launch finish when eager
    assert choices[(16, 1, 0, 0)] == IF_EAGER and choices[(3, 4, 0, 0)] == IF_EAGER
    # M = 16 (the ring kernel): the reduce kernel, unless forced
    assert choices[(16, 16, 0, 0)] == OTHER and choices[(16, 16, 0, 2)] == IN_LAUNCH
    # two splits as a cluster: the cluster finishes, whatever the override says
    assert all(choices[(2, 1, 1, o)] == OTHER for o in range(len(OVERRIDES)))
