"""Loader: finding, choosing and loading the native library (CPU only)."""

import ctypes
import ctypes.util
import json
import os
import shutil

import pytest

from quanto_kernels._native import abi
from quanto_kernels._native import loader as _loader
from quanto_kernels._native.loader import NativeLibraryError, choose_library, load_library


def test_installed_library_loads_from_package_dir():
    lib = _loader.get_library()
    assert lib.path.is_absolute()
    assert lib.path.parent == _loader.PACKAGE_DIR
    assert lib.lib.qk_abi_version() == abi.ABI_VERSION
    info = json.loads(lib.abi.build_info())
    assert info["abi"] == abi.ABI_VERSION
    assert info["cuda_runtime"] >= 12000
    assert info["archs"] and info["version"]


def test_cuda_versions_work_without_gpu():
    driver, runtime = _loader.get_library().abi.cuda_versions()
    assert runtime >= 12000
    assert driver >= 0  # 0 when no driver is installed


def test_missing_library_says_what_it_looked_for(tmp_path):
    with pytest.raises(NativeLibraryError, match=r"no native library in .*quanto_kernels_cu"):
        load_library(directory=tmp_path, driver_version=13000)


def test_garbage_file_gives_clear_error(tmp_path):
    (tmp_path / "libquanto_kernels_cu13.so").write_bytes(b"\x7fELF not really a library" * 10)
    with pytest.raises(NativeLibraryError, match="cannot use .*libquanto_kernels_cu13.so.*Reinstall"):
        load_library(directory=tmp_path, driver_version=13000, platform="linux")


def test_truncated_library_gives_clear_error(tmp_path):
    real = _loader.get_library().path
    (tmp_path / real.name).write_bytes(real.read_bytes()[:8192])
    # Loading this would kill the process with SIGBUS: it must be refused before dlopen.
    with pytest.raises(NativeLibraryError, match="is truncated"):
        load_library(directory=tmp_path, driver_version=13000)


def test_wrong_architecture_library_gives_clear_error(tmp_path):
    # A library for another machine (aarch64 header) is refused before the dynamic loader sees it.
    path = _loader.get_library().path
    real = bytearray(path.read_bytes())
    if real[:2] == b"MZ":  # Windows: PE machine field
        machine_at = int.from_bytes(real[0x3C:0x40], "little") + 4
        real[machine_at:machine_at + 2] = (0xAA64).to_bytes(2, "little")
    else:
        real[18:20] = (183).to_bytes(2, "little")  # e_machine = EM_AARCH64
    (tmp_path / path.name).write_bytes(bytes(real))
    with pytest.raises(NativeLibraryError, match="built for aarch64, but this machine is x86_64"):
        load_library(directory=tmp_path, driver_version=13000)


def test_planted_windows_dll_for_another_arch_is_refused(tmp_path):
    from quanto_kernels._native import _binfile

    pe = bytearray(512)
    pe[:2] = b"MZ"
    pe[0x3C:0x40] = (64).to_bytes(4, "little")
    pe[64:68] = b"PE\0\0"
    pe[68:70] = (0xAA64).to_bytes(2, "little")
    (tmp_path / "quanto_kernels_cu13.dll").write_bytes(bytes(pe))
    assert "built for aarch64" in _binfile.problem(tmp_path / "quanto_kernels_cu13.dll", host="x86_64")


def test_loader_never_dlopens_a_refused_file(tmp_path):
    (tmp_path / "libquanto_kernels_cu13.so").write_bytes(b"")
    opened = []
    with pytest.raises(NativeLibraryError, match="truncated or empty"):
        load_library(directory=tmp_path, driver_version=13000, cdll_factory=opened.append, platform="linux")
    assert opened == []


def test_foreign_library_is_refused(tmp_path):
    libm = ctypes.util.find_library("m")
    path = next((p for p in (f"/lib/x86_64-linux-gnu/{libm}", f"/usr/lib/x86_64-linux-gnu/{libm}") if os.path.exists(p)), None)
    if path is None:
        pytest.skip("no libm file to plant")
    shutil.copy(path, tmp_path / "libquanto_kernels_cu13.so")
    with pytest.raises(NativeLibraryError, match="not a quanto-kernels library"):
        load_library(directory=tmp_path, driver_version=13000)


@pytest.mark.parametrize(
    "driver, override, expected",
    [(13000, None, 13), (13020, None, 13), (12080, None, 12), (12000, None, 12), (None, None, 13),
     (13000, "12", 12), (12040, "13", 13)],
)
def test_choice_follows_driver(tmp_path, driver, override, expected):
    cands = {12: tmp_path / "libquanto_kernels_cu12.so", 13: tmp_path / "libquanto_kernels_cu13.so"}
    assert choose_library(cands, driver, override) == cands[expected]


def test_driver_too_old_names_the_fix(tmp_path):
    cands = {12: tmp_path / "a", 13: tmp_path / "b"}
    with pytest.raises(NativeLibraryError, match=r"CUDA 11\.8 is too old.*525\.60\.13"):
        choose_library(cands, 11080, None)


@pytest.mark.parametrize("override, message", [("11", "has only"), ("cuda13", "not a CUDA major")])
def test_bad_override(tmp_path, override, message):
    with pytest.raises(NativeLibraryError, match=message):
        choose_library({13: tmp_path / "b"}, 13000, override)


def test_candidates_ignore_other_files(tmp_path):
    for name in ("libquanto_kernels_cu12.so", "libquanto_kernels_cu13.so.bak", "quanto_kernels_cu13.dll", "x.so"):
        (tmp_path / name).write_bytes(b"")
    assert set(_loader.find_candidates(tmp_path, "linux")) == {12}
    assert set(_loader.find_candidates(tmp_path, "win32")) == {13}


class _FakeFn:
    def __init__(self, result):
        self.result, self.restype, self.argtypes = result, None, None

    def __call__(self, *args):
        return self.result


class _FakeCDLL:
    def __init__(self, path):
        self.path = path

    def __getattr__(self, name):
        if not name.startswith("qk_"):
            raise AttributeError(name)
        fn = _FakeFn(abi.ABI_VERSION if name == "qk_abi_version" else 0)
        setattr(self, name, fn)
        return fn


def test_simulated_windows_uses_package_dir_and_absolute_path(tmp_path, monkeypatch):
    for name in ("quanto_kernels_cu12.dll", "quanto_kernels_cu13.dll"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(_loader._binfile, "problem", lambda path: None)  # the planted DLLs are empty
    registered, loaded = [], []
    monkeypatch.setattr(os, "add_dll_directory", registered.append, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))

    def factory(path):
        loaded.append(path)
        return _FakeCDLL(path)

    lib = load_library(directory=tmp_path, platform="win32", cdll_factory=factory, driver_version=12080, env={})
    assert registered == [str(tmp_path.resolve())]
    assert loaded == [str((tmp_path / "quanto_kernels_cu12.dll").resolve())]
    assert os.path.isabs(loaded[0])
    assert lib.path.name == "quanto_kernels_cu12.dll"


def test_driver_query_returns_version_or_none():
    version = _loader.driver_cuda_version()
    assert version is None or version >= 10000
