"""Loading safety, seen from the process: the library that ends up mapped is the package's own file.

tests/native/test_loader.py checks how the path is chosen; here a fresh interpreter loads the library while
copies of a library file are planted in its working directory and in LD_LIBRARY_PATH, and
/proc/self/maps must show exactly one quanto-kernels library mapped, from the package directory.
Linux only (CPU is enough: the library loads without a GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quanto_kernels._native import loader as _loader

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/maps").exists(),
                                reason="reads /proc/self/maps (Linux)")

CHILD = r"""
import json, re
from quanto_kernels._native import loader as _loader
lib = _loader.get_library()
maps = sorted({line.split(None, 5)[5].strip() for line in open("/proc/self/maps")
               if len(line.split(None, 5)) == 6 and re.search(r"quanto_kernels_cu\d+", line)})
print("MAPPED" + json.dumps({"maps": maps, "path": str(lib.path), "package": str(_loader.PACKAGE_DIR)}))
"""


def test_only_the_package_library_is_mapped(tmp_path, subprocess_env):
    real = _loader.get_library().path
    planted = tmp_path / real.name
    planted.write_bytes(real.read_bytes())  # a loadable copy: it must still not be the one used
    env = dict(subprocess_env)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(tmp_path), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(tmp_path), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("MAPPED"))
    facts = json.loads(line[len("MAPPED"):])
    package = Path(facts["package"]).resolve()
    assert Path(facts["path"]).parent == package
    assert facts["maps"], "no quanto-kernels library is mapped"
    assert len(facts["maps"]) == 1, f"more than one library file mapped: {facts['maps']}"
    mapped = Path(facts["maps"][0]).resolve()
    assert mapped.parent == package, f"mapped {mapped}, expected a file in {package}"
    assert mapped != planted.resolve()
