"""Installs the parts of a CUDA toolkit that quanto-kernels needs, from NVIDIA's redistributable archives.

Used by the Windows wheel job: it downloads redistrib_<version>.json from NVIDIA, then each needed
component's archive for the platform, checks every archive against the SHA-256 that the JSON lists,
and merges them into one toolkit directory (bin/nvcc, include/, lib/, nvvm/). About 200 MB instead of
the multi-GB full installer, no registry changes, and a short path without spaces (nvcc on Windows
does not cope with paths over 260 characters). On Linux the flat archives get the targets/<arch>-linux
links that nvcc.profile expects. The result is checked for nvcc, cicc, the headers and the static runtime.

  python scripts/ci/install_cuda_redist.py --version 13.0.2 --dest C:/cuda/13.0
  python scripts/ci/install_cuda_redist.py --version 12.8.1 --dest /opt/cuda-12.8 --platform linux-x86_64

--base may be a local directory holding the JSON and archives (the tests use that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

BASE_URL = "https://developer.download.nvidia.com/compute/cuda/redist"
# nvcc + the static runtime + the headers our sources include (cuda_fp16.h pulls in CCCL's <nv/target>).
REQUIRED = ["cuda_nvcc", "cuda_cudart", "cuda_cccl"]
# Split out of cuda_nvcc in CUDA 13: installed when the release lists them.
OPTIONAL = ["cuda_crt", "libnvvm"]


def default_platform() -> str:
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "sbsa", "aarch64": "sbsa"}.get(machine, machine)
    return f"windows-{arch}" if sys.platform.startswith("win") else f"linux-{arch}"


def fetch(base: str, relative: str, target: Path) -> None:
    if "://" not in base:
        shutil.copyfile(Path(base) / relative, target)
        return
    url = f"{base.rstrip('/')}/{relative}"
    print(f"  downloading {url}", flush=True)
    with urllib.request.urlopen(url, timeout=600) as response, open(target, "wb") as out:  # noqa: S310 (https only)
        shutil.copyfileobj(response, out, 1 << 20)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract(archive: Path, into: Path) -> Path:
    """Unpacks one archive; returns its single top-level directory."""
    into.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            _check_members(names, archive)
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            names = t.getnames()
            _check_members(names, archive)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.12 (and security backports)
                t.extractall(into, filter="data")
            else:
                t.extractall(into)  # members were checked above
    tops = {n.replace("\\", "/").split("/", 1)[0] for n in names if n.strip("/")}
    if len(tops) != 1:
        raise SystemExit(f"{archive.name}: expected one top-level directory, found {sorted(tops)}")
    return into / tops.pop()


def _check_members(names, archive: Path) -> None:
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise SystemExit(f"{archive.name}: refusing unsafe member path {name!r}")


def install(version: str, dest: Path, plat: str, base: str = BASE_URL, components=None) -> dict:
    wanted = list(components or REQUIRED)
    with tempfile.TemporaryDirectory(prefix="cuda-redist-") as tmp:
        tmp = Path(tmp)
        manifest_path = tmp / f"redistrib_{version}.json"
        fetch(base, manifest_path.name, manifest_path)
        manifest = json.loads(manifest_path.read_text())
        if components is None:
            wanted += [c for c in OPTIONAL if plat in manifest.get(c, {})]
        installed = {}
        for name in wanted:
            entry = manifest.get(name, {}).get(plat)
            if entry is None:
                raise SystemExit(f"redistrib_{version}.json has no {name} for {plat}")
            archive = tmp / Path(entry["relative_path"]).name
            fetch(base, entry["relative_path"], archive)
            got = sha256(archive)
            if got != entry["sha256"].lower():
                raise SystemExit(f"{archive.name}: SHA-256 {got} does not match the release's {entry['sha256']}")
            top = extract(archive, tmp / "x" / name)
            shutil.copytree(top, dest, dirs_exist_ok=True)
            installed[name] = manifest[name].get("version", "?")
            print(f"  {name} {installed[name]} ok (sha256 {got[:16]}...)", flush=True)
    if plat.startswith("linux-"):
        _link_target_dir(dest, plat)
    missing = [f for f in _expected_files(plat) if not (dest / f).exists()]
    if missing:
        raise SystemExit(f"after installing {sorted(installed)} these are still missing: {missing}; the release "
                         f"lists {sorted(k for k, v in manifest.items() if isinstance(v, dict) and plat in v)}")
    return installed


def _expected_files(plat: str) -> list:
    exe = ".exe" if plat.startswith("windows") else ""
    runtime = "lib/x64/cudart_static.lib" if plat.startswith("windows") else "lib/libcudart_static.a"
    return [f"bin/nvcc{exe}", f"bin/ptxas{exe}", f"nvvm/bin/cicc{exe}", "include/cuda_runtime.h", "include/cuda_fp16.h",
            "include/crt/host_config.h", runtime]


def _link_target_dir(dest: Path, plat: str) -> None:
    """nvcc.profile on Linux looks under targets/<arch>-linux/{include,lib}; the archives are flat."""
    arch = plat.split("-", 1)[1]
    target = dest / "targets" / f"{arch}-linux"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("include", "lib"):
        link = target / name
        if not link.exists() and not link.is_symlink():
            link.symlink_to(Path("..") / ".." / name, target_is_directory=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="CUDA release, e.g. 12.8.1 or 13.0.2")
    parser.add_argument("--dest", required=True, type=Path, help="toolkit directory to create")
    parser.add_argument("--platform", default=default_platform(), help="redist platform key (default: this machine)")
    parser.add_argument("--base", default=BASE_URL, help="URL or local directory of the redist tree")
    parser.add_argument("--components", help="comma-separated component names (default: what the build needs)")
    args = parser.parse_args(argv)
    components = args.components.split(",") if args.components else None
    print(f"CUDA {args.version} ({args.platform}) -> {args.dest}", flush=True)
    installed = install(args.version, args.dest.resolve(), args.platform, args.base, components)
    print(json.dumps({"cuda_home": str(args.dest.resolve()), "components": installed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
