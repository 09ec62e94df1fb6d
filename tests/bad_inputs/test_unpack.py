"""Bad inputs of ``quanto_kernels::unpack`` (every front end; machinery in _table.py)."""

from bad_inputs._table import GpuBadInputs, family_tests, quick_tests

test_bad_argument_is_refused_naming_it, test_zero_size_returns_an_empty_result, _ = family_tests(["unpack"])

test_bad_arguments_through_the_dispatcher = quick_tests(["unpack"])


class TestCudaOnly:
    pytestmark = GpuBadInputs.pytestmark
    test_unpack = GpuBadInputs.test_unpack
