"""``python -m quanto_kernels``: what it says when the self-check cannot run, and its exit status."""

import subprocess
import sys

import pytest

from quanto_kernels import _diagnostics as d

BASE = {"library": True, "gpu": True, "quanto": True, "patched": True}


@pytest.mark.parametrize("change, runs, fault, words", [
    ({}, True, False, ""),
    ({"gpu": False}, False, False, "no CUDA GPU"),
    ({"quanto": False}, False, False, 'pip install "quanto-kernels[quanto]"'),
    ({"patched": False}, False, True, "not patched"),
    ({"library": False}, False, True, "did not load"),
])
def test_self_check_plan(change, runs, fault, words):
    run, reason, is_fault = d.self_check_plan({**BASE, **change}, no_self_check=False)
    assert (run, is_fault) == (runs, fault)
    assert words in reason
    if change.get("quanto") is False:
        assert 'pip install ".[quanto]"' in reason


def test_no_gpu_run_exits_zero_and_says_the_check_was_skipped(subprocess_env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the self-check runs")
    proc = subprocess.run([sys.executable, "-m", "quanto_kernels"], env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-check NOT RUN: no CUDA GPU" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT: ok (self-check skipped: ") and last != "RESULT: ok"


def test_main_without_quanto_exits_zero_and_names_the_install(monkeypatch, capsys):
    facts = {**BASE, "gpu": True, "quanto": False, "patched": False, "build_record": None}
    monkeypatch.setattr(d, "report", lambda: dict(facts))
    assert d.main([]) == 0
    out = capsys.readouterr().out
    assert "self-check NOT RUN: optimum-quanto is not installed" in out and "[quanto]" in out
    assert out.strip().splitlines()[-1].startswith("RESULT: ok (self-check skipped: ")


def test_main_with_a_real_fault_exits_non_zero(monkeypatch, capsys):
    monkeypatch.setattr(d, "report", lambda: {**BASE, "library": False, "build_record": None})
    assert d.main([]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "RESULT: problems found"
