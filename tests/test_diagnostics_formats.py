"""``python -m quanto_kernels``: the quanto formats it lists as served, and its per-format self-check (GPU)."""

import subprocess
import sys

import pytest
import torch

import support as sp
from quanto_kernels import _diagnostics as d


def test_served_formats_name_real_entry_points():
    from quanto_kernels._native import abi

    formats = d.served_formats()
    assert [f.name for f in formats] == ["qfloat8", "qint4", "qint8"]
    public = {abi.public_name(f) for f in abi.FUNCTIONS.values()}
    for f in formats:
        assert f.entry_points and set(f.entry_points) <= public, (f.name, f.entry_points)
        assert f.dtypes and f.how and all(f.class_for(dt) for dt in f.dtypes)
    qint4 = formats[1]
    assert set(qint4.dtypes) == {torch.float16, torch.bfloat16}, "qint4 must be served for fp16 and bf16"
    assert qint4.class_for(torch.bfloat16) == "Bf16AWQWeightQBitsTensor"
    assert qint4.class_for(torch.float16) == "AWQWeightQBitsTensor"


def test_report_lists_the_formats(subprocess_env):
    proc = subprocess.run([sys.executable, "-m", "quanto_kernels", "--no-self-check"], env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    served = [ln for ln in lines if ln.startswith("formats served")]
    assert served and served[0].split()[-3:] == ["qfloat8,", "qint4,", "qint8"], served
    assert any(ln.strip().startswith("qint8") and "weight-only" in ln for ln in lines), proc.stdout
    assert any(ln.strip().startswith("qint4") and "fp16/bf16" in ln for ln in lines), proc.stdout


@pytest.mark.gpu
@sp.requires_gpu
def test_self_check_passes_per_format_on_our_kernels(subprocess_env):
    pytest.importorskip("optimum.quanto")
    proc = subprocess.run([sys.executable, "-m", "quanto_kernels"], env=subprocess_env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    out = proc.stdout
    for name in ("qfloat8", "qint4", "qint8"):
        assert f"format {name:>8}: ok" in out, out[-6000:]
    checks = [ln for ln in out.splitlines() if ln.strip().startswith("self-check ") and " M=" in ln]
    assert len(checks) == 3 * (2 + 2 + 2) and all(ln.rstrip().endswith(" ok") for ln in checks), "\n".join(checks)
    bf16_int4 = [ln for ln in checks if " qint4 " in ln and "torch.bfloat16" in ln]
    assert len(bf16_int4) == 3 and all("Bf16AWQWeightQBitsTensor" in ln and "awq_int4" in ln for ln in bf16_int4), (
        "\n".join(checks))
    assert "kernels NONE" not in out
    assert out.strip().splitlines()[-1] == "RESULT: ok"
