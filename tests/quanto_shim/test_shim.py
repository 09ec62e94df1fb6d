"""The quanto shim against the real optimum-quanto 0.2.7, each scenario in a fresh interpreter.

Every child runs with the per-run caches of conftest.py (TORCH_EXTENSIONS_DIR included) and a timeout:
quanto's real JIT loader, reached in the opt-out scenarios, can never wait on a user cache's lock file.

On this CPU-only machine a GPU is simulated by making torch report CUDA (the shim's own gate),
which is enough for registration: no kernel runs here. GPU runs are in test_gpu_quanto.py.
"""

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("optimum.quanto")

PRELUDE = """
import json, platform, warnings
import torch
FAKE_GPU, FAKE_WINDOWS = {fake_gpu}, {fake_windows}
if FAKE_GPU and not torch.cuda.is_available():
    torch.cuda.is_available = lambda: True
    torch.version.cuda = torch.version.cuda or "13.0"
if FAKE_WINDOWS:
    # quanto decides at import time from platform.system(): answer "Windows" to quanto only, so
    # other libraries do not go looking for Windows-only modules.
    import sys
    _real_system = platform.system
    def _system():
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return "Windows" if caller.startswith("optimum.quanto") else _real_system()
    platform.system = _system
warnings.simplefilter("always")
"""

FACTS = """
import quanto_kernels
from quanto_kernels.quanto import shim as _shim
from optimum.quanto.library.extensions import extension as e
from optimum.quanto.tensor.weights.marlin.fp8.qbits import MarlinF8QBytesLinearFunction as F8
facts = dict(status=quanto_kernels.quanto_status(),
             registered=e.is_extension_available("quanto_cuda"),
             load_forbidden=e.load is _shim._jit_forbidden,
             ops_defined=hasattr(torch.ops.quanto, "gemm_f16f8_marlin"),
             bias_fixed=getattr(F8.forward, "_quanto_kernels_bias_fix", False))
from optimum.quanto.tensor.weights.qbits import WeightQBitsTensor as _WQB
facts["bf16_int4_factory"] = getattr(_WQB.create, "_quanto_kernels_bf16", False)
if facts["registered"]:
    ext = e.get_extension("quanto_cuda")
    facts["lib"] = type(ext._lib).__name__
    facts["lib_via_property"] = type(ext.lib).__name__ if ext._lib is not None else None
    facts["bindings"] = sorted(n for n in ("unpack", "awq_v2_gemm_f16i4", "awq_v2_gemv_f16i4", "gptq_marlin_repack",
                                            "fp8_marlin_gemm", "marlin_gemm_f16i4") if callable(getattr(ext._lib, n, None)))
if e.is_extension_available("quanto_cpp"):
    facts["cpp_lib"] = type(e.get_extension("quanto_cpp")._lib).__name__
    if facts["cpp_lib"] == "QuantoCppBindings":
        packed = torch.tensor([0xF3, 0x97, 0x01], dtype=torch.uint8)
        facts["cpu_unpack"] = torch.ops.quanto.unpack(packed, 4).tolist()
try:
    e.load(name="quanto_cuda", sources=[])
    facts["jit"] = "ran"
except _shim.JITDisabledError:
    facts["jit"] = "refused"
except Exception as exc:
    facts["jit"] = type(exc).__name__
print("FACTS" + json.dumps(facts))
"""


CHILD_TIMEOUT_S = 120


def run_child(body, env, fake_gpu=True, fake_windows=False):
    code = PRELUDE.format(fake_gpu=fake_gpu, fake_windows=fake_windows) + textwrap.dedent(body) + FACTS
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child interpreter did not finish within {CHILD_TIMEOUT_S} s: quanto's JIT loader may be "
                    f"waiting on a lock file in TORCH_EXTENSIONS_DIR={env.get('TORCH_EXTENSIONS_DIR')!r} "
                    f"(output so far: {(exc.stderr or b'')[-2000:]!r})")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("FACTS"))
    return json.loads(line[5:]), proc.stderr


ALL_BINDINGS = sorted(["unpack", "awq_v2_gemm_f16i4", "awq_v2_gemv_f16i4", "gptq_marlin_repack", "fp8_marlin_gemm",
                       "marlin_gemm_f16i4"])


def assert_served(facts):
    assert facts["status"]["patched"] is True, facts
    assert facts["registered"] and facts["ops_defined"]
    assert facts["lib"] == "QuantoCudaBindings" and facts["lib_via_property"] == "QuantoCudaBindings"
    assert facts["bindings"] == ALL_BINDINGS
    assert facts["load_forbidden"] and facts["jit"] == "refused"
    assert facts["bias_fixed"] is True
    assert facts["bf16_int4_factory"] is True
    # quanto's CPU extension is served too (in torch), so no compiler is ever needed (the example of docs/layouts.md, "Packed sub-byte tensors").
    assert facts["cpp_lib"] == "QuantoCppBindings" and facts["cpu_unpack"] == [3, 7, 1, 15, 9, 0]


@pytest.mark.parametrize("windows", [False, True], ids=["linux", "simulated-windows"])
def test_quanto_imported_first(subprocess_env, windows):
    facts, _ = run_child("import optimum.quanto\n", subprocess_env, fake_windows=windows)
    assert_served(facts)


@pytest.mark.parametrize("windows", [False, True], ids=["linux", "simulated-windows"])
def test_quanto_imported_after(subprocess_env, windows):
    facts, _ = run_child("import quanto_kernels\nassert not quanto_kernels.quanto_status()['patched']\n"
                         "import optimum.quanto\n", subprocess_env, fake_windows=windows)
    assert_served(facts)


def test_submodule_import_also_triggers_patch(subprocess_env):
    facts, _ = run_child("import quanto_kernels\nfrom optimum.quanto.tensor import qtypes\n", subprocess_env)
    assert_served(facts)


def test_opt_out(subprocess_env):
    subprocess_env["QUANTO_KERNELS_DISABLE"] = "1"
    facts, _ = run_child("import quanto_kernels\nimport optimum.quanto\n", subprocess_env, fake_windows=True)
    assert facts["status"]["patched"] is False and "QUANTO_KERNELS_DISABLE" in facts["status"]["reason"]
    assert not facts["load_forbidden"] and not facts["registered"] and not facts["bias_fixed"]


def test_no_gpu_patches_nothing(subprocess_env):
    facts, _ = run_child("import quanto_kernels\nimport optimum.quanto\n", subprocess_env, fake_gpu=False)
    if facts["status"]["patched"]:
        pytest.skip("this machine has a GPU")
    assert "no CUDA GPU" in facts["status"]["reason"]
    assert not facts["load_forbidden"] and not facts["bias_fixed"]


@pytest.mark.parametrize("version", ["0.2.7", "0.2.7dev"], ids=["release", "git-main"])
def test_supported_quanto_versions_are_patched(subprocess_env, version):
    facts, stderr = run_child(f"import optimum.quanto\noptimum.quanto.__version__ = {version!r}\n", subprocess_env)
    assert_served(facts)
    assert "leaving optimum-quanto alone" not in stderr


@pytest.mark.parametrize("version", ["0.2.6", "0.2.8", "0.2.7.post1"])
def test_other_quanto_versions_are_refused_with_the_one_warning(subprocess_env, version):
    facts, stderr = run_child(f"import optimum.quanto\noptimum.quanto.__version__ = {version!r}\nimport quanto_kernels\n",
                              subprocess_env)
    assert facts["status"]["patched"] is False and version in facts["status"]["reason"]
    assert stderr.count("leaving optimum-quanto alone") == 1


def test_child_caches_stay_in_the_test_directory(subprocess_env, isolated_caches):
    """Where quanto's real JIT loader (torch.utils.cpp_extension) would build and lock: the per-run directory."""
    code = ("import tempfile\nfrom torch.utils.cpp_extension import _get_build_directory\n"
            "print('BUILD' + _get_build_directory('quanto_cuda', False))\nprint('TMP' + tempfile.gettempdir())\n")
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict((ln[:5] if ln.startswith("BUILD") else ln[:3], ln) for ln in proc.stdout.splitlines())
    assert lines["BUILD"][len("BUILD"):].startswith(str(isolated_caches)), lines
    assert lines["TMP"][len("TMP"):].startswith(str(isolated_caches)), lines


def test_unexpected_quanto_version_warns_once_and_leaves_quanto_alone(subprocess_env):
    facts, stderr = run_child(
        "import optimum.quanto\noptimum.quanto.__version__ = '9.9.9'\nimport quanto_kernels\n"
        "from quanto_kernels.quanto import shim as _shim\n_shim.patch_quanto()\n_shim.patch_quanto()\n",
        subprocess_env,
    )
    assert facts["status"]["patched"] is False and "9.9.9" in facts["status"]["reason"]
    assert not facts["load_forbidden"] and not facts["bias_fixed"]
    assert stderr.count("leaving optimum-quanto alone") == 1


def test_patch_is_idempotent(subprocess_env):
    facts, _ = run_child(
        "import optimum.quanto\nimport quanto_kernels\nfrom quanto_kernels.quanto import shim as _shim\n"
        "from optimum.quanto.tensor.weights.marlin.fp8.qbits import MarlinF8QBytesLinearFunction as F8\n"
        "first = F8.forward\nassert _shim.patch_quanto() and _shim.install()\n"
        "import importlib; importlib.reload(importlib.import_module('quanto_kernels'))\n"
        "assert F8.forward is first, 'bias fix applied twice'\n",
        subprocess_env,
    )
    assert_served(facts)


def test_bias_fix_adds_the_bias(subprocess_env):
    facts, _ = run_child(
        """
        import quanto_kernels, optimum.quanto, types
        from optimum.quanto.tensor.weights.marlin.fp8.qbits import MarlinF8QBytesLinearFunction as F8
        calls = []
        @torch.library.impl("quanto::gemm_f16f8_marlin", "CPU")
        def fake_gemm(a, b_q_weight, b_scales, workspace, num_bits, size_m, size_n, size_k):
            calls.append((size_m, size_n, size_k))
            return torch.ones(size_m, size_n, dtype=a.dtype)
        other = types.SimpleNamespace(_data=types.SimpleNamespace(_data=torch.zeros(4, 256, dtype=torch.int32)),
                                      _scale=torch.ones(1, 64), _workspace=torch.zeros(16, dtype=torch.int32))
        ctx = types.SimpleNamespace(save_for_backward=lambda *t: None)
        bias = torch.arange(64, dtype=torch.float32)
        x = torch.randn(2, 3, 64)
        y = F8.forward(ctx, x, other, bias)
        assert calls == [(6, 64, 64)], calls
        assert y.shape == (2, 3, 64)
        assert torch.equal(y, torch.ones(2, 3, 64) + bias), y
        assert torch.equal(F8.forward(ctx, x, other, None), torch.ones(2, 3, 64))
        """,
        subprocess_env,
    )
    assert facts["bias_fixed"] is True


def test_bf16_int4_factory_keeps_quantos_other_choices(subprocess_env):
    """The patched weight factory builds our bf16 AWQ class only for CUDA weights: on the CPU a bf16
    qint4 weight stays TinyGemm, an fp16 one the generic packing, and the rule refuses what quanto's
    AWQ packing or quanto's TinyGemm rule refuse (fp16 scales, another axis or group size, N not a multiple
    of 4, K not of 128, 3-D); unlike quanto's fp16 AWQ rule it takes fewer than 128 channels."""
    facts, _ = run_child(
        """
        import quanto_kernels, optimum.quanto
        from optimum.quanto import freeze, qint2, qint4, quantize
        from optimum.quanto.tensor.weights.qbits import WeightQBitsTensor
        from quanto_kernels.quanto.awq_bf16 import serves
        kinds = {}
        for dtype in (torch.bfloat16, torch.float16):
            model = torch.nn.Sequential(torch.nn.Linear(256, 128)).to(dtype)
            quantize(model, weights=qint4)
            freeze(model)
            kinds[str(dtype)] = type(model[0].weight).__name__
        assert kinds == {"torch.bfloat16": "TinyGemmWeightQBitsTensor", "torch.float16": "WeightQBitsTensor"}, kinds
        cpu = torch.zeros(128, 2, dtype=torch.uint8)
        s = torch.ones(256, 1, dtype=torch.bfloat16)
        assert not serves(qint4, 0, 128, (128, 256), cpu, s)       # a CPU weight
        class OnCuda:                                              # only .device is read before the capability
            device = torch.device("cuda", 0)
        torch.cuda.get_device_capability = lambda d=None: (8, 0)
        assert serves(qint4, 0, 128, (128, 256), OnCuda, s)
        assert not serves(qint4, 0, 128, (128, 256), OnCuda, s.half())
        assert not serves(qint2, 0, 128, (128, 256), OnCuda, s)
        assert not serves(qint4, -1, 128, (128, 256), OnCuda, s)
        assert not serves(qint4, 0, 64, (128, 256), OnCuda, s)
        assert serves(qint4, 0, 128, (32, 128), OnCuda, s)
        assert not serves(qint4, 0, 128, (130, 256), OnCuda, s)
        assert not serves(qint4, 0, 128, (128, 192), OnCuda, s)
        assert not serves(qint4, 0, 128, (128, 2, 128), OnCuda, s)
        torch.cuda.get_device_capability = lambda d=None: (7, 5)
        assert not serves(qint4, 0, 128, (128, 256), OnCuda, s)
        """,
        subprocess_env,
    )
    assert_served(facts)
