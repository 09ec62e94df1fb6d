"""Memory: 10 000 calls of each GEMM path leave no device memory behind and do not grow the host's.

Paths: the fused small-M kernel (M = 1, with its split-K workspace) and dequantize + dense GEMM
(M = 64) for the FP8, AWQ and Marlin int4 formats, plus quanto's qfloat8 Linear through the shim.
After a warm-up (caches, cuBLAS handles, allocator blocks), ``torch.cuda.memory_allocated()`` must be
exactly what it was before the 10 000 calls, the caching allocator's reserved memory must not keep
growing, and the process's resident set (/proc/self/statm) may grow by less than 20 MB.
"""

from __future__ import annotations

# Fixtures (ops, quanto_patched, recorder) are imported from other test modules and named as parameters.
# ruff: noqa: F811

import os
import resource

import pytest
import torch

import support as sp


pytestmark = [pytest.mark.gpu, sp.requires_gpu]

DEV = "cuda"
CALLS = int(os.environ.get("QK_MEMORY_CALLS", "10000"))
RSS_LIMIT = 20 << 20
RESERVED_SLACK = 64 << 20
K, N = 1024, 512


def rss_bytes() -> int:
    """Current resident set size (Linux /proc; elsewhere the peak, which only makes the check stricter)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _check_steady(call, what):
    for _ in range(300):  # warm-up
        call()
    torch.cuda.synchronize()
    allocated, reserved, rss = torch.cuda.memory_allocated(), torch.cuda.memory_reserved(), rss_bytes()
    for i in range(CALLS):
        call()
        if i % 2000 == 1999:
            torch.cuda.synchronize()  # keep the launch queue short; not needed for correctness
    torch.cuda.synchronize()
    d_alloc = torch.cuda.memory_allocated() - allocated
    d_reserved = torch.cuda.memory_reserved() - reserved
    d_rss = rss_bytes() - rss
    assert d_alloc == 0, f"{what}: {CALLS} calls left {d_alloc} bytes allocated on the device"
    assert d_reserved <= RESERVED_SLACK, f"{what}: reserved device memory grew by {d_reserved / 2**20:.1f} MiB"
    assert d_rss < RSS_LIMIT, f"{what}: host resident memory grew by {d_rss / 2**20:.1f} MiB over {CALLS} calls"


@pytest.mark.parametrize("fmt", ["fp8", "awq", "marlin"])
@pytest.mark.parametrize("m", [1, 64, 100], ids=lambda m: f"M{m}")
def test_10000_calls_leak_nothing(ops, fmt, m):
    g = sp.generator("memory", fmt, m)
    if fmt == "fp8":
        _, _, packed, s_perm = sp.fp8_weight(K, N, torch.float16, g)
        op = lambda x: ops.fp8_marlin_gemm(x, packed, s_perm)  # noqa: E731
    elif fmt == "awq":
        _, s, z, packed = sp.awq_weight(K, N, g)
        op = lambda x: ops.awq_int4_gemm(x, packed, s, z)  # noqa: E731
    else:
        _, s, z, packed = sp.mi4_weight(K, N, g)
        sperm, zp = sp.permute_block64(s), sp.permute_block64(z)
        op = lambda x: ops.marlin_int4_gemm(x, packed, sperm, zp, ops.SCALE_PERM_BLOCK64)  # noqa: E731
    x = torch.randn(m, K, generator=g, device=DEV, dtype=torch.float16)
    first = op(x)
    _check_steady(lambda: op(x), f"{fmt} M={m}")
    assert torch.equal(op(x), first) or m > sp.fused_limit(ops, fmt)


@pytest.mark.parametrize("m", [1, 64, 100], ids=lambda m: f"M{m}")
def test_10000_quanto_qfloat8_linear_calls_leak_nothing(quanto_patched, m):
    from optimum.quanto import freeze, qfloat8, quantize

    model, g = sp.linear_case(K, N, torch.bfloat16, ("memory-quanto", m))
    quantize(model, weights=qfloat8)
    freeze(model)
    x = torch.randn(m, K, generator=g, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        _check_steady(lambda: model(x), f"quanto qfloat8 Linear M={m}")
