"""Host (CPU) time per call of each entry point a compiled graph or a model reaches for an int8 or qfloat8
layer, at a shape the GPU finishes at once (M = 512, N = K = 512, bf16), so that the host is the bottleneck
(needs a CUDA GPU and optimum-quanto).

Under torch.compile a FLUX step waits on the host where the per-call Python of the quantized layers exceeds
what compiled bf16 spends (benchmarks/flux_step_profile.py); this lists that cost layer by layer, from the bare
C entry point through ctypes up to quanto's ops and QLinear, beside cuBLAS through F.linear, and profiles two
of them with cProfile. Run-to-run noise of such host timings on a shared machine reaches tens of percent:
compare rows within one run.

    python benchmarks/entry_host_time.py
"""

from __future__ import annotations

import cProfile
import pstats
import time

import torch
import torch.nn.functional as F

M, N, K = 512, 512, 512
CALLS, WARMUP = 400, 30


def host_us(fn):
    """(host-only, host + GPU) microseconds per call over CALLS back-to-back calls."""
    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(CALLS):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / CALLS * 1e6, (t2 - t0) / CALLS * 1e6


def cases():
    import optimum.quanto as q

    from quanto_kernels._native import abi
    from quanto_kernels.ops import _common, _int8

    dev, bf16 = "cuda", torch.bfloat16
    x = torch.randn(M, K, device=dev, dtype=bf16)
    x3 = x.view(1, M, K)
    wd = torch.randn(N, K, device=dev, dtype=bf16)
    b = torch.randn(N, device=dev, dtype=bf16)
    w8 = torch.randint(-127, 127, (N, K), device=dev, dtype=torch.int8)
    s = (torch.rand(N, 1, device=dev, dtype=bf16) + 0.5) / 100
    out = torch.empty(M, N, device=dev, dtype=bf16)

    def quantized(qtype):
        layer = torch.nn.Sequential(torch.nn.Linear(K, N)).to(dev, bf16)
        q.quantize(layer, weights=qtype)
        q.freeze(layer)
        return layer

    with torch.no_grad():
        l8, lf8 = quantized(q.qint8), quantized(q.qfloat8)
    dense = torch.nn.Linear(K, N).to(dev, bf16)
    wf8 = lf8[0].weight
    nbytes = _int8.FAMILY.gemm.workspace_bytes.lookup((M, N, K, abi.DTYPE_BFLOAT16, 0))
    ws = torch.empty(max(nbytes, 16), dtype=torch.uint8, device=dev)
    ptrs = dict(a=x.data_ptr(), w=w8.data_ptr(), scales=s.data_ptr(), bias=None, out=out.data_ptr(),
                workspace=ws.data_ptr(), workspace_bytes=nbytes, m=M, n=N, k=K, dtype=abi.DTYPE_BFLOAT16, device=0,
                stream=_common.stream_on(0))
    return {
        "bf16 F.linear": lambda: F.linear(x, wd),
        "bf16 F.linear + bias, 3-D": lambda: F.linear(x3, wd, b),
        "bf16 nn.Linear, 3-D": lambda: dense(x3),
        "int8: C entry point through ctypes": lambda: abi.int8_gemm(**ptrs),
        "int8: _int8.run_gemm": lambda: _int8.run_gemm(x, w8, s, None, N, K),
        "int8: _int8.matmul (dispatch rule)": lambda: _int8.matmul(x, w8, s, N, K),
        "int8: _int8.direct_linear, 3-D": lambda: _int8.direct_linear(x3, w8, s),
        "int8: op quanto_kernels::int8_linear, 3-D": lambda: torch.ops.quanto_kernels.int8_linear(x3, w8, s),
        "int8: op quanto::qbytes_mm, 3-D": lambda: torch.ops.quanto.qbytes_mm(x3, w8, s),
        "fp8: op quanto::gemm_f16f8_marlin": lambda: torch.ops.quanto.gemm_f16f8_marlin(
            x, b_q_weight=wf8._data._data, b_scales=wf8._scale, workspace=x.new_empty(0, dtype=torch.int32),
            num_bits=8, size_m=M, size_n=N, size_k=K),
        "int8: QLinear, 3-D (eager short path)": lambda: l8(x3),
        "fp8: QLinear, 3-D (eager short path)": lambda: lf8(x3),
    }


def main() -> None:
    import quanto_kernels  # noqa: F401  (patches quanto)

    table = cases()
    with torch.no_grad():
        for name, fn in table.items():
            host, total = host_us(fn)
            print(f"RESULT {name:45s} host {host:7.1f} us/call  (with GPU {total:7.1f})")
        for name in ("int8: op quanto::qbytes_mm, 3-D", "fp8: op quanto::gemm_f16f8_marlin"):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(300):
                table[name]()
            prof.disable()
            torch.cuda.synchronize()
            print(f"== cProfile, 300 calls: {name}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main()
