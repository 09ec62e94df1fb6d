"""GPU tests of the int8 GEMM for larger M (``qk_int8_gemm``: csrc/int8/int8_gemm*.{h,cpp,cu,cuh}, CUTLASS's
mixed-input mainloop): fp16/bf16 activations times quanto's int8 codes as stored ((N, K) row-major,
per-channel scales), converted in registers, scale and bias applied in the epilogue.

Every result is compared with the float64 product of the exact operands (tests/support.py) on fresh random
data per case, with the element-wise bound of the fused int8 paths (exact products, fp32 sums, one rounding)
and the suite's relative tolerance; outputs come from a poisoned allocator. The kernel runs on sm_90 GPUs
with a library built for sm_90a with CUTLASS's headers; elsewhere the module is skipped with the reason.

  * every configuration (QK_INT8_GEMM_TILE: 64 / 128 tokens per tile with the persistent or the stream-K
    schedule, 256 tokens in two-block clusters or stream-K, and the plan's own choice) over ragged M, N a
    multiple of 8 but not of the 128-channel tile, K not a multiple of a 64-deep stage; bit-identical from
    call to call;
  * bias in the epilogue, a bias it cannot read (another dtype, a misaligned start: added afterwards),
    views and misaligned activations, misaligned and flat (N,) scales;
  * shapes it cannot take are refused when forced and go elsewhere by the rule;
  * the dispatch rule uses it exactly where ops/_int8.py says; CUDA graph capture and replay;
  * QK_FUZZ_CASES (default 1000) seeded random cases with the path forced.
"""

from __future__ import annotations

import random

import pytest
import torch

import support as sp
from ops.test_gpu_fuzz import N_CASES, _poison, _run
from ops.test_gpu_int8_mm import _case as _mm_case
from ops.test_gpu_int8_mm import _check

DEV = "cuda"
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
CONFIGS = ["auto", "64", "64s", "128", "128s", "256c2", "256s"]
# (M, K, N): one 16-deep slice, K % 64 = 16 / 48, N % 128 = 8 / 64 / 72, M around every token tile and
# above one wave of tiles.
SHAPES = [(1, 16, 8), (7, 48, 136), (64, 112, 320), (65, 1040, 584), (129, 272, 128), (256, 64, 1032),
          (300, 4096, 264), (1000, 528, 3072), (4097, 256, 200)]


@pytest.fixture(autouse=True)
def _needs_kernel(ops):
    if not sp.HAS_GPU:
        pytest.skip(sp._SKIP_REASON)
    if not ops.GEMM_FAMILIES["int8"].gemm.available(0):
        pytest.skip("the int8 GEMM kernel needs an sm_90 GPU and a library built with sm_90a and CUTLASS's headers "
                    f"(this GPU: sm_{''.join(map(str, torch.cuda.get_device_capability(0)))})")


def _case(m, k, n, dtype, *tag):
    """Fresh weight, scales, activations and bias (the medium-M kernel's tests' maker, seeded apart)."""
    return _mm_case(m, k, n, dtype, "gemm", *tag)


def _run_gemm(ops, x, w, s, bias=None):
    from quanto_kernels.ops import _int8

    n, k = w.shape
    sp.poison_allocator()
    with ops.force_path("gemm"):
        return _int8.matmul(x, w, s, n, k, bias)


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "M{}-K{}-N{}".format(*c))
def test_matches_the_exact_product_and_repeats_bit_for_bit(ops, native_calls, monkeypatch, case, config, dtype):
    m, k, n = case
    if config != "auto":
        monkeypatch.setenv("QK_INT8_GEMM_TILE", config)
    w, s, x, bias = _case(m, k, n, dtype, config)
    what = f"int8_gemm {m}x{k}x{n} config={config} {dtype}"
    native_calls.clear()
    out = _run_gemm(ops, x, w, s)
    again = _run_gemm(ops, x, w, s)
    with_bias = _run_gemm(ops, x, w, s, bias)
    torch.cuda.synchronize()
    assert native_calls.names == ["int8_gemm"] * 3, native_calls.names
    assert torch.equal(out.view(torch.int16), again.view(torch.int16)), f"{what}: repeat differs"
    _check(out, x, w, s, dtype, what)
    _check(with_bias, x, w, s, dtype, what + " + bias", bias)


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_views_misaligned_operands_and_biases_it_cannot_read(ops, native_calls, dtype):
    """Strided and misaligned activations are copied, misaligned or flat scales work, a bias of another
    dtype or with a misaligned start is added after the kernel; every variant gives the exact product."""
    m, k, n = 300, 384, 256
    w, s, x, bias = _case(m, k, n, dtype, "views")
    wide = torch.randn(m, 2 * k, device=DEV, dtype=dtype)
    wide[:, ::2] = x
    s_mis = sp.misaligned(s.reshape(n))
    b_mis = sp.misaligned(bias)
    for what, xv in {"strided view": wide[:, ::2], "misaligned": sp.misaligned(x), "contiguous": x}.items():
        for scales in (s, s.reshape(n), s_mis):
            for b in (bias, bias.float(), b_mis):
                native_calls.clear()
                out = _run_gemm(ops, xv, w, scales, b)
                assert native_calls.names[-1:] == ["int8_gemm"], (what, native_calls.names)
                _check(out, x, w, s, dtype, f"{what} scales {tuple(scales.shape)} bias {b.dtype} {dtype}", b.to(dtype))


@pytest.mark.gpu
@sp.requires_gpu
def test_shapes_it_cannot_take_are_refused_when_forced(ops, native_calls):
    dtype = torch.bfloat16
    for n, k in ((100, 256), (128, 40)):
        w, s, x, _ = _case(600, k, n, dtype, "refused")
        with ops.force_path("gemm"), pytest.raises(ValueError, match=r"^force_path\('gemm'\): the int8 GEMM kernel"):
            ops.int8_gemm(x, w, s)
        native_calls.clear()
        out = ops.int8_gemm(x, w, s)
        assert "int8_gemm" not in native_calls.names, native_calls.names
        sp.assert_gemm_close(out, sp.matmul_reference(x, sp.int8_dequant_reference(w, s)), dtype, f"rule N={n} K={k}")


@pytest.mark.gpu
@sp.requires_gpu
def test_rule_serves_the_measured_region(ops, native_calls):
    """Without an override: M >= 65 on weights of >= 2^25 elements, M >= 512 on smaller ones, past 1024 rows
    not where the 256-token tile grid has two or more waves and fills < 90 % of its last (ops/_int8.py:
    gemm_rule); nothing below 65 rows."""
    from quanto_kernels.ops import _int8

    k = 256
    big_n = _int8.TC_MIN_WEIGHT // k
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    routes = [(64, big_n, None), (65, big_n, None), (256, 128, None), (512, 128, None), (1024, 128, None),
              (1025, 128, None), (2048, 3072, None), (2048, 4096, None), (4096, 3072, None), (4608, 3072, None)]
    if sms == 132:  # what the rule gives on the H200 it was measured on
        assert [m >= _int8.GEMM_FROM_M and _int8.gemm_rule(m, n, k, sms) for m, n, _ in routes] == [
            False, True, False, True, True, True, True, True, True, False]
    for m, n, _ in routes:
        want = m >= _int8.GEMM_FROM_M and _int8.gemm_rule(m, n, k, sms)
        w, s, _, _ = _case(1, k, n, torch.bfloat16, "rule")
        x = torch.randn(m, k, device=DEV, dtype=torch.bfloat16)
        native_calls.clear()
        out = ops.int8_gemm(x, w, s)
        assert ("int8_gemm" in native_calls.names) == want, (m, n, native_calls.names)
        sp.assert_gemm_close(out, sp.matmul_reference(x, sp.int8_dequant_reference(w, s)), torch.bfloat16,
                             f"rule M={m} N={n}")


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("config", ["auto", "64s", "256c2"])
def test_graph_capture_and_replay_with_new_inputs(ops, monkeypatch, config):
    """Captured once, replayed with new activations (the stream-K schedule zeroes its workspace inside the
    graph)."""
    if config != "auto":
        monkeypatch.setenv("QK_INT8_GEMM_TILE", config)
    dtype = torch.bfloat16
    m, k, n = 200, 2048, 264
    w, s, _, bias = _case(m, k, n, dtype, "graph", config)
    static_x = torch.zeros(m, k, device=DEV, dtype=dtype)
    from quanto_kernels.ops import _int8

    def fn():
        with ops.force_path("gemm"):
            return _int8.matmul(static_x, w, s, n, k, bias)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    for rep in range(3):
        x = torch.randn(m, k, generator=sp.generator("int8-gemm-graph", rep, config), device=DEV, dtype=dtype)
        static_x.copy_(x)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        _check(out, x, w, s, dtype, f"graph replay {rep} {config}", bias)
        assert torch.equal(out, fn()), "replay differs from the eager call"


@pytest.mark.gpu
@sp.requires_gpu
def test_fuzz_int8_gemm(ops):
    """Seeded random products on the forced GEMM path: M 1..5000, N a multiple of 8 up to 2048, K a multiple
    of 16 up to 2048, either dtype and scale shape, with or without bias, a random configuration."""
    from quanto_kernels.ops import _int8

    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "int8-gemm", i))
        m = r.choice([r.randint(1, 64), r.randint(1, 600), r.randint(1, 5000)])
        n = 8 * r.choice([1, 3, 16, 17, r.randint(1, 256)])
        k = 16 * r.choice([1, 3, 4, 5, 9, r.randint(1, 128)])
        dtype = r.choice([torch.float16, torch.bfloat16])
        config = r.choice(["", "", "64", "64s", "128", "128s", "256c2", "256s"])
        g = sp.generator("fuzz", "int8-gemm", i)
        w, s = sp.random_int8_weight(n, k, dtype, g)
        s_arg = s.reshape(n) if r.random() < 0.5 else s
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        bias = torch.randn(n, generator=g, device=DEV, dtype=dtype) if r.random() < 0.5 else None
        what = f"int8_gemm M={m} N={n} K={k} {dtype} config {config!r} bias {bias is not None}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("QK_INT8_GEMM_TILE", config)
            _poison()
            with ops.force_path("gemm"):
                out = _int8.matmul(a, w, s_arg, n, k, bias)
        _check(out, a, w, s, dtype, what, bias)
        stats.gemm(i, out, sp.matmul_reference(a, sp.int8_dequant_reference(w, s), bias), "gemm")

    assert N_CASES >= 1
    _run("int8_gemm", case)
