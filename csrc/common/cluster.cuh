// Thread-block cluster primitives (sm_90 and newer): the cluster barrier and loads from another block's
// shared memory. Bodies exist only in device passes for sm_90+; a kernel that calls them must check at
// run time that the image loaded for the GPU was built for sm_90+ (cluster_launch.h does).
#pragma once

#include <cstdint>
#include "../compat/qk_compat.h"

namespace qk {
namespace cluster {

// This block's rank in its cluster.
QK_DEVICE QK_FORCEINLINE uint32_t rank() {
  uint32_t r = 0;
#if defined(QK_CLUSTER_DEVICE)
  QK_ASM_VOLATILE("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
#endif
  return r;
}

// Every thread of every block of the cluster arrives and waits; shared-memory writes before it are
// visible to the cluster's reads after it.
QK_DEVICE QK_FORCEINLINE void sync() {
#if defined(QK_CLUSTER_DEVICE)
  QK_ASM_VOLATILE("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// The float at this block's shared-memory address `p`, read from block `block_rank`'s shared memory.
QK_DEVICE QK_FORCEINLINE float load_remote(const float* p, uint32_t block_rank) {
  float v = 0.f;
#if defined(QK_CLUSTER_DEVICE)
  const uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  uint32_t remote;
  QK_ASM_VOLATILE("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(block_rank));
  QK_ASM_VOLATILE("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(remote) : "memory");
#endif
  return v;
}

}  // namespace cluster
}  // namespace qk
