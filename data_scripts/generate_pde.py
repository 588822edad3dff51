#!/usr/bin/env python
"""Generate small PDEBench-format datasets offline (seconds on a CPU).

    python data_scripts/generate_pde.py --task advection1d --out data/
    python data_scripts/generate_pde.py --task all --n-samples 512 --resolution 128

Writes ``<out>/pdebench/gen_<PDEBench file name>`` with the real file's HDF5 keys and layout,
which ``crossmodal run --task Advection1D ...`` then loads, and records its sha256 (with the
command that regenerates it) in ``<out>/.checksums.json``: every later load checks it. Tasks: advection1d, burgers1d,
diffreact1d, diffsorp1d, darcy2d, diffreact2d (or all). Same as ``crossmodal data generate``.
"""

from __future__ import annotations

import sys

import _kit  # noqa: F401  (puts lib/ on the path in a bare checkout)

from crossmodal.data.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["generate", *sys.argv[1:]], prog="generate_pde.py"))
