"""A notebook's figures, built on :class:`matplotlib.figure.Figure` (no pyplot: any backend,
no global state); :meth:`crossmodal.notebook.Report.add_figure` saves and shows them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_curves(runs: pd.DataFrame, column: str = "curve", ylabel: str | None = None,
                title: str = "", panels: Sequence[str] = ("task",), xlabel: str = "epoch"):
    """A panel per value of ``panels`` (e.g. task, or ablation and task): ``column`` (a list
    per run, e.g. the test metric per epoch) against its index, a line per variant: the mean
    over seeds with a band of ± one standard deviation (when there are several seeds).
    Epochs and steps are whole numbers, so the x axis ticks integers only."""
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
