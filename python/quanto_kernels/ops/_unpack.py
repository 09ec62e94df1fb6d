"""``quanto_kernels::unpack``: quanto's packed 2-/4-bit tensors to one code per byte (docs/layouts.md,
"Packed sub-byte tensors"; contract in docs/ops.md)."""

from __future__ import annotations

import torch

from .._native import abi
from . import _common as c
from . import _validate as v
from ._registration import define


def check(t, bits) -> tuple:
    """Device-independent checks; returns the output shape."""
    v.tensor(t, "t", dtypes=(torch.uint8,))
    v.integer(bits, "bits", choices=(2, 4))
    v.condition(t.dim() >= 1, "t", "must have at least one dimension")
    v.condition(t.numel() < v.MAX_ELEMENTS, "t", f"{t.numel()} elements is too many (limit 2^40)")
    return (t.shape[0] * (8 // bits),) + tuple(t.shape[1:])


def direct(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of quanto's ``pack_weights``: bit-field i of every byte becomes row-chunk i (uint8)."""
    shape = check(t, bits)
    v.on_cuda(t, "t")
    out = torch.empty(shape, dtype=torch.uint8, device=t.device)
    if t.numel() == 0:
        return out
    abi.unpack(in_=t.data_ptr(), out=out.data_ptr(), numel=t.numel(), bits=bits, device=t.device.index,
               stream=c.stream(t))
    return out


op = define("unpack", direct)


@op.register_fake
def _fake(t, bits):
    return t.new_empty(check(t, bits), dtype=torch.uint8)
