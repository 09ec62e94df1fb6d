"""GPU tests of the weight-only int8 tensor-core kernel (``qk_int8_mm``, csrc/int8/int8_mm_sm90.cu):
fp16/bf16 activations times quanto's int8 codes as stored ((N, K) row-major, per-channel scales),
converted in registers.

Every result is compared with the float64 product of the exact operands (codes times scales,
tests/support.py) on fresh random data per case, with the element-wise bound of the fused int8 paths
(``support.int8_gemm_bound``: exact products, fp32 sums, one rounding) and the suite's relative
tolerance; outputs come from a poisoned allocator, so an element the kernel never writes reads as NaN.
The kernel runs on sm_90 GPUs with a library built for sm_90a; elsewhere the module is skipped with the
reason.

  * every tile configuration (32, 64, 128 tokens per warpgroup, forced through QK_INT8_MM_TILE) over
    ragged M, K not a multiple of a pipeline stage, N with an odd number of 64-channel tiles;
  * split-K, two blocks per multiprocessor and both stage depths (QK_INT8_MM_SPLITS, _BLOCKS_PER_SM,
    _SLICES, and the planner's own choice): within the bound, bit-identical from call to call;
  * bias in the epilogue, bias of another dtype (added afterwards), views and misaligned activations,
    flat (N,) scales;
  * shapes the kernel cannot take are refused when forced and go elsewhere by the rule;
  * the dispatch rule uses it exactly in its measured region; CUDA graph capture and replay;
  * QK_FUZZ_CASES (default 1000) seeded random cases with the path forced.
"""

from __future__ import annotations

import random

import pytest
import torch

import support as sp
from ops.test_gpu_fuzz import N_CASES, _poison, _run

DEV = "cuda"
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]

# (M, K, N): K = one slice (less than a stage), K % 64 = 48 / 16, odd column-tile counts (N / 64 = 3, 5, 9),
# M around every tile size (64, 128, 256 tokens per block) and above the grid's first row.
SHAPES = [(1, 16, 64), (17, 48, 192), (63, 112, 320), (64, 256, 128), (65, 320, 576), (128, 1040, 64),
          (129, 64, 192), (255, 4096, 256), (300, 512, 1024), (513, 272, 320), (1000, 128, 4160),
          (2049, 256, 384)]
TILES = ["auto", "32", "64", "128"]


@pytest.fixture(autouse=True)
def _needs_kernel(ops):
    reason = sp.tc_skip_reason(ops, "int8")
    if reason is not None:
        pytest.skip(reason)


def _case(m, k, n, dtype, *tag):
    g = sp.generator("int8-mm", m, k, n, str(dtype), *tag)
    w, s = sp.random_int8_weight(n, k, dtype, g)
    x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    bias = torch.randn(n, generator=g, device=DEV, dtype=dtype)
    return w, s, x, bias


def _run_tc(ops, x, w, s, bias=None):
    """The family's product with the tensor-core path forced (bias through the same dispatch as layers)."""
    from quanto_kernels.ops import _int8

    n, k = w.shape
    sp.poison_allocator()
    with ops.force_path("tc"):
        return _int8.matmul(x, w, s, n, k, bias)


def _check(out, x, w, s, dtype, what, bias=None):
    wd = sp.int8_dequant_reference(w, s)
    ref = sp.matmul_reference(x, wd, bias)
    sp.assert_all_finite(out, what)
    if bias is None:  # the element-wise bound is stated for the bare product
        over = sp.max_abs_over(out, ref, sp.int8_gemm_bound(x, wd, dtype, "gemv"))
        assert over <= 0, f"{what}: outside the fused path's element-wise bound by {over:.3g}"
    if out.numel() >= 64:
        sp.assert_gemm_close(out, ref, dtype, what)


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "M{}-K{}-N{}".format(*c))
def test_matches_the_exact_product(ops, native_calls, monkeypatch, case, tile, dtype):
    m, k, n = case
    if tile != "auto":
        monkeypatch.setenv("QK_INT8_MM_TILE", tile)
    w, s, x, bias = _case(m, k, n, dtype, tile)
    what = f"int8_mm {m}x{k}x{n} tile={tile} {dtype}"
    native_calls.clear()
    out = _run_tc(ops, x, w, s)
    with_bias = _run_tc(ops, x, w, s, bias)
    torch.cuda.synchronize()
    assert native_calls.names == ["int8_mm"] * 2, native_calls.names
    _check(out, x, w, s, dtype, what)
    _check(with_bias, x, w, s, dtype, what + " + bias", bias)


# (tile, splits, blocks per multiprocessor, slices per stage); "auto" leaves the choice to the planner.
# Several splits, one stage per split, more splits than fit at once, two blocks per multiprocessor split
# and unsplit, both stage depths of the 32-token tile.
SPLIT_CONFIGS = [("auto", "auto", "auto", "auto"), ("32", "3", "2", "auto"), ("32", "2", "1", "auto"),
                 ("64", "5", "auto", "auto"), ("128", "7", "auto", "auto"), ("32", "64", "1", "auto"),
                 ("32", "1", "2", "auto"), ("64", "1", "2", "auto"), ("32", "auto", "auto", "4"),
                 ("32", "3", "2", "4")]
SPLIT_SHAPES = [(1, 4096, 256), (64, 1040, 576), (100, 4096, 320), (300, 2048, 192), (17, 48, 192)]


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", SPLIT_CONFIGS, ids=lambda c: "t{}-s{}-b{}-k{}".format(*c))
@pytest.mark.parametrize("case", SPLIT_SHAPES, ids=lambda c: "M{}-K{}-N{}".format(*c))
def test_split_k_is_exact_and_deterministic(ops, native_calls, monkeypatch, case, config, dtype):
    m, k, n = case
    from quanto_kernels.ops import _int8

    for name, value in zip(_int8.TC_PLAN_ENV, config):
        if value != "auto":
            monkeypatch.setenv(name, value)
    w, s, x, _ = _case(m, k, n, dtype, *config)
    native_calls.clear()
    out = _run_tc(ops, x, w, s)
    again = _run_tc(ops, x, w, s)
    torch.cuda.synchronize()
    assert native_calls.names == ["int8_mm"] * 2, native_calls.names
    assert torch.equal(out.view(torch.int16), again.view(torch.int16)), "split-K sums must not depend on timing"
    _check(out, x, w, s, dtype, f"int8_mm {m}x{k}x{n} config={config} {dtype}")


@pytest.mark.gpu
@sp.requires_gpu
def test_planner_splits_small_grids_only(ops):
    from quanto_kernels.ops import _int8

    dev = torch.cuda.current_device()
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    assert _int8.FAMILY.tc.workspace_bytes(64, 256, 4096, dev) > 0
    assert _int8.FAMILY.tc.workspace_bytes(4096, 128 * sms, 4096, dev) == 0


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_views_misaligned_rows_flat_scales_and_foreign_bias(ops, native_calls, dtype):
    """The path copies what the tensor map cannot read (a strided view, a misaligned start), takes (N,)
    scales, and adds a bias of another dtype after the kernel; every variant gives the exact product."""
    m, k, n = 200, 384, 256
    w, s, x, bias = _case(m, k, n, dtype, "views")
    wide = torch.randn(m, 2 * k, device=DEV, dtype=dtype)
    wide[:, ::2] = x
    variants = {"strided view": wide[:, ::2], "misaligned": sp.misaligned(x), "contiguous": x}
    for what, xv in variants.items():
        for scales in (s, s.reshape(n)):
            native_calls.clear()
            out = _run_tc(ops, xv, w, scales, bias.float())
            assert native_calls.names[-1:] == ["int8_mm"], (what, native_calls.names)
            _check(out, x, w, s, dtype, f"{what} scales {tuple(scales.shape)} {dtype}", bias.float())


@pytest.mark.gpu
@sp.requires_gpu
def test_shapes_it_cannot_take_are_refused_when_forced(ops, native_calls):
    """N % 64 != 0 or K % 16 != 0: a forced call names what is wrong; the rule takes another path for them
    and still gives the exact product. (A misaligned weight is refused by the op's own checks, on every path.)"""
    dtype = torch.bfloat16
    for n, k in ((100, 256), (128, 40)):
        w, s, x, _ = _case(64, k, n, dtype, "refused")
        with ops.force_path("tc"), pytest.raises(ValueError, match=r"^force_path\('tc'\): the int8 tensor-core"):
            ops.int8_gemm(x, w, s)
        native_calls.clear()
        out = ops.int8_gemm(x, w, s)
        assert "int8_mm" not in native_calls.names, native_calls.names
        sp.assert_gemm_close(out, sp.matmul_reference(x, sp.int8_dequant_reference(w, s)), dtype,
                             f"rule N={n} K={k}")


@pytest.mark.gpu
@sp.requires_gpu
def test_rule_serves_the_measured_region(ops, native_calls):
    """Without an override the kernel runs for from_m <= M <= to_m on weights of >= min_weight elements,
    and nowhere else; where the larger-M GEMM kernel is available, it takes the rows its rule gives it."""

    tc, gemm = ops.GEMM_FAMILIES["int8"].tc, ops.GEMM_FAMILIES["int8"].gemm
    k = 256
    for n in (tc.min_weight // k, 128):
        w, s, _, _ = _case(1, k, n, torch.bfloat16, "rule")
        for m in (1, tc.from_m - 1, tc.from_m, tc.to_m, tc.to_m + 1):
            x = torch.randn(m, k, device=DEV, dtype=torch.bfloat16)
            native_calls.clear()
            out = ops.int8_gemm(x, w, s)
            want = tc.from_m <= m <= tc.to_m and n * k >= tc.min_weight
            want = want and not (gemm.available(0) and gemm.serves(m, n, k, 0))
            assert ("int8_mm" in native_calls.names) == want, (m, n, native_calls.names)
            sp.assert_gemm_close(out, sp.matmul_reference(x, sp.int8_dequant_reference(w, s)), torch.bfloat16,
                                 f"rule M={m} N={n}")


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_graph_capture_and_replay_with_new_inputs(ops, dtype):
    m, k, n = 96, 1024, 320
    w, s, _, bias = _case(m, k, n, dtype, "graph")
    static_x = torch.zeros(m, k, device=DEV, dtype=dtype)
    from quanto_kernels.ops import _int8

    def fn():
        with ops.force_path("tc"):
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
        x = torch.randn(m, k, generator=sp.generator("int8-mm-graph", rep, str(dtype)), device=DEV, dtype=dtype)
        static_x.copy_(x)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        _check(out, x, w, s, dtype, f"graph replay {rep} {dtype}", bias)
        assert torch.equal(out, fn()), "replay differs from the eager call"


@pytest.mark.gpu
@sp.requires_gpu
def test_fuzz_int8_tc(ops):
    """Seeded random products on the forced tensor-core path: M 1..600, N a multiple of 64 up to 1536,
    K a multiple of 16 up to 2048, either dtype and scale shape, forced tile/split/stage configurations."""
    from quanto_kernels.ops import _int8

    def case(i, stats):
        r = random.Random(sp.case_seed("fuzz", "int8-tc", i))
        m = r.choice([r.randint(1, 64), r.randint(1, 300), r.randint(1, 600)])
        n = 64 * r.choice([1, 2, 3, 5, r.randint(1, 24)])
        k = 16 * r.choice([1, 3, 4, 5, 9, r.randint(1, 128)])
        dtype = r.choice([torch.float16, torch.bfloat16])
        env = {"QK_INT8_MM_TILE": r.choice(["", "32", "64", "128"]), "QK_INT8_MM_SPLITS": r.choice(["", "", "2", "3"]),
               "QK_INT8_MM_BLOCKS_PER_SM": r.choice(["", "", "1", "2"]), "QK_INT8_MM_SLICES": r.choice(["", "", "4"])}
        g = sp.generator("fuzz", "int8-tc", i)
        w, s = sp.random_int8_weight(n, k, dtype, g)
        s_arg = s.reshape(n) if r.random() < 0.5 else s
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        what = f"int8_mm M={m} N={n} K={k} {dtype} env {env}"
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            _poison()
            with ops.force_path("tc"):
                out = _int8.matmul(a, w, s_arg, n, k)
        _check(out, a, w, s, dtype, what)
        stats.gemm(i, out, sp.matmul_reference(a, sp.int8_dequant_reference(w, s)), "tc")

    assert N_CASES >= 1
    _run("int8_mm", case)
