"""quanto's ``quanto::qbytes_mm`` op served on CUDA by our int8 kernels (quanto_kernels.quanto.qbytes_mm).

CPU (runs everywhere): which calls the route takes (dtypes and shapes only), that it hands them to
``int8_linear`` unchanged, that every other call gets quanto's own CUDA behaviour (checked against
quanto's helper functions on CPU tensors), and, in a child interpreter, that ``register()`` installs a CUDA
kernel for the op once. GPU: after the shim patched quanto, ``torch.ops.quanto.qbytes_mm`` on CUDA runs our
int8 entry points and matches the fp64 product; int8 activations keep quanto's path.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import support as sp

pytest.importorskip("optimum.quanto")

bf16, f16 = torch.bfloat16, torch.float16


def _args(m=5, n=24, k=32, act=bf16, scale=None, w_dtype=torch.int8, scale_shape=None):
    g = sp.generator("qbytes-route", m, n, k, str(act), str(w_dtype), device="cpu")
    a = torch.randn(m, k, generator=g).to(act) if act.is_floating_point else torch.randint(
        -128, 128, (m, k), generator=g, dtype=torch.int16).to(act)
    w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int16).to(w_dtype)
    s = (0.5 + torch.rand(*(scale_shape or (n, 1)), generator=g)).to(scale or (act if act.is_floating_point else bf16))
    return a, w, s


def test_route_takes_quantos_weight_only_int8_layout_only():
    from quanto_kernels.quanto.qbytes_mm import takes

    assert takes(*_args()) and takes(*_args(act=f16)) and takes(*_args(scale_shape=(24,)))
    a, w, s = _args()
    assert takes(a.reshape(1, 5, 32), w, s)
    assert not takes(*_args(act=torch.int8))  # quanto's activation-quantized layers
    assert not takes(*_args(act=torch.float32, scale=torch.float32))
    assert not takes(*_args(scale=f16))  # scales in another dtype than the activations
    assert not takes(*_args(scale_shape=(1, 24)))  # not one scale per output channel
    assert not takes(a[:, :16], w, s)  # K mismatch: quanto's own error path
    assert not takes(a, w.to(torch.float8_e4m3fn), s)


def test_served_calls_reach_int8_linear_unchanged(monkeypatch):
    from quanto_kernels.ops import _int8
    from quanto_kernels.quanto import qbytes_mm as route

    seen = []
    monkeypatch.setattr(_int8, "direct_linear", lambda *args: seen.append(args) or "ours")
    a, w, s = _args()
    assert route.qbytes_mm_cuda(a, w, s) == "ours"
    assert len(seen) == 1 and all(x is y for x, y in zip(seen[0], (a, w, s)))


@pytest.mark.parametrize("m", [4, 24])
def test_other_calls_get_quantos_cuda_behaviour(m):
    from optimum.quanto.library import qbytes_mm as q

    from quanto_kernels.quanto import qbytes_mm as route

    a, w, s = _args(m=m, act=torch.int8)  # int8 x int8: torch's int8 matmul from 17 aligned rows on
    want = q.qbytes_int_mm(a, w, s) if m > 16 else q.qbytes_mm(a, w, s)
    assert torch.equal(route.qbytes_mm_cuda(a, w, s), want)
    a, w, s = _args(m=m, act=torch.float32, scale=torch.float32)
    assert torch.equal(route.qbytes_mm_cuda(a, w, s), q.qbytes_mm(a, w, s))


CHILD = r"""
import json, sys, torch
import optimum.quanto  # noqa: F401  (defines quanto::qbytes_mm and registers its CUDA kernel from Python)
from quanto_kernels.quanto import qbytes_mm as route  # before the stand-ins: importing registers our fakes
MODE = sys.argv[1]
real_impl = torch.library.Library.impl
if MODE == "refuse-by-default":  # torch 2.11's behaviour: allow_override exists, defaults to False
    def impl(self, op_name, fn, dispatch_key="", *, with_keyset=False, allow_override=False):
        return real_impl(self, op_name, fn, dispatch_key, with_keyset=with_keyset, allow_override=allow_override)
    torch.library.Library.impl = impl
elif MODE == "no-override-flag":  # older torch: no flag, a second Python registration of a key is refused
    def impl(self, op_name, fn, dispatch_key="", *, with_keyset=False):
        if f"{self.ns}/{op_name}/{dispatch_key}" in torch.library._impls:
            raise RuntimeError("already a kernel registered from python")
        return real_impl(self, op_name, fn, dispatch_key, with_keyset=with_keyset)
    torch.library.Library.impl = impl
elif MODE == "refuses":  # a torch that refuses whatever we do: import must still work, quanto's kernel stays
    def impl(self, op_name, fn, dispatch_key="", **kwargs):
        if dispatch_key == "CUDA":
            raise RuntimeError("refused")
        return real_impl(self, op_name, fn, dispatch_key, **kwargs)
    torch.library.Library.impl = impl
assert "quanto/qbytes_mm/CUDA" in torch.library._impls  # quanto's own Python registration
had = torch._C._dispatch_has_kernel_for_dispatch_key("quanto::qbytes_mm", "CUDA")
facts = {"had_cuda_kernel": had, "first": route.register(), "second": route.register(),
         "libraries": len(route._library),
         "has_cuda_kernel": torch._C._dispatch_has_kernel_for_dispatch_key("quanto::qbytes_mm", "CUDA"),
         # the dispatcher's active CUDA entry names the file that registered it
         "active_cuda_kernel_is_ours": [ln for ln in torch._C._dispatch_dump("quanto::qbytes_mm").splitlines()
                                        if ln.startswith("CUDA:")][0].replace("\\", "/").count(
                                            "quanto_kernels/quanto/qbytes_mm.py") == 1}
print("FACTS" + json.dumps(facts))
"""


@pytest.mark.parametrize("mode", ["as-installed", "refuse-by-default", "no-override-flag", "refuses"])
def test_register_installs_one_cuda_kernel(subprocess_env, mode):
    """Replaces quanto's Python-registered CUDA kernel under each torch behaviour for a second registration;
    where torch refuses outright, register() says so (False, a warning) and quanto's kernel stays."""
    subprocess_env["QUANTO_KERNELS_DISABLE"] = "1"  # the shim would register it itself on a GPU machine
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], env=subprocess_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("FACTS")]
    assert line, proc.stdout[-2000:]
    facts = json.loads(line[0][5:])
    ours = mode != "refuses"
    assert facts == {"had_cuda_kernel": True, "first": ours, "second": ours, "libraries": int(ours),
                     "has_cuda_kernel": True, "active_cuda_kernel_is_ours": ours}, facts
    assert ours or "keeps quanto's CUDA kernel (refused)" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.gpu
@sp.requires_gpu
@pytest.mark.parametrize("dtype", [f16, bf16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("m", [1, 40, 300])
def test_qbytes_mm_on_cuda_runs_our_int8_kernels(quanto_patched, native_calls, m, dtype):
    n, k = 136, 512
    g = sp.generator("qbytes-route-gpu", m, str(dtype))
    w, s = sp.random_int8_weight(n, k, dtype, g)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=dtype)
    native_calls.clear()
    out = torch.ops.quanto.qbytes_mm(x, w, s)
    assert native_calls.names and all(c.startswith("int8_") for c in native_calls.names), native_calls.names
    assert out.shape == (m, n) and out.dtype == dtype
    sp.assert_gemm_close(out, sp.matmul_reference(x, sp.int8_dequant_reference(w, s)), dtype,
                         f"quanto::qbytes_mm M={m}")
    xi = torch.randint(-128, 128, (m, k), generator=g, device="cuda", dtype=torch.int16).to(torch.int8)
    native_calls.clear()
    torch.ops.quanto.qbytes_mm(xi, w, s)
    assert native_calls.names == [], f"int8 activations must keep quanto's path: {native_calls.names}"


def test_plain_tensor_check_holds_while_tracing_and_excludes_quanto_tensors():
    """fast_linear.plain_tensor (the shim's 'plain activation' test): true for plain tensors and parameters,
    eagerly and inside a compiled function; false for quanto's tensor classes."""
    from optimum.quanto import freeze, qint8, quantize

    from quanto_kernels.quanto.fast_linear import plain_tensor

    def f(x):
        y = x * 2
        return y + (1 if plain_tensor(y) else 0) + (10 if plain_tensor(x) else 0)

    x = torch.tensor([-3.0, 0.5, 7.0])  # exact in float32: (2x + 1) + 10 == 2x + 11 bit for bit
    assert torch.equal(f(x), x * 2 + 11)
    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, backend="eager", fullgraph=True)(x), x * 2 + 11)
    torch._dynamo.reset()
    lin = torch.nn.Sequential(torch.nn.Linear(32, 16)).to(bf16)
    assert plain_tensor(lin[0].weight) and plain_tensor(lin[0].bias)
    quantize(lin, weights=qint8)
    freeze(lin)
    assert not plain_tensor(lin[0].weight)
