"""Bad inputs, table-driven: the shared machinery of tests/bad_inputs/test_<entry point>.py.

Every public op, every argument, every front end. Front ends: ``torch.ops.quanto_kernels.*`` (the
dispatcher; meta tensors reach the fake impls), ``quanto_kernels.ops.direct.*`` (same checks without
the dispatcher) and quanto's positional bindings
(``_quanto_bindings.QuantoCudaBindings``, what optimum-quanto calls).

Each bad argument must raise a TypeError/ValueError whose message starts with the argument's name
(the binding's own parameter name for the bindings), before anything reaches the native library.
Where torch's dispatcher itself rejects a Python type (a float for an ``int``, an int for a
``Tensor``), it raises its own error naming the argument; that is accepted for that front end.

Devices: ``cpu`` and ``meta`` run everywhere (CI): the type, dtype, shape and size checks come before
any device check, so they fire for CPU and meta tensors too. ``cuda`` runs the same table on the GPU
plus the device-dependent cases (CPU tensor among CUDA ones, another GPU, non-contiguous and offset
views, perm values); there a recorder on the library's ``call`` proves that no native entry point was
reached, and ``torch.cuda.synchronize()`` after every case proves the context is healthy.

Sizes past int32 limits use stride-0 ``expand`` views (no allocation): N*K >= 2^40 is refused like
the C entry points refuse it, and the int4 ops refuse K > 2^30 (their kernels index rows with 32-bit
ints). Zero-size M is not an error: it returns an empty result without calling the library.

quanto's ``workspace`` (fp8_marlin_gemm, marlin_gemm_f16i4) must be an int32 tensor (TypeError
otherwise, as upstream asserts); it is never read or written, so any size and device is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict

import pytest
import torch

import support as sp

from quanto_kernels import ops
from quanto_kernels.quanto.bindings import QuantoCudaBindings

QB = QuantoCudaBindings()
f16, bf16, f32 = torch.float16, torch.bfloat16, torch.float32
i16, i32, i64, u8 = torch.int16, torch.int32, torch.int64, torch.uint8

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("meta", id="meta"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu, sp.requires_gpu]),
]
TWO_GPUS = pytest.mark.skipif(not sp.HAS_GPU or torch.cuda.device_count() < 2,
                              reason="needs 2 CUDA GPUs (tensors on different GPUs)")

# ----------------------------------------------------------------------------- valid arguments
# Small valid inputs built on the CPU from the layout formulas (tests/support.py), then moved.

M, K8, N8, KI, NI = 4, 64, 64, 256, 128


def _cpu_gen(*parts):
    return sp.generator("bad-inputs", *parts, device="cpu")


def _base_cpu() -> Dict[str, Dict[str, object]]:
    g = _cpu_gen("base")
    codes8 = sp.random_fp8_codes(N8, K8, g, device="cpu")
    s8 = sp.random_fp8_scales(N8, f16, g, device="cpu")
    fp8_w, fp8_s = sp.fp8_marlin_layout(codes8), sp.permute_block32(s8.reshape(1, N8))
    a8 = torch.randn(M, K8, generator=g).to(f16)
    codes4 = sp.random_int4_codes(NI, KI, g, device="cpu")
    s4, z4 = sp.random_group_params(KI // 128, NI, g, device="cpu")
    x4 = torch.randn(M, KI, generator=g).to(f16)
    return {
        "unpack": dict(t=torch.randint(0, 256, (64, 32), generator=g, dtype=u8), bits=4),
        "marlin_repack": dict(b_q_weight=sp.fp8_pack_as_int32(codes8), perm=torch.randperm(K8, generator=g).to(i32),
                              size_k=K8, size_n=N8, num_bits=8),
        "fp8_marlin_dequantize": dict(b_q_weight=fp8_w, b_scales=fp8_s),
        "fp8_marlin_gemm": dict(a=a8, b_q_weight=fp8_w, b_scales=fp8_s),
        "awq_int4_dequantize": dict(packed=sp.awq_v2_layout(codes4), scales=s4, zeros=z4),
        "awq_int4_gemm": dict(input=x4, packed=sp.awq_v2_layout(codes4), scales=s4, zeros=z4),
        "marlin_int4_dequantize": dict(packed=sp.marlin_int4_layout(codes4), scales=sp.permute_block64(s4),
                                       zeros=sp.permute_block64(z4), scale_perm=ops.SCALE_PERM_BLOCK64),
        "marlin_int4_gemm": dict(input=x4, packed=sp.marlin_int4_layout(codes4), scales=sp.permute_block64(s4),
                                 zeros=sp.permute_block64(z4), scale_perm=ops.SCALE_PERM_BLOCK64),
    }


_BASE = None


def base_args(op: str, dev: str) -> Dict[str, object]:
    global _BASE
    if _BASE is None:
        _BASE = _base_cpu()
    return {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in _BASE[op].items()}


ARG_ORDER = {
    "unpack": ["t", "bits"],
    "marlin_repack": ["b_q_weight", "perm", "size_k", "size_n", "num_bits"],
    "fp8_marlin_dequantize": ["b_q_weight", "b_scales"],
    "fp8_marlin_gemm": ["a", "b_q_weight", "b_scales"],
    "awq_int4_dequantize": ["packed", "scales", "zeros"],
    "awq_int4_gemm": ["input", "packed", "scales", "zeros"],
    "marlin_int4_dequantize": ["packed", "scales", "zeros", "scale_perm"],
    "marlin_int4_gemm": ["input", "packed", "scales", "zeros", "scale_perm"],
}

# ---------------------------------------------------------------------------------- front ends


def _dim2(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 2


def _int4_sizes(args):
    """(m, n, k, group_size) as quanto would pass them, derived from the (possibly bad) tensors."""
    p, s, x = args["packed"], args["scales"], args["input"]
    n = p.shape[0] * 4 if _dim2(p) else NI
    k = p.shape[1] if _dim2(p) else KI
    m = x.numel() // k if isinstance(x, torch.Tensor) and k else M
    gs = k // s.shape[0] if _dim2(s) and s.shape[0] else 128
    return m, n, k, gs


def _fp8_binding(args):
    a, s = args["a"], args["b_scales"]
    dev = a.device if isinstance(a, torch.Tensor) else torch.device("cpu")
    ws = torch.zeros(N8 // 64 * 16, dtype=i32, device=dev)
    size_m, size_k = (a.shape[0], a.shape[1]) if _dim2(a) else (M, K8)
    size_n = s.shape[-1] if isinstance(s, torch.Tensor) and s.dim() >= 1 else N8
    return QB.fp8_marlin_gemm(a, args["b_q_weight"], s, ws, 8, size_m, size_n, size_k)


def _awq_gemv_binding(args):
    m, n, k, gs = _int4_sizes(args)
    return QB.awq_v2_gemv_f16i4(args["input"], args["packed"], args["scales"], args["zeros"], m, n, k, gs)


def _marlin_binding(args):
    x, s = args["input"], args["scales"]
    dev = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    n = s.shape[1] if _dim2(s) else NI
    lead = tuple(x.shape[:-1]) if isinstance(x, torch.Tensor) and x.dim() >= 1 else (M,)
    c_out = torch.empty(lead + (n,), dtype=f16, device=dev)
    ws = torch.zeros(NI // 128 * 16, dtype=i32, device=dev)
    QB.marlin_gemm_f16i4(x, args["packed"], c_out, s, args["zeros"], ws, -1, -1, -1, 16)
    return c_out


# op -> [(front-end id, call(args), argument renames in messages, arguments the front end makes dense)]
BINDINGS = {
    "unpack": [("binding", lambda a: QB.unpack(a["t"], a["bits"]), {}, {"t"})],
    "marlin_repack": [("binding", lambda a: QB.gptq_marlin_repack(*[a[k] for k in ARG_ORDER["marlin_repack"]]), {},
                       {"b_q_weight", "perm"})],
    "fp8_marlin_gemm": [("binding", _fp8_binding, {}, {"a"})],
    "awq_int4_gemm": [("binding-gemm", lambda a: QB.awq_v2_gemm_f16i4(a["input"], a["packed"], a["scales"], a["zeros"]),
                       {}, {"input"}),
                      ("binding-gemv", _awq_gemv_binding, {}, {"input"})],
    "marlin_int4_gemm": [("binding", _marlin_binding, {"input": "A", "packed": "B", "scales": "s", "zeros": "sz"},
                          {"input"})],
}


def front_ends(op):
    """[(id, call(args dict), renames, densified args)] for every way to reach the op."""
    order = ARG_ORDER[op]
    out = [
        ("eager", lambda a: getattr(ops.direct, op)(*[a[k] for k in order]), {}, set()),
        ("dispatch", lambda a: getattr(torch.ops.quanto_kernels, op)(*[a[k] for k in order]), {}, set()),
    ]
    return out + BINDINGS.get(op, [])


# ------------------------------------------------------------------------------------ bad cases


@dataclass
class Bad:
    """One bad argument. `make(args, dev)` returns the replaced arguments; the error must name `arg`."""

    id: str
    arg: str
    make: Callable[[dict, str], dict]
    exc: type
    match: str = ""  # regex after "^<arg>: "
    device_only: bool = False  # needs real CUDA tensors (device, layout or value checks)
    schema: bool = False  # a Python type torch's dispatcher rejects itself (RuntimeError naming the argument)
    dispatch_skip: bool = False  # the dispatcher converts it to a valid value (bool -> int)
    binding_skip: bool = False  # the argument does not exist in the bindings (computed there)
    gpus: int = 1


def _huge(shape, dtype, dev):
    """A stride-0 view of `shape` (no allocation): sizes past any limit without memory."""
    return torch.empty((1,) * len(shape), dtype=dtype, device=dev).expand(*shape)


def _noncontig(t: torch.Tensor) -> torch.Tensor:
    """Same shape and values, every other element of a twice-as-wide buffer (not contiguous)."""
    buf = torch.zeros(tuple(t.shape[:-1]) + (2 * t.shape[-1],), dtype=t.dtype, device=t.device)
    view = buf[..., ::2]
    view.copy_(t)
    assert not view.is_contiguous()
    return view


def _set(**values):
    return lambda args, dev: dict(values)


def _with(arg, fn):
    return lambda args, dev: {arg: fn(args[arg], dev)}


def tensor_cases(arg, wrong_dtype, other_gpu=True):
    """Type, dtype and device/layout cases shared by every tensor argument."""
    cases = [
        Bad(f"{arg}-not-a-tensor", arg, _set(**{arg: 3}), TypeError, "expected a torch.Tensor", schema=True),
        Bad(f"{arg}-{str(wrong_dtype).replace('torch.', '')}", arg, _with(arg, lambda t, d: t.to(wrong_dtype)),
            TypeError, "expected dtype"),
        Bad(f"{arg}-on-cpu", arg, _with(arg, lambda t, d: t.cpu()), ValueError, "expected a CUDA tensor",
            device_only=True),
        Bad(f"{arg}-non-contiguous", arg, _with(arg, lambda t, d: _noncontig(t)), ValueError, "must be contiguous",
            device_only=True),
        Bad(f"{arg}-offset-misaligned", arg, _with(arg, lambda t, d: sp.misaligned(t)), ValueError,
            "data pointer must be 16-byte aligned", device_only=True),
    ]
    if other_gpu:  # (a single-tensor op just runs on the other GPU: see test_gpu_multi.py)
        cases.append(Bad(f"{arg}-on-other-gpu", arg, _with(arg, lambda t, d: t.to("cuda:1")), ValueError, "OTHER_GPU",
                         device_only=True, gpus=2))
    return cases


def int_cases(arg, bad_values, message):
    cases = [Bad(f"{arg}={v}", arg, _set(**{arg: v}), ValueError, message) for v in bad_values]
    cases += [
        Bad(f"{arg}-float", arg, _set(**{arg: 4.0}), TypeError, "expected an int", schema=True),
        Bad(f"{arg}-str", arg, _set(**{arg: "4"}), TypeError, "expected an int", schema=True),
    ]
    return cases


def _repack_too_big(args, dev):
    return {"size_k": 2**20, "size_n": 2**20}


CASES = {
    "unpack": tensor_cases("t", torch.int8, other_gpu=False)
    + int_cases("bits", [3, 8, 1, 0, -4], "must be one of")
    + [
        Bad("bits-bool", "bits", _set(bits=True), TypeError, "expected an int", dispatch_skip=True),
        Bad("t-0-dim", "t", _set(t=torch.tensor(7, dtype=u8)), ValueError, "must have at least one dimension"),
        Bad("t-2^40-elements", "t", lambda a, d: {"t": _huge((2**40,), u8, d)}, ValueError, "too many"),
    ],
    "marlin_repack": tensor_cases("b_q_weight", i64) + tensor_cases("perm", i64)
    + int_cases("num_bits", [3, 16, 2, 0], "must be one of")
    + int_cases("size_k", [0, -16, 8], "must be >= 16")
    + int_cases("size_n", [32, 0], "must be >= 64")
    + [
        Bad("size_k-not-multiple-of-16", "size_k", _set(size_k=40), ValueError, "must be a multiple of 16"),
        Bad("size_n-not-multiple-of-64", "size_n", _set(size_n=96), ValueError, "must be a multiple of 64"),
        Bad("size_k-times-size_n-2^40", "size_k", _repack_too_big, ValueError, "too many"),
        Bad("b_q_weight-shape-vs-size_k", "b_q_weight", _set(size_k=128), ValueError, "expected shape"),
        Bad("b_q_weight-shape-vs-num_bits", "b_q_weight", _set(num_bits=4), ValueError, "expected shape"),
        Bad("perm-2-d", "perm", _with("perm", lambda t, d: t.reshape(1, -1)), ValueError, "expected a 1-D"),
        Bad("perm-wrong-length", "perm", _with("perm", lambda t, d: t[:5].clone()), ValueError,
            "must be empty or have size_k"),
        Bad("perm-negative", "perm", _with("perm", lambda t, d: torch.where(t == 3, -1, t)), ValueError,
            "entries must lie", device_only=True),
        Bad("perm-equal-to-k", "perm", _with("perm", lambda t, d: torch.where(t == 5, K8, t)), ValueError,
            "entries must lie", device_only=True),
    ],
}

_FP8_WEIGHT_CASES = tensor_cases("b_q_weight", i16) + tensor_cases("b_scales", f32) + [
    Bad("b_q_weight-1-d", "b_q_weight", _with("b_q_weight", lambda t, d: t.reshape(-1)), ValueError, "expected a 2-D"),
    Bad("b_q_weight-3-d", "b_q_weight", _with("b_q_weight", lambda t, d: t.reshape(1, *t.shape)), ValueError,
        "expected a 2-D"),
    Bad("b_q_weight-width", "b_q_weight", _with("b_q_weight", lambda t, d: t[:, :100].contiguous()), ValueError,
        r"expected the \(K/16, 4N\)"),
    Bad("b_q_weight-no-rows", "b_q_weight", _with("b_q_weight", lambda t, d: t[:0].contiguous()), ValueError,
        r"expected the \(K/16, 4N\)"),
    Bad("b_q_weight-no-columns", "b_q_weight", _with("b_q_weight", lambda t, d: t[:, :0].contiguous()), ValueError,
        r"expected the \(K/16, 4N\)"),
    Bad("b_q_weight-NxK-2^40", "b_q_weight", lambda a, d: {"b_q_weight": _huge((2**16, 2**22), i32, d)}, ValueError,
        "too many"),
    Bad("b_scales-0-dim", "b_scales", _with("b_scales", lambda t, d: t.reshape(-1)[0]), ValueError, "expected N="),
    Bad("b_scales-wrong-n", "b_scales", _with("b_scales", lambda t, d: t[:, :32].contiguous()), ValueError,
        "expected N="),
    Bad("b_scales-column", "b_scales", _with("b_scales", lambda t, d: t.reshape(-1, 1)), ValueError, "expected N="),
]
CASES["fp8_marlin_dequantize"] = list(_FP8_WEIGHT_CASES)
CASES["fp8_marlin_gemm"] = list(_FP8_WEIGHT_CASES) + tensor_cases("a", f32) + [
    Bad("a-int16", "a", _with("a", lambda t, d: t.to(i16)), TypeError, "expected dtype"),
    Bad("a-1-d", "a", _with("a", lambda t, d: t.reshape(-1)), ValueError, "expected a 2-D"),
    Bad("a-3-d", "a", _with("a", lambda t, d: t.reshape(1, *t.shape)), ValueError, "expected a 2-D"),
    Bad("a-wrong-k", "a", _with("a", lambda t, d: t[:, :32].contiguous()), ValueError, "expected K=64"),
    Bad("b_scales-dtype-vs-a", "b_scales", _with("b_scales", lambda t, d: t.to(bf16)), TypeError,
        "must match the activation dtype"),
]


def _int4_weight_cases(layout):
    cases = tensor_cases("packed", i32 if layout == "awq" else i16) + tensor_cases("scales", f32) \
        + tensor_cases("zeros", bf16) + [
            # bf16 scales are valid, but the zeros must then be bf16 too: the error names the zeros.
            Bad("scales-bf16-zeros-f16", "zeros", _with("scales", lambda t, d: t.to(bf16)), TypeError,
                "expected dtype torch.bfloat16"),
            Bad("scales-1-d", "scales", _with("scales", lambda t, d: t.reshape(-1)), ValueError, "expected a 2-D"),
            Bad("scales-wrong-n", "scales", _with("scales", lambda t, d: t[:, :64].contiguous()), ValueError,
                "expected shape"),
            Bad("scales-3-groups", "scales", lambda a, d: {"scales": torch.ones(3, NI, dtype=f16, device=d)},
                ValueError, "3 groups do not divide"),
            Bad("scales-no-groups", "scales", _with("scales", lambda t, d: t[:0].contiguous()), ValueError,
                "0 groups do not divide"),
            Bad("zeros-wrong-shape", "zeros", _with("zeros", lambda t, d: t[:1].contiguous()), ValueError,
                "expected shape"),
            Bad("packed-1-d", "packed", _with("packed", lambda t, d: t.reshape(-1)), ValueError, "expected a 2-D"),
        ]
    if layout == "awq":
        cases += [
            Bad("packed-k-not-multiple-of-64", "packed", _with("packed", lambda t, d: t[:, :200].contiguous()),
                ValueError, r"expected the \(N/4, K\)"),
            Bad("packed-no-rows", "packed", _with("packed", lambda t, d: t[:0].contiguous()), ValueError,
                r"expected the \(N/4, K\)"),
            Bad("packed-K-over-2^30", "packed", lambda a, d: {"packed": _huge((1, 2**30 + 64), i16, d)}, ValueError,
                "K=1073741888 is too large"),
            Bad("packed-NxK-2^40", "packed", lambda a, d: {"packed": _huge((2**12, 2**30), i16, d)}, ValueError,
                "too many"),
            Bad("group-size-16", "scales", lambda a, d: {"scales": torch.ones(16, NI, dtype=f16, device=d),
                                                         "zeros": torch.ones(16, NI, dtype=f16, device=d)},
                ValueError, "must be a multiple of 32"),
        ]
    else:
        cases += [
            Bad("packed-width", "packed", _with("packed", lambda t, d: t[:, :100].contiguous()), ValueError,
                r"expected the \(K/16, 2N\)"),
            Bad("packed-no-rows", "packed", _with("packed", lambda t, d: t[:0].contiguous()), ValueError,
                r"expected the \(K/16, 2N\)"),
            Bad("packed-K-over-2^30", "packed", lambda a, d: {"packed": _huge((2**26 + 1, 128), i32, d)}, ValueError,
                "K=1073741840 is too large"),
            Bad("packed-NxK-2^40", "packed", lambda a, d: {"packed": _huge((2**20, 2**21), i32, d)}, ValueError,
                "too many"),
            Bad("group-size-8", "scales", lambda a, d: {"scales": torch.ones(32, NI, dtype=f16, device=d),
                                                        "zeros": torch.ones(32, NI, dtype=f16, device=d)},
                ValueError, "must be a multiple of 16"),
        ]
        cases += [Bad(c.id, c.arg, c.make, c.exc, c.match, schema=c.schema, binding_skip=True)
                  for c in int_cases("scale_perm", [3, -1, 7], "must be one of")]
        cases.append(Bad("scale_perm-bool", "scale_perm", _set(scale_perm=True), TypeError, "expected an int",
                         dispatch_skip=True, binding_skip=True))
    return cases


def _activation_cases():
    return tensor_cases("input", bf16) + [
        Bad("input-float32", "input", _with("input", lambda t, d: t.float()), TypeError, "expected dtype"),
        # A bf16 weight takes bf16 activations only: fp16 input is refused naming the input.
        Bad("input-f16-for-bf16-weight", "input",
            lambda a, d: {"scales": a["scales"].to(bf16), "zeros": a["zeros"].to(bf16)}, TypeError,
            "expected dtype torch.bfloat16"),
        Bad("input-0-dim", "input", _with("input", lambda t, d: t.reshape(-1)[0]), ValueError,
            "expected last dimension"),
        Bad("input-wrong-k", "input", _with("input", lambda t, d: t[:, :128].contiguous()), ValueError,
            "expected last dimension K=256"),
    ]


CASES["awq_int4_dequantize"] = _int4_weight_cases("awq")
CASES["awq_int4_gemm"] = _int4_weight_cases("awq") + _activation_cases()
CASES["marlin_int4_dequantize"] = _int4_weight_cases("marlin")
CASES["marlin_int4_gemm"] = _int4_weight_cases("marlin") + _activation_cases()


def _case_params(ops_names):
    params = []
    for op in ops_names:
        cases = CASES[op]
        for c in cases:
            marks = [TWO_GPUS] if c.gpus > 1 else []
            params.append(pytest.param(op, c, id=f"{op}-{c.id}", marks=marks))
    return params


# ---------------------------------------------------------------------------------- the checks


def _expected(case: Bad, front: str, renames: dict):
    """(exception types, regex) for this front end."""
    name = renames.get(case.arg, case.arg)
    if case.match == "OTHER_GPU":
        other = "|".join(re.escape(renames.get(a, a)) for a in (case.arg,))
        return (ValueError,), rf"(^{other}: is on cuda:1 but .* is on cuda:0)|(: is on cuda:0 but ({other}) is on cuda:1)"
    if case.schema and front == "dispatch":
        return (RuntimeError, TypeError), rf"argument '{re.escape(case.arg)}'"
    return (case.exc,), rf"^{re.escape(name)}: .*{case.match}" if case.match else rf"^{re.escape(name)}: "


def _after_gpu_case(calls, what):
    if calls is not None:
        assert calls.names == [], f"{what}: reached the native library ({calls.names}) although the arguments are bad"
        torch.cuda.synchronize()  # raises if anything left the context in an error state


def check_bad_argument(op, case, dev, lib_calls):
    if case.device_only and dev != "cuda":
        pytest.skip("device, layout and value checks need CUDA tensors (covered by the cuda variant)")
    ran = 0
    for front, call, renames, densified in front_ends(op):
        if front == "dispatch" and case.dispatch_skip:
            continue
        if front.startswith("binding") and case.binding_skip:
            continue
        args = base_args(op, dev)
        args.update(case.make(args, dev))
        what = f"{op} via {front} on {dev}, {case.id}"
        if front.startswith("binding") and case.arg in densified and case.id.endswith(
                ("non-contiguous", "offset-misaligned")):
            # quanto hands the bindings strided activations: they are made dense, not refused.
            out = call(args)
            clean = base_args(op, dev)
            ref = getattr(ops.direct, op)(*[clean[k] for k in ARG_ORDER[op]])
            assert torch.equal(out, ref), f"{what}: the dense copy gives a different result"
            if lib_calls is not None:
                lib_calls.clear()
            ran += 1
            continue
        excs, regex = _expected(case, front, renames)
        with pytest.raises(excs) as info:
            call(args)
        assert re.search(regex, str(info.value)), f"{what}: message {str(info.value)!r} does not match {regex!r}"
        _after_gpu_case(lib_calls, what)
        ran += 1
    assert ran > 0


# ------------------------------------------------------------------------ binding-only arguments


def _binding_case(op, dev, **changes):
    args = base_args("awq_int4_gemm" if op == "awq_gemv" else op, dev)
    if op == "fp8_marlin_gemm":
        a = args["a"]
        call = dict(a=a, b_q_weight=args["b_q_weight"], b_scales=args["b_scales"],
                    workspace=torch.zeros(16, dtype=i32, device=dev), num_bits=8, size_m=M, size_n=N8, size_k=K8)
        call.update(changes)
        return lambda: QB.fp8_marlin_gemm(*call.values())
    if op == "awq_gemv":
        call = dict(input=args["input"], packed=args["packed"], scales=args["scales"], zeros=args["zeros"], m=M, n=NI,
                    k=KI, group_size=128)
        call.update(changes)
        return lambda: QB.awq_v2_gemv_f16i4(*call.values())
    assert op == "marlin_int4_gemm"
    call = dict(A=args["input"], B=args["packed"], C_out=torch.empty(M, NI, dtype=f16, device=dev), s=args["scales"],
                sz=args["zeros"], workspace=torch.zeros(16, dtype=i32, device=dev), thread_k=-1, thread_n=-1, sms=-1,
                max_par=16)
    call.update(changes)
    return lambda: QB.marlin_gemm_f16i4(*call.values())


def _binding_params():
    def dev_tensor(shape, dtype):
        return lambda dev: torch.zeros(shape, dtype=dtype, device=dev)

    rows = [
        # (id, op, changes builder(dev) -> dict, exception, regex, cuda only)
        ("fp8-workspace-none", "fp8_marlin_gemm", lambda d: dict(workspace=None), TypeError,
         "^workspace: expected a torch.Tensor"),
        ("fp8-workspace-int64", "fp8_marlin_gemm", lambda d: dict(workspace=dev_tensor(16, i64)(d)), TypeError,
         "^workspace: expected dtype torch.int32"),
        ("fp8-workspace-float", "fp8_marlin_gemm", lambda d: dict(workspace=dev_tensor(16, f32)(d)), TypeError,
         "^workspace: expected dtype torch.int32"),
        ("fp8-num_bits-4", "fp8_marlin_gemm", lambda d: dict(num_bits=4), ValueError, "^num_bits: "),
        ("fp8-num_bits-float", "fp8_marlin_gemm", lambda d: dict(num_bits=8.0), TypeError, "^num_bits: "),
        ("fp8-size_m", "fp8_marlin_gemm", lambda d: dict(size_m=M + 1), ValueError, "^size_m: "),
        ("fp8-size_n", "fp8_marlin_gemm", lambda d: dict(size_n=N8 + 64), ValueError, "^size_n: "),
        ("fp8-size_k", "fp8_marlin_gemm", lambda d: dict(size_k=K8 + 16), ValueError, "^size_k: "),
        ("fp8-size_m-float", "fp8_marlin_gemm", lambda d: dict(size_m=float(M)), TypeError, "^size_m: "),
        ("awq-gemv-m", "awq_gemv", lambda d: dict(m=M + 1), ValueError, "^m: "),
        ("awq-gemv-n", "awq_gemv", lambda d: dict(n=NI + 4), ValueError, "^n: "),
        ("awq-gemv-k", "awq_gemv", lambda d: dict(k=KI + 64), ValueError, "^k: "),
        ("awq-gemv-group_size", "awq_gemv", lambda d: dict(group_size=64), ValueError, "^group_size: "),
        ("awq-gemv-m-none", "awq_gemv", lambda d: dict(m=None), TypeError, "^m: "),
        ("marlin-workspace-none", "marlin_int4_gemm", lambda d: dict(workspace=None), TypeError, "^workspace: "),
        ("marlin-workspace-int16", "marlin_int4_gemm", lambda d: dict(workspace=dev_tensor(16, i16)(d)), TypeError,
         "^workspace: expected dtype torch.int32"),
        ("marlin-C_out-none", "marlin_int4_gemm", lambda d: dict(C_out=None), TypeError, "^C_out: "),
        ("marlin-C_out-float32", "marlin_int4_gemm", lambda d: dict(C_out=dev_tensor((M, NI), f32)(d)), TypeError,
         "^C_out: "),
        ("marlin-C_out-wide", "marlin_int4_gemm", lambda d: dict(C_out=dev_tensor((M, NI + 64), f16)(d)), ValueError,
         "^C_out: "),
        ("marlin-C_out-tall", "marlin_int4_gemm", lambda d: dict(C_out=dev_tensor((M + 1, NI), f16)(d)), ValueError,
         "^C_out: "),
    ]
    return [pytest.param(*r, id=r[0]) for r in rows]


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("cid, op, changes, exc, regex", _binding_params())
def test_binding_only_arguments(cid, op, changes, exc, regex, dev, lib_calls):
    call = _binding_case(op, dev, **changes(dev))
    with pytest.raises(exc) as info:
        call()
    assert re.search(regex, str(info.value)), f"{cid}: message {str(info.value)!r} does not match {regex!r}"
    _after_gpu_case(lib_calls, cid)


@pytest.mark.gpu
@sp.requires_gpu
def test_binding_c_out_on_cpu_is_refused(lib_calls):
    call = _binding_case("marlin_int4_gemm", "cuda", C_out=torch.empty(M, NI, dtype=f16))
    with pytest.raises(ValueError, match=r"^C_out: is on cpu but A is on cuda"):
        call()
    _after_gpu_case(lib_calls, "marlin C_out on cpu")


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("op", ["fp8_marlin_gemm", "marlin_int4_gemm"])
@pytest.mark.parametrize("ws", ["size-1", "empty", "on-cpu", "huge-view"])
def test_binding_workspace_is_never_used(op, ws):
    """Any int32 tensor is accepted as quanto's workspace (never read or written) and the result is the same."""
    workspace = {"size-1": torch.zeros(1, dtype=i32, device="cuda"), "empty": torch.zeros(0, dtype=i32, device="cuda"),
                 "on-cpu": torch.zeros(16, dtype=i32), "huge-view": _huge((2**40,), i32, "cuda")}[ws]
    before = workspace.clone() if workspace.numel() < 2**20 else None
    args = base_args(op, "cuda")
    ref = getattr(ops.direct, op)(*[args[k] for k in ARG_ORDER[op]])
    if op == "fp8_marlin_gemm":
        out = QB.fp8_marlin_gemm(args["a"], args["b_q_weight"], args["b_scales"], workspace, 8, M, N8, K8)
    else:
        out = torch.empty(M, NI, dtype=f16, device="cuda")
        QB.marlin_gemm_f16i4(args["input"], args["packed"], out, args["scales"], args["zeros"], workspace, -1, -1, -1, 16)
    assert torch.equal(out, ref)
    if before is not None:
        assert torch.equal(workspace, before)


# --------------------------------------------------------------------------- valid edge shapes

EMPTY_CASES = [
    ("unpack", {"t": lambda d: torch.empty(0, dtype=u8, device=d)}, (0,)),
    ("unpack", {"t": lambda d: torch.empty(0, 7, dtype=u8, device=d)}, (0, 7)),
    ("unpack", {"t": lambda d: torch.empty(5, 0, dtype=u8, device=d)}, (10, 0)),
    ("fp8_marlin_gemm", {"a": lambda d: torch.empty(0, K8, dtype=f16, device=d)}, (0, N8)),
    ("awq_int4_gemm", {"input": lambda d: torch.empty(0, KI, dtype=f16, device=d)}, (0, NI)),
    ("awq_int4_gemm", {"input": lambda d: torch.empty(2, 0, KI, dtype=f16, device=d)}, (2, 0, NI)),
    ("marlin_int4_gemm", {"input": lambda d: torch.empty(0, KI, dtype=f16, device=d)}, (0, NI)),
    ("marlin_int4_gemm", {"input": lambda d: torch.empty(0, 3, KI, dtype=f16, device=d)}, (0, 3, NI)),
]


def check_zero_size(op, changes, shape, dev, lib_calls):
    fronts = front_ends(op) if dev == "cuda" else [f for f in front_ends(op) if f[0] == "dispatch"]
    for front, call, _renames, _dense in fronts:
        args = base_args(op, dev)
        args.update({k: fn(dev) for k, fn in changes.items()})
        out = call(args)
        assert tuple(out.shape) == shape, f"{op} via {front}: shape {tuple(out.shape)}, expected {shape}"
        assert out.device.type == dev
        if lib_calls is not None:
            assert lib_calls.names == [], f"{op} via {front}: an empty input reached the library ({lib_calls.names})"
            torch.cuda.synchronize()


@pytest.mark.gpu
@sp.requires_gpu
def test_empty_perm_is_accepted_on_any_device():
    """An empty perm (no act-order) is never read, so where it lives does not matter."""
    args = base_args("marlin_repack", "cuda")
    args["perm"] = torch.empty(0, dtype=i32, device="cuda")
    ref = ops.direct.marlin_repack(*[args[k] for k in ARG_ORDER["marlin_repack"]])
    args["perm"] = torch.empty(0, dtype=i32)
    assert torch.equal(ops.direct.marlin_repack(*[args[k] for k in ARG_ORDER["marlin_repack"]]), ref)


def check_huge_m(op):
    """M*K past 2^31 is served (large M goes through a dense GEMM): the fake impl gives its shape."""
    args = base_args(op, "meta")
    key, k = ("a", K8) if op == "fp8_marlin_gemm" else ("input", KI)
    rows = 2**31 + 17
    args[key] = _huge((rows, k), args[key].dtype, "meta")
    out = getattr(torch.ops.quanto_kernels, op)(*[args[a] for a in ARG_ORDER[op]])
    assert out.shape[0] == rows and out.device.type == "meta"


# ------------------------------------------------------------------- the C ABI's own workspace


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("fmt", ["fp8", "awq", "marlin", "fp8_mm", "int8_mm"])
@pytest.mark.parametrize("bad", ["too-small", "null", "misaligned"])
def test_c_abi_refuses_a_bad_split_k_workspace(ops, fmt, bad):
    """The fused kernels' split-K workspace, as the C entry points see it: a short, null or misaligned
    buffer is refused (ValueError naming `workspace`) before anything is launched."""
    import quanto_kernels

    lib = quanto_kernels.get_library()
    m, n, k, g = 1, 256, 4096, 128
    dev = torch.cuda.current_device()
    stream = torch.cuda.current_stream().cuda_stream
    if fmt == "fp8_mm":
        from quanto_kernels.ops import _fp8_marlin

        if not lib.abi.fp8_marlin_mm_available(device=dev):
            pytest.skip("the tensor-core kernel needs an sm_90 GPU and a library built with sm_90a")
        m = 64  # 2 tiles of 128 channels: the plan splits K over the idle multiprocessors
        need = _fp8_marlin.FAMILY.tc.workspace_bytes(m, n, k, dev)
    elif fmt == "int8_mm":
        from quanto_kernels.ops import _int8

        if not lib.abi.int8_mm_available(device=dev):
            pytest.skip("the tensor-core kernel needs an sm_90 GPU and a library built with sm_90a")
        m = 64
        need = _int8.FAMILY.tc.workspace_bytes(m, n, k, dev)
    elif fmt == "fp8":
        need = ops.GEMM_FAMILIES["fp8_marlin"].workspace_bytes(m=m, n=n, k=k, device=dev)
    else:
        need = ops.GEMM_FAMILIES[f"{fmt}_int4"].workspace_bytes(m=m, n=n, k=k, group_size=g, device=dev)
    if need == 0:
        pytest.skip(f"this GPU's plan for M={m} N={n} K={k} needs no split-K workspace")
    a = torch.zeros(m, k, dtype=f16, device="cuda")
    out = torch.empty(m, n, dtype=f16, device="cuda")
    ws = torch.zeros(need // 4 + 16, dtype=f32, device="cuda")
    ptr, nbytes = {"too-small": (ws.data_ptr(), need - 4), "null": (None, need),
                   "misaligned": (ws.data_ptr() + 4, need)}[bad]
    s = torch.ones(k // g, n, dtype=f16, device="cuda")
    if fmt == "fp8_mm":
        w = torch.zeros(k // 16, 4 * n, dtype=i32, device="cuda")
        sc = torch.ones(1, n, dtype=f16, device="cuda")
        call = lambda: lib.abi.fp8_marlin_mm(  # noqa: E731
            a=a.data_ptr(), w=w.data_ptr(), scales=sc.data_ptr(), bias=None, out=out.data_ptr(), workspace=ptr,
            workspace_bytes=nbytes, m=m, n=n, k=k, dtype=1, device=dev, stream=stream)
    elif fmt == "int8_mm":
        w = torch.zeros(n, k, dtype=torch.int8, device="cuda")
        sc = torch.ones(n, dtype=f16, device="cuda")
        call = lambda: lib.abi.int8_mm(  # noqa: E731
            a=a.data_ptr(), w=w.data_ptr(), scales=sc.data_ptr(), bias=None, out=out.data_ptr(), workspace=ptr,
            workspace_bytes=nbytes, m=m, n=n, k=k, dtype=1, device=dev, stream=stream)
    elif fmt == "fp8":
        w = torch.zeros(k // 16, 4 * n, dtype=i32, device="cuda")
        sc = torch.ones(1, n, dtype=f16, device="cuda")
        call = lambda: lib.abi.fp8_marlin_gemv(  # noqa: E731
            a=a.data_ptr(), w=w.data_ptr(), scales=sc.data_ptr(), bias=None, out=out.data_ptr(), workspace=ptr,
            workspace_bytes=nbytes, m=m, n=n, k=k, dtype=1, device=dev, stream=stream)
    elif fmt == "awq":
        w = torch.zeros(n // 4, k, dtype=i16, device="cuda")
        call = lambda: lib.abi.awq_int4_gemv(  # noqa: E731
            a=a.data_ptr(), w=w.data_ptr(), scales=s.data_ptr(), zeros=s.data_ptr(), out=out.data_ptr(),
            workspace=ptr, workspace_bytes=nbytes, m=m, n=n, k=k, group_size=g, dtype=1, device=dev, stream=stream)
    else:
        w = torch.zeros(k // 16, 2 * n, dtype=i32, device="cuda")
        call = lambda: lib.abi.marlin_int4_gemv(  # noqa: E731
            a=a.data_ptr(), w=w.data_ptr(), scales=s.data_ptr(), zeros=s.data_ptr(), out=out.data_ptr(),
            workspace=ptr, workspace_bytes=nbytes, m=m, n=n, k=k, group_size=g, scale_perm=2, dtype=1, device=dev,
            stream=stream)
    with pytest.raises(ValueError, match=r"(gemv|mm): workspace: "):
        call()
    torch.cuda.synchronize()


# ------------------------------------------------------------------------- still healthy after


@pytest.mark.gpu
@sp.requires_gpu
def test_context_is_healthy_after_all_the_bad_calls():
    """Run last in this module: valid calls on the same process give right results."""
    g = sp.generator("bad-inputs-after")
    k, n, m = 256, 128, 3
    codes = sp.random_fp8_codes(n, k, g)
    s = sp.random_fp8_scales(n, f16, g)
    a = torch.randn(m, k, generator=g, device="cuda", dtype=f16)
    out = ops.fp8_marlin_gemm(a, sp.fp8_marlin_layout(codes), sp.permute_block32(s.reshape(1, n)))
    sp.assert_gemm_close(out, sp.matmul_reference(a, sp.fp8_dequant_reference(codes, s)), f16, "fp8 gemm after")
    codes4 = sp.random_int4_codes(n, k, g)
    s4, z4 = sp.random_group_params(2, n, g)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=f16)
    out = ops.awq_int4_gemm(x, sp.awq_v2_layout(codes4), s4, z4)
    sp.assert_gemm_close(out, sp.matmul_reference(x, sp.int4_dequant_reference(codes4, s4, z4)), f16, "awq after")
    torch.cuda.synchronize()


# =============================================================================================
# Bad inputs that need CUDA tensors
# =============================================================================================


def _fp8_bad(ops, what):
    k, n, m = 256, 128, 4
    g = sp.generator("bad-fp8", what)
    codes, s, packed, s_perm = sp.fp8_weight(k, n, torch.float16, g)
    a = torch.randn(m, k, generator=g, device="cuda", dtype=torch.float16)
    table = {
        "a-misaligned": (lambda: ops.fp8_marlin_gemm(sp.misaligned(a), packed, s_perm), ValueError, r"^a: .*align"),
        "a-noncontiguous": (lambda: ops.fp8_marlin_gemm(a.t().contiguous().t(), packed, s_perm), ValueError,
                            r"^a: .*contiguous"),
        "a-cpu": (lambda: ops.fp8_marlin_gemm(a.cpu(), packed, s_perm), ValueError, r"^a: .*CUDA"),
        "a-wrong-k": (lambda: ops.fp8_marlin_gemm(a[:, :128].contiguous(), packed, s_perm), ValueError, r"^a: "),
        "a-fp32": (lambda: ops.fp8_marlin_gemm(a.float(), packed, s_perm), TypeError, r"^a: "),
        "weight-misaligned": (lambda: ops.fp8_marlin_gemm(a, sp.misaligned(packed), s_perm), ValueError,
                              r"^b_q_weight: .*align"),
        "weight-noncontiguous": (lambda: ops.fp8_marlin_gemm(a, packed.t().contiguous().t(), s_perm), ValueError,
                                 r"^b_q_weight: .*contiguous"),
        "scales-misaligned": (lambda: ops.fp8_marlin_gemm(a, packed, sp.misaligned(s_perm)), ValueError,
                              r"^b_scales: .*align"),
        "scales-cpu": (lambda: ops.fp8_marlin_gemm(a, packed, s_perm.cpu()), ValueError, r"^b_scales: .*CUDA"),
        "scales-dtype-mismatch": (lambda: ops.fp8_marlin_gemm(a, packed, s_perm.to(torch.bfloat16)), TypeError,
                                  r"^b_scales: "),
        "scales-wrong-n": (lambda: ops.fp8_marlin_gemm(a, packed, s_perm[:, :64].contiguous()), ValueError,
                           r"^b_scales: "),
        "dequant-weight-misaligned": (lambda: ops.fp8_marlin_dequantize(sp.misaligned(packed), s_perm), ValueError,
                                      r"^b_q_weight: .*align"),
        "dequant-scales-misaligned": (lambda: ops.fp8_marlin_dequantize(packed, sp.misaligned(s_perm)), ValueError,
                                      r"^b_scales: .*align"),
    }
    return table[what]


def _int4_bad(ops, fmt, what):
    k, n, m = 256, 128, 4
    g = sp.generator("bad-int4", fmt, what)
    if fmt == "awq":
        codes, s, z, packed = sp.awq_weight(k, n, g)
        gemm = lambda x, p, s_, z_: ops.awq_int4_gemm(x, p, s_, z_)  # noqa: E731
        deq = lambda p, s_, z_: ops.awq_int4_dequantize(p, s_, z_)  # noqa: E731
    else:
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        s, z = sp.permute_block64(s), sp.permute_block64(z)
        gemm = lambda x, p, s_, z_: ops.marlin_int4_gemm(x, p, s_, z_, ops.SCALE_PERM_BLOCK64)  # noqa: E731
        deq = lambda p, s_, z_: ops.marlin_int4_dequantize(p, s_, z_, ops.SCALE_PERM_BLOCK64)  # noqa: E731
    x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.float16)
    table = {
        "input-misaligned": (lambda: gemm(sp.misaligned(x), packed, s, z), ValueError, r"^input: .*align"),
        "input-noncontiguous": (lambda: gemm(x.t().contiguous().t(), packed, s, z), ValueError,
                                r"^input: .*contiguous"),
        "input-cpu": (lambda: gemm(x.cpu(), packed, s, z), ValueError, r"^input: .*CUDA"),
        "input-bf16": (lambda: gemm(x.to(torch.bfloat16), packed, s, z), TypeError, r"^input: "),
        "input-wrong-k": (lambda: gemm(x[:, :128].contiguous(), packed, s, z), ValueError, r"^input: "),
        "packed-misaligned": (lambda: gemm(x, sp.misaligned(packed), s, z), ValueError, r"^packed: .*align"),
        "scales-misaligned": (lambda: gemm(x, packed, sp.misaligned(s), z), ValueError, r"^scales: .*align"),
        "scales-cpu": (lambda: gemm(x, packed, s.cpu(), z), ValueError, r"^scales: .*CUDA"),
        "zeros-misaligned": (lambda: gemm(x, packed, s, sp.misaligned(z)), ValueError, r"^zeros: .*align"),
        "zeros-noncontiguous": (lambda: gemm(x, packed, s, z.t().contiguous().t()), ValueError,
                                r"^zeros: .*contiguous"),
        "zeros-wrong-shape": (lambda: gemm(x, packed, s, z[:1].contiguous()), ValueError, r"^zeros: "),
        "scales-fp32": (lambda: gemm(x, packed, s.float(), z), TypeError, r"^scales: "),
        "dequant-packed-misaligned": (lambda: deq(sp.misaligned(packed), s, z), ValueError, r"^packed: .*align"),
        "dequant-zeros-misaligned": (lambda: deq(packed, s, sp.misaligned(z)), ValueError, r"^zeros: .*align"),
    }
    if fmt == "marlin":
        table["scale-perm-3"] = (lambda: ops.marlin_int4_gemm(x, packed, s, z, 3), ValueError, r"^scale_perm: ")
    return table[what]


FP8_BAD = ["a-misaligned", "a-noncontiguous", "a-cpu", "a-wrong-k", "a-fp32", "weight-misaligned",
           "weight-noncontiguous", "scales-misaligned", "scales-cpu", "scales-dtype-mismatch", "scales-wrong-n",
           "dequant-weight-misaligned", "dequant-scales-misaligned"]
INT4_BAD = ["input-misaligned", "input-noncontiguous", "input-cpu", "input-bf16", "input-wrong-k",
            "packed-misaligned", "scales-misaligned", "scales-cpu", "zeros-misaligned", "zeros-noncontiguous",
            "zeros-wrong-shape", "scales-fp32", "dequant-packed-misaligned", "dequant-zeros-misaligned"]
INT4_BAD_CASES = [(fmt, what) for fmt in ("awq", "marlin") for what in INT4_BAD] + [("marlin", "scale-perm-3")]


class GpuBadInputs:
    """CUDA-only bad inputs, one test per op family (each family module subclasses the part it needs)."""

    pytestmark = [pytest.mark.gpu, sp.requires_gpu]

    @pytest.mark.parametrize("what", ["t-misaligned", "t-noncontiguous", "t-cpu", "bits3", "t-int8"])
    def test_unpack(self, ops, what):
        t = torch.randint(0, 256, (64, 32), device="cuda", dtype=torch.uint8)
        call, exc, regex = {
            "t-misaligned": (lambda: ops.unpack(sp.misaligned(t), 4), ValueError, r"^t: .*align"),
            "t-noncontiguous": (lambda: ops.unpack(t.t(), 4), ValueError, r"^t: .*contiguous"),
            "t-cpu": (lambda: ops.unpack(t.cpu(), 4), ValueError, r"^t: .*CUDA"),
            "bits3": (lambda: ops.unpack(t, 3), ValueError, r"^bits: "),
            "t-int8": (lambda: ops.unpack(t.to(torch.int8), 4), TypeError, r"^t: "),
        }[what]
        with pytest.raises(exc, match=regex):
            call()

    @pytest.mark.parametrize("what", ["b-misaligned", "b-noncontiguous", "perm-cpu", "perm-misaligned", "b-cpu"])
    def test_marlin_repack(self, ops, what):
        k, n = 256, 128
        b = sp.fp8_pack_as_int32(sp.random_fp8_codes(n, k, sp.generator("bad-repack", what)))
        perm = torch.randperm(k, device="cuda").to(torch.int32)
        call, exc, regex = {
            "b-misaligned": (lambda: ops.marlin_repack(sp.misaligned(b), sp.empty_perm("cuda"), k, n, 8), ValueError,
                             r"^b_q_weight: .*align"),
            "b-noncontiguous": (lambda: ops.marlin_repack(b.t().contiguous().t(), sp.empty_perm("cuda"), k, n, 8),
                                ValueError, r"^b_q_weight: .*contiguous"),
            "b-cpu": (lambda: ops.marlin_repack(b.cpu(), sp.empty_perm("cuda"), k, n, 8), ValueError, r"^b_q_weight: .*CUDA"),
            "perm-cpu": (lambda: ops.marlin_repack(b, perm.cpu(), k, n, 8), ValueError, r"^perm: .*CUDA"),
            "perm-misaligned": (lambda: ops.marlin_repack(b, sp.misaligned(perm), k, n, 8), ValueError,
                                r"^perm: .*align"),
        }[what]
        with pytest.raises(exc, match=regex):
            call()

    @pytest.mark.parametrize("what", FP8_BAD)
    def test_fp8(self, ops, what):
        call, exc, regex = _fp8_bad(ops, what)
        with pytest.raises(exc, match=regex):
            call()

    @pytest.mark.parametrize("what", [w for f, w in INT4_BAD_CASES if f == "awq"])
    def test_awq(self, ops, what):
        call, exc, regex = _int4_bad(ops, "awq", what)
        with pytest.raises(exc, match=regex):
            call()

    @pytest.mark.parametrize("what", [w for f, w in INT4_BAD_CASES if f == "marlin"])
    def test_marlin(self, ops, what):
        call, exc, regex = _int4_bad(ops, "marlin", what)
        with pytest.raises(exc, match=regex):
            call()




def family_tests(ops_names):
    """The table's tests restricted to `ops_names`: (bad arguments, zero sizes, huge M)."""

    @pytest.mark.parametrize("dev", DEVICES)
    @pytest.mark.parametrize("op, case", _case_params(ops_names))
    def test_bad_argument_is_refused_naming_it(op, case, dev, lib_calls):
        check_bad_argument(op, case, dev, lib_calls)

    empty = [c for c in EMPTY_CASES if c[0] in ops_names]

    @pytest.mark.parametrize("dev", [p for p in DEVICES if p.id != "cpu"])
    @pytest.mark.parametrize("op, changes, shape", empty,
                             ids=[f"{c[0]}-{'x'.join(map(str, c[2]))}" for c in empty])
    def test_zero_size_returns_an_empty_result(op, changes, shape, dev, lib_calls):
        check_zero_size(op, changes, shape, dev, lib_calls)

    huge = [op for op in ops_names if op.endswith("_gemm")]

    @pytest.mark.parametrize("op", huge)
    def test_huge_m_is_not_refused_by_the_checks(op):
        check_huge_m(op)

    tests = [test_bad_argument_is_refused_naming_it]
    tests.append(test_zero_size_returns_an_empty_result if empty else None)
    tests.append(test_huge_m_is_not_refused_by_the_checks if huge else None)
    return tests


# ------------------------------------------------- quick cases through the dispatcher (CPU tensors)

f16, i16, u8 = torch.float16, torch.int16, torch.uint8


def fp8_args(m=4, n=128, k=256, dtype=f16):
    return (torch.randn(m, k).to(dtype), torch.randint(0, 99, (k // 16, 4 * n), dtype=i32), torch.rand(1, n).to(dtype))


def awq_args(m=4, n=128, k=256):
    return (torch.randn(m, k).half(), torch.randint(0, 99, (n // 4, k), dtype=i16), torch.rand(k // 128, n).half(),
            torch.rand(k // 128, n).half())


def marlin_args(m=4, n=128, k=256):
    return (torch.randn(m, k).half(), torch.randint(0, 99, (k // 16, 2 * n), dtype=i32), torch.rand(k // 128, n).half(),
            torch.rand(k // 128, n).half(), ops.SCALE_PERM_BLOCK64)


def replace(args, i, value):
    args = list(args)
    args[i] = value
    return args


QUICK_CASES = [  # (op, positional args on the CPU, exception, message fragment): through the dispatcher
    # (op, args, exception, message fragment)
    ("unpack", (torch.zeros(4, dtype=i32), 4), TypeError, "t: expected dtype torch.uint8"),
    ("unpack", (torch.zeros(4, dtype=u8), 3), ValueError, "bits: must be one of"),
    ("unpack", (torch.zeros(4, dtype=u8), 4.0), RuntimeError, "argument 'bits'"),  # torch's schema check
    ("unpack", (torch.zeros(4, dtype=u8), 4), ValueError, "t: expected a CUDA tensor"),
    ("marlin_repack", (torch.zeros(16, 64, dtype=i32), torch.empty(0, dtype=i32), 128, 64, 8), ValueError,
     "b_q_weight: expected shape (32, 64)"),
    ("marlin_repack", (torch.zeros(32, 64, dtype=i32), torch.empty(0, dtype=i32), 128, 64, 5), ValueError,
     "num_bits: must be one of"),
    ("marlin_repack", (torch.zeros(8, 64, dtype=i32), torch.empty(0, dtype=i32), 40, 64, 8), ValueError,
     "size_k: must be a multiple of 16"),
    ("marlin_repack", (torch.zeros(32, 64, dtype=i32), torch.zeros(5, dtype=i32), 128, 64, 8), ValueError,
     "perm: must be empty or have size_k"),
    ("marlin_repack", (torch.zeros(32, 64, dtype=i32), torch.zeros(128, dtype=torch.int64), 128, 64, 8), TypeError,
     "perm: expected dtype torch.int32"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(4, 256)), TypeError, "a: expected dtype"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(4, 255).half()), ValueError, "a: expected K=256"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(2, 4, 256).half()), ValueError, "a: expected a 2-D"),
    ("fp8_marlin_gemm", replace(fp8_args(), 1, torch.zeros(16, 100, dtype=i32)), ValueError,
     "b_q_weight: expected the (K/16, 4N)"),
    ("fp8_marlin_gemm", replace(fp8_args(), 1, torch.zeros(16, 512, dtype=i16)), TypeError,
     "b_q_weight: expected dtype torch.int32"),
    ("fp8_marlin_gemm", replace(fp8_args(), 2, torch.rand(1, 64).half()), ValueError, "b_scales: expected N=128"),
    ("fp8_marlin_gemm", replace(fp8_args(), 2, torch.rand(1, 128).bfloat16()), TypeError,
     "b_scales: dtype torch.bfloat16 must match"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(256, 4).half().t()), ValueError, "a: must be contiguous"),
    ("fp8_marlin_gemm", fp8_args(), ValueError, "a: expected a CUDA tensor"),
    ("fp8_marlin_dequantize", (torch.zeros(16, 512, dtype=i32), torch.rand(1, 128)), TypeError,
     "b_scales: expected dtype"),
    ("awq_int4_gemm", replace(awq_args(), 0, torch.randn(4, 256).bfloat16()), TypeError, "input: expected dtype"),
    ("awq_int4_gemm", replace(awq_args(), 1, torch.zeros(32, 256, dtype=i32)), TypeError, "packed: expected dtype"),
    ("awq_int4_gemm", replace(awq_args(), 1, torch.zeros(32, 200, dtype=i16)), ValueError, "packed: expected the (N/4, K)"),
    ("awq_int4_gemm", replace(awq_args(), 2, torch.rand(2, 64).half()), ValueError, "scales: expected shape"),
    ("awq_int4_gemm", replace(awq_args(), 3, torch.rand(1, 128).half()), ValueError, "zeros: expected shape"),
    ("awq_int4_gemm", replace(awq_args(), 2, torch.rand(3, 128).half()), ValueError, "scales: 3 groups do not divide"),
    ("awq_int4_gemm", replace(awq_args(), 2, torch.rand(16, 128).half()), ValueError, "must be a multiple of 32"),
    ("awq_int4_gemm", replace(awq_args(), 0, torch.randn(4, 128).half()), ValueError, "input: expected last dimension"),
    ("awq_int4_gemm", awq_args(), ValueError, "input: expected a CUDA tensor"),
    ("awq_int4_dequantize", awq_args()[1:], ValueError, "packed: expected a CUDA tensor"),
    ("marlin_int4_gemm", replace(marlin_args(), 4, 7), ValueError, "scale_perm: must be one of"),
    ("marlin_int4_gemm", replace(marlin_args(), 1, torch.zeros(16, 100, dtype=i32)), ValueError,
     "packed: expected the (K/16, 2N)"),
    ("marlin_int4_gemm", replace(marlin_args(), 2, torch.rand(2, 128)), TypeError, "scales: expected dtype"),
    ("marlin_int4_gemm", marlin_args(), ValueError, "input: expected a CUDA tensor"),
    ("marlin_int4_dequantize", marlin_args()[1:], ValueError, "packed: expected a CUDA tensor"),
]


def check_quick_case(op, args, exc, fragment):
    with pytest.raises(exc) as info:
        getattr(ops, op)(*args)
    assert fragment in str(info.value)




def quick_tests(ops_names):
    cases = [c for c in QUICK_CASES if c[0] in ops_names]

    @pytest.mark.parametrize("op, args, exc, fragment", cases, ids=[f"{c[0]}-{i}" for i, c in enumerate(cases)])
    def test_bad_arguments_through_the_dispatcher(op, args, exc, fragment):
        check_quick_case(op, args, exc, fragment)

    return test_bad_arguments_through_the_dispatcher
