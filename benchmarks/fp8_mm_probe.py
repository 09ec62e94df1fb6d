"""Weight-only FP8 probe through the raw C ABI: the tensor-core kernel (qk_fp8_marlin_mm) against an fp64
reference (check), and CUDA-graph timings of every weight-only path against torch's bf16 matmul (perf).

Usage: python benchmarks/fp8_mm_probe.py LIB [check|perf|all|one M N K]

check  M in (1, 17, 64, 65, 129, 300, 1000, 4097) x (N, K) in a ragged set, bf16 and fp16, with and without bias,
       every configuration in CONFIGS (tile, split-K, blocks per multiprocessor, stage depth: QK_FP8_MM_TILE,
       QK_FP8_MM_SPLITS, QK_FP8_MM_BLOCKS_PER_SM, QK_FP8_MM_SLICES, read by the library at each call); outputs poisoned with NaN and a guard row
       after the output must stay NaN; each configuration run twice and compared bit for bit.
perf   FLUX / LLM layer shapes (PROBE_LAYERS) over M = 1 ... 1024 (PROBE_M): the tensor-core kernel (its own plan, unsplit,
       64-k stages, two blocks per multiprocessor, each tile), the GEMV kernel (M <= 64), dequantize + torch matmul, and
       torch's bf16 matmul on a dense weight; median of CUDA-graph replays (each replay runs the product 20 times).
one    one product per configuration (bf16, with bias), checked; for compute-sanitizer or ncu.
"""
import ctypes
import os
import sys

import torch
from probe_common import DT, I32, I64, P, Native, graph_time, set_env, stream

if len(sys.argv) < 2:
    sys.exit(__doc__)
native = Native(sys.argv[1])
sig, chk = native.sig, native.chk
MODE = sys.argv[2] if len(sys.argv) > 2 else "check"


repack = sig("qk_marlin_repack", P, P, P, I64, I64, I32, I32, P)
mm = sig("qk_fp8_marlin_mm", P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
mm_ws = sig("qk_fp8_marlin_mm_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
gemv = sig("qk_fp8_marlin_gemv", P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
gemv_ws = sig("qk_fp8_marlin_gemv_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
deq = sig("qk_fp8_marlin_dequantize", P, P, P, I64, I64, I32, I32, P)
dev = torch.device("cuda:0")


def block32_perm(n):
    """stored index -> natural index of quanto's 32-channel scale order."""
    d = [0, 1, 8, 9, 16, 17, 24, 25]
    idx = [32 * b + 2 * i + d[e] for b in range(n // 32) for i in range(4) for e in range(8)]
    return torch.tensor(idx, device=dev)


def make_weight(n, k, dtype, g):
    codes = torch.randint(0, 256, (n, k), generator=g, device=dev, dtype=torch.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0  # no NaN codes
    s = (torch.rand(n, generator=g, device=dev) * 0.02 + 0.001).to(dtype)
    # repack input (K/4, N) int32: byte j of word [kp, n] is code [n, 4 kp + j]
    packed_in = codes.t().reshape(k // 4, 4, n).permute(0, 2, 1).contiguous().view(torch.int32).reshape(k // 4, n)
    w = torch.empty(k // 16, 4 * n, dtype=torch.int32, device=dev)
    chk(repack(packed_in.data_ptr(), None, w.data_ptr(), k, n, 8, 0, stream()), "repack")
    s_perm = s[block32_perm(n)].contiguous()
    ref_w = codes.view(torch.float8_e4m3fn).double() * s.double().reshape(-1, 1)
    return w, s_perm, ref_w


def mm_workspace(m, n, k):
    nb = I64(0)
    chk(mm_ws(m, n, k, 0, ctypes.byref(nb)), "fp8_marlin_mm_workspace_bytes")
    return nb.value, (torch.empty(nb.value // 4, device=dev) if nb.value else None)


def run_mm(x, w, s_perm, bias, out, ws=None):
    """ws: (bytes, tensor) from mm_workspace for this shape and configuration (queried here when None)."""
    m, k = x.shape
    n = out.shape[1]
    nbytes, buf = ws if ws is not None else mm_workspace(m, n, k)
    chk(mm(x.data_ptr(), w.data_ptr(), s_perm.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(),
           None if buf is None else buf.data_ptr(), nbytes, m, n, k, DT[x.dtype], 0, stream()), "fp8_marlin_mm")


# (tile, splits, blocks per multiprocessor, slices per stage); None = the library's own choice.
CONFIGS = [(None, None, None, None), (32, None, None, None), (64, None, None, None), (128, None, None, None),
           (None, 1, None, None), (32, 3, 2, None), (64, 5, 2, None), (32, 2, 1, None), (128, 7, None, None),
           (64, 64, 1, None), (32, None, None, 4), (32, 3, 2, 4)]
ENV = ("QK_FP8_MM_TILE", "QK_FP8_MM_SPLITS", "QK_FP8_MM_BLOCKS_PER_SM", "QK_FP8_MM_SLICES")


def set_config(cfg):
    set_env(ENV, cfg)


def cfg_name(cfg):
    t, s, b, k = cfg
    return f"t{t or 'A'}/s{s or 'A'}/b{b or 'A'}/k{k or 'A'}"


def check():
    g = torch.Generator(device=dev).manual_seed(1)
    fails = cases = 0
    worst = 0.0
    for n, k in [(64, 16), (192, 48), (320, 112), (576, 1040), (3072, 3072), (128, 4096)]:
        for dtype in (torch.bfloat16, torch.float16):
            w, s_perm, ref_w = make_weight(n, k, dtype, g)
            for m in (1, 17, 64, 65, 129, 300, 1000, 4097):
                x = torch.randn(m, k, generator=g, device=dev).to(dtype)
                for with_bias in (False, True):
                    bias = torch.randn(n, generator=g, device=dev).to(dtype) if with_bias else None
                    ref = x.double() @ ref_w.t() + (0 if bias is None else bias.double())
                    for cfg in CONFIGS:
                        set_config(cfg)
                        buf = torch.full((m + 1, n), float("nan"), device=dev, dtype=dtype)
                        run_mm(x, w, s_perm, bias, buf[:m])
                        again = torch.full((m, n), float("nan"), device=dev, dtype=dtype)
                        run_mm(x, w, s_perm, bias, again)
                        torch.cuda.synchronize()
                        out = buf[:m].double()
                        rel = float((out - ref).norm() / ref.norm())
                        tol = 2e-3 if dtype == torch.float16 else 1.2e-2
                        same = bool(torch.equal(buf[:m].view(torch.int16), again.view(torch.int16)))
                        ok = (bool(torch.isfinite(out).all()) and rel <= tol and bool(torch.isnan(buf[m]).all())
                              and same)
                        cases += 1
                        worst = max(worst, rel / tol)
                        if not ok:
                            fails += 1
                            if fails <= 20:
                                print(f"FAIL M={m} N={n} K={k} {dtype} bias={with_bias} {cfg_name(cfg)}: rel {rel:.3e} "
                                      f"finite={bool(torch.isfinite(out).all())} guard={bool(torch.isnan(buf[m]).all())} "
                                      f"deterministic={same}")
    set_config(None)
    print(f"check: {cases} cases, {fails} failures, worst error {worst:.2f} of the tolerance")
    return fails == 0


PERF_CONFIGS = {"auto": (None, None, None, None), "nosplit": (None, 1, None, None), "64k": (None, None, None, 4),
                "2/sm": (None, None, 2, None), "t32": (32, None, None, None), "t64": (64, None, None, None),
                "t128": (128, None, None, None)}


def perf():
    g = torch.Generator(device=dev).manual_seed(2)
    dtype = torch.bfloat16
    layers = [(14336, 4096), (4096, 14336), (18432, 3072), (12288, 3072), (3072, 12288), (3072, 3072), (3072, 15360)]
    if os.environ.get("PROBE_LAYERS"):  # e.g. "14336x4096,3072x12288" (N x K)
        layers = [tuple(int(v) for v in nk.split("x")) for nk in os.environ["PROBE_LAYERS"].split(",")]
    ms = [int(v) for v in os.environ.get("PROBE_M", "1,16,32,64,128,256,512,1024").split(",")]
    cols = list(PERF_CONFIGS) + ["gemv", "deq", "bf16"]
    print("N x K        M     " + " ".join(f"{c:>8s}" for c in cols) + "  auto/bf16 best-old/bf16")
    for n, k in layers:
        w, s_perm, _ = make_weight(n, k, dtype, g)
        dense = torch.randn(n, k, generator=g, device=dev).to(dtype)
        for m in ms:
            x = torch.randn(m, k, generator=g, device=dev).to(dtype)
            out = torch.empty(m, n, device=dev, dtype=dtype)
            row = {}
            for name, cfg in PERF_CONFIGS.items():
                set_config(cfg)
                ws = mm_workspace(m, n, k)
                row[name] = graph_time(lambda: run_mm(x, w, s_perm, None, out, ws))
            set_config(None)
            if m <= 64:
                nb = I64(0)
                chk(gemv_ws(m, n, k, 0, ctypes.byref(nb)), "ws")
                gws = torch.empty(max(nb.value // 4, 1), device=dev)
                row["gemv"] = graph_time(lambda: chk(gemv(x.data_ptr(), w.data_ptr(), s_perm.data_ptr(),
                                                          out.data_ptr(), gws.data_ptr(), nb.value, m, n, k,
                                                          DT[dtype], 0, stream()), "gemv"))
            wd = torch.empty(n, k, device=dev, dtype=dtype)

            def deq_mm():
                chk(deq(w.data_ptr(), s_perm.data_ptr(), wd.data_ptr(), n, k, DT[dtype], 0, stream()), "deq")
                torch.mm(x, wd.t(), out=out)

            row["deq"] = graph_time(deq_mm)
            row["bf16"] = graph_time(lambda: torch.mm(x, dense.t(), out=out))
            old = min(row.get("gemv", 1e9), row["deq"])
            cells = [f"{row[c]:8.4f}" if c in row else "       -" for c in cols]
            print(f"{n:5d}x{k:<6d} {m:5d}  " + " ".join(cells) +
                  f"  {row['auto'] / row['bf16']:6.2f}    {old / row['bf16']:6.2f}", flush=True)


def one():
    m, n, k = (int(v) for v in sys.argv[3:6]) if len(sys.argv) >= 6 else (300, 192, 320)
    g = torch.Generator(device=dev).manual_seed(3)
    w, s_perm, ref_w = make_weight(n, k, torch.bfloat16, g)
    x = torch.randn(m, k, generator=g, device=dev).to(torch.bfloat16)
    bias = torch.randn(n, generator=g, device=dev).to(torch.bfloat16)
    ref = x.double() @ ref_w.t() + bias.double()
    for cfg in CONFIGS:
        set_config(cfg)
        out = torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16)
        run_mm(x, w, s_perm, bias, out)
        torch.cuda.synchronize()
        rel = float((out.double() - ref).norm() / ref.norm())
        print(f"one M={m} N={n} K={k} {cfg_name(cfg)}: rel {rel:.3e} {'ok' if rel < 1.2e-2 else 'FAIL'}")
    set_config(None)


if __name__ == "__main__":
    if MODE in ("check", "all"):
        ok = check()
        if not ok and MODE == "check":
            sys.exit(1)
    if MODE in ("perf", "all"):
        perf()
    if MODE == "one":
        one()
