"""GEMV probe through the raw C ABI (ctypes, no package import): the fused small-M kernels against fp64
(check), CUDA-graph timing against bf16 cuBLAS (perf), one call of each path for ncu / compute-sanitizer (one).

Paths compared side by side (benchmarks/results/gemv_notes.md):
  fp8-v0      main's FP8 dispatch (QK_GEMV_FP8_ENGINE unset): the register-loaded kernel at M <= 4 where it
              fits, the split-K shared-memory ring kernel otherwise
  fp8-ring    the ring kernel also at M <= 4 (QK_FP8_GEMV_KERNEL=ring)
  fp8-direct  the register-loaded kernel up to M = 8 (QK_FP8_GEMV_KERNEL=direct)
  fp8-nocl    main's dispatch with the direct kernel's cluster reduction off (QK_FP8_GEMV_CLUSTER=0): its
              K-splits finish through the fp32 workspace, the last split of each tile summing them
  fp8-reduce  main's dispatch, the K-splits (past a cluster's two) finished by a second, split-K reduce launch
              (QK_FP8_GEMV_FINISH=reduce; by default only under graph capture or past M = 4)
  fp8-launch  main's dispatch, the register-loaded kernel's K-splits finished by the last split of each tile
              at every M, also under graph capture (QK_FP8_GEMV_FINISH=launch; by default only eagerly at
              M <= 4; the ring kernel always uses the reduce launch)
  fp8-v4:VAR  FP8 Marlin on GEMV engine v4 (QK_GEMV_FP8_ENGINE=1), variant VAR
  int8-v3     int8 on the v3 engine (QK_GEMV_INT8_ENGINE=v3)
  int8-main   main's int8 dispatch: the register-loaded kernel at M <= 8 where it fits, engine v4 otherwise
  int8-engine engine v4 also where the register-loaded kernel would run (QK_INT8_GEMV_KERNEL=engine)
  int8-reduce main's int8 dispatch, the register-loaded kernel's splits (past a cluster's two) finished by the
              split-K reduce launch (QK_INT8_GEMV_FINISH=reduce)
  int8-launch the same splits finished by the last split of each tile (QK_INT8_GEMV_FINISH=launch)
  int8-v4:VAR int8 on engine v4 (the default), variant VAR
A variant is a set of the engine's test overrides (csrc/gemv/schedule.h), set in the environment before the
workspace query and the launch (the library reads them at every plan):
  auto  defaults (group width chosen by the plan, split-major blocks, 64 k int8 units)
  t4 / t2 / t1   4 / 2 / 1 adjacent tiles per block      group   group-major block order
  t4g   4 tiles, group-major                              k32     int8 units of 32 k
  b2    grid planned for 2 blocks per SM (a third of the bytes in flight at M <= 8: tests Little's law)
  direct  FP8 only: weight pieces straight into registers (ld.global.nc, evict-first), no shared-memory
        ring, at M <= 16 (larger M: the ring)

Usage: python benchmarks/gemv_probe.py LIB [check|perf|all|sweep|one M N K] [--variant auto,t4,t2,t1,group,b2,direct] [--quick]
Writes $OUT/probe_check.json and $OUT/probe_perf.json ($OUT defaults to /tmp)."""
import argparse
import ctypes
import json
import os
import sys
import time
import torch
import torch.nn.functional as F
from probe_common import DT, I32, I64, P, Native, bench_graph, stream

VARIANTS = {
    "auto": {},
    "t4": {"QK_GEMV_V4_TILES": "4"},
    "t2": {"QK_GEMV_V4_TILES": "2"},
    "t1": {"QK_GEMV_V4_TILES": "1"},
    "group": {"QK_GEMV_V4_ORDER": "group"},
    "t4g": {"QK_GEMV_V4_TILES": "4", "QK_GEMV_V4_ORDER": "group"},
    "k32": {"QK_GEMV_V4_INT8_K": "32"},
    "b2": {"QK_GEMV_V4_BLOCKS_PER_SM": "2"},  # a third of the bytes in flight at M <= 8: Little's law test
    "direct": {"QK_GEMV_V4_LOADS": "direct"},  # FP8 only: register ring (ld.global.nc) at M <= 16
}
FP8_ONLY, INT8_ONLY = {"direct"}, {"k32"}
ENV_KEYS = ["QK_GEMV_FP8_ENGINE", "QK_FP8_GEMV_KERNEL", "QK_FP8_GEMV_CLUSTER", "QK_FP8_GEMV_FINISH", "QK_INT8_GEMV_FINISH", "QK_FP8_GEMV_BLOCKS_PER_SM",
            "QK_INT8_GEMV_BLOCKS_PER_SM", "QK_INT8_GEMV_KERNEL", "QK_GEMV_INT8_ENGINE", "QK_GEMV_V4_TILES", "QK_GEMV_V4_ORDER", "QK_GEMV_V4_INT8_K",
            "QK_GEMV_V4_MAX_SPLITS", "QK_GEMV_V4_BLOCKS_PER_SM", "QK_GEMV_V4_LOADS"]

ap = argparse.ArgumentParser()
ap.add_argument("lib")
ap.add_argument("mode", nargs="?", default="all")
ap.add_argument("shape", nargs="*", type=int)
ap.add_argument("--variant", default="auto,t4,t2,t1,group,b2,direct", help="comma-separated engine v4 variants: " + ",".join(VARIANTS))
ap.add_argument("--quick", action="store_true", help="fewer check cases")
args = ap.parse_args()
variants = [v for v in args.variant.split(",") if v]
for v in variants:
    if v not in VARIANTS:
        sys.exit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")

native = Native(args.lib)
sig, chk = native.sig, native.chk
OUT = os.environ.get("OUT", "/tmp")


fp8_ws = sig("qk_fp8_marlin_gemv_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
fp8_gemv = sig("qk_fp8_marlin_gemv", P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)  # a, w, s, bias, out, ws
fp8_deq = sig("qk_fp8_marlin_dequantize", P, P, P, I64, I64, I32, I32, P)
i8_ws = sig("qk_int8_gemv_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
i8_gemv = sig("qk_int8_gemv", P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
i8_deq = sig("qk_int8_dequantize", P, P, P, I64, I64, I32, I32, P)
dev = torch.device("cuda:0")


# ---- paths: name -> (family, environment) ----
# The overrides that select each path family (fp8-v0, int8-main: none, the library's own choice).
FAMILY_ENV = {
    "fp8-ring": {"QK_FP8_GEMV_KERNEL": "ring"},
    "fp8-direct": {"QK_FP8_GEMV_KERNEL": "direct"},
    "fp8-nocl": {"QK_FP8_GEMV_CLUSTER": "0"},
    "fp8-reduce": {"QK_FP8_GEMV_FINISH": "reduce"},
    "fp8-launch": {"QK_FP8_GEMV_FINISH": "launch"},
    "fp8-v4": {"QK_GEMV_FP8_ENGINE": "1"},
    "int8-engine": {"QK_INT8_GEMV_KERNEL": "engine"},
    "int8-reduce": {"QK_INT8_GEMV_FINISH": "reduce"},
    "int8-launch": {"QK_INT8_GEMV_FINISH": "launch"},
    "int8-v3": {"QK_GEMV_INT8_ENGINE": "v3"},
}


def path_env(path):
    fam, _, var = path.partition(":")
    return {**FAMILY_ENV.get(fam, {}), **VARIANTS.get(var, {})}


def set_env(env):
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(env)


def fp8_paths():
    return ["fp8-v0", "fp8-nocl", "fp8-reduce", "fp8-launch", "fp8-ring", "fp8-direct"] + [f"fp8-v4:{v}" for v in variants if v not in INT8_ONLY]


def int8_paths():
    return ["int8-v3", "int8-main", "int8-reduce", "int8-launch", "int8-engine"] + [f"int8-v4:{v}" for v in variants if v not in FP8_ONLY]


# ---- data ----
def rand_fp8_words(n, k, nan=False):
    b = torch.randint(0, 256, (k // 16, 16 * n), dtype=torch.uint8, device=dev)
    if not nan:
        b = torch.where((b & 0x7F) == 0x7F, b ^ 0x01, b)  # quanto never stores the NaN codes
    return b.view(torch.int32)


def ws_bytes(fn, m, n, k):
    nb = I64(0)
    chk(fn(m, n, k, 0, ctypes.byref(nb)), "workspace query")
    return nb.value


def poisoned_ws(nb):
    # Garbage everywhere (counters included): the launch must not rely on a clean workspace.
    return torch.full((max(nb, 16) // 4 + 4,), 0x7F7F7F7F, dtype=torch.int32, device=dev)


def run(path, a, w, s, n, k, out=None, bias=None):
    """One call of `path` (bias: N values of a's dtype, added in the kernel's epilogue, or None); out
    poisoned with NaN unless given."""
    m = a.shape[0]
    set_env(path_env(path))
    fp8 = path.startswith("fp8")
    nb = ws_bytes(fp8_ws if fp8 else i8_ws, m, n, k)
    ws = poisoned_ws(nb)
    if out is None:
        out = torch.full((m, n), float("nan"), dtype=a.dtype, device=dev)
    fn = fp8_gemv if fp8 else i8_gemv
    bias_ptr = None if bias is None else bias.data_ptr()
    chk(fn(a.data_ptr(), w.data_ptr(), s.data_ptr(), bias_ptr, out.data_ptr(), ws.data_ptr(), nb, m, n, k, DT[a.dtype], 0,
           stream()), path)
    return out


def deq_fp8(w, s, n, k, dt):
    out = torch.empty((n, k), dtype=dt, device=dev)
    chk(fp8_deq(w.data_ptr(), s.data_ptr(), out.data_ptr(), n, k, DT[dt], 0, stream()), "fp8 dequantize")
    return out


def rel(x, ref):
    x = x.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# ---- check ----
fails = []


def check():
    torch.manual_seed(0)
    # Odd shapes: single tile, N not a multiple of 256 (idle warps), tiny and long K, N % 64 != 0 for int8.
    shapes = [(64, 16), (64, 128), (128, 64), (192, 144), (320, 96), (4096, 4096), (14336, 4096), (4096, 14336),
              (64, 4096), (4096, 128), (12288, 3072), (256, 1040), (192, 96), (128, 32)]
    ms = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 48, 63, 64]
    if args.quick:
        shapes, ms = shapes[::2], [1, 4, 16, 17, 64]
    counts = {}
    t0 = time.time()
    for dt in (torch.bfloat16, torch.float16):
        for (n, k) in shapes:
            w = rand_fp8_words(n, k)
            s = (torch.rand(n, device=dev) * 0.02 + 0.001).to(dt)
            wd = deq_fp8(w, s, n, k, dt).double()
            int8_ns = (n, n + 5 if n > 64 else 1) if k % 32 == 0 else ()
            i8 = []
            for n8 in int8_ns:
                w8 = torch.randint(-128, 128, (n8, k), dtype=torch.int8, device=dev)
                s8 = (torch.rand(n8, 1, device=dev) * 0.02 + 0.001).to(dt)
                i8.append((n8, w8, s8, w8.double() * s8.double()))
            for m in ms:
                a = torch.randn(m, k, device=dev).to(dt)
                ref = a.double() @ wd.T
                # Odd M with a bias (the kernels' epilogue adds it before the single rounding), even M without;
                # its size follows the output's mean magnitude (a one-element output has no standard deviation).
                bias = (torch.randn(n, device=dev) * ref.abs().mean()).to(dt) if m % 2 else None
                if bias is not None:
                    ref = ref + bias.double()
                for path in fp8_paths():
                    out = run(path, a, w, s, n, k, bias=bias)
                    out2 = run(path, a, w, s, n, k, bias=bias)
                    torch.cuda.synchronize()
                    e = rel(out, ref)
                    bad = bool(torch.isnan(out).any().item()) or e > 1e-2
                    if bad:
                        fails.append((path, str(dt), m, n, k, e))
                    if not torch.equal(out, out2):
                        fails.append((path + " nondeterministic", str(dt), m, n, k))
                    counts[path] = counts.get(path, 0) + 1
                for (n8, w8, s8, ref_w) in i8:
                    ref8 = a.double() @ ref_w.T
                    bias8 = (torch.randn(n8, device=dev) * ref8.abs().mean()).to(dt) if m % 2 else None
                    if bias8 is not None:
                        ref8 = ref8 + bias8.double()
                    for path in int8_paths():
                        out = run(path, a, w8, s8, n8, k, bias=bias8)
                        out2 = run(path, a, w8, s8, n8, k, bias=bias8)
                        torch.cuda.synchronize()
                        e = rel(out, ref8)
                        bad = bool(torch.isnan(out).any().item()) or e > 1e-2
                        if bad:
                            fails.append((path, str(dt), m, n8, k, e))
                        if not torch.equal(out, out2):
                            fails.append((path + " nondeterministic", str(dt), m, n8, k))
                        counts[path] = counts.get(path, 0) + 1
    # NaN codes: the engine keeps the split-K kernel's semantics (a NaN code gives NaN).
    n, k = 256, 64
    w = rand_fp8_words(n, k, nan=True)
    s = torch.ones(n, dtype=torch.bfloat16, device=dev)
    a = torch.randn(3, k, device=dev).to(torch.bfloat16)
    ref = a.double() @ deq_fp8(w, s, n, k, torch.bfloat16).double().T
    for path in fp8_paths():
        out = run(path, a, w, s, n, k)
        torch.cuda.synchronize()
        if not torch.equal(torch.isnan(out), torch.isnan(ref)):
            fails.append((path + " nan-codes",))
    set_env({})
    total = sum(counts.values())
    print(f"check: {total} cases in {time.time() - t0:.0f} s, {len(fails)} failures {fails[:10]}")
    print("  per path: " + ", ".join(f"{p} {c}" for p, c in counts.items()))
    json.dump({"cases": counts, "failures": fails}, open(os.path.join(OUT, "probe_check.json"), "w"), indent=1)


# ---- perf ----
PERF_SHAPES = [(4096, 14336), (14336, 4096), (3072, 12288), (12288, 3072), (3072, 18432)]  # (K, N)
PERF_MS = [1, 4, 8, 12, 16, 32]


def perf():
    rows = []
    dt = torch.bfloat16
    for (k, n) in PERF_SHAPES:
        L = max(3, int(400e6 // (n * k)) + 1)  # > 400 MB of 8-bit weights per rotation (L2 is 50 MB)
        w8s = [rand_fp8_words(n, k) for _ in range(L)]
        s8s = [(torch.rand(n, device=dev) * 0.01).to(dt) for _ in range(L)]
        wi8 = [torch.randint(-128, 128, (n, k), dtype=torch.int8, device=dev) for _ in range(L)]
        si8 = [(torch.rand(n, 1, device=dev) * 0.01).to(dt) for _ in range(L)]
        Ld = max(3, int(400e6 // (2 * n * k)) + 1)
        wd = [torch.randn(n, k, device=dev).to(dt) for _ in range(Ld)]
        for m in PERF_MS:
            a = torch.randn(m, k, device=dev).to(dt)
            outs = torch.empty(m, n, dtype=dt, device=dev)
            r = dict(M=m, K=k, N=n, weight_mb=n * k / 1e6)
            set_env({})
            r["dense_ms"] = bench_graph(lambda i: F.linear(a, wd[i % Ld]), Ld, reps=40)
            for path in fp8_paths() + int8_paths():
                fp8 = path.startswith("fp8")
                set_env(path_env(path))
                nb = ws_bytes(fp8_ws if fp8 else i8_ws, m, n, k)
                ws = torch.zeros(max(nb, 16) // 4 + 4, dtype=torch.int32, device=dev)
                fn, W, S = (fp8_gemv, w8s, s8s) if fp8 else (i8_gemv, wi8, si8)
                r[path + "_ms"] = bench_graph(
                    lambda i: fn(a.data_ptr(), W[i].data_ptr(), S[i].data_ptr(), None, outs.data_ptr(), ws.data_ptr(), nb, m,
                                 n, k, DT[dt], 0, stream()), L, reps=40)
                r[path + "_ws"] = nb
            set_env({})
            rows.append(r)
            v4 = [p for p in fp8_paths() if p.startswith("fp8-v4")]
            best8 = min(r[p + "_ms"] for p in v4) if v4 else float("nan")
            print(f"{m}x{k}x{n}: dense {r['dense_ms']:.4f}  fp8-v0 {r['fp8-v0_ms']:.4f}  "
                  f"fp8-nocl {r['fp8-nocl_ms']:.4f}  fp8-reduce {r['fp8-reduce_ms']:.4f}  fp8-launch {r['fp8-launch_ms']:.4f}  fp8-ring {r['fp8-ring_ms']:.4f}  fp8-direct {r['fp8-direct_ms']:.4f}  fp8-v4 best {best8:.4f}  "
                  f"int8-v3 {r['int8-v3_ms']:.4f}  int8-main {r['int8-main_ms']:.4f}  int8-reduce {r['int8-reduce_ms']:.4f}  "
                  f"int8-launch {r['int8-launch_ms']:.4f}  int8-engine {r['int8-engine_ms']:.4f}", flush=True)
        w8s = wi8 = wd = None  # free the rotation sets before the next shape
        torch.cuda.empty_cache()
    json.dump(rows, open(os.path.join(OUT, "probe_perf.json"), "w"), indent=1)
    table(rows)


SWEEP_BPS = [0, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 28]


def sweep():
    """Split counts (through the blocks-per-SM override; 0 = the balanced plan) against time: FP8 main dispatch,
    FP8 ring, FP8 direct, int8 main."""
    rows = []
    dt = torch.bfloat16
    keys = {"fp8-v0": "QK_FP8_GEMV_BLOCKS_PER_SM", "fp8-ring": "QK_FP8_GEMV_BLOCKS_PER_SM",
            "fp8-direct": "QK_FP8_GEMV_BLOCKS_PER_SM", "int8-main": "QK_INT8_GEMV_BLOCKS_PER_SM"}
    for (k, n) in PERF_SHAPES:
        L = max(3, int(400e6 // (n * k)) + 1)
        w8s = [rand_fp8_words(n, k) for _ in range(L)]
        s8s = [(torch.rand(n, device=dev) * 0.01).to(dt) for _ in range(L)]
        wi8 = [torch.randint(-128, 128, (n, k), dtype=torch.int8, device=dev) for _ in range(L)]
        si8 = [(torch.rand(n, 1, device=dev) * 0.01).to(dt) for _ in range(L)]
        for m in (1, 2, 4, 6, 8, 16):
            a = torch.randn(m, k, device=dev).to(dt)
            outs = torch.empty(m, n, dtype=dt, device=dev)
            line = []
            for path, key in keys.items():
                fp8 = path.startswith("fp8")
                cells = []
                for bps in SWEEP_BPS:
                    env = dict(path_env(path))
                    if bps:
                        env[key] = str(bps)
                    set_env(env)
                    nb = ws_bytes(fp8_ws if fp8 else i8_ws, m, n, k)
                    splits = max(1, nb // (4 * m * n))
                    ws = torch.zeros(max(nb, 16) // 4 + 4, dtype=torch.int32, device=dev)
                    fn, W, S = (fp8_gemv, w8s, s8s) if fp8 else (i8_gemv, wi8, si8)
                    ms = bench_graph(
                        lambda i: fn(a.data_ptr(), W[i].data_ptr(), S[i].data_ptr(), None, outs.data_ptr(), ws.data_ptr(),
                                     nb, m, n, k, DT[dt], 0, stream()), L, reps=20)
                    rows.append(dict(M=m, K=k, N=n, path=path, bps=bps, splits=splits, ms=ms))
                    cells.append(f"{bps}:{splits}:{ms:.4f}")
                line.append(f"  {path:9} " + " ".join(cells))
            set_env({})
            print(f"{m}x{k}x{n} (bps:splits:ms)\n" + "\n".join(line), flush=True)
        w8s = wi8 = None
        torch.cuda.empty_cache()
    json.dump(rows, open(os.path.join(OUT, "probe_sweep.json"), "w"), indent=1)


def best(r, paths):
    """(ms, variant) of the fastest of `paths` in row r."""
    p = min(paths, key=lambda q: r[q + "_ms"])
    return r[p + "_ms"], p.partition(":")[2]


def table(rows):
    """Every path (ms, [time / bf16 cuBLAS]), then the short table: the target is <= 0.55 at M <= 16."""
    paths = fp8_paths() + int8_paths()
    print("\nall paths: kernel ms (graph replay, weights rotated past L2, median) [time / bf16 cuBLAS]")
    print(f"{'M x K x N':>16} {'cuBLAS':>7} " + " ".join(f"{p:>16}" for p in paths))
    for r in rows:
        cells = " ".join(f"{r[p + '_ms']:.4f} [{r[p + '_ms'] / r['dense_ms']:.2f}]".rjust(16) for p in paths)
        print(f"{r['M']:>4}x{r['K']}x{r['N']:<6} {r['dense_ms']:7.4f} " + cells)
    v4f = [p for p in fp8_paths() if p.startswith("fp8-v4")]
    v4i = [p for p in int8_paths() if p.startswith("int8-v4")]
    print("\nshort table: ms [time / bf16 cuBLAS] (best v4 variant); weight TB/s = 8-bit weight bytes / time")
    print(f"{'M x K x N':>16} {'cuBLAS':>7} {'fp8-v0':>15} {'fp8-v4 best':>24} {'int8-v3':>15} {'int8-v4 best':>24}")
    for r in rows:
        d = r["dense_ms"]
        f0, i3 = r["fp8-v0_ms"], r["int8-v3_ms"]
        f4, fv = best(r, v4f) if v4f else (float("nan"), "-")
        i4, iv = best(r, v4i) if v4i else (float("nan"), "-")
        tbs = r["weight_mb"] / min(f0, f4, i3, i4) / 1e3
        print(f"{r['M']:>4}x{r['K']}x{r['N']:<6} {d:7.4f} {f0:8.4f} [{f0 / d:.2f}] {f4:8.4f} [{f4 / d:.2f}] {fv:>8} "
              f"{i3:8.4f} [{i3 / d:.2f}] {i4:8.4f} [{i4 / d:.2f}] {iv:>8}  best {tbs:.2f} TB/s")


def one():
    m, n, k = args.shape
    dt = torch.bfloat16
    w = rand_fp8_words(n, k)
    s = (torch.rand(n, device=dev) * 0.02).to(dt)
    a = torch.randn(m, k, device=dev).to(dt)
    bias = torch.randn(n, device=dev).to(dt)
    for path in fp8_paths():
        run(path, a, w, s, n, k)
        run(path, a, w, s, n, k, bias=bias)
    if k % 32 == 0:
        w8 = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=dev)
        s8 = (torch.rand(n, 1, device=dev) * 0.02).to(dt)
        for path in int8_paths():
            run(path, a, w8, s8, n, k)
            run(path, a, w8, s8, n, k, bias=bias)
    torch.cuda.synchronize()
    set_env({})
    print("one ok")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, "variants:", ",".join(variants), flush=True)
    if args.mode in ("all", "check"):
        check()
    if args.mode in ("all", "perf"):
        perf()
    if args.mode == "one":
        one()
    if args.mode == "sweep":
        sweep()
    sys.exit(1 if fails else 0)
