"""Builds the native library with CMake + ninja and places it inside the quanto_kernels package.

Environment:
  QUANTO_KERNELS_CUDA_ARCHS  semicolon/comma list of SM numbers (e.g. "90" or "80;86;89;90;100;120");
                             default: every arch >= 80 the toolkit knows, PTX for the newest.
  QUANTO_KERNELS_BUILD_JOBS  parallel compile jobs (default: ninja's choice).
  CUDACXX                    nvcc to use (default: found by CMake).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from wheel.bdist_wheel import bdist_wheel
except ImportError:  # wheel >= 0.44 moved it into setuptools
    from setuptools.command.bdist_wheel import bdist_wheel

ROOT = Path(__file__).resolve().parent


def _git_revision():
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        pkg_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        archs = os.environ.get("QUANTO_KERNELS_CUDA_ARCHS", "").replace(",", ";").strip()
        cfg = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DQK_VERSION={self.distribution.get_version()}",
            f"-DQK_GIT_REV={_git_revision()}",
        ]
        if archs:
            cfg.append(f"-DQK_CUDA_ARCHS={archs}")
        subprocess.run(cfg, check=True)
        build = ["cmake", "--build", str(build_dir)]
        jobs = os.environ.get("QUANTO_KERNELS_BUILD_JOBS")
        if jobs:
            build += ["--parallel", jobs]
        subprocess.run(build, check=True)
        pkg_dir.mkdir(parents=True, exist_ok=True)
        built = [p for p in build_dir.iterdir() if p.name.startswith(("libquanto_kernels_cu", "quanto_kernels_cu"))
                 and p.suffix in (".so", ".dll")]
        if not built:
            sys.exit("quanto-kernels: CMake finished but produced no library")
        for lib in built:
            shutil.copy2(lib, pkg_dir / lib.name)
        # The extension's own output is a record of what was built, read by `python -m quanto_kernels`.
        record = {"libraries": sorted(p.name for p in built), "cuda_archs": archs or "default",
                  "git_revision": _git_revision(), "version": self.distribution.get_version()}
        Path(self.get_ext_fullpath(ext.name)).write_text(json.dumps(record, indent=1) + "\n")

    def get_ext_filename(self, ext_name):
        # The "extension" is only a vehicle for the CMake build: its file is the JSON build record.
        return os.path.join(*ext_name.split(".")[:-1], "build_record.json")


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
    cmdclass={"build_ext": CMakeBuild, "bdist_wheel": PlatformWheel},
    package_data={"quanto_kernels": ["*.so", "*.dll", "*.json"]},
)
