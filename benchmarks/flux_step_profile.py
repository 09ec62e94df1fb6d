"""torch's profiler on one FLUX.1-dev step under regional torch.compile: GPU kernel time against wall time,
and the ops and kernels that take it (needs a CUDA GPU, diffusers, optimum-quanto; torchao for its variants).

A compiled step that is slower than compiled bf16 although its kernels take about as long is waiting on the
host: compare "GPU kernel time" with "wall" between variants.

    python benchmarks/flux_step_profile.py int8 [bf16 fp8 ...]

Builds the same model, inputs and quantization as benchmarks/run.py's FLUX part (worker.py), compiles its
repeated blocks, runs three warm-up steps, then profiles one.
"""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import worker  # noqa: E402

worker.torch = torch


def profile_step(variant: str, rows: int = 22) -> None:
    from torch.profiler import ProfilerActivity, profile

    model = worker.build_flux("cuda")
    model, _ = worker.quantize_flux(model, variant)
    inputs = worker.flux_inputs("cuda")
    model.compile_repeated_blocks()
    with torch.no_grad():
        for _ in range(3):
            model(**inputs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            model(**inputs)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e3
    print(f"RESULT {variant} wall {wall * 1e3:.1f} ms, GPU kernel time {busy:.1f} ms, kernels {len(kernels)}")
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=rows))
    del model
    torch.cuda.empty_cache()


if __name__ == "__main__":
    import quanto_kernels  # noqa: F401  (patches quanto before the model is quantized)

    for name in sys.argv[1:] or ["int8"]:
        profile_step(name)
