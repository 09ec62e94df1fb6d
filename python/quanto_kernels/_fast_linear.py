"""A short inference path from quanto's frozen QLinear to our kernels.

quanto reaches the kernel through F.linear -> the weight's __torch_function__ -> an autograd
Function -> its dispatcher op -> its binding -> our validated op: about 60 us of Python per call,
while the fused kernel at M = 1 takes 10-30 us. When nothing needs that machinery (no autograd,
no tracing, no torch-function mode, plain tensors on the weight's device), QLinear.forward calls
the kernel directly: the weight's checks run once and are cached on the weight, the activation's
are a handful of comparisons. Anything unusual returns None and takes quanto's full, validated
path, which also raises the clear errors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops
from ._loader import get_library

_CACHE_ATTR = "_quanto_kernels_cache"
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # a module's bias is a Parameter; subclasses go the full way


class _Weight:
    """What the kernels need from a quantized weight, validated once."""

    __slots__ = ("tensors", "ptrs", "n", "k", "dtype", "device", "dev_index", "group_size", "dequant")

    def matches(self, tensors) -> bool:
        return all(a is b for a, b in zip(self.tensors, tensors)) and self.ptrs == tuple(t.data_ptr() for t in tensors)


def _cached(w, tensors, build):
    info = w.__dict__.get(_CACHE_ATTR)
    if info is not None and info.matches(tensors):
        return info
    info = build()
    info.tensors = tensors
    info.ptrs = tuple(t.data_ptr() for t in tensors)
    w.__dict__[_CACHE_ATTR] = info
    return info


def _fp8_info(w) -> _Weight:
    data, scale = w._data._data, w._scale

    def build():
        n, k = ops._check_fp8_weight(data, scale)
        ops._fp8_device_checks(data, scale)
        info = _Weight()
        info.n, info.k, info.dtype, info.device = n, k, scale.dtype, data.device
        info.dev_index, info.group_size = data.device.index, 0
        info.dequant = lambda: ops._fp8_dequant(data, scale, n, k)
        return info

    return _cached(w, (data, scale), build)


def _awq_info(w) -> _Weight:
    data, scale, shift = w._data._data, w._scale, w._shift

    def build():
        n, k, g = ops._check_awq(data, scale, shift)
        ops._int4_device_checks([("packed", data), ("scales", scale), ("zeros", shift)])
        info = _Weight()
        info.n, info.k, info.dtype, info.device = n, k, torch.float16, data.device
        info.dev_index, info.group_size = data.device.index, g
        info.dequant = lambda: ops._awq_dequant(data, scale, shift, n, k, g)
        return info

    return _cached(w, (data, scale, shift), build)


def _plain_inference(input, w, bias) -> bool:
    """True when skipping quanto's autograd Function and torch-function dispatch changes nothing."""
    if type(input) not in _PLAIN or torch.compiler.is_compiling():
        return False
    if torch._C._is_torch_function_mode_enabled():
        return False
    if torch.is_grad_enabled() and (input.requires_grad or w.requires_grad or (bias is not None and bias.requires_grad)):
        return False
    return True


def _activation(input, info, bias):
    """input as a 16-byte aligned contiguous (M, K) matrix, or None if the full path should decide."""
    if input.dtype is not info.dtype or input.device != info.device or input.dim() == 0 or input.shape[-1] != info.k:
        return None
    if bias is not None and (type(bias) not in _PLAIN or bias.dtype is not info.dtype or bias.device != info.device
                             or bias.shape != (info.n,)):
        return None
    x = input.reshape(-1, info.k)
    if x.shape[0] == 0 or not x.is_contiguous() or x.data_ptr() % 16:
        return None
    return x


def _finish(out, input, info, bias):
    if bias is not None:
        out.add_(bias)
    return out.view(tuple(input.shape[:-1]) + (info.n,))


def fp8_linear(input, w, bias):
    """F.linear(input, w, bias) for a MarlinF8QBytesTensor weight, or None if quanto's path must run."""
    if not _plain_inference(input, w, bias):
        return None
    info = _fp8_info(w)
    x = _activation(input, info, bias)
    if x is None:
        return None
    m, n, k = x.shape[0], info.n, info.k
    if m > ops._max_gemv_m("fp8"):
        return F.linear(x, info.dequant(), bias).view(tuple(input.shape[:-1]) + (n,))
    dev = info.dev_index
    ws_bytes = ops._workspace_bytes("qk_fp8_marlin_gemv_workspace_bytes", m, n, k, dev)
    ws = ops._workspace(x, ws_bytes)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    data, scale = info.tensors
    get_library().call(
        "qk_fp8_marlin_gemv", x.data_ptr(), data.data_ptr(), scale.data_ptr(), out.data_ptr(),
        ws.data_ptr() if ws is not None else None, ws_bytes, m, n, k, ops._DTYPE_CODES[x.dtype], dev, ops._stream(x),
    )
    return _finish(out, input, info, bias)


def awq_linear(input, w, bias):
    """F.linear(input, w, bias) for an AWQWeightQBitsTensor weight, or None if quanto's path must run."""
    if not _plain_inference(input, w, bias):
        return None
    info = _awq_info(w)
    x = _activation(input, info, bias)
    if x is None:
        return None
    m, n, k, g = x.shape[0], info.n, info.k, info.group_size
    if m > ops._max_gemv_m("int4"):
        return F.linear(x, info.dequant(), bias).view(tuple(input.shape[:-1]) + (n,))
    dev = info.dev_index
    ws_bytes = ops._workspace_bytes("qk_awq_int4_gemv_workspace_bytes", m, n, k, g, dev)
    ws = ops._workspace(x, ws_bytes)
    out = torch.empty((m, n), dtype=torch.float16, device=x.device)
    data, scale, shift = info.tensors
    get_library().call(
        "qk_awq_int4_gemv", x.data_ptr(), data.data_ptr(), scale.data_ptr(), shift.data_ptr(), out.data_ptr(),
        ws.data_ptr() if ws is not None else None, ws_bytes, m, n, k, g, dev, ops._stream(x),
    )
    return _finish(out, input, info, bias)
