"""GPU side of benchmarks/run.py: one process measures a list of tasks in one environment.

Not meant to be started by hand: run.py writes the task list, starts this script with the environment
variables of the competitor, and reads the JSON lines it appends to --results:

    {"ev": "meta", ...}                       GPU name, versions, which quanto_kernels modes exist
    {"ev": "start", "task": id}               a task begins (a crash after this is charged to it)
    {"ev": "value", "task": id, "key": [...], "value": ms or null, "note": str or null}
    {"ev": "info", "task": id, "classes": ...}  weight classes quanto chose
    {"ev": "flux", "task": id, "row": {...}}
    {"ev": "ceilings", "task": id, ...}  /  {"ev": "build", "task": id, ...}
    {"ev": "error", "task": id, "note": str}  the task failed before its measurements
    {"ev": "done", "task": id}

Environments (--env): ours (import quanto_kernels; it must patch quanto), upstream (QUANTO_KERNELS_DISABLE=1:
quanto's own JIT-built extension), fallback (QUANTO_KERNELS_DISABLE=1 and quanto imported as on a system
where it registers no CUDA extension: its pure-PyTorch paths), plain (neither quanto nor quanto_kernels
until a task needs them: dense, torchao, FLUX bf16).

A CUDA error that can poison the context (illegal address, launch failure) ends the process with exit
code 3 after reporting; run.py then starts a new one for the remaining tasks.

QK_BENCH_FAKE=1 replaces every GPU measurement by a made-up number (no torch needed), for testing run.py
on a machine without a GPU; QK_BENCH_FAKE_CRASH=<text> makes the process die hard in a task whose id
contains <text>.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time

FAKE = os.environ.get("QK_BENCH_FAKE", "") not in ("", "0")
FATAL_MARKERS = ("illegal memory access", "illegal address", "unspecified launch failure", "misaligned address",
                 "device-side assert", "CUDA error: an illegal", "cudaErrorLaunchFailure", "context is destroyed")
# quanto_kernels' fp8 compute mode, if the package has one: the first of these names it exposes. The
# global switch comes first: quanto_kernels also exports fp8_compute, but as a context manager
# (fp8_compute(enabled=True)), not as a per-model function.
FP8_COMPUTE_APIS = ("set_fp8_compute", "enable_fp8_compute", "fp8_compute")
L2_MULTIPLE = 4  # rotated layers hold at least this many times the L2 size in weights
TARGET_S = 0.10  # timed seconds per measurement (adaptive number of repeats)
SEED = 1234

torch = None  # imported in main() (not at all in fake mode)


class Emitter:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def __call__(self, ev, **kw):
        kw["ev"] = ev
        self.f.write(json.dumps(kw) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())


def short(exc) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text[:200]


def is_fatal(exc) -> bool:
    text = str(exc)
    return any(m.lower() in text.lower() for m in FATAL_MARKERS)


class Fatal(Exception):
    pass


# ------------------------------------------------------------------------------------------ environments
def setup_env(kind):
    """Imports what the environment needs; returns the meta dict."""
    meta = {"env": kind}
    if FAKE:
        meta.update(gpu="FAKE GPU", fp8_compute_api=os.environ.get("QK_BENCH_FAKE_FP8_COMPUTE") or None)
        return meta
    global torch
    import torch as _torch

    torch = _torch
    if not torch.cuda.is_available():
        raise SystemExit("worker: no CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    meta["gpu"] = torch.cuda.get_device_name()
    meta["torch"] = torch.__version__
    meta["cuda"] = torch.version.cuda
    if kind == "ours":
        import quanto_kernels

        status = quanto_kernels.quanto_status()
        import optimum.quanto  # noqa: F401  (the import hook patches it)

        status = quanto_kernels.quanto_status()
        meta["patched"] = bool(status.get("patched"))
        meta["patch_reason"] = status.get("reason")
        meta["quanto_kernels"] = getattr(quanto_kernels, "__version__", None)
        meta["fp8_compute_api"] = next((n for n in FP8_COMPUTE_APIS if hasattr(quanto_kernels, n)), None)
    elif kind == "fallback":
        import platform

        real = platform.system
        platform.system = lambda: "Windows"  # quanto then registers no CUDA extension (as on Windows)
        try:
            import optimum.quanto  # noqa: F401
        finally:
            platform.system = real
        from optimum.quanto.library.extensions import is_extension_available

        meta["extension_available"] = is_extension_available("quanto_cuda")
        if meta["extension_available"]:
            raise SystemExit("worker: fallback environment still has quanto's CUDA extension "
                             "(was optimum.quanto imported earlier?)")
    elif kind == "upstream":
        import optimum.quanto  # noqa: F401
    return meta


def dtype_of(act):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[act]


def quanto_qtype(fmt):
    from optimum.quanto import qfloat8, qint4, qint8

    return {"fp8": qfloat8, "fp8_compute": qfloat8, "int8": qint8, "int4_awq": qint4, "int4_bf16": qint4, "int4": qint4,
            "fallback_fp8": qfloat8, "fallback_int8": qint8, "upstream_fp8": qfloat8}[fmt]


def apply_fp8_compute(model):
    """Turns on quanto_kernels' fp8 compute mode for `model` (after quantize + freeze).

    Accepts either a per-model function (fp8_compute(model) / enable_fp8_compute(model), which may return
    the model) or a global switch (set_fp8_compute(True))."""
    import quanto_kernels

    name = next((n for n in FP8_COMPUTE_APIS if hasattr(quanto_kernels, n)), None)
    if name is None:
        raise RuntimeError("quanto_kernels exposes no fp8 compute mode")
    fn = getattr(quanto_kernels, name)
    if name == "set_fp8_compute":
        fn(True)
        return model
    try:
        out = fn(model)
    except TypeError:
        out = fn(True)
    if hasattr(out, "__enter__") and not isinstance(out, torch.nn.Module):
        out.__enter__()  # a context manager: stays on for the rest of this process
        return model
    return out if isinstance(out, torch.nn.Module) else model


# ------------------------------------------------------------------------------------------ timing
def graph_ms(calls):
    """Median GPU ms per call of `calls` captured back to back in one CUDA graph and replayed."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in calls:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    graph.replay()
    torch.cuda.synchronize()
    reps = max(3, min(25, int(TARGET_S / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(calls))
    del graph
    return statistics.median(times)


def profiler_ms(calls, rounds=3):
    """GPU ms per call summed over the kernels the profiler saw (for code that cannot be captured)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    for fn in calls:
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(rounds):
            for fn in calls:
                fn()
        torch.cuda.synchronize()
    total_us = 0.0
    for e in prof.events():
        if getattr(e, "device_type", None) == DeviceType.CUDA:
            total_us += e.time_range.elapsed_us()
    if total_us <= 0:
        raise RuntimeError("profiler saw no GPU kernels")
    return total_us / 1e3 / (rounds * len(calls))


def eager_ms(calls, target_s=TARGET_S, min_blocks=3, max_blocks=20):
    """Median ms per call of back-to-back eager calls rotating over `calls`; events around each block."""
    n = len(calls)
    block = max(n, 10)
    for fn in calls:
        fn()
    torch.cuda.synchronize()
    times = []
    deadline = None
    blocks = max_blocks
    i = 0
    while len(times) < blocks:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        for j in range(block):
            calls[(i + j) % n]()
        end.record()
        end.synchronize()
        i += block
        times.append(start.elapsed_time(end) / block)
        if deadline is None:
            took = time.perf_counter() - t0
            blocks = max(min_blocks, min(max_blocks, int(target_s / max(took, 1e-6))))
            deadline = True
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ layers
def weight_bytes(side, fmt, k, n):
    if side == "dense":
        return 2 * k * n
    if fmt.startswith("int4"):
        return k * n // 2
    return k * n


def rotation(side, fmt, k, n):
    l2 = 60 * 2**20
    if not FAKE:
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or l2
    return max(2, min(64, math.ceil(L2_MULTIPLE * l2 / weight_bytes(side, fmt, k, n))))


def build_layers(side, fmt, act, k, n, copies):
    dtype = dtype_of(act)
    layers = []
    for _ in range(copies):
        lin = torch.nn.Linear(k, n, bias=True, device="cuda", dtype=dtype)
        if side == "dense":
            layers.append(lin.eval())
            continue
        model = torch.nn.Sequential(lin)
        if side == "torchao":
            from torchao.quantization import Float8WeightOnlyConfig, quantize_

            quantize_(model, Float8WeightOnlyConfig())
        else:
            from optimum.quanto import freeze, quantize

            quantize(model, weights=quanto_qtype(fmt))
            freeze(model)
            if fmt == "fp8_compute":
                model = apply_fp8_compute(model)
        layers.append(model[0].eval())
    torch.cuda.synchronize()
    return layers


def run_layers_task(task, emit, deadline):
    side, fmt, act, k, n = task["side"], task["format"], task["act"], task["K"], task["N"]

    def key(m, metric):
        return [side, fmt, act, k, n, m, metric]

    measures = task["measure"]  # [[M, "kernel"|"layer"], ...]
    if FAKE:
        crash = os.environ.get("QK_BENCH_FAKE_CRASH")
        for m, metric in measures:
            if time.time() > deadline:
                emit("value", task=task["id"], key=key(m, metric), value=None, note="budget")
                continue
            if crash and crash in task["id"] and m == measures[-1][0]:
                os._exit(134)
            base = {"dense": 1.0, "ours": 0.8, "upstream": 0.9, "fallback": 3.0, "torchao": 1.1}[side]
            val = base * (0.01 + 2 * m * k * n / 700e12 * 1e3) * (1.2 if metric == "layer" else 1.0)
            emit("value", task=task["id"], key=key(m, metric), value=val, note=None)
        emit("info", task=task["id"], classes="FakeTensor")
        return
    copies = rotation(side, fmt, k, n)
    try:
        layers = build_layers(side, fmt, act, k, n, copies)
    except Exception as exc:  # noqa: BLE001
        emit("error", task=task["id"], note=f"setup failed: {short(exc)}")
        if is_fatal(exc):
            raise Fatal(exc) from exc
        return
    emit("info", task=task["id"], classes=type(layers[0].weight).__name__, copies=copies)
    dtype = dtype_of(act)
    gen = torch.Generator(device="cuda").manual_seed(SEED)
    try:
        with torch.no_grad():
            for m, metric in measures:
                if time.time() > deadline:
                    emit("value", task=task["id"], key=key(m, metric), value=None, note="budget")
                    continue
                x = torch.randn(m, k, device="cuda", dtype=dtype, generator=gen)
                calls = [lambda layer=layer, x=x: layer(x) for layer in layers]
                note = None
                try:
                    if metric == "kernel":
                        try:
                            val = graph_ms(calls)
                        except Exception as exc:  # noqa: BLE001
                            if is_fatal(exc):
                                raise
                            torch.cuda.synchronize()
                            val = profiler_ms(calls)
                            note = f"not graph-capturable ({short(exc)[:80]}): profiler kernel sum"
                    else:
                        fallback = side == "fallback"
                        val = eager_ms(calls, target_s=TARGET_S / 2 if fallback else TARGET_S,
                                       min_blocks=2 if fallback else 3, max_blocks=5 if fallback else 20)
                except Exception as exc:  # noqa: BLE001
                    emit("value", task=task["id"], key=key(m, metric), value=None, note=short(exc))
                    if is_fatal(exc):
                        raise Fatal(exc) from exc
                    continue
                emit("value", task=task["id"], key=key(m, metric), value=val, note=note)
    finally:
        del layers
        gc.collect()
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ ceilings
def run_ceilings(task, emit):
    if FAKE:
        emit("ceilings", task=task["id"], copy_tb_s=4.0, bf16_tflops=750.0)
        return
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    src.fill_(7)
    dst = torch.empty_like(src)
    copy_ms = graph_ms([lambda d=dst, s=src: d.copy_(s)] * 4)
    src = dst = None
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = graph_ms([lambda a=a, b=b: a @ b] * 4)
    a = b = None
    torch.cuda.empty_cache()
    emit("ceilings", task=task["id"], copy_tb_s=2 * n / (copy_ms * 1e-3) / 1e12,
         bf16_tflops=2 * 8192**3 / (mm_ms * 1e-3) / 1e12)


# ------------------------------------------------------------------------------------------ upstream build
def run_build(task, emit):
    if FAKE:
        emit("build", task=task["id"], s=0.5, cached=False, ok=True)
        return
    from optimum.quanto.library.extensions import get_extension

    ext = get_extension("quanto_cuda")
    version_file = os.path.join(ext.build_directory, "pytorch_version.txt")
    cached = False
    if os.path.exists(version_file):
        with open(version_file) as f:
            cached = f.read().strip() == torch.__version__
    t0 = time.perf_counter()
    try:
        ext.lib  # noqa: B018 - builds (or loads) quanto's extension
    except Exception as exc:  # noqa: BLE001
        emit("build", task=task["id"], s=time.perf_counter() - t0, cached=cached, ok=False, note=short(exc))
        return
    emit("build", task=task["id"], s=time.perf_counter() - t0, cached=cached, ok=True)


# ------------------------------------------------------------------------------------------ FLUX
FLUX_CONFIG = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                   axes_dims_rope=(16, 56, 56))
FLUX_TINY = dict(FLUX_CONFIG, num_layers=1, num_single_layers=1, num_attention_heads=2)  # CPU tests only


def build_flux(device, tiny=False):
    """FLUX.1-dev's transformer with deterministic random bf16 weights, built on the meta device and
    materialised directly on `device` (no fp32 copy, no download)."""
    from diffusers import FluxTransformer2DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # parameters are bf16 from the start: no fp32 copy anywhere
    try:
        with torch.device("meta"):
            model = FluxTransformer2DModel(**(FLUX_TINY if tiny else FLUX_CONFIG))
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(SEED)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                bound = 1.0 / math.sqrt(mod.in_features)  # torch's default Linear init range
                mod.weight.uniform_(-bound, bound, generator=gen)
                if mod.bias is not None:
                    mod.bias.uniform_(-bound, bound, generator=gen)
            else:
                for name, p in mod.named_parameters(recurse=False):
                    p.fill_(0.0 if name == "bias" else 1.0)  # norm scales 1, shifts 0
    for name, buf in model.named_buffers():
        raise RuntimeError(f"FLUX model has a buffer ({name}) that meta-device construction leaves uninitialised")
    return model.eval()


def flux_inputs(device, tiny=False):
    side, txt, width = (8, 16, FLUX_TINY["joint_attention_dim"]) if tiny else (64, 512, 4096)
    gen = torch.Generator(device=device).manual_seed(SEED + 1)
    kw = dict(device=device, dtype=torch.bfloat16)
    img_ids = torch.zeros(side, side, 3, **kw)
    img_ids[..., 1] = torch.arange(side, **kw)[:, None]
    img_ids[..., 2] = torch.arange(side, **kw)[None, :]
    return dict(hidden_states=torch.randn(1, side * side, 64, generator=gen, **kw),
                encoder_hidden_states=torch.randn(1, txt, width, generator=gen, **kw),
                pooled_projections=torch.randn(1, 768, generator=gen, **kw),
                timestep=torch.tensor([0.5], **kw), guidance=torch.tensor([3.5], **kw),
                img_ids=img_ids.reshape(-1, 3), txt_ids=torch.zeros(txt, 3, **kw), return_dict=False)


def quantize_flux(model, variant):
    """Quantizes `model` in place for `variant`; returns (model, sorted weight classes of its linears)."""
    if variant == "bf16":
        pass
    elif variant == "torchao_fp8dq":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    elif variant == "torchao_fp8wo":
        from torchao.quantization import Float8WeightOnlyConfig, quantize_

        quantize_(model, Float8WeightOnlyConfig())
    else:
        from optimum.quanto import freeze, quantize

        quantize(model, weights=quanto_qtype(variant))
        freeze(model)  # module by module: each bf16 weight is freed as its quantized one is made
        if variant == "fp8_compute":
            model = apply_fp8_compute(model)
    classes = sorted({type(m.weight).__name__ for m in model.modules()
                      if hasattr(m, "weight") and isinstance(getattr(m, "in_features", None), int)})
    return model, classes


def run_flux_task(task, emit, deadline):
    variant, compiled = task["variant"], bool(task.get("compiled"))
    row = {"variant": variant, "compiled": compiled, "step_s": None, "peak_gib": None, "rel_err_vs_bf16": None}
    notes = []
    if variant == "fp8_compute" and (FAKE and not os.environ.get("QK_BENCH_FAKE_FP8_COMPUTE")
                                     or not FAKE and not any(hasattr(sys.modules.get("quanto_kernels"), n)
                                                             for n in FP8_COMPUTE_APIS)):
        row["notes"] = "skipped: quanto_kernels exposes no fp8 compute mode"
        emit("flux", task=task["id"], row=row)
        return
    if FAKE:
        if os.environ.get("QK_BENCH_FAKE_CRASH") and os.environ["QK_BENCH_FAKE_CRASH"] in task["id"]:
            os._exit(134)
        base = {"bf16": 0.17, "fp8": 0.18, "int8": 0.3, "int4": 0.25, "fp8_compute": 0.15, "torchao_fp8dq": 0.14,
                "upstream_fp8": 0.3, "fallback_fp8": 0.28, "fallback_int8": 0.3}.get(variant, 0.2)
        row.update(step_s=base * (0.8 if compiled else 1.0), peak_gib=12.0 if variant != "bf16" else 23.0,
                   rel_err_vs_bf16=0.0 if variant == "bf16" and not compiled else 0.04, notes="")
        emit("flux", task=task["id"], row=row)
        return
    tiny = bool(task.get("tiny"))
    device = task.get("device", "cuda")
    on_gpu = device == "cuda"
    t0 = time.perf_counter()
    model = build_flux(device, tiny)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, classes = quantize_flux(model, variant)
    gc.collect()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    row["quantize_s"] = round(time.perf_counter() - t0, 2)
    row["build_s"] = round(build_s, 2)
    row["classes"] = classes
    inputs = flux_inputs(device, tiny)
    step = model
    if compiled:
        mode = task.get("compile_mode", "regional")
        if mode == "regional":
            model.compile_repeated_blocks()  # torch.compile (mode default) of each repeated transformer block
        else:
            step = torch.compile(model)
        notes.append(f"torch.compile {mode}")

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    with torch.no_grad():
        t0 = time.perf_counter()
        out = step(**inputs)[0]
        sync()
        first_s = time.perf_counter() - t0
        if compiled:
            row["compile_s"] = round(first_s, 2)
        for _ in range(2):
            out = step(**inputs)[0]
        sync()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        times = []
        reps = task.get("reps", 5)
        while len(times) < reps:
            t0 = time.perf_counter()
            out = step(**inputs)[0]
            sync()
            times.append(time.perf_counter() - t0)
            if len(times) >= 3 and time.time() + times[-1] > deadline:
                notes.append(f"{len(times)} steps (budget)")
                break
    row["step_s"] = round(statistics.median(times), 5)
    row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if on_gpu else None
    y = out.float().cpu()
    ref_path = task["ref"]
    if variant == "bf16" and not compiled:
        torch.save(y, ref_path)
        row["rel_err_vs_bf16"] = 0.0
    elif os.path.exists(ref_path):
        ref = torch.load(ref_path)
        if ref.shape == y.shape:
            row["rel_err_vs_bf16"] = round(float((y - ref).norm() / ref.norm()), 6)
        else:
            notes.append(f"reference shape {tuple(ref.shape)} != {tuple(y.shape)}")
    else:
        notes.append("no eager bf16 reference output to compare with")
    if not math.isfinite(float(y.abs().max())):
        notes.append("output has inf/nan")
    if variant == "upstream_fp8":
        notes.append("quanto 0.2.7's Marlin FP8 linear drops the bias")
    row["notes"] = "; ".join(notes)
    emit("flux", task=task["id"], row=row)


# ------------------------------------------------------------------------------------------ main
def run_task(task, emit, deadline):
    kind = task["kind"]
    if kind == "layers":
        run_layers_task(task, emit, deadline)
    elif kind == "ceilings":
        run_ceilings(task, emit)
    elif kind == "build":
        run_build(task, emit)
    elif kind == "flux":
        run_flux_task(task, emit, deadline)
    else:
        raise ValueError(f"unknown task kind {kind!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", choices=("ours", "upstream", "fallback", "plain"), required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--deadline", type=float, required=True, help="time.time() after which nothing new starts")
    args = p.parse_args(argv)
    emit = Emitter(args.results)
    with open(args.tasks) as f:
        tasks = json.load(f)
    try:
        meta = setup_env(args.env)
    except BaseException as exc:  # noqa: BLE001
        emit("fatal", note=f"environment {args.env}: {short(exc)}")
        raise
    emit("meta", **meta)
    for task in tasks:
        if time.time() > args.deadline:
            emit("error", task=task["id"], note="budget")
            emit("done", task=task["id"])
            continue
        emit("start", task=task["id"])
        try:
            run_task(task, emit, args.deadline)
        except Fatal as exc:
            emit("fatal", task=task["id"], note=short(exc.__cause__ or exc))
            sys.stdout.flush()
            os._exit(3)
        except Exception as exc:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            emit("error", task=task["id"], note=short(exc))
            if is_fatal(exc):
                emit("fatal", task=task["id"], note=short(exc))
                os._exit(3)
            with contextlib.suppress(Exception):
                gc.collect()
                if torch is not None:
                    torch.cuda.empty_cache()
        emit("done", task=task["id"])
        print(f"[worker {args.env}] done {task['id']}", flush=True)


if __name__ == "__main__":
    main()
