"""One FLUX.1-dev transformer step at 1024x1024 (4096 image + 512 text tokens), full size, random bf16
weights: step time, peak GPU memory and output error of each quantized variant vs bf16.

Variants: bf16, ours (qfloat8 through quanto_kernels), fallback (qfloat8, quanto without a CUDA
extension), upstream (qfloat8 on quanto's JIT kernels; run with QUANTO_KERNELS_DISABLE=1). The bf16
output is saved to --ref so a second process (upstream) compares against the same reference.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
from pathlib import Path

import torch

import quanto_kernels  # noqa: F401
from diffusers import FluxTransformer2DModel
from optimum.quanto import freeze, qfloat8, quantize

from bench_linear import quanto_without_extension

SEED = 1234


def build_model():
    torch.manual_seed(SEED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16 directly: fp32 would need 48 GB
    try:
        with torch.device("cuda"):
            model = FluxTransformer2DModel(guidance_embeds=True)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def inputs():
    g = torch.Generator(device="cuda").manual_seed(SEED + 1)
    kw = dict(device="cuda", dtype=torch.bfloat16, generator=g)
    return dict(hidden_states=torch.randn(1, 4096, 64, **kw), encoder_hidden_states=torch.randn(1, 512, 4096, **kw),
                pooled_projections=torch.randn(1, 768, **kw), timestep=torch.tensor([0.5], device="cuda", dtype=torch.bfloat16),
                img_ids=torch.zeros(4096, 3, device="cuda", dtype=torch.bfloat16),
                txt_ids=torch.zeros(512, 3, device="cuda", dtype=torch.bfloat16),
                guidance=torch.tensor([3.5], device="cuda", dtype=torch.bfloat16), return_dict=False)


def time_step(model, kwargs, reps):
    with torch.no_grad():
        for _ in range(2):
            out = model(**kwargs)[0]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = model(**kwargs)[0]
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30, out.float()


def quantized(variant):
    model = build_model()
    ctx = quanto_without_extension() if variant == "fallback" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        quantize(model, weights=qfloat8)
        freeze(model)
    torch.cuda.synchronize()
    kinds = sorted({type(m.weight).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)})
    return model, time.perf_counter() - t0, kinds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="bf16,ours,fallback")
    parser.add_argument("--ref", default="/tmp/flux_ref.pt")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    kwargs = inputs()
    results = {}
    out_path = Path(args.out) / "flux_step.json"
    if out_path.exists():
        results = json.loads(out_path.read_text())
    for variant in args.variants.split(","):
        if variant == "bf16":
            model, qsec, kinds = build_model(), 0.0, ["Linear (bf16)"]
        else:
            model, qsec, kinds = quantized(variant)
        step, peak, y = time_step(model, kwargs, args.reps)
        row = {"step_s": step, "peak_gib": peak, "quantize_s": qsec, "weight_classes": kinds}
        if variant == "bf16":
            torch.save(y.cpu(), args.ref)
        else:
            ref = torch.load(args.ref).cuda()
            row["rel_err_vs_bf16"] = ((y - ref).norm() / ref.norm()).item()
        results[variant] = row
        print(f"flux {variant}: {row}", flush=True)
        del model, y
        gc.collect()
        torch.cuda.empty_cache()
    results["gpu"] = torch.cuda.get_device_name()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
