"""Concurrency: the same weights used from two CUDA streams at once and from several Python threads.

Every result must equal the single-stream result: bit for bit on the fused small-M path (its split-K
reduction has a fixed order and the plan depends only on the shape and the GPU), and within a tight
tolerance on the large-M path (cuBLAS). The shapes are chosen so that the fused kernels split K
(they then need a scratch workspace), which is where a shared or raced workspace would show.

Workspaces:
  * quanto's own ``workspace`` tensors (MarlinF8QBytesTensor._workspace and
    MarlinInt4WeightQBitsTensor._workspace, int32 zeros sized for upstream's lock-based kernels) are
    never touched by our kernels: they stay all-zero and unchanged after many calls.
  * our split-K workspace is allocated per call, with ``torch.empty`` from torch's caching allocator
    on the current stream of the tensors' device (``ops._common.workspace``); a block freed by a call is
    only handed to later work on that same stream, so calls in flight on two streams never share one.
    The tests record every workspace and the stream handed to the library and check exactly that.
  * the library's error message is per thread (``qk_last_error``): a thread that keeps failing does
    not disturb the others.
"""

from __future__ import annotations

# Fixtures (ops, quanto_patched, recorder) are imported from other test modules and named as parameters.
# ruff: noqa: F811

import contextlib
import threading

import pytest
import torch

import support as sp


pytestmark = [pytest.mark.gpu, sp.requires_gpu]

DEV = "cuda"
f16, bf16 = torch.float16, torch.bfloat16
K, N = 4096, 1024  # the fused kernels split K at this shape on every GPU of 8.0+
REPS = 24
THREADS = 6


def _op_case(ops, fmt, m, dtype=f16):
    """(call(x), x builder(seed), fp64 reference(x)) for one raw op and M."""
    g = sp.generator("conc", fmt, m, str(dtype))
    if fmt == "fp8":
        codes, s, packed, s_perm = sp.fp8_weight(K, N, dtype, g)
        ref_w = sp.fp8_dequant_reference(codes, s)
        call = lambda x: ops.fp8_marlin_gemm(x, packed, s_perm)  # noqa: E731
    elif fmt == "awq":
        codes, s, z, packed = sp.awq_weight(K, N, g)
        ref_w = sp.int4_dequant_reference(codes, s, z)
        call = lambda x: ops.awq_int4_gemm(x, packed, s, z)  # noqa: E731
    else:
        codes, s, z, packed = sp.mi4_weight(K, N, g)
        sperm, zp = sp.permute_block64(s), sp.permute_block64(z)
        ref_w = sp.int4_dequant_reference(codes, s, z)
        call = lambda x: ops.marlin_int4_gemm(x, packed, sperm, zp, ops.SCALE_PERM_BLOCK64)  # noqa: E731

    def make_x(seed):
        return torch.randn(m, K, generator=sp.generator("conc-x", fmt, m, seed), device=DEV, dtype=dtype)

    return call, make_x, lambda x: sp.matmul_reference(x, ref_w)


def _same(out, ref, fused, what):
    if fused:
        assert torch.equal(out, ref), f"{what}: differs from the single-stream result " \
                                      f"(max |diff| {float((out.float() - ref.float()).abs().max()):.3g})"
    else:
        scale = float(ref.float().abs().max()) + 1e-6
        torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3 * scale, msg=lambda m: f"{what}: {m}")


CASES = [(fmt, m) for fmt in ("fp8", "awq", "marlin") for m in (1, 5, 16, 64)]
IDS = [f"{fmt}-M{m}" for fmt, m in CASES]


@pytest.fixture
def recorder(monkeypatch, ops, native_calls):
    """Records the workspaces the ops allocate and the (device, stream) each library call receives."""
    from quanto_kernels.ops import _common

    seen = {"ws": [], "native": native_calls}
    lock = threading.Lock()
    real_ws = _common.workspace

    def workspace(t, nbytes):
        ws = real_ws(t, nbytes)
        if ws is not None:
            with lock:
                seen["ws"].append((torch.cuda.current_stream(t.device).cuda_stream, ws.data_ptr(), ws.numel() * 4))
        return ws

    monkeypatch.setattr(_common, "workspace", workspace)
    return _Seen(seen)


class _Seen(dict):
    """seen["calls"]: (function, device, stream) of every launch (queries left out), from native_calls."""

    def __getitem__(self, key):
        if key == "calls":
            native = dict.__getitem__(self, "native")
            return _Calls(native)
        return dict.__getitem__(self, key)


class _Calls(list):
    def __init__(self, native):
        super().__init__((name, kw["device"], kw["stream"]) for name, kw in native.calls
                         if not name.endswith(native.QUERIES) and "stream" in kw)
        self._native = native

    def clear(self):
        super().clear()
        self._native.clear()


@pytest.mark.parametrize("fmt,m", CASES, ids=IDS)
def test_two_streams_at_once(ops, recorder, fmt, m):
    call, make_x, ref64 = _op_case(ops, fmt, m)
    fused = m <= sp.fused_limit(ops, fmt)
    x1, x2 = make_x(1), make_x(2)
    r1, r2 = call(x1), call(x2)
    torch.cuda.synchronize()
    sp.assert_gemm_close(r1, ref64(x1), f16, f"{fmt} M={m} reference run")
    recorder["ws"].clear()
    recorder["calls"].clear()

    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    s1.wait_stream(torch.cuda.current_stream())
    s2.wait_stream(torch.cuda.current_stream())
    outs1, outs2 = [], []
    for _ in range(REPS):  # interleaved, no synchronisation: both streams have work in flight
        with torch.cuda.stream(s1):
            outs1.append(call(x1))
        with torch.cuda.stream(s2):
            outs2.append(call(x2))
    torch.cuda.synchronize()
    for i, (o1, o2) in enumerate(zip(outs1, outs2)):
        _same(o1, r1, fused, f"{fmt} M={m} stream 1 call {i}")
        _same(o2, r2, fused, f"{fmt} M={m} stream 2 call {i}")

    # Every launch went to the stream that was current, on the tensors' device.
    handles = {s1.cuda_stream, s2.cuda_stream}
    assert recorder["calls"], "no library call recorded"
    for name, device, stream in recorder["calls"]:
        assert device == x1.device.index and stream in handles, (name, device, stream)
    # Workspaces of the two streams never overlap (each stream reuses only its own blocks).
    if fused:
        by_stream = {}
        for stream, ptr, nbytes in recorder["ws"]:
            assert stream in handles
            by_stream.setdefault(stream, []).append((ptr, ptr + nbytes))
        if len(by_stream) == 2:
            a, b = by_stream.values()
            for lo1, hi1 in a:
                for lo2, hi2 in b:
                    assert hi1 <= lo2 or hi2 <= lo1, "a workspace was shared by two streams in flight"


@pytest.mark.parametrize("fmt,m", [(f, m) for f, m in CASES if m in (1, 64)],
                         ids=[i for i, c in zip(IDS, CASES) if c[1] in (1, 64)])
def test_python_threads(ops, fmt, m):
    call, make_x, _ = _op_case(ops, fmt, m)
    fused = m <= sp.fused_limit(ops, fmt)
    xs = [make_x(100 + t) for t in range(THREADS)]
    refs = [call(x) for x in xs]
    torch.cuda.synchronize()
    errors = []
    barrier = threading.Barrier(THREADS, timeout=60)

    def worker(t):
        try:
            barrier.wait()  # all threads start calling together
            # Half the threads on their own stream, half on the (shared) default stream.
            stream = torch.cuda.Stream() if t % 2 == 0 else None
            ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            with ctx:
                outs = [call(xs[t]) for _ in range(REPS)]
            (stream if stream is not None else torch.cuda.current_stream()).synchronize()
            for i, o in enumerate(outs):
                _same(o, refs[t], fused, f"{fmt} M={m} thread {t} call {i}")
        except Exception as exc:  # noqa: BLE001 - reported below with the thread number
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a worker thread hung"
    assert not errors, "\n".join(errors)


def test_error_messages_stay_per_thread(ops):
    """One thread keeps making failing C calls while others run valid ops: each sees its own status."""
    import quanto_kernels

    lib = quanto_kernels.get_library()
    call, make_x, _ = _op_case(ops, "fp8", 3)
    x = make_x(7)
    ref = call(x)
    torch.cuda.synchronize()
    errors, stop = [], threading.Event()

    def failing():
        try:
            while not stop.is_set():
                with pytest.raises(ValueError, match=r"qk_unpack: bits: "):
                    # bits=3: refused before any CUDA call
                    lib.abi.unpack(in_=16, out=32, numel=4, bits=3, device=0, stream=None)
                assert lib.abi.last_error().startswith("bits:")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"failing thread: {exc!r}")

    def valid(t):
        try:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                outs = [call(x) for _ in range(REPS)]
                assert lib.abi.last_error() == "", f"thread {t} sees another thread's error: {lib.abi.last_error()!r}"
            stream.synchronize()
            for o in outs:
                assert torch.equal(o, ref)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"valid thread {t}: {exc!r}")

    bad = threading.Thread(target=failing)
    good = [threading.Thread(target=valid, args=(t,)) for t in range(3)]
    bad.start()
    for th in good:
        th.start()
    for th in good:
        th.join(timeout=120)
    stop.set()
    bad.join(timeout=60)
    assert not errors, "\n".join(errors)


# --------------------------------------------------------------------------- quanto, via the shim


def _quanto_linear(kind, k=1024, n=768):
    from optimum.quanto import freeze, qfloat8, qint4, quantize

    dtype = f16
    model, _ = sp.linear_case(k, n, dtype, ("conc-quanto", kind))
    quantize(model, weights=qfloat8 if kind == "qfloat8" else qint4)
    freeze(model)
    want = "MarlinF8QBytesTensor" if kind == "qfloat8" else "AWQWeightQBitsTensor"
    assert type(model[0].weight).__name__ == want
    return model


@pytest.mark.parametrize("kind", ["qfloat8", "qint4"])
@pytest.mark.parametrize("m", [1, 6, 64], ids=lambda m: f"M{m}")
def test_quanto_layer_from_two_streams_and_threads(quanto_patched, ops, kind, m):
    model = _quanto_linear(kind)
    k = model[0].in_features
    fused = m <= sp.fused_limit(ops, kind)
    xs = [torch.randn(m, k, generator=sp.generator("conc-q", kind, m, t), device=DEV, dtype=f16) for t in range(4)]
    ws = getattr(model[0].weight, "_workspace", None)
    ws_before = ws.clone() if ws is not None else None
    with torch.no_grad():
        refs = [model(x) for x in xs]
        torch.cuda.synchronize()
        # two streams, interleaved
        s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
        s1.wait_stream(torch.cuda.current_stream())
        s2.wait_stream(torch.cuda.current_stream())
        outs = []
        for _ in range(REPS):
            with torch.cuda.stream(s1):
                outs.append((0, model(xs[0])))
            with torch.cuda.stream(s2):
                outs.append((1, model(xs[1])))
        torch.cuda.synchronize()
    for i, (j, o) in enumerate(outs):
        _same(o, refs[j], fused, f"quanto {kind} M={m} stream {j} call {i}")

    errors = []

    def worker(t):
        try:
            stream = torch.cuda.Stream()
            with torch.no_grad(), torch.cuda.stream(stream):
                got = [model(xs[t]) for _ in range(REPS)]
            stream.synchronize()
            for o in got:
                _same(o, refs[t], fused, f"quanto {kind} M={m} thread {t}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, "\n".join(errors)
    if ws is not None:
        assert torch.equal(ws, ws_before) and int(ws.abs().sum()) == 0, "quanto's workspace was written to"


def test_quanto_workspaces_are_never_touched(quanto_patched, ops):
    """quanto's int32 workspaces (fp8 and Marlin int4 weights) stay all-zero after many calls."""
    import torch.nn.functional as F
    from optimum.quanto import qint4
    from optimum.quanto.tensor.weights.marlin.int4 import MarlinInt4WeightQBitsTensor

    model = _quanto_linear("qfloat8")
    k = model[0].in_features
    fp8_ws = model[0].weight._workspace
    assert fp8_ws.dtype == torch.int32 and int(fp8_ws.abs().sum()) == 0
    kk, n = 384, 256
    g = sp.generator("conc-ws-mi4")
    codes = sp.random_int4_codes(n, kk, g)
    s, z = sp.random_group_params(kk // 128, n, g)
    w = MarlinInt4WeightQBitsTensor(qint4, 0, 128, torch.Size((n, kk)), (kk, 1), codes.reshape(-1, 128),
                                    s.t().reshape(-1, 1).contiguous(), (-z).t().reshape(-1, 1).contiguous())
    mi4_ws = w._workspace
    assert mi4_ws.dtype == torch.int32 and int(mi4_ws.abs().sum()) == 0
    # Surround each workspace with sentinels we can see: fill it with a pattern, which must survive.
    fp8_ws.fill_(0x5A5A5A5A)
    mi4_ws.fill_(0x3C3C3C3C)
    with torch.no_grad():
        for m in (1, 7, 16, 40):
            x = torch.randn(m, k, generator=g, device=DEV, dtype=f16)
            for _ in range(8):
                model(x)
            xi = torch.randn(m, kk, generator=g, device=DEV, dtype=f16)
            for _ in range(8):
                F.linear(xi, w)
    torch.cuda.synchronize()
    assert bool((fp8_ws == 0x5A5A5A5A).all()), "the fp8 workspace was written by a kernel"
    assert bool((mi4_ws == 0x3C3C3C3C).all()), "the Marlin int4 workspace was written by a kernel"
    fp8_ws.zero_()
    mi4_ws.zero_()
