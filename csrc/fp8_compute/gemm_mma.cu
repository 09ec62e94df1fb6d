// Portable FP8 tensor-core product (mma.sync, e4m3 x e4m3 -> fp32) for every GPU with FP8 tensor cores:
// sm_89, sm_100, sm_120, and sm_90 when the library lacks the sm_90a warpgroup kernel or the test override
// asks for this one. Contract: launch_fp8_compute_gemm_mma in fp8_compute.h.
//
// Operand roles. The m16n8k32 instruction computes D(16x8) += A(16x32) * B(32x8). Here the WEIGHT is A
// (its 16 rows are output channels) and the ACTIVATIONS are B (its 8 columns are tokens), so each warp
// accumulates a piece of out^T and the epilogue transposes it through shared memory. Why: in the FP8
// Marlin layout (docs/layouts.md) the word P[kt, 256c + 8t + 2w + h] holds, for lane t (g = t/4,
// q = t%4), channel 64c + 16w + 8h + g at k = 16kt + 2q + (0, 8, 1, 9). Numbered by the k "slots" of
// fragment order (fp8_compute.h, fp8c_slot_to_k) those four codes are slots 4q..4q+3 of the 16-deep k
// tile, and slots 4q..4q+3 of row g (register 0) or row g + 8 (register 1) are exactly what the PTX
// m16n8k32 A fragment wants from lane t; registers 2 and 3 take slots 16 + 4q.. from the next k tile.
// So the four A registers of 16-channel sub-tile w are the stored words
//     P[kt, 256c + 8t + 2w], P[kt, 256c + 8t + 2w + 1], P[kt+1, 256c + 8t + 2w], P[kt+1, ... + 1]
// with no byte permutes and no decode. A dot product does not care in which order k is summed as long
// as both operands agree, and act_quant.cu stores the activations in the same slot order, so the B
// fragment (token g: slots 4q..4q+3 and 16+4q..16+4q+3) is two aligned 32-bit words of that token's row,
// which ldmatrix (.b16: 16 codes read as 8 halves) hands out from a token-major tile. With the roles
// swapped (weight as B), each B word would need four codes of consecutive slots of one channel, which
// the layout spreads over several words: byte permutes on the hot path.
//
// Tiles. A block of 256 threads (8 warps) computes 128 channels x 128 tokens; warp v owns channels
// 64*(v%2) .. +63 (exactly one 64-channel column tile of the layout) and tokens 32*(v/2) .. +31, i.e.
// 4 x 4 m16n8 accumulators = 64 fp32 registers per lane. K advances 64 per stage (two m16n8k32 steps)
// through a ring of kStages cp.async stages of 16 KB (4 stages = 64 KB where two such blocks fit on an
// SM, sm_90/sm_100; else 3 = 48 KB, sm_89/sm_120 with 100 KB per SM), filled by cp.async:
//   weights     128 ch x 64 k = 2 k-tile pairs x 2 column tiles x 2 KB, in 8-byte pieces: the two words
//               of lane t, sub-tile w from k tiles 2p and 2p+1 are put side by side (w_unit_offset), so
//               one LDS.128 is one whole A fragment, in register order;
//   activations 128 tokens x 64 slots, token-major rows of 64 bytes, 16-byte chunk j of row r stored
//               at chunk j ^ ((r/2)%4), so the 8 rows of one ldmatrix 8x8 matrix hit 8 different
//               16-byte bank groups. Tokens past M and k past K are zero-filled (0 x 0 adds 0).
// Per stage and warp: 4 ldmatrix.x4 (per k step two, each covering two 8-token tiles), 8 LDS.128 (A),
// 32 m16n8k32 products. Every shared-memory access pattern (copies, fragment loads, epilogue) is free of
// bank conflicts.
// sm_90 and sm_100 have no FP8 mma.sync in hardware (their FP8 units are reached by wgmma / tcgen05), and
// ptxas's emulation adds fp32 adds per product; there the fragments are converted to f16 (exact for
// every e4m3 value) and fed to m16n8k16 f16 products that accumulate in fp32 themselves (warp_step).
// Epilogue: fp32 acc * xs[token] * s[channel] + bias[channel], one rounding to dt; the 128 x 128 tile
// is transposed through shared memory (neighbouring channels exchanged with one shuffle, so each lane
// writes 32-bit channel pairs) and stored as 16-byte row segments, guarded by M and by N (the block's
// second column tile lies past N when N % 128 == 64; its weight copies are zero-filled).
// Grid: 1-D; column tiles in chunks of 16 (2048 channels), the column tile index fastest inside a chunk,
// so the blocks resident at one time share a few token tiles of activations and one weight slice in L2.
// ptxas (CUDA 13.0): 120-128 registers (launch bounds: 2 blocks of 256 threads per SM), no spills, no
// stack, on sm_89, sm_90a, sm_100 and sm_120.
#include <atomic>
#include <cuda_runtime.h>
#include "common/numeric.cuh"
#include "common/ptx.cuh"
#include "common/scale_perm.cuh"
#include "fp8_compute/fp8_compute.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int kTileN = 128;  // channels per block
constexpr int kTileM = 128;  // tokens per block
constexpr int kTileK = 64;   // k (bytes) per stage
constexpr int kWStageBytes = kTileN * kTileK;  // 8 KB
constexpr int kXStageBytes = kTileM * kTileK;  // 8 KB
constexpr int kStageBytes = kWStageBytes + kXStageBytes;
constexpr int kOutPitch = kTileN * 2 + 16;  // bytes per token row of the epilogue tile (16-byte pad)
constexpr int kOutBytes = kTileM * kOutPitch;

template <int kStages>
struct Config {
  static constexpr int kSmemBytes = kStages * kStageBytes > kOutBytes ? kStages * kStageBytes : kOutBytes;
};

static_assert(kTileK == 64, "the activation swizzle and the stage loader assume 64-byte rows");
static_assert(kThreads == 256, "the copy and epilogue loops assume 256 threads");

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define QK_FP8C_MMA_BODY 1
#endif

#if defined(QK_FP8C_MMA_BODY)

// Four 8x8 matrices of 16-bit elements; lane l supplies the row address of matrix l/8, row l%8.
QK_DEVICE QK_FORCEINLINE void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  QK_ASM_VOLATILE("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                  : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                  : "r"(addr));
}

QK_DEVICE QK_FORCEINLINE uint4 lds128(uint32_t addr) {
  uint4 v;
  QK_ASM_VOLATILE("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

#if defined(QK_FP8C_FORCE_F16_PATH) || (__CUDA_ARCH__ >= 900 && __CUDA_ARCH__ < 1200) || \
    __CUDACC_VER_MAJOR__ < 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ < 4)
#define QK_FP8C_F16_PATH 1
// The datacenter parts (sm_90 Hopper, sm_100 Blackwell) reach their FP8 tensor cores only through
// wgmma / tcgen05: ptxas lowers an FP8 mma.sync there to f16 products into a zero accumulator followed
// by fp32 adds into the real one (CUDA 13.0: 128 FADDs per 64 HMMAs on sm_90a, 384 per 192 on sm_100). This
// path converts the fragments to f16 itself (every e4m3 value is exact in f16) and accumulates inside
// two m16n8k16 f16 products. The k order stays consistent on both sides: the low 16 bits of a 32-bit
// fragment word (slots 4q, 4q+1) become the f16 pair at k (2q, 2q+1) of the m16n8k16 step, the high
// 16 bits (slots 4q+2, 4q+3) the pair at (2q+8, 2q+9), for A and B alike.
// The same path serves every arch when the toolkit predates FP8 mma.sync in PTX (ISA 8.4, CUDA 12.4);
// the e4m3 -> f16x2 conversion needs only sm_89 and PTX ISA 7.8.
constexpr bool kF16Path = true;
#else
constexpr bool kF16Path = false;
#endif

// Four e4m3 codes -> two f16x2 words: bytes (0, 1) -> lo, bytes (2, 3) -> hi; the lower byte lands in
// the lower half.
QK_DEVICE QK_FORCEINLINE void e4m3x4_to_f16(uint32_t v, uint32_t& lo, uint32_t& hi) {
  QK_ASM(
      "{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(v));
}

// acc(16x8) += A(16x32 e4m3) * B(32x8 e4m3), fp32 accumulation.
QK_DEVICE QK_FORCEINLINE void mma_e4m3_16832(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if !defined(QK_FP8C_F16_PATH)
  QK_ASM("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
         "{%0,%1,%2,%3};\n"
         : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  (void)acc, (void)a, (void)b0, (void)b1;  // not used on this path (warp_step takes the f16 branch)
#endif
}

// One m16n8k32 step of the warp: acc[wi][j] += A(wi) * B(j) for its 4 x 4 tiles.
QK_DEVICE QK_FORCEINLINE void warp_step(float (&acc)[4][4][4], const uint32_t (&a)[4][4], const uint32_t (&b)[4][2]) {
  if constexpr (kF16Path) {
    uint32_t bh[4][4];  // [j][m16n8k16 step 0: b0 b1, step 1: b0 b1]
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      e4m3x4_to_f16(b[j][0], bh[j][0], bh[j][1]);
      e4m3x4_to_f16(b[j][1], bh[j][2], bh[j][3]);
    }
#pragma unroll
    for (int wi = 0; wi < 4; ++wi) {
      uint32_t ah[2][4];  // [m16n8k16 step][a0..a3]
      e4m3x4_to_f16(a[wi][0], ah[0][0], ah[0][2]);  // row g:     slots 0..15
      e4m3x4_to_f16(a[wi][1], ah[0][1], ah[0][3]);  // row g + 8: slots 0..15
      e4m3x4_to_f16(a[wi][2], ah[1][0], ah[1][2]);  // row g:     slots 16..31
      e4m3x4_to_f16(a[wi][3], ah[1][1], ah[1][3]);  // row g + 8: slots 16..31
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t b0[2] = {bh[j][0], bh[j][1]};
        const uint32_t b1[2] = {bh[j][2], bh[j][3]};
        mma_16816<DType::F16>(acc[wi][j], ah[0], b0);
        mma_16816<DType::F16>(acc[wi][j], ah[1], b1);
      }
    }
  } else {
#pragma unroll
    for (int wi = 0; wi < 4; ++wi)
#pragma unroll
      for (int j = 0; j < 4; ++j) mma_e4m3_16832(acc[wi][j], a[wi], b[j][0], b[j][1]);
  }
}

// 8-byte global -> shared copy of which only the first `src_bytes` (0 or 8) are read; the rest is
// zero-filled.
QK_DEVICE QK_FORCEINLINE void cp_async8_zfill(uint32_t dst, const void* src, uint32_t src_bytes) {
  QK_ASM_VOLATILE("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

// Weight tile of one stage: for k tile pair p (k tiles 2p, 2p+1 of the stage) and column tile c, a 2 KB
// block; inside it lane t's A operand of sub-tile w, the 16 bytes
//     P[2p, 256c + 8t + 2w], P[2p, ... + 1], P[2p+1, 256c + 8t + 2w], P[2p+1, ... + 1],
// sits at 16-byte unit 32w + (t ^ 2w). One LDS.128 then yields the 4 registers of an m16n8k32 A
// fragment in order (no register moves to make them contiguous); 32 lanes read 32 consecutive units
// (each aligned group of 8 lanes stays inside one group of 8 units: no bank conflicts); the XOR makes
// the 8-byte copies conflict-free too (16 lanes of one copy hit 8 units x 2 halves).
QK_DEVICE QK_FORCEINLINE uint32_t w_unit_offset(int p, int c, int w, int t) {
  return static_cast<uint32_t>((p * 2 + c) * 2048 + (w * 32 + (t ^ (2 * w))) * 16);
}

// The copies one thread issues for every stage, set up once.
//   weights:     4 pieces of 8 bytes, (p, c) in {0,1}^2, each P[kt, 256c' + 8t + 2w .. +1] with kt parity
//                par = tid % 2, w = (tid/2) % 4, t = tid / 8 (consecutive threads: the two k tiles of a
//                pair side by side, 128 contiguous bytes of each per half-warp);
//   activations: 2 chunks of 16 bytes, token rows r and r + 64 (r = tid / 4), chunk tid % 4.
struct StageCopier {
  const uint32_t* wsrc;  // weight words of this thread's (par, w, t) in k tile par, column tile 0
  const uint8_t* xsrc;   // activation chunk of row r in k block 0
  int64_t wrow;          // words of one k tile of the weight (a row of P: 4N)
  int64_t xrow64;        // bytes from row r to row r + 64
  uint32_t wdst;         // byte offset of the piece (p = 0, c = 0) inside the stage
  uint32_t xdst;         // byte offset of the chunk inside the activation buffer of the stage
  int xk;                // k offset of the activation chunk in k block 0
  bool wcol1_ok, xrow0_ok, xrow1_ok;

  QK_DEVICE QK_FORCEINLINE void init(const uint8_t* xq, const uint32_t* w, int64_t m, int64_t n, int64_t k,
                                     int64_t m0, int64_t n0, int tid) {
    const int par = tid & 1, wv = (tid >> 1) & 3, t = tid >> 3;
    wcol1_ok = n0 + 64 < n;  // column tile 0 of a block is always inside N
    wrow = 4 * n;
    wsrc = w + par * wrow + 4 * n0 + 8 * t + 2 * wv;
    wdst = w_unit_offset(0, 0, wv, t) + 8 * par;
    const int r = tid >> 2, jx = tid & 3;
    xrow0_ok = m0 + r < m;
    xrow1_ok = m0 + r + 64 < m;
    xk = 16 * jx;
    xrow64 = 64 * k;
    xsrc = xq + (xrow0_ok ? (m0 + r) * k : 0) + xk;
    xdst = static_cast<uint32_t>(r * kTileK + ((jx ^ ((r >> 1) & 3)) << 4));
  }

  // Issue the copies of k block kb into stage buffers sw (weights) and sx (activations). Pieces past K,
  // past N or past M are zero-filled from a valid address.
  QK_DEVICE QK_FORCEINLINE void issue(uint32_t sw, uint32_t sx, const uint8_t* xq, const uint32_t* w, int64_t k,
                                      int kb) const {
    const int64_t k_tiles = k >> 4;  // even: K % 32 == 0, so a pair of k tiles is all in or all out
    const int64_t kt0 = static_cast<int64_t>(kb) * (kTileK / 16);
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const bool kok = kt0 + 2 * p < k_tiles;
      const uint32_t* src = wsrc + (kt0 + 2 * p) * wrow;
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const bool ok = kok && (c == 0 || wcol1_ok);
        cp_async8_zfill(sw + wdst + (p * 2 + c) * 2048, ok ? src + 256 * c : w, ok ? 8u : 0u);
      }
    }
    const int64_t kk = static_cast<int64_t>(kb) * kTileK + xk;
    const uint8_t* xp = xsrc + static_cast<int64_t>(kb) * kTileK;
    const bool x0 = xrow0_ok && kk < k, x1 = xrow1_ok && kk < k;
    cp_async16_zfill(sx + xdst, x0 ? xp : xq, x0 ? 16u : 0u);
    cp_async16_zfill(sx + xdst + 4096, x1 ? xp + xrow64 : xq, x1 ? 16u : 0u);
  }
};

#endif  // QK_FP8C_MMA_BODY

template <DType D, int kStages>
__global__ void __launch_bounds__(kThreads, 2)
    fp8c_mma_kernel(const uint8_t* QK_RESTRICT xq, const float* QK_RESTRICT xs, const uint32_t* QK_RESTRICT w,
                    const typename Elem<D>::T* QK_RESTRICT scales, const typename Elem<D>::T* QK_RESTRICT bias,
                    typename Elem<D>::T* QK_RESTRICT out, int64_t m, int64_t n, int64_t k, uint32_t col_tiles,
                    uint32_t row_tiles) {
#if defined(QK_FP8C_MMA_BODY)
  using T = typename Elem<D>::T;
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, q = lane & 3;
  const int wc = warp & 1;   // column tile (64 channels) of the block this warp computes
  const int wt = warp >> 1;  // 32-token slice of the block this warp computes

  // Block -> tile: column tiles are taken 16 at a time (2048 channels); inside a chunk the column
  // tile index runs fastest, then the token tile. The blocks resident at once then share ~a dozen token
  // tiles of activations and one 2048-channel slice of the weight, both small enough to stay in L2.
  // 32-bit arithmetic: the launcher keeps col_tiles * row_tiles below 2^31, and the chunk width is at
  // most col_tiles.
  const uint32_t bid = blockIdx.x;
  const uint32_t chunk_w = col_tiles < 16u ? col_tiles : 16u;
  const uint32_t chunk = bid / (chunk_w * row_tiles);
  const uint32_t in_chunk = bid - chunk * (chunk_w * row_tiles);
  const uint32_t chunk_cols = min(chunk_w, col_tiles - chunk * chunk_w);
  const int64_t n0 = static_cast<int64_t>(chunk * chunk_w + in_chunk % chunk_cols) * kTileN;
  const int64_t m0 = static_cast<int64_t>(in_chunk / chunk_cols) * kTileM;
  const int nk = static_cast<int>((k + kTileK - 1) / kTileK);

  const uint32_t s_base = shared_addr(smem);
  auto stage_w = [&](int s) { return s_base + s * kStageBytes; };
  auto stage_x = [&](int s) { return s_base + s * kStageBytes + kWStageBytes; };

  StageCopier copier;
  copier.init(xq, w, m, n, k, m0, n0, tid);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) copier.issue(stage_w(s), stage_x(s), xq, w, k, s);
    cp_async_commit();
  }

  float acc[4][4][4];  // [16-channel sub-tile w][8-token tile j][fragment]
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.0f;

  // Per-lane offsets inside a stage. A: sub-tile w of pair p at w_unit_offset(p, wc, w, lane).
  const uint32_t a_lane = w_unit_offset(0, wc, 0, lane);  // + p * 4096 + w * 512, lane bits ^ 32w
  // B: per m16n8k32 step, one ldmatrix.x4 covers two 8-token tiles (j, j+1): lane l supplies row l % 8
  // of matrix l / 8 = (tile j + (l/8)/2, 16-slot chunk (l/8)%2 of the step). Offset for step 0 and tiles
  // (0, 1); step 1 flips chunk bit 1 (XOR 32: the swizzle only touches the chunk bits), tiles (2, 3)
  // are 16 rows on (the swizzle repeats every 8 rows).
  const uint32_t b_lane = [&] {
    const int mi = lane >> 3;
    const int r = wt * 32 + 8 * (mi >> 1) + (lane & 7);
    return static_cast<uint32_t>(r * kTileK + (((mi & 1) ^ ((r >> 1) & 3)) << 4));
  }();

  int s_read = 0, s_write = kStages - 1;  // stage computed / stage refilled in this iteration
#pragma unroll 1
  for (int kb = 0; kb < nk; ++kb) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kb has landed for all threads; stage kb - 1 is free for everyone
    if (kb + kStages - 1 < nk) copier.issue(stage_w(s_write), stage_x(s_write), xq, w, k, kb + kStages - 1);
    cp_async_commit();
    const uint32_t sw = stage_w(s_read), sx = stage_x(s_read);
    s_read = s_read == kStages - 1 ? 0 : s_read + 1;
    s_write = s_write == kStages - 1 ? 0 : s_write + 1;
#pragma unroll
    for (int st = 0; st < 2; ++st) {
      // This step's B fragments: bf[j] = (slots 4q.. , slots 16+4q..) of token 8j + g.
      uint32_t bf[4][2];
      ldsm_x4(sx + (b_lane ^ (32u * st)), bf[0][0], bf[0][1], bf[1][0], bf[1][1]);
      ldsm_x4(sx + (b_lane ^ (32u * st)) + 1024, bf[2][0], bf[2][1], bf[3][0], bf[3][1]);
      // A: k tiles 2st (slots 0..15 of the step) and 2st+1 (slots 16..31), one LDS.128 per sub-tile.
      uint32_t a[4][4];
#pragma unroll
      for (int wi = 0; wi < 4; ++wi) {
        const uint4 v = lds128(sw + ((a_lane + st * 4096 + wi * 512) ^ (32u * wi)));
        a[wi][0] = v.x;
        a[wi][1] = v.y;
        a[wi][2] = v.z;
        a[wi][3] = v.w;
      }
      warp_step(acc, a, bf);
    }
  }

  // ---- epilogue ----
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the ring: reuse it as the output tile

  const bool col_ok = n0 + 64 * wc < n;  // warp-uniform (N is a multiple of 64)
  float xv[4][2];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int64_t tok = m0 + wt * 32 + 8 * j + 2 * q + e;
      xv[j][e] = tok < m ? xs[tok] : 0.0f;
    }

  // Accumulator fragment r of (wi, j): channel 16wi + 8(r/2) + g, token 8j + 2q + r%2. Neighbouring
  // channels sit in lanes g and g^1 (lane ^ 4): the even lane keeps token 2q and takes the odd lane's
  // value of it, the odd lane keeps token 2q+1; each then writes one 32-bit channel pair.
  const bool odd = (g & 1) != 0;
  const T* const sp = scales + n0 + 64 * wc;
  const T* const bp = bias != nullptr ? bias + n0 + 64 * wc : nullptr;
  uint8_t* const tile = smem + (wt * 32 + 2 * q + (odd ? 1 : 0)) * kOutPitch + (64 * wc + (g & ~1)) * 2;
#pragma unroll
  for (int wi = 0; wi < 4; ++wi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int ch = 16 * wi + 8 * h + g;  // channel inside the warp's 64 (Block32 acts inside 32-blocks)
      const float sc = col_ok ? Elem<D>::to_float(sp[block32_slot(ch)]) : 0.0f;
      const float bi = (col_ok && bp != nullptr) ? Elem<D>::to_float(bp[ch]) : 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float v0 = fmaf(acc[wi][j][2 * h] * xv[j][0], sc, bi);
        const float v1 = fmaf(acc[wi][j][2 * h + 1] * xv[j][1], sc, bi);
        const float other = __shfl_xor_sync(0xffffffffu, odd ? v0 : v1, 4);
        const float lo = odd ? other : v0;  // channel pair (c, c+1), c even
        const float hi = odd ? v1 : other;
        T pair[2] = {Elem<D>::from_float(lo), Elem<D>::from_float(hi)};
        *reinterpret_cast<uint32_t*>(tile + 8 * j * kOutPitch + (16 * wi + 8 * h) * 2) =
            *reinterpret_cast<const uint32_t*>(pair);
      }
    }
  __syncthreads();

  // 128 token rows x 16 chunks of 8 channels; consecutive threads take consecutive chunks of a row.
#pragma unroll
  for (int i = 0; i < (kTileM * 16) / kThreads; ++i) {
    const int idx = tid + i * kThreads;
    const int row = idx >> 4, chunk = idx & 15;
    const int64_t tok = m0 + row, ch = n0 + 8 * chunk;
    if (tok < m && ch < n) {
      const uint4 v = *reinterpret_cast<const uint4*>(smem + row * kOutPitch + chunk * 16);
      *reinterpret_cast<uint4*>(out + tok * n + ch) = v;
    }
  }
#endif  // QK_FP8C_MMA_BODY
}

constexpr int kMaxDevices = 64;

// Raise the dynamic shared memory limit of one instantiation on the current device, once per device.
template <DType D, int kStages>
cudaError_t allow_smem(int device) {
  static std::atomic<bool> done[kMaxDevices];
  const bool cacheable = device >= 0 && device < kMaxDevices;
  if (cacheable && done[device].load(std::memory_order_acquire)) return cudaSuccess;
  const cudaError_t err = cudaFuncSetAttribute(fp8c_mma_kernel<D, kStages>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               Config<kStages>::kSmemBytes);
  if (err == cudaSuccess && cacheable) done[device].store(true, std::memory_order_release);
  return err;
}

template <DType D, int kStages>
cudaError_t launch_typed(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales, const void* bias,
                         void* out, int64_t m, int64_t n, int64_t k, int device, cudaStream_t stream) {
  using T = typename Elem<D>::T;
  const cudaError_t err = allow_smem<D, kStages>(device);
  if (err != cudaSuccess) return err;
  const int64_t col_tiles = (n + kTileN - 1) / kTileN;
  const int64_t row_tiles = (m + kTileM - 1) / kTileM;
  if (row_tiles > 0x7fffffffLL / col_tiles) return cudaErrorInvalidValue;  // 1-D grid limit
  const dim3 grid(static_cast<unsigned>(col_tiles * row_tiles));
  fp8c_mma_kernel<D, kStages><<<grid, kThreads, Config<kStages>::kSmemBytes, stream>>>(
      xq, xs, w, static_cast<const T*>(scales), static_cast<const T*>(bias), static_cast<T*>(out), m, n, k,
      static_cast<uint32_t>(col_tiles), static_cast<uint32_t>(row_tiles));
  return cudaGetLastError();
}

template <DType D>
cudaError_t launch_dtype(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales, const void* bias,
                         void* out, int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  int device = 0, smem_per_sm = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    err = cudaDeviceGetAttribute(&smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  }
  if (err != cudaSuccess) return err;
  // Four stages when two 64 KB blocks (plus the per-block reservation) fit on one SM, else three (48 KB).
  if (smem_per_sm >= 2 * (Config<4>::kSmemBytes + 1024)) {
    return launch_typed<D, 4>(xq, xs, w, scales, bias, out, m, n, k, device, stream);
  }
  return launch_typed<D, 3>(xq, xs, w, scales, bias, out, m, n, k, device, stream);
}

}  // namespace

cudaError_t launch_fp8_compute_gemm_mma(const uint8_t* xq, const float* xs, const uint32_t* w, const void* scales,
                                        const void* bias, void* out, int64_t m, int64_t n, int64_t k, DType dt,
                                        cudaStream_t stream) {
  if (m <= 0) return cudaSuccess;
  if (k / kTileK >= 0x7fffffffLL) return cudaErrorInvalidValue;  // the k-block counter is an int
  if (dt == DType::F16) return launch_dtype<DType::F16>(xq, xs, w, scales, bias, out, m, n, k, stream);
  return launch_dtype<DType::BF16>(xq, xs, w, scales, bias, out, m, n, k, stream);
}

}  // namespace qk
