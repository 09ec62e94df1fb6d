"""quanto-kernels: prebuilt CUDA kernels for optimum-quanto.

``import quanto_kernels`` (before or after ``import optimum.quanto``) makes quanto run these kernels
instead of JIT-compiling its own. Set ``QUANTO_KERNELS_DISABLE=1`` to opt out. Without a CUDA GPU
the import succeeds and patches nothing. ``python -m quanto_kernels`` prints diagnostics and, on a
GPU, runs a self-check.
"""

from . import _shim
from ._loader import NativeLibraryError, get_library
from ._shim import JITDisabledError

__version__ = "0.1.0"

__all__ = ["__version__", "ops", "get_library", "quanto_status", "NativeLibraryError", "JITDisabledError"]


def quanto_status() -> dict:
    """Whether optimum-quanto is served by our kernels, and why (not)."""
    return _shim.status()


def __getattr__(name):
    # Importing the ops registers torch custom ops; keep `import quanto_kernels` light until needed.
    if name == "ops":
        import importlib

        return importlib.import_module(".ops", __name__)
    raise AttributeError(f"module 'quanto_kernels' has no attribute {name!r}")


_shim.install()
