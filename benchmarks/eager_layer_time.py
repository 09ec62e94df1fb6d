"""Eager time per call of a quantized QLinear, called back to back as a decoding model calls it (needs a CUDA
GPU and optimum-quanto). Host and GPU overlap here, so the number is whichever of the two is slower; compare
with benchmarks/host_overhead.py (host only) and the layer benchmark's kernel column (GPU only).

    python benchmarks/eager_layer_time.py [--formats fp8,int8] [--m 1] [--k 4096] [--n 14336]
"""

from __future__ import annotations

import argparse

import torch

from host_overhead import host_us  # the same timing loop, GPU work included here


def per_call_us(fn) -> float:
    with torch.no_grad():
        return host_us(fn, include_gpu=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--formats", default="fp8,int8")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=14336)
    args = p.parse_args()

    import quanto_kernels  # noqa: F401  (patches quanto)
    from optimum.quanto import freeze, qfloat8, qint8, quantize

    dtype = torch.bfloat16
    x = torch.randn(args.m, args.k, device="cuda", dtype=dtype)
    dense = torch.nn.Linear(args.k, args.n, bias=True, device="cuda", dtype=dtype)
    for fmt in args.formats.split(","):
        model = torch.nn.Sequential(torch.nn.Linear(args.k, args.n, bias=True, device="cuda", dtype=dtype))
        quantize(model, weights={"fp8": qfloat8, "int8": qint8}[fmt])
        freeze(model)
        layer = model[0].eval()
        print(f"{fmt} {args.m}x{args.k}x{args.n} eager: layer {per_call_us(lambda: layer(x)):.1f} us  "
              f"dense {per_call_us(lambda: dense(x)):.1f} us", flush=True)


if __name__ == "__main__":
    main()
