"""GPU tests of the weight-only FP8 tensor-core kernel (``qk_fp8_marlin_mm``, csrc/fp8_marlin/fp8_mm_sm90.cu):
fp16/bf16 activations times e4m3 weights in quanto's Marlin layout, decoded in registers.

Every result is compared with the float64 product of the exact operands (the codes' values times the
scales, tests/support.py) on fresh random data per case; outputs come from a poisoned allocator, so an
element the kernel never writes reads as NaN. The kernel runs on sm_90 GPUs with a library built for
sm_90a; elsewhere the module is skipped with the reason.

  * every tile configuration (32, 64, 128 tokens per warpgroup, forced through QK_FP8_MM_TILE) over
    ragged M, K not a multiple of a pipeline stage, N with an odd number of 64-channel tiles;
  * split-K, two blocks per multiprocessor and both stage depths (forced through QK_FP8_MM_SPLITS,
    _BLOCKS_PER_SM, _SLICES, and the planner's own choice): exact, bit-identical from call to call,
    workspace sized by the plan;
  * bias in the epilogue, bias of another dtype (added afterwards), views and misaligned activations;
  * NaN codes give NaN in their channel only;
  * the dispatch rule uses it exactly in its measured region, and the forced path is the one launched;
  * CUDA graph capture and replay.
"""

from __future__ import annotations

import pytest
import torch

import support as sp

DEV = "cuda"
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]

# (M, K, N): K = one slice (less than a stage), K % 64 = 48, odd column-tile counts (N / 64 = 3, 5, 9),
# M around every tile size (64, 128, 256 tokens per block) and above the grid's first row.
SHAPES = [(1, 16, 64), (17, 48, 192), (63, 112, 320), (64, 256, 128), (65, 320, 576), (128, 1040, 64),
          (129, 64, 192), (255, 4096, 256), (300, 512, 1024), (513, 272, 320), (1000, 128, 4160),
          (2049, 256, 384)]
TILES = ["auto", "32", "64", "128"]


@pytest.fixture(autouse=True)
def _needs_kernel(ops):
    reason = sp.fp8_tc_skip_reason(ops)
    if reason is not None:
        pytest.skip(reason)


def _case(m, k, n, dtype, *tag):
    g = sp.generator("fp8-mm", m, k, n, str(dtype), *tag)
    codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
    x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    bias = torch.randn(n, generator=g, device=DEV, dtype=dtype)
    return codes, s, packed, s_perm, x, bias


def _run(ops, x, packed, s_perm, bias=None):
    """The family's product with the tensor-core path forced (bias through the same dispatch as layers)."""
    from quanto_kernels.ops import _fp8_marlin

    n, k = packed.shape[1] // 4, packed.shape[0] * 16
    sp.poison_allocator()
    with ops.force_path("tc"):
        return _fp8_marlin.matmul(x, packed, s_perm, n, k, bias)


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "M{}-K{}-N{}".format(*c))
def test_matches_the_exact_product(ops, native_calls, monkeypatch, case, tile, dtype):
    m, k, n = case
    if tile != "auto":
        monkeypatch.setenv("QK_FP8_MM_TILE", tile)
    codes, s, packed, s_perm, x, bias = _case(m, k, n, dtype, tile)
    native_calls.clear()
    out = _run(ops, x, packed, s_perm, bias)
    torch.cuda.synchronize()
    assert native_calls.names == ["fp8_marlin_mm"], native_calls.names
    ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
    sp.assert_gemm_close(out, ref, dtype, f"fp8_marlin_mm {m}x{k}x{n} tile={tile} {dtype}")


# (tile, splits, blocks per multiprocessor, slices per stage); "auto" leaves the choice to the planner.
# Covers several splits, one stage per split, more splits than fit at once, two blocks per
# multiprocessor unsplit, and both stage depths of the 32-token tile.
SPLIT_CONFIGS = [("auto", "auto", "auto", "auto"), ("32", "3", "2", "auto"), ("32", "2", "1", "auto"),
                 ("64", "5", "auto", "auto"), ("128", "7", "auto", "auto"), ("32", "64", "1", "auto"),
                 ("32", "1", "2", "auto"), ("32", "auto", "auto", "4"), ("32", "3", "2", "4")]
SPLIT_SHAPES = [(1, 4096, 256), (64, 1040, 576), (100, 4096, 320), (300, 2048, 192), (17, 48, 192)]


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", SPLIT_CONFIGS, ids=lambda c: "t{}-s{}-b{}-k{}".format(*c))
@pytest.mark.parametrize("case", SPLIT_SHAPES, ids=lambda c: "M{}-K{}-N{}".format(*c))
def test_split_k_is_exact_and_deterministic(ops, native_calls, monkeypatch, case, config, dtype):
    m, k, n = case
    from quanto_kernels.ops import _fp8_marlin

    for name, value in zip(_fp8_marlin.TC_PLAN_ENV, config):
        if value != "auto":
            monkeypatch.setenv(name, value)
    codes, s, packed, s_perm, x, bias = _case(m, k, n, dtype, *config)
    native_calls.clear()
    out = _run(ops, x, packed, s_perm, bias)
    again = _run(ops, x, packed, s_perm, bias)
    torch.cuda.synchronize()
    assert native_calls.names == ["fp8_marlin_mm"] * 2, native_calls.names
    assert torch.equal(out.view(torch.int16), again.view(torch.int16)), "split-K sums must not depend on timing"
    ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
    sp.assert_gemm_close(out, ref, dtype, f"fp8_marlin_mm {m}x{k}x{n} config={config} {dtype}")


@pytest.mark.gpu
@sp.requires_gpu
def test_planner_splits_small_grids_only(ops):
    """A grid of a few blocks gets a split-K workspace; one that fills the device runs unsplit."""
    from quanto_kernels.ops import _fp8_marlin

    dev = torch.cuda.current_device()
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    assert _fp8_marlin.FAMILY.tc.workspace_bytes(64, 256, 4096, dev) > 0
    assert _fp8_marlin.FAMILY.tc.workspace_bytes(4096, 128 * sms, 4096, dev) == 0


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_public_op_on_views_misaligned_rows_and_foreign_bias(ops, native_calls, dtype):
    """The op copies what the tensor map cannot read (a strided view, a misaligned start) and adds a bias
    of another dtype after the kernel; every variant gives the exact product."""
    m, k, n = 200, 384, 256
    codes, s, packed, s_perm, x, bias = _case(m, k, n, dtype, "views")
    wide = torch.randn(m, 2 * k, device=DEV, dtype=dtype)
    wide[:, ::2] = x
    variants = {"strided view": wide[:, ::2], "misaligned": sp.misaligned(x), "contiguous": x}
    w_ref = sp.fp8_dequant_reference(codes, s)
    for what, xv in variants.items():
        native_calls.clear()
        out = _run(ops, xv, packed, s_perm, bias.float())
        assert "fp8_marlin_mm" in native_calls.names, (what, native_calls.names)
        sp.assert_gemm_close(out, sp.matmul_reference(x, w_ref, bias.float()), dtype, f"{what} {dtype}")
    out = ops.fp8_marlin_gemm(x, packed, s_perm)  # the public op, dispatch by M (no bias)
    sp.assert_gemm_close(out, sp.matmul_reference(x, w_ref), dtype, f"public op {dtype}")


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_codes_poison_only_their_channel(ops, dtype):
    x, packed, s_perm, bad, ref = sp.fp8_nan_case(130, 256, 192, dtype)
    sp.assert_nan_only_in(_run(ops, x, packed, s_perm), bad, ref, dtype, f"tensor-core kernel {dtype}")


@pytest.mark.gpu
@sp.requires_gpu
def test_rule_serves_the_measured_region(ops, native_calls):
    """Without an override the kernel runs for from_m <= M <= to_m on weights of >= min_weight elements,
    and nowhere else (the GEMV kernel below, dequantize + cuBLAS above, small weights never)."""
    tc = ops.GEMM_FAMILIES["fp8_marlin"].tc
    k = 256
    for n in (tc.min_weight // k, 128):
        codes, s, packed, s_perm, _, _ = _case(1, k, n, torch.bfloat16, "rule")
        w_ref = sp.fp8_dequant_reference(codes, s)
        for m in (1, tc.from_m - 1, tc.from_m, tc.to_m, tc.to_m + 1):
            x = torch.randn(m, k, device=DEV, dtype=torch.bfloat16)
            native_calls.clear()
            out = ops.fp8_marlin_gemm(x, packed, s_perm)
            want = "fp8_marlin_mm" if (tc.from_m <= m <= tc.to_m and n * k >= tc.min_weight) else None
            assert native_calls.names == sp.fp8_weight_only_entries(ops, m, n, k), (m, n, native_calls.names)
            assert (want in native_calls.names) if want else ("fp8_marlin_mm" not in native_calls.names), (m, n)
            sp.assert_gemm_close(out, sp.matmul_reference(x, w_ref), torch.bfloat16, f"rule M={m} N={n}")


@pytest.mark.gpu
@sp.requires_gpu
def test_a_split_forced_after_the_size_was_cached_is_retried(ops, native_calls, monkeypatch):
    """The workspace size is cached per shape; forcing a split afterwards makes the cached (unsplit) size too
    small: the library refuses that launch, the op asks again and the retry gives the exact product."""
    m, k, n = 64, 1040, 576
    codes, s, packed, s_perm, x, bias = _case(m, k, n, torch.bfloat16, "retry")
    monkeypatch.setenv("QK_FP8_MM_TILE", "32")
    monkeypatch.setenv("QK_FP8_MM_SPLITS", "1")
    _run(ops, x, packed, s_perm, bias)
    monkeypatch.setenv("QK_FP8_MM_SPLITS", "3")
    native_calls.clear()
    out = _run(ops, x, packed, s_perm, bias)
    torch.cuda.synchronize()
    sizes = [kw["workspace_bytes"] for name, kw in native_calls.calls if name == "fp8_marlin_mm"]
    assert len(sizes) == 2 and sizes[0] == 0 and sizes[1] > 0, sizes
    ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
    sp.assert_gemm_close(out, ref, torch.bfloat16, f"fp8_marlin_mm {m}x{k}x{n} retried with 3 splits")
