"""The linear entry points' memory of checked weights (``_common.CheckedWeights``: int8_linear's and
fp8_marlin_gemm's): a layer's later calls skip the weight checks only while the very same tensors come back
unchanged. CPU: the cache's own rules; GPU: a weight changed in place is checked and read afresh."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import support as sp

from quanto_kernels.ops import _common, _fp8_marlin, _int8


def _weight(n=24, k=32):
    g = torch.Generator().manual_seed(n * 1000 + k)
    w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int16).to(torch.int8)
    s = (0.5 + torch.rand(n, 1, generator=g)).to(torch.bfloat16)
    return w, s


def test_hit_only_for_the_same_tensors_in_the_same_state():
    cache = _common.CheckedWeights()
    w, s = _weight()
    assert cache.lookup(w, s) is None
    cache.add(w, s, (24, 32))
    assert cache.lookup(w, s) == (24, 32)
    w2, s2 = _weight()
    assert cache.lookup(w, s2) is None  # other scales
    assert cache.lookup(w2, s) is None  # an equal but other weight tensor
    w.data = w.data.clone()  # new storage behind the same object
    assert cache.lookup(w, s) is None
    cache.add(w, s, (24, 32))
    w.resize_(12, 32)  # same storage, other shape
    assert cache.lookup(w, s) is None
    cache.add(w, s, (12, 32))
    s.data = s.data.to(torch.float16)
    assert cache.lookup(w, s) is None


def test_keeps_nothing_alive_and_a_reused_id_misses():
    cache = _common.CheckedWeights()
    w, s = _weight()
    ref = weakref.ref(w)
    cache.add(w, s, (24, 32))
    key = id(w)
    del w
    gc.collect()
    assert ref() is None  # the cache did not keep the weight alive
    entry = cache._entries[key]
    assert entry[0]() is None
    w_new, _ = _weight()
    cache._entries[id(w_new)] = entry  # as if the new tensor had been given the dead one's id
    assert cache.lookup(w_new, s) is None


def test_bounded():
    cache = _common.CheckedWeights()
    keep = []
    for i in range(cache.MAX_ENTRIES + 5):
        w, s = _weight(8, 16)
        keep.append((w, s))
        cache.add(w, s, (8, 16))
    assert len(cache._entries) <= cache.MAX_ENTRIES


def test_a_weight_refused_on_the_cpu_is_not_remembered():
    _int8.checked_weights.clear()
    w, s = _weight()
    x = torch.randn(3, 32, dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"^(x|w): "):  # w on the CPU: refused (x on the CPU is refused first)
        _int8.direct_linear(x, w, s)
    assert _int8.checked_weights.lookup(w, s) is None


def test_fp8_gemm_refuses_and_forgets_a_cpu_weight():
    _fp8_marlin.checked_weights.clear()
    w = torch.randint(-2**31, 2**31 - 1, (4, 256), dtype=torch.int32)  # K = 64, N = 64
    s = torch.rand(1, 64).to(torch.bfloat16)
    a = torch.randn(3, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"^(a|b_q_weight): "):
        _fp8_marlin.direct_gemm(a, w, s)
    assert _fp8_marlin.checked_weights.lookup(w, s) is None


@pytest.mark.gpu
@sp.requires_gpu
def test_int8_linear_checks_a_weight_again_once_it_changes(ops):
    """int8_linear remembers checked weights by identity (ops/_int8.py, _CheckedWeights): a weight given new
    data or a new shape in place is checked and read afresh, never with the facts of its old state."""
    dtype, n, k, m = torch.bfloat16, 136, 512, 40
    g = sp.generator("int8-linear-recheck", m)
    w, s = sp.random_int8_weight(n, k, dtype, g)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=dtype)
    first = ops.int8_linear(x, w, s)
    sp.assert_gemm_close(first, sp.matmul_reference(x, sp.int8_dequant_reference(w, s)), dtype, "first call")
    w2, s2 = sp.random_int8_weight(n, k, dtype, g)
    w.data, s.data = w2, s2  # the same objects, other storage
    sp.assert_gemm_close(ops.int8_linear(x, w, s), sp.matmul_reference(x, sp.int8_dequant_reference(w2, s2)),
                         dtype, "after .data was replaced")
    w.data = w.data[:, : k // 2]  # same start address, half the columns, no longer dense
    with pytest.raises(ValueError, match=r"^x: expected shape \(\.\.\., K=256\)"):
        ops.int8_linear(x, w, s)
    with pytest.raises(ValueError, match=r"^w: must be contiguous"):
        ops.int8_linear(x[:, : k // 2], w, s)


@pytest.mark.gpu
@sp.requires_gpu
def test_fp8_marlin_gemm_checks_a_weight_again_once_it_changes(ops):
    dtype, n, k, m = torch.bfloat16, 128, 512, 300
    g = sp.generator("fp8-gemm-recheck", m)
    codes, s, packed, s_perm = sp.fp8_weight(k, n, dtype, g)
    x = torch.randn(m, k, generator=g, device="cuda", dtype=dtype)
    sp.assert_gemm_close(ops.fp8_marlin_gemm(x, packed, s_perm),
                         sp.matmul_reference(x, sp.fp8_dequant_reference(codes, s)), dtype, "first call")
    codes2, s2, packed2, s_perm2 = sp.fp8_weight(k, n, dtype, g)
    packed.data, s_perm.data = packed2, s_perm2  # the same objects, other storage
    sp.assert_gemm_close(ops.fp8_marlin_gemm(x, packed, s_perm),
                         sp.matmul_reference(x, sp.fp8_dequant_reference(codes2, s2)), dtype, "after .data was replaced")
    packed.data = packed.data[: k // 32]  # same start address, half of K
    with pytest.raises(ValueError, match=r"^a: expected K=256 columns"):
        ops.fp8_marlin_gemm(x, packed, s_perm)
