"""GPU tests of the short inference path (python/quanto_kernels/quanto/fast_linear.py).

The shim makes quanto's QLinear.forward call our kernels directly for frozen FP8 Marlin and AWQ int4
weights (quanto's fp16 class and the shim's bf16 one) when nothing needs quanto's dispatch. These tests check, in a fresh interpreter each:
  * it is taken (quanto's autograd Function never runs) and gives what quanto's full path gives:
    bit-identical for the fused small-M kernel when it adds no bias itself, within GEMM rounding for
    large M and for the FP8 GEMV with a bias (both add the bias before the one rounding, quanto's path
    after), and close to the fp64 product of the layer's own dequantize() plus the bias;
    leading dims, bias / no bias, fp16 / bf16, M on both sides of the kernel switch;
  * it declines, and quanto's path runs and stays right, for: autograd (input requiring grad),
    a misaligned input view, a non-contiguous input, an active torch-function mode;
  * a wrong activation dtype still raises quanto's path's clear error (naming the argument);
  * replacing the weight's tensors invalidates the cached checks (the new weight is used).
"""

from __future__ import annotations


import pytest
import torch

import support as sp
from quanto_shim import test_gpu_quanto as tq

pytestmark = [pytest.mark.gpu, sp.requires_gpu]

FAST_SCRIPT = r'''
import torch
import quanto_kernels
from optimum.quanto import freeze, qtypes, quantize
from optimum.quanto.nn.qlinear import QLinear
from optimum.quanto.tensor.weights.marlin.fp8 import qbits as fp8_qbits
from optimum.quanto.tensor.weights.awq import qbits as awq_qbits
from quanto_kernels.quanto.awq_bf16 import Bf16AWQLinearFunction

calls = {"function": 0}
for fn_cls in (fp8_qbits.MarlinF8QBytesLinearFunction, awq_qbits.AWQWeightQBitsLinearFunction,
               Bf16AWQLinearFunction):
    original_apply = fn_cls.apply
    def counted(*a, _orig=original_apply, **kw):
        calls["function"] += 1
        return _orig(*a, **kw)
    fn_cls.apply = counted

def make(qtype, dtype, k, n, bias, seed):
    g = torch.Generator(device="cuda"); g.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=bias, device="cuda", dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(n, k, generator=g, device="cuda") * 2 - 1) * k ** -0.5)
        if bias:
            lin.bias.copy_(0.5 * torch.randn(n, generator=g, device="cuda"))
    model = torch.nn.Sequential(lin)
    quantize(model, weights=qtypes[qtype]); freeze(model)
    return model[0], g

def full_path(layer, x):
    return QLinear.forward.__wrapped__(layer, x)

def reference(layer, x):
    ref = x.double() @ layer.weight.dequantize().double().t()
    return ref if layer.bias is None else ref + layer.bias.double()

def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())

out = {"cases": [], "declines": {}}
for c in ARGS["cases"]:
    dtype = getattr(torch, c["dtype"])
    layer, g = make(c["qtype"], dtype, c["k"], c["n"], c["bias"], c["seed"])
    for lead in c["leads"]:
        x = torch.randn(*lead, c["k"], generator=g, device="cuda", dtype=dtype)
        with torch.no_grad():
            before = calls["function"]
            y_fast = layer(x)
            fast_taken = calls["function"] == before
            y_full = full_path(layer, x)
            full_ran = calls["function"] == before + 1
        out["cases"].append({
            "name": c["name"], "dtype": c["dtype"], "lead": lead, "type": type(layer.weight).__name__, "fast_taken": fast_taken,
            "full_ran": full_ran, "shape_ok": list(y_fast.shape) == list(y_full.shape) == lead + [c["n"]],
            "dtype_ok": y_fast.dtype == dtype, "identical": bool(torch.equal(y_fast, y_full)),
            "rel_fast_full": rel(y_fast, y_full), "rel_fast_ref": rel(y_fast, reference(layer, x)),
            "rel_full_ref": rel(y_full, reference(layer, x)), "finite": bool(torch.isfinite(y_fast).all()),
        })

# Cases where the fast path must decline (quanto's Function runs) and the result stays right.
layer, g = make("qfloat8_e4m3fn", torch.bfloat16, 512, 256, True, 7)
def declined(fn):
    before = calls["function"]
    y, x = fn()
    return {"declined": calls["function"] > before, "rel_ref": rel(y.detach(), reference(layer, x.detach()))}

def grad_input():
    x = torch.randn(3, 512, generator=g, device="cuda", dtype=torch.bfloat16).requires_grad_()
    return layer(x), x
out["declines"]["grad"] = declined(grad_input)

def misaligned():
    flat = torch.randn(4 * 512 + 1, generator=g, device="cuda", dtype=torch.bfloat16)
    x = flat[1:].view(4, 512)
    with torch.no_grad():
        return layer(x), x
out["declines"]["misaligned"] = declined(misaligned)

def strided():
    x = torch.randn(512, 6, generator=g, device="cuda", dtype=torch.bfloat16).t()
    with torch.no_grad():
        return layer(x), x
out["declines"]["non_contiguous"] = declined(strided)

class Mode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))
def with_mode():
    x = torch.randn(2, 512, generator=g, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad(), Mode():
        return layer(x), x
out["declines"]["torch_function_mode"] = declined(with_mode)

try:
    with torch.no_grad():
        layer(torch.randn(2, 512, device="cuda", dtype=torch.float16))
    out["wrong_dtype"] = "no error"
except Exception as exc:
    out["wrong_dtype"] = f"{type(exc).__name__}: {exc}"

# Swap in another layer's quantized weight: the cached checks must not keep the old tensors.
other, _ = make("qfloat8_e4m3fn", torch.bfloat16, 512, 256, True, 8)
x = torch.randn(5, 512, generator=g, device="cuda", dtype=torch.bfloat16)
with torch.no_grad():
    layer(x)
    layer.weight = other.weight
    y = layer(x)
out["swap_rel"] = rel(y, x.double() @ other.weight.dequantize().double().t() + layer.bias.double())
RESULT.update(out)
emit()
'''

CASES = [
    # name, qtype, dtype, K, N, bias, leading dims (M on both sides of the fused-kernel limit)
    ("fp8-bf16-bias", "qfloat8_e4m3fn", "bfloat16", 512, 384, True, [[1], [3, 5], [16], [2, 40], [300]]),
    ("fp8-fp16-nobias", "qfloat8_e4m3fn", "float16", 256, 128, False, [[1], [7], [130]]),
    ("awq-fp16-bias", "qint4", "float16", 384, 256, True, [[1], [2, 3], [64]]),
    ("awq-bf16-bias", "qint4", "bfloat16", 384, 256, True, [[1], [2, 3], [16], [64], [3, 100]]),
    ("awq-bf16-nobias", "qint4", "bfloat16", 256, 132, False, [[1], [7], [130]]),
]


def test_fast_path_matches_quantos_path_and_declines_when_it_must():
    pytest.importorskip("optimum.quanto")
    cases = [{"name": name, "qtype": qt, "dtype": dt, "k": k, "n": n, "bias": bias, "leads": leads,
              "seed": sp.case_seed("fast", name)} for name, qt, dt, k, n, bias, leads in CASES]
    res = tq.run_child(FAST_SCRIPT, {"cases": cases}, tq._child_env())
    tq._assert_no_jit(res)
    for case in res["cases"]:
        what = f"{case['name']} input {case['lead']}+[K]"
        tol = sp.GEMM_TOL[getattr(torch, case["dtype"])].fro
        want_type = {"qfloat8_e4m3fn": "MarlinF8QBytesTensor", "float16": "AWQWeightQBitsTensor",
                     "bfloat16": "Bf16AWQWeightQBitsTensor"}
        assert case["type"] == want_type["qfloat8_e4m3fn" if case["name"].startswith("fp8") else case["dtype"]], (
            f"{what}: {case['type']}")
        assert case["fast_taken"], f"{what}: quanto's autograd Function ran; the fast path was not taken"
        assert case["full_ran"], f"{what}: the comparison did not run quanto's full path"
        assert case["shape_ok"] and case["dtype_ok"] and case["finite"], f"{what}: {case}"
        assert case["rel_fast_ref"] <= tol, f"{what}: error {case['rel_fast_ref']:.2e} vs fp64 (limit {tol:.1e})"
        assert case["rel_full_ref"] <= tol, f"{what}: full path error {case['rel_full_ref']:.2e} vs fp64"
        rows = 1
        for d in case["lead"]:
            rows *= d
        # The same fused kernel and, without a bias the kernel adds itself, the same bias add: the same bits.
        # The FP8 GEMV adds the bias before its one rounding (quanto's path rounds, then adds).
        fused_bias = case["name"].startswith("fp8") and "nobias" not in case["name"]
        if rows <= 16 and not fused_bias:
            assert case["identical"], f"{what}: differs from quanto's path ({case['rel_fast_full']:.2e})"
        else:
            assert case["rel_fast_full"] <= tol, f"{what}: {case['rel_fast_full']:.2e} from quanto's path"
    for name, d in res["declines"].items():
        assert d["declined"], f"{name}: the fast path should have declined and let quanto's path run"
        assert d["rel_ref"] <= sp.GEMM_TOL[torch.bfloat16].fro, f"{name}: error {d['rel_ref']:.2e}"
    assert res["wrong_dtype"].startswith("TypeError") and "dtype" in res["wrong_dtype"], res["wrong_dtype"]
    assert res["swap_rel"] <= sp.GEMM_TOL[torch.bfloat16].fro, f"swapped weight not used: {res['swap_rel']:.2e}"
