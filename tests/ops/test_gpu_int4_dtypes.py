"""GPU tests of the int4 ops in both activation dtypes (fp16, bf16) and both layouts (AWQ v2, Marlin
int4): the one kernel template behind ``awq_int4_*`` and ``marlin_int4_*`` (csrc/int4/).

Every result is compared with a float64 oracle built from the layout formulas (tests/support.py) on
fresh random data per case (codes 0..15, non-zero scales and zeros); outputs come from a poisoned
allocator (support.poison_allocator), so an element a kernel never writes reads as NaN. Both paths
of the dispatch rule are forced: the fused kernel (``gemv``, M <= its limit) and dequantize + matmul
(``dequant``). tests/ops/test_gpu_ops.py keeps the wider fp16 sweeps; this module covers what the
dtype adds:

  * TestGemm: odd and even shapes on both sides of the fused-kernel limit (K/128 odd, K % 128 = 64
    for AWQ, N not a multiple of 8, one group, split-K shapes), both dtypes, both layouts;
  * TestDequantize: the dense weight within one rounding in the dtype, every Marlin scale order;
  * TestEveryCode: each code 0..15 in every group decodes to exactly the correctly rounded S*q + Z
    (the integer-to-float trick of csrc/int4/act.cuh, checked bit for bit);
  * TestOpcheck: torch.library.opcheck of the four int4 ops with bf16 tensors.
"""

from __future__ import annotations

import pytest
import torch

import support as sp

DEV = "cuda"
pytestmark = [pytest.mark.gpu, sp.requires_gpu]
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
PATHS = ["gemv", "dequant"]

# (M, K, N). M up to the fused limit (16) for "gemv"; the dequant path takes every M.
AWQ_SHAPES = [(1, 128, 128), (3, 192, 132), (7, 384, 260), (8, 256, 128), (9, 640, 388), (16, 3072, 1024),
              (5, 4096, 12288), (13, 128, 4100)]
MI4_SHAPES = [(1, 128, 64), (3, 256, 192), (7, 384, 320), (8, 128, 256), (9, 1152, 128), (16, 3072, 1024),
              (5, 4096, 12288)]
LARGE_M = [17, 33, 300]


def _id(case):
    m, k, n = case
    return f"M{m}-K{k}-N{n}"


def _mi4_perm(ops, groups):
    code = ops.marlin_int4_scale_perm(groups)
    return code, (sp.permute_block32 if code == ops.SCALE_PERM_BLOCK32 else sp.permute_block64)


def _run_awq(ops, case, dtype, path, tag):
    m, k, n = case
    g = sp.generator("int4-dtype-awq", tag, m, k, n, str(dtype), path)
    codes, s, z, packed = sp.awq_weight(k, n, g, dtype=dtype)
    x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    sp.poison_allocator()
    with ops.force_path(path):
        out = ops.awq_int4_gemm(x, packed, s, z)
    return out, x, sp.int4_dequant_reference(codes, s, z)


def _run_mi4(ops, case, dtype, path, tag):
    m, k, n = case
    g = sp.generator("int4-dtype-mi4", tag, m, k, n, str(dtype), path)
    codes, s, z, packed = sp.mi4_weight(k, n, g, dtype=dtype)
    perm_code, perm = _mi4_perm(ops, k // 128)
    x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    sp.poison_allocator()
    with ops.force_path(path):
        out = ops.marlin_int4_gemm(x, packed, perm(s), perm(z), perm_code)
    return out, x, sp.int4_dequant_reference(codes, s, z)


class TestGemm:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("path", PATHS)
    @pytest.mark.parametrize("case", AWQ_SHAPES, ids=_id)
    def test_awq(self, ops, case, path, dtype):
        out, x, ref_w = _run_awq(ops, case, dtype, path, "gemm")
        m, _, n = case
        assert out.dtype == dtype and tuple(out.shape) == (m, n)
        sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), dtype, f"awq {path} {_id(case)} {dtype}")

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("path", PATHS)
    @pytest.mark.parametrize("case", MI4_SHAPES, ids=_id)
    def test_marlin(self, ops, case, path, dtype):
        out, x, ref_w = _run_mi4(ops, case, dtype, path, "gemm")
        m, _, n = case
        assert out.dtype == dtype and tuple(out.shape) == (m, n)
        sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), dtype, f"marlin {path} {_id(case)} {dtype}")

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("m", LARGE_M)
    def test_above_the_fused_limit_takes_the_dequant_path(self, ops, native_calls, m, dtype):
        k, n = 384, 256
        for layout, run in (("awq", _run_awq), ("marlin", _run_mi4)):
            native_calls.clear()
            out, x, ref_w = run(ops, (m, k, n), dtype, None, "large-m")
            sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), dtype, f"{layout} M={m} {dtype}")
            assert native_calls.names == [f"{layout}_int4_dequantize"], native_calls.names
            assert all(kw["dtype"] == ops_dtype_code(dtype) for _, kw in native_calls.calls if "dtype" in kw)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_small_m_reaches_the_fused_kernel_with_the_dtype_code(self, ops, native_calls, dtype):
        for layout, run in (("awq", _run_awq), ("marlin", _run_mi4)):
            native_calls.clear()
            out, x, ref_w = run(ops, (4, 256, 128), dtype, None, "small-m")
            sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), dtype, f"{layout} M=4 {dtype}")
            assert native_calls.names == [f"{layout}_int4_gemv"], native_calls.names
            (_, kw), = [c for c in native_calls.calls if c[0] == f"{layout}_int4_gemv"]
            assert kw["dtype"] == ops_dtype_code(dtype)


def ops_dtype_code(dtype):
    from quanto_kernels._native import abi

    return {torch.float16: abi.DTYPE_FLOAT16, torch.bfloat16: abi.DTYPE_BFLOAT16}[dtype]


class TestDequantize:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("k,n", [(128, 128), (192, 132), (640, 260), (4096, 3072)])
    def test_awq(self, ops, k, n, dtype):
        g = sp.generator("int4-dtype-awq-deq", k, n, str(dtype))
        codes, s, z, packed = sp.awq_weight(k, n, g, dtype=dtype)
        sp.poison_allocator()
        out = ops.awq_int4_dequantize(packed, s, z)
        assert out.dtype == dtype and tuple(out.shape) == (n, k)
        sp.assert_all_finite(out, "awq_int4_dequantize")
        ref = sp.int4_dequant_reference(codes, s, z)
        over = sp.max_abs_over(out, ref, sp.int4_dequant_bound(codes, s, ref))
        assert over <= 0, f"awq {dtype}: dequantized weight outside one rounding (excess {over:.3g})"

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("perm_name", ["none", "block32", "block64"])
    @pytest.mark.parametrize("k,n", [(128, 64), (384, 192), (4096, 1024)])
    def test_marlin(self, ops, k, n, perm_name, dtype):
        g = sp.generator("int4-dtype-mi4-deq", k, n, perm_name, str(dtype))
        codes, s, z, packed = sp.mi4_weight(k, n, g, dtype=dtype)
        perm = {"none": lambda t: t.contiguous(), "block32": sp.permute_block32, "block64": sp.permute_block64}[perm_name]
        code = {"none": ops.SCALE_PERM_NONE, "block32": ops.SCALE_PERM_BLOCK32, "block64": ops.SCALE_PERM_BLOCK64}
        sp.poison_allocator()
        out = ops.marlin_int4_dequantize(packed, perm(s), perm(z), code[perm_name])
        assert out.dtype == dtype and tuple(out.shape) == (n, k)
        sp.assert_all_finite(out, "marlin_int4_dequantize")
        ref = sp.int4_dequant_reference(codes, s, z)
        over = sp.max_abs_over(out, ref, sp.int4_dequant_bound(codes, s, ref))
        assert over <= 0, f"marlin {perm_name} {dtype}: dequantized weight outside one rounding (excess {over:.3g})"


def _every_code_weight(k, n, dtype, g):
    """codes where each run of 16 consecutive k of a row holds every code 0..15 once (a random rotation
    per row), and random scales and zeros."""
    offset = torch.randint(0, 16, (n, 1), generator=g, device=DEV)
    codes = ((torch.arange(k, device=DEV).reshape(1, k) + offset) % 16).to(torch.uint8)
    s, z = sp.random_group_params(k // 128, n, g, dtype=dtype)
    return codes, s, z


class TestEveryCode:
    """The dequantize kernels round S*q + Z once (a fused multiply-add of the exactly decoded code), so
    each element equals the float64 value rounded to the dtype, bit for bit. Below the dtype's smallest
    normal number the one-rounding bound is used instead (a flush to zero there would be harmless)."""

    @staticmethod
    def _check(out, codes, s, z, dtype, what):
        ref = sp.int4_dequant_reference(codes, s, z)
        assert codes.unique().numel() == 16
        normal = ref.abs() >= torch.finfo(dtype).tiny
        exact = out.double() == ref.to(dtype).double()
        bad = normal & ~exact
        assert not bool(bad.any()), (
            f"{what}: {int(bad.sum())} elements differ from the correctly rounded S*q + Z; first at "
            f"{tuple(bad.nonzero()[0].tolist())}")
        tiny = ~normal
        if bool(tiny.any()):
            over = sp.max_abs_over(out[tiny], ref[tiny], sp.int4_dequant_bound(codes, s, ref)[tiny])
            assert over <= 0, f"{what}: values below the smallest normal number outside one rounding ({over:.3g})"

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_awq(self, ops, dtype):
        k, n = 384, 260
        codes, s, z = _every_code_weight(k, n, dtype, sp.generator("int4-every-code-awq", str(dtype)))
        sp.poison_allocator()
        out = ops.awq_int4_dequantize(sp.awq_v2_layout(codes), s, z)
        self._check(out, codes, s, z, dtype, f"awq {dtype}")

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_marlin(self, ops, dtype):
        k, n = 384, 192
        codes, s, z = _every_code_weight(k, n, dtype, sp.generator("int4-every-code-mi4", str(dtype)))
        sp.poison_allocator()
        out = ops.marlin_int4_dequantize(sp.marlin_int4_layout(codes), sp.permute_block64(s), sp.permute_block64(z),
                                         ops.SCALE_PERM_BLOCK64)
        self._check(out, codes, s, z, dtype, f"marlin {dtype}")

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_fused_kernel_on_every_code(self, ops, dtype):
        """The fused kernels decode in registers with the same policy: one-hot activations pick single
        weight columns, so out[m, n] is Wd[n, k_m] rounded once more (exact for a value of the dtype)."""
        k, n = 384, 256
        codes, s, z = _every_code_weight(k, n, dtype, sp.generator("int4-every-code-fused", str(dtype)))
        cols = torch.tensor([0, 5, 17, 130, 255, 383, 200, 64], device=DEV)
        x = torch.zeros(len(cols), k, device=DEV, dtype=dtype)
        x[torch.arange(len(cols)), cols] = 1.0
        want = sp.int4_dequant_reference(codes, s, z)[:, cols].t().to(dtype)
        perm_code, perm = _mi4_perm(ops, k // 128)
        for layout, run in (("awq", lambda: ops.awq_int4_gemm(x, sp.awq_v2_layout(codes), s, z)),
                            ("marlin", lambda: ops.marlin_int4_gemm(x, sp.marlin_int4_layout(codes), perm(s), perm(z),
                                                                    perm_code))):
            sp.poison_allocator()
            with ops.force_path("gemv"):
                out = run()
            assert torch.equal(out, want), f"{layout} {dtype}: fused product of one-hot rows != dequantized columns"


def _opcheck_cases():
    k, n, dtype = 256, 128, torch.bfloat16

    def awq_deq(ops):
        _, s, z, packed = sp.awq_weight(k, n, sp.generator("oc-bf16-ad"), dtype=dtype)
        return (packed, s, z)

    def awq_gemm(shape):
        def build(ops):
            g = sp.generator("oc-bf16-ag", shape)
            _, s, z, packed = sp.awq_weight(k, n, g, dtype=dtype)
            return (torch.randn(*shape, k, generator=g, device=DEV, dtype=dtype), packed, s, z)
        return build

    def mi4_deq(ops):
        _, s, z, packed = sp.mi4_weight(k, n, sp.generator("oc-bf16-md"), dtype=dtype)
        return (packed, sp.permute_block64(s), sp.permute_block64(z), ops.SCALE_PERM_BLOCK64)

    def mi4_gemm(shape):
        def build(ops):
            g = sp.generator("oc-bf16-mg", shape)
            _, s, z, packed = sp.mi4_weight(k, n, g, dtype=dtype)
            x = torch.randn(*shape, k, generator=g, device=DEV, dtype=dtype)
            return (x, packed, sp.permute_block64(s), sp.permute_block64(z), ops.SCALE_PERM_BLOCK64)
        return build

    return [
        ("awq-dequant-bf16", "awq_int4_dequantize", awq_deq),
        ("awq-gemm-bf16-1", "awq_int4_gemm", awq_gemm((1,))),
        ("awq-gemm-bf16-2x3", "awq_int4_gemm", awq_gemm((2, 3))),
        ("awq-gemm-bf16-100", "awq_int4_gemm", awq_gemm((100,))),
        ("marlin-int4-dequant-bf16", "marlin_int4_dequantize", mi4_deq),
        ("marlin-int4-gemm-bf16-1", "marlin_int4_gemm", mi4_gemm((1,))),
        ("marlin-int4-gemm-bf16-100", "marlin_int4_gemm", mi4_gemm((100,))),
    ]


_OPCHECK = _opcheck_cases()


class TestOpcheck:
    @pytest.mark.parametrize("name,op,build", _OPCHECK, ids=[c[0] for c in _OPCHECK])
    def test_opcheck(self, ops, name, op, build):
        overload = getattr(torch.ops.quanto_kernels, op).default
        torch.library.opcheck(overload, build(ops), atol=2e-2, rtol=3e-2)
