"""How fp8_compute_linear calls the C ABI, checked on the CPU: the device checks and the library are
replaced by recorders, so what is checked is the plumbing (which entry points, in which order, with
which sizes, pitches, buffers and keyword names), not the kernels (tests/ops/test_gpu_fp8_compute.py).
"""

from __future__ import annotations

import pytest
import torch

from quanto_kernels._native import abi
from quanto_kernels.ops import _common, _fp8_compute, _fp8_marlin

f16, bf16 = torch.float16, torch.bfloat16
K, N = 96, 128


@pytest.fixture
def calls(monkeypatch):
    """Records the op's C calls instead of making them; the outputs stay as torch allocated them."""
    seen = []

    def recorder(name):
        def record(**kwargs):
            params = [abi.python_name(p.name) for p in abi.FUNCTIONS["qk_" + name].params]
            assert sorted(kwargs) == sorted(params), f"{name}: keywords {sorted(kwargs)} != header {sorted(params)}"
            seen.append((name, kwargs))
        return record

    for name in ("fp8_act_quant", "fp8_compute_gemm", "fp8_marlin_gemv"):
        monkeypatch.setattr(abi, name, recorder(name))
    monkeypatch.setattr(_fp8_compute, "_check_devices", lambda *args: None)
    monkeypatch.setattr(_common, "stream", lambda t: 1234)
    monkeypatch.setattr(_common, "stream_on", lambda device_index: 1234)
    monkeypatch.setattr(abi, "fp8_marlin_gemv_workspace_bytes", lambda **sizes: 0)
    _common.clear_workspace_sizes()  # sizes are asked of the (recording) library again
    monkeypatch.setattr(type(_fp8_marlin.FAMILY), "max_gemv_m", property(lambda self: 64), raising=False)
    return seen


def _args(m, dtype=bf16, bias=True):
    x = torch.randn(m, K).to(dtype)
    w = torch.zeros(K // 16, 4 * N, dtype=torch.int32)
    s = torch.ones(1, N, dtype=dtype)
    b = torch.zeros(N, dtype=dtype) if bias else None
    return x, w, s, b


@pytest.mark.parametrize("dtype", [f16, bf16])
@pytest.mark.parametrize("bias", [True, False])
def test_large_m_quantizes_then_multiplies(calls, dtype, bias):
    x, w, s, b = _args(100, dtype, bias)
    out = _fp8_compute.direct(x, w, s, b)
    assert out.shape == (100, N) and out.dtype == dtype
    assert [name for name, _ in calls] == ["fp8_act_quant", "fp8_compute_gemm"]
    quant, gemm = calls[0][1], calls[1][1]
    code = _common.DTYPE_CODES[dtype]
    assert quant["x"] == x.data_ptr() and quant["ldx"] == K and quant["m"] == 100 and quant["k"] == K
    assert quant["dtype"] == code and quant["stream"] == 1234
    # the GEMM reads exactly the buffers the quantization wrote, and writes the returned tensor
    assert gemm["xq"] == quant["xq"] and gemm["xs"] == quant["xs"]
    assert (gemm["m"], gemm["n"], gemm["k"], gemm["dtype"]) == (100, N, K, code)
    assert gemm["w"] == w.data_ptr() and gemm["scales"] == s.data_ptr() and gemm["out"] == out.data_ptr()
    assert gemm["bias"] == (b.data_ptr() if bias else None)


def test_small_m_takes_the_weight_only_gemv_with_the_bias_in_its_epilogue(calls):
    x, w, s, b = _args(64)
    b.fill_(1.5)
    out = _fp8_compute.direct(x, w, s, b)
    assert [name for name, _ in calls] == ["fp8_marlin_gemv"]
    gemv = calls[0][1]
    assert gemv["m"] == 64 and gemv["bias"] == b.data_ptr() and gemv["out"] == out.data_ptr()
    calls.clear()
    _fp8_compute.direct(x, w, s, None)
    assert calls[0][1]["bias"] is None


def test_forced_fp8_path_at_small_m(calls):
    x, w, s, b = _args(3)
    with _fp8_compute.force_path("fp8"):
        _fp8_compute.direct(x, w, s, b)
    assert [name for name, _ in calls] == ["fp8_act_quant", "fp8_compute_gemm"]


def test_strided_x_is_made_dense_first(calls):
    x, w, s, b = _args(100)
    view = torch.cat([x, x], dim=1)[:, :K]
    out = _fp8_compute.direct(view.reshape(4, 25, K), w, s, b)
    assert out.shape == (4, 25, N)
    assert calls[0][1]["x"] != view.data_ptr() and calls[0][1]["ldx"] == K


def test_empty_input_calls_nothing(calls):
    x, w, s, b = _args(0)
    assert _fp8_compute.direct(x.reshape(0, 3, K), w, s, b).shape == (0, 3, N)
    assert calls == []


def test_force_path_refuses_unknown_values():
    with pytest.raises(ValueError, match="^path: must be one of"):
        with _fp8_compute.force_path("dequant"):
            pass
