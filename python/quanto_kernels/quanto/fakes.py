"""Fake (meta) implementations of quanto's four CUDA-only ops, for ``torch.compile``.

optimum-quanto 0.2.7 defines ``quanto::gemm_f16f8_marlin``, ``quanto::gemm_f16i4_awq``,
``quanto::gemm_f16i4_marlin`` and ``quanto::pack_fp8_marlin`` with a CUDA kernel only, so tracing a
quantized model (``torch.compile``, ``torch.export``) fails with "no fake impl" at the first of them.
The output shapes below are those of the CUDA implementations that quanto_kernels serves
(``quanto_kernels.quanto.bindings``); ``quanto::unpack`` already has a composite implementation that handles fake
tensors.

``register_quanto_fakes()`` is idempotent and never raises: an op that is not defined (quanto not
imported, or another version) or that already has a fake impl (registered by quanto itself, by
another library, or by an earlier call) is left alone. It returns the names it registered.
"""

from __future__ import annotations

import threading
from typing import List

import torch

_lock = threading.Lock()
_registered: List[str] = []


def _gemm_f16f8_marlin_fake(a, b_q_weight, b_scales, workspace, num_bits, size_m, size_n, size_k):
    # Served by ops.fp8_marlin_gemm: a (M, K) times the (K/16, 4N) weight -> (M, N) in a's dtype.
    return a.new_empty((a.shape[0], b_q_weight.shape[1] // 4))


def _gemm_f16i4_awq_fake(input, other, other_scale, other_shift, rows, out_cols, in_cols, bits, group_size):
    # Served by ops.awq_int4_gemm: input (..., K) times the (N/4, K) weight -> (..., N) fp16.
    return input.new_empty(tuple(input.shape[:-1]) + (other.shape[0] * 4,))


def _gemm_f16i4_marlin_fake(input, other, other_scale, other_shift, workspace):
    # quanto's CUDA wrapper allocates input.shape[:-1] + (scales.shape[1],) in the input's dtype.
    return input.new_empty(tuple(input.shape[:-1]) + (other_scale.shape[1],))


def _pack_fp8_marlin_fake(b_q_weight, perm, size_k, size_n, num_bits):
    # Served by ops.marlin_repack: (K/16, N * num_bits / 2) int32.
    return b_q_weight.new_empty((size_k // 16, size_n * num_bits // 2))


FAKES = {
    "gemm_f16f8_marlin": _gemm_f16f8_marlin_fake,
    "gemm_f16i4_awq": _gemm_f16i4_awq_fake,
    "gemm_f16i4_marlin": _gemm_f16i4_marlin_fake,
    "pack_fp8_marlin": _pack_fp8_marlin_fake,
}


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.quanto, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _has_fake(qualname: str) -> bool:
    """Whether the op already has a fake impl (torch.library registry) or a Meta kernel."""
    try:
        if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Meta"):
            return True
    except Exception:  # noqa: BLE001 - private API; assume none
        pass
    try:
        from torch._library import simple_registry

        return simple_registry.singleton.find(qualname).fake_impl.kernel is not None
    except Exception:  # noqa: BLE001 - private API moved: fall back to "none"
        return False


def register_quanto_fakes() -> List[str]:
    """Registers the fake impls of quanto's CUDA ops that are defined and still lack one."""
    register = getattr(torch.library, "register_fake", None)
    if register is None:  # torch < 2.4
        return []
    added = []
    with _lock:
        for name, fn in FAKES.items():
            qualname = f"quanto::{name}"
            if qualname in _registered or not _op_defined(name) or _has_fake(qualname):
                continue  # a fake/meta impl registered elsewhere (e.g. by a newer quanto) is kept
            try:
                register(qualname, fn)
            except RuntimeError:  # some torch versions refuse a second registration
                continue
            _registered.append(qualname)
            added.append(qualname)
    return added


def registered() -> List[str]:
    """Qualified names whose fake impl this module registered."""
    return list(_registered)
