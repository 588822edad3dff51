"""Run profiles (``smoke``, ``lab``, ``paper``) and per-task training defaults.

* ``smoke``: laptop CPU, offline, minutes: the MiniLM body (shipped in a PyPI package) for
  1D and 2D tasks, small subsets, a few epochs.
* ``lab``: a class hour on one GPU: the same bodies, larger subsets, more epochs.
* ``paper``: the papers' protocol: RoBERTa-base (1D) and Swin-base (2D), full data, the
  fine-tuning hyperparameters of ORCA as copied in PaRe Tables 12/13 (read from the kit's
  copy of the paper tables, ``crossmodal/paper_results/pare_hyperparameters.csv``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from crossmodal.errors import unknown_name
from crossmodal.tasks import TaskSpec


@dataclass(frozen=True)
class Profile:
    """What a profile shrinks. ``None`` means "as in the paper"."""

    name: str
    body_1d: str
    body_2d: str
    max_train: int | None
    max_test: int | None
    epochs: int | None
    batch_size: int | None
    lr: float | None
    optimizer: str | None
    description: str


PROFILES: dict[str, Profile] = {
    # smoke lr: fine-tuning MiniLM from a freshly initialised embedder diverges to chance at
    # 2e-4 and 1e-3 on smoke_digits; 5e-5 learns (measured: 8 epochs -> 44 % test error vs
    # 90 % chance, ~90 s on 2 cores). See the README's measured times.
    "smoke": Profile("smoke", "minilm", "minilm", 1000, 500, 8, 16, 5e-5, "adamw",
                     "CPU, offline, minutes: MiniLM body, <=1000 train samples, 8 epochs"),
    "lab": Profile("lab", "minilm", "minilm", 10000, 2000, 10, 32, 1e-4, "adamw",
                   "one GPU, a class hour: MiniLM body, <=10k train samples, 10 epochs"),
    "paper": Profile("paper", "roberta-base", "swin-base", None, None, None, None, None, None,
                     "the papers' protocol: RoBERTa/Swin, full data, ORCA's hyperparameters"),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_name("profile", name, list(PROFILES))
    return PROFILES[name]


def default_body(task: TaskSpec, profile: str | Profile) -> str:
    p = get_profile(profile) if isinstance(profile, str) else profile
    return p.body_1d if task.modality == "1D" else p.body_2d


@cache
def paper_hyperparameters() -> dict[str, dict[str, str]]:
    """ORCA's fine-tuning settings per task (PaRe Tables 12 and 13), as raw strings."""
    out: dict[str, dict[str, str]] = {}
    path = resources.files("crossmodal") / "paper_results" / "pare_hyperparameters.csv"
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["table"] in ("Table 12", "Table 13") and row["value"]:
                out.setdefault(row["task"], {})[row["hyperparameter"]] = row["value"]
    return out


def train_defaults(task: TaskSpec, profile: str | Profile) -> dict:
    """Keyword arguments for :class:`crossmodal.training.TrainConfig` for a task and profile.

    ``paper``: the protocol table (:func:`crossmodal.protocol.resolve`): PaRe Tables 12/13 plus
    ORCA's configs (summed accumulation, WarmupLR, betas (0.9, 0.98), per-task momentum and
    clipping). ``smoke``/``lab``: the profile's epochs, batch size, optimiser and lr with the
    TrainConfig defaults (mean accumulation, cosine schedule, clipping at 1).
    """
    p = get_profile(profile) if isinstance(profile, str) else profile
    if p.name == "paper":
        from crossmodal.protocol import ORCA_CONFIGS, paper_tasks, resolve

        if task.key not in ORCA_CONFIGS or task.key not in paper_hyperparameters():
            raise unknown_name("paper task", task.key, paper_tasks())
        return resolve(task, "nft", "paper").train_kwargs()
    return dict(epochs=p.epochs, batch_size=p.batch_size, grad_accum=1, optimizer=p.optimizer,
                lr=p.lr, weight_decay=0.0)
