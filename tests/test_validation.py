"""Python-side argument validation and fake (meta) implementations; CPU only."""

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


CASES = [
    # (op, args, exception, message fragment)
    ("unpack", (torch.zeros(4, dtype=i32), 4), TypeError, "t: expected dtype torch.uint8"),
    ("unpack", (torch.zeros(4, dtype=u8), 3), ValueError, "bits: must be one of"),
    ("unpack", (torch.zeros(4, dtype=u8), 4.0), RuntimeError, "argument 'bits'"),  # torch's schema check
    ("unpack", (torch.zeros(4, dtype=u8), 4), ValueError, "t: expected a CUDA tensor"),
    ("marlin_repack", (torch.zeros(16, 64, dtype=i32), torch.empty(0, dtype=i32), 128, 64, 8), ValueError,
     "b_q_weight: expected shape (32, 64)"),
    ("marlin_repack", (torch.zeros(32, 64, dtype=i32), torch.empty(0, dtype=i32), 128, 64, 5), ValueError,
     "num_bits: must be one of"),
    ("marlin_repack", (torch.zeros(8, 64, dtype=i32), torch.empty(0, dtype=i32), 40, 64, 8), ValueError,
     "size_k: must be a multiple of 16"),
    ("marlin_repack", (torch.zeros(32, 64, dtype=i32), torch.zeros(5, dtype=i32), 128, 64, 8), ValueError,
     "perm: must be empty or have size_k"),
    ("marlin_repack", (torch.zeros(32, 64, dtype=i32), torch.zeros(128, dtype=torch.int64), 128, 64, 8), TypeError,
     "perm: expected dtype torch.int32"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(4, 256)), TypeError, "a: expected dtype"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(4, 255).half()), ValueError, "a: expected K=256"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(2, 4, 256).half()), ValueError, "a: expected a 2-D"),
    ("fp8_marlin_gemm", replace(fp8_args(), 1, torch.zeros(16, 100, dtype=i32)), ValueError,
     "b_q_weight: expected the (K/16, 4N)"),
    ("fp8_marlin_gemm", replace(fp8_args(), 1, torch.zeros(16, 512, dtype=i16)), TypeError,
     "b_q_weight: expected dtype torch.int32"),
    ("fp8_marlin_gemm", replace(fp8_args(), 2, torch.rand(1, 64).half()), ValueError, "b_scales: expected N=128"),
    ("fp8_marlin_gemm", replace(fp8_args(), 2, torch.rand(1, 128).bfloat16()), TypeError,
     "b_scales: dtype torch.bfloat16 must match"),
    ("fp8_marlin_gemm", replace(fp8_args(), 0, torch.randn(256, 4).half().t()), ValueError, "a: must be contiguous"),
    ("fp8_marlin_gemm", fp8_args(), ValueError, "a: expected a CUDA tensor"),
    ("fp8_marlin_dequantize", (torch.zeros(16, 512, dtype=i32), torch.rand(1, 128)), TypeError,
     "b_scales: expected dtype"),
    ("awq_int4_gemm", replace(awq_args(), 0, torch.randn(4, 256).bfloat16()), TypeError, "input: expected dtype"),
    ("awq_int4_gemm", replace(awq_args(), 1, torch.zeros(32, 256, dtype=i32)), TypeError, "packed: expected dtype"),
    ("awq_int4_gemm", replace(awq_args(), 1, torch.zeros(32, 200, dtype=i16)), ValueError, "packed: expected the (N/4, K)"),
    ("awq_int4_gemm", replace(awq_args(), 2, torch.rand(2, 64).half()), ValueError, "scales: expected shape"),
    ("awq_int4_gemm", replace(awq_args(), 3, torch.rand(1, 128).half()), ValueError, "zeros: expected shape"),
    ("awq_int4_gemm", replace(awq_args(), 2, torch.rand(3, 128).half()), ValueError, "scales: 3 groups do not divide"),
    ("awq_int4_gemm", replace(awq_args(), 2, torch.rand(16, 128).half()), ValueError, "must be a multiple of 32"),
    ("awq_int4_gemm", replace(awq_args(), 0, torch.randn(4, 128).half()), ValueError, "input: expected last dimension"),
    ("awq_int4_gemm", awq_args(), ValueError, "input: expected a CUDA tensor"),
    ("awq_int4_dequantize", awq_args()[1:], ValueError, "packed: expected a CUDA tensor"),
    ("marlin_int4_gemm", replace(marlin_args(), 4, 7), ValueError, "scale_perm: must be one of"),
    ("marlin_int4_gemm", replace(marlin_args(), 1, torch.zeros(16, 100, dtype=i32)), ValueError,
     "packed: expected the (K/16, 2N)"),
    ("marlin_int4_gemm", replace(marlin_args(), 2, torch.rand(2, 128)), TypeError, "scales: expected dtype"),
    ("marlin_int4_gemm", marlin_args(), ValueError, "input: expected a CUDA tensor"),
    ("marlin_int4_dequantize", marlin_args()[1:], ValueError, "packed: expected a CUDA tensor"),
]


@pytest.mark.parametrize("op, args, exc, fragment", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_arguments_raise_naming_the_argument(op, args, exc, fragment):
    with pytest.raises(exc) as info:
        getattr(ops, op)(*args)
    assert fragment in str(info.value)


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


def test_cpu_unpack_in_torch_matches_spec_examples():
    from quanto_kernels._quanto_bindings import unpack_in_torch

    assert unpack_in_torch(torch.tensor([0xF3, 0x97, 0x01], dtype=u8), 4).tolist() == [3, 7, 1, 15, 9, 0]
    assert unpack_in_torch(torch.tensor([221, 34], dtype=u8), 2).tolist() == [1, 2, 3, 0, 1, 2, 3, 0]
    two_d = torch.randint(0, 256, (3, 5), dtype=u8)
    out = unpack_in_torch(two_d, 4)
    assert out.shape == (6, 5) and torch.equal(out[:3], two_d & 15) and torch.equal(out[3:], two_d >> 4)
