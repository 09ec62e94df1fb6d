// Work plan of the Hopper Marlin-layout GEMM (sm90_marlin_gemm.cuh): block tile, blocks per
// multiprocessor and split-K. Host-only and compiler-neutral: the C API sizes workspaces with it and the
// launcher follows the same plan.
#pragma once

#include <cstdint>

namespace qk {
namespace sm90_marlin {

constexpr int kChannels = 128;  // output channels per block
constexpr int kThreads = 256;   // two compute warpgroups
// Rows per call: 65535 blocks (the grid's y limit) of the smallest tile (64 tokens).
constexpr int64_t kMaxRows = int64_t(65535) * 64;

struct SplitPlan {
  int tpw = 32;                   // tokens per warpgroup (32, 64 or 128): a tile is 128 channels x 2 * tpw tokens
  int blocks_per_sm = 1;          // 1, or 2 (32/64-token tiles: half the pipeline stages, <= 128 registers)
  int splits = 1;                 // contiguous ranges of the K stages (grid z)
  int64_t tiles = 0;              // output tiles
  int stage_k = 64;               // K elements per pipeline stage
  int64_t stages_per_split = 0;   // K stages of one split (the last may have fewer)
  int64_t counter_bytes() const { return splits > 1 ? (tiles * 4 + 255) / 256 * 256 : 0; }
  int64_t partial_bytes() const { return splits > 1 ? int64_t(splits) * tiles * kThreads * tpw * 4 : 0; }
  int64_t workspace_bytes() const { return counter_bytes() + partial_bytes(); }
};

// Forced choices (benchmarks and tests select every configuration by name); 0 = let the planner choose.
struct PlanOverrides {
  int splits = 0;
  int blocks_per_sm = 0;
};

// Plans an M x N x K product with the given tile (tpw) and stage depth (stage_k elements of K): two
// blocks per multiprocessor where the tile allows; a grid of at most half the multiprocessors is split
// over K into about as many blocks as fit at once, keeping >= 4 stages per split and the partial sums
// <= half the weight's bytes; an unsplit grid of at most one block per multiprocessor gets one block
// each (on an H200, 96 and 112 tiles ran 7-12 % faster unsplit than split in two).
SplitPlan plan_split(int64_t m, int64_t n, int64_t k, int stage_k, int tpw, int sm_count,
                     const PlanOverrides& forced = PlanOverrides());

// Tokens per warpgroup for M rows: 32, 64 or 128, the smallest whose tile (2 x that many tokens) the rows
// fill, 128 above 128 rows (on an H200 every stage cost about the same whatever the tile's width, so the
// widest tile won even where it left multiprocessors idle: fp8_mm_notes.md). A forced 32, 64 or 128 wins;
// other forced values are ignored.
int tokens_per_warpgroup(int64_t m, int forced = 0);

// The plan of a weight-only product (FP8 Marlin, int8): the tile for M rows, 128-k stages for the 32-token
// tile (two activation boxes: half the barrier round trips and product waits per k; the 64-token tile
// would spill at two blocks per multiprocessor) and 64 k for the others, then plan_split. The environment
// can force each choice (benchmarks, tests): <prefix>TILE (32, 64, 128), <prefix>SPLITS (>= 1),
// <prefix>BLOCKS_PER_SM (1, 2), <prefix>SLICES (4: 64-k stages for the 32-token tile too); read at every
// plan, so a workspace query and the launch of one call agree while the environment does not change.
SplitPlan plan_weight_only(int64_t m, int64_t n, int64_t k, int sm_count, const char* env_prefix);

}  // namespace sm90_marlin
}  // namespace qk
