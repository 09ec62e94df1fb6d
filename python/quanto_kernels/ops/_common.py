"""What every op family shares: the stream handle, dtype codes, split-K workspaces and the M rule.

The dispatch rule of a GEMM family, written once here (docs/ops.md, "Dispatch"): a family with a
tensor-core kernel ("tc": weight decoded in registers, no dense copy) uses it on the GPUs that can run
it for M from the family's measured crossover up to the kernel's row limit; otherwise the fused GEMV
kernel serves M <= the library's limit for that family (``qk_*_max_gemv_m``, asked once), and larger M
dequantizes the weight into a dense temporary and lets torch (cuBLAS) multiply. ``force_path``
overrides the rule for tests.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from .._native import abi

PATHS = ("gemv", "tc", "gemm", "dequant")
_forced: Optional[str] = None

DTYPE_CODES = {torch.float16: abi.DTYPE_FLOAT16, torch.bfloat16: abi.DTYPE_BFLOAT16}

try:  # the raw handle without building a Stream object (a few microseconds per call at M = 1)
    _raw_stream = torch._C._cuda_getCurrentRawStream
except AttributeError:  # pragma: no cover - a torch without the private helper
    _raw_stream = None


def stream_on(device_index: int) -> int:
    """The current CUDA stream of a device, as the integer handle the C ABI takes."""
    if _raw_stream is not None:
        return _raw_stream(device_index)
    return torch.cuda.current_stream(device_index).cuda_stream


def stream(t: torch.Tensor) -> int:
    """The current CUDA stream of t's device."""
    return stream_on(t.device.index)


def workspace(t: torch.Tensor, nbytes: int) -> Optional[torch.Tensor]:
    """fp32 split-K partials (None when the plan needs none); the caching allocator keeps it cheap and stream-safe."""
    if nbytes <= 0:
        return None
    return torch.empty(nbytes // 4, dtype=torch.float32, device=t.device)


class WorkspaceSizes:
    """Split-K workspace bytes per product, asked of the library once per shape.

    ``query`` names the ABI function, ``params`` its keyword arguments in key order (the sizes, then the
    device). The library plans again at every launch and also reads test and benchmark overrides from
    the environment there (QK_*_SPLITS, QK_*_BLOCKS_PER_SM, ...), so a size cached before an override
    changed can be too small for the new plan. The library checks the size it is given and refuses a short one;
    ``launch_sized`` then asks again and retries once. The per-call cost is one dict lookup (reading
    the environment at every call cost more than the rest of the Python side of a launch).
    """

    MAX_ENTRIES = 4096
    _instances: "list[WorkspaceSizes]" = []

    def __init__(self, query: str, params: Tuple[str, ...]):
        self._query, self._params, self._sizes = query, params, {}
        WorkspaceSizes._instances.append(self)

    def __call__(self, *args, **kwargs) -> int:
        """The size for the sizes given positionally (in ``params`` order) or by name."""
        return self.lookup(args + tuple(kwargs[p] for p in self._params[len(args):]))

    def lookup(self, key: tuple) -> int:
        size = self._sizes.get(key)
        return self.refresh(key) if size is None else size

    def refresh(self, key: tuple) -> int:
        """Asks the library (again) and caches the answer."""
        size = int(getattr(abi, self._query)(**dict(zip(self._params, key))))
        if len(self._sizes) >= self.MAX_ENTRIES:
            self._sizes.clear()
        self._sizes[key] = size
        return size

    def cache_clear(self) -> None:
        self._sizes.clear()


def clear_workspace_sizes() -> None:
    """Forgets every cached workspace size (all families): after changing a plan override, the next launch
    then plans afresh instead of being refused once (tests that count launches start from here)."""
    for sizes in WorkspaceSizes._instances:
        sizes.cache_clear()


def launch_sized(sizes: WorkspaceSizes, key: tuple, t: torch.Tensor,
                 launch: Callable[[Optional[int], int], None]) -> None:
    """launch(workspace pointer or None, workspace bytes) with the workspace the plan for `key` needs,
    allocated on t's device; once more with a fresh size if the library refuses the cached one."""
    nbytes = sizes.lookup(key)
    ws = workspace(t, nbytes)
    try:
        launch(None if ws is None else ws.data_ptr(), nbytes)
    except ValueError:
        fresh = sizes.refresh(key)
        if fresh <= nbytes:
            raise
        ws = workspace(t, fresh)
        launch(ws.data_ptr(), fresh)


class CheckedWeights:
    """A family's weights that passed its weight checks (shapes, dtypes, device, density), by tensor identity,
    so a layer's later calls skip them: the linear entry points run once per layer call, also inside
    compiled graphs, where every microsecond of Python is host time per layer (measured on an H200: the
    int8 checks were a third of the Python side of a call).

    A hit needs the same two tensor objects (weak references: nothing is kept alive), each with the same data
    pointer, shape, dtype and density as when checked, so a weight replaced, moved, reshaped or re-pointed in
    place (``.data`` reassigned, ``.to()``, ``resize_``, ``set_``) is checked again.
    """

    MAX_ENTRIES = 4096

    def __init__(self):
        self._entries = {}

    @staticmethod
    def _state(t):
        return t.data_ptr(), t.shape, t.dtype, t.is_contiguous()

    def lookup(self, w, scales):
        """(N, K) if this weight was checked in its present state, else None."""
        e = self._entries.get(id(w))
        if (e is None or e[0]() is not w or e[1]() is not scales or e[2] != self._state(w)
                or e[3] != self._state(scales)):
            return None
        return e[4]

    def add(self, w, scales, nk) -> None:
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[id(w)] = (weakref.ref(w), weakref.ref(scales), self._state(w), self._state(scales), nk)

    def clear(self) -> None:
        self._entries.clear()


def data_ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def dense_aligned(t: torch.Tensor) -> torch.Tensor:
    """t itself when it is contiguous with a 16-byte aligned start (what the tensor-map kernels read), else a copy.

    Activations arrive as views (a slice of a fused projection, a transposed tensor); a copy made by
    torch costs one pass over them, far less than refusing the call.
    """
    if not t.is_contiguous():
        t = t.contiguous()
    if t.data_ptr() % 16:
        t = t.clone()
    return t


@contextlib.contextmanager
def force_path(path: Optional[str]) -> Iterator[None]:
    """Test-only: every GEMM family takes `path` (one of PATHS: "gemv", "tc" (medium-M tensor-core kernel),
    "gemm" (larger-M GEMM kernel), "dequant"; None: the normal rule) inside the block.

    Process-wide (all threads), not re-entrant across threads. Under "gemv", an M above the family's
    fused-kernel limit raises ValueError instead of reaching the kernel.
    """
    global _forced
    if path is not None and path not in PATHS:
        raise ValueError(f"path: must be one of {PATHS} or None, got {path!r}")
    previous, _forced = _forced, path
    try:
        yield
    finally:
        _forced = previous


def forced_path() -> Optional[str]:
    return _forced


_sm_counts = {}


def device_sm_count(device_index: Optional[int]) -> int:
    """Multiprocessors of a CUDA device (cached); 0 where there is none (CPU tensors)."""
    count = _sm_counts.get(device_index)
    if count is None:
        ok = device_index is not None and torch.cuda.is_available()
        count = torch.cuda.get_device_properties(device_index).multi_processor_count if ok else 0
        _sm_counts[device_index] = count
    return count


class TensorCoreKernel:
    """A family's tensor-core kernel: which devices run it, its row limit and where it is the fastest path.

    ``from_m``, ``to_m`` and ``min_weight`` bound the products it serves: M in [from_m, to_m] on weights of
    at least min_weight (N x K) elements; the region where it measured faster than the GEMV and dequantize
    paths on the GPUs that run it (benchmarks/results, docs/ops.md).

    ``workspace`` names its split-K workspace query (cached per shape: ``WorkspaceSizes``), whose keyword
    arguments are ``workspace_params``; ``max_m`` names the row-limit query (None: no limit). ``rule``
    (m, n, k, sm_count) -> bool, when given, replaces the min_weight test inside [from_m, to_m].
    """

    def __init__(self, available: str, max_m: Optional[str], workspace: str, from_m: int, to_m: int,
                 min_weight: int = 0, workspace_params: Tuple[str, ...] = ("m", "n", "k", "device"),
                 rule: Optional[Callable[[int, int, int, int], bool]] = None):
        self._available, self._max_m, self._workspace = available, max_m, workspace
        self.from_m, self.to_m, self.min_weight = from_m, to_m, min_weight
        self._rule = rule
        self._by_device = {}
        self.workspace_bytes = WorkspaceSizes(workspace, workspace_params)

    def serves(self, m: int, n: int, k: int, device_index: Optional[int] = None) -> bool:
        if not self.from_m <= m <= min(self.to_m, self.max_m):
            return False
        if self._rule is not None:
            return self._rule(m, n, k, device_sm_count(device_index))
        return n * k >= self.min_weight

    def available(self, device_index: int) -> bool:
        ok = self._by_device.get(device_index)
        if ok is None:
            ok = self._by_device[device_index] = bool(getattr(abi, self._available)(device=device_index))
        return ok

    @functools.cached_property
    def max_m(self) -> int:
        """Row limit the library reports (max_m names its query; None: no limit below 2^31)."""
        return (1 << 31) - 1 if self._max_m is None else int(getattr(abi, self._max_m)())


class GemmFamily:
    """The kernel limits, the cached workspace query and the M rule of one family of GEMM entry points."""

    def __init__(self, name: str, max_gemv_m: str, workspace_bytes: str, tc: Optional[TensorCoreKernel] = None,
                 gemv_size_params: Tuple[str, ...] = ("m", "n", "k", "device"),
                 gemm: Optional[TensorCoreKernel] = None):
        self.name = name
        self._max_gemv_m = max_gemv_m  # abi function names
        # Planned once per shape; the per-call path only looks the size up (WorkspaceSizes).
        self.workspace_bytes = WorkspaceSizes(workspace_bytes, gemv_size_params)
        # tc: the medium-M tensor-core kernel; gemm: the GEMM for larger M (both optional, rule-bounded).
        self.tc, self.gemm = tc, gemm

    @functools.cached_property
    def max_gemv_m(self) -> int:
        """Largest M the fused kernel of this family takes, as the loaded library reports it."""
        return int(getattr(abi, self._max_gemv_m)())

    def use_gemv(self, m: int) -> bool:
        """The GEMV-or-dequantize part of the rule (what runs where no tensor-core kernel does)."""
        if _forced is None or _forced in ("tc", "gemm"):
            return m <= self.max_gemv_m
        if _forced == "dequant":
            return False
        if m > self.max_gemv_m:
            raise ValueError(
                f"force_path('gemv'): M={m} rows exceed the {self.name} fused kernel's limit of "
                f"{self.max_gemv_m}; use M <= {self.max_gemv_m} or the dequant path"
            )
        return True

    def use_tc(self, m: int, device_index: int, n: int, k: int) -> bool:
        """True when the tensor-core kernel serves an M x N x K product on this device."""
        if _forced == "tc":
            if self.tc is None or not self.tc.available(device_index):
                raise ValueError(f"force_path('tc'): the {self.name} family has no tensor-core kernel for "
                                 f"cuda:{device_index} (needs an sm_90 GPU and a library built with sm_90a)")
            if m > self.tc.max_m:
                raise ValueError(f"force_path('tc'): M={m} rows exceed the {self.name} tensor-core kernel's "
                                 f"limit of {self.tc.max_m}")
            return True
        if _forced is not None or self.tc is None:
            return False
        return self.tc.serves(m, n, k) and self.tc.available(device_index)

    def use_gemm(self, m: int, device_index: int, n: int, k: int) -> bool:
        """True when the family's larger-M GEMM kernel serves an M x N x K product on this device."""
        if _forced == "gemm":
            if self.gemm is None or not self.gemm.available(device_index):
                raise ValueError(f"force_path('gemm'): the {self.name} family has no GEMM kernel for "
                                 f"cuda:{device_index} (needs an sm_90 GPU and a library built with sm_90a and "
                                 "CUTLASS)")
            return True
        if _forced is not None or self.gemm is None:
            return False
        return self.gemm.serves(m, n, k, device_index) and self.gemm.available(device_index)

    def __repr__(self) -> str:
        return f"GemmFamily({self.name!r})"


def gemv_or_dequant(family: GemmFamily, a: torch.Tensor, gemv: Optional[Callable[..., torch.Tensor]],
                    dequant: Callable[[], torch.Tensor], bias: Optional[torch.Tensor] = None,
                    tc: Optional[Tuple[int, int, Callable[..., torch.Tensor]]] = None,
                    gemv_bias_n: Optional[int] = None,
                    gemm: Optional[Tuple[int, int, Callable[..., torch.Tensor]]] = None) -> torch.Tensor:
    """a (M, K) times the family's (N, K) weight (+ bias): tensor-core kernel, GEMM kernel, fused GEMV or
    dequantize + matmul.

    ``gemv`` is None for a shape the fused GEMV does not take; gemv() is its call, or gemv(bias) when
    ``gemv_bias_n`` (N) says the kernel's epilogue adds a bias (with_bias decides which bias it gets).
    ``tc`` is (N, K, run) for a shape the tensor-core kernel takes, run(a, bias) being its call on a
    dense, aligned ``a``; ``gemm`` the same for the family's larger-M GEMM kernel, whose epilogue reads a
    16-byte aligned bias. A bias no kernel takes is added afterwards by torch.
    """
    # The GEMM kernel first: where a device has it, its rule overrides the tensor-core kernel's upper range.
    if gemm is not None and family.use_gemm(a.shape[0], a.device.index, gemm[0], gemm[1]):
        return with_bias(a, bias, gemm[0], lambda b: gemm[2](dense_aligned(a), b), align=16)
    if tc is not None and family.use_tc(a.shape[0], a.device.index, tc[0], tc[1]):
        return with_bias(a, bias, tc[0], lambda b: tc[2](dense_aligned(a), b))
    if gemv is not None and family.use_gemv(a.shape[0]):
        if gemv_bias_n is not None:
            return with_bias(a, bias, gemv_bias_n, gemv)
        out = gemv()
        return out if bias is None else out.add_(bias)
    return F.linear(a, dequant(), bias)


def with_bias(a: torch.Tensor, bias: Optional[torch.Tensor], n: int,
              run: Callable[[Optional[torch.Tensor]], torch.Tensor], align: int = 2) -> torch.Tensor:
    """run(bias) for a kernel whose epilogue adds a bias it can read: of a's dtype, on a's device, N dense
    values, `align`-byte aligned; any other bias (another dtype, a broadcast view) is added afterwards by
    torch (run(None), then add_), as on the paths without a bias epilogue."""
    fused = bias is None or (bias.dtype == a.dtype and bias.device == a.device and bias.is_contiguous()
                             and bias.numel() == n and bias.data_ptr() % align == 0)
    out = run(bias if fused else None)
    return out if fused else out.add_(bias)
