"""Environment report and self-check behind ``python -m quanto_kernels``."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

BINDINGS = ("unpack", "awq_v2_gemm_f16i4", "awq_v2_gemv_f16i4", "gptq_marlin_repack", "fp8_marlin_gemm",
            "marlin_gemm_f16i4")


def _line(key: str, value) -> None:
    print(f"{key:<26} {value}")


def _report_build_record(loaded):
    """Prints build_record.json, written by setup.py next to the libraries: every build in this installation."""
    from quanto_kernels._native import loader

    path = loader.PACKAGE_DIR / "build_record.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _line("build record", f"none ({type(exc).__name__}: {path})")
        return None
    _line("build record", f"version {record.get('version')}, git {record.get('git_revision')}")
    for lib in record.get("libraries", []):
        if not isinstance(lib, dict):
            continue
        mark = " (loaded)" if lib.get("file") == loaded else ""
        _line(f"  {lib.get('file')}", f"CUDA {lib.get('cuda_version')}, sm {lib.get('archs')} + PTX {lib.get('ptx')}, "
              f"{lib.get('cxx_runtime')}, CUDA runtime {lib.get('cuda_runtime')}{mark}")
    return record


def report() -> dict:
    import torch

    import quanto_kernels
    from quanto_kernels._native import NativeLibraryError, loader

    facts = {}
    _line("platform", f"{platform.system()} {platform.release()} ({platform.machine()})")
    _line("python", sys.version.split()[0])
    _line("torch", f"{torch.__version__} (CUDA {torch.version.cuda})")
    drv = loader.driver_cuda_version()
    _line("driver CUDA version", "none found" if drv is None else f"{drv // 1000}.{(drv % 1000) // 10}")
    facts["gpu"] = torch.cuda.is_available()
    if facts["gpu"]:
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            _line(f"GPU {i}", f"{torch.cuda.get_device_name(i)} (compute capability {cap[0]}.{cap[1]})")
    else:
        _line("GPU", "none visible to torch")
    loaded = None
    try:
        lib = loader.get_library()
        loaded = lib.path.name
        _line("library", lib.path)
        _line("build info", lib.abi.build_info())
        facts["library"] = True
    except NativeLibraryError as exc:
        _line("library", f"NOT LOADED: {exc}")
        facts["library"] = False
    facts["build_record"] = _report_build_record(loaded)
    try:
        import optimum.quanto as quanto

        _line("optimum-quanto", quanto.__version__)
        facts["quanto"] = True
    except ImportError:
        _line("optimum-quanto", "not installed")
        facts["quanto"] = False
    st = quanto_kernels.quanto_status()
    _line("quanto patched", f"{st['patched']} ({st['reason']})")
    facts["patched"] = st["patched"]
    if facts["quanto"]:
        from optimum.quanto.library.extensions import extension as ext_mod

        from quanto_kernels.quanto.bindings import QuantoCudaBindings

        served = ext_mod.is_extension_available("quanto_cuda") and isinstance(
            ext_mod.get_extension("quanto_cuda")._lib, QuantoCudaBindings)
        for name in BINDINGS:
            _line(f"  quanto_cuda.{name}", "native (quanto_kernels)" if served else "not served")
        facts["served"] = served
    report_formats()
    facts["formats"] = [f.name for f in served_formats()]
    facts["fp8_tensor_cores"] = report_tensor_cores(facts, "fp8_marlin", "qfloat8")
    facts["int8_tensor_cores"] = report_tensor_cores(facts, "int8", "qint8")
    facts["int8_gemm"] = report_int8_gemm(facts)
    facts["fp8_compute"] = report_fp8_compute(facts)
    return facts


def report_int8_gemm(facts) -> dict:
    """Whether each GPU runs qint8 products of larger M on the int8 GEMM kernel (sm_90a, CUTLASS)."""
    return _report_kernel(facts, "int8", "gemm", "qint8 GEMM kernel",
                          lambda k: f"yes, from M = {k.from_m} by the rule in ops/_int8.py (gemm_rule)",
                          "no (needs an sm_90 GPU and a library built with sm_90a and CUTLASS's headers; other "
                          "paths serve)")


def report_tensor_cores(facts, family: str, fmt: str) -> dict:
    """Whether each GPU runs the format's weight-only products of medium M on its tensor-core kernel."""
    gemm = "; rows the GEMM kernel below takes go there" if family == "int8" else ""
    return _report_kernel(facts, family, "tc", f"{fmt} tensor-core kernel",
                          lambda k: f"yes, for {k.from_m} <= M <= {k.to_m} on weights of >= {k.min_weight} "
                                    f"elements (N x K){gemm}",
                          "no (needs an sm_90 GPU and a library built with sm_90a; GEMV and dequantize paths)")


def _report_kernel(facts, family: str, attr: str, label: str, yes, no: str) -> dict:
    """One line per GPU: whether the family's kernel `attr` ("tc" or "gemm") runs there; {GPU index: bool}."""
    if not (facts.get("gpu") and facts.get("library")):
        return {}
    import torch

    from .ops import GEMM_FAMILIES

    kernel = getattr(GEMM_FAMILIES[family], attr)
    found = {}
    for i in range(torch.cuda.device_count()):
        try:
            ok = kernel.available(i)
        except Exception as exc:  # noqa: BLE001 - a library without the entry point: say so, go on
            _line(f"  {label} GPU {i}", f"unknown ({type(exc).__name__}: {exc})")
            continue
        found[str(i)] = ok
        _line(f"  {label} GPU {i}", yes(kernel) if ok else no)
    return found


def _fp8_compute_module():
    import importlib

    return importlib.import_module("quanto_kernels.fp8_compute")  # the package attribute is the context manager


def report_fp8_compute(facts) -> dict:
    """The FP8 compute mode: on/off, where that came from, and which kernel each GPU would run."""
    mode = _fp8_compute_module()
    info = {"enabled": mode.fp8_compute_enabled(), "source": mode.fp8_compute_source(), "kernels": {}}
    _line("fp8 compute", f"{'on' if info['enabled'] else 'off'} (source: {info['source']})")
    if facts.get("gpu") and facts.get("library"):
        import torch

        for i in range(torch.cuda.device_count()):
            try:
                name = mode.kernel_name(i)
            except Exception as exc:  # noqa: BLE001 - a library without the entry point: say so, go on
                name = f"unknown ({type(exc).__name__}: {exc})"
            info["kernels"][str(i)] = name
            note = " (no FP8 tensor cores: the mode does nothing here)" if name == "none" else ""
            _line(f"  fp8 compute kernel GPU {i}", name + note)
    return info


class Format:
    """One quanto weight format served by our kernels, as the self-check exercises it.

    ``weight_class`` is the class name quanto's frozen weight must have: one name for every dtype, or
    a dict dtype -> name where the dtype picks the class (qint4: quanto's AWQ class for fp16, ours for
    bf16).
    """

    def __init__(self, name, qtype, dtypes, weight_class, entry_points, how):
        self.name, self.qtype, self.dtypes = name, qtype, dtypes
        self.weight_class, self.entry_points, self.how = weight_class, entry_points, how

    def class_for(self, dtype) -> str:
        return self.weight_class[dtype] if isinstance(self.weight_class, dict) else self.weight_class


def served_formats():
    """The quanto formats whose linear layers run on our kernels (docs/ops.md, "When quanto routes to each op")."""
    import torch

    return [
        Format("qfloat8", "qfloat8", (torch.bfloat16, torch.float16), "MarlinF8QBytesTensor",
               ("fp8_marlin_gemv", "fp8_marlin_mm", "fp8_marlin_dequantize"),
               "weight-only, fp16/bf16 activations, via Marlin FP8"),
        Format("qint4", "qint4", (torch.bfloat16, torch.float16),
               {torch.float16: "AWQWeightQBitsTensor", torch.bfloat16: "Bf16AWQWeightQBitsTensor"},
               ("awq_int4_gemv", "awq_int4_dequantize"), "weight-only, fp16/bf16 activations, group 128, via AWQ"),
        Format("qint8", "qint8", (torch.bfloat16, torch.float16), "WeightQBytesTensor",
               ("int8_gemv", "int8_mm", "int8_gemm", "int8_dequantize"),
               "weight-only, fp16/bf16 activations, quanto's own int8 layout"),
    ]


def report_formats() -> None:
    _line("formats served", ", ".join(f.name for f in served_formats()))
    for f in served_formats():
        _line(f"  {f.name}", f.how)


def _recording_calls():
    """Wraps every C entry point of quanto_kernels._native.abi to count its calls; returns (counts, undo)."""
    from quanto_kernels._native import abi

    counts = {}
    saved = {}
    for fn in abi.FUNCTIONS.values():
        name = abi.public_name(fn)
        real = getattr(abi, name, None)
        if real is None:
            continue
        saved[name] = real

        def record(_real=real, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(**kwargs)

        setattr(abi, name, record)

    def undo():
        for name, real in saved.items():
            setattr(abi, name, real)

    return counts, undo


def self_check() -> bool:
    """Quantizes small layers in every served format and compares them with quanto's dequantize() + matmul;
    each layer must be quanto's expected weight class and must have run our kernels (C entry points counted).
    With the FP8 compute mode on and a GPU that has FP8 tensor cores, qfloat8 layers are checked in that
    mode too (fp8_compute_self_check)."""
    import torch

    torch.manual_seed(0)
    ok = True
    k, n = 512, 384
    mode = _fp8_compute_module()
    with mode.fp8_compute(False):  # these compare with the weight-only product; FP8 compute is checked below
        ok &= _self_check_formats(k, n)
    if mode.fp8_compute_enabled():
        device = torch.cuda.current_device()
        if mode.kernel_name(device) == "none":
            print(f"  fp8 compute self-check NOT RUN: GPU {device} has no FP8 tensor cores (the mode does nothing there)")
        else:
            ok &= fp8_compute_self_check(k, n)
    return ok


# Rows per layer: the fused small-M kernels (1, 16), the medium-M paths (77) and the larger-M ones (600: on
# Hopper the int8 GEMM kernel, elsewhere dequantize + matmul).
SELF_CHECK_ROWS = (1, 16, 77, 600)


def _self_check_formats(k, n) -> bool:
    import torch
    from optimum.quanto import freeze, qtypes, quantize

    ok = True
    for fmt in served_formats():
        fmt_ok = True
        for dtype in fmt.dtypes:
            layer = torch.nn.Linear(k, n, bias=True).to("cuda", dtype)
            model = torch.nn.Sequential(layer)
            quantize(model, weights=qtypes[fmt.qtype])
            freeze(model)
            weight = model[0].weight
            kind = type(weight).__name__
            for m in SELF_CHECK_ROWS:
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                counts, undo = _recording_calls()
                try:
                    with torch.no_grad():
                        y = model(x)
                        torch.cuda.synchronize()
                finally:
                    undo()
                ran = sorted(name for name in counts if name in fmt.entry_points)
                with torch.no_grad():
                    y = y.double()
                    ref = x.double() @ weight.dequantize().double().t() + model[0].bias.double()
                err = ((y - ref).norm() / ref.norm()).item()
                good = kind == fmt.class_for(dtype) and bool(ran) and err < 1e-2 and torch.isfinite(y).all().item()
                fmt_ok &= good
                print(f"  self-check {fmt.name:>8} {str(dtype):<15} M={m:<3} {kind:<24} kernels {','.join(ran) or 'NONE':<22} "
                      f"rel.err {err:.2e} {'ok' if good else 'FAIL'}")
        print(f"  format {fmt.name:>8}: {'ok' if fmt_ok else 'FAIL'} ({fmt.how})")
        ok &= fmt_ok
    return ok


# FP8 compute quantizes each activation row to e4m3 (3 mantissa bits): against the weight-only product it
# is off by about 3 % (that is its cost, printed). Against the W8A8 math itself only the output rounding
# and the fp32 accumulation remain, plus here the rounding of dequantize()'s weight to the activation
# dtype (the reference uses it instead of the exact codes): well below 1 %.
FP8_COMPUTE_TOLERANCE = 1e-2
FP8_COMPUTE_ENTRY_POINTS = ("fp8_act_quant", "fp8_compute_gemm")


def _w8a8_reference(x, weight_dequantized, bias):
    """fp64 W8A8 product: x quantized per row (scale max|x| / 448, e4m3 round-to-nearest-even, saturated),
    times the dequantized weight, plus the bias."""
    import torch

    xf = x.float()
    amax = xf.abs().amax(dim=1).clamp_min(1e-12)
    e4m3_max = torch.full_like(amax, 448.0)  # divide tensor by tensor: IEEE division, as the kernel does
    codes = (xf * (e4m3_max / amax)[:, None]).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    xs = (amax / e4m3_max).double()
    return (codes.double() * xs[:, None]) @ weight_dequantized.double().t() + bias.double()


def fp8_compute_self_check(k, n) -> bool:
    """qfloat8 layers with the FP8 compute mode on: M up to the fused GEMV limit must run the weight-only
    GEMV, larger M our two FP8 entry points; each result against its fp64 reference."""
    import torch
    from optimum.quanto import freeze, qfloat8, quantize

    from quanto_kernels.ops import GEMM_FAMILIES

    mode = _fp8_compute_module()
    limit = GEMM_FAMILIES["fp8_marlin"].max_gemv_m
    kernel = mode.kernel_name(torch.cuda.current_device())
    ok = True
    for dtype in (torch.bfloat16, torch.float16):
        model = torch.nn.Sequential(torch.nn.Linear(k, n, bias=True).to("cuda", dtype))
        quantize(model, weights=qfloat8)
        freeze(model)
        weight, bias = model[0].weight, model[0].bias
        kind = type(weight).__name__
        for m in (1, 77, 300):
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            counts, undo = _recording_calls()
            try:
                with torch.no_grad(), mode.fp8_compute(True):
                    y = model(x)
                    torch.cuda.synchronize()
            finally:
                undo()
            want = ("fp8_marlin_gemv",) if m <= limit else FP8_COMPUTE_ENTRY_POINTS
            ran = tuple(name for name in want if counts.get(name))
            stray = sorted(name for name in ("fp8_marlin_gemv", "fp8_marlin_mm", "fp8_marlin_dequantize") + FP8_COMPUTE_ENTRY_POINTS
                           if counts.get(name) and name not in want)
            with torch.no_grad():
                deq = weight.dequantize()
                weight_only = x.double() @ deq.double().t() + bias.double()
                ref = weight_only if m <= limit else _w8a8_reference(x, deq, bias)
                y64 = y.double()
                err = ((y64 - ref).norm() / ref.norm()).item()
                cost = ((y64 - weight_only).norm() / weight_only.norm()).item()
            good = (kind == "MarlinF8QBytesTensor" and ran == want and not stray and err < FP8_COMPUTE_TOLERANCE
                    and torch.isfinite(y).all().item())
            ok &= good
            print(f"  self-check fp8-compute {str(dtype):<15} M={m:<3} kernel {kernel if m > limit else 'gemv':<8} "
                  f"ran {','.join(ran + tuple(stray)) or 'NONE':<30} rel.err {err:.2e} "
                  f"(vs weight-only {cost:.2e}) {'ok' if good else 'FAIL'}")
    print(f"  fp8 compute: {'ok' if ok else 'FAIL'} (qfloat8 layers, activations quantized per row to e4m3, "
          f"{kernel} kernel; M <= {limit} stays on the weight-only GEMV)")
    return ok


INSTALL_QUANTO = 'pip install "quanto-kernels[quanto]" (from a checkout: pip install ".[quanto]")'


def self_check_plan(facts, no_self_check: bool):
    """(run it?, reason it does not run, whether not running it is a fault)."""
    if no_self_check:
        return False, "--no-self-check given", False
    if not facts.get("library"):
        return False, "the native library did not load (see 'library' above)", True
    if not facts.get("gpu"):
        return False, ("no CUDA GPU visible to torch (the library loads; the kernels need a GPU of compute "
                       "capability >= 8.0)"), False
    if not facts.get("quanto"):
        return False, f"optimum-quanto is not installed; install it with: {INSTALL_QUANTO}", False
    if not facts.get("patched"):
        return False, "quanto is not patched (see 'quanto patched' above)", True
    return True, "", False


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m quanto_kernels", description=__doc__)
    parser.add_argument("--no-self-check", action="store_true", help="only print the environment report")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON at the end")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    facts = report()
    run, reason, fault = self_check_plan(facts, args.no_self_check)
    status = 1 if fault or not facts.get("library") else 0
    if run:
        print("self-check per format (quanto layers on our kernels vs quanto's dequantize() + matmul):")
        facts["self_check"] = self_check()
        status = 0 if facts["self_check"] else 1
    else:
        print(f"self-check NOT RUN: {reason}")
        facts["self_check"] = None
        facts["self_check_skipped"] = reason
    facts["seconds"] = round(time.perf_counter() - start, 3)
    if args.json:
        print(json.dumps(facts))
    if status != 0:
        print("RESULT: problems found")
    elif run:
        print("RESULT: ok")
    else:
        print(f"RESULT: ok (self-check skipped: {reason})")
    return status
