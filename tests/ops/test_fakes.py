"""Fake (meta) implementations of the ops; CPU only. Bad arguments: tests/bad_inputs/."""

import pytest
import torch

from quanto_kernels import ops

f16, bf16, i32, i16, u8 = torch.float16, torch.bfloat16, torch.int32, torch.int16, torch.uint8


def fp8_args(m=4, n=128, k=256, dtype=f16):
    return (torch.randn(m, k).to(dtype), torch.randint(0, 99, (k // 16, 4 * n), dtype=i32), torch.rand(1, n).to(dtype))


def awq_args(m=4, n=128, k=256):
    return (torch.randn(m, k).half(), torch.randint(0, 99, (n // 4, k), dtype=i16), torch.rand(k // 128, n).half(),
            torch.rand(k // 128, n).half())


def marlin_args(m=4, n=128, k=256):
    return (torch.randn(m, k).half(), torch.randint(0, 99, (k // 16, 2 * n), dtype=i32), torch.rand(k // 128, n).half(),
            torch.rand(k // 128, n).half(), ops.SCALE_PERM_BLOCK64)


def replace(args, i, value):
    args = list(args)
    args[i] = value
    return args


def _meta(args):
    return [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("m", [0, 1, 16, 17, 300])
def test_fake_shapes(m):
    out = torch.ops.quanto_kernels.fp8_marlin_gemm(*_meta(fp8_args(m=m, dtype=bf16)))
    assert out.shape == (m, 128) and out.dtype == bf16 and out.device.type == "meta"
    a, w, s, z = _meta(awq_args(m=m))
    out = torch.ops.quanto_kernels.awq_int4_gemm(a.reshape(1, m, 256), w, s, z)
    assert out.shape == (1, m, 128) and out.dtype == f16
    out = torch.ops.quanto_kernels.marlin_int4_gemm(*_meta(marlin_args(m=m)))
    assert out.shape == (m, 128)


@pytest.mark.parametrize("dtype", [f16, bf16], ids=["fp16", "bf16"])
def test_int4_fakes_follow_the_scales_dtype(dtype):
    """The int4 ops take fp16 or bf16 (scales, zeros, input and result share it); the fakes say so."""
    a, w, s, z = _meta([t.to(dtype) if t.is_floating_point() else t for t in awq_args(m=5)])
    assert torch.ops.quanto_kernels.awq_int4_gemm(a, w, s, z).dtype == dtype
    out = torch.ops.quanto_kernels.awq_int4_dequantize(w, s, z)
    assert out.shape == (128, 256) and out.dtype == dtype
    a, w, s, z, perm = _meta([t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                              for t in marlin_args(m=5)])
    assert torch.ops.quanto_kernels.marlin_int4_gemm(a, w, s, z, perm).dtype == dtype
    out = torch.ops.quanto_kernels.marlin_int4_dequantize(w, s, z, perm)
    assert out.shape == (128, 256) and out.dtype == dtype
    other = f16 if dtype == bf16 else bf16
    a, w, s, z = _meta([t.to(dtype) if t.is_floating_point() else t for t in awq_args(m=5)])
    with pytest.raises(TypeError, match=f"input: expected dtype {dtype}"):
        torch.ops.quanto_kernels.awq_int4_gemm(a.to(other), w, s, z)


def test_fake_shapes_of_layout_ops():
    out = torch.ops.quanto_kernels.unpack(torch.empty(5, 3, dtype=u8, device="meta"), 2)
    assert out.shape == (20, 3)
    out = torch.ops.quanto_kernels.marlin_repack(torch.empty(32, 64, dtype=i32, device="meta"),
                                                 torch.empty(0, dtype=i32, device="meta"), 128, 64, 8)
    assert out.shape == (8, 256)
    out = torch.ops.quanto_kernels.marlin_repack(torch.empty(16, 64, dtype=i32, device="meta"),
                                                 torch.empty(0, dtype=i32, device="meta"), 128, 64, 4)
    assert out.shape == (8, 128)
    out = torch.ops.quanto_kernels.fp8_marlin_dequantize(*_meta(fp8_args()[1:]))
    assert out.shape == (128, 256) and out.dtype == f16


def test_fake_impl_validates_too():
    with pytest.raises(ValueError, match="a: expected K=256"):
        torch.ops.quanto_kernels.fp8_marlin_gemm(*_meta(replace(fp8_args(), 0, torch.randn(4, 128).half())))


def test_scale_perm_rule_matches_quanto():
    assert ops.marlin_int4_scale_perm(1) == ops.SCALE_PERM_BLOCK32
    assert ops.marlin_int4_scale_perm(2) == ops.SCALE_PERM_BLOCK64


def test_cpu_unpack_in_torch_matches_documented_examples():
    from quanto_kernels.quanto.bindings import unpack_in_torch

    assert unpack_in_torch(torch.tensor([0xF3, 0x97, 0x01], dtype=u8), 4).tolist() == [3, 7, 1, 15, 9, 0]
    assert unpack_in_torch(torch.tensor([221, 34], dtype=u8), 2).tolist() == [1, 2, 3, 0, 1, 2, 3, 0]
    two_d = torch.randint(0, 256, (3, 5), dtype=u8)
    out = unpack_in_torch(two_d, 4)
    assert out.shape == (6, 5) and torch.equal(out[:3], two_d & 15) and torch.equal(out[3:], two_d >> 4)


@pytest.mark.parametrize("dtype", [f16, bf16], ids=["fp16", "bf16"])
def test_int8_linear_fake_keeps_the_leading_dims_and_checks_the_bias(dtype):
    """int8_linear's fake (what torch.compile sees of quanto's qint8 linear): (..., K) -> (..., N) in x's
    dtype; a bias of another dtype or length and a K that does not match are refused, naming the argument."""
    meta = dict(device="meta")
    w, s = torch.empty(100, 96, dtype=torch.int8, **meta), torch.empty(100, 1, dtype=dtype, **meta)
    for lead in [(0,), (1,), (7,), (2, 3), (2, 1, 5)]:
        out = torch.ops.quanto_kernels.int8_linear(torch.empty(*lead, 96, dtype=dtype, **meta), w, s,
                                                   torch.empty(100, dtype=dtype, **meta))
        assert out.shape == lead + (100,) and out.dtype == dtype and out.device.type == "meta"
    x = torch.empty(4, 96, dtype=dtype, **meta)
    with pytest.raises(TypeError, match=r"^bias: "):
        torch.ops.quanto_kernels.int8_linear(x, w, s, torch.empty(100, dtype=torch.float32, **meta))
    with pytest.raises(ValueError, match=r"^bias: "):
        torch.ops.quanto_kernels.int8_linear(x, w, s, torch.empty(99, dtype=dtype, **meta))
    with pytest.raises(ValueError, match=r"^x: expected shape \(\.\.\., K=96\)"):
        torch.ops.quanto_kernels.int8_linear(torch.empty(4, 64, dtype=dtype, **meta), w, s)
    with pytest.raises(ValueError, match=r"^x: expected a CUDA tensor"):
        ops.direct.int8_linear(torch.empty(4, 96, dtype=dtype), torch.empty(100, 96, dtype=torch.int8),
                               torch.ones(100, 1, dtype=dtype))
