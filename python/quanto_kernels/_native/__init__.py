"""The native layer: finding, choosing and loading the library, and its C ABI as Python functions.

  loader.py   which build to load (driver version, ``QUANTO_KERNELS_CUDA_MAJOR``), safe loading
  _binfile.py structural checks of a library file before the dynamic loader maps it
  errors.py   NativeLibraryError and the status -> exception mapping
  abi.py      the header's functions and constants, as keyword-only Python functions
  cdecl.py    the reader of C declarations behind abi.py (and the header-drift test)

Nothing here imports torch.
"""

from .errors import NativeLibraryError
from .loader import NativeLibrary, get_library, load_library

__all__ = ["NativeLibraryError", "NativeLibrary", "get_library", "load_library"]
