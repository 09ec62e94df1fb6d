"""The per-block FLUX accuracy harness (benchmarks/flux_block_accuracy.py) on a two-block FLUX on the CPU:
the bf16 reference against itself is exactly 0 for every block, a quantized variant is small and non-zero,
and the JSON and markdown reports are written where asked (a temporary directory)."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("qk_flux_block_accuracy", REPO / "benchmarks" / "flux_block_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_flux_per_block_errors(tmp_path):
    pytest.importorskip("diffusers")
    pytest.importorskip("optimum.quanto")
    harness = _harness()
    assert harness.main(["--out", str(tmp_path), "--tiny", "--variants", "bf16,fp8", "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "flux_block_accuracy_tiny.json").read_text())
    assert (tmp_path / "flux_block_accuracy_tiny.md").read_text().startswith("# FLUX.1-dev per-block accuracy")
    bf16, fp8 = report["variants"]["bf16"], report["variants"]["fp8"]
    assert sorted(bf16["blocks"]) == ["double.0", "single.0"]
    assert all(v == 0.0 for v in bf16["blocks"].values()), bf16["blocks"]
    assert all(0.0 < v < 0.05 for v in fp8["blocks"].values()), fp8["blocks"]
    assert fp8["summary"]["max"] == max(fp8["blocks"].values())
    assert "WeightQBytesTensor" in fp8["classes"]
