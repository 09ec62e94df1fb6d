"""How the package's ops become ``torch.ops.quanto_kernels.*``: one ``torch.library.Library``, and for each op
its schema (inferred from the checked function's annotations), that function as the kernel of every device,
its fake impl for torch.compile, and an autograd kernel that only refuses a backward.

Not ``torch.library.custom_op``: its per-call wrapper (an autograd layer in Python, a second dispatch, an
aliasing check of the result) cost ~30 us of host time per call on an H200 (``int8_linear`` 81 us through it,
51 us called directly: benchmarks/results/entry_host_time_h200_2026-12-02.txt), and graphs compiled by
torch.compile call these ops once per layer, so a compiled model waits on it. Registered here, a call costs a
dispatch plus the autograd kernel below (a few microseconds). The behaviour is custom_op's: the same schema,
fake impl and errors; a backward through an op raises, as it did.
"""

from __future__ import annotations

from typing import Callable

import torch

NAMESPACE = "quanto_kernels"
_LIB = torch.library.Library(NAMESPACE, "DEF")
_AFTER_AUTOGRAD = torch._C._after_autograd_keyset


class _NoBackward(torch.autograd.Function):
    """Marks an op's result as produced without a derivative: a backward through it raises."""

    @staticmethod
    def forward(ctx, name, out, *inputs):
        ctx.name = name
        return out

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(f"{NAMESPACE}::{ctx.name} has no backward: call it under torch.no_grad(), or through "
                           "quanto's layers, whose backward dequantizes the weight")


def _requires_grad(values) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in values)


class Op:
    """A registered op: called like its function (through the dispatcher); ``default`` is its OpOverload
    (torch.library.opcheck takes it); ``register_fake`` decorates its fake impl."""

    def __init__(self, name: str):
        self.name = name
        self._packet = getattr(getattr(torch.ops, NAMESPACE), name)
        self.default = self._packet.default

    def __call__(self, *args, **kwargs):
        return self._packet(*args, **kwargs)

    def register_fake(self, fn: Callable) -> Callable:
        torch.library.register_fake(f"{NAMESPACE}::{self.name}", fn, lib=_LIB)
        return fn

    def __repr__(self) -> str:
        return f"<op {NAMESPACE}::{self.name}>"


def define(name: str, fn: Callable) -> Op:
    """``quanto_kernels::<name>``, running ``fn`` (type-annotated, returns a new tensor) on every device."""
    # pt2_compliant: what custom_op tags its ops with (they keep their schema, fake impl and no mutation)
    _LIB.define(name + torch.library.infer_schema(fn, mutates_args=()), tags=(torch.Tag.pt2_compliant_tag,))
    _LIB.impl(name, fn, "CompositeExplicitAutograd")
    op = Op(name)
    overload = op.default

    def autograd(keyset, *args, **kwargs):
        out = overload.redispatch(keyset & _AFTER_AUTOGRAD, *args, **kwargs)
        if torch.is_grad_enabled() and (_requires_grad(args) or _requires_grad(kwargs.values())):
            tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
            return _NoBackward.apply(name, out, *tensors)
        return out

    _LIB.impl(name, autograd, "Autograd", with_keyset=True)
    return op
