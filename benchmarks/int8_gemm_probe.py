"""Probe of the int8 GEMM for larger M (qk_int8_gemm, CUTLASS mixed-input mainloop) through the raw C ABI.

Usage: python benchmarks/int8_gemm_probe.py LIB [check|perf|one M N K]

check  M in a ragged set (1 ... 4097) x (N, K) in a ragged set (N % 8 == 0, K % 16 == 0), bf16 and fp16, with
       and without bias, every configuration (QK_INT8_GEMM_TILE = 64, 64s, 128, 128s, 256c2, 256s and the
       library's own choice): against
       the fp64 product, outputs poisoned with NaN plus a guard row that must stay NaN, each run twice and
       compared bit for bit.
perf   FLUX / LLM layer shapes (PROBE_LAYERS "NxK,...") over M (PROBE_M "m,..."): every configuration and the
       library's choice, the medium-M tensor-core kernel (qk_int8_mm, M <= its limit), dequantize + torch matmul, and
       torch's bf16 matmul on a dense weight; median of CUDA-graph replays of 20 calls.
one    one bf16 product with bias per configuration, checked (for compute-sanitizer or ncu).
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
dev = torch.device("cuda:0")
ENV = ("QK_INT8_GEMM_TILE",)
TILES = (None, "64", "64s", "128", "128s", "256c2", "256s")
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.2e-2}  # relative Frobenius error against the fp64 product

gemm_fn = sig("qk_int8_gemm", P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
gemm_ws = sig("qk_int8_gemm_workspace_bytes", I64, I64, I64, I32, I32, ctypes.POINTER(I64))
avail_fn = sig("qk_int8_gemm_available", I32, ctypes.POINTER(I32))
mm_fn = sig("qk_int8_mm", P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
mm_ws = sig("qk_int8_mm_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
mm_max_m = sig("qk_int8_mm_max_m", res=I64)
deq_fn = sig("qk_int8_dequantize", P, P, P, I64, I64, I32, I32, P)


def make_weight(n, k, dtype, g):
    w = torch.randint(-128, 128, (n, k), generator=g, device=dev, dtype=torch.int16).to(torch.int8)
    s = ((0.5 + torch.rand(n, generator=g, device=dev)) / (74.0 * k**0.5)).to(dtype)
    return w, s, w.double() * s.double().reshape(-1, 1)


def workspace(fn, what, *args):
    nb = I64(0)
    chk(fn(*args, ctypes.byref(nb)), what)
    return nb.value, (torch.empty(max(nb.value, 16), device=dev, dtype=torch.uint8) if nb.value else None)


def gemm(x, w, s, bias, out):
    (m, k), n = x.shape, out.shape[1]
    nbytes, buf = workspace(gemm_ws, "qk_int8_gemm_workspace_bytes", m, n, k, DT[x.dtype], 0)
    chk(gemm_fn(x.data_ptr(), w.data_ptr(), s.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(),
                None if buf is None else buf.data_ptr(), nbytes, m, n, k, DT[x.dtype], 0, stream()), "qk_int8_gemm")


def rel(out, ref):
    return float((out.double() - ref).norm() / ref.norm())


def check():
    g = torch.Generator(device=dev).manual_seed(1)
    fails = cases = 0
    worst = 0.0
    for n, k in [(8, 16), (136, 48), (320, 112), (584, 1040), (3072, 3072), (128, 4096), (1032, 272)]:
        for dtype in (torch.bfloat16, torch.float16):
            w, s, ref_w = make_weight(n, k, dtype, g)
            for m in (1, 7, 64, 65, 129, 300, 1000, 4097):
                x = torch.randn(m, k, generator=g, device=dev).to(dtype)
                for with_bias in (False, True):
                    bias = torch.randn(n, generator=g, device=dev).to(dtype) if with_bias else None
                    ref = x.double() @ ref_w.t() + (0 if bias is None else bias.double())
                    for tile in TILES:
                        set_env(ENV, (tile,))
                        buf = torch.full((m + 1, n), float("nan"), device=dev, dtype=dtype)
                        gemm(x, w, s, bias, buf[:m])
                        again = torch.full((m, n), float("nan"), device=dev, dtype=dtype)
                        gemm(x, w, s, bias, again)
                        torch.cuda.synchronize()
                        r = rel(buf[:m], ref)
                        finite = bool(torch.isfinite(buf[:m]).all())
                        guard = bool(torch.isnan(buf[m]).all())
                        same = bool(torch.equal(buf[:m].view(torch.int16), again.view(torch.int16)))
                        cases += 1
                        worst = max(worst, r / TOL[dtype])
                        if not (finite and r <= TOL[dtype] and guard and same):
                            fails += 1
                            if fails <= 20:
                                print(f"FAIL M={m} N={n} K={k} {dtype} bias={with_bias} tile={tile}: rel {r:.3e} "
                                      f"finite={finite} guard={guard} deterministic={same}")
    set_env(ENV, None)
    print(f"check: {cases} cases, {fails} failures, worst error {worst:.2f} of the tolerance")
    return fails == 0


def perf():
    g = torch.Generator(device=dev).manual_seed(2)
    dtype = torch.bfloat16
    layers = [tuple(int(v) for v in nk.split("x")) for nk in os.environ.get(
        "PROBE_LAYERS", "14336x4096,4096x14336,12288x3072,3072x12288,3072x3072,3072x15360").split(",")]
    ms = [int(v) for v in os.environ.get("PROBE_M", "64,128,256,512,1024,2048,4096").split(",")]
    tiles = [("auto", None)] + [("t" + t, t) for t in TILES[1:]]
    cols = [name for name, _ in tiles] + ["mm", "deq", "dense"]
    print("N x K        M     " + " ".join(f"{c:>8s}" for c in cols) + "  auto/dense  old/dense")
    for n, k in layers:
        w, s, _ = make_weight(n, k, dtype, g)
        dense = torch.randn(n, k, generator=g, device=dev).to(dtype)
        wd = torch.empty(n, k, device=dev, dtype=dtype)
        for m in ms:
            x = torch.randn(m, k, generator=g, device=dev).to(dtype)
            out = torch.empty(m, n, device=dev, dtype=dtype)
            row = {}
            if m == ms[0]:  # the first measurement of a layer read 15-50 % high (two runs): one discarded warm-up
                graph_time(lambda: gemm(x, w, s, None, out))
            for name, tile in tiles:
                set_env(ENV, (tile,))
                row[name] = graph_time(lambda: gemm(x, w, s, None, out))
            set_env(ENV, None)
            if m <= mm_max_m() and n % 64 == 0:
                nb, buf = workspace(mm_ws, "qk_int8_mm_workspace_bytes", m, n, k, 0)
                row["mm"] = graph_time(lambda: chk(mm_fn(x.data_ptr(), w.data_ptr(), s.data_ptr(), None, out.data_ptr(),
                                                         None if buf is None else buf.data_ptr(), nb, m, n, k,
                                                         DT[dtype], 0, stream()), "qk_int8_mm"))

            def deq_mm():
                chk(deq_fn(w.data_ptr(), s.data_ptr(), wd.data_ptr(), n, k, DT[dtype], 0, stream()), "dequantize")
                torch.mm(x, wd.t(), out=out)

            row["deq"] = graph_time(deq_mm)
            row["dense"] = graph_time(lambda: torch.mm(x, dense.t(), out=out))
            old = min(row.get("mm", float("inf")), row["deq"])
            cells = [f"{row[c]:8.4f}" if c in row else "       -" for c in cols]
            print(f"{n:5d}x{k:<6d} {m:5d}  " + " ".join(cells) +
                  f"  {row['auto'] / row['dense']:6.2f}     {old / row['dense']:6.2f}", flush=True)


def one(m=300, n=192, k=320):
    g = torch.Generator(device=dev).manual_seed(3)
    w, s, ref_w = make_weight(n, k, torch.bfloat16, g)
    x = torch.randn(m, k, generator=g, device=dev).to(torch.bfloat16)
    bias = torch.randn(n, generator=g, device=dev).to(torch.bfloat16)
    ref = x.double() @ ref_w.t() + bias.double()
    ok = True
    for tile in TILES:
        set_env(ENV, (tile,))
        out = torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16)
        gemm(x, w, s, bias, out)
        torch.cuda.synchronize()
        r = rel(out, ref)
        ok = ok and r < TOL[torch.bfloat16]
        print(f"one M={m} N={n} K={k} tile={tile}: rel {r:.3e} {'ok' if r < TOL[torch.bfloat16] else 'FAIL'}")
    set_env(ENV, None)
    return ok


if __name__ == "__main__":
    avail = I32(0)
    chk(avail_fn(0, ctypes.byref(avail)), "qk_int8_gemm_available")
    if not avail.value:
        sys.exit("qk_int8_gemm is not available on this device / build")
    mode = sys.argv[2] if len(sys.argv) > 2 else "check"
    if mode == "check":
        sys.exit(0 if check() else 1)
    if mode == "perf":
        perf()
    elif mode == "one":
        sys.exit(0 if one(*[int(v) for v in sys.argv[3:6]]) else 1)
    else:
        sys.exit(f"unknown mode {mode!r}")
