"""The 10 NAS-Bench-360 tasks (PaRe Table 8 / RECRAFT Table 11, shapes from ORCA's configs).

Their data is fetched by ``crossmodal data download <TASK>``; the loaders live in
:mod:`crossmodal.data.nb360`. Patch/image sizes here are for the text bodies (at most 512
positions); the Swin body uses its own 224-pixel, 4-pixel-patch embedder.
"""

from __future__ import annotations

from pathlib import Path

from crossmodal.data.nb360 import load_nb360
from crossmodal.tasks.registry import Splits, TaskSpec, register_task


def _loader(key: str):
    def load(root: Path) -> Splits:
        return load_nb360(key, root)

    return load


_NB = "NAS-Bench-360"
# Cosmic's 1-AUROC is scored on hard predictions (logit > 0), as ORCA's and NAS-Bench-360's
# evaluation code do, so that values are comparable with the papers' tables.
# key, modality, input shape, output, num_outputs, output_shape, loss, metric, size, patch, image
_TASKS = [
    ("CIFAR100", "2D", (3, 32, 32), "classification", 100, (), "cross_entropy", "error01",
     "60K", 4, 32),
    ("Spherical", "2D", (3, 60, 60), "classification", 100, (), "cross_entropy", "error01",
     "60K", 4, 64),
    ("NinaPro", "2D", (1, 16, 52), "classification", 18, (), "focal", "error01",
     "3,956", 4, 64),
    ("FSD50K", "2D", (1, 96, 102), "multilabel", 200, (200,), "bce_logits", "1-map",
     "51K", 4, 96),
    ("DarcyFlow", "2D", (3, 85, 85), "dense", 1, (1, 85, 85), "relative_l2", "relative_l2",
     "1.1K", 4, 84),
    ("PSICOV", "2D", (57, 128, 128), "dense", 1, (1, 128, 128), "mse", "mae8",
     "3,606", 8, 128),
    ("Cosmic", "2D", (1, 128, 128), "dense", 1, (1, 128, 128), "bce_logits", "1-auroc-hard",
     "5,250", 8, 128),
    ("ECG", "1D", (1, 1000), "classification", 4, (), "cross_entropy", "1-f1",
     "330K", 4, None),
    ("Satellite", "1D", (1, 46), "classification", 24, (), "cross_entropy", "error01",
     "1M", 1, None),
    ("DeepSEA", "1D", (4, 1000), "multilabel", 36, (36,), "bce_logits", "1-auroc",
     "250K", 4, None),
]

#: ORCA ``get_config`` loss options (``src/task_configs.py``): BCE ``pos_weight`` 10 for FSD50K
#: and 4 for DeepSEA, ``FocalLoss(alpha=1)`` for NinaPro.
LOSS_OPTIONS = {"FSD50K": {"pos_weight": 10.0}, "DeepSEA": {"pos_weight": 4.0},
                "NinaPro": {"alpha": 1.0}}

#: ORCA standardises Darcy Flow's targets with the training statistics and decodes the
#: predictions before the loss and metric (``src/data_loaders.py:load_darcy_flow``
#: ``y_normalizer = UnitGaussianNormalizer(y_train)``; ``src/task_configs.py:get_data``
#: ``data_kwargs = {"decoder": y_normalizer}``; ``src/main.py`` ``decoder.decode``).
TARGET_NORMALIZERS = {"DarcyFlow": "unit_gaussian"}

for (key, modality, shape, output, k, out_shape, loss, metric, size, patch, image) in _TASKS:
    register_task(
        TaskSpec(
            key=key,
            benchmark=_NB,
            modality=modality,
            input_shape=shape,
            output=output,
            num_outputs=k,
            output_shape=out_shape,
            loss=loss,
            metric=metric,
            lower_is_better=True,
            paper_data_size=size,
            source="NAS-Bench-360 (Tu et al. 2022); ORCA preprocessing",
            loader=_loader(key),
            patch_size=patch,
            image_size=image,
            continuous_labels=output == "dense" and key != "Cosmic",
            loss_options=dict(LOSS_OPTIONS.get(key, {})),
            target_normalizer=TARGET_NORMALIZERS.get(key),
        )
    )
