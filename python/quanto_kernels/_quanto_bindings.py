"""A stand-in for quanto's JIT-built ``quanto_cuda`` module, served by our library.

quanto's registered CUDA wrappers call ``ext.lib.<binding>(...)`` positionally; this object offers
the same six names and signatures (contract: quanto_cuda_ops.md, section 1.2). Activations from
quanto may be strided views, so they are made dense here before the validated ops see them.
"""

from __future__ import annotations

import torch

from . import ops
from .ops import eager


def _dense(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    if t.numel() and t.data_ptr() % 16:  # an offset view: our kernels use 16-byte loads
        t = t.clone()
    return t


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
        return eager.unpack(_dense(t), bits)

    @staticmethod
    def awq_v2_gemm_f16i4(input, packed, scales, zeros):
        return eager.awq_int4_gemm(_dense(input), packed, scales, zeros)

    @staticmethod
    def awq_v2_gemv_f16i4(input, packed, scales, zeros, m, n, k, group_size):
        out = eager.awq_int4_gemm(_dense(input), packed, scales, zeros)
        if out.shape[-1] != n or input.numel() != m * k or k // scales.shape[0] != group_size:
            raise ValueError(
                f"awq_v2_gemv_f16i4: m={m}, n={n}, k={k}, group_size={group_size} disagree with the tensors "
                f"(input {tuple(input.shape)}, scales {tuple(scales.shape)})"
            )
        return out

    @staticmethod
    def gptq_marlin_repack(b_q_weight, perm, size_k, size_n, num_bits):
        return eager.marlin_repack(_dense(b_q_weight), _dense(perm), size_k, size_n, num_bits)

    @staticmethod
    def fp8_marlin_gemm(a, b_q_weight, b_scales, workspace, num_bits, size_m, size_n, size_k):
        # The workspace is accepted but not used: our kernels need no cross-block locks.
        if num_bits != 8:
            raise ValueError(f"num_bits: the FP8 Marlin GEMM takes 8, got {num_bits}")
        if tuple(a.shape) != (size_m, size_k) or b_scales.shape[-1] != size_n:
            raise ValueError(
                f"fp8_marlin_gemm: size_m={size_m}, size_n={size_n}, size_k={size_k} disagree with a "
                f"{tuple(a.shape)} and b_scales {tuple(b_scales.shape)}"
            )
        return eager.fp8_marlin_gemm(_dense(a), b_q_weight, b_scales)

    @staticmethod
    def marlin_gemm_f16i4(A, B, C_out, s, sz, workspace, thread_k, thread_n, sms, max_par):
        # Tiling hints (thread_k, thread_n, sms, max_par) belong to upstream's kernel; ours picks its own.
        perm = ops.marlin_int4_scale_perm(s.shape[0])
        C_out.copy_(eager.marlin_int4_gemm(_dense(A), B, s, sz, perm).view_as(C_out))
