"""FP8 (e4m3) weights in the Marlin layout: ``quanto_kernels::fp8_marlin_dequantize`` and
``quanto_kernels::fp8_marlin_gemm`` (docs/layouts.md, "FP8 Marlin layout" and "Scale permutations";
math, contract and dispatch in docs/ops.md).

The weight is (K/16, 4N) int32 with N per-channel scales (fp16 or bf16, Block32-permuted);
activations (M, K) in the scales' dtype.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._native import abi
from . import _common as c
from . import _validate as v
from ._registration import define

ACT_DTYPES = (torch.float16, torch.bfloat16)
# Where the tensor-core kernel is the fastest weight-only path (measured on an H200 against the GEMV
# kernel, dequantize + cuBLAS and bf16 cuBLAS: benchmarks/results/fp8_mm_notes.md, v5): 33 <= M <= 256 on
# weights of at least 2^25 elements (32 MB of codes, e.g. 3072 x 12288; split-K keeps small grids busy).
# Below, the GEMV kernel; above, and on smaller weights (4096 x 4096 at M = 256 measured 0.040 ms here
# against 0.032 for dequantize + cuBLAS), GEMV or dequantize + cuBLAS.
TC_FROM_M, TC_TO_M, TC_MIN_WEIGHT = 33, 256, 1 << 25
# What the library's plan reads at every call (tests and benchmarks force the tensor-core kernel's tile,
# split-K, blocks per multiprocessor and stage depth with them).
TC_PLAN_ENV = ("QK_FP8_MM_TILE", "QK_FP8_MM_SPLITS", "QK_FP8_MM_BLOCKS_PER_SM", "QK_FP8_MM_SLICES")
# The small-M kernels' plan reads QK_FP8_GEMV_BLOCKS_PER_SM, QK_FP8_GEMV_KERNEL and QK_GEMV_FP8_ENGINE the same
# way (they change the workspace size; a cached size the library refuses is asked again: launch_sized).
FAMILY = c.GemmFamily("fp8_marlin", max_gemv_m="fp8_marlin_max_gemv_m",
                      workspace_bytes="fp8_marlin_gemv_workspace_bytes",
                      tc=c.TensorCoreKernel(available="fp8_marlin_mm_available", max_m="fp8_marlin_mm_max_m",
                                            workspace="fp8_marlin_mm_workspace_bytes", from_m=TC_FROM_M,
                                            to_m=TC_TO_M, min_weight=TC_MIN_WEIGHT))


# ------------------------------------------------------------------------------------ validation

checked_weights = c.CheckedWeights()  # fp8_marlin_gemm's (what quanto's Marlin FP8 op reaches)



def check_weight(b_q_weight, b_scales):
    """Device-independent weight checks; returns (N, K)."""
    v.tensor(b_q_weight, "b_q_weight", dtypes=(torch.int32,), ndim=2)
    v.condition(b_q_weight.shape[1] % 256 == 0 and b_q_weight.shape[0] > 0 and b_q_weight.shape[1] > 0,
                "b_q_weight",
                lambda: f"expected the (K/16, 4N) FP8 Marlin layout with N % 64 == 0, got shape "
                        f"{tuple(b_q_weight.shape)}")
    n, k = b_q_weight.shape[1] // 4, b_q_weight.shape[0] * 16
    v.condition(n * k < v.MAX_ELEMENTS, "b_q_weight", lambda: f"N * K = {n} * {k} elements is too many (limit 2^40)")
    v.tensor(b_scales, "b_scales", dtypes=ACT_DTYPES)
    v.condition(b_scales.dim() >= 1 and b_scales.numel() == n and b_scales.shape[-1] == n, "b_scales",
                lambda: f"expected N={n} per-channel scales of shape (1, N) or (N,), got {tuple(b_scales.shape)}")
    return n, k


def check_gemm(a, b_q_weight, b_scales):
    """Device-independent checks of a GEMM call; returns (N, K)."""
    n, k = check_weight(b_q_weight, b_scales)
    check_activation(a, b_scales, k)
    return n, k


def check_activation(a, b_scales, k: int) -> None:
    """The call's own part of check_gemm: a (M, K) against a checked weight."""
    v.tensor(a, "a", dtypes=ACT_DTYPES, ndim=2)
    v.condition(a.shape[1] == k, "a", lambda: f"expected K={k} columns to match b_q_weight, got shape {tuple(a.shape)}")
    if b_scales.dtype != a.dtype:
        raise TypeError(f"b_scales: dtype {b_scales.dtype} must match the activation dtype {a.dtype}")


def device_checks(b_q_weight, b_scales, a=None) -> None:
    if a is not None:
        v.on_cuda(a, "a")
    v.on_cuda(b_q_weight, "b_q_weight")
    v.on_cuda(b_scales, "b_scales", b_q_weight, "b_q_weight")
    if a is not None:
        v.on_cuda(b_q_weight, "b_q_weight", a, "a")


# ------------------------------------------------------------------ launches (arguments checked)


def run_dequantize(b_q_weight, b_scales, n: int, k: int) -> torch.Tensor:
    out = torch.empty((n, k), dtype=b_scales.dtype, device=b_q_weight.device)
    abi.fp8_marlin_dequantize(w=b_q_weight.data_ptr(), scales=b_scales.data_ptr(), out=out.data_ptr(), n=n, k=k,
                              dtype=c.DTYPE_CODES[b_scales.dtype], device=b_q_weight.device.index,
                              stream=c.stream(b_q_weight))
    return out


def run_gemv(a, b_q_weight, b_scales, n: int, k: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The fused small-M kernel; bias (N dense values of a's dtype, or None) goes to its epilogue."""
    m, dev = a.shape[0], a.device.index
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)

    def launch(ws, nbytes):
        abi.fp8_marlin_gemv(a=a.data_ptr(), w=b_q_weight.data_ptr(), scales=b_scales.data_ptr(), bias=c.data_ptr(bias),
                            out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k,
                            dtype=c.DTYPE_CODES[a.dtype], device=dev, stream=c.stream_on(dev))

    c.launch_sized(FAMILY.workspace_bytes, (m, n, k, dev), a, launch)
    return out


def run_tc(a, b_q_weight, b_scales, bias, n: int, k: int) -> torch.Tensor:
    """The tensor-core kernel; a must be dense (row stride K) and 16-byte aligned (callers ensure it)."""
    m, dev = a.shape[0], a.device.index
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)

    def launch(ws, nbytes):
        abi.fp8_marlin_mm(a=a.data_ptr(), w=b_q_weight.data_ptr(), scales=b_scales.data_ptr(), bias=c.data_ptr(bias),
                          out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k,
                          dtype=c.DTYPE_CODES[a.dtype], device=dev, stream=c.stream_on(dev))

    c.launch_sized(FAMILY.tc.workspace_bytes, (m, n, k, dev), a, launch)
    return out


def matmul(a, b_q_weight, b_scales, n: int, k: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """a (M >= 1, K) times the weight (+ bias), on the path the dispatch rule picks."""
    return c.gemv_or_dequant(FAMILY, a, lambda b: run_gemv(a, b_q_weight, b_scales, n, k, b),
                             lambda: run_dequantize(b_q_weight, b_scales, n, k), bias,
                             tc=(n, k, lambda x, b: run_tc(x, b_q_weight, b_scales, b, n, k)), gemv_bias_n=n)


# ------------------------------------------------------------------------------------------- ops


def direct_dequantize(b_q_weight: torch.Tensor, b_scales: torch.Tensor) -> torch.Tensor:
    """Dense (N, K) weight, in the scales' dtype, from the FP8 Marlin layout and permuted scales."""
    n, k = check_weight(b_q_weight, b_scales)
    device_checks(b_q_weight, b_scales)
    return run_dequantize(b_q_weight, b_scales, n, k)


def direct_gemm(a: torch.Tensor, b_q_weight: torch.Tensor, b_scales: torch.Tensor) -> torch.Tensor:
    """a (M, K) fp16/bf16 times the FP8 Marlin weight: (M, N) in a's dtype, scale applied in fp32."""
    known = checked_weights.lookup(b_q_weight, b_scales)  # the weight's own checks ran at an earlier call
    n, k = check_weight(b_q_weight, b_scales) if known is None else known
    check_activation(a, b_scales, k)
    if known is None:
        device_checks(b_q_weight, b_scales, a)
        checked_weights.add(b_q_weight, b_scales, (n, k))
    else:
        v.on_cuda(a, "a")
        v.on_cuda(b_q_weight, "b_q_weight", a, "a")
    if a.shape[0] == 0:
        return a.new_empty((0, n))
    return matmul(a, b_q_weight, b_scales, n, k)


dequantize_op = define("fp8_marlin_dequantize", direct_dequantize)
gemm_op = define("fp8_marlin_gemm", direct_gemm)


@dequantize_op.register_fake
def _dequantize_fake(b_q_weight, b_scales):
    n, k = check_weight(b_q_weight, b_scales)
    return b_q_weight.new_empty((n, k), dtype=b_scales.dtype)


@gemm_op.register_fake
def _gemm_fake(a, b_q_weight, b_scales):
    n, _ = check_gemm(a, b_q_weight, b_scales)
    return a.new_empty((a.shape[0], n))
