"""Bad inputs of ``quanto_kernels::marlin_int4_dequantize`` and ``::marlin_int4_gemm`` (every front end;
machinery in _table.py)."""

from bad_inputs._table import GpuBadInputs, family_tests, quick_tests

(test_bad_argument_is_refused_naming_it, test_zero_size_returns_an_empty_result,
 test_huge_m_is_not_refused_by_the_checks) = family_tests(["marlin_int4_dequantize", "marlin_int4_gemm"])

test_bad_arguments_through_the_dispatcher = quick_tests(["marlin_int4_dequantize", "marlin_int4_gemm"])


class TestCudaOnly:
    pytestmark = GpuBadInputs.pytestmark
    test_marlin = GpuBadInputs.test_marlin
