"""The FP8 compute switch (quanto_kernels.fp8_compute), CPU only: no GPU and no library call needed.

Covered: off by default; the environment variable at import (accepted spellings, an invalid value warns
and leaves it off); set_fp8_compute and its argument check; the context manager (restores, nests,
restores after an exception, checks its argument at once); one process-wide flag for every thread;
the per-device answer (off: no library query; a GPU without FP8 tensor cores: off with one warning per
device; CPU devices never); torch.compile tracing the per-device answer without a graph break and
recompiling when the flag changes; and benchmarks/worker.py finding and applying the mode.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

import quanto_kernels

mode = importlib.import_module("quanto_kernels.fp8_compute")  # the module (the package attribute is the manager)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_mode(monkeypatch):
    """Every test starts from "off" and leaves the flag, the per-device answers and the warnings as they were."""
    saved = (mode._enabled, mode._source)
    monkeypatch.setattr(mode, "_fp8_cores", {})
    monkeypatch.setattr(mode, "_warned_devices", {})
    mode._set(False, "default")
    yield
    mode._set(*saved)


def _fake_gpus(monkeypatch, codes):
    """Pretend CUDA devices 0..: `codes[i]` is what qk_fp8_compute_kernel answers; returns the query log."""
    asked = []

    def kernel_code(index):
        asked.append(index)
        return codes[index]

    monkeypatch.setattr(mode, "_kernel_code", kernel_code)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 0))
    return asked


# ------------------------------------------------------------------------------ public API


def test_package_exports_the_api():
    assert quanto_kernels.set_fp8_compute is mode.set_fp8_compute
    assert quanto_kernels.fp8_compute_enabled is mode.fp8_compute_enabled
    assert quanto_kernels.fp8_compute is mode.fp8_compute
    assert {"set_fp8_compute", "fp8_compute_enabled", "fp8_compute"} <= set(quanto_kernels.__all__)


def test_set_and_query():
    quanto_kernels.set_fp8_compute(True)
    assert quanto_kernels.fp8_compute_enabled() is True and mode.fp8_compute_source() == "set_fp8_compute()"
    quanto_kernels.set_fp8_compute(False)
    assert quanto_kernels.fp8_compute_enabled() is False


@pytest.mark.parametrize("bad", [1, 0, "1", None, torch.nn.Linear(2, 2)], ids=["1", "0", "str", "None", "module"])
def test_set_refuses_anything_but_a_bool(bad):
    with pytest.raises(TypeError, match="^enabled: expected True or False"):
        quanto_kernels.set_fp8_compute(bad)
    with pytest.raises(TypeError, match="^enabled: expected True or False"):
        quanto_kernels.fp8_compute(bad)  # refused when created, not only when entered
    assert quanto_kernels.fp8_compute_enabled() is False


def test_context_manager_restores_the_previous_state():
    with quanto_kernels.fp8_compute():
        assert quanto_kernels.fp8_compute_enabled() and mode.fp8_compute_source() == "fp8_compute()"
        with quanto_kernels.fp8_compute(False):
            assert not quanto_kernels.fp8_compute_enabled()
        assert quanto_kernels.fp8_compute_enabled()
    assert not quanto_kernels.fp8_compute_enabled() and mode.fp8_compute_source() == "default"
    quanto_kernels.set_fp8_compute(True)
    with quanto_kernels.fp8_compute(False):
        assert not quanto_kernels.fp8_compute_enabled()
    assert quanto_kernels.fp8_compute_enabled() and mode.fp8_compute_source() == "set_fp8_compute()"


def test_context_manager_restores_after_an_exception():
    with pytest.raises(KeyError):
        with quanto_kernels.fp8_compute():
            raise KeyError("inside")
    assert not quanto_kernels.fp8_compute_enabled()


def test_one_manager_object_can_be_entered_again():
    manager = quanto_kernels.fp8_compute()
    for _ in range(2):
        with manager:
            assert quanto_kernels.fp8_compute_enabled()
        assert not quanto_kernels.fp8_compute_enabled()


def test_the_flag_is_process_wide():
    """Documented: one flag for all threads, like torch's backend flags."""
    seen = []
    worker = threading.Thread(target=lambda: quanto_kernels.set_fp8_compute(True))
    worker.start()
    worker.join()
    assert quanto_kernels.fp8_compute_enabled()
    reader = threading.Thread(target=lambda: seen.append(quanto_kernels.fp8_compute_enabled()))
    with quanto_kernels.fp8_compute(False):
        reader.start()
        reader.join()
    assert seen == [False]


# ---------------------------------------------------------------------------- environment


@pytest.mark.parametrize("value, enabled", [("1", True), ("true", True), ("ON", True), (" yes ", True),
                                            ("0", False), ("", False), ("off", False), ("No", False)])
def test_environment_values(monkeypatch, value, enabled):
    monkeypatch.setenv(mode.ENV_VAR, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid value warns about nothing
        mode._load_environment()
    assert mode.fp8_compute_enabled() is enabled
    assert mode.fp8_compute_source() == f"environment {mode.ENV_VAR}={value}"


@pytest.mark.parametrize("value", ["2", "enable", "maybe"])
def test_invalid_environment_value_warns_and_stays_off(monkeypatch, value):
    monkeypatch.setenv(mode.ENV_VAR, value)
    with pytest.warns(RuntimeWarning, match=f"{mode.ENV_VAR}='{value}' is not a valid value.*stays off"):
        mode._load_environment()
    assert mode.fp8_compute_enabled() is False and "invalid" in mode.fp8_compute_source()


def test_unset_environment_is_the_default(monkeypatch):
    monkeypatch.delenv(mode.ENV_VAR, raising=False)
    mode._load_environment()
    assert mode.fp8_compute_enabled() is False and mode.fp8_compute_source() == "default"


CHILD = ("import warnings, json\nwarnings.simplefilter('always')\n"
         "with warnings.catch_warnings(record=True) as w:\n    import quanto_kernels\n"
         "print(json.dumps([quanto_kernels.fp8_compute_enabled(), [str(x.message) for x in w if 'FP8' in str(x.message)]]))")


@pytest.mark.parametrize("value, enabled, warned", [(None, False, False), ("1", True, False), ("0", False, False),
                                                    ("bogus", False, True)])
def test_environment_is_read_at_import(subprocess_env, value, enabled, warned):
    import json

    env = dict(subprocess_env)
    env.pop(mode.ENV_VAR, None)
    if value is not None:
        env[mode.ENV_VAR] = value
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got_enabled, messages = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got_enabled is enabled
    assert bool(messages) is warned, messages


# ------------------------------------------------------------------------------ per device


def test_off_asks_no_device(monkeypatch):
    asked = _fake_gpus(monkeypatch, {0: 2})
    assert mode.active_on(torch.device("cuda", 0)) is False
    assert asked == []


def test_cpu_is_never_active():
    quanto_kernels.set_fp8_compute(True)
    assert mode.active_on(torch.device("cpu")) is False


def test_supported_gpu_is_asked_once(monkeypatch):
    asked = _fake_gpus(monkeypatch, {0: 1, 1: 2})
    quanto_kernels.set_fp8_compute(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(mode.active_on(torch.device("cuda", i)) for i in (0, 1, 0, 1))
    assert asked == [0, 1]


def test_gpu_without_fp8_cores_warns_once_and_stays_off(monkeypatch):
    _fake_gpus(monkeypatch, {0: 0, 1: 2})
    quanto_kernels.set_fp8_compute(True)
    with pytest.warns(RuntimeWarning, match="cuda:0 .*no FP8 tensor cores"):
        assert mode.active_on(torch.device("cuda", 0)) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same device
        assert mode.active_on(torch.device("cuda", 0)) is False
        assert mode.active_on(torch.device("cuda", 1)) is True


def test_kernel_names(monkeypatch):
    _fake_gpus(monkeypatch, {0: 0, 1: 1, 2: 2})
    assert [mode.kernel_name(i) for i in range(3)] == ["none", "mma.sync", "wgmma"]


def test_torch_compile_traces_the_choice_and_recompiles_on_a_toggle(monkeypatch):
    """active_on() inside a compiled function: no graph break (fullgraph), and the flag is guarded."""
    asked = _fake_gpus(monkeypatch, {0: 2})
    torch._dynamo.reset()

    def pick(x):
        return x + 1 if mode.active_on(torch.device("cuda", 0)) else x - 1

    compiled = torch.compile(pick, backend="eager", fullgraph=True)
    x = torch.zeros(3)
    assert torch.equal(compiled(x), x - 1)
    quanto_kernels.set_fp8_compute(True)
    assert torch.equal(compiled(x), x + 1)
    quanto_kernels.set_fp8_compute(False)
    assert torch.equal(compiled(x), x - 1)
    assert asked == [0]
    torch._dynamo.reset()


# ------------------------------------------------------------------------------ benchmarks


def test_benchmark_worker_finds_and_applies_the_global_switch():
    spec = importlib.util.spec_from_file_location("qk_bench_worker", REPO / "benchmarks" / "worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.torch = torch  # the worker imports torch in main()
    name = next(n for n in worker.FP8_COMPUTE_APIS if hasattr(quanto_kernels, n))
    assert name == "set_fp8_compute"
    model = torch.nn.Linear(2, 2)
    assert worker.apply_fp8_compute(model) is model
    assert quanto_kernels.fp8_compute_enabled()


# ----------------------------------------------------------------------------- diagnostics


@pytest.mark.parametrize("on", [False, True])
def test_diagnostics_report_the_mode_and_each_gpus_kernel(monkeypatch, capsys, on):
    from quanto_kernels import _diagnostics as d

    _fake_gpus(monkeypatch, {0: 2, 1: 0})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    quanto_kernels.set_fp8_compute(on)
    info = d.report_fp8_compute({"gpu": True, "library": True})
    out = capsys.readouterr().out
    state = "on (source: set_fp8_compute())" if on else "off (source: set_fp8_compute())"
    assert f"fp8 compute                {state}" in out
    assert info == {"enabled": on, "source": "set_fp8_compute()", "kernels": {"0": "wgmma", "1": "none"}}
    assert "GPU 1" in out and "no FP8 tensor cores" in out
    assert d.report_fp8_compute({"gpu": False, "library": True})["kernels"] == {}


# ------------------------------------------------------------------ routing decision (quanto side)


class _Obj:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def _marlin_like(k, n, dtype=torch.bfloat16):
    """What fp8_compute_route reads from a MarlinF8QBytesTensor: _data._data (K/16, 4N) int32, _scale (1, N)."""
    data = torch.empty(k // 16, 4 * n, dtype=torch.int32, device="meta")
    return _Obj(_data=_Obj(_data=data), _scale=torch.empty(1, n, dtype=dtype, device="meta"))


@pytest.mark.parametrize("case, routed", [
    ("plain", True), ("3-d input", True), ("no bias", True), ("mode off", False), ("k=48", False),
    ("n=96", False), ("fp32 input", False), ("input dtype vs scales", False), ("bias dtype", False),
    ("bias shape", False), ("wrong k", False), ("other device", False),
])
def test_route_decision(monkeypatch, case, routed):
    """Only shapes, dtypes, devices and the mode decide; anything the op would refuse keeps quanto's path."""
    from quanto_kernels.quanto import fast_linear

    monkeypatch.setattr(fast_linear, "active_on", lambda device: case != "mode off")
    k, n = {"k=48": (48, 128), "n=96": (64, 96)}.get(case, (64, 128))
    w = _marlin_like(k, n)
    x = torch.empty(5, k, dtype=torch.bfloat16, device="meta")
    bias = torch.empty(n, dtype=torch.bfloat16, device="meta")
    if case == "3-d input":
        x = x.reshape(1, 5, k)
    elif case == "no bias":
        bias = None
    elif case == "fp32 input":
        x, w._scale = x.float(), w._scale.float()
    elif case == "input dtype vs scales":
        x = x.half()
    elif case == "bias dtype":
        bias = bias.half()
    elif case == "bias shape":
        bias = bias[:64]
    elif case == "wrong k":
        x = torch.empty(5, k + 16, dtype=torch.bfloat16, device="meta")
    elif case == "other device":
        x = torch.empty(5, k, dtype=torch.bfloat16)
    assert fast_linear.fp8_compute_route(x, w, bias) is routed
