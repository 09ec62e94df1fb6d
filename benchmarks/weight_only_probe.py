"""The harness of the weight-only tensor-core probes (fp8_mm_probe.py, int8_mm_probe.py): one format's entry
points are wrapped in a ``Format``; ``main`` runs the modes below on it.

check  M in (1, 17, 64, 65, 129, 300, 1000, 4097) x (N, K) in a ragged set, bf16 and fp16, with and without bias, every
       configuration in the format's CONFIGS (tile, split-K, blocks per multiprocessor, stage depth: its
       <prefix>TILE, _SPLITS, _BLOCKS_PER_SM, _SLICES, read by the library at each call); outputs poisoned
       with NaN, a guard row after the output must stay NaN, each configuration run twice and compared bit
       for bit.
perf   FLUX / LLM layer shapes (PROBE_LAYERS, "NxK,...") over M (PROBE_M, "m,m,..."): the tensor-core kernel
       (its own plan and each forced variant of PERF_CONFIGS), the format's GEMV kernel (M <= 64), dequantize +
       torch matmul and torch's matmul on a dense weight of the same dtype; median of CUDA-graph replays of 20
       calls each.
one    one product per configuration (bf16, with bias), checked; for compute-sanitizer or ncu.
"""
import ctypes
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from probe_common import DT, I32, I64, P, graph_time, set_env, stream

CHECK_SHAPES = [(64, 16), (192, 48), (320, 112), (576, 1040), (3072, 3072), (128, 4096)]  # (N, K)
CHECK_MS = (1, 17, 64, 65, 129, 300, 1000, 4097)
# (tile, splits, blocks per multiprocessor, slices per stage); None = the library's own choice.
CONFIGS = [(None, None, None, None), (32, None, None, None), (64, None, None, None), (128, None, None, None),
           (None, 1, None, None), (32, 3, 2, None), (64, 5, 2, None), (32, 2, 1, None), (128, 7, None, None),
           (64, 64, 1, None), (32, None, None, 4), (32, 3, 2, 4)]
PERF_CONFIGS = {"auto": (None, None, None, None), "64k": (None, None, None, 4), "nosplit": (None, 1, None, None),
                "2/sm": (None, None, 2, None), "t32": (32, None, None, None), "t64": (64, None, None, None),
                "t128": (128, None, None, None)}
PERF_LAYERS = [(14336, 4096), (4096, 14336), (12288, 3072), (3072, 12288), (3072, 15360)]  # (N, K)
TOL = {torch.float16: 2e-3, torch.bfloat16: 1.2e-2}  # relative Frobenius error against the fp64 product


@dataclass
class Format:
    """One weight format's entry points, as the harness calls them.

    make_weight(n, k, dtype, g) -> (w, scales, dense fp64 weight); mm(x, w, s, bias, out, ws) runs the
    tensor-core kernel with ws = mm_workspace(m, n, k) (bytes, tensor or None); gemv(x, w, s, out) and
    dequantize(w, s, wd) are the format's other paths.
    """

    env: Tuple[str, ...]
    make_weight: Callable
    mm_workspace: Callable
    mm: Callable
    gemv: Callable
    dequantize: Callable
    gemv_max_m: int = 64


def abi_paths(native, mm: str, gemv: str, dequantize: str, dev) -> dict:
    """The Format callables of a family whose entry points have the FP8 Marlin / int8 signatures: the
    tensor-core product `mm` (+ `mm`_workspace_bytes), the GEMV `gemv` (+ its workspace query) and the
    dequantize kernel, bound by name in the library `native` (probe_common.Native)."""
    sig, chk = native.sig, native.chk
    mm_fn = sig(mm, P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
    mm_ws = sig(mm + "_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
    gemv_fn = sig(gemv, P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)  # a, w, scales, bias, out, ws, ...
    gemv_ws = sig(gemv + "_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
    deq_fn = sig(dequantize, P, P, P, I64, I64, I32, I32, P)

    def mm_workspace(m, n, k):
        nb = I64(0)
        chk(mm_ws(m, n, k, 0, ctypes.byref(nb)), mm + "_workspace_bytes")
        return nb.value, (torch.empty(nb.value // 4, device=dev) if nb.value else None)

    def run_mm(x, w, s, bias, out, ws):
        (m, k), n = x.shape, out.shape[1]
        nbytes, buf = ws
        chk(mm_fn(x.data_ptr(), w.data_ptr(), s.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(),
                  None if buf is None else buf.data_ptr(), nbytes, m, n, k, DT[x.dtype], 0, stream()), mm)

    def run_gemv(x, w, s, out):
        """A call of the GEMV kernel for these tensors (workspace queried once)."""
        (m, k), n = x.shape, out.shape[1]
        nb = I64(0)
        chk(gemv_ws(m, n, k, 0, ctypes.byref(nb)), gemv + "_workspace_bytes")
        buf = torch.empty(max(nb.value // 4, 1), device=dev)
        return lambda: chk(gemv_fn(x.data_ptr(), w.data_ptr(), s.data_ptr(), None, out.data_ptr(), buf.data_ptr(), nb.value,
                                   m, n, k, DT[x.dtype], 0, stream()), gemv)

    def run_dequantize(w, s, wd):
        n, k = wd.shape
        chk(deq_fn(w.data_ptr(), s.data_ptr(), wd.data_ptr(), n, k, DT[wd.dtype], 0, stream()), dequantize)

    return dict(mm_workspace=mm_workspace, mm=run_mm, gemv=run_gemv, dequantize=run_dequantize)


def cfg_name(cfg) -> str:
    t, s, b, k = cfg
    return f"t{t or 'A'}/s{s or 'A'}/b{b or 'A'}/k{k or 'A'}"


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def check(fmt: Format, dev, shapes: Sequence = CHECK_SHAPES, ms: Sequence = CHECK_MS) -> bool:
    g = torch.Generator(device=dev).manual_seed(1)
    fails = cases = 0
    worst = 0.0
    for n, k in shapes:
        for dtype in (torch.bfloat16, torch.float16):
            w, s, ref_w = fmt.make_weight(n, k, dtype, g)
            for m in ms:
                x = torch.randn(m, k, generator=g, device=dev).to(dtype)
                for with_bias in (False, True):
                    bias = torch.randn(n, generator=g, device=dev).to(dtype) if with_bias else None
                    ref = x.double() @ ref_w.t() + (0 if bias is None else bias.double())
                    for cfg in CONFIGS:
                        set_env(fmt.env, cfg)
                        buf = torch.full((m + 1, n), float("nan"), device=dev, dtype=dtype)
                        fmt.mm(x, w, s, bias, buf[:m], fmt.mm_workspace(m, n, k))
                        again = torch.full((m, n), float("nan"), device=dev, dtype=dtype)
                        fmt.mm(x, w, s, bias, again, fmt.mm_workspace(m, n, k))
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        rel = _rel(buf[:m], ref)
                        finite = bool(torch.isfinite(buf[:m]).all())
                        guard = bool(torch.isnan(buf[m]).all())
                        same = bool(torch.equal(buf[:m].view(torch.int16), again.view(torch.int16)))
                        cases += 1
                        worst = max(worst, rel / TOL[dtype])
                        if not (finite and rel <= TOL[dtype] and guard and same):
                            fails += 1
                            if fails <= 20:
                                print(f"FAIL M={m} N={n} K={k} {dtype} bias={with_bias} {cfg_name(cfg)}: rel {rel:.3e} "
                                      f"finite={finite} guard={guard} deterministic={same}")
    set_env(fmt.env, None)
    print(f"check: {cases} cases, {fails} failures, worst error {worst:.2f} of the tolerance")
    return fails == 0


def perf(fmt: Format, dev, timer: Callable = graph_time, layers: Optional[Sequence] = None,
         ms: Optional[Sequence] = None) -> Dict:
    """Prints one row per (layer, M) and returns {(n, k, m): {column: ms}}."""
    g = torch.Generator(device=dev).manual_seed(2)
    dtype = torch.bfloat16
    if layers is None:
        env_layers = os.environ.get("PROBE_LAYERS")
        layers = ([tuple(int(v) for v in nk.split("x")) for nk in env_layers.split(",")] if env_layers
                  else PERF_LAYERS)
    if ms is None:
        ms = [int(v) for v in os.environ.get("PROBE_M", "16,32,64,128,256,512").split(",")]
    cols = list(PERF_CONFIGS) + ["gemv", "deq", "dense"]
    print("N x K        M     " + " ".join(f"{c:>8s}" for c in cols) + "  auto/dense best-old/dense")
    table = {}
    for n, k in layers:
        w, s, _ = fmt.make_weight(n, k, dtype, g)
        dense = torch.randn(n, k, generator=g, device=dev).to(dtype)
        wd = torch.empty(n, k, device=dev, dtype=dtype)
        for m in ms:
            x = torch.randn(m, k, generator=g, device=dev).to(dtype)
            out = torch.empty(m, n, device=dev, dtype=dtype)
            row = {}
            for name, cfg in PERF_CONFIGS.items():
                set_env(fmt.env, cfg)
                ws = fmt.mm_workspace(m, n, k)
                row[name] = timer(lambda: fmt.mm(x, w, s, None, out, ws))
            set_env(fmt.env, None)
            if m <= fmt.gemv_max_m:
                row["gemv"] = timer(fmt.gemv(x, w, s, out))

            def deq_mm():
                fmt.dequantize(w, s, wd)
                torch.mm(x, wd.t(), out=out)

            row["deq"] = timer(deq_mm)
            row["dense"] = timer(lambda: torch.mm(x, dense.t(), out=out))
            old = min(row.get("gemv", float("inf")), row["deq"])
            cells = [f"{row[c]:8.4f}" if c in row else "       -" for c in cols]
            print(f"{n:5d}x{k:<6d} {m:5d}  " + " ".join(cells) +
                  f"  {row['auto'] / row['dense']:6.2f}    {old / row['dense']:6.2f}", flush=True)
            table[(n, k, m)] = row
    return table


def one(fmt: Format, dev, m: int = 300, n: int = 192, k: int = 320) -> bool:
    g = torch.Generator(device=dev).manual_seed(3)
    w, s, ref_w = fmt.make_weight(n, k, torch.bfloat16, g)
    x = torch.randn(m, k, generator=g, device=dev).to(torch.bfloat16)
    bias = torch.randn(n, generator=g, device=dev).to(torch.bfloat16)
    ref = x.double() @ ref_w.t() + bias.double()
    ok = True
    for cfg in CONFIGS:
        set_env(fmt.env, cfg)
        out = torch.full((m, n), float("nan"), device=dev, dtype=torch.bfloat16)
        fmt.mm(x, w, s, bias, out, fmt.mm_workspace(m, n, k))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rel = _rel(out, ref)
        ok = ok and rel < TOL[torch.bfloat16]
        print(f"one M={m} N={n} K={k} {cfg_name(cfg)}: rel {rel:.3e} {'ok' if rel < TOL[torch.bfloat16] else 'FAIL'}")
    set_env(fmt.env, None)
    return ok


def main(fmt: Format, argv: Sequence[str], dev=None) -> int:
    """argv: [mode] or ["one", M, N, K] (the library path already taken off)."""
    dev = dev or torch.device("cuda:0")
    mode = argv[0] if argv else "check"
    if mode in ("check", "all") and not check(fmt, dev) and mode == "check":
        return 1
    if mode in ("perf", "all"):
        perf(fmt, dev)
    if mode == "one":
        sizes = [int(v) for v in argv[1:4]] if len(argv) >= 4 else []
        return 0 if one(fmt, dev, *sizes) else 1
    if mode not in ("check", "perf", "all", "one"):
        print(f"unknown mode {mode!r}: check, perf, all or one M N K", file=sys.stderr)
        return 2
    return 0
