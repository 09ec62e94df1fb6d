"""CPU tests of the benchmark's bookkeeping: summary merge/validation/markdown/plot, and run.py end to end
with a fake worker (QK_BENCH_FAKE=1: no GPU, no torch needed). Run: python -m pytest benchmarks/test_report.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import summary as S  # noqa: E402


def layer(fmt="fp8", act="bf16", m=1, k=4096, n=14336, kernel=None, layer_=None, notes=""):
    row = S.empty_layer_row(fmt, act, m, k, n)
    row["kernel_ms"].update(kernel or {})
    row["layer_ms"].update(layer_ or {})
    row["notes"] = notes
    return row


def summary(**kw):
    s = S.empty_summary()
    s.update(gpu="NVIDIA H200", date="2026-12-01", commit="abc123",
             versions={"torch": "2.11", "optimum-quanto": "0.2.7", "driver": "580", "diffusers": "0.42.1",
                       "torchao": "0.18.0"},
             ceilings={"copy_tb_s": 4.1, "bf16_tflops": 760.0})
    s.update(kw)
    return s


# ------------------------------------------------------------------------------------------ notes
def test_notes_round_trip_and_cleaning():
    notes = {"ours": "ok", "kernel upstream": "not graph-capturable; profiler", "": "free text"}
    text = S.format_notes(notes)
    assert text.count("; ") == 2  # the ';' inside a note was replaced
    back = S.parse_notes(text)
    assert back["ours"] == "ok" and back["kernel upstream"] == "not graph-capturable, profiler"
    assert S.parse_notes("") == {} and S.parse_notes(None) == {}
    assert len(S.clean_note("x" * 1000)) == 240


# ------------------------------------------------------------------------------------------ merge
def test_merge_new_values_win_and_nulls_never_erase():
    old = summary(layers=[layer(kernel={"ours": 0.03, "dense": 0.05}, layer_={"ours": 0.04},
                                notes="upstream: budget; torchao: budget")])
    new = summary(layers=[layer(kernel={"ours": 0.031, "upstream": 0.04}, layer_={"ours": None},
                                notes="layer ours: crashed; torchao: budget")], date="2026-12-02")
    m = S.merge_summaries(old, new)
    (row,) = m["layers"]
    assert row["kernel_ms"] == {"ours": 0.031, "dense": 0.05, "upstream": 0.04, "torchao": None}
    assert row["layer_ms"]["ours"] == 0.04  # the null of the later run did not erase it
    notes = S.parse_notes(row["notes"])
    assert "upstream" not in notes  # measured now: its old 'budget' note is gone
    assert "layer ours" not in notes  # the new failure note does not stick to a kept measurement
    assert notes["torchao"] == "budget"
    assert m["date"] == "2026-12-02"
    assert S.validate(m) == []


def test_merge_parts_from_separate_commands():
    layers_part = summary(layers=[layer(kernel={w: 0.1 for w in S.KERNEL_WHO},
                                        layer_={w: 0.2 for w in S.LAYER_WHO})],
                          parts={"layers": {"date": "2026-12-01", "commit": "a"}})
    flux_part = summary(ceilings={"copy_tb_s": None, "bf16_tflops": None},
                        flux=[{"variant": "bf16", "compiled": False, "step_s": 0.17, "peak_gib": 22.7,
                               "rel_err_vs_bf16": 0.0, "notes": ""}],
                        parts={"flux": {"date": "2026-12-01", "commit": "b"}})
    m = S.merge_summaries(layers_part, flux_part)
    assert len(m["layers"]) == 1 and len(m["flux"]) == 1
    assert m["ceilings"]["copy_tb_s"] == 4.1  # a part without ceilings keeps the measured ones
    assert set(m["parts"]) == {"layers", "flux"}
    assert "different commits" in S.to_markdown(m)
    assert S.validate(m) == []


def test_merge_flux_row_keeps_measured_over_failed():
    good = {"variant": "fp8", "compiled": True, "step_s": 0.15, "peak_gib": 12.0, "rel_err_vs_bf16": 0.04}
    bad = {"variant": "fp8", "compiled": True, "step_s": None, "peak_gib": None, "rel_err_vs_bf16": None,
           "notes": "budget"}
    assert S.merge_summaries(summary(flux=[good]), summary(flux=[bad]))["flux"] == [good]
    newer = dict(good, step_s=0.14)
    assert S.merge_summaries(summary(flux=[bad]), summary(flux=[newer]))["flux"] == [newer]
    eager = dict(good, compiled=False)
    assert len(S.merge_summaries(summary(flux=[good]), summary(flux=[eager]))["flux"]) == 2


def test_merge_sorts_rows_in_table_order():
    rows = [layer(fmt="int8", m=4096, k=3072, n=3072, notes="x: y"), layer(fmt="fp8", act="fp16", notes="x: y"),
            layer(fmt="fp8", act="bf16", m=16, notes="x: y"), layer(fmt="fp8", notes="x: y")]
    m = S.merge_summaries(None, summary(layers=rows))
    assert [(r["format"], r["act"], r["M"]) for r in m["layers"]] == [
        ("fp8", "bf16", 1), ("fp8", "bf16", 16), ("fp8", "fp16", 1), ("int8", "bf16", 4096)]


# ------------------------------------------------------------------------------------------ validation
def test_validate_catches_schema_errors():
    s = summary(layers=[layer(notes="")], flux=[{"variant": "bf16", "compiled": "no", "step_s": -1.0,
                                                   "peak_gib": None, "rel_err_vs_bf16": None}])
    s["date"] = "01/12/2026"
    del s["versions"]["driver"]
    s["layers"][0]["kernel_ms"]["extra"] = 1.0
    errs = "\n".join(S.validate(s))
    for expected in ("date", "versions lacks driver", "kernel_ms keys", "null in layer_ms without notes",
                     "compiled is not a bool", "step_s = -1.0"):
        assert expected in errs, expected
    assert S.validate(summary()) == []


# ------------------------------------------------------------------------------------------ outputs
def test_markdown_plot_and_short_table(tmp_path):
    sweep = [dict(S.empty_layer_row("fp8", "bf16", m, 4096, 14336, sweep=True),
                  kernel_ms={"ours": 0.01 * m ** 0.5, "dense": 0.02 * m ** 0.5, "upstream": None},
                  notes="upstream: budget") for m in S.SWEEP_MS]
    s = summary(layers=[layer(kernel={"ours": 0.03, "dense": 0.06}, layer_={"ours": 0.04, "dense": 0.05},
                              notes="upstream: budget")],
                flux=[{"variant": "bf16", "compiled": False, "step_s": 0.2, "peak_gib": 22.7, "rel_err_vs_bf16": 0.0},
                      {"variant": "fp8", "compiled": False, "step_s": 0.21, "peak_gib": 11.4, "rel_err_vs_bf16": 0.04},
                      {"variant": "int4", "compiled": False, "step_s": None, "peak_gib": None,
                       "rel_err_vs_bf16": None, "notes": "budget"}],
                sweep=sweep)
    paths = S.write_outputs(s, tmp_path, "h200")
    md = paths["md"].read_text()
    assert "| bf16 | 1×4096×14336 | 0.03 | 0.06 | — | — | 0.50 |" in md
    assert "| fp8 | no | 0.21 | 1.05 | 11.4 | 0.50 | 0.04 |" in md
    assert "summary_h200.png" in md
    assert paths["png"].stat().st_size > 1000
    assert json.loads(paths["json"].read_text()) == s
    table = S.short_table(s)
    assert "int4" in table and "budget" in table and len(table) < 12000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary_h200.json", "summary_h200.md", "summary_h200.png"]


def test_no_plot_without_sweep(tmp_path):
    paths = S.write_outputs(summary(), tmp_path, "x")
    assert "png" not in paths and not (tmp_path / "summary_x.png").exists()


# ------------------------------------------------------------------------------------------ run.py
def run_py(tmp_path, *args, **env):
    e = dict(os.environ, QK_BENCH_FAKE="1", **env)
    out = subprocess.run([sys.executable, str(HERE / "run.py"), "--out", str(tmp_path), "--gpu-tag", "t", *args],
                         capture_output=True, text=True, env=e, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout, json.loads((tmp_path / "summary_t.json").read_text())


def test_run_parts_merge_into_one_summary(tmp_path):
    out, s = run_py(tmp_path, "--part", "layers", "--formats", "fp8,int4_awq")
    assert "schema: ok" in out
    assert {(r["format"], r["act"]) for r in s["layers"]} == {("fp8", "bf16"), ("fp8", "fp16"), ("int4_awq", "fp16")}
    assert len(s["layers"]) == 3 * len(S.ROWS)
    assert s["ceilings"]["copy_tb_s"] == 4.0 and s["upstream_build"]["ok"]
    assert any("fp8_compute" in n for n in s.get("notes", [])) or "fp8_compute" not in s
    row = s["layers"][0]
    assert all(v is not None for v in row["kernel_ms"].values())
    assert all(v is not None for v in row["layer_ms"].values())
    out, s = run_py(tmp_path, "--part", "sweep")
    assert len(s["sweep"]) == len(S.SWEEP_MS) and len(s["layers"]) == 3 * len(S.ROWS)
    out, s = run_py(tmp_path, "--part", "flux", "--flux-compiled", "bf16")
    assert len(s["layers"]) == 3 * len(S.ROWS) and len(s["sweep"]) == len(S.SWEEP_MS)
    variants = {(r["variant"], r["compiled"]) for r in s["flux"]}
    assert ("bf16", True) in variants and ("upstream_fp8", False) in variants
    assert S.validate(s) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_t.log", "summary_t.json", "summary_t.md", "summary_t.png"]
    # report only: no GPU, rewrites the markdown from the JSON
    (tmp_path / "summary_t.md").unlink()
    subprocess.run([sys.executable, str(HERE / "run.py"), "--out", str(tmp_path), "--gpu-tag", "t", "--part", "report"],
                   check=True, capture_output=True, timeout=120)
    assert (tmp_path / "summary_t.md").exists()


def test_run_survives_a_crashing_variant(tmp_path):
    out, s = run_py(tmp_path, "--part", "layers", "--formats", "int4_awq", QK_BENCH_FAKE_CRASH="small-M")
    rows = {r["M"]: r for r in s["layers"] if r["K"] == 4096 and r["N"] == 14336}
    assert rows[1]["kernel_ms"]["upstream"] is None and "process died" in rows[1]["notes"]
    assert rows[16]["kernel_ms"]["upstream"] is not None  # measured before the crash
    assert rows[1]["kernel_ms"]["ours"] is not None and rows[1]["layer_ms"]["fallback"] is not None  # other workers ran
    out, s = run_py(tmp_path, "--part", "flux", "--flux-compiled", "", QK_BENCH_FAKE_CRASH="flux/int8")
    flux = {r["variant"]: r for r in s["flux"]}
    assert flux["int8"]["step_s"] is None and "process died" in flux["int8"]["notes"]
    assert flux["int4"]["step_s"] is not None and flux["fallback_int8"]["step_s"] is not None


def test_run_budget_records_nulls_and_still_writes(tmp_path):
    out, s = run_py(tmp_path, "--part", "flux", "--budget-s", "10")
    assert all(r["step_s"] is None and "budget" in r["notes"] for r in s["flux"] if r["compiled"])
    assert S.validate(s) == []
    out, s = run_py(tmp_path / "b", "--part", "layers", "--formats", "fp8", "--budget-s", "0.001")
    assert s["layers"] == [] or all("budget" in r["notes"] for r in s["layers"])
    assert S.validate(s) == []


def test_run_fp8_compute_rows_only_when_the_mode_exists(tmp_path):
    _, s = run_py(tmp_path, "--part", "layers", "--formats", "fp8_compute")
    assert s["layers"] == [] and any("fp8_compute" in n for n in s["notes"])
    _, s = run_py(tmp_path / "b", "--part", "layers", "--formats", "fp8_compute",
                  QK_BENCH_FAKE_FP8_COMPUTE="fp8_compute")
    assert {r["format"] for r in s["layers"]} == {"fp8_compute"}
    assert "n/a" in s["layers"][0]["notes"]


def test_merge_option_and_bad_arguments(tmp_path):
    first = tmp_path / "first"
    run_py(first, "--part", "sweep")
    _, s = run_py(tmp_path / "second", "--part", "flux", "--flux-compiled", "", "--merge",
                  str(first / "summary_t.json"))
    assert "sweep" in s and s["flux"]
    bad = subprocess.run([sys.executable, str(HERE / "run.py"), "--out", str(tmp_path), "--formats", "fp4"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown format" in bad.stderr


def test_scripts_write_no_fixed_paths():
    for path in HERE.glob("*"):
        if path.suffix in (".py", ".sh") and path.name != "test_report.py":
            text = path.read_text()
            assert '"/tmp/' not in text and "'/tmp/" not in text and " /tmp/" not in text, path.name
            assert ".whl/" not in text, path.name


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("torch", "diffusers", "optimum")),
                    reason="needs torch, diffusers and optimum-quanto")
def test_tiny_flux_builds_quantizes_and_runs_on_cpu():
    import torch

    import worker

    worker.torch = torch
    model = worker.build_flux("cpu", tiny=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    inputs = worker.flux_inputs("cpu", tiny=True)
    with torch.no_grad():
        ref = model(**inputs)[0].float()
    again = worker.build_flux("cpu", tiny=True)  # deterministic weights: the same output
    with torch.no_grad():
        assert torch.equal(again(**inputs)[0].float(), ref)
    q, classes = worker.quantize_flux(again, "int8")
    with torch.no_grad():
        out = q(**inputs)[0].float()
    assert classes and 0 < float((out - ref).norm() / ref.norm()) < 0.2
