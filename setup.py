"""Builds the native library with CMake + ninja and places it inside the quanto_kernels package.

One CMake build per CUDA toolkit: a wheel can carry a build per CUDA major (``libquanto_kernels_cu12.so``
and ``..._cu13.so``; ``quanto_kernels_cuNN.dll`` on Windows) and the loader picks the newest one the
installed driver runs.

Environment:
  QUANTO_KERNELS_CUDA_HOMES  toolkits to build with, separated by ";" (or the platform's path separator),
                             e.g. "/usr/local/cuda-12.8;/usr/local/cuda-13.0": one build each, with
                             <home>/bin/nvcc. Default: one build with the nvcc CMake finds (CUDACXX, PATH).
  QUANTO_KERNELS_CUDA_ARCHS  semicolon/comma list of SM numbers (e.g. "90" or "80;86;89;90;100;120");
                             default: every arch >= 80 the toolkit knows, PTX for the newest.
  QUANTO_KERNELS_BUILD_JOBS  parallel compile jobs (default: ninja's choice).
  QUANTO_KERNELS_BUILD_DIR   where the CMake build trees go (default: under setuptools' build_temp).
                             Windows CI sets a short one: nvcc does not handle paths over 260 characters.
  QUANTO_KERNELS_CMAKE_ARGS  extra CMake configure arguments (shell-quoted; use "/" in Windows paths),
                             e.g. "-DQK_STATIC_LIBSTDCXX=ON -DQK_ALLOW_UNSUPPORTED_MSVC=ON".
  QUANTO_KERNELS_GIT_REV     git revision to record (default: asked of git, else the GIT_REVISION file
                             that `python -m build --sdist` writes into the sdist, else "unknown").
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1 (pyproject asks for >= 77)

ROOT = Path(__file__).resolve().parent
LIB_RE = re.compile(r"^(lib)?quanto_kernels_cu(\d+)\.(so|dll)$")


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_revision():
    """The revision the sources come from; never the revision of an unrelated enclosing repository."""
    env = os.environ.get("QUANTO_KERNELS_GIT_REV", "").strip()
    if env:
        return env
    top = _git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == ROOT:
        rev = _git("rev-parse", "--short=12", "HEAD")
        if rev:
            dirty = _git("status", "--porcelain", "--untracked-files=no")
            return rev + ("-dirty" if dirty else "")
    recorded = ROOT / "GIT_REVISION"
    if recorded.is_file():
        return recorded.read_text().strip() or "unknown"
    return "unknown"


def cuda_homes():
    raw = os.environ.get("QUANTO_KERNELS_CUDA_HOMES", "")
    seps = {";", os.pathsep}
    parts = [raw]
    for sep in seps:
        parts = [piece for part in parts for piece in part.split(sep)]
    return [Path(p.strip()) for p in parts if p.strip()]


def _cached_cuda_compiler(build_dir):
    cache = build_dir / "CMakeCache.txt"
    if cache.is_file():
        m = re.search(r"^CMAKE_CUDA_COMPILER:\w+=(.*)$", cache.read_text(errors="replace"), re.M)
        if m:
            return m.group(1).strip()
    return None


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def _cmake_build(self, build_dir, nvcc, archs, rev):
        build_dir.mkdir(parents=True, exist_ok=True)
        cfg = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DQK_VERSION={self.distribution.get_version()}",
            f"-DQK_GIT_REV={rev}",
        ]
        if nvcc is not None:
            cached = _cached_cuda_compiler(build_dir)
            if cached and cached != nvcc.as_posix():
                cfg.append("--fresh")  # this tree was configured for another toolkit
            cfg.append(f"-DCMAKE_CUDA_COMPILER={nvcc.as_posix()}")
        if archs:
            cfg.append(f"-DQK_CUDA_ARCHS={archs}")
        cfg += shlex.split(os.environ.get("QUANTO_KERNELS_CMAKE_ARGS", ""))
        print("quanto-kernels:", " ".join(cfg), flush=True)
        subprocess.run(cfg, check=True)
        build = ["cmake", "--build", str(build_dir)]
        jobs = os.environ.get("QUANTO_KERNELS_BUILD_JOBS")
        if jobs:
            build += ["--parallel", jobs]
        subprocess.run(build, check=True)
        info_file = build_dir / "qk_build.json"
        if not info_file.is_file():
            sys.exit(f"quanto-kernels: CMake finished but wrote no {info_file}")
        info = json.loads(info_file.read_text())
        lib = build_dir / info["file"]
        if not lib.is_file() or not LIB_RE.match(lib.name):
            sys.exit(f"quanto-kernels: CMake finished but produced no library ({lib})")
        return lib, info

    def build_extension(self, ext):
        record_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        pkg_dir = record_path.parent
        build_root = Path(os.environ.get("QUANTO_KERNELS_BUILD_DIR") or (Path(self.build_temp) / "cmake")).resolve()
        archs = os.environ.get("QUANTO_KERNELS_CUDA_ARCHS", "").replace(",", ";").strip()
        rev = git_revision()
        homes = cuda_homes()
        jobs = []
        if homes:
            exe = "nvcc.exe" if sys.platform.startswith("win") else "nvcc"
            for i, home in enumerate(homes):
                nvcc = home / "bin" / exe
                if not nvcc.is_file():
                    sys.exit(f"quanto-kernels: QUANTO_KERNELS_CUDA_HOMES names {home}, which has no bin/{exe}")
                jobs.append((build_root / f"t{i}", nvcc))
        else:
            jobs.append((build_root, None))

        built = []
        for build_dir, nvcc in jobs:
            lib, info = self._cmake_build(build_dir, nvcc, archs, rev)
            if any(other["cuda_major"] == info["cuda_major"] for _, other in built):
                sys.exit(f"quanto-kernels: two toolkits of CUDA {info['cuda_major']} in QUANTO_KERNELS_CUDA_HOMES; "
                         "give one per CUDA major")
            built.append((lib, info))

        # A library left from an earlier build (another toolkit) must not end up in the wheel.
        pkg_dir.mkdir(parents=True, exist_ok=True)
        for stale in pkg_dir.iterdir():
            if LIB_RE.match(stale.name):
                stale.unlink()
        for lib, info in built:
            shutil.copy2(lib, pkg_dir / lib.name)
            info["bytes"] = lib.stat().st_size
        # The extension's own output is a record of what was built, read by `python -m quanto_kernels`.
        record = {
            "version": self.distribution.get_version(),
            "git_revision": rev,
            "platform": sys.platform,
            "libraries": [info for _, info in sorted(built, key=lambda item: item[1]["cuda_major"])],
        }
        record_path.write_text(json.dumps(record, indent=1) + "\n")

    def get_ext_filename(self, ext_name):
        # The "extension" is only a vehicle for the CMake build: its file is the JSON build record.
        return os.path.join(*ext_name.split(".")[:-1], "build_record.json")


class SdistWithRevision(sdist):
    """Writes GIT_REVISION into the sdist, so a wheel built from it still records where it came from."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        target = Path(base_dir) / "GIT_REVISION"
        if target.exists():
            target.unlink()  # may be a hard link to the source tree's copy
        target.write_text(git_revision() + "\n")


class PlatformWheel(bdist_wheel):
    """py3-none-<platform>: the library is plain C ABI, usable from any Python >= 3.9."""

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(
    ext_modules=[CMakeExtension("quanto_kernels._native")],
    cmdclass={"build_ext": CMakeBuild, "bdist_wheel": PlatformWheel, "sdist": SdistWithRevision},
    package_data={"quanto_kernels": ["*.so", "*.dll", "*.json"]},
)
