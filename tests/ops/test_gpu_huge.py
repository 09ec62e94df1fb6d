"""Huge shapes: index arithmetic past 2^31 works (or is refused up front; see test_bad_inputs.py).

Real allocations on the GPU (each test stays under ~10 GB and frees it), checked on a few output
columns or rows against an fp64 reference computed from the packed tensors themselves, so no dense
copy of a huge weight is ever made:

  * FP8 fused GEMM at M = 1 with a weight of N*K > 2^33 codes (8.6 GB): word offsets into the packed
    weight exceed 2^31;
  * FP8, AWQ and Marlin int4 dequantization with N*K > 2^31 elements (4.3 GB fp16 output): output
    offsets exceed 2^31; the same weights through the fused (M = 1) and dense (M = 17) GEMM paths;
  * unpack and FP8 repack with more than 2^31 bytes;
  * activations with M*K > 2^31 elements through the large-M path.

The column/row decoders below invert the layouts of docs/layouts.md (the same formulas as
support.py's builders); they are checked against those builders on the CPU, so they run in CI too.
"""

from __future__ import annotations


import pytest
import torch

import support as sp

f16, bf16 = torch.float16, torch.bfloat16
NEED_FREE = 24 << 30
_FP8_D = (0, 8, 1, 9)

# ------------------------------------------------------------------------------ layout decoders


def fp8_marlin_columns(packed: torch.Tensor, cols, k: int) -> torch.Tensor:
    """uint8 codes (len(cols), K) of output channels `cols`, read from the (K/16, 4N) FP8 Marlin layout.

    "FP8 Marlin layout": byte b of P[kt, 256c + 8t + 2w + h] = W[64c + 16w + 8h + t//4, 16kt + 2(t%4) + d_b].
    """
    kt = torch.arange(k // 16, device=packed.device)
    out = torch.empty(len(cols), k, dtype=torch.uint8, device=packed.device)
    for row, n in enumerate(cols):
        c, r = divmod(int(n), 64)
        w, rr = divmod(r, 16)
        h, tq = divmod(rr, 8)
        for tr in range(4):
            col = 256 * c + 8 * (4 * tq + tr) + 2 * w + h
            words = packed[:, col].to(torch.int64) & 0xFFFFFFFF
            for b in range(4):
                out[row, 16 * kt + 2 * tr + _FP8_D[b]] = ((words >> (8 * b)) & 0xFF).to(torch.uint8)
    return out


def marlin_int4_columns(packed: torch.Tensor, cols, k: int) -> torch.Tensor:
    """int4 codes (len(cols), K) of channels `cols` from the (K/16, 2N) Marlin int4 layout.

    "Int4 Marlin layout": nibble e of P[kt, 128c + 4i + j] = W[64c + 16j + 8((e>>1)&1) + i//4, 16kt + 2(i%4) + (e>>2) + 8(e&1)].
    """
    kt = torch.arange(k // 16, device=packed.device)
    out = torch.empty(len(cols), k, dtype=torch.uint8, device=packed.device)
    for row, n in enumerate(cols):
        c, r = divmod(int(n), 64)
        j, rr = divmod(r, 16)
        b1, iq = divmod(rr, 8)
        for ir in range(4):
            i = 4 * iq + ir
            words = packed[:, 128 * c + 4 * i + j].to(torch.int64) & 0xFFFFFFFF
            for e in (2 * b1, 2 * b1 + 1, 4 + 2 * b1, 5 + 2 * b1):
                kk = 16 * kt + 2 * ir + (e >> 2) + 8 * (e & 1)
                out[row, kk] = ((words >> (4 * e)) & 15).to(torch.uint8)
    return out


def awq_columns(packed: torch.Tensor, cols, k: int) -> torch.Tensor:
    """int4 codes (len(cols), K) of channels `cols` from the (N/4, K) AWQ-v2 layout.

    "AWQ v2 layout": nibble j of P[nb, 64q + 16i + w] = W[4nb + i, 64q + 32(w//8) + (w%8) + 8j].
    """
    q = torch.arange(k // 64, device=packed.device).view(-1, 1)
    w = torch.arange(16, device=packed.device).view(1, -1)
    out = torch.empty(len(cols), k, dtype=torch.uint8, device=packed.device)
    for row, n in enumerate(cols):
        nb, i = divmod(int(n), 4)
        words = packed[nb].reshape(k // 64, 64)[:, 16 * i:16 * i + 16].to(torch.int64) & 0xFFFF
        for j in range(4):
            kk = 64 * q + 32 * (w // 8) + (w % 8) + 8 * j
            out[row, kk.reshape(-1)] = ((words >> (4 * j)) & 15).reshape(-1).to(torch.uint8)
    return out


def test_decoders_invert_the_spec_layouts():
    """CPU: the decoders give back the codes support.py's layout builders packed (runs in CI)."""
    for n, k in [(64, 16), (128, 64), (192, 384)]:
        g = sp.generator("huge-decoders", n, k, device="cpu")
        cols = sorted({0, 1, 7, 8, 15, 16, 31, 33, 63, n - 1, n // 2 + 3})
        codes = sp.random_fp8_codes(n, k, g, device="cpu")
        assert torch.equal(fp8_marlin_columns(sp.fp8_marlin_layout(codes), cols, k), codes[cols])
        codes4 = sp.random_int4_codes(n, k, g, device="cpu")
        assert torch.equal(marlin_int4_columns(sp.marlin_int4_layout(codes4), cols, k), codes4[cols])
        if k % 64 == 0:
            assert torch.equal(awq_columns(sp.awq_v2_layout(codes4), cols, k), codes4[cols])


# ----------------------------------------------------------------------------------- GPU tests


@pytest.fixture
def ops():
    import quanto_kernels
    from quanto_kernels import ops as _ops

    quanto_kernels.get_library()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    if free < NEED_FREE:
        pytest.skip(f"needs {NEED_FREE >> 30} GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    yield _ops
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def gpu_test(fn):
    return pytest.mark.gpu(sp.requires_gpu(fn))


def _random_bytes(shape_bytes, g):
    """Random uint8 tensor (no NaN handling): the caller views it as the packed dtype."""
    return torch.randint(0, 256, shape_bytes, generator=g, device="cuda", dtype=torch.uint8)


def _edge_columns(n):
    return sorted({0, 1, 63, 64, 65, n // 2 + 5, n - 65, n - 64, n - 2, n - 1})


def _check_columns(out_cols, ref_cols, dtype, what):
    """out_cols (M, C) against fp64 ref (M, C), with the GEMM tolerance (relative to these columns)."""
    sp.assert_gemm_close(out_cols, ref_cols, dtype, what)


@gpu_test
@pytest.mark.parametrize("dtype", [f16], ids=["fp16"])
def test_fp8_fused_gemm_word_offsets_past_2_31(ops, dtype):
    k, n = 65536, 131136  # N*K = 8.59e9 codes > 2^33: packed word offsets > 2^31
    g = sp.generator("huge-fp8-gemv")
    raw = _random_bytes((k // 16, 16 * n), g)
    raw &= 0xF7  # clears the exponent's lowest bit: no NaN code (0x7F / 0xFF) remains
    packed = raw.view(torch.int32)
    assert packed.shape == (k // 16, 4 * n)
    s = sp.random_fp8_scales(n, dtype, g)
    s_perm = sp.permute_block32(s.reshape(1, n))
    a = torch.randn(1, k, generator=g, device="cuda", dtype=dtype)
    out = ops.fp8_marlin_gemm(a, packed, s_perm)
    torch.cuda.synchronize()
    sp.assert_all_finite(out, "huge fp8 gemv")
    cols = _edge_columns(n)
    w = sp.fp8_values(fp8_marlin_columns(packed, cols, k)) * s[cols].double().view(-1, 1)
    _check_columns(out[:, cols], a.double() @ w.t(), dtype, f"fp8 gemv M=1 K={k} N={n} columns {cols}")


@gpu_test
def test_fp8_repack_dequantize_and_gemm_past_2_31_elements(ops):
    g = sp.generator("huge-fp8")
    dtype = bf16
    k, n = 32768, 65600  # N*K = 2,149,580,800 codes > 2^31
    raw = _random_bytes((k // 4, 4 * n), g)
    raw &= 0xF7  # no NaN code (0x7F / 0xFF)
    b = raw.view(torch.int32)  # the repack input (K/4, N): byte j of B[kp, n] = W[n, 4kp + j]
    del raw
    cols = _edge_columns(n)
    words = b[:, cols].t().to(torch.int64) & 0xFFFFFFFF  # (C, K/4)
    want = torch.stack([(words >> (8 * j)) & 0xFF for j in range(4)], dim=-1).reshape(len(cols), k).to(torch.uint8)
    packed = ops.marlin_repack(b, torch.empty(0, dtype=torch.int32, device="cuda"), k, n, 8)
    del b
    torch.cuda.synchronize()
    got = fp8_marlin_columns(packed, cols, k)
    assert torch.equal(got, want), "repack with > 2^31 codes: columns differ"
    s = sp.random_fp8_scales(n, dtype, g)
    s_perm = sp.permute_block32(s.reshape(1, n))
    w = sp.fp8_values(want) * s[cols].double().view(-1, 1)  # (C, K) fp64
    # dequantize: output offsets past 2^31; poison its memory so unwritten elements show
    sp.poison_allocator(large_bytes=2 * n * k + (64 << 20))
    deq = ops.fp8_marlin_dequantize(packed, s_perm)
    torch.cuda.synchronize()
    assert tuple(deq.shape) == (n, k)
    assert bool(torch.isfinite(deq).all()), "dequantized weight with > 2^31 elements has unwritten entries"

    rows = deq[cols].double()
    assert sp.max_abs_over(rows, w, sp.fp8_dequant_bound(w, dtype)) <= 0, "dequantized rows off"
    del deq
    torch.cuda.empty_cache()
    for m in (1, 17):  # fused and dequantize + dense GEMM
        a = torch.randn(m, k, generator=g, device="cuda", dtype=dtype)
        out = ops.fp8_marlin_gemm(a, packed, s_perm)
        torch.cuda.synchronize()
        sp.assert_all_finite(out, f"huge fp8 gemm M={m}")
        _check_columns(out[:, cols], a.double() @ w.t(), dtype, f"fp8 gemm M={m} K={k} N={n}")


@gpu_test
@pytest.mark.parametrize("fmt", ["awq", "marlin"])
def test_int4_dequantize_and_gemm_past_2_31_elements(ops, fmt):
    k, n, group = 32768, 65600, 128  # N*K > 2^31
    g = sp.generator("huge-int4", fmt)
    if fmt == "awq":
        packed = _random_bytes((n // 4, 2 * k), g).view(torch.int16)
        assert packed.shape == (n // 4, k)
        decode = awq_columns
    else:
        packed = _random_bytes((k // 16, 8 * n), g).view(torch.int32)
        assert packed.shape == (k // 16, 2 * n)
        decode = marlin_int4_columns
    s, z = sp.random_group_params(k // group, n, g)
    cols = _edge_columns(n)
    codes = decode(packed, cols, k)
    ref_w = sp.int4_dequant_reference(codes, s[:, cols], z[:, cols])
    bound = sp.int4_dequant_bound(codes, s[:, cols], ref_w)
    if fmt == "awq":
        sa, za = s, z
        deq_op = lambda: ops.awq_int4_dequantize(packed, sa, za)  # noqa: E731
        gemm = lambda x: ops.awq_int4_gemm(x, packed, sa, za)  # noqa: E731
    else:
        sa, za = sp.permute_block64(s), sp.permute_block64(z)
        deq_op = lambda: ops.marlin_int4_dequantize(packed, sa, za, ops.SCALE_PERM_BLOCK64)  # noqa: E731
        gemm = lambda x: ops.marlin_int4_gemm(x, packed, sa, za, ops.SCALE_PERM_BLOCK64)  # noqa: E731
    sp.poison_allocator(large_bytes=2 * n * k + (64 << 20))
    deq = deq_op()
    torch.cuda.synchronize()
    assert tuple(deq.shape) == (n, k)
    assert bool(torch.isfinite(deq).all()), f"{fmt} dequantized weight with > 2^31 elements has unwritten entries"
    assert sp.max_abs_over(deq[cols], ref_w, bound) <= 0, f"{fmt} dequantized rows outside the fp16 bound"
    del deq
    torch.cuda.empty_cache()
    for m in (1, 17):
        x = torch.randn(m, k, generator=g, device="cuda", dtype=f16)
        out = gemm(x)
        torch.cuda.synchronize()
        sp.assert_all_finite(out, f"huge {fmt} gemm M={m}")
        _check_columns(out[:, cols], sp.matmul_reference(x, ref_w), f16, f"{fmt} gemm M={m} K={k} N={n}")


@gpu_test
def test_unpack_past_2_31_bytes(ops):
    numel = 2**31 + 7
    g = sp.generator("huge-unpack")
    t = _random_bytes((numel,), g)
    out = ops.unpack(t, 4)
    torch.cuda.synchronize()
    assert out.shape == (2 * numel,)
    for lo, hi in [(0, 4096), (2**31 - 4096, 2**31 + 7), (numel // 2, numel // 2 + 999)]:
        src = t[lo:hi]
        assert torch.equal(out[lo:hi], src & 15), f"unpack low nibbles [{lo}, {hi})"
        assert torch.equal(out[numel + lo:numel + hi], src >> 4), f"unpack high nibbles [{lo}, {hi})"


@gpu_test
@pytest.mark.parametrize("fmt", ["fp8", "awq"])
def test_activations_past_2_31_elements(ops, fmt):
    m, k, n = 2**23 + 17, 256, 64 if fmt == "fp8" else 128  # M*K > 2^31: the large-M (dense GEMM) path
    g = sp.generator("huge-m", fmt)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=f16)
    if fmt == "fp8":
        codes = sp.random_fp8_codes(n, k, g)
        s = sp.random_fp8_scales(n, f16, g)
        out = ops.fp8_marlin_gemm(x, sp.fp8_marlin_layout(codes), sp.permute_block32(s.reshape(1, n)))
        ref_w = sp.fp8_dequant_reference(codes, s)
    else:
        codes = sp.random_int4_codes(n, k, g)
        s, z = sp.random_group_params(k // 128, n, g)
        out = ops.awq_int4_gemm(x, sp.awq_v2_layout(codes), s, z)
        ref_w = sp.int4_dequant_reference(codes, s, z)
    torch.cuda.synchronize()
    assert tuple(out.shape) == (m, n)
    rows = [0, 1, m // 2, m - 2, m - 1]
    sp.assert_gemm_close(out[rows], sp.matmul_reference(x[rows], ref_w), f16, f"{fmt} M={m} rows {rows}")
    sp.assert_all_finite(out, f"{fmt} M={m}")
