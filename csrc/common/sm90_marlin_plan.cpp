// Split-K planning of the Hopper Marlin-layout GEMM (sm90_marlin_plan.h gives the rules).
#include "common/sm90_marlin_plan.h"

#include <string>
#include "common/env.h"

namespace qk {
namespace sm90_marlin {

namespace {

constexpr int64_t kMinStagesPerSplit = 4;  // below this the pipeline's fill and the reduction dominate

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

SplitPlan plan_split(int64_t m, int64_t n, int64_t k, int stage_k, int tpw, int sm_count,
                     const PlanOverrides& forced) {
  SplitPlan p;
  p.tpw = tpw;
  p.stage_k = stage_k;
  p.tiles = ceil_div(n, kChannels) * ceil_div(m, 2 * int64_t(tpw));
  const int64_t stages = ceil_div(k, stage_k);
  // Two 256-thread blocks per multiprocessor leave 128 registers a thread: enough for the 32- and
  // 64-token tiles (the 128-token one needs 128 accumulators alone).
  const bool two_fit = tpw <= 64;
  const bool auto_bps = forced.blocks_per_sm <= 0;
  int bps = two_fit && (auto_bps || forced.blocks_per_sm == 2) ? 2 : 1;
  int64_t splits = 1;
  if (forced.splits > 0) {
    splits = forced.splits;
  } else if (2 * p.tiles <= sm_count) {  // measured: a grid of more than half the SMs runs best unsplit
    splits = int64_t(bps) * sm_count / p.tiles;
    if (splits > stages / kMinStagesPerSplit) splits = stages / kMinStagesPerSplit;
    const int64_t split_bytes = p.tiles * kThreads * tpw * 4;
    const int64_t cap = n * k / 2 / split_bytes;  // one byte per weight element: half the weight's bytes
    if (splits > cap) splits = cap;
  }
  if (splits < 1) splits = 1;
  // An unsplit grid that fits the multiprocessors once keeps the deeper pipeline of one block each.
  if (splits == 1 && auto_bps && p.tiles <= sm_count) bps = 1;
  if (splits > stages) splits = stages;  // stages >= 1: K >= 16
  p.stages_per_split = ceil_div(stages, splits);
  p.splits = static_cast<int>(ceil_div(stages, p.stages_per_split));  // no empty split
  p.blocks_per_sm = bps;
  return p;
}

int tokens_per_warpgroup(int64_t m, int forced) {
  if (forced == 32 || forced == 64 || forced == 128) return forced;
  if (m <= 64) return 32;
  return m <= 128 ? 64 : 128;
}

SplitPlan plan_weight_only(int64_t m, int64_t n, int64_t k, int sm_count, const char* env_prefix) {
  const std::string prefix(env_prefix);
  PlanOverrides forced;
  forced.splits = env_int((prefix + "SPLITS").c_str());
  forced.blocks_per_sm = env_int((prefix + "BLOCKS_PER_SM").c_str());
  const int tpw = tokens_per_warpgroup(m, env_int((prefix + "TILE").c_str()));
  const int stage_k = tpw == 32 && env_int((prefix + "SLICES").c_str()) != 4 ? 128 : 64;
  return plan_split(m, n, k, stage_k, tpw, sm_count, forced);
}

}  // namespace sm90_marlin
}  // namespace qk
