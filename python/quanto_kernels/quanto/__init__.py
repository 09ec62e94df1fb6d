"""Everything that touches optimum-quanto.

  shim.py         patches quanto so it runs our kernels and never JIT-compiles (``import quanto_kernels``)
  bindings.py     stand-ins for quanto's ``quanto_cuda`` / ``quanto_cpp`` extension modules
  fast_linear.py  a short inference path from QLinear.forward to the kernels
  fakes.py        fake impls of quanto's CUDA-only ops, for torch.compile

Nothing here imports optimum.quanto at import time.
"""
