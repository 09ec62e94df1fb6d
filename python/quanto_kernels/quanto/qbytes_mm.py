"""Our CUDA kernel for quanto's ``quanto::qbytes_mm`` op: int8 weights run on the library's int8 kernels.

quanto's own CUDA implementation of ``qbytes_mm(activations, weights, output_scales)`` multiplies the whole
int8 weight by its scales into a dense copy, then calls ``torch.matmul``. The shim's forward of quanto's
qint8 linear Function (shim.py) already avoids it in eager mode, but a graph compiled by ``torch.compile``
still called ``quanto::qbytes_mm`` for every qint8 layer (measured with torch's profiler on FLUX under
regional compilation: 494 calls per step and a dense-copy multiply costing 49 ms of GPU time), so the op itself
is served here:

* fp16 / bf16 activations times an ``(N, K)`` int8 weight with ``N`` per-channel scales in the activations'
  dtype (quanto's weight-only qint8 layout, as stored): ``quanto_kernels::int8_linear`` (docs/ops.md,
  "int8 weights"), same result shape and dtype as quanto's;
* anything else (int8 activations of quanto's activation-quantized layers, float8 weights, mixed dtypes):
  what quanto's CUDA implementation does, through quanto's own helper functions.
"""

from __future__ import annotations

import inspect
import threading
import warnings

import torch

from ..ops import _int8

_lock = threading.Lock()
_library = []  # the torch.library.Library holding the registration (kept alive)


def takes(activations, weights, output_scales) -> bool:
    """Whether the int8 kernels serve this call (only dtypes and shapes are looked at)."""
    return (weights.dtype == torch.int8 and weights.dim() == 2 and activations.dtype in _int8.ACT_DTYPES
            and output_scales.dtype == activations.dtype and output_scales.dim() in (1, 2)
            and output_scales.numel() == weights.shape[0] and output_scales.shape[0] == weights.shape[0]
            and activations.dim() >= 1 and activations.shape[-1] == weights.shape[1])


def quanto_behaviour(activations, weights, output_scales):
    """quanto 0.2.7's CUDA result for a call the int8 kernels do not serve, from its own helpers: int8 x int8
    products of enough aligned rows on torch's int8 matmul, everything else on a dense weight."""
    from optimum.quanto.library import qbytes_mm as q

    rows = activations.numel() // max(activations.shape[-1], 1)
    int8_mm = (activations.dtype == torch.int8 and weights.dtype == torch.int8 and rows > 16 and rows % 8 == 0
               and all(d % 8 == 0 for d in (activations.shape[-1], weights.shape[0])))
    return (q.qbytes_int_mm if int8_mm else q.qbytes_mm)(activations, weights, output_scales)


def qbytes_mm_cuda(activations, weights, output_scales):
    if takes(activations, weights, output_scales):
        return _int8.direct_linear(activations, weights, output_scales)
    return quanto_behaviour(activations, weights, output_scales)


def register() -> bool:
    """Registers qbytes_mm_cuda as quanto::qbytes_mm's CUDA kernel; idempotent. False if quanto lacks the op
    or its helpers (another quanto version) or torch refuses the override (with a warning): its own kernel
    stays."""
    with _lock:
        if _library:
            return True
        try:
            from optimum.quanto.library import qbytes_mm as q

            torch.ops.quanto.qbytes_mm.default  # noqa: B018 - defined?
            if not (callable(getattr(q, "qbytes_mm", None)) and callable(getattr(q, "qbytes_int_mm", None))):
                return False
        except (ImportError, AttributeError, RuntimeError):
            return False
        lib = torch.library.Library("quanto", "IMPL")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Overriding a previously registered kernel": the point
                override_impl(lib, "qbytes_mm", qbytes_mm_cuda, "CUDA")
        except RuntimeError as exc:  # a torch that refuses the override: quanto keeps working, only slower
            warnings.warn(f"quanto_kernels: quanto::qbytes_mm keeps quanto's CUDA kernel ({exc}); int8 layers "
                          "compiled by torch.compile will not reach the library's int8 kernels",
                          RuntimeWarning, stacklevel=2)
            return False
        _library.append(lib)
        return True


def override_impl(lib, op_name, fn, dispatch_key):
    """``lib.impl`` replacing a kernel that Python code already registered for the key (quanto registers its
    CUDA ``qbytes_mm`` from Python). torch releases differ: some take ``allow_override`` (default False up to
    2.11 at least, True in 2.13), older ones refuse any second Python registration of a key outright, so there
    the key is first dropped from torch.library's record of Python registrations — the C++ dispatcher itself
    accepts the override either way."""
    if "allow_override" in inspect.signature(lib.impl).parameters:
        lib.impl(op_name, fn, dispatch_key, allow_override=True)
        return
    registered = getattr(torch.library, "_impls", None)
    if isinstance(registered, set):
        registered.discard(f"{lib.ns}/{op_name}/{dispatch_key}")
    lib.impl(op_name, fn, dispatch_key)
