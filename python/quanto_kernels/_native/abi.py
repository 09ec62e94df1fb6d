"""The library's C ABI as typed Python functions with keyword arguments.

``csrc/api/quanto_kernels.h`` is the source of truth (docs/architecture.md). ``DECLARATIONS`` below
restates its functions, and the constants below restate its enums and ``#define``s;
``tests/test_abi_header.py`` reads the header and fails on any difference (a function missing on
either side, another argument order, name or type, another return type, another constant value).
Adding an entry point to the header therefore means pasting its declaration here; nothing else.

Each declared function ``qk_<name>`` becomes ``<name>`` here, callable with keyword arguments only
(named as in the header; a name that is a Python keyword gets a trailing underscore: ``in`` ->
``in_``)::

    from quanto_kernels._native import abi
    abi.fp8_marlin_gemv(a=..., w=..., scales=..., bias=0, out=..., workspace=..., workspace_bytes=..., m=1,
                        n=4096, k=4096, dtype=abi.DTYPE_FLOAT16, device=0, stream=s)

Conventions, applied to every declaration:
  * an ``int32_t`` result is a ``qk_status`` (except ``qk_abi_version``): non-zero raises the mapped
    exception (errors.py) with the thread's ``qk_last_error()``;
  * a non-const ``int32_t*``/``int64_t*`` parameter is an output: the wrapper does not take it and
    returns its value (a tuple when there are several);
  * a ``const char*`` result is returned as ``str``; other results are returned as they are.

The module-level functions call the process-wide library (``loader.get_library()``, loaded on first
use); ``loader.NativeLibrary.abi`` holds the same functions bound to one particular library. A
function the loaded library does not export (built from older sources) raises NativeLibraryError
when it is called; the library still loads and every other function works.
"""

from __future__ import annotations

import ctypes
import keyword
from typing import Callable, Dict

from . import cdecl
from .errors import missing_symbol, raise_for_status

# ---------------------------------------------------------------------------- constants (header)

ABI_VERSION = 6  # QK_ABI_VERSION

STATUS_OK = 0
STATUS_INVALID_ARGUMENT = 1
STATUS_UNSUPPORTED = 2
STATUS_CUDA_ERROR = 3

DTYPE_FLOAT16 = 1
DTYPE_BFLOAT16 = 2

SCALE_PERM_NONE = 0
SCALE_PERM_BLOCK32 = 1
SCALE_PERM_BLOCK64 = 2

FP8_COMPUTE_NONE = 0
FP8_COMPUTE_MMA = 1
FP8_COMPUTE_WGMMA = 2

# ------------------------------------------------------------------------- functions (header)

DECLARATIONS = """
int32_t qk_abi_version(void);
const char* qk_build_info(void);
const char* qk_last_error(void);
int32_t qk_cuda_versions(int32_t* driver_version, int32_t* runtime_version);
int32_t qk_device_check(int32_t device);

int32_t qk_unpack(const void* in, void* out, int64_t numel, int32_t bits, int32_t device, void* stream);

int32_t qk_marlin_repack(const void* in, const void* perm, void* out, int64_t size_k, int64_t size_n,
                         int32_t num_bits, int32_t device, void* stream);

int32_t qk_fp8_marlin_dequantize(const void* w, const void* scales, void* out, int64_t n, int64_t k,
                                 int32_t dtype, int32_t device, void* stream);
int32_t qk_fp8_marlin_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
int32_t qk_fp8_marlin_gemv(const void* a, const void* w, const void* scales, const void* bias, void* out,
                           void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                           int32_t dtype, int32_t device, void* stream);
int32_t qk_fp8_marlin_mm_available(int32_t device, int32_t* available);
int32_t qk_fp8_marlin_mm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
int32_t qk_fp8_marlin_mm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                         void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                         int32_t dtype, int32_t device, void* stream);
int64_t qk_fp8_marlin_mm_max_m(void);

int32_t qk_int8_dequantize(const void* w, const void* scales, void* out, int64_t n, int64_t k,
                           int32_t dtype, int32_t device, void* stream);
int32_t qk_int8_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
int32_t qk_int8_gemv(const void* a, const void* w, const void* scales, const void* bias, void* out,
                     void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                     int32_t device, void* stream);
int32_t qk_int8_mm_available(int32_t device, int32_t* available);
int32_t qk_int8_mm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t device, int64_t* bytes);
int32_t qk_int8_mm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                   void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                   int32_t device, void* stream);
int64_t qk_int8_mm_max_m(void);
int32_t qk_int8_gemm_available(int32_t device, int32_t* available);
int32_t qk_int8_gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, int32_t dtype, int32_t device, int64_t* bytes);
int32_t qk_int8_gemm(const void* a, const void* w, const void* scales, const void* bias, void* out,
                     void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k, int32_t dtype,
                     int32_t device, void* stream);

int32_t qk_awq_int4_dequantize(const void* w, const void* scales, const void* zeros, void* out, int64_t n,
                               int64_t k, int64_t group_size, int32_t dtype, int32_t device, void* stream);
int32_t qk_awq_int4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int64_t group_size,
                                         int32_t device, int64_t* bytes);
int32_t qk_awq_int4_gemv(const void* a, const void* w, const void* scales, const void* zeros, void* out,
                         void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                         int64_t group_size, int32_t dtype, int32_t device, void* stream);

int32_t qk_marlin_int4_dequantize(const void* w, const void* scales, const void* zeros, void* out,
                                  int64_t n, int64_t k, int64_t group_size, int32_t scale_perm,
                                  int32_t dtype, int32_t device, void* stream);
int32_t qk_marlin_int4_gemv_workspace_bytes(int64_t m, int64_t n, int64_t k, int64_t group_size,
                                            int32_t device, int64_t* bytes);
int32_t qk_marlin_int4_gemv(const void* a, const void* w, const void* scales, const void* zeros, void* out,
                            void* workspace, int64_t workspace_bytes, int64_t m, int64_t n, int64_t k,
                            int64_t group_size, int32_t scale_perm, int32_t dtype, int32_t device,
                            void* stream);

int32_t qk_fp8_compute_kernel(int32_t device, int32_t* kernel);
int32_t qk_fp8_act_quant(const void* x, int64_t ldx, void* xq, void* xs, int64_t m, int64_t k, int32_t dtype,
                         int32_t device, void* stream);
int32_t qk_fp8_compute_gemm(const void* xq, const void* xs, const void* w, const void* scales, const void* bias,
                            void* out, int64_t m, int64_t n, int64_t k, int32_t dtype, int32_t device,
                            void* stream);

int64_t qk_max_gemv_m(void);
int64_t qk_fp8_marlin_max_gemv_m(void);
int64_t qk_int8_max_gemv_m(void);
"""

FUNCTIONS: Dict[str, cdecl.Function] = {f.name: f for f in cdecl.parse_functions(DECLARATIONS)}
NOT_A_STATUS = frozenset({"qk_abi_version"})

_CTYPES = {
    "void": None,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "void*": ctypes.c_void_p,
    "const void*": ctypes.c_void_p,
    "const char*": ctypes.c_char_p,
    "int32_t*": ctypes.POINTER(ctypes.c_int32),
    "int64_t*": ctypes.POINTER(ctypes.c_int64),
}
_OUTPUTS = {"int32_t*": "_c_int32", "int64_t*": "_c_int64"}


def python_name(c_name: str) -> str:
    """The Python keyword argument for a C parameter name."""
    return c_name + "_" if keyword.iskeyword(c_name) else c_name


def public_name(fn: cdecl.Function) -> str:
    return fn.name[3:] if fn.name.startswith("qk_") else fn.name


def returns_status(fn: cdecl.Function) -> bool:
    return fn.restype == "int32_t" and fn.name not in NOT_A_STATUS


def ctypes_signature(fn: cdecl.Function):
    """(restype, argtypes) for ctypes; KeyError for a C type this module has no mapping for."""
    return _CTYPES[fn.restype], [_CTYPES[p.ctype] for p in fn.params]


def _missing(fn: cdecl.Function, path) -> Callable:
    def call(**_kwargs):
        raise missing_symbol(fn.name, path)

    call.__name__ = public_name(fn)
    call.__qualname__ = public_name(fn)
    return call


def bind(fn: cdecl.Function, cdll, path, last_error: Callable[[], str]) -> Callable:
    """A keyword-only Python function calling `fn` in `cdll` (generated once per library and function)."""
    try:
        cfunc = getattr(cdll, fn.name)
    except AttributeError:
        return _missing(fn, path)
    cfunc.restype, cfunc.argtypes = ctypes_signature(fn)
    inputs = [python_name(p.name) for p in fn.params if p.ctype not in _OUTPUTS]
    outputs = [python_name(p.name) for p in fn.params if p.ctype in _OUTPUTS]
    lines = [f"def {public_name(fn)}({'*, ' if inputs else ''}{', '.join(inputs)}):"]
    for p in fn.params:
        if p.ctype in _OUTPUTS:
            lines.append(f"    {python_name(p.name)} = {_OUTPUTS[p.ctype]}(0)")
    args = ", ".join(f"_byref({python_name(p.name)})" if p.ctype in _OUTPUTS else python_name(p.name)
                     for p in fn.params)
    lines.append(f"    result = _cfunc({args})")
    if returns_status(fn):
        lines.append("    if result:")
        lines.append(f"        _raise({fn.name!r}, result, _last_error())")
        if len(outputs) == 1:
            lines.append(f"    return {outputs[0]}.value")
        elif outputs:
            lines.append(f"    return ({', '.join(o + '.value' for o in outputs)},)")
        else:
            lines.append("    return None")
    elif fn.restype == "const char*":
        lines.append("    return (result or b'').decode('utf-8', 'replace')")
    else:
        lines.append("    return result")
    namespace = {"_cfunc": cfunc, "_raise": raise_for_status, "_last_error": last_error, "_byref": ctypes.byref,
                 "_c_int32": ctypes.c_int32, "_c_int64": ctypes.c_int64}
    exec(compile("\n".join(lines), f"<quanto_kernels abi: {fn.name}>", "exec"), namespace)  # noqa: S102
    wrapper = namespace[public_name(fn)]
    wrapper.__doc__ = f"Calls {fn.name}({', '.join(f'{p.ctype} {p.name}' for p in fn.params)}) -> {fn.restype}."
    return wrapper


_BY_PUBLIC_NAME = {public_name(f): f for f in FUNCTIONS.values()}


class BoundAbi:
    """The declared functions bound to one loaded library (built on first use of each)."""

    def __init__(self, cdll, path):
        self._cdll, self._path = cdll, path
        self._last_error = bind(FUNCTIONS["qk_last_error"], cdll, path, lambda: "")

    def __getattr__(self, name: str):
        fn = _BY_PUBLIC_NAME.get(name)
        if fn is None:
            raise AttributeError(f"the C ABI declares no function qk_{name}")
        wrapper = bind(fn, self._cdll, self._path, self._last_error)
        setattr(self, name, wrapper)
        return wrapper

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(_BY_PUBLIC_NAME))

    def exports(self, name: str) -> bool:
        """Whether the library has the entry point `name` (public name, e.g. "int8_gemv")."""
        return hasattr(self._cdll, "qk_" + name)


def __getattr__(name: str):
    """``abi.<function>``: the function bound to the process-wide library (cached here after first use)."""
    if name not in _BY_PUBLIC_NAME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .loader import get_library

    wrapper = getattr(get_library().abi, name)
    globals()[name] = wrapper
    return wrapper


def __dir__():
    return sorted(set(globals()) | set(_BY_PUBLIC_NAME))
