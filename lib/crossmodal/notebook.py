"""What every notebook in ``notebooks/`` calls: settings, runs, paper values, reports.

A notebook is thin: its ``parameters`` cell holds flat values (``profile``, ``tasks``,
``seeds``, ``epochs``, ``output_dir``, ...), and everything else is a call into this module::

    nb = settings("main_results", profile, tasks=tasks, seeds=seeds, epochs=epochs,
                  output_dir=output_dir)          # defaults from the library, data checked
    report = Report(nb, parameters=dict(profile=profile, tasks=tasks, ...))
    runs = run_grid(nb, [Variant("nft", "nft"), Variant("scratch", "scratch")], report)
    table = compare_with_paper(runs, ...)        # paper value beside ours, gap, ranks
    report.write(table, summary="...")           # reports/<notebook>/<profile>/

Report layout (``reports/<notebook>/<profile>/``): ``results.json`` (schema
:data:`RESULTS_SCHEMA`, written last, so a folder without it is an incomplete run),
``results.csv`` (the comparison table), ``runs.csv`` (one row per run), ``summary.md``,
``*.png`` figures, and the executed notebook written by papermill.

The gap between a reproduced value and the paper's is ``ours - paper`` and, relative,
``(ours - paper) / |paper|``; within a task, methods are ranked 1, 2, ... from the best
(lowest error: every paper metric is an error).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.errors import DataMissingError, InvalidInputError, unknown_name
from crossmodal.profiles import METHOD_PROFILE_OPTIONS as _PROFILE_METHOD_OPTIONS
from crossmodal.profiles import get_profile
from crossmodal.reporting import package_versions, round_sig, write_json_atomic

#: Version tag of the ``results.json`` layout shared by every notebook.
RESULTS_SCHEMA = "crossmodal.notebook/1"

#: Environment variable that moves the reports root (tests point it at a temporary folder).
REPORTS_ENV = "CROSSMODAL_REPORTS"

#: Files of a report folder; removed when a notebook starts, so a failed run never leaves a
#: folder that looks complete (``results.json`` is written last).
REPORT_FILES = ("results.json", "results.csv", "runs.csv", "summary.md")

#: The method order of the main tables (those not registered yet are skipped).
MAIN_METHODS = ("scratch", "fpt", "nft", "orca", "pare", "mona", "recraft", "gap_adaptive",
                "gap_adaptive_a", "gap_adaptive_b")

NB360_TASKS = ("CIFAR100", "Spherical", "DarcyFlow", "PSICOV", "Cosmic", "NinaPro", "FSD50K",
               "ECG", "Satellite", "DeepSEA")
PDEBENCH_TASKS = ("Advection1D", "Burgers1D", "DiffusionReaction1D", "DiffusionSorption1D",
                  "NavierStokes1D", "DarcyFlow2D", "ShallowWater2D", "DiffusionReaction2D")
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


# --------------------------------------------------------------------------- settings


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
        from crossmodal.profiles import subset_sizes, train_defaults
        from crossmodal.tasks import get_task

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
        from crossmodal.training import default_num_threads

        num_threads = default_num_threads()
    defaults = NOTEBOOKS.get(notebook, _GENERIC)
    if isinstance(tasks, str):
        tasks = [tasks]
    task_list = list(tasks) if tasks is not None else list(defaults.tasks[prof.name])
    if not task_list:
        raise InvalidInputError("tasks is empty; give at least one task key (`crossmodal tasks`)")
    from crossmodal.tasks import get_task

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
    import torch

    torch.set_num_threads(num_threads)
    # progress bars are off in notebooks; tqdm.auto's "IProgress not found" warning is noise
    warnings.filterwarnings("ignore", message="IProgress not found")
    if check_data:
        require_data(s.tasks, s.data_root)
    return s


def require_data(tasks: Iterable[str], data_root: str | Path | None = None) -> None:
    """Raise one :class:`DataMissingError` listing the fetch command of every missing task."""
    from crossmodal.data.root import data_root as resolve_root
    from crossmodal.tasks import get_task

    root = Path(resolve_root(data_root))
    missing = []
    for key in tasks:
        spec = get_task(key)
        if spec.offline:
            continue
        try:
            from crossmodal.data.presence import is_present

            if is_present(key, root):
                continue
        except ImportError:  # no cheap presence check: fall through to the loader
            pass
        try:
            spec.load(root)  # absent files fail fast, naming the command that fetches them
        except DataMissingError as err:
            missing.append(f"  - {err}")
    if missing:
        raise DataMissingError(
            f"{len(missing)} task(s) have no data under {root}; fetch them first "
            "(or choose another profile, e.g. profile='smoke'):\n" + "\n".join(missing)
        )


# --------------------------------------------------------------------------- paper tables


@cache
def _read_table(name: str) -> pd.DataFrame:
    folder = resources.files("crossmodal") / "paper_results"
    path = folder / f"{name}.csv"
    if not path.is_file():
        names = sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".csv"))
        raise unknown_name("paper table", name, names)
    with path.open(newline="") as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    if "value" in df:
        df["value"] = pd.to_numeric(df["value"].replace("", np.nan), errors="coerce")
    return df


def paper_table(name: str) -> pd.DataFrame:
    """A copy of ``crossmodal/paper_results/<name>.csv`` (``value`` as float, NaN = missing)."""
    return _read_table(name).copy()


def _norm(name: str) -> str:
    # "PaRe", "PaRE", "PARE" and "pare" are one method; "Train_from_scratch" is "scratch".
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return {"trainfromscratch": "scratch", "gapadaptive": "gapadaptive"}.get(key, key)


def paper_value(
    table: str,
    *,
    task: str,
    method: str,
    column: str = "value",
    **filters: str,
) -> float | str | None:
    """One cell of a paper table: ``column`` of the row matching ``task``, ``method``, filters.

    Method names match case- and punctuation-insensitively (``"pare"`` finds ``PaRe``/
    ``PaRE``; ``"scratch"`` finds ``Train_from_scratch``). Returns None when no row matches
    or the cell is empty (lost in the extraction: the note says ``MISSING``). Several
    matching rows raise :class:`InvalidInputError` naming the columns that tell them apart,
    e.g. ``metric`` or ``setting``; pass one of them as a keyword.
    """
    df = _read_table(table)
    for col in (column, *filters):
        if col not in df.columns:
            raise InvalidInputError(f"paper table {table!r} has no column {col!r}; "
                                    f"columns: {', '.join(df.columns)}")
    rows = df[(df["task"] == task) & (df["method"].map(_norm) == _norm(method))]
    for col, want in filters.items():
        rows = rows[rows[col] == str(want)]
    if rows.empty:
        return None
    if len(rows) > 1:
        differ = [c for c in df.columns if rows[c].nunique() > 1 and c not in ("note", "value",
                                                                               "value_raw")]
        raise InvalidInputError(
            f"{len(rows)} rows of {table!r} match task={task!r}, method={method!r}; "
            f"select one with a keyword for: {', '.join(differ) or '(identical rows)'}"
        )
    value = rows.iloc[0][column]
    if isinstance(value, float) and math.isnan(value):
        return None
    if value == "":
        return None
    return value


#: Where each method's main-table number comes from, first table with a value wins:
#: NFT/FPT/ORCA/PaRe from PaRe Tables 1/2, scratch from PaRe Table 15, MoNA from the slides'
#: MoNA tables, RECRAFT (and NFT on PDEBench) from RECRAFT Tables 1/2.
MAIN_TABLES = ("nb360_main", "pdebench_main", "pare_finetune_methods", "mona_nb360",
               "mona_pdebench", "recraft_main_nb360", "recraft_main_pdebench")


@dataclass(frozen=True)
class PaperValue:
    value: float
    table: str
    source: str
    metric: str


def main_paper_value(task: str, method: str,
                     tables: Sequence[str] = MAIN_TABLES) -> PaperValue | None:
    """The paper's number for ``task`` x ``method`` from the main tables (None: no number)."""
    for table in tables:
        df = _read_table(table)
        rows = df[(df["task"] == task) & (df["method"].map(_norm) == _norm(method))]
        rows = rows[rows["value"].notna()]
        if len(rows) == 1:
            r = rows.iloc[0]
            return PaperValue(float(r["value"]), table, f"{r['source']} {r['table']}",
                              r["metric"])
    return None


def paper_main_table(methods: Sequence[str],
                     tasks: Sequence[str] = NB360_TASKS + PDEBENCH_TASKS) -> pd.DataFrame:
    """The papers' main-table numbers: one row per paper task, one column per method."""
    rows = []
    for t in tasks:
        row: dict[str, Any] = {"task": t, "metric": ""}
        for m in methods:
            pv = main_paper_value(t, m)
            row[m] = pv.value if pv else np.nan
            if pv and not row["metric"]:
                row["metric"] = pv.metric
        rows.append(row)
    return pd.DataFrame(rows)


#: Claims of the main tables, checked in direction: (better, worse) method pairs.
MAIN_CLAIMS = (("nft", "scratch"), ("nft", "fpt"), ("orca", "nft"), ("pare", "orca"),
               ("mona", "orca"), ("recraft", "pare"), ("gap_adaptive", "nft"),
               ("gap_adaptive_a", "nft"), ("gap_adaptive_b", "pare"))


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Variant:
    """One column of a notebook's experiment: a method with options (and maybe a body).

    ``name`` labels the variant in tables and figures (e.g. ``"freeze=body"``).
    """

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    body: str | None = None


def available_methods(wanted: Sequence[str] = MAIN_METHODS) -> list[str]:
    """The methods of ``wanted`` that are registered now, in that order."""
    from crossmodal.methods import METHODS

    return [m for m in wanted if m in METHODS]


def load_splits(nb: NotebookSettings, task: str, seed: int):
    """A task's splits shrunk to the settings' subset sizes (seeded; None: the task's own
    smoke recipe or profile sizes, as ``crossmodal run`` uses)."""
    from crossmodal.data.root import data_root as resolve_root
    from crossmodal.profiles import subset_sizes
    from crossmodal.runner import subsample
    from crossmodal.tasks import get_task

    spec = get_task(task)
    cap_train, cap_test = subset_sizes(spec, nb.profile)
    splits = spec.load(Path(resolve_root(nb.data_root)))
    return subsample(splits, nb.max_train if nb.max_train is not None else cap_train,
                     nb.max_test if nb.max_test is not None else cap_test, seed)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a notebook's grid: what :func:`run_grid` trains (or collects).

    ``identity`` is the run's full configuration (the method's config with its defaults
    filled in, the resolved body, the profile's sizes, the probe) and ``run_id`` its folder
    name in a sweep's runs directory (:func:`crossmodal.sweep.plan.run_id`).
    """

    task: str
    seed: int
    variant: Variant
    body: str | None  # the body override (None: the profile's default, ``default_body``)
    memo_key: tuple
    identity: dict[str, Any]
    run_id: str


def plan_grid(
    nb: NotebookSettings,
    variants: Sequence[Variant | str],
    *,
    train_options: dict[str, Any] | None = None,
    probe: Any = None,
) -> list[PlannedRun]:
    """The runs of :func:`run_grid`, in its order (task, then seed, then variant), untrained.

    :mod:`crossmodal.sweep` submits these as jobs; :func:`run_grid` trains or collects them.
    """
    from crossmodal.profiles import default_body
    from crossmodal.sweep.plan import probe_key, run_id
    from crossmodal.tasks import get_task

    vs = [Variant(v, v) if isinstance(v, str) else v for v in variants]
    out = []
    for task in nb.tasks:
        default = default_body(get_task(task), nb.profile)
        for seed in nb.seeds:
            for v in vs:
                body = v.body.format(default=default, amounts=_pretraining_amounts(default)) \
                    if v.body else None
                if body == "":  # a pretraining amount this task's body lacks (Swin)
                    continue
                method, mcfg = v.method, _method_config(v.method, v.options)
                cfg = repr(sorted(mcfg.items()))  # as _config_key, without a second build
                identity = {"task": task, "seed": int(seed), "profile": nb.profile,
                            "method": method, "method_config": mcfg,
                            "body": body or default, "epochs": nb.epochs,
                            "max_train": nb.max_train, "max_test": nb.max_test,
                            "train_options": dict(sorted((train_options or {}).items())),
                            "probe": probe_key(probe)}
                out.append(PlannedRun(task, int(seed), v, body,
                                      (task, seed, method, cfg, body or default), identity,
                                      run_id(identity)))
    return out


def run_grid(
    nb: NotebookSettings,
    variants: Sequence[Variant | str],
    report: Report | None = None,
    *,
    train_options: dict[str, Any] | None = None,
    keep_runs: bool | None = None,
    memo: dict | None = None,
    probe: Any = None,
) -> pd.DataFrame:
    """Run every task x variant x seed; return one row per run (and add them to ``report``).

    A variant's ``body`` may contain ``{default}``, replaced by the profile's body for the
    task (``"{default}-random"``: the same architecture with random weights).
    ``keep_runs`` writes each run's folder (results.json, metrics.jsonl, checkpoints) under
    ``<output_dir>/runs/`` and reuses a finished one (default: outside the smoke profile).
    Columns: task, variant, method, seed, metric, lower_is_better, final, best, curve
    (test metric per epoch), train_loss (per epoch), method_report, body, n_train, n_test,
    wall_seconds. ``memo`` (a dict shared between calls) runs each distinct configuration
    once: ablations share their reference variant (e.g. full ORCA). ``probe`` is passed to
    :func:`crossmodal.runner.run` (measurements of the model after stage 1 and each epoch);
    its records land in the ``probes`` column.

    With ``nb.runs_dir`` set (a ``crossmodal sweep`` of the notebook) nothing trains: each
    run's ``results.json`` is read from ``runs_dir/<run_id>/``; a run not there (not finished)
    is left out of the frame, warned about and listed in ``nb.missing_runs`` (the report
    marks it). No finished run at all is an error.
    """
    import json

    from tqdm.auto import tqdm

    from crossmodal.runner import run

    keep = nb.profile != "smoke" if keep_runs is None else keep_runs
    planned = plan_grid(nb, variants, train_options=train_options, probe=probe)
    rows, cached, missing = [], {}, []
    for p in tqdm(planned, desc=nb.notebook, disable=not nb.progress):
        task, seed, v = p.task, p.seed, p.variant
        if memo is not None and p.memo_key in memo:
            rows.append({**memo[p.memo_key], "variant": v.name})
            continue
        if nb.runs_dir is not None:
            done = nb.runs_dir / p.run_id / "results.json"
            if not done.exists():
                missing.append(p.run_id)
                continue
            r = json.loads(done.read_text())
        else:
            if (task, seed) not in cached:
                cached = {(task, seed): load_splits(nb, task, seed)}
            out = nb.output_dir / "runs" / task / _slug(v.name) / f"seed{seed}" if keep else None
            done = out / "results.json" if out is not None else None
            if done is not None and done.exists():
                r = json.loads(done.read_text())
            else:
                extra = {"probe": probe} if probe is not None else {}
                r = run(task, v.method, nb.profile, epochs=nb.epochs, seed=seed, out=out,
                        body=p.body, data_root=nb.data_root, method_options=dict(v.options),
                        train_options={"num_threads": nb.num_threads, **(train_options or {})},
                        progress=False, splits=cached[(task, seed)], **extra)
        rows.append(run_row(r, v.name))
        if memo is not None:
            memo[p.memo_key] = rows[-1]
    if missing:
        nb.missing_runs.extend(m for m in missing if m not in nb.missing_runs)
        warnings.warn(f"{len(missing)} of {len(planned)} runs are not finished in "
                      f"{display_path(nb.runs_dir)}: {', '.join(missing)}; the report marks "
                      "them (see `crossmodal sweep --status`)", stacklevel=2)
        if not rows:
            raise DataMissingError(
                f"none of the {len(planned)} runs of {nb.notebook} is finished in "
                f"{nb.runs_dir}; run `crossmodal sweep notebooks/{nb.notebook}.ipynb --profile "
                f"{nb.profile} --runs-dir {nb.runs_dir}` first, and `crossmodal sweep --status "
                f"{nb.runs_dir}` to see where it stands")
    frame = pd.DataFrame(rows)
    if report is not None:
        report.add_runs(frame)
    return frame


def run_row(result: dict[str, Any], variant: str | None = None) -> dict[str, Any]:
    """The row of :func:`run_grid` for one result dict of :func:`crossmodal.runner.run`."""
    return {
        "task": result["task"], "variant": variant or result["method"],
        "method": result["method"], "seed": result["seed"],
        "metric": result["metric"]["display"],
        "lower_is_better": result["metric"]["lower_is_better"],
        "final": result["final_metric"], "best": result["best_metric"],
        "curve": [e["test_metric"] for e in result["epochs"]],
        "train_loss": [e["train_loss"] for e in result["epochs"]],
        "method_report": result.get("method_report", {}),
        "probes": result.get("probes", []),
        "body": result["body"], "n_train": result["n_train"], "n_test": result["n_test"],
        "wall_seconds": result["wall_seconds"],
        "dry_run": bool(result.get("dry_run", False)),
    }


def is_dry_run(runs: pd.DataFrame) -> bool:
    """Whether any run is a dry run (``--limit-batches``/``--batch-size``, fixture data)."""
    return "dry_run" in runs and bool(runs["dry_run"].fillna(False).astype(bool).any())


#: The status of every row of a table built from a dry run.
DRY_RUN_STATUS = "dry run: not compared"


def _config_key(method: str, options: dict[str, Any]) -> tuple[str, str]:
    """A method's full config (defaults filled in): equal keys mean identical runs."""
    from crossmodal.methods import get_method

    cfg = dataclasses.asdict(get_method(method, **options).config)
    return method, repr(sorted(cfg.items()))


def _method_config(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """A method's full config as a dict (defaults filled in)."""
    from crossmodal.methods import get_method

    return dataclasses.asdict(get_method(method, **options).config)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "run"


# --------------------------------------------------------------------------- experiments

#: Method options per profile (moved to :mod:`crossmodal.profiles`, which ``crossmodal run``
#: reads as well, so the CLI and the notebooks run the same settings).
METHOD_PROFILE_OPTIONS = _PROFILE_METHOD_OPTIONS


def method_options(method: str, profile: str, **overrides: Any) -> dict[str, Any]:
    """A method's options for a profile (:func:`crossmodal.profiles.method_defaults`) with
    overrides.

    Profile defaults that the method's config does not have (it changed since) are dropped;
    ``overrides`` are passed on as given, so a misspelt one fails loudly in the run.
    """
    from crossmodal.profiles import method_defaults

    return {**method_defaults(method, profile), **overrides}


def main_variants(methods: Sequence[str], profile: str) -> list[Variant]:
    """One variant per method, with the profile's options."""
    return [Variant(m, m, method_options(m, profile)) for m in methods]


ORCA_ABLATIONS = ("proxy", "freezing", "pretraining", "embedder_training")

#: Alignment-epoch grids of the "embedder_training" ablation (0 = no alignment).
ALIGN_EPOCH_GRID = {"smoke": (0, 2, 5), "lab": (0, 5, 10, 20), "paper": (0, 5, 10, 20, 40)}


def orca_ablation_variants(
    ablation: str,
    profile: str,
    *,
    proxies: Sequence[str | None] | None = None,
    align_epochs: Sequence[int] | None = None,
) -> list[Variant]:
    """The variants of one ORCA ablation (García-de-Herreros et al., research questions 1-4).

    * ``proxy``: no alignment vs OTDD alignment with each proxy (None: the body's default,
      ``pydoc_topics`` offline, CoNLL-2003 in the paper profile);
    * ``freezing``: after alignment, fine-tune everything / freeze the embedder / the body /
      both (then only the head trains);
    * ``pretraining``: the same body with random weights (0 % pretraining) vs pretrained
      (100 %); in the paper profile also RoBERTa pretrained on 1M, 10M, 100M and 1B words
      (the MiniBERTas, downloaded from the Hub; 1D tasks only, Swin has no such ladder);
    * ``embedder_training``: the number of OTDD alignment epochs (0 = none).
    """
    base = method_options("orca", profile)
    if ablation == "proxy":
        return [Variant("no alignment", "orca", {**base, "align_score": "none"}),
                *[Variant(f"proxy={p or 'default'}", "orca", {**base, "proxy": p})
                  for p in (proxies or [None])]]
    if ablation == "freezing":
        return [Variant(f"freeze={f}", "orca", {**base, "freeze": f})
                for f in ("none", "embedder", "body", "both")]
    if ablation == "pretraining":
        ladder = []
        if get_profile(profile).name == "paper":  # the MiniBERTas (1D tasks only)
            from crossmodal.bodies import PRETRAINING_AMOUNTS

            amounts = [a for rungs in PRETRAINING_AMOUNTS.values() for a, _ in rungs]
            ladder = [Variant(f"body {a} words", "orca", base, body=f"{{amounts[{a}]}}")
                      for a in dict.fromkeys(amounts)]
        return [Variant("body 0% (random init)", "orca", base, body="{default}-random"),
                *ladder,
                Variant("body 100% (pretrained)", "orca", base, body="{default}")]
    if ablation == "embedder_training":
        grid = align_epochs or ALIGN_EPOCH_GRID[get_profile(profile).name]
        return [Variant(f"align_epochs={e}", "orca", {**base, "align_epochs": int(e)})
                for e in grid]
    raise unknown_name("ablation", ablation, ORCA_ABLATIONS)


def _pretraining_amounts(default_body: str) -> dict[str, str]:
    """``{amount: body}`` of the pretraining ladder of a body; missing amounts map to ""."""
    from collections import defaultdict

    from crossmodal.bodies import PRETRAINING_AMOUNTS

    return defaultdict(str, dict(PRETRAINING_AMOUNTS.get(default_body, ())))


def run_ablations(nb: NotebookSettings, ablations: Sequence[str], report: Report | None = None,
                  **variant_kw: Any) -> pd.DataFrame:
    """Run the variants of each ORCA ablation (a shared configuration runs once); the rows
    carry an ``ablation`` column."""
    memo: dict = {}
    frames = []
    for a in as_list(ablations):
        runs = run_grid(nb, orca_ablation_variants(a, nb.profile, **variant_kw), memo=memo)
        frames.append(runs.assign(ablation=a))
    runs = pd.concat(frames, ignore_index=True)
    if report is not None:
        report.add_runs(runs)
    return runs


def alignment_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """ORCA's alignment report per run: OTDD before/after, reduction, the objective curve."""
    rows = []
    for _, r in runs.iterrows():
        rep = r["method_report"] or {}
        if "otdd_before" not in rep:
            continue
        before, after = rep["otdd_before"], rep["otdd_after"]
        rows.append({"task": r["task"], "variant": r["variant"], "seed": r["seed"],
                     "align_epochs": len(rep.get("alignment_curve", [])),
                     "otdd_before": before, "otdd_after": after,
                     "reduction_pct": 100 * (before - after) / abs(before) if before else np.nan,
                     "alignment_curve": rep.get("alignment_curve", [])})
    return pd.DataFrame(rows)


def check_alignment_lowers_otdd(runs: pd.DataFrame) -> Check | None:
    """Asserted: every run that aligned ends with a lower joint OTDD than it started with.

    The alignment stage minimises (class-wise) OTDD by gradient steps on the embedder, so a
    few steps with a small learning rate must lower it, at any scale.
    """
    al = alignment_frame(runs)
    al = al[al["align_epochs"] > 0] if not al.empty else al
    if al.empty:
        return None
    lower = al["otdd_after"] < al["otdd_before"]
    return check_direction(
        "OTDD alignment lowers the OTDD between embedded target and proxy", bool(lower.all()),
        f"{int(lower.sum())}/{len(al)} aligned runs; mean reduction "
        f"{fmt_value(al['reduction_pct'].mean())} %", assert_holds=True,
        paper="ORCA stage 2 minimises OTDD")


#: The slides' figure of each ORCA ablation (rows of ``orca_ablations.csv``).
ORCA_ABLATION_FIGURES = {"proxy": "Figure 5", "embedder_training": "Figure 6",
                         "freezing": "Figure 7", "pretraining": "Figure 8"}


def orca_ablation_finding(ablation: str) -> str:
    """The paper's finding for an ablation, as recorded in ``orca_ablations.csv`` (no numbers:
    the study's results are figures only)."""
    if ablation not in ORCA_ABLATION_FIGURES:
        raise unknown_name("ablation", ablation, ORCA_ABLATIONS)
    df = _read_table("orca_ablations")
    rows = df[df["table"].str.startswith(ORCA_ABLATION_FIGURES[ablation] + ":")]
    note = rows["note"].iloc[0]
    note = re.sub(r"^MISSING: figure only[^.]*\.\s*", "", note)
    note = re.sub(r"\s*Study: .*$", "", note)
    return f"{rows['table'].iloc[0]}: {note}"


def _final_of(table: pd.DataFrame, task: str, variant: str) -> float | None:
    row = table[(table["task"] == task) & (table["variant"] == variant)]
    return float(row["ours"].iloc[0]) if len(row) else None


def orca_ablation_checks(ablation: str, table: pd.DataFrame,
                         runs: pd.DataFrame | None = None) -> list[Check]:
    """The direction of each ablation's finding on our tasks (observed, not asserted).

    With ``runs`` (one row per run, as :func:`run_ablations` returns) each "A beats B"
    finding gets a paired verdict over the seeds of each task (:func:`verdict_check`);
    without, it is one comparison of the means in ``table``.
    """
    checks = []
    if runs is not None and "ablation" in runs:
        runs = runs[runs["ablation"] == ablation]

    def judged(task, better, worse, claim, paper):
        if runs is not None:
            c = verdict_check(runs[runs["task"] == task], better, worse, claim=claim,
                              paper=paper)
            if c is not None:
                return c
        a, b = _final_of(table, task, better), _final_of(table, task, worse)
        if a is None or b is None:
            return None
        return check_direction(claim, a < b, f"{fmt_value(a)} vs {fmt_value(b)}", paper=paper)

    for task in dict.fromkeys(table["task"]):
        if ablation == "freezing":
            checks.append(judged(
                task, "freeze=none", "freeze=body",
                f"{task}: fine-tuning the body matters (freeze=none beats freeze=body)",
                "Fig. 7: fine-tuning the body is critical"))
        elif ablation == "pretraining":
            checks.append(judged(
                task, "body 100% (pretrained)", "body 0% (random init)",
                f"{task}: the pretrained body beats the random one",
                "Fig. 8: for 1D tasks pretraining is 'actually not necessary'"))
        elif ablation == "proxy":
            for v in table.loc[table["task"] == task, "variant"]:
                if v.startswith("proxy="):
                    checks.append(judged(
                        task, v, "no alignment", f"{task}: alignment with {v} beats no alignment",
                        "Fig. 5: embedder training matters for 1D tasks"))
        elif ablation == "embedder_training":
            sub = table[table["task"] == task].copy()
            if "otdd_after" in sub and sub["otdd_after"].notna().sum() >= 2:
                sub = sub.dropna(subset=["otdd_after"]).sort_values("align_epochs")
                mono = bool((np.diff(sub["otdd_after"].to_numpy()) < 0).all())
                checks.append(check_direction(
                    f"{task}: more alignment epochs give a lower OTDD (mean over seeds)", mono,
                    "OTDD after " + ", ".join(f"{int(e)}: {fmt_value(o)}" for e, o in
                                              zip(sub["align_epochs"], sub["otdd_after"])),
                    paper="Fig. 6: OTDD per embedder-training epoch"))
    return [c for c in checks if c is not None]


def ablation_table(runs: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Per ablation x task x variant: final/best test metric (mean over seeds) and OTDDs."""
    keys = ["ablation", "task", "variant"] if "ablation" in runs else ["task", "variant"]
    g = runs.groupby(keys, sort=False)
    table = g.agg(method=("method", "first"), metric=("metric", "first"),
                  lower_is_better=("lower_is_better", "first"), ours=("final", "mean"),
                  ours_std=("final", "std"), best=("best", "mean"),
                  seeds=("seed", "nunique")).reset_index()
    table["ours ± std"] = mean_pm_std(table["ours"], table["ours_std"])
    al = alignment_frame(runs)
    if not al.empty:
        al = al.groupby(["task", "variant"], sort=False)[
            ["align_epochs", "otdd_before", "otdd_after"]].mean().reset_index()
        table = table.merge(al, on=["task", "variant"], how="left")
    else:
        table[["align_epochs", "otdd_before", "otdd_after"]] = np.nan
    # ORCA without alignment has 0 alignment epochs (its report has no OTDD)
    table["align_epochs"] = table["align_epochs"].fillna(0)
    table["paper"] = np.nan
    table["status"] = "figure only in the paper: direction checks"
    return table


def describe_task(task, splits) -> str:
    """A few lines about a task and its (shrunk) splits."""
    lines = [f"{task.key}: {task.benchmark}, {task.modality}, {task.output} with "
             f"{task.num_outputs} outputs, metric {task.metric} (lower is better)",
             f"source: {task.source}"]
    for name, (x, y) in splits.items():
        lines.append(f"{name:5s}: x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)} {y.dtype}")
    return "\n".join(lines)


def describe_model(model) -> pd.DataFrame:
    """Parameter counts of the embedder, body, head and extras of a CrossModalModel."""
    rows = []
    for part in ("embedder", "body", "head", "extras"):
        mod = getattr(model, part)
        n = sum(p.numel() for p in mod.parameters())
        rows.append({"part": part, "module": type(mod).__name__, "parameters": n})
    return pd.DataFrame(rows)


def epoch_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run and epoch: train loss and test metric (for per-epoch tables)."""
    rows = []
    for _, r in runs.iterrows():
        for e, (m, loss) in enumerate(zip(r["curve"], r["train_loss"]), start=1):
            rows.append({"task": r["task"], "variant": r["variant"], "seed": r["seed"],
                         "epoch": e, "train_loss": loss, "test_metric": m})
    return pd.DataFrame(rows)


def epoch_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task x variant x epoch: train loss and test metric as mean ± std over seeds."""
    ef = epoch_frame(runs)
    if ef.empty:
        return ef
    g = ef.groupby(["task", "variant", "epoch"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), loss=("train_loss", "mean"),
                loss_std=("train_loss", "std"), metric=("test_metric", "mean"),
                metric_std=("test_metric", "std")).reset_index()
    out["train loss"] = mean_pm_std(out["loss"], out["loss_std"])
    out["test metric"] = mean_pm_std(out["metric"], out["metric_std"])
    return out[["task", "variant", "epoch", "seeds", "train loss", "test metric"]]


# --------------------------------------------------------------------------- tables


def rank_within(df: pd.DataFrame, value: str, by: str = "task") -> pd.Series:
    """Rank rows within each ``by`` group by ``value`` (1 = best; lower is better)."""
    return df.groupby(by)[value].rank(method="min", ascending=True)


def compare_with_paper(
    runs: pd.DataFrame,
    *,
    profile: str,
    paper_task: dict[str, str] | None = None,
    tables: Sequence[str] = MAIN_TABLES,
) -> pd.DataFrame:
    """Ours beside the paper's value per task x variant: gap, relative gap, ranks, status.

    ``ours`` is the mean over seeds of each run's final test metric (``ours_std`` their
    standard deviation). ``paper_task`` maps a kit task to the paper task it stands for
    (default: itself). The status says whether the two numbers may be compared: only the
    paper profile runs the papers' protocol; smoke and lab results are "direction only".
    """
    paper_task = paper_task or {}
    g = runs.groupby(["task", "variant"], sort=False)
    table = g.agg(method=("method", "first"), metric=("metric", "first"),
                  lower_is_better=("lower_is_better", "first"), ours=("final", "mean"),
                  ours_std=("final", "std"), seeds=("seed", "nunique")).reset_index()
    paper, source = [], []
    for task, method in zip(table["task"], table["method"]):
        pv = main_paper_value(paper_task.get(task, task), method, tables)
        paper.append(pv.value if pv else np.nan)
        source.append(f"{pv.table}" if pv else "")
    table["paper"] = paper
    table["paper_table"] = source
    table["gap"] = table["ours"] - table["paper"]
    table["rel_gap_pct"] = 100 * table["gap"] / table["paper"].abs()
    # every paper metric is an error; a higher-is-better metric is ranked on its negative
    sign = np.where(table["lower_is_better"], 1.0, -1.0)
    table["rank_ours"] = (table.assign(_v=sign * table["ours"])
                          .groupby("task")["_v"].rank(method="min"))
    table["rank_paper"] = (table.assign(_v=sign * table["paper"])
                           .groupby("task")["_v"].rank(method="min"))
    table["status"] = [status_of(profile, p) for p in table["paper"]]
    table["ours ± std"] = mean_pm_std(table["ours"], table["ours_std"])
    if is_dry_run(runs):  # a dry run's numbers are no results: never beside a paper's
        table[["paper", "gap", "rel_gap_pct", "rank_paper"]] = np.nan
        table["paper_table"] = ""
        table["status"] = DRY_RUN_STATUS
    return table


def mean_pm_std(mean: Sequence[float], std: Sequence[float], digits: int = 3) -> list[str]:
    """``"mean ± std"`` strings (std over seeds; one seed prints the mean alone)."""
    out = []
    for m, sd in zip(mean, std):
        ok = sd is not None and isinstance(sd, (float, int, np.floating)) and math.isfinite(sd)
        out.append(f"{fmt_value(m, digits)} ± {fmt_value(sd, 2)}" if ok
                   else fmt_value(m, digits))
    return out


def reference_table(nb: NotebookSettings) -> pd.DataFrame:
    """The classical reference rows (:mod:`crossmodal.reference`) of a notebook's tasks, in the
    columns of :func:`compare_with_paper` (mean ± std over the notebook's seeds)."""
    from crossmodal.reference import reference_runs

    ref = reference_runs(nb)
    if ref.empty:
        return pd.DataFrame()
    g = ref.groupby(["task", "variant"], sort=False)
    table = g.agg(method=("method", "first"), metric=("metric", "first"),
                  lower_is_better=("lower_is_better", "first"), ours=("final", "mean"),
                  ours_std=("final", "std"), seeds=("seed", "nunique")).reset_index()
    table["paper"] = np.nan
    table["status"] = "classical reference (raw inputs)"
    table["ours ± std"] = mean_pm_std(table["ours"], table["ours_std"])
    return table


def with_reference(table: pd.DataFrame, nb: NotebookSettings) -> pd.DataFrame:
    """``table`` with the reference rows of its tasks appended after each task's methods
    (not ranked: they are not fine-tuning methods)."""
    ref = reference_table(nb)
    if ref.empty:
        return table
    parts = []
    for task in dict.fromkeys(table["task"]):
        parts += [table[table["task"] == task], ref[ref["task"] == task]]
    return pd.concat(parts, ignore_index=True)


def status_of(profile: str, paper: float) -> str:
    """``compared`` (paper profile and a paper number), else why not."""
    if paper is None or (isinstance(paper, float) and math.isnan(paper)):
        return "no paper value"
    if profile != "paper":
        return f"direction only ({profile})"
    return "compared"


def format_table(df: pd.DataFrame, columns: Sequence[str] | None = None,
                 digits: int = 3) -> str:
    """A plain-text table with floats rounded to ``digits`` significant digits (stable output)."""
    view = df[list(columns)] if columns is not None else df
    return view.to_string(index=False, formatters=_formatters(view, digits), na_rep="-")


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None,
                   digits: int = 3) -> str:
    """The same table as Markdown (for ``summary.md`` and ``reports/index.md``)."""
    view = df[list(columns)] if columns is not None else df
    fmt = _formatters(view, digits)
    lines = ["| " + " | ".join(map(str, view.columns)) + " |",
             "|" + "---|" * len(view.columns)]
    for _, row in view.iterrows():
        cells = [fmt[c](row[c]) if c in fmt else str(row[c]) for c in view.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_value(x: Any, digits: int = 3) -> str:
    """A number rounded to ``digits`` significant digits; ``-`` for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{round_sig(float(x), digits):g}"


def _formatters(df: pd.DataFrame, digits: int) -> dict:
    return {c: (lambda x, d=digits: fmt_value(x, d)) for c in df.columns
            if pd.api.types.is_float_dtype(df[c])}


# --------------------------------------------------------------------------- direction checks


#: What a check is: ``"sanity"`` holds by construction (an implementation test shown in the
#: report, e.g. "Algorithm 2's approximation >= the exact discrepancy"); ``"claim"`` is a
#: paper's claim checked on our runs, which can fail.
CHECK_KINDS = ("sanity", "claim")


@dataclass
class Check:
    """A direction check: a paper claim on our runs (smoke scale cannot match its numbers),
    or a sanity check that holds by construction (``kind``).

    ``verdict`` (``holds``/``contradicted``/``inconclusive``) is set when the claim was judged
    by a paired comparison over (task, seed) pairs (:mod:`crossmodal.verdicts`); ``holds`` is
    then ``verdict == "holds"``. Without it the check is a single yes/no observation.
    """

    claim: str
    holds: bool
    detail: str = ""
    asserted: bool = False
    paper: str = ""
    kind: str = "claim"
    verdict: str | None = None

    def line(self) -> str:
        mark = self.verdict or ("holds" if self.holds else "does NOT hold")
        if self.kind == "sanity":
            return f"[{mark}, sanity check: holds by construction] {self.claim}: {self.detail}"
        how = "asserted" if self.asserted else "observed"
        return f"[{mark}, paper claim, {how}] {self.claim}: {self.detail}"


def check_direction(claim: str, holds: bool, detail: str = "", *, assert_holds: bool = False,
                    paper: str = "", kind: str = "claim") -> Check:
    """Record a direction check; with ``assert_holds`` a failing claim raises AssertionError.

    ``kind="sanity"`` marks a check that holds by construction (it tests our code, not the
    paper: label it so in the report); ``"claim"`` (default) a paper claim that can fail.
    Assert only what must hold even at smoke scale; report the others plainly.
    """
    if kind not in CHECK_KINDS:
        raise InvalidInputError(f"kind must be one of {CHECK_KINDS}, got {kind!r}")
    c = Check(claim, bool(holds), detail, assert_holds, paper, kind)
    if assert_holds and not c.holds:
        raise AssertionError(f"claim failed: {claim} ({detail})")
    return c


def paper_wins(better: str, worse: str, tables: Sequence[str] = MAIN_TABLES,
               tasks: Sequence[str] = NB360_TASKS + PDEBENCH_TASKS) -> tuple[int, int]:
    """On how many paper tasks ``better`` has a lower error than ``worse`` (wins, compared)."""
    wins = n = 0
    for t in tasks:
        a, b = main_paper_value(t, better, tables), main_paper_value(t, worse, tables)
        if a is not None and b is not None:
            n += 1
            wins += a.value < b.value
    return wins, n


def verdict_check(runs: pd.DataFrame, better: str, worse: str, *, claim: str | None = None,
                  paper: str = "", variant_col: str = "variant") -> Check | None:
    """The paired verdict on "``better`` beats ``worse``" over the (task, seed) pairs of
    ``runs`` (one row per run, :func:`run_grid`), as a :class:`Check` with the numbers.

    None when one of the two variants did not run. The rule (sign test and bootstrap
    interval of the mean difference) is :func:`crossmodal.verdicts.paired_verdict`.
    """
    from crossmodal.verdicts import compare

    if runs.empty or not {better, worse} <= set(runs[variant_col]):
        return None
    v = compare(runs, better, worse, variant_col=variant_col)
    if v.n_pairs == 0:
        return None
    detail = v.detail() + (f"; {paper}" if paper else "")
    return Check(claim or f"{better} beats {worse}", v.holds, detail, False, paper, "claim",
                 v.verdict)


def pairwise_check(table: pd.DataFrame, better: str, worse: str) -> Check | None:
    """Does ``better`` beat ``worse`` on our tasks as it does on the paper's? (None: not run.)

    Given the runs (one row per task x variant x seed, with ``seed`` and ``final``), the
    claim gets a paired verdict over the (task, seed) pairs (:func:`verdict_check`); given a
    table of means (one row per task x variant), it counts the tasks where it holds.
    """
    pw, pn = paper_wins(better, worse)
    paper = f"paper: {pw}/{pn} tasks" if pn else "paper: no shared tasks"
    if {"seed", "final"} <= set(table.columns):
        return verdict_check(table, better, worse, paper=paper)
    ours = table.pivot_table(index="task", columns="variant", values="ours", aggfunc="mean")
    if better not in ours or worse not in ours:
        return None
    lower = table.groupby("task")["lower_is_better"].first()
    diff = (ours[better] - ours[worse]) * np.where(lower.loc[ours.index], 1.0, -1.0)
    wins, n = int((diff < 0).sum()), int(diff.notna().sum())
    return check_direction(f"{better} beats {worse}", wins * 2 > n,
                           f"ours: {wins}/{n} tasks; {paper}", paper=paper)


# --------------------------------------------------------------------------- figures


def plot_curves(runs: pd.DataFrame, column: str = "curve", ylabel: str | None = None,
                title: str = "", panels: Sequence[str] = ("task",), xlabel: str = "epoch"):
    """A panel per value of ``panels`` (e.g. task, or ablation and task): ``column`` (a list
    per run, e.g. the test metric per epoch) against its index, a line per variant: the mean
    over seeds with a band of ± one standard deviation (when there are several seeds).
    Epochs and steps are whole numbers, so the x axis ticks integers only."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = list(dict.fromkeys(map(tuple, runs[list(panels)].to_numpy())))
    ncol = min(4, len(keys))
    nrow = -(-len(keys) // ncol)
    fig = Figure(figsize=(4.2 * ncol, 3.2 * nrow), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys):
        sub = runs[(runs[list(panels)] == pd.Series(key, index=list(panels))).all(axis=1)]
        for variant, grp in sub.groupby("variant", sort=False):
            curves = [c for c in grp[column] if c]
            if not curves:
                continue
            n = min(map(len, curves))
            values = np.array([c[:n] for c in curves], dtype=float)
            mean, xs = values.mean(axis=0), np.arange(1, n + 1)
            (line,) = ax.plot(xs, mean, marker="o", label=f"{variant} (n={len(curves)})")
            if len(curves) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(" / ".join(map(str, key)), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel or (sub["metric"].iloc[0] if column == "curve" else column))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title + (" (mean ± std over seeds)" if runs["seed"].nunique() > 1
                              else "") if "seed" in runs else title)
    return fig


def plot_bars(table: pd.DataFrame, value: str = "ours", title: str = ""):
    """Grouped bars: ``value`` per variant, one group per task (paper values as markers)."""
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(table["task"]))
    fig = Figure(figsize=(4.2 * len(tasks), 3.2), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        sub = table[table["task"] == task]
        xs = np.arange(len(sub))
        err = sub[f"{value}_std"].fillna(0.0) if f"{value}_std" in sub else None
        ax.bar(xs, sub[value], yerr=err, capsize=3, color="tab:blue",
               label="ours (mean ± std over seeds)" if err is not None else "ours")
        if "paper" in sub and sub["paper"].notna().any():
            ax.scatter(xs, sub["paper"], color="tab:red", marker="_", s=300, label="paper")
        ax.set_xticks(xs, sub["variant"], rotation=45, ha="right", fontsize=8)
        ax.set_title(task)
        ax.set_ylabel(sub["metric"].iloc[0])
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- the report


class Report:
    """Collects a notebook's runs, tables, checks and figures; writes the report folder.

    Creating a report removes the previous report files of its folder, so a notebook that
    fails halfway leaves no ``results.json`` (the marker of a complete report).
    """

    def __init__(self, settings: NotebookSettings, parameters: dict[str, Any] | None = None):
        self.settings = settings
        self.parameters = dict(parameters or {})
        self.runs = pd.DataFrame()
        self.checks: list[Check] = []
        self.figures: list[str] = []
        self.extra: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        out = settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        for name in REPORT_FILES:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()

    def add_runs(self, runs: pd.DataFrame) -> None:
        self.runs = pd.concat([self.runs, runs], ignore_index=True)

    def add_check(self, check: Check | None) -> Check | None:
        """Record a direction check (None is ignored: the check did not apply)."""
        if check is not None:
            self.checks.append(check)
        return check

    def add_figure(self, fig, name: str):
        """Save a matplotlib figure as ``<name>.png`` (atomically); return it for display.

        Figures are built on :class:`matplotlib.figure.Figure` (no pyplot, any backend), so
        the returned ``IPython.display.Image`` is what shows them in a notebook.
        """
        fname = f"{_slug(name)}.png"
        path = self.settings.output_dir / fname
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
        self.figures.append(fname)
        try:
            from IPython.display import Image
        except ImportError:  # outside Jupyter: the file is what matters
            return fname
        return Image(data=path.read_bytes(), format="png")

    def checks_text(self) -> str:
        return "\n".join(c.line() for c in self.checks) or "(no direction checks)"

    def write(self, table: pd.DataFrame, *, summary: str = "",
              columns: Sequence[str] | None = None) -> Path:
        """Write results.csv, runs.csv, summary.md, then results.json; return the folder.

        ``table`` has one row per result with at least task, variant (or method), metric,
        ours, and optionally paper, gap, status (what ``reports/index.md`` lists).
        """
        s, out = self.settings, self.settings.output_dir
        wall = time.perf_counter() - self._t0
        if s.runs_dir is not None and not any(c.claim == COLLECT_CLAIM for c in self.checks):
            self.add_check(collect_check(s))
        table = table.copy()
        if "variant" not in table:
            table["variant"] = table["method"]
        for col, default in (("paper", np.nan), ("status", "")):
            if col not in table:
                table[col] = default
        dry = is_dry_run(self.runs)
        if dry:  # numbers of a dry run are never compared with a paper
            for col in ("paper", "gap", "rel_gap_pct", "rank_paper"):
                if col in table:
                    table[col] = np.nan
            table["status"] = DRY_RUN_STATUS
            summary = ("**DRY RUN** (--limit-batches / --batch-size or fixture data): these "
                       "numbers only show that the pipeline runs; they are not results and "
                       "are not compared with any paper.\n\n" + summary)
        _atomic_write(out / "results.csv", lambda f: f.write(table.to_csv(index=False).encode()))
        runs = self.runs.drop(columns=["method_report", "probes"], errors="ignore")
        _atomic_write(out / "runs.csv", lambda f: f.write(runs.to_csv(index=False).encode()))
        md = [f"# {s.notebook} ({s.profile} profile{', DRY RUN' if dry else ''})", "",
              summary.strip(), "",
              markdown_table(table, columns), "", "## Direction checks", "",
              "A *sanity check* holds by construction (it tests the code); a *paper claim* "
              "is checked on our runs and can fail.", "",
              *([f"- {c.line()}" for c in self.checks] or ["- (none)"]), "",
              *[f"![{f}]({f})" for f in self.figures], "",
              f"Wall time: {wall:.0f} s. Seeds: {', '.join(map(str, s.seeds))}.", ""]
        _atomic_write(out / "summary.md", lambda f: f.write("\n".join(md).encode()))
        doc = {
            "schema": RESULTS_SCHEMA,
            "notebook": s.notebook,
            "profile": s.profile,
            "dry_run": dry,
            "parameters": self.parameters,
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in dataclasses.asdict(s).items()
                         if k not in ("output_dir", "data_root", "runs_dir", "missing_runs")},
            "seeds": s.seeds,
            "runs": _records(self.runs),
            "results": _records(table),
            "paper": _records(table[["task", "variant", "paper"]].dropna())
            if "paper" in table else [],
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "figures": self.figures,
            "extra": self.extra,
            **({"runs_dir": display_path(s.runs_dir), "missing_runs": list(s.missing_runs)}
               if s.runs_dir is not None else {}),
            "versions": package_versions(),
            "wall_seconds": wall,
            "status": "complete",
        }
        write_json_atomic(doc, out / "results.json")
        os.chmod(out / "results.json", 0o644)
        return out

    def files_text(self) -> str:
        """The report's files, as the notebook prints them."""
        out = self.settings.output_dir
        names = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
        return f"{display_path(out)}/: " + ", ".join(names)


COLLECT_CLAIM = "every run of the grid is finished in runs_dir"


def collect_check(nb: NotebookSettings) -> Check:
    """The mark of a report collected from a sweep: which runs of its grid were missing."""
    missing = nb.missing_runs
    detail = (f"{len(missing)} missing (not in the table): {', '.join(missing)}" if missing
              else "all collected")
    return check_direction(COLLECT_CLAIM, not missing,
                           f"{display_path(nb.runs_dir)}: {detail}",
                           paper="crossmodal sweep --status shows why")


def _records(df: pd.DataFrame) -> list[dict]:
    if df.empty:
        return []
    clean = df.astype(object).where(df.notna(), None)
    return [{k: _jsonable(v) for k, v in row.items()} for row in clean.to_dict("records")]


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
