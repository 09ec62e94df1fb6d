"""Bad inputs of ``quanto_kernels::fp8_compute_linear``: each is refused with an exception whose message
starts with the argument's name, before anything reaches the native library.

Front ends: ``quanto_kernels.ops.direct.fp8_compute_linear`` (the checks without the dispatcher) and
``torch.ops.quanto_kernels.fp8_compute_linear`` (the dispatcher; with meta tensors this runs the fake
impl, which must refuse the same arguments so torch.compile reports them at trace time). Devices:
``cpu`` and ``meta`` everywhere (the device-independent checks come first), ``cuda`` for the checks
that need real CUDA tensors (placement, layout, alignment of the weight), with the C ABI calls
recorded to prove none was made. What the op accepts instead of refusing (strided or misaligned x,
which it copies) is tested in tests/ops/test_gpu_fp8_compute.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import support as sp

from quanto_kernels import ops

f16, bf16, f32, i16, i32 = torch.float16, torch.bfloat16, torch.float32, torch.int16, torch.int32
M, K, N = 4, 64, 128
ARGS = ("x", "w_packed", "scales", "bias")


def _valid(dev):
    g = sp.generator("bad-fp8c", device="cpu")
    codes = sp.random_fp8_codes(N, K, g, device="cpu")
    s = sp.random_fp8_scales(N, f16, g, device="cpu")
    args = {"x": torch.randn(M, K, generator=g).half(), "w_packed": sp.fp8_marlin_layout(codes),
            "scales": sp.permute_block32(s.reshape(1, N)), "bias": torch.randn(N, generator=g).half()}
    return {k: v.to(dev) for k, v in args.items()}


def _huge(shape, dtype, dev):
    """A stride-0 view (no allocation) of a shape past the size limits."""
    return torch.empty((1,) * len(shape), dtype=dtype, device=dev).expand(*shape)


@dataclass
class Bad:
    id: str
    arg: str
    change: Callable[[dict, str], object]  # (valid args, device) -> the bad value of `arg`
    exc: type
    match: str


CASES = [
    Bad("x-not-a-tensor", "x", lambda a, d: [[1.0] * K], TypeError, "expected a torch.Tensor"),
    Bad("x-float32", "x", lambda a, d: a["x"].float(), TypeError, "expected dtype"),
    Bad("x-int8", "x", lambda a, d: a["x"].to(torch.int8), TypeError, "expected dtype"),
    Bad("x-0-dim", "x", lambda a, d: a["x"].reshape(-1)[0], ValueError, r"expected shape \(\.\.\., K=64\)"),
    Bad("x-wrong-k", "x", lambda a, d: a["x"][:, :32].contiguous(), ValueError, r"expected shape \(\.\.\., K=64\)"),
    Bad("w_packed-int16", "w_packed", lambda a, d: a["w_packed"].to(i16), TypeError, "expected dtype"),
    Bad("w_packed-1-d", "w_packed", lambda a, d: a["w_packed"].reshape(-1), ValueError, "expected a 2-D"),
    Bad("w_packed-no-rows", "w_packed", lambda a, d: a["w_packed"][:0], ValueError, r"expected the \(K/16, 4N\)"),
    Bad("w_packed-width", "w_packed", lambda a, d: a["w_packed"][:, :255].contiguous(), ValueError,
        r"expected the \(K/16, 4N\)"),
    Bad("w_packed-k-not-multiple-of-32", "w_packed", lambda a, d: a["w_packed"][:3].contiguous(), ValueError,
        "K=48 .*multiple of 32"),
    Bad("w_packed-n-not-multiple-of-64", "w_packed", lambda a, d: a["w_packed"][:, :384].contiguous(), ValueError,
        "N=96 .*multiple of 64"),
    Bad("w_packed-NxK-2^40", "w_packed", lambda a, d: _huge((2**16, 2**22), i32, d), ValueError, ".*too many"),
    Bad("scales-float32", "scales", lambda a, d: a["scales"].float(), TypeError, "expected dtype"),
    Bad("scales-wrong-n", "scales", lambda a, d: a["scales"][:, :64].contiguous(), ValueError, "expected N=128"),
    Bad("scales-column", "scales", lambda a, d: a["scales"].reshape(-1, 1), ValueError, "expected N=128"),
    Bad("scales-3-d", "scales", lambda a, d: a["scales"].reshape(1, 1, -1), ValueError, "expected N=128"),
    Bad("scales-dtype-vs-x", "scales", lambda a, d: a["scales"].to(bf16), TypeError,
        "dtype torch.bfloat16 must match the activation dtype"),
    Bad("bias-float32", "bias", lambda a, d: a["bias"].float(), TypeError, "expected dtype torch.float16"),
    Bad("bias-wrong-n", "bias", lambda a, d: a["bias"][:64].contiguous(), ValueError, r"expected shape \(128,\)"),
    Bad("bias-2-d", "bias", lambda a, d: a["bias"].reshape(1, -1), ValueError, r"expected shape \(128,\)"),
]


def _call(front, args):
    fn = ops.direct.fp8_compute_linear if front == "direct" else torch.ops.quanto_kernels.fp8_compute_linear
    return fn(*[args[k] for k in ARGS])


@pytest.mark.parametrize("front", ["direct", "dispatch"])
@pytest.mark.parametrize("dev", ["cpu", "meta"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_argument_is_refused_naming_it(case, dev, front):
    args = _valid(dev)
    args[case.arg] = case.change(args, dev)
    if front == "dispatch" and not isinstance(args[case.arg], torch.Tensor):
        # torch's dispatcher refuses a non-tensor itself, naming the argument
        with pytest.raises((TypeError, RuntimeError), match=case.arg):
            _call(front, args)
        return
    with pytest.raises(case.exc, match="^" + re.escape(case.arg) + ": " + case.match):
        _call(front, args)


@pytest.mark.parametrize("front", ["direct", "dispatch"])
def test_cpu_tensors_are_refused_naming_x(front):
    with pytest.raises(ValueError, match="^x: expected a CUDA tensor"):
        _call(front, _valid("cpu"))


def test_valid_meta_arguments_give_the_output_shape():
    """Through the dispatcher, meta tensors reach the fake impl: the shape torch.compile will see."""
    args = _valid("meta")
    args["x"] = torch.empty(2, 3, K, dtype=f16, device="meta")
    out = _call("dispatch", args)
    assert out.shape == (2, 3, N) and out.dtype == f16 and out.device.type == "meta"
    args["bias"] = None
    assert _call("dispatch", args).shape == (2, 3, N)


# --------------------------------------------------------------------------------------- CUDA only

CUDA_CASES = [
    Bad("w_packed-on-cpu", "w_packed", lambda a, d: a["w_packed"].cpu(), ValueError, "expected a CUDA tensor"),
    Bad("w_packed-non-contiguous", "w_packed",
        lambda a, d: torch.zeros(K // 16, 8 * N, dtype=i32, device=d)[:, ::2], ValueError, "must be contiguous"),
    Bad("w_packed-misaligned", "w_packed", lambda a, d: sp.misaligned(a["w_packed"]), ValueError,
        "data pointer must be 16-byte aligned"),
    Bad("scales-on-cpu", "scales", lambda a, d: a["scales"].cpu(), ValueError, "expected a CUDA tensor"),
    Bad("scales-misaligned", "scales", lambda a, d: sp.misaligned(a["scales"]), ValueError,
        "data pointer must be 16-byte aligned"),
    Bad("bias-on-cpu", "bias", lambda a, d: a["bias"].cpu(), ValueError, "is on cpu but x is on cuda"),
]


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("front", ["direct", "dispatch"])
@pytest.mark.parametrize("case", CUDA_CASES, ids=[c.id for c in CUDA_CASES])
def test_bad_cuda_argument_is_refused_before_the_library(case, front, lib_calls):
    args = _valid("cuda")
    args[case.arg] = case.change(args, "cuda")
    lib_calls.clear()
    with pytest.raises(case.exc, match="^" + re.escape(case.arg) + ": " + case.match):
        _call(front, args)
    torch.cuda.synchronize()
    assert lib_calls.names == [], f"the library was called: {lib_calls.names}"


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.skipif(sp.HAS_GPU and sp.fp8_compute_skip_reason() is None,
                    reason="this GPU has FP8 tensor cores; the refusal needs one below compute capability 8.9")
def test_gpu_without_fp8_tensor_cores_is_refused_naming_it(lib_calls):
    lib_calls.clear()
    with pytest.raises(NotImplementedError, match=r"^x: .*compute capability .*FP8 tensor cores"):
        _call("direct", _valid("cuda"))
    assert lib_calls.names == []
