"""qint4 weights with bf16 scales, served by our AWQ-layout int4 kernels instead of torch's TinyGemm.

quanto 0.2.7 turns a CUDA qint4 weight (axis 0, group size 128, 2-D) into its AWQ tensor only when
the scales are fp16; with bf16 scales it picks TinyGemm (``torch._weight_int4pack_mm``), which is
slow at the large M of diffusion models. quanto's AWQ tensor class is itself dtype-agnostic (its
packing, ``dequantize()``, ``unpack()`` and ``weight_qbits_tensor()`` are plain torch on the scale
dtype), but its linear calls ``quanto::gemm_f16i4_awq``, an fp16-only op. This subclass keeps
everything quanto's AWQ class does and only replaces what is fp16-bound:

  * ``F.linear`` goes through ``Bf16AWQLinearFunction`` to ``torch.ops.quanto_kernels.awq_int4_gemm``
    (our validated custom op, with a fake impl: the fused kernel at small M, our bf16 dequantize +
    torch's matmul above the fused limit);
  * ``__tensor_unflatten__`` rebuilds this class, so detach, torch.compile and ``.to()`` keep it.

The AWQ layout stores the zeros as ``-shift`` (``-scale * zero_point`` for an integer shift), and
``weight_qbits_tensor()`` negates them back, both exactly: a state dict is the generic quanto
packing either way, so it loads in plain quanto (which then picks TinyGemm) and back.

Imports optimum.quanto: only the shim imports this module, after quanto is known to be 0.2.7.
"""

from __future__ import annotations

import ast

import torch
from optimum.quanto.tensor.function import QuantizedLinearFunction
from optimum.quanto.tensor.qtype import qint4, qtypes
from optimum.quanto.tensor.weights.awq import AWQWeightQBitsTensor

from ..ops._common import dense_aligned

__all__ = ["Bf16AWQWeightQBitsTensor", "Bf16AWQLinearFunction", "serves"]


def serves(qtype, axis, group_size, size, data, scale) -> bool:
    """Whether quanto's factory should build this class: every CUDA weight for which quanto would pick
    TinyGemm (qint4, bf16 scales, axis 0, group size 128, 2-D, compute capability 8.0+) and which the
    AWQ packing takes (N a multiple of 4, K of 128).

    quanto's fp16 AWQ rule also asks for N >= 128, as a workaround for a crash in its own AWQ kernel;
    our kernels have no such limit (nor has TinyGemm, which these weights would get otherwise), so a
    narrow bf16 layer is served too.
    """
    return (
        qtype == qint4
        and scale.dtype == torch.bfloat16
        and axis == 0
        and group_size == 128
        and len(size) == 2
        and size[0] % 4 == 0
        and size[1] % 128 == 0
        and data.device.type == "cuda"
        and bool(torch.version.cuda)
        and torch.cuda.get_device_capability(data.device)[0] >= 8
    )


class Bf16AWQLinearFunction(QuantizedLinearFunction):
    """F.linear(input, weight, bias) for a Bf16AWQWeightQBitsTensor; the backward is quanto's
    (through the weight's ``dequantize()``)."""

    @staticmethod
    def forward(ctx, input, other, bias=None):
        ctx.save_for_backward(input, other)
        if type(input) is not torch.Tensor:
            input = input.dequantize()
        out = torch.ops.quanto_kernels.awq_int4_gemm(dense_aligned(input), other._data._data, other._scale,
                                                     other._shift)
        return out if bias is None else out + bias


class Bf16AWQWeightQBitsTensor(AWQWeightQBitsTensor):
    """quanto's AWQ int4 weight with bf16 scales and shifts, multiplied by our kernels."""

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        assert len(inner_tensors) == 3 and len(meta) == 5
        return Bf16AWQWeightQBitsTensor(
            qtypes[meta["qtype"]], ast.literal_eval(meta["axis"]), ast.literal_eval(meta["group_size"]),
            ast.literal_eval(meta["size"]), ast.literal_eval(meta["stride"]), inner_tensors["_data"],
            inner_tensors["_scale"], inner_tensors["_shift"],
        )

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:

            def linear(input, weight, bias=None):
                return Bf16AWQLinearFunction.apply(input, weight, bias)

            return linear(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)
