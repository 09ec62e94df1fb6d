"""Host time of the dispatcher wrapper around an op, by how the op is registered (CPU only, no GPU needed).

The same trivial function (it returns a new empty tensor) is called directly, as a ``torch.library.custom_op``
and as an op registered by ``quanto_kernels.ops._registration.define`` (what the package's ops use), with
grad mode on and off; the difference to the direct call is what every call of a ``torch.ops.quanto_kernels``
op pays on the host, e.g. once per layer inside a graph compiled by torch.compile.

    python benchmarks/op_dispatch_cost.py [--rounds 9] [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import torch


def _direct(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor,
            bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    return x.new_empty(0)


def _for_custom_op(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor,
                   bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    return x.new_empty(0)


def _for_registration(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor,
                      bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    return x.new_empty(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()

    from quanto_kernels.ops import _registration

    torch.library.custom_op("qk_dispatch_bench::as_custom_op", _for_custom_op, mutates_args=())
    _registration.define("_dispatch_bench", _for_registration)
    x, w, s = torch.randn(4, 8), torch.randn(8, 8), torch.randn(8)
    cases = {
        "function called directly": lambda: _direct(x, w, s),
        "torch.library.custom_op": lambda: torch.ops.qk_dispatch_bench.as_custom_op.default(x, w, s),
        "ops/_registration.define": lambda: torch.ops.quanto_kernels._dispatch_bench.default(x, w, s),
    }
    for mode in ("no_grad", "grad"):
        with torch.no_grad() if mode == "no_grad" else torch.enable_grad():
            for name, fn in cases.items():
                times = []
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    for _ in range(args.calls):
                        fn()
                    times.append((time.perf_counter() - t0) / args.calls * 1e6)
                print(f"RESULT {mode:8s} {name:28s} median {statistics.median(times):6.2f} us  min {min(times):6.2f}")


if __name__ == "__main__":
    main()
