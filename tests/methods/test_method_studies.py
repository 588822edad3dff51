"""Library helpers behind the method notebooks: the runner's probe, MoNA's discrepancy
studies, RECRAFT's bound probe and kappa sweep, the gap-adaptive gap and weights, PaRe's
k table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.methods.gap_adaptive import weight_schedule
from crossmodal.methods.mona import (
    DiscrepancyProbe,
    approximation_study,
    modality_discrepancy,
    modality_discrepancy_exact,
    num_candidates,
    trials_to_cover,
)
from crossmodal.methods.pare import k_schedule, schedule_table
from crossmodal.methods.recraft import (
    BoundProbe,
    recalibration_sweep,
    relative_gap,
    select_kappa,
)
from crossmodal.runner import run
from crossmodal.studies.gap_adaptive import estimate_task_gap

# ------------------------------------------------------------------ MoNA: Algorithm 2 study


def test_candidates_and_trials_to_cover():
    assert num_candidates(5, 2) == 20 and num_candidates(4, 4) == 24
    assert trials_to_cover(1) == 1
    t = trials_to_cover(20, 1e-6)
    # the union bound at T holds, and fails one trial earlier
    assert 20 * (1 - 1 / 20) ** t <= 1e-6 < 20 * (1 - 1 / 20) ** (t - 1)
    with pytest.raises(InvalidInputError):
        num_candidates(2, 3)
    with pytest.raises(InvalidInputError):
        trials_to_cover(10, 0.0)


@pytest.mark.parametrize("distance", ["disagreement", "tv", "kl"])
def test_approximation_is_above_the_exact_value_and_reaches_it(distance):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (40,), generator=gen)
    rows = approximation_study(logits, labels, trials=(1, 5, 20), distance=distance,
                               num_classes=3)
    exact = modality_discrepancy_exact(logits, labels, distance=distance, num_classes=3)
    assert [r["trials"] for r in rows][:3] == [1, 5, 20] and rows[-1]["covers_all"]
    assert rows[-1]["trials"] == trials_to_cover(num_candidates(5, 3))
    for r in rows:
        assert r["exact"] == pytest.approx(exact) and r["exact_brute"] == pytest.approx(exact)
        assert r["approx"] >= exact - 1e-12 and r["excess"] >= -1e-12
    approx = [r["approx"] for r in rows]
    assert all(a >= b for a, b in zip(approx, approx[1:]))  # more draws never hurt (prefixes)
    assert rows[-1]["approx"] == pytest.approx(exact)
    # one trial is a single random (subset, permutation): generally above the optimum
    assert rows[0]["approx"] == pytest.approx(modality_discrepancy(
        logits, labels, trials=1, distance=distance, num_classes=3))


# ------------------------------------------------------------------- RECRAFT helpers


def test_relative_gap_and_its_validation():
    assert relative_gap(1.5, 1.0) == pytest.approx(0.5)
    with pytest.raises(InvalidInputError):
        relative_gap(1.0, 0.0)


def test_recalibration_sweep_small_kappa_costs_proxy_loss_and_binds_the_gradient():
    gen = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(3, 8, generator=gen)
    labels = torch.arange(120) % 3
    feats = centers[labels] + 0.5 * torch.randn(120, 8, generator=gen)
    rows = recalibration_sweep(feats, labels, [0.05, 0.5, 5.0], epochs=150, seed=0)
    assert [r["kappa"] for r in rows] == [None, 0.05, 0.5, 5.0]
    ref, tight, mid, loose = rows
    # the tighter the Lipschitz constraint, the larger the source loss (RECRAFT App. F)
    assert tight["fit_loss"] > mid["fit_loss"] > loose["fit_loss"] - 1e-6
    assert tight["grad_norm_mean"] <= 0.05 and ref["grad_norm_mean"] < 5.0
    # certified after the rescaling: the global constant, not only the gradients at the data
    assert all(r["kappa_certified"] <= r["kappa"] for r in (tight, mid, loose))
    assert tight["lipschitz_penalised"] > tight["kappa"]  # the penalty alone did not get there
    assert loose["holdout_accuracy"] == pytest.approx(ref["holdout_accuracy"])
    with pytest.raises(InvalidInputError):
        recalibration_sweep(feats, labels, [0.0])


def test_select_kappa_takes_the_smallest_kappa_that_keeps_proxy_accuracy():
    rows = [{"kappa": None, "holdout_accuracy": 0.9}, {"kappa": 0.1, "holdout_accuracy": 0.5},
            {"kappa": 0.3, "holdout_accuracy": 0.895}, {"kappa": 1.0, "holdout_accuracy": 0.9}]
    assert select_kappa(rows, tolerance=0.01) == 0.3
    assert select_kappa(rows, tolerance=0.0) == 1.0
    assert select_kappa(rows, tolerance=0.5) == 0.1
    assert select_kappa([rows[0], rows[1]], tolerance=0.01) is None
    with pytest.raises(InvalidInputError):
        select_kappa(rows[1:])


# ------------------------------------------------------------- gap-adaptive and PaRe


def test_weight_schedule_falls_to_zero_at_the_last_epoch_and_the_switch_is_constant():
    rows = weight_schedule(2.0, 4, beta=1.0, eps=0.5, alpha=0.7)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert all(r["target_weight"] == 0.7 for r in rows)
    # beta / (eps + D) = 0.4, falling linearly to 0 at the last (0-based) epoch 3
    assert [r["source_weight"] for r in rows] == pytest.approx([0.4, 0.4 * 2 / 3, 0.4 / 3, 0.0])
    assert weight_schedule(0.0, 2, beta=1.0, eps=1e-3, cap=20.0)[0]["source_weight"] == 20.0
    # a larger gap gives a smaller source weight at every epoch
    far = weight_schedule(20.0, 4, beta=1.0, eps=0.5)
    assert all(f["source_weight"] <= r["source_weight"] for f, r in zip(far, rows))
    sw = weight_schedule(2.0, 3, weighting="switch", gamma=1.0, alpha=0.5, beta=0.3)
    assert {(r["target_weight"], r["source_weight"]) for r in sw} == {(1.0, 0.0)}
    sw = weight_schedule(0.5, 3, weighting="switch", gamma=1.0, alpha=0.5, beta=0.3)
    assert {(r["target_weight"], r["source_weight"]) for r in sw} == {(0.5, 0.3)}
    with pytest.raises(UnknownNameError):
        weight_schedule(1.0, 3, weighting="sometimes")


def test_schedule_table_is_the_k_of_a_run():
    rows = schedule_table(["linear", "exponential", "non_gradual"], 3000, 3, n_patches=15,
                          seed=4)
    lin = [r["k"] for r in rows if r["schedule"] == "linear"]
    assert lin == [15, 10, 5]
    exp = [r["k"] for r in rows if r["schedule"] == "exponential"]
    assert exp == [k_schedule("exponential", 3000, e, 3, n_patches=15) for e in range(3)]
    ng = [r["k"] for r in rows if r["schedule"] == "non_gradual"]
    assert ng == [k_schedule("non_gradual", 3000, e, 3, n_patches=15,
                             rng=np.random.default_rng([4, e])) for e in range(3)]
    assert rows[0]["fraction"] == 1.0


# ----------------------------------------------------------------- runs with probes


def test_the_runner_calls_a_probe_before_fine_tuning_and_after_every_epoch(small_splits):
    calls = []

    def probe(model, method, task, splits, record):
        calls.append(None if record is None else record["epoch"])
        return {"n": len(calls)} if record is None or record["epoch"] > 1 else None

    r = run("smoke_gunpoint", "nft", "smoke", epochs=2, progress=False,
            splits=small_splits("smoke_gunpoint", 16, 8), probe=probe,
            train_options={"num_threads": 1})
    assert calls == [None, 1, 2]
    assert r["probes"] == [{"epoch": 0, "n": 1}, {"epoch": 2, "n": 3}]  # None is not stored
    assert "probes" not in run("smoke_gunpoint", "nft", "smoke", epochs=1, progress=False,
                               splits=small_splits("smoke_gunpoint", 16, 8),
                               train_options={"num_threads": 1})


@pytest.mark.slow
def test_bound_probe_gives_the_bound_of_the_trained_model(small_splits):
    fast = dict(proxy_samples=40, recal_epochs=30, fa_epochs=1, fld_epochs=1,
                stage1_samples=16, stage1_batch_size=8)
    r = run("smoke_gunpoint", "recraft", "smoke", epochs=1, progress=False,
            splits=small_splits("smoke_gunpoint", 24, 16), method_options=fast, probe=BoundProbe(),
            train_options={"num_threads": 1, "batch_size": 8})
    assert [p["epoch"] for p in r["probes"]] == [0, 1]
    last = r["probes"][-1]
    assert last["target_loss"] > 0 and last["tf"] >= 0  # bound >= loss is not assumed: it can fail
    parts = last["source_error"] + last["fa"] + last["fld"] + last["tf"]
    assert last["bound"] == pytest.approx(parts)
    assert last["kappa"] == last["kappa_certified"] <= 0.5
    assert last["gap"] == pytest.approx(relative_gap(last["bound"], last["target_loss"]))
    with pytest.raises(InvalidInputError, match="recraft"):
        run("smoke_gunpoint", "nft", "smoke", epochs=1, progress=False, probe=BoundProbe(),
            splits=small_splits("smoke_gunpoint", 16, 8), train_options={"num_threads": 1})


@pytest.mark.slow
def test_discrepancy_probe_measures_each_epoch_and_skips_tasks_it_cannot_measure(small_splits):
    probe = DiscrepancyProbe(trials=20, proxy_samples=40)
    r = run("smoke_gunpoint", "nft", "smoke", epochs=1, progress=False, probe=probe,
            splits=small_splits("smoke_gunpoint", 24, 16), train_options={"num_threads": 1})
    first, last = r["probes"]
    assert (first["epoch"], last["epoch"]) == (0, 1)
    for p in (first, last):
        assert 0 <= p["discrepancy_exact"] <= p["discrepancy"] <= 1
    # Algorithm 2 reads the pretrained body: before fine-tuning it is the model's own body,
    # after an epoch the fine-tuned body gives a different (separately named) quantity
    assert first["discrepancy_finetuned_body_exact"] == first["discrepancy_exact"]
    assert 0 <= last["discrepancy_finetuned_body_exact"] <= 1
    logits, labels = torch.tensor(first["source_logits"]), torch.tensor(first["target_labels"])
    assert logits.shape == (24, 5) and "source_logits" not in last
    assert first["discrepancy_exact"] == pytest.approx(
        modality_discrepancy_exact(logits, labels, num_classes=2))
    r = run("smoke_digits", "nft", "smoke", epochs=1, progress=False, probe=probe,
            splits=small_splits("smoke_digits", 16, 8), train_options={"num_threads": 1})
    assert all("10 classes" in p["skipped"] for p in r["probes"])


@pytest.mark.slow
def test_estimate_task_gap_equals_the_gap_of_a_full_run(small_splits):
    splits = small_splits("smoke_gunpoint", 24, 16)
    opts = dict(proxy_samples=40, gap_samples=20)
    rep = estimate_task_gap("smoke_gunpoint", splits=splits, seed=1, **opts)
    r = run("smoke_gunpoint", "gap_adaptive_a", "smoke", epochs=1, seed=1, progress=False,
            splits=splits, method_options=opts, train_options={"num_threads": 1})
    assert rep["gap_distance"] == "otdd" and math.isfinite(rep["gap"]) and rep["gap"] >= 0
    assert rep["gap"] == pytest.approx(r["method_report"]["gap"], rel=1e-6)
    mmd = estimate_task_gap("smoke_gunpoint", splits=splits, seed=1, gap_distance="mmd",
                            distances=("otdd", "mmd"), **opts)
    assert mmd["gap_distance"] == "mmd" and mmd["gap"] != rep["gap"]
    assert mmd["gaps"]["otdd"] == pytest.approx(rep["gap"], rel=1e-6)
    assert mmd["gaps"]["mmd"] == pytest.approx(mmd["gap"], rel=1e-6)
    dense = estimate_task_gap("smoke_advection", splits=small_splits("smoke_advection", 24, 16),
                              distances=("otdd", "auto"), **opts)
    assert dense["gap_distance"] == "mmd" and dense["gaps"]["otdd"] is None
    assert dense["gaps"]["auto"] == pytest.approx(dense["gap"], rel=1e-6)
