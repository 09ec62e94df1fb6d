"""Differential fuzzing of the int8 ops on the GPU (conventions of test_gpu_fuzz.py).

QK_FUZZ_CASES (default 1000) seeded cases (``case_seed("fuzz", "int8", i)``: a failing case is rerun
alone by its index): random M (mostly around the fused kernel's limit, sometimes 0 or several hundred),
K (multiples of 32 for both paths, and any K for the dequantize path), N (1 to ~5000, mostly not a
multiple of 64), dtype, scale shape ((N, 1) or (N,)) and path (the rule, or forced "gemv" / "dequant";
a forced "gemv" outside its range must be refused). Each result is checked against the fp64 product
with ``support.int8_gemm_bound`` for the path that ran (and ``GEMM_TOL`` where the output has >= 64
elements); a quarter of the cases also check ``int8_dequantize`` bit for bit. Every case poisons a
slice of the caching allocator first (0xFF: NaN), so unwritten output elements show.
"""

from __future__ import annotations

import random

import pytest
import torch

import support as sp
from ops.test_gpu_fuzz import _poison, _rows, _run

pytestmark = [pytest.mark.gpu, sp.requires_gpu]

DEV = "cuda"
f16, bf16 = torch.float16, torch.bfloat16


def _shape(r: random.Random):
    """(N, K): N from 1 to ~5000 (rarely a multiple of 64), K a multiple of 32 or anything up to 4096."""
    u = r.random()
    n = r.randint(1, 16) if u < 0.25 else (r.randint(17, 600) if u < 0.85 else r.randint(601, 5000))
    v = r.random()
    if v < 0.65:
        k = 32 * r.randint(1, 128)
    elif v < 0.85:
        k = r.randint(1, 4096)  # mostly K % 32 != 0: the dequantize path
    else:
        k = r.choice([32, 64, 96, 4096, 33, 31, 1, 4095])
    return n, k


def test_fuzz_int8_gemm(ops):
    limit = sp.fused_limit(ops, "int8")

    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "int8", i))
        n, k = _shape(r)
        m = _rows(r, limit)
        if r.random() < 0.05:
            m = r.randint(65, 400)
        dtype = r.choice([f16, bf16])
        flat = r.random() < 0.5
        forced = r.choice([None, None, "gemv", "dequant"])
        g = sp.generator("fuzz", "int8", i)
        w, s = sp.random_int8_weight(n, k, dtype, g)
        s_arg = s.reshape(n) if flat else s
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        fused_ok = m <= limit and k % 32 == 0
        what = f"int8_gemm M={m} N={n} K={k} {dtype} scales {'(N,)' if flat else '(N, 1)'} path {forced or 'rule'}"
        if forced == "gemv" and m > 0 and not fused_ok:
            with ops.force_path("gemv"), pytest.raises(ValueError, match=r"^force_path\('gemv'\): "):
                ops.int8_gemm(a, w, s_arg)
            stats.exact("refused")
            return
        _poison()
        with ops.force_path(forced):
            out = ops.int8_gemm(a, w, s_arg)
        assert out.dtype == dtype and tuple(out.shape) == (m, n), f"{what}: {out.dtype} {tuple(out.shape)}"
        path = forced or ("gemv" if fused_ok else "dequant")
        wd = sp.int8_dequant_reference(w, s)
        ref = sp.matmul_reference(a, wd)
        if m:
            sp.assert_all_finite(out, what)
            over = sp.max_abs_over(out, ref, sp.int8_gemm_bound(a, wd, dtype, path))
            assert over <= 0, f"{what}: outside the {path} path's element-wise bound by {over:.3g}"
            if m * n >= 64:
                sp.assert_gemm_close(out, ref, dtype, what)
        stats.gemm(i, out, ref, "empty" if m == 0 else path)
        if r.random() < 0.25:
            _poison()
            deq = ops.int8_dequantize(w, s_arg)
            bad = deq != sp.int8_rounded_dequant(w, s, dtype)
            assert not bool(bad.any()), f"int8_dequantize N={n} K={k} {dtype}: {int(bad.sum())} elements differ"

    _run("int8_gemm", case)
