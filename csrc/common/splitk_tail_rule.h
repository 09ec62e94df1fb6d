// Which finish sums a split launch's K-splits (host-only, no CUDA: tested on its own). The measurements
// behind it are in common/splitk_tail.h and benchmarks/results/gemv_notes.md (v11).
#pragma once

#include <cstdint>

namespace qk {
namespace splitk_tail {

// The most rows an eager launch finishes in the launch; past it the reduce kernel is faster overall.
constexpr int64_t kEagerMaxM = 4;

enum class Choice {
  kOther,            // another finish: one split (none needed), a cluster, or the split-K reduce kernel
  kInLaunch,         // the last split of each tile, whatever the stream is doing
  kInLaunchIfEager,  // the last split of each tile unless the launch is being captured into a CUDA graph
};

// `override_value`: the test and benchmark override's value, or null when unset: "reduce..." = the reduce
// kernel, "launch..." = the in-launch finish at any M, also under capture; anything else = the rule.
inline Choice choose(int splits, int64_t m, bool clustered, const char* override_value) {
  if (splits <= 1 || clustered) return Choice::kOther;
  const char mode = override_value != nullptr ? override_value[0] : '\0';
  if (mode == 'r') return Choice::kOther;
  if (mode == 'l') return Choice::kInLaunch;
  return m <= kEagerMaxM ? Choice::kInLaunchIfEager : Choice::kOther;
}

}  // namespace splitk_tail
}  // namespace qk
