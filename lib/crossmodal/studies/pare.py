"""PaRe's ablations behind ``pare_k_schedules.ipynb``: k schedules and mixing (Table 4), gate
vs random patch selection (Table 5), gate networks (Table 6).

:func:`pare_variants`, :func:`run_pare_ablations`, :func:`pare_ablation_table`,
:func:`pare_paper_table`, :func:`pare_k_table`, :func:`k_wide`, :func:`pare_ablation_checks`,
:func:`check_gradual_schedules`, :func:`plot_k_schedules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.methods.pare import schedule_table
from crossmodal.notebook import (
    NB360_TASKS,
    Check,
    NotebookSettings,
    Report,
    Variant,
    check_direction,
    mean_pm_std,
    method_options,
    paper_table,
    run_grid,
    status_of,
    verdict_check,
)

#: PaRe's ablations: name -> (config field, paper table, {our value: the table's setting}).
#: Table 4 (k schedules and mixing), Table 5 (gate vs random), Table 6 (gate networks).
PARE_ABLATIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "k_schedule": ("k_schedule", "pare_k_schedules", {
        "linear": "linear", "exponential": "exponential", "piecewise": "piecewise",
        "non_gradual": "non-gradual"}),
    "mixing": ("mixing", "pare_mixing_ablation", {
        "patch_replacement": "patch_replacement_linear_k (PaRe default)", "mixup": "mixup",
        "cutmix": "cutmix"}),
    "selection": ("selection", "pare_gate_ablation", {
        "gate": "gate (FC+sigmoid) patch scoring", "random": "random patch selection"}),
    "gate": ("gate", "pare_gate_network_config", {
        "fc": "FC + sigmoid (Ours)", "mlp": "MLP + sigmoid",
        "mlp_dropout": "MLP + dropout + sigmoid"}),
}


#: PaRe's own choice for each ablated field: the reference of every comparison.
PARE_DEFAULTS = {"k_schedule": "linear", "mixing": "patch_replacement", "selection": "gate",
                 "gate": "fc"}


#: Where each ablation's numbers are in the PaRe paper.
PARE_TABLES = {"k_schedule": "Table 4 (k schedules)", "mixing": "Table 4 (mixing)",
               "selection": "Table 5", "gate": "Table 6"}


def pare_variants(ablation: str, values: Sequence[str], profile: str) -> list[Variant]:
    """PaRe with one field varied (``values``; PaRe's default is added first if missing)."""
    if ablation not in PARE_ABLATIONS:
        raise unknown_name("PaRe ablation", ablation, list(PARE_ABLATIONS))
    field = PARE_ABLATIONS[ablation][0]
    values = list(dict.fromkeys([PARE_DEFAULTS[ablation], *values]))
    base = method_options("pare", profile)
    return [Variant(v, "pare", {**base, field: v}) for v in values]


def run_pare_ablations(nb: NotebookSettings, axes: dict[str, Sequence[str] | None],
                       report: Report | None = None) -> pd.DataFrame:
    """Run every ablation of ``axes`` (ablation -> values; None or empty: skipped). PaRe's
    default configuration is shared by all ablations and runs once. Rows carry ``ablation``."""
    memo: dict = {}
    frames = []
    for ablation, values in axes.items():
        if not values:
            continue
        runs = run_grid(nb, pare_variants(ablation, values, nb.profile), memo=memo)
        frames.append(runs.assign(ablation=ablation))
    if not frames:
        raise InvalidInputError("no PaRe ablation to run: give at least one of k_schedules, "
                                "mixings, selections, gates")
    runs = pd.concat(frames, ignore_index=True)
    if report is not None:
        report.add_runs(runs)
    return runs


def pare_paper_value(ablation: str, value: str, task: str) -> float | None:
    """The PaRe paper's number for one ablation value on one NAS-Bench-360 task (or None)."""
    _, table, settings = PARE_ABLATIONS[ablation]
    if value not in settings:
        return None  # e.g. the "constant" schedule: not in the paper
    df = paper_table(table)
    rows = df[(df["task"] == task) & (df["setting"] == settings[value])]
    v = rows["value"].iloc[0] if len(rows) else np.nan
    return None if pd.isna(v) else float(v)


def pare_paper_table(ablation: str, values: Sequence[str],
                     tasks: Sequence[str] = NB360_TASKS) -> pd.DataFrame:
    """The paper's table of an ablation: one row per task, one column per value."""
    _, table, _ = PARE_ABLATIONS[ablation]
    metrics = paper_table(table).groupby("task")["metric"].first()
    values = list(dict.fromkeys([PARE_DEFAULTS[ablation], *values]))
    rows = []
    for t in tasks:
        row: dict[str, Any] = {"task": t, "metric": metrics.get(t, "")}
        row.update({v: pare_paper_value(ablation, v, t) for v in values})
        rows.append(row)
    return pd.DataFrame(rows).astype({v: float for v in values})


def pare_ablation_table(runs: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Per ablation x task x value: final and best test metric (mean over seeds), the paper's
    number for the task when it is a paper task, and the status of the comparison."""
    g = runs.groupby(["ablation", "task", "variant"], sort=False)
    table = g.agg(metric=("metric", "first"), lower_is_better=("lower_is_better", "first"),
                  ours=("final", "mean"), ours_std=("final", "std"), best=("best", "mean"),
                  seeds=("seed", "nunique")).reset_index()
    table["ours ± std"] = mean_pm_std(table["ours"], table["ours_std"])
    table["paper"] = [pare_paper_value(a, v, t) if t in NB360_TASKS else np.nan
                      for a, t, v in zip(table["ablation"], table["task"], table["variant"])]
    table["paper"] = table["paper"].astype(float)
    table["gap"] = table["ours"] - table["paper"]
    table["status"] = [status_of(profile, p) for p in table["paper"]]
    return table


def _paper_wins(ablation: str, better: str, worse: str) -> tuple[int, int, int]:
    wins = ties = n = 0
    for t in NB360_TASKS:
        a, b = pare_paper_value(ablation, better, t), pare_paper_value(ablation, worse, t)
        if a is None or b is None:
            continue
        n += 1
        wins += a < b
        ties += a == b
    return wins, ties, n


def pare_ablation_checks(table: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[Check]:
    """For each ablation: does PaRe's default beat each other value on our tasks, as in the
    paper? (Observed: at smoke scale either can win.) With ``runs`` (one row per run), each
    claim gets a paired verdict over the (task, seed) pairs (:func:`verdict_check`)."""
    checks = []
    if runs is not None:
        for ablation in dict.fromkeys(table["ablation"]):
            sub = runs[runs["ablation"] == ablation]
            default = PARE_DEFAULTS[ablation]
            for v in dict.fromkeys(sub["variant"]):
                if v == default:
                    continue
                pw, pt, pn = _paper_wins(ablation, default, v)
                paper = (f"paper {PARE_TABLES[ablation]}: {pw}/{pn} tasks, {pt} ties" if pn
                         else "not in the paper")
                c = verdict_check(sub, default, v, claim=f"PaRe's {default} beats {v}",
                                  paper=paper)
                if c is not None:
                    checks.append(c)
        return checks
    for ablation in dict.fromkeys(table["ablation"]):
        sub = table[table["ablation"] == ablation]
        default = PARE_DEFAULTS[ablation]
        for v in dict.fromkeys(sub["variant"]):
            if v == default:
                continue
            wins = ties = n = 0
            for task in dict.fromkeys(sub["task"]):
                rows = sub[sub["task"] == task].set_index("variant")
                if default not in rows.index or v not in rows.index:
                    continue
                sign = 1.0 if rows["lower_is_better"].iloc[0] else -1.0
                a, b = sign * rows.loc[default, "ours"], sign * rows.loc[v, "ours"]
                n += 1
                wins += bool(a < b)
                ties += bool(a == b)
            pw, pt, pn = _paper_wins(ablation, default, v)
            paper = (f"paper {PARE_TABLES[ablation]}: {pw}/{pn} tasks, {pt} ties" if pn
                     else "not in the paper")
            checks.append(check_direction(f"PaRe's {default} beats {v}", wins * 2 > n,
                                          f"ours: {wins}/{n} tasks, {ties} ties; {paper}",
                                          paper=paper))
    return checks


def pare_k_table(runs: pd.DataFrame) -> pd.DataFrame:
    """k per fine-tuning epoch (1-based) of every k-schedule run, as the run used it."""
    rows = []
    sub = runs[runs["ablation"] == "k_schedule"] if "ablation" in runs else runs
    for _, r in sub.iterrows():
        rep = r["method_report"]
        for row in schedule_table([rep["k_schedule"]], rep["k0"], len(r["curve"]),
                                  n_patches=rep["n_patches"], seed=int(r["seed"])):
            rows.append({"task": r["task"], "schedule": row["schedule"],
                         "epoch": row["epoch"] + 1, "k": row["k"], "N": rep["n_patches"]})
    return pd.DataFrame(rows).drop_duplicates(["task", "schedule", "epoch"])


def k_wide(k_table: pd.DataFrame) -> pd.DataFrame:
    """:func:`pare_k_table` with one column per epoch (``ep1``, ``ep2``, ...), for printing."""
    wide = k_table.pivot_table(index=["task", "schedule", "N"], columns="epoch", values="k",
                               sort=False)
    wide.columns = [f"ep{int(c)}" for c in wide.columns]
    return wide.astype(int).reset_index()


def check_gradual_schedules(kinds: Sequence[str], k0: int, epochs: Sequence[int]) -> Check:
    """Asserted: every gradual schedule starts at k0 and never increases, for each horizon
    (PaRe's "k decreases" with the epoch; the non-gradual and constant ones are exempt)."""
    bad = []
    gradual = [k for k in kinds if k in ("linear", "exponential", "piecewise")]
    for total in epochs:
        for kind in gradual:
            ks = [r["k"] for r in schedule_table([kind], k0, total)]
            if ks[0] != k0 or any(b > a for a, b in zip(ks, ks[1:])):
                bad.append(f"{kind} over {total} epochs")
    return check_direction(
        "gradual k schedules start at k0 and never increase", not bad,
        f"{', '.join(gradual)} over {', '.join(map(str, epochs))} epochs"
        + (f"; fails: {', '.join(bad)}" if bad else ""), assert_holds=True,
        paper="PaRe §3: k decreases with the epoch")


def plot_k_schedules(k_table: pd.DataFrame, kinds: Sequence[str], k0: int = 3000,
                     paper_epochs: int = 60):
    """Left: k per epoch as our runs used it (k0 capped to N). Right: k over ``paper_epochs``
    epochs with the paper's k0 (ORCA trains CIFAR-100 for 60 epochs)."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for (task, kind), grp in k_table.groupby(["task", "schedule"], sort=False):
        left.plot(grp["epoch"], grp["k"], marker="o", label=f"{kind} ({task})")

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("fine-tuning epoch")
    left.set_ylabel("k (replaced patches)")
    left.set_title("our runs (k0 capped to N patches)", fontsize=9)
    left.legend(fontsize=7)
    long = pd.DataFrame(schedule_table(kinds, k0, paper_epochs))
    for kind, grp in long.groupby("schedule", sort=False):
        right.step(grp["epoch"] + 1, grp["k"], where="post", label=kind)
    right.set_xlabel("fine-tuning epoch")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    right.set_ylabel("k")
    right.set_title(f"k0 = {k0} over {paper_epochs} epochs", fontsize=9)
    right.legend(fontsize=7)
    return fig
