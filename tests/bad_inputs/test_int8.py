"""Bad inputs of ``quanto_kernels::int8_dequantize`` and ``::int8_gemm`` (docs/ops.md, "int8 weights").

Front ends: ``torch.ops.quanto_kernels.*`` (the dispatcher; meta tensors reach the fake impls) and
``quanto_kernels.ops.direct.*``. int8 has no quanto binding (quanto 0.2.7 has no int8 CUDA op; the shim
routes its autograd Function to the op itself). Each bad argument raises TypeError/ValueError whose
message starts with the argument's name, before anything reaches the native library.

Devices, as in _table.py: ``cpu`` and ``meta`` run everywhere (type, dtype, shape and count checks come
before the device checks, so they fire for CPU and meta tensors too); ``cuda`` runs the same table plus
the device/layout cases (a CPU tensor among CUDA ones, non-contiguous and misaligned views, another
GPU), with a recorder proving that no C entry point was reached and a synchronize proving the context is
healthy. A non-contiguous ``w`` is refused ("w: must be contiguous ... call .contiguous() first"), not
copied: quanto's stored data is always contiguous, so a strided weight is a caller's mistake.

Dispatch misuse (``force_path("gemv")`` with M above the limit or K % 32 != 0) is a ValueError too; it
needs CUDA tensors (the device checks come first) and is covered at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict

import pytest
import torch

import support as sp
from bad_inputs._table import DEVICES, TWO_GPUS, _huge, _noncontig

from quanto_kernels import ops

f16, bf16, f32 = torch.float16, torch.bfloat16, torch.float32
i8, u8, i16 = torch.int8, torch.uint8, torch.int16

M, N, K = 4, 100, 96  # N no multiple of anything the kernels tile by; K % 32 == 0 (both paths valid)
ORDER = {"int8_dequantize": ["w", "scales"], "int8_gemm": ["a", "w", "scales"]}


def _base_cpu() -> Dict[str, torch.Tensor]:
    g = sp.generator("bad-int8", device="cpu")
    return dict(
        a=torch.randn(M, K, generator=g).to(f16),
        w=torch.randint(-128, 128, (N, K), generator=g, dtype=torch.int16).to(i8),
        scales=((0.5 + torch.rand(N, 1, generator=g)) / (127 * K**0.5)).to(f16),
    )


_BASE = None


def base_args(op: str, dev: str) -> Dict[str, object]:
    global _BASE
    if _BASE is None:
        _BASE = _base_cpu()
    return {k: _BASE[k].to(dev) for k in ORDER[op]}


def front_ends(op):
    order = ORDER[op]
    return [
        ("direct", lambda a: getattr(ops.direct, op)(*[a[k] for k in order])),
        ("dispatch", lambda a: getattr(torch.ops.quanto_kernels, op)(*[a[k] for k in order])),
    ]


@dataclass
class Bad:
    id: str
    arg: str
    make: Callable[[dict, str], dict]
    exc: type
    match: str = ""
    device_only: bool = False  # needs real CUDA tensors
    schema: bool = False  # a Python type the dispatcher rejects itself (its own error naming the argument)
    gemm_only: bool = False
    gpus: int = 1


def _set(**values):
    return lambda args, dev: dict(values)


def _with(arg, fn):
    return lambda args, dev: {arg: fn(args[arg], dev)}


def _tensor_cases(arg, wrong_dtypes, gemm_only=False):
    cases = [Bad(f"{arg}-not-a-tensor", arg, _set(**{arg: 3}), TypeError, "expected a torch.Tensor", schema=True,
                 gemm_only=gemm_only)]
    for d in wrong_dtypes:
        cases.append(Bad(f"{arg}-{str(d).replace('torch.', '')}", arg, _with(arg, lambda t, dev, d=d: t.to(d)),
                         TypeError, "expected dtype", gemm_only=gemm_only))
    cases += [
        Bad(f"{arg}-on-cpu", arg, _with(arg, lambda t, d: t.cpu()), ValueError, "expected a CUDA tensor",
            device_only=True, gemm_only=gemm_only),
        Bad(f"{arg}-non-contiguous", arg, _with(arg, lambda t, d: _noncontig(t)), ValueError,
            r"must be contiguous .*\.contiguous\(\)", device_only=True, gemm_only=gemm_only),
        Bad(f"{arg}-offset-misaligned", arg, _with(arg, lambda t, d: sp.misaligned(t)), ValueError,
            "data pointer must be 16-byte aligned", device_only=True, gemm_only=gemm_only),
        Bad(f"{arg}-on-other-gpu", arg, _with(arg, lambda t, d: t.to("cuda:1")), ValueError, "OTHER_GPU",
            device_only=True, gemm_only=gemm_only, gpus=2),
    ]
    return cases


CASES = (
    _tensor_cases("w", [u8, i16, torch.int32, f16, bf16, torch.float8_e4m3fn])
    + _tensor_cases("scales", [f32, torch.float64, i8])
    + _tensor_cases("a", [f32, i8, i16], gemm_only=True)
    + [
        # w: shape
        Bad("w-1-d", "w", _with("w", lambda t, d: t.reshape(-1)), ValueError, "expected a 2-D"),
        Bad("w-3-d", "w", _with("w", lambda t, d: t.reshape(1, N, K)), ValueError, "expected a 2-D"),
        Bad("w-column-major", "w", _with("w", lambda t, d: t.t().contiguous().t()), ValueError,
            r"must be contiguous .*\.contiguous\(\)", device_only=True),
        Bad("w-no-rows", "w", _with("w", lambda t, d: t[:0].contiguous()), ValueError, "expected a non-empty"),
        Bad("w-no-columns", "w", _with("w", lambda t, d: t[:, :0].contiguous()), ValueError, "expected a non-empty"),
        Bad("w-NxK-2^40", "w", lambda a, d: {"w": _huge((2**20, 2**20), i8, d),
                                             "scales": torch.ones(2**20, 1, dtype=f16, device=d)},
            ValueError, "too many"),
        # scales: count and shape
        Bad("scales-too-few", "scales", _with("scales", lambda t, d: t[: N - 1].contiguous()), ValueError,
            f"expected N={N}"),
        Bad("scales-too-many", "scales", lambda a, d: {"scales": torch.ones(N + 1, 1, dtype=f16, device=d)},
            ValueError, f"expected N={N}"),
        Bad("scales-row", "scales", _with("scales", lambda t, d: t.reshape(1, N)), ValueError, f"expected N={N}"),
        Bad("scales-Nx2", "scales", lambda a, d: {"scales": torch.ones(N, 2, dtype=f16, device=d)}, ValueError,
            f"expected N={N}"),
        Bad("scales-3-d", "scales", _with("scales", lambda t, d: t.reshape(N, 1, 1)), ValueError, f"expected N={N}"),
        Bad("scales-0-dim", "scales", _with("scales", lambda t, d: t.reshape(-1)[0]), ValueError, f"expected N={N}"),
        Bad("scales-empty", "scales", _with("scales", lambda t, d: t[:0].contiguous()), ValueError, f"expected N={N}"),
        # a: shape, K, dtype vs scales
        Bad("a-1-d", "a", _with("a", lambda t, d: t.reshape(-1)), ValueError, "expected a 2-D", gemm_only=True),
        Bad("a-3-d", "a", _with("a", lambda t, d: t.reshape(1, M, K)), ValueError, "expected a 2-D", gemm_only=True),
        Bad("a-K-too-small", "a", _with("a", lambda t, d: t[:, : K - 32].contiguous()), ValueError, f"expected K={K}",
            gemm_only=True),
        Bad("a-K-too-large", "a", lambda a, d: {"a": torch.zeros(M, K + 1, dtype=f16, device=d)}, ValueError,
            f"expected K={K}", gemm_only=True),
        Bad("a-transposed", "a", lambda a, d: {"a": torch.zeros(K, M, dtype=f16, device=d)}, ValueError,
            f"expected K={K}", gemm_only=True),
        Bad("scales-bf16-vs-a-fp16", "scales", _with("scales", lambda t, d: t.to(bf16)), TypeError,
            "must match the activation dtype", gemm_only=True),
        Bad("a-bf16-vs-scales-fp16", "scales", _with("a", lambda t, d: t.to(bf16)), TypeError,
            "must match the activation dtype", gemm_only=True),
    ]
)


def _params():
    out = []
    for op in ORDER:
        for c in CASES:
            if c.gemm_only and op != "int8_gemm":
                continue
            marks = [TWO_GPUS] if c.gpus > 1 else []
            out.append(pytest.param(op, c, id=f"{op}-{c.id}", marks=marks))
    return out


def _expected(case: Bad, front: str):
    if case.match == "OTHER_GPU":
        a = re.escape(case.arg)
        return (ValueError,), rf"(^{a}: is on cuda:1 but .* is on cuda:0)|(: is on cuda:0 but {a} is on cuda:1)"
    if case.schema and front == "dispatch":
        return (RuntimeError, TypeError), rf"argument '{re.escape(case.arg)}'"
    return (case.exc,), rf"^{re.escape(case.arg)}: .*{case.match}" if case.match else rf"^{re.escape(case.arg)}: "


def _after_gpu_case(calls, what):
    if calls is not None:
        assert calls.names == [], f"{what}: reached the native library ({calls.names}) although the arguments are bad"
        torch.cuda.synchronize()  # raises if anything left the context in an error state


@pytest.mark.parametrize("dev", DEVICES)
@pytest.mark.parametrize("op, case", _params())
def test_bad_argument_is_refused_naming_it(op, case, dev, lib_calls):
    if case.device_only and dev != "cuda":
        pytest.skip("device, layout and alignment checks need CUDA tensors (covered by the cuda variant)")
    for front, call in front_ends(op):
        args = base_args(op, dev)
        args.update(case.make(args, dev))
        what = f"{op} via {front} on {dev}, {case.id}"
        excs, regex = _expected(case, front)
        with pytest.raises(excs) as info:
            call(args)
        assert re.search(regex, str(info.value)), f"{what}: message {str(info.value)!r} does not match {regex!r}"
        _after_gpu_case(lib_calls, what)


# ----------------------------------------------------------------------- CPU tensors, all of them


@pytest.mark.parametrize("op, first", [("int8_gemm", "a"), ("int8_dequantize", "w")])
@pytest.mark.parametrize("front", ["direct", "dispatch"])
def test_cpu_tensors_are_refused_naming_the_first(op, first, front):
    """Valid CPU tensors: the ops are CUDA-only, the error names the first argument checked."""
    call = dict(front_ends(op))[front]
    with pytest.raises(ValueError, match=rf"^{first}: expected a CUDA tensor, got one on cpu"):
        call(base_args(op, "cpu"))


def test_non_contiguous_weight_on_cpu_is_refused_as_non_contiguous():
    """The contiguity check comes before the device check: the message says what to do about w."""
    args = base_args("int8_dequantize", "cpu")
    with pytest.raises(ValueError, match=r"^w: must be contiguous .*call \.contiguous\(\) first"):
        ops.int8_dequantize(args["w"].t().contiguous().t(), args["scales"])


# ------------------------------------------------------------------------------ valid edge shapes


@pytest.mark.parametrize("dev", [p for p in DEVICES if p.id != "cpu"])
@pytest.mark.parametrize("scales_shape", ["Nx1", "N"])
def test_zero_rows_return_an_empty_result(dev, scales_shape, lib_calls):
    fronts = front_ends("int8_gemm") if dev == "cuda" else [f for f in front_ends("int8_gemm") if f[0] == "dispatch"]
    for front, call in fronts:
        args = base_args("int8_gemm", dev)
        args["a"] = torch.empty(0, K, dtype=f16, device=dev)
        if scales_shape == "N":
            args["scales"] = args["scales"].reshape(N)
        out = call(args)
        assert tuple(out.shape) == (0, N) and out.dtype == f16 and out.device.type == dev, front
        if lib_calls is not None:
            assert lib_calls.names == [], f"int8_gemm via {front}: an empty input reached the library"


@pytest.mark.parametrize("scales_shape", ["Nx1", "N"])
@pytest.mark.parametrize("dtype", [f16, bf16], ids=["fp16", "bf16"])
def test_fake_impls_give_shapes_and_dtypes(scales_shape, dtype):
    args = base_args("int8_gemm", "meta")
    s = args["scales"].to(dtype)
    s = s.reshape(N) if scales_shape == "N" else s
    for m in (1, 64, 65, 300):
        out = torch.ops.quanto_kernels.int8_gemm(torch.empty(m, K, dtype=dtype, device="meta"), args["w"], s)
        assert out.shape == (m, N) and out.dtype == dtype and out.device.type == "meta"
    out = torch.ops.quanto_kernels.int8_dequantize(args["w"], s)
    assert out.shape == (N, K) and out.dtype == dtype and out.device.type == "meta"
    # K % 32 != 0 is valid (the dequantize path serves it)
    w48 = torch.empty(N, 48, dtype=i8, device="meta")
    assert torch.ops.quanto_kernels.int8_gemm(torch.empty(3, 48, dtype=dtype, device="meta"), w48, s).shape == (3, N)


def test_huge_m_is_not_refused_by_the_checks():
    """M*K past 2^31 is served (large M goes through a dense GEMM): the fake impl gives its shape."""
    args = base_args("int8_gemm", "meta")
    rows = 2**31 + 17
    out = torch.ops.quanto_kernels.int8_gemm(_huge((rows, K), f16, "meta"), args["w"], args["scales"])
    assert out.shape == (rows, N) and out.device.type == "meta"


# ----------------------------------------------------------------------------- dispatch misuse (GPU)


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("what", ["gemv-M-over-limit", "gemv-K-not-multiple-of-32"])
def test_forced_gemv_outside_its_range_is_a_clear_error(what, lib_calls):
    limit = ops.GEMM_FAMILIES["int8"].max_gemv_m
    g = sp.generator("bad-int8-force", what)
    k = K if what.startswith("gemv-M") else 48
    m = limit + 1 if what.startswith("gemv-M") else 2
    a = torch.randn(m, k, generator=g, device="cuda", dtype=f16)
    w = torch.randint(-128, 128, (N, k), generator=g, device="cuda", dtype=torch.int16).to(i8)
    s = torch.full((N, 1), 0.01, dtype=f16, device="cuda")
    regex = (rf"M={m} rows exceed the int8 fused kernel's limit of {limit}" if what.startswith("gemv-M")
             else r"K=48 is no multiple of 32")
    for front, call in front_ends("int8_gemm"):
        with ops.force_path("gemv"), pytest.raises(ValueError, match=regex):
            call(dict(a=a, w=w, scales=s))
        _after_gpu_case(lib_calls, f"{what} via {front}")
    # the same call outside the override is served
    out = ops.int8_gemm(a, w, s)
    assert out.shape == (m, N) and bool(torch.isfinite(out).all())


@pytest.mark.gpu
@sp.requires_gpu
def test_context_is_healthy_after_the_bad_calls():
    g = sp.generator("bad-int8-after")
    a = torch.randn(3, K, generator=g, device="cuda", dtype=f16)
    w = torch.randint(-128, 128, (N, K), generator=g, device="cuda", dtype=torch.int16).to(i8)
    s = ((0.5 + torch.rand(N, 1, generator=g, device="cuda")) / (127 * K**0.5)).to(f16)
    ref = sp.matmul_reference(a, w.double() * s.double())
    sp.assert_gemm_close(ops.int8_gemm(a, w, s), ref, f16, "int8_gemm after the bad calls")
    torch.cuda.synchronize()
