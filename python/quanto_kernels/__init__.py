"""quanto-kernels: prebuilt CUDA kernels for optimum-quanto.

``import quanto_kernels`` (before or after ``import optimum.quanto``) makes quanto run these kernels
instead of JIT-compiling its own. Set ``QUANTO_KERNELS_DISABLE=1`` to opt out. Without a CUDA GPU
the import succeeds and patches nothing. ``python -m quanto_kernels`` prints diagnostics and, on a
GPU, runs a self-check.

FP8 compute (opt-in, off by default): ``set_fp8_compute(True)``, ``with fp8_compute(): ...`` or
``QUANTO_KERNELS_FP8_COMPUTE=1`` run quanto's qfloat8 layers on FP8 tensor cores with activations
quantized per row to e4m3 (faster at large batch, less accurate; docs/numerics.md, "FP8 compute").

Layers (docs/architecture.md):
  _native/   find, choose and load the library; its C ABI as keyword-only Python functions
  ops/       the kernels as validated torch custom ops, one module per kernel family
  quanto/    the optimum-quanto shim, its bindings, the fast QLinear path, fakes of quanto's ops
  fp8_compute.py  the process-wide FP8 compute switch (re-exported here)
  _diagnostics.py, __main__.py   ``python -m quanto_kernels``
"""

from ._native import NativeLibraryError, get_library
# Binds the name fp8_compute to the context manager, shadowing the submodule of the same name here.
from .fp8_compute import fp8_compute, fp8_compute_enabled, set_fp8_compute
from .quanto import shim as _shim
from .quanto.shim import JITDisabledError

__version__ = "0.1.0"

__all__ = ["__version__", "ops", "get_library", "quanto_status", "NativeLibraryError", "JITDisabledError",
           "set_fp8_compute", "fp8_compute_enabled", "fp8_compute"]


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
