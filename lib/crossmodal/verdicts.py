r"""Paired verdicts: does a claim "A beats B" hold over (task, seed) pairs, within the noise?

A smoke run is one draw of a noisy experiment (data subset, initialisation, data order all
depend on the seed), so a claim such as "ORCA beats NFT" is judged over the pairs
:math:`i = (\text{task}, \text{seed})` on which both methods ran with the same seed (same
data subset and initialisation of the shared parts). For each pair the **difference** is

.. math:: d_i = \frac{m_i(B) - m_i(A)}{s_{t(i)}}

with :math:`m` the task metric oriented so that lower is better (every paper metric is an
error); :math:`d_i > 0` means A did better on pair i. The scale :math:`s_t` is 1 when every
pair shares one metric (the difference is in the metric's units, e.g. percentage points),
otherwise the mean of :math:`|m|` over both methods on task t (the difference is relative,
in % of the task's typical value), so that tasks with different metrics can be pooled.

Two statistics, both printed with the verdict:

* the **sign test**: with :math:`w` wins (:math:`d_i > 0`) and :math:`l` losses
  (:math:`d_i < 0`), ties dropped, the two-sided binomial p-value
  :math:`p = \min(1, 2 \sum_{k \le \min(w,l)} \binom{w+l}{k} 2^{-(w+l)})`;
* a **bootstrap 95 % interval** of the mean difference :math:`\bar d` (percentile method,
  2,000 resamples of the pairs with replacement, seeded).

The verdict is **holds** when the interval lies above 0 *and* the sign test gives
:math:`p \le \alpha` (0.05), **contradicted** when the interval lies below 0 and
:math:`p \le \alpha`, and **inconclusive** otherwise (within the noise). Requiring both is
deliberate: with few pairs a bootstrap interval is too narrow (three positive differences
give an interval above 0), while the sign test cannot reach :math:`p \le 0.05` with fewer
than 6 pairs, so a claim observed on 1 task x 3 seeds is always reported as inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crossmodal.errors import InvalidInputError

VERDICTS = ("holds", "contradicted", "inconclusive")
ALPHA = 0.05
N_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Verdict:
    """The outcome of a paired comparison (see the module docstring for the rule)."""

    verdict: str
    n_pairs: int
    wins: int
    losses: int
    ties: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_sign: float
    units: str  # "" (metric units) or "%" (relative to the task's scale)

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def detail(self) -> str:
        """The numbers behind the verdict, in one line."""
        if self.n_pairs == 0:
            return "no (task, seed) pair where both ran"
        u = " %" if self.units == "%" else ""
        return (f"{self.n_pairs} (task, seed) pairs: {self.wins} wins, {self.losses} losses, "
                f"{self.ties} ties; sign test p = {_fmt(self.p_sign)}; mean difference "
                f"{_fmt(self.mean_diff)}{u} (95 % bootstrap CI {_fmt(self.ci_low)} .. "
                f"{_fmt(self.ci_high)}{u}; > 0 favours the claim)")


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.3g}"


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value for ``wins`` vs ``losses`` (ties already dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def bootstrap_ci(diffs: Sequence[float], *, level: float = 0.95, n_boot: int = N_BOOTSTRAP,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (seeded, so reports are stable)."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_verdict(diffs: Sequence[float], *, alpha: float = ALPHA, units: str = "",
                   seed: int = 0) -> Verdict:
    """The verdict on paired differences ``diffs`` (> 0 favours the claim)."""
    d = np.asarray(diffs, dtype=float)
    if not np.isfinite(d).all():
        raise InvalidInputError("paired differences must be finite (a run without a metric?)")
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    ties = int(d.size - wins - losses)
    p = sign_test(wins, losses)
    lo, hi = bootstrap_ci(d, seed=seed)
    if d.size and lo > 0 and p <= alpha:
        verdict = "holds"
    elif d.size and hi < 0 and p <= alpha:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return Verdict(verdict, int(d.size), wins, losses, ties,
                   float(d.mean()) if d.size else math.nan, lo, hi, p, units)


def pair_differences(runs, better: str, worse: str, *, column: str = "final",
                     variant_col: str = "variant") -> tuple[list[float], str]:
    """Differences ``d_i`` of ``better`` over ``worse`` on shared (task, seed) pairs.

    ``runs`` has one row per run with task, seed, ``variant_col``, ``column`` (the metric)
    and ``lower_is_better``. Returns the differences and their units (see the module
    docstring: "" when every task shares one metric, else "%").
    """
    sub = runs[runs[variant_col].isin([better, worse])]
    if sub.empty:
        return [], ""
    wide = sub.pivot_table(index=["task", "seed"], columns=variant_col, values=column,
                           aggfunc="mean")
    if better not in wide or worse not in wide:
        return [], ""
    wide = wide.dropna(subset=[better, worse])
    lower = sub.groupby("task")["lower_is_better"].first()
    tasks = wide.index.get_level_values("task")
    sign = np.where(lower.loc[tasks].to_numpy(dtype=bool), 1.0, -1.0)
    raw = (wide[worse] - wide[better]).to_numpy() * sign
    metrics = sub["metric"].unique() if "metric" in sub else [None]
    if len(metrics) <= 1:
        return [float(x) for x in raw], ""
    scale = (wide[[better, worse]].abs().groupby(level="task").mean().mean(axis=1))
    s = scale.loc[tasks].to_numpy()
    s = np.where(s > 0, s, 1.0)
    return [float(x) for x in 100.0 * raw / s], "%"


def compare(runs, better: str, worse: str, *, column: str = "final",
            variant_col: str = "variant", alpha: float = ALPHA) -> Verdict:
    """The paired verdict on "``better`` beats ``worse``" over the (task, seed) pairs of runs."""
    diffs, units = pair_differences(runs, better, worse, column=column, variant_col=variant_col)
    return paired_verdict(diffs, alpha=alpha, units=units)
