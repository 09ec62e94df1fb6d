"""GPU tests of the small-M FP8 kernels behind ``qk_fp8_marlin_gemv`` (csrc/fp8_marlin/): the register-loaded
kernel (fp8_gemv_direct.cu: M <= 4 by default, up to 8 when QK_FP8_GEMV_KERNEL=direct forces it, where its
staged activations fit; on sm_90+ a tile's two K-splits run as one cluster and sum through distributed
shared memory, QK_FP8_GEMV_CLUSTER=0 turns that off) and the shared-memory ring kernel (fp8_gemv.cu: the
rest up to M = 64, and every M when QK_FP8_GEMV_KERNEL=ring forces it). Without QK_FP8_GEMV_BLOCKS_PER_SM
the split count comes from the balanced planner (csrc/common/balanced_splits.cpp).

Every result is compared with the float64 product of the exact operands on fresh random data, from a
poisoned allocator (an unwritten element reads as NaN):
  * the default dispatch and plan and both kernels forced, over M = 1..8, odd K (K / 16 not a multiple of
    the 4 warps), N of 1, 3 and 5 tiles;
  * split-K from 1 to many splits (forced through QK_FP8_GEMV_BLOCKS_PER_SM), incl. splits whose K
    ranges are uneven, splits owning fewer 16-row blocks than a block has warps, and 1, 2, 4, 8 and 16
    splits over one tile per SM (2: the cluster path);
  * the kernels give bit-identical results (same products, same summation order; cluster or split-K
    reduce), call after call;
  * the plan splits K far enough for the direct kernel to stage a split's activations (K / 16 / splits <=
    128); past 16 splits' worth the ring runs;
  * NaN codes make their channel NaN and no other;
  * a bias goes to the epilogue of every finish (unsplit, cluster, split-K reduce, GEMV engine v4) and is
    added before the single rounding: no separate add kernel runs, and the result is within the fp64
    bound; the kernels still agree bit for bit with a bias;
  * past one split (and no cluster), eagerly and at M <= 4, the register-loaded kernel finishes the tiles in
    the same launch (the last split of a tile sums them: common/splitk_tail.cuh); at larger M and under
    CUDA-graph capture the split-K reduce kernel finishes, and always after the ring kernel;
    QK_FP8_GEMV_FINISH=launch forces the in-launch finish, =reduce the reduce kernel. Every finish is
    bit-identical to the others, on stale and poisoned workspaces, replayed from a CUDA graph and on two
    streams at once;
  * which kernels ran is read from the profiler, not assumed (also inside a replayed graph).
"""

from __future__ import annotations

import pytest
import torch

import support as sp

DEV = "cuda"
DTYPES = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]
DIRECT, RING, REDUCE = "fp8_gemv_direct_kernel", "fp8_gemv_kernel", "splitk_reduce_kernel"

pytestmark = [pytest.mark.gpu, sp.requires_gpu]

# (K, N): one 16-row block; K/16 = 3, 5, 37 (fewer blocks than warps; uneven per warp); odd tile counts.
SHAPES = [(16, 64), (48, 192), (80, 320), (592, 64), (1040, 192), (4096, 320), (3072, 1024)]


def _case(m, k, n, dtype, *tag):
    g = sp.generator("fp8-gemv", m, k, n, str(dtype), *tag)
    codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
    x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    return codes, s, packed, s_perm, x


def _gemv(ops, x, packed, s_perm):
    sp.poison_allocator()
    return ops.fp8_marlin_gemm(x, packed, s_perm)


def _ran(names: set, kernel: str) -> bool:
    return any(kernel in n and (kernel != RING or DIRECT not in n) for n in names)


def _use(monkeypatch, kernel):
    """Select a kernel: "default" (the dispatch's choice), "direct" (clusters where they apply),
    "direct-nocluster", "direct-reduce" (no cluster, the split-K reduce kernel finishes), "direct-launch"
    (no cluster, the in-launch finish at any M) or "ring" (always the reduce kernel past one split). Without
    a -reduce / -launch suffix the register-loaded kernel's finish follows the rule (in-launch eagerly at
    M <= 4, else the reduce kernel)."""
    if kernel == "default":
        monkeypatch.delenv("QK_FP8_GEMV_KERNEL", raising=False)
    else:
        monkeypatch.setenv("QK_FP8_GEMV_KERNEL", "ring" if kernel == "ring" else "direct")
    if kernel in ("direct-nocluster", "direct-reduce", "direct-launch"):
        monkeypatch.setenv("QK_FP8_GEMV_CLUSTER", "0")
    else:
        monkeypatch.delenv("QK_FP8_GEMV_CLUSTER", raising=False)
    if kernel.endswith("-reduce"):
        monkeypatch.setenv("QK_FP8_GEMV_FINISH", "reduce")
    elif kernel.endswith("-launch"):
        monkeypatch.setenv("QK_FP8_GEMV_FINISH", "launch")
    else:
        monkeypatch.delenv("QK_FP8_GEMV_FINISH", raising=False)


def _clusters_run():
    return torch.cuda.get_device_capability(0)[0] >= 9


@pytest.fixture(params=["default", "direct", "direct-nocluster", "ring"])
def kernel(request, monkeypatch):
    _use(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", SHAPES, ids=[f"K{k}N{n}" for k, n in SHAPES])
def test_matches_fp64(ops, kernel, k, n, dtype):
    for m in (1, 2, 3, 5, 8):
        codes, s, packed, s_perm, x = _case(m, k, n, dtype)
        out = _gemv(ops, x, packed, s_perm)
        assert out.dtype == dtype and tuple(out.shape) == (m, n)
        ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s))
        sp.assert_gemm_close(out, ref, dtype, f"{kernel} M={m} K={k} N={n} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_sm", ["1", "2", "4", "8", "16"])
def test_split_k(ops, monkeypatch, kernel, per_sm, dtype):
    """More blocks per SM asks for more K-splits: every split count gives the fp64 result."""
    monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", per_sm)
    # One tile per SM: the plan takes per_sm splits (capped by K / 16 and 16).
    for m, k, n in [(1, 2048, 64), (4, 1040, 128), (7, 4096, 192), (8, 208, 64), (3, 2064, 64 * sp.sm_count())]:
        codes, s, packed, s_perm, x = _case(m, k, n, dtype, "split", per_sm)
        out = _gemv(ops, x, packed, s_perm)
        ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s))
        sp.assert_gemm_close(out, ref, dtype, f"{kernel} blocks/SM {per_sm} M={m} K={k} N={n} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_agree_bit_for_bit(ops, monkeypatch, dtype):
    """Same products, same summation order: the two kernels' outputs are identical whichever finish sums
    the splits (cluster, in-launch, split-K reduce), and so are repeats."""
    for per_sm in ("2", "4"):  # 2: the last shape has 2 splits (the cluster path); 4: 4 splits
        monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", per_sm)
        for m, k, n in [(1, 4096, 320), (3, 1040, 192), (8, 3072, 1024), (5, 48, 64), (2, 4096, 64 * sp.sm_count())]:
            codes, s, packed, s_perm, x = _case(m, k, n, dtype, "agree")
            _use(monkeypatch, "ring")
            ring = _gemv(ops, x, packed, s_perm)
            for kernel in ("direct", "direct-nocluster", "direct-reduce", "direct-launch"):
                _use(monkeypatch, kernel)
                for _ in range(3):
                    out = _gemv(ops, x, packed, s_perm)
                    assert torch.equal(out, ring), (
                        f"{kernel} and ring kernels differ at M={m} K={k} N={n} blocks/SM {per_sm} {dtype}")


def test_which_finish_runs(ops, monkeypatch):
    """One tile per SM at 2 and 4 blocks per SM: 2 and 4 splits. Eagerly at M = 2 the register-loaded kernel
    finishes them itself (with a cluster for 2 splits on sm_90+, else the last split of each tile): no
    split-K reduce runs. The ring kernel always leaves them to the reduce kernel, also at M = 2 and when
    QK_FP8_GEMV_FINISH=launch asks for the in-launch finish; =reduce asks for the reduce kernel at any M."""
    _, _, packed, s_perm, x = _case(2, 1024, 64 * sp.sm_count(), torch.float16, "one-launch")
    for per_sm in ("2", "4"):
        monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", per_sm)
        for kernel in ("direct", "direct-nocluster", "direct-launch"):
            _use(monkeypatch, kernel)
            names = sp.cuda_kernels_run(lambda: _gemv(ops, x, packed, s_perm))
            assert _ran(names, DIRECT) and not _ran(names, REDUCE), (per_sm, kernel, names)
        _use(monkeypatch, "direct-reduce")
        names = sp.cuda_kernels_run(lambda: _gemv(ops, x, packed, s_perm))
        assert _ran(names, DIRECT) and _ran(names, REDUCE), (per_sm, names)
        _use(monkeypatch, "ring")
        for finish in (None, "launch"):
            if finish is not None:
                monkeypatch.setenv("QK_FP8_GEMV_FINISH", finish)
            names = sp.cuda_kernels_run(lambda: _gemv(ops, x, packed, s_perm))
            assert _ran(names, RING) and _ran(names, REDUCE), (per_sm, "ring", finish, names)


def test_graph_capture_takes_the_reduce_kernel(ops, monkeypatch):
    """A launch captured into a CUDA graph pays its host cost once, so the rule gives it the split-K reduce
    kernel (faster on the GPU) even where an eager call finishes in the launch; its replays match."""
    monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", "4")
    _use(monkeypatch, "direct-nocluster")
    _, _, packed, s_perm, x = _case(2, 2048, 64 * sp.sm_count(), torch.bfloat16, "capture-rule")
    eager = sp.cuda_kernels_run(lambda: _gemv(ops, x, packed, s_perm))
    assert _ran(eager, DIRECT) and not _ran(eager, REDUCE), eager
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.fp8_marlin_gemm(x, packed, s_perm)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.fp8_marlin_gemm(x, packed, s_perm)
    replayed = sp.cuda_kernels_run(graph.replay)
    assert _ran(replayed, DIRECT) and _ran(replayed, REDUCE), replayed
    assert torch.equal(out, _gemv(ops, x, packed, s_perm))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_name,m", [("direct-launch", 3), ("direct-launch", 7), ("direct-nocluster", 3)])
def test_in_launch_finish_replays_from_a_cuda_graph(ops, monkeypatch, dtype, kernel_name, m):
    """A captured launch keeps its call ticket; the last split of each tile clears the tile's arrival word,
    so every replay (with new activations copied in) counts from zero again and matches the eager result
    (which finishes the same way, or, by the rule, in the launch while the graph took the reduce kernel)."""
    monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", "4")
    _use(monkeypatch, kernel_name)
    k, n = 2048, 64 * sp.sm_count()
    codes, s, packed, s_perm, x = _case(m, k, n, dtype, "graph")
    static_x = x.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.fp8_marlin_gemm(static_x, packed, s_perm)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = ops.fp8_marlin_gemm(static_x, packed, s_perm)
    g = sp.generator("fp8-gemv-graph-data", str(dtype))
    for i in range(20):
        static_x.copy_(torch.randn(m, k, generator=g, device=DEV, dtype=dtype))
        graph.replay()
        want = ops.fp8_marlin_gemm(static_x, packed, s_perm)
        assert torch.equal(static_out, want), f"{kernel_name}: replay {i} differs from the eager call ({dtype})"


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_launch_finish_on_two_streams_at_once(ops, monkeypatch, dtype):
    """Two products on two streams, back to back many times: each call counts arrivals in its own
    workspace, so neither disturbs the other."""
    monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", "4")
    _use(monkeypatch, "direct-launch")
    k, n = 2048, 64 * sp.sm_count()
    cases = [_case(m, k, n, dtype, "streams", m) for m in (1, 7)]  # the register-loaded kernel, forced to M = 7
    refs = [ops.fp8_marlin_gemm(x, packed, s_perm) for _, _, packed, s_perm, x in cases]
    streams = [torch.cuda.Stream() for _ in cases]
    outs = [[], []]
    torch.cuda.synchronize()
    for _ in range(25):
        for j, ((_, _, packed, s_perm, x), st) in enumerate(zip(cases, streams)):
            with torch.cuda.stream(st):
                outs[j].append(ops.fp8_marlin_gemm(x, packed, s_perm))
    torch.cuda.synchronize()
    for j, ref in enumerate(refs):
        for i, out in enumerate(outs[j]):
            assert torch.equal(out, ref), f"stream {j} call {i} differs ({dtype})"


def test_each_kernel_runs_where_it_should(ops, monkeypatch):
    dtype = torch.bfloat16
    _, _, packed, s_perm, _ = _case(4, 1024, 128, dtype, "which")
    # (override, M, the kernel that must run): by default the direct kernel takes M <= 4, the ring the
    # rest; forced, the direct kernel takes up to its 8 rows and the ring every M.
    cases = [(None, 1, DIRECT), (None, 4, DIRECT), (None, 5, RING), (None, 8, RING), (None, 9, RING),
             ("direct", 5, DIRECT), ("direct", 8, DIRECT), ("direct", 9, RING), ("ring", 1, RING), ("ring", 4, RING)]
    for override, m, kernel in cases:
        if override is None:
            monkeypatch.delenv("QK_FP8_GEMV_KERNEL", raising=False)
        else:
            monkeypatch.setenv("QK_FP8_GEMV_KERNEL", override)
        x = torch.randn(m, 1024, device=DEV, dtype=dtype)
        names = sp.cuda_kernels_run(lambda: _gemv(ops, x, packed, s_perm))
        other = RING if kernel == DIRECT else DIRECT
        assert _ran(names, kernel) and not _ran(names, other), (override, m, names)


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_k_splits_for_the_direct_kernel(ops, monkeypatch, dtype):
    """One split would own K / 16 = 136 blocks, more than the direct kernel stages (128): the plan splits
    twice instead and the direct kernel runs. Past 16 splits' worth (K / 16 > 2048) the ring runs."""
    monkeypatch.delenv("QK_FP8_GEMV_KERNEL", raising=False)
    for per_sm in ("1", None):  # forced: more tiles than SMs asks for one split; and the balanced plan
        if per_sm is None:
            monkeypatch.delenv("QK_FP8_GEMV_BLOCKS_PER_SM", raising=False)
        else:
            monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", per_sm)
        for m, k, n, kernel in [(2, 136 * 16, 64 * (sp.sm_count() + 1), DIRECT), (3, 2064 * 16, 64, RING)]:
            codes, s, packed, s_perm, x = _case(m, k, n, dtype, "long-k")
            names = sp.cuda_kernels_run(lambda: _gemv(ops, x, packed, s_perm))
            assert _ran(names, kernel) and not _ran(names, DIRECT if kernel == RING else RING), (k, n, names)
            out = _gemv(ops, x, packed, s_perm)
            ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s))
            sp.assert_gemm_close(out, ref, dtype, f"long K M={m} K={k} N={n} blocks/SM {per_sm} {dtype}")


# K = 256: a unit or two per warp (the register-loaded kernel's unit-by-unit tail); 4096: whole groups of
# four units per warp, one NaN test per group; 4144: groups and a tail.
@pytest.mark.parametrize("k", [256, 4096, 4144])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_codes_poison_only_their_channel(ops, kernel, dtype, k):
    x, packed, s_perm, bad, ref = sp.fp8_nan_case(3, k, 192, dtype)
    sp.assert_nan_only_in(_gemv(ops, x, packed, s_perm), bad, ref, dtype, f"{kernel} kernel K={k} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_in_the_epilogue(ops, monkeypatch, kernel, dtype):
    """The fused path's bias (quanto's Linear bias) is added in fp32 before the one rounding by whichever
    kernel finishes the output: 1, 2 (the cluster) and 4 K-splits over one tile per SM, and M = 13 (ring)."""
    from quanto_kernels.ops import _fp8_marlin

    for per_sm in ("1", "2", "4"):
        monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", per_sm)
        for m, k, n in [(1, 1024, 64 * sp.sm_count()), (3, 1040, 192), (8, 4096, 320), (13, 2048, 128)]:
            codes, s, packed, s_perm, x = _case(m, k, n, dtype, "bias", per_sm)
            g = sp.generator("fp8-gemv-bias", m, k, n, str(dtype), per_sm)
            bias = torch.randn(n, generator=g, device=DEV, dtype=dtype)
            sp.poison_allocator()
            names = sp.cuda_kernels_run(lambda: _fp8_marlin.matmul(x, packed, s_perm, n, k, bias))
            assert not any("elementwise" in nm for nm in names), f"a separate bias add ran: {names}"
            out = _fp8_marlin.matmul(x, packed, s_perm, n, k, bias)
            ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
            sp.assert_gemm_close(out, ref, dtype, f"{kernel} blocks/SM {per_sm} M={m} K={k} N={n} bias {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_kernels_agree_bit_for_bit(monkeypatch, dtype):
    """With a bias too, the ring kernel, the direct kernel, the cluster and the split-K reduce give one result."""
    from quanto_kernels.ops import _fp8_marlin

    monkeypatch.setenv("QK_FP8_GEMV_BLOCKS_PER_SM", "2")  # the last shape: 2 splits, the cluster path
    for m, k, n in [(1, 4096, 320), (3, 1040, 192), (2, 4096, 64 * sp.sm_count())]:
        _, _, packed, s_perm, x = _case(m, k, n, dtype, "bias-agree")
        bias = torch.randn(n, device=DEV, dtype=dtype)
        _use(monkeypatch, "ring")
        ring = _fp8_marlin.matmul(x, packed, s_perm, n, k, bias)
        for kernel in ("direct", "direct-nocluster"):
            _use(monkeypatch, kernel)
            out = _fp8_marlin.matmul(x, packed, s_perm, n, k, bias)
            assert torch.equal(out, ring), f"{kernel} and ring kernels differ with a bias at M={m} K={k} N={n} {dtype}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_on_the_engine(monkeypatch, dtype):
    """FP8 on GEMV engine v4 (QK_GEMV_FP8_ENGINE=1, a test override) adds the bias in its epilogue too."""
    from quanto_kernels.ops import _fp8_marlin

    monkeypatch.setenv("QK_GEMV_FP8_ENGINE", "1")
    for m, k, n in [(1, 2048, 256), (5, 1024, 192), (16, 4096, 448)]:
        codes, s, packed, s_perm, x = _case(m, k, n, dtype, "bias-engine")
        bias = torch.randn(n, device=DEV, dtype=dtype)
        sp.poison_allocator()
        names = sp.cuda_kernels_run(lambda: _fp8_marlin.matmul(x, packed, s_perm, n, k, bias))
        assert any("gemv_v4_kernel" in nm for nm in names) and not any("elementwise" in nm for nm in names), names
        out = _fp8_marlin.matmul(x, packed, s_perm, n, k, bias)
        ref = sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s), bias)
        sp.assert_gemm_close(out, ref, dtype, f"engine M={m} K={k} N={n} bias {dtype}")
