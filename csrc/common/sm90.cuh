// Device-side wrappers for Hopper (sm_90a) instructions: mbarriers, bulk and tensor copies into shared
// memory and warpgroup matrix products (wgmma). Every body is compiled only in the
// sm_90a device pass (QK_SM90A_DEVICE); kernels that call these must be launched only on sm_90 devices of a
// build that has sm_90a code (the callers' dispatch checks that).
#pragma once

#include <cstdint>
#include <cuda.h>
#include "compat/qk_compat.h"
#include "common/ptx.cuh"

namespace qk {
namespace sm90 {

// ---- mbarriers (shared-memory transaction barriers) ----
QK_DEVICE QK_FORCEINLINE void mbar_init(uint32_t bar, uint32_t count) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
// Makes initialised barriers visible to the async (copy) proxy before first use.
QK_DEVICE QK_FORCEINLINE void fence_barrier_init() {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
QK_DEVICE QK_FORCEINLINE void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
QK_DEVICE QK_FORCEINLINE void mbar_arrive(uint32_t bar) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Blocks until the phase with parity `parity` has completed.
QK_DEVICE QK_FORCEINLINE void mbar_wait(uint32_t bar, uint32_t parity) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}

// ---- copies completing on an mbarrier ----
// One box of a 3-D tensor map; (c0, c1, c2) innermost first.
QK_DEVICE QK_FORCEINLINE void tma_load_3d(uint32_t dst, const CUtensorMap* map, int32_t c0, int32_t c1, int32_t c2,
                                          uint32_t bar) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
#endif
}
// One box of a 2-D tensor map; (c0, c1) = (innermost coordinate, row).
QK_DEVICE QK_FORCEINLINE void tma_load_2d(uint32_t dst, const CUtensorMap* map, int32_t c0, int32_t c1, uint32_t bar) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#endif
}

// ---- warpgroup matrix products ----
// Shared-memory matrix descriptor of a K-major operand tile stored with the 128-byte swizzle: rows of 128
// bytes, 8-row atoms 1024 bytes apart. `addr` is the shared address of the first byte to read (the tile
// base, 1024-byte aligned, plus the k offset in bytes inside the 128-byte row).
QK_DEVICE QK_FORCEINLINE uint64_t desc_kmajor_sw128(uint32_t addr) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);      // start address
  d |= static_cast<uint64_t>(1) << 16;                    // leading byte offset (unused with this swizzle)
  d |= static_cast<uint64_t>(1024 >> 4) << 32;            // stride byte offset: next 8-row atom
  d |= static_cast<uint64_t>(1) << 62;                    // 128-byte swizzle
  return d;
}
QK_DEVICE QK_FORCEINLINE void wgmma_fence() {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
QK_DEVICE QK_FORCEINLINE void wgmma_commit() {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
QK_DEVICE QK_FORCEINLINE void wgmma_wait() {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Keeps the compiler from moving reads or writes of accumulator registers across wgmma issue/wait points.
template <int kN>
QK_DEVICE QK_FORCEINLINE void fence_registers(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) QK_ASM_VOLATILE("" : "+f"(d[i])::"memory");
}

// d (64 x N, fp32, wgmma accumulator fragment) += A (64 x 32 e4m3, four registers per thread) * B (32 x N
// e4m3, K-major in shared memory, described by `desc_b`), for N = 128 and N = 64.
QK_DEVICE QK_FORCEINLINE void wgmma_m64n128k32_e4m3_rs(float (&d)[64], uint32_t a0, uint32_t a1, uint32_t a2,
                                                    uint32_t a3, uint64_t desc_b) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE(
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, 1, 1, 1;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b));
#endif
}
QK_DEVICE QK_FORCEINLINE void wgmma_m64n64k32_e4m3_rs(float (&d)[32], uint32_t a0, uint32_t a1, uint32_t a2,
                                                    uint32_t a3, uint64_t desc_b) {
#if defined(QK_SM90A_DEVICE)
  QK_ASM_VOLATILE(
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, 1, 1, 1;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b));
#endif
}
template <int kN>
QK_DEVICE QK_FORCEINLINE void wgmma_k32_e4m3_rs(float (&d)[kN / 2], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint64_t desc_b) {
  if constexpr (kN == 128) {
    wgmma_m64n128k32_e4m3_rs(d, a0, a1, a2, a3, desc_b);
  } else {
    static_assert(kN == 64, "wgmma_k32_e4m3_rs: N must be 64 or 128");
    wgmma_m64n64k32_e4m3_rs(d, a0, a1, a2, a3, desc_b);
  }
}

// d (64 x N, fp32) += A (64 x 16 bf16 or fp16, four registers per thread: rows g and g + 8 of each warp's
// 16, k pairs 2t..2t+1 and 2t+8..2t+9) * B (16 x N, K-major in shared memory), N = 64, 128. One asm
// body per N, spelled once for both 16-bit types (TY = "bf16" or "f16").
#if defined(QK_SM90A_DEVICE)
#define QK_WGMMA_M64N64K16_RS(TY) \
  QK_ASM_VOLATILE("wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " \
                  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
                  "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n" \
                  : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
                    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
                    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
                    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
                  : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b))
#define QK_WGMMA_M64N128K16_RS(TY) \
  QK_ASM_VOLATILE("wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " \
                  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
                  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
                  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
                  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, " \
                  "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n" \
                  : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
                    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
                    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
                    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
                    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
                    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
                    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
                    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
                  : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc_b))
#endif
template <int kN, bool kBf16>
QK_DEVICE QK_FORCEINLINE void wgmma_k16_rs(float (&d)[kN / 2], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint64_t desc_b) {
  static_assert(kN == 64 || kN == 128, "wgmma_k16_rs: N must be 64 or 128");
#if defined(QK_SM90A_DEVICE)
  if constexpr (kN == 128) {
    if constexpr (kBf16) QK_WGMMA_M64N128K16_RS("bf16"); else QK_WGMMA_M64N128K16_RS("f16");
  } else {
    if constexpr (kBf16) QK_WGMMA_M64N64K16_RS("bf16"); else QK_WGMMA_M64N64K16_RS("f16");
  }
#endif
}

}  // namespace sm90
}  // namespace qk
