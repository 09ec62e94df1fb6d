"""Fixtures of the whole suite; shared builders and oracles are in tests/support.py.

Layout (by layer of the package):
  native/      the library loader, the C ABI (header drift, status mapping), the build record
  ops/         the torch ops: results against fp64 oracles (GPU), fakes, dispatch, graphs, memory...
  quanto/      the optimum-quanto shim, its bindings, the fast QLinear path, fakes of quanto's ops
  bad_inputs/  every bad argument of every entry point, one module per entry point
  test_*.py    packaging, diagnostics, portability of the native sources

Nothing a test does leaves a trace outside one temporary directory per run: ``isolated_caches``
points every cache and temp location torch, triton, quanto's JIT loader and Hugging Face use at it,
for this process and every child it starts.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the one sys.path tweak: `import support`

CACHE_VARIABLES = ("TORCH_EXTENSIONS_DIR", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
                   "HF_HOME", "TMPDIR")


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    """Every cache variable -> a fresh directory under this run's temporary directory."""
    root = tmp_path_factory.mktemp("caches")
    mp = pytest.MonkeyPatch()
    for name in CACHE_VARIABLES:
        path = root / name.lower()
        path.mkdir()
        mp.setenv(name, str(path))
    yield root
    mp.undo()


@pytest.fixture(autouse=True)
def fresh_workspace_sizes():
    """Each test starts without cached split-K workspace sizes. Tests set plan overrides (QK_*_SPLITS, ...)
    before their first launch; a size cached by an earlier test under other overrides would make that
    launch be refused once and retried (correct, but it adds a call to the ones tests count)."""
    common = sys.modules.get("quanto_kernels.ops._common")
    if common is not None:
        common.clear_workspace_sizes()
    yield


def _quanto_build_dirs():
    """The installed optimum.quanto's JIT build directories (it builds into its own package): path ->
    (mtime, entries), or None without quanto."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("optimum.quanto")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    ext = Path(spec.submodule_search_locations[0]) / "library" / "extensions"
    dirs = sorted(ext.glob("*/build"))
    return {str(d): (d.stat().st_mtime, sorted(os.listdir(d))) for d in dirs}


@pytest.fixture(scope="session", autouse=True)
def installed_quanto_untouched():
    """Fails the run (at its end) if a test let quanto compile into the installed package; tests that need
    plain quanto's own compiled paths give the child a private copy (quanto_shim/test_gpu_quanto.py)."""
    before = _quanto_build_dirs()
    yield
    after = _quanto_build_dirs()
    assert after == before, f"the installed optimum.quanto's build directories changed during the run: {before} -> {after}"


@pytest.fixture
def subprocess_env(isolated_caches):
    """Environment for child interpreters: same Python path and isolated caches, no opt-out unless a test sets it."""
    env = dict(os.environ)
    env.pop("QUANTO_KERNELS_DISABLE", None)
    env["PYTHONUNBUFFERED"] = "1"
    for name in CACHE_VARIABLES:
        assert env[name].startswith(str(isolated_caches)), f"{name} escapes the test directory"
    return env


@pytest.fixture(scope="module")
def ops():
    """quanto_kernels.ops with its native library loaded (a missing build fails here, clearly)."""
    import quanto_kernels
    from quanto_kernels import ops as _ops

    quanto_kernels.get_library()
    return _ops


@pytest.fixture(scope="module")
def quanto_patched(ops):
    """optimum.quanto served by quanto_kernels in this process (importing either first works)."""
    import quanto_kernels

    pytest.importorskip("optimum.quanto")
    import optimum.quanto  # noqa: F401
    from optimum.quanto.library.extensions import extension as ext_mod

    from quanto_kernels.quanto import shim
    from quanto_kernels.quanto.bindings import QuantoCudaBindings

    status = quanto_kernels.quanto_status()
    if not status["patched"]:  # e.g. first imported here under a test's temporary opt-out
        shim.install()
        status = quanto_kernels.quanto_status()
    assert status["patched"], f"quanto is not served by quanto_kernels: {status['reason']}"
    assert ext_mod.load is shim._jit_forbidden
    assert isinstance(ext_mod.get_extension("quanto_cuda")._lib, QuantoCudaBindings)
    return ext_mod


@pytest.fixture
def native_calls(monkeypatch):
    """Records every C ABI call made during the test (support.NativeCalls)."""
    import support

    return support.NativeCalls(monkeypatch)
