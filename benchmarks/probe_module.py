"""Where a quantized QLinear call's time goes at small M: CPU per call, GPU kernels per call (GPU only)."""

import time

import torch

import quanto_kernels  # noqa: F401
from optimum.quanto import freeze, qfloat8, quantize

k, n = 4096, 14336
for m in (1, 16):
    layers = []
    for _ in range(4):
        lin = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16))
        quantize(lin, weights=qfloat8)
        freeze(lin)
        layers.append(lin[0])
    dense = [torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for name, ls in (("ours", layers), ("dense", dense)):
            for layer in ls:
                layer(x)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(2000):
                ls[i % 4](x)
            cpu = (time.perf_counter() - t) / 2000 * 1e6
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t) / 2000 * 1e6
            print(f"M={m} {name}: CPU issue {cpu:.1f} us/call, wall {wall:.1f} us/call, "
                  f"cache={'_quanto_kernels_cache' in ls[0].weight.__dict__ if name == 'ours' else '-'}")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
            for i in range(20):
                layers[i % 4](x)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
