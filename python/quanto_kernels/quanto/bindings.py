"""A stand-in for quanto's JIT-built ``quanto_cuda`` module, served by our library.

quanto's registered CUDA wrappers call ``ext.lib.<binding>(...)`` positionally; this object offers
the same six names and signatures (docs/ops.md describes each). Activations from quanto may be
strided views, so they are made dense here before the validated ops see them.

Every argument is checked before anything is launched: a bad one raises a TypeError/ValueError whose
message starts with the binding's own parameter name. The op's own checks (``quanto_kernels.ops``)
cover the tensors; this module checks only what exists in the bindings alone (the sizes quanto
passes besides the tensors, the workspace, ``C_out``). The ``workspace`` tensors quanto passes to
``fp8_marlin_gemm`` and ``marlin_gemm_f16i4`` (int32 zeros sized for upstream's lock-based kernels)
must be int32 tensors, as upstream requires, but are otherwise ignored: our kernels never read or
write them (their split-K scratch is allocated per call, see ``ops._common.workspace``), so their size and
device are not checked.
"""

from __future__ import annotations

import contextlib
import re

import torch

from ..fp8_compute import active_on
from .fast_linear import fp8_compute_takes
from ..ops import _marlin_int4, _validate as v
from ..ops import direct


def _dense(t, name: str) -> torch.Tensor:
    if v.tensor(t, name).numel() >= v.MAX_ELEMENTS:  # refuse before .contiguous() could materialise it
        raise ValueError(f"{name}: {t.numel()} elements is too many (limit 2^40)")
    t = t.contiguous()
    if t.device.type == "cuda" and t.numel() and t.data_ptr() % 16:  # an offset view: our kernels use 16-byte loads
        t = t.clone()
    return t


def _fp8_compute_serves(a, b_scales, n, k) -> bool:
    """The FP8 compute mode, read when quanto's Marlin FP8 op runs: this is where compiled graphs reach
    (torch.compile traces quanto's op as an opaque call), so toggling the mode takes effect there too."""
    return (active_on(a.device) and a.dim() == 2 and a.dtype is b_scales.dtype
            and a.dtype in (torch.float16, torch.bfloat16) and fp8_compute_takes(int(n), int(k)))


def _check_workspace(workspace) -> None:
    """quanto's upstream workspace: must be an int32 tensor (as upstream requires); never used."""
    v.tensor(workspace, "workspace", dtypes=(torch.int32,))


@contextlib.contextmanager
def _renamed(names):
    """Re-raises an op's argument error under the binding's parameter name (e.g. input -> A)."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        head, sep, rest = str(exc).partition(": ")
        if sep and head in names:
            # "... but input is on cuda:0": the other tensor is named the binding's way too
            rest = re.sub(r"\b(\w+)(?= is on )", lambda m: names.get(m.group(1), m.group(1)), rest)
            raise type(exc)(f"{names[head]}: {rest}") from exc
        raise


_MARLIN_I4_NAMES = {"input": "A", "packed": "B", "scales": "s", "zeros": "sz"}


def unpack_in_torch(t: torch.Tensor, bits: int) -> torch.Tensor:
    """quanto::unpack for any device in plain torch: bit-field i of every byte becomes row-chunk i."""
    if bits not in (2, 4):
        raise ValueError(f"bits: must be 2 or 4, got {bits}")
    mask = (1 << bits) - 1
    return torch.cat([(t >> (bits * i)) & mask for i in range(8 // bits)], dim=0)


class QuantoCppBindings:
    """Stand-in for quanto's JIT-built CPU extension ``quanto_cpp`` (it only serves unpack).

    quanto would otherwise compile C++ on first use of a packed int2/int4 weight on the CPU; with
    quanto_kernels active no JIT compilation happens anywhere.
    """

    __name__ = "quanto_kernels.quanto_cpp"

    def __repr__(self) -> str:
        return "<quanto_cpp served by quanto_kernels (torch)>"

    @staticmethod
    def unpack(t, bits):
        return unpack_in_torch(t, bits)


class QuantoCudaBindings:
    """Positional-signature twin of quanto 0.2.7's ``quanto_cuda`` extension module."""

    __name__ = "quanto_kernels.quanto_cuda"

    def __repr__(self) -> str:
        return "<quanto_cuda served by quanto_kernels (prebuilt)>"

    @staticmethod
    def unpack(t, bits):
        return direct.unpack(_dense(t, "t"), bits)

    @staticmethod
    def awq_v2_gemm_f16i4(input, packed, scales, zeros):
        return direct.awq_int4_gemm(_dense(input, "input"), packed, scales, zeros)

    @staticmethod
    def awq_v2_gemv_f16i4(input, packed, scales, zeros, m, n, k, group_size):
        input = _dense(input, "input")
        v.tensor(packed, "packed")
        v.tensor(scales, "scales")
        for name, value in (("m", m), ("n", n), ("k", k), ("group_size", group_size)):
            v.integer(value, name)
        # The sizes must agree with the tensors (checked before anything is launched).
        if packed.dim() == 2 and packed.shape[0] * 4 != n:
            raise ValueError(f"n: {n}, but packed {tuple(packed.shape)} holds N={packed.shape[0] * 4} channels")
        if packed.dim() == 2 and packed.shape[1] != k:
            raise ValueError(f"k: {k}, but packed {tuple(packed.shape)} holds K={packed.shape[1]}")
        if input.dim() >= 1 and input.shape[-1] == k and input.numel() != m * k:
            raise ValueError(f"m: {m} rows of k={k} disagree with input of shape {tuple(input.shape)}")
        if (scales.dim() == 2 and scales.shape[0] > 0 and k % scales.shape[0] == 0
                and k // scales.shape[0] != group_size):
            raise ValueError(f"group_size: {group_size}, but scales {tuple(scales.shape)} give K/groups="
                             f"{k // scales.shape[0]}")
        return direct.awq_int4_gemm(input, packed, scales, zeros)

    @staticmethod
    def gptq_marlin_repack(b_q_weight, perm, size_k, size_n, num_bits):
        return direct.marlin_repack(_dense(b_q_weight, "b_q_weight"), _dense(perm, "perm"), size_k, size_n, num_bits)

    @staticmethod
    def fp8_marlin_gemm(a, b_q_weight, b_scales, workspace, num_bits, size_m, size_n, size_k):
        # The workspace is checked (int32 tensor) but not used: our kernels need no cross-block locks.
        _check_workspace(workspace)
        if v.integer(num_bits, "num_bits") != 8:
            raise ValueError(f"num_bits: the FP8 Marlin GEMM takes 8, got {num_bits}")
        for name, value in (("size_m", size_m), ("size_n", size_n), ("size_k", size_k)):
            v.integer(value, name)
        a = _dense(a, "a")
        v.tensor(b_scales, "b_scales")
        if a.dim() == 2 and a.shape[0] != size_m:
            raise ValueError(f"size_m: {size_m}, but a has shape {tuple(a.shape)}")
        if a.dim() == 2 and a.shape[1] != size_k:
            raise ValueError(f"size_k: {size_k}, but a has shape {tuple(a.shape)}")
        if b_scales.dim() >= 1 and b_scales.shape[-1] != size_n:
            raise ValueError(f"size_n: {size_n}, but b_scales has shape {tuple(b_scales.shape)}")
        if _fp8_compute_serves(a, b_scales, size_n, size_k):
            return direct.fp8_compute_linear(a, b_q_weight, b_scales, None)
        return direct.fp8_marlin_gemm(a, b_q_weight, b_scales)

    @staticmethod
    def marlin_gemm_f16i4(A, B, C_out, s, sz, workspace, thread_k, thread_n, sms, max_par):
        # Tiling hints (thread_k, thread_n, sms, max_par) belong to upstream's kernel; ours picks its own.
        _check_workspace(workspace)
        A = _dense(A, "A")
        v.tensor(s, "s")
        v.tensor(C_out, "C_out", dtypes=(torch.float16,))
        with _renamed(_MARLIN_I4_NAMES):
            perm = _marlin_int4.scale_perm_for(s.shape[0] if s.dim() >= 1 else 0)
            n, k, g = _marlin_int4.check_gemm(A, B, s, sz, perm)
        m = A.numel() // k
        if C_out.device != A.device:
            raise ValueError(f"C_out: is on {C_out.device} but A is on {A.device}")
        if C_out.numel() != m * n or C_out.dim() < 1 or C_out.shape[-1] != n:
            raise ValueError(f"C_out: expected {m} x {n} outputs (last dimension {n}), got shape {tuple(C_out.shape)}")
        with _renamed(_MARLIN_I4_NAMES):
            _marlin_int4.device_checks(B, s, sz, A)
        out = _marlin_int4.gemm_checked(A, B, s, sz, perm, n, k, g)
        C_out.copy_(out.view_as(C_out))
