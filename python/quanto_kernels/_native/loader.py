"""Finds, chooses and loads the native library (plain C ABI) with ctypes.

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
from .abi import ABI_VERSION, BoundAbi
from .errors import NativeLibraryError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the quanto_kernels package: libraries live there
ENV_CUDA_MAJOR = "QUANTO_KERNELS_CUDA_MAJOR"

# Oldest driver (as cuDriverGetVersion reports it) that runs a build of each CUDA major, with the
# Linux driver release users recognise.
MIN_DRIVER = {12: (12000, "525.60.13"), 13: (13000, "580")}

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


class NativeLibrary:
    """A loaded library: its path, the raw ctypes handle and its C ABI as Python functions (``abi``)."""

    def __init__(self, path: Path, cdll: ctypes.CDLL):
        self.path = path
        self.lib = cdll  # raw handle, for tests of the C entry points themselves
        self.abi = BoundAbi(cdll, path)


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
    if not hasattr(cdll, "qk_abi_version") or not hasattr(cdll, "qk_last_error"):
        raise NativeLibraryError(f"quanto-kernels: {path} is not a quanto-kernels library (no qk_abi_version)")
    lib = NativeLibrary(path, cdll)
    version = lib.abi.abi_version()
    if version != ABI_VERSION:
        raise NativeLibraryError(
            f"quanto-kernels: {path} has C ABI {version}, this package needs {ABI_VERSION}; reinstall"
        )
    return lib


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
