// Stream-K schedule of the GEMV engine: how the weight's work units are spread over a persistent
// grid, and where partial sums of a column tile shared by several blocks live in the workspace.
//
// A work unit is one 64-channel column tile times one slice of K (16 deep for fp8: 1 KB; 32 for
// int8: one 32-byte memory sector per channel). Units are numbered tile-major: u = tile * k_units + kslice. Block w of the grid owns the
// contiguous units [start(w), start(w + 1)) with start(w) = floor(units * w / ctas), so every
// block streams the same number of bytes (+-1 unit) whatever N and K are; the SM count and the
// blocks resident per SM set `ctas`. A tile whose units fall to several blocks is finished inside
// the same launch by the last of them to arrive (docs/architecture.md, "GEMV engine").
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include "../compat/qk_compat.h"
#include "common/env.h"

namespace qk {
namespace gemv {

constexpr int kWarps = 4;  // warps per block; each streams its own units through its own ring
constexpr int kThreads = kWarps * 32;
constexpr int kTileN = 64;  // channels per column tile
constexpr int kUnitK = 16;  // K per work unit

struct Plan {
  int64_t m = 0, n = 0, k = 0;
  int64_t tiles = 0;    // column tiles (ceil(N / 64))
  int64_t k_units = 0;  // units per tile (K / 16)
  int64_t units = 0;    // tiles * k_units
  int64_t ctas = 0;     // blocks of the persistent grid (<= units)
  int64_t max_segs = 0;  // most tiles one block touches
  int64_t counter_bytes = 0;  // per-tile arrival counters, zeroed before each launch
  int64_t partial_bytes = 0;  // fp32 partial tiles: ctas * max_segs * m * 64
  int64_t workspace_bytes() const { return counter_bytes + partial_bytes; }
};

QK_HOST_DEVICE QK_FORCEINLINE int64_t cta_start(int64_t w, int64_t units, int64_t ctas) { return units * w / ctas; }
// The block whose range holds unit u: the largest w with cta_start(w) <= u.
QK_HOST_DEVICE QK_FORCEINLINE int64_t cta_of(int64_t u, int64_t units, int64_t ctas) {
  return ((u + 1) * ctas - 1) / units;
}

// ctas_per_sm: blocks of the chosen kernel that fit on one SM (registers and shared memory).
inline Plan make_plan(int64_t m, int64_t n, int64_t k, int64_t unit_k, int sm_count, int ctas_per_sm) {
  Plan p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.tiles = (n + kTileN - 1) / kTileN;
  p.k_units = k / unit_k;
  p.units = p.tiles * p.k_units;
  int64_t ctas = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * (ctas_per_sm > 0 ? ctas_per_sm : 1);
  if (ctas > p.units) ctas = p.units;
  if (ctas < 1) ctas = 1;
  p.ctas = ctas;
  const int64_t longest = (p.units + ctas - 1) / ctas;
  p.max_segs = (longest - 1) / (p.k_units > 0 ? p.k_units : 1) + 2;
  // Every tile is whole in one block when the blocks' ranges are whole tiles: no workspace.
  const bool splits_tiles = (p.units % ctas != 0) || ((p.units / ctas) % p.k_units != 0);
  if (splits_tiles) {
    p.counter_bytes = (p.tiles * 4 + 255) / 256 * 256;
    p.partial_bytes = ctas * p.max_segs * m * kTileN * 4;
  }
  return p;
}

}  // namespace gemv
}  // namespace qk

namespace qk {
namespace gemv {

// ---- Engine v4 schedule (csrc/gemv/engine_v4.cuh) ------------------------------------------------
// A block owns a group of `group_tiles` adjacent column tiles and one contiguous K range (a split);
// each warp streams one tile of the group down the block's K range (group_tiles = 4: one tile per
// warp; 2 or 1: two or four warps share a tile and interleave its k units). For FP8 Marlin the
// units of adjacent tiles at one k slice are adjacent in memory, so every block step reads
// group_tiles KB contiguously. Blocks are numbered split-major by default (group fastest, as the
// split-K kernel did): the blocks resident at one moment then stream the same few packed rows of
// the weight side by side. The grid is groups x splits with splits = (blocks that fit at once) /
// groups, a single wave; a split's partial sums go to the workspace and the last block of a group
// to arrive sums them in split order (deterministic) inside the same launch.
struct Plan4 {
  int64_t m = 0, n = 0, k = 0;
  int tiles = 0;        // column tiles of 64 channels (ceil(N / 64))
  int group_tiles = 4;  // adjacent tiles per block (1, 2 or 4)
  int groups = 0;       // ceil(tiles / group_tiles)
  int k_units = 0;      // K / unit_k
  int splits = 1;       // contiguous K ranges
  int split_major = 1;  // 1: block b streams group b % groups of split b / groups; 0: group b / splits
  int64_t ctas = 0;     // groups * splits
  int64_t n_pad = 0;    // groups * group_tiles * 64: row pitch of the partial sums
  int64_t counter_bytes = 0;  // per-group arrival counters, zeroed before each launch
  int64_t partial_bytes = 0;  // fp32 partial sums: splits * m * n_pad
  int64_t workspace_bytes() const { return counter_bytes + partial_bytes; }
};

// Splits that fill the device with `group_tiles`-wide groups: floor(capacity / groups), since more
// would start a second, mostly idle wave; at most k_units / (2 x warps per tile), since a warp with
// fewer than two units per split only adds reduction work.
inline int64_t fill_splits(int64_t capacity, int64_t groups, int64_t k_units, int group_tiles, int max_splits) {
  int64_t s = capacity / groups;
  const int64_t s_cap = k_units / (2 * (kWarps / group_tiles));
  if (s > s_cap) s = s_cap;
  if (max_splits > 0 && s > max_splits) s = max_splits;
  return s < 1 ? 1 : s;
}

// Largest sum the last block of a group makes alone (splits x m x group columns fp32): one block of
// 128 threads reads it from L2 at the very end of the launch, so it is kept to ~64 KB (about three
// rounds of 8 float4 loads per thread). Wider groups multiply both the parts (more splits per
// group) and the columns, so the group width is what gives way.
constexpr int64_t kReduceBudgetFloats = 16384;

// capacity: blocks of the chosen kernel resident on the whole device at once. group_tiles: 1, 2 or
// 4, or 0 for the widest group whose final sum stays within kReduceBudgetFloats (else 1).
inline Plan4 make_plan4(int64_t m, int64_t n, int64_t k, int64_t unit_k, int64_t capacity, int group_tiles,
                        bool split_major, int max_splits) {
  Plan4 p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.tiles = static_cast<int>((n + kTileN - 1) / kTileN);
  p.k_units = static_cast<int>(k / unit_k);
  int gt = group_tiles;
  if (gt != 1 && gt != 2 && gt != 4) {
    gt = 1;
    for (int cand = 4; cand >= 2; cand /= 2) {
      const int64_t groups = (p.tiles + cand - 1) / cand;
      const int64_t s = fill_splits(capacity, groups, p.k_units, cand, max_splits);
      if (s == 1 || s * m * cand * kTileN <= kReduceBudgetFloats) {
        gt = cand;
        break;
      }
    }
  }
  p.group_tiles = gt;
  p.groups = (p.tiles + gt - 1) / gt;
  p.splits = static_cast<int>(fill_splits(capacity, p.groups, p.k_units, gt, max_splits));
  p.split_major = split_major ? 1 : 0;
  p.ctas = static_cast<int64_t>(p.groups) * p.splits;
  p.n_pad = static_cast<int64_t>(p.groups) * gt * kTileN;
  if (p.splits > 1) {
    p.counter_bytes = (static_cast<int64_t>(p.groups) * 4 + 255) / 256 * 256;
    p.partial_bytes = static_cast<int64_t>(p.splits) * m * p.n_pad * 4;
  }
  return p;
}

// Engine selection and v4 variants. These are test / benchmark overrides read from the
// environment at every plan (so one process can compare them; the workspace query and the launch
// see the same values as long as the environment does not change in between). They are not part
// of the C ABI and change no default except where noted:
//   QK_GEMV_FP8_ENGINE=1      FP8 Marlin GEMV on engine v4 instead of the split-K kernel (default 0)
//   QK_GEMV_INT8_ENGINE=v3    int8 GEMV on engine v3 instead of v4 (default v4, one tile per block)
//   QK_GEMV_V4_TILES=1|2|4    adjacent tiles per v4 block (default: the widest group whose final
//                             split sum stays small, kReduceBudgetFloats; 4 = one tile per warp)
//   QK_GEMV_V4_ORDER=split|group   v4 block numbering (default split: group fastest)
//   QK_GEMV_V4_INT8_K=32|64   k per int8 v4 unit (default 64 where K % 64 == 0)
//   QK_GEMV_V4_MAX_SPLITS=n   cap on the v4 K splits (default: none)
//   QK_GEMV_V4_LOADS=direct   FP8 on v4 at M <= 16: weight pieces straight into registers
//                             (ld.global.nc, evict-first) instead of cp.async rings (default: rings)
//   QK_GEMV_V4_BLOCKS_PER_SM=n   plan the v4 grid for at most n blocks per SM (default: all that fit;
//                             fewer blocks = fewer bytes in flight, a direct test of Little's law)
struct V4Options {
  int group_tiles = 0;  // 0: chosen by the plan
  bool split_major = true;
  int int8_unit_k = 64;
  int max_splits = 0;
  int max_blocks_per_sm = 0;  // 0: all that fit
  bool direct_loads = false;
};


inline bool env_is(const char* name, const char* value) {
  const char* v = env_get(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

inline V4Options read_v4_options() {
  V4Options o;
  const int t = env_int("QK_GEMV_V4_TILES", 0);
  o.group_tiles = (t == 1 || t == 2 || t == 4) ? t : 0;
  o.split_major = !env_is("QK_GEMV_V4_ORDER", "group");
  o.int8_unit_k = env_int("QK_GEMV_V4_INT8_K", 64) == 32 ? 32 : 64;
  o.max_splits = env_int("QK_GEMV_V4_MAX_SPLITS", 0);
  o.max_blocks_per_sm = env_int("QK_GEMV_V4_BLOCKS_PER_SM", 0);
  o.direct_loads = env_is("QK_GEMV_V4_LOADS", "direct");
  return o;
}

inline bool fp8_engine_requested() { return env_is("QK_GEMV_FP8_ENGINE", "1"); }
inline bool int8_v3_requested() { return env_is("QK_GEMV_INT8_ENGINE", "v3"); }

}  // namespace gemv
}  // namespace qk
