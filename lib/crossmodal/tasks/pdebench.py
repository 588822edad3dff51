"""The 8 PDEBench tasks of PaRe Table 9 (resolution 1024 in 1D, 128x128 in 2D; metric nRMSE).

Data comes from ``crossmodal data download <TASK>`` (the real PDEBench files) or, for the
equations the kit can solve, ``python data_scripts/generate_pde.py --task ...`` (small
generated files in the same HDF5 layout); the loaders live in :mod:`crossmodal.data.pdebench`.
The task maps the initial state to the state at the final time (ORCA's convention).
"""

from __future__ import annotations

from pathlib import Path

from crossmodal.tasks.registry import Splits, TaskSpec, register_task


def _loader(key: str):
    def load(root: Path) -> Splits:
        from crossmodal.data.pdebench import load_pdebench

        return load_pdebench(key, root)

    return load


# key, modality, channels, spatial shape, data size as in PaRe Table 9 (parameter file)
_TASKS = [
    ("Advection1D", "1D", 1, (1024,), "10K (beta=0.4)"),
    ("Burgers1D", "1D", 1, (1024,), "10K (nu=1.0)"),
    ("DiffusionReaction1D", "1D", 1, (1024,), "10K (nu=0.5, rho=1.0)"),
    ("DiffusionSorption1D", "1D", 1, (1024,), "10K"),
    ("NavierStokes1D", "1D", 3, (1024,), "10K (eta=zeta=0.1)"),
    ("DarcyFlow2D", "2D", 1, (128, 128), "10K (beta=0.1)"),
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
            image_size=128 if modality == "2D" else None,
            continuous_labels=True,
        )
    )
