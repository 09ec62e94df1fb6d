"""``python -m quanto_kernels``: diagnostics, then (on a GPU) a self-check against quanto itself."""

import sys

from ._diagnostics import main

sys.exit(main(sys.argv[1:]))
