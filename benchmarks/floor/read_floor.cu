// Read-bandwidth floor for the small-M weight stream: how fast can one launch read a weight of a
// given size from HBM, with each access pattern and pipeline structure the GEMV kernels could use,
// and no arithmetic? The gap between these numbers and a GEMV's tells whether the GEMV is limited
// by how it loads (pattern, depth, copy mechanism) or by what it does with the bytes.
//
// Build and run (Linux, CUDA 12.4+, one GPU; sm_90a for the bulk-copy rows):
//   nvcc -O3 -std=c++17 -arch=sm_90a -I csrc benchmarks/floor/read_floor.cu -o /tmp/read_floor
//   /tmp/read_floor            # default shapes: 4096 x 14336 and 14336 x 4096 one-byte weights
//   /tmp/read_floor K N        # one shape
//
// Each row: one kernel over a K x N one-byte weight, the buffer rotated among enough copies to
// exceed L2, timed two ways: with events around each launch (median of 200 after warm-up; includes the
// launch overhead) and as CUDA-graph replay (one graph launching the kernel once per copy, replayed 40
// times, time per launch; how the library's kernel benchmarks time), reported as µs per launch and
// TB/s of weight read. Every kernel folds the bytes it read into a checksum that is
// compared with the host's, so a row that skipped bytes fails loudly.
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "compat/qk_compat.h"

#define CHECK(x)                                                                         \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                      \
    }                                                                                    \
  } while (0)

namespace {

cudaStream_t g_stream = nullptr;  // every launch goes here (graphs cannot capture the legacy stream)

__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 v;
  QK_ASM_VOLATILE("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                  : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                  : "l"(p));
  return v;
}
__device__ __forceinline__ void cp16(uint32_t dst, const void* src) {
  QK_ASM_VOLATILE("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { QK_ASM_VOLATILE("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  QK_ASM_VOLATILE("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ uint32_t fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// 1. Plain linear stream: each thread keeps U 16-byte loads in flight, grid-stride.
template <int U>
__global__ void __launch_bounds__(256) linear_kernel(const uint4* w, int64_t pieces, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * 256 * U;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * 256 * U + threadIdx.x; base < pieces; base += stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = base + 256 * u < pieces ? ldg_stream(w + base + 256 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= fold(v[u]);
  }
  atomicXor(sink, acc);
}

// Marlin-ordered units: unit (kb, tile) is 1 KB at kb * 16N + tile * 1024 (quanto's FP8 Marlin
// layout keeps one 16-row block of 64 channels contiguous). Work item = (split, tile); warp j of
// the block takes k blocks kb0 + j, kb0 + j + W, ... of its item's range.
struct MarlinGrid {
  int64_t tiles, kblocks;
  int splits;
  __device__ void range(int64_t item, int warps, int warp, int64_t& tile, int64_t& first, int64_t& count) const {
    const int split = static_cast<int>(item / tiles);
    tile = item - static_cast<int64_t>(split) * tiles;
    const int64_t kb = kblocks * split / splits, ke = kblocks * (split + 1) / splits;
    first = kb + warp;
    count = first < ke ? (ke - first + warps - 1) / warps : 0;
  }
};

// 2. Per-warp cp.async ring of S one-KB stages (the structure of the FP8 split-K GEMV).
template <int W, int S>
__global__ void __launch_bounds__(W * 32) ring_kernel(const uint8_t* w, MarlinGrid g, int64_t row_bytes, uint32_t* sink) {
  __shared__ __align__(16) uint4 smem[W * S * 64];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint4* ring = smem + warp * S * 64;
  uint32_t acc = 0;
  for (int64_t item = blockIdx.x; item < g.tiles * g.splits; item += gridDim.x) {
    int64_t tile, first, count;
    g.range(item, W, warp, tile, first, count);
    const uint8_t* src0 = w + tile * 1024;
    auto issue = [&](int64_t i) {
      if (i < count) {
        const uint8_t* src = src0 + (first + i * W) * row_bytes;
        uint4* st = ring + (i % S) * 64;
        cp16(smem_addr(st + lane), src + 16 * lane);
        cp16(smem_addr(st + lane + 32), src + 16 * (lane + 32));
      }
      cp_commit();
    };
#pragma unroll
    for (int i = 0; i < S - 1; ++i) issue(i);
    for (int64_t i = 0; i < count; ++i) {
      cp_wait<S - 2>();
      __syncwarp();
      const uint4* st = ring + (i % S) * 64;
      acc ^= fold(st[lane]) ^ fold(st[lane + 32]);
      __syncwarp();
      issue(i + S - 1);
    }
    cp_wait<0>();
    __syncwarp();
  }
  atomicXor(sink, acc);
}

// 3. Straight into registers: each lane holds D units (2 x 16 B each) in flight.
template <int W, int D>
__global__ void __launch_bounds__(W * 32) direct_kernel(const uint8_t* w, MarlinGrid g, int64_t row_bytes, uint32_t* sink) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t acc = 0;
  for (int64_t item = blockIdx.x; item < g.tiles * g.splits; item += gridDim.x) {
    int64_t tile, first, count;
    g.range(item, W, warp, tile, first, count);
    const uint8_t* src = w + tile * 1024 + first * row_bytes + 16 * lane;
    const int64_t step = W * row_bytes;
    int64_t i = 0;
    for (; i + D <= count; i += D) {
      uint4 v[D][2];
#pragma unroll
      for (int d = 0; d < D; ++d) {
        v[d][0] = ldg_stream(src + d * step);
        v[d][1] = ldg_stream(src + d * step + 512);
      }
#pragma unroll
      for (int d = 0; d < D; ++d) acc ^= fold(v[d][0]) ^ fold(v[d][1]);
      src += D * step;
    }
    for (; i < count; ++i, src += step) acc ^= fold(ldg_stream(src)) ^ fold(ldg_stream(src + 512));
  }
  atomicXor(sink, acc);
}

// 4. Bulk copies (sm_90): one thread per block streams CHUNK contiguous bytes per stage into an
// S-stage ring with transaction barriers; the block folds each stage and releases it. Contiguous
// chunks of one k-block row = CHUNK / 1024 adjacent tiles.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t n) {
  QK_ASM_VOLATILE("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(n) : "memory");
}
__device__ __forceinline__ void mbar_expect(uint32_t bar, uint32_t bytes) {
  QK_ASM_VOLATILE("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  QK_ASM_VOLATILE(
      "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  QK_ASM_VOLATILE(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}
#endif

template <int CHUNK, int S>
__global__ void __launch_bounds__(128) bulk_kernel(const uint8_t* w, int64_t rows, int64_t row_bytes, int splits,
                                                   uint32_t* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint8_t dyn[];
  uint4* ring = reinterpret_cast<uint4*>(dyn);
  __shared__ __align__(8) uint64_t full[S];
  const int64_t cols = row_bytes / CHUNK;
  uint32_t acc = 0;
  if (threadIdx.x == 0)
    for (int s = 0; s < S; ++s) mbar_init(smem_addr(&full[s]), 1);
  __syncthreads();
  QK_ASM_VOLATILE("fence.proxy.async.shared::cta;\n" ::: "memory");
  uint32_t phase_bits = 0;
  for (int64_t item = blockIdx.x; item < cols * splits; item += gridDim.x) {
    const int split = static_cast<int>(item / cols);
    const int64_t col = item - static_cast<int64_t>(split) * cols;
    const int64_t r0 = rows * split / splits, r1 = rows * (split + 1) / splits;
    const int64_t count = r1 - r0;
    auto issue = [&](int64_t i) {
      if (threadIdx.x == 0 && i < count) {
        const uint32_t bar = smem_addr(&full[i % S]);
        mbar_expect(bar, CHUNK);
        bulk_copy(smem_addr(ring + (i % S) * (CHUNK / 16)), w + (r0 + i) * row_bytes + col * CHUNK, CHUNK, bar);
      }
    };
    for (int i = 0; i < S; ++i) issue(i);
    for (int64_t i = 0; i < count; ++i) {
      const int s = static_cast<int>(i % S);
      mbar_wait(smem_addr(&full[s]), (phase_bits >> s) & 1u);
      phase_bits ^= 1u << s;
      const uint4* st = ring + s * (CHUNK / 16);
      for (int p = threadIdx.x; p < CHUNK / 16; p += 128) acc ^= fold(st[p]);
      __syncthreads();  // every thread is done with stage s before it is refilled
      issue(i + S);
    }
  }
  atomicXor(sink, acc);
#endif
}

struct Buffers {
  std::vector<uint8_t*> bufs;
  std::vector<uint32_t> sums;  // host checksum (xor of 32-bit words) of each copy
  int64_t bytes = 0;
};

uint32_t host_fold(const std::vector<uint32_t>& words) {
  uint32_t s = 0;
  for (uint32_t v : words) s ^= v;
  return s;
}

Buffers make_buffers(int64_t bytes, int64_t l2_bytes) {
  Buffers b;
  b.bytes = bytes;
  const int copies = static_cast<int>(std::max<int64_t>(4, (4 * l2_bytes) / bytes + 1));
  std::vector<uint32_t> host(bytes / 4);
  uint32_t x = 0x12345679u;
  for (int c = 0; c < copies; ++c) {
    for (auto& v : host) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      v = x;
    }
    uint8_t* d = nullptr;
    CHECK(cudaMalloc(&d, bytes));
    CHECK(cudaMemcpy(d, host.data(), bytes, cudaMemcpyHostToDevice));
    b.bufs.push_back(d);
    b.sums.push_back(host_fold(host));
  }
  return b;
}

template <class Launch>
void time_row(const char* name, const Buffers& b, uint32_t* sink, Launch launch) {
  // Check: one launch per copy, xor of the fold must equal the host's.
  for (size_t c = 0; c < b.bufs.size(); ++c) {
    CHECK(cudaMemsetAsync(sink, 0, 4, g_stream));
    launch(b.bufs[c]);
    CHECK(cudaGetLastError());
    uint32_t got = 0;
    CHECK(cudaMemcpyAsync(&got, sink, 4, cudaMemcpyDeviceToHost, g_stream));
    CHECK(cudaStreamSynchronize(g_stream));
    if (got != b.sums[c]) {
      std::printf("%-34s CHECK FAILED (copy %zu: %08x vs %08x)\n", name, c, got, b.sums[c]);
      return;
    }
  }
  const int reps = 200;
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CHECK(cudaEventCreate(&e));
  for (int i = 0; i < 20; ++i) launch(b.bufs[i % b.bufs.size()]);
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(ev[2 * i], g_stream));
    launch(b.bufs[i % b.bufs.size()]);
    CHECK(cudaEventRecord(ev[2 * i + 1], g_stream));
  }
  CHECK(cudaStreamSynchronize(g_stream));
  CHECK(cudaGetLastError());
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CHECK(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  std::sort(ms.begin(), ms.end());
  const double us = 1e3 * ms[reps / 2];

  // Graph replay: one graph with one launch per copy, replayed; the median replay over the launches in it.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(g_stream, cudaStreamCaptureModeThreadLocal));
  for (const uint8_t* buf : b.bufs) launch(buf);
  CHECK(cudaStreamEndCapture(g_stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const int replays = 40;
  for (int i = 0; i < 3; ++i) CHECK(cudaGraphLaunch(exec, g_stream));
  std::vector<float> gms(replays);
  for (int i = 0; i < replays; ++i) {
    CHECK(cudaEventRecord(ev[0], g_stream));
    CHECK(cudaGraphLaunch(exec, g_stream));
    CHECK(cudaEventRecord(ev[1], g_stream));
    CHECK(cudaEventSynchronize(ev[1]));
    CHECK(cudaEventElapsedTime(&gms[i], ev[0], ev[1]));
  }
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  for (auto& e : ev) CHECK(cudaEventDestroy(e));
  std::sort(gms.begin(), gms.end());
  const double gus = 1e3 * gms[replays / 2] / static_cast<double>(b.bufs.size());
  std::printf("%-34s %8.2f us  %5.2f TB/s   (p10 %.2f, p90 %.2f)   graph %8.2f us  %5.2f TB/s\n", name, us,
              b.bytes / us * 1e-6, 1e3 * ms[reps / 10], 1e3 * ms[9 * reps / 10], gus, b.bytes / gus * 1e-6);
}

int splits_for(int64_t tiles, int64_t kblocks, int sms, int blocks_per_sm, int warps) {
  int64_t s = (static_cast<int64_t>(sms) * blocks_per_sm + tiles - 1) / tiles;
  s = std::min<int64_t>(s, std::max<int64_t>(1, kblocks / warps));
  return static_cast<int>(std::max<int64_t>(1, s));
}

// One row of a Marlin-ordered kernel (ring or direct) with W warps and parameter P, at bps blocks per SM.
template <int W, int P>
void marlin_row(const char* kind, void (*kernel)(const uint8_t*, MarlinGrid, int64_t, uint32_t*), const Buffers& b,
                uint32_t* sink, int64_t n, int64_t k, int sms, int bps) {
  MarlinGrid g{n / 64, k / 16, splits_for(n / 64, k / 16, sms, bps, W)};
  const int64_t items = g.tiles * g.splits;
  const std::string name = std::string(kind) + " W" + std::to_string(W) + (kind[0] == 'r' ? " S" : " D") +
                           std::to_string(P) + " bps" + std::to_string(bps) + " sp" + std::to_string(g.splits);
  time_row(name.c_str(), b, sink, [&](const uint8_t* w) {
    kernel<<<static_cast<unsigned>(items), W * 32, 0, g_stream>>>(w, g, 16 * n, sink);
  });
}

template <int W, int S>
void ring_row(const Buffers& b, uint32_t* sink, int64_t n, int64_t k, int sms, int bps) {
  marlin_row<W, S>("ring", ring_kernel<W, S>, b, sink, n, k, sms, bps);
}

template <int W, int D>
void direct_row(const Buffers& b, uint32_t* sink, int64_t n, int64_t k, int sms, int bps) {
  marlin_row<W, D>("direct", direct_kernel<W, D>, b, sink, n, k, sms, bps);
}

template <int CHUNK, int S>
void bulk_row(const Buffers& b, uint32_t* sink, int64_t n, int64_t k, int sms, int bps) {
  const int64_t rows = k / 16, row_bytes = 16 * n, cols = row_bytes / CHUNK;
  const int64_t want = static_cast<int64_t>(sms) * bps;
  const int splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows / 4, (want + cols - 1) / cols)));
  const int smem = CHUNK * S;
  CHECK(cudaFuncSetAttribute(bulk_kernel<CHUNK, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const std::string name = "bulk " + std::to_string(CHUNK) + "B S" + std::to_string(S) + " bps" + std::to_string(bps) +
                           " sp" + std::to_string(splits);
  time_row(name.c_str(), b, sink, [&](const uint8_t* w) {
    bulk_kernel<CHUNK, S><<<static_cast<unsigned>(cols * splits), 128, smem, g_stream>>>(w, rows, row_bytes, splits, sink);
  });
}

}  // namespace

int main(int argc, char** argv) {
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("%s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
  uint32_t* sink = nullptr;
  CHECK(cudaMalloc(&sink, 4));
  CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
  std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 14336}, {14336, 4096}};  // (K, N)
  if (argc == 3) shapes = {{std::atoll(argv[1]), std::atoll(argv[2])}};
  for (auto [k, n] : shapes) {
    Buffers b = make_buffers(k * n, prop.l2CacheSize);
    std::printf("\n== K %lld x N %lld: %.1f MB, %zu copies rotated\n", static_cast<long long>(k),
                static_cast<long long>(n), k * n / 1e6, b.bufs.size());
    const int64_t pieces = k * n / 16;
    for (int bps : {2, 4, 8}) {
      auto lin = [&](auto u_tag, const char* nm) {
        constexpr int U = decltype(u_tag)::value;
        const std::string name = std::string(nm) + " bps" + std::to_string(bps);
        time_row(name.c_str(), b, sink, [&](const uint8_t* w) {
          linear_kernel<U><<<sms * bps, 256, 0, g_stream>>>(reinterpret_cast<const uint4*>(w), pieces, sink);
        });
      };
      lin(std::integral_constant<int, 2>{}, "linear U2");
      lin(std::integral_constant<int, 4>{}, "linear U4");
      lin(std::integral_constant<int, 8>{}, "linear U8");
    }
    for (int bps : {4, 8}) {
      ring_row<4, 4>(b, sink, n, k, sms, bps);
      ring_row<4, 8>(b, sink, n, k, sms, bps);
      ring_row<8, 4>(b, sink, n, k, sms, bps);
      direct_row<4, 2>(b, sink, n, k, sms, bps);
      direct_row<4, 4>(b, sink, n, k, sms, bps);
      direct_row<8, 4>(b, sink, n, k, sms, bps);
    }
    for (int bps : {1, 2, 4}) {
      bulk_row<4096, 4>(b, sink, n, k, sms, bps);
      bulk_row<8192, 4>(b, sink, n, k, sms, bps);
      bulk_row<16384, 3>(b, sink, n, k, sms, bps);
    }
    for (auto* p : b.bufs) CHECK(cudaFree(p));
  }
  return 0;
}
