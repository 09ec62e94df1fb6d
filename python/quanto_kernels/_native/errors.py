"""Errors of the native layer, and the mapping of the C ABI's status codes to Python exceptions.

Every status-returning entry point reports failures as a ``qk_status`` (values in ``abi.py``, checked
against the header by the tests); the message is the calling thread's ``qk_last_error()``. The
mapping (docs/ops.md describes when each status occurs):

  QK_STATUS_INVALID_ARGUMENT -> ValueError          (a size, pointer, code or alignment)
  QK_STATUS_UNSUPPORTED      -> NotImplementedError (valid, but not for this build or device)
  QK_STATUS_CUDA_ERROR, any other code -> RuntimeError
"""

from __future__ import annotations


class NativeLibraryError(RuntimeError):
    """The native library could not be found, chosen or loaded, or lacks an entry point."""


def exception_for_status(status: int) -> type:
    from . import abi  # the status values live with the rest of the ABI

    return {abi.STATUS_INVALID_ARGUMENT: ValueError, abi.STATUS_UNSUPPORTED: NotImplementedError}.get(
        status, RuntimeError)


def raise_for_status(function: str, status: int, message: str) -> None:
    """Raises the exception for a non-zero `status` of `function` (a C name), with the C message."""
    raise exception_for_status(status)(f"quanto-kernels {function}: {message}")


def missing_symbol(function: str, path) -> NativeLibraryError:
    return NativeLibraryError(
        f"quanto-kernels: {path} does not export {function}, which this Python package declares: the library "
        "was built from older sources than the package. Rebuild or reinstall (`pip install --force-reinstall "
        "quanto-kernels`)."
    )
