"""Python-side argument checks of every op: each failure is a TypeError/ValueError that starts with
the argument's name and says what was expected. The C entry points re-check sizes, codes and
alignment (docs/ops.md); nothing else in this package re-states these rules."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

INT32_MAX = 2**31 - 1
# Mirrors the C entry points' kMaxDim: every size, and N * K, must stay below 2^40 elements.
MAX_ELEMENTS = 2**40
# Largest K the int4 kernels take: they index within a weight/activation row with 32-bit ints
# (plus offsets below 1024), so K is kept well inside int32 (upstream returned
# cudaErrorInvalidValue for K >= 2^31; real layers have K < 2^17).
INT4_MAX_K = 2**30


def tensor(
    t,
    name: str,
    *,
    dtypes: Optional[Tuple[torch.dtype, ...]] = None,
    ndim: Optional[int] = None,
    shape: Optional[Tuple[int, ...]] = None,
) -> None:
    """Type, dtype and shape checks (device-independent: these also run for fake tensors); returns t."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name}: expected dtype {want}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


def on_cuda(t: torch.Tensor, name: str, ref: Optional[torch.Tensor] = None, ref_name: str = "") -> None:
    """Device, density and alignment checks that the kernels rely on (real tensors only)."""
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous (got strides {t.stride()}); call .contiguous() first")
    if t.device.type != "cuda":
        raise ValueError(f"{name}: expected a CUDA tensor, got one on {t.device}")
    if ref is not None and t.device != ref.device:
        raise ValueError(f"{name}: is on {t.device} but {ref_name} is on {ref.device}; move them to one device")
    if t.numel() and t.data_ptr() % 16:
        raise ValueError(
            f"{name}: data pointer must be 16-byte aligned (offset view of another tensor?); pass a .clone()"
        )


def condition(ok: bool, name: str, message) -> None:
    """ValueError "name: message" unless ok. ``message`` may be a callable returning the text: checks on a
    layer's every call pass one, so the text (shapes formatted into it) is only built when it is raised."""
    if not ok:
        raise ValueError(f"{name}: {message() if callable(message) else message}")


def integer(value, name: str, *, choices=None, minimum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if choices is not None and value not in choices:
        raise ValueError(f"{name}: must be one of {sorted(choices)}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


# ------------------------------------------------------------------- shared by the int4 families


def int4_size(n: int, k: int) -> None:
    condition(k <= INT4_MAX_K, "packed", f"K={k} is too large: the int4 kernels take K <= 2^30")
    condition(n * k < MAX_ELEMENTS, "packed", f"N * K = {n} * {k} elements is too many (limit 2^40)")


# Activation dtypes of the int4 ops: scales, zeros, activations and results all share one of them.
INT4_DTYPES = (torch.float16, torch.bfloat16)


def group_tensors(scales, zeros, n: int, k: int, group_multiple: int) -> int:
    """fp16 or bf16 (K/group_size, N) scales and zeros of one dtype; returns the group size."""
    tensor(scales, "scales", dtypes=INT4_DTYPES, ndim=2)
    groups = scales.shape[0]
    condition(scales.shape[1] == n, "scales", f"expected shape (K/group_size, N={n}), got {tuple(scales.shape)}")
    condition(groups > 0 and k % groups == 0, "scales", f"{groups} groups do not divide K={k}")
    group_size = k // groups
    condition(group_size % group_multiple == 0, "scales",
              f"group size K/{groups}={group_size} must be a multiple of {group_multiple}")
    tensor(zeros, "zeros", dtypes=(scales.dtype,), shape=tuple(scales.shape))
    return group_size


def activation(a, k: int, name: str = "input", dtype: torch.dtype = torch.float16) -> None:
    """A (..., K) activation of `dtype` (the weight's scales dtype)."""
    tensor(a, name, dtypes=(dtype,))
    condition(a.dim() >= 1 and a.shape[-1] == k, name,
              f"expected last dimension K={k} to match the weight, got shape {tuple(a.shape)}")


def all_on_cuda(*named) -> None:
    """(name, tensor) pairs: each on CUDA, dense and aligned, all on the first one's device."""
    first_name, first = named[0]
    on_cuda(first, first_name)
    for name, t in named[1:]:
        on_cuda(t, name, first, first_name)
