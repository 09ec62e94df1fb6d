"""AWQ v2 int4 weights with zero points: ``quanto_kernels::awq_int4_dequantize`` and
``quanto_kernels::awq_int4_gemm`` (docs/layouts.md, "AWQ v2 layout"; math, contract and dispatch in
docs/ops.md).

The weight is (N/4, K) int16 with (K/group_size, N) scales S and zeros Z (W = S*q + Z); S, Z, the
activations (..., K) and the result share one dtype, fp16 or bf16.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._native import abi
from . import _common as c
from . import _validate as v
from ._registration import define

FAMILY = c.GemmFamily("awq_int4", max_gemv_m="max_gemv_m", workspace_bytes="awq_int4_gemv_workspace_bytes",
                      gemv_size_params=("m", "n", "k", "group_size", "device"))


def check_weight(packed, scales, zeros):
    """Device-independent weight checks; returns (N, K, group_size)."""
    v.tensor(packed, "packed", dtypes=(torch.int16,), ndim=2)
    n, k = packed.shape[0] * 4, packed.shape[1]
    v.condition(n > 0 and k > 0 and k % 64 == 0, "packed",
                f"expected the (N/4, K) AWQ layout with K % 64 == 0, got {tuple(packed.shape)}")
    v.int4_size(n, k)
    return n, k, v.group_tensors(scales, zeros, n, k, 32)


def check_gemm(input, packed, scales, zeros):
    n, k, g = check_weight(packed, scales, zeros)
    v.activation(input, k, dtype=scales.dtype)
    return n, k, g


def device_checks(packed, scales, zeros, input=None) -> None:
    named = [("packed", packed), ("scales", scales), ("zeros", zeros)]
    v.all_on_cuda(*([("input", input)] if input is not None else []), *named)


def run_dequantize(packed, scales, zeros, n: int, k: int, group_size: int) -> torch.Tensor:
    out = torch.empty((n, k), dtype=scales.dtype, device=packed.device)
    abi.awq_int4_dequantize(w=packed.data_ptr(), scales=scales.data_ptr(), zeros=zeros.data_ptr(),
                            out=out.data_ptr(), n=n, k=k, group_size=group_size,
                            dtype=c.DTYPE_CODES[scales.dtype], device=packed.device.index, stream=c.stream(packed))
    return out


def run_gemv(a, packed, scales, zeros, n: int, k: int, group_size: int) -> torch.Tensor:
    m, dev = a.shape[0], a.device.index
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)

    def launch(ws, nbytes):
        abi.awq_int4_gemv(a=a.data_ptr(), w=packed.data_ptr(), scales=scales.data_ptr(), zeros=zeros.data_ptr(),
                          out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k,
                          group_size=group_size, dtype=c.DTYPE_CODES[a.dtype], device=dev, stream=c.stream_on(dev))

    c.launch_sized(FAMILY.workspace_bytes, (m, n, k, group_size, dev), a, launch)
    return out


def matmul(a, packed, scales, zeros, n: int, k: int, group_size: int,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """a (M >= 1, K) times the weight (+ bias), on the path the dispatch rule picks."""
    return c.gemv_or_dequant(FAMILY, a, lambda: run_gemv(a, packed, scales, zeros, n, k, group_size),
                             lambda: run_dequantize(packed, scales, zeros, n, k, group_size), bias)


def direct_dequantize(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """Dense (N, K) weight S*q + Z from the AWQ v2 layout, in the scales' dtype."""
    n, k, g = check_weight(packed, scales, zeros)
    device_checks(packed, scales, zeros)
    return run_dequantize(packed, scales, zeros, n, k, g)


def direct_gemm(input: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """input (..., K) times the AWQ v2 int4 weight: (..., N), all in the scales' dtype (fp16 or bf16)."""
    n, k, g = check_gemm(input, packed, scales, zeros)
    device_checks(packed, scales, zeros, input)
    lead = tuple(input.shape[:-1])
    m = input.numel() // k
    if m == 0:
        return input.new_empty(lead + (n,))
    return matmul(input.reshape(m, k), packed, scales, zeros, n, k, g).reshape(lead + (n,))


dequantize_op = define("awq_int4_dequantize", direct_dequantize)
gemm_op = define("awq_int4_gemm", direct_gemm)


@dequantize_op.register_fake
def _dequantize_fake(packed, scales, zeros):
    n, k, _ = check_weight(packed, scales, zeros)
    return packed.new_empty((n, k), dtype=scales.dtype)


@gemm_op.register_fake
def _gemm_fake(input, packed, scales, zeros):
    n, _, _ = check_gemm(input, packed, scales, zeros)
    return input.new_empty(tuple(input.shape[:-1]) + (n,))
