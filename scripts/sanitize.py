"""Drives every kernel over ragged and minimum shapes, for compute-sanitizer (see scripts/sanitize.sh).

Inputs are built on the CPU from the layout formulas (tests/support.py) and copied to the GPU, so every
byte a kernel reads was written by a cudaMemcpy (initialised, for initcheck) and no torch kernel runs
before ours; every result is copied back and checked against an fp64 reference, so a run under a
sanitizer is a correctness run too. Prints ``SANITIZE_OK <calls>`` and exits 0 when every result
matches, else prints the mismatches and exits 1.

Coverage (each also on its own: ``python scripts/sanitize.py``):
  unpack 2/4 bits (odd lengths, 1-3 dims); Marlin repack 8/4 bits with and without a permutation;
  FP8 Marlin dequantize + GEMM, fp16 and bf16, M in {1, 3, 8, 16, 17, 33, L, L + 1} with L the library's
  fused limit (K = 16: one k-tile, and K = 272: 17 k-tiles, uneven split-K), N in {64, 192};
  the FP8 tensor-core kernel (sm_90 with an sm_90a build), every tile forced, M in {1, 17, 64, 65, 129,
  300}, the same K and N, with bias;
  AWQ int4 dequantize + GEMM, fp16 and bf16, M in {1, 7, 8, 9, 16, 17}, N in {128, 132, 260},
  K in {128, 384};
  Marlin int4 dequantize + GEMM, fp16 and bf16, K in {128, 256}, N in {64, 192}, scale_perm
  none/block32/block64, M in {1, 9, 16, 17}, plus group size 32 (the kernel's one-k-tile unit);
  int8 rows (when the library has them) dequantize + GEMM, fp16 and bf16, K in {32, 96, 40}, N in {64, 192},
  M on both sides of the int8 fused limit; the int8 GEMM for larger M (sm_90 with an sm_90a build with
  CUTLASS), every configuration forced, M in {1, 65, 300, 1025}, (K, N) in {(16, 8), (272, 136), (1040, 584)},
  with bias;
  FP8 compute (GPUs with FP8 tensor cores: compute capability 8.9+): fp8_compute_linear forced onto its
  FP8 path (activation quantization + FP8 tensor-core GEMM) for M in {1, 3, 17, L, L + 1, 130, 257},
  K in {32, 96, 544}, N in {64, 192}, fp16 and bf16, with and without bias, plus the op's own M rule at
  L and L + 1; on Hopper twice, for the wgmma kernel and for mma.sync (QK_FP8_COMPUTE_KERNEL=mma).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
try:  # the tests' reference implementations of the layouts (docs/layouts.md)
    import support as gu  # noqa: E402
except ImportError:  # an older tree
    import gpu_util as gu  # noqa: E402

import quanto_kernels  # noqa: E402
from quanto_kernels import ops  # noqa: E402

CPU = "cpu"
f16, bf16 = torch.float16, torch.bfloat16
FAILURES = []
CALLS = [0]


def gen(*parts):
    return gu.generator("sanitize", *parts, device=CPU)


def cuda(t):
    return t.to("cuda")  # host-to-device copy


# Above the fused kernel's limit, M goes through our dequantize kernel and then cuBLAS. Hopper cuBLAS
# kernels for tiny K write their output with the tensor-memory (TMA) unit, which initcheck does not see
# as writes and which made racecheck fail with "Internal Sanitizer Error ... hardware exception" (H100,
# 2026-11-24); our dequantize kernels are still covered by their own calls. SANITIZE_SKIP_DENSE=1 skips
# those M. The limits are the library's own (qk_fp8_marlin_max_gemv_m for FP8 Marlin, qk_max_gemv_m
# for the int4 formats), read at start-up, so the skip follows the dispatch the library really does.
SKIP_DENSE = bool(os.environ.get("SANITIZE_SKIP_DENSE"))
FUSED_LIMITS = {}


def fused_limits():
    """Largest M each format's fused kernel takes, asked through ctypes of the library the package's
    loader chose (the same file, so the same answer the ops' dispatch gets)."""
    native = quanto_kernels.get_library()
    cdll = getattr(native, "lib", None)
    if not isinstance(cdll, ctypes.CDLL):
        cdll = ctypes.CDLL(str(native.path))  # the loaded file again: dlopen hands back the same handle
    limits = {}
    for fmt, symbol in (("fp8", "qk_fp8_marlin_max_gemv_m"), ("int8", "qk_int8_max_gemv_m"),
                        ("int4", "qk_max_gemv_m")):
        fn = getattr(cdll, symbol, None)
        if fn is None:  # a library without that family
            continue
        fn.restype, fn.argtypes = ctypes.c_int64, []
        limits[fmt] = int(fn())
    return limits


def dense_call(what):
    """True for a GEMM call whose M is above its format's fused limit (it runs dequantize + cuBLAS)."""
    if " M=" not in what:
        return False
    m = int(what.split(" M=")[1].split()[0])
    fmt = what.split()[0]
    if fmt in ("fp8c", "fp8mm"):
        return False  # FP8 compute and the FP8 tensor-core kernel never go through cuBLAS
    if fmt == "int8" and int(what.split(" K=")[1].split()[0]) % 32:
        return True  # the int8 fused kernel reads K in slices of 32: other K always take the dense path
    return m > FUSED_LIMITS[fmt if fmt in ("fp8", "int8") else "int4"]


def run(what, fn, check):
    if SKIP_DENSE and dense_call(what):
        return
    CALLS[0] += 1
    if os.environ.get("SANITIZE_TRACE"):
        print(f"call {CALLS[0]}: {what}", flush=True)
    try:
        out = fn()
        torch.cuda.synchronize()
        check(out.cpu() if isinstance(out, torch.Tensor) else out)
    except AssertionError as exc:
        FAILURES.append(f"{what}: {str(exc)[:400]}")


def exact(ref, what):
    def check(out):
        assert tuple(out.shape) == tuple(ref.shape), f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
        bad = out != ref
        assert not bool(bad.any()), f"{int(bad.sum())} elements differ"
    return check


def gemm_close(ref, dtype, what):
    return lambda out: gu.assert_gemm_close(out, ref, dtype, what)


def within(ref, bound):
    def check(out):
        gu.assert_all_finite(out, "dequantized weight")
        over = gu.max_abs_over(out, ref, bound)
        assert over <= 0, f"outside the rounding bound by {over:.3g}"
    return check


def fp8_bound(ref, dtype):
    return 2.0**-10 * ref.abs() + 2.0**-24 if dtype == f16 else 2.0**-7 * ref.abs() + 2.0**-133


def sweep_unpack():
    for bits in (2, 4):
        for shape in [(1,), (3,), (5,), (4, 1), (7, 3), (33, 65), (2, 3, 5)]:
            t = torch.randint(0, 256, shape, generator=gen("unpack", bits, shape), dtype=torch.uint8)
            tg = cuda(t)
            run(f"unpack {shape} bits={bits}", lambda: ops.unpack(tg, bits),
                exact(gu.unpack_reference(t, bits), "unpack"))


def sweep_repack():
    for bits in (8, 4):
        for k, n in [(16, 64), (48, 192)]:
            for use_perm in (False, True):
                g = gen("repack", bits, k, n, use_perm)
                if bits == 8:
                    codes, pack, layout = gu.random_fp8_codes(n, k, g, device=CPU), gu.fp8_pack_as_int32, \
                        gu.fp8_marlin_layout
                else:
                    codes, pack, layout = gu.random_int4_codes(n, k, g, device=CPU), gu.int4_pack_as_int32, \
                        gu.marlin_int4_layout
                perm = torch.randperm(k, generator=g).to(torch.int32) if use_perm else torch.empty(0, dtype=torch.int32)
                src = codes[:, perm.long()] if use_perm else codes
                b, pg = cuda(pack(codes)), cuda(perm)
                run(f"repack bits={bits} K={k} N={n} perm={use_perm}", lambda: ops.marlin_repack(b, pg, k, n, bits),
                    exact(layout(src), "repack"))


def sweep_fp8():
    for dtype in (f16, bf16):
        for k, n in [(16, 64), (272, 192)]:
            g = gen("fp8", str(dtype), k, n)
            codes = gu.random_fp8_codes(n, k, g, device=CPU)
            s = gu.random_fp8_scales(n, dtype, g, device=CPU)
            packed, s_perm = cuda(gu.fp8_marlin_layout(codes)), cuda(gu.permute_block32(s.reshape(1, n)))
            ref_w = gu.fp8_dequant_reference(codes, s)
            run(f"fp8 dequantize K={k} N={n} {dtype}", lambda: ops.fp8_marlin_dequantize(packed, s_perm),
                within(ref_w, fp8_bound(ref_w, dtype)))
            # Both sides of the fused limit (64 today): every M here up to it runs the fused kernel.
            limit = FUSED_LIMITS["fp8"]
            for m in sorted({1, 3, 8, 16, 17, 33, limit, limit + 1}):
                a = torch.randn(m, k, generator=g).to(dtype)
                ag = cuda(a)
                what = f"fp8 gemm M={m} K={k} N={n} {dtype}"
                run(what, lambda: ops.fp8_marlin_gemm(ag, packed, s_perm),
                    gemm_close(gu.matmul_reference(a, ref_w), dtype, what))


# Tensor-core configurations (tile, splits, blocks per multiprocessor, slices per stage; None: the plan's
# choice): every tile, split-K and two blocks per multiprocessor forced (the plan does not split shapes this
# small), and the 64-k stage of the 32-token tile.
TC_CONFIGS = (("32", None, None, None), ("64", None, None, None), ("128", None, None, None),
              ("32", "3", "2", None), ("64", "5", "2", None), ("128", "2", "1", None), ("32", None, None, "4"))


def _sweep_tc(label, family, module, make_weight):
    """A family's weight-only tensor-core kernel (sm_90 with an sm_90a build) in every TC_CONFIGS
    configuration, forced; make_weight(n, k, dtype, g) gives (the CUDA weight arguments, fp64 dense weight)."""
    fam = ops.GEMM_FAMILIES[family]
    if fam.tc is None or not fam.tc.available(torch.cuda.current_device()):
        print(f"{label}: skipped (the tensor-core kernel needs an sm_90 GPU and an sm_90a build)")
        return
    for dtype in (f16, bf16):
        for k, n in [(16, 64), (272, 192)]:
            g = gen(label, str(dtype), k, n)
            weight, ref_w = make_weight(n, k, dtype, g)
            bias = torch.randn(n, generator=g).to(dtype)
            bias_g = cuda(bias)
            for cfg in TC_CONFIGS:
                _set_env(module.TC_PLAN_ENV, cfg)
                for m in (1, 17, 64, 65, 129, 300):
                    a = torch.randn(m, k, generator=g).to(dtype)
                    ag = cuda(a)
                    what = f"{label} gemm M={m} K={k} N={n} tile/splits/blocks/slices={cfg} {dtype}"

                    def forced(ag=ag):
                        with ops.force_path("tc"):
                            return module.matmul(ag, *weight, n, k, bias_g)

                    run(what, forced, gemm_close(gu.matmul_reference(a, ref_w, bias), dtype, what))
            _set_env(module.TC_PLAN_ENV, None)


def _set_env(names, values):
    """Sets each variable, or removes it where the value is None (values None: all removed)."""
    for name, value in zip(names, values or (None,) * len(names)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def sweep_fp8_mm():
    from quanto_kernels.ops import _fp8_marlin

    def make_weight(n, k, dtype, g):
        codes = gu.random_fp8_codes(n, k, g, device=CPU)
        s = gu.random_fp8_scales(n, dtype, g, device=CPU)
        weight = (cuda(gu.fp8_marlin_layout(codes)), cuda(gu.permute_block32(s.reshape(1, n))))
        return weight, gu.fp8_dequant_reference(codes, s)

    _sweep_tc("fp8mm", "fp8_marlin", _fp8_marlin, make_weight)


def sweep_int8_mm():
    from quanto_kernels.ops import _int8

    def make_weight(n, k, dtype, g):
        w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
        s = (torch.rand(n, 1, generator=g) * 0.02 + 0.001).to(dtype)
        return (cuda(w), cuda(s)), w.double() * s.double()

    _sweep_tc("int8mm", "int8", _int8, make_weight)


def sweep_int8_gemm():
    """The int8 GEMM for larger M (sm_90 with an sm_90a + CUTLASS build): every configuration forced, M on
    both sides of each token tile and past one wave, N % 128 != 0, K % 64 != 0, with bias."""
    from quanto_kernels.ops import _int8

    if not _int8.FAMILY.gemm.available(torch.cuda.current_device()):
        print("int8gemm: skipped (the int8 GEMM kernel needs an sm_90 GPU and an sm_90a build with CUTLASS)")
        return
    for dtype in (f16, bf16):
        for k, n in [(16, 8), (272, 136), (1040, 584)]:
            g = gen("int8gemm", str(dtype), k, n)
            w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
            s = (torch.rand(n, 1, generator=g) * 0.02 + 0.001).to(dtype)
            ref_w = w.double() * s.double()
            wg, sg = cuda(w), cuda(s)
            bias = torch.randn(n, generator=g).to(dtype)
            bias_g = cuda(bias)
            for tile in ("64", "64s", "128", "128s", "256c2", "256s", None):
                _set_env(("QK_INT8_GEMM_TILE",), (tile,))
                for m in (1, 65, 300, 1025):
                    a = torch.randn(m, k, generator=g).to(dtype)
                    ag = cuda(a)
                    what = f"int8gemm M={m} K={k} N={n} tile={tile} {dtype}"

                    def forced(ag=ag):
                        with ops.force_path("gemm"):
                            return _int8.matmul(ag, wg, sg, n, k, bias_g)

                    run(what, forced, gemm_close(gu.matmul_reference(a, ref_w, bias), dtype, what))
            _set_env(("QK_INT8_GEMM_TILE",), None)


def sweep_awq():
    for dtype in (f16, bf16):
        for k in (128, 384):
            for n in (128, 132, 260):
                g = gen("awq", str(dtype), k, n)
                codes = gu.random_int4_codes(n, k, g, device=CPU)
                s, z = gu.random_group_params(k // 128, n, g, device=CPU, dtype=dtype)
                packed, sg, zg = cuda(gu.awq_v2_layout(codes)), cuda(s), cuda(z)
                ref_w = gu.int4_dequant_reference(codes, s, z)
                run(f"awq dequantize K={k} N={n} {dtype}", lambda: ops.awq_int4_dequantize(packed, sg, zg),
                    within(ref_w, gu.int4_dequant_bound(codes, s, ref_w)))
                for m in (1, 7, 8, 9, 16, 17):
                    x = torch.randn(m, k, generator=g).to(dtype)
                    xg = cuda(x)
                    what = f"awq gemm M={m} K={k} N={n} {dtype}"
                    run(what, lambda: ops.awq_int4_gemm(xg, packed, sg, zg),
                        gemm_close(gu.matmul_reference(x, ref_w), dtype, what))


def sweep_marlin():
    perms = {ops.SCALE_PERM_NONE: lambda t: t.contiguous(), ops.SCALE_PERM_BLOCK32: gu.permute_block32,
             ops.SCALE_PERM_BLOCK64: gu.permute_block64}
    shapes = [(k, n, 128, p, (1, 9, 16, 17)) for k in (128, 256) for n in (64, 192) for p in perms]
    shapes.append((256, 64, 32, ops.SCALE_PERM_BLOCK64, (1, 17)))  # group 32: one-k-tile units
    for dtype in (f16, bf16):
        for k, n, group, perm, ms in shapes:
            g = gen("marlin", str(dtype), k, n, group, perm)
            codes = gu.random_int4_codes(n, k, g, device=CPU)
            s, z = gu.random_group_params(k // group, n, g, device=CPU, dtype=dtype)
            packed, sg, zg = cuda(gu.marlin_int4_layout(codes)), cuda(perms[perm](s)), cuda(perms[perm](z))
            ref_w = gu.int4_dequant_reference(codes, s, z)
            run(f"marlin dequantize K={k} N={n} group={group} perm={perm} {dtype}",
                lambda: ops.marlin_int4_dequantize(packed, sg, zg, perm),
                within(ref_w, gu.int4_dequant_bound(codes, s, ref_w)))
            for m in ms:
                x = torch.randn(m, k, generator=g).to(dtype)
                xg = cuda(x)
                what = f"marlin gemm M={m} K={k} N={n} group={group} perm={perm} {dtype}"
                run(what, lambda: ops.marlin_int4_gemm(xg, packed, sg, zg, perm),
                    gemm_close(gu.matmul_reference(x, ref_w), dtype, what))


def sweep_int8():
    """quanto's own (N, K) int8 rows with per-channel scales; K % 32 != 0 always takes the dequantize path."""
    if "int8" not in FUSED_LIMITS or not hasattr(ops, "int8_gemm"):
        return
    limit = FUSED_LIMITS["int8"]
    for dtype in (f16, bf16):
        for k, n in [(32, 64), (96, 192), (40, 64)]:
            g = gen("int8", str(dtype), k, n)
            w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
            s = (torch.rand(n, 1, generator=g) * 0.02 + 0.001).to(dtype)
            ref_w = w.double() * s.double()  # exact
            wg, sg = cuda(w), cuda(s)
            run(f"int8 dequantize K={k} N={n} {dtype}", lambda: ops.int8_dequantize(wg, sg),
                within(ref_w, fp8_bound(ref_w, dtype)))  # one rounding to dtype, as for FP8
            for m in sorted({1, 3, 8, 16, 17, 33, limit, limit + 1}):
                a = torch.randn(m, k, generator=g).to(dtype)
                ag = cuda(a)
                what = f"int8 gemm M={m} K={k} N={n} {dtype}"
                run(what, lambda: ops.int8_gemm(ag, wg, sg), gemm_close(gu.matmul_reference(a, ref_w), dtype, what))


def w8a8_close(a, codes, s, bias, dtype, what):
    """A check of an fp8_compute_linear result against the fp64 W8A8 reference (tests/support.py)."""
    ref, sum_abs = gu.w8a8_reference(a, codes, s, bias)
    return lambda out: gu.assert_w8a8_close(out, ref, sum_abs, dtype, what)


def fp8_compute_kernels():
    """[(label, QK_FP8_COMPUTE_KERNEL value or None)] to run on this GPU: none without FP8 tensor cores,
    both kernels where the default is the Hopper (wgmma) one."""
    from quanto_kernels.fp8_compute import kernel_name

    os.environ.pop("QK_FP8_COMPUTE_KERNEL", None)
    default = kernel_name(torch.cuda.current_device())
    if default == "none":
        return []
    return [(default, None)] + ([("mma.sync", "mma")] if default == "wgmma" else [])


def sweep_fp8_compute():
    """qfloat8 weights times e4m3 activations on FP8 tensor cores, against the fp64 W8A8 reference."""
    if not hasattr(ops, "fp8_compute_linear"):
        return
    limit = FUSED_LIMITS["fp8"]
    for label, env in fp8_compute_kernels():
        if env is None:
            os.environ.pop("QK_FP8_COMPUTE_KERNEL", None)
        else:
            os.environ["QK_FP8_COMPUTE_KERNEL"] = env  # the library reads it at every call
        for dtype in (f16, bf16):
            for k, n in [(32, 64), (96, 192), (544, 64)]:
                g = gen("fp8c", str(dtype), k, n)
                codes = gu.random_fp8_codes(n, k, g, device=CPU)
                s = gu.random_fp8_scales(n, dtype, g, device=CPU)
                bias = (0.5 * torch.randn(n, generator=g)).to(dtype)
                packed, s_perm = cuda(gu.fp8_marlin_layout(codes)), cuda(gu.permute_block32(s.reshape(1, n)))
                bias_g = cuda(bias)
                for m in sorted({1, 3, 17, limit, limit + 1, 130, 257}):
                    for with_bias in (True, False):
                        a = torch.randn(m, k, generator=g).to(dtype)
                        ag, bg = cuda(a), bias_g if with_bias else None
                        what = f"fp8c gemm M={m} K={k} N={n} {dtype} bias={with_bias} kernel={label}"

                        def forced(ag=ag, bg=bg):
                            with ops.force_fp8_compute_path("fp8"):
                                return ops.fp8_compute_linear(ag, packed, s_perm, bg)

                        run(what, forced, w8a8_close(a, codes, s, bias if with_bias else None, dtype, what))
                # the op's own rule at the fused limit: weight-only GEMV at L, FP8 above
                for m in (limit, limit + 1):
                    a = torch.randn(m, k, generator=g).to(dtype)
                    ag = cuda(a)
                    what = f"fp8c rule M={m} K={k} N={n} {dtype} kernel={label}"
                    if m <= limit:
                        check = gemm_close(gu.matmul_reference(a, gu.fp8_dequant_reference(codes, s), bias), dtype,
                                           what)
                    else:
                        check = w8a8_close(a, codes, s, bias, dtype, what)
                    run(what, lambda ag=ag: ops.fp8_compute_linear(ag, packed, s_perm, bias_g), check)
    os.environ.pop("QK_FP8_COMPUTE_KERNEL", None)


def main() -> int:
    if not torch.cuda.is_available():
        print("SANITIZE_SKIPPED no CUDA GPU")
        return 2
    FUSED_LIMITS.update(fused_limits())
    print(f"SANITIZE_LIMITS fp8={FUSED_LIMITS['fp8']} int4={FUSED_LIMITS['int4']} int8={FUSED_LIMITS.get('int8', '-')}"
          " (largest M of the fused kernels)", flush=True)
    t0 = time.time()
    for sweep in (sweep_unpack, sweep_repack, sweep_fp8, sweep_fp8_mm, sweep_awq, sweep_marlin, sweep_int8, sweep_int8_mm,
                  sweep_int8_gemm, sweep_fp8_compute):
        sweep()
    seconds = time.time() - t0
    if FAILURES:
        print(f"SANITIZE_FAILED {len(FAILURES)} of {CALLS[0]} calls wrong ({seconds:.1f} s):")
        for f in FAILURES:
            print("  " + f)
        return 1
    print(f"SANITIZE_OK {CALLS[0]} calls, results match the fp64 references ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
