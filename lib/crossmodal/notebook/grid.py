"""A notebook's runs: variants (a method with options, maybe a body), the grid of task x
seed x variant (:func:`plan_grid`), and :func:`run_grid`, which trains each run through
:func:`crossmodal.runner.run` or collects it from a ``crossmodal sweep`` runs folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm.auto import tqdm

from crossmodal import runner  # as a module: tests replace runner.run
from crossmodal.bodies import PRETRAINING_AMOUNTS
from crossmodal.data.root import data_root as resolve_root
from crossmodal.errors import DataMissingError
from crossmodal.methods import METHODS, get_method
from crossmodal.notebook.settings import MAIN_METHODS, NotebookSettings, display_path
from crossmodal.profiles import METHOD_PROFILE_OPTIONS as _PROFILE_METHOD_OPTIONS
from crossmodal.profiles import default_body, method_defaults, subset_sizes
from crossmodal.sweep.plan import probe_key, run_id
from crossmodal.tasks import get_task

if TYPE_CHECKING:  # annotations only: the report module imports this one
    from crossmodal.notebook.report import Report


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
    return [m for m in wanted if m in METHODS]


def load_splits(nb: NotebookSettings, task: str, seed: int):
    """A task's splits shrunk to the settings' subset sizes (seeded; None: the task's own
    smoke recipe or profile sizes, as ``crossmodal run`` uses)."""
    spec = get_task(task)
    cap_train, cap_test = subset_sizes(spec, nb.profile)
    splits = spec.load(Path(resolve_root(nb.data_root)))
    return runner.subsample(splits, nb.max_train if nb.max_train is not None else cap_train,
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
                method, mcfg = v.method, method_config(v.method, v.options)
                cfg = repr(sorted(mcfg.items()))  # the config key of the memo
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
            out = nb.output_dir / "runs" / task / slug(v.name) / f"seed{seed}" if keep else None
            done = out / "results.json" if out is not None else None
            if done is not None and done.exists():
                r = json.loads(done.read_text())
            else:
                extra = {"probe": probe} if probe is not None else {}
                r = runner.run(task, v.method, nb.profile, epochs=nb.epochs, seed=seed, out=out,
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


def method_config(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """A method's full config as a dict (defaults filled in): equal dicts, identical runs."""
    return dataclasses.asdict(get_method(method, **options).config)


def slug(name: str) -> str:
    """``name`` as a file or folder name (runs, figures): letters, digits and ``_.=-``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_") or "run"


#: Method options per profile (moved to :mod:`crossmodal.profiles`, which ``crossmodal run``
#: reads as well, so the CLI and the notebooks run the same settings).
METHOD_PROFILE_OPTIONS = _PROFILE_METHOD_OPTIONS


def method_options(method: str, profile: str, **overrides: Any) -> dict[str, Any]:
    """A method's options for a profile (:func:`crossmodal.profiles.method_defaults`) with
    overrides.

    Profile defaults that the method's config does not have (it changed since) are dropped;
    ``overrides`` are passed on as given, so a misspelt one fails loudly in the run.
    """
    return {**method_defaults(method, profile), **overrides}


def main_variants(methods: Sequence[str], profile: str) -> list[Variant]:
    """One variant per method, with the profile's options."""
    return [Variant(m, m, method_options(m, profile)) for m in methods]


def _pretraining_amounts(default_body: str) -> dict[str, str]:
    """``{amount: body}`` of the pretraining ladder of a body; missing amounts map to ""."""
    return defaultdict(str, dict(PRETRAINING_AMOUNTS.get(default_body, ())))
