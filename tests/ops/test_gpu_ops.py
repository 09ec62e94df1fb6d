"""GPU tests of the ops in ``quanto_kernels.ops`` (``torch.ops.quanto_kernels.*``).

Every op result is checked against an independent oracle: layouts are rebuilt in plain torch from the
formulas of docs/layouts.md (tests/support.py) and GEMMs are compared with a float64 product of
the exact dequantized weight. Outputs are allocated by the ops with ``torch.empty``; the caching
allocator is poisoned with 0xFF bytes (NaN in fp16/bf16/fp32) right before each call so that an
element a kernel never writes is caught. Each case draws its own random data (seeded by its
parameters).

Layout:
  * oracle self-checks: the layout formulas in support.py against quanto's own packers (CPU-capable
    ones run anywhere; the CUDA-only ones need the GPU);
  * TestUnpack, TestMarlinRepack, TestFp8Marlin, TestAwqInt4, TestMarlinInt4: results;
  * TestOpcheck: torch.library.opcheck on every op;
  * TestQuantoInProcess: quanto's own classes and F.linear through the shim (this process).
"""

from __future__ import annotations

import math

import pytest
import torch

import support as sp

DEV = "cuda"
GPU = [pytest.mark.gpu, sp.requires_gpu]
DTYPES = [torch.float16, torch.bfloat16]
DTYPE_IDS = {torch.float16: "fp16", torch.bfloat16: "bf16"}

# Activation rows: around every plausible small-M/large-M switch, tile edges, and large M.
M_ALL = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 129, 255, 1024, 4608]
M_SUB = [1, 16, 17, 1024, 4608]


def _dtype_id(d):
    return DTYPE_IDS.get(d, str(d))


def _mkn_id(case):
    m, k, n = case
    return f"M{m}-K{k}-N{n}"


def kn_ids(shapes):
    return [f"K{k}-N{n}" for k, n in shapes]


# (K, N) shape lists of the smaller parametrizations.
REPACK_PERM_SHAPES = [(64, 64), (256, 192), (1024, 128)]
AWQ_QUANTO_SHAPES = [(128, 128), (384, 256), (256, 132), (1024, 384)]
MI4_DEQ_SHAPES = [(128, 64), (128, 256), (384, 192), (4096, 3072)]
MI4_QUANTO_SHAPES = [(128, 256), (384, 192), (1024, 128)]
Q_FP8_SHAPES = [(256, 384), (4096, 3072)]
Q_AWQ_SHAPES = [(384, 256), (4096, 3072)]
Q_MI4_SHAPES = [(128, 256), (384, 256)]
Q_PACK_SHAPES = [(64, 128), (3072, 192)]


# =============================================================================================
# Oracle self-checks: support.py's layout formulas against quanto's own code.
# =============================================================================================


def test_oracle_unpack_formula_inverts_quanto_pack_weights():
    # Not compared with torch.ops.quanto.unpack on CPU: that is quanto's C++ extension, which quanto
    # JIT-compiles on first use (about a minute, and a compiler is needed).
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.tensor.packed import pack_weights

    for bits in (2, 4):
        for shape in [(1,), (5,), (7, 3), (129, 64), (4, 5, 6)]:
            g = sp.generator("oracle-unpack", bits, shape, device="cpu")
            x = torch.randint(0, 2**bits, shape, generator=g, dtype=torch.uint8)
            out = sp.unpack_reference(pack_weights(x, bits), bits)
            assert torch.equal(out[: shape[0]], x)
            assert int(out[shape[0]:].sum()) == 0
    # The examples of docs/layouts.md, "Packed sub-byte tensors".
    assert pack_weights(torch.tensor([3, 7, 1, 15, 9], dtype=torch.uint8), 4).tolist() == [0xF3, 0x97, 0x01]
    assert sp.unpack_reference(torch.tensor([0xF3, 0x97, 0x01], dtype=torch.uint8), 4).tolist() == [3, 7, 1, 15, 9, 0]
    assert pack_weights(torch.tensor([1, 2, 3, 0, 1, 2, 3, 0], dtype=torch.uint8), 2).tolist() == [221, 34]


def test_oracle_fp8_repack_input_matches_quanto():
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.tensor.weights.marlin.fp8.packed import pack_fp8_as_int32

    g = sp.generator("oracle-fp8-input", device="cpu")
    codes = sp.random_fp8_codes(192, 64, g, device="cpu")
    assert not bool(((codes == 0x7F) | (codes == 0xFF)).any())
    assert torch.equal(sp.fp8_pack_as_int32(codes), pack_fp8_as_int32(codes.view(torch.float8_e4m3fn).t()))


def test_oracle_fp8_marlin_layout_documented_examples():
    # (n, k) of bytes 0..3 of the words listed in docs/layouts.md, "FP8 Marlin layout", read through an index "weight".
    n, k = 128, 32
    idx = torch.arange(n * k, dtype=torch.int64).reshape(n, k)
    kt, c, t, w, h, b = sp._grid("cpu", k // 16, n // 64, 32, 4, 2, 4)
    d = torch.tensor(sp._FP8_D)[b]
    flat = sp._gather(idx, 64 * c + 16 * w + 8 * h + t // 4, 16 * kt + 2 * (t % 4) + d).reshape(k // 16, 4 * n, 4)
    examples = {
        (0, 0): [(0, 0), (0, 8), (0, 1), (0, 9)],
        (0, 1): [(8, 0), (8, 8), (8, 1), (8, 9)],
        (0, 7): [(56, 0), (56, 8), (56, 1), (56, 9)],
        (0, 8): [(0, 2), (0, 10), (0, 3), (0, 11)],
        (0, 32): [(1, 0), (1, 8), (1, 1), (1, 9)],
        (0, 255): [(63, 6), (63, 14), (63, 7), (63, 15)],
        (0, 256): [(64, 0), (64, 8), (64, 1), (64, 9)],
        (1, 0): [(0, 16), (0, 24), (0, 17), (0, 25)],
    }
    for (row, col), want in examples.items():
        got = [(int(v) // k, int(v) % k) for v in flat[row, col]]
        assert got == want, (row, col)


def test_oracle_marlin_int4_layout_matches_quanto_pack():
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.tensor.weights.marlin.int4 import packed as i4p

    for n, k in [(64, 16), (128, 128), (192, 384)]:
        g = sp.generator("oracle-i4", n, k, device="cpu")
        codes = sp.random_int4_codes(n, k, g, device="cpu")
        assert torch.equal(sp.marlin_int4_layout(codes), i4p.pack(codes)), (n, k)


def test_oracle_scale_permutations_match_quanto():
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.tensor.weights.marlin.fp8.packed import get_scale_perms
    from optimum.quanto.tensor.weights.marlin.permutations import marlin_permute

    assert torch.equal(sp.block32_index(32), get_scale_perms())
    for groups, n in [(1, 64), (1, 256), (2, 128), (3, 256), (24, 3072)]:
        s = torch.randn(groups, n, generator=sp.generator("oracle-perm", groups, n, device="cpu"))
        mine = sp.permute_block32(s) if groups == 1 else sp.permute_block64(s)
        assert torch.equal(marlin_permute(s), mine), (groups, n)


@pytest.mark.gpu
@sp.requires_gpu
def test_poison_allocator_reaches_fresh_outputs():
    """The oracle for unwritten outputs: torch.empty after poison_allocator() reads as 0xFF / NaN."""
    sizes = [(7, torch.float16), (4096, torch.bfloat16), (300_000, torch.float32), (5 << 20, torch.float16),
             (40 << 20, torch.bfloat16), (1000, torch.uint8), (3 << 20, torch.int32)]
    for numel, dtype in sizes:
        sp.poison_allocator()
        t = torch.empty(numel, dtype=dtype, device=DEV)
        if dtype.is_floating_point:
            assert bool(torch.isnan(t).all()), f"torch.empty({numel}, {dtype}) after poisoning is not all NaN"
        else:
            assert bool((t.view(torch.uint8) == sp.POISON_BYTE).all()), f"torch.empty({numel}, {dtype}) not poisoned"
        del t


# =============================================================================================
# unpack
# =============================================================================================

UNPACK_SHAPES = [(1,), (5,), (7, 3), (129, 64), (64, 128, 3), (1023, 517), (4096, 1024)]


@pytest.mark.parametrize("shape", UNPACK_SHAPES, ids=sp.describe)
@pytest.mark.parametrize("bits", [2, 4], ids=lambda b: f"bits{b}")
class TestUnpack:
    pytestmark = GPU

    def test_matches_formula(self, ops, bits, shape):
        g = sp.generator("unpack", bits, shape)
        packed = torch.randint(0, 256, shape, generator=g, device=DEV, dtype=torch.uint8)
        sp.poison_allocator()
        out = ops.unpack(packed, bits)
        assert out.dtype == torch.uint8
        assert tuple(out.shape) == (shape[0] * (8 // bits),) + tuple(shape[1:])
        assert int(out.max()) < 2**bits, "values above the bit mask: unwritten (poisoned) output"
        ref = sp.unpack_reference(packed, bits)
        bad = out != ref
        assert not bool(bad.any()), f"{int(bad.sum())} elements differ; first at {tuple(bad.nonzero()[0].tolist())}"

    def test_inverts_quanto_pack_weights(self, ops, bits, shape):
        pytest.importorskip("optimum.quanto")
        from optimum.quanto.tensor.packed import pack_weights

        g = sp.generator("unpack-roundtrip", bits, shape)
        x = torch.randint(0, 2**bits, shape, generator=g, device=DEV, dtype=torch.uint8)
        packed = pack_weights(x, bits)
        assert packed.shape[0] == math.ceil(shape[0] / (8 // bits))
        sp.poison_allocator()
        out = ops.unpack(packed, bits)
        assert torch.equal(out[: shape[0]], x)
        if out.shape[0] > shape[0]:  # padding rows come out as zeros
            assert int(out[shape[0]:].max()) == 0


# =============================================================================================
# marlin_repack
# =============================================================================================

REPACK8_SHAPES = [(16, 64), (16, 192), (64, 64), (64, 192), (128, 64), (128, 3072), (3072, 64), (3072, 192),
                  (3072, 3072)]
REPACK4_SHAPES = [(16, 64), (128, 128), (384, 192), (1024, 256), (3072, 3072)]


class TestMarlinRepack:
    pytestmark = GPU

    @pytest.mark.parametrize("k,n", REPACK8_SHAPES, ids=kn_ids(REPACK8_SHAPES))
    def test_fp8_matches_documented_layout_and_quanto_unpack(self, ops, k, n):
        from optimum.quanto.tensor.weights.marlin.fp8.packed import MarlinF8PackedTensor

        g = sp.generator("repack8", k, n)
        codes = sp.random_fp8_codes(n, k, g)
        b = sp.fp8_pack_as_int32(codes)
        sp.poison_allocator()
        out = ops.marlin_repack(b, sp.empty_perm(), k, n, 8)
        assert out.dtype == torch.int32 and tuple(out.shape) == (k // 16, 4 * n)
        bad = out != sp.fp8_marlin_layout(codes)
        assert not bool(bad.any()), f"{int(bad.sum())} words differ; first at {tuple(bad.nonzero()[0].tolist())}"
        # quanto's own decoder (used by dequantize(), serialization, .to('cpu')) inverts it exactly.
        unpacked = MarlinF8PackedTensor(out, size=torch.Size((n, k)), stride=(k, 1)).unpack()
        assert tuple(unpacked.shape) == (n, k)
        assert torch.equal(unpacked.view(torch.uint8), codes)

    @pytest.mark.parametrize("k,n", REPACK4_SHAPES, ids=kn_ids(REPACK4_SHAPES))
    def test_int4_matches_marlin_int4_layout(self, ops, k, n):
        from optimum.quanto.tensor.weights.marlin.int4 import packed as i4p

        g = sp.generator("repack4", k, n)
        codes = sp.random_int4_codes(n, k, g)
        sp.poison_allocator()
        out = ops.marlin_repack(sp.int4_pack_as_int32(codes), sp.empty_perm(), k, n, 4)
        assert out.dtype == torch.int32 and tuple(out.shape) == (k // 16, 2 * n)
        ref = sp.marlin_int4_layout(codes)
        bad = out != ref
        assert not bool(bad.any()), f"{int(bad.sum())} words differ; first at {tuple(bad.nonzero()[0].tolist())}"
        # The same words as quanto's MarlinInt4PackedTensor packer, and its unpacker inverts them.
        assert torch.equal(out, i4p.pack(codes))
        assert torch.equal(i4p.unpack(out, (n, k)), codes)

    @pytest.mark.parametrize("num_bits", [4, 8], ids=lambda b: f"bits{b}")
    @pytest.mark.parametrize("k,n", REPACK_PERM_SHAPES, ids=kn_ids(REPACK_PERM_SHAPES))
    def test_perm_takes_rows_from_perm(self, ops, num_bits, k, n):
        g = sp.generator("repack-perm", num_bits, k, n)
        if num_bits == 8:
            codes, pack, layout = sp.random_fp8_codes(n, k, g), sp.fp8_pack_as_int32, sp.fp8_marlin_layout
        else:
            codes, pack, layout = sp.random_int4_codes(n, k, g), sp.int4_pack_as_int32, sp.marlin_int4_layout
        perm = torch.randperm(k, generator=g, device=DEV).to(torch.int32)
        sp.poison_allocator()
        out = ops.marlin_repack(pack(codes), perm, k, n, num_bits)
        permuted = codes[:, perm.long()]  # logical row k takes source row perm[k]
        assert torch.equal(out, layout(permuted))
        assert torch.equal(out, ops.marlin_repack(pack(permuted), sp.empty_perm(), k, n, num_bits))
        assert not torch.equal(out, layout(codes))  # the permutation did something

    @pytest.mark.parametrize("bad", ["negative", "equal_to_k", "huge", "short", "long"])
    def test_rejects_bad_perm(self, ops, bad):
        k, n = 64, 64
        codes = sp.random_fp8_codes(n, k, sp.generator("repack-badperm", bad))
        perm = torch.arange(k, dtype=torch.int32, device=DEV)
        if bad == "negative":
            perm[3] = -1
        elif bad == "equal_to_k":
            perm[5] = k
        elif bad == "huge":
            perm[0] = 2**31 - 1
        elif bad == "short":
            perm = perm[: k - 1].clone()
        else:
            perm = torch.arange(k + 1, dtype=torch.int32, device=DEV)
        with pytest.raises(ValueError, match=r"^perm: "):
            ops.marlin_repack(sp.fp8_pack_as_int32(codes), perm, k, n, 8)

    def test_rejects_bad_sizes(self, ops):
        codes = sp.random_fp8_codes(64, 64, sp.generator("repack-badsizes"))
        b = sp.fp8_pack_as_int32(codes)
        with pytest.raises(ValueError, match=r"^num_bits: "):
            ops.marlin_repack(b, sp.empty_perm(), 64, 64, 3)
        with pytest.raises(ValueError, match=r"^size_k: "):
            ops.marlin_repack(b, sp.empty_perm(), 56, 64, 8)
        with pytest.raises(ValueError, match=r"^size_n: "):
            ops.marlin_repack(b, sp.empty_perm(), 64, 96, 8)
        with pytest.raises(ValueError, match=r"^b_q_weight: "):
            ops.marlin_repack(b, sp.empty_perm(), 128, 64, 8)  # shape disagrees with size_k
        with pytest.raises(TypeError, match=r"^b_q_weight: "):
            ops.marlin_repack(b.to(torch.int64), sp.empty_perm(), 64, 64, 8)


# =============================================================================================
# FP8 Marlin GEMM and dequantize
# =============================================================================================

FP8_GEMM_CASES = (
    [(m, 384, 256) for m in M_ALL]
    + [(m, 3072, 3072) for m in M_ALL]
    + [(m, k, n) for m in M_SUB for (k, n) in [(128, 64), (64, 128), (4096, 12288)]]
)
FP8_DEQ_SHAPES = [(64, 128), (128, 64), (384, 256), (3072, 3072), (4096, 12288)]


class TestFp8Marlin:
    pytestmark = GPU

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("case", FP8_GEMM_CASES, ids=_mkn_id)
    def test_gemm(self, ops, case, dtype):
        m, k, n = case
        g = sp.generator("fp8-gemm", m, k, n, str(dtype))
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        sp.poison_allocator()
        out = ops.fp8_marlin_gemm(a, packed, s_perm)
        assert out.dtype == dtype and tuple(out.shape) == (m, n)
        ref = sp.matmul_reference(a, sp.fp8_dequant_reference(codes, s))
        sp.assert_gemm_close(out, ref, dtype, f"fp8_marlin_gemm M={m} K={k} N={n} {_dtype_id(dtype)}")

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("k,n", FP8_DEQ_SHAPES, ids=kn_ids(FP8_DEQ_SHAPES))
    def test_dequantize(self, ops, k, n, dtype):
        g = sp.generator("fp8-deq", k, n, str(dtype))
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
        sp.poison_allocator()
        out = ops.fp8_marlin_dequantize(packed, s_perm)
        assert out.dtype == dtype and tuple(out.shape) == (n, k)
        sp.assert_all_finite(out, "fp8_marlin_dequantize")
        ref = sp.fp8_dequant_reference(codes, s)
        over = sp.max_abs_over(out, ref, sp.fp8_dequant_bound(ref, dtype))
        assert over <= 0, f"dequantized weight off by more than 1 ulp (excess {over:.3g})"

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_gemm_around_small_m_threshold(self, ops, dtype):
        """Both sides of the op's small-M/large-M switch (read from the op module), at two shapes."""
        threshold = ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m
        for m in sorted({1, max(1, threshold - 1), threshold, threshold + 1}):
            for k, n in [(256, 384), (4096, 3072)]:
                g = sp.generator("fp8-thr", m, k, n, str(dtype))
                codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
                a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
                sp.poison_allocator()
                out = ops.fp8_marlin_gemm(a, packed, s_perm)
                ref = sp.matmul_reference(a, sp.fp8_dequant_reference(codes, s))
                sp.assert_gemm_close(out, ref, dtype, f"fp8_marlin_gemm M={m} (threshold {threshold}) K={k} N={n}")

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_flat_scales_and_our_repack(self, ops, dtype):
        """(N,) scales are accepted like (1, N); a weight repacked by our own op gives the same result."""
        k, n = 512, 384
        g = sp.generator("fp8-flat", str(dtype))
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
        ours = ops.marlin_repack(sp.fp8_pack_as_int32(codes), sp.empty_perm(), k, n, 8)
        for m in (3, 100):
            a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
            ref = sp.matmul_reference(a, sp.fp8_dequant_reference(codes, s))
            sp.poison_allocator()
            sp.assert_gemm_close(ops.fp8_marlin_gemm(a, ours, s_perm.reshape(n)), ref, dtype, f"flat scales M={m}")

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_empty_m(self, ops, dtype):
        k, n = 128, 64
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, sp.generator("fp8-m0", str(dtype)))
        out = ops.fp8_marlin_gemm(torch.empty(0, k, device=DEV, dtype=dtype), packed, s_perm)
        assert tuple(out.shape) == (0, n) and out.dtype == dtype

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    def test_repeated_calls_agree(self, ops, dtype):
        """Same inputs, same outputs, call after call (no state left in scratch memory between calls)."""
        k, n, m = 3072, 3072, 5
        g = sp.generator("fp8-repeat", str(dtype))
        codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
        a = torch.randn(m, k, generator=g, device=DEV, dtype=dtype)
        first = ops.fp8_marlin_gemm(a, packed, s_perm)
        for _ in range(3):
            sp.poison_allocator()
            again = ops.fp8_marlin_gemm(a, packed, s_perm)
            sp.assert_all_finite(again, "repeated fp8_marlin_gemm")
            torch.testing.assert_close(again, first, rtol=2.0**-7, atol=1e-3 * float(first.float().abs().max()))


# =============================================================================================
# AWQ int4 (fp16)
# =============================================================================================

AWQ_GEMM_CASES = (
    [(m, 128, 128) for m in M_ALL]  # K = 128: upstream's split-K GEMM returns zeros for M in 8..32
    + [(m, 384, 256) for m in M_ALL]  # K/128 odd: upstream's split-K drops part of K
    + [(m, 3072, 3072) for m in M_ALL]
    + [(m, k, n) for m in M_SUB for (k, n) in [(4096, 12288), (384, 12288)]]
    # N not a multiple of 8 (quanto routes any N % 4 == 0, N >= 128 here)
    + [(m, k, n) for m in (1, 3, 8, 33, 129) for (k, n) in [(256, 132), (384, 260)]]
)
AWQ_DEQ_SHAPES = [(128, 128), (384, 256), (256, 132), (384, 260), (3072, 3072), (4096, 12288)]


class TestAwqInt4:
    pytestmark = GPU

    @pytest.mark.parametrize("case", AWQ_GEMM_CASES, ids=_mkn_id)
    def test_gemm(self, ops, case):
        m, k, n = case
        g = sp.generator("awq-gemm", m, k, n)
        codes, s, z, packed = sp.awq_weight(k, n, g)
        x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        out = ops.awq_int4_gemm(x, packed, s, z)
        assert out.dtype == torch.float16 and tuple(out.shape) == (m, n)
        ref = sp.matmul_reference(x, sp.int4_dequant_reference(codes, s, z))
        sp.assert_gemm_close(out, ref, torch.float16, f"awq_int4_gemm M={m} K={k} N={n}")

    @pytest.mark.parametrize("k,n", AWQ_DEQ_SHAPES, ids=kn_ids(AWQ_DEQ_SHAPES))
    def test_dequantize(self, ops, k, n):
        g = sp.generator("awq-deq", k, n)
        codes, s, z, packed = sp.awq_weight(k, n, g)
        sp.poison_allocator()
        out = ops.awq_int4_dequantize(packed, s, z)
        assert out.dtype == torch.float16 and tuple(out.shape) == (n, k)
        sp.assert_all_finite(out, "awq_int4_dequantize")
        ref = sp.int4_dequant_reference(codes, s, z)
        over = sp.max_abs_over(out, ref, sp.int4_dequant_bound(codes, s, ref))
        assert over <= 0, f"dequantized weight outside the fp16 rounding bound (excess {over:.3g})"

    @pytest.mark.parametrize("m", [1, 33], ids=lambda m: f"M{m}")
    def test_group_size_64(self, ops, m):
        """The op derives the group size from scales.shape[0]; 64 (K/64 groups) is accepted and honoured."""
        k, n = 256, 256
        g = sp.generator("awq-gs64", m)
        codes, s, z, packed = sp.awq_weight(k, n, g, group_size=64)
        ref_w = sp.int4_dequant_reference(codes, s, z)
        sp.poison_allocator()
        deq = ops.awq_int4_dequantize(packed, s, z)
        assert sp.max_abs_over(deq, ref_w, sp.int4_dequant_bound(codes, s, ref_w)) <= 0
        x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        sp.assert_gemm_close(ops.awq_int4_gemm(x, packed, s, z), sp.matmul_reference(x, ref_w), torch.float16,
                             f"awq group 64 M={m}")

    @pytest.mark.parametrize("lead", [(2, 3), (1, 1), (4, 33), (3, 2, 5), (0,), (2, 0)], ids=sp.describe)
    def test_leading_dims(self, ops, lead):
        k, n = 384, 256
        g = sp.generator("awq-lead", lead)
        codes, s, z, packed = sp.awq_weight(k, n, g)
        x = torch.randn(*lead, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        out = ops.awq_int4_gemm(x, packed, s, z)
        assert tuple(out.shape) == tuple(lead) + (n,) and out.dtype == torch.float16
        if x.numel():
            ref = sp.matmul_reference(x, sp.int4_dequant_reference(codes, s, z))
            sp.assert_gemm_close(out, ref, torch.float16, f"awq_int4_gemm input {tuple(x.shape)}")

    @pytest.mark.parametrize("k,n", AWQ_QUANTO_SHAPES, ids=kn_ids(AWQ_QUANTO_SHAPES))
    def test_matches_quanto_awq_tensor(self, ops, k, n):
        """quanto's AWQWeightQBitsTensor (pack_v2, transposed scales, negated shift) feeds the op directly;
        its layout is the documented formula, and its Python dequantize() agrees with the op."""
        from optimum.quanto import qint4
        from optimum.quanto.tensor.weights.awq import AWQWeightQBitsTensor

        g = sp.generator("awq-quanto", k, n)
        codes = sp.random_int4_codes(n, k, g)
        s, z = sp.random_group_params(k // 128, n, g)
        # quanto's generic form: data grouped along axis 0 as (N*K/128, 128); scale, shift (N*K/128, 1)
        # with row n*G + g; a float shift is subtracted (Wd = scale*q - shift), so shift = -Z.
        data = codes.reshape(-1, 128)
        scale = s.t().reshape(-1, 1).contiguous()
        shift = (-z).t().reshape(-1, 1).contiguous()
        w = AWQWeightQBitsTensor(qint4, 0, 128, torch.Size((n, k)), (k, 1), data, scale, shift)
        assert torch.equal(w._data._data, sp.awq_v2_layout(codes)), "AWQ v2 layout formula != quanto's pack_v2"
        assert torch.equal(w._scale, s) and torch.equal(w._shift, z)
        ref_w = sp.int4_dequant_reference(codes, s, z)
        bound = sp.int4_dequant_bound(codes, s, ref_w)
        with torch.no_grad():
            deq_quanto = w.dequantize()
        assert sp.max_abs_over(deq_quanto, ref_w, bound) <= 0, "quanto's dequantize() disagrees with S*q + Z"
        sp.poison_allocator()
        deq = ops.awq_int4_dequantize(w._data._data, w._scale, w._shift)
        assert sp.max_abs_over(deq, ref_w, bound) <= 0
        for m in (1, 8, 40):
            x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
            sp.poison_allocator()
            out = ops.awq_int4_gemm(x, w._data._data, w._scale, w._shift)
            sp.assert_gemm_close(out, sp.matmul_reference(x, deq_quanto), torch.float16,
                                 f"awq_int4_gemm vs quanto dequantize M={m}")


# =============================================================================================
# Marlin int4 (fp16)
# =============================================================================================

MI4_GEMM_CASES = (
    [(m, 128, 256) for m in M_ALL]  # one group: Block32 scale permutation
    + [(m, 3072, 3072) for m in M_ALL]  # Block64
    + [(m, k, n) for m in M_SUB for (k, n) in [(256, 64), (384, 192), (4096, 12288)]]
)
_PERM_FNS = {"none": lambda t: t.contiguous(), "block32": sp.permute_block32, "block64": sp.permute_block64}


def _perm_code(ops, name):
    return {"none": ops.SCALE_PERM_NONE, "block32": ops.SCALE_PERM_BLOCK32, "block64": ops.SCALE_PERM_BLOCK64}[name]


class TestMarlinInt4:
    pytestmark = GPU

    @pytest.mark.parametrize("case", MI4_GEMM_CASES, ids=_mkn_id)
    def test_gemm_with_quanto_scale_perm(self, ops, case):
        m, k, n = case
        g = sp.generator("mi4-gemm", m, k, n)
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        groups = k // 128
        sperm = ops.marlin_int4_scale_perm(groups)
        assert sperm == (ops.SCALE_PERM_BLOCK32 if groups == 1 else ops.SCALE_PERM_BLOCK64)
        perm = sp.permute_block32 if groups == 1 else sp.permute_block64
        x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        out = ops.marlin_int4_gemm(x, packed, perm(s), perm(z), sperm)
        assert out.dtype == torch.float16 and tuple(out.shape) == (m, n)
        ref = sp.matmul_reference(x, sp.int4_dequant_reference(codes, s, z))
        sp.assert_gemm_close(out, ref, torch.float16, f"marlin_int4_gemm M={m} K={k} N={n}")

    @pytest.mark.parametrize("perm_name", ["none", "block32", "block64"])
    @pytest.mark.parametrize("k,n", MI4_DEQ_SHAPES, ids=kn_ids(MI4_DEQ_SHAPES))
    def test_dequantize_every_scale_perm(self, ops, k, n, perm_name):
        g = sp.generator("mi4-deq", k, n, perm_name)
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        perm = _PERM_FNS[perm_name]
        sp.poison_allocator()
        out = ops.marlin_int4_dequantize(packed, perm(s), perm(z), _perm_code(ops, perm_name))
        assert out.dtype == torch.float16 and tuple(out.shape) == (n, k)
        sp.assert_all_finite(out, "marlin_int4_dequantize")
        ref = sp.int4_dequant_reference(codes, s, z)
        over = sp.max_abs_over(out, ref, sp.int4_dequant_bound(codes, s, ref))
        assert over <= 0, f"dequantized weight outside the fp16 rounding bound (excess {over:.3g})"

    @pytest.mark.parametrize("perm_name", ["none", "block32", "block64"])
    @pytest.mark.parametrize("m", [1, 9, 64], ids=lambda m: f"M{m}")
    def test_gemm_every_scale_perm(self, ops, m, perm_name):
        k, n = 384, 256
        g = sp.generator("mi4-gemm-perm", m, perm_name)
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        perm = _PERM_FNS[perm_name]
        x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        out = ops.marlin_int4_gemm(x, packed, perm(s), perm(z), _perm_code(ops, perm_name))
        ref = sp.matmul_reference(x, sp.int4_dequant_reference(codes, s, z))
        sp.assert_gemm_close(out, ref, torch.float16, f"marlin_int4_gemm M={m} scale_perm={perm_name}")

    @pytest.mark.parametrize("m", [1, 33], ids=lambda m: f"M{m}")
    def test_group_size_64_and_our_repack(self, ops, m):
        """Group size 64 (from scales.shape[0]) and a weight repacked by our marlin_repack(num_bits=4)."""
        k, n = 256, 128
        g = sp.generator("mi4-gs64", m)
        codes, s, z, _ = sp.mi4_weight(k, n, g, group_size=64)
        packed = ops.marlin_repack(sp.int4_pack_as_int32(codes), sp.empty_perm(), k, n, 4)
        ref_w = sp.int4_dequant_reference(codes, s, z)
        sperm = ops.SCALE_PERM_BLOCK64
        sp.poison_allocator()
        deq = ops.marlin_int4_dequantize(packed, sp.permute_block64(s), sp.permute_block64(z), sperm)
        assert sp.max_abs_over(deq, ref_w, sp.int4_dequant_bound(codes, s, ref_w)) <= 0
        x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        out = ops.marlin_int4_gemm(x, packed, sp.permute_block64(s), sp.permute_block64(z), sperm)
        sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), torch.float16, f"marlin int4 group 64 M={m}")

    @pytest.mark.parametrize("lead", [(2, 3), (4, 33), (0,)], ids=sp.describe)
    def test_leading_dims(self, ops, lead):
        k, n = 384, 192
        g = sp.generator("mi4-lead", lead)
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        x = torch.randn(*lead, k, generator=g, device=DEV, dtype=torch.float16)
        sp.poison_allocator()
        out = ops.marlin_int4_gemm(x, packed, sp.permute_block64(s), sp.permute_block64(z), ops.SCALE_PERM_BLOCK64)
        assert tuple(out.shape) == tuple(lead) + (n,)
        if x.numel():
            ref = sp.matmul_reference(x, sp.int4_dequant_reference(codes, s, z))
            sp.assert_gemm_close(out, ref, torch.float16, f"marlin_int4_gemm input {tuple(x.shape)}")

    @pytest.mark.parametrize("k,n", MI4_QUANTO_SHAPES, ids=kn_ids(MI4_QUANTO_SHAPES))
    def test_matches_quanto_marlin_int4_tensor(self, ops, k, n):
        """quanto's MarlinInt4WeightQBitsTensor (its packer, marlin_permute'd scales and zeros) feeds the
        op directly, and its Python dequantize() agrees with the op."""
        from optimum.quanto import qint4
        from optimum.quanto.tensor.weights.marlin.int4 import MarlinInt4WeightQBitsTensor

        g = sp.generator("mi4-quanto", k, n)
        codes = sp.random_int4_codes(n, k, g)
        groups = k // 128
        s, z = sp.random_group_params(groups, n, g)
        data = codes.reshape(-1, 128)
        scale = s.t().reshape(-1, 1).contiguous()
        shift = (-z).t().reshape(-1, 1).contiguous()
        w = MarlinInt4WeightQBitsTensor(qint4, 0, 128, torch.Size((n, k)), (k, 1), data, scale, shift)
        perm = sp.permute_block32 if groups == 1 else sp.permute_block64
        assert torch.equal(w._data._data, sp.marlin_int4_layout(codes)), "int4 Marlin layout formula != quanto's packer"
        assert torch.equal(w._scale, perm(s)) and torch.equal(w._shift, perm(z))
        ref_w = sp.int4_dequant_reference(codes, s, z)
        bound = sp.int4_dequant_bound(codes, s, ref_w)
        with torch.no_grad():
            deq_quanto = w.dequantize()
        assert sp.max_abs_over(deq_quanto, ref_w, bound) <= 0, "quanto's dequantize() disagrees with S*q + Z"
        sperm = ops.marlin_int4_scale_perm(groups)
        sp.poison_allocator()
        deq = ops.marlin_int4_dequantize(w._data._data, w._scale, w._shift, sperm)
        assert sp.max_abs_over(deq, ref_w, bound) <= 0
        for m in (1, 17, 40):
            x = torch.randn(m, k, generator=g, device=DEV, dtype=torch.float16)
            sp.poison_allocator()
            out = ops.marlin_int4_gemm(x, w._data._data, w._scale, w._shift, sperm)
            sp.assert_gemm_close(out, sp.matmul_reference(x, deq_quanto), torch.float16,
                                 f"marlin_int4_gemm vs quanto dequantize M={m}")


# =============================================================================================
# torch.library.opcheck
# =============================================================================================


def _opcheck_cases():
    """(id, op name, args builder); small valid CUDA inputs, on both sides of the small-M switch."""
    k, n = 256, 128

    def unpack4(ops):
        return (torch.randint(0, 256, (33, 7), device=DEV, dtype=torch.uint8), 4)

    def unpack2(ops):
        return (torch.randint(0, 256, (16,), device=DEV, dtype=torch.uint8), 2)

    def repack8(ops):
        b = sp.fp8_pack_as_int32(sp.random_fp8_codes(n, k, sp.generator("oc-r8")))
        return (b, sp.empty_perm(), k, n, 8)

    def repack8_perm(ops):
        b = sp.fp8_pack_as_int32(sp.random_fp8_codes(n, k, sp.generator("oc-r8p")))
        return (b, torch.randperm(k, device=DEV).to(torch.int32), k, n, 8)

    def repack4(ops):
        b = sp.int4_pack_as_int32(sp.random_int4_codes(n, k, sp.generator("oc-r4")))
        return (b, sp.empty_perm(), k, n, 4)

    def fp8_deq(dtype):
        def build(ops):
            _, _, packed, s_perm = sp.fp8_weight(k, n, dtype, sp.generator("oc-f8d", str(dtype)))
            return (packed, s_perm)
        return build

    def fp8_gemm(dtype, m):
        def build(ops):
            g = sp.generator("oc-f8g", str(dtype), m)
            _, _, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
            return (torch.randn(m, k, generator=g, device=DEV, dtype=dtype), packed, s_perm)
        return build

    def awq_deq(ops):
        _, s, z, packed = sp.awq_weight(k, n, sp.generator("oc-ad"))
        return (packed, s, z)

    def awq_gemm(shape):
        def build(ops):
            g = sp.generator("oc-ag", shape)
            _, s, z, packed = sp.awq_weight(k, n, g)
            return (torch.randn(*shape, k, generator=g, device=DEV, dtype=torch.float16), packed, s, z)
        return build

    def mi4_deq(ops):
        _, s, z, packed = sp.mi4_weight(k, n, sp.generator("oc-md"))
        return (packed, sp.permute_block64(s), sp.permute_block64(z), ops.SCALE_PERM_BLOCK64)

    def mi4_gemm(shape):
        def build(ops):
            g = sp.generator("oc-mg", shape)
            _, s, z, packed = sp.mi4_weight(k, n, g)
            x = torch.randn(*shape, k, generator=g, device=DEV, dtype=torch.float16)
            return (x, packed, sp.permute_block64(s), sp.permute_block64(z), ops.SCALE_PERM_BLOCK64)
        return build

    return [
        ("unpack-bits4", "unpack", unpack4),
        ("unpack-bits2", "unpack", unpack2),
        ("repack-fp8", "marlin_repack", repack8),
        ("repack-fp8-perm", "marlin_repack", repack8_perm),
        ("repack-int4", "marlin_repack", repack4),
        ("fp8-dequant-fp16", "fp8_marlin_dequantize", fp8_deq(torch.float16)),
        ("fp8-dequant-bf16", "fp8_marlin_dequantize", fp8_deq(torch.bfloat16)),
        ("fp8-gemm-fp16-M1", "fp8_marlin_gemm", fp8_gemm(torch.float16, 1)),
        ("fp8-gemm-bf16-M3", "fp8_marlin_gemm", fp8_gemm(torch.bfloat16, 3)),
        ("fp8-gemm-fp16-M100", "fp8_marlin_gemm", fp8_gemm(torch.float16, 100)),
        ("fp8-gemm-bf16-M100", "fp8_marlin_gemm", fp8_gemm(torch.bfloat16, 100)),
        ("awq-dequant", "awq_int4_dequantize", awq_deq),
        ("awq-gemm-1", "awq_int4_gemm", awq_gemm((1,))),
        ("awq-gemm-2x3", "awq_int4_gemm", awq_gemm((2, 3))),
        ("awq-gemm-100", "awq_int4_gemm", awq_gemm((100,))),
        ("marlin-int4-dequant", "marlin_int4_dequantize", mi4_deq),
        ("marlin-int4-gemm-1", "marlin_int4_gemm", mi4_gemm((1,))),
        ("marlin-int4-gemm-2x3", "marlin_int4_gemm", mi4_gemm((2, 3))),
        ("marlin-int4-gemm-100", "marlin_int4_gemm", mi4_gemm((100,))),
    ]


_OPCHECK = _opcheck_cases()


class TestOpcheck:
    pytestmark = GPU

    @pytest.mark.parametrize("name,op,build", _OPCHECK, ids=[c[0] for c in _OPCHECK])
    def test_opcheck(self, ops, name, op, build):
        args = build(ops)
        overload = getattr(torch.ops.quanto_kernels, op).default
        # Tolerances only matter for the compiled-vs-eager comparison (test_aot_dispatch_dynamic).
        torch.library.opcheck(overload, args, atol=1e-2, rtol=2e-2)


# =============================================================================================
# quanto's classes and F.linear through the shim, in this process
# =============================================================================================


class TestQuantoInProcess:
    pytestmark = GPU

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("k,n", Q_FP8_SHAPES, ids=kn_ids(Q_FP8_SHAPES))
    def test_qfloat8_linear(self, quanto_patched, k, n, dtype):
        from optimum.quanto import freeze, qfloat8, quantize

        model, g = sp.linear_case(k, n, dtype, ("q-f8", k, n, str(dtype)))
        quantize(model, weights=qfloat8)
        freeze(model)
        assert type(model[0].weight).__name__ == "MarlinF8QBytesTensor"
        for shape in [(1, k), (3, 5, k), (1024, k)]:
            x = torch.randn(*shape, generator=g, device=DEV, dtype=dtype)
            sp.check_qlinear(model, x, dtype, f"quanto qfloat8 Linear({k}, {n}) {_dtype_id(dtype)} input {shape}")

    @pytest.mark.parametrize("k,n", Q_AWQ_SHAPES, ids=kn_ids(Q_AWQ_SHAPES))
    def test_qint4_awq_linear(self, quanto_patched, k, n):
        from optimum.quanto import freeze, qint4, quantize

        model, g = sp.linear_case(k, n, torch.float16, ("q-awq", k, n))
        quantize(model, weights=qint4)
        freeze(model)
        assert type(model[0].weight).__name__ == "AWQWeightQBitsTensor"
        for shape in [(1, k), (7, k), (3, 5, k), (1024, k)]:
            x = torch.randn(*shape, generator=g, device=DEV, dtype=torch.float16)
            sp.check_qlinear(model, x, torch.float16, f"quanto qint4 (AWQ) Linear({k}, {n}) input {shape}")

    @pytest.mark.parametrize("k,n", Q_MI4_SHAPES, ids=kn_ids(Q_MI4_SHAPES))
    def test_marlin_int4_tensor_linear(self, quanto_patched, k, n):
        """An explicitly built MarlinInt4WeightQBitsTensor through F.linear (quanto never picks it itself)."""
        import torch.nn.functional as F
        from optimum.quanto import qint4
        from optimum.quanto.tensor.weights.marlin.int4 import MarlinInt4WeightQBitsTensor

        g = sp.generator("q-mi4", k, n)
        codes = sp.random_int4_codes(n, k, g)
        s, z = sp.random_group_params(k // 128, n, g)
        w = MarlinInt4WeightQBitsTensor(qint4, 0, 128, torch.Size((n, k)), (k, 1), codes.reshape(-1, 128),
                                        s.t().reshape(-1, 1).contiguous(), (-z).t().reshape(-1, 1).contiguous())
        bias = 0.5 * torch.randn(n, generator=g, device=DEV, dtype=torch.float16)
        with torch.no_grad():
            deq = w.dequantize()
        for shape in [(1, k), (3, 5, k), (100, k)]:
            x = torch.randn(*shape, generator=g, device=DEV, dtype=torch.float16)
            with torch.no_grad():
                sp.poison_allocator()
                y = F.linear(x, w, bias)
            sp.assert_gemm_close(y.double() - bias.double(), sp.matmul_reference(x, deq), torch.float16,
                                 f"quanto MarlinInt4 F.linear K={k} N={n} input {shape}")

    @pytest.mark.parametrize("k,n", Q_PACK_SHAPES, ids=kn_ids(Q_PACK_SHAPES))
    def test_quanto_fp8_pack_uses_our_repack(self, quanto_patched, k, n):
        from optimum.quanto.tensor.weights.marlin.fp8.packed import MarlinF8PackedTensor

        codes = sp.random_fp8_codes(n, k, sp.generator("q-f8pack", k, n))
        packed = MarlinF8PackedTensor.pack(codes.view(torch.float8_e4m3fn))
        assert torch.equal(packed._data, sp.fp8_marlin_layout(codes))
        assert torch.equal(packed.unpack().view(torch.uint8), codes)

    @pytest.mark.parametrize("bits", [2, 4], ids=lambda b: f"bits{b}")
    def test_quanto_packed_tensor_unpack_uses_our_unpack(self, quanto_patched, bits):
        from optimum.quanto.tensor.packed import PackedTensor

        x = torch.randint(0, 2**bits, (517, 96), generator=sp.generator("q-unpack", bits), device=DEV,
                          dtype=torch.uint8)
        packed = PackedTensor.pack(x, bits)
        sp.poison_allocator()
        assert torch.equal(packed.unpack(), x)
