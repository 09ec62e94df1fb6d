"""A short inference path from quanto's frozen QLinear to our kernels.

quanto reaches the kernel through F.linear -> the weight's __torch_function__ -> an autograd
Function -> its dispatcher op -> its binding -> our validated op: about 60 us of Python per call,
while the fused kernel at M = 1 takes 10-30 us. When nothing needs that machinery (no autograd,
no tracing, no torch-function mode, plain tensors on the weight's device), QLinear.forward calls
the kernel directly: the weight's checks run once and are cached on the weight, the activation's
are a handful of comparisons. Anything unusual returns None and takes quanto's full, validated
path, which also raises the clear errors.

FP8 compute mode (quanto_kernels.fp8_compute): while it is on for the weight's GPU, qfloat8 weights
whose shape the FP8 product takes run ``fp8_compute_linear`` (here directly, and through
``fp8_compute_route`` from the shim's Marlin FP8 linear on quanto's full path); other shapes and GPUs
keep the weight-only path.
"""

from __future__ import annotations

import torch

from ..fp8_compute import active_on
from ..ops import _awq_int4, _fp8_compute, _fp8_marlin, _int8
from ..ops import _common as c

_CACHE_ATTR = "_quanto_kernels_cache"
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # a module's bias is a Parameter; subclasses go the full way


def plain_tensor(t) -> bool:
    """A plain tensor or Parameter, not one of quanto's tensor classes (or another subclass).

    While torch.compile traces, only quanto's own tensor classes are excluded: in a small FLUX under regional
    compilation every traced call of the shim's qint8 linear forward saw ``type(x) in _PLAIN`` false (a plain
    function compiled on its own does not), and took quanto's dense-copy path.
    """
    if torch.compiler.is_compiling():
        from optimum.quanto.tensor import QTensor

        return isinstance(t, torch.Tensor) and not isinstance(t, QTensor)
    return type(t) in _PLAIN


class _Weight:
    """What the kernels need from a quantized weight, validated once."""

    __slots__ = ("tensors", "ptrs", "n", "k", "dtype", "device", "group_size", "fp8_compute")

    def matches(self, tensors) -> bool:
        for mine, t, ptr in zip(self.tensors, tensors, self.ptrs):  # a plain loop: this runs at every call
            if mine is not t or t.data_ptr() != ptr:
                return False
        return True


def _cached(w, tensors, build):
    info = w.__dict__.get(_CACHE_ATTR)
    if info is not None and info.matches(tensors):
        return info
    info = build()
    info.tensors = tensors
    info.ptrs = tuple(t.data_ptr() for t in tensors)
    w.__dict__[_CACHE_ATTR] = info
    return info


def _info(w, tensors, family, fp8_compute: bool = False) -> _Weight:
    """The weight's facts, from its family's own checks (``family.check_weight`` gives (N, K) or
    (N, K, group size); ``family.device_checks``), run once per weight and cached on it. The scale is
    the second tensor: its dtype is the activation dtype the kernels take."""

    def build():
        shape = family.check_weight(*tensors)
        family.device_checks(*tensors)
        info = _Weight()
        info.n, info.k = shape[0], shape[1]
        info.group_size = shape[2] if len(shape) > 2 else 0
        info.dtype, info.device = tensors[1].dtype, tensors[0].device
        info.fp8_compute = fp8_compute and fp8_compute_takes(info.n, info.k)
        return info

    return _cached(w, tensors, build)


def _fp8_info(w) -> _Weight:
    return _info(w, (w._data._data, w._scale), _fp8_marlin, fp8_compute=True)


def fp8_compute_takes(n: int, k: int) -> bool:
    """Whether the FP8 tensor-core product takes an (N, K) qfloat8 weight (ops/_fp8_compute.py)."""
    return k % _fp8_compute.K_MULTIPLE == 0 and n % _fp8_compute.N_MULTIPLE == 0


def fp8_compute_route(input, w, bias) -> bool:
    """Whether quanto's Marlin FP8 linear should call fp8_compute_linear for F.linear(input, w, bias).

    Only shapes, dtypes and devices are looked at (no data), so torch.compile traces it and guards on
    the mode's flag. Anything the op would refuse keeps the weight-only path instead.
    """
    data, scale = w._data._data, w._scale
    if not plain_tensor(input) or not active_on(data.device) or input.device != data.device:
        return False
    if input.dtype is not scale.dtype or input.dtype not in _fp8_compute.ACT_DTYPES:
        return False
    n, k = scale.shape[-1], data.shape[0] * 16
    if data.dim() != 2 or data.shape[1] != 4 * n or input.dim() == 0 or input.shape[-1] != k:
        return False
    if bias is not None and (bias.dtype is not input.dtype or tuple(bias.shape) != (n,) or bias.device != data.device):
        return False
    return fp8_compute_takes(n, k)


def _awq_info(w) -> _Weight:
    return _info(w, (w._data._data, w._scale, w._shift), _awq_int4)


def is_int8_weight(w) -> bool:
    """quanto's qint8 weight-only tensor in its own layout: (N, K) int8 data, one scale per output channel."""
    data, scale = getattr(w, "_data", None), getattr(w, "_scale", None)
    return (isinstance(data, torch.Tensor) and data.dtype is torch.int8 and data.dim() == 2
            and getattr(w, "axis", None) == 0 and getattr(w, "activation_qtype", None) is None
            and isinstance(scale, torch.Tensor) and scale.numel() == data.shape[0])


def _int8_info(w) -> _Weight:
    return _info(w, (w._data, w._scale), _int8)


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
    x = input if input.dim() == 2 else input.reshape(-1, info.k)
    if x.shape[0] == 0 or not x.is_contiguous() or x.data_ptr() % 16:
        return None
    return x


def _shaped(out, input, n: int):
    """The (M, N) result in input's leading shape."""
    return out if input.dim() == 2 else out.view(tuple(input.shape[:-1]) + (n,))


def fp8_linear(input, w, bias):
    """F.linear(input, w, bias) for a MarlinF8QBytesTensor weight, or None if quanto's path must run."""
    if not _plain_inference(input, w, bias):
        return None
    info = _fp8_info(w)
    x = _activation(input, info, bias)
    if x is None:
        return None
    data, scale = info.tensors
    if info.fp8_compute and active_on(info.device):
        if bias is not None:
            bias = c.dense_aligned(bias)
        out = _fp8_compute.linear_2d(x, data, scale, bias, info.n, info.k)
    else:
        out = _fp8_marlin.matmul(x, data, scale, info.n, info.k, bias)
    return _shaped(out, input, info.n)


def awq_linear(input, w, bias):
    """F.linear(input, w, bias) for an AWQ int4 weight (quanto's fp16 class or our bf16 one), or None if
    quanto's path must run."""
    if not _plain_inference(input, w, bias):
        return None
    info = _awq_info(w)
    x = _activation(input, info, bias)
    if x is None:
        return None
    data, scale, shift = info.tensors
    out = _awq_int4.matmul(x, data, scale, shift, info.n, info.k, info.group_size, bias)
    return _shaped(out, input, info.n)


def int8_linear(input, w, bias):
    """F.linear(input, w, bias) for a qint8 WeightQBytesTensor weight, or None if quanto's path must run."""
    if not is_int8_weight(w) or w._data.device.type != "cuda" or not _plain_inference(input, w, bias):
        return None
    info = _int8_info(w)
    x = _activation(input, info, bias)
    if x is None:
        return None
    data, scale = info.tensors
    out = _int8.matmul(x, data, scale, info.n, info.k, bias)
    return _shaped(out, input, info.n)
