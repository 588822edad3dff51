"""The 8 PDEBench tasks of PaRe Table 9 (metric nRMSE) at ORCA's training resolutions.

1024 points in 1D and 128x128 in 2D (the files' and PaRe Table 9's), except where ORCA's
loader subsamples: Advection 256 and Darcy 2D 64x64 (:data:`ORCA_RESOLUTION`).

Data comes from ``crossmodal data download <TASK>`` (the real PDEBench files) or, for the
equations the kit can solve, ``python data_scripts/generate_pde.py --task ...`` (small
generated files in the same HDF5 layout); the loaders live in :mod:`crossmodal.data.pdebench`.
The task maps the initial state to the state at the final time (ORCA's convention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.data.pdebench import load_pdebench
from crossmodal.tasks.registry import Splits, TaskSpec, register_task

#: ORCA's training resolution where it is not the file's (``src/data_loaders.py:load_pde``:
#: ``reduced_resolution = 4`` for ADV, 1024 -> 256; ``2`` for Darcy, 128x128 -> 64x64, as in
#: ``src/task_configs.py:get_config`` sample_shape (1, 1, 256) / (1, 1, 64, 64)). PaRe Table 9
#: and RECRAFT Table 10 state the files' 1024 / 128x128; the kit follows the code that ran.
ORCA_RESOLUTION = {"Advection1D": 256, "DarcyFlow2D": 64}


def reduce_to_orca(key: str, splits: Splits) -> Splits:
    """Stride a task's arrays down to :data:`ORCA_RESOLUTION` (ORCA's ``::reduced_resolution``).

    Files whose spatial size is not a multiple of ORCA's above it (small generated files)
    are returned unchanged; the runner builds the model for the size it is fed.
    """
    target = ORCA_RESOLUTION.get(key)
    if target is None:
        return splits
    out = {}
    for name, (x, y) in splits.items():
        native = x.shape[-1]
        if native <= target or native % target:
            return splits
        s = native // target
        idx = (Ellipsis, slice(None, None, s)) if x.ndim == 3 else (
            Ellipsis, slice(None, None, s), slice(None, None, s))
        out[name] = (np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx]))
    return out


def _loader(key: str):
    def load(root: Path) -> Splits:
        return reduce_to_orca(key, load_pdebench(key, root))

    return load


# key, modality, channels, spatial shape (ORCA's training resolution), data size as in PaRe
# Table 9 (parameter file)
_TASKS = [
    ("Advection1D", "1D", 1, (256,), "10K (beta=0.4)"),
    ("Burgers1D", "1D", 1, (1024,), "10K (nu=1.0)"),
    ("DiffusionReaction1D", "1D", 1, (1024,), "10K (nu=0.5, rho=1.0)"),
    ("DiffusionSorption1D", "1D", 1, (1024,), "10K"),
    ("NavierStokes1D", "1D", 3, (1024,), "10K (eta=zeta=0.1)"),
    ("DarcyFlow2D", "2D", 1, (64, 64), "10K (beta=0.1)"),
    ("ShallowWater2D", "2D", 1, (128, 128), "1K"),
    ("DiffusionReaction2D", "2D", 2, (128, 128), "1K"),
]

#: ORCA's training loss per task (``src/task_configs.py:get_config``): ``rmse_loss`` for
#: Burgers and 1D CFD (Navier-Stokes 1D), ``nrmse_loss`` for every other PDE task.
LOSSES = {"Burgers1D": "rmse", "NavierStokes1D": "rmse"}

for key, modality, channels, spatial, size in _TASKS:
    register_task(
        TaskSpec(
            key=key,
            benchmark="PDEBench",
            modality=modality,
            input_shape=(channels, *spatial),
            output="dense",
            num_outputs=channels,
            output_shape=(channels, *spatial),
            loss=LOSSES.get(key, "nrmse"),
            metric="nrmse",
            lower_is_better=True,
            paper_data_size=size,
            source="PDEBench (Takamoto et al. 2022), DaRUS",
            loader=_loader(key),
            patch_size=4 if modality == "1D" else 8,
            image_size=spatial[-1] if modality == "2D" else None,
            continuous_labels=True,
        )
    )
