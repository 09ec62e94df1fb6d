"""int8 weights in quanto's own layout: ``quanto_kernels::int8_dequantize``, ``quanto_kernels::int8_gemm``
and ``quanto_kernels::int8_linear`` (docs/ops.md, "int8 weights"; dispatch in docs/ops.md, "Dispatch").

The weight is quanto's ``WeightQBytesTensor`` data as stored: (N, K) int8, row-major, with N
per-channel scales of shape (N, 1) or (N,) in the activation dtype (fp16 or bf16). Nothing is
repacked, so a state dict saved with or without quanto_kernels is the same.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._native import abi
from . import _common as c
from . import _validate as v
from ._registration import define

ACT_DTYPES = (torch.float16, torch.bfloat16)
_INT8 = (torch.int8,)
# Where the tensor-core kernel (sm_90a) is the fastest int8 path (measured on an H200 against the GEMV
# engine, dequantize + cuBLAS and bf16 cuBLAS: benchmarks/results/int8_mm_notes.md, v2): 17 <= M <= 256 on
# weights of at least 2^25 elements. Its time is flat up to 64 rows and beat the GEMV engine by 8-22 % at
# M = 32 on all five layers measured, while the GEMV engine is as fast or faster at M = 16; at M = 512
# dequantize + cuBLAS won on three of five.
# Where the GEMM kernel below is available (sm_90a with CUTLASS), it takes M >= 65 and this kernel keeps 17..64.
TC_FROM_M, TC_TO_M, TC_MIN_WEIGHT = 17, 256, 1 << 25
# What the library's plan reads at every call (tests and benchmarks force tile, split-K, blocks per
# multiprocessor and stage depth with them).
TC_PLAN_ENV = ("QK_INT8_MM_TILE", "QK_INT8_MM_SPLITS", "QK_INT8_MM_BLOCKS_PER_SM", "QK_INT8_MM_SLICES")
# The small-M plan reads QK_INT8_GEMV_KERNEL, QK_INT8_GEMV_BLOCKS_PER_SM and QK_GEMV_INT8_ENGINE the same way
# (tests and benchmarks pick the kernel and its split count; a cached workspace size is asked again when short).

# The GEMM kernel for larger M (sm_90a, CUTLASS's mixed-input mainloop: qk_int8_gemm). Measured on an H200
# against the kernels above, dequantize + cuBLAS and bf16 cuBLAS on six FLUX / LLM layers, M = 32 ... 4608, and
# in the layer benchmark (benchmarks/results/int8_gemm_notes.md): from 65 rows it beat the tensor-core kernel
# on every weight of at least 2^25 elements (M = 128: 8-30 %, M = 256: 15-30 %) and dequantize + cuBLAS at
# M = 512 ... 1024 (up to 32 %); smaller weights (3072 x 3072) keep dequantize + cuBLAS below 512 rows. Past
# 1024 rows, on a grid of two or more waves of its 256-token tiles, it won where the last wave is >= 90 % full
# and lost 2-9 % where it is not (4608 rows on 3072 or 4096 channels: 82-87 %, even with the stream-K
# schedule), so those keep dequantize + cuBLAS; on smaller grids its stream-K schedule evens the load out
# (3072 channels at M = 2048: 4-11 % faster than dequantize + cuBLAS).
GEMM_FROM_M, GEMM_SMALL_WEIGHT_FROM_M, GEMM_WAVE_FROM_M, GEMM_MIN_WAVE_FILL = 65, 512, 1025, 0.9


def gemm_tiles(m: int, n: int) -> int:
    """Blocks of the GEMM kernel's 128-channel x 256-token tile grid."""
    return -(-n // 128) * -(-m // 256)


def wave_fill(m: int, n: int, sm_count: int) -> float:
    """How full the last wave of the GEMM kernel's 128-channel x 256-token tile grid is, 0..1 (1: whole waves)."""
    tiles = gemm_tiles(m, n)
    if sm_count <= 0:
        return 1.0
    return tiles / (-(-tiles // sm_count) * sm_count)


def gemm_rule(m: int, n: int, k: int, sm_count: int) -> bool:
    """Where the GEMM kernel is the fastest int8 path (M >= GEMM_FROM_M already holds)."""
    if (m >= GEMM_WAVE_FROM_M and gemm_tiles(m, n) >= 2 * sm_count
            and wave_fill(m, n, sm_count) < GEMM_MIN_WAVE_FILL):
        return False
    return n * k >= TC_MIN_WEIGHT or m >= GEMM_SMALL_WEIGHT_FROM_M


FAMILY = c.GemmFamily("int8", max_gemv_m="int8_max_gemv_m", workspace_bytes="int8_gemv_workspace_bytes",
                      tc=c.TensorCoreKernel(available="int8_mm_available", max_m="int8_mm_max_m",
                                            workspace="int8_mm_workspace_bytes", from_m=TC_FROM_M, to_m=TC_TO_M,
                                            min_weight=TC_MIN_WEIGHT),
                      gemm=c.TensorCoreKernel(available="int8_gemm_available", max_m=None,
                                              workspace="int8_gemm_workspace_bytes", from_m=GEMM_FROM_M,
                                              to_m=(1 << 31) - 1, rule=gemm_rule,
                                              workspace_params=("m", "n", "k", "dtype", "device")))
# The fused GEMV reads K in slices of 32 (one 32-byte memory sector per channel).
GEMV_K_MULTIPLE = 32
# The tensor-core kernel's shape needs: 64-channel column tiles, 16-deep k slices.
TC_N_MULTIPLE, TC_K_MULTIPLE = 64, 16
# The GEMM kernel's: 16-byte rows of codes and of output (its copies are TMA boxes).
GEMM_N_MULTIPLE, GEMM_K_MULTIPLE = 8, 16


# ------------------------------------------------------------------------------------ validation


def check_weight(w, scales):
    """Device-independent weight checks; returns (N, K)."""
    # Messages are built only on failure (lambdas): these checks run at every layer call.
    v.tensor(w, "w", dtypes=_INT8, ndim=2)
    n, k = w.shape
    v.condition(n > 0 and k > 0, "w", lambda: f"expected a non-empty (N, K) matrix, got shape {tuple(w.shape)}")
    v.condition(n * k < v.MAX_ELEMENTS, "w", lambda: f"N * K = {n} * {k} elements is too many (limit 2^40)")
    v.tensor(scales, "scales", dtypes=ACT_DTYPES)
    v.condition(scales.numel() == n and scales.dim() in (1, 2) and scales.shape[0] == n, "scales",
                lambda: f"expected N={n} per-channel scales of shape (N, 1) or (N,), got {tuple(scales.shape)}")
    return n, k


def check_linear(x, w, scales, bias):
    """Device-independent checks of a linear call (these also run in the fake impl); returns (N, K)."""
    n, k = check_weight(w, scales)
    check_activation(x, scales, bias, n, k)
    return n, k


def check_activation(x, scales, bias, n: int, k: int) -> None:
    """The call's own part of check_linear: x (..., K) and bias (N,) against a checked weight."""
    v.tensor(x, "x", dtypes=ACT_DTYPES)
    v.condition(x.dim() >= 1 and x.shape[-1] == k, "x",
                lambda: f"expected shape (..., K={k}) to match w, got {tuple(x.shape)}")
    if scales.dtype != x.dtype:
        raise TypeError(f"scales: dtype {scales.dtype} must match the activation dtype {x.dtype}")
    if bias is not None:
        v.tensor(bias, "bias", dtypes=(x.dtype,), shape=(n,))


checked_weights = c.CheckedWeights()  # int8_linear's


def check_gemm(a, w, scales):
    """Device-independent checks of a GEMM call; returns (N, K)."""
    n, k = check_weight(w, scales)
    v.tensor(a, "a", dtypes=ACT_DTYPES, ndim=2)
    v.condition(a.shape[1] == k, "a", f"expected K={k} columns to match w, got shape {tuple(a.shape)}")
    if scales.dtype != a.dtype:
        raise TypeError(f"scales: dtype {scales.dtype} must match the activation dtype {a.dtype}")
    return n, k


def device_checks(w, scales, a=None) -> None:
    if a is not None:
        v.on_cuda(a, "a")
    v.on_cuda(w, "w")
    v.on_cuda(scales, "scales", w, "w")
    if a is not None:
        v.on_cuda(w, "w", a, "a")


# ------------------------------------------------------------------ launches (arguments checked)


def run_dequantize(w, scales, n: int, k: int) -> torch.Tensor:
    out = torch.empty((n, k), dtype=scales.dtype, device=w.device)
    abi.int8_dequantize(w=w.data_ptr(), scales=scales.data_ptr(), out=out.data_ptr(), n=n, k=k,
                        dtype=c.DTYPE_CODES[scales.dtype], device=w.device.index, stream=c.stream(w))
    return out


def run_gemv(a, w, scales, n: int, k: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The fused small-M kernels; bias (N dense values of a's dtype, or None) goes to their epilogue."""
    m, dev = a.shape[0], a.device.index
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)

    def launch(ws, nbytes):
        abi.int8_gemv(a=a.data_ptr(), w=w.data_ptr(), scales=scales.data_ptr(), bias=c.data_ptr(bias),
                      out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k,
                      dtype=c.DTYPE_CODES[a.dtype], device=dev, stream=c.stream_on(dev))

    c.launch_sized(FAMILY.workspace_bytes, (m, n, k, dev), a, launch)
    return out


def run_tc(a, w, scales, bias, n: int, k: int) -> torch.Tensor:
    """The tensor-core kernel; a must be dense (row stride K) and 16-byte aligned (callers ensure it)."""
    m, dev = a.shape[0], a.device.index
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)

    def launch(ws, nbytes):
        abi.int8_mm(a=a.data_ptr(), w=w.data_ptr(), scales=scales.data_ptr(), bias=c.data_ptr(bias),
                    out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k,
                    dtype=c.DTYPE_CODES[a.dtype], device=dev, stream=c.stream_on(dev))

    c.launch_sized(FAMILY.tc.workspace_bytes, (m, n, k, dev), a, launch)
    return out


def run_gemm(a, w, scales, bias, n: int, k: int) -> torch.Tensor:
    """The larger-M GEMM kernel; a must be dense and 16-byte aligned, bias None or 16-byte aligned (callers
    ensure both); scales are copied when their start is not 16-byte aligned (the epilogue reads them in
    16-byte vectors)."""
    m, dev = a.shape[0], a.device.index
    if scales.data_ptr() % 16:
        scales = scales.clone()
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)
    code = c.DTYPE_CODES[a.dtype]

    def launch(ws, nbytes):
        abi.int8_gemm(a=a.data_ptr(), w=w.data_ptr(), scales=scales.data_ptr(), bias=c.data_ptr(bias),
                      out=out.data_ptr(), workspace=ws, workspace_bytes=nbytes, m=m, n=n, k=k, dtype=code,
                      device=dev, stream=c.stream_on(dev))

    c.launch_sized(FAMILY.gemm.workspace_bytes, (m, n, k, code, dev), a, launch)
    return out


def gemm_fits(n: int, k: int) -> bool:
    """Whether the GEMM kernel takes an (N, K) weight."""
    return n % GEMM_N_MULTIPLE == 0 and k % GEMM_K_MULTIPLE == 0


def tc_fits(n: int, k: int) -> bool:
    """Whether the tensor-core kernel takes an (N, K) weight (the ops' checks already made it dense and
    16-byte aligned); other shapes take the GEMV or dequantize path."""
    return n % TC_N_MULTIPLE == 0 and k % TC_K_MULTIPLE == 0


def matmul(a, w, scales, n: int, k: int, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """a (M >= 1, K) times the weight (+ bias), on the path the dispatch rule picks."""
    forced = c.forced_path()
    if forced == "tc" and not tc_fits(n, k):
        raise ValueError(f"force_path('tc'): the int8 tensor-core kernel needs N % {TC_N_MULTIPLE} == 0 and "
                         f"K % {TC_K_MULTIPLE} == 0; got N={n}, K={k}")
    if forced == "gemv" and k % GEMV_K_MULTIPLE:
        raise ValueError(f"force_path('gemv'): K={k} is no multiple of {GEMV_K_MULTIPLE}, which the int8 "
                         "fused kernel needs; use the dequant path")
    if forced == "gemm" and not gemm_fits(n, k):
        raise ValueError(f"force_path('gemm'): the int8 GEMM kernel needs N % {GEMM_N_MULTIPLE} == 0 and "
                         f"K % {GEMM_K_MULTIPLE} == 0; got N={n}, K={k}")
    gemv = None if k % GEMV_K_MULTIPLE else (lambda b: run_gemv(a, w, scales, n, k, b))
    tc = (n, k, lambda x, b: run_tc(x, w, scales, b, n, k)) if tc_fits(n, k) else None
    # Built only for rows it may take: the small-M calls skip its rule (host time per layer call counts).
    gemm = ((n, k, lambda x, b: run_gemm(x, w, scales, b, n, k))
            if (a.shape[0] >= GEMM_FROM_M or forced == "gemm") and gemm_fits(n, k) else None)
    return c.gemv_or_dequant(FAMILY, a, gemv, lambda: run_dequantize(w, scales, n, k), bias, tc=tc, gemv_bias_n=n,
                             gemm=gemm)


# ------------------------------------------------------------------------------------------- ops


def direct_dequantize(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Dense (N, K) weight in the scales' dtype: w * scales, rounded once."""
    n, k = check_weight(w, scales)
    device_checks(w, scales)
    return run_dequantize(w, scales, n, k)


def direct_gemm(a: torch.Tensor, w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """a (M, K) fp16/bf16 times the int8 weight: (M, N) in a's dtype, fp32 accumulation, scale applied in fp32."""
    n, k = check_gemm(a, w, scales)
    device_checks(w, scales, a)
    if a.shape[0] == 0:
        return a.new_empty((0, n))
    return matmul(a, w, scales, n, k)


def direct_linear(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor,
                  bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear(x, W, bias) for quanto's int8 weight: x (..., K) fp16/bf16 of any strides and alignment (copied
    when the kernels cannot read it as is), bias (N,) of x's dtype or None; (..., N) in x's dtype.

    What quanto's qint8 linear calls on CUDA (quanto/shim.py), also under torch.compile, where the
    activation's strides and data pointer are not known while tracing.
    """
    known = checked_weights.lookup(w, scales)
    n, k = check_weight(w, scales) if known is None else known
    check_activation(x, scales, bias, n, k)
    if x.device.type != "cuda":
        raise ValueError(f"x: expected a CUDA tensor, got one on {x.device}")
    if known is None:
        device_checks(w, scales)
        checked_weights.add(w, scales, (n, k))
    if w.device != x.device:
        raise ValueError(f"w: is on {w.device} but x is on {x.device}; move them to one device")
    if bias is not None and bias.device != x.device:
        raise ValueError(f"bias: is on {bias.device} but x is on {x.device}; move them to one device")
    shape = tuple(x.shape[:-1]) + (n,)
    a = x.reshape(-1, k)
    if a.shape[0] == 0:
        return x.new_empty(shape)
    return matmul(c.dense_aligned(a), w, scales, n, k, bias).view(shape)


dequantize_op = define("int8_dequantize", direct_dequantize)
gemm_op = define("int8_gemm", direct_gemm)
linear_op = define("int8_linear", direct_linear)


@dequantize_op.register_fake
def _dequantize_fake(w, scales):
    n, k = check_weight(w, scales)
    return w.new_empty((n, k), dtype=scales.dtype)


@gemm_op.register_fake
def _gemm_fake(a, w, scales):
    n, _ = check_gemm(a, w, scales)
    return a.new_empty((a.shape[0], n))


@linear_op.register_fake
def _linear_fake(x, w, scales, bias=None):
    n, _ = check_linear(x, w, scales, bias)
    return x.new_empty(tuple(x.shape[:-1]) + (n,))
