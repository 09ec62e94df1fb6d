import pytest
import support as sp


@pytest.fixture
def lib_calls(monkeypatch):
    """Records every C ABI call (support.NativeCalls); None where no GPU is used (nothing can be launched)."""
    if not sp.HAS_GPU:
        yield None
        return
    yield sp.NativeCalls(monkeypatch)
