"""optimum-quanto's qint8 weights (``quantize(model, weights=qint8); freeze(model)``) on our int8 kernels.

In this process (GPU): a frozen qint8 model on CUDA runs ``quanto_kernels::int8_gemm`` -- proved by the
C ABI recorder (``native_calls``): the fused ``int8_gemv`` entry point for M <= the family's limit, the
``int8_dequantize`` one (then cuBLAS) above it, one call per Linear and forward -- through both doors
the shim opens: the short QLinear path (plain inference) and quanto's own autograd Function
(``WeightQBytesLinearFunction``, taken when the input requires grad, or by ``F.linear`` on the weight).
Results are compared with what plain quanto computes, in fp64: ``x @ w.dequantize().T + b`` (the bias
subtracted first, so a dropped bias shows); M = 1, 16, 300; fp16 and bf16.

Save/load (children, ``sys.executable -c``; the plain side runs with QUANTO_KERNELS_DISABLE=1): a
model saved with ``safetensors`` + ``quantization_map`` on one side is rebuilt with ``requantize`` on
the other and must (1) hold quanto's own layout (``WeightQBytesTensor``, ``_data`` int8 (N, K),
``_scale`` (N, 1)), (2) re-save to the same state dict bit for bit, (3) give the saver's outputs within
GEMM rounding and its layers' own fp64 products. On CUDA the quanto_kernels side must have run our int8
entry points and the plain side none; on the CPU (this machine in CI) both sides are quanto's own CPU
path -- our kernels are CUDA-only -- and the format round trip is what is checked.
"""

from __future__ import annotations

import pytest
import torch

import support as sp
from quanto_shim import test_gpu_quanto as tq

pytest.importorskip("optimum.quanto")

DEV = "cuda"
GPU = [pytest.mark.gpu, sp.requires_gpu]
DTYPES = [torch.float16, torch.bfloat16]


def _dtype_id(d):
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}[d]


# =============================================================================================
# In this process (GPU)
# =============================================================================================


def _qint8_model(k, n, dtype, seed):
    from optimum.quanto import freeze, qint8, quantize

    model, g = sp.linear_case(k, n, dtype, seed)
    quantize(model, weights=qint8)
    freeze(model)
    w = model[0].weight
    assert type(w).__name__ == "WeightQBytesTensor" and w.qtype.name == "qint8", type(w).__name__
    assert w._data.dtype == torch.int8 and tuple(w._data.shape) == (n, k) and tuple(w._scale.shape) == (n, 1)
    assert w._scale.dtype == dtype and w.activation_qtype is None
    return model, g


def _expected_entry(ops, rows, k):
    return "int8_gemv" if rows <= sp.fused_limit(ops, "int8") and k % 32 == 0 else "int8_dequantize"


def _check_against_plain_quanto(y, x, qlin, dtype, what):
    """y against plain quanto's computation in fp64: x @ w.dequantize().T, bias subtracted first."""
    with torch.no_grad():
        deq = qlin.weight.dequantize()
        bias = qlin.bias.detach()
    n = deq.shape[0]
    assert y.dtype == dtype and tuple(y.shape) == tuple(x.shape[:-1]) + (n,), f"{what}: {y.dtype} {tuple(y.shape)}"
    sp.assert_all_finite(y, what)
    rows = y.numel() // n
    prod = sp.matmul_reference(x.reshape(rows, -1), deq)
    assert float(bias.double().norm()) * rows**0.5 > 0.3 * float(prod.norm()), f"{what}: bias too small to prove"
    sp.assert_gemm_close(y.reshape(rows, n).double() - bias.double(), prod, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("k,n", [(512, 384), (1000, 136), (96, 100)], ids=lambda v: str(v))
class TestQint8LinearOnOurKernels:
    pytestmark = GPU

    def test_fast_path(self, quanto_patched, ops, native_calls, k, n, dtype):
        model, g = _qint8_model(k, n, dtype, ("q-int8-fast", k, n, str(dtype)))
        for lead in [(1,), (16,), (300,), (2, 8), (3, 100)]:
            x = torch.randn(*lead, k, generator=g, device=DEV, dtype=dtype)
            rows = x.numel() // k
            what = f"qint8 Linear({k}, {n}) {_dtype_id(dtype)} input {lead}+[K] (QLinear fast path)"
            with torch.no_grad():
                sp.poison_allocator()
                native_calls.clear()
                y = model(x)
            assert native_calls.names == [_expected_entry(ops, rows, k)], f"{what}: ran {native_calls.names}"
            _check_against_plain_quanto(y, x, model[0], dtype, what)

    def test_quantos_autograd_function(self, quanto_patched, ops, native_calls, k, n, dtype):
        """The fast path declines (input requires grad / F.linear on the weight): quanto's own Function runs,
        and the shim sends it to int8_gemm too; the gradient (quanto's, from dequantize()) still works."""
        import torch.nn.functional as F
        from optimum.quanto.tensor.weights.qbytes import WeightQBytesLinearFunction

        assert getattr(WeightQBytesLinearFunction.forward, "_quanto_kernels_int8", False), "int8 route not installed"
        model, g = _qint8_model(k, n, dtype, ("q-int8-fn", k, n, str(dtype)))
        qlin = model[0]
        for m in (1, 16, 300):
            x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
            what = f"qint8 Linear({k}, {n}) {_dtype_id(dtype)} M={m}"
            xg = x.clone().requires_grad_()
            native_calls.clear()
            y = model(xg)
            assert native_calls.names == [_expected_entry(ops, m, k)], f"{what} (grad): ran {native_calls.names}"
            _check_against_plain_quanto(y.detach(), x, qlin, dtype, what + " (autograd Function)")
            gy = torch.randn(m, n, generator=g, device=DEV, dtype=dtype)
            y.backward(gy)
            with torch.no_grad():
                want = sp.matmul_reference(gy, qlin.weight.dequantize().t())
            assert xg.grad is not None and xg.grad.shape == x.shape
            sp.assert_gemm_close(xg.grad, want, dtype, what + " input gradient")
            with torch.no_grad():
                native_calls.clear()
                y2 = F.linear(x, qlin.weight, qlin.bias)
            assert native_calls.names == [_expected_entry(ops, m, k)], f"{what} (F.linear): ran {native_calls.names}"
            _check_against_plain_quanto(y2, x, qlin, dtype, what + " (F.linear)")

    def test_strided_and_offset_inputs_still_work(self, quanto_patched, ops, native_calls, k, n, dtype):
        """Activations plain quanto takes (a transposed view, a view one element into a buffer, a column
        slice): the short path declines them, quanto's Function takes them -- and must still give plain
        quanto's result, not the op's "must be contiguous" / "16-byte aligned" errors."""
        model, g = _qint8_model(k, n, dtype, ("q-int8-strided", k, n, str(dtype)))
        for m in (1, 16, 300):
            views = {
                "transposed": torch.randn(k, m, generator=g, device=DEV, dtype=dtype).t(),
                "offset-by-one-element": torch.randn(m * k + 1, generator=g, device=DEV, dtype=dtype)[1:].view(m, k),
                "column-slice": torch.randn(m, 2 * k, generator=g, device=DEV, dtype=dtype)[:, k:],
            }
            for name, x in views.items():
                what = f"qint8 Linear({k}, {n}) {_dtype_id(dtype)} M={m} {name} input"
                with torch.no_grad():
                    native_calls.clear()
                    try:
                        y = model(x)
                    except (ValueError, TypeError) as exc:
                        pytest.fail(f"{what}: plain quanto takes this input, the shim raised {type(exc).__name__}: {exc}")
                assert len(native_calls.names) == 1 and native_calls.names[0].startswith("int8_"), (
                    f"{what}: ran {native_calls.names}")
                _check_against_plain_quanto(y, x.contiguous(), model[0], dtype, what)


# =============================================================================================
# Save / load across quanto_kernels and plain quanto (children)
# =============================================================================================

SAVE_LOAD_SCRIPT = r'''
import json
from pathlib import Path
import torch
import quanto_kernels
import optimum.quanto
from optimum.quanto import freeze, qint8, quantize, quantization_map, requantize
from safetensors.torch import load_file, save_file
from quanto_kernels._native import abi

RESULT["shim"] = shim_facts()
CALLS = {}
def _recorder(name):
    real = getattr(abi, name)
    def record(**kw):
        CALLS[name] = CALLS.get(name, 0) + 1
        return real(**kw)
    setattr(abi, name, record)
for _name in ("int8_gemv", "int8_dequantize", "int8_gemv_workspace_bytes"):
    _recorder(_name)

dev, dtype = ARGS["device"], getattr(torch, ARGS["dtype"])
K, H, N = ARGS["k"], ARGS["h"], ARGS["n"]
d = Path(ARGS["dir"])

WEIGHTS = qint8
''' + tq.SAVE_OR_LOAD_TWO_LAYERS + r'''
layers = [model[0], model[2]]
RESULT["types"] = [type(l.weight).__name__ for l in layers]
RESULT["qtypes"] = [l.weight.qtype.name for l in layers]
RESULT["layout"] = [[str(l.weight._data.dtype), list(l.weight._data.shape), list(l.weight._scale.shape),
                     str(l.weight._scale.dtype), str(l.bias.dtype), l.weight._data.device.type] for l in layers]

def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())

outputs, errors = {}, []
with torch.no_grad():
    for name, x in inputs.items():
        h = model[0](x)
        y = model(x)
        for layer, inp, out in ((model[0], x, h), (model[2], model[1](h), y)):
            prod = inp.double().reshape(-1, inp.shape[-1]) @ layer.weight.dequantize().double().t()
            errors.append(rel(out.double().reshape(prod.shape) - layer.bias.double(), prod))
        outputs[name] = y.cpu().contiguous()
RESULT["layer_errors"] = errors
RESULT["finite"] = all(bool(torch.isfinite(y).all()) for y in outputs.values())
RESULT["calls"] = {k: v for k, v in CALLS.items() if not k.endswith("_bytes")}

sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
RESULT["state_dict"] = {k: [str(v.dtype), list(v.shape)] for k, v in sd.items()}
if ARGS["mode"] == "save":
    save_file(sd, str(d / "model.safetensors"))
    (d / "qmap.json").write_text(json.dumps(quantization_map(model)))
    save_file({k: v.cpu().contiguous() for k, v in inputs.items()}, str(d / "inputs.safetensors"))
    save_file(outputs, str(d / "outputs.safetensors"))
else:
    saved = load_file(str(d / "model.safetensors"))
    RESULT["state_dict_same"] = sorted(saved) == sorted(sd) and all(torch.equal(saved[k], sd[k]) for k in sd)
    theirs = load_file(str(d / "outputs.safetensors"))
    RESULT["vs_saver"] = {k: rel(outputs[k], theirs[k]) for k in outputs}
emit()
'''

K_, H_, N_ = 256, 160, 100  # both layers take the rule (K % 32 == 0); 160 and 100 no multiples of 64
LEADS = [[1], [16], [300], [2, 8]]


def _run_side(side, mode, device, dtype, tmp_path):
    # Each side imports its own copy of quanto: where quanto_kernels does not serve it (the plain side, or
    # any side on the CPU) quanto may compile its extensions, and that must land in the temporary directory.
    env = tq.private_quanto_env(tmp_path, plain=side == "plain")
    args = {"mode": mode, "device": device, "dtype": str(dtype).replace("torch.", ""), "k": K_, "h": H_, "n": N_,
            "dir": str(tmp_path), "seed": sp.case_seed("int8-save-load", device, str(dtype)) % 2**31, "leads": LEADS}
    res = tq.run_child(SAVE_LOAD_SCRIPT, args, env)
    if res["shim"]["patched"]:  # where quanto_kernels serves quanto, nothing may be compiled
        tq._assert_no_jit(res)
    return res


def _check_side(res, side, device, dtype, what):
    tol = sp.GEMM_TOL[dtype]
    assert res["types"] == ["WeightQBytesTensor"] * 2 and res["qtypes"] == ["qint8"] * 2, f"{what}: {res['types']}"
    dt = str(dtype)
    assert res["layout"] == [["torch.int8", [H_, K_], [H_, 1], dt, dt, device],
                             ["torch.int8", [N_, H_], [N_, 1], dt, dt, device]], f"{what}: {res['layout']}"
    for prefix, (n, k) in (("0", (H_, K_)), ("2", (N_, H_))):
        assert res["state_dict"][f"{prefix}.weight._data"] == ["torch.int8", [n, k]], res["state_dict"]
        assert res["state_dict"][f"{prefix}.weight._scale"] == [dt, [n, 1]], res["state_dict"]
    assert res["finite"], f"{what}: non-finite output"
    assert max(res["layer_errors"]) <= tol.fro, f"{what}: layer errors vs x @ dequantize().T: {res['layer_errors']}"
    facts = res["shim"]
    if side == "plain":
        assert facts["patched"] is False and "QUANTO_KERNELS_DISABLE" in facts["reason"], facts
        assert res["calls"] == {}, f"{what}: plain quanto reached our library: {res['calls']}"
    elif device == "cuda":
        tq._assert_served(facts)
        # per input: layer 0 alone, then the model (layers 0 and 2): three int8 GEMMs, each on the rule's path
        limit = 64  # the int8 family's fused-kernel limit (asserted in tests/ops/test_gpu_int8.py)
        want_fused = 3 * sum(1 for lead in LEADS if _prod(lead) <= limit)
        want_deq = 3 * len(LEADS) - want_fused
        assert res["calls"] == {"int8_gemv": want_fused, "int8_dequantize": want_deq}, (
            f"{what}: our int8 entry points ran {res['calls']}")
    else:  # CPU: quanto's own CPU path; nothing is patched without a GPU, and no kernel may run
        assert res["calls"] == {}, f"{what}: {res['calls']}"


def _prod(lead):
    out = 1
    for d in lead:
        out *= d
    return out


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=GPU)]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["kernels-to-plain", "plain-to-kernels"])
def test_state_dict_saved_on_one_side_loads_and_runs_on_the_other(direction, device, dtype, tmp_path, subprocess_env):
    saver, loader = ("kernels", "plain") if direction == "kernels-to-plain" else ("plain", "kernels")
    saved = _run_side(saver, "save", device, dtype, tmp_path)
    _check_side(saved, saver, device, dtype, f"{direction} {device}: saver ({saver})")
    loaded = _run_side(loader, "load", device, dtype, tmp_path)
    _check_side(loaded, loader, device, dtype, f"{direction} {device}: loader ({loader})")
    assert loaded["state_dict_same"], f"{direction} {device}: the reloaded model re-saves to a different state dict"
    assert loaded["state_dict"] == saved["state_dict"]
    # the same model and inputs on both sides: the outputs agree to GEMM rounding (two Linears, a GELU)
    limit = 2 * sp.GEMM_TOL[dtype].fro
    assert max(loaded["vs_saver"].values()) <= limit, f"{direction} {device}: outputs differ {loaded['vs_saver']}"
