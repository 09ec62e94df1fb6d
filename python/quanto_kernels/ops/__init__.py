"""The kernels as validated torch ops (``torch.ops.quanto_kernels.*``), each with a fake impl.

One module per kernel family, each holding its argument checks, its launches through the C ABI
(``quanto_kernels._native.abi``), its dispatch (GEMMs) and its custom ops:

  _unpack         quanto_kernels::unpack
  _marlin_repack  quanto_kernels::marlin_repack
  _fp8_marlin     quanto_kernels::fp8_marlin_dequantize, quanto_kernels::fp8_marlin_gemm
  _awq_int4       quanto_kernels::awq_int4_dequantize, quanto_kernels::awq_int4_gemm
  _marlin_int4    quanto_kernels::marlin_int4_dequantize, quanto_kernels::marlin_int4_gemm
  _int8           quanto_kernels::int8_dequantize, quanto_kernels::int8_gemm, quanto_kernels::int8_linear
  _fp8_compute    quanto_kernels::fp8_compute_linear (qfloat8 weights times e4m3 activations on FP8
                  tensor cores; the opt-in mode that routes quanto to it is quanto_kernels.fp8_compute)

Shared: ``_validate`` (the Python argument checks: TypeError/ValueError naming the argument) and
``_common`` (stream handle, workspaces, and the GEMM dispatch rule: fused kernel while M <= the
library's limit for the family, else dequantize + torch.matmul; docs/ops.md, "Dispatch").

Every op checks its arguments, allocates its outputs with torch and launches on the current stream
of the tensors' device. ``direct`` holds the same functions without the torch.library dispatcher
(a dispatch and an autograd check less per call, same checks), for callers that already come through a
dispatcher op or call once per layer eagerly. How the ops are registered (one Library, not
``torch.library.custom_op``, whose wrapper cost ~30 us per call): ``_registration``.

Test-only override of the dispatch rule: ``with quanto_kernels.ops.force_path("gemv"):`` (or
``"dequant"``) makes every GEMM family take that path at any M; under "gemv" an M above the family's
fused-kernel limit raises ValueError naming the limit. ``force_path(None)`` restores the rule.
``fp8_compute_linear`` has its own two paths (weight-only GEMV, FP8 GEMM) and its own test override,
``force_fp8_compute_path("gemv" | "fp8")``.
"""

from __future__ import annotations

from types import SimpleNamespace

from .._native.abi import SCALE_PERM_BLOCK32, SCALE_PERM_BLOCK64, SCALE_PERM_NONE
from . import _awq_int4, _fp8_compute, _fp8_marlin, _int8, _marlin_int4, _marlin_repack, _unpack
from ._common import force_path

__all__ = [
    "unpack",
    "marlin_repack",
    "fp8_marlin_dequantize",
    "fp8_marlin_gemm",
    "awq_int4_dequantize",
    "awq_int4_gemm",
    "marlin_int4_dequantize",
    "marlin_int4_gemm",
    "int8_dequantize",
    "int8_gemm",
    "int8_linear",
    "fp8_compute_linear",
    "force_fp8_compute_path",
    "SCALE_PERM_NONE",
    "SCALE_PERM_BLOCK32",
    "SCALE_PERM_BLOCK64",
    "marlin_int4_scale_perm",
    "direct",
    "force_path",
    "GEMM_FAMILIES",
]

unpack = _unpack.op
marlin_repack = _marlin_repack.op
fp8_marlin_dequantize = _fp8_marlin.dequantize_op
fp8_marlin_gemm = _fp8_marlin.gemm_op
awq_int4_dequantize = _awq_int4.dequantize_op
awq_int4_gemm = _awq_int4.gemm_op
marlin_int4_dequantize = _marlin_int4.dequantize_op
marlin_int4_gemm = _marlin_int4.gemm_op
marlin_int4_scale_perm = _marlin_int4.scale_perm_for
int8_dequantize = _int8.dequantize_op
int8_gemm = _int8.gemm_op
int8_linear = _int8.linear_op
fp8_compute_linear = _fp8_compute.op
force_fp8_compute_path = _fp8_compute.force_path

# family name -> GemmFamily (fused-kernel limit, cached workspace query)
GEMM_FAMILIES = {f.FAMILY.name: f.FAMILY for f in (_fp8_marlin, _awq_int4, _marlin_int4, _int8)}

# The same ops without the torch.library dispatcher ("direct" calls of the checked implementations).
direct = SimpleNamespace(
    unpack=_unpack.direct,
    marlin_repack=_marlin_repack.direct,
    fp8_marlin_dequantize=_fp8_marlin.direct_dequantize,
    fp8_marlin_gemm=_fp8_marlin.direct_gemm,
    awq_int4_dequantize=_awq_int4.direct_dequantize,
    awq_int4_gemm=_awq_int4.direct_gemm,
    marlin_int4_dequantize=_marlin_int4.direct_dequantize,
    marlin_int4_gemm=_marlin_int4.direct_gemm,
    int8_dequantize=_int8.direct_dequantize,
    int8_gemm=_int8.direct_gemm,
    int8_linear=_int8.direct_linear,
    fp8_compute_linear=_fp8_compute.direct,
)
