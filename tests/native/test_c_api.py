"""The C ABI itself, called through ctypes (CPU machines: no driver or no GPU)."""

import ctypes

import pytest
import torch

from quanto_kernels._native import abi
from quanto_kernels._native import loader as _loader

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path; a GPU is present")

lib = _loader.get_library()


def _status(name, *args):
    """The raw status of a C entry point (ctypes signature set by binding it in lib.abi first)."""
    getattr(lib.abi, abi.public_name(abi.FUNCTIONS[name]))
    return getattr(lib.lib, name)(*args), lib.abi.last_error()


def test_valid_call_without_gpu_is_a_clean_cuda_error():
    status, message = _status("qk_unpack", 16, 32, 4, 4, 0, None)
    assert status == abi.STATUS_CUDA_ERROR
    assert "cudaGetDeviceCount" in message


def test_bad_argument_is_reported_before_touching_cuda():
    status, message = _status("qk_unpack", 16, 32, 4, 3, 0, None)
    assert status == abi.STATUS_INVALID_ARGUMENT
    assert message.startswith("bits:")


def test_fused_kernel_row_limits():
    """The FP8 kernel takes up to 64 rows, the int4 ones 16 (ops dispatch on these numbers)."""
    assert lib.lib.qk_fp8_marlin_max_gemv_m() == 64
    assert lib.lib.qk_max_gemv_m() == 16
    assert lib.abi.fp8_marlin_max_gemv_m() == 64 and lib.abi.max_gemv_m() == 16


def test_error_message_is_per_thread():
    import threading

    _status("qk_unpack", 16, 32, 4, 3, 0, None)
    seen = []
    t = threading.Thread(target=lambda: seen.append(lib.abi.last_error()))
    t.start()
    t.join()
    assert seen == [""]
    assert lib.abi.last_error().startswith("bits:")


def test_abi_functions_map_status_to_exceptions():
    with pytest.raises(ValueError, match="qk_unpack: bits:"):
        lib.abi.unpack(in_=16, out=32, numel=4, bits=3, device=0, stream=None)
    with pytest.raises(RuntimeError, match="cudaGetDeviceCount"):
        lib.abi.unpack(in_=16, out=32, numel=4, bits=4, device=0, stream=None)


def test_abi_output_parameters_are_returned_and_errors_raised():
    with pytest.raises(RuntimeError, match="qk_fp8_marlin_gemv_workspace_bytes: .*cudaGetDeviceCount"):
        lib.abi.fp8_marlin_gemv_workspace_bytes(m=1, n=128, k=128, device=0)
    driver, runtime = lib.abi.cuda_versions()
    assert runtime >= 12000 and driver >= 0


def test_workspace_query_without_gpu():
    out = ctypes.c_int64(-1)
    status, message = _status("qk_fp8_marlin_gemv_workspace_bytes", 1, 128, 128, 0, ctypes.byref(out))
    assert status == abi.STATUS_CUDA_ERROR and "cudaGetDeviceCount" in message
    assert out.value == -1
