"""Bad inputs of ``quanto_kernels::marlin_repack`` (every front end; machinery in _table.py)."""

from bad_inputs._table import GpuBadInputs, family_tests, quick_tests
from bad_inputs._table import test_empty_perm_is_accepted_on_any_device  # noqa: F401

test_bad_argument_is_refused_naming_it, _, _ = family_tests(["marlin_repack"])

test_bad_arguments_through_the_dispatcher = quick_tests(["marlin_repack"])


class TestCudaOnly:
    pytestmark = GpuBadInputs.pytestmark
    test_marlin_repack = GpuBadInputs.test_marlin_repack
