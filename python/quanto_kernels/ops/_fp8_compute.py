"""FP8 tensor-core compute for qfloat8 weights (W8A8): ``quanto_kernels::fp8_compute_linear``.

    y = x @ W^T (+ bias),  W in the FP8 Marlin layout (docs/layouts.md), x quantized per row to e4m3

The weight is the one quanto keeps for qfloat8 layers on CUDA (``MarlinF8QBytesTensor``): ``w_packed``
(K/16, 4N) int32 and ``scales`` (1, N) or (N,), Block32-permuted, in the activation dtype. What is
rounded where: docs/numerics.md, "FP8 compute"; the op's contract: docs/ops.md, "fp8_compute_linear".

Two paths, chosen by M (the product of x's leading dimensions):

* ``M <= qk_fp8_marlin_max_gemv_m()``: the weight-only fused GEMV of ``fp8_marlin_gemm``, then the bias.
  At small M the product is bound by the bytes of weight read, which both paths read once; the GEMV
  reads no quantized copy of x and rounds nothing in x, so it is both cheaper and more accurate there.
* larger M: ``qk_fp8_act_quant`` writes x as e4m3 codes (M, K) plus one fp32 scale per row, then
  ``qk_fp8_compute_gemm`` multiplies them with the FP8 weight on FP8 tensor cores and applies both
  scales and the bias in its fp32 epilogue.

Both paths need a GPU with FP8 tensor cores (compute capability 8.9+): the op refuses other devices
whatever M is, so that a call either always or never works on a device. Everything the op allocates
comes from torch's caching allocator and nothing synchronises with the host, so it can be captured in
a CUDA graph.

``force_path`` (test-only) makes every call take one path: "gemv" or "fp8".
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch

from .._native import abi
from ..fp8_compute import device_has_fp8_cores
from . import _common as c
from . import _fp8_marlin
from . import _validate as v
from ._registration import define

ACT_DTYPES = (torch.float16, torch.bfloat16)
# Shape rules of the FP8 product (csrc/fp8_compute/fp8_compute.h): one e4m3 tensor-core k-step, one
# column tile of the Marlin layout. The Marlin layout alone only guarantees K % 16.
K_MULTIPLE = 32
N_MULTIPLE = 64
PATHS = ("gemv", "fp8")

_forced: Optional[str] = None


@contextlib.contextmanager
def force_path(path: Optional[str]) -> Iterator[None]:
    """Test-only: every fp8_compute_linear call takes `path` ("gemv" or "fp8"; None: the rule by M).

    Process-wide, like ``ops.force_path``. Under "gemv" an M above the fused kernel's limit raises
    ValueError naming the limit.
    """
    global _forced
    if path is not None and path not in PATHS:
        raise ValueError(f"path: must be one of {PATHS} or None, got {path!r}")
    previous, _forced = _forced, path
    try:
        yield
    finally:
        _forced = previous


def use_gemv(m: int) -> bool:
    """Whether M rows take the weight-only fused GEMV (see the module docstring)."""
    limit = _fp8_marlin.FAMILY.max_gemv_m
    if _forced is None:
        return m <= limit
    if _forced == "gemv" and m > limit:
        raise ValueError(f"force_path('gemv'): M={m} rows exceed the fused kernel's limit of {limit}")
    return _forced == "gemv"


# ------------------------------------------------------------------------------------ validation


def check_weight(w_packed, scales) -> Tuple[int, int]:
    """Device-independent checks of the weight; returns (N, K)."""
    v.tensor(w_packed, "w_packed", dtypes=(torch.int32,), ndim=2)
    rows, cols = w_packed.shape
    v.condition(rows > 0 and cols > 0 and cols % 4 == 0, "w_packed",
                f"expected the (K/16, 4N) FP8 Marlin layout, got shape {tuple(w_packed.shape)}")
    n, k = cols // 4, rows * 16
    v.condition(k % K_MULTIPLE == 0, "w_packed",
                f"K={k} (16 x {rows} rows) must be a multiple of {K_MULTIPLE} for the FP8 tensor-core product")
    v.condition(n % N_MULTIPLE == 0, "w_packed",
                f"N={n} (width {cols} / 4) must be a multiple of {N_MULTIPLE} (one column tile of the layout)")
    v.condition(n * k < v.MAX_ELEMENTS, "w_packed", f"N * K = {n} * {k} elements is too many (limit 2^40)")
    v.tensor(scales, "scales", dtypes=ACT_DTYPES)
    v.condition(scales.dim() in (1, 2) and scales.numel() == n and scales.shape[-1] == n, "scales",
                f"expected N={n} per-channel scales of shape (1, N) or (N,), got {tuple(scales.shape)}")
    return n, k


def check_args(x, w_packed, scales, bias) -> Tuple[int, int]:
    """Device-independent checks of a call (these also run in the fake impl); returns (N, K)."""
    n, k = check_weight(w_packed, scales)
    v.tensor(x, "x", dtypes=ACT_DTYPES)
    v.condition(x.dim() >= 1 and x.shape[-1] == k, "x",
                f"expected shape (..., K={k}) to match w_packed, got {tuple(x.shape)}")
    if scales.dtype != x.dtype:
        raise TypeError(f"scales: dtype {scales.dtype} must match the activation dtype {x.dtype}")
    if bias is not None:
        v.tensor(bias, "bias", dtypes=(x.dtype,), shape=(n,))
    return n, k


def _check_devices(x, w_packed, scales, bias) -> None:
    """The weight as stored must be usable as is; x and bias are copied when they are not (see _common.dense_aligned)."""
    if x.device.type != "cuda":
        raise ValueError(f"x: expected a CUDA tensor, got one on {x.device}")
    v.on_cuda(w_packed, "w_packed", x, "x")
    v.on_cuda(scales, "scales", x, "x")
    if bias is not None and bias.device != x.device:
        raise ValueError(f"bias: is on {bias.device} but x is on {x.device}; move them to one device")
    if not device_has_fp8_cores(x.device.index):
        major, minor = torch.cuda.get_device_capability(x.device)
        raise NotImplementedError(
            f"x: {x.device} has compute capability {major}.{minor}; fp8_compute_linear needs FP8 tensor cores "
            "(compute capability 8.9 or newer). Use fp8_marlin_gemm (weight-only) on this GPU."
        )


# ------------------------------------------------------------------ launches (arguments checked)


def run_fp8(x2d: torch.Tensor, w_packed, scales, bias, n: int, k: int) -> torch.Tensor:
    """Per-row e4m3 quantization of x2d (M, K), then the FP8 tensor-core GEMM with the bias in its epilogue."""
    m, dev, dt = x2d.shape[0], x2d.device.index, c.DTYPE_CODES[x2d.dtype]
    s = c.stream(x2d)
    xq = torch.empty((m, k), dtype=torch.uint8, device=x2d.device)
    xs = torch.empty((m,), dtype=torch.float32, device=x2d.device)
    out = torch.empty((m, n), dtype=x2d.dtype, device=x2d.device)
    abi.fp8_act_quant(x=x2d.data_ptr(), ldx=k, xq=xq.data_ptr(), xs=xs.data_ptr(), m=m, k=k, dtype=dt, device=dev,
                      stream=s)
    abi.fp8_compute_gemm(xq=xq.data_ptr(), xs=xs.data_ptr(), w=w_packed.data_ptr(), scales=scales.data_ptr(),
                         bias=c.data_ptr(bias), out=out.data_ptr(), m=m, n=n, k=k, dtype=dt, device=dev, stream=s)
    return out


def linear_2d(x2d: torch.Tensor, w_packed, scales, bias, n: int, k: int) -> torch.Tensor:
    """x2d (M >= 1, K), dense and aligned, times the weight plus bias, on the path M picks."""
    if use_gemv(x2d.shape[0]):
        return c.with_bias(x2d, bias, n, lambda b: _fp8_marlin.run_gemv(x2d, w_packed, scales, n, k, b))
    return run_fp8(x2d, w_packed, scales, bias, n, k)


# ------------------------------------------------------------------------------------------- op


def direct(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (..., K) fp16/bf16 times the qfloat8 Marlin weight, plus bias: (..., N) in x's dtype."""
    n, k = check_args(x, w_packed, scales, bias)
    _check_devices(x, w_packed, scales, bias)
    lead = tuple(x.shape[:-1])
    x2d = x.reshape(-1, k)
    if x2d.shape[0] == 0:
        return x.new_empty(lead + (n,))
    if bias is not None:
        bias = c.dense_aligned(bias)
    return linear_2d(c.dense_aligned(x2d), w_packed, scales, bias, n, k).view(lead + (n,))


op = define("fp8_compute_linear", direct)


@op.register_fake
def _fake(x, w_packed, scales, bias=None):
    n, _ = check_args(x, w_packed, scales, bias)
    return x.new_empty(tuple(x.shape[:-1]) + (n,))
