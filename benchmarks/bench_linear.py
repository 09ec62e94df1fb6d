"""Per-layer timings of quantized linears: ours vs quanto's fallback vs dense (GPU only).

For each shape of the H100 anchor table (../shared/anchors/h100_baseline.md) it times, in one run:
  bf16/fp16 dense F.linear; quanto qfloat8 on our kernels (bf16 and fp16 activations, through quanto's
  own module, i.e. what users get); quanto qfloat8 fallback (what Windows users get without us);
  quanto qint4 AWQ (fp16) on our kernels. Layers are rotated so weights do not sit in L2.
Writes linear_<mode>.json to --out; benchmarks/report.py turns the JSON files into tables and a plot.
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


def time_layers(layers, x, iters, block=20):
    """Median ms per call of back-to-back calls, as a model makes them.

    Calls rotate over `layers` (so weights are not L2-resident) with no synchronisation between
    them; events bracket each block of `block` calls. The GPU queue stays fed, so a call costs
    max(its Python dispatch, its kernels), which is what a layer costs inside a model.
    """
    with torch.no_grad():
        for layer in layers:
            layer(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(max(5, iters // 10)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(block):
                layers[i % len(layers)](x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / block)
    return statistics.median(times)


def weight_kind(layer):
    return type(layer.weight).__name__


def floor_ms(m, k, n, weight_bytes_per_elem, act_bytes=2):
    bytes_moved = n * k * weight_bytes_per_elem + m * k * act_bytes + m * n * act_bytes
    return max(bytes_moved / 3.0e12, 2.0 * m * n * k / 800e12) * 1e3


def run_upstream(shapes, iters, copies_cap):
    """quanto's own JIT-built kernels (run with QUANTO_KERNELS_DISABLE=1). AWQ at M < 8 is not run:
    upstream's GEMV makes an illegal memory access there, which would end the CUDA context."""
    rows = []
    for m, k, n in shapes:
        copies = max(2, min(copies_cap, int(200e6 // (n * k * 2))))
        row = {"M": m, "K": k, "N": n}
        for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            layers = make_layers(k, n, dtype, copies, qfloat8)
            row[f"upstream_fp8_{tag}"] = time_layers(layers, x, iters)
            del layers
        if m >= 8:
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            row["upstream_awq_int4_fp16"] = time_layers(make_layers(k, n, torch.float16, copies, qint4), x, iters)
        else:
            row["upstream_awq_int4_fp16"] = None
        torch.cuda.empty_cache()
        rows.append(row)
        print(f"upstream {m}x{k}x{n}: {row}", flush=True)
    return rows


def run(shapes, iters, copies_cap, variants=("dense", "ours", "fallback", "awq")):
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


SWEEP_SHAPE = (4096, 14336)  # K, N of a Llama-style MLP projection
SWEEP_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]


def sweep(mode, iters):
    """Time vs M at one shape, bf16 activations for fp8 and fp16 for AWQ int4."""
    k, n = SWEEP_SHAPE
    rows = []
    for m in SWEEP_M:
        row = {"M": m, "K": k, "N": n}
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        xh = x.half()
        if mode == "ours":
            row["dense_bf16"] = time_layers(make_layers(k, n, torch.bfloat16, 4), x, iters)
            row["ours_fp8_bf16"] = time_layers(make_layers(k, n, torch.bfloat16, 4, qfloat8), x, iters)
            row["fallback_fp8_bf16"] = time_layers(make_layers(k, n, torch.bfloat16, 4, qfloat8, fallback=True), x, iters)
            row["ours_awq_int4_fp16"] = time_layers(make_layers(k, n, torch.float16, 4, qint4), xh, iters)
        else:
            row["upstream_fp8_bf16"] = time_layers(make_layers(k, n, torch.bfloat16, 4, qfloat8), x, iters)
            row["upstream_awq_int4_fp16"] = (
                time_layers(make_layers(k, n, torch.float16, 4, qint4), xh, iters) if m >= 8 else None)
        torch.cuda.empty_cache()
        rows.append(row)
        print(f"sweep {mode} {row}", flush=True)
    return rows


def environment():
    import optimum.quanto

    driver = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "quanto": optimum.quanto.__version__, "quanto_kernels": quanto_kernels.__version__,
            "platform": platform.platform(), "sm_count": driver.multi_processor_count}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--mode", choices=("ours", "upstream"), default="ours",
                        help="upstream: quanto's own JIT kernels (set QUANTO_KERNELS_DISABLE=1)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    meta = environment()
    patched = quanto_kernels.quanto_status()["patched"]
    if (args.mode == "ours") != patched:
        raise SystemExit(f"--mode {args.mode} but quanto patched={patched} (QUANTO_KERNELS_DISABLE decides)")
    if args.mode == "ours":
        lib = quanto_kernels.get_library()
        meta["build_info"] = json.loads(lib.build_info())
        rows = run(ANCHORS, args.iters, args.copies)
        parts = breakdown([(1, 4096, 14336), (16, 4096, 14336), (4096, 3072, 3072), (4096, 3072, 12288)], args.iters)
    else:
        rows, parts = run_upstream(ANCHORS, args.iters, args.copies), []
    sweep_rows = [] if args.no_sweep else sweep(args.mode, args.iters)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "rows": rows, "breakdown": parts, "sweep": sweep_rows}
    (out / f"linear_{args.mode}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / f'linear_{args.mode}.json'}; make tables and the plot with benchmarks/report.py")


if __name__ == "__main__":
    main()
