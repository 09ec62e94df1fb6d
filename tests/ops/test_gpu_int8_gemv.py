"""GPU tests of the register-loaded int8 GEMV (csrc/int8/int8_gemv_direct.cu): M <= 8 over quanto's (N, K)
int8 codes with N % 64 == 0 and K % 64 == 0, taken where its grid spreads evenly over the SMs (GEMV
engine v4 elsewhere); on sm_90+ a tile's two K-splits run as one cluster (QK_INT8_GEMV_CLUSTER=0 turns
that off). QK_INT8_GEMV_KERNEL=direct forces the kernel wherever it fits, =engine forces engine v4.

Every result is checked against the fp64 product by the int8 suite's element-wise bound of the fused path
(support.int8_gemm_bound) and its relative tolerance, on fresh random data (codes over -128..127) from a
poisoned allocator:
  * M = 1..8, K = 64 (one unit) to 8192, N of 1, 3 and 7 tiles, fp16 and bf16;
  * split-K from 1 to 16 splits (QK_INT8_GEMV_BLOCKS_PER_SM), with and without the cluster path, and
    splits forced up by the staging limit (K > 2048 on few tiles); the cluster, the in-launch finish (the
    last split of a tile sums them: common/splitk_tail.cuh; eagerly at M <= 4, at any M with
    QK_INT8_GEMV_FINISH=launch) and the split-K reduce (past M = 4, under graph capture, or forced with
    QK_INT8_GEMV_FINISH=reduce) give the same bits, also replayed from a CUDA graph;
  * the engine (override) agrees within the same bound;
  * where the kernel does not apply (M = 9, K % 64 == 32, N % 64 != 0) or its grid would be uneven the
    engine runs, and which kernels ran is read from the profiler;
  * a bias goes to the epilogue of every finish (unsplit, cluster, split-K reduce, engines v4 and v3) and
    is added before the single rounding; no separate add kernel runs.
"""

from __future__ import annotations

import pytest
import torch

import support as sp

DEV = "cuda"
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
DIRECT, REDUCE = "int8_gemv_direct_kernel", "splitk_reduce_kernel"

pytestmark = [pytest.mark.gpu, sp.requires_gpu]

SHAPES = [(64, 64), (192, 128), (448, 576), (64, 2112), (192, 4096), (448, 8192)]  # (N, K)


def _use(monkeypatch, kernel):
    """Selects a kernel: "auto" (the rule), "direct" (forced; clusters where they apply), "direct-nocluster",
    "direct-reduce" (no cluster, the split-K reduce kernel finishes), "direct-launch" (no cluster, the
    in-launch finish at any M), "engine"."""
    if kernel == "auto":
        monkeypatch.delenv("QK_INT8_GEMV_KERNEL", raising=False)
    else:
        monkeypatch.setenv("QK_INT8_GEMV_KERNEL", "engine" if kernel == "engine" else "direct")
    if kernel in ("direct-nocluster", "direct-reduce", "direct-launch"):
        monkeypatch.setenv("QK_INT8_GEMV_CLUSTER", "0")
    else:
        monkeypatch.delenv("QK_INT8_GEMV_CLUSTER", raising=False)
    if kernel == "direct-reduce":
        monkeypatch.setenv("QK_INT8_GEMV_FINISH", "reduce")
    elif kernel == "direct-launch":
        monkeypatch.setenv("QK_INT8_GEMV_FINISH", "launch")
    else:
        monkeypatch.delenv("QK_INT8_GEMV_FINISH", raising=False)


def _case(m, n, k, dtype, *tag):
    g = sp.generator("int8-gemv-direct", m, n, k, str(dtype), *tag)
    w, s = sp.random_int8_weight(n, k, dtype, g)
    a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    return a, w, s


def _gemm(ops, a, w, s):
    sp.poison_allocator()
    with ops.force_path("gemv"):
        return ops.int8_gemm(a, w, s)


def _check(out, a, w, s, dtype, what, bias=None):
    m, n = a.shape[0], w.shape[0]
    assert out.dtype == dtype and tuple(out.shape) == (m, n), what
    sp.assert_all_finite(out, what)
    wd = sp.int8_dequant_reference(w, s)
    ref = sp.matmul_reference(a, wd, bias)
    excess = (out.double() - ref).abs() - sp.int8_gemm_bound(a, wd, dtype, "gemv", bias)
    assert float(excess.max()) <= 0, f"{what}: {int((excess > 0).sum())} elements over the fused path's bound"
    if m * n >= 64:
        sp.assert_gemm_close(out, ref, dtype, what)


def _ran(names, kernel):
    return any(kernel in n for n in names)


@pytest.fixture(params=["direct", "direct-nocluster", "engine"])
def kernel(request, monkeypatch):
    _use(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", SHAPES, ids=[f"N{n}K{k}" for n, k in SHAPES])
def test_matches_fp64(ops, kernel, n, k, dtype):
    for m in (1, 2, 5, 8):
        a, w, s = _case(m, n, k, dtype)
        _check(_gemm(ops, a, w, s), a, w, s, dtype, f"{kernel} M={m} N={n} K={k} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_sm", ["1", "2", "4", "8", "16"])
def test_split_k(ops, monkeypatch, kernel, per_sm, dtype):
    """One tile per SM: the plan takes per_sm splits (2: the cluster path), capped by K / 64 and 16."""
    monkeypatch.setenv("QK_INT8_GEMV_BLOCKS_PER_SM", per_sm)
    for m, n, k in [(1, 64, 4096), (3, 64 * sp.sm_count(), 1024), (8, 128, 64 * 3), (6, 64 * sp.sm_count(), 2048 + 64)]:
        a, w, s = _case(m, n, k, dtype, "split", per_sm)
        _check(_gemm(ops, a, w, s), a, w, s, dtype, f"{kernel} blocks/SM {per_sm} M={m} N={n} K={k} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_finish_agrees_bit_for_bit(ops, monkeypatch, dtype):
    """The cluster (2 splits), the in-launch finish and the split-K reduce sum the splits in one order."""
    for per_sm in ("2", "4"):
        monkeypatch.setenv("QK_INT8_GEMV_BLOCKS_PER_SM", per_sm)
        for m, n, k in [(1, 64 * sp.sm_count(), 4096), (7, 64 * sp.sm_count(), 1024), (4, 192, 4096)]:
            a, w, s = _case(m, n, k, dtype, "agree")
            _use(monkeypatch, "direct-reduce")
            ref = _gemm(ops, a, w, s)
            for kernel in ("direct", "direct-nocluster", "direct-launch"):
                _use(monkeypatch, kernel)
                for _ in range(3):
                    assert torch.equal(_gemm(ops, a, w, s), ref), (
                        f"{kernel} and the reduce differ at M={m} N={n} K={k} blocks/SM {per_sm} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_name", ["direct-launch", "direct-nocluster"])
def test_in_launch_finish_replays_from_a_cuda_graph(ops, monkeypatch, dtype, kernel_name):
    """Each replay of a captured launch (same call ticket, new activations) counts its arrivals from zero.
    direct-nocluster: the rule gives the graph the reduce kernel and the eager call the in-launch finish."""
    monkeypatch.setenv("QK_INT8_GEMV_BLOCKS_PER_SM", "4")
    _use(monkeypatch, kernel_name)
    m, n, k = 3, 64 * sp.sm_count(), 2048
    a, w, s = _case(m, n, k, dtype, "graph")
    static_a = a.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), ops.force_path("gemv"):
        ops.int8_gemm(static_a, w, s)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), ops.force_path("gemv"):
        static_out = ops.int8_gemm(static_a, w, s)
    g = sp.generator("int8-gemv-graph-data", str(dtype))
    for i in range(20):
        static_a.copy_(torch.randn(m, k, generator=g, device=DEV, dtype=dtype))
        graph.replay()
        with ops.force_path("gemv"):
            want = ops.int8_gemm(static_a, w, s)
        assert torch.equal(static_out, want), f"replay {i} differs from the eager call ({dtype})"


def test_which_kernels_run(ops, monkeypatch):
    dtype = torch.bfloat16
    monkeypatch.setenv("QK_INT8_GEMV_BLOCKS_PER_SM", "2")
    a, w, s = _case(2, 64 * sp.sm_count(), 1024, dtype, "which")  # 2 splits, 2 blocks on every SM
    _use(monkeypatch, "auto")
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a, w, s))
    assert _ran(names, DIRECT) and not _ran(names, REDUCE), names  # a cluster, or the in-launch finish
    _use(monkeypatch, "direct-nocluster")  # the last split of each tile finishes: still one launch
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a, w, s))
    assert _ran(names, DIRECT) and not _ran(names, REDUCE), names
    a7, w7, s7 = _case(7, 64 * sp.sm_count(), 1024, dtype, "which", 7)  # past M = 4: the reduce kernel
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a7, w7, s7))
    assert _ran(names, DIRECT) and _ran(names, REDUCE), names
    _use(monkeypatch, "direct-launch")
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a7, w7, s7))
    assert _ran(names, DIRECT) and not _ran(names, REDUCE), names
    _use(monkeypatch, "direct-reduce")
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a, w, s))
    assert _ran(names, DIRECT) and _ran(names, REDUCE), names
    _use(monkeypatch, "engine")
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a, w, s))
    assert not _ran(names, DIRECT), names
    # One tile and 16 splits: 16 blocks, uneven on most GPUs (the busiest SM > 1.1x the average).
    _use(monkeypatch, "auto")
    a, w, s = _case(2, 64, 4096, dtype, "uneven")
    names = sp.cuda_kernels_run(lambda: _gemm(ops, a, w, s))
    even = -(-16 // sp.sm_count()) * sp.sm_count() * 10 <= 16 * 11
    assert _ran(names, DIRECT) == even, names
    _use(monkeypatch, "direct")
    for m, n, k in [(9, 128, 1024), (2, 128, 1024 + 32), (2, 136, 1024)]:  # past M, K % 64, N % 64
        a, w, s = _case(m, n, k, dtype, "engine-shapes")
        names = sp.cuda_kernels_run(lambda: _gemm(ops, a, w, s))
        assert not _ran(names, DIRECT), (m, n, k, names)
        _check(_gemm(ops, a, w, s), a, w, s, dtype, f"engine shape M={m} N={n} K={k}")


BIAS_PATHS = [
    pytest.param({"QK_INT8_GEMV_KERNEL": "direct"}, id="direct"),
    pytest.param({"QK_INT8_GEMV_KERNEL": "direct", "QK_INT8_GEMV_CLUSTER": "0"}, id="direct-nocluster"),
    pytest.param({"QK_INT8_GEMV_KERNEL": "engine"}, id="engine-v4"),
    pytest.param({"QK_GEMV_INT8_ENGINE": "v3"}, id="engine-v3"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("env", BIAS_PATHS)
def test_bias_in_the_epilogue(ops, monkeypatch, env, dtype):
    """The fused path's bias (quanto's Linear bias) is added in fp32 before the one rounding, by whichever
    kernel finishes the output: 1, 2 (the cluster) and 4 K-splits over one tile per SM, M = 9 on the engine."""
    from quanto_kernels.ops import _int8

    for key in ("QK_INT8_GEMV_KERNEL", "QK_INT8_GEMV_CLUSTER", "QK_GEMV_INT8_ENGINE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for per_sm in ("1", "2", "4"):
        monkeypatch.setenv("QK_INT8_GEMV_BLOCKS_PER_SM", per_sm)
        for m, n, k in [(1, 64 * sp.sm_count(), 1024), (3, 192, 576), (8, 448, 4096), (9, 192, 128)]:
            a, w, s = _case(m, n, k, dtype, "bias", per_sm)
            g = sp.generator("int8-gemv-bias", m, n, k, str(dtype), per_sm)
            bias = torch.randn(n, generator=g, device=DEV, dtype=dtype)
            sp.poison_allocator()
            names = sp.cuda_kernels_run(lambda: _int8.matmul(a, w, s.reshape(-1), n, k, bias))
            assert not any("elementwise" in nm for nm in names), f"a separate bias add ran: {names}"
            out = _int8.matmul(a, w, s.reshape(-1), n, k, bias)
            _check(out, a, w, s, dtype, f"{env} blocks/SM {per_sm} M={m} N={n} K={k} bias {dtype}", bias)
