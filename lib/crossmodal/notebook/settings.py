"""A notebook's settings: its parameters resolved against the profile and the notebook's
defaults (:func:`settings`), and where its reports go (:func:`reports_root`).

A notebook's ``parameters`` cell holds flat values (``profile``, ``tasks``, ``seeds``,
``epochs``, ``output_dir``, ...); :func:`settings` replaces every ``None`` by the library's
default (the notebook's tasks per profile in :data:`NOTEBOOKS`, the smoke recipe of
:mod:`crossmodal.profiles`), pins the torch threads and fails at once when a task's data is
missing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crossmodal.data.presence import is_present
from crossmodal.data.root import data_root as resolve_root
from crossmodal.errors import DataMissingError, InvalidInputError
from crossmodal.paper_tables import NB360_TASKS, PDEBENCH_TASKS
from crossmodal.profiles import get_profile, subset_sizes
from crossmodal.protocol import train_defaults
from crossmodal.tasks import get_task
from crossmodal.training import default_num_threads

#: Environment variable that moves the reports root (tests point it at a temporary folder).
REPORTS_ENV = "CROSSMODAL_REPORTS"


#: The method order of the main tables (those not registered yet are skipped).
MAIN_METHODS = ("scratch", "fpt", "nft", "orca", "pare", "mona", "recraft", "gap_adaptive",
                "gap_adaptive_a", "gap_adaptive_b")


SMOKE_TASKS = ("smoke_digits", "smoke_gunpoint", "smoke_basicmotions", "smoke_advection")


#: Tasks of the ORCA ablation study (García-de-Herreros et al., as in the slides).
ORCA_ABLATION_TASKS = ("Satellite", "DeepSEA", "ECG", "NinaPro", "CIFAR100", "DarcyFlow")


@dataclass(frozen=True)
class NotebookDefaults:
    """Per-notebook defaults: tasks per profile and an optional smoke shrink.

    ``smoke_*`` fields override the smoke recipe (:data:`crossmodal.profiles.SMOKE_RECIPE`:
    per-task epochs and subsets, the settings under which the smoke tasks are learnt);
    ``None``, the default of every notebook, keeps the recipe, so that a notebook's smoke
    runs are the runs of ``crossmodal run --profile smoke``.
    """
    tasks: dict[str, tuple[str, ...]]
    smoke_max_train: int | None = None
    smoke_max_test: int | None = None
    smoke_epochs: int | None = None


_GENERIC = NotebookDefaults(tasks={"smoke": ("smoke_gunpoint",), "lab": NB360_TASKS,
                                   "paper": NB360_TASKS})


#: Defaults of the notebooks; a notebook without an entry gets :data:`_GENERIC`.
NOTEBOOKS: dict[str, NotebookDefaults] = {
    "00_quickstart": NotebookDefaults(
        tasks={"smoke": ("smoke_basicmotions",), "lab": ("Satellite",), "paper": ("Satellite",)}),
    "main_results": NotebookDefaults(
        # every smoke task x every method: `make reproduce` leaves a result for each
        tasks={"smoke": ("smoke_gunpoint", "smoke_basicmotions", "smoke_digits",
                         "smoke_advection"),
               "lab": NB360_TASKS + PDEBENCH_TASKS, "paper": NB360_TASKS + PDEBENCH_TASKS}),
    "orca_ablations": NotebookDefaults(
        tasks={"smoke": ("smoke_basicmotions",), "lab": ORCA_ABLATION_TASKS,
               "paper": ORCA_ABLATION_TASKS}),
    "pare_k_schedules": NotebookDefaults(
        tasks={"smoke": ("smoke_basicmotions",), "lab": NB360_TASKS, "paper": NB360_TASKS}),
    "mona_discrepancy": NotebookDefaults(
        tasks={"smoke": ("smoke_gunpoint", "smoke_basicmotions"), "lab": NB360_TASKS,
               "paper": NB360_TASKS}),
    "recraft_bound_tightness": NotebookDefaults(
        tasks={"smoke": ("smoke_gunpoint", "smoke_basicmotions", "smoke_digits"),
               "lab": NB360_TASKS, "paper": NB360_TASKS}),
    "recraft_kappa_sensitivity": NotebookDefaults(
        tasks={"smoke": ("smoke_basicmotions",), "lab": ("ECG", "Satellite", "NinaPro"),
               "paper": ("ECG", "Satellite", "NinaPro")}),
    "modality_gap": NotebookDefaults(
        tasks={"smoke": ("smoke_basicmotions", "smoke_advection"),
               "lab": NB360_TASKS + PDEBENCH_TASKS, "paper": NB360_TASKS + PDEBENCH_TASKS}),
}


def register_notebook(name: str, defaults: NotebookDefaults) -> None:
    """Add (or replace) a notebook's defaults (for notebooks added later)."""
    NOTEBOOKS[name] = defaults


@dataclass
class NotebookSettings:
    """Resolved notebook parameters: every ``None`` replaced by the library's default."""
    notebook: str
    profile: str
    tasks: list[str]
    seeds: list[int]
    epochs: int | None  # None: per task (smoke recipe, or the paper's epochs in ``paper``)
    max_train: int | None  # None: per task (smoke recipe) or every sample (paper)
    max_test: int | None
    output_dir: Path
    data_root: Path | None = None
    progress: bool = False
    num_threads: int = 1
    #: a ``crossmodal sweep`` runs folder: collect its finished runs instead of training
    runs_dir: Path | None = None
    #: run ids that the grid asked for and ``runs_dir`` does not hold (filled by run_grid)
    missing_runs: list[str] = field(default_factory=list, repr=False)

    def describe(self) -> str:
        """One line per setting, for the notebook's first output."""
        lines = [f"notebook   {self.notebook}",
                 f"profile    {self.profile}: {get_profile(self.profile).description}",
                 f"tasks      {', '.join(self.tasks)}",
                 f"seeds      {', '.join(map(str, self.seeds))}"]
        if self.profile == "paper" and self.epochs is None:
            lines.append("epochs     per task (paper Tables 12/13)")
        # one line per task with what its runs actually use: no profile-wide summary that
        # a per-task value could contradict
        for key, t in self.task_settings().items():
            lr = f"lr {t['lr']:g}" + (f" (body {t['body_lr']:g})" if t.get("body_lr") else "")
            epochs = f"{t['epochs']} epochs, " if t["epochs"] is not None else ""
            lines.append(f"  {key}: {epochs}batch {t['batch_size']}, {lr}, train <= "
                         f"{t['max_train'] or 'all'}, test <= {t['max_test'] or 'all'}")
        lines += [f"threads    {self.num_threads} (torch intra-op threads, pinned)",
                  f"reports    {display_path(self.output_dir)}",
                  *([f"runs       collected from {display_path(self.runs_dir)} (no training)"]
                    if self.runs_dir is not None else [])]
        return "\n".join(lines)

    def task_settings(self) -> dict[str, dict[str, Any]]:
        """Per task: the epochs, batch size, learning rates and subset sizes its runs use."""
        out = {}
        for key in self.tasks:
            spec = get_task(key)
            try:
                train = train_defaults(spec, self.profile)
            except Exception:  # no paper hyperparameters for this task: nothing to show
                train = {"epochs": None, "batch_size": "-", "lr": float("nan")}
            cap_train, cap_test = subset_sizes(spec, self.profile)
            out[key] = {"epochs": self.epochs if self.epochs is not None else train["epochs"],
                        "batch_size": train["batch_size"], "lr": train["lr"],
                        "body_lr": train.get("body_lr"),
                        "max_train": self.max_train if self.max_train is not None else cap_train,
                        "max_test": self.max_test if self.max_test is not None else cap_test}
        return out


def repo_root(start: Path | None = None) -> Path | None:
    """The checkout this kit runs from (a folder holding ``pyproject.toml`` and ``notebooks``)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "notebooks").is_dir():
            return folder
    return None


def reports_root() -> Path:
    """``$CROSSMODAL_REPORTS``, else ``<checkout>/reports``, else ``./reports``."""
    env = os.environ.get(REPORTS_ENV)
    if env:
        return Path(env)
    root = repo_root()
    return (root / "reports") if root is not None else Path("reports")


def display_path(path: str | Path) -> str:
    """A path as printed in notebooks: relative to the checkout (no machine-specific parts)."""
    path = Path(path)
    for base in (reports_root().parent, repo_root(), Path.cwd()):
        if base is None:
            continue
        try:
            return str(path.resolve().relative_to(Path(base).resolve()))
        except ValueError:
            continue
    return path.name


def as_list(value: Any) -> list | None:
    """A notebook parameter as a list: ``None`` stays None, one string is a one-item list.

    (``papermill -p tasks smoke_digits`` passes a string; ``-y "tasks: [a, b]"`` a list.)
    """
    if value is None:
        return None
    if isinstance(value, (str, int)):
        return [value]
    return list(value)


def default_seeds(profile: str) -> list[int]:
    """Three seeds in smoke (every claim gets a paired verdict over seeds), one in lab, five
    in the paper profile (RECRAFT reports means of 5 runs)."""
    return {"paper": [0, 1, 2, 3, 4], "smoke": [0, 1, 2]}.get(profile, [0])


def settings(
    notebook: str,
    profile: str = "smoke",
    *,
    tasks: Sequence[str] | str | None = None,
    seeds: Sequence[int] | int | None = None,
    epochs: int | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    output_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    check_data: bool = True,
    progress: bool = False,
    num_threads: int | None = None,
    runs_dir: str | Path | None = None,
) -> NotebookSettings:
    """Resolve a notebook's parameters; fail at once when a task's data is missing.

    Parameters
    ----------
    notebook : the notebook's name (its file name without ``.ipynb``).
    profile : ``"smoke"``, ``"lab"`` or ``"paper"``.
    tasks, seeds : None gives the notebook's defaults for the profile.
    epochs : None gives the profile's default (the smoke profile's notebook budget in smoke;
        each task's paper epochs in ``paper``).
    max_train, max_test : subset sizes; None gives the profile's (or the smoke budget).
    output_dir : None gives ``reports/<notebook>/<profile>``.
    check_data : raise :class:`DataMissingError` naming the fetch commands of every task
        whose data is not on disk (before any training starts).
    num_threads : torch threads, pinned here and in every run. None: ``$OMP_NUM_THREADS``
        when set, else one (:func:`crossmodal.training.default_num_threads`): on a shared
        2-core machine two intra-op threads per process oversubscribe the cores (we measured
        a 10x slow-down), and one thread is what the committed reports were made with.
    runs_dir : the runs folder of a ``crossmodal sweep`` of this notebook: :func:`run_grid`
        reads each finished run from it instead of training, and the report marks the runs
        it does not hold (see :mod:`crossmodal.sweep`).
    """
    prof = get_profile(profile)
    if num_threads is None:
        num_threads = default_num_threads()
    defaults = NOTEBOOKS.get(notebook, _GENERIC)
    if isinstance(tasks, str):
        tasks = [tasks]
    task_list = list(tasks) if tasks is not None else list(defaults.tasks[prof.name])
    if not task_list:
        raise InvalidInputError("tasks is empty; give at least one task key (`crossmodal tasks`)")

    for key in task_list:
        get_task(key)  # unknown keys raise an error that lists the valid ones
    if isinstance(seeds, int):
        seeds = [seeds]
    seed_list = [int(s) for s in seeds] if seeds is not None else default_seeds(prof.name)
    smoke = prof.name == "smoke"
    if epochs is None:  # smoke: the notebook's override, else per task (the recipe)
        epochs = defaults.smoke_epochs if smoke else prof.epochs
    if epochs is not None and epochs < 1:
        raise InvalidInputError(f"epochs must be >= 1 or None, got {epochs}")
    if max_train is None:  # smoke: the notebook's override, else per task (the recipe)
        max_train = defaults.smoke_max_train if smoke else prof.max_train
    if max_test is None:
        max_test = defaults.smoke_max_test if smoke else prof.max_test
    out = Path(output_dir) if output_dir else reports_root() / notebook / prof.name
    s = NotebookSettings(notebook, prof.name, task_list, seed_list, epochs, max_train, max_test,
                         out, Path(data_root) if data_root else None, progress, num_threads,
                         Path(runs_dir) if runs_dir else None)
    if s.runs_dir is not None and not s.runs_dir.is_dir():
        raise InvalidInputError(f"runs_dir {s.runs_dir} is not a folder; give the --runs-dir of a "
                                f"`crossmodal sweep notebooks/{notebook}.ipynb` (or None to train)")

    torch.set_num_threads(num_threads)
    # progress bars are off in notebooks; tqdm.auto's "IProgress not found" warning is noise
    warnings.filterwarnings("ignore", message="IProgress not found")
    if check_data:
        require_data(s.tasks, s.data_root)
    return s


def require_data(tasks: Iterable[str], data_root: str | Path | None = None) -> None:
    """Raise one :class:`DataMissingError` listing the fetch command of every missing task."""
    root = Path(resolve_root(data_root))
    missing = []
    for key in tasks:
        spec = get_task(key)
        if spec.offline:
            continue
        if is_present(spec, root):
            continue
        try:
            spec.load(root)  # absent files fail fast, naming the command that fetches them
        except DataMissingError as err:
            missing.append(f"  - {err}")
    if missing:
        raise DataMissingError(
            f"{len(missing)} task(s) have no data under {root}; fetch them first "
            "(or choose another profile, e.g. profile='smoke'):\n" + "\n".join(missing)
        )
