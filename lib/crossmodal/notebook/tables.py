"""A notebook's tables and direction checks: ours beside the paper's numbers
(:func:`compare_with_paper`), classical reference rows, per-epoch summaries, stable text and
Markdown formatting, and :class:`Check` (a sanity check, or a paper claim with its paired
verdict over (task, seed) pairs, :mod:`crossmodal.verdicts`).

The gap between a reproduced value and the paper's is ``ours - paper`` and, relative,
``(ours - paper) / |paper|``; within a task, methods are ranked 1, 2, ... from the best
(lowest error: every paper metric is an error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.errors import InvalidInputError
from crossmodal.notebook.grid import DRY_RUN_STATUS, is_dry_run, load_splits
from crossmodal.notebook.settings import NotebookSettings
from crossmodal.paper_tables import MAIN_TABLES, NB360_TASKS, PDEBENCH_TASKS, main_paper_value
from crossmodal.reference import reference_runs
from crossmodal.reporting import round_sig
from crossmodal.verdicts import compare, paired_verdict


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
    ref = reference_runs(nb, load_splits)
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


def records(df: pd.DataFrame) -> list[dict]:
    """A table as JSON-able records (NaN and inf become None), for ``results.json``."""
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
    if runs.empty or not {better, worse} <= set(runs[variant_col]):
        return None
    v = compare(runs, better, worse, variant_col=variant_col)
    if v.n_pairs == 0:
        return None
    detail = v.detail() + (f"; {paper}" if paper else "")
    return Check(claim or f"{better} beats {worse}", v.holds, detail, False, paper, "claim",
                 v.verdict)


def differences_check(claim: str, diffs: Sequence[float], *, units: str = "",
                      detail: str = "", paper: str = "") -> Check | None:
    """The paired verdict on ``claim`` from its paired differences, as a :class:`Check`.

    ``diffs`` holds one difference per (task, seed) pair, oriented so that :math:`d_i > 0`
    favours the claim (e.g. D after fine-tuning minus D before it, for "fine-tuning raises
    D"); the verdict is :func:`crossmodal.verdicts.paired_verdict`'s (sign test and bootstrap
    interval of the mean difference). ``detail`` is appended to the verdict's numbers. None
    when there is no pair.
    """
    diffs = [float(d) for d in diffs]
    if not diffs:
        return None
    v = paired_verdict(diffs, units=units)
    text = v.detail() + "".join(f"; {x}" for x in (detail, paper) if x)
    return Check(claim, v.holds, text, False, paper, "claim", v.verdict)


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
