import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/gpu_util.py etc.


@pytest.fixture
def subprocess_env():
    """Environment for child interpreters: same Python path, no opt-out unless a test sets it."""
    env = dict(os.environ)
    env.pop("QUANTO_KERNELS_DISABLE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
