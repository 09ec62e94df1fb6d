"""optimum-quanto's qint4 weights on a bf16 model (``quantize(model, weights=qint4); freeze(model)``) on
our int4 kernels, where plain quanto picks torch's TinyGemm kernel.

In this process (GPU): the frozen weight is the shim's ``Bf16AWQWeightQBitsTensor`` (quanto's AWQ
layout: int16 (N/4, K) codes, bf16 (K/128, N) scales and negated shifts), and its linear runs
``quanto_kernels::awq_int4_gemm`` -- proved by the C ABI recorder (``native_calls``): the fused
``awq_int4_gemv`` entry point for M <= the family's limit, ``awq_int4_dequantize`` (then cuBLAS) above
it, once per Linear and forward, with the bf16 dtype code -- through every door: the short QLinear
path, the weight's autograd Function (input requiring grad: the gradient is quanto's, from
``dequantize()``) and ``F.linear`` on the weight. Results are compared in fp64 with what plain quanto
would compute from the same weight: ``x @ w.dequantize().T + b`` (bias subtracted first, so a dropped
bias shows); M = 1, 16, 300 and leading dimensions. quanto's own ``dequantize()``, ``unpack()`` and
``weight_qbits_tensor()`` keep working on the class, and moving the weight to the CPU and back gives
quanto's CPU class and ours again.

Save/load (children, ``sys.executable -c``; the plain side runs with QUANTO_KERNELS_DISABLE=1): a
model saved with ``safetensors`` + ``quantization_map`` on one side is rebuilt with ``requantize`` on
the other. The state dict is quanto's generic packing on both sides (uint8 packed codes, (N*K/128, 1)
scales and shifts); the loader must hold its own class (ours on CUDA with the shim, TinyGemm in plain
quanto and on the CPU), re-save the same codes and scales bit for bit (and the same shifts, except
after TinyGemm, which stores them lossily in bf16), and give the saver's outputs within GEMM rounding
and its layers' own fp64 products. On CUDA the quanto_kernels side must have run our AWQ int4 entry
points and the plain side none; on the CPU (this machine in CI) both sides are quanto's own CPU path.

Plain quanto always loads on the CPU: rebuilding a qint4 weight from a state dict unpacks quanto's
generic packing with its own ``quanto::unpack``, which on CUDA means JIT-compiling quanto's CUDA
extension (minutes, nvcc, build files written into quanto's package) -- the very thing quanto_kernels
exists to avoid. Its C++ CPU extension is compiled by quanto itself the first time (plain quanto's own
behaviour, so the no-JIT check applies to the served side only); the plain side runs on a private copy of
the package in the test's temporary directory, so that build never touches the installed quanto. Plain
quanto still saves on CUDA.
"""

from __future__ import annotations

import pytest
import torch

import support as sp
from quanto_shim import test_gpu_quanto as tq

pytest.importorskip("optimum.quanto")

DEV = "cuda"
GPU = [pytest.mark.gpu, sp.requires_gpu]
BF16 = torch.bfloat16
OUR_CLASS = "Bf16AWQWeightQBitsTensor"


# =============================================================================================
# In this process (GPU)
# =============================================================================================


def _qint4_bf16_model(k, n, seed):
    from optimum.quanto import freeze, qint4, quantize

    model, g = sp.linear_case(k, n, BF16, seed)
    quantize(model, weights=qint4)
    freeze(model)
    w = model[0].weight
    assert type(w).__name__ == OUR_CLASS and w.qtype.name == "qint4", type(w).__name__
    assert w._data._data.dtype == torch.int16 and tuple(w._data._data.shape) == (n // 4, k)
    assert w._scale.dtype == BF16 and tuple(w._scale.shape) == (k // 128, n)
    assert w._shift.dtype == BF16 and tuple(w._shift.shape) == (k // 128, n)
    return model, g


def _expected_entry(ops, rows):
    return "awq_int4_gemv" if rows <= sp.fused_limit(ops, "awq") else "awq_int4_dequantize"


def _assert_bf16_calls(native_calls, want, what):
    from quanto_kernels._native import abi

    assert native_calls.names == [want], f"{what}: ran {native_calls.names}"
    codes = [kw["dtype"] for name, kw in native_calls.calls if name == want]
    assert codes == [abi.DTYPE_BFLOAT16], f"{what}: dtype codes {codes}"


def _check_against_plain_quanto(y, x, qlin, what):
    """y against plain quanto's computation in fp64: x @ w.dequantize().T, bias subtracted first."""
    with torch.no_grad():
        deq = qlin.weight.dequantize()
        bias = qlin.bias.detach()
    n = deq.shape[0]
    assert y.dtype == BF16 and tuple(y.shape) == tuple(x.shape[:-1]) + (n,), f"{what}: {y.dtype} {tuple(y.shape)}"
    sp.assert_all_finite(y, what)
    rows = y.numel() // n
    prod = sp.matmul_reference(x.reshape(rows, -1), deq)
    assert float(bias.double().norm()) * rows**0.5 > 0.3 * float(prod.norm()), f"{what}: bias too small to prove"
    sp.assert_gemm_close(y.reshape(rows, n).double() - bias.double(), prod, BF16, what)


SHAPES = [(512, 384), (1024, 132), (256, 64)]  # N = 132: not a multiple of 8; N = 64: narrower than quanto's AWQ rule


@pytest.mark.parametrize("k,n", SHAPES, ids=lambda v: str(v))
class TestQint4Bf16LinearOnOurKernels:
    pytestmark = GPU

    def test_fast_path(self, quanto_patched, ops, native_calls, k, n):
        model, g = _qint4_bf16_model(k, n, ("q-int4-bf16-fast", k, n))
        for lead in [(1,), (16,), (17,), (300,), (2, 8), (3, 100)]:
            x = torch.randn(*lead, k, generator=g, device=DEV, dtype=BF16)
            rows = x.numel() // k
            what = f"qint4 bf16 Linear({k}, {n}) input {lead}+[K] (QLinear fast path)"
            with torch.no_grad():
                sp.poison_allocator()
                native_calls.clear()
                y = model(x)
            _assert_bf16_calls(native_calls, _expected_entry(ops, rows), what)
            _check_against_plain_quanto(y, x, model[0], what)

    def test_autograd_function_and_f_linear(self, quanto_patched, ops, native_calls, k, n):
        """The fast path declines (input requires grad / F.linear on the weight): the weight's own Function
        runs our op; the gradient (quanto's, from dequantize()) still works."""
        import torch.nn.functional as F

        model, g = _qint4_bf16_model(k, n, ("q-int4-bf16-fn", k, n))
        qlin = model[0]
        for m in (1, 16, 300):
            x = torch.randn(m, k, generator=g, device=DEV, dtype=BF16)
            what = f"qint4 bf16 Linear({k}, {n}) M={m}"
            xg = x.clone().requires_grad_()
            native_calls.clear()
            y = model(xg)
            _assert_bf16_calls(native_calls, _expected_entry(ops, m), what + " (grad)")
            _check_against_plain_quanto(y.detach(), x, qlin, what + " (autograd Function)")
            gy = torch.randn(m, n, generator=g, device=DEV, dtype=BF16)
            y.backward(gy)
            with torch.no_grad():
                want = sp.matmul_reference(gy, qlin.weight.dequantize().t())
            assert xg.grad is not None and xg.grad.shape == x.shape
            sp.assert_gemm_close(xg.grad, want, BF16, what + " input gradient")
            with torch.no_grad():
                native_calls.clear()
                y2 = F.linear(x, qlin.weight, qlin.bias)
            _assert_bf16_calls(native_calls, _expected_entry(ops, m), what + " (F.linear)")
            _check_against_plain_quanto(y2, x, qlin, what + " (F.linear)")

    def test_strided_and_offset_inputs_still_work(self, quanto_patched, ops, native_calls, k, n):
        """Views plain quanto takes (transposed, offset by one element, a column slice): the short path
        declines them, the weight's Function makes them dense and still runs our kernels."""
        model, g = _qint4_bf16_model(k, n, ("q-int4-bf16-strided", k, n))
        for m in (1, 300):
            views = {
                "transposed": torch.randn(k, m, generator=g, device=DEV, dtype=BF16).t(),
                "offset-by-one-element": torch.randn(m * k + 1, generator=g, device=DEV, dtype=BF16)[1:].view(m, k),
                "column-slice": torch.randn(m, 2 * k, generator=g, device=DEV, dtype=BF16)[:, k:],
            }
            for name, x in views.items():
                what = f"qint4 bf16 Linear({k}, {n}) M={m} {name} input"
                with torch.no_grad():
                    native_calls.clear()
                    y = model(x)
                _assert_bf16_calls(native_calls, _expected_entry(ops, m), what)
                _check_against_plain_quanto(y, x.contiguous(), model[0], what)

    def test_quantos_own_methods_keep_working(self, quanto_patched, ops, k, n):
        """dequantize(), _data.unpack() and weight_qbits_tensor() are quanto's, on our class: they agree with
        the codes, with our dequantize kernel (one rounding apart at most) and with each other."""
        model, _ = _qint4_bf16_model(k, n, ("q-int4-bf16-methods", k, n))
        w = model[0].weight
        with torch.no_grad():
            codes = w._data.unpack()
            assert codes.dtype == torch.uint8 and tuple(codes.shape) == (n, k) and int(codes.max()) <= 15
            assert codes.unique().numel() > 8, "the codes of a random layer use most of 0..15"
            # The AWQ shift is stored negated: natural-order scale S and zero Z give Wd = S*q + Z.
            ref = sp.int4_dequant_reference(codes, w._scale, w._shift)
            bound = sp.int4_dequant_bound(codes, w._scale, ref)
            theirs = w.dequantize()
            assert theirs.dtype == BF16 and sp.max_abs_over(theirs, ref, bound) <= 0
            ours = ops.awq_int4_dequantize(w._data._data, w._scale, w._shift)
            assert sp.max_abs_over(ours, ref, bound) <= 0
            generic = w.weight_qbits_tensor()
            assert type(generic).__name__ == "WeightQBitsTensor"
            # quanto groups axis-0 weights as (N * K/128, 128): row n * K/128 + g is group g of channel n
            assert torch.equal(generic._data.unpack(), codes.reshape(-1, 128))
            assert sp.max_abs_over(generic.dequantize(), ref, bound) <= 0


# TinyGemm's lossy shift (quanto's own behaviour, quanto/tensor/weights/tinygemm): the shift is stored
# as the bf16 mid-range offset 8*S - shift and recovered as 8*S - offset; |shift| <= 15 S for 4-bit
# codes, so the two bf16 roundings move it by at most 2^-8 (23 + 15) S < 0.15 S. Allowed: 0.25 S.
TINYGEMM_SHIFT_SLACK = 0.25


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("k,n", [(512, 384), (256, 64)], ids=lambda v: str(v))  # TinyGemm on the CPU needs N % 16 == 0
def test_moving_to_the_cpu_and_back(quanto_patched, ops, native_calls, k, n):
    """.to("cpu") gives quanto's CPU class (TinyGemm), .to("cuda") ours again, with the same weight up to
    TinyGemm's lossy shift, and our kernels run again."""
    model, g = _qint4_bf16_model(k, n, ("q-int4-bf16-move", k, n))
    with torch.no_grad():
        before = model[0].weight.dequantize()
        model.to("cpu")
        assert type(model[0].weight).__name__ == "TinyGemmWeightQBitsTensor"
        model.to(DEV)
        assert type(model[0].weight).__name__ == OUR_CLASS
        after = model[0].weight.dequantize()
        scale = model[0].weight._scale.double().repeat_interleave(128, dim=0).t()
        slack = TINYGEMM_SHIFT_SLACK * scale + 2.0**-8 * (before.double().abs() + after.double().abs())
        assert float(((after.double() - before.double()).abs() - slack).max()) <= 0
        x = torch.randn(3, k, generator=g, device=DEV, dtype=BF16)
        native_calls.clear()
        y = model(x)
    _assert_bf16_calls(native_calls, "awq_int4_gemv", f"moved Linear({k}, {n})")
    _check_against_plain_quanto(y, x, model[0], f"moved Linear({k}, {n})")


# =============================================================================================
# Save / load across quanto_kernels and plain quanto (children)
# =============================================================================================

SAVE_LOAD_SCRIPT = r'''
import json
from pathlib import Path
import torch
import quanto_kernels
import optimum.quanto
from optimum.quanto import freeze, qint4, quantize, quantization_map, requantize
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
for _name in ("awq_int4_gemv", "awq_int4_dequantize", "unpack"):
    _recorder(_name)

dev, dtype = ARGS["device"], torch.bfloat16
K, H, N = ARGS["k"], ARGS["h"], ARGS["n"]
d = Path(ARGS["dir"])

WEIGHTS = qint4
''' + tq.SAVE_OR_LOAD_TWO_LAYERS + r'''
layers = [model[0], model[2]]
RESULT["types"] = [type(l.weight).__name__ for l in layers]
RESULT["qtypes"] = [l.weight.qtype.name for l in layers]
RESULT["devices"] = [l.weight.device.type for l in layers]

def reference_weight(w):
    """The layer's own dequantize(). Plain quanto's on CUDA would unpack with its JIT-compiled CUDA
    extension: there, dequantize the weight moved to the CPU (quanto's own CPU path) instead."""
    if w.device.type == "cuda" and not RESULT["shim"]["patched"]:
        return w.to("cpu").dequantize().to(w.device)
    return w.dequantize()

outputs, errors = {}, []
with torch.no_grad():
    CALLS.clear()
    for name, x in inputs.items():
        h = model[0](x)
        y = model(x)
        outputs[name] = y.cpu().contiguous()
    RESULT["calls"] = {k: v for k, v in CALLS.items() if v}
    for name, x in inputs.items():
        h = model[0](x)
        for layer, inp, out in ((model[0], x, h), (model[2], model[1](h), model(x))):
            prod = inp.double().reshape(-1, inp.shape[-1]) @ reference_weight(layer.weight).double().t()
            errors.append(rel(out.double().reshape(prod.shape) - layer.bias.double(), prod))
RESULT["layer_errors"] = errors
RESULT["finite"] = all(bool(torch.isfinite(y).all()) for y in outputs.values())

sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
RESULT["state_dict"] = {k: [str(v.dtype), list(v.shape)] for k, v in sd.items()}
if ARGS["mode"] == "save":
    save_file(sd, str(d / "model.safetensors"))
    (d / "qmap.json").write_text(json.dumps(quantization_map(model)))
    save_file({k: v.cpu().contiguous() for k, v in inputs.items()}, str(d / "inputs.safetensors"))
    save_file(outputs, str(d / "outputs.safetensors"))
else:
    saved = load_file(str(d / "model.safetensors"))
    RESULT["same_keys"] = sorted(saved) == sorted(sd)
    RESULT["differs"] = sorted(k for k in sd if k in saved and not torch.equal(saved[k], sd[k]))
    # shifts after TinyGemm's lossy round trip: the largest change, in units of the group's scale
    RESULT["shift_change_in_scales"] = max(
        [float(((saved[k].double() - sd[k].double()).abs() / saved[k.replace("_shift", "_scale")].double()).max())
         for k in sd if k.endswith("_shift")] or [0.0])
    theirs = load_file(str(d / "outputs.safetensors"))
    RESULT["vs_saver"] = {k: rel(outputs[k], theirs[k]) for k in outputs}
emit()
'''

K_, H_, N_ = 256, 384, 144  # K and H multiples of 128 (group 128); N_ = 144 no multiple of 64 (TinyGemm on the CPU needs N % 16 == 0)
LEADS = [[1], [16], [300], [2, 8]]
FUSED_LIMIT = 16  # the int4 fused-kernel limit (qk_max_gemv_m; asserted by tests/native)


def _run_side(side, mode, device, tmp_path, seed_device):
    # Each side imports its own copy of quanto: where quanto_kernels does not serve it (the plain side, or
    # any side on the CPU) quanto compiles its C++ extension, and that must land in the temporary directory.
    env = tq.private_quanto_env(tmp_path, plain=side == "plain")
    args = {"mode": mode, "device": device, "k": K_, "h": H_, "n": N_, "dir": str(tmp_path),
            "seed": sp.case_seed("int4-bf16-save-load", seed_device) % 2**31, "leads": LEADS}
    res = tq.run_child(SAVE_LOAD_SCRIPT, args, env)
    if res["shim"]["patched"]:  # where quanto_kernels serves quanto, nothing may be compiled
        tq._assert_no_jit(res)
    return res


def _check_side(res, side, device, what):
    tol = sp.GEMM_TOL[BF16]
    ours = side == "kernels" and device == "cuda"
    want_type = OUR_CLASS if ours else "TinyGemmWeightQBitsTensor"
    assert res["types"] == [want_type] * 2 and res["qtypes"] == ["qint4"] * 2, f"{what}: {res['types']}"
    assert res["devices"] == [device] * 2, f"{what}: {res['devices']}"
    # quanto's generic packing: codes two per byte along the first axis of the grouped (N*K/128, 128)
    # view, one bf16 scale and shift per group.
    for prefix, (n, k) in (("0", (H_, K_)), ("2", (N_, H_))):
        groups = n * k // 128
        sd = res["state_dict"]
        assert sd[f"{prefix}.weight._data._data"] == ["torch.uint8", [groups // 2, 128]], sd
        assert sd[f"{prefix}.weight._scale"] == ["torch.bfloat16", [groups, 1]], sd
        assert sd[f"{prefix}.weight._shift"] == ["torch.bfloat16", [groups, 1]], sd
    assert res["finite"], f"{what}: non-finite output"
    assert max(res["layer_errors"]) <= tol.fro, f"{what}: layer errors vs x @ dequantize().T: {res['layer_errors']}"
    facts = res["shim"]
    if side == "plain":
        assert facts["patched"] is False and "QUANTO_KERNELS_DISABLE" in facts["reason"], facts
        assert res["calls"] == {}, f"{what}: plain quanto reached our library: {res['calls']}"
    elif device == "cuda":
        tq._assert_served(facts)
        # per input: layer 0 alone, then the model (layers 0 and 2): three int4 GEMMs, each on the rule's path
        want_fused = 3 * sum(1 for lead in LEADS if _prod(lead) <= FUSED_LIMIT)
        want_deq = 3 * len(LEADS) - want_fused
        assert res["calls"] == {"awq_int4_gemv": want_fused, "awq_int4_dequantize": want_deq}, (
            f"{what}: our entry points ran {res['calls']}")
    else:  # CPU: quanto's own CPU path (TinyGemm); no native kernel may run
        assert res["calls"] == {}, f"{what}: {res['calls']}"


def _prod(lead):
    out = 1
    for d in lead:
        out *= d
    return out


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=GPU)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("direction", ["kernels-to-plain", "plain-to-kernels"])
def test_state_dict_saved_on_one_side_loads_and_runs_on_the_other(direction, device, tmp_path, subprocess_env):
    saver, loader = ("kernels", "plain") if direction == "kernels-to-plain" else ("plain", "kernels")
    load_device = "cpu" if loader == "plain" else device  # see the module docstring
    saved = _run_side(saver, "save", device, tmp_path, device)
    _check_side(saved, saver, device, f"{direction} {device}: saver ({saver})")
    loaded = _run_side(loader, "load", load_device, tmp_path, device)
    _check_side(loaded, loader, load_device, f"{direction} {device}: loader ({loader} on {load_device})")
    assert loaded["same_keys"] and loaded["state_dict"] == saved["state_dict"]
    # Codes and scales come back bit for bit on every path. Shifts too where the loader holds our class
    # (the AWQ layout stores -shift exactly); TinyGemm keeps a mid-range offset in bf16 instead, which
    # quanto documents as lossy: there a shift may move by up to TINYGEMM_SHIFT_SLACK scales.
    if loaded["types"][0] == OUR_CLASS:
        assert loaded["differs"] == [], f"{direction} {device}: re-saved tensors differ: {loaded['differs']}"
    else:
        assert all(k.endswith("._shift") for k in loaded["differs"]), loaded["differs"]
        assert loaded["shift_change_in_scales"] <= TINYGEMM_SHIFT_SLACK, loaded["shift_change_in_scales"]
    # the same weights and inputs on both sides: outputs agree to GEMM rounding (two Linears, a GELU)
    limit = 2 * sp.GEMM_TOL[BF16].fro
    assert max(loaded["vs_saver"].values()) <= limit, f"{direction} {device}: outputs differ {loaded['vs_saver']}"
