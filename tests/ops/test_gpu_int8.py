"""The int8 ops (``torch.ops.quanto_kernels.int8_dequantize`` / ``int8_gemm`` / ``int8_linear``) against fp64
oracles.

The weight is quanto's qint8 data as stored (docs/ops.md, "int8 weights"): (N, K) int8 codes and N
per-channel scales ((N, 1) or (N,)) in the activation dtype. Oracles (tests/support.py):

  * ``int8_dequantize`` must equal ``(w.float() * s.float()).to(dtype)`` bit for bit (the product of an
    8-bit code and an fp16/bf16 scale is exact in fp32, so that is the exact product rounded once), and
    quanto's own ``WeightQBytesTensor.dequantize()`` too;
  * ``int8_gemm`` is compared with the fp64 product ``a @ (W * s)^T`` by an element-wise bound per path
    (``support.int8_gemm_bound``: one rounding plus fp32 accumulation for the fused kernel; an extra
    weight rounding and cuBLAS's sums for dequantize + matmul), which holds at every output size, plus
    the suite's relative-Frobenius tolerance (``GEMM_TOL``) where the output has >= 64 elements; its
    error must be no worse than quanto's own ``dequantize()`` + ``torch.matmul`` (1.25x, plus a slack of
    2u/sqrt(M*N) for the noise of tiny outputs).

Every case draws fresh random inputs (seeded by its parameters; codes over the full -128..127 range,
activations standard normal), and poisons the caching allocator (0xFF bytes: NaN) right before the op,
so an unwritten output element (or an unwritten element of the dequantize path's temporary) shows.
Both paths are forced through ``ops.force_path`` and the C entry point that ran is recorded
(``native_calls``); the automatic choice must give the forced path's bits. Also: determinism, CUDA graph
capture + replay, ``torch.compile(fullgraph=True)``, ``torch.library.opcheck``.

The oracle self-checks at the top run on the CPU (no GPU, no library needed).
"""

from __future__ import annotations

import math

import pytest
import torch

import support as sp

DEV = "cuda"
GPU = [pytest.mark.gpu, sp.requires_gpu]
f16, bf16 = torch.float16, torch.bfloat16
DTYPES = [f16, bf16]


def _dtype_id(d):
    return {f16: "fp16", bf16: "bf16"}[d]


M_ALL = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 100, 300]
NS = [1, 5, 100, 136, 4101]
KS = [32, 96, 128, 4096, 48, 1000]  # 48 and 1000: K % 32 != 0, the dequantize path only
DEQ_SHAPES = [(n, k) for n in NS for k in KS]
# (N, K): every N and every K, N below/above/not a multiple of 64, the fused kernel's split-K shapes
# (small N, large K), and the dequantize-only K.
GEMM_SHAPES = [(1, 32), (5, 96), (64, 32), (100, 128), (256, 96), (136, 4096), (4101, 4096),
               (1, 1000), (100, 1000), (4101, 1000), (5, 48), (136, 48)]
GEMM_CASES = [(m, n, k) for (n, k) in GEMM_SHAPES for m in M_ALL]


def _mnk_id(case):
    m, n, k = case
    return f"M{m}-N{n}-K{k}"


def _entry(path):
    return {"gemv": "int8_gemv", "dequant": "int8_dequantize"}[path]


def _quanto_dequantize(w, s):
    """quanto's own WeightQBytesTensor.dequantize() of this weight (the formula quanto uses if it is absent)."""
    try:
        from optimum.quanto import qint8
        from optimum.quanto.tensor.weights.qbytes import WeightQBytesTensor
    except ImportError:
        return s.reshape(-1, 1) * w
    t = WeightQBytesTensor(qint8, 0, w.size(), w.stride(), w, s.reshape(-1, 1), None)
    with torch.no_grad():
        return t.dequantize()


def _check_gemm(out, a, wd, ref, dtype, path, what):
    m, n = a.shape[0], wd.shape[0]
    assert out.dtype == dtype and tuple(out.shape) == (m, n), f"{what}: {out.dtype} {tuple(out.shape)}"
    sp.assert_all_finite(out, what)
    bound = sp.int8_gemm_bound(a, wd, dtype, path)
    excess = (out.double() - ref).abs() - bound
    worst = int(excess.reshape(-1).argmax())
    assert float(excess.reshape(-1)[worst]) <= 0, (
        f"{what}: element {divmod(worst, n)} out={float(out.reshape(-1)[worst]):.6g} "
        f"ref={float(ref.reshape(-1)[worst]):.6g} exceeds the {path} bound {float(bound.reshape(-1)[worst]):.3g}; "
        f"{int((excess > 0).sum())} of {excess.numel()} elements over"
    )
    if m * n >= 64:
        sp.assert_gemm_close(out, ref, dtype, what)


def _no_worse_than_quanto(out, q, ref, dtype, what):
    m, n = out.shape
    u = sp.UNIT_ROUNDOFF[dtype]
    rel, rel_q = sp.rel_fro(out, ref), sp.rel_fro(q, ref)
    limit = 1.25 * rel_q + 2 * u / math.sqrt(m * n) + 2.0**-20
    assert rel <= limit, (f"{what}: relative error {rel:.3e} vs fp64, quanto's dequantize() + matmul {rel_q:.3e} "
                          f"(limit {limit:.3e})")


# =============================================================================================
# Oracle self-checks (CPU)
# =============================================================================================


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_oracle_rounded_dequant_is_the_exact_product_rounded_once(dtype):
    for n, k in [(1, 32), (5, 48), (136, 1000)]:
        g = sp.generator("oracle-int8-deq", n, k, str(dtype), device="cpu")
        w, s = sp.random_int8_weight(n, k, dtype, g, device="cpu")
        assert int(w.min()) == -128 and int(w.max()) == 127
        exact = sp.int8_dequant_reference(w, s)
        assert torch.equal(sp.int8_rounded_dequant(w, s, dtype), exact.to(dtype))
        assert torch.equal(sp.int8_rounded_dequant(w, s.reshape(n), dtype), exact.to(dtype))
        assert bool(((exact.to(dtype).double() - exact).abs() <= sp.UNIT_ROUNDOFF[dtype] * exact.abs()).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_oracle_quanto_dequantize_is_the_rounded_product(dtype):
    pytest.importorskip("optimum.quanto")
    g = sp.generator("oracle-int8-quanto", str(dtype), device="cpu")
    w, s = sp.random_int8_weight(100, 96, dtype, g, device="cpu")
    deq = _quanto_dequantize(w, s)
    assert deq.dtype == dtype and torch.equal(deq, sp.int8_rounded_dequant(w, s, dtype))


def _emulated(a, w, s, dtype, path, splits=1):
    """The two paths in plain torch on the CPU: fused (exact products, fp32 sum, scale in fp32, one
    rounding) and dequantize + GEMM with `splits` K-partials each rounded to dtype and summed in dtype
    (the pessimistic cuBLAS split-K)."""
    if path == "gemv":
        return ((a.float() @ w.float().t()) * s.float().reshape(1, -1)).to(dtype)
    wq = sp.int8_rounded_dequant(w, s, dtype).float()
    k = a.shape[1]
    step = -(-k // splits)
    acc = None
    for i in range(0, k, step):
        part = (a[:, i:i + step].float() @ wq[:, i:i + step].t()).to(dtype)
        acc = part if acc is None else (acc.float() + part.float()).to(dtype)
    return acc


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_oracle_int8_bound_accepts_both_paths_and_catches_wrong_indexing(dtype):
    for m, n, k in [(1, 1, 32), (3, 5, 96), (17, 100, 1000), (64, 136, 4096)]:
        g = sp.generator("oracle-int8-bound", m, n, k, str(dtype), device="cpu")
        w, s = sp.random_int8_weight(n, k, dtype, g, device="cpu")
        a = torch.randn(m, k, generator=g).to(dtype)
        wd = sp.int8_dequant_reference(w, s)
        ref = sp.matmul_reference(a, wd)
        bounds = {p: sp.int8_gemm_bound(a, wd, dtype, p) for p in ("gemv", "dequant")}
        good = {"gemv": _emulated(a, w, s, dtype, "gemv")}
        for splits in (1, 4, 16):
            good[f"dequant-split{splits}"] = _emulated(a, w, s, dtype, "dequant", splits)
        for name, out in good.items():
            over = sp.max_abs_over(out, ref, bounds[name.split("-")[0]])
            assert over <= 0, f"M={m} N={n} K={k} {name}: a correct emulation exceeds its bound by {over:.3g}"
        if m * n < 64:
            continue  # a single output that cancels to ~0 may hide an error; the larger shapes cannot
        sf = s.float().reshape(1, -1)
        broken = {
            "scale-of-next-channel": ((a.float() @ w.float().t()) * s.roll(1, 0).float().reshape(1, -1)).to(dtype),
            "lost-first-K-slice": ((a[:, 32:].float() @ w[:, 32:].float().t()) * sf).to(dtype),
            "codes-read-unsigned": ((a.float() @ w.view(torch.uint8).float().t()) * sf).to(dtype),
            "rows-of-next-channel": ((a.float() @ w.roll(1, 0).float().t()) * sf).to(dtype),
        }
        for name, out in broken.items():
            for path, bound in bounds.items():
                assert sp.max_abs_over(out, ref, bound) > 0, f"M={m} N={n} K={k}: {name} passes the {path} bound"


# =============================================================================================
# int8_dequantize
# =============================================================================================


@pytest.mark.parametrize("scales_shape", ["Nx1", "N"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("n,k", DEQ_SHAPES, ids=[f"N{n}-K{k}" for n, k in DEQ_SHAPES])
class TestInt8Dequantize:
    pytestmark = GPU

    def test_bit_exact(self, ops, native_calls, n, k, dtype, scales_shape):
        g = sp.generator("int8-deq", n, k, str(dtype), scales_shape)
        w, s = sp.random_int8_weight(n, k, dtype, g)
        s_arg = s.reshape(n) if scales_shape == "N" else s
        want = sp.int8_rounded_dequant(w, s, dtype)
        for front, fn in (("dispatch", ops.int8_dequantize), ("direct", ops.direct.int8_dequantize)):
            sp.poison_allocator()
            native_calls.clear()
            out = fn(w, s_arg)
            assert native_calls.names == ["int8_dequantize"], f"{front}: {native_calls.names}"
            assert out.dtype == dtype and tuple(out.shape) == (n, k) and out.is_contiguous()
            sp.assert_all_finite(out, f"int8_dequantize N={n} K={k} {_dtype_id(dtype)} via {front}")
            bad = out != want
            assert not bool(bad.any()), (
                f"int8_dequantize N={n} K={k} {_dtype_id(dtype)} via {front}: {int(bad.sum())} elements differ from "
                f"round(W * s); first at {tuple(bad.nonzero()[0].tolist())}"
            )
        # quanto's own dequantize() of the same data gives the same bits
        assert torch.equal(out, _quanto_dequantize(w, s))


# =============================================================================================
# int8_gemm
# =============================================================================================


class TestInt8Gemm:
    pytestmark = GPU

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("case", GEMM_CASES, ids=_mnk_id)
    def test_both_paths_against_fp64_and_quanto(self, ops, native_calls, case, dtype):
        m, n, k = case
        g = sp.generator("int8-gemm", m, n, k, str(dtype))
        w, s = sp.random_int8_weight(n, k, dtype, g)
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        wd = sp.int8_dequant_reference(w, s)
        ref = sp.matmul_reference(a, wd)
        limit = sp.fused_limit(ops, "int8")
        assert limit == 64, f"the int8 fused-kernel limit is {limit}; this test's M list was chosen around 64"
        fused_ok = m <= limit and k % 32 == 0
        outs = {}
        for path in ("gemv", "dequant"):
            what = f"int8_gemm M={m} N={n} K={k} {_dtype_id(dtype)} forced {path}"
            if path == "gemv" and not fused_ok:
                native_calls.clear()
                with ops.force_path("gemv"), pytest.raises(ValueError, match=r"^force_path\('gemv'\): "):
                    ops.int8_gemm(a, w, s)
                assert native_calls.names == [], f"{what}: refused, yet reached the library"
                continue
            with ops.force_path(path):
                sp.poison_allocator()
                native_calls.clear()
                out = ops.int8_gemm(a, w, s)
            assert native_calls.names == [_entry(path)], f"{what}: ran {native_calls.names}"
            _check_gemm(out, a, wd, ref, dtype, path, what)
            outs[path] = out
        # The rule without an override: the fused kernel exactly when M <= limit and K % 32 == 0.
        expected = "gemv" if fused_ok else "dequant"
        sp.poison_allocator()
        native_calls.clear()
        auto = ops.int8_gemm(a, w, s)
        assert native_calls.names == [_entry(expected)], f"M={m} K={k}: the rule ran {native_calls.names}"
        assert torch.equal(auto, outs[expected]), f"M={m} N={n} K={k}: the rule's result differs from {expected}'s"
        # No worse than quanto's own dequantize() + matmul.
        q = torch.matmul(a, _quanto_dequantize(w, s).t())
        for path, out in outs.items():
            _no_worse_than_quanto(out, q, ref, dtype, f"int8_gemm M={m} N={n} K={k} {_dtype_id(dtype)} {path}")

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("m", [1, 9, 64, 65], ids=lambda m: f"M{m}")
    def test_flat_scales_and_direct_front_end(self, ops, m, dtype):
        n, k = 136, 512
        g = sp.generator("int8-flat", m, str(dtype))
        w, s = sp.random_int8_weight(n, k, dtype, g)
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        ref = sp.matmul_reference(a, sp.int8_dequant_reference(w, s))
        sp.poison_allocator()
        out = ops.int8_gemm(a, w, s)
        sp.poison_allocator()
        flat = ops.int8_gemm(a, w, s.reshape(n))
        sp.poison_allocator()
        direct = ops.direct.int8_gemm(a, w, s.reshape(n))
        assert torch.equal(out, flat) and torch.equal(out, direct)
        path = "gemv" if m <= sp.fused_limit(ops, "int8") else "dequant"
        _check_gemm(out, a, sp.int8_dequant_reference(w, s), ref, dtype, path, f"int8_gemm M={m} flat scales")

    @pytest.mark.parametrize("path", ["auto", "gemv", "dequant"])
    @pytest.mark.parametrize("n,k", [(5, 4096), (136, 4096), (4101, 1000), (100, 96)],
                             ids=lambda v: str(v))
    def test_deterministic(self, ops, n, k, path):
        """Two calls (and more, with other allocations between them) give the same bits: the fused kernel's
        split-K partials are added in a fixed order."""
        dtype = bf16
        g = sp.generator("int8-determinism", n, k, path)
        w, s = sp.random_int8_weight(n, k, dtype, g)
        for m in (1, 7, 33, 64, 65, 300):
            if path == "gemv" and (m > sp.fused_limit(ops, "int8") or k % 32):
                continue
            a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
            with ops.force_path(None if path == "auto" else path):
                first = ops.int8_gemm(a, w, s)
                for rep in range(4):
                    spacer = torch.empty(4096 * (rep + 1) + 7, device=DEV)  # other addresses for the temporaries
                    again = ops.int8_gemm(a, w, s)
                    assert torch.equal(first, again), f"M={m} N={n} K={k} {path}: call {rep + 2} differs from the first"
                    del spacer
            assert torch.equal(ops.int8_dequantize(w, s), ops.int8_dequantize(w, s))


# =============================================================================================
# CUDA graphs, torch.compile, opcheck
# =============================================================================================


def _capture(fn):
    """Warm up on a side stream, then capture fn() into a CUDA graph; returns (graph, static output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize()
    return graph, out


GRAPH_CASES = [(1, 136, 4096, bf16), (5, 100, 128, f16), (64, 256, 1024, bf16), (65, 256, 1024, f16),
               (3, 100, 48, bf16), (300, 136, 4096, f16)]


class TestInt8GraphsAndCompile:
    pytestmark = GPU

    @pytest.mark.parametrize("m,n,k,dtype", GRAPH_CASES,
                             ids=[f"M{m}-N{n}-K{k}-{_dtype_id(d)}" for m, n, k, d in GRAPH_CASES])
    def test_gemm_captured_and_replayed_with_new_inputs_and_weights(self, ops, m, n, k, dtype):
        fused = m <= sp.fused_limit(ops, "int8") and k % 32 == 0
        path = "gemv" if fused else "dequant"
        w0, s0 = sp.random_int8_weight(n, k, dtype, sp.generator("int8-graph-w", m, n, k, 0))
        static_w, static_s = w0.clone(), s0.clone()
        static_x = torch.zeros(m, k, device=DEV, dtype=dtype)
        graph, out = _capture(lambda: ops.int8_gemm(static_x, static_w, static_s))
        for rep in range(4):
            g = sp.generator("int8-graph", m, n, k, str(dtype), rep)
            x = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
            if rep >= 2:  # new weights too, copied into the captured tensors
                w, s = sp.random_int8_weight(n, k, dtype, g)
                static_w.copy_(w)
                static_s.copy_(s)
            static_x.copy_(x)
            out.fill_(float("nan"))  # whatever the replay does not write stays NaN
            graph.replay()
            torch.cuda.synchronize()
            wd = sp.int8_dequant_reference(static_w, static_s)
            what = f"int8 M={m} N={n} K={k} {_dtype_id(dtype)} graph replay {rep}"
            _check_gemm(out, x, wd, sp.matmul_reference(x, wd), dtype, path, what)
            eager = ops.int8_gemm(x, static_w, static_s)
            if fused:
                assert torch.equal(out, eager), f"{what}: replay differs from the eager call"
            else:  # cuBLAS may choose another algorithm inside a capture: same values to rounding
                assert sp.rel_fro(out, eager) <= sp.GEMM_TOL[dtype].fro, f"{what}: replay far from the eager call"

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_dequantize_captured_and_replayed_with_new_weights(self, ops, dtype):
        n, k = 136, 1000
        static_w, static_s = sp.random_int8_weight(n, k, dtype, sp.generator("int8-graph-deq", 0))
        graph, out = _capture(lambda: ops.int8_dequantize(static_w, static_s))
        for rep in range(1, 4):
            w, s = sp.random_int8_weight(n, k, dtype, sp.generator("int8-graph-deq", str(dtype), rep))
            static_w.copy_(w)
            static_s.copy_(s)
            out.fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(out, sp.int8_rounded_dequant(w, s, dtype)), f"int8 dequantize replay {rep}"
            assert torch.equal(out, ops.int8_dequantize(w, s))

    def test_custom_ops_under_torch_compile_fullgraph(self, ops):
        try:
            import triton  # noqa: F401
            backend = "inductor"
        except Exception:  # noqa: BLE001 - no triton: inductor cannot generate GPU code
            backend = "aot_eager"
        n, k = 136, 512

        class Int8Module(torch.nn.Module):
            def __init__(self, dtype):
                super().__init__()
                g = sp.generator("int8-compile", str(dtype))
                w, s = sp.random_int8_weight(n, k, dtype, g)
                self.register_buffer("w", w)
                self.register_buffer("s", s)
                self.register_buffer("s_flat", s.reshape(n).clone())
                self.register_buffer("bias", 0.1 * torch.randn(n, generator=g, device=DEV).to(dtype))

            def forward(self, x):
                y = torch.ops.quanto_kernels.int8_gemm(x, self.w, self.s) + self.bias
                d = torch.ops.quanto_kernels.int8_dequantize(self.w, self.s_flat)
                return torch.relu(y), d

        for dtype in DTYPES:
            module = Int8Module(dtype)
            wd = sp.int8_dequant_reference(module.w, module.s)
            torch._dynamo.reset()
            compiled = torch.compile(module, fullgraph=True, backend=backend, dynamic=False)
            with torch.no_grad():
                for m in (1, 40, 100):
                    x = torch.randn(m, k, generator=sp.generator("int8-compile-x", m), device=DEV, dtype=dtype)
                    ey, ed = module(x)
                    try:
                        cy, cd = compiled(x)
                    except Exception as exc:  # noqa: BLE001 - report dynamo's reason in full
                        pytest.fail(f"torch.compile(fullgraph=True, backend={backend}) failed at M={m} "
                                    f"{_dtype_id(dtype)}: {type(exc).__name__}: {str(exc)[:4000]}")
                    assert torch.equal(cd, ed), f"compiled int8_dequantize differs ({backend})"
                    tol = 2 * sp.UNIT_ROUNDOFF[dtype]
                    torch.testing.assert_close(cy, ey, rtol=tol, atol=tol * float(ey.abs().max()))
                    ref = torch.relu(sp.matmul_reference(x, wd) + module.bias.double())
                    sp.assert_gemm_close(cy, ref, dtype, f"compiled int8 linear M={m} {_dtype_id(dtype)} ({backend})")
        torch._dynamo.reset()


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("m", [1, 16, 100, 300])
def test_int8_linear_takes_any_view_and_adds_the_bias(ops, native_calls, m, dtype):
    """int8_linear (what quanto's qint8 linear calls): leading dims, transposed / offset / sliced views
    (copied for the kernels, not refused), a bias fused where a kernel can read it; the same bits as
    int8_gemm on the dense activation plus the bias where both run the same path."""
    n, k = 136, 512
    g = sp.generator("int8-linear", m, str(dtype))
    w, s = sp.random_int8_weight(n, k, dtype, g)
    wd = sp.int8_dequant_reference(w, s)
    bias = torch.randn(n, generator=g, device=DEV).to(dtype)
    dense = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
    views = {
        "dense": dense,
        "3-D": dense.view(1, m, k),
        "transposed": dense.t().contiguous().t(),
        "offset-by-one-element": torch.cat([dense.new_zeros(1), dense.reshape(-1)])[1:].view(m, k),
        "column-slice": torch.cat([dense, dense], dim=1)[:, k:],
    }
    ref = sp.matmul_reference(dense, wd) + bias.double()
    for name, x in views.items():
        for b in (bias, None):
            what = f"int8_linear {name} M={m} {_dtype_id(dtype)} bias={b is not None}"
            sp.poison_allocator()
            native_calls.clear()
            out = ops.int8_linear(x, w, s, b)
            assert out.shape == tuple(x.shape[:-1]) + (n,) and out.dtype == dtype, what
            assert len(native_calls.names) >= 1 and all(c.startswith("int8_") for c in native_calls.names), (
                f"{what}: ran {native_calls.names}")
            want = ref if b is not None else ref - bias.double()
            sp.assert_gemm_close(out.reshape(m, n), want, dtype, what)
        assert torch.equal(ops.int8_linear(x, w, s), ops.int8_gemm(dense, w, s).view(out.shape)), name
    with pytest.raises(TypeError, match=r"^bias: "):
        ops.int8_linear(dense, w, s, bias.float())
    with pytest.raises(ValueError, match=r"^x: expected shape \(\.\.\., K=512\)"):
        ops.int8_linear(dense[:, :100], w, s)


def _opcheck_cases():
    def deq(n, k, dtype, flat):
        def build():
            w, s = sp.random_int8_weight(n, k, dtype, sp.generator("oc-i8d", n, k, str(dtype), flat))
            return (w, s.reshape(n) if flat else s)
        return build

    def gemm(m, n, k, dtype, flat):
        def build():
            g = sp.generator("oc-i8g", m, n, k, str(dtype), flat)
            w, s = sp.random_int8_weight(n, k, dtype, g)
            return (torch.randn(m, k, generator=g, device=DEV, dtype=dtype), w, s.reshape(n) if flat else s)
        return build

    def linear(lead, n, k, dtype, with_bias):
        def build():
            g = sp.generator("oc-i8l", lead, n, k, str(dtype), with_bias)
            w, s = sp.random_int8_weight(n, k, dtype, g)
            b = torch.randn(n, generator=g, device=DEV).to(dtype) if with_bias else None
            return (torch.randn(*lead, k, generator=g, device=DEV, dtype=dtype), w, s, b)
        return build

    return [
        ("linear-fp16-2x3-bias", "int8_linear", linear((2, 3), 100, 128, f16, True)),
        ("linear-bf16-M100", "int8_linear", linear((100,), 136, 96, bf16, False)),
        ("dequant-fp16", "int8_dequantize", deq(100, 96, f16, False)),
        ("dequant-bf16-flat-K48", "int8_dequantize", deq(136, 48, bf16, True)),
        ("gemm-fp16-M1", "int8_gemm", gemm(1, 100, 128, f16, False)),
        ("gemm-bf16-M3-flat", "int8_gemm", gemm(3, 136, 96, bf16, True)),
        ("gemm-fp16-M64", "int8_gemm", gemm(64, 256, 512, f16, False)),
        ("gemm-fp16-M100", "int8_gemm", gemm(100, 64, 256, f16, False)),
        ("gemm-bf16-M2-K48", "int8_gemm", gemm(2, 100, 48, bf16, False)),
    ]


_OPCHECK = _opcheck_cases()


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("name,op,build", _OPCHECK, ids=[c[0] for c in _OPCHECK])
def test_opcheck(ops, name, op, build):
    overload = getattr(torch.ops.quanto_kernels, op).default
    # Tolerances only matter for the compiled-vs-eager comparison (test_aot_dispatch_dynamic).
    torch.library.opcheck(overload, build(), atol=1e-2, rtol=2e-2)
