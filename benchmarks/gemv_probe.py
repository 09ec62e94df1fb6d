"""GEMV probe through the raw C ABI: fp8 and int8 fused kernels against fp64 (check), graph-replay timing (perf),
one call each for ncu / compute-sanitizer (one M N K). Usage: python benchmarks/gemv_probe.py LIB [check|perf|one M N K]."""
import ctypes, sys, time, json, os
import torch
import torch.nn.functional as F

lib = ctypes.CDLL(sys.argv[1])
OUT = os.environ.get("OUT", "/tmp")
P, I64, I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
lib.qk_last_error.restype = ctypes.c_char_p
def sig(name, *args):
    f = getattr(lib, name); f.argtypes = list(args); f.restype = I32; return f
fp8_ws = sig("qk_fp8_marlin_gemv_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
fp8_gemv = sig("qk_fp8_marlin_gemv", P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
fp8_deq = sig("qk_fp8_marlin_dequantize", P, P, P, I64, I64, I32, I32, P)
i8_ws = sig("qk_int8_gemv_workspace_bytes", I64, I64, I64, I32, ctypes.POINTER(I64))
i8_gemv = sig("qk_int8_gemv", P, P, P, P, P, I64, I64, I64, I64, I32, I32, P)
i8_deq = sig("qk_int8_dequantize", P, P, P, I64, I64, I32, I32, P)
DT = {torch.float16: 1, torch.bfloat16: 2}
dev = torch.device("cuda:0")

def chk(st, what):
    if st != 0:
        raise RuntimeError(f"{what}: status {st}: {lib.qk_last_error().decode()}")

def stream():
    return torch.cuda.current_stream().cuda_stream

def rand_fp8_words(n, k, nan=False):
    b = torch.randint(0, 256, (k // 16, 4 * n * 4), dtype=torch.uint8, device=dev)
    if not nan:
        b = torch.where((b & 0x7F) == 0x7F, b ^ 0x01, b)
    return b.view(torch.int32)

def ws_for(fn, m, n, k):
    nb = I64(0); chk(fn(m, n, k, 0, ctypes.byref(nb)), "ws"); return nb.value

def run_fp8(a, w, s, n, k, out=None):
    m = a.shape[0]
    nb = ws_for(fp8_ws, m, n, k)
    ws = torch.empty(max(nb, 16) // 4 + 4, dtype=torch.float32, device=dev)
    if out is None:
        out = torch.full((m, n), float("nan"), dtype=a.dtype, device=dev)
    chk(fp8_gemv(a.data_ptr(), w.data_ptr(), s.data_ptr(), out.data_ptr(), ws.data_ptr(), nb, m, n, k, DT[a.dtype], 0, stream()), "fp8_gemv")
    return out

def deq_fp8(w, s, n, k, dt):
    out = torch.empty((n, k), dtype=dt, device=dev)
    chk(fp8_deq(w.data_ptr(), s.data_ptr(), out.data_ptr(), n, k, DT[dt], 0, stream()), "fp8_deq")
    return out

def run_i8(a, w, s, out=None):
    m, k = a.shape; n = w.shape[0]
    nb = ws_for(i8_ws, m, n, k)
    ws = torch.empty(max(nb, 16) // 4 + 4, dtype=torch.float32, device=dev)
    if out is None:
        out = torch.full((m, n), float("nan"), dtype=a.dtype, device=dev)
    chk(i8_gemv(a.data_ptr(), w.data_ptr(), s.data_ptr(), out.data_ptr(), ws.data_ptr(), nb, m, n, k, DT[a.dtype], 0, stream()), "i8_gemv")
    return out

def rel(x, ref):
    x = x.double(); return ((x - ref).norm() / ref.norm()).item()

fails = []
def correctness():
    torch.manual_seed(0)
    shapes = [(64, 16), (64, 128), (128, 64), (192, 144), (4096, 4096), (14336, 4096), (64, 4096), (4096, 128), (3072, 12288), (256, 1040), (192, 96), (128, 32)]
    ms = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 48, 63, 64]
    n_ok = 0
    for dt in (torch.bfloat16, torch.float16):
        for (n, k) in shapes:
            w = rand_fp8_words(n, k)
            s = (torch.rand(n, device=dev) * 0.02 + 0.001).to(dt)
            wd = deq_fp8(w, s, n, k, dt).double()
            for m in ms:
                a = torch.randn(m, k, device=dev).to(dt)
                ref = a.double() @ wd.T
                out = run_fp8(a, w, s, n, k)
                torch.cuda.synchronize()
                e = rel(out, ref)
                bad = torch.isnan(out).any().item() or e > 1e-2
                if bad: fails.append(("fp8", str(dt), m, n, k, e))
                n_ok += not bad
                # determinism
                out2 = run_fp8(a, w, s, n, k)
                if not torch.equal(out, out2): fails.append(("fp8-nondet", str(dt), m, n, k))
            # int8, including N not a multiple of 64
            for n8 in ((n, n + 5 if n > 64 else 1) if k % 32 == 0 else ()):
                w8 = torch.randint(-128, 128, (n8, k), dtype=torch.int8, device=dev)
                s8 = (torch.rand(n8, 1, device=dev) * 0.02 + 0.001).to(dt)
                ref_w = w8.double() * s8.double()
                for m in ms:
                    a = torch.randn(m, k, device=dev).to(dt)
                    ref = a.double() @ ref_w.T
                    out = run_i8(a, w8, s8)
                    torch.cuda.synchronize()
                    e = rel(out, ref)
                    bad = torch.isnan(out).any().item() or e > 1e-2
                    if bad: fails.append(("int8", str(dt), m, n8, k, e))
                    n_ok += not bad
                d = torch.full((n8, k), float("nan"), dtype=dt, device=dev)
                chk(i8_deq(w8.data_ptr(), s8.data_ptr(), d.data_ptr(), n8, k, DT[dt], 0, stream()), "i8deq")
                if not torch.equal(d, (w8.to(torch.float32) * s8.float()).to(dt)): fails.append(("int8-deq", str(dt), n8, k))
    # NaN codes in fp8
    n, k = 128, 64
    w = rand_fp8_words(n, k, nan=True); s = torch.ones(n, dtype=torch.bfloat16, device=dev)
    a = torch.randn(1, k, device=dev).to(torch.bfloat16)
    out = run_fp8(a, w, s, n, k); ref = a.double() @ deq_fp8(w, s, n, k, torch.bfloat16).double().T
    torch.cuda.synchronize()
    if not torch.equal(torch.isnan(out), torch.isnan(ref)): fails.append(("fp8-nan",))
    print(f"correctness: {n_ok} cases ok, {len(fails)} failures", fails[:10])

def bench_graph(fn, n_layers, reps=50):
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            for i in range(n_layers): fn(i)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for i in range(n_layers): fn(i)
    g.replay(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0 = torch.cuda.Event(enable_timing=True); e1 = torch.cuda.Event(enable_timing=True)
        e0.record(); g.replay(); e1.record(); e1.synchronize()
        ts.append(e0.elapsed_time(e1) / n_layers)
    ts.sort(); return ts[len(ts) // 2]

def perf():
    rows = []
    for (m, k, n) in [(1, 4096, 14336), (16, 4096, 14336), (32, 4096, 14336), (64, 4096, 14336), (1, 3072, 18432), (1, 4096, 4096), (16, 4096, 4096), (8, 14336, 4096)]:
        dt = torch.bfloat16
        L = max(2, int(400e6 // (n * k * 2)) + 1)
        ws8 = [rand_fp8_words(n, k) for _ in range(L)]
        ss = [(torch.rand(n, device=dev) * 0.01).to(dt) for _ in range(L)]
        wi8 = [torch.randint(-128, 128, (n, k), dtype=torch.int8, device=dev) for _ in range(L)]
        si8 = [(torch.rand(n, 1, device=dev) * 0.01).to(dt) for _ in range(L)]
        wd = [torch.randn(n, k, device=dev).to(dt) for _ in range(L)]
        a = torch.randn(m, k, device=dev).to(dt)
        outs = torch.empty(m, n, dtype=dt, device=dev)
        nb = ws_for(fp8_ws, m, n, k); ws = torch.empty(max(nb, 16) // 4 + 4, dtype=torch.float32, device=dev)
        nb8 = ws_for(i8_ws, m, n, k); ws8b = torch.empty(max(nb8, 16) // 4 + 4, dtype=torch.float32, device=dev)
        t_fp8 = bench_graph(lambda i: fp8_gemv(a.data_ptr(), ws8[i].data_ptr(), ss[i].data_ptr(), outs.data_ptr(), ws.data_ptr(), nb, m, n, k, 2, 0, stream()), L)
        t_i8 = bench_graph(lambda i: i8_gemv(a.data_ptr(), wi8[i].data_ptr(), si8[i].data_ptr(), outs.data_ptr(), ws8b.data_ptr(), nb8, m, n, k, 2, 0, stream()), L)
        t_d = bench_graph(lambda i: F.linear(a, wd[i]), L)
        r = dict(M=m, K=k, N=n, fp8_ms=t_fp8, int8_ms=t_i8, dense_ms=t_d, fp8_tbs=n * k / t_fp8 / 1e9, int8_tbs=n * k / t_i8 / 1e9, dense_tbs=2 * n * k / t_d / 1e9, ws_bytes=nb)
        rows.append(r)
        print(f"{m}x{k}x{n}: fp8 {t_fp8:.4f} ms ({r['fp8_tbs']:.2f} TB/s)  int8 {t_i8:.4f} ({r['int8_tbs']:.2f})  dense {t_d:.4f} ({r['dense_tbs']:.2f})  fp8/dense {t_fp8/t_d:.2f}")
        del ws8, wi8, wd
    json.dump(rows, open(os.path.join(OUT, "probe_perf.json"), "w"), indent=1)

if __name__ == "__main__":
    what = sys.argv[2] if len(sys.argv) > 2 else "all"
    print(torch.cuda.get_device_name(), torch.__version__)
    if what in ("all", "check"): correctness()
    if what in ("all", "perf"): perf()
    if what == "one":  # for ncu / sanitizer
        m, n, k = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        for dt in (torch.bfloat16,):
            w = rand_fp8_words(n, k); s = (torch.rand(n, device=dev) * 0.02).to(dt)
            a = torch.randn(m, k, device=dev).to(dt)
            run_fp8(a, w, s, n, k)
            if k % 32 == 0:
                w8 = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=dev); s8 = (torch.rand(n, 1, device=dev) * 0.02).to(dt)
                run_i8(a, w8, s8)
        torch.cuda.synchronize(); print("one ok")
    sys.exit(1 if fails else 0)
