"""Release tooling: the wheel checker (scripts/check_wheel.py) and the CUDA redistributable installer
(scripts/ci/install_cuda_redist.py) used by the wheel workflow. CPU only, no network."""

import ctypes.util
import hashlib
import importlib.util
import io
import json
import os
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from quanto_kernels._native import loader as _loader

ROOT = Path(__file__).resolve().parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cw = _load("check_wheel", ROOT / "scripts" / "check_wheel.py")
redist = _load("install_cuda_redist", ROOT / "scripts" / "ci" / "install_cuda_redist.py")

RECORD = json.loads((_loader.PACKAGE_DIR / "build_record.json").read_text())


# ----------------------------------------------------------------------------- the installed libraries
@pytest.mark.parametrize("major", sorted(_loader.find_candidates()))
def test_installed_library_needs_only_the_operating_system(major):
    """On Linux: glibc only (no libcuda, no libcudart); on Windows: system DLLs only (static CRT and cudart)."""
    path = _loader.find_candidates()[major]
    entry = next(e for e in RECORD["libraries"] if e["file"] == path.name)
    shared_cxx = entry.get("cxx_runtime") == "libstdc++/libgcc shared"  # a source build without libstdc++.a
    problems, summary = cw.check_library(path.name, path.read_bytes(), allow_shared_cxx=shared_cxx)
    assert problems == [], summary


def _wheel(tmp_path, *, plat="manylinux_2_28_x86_64", license=True, record=None, libs=None, tag=None):
    libs = libs if libs is not None else {p.name: p.read_bytes() for p in _loader.find_candidates().values()}
    record = record if record is not None else RECORD
    path = tmp_path / f"quanto_kernels-0.1.0-py3-none-{plat}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in libs.items():
            z.writestr(f"quanto_kernels/{name}", data)
        z.writestr("quanto_kernels/build_record.json", json.dumps(record))
        z.writestr("quanto_kernels-0.1.0.dist-info/WHEEL",
                   f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag or 'py3-none-' + plat}\n")
        if license:
            z.writestr("quanto_kernels-0.1.0.dist-info/licenses/LICENSE", "Apache License")
    return path


@pytest.mark.skipif(sys.platform.startswith("win"), reason="plants the Linux library")
def test_checker_accepts_a_wheel_of_the_installed_build(tmp_path):
    allow = any(e.get("cxx_runtime") == "libstdc++/libgcc shared" for e in RECORD["libraries"])
    assert cw.check_wheel(_wheel(tmp_path), allow_shared_cxx=allow) == []


@pytest.mark.skipif(sys.platform.startswith("win"), reason="plants the Linux library")
@pytest.mark.parametrize(
    "change, problem",
    [
        (dict(plat="linux_x86_64"), "is not manylinux"),
        (dict(license=False), "no LICENSE"),
        (dict(record={"version": "0.1.0", "git_revision": "x", "libraries": []}), "build record lists []"),
        (dict(tag="cp312-cp312-manylinux_2_28_x86_64"), "not py3-none"),
    ],
)
def test_checker_names_what_is_wrong(tmp_path, change, problem):
    problems = cw.check_wheel(_wheel(tmp_path, **change), allow_shared_cxx=True)
    assert any(problem in p for p in problems), problems


@pytest.mark.skipif(sys.platform.startswith("win"), reason="plants the Linux library")
def test_checker_counts_cuda_majors_and_size(tmp_path):
    wheel = _wheel(tmp_path)
    majors = sorted(_loader.find_candidates())
    assert any("expected builds for CUDA [11]" in p for p in cw.check_wheel(wheel, expect_cuda=[11], allow_shared_cxx=True))
    assert cw.check_wheel(wheel, expect_cuda=majors, allow_shared_cxx=True) == []
    assert any("budget" in p for p in cw.check_wheel(wheel, max_mb=0.001, allow_shared_cxx=True))


def test_elf_outside_glibc_is_reported():
    name = ctypes.util.find_library("stdc++")
    path = next((Path(d) / name for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64")
                 if name and (Path(d) / name).is_file()), None)
    if path is None:
        pytest.skip("no libstdc++ file to inspect")
    dyn = cw.elf_dynamic(path.read_bytes())
    assert "libc.so.6" in dyn["needed"] and dyn["soname"] == "libstdc++.so.6"
    problems, _ = cw.check_library("libquanto_kernels_cu13.so", path.read_bytes(), allow_shared_cxx=False)
    assert any("outside glibc" in p and "libgcc_s.so.1" in p for p in problems), problems


def _pe(imports, delay=(), machine=0x8664):
    """A minimal PE32+ image with one section holding an import table (and optionally a delay-load table)."""
    sect_rva, sect_raw, size = 0x1000, 0x200, 0x400
    body = bytearray(size)
    strings_at = 0x200
    desc_at, delay_at = 0x0, 0x100
    cursor = strings_at
    for i, dll in enumerate(imports):
        body[cursor:cursor + len(dll) + 1] = dll.encode() + b"\0"
        struct.pack_into("<5I", body, desc_at + 20 * i, 0, 0, 0, sect_rva + cursor, 0)
        cursor += len(dll) + 1
    for i, dll in enumerate(delay):
        body[cursor:cursor + len(dll) + 1] = dll.encode() + b"\0"
        struct.pack_into("<8I", body, delay_at + 32 * i, 1, sect_rva + cursor, 0, 0, 0, 0, 0, 0)
        cursor += len(dll) + 1
    head = bytearray(sect_raw)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x40)
    head[0x40:0x44] = b"PE\0\0"
    opt_size = 112 + 16 * 8
    struct.pack_into("<HHIIIHH", head, 0x44, machine, 1, 0, 0, 0, opt_size, 0x2022)
    opt = 0x58
    struct.pack_into("<H", head, opt, 0x20B)
    struct.pack_into("<I", head, opt + 108, 16)
    struct.pack_into("<II", head, opt + 112 + 8 * 1, sect_rva + desc_at, 20 * (len(imports) + 1))
    if delay:
        struct.pack_into("<II", head, opt + 112 + 8 * 13, sect_rva + delay_at, 32 * (len(delay) + 1))
    table = opt + opt_size
    head[table:table + 8] = b".rdata\0\0"
    struct.pack_into("<IIII", head, table + 8, size, sect_rva, size, sect_raw)
    return bytes(head + body)


def test_pe_imports_are_read():
    pe = _pe(["KERNEL32.dll", "ADVAPI32.dll"], delay=["SHELL32.dll"])
    assert cw.pe_imports(pe) == {"machine": 0x8664, "imports": ["KERNEL32.dll", "ADVAPI32.dll"],
                                 "delay_imports": ["SHELL32.dll"]}
    assert cw.check_library("quanto_kernels_cu13.dll", pe, False)[0] == []


@pytest.mark.parametrize("dll", ["VCRUNTIME140.dll", "MSVCP140.dll", "api-ms-win-crt-runtime-l1-1-0.dll",
                                 "cudart64_13.dll", "nvcuda.dll"])
def test_pe_dynamic_runtime_is_refused(dll):
    problems, _ = cw.check_library("quanto_kernels_cu13.dll", _pe(["KERNEL32.dll", dll]), False)
    assert any(dll in p for p in problems), problems


def test_pe_for_another_machine_is_refused():
    problems, _ = cw.check_library("quanto_kernels_cu13.dll", _pe(["KERNEL32.dll"], machine=0xAA64), False)
    assert any("not an x64 image" in p for p in problems)


def test_sdist_check(tmp_path):
    def sdist(members):
        path = tmp_path / "quanto_kernels-0.1.0.tar.gz"
        with tarfile.open(path, "w:gz") as t:
            for name in members:
                data = b"x"
                info = tarfile.TarInfo(f"quanto_kernels-0.1.0/{name}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return path

    complete = list(cw.SDIST_REQUIRED) + ["csrc/pack/unpack.cu", "tests/test_packaging.py"]
    assert cw.check_sdist(sdist(complete)) == []
    problems = cw.check_sdist(sdist([m for m in complete if m != "CMakeLists.txt"] + ["python/quanto_kernels/x.so"]))
    assert any("CMakeLists.txt" in p for p in problems) and any("x.so" in p for p in problems)


# ------------------------------------------------------------------------ CUDA redistributable installer
def _redist(tmp_path, components, plat="linux-x86_64", corrupt=None, evil=False):
    base = tmp_path / "redist"
    manifest = {"release_label": "13.0.2"}
    for name, files in components.items():
        top = f"{name}-{plat}-1.0-archive"
        rel = f"{name}/{plat}/{top}.{'zip' if plat.startswith('windows') else 'tar.xz'}"
        archive = base / rel
        archive.parent.mkdir(parents=True, exist_ok=True)
        if plat.startswith("windows"):
            with zipfile.ZipFile(archive, "w") as z:
                for f, data in files.items():
                    z.writestr(f"{top}/{f}", data)
                if evil:
                    z.writestr("../escape.txt", "x")
        else:
            with tarfile.open(archive, "w:xz") as t:
                for f, data in files.items():
                    info = tarfile.TarInfo(f"{top}/{f}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data.encode()))
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if corrupt == name:
            digest = "0" * 64
        manifest[name] = {"name": name, "version": "1.0", plat: {"relative_path": rel, "sha256": digest}}
    (base / "redistrib_13.0.2.json").write_text(json.dumps(manifest))
    return base


BASIC = {
    "cuda_nvcc": {"bin/nvcc": "x", "bin/nvcc.exe": "x", "bin/ptxas": "x", "bin/ptxas.exe": "x", "nvvm/bin/cicc": "x",
                  "nvvm/bin/cicc.exe": "x"},
    "cuda_cudart": {"lib/x64/cudart_static.lib": "a", "lib/libcudart_static.a": "a", "include/cuda_runtime.h": "h",
                    "include/cuda_fp16.h": "h"},
    "cuda_cccl": {"include/nv/target": "h"},
}
CRT = {"cuda_crt": {"include/crt/host_config.h": "h"}}


@pytest.mark.parametrize("plat", ["linux-x86_64", "windows-x86_64"])
def test_redist_install_merges_components(tmp_path, plat):
    base = _redist(tmp_path, {**BASIC, **CRT}, plat=plat)
    dest = tmp_path / "cuda"
    got = redist.install("13.0.2", dest, plat, str(base))
    assert set(got) == {"cuda_nvcc", "cuda_cudart", "cuda_cccl", "cuda_crt"}  # crt: optional, listed in 13.0
    for f in ("bin/nvcc", "lib/x64/cudart_static.lib", "include/nv/target", "include/crt/host_config.h"):
        assert (dest / f).is_file(), f
    if plat.startswith("linux"):  # where nvcc.profile looks
        assert (dest / "targets/x86_64-linux/include/crt/host_config.h").is_file()
        assert (dest / "targets/x86_64-linux/lib/libcudart_static.a").is_file()


def test_redist_reports_what_is_still_missing(tmp_path):
    base = _redist(tmp_path, BASIC)  # no cuda_crt: crt/host_config.h missing (CUDA 13 splits it out)
    with pytest.raises(SystemExit, match=r"still missing: \['include/crt/host_config.h'\].*cuda_cccl"):
        redist.install("13.0.2", tmp_path / "cuda", "linux-x86_64", str(base))


def test_redist_refuses_a_bad_checksum(tmp_path):
    base = _redist(tmp_path, {**BASIC, **CRT}, corrupt="cuda_cudart")
    with pytest.raises(SystemExit, match="SHA-256"):
        redist.install("13.0.2", tmp_path / "cuda", "linux-x86_64", str(base))


def test_redist_refuses_a_missing_component(tmp_path):
    base = _redist(tmp_path, {k: v for k, v in {**BASIC, **CRT}.items() if k != "cuda_cccl"})
    with pytest.raises(SystemExit, match="no cuda_cccl"):
        redist.install("13.0.2", tmp_path / "cuda", "linux-x86_64", str(base))


def test_redist_refuses_paths_outside_the_archive(tmp_path):
    base = _redist(tmp_path, {**BASIC, **CRT}, plat="windows-x86_64", evil=True)
    with pytest.raises(SystemExit, match="unsafe member"):
        redist.install("13.0.2", tmp_path / "cuda", "windows-x86_64", str(base))
    assert not (tmp_path / "escape.txt").exists()


def test_redist_platform_key():
    expected = "windows-x86_64" if os.name == "nt" else "linux-x86_64"
    assert redist.default_platform() == expected
