"""Start-up cost a user sees: import of torch, of quanto_kernels + optimum.quanto, then quantizing a
layer and its first matmul (with QUANTO_KERNELS_DISABLE=1 this includes quanto's JIT build).
Prints one JSON line; run in a fresh process."""

import json
import time

t0 = time.perf_counter()
import torch  # noqa: E402

torch.cuda.init()
t1 = time.perf_counter()
import quanto_kernels  # noqa: E402

t1b = time.perf_counter()
from optimum.quanto import freeze, qfloat8, quantize  # noqa: E402

t2 = time.perf_counter()
model = torch.nn.Sequential(torch.nn.Linear(4096, 4096, device="cuda", dtype=torch.bfloat16))
x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
t3 = time.perf_counter()
quantize(model, weights=qfloat8)
freeze(model)
with torch.no_grad():
    model(x)
torch.cuda.synchronize()
t4 = time.perf_counter()
print(json.dumps({"patched": quanto_kernels.quanto_status()["patched"], "import_torch_s": t1 - t0,
                  "import_quanto_kernels_and_quanto_s": t2 - t1, "import_quanto_kernels_s": t1b - t1,
                  "import_quanto_s": t2 - t1b, "quantize_and_first_matmul_s": t4 - t3,
                  "import_plus_first_matmul_s": (t2 - t1) + (t4 - t3),
                  "quanto_kernels_import_plus_first_matmul_s": (t1b - t1) + (t4 - t3),
                  "weight_class": type(model[0].weight).__name__}))
