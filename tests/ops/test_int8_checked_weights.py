"""The int8 linear's memory of checked weights (``_int8.checked_weights``): a layer's later calls skip the
weight checks only while the very same tensors come back unchanged. CPU only: the cache never touches data."""

from __future__ import annotations

import gc
import weakref

import torch

from quanto_kernels.ops import _int8


def _weight(n=24, k=32):
    g = torch.Generator().manual_seed(n * 1000 + k)
    w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int16).to(torch.int8)
    s = (0.5 + torch.rand(n, 1, generator=g)).to(torch.bfloat16)
    return w, s


def test_hit_only_for_the_same_tensors_in_the_same_state():
    cache = _int8._CheckedWeights()
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
    cache = _int8._CheckedWeights()
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
    cache = _int8._CheckedWeights()
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
    try:
        _int8.direct_linear(x, w, s)  # w on the CPU: refused (x on the CPU is refused first)
    except ValueError as exc:
        assert str(exc).startswith(("x:", "w:")), exc
    else:
        raise AssertionError("a CPU weight must be refused")
    assert _int8.checked_weights.lookup(w, s) is None
