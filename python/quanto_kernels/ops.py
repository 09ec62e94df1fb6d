"""The kernels as validated torch ops (``torch.ops.quanto_kernels.*``), each with a fake impl.

Every op checks its arguments in Python (clear TypeError/ValueError naming the argument), allocates
its outputs with torch, and launches on the current stream of the tensors' device. GEMMs pick the
kernel by M: small M runs a fused kernel that reads the packed weight once; larger M dequantizes
the weight into a dense temporary and lets cuBLAS (through torch) do the product.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import _validate as v
from ._loader import DTYPE_BFLOAT16, DTYPE_FLOAT16, get_library

__all__ = [
    "unpack",
    "marlin_repack",
    "fp8_marlin_dequantize",
    "fp8_marlin_gemm",
    "awq_int4_dequantize",
    "awq_int4_gemm",
    "marlin_int4_dequantize",
    "marlin_int4_gemm",
    "SCALE_PERM_NONE",
    "SCALE_PERM_BLOCK32",
    "SCALE_PERM_BLOCK64",
    "marlin_int4_scale_perm",
]

SCALE_PERM_NONE, SCALE_PERM_BLOCK32, SCALE_PERM_BLOCK64 = 0, 1, 2
_DTYPE_CODES = {torch.float16: DTYPE_FLOAT16, torch.bfloat16: DTYPE_BFLOAT16}
_ACT_DTYPES = (torch.float16, torch.bfloat16)


try:  # the raw handle without building a Stream object (a few microseconds per call at M = 1)
    _raw_stream = torch._C._cuda_getCurrentRawStream
except AttributeError:  # pragma: no cover - older/newer torch without the private helper
    _raw_stream = None


def _stream(t: torch.Tensor) -> int:
    if _raw_stream is not None:
        return _raw_stream(t.device.index)
    return torch.cuda.current_stream(t.device).cuda_stream


@functools.lru_cache(maxsize=None)
def _max_gemv_m(fmt: str) -> int:
    """Largest M the fused kernel of `fmt` ("fp8" or "int4") takes; larger M: dequantize + cuBLAS."""
    lib = get_library().lib
    return int(lib.qk_fp8_marlin_max_gemv_m() if fmt == "fp8" else lib.qk_max_gemv_m())


@functools.lru_cache(maxsize=4096)
def _workspace_bytes(fn: str, *args) -> int:
    import ctypes

    out = ctypes.c_int64(0)
    get_library().call(fn, *args, ctypes.byref(out))
    return out.value


def _workspace(t: torch.Tensor, nbytes: int):
    """fp32 split-K partials (None when the plan needs none); the caching allocator keeps it cheap and stream-safe."""
    if nbytes <= 0:
        return None
    return torch.empty(nbytes // 4, dtype=torch.float32, device=t.device)


# ---------------------------------------------------------------------------------------- unpack


def _check_unpack(t: torch.Tensor, bits: int) -> None:
    v.tensor(t, "t", dtypes=(torch.uint8,))
    v.integer(bits, "bits", choices=(2, 4))
    v.condition(t.dim() >= 1, "t", "must have at least one dimension")
    v.condition(t.numel() < v.MAX_ELEMENTS, "t", f"{t.numel()} elements is too many (limit 2^40)")


def _unpack_shape(t: torch.Tensor, bits: int):
    return (t.shape[0] * (8 // bits),) + tuple(t.shape[1:])


def _unpack_eager(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of quanto's ``pack_weights``: bit-field i of every byte becomes row-chunk i (uint8)."""
    _check_unpack(t, bits)
    v.on_cuda(t, "t")
    out = torch.empty(_unpack_shape(t, bits), dtype=torch.uint8, device=t.device)
    if t.numel() == 0:
        return out
    get_library().call("qk_unpack", t.data_ptr(), out.data_ptr(), t.numel(), bits, t.device.index, _stream(t))
    return out


unpack = torch.library.custom_op("quanto_kernels::unpack", _unpack_eager, mutates_args=())


@unpack.register_fake
def _unpack_fake(t, bits):
    _check_unpack(t, bits)
    return t.new_empty(_unpack_shape(t, bits), dtype=torch.uint8)


# ---------------------------------------------------------------------------------- marlin repack


def _check_repack(b_q_weight, perm, size_k, size_n, num_bits):
    v.integer(num_bits, "num_bits", choices=(4, 8))
    v.integer(size_k, "size_k", minimum=16)
    v.integer(size_n, "size_n", minimum=64)
    v.condition(size_k % 16 == 0, "size_k", f"must be a multiple of 16, got {size_k}")
    v.condition(size_n % 64 == 0, "size_n", f"must be a multiple of 64, got {size_n}")
    v.condition(size_k * size_n < v.MAX_ELEMENTS, "size_k",
                f"size_k * size_n = {size_k} * {size_n} elements is too many (limit 2^40)")
    v.tensor(b_q_weight, "b_q_weight", dtypes=(torch.int32,), shape=(size_k * num_bits // 32, size_n))
    v.tensor(perm, "perm", dtypes=(torch.int32,), ndim=1)
    v.condition(perm.numel() in (0, size_k), "perm", f"must be empty or have size_k={size_k} entries, got {perm.numel()}")
    return (size_k // 16, size_n * num_bits // 2)


def _marlin_repack_eager(b_q_weight: torch.Tensor, perm: torch.Tensor, size_k: int, size_n: int, num_bits: int) -> torch.Tensor:
    """Marlin tile layout of a (K*bits/32, N) int32 weight: (K/16, 4N) for fp8, (K/16, 2N) for int4."""
    shape = _check_repack(b_q_weight, perm, size_k, size_n, num_bits)
    v.on_cuda(b_q_weight, "b_q_weight")
    perm_ptr = None
    if perm.numel():
        v.on_cuda(perm, "perm", b_q_weight, "b_q_weight")
        lo, hi = int(perm.min()), int(perm.max())
        v.condition(0 <= lo and hi < size_k, "perm", f"entries must lie in [0, {size_k}), got [{lo}, {hi}]")
        perm_ptr = perm.data_ptr()
    out = torch.empty(shape, dtype=torch.int32, device=b_q_weight.device)
    get_library().call(
        "qk_marlin_repack", b_q_weight.data_ptr(), perm_ptr, out.data_ptr(), size_k, size_n, num_bits,
        b_q_weight.device.index, _stream(b_q_weight),
    )
    return out


marlin_repack = torch.library.custom_op("quanto_kernels::marlin_repack", _marlin_repack_eager, mutates_args=())


@marlin_repack.register_fake
def _marlin_repack_fake(b_q_weight, perm, size_k, size_n, num_bits):
    return b_q_weight.new_empty(_check_repack(b_q_weight, perm, size_k, size_n, num_bits))


# -------------------------------------------------------------------------------------- FP8 Marlin


def _check_fp8_weight(b_q_weight, b_scales):
    v.tensor(b_q_weight, "b_q_weight", dtypes=(torch.int32,), ndim=2)
    v.condition(b_q_weight.shape[1] % 256 == 0 and b_q_weight.shape[0] > 0 and b_q_weight.shape[1] > 0, "b_q_weight",
                f"expected the (K/16, 4N) FP8 Marlin layout with N % 64 == 0, got shape {tuple(b_q_weight.shape)}")
    n, k = b_q_weight.shape[1] // 4, b_q_weight.shape[0] * 16
    v.condition(n * k < v.MAX_ELEMENTS, "b_q_weight", f"N * K = {n} * {k} elements is too many (limit 2^40)")
    v.tensor(b_scales, "b_scales", dtypes=_ACT_DTYPES)
    v.condition(b_scales.dim() >= 1 and b_scales.numel() == n and b_scales.shape[-1] == n, "b_scales",
                f"expected N={n} per-channel scales of shape (1, N) or (N,), got {tuple(b_scales.shape)}")
    return n, k


def _fp8_device_checks(b_q_weight, b_scales):
    v.on_cuda(b_q_weight, "b_q_weight")
    v.on_cuda(b_scales, "b_scales", b_q_weight, "b_q_weight")


def _fp8_dequant(b_q_weight, b_scales, n, k):
    out = torch.empty((n, k), dtype=b_scales.dtype, device=b_q_weight.device)
    get_library().call(
        "qk_fp8_marlin_dequantize", b_q_weight.data_ptr(), b_scales.data_ptr(), out.data_ptr(), n, k,
        _DTYPE_CODES[b_scales.dtype], b_q_weight.device.index, _stream(b_q_weight),
    )
    return out


def _fp8_marlin_dequantize_eager(b_q_weight: torch.Tensor, b_scales: torch.Tensor) -> torch.Tensor:
    """Dense (N, K) weight, in the scales' dtype, from the FP8 Marlin layout and permuted scales."""
    n, k = _check_fp8_weight(b_q_weight, b_scales)
    _fp8_device_checks(b_q_weight, b_scales)
    return _fp8_dequant(b_q_weight, b_scales, n, k)


fp8_marlin_dequantize = torch.library.custom_op("quanto_kernels::fp8_marlin_dequantize", _fp8_marlin_dequantize_eager, mutates_args=())


@fp8_marlin_dequantize.register_fake
def _fp8_marlin_dequantize_fake(b_q_weight, b_scales):
    n, k = _check_fp8_weight(b_q_weight, b_scales)
    return b_q_weight.new_empty((n, k), dtype=b_scales.dtype)


def _check_fp8_gemm(a, b_q_weight, b_scales):
    n, k = _check_fp8_weight(b_q_weight, b_scales)
    v.tensor(a, "a", dtypes=_ACT_DTYPES, ndim=2)
    v.condition(a.shape[1] == k, "a", f"expected K={k} columns to match b_q_weight, got shape {tuple(a.shape)}")
    if b_scales.dtype != a.dtype:
        raise TypeError(f"b_scales: dtype {b_scales.dtype} must match the activation dtype {a.dtype}")
    return n, k


def _fp8_marlin_gemm_eager(a: torch.Tensor, b_q_weight: torch.Tensor, b_scales: torch.Tensor) -> torch.Tensor:
    """a (M, K) fp16/bf16 times the FP8 Marlin weight: (M, N) in a's dtype, scale applied in fp32."""
    n, k = _check_fp8_gemm(a, b_q_weight, b_scales)
    v.on_cuda(a, "a")
    _fp8_device_checks(b_q_weight, b_scales)
    v.on_cuda(b_q_weight, "b_q_weight", a, "a")
    m = a.shape[0]
    if m == 0:
        return a.new_empty((0, n))
    if m > _max_gemv_m("fp8"):
        return F.linear(a, _fp8_dequant(b_q_weight, b_scales, n, k))
    dev = a.device.index
    ws_bytes = _workspace_bytes("qk_fp8_marlin_gemv_workspace_bytes", m, n, k, dev)
    ws = _workspace(a, ws_bytes)
    out = torch.empty((m, n), dtype=a.dtype, device=a.device)
    get_library().call(
        "qk_fp8_marlin_gemv", a.data_ptr(), b_q_weight.data_ptr(), b_scales.data_ptr(), out.data_ptr(),
        ws.data_ptr() if ws is not None else None, ws_bytes, m, n, k, _DTYPE_CODES[a.dtype], dev, _stream(a),
    )
    return out


fp8_marlin_gemm = torch.library.custom_op("quanto_kernels::fp8_marlin_gemm", _fp8_marlin_gemm_eager, mutates_args=())


@fp8_marlin_gemm.register_fake
def _fp8_marlin_gemm_fake(a, b_q_weight, b_scales):
    n, _ = _check_fp8_gemm(a, b_q_weight, b_scales)
    return a.new_empty((a.shape[0], n))


# ------------------------------------------------------------------------------------ int4 helpers


def _check_group_tensors(scales, zeros, n, k, group_multiple):
    v.tensor(scales, "scales", dtypes=(torch.float16,), ndim=2)
    groups = scales.shape[0]
    v.condition(scales.shape[1] == n, "scales", f"expected shape (K/group_size, N={n}), got {tuple(scales.shape)}")
    v.condition(groups > 0 and k % groups == 0, "scales", f"{groups} groups do not divide K={k}")
    group_size = k // groups
    v.condition(group_size % group_multiple == 0, "scales",
                f"group size K/{groups}={group_size} must be a multiple of {group_multiple}")
    v.tensor(zeros, "zeros", dtypes=(torch.float16,), shape=tuple(scales.shape))
    return group_size


def _check_int4_size(n, k):
    v.condition(k <= v.INT4_MAX_K, "packed", f"K={k} is too large: the int4 kernels take K <= 2^30")
    v.condition(n * k < v.MAX_ELEMENTS, "packed", f"N * K = {n} * {k} elements is too many (limit 2^40)")


def _int4_device_checks(tensors):
    first_name, first = tensors[0]
    v.on_cuda(first, first_name)
    for name, t in tensors[1:]:
        v.on_cuda(t, name, first, first_name)


def _check_activation(a, k):
    v.tensor(a, "input", dtypes=(torch.float16,))
    v.condition(a.dim() >= 1 and a.shape[-1] == k, "input",
                f"expected last dimension K={k} to match the weight, got shape {tuple(a.shape)}")


def _int4_gemm(a, n, k, dequant, gemv_entry, ws_entry, gemv_args, ws_args):
    """Shared small-M / large-M dispatch of the two int4 formats (a is (..., K) fp16)."""
    lead = tuple(a.shape[:-1])
    m = a.numel() // k if k else 0
    if m == 0:
        return a.new_empty(lead + (n,))
    if m > _max_gemv_m("int4"):
        return F.linear(a, dequant())
    a2 = a.reshape(m, k)
    dev = a.device.index
    ws_bytes = _workspace_bytes(ws_entry, m, n, k, *ws_args, dev)
    ws = _workspace(a, ws_bytes)
    out = torch.empty((m, n), dtype=torch.float16, device=a.device)
    w, scales, zeros, *rest = gemv_args
    get_library().call(
        gemv_entry, a2.data_ptr(), w.data_ptr(), scales.data_ptr(), zeros.data_ptr(), out.data_ptr(),
        ws.data_ptr() if ws is not None else None, ws_bytes, m, n, k, *rest, dev, _stream(a),
    )
    return out.reshape(lead + (n,))


# --------------------------------------------------------------------------------------- AWQ int4


def _check_awq(w, scales, zeros):
    v.tensor(w, "packed", dtypes=(torch.int16,), ndim=2)
    n, k = w.shape[0] * 4, w.shape[1]
    v.condition(n > 0 and k > 0 and k % 64 == 0, "packed", f"expected the (N/4, K) AWQ layout with K % 64 == 0, got {tuple(w.shape)}")
    _check_int4_size(n, k)
    group_size = _check_group_tensors(scales, zeros, n, k, 32)
    return n, k, group_size


def _awq_dequant(w, scales, zeros, n, k, group_size):
    out = torch.empty((n, k), dtype=torch.float16, device=w.device)
    get_library().call(
        "qk_awq_int4_dequantize", w.data_ptr(), scales.data_ptr(), zeros.data_ptr(), out.data_ptr(), n, k,
        group_size, w.device.index, _stream(w),
    )
    return out


def _awq_int4_dequantize_eager(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """Dense (N, K) fp16 weight S*q + Z from the AWQ-v2 layout."""
    n, k, g = _check_awq(packed, scales, zeros)
    _int4_device_checks([("packed", packed), ("scales", scales), ("zeros", zeros)])
    return _awq_dequant(packed, scales, zeros, n, k, g)


awq_int4_dequantize = torch.library.custom_op("quanto_kernels::awq_int4_dequantize", _awq_int4_dequantize_eager, mutates_args=())


@awq_int4_dequantize.register_fake
def _awq_int4_dequantize_fake(packed, scales, zeros):
    n, k, _ = _check_awq(packed, scales, zeros)
    return packed.new_empty((n, k), dtype=torch.float16)


def _awq_int4_gemm_eager(input: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """input (..., K) fp16 times the AWQ-v2 int4 weight: (..., N) fp16."""
    n, k, g = _check_awq(packed, scales, zeros)
    _check_activation(input, k)
    _int4_device_checks([("input", input), ("packed", packed), ("scales", scales), ("zeros", zeros)])
    return _int4_gemm(
        input, n, k, lambda: _awq_dequant(packed, scales, zeros, n, k, g),
        "qk_awq_int4_gemv", "qk_awq_int4_gemv_workspace_bytes", (packed, scales, zeros, g), (g,),
    )


awq_int4_gemm = torch.library.custom_op("quanto_kernels::awq_int4_gemm", _awq_int4_gemm_eager, mutates_args=())


@awq_int4_gemm.register_fake
def _awq_int4_gemm_fake(input, packed, scales, zeros):
    n, k, _ = _check_awq(packed, scales, zeros)
    _check_activation(input, k)
    return input.new_empty(tuple(input.shape[:-1]) + (n,))


# ------------------------------------------------------------------------------------ Marlin int4


def marlin_int4_scale_perm(groups: int) -> int:
    """The permutation quanto applies to Marlin int4 scales/zeros: 32-pattern for one group, else 8x8."""
    return SCALE_PERM_BLOCK32 if groups == 1 else SCALE_PERM_BLOCK64


def _check_marlin_i4(w, scales, zeros, scale_perm):
    v.tensor(w, "packed", dtypes=(torch.int32,), ndim=2)
    v.condition(w.shape[0] > 0 and w.shape[1] % 128 == 0 and w.shape[1] > 0, "packed",
                f"expected the (K/16, 2N) Marlin int4 layout with N % 64 == 0, got {tuple(w.shape)}")
    n, k = w.shape[1] // 2, w.shape[0] * 16
    _check_int4_size(n, k)
    group_size = _check_group_tensors(scales, zeros, n, k, 16)
    v.integer(scale_perm, "scale_perm", choices=(SCALE_PERM_NONE, SCALE_PERM_BLOCK32, SCALE_PERM_BLOCK64))
    return n, k, group_size


def _marlin_i4_dequant(w, scales, zeros, n, k, group_size, scale_perm):
    out = torch.empty((n, k), dtype=torch.float16, device=w.device)
    get_library().call(
        "qk_marlin_int4_dequantize", w.data_ptr(), scales.data_ptr(), zeros.data_ptr(), out.data_ptr(), n, k,
        group_size, scale_perm, w.device.index, _stream(w),
    )
    return out


def _marlin_int4_dequantize_eager(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, scale_perm: int) -> torch.Tensor:
    """Dense (N, K) fp16 weight S*q + Z from the Marlin int4 layout (scales/zeros stored with scale_perm)."""
    n, k, g = _check_marlin_i4(packed, scales, zeros, scale_perm)
    _int4_device_checks([("packed", packed), ("scales", scales), ("zeros", zeros)])
    return _marlin_i4_dequant(packed, scales, zeros, n, k, g, scale_perm)


marlin_int4_dequantize = torch.library.custom_op("quanto_kernels::marlin_int4_dequantize", _marlin_int4_dequantize_eager, mutates_args=())


@marlin_int4_dequantize.register_fake
def _marlin_int4_dequantize_fake(packed, scales, zeros, scale_perm):
    n, k, _ = _check_marlin_i4(packed, scales, zeros, scale_perm)
    return packed.new_empty((n, k), dtype=torch.float16)


def _marlin_int4_gemm_eager(
    input: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, scale_perm: int
) -> torch.Tensor:
    """input (..., K) fp16 times the Marlin int4 weight with zero points: (..., N) fp16."""
    n, k, g = _check_marlin_i4(packed, scales, zeros, scale_perm)
    _check_activation(input, k)
    _int4_device_checks([("input", input), ("packed", packed), ("scales", scales), ("zeros", zeros)])
    return _int4_gemm(
        input, n, k, lambda: _marlin_i4_dequant(packed, scales, zeros, n, k, g, scale_perm),
        "qk_marlin_int4_gemv", "qk_marlin_int4_gemv_workspace_bytes", (packed, scales, zeros, g, scale_perm), (g,),
    )


marlin_int4_gemm = torch.library.custom_op("quanto_kernels::marlin_int4_gemm", _marlin_int4_gemm_eager, mutates_args=())


@marlin_int4_gemm.register_fake
def _marlin_int4_gemm_fake(input, packed, scales, zeros, scale_perm):
    n, k, _ = _check_marlin_i4(packed, scales, zeros, scale_perm)
    _check_activation(input, k)
    return input.new_empty(tuple(input.shape[:-1]) + (n,))


class _Eager:
    """The same ops without the torch.library dispatch (about 10 us less per call); same validation.

    Used where the call already comes through a dispatcher op (quanto's), e.g. the quanto bindings.
    """

    unpack = staticmethod(_unpack_eager)
    marlin_repack = staticmethod(_marlin_repack_eager)
    fp8_marlin_dequantize = staticmethod(_fp8_marlin_dequantize_eager)
    fp8_marlin_gemm = staticmethod(_fp8_marlin_gemm_eager)
    awq_int4_dequantize = staticmethod(_awq_int4_dequantize_eager)
    awq_int4_gemm = staticmethod(_awq_int4_gemm_eager)
    marlin_int4_dequantize = staticmethod(_marlin_int4_dequantize_eager)
    marlin_int4_gemm = staticmethod(_marlin_int4_gemm_eager)


eager = _Eager()
