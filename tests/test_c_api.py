"""The C ABI itself, called through ctypes (CPU machines: no driver or no GPU)."""

import ctypes

import pytest
import torch

from quanto_kernels import _loader

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path; a GPU is present")

lib = _loader.get_library()


def _status(name, *args):
    return getattr(lib.lib, name)(*args), lib.last_error()


def test_valid_call_without_gpu_is_a_clean_cuda_error():
    status, message = _status("qk_unpack", 16, 32, 4, 4, 0, None)
    assert status == _loader.STATUS_CUDA_ERROR
    assert "cudaGetDeviceCount" in message


def test_bad_argument_is_reported_before_touching_cuda():
    status, message = _status("qk_unpack", 16, 32, 4, 3, 0, None)
    assert status == _loader.STATUS_INVALID_ARGUMENT
    assert message.startswith("bits:")


@pytest.mark.parametrize(
    "name, args, word",
    [
        ("qk_fp8_marlin_dequantize", (16, 16, 16, 100, 128, 1, 0, None), "n:"),
        ("qk_fp8_marlin_dequantize", (16, 16, 16, 128, 100, 1, 0, None), "k:"),
        ("qk_fp8_marlin_dequantize", (16, 16, 16, 128, 128, 7, 0, None), "dtype:"),
        ("qk_fp8_marlin_dequantize", (24, 16, 16, 128, 128, 1, 0, None), "w:"),
        ("qk_awq_int4_dequantize", (16, 16, 16, 16, 128, 128, 100, 0, None), "group_size:"),
        ("qk_awq_int4_dequantize", (16, 16, 16, 16, 130, 128, 128, 0, None), "n:"),
        ("qk_marlin_int4_dequantize", (16, 16, 16, 16, 128, 128, 128, 5, 0, None), "scale_perm:"),
        ("qk_marlin_repack", (16, None, 16, 128, 128, 6, 0, None), "num_bits:"),
        ("qk_fp8_marlin_gemv", (16, 16, 16, 16, None, 0, 65, 128, 128, 1, 0, None), "m:"),
        ("qk_fp8_marlin_gemv_workspace_bytes", (0, 128, 128, 0, None), "bytes:"),
        ("qk_awq_int4_gemv", (16, 16, 16, 16, 16, None, 0, 17, 128, 128, 128, 0, None), "m:"),
    ],
)
def test_each_entry_names_the_bad_argument(name, args, word):
    status, message = _status(name, *args)
    assert status == _loader.STATUS_INVALID_ARGUMENT
    assert message.startswith(word), message


def test_fused_kernel_row_limits():
    """The FP8 kernel takes up to 64 rows, the int4 ones 16 (ops dispatch on these numbers)."""
    assert lib.lib.qk_fp8_marlin_max_gemv_m() == 64
    assert lib.lib.qk_max_gemv_m() == 16


def test_error_message_is_per_thread():
    import threading

    _status("qk_unpack", 16, 32, 4, 3, 0, None)
    seen = []
    t = threading.Thread(target=lambda: seen.append(lib.last_error()))
    t.start()
    t.join()
    assert seen == [""]
    assert lib.last_error().startswith("bits:")


def test_call_wrapper_maps_status_to_exceptions():
    with pytest.raises(ValueError, match="qk_unpack: bits:"):
        lib.call("qk_unpack", 16, 32, 4, 3, 0, None)
    with pytest.raises(RuntimeError, match="cudaGetDeviceCount"):
        lib.call("qk_unpack", 16, 32, 4, 4, 0, None)


def test_workspace_query_without_gpu():
    out = ctypes.c_int64(-1)
    status, message = _status("qk_fp8_marlin_gemv_workspace_bytes", 1, 128, 128, 0, ctypes.byref(out))
    assert status == _loader.STATUS_CUDA_ERROR and "cudaGetDeviceCount" in message
    assert out.value == -1
