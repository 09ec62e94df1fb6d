"""MSVC-view portability check: would nvcc with MSVC as host compiler accept these sources?

nvcc preprocesses with the host compiler for both the host and the device pass, so gcc's
`#pragma GCC poison` (see portability/msvc_view.h) turns every GNU-only identifier in project code
into an error on Linux, with the macros set the way a Windows release build sets them.
Usable as a script: `python tests/portability_check.py [files or dirs...]` (default: csrc/).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = Path(__file__).resolve().parent / "portability" / "msvc_view.h"
POISON = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): error: attempt to use poisoned \"(?P<tok>\w+)\"")
# The configuration macros a release build of the library sets (see CMakeLists.txt).
RELEASE_DEFINES = ["-DQK_BUILDING_LIBRARY", '-DQK_VERSION_STR="0"', '-DQK_CUDA_ARCHS_STR="90"',
                   '-DQK_GIT_REV_STR="0"', "-DNDEBUG"]


def nvcc() -> str | None:
    return shutil.which("nvcc") or (shutil.which("/usr/local/cuda/bin/nvcc"))


def cuda_include() -> Path:
    """The toolkit's include directory, as nvcc itself reports it (nvcc may be a wrapper script)."""
    proc = subprocess.run([nvcc(), "--dryrun", "-x", "cu", "-E", "-o", "/dev/null", "/dev/null"],
                          capture_output=True, text=True)
    m = re.search(r"INCLUDES=\"?-I\"?([^\"\s]+)", proc.stdout + proc.stderr)
    return Path(m.group(1)) if m else Path("/usr/local/cuda/include")


def _in_project(file: str) -> bool:
    try:
        Path(file).resolve().relative_to(ROOT)
        return True
    except ValueError:
        return False


def check_file(path: Path) -> list[tuple[str, int, str]]:
    """Poisoned-token hits (file, line, token) for one source; raises if the preprocessor fails otherwise."""
    includes = ["-I", str(ROOT / "csrc"), "-I", str(ROOT / "csrc" / "api")]
    if path.suffix in (".cu", ".cuh"):
        cmd = [nvcc(), "-M", "-x", "cu", "-std=c++17", "-arch=sm_80", "-include", str(HEADER), *includes,
               *RELEASE_DEFINES, str(path)]
    else:
        cmd = ["g++", "-E", "-x", "c++", "-std=c++17", "-include", str(HEADER), "-I", str(cuda_include()),
               *includes, *RELEASE_DEFINES, str(path), "-o", "/dev/null"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    hits, foreign = [], 0
    for line in proc.stderr.splitlines():
        m = POISON.match(line)
        if not m:
            continue
        # Only the project's own files count: the toolchain's headers (gcc's stddef.h uses
        # __builtin_offsetof) are replaced by MSVC's own on Windows.
        if _in_project(m.group("file")):
            hits.append((m.group("file"), int(m.group("line")), m.group("tok")))
        else:
            foreign += 1
    if proc.returncode != 0 and not hits and not foreign:
        raise RuntimeError(f"preprocessing {path} failed for another reason:\n{proc.stderr[-2000:]}")
    return hits


def sources(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".cu", ".cpp"))
        else:
            out.append(p)
    return out


def main(argv) -> int:
    files = sources(argv or [ROOT / "csrc"])
    total = 0
    for f in files:
        for file, line, tok in check_file(f):
            total += 1
            print(f"{file}:{line}: GNU-only `{tok}` (an error with nvcc + MSVC)")
    print(f"{len(files)} file(s) checked, {total} problem(s)")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
