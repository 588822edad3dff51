"""crossmodal.studies: the tables, checks and runs behind the five method notebooks (fake runs,
no training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from crossmodal import notebook as cm
from crossmodal import studies as st
from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.notebook import grid
from crossmodal.studies import gap_adaptive as gap_study


def _result(task, method, seed, options, final, report=None, probes=None, epochs=3):
    return {"task": task, "method": method, "seed": seed, "body": "minilm",
            "metric": {"display": "err", "lower_is_better": True},
            "final_metric": final, "best_metric": final,
            "epochs": [{"test_metric": final + e, "train_loss": 0.5} for e in range(epochs)][::-1],
            "n_train": 2, "n_test": 2, "wall_seconds": 0.0,
            "method_report": report or {}, **({"probes": probes} if probes is not None else {})}


# --------------------------------------------------------------------------- PaRe


def test_pare_variants_put_the_default_first_and_reject_unknown_ablations():
    names = [v.name for v in st.pare_variants("k_schedule", ["exponential"], "smoke")]
    assert names == ["linear", "exponential"]
    v = st.pare_variants("gate", ["mlp", "fc"], "smoke")
    assert [x.name for x in v] == ["fc", "mlp"] and v[1].options["gate"] == "mlp"
    assert v[0].options["proxy_samples"] == cm.METHOD_PROFILE_OPTIONS["pare"]["smoke"][
        "proxy_samples"]
    with pytest.raises(UnknownNameError):
        st.pare_variants("lambda", ["x"], "smoke")


def test_pare_paper_values_come_from_tables_4_to_6():
    assert st.pare_paper_value("k_schedule", "exponential", "CIFAR100") == 6.38
    assert st.pare_paper_value("mixing", "mixup", "Cosmic") == 0.5
    assert st.pare_paper_value("selection", "random", "Spherical") == 28.06
    assert st.pare_paper_value("gate", "mlp", "ECG") is None  # Table 6 has 7 tasks
    assert st.pare_paper_value("k_schedule", "constant", "CIFAR100") is None
    t = st.pare_paper_table("selection", ["random"])
    assert list(t.columns) == ["task", "metric", "gate", "random"] and len(t) == 10
    assert t.loc[t["task"] == "CIFAR100", "gate"].item() == 6.25


def test_run_pare_ablations_shares_the_default_run_and_checks_directions(monkeypatch):
    calls = []
    finals = {"linear": 2.0, "exponential": 3.0, "mixup": 2.0}

    def fake_run(task, method, profile, **kw):
        o = kw["method_options"]
        calls.append(o)
        key = o.get("k_schedule", o.get("mixing"))
        key = "linear" if key == "patch_replacement" else key
        rep = {"k_schedule": o.get("k_schedule", "linear"), "k0": 3000, "n_patches": 20}
        return _result(task, method, kw["seed"], o, finals[key], rep)

    import crossmodal.runner

    monkeypatch.setattr(crossmodal.runner, "run", fake_run)
    monkeypatch.setattr(grid, "load_splits", lambda nb, task, seed: {})
    nb = cm.settings("pare_k_schedules", "smoke", tasks=["smoke_gunpoint"], seeds=[0])
    report_runs = st.run_pare_ablations(nb, {"k_schedule": ["linear", "exponential"],
                                             "mixing": ["mixup"], "gate": None})
    assert len(calls) == 3 and len(report_runs) == 4  # linear == patch_replacement: one run
    table = st.pare_ablation_table(report_runs, "smoke")
    assert list(table["variant"]) == ["linear", "exponential", "patch_replacement", "mixup"]
    assert table["paper"].isna().all() and (table["status"] == "no paper value").all()
    checks = {c.claim: c for c in st.pare_ablation_checks(table)}
    assert checks["PaRe's linear beats exponential"].holds
    mix = checks["PaRe's patch_replacement beats mixup"]
    assert not mix.holds and "1 ties" in mix.detail and "9/10 tasks" in mix.detail
    k = st.pare_k_table(report_runs)
    assert set(k["schedule"]) == {"linear", "exponential"}
    assert list(k[k["schedule"] == "linear"]["k"]) == [20, 13, 6]
    wide = st.k_wide(k)
    assert list(wide.columns) == ["task", "schedule", "N", "ep1", "ep2", "ep3"]
    with pytest.raises(InvalidInputError, match="no PaRe ablation"):
        st.run_pare_ablations(nb, {"k_schedule": []})


def test_gradual_schedule_check_is_asserted():
    c = st.check_gradual_schedules(["linear", "exponential", "piecewise", "non_gradual"], 3000,
                                   [3, 60])
    assert c.holds and c.asserted and "non_gradual" not in c.detail


# --------------------------------------------------------------------------- MoNA


def _mona_runs():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    labels = (torch.arange(30) % 2)
    probes = [{"epoch": 0, "discrepancy": 0.4, "discrepancy_exact": 0.3,
               "source_logits": logits.tolist(), "target_labels": labels.tolist()},
              {"epoch": 1, "discrepancy": 0.5, "discrepancy_exact": 0.45}]
    rows = [cm.run_row(_result("smoke_gunpoint", "nft", 0, {}, 10.0, probes=probes, epochs=1)),
            cm.run_row(_result("smoke_digits", "nft", 0, {}, 10.0, epochs=1,
                               probes=[{"epoch": 0, "skipped": "10 classes"}]))]
    return pd.DataFrame(rows)


def test_discrepancy_frame_and_the_approximation_study():
    runs = _mona_runs()
    frame = st.discrepancy_frame(runs)
    assert list(frame["epoch"]) == [0, 1, 0]
    assert math.isnan(frame["test_metric"].iloc[0]) and frame["test_metric"].iloc[1] == 10.0
    assert frame["skipped"].iloc[2] == "10 classes"
    study = st.discrepancy_approximation(runs, ["disagreement", "kl"], [1, 10])
    assert set(study["distance"]) == {"disagreement", "kl"}
    assert (study["classes"] == 2).all() and (study["source_classes"] == 5).all()
    checks = st.check_approximation(study)
    assert all(c.holds and c.asserted and c.kind == "sanity" for c in checks)
    assert "sanity check: holds by construction" in checks[0].line()
    broken = study.assign(approx=study["exact"] - 0.1)
    with pytest.raises(AssertionError, match="approximation is >="):
        st.check_approximation(broken)
    with pytest.raises(InvalidInputError, match="source logits"):
        st.discrepancy_approximation(runs, ["tv"], [1], task="smoke_digits")


# --------------------------------------------------------------------------- RECRAFT


def test_bound_frame_and_the_observed_bound_checks():
    probes = [{"epoch": 0, "bound": 3.0, "target_loss": 1.0, "gap": 2.0},
              {"epoch": 2, "source_error": 0.5, "fa": 1.0, "fld": 0.4, "tf": 0.3,
               "bound": 2.2, "target_loss": 1.1, "gap": 1.0, "kappa": 0.5, "A": 0.2,
               "B": 0.9, "w1_floor": 3.0}]
    runs = pd.DataFrame([cm.run_row(_result("smoke_gunpoint", "recraft", 0, {}, 30.0,
                                            probes=probes)),
                         cm.run_row(_result("smoke_advection", "recraft", 0, {}, 0.1,
                                            probes=[{"epoch": 0, "skipped": "dense"}]))])
    last = st.bound_frame(runs)
    assert list(last["epoch"]) == [2, 0] and last["gap_pct"].iloc[0] == pytest.approx(100.0)
    assert last["skipped"].iloc[1] == "dense" and math.isnan(last["bound"].iloc[1])
    assert last["w1_floor"].iloc[0] == 3.0
    assert len(st.bound_frame(runs, epoch="all")) == 3
    c = st.check_bound_above_loss(last)
    assert c.holds and not c.asserted and c.kind == "claim" and "1/1 measurements" in c.detail
    assert "paper claim, observed" in c.line()
    # the bound is no longer above the loss by construction: a failure is reported, not raised
    failed = st.check_bound_above_loss(last.iloc[:1].assign(bound=0.5))
    assert not failed.holds and "0/1" in failed.detail
    assert st.check_bound_above_loss(last.iloc[1:]) is None
    b_step, a_step = st.bound_step_checks(last)
    assert b_step.holds and a_step.holds  # B 0.9 <= FA 1.0, A 0.2 <= FLD + TF 0.7
    assert not st.bound_step_checks(last.assign(B=1.5))[0].holds
    assert st.recraft_gap_claim() == (29.0, "less than 29%")


def test_the_certified_kappa_sanity_check():
    rep = {"kappa": 0.5, "kappa_certified": 0.4999, "kappa_penalised_fit": 0.9}
    runs = pd.DataFrame([cm.run_row(_result("t", "recraft", 0, {}, 1.0, rep))])
    c = st.check_kappa_certified(runs)
    assert c.holds and c.kind == "sanity" and "0.9" in c.detail
    bad = pd.DataFrame([cm.run_row(_result("t", "recraft", 0, {}, 1.0,
                                           {**rep, "kappa_certified": 0.9}))])
    with pytest.raises(AssertionError, match="certified"):
        st.check_kappa_certified(bad)
    assert st.check_kappa_certified(pd.DataFrame([cm.run_row(_result("t", "nft", 0, {},
                                                                     1.0))])) is None


def test_kappa_variants_table_and_range():
    vs = st.kappa_variants([0.1, 0.5], "smoke")
    assert [v.name for v in vs] == ["kappa=0.1", "kappa=0.5"]
    rows = [cm.run_row(_result("t", "recraft", s, {}, 10.0 + s + k,
                               {"kappa": k, "kappa_certified": k * (1 - s / 10),
                                "fa_after": 1.0, "w1_after": 4.0 + s, "fld_after": 0.5,
                                "recalibration_holdout": {"loss": 1 / k, "accuracy": 0.9}}))
            for k in (0.1, 0.5) for s in (0, 1)]
    table = st.kappa_table(pd.DataFrame(rows))
    assert list(table["kappa"]) == [0.1, 0.5]
    assert list(table["ours"]) == pytest.approx([10.6, 11.0])  # mean over seeds
    assert list(table["proxy_loss"]) == pytest.approx([10.0, 2.0])
    assert list(table["kappa_certified"]) == pytest.approx([0.095, 0.475])
    assert list(table["w1_after"]) == pytest.approx([4.5, 4.5])
    assert st.recraft_kappa_range() == (0.3, 0.5)


# --------------------------------------------------------------------------- gap-adaptive


def test_gap_estimates_weights_and_their_check(monkeypatch, tmp_path):
    seen = []

    def fake_estimate(task, profile, *, splits, seed, distances, **opts):
        seen.append((task, distances, opts["gap_samples"]))
        dense = task == "smoke_advection"
        return {"gap_distance": "mmd" if dense else "otdd",
                "gaps": {"otdd": None if dense else 40.0, "mmd": 0.2}}

    monkeypatch.setattr(gap_study, "estimate_task_gap", fake_estimate)
    monkeypatch.setattr(gap_study, "load_splits", lambda nb, task, seed: {})
    nb = cm.settings("modality_gap", "smoke", tasks=["smoke_gunpoint", "smoke_advection"],
                     output_dir=tmp_path)
    gaps = st.gap_estimates(nb)
    assert [s[1] for s in seen] == [("otdd", "mmd")] * 2
    assert seen[0][2] == cm.METHOD_PROFILE_OPTIONS["gap_adaptive_a"]["smoke"]["gap_samples"]
    assert list(gaps["uses"]) == [True, False, False, True]
    assert np.isnan(gaps["D"].iloc[2])
    weights = st.weight_frame(gaps, 3, alpha=1.0, beta=1.0, eps=1e-3, gamma=1.0)
    cont = weights[weights["weighting"] == "continuous"]
    assert len(cont) == 6 and cont["source_weight"].iloc[0] == pytest.approx(1 / 40.001)
    # epochs 1..3 (1-based in the frame): full weight, half, 0
    first = cont[cont["task"] == "smoke_gunpoint"]["source_weight"].tolist()
    assert first == pytest.approx([1 / 40.001, 0.5 / 40.001, 0.0])
    capped = st.weight_frame(gaps.assign(D=[0.0, np.nan, np.nan, 0.0]), 3, alpha=1.0,
                             beta=1.0, eps=1e-3, gamma=1.0, max_source_weight=10.0)
    assert capped["source_weight"].max() == 10.0
    switch = weights[weights["weighting"] == "switch"]
    # OTDD 40 > Gamma: target only; MMD 0.2 <= Gamma: both losses
    assert set(switch[switch["task"] == "smoke_gunpoint"]["source_weight"]) == {0.0}
    assert set(switch[switch["task"] == "smoke_advection"]["source_weight"]) == {1.0}
    c = st.check_weights(weights)
    assert c.holds and c.asserted and c.kind == "sanity" and "smoke_gunpoint: 40" in c.detail
    with pytest.raises(AssertionError):
        st.check_weights(cont.assign(source_weight=cont["epoch"].astype(float)))


# --------------------------------------------------------------------------- more helpers


def test_paper_notes_records_and_variants():
    notes = st.paper_notes("mona_knowledge_discrepancy")
    assert "no numeric discrepancy values" in notes and notes.count("\n- ") == 1
    assert "Gamma" in st.paper_notes("proposed_hyperparameters")
    recs = st.records(pd.DataFrame({"a": [1.0, np.nan]}))
    assert recs == [{"a": 1.0}, {"a": None}]
    assert [v.name for v in st.mona_variants("smoke")] == ["nft", "mona"]
    vs = st.gap_variants(["nft", "gap_adaptive_a"], "smoke", alpha=0.5, beta=2.0, eps=0.1,
                         gamma=3.0)
    assert vs[0].options == {} and vs[1].options["beta"] == 2.0 and vs[1].options["gamma"] == 3.0


def _discrepancies(rises: dict[tuple[str, int], float]) -> pd.DataFrame:
    """A discrepancy frame: per (task, seed), D at epochs 0, 1, 2 from 0.3 to 0.3 + rise."""
    rows = []
    for (task, seed), rise in rises.items():
        for epoch, d in enumerate((0.3, 0.3 + rise / 2, 0.3 + rise)):
            rows.append({"task": task, "variant": "nft", "seed": seed, "epoch": epoch,
                         "discrepancy": d, "discrepancy_exact": d})
    return pd.DataFrame(rows)


def test_discrepancy_trend_is_one_paired_verdict_over_task_seed_pairs():
    pairs = [(t, s) for t in ("a", "b") for s in (0, 1, 2)]
    # rises on all six pairs: the sign test reaches p = 0.031, the interval is above 0
    (c,) = st.check_discrepancy_trend(_discrepancies({p: 0.1 + 0.01 * i
                                                      for i, p in enumerate(pairs)}))
    assert c.verdict == "holds" and c.holds and c.kind == "claim" and not c.asserted
    assert "6 (task, seed) pairs: 6 wins, 0 losses" in c.detail
    assert "a 0.3 -> 0.41 (epoch 0 -> 2, mean of 3 seeds)" in c.detail
    assert "different quantity" in c.paper
    # falls on all six: contradicted
    (c,) = st.check_discrepancy_trend(_discrepancies({p: -0.1 for p in pairs}))
    assert c.verdict == "contradicted" and not c.holds
    assert "0 wins, 6 losses" in c.detail
    # mixed signs: within the noise
    (c,) = st.check_discrepancy_trend(_discrepancies({p: (-0.1) ** i for i, p in
                                                      enumerate(pairs)}))
    assert c.verdict == "inconclusive" and not c.holds
    # one task x three seeds, all rising: too few pairs for the sign test, inconclusive
    (c,) = st.check_discrepancy_trend(_discrepancies({("a", s): 0.1 for s in (0, 1, 2)}))
    assert c.verdict == "inconclusive" and "3 wins, 0 losses" in c.detail
    # MoNA's variant is not NFT's; nothing measured: no check
    assert st.check_discrepancy_trend(_discrepancies({("a", 0): 0.1}), variant="mona") == []


def _final_runs(finals: dict[str, list[float]], tasks=("t1", "t2"), seeds=(0, 1, 2),
                metric: str = "error") -> pd.DataFrame:
    """Runs of each variant on every (task, seed) pair; ``finals[v][i]`` for pair i."""
    pairs = [(t, s) for t in tasks for s in seeds]
    return pd.DataFrame([{"task": t, "seed": s, "variant": v, "method": v, "metric": metric,
                          "lower_is_better": True, "final": f[i]}
                         for v, f in finals.items() for i, (t, s) in enumerate(pairs)])


def test_modality_gap_claims_are_paired_verdicts_over_seeds():
    base = [0.5, 0.52, 0.48, 0.6, 0.61, 0.59]
    runs = _final_runs({"nft": base, "pare": [b - 0.1 for b in base],  # pare better: holds
                        "gap_adaptive_a": [b + 0.1 for b in base],  # worse: contradicted
                        "gap_adaptive_b": [b + (0.01 if i % 2 else -0.01)  # mixed
                                           for i, b in enumerate(base)]})
    from crossmodal.studies import gap_adaptive

    checks = {c.claim: c for c in gap_adaptive.claim_checks(runs)}
    assert checks["pare beats nft"].verdict == "holds"
    assert checks["gap_adaptive_a beats nft"].verdict == "contradicted"
    assert checks["gap_adaptive_b beats pare"].verdict == "contradicted"  # +0.1 +- 0.01
    assert "6 (task, seed) pairs" in checks["pare beats nft"].detail
    assert "paper: 10/10 tasks" in checks["pare beats nft"].detail
    # the same on one task only: 3 pairs, inconclusive whatever the signs
    few = runs[runs["task"] == "t1"]
    assert {c.verdict for c in gap_adaptive.claim_checks(few)} == {"inconclusive"}
    # a method that did not run: its claim is left out
    assert [c.claim for c in gap_adaptive.claim_checks(runs[runs["variant"] != "pare"])] == \
        ["gap_adaptive_a beats nft"]


def test_mona_claims_pair_mona_with_nft_and_add_the_trend():
    from crossmodal.studies import mona

    base = [0.5, 0.52, 0.48, 0.6, 0.61, 0.59]
    runs = _final_runs({"nft": base, "mona": [b - (0.02 if i % 3 else -0.02)
                                              for i, b in enumerate(base)]})
    frame = _discrepancies({(t, s): 0.1 for t in ("t1", "t2") for s in (0, 1, 2)})
    beats, trend = mona.claim_checks(runs, frame)
    assert beats.claim == "mona beats nft" and beats.verdict == "inconclusive"  # 4 wins, 2 losses
    assert "4 wins, 2 losses" in beats.detail
    assert trend.verdict == "holds"


def test_differences_check_is_a_verdict_on_given_differences():
    c = cm.differences_check("x rises", [0.1] * 6, units="%", detail="per task", paper="Fig. 1")
    assert c.verdict == "holds" and c.detail.endswith("; per task; Fig. 1") and " %" in c.detail
    assert cm.differences_check("x rises", [-0.1] * 6).verdict == "contradicted"
    assert cm.differences_check("x rises", [0.1, -0.1] * 3).verdict == "inconclusive"
    assert cm.differences_check("x rises", []) is None


def test_bound_table_and_the_gap_claim():
    frame = pd.DataFrame({"task": ["a", "b", "c"], "bound": [2.0, 3.0, np.nan],
                          "target_loss": [1.0, 2.0, np.nan], "gap_pct": [100.0, 50.0, np.nan]})
    table = st.bound_table(frame, "smoke")
    assert list(table["task"]) == ["a", "b", "mean over tasks"]
    assert table["ours"].iloc[-1] == 75.0 and table["paper"].iloc[-1] == 29.0
    assert table["status"].iloc[-1] == "direction only (smoke)"
    # the claim is a verdict over (task, seed) pairs (tests/test_study_verdicts.py): two
    # pairs are too few for any verdict, whatever the gaps
    c = st.check_gap_claim(frame)
    assert c.verdict == "inconclusive" and not c.holds
    assert "mean gap 75 %" in c.detail and "less than 29%" in c.detail
    assert st.check_gap_claim(frame.assign(gap_pct=[10.0, 20.0, np.nan])).verdict == \
        "inconclusive"
    # two seeds of one task: the table has one row per task (the mean over its seeds); the
    # claim pairs every (task, seed)
    seeds = pd.DataFrame({"task": ["a", "a", "b"], "seed": [0, 1, 0], "bound": 2.0,
                          "target_loss": 1.0, "gap_pct": [20.0, 40.0, 60.0]})
    t2 = st.bound_table(seeds, "smoke")
    assert list(t2["task"]) == ["a", "b", "mean over tasks"] and list(t2["ours"]) == [30, 60, 45]
    assert "mean gap 40 %" in st.check_gap_claim(seeds).detail
    assert "3 (task, seed) pairs of 2 tasks" in st.check_gap_claim(seeds).detail


def test_kappa_checks_and_results():
    table = pd.DataFrame({"task": "t", "kappa": [0.1, 0.3, 1.0], "metric": "err",
                          "lower_is_better": True, "ours": [20.0, 10.0, 10.0]})
    sweep = pd.DataFrame({"kappa": [None, 0.1, 0.3, 1.0], "fit_loss": [0.5, 1.5, 1.0, 0.6],
                          "holdout_accuracy": [0.9, 0.7, 0.895, 0.9]})
    checks = st.kappa_checks(table, sweep, tolerance=0.01)
    assert checks[0].asserted and checks[0].holds and checks[0].kind == "sanity"
    assert all(c.kind == "claim" for c in checks[1:])
    assert checks[1].holds and "0.3" in checks[1].detail  # App. F's rule picks 0.3
    # without runs the task is one pair; its best in range (0.3) ties the best outside (1.0)
    assert checks[2].verdict == "inconclusive" and "1 ties" in checks[2].detail
    assert "in range 10 (kappa 0.3) vs outside 10 (kappa 1)" in checks[2].detail
    with pytest.raises(AssertionError, match="larger source loss"):
        st.kappa_checks(table, sweep.assign(fit_loss=[0.5, 0.5, 1.0, 1.5]), tolerance=0.01)
    res = st.kappa_results(table, "smoke")
    assert list(res["variant"]) == ["kappa=0.1", "kappa=0.3", "kappa=1"]
    assert res["paper"].isna().all()


def test_weight_frame_takes_the_paper_epochs_when_epochs_is_none():
    gaps = pd.DataFrame({"task": ["ECG"], "distance": ["otdd"], "D": [1.0], "uses": [True]})
    w = st.weight_frame(gaps, None, alpha=1.0, beta=1.0, eps=1e-3, gamma=1.0, profile="paper")
    from crossmodal.protocol import train_defaults
    from crossmodal.tasks import get_task

    n = train_defaults(get_task("ECG"), "paper")["epochs"]
    assert w["epoch"].max() == n and len(w) == 2 * n
