"""Shared builders, fp64 oracles and checks of the whole test suite (fixtures are in conftest.py).

Everything here is importable without a GPU, without the native library and without optimum-quanto:
the layout builders and references are plain torch and run on any device, so the GPU tests can use
them as an independent oracle (written from the layout formulas of docs/layouts.md, not from
quanto's code), and the oracle itself is cross-checked against quanto's own packers where those
accept the device.

Contents:
  * ``requires_gpu``: skip marker (no CUDA build / no GPU / compute capability < 8.0);
  * seeding: ``generator(*case)`` gives a fresh, reproducible generator per test case;
  * ``poison_allocator()``: fills the CUDA caching allocator's free memory with 0xFF bytes (NaN for
    fp16/bf16/fp32, 255 for uint8, -1 for int32), so an output element an op never writes shows up;
  * layout builders (docs/layouts.md heading in brackets): quanto's ``pack_weights`` unpack formula
    ["Packed sub-byte tensors"], AWQ v2 ["AWQ v2 layout"], the GPTQ-style repack inputs and FP8 Marlin
    output ["FP8 Marlin layout"], Marlin int4 ["Int4 Marlin layout"], and the Block32 / Block64
    scale permutations ["Scale permutations"];
  * random weights in each layout (``fp8_weight``, ``awq_weight``, ``mi4_weight``, ``random_int8_weight``
    for quanto's own qint8 layout), odd tensors (``misaligned``), small quanto-ready models (``linear_case``);
  * fp64 references and error checks (relative Frobenius error plus an element-wise bound; for int8
    also the exact rounded dequantization and a per-path element-wise GEMM bound, ``int8_gemm_bound``);
  * ``run_host_driver``: compiles a C++ test driver with host-only library sources and runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Optional, Sequence

import pytest
import torch

MIN_CAPABILITY = (8, 0)

# --------------------------------------------------------------------------------------- skipping


def gpu_skip_reason() -> Optional[str]:
    """Why the GPU tests cannot run here, or None when they can."""
    if not torch.version.cuda:
        return f"torch {torch.__version__} is not a CUDA build"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available to torch"
    cap = torch.cuda.get_device_capability()
    if tuple(cap) < MIN_CAPABILITY:
        name = torch.cuda.get_device_name()
        return f"{name} has compute capability {cap[0]}.{cap[1]}; the kernels need 8.0 or newer"
    return None


_SKIP_REASON = gpu_skip_reason()
requires_gpu = pytest.mark.skipif(_SKIP_REASON is not None, reason=f"GPU test: {_SKIP_REASON}")
HAS_GPU = _SKIP_REASON is None


def fused_limit(ops, fmt: str) -> int:
    """Largest M the op family `fmt` serves with its fused kernel ("fp8"/"qfloat8", "awq"/"qint4", "marlin",
    "int8"/"qint8")."""
    if fmt in ("int8", "qint8"):
        return ops.GEMM_FAMILIES["int8"].max_gemv_m
    family = "fp8_marlin" if fmt in ("fp8", "qfloat8") else ("marlin_int4" if fmt == "marlin" else "awq_int4")
    return ops.GEMM_FAMILIES[family].max_gemv_m


# ---------------------------------------------------------------------------------------- seeding


def case_seed(*parts) -> int:
    """A stable seed derived from the test case's parameters (same case, same data; new case, new data)."""
    return zlib.crc32(repr(parts).encode("utf-8"))


def generator(*parts, device="cuda") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(case_seed(*parts))
    return g


# -------------------------------------------------------------------------------------- poisoning

POISON_BYTE = 0xFF


def poison_allocator(device=None, large_bytes: Optional[int] = None, small_blocks: int = 64,
                     fragments: int = 1024) -> None:
    """Fills the memory that the next ``torch.empty`` calls will get with 0xFF bytes.

    The caching allocator is emptied first, so that the only free cached blocks afterwards are the
    poisoned ones: one large block (the large pool, requests > 1 MiB, split on demand) and
    ``small_blocks`` blocks of 1 MiB (the small pool's 2 MiB segments). The fills run on the current
    stream, as do the ops under test, so no synchronisation is needed. Call it right before the op;
    tensors that are alive (the op's inputs) are untouched.
    """
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.empty_cache()
    if large_bytes is None:
        free, _total = torch.cuda.mem_get_info(device)
        large_bytes = int(min(1 << 30, free // 4))
    # empty_cache() keeps segments that still hold live tensors, and their free fragments are what a
    # small request gets first (best fit): claim those fragments with 512-byte blocks and poison them too.
    blocks = [torch.empty(512, dtype=torch.uint8, device=device) for _ in range(fragments)]
    blocks += _claim_free_cached_blocks(device)
    blocks += [torch.empty(large_bytes, dtype=torch.uint8, device=device)]
    blocks += [torch.empty(1 << 20, dtype=torch.uint8, device=device) for _ in range(small_blocks)]
    # The new segments are rounded up (2 MiB multiples): their free tails would join the large block when
    # it is freed, unpoisoned; claim them too.
    blocks += _claim_free_cached_blocks(device)
    for b in blocks:
        b.fill_(POISON_BYTE)
    del blocks


def _claim_free_cached_blocks(device, passes: int = 3):
    """Allocations covering the free blocks the caching allocator still holds in segments that also hold
    live tensors (empty_cache() keeps those segments): a later request of any size would be served from
    such a block first (best fit), so they are claimed here, to be poisoned with the rest."""
    claimed = []
    for _ in range(passes):
        sizes = [b["size"] for seg in torch.cuda.memory_snapshot() if seg.get("device") == device.index
                 for b in seg.get("blocks", ()) if b.get("state") == "inactive"]
        if not sizes:
            break
        claimed += [torch.empty(size, dtype=torch.uint8, device=device) for size in sizes]
    return claimed


def assert_all_finite(t: torch.Tensor, what: str) -> None:
    """Every element finite: an element the kernel never wrote reads as the poison NaN."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        raise AssertionError(
            f"{what}: {bad.shape[0]} of {t.numel()} elements are not finite (unwritten output or overflow); "
            f"first at index {tuple(bad[0].tolist())}"
        )


# ------------------------------------------------------------------------------------ grid helper


def _grid(device, *sizes):
    """One arange per dimension of a row-major grid, each shaped to broadcast against the others."""
    out = []
    for i, s in enumerate(sizes):
        shape = [1] * len(sizes)
        shape[i] = s
        out.append(torch.arange(s, device=device, dtype=torch.int64).view(shape))
    return out


def _u32_to_i32(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> the int32 tensor with the same bit patterns."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _u16_to_i16(words: torch.Tensor) -> torch.Tensor:
    return torch.where(words >= 2**15, words - 2**16, words).to(torch.int16)


def _gather(codes: torch.Tensor, n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """codes[n, k] for broadcast index tensors n, k (flat gather: one index tensor, no meshgrid)."""
    K = codes.shape[1]
    flat = (n * K + k).reshape(-1)
    return codes.reshape(-1)[flat]


# --------------------------------------------------------------------------------- random weights


def random_fp8_codes(n: int, k: int, g: torch.Generator, device="cuda") -> torch.Tensor:
    """(n, k) uint8 e4m3fn bit patterns, uniform over the 254 finite codes (0x7F and 0xFF excluded)."""
    r = torch.randint(0, 254, (n, k), generator=g, device=device, dtype=torch.int16)
    return (r + (r >= 0x7F).to(torch.int16)).to(torch.uint8)


def random_int4_codes(n: int, k: int, g: torch.Generator, device="cuda") -> torch.Tensor:
    return torch.randint(0, 16, (n, k), generator=g, device=device, dtype=torch.uint8)


def random_group_params(groups: int, n: int, g: torch.Generator, device="cuda", dtype=torch.float16):
    """(groups, N) scales S > 0 and zeros Z (already scaled and negated) of `dtype` (fp16 or bf16):
    Wd = S*q + Z is roughly centred, |Wd| <~ 0.15, so GEMMs up to K = 4096 stay far from overflow."""
    s = (0.005 + 0.01 * torch.rand((groups, n), generator=g, device=device)).to(dtype)
    zp = 4.0 + 7.0 * torch.rand((groups, n), generator=g, device=device)
    z = (-(s.double() * zp)).to(dtype)
    return s, z


def random_fp8_scales(n: int, dtype: torch.dtype, g: torch.Generator, device="cuda") -> torch.Tensor:
    """Per-channel scales (N,) so that fp8 * s lies within about +-1.5."""
    return ((0.5 + torch.rand(n, generator=g, device=device)) / 448.0).to(dtype)


def random_int8_weight(n: int, k: int, dtype: torch.dtype, g: torch.Generator, device="cuda"):
    """quanto's qint8 weight layout, as stored: (N, K) int8 codes uniform over -128..127 (both extremes
    placed explicitly) and (N, 1) per-channel scales in `dtype`, sized so that a standard-normal
    activation row gives outputs of order 1 (|code| has rms ~74; scales vary by 3x across channels, so a
    scale read from the wrong channel shows)."""
    w = torch.randint(-128, 128, (n, k), generator=g, device=device, dtype=torch.int16).to(torch.int8)
    w[0, 0] = -128
    w[-1, -1] = 127
    s = ((0.5 + torch.rand((n, 1), generator=g, device=device)) / (74.0 * k**0.5)).to(dtype)
    return w, s


# Unit roundoff (half an ulp, relative) of the activation dtypes.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
SUBNORMAL_HALF_ULP = {torch.float16: 2.0**-25, torch.bfloat16: 2.0**-134}


def int8_dequant_reference(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(N, K) float64: W[n, k] * s[n] (exact; scales of shape (N, 1) or (N,))."""
    return w.double() * scales.double().reshape(-1, 1)


def int8_rounded_dequant(w: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """What int8_dequantize must return bit for bit: W * s in fp32 (exact: 8-bit code times an 11-bit
    significand) rounded once to `dtype`."""
    return (w.float() * scales.float().reshape(-1, 1)).to(dtype)


def int8_gemm_bound(a: torch.Tensor, wd: torch.Tensor, dtype: torch.dtype, path: str,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Element-wise bound on |int8_gemm(a, w, s) - a @ Wd^T (+ bias)| (Wd exact, fp64), valid at any output size
    (including single elements whose value cancels to near zero, where a relative Frobenius bound is not).
    A bias is added in fp32 before the one rounding on both paths (kernel epilogue, cuBLAS epilogue), so
    it only moves the value whose half ulp the bound allows.

    "gemv" (fused): the codes and activations are exact in fp16/bf16, products are exact in fp32, the
    sum is fp32 and the scale multiplies it in fp32, then one rounding: |err| <= u|y| (half an ulp) plus
    the fp32 accumulation, bounded here by 2^-16 * sum_k |a_k Wd_k| (realistic: ~2^-23; worst case for
    K = 4096 sequential adds: 2^-12).
    "dequant": the weight is rounded to the activation dtype first (|d Wd| <= u|Wd|), then cuBLAS sums
    (fp32, possibly split-K partials rounded to the output dtype). Those errors are sums of K
    independent-signed terms: ~0.6u * ||a (.) Wd||_2 each; 8u * ||a (.) Wd||_2 is > 7 sigma for them
    together, and still 30x (fp16) / 4x (bf16) below what a wrong index or a lost K slice gives.
    """
    u = UNIT_ROUNDOFF[dtype]
    a64, wd = a.double(), wd.double()
    y = a64 @ wd.t()
    y = (y if bias is None else y + bias.double()).abs()
    tiny = SUBNORMAL_HALF_ULP[dtype]
    if path == "gemv":
        return u * (1 + 2.0**-10) * y + 2.0**-16 * (a64.abs() @ wd.abs().t()) + tiny
    norm = ((a64 * a64) @ (wd * wd).t()).sqrt()
    return u * y + 8 * u * norm + tiny


# ------------------------------------------------------------------ "Packed sub-byte tensors"


def unpack_reference(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """out.flat[i*n + f] = (P.flat[f] >> bits*i) & mask: the v bit-fields concatenated along dim 0."""
    mask = (1 << bits) - 1
    return torch.cat([(packed >> (bits * i)) & mask for i in range(8 // bits)], dim=0)


# ------------------------------------------------------------------------ "FP8 Marlin layout"


def fp8_pack_as_int32(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) uint8 codes -> the (K/4, N) int32 repack input: byte j of B[kp, n] = W[n, 4kp + j]."""
    n, k = codes.shape
    assert k % 4 == 0
    b = codes.t().reshape(k // 4, 4, n).permute(0, 2, 1).contiguous()  # [kp, n, j]
    return b.view(torch.int32).reshape(k // 4, n)


_FP8_D = (0, 8, 1, 9)


def fp8_marlin_layout(codes: torch.Tensor) -> torch.Tensor:
    """The FP8 Marlin layout, (K/16, 4N) int32, for (N, K) uint8 codes:

    byte b of P[kt, 256c + 8t + 2w + h] = W[64c + 16w + 8h + t//4, 16kt + 2(t%4) + d_b], d = (0, 8, 1, 9).
    """
    n, k = codes.shape
    assert k % 16 == 0 and n % 64 == 0
    dev = codes.device
    kt, c, t, w, h, b = _grid(dev, k // 16, n // 64, 32, 4, 2, 4)
    d = torch.tensor(_FP8_D, device=dev, dtype=torch.int64)[b]
    nn_ = 64 * c + 16 * w + 8 * h + t // 4
    kk = 16 * kt + 2 * (t % 4) + d
    bytes_ = _gather(codes, nn_, kk).reshape(k // 16, 4 * n, 4).contiguous()
    return bytes_.view(torch.int32).reshape(k // 16, 4 * n)


def fp8_values(codes: torch.Tensor) -> torch.Tensor:
    """The exact float64 value of every e4m3fn code."""
    return codes.view(torch.float8_e4m3fn).to(torch.float32).to(torch.float64)


# ----------------------------------------------------------------------- "Int4 Marlin layout"


def int4_pack_as_int32(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes 0..15 -> the (K/8, N) int32 repack input: nibble j of B[kp, n] = W[n, 8kp + j]."""
    n, k = codes.shape
    assert k % 8 == 0
    t = codes.t().reshape(k // 8, 8, n).to(torch.int64)
    shifts = (4 * torch.arange(8, device=codes.device, dtype=torch.int64)).view(1, 8, 1)
    return _u32_to_i32((t << shifts).sum(dim=1))


def marlin_int4_layout(codes: torch.Tensor) -> torch.Tensor:
    """The int4 Marlin layout, (K/16, 2N) int32, for (N, K) codes 0..15:

    nibble e of P[kt, 128c + 4i + j] = W[64c + 16j + 8((e>>1)&1) + i//4, 16kt + 2(i%4) + (e>>2) + 8(e&1)].
    """
    n, k = codes.shape
    assert k % 16 == 0 and n % 64 == 0
    dev = codes.device
    kt, c, i, j, e = _grid(dev, k // 16, n // 64, 32, 4, 8)
    nn_ = 64 * c + 16 * j + 8 * ((e >> 1) & 1) + i // 4
    kk = 16 * kt + 2 * (i % 4) + (e >> 2) + 8 * (e & 1)
    vals = _gather(codes, nn_, kk).reshape(k // 16, 2 * n, 8).to(torch.int64)
    shifts = 4 * torch.arange(8, device=dev, dtype=torch.int64)
    return _u32_to_i32((vals << shifts).sum(dim=-1))


# ---------------------------------------------------------------------------- "AWQ v2 layout"


def awq_v2_layout(codes: torch.Tensor) -> torch.Tensor:
    """The AWQ v2 layout, (N/4, K) int16, for (N, K) codes 0..15:

    nibble j of P[nb, 64q + 16i + w] = W[4nb + i, 64q + 32(w//8) + (w%8) + 8j].
    """
    n, k = codes.shape
    assert n % 4 == 0 and k % 64 == 0
    dev = codes.device
    nb, q, i, w, j = _grid(dev, n // 4, k // 64, 4, 16, 4)
    nn_ = 4 * nb + i
    kk = 64 * q + 32 * (w // 8) + (w % 8) + 8 * j
    vals = _gather(codes, nn_, kk).reshape(n // 4, k, 4).to(torch.int64)
    shifts = 4 * torch.arange(4, device=dev, dtype=torch.int64)
    return _u16_to_i16((vals << shifts).sum(dim=-1))


# ----------------------------------------------------------------------- "Scale permutations"

_BLOCK32_D = (0, 1, 8, 9, 16, 17, 24, 25)


def block32_index(n: int, device="cpu") -> torch.Tensor:
    """src[p] for s_perm[..., 32b + 8i + e] = s[..., 32b + 2i + d_e], d = (0, 1, 8, 9, 16, 17, 24, 25)."""
    assert n % 32 == 0
    b, i, e = _grid(device, n // 32, 4, 8)
    d = torch.tensor(_BLOCK32_D, device=device, dtype=torch.int64)[e]
    return (32 * b + 2 * i + d).reshape(-1)


def block64_index(n: int, device="cpu") -> torch.Tensor:
    """src[p] for S'[..., 64b + 8i + j] = S[..., 64b + i + 8j] (8x8 transpose in each 64-block)."""
    assert n % 64 == 0
    b, i, j = _grid(device, n // 64, 8, 8)
    return (64 * b + i + 8 * j).reshape(-1)


def permute_block32(s: torch.Tensor) -> torch.Tensor:
    return s[..., block32_index(s.shape[-1], s.device)].contiguous()


def permute_block64(s: torch.Tensor) -> torch.Tensor:
    return s[..., block64_index(s.shape[-1], s.device)].contiguous()


# ---------------------------------------------------------------------------- fp64 references


def fp8_dequant_reference(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(N, K) float64: fp8(W[n, k]) * s[n] (exact)."""
    return fp8_values(codes) * scales.reshape(-1, 1).double()


def int4_dequant_reference(codes: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(N, K) float64: S[k//gs, n] * q[n, k] + Z[k//gs, n], with natural (groups, N) S and Z (exact)."""
    n, k = codes.shape
    gs = k // s.shape[0]
    s_e = s.double().repeat_interleave(gs, dim=0).t()
    z_e = z.double().repeat_interleave(gs, dim=0).t()
    return s_e * codes.double() + z_e


def int4_dequant_bound(codes: torch.Tensor, s: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Allowed |dequant - exact| in the scales' dtype (fp16 or bf16, unit roundoff u = 2^-11 or
    2^-8): one rounding of the result (FMA) or two (multiply, then add), i.e. u (|S*q| + |Wd|) each,
    doubled for margin, plus the dtype's smallest subnormal spacing."""
    n, k = codes.shape
    gs = k // s.shape[0]
    sq = (s.double().repeat_interleave(gs, dim=0).t() * codes.double()).abs()
    if s.dtype == torch.bfloat16:
        return 2.0**-7 * (sq + ref.abs()) + 2.0**-133
    return 2.0**-10 * (sq + ref.abs()) + 2.0**-24


def matmul_reference(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (..., K) @ w (N, K)^T (+ bias) in float64."""
    y = x.double() @ w.double().t()
    if bias is not None:
        y = y + bias.double()
    return y


# -------------------------------------------------------------------------------- error checks


def rel_fro(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((out.double() - ref).norm() / ref.norm().clamp_min(1e-300))


@dataclass(frozen=True)
class GemmTol:
    """Accepted error of a GEMM output against the exact (fp64) product of the exact operands.

    fro:  bound on ||out - ref||_F / ||ref||_F;
    atol: element-wise absolute slack, as a fraction of rms(ref) (outputs near zero by cancellation);
    rtol: element-wise relative slack (output rounding, a few ulps).
    """

    fro: float
    atol: float
    rtol: float


# How these were chosen. The error sources are the rounding of the output to fp16/bf16 (0.5 ulp:
# 2^-11 / 2^-8 relative), a dequantized weight rounded to the activation dtype when the op goes
# through a dense temporary (same size per weight, averaging out over K), and partial sums that
# cuBLAS may reduce in the output dtype for split-K. A CPU emulation of these paths at the shapes
# tested (K up to 4096) gave relative Frobenius errors of 2-5e-4 (fp16) and 1.7-4.4e-3 (bf16), and
# element-wise excesses over 2^-8|ref| of at most 2.5e-3 (fp16) and 2.9e-2 (bf16) times rms(ref), the
# pessimistic case being split-K partials rounded to the output dtype. The bounds below leave a
# margin of about 3-4x over that. Wrong indexing (a lost K tile, a wrong group scale, a column
# from the wrong channel) gives errors of order 0.1-1 in both measures, far above them.
GEMM_TOL = {
    torch.float16: GemmTol(fro=2e-3, atol=1e-2, rtol=4e-3),
    torch.bfloat16: GemmTol(fro=1.2e-2, atol=8e-2, rtol=3e-2),
}


def assert_gemm_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str,
                      tol: Optional[GemmTol] = None) -> None:
    """out (any float dtype) against a float64 reference, with GEMM_TOL[dtype] unless tol is given."""
    tol = tol or GEMM_TOL[dtype]
    assert tuple(out.shape) == tuple(ref.shape), f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert_all_finite(out, what)
    ref = ref.double()
    out64 = out.double()
    err = (out64 - ref).abs()
    rel = rel_fro(out64, ref)
    rms = float(ref.pow(2).mean().sqrt())
    excess = err - (tol.atol * rms + tol.rtol * ref.abs())
    worst = int(excess.reshape(-1).argmax())
    worst_idx = tuple(torch.unravel_index(torch.tensor(worst), ref.shape)) if ref.dim() else ()
    worst_idx = tuple(int(i) for i in worst_idx)
    ok_elem = float(excess.reshape(-1)[worst]) <= 0
    assert rel <= tol.fro and ok_elem, (
        f"{what}: relative Frobenius error {rel:.3e} (limit {tol.fro:.1e}); worst element {worst_idx}: "
        f"out={float(out64.reshape(-1)[worst]):.6g} ref={float(ref.reshape(-1)[worst]):.6g} "
        f"(|err| limit {tol.atol:.0e}*rms(ref)={tol.atol * rms:.3g} + {tol.rtol:.0e}*|ref|); "
        f"{int((excess > 0).sum())} elements over the element-wise limit"
    )


def max_abs_over(out: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> float:
    """max(|out - ref| - bound); <= 0 means every element is within its bound."""
    return float(((out.double() - ref.double()).abs() - bound).max())


def describe(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


# ------------------------------------------------------------------- random weights per layout


def fp8_weight(k, n, dtype, g):
    """codes (N, K), natural scales s (N,), the Marlin layout (built by the layout formula, independent of
    our repack), and the Block32-permuted (1, N) scales."""
    codes = random_fp8_codes(n, k, g)
    s = random_fp8_scales(n, dtype, g)
    return codes, s, fp8_marlin_layout(codes), permute_block32(s.reshape(1, n))


def fp8_dequant_bound(ref: torch.Tensor, dtype) -> torch.Tensor:
    # fp8 * s rounded once to the scale dtype is within 0.5 ulp; allow 1 ulp (2^-10 / 2^-7 relative)
    # plus fp16's subnormal spacing (fp8 subnormals times s < 6e-5 are fp16 subnormals).
    if dtype == torch.float16:
        return 2.0**-10 * ref.abs() + 2.0**-24
    return 2.0**-7 * ref.abs() + 2.0**-133


def awq_weight(k, n, g, group_size=128, dtype=torch.float16):
    codes = random_int4_codes(n, k, g)
    s, z = random_group_params(k // group_size, n, g, dtype=dtype)
    return codes, s, z, awq_v2_layout(codes)


def mi4_weight(k, n, g, group_size=128, dtype=torch.float16):
    codes = random_int4_codes(n, k, g)
    s, z = random_group_params(k // group_size, n, g, dtype=dtype)
    return codes, s, z, marlin_int4_layout(codes)


def empty_perm(device="cuda"):
    return torch.empty(0, dtype=torch.int32, device=device)


def misaligned(src: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of src whose data pointer is one element past a 16-byte boundary."""
    buf = torch.empty(src.numel() + 1, dtype=src.dtype, device=src.device)
    view = buf[1:].view(src.shape)
    view.copy_(src)
    assert view.is_contiguous() and view.data_ptr() % 16 != 0
    return view


def linear_case(k, n, dtype, seed_parts, device="cuda"):
    """A Sequential(Linear(k, n)) with reproducible weights and a non-zero bias, and its generator."""
    g = generator(*seed_parts)
    lin = torch.nn.Linear(k, n, bias=True, device=device, dtype=dtype)
    with torch.no_grad():
        bound = k**-0.5
        lin.weight.copy_((torch.rand(n, k, generator=g, device=device) * 2 - 1) * bound)
        lin.bias.copy_(0.5 * torch.randn(n, generator=g, device=device))
    return torch.nn.Sequential(lin), g


def check_qlinear(model, x, dtype, what):
    """model(x) against the fp64 product with the weight's own dequantize(), bias included."""
    qlin = model[0]
    with torch.no_grad():
        poison_allocator()
        y = model(x)
        deq = qlin.weight.dequantize()
        bias = qlin.bias.detach()
    assert y.dtype == dtype and tuple(y.shape) == tuple(x.shape[:-1]) + (deq.shape[0],)
    assert_all_finite(y, what)
    # Compare y - b with x @ deq^T so the tolerance is relative to the product, not to the bias;
    # a dropped bias would leave an error of ||b|| ~ ||x W^T|| here.
    assert_gemm_close(y.double() - bias.double(), matmul_reference(x, deq), dtype, what)


def fp8_weight_only_entries(ops, rows: int, n: int, k: int, device_index: int = 0):
    """The C entry points a weight-only qfloat8 product of `rows` x `n` x `k` calls under the dispatch rule."""
    fam = ops.GEMM_FAMILIES["fp8_marlin"]
    if fam.use_tc(rows, device_index, n, k):
        return ["fp8_marlin_mm"]
    return ["fp8_marlin_gemv"] if rows <= fam.max_gemv_m else ["fp8_marlin_dequantize"]


def tc_skip_reason(ops, family: str, device_index: int = 0) -> Optional[str]:
    """Why a family's weight-only tensor-core kernel cannot run here (None when it can)."""
    if not HAS_GPU:
        return _SKIP_REASON
    tc = ops.GEMM_FAMILIES[family].tc
    if not tc.available(device_index):
        return (f"the {family} tensor-core kernel needs an sm_90 GPU and a library built with sm_90a "
                f"(this GPU: sm_{''.join(map(str, torch.cuda.get_device_capability(device_index)))})")
    return None


def fp8_tc_skip_reason(ops, device_index: int = 0) -> Optional[str]:
    """Why the weight-only FP8 tensor-core kernel cannot run here (None when it can)."""
    return tc_skip_reason(ops, "fp8_marlin", device_index)


class NativeCalls:
    """Records every call of the C ABI's functions (``quanto_kernels._native.abi``) while installed.

    ``calls`` lists (function, keyword arguments) in call order; queries (``*_workspace_bytes``,
    ``*max_gemv_m``, ``last_error``, ``fp8_compute_kernel``) are left out of ``names``.
    """

    QUERIES = ("_workspace_bytes", "max_gemv_m", "last_error", "build_info", "abi_version", "fp8_compute_kernel",
               "_mm_available", "_mm_max_m")

    def __init__(self, monkeypatch):
        import threading

        from quanto_kernels._native import abi

        self.calls = []
        lock = threading.Lock()
        for name in (abi.public_name(f) for f in abi.FUNCTIONS.values()):
            real = getattr(abi, name)

            def record(_real=real, _name=name, **kwargs):
                with lock:
                    self.calls.append((_name, kwargs))
                return _real(**kwargs)

            monkeypatch.setattr(abi, name, record)

    @property
    def names(self):
        return [n for n, _ in self.calls if not n.endswith(self.QUERIES)]

    def clear(self):
        self.calls.clear()


# ------------------------------------------------------------- FP8 compute (W8A8) references

E4M3_MAX = 448.0
# Rows whose largest magnitude is below this quantize as if it were this (the kernel's floor).
E4M3_MIN_AMAX = 1e-12
# Compute capability where FP8 tensor cores (and so fp8_compute_linear) start.
FP8_COMPUTE_CAPABILITY = (8, 9)


def fp8_compute_skip_reason() -> Optional[str]:
    """Why the FP8 compute tests cannot run here, or None."""
    if _SKIP_REASON is not None:
        return _SKIP_REASON
    cap = torch.cuda.get_device_capability()
    if tuple(cap) < FP8_COMPUTE_CAPABILITY:
        return (f"{torch.cuda.get_device_name()} has compute capability {cap[0]}.{cap[1]}; FP8 tensor cores "
                "need 8.9 or newer")
    return None


requires_fp8_compute = pytest.mark.skipif(fp8_compute_skip_reason() is not None,
                                          reason=f"FP8 compute test: {fp8_compute_skip_reason()}")


def act_quant_reference(x: torch.Tensor):
    """The per-row activation quantization, written from its definition (docs/numerics.md, "FP8 compute").

    x (..., K) fp16/bf16 -> (codes (M, K) torch.float8_e4m3fn in natural k order, row scales (M,) fp32):
    amax = max_k |x| in fp32 (exact), floored at 1e-12; scale = amax / 448 and the multiplier 448 / amax,
    each one fp32 division; code = e4m3(x * multiplier), the product rounded to fp32, then to e4m3 by
    round-to-nearest-even, saturating at +-448 (torch's conversion rounds to nearest even; the clamp
    gives the saturation, a no-op in practice since |x * multiplier| <= 448 up to one fp32 rounding).
    """
    xf = x.reshape(-1, x.shape[-1]).float()
    amax = xf.abs().amax(dim=1).clamp_min(E4M3_MIN_AMAX)
    # Tensor by tensor on purpose: torch's CUDA division by a Python scalar multiplies by the scalar's
    # reciprocal, which can differ from the kernel's IEEE division in the last bit.
    e4m3_max = torch.full_like(amax, E4M3_MAX)
    multiplier = e4m3_max / amax
    scale = amax / e4m3_max
    codes = (xf * multiplier[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return codes, scale


def fragment_order(k: int, device="cpu") -> torch.Tensor:
    """k(slot) for the activation codes' byte order (csrc/fp8_compute/fp8_compute.h): in every run of 16,
    slot 4q + b holds k = 2q + (0, 8, 1, 9)[b]."""
    slot = torch.arange(k, device=device, dtype=torch.int64)
    q, b = (slot % 16) // 4, slot % 4
    return slot - slot % 16 + 2 * q + 8 * (b % 2) + b // 2


def w8a8_reference(x: torch.Tensor, codes: torch.Tensor, s: torch.Tensor, bias: Optional[torch.Tensor] = None):
    """fp64 result of the W8A8 math for x (..., K), weight codes (N, K), natural scales (N,):

        out[m, n] = xs[m] * s[n] * sum_k e4m3(xq[m, k]) * e4m3(W[n, k]) + bias[n]

    Returns (out (M, N), sum_abs (M, N) = xs[m] * s[n] * sum_k |xq * W|, the scale of accumulation error).
    """
    xq, xs = act_quant_reference(x)
    xv, wv = xq.double(), fp8_values(codes)
    outer = xs.double()[:, None] * s.double().reshape(1, -1)
    out = (xv @ wv.t()) * outer
    sum_abs = (xv.abs() @ wv.abs().t()) * outer
    if bias is not None:
        out = out + bias.double()
    return out, sum_abs


# Accumulation slack of the FP8 product, relative to sum_k |terms|. The products of e4m3 codes are exact,
# but Hopper's FP8 tensor cores (wgmma) keep fewer bits than fp32 while they add a k-block into the
# accumulator: on an H200 the worst element of the probe's shapes reached 2^-10.5 * sum_k |terms| (the
# mma.sync path, which sums in fp32, stayed under 2^-12). 2^-9 leaves that a margin of ~3; a code read from
# the wrong place, a lost k-block or a wrong scale gives errors of order |ref| itself, and the Frobenius
# check below catches what could hide in this slack at large K.
FP8_COMPUTE_ACCUM_SLACK = 2.0**-9
FP8_COMPUTE_FRO = {torch.float16: 2e-3, torch.bfloat16: 1.2e-2}


def assert_w8a8_close(out: torch.Tensor, ref: torch.Tensor, sum_abs: torch.Tensor, dtype: torch.dtype,
                      what: str) -> None:
    """out against the fp64 W8A8 reference: every element within its rounding bound (the single rounding
    to `dtype`, half an ulp, plus FP8_COMPUTE_ACCUM_SLACK * sum_abs), and the relative Frobenius error
    within FP8_COMPUTE_FRO[dtype] (about 5x the output rounding's own contribution)."""
    out2 = out.reshape(ref.shape)
    assert_all_finite(out2, what)
    u = UNIT_ROUNDOFF[dtype]
    bound = u * (1 + 2.0**-6) * ref.abs() + FP8_COMPUTE_ACCUM_SLACK * sum_abs + SUBNORMAL_HALF_ULP[dtype]
    over = (out2.double() - ref).abs() - bound
    worst = int(over.reshape(-1).argmax())
    rel = rel_fro(out2, ref)
    assert float(over.reshape(-1)[worst]) <= 0 and rel <= FP8_COMPUTE_FRO[dtype], (
        f"{what}: relative Frobenius error {rel:.3e} (limit {FP8_COMPUTE_FRO[dtype]:.1e}); "
        f"{int((over > 0).sum())} elements over their bound; worst flat index {worst}: "
        f"out={float(out2.reshape(-1)[worst]):.6g} ref={float(ref.reshape(-1)[worst]):.6g} "
        f"bound={float(bound.reshape(-1)[worst]):.3g}"
    )


def cuda_kernels_run(fn) -> set:
    """Names of the CUDA kernels fn() launched, read from the profiler (which kernel ran, not assumed)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return {e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}


def sm_count(device_index: int = 0) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def fp8_nan_case(m: int, k: int, n: int, dtype: torch.dtype, *tag):
    """An FP8 Marlin weight with NaN codes at (5, 17) = 0x7F and (130, 200) = 0xFF (n > 130, k > 200) and
    activations: (x, packed, s_perm, bad channel mask, fp64 reference of the weight with those codes 0)."""
    g = generator("fp8-nan", m, k, n, str(dtype), *tag)
    codes = random_fp8_codes(n, k, g)
    codes[5, 17] = 0x7F
    codes[130, 200] = 0xFF
    s = random_fp8_scales(n, dtype, g)
    packed, s_perm = fp8_marlin_layout(codes), permute_block32(s.reshape(1, n))
    x = torch.randn(m, k, generator=g, device="cuda", dtype=dtype)
    bad = torch.zeros(n, dtype=torch.bool, device="cuda")
    bad[[5, 130]] = True
    clean = codes.clone()
    clean[5, 17] = clean[130, 200] = 0
    return x, packed, s_perm, bad, matmul_reference(x, fp8_dequant_reference(clean, s))


def assert_nan_only_in(out: torch.Tensor, bad: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str):
    """Every output of a `bad` channel is NaN; the others match `ref`."""
    assert torch.isnan(out[:, bad]).all(), f"{what}: a NaN code must make its channel NaN"
    assert_gemm_close(out[:, ~bad], ref[:, ~bad], dtype, f"{what}: channels without NaN codes")


def run_host_driver(directory: Path, driver: str, sources: Sequence[str]) -> str:
    """Compiles `driver` (C++17, warnings as errors) with the host-only library files `sources` (paths under
    csrc/) in `directory` (a test's temporary directory), runs it and returns its stdout. Skips when no
    host C++ compiler is on PATH: the planners under test are plain C++ and need no GPU."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler (c++, g++ or clang++) on PATH")
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    (directory / "driver.cpp").write_text(driver)
    exe = directory / "driver"
    subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{csrc}", str(directory / "driver.cpp"),
                    *(str(csrc / src) for src in sources), "-o", str(exe)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
