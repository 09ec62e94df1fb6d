"""The installed package's build record (build_record.json, written by setup.py) against the libraries it holds.

Runs against whatever is installed: a source build (one CUDA major) or a release wheel (12 and 13), where
it also loads every library, not only the one the driver would pick.
"""

import json

import pytest

from quanto_kernels._native import loader as _loader

RECORD = _loader.PACKAGE_DIR / "build_record.json"


@pytest.fixture(scope="module")
def record():
    assert RECORD.is_file(), f"{RECORD} is missing: the package was not installed by setup.py"
    return json.loads(RECORD.read_text())


def test_record_lists_exactly_the_installed_libraries(record):
    installed = {path.name: major for major, path in _loader.find_candidates().items()}
    recorded = {lib["file"]: lib["cuda_major"] for lib in record["libraries"]}
    assert recorded == installed
    for lib in record["libraries"]:
        assert lib["cuda_version"].startswith(f"{lib['cuda_major']}.")
        assert lib["archs"] and lib["ptx"] == lib["archs"].split(",")[-1]
        assert lib["cuda_runtime"] == "static"
    assert record["version"] and record["git_revision"]


@pytest.mark.parametrize("major", sorted(_loader.find_candidates()) or [None])
def test_every_library_loads_and_agrees_with_the_record(record, major):
    if major is None:
        pytest.fail("no native library installed")
    lib = _loader.load_library(env={_loader.ENV_CUDA_MAJOR: str(major)}, driver_version=None)
    info = json.loads(lib.abi.build_info())
    entry = next(e for e in record["libraries"] if e["cuda_major"] == major)
    assert info["cuda_runtime"] // 1000 == major
    assert info["archs"] == entry["archs"]
    assert info["git_revision"] == record["git_revision"]
    assert info["version"] == record["version"]
