"""FP8 compute probe through the raw C ABI: qk_fp8_act_quant + qk_fp8_compute_gemm against an fp64 reference of
the exact math (check), CUDA-graph timing against torch's bf16 matmul (perf).

Usage: python benchmarks/fp8_compute_probe.py LIB [check|perf|all|one M N K]

check  every shape of M in (1, 3, 17, 129, 300, 1000) x N in (64, 192, 3072) x K in (32, 96, 4096), bf16 and fp16,
       with and without bias, for each kernel the GPU offers: the mma.sync kernel (QK_FP8_COMPUTE_KERNEL=mma, read by
       the library at each call) and the default one (the wgmma kernel on sm_90 when the build has it). Outputs are
       poisoned with NaN and a guard row after the output must stay NaN. The reference decodes the kernel's own
       activation codes (fragment order -> k order) and scales, so it checks the GEMM exactly; the activation
       quantization is checked separately against torch's float8_e4m3fn rounding.
perf   FLUX-sized products (M = 4096, 4608), median of CUDA-graph replays; TFLOP/s = 2MNK / time, and the ratio to
       torch's bf16 matmul (F.linear) of the same shape timed the same way.
one    one product of each kernel (bf16, with bias), checked; for compute-sanitizer or ncu.
"""
import ctypes
import os
import sys

import torch
import torch.nn.functional as F
from probe_common import DT, I32, I64, P, Native, QkError, bench_graph, stream

if len(sys.argv) < 2:
    sys.exit(__doc__)
native = Native(sys.argv[1])
sig, chk = native.sig, native.chk
MODE = sys.argv[2] if len(sys.argv) > 2 else "check"


act_quant = sig("qk_fp8_act_quant", P, I64, P, P, I64, I64, I32, I32, P)
gemm = sig("qk_fp8_compute_gemm", P, P, P, P, P, P, I64, I64, I64, I32, I32, P)
kernel_query = sig("qk_fp8_compute_kernel", I32, ctypes.POINTER(I32))
KNAME = {0: "none", 1: "mma", 2: "wgmma"}
dev = torch.device("cuda:0")
ENV = "QK_FP8_COMPUTE_KERNEL"


def select(kernel):
    """kernel: 'mma' forces the mma.sync kernel, 'default' lets the library choose. Returns the kernel it will use."""
    if kernel == "mma":
        os.environ[ENV] = "mma"
    else:
        os.environ.pop(ENV, None)
    k = I32(-1)
    chk(kernel_query(0, ctypes.byref(k)), "fp8_compute_kernel")
    return KNAME.get(k.value, str(k.value))


# ---------------------------------------------------------------------------------- layouts (docs/layouts.md)

def _grid(*sizes):
    out = []
    for i, s in enumerate(sizes):
        shape = [1] * len(sizes)
        shape[i] = s
        out.append(torch.arange(s, device=dev, dtype=torch.int64).view(shape))
    return out


def marlin_fp8(codes):
    """(N, K) uint8 codes -> (K/16, 4N) int32: byte b of P[kt, 256c + 8t + 2w + h] =
    W[64c + 16w + 8h + t//4, 16kt + 2(t%4) + (0, 8, 1, 9)[b]]."""
    n, k = codes.shape
    kt, c, t, w, h, b = _grid(k // 16, n // 64, 32, 4, 2, 4)
    d = torch.tensor((0, 8, 1, 9), device=dev)[b]
    nn_ = 64 * c + 16 * w + 8 * h + t // 4
    kk = 16 * kt + 2 * (t % 4) + d
    flat = (nn_ * k + kk).reshape(-1)
    return codes.reshape(-1)[flat].reshape(k // 16, 4 * n, 4).contiguous().view(torch.int32).reshape(k // 16, 4 * n)


def block32_src(n):
    """stored[32b + 8i + e] = natural[32b + 2i + d_e], d = (0, 1, 8, 9, 16, 17, 24, 25)."""
    b, i, e = _grid(n // 32, 4, 8)
    d = torch.tensor((0, 1, 8, 9, 16, 17, 24, 25), device=dev)[e]
    return (32 * b + 2 * i + d).reshape(-1)


def slot_to_k(k):
    """fragment order: slot 16r + 4q + b holds k = 16r + 2q + (0, 8, 1, 9)[b] (fp8_compute.h)."""
    s = torch.arange(k, device=dev)
    q, b = (s % 16) // 4, s % 4
    return s - s % 16 + 2 * q + (b % 2) * 8 + b // 2


try:  # cross-check the packer with the test suite's (independent of it; needs pytest importable)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from tests.support import fp8_marlin_layout as _support_marlin, block32_index as _support_b32
except Exception:  # noqa: BLE001
    _support_marlin = _support_b32 = None


def random_codes(n, k, g):
    """(N, K) uint8, uniform over the finite e4m3fn codes."""
    r = torch.randint(0, 254, (n, k), generator=g, device=dev, dtype=torch.int16)
    return (r + (r >= 0x7F).to(torch.int16)).to(torch.uint8)


def fp8_f64(codes):
    return codes.view(torch.float8_e4m3fn).to(torch.float64)


# ---------------------------------------------------------------------------------- calls

def run_quant(x):
    m, k = x.shape
    xq = torch.full((m, k), 0xAB, dtype=torch.uint8, device=dev)
    xs = torch.full((m,), float("nan"), dtype=torch.float32, device=dev)
    chk(act_quant(x.data_ptr(), x.stride(0), xq.data_ptr(), xs.data_ptr(), m, k, DT[x.dtype], 0, stream()), "act_quant")
    return xq, xs


def run_gemm(xq, xs, w, s, bias, n, dt):
    m, k = xq.shape
    buf = torch.full((m + 1, n), float("nan"), dtype=dt, device=dev)  # last row: guard, must stay NaN
    out = buf[:m]
    chk(gemm(xq.data_ptr(), xs.data_ptr(), w.data_ptr(), s.data_ptr(), 0 if bias is None else bias.data_ptr(),
             out.data_ptr(), m, n, k, DT[dt], 0, stream()), "compute_gemm")
    return out, buf[m]


# ---------------------------------------------------------------------------------- check

UNIT = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}  # half an ulp, relative


def check():
    kernels = ["mma"]
    default = select("default")
    if default != "mma":
        kernels.append("default")
    print(f"default kernel on this GPU: {default}; checking {kernels}")
    fails, n_ok, skipped = [], 0, set()
    worst = {}  # kernel -> [cases, failures, max err/bound, max rel fro]
    quant_bad = 0
    g = torch.Generator(device=dev)
    g.manual_seed(1234)
    Ms, Ns, Ks = (1, 3, 17, 129, 300, 1000), (64, 192, 3072), (32, 96, 4096)
    packer_checked = False
    for dt in (torch.bfloat16, torch.float16):
        for n in Ns:
            for k in Ks:
                codes = random_codes(n, k, g)
                w = marlin_fp8(codes)
                if not packer_checked and _support_marlin is not None and n % 64 == 0:
                    assert torch.equal(w, _support_marlin(codes)), "packer disagrees with tests/support.py"
                    assert torch.equal(block32_src(n), _support_b32(n, dev)), "block32 disagrees"
                    packer_checked = True
                s_nat = ((0.5 + torch.rand(n, generator=g, device=dev)) / 448.0).to(dt)
                s_perm = s_nat[block32_src(n)].contiguous()
                wv = fp8_f64(codes)  # (N, K) exact
                kidx = slot_to_k(k)
                for m in Ms:
                    x = torch.randn(m, k, generator=g, device=dev).to(dt)
                    if m >= 3:
                        x[1] = 0  # an all-zero row: output = bias
                    bias = (torch.randn(n, generator=g, device=dev) * 0.5).to(dt) if (m + k) % 2 == 1 else None
                    xq, xs = run_quant(x)
                    # activation quantization vs torch (x * (448/amax) rounded to e4m3, satfinite)
                    amax = x.float().abs().amax(dim=1).clamp_min(1e-12)
                    xs_ref = amax / 448.0
                    tq = (x.float() * (448.0 / amax)[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
                    tq = tq.view(torch.uint8)
                    xnat = torch.empty_like(xq)
                    xnat[:, kidx] = xq
                    if not torch.allclose(xs, xs_ref, rtol=1e-6, atol=0) or not torch.equal(xnat, tq):
                        quant_bad += 1
                        if quant_bad <= 3:
                            diff = (xnat != tq).sum().item()
                            print(f"  act_quant differs from torch: {dt} m={m} k={k}: {diff} codes, "
                                  f"xs max rel {((xs - xs_ref).abs() / xs_ref).max().item():.2e}")
                    # fp64 reference of the exact math on the kernel's own codes
                    acc = fp8_f64(xnat) @ wv.T
                    ref = acc * xs.double()[:, None] * s_nat.double()[None, :]
                    absum = (fp8_f64(xnat).abs() @ wv.abs().T) * xs.double()[:, None] * s_nat.double()[None, :].abs()
                    if bias is not None:
                        ref = ref + bias.double()[None, :]
                        absum = absum + bias.double().abs()[None, :]
                    # 2^-9: Hopper's FP8 tensor cores keep fewer than 24 bits while adding a k-block (measured
                    # worst 2^-10.5 on an H200); exact zeros (all-zero rows) get the smallest spacing.
                    bound = UNIT[dt] * ref.abs() + 2.0 ** -9 * absum + 2.0 ** -133
                    if dt == torch.float16:
                        bound = bound + 2.0 ** -25  # fp16 subnormal spacing / 2
                    for kern in kernels:
                        if (kern, dt) in skipped:
                            continue
                        select(kern)
                        try:
                            out, guard = run_gemm(xq, xs, w, s_perm, bias, n, dt)
                            out2, _ = run_gemm(xq, xs, w, s_perm, bias, n, dt)
                            torch.cuda.synchronize()
                        except QkError as e:
                            if kern == "default":
                                print(f"  default kernel ({default}) not usable: {e}; skipped")
                                skipped.add((kern, dt))
                                continue
                            raise
                        err = (out.double() - ref).abs()
                        bad = []
                        if torch.isnan(out).any():
                            bad.append(f"{torch.isnan(out).sum().item()} NaN")
                        if not torch.isnan(guard).all():
                            bad.append("guard row written")
                        over = (err > bound).sum().item()
                        if over:
                            bad.append(f"{over} over bound (max err/bound {(err / bound).max().item():.2f})")
                        relf = ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
                        if relf > 1e-2:
                            bad.append(f"rel fro {relf:.2e}")
                        if not torch.equal(out, out2):
                            bad.append("not deterministic")
                        tag = (kern, str(dt).split(".")[1], m, n, k, "bias" if bias is not None else "-")
                        wk = worst.setdefault(kern, [0, 0, 0.0, 0.0])
                        wk[0] += 1
                        wk[1] += bool(bad)
                        wk[2] = max(wk[2], (err / bound).max().item())
                        wk[3] = max(wk[3], relf)
                        if bad:
                            fails.append((tag, bad))
                            if len(fails) <= 12:
                                print("  FAIL", tag, "; ".join(bad))
                        else:
                            n_ok += 1
    # NaN in an activation row poisons that row only; zero row gives exactly bias (checked above within bound)
    for kern in kernels:
        if any(kk == kern for kk, _ in skipped):
            continue
        select(kern)
        m, n, k, dt = 5, 128, 64, torch.bfloat16
        codes = random_codes(n, k, g)
        w = marlin_fp8(codes)
        s = torch.full((n,), 1 / 448, dtype=dt, device=dev)
        x = torch.randn(m, k, generator=g, device=dev).to(dt)
        x[2, 7] = float("nan")
        xq, xs = run_quant(x)
        out, _ = run_gemm(xq, xs, w, s, None, n, dt)
        torch.cuda.synchronize()
        rows = torch.isnan(out).any(dim=1).tolist()
        if rows != [False, False, True, False, False] or not torch.isnan(out[2]).all():
            fails.append(((kern, "nan-row"), [str(rows)]))
            print("  FAIL", kern, "NaN row propagation", rows)
        else:
            n_ok += 1
    print(f"check: {n_ok} cases ok, {len(fails)} failures; act_quant differs from torch in {quant_bad} cases")
    print("\n| kernel | cases | failures | worst err / bound | worst rel. Frobenius error |\n|---|---|---|---|---|")
    for kern, (cases, nbad, r, f) in worst.items():
        name = kern if kern == "mma" else f"default ({default})"
        print(f"| {name} | {cases} | {nbad} | {r:.3f} | {f:.2e} |")
    for kern, dt in sorted(skipped, key=str):
        print(f"| default ({default}) | {str(dt).split('.')[1]}: not usable (error status), skipped | | | |")
    print("(bound per element: half an ulp of the output dtype x |ref| + 2^-9 x sum_k |x w| x xs x s (+ |bias|))")
    return fails


# ---------------------------------------------------------------------------------- perf

def perf():
    rows = []
    default = select("default")
    kernels = ["mma"] + (["default"] if default != "mma" else [])
    dt = torch.bfloat16
    shapes = [(m, n, k) for m in (4096, 4608)
              for (n, k) in ((3072, 3072), (9216, 3072), (12288, 3072), (3072, 12288), (15360, 3072), (3072, 15360),
                             (21504, 3072))]
    g = torch.Generator(device=dev)
    g.manual_seed(7)
    for (m, n, k) in shapes:
        L = 3  # distinct weights per graph, so that one weight is not simply re-read from L2
        ws = [marlin_fp8(random_codes(n, k, g)) for _ in range(L)]
        ss = [((0.5 + torch.rand(n, generator=g, device=dev)) / 448.0).to(dt) for _ in range(L)]
        wd = [torch.randn(n, k, generator=g, device=dev).to(dt) for _ in range(L)]
        bias = torch.randn(n, generator=g, device=dev).to(dt)
        x = torch.randn(m, k, generator=g, device=dev).to(dt)
        xq, xs = run_quant(x)
        out = torch.empty(m, n, dtype=dt, device=dev)
        flop = 2.0 * m * n * k
        r = dict(M=m, N=n, K=k)
        t_d = bench_graph(lambda i: F.linear(x, wd[i]), L)
        r["torch_bf16"] = flop / t_d / 1e9
        t_q = bench_graph(lambda i: run_quant_into(x, xq, xs), 1)
        r["quant_us"] = t_q * 1e3
        for kern in kernels:
            select(kern)
            try:
                t = bench_graph(lambda i: chk(gemm(xq.data_ptr(), xs.data_ptr(), ws[i].data_ptr(), ss[i].data_ptr(),
                                                   bias.data_ptr(), out.data_ptr(), m, n, k, DT[dt], 0, stream()),
                                               "gemm"), L)
                r[kern] = flop / t / 1e9
                r[kern + "_e2e"] = flop / (t + t_q) / 1e9
            except QkError as e:
                r[kern] = float("nan")
                r[kern + "_e2e"] = float("nan")
                print(f"  {kern}: {e}")
        rows.append(r)
        print(f"M={m} N={n} K={k}: torch bf16 {r['torch_bf16']:.0f} TFLOP/s, "
              + ", ".join(f"{kern} {r[kern]:.0f} ({r[kern] / r['torch_bf16']:.2f}x)" for kern in kernels), flush=True)
    return rows, kernels, default


def run_quant_into(x, xq, xs):
    m, k = x.shape
    chk(act_quant(x.data_ptr(), x.stride(0), xq.data_ptr(), xs.data_ptr(), m, k, DT[x.dtype], 0, stream()), "act_quant")


def one(m, n, k):
    g = torch.Generator(device=dev)
    g.manual_seed(5)
    dt = torch.bfloat16
    codes = random_codes(n, k, g)
    w = marlin_fp8(codes)
    s_nat = ((0.5 + torch.rand(n, generator=g, device=dev)) / 448.0).to(dt)
    bias = torch.randn(n, generator=g, device=dev).to(dt)
    x = torch.randn(m, k, generator=g, device=dev).to(dt)
    # exact-size copies, so that a read past any end is a read past an allocation
    xq, xs = run_quant(x)
    xnat = torch.empty_like(xq)
    xnat[:, slot_to_k(k)] = xq
    ref = (fp8_f64(xnat) @ fp8_f64(codes).T) * xs.double()[:, None] * s_nat.double()[None, :] + bias.double()
    fails = []
    default = select("default")
    for kern in ["mma"] + (["default"] if default != "mma" else []):
        select(kern)
        try:
            out, guard = run_gemm(xq, xs, w, s_nat[block32_src(n)].contiguous(), bias, n, dt)
            torch.cuda.synchronize()
        except QkError as e:
            print(f"{kern}: {e}")
            continue
        relf = ((out.double() - ref).norm() / ref.norm()).item()
        ok = relf < 1e-2 and not torch.isnan(out).any() and torch.isnan(guard).all()
        print(f"one {kern} M={m} N={n} K={k}: rel fro {relf:.2e} {'ok' if ok else 'FAIL'}")
        if not ok:
            fails.append(kern)
    return fails


def main():
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, library {sys.argv[1]}")
    status = 0
    if MODE == "one":
        sys.exit(1 if one(int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])) else 0)
    if MODE in ("check", "all"):
        fails = check()
        status = 1 if fails else 0
        print("check: " + ("FAIL (" + ", ".join(sorted({str(f[0][0]) for f in fails})) + ")" if fails else "ok"))
    if MODE in ("perf", "all"):
        rows, kernels, default = perf()
        print(f"\nTFLOP/s (2MNK / time, CUDA-graph median, bf16 out with bias; e2e adds act_quant); "
              f"default = {default}")
        cols = " | ".join(f"{k} | {k}/bf16 | {k} e2e" for k in kernels)
        head = f"| M | N | K | torch bf16 | {cols} | quant us |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for r in rows:
            cells = [f"{r['M']}", f"{r['N']}", f"{r['K']}", f"{r['torch_bf16']:.0f}"]
            for kern in kernels:
                cells += [f"{r[kern]:.0f}", f"{r[kern] / r['torch_bf16']:.2f}", f"{r[kern + '_e2e']:.0f}"]
            cells.append(f"{r['quant_us']:.1f}")
            print("| " + " | ".join(cells) + " |")
    sys.exit(status)


if __name__ == "__main__":
    main()
