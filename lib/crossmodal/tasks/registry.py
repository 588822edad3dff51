"""The task registry: one :class:`TaskSpec` per task, looked up by the keys the papers' tables use.

Keys are spelled as in ``crossmodal/paper_results/*.csv`` (``CIFAR100``, ``DarcyFlow``,
``Advection1D``, ...). Smoke tasks exist offline and have lower-case keys prefixed ``smoke_``.

Shapes follow ORCA's task configurations. Where the PaRe/RECRAFT task tables disagree with
ORCA's code (their "Loss" column is shifted by one row, inconsistency 8 in the paper_results
README), the registry follows ORCA's code (``src/task_configs.py:get_config``): NinaPro uses
the focal loss (alpha 1, i.e. cross-entropy), FSD50K binary cross-entropy with pos_weight 10,
DeepSEA with pos_weight 4, DarcyFlow relative L2, PSICOV MSE, Cosmic binary cross-entropy,
and the PDEBench tasks nRMSE (RMSE for Burgers and Navier-Stokes 1D).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.errors import unknown_name
from crossmodal.validation import validate_split as _validate

#: ``{"train": (x, y), "test": (x, y)}`` with numpy arrays; x is (n, C, L) or (n, C, H, W).
Splits = dict[str, tuple[np.ndarray, np.ndarray]]

#: Output types and what ``num_outputs`` means for each.
OUTPUT_TYPES = ("classification", "multilabel", "dense")


@dataclass(frozen=True)
class TaskSpec:
    """Everything the kit needs to know about a task.

    Attributes
    ----------
    key : registry key, e.g. ``"CIFAR100"``.
    benchmark : ``"NAS-Bench-360"``, ``"PDEBench"`` or ``"smoke"``.
    modality : ``"1D"`` (sequences, x is (n, C, L)) or ``"2D"`` (images/fields, (n, C, H, W)).
    input_shape : per-sample input shape ``(C, L)`` or ``(C, H, W)``.
    output : one of :data:`OUTPUT_TYPES`.
    num_outputs : classes (classification), labels (multilabel) or output channels (dense).
    output_shape : per-sample target shape: ``()`` for classification, ``(K,)`` for
        multilabel, ``(C_out, L)`` or ``(C_out, H, W)`` for dense.
    loss : a name understood by :func:`crossmodal.losses.get_loss`.
    loss_options : keyword options of that loss (e.g. ``{"pos_weight": 4.0}``), bound by
        :func:`crossmodal.losses.task_loss`.
    metric : a name understood by :func:`crossmodal.metrics.get_metric`.
    lower_is_better : the metric's direction (every paper metric is an error).
    paper_data_size : the training-set size the papers state, as written.
    source : where the data comes from.
    loader : ``loader(root) -> Splits``; raises :class:`crossmodal.errors.DataMissingError`
        naming the fetch command when the files are absent.
    patch_size : default patch length (1D) or side (2D) of the ORCA embedder.
    image_size : 2D inputs are resized to this side before patchifying (ORCA's embedder).
    continuous_labels : targets are real-valued (dense/regression): alignment methods
        discretise them (k-means pseudo-labels) or use MMD.
    offline : the data is generated or bundled, so it is always present.
    target_normalizer : ``"unit_gaussian"``: the dense head predicts targets standardised per
        element with the training set's mean/std and decodes them before the loss and the
        metric (:class:`crossmodal.heads.TargetDecodedHead`; ORCA's Darcy Flow). None: the
        head predicts physical values.
    """

    key: str
    benchmark: str
    modality: str
    input_shape: tuple[int, ...]
    output: str
    num_outputs: int
    output_shape: tuple[int, ...]
    loss: str
    metric: str
    lower_is_better: bool
    paper_data_size: str
    source: str
    loader: Callable[[Path], Splits] = field(repr=False, compare=False)
    patch_size: int = 4
    image_size: int | None = None
    continuous_labels: bool = False
    offline: bool = False
    loss_options: dict = field(default_factory=dict, compare=False)
    target_normalizer: str | None = None

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_TYPES:
            raise ValueError(f"{self.key}: output {self.output!r} not in {OUTPUT_TYPES}")
        if self.modality not in ("1D", "2D"):
            raise ValueError(f"{self.key}: modality must be '1D' or '2D'")
        expected_ndim = 2 if self.modality == "1D" else 3
        if len(self.input_shape) != expected_ndim:
            raise ValueError(f"{self.key}: input_shape {self.input_shape} is not {self.modality}")

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def load(self, root: Path) -> Splits:
        """Load the task's train/test splits from ``root`` (validated)."""
        splits = self.loader(Path(root))
        for name, (x, y) in splits.items():
            validate_split(self, name, x, y)
        return splits


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (keys are unique)."""
    if spec.key in _REGISTRY:
        raise ValueError(f"task {spec.key!r} is registered twice")
    _REGISTRY[spec.key] = spec
    return spec


def get_task(key: str) -> TaskSpec:
    """Look a task up by key; unknown keys raise an error that lists the valid keys."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise unknown_name("task", key, list(_REGISTRY)) from None


def list_tasks(benchmark: str | None = None) -> list[TaskSpec]:
    """All registered tasks, optionally only those of one benchmark."""
    return [t for t in _REGISTRY.values() if benchmark is None or t.benchmark == benchmark]


def validate_split(spec: TaskSpec, name: str, x: np.ndarray, y: np.ndarray) -> None:
    """Check a split against the spec: shapes, dtypes, finite values, label range.

    The one implementation is :func:`crossmodal.validation.validate_split` (also used by
    :func:`crossmodal.runner.run` for user-supplied splits). Raises
    :class:`crossmodal.errors.InvalidInputError` saying what is wrong.
    """
    _validate(spec, name, x, y)


def spec_for_splits(spec: TaskSpec, splits: Splits) -> TaskSpec:
    """The PDEBench task spec with the spatial size of the data actually loaded.

    The registry describes the paper's files (1024 points in 1D, 128x128 in 2D); generated
    files are usually smaller (256, 32x32), and the model must be built for what it is fed.
    Other tasks, and data at the paper's size, return ``spec`` unchanged.
    """
    x, y = splits["train"]
    if spec.benchmark != "PDEBench" or tuple(x.shape[1:]) == tuple(spec.input_shape):
        return spec
    if x.shape[1] != spec.in_channels or x.ndim != len(spec.input_shape) + 1:
        return spec  # let the model's input check report the mismatch
    image_size = spec.image_size
    if spec.modality == "2D" and image_size is not None:
        image_size = min(image_size, int(x.shape[-1]))
    return dataclasses.replace(spec, input_shape=tuple(int(n) for n in x.shape[1:]),
                               output_shape=tuple(int(n) for n in y.shape[1:]),
                               image_size=image_size)
