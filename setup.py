"""Builds the native library with CMake + ninja and places it inside the quanto_kernels package.

One CMake build per CUDA toolkit: a wheel can carry a build per CUDA major (``libquanto_kernels_cu12.so``
and ``..._cu13.so``; ``quanto_kernels_cuNN.dll`` on Windows) and the loader picks the newest one the
installed driver runs.

Environment:
  QUANTO_KERNELS_CUDA_HOMES  toolkits to build with, separated by ";" (or the platform's path separator),
                             e.g. "/usr/local/cuda-12.8;/usr/local/cuda-13.0": one build each, with
                             <home>/bin/nvcc. Default: one build with the nvcc CMake finds (CUDACXX, PATH).
  QUANTO_KERNELS_CUDA_ARCHS  semicolon/comma list of SM numbers (e.g. "90a" or "80;86;89;90a;100;120";
                             90a is Hopper's arch-specific target, which the FP8 compute kernel needs);
                             default: every arch >= 80 the toolkit knows, PTX for the newest.
  QUANTO_KERNELS_BUILD_JOBS  parallel compile jobs (default: ninja's choice).
  QUANTO_KERNELS_BUILD_DIR   where the CMake build trees go (default: under setuptools' build_temp).
                             Windows CI sets a short one: nvcc does not handle paths over 260 characters.

Repeated builds: a CMake build tree outlives the pip invocation that made it, but pip's isolated build
environment (which provided cmake and ninja) does not. Before configuring, the cache of an existing
tree is compared with the tools of this build; if it names a cmake, ninja, compiler or source folder
that is gone or different, the tree is configured afresh (a full recompile; builds whose tools stay the
same, e.g. with --no-build-isolation, stay incremental). See docs/building.md, "Repeated builds".
  QUANTO_KERNELS_CMAKE_ARGS  extra CMake configure arguments (shell-quoted; use "/" in Windows paths),
                             e.g. "-DQK_STATIC_LIBSTDCXX=ON -DQK_ALLOW_UNSUPPORTED_MSVC=ON".
  QUANTO_KERNELS_CUTLASS_INCLUDE  folder with CUTLASS's cutlass/ and cute/ headers (default: the include folder
                             of the nvidia-cutlass wheel pyproject.toml pins, if installed; on Windows none;
                             without them the kernels built on CUTLASS are left out and report themselves
                             unavailable).
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
from setuptools.command.build_py import build_py
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


def read_cmake_cache(build_dir):
    """NAME -> value of every entry in build_dir/CMakeCache.txt ({} without a cache)."""
    cache = Path(build_dir) / "CMakeCache.txt"
    if not cache.is_file():
        return {}
    entries = {}
    for line in cache.read_text(errors="replace").splitlines():
        m = re.match(r"^([A-Za-z_][\w.-]*):[A-Z]+=(.*)$", line)
        if m:
            entries[m.group(1)] = m.group(2).strip()
    return entries


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def build_tools():
    """The cmake and ninja executables this build runs: the ones of the `cmake`/`ninja` Python packages
    (what pip's isolated build environment provides), else the ones on PATH."""
    exe = ".exe" if sys.platform.startswith("win") else ""
    tools = {}
    for name, attr in (("cmake", "CMAKE_BIN_DIR"), ("ninja", "BIN_DIR")):
        path = None
        try:
            module = __import__(name)
            candidate = Path(getattr(module, attr)) / (name + exe)
            if candidate.is_file():
                path = str(candidate)
        except (ImportError, AttributeError, TypeError):
            pass
        tools[name] = path or shutil.which(name)
    if tools["cmake"] is None:
        sys.exit("quanto-kernels: no cmake found (pip installs it as a build requirement; with "
                 "--no-build-isolation, `pip install cmake ninja` first)")
    if tools["ninja"] is None:
        sys.exit("quanto-kernels: no ninja found (`pip install ninja`)")
    return tools


def cutlass_include_dir():
    """CUTLASS/CuTe headers for the build: QUANTO_KERNELS_CUTLASS_INCLUDE, else (not on Windows) the
    nvidia-cutlass wheel's cutlass_library/source/include (found without importing the package), else None.

    Windows builds leave the CUTLASS kernels out unless the variable names the headers: public reports show
    CUTLASS's sm_90 kernel headers failing to parse under MSVC, and that build has not been tried here
    (docs/building.md)."""
    env = os.environ.get("QUANTO_KERNELS_CUTLASS_INCLUDE")
    if env:
        return Path(env)
    if sys.platform.startswith("win"):
        return None
    import importlib.util

    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        include = Path(root) / "source" / "include"
        if (include / "cute" / "tensor.hpp").is_file():
            return include
    return None


def stale_cache_reason(cache, cmake, ninja, source_dir, nvcc=None):
    """Why the CMake cache of an existing build tree cannot be reused by this build (None: it can).

    `cache` is read_cmake_cache()'s dict. A tree configured inside an earlier pip build still names that
    build's cmake and ninja, which pip deleted with its isolated environment; reusing it fails with
    "CMAKE_MAKE_PROGRAM is not set" or a missing ninja. A tree may also come from another checkout or
    another toolkit.
    """
    if not cache:
        return None
    home = cache.get("CMAKE_HOME_DIRECTORY")
    if home and not _same_file(home, source_dir):
        return f"it was configured for another source folder ({home})"
    recorded_cmake = cache.get("CMAKE_COMMAND")
    if recorded_cmake and not Path(recorded_cmake).is_file():
        return f"its cmake ({recorded_cmake}) no longer exists"
    # (A cmake found on PATH may be the PyPI package's wrapper script, which is not the binary it runs.)
    if recorded_cmake and cmake and not _is_script(cmake) and not _same_file(recorded_cmake, cmake):
        return f"it was configured by another cmake ({recorded_cmake}, now {cmake})"
    generator = cache.get("CMAKE_GENERATOR")
    if generator and generator != "Ninja":
        return f"it was configured for the {generator!r} generator"
    make = cache.get("CMAKE_MAKE_PROGRAM")
    if make and not Path(make).is_file():
        return f"its ninja ({make}) no longer exists"
    if make and ninja and not _same_file(make, ninja):
        return f"it uses another ninja ({make}, now {ninja})"
    for key in ("CMAKE_CUDA_COMPILER", "CMAKE_CXX_COMPILER", "CMAKE_C_COMPILER"):
        value = cache.get(key)
        if value and os.path.isabs(value) and not Path(value).is_file():
            return f"its {key} ({value}) no longer exists"
    cuda = cache.get("CMAKE_CUDA_COMPILER")
    if nvcc is not None and cuda and not _same_file(cuda, nvcc):
        return f"it was configured for another toolkit ({cuda})"
    return None


def _is_script(path):
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def reset_cmake_cache(build_dir):
    """Removes the cache and CMakeFiles/ (what `cmake --fresh` removes, for any CMake version)."""
    build_dir = Path(build_dir)
    (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
    shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def _cmake_build(self, build_dir, nvcc, archs, rev):
        build_dir.mkdir(parents=True, exist_ok=True)
        tools = build_tools()
        reason = stale_cache_reason(read_cmake_cache(build_dir), tools["cmake"], tools["ninja"], ROOT, nvcc)
        if reason:
            print(f"quanto-kernels: reconfiguring {build_dir}: {reason}", flush=True)
            reset_cmake_cache(build_dir)
        cfg = [
            tools["cmake"], "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
            f"-DCMAKE_MAKE_PROGRAM={Path(tools['ninja']).as_posix()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DQK_VERSION={self.distribution.get_version()}",
            f"-DQK_GIT_REV={rev}",
        ]
        if nvcc is not None:
            cfg.append(f"-DCMAKE_CUDA_COMPILER={nvcc.as_posix()}")
        if archs:
            cfg.append(f"-DQK_CUDA_ARCHS={archs}")
        cutlass = cutlass_include_dir()
        cfg.append(f"-DQK_CUTLASS_INCLUDE_DIR={cutlass.as_posix() if cutlass else ''}")
        cfg += shlex.split(os.environ.get("QUANTO_KERNELS_CMAKE_ARGS", ""))
        print("quanto-kernels:", " ".join(cfg), flush=True)
        subprocess.run(cfg, check=True)
        build = [tools["cmake"], "--build", str(build_dir)]
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


class BuildPy(build_py):
    """Starts the package folder under build/lib afresh: files a previous build copied there (a module
    since moved or deleted, a library of another toolkit) must not end up in this wheel."""

    def run(self):
        stale = Path(self.build_lib) / "quanto_kernels"
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        super().run()


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
    cmdclass={"build_py": BuildPy, "build_ext": CMakeBuild, "bdist_wheel": PlatformWheel,
              "sdist": SdistWithRevision},
    package_data={"quanto_kernels": ["*.so", "*.dll", "*.json"]},
)
