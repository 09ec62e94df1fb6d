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
#include "../compat/qk_compat.h"

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
