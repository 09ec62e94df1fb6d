"""GPU tests of the FP8 compute mode with optimum-quanto: qfloat8 layers routed to fp8_compute_linear.

Needs a GPU with FP8 tensor cores (compute capability 8.9+) and optimum-quanto; skips otherwise.

Covered, each with the mode off and on in the same process (``quanto_kernels.fp8_compute()``):
  * QLinear's short path: the C entry points that run (off: the weight-only GEMV or dequantize; on: the
    GEMV up to the fused limit, above it ``fp8_act_quant`` + ``fp8_compute_gemm``), the result against
    the fp64 W8A8 reference built from the layer's own exact weight (its FP8 codes and scales), the "on"
    result against the "off" one (same at small M, within the e4m3 activation rounding above), leading
    dimensions, fp16 and bf16, with and without bias;
  * quanto's full path (input requiring grad, ``F.linear`` on the weight): routed too, and quanto's
    backward still gives the input gradient of the dequantized weight;
  * a qfloat8 weight quanto did not Marlin-pack (K = 96): the mode leaves it on its own path, bit for bit;
  * torch.compile of a tiny two-layer model with the mode on (fullgraph; the compiled model runs our
    FP8 entry points and matches eager), and again after the mode is turned off (recompiled, weight-only);
  * CUDA graph capture and replay of a quantized model with the mode on.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import support as sp

pytestmark = [pytest.mark.gpu, sp.requires_gpu, sp.requires_fp8_compute]

DEV = "cuda"
f16, bf16 = torch.float16, torch.bfloat16
FP8_ENTRIES = ["fp8_act_quant", "fp8_compute_gemm"]
# "on" against "off" above the GEMV limit: the e4m3 rounding of the activations (about 2.5-3 % for
# Gaussian data, see tests/ops/test_gpu_fp8_compute.py); twice that.
MAX_REL_ON_VS_OFF = 0.06


def _dtype_id(d):
    return str(d).replace("torch.", "")


def _qfloat8_model(k, n, dtype, seed, bias=True, layers=1):
    from optimum.quanto import freeze, qfloat8, quantize

    g = sp.generator("fp8c-quanto", k, n, _dtype_id(dtype), seed)
    mods = []
    for i in range(layers):
        kin = k if i == 0 else n
        lin = torch.nn.Linear(kin, n, bias=bias, device=DEV, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_((torch.rand(n, kin, generator=g, device=DEV) * 2 - 1) * kin**-0.5)
            if bias:
                lin.bias.copy_(0.5 * torch.randn(n, generator=g, device=DEV))
        mods += [lin, torch.nn.ReLU()] if i + 1 < layers else [lin]
    model = torch.nn.Sequential(*mods)
    quantize(model, weights=qfloat8)
    freeze(model)
    return model, g


def _exact_weight(qweight):
    """(codes (N, K) uint8, natural scales (N,)) of a MarlinF8QBytesTensor: exact, no rounding."""
    codes = qweight._data.unpack().contiguous().view(torch.uint8)
    s_perm = qweight._scale.reshape(-1)
    n = s_perm.numel()
    s = torch.empty_like(s_perm)
    s[sp.block32_index(n, s_perm.device)] = s_perm
    return codes, s


def _expected(ops, rows, n, k, on):
    if not on:
        return sp.fp8_weight_only_entries(ops, rows, n, k)
    return ["fp8_marlin_gemv"] if rows <= ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m else FP8_ENTRIES


def _check_on(y, x, qlin, dtype, what):
    codes, s = _exact_weight(qlin.weight)
    bias = None if qlin.bias is None else qlin.bias.detach()
    ref, sum_abs = sp.w8a8_reference(x, codes, s, bias)
    sp.assert_w8a8_close(y.reshape(ref.shape), ref, sum_abs, dtype, what)


@pytest.mark.parametrize("dtype", [f16, bf16], ids=_dtype_id)
@pytest.mark.parametrize("k,n,bias", [(512, 384, True), (4096, 3072, True), (1024, 256, False)],
                         ids=lambda v: str(v))
def test_short_path_with_the_mode_on_and_off(quanto_patched, ops, native_calls, k, n, bias, dtype, record_property):
    import quanto_kernels

    model, g = _qfloat8_model(k, n, dtype, "short", bias=bias)
    qlin = model[0]
    assert type(qlin.weight).__name__ == "MarlinF8QBytesTensor"
    for lead in [(1,), (16,), (77,), (300,), (2, 150)]:
        x = torch.randn(*lead, k, generator=g, device=DEV).to(dtype)
        rows = x.numel() // k
        what = f"qfloat8 Linear({k}, {n}) bias={bias} {_dtype_id(dtype)} input {lead}+[K]"
        with torch.no_grad():
            native_calls.clear()
            y_off = model(x)
            torch.cuda.synchronize()
            assert native_calls.names == _expected(ops, rows, n, k, False), f"{what} off: ran {native_calls.names}"
            with quanto_kernels.fp8_compute():
                sp.poison_allocator()
                native_calls.clear()
                y_on = model(x)
                torch.cuda.synchronize()
            assert native_calls.names == _expected(ops, rows, n, k, True), f"{what} on: ran {native_calls.names}"
        assert y_on.shape == lead + (n,) and y_on.dtype == dtype
        if native_calls.names == ["fp8_marlin_gemv"]:
            assert torch.equal(y_on, y_off), f"{what}: the mode changed a GEMV result"
            continue
        _check_on(y_on, x, qlin, dtype, what)
        rel = sp.rel_fro(y_on, y_off)
        record_property(f"rel_on_vs_off[{what}]", f"{rel:.4e}")
        assert rel <= MAX_REL_ON_VS_OFF, f"{what}: on vs off {rel:.3e} (limit {MAX_REL_ON_VS_OFF})"


@pytest.mark.parametrize("dtype", [f16, bf16], ids=_dtype_id)
def test_quantos_full_path_is_routed_and_backward_still_works(quanto_patched, ops, native_calls, dtype):
    import quanto_kernels

    k, n, m = 512, 256, 300
    model, g = _qfloat8_model(k, n, dtype, "full")
    qlin = model[0]
    x = torch.randn(m, k, generator=g, device=DEV).to(dtype)
    with quanto_kernels.fp8_compute():
        xg = x.clone().requires_grad_()
        native_calls.clear()
        y = model(xg)  # the short path declines (autograd): quanto's Function runs
        assert native_calls.names == FP8_ENTRIES, f"autograd: ran {native_calls.names}"
        _check_on(y.detach(), x, qlin, dtype, "autograd Function")
        gy = torch.randn(m, n, generator=g, device=DEV).to(dtype)
        y.backward(gy)
        with torch.no_grad():
            want = sp.matmul_reference(gy, qlin.weight.dequantize().t())
        sp.assert_gemm_close(xg.grad, want, dtype, "input gradient (quanto's backward)")
        with torch.no_grad():
            native_calls.clear()
            y2 = F.linear(x, qlin.weight, qlin.bias)
        assert native_calls.names == FP8_ENTRIES, f"F.linear: ran {native_calls.names}"
        _check_on(y2, x, qlin, dtype, "F.linear")


def test_qfloat8_weight_not_marlin_packed_keeps_its_path(quanto_patched, native_calls):
    import quanto_kernels

    model, g = _qfloat8_model(96, 128, bf16, "not-marlin")
    assert type(model[0].weight).__name__ != "MarlinF8QBytesTensor", "K=96 was expected to stay unpacked"
    x = torch.randn(300, 96, generator=g, device=DEV).to(bf16)
    with torch.no_grad():
        y_off = model(x)
        with quanto_kernels.fp8_compute():
            native_calls.clear()
            y_on = model(x)
    assert not set(native_calls.names) & set(FP8_ENTRIES), f"ran {native_calls.names}"
    assert torch.equal(y_on, y_off)


def _backend():
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - no triton: inductor cannot generate GPU code
        return "aot_eager"
    return "inductor"


def test_torch_compile_of_a_tiny_model_with_the_mode_on(quanto_patched, ops, native_calls):
    import quanto_kernels

    torch._dynamo.reset()
    model, g = _qfloat8_model(256, 512, bf16, "compile", layers=2)
    x = torch.randn(300, 256, generator=g, device=DEV).to(bf16)
    compiled = torch.compile(model, fullgraph=True, backend=_backend())
    with torch.no_grad():
        with quanto_kernels.fp8_compute():
            eager = model(x)
            native_calls.clear()
            y = compiled(x)
            torch.cuda.synchronize()
        assert native_calls.names == FP8_ENTRIES * 2, f"compiled, mode on: ran {native_calls.names}"
        sp.assert_gemm_close(y, eager.double(), bf16, "compiled vs eager, mode on")
        native_calls.clear()
        y_off = compiled(x)  # the flag is guarded: recompiles for the weight-only path
        torch.cuda.synchronize()
    assert native_calls.names == sp.fp8_weight_only_entries(ops, 300, 512, 256) * 2, f"compiled, mode off: ran {native_calls.names}"
    # two layers, each with its own activation rounding: errors add in quadrature, sqrt(2) < 2
    assert sp.rel_fro(y_off, y) <= 2 * MAX_REL_ON_VS_OFF
    torch._dynamo.reset()


def test_cuda_graph_of_a_quantized_model_with_the_mode_on(quanto_patched):
    import quanto_kernels

    model, g = _qfloat8_model(512, 256, bf16, "graph")
    static_x = torch.randn(300, 512, generator=g, device=DEV).to(bf16)
    with torch.no_grad(), quanto_kernels.fp8_compute():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = model(static_x)
        for replay in range(3):
            x = torch.randn(300, 512, generator=g, device=DEV).to(bf16)
            static_x.copy_(x)
            graph.replay()
            torch.cuda.synchronize()
            _check_on(static_y, x, model[0], bf16, f"graph replay {replay}")
