"""Per-block accuracy of quantized FLUX.1-dev transformers: each transformer block fed the same bf16 inputs,
its output compared with its bf16 twin's.

A random-weight FLUX is chaotic end to end (a whole-step comparison mostly measures that chaos), so this
measures every block on its own: the bf16 model runs once and records, for each of its 19 double-stream and
38 single-stream blocks, the block's inputs and outputs; then each variant's model (built from the same
seed, then quantized) runs each block on those recorded inputs, and the relative Frobenius error of the
block's output against the bf16 output is kept. The report gives the distribution per variant (median,
90th percentile, max, and per block) as JSON and a markdown table.

Variants: fp8 (quanto qfloat8 weight-only), fp8_compute (the same with quanto_kernels' FP8 compute mode),
torchao_fp8dq (torchao's float8 dynamic-activation recipe, row-wise scales), int8, int4 (quanto weight-only),
bf16 (the reference against itself: 0 by construction, a check of the harness).

Usage (GPU machine, quanto_kernels installed for the quanto variants):
    python benchmarks/flux_block_accuracy.py --out DIR [--variants fp8,fp8_compute,torchao_fp8dq] [--tiny]
--tiny builds a two-block FLUX (CPU is fine; what the tests use).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import worker  # noqa: E402 - the benchmark's FLUX builder, inputs and quantization recipes

worker.torch = torch  # the worker imports torch lazily (its fake mode runs without it)

DEFAULT_VARIANTS = ("fp8", "fp8_compute", "torchao_fp8dq")


def _blocks(model):
    """(name, module) of every transformer block, in execution order."""
    return ([(f"double.{i}", b) for i, b in enumerate(model.transformer_blocks)]
            + [(f"single.{i}", b) for i, b in enumerate(model.single_transformer_blocks)])


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


def record_bf16(device, tiny):
    """{block name: (args, kwargs, outputs)} of the bf16 model on the benchmark's FLUX inputs."""
    model = worker.build_flux(device, tiny=tiny)
    records, hooks = {}, []
    for name, block in _blocks(model):
        def pre(mod, args, kwargs, _name=name):
            records[_name] = [_detach(args), _detach(kwargs), None]

        def post(mod, args, kwargs, out, _name=name):
            records[_name][2] = _detach(out)

        hooks += [block.register_forward_pre_hook(pre, with_kwargs=True),
                  block.register_forward_hook(post, with_kwargs=True)]
    with torch.no_grad():
        model(**worker.flux_inputs(device, tiny=tiny))
    for h in hooks:
        h.remove()
    del model
    gc.collect()
    return records


def _tensors(out):
    return [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]


def rel_error(out, ref) -> float:
    """Relative Frobenius error over all tensors of a block's output (double blocks return two streams)."""
    num = den = 0.0
    for o, r in zip(_tensors(out), _tensors(ref)):
        num += float((o.double() - r.double()).pow(2).sum())
        den += float(r.double().pow(2).sum())
    return math.sqrt(num / den) if den > 0 else float("nan")


def measure(variant, records, device, tiny):
    """{block name: relative error} of `variant`'s blocks on the recorded bf16 inputs."""
    model = worker.build_flux(device, tiny=tiny)
    model, classes = worker.quantize_flux(model, variant)
    errors = {}
    try:
        with torch.no_grad():
            for name, block in _blocks(model):
                args, kwargs, ref = records[name]
                errors[name] = rel_error(block(*args, **kwargs), ref)
    finally:
        if variant == "fp8_compute":
            import quanto_kernels

            quanto_kernels.set_fp8_compute(False)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return errors, classes


def summarize(errors: dict) -> dict:
    vals = sorted(v for v in errors.values() if not math.isnan(v))
    if not vals:
        return {"median": None, "p90": None, "max": None, "worst_block": None}
    p90 = vals[min(len(vals) - 1, math.ceil(0.9 * len(vals)) - 1)]
    return {"median": statistics.median(vals), "p90": p90, "max": vals[-1],
            "worst_block": max(errors, key=lambda k: errors[k])}


def _cell(x) -> str:
    return "—" if x is None else f"{x:.3e}"


def to_markdown(report: dict) -> str:
    lines = [f"# FLUX.1-dev per-block accuracy — {report['gpu']}, {report['date']}", "",
             "Each block fed the bf16 model's own inputs; relative Frobenius error of its output vs bf16.", "",
             "| variant | blocks | median | 90th pct | max | worst block | weight classes |", "|---|---|---|---|---|---|---|"]
    for v, r in report["variants"].items():
        s = r["summary"]
        lines.append(f"| {v} | {len(r['blocks'])} | {_cell(s['median'])} | {_cell(s['p90'])} | {_cell(s['max'])} | "
                     f"{s['worst_block'] or '—'} | {', '.join(r['classes'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    ap.add_argument("--tiny", action="store_true", help="two-block FLUX (tests, CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        import quanto_kernels  # noqa: F401 - quanto's variants run on our kernels
    variants = [v for v in args.variants.split(",") if v]
    records = record_bf16(device, args.tiny)
    import datetime

    report = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "date": datetime.date.today().isoformat(),
              "commit": os.environ.get("QUANTO_KERNELS_GIT_REV"), "tiny": args.tiny, "variants": {}}
    for v in variants:
        errors, classes = measure(v, records, device, args.tiny)
        report["variants"][v] = {"summary": summarize(errors), "blocks": errors, "classes": classes}
        s = report["variants"][v]["summary"]
        print(f"{v:>14}: median {s['median']}, p90 {s['p90']}, max {s['max']} ({s['worst_block']})", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "tiny" if args.tiny else (report["gpu"].split()[-1].lower() if device.type == "cuda" else "cpu")
    (args.out / f"flux_block_accuracy_{tag}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"flux_block_accuracy_{tag}.md").write_text(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
