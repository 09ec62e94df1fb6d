"""The benchmark's summary: schema, merging of parts, validation, markdown, plot and a short text table.

Pure Python (matplotlib only for the plot): runs anywhere, no GPU, no torch. benchmarks/run.py uses it;
benchmarks/test_report.py tests it.

Summary schema (``summary_<tag>.json``)::

    {"gpu": "NVIDIA H200", "date": "YYYY-MM-DD", "commit": "<sha>",
     "versions": {"torch", "optimum-quanto", "driver", "diffusers", "torchao", ...},
     "ceilings": {"copy_tb_s": .., "bf16_tflops": ..},
     "layers": [{"format", "act", "M", "K", "N",
                 "kernel_ms": {"ours", "dense", "upstream", "torchao"},
                 "layer_ms": {"ours", "dense", "upstream", "fallback", "torchao"}, "notes": "..."}],
     "flux": [{"variant", "compiled", "step_s", "peak_gib", "rel_err_vs_bf16", "notes", ...}],
     # extra keys
     "sweep": [rows like "layers" (format fp8, act bf16, K 4096, N 14336), kernel_ms only],
     "upstream_build": {"s", "cached", "ok", "note"}, "parts": {"layers": {"date", "commit"}, ...},
     "notes": ["..."]}

A measurement that could not be made is null, and the row's "notes" says why, as "who: why" entries
joined by "; " (who = a competitor, "kernel"/"layer" prefixed when only one of the two is concerned).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

FORMATS = ("fp8", "int8", "int4_awq", "int4_bf16", "fp8_compute")
# Activation dtypes measured per format (int4_awq: quanto's AWQ kernel takes fp16 only; int4_bf16 is
# quanto's qint4 with bf16 activations).
ACTS = {"fp8": ("bf16", "fp16"), "int8": ("bf16", "fp16"), "int4_awq": ("fp16",), "int4_bf16": ("bf16",),
        "fp8_compute": ("bf16",)}
KERNEL_WHO = ("ours", "dense", "upstream", "torchao")
LAYER_WHO = ("ours", "dense", "upstream", "fallback", "torchao")
ROWS = ((1, 4096, 14336), (16, 4096, 14336), (64, 4096, 14336), (256, 4096, 4096), (1, 3072, 18432),
        (512, 3072, 12288), (1024, 3072, 12288), (2048, 4096, 14336), (4096, 3072, 3072), (4096, 3072, 12288),
        (4096, 12288, 3072), (4608, 15360, 3072))
SWEEP_MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
SWEEP_KN = (4096, 14336)
SWEEP_FORMAT, SWEEP_ACT = "fp8", "bf16"
SWEEP_WHO = ("ours", "dense", "upstream")
FLUX_VARIANTS = ("bf16", "fp8", "int8", "int4", "fp8_compute", "torchao_fp8dq", "upstream_fp8", "fallback_fp8",
                 "fallback_int8")
FLUX_COMPILED = ("bf16", "fp8", "fp8_compute", "int8", "torchao_fp8dq")

_NOTE_SEP = "; "


# ------------------------------------------------------------------------------------------ notes
def clean_note(text) -> str:
    """One line, no separator inside, bounded length."""
    text = " ".join(str(text).split()).replace(";", ",")
    return text if len(text) <= 240 else text[:237] + "..."


def parse_notes(notes) -> dict:
    """'ours: x; upstream: y' -> {'ours': 'x', 'upstream': 'y'} (entries without 'who: ' go under '')."""
    out = {}
    if not notes:
        return out
    for entry in str(notes).split(_NOTE_SEP):
        entry = entry.strip()
        if not entry:
            continue
        m = re.match(r"^([A-Za-z0-9_ ]+?): (.*)$", entry)
        who, text = (m.group(1), m.group(2)) if m else ("", entry)
        out[who] = text if who not in out else out[who] + ", " + text
    return out


def format_notes(notes: dict) -> str:
    return _NOTE_SEP.join(f"{who}: {clean_note(text)}" if who else clean_note(text)
                          for who, text in notes.items() if text)


# ------------------------------------------------------------------------------------------ rows
def empty_layer_row(fmt, act, m, k, n, sweep=False) -> dict:
    row = {"format": fmt, "act": act, "M": m, "K": k, "N": n, "kernel_ms": {w: None for w in KERNEL_WHO}}
    if sweep:
        row["kernel_ms"] = {w: None for w in SWEEP_WHO}
    else:
        row["layer_ms"] = {w: None for w in LAYER_WHO}
    row["notes"] = ""
    return row


def layer_key(row) -> tuple:
    return (row["format"], row["act"], int(row["M"]), int(row["K"]), int(row["N"]))


def flux_key(row) -> tuple:
    return (row["variant"], bool(row.get("compiled", False)))


def _note_who(notes_key: str) -> str:
    """'kernel upstream' -> 'upstream'."""
    parts = notes_key.split()
    return parts[-1] if parts else ""


def merge_layer_row(old: dict, new: dict) -> dict:
    """Per value: a measured new value replaces the old one (and the old notes about that competitor); a
    null new value keeps a measured old one (and drops the new notes about it)."""
    out = json.loads(json.dumps(old))
    old_notes, new_notes = parse_notes(old.get("notes")), parse_notes(new.get("notes"))
    notes = dict(old_notes)
    kept_old = set()
    for metric in ("kernel_ms", "layer_ms"):
        if metric not in new and metric not in old:
            continue
        merged = dict(old.get(metric) or {})
        for who, val in (new.get(metric) or {}).items():
            prev = merged.get(who)
            if val is not None or prev is None:
                merged[who] = val
                if val is not None:
                    for k in list(notes):
                        if _note_who(k) == who and (k.split()[0] == metric.split("_")[0] or len(k.split()) == 1):
                            notes.pop(k, None)
            else:
                kept_old.add(who)
        out[metric] = merged
    for k, text in new_notes.items():
        if _note_who(k) in kept_old:
            continue
        notes[k] = text
    out["notes"] = format_notes(notes)
    for k, v in new.items():
        if k not in ("kernel_ms", "layer_ms", "notes") and v is not None:
            out[k] = v
    return out


def merge_flux_row(old: dict, new: dict) -> dict:
    if new.get("step_s") is not None or old.get("step_s") is None:
        return dict(new)
    return dict(old)


def _merge_list(old_rows, new_rows, key, merge):
    index = {key(r): i for i, r in enumerate(old_rows)}
    rows = [dict(r) for r in old_rows]
    for r in new_rows:
        k = key(r)
        if k in index:
            rows[index[k]] = merge(rows[index[k]], r)
        else:
            index[k] = len(rows)
            rows.append(dict(r))
    return rows


def sort_layers(rows):
    order = {r: i for i, r in enumerate(ROWS)}

    def key(r):
        fmt = FORMATS.index(r["format"]) if r["format"] in FORMATS else len(FORMATS)
        acts = ACTS.get(r["format"], ("bf16", "fp16"))
        act = acts.index(r["act"]) if r["act"] in acts else 9
        return (fmt, act, order.get((r["M"], r["K"], r["N"]), 999), r["M"], r["K"], r["N"])

    return sorted(rows, key=key)


def sort_flux(rows):
    def key(r):
        v = r["variant"]
        return (bool(r.get("compiled")), FLUX_VARIANTS.index(v) if v in FLUX_VARIANTS else 99, v)

    return sorted(rows, key=key)


def empty_summary() -> dict:
    return {"gpu": None, "date": None, "commit": None, "versions": {}, "ceilings": {"copy_tb_s": None, "bf16_tflops": None},
            "layers": [], "flux": []}


def merge_summaries(old: dict | None, new: dict | None) -> dict:
    """`new` measured later: its measured values win, its nulls never erase a measured value."""
    base = empty_summary()
    for src in (old, new):
        if not src:
            continue
        for k in ("gpu", "date", "commit"):
            if src.get(k):
                base[k] = src[k]
        for k, v in (src.get("versions") or {}).items():
            if v is not None or k not in base["versions"]:
                base["versions"][k] = v
        for k, v in (src.get("ceilings") or {}).items():
            if v is not None or k not in base["ceilings"]:
                base["ceilings"][k] = v
        base["layers"] = _merge_list(base["layers"], src.get("layers") or [], layer_key, merge_layer_row)
        base["flux"] = _merge_list(base["flux"], src.get("flux") or [], flux_key, merge_flux_row)
        if src.get("sweep"):
            base["sweep"] = _merge_list(base.get("sweep", []), src["sweep"], layer_key, merge_layer_row)
        build = src.get("upstream_build")
        if build and (build.get("ok") or not (base.get("upstream_build") or {}).get("ok")):
            base["upstream_build"] = build
        for k, v in (src.get("parts") or {}).items():
            base.setdefault("parts", {})[k] = v
        for note in src.get("notes") or []:
            if note not in base.setdefault("notes", []):
                base["notes"].append(note)
        for k, v in src.items():  # any other extra key: the later one wins
            if k not in base and k not in ("sweep", "upstream_build", "parts", "notes"):
                base[k] = v
    base["layers"] = sort_layers(base["layers"])
    base["flux"] = sort_flux(base["flux"])
    if "sweep" in base:
        base["sweep"] = sorted(base["sweep"], key=lambda r: r["M"])
    return base


# ------------------------------------------------------------------------------------------ validation
def _num_or_null(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)


def validate(s: dict) -> list:
    """Problems with a summary against the schema (an empty list when it conforms)."""
    errs = []
    for k in ("gpu", "date", "commit", "versions", "ceilings", "layers", "flux"):
        if k not in s:
            errs.append(f"missing key {k}")
    if s.get("date") is not None and not re.match(r"^\d{4}-\d{2}-\d{2}$", str(s["date"])):
        errs.append(f"date {s['date']!r} is not YYYY-MM-DD")
    for k in ("torch", "optimum-quanto", "driver", "diffusers", "torchao"):
        if k not in (s.get("versions") or {}):
            errs.append(f"versions lacks {k}")
    for k in ("copy_tb_s", "bf16_tflops"):
        if not _num_or_null((s.get("ceilings") or {}).get(k, "missing")):
            errs.append(f"ceilings.{k} missing or not a number")
    seen = set()
    for i, r in enumerate(s.get("layers") or []):
        where = f"layers[{i}]"
        for k in ("format", "act", "M", "K", "N", "kernel_ms", "layer_ms", "notes"):
            if k not in r:
                errs.append(f"{where} lacks {k}")
        if r.get("format") not in FORMATS:
            errs.append(f"{where}: unknown format {r.get('format')!r}")
        if r.get("act") not in ("bf16", "fp16"):
            errs.append(f"{where}: unknown act {r.get('act')!r}")
        for metric, who in (("kernel_ms", KERNEL_WHO), ("layer_ms", LAYER_WHO)):
            d = r.get(metric) or {}
            if set(d) != set(who):
                errs.append(f"{where}.{metric} keys {sorted(d)} != {sorted(who)}")
            for w, v in d.items():
                if not _num_or_null(v):
                    errs.append(f"{where}.{metric}.{w} = {v!r}")
            if any(v is None for v in d.values()) and not r.get("notes"):
                errs.append(f"{where}: null in {metric} without notes")
        if not isinstance(r.get("notes", ""), str):
            errs.append(f"{where}.notes is not a string")
        k = layer_key(r) if all(x in r for x in ("format", "act", "M", "K", "N")) else None
        if k in seen:
            errs.append(f"{where}: duplicate row {k}")
        seen.add(k)
    fseen = set()
    for i, r in enumerate(s.get("flux") or []):
        where = f"flux[{i}]"
        for k in ("variant", "compiled", "step_s", "peak_gib", "rel_err_vs_bf16"):
            if k not in r:
                errs.append(f"{where} lacks {k}")
        if not isinstance(r.get("compiled"), bool):
            errs.append(f"{where}.compiled is not a bool")
        for k in ("step_s", "peak_gib", "rel_err_vs_bf16"):
            if not _num_or_null(r.get(k)):
                errs.append(f"{where}.{k} = {r.get(k)!r}")
        if r.get("step_s") is None and not r.get("notes"):
            errs.append(f"{where}: step_s null without notes")
        if "variant" in r:
            if flux_key(r) in fseen:
                errs.append(f"{where}: duplicate {flux_key(r)}")
            fseen.add(flux_key(r))
    return errs


# ------------------------------------------------------------------------------------------ text
def fmt(v, digits=4) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"


def ratio(a, b) -> str:
    return "—" if a is None or b in (None, 0) else f"{a / b:.2f}"


def _flux_base(rows, compiled):
    for r in rows:
        if r["variant"] == "bf16" and bool(r.get("compiled")) == compiled and r.get("step_s") is not None:
            return r
    return None


def to_markdown(s: dict) -> str:
    v = s.get("versions") or {}
    c = s.get("ceilings") or {}
    lines = [f"# quanto-kernels benchmark — {s.get('gpu') or '?'}, {s.get('date') or '?'}", "",
             f"Commit `{s.get('commit') or '?'}`. " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".", "",
             f"Ceilings measured in the same run: device copy {fmt(c.get('copy_tb_s'))} TB/s (bytes read + written), "
             f"bf16 8192³ matmul {fmt(c.get('bf16_tflops'))} TFLOP/s."]
    b = s.get("upstream_build")
    if b:
        lines.append(f"quanto's JIT build (upstream): {fmt(b.get('s'), 3)} s"
                     f"{' (already built: load only)' if b.get('cached') else ''}"
                     f"{'' if b.get('ok', True) else ' — FAILED: ' + str(b.get('note'))}.")
    parts = s.get("parts") or {}
    if len({p.get("commit") for p in parts.values()}) > 1:
        lines.append("Parts measured at different commits: " +
                     ", ".join(f"{k} {p.get('commit')} ({p.get('date')})" for k, p in parts.items()) + ".")
    for note in s.get("notes") or []:
        lines.append(f"Note: {note}")
    lines += ["", "ours = optimum-quanto with `import quanto_kernels`; upstream = quanto's own JIT-built kernels; "
              "fallback = quanto without a CUDA extension; dense = `nn.Linear`; torchao = float8 weight-only. "
              "kernel = GPU time per call (CUDA-graph replay, layers rotated past L2); layer = the module called "
              "back to back in eager mode (host cost included). Times in ms; ÷dense = ours / dense."]
    layers = s.get("layers") or []
    for fmt_name in FORMATS:
        rows = [r for r in layers if r["format"] == fmt_name]
        if not rows:
            continue
        lines += ["", f"## {fmt_name}", "",
                  "| act | M×K×N | kernel ours | dense | upstream | torchao | ÷dense | layer ours | dense | upstream | "
                  "fallback | torchao | ÷dense | notes |", "|" + "---|" * 14]
        for r in rows:
            k, lm = r["kernel_ms"], r.get("layer_ms") or {}
            lines.append(
                f"| {r['act']} | {r['M']}×{r['K']}×{r['N']} | {fmt(k.get('ours'))} | {fmt(k.get('dense'))} | "
                f"{fmt(k.get('upstream'))} | {fmt(k.get('torchao'))} | {ratio(k.get('ours'), k.get('dense'))} | "
                f"{fmt(lm.get('ours'))} | {fmt(lm.get('dense'))} | {fmt(lm.get('upstream'))} | {fmt(lm.get('fallback'))} | "
                f"{fmt(lm.get('torchao'))} | {ratio(lm.get('ours'), lm.get('dense'))} | {r.get('notes') or ''} |")
    sweep = s.get("sweep") or []
    if sweep:
        r0 = sweep[0]
        lines += ["", f"## Kernel time vs M ({r0['format']}, {r0['act']} activations, K×N = {r0['K']}×{r0['N']})", "",
                  "| M | ours | dense | upstream | ÷dense | notes |", "|---|---|---|---|---|---|"]
        for r in sweep:
            k = r["kernel_ms"]
            lines.append(f"| {r['M']} | {fmt(k.get('ours'))} | {fmt(k.get('dense'))} | {fmt(k.get('upstream'))} | "
                         f"{ratio(k.get('ours'), k.get('dense'))} | {r.get('notes') or ''} |")
        lines += ["", "![kernel time vs M](summary_{tag}.png)"]
    flux = s.get("flux") or []
    if flux:
        lines += ["", "## FLUX.1-dev transformer step (1024×1024: 4096 image + 512 text tokens, random bf16 weights)", "",
                  "×bf16 compares with bf16 at the same compile setting (compiled rows with compiled bf16 when there is one).", "",
                  "| variant | compiled | step s | ×bf16 | peak GiB | ×bf16 | rel. error vs bf16 | notes |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in flux:
            base = _flux_base(flux, bool(r.get("compiled"))) or _flux_base(flux, False) or {}
            lines.append(f"| {r['variant']} | {'yes' if r.get('compiled') else 'no'} | {fmt(r.get('step_s'))} | "
                         f"{ratio(r.get('step_s'), base.get('step_s'))} | {fmt(r.get('peak_gib'), 3)} | "
                         f"{ratio(r.get('peak_gib'), base.get('peak_gib'))} | {fmt(r.get('rel_err_vs_bf16'), 3)} | "
                         f"{r.get('notes') or ''} |")
    return "\n".join(lines) + "\n"


def short_table(s: dict) -> str:
    """A compact text table for the end of a run's output (the caller may see only its last 12k chars)."""
    out = []
    c = s.get("ceilings") or {}
    out.append(f"{s.get('gpu')} {s.get('date')} commit {s.get('commit')} | copy {fmt(c.get('copy_tb_s'))} TB/s, "
               f"bf16 {fmt(c.get('bf16_tflops'))} TFLOP/s")
    layers = s.get("layers") or []
    if layers:
        out.append("layers (ms)  kernel: ours dense up ao | layer: ours dense up fb ao | ÷dense k/l")
    for r in layers:
        k, lm = r["kernel_ms"], r.get("layer_ms") or {}
        out.append(f"{r['format']:<11}{r['act']:<5}{r['M']}x{r['K']}x{r['N']:<6} "
                   + " ".join(fmt(k.get(w), 3) for w in KERNEL_WHO) + " | "
                   + " ".join(fmt(lm.get(w), 3) for w in LAYER_WHO)
                   + f" | {ratio(k.get('ours'), k.get('dense'))}/{ratio(lm.get('ours'), lm.get('dense'))}")
    sweep = s.get("sweep") or []
    if sweep:
        out.append("sweep kernel ms (M: ours dense up): " + ", ".join(
            f"{r['M']}: " + "/".join(fmt(r['kernel_ms'].get(w), 3) for w in SWEEP_WHO) for r in sweep))
    flux = s.get("flux") or []
    if flux:
        out.append("flux: variant compiled step_s xbf16 peak_gib rel_err")
    for r in flux:
        base = _flux_base(flux, bool(r.get("compiled"))) or _flux_base(flux, False) or {}
        note = f"  [{r['notes'][:60]}]" if r.get("step_s") is None and r.get("notes") else ""
        out.append(f"  {r['variant']:<14}{'c' if r.get('compiled') else 'e'} {fmt(r.get('step_s'))} "
                   f"{ratio(r.get('step_s'), base.get('step_s'))} {fmt(r.get('peak_gib'), 3)} "
                   f"{fmt(r.get('rel_err_vs_bf16'), 3)}{note}")
    return "\n".join(out)


def plot(s: dict, path) -> bool:
    """Kernel time vs M for the sweep. False (and no file) when there is nothing to plot or no matplotlib."""
    sweep = s.get("sweep") or []
    series = {}
    for r in sweep:
        for who, v in r["kernel_ms"].items():
            if v is not None:
                series.setdefault(who, []).append((r["M"], v))
    if not series:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001 - the plot is optional
        return False
    r0 = sweep[0]
    fig, ax = plt.subplots(figsize=(8, 5))
    for who in SWEEP_WHO:
        pts = sorted(series.get(who, []))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=who)
    ax.set(xscale="log", yscale="log", xlabel="M (rows)", ylabel="kernel ms per call (CUDA-graph replay, median)",
           title=f"{s.get('gpu') or '?'}: {r0['format']} weights, {r0['act']} activations, {r0['K']}×{r0['N']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(s: dict, out: Path, tag: str) -> dict:
    """summary_<tag>.json/.md/.png into `out`; returns their paths (the png only when drawn)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"summary_{tag}.json", "md": out / f"summary_{tag}.md"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(s, indent=1) + "\n")
    tmp.replace(paths["json"])
    png = out / f"summary_{tag}.png"
    if plot(s, png):
        paths["png"] = png
    paths["md"].write_text(to_markdown(s).replace("summary_{tag}.png", png.name))
    return paths


def load(path) -> dict | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
