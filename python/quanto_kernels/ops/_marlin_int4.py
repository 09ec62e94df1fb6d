"""Marlin int4 weights with zero points: ``quanto_kernels::marlin_int4_dequantize`` and
``quanto_kernels::marlin_int4_gemm`` (docs/layouts.md, "Int4 Marlin layout" and "Scale permutations";
math, contract and dispatch in docs/ops.md).

The weight is (K/16, 2N) int32 with (K/group_size, N) scales S and zeros Z (W = S*q + Z), stored in
the order `scale_perm` names (ABI codes SCALE_PERM_*); S, Z, the activations (..., K) and the result
share one dtype, fp16 or bf16.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._native import abi
from . import _common as c
from . import _validate as v
from ._registration import define

FAMILY = c.GemmFamily("marlin_int4", max_gemv_m="max_gemv_m", workspace_bytes="marlin_int4_gemv_workspace_bytes",
                      gemv_size_params=("m", "n", "k", "group_size", "device"))
SCALE_PERMS = (abi.SCALE_PERM_NONE, abi.SCALE_PERM_BLOCK32, abi.SCALE_PERM_BLOCK64)


def scale_perm_for(groups: int) -> int:
    """The permutation quanto applies to Marlin int4 scales/zeros: Block32 for one group, else Block64."""
    return abi.SCALE_PERM_BLOCK32 if groups == 1 else abi.SCALE_PERM_BLOCK64


def check_weight(packed, scales, zeros, scale_perm):
    """Device-independent weight checks; returns (N, K, group_size)."""
    v.tensor(packed, "packed", dtypes=(torch.int32,), ndim=2)
    v.condition(packed.shape[0] > 0 and packed.shape[1] % 128 == 0 and packed.shape[1] > 0, "packed",
                f"expected the (K/16, 2N) Marlin int4 layout with N % 64 == 0, got {tuple(packed.shape)}")
    n, k = packed.shape[1] // 2, packed.shape[0] * 16
    v.int4_size(n, k)
    group_size = v.group_tensors(scales, zeros, n, k, 16)
    v.integer(scale_perm, "scale_perm", choices=SCALE_PERMS)
    return n, k, group_size


def check_gemm(input, packed, scales, zeros, scale_perm):
    n, k, g = check_weight(packed, scales, zeros, scale_perm)
    v.activation(input, k, dtype=scales.dtype)
    return n, k, g


def device_checks(packed, scales, zeros, input=None) -> None:
    named = [("packed", packed), ("scales", scales), ("zeros", zeros)]
    v.all_on_cuda(*([("input", input)] if input is not None else []), *named)


def run_dequantize(packed, scales, zeros, scale_perm: int, n: int, k: int, group_size: int) -> torch.Tensor:
    out = torch.empty((n, k), dtype=scales.dtype, device=packed.device)
    abi.marlin_int4_dequantize(w=packed.data_ptr(), scales=scales.data_ptr(), zeros=zeros.data_ptr(),
                               out=out.data_ptr(), n=n, k=k, group_size=group_size, scale_perm=scale_perm,
                               dtype=c.DTYPE_CODES[scales.dtype], device=packed.device.index,
                               stream=c.stream(packed))
    return out


def run_gemv(a, packed, scales, zeros, scale_perm: int, n: int, k: int, group_size: int) -> torch.Tensor:
    m, dev = a.shape[0], a.device.index
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)

    def launch(ws, nbytes):
        abi.marlin_int4_gemv(a=a.data_ptr(), w=packed.data_ptr(), scales=scales.data_ptr(), zeros=zeros.data_ptr(),
                             out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k,
                             group_size=group_size, scale_perm=scale_perm, dtype=c.DTYPE_CODES[a.dtype], device=dev,
                             stream=c.stream_on(dev))

    c.launch_sized(FAMILY.workspace_bytes, (m, n, k, group_size, dev), a, launch)
    return out


def matmul(a, packed, scales, zeros, scale_perm: int, n: int, k: int, group_size: int,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """a (M >= 1, K) times the weight (+ bias), on the path the dispatch rule picks."""
    return c.gemv_or_dequant(FAMILY, a, lambda: run_gemv(a, packed, scales, zeros, scale_perm, n, k, group_size),
                             lambda: run_dequantize(packed, scales, zeros, scale_perm, n, k, group_size), bias)


def gemm_checked(input, packed, scales, zeros, scale_perm: int, n: int, k: int, group_size: int) -> torch.Tensor:
    """input (..., K) times the weight, all arguments already checked (check_gemm, device_checks)."""
    lead = tuple(input.shape[:-1])
    m = input.numel() // k
    if m == 0:
        return input.new_empty(lead + (n,))
    return matmul(input.reshape(m, k), packed, scales, zeros, scale_perm, n, k, group_size).reshape(lead + (n,))


def direct_dequantize(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, scale_perm: int) -> torch.Tensor:
    """Dense (N, K) weight S*q + Z from the Marlin int4 layout (scales/zeros stored with scale_perm), in their dtype."""
    n, k, g = check_weight(packed, scales, zeros, scale_perm)
    device_checks(packed, scales, zeros)
    return run_dequantize(packed, scales, zeros, scale_perm, n, k, g)


def direct_gemm(input: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                scale_perm: int) -> torch.Tensor:
    """input (..., K) times the Marlin int4 weight with zero points: (..., N), in the scales' dtype (fp16 or bf16)."""
    n, k, g = check_gemm(input, packed, scales, zeros, scale_perm)
    device_checks(packed, scales, zeros, input)
    return gemm_checked(input, packed, scales, zeros, scale_perm, n, k, g)


dequantize_op = define("marlin_int4_dequantize", direct_dequantize)
gemm_op = define("marlin_int4_gemm", direct_gemm)


@dequantize_op.register_fake
def _dequantize_fake(packed, scales, zeros, scale_perm):
    n, k, _ = check_weight(packed, scales, zeros, scale_perm)
    return packed.new_empty((n, k), dtype=scales.dtype)


@gemm_op.register_fake
def _gemm_fake(input, packed, scales, zeros, scale_perm):
    n, _, _ = check_gemm(input, packed, scales, zeros, scale_perm)
    return input.new_empty(tuple(input.shape[:-1]) + (n,))
