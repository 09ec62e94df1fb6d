"""``quanto_kernels::marlin_repack``: a GPTQ-style (K*bits/32, N) int32 weight into the Marlin tile
layout (docs/layouts.md, "FP8 Marlin layout" and "Int4 Marlin layout"; contract in docs/ops.md)."""

from __future__ import annotations

import torch

from .._native import abi
from . import _common as c
from . import _validate as v
from ._registration import define


def check(b_q_weight, perm, size_k, size_n, num_bits) -> tuple:
    """Device-independent checks; returns the output shape: (K/16, 4N) for fp8, (K/16, 2N) for int4."""
    v.integer(num_bits, "num_bits", choices=(4, 8))
    v.integer(size_k, "size_k", minimum=16)
    v.integer(size_n, "size_n", minimum=64)
    v.condition(size_k % 16 == 0, "size_k", f"must be a multiple of 16, got {size_k}")
    v.condition(size_n % 64 == 0, "size_n", f"must be a multiple of 64, got {size_n}")
    v.condition(size_k * size_n < v.MAX_ELEMENTS, "size_k",
                f"size_k * size_n = {size_k} * {size_n} elements is too many (limit 2^40)")
    v.tensor(b_q_weight, "b_q_weight", dtypes=(torch.int32,), shape=(size_k * num_bits // 32, size_n))
    v.tensor(perm, "perm", dtypes=(torch.int32,), ndim=1)
    v.condition(perm.numel() in (0, size_k), "perm",
                f"must be empty or have size_k={size_k} entries, got {perm.numel()}")
    return (size_k // 16, size_n * num_bits // 2)


def direct(b_q_weight: torch.Tensor, perm: torch.Tensor, size_k: int, size_n: int, num_bits: int) -> torch.Tensor:
    """Marlin tile layout of a (K*bits/32, N) int32 weight; `perm` (act-order rows) may be empty."""
    shape = check(b_q_weight, perm, size_k, size_n, num_bits)
    v.on_cuda(b_q_weight, "b_q_weight")
    perm_ptr = None
    if perm.numel():  # an empty perm is never read: its device does not matter
        v.on_cuda(perm, "perm", b_q_weight, "b_q_weight")
        lo, hi = int(perm.min()), int(perm.max())
        v.condition(0 <= lo and hi < size_k, "perm", f"entries must lie in [0, {size_k}), got [{lo}, {hi}]")
        perm_ptr = perm.data_ptr()
    out = torch.empty(shape, dtype=torch.int32, device=b_q_weight.device)
    abi.marlin_repack(in_=b_q_weight.data_ptr(), perm=perm_ptr, out=out.data_ptr(), size_k=size_k, size_n=size_n,
                      num_bits=num_bits, device=b_q_weight.device.index, stream=c.stream(b_q_weight))
    return out


op = define("marlin_repack", direct)


@op.register_fake
def _fake(b_q_weight, perm, size_k, size_n, num_bits):
    return b_q_weight.new_empty(check(b_q_weight, perm, size_k, size_n, num_bits))
