"""Per-layer timings of quantized linears: ours vs quanto's fallback vs dense (GPU only).

For each shape of the H100 anchor table (../shared/anchors/h100_baseline.md) it times, in one run:
  bf16/fp16 dense F.linear; quanto qfloat8 on our kernels (bf16 and fp16 activations, through quanto's
  own module, i.e. what users get); quanto qfloat8 fallback (what Windows users get without us);
  quanto qint4 AWQ (fp16) on our kernels. Layers are rotated so weights do not sit in L2.
Writes a markdown table and JSON to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
from pathlib import Path

import torch

import quanto_kernels  # noqa: F401  (patches quanto before it is used)
from optimum.quanto import freeze, qfloat8, qint4, quantize
from optimum.quanto.tensor.weights import qbits as q_qbits, qbytes as q_qbytes

ANCHORS = [(1, 4096, 4096), (1, 4096, 14336), (16, 4096, 14336), (256, 4096, 4096), (2048, 4096, 14336),
           (512, 3072, 12288), (4096, 3072, 3072), (4096, 3072, 12288), (4096, 12288, 3072), (4608, 15360, 3072),
           (1, 3072, 18432)]


@contextlib.contextmanager
def quanto_without_extension():
    """Makes quanto choose its pure-PyTorch weight classes (the fallback Windows users get today)."""
    saved = (q_qbits.is_extension_available, q_qbytes.is_extension_available)
    q_qbits.is_extension_available = q_qbytes.is_extension_available = lambda name: False
    try:
        yield
    finally:
        q_qbits.is_extension_available, q_qbytes.is_extension_available = saved


def make_layers(k, n, dtype, copies, qtype=None, fallback=False):
    layers = []
    for _ in range(copies):
        lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=dtype)
        if qtype is not None:
            ctx = quanto_without_extension() if fallback else contextlib.nullcontext()
            with ctx:
                model = torch.nn.Sequential(lin)
                quantize(model, weights=qtype)
                freeze(model)
            lin = model[0]
        layers.append(lin)
    return layers


def time_layers(layers, x, iters):
    """Median ms per call over `iters` calls, cycling through the layers (events around each call)."""
    with torch.no_grad():
        for layer in layers:
            layer(x)
        torch.cuda.synchronize()
        times = []
        for i in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            layer = layers[i % len(layers)]
            start.record()
            layer(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def weight_kind(layer):
    return type(layer.weight).__name__


def floor_ms(m, k, n, weight_bytes_per_elem, act_bytes=2):
    bytes_moved = n * k * weight_bytes_per_elem + m * k * act_bytes + m * n * act_bytes
    return max(bytes_moved / 3.0e12, 2.0 * m * n * k / 800e12) * 1e3


def run(shapes, iters, copies_cap):
    rows = []
    for m, k, n in shapes:
        copies = max(2, min(copies_cap, int(200e6 // (n * k * 2))))
        row = {"M": m, "K": k, "N": n, "layers_rotated": copies}
        for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            row[f"dense_{tag}"] = time_layers(make_layers(k, n, dtype, copies), x, iters)
            layers = make_layers(k, n, dtype, copies, qfloat8)
            row[f"ours_fp8_{tag}"] = time_layers(layers, x, iters)
            row[f"ours_fp8_{tag}_class"] = weight_kind(layers[0])
            del layers
            layers = make_layers(k, n, dtype, copies, qfloat8, fallback=True)
            row[f"fallback_fp8_{tag}"] = time_layers(layers, x, iters)
            row[f"fallback_fp8_{tag}_class"] = weight_kind(layers[0])
            del layers
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        layers = make_layers(k, n, torch.float16, copies, qint4)
        row["ours_awq_int4_fp16"] = time_layers(layers, x, iters)
        row["ours_awq_int4_fp16_class"] = weight_kind(layers[0])
        del layers
        row["floor_fp8"] = floor_ms(m, k, n, 1)
        torch.cuda.empty_cache()
        rows.append(row)
        print(f"{m}x{k}x{n}: " + ", ".join(f"{key}={val:.4f}" for key, val in row.items() if isinstance(val, float)),
              flush=True)
    return rows


def time_fn(fn, iters):
    """Median ms of fn() over iters calls (CUDA events), after a warm-up."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def breakdown(shapes, iters):
    """Where the time goes in our FP8 path: raw op vs its parts (dequantize, dense GEMM), per dtype."""
    from quanto_kernels import ops

    rows = []
    for m, k, n in shapes:
        for dtype in (torch.bfloat16, torch.float16):
            w = torch.randn(n, k, device="cuda", dtype=dtype)
            s = (w.abs().amax(dim=1, keepdim=True).float() / 448).to(dtype)
            codes = (w / s).to(torch.float8_e4m3fn).view(torch.uint8)
            packed_in = codes.contiguous().view(torch.int32).t()  # byte j of [kp, n] = W[n, 4kp + j]
            b = ops.marlin_repack(packed_in.contiguous(), torch.empty(0, dtype=torch.int32, device="cuda"), k, n, 8)
            perm = torch.tensor([0, 1, 8, 9, 16, 17, 24, 25], device="cuda")
            perm = torch.cat([perm + 2 * i for i in range(4)])
            sp = s.reshape(-1, 32)[:, perm].reshape(1, n).contiguous()
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            wd = ops.fp8_marlin_dequantize(b, sp)
            row = {"M": m, "K": k, "N": n, "dtype": str(dtype).split(".")[-1]}
            row["op"] = time_fn(lambda: ops.fp8_marlin_gemm(x, b, sp), iters)
            row["op_eager"] = time_fn(lambda: ops.eager.fp8_marlin_gemm(x, b, sp), iters)
            row["dequantize"] = time_fn(lambda: ops.fp8_marlin_dequantize(b, sp), iters)
            row["dense_linear"] = time_fn(lambda: torch.nn.functional.linear(x, wd), iters)
            row["op_again"] = time_fn(lambda: ops.fp8_marlin_gemm(x, b, sp), iters)
            rows.append(row)
            print("breakdown", row, flush=True)
    return rows


def markdown(rows, meta):
    lines = [f"# Per-layer timings ({meta['gpu']}, {meta['date']})", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, driver {meta['driver']}, optimum-quanto {meta['quanto']}, "
             f"quanto-kernels {meta['quanto_kernels']}. Median ms per call of quanto's module (Python dispatch "
             "included), layers rotated so weights are not L2-resident.", "",
             "| M×K×N | bf16 dense | fp16 dense | ours fp8 (bf16 / fp16 act.) | fallback fp8 (bf16 / fp16) | "
             "ours AWQ int4 fp16 | floor fp8 | ours/fallback (bf16) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['M']}×{r['K']}×{r['N']} | {r['dense_bf16']:.3f} | {r['dense_fp16']:.3f} | "
            f"{r['ours_fp8_bf16']:.3f} / {r['ours_fp8_fp16']:.3f} | {r['fallback_fp8_bf16']:.3f} / "
            f"{r['fallback_fp8_fp16']:.3f} | {r['ours_awq_int4_fp16']:.3f} | {r['floor_fp8']:.3f} | "
            f"{r['ours_fp8_bf16'] / r['fallback_fp8_bf16']:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--name", default="linear")
    args = parser.parse_args()
    import optimum.quanto

    lib = quanto_kernels.get_library()
    driver, _ = lib.cuda_versions()
    meta = {"gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "driver": f"CUDA {driver // 1000}.{driver % 1000 // 10}",
            "quanto": optimum.quanto.__version__, "quanto_kernels": quanto_kernels.__version__,
            "platform": platform.platform(), "build_info": json.loads(lib.build_info())}
    assert quanto_kernels.quanto_status()["patched"], quanto_kernels.quanto_status()
    rows = run(ANCHORS, args.iters, args.copies)
    parts = breakdown([(1, 4096, 14336), (16, 4096, 14336), (4096, 3072, 3072), (4096, 3072, 12288)], args.iters)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows, "breakdown": parts}, indent=1))
    table = markdown(rows, meta)
    table += "\n## FP8 op breakdown (ms, no quanto in the path; L2-warm weights)\n\n"
    table += "| M×K×N | dtype | op | op (eager) | dequantize | dense F.linear | op again |\n|---|---|---|---|---|---|---|\n"
    for p in parts:
        table += (f"| {p['M']}×{p['K']}×{p['N']} | {p['dtype']} | {p['op']:.4f} | {p['op_eager']:.4f} | "
                  f"{p['dequantize']:.4f} | {p['dense_linear']:.4f} | {p['op_again']:.4f} |\n")
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
