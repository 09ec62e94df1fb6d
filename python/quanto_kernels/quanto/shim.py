"""Makes optimum-quanto use our library instead of JIT-compiling its own CUDA extension.

Works whether quanto is imported before or after ``quanto_kernels``: if it is not imported yet, a
one-shot import hook patches it the moment ``optimum.quanto`` finishes importing.

Supported optimum-quanto versions: ``SUPPORTED_QUANTO_VERSIONS`` (0.2.7, and its git main, which
reports "0.2.7dev"): the internals below are verified to exist before anything is patched. Any other
version is left alone, with one warning.

What the patch does:
  1. replaces quanto's JIT loader with one that raises, so no compilation can ever start;
  2. where quanto did not register its ``quanto_cuda`` extension (Windows, or any non-Linux OS),
     imports quanto's CUDA op definitions itself, which registers the extension and compiles nothing;
  3. points the extension's module at our bindings (``ext._lib``), so quanto's ops run our kernels
     (its CPU extension, which only unpacks, is served in plain torch);
  4. replaces the Marlin FP8 linear's forward, which drops the bias in 0.2.7 (and passes a workspace
     torch.compile cannot trace); while the FP8 compute mode is on (quanto_kernels.fp8_compute), that
     forward runs fp8_compute_linear (bias fused) for the shapes and GPUs it serves;
  5. routes quanto's qint8 weight-only linear on CUDA (``WeightQBytesLinearFunction``) to our int8
     kernels, which read quanto's int8 data as stored (quanto itself rebuilds a dense weight per call),
     and serves quanto's ``quanto::qbytes_mm`` op on CUDA the same way (qbytes_mm.py: what graphs
     compiled by torch.compile call);
  6. registers fake impls for quanto's CUDA ops, so torch.compile can trace quantized layers;
  7. gives QLinear a short inference path for FP8 Marlin, AWQ int4 and qint8 weights (fast_linear):
     at small M quanto's Python dispatch costs more than our kernel;
  8. makes quanto's weight factory build CUDA qint4 weights with bf16 scales in the AWQ layout, served
     by our bf16 int4 kernels (awq_bf16), where quanto would pick torch's TinyGemm kernel.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import threading
import warnings

SUPPORTED_QUANTO_VERSIONS = ("0.2.7", "0.2.7dev")
ENV_DISABLE = "QUANTO_KERNELS_DISABLE"

_lock = threading.RLock()
_state = {"patched": False, "reason": "not attempted", "hook": None, "warned": False}


class JITDisabledError(RuntimeError):
    """Raised if anything reaches quanto's JIT compiler while quanto_kernels serves quanto."""


def _jit_forbidden(*args, **kwargs):
    name = kwargs.get("name", args[0] if args else "?")
    raise JITDisabledError(
        f"quanto-kernels: quanto tried to JIT-compile the '{name}' extension. quanto_kernels serves quanto's "
        "CUDA ops from its prebuilt library, so this should never happen; please report it. "
        f"Set {ENV_DISABLE}=1 to let quanto use its own extension."
    )


def status() -> dict:
    return {"patched": _state["patched"], "reason": _state["reason"]}


def _warn_once(message: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _quanto_modules():
    """quanto's internals we touch, or a reason string if they are not what we expect."""
    try:
        import optimum.quanto as quanto
        from optimum.quanto.library.extensions import extension as ext_mod
        from optimum.quanto.tensor.weights.marlin.fp8 import qbits as fp8_qbits
    except Exception as exc:  # noqa: BLE001 - any import failure means "leave quanto alone"
        return f"cannot import quanto's internals ({type(exc).__name__}: {exc})"
    version = getattr(quanto, "__version__", "?")
    if version not in SUPPORTED_QUANTO_VERSIONS:
        return f"optimum-quanto {version} is not a supported version ({', '.join(SUPPORTED_QUANTO_VERSIONS)})"
    needed = [(ext_mod, "load"), (ext_mod, "get_extension"), (ext_mod, "is_extension_available"),
              (fp8_qbits, "MarlinF8QBytesLinearFunction")]
    missing = [f"{m.__name__}.{a}" for m, a in needed if not hasattr(m, a)]
    if missing:
        return f"optimum-quanto {version} lacks {', '.join(missing)}"
    return ext_mod, fp8_qbits


def _op_when_traced(op, direct):
    """A call of `op` (a torch.ops dispatcher op) while torch.compile traces, which needs its fake impl, and of
    `direct`, the same checked function, eagerly: the dispatcher and its autograd kernel are host time per
    layer call (benchmarks/results/entry_host_time_h200_2026-12-02.txt)."""
    import torch

    def call(*args):
        return op(*args) if torch.compiler.is_compiling() else direct(*args)

    return call


def _fix_fp8_linear(fp8_qbits) -> None:
    """Our forward for quanto's Marlin FP8 linear.

    quanto 0.2.7's drops the bias, and passes the weight's `_workspace` tensor, which is not part of
    the weight subclass's flattened state, so torch.compile cannot trace it. Ours adds the bias and
    passes an empty workspace: our kernels use none (the binding only checks its dtype).
    With the FP8 compute mode on, the layers it serves take fp8_compute_linear instead; quanto's
    backward (dequantize + matmul) is unchanged either way.
    """
    import torch

    from ..ops import _fp8_compute
    from .fast_linear import fp8_compute_route

    fn_cls = fp8_qbits.MarlinF8QBytesLinearFunction
    if getattr(fn_cls.forward, "_quanto_kernels_bias_fix", False):
        return
    fp8_compute_linear = _op_when_traced(torch.ops.quanto_kernels.fp8_compute_linear, _fp8_compute.direct)

    def forward(ctx, input, other, bias=None):
        ctx.save_for_backward(input, other)
        if fp8_compute_route(input, other, bias):
            return fp8_compute_linear(input, other._data._data, other._scale, bias)
        n = other._scale.shape[1]
        x = input.reshape(-1, input.shape[-1])
        out = torch.ops.quanto.gemm_f16f8_marlin(
            x, b_q_weight=other._data._data, b_scales=other._scale, workspace=x.new_empty(0, dtype=torch.int32),
            num_bits=8, size_m=x.shape[0], size_n=n, size_k=x.shape[1],
        )
        out = out.reshape(tuple(input.shape[:-1]) + (n,))
        return out if bias is None else out + bias

    forward._quanto_kernels_bias_fix = True
    fn_cls.forward = staticmethod(forward)


def _route_int8_linear() -> None:
    """quanto's qint8 weight-only linear on CUDA runs our int8 kernels.

    quanto's own CUDA path (quanto::qbytes_mm) multiplies the whole int8 weight by its scales into a
    dense copy on every call. Ours reads the int8 data and scales as quanto stores them (docs/ops.md,
    "int8 weights"); every other case (activations quantized too, float8 data, CPU) keeps quanto's.
    """
    import torch

    try:
        from optimum.quanto.tensor.weights.qbytes import WeightQBytesLinearFunction
    except ImportError:  # a quanto without it: its own path stays
        return
    original = WeightQBytesLinearFunction.forward
    if getattr(original, "_quanto_kernels_int8", False):
        return
    from ..ops import _int8
    from .fast_linear import is_int8_weight, plain_tensor

    linear = _op_when_traced(torch.ops.quanto_kernels.int8_linear, _int8.direct_linear)

    def forward(ctx, input, other, bias=None):
        if (plain_tensor(input) and is_int8_weight(other)
                and other._data.is_cuda and input.is_cuda and input.dtype == other._scale.dtype
                and input.dtype in _int8.ACT_DTYPES and input.dim() >= 1):
            ctx.save_for_backward(input, other)
            # One op that takes any activation view and a bias it can fuse: nothing here reads strides or
            # data pointers, so torch.compile traces it without a graph break.
            n = other._data.shape[0]
            fused = (bias is not None and plain_tensor(bias)
                     and bias.dtype == input.dtype and bias.device == input.device and tuple(bias.shape) == (n,))
            out = linear(input, other._data, other._scale, bias if fused else None)
            return out if bias is None or fused else out + bias
        return original(ctx, input, other, bias)

    forward._quanto_kernels_int8 = True
    WeightQBytesLinearFunction.forward = staticmethod(forward)


def _serve_bf16_int4() -> None:
    """quanto's weight factory (``WeightQBitsTensor.create``) builds our bf16 AWQ class where it would
    build TinyGemm on CUDA; every other choice stays quanto's.

    The factory runs whenever a weight is quantized, frozen, moved between CUDA devices or re-optimized
    after loading, and is looked up on the class each time, so replacing the attribute covers every caller.
    """
    try:
        from optimum.quanto.tensor.packed import PackedTensor
        from optimum.quanto.tensor.weights.qbits import WeightQBitsTensor

        from .awq_bf16 import Bf16AWQWeightQBitsTensor, serves
    except ImportError:  # a quanto without these: TinyGemm stays
        return
    original = WeightQBitsTensor.create
    if getattr(original, "_quanto_kernels_bf16", False):
        return

    def create(qtype, axis, group_size, size, stride, data, scale, shift, requires_grad=False):
        if serves(qtype, axis, group_size, size, data, scale):
            if type(data) is PackedTensor:
                data = data.unpack()
            return Bf16AWQWeightQBitsTensor(qtype, axis, group_size, size, stride, data, scale, shift, requires_grad)
        return original(qtype, axis, group_size, size, stride, data, scale, shift, requires_grad)

    create._quanto_kernels_bf16 = True
    create.__wrapped__ = original
    WeightQBitsTensor.create = staticmethod(create)


def _add_fast_linear() -> None:
    """QLinear.forward tries _fast_linear first; quanto's own forward runs whenever it declines."""
    import torch

    try:
        from optimum.quanto.nn.qlinear import QLinear
        from optimum.quanto.tensor.weights.awq.qbits import AWQWeightQBitsTensor
        from optimum.quanto.tensor.weights.marlin.fp8.qbits import MarlinF8QBytesTensor
    except ImportError:  # a layout we do not know: quanto's own forward stays (still on our kernels)
        return

    from optimum.quanto.tensor.weights.qbytes import WeightQBytesTensor

    from .awq_bf16 import Bf16AWQWeightQBitsTensor
    from .fast_linear import awq_linear, fp8_linear, int8_linear

    original = QLinear.forward
    if getattr(original, "_quanto_kernels_fast", False):
        return
    fast = {MarlinF8QBytesTensor: fp8_linear, AWQWeightQBitsTensor: awq_linear, Bf16AWQWeightQBitsTensor: awq_linear,
            WeightQBytesTensor: int8_linear}

    def forward(self, input):
        # Under torch.compile quanto's full path is the one to trace (its autograd Function reaches our ops,
        # which have fake impls); the short path is for eager calls only.
        path = None if torch.compiler.is_compiling() else fast.get(type(self.weight))
        if path is not None and self.activation_qtype is None:
            out = path(input, self.weight, self.bias)
            if out is not None:
                return out
        return original(self, input)

    forward._quanto_kernels_fast = True
    forward.__wrapped__ = original
    QLinear.forward = forward


def patch_quanto() -> bool:
    """Patches an imported optimum.quanto; idempotent. Returns whether quanto now uses our kernels."""
    with _lock:
        if _state["patched"]:
            return True
        found = _quanto_modules()
        if isinstance(found, str):
            _state["reason"] = found
            _warn_once(f"quanto-kernels: leaving optimum-quanto alone: {found}")
            return False
        ext_mod, fp8_qbits = found
        from .bindings import QuantoCppBindings, QuantoCudaBindings

        ext_mod.load = _jit_forbidden
        if not ext_mod.is_extension_available("quanto_cuda"):
            importlib.import_module("optimum.quanto.library.extensions.cuda")
        ext_mod.get_extension("quanto_cuda")._lib = QuantoCudaBindings()
        # The loader is forbidden for every extension, so serve quanto's CPU one (unpack) as well.
        if ext_mod.is_extension_available("quanto_cpp"):
            ext_mod.get_extension("quanto_cpp")._lib = QuantoCppBindings()
        _fix_fp8_linear(fp8_qbits)
        _route_int8_linear()
        from . import qbytes_mm

        qbytes_mm.register()
        _serve_bf16_int4()
        _add_fast_linear()
        # quanto defines its ops without fake impls; ours let torch.compile trace quantized layers.
        from .fakes import register_quanto_fakes

        register_quanto_fakes()
        _state["patched"] = True
        _state["reason"] = "quanto's quanto_cuda extension is served by quanto_kernels"
        return True


class _QuantoImportHook(importlib.abc.MetaPathFinder):
    """Runs patch_quanto() right after `optimum.quanto` is first imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "optimum.quanto":
            return None
        # Let the normal finders locate it, then wrap its loader.
        sys.meta_path.remove(self)
        _state["hook"] = None
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            patch_quanto()

        loader.exec_module = exec_module
        return spec


def install() -> bool:
    """Entry point run by ``import quanto_kernels``."""
    with _lock:
        if os.environ.get(ENV_DISABLE, "").strip() not in ("", "0"):
            _state["reason"] = f"disabled by {ENV_DISABLE}"
            return False
        import torch

        if not torch.cuda.is_available() or not torch.version.cuda:
            _state["reason"] = "no CUDA GPU available to this torch build: quanto left alone"
            return False
        from .._native import NativeLibraryError, get_library

        try:
            get_library()
        except NativeLibraryError as exc:
            _state["reason"] = str(exc)
            _warn_once(f"{exc}\nquanto keeps its own behaviour.")
            return False
        if "optimum.quanto" in sys.modules:
            return patch_quanto()
        if _state["hook"] is None:
            _state["hook"] = _QuantoImportHook()
            sys.meta_path.insert(0, _state["hook"])
        _state["reason"] = "waiting for optimum.quanto to be imported"
        return False
