"""What the raw-ABI probes (gemv_probe.py, fp8_compute_probe.py, fp8_mm_probe.py, int8_mm_probe.py, and
weight_only_probe.py, the harness of the last two) share: the library loaded
by path with typed signatures and checked statuses, the current stream handle, dtype codes, and the
CUDA-graph timing of a sequence of calls."""

import ctypes
import os
import statistics

import torch

P, I64, I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
DT = {torch.float16: 1, torch.bfloat16: 2}  # QK_DTYPE_FLOAT16, QK_DTYPE_BFLOAT16


class QkError(RuntimeError):
    """A non-zero status from the library, with its message."""


class Native:
    """The library at `path`: ``sig`` types one entry point, ``chk`` turns a status into QkError."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.qk_last_error.restype = ctypes.c_char_p

    def sig(self, name, *argtypes, res=I32):
        f = getattr(self.lib, name)
        f.argtypes = list(argtypes)
        f.restype = res
        return f

    def chk(self, status, what):
        if status != 0:
            raise QkError(f"{what}: status {status}: {self.lib.qk_last_error().decode()}")


def stream():
    return torch.cuda.current_stream().cuda_stream


def bench_graph(fn, n_calls, reps=20):
    """Median time (ms) per call of a CUDA graph that calls fn(0), ..., fn(n_calls - 1), after two warm-up
    rounds on a side stream (what graph capture needs for lazily initialised state)."""
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            for i in range(n_calls):
                fn(i)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for i in range(n_calls):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / n_calls)
    return statistics.median(ts)


def graph_time(fn):
    """Median ms per call of fn in a CUDA graph of 20 calls (7 replays)."""
    return bench_graph(lambda _: fn(), 20, reps=7)


def set_env(names, values):
    """Sets each variable to str(value), or removes it where the value is None (values None: all removed)."""
    for name, value in zip(names, values or (None,) * len(names)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
