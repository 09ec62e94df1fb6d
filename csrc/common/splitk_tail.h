// Split-K finished inside the launch (host side): the workspace layout and the call tickets.
//
// A kernel whose K-splits of a tile run as separate blocks leaves each split's fp32 partials in the
// workspace; instead of a second launch that sums them (common/splitk_reduce.cu), the last block of a
// tile to arrive sums them (common/splitk_tail.cuh). Blocks count their arrivals in one 64-bit word per
// tile behind the partials. The workspace comes from the caller's allocator with stale contents, so a
// word holds (call ticket << 8 | arrivals): a block that finds another ticket there counts from zero. The
// last arrival writes the word back to zero, so a CUDA graph that replays a launch (and so its ticket)
// finds it clean.
//
// When: eagerly, for at most kEagerMaxM rows. On an H200 the in-launch finish costs the GPU ~1 us more than
// the reduce kernel at M <= 4 and 3-8 us at M = 16 (one block sums a tile's splits), and saves the host one
// launch, ~5 us of an eager call (benchmarks/results/gemv_notes.md, v11). A launch being captured into a
// CUDA graph pays its host cost once, so it takes the reduce kernel; both finishes give the same bits.
#pragma once

#include <atomic>
#include <cstdint>
#include <cuda_runtime.h>
#include "common/env.h"
#include "common/splitk_tail_rule.h"

namespace qk {
namespace splitk_tail {

// Byte offset of the arrival words in a workspace of `splits` partial (m, n) fp32 matrices (16-aligned).
inline int64_t counters_offset(int splits, int64_t m, int64_t n) {
  return (static_cast<int64_t>(splits) * m * n * 4 + 15) / 16 * 16;
}

// Workspace bytes of a split product over `tiles` column tiles: partials and arrival words (0 unsplit).
inline int64_t workspace_bytes(int splits, int64_t m, int64_t n, int64_t tiles) {
  return splits > 1 ? counters_offset(splits, m, n) + tiles * 8 : 0;
}

inline unsigned long long* counters(float* ws, int splits, int64_t m, int64_t n) {
  return reinterpret_cast<unsigned long long*>(reinterpret_cast<char*>(ws) + counters_offset(splits, m, n));
}

// A ticket per launch, unique in the process (56 bits: it never wraps in practice).
inline unsigned long long next_ticket() {
  static std::atomic<unsigned long long> next{1};
  return next.fetch_add(1, std::memory_order_relaxed) & ((1ull << 56) - 1);
}

// Whether `stream` is capturing a CUDA graph. A failed query counts as capturing (the reduce kernel, always
// correct) and its error is cleared, so that the launch's own error check does not report it.
inline bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
}

// What a launch passes its kernel: the arrival words and the ticket, or null words when another finish
// sums the splits (the rule: common/splitk_tail_rule.h; `env` names its test override, read at every launch).
struct Tail {
  unsigned long long* counters = nullptr;
  unsigned long long ticket = 0;
};

inline Tail plan(float* ws, int splits, int64_t m, int64_t n, bool clustered, const char* env, cudaStream_t stream) {
  const Choice choice = choose(splits, m, clustered, env_get(env));
  if (choice == Choice::kOther || (choice == Choice::kInLaunchIfEager && capturing(stream))) return {};
  return {counters(ws, splits, m, n), next_ticket()};
}

}  // namespace splitk_tail
}  // namespace qk
