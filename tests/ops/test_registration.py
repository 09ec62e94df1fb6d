"""How ops join ``torch.ops.quanto_kernels`` (ops/_registration.py): the schema inferred from the checked
function, one kernel for every device, the fake impl, and an autograd kernel that lets forward calls through
and makes a backward raise. CPU only: a toy op stands in for the CUDA kernels."""

from __future__ import annotations

from typing import Optional

import pytest
import torch

from quanto_kernels import ops
from quanto_kernels.ops import _registration as reg

_FAKES = []


def _toy(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    with torch.no_grad():  # like a kernel launched through ctypes: nothing recorded for autograd
        out = x @ w.t()
        return out if bias is None else out + bias


def _toy_op():
    if not hasattr(_toy_op, "op"):
        _toy_op.op = reg.define("_registration_selftest", _toy)

        @_toy_op.op.register_fake
        def _fake(x, w, bias=None):
            _FAKES.append(tuple(x.shape))
            return x.new_empty(tuple(x.shape[:-1]) + (w.shape[0],))

    return _toy_op.op


def _args(requires_grad=False):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 8, generator=g, requires_grad=requires_grad)
    return x, torch.randn(5, 8, generator=g), torch.randn(5, generator=g)


def test_every_op_has_the_schema_of_its_function():
    for name in ops.__all__:
        op = getattr(ops, name)
        if isinstance(op, reg.Op):
            fn = getattr(ops.direct, name)
            assert str(op.default._schema) == f"quanto_kernels::{name}" + torch.library.infer_schema(
                fn, mutates_args=()), name
            assert torch.Tag.pt2_compliant_tag in op.default.tags, name


def test_calls_run_the_function_with_positional_and_keyword_arguments():
    op = _toy_op()
    x, w, b = _args()
    want = x @ w.t() + b
    assert torch.equal(op(x, w, b), want) and torch.equal(op(x, w, bias=b), want)
    assert torch.equal(op.default(x, w, b), want) and torch.equal(op(x, w), x @ w.t())


def test_meta_and_fake_tensors_take_the_fake_impl():
    op = _toy_op()
    _FAKES.clear()
    x, w, b = (t.to("meta") for t in _args())
    assert op(x, w, bias=b).shape == (3, 5) and _FAKES == [(3, 8)]


def test_opcheck_passes():
    result = torch.library.opcheck(_toy_op().default, _args())
    assert all(v == "SUCCESS" for v in result.values()), result


def test_forward_with_grad_works_and_backward_raises():
    op = _toy_op()
    x, w, b = _args(requires_grad=True)
    out = op(x, w, b)
    assert out.requires_grad and torch.equal(out.detach(), (x @ w.t() + b).detach())
    with pytest.raises(RuntimeError, match=r"^quanto_kernels::_registration_selftest has no backward"):
        out.sum().backward()
    b2 = b.clone().requires_grad_()
    out = op(x.detach(), w, bias=b2)  # a keyword argument that needs a gradient counts too
    with pytest.raises(RuntimeError, match="has no backward"):
        out.sum().backward()
    with torch.no_grad():
        assert not op(x, w, b).requires_grad


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_traced_by_torch_compile_without_graph_breaks(backend):
    op = _toy_op()
    x, w, b = _args()
    torch._dynamo.reset()
    try:
        f = torch.compile(lambda t: torch.relu(op(t * 2, w, b)), backend=backend, fullgraph=True)
        assert torch.allclose(f(x), torch.relu(op(x * 2, w, b)))
    finally:
        torch._dynamo.reset()
