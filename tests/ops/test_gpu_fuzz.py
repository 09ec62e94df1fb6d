"""Differential fuzzing on the GPU: seeded random shapes the ops accept, against fp64 references.

For each op, QK_FUZZ_CASES (default 1000) cases are drawn with a per-case seed (``case_seed("fuzz",
op, i)``: a failing case is reproduced alone with its index), run through the op and compared with
an independent oracle built from the layout formulas (tests/support.py): bit-exact for unpack and
repack, the documented GEMM tolerances (``support.GEMM_TOL``) for the GEMMs, the one-rounding bound
for dequantization. Every case poisons a small slice of the caching allocator first (0xFF: NaN), so
an output element the kernel never writes is caught by ``assert_all_finite``.

Shapes cover both sides of the small-M switch (fused kernel / dequantize + dense GEMM), zero and
ragged M, leading dimensions, every group size the op accepts (not only quanto's 128), N down to
the layout minimum (4 for AWQ, 64 for Marlin), both activation dtypes for FP8, flat and (1, N)
scales, all three Marlin int4 scale permutations, and repacks with and without a permutation.

Set QK_REPORT_DIR to also write one JSON summary per op (cases, seconds, worst errors, GPU).
"""

from __future__ import annotations

# Fixtures (ops, quanto_patched, recorder) are imported from other test modules and named as parameters.
# ruff: noqa: F811

import json
import os
import random
import time
from pathlib import Path

import pytest
import torch

import support as sp


pytestmark = [pytest.mark.gpu, sp.requires_gpu]

DEV = "cuda"
N_CASES = int(os.environ.get("QK_FUZZ_CASES", "1000"))
MAX_FAILURES = 8
f16, bf16 = torch.float16, torch.bfloat16


def _poison():
    # Small and cheap: the outputs here are well under 1 MiB (small pool) or a few MiB (large pool).
    sp.poison_allocator(large_bytes=16 << 20, small_blocks=8)


def _rows(r: random.Random, limit: int = 16) -> int:
    """M: mostly the fused range (1..limit) and just past it, sometimes 0 or larger."""
    u = r.random()
    if u < 0.04:
        return 0
    if u < 0.70:
        return r.randint(1, limit)
    if u < 0.85:
        return r.randint(limit + 1, limit + 8)
    return r.randint(limit + 9, limit + 64)


def _lead(r: random.Random, m: int):
    """Leading dimensions with m rows in total: (m,) or (a, b) with a * b = m."""
    if m > 1 and r.random() < 0.3:
        divisors = [d for d in range(1, m + 1) if m % d == 0]
        a = r.choice(divisors)
        return (a, m // a)
    return (m,)


def _divisor(r: random.Random, value: int) -> int:
    return r.choice([d for d in range(1, value + 1) if value % d == 0])


class Stats:
    def __init__(self, op):
        self.op, self.cases, self.worst_rel, self.worst_case, self.paths = op, 0, 0.0, None, {}
        self.t0 = time.time()

    def gemm(self, i, out, ref, path):
        self.cases += 1
        self.paths[path] = self.paths.get(path, 0) + 1
        if ref.numel():
            rel = sp.rel_fro(out, ref)
            if rel > self.worst_rel:
                self.worst_rel, self.worst_case = rel, i

    def exact(self, path):
        self.cases += 1
        self.paths[path] = self.paths.get(path, 0) + 1

    def report(self):
        seconds = time.time() - self.t0
        out_dir = os.environ.get("QK_REPORT_DIR")
        if out_dir:
            info = dict(op=self.op, cases=self.cases, seconds=round(seconds, 2), worst_rel_fro=self.worst_rel,
                        worst_case=self.worst_case, paths=self.paths, gpu=torch.cuda.get_device_name(),
                        torch=torch.__version__, date=time.strftime("%Y-%m-%d"))
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / f"fuzz_{self.op}.json").write_text(json.dumps(info, indent=1))
        return seconds


def _run(op_name, case_fn):
    stats = Stats(op_name)
    failures = []
    for i in range(N_CASES):
        try:
            case_fn(i, stats)
        except AssertionError as exc:  # keep going: report several failing cases at once
            failures.append(f"case {i}: {str(exc)[:600]}")
            if len(failures) >= MAX_FAILURES:
                break
    torch.cuda.synchronize()
    stats.report()
    assert not failures, f"{op_name}: {len(failures)} failing case(s) (seeded; rerun one by index):\n" + "\n".join(
        failures)
    assert stats.cases == N_CASES


# ------------------------------------------------------------------------------------- FP8 GEMM


def test_fuzz_fp8_marlin_gemm(ops):
    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "fp8", i))
        m, k, n = _rows(r, ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m), 16 * r.randint(1, 48), 64 * r.randint(1, 6)
        dtype = r.choice([f16, bf16])
        g = sp.generator("fuzz", "fp8", i)
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
        if r.random() < 0.5:
            s_perm = s_perm.reshape(n)  # flat (N,) scales are accepted too
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        what = f"fp8_marlin_gemm M={m} K={k} N={n} {dtype}"
        _poison()
        out = ops.fp8_marlin_gemm(a, packed, s_perm)
        assert out.dtype == dtype and tuple(out.shape) == (m, n), f"{what}: shape {tuple(out.shape)}"
        ref = sp.matmul_reference(a, sp.fp8_dequant_reference(codes, s))
        if m:
            sp.assert_gemm_close(out, ref, dtype, what)
        stats.gemm(i, out, ref, "empty" if m == 0 else ("fused" if m <= ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m else "dequant+gemm"))
        if r.random() < 0.25:  # the dequantize op directly, against its one-rounding bound
            _poison()
            deq = ops.fp8_marlin_dequantize(packed, s_perm)
            ref_w = sp.fp8_dequant_reference(codes, s)
            sp.assert_all_finite(deq, f"fp8 dequantize K={k} N={n}")
            over = sp.max_abs_over(deq, ref_w, sp.fp8_dequant_bound(ref_w, dtype))
            assert over <= 0, f"fp8 dequantize K={k} N={n} {dtype}: off by more than 1 ulp ({over:.3g})"

    _run("fp8_marlin_gemm", case)


# ------------------------------------------------------------------------------------- AWQ int4


def test_fuzz_awq_int4_gemm(ops):
    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "awq", i))
        m = _rows(r)
        lead = _lead(r, m)
        k = 64 * r.randint(1, 16)
        group = r.choice([gs for gs in (32, 64, 128, 256, 512, 1024) if k % gs == 0])
        n = 4 * r.choice([r.randint(1, 8), r.randint(1, 130)])
        g = sp.generator("fuzz", "awq", i)
        codes, s, z, packed = sp.awq_weight(k, n, g, group_size=group)
        x = torch.randn(*lead, k, generator=g, device=DEV, dtype=f16)
        what = f"awq_int4_gemm input {lead}x{k} N={n} group={group}"
        _poison()
        out = ops.awq_int4_gemm(x, packed, s, z)
        assert out.dtype == f16 and tuple(out.shape) == lead + (n,), f"{what}: shape {tuple(out.shape)}"
        ref_w = sp.int4_dequant_reference(codes, s, z)
        ref = sp.matmul_reference(x, ref_w)
        if m:
            sp.assert_gemm_close(out, ref, f16, what)
        stats.gemm(i, out, ref, "empty" if m == 0 else ("fused" if m <= ops.GEMM_FAMILIES["awq_int4"].max_gemv_m else "dequant+gemm"))
        if r.random() < 0.25:
            _poison()
            deq = ops.awq_int4_dequantize(packed, s, z)
            sp.assert_all_finite(deq, f"awq dequantize K={k} N={n}")
            over = sp.max_abs_over(deq, ref_w, sp.int4_dequant_bound(codes, s, ref_w))
            assert over <= 0, f"awq dequantize K={k} N={n} group={group}: outside the fp16 bound ({over:.3g})"

    _run("awq_int4_gemm", case)


# ----------------------------------------------------------------------------------- Marlin int4

def _perm_fn(code):
    """How scales/zeros are stored for each scale_perm code (0 none, 1 block32, 2 block64)."""
    return {0: lambda t: t.contiguous(), 1: sp.permute_block32, 2: sp.permute_block64}[code]


def test_fuzz_marlin_int4_gemm(ops):
    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "marlin", i))
        m = _rows(r)
        lead = _lead(r, m)
        k = 16 * r.randint(1, 64)
        group = 16 * _divisor(r, k // 16)
        n = 64 * r.randint(1, 6)
        perm = r.choice([ops.SCALE_PERM_NONE, ops.SCALE_PERM_BLOCK32, ops.SCALE_PERM_BLOCK64])
        g = sp.generator("fuzz", "marlin", i)
        codes, s, z, packed = sp.mi4_weight(k, n, g, group_size=group)
        sperm, zp = _perm_fn(perm)(s), _perm_fn(perm)(z)
        x = torch.randn(*lead, k, generator=g, device=DEV, dtype=f16)
        what = f"marlin_int4_gemm input {lead}x{k} N={n} group={group} scale_perm={perm}"
        _poison()
        out = ops.marlin_int4_gemm(x, packed, sperm, zp, perm)
        assert out.dtype == f16 and tuple(out.shape) == lead + (n,), f"{what}: shape {tuple(out.shape)}"
        ref_w = sp.int4_dequant_reference(codes, s, z)
        ref = sp.matmul_reference(x, ref_w)
        if m:
            sp.assert_gemm_close(out, ref, f16, what)
        stats.gemm(i, out, ref, "empty" if m == 0 else ("fused" if m <= ops.GEMM_FAMILIES["marlin_int4"].max_gemv_m else "dequant+gemm"))
        if r.random() < 0.25:
            _poison()
            deq = ops.marlin_int4_dequantize(packed, sperm, zp, perm)
            sp.assert_all_finite(deq, f"marlin int4 dequantize K={k} N={n}")
            over = sp.max_abs_over(deq, ref_w, sp.int4_dequant_bound(codes, s, ref_w))
            assert over <= 0, f"marlin int4 dequantize K={k} N={n} group={group} perm={perm}: off ({over:.3g})"

    _run("marlin_int4_gemm", case)


# ------------------------------------------------------------------------------- unpack, repack


def test_fuzz_unpack(ops):
    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "unpack", i))
        bits = r.choice([2, 4])
        ndim = r.randint(1, 3)
        sizes = [0, 1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 100, 129]
        if ndim == 1 and r.random() < 0.8:
            shape = (r.randint(1, 5000),)  # ragged lengths around the kernel's 4-byte words
        else:
            shape = tuple(r.choice(sizes) for _ in range(ndim))
        g = sp.generator("fuzz", "unpack", i)
        packed = torch.randint(0, 256, shape, generator=g, device=DEV, dtype=torch.uint8)
        _poison()
        out = ops.unpack(packed, bits)
        want = (shape[0] * (8 // bits),) + shape[1:]
        assert tuple(out.shape) == want, f"unpack {shape} bits={bits}: shape {tuple(out.shape)}"
        bad = out != sp.unpack_reference(packed, bits)
        assert not bool(bad.any()), f"unpack {shape} bits={bits}: {int(bad.sum())} elements differ"
        stats.exact(f"bits{bits}")

    _run("unpack", case)


def test_fuzz_marlin_repack(ops):
    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "repack", i))
        bits = r.choice([4, 8])
        k, n = 16 * r.randint(1, 24), 64 * r.randint(1, 5)
        g = sp.generator("fuzz", "repack", i)
        if bits == 8:
            codes, pack, layout = sp.random_fp8_codes(n, k, g), sp.fp8_pack_as_int32, sp.fp8_marlin_layout
        else:
            codes, pack, layout = sp.random_int4_codes(n, k, g), sp.int4_pack_as_int32, sp.marlin_int4_layout
        kind = r.choice(["none", "permutation", "any-rows"])
        if kind == "none":
            perm, src = sp.empty_perm(), codes
        else:
            perm = (torch.randperm(k, generator=g, device=DEV) if kind == "permutation"
                    else torch.randint(0, k, (k,), generator=g, device=DEV)).to(torch.int32)
            src = codes[:, perm.long()]  # logical row k reads source row perm[k]
        _poison()
        out = ops.marlin_repack(pack(codes), perm, k, n, bits)
        assert tuple(out.shape) == (k // 16, n * bits // 2)
        bad = out != layout(src)
        assert not bool(bad.any()), f"repack K={k} N={n} bits={bits} perm={kind}: {int(bad.sum())} words differ"
        stats.exact(f"bits{bits}-{kind}")

    _run("marlin_repack", case)
