"""Kernel-only times against the measured floors (GPU only; no quanto, no Python in the timed region).

Each measurement captures a CUDA graph of calls that rotate over enough weight copies to defeat L2,
then times graph replays with events (median). This isolates what the kernels cost from the Python
dispatch that bench_linear.py includes, and gives the two ceilings METHOD.md asks for: a large
device-to-device copy (bytes read + written) and a large bf16 matrix product.

    python benchmarks/kernel_floor.py --out DIR     ->  DIR/kernel_floor.json and a short table
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from quanto_kernels import ops

WEIGHTS = [(4096, 4096), (4096, 14336), (3072, 3072), (3072, 12288), (12288, 3072), (15360, 3072), (3072, 18432)]
SMALL_M = (1, 4, 16)
MEDIUM_M = (32, 64, 128, 256, 512)
LARGE_M = 4096


def graph_ms(calls, reps=30):
    """Median ms per call of `calls` (list of callables) replayed from one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in calls:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(calls))
    del graph
    return statistics.median(times)


def random_fp8_marlin(k, n, dtype):
    """A random FP8 Marlin weight (K/16, 4N) with quanto-permuted scales, and its dense twin."""
    w = torch.randn(n, k, device="cuda", dtype=dtype)
    s = (w.abs().amax(dim=1, keepdim=True).float() / 448).to(dtype)
    codes = (w / s).to(torch.float8_e4m3fn).view(torch.uint8)
    packed_in = codes.contiguous().view(torch.int32).t().contiguous()
    b = ops.marlin_repack(packed_in, torch.empty(0, dtype=torch.int32, device="cuda"), k, n, 8)
    perm = torch.tensor([0, 1, 8, 9, 16, 17, 24, 25], device="cuda")
    perm = torch.cat([perm + 2 * i for i in range(4)])
    sp = s.reshape(-1, 32)[:, perm].reshape(1, n).contiguous()
    return b, sp


def copies_for(nbytes):
    return max(3, min(16, int(400e6 // nbytes) + 1))


def measure(dtype):
    rows = []
    eager = ops.eager
    for k, n in WEIGHTS:
        fp8_bytes = n * k
        copies = copies_for(fp8_bytes)
        qw = [random_fp8_marlin(k, n, dtype) for _ in range(copies)]
        dense = [eager.fp8_marlin_dequantize(b, s) for b, s in qw[: copies_for(2 * fp8_bytes)]]
        row = {"K": k, "N": n, "dtype": str(dtype).split(".")[-1], "copies": copies}
        t = graph_ms([lambda b=b, s=s: eager.fp8_marlin_dequantize(b, s) for b, s in qw])
        row["dequant_ms"] = t
        row["dequant_GBps"] = 3 * fp8_bytes / t / 1e6
        for m in SMALL_M + MEDIUM_M:
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            t = graph_ms([lambda b=b, s=s: eager.fp8_marlin_gemm(x, b, s) for b, s in qw])
            row[f"ours_M{m}_ms"] = t
            row[f"ours_M{m}_GBps"] = fp8_bytes / t / 1e6
            row[f"dense_M{m}_ms"] = graph_ms([lambda w=w: torch.nn.functional.linear(x, w) for w in dense])
        x = torch.randn(LARGE_M, k, device="cuda", dtype=dtype)
        row[f"ours_M{LARGE_M}_ms"] = graph_ms([lambda b=b, s=s: eager.fp8_marlin_gemm(x, b, s) for b, s in qw[:3]], 10)
        row[f"dense_M{LARGE_M}_ms"] = graph_ms([lambda w=w: torch.nn.functional.linear(x, w) for w in dense[:3]], 10)
        rows.append(row)
        print(json.dumps({key: (round(val, 4) if isinstance(val, float) else val) for key, val in row.items()}), flush=True)
        del qw, dense
        torch.cuda.empty_cache()
    return rows


def ceilings():
    n = 1 << 30
    x = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    copy_ms = graph_ms([lambda: y.copy_(x)], 20)

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = graph_ms([lambda: a @ b], 20)
    return {"copy_GBps": 2 * n / copy_ms / 1e6, "bf16_mm_TFLOPs": 2 * 8192**3 / mm_ms / 1e9}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".")
    parser.add_argument("--dtypes", default="bf16")
    args = parser.parse_args()
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "ceilings": ceilings(), "rows": []}
    print(json.dumps(result["ceilings"]), flush=True)
    for tag in args.dtypes.split(","):
        result["rows"] += measure({"bf16": torch.bfloat16, "fp16": torch.float16}[tag])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_floor.json").write_text(json.dumps(result, indent=1))
    copy = result["ceilings"]["copy_GBps"]
    print(f"copy {copy:.0f} GB/s, bf16 mm {result['ceilings']['bf16_mm_TFLOPs']:.0f} TFLOP/s")
    print("K x N dtype | dequant GB/s | M=1 ms (%copy) dense | M=16 ms dense | M=256 ms dense | M=4096 ms dense")
    for r in result["rows"]:
        print(f"{r['K']}x{r['N']} {r['dtype']} | {r['dequant_GBps']:.0f} | {r['ours_M1_ms']:.4f} "
              f"({100 * r['ours_M1_GBps'] / copy:.0f}%) {r['dense_M1_ms']:.4f} | {r['ours_M16_ms']:.4f} "
              f"{r['dense_M16_ms']:.4f} | {r['ours_M256_ms']:.4f} {r['dense_M256_ms']:.4f} | "
              f"{r['ours_M4096_ms']:.4f} {r['dense_M4096_ms']:.4f}")


if __name__ == "__main__":
    main()
