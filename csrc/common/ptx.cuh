// Thin wrappers over the PTX instructions the kernel families share (sm_80 and newer):
// asynchronous global -> shared copies and the m16n8k16 tensor-core product. All inline PTX goes
// through QK_ASM / QK_ASM_VOLATILE (csrc/compat/qk_compat.h) so MSVC's front end accepts it.
#pragma once

#include <cstdint>
#include "../compat/qk_compat.h"
#include "common/launchers.h"

namespace qk {

QK_DEVICE QK_FORCEINLINE uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1 (streamed data is used once).
QK_DEVICE QK_FORCEINLINE void cp_async16(uint32_t dst, const void* src) {
  QK_ASM_VOLATILE("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

// As cp_async16, but the weight stream is marked evict-first in L2, so that it does not push the
// activations (re-read by every block) and the partial sums out of the cache.
QK_DEVICE QK_FORCEINLINE void cp_async16_stream(uint32_t dst, const void* src, uint64_t policy) {
  QK_ASM_VOLATILE("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                  "l"(policy)
                  : "memory");
}

// 16 bytes straight into registers through the read-only path, not kept in L1 (the weight is read
// once) and marked with an L2 policy (evict-first for the weight stream). The caller issues several
// before the first use: the registers are the ring.
QK_DEVICE QK_FORCEINLINE uint4 ld_stream_v4(const void* src, uint64_t policy) {
  uint4 v;
  QK_ASM_VOLATILE("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
                  : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                  : "l"(src), "l"(policy));
  return v;
}

// An L2 policy that evicts the lines it tags first.
QK_DEVICE QK_FORCEINLINE uint64_t l2_evict_first_policy() {
  uint64_t policy;
  QK_ASM_VOLATILE("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// 16-byte copy of which only the first `src_bytes` (0 or 16) are read; the rest is zero-filled.
QK_DEVICE QK_FORCEINLINE void cp_async16_zfill(uint32_t dst, const void* src, uint32_t src_bytes) {
  QK_ASM_VOLATILE("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                  : "memory");
}

QK_DEVICE QK_FORCEINLINE void cp_async_commit() { QK_ASM_VOLATILE("cp.async.commit_group;\n" ::: "memory"); }

template <int kPending>
QK_DEVICE QK_FORCEINLINE void cp_async_wait() {
  QK_ASM_VOLATILE("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// acc += A(16x16, row-major fragment) * B(16x8, column-major fragment), fp32 accumulation.
template <DType D>
QK_DEVICE QK_FORCEINLINE void mma_16816(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (D == DType::F16) {
    QK_ASM_VOLATILE(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    QK_ASM_VOLATILE(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

}  // namespace qk
