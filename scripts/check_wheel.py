"""Checks built quanto-kernels distributions: a wheel's tag, contents, build record and what each native
library needs; an sdist's completeness.

  python scripts/check_wheel.py dist/quanto_kernels-*.whl [--expect-cuda 12,13] [--copy-to DIR]
  python scripts/check_wheel.py dist/quanto_kernels-*.tar.gz

* the file name is py3-none-<platform> (manylinux_* or win_amd64 unless --allow-plain-linux);
* the wheel holds LICENSE, build_record.json and exactly the libraries the record lists, one per CUDA
  major, each with its CUDA version, architectures and the git revision;
* every library needs nothing outside the operating system: on Linux only glibc's libraries (libcuda
  is loaded at run time by the static CUDA runtime, so it must not be NEEDED); on Windows only system
  DLLs (no VCRUNTIME/MSVCP/UCRT: the C runtime is static; no cudart64_*.dll, no nvcuda.dll import);
* the wheel is at most --max-mb megabytes (default 100);
* an sdist holds everything a source build needs (CMakeLists.txt, csrc/, setup.py, LICENSE, the git
  revision, the tests) and no build output.

Standard library only: it runs inside the manylinux container and on the Windows runner as
cibuildwheel's repair step (--copy-to puts the checked wheel where cibuildwheel expects it).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL_RE = re.compile(r"^quanto_kernels-(?P<version>[^-]+)-py3-none-(?P<plat>[A-Za-z0-9_.]+)\.whl$")
LIB_RE = re.compile(r"^quanto_kernels/(lib)?quanto_kernels_cu(\d+)\.(so|dll)$")

# glibc's own libraries: present on every Linux system the manylinux tag admits.
ELF_ALLOWED = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2"}
ELF_CXX_RUNTIME = {"libstdc++.so.6", "libgcc_s.so.1"}
# Windows system DLLs (lower case). Not allowed: vcruntime*, msvcp*, ucrtbase, api-ms-win-crt-* (a
# dynamic C runtime), cudart64_* (a dynamic CUDA runtime), nvcuda.dll (must be loaded at run time).
PE_ALLOWED = {"kernel32.dll", "user32.dll", "advapi32.dll", "shell32.dll", "ole32.dll", "oleaut32.dll",
              "ws2_32.dll", "bcrypt.dll", "ntdll.dll", "version.dll", "setupapi.dll", "shlwapi.dll",
              "cfgmgr32.dll", "dbghelp.dll", "crypt32.dll", "psapi.dll", "secur32.dll", "rpcrt4.dll",
              "gdi32.dll", "comdlg32.dll", "iphlpapi.dll", "powrprof.dll"}
PE_ALLOWED_PATTERNS = ["api-ms-win-core-*", "api-ms-win-security-*", "api-ms-win-eventing-*"]


# --------------------------------------------------------------------------------------------- ELF
def elf_dynamic(data: bytes) -> dict:
    """NEEDED, SONAME, RPATH/RUNPATH of a 64-bit little-endian ELF shared object."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = {"needed": [], "soname": None, "rpath": None, "runpath": None}
    for _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link]
        str_off = strtab[4]

        def string(at):
            end = data.index(b"\0", str_off + at)
            return data[str_off + at:end].decode()

        for pos in range(offset, offset + size, entsize or 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:
                out["needed"].append(string(val))
            elif tag == 14:
                out["soname"] = string(val)
            elif tag == 15:
                out["rpath"] = string(val)
            elif tag == 29:
                out["runpath"] = string(val)
    return out


# ---------------------------------------------------------------------------------------------- PE
def pe_imports(data: bytes) -> dict:
    """Imported and delay-loaded DLL names of a PE32+ (x64) image."""
    if data[:2] != b"MZ":
        raise ValueError("not a PE file")
    lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    if data[lfanew:lfanew + 4] != b"PE\0\0":
        raise ValueError("not a PE file")
    machine, nsections = struct.unpack_from("<HH", data, lfanew + 4)
    opt_size = struct.unpack_from("<H", data, lfanew + 20)[0]
    opt = lfanew + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    if magic != 0x20B:
        raise ValueError(f"not a PE32+ image (optional header magic 0x{magic:x})")
    ndirs = struct.unpack_from("<I", data, opt + 108)[0]
    dirs = [struct.unpack_from("<II", data, opt + 112 + 8 * i) for i in range(ndirs)]
    table = opt + opt_size
    sections = []
    for i in range(nsections):
        vsize, vaddr, raw_size, raw_ptr = struct.unpack_from("<IIII", data, table + 40 * i + 8)
        sections.append((vaddr, max(vsize, raw_size), raw_ptr))

    def offset(rva):
        for vaddr, size, raw_ptr in sections:
            if vaddr <= rva < vaddr + size:
                return raw_ptr + rva - vaddr
        raise ValueError(f"RVA 0x{rva:x} is in no section")

    def cstring(rva):
        at = offset(rva)
        return data[at:data.index(b"\0", at)].decode("ascii", "replace")

    def names(dir_index, entry_size, name_field):
        if dir_index >= len(dirs) or dirs[dir_index][0] == 0:
            return []
        pos, found = offset(dirs[dir_index][0]), []
        while True:
            entry = struct.unpack_from(f"<{entry_size // 4}I", data, pos)
            if not any(entry):
                return found
            found.append(cstring(entry[name_field]))
            pos += entry_size

    return {"machine": machine, "imports": names(1, 20, 3), "delay_imports": names(13, 32, 1)}


# ------------------------------------------------------------------------------------------- wheel
def check_library(name: str, data: bytes, allow_shared_cxx: bool) -> tuple[list[str], str]:
    problems = []
    if name.endswith(".so"):
        dyn = elf_dynamic(data)
        allowed = ELF_ALLOWED | (ELF_CXX_RUNTIME if allow_shared_cxx else set())
        outside = [n for n in dyn["needed"] if n not in allowed]
        if outside:
            problems.append(f"{name} needs libraries outside glibc: {outside}")
        if any(n.startswith(("libcuda.", "libcudart.")) for n in dyn["needed"]):
            problems.append(f"{name} links the CUDA driver/runtime dynamically: {dyn['needed']}")
        for key in ("rpath", "runpath"):
            if dyn[key]:
                problems.append(f"{name} has {key.upper()} {dyn[key]!r}")
        return problems, f"NEEDED {dyn['needed']}"
    pe = pe_imports(data)
    if pe["machine"] != 0x8664:
        problems.append(f"{name} is not an x64 image (machine 0x{pe['machine']:x})")
    deps = pe["imports"] + pe["delay_imports"]
    outside = [d for d in deps if d.lower() not in PE_ALLOWED
               and not any(fnmatch.fnmatch(d.lower(), p) for p in PE_ALLOWED_PATTERNS)]
    if outside:
        problems.append(f"{name} imports DLLs outside Windows itself: {outside}")
    return problems, f"imports {pe['imports']}" + (f", delay-loads {pe['delay_imports']}" if pe["delay_imports"] else "")


def check_wheel(path: Path, expect_cuda=None, max_mb=100.0, allow_plain_linux=False, allow_shared_cxx=False,
                require_git_rev=False) -> list[str]:
    problems = []
    m = WHEEL_RE.match(path.name)
    if not m:
        return [f"{path.name}: not a py3-none-<platform> quanto_kernels wheel name"]
    plat = m.group("plat")
    if plat == "win_amd64":
        system = "windows"
    elif re.fullmatch(r"(manylinux_2_\d+_x86_64|manylinux2014_x86_64)(\.manylinux_2_\d+_x86_64)*", plat) or (
            allow_plain_linux and plat == "linux_x86_64"):
        system = "linux"
    else:
        return [f"{path.name}: platform tag {plat!r} is not manylinux_*_x86_64 or win_amd64"]
    size_mb = path.stat().st_size / 1e6
    print(f"{path.name}: {size_mb:.1f} MB")
    if size_mb > max_mb:
        problems.append(f"{path.name} is {size_mb:.1f} MB, over the {max_mb:g} MB budget")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        dist_info = f"quanto_kernels-{m.group('version')}.dist-info"
        wheel_meta = z.read(f"{dist_info}/WHEEL").decode()
        if "Root-Is-Purelib: false" not in wheel_meta:
            problems.append("WHEEL says Root-Is-Purelib is not false")
        tags = re.findall(r"^Tag: (.+)$", wheel_meta, re.M)
        if not tags or any(not t.startswith("py3-none-") for t in tags):
            problems.append(f"WHEEL tags are not py3-none-*: {tags}")
        if not any(n.startswith(f"{dist_info}/licenses/LICENSE") for n in names):
            problems.append("no LICENSE under the dist-info licenses/ folder")
        libs = {mm.group(0).split("/", 1)[1]: int(mm.group(2)) for n in names if (mm := LIB_RE.match(n))}
        wrong_os = [n for n in libs if n.endswith(".dll" if system == "linux" else ".so")]
        if wrong_os:
            problems.append(f"libraries for the other OS: {wrong_os}")
        try:
            record = json.loads(z.read("quanto_kernels/build_record.json"))
        except KeyError:
            return problems + ["no quanto_kernels/build_record.json"]
        recorded = {lib["file"]: lib for lib in record.get("libraries", [])}
        if set(recorded) != set(libs):
            problems.append(f"build record lists {sorted(recorded)}, the wheel holds {sorted(libs)}")
        for file, major in sorted(libs.items()):
            info = recorded.get(file, {})
            if info.get("cuda_major") != major or not str(info.get("cuda_version", "")).startswith(f"{major}."):
                problems.append(f"{file}: build record says CUDA {info.get('cuda_version')} (major {info.get('cuda_major')})")
            if not info.get("archs"):
                problems.append(f"{file}: no architectures in the build record")
            lib_problems, summary = check_library(file, z.read(f"quanto_kernels/{file}"), allow_shared_cxx)
            problems += lib_problems
            print(f"  {file}: CUDA {info.get('cuda_version')}, sm {info.get('archs')} (PTX {info.get('ptx')}), "
                  f"{info.get('cxx_runtime')}; {summary}")
        if expect_cuda is not None and sorted(libs.values()) != sorted(expect_cuda):
            problems.append(f"expected builds for CUDA {sorted(expect_cuda)}, found {sorted(libs.values())}")
        rev = record.get("git_revision", "unknown")
        print(f"  version {record.get('version')}, git {rev}")
        if require_git_rev and (not rev or rev == "unknown"):
            problems.append("build record has no git revision")
    return problems


SDIST_REQUIRED = ["CMakeLists.txt", "setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
                  "GIT_REVISION", "PKG-INFO", "csrc/api/quanto_kernels.h", "csrc/compat/qk_compat.h",
                  "python/quanto_kernels/__init__.py", "python/quanto_kernels/__main__.py", "tests/conftest.py"]


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    problems = [f"missing {need}" for need in SDIST_REQUIRED if need not in names]
    if not any(n.startswith("csrc/") and n.endswith(".cu") for n in names):
        problems.append("no CUDA sources under csrc/")
    if not any(n.startswith("tests/test_") for n in names):
        problems.append("no tests")
    built = [n for n in names if n.endswith((".so", ".dll", ".whl")) or n.endswith("build_record.json")]
    if built:
        problems.append(f"build output in the sdist: {built}")
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB, {len(names)} files")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheels", nargs="+", type=Path, help="wheels, sdists, or directories holding wheels")
    parser.add_argument("--expect-cuda", help="comma-separated CUDA majors the wheel must hold, e.g. 12,13")
    parser.add_argument("--max-mb", type=float, default=100.0)
    parser.add_argument("--allow-plain-linux", action="store_true", help="accept linux_x86_64 (before auditwheel)")
    parser.add_argument("--allow-shared-cxx", action="store_true", help="accept libstdc++.so.6/libgcc_s.so.1")
    parser.add_argument("--require-git-rev", action="store_true")
    parser.add_argument("--copy-to", type=Path, help="copy each wheel here once it passes")
    args = parser.parse_args(argv)
    dists = [w for p in args.wheels for w in (sorted(p.glob("*.whl")) if p.is_dir() else [p])]
    if not dists:
        print("no wheel given", file=sys.stderr)
        return 2
    expect = [int(x) for x in args.expect_cuda.split(",")] if args.expect_cuda else None
    failed = False
    for wheel in dists:
        if wheel.name.endswith(".tar.gz"):
            problems = check_sdist(wheel)
        else:
            problems = check_wheel(wheel, expect, args.max_mb, args.allow_plain_linux, args.allow_shared_cxx,
                                   args.require_git_rev)
        for p in problems:
            print(f"  PROBLEM: {p}")
        failed |= bool(problems)
        if not problems and args.copy_to:
            args.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy2(wheel, args.copy_to / wheel.name)
    print("check_wheel:", "FAILED" if failed else "ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
