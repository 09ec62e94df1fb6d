"""GPU tests of ``quanto_kernels::fp8_compute_linear`` (qfloat8 weights times e4m3 activations on FP8
tensor cores) and of its two C entry points; they need compute capability 8.9+ and skip elsewhere.

Oracle: the W8A8 math in fp64 (support.w8a8_reference), written from docs/numerics.md, "FP8 compute":
activations quantized per row with torch.float8_e4m3fn (round-to-nearest-even, saturating), weights
decoded exactly from codes laid out by the layout formula (support.fp8_marlin_layout, independent of
our repack), scales applied in fp64. Bounds: support.assert_w8a8_close (why they are what they are is
written there). Each case also reports, and bounds, its error against the weight-only fp64 product:
that is the accuracy FP8 compute gives up.

Covered:
  * the activation quantization kernel alone, bit-exact: codes in fragment order and row scales, for
    ragged M, K from 16 to 4096, a strided row pitch, an all-zero row and an outlier row;
  * the GEMM against the reference over M in {1, 2, 17, 64, 65, 127, 300, 4097}, (N, K) from (64, 32)
    to (3072, 4096), fp16 and bf16, with and without bias, on outputs poisoned with NaN; every M is
    forced onto the FP8 path (force_fp8_compute_path("fp8")) so small M test the FP8 kernel too;
  * on Hopper both kernels: wgmma (default) and mma.sync (QK_FP8_COMPUTE_KERNEL=mma, which the library
    reads at each call);
  * the M rule: M <= the fused GEMV limit runs the weight-only GEMV plus bias, larger M the two FP8
    entry points (C calls counted);
  * leading dimensions, non-contiguous and misaligned x (copied, same result), M = 0;
  * CUDA graph capture and replay on both paths, ``torch.library.opcheck``, ``torch.compile``.
"""

from __future__ import annotations

import pytest
import torch

import support as sp

pytestmark = [pytest.mark.gpu, sp.requires_gpu, sp.requires_fp8_compute]

DEV = "cuda"
f16, bf16 = torch.float16, torch.bfloat16
DTYPES = [f16, bf16]
# The accuracy FP8 compute gives up against the weight-only product: e4m3 keeps 3 mantissa bits, so each
# activation is off by up to 2^-4 relative (about 2.5-3 % in relative Frobenius norm for Gaussian data,
# measured on the CPU with the reference). Twice that is the bound; the value is recorded per case.
MAX_REL_VS_WEIGHT_ONLY = 0.06


def _dtype_id(d):
    return str(d).replace("torch.", "")


def _is_hopper() -> bool:
    return sp.HAS_GPU and torch.cuda.get_device_capability() == (9, 0)


KERNELS = [
    pytest.param("default", id="kernel-default"),
    pytest.param("mma", id="kernel-mma", marks=pytest.mark.skipif(
        not _is_hopper(), reason="only Hopper has a second FP8 kernel (wgmma); elsewhere mma.sync is the default")),
]


@pytest.fixture
def kernel(request, monkeypatch):
    """Sets QK_FP8_COMPUTE_KERNEL for the test (the C side reads it at every call) and checks it took."""
    from quanto_kernels.fp8_compute import kernel_name

    if request.param == "mma":
        monkeypatch.setenv("QK_FP8_COMPUTE_KERNEL", "mma")
        assert kernel_name(torch.cuda.current_device()) == "mma.sync"
    else:
        monkeypatch.delenv("QK_FP8_COMPUTE_KERNEL", raising=False)
        assert kernel_name(torch.cuda.current_device()) in ("mma.sync", "wgmma")
    return request.param


def _weight(k, n, dtype, *seed):
    """codes (N, K), natural scales (N,), Marlin layout, permuted (1, N) scales, bias (N,), generator."""
    g = sp.generator("fp8c", k, n, _dtype_id(dtype), *seed)
    codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
    bias = (0.5 * torch.randn(n, generator=g, device=DEV)).to(dtype)
    return codes, s, packed, s_perm, bias, g


def _activations(m, k, dtype, g):
    """Standard normal rows, plus an all-zero row and a row with one outlier (50x) when M allows."""
    x = torch.randn(m, k, generator=g, device=DEV).to(dtype)
    if m >= 3:
        x[1] = 0
        x[2, k // 2] = 50.0
    return x


def _check(out, x, codes, s, bias, dtype, what, record=None):
    ref, sum_abs = sp.w8a8_reference(x, codes, s, bias)
    sp.assert_w8a8_close(out, ref, sum_abs, dtype, what)
    weight_only = sp.matmul_reference(x.reshape(-1, x.shape[-1]), sp.fp8_dequant_reference(codes, s), bias)
    rel = sp.rel_fro(out.reshape(weight_only.shape), weight_only)
    if record is not None:
        record(f"rel_err_vs_weight_only[{what}]", f"{rel:.4e}")
    assert rel <= MAX_REL_VS_WEIGHT_ONLY, f"{what}: {rel:.3e} from the weight-only product (limit {MAX_REL_VS_WEIGHT_ONLY})"


# ----------------------------------------------------------------------- activation quantization


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("m,k,pitch", [(1, 16, 16), (3, 32, 32), (7, 96, 104), (300, 4096, 4096), (65, 272, 288)])
def test_act_quant_is_bit_exact(ops, m, k, pitch, dtype):
    """qk_fp8_act_quant against act_quant_reference: the same codes (in fragment order) and row scales."""
    from quanto_kernels._native import abi
    from quanto_kernels.ops import _common

    g = sp.generator("fp8c-aq", m, k, pitch, _dtype_id(dtype))
    buf = _activations(m, pitch, dtype, g)
    x = buf[:, :k]  # rows pitch elements apart: the entry point reads ldx, not K
    sp.poison_allocator()
    xq = torch.empty((m, k), dtype=torch.uint8, device=DEV)
    xs = torch.empty((m,), dtype=torch.float32, device=DEV)
    abi.fp8_act_quant(x=buf.data_ptr(), ldx=pitch, xq=xq.data_ptr(), xs=xs.data_ptr(), m=m, k=k,
                      dtype=_common.DTYPE_CODES[dtype], device=torch.cuda.current_device(), stream=_common.stream(buf))
    torch.cuda.synchronize()
    codes, scale = sp.act_quant_reference(x)
    want = codes.view(torch.uint8)[:, sp.fragment_order(k, DEV)]
    # -0 (0x80) and +0 are the same product; which one an underflowing negative value becomes is not
    # part of the contract, so both sides map it to +0 before the bit comparison.
    xq, want = torch.where(xq == 0x80, 0, xq), torch.where(want == 0x80, 0, want)
    diff = xq != want
    assert not bool(diff.any()), f"{int(diff.sum())} of {xq.numel()} codes differ; first at {diff.nonzero()[0].tolist()}"
    assert torch.equal(xs, scale), f"row scales differ: {(xs - scale).abs().max().item():.3g}"


# ------------------------------------------------------------------------------ GEMM vs reference

MS = [1, 2, 17, 64, 65, 127, 300, 4097]
NK = [(64, 32), (192, 96), (64, 4096), (3072, 96), (3072, 4096)]
# Every M with every (N, K), except M = 4097 with the largest layer (its fp64 reference alone is 50 GFLOP):
# that one runs once per dtype and kernel in test_fp8_gemm_at_large_m.
GEMM_CASES = [(m, n, k) for m in MS for n, k in NK if m * n * k <= 2**34]


@pytest.mark.parametrize("kernel", [p for p in KERNELS], indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("m,n,k", GEMM_CASES, ids=[f"M{m}-N{n}-K{k}" for m, n, k in GEMM_CASES])
def test_fp8_gemm_matches_the_w8a8_reference(ops, kernel, m, n, k, dtype, record_property):
    codes, s, packed, s_perm, bias, g = _weight(k, n, dtype, m, kernel)
    x = _activations(m, k, dtype, g)
    use_bias = m % 2 == 1  # both with and without bias over the M list
    with ops.force_fp8_compute_path("fp8"):
        sp.poison_allocator()
        out = ops.fp8_compute_linear(x, packed, s_perm, bias if use_bias else None)
    assert out.dtype == dtype and out.shape == (m, n)
    what = f"fp8_compute_linear M={m} N={n} K={k} {_dtype_id(dtype)} bias={use_bias} kernel={kernel}"
    _check(out, x, codes, s, bias if use_bias else None, dtype, what, record_property)


@pytest.mark.parametrize("kernel", [p for p in KERNELS], indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_fp8_gemm_at_large_m(ops, kernel, dtype, record_property):
    m, n, k = 4097, 3072, 4096
    codes, s, packed, s_perm, bias, g = _weight(k, n, dtype, "large", kernel)
    x = _activations(m, k, dtype, g)
    sp.poison_allocator()
    out = ops.fp8_compute_linear(x, packed, s_perm, bias)
    _check(out, x, codes, s, bias, dtype, f"M={m} N={n} K={k} {_dtype_id(dtype)} kernel={kernel}", record_property)


# ----------------------------------------------------------------------------- dispatch and forms


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_small_m_runs_the_weight_only_gemv_then_the_bias(ops, native_calls, dtype):
    limit = ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m
    k, n = 256, 192
    codes, s, packed, s_perm, bias, g = _weight(k, n, dtype, "rule")
    for m in sorted({1, limit, limit + 1, 300}):
        x = _activations(m, k, dtype, g)
        native_calls.clear()
        out = ops.fp8_compute_linear(x, packed, s_perm, bias)
        torch.cuda.synchronize()
        what = f"M={m} {_dtype_id(dtype)}"
        if m <= limit:
            assert native_calls.names == ["fp8_marlin_gemv"], f"{what}: ran {native_calls.names}"
            ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
            sp.assert_gemm_close(out.double() - bias.double(), ref - bias.double(), dtype, what)
        else:
            assert native_calls.names == ["fp8_act_quant", "fp8_compute_gemm"], f"{what}: ran {native_calls.names}"
            _check(out, x, codes, s, bias, dtype, what)


def test_forced_gemv_above_the_limit_is_refused(ops):
    limit = ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m
    _, _, packed, s_perm, bias, g = _weight(64, 64, f16, "forced")
    x = torch.randn(limit + 1, 64, generator=g, device=DEV).half()
    with ops.force_fp8_compute_path("gemv"), pytest.raises(ValueError, match="limit"):
        ops.fp8_compute_linear(x, packed, s_perm, bias)


@pytest.mark.parametrize("lead", [(2, 150), (3, 1, 40), (0,), (2, 0)])
def test_leading_dimensions(ops, lead):
    k, n = 96, 128
    codes, s, packed, s_perm, bias, g = _weight(k, n, bf16, "lead", lead)
    x = torch.randn(*lead, k, generator=g, device=DEV).to(bf16)
    out = ops.fp8_compute_linear(x, packed, s_perm, bias)
    assert out.shape == lead + (n,) and out.dtype == bf16
    if x.numel():
        with ops.force_fp8_compute_path("fp8"):
            out = ops.fp8_compute_linear(x, packed, s_perm, bias)
        _check(out, x, codes, s, bias, bf16, f"input {lead}+[K]")


@pytest.mark.parametrize("path", ["gemv", "fp8"])
def test_strided_and_misaligned_x_are_copied_not_refused(ops, path):
    k, n, m = 256, 64, 9
    _, _, packed, s_perm, bias, g = _weight(k, n, f16, "views", path)
    dense = torch.randn(m, k, generator=g, device=DEV).half()
    views = {"transposed": dense.t().contiguous().t(), "misaligned": sp.misaligned(dense),
             "column slice": torch.cat([dense, dense], dim=1)[:, :k]}
    with ops.force_fp8_compute_path(path):
        want = ops.fp8_compute_linear(dense, packed, s_perm, bias)
        for name, view in views.items():
            assert torch.equal(view, dense)
            got = ops.fp8_compute_linear(view, packed, s_perm, bias)
            assert torch.equal(got, want), f"{name} x gives another result than the dense x"


# ------------------------------------------------------------------------- graphs, opcheck, compile


def _capture(fn):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize()
    return graph, out


@pytest.mark.parametrize("kernel", [p for p in KERNELS], indirect=True)
@pytest.mark.parametrize("m,path", [(5, None), (77, "fp8"), (300, None)])
def test_cuda_graph_capture_and_replay(ops, kernel, m, path):
    k, n, dtype = 512, 192, bf16
    codes, s, packed, s_perm, bias, g = _weight(k, n, dtype, "graph", m)
    static_x = _activations(m, k, dtype, g)
    with ops.force_fp8_compute_path(path):
        graph, static_out = _capture(lambda: ops.fp8_compute_linear(static_x, packed, s_perm, bias))
        for replay in range(3):
            x = torch.randn(m, k, generator=g, device=DEV).to(dtype)
            static_x.copy_(x)
            graph.replay()
            torch.cuda.synchronize()
            what = f"replay {replay} M={m} kernel={kernel}"
            if m <= ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m and path is None:
                ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
                sp.assert_gemm_close(static_out.double() - bias.double(), ref - bias.double(), dtype, what)
            else:
                _check(static_out, x, codes, s, bias, dtype, what)


@pytest.mark.parametrize("m", [5, 300])
@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck(ops, m, with_bias):
    _, _, packed, s_perm, bias, g = _weight(128, 64, f16, "opcheck", m)
    x = torch.randn(2, m, 128, generator=g, device=DEV).half()
    torch.library.opcheck(torch.ops.quanto_kernels.fp8_compute_linear.default,
                          (x, packed, s_perm, bias if with_bias else None))


def test_torch_compile_matches_eager(ops):
    k, n, m = 256, 128, 200
    codes, s, packed, s_perm, bias, g = _weight(k, n, bf16, "compile")

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", packed)
            self.register_buffer("s", s_perm)
            self.register_buffer("b", bias)

        def forward(self, x):
            return torch.relu(torch.ops.quanto_kernels.fp8_compute_linear(x * 2, self.w, self.s, self.b))

    model = Tiny()
    x = torch.randn(m, k, generator=g, device=DEV).to(bf16)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(compiled, eager)
