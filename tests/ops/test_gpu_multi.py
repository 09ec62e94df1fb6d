"""Devices and streams: the library launches on the tensors' device and on that device's
current stream, never on the current device or the default stream by accident.

One GPU (runs on any GPU machine): a recorder on the loaded library's ``call`` captures the device
index and raw stream handle that every launch receives; under a non-default ``torch.cuda.Stream``
(also inside a ``torch.cuda.device(0)`` context) they must be the tensors' device and that stream's
``cuda_stream``, for every op and both GEMM paths, and for quanto's layers through the shim.

Two GPUs (skipped unless ``torch.cuda.device_count() >= 2``):
  * every op with its inputs on cuda:1 while cuda:0 is the current device, and the reverse, with a
    non-default stream current on the tensors' device: right results, launched there, and the
    caller's current device unchanged afterwards;
  * two quanto qfloat8 Linear layers on different GPUs called alternately from one thread;
  * a model split across both GPUs (each half quantized with qfloat8, device_map style) against the
    same model on one GPU: identical outputs (bit for bit on the fused small-M path).
"""

from __future__ import annotations

# Fixtures (ops, quanto_patched, recorder) are imported from other test modules and named as parameters.
# ruff: noqa: F811

import copy

import pytest
import torch

import support as sp

from ops.test_gpu_concurrency import recorder  # noqa: F401  (fixture: library calls and workspaces)

pytestmark = [pytest.mark.gpu, sp.requires_gpu]

f16, bf16 = torch.float16, torch.bfloat16
TWO_GPUS = pytest.mark.skipif(not sp.HAS_GPU or torch.cuda.device_count() < 2,
                              reason="needs 2 CUDA GPUs")
K, N = 1024, 512


def _cases(ops):
    """(id, build() -> (call(), check(out)), expects a launch) built on the *current* device."""

    def unpack():
        t = torch.randint(0, 256, (129, 40), generator=sp.generator("multi-unpack"), device="cuda", dtype=torch.uint8)
        return (lambda: ops.unpack(t, 4)), (lambda out: torch.equal(out, sp.unpack_reference(t, 4)))

    def repack():
        k, n = 256, 192
        g = sp.generator("multi-repack")
        codes = sp.random_fp8_codes(n, k, g)
        perm = torch.randperm(k, generator=g, device="cuda").to(torch.int32)
        b = sp.fp8_pack_as_int32(codes)
        return ((lambda: ops.marlin_repack(b, perm, k, n, 8)),
                (lambda out: torch.equal(out, sp.fp8_marlin_layout(codes[:, perm.long()]))))

    def gemm(fmt, m, dtype=f16):
        def build():
            g = sp.generator("multi-gemm", fmt, m)
            if fmt == "fp8":
                codes, s, packed, s_perm = sp.fp8_weight(K, N, dtype, g)
                ref_w, call = sp.fp8_dequant_reference(codes, s), (lambda x: ops.fp8_marlin_gemm(x, packed, s_perm))
            elif fmt == "awq":
                codes, s, z, packed = sp.awq_weight(K, N, g)
                ref_w, call = sp.int4_dequant_reference(codes, s, z), (lambda x: ops.awq_int4_gemm(x, packed, s, z))
            else:
                codes, s, z, packed = sp.mi4_weight(K, N, g)
                sperm, zp = sp.permute_block64(s), sp.permute_block64(z)
                ref_w = sp.int4_dequant_reference(codes, s, z)
                call = lambda x: ops.marlin_int4_gemm(x, packed, sperm, zp, ops.SCALE_PERM_BLOCK64)  # noqa: E731
            x = torch.randn(m, K, generator=g, device="cuda", dtype=dtype)

            def check(out):
                sp.assert_gemm_close(out, sp.matmul_reference(x, ref_w), dtype, f"{fmt} M={m} on {out.device}")
                return True

            return (lambda: call(x)), check
        return build

    def dequant(fmt):
        def build():
            g = sp.generator("multi-deq", fmt)
            if fmt == "fp8":
                codes, s, packed, s_perm = sp.fp8_weight(K, N, bf16, g)
                ref = sp.fp8_dequant_reference(codes, s)
                call = lambda: ops.fp8_marlin_dequantize(packed, s_perm)  # noqa: E731
                bound = lambda r: sp.fp8_dequant_bound(r, bf16)  # noqa: E731
            elif fmt == "awq":
                codes, s, z, packed = sp.awq_weight(K, N, g)
                ref = sp.int4_dequant_reference(codes, s, z)
                call = lambda: ops.awq_int4_dequantize(packed, s, z)  # noqa: E731
                bound = lambda r: sp.int4_dequant_bound(codes, s, r)  # noqa: E731
            else:
                codes, s, z, packed = sp.mi4_weight(K, N, g)
                ref = sp.int4_dequant_reference(codes, s, z)
                sperm, zp = sp.permute_block64(s), sp.permute_block64(z)
                call = lambda: ops.marlin_int4_dequantize(packed, sperm, zp, ops.SCALE_PERM_BLOCK64)  # noqa: E731
                bound = lambda r: sp.int4_dequant_bound(codes, s, r)  # noqa: E731
            return call, (lambda out: sp.max_abs_over(out, ref, bound(ref)) <= 0)
        return build

    return [
        ("unpack", unpack), ("repack-perm", repack),
        ("fp8-dequant", dequant("fp8")), ("awq-dequant", dequant("awq")), ("marlin-dequant", dequant("marlin")),
        ("fp8-M1", gemm("fp8", 1)), ("fp8-M7-bf16", gemm("fp8", 7, bf16)), ("fp8-M64", gemm("fp8", 64)),
        ("awq-M1", gemm("awq", 1)), ("awq-M64", gemm("awq", 64)),
        ("marlin-M3", gemm("marlin", 3)), ("marlin-M64", gemm("marlin", 64)),
    ]


CASE_IDS = ["unpack", "repack-perm", "fp8-dequant", "awq-dequant", "marlin-dequant", "fp8-M1", "fp8-M7-bf16",
            "fp8-M64", "awq-M1", "awq-M64", "marlin-M3", "marlin-M64"]


def _build(ops, case_id):
    return dict(_cases(ops))[case_id]()


def _assert_launches(recorder, device, stream, what):
    calls = recorder["calls"]
    assert calls, f"{what}: no launch reached the library"
    for name, dev, handle in calls:
        assert dev == device, f"{what}: {name} got device {dev}, the tensors are on cuda:{device}"
        assert handle == stream, f"{what}: {name} got stream {handle:#x}, the current stream is {stream:#x}"


# ------------------------------------------------------------------------------------- one GPU


@pytest.mark.parametrize("case_id", CASE_IDS)
@pytest.mark.parametrize("context", ["stream", "device0+stream", "default-stream"])
def test_launch_gets_the_tensors_device_and_current_stream(ops, recorder, case_id, context):
    call, check = _build(ops, case_id)
    torch.cuda.synchronize()
    recorder["calls"].clear()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    if context == "stream":
        with torch.cuda.stream(s):
            out = call()
        expected = s.cuda_stream
    elif context == "device0+stream":
        with torch.cuda.device(0), torch.cuda.stream(s):
            out = call()
        expected = s.cuda_stream
    else:
        out = call()
        expected = torch.cuda.current_stream().cuda_stream
    torch.cuda.synchronize()
    assert check(out), f"{case_id}: wrong result"
    _assert_launches(recorder, torch.cuda.current_device(), expected, f"{case_id} ({context})")


@pytest.mark.parametrize("kind", ["qfloat8", "qint4"])
@pytest.mark.parametrize("m", [1, 40], ids=lambda m: f"M{m}")
def test_quanto_layer_launches_on_the_current_stream(quanto_patched, ops, recorder, kind, m):
    from optimum.quanto import freeze, qfloat8, qint4, quantize

    model, g = sp.linear_case(K, N, f16, ("multi-quanto", kind))
    quantize(model, weights=qfloat8 if kind == "qfloat8" else qint4)
    freeze(model)
    x = torch.randn(m, K, generator=g, device="cuda", dtype=f16)
    with torch.no_grad():
        ref = model(x)
        torch.cuda.synchronize()
        recorder["calls"].clear()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            out = model(x)
        torch.cuda.synchronize()
    assert torch.equal(out, ref) or m > sp.fused_limit(ops, kind)
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
    _assert_launches(recorder, x.device.index, s.cuda_stream, f"quanto {kind} M={m}")


# ------------------------------------------------------------------------------------ two GPUs


@TWO_GPUS
@pytest.mark.parametrize("case_id", CASE_IDS)
@pytest.mark.parametrize("current,target", [(0, 1), (1, 0)], ids=["cur0-data1", "cur1-data0"])
def test_op_with_inputs_on_the_other_gpu(ops, recorder, case_id, current, target):
    with torch.cuda.device(target):
        call, check = _build(ops, case_id)
        s = torch.cuda.Stream()  # a non-default stream on the tensors' device
        s.wait_stream(torch.cuda.current_stream())
    torch.cuda.synchronize(target)
    recorder["calls"].clear()
    with torch.cuda.stream(s):  # makes s current on `target` (and switches the device to it)...
        with torch.cuda.device(current):  # ... then the current device goes back to `current`
            assert torch.cuda.current_device() == current
            out = call()
            assert torch.cuda.current_device() == current, "the call changed the caller's current device"
    torch.cuda.synchronize(target)
    torch.cuda.synchronize(current)
    assert out.device == torch.device("cuda", target)
    with torch.cuda.device(target):
        assert check(out), f"{case_id}: wrong result on cuda:{target}"
    _assert_launches(recorder, target, s.cuda_stream, f"{case_id} data on cuda:{target}, current cuda:{current}")


def _qfloat8_linear(k, n, device, seed, dtype=f16):
    from optimum.quanto import freeze, qfloat8, quantize

    with torch.cuda.device(device):
        model, _ = sp.linear_case(k, n, dtype, seed)
        quantize(model, weights=qfloat8)
        freeze(model)
    assert model[0].weight.device == torch.device("cuda", device)
    return model


@TWO_GPUS
def test_two_layers_on_two_gpus_used_alternately(quanto_patched, ops):
    layers = [_qfloat8_linear(K, N, d, ("multi-alt", d)) for d in (0, 1)]
    xs = {(d, m): torch.randn(m, K, generator=sp.generator("multi-alt-x", d, m, device=f"cuda:{d}"),
                              device=f"cuda:{d}", dtype=f16) for d in (0, 1) for m in (1, 40)}
    torch.cuda.set_device(0)
    with torch.no_grad():
        refs = {key: layers[key[0]](x) for key, x in xs.items()}
        for d in (0, 1):
            torch.cuda.synchronize(d)
        for _ in range(10):
            outs = {key: layers[key[0]](x) for key, x in xs.items()}
            assert torch.cuda.current_device() == 0
            for (d, m), out in outs.items():
                assert out.device == torch.device("cuda", d)
                if m <= ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m:
                    assert torch.equal(out, refs[(d, m)]), f"layer on cuda:{d} M={m} changed between calls"
                else:
                    torch.testing.assert_close(out, refs[(d, m)], rtol=2e-3, atol=2e-3)
    for (d, m), x in xs.items():
        with torch.cuda.device(d):
            deq = layers[d][0].weight.dequantize()
            bias = layers[d][0].bias.detach()
            sp.assert_gemm_close(refs[(d, m)].double() - bias.double(), sp.matmul_reference(x, deq), f16,
                                 f"quanto qfloat8 on cuda:{d} M={m}")


@TWO_GPUS
@pytest.mark.parametrize("m", [1, 5, 40], ids=lambda m: f"M{m}")
def test_model_split_across_two_gpus_matches_one_gpu(quanto_patched, ops, m):
    from optimum.quanto import freeze, qfloat8, quantize

    torch.manual_seed(0)
    float_model = torch.nn.Sequential(torch.nn.Linear(K, 768), torch.nn.GELU(), torch.nn.Linear(768, N)).to(f16)
    one = copy.deepcopy(float_model).to("cuda:0")
    quantize(one, weights=qfloat8)
    freeze(one)
    halves = [copy.deepcopy(float_model[:2]).to("cuda:0"), copy.deepcopy(float_model[2:]).to("cuda:1")]
    for d, half in enumerate(halves):
        with torch.cuda.device(d):
            quantize(half, weights=qfloat8)
            freeze(half)
    # The same float weights quantize to the same packed bytes on either GPU.
    assert torch.equal(one[2].weight._data._data.cpu(), halves[1][0].weight._data._data.cpu())
    x = torch.randn(m, K, generator=sp.generator("multi-split", m, device="cuda:0"), device="cuda:0", dtype=f16)
    torch.cuda.set_device(0)
    with torch.no_grad():
        y_one = one(x)
        y_split = halves[1](halves[0](x).to("cuda:1"))
    assert y_split.device == torch.device("cuda", 1)
    y_split = y_split.to("cuda:0")
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    if m <= ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m:
        assert torch.equal(y_split, y_one), "the split model differs from the one-GPU model"
    else:
        torch.testing.assert_close(y_split, y_one, rtol=2e-3, atol=2e-3)
