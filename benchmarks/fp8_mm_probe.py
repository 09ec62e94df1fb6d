"""Weight-only FP8 probe through the raw C ABI: the tensor-core kernel (qk_fp8_marlin_mm) against an fp64
reference (check), and CUDA-graph timings of every weight-only FP8 path (the tensor-core kernel and its
forced variants, the split-K GEMV kernel, dequantize + matmul) against torch's bf16 matmul (perf).

Usage: python benchmarks/fp8_mm_probe.py LIB [check|perf|all|one M N K]

The modes and their environment (PROBE_LAYERS, PROBE_M) are weight_only_probe.py's; the configurations are
forced through QK_FP8_MM_TILE, _SPLITS, _BLOCKS_PER_SM and _SLICES.
"""
import sys

import torch
import weight_only_probe as wop
from probe_common import I32, I64, P, Native, stream

if len(sys.argv) < 2:
    sys.exit(__doc__)
native = Native(sys.argv[1])
sig, chk = native.sig, native.chk
dev = torch.device("cuda:0")

repack = sig("qk_marlin_repack", P, P, P, I64, I64, I32, I32, P)


def block32_perm(n):
    """stored index -> natural index of quanto's 32-channel scale order."""
    d = [0, 1, 8, 9, 16, 17, 24, 25]
    idx = [32 * b + 2 * i + d[e] for b in range(n // 32) for i in range(4) for e in range(8)]
    return torch.tensor(idx, device=dev)


def make_weight(n, k, dtype, g):
    codes = torch.randint(0, 256, (n, k), generator=g, device=dev, dtype=torch.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0  # no NaN codes
    s = (torch.rand(n, generator=g, device=dev) * 0.02 + 0.001).to(dtype)
    # repack input (K/4, N) int32: byte j of word [kp, n] is code [n, 4 kp + j]
    packed_in = codes.t().reshape(k // 4, 4, n).permute(0, 2, 1).contiguous().view(torch.int32).reshape(k // 4, n)
    w = torch.empty(k // 16, 4 * n, dtype=torch.int32, device=dev)
    chk(repack(packed_in.data_ptr(), None, w.data_ptr(), k, n, 8, 0, stream()), "repack")
    s_perm = s[block32_perm(n)].contiguous()
    ref_w = codes.view(torch.float8_e4m3fn).double() * s.double().reshape(-1, 1)
    return w, s_perm, ref_w


FORMAT = wop.Format(env=tuple("QK_FP8_MM_" + v for v in ("TILE", "SPLITS", "BLOCKS_PER_SM", "SLICES")),
                    make_weight=make_weight,
                    **wop.abi_paths(native, "qk_fp8_marlin_mm", "qk_fp8_marlin_gemv", "qk_fp8_marlin_dequantize", dev))

if __name__ == "__main__":
    sys.exit(wop.main(FORMAT, sys.argv[2:], dev))
