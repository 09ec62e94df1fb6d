"""Bad inputs of the arguments only quanto's positional bindings have (sizes, workspace, C_out);
their tensor arguments are covered with each op family's module (machinery in _table.py)."""

from bad_inputs._table import (  # noqa: F401
    test_binding_c_out_on_cpu_is_refused,
    test_binding_only_arguments,
    test_binding_workspace_is_never_used,
)
