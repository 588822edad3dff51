"""The RECRAFT and ORCA-ablation claims as paired verdicts over (task, seed) pairs (issue 15
item 3): each converted check on small synthetic frames, one case that holds, one that is
contradicted and one that is inconclusive (fake runs, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossmodal import notebook as cm
from crossmodal.studies import orca, recraft
from crossmodal.verdicts import bootstrap_ci

TASKS, SEEDS = ("t1", "t2"), (0, 1, 2)
PAIRS = [(t, s) for t in TASKS for s in SEEDS]


def _row(task, seed, final, report, variant="recraft", method="recraft",
         lower_is_better=True):
    return cm.run_row({"task": task, "method": method, "seed": seed, "body": "minilm",
                       "metric": {"display": "err" if lower_is_better else "acc",
                                  "lower_is_better": lower_is_better},
                       "final_metric": final, "best_metric": final,
                       "epochs": [{"test_metric": final, "train_loss": 0.5}],
                       "n_train": 2, "n_test": 2, "wall_seconds": 0.0,
                       "method_report": report}, variant)


# --------------------------------------------------------------------------- RECRAFT gap


def _gaps(values, pairs=PAIRS) -> pd.DataFrame:
    return pd.DataFrame([{"task": t, "seed": s, "bound": 2.0, "target_loss": 1.0,
                          "gap_pct": g} for (t, s), g in zip(pairs, values)])


def test_gap_claim_holds_when_every_pair_and_the_interval_are_below_29():
    gaps = [10.0, 12.0, 15.0, 20.0, 11.0, 18.0]
    c = recraft.check_gap_claim(_gaps(gaps))
    assert c.verdict == "holds" and c.holds and c.kind == "claim" and not c.asserted
    lo, hi = bootstrap_ci(gaps)
    assert hi < 29.0
    assert f"mean gap {cm.fmt_value(np.mean(gaps))} %" in c.detail
    assert f"CI {cm.fmt_value(lo)} .. {cm.fmt_value(hi)} %" in c.detail
    assert "6 (task, seed) pairs: 6 wins, 0 losses" in c.detail
    assert "t1/0 10, t1/1 12" in c.detail  # every pair's gap is printed
    assert "[holds, paper claim, observed]" in c.line()


def test_gap_claim_is_contradicted_when_the_interval_lies_above_29():
    c = recraft.check_gap_claim(_gaps([60.0, 80.0, 75.0, 90.0, 55.0, 70.0]))
    assert c.verdict == "contradicted" and not c.holds
    assert "0 wins, 6 losses" in c.detail


def test_gap_claim_is_inconclusive_within_the_noise_or_with_too_few_pairs():
    # gaps on both sides of 29: the interval straddles it
    c = recraft.check_gap_claim(_gaps([10.0, 50.0, 20.0, 45.0, 15.0, 40.0]))
    assert c.verdict == "inconclusive" and not c.holds
    lo, hi = bootstrap_ci([10.0, 50.0, 20.0, 45.0, 15.0, 40.0])
    assert lo < 29.0 < hi
    # one task x three seeds all far below: too few pairs for the sign test
    few = recraft.check_gap_claim(_gaps([5.0, 6.0, 7.0], PAIRS[:3]))
    assert few.verdict == "inconclusive" and "3 wins, 0 losses" in few.detail
    # only the measured rows count (a dense task is skipped: no bound)
    frame = pd.concat([_gaps([10.0] * 6), _gaps([np.nan], [("dense", 0)]).assign(bound=np.nan)])
    assert "6 (task, seed) pairs of 2 tasks" in recraft.check_gap_claim(frame).detail
    assert recraft.check_gap_claim(frame.iloc[-1:]) is None


# --------------------------------------------------------------------------- RECRAFT kappa


def _kappa_runs(error) -> pd.DataFrame:
    """RECRAFT runs at kappa 0.1, 0.3, 1.0 on every (task, seed) pair; ``error(k, i)``."""
    return pd.DataFrame([_row(t, s, error(k, i), {"kappa": k}, variant=f"kappa={k}")
                         for k in (0.1, 0.3, 1.0) for i, (t, s) in enumerate(PAIRS)])


def _kappa_claim(runs: pd.DataFrame):
    sweep = pd.DataFrame({"kappa": [None, 0.1, 0.3, 1.0], "fit_loss": [0.5, 1.5, 1.0, 0.6],
                          "holdout_accuracy": [0.9, 0.7, 0.895, 0.9]})
    checks = recraft.kappa_checks(recraft.kappa_table(runs), sweep, 0.01, runs=runs)
    assert checks[0].kind == "sanity" and "one proxy sweep" in checks[1].detail
    assert len(checks) == 3
    return checks[2]


def test_kappa_claim_holds_when_the_range_wins_on_every_pair():
    c = _kappa_claim(_kappa_runs(lambda k, i: 10.0 + i - (3.0 if k == 0.3 else 0.0)))
    assert c.verdict == "holds" and c.kind == "claim"
    assert "6 (task, seed) pairs: 6 wins, 0 losses" in c.detail
    assert "t1: in range 8 (kappa 0.3) vs outside 11 (kappa 0.1)" in c.detail


def test_kappa_claim_is_contradicted_when_outside_the_range_wins():
    c = _kappa_claim(_kappa_runs(lambda k, i: 10.0 + i + (3.0 if k == 0.3 else k)))
    assert c.verdict == "contradicted" and "0 wins, 6 losses" in c.detail
    assert "t1: in range 14 (kappa 0.3) vs outside 11.1 (kappa 0.1)" in c.detail  # seed means


def test_kappa_claim_is_inconclusive_when_the_signs_mix():
    c = _kappa_claim(_kappa_runs(lambda k, i: 10.0 + (1.0 if (k == 0.3) == (i % 2 == 0)
                                                      else 0.0)))
    assert c.verdict == "inconclusive" and "3 wins, 3 losses" in c.detail


def test_kappa_range_pairs_orient_by_the_metric_and_skip_one_sided_grids():
    per_run = pd.DataFrame({"task": "t", "seed": 0, "kappa": [0.1, 0.4, 1.0], "metric": "acc",
                            "lower_is_better": False, "final": [0.5, 0.9, 0.7]})
    pairs = recraft.kappa_range_pairs(per_run, 0.3, 0.5).set_index("variant")
    assert pairs.loc[recraft.IN_RANGE, "final"] == 0.9  # higher is better: the max
    assert pairs.loc[recraft.OUT_OF_RANGE, "kappa"] == 1.0
    assert recraft.kappa_range_pairs(per_run[per_run["kappa"] > 0.3].iloc[:1], 0.3,
                                     0.5).empty


# --------------------------------------------------------------------------- ORCA epochs


def _align_runs(otdd, seeds=range(6), tasks=("t1",)) -> pd.DataFrame:
    """ORCA runs of the embedder-training ablation: ``otdd(e, i)`` after e alignment epochs
    on pair i (OTDD before is 10 for every run)."""
    pairs = [(t, s) for t in tasks for s in seeds]
    rows = [_row(t, s, 0.5, {"otdd_before": 10.0, "otdd_after": otdd(e, i),
                             "alignment_curve": [1.0] * e},
                 variant=f"align_epochs={e}", method="orca")
            for e in (0, 2, 5) for i, (t, s) in enumerate(pairs)]
    return pd.DataFrame(rows).assign(ablation="embedder_training")


def _epoch_checks(runs):
    table = orca.ablation_table(runs, "smoke")
    checks = orca.orca_ablation_checks("embedder_training", table, runs)
    assert [c.claim for c in checks] == [
        "t1: more alignment epochs give a lower OTDD (0 -> 2)",
        "t1: more alignment epochs give a lower OTDD (2 -> 5)"]
    return checks


def test_more_alignment_epochs_lower_otdd_holds_per_step_over_seeds():
    steps = _epoch_checks(_align_runs(lambda e, i: 10.0 - e - 0.1 * i))
    assert [c.verdict for c in steps] == ["holds", "holds"]
    assert "6 (task, seed) pairs: 6 wins, 0 losses" in steps[0].detail
    assert "mean OTDD after 0 epochs 9.75, after 2 7.75" in steps[0].detail


def test_more_alignment_epochs_lower_otdd_contradicted_and_inconclusive():
    # 0 -> 2 lowers it on every seed, 2 -> 5 raises it on every seed
    up = _epoch_checks(_align_runs(lambda e, i: {0: 10.0, 2: 8.0, 5: 9.0}[e] + 0.1 * i))
    assert [c.verdict for c in up] == ["holds", "contradicted"]
    # 2 -> 5 mixed over the seeds: within the noise
    mixed = _epoch_checks(_align_runs(lambda e, i: {0: 10.0, 2: 8.0,
                                                    5: 8.0 + (-0.1) ** i * 0.5}[e]))
    assert mixed[1].verdict == "inconclusive" and "3 wins, 3 losses" in mixed[1].detail


def test_the_zero_epoch_otdd_is_the_one_before_alignment():
    # ORCA without alignment reports no OTDD: epoch 0 is the aligned runs' OTDD before
    runs = _align_runs(lambda e, i: 10.0 - e - 0.1 * i)
    runs["method_report"] = [{} if v == "align_epochs=0" else rep
                             for v, rep in zip(runs["variant"], runs["method_report"])]
    first, second = _epoch_checks(runs)
    assert first.verdict == "holds" and "mean OTDD after 0 epochs 10, after 2 7.75" in \
        first.detail
    assert second.verdict == "holds"


def test_otdd_epoch_checks_pool_tasks_and_need_two_grid_values():
    runs = _align_runs(lambda e, i: 10.0 - e, seeds=(0, 1, 2), tasks=("t1", "t2"))
    pooled = orca.otdd_epoch_checks(runs)
    assert [c.verdict for c in pooled] == ["holds", "holds"]  # 2 tasks x 3 seeds = 6 pairs
    assert pooled[0].claim.startswith("t1, t2: ")
    # per task (what the notebook prints): 3 seeds only, inconclusive whatever the signs
    assert {c.verdict for c in _epoch_checks(runs[runs["task"] == "t1"])} == {"inconclusive"}
    assert orca.otdd_epoch_checks(runs[runs["variant"] == "align_epochs=0"]) == []


@pytest.mark.parametrize("better,expect", [(0.4, "holds"), (0.6, "contradicted")])
def test_ablation_claims_are_paired_verdicts_not_one_comparison(better, expect):
    rows = [_row("t1", s, f + 0.01 * s, {}, variant=v, method="orca")
            for s in range(6) for v, f in (("freeze=none", better), ("freeze=body", 0.5))]
    runs = pd.DataFrame(rows).assign(ablation="freezing")
    (c,) = orca.orca_ablation_checks("freezing", orca.ablation_table(runs, "smoke"), runs)
    assert c.verdict == expect and "6 (task, seed) pairs" in c.detail
