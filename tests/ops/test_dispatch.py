"""The GEMM dispatch rule and its test-only override (quanto_kernels.ops.force_path); CPU parts run anywhere."""


import pytest
import torch

import support as sp


def test_limits_come_from_the_library(ops):
    from quanto_kernels._native import abi

    assert ops.GEMM_FAMILIES["fp8_marlin"].max_gemv_m == abi.fp8_marlin_max_gemv_m()
    assert ops.GEMM_FAMILIES["awq_int4"].max_gemv_m == abi.max_gemv_m()
    assert ops.GEMM_FAMILIES["marlin_int4"].max_gemv_m == abi.max_gemv_m()


def test_rule_and_override(ops):
    fam = ops.GEMM_FAMILIES["fp8_marlin"]
    limit = fam.max_gemv_m
    assert fam.use_gemv(1) and fam.use_gemv(limit) and not fam.use_gemv(limit + 1)
    with ops.force_path("dequant"):
        assert not fam.use_gemv(1)
    with ops.force_path("gemv"):
        assert fam.use_gemv(limit)
        with pytest.raises(ValueError, match=rf"M={limit + 1} rows exceed the fp8_marlin fused kernel's limit of {limit}"):
            fam.use_gemv(limit + 1)
    assert fam.use_gemv(1) and not fam.use_gemv(limit + 1)  # restored
    with pytest.raises(ValueError, match="path: must be one of"):
        with ops.force_path("fast"):
            pass


@pytest.mark.parametrize("family", ["fp8_marlin", "int8"])
def test_tensor_core_region_is_the_measured_one(ops, monkeypatch, family):
    """A tensor-core kernel's region (ops/_fp8_marlin.py, ops/_int8.py): M in [from_m, to_m] on weights of at
    least min_weight (N x K) elements; the bounds are inclusive."""
    fam = ops.GEMM_FAMILIES[family]
    tc = fam.tc
    n, k = 4096, tc.min_weight // 4096
    assert tc.serves(tc.from_m, n, k) and tc.serves(tc.to_m, n, k)
    assert not tc.serves(tc.from_m - 1, n, k) and not tc.serves(tc.to_m + 1, n, k)
    assert not tc.serves(tc.from_m, n, k - 16) and tc.serves(tc.from_m, 2 * n, k)
    monkeypatch.setattr(tc, "_by_device", {0: False})  # a GPU without the kernel: never chosen
    assert not fam.use_tc(tc.from_m, 0, n, k)
    monkeypatch.setattr(tc, "_by_device", {0: True})
    assert fam.use_tc(tc.from_m, 0, n, k)
    with ops.force_path("dequant"):
        assert not fam.use_tc(tc.from_m, 0, n, k)
    with ops.force_path("tc"):
        assert fam.use_tc(1, 0, 64, 16)  # forced: every shape the kernel takes
        assert fam.use_gemv(1)  # families without the kernel keep their own rule under "tc"
    monkeypatch.setattr(tc, "_by_device", {0: False})
    with ops.force_path("tc"), pytest.raises(ValueError, match=rf"force_path\('tc'\): the {family} family has no"):
        fam.use_tc(128, 0, 8192, 4096)


INT8_ROUTES = [  # (M, N, K, path): the rule with a tensor-core kernel present
    (1, 128, 256, "gemv"), (16, 128, 256, "gemv"), (17, 128, 256, "tc"),
    (256, 128, 256, "tc"), (257, 128, 256, "dequant"),
    (64, 100, 256, "gemv"), (100, 100, 256, "dequant"),  # N % 64: no tensor cores
    (64, 128, 48, "tc"), (8, 128, 48, "dequant"),  # K % 32 != 0: no GEMV
    (64, 128, 40, "dequant"),  # K % 16 != 0: neither fused kernel
]  # (the ops refuse weights that are not contiguous and 16-byte aligned before any path is chosen)


@pytest.mark.parametrize("m,n,k,path", INT8_ROUTES)
def test_int8_path_by_rows_and_shape(ops, monkeypatch, m, n, k, path):
    """Which int8 path the rule picks (ops/_int8.py: matmul), on the CPU with the three paths replaced by
    recorders and the tensor-core kernel present, its weight threshold lowered to these small shapes."""
    from quanto_kernels.ops import _int8

    ran = []

    def record(name, rows, cols, dtype):
        ran.append(name)
        return torch.zeros(rows, cols, dtype=dtype)

    monkeypatch.setattr(_int8, "run_tc", lambda a, w, s, bias, n_, k_: record("tc", a.shape[0], n_, a.dtype))
    monkeypatch.setattr(_int8, "run_gemv", lambda a, w, s, n_, k_, bias=None: record("gemv", a.shape[0], n_, a.dtype))
    monkeypatch.setattr(_int8, "run_dequantize", lambda w, s, n_, k_: record("dequant", n_, k_, s.dtype))
    tc = _int8.FAMILY.tc
    monkeypatch.setattr(tc, "_by_device", {None: True})  # CPU tensors: device index None
    monkeypatch.setattr(tc, "min_weight", 0)
    w = torch.zeros(n, k, dtype=torch.int8)
    s = torch.ones(n, 1, dtype=torch.bfloat16)
    x = torch.zeros(m, k, dtype=torch.bfloat16)
    out = _int8.matmul(x, w, s, n, k)
    assert ran == [path], (m, n, k, ran)
    assert tuple(out.shape) == (m, n)


INT8_GEMM_ROUTES = [  # (M, N, K, path): the rule with the tensor-core kernel and the larger-M GEMM kernel present,
    # on a GPU of 132 multiprocessors
    (16, 128, 256, "gemv"), (17, 128, 256, "tc"), (64, 128, 256, "tc"), (65, 128, 256, "gemm"),
    (1024, 128, 256, "gemm"), (1025, 128, 256, "gemm"),  # past 1024 rows, under two waves: stream-K evens them
    (2048, 3072, 16, "gemm"),  # 192 tiles of 256 tokens, under two waves of 132
    (4608, 3072, 16, "dequant"), (4608, 4096, 16, "dequant"),  # two waves or more, last one 82 % / 87 % full
    (4096, 3072, 16, "gemm"), (2048, 4096, 16, "gemm"),  # 97 %
    (100, 136, 256, "gemm"), (100, 100, 256, "dequant"),  # N % 8: the GEMM kernel; N % 64: not the tc kernel
    (100, 128, 40, "dequant"),  # K % 16 != 0: no kernel
]


@pytest.mark.parametrize("m,n,k,path", INT8_GEMM_ROUTES)
def test_int8_path_with_the_gemm_kernel(ops, monkeypatch, m, n, k, path):
    """The int8 rule where the GEMM kernel exists (ops/_int8.py: gemm_rule), weight thresholds lowered to
    these small shapes; and on smaller weights (thresholds as shipped) it starts at GEMM_SMALL_WEIGHT_FROM_M."""
    from quanto_kernels.ops import _common as c
    from quanto_kernels.ops import _int8

    ran = []

    def record(name, rows, cols, dtype):
        ran.append(name)
        return torch.zeros(rows, cols, dtype=dtype)

    monkeypatch.setattr(_int8, "run_tc", lambda a, w, s, bias, n_, k_: record("tc", a.shape[0], n_, a.dtype))
    monkeypatch.setattr(_int8, "run_gemm", lambda a, w, s, bias, n_, k_: record("gemm", a.shape[0], n_, a.dtype))
    monkeypatch.setattr(_int8, "run_gemv", lambda a, w, s, n_, k_, bias=None: record("gemv", a.shape[0], n_, a.dtype))
    monkeypatch.setattr(_int8, "run_dequantize", lambda w, s, n_, k_: record("dequant", n_, k_, s.dtype))
    for kernel in (_int8.FAMILY.tc, _int8.FAMILY.gemm):
        monkeypatch.setattr(kernel, "_by_device", {None: True})
    monkeypatch.setattr(_int8.FAMILY.tc, "min_weight", 0)
    monkeypatch.setattr(_int8, "TC_MIN_WEIGHT", 0)
    monkeypatch.setattr(c, "device_sm_count", lambda device_index: 132)
    w, s = torch.zeros(n, k, dtype=torch.int8), torch.ones(n, 1, dtype=torch.bfloat16)
    out = _int8.matmul(torch.zeros(m, k, dtype=torch.bfloat16), w, s, n, k)
    assert ran == [path], (m, n, k, ran)
    assert tuple(out.shape) == (m, n)
    monkeypatch.setattr(_int8, "TC_MIN_WEIGHT", 1 << 25)
    small = _int8.GEMM_SMALL_WEIGHT_FROM_M
    assert not _int8.gemm_rule(small - 1, 128, 256, 132) and _int8.gemm_rule(small, 128, 256, 132)
    assert _int8.gemm_rule(_int8.GEMM_FROM_M, 1 << 17, 256, 132)
    assert _int8.wave_fill(4096, 3072, 132) == pytest.approx(384 / 396) and _int8.wave_fill(1, 8, 0) == 1.0
    assert _int8.gemm_tiles(4608, 3072) == 24 * 18 and _int8.gemm_tiles(1, 8) == 1


def test_int8_gemm_forced_refuses_what_it_cannot_take_and_needs_the_kernel(ops, monkeypatch):
    from quanto_kernels.ops import _int8

    fam = _int8.FAMILY
    monkeypatch.setattr(fam.gemm, "_by_device", {None: True, 0: True})
    x = torch.zeros(600, 256, dtype=torch.bfloat16)
    for n, k in ((100, 256), (128, 40)):
        w, s = torch.zeros(n, k, dtype=torch.int8), torch.ones(n, 1, dtype=torch.bfloat16)
        with ops.force_path("gemm"), pytest.raises(ValueError, match=r"^force_path\('gemm'\): the int8 GEMM kernel "
                                                                rf"needs N % 8 == 0 and K % 16 == 0; got N={n}, K={k}"):
            _int8.matmul(x[:, :k], w, s, n, k)
    with ops.force_path("gemm"):
        assert fam.use_gemm(1, 0, 8, 16)  # forced: every shape it takes, any M
        assert not fam.use_tc(600, 0, 8192, 4096)
    with ops.force_path("tc"):
        assert not fam.use_gemm(600, 0, 8192, 4096)
    monkeypatch.setattr(fam.gemm, "_by_device", {0: False})
    assert not fam.use_gemm(600, 0, 8192, 4096)  # a GPU without the kernel: never chosen
    with ops.force_path("gemm"), pytest.raises(ValueError, match=r"force_path\('gemm'\): the int8 family has no"):
        fam.use_gemm(600, 0, 8192, 4096)
    fp8 = ops.GEMM_FAMILIES["fp8_marlin"]
    with ops.force_path("gemm"):
        assert fp8.use_gemv(1)  # families without the kernel keep their own rule under "gemm"


def test_int8_forced_tensor_cores_refuse_what_they_cannot_take(ops, monkeypatch):
    from quanto_kernels.ops import _int8

    monkeypatch.setattr(_int8.FAMILY.tc, "_by_device", {None: True})
    x = torch.zeros(64, 256, dtype=torch.bfloat16)
    for n, k in ((100, 256), (128, 40)):
        w, s = torch.zeros(n, k, dtype=torch.int8), torch.ones(n, 1, dtype=torch.bfloat16)
        with ops.force_path("tc"), pytest.raises(ValueError, match=r"^force_path\('tc'\): the int8 tensor-core kernel "
                                                              rf"needs N % 64 == 0 and K % 16 == 0; got N={n}, K={k}"):
            _int8.matmul(x[:, :k], w, s, n, k)


class _Family:
    """The part of a GemmFamily that gemv_or_dequant asks: which path serves M rows."""

    def __init__(self, tc: bool, gemv: bool):
        self.tc, self.gemv = tc, gemv

    def use_tc(self, m, device_index, n, k):
        return self.tc

    def use_gemv(self, m):
        return self.gemv


def test_kernel_epilogues_take_the_bias_they_can_read():
    """c.with_bias through c.gemv_or_dequant: a bias of the activations' dtype, dense, with N values, goes to
    the tensor-core kernel's or (where the family says it takes one) the GEMV kernel's epilogue; any other
    bias is added to the kernel's output afterwards; the tensor-core kernel gets an aligned copy of a
    misaligned activation."""
    from quanto_kernels.ops import _common as c

    seen = []

    def tc_run(a, bias):
        seen.append(("tc", a.data_ptr() % 16, bias))
        return torch.ones(a.shape[0], 8, dtype=a.dtype)

    def gemv_run(bias=None):
        seen.append(("gemv", None, bias))
        return torch.ones(3, 8, dtype=torch.bfloat16)

    def dequant():
        raise AssertionError("the dequantize path must not run here")

    a = sp.misaligned(torch.randn(3, 16, dtype=torch.bfloat16))
    own = torch.full((8,), 2.0, dtype=torch.bfloat16)
    others = (own.float(), torch.full((16,), 2.0, dtype=torch.bfloat16)[::2])
    ones, threes = torch.ones(3, 8, dtype=torch.bfloat16), torch.full((3, 8), 3.0, dtype=torch.bfloat16)
    tc, gemv = _Family(True, False), _Family(False, True)
    # tensor-core kernel
    out = c.gemv_or_dequant(tc, a, None, dequant, own, tc=(8, 16, tc_run))
    assert seen[-1] == ("tc", 0, own) and torch.equal(out, ones)
    for other in others:
        out = c.gemv_or_dequant(tc, a, None, dequant, other, tc=(8, 16, tc_run))
        assert seen[-1][2] is None and torch.equal(out, threes)
    out = c.gemv_or_dequant(tc, a, None, dequant, None, tc=(8, 16, tc_run))
    assert seen[-1][2] is None and torch.equal(out, ones)
    # GEMV with a bias epilogue
    out = c.gemv_or_dequant(gemv, a, gemv_run, dequant, own, gemv_bias_n=8)
    assert seen[-1] == ("gemv", None, own) and torch.equal(out, ones)
    for other in others:
        out = c.gemv_or_dequant(gemv, a, gemv_run, dequant, other, gemv_bias_n=8)
        assert seen[-1] == ("gemv", None, None) and torch.equal(out, threes)
    # the GEMM kernel's epilogue reads 16-byte vectors: a bias starting off a 16-byte boundary goes to torch
    gemm_fam = _Family(False, False)
    gemm_fam.use_gemm = lambda m, d, n, k: True

    def gemm_run(a, bias):
        seen.append(("gemm", a.data_ptr() % 16, bias))
        return torch.ones(a.shape[0], 8, dtype=a.dtype)

    out = c.gemv_or_dequant(gemm_fam, a, None, dequant, own, gemm=(8, 16, gemm_run))
    assert seen[-1] == ("gemm", 0, own) and torch.equal(out, ones)
    mis = sp.misaligned(own)
    out = c.gemv_or_dequant(gemm_fam, a, None, dequant, mis, gemm=(8, 16, gemm_run))
    assert seen[-1] == ("gemm", 0, None) and torch.equal(out, threes)
    # GEMV without one (the int4 families): called without a bias, torch adds it
    out = c.gemv_or_dequant(gemv, a, gemv_run, dequant, own)
    assert seen[-1] == ("gemv", None, None) and torch.equal(out, threes)


def test_workspace_query_is_cached_per_shape(ops, monkeypatch):
    from quanto_kernels._native import abi

    fam = ops.GEMM_FAMILIES["awq_int4"]
    asked = []
    monkeypatch.setattr(abi, "awq_int4_gemv_workspace_bytes", lambda **kw: asked.append(kw) or 4096)
    fam.workspace_bytes.cache_clear()
    try:
        for _ in range(3):
            assert fam.workspace_bytes(m=3, n=128, k=256, group_size=128, device=0) == 4096
        assert fam.workspace_bytes(m=4, n=128, k=256, group_size=128, device=0) == 4096
        assert len(asked) == 2
    finally:
        fam.workspace_bytes.cache_clear()


def test_a_cached_workspace_size_the_library_refuses_is_asked_again(ops, monkeypatch):
    """The library re-plans at every launch and reads test overrides (QK_FP8_GEMV_BLOCKS_PER_SM, ...) there,
    so a size cached before an override changed can be short: the launch is refused (ValueError, as the
    library's size check raises), the size asked again and the launch retried once with a new workspace."""
    from quanto_kernels._native import abi
    from quanto_kernels.ops import _common as c

    need = {"bytes": 4000}
    monkeypatch.setattr(abi, "fp8_marlin_gemv_workspace_bytes", lambda **kw: need["bytes"])
    sizes = ops.GEMM_FAMILIES["fp8_marlin"].workspace_bytes
    sizes.cache_clear()
    launches = []

    def launch(ws, nbytes):
        launches.append((ws is not None, nbytes))
        if nbytes < need["bytes"]:
            raise ValueError("workspace: too small")

    try:
        key = (1, 128, 256, 0)
        t = torch.empty(0)
        c.launch_sized(sizes, key, t, launch)
        need["bytes"] = 8000  # an override now asks for more
        c.launch_sized(sizes, key, t, launch)
        assert launches == [(True, 4000), (True, 4000), (True, 8000)]
        assert sizes(1, 128, 256, 0) == sizes(m=1, n=128, k=256, device=0) == 8000
        need["bytes"] = 0  # a smaller need keeps the cached, larger size: the library accepts it
        c.launch_sized(sizes, key, t, launch)
        assert launches[-1] == (True, 8000)
    finally:
        sizes.cache_clear()


def test_a_launch_error_that_is_not_the_size_is_raised(ops, monkeypatch):
    from quanto_kernels._native import abi
    from quanto_kernels.ops import _common as c

    monkeypatch.setattr(abi, "fp8_marlin_gemv_workspace_bytes", lambda **kw: 0)
    sizes = ops.GEMM_FAMILIES["fp8_marlin"].workspace_bytes
    sizes.cache_clear()
    calls = []

    def launch(ws, nbytes):
        calls.append(nbytes)
        raise ValueError("a: must be 16-byte aligned")

    try:
        with pytest.raises(ValueError, match="16-byte aligned"):
            c.launch_sized(sizes, (1, 128, 256, 0), torch.empty(0), launch)
        assert calls == [0]  # asked again, the same size: not retried
    finally:
        sizes.cache_clear()


GPU = [pytest.mark.gpu, sp.requires_gpu]


@pytest.mark.parametrize("path", ["gemv", "dequant"])
@pytest.mark.parametrize("fmt", ["fp8", "awq", "marlin"])
@pytest.mark.parametrize("m", [1, 5, 16])
@pytest.mark.gpu
@sp.requires_gpu
def test_every_path_at_every_small_m(ops, native_calls, fmt, path, m):
    """Both paths give the fp64 reference's result at the same M, and the forced path is the one launched."""
    k, n = 512, 256
    g = sp.generator("dispatch", fmt, path, m)
    if fmt == "fp8":
        codes, s, packed, s_perm = sp.fp8_weight(k, n, torch.float16, g)
        x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.float16)
        call, ref = (lambda: ops.fp8_marlin_gemm(x, packed, s_perm)), sp.fp8_dequant_reference(codes, s)
        fused = "fp8_marlin_gemv"
    elif fmt == "awq":
        codes, s, z, packed = sp.awq_weight(k, n, g)
        x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.float16)
        call, ref = (lambda: ops.awq_int4_gemm(x, packed, s, z)), sp.int4_dequant_reference(codes, s, z)
        fused = "awq_int4_gemv"
    else:
        codes, s, z, packed = sp.mi4_weight(k, n, g)
        x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.float16)
        sp_, zp = sp.permute_block64(s), sp.permute_block64(z)
        call = lambda: ops.marlin_int4_gemm(x, packed, sp_, zp, ops.SCALE_PERM_BLOCK64)  # noqa: E731
        ref, fused = sp.int4_dequant_reference(codes, s, z), "marlin_int4_gemv"
    with ops.force_path(path):
        native_calls.clear()
        out = call()
    sp.assert_gemm_close(out, sp.matmul_reference(x, ref), torch.float16, f"{fmt} M={m} via {path}")
    assert (fused in native_calls.names) == (path == "gemv"), native_calls.names


@pytest.mark.gpu
@sp.requires_gpu
def test_forced_gemv_above_the_limit_is_a_clear_error(ops):
    limit = ops.GEMM_FAMILIES["awq_int4"].max_gemv_m
    g = sp.generator("dispatch-over")
    _, s, z, packed = sp.awq_weight(256, 128, g)
    x = torch.randn(limit + 1, 256, generator=g, device="cuda", dtype=torch.float16)
    with ops.force_path("gemv"), pytest.raises(ValueError, match="exceed the awq_int4 fused kernel's limit"):
        ops.awq_int4_gemm(x, packed, s, z)
    torch.cuda.synchronize()


def test_tensor_core_workspace_size_is_planned_once_per_shape(ops, monkeypatch):
    from quanto_kernels.ops import _common as c

    calls = []
    fake = c.TensorCoreKernel(available="unused", max_m="unused", workspace="fake_ws", from_m=1, to_m=8)

    def query(m, n, k, device):
        calls.append((m, n, k, device))
        return 4096

    monkeypatch.setattr(c, "abi", type("FakeAbi", (), {"fake_ws": staticmethod(query)}))
    assert fake.workspace_bytes(64, 256, 4096, 0) == 4096
    assert fake.workspace_bytes(64, 256, 4096, 0) == 4096
    assert fake.workspace_bytes(m=64, n=256, k=4096, device=0) == 4096
    assert calls == [(64, 256, 4096, 0)]
    assert fake.workspace_bytes(65, 256, 4096, 0) == 4096 and len(calls) == 2
