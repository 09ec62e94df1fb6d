"""Bad inputs of ``quanto_kernels::fp8_marlin_dequantize`` and ``::fp8_marlin_gemm`` (every front end;
machinery in _table.py)."""

from bad_inputs._table import GpuBadInputs, family_tests, quick_tests

(test_bad_argument_is_refused_naming_it, test_zero_size_returns_an_empty_result,
 test_huge_m_is_not_refused_by_the_checks) = family_tests(["fp8_marlin_dequantize", "fp8_marlin_gemm"])

test_bad_arguments_through_the_dispatcher = quick_tests(["fp8_marlin_dequantize", "fp8_marlin_gemm"])


class TestCudaOnly:
    pytestmark = GpuBadInputs.pytestmark
    test_fp8 = GpuBadInputs.test_fp8
