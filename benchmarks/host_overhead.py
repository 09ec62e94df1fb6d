"""Host time of one small-M quantized linear call, stage by stage (needs a CUDA GPU, optimum-quanto).

At M <= 16 a layer's GPU work takes 10-30 us, so the Python and driver time of the call decides how fast a
model runs eagerly. This script times, per call and on the CPU only (the GPU work is kept tiny so that it
never holds the host back), each layer of what a QLinear call goes through:

    launch     the library's entry point through ctypes, tensors allocated beforehand
    op         the op family's matmul (dispatch rule, output and workspace allocation, launch)
    fast       quanto_kernels' short QLinear path (argument checks, cached weight facts, op)
    layer      QLinear(x) as a model calls it (nn.Module call, the patched forward)
    linear     torch.nn.Linear(x) in bf16 (cuBLAS), for comparison
    empty      one torch.empty on the GPU, for comparison

and prints a profile of the layer call's Python functions (cProfile, sorted by own time).

    python benchmarks/host_overhead.py [--formats fp8,int8] [--m 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time

import torch

N, K = 1024, 1024  # small enough that the GPU finishes every kernel before the host sends the next one
BLOCK, BLOCKS = 200, 25


def host_us(fn, include_gpu: bool = False) -> float:
    """Median microseconds per call over blocks of back-to-back calls, the GPU drained before each block:
    host time only, or (include_gpu) until the block's GPU work is done too."""
    for _ in range(BLOCK):
        fn()
    times = []
    for _ in range(BLOCKS):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(BLOCK):
            fn()
        if include_gpu:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / BLOCK * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def quantized_layer(fmt: str, dtype):
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    model = torch.nn.Sequential(torch.nn.Linear(K, N, bias=True, device="cuda", dtype=dtype))
    quantize(model, weights={"fp8": qfloat8, "int8": qint8}[fmt])
    freeze(model)
    return model[0].eval()


def stages(fmt: str, m: int, dtype):
    from quanto_kernels._native import abi
    from quanto_kernels.ops import _common as c
    from quanto_kernels.ops import _fp8_marlin, _int8
    from quanto_kernels.quanto import fast_linear

    layer = quantized_layer(fmt, dtype)
    w, bias = layer.weight, layer.bias
    x = torch.randn(m, K, device="cuda", dtype=dtype)
    if fmt == "fp8":
        data, scale = w._data._data, w._scale
        ops, launch_fn, fast_fn = _fp8_marlin, abi.fp8_marlin_gemv, fast_linear.fp8_linear
    else:
        data, scale = w._data, w._scale
        ops, launch_fn, fast_fn = _int8, abi.int8_gemv, fast_linear.int8_linear
    assert fast_fn(x, w, bias) is not None, "the short path declined this layer"
    dev = x.device.index
    nbytes = ops.FAMILY.workspace_bytes(m=m, n=N, k=K, device=dev)
    ws = c.workspace(x, nbytes)
    out = torch.empty(m, N, device="cuda", dtype=dtype)
    dense = torch.nn.Linear(K, N, bias=True, device="cuda", dtype=dtype)

    def launch():
        launch_fn(a=x.data_ptr(), w=data.data_ptr(), scales=scale.data_ptr(), bias=bias.data_ptr(),
                  out=out.data_ptr(), workspace=c.data_ptr(ws), workspace_bytes=nbytes, m=m, n=N, k=K,
                  dtype=c.DTYPE_CODES[dtype], device=dev, stream=c.stream(x))

    return layer, x, {
        "launch": launch,
        "op": lambda: ops.matmul(x, data, scale, N, K, bias),
        "fast": lambda: fast_fn(x, w, bias),
        "layer": lambda: layer(x),
        "linear": lambda: dense(x),
        "empty": lambda: torch.empty(m, N, device="cuda", dtype=dtype),
    }


def profile(fn, calls: int = 5000, top: int = 22) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default="fp8,int8")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    p.add_argument("--out", help="write the medians as JSON here")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args()
    import quanto_kernels  # noqa: F401  (patches quanto)

    dtype = getattr(torch, args.dtype)
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "m": args.m, "n": N, "k": K,
              "dtype": args.dtype, "us": {}}
    with torch.no_grad():
        for fmt in args.formats.split(","):
            layer, x, fns = stages(fmt, args.m, dtype)
            row = {name: round(host_us(fn), 2) for name, fn in fns.items()}
            result["us"][fmt] = row
            print(f"{fmt} M={args.m} {args.dtype}: " + "  ".join(f"{k} {v:.1f}" for k, v in row.items()) + "  (us)")
            if not args.no_profile:
                print(profile(fns["layer"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
