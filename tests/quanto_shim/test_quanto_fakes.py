"""Fake impls of quanto's CUDA-only ops (quanto_kernels.quanto.fakes), for torch.compile; CPU only.

Runs in a fresh interpreter (registrations are process-global): quanto's op definitions are imported
the way the shim imports them where quanto does not (no compilation), the fakes are registered, and
meta-tensor calls must give the shapes and dtypes of the real (served) outputs. A second call
registers nothing. The GPU side (torch.compile of a quanto Linear) is in test_gpu_graphs.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("optimum.quanto")

CHILD = r"""
import importlib, json
import torch
import optimum.quanto  # noqa: F401
importlib.import_module("optimum.quanto.library.extensions.cuda")  # defines the ops; compiles nothing
from quanto_kernels.quanto import fakes as qf
import quanto_kernels.ops  # noqa: F401  (registers torch.ops.quanto_kernels.*)

facts = {"first": qf.register_quanto_fakes(), "second": qf.register_quanto_fakes()}
m = lambda *shape, dtype=torch.float16: torch.empty(*shape, dtype=dtype, device="meta")
i32, i16, bf16 = torch.int32, torch.int16, torch.bfloat16
out = torch.ops.quanto.gemm_f16f8_marlin(m(3, 256, dtype=bf16), m(16, 512, dtype=i32), m(1, 128, dtype=bf16),
                                         m(32, dtype=i32), 8, 3, 128, 256)
ref = torch.ops.quanto_kernels.fp8_marlin_gemm(m(3, 256, dtype=bf16), m(16, 512, dtype=i32), m(1, 128, dtype=bf16))
facts["fp8"] = [list(out.shape), str(out.dtype), list(ref.shape), str(ref.dtype)]
out = torch.ops.quanto.gemm_f16i4_awq(m(2, 3, 256), m(32, 256, dtype=i16), m(2, 128), m(2, 128), 6, 128, 256, 4, 128)
ref = torch.ops.quanto_kernels.awq_int4_gemm(m(2, 3, 256), m(32, 256, dtype=i16), m(2, 128), m(2, 128))
facts["awq"] = [list(out.shape), str(out.dtype), list(ref.shape), str(ref.dtype)]
out = torch.ops.quanto.gemm_f16i4_marlin(m(2, 3, 256), m(16, 256, dtype=i32), m(2, 128), m(2, 128), m(16, dtype=i32))
ref = torch.ops.quanto_kernels.marlin_int4_gemm(m(2, 3, 256), m(16, 256, dtype=i32), m(2, 128), m(2, 128), 2)
facts["marlin"] = [list(out.shape), str(out.dtype), list(ref.shape), str(ref.dtype)]
for bits, rows in ((8, 64), (4, 32)):
    out = torch.ops.quanto.pack_fp8_marlin(m(rows, 128, dtype=i32), m(0, dtype=i32), 256, 128, bits)
    ref = torch.ops.quanto_kernels.marlin_repack(m(rows, 128, dtype=i32), m(0, dtype=i32), 256, 128, bits)
    facts[f"pack{bits}"] = [list(out.shape), str(out.dtype), list(ref.shape), str(ref.dtype)]
from torch._subclasses.fake_tensor import FakeTensorMode
with FakeTensorMode():
    out = torch.ops.quanto.gemm_f16f8_marlin(torch.empty(5, 256, dtype=torch.float16), torch.empty(16, 512, dtype=i32),
                                             torch.empty(1, 128, dtype=torch.float16), torch.empty(32, dtype=i32),
                                             8, 5, 128, 256)
    facts["fake_mode"] = list(out.shape)
print("FAKES" + json.dumps(facts))
"""


def test_fakes_register_once_and_match_the_served_outputs(subprocess_env):
    # The shim registers these fakes itself when it patches quanto (on a GPU machine); opt out so the
    # child sees register_quanto_fakes() do the first registration.
    subprocess_env["QUANTO_KERNELS_DISABLE"] = "1"
    proc = subprocess.run([sys.executable, "-c", CHILD], env=subprocess_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("FAKES"))[len("FAKES"):])
    assert sorted(facts["first"]) == sorted(["quanto::gemm_f16f8_marlin", "quanto::gemm_f16i4_awq",
                                             "quanto::gemm_f16i4_marlin", "quanto::pack_fp8_marlin"])
    assert facts["second"] == []
    for key in ("fp8", "awq", "marlin", "pack8", "pack4"):
        shape, dtype, ref_shape, ref_dtype = facts[key]
        assert (shape, dtype) == (ref_shape, ref_dtype), f"{key}: fake gives {shape} {dtype}, served op {ref_shape} {ref_dtype}"
    assert facts["fp8"][0] == [3, 128] and facts["fp8"][1] == "torch.bfloat16"
    assert facts["awq"][0] == [2, 3, 128] and facts["marlin"][0] == [2, 3, 128]
    assert facts["fake_mode"] == [5, 128]


def test_registration_is_a_no_op_without_quanto_ops(subprocess_env):
    """Before quanto's CUDA ops exist (e.g. quanto not imported) nothing is registered and nothing raises."""
    code = ("from quanto_kernels.quanto import fakes as qf; import json; "
            "print('FAKES' + json.dumps(qf.register_quanto_fakes()))")
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("FAKES"))
    assert json.loads(line[len("FAKES"):]) == []
