"""Experiment tracking of a training run through Accelerate's trackers (``--log-with``).

``fit`` logs, at every optimiser step, ``train/loss`` (the batch's loss) and ``train/lr``
(the learning rate used for that step), and after every epoch ``epoch/train_loss``,
``epoch/test_metric``, ``epoch/lr`` and ``epoch/seconds``, all at the global optimiser step
``epoch * steps_per_epoch + step`` (so a resumed run continues the same curves). The files
go to ``<out>/logs/``:

* ``tensorboard`` (the default of the kit, pinned): offline event files, read with
  ``tensorboard --logdir <out>/logs`` or tensorboard's ``EventAccumulator``;
* ``wandb``: runs offline unless ``WANDB_MODE`` is set (``wandb sync`` uploads later);
* ``mlflow``: the tracking URI of ``MLFLOW_TRACKING_URI`` (default ``./mlruns``).

wandb and mlflow are not dependencies of the kit: they are used only when installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crossmodal.errors import InvalidInputError, unknown_name

TRACKERS = ("tensorboard", "wandb", "mlflow")
#: The PyPI package that provides each tracker.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
PROJECT = "crossmodal"


def check_tracker(name: str) -> str:
    """``name`` if it is a tracker whose package is installed; else a clear error."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    if name not in TRACKERS:
        raise unknown_name("tracker (--log-with)", name, TRACKERS)
    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                 "mlflow": is_mlflow_available}[name]()
    if not available:
        pkg = TRACKER_PACKAGES[name]
        raise InvalidInputError(
            f"--log-with {name} needs the {pkg!r} package, which is not installed in this "
            f"environment: `pip install {pkg}` (not a pinned dependency of the kit), or use "
            "--log-with tensorboard (pinned; offline event files)")
    return name


def project_config(out: str | Path | None, log_with: str | None):
    """Accelerate's ``ProjectConfiguration`` of a run folder (None without tracking)."""
    if not log_with:
        return None
    if out is None:
        raise InvalidInputError(f"--log-with {log_with} needs an output folder for its logs "
                                "(give --out)")
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(project_dir=str(out), logging_dir=str(Path(out) / "logs"))


def start(accelerator, log_with: str, config: dict[str, Any], out: str | Path,
          run_name: str) -> None:
    """``accelerator.init_trackers`` with the run's flat config (None values as text)."""
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
               for k, v in config.items()}
    init_kwargs: dict[str, Any] = {}
    if log_with == "wandb":
        init_kwargs["wandb"] = {"name": run_name, "dir": str(out),
                                "mode": os.environ.get("WANDB_MODE", "offline")}
    elif log_with == "mlflow":
        init_kwargs["mlflow"] = {"run_name": run_name}
    accelerator.init_trackers(PROJECT, config=hparams, init_kwargs=init_kwargs)
