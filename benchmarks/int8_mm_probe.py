"""Weight-only int8 probe through the raw C ABI: the tensor-core kernel (qk_int8_mm) against an fp64 reference
(check), and CUDA-graph timings of every int8 path (the tensor-core kernel and its forced variants, the GEMV
engine, dequantize + matmul) against torch's bf16 matmul (perf).

Usage: python benchmarks/int8_mm_probe.py LIB [check|perf|all|one M N K]

The modes and their environment (PROBE_LAYERS, PROBE_M) are weight_only_probe.py's; the configurations are
forced through QK_INT8_MM_TILE, _SPLITS, _BLOCKS_PER_SM and _SLICES.
"""
import sys

import torch
import weight_only_probe as wop
from probe_common import Native

if len(sys.argv) < 2:
    sys.exit(__doc__)
native = Native(sys.argv[1])
dev = torch.device("cuda:0")


def make_weight(n, k, dtype, g):
    w = torch.randint(-128, 128, (n, k), generator=g, device=dev, dtype=torch.int16).to(torch.int8)
    s = ((0.5 + torch.rand(n, generator=g, device=dev)) / (74.0 * k**0.5)).to(dtype)
    return w, s, w.double() * s.double().reshape(-1, 1)


FORMAT = wop.Format(env=tuple("QK_INT8_MM_" + v for v in ("TILE", "SPLITS", "BLOCKS_PER_SM", "SLICES")),
                    make_weight=make_weight,
                    **wop.abi_paths(native, "qk_int8_mm", "qk_int8_gemv", "qk_int8_dequantize", dev))

if __name__ == "__main__":
    sys.exit(wop.main(FORMAT, sys.argv[2:], dev))
