"""The opt-in FP8 compute mode: quanto's qfloat8 linear layers on FP8 tensor cores (W8A8).

Off by default. When on, every quanto linear layer with a qfloat8 weight in the Marlin layout (what
quanto builds for qfloat8 on CUDA) runs ``torch.ops.quanto_kernels.fp8_compute_linear``: its
activations are quantized per row to e4m3 and multiplied with the FP8 weight on FP8 tensor cores,
instead of being multiplied in fp16/bf16 with the weight decoded. This is faster at large M and costs
accuracy (about 2-3 % relative error for Gaussian activations; docs/numerics.md, "FP8 compute").

Three ways to turn it on, all process-wide:

    quanto_kernels.set_fp8_compute(True)           # until set_fp8_compute(False)
    with quanto_kernels.fp8_compute():             # inside the block; the previous state after it
        ...
    QUANTO_KERNELS_FP8_COMPUTE=1 python app.py     # read once, when quanto_kernels is imported

The state is one flag for the whole process, like torch's backend flags (``torch.backends.cuda.
matmul.allow_tf32``): every thread sees it, and a ``fp8_compute()`` block in one thread changes it for
all of them. Set it once before running a model rather than toggling it from several threads.

Under ``torch.compile`` the flag is read twice: while tracing (the compiled code is guarded on it, so
toggling the mode recompiles rather than running a stale choice) and when quanto's Marlin FP8 op runs
(compiled graphs call that op as an opaque step, and our implementation of it follows the flag).

On a GPU without FP8 tensor cores (compute capability below 8.9) the mode does nothing for that GPU:
its layers keep the weight-only path, and one warning per device says so. Layers whose shapes the
FP8 product does not take (K not a multiple of 32) keep the weight-only path silently.

The package re-exports ``set_fp8_compute``, ``fp8_compute_enabled`` and ``fp8_compute`` (the context
manager), so ``quanto_kernels.fp8_compute`` is the context manager, not this module; code that needs
the module itself imports it as ``importlib.import_module("quanto_kernels.fp8_compute")``.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Dict, Optional

import torch

from ._native import abi

ENV_VAR = "QUANTO_KERNELS_FP8_COMPUTE"
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("", "0", "false", "off", "no")

# The flag is a plain module global on purpose: torch.compile guards on the value of a global it
# reads, so a compiled model notices a toggle. _source says where the current value came from.
_enabled = False
_source = "default"
_lock = threading.Lock()
_warned_devices: Dict[int, bool] = {}


def _parse_environment(value: Optional[str]):
    """(enabled, source, warning or None) for the environment variable's value."""
    if value is None:
        return False, "default", None
    text = value.strip().lower()
    if text in _TRUE:
        return True, f"environment {ENV_VAR}={value}", None
    if text in _FALSE:
        return False, f"environment {ENV_VAR}={value}", None
    message = (f"quanto-kernels: {ENV_VAR}={value!r} is not a valid value (use 1 or 0; also accepted: "
               f"{', '.join(_TRUE[1:])} / {', '.join(_FALSE[2:])}); FP8 compute stays off")
    return False, f"environment {ENV_VAR}={value!r} (invalid: off)", message


def _load_environment() -> None:
    """Applies the environment variable (called once at import; tests call it again)."""
    global _enabled, _source
    enabled, source, warning = _parse_environment(os.environ.get(ENV_VAR))
    with _lock:
        _enabled, _source = enabled, source
    if warning is not None:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)


def _require_bool(enabled, name: str = "enabled") -> bool:
    if not isinstance(enabled, bool):
        raise TypeError(f"{name}: expected True or False, got {type(enabled).__name__}")
    return enabled


def _set(enabled: bool, source: str) -> None:
    global _enabled, _source
    with _lock:
        _enabled, _source = enabled, source


def set_fp8_compute(enabled: bool) -> None:
    """Turns FP8 tensor-core compute for qfloat8 layers on or off, for the whole process."""
    _set(_require_bool(enabled), "set_fp8_compute()")


def fp8_compute_enabled() -> bool:
    """Whether the FP8 compute mode is on (whatever the GPU; see ``active_on`` for one device)."""
    return _enabled


def fp8_compute_source() -> str:
    """Where the current state came from: "default", "environment QUANTO_KERNELS_FP8_COMPUTE=...",
    "set_fp8_compute()" or "fp8_compute()"."""
    return _source


class fp8_compute:  # noqa: N801 - used like a function: ``with fp8_compute():``
    """Context manager: the FP8 compute mode is `enabled` inside the block, as it was before after it.

    Process-wide, not per thread (see the module docstring). Blocks nest; each restores what it found.
    The argument is checked when the manager is created, so ``fp8_compute(model)`` fails at once.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = _require_bool(enabled)
        self._saved = []

    def __enter__(self):
        with _lock:
            self._saved.append((_enabled, _source))
        _set(self.enabled, "fp8_compute()")
        return self

    def __exit__(self, *exc_info):
        enabled, source = self._saved.pop()
        _set(enabled, source)
        return False


# ------------------------------------------------------------------------------ per device

KERNEL_NAMES = {abi.FP8_COMPUTE_NONE: "none", abi.FP8_COMPUTE_MMA: "mma.sync", abi.FP8_COMPUTE_WGMMA: "wgmma"}
# device index -> whether it has FP8 tensor cores. Only "none" vs "some kernel" is kept: which kernel
# serves a Hopper GPU can change with QK_FP8_COMPUTE_KERNEL, which the library reads at every call.
_fp8_cores: Dict[int, bool] = {}


def _kernel_code(index: int) -> int:
    return abi.fp8_compute_kernel(device=index)


def kernel_name(index: int) -> str:
    """Which FP8 kernel the library uses on CUDA device `index` now: "none", "mma.sync" or "wgmma"."""
    code = _kernel_code(index)
    return KERNEL_NAMES.get(code, f"unknown ({code})")


def device_has_fp8_cores(index: int) -> bool:
    """Whether CUDA device `index` has FP8 tensor cores, as the library sees it (asked once per device)."""
    known = _fp8_cores.get(index)
    if known is None:
        known = _kernel_code(index) != abi.FP8_COMPUTE_NONE
        _fp8_cores[index] = known
    return known


@torch.compiler.assume_constant_result
def _device_supported(index: int) -> bool:
    """device_has_fp8_cores, plus one warning per device the mode cannot serve.

    Marked constant for torch.compile: the library query (ctypes) cannot be traced, and a device's
    hardware does not change, so the compiler runs this once while tracing and keeps the answer.
    (Reading the cache dict in traced code instead would guard on its contents, which this very call
    changes on a device's first lookup.)
    """
    supported = device_has_fp8_cores(index)
    if not supported and not _warned_devices.get(index):
        _warned_devices[index] = True
        major, minor = torch.cuda.get_device_capability(index)
        warnings.warn(
            f"quanto-kernels: FP8 compute is on, but cuda:{index} (compute capability {major}.{minor}) has no FP8 "
            "tensor cores (8.9 or newer needed); its qfloat8 layers keep the weight-only path",
            RuntimeWarning, stacklevel=3,
        )
    return supported


def active_on(device: torch.device) -> bool:
    """Whether qfloat8 layers on `device` take the FP8 product now: the mode is on and the GPU can.

    Written for torch.compile as well as eager calls: the compiler guards on the global flag and takes
    the device's answer as a constant; eagerly, only a device's first lookup goes to the library.
    """
    if not _enabled or device.type != "cuda":
        return False
    return _device_supported(0 if device.index is None else device.index)


_load_environment()
