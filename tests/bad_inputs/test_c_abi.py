"""Bad inputs of the C entry points themselves (raw ctypes calls; the Python layers never send these).

CPU machines check that each entry point names the bad argument before touching CUDA; on a GPU the
fused kernels' split-K workspace is checked, and the context must stay healthy after all of it.
"""

import ctypes

import pytest
import torch

from bad_inputs._table import (  # noqa: F401
    test_c_abi_refuses_a_bad_split_k_workspace,
    test_context_is_healthy_after_all_the_bad_calls,
)
from quanto_kernels._native import abi
from quanto_kernels._native import loader as _loader

_BYTES = ctypes.pointer(ctypes.c_int64(-1))  # a valid out-pointer, so the size checks are what fails
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path; a GPU is present")


def _status(name, *args):
    """The raw status of a C entry point (ctypes signature set by binding it in lib.abi first)."""
    lib = _loader.get_library()
    getattr(lib.abi, abi.public_name(abi.FUNCTIONS[name]))
    return getattr(lib.lib, name)(*args), lib.abi.last_error()


@NO_GPU
@pytest.mark.parametrize(
    "name, args, word",
    [
        ("qk_fp8_marlin_dequantize", (16, 16, 16, 100, 128, 1, 0, None), "n:"),
        ("qk_fp8_marlin_dequantize", (16, 16, 16, 128, 100, 1, 0, None), "k:"),
        ("qk_fp8_marlin_dequantize", (16, 16, 16, 128, 128, 7, 0, None), "dtype:"),
        ("qk_fp8_marlin_dequantize", (24, 16, 16, 128, 128, 1, 0, None), "w:"),
        ("qk_awq_int4_dequantize", (16, 16, 16, 16, 128, 128, 100, 1, 0, None), "group_size:"),
        ("qk_awq_int4_dequantize", (16, 16, 16, 16, 130, 128, 128, 2, 0, None), "n:"),
        ("qk_awq_int4_dequantize", (16, 16, 16, 16, 128, 128, 128, 0, 0, None), "dtype:"),
        ("qk_marlin_int4_dequantize", (16, 16, 16, 16, 128, 128, 128, 5, 1, 0, None), "scale_perm:"),
        ("qk_marlin_int4_dequantize", (16, 16, 16, 16, 128, 128, 128, 2, 3, 0, None), "dtype:"),
        ("qk_marlin_repack", (16, None, 16, 128, 128, 6, 0, None), "num_bits:"),
        ("qk_fp8_marlin_gemv", (16, 16, 16, None, 16, None, 0, 65, 128, 128, 1, 0, None), "m:"),
        ("qk_fp8_marlin_gemv", (16, 16, 16, 17, 16, None, 0, 1, 128, 128, 1, 0, None), "bias:"),
        ("qk_fp8_marlin_gemv_workspace_bytes", (0, 128, 128, 0, None), "bytes:"),
        ("qk_fp8_marlin_mm", (16, 16, 16, None, 16, None, 0, 0, 128, 128, 1, 0, None), "m:"),
        ("qk_fp8_marlin_mm", (16, 16, 16, None, 16, None, 0, 1, 100, 128, 1, 0, None), "n:"),
        ("qk_fp8_marlin_mm", (16, 16, 16, None, 16, None, 0, 1, 128, 100, 1, 0, None), "k:"),
        ("qk_fp8_marlin_mm", (16, 16, 16, None, 16, None, 0, 1, 128, 128, 5, 0, None), "dtype:"),
        ("qk_fp8_marlin_mm", (24, 16, 16, None, 16, None, 0, 1, 128, 128, 1, 0, None), "a:"),
        ("qk_fp8_marlin_mm", (16, 16, 16, 17, 16, None, 0, 1, 128, 128, 1, 0, None), "bias:"),
        ("qk_fp8_marlin_mm_available", (0, None), "available:"),
        ("qk_fp8_marlin_mm_workspace_bytes", (64, 128, 128, 0, None), "bytes:"),
        ("qk_fp8_marlin_mm_workspace_bytes", (0, 128, 128, 0, _BYTES), "m:"),
        ("qk_fp8_marlin_mm_workspace_bytes", (64, 100, 128, 0, _BYTES), "n:"),
        ("qk_int8_mm", (16, 16, 16, None, 16, None, 0, 0, 128, 128, 1, 0, None), "m:"),
        ("qk_int8_mm", (16, 16, 16, None, 16, None, 0, 1, 100, 128, 1, 0, None), "n:"),
        ("qk_int8_mm", (16, 16, 16, None, 16, None, 0, 1, 128, 40, 1, 0, None), "k:"),
        ("qk_int8_mm", (16, 16, 16, None, 16, None, 0, 1, 128, 128, 5, 0, None), "dtype:"),
        ("qk_int8_mm", (16, 24, 16, None, 16, None, 0, 1, 128, 128, 1, 0, None), "w:"),
        ("qk_int8_mm", (16, 16, 16, 17, 16, None, 0, 1, 128, 128, 1, 0, None), "bias:"),
        ("qk_int8_mm_available", (0, None), "available:"),
        ("qk_int8_mm_workspace_bytes", (64, 128, 128, 0, None), "bytes:"),
        ("qk_int8_mm_workspace_bytes", (0, 128, 128, 0, _BYTES), "m:"),
        ("qk_int8_mm_workspace_bytes", (64, 100, 128, 0, _BYTES), "n:"),
        ("qk_awq_int4_gemv", (16, 16, 16, 16, 16, None, 0, 17, 128, 128, 128, 1, 0, None), "m:"),
        ("qk_awq_int4_gemv", (16, 16, 16, 16, 16, None, 0, 17, 128, 128, 128, 2, 0, None), "m:"),
        ("qk_awq_int4_gemv", (16, 16, 16, 16, 16, None, 0, 1, 128, 128, 128, 9, 0, None), "dtype:"),
        ("qk_marlin_int4_gemv", (16, 16, 16, 16, 16, None, 0, 1, 128, 128, 128, 2, -1, 0, None), "dtype:"),
        ("qk_marlin_int4_gemv", (16, 16, 16, 16, 16, None, 0, 17, 128, 128, 128, 2, 2, 0, None), "m:"),
    ],
)
def test_each_entry_names_the_bad_argument(name, args, word):
    status, message = _status(name, *args)
    assert status == abi.STATUS_INVALID_ARGUMENT
    assert message.startswith(word), message


