"""Finds and loads the native library (plain C ABI) with ctypes.

The library is only ever loaded from this package's directory, by absolute path. A wheel may hold
one build per CUDA major (``libquanto_kernels_cu12.so``, ``..._cu13.so``; ``quanto_kernels_cuNN.dll``
on Windows); we pick the newest one the installed *driver* supports, because a CUDA 13 build
(static runtime) cannot run on a driver older than 580.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, Optional

from . import _binfile

PACKAGE_DIR = Path(__file__).resolve().parent
ENV_CUDA_MAJOR = "QUANTO_KERNELS_CUDA_MAJOR"

# Oldest driver (as cuDriverGetVersion reports it) that runs a build of each CUDA major, with the
# Linux driver release users recognise.
MIN_DRIVER = {12: (12000, "525.60.13"), 13: (13000, "580")}

STATUS_OK, STATUS_INVALID_ARGUMENT, STATUS_UNSUPPORTED, STATUS_CUDA_ERROR = 0, 1, 2, 3
DTYPE_FLOAT16, DTYPE_BFLOAT16 = 1, 2


class NativeLibraryError(RuntimeError):
    """The native library could not be found, chosen or loaded."""


def _is_windows(platform: Optional[str] = None) -> bool:
    return (platform or sys.platform).startswith("win")


def library_pattern(platform: Optional[str] = None) -> "re.Pattern[str]":
    if _is_windows(platform):
        return re.compile(r"^quanto_kernels_cu(\d+)\.dll$")
    return re.compile(r"^libquanto_kernels_cu(\d+)\.so$")


def find_candidates(directory: Path = PACKAGE_DIR, platform: Optional[str] = None) -> Dict[int, Path]:
    """CUDA major -> absolute path of each library build present in `directory`."""
    pattern = library_pattern(platform)
    found = {}
    if directory.is_dir():
        for entry in directory.iterdir():
            match = pattern.match(entry.name)
            if match and entry.is_file():
                found[int(match.group(1))] = entry.resolve()
    return found


def driver_cuda_version(platform: Optional[str] = None) -> Optional[int]:
    """CUDA version the installed driver supports (e.g. 13000), asked of the driver itself; None without a driver."""
    names = ["nvcuda.dll"] if _is_windows(platform) else ["libcuda.so.1", "libcuda.so"]
    for name in names:
        try:
            libcuda = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
                return version.value
        except AttributeError:
            continue
    return None


def _describe_driver(version: Optional[int]) -> str:
    if version is None:
        return "no NVIDIA driver found (libcuda / nvcuda.dll did not load)"
    return f"NVIDIA driver supporting CUDA {version // 1000}.{(version % 1000) // 10}"


def choose_library(candidates: Dict[int, Path], driver_version: Optional[int], override: Optional[str] = None) -> Path:
    """Picks the build to load: the override if given, else the newest CUDA major the driver runs.

    Without a driver the newest build is chosen: the library still loads, and its calls report
    that no GPU is usable.
    """
    if not candidates:
        raise NativeLibraryError(
            f"quanto-kernels: no native library in {PACKAGE_DIR} (looked for "
            f"{library_pattern().pattern}). The installation is incomplete: reinstall with "
            "`pip install --force-reinstall quanto-kernels`, or build from source with nvcc available."
        )
    available = ", ".join(f"CUDA {m} ({p.name})" for m, p in sorted(candidates.items()))
    if override:
        try:
            major = int(override)
        except ValueError:
            raise NativeLibraryError(f"{ENV_CUDA_MAJOR}={override!r} is not a CUDA major version (e.g. 12 or 13)")
        if major not in candidates:
            raise NativeLibraryError(f"{ENV_CUDA_MAJOR}={override} but this installation has only: {available}")
        return candidates[major]
    if driver_version is None:
        return candidates[max(candidates)]
    usable = [m for m in candidates if driver_version >= MIN_DRIVER.get(m, (m * 1000, "?"))[0]]
    if not usable:
        oldest = min(candidates)
        need = MIN_DRIVER.get(oldest, (oldest * 1000, "a newer release"))[1]
        raise NativeLibraryError(
            f"quanto-kernels: the installed {_describe_driver(driver_version)} is too old for every build "
            f"here ({available}). Update the NVIDIA driver to {need} or newer."
        )
    return candidates[max(usable)]


def _declare(lib: ctypes.CDLL) -> None:
    """Declares the C signatures so ctypes converts (and checks) every argument."""
    p, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
    pi32, pi64 = ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64)
    signatures = {
        "qk_abi_version": (i32, []),
        "qk_build_info": (ctypes.c_char_p, []),
        "qk_last_error": (ctypes.c_char_p, []),
        "qk_cuda_versions": (i32, [pi32, pi32]),
        "qk_device_check": (i32, [i32]),
        "qk_max_gemv_m": (i64, []),
        "qk_fp8_marlin_max_gemv_m": (i64, []),
        "qk_unpack": (i32, [p, p, i64, i32, i32, p]),
        "qk_marlin_repack": (i32, [p, p, p, i64, i64, i32, i32, p]),
        "qk_fp8_marlin_dequantize": (i32, [p, p, p, i64, i64, i32, i32, p]),
        "qk_fp8_marlin_gemv_workspace_bytes": (i32, [i64, i64, i64, i32, pi64]),
        "qk_fp8_marlin_gemv": (i32, [p, p, p, p, p, i64, i64, i64, i64, i32, i32, p]),
        "qk_awq_int4_dequantize": (i32, [p, p, p, p, i64, i64, i64, i32, p]),
        "qk_awq_int4_gemv_workspace_bytes": (i32, [i64, i64, i64, i64, i32, pi64]),
        "qk_awq_int4_gemv": (i32, [p, p, p, p, p, p, i64, i64, i64, i64, i64, i32, p]),
        "qk_marlin_int4_dequantize": (i32, [p, p, p, p, i64, i64, i64, i32, i32, p]),
        "qk_marlin_int4_gemv_workspace_bytes": (i32, [i64, i64, i64, i64, i32, pi64]),
        "qk_marlin_int4_gemv": (i32, [p, p, p, p, p, p, i64, i64, i64, i64, i64, i32, i32, p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)  # AttributeError: an older/foreign library with this file name
        fn.restype = restype
        fn.argtypes = argtypes


EXPECTED_ABI = 1


class NativeLibrary:
    """A loaded library plus a `call` that turns status codes into Python exceptions."""

    def __init__(self, path: Path, cdll: ctypes.CDLL):
        self.path = path
        self.lib = cdll

    def last_error(self) -> str:
        return (self.lib.qk_last_error() or b"").decode("utf-8", "replace")

    def call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status == STATUS_OK:
            return
        message = f"quanto-kernels {name}: {self.last_error()}"
        if status == STATUS_INVALID_ARGUMENT:
            raise ValueError(message)
        if status == STATUS_UNSUPPORTED:
            raise NotImplementedError(message)
        raise RuntimeError(message)

    def build_info(self) -> str:
        return self.lib.qk_build_info().decode("utf-8", "replace")

    def cuda_versions(self):
        drv, rt = ctypes.c_int32(0), ctypes.c_int32(0)
        self.call("qk_cuda_versions", ctypes.byref(drv), ctypes.byref(rt))
        return drv.value, rt.value


def load_library(
    directory: Path = PACKAGE_DIR,
    platform: Optional[str] = None,
    cdll_factory: Callable[[str], ctypes.CDLL] = ctypes.CDLL,
    driver_version: Optional[int] = None,
    env: Optional[Dict[str, str]] = None,
) -> NativeLibrary:
    """Chooses and loads a build from `directory` (arguments exist so tests can plant files)."""
    env = os.environ if env is None else env
    candidates = find_candidates(directory, platform)
    if driver_version is None:
        driver_version = driver_cuda_version(platform)
    path = choose_library(candidates, driver_version, env.get(ENV_CUDA_MAJOR))
    bad = _binfile.problem(path)
    if bad is not None:
        raise NativeLibraryError(
            f"quanto-kernels: cannot use {path}: {bad}. Reinstall with `pip install --force-reinstall quanto-kernels` "
            "(a wheel for this platform), or build from source."
        )
    if _is_windows(platform):
        # Windows resolves a DLL's dependencies through registered directories, never PATH here.
        os.add_dll_directory(str(directory.resolve()))
    try:
        cdll = cdll_factory(str(path))
    except OSError as exc:
        raise NativeLibraryError(
            f"quanto-kernels: could not load {path}: {exc}. Found {_describe_driver(driver_version)}. "
            "The file may be truncated or built for another platform/architecture: reinstall with "
            "`pip install --force-reinstall quanto-kernels`."
        ) from exc
    try:
        _declare(cdll)
        abi = cdll.qk_abi_version()
    except AttributeError as exc:
        raise NativeLibraryError(f"quanto-kernels: {path} is not a quanto-kernels library ({exc})") from exc
    if abi != EXPECTED_ABI:
        raise NativeLibraryError(f"quanto-kernels: {path} has C ABI {abi}, this package needs {EXPECTED_ABI}; reinstall")
    return NativeLibrary(path, cdll)


_lock = threading.Lock()
_cached: Optional[NativeLibrary] = None
_cached_error: Optional[NativeLibraryError] = None


def get_library() -> NativeLibrary:
    """The process-wide library, loaded on first use; raises NativeLibraryError with the reason."""
    global _cached, _cached_error
    if _cached is not None:
        return _cached
    with _lock:
        if _cached is None:
            if _cached_error is not None:
                raise _cached_error
            try:
                _cached = load_library()
            except NativeLibraryError as exc:
                _cached_error = exc
                raise
    return _cached
