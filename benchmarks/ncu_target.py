"""A few launches of each FP8 kernel for Nsight Compute (ncu) to profile: dequantize and the fused product."""

import torch

from kernel_floor import random_fp8_marlin
from quanto_kernels import ops

for k, n, ms in ((15360, 3072, ()), (4096, 14336, (1, 16, 64, 256))):
    b, s = random_fp8_marlin(k, n, torch.bfloat16)
    ops.eager.fp8_marlin_dequantize(b, s)
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ops.eager.fp8_marlin_gemm(x, b, s)
torch.cuda.synchronize()
