"""ORCA's ablations (García-de-Herreros et al., research questions 1-4, as in the slides),
behind ``orca_ablations.ipynb``, and ORCA's alignment check of ``00_quickstart.ipynb``.

:func:`orca_ablation_variants` (proxy, freezing, pretraining, embedder training),
:func:`run_ablations`, :func:`ablation_table`, :func:`alignment_frame`,
:func:`check_alignment_lowers_otdd`, :func:`orca_ablation_checks`, :func:`otdd_epoch_checks`,
:func:`orca_ablation_finding`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.bodies import PRETRAINING_AMOUNTS
from crossmodal.errors import unknown_name
from crossmodal.notebook import (
    Check,
    NotebookSettings,
    Report,
    Variant,
    as_list,
    check_direction,
    differences_check,
    fmt_value,
    mean_pm_std,
    method_options,
    paper_table,
    run_grid,
    verdict_check,
)
from crossmodal.profiles import get_profile

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
    df = paper_table("orca_ablations")
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

    With ``runs`` (one row per run, as :func:`run_ablations` returns) every finding is a
    paired verdict over the seeds of each task: "A beats B" by :func:`verdict_check`, "more
    alignment epochs give a lower OTDD" by :func:`otdd_epoch_checks` (one verdict per step of
    the grid). Without ``runs`` each is one comparison of the means in ``table`` (no verdict).
    """
    checks = []
    if runs is not None and "ablation" in runs:
        runs = runs[runs["ablation"] == ablation]

    def judged(task, better, worse, claim, paper):
        if runs is not None:  # None: one of the two did not run
            return verdict_check(runs[runs["task"] == task], better, worse, claim=claim,
                                 paper=paper)
        a, b = _final_of(table, task, better), _final_of(table, task, worse)
        if a is None or b is None:
            return None
        sub = table[table["task"] == task]
        lower = bool(sub["lower_is_better"].iloc[0]) if "lower_is_better" in sub else True
        return check_direction(claim, a < b if lower else a > b,
                               f"{fmt_value(a)} vs {fmt_value(b)} (means over seeds)",
                               paper=paper)

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
            if runs is not None and "method_report" in runs:
                checks.extend(otdd_epoch_checks(runs[runs["task"] == task]))
                continue
            # without the runs: one comparison of the means over seeds
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


def otdd_epoch_checks(runs: pd.DataFrame) -> list[Check]:
    r""""More alignment epochs give a lower OTDD" (slides Fig. 6), one paired verdict per step
    of the alignment-epoch grid.

    For consecutive grid values :math:`e < e'` (the epochs each run actually aligned, from
    :func:`alignment_frame`; at 0 epochs the OTDD is the aligned runs' OTDD before alignment,
    the run without alignment reporting none) and every
    (task, seed) pair :math:`i` on which both ran (the same seed measures OTDD on the same
    fixed target subset),

    .. math:: d_i = \mathrm{OTDD}_i(e) - \mathrm{OTDD}_i(e')

    (OTDD after alignment; :math:`d_i > 0` favours the claim), judged by
    :func:`crossmodal.notebook.differences_check`. The tasks pool in OTDD units (pass one task's
    runs for a per-task verdict). Empty when fewer than two grid values were measured.
    """
    al = alignment_frame(runs)
    if al.empty:
        return []
    wide = al.pivot_table(index=["task", "seed"], columns="align_epochs", values="otdd_after",
                          aggfunc="mean")
    if 0 not in wide.columns:
        # the run without alignment reports no OTDD; at 0 epochs the OTDD is the aligned
        # runs' OTDD before alignment (same seed: same embedder init and evaluation subset)
        before = al[al["align_epochs"] > 0].groupby(["task", "seed"])["otdd_before"].mean()
        wide[0] = before.reindex(wide.index)
    epochs = sorted(wide.columns)
    tasks = ", ".join(dict.fromkeys(al["task"]))
    checks = []
    for e0, e1 in zip(epochs, epochs[1:]):
        pair = wide[[e0, e1]].dropna()
        means = pair.mean()
        c = differences_check(
            f"{tasks}: more alignment epochs give a lower OTDD ({int(e0)} -> {int(e1)})",
            (pair[e0] - pair[e1]).tolist(),
            detail=(f"mean OTDD after {int(e0)} epochs {fmt_value(means[e0])}, after "
                    f"{int(e1)} {fmt_value(means[e1])}"),
            paper="Fig. 6: OTDD per embedder-training epoch")
        if c is not None:
            checks.append(c)
    return checks


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
