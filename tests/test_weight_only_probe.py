"""The weight-only tensor-core probes' shared harness (benchmarks/weight_only_probe.py) on the CPU, with a
format whose "kernel" is torch: a correct format passes check and one; a format that leaves the last output
row unwritten, or that depends on the forced configuration, is caught; perf fills every column; the
configuration variables are set per configuration and cleared afterwards."""

import importlib.util
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ENV = ("QK_TEST_PROBE_TILE", "QK_TEST_PROBE_SPLITS", "QK_TEST_PROBE_BLOCKS_PER_SM", "QK_TEST_PROBE_SLICES")
CPU = torch.device("cpu")


def _harness():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the harness imports probe_common as the probes do
    try:
        spec = importlib.util.spec_from_file_location("qk_weight_only_probe", REPO / "benchmarks" / "weight_only_probe.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return mod


def _format(wop, mm):
    def make_weight(n, k, dtype, g):
        w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int16).to(torch.int8)
        s = ((0.5 + torch.rand(n, generator=g)) / (74.0 * k**0.5)).to(dtype)
        return w, s, w.double() * s.double().reshape(-1, 1)

    def dequantize(w, s, wd):
        wd.copy_((w.float() * s.float().reshape(-1, 1)).to(wd.dtype))

    def gemv(x, w, s, out):
        return lambda: out.copy_((x.float() @ w.float().t() * s.float()).to(out.dtype))

    return wop.Format(env=ENV, make_weight=make_weight, mm_workspace=lambda m, n, k: (0, None), mm=mm, gemv=gemv,
                      dequantize=dequantize)


def _exact_mm(x, w, s, bias, out, ws):
    y = x.float() @ w.float().t() * s.float()
    out.copy_((y if bias is None else y + bias.float()).to(out.dtype))


SMALL = dict(shapes=[(64, 32), (128, 48)], ms=(1, 5, 17))


def test_a_correct_format_passes_and_the_environment_is_cleared(monkeypatch):
    wop = _harness()
    seen = set()

    def mm(x, w, s, bias, out, ws):
        seen.add(tuple(os.environ.get(e) for e in ENV))
        _exact_mm(x, w, s, bias, out, ws)

    fmt = _format(wop, mm)
    assert wop.check(fmt, CPU, **SMALL)
    assert wop.one(fmt, CPU, 7, 64, 32)
    expected = {tuple(None if v is None else str(v) for v in cfg) for cfg in wop.CONFIGS}
    assert seen == expected, "every configuration is forced through the format's variables"
    assert all(e not in os.environ for e in ENV)


def test_an_unwritten_row_or_a_configuration_dependent_result_fails():
    wop = _harness()

    def skips_last_row(x, w, s, bias, out, ws):
        _exact_mm(x[:-1], w, s, bias, out[:-1], ws)

    def differs_when_split(x, w, s, bias, out, ws):
        _exact_mm(x, w, s, bias, out, ws)
        if os.environ.get(ENV[1]) == "3":
            out.mul_(1.5)

    assert not wop.check(_format(wop, skips_last_row), CPU, **SMALL)
    assert not wop.check(_format(wop, differs_when_split), CPU, **SMALL)
    assert not wop.one(_format(wop, differs_when_split), CPU, 7, 64, 32)


def test_perf_fills_every_column():
    wop = _harness()
    table = wop.perf(_format(wop, _exact_mm), CPU, timer=lambda fn: (fn(), 0.001)[1], layers=[(64, 32)], ms=[1, 80])
    assert set(table) == {(64, 32, 1), (64, 32, 80)}
    assert set(table[(64, 32, 1)]) == set(wop.PERF_CONFIGS) | {"gemv", "deq", "dense"}
    assert "gemv" not in table[(64, 32, 80)]  # above the format's GEMV limit


def test_main_reports_an_unknown_mode():
    wop = _harness()
    assert wop.main(_format(wop, _exact_mm), ["bogus"], CPU) == 2


def test_abi_paths_bind_both_families_in_the_library():
    """The probes' entry points exist in the built library under the names and signatures abi_paths gives
    them: without a GPU the workspace queries fail with the library's device error; with one they answer."""
    import pytest

    quanto_kernels = pytest.importorskip("quanto_kernels")
    try:
        path = quanto_kernels.get_library().path
    except Exception as exc:  # noqa: BLE001 - a checkout without a built library
        pytest.skip(f"no loadable quanto-kernels library: {exc}")
    wop = _harness()
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import probe_common
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    native = probe_common.Native(str(path))
    for names in (("qk_fp8_marlin_mm", "qk_fp8_marlin_gemv", "qk_fp8_marlin_dequantize"),
                  ("qk_int8_mm", "qk_int8_gemv", "qk_int8_dequantize")):
        paths = wop.abi_paths(native, *names, CPU)
        assert set(paths) == {"mm_workspace", "mm", "gemv", "dequantize"}
        if torch.cuda.is_available():
            nbytes, _ = paths["mm_workspace"](64, 256, 4096)
            assert nbytes >= 0
        else:
            with pytest.raises(probe_common.QkError, match=r"(?i)device"):
                paths["mm_workspace"](64, 256, 4096)
