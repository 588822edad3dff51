"""The gap-adaptive proposal (slides 000) behind ``modality_gap.ipynb``: the modality gap D
per task (:func:`gap_estimates`), version A's loss weights (:func:`weight_frame`,
:func:`check_weights`, :func:`plot_weights`) and its variants (:func:`gap_variants`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crossmodal.errors import unknown_name
from crossmodal.methods import RunContext, get_method
from crossmodal.methods.gap_adaptive import GAP_DISTANCES, discrete_labels, weight_schedule
from crossmodal.models import build_model
from crossmodal.notebook import (
    Check,
    NotebookSettings,
    Variant,
    check_direction,
    fmt_value,
    load_splits,
    method_options,
    pairwise_check,
)
from crossmodal.profiles import default_body, get_profile
from crossmodal.protocol import train_defaults
from crossmodal.tasks import TaskSpec, get_task, spec_for_splits
from crossmodal.training import seed_everything


def estimate_task_gap(task: str | TaskSpec, profile: str = "smoke", *, splits: dict, seed: int = 0,
                      body: str | None = None, distances: tuple[str, ...] = (),
                      **options: Any) -> dict[str, Any]:
    """Version A's stages 1 and 2 alone: the modality gap D of a task, without fine-tuning.

    Builds the model as :func:`crossmodal.runner.run` does (same seed, same body), runs
    :class:`GapAdaptiveA`'s ``prepare`` and ``before_finetune`` (embedder stage, then D), and
    returns the method's report (``gap``, ``gap_distance``, ...), which equals the
    ``method_report`` of a full run with the same options. ``options`` are fields of
    :class:`GapAdaptiveAConfig` (e.g. ``gap_distance="mmd"``). ``distances`` adds
    ``gaps``: D under each of these estimators (``"otdd"``, ``"mmd"``, ``"auto"``) on the same
    embedder and samples; None where the estimator does not apply (OTDD of continuous labels).
    """
    spec = spec_for_splits(get_task(task) if isinstance(task, str) else task, splits)
    method = get_method("gap_adaptive_a", **options)
    prof = get_profile(profile)
    seed_everything(seed)
    model = build_model(spec, method.body_name(body or default_body(spec, prof)), seed=seed)
    ctx = RunContext(profile=prof.name, seed=seed, progress=False)
    method.prepare(model, spec, ctx)
    report = method.before_finetune(model, spec, splits, ctx)
    if distances:
        x, y = splits["train"]
        own = method.config.gap_distance
        gaps: dict[str, float | None] = {}
        for d in distances:
            if d not in GAP_DISTANCES:
                raise unknown_name("gap distance", d, GAP_DISTANCES)
            if d == "otdd" and discrete_labels(spec, y) is None:
                gaps[d] = None  # OTDD needs classes; the slides use MMD here
                continue
            method.config.gap_distance = d
            try:
                gaps[d] = method.measure_gap(model, spec, x, y, seed)
            finally:
                method.config.gap_distance = own
        report["gaps"] = gaps
    return report


def gap_variants(methods: Sequence[str], profile: str, *, alpha: float, beta: float,
                 eps: float, gamma: float) -> list[Variant]:
    """One variant per method; version A gets the loss constants (Option 2, continuous)."""
    out = []
    for m in methods:
        extra = (dict(alpha=alpha, beta=beta, eps=eps, gamma=gamma)
                 if m == "gap_adaptive_a" else {})
        out.append(Variant(m, m, method_options(m, profile, **extra)))
    return out


def gap_estimates(nb: NotebookSettings, distances: Sequence[str] = ("otdd", "mmd"),
                  seed: int | None = None, **options: Any) -> pd.DataFrame:
    """The modality gap D of every task under each estimator, after version A's embedder
    stage (:func:`estimate_task_gap`): one row per task and
    distance, with the estimator the slides prescribe for the task (``auto``: OTDD for
    discrete labels, MMD for continuous ones). ``options``: gap_adaptive_a's fields."""
    seed = nb.seeds[0] if seed is None else seed
    opts = method_options("gap_adaptive_a", nb.profile, **options)
    rows = []
    for task in nb.tasks:
        rep = estimate_task_gap(task, nb.profile, splits=load_splits(nb, task, seed), seed=seed,
                                distances=tuple(distances), **opts)
        for d in distances:
            rows.append({"task": task, "distance": d, "prescribed": rep["gap_distance"],
                         "D": rep["gaps"][d], "uses": d == rep["gap_distance"]})
    return pd.DataFrame(rows).astype({"D": float})


def weight_frame(gaps: pd.DataFrame, epochs: int | None, *, alpha: float, beta: float,
                 eps: float, gamma: float, profile: str = "paper",
                 max_source_weight: float = 100.0) -> pd.DataFrame:
    """Version A's loss weights per task and epoch for the prescribed D of each task: Option 2
    (continuous, capped at ``max_source_weight``) and Option 1 (switch at Gamma). ``epochs``
    None: each task's epochs in ``profile`` (the paper's, PaRe Tables 12/13). The ``epoch``
    column is 1-based (the first epoch has the full weight, the last 0)."""
    rows = []
    for _, g in gaps[gaps["uses"]].iterrows():
        total = epochs or train_defaults(get_task(g["task"]), profile)["epochs"]
        for weighting in ("continuous", "switch"):
            for w in weight_schedule(g["D"], total, weighting=weighting, alpha=alpha,
                                     beta=beta, eps=eps, gamma=gamma, cap=max_source_weight):
                rows.append({"task": g["task"], "D": g["D"], "weighting": weighting,
                             "epoch": w["epoch"] + 1, "target_weight": w["target_weight"],
                             "source_weight": w["source_weight"]})
    return pd.DataFrame(rows)


def check_weights(weights: pd.DataFrame) -> Check:
    """Sanity (by construction, asserted): Option 2's source weight falls with the epoch, and
    is lower for a larger gap D at every epoch (the slides' intent: a large gap should focus
    on the target loss). The formula is monotone, so this tests our code, not the slides."""
    cont = weights[weights["weighting"] == "continuous"]
    falls = all(bool((np.diff(g.sort_values("epoch")["source_weight"]) <= 0).all())
                for _, g in cont.groupby("task"))
    by_d = cont.sort_values("D")
    lower = all(bool((np.diff(g["source_weight"].to_numpy()) <= 1e-12).all())
                for _, g in by_d.groupby("epoch"))
    return check_direction(
        "Option 2's source weight falls with the epoch and with the gap D", falls and lower,
        f"{cont['task'].nunique()} tasks, D = "
        + ", ".join(f"{t}: {fmt_value(d)}" for t, d in
                    cont.groupby("task", sort=False)["D"].first().items()),
        assert_holds=True, paper="slides 000, slide 56 (Option 2)", kind="sanity")


def plot_weights(weights: pd.DataFrame):
    """The source-loss weight per epoch per task: Option 2 (lines) and Option 1 (dashed)."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for (task, weighting), g in weights.groupby(["task", "weighting"], sort=False):
        style = "-o" if weighting == "continuous" else "--"
        ax.plot(g["epoch"], g["source_weight"], style,
                label=f"{task} (D={fmt_value(g['D'].iloc[0])}, {weighting})")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("source-loss weight")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    ax.set_title("gap-adaptive loss weights (version A)", fontsize=9)
    return fig


#: The slides' expectations, as (better, worse) claims: each gap-adaptive version beats its
#: base (version A: NFT with an embedder stage; version B: PaRe), and PaRe beats NFT (PaRe
#: Tables 1/2, the base of version B).
GAP_CLAIMS = (("gap_adaptive_a", "nft"), ("gap_adaptive_b", "pare"), ("pare", "nft"))


def claim_checks(runs: pd.DataFrame,
                 claims: Sequence[tuple[str, str]] = GAP_CLAIMS) -> list[Check]:
    """Each claim of :data:`GAP_CLAIMS` as a paired verdict over the (task, seed) pairs of
    ``runs`` (:func:`crossmodal.notebook.pairwise_check`; the tasks' metrics differ, so the
    differences are relative, in % of each task's scale); claims whose two methods did not
    both run are left out."""
    checks = [pairwise_check(runs, better, worse) for better, worse in claims]
    return [c for c in checks if c is not None]
