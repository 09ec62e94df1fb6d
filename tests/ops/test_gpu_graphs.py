"""CUDA graphs and torch.compile.

CUDA graphs: every GEMM path (fused small M, which allocates its split-K workspace inside the capture,
and dequantize + cuBLAS for large M), every dequantize op, unpack and repack are captured with
``torch.cuda.graph`` after a warm-up on a side stream, then replayed with new data copied into the
static inputs; each replay must give the reference result for the new data. Not capturable by
design: ``marlin_repack`` with a non-empty ``perm`` (it checks the perm's range on the host, which
synchronises) -- a one-time packing step.

torch.compile: a module holding quantized weights and calling the custom ops
(``torch.ops.quanto_kernels.*``) compiles with ``fullgraph=True`` (inductor when triton is present)
and matches eager; so does optimum-quanto's own qfloat8 ``Linear`` once the fake impls of quanto's
CUDA ops are registered (``quanto_kernels.quanto.fakes.register_quanto_fakes``, called by the shim).
``torch.library.opcheck`` of every op is in test_gpu_ops.py.
"""

from __future__ import annotations

# Fixtures (ops, quanto_patched, recorder) are imported from other test modules and named as parameters.
# ruff: noqa: F811


import pytest
import torch

import support as sp


pytestmark = [pytest.mark.gpu, sp.requires_gpu]

DEV = "cuda"
f16, bf16 = torch.float16, torch.bfloat16
K, N = 1024, 512


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import problem means inductor cannot generate GPU code
        return False
    return True


def _compiled_call(compiled, x, backend, what):
    """compiled(x), a failure reported with dynamo's reason in full."""
    try:
        return compiled(x)
    except Exception as exc:  # noqa: BLE001 - report dynamo's reason in full
        pytest.fail(f"torch.compile(fullgraph=True, backend={backend}) of {what} failed: "
                    f"{type(exc).__name__}: {str(exc)[:4000]}")


def _quanto_linear_compiled(k, n, dtype, qtype, weight_class, seed, backend):
    """A quantized, frozen quanto Linear(k, n) with bias, its torch.compile(fullgraph=True) twin and the generator."""
    from optimum.quanto import freeze, quantize

    model, g = sp.linear_case(k, n, dtype, seed)
    quantize(model, weights=qtype)
    freeze(model)
    assert type(model[0].weight).__name__ == weight_class
    torch._dynamo.reset()
    return model, torch.compile(model, fullgraph=True, backend=backend, dynamic=False), g


def _capture(fn):
    """Warm up on a side stream, then capture fn() into a CUDA graph; returns (graph, static output)."""
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


def _weights(ops, fmt, dtype, seed, k=K, n=N):
    """(op(x), fp64 dequantized weight, tensors to refresh in place) for one format."""
    g = sp.generator("graph-w", fmt, str(dtype), seed)
    if fmt == "fp8":
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
        return (lambda x: ops.fp8_marlin_gemm(x, packed, s_perm)), sp.fp8_dequant_reference(codes, s)
    if fmt == "awq":
        codes, s, z, packed = sp.awq_weight(k, n, g)
        return (lambda x: ops.awq_int4_gemm(x, packed, s, z)), sp.int4_dequant_reference(codes, s, z)
    codes, s, z, packed = sp.mi4_weight(k, n, g)
    sperm, zp = sp.permute_block64(s), sp.permute_block64(z)
    return ((lambda x: ops.marlin_int4_gemm(x, packed, sperm, zp, ops.SCALE_PERM_BLOCK64)),
            sp.int4_dequant_reference(codes, s, z))


GEMM_GRAPH_CASES = [("fp8", 1, f16), ("fp8", 5, bf16), ("fp8", 16, f16), ("fp8", 64, f16), ("fp8", 64, bf16),
                    ("awq", 1, f16), ("awq", 9, f16), ("awq", 64, f16),
                    ("marlin", 3, f16), ("marlin", 16, f16), ("marlin", 64, f16)]


@pytest.mark.parametrize("fmt,m,dtype", GEMM_GRAPH_CASES,
                         ids=[f"{f}-M{m}-{'bf16' if d == bf16 else 'fp16'}" for f, m, d in GEMM_GRAPH_CASES])
def test_gemm_captured_and_replayed(ops, fmt, m, dtype):
    op, ref_w = _weights(ops, fmt, dtype, 0)
    static_x = torch.zeros(m, K, device=DEV, dtype=dtype)
    graph, out = _capture(lambda: op(static_x))
    for rep in range(3):
        x = torch.randn(m, K, generator=sp.generator("graph-x", fmt, m, rep), device=DEV, dtype=dtype)
        static_x.copy_(x)
        out.fill_(float("nan"))  # whatever the replay does not write stays NaN
        graph.replay()
        torch.cuda.synchronize()
        sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), dtype, f"{fmt} M={m} graph replay {rep}")
        eager = op(x)
        if m <= sp.fused_limit(ops, fmt):
            assert torch.equal(out, eager), f"{fmt} M={m}: replay differs from the eager call"


@pytest.mark.parametrize("fmt", ["fp8", "awq", "marlin"])
def test_dequantize_captured_and_replayed_with_new_weights(ops, fmt):
    k, n = 512, 256
    dtype = bf16 if fmt == "fp8" else f16

    def build(seed):
        g = sp.generator("graph-deq", fmt, seed)
        if fmt == "fp8":
            codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
            ref = sp.fp8_dequant_reference(codes, s)
            return [packed, s_perm], ref, sp.fp8_dequant_bound(ref, dtype)
        if fmt == "awq":
            codes, s, z, packed = sp.awq_weight(k, n, g)
            ref = sp.int4_dequant_reference(codes, s, z)
            return [packed, s, z], ref, sp.int4_dequant_bound(codes, s, ref)
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        ref = sp.int4_dequant_reference(codes, s, z)
        return [packed, sp.permute_block64(s), sp.permute_block64(z)], ref, sp.int4_dequant_bound(codes, s, ref)

    static, _, _ = build(0)
    static = [t.clone() for t in static]
    if fmt == "fp8":
        fn = lambda: ops.fp8_marlin_dequantize(*static)  # noqa: E731
    elif fmt == "awq":
        fn = lambda: ops.awq_int4_dequantize(*static)  # noqa: E731
    else:
        fn = lambda: ops.marlin_int4_dequantize(*static, ops.SCALE_PERM_BLOCK64)  # noqa: E731
    graph, out = _capture(fn)
    for rep in range(1, 4):
        tensors, ref, bound = build(rep)
        for dst, src in zip(static, tensors):
            dst.copy_(src)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        sp.assert_all_finite(out, f"{fmt} dequantize replay {rep}")
        assert sp.max_abs_over(out, ref, bound) <= 0, f"{fmt} dequantize replay {rep}: outside the rounding bound"


def test_unpack_and_repack_captured_and_replayed(ops):
    t_static = torch.zeros(129, 64, dtype=torch.uint8, device=DEV)
    k, n = 256, 192
    b_static = torch.zeros(k // 4, n, dtype=torch.int32, device=DEV)
    perm = sp.empty_perm()
    g_unpack, out_unpack = _capture(lambda: ops.unpack(t_static, 4))
    g_repack, out_repack = _capture(lambda: ops.marlin_repack(b_static, perm, k, n, 8))
    for rep in range(3):
        g = sp.generator("graph-layout", rep)
        t = torch.randint(0, 256, (129, 64), generator=g, device=DEV, dtype=torch.uint8)
        codes = sp.random_fp8_codes(n, k, g)
        t_static.copy_(t)
        b_static.copy_(sp.fp8_pack_as_int32(codes))
        out_unpack.fill_(255)
        out_repack.fill_(-1)
        g_unpack.replay()
        g_repack.replay()
        torch.cuda.synchronize()
        assert torch.equal(out_unpack, sp.unpack_reference(t, 4)), f"unpack replay {rep}"
        assert torch.equal(out_repack, sp.fp8_marlin_layout(codes)), f"repack replay {rep}"


# ---------------------------------------------------------------------------------- torch.compile


class QuantizedLinears(torch.nn.Module):
    """Three quantized linears (FP8 Marlin, AWQ int4, Marlin int4) calling the custom ops directly."""

    def __init__(self, ops, k=512, n=256):
        super().__init__()
        g = sp.generator("compile-module")
        codes8, s8, w8, sp8 = sp.fp8_weight(k, n, f16, g)
        codes_a, sa, za, wa = sp.awq_weight(k, n, g)
        codes_m, sm, zm, wm = sp.mi4_weight(k, n, g)
        for name, t in dict(w8=w8, s8=sp8, wa=wa, sa=sa, za=za, wm=wm, sm=sp.permute_block64(sm),
                            zm=sp.permute_block64(zm)).items():
            self.register_buffer(name, t)
        self.register_buffer("bias", 0.1 * torch.randn(n, generator=g, device=DEV, dtype=f16))
        self.refs = (sp.fp8_dequant_reference(codes8, s8), sp.int4_dequant_reference(codes_a, sa, za),
                     sp.int4_dequant_reference(codes_m, sm, zm))
        self.perm = ops.SCALE_PERM_BLOCK64

    def forward(self, x):
        y8 = torch.ops.quanto_kernels.fp8_marlin_gemm(x, self.w8, self.s8) + self.bias
        ya = torch.ops.quanto_kernels.awq_int4_gemm(x, self.wa, self.sa, self.za)
        ym = torch.ops.quanto_kernels.marlin_int4_gemm(x, self.wm, self.sm, self.zm, self.perm)
        return torch.relu(y8), ya + ym


def test_custom_ops_under_torch_compile_fullgraph(ops):
    backend = "inductor" if _has_triton() else "aot_eager"
    module = QuantizedLinears(ops)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=backend, dynamic=False)
    with torch.no_grad():
        for m in (1, 33):
            x = torch.randn(m, 512, generator=sp.generator("compile-x", m), device=DEV, dtype=f16)
            e8, e4 = module(x)
            c8, c4 = compiled(x)
            torch.testing.assert_close(c8, e8, rtol=2e-3, atol=2e-3)
            torch.testing.assert_close(c4, e4, rtol=2e-3, atol=2e-3)
            r8, ra, rm = module.refs
            sp.assert_gemm_close(c8.double(), torch.relu(sp.matmul_reference(x, r8) + module.bias.double()), f16,
                                 f"compiled fp8 linear M={m} ({backend})")
            sp.assert_gemm_close(c4, sp.matmul_reference(x, ra) + sp.matmul_reference(x, rm), f16,
                                 f"compiled int4 linears M={m} ({backend})")
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_quanto_qint8_linear_under_torch_compile_fullgraph(quanto_patched, native_calls, backend):
    """quanto's qint8 linear traces into one graph (no break at the layer: nothing on its path reads an
    activation's strides or data pointer while tracing) and the compiled model runs our int8 kernels."""
    if backend == "inductor" and not _has_triton():
        pytest.skip("triton is not installed: inductor cannot generate GPU code here")
    from optimum.quanto import qint8

    k, n = 512, 384
    for dtype in (f16, torch.bfloat16):
        model, compiled, g = _quanto_linear_compiled(k, n, dtype, qint8, "WeightQBytesTensor",
                                                     ("compile-quanto-int8", backend, str(dtype)), backend)
        with torch.no_grad():
            for lead in ((1,), (40,), (2, 150)):
                x = torch.randn(*lead, k, generator=g, device=DEV, dtype=dtype)
                ref = model(x)
                native_calls.clear()
                out = _compiled_call(compiled, x, backend, f"quanto's qint8 Linear at {lead}")
                assert native_calls.names and all(c.startswith("int8_") for c in native_calls.names), (
                    f"the compiled model ran {native_calls.names}, not only our int8 entry points")
                tol = 4e-3 if dtype == f16 else 3e-2
                torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
                deq = model[0].weight.dequantize()
                rows = x.numel() // k
                sp.assert_gemm_close(out.reshape(rows, n).double() - model[0].bias.double(),
                                     sp.matmul_reference(x.reshape(rows, k), deq), dtype,
                                     f"compiled quanto qint8 Linear {lead} ({backend})")
        torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_quanto_qfloat8_linear_under_torch_compile_fullgraph(quanto_patched, backend):
    if backend == "inductor" and not _has_triton():
        pytest.skip("triton is not installed: inductor cannot generate GPU code here")
    from optimum.quanto import qfloat8

    from quanto_kernels.quanto.fakes import register_quanto_fakes

    register_quanto_fakes()  # idempotent; the shim registers them when it patches quanto
    k, n = 512, 384
    model, compiled, g = _quanto_linear_compiled(k, n, f16, qfloat8, "MarlinF8QBytesTensor",
                                                 ("compile-quanto", backend), backend)
    with torch.no_grad():
        for m in (1, 40):
            x = torch.randn(m, k, generator=g, device=DEV, dtype=f16)
            ref = model(x)
            out = _compiled_call(compiled, x, backend, f"quanto's qfloat8 Linear at M={m}")
            torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
            deq = model[0].weight.dequantize()
            sp.assert_gemm_close(out.double() - model[0].bias.double(), sp.matmul_reference(x, deq), f16,
                                 f"compiled quanto qfloat8 Linear M={m} ({backend})")
    torch._dynamo.reset()
