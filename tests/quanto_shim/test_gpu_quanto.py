"""GPU tests of quanto_kernels serving optimum-quanto 0.2.7 (and diffusers through quanto).

The shim patches process-global state (quanto's extension registry, its JIT loader, one autograd
Function), so every test runs its scenario in a fresh interpreter (``sys.executable -c``) and checks
the JSON that the child prints on a line starting with ``QK_RESULT``. Each child also records
quanto's JIT build directory (``optimum/quanto/library/extensions/cuda/build``) before and after, so
a JIT compilation that was attempted, even one that failed, is noticed; the C++ extension's
directory (``.../extensions/cpp/build``, quanto's CPU unpack) is watched as well, and the children
never call quanto ops on CPU tensors.

Covered:
  * both import orders (quanto_kernels first, optimum.quanto first): nn.Linear quantized with
    qfloat8 (fp16, bf16: MarlinF8QBytesTensor), qint4 (fp16: AWQWeightQBitsTensor; bf16: the shim's
    Bf16AWQWeightQBitsTensor), and qint4/qint2
    weights that stay generic (WeightQBitsTensor, decoded through quanto::unpack); outputs against
    x @ W.dequantize().T + bias (the bias must be applied) and against the float layer;
  * QUANTO_KERNELS_DISABLE=1: quanto is left alone and nothing is compiled;
  * diffusers: a tiny FluxTransformer2DModel saved, reloaded with QuantoConfig(weights_dtype="float8")
    onto the GPU two ways, every Linear served by the Marlin FP8 path, against its bf16 twin.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import support as sp

pytestmark = [pytest.mark.gpu, sp.requires_gpu]

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "QK_RESULT "
CHILD_TIMEOUT_S = 420


def _package_parent() -> str:
    """The sys.path entry that holds quanto_kernels: the installed one if any, else the source tree."""
    spec = importlib.util.find_spec("quanto_kernels")
    if spec is not None and spec.origin:
        return str(Path(spec.origin).resolve().parent.parent)
    return str(REPO / "python")


def _child_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("QUANTO_KERNELS_DISABLE", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([_package_parent()] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def private_quanto_env(tmp_dir: Path, plain: bool = False, **extra) -> dict:
    """Environment of a child that imports its own copy of optimum.quanto, made under `tmp_dir`; with
    `plain`, quanto_kernels is disabled there (QUANTO_KERNELS_DISABLE=1). Wherever quanto_kernels does not
    serve quanto (plain quanto, or quanto on the CPU), quanto compiles its C++ (CPU unpack) and CUDA
    extensions into its package directory on first use; with the copy first on the path that build lands
    in the test's temporary directory and the installed package stays untouched. (`optimum` is a
    namespace package, so the copy's `optimum/quanto` is found before the installed one.)"""
    spec = importlib.util.find_spec("optimum.quanto")
    root = Path(tmp_dir) / "private-quanto"
    dst = root / "optimum" / "quanto"
    if not dst.exists():
        shutil.copytree(Path(spec.submodule_search_locations[0]), dst,
                        ignore=shutil.ignore_patterns("build", "__pycache__"))
    env = _child_env(**({"QUANTO_KERNELS_DISABLE": "1"} if plain else {}), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
    return env


def run_child(script: str, args: dict, env: dict, timeout: int = CHILD_TIMEOUT_S) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, json.dumps(args)],
        env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"child exited with {proc.returncode} and {'no' if not lines else 'a'} result line\n"
            f"--- stdout (tail) ---\n{proc.stdout[-4000:]}\n--- stderr (tail) ---\n{proc.stderr[-8000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# Shared head of every child script: JIT-directory snapshot, result emission, small helpers.
PRELUDE = r'''
import importlib.util, json, os, sys
ARGS = json.loads(sys.argv[1])
_spec = importlib.util.find_spec("optimum.quanto")
# quanto's JIT build directories: its CUDA extension and its C++ (CPU unpack) extension.
BUILD_DIRS = [os.path.join(_spec.submodule_search_locations[0], "library", "extensions", sub, "build")
              for sub in ("cuda", "cpp")]

def _snapshot():
    return [[os.path.getmtime(d), sorted(os.listdir(d))] if os.path.isdir(d) else None for d in BUILD_DIRS]

JIT_BEFORE = _snapshot()
RESULT = {}

def emit():
    RESULT["jit_before"] = JIT_BEFORE
    RESULT["jit_after"] = _snapshot()
    print("QK_RESULT " + json.dumps(RESULT), flush=True)

def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())

def poison():
    import torch
    torch.cuda.empty_cache()
    block = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    block.fill_(0xFF)
    del block

def shim_facts():
    import quanto_kernels
    from quanto_kernels.quanto import shim as _shim
    from optimum.quanto.library.extensions import extension as ext_mod
    st = quanto_kernels.quanto_status()
    lib = ext_mod.get_extension("quanto_cuda")._lib if ext_mod.is_extension_available("quanto_cuda") else None
    return {"patched": st["patched"], "reason": st["reason"],
            "load_is_forbidden": ext_mod.load is _shim._jit_forbidden,
            "lib": None if lib is None else type(lib).__name__}
'''


def _assert_no_jit(res: dict) -> None:
    assert res["jit_before"] == res["jit_after"], (
        f"quanto's JIT build directory changed during the run: {res['jit_before']} -> {res['jit_after']}"
    )


def _assert_served(facts: dict) -> None:
    assert facts["patched"], f"quanto is not served by quanto_kernels: {facts['reason']}"
    assert facts["load_is_forbidden"], "quanto's JIT loader was not replaced"
    assert facts["lib"] == "QuantoCudaBindings", f"quanto_cuda's module is {facts['lib']}"


# ------------------------------------------------------------------------- nn.Linear, both orders

LINEAR_SCRIPT = r'''
import torch
if ARGS["order"] == "kernels_first":
    import quanto_kernels
    import optimum.quanto
else:
    import optimum.quanto
    import quanto_kernels
from optimum.quanto import freeze, qtypes, quantize

RESULT["shim"] = shim_facts()
cases = []
for c in ARGS["cases"]:
    dtype = getattr(torch, c["dtype"])
    k, n = c["k"], c["n"]
    g = torch.Generator(device="cuda")
    g.manual_seed(c["seed"])
    lin = torch.nn.Linear(k, n, bias=True, device="cuda", dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(n, k, generator=g, device="cuda") * 2 - 1) * k ** -0.5)
        lin.bias.copy_(0.5 * torch.randn(n, generator=g, device="cuda"))
    w_float = lin.weight.detach().clone()
    bias = lin.bias.detach().clone()
    model = torch.nn.Sequential(lin)
    quantize(model, weights=qtypes[c["qtype"]])
    freeze(model)
    w = model[0].weight
    out = {"name": c["name"], "type": type(w).__name__, "inputs": []}
    tol = c["tol"]
    for lead in c["leads"]:
        x = torch.randn(*lead, k, generator=g, device="cuda", dtype=dtype)
        with torch.no_grad():
            poison()
            y = model(x)
            deq = w.dequantize()
        prod = x.double() @ deq.double().t()          # the layer's own dequantized weight, no bias
        err = (y.double() - bias.double()) - prod     # bias subtracted: error relative to the product
        rms = prod.pow(2).mean().sqrt()
        excess = err.abs() - (tol["atol"] * rms + tol["rtol"] * prod.abs())
        rows = y.numel() // n
        out["inputs"].append({
            "lead": list(lead), "shape": list(y.shape), "dtype": str(y.dtype).replace("torch.", ""),
            "finite": bool(torch.isfinite(y).all()),
            "err_vs_dequantize": float(err.norm() / prod.norm()),
            "max_elem_excess": float(excess.max()),
            "bias_share": float(bias.double().norm() * rows ** 0.5 / prod.norm()),
            "err_vs_float": rel(y, x.double() @ w_float.double().t() + bias.double()),
        })
    if type(w).__name__ == "WeightQBitsTensor":
        # quanto's generic decode on CUDA runs quanto::unpack (our kernel); compare with the documented formula
        # in plain torch (not with quanto's CPU unpack: that is its JIT-built C++ extension).
        packed = w._data
        bits = packed._bits
        on_gpu = packed.unpack()
        formula = torch.cat([(packed._data >> (bits * i)) & ((1 << bits) - 1) for i in range(8 // bits)])
        out["unpack_bits"] = bits
        out["unpack_matches_formula"] = bool(torch.equal(on_gpu, formula[: packed.shape[0]]))
    cases.append(out)
RESULT["cases"] = cases
RESULT["shim_after"] = shim_facts()
emit()
'''

_T = {name: {"fro": t.fro, "atol": t.atol, "rtol": t.rtol} for name, t in
      (("float16", sp.GEMM_TOL[torch.float16]), ("bfloat16", sp.GEMM_TOL[torch.bfloat16]))}

# Quantization error of the layer itself (quantized vs float output, bias included), measured on CPU
# with quanto's generic path for exactly these cases (4 seeds): 0.019-0.022 (qfloat8), 0.048-0.054
# (qint4, group 128), 0.245-0.256 (qint2). The limits only catch gross errors (garbage or zeros give
# ~1); the tight check is the one against the layer's own dequantize().
QUANT_TOL = {"qfloat8_e4m3fn": 0.06, "qint4": 0.15, "qint2": 0.5}

LINEAR_CASES = [
    # name, qtype, dtype, K, N, expected weight class, input leading dims
    ("fp8-bf16", "qfloat8_e4m3fn", "bfloat16", 256, 384, "MarlinF8QBytesTensor", [[1], [3, 5], [64]]),
    ("fp8-fp16", "qfloat8_e4m3fn", "float16", 512, 128, "MarlinF8QBytesTensor", [[1], [2, 9], [300]]),
    ("int4-awq", "qint4", "float16", 384, 256, "AWQWeightQBitsTensor", [[1], [7], [3, 5], [64]]),
    # bf16 scales: the shim's AWQ class (plain quanto: TinyGemm); N = 64 too, below quanto's fp16 AWQ minimum
    ("int4-awq-bf16", "qint4", "bfloat16", 384, 256, "Bf16AWQWeightQBitsTensor", [[1], [7], [3, 5], [64]]),
    ("int4-awq-bf16-narrow", "qint4", "bfloat16", 256, 64, "Bf16AWQWeightQBitsTensor", [[3], [2, 9]]),
    ("int4-generic", "qint4", "float16", 256, 64, "WeightQBitsTensor", [[3], [2, 9]]),  # N < 128: no AWQ
    ("int2-generic", "qint2", "float16", 256, 256, "WeightQBitsTensor", [[5], [40]]),
]


@pytest.mark.parametrize("order", ["kernels_first", "quanto_first"])
def test_quantized_linear_served_by_our_kernels(order):
    pytest.importorskip("optimum.quanto")
    cases = [
        {"name": name, "qtype": qt, "dtype": dt, "k": k, "n": n, "leads": leads, "tol": _T[dt],
         "seed": sp.case_seed("linear", order, name)}
        for name, qt, dt, k, n, _cls, leads in LINEAR_CASES
    ]
    res = run_child(LINEAR_SCRIPT, {"order": order, "cases": cases}, _child_env())
    _assert_served(res["shim"])
    _assert_served(res["shim_after"])
    _assert_no_jit(res)
    expected = {name: (cls, qt, dt) for name, qt, dt, _k, _n, cls, _l in LINEAR_CASES}
    for case in res["cases"]:
        cls, qt, dt = expected[case["name"]]
        assert case["type"] == cls, f"{case['name']}: weight is {case['type']}, expected {cls}"
        tol = _T[dt]
        for inp in case["inputs"]:
            what = f"{order} {case['name']} input {inp['lead']}+[K]"
            assert inp["finite"], f"{what}: non-finite output"
            assert inp["dtype"] == dt, f"{what}: output dtype {inp['dtype']}"
            assert inp["bias_share"] > 0.3, f"{what}: bias too small to prove it is applied"
            assert inp["err_vs_dequantize"] <= tol["fro"], (
                f"{what}: relative error {inp['err_vs_dequantize']:.3e} against x @ dequantize().T "
                f"(limit {tol['fro']:.1e}; a dropped bias would give ~{inp['bias_share']:.2f})"
            )
            assert inp["max_elem_excess"] <= 0, (
                f"{what}: element-wise error over its bound by {inp['max_elem_excess']:.3g}"
            )
            assert inp["err_vs_float"] <= QUANT_TOL[qt], (
                f"{what}: relative error {inp['err_vs_float']:.3f} against the float layer (limit {QUANT_TOL[qt]})"
            )
        if case["type"] == "WeightQBitsTensor":
            assert case["unpack_matches_formula"], (
                f"{case['name']}: quanto's CUDA unpack (bits={case['unpack_bits']}) is wrong"
            )


# ------------------------------------------------------------------------------------ opt-out

DISABLED_SCRIPT = r'''
import torch
if ARGS["order"] == "kernels_first":
    import quanto_kernels
    import optimum.quanto
else:
    import optimum.quanto
    import quanto_kernels
RESULT["shim"] = shim_facts()
emit()
'''


@pytest.mark.parametrize("order", ["kernels_first", "quanto_first"])
def test_disable_env_leaves_quanto_alone(order, tmp_path):
    pytest.importorskip("optimum.quanto")
    res = run_child(DISABLED_SCRIPT, {"order": order}, private_quanto_env(tmp_path, plain=True))
    facts = res["shim"]
    assert facts["patched"] is False
    assert "QUANTO_KERNELS_DISABLE" in facts["reason"], facts["reason"]
    assert facts["load_is_forbidden"] is False, "the JIT loader was replaced although disabled"
    assert facts["lib"] is None, f"quanto_cuda's module was set to {facts['lib']} although disabled"
    _assert_no_jit(res)


# ---------------------------------------------------------------------------------- diffusers

# A tiny Flux: inner dim 2 heads x 64 = 128, so every Linear has (K, N) in
# {(256,128), (128,128), (64,128), (128,768), (128,512), (512,128), (128,384), (640,128), (128,256),
#  (128,64)}: all satisfy quanto's Marlin FP8 rule (K % 64 == 0 and N % 128 == 0, or K % 128 == 0
# and N % 64 == 0), so every quantized Linear must become a MarlinF8QBytesTensor.
FLUX_CONFIG = dict(
    patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=64,
    num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=64, guidance_embeds=False,
    axes_dims_rope=[16, 24, 24],
)

# Child-script lines shared by the FLUX tests: build a tiny Flux transformer from ARGS["config"] with
# seeded random bf16 weights and save it with save_pretrained to ARGS["dir"].
SAVE_TINY_FLUX = r'''cfg = dict(ARGS["config"])
cfg["axes_dims_rope"] = tuple(cfg["axes_dims_rope"])
torch.manual_seed(ARGS["seed"])
model = FluxTransformer2DModel(**cfg)
with torch.no_grad():
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.weight.normal_(std=mod.in_features ** -0.5)
            if mod.bias is not None:
                mod.bias.normal_(std=0.1)
model = model.to(torch.bfloat16)
RESULT["n_linear"] = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
model.save_pretrained(ARGS["dir"])
del model
'''

# Child-script lines shared by the save/load tests (int8, int4 + bf16): with K, H, N, dev, dtype, d (the
# directory) and WEIGHTS (the quanto qtype) set, either build, quantize and freeze a two-layer model and
# draw its inputs ("save"), or rebuild it from d's state dict and read the saved inputs ("load").
SAVE_OR_LOAD_TWO_LAYERS = r'''def build():
    return torch.nn.Sequential(torch.nn.Linear(K, H), torch.nn.GELU(), torch.nn.Linear(H, N))

if ARGS["mode"] == "save":
    torch.manual_seed(ARGS["seed"])
    model = build()
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.bias.normal_(std=0.5)
    model = model.to(dev, dtype)
    quantize(model, weights=WEIGHTS)
    freeze(model)
    g = torch.Generator().manual_seed(ARGS["seed"] + 1)
    inputs = {f"x{i}": torch.randn(*lead, K, generator=g).to(dev, dtype) for i, lead in enumerate(ARGS["leads"])}
else:
    with torch.device("meta"):
        model = build().to(dtype)
    state = load_file(str(d / "model.safetensors"))
    requantize(model, state, json.loads((d / "qmap.json").read_text()), device=torch.device(dev))
    # clone(): tensors from load_file sit at arbitrary offsets of the file's buffer, and torch's CPU
    # _weight_int8pack_mm (quanto's CPU path for bf16 qint8) crashes on activations not 64-byte aligned.
    inputs = {k: v.to(dev).clone() for k, v in load_file(str(d / "inputs.safetensors")).items()}
'''

FLUX_SCRIPT = r'''
import torch
import quanto_kernels
from diffusers import FluxTransformer2DModel, QuantoConfig
import optimum.quanto
from optimum.quanto import QLinear

RESULT["shim"] = shim_facts()
''' + SAVE_TINY_FLUX + r'''
qcfg = QuantoConfig(weights_dtype="float8")
if ARGS["load"] == "device_map":
    q = FluxTransformer2DModel.from_pretrained(ARGS["dir"], quantization_config=qcfg, torch_dtype=torch.bfloat16,
                                               device_map="cuda")
else:
    q = FluxTransformer2DModel.from_pretrained(ARGS["dir"], quantization_config=qcfg, torch_dtype=torch.bfloat16)
    q = q.to("cuda")
ref = FluxTransformer2DModel.from_pretrained(ARGS["dir"], torch_dtype=torch.bfloat16).to("cuda")
twin = FluxTransformer2DModel.from_pretrained(ARGS["dir"], torch_dtype=torch.bfloat16).to("cuda")

types = {}
with torch.no_grad():
    for name, mod in q.named_modules():
        if isinstance(mod, QLinear):
            t = type(mod.weight).__name__
            types[t] = types.get(t, 0) + 1
            # The twin runs the very weights the quantized model holds, dequantized, in plain bf16.
            twin.get_submodule(name).weight.copy_(mod.weight.dequantize())
RESULT["weight_types"] = types

g = torch.Generator(device="cuda")
g.manual_seed(ARGS["seed"] + 1)
B, S_img, S_txt, C = 1, 64, 16, cfg["in_channels"]
kw = dict(
    hidden_states=torch.randn(B, S_img, C, generator=g, device="cuda", dtype=torch.bfloat16),
    encoder_hidden_states=torch.randn(B, S_txt, cfg["joint_attention_dim"], generator=g, device="cuda",
                                      dtype=torch.bfloat16),
    pooled_projections=torch.randn(B, cfg["pooled_projection_dim"], generator=g, device="cuda", dtype=torch.bfloat16),
    timestep=torch.tensor([0.5], device="cuda", dtype=torch.bfloat16),
    return_dict=False,
)
img_ids = torch.zeros(S_img, 3, device="cuda")
img_ids[:, 1] = torch.arange(S_img, device="cuda") // 8
img_ids[:, 2] = torch.arange(S_img, device="cuda") % 8
kw["img_ids"] = img_ids
kw["txt_ids"] = torch.zeros(S_txt, 3, device="cuda")
with torch.no_grad():
    poison()
    y_q = q(**kw)[0]
    y_ref = ref(**kw)[0]
    y_twin = twin(**kw)[0]
RESULT["shape"] = list(y_q.shape)
RESULT["dtype"] = str(y_q.dtype).replace("torch.", "")
RESULT["finite"] = bool(torch.isfinite(y_q).all())
RESULT["err_vs_bf16"] = rel(y_q, y_ref)
RESULT["err_vs_dequantized_twin"] = rel(y_q, y_twin)
RESULT["shim_after"] = shim_facts()
emit()
'''


@pytest.mark.parametrize("load", ["to_cuda", "device_map"])
def test_diffusers_flux_float8(load, tmp_path):
    pytest.importorskip("optimum.quanto")
    pytest.importorskip("diffusers")
    pytest.importorskip("accelerate", reason="diffusers' quanto backend needs accelerate")
    args = {"config": FLUX_CONFIG, "dir": str(tmp_path / "flux"), "load": load,
            "seed": sp.case_seed("flux", load) % 2**31}
    res = run_child(FLUX_SCRIPT, args, _child_env())
    _assert_served(res["shim"])
    _assert_served(res["shim_after"])
    _assert_no_jit(res)
    assert res["shape"] == [1, 64, FLUX_CONFIG["in_channels"]] and res["dtype"] == "bfloat16"
    assert res["finite"], "non-finite output from the quantized Flux"
    types = res["weight_types"]
    assert types.get("MarlinF8QBytesTensor", 0) >= 1, f"no Linear went through our kernels: {types}"
    assert types == {"MarlinF8QBytesTensor": res["n_linear"]}, (
        f"every Linear of this config fits the Marlin FP8 rule; got {types} for {res['n_linear']} Linear layers"
    )
    # Kernel check: the same fp8 weights, dequantized and run in plain bf16, agree to bf16 arithmetic
    # noise (CPU, quanto's generic path: ~0.009 through 2 blocks with attention and modulation).
    assert res["err_vs_dequantized_twin"] < 0.03, f"relative error {res['err_vs_dequantized_twin']:.4f} vs twin"
    # Sanity: fp8 (e4m3, 3 mantissa bits, per-channel scale) weights vs bf16 ones cost ~0.05 relative
    # error at the output of this model (CPU, quanto's generic path, 6 seeds: 0.049-0.057).
    assert res["err_vs_bf16"] < 0.1, f"relative error {res['err_vs_bf16']:.4f} vs the bf16 model"
