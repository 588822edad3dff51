"""Gap-adaptive method (slides' proposal): weights, gap estimate, noise, contrastive loss, runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from crossmodal.errors import InvalidInputError
from crossmodal.methods import RunContext, get_method
from crossmodal.methods.gap_adaptive import (
    GapAdaptiveBConfig,
    contrastive_embedder_training,
    discrete_labels,
    estimate_gap,
    gap_switch_weights,
    gap_weight,
    group_labels,
    label_contrastive_loss,
    pair_weights,
    perturb,
    train_embedder_only,
)
from crossmodal.models import build_model
from crossmodal.runner import run
from crossmodal.tasks import get_task
from crossmodal.training import TrainState


# -- loss weights ------------------------------------------------------------------------------
def test_gap_weight_decreases_with_the_gap_and_reaches_zero_at_the_last_epoch():
    gaps = [0.0, 0.1, 1.0, 10.0, 100.0]
    w = [gap_weight(d, 0, 10, beta=2.0, eps=0.01) for d in gaps]
    assert all(a > b for a, b in zip(w, w[1:]))
    assert w[2] == pytest.approx(2.0 / 1.01)  # the full weight in the first epoch
    per_epoch = [gap_weight(1.0, e, 10, beta=2.0, eps=0.01) for e in range(10)]
    assert all(a > b for a, b in zip(per_epoch, per_epoch[1:]))
    # 0-based epochs 0..9, ep_total = 9: linear from the full weight to exactly 0
    assert per_epoch[3] == pytest.approx((1 - 3 / 9) * per_epoch[0]) and per_epoch[-1] == 0.0
    assert gap_weight(1.0, 0, 1, beta=2.0, eps=0.01) == pytest.approx(2.0 / 1.01)


def test_a_near_zero_gap_is_capped_and_the_report_warns():
    from crossmodal.methods.gap_adaptive import gap_weight_factor

    assert gap_weight(0.0, 0, 5, beta=1.0, eps=1e-3) == pytest.approx(1000.0)  # uncapped
    assert gap_weight(0.0, 0, 5, beta=1.0, eps=1e-3, cap=50.0) == pytest.approx(50.0)
    assert gap_weight_factor(0.0, beta=1.0, eps=1e-3, cap=50.0) == (50.0, True)
    assert gap_weight_factor(1.0, beta=1.0, eps=1e-3, cap=50.0)[1] is False
    with pytest.raises(InvalidInputError, match="cap"):
        gap_weight(1.0, 0, 5, beta=1.0, eps=0.1, cap=0.0)


def test_gap_weight_rejects_bad_inputs():
    with pytest.raises(InvalidInputError, match="gap D"):
        gap_weight(-1.0, 0, 5, beta=1.0, eps=0.1)
    with pytest.raises(InvalidInputError, match="epoch"):
        gap_weight(1.0, 5, 5, beta=1.0, eps=0.1)
    with pytest.raises(InvalidInputError, match="division"):
        gap_weight(0.0, 0, 5, beta=1.0, eps=0.0)


@pytest.mark.parametrize("D, expected", [(0.5, (0.7, 0.3)), (2.0, (0.7, 0.3)),
                                         (2.0001, (1.0, 0.0)), (50.0, (1.0, 0.0))])
def test_switch_uses_the_target_loss_only_above_gamma(D, expected):
    assert gap_switch_weights(D, gamma=2.0, alpha=0.7, beta=0.3) == expected


# -- gap estimate ------------------------------------------------------------------------------
def test_estimate_gap_is_near_zero_for_identical_sets_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = torch.arange(60) % 3
    same = estimate_gap(x, x.clone(), y_t=y, y_s=y.clone())
    near = estimate_gap(x + 0.5, x, y_t=y, y_s=y)
    far = estimate_gap(x + 3.0, x, y_t=y, y_s=y)
    assert 0.0 <= same < 0.5 < near < far
    m_same = estimate_gap(x, x.clone())  # no labels: MMD (auto), unsquared
    m_far = estimate_gap(x + 3.0, x, distance="mmd")
    assert 0.0 <= m_same < 0.25 < m_far
    # the slides' MMD is the square root of the MMD^2 estimate
    assert estimate_gap(x + 3.0, x, distance="mmd", squared=True) == pytest.approx(m_far ** 2)
    with pytest.raises(InvalidInputError, match="OTDD needs"):
        estimate_gap(x, x, distance="otdd")


def test_labels_for_the_gap_and_for_contrastive_groups():
    assert discrete_labels(get_task("smoke_digits"), np.array([3, 1])).tolist() == [3, 1]
    multi = np.array([[0, 1, 1], [0, 0, 0]], dtype=np.float32)
    # no positive label: its own class (index = number of labels), not class 0
    assert discrete_labels(get_task("DeepSEA"), multi).tolist() == [1, 3]
    adv = get_task("smoke_advection")
    assert discrete_labels(adv, np.zeros((4, 1, 128))) is None
    rng = np.random.default_rng(0)
    y = np.concatenate([c + 0.01 * rng.normal(size=(10, 1, 8)) for c in (0.0, 5.0)])
    groups = group_labels(adv, y, k=2)
    assert len(set(groups[:10])) == 1 and len(set(groups[10:])) == 1 and groups[0] != groups[-1]


# -- version B pieces --------------------------------------------------------------------------
def test_perturb_follows_the_iterated_noise_formula():
    x = torch.ones(20000, 1)
    assert torch.equal(perturb(x, 0.5, 0), x)
    g = torch.Generator().manual_seed(0)
    out = perturb(x, 0.5, 3, generator=g)
    a = math.sqrt(1 - 0.25)
    # x^t = a^t x^0 + sqrt(1 - a^{2t}) eps in distribution
    assert out.mean().item() == pytest.approx(a**3, abs=0.02)
    assert out.var().item() == pytest.approx(1 - a**6, abs=0.02)
    mixed = perturb(torch.ones(4, 2), torch.tensor([0.1, 0.1, 0.9, 0.9]), torch.tensor([0, 1, 0, 2]))
    assert torch.equal(mixed[0], torch.ones(2)) and torch.equal(mixed[2], torch.ones(2))
    assert not torch.equal(mixed[3], torch.ones(2))
    with pytest.raises(InvalidInputError, match="sigma"):
        perturb(x, 1.0, 1)


def test_pair_weights_are_one_within_a_group_and_follow_the_label_correlation():
    onehot = torch.eye(2)[torch.tensor([0, 0, 1])]
    w = pair_weights(onehot, torch.tensor([0, 0, 1]), eps=0.1)
    assert w[0, 1] == 1.0 and w[0, 0] == 1.0
    # two classes: one-hot vectors are perfectly anti-correlated, c = 0
    assert w[0, 2].item() == pytest.approx(1.1 / 0.1) and torch.allclose(w, w.T)
    vec = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.1], [3.0, 2.0, 1.0]])
    w = pair_weights(vec, torch.tensor([0, 1, 2]), eps=0.1)
    assert w[0, 1] < 1.01 and w[0, 2] > 10  # correlated labels: weight ~1; anti: large


def test_label_contrastive_loss_is_nonnegative_and_lower_for_label_clusters():
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(12) % 3
    centers = torch.randn(3, 8, generator=g) * 5
    clustered = centers[groups] + 0.1 * torch.randn(12, 8, generator=g)
    scattered = torch.randn(12, 8, generator=g)
    ones = torch.ones(12, 12)
    good = label_contrastive_loss(clustered, groups, ones, tau=0.5)
    bad = label_contrastive_loss(scattered, groups, ones, tau=0.5)
    assert 0.0 <= good < bad
    heavier = label_contrastive_loss(scattered, groups, ones * 3 - 2 * torch.eye(12), tau=0.5)
    assert heavier > bad  # lambda > 1 on negatives enlarges the denominator
    singletons = label_contrastive_loss(scattered[:3], groups[:3], ones[:3, :3])
    assert singletons.item() == 0.0  # no positive pair: nothing to learn


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedder = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Unflatten(1, (2, 4)))


def test_contrastive_stage_lowers_its_loss_on_separable_toy_data():
    task = get_task("smoke_gunpoint")  # 2 classes; only its label type matters here
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = (rng.normal(size=(40, 1, 6)) + 2.0 * y[:, None, None]).astype(np.float32)
    torch.manual_seed(0)
    curve = contrastive_embedder_training(
        _Toy(), task, x, y, noise_scales=(0.1, 0.3), noise_steps=2, epochs=6, lr=1e-2,
        batch_size=32, tau=0.5, eps=0.1, seed=0)
    assert len(curve) == 6 and curve[-1] < curve[0]


def test_version_b_config_checks_and_freezes_the_embedder():
    with pytest.raises(InvalidInputError, match="noise_scales"):
        GapAdaptiveBConfig(noise_scales=(0.5, 1.5))
    assert GapAdaptiveBConfig(noise_scales=0.2).noise_scales == (0.2,)
    assert GapAdaptiveBConfig().gate == "attention"
    model = build_model("smoke_gunpoint", "minilm")
    ids = {id(p) for p in get_method("gap_adaptive_b", freeze_embedder=True)
           .trainable_parameters(model)}
    assert not any(id(p) in ids for p in model.embedder.parameters())
    assert all(id(p) in ids for p in model.body.parameters())


# -- version A on a model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gunpoint():
    splits = get_task("smoke_gunpoint").load("unused")
    return build_model("smoke_gunpoint", "minilm"), splits["train"][0][:24], splits["train"][1][:24]


def test_emb_stage_trains_only_the_embedder(gunpoint):
    model, x, y = gunpoint
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    curve = train_embedder_only(model, model.task, x, y, epochs=1, lr=1e-3, batch_size=8, seed=0)
    assert len(curve) == 1 and math.isfinite(curve[0])
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != n.startswith("embedder."), n
    assert all(p.requires_grad for p in model.parameters())  # flags restored


@pytest.mark.parametrize("weighting, source_grad", [("continuous", True), ("switch", False)])
def test_version_a_loss_uses_the_source_loss_only_when_weighted(gunpoint, weighting, source_grad):
    model, x, y = gunpoint
    m = get_method("gap_adaptive_a", proxy_samples=64, gap_samples=24, weighting=weighting,
                   gamma=1e-6, embedder_stage="none")
    for key in list(model.extras):
        del model.extras[key]
    m.prepare(model, model.task, RunContext(profile="smoke", seed=0))
    assert "extras.gap_state.gap" in model.state_dict()  # D travels with checkpoints
    fn = m.loss_fn(model.task)
    with pytest.raises(InvalidInputError, match="never measured"):
        fn(model, (torch.as_tensor(x[:4]), torch.as_tensor(y[:4])), TrainState(epochs=2))
    report = m.before_finetune(model, model.task, {"train": (x, y)}, RunContext(seed=0))
    assert report["gap_distance"] == "otdd" and report["gap"] > 1e-6
    model.zero_grad()
    state = TrainState(epoch=0, epochs=2)
    fn(model, (torch.as_tensor(x[:4]), torch.as_tensor(y[:4])), state).backward()
    grad = model.extras["gap_source_head"].linear.weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == source_grad
    expected = gap_weight(report["gap"], 0, 2, beta=1.0, eps=1e-3) if source_grad else 0.0
    assert state.extra["gap_source_weight"] == pytest.approx(expected)


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("key, method, options, distance", [
    ("smoke_gunpoint", "gap_adaptive_a", {}, "otdd"),
    ("smoke_digits", "gap_adaptive_a", {"weighting": "switch", "gamma": 1e6}, "otdd"),
    ("smoke_advection", "gap_adaptive_a", {"embedder_stage": "none"}, "mmd"),
    ("smoke_gunpoint", "gap_adaptive_b", {}, None),
    ("smoke_digits", "gap_adaptive_b", {"freeze_embedder": True, "contrastive_epochs": 1}, None),
])
def test_gap_adaptive_runs_two_epochs_end_to_end_and_writes_results(small_splits, key, method, options,
                                                                    distance, tmp_path):
    r = run(key, method, "smoke", epochs=2, out=tmp_path, progress=False,
            splits=small_splits(key, 32, 16, pick="first"), method_options={"proxy_samples": 128, **options})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == method and saved["task"] == key and len(saved["epochs"]) == 2
    assert math.isfinite(saved["final_metric"]) and saved["final_metric"] == r["final_metric"]
    rep = saved["method_report"]
    if method == "gap_adaptive_a":
        assert rep["gap_distance"] == distance and rep["gap"] >= 0
        if options.get("weighting") == "switch":
            assert rep["large_gap"] is False and rep["source_weight"] == 1.0
        else:  # Option 2: full weight in the first epoch, 0 in the last, as recorded per epoch
            assert rep["source_weight_epoch0"] == pytest.approx(
                min(100.0, 1.0 / (1e-3 + rep["gap"])))
            assert rep["source_weight_capped"] == (1.0 / (1e-3 + rep["gap"]) > 100.0)
    else:
        # one contrastive loss per epoch the run was configured with (the smoke profile's
        # stage options apply to run() too)
        assert rep["expanded_size"] == 32 * 3 * 3 and len(rep["contrastive_curve"]) == \
            saved["config"]["method"]["contrastive_epochs"]
        assert saved["config"]["method"]["gate"] == "attention"


@pytest.mark.slow
def test_crossmodal_run_cli_trains_version_b_with_tuple_options(tmp_path, capsys):
    from crossmodal.cli import main

    code = main(["run", "--task", "smoke_gunpoint", "--method", "gap_adaptive_b", "--profile",
                 "smoke", "--epochs", "2", "-o", "noise_scales=(0.2, 0.4)", "-o",
                 "contrastive_epochs=1", "-o", "proxy_samples=64", "-t", "batch_size=25",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["method"]["noise_scales"] == [0.2, 0.4]
    assert saved["method_report"]["expanded_size"] == 50 * 2 * 3


def test_embedder_stage_can_be_another_methods_stage_one(gunpoint):
    from crossmodal.errors import UnknownNameError
    from crossmodal.methods import METHODS

    model, x, y = gunpoint
    ctx = RunContext(profile="smoke", seed=0, progress=False)
    splits = {"train": (x, y)}
    m = get_method("gap_adaptive_a", embedder_stage="nft")
    assert m.run_embedder_stage(model, model.task, splits, ctx) == {"nft_report": {}}
    with pytest.raises(InvalidInputError, match="gap-adaptive"):
        get_method("gap_adaptive_a", embedder_stage="gap_adaptive_b").run_embedder_stage(
            model, model.task, splits, ctx)
    with pytest.raises(UnknownNameError):
        get_method("gap_adaptive_a", embedder_stage="orka").run_embedder_stage(
            model, model.task, splits, ctx)
    if "orca" not in METHODS:  # the ORCA module lands separately
        pytest.skip("the orca method is not registered in this checkout")
    before = [p.detach().clone() for p in model.embedder.parameters()]
    fast = {"align_epochs": 2, "proxy_samples": 300, "eval_samples": 24}
    report = get_method("gap_adaptive_a", embedder_stage="orca", embedder_stage_options=fast
                        ).run_embedder_stage(model, model.task, splits, ctx)["orca_report"]
    assert "otdd_before" in report and "otdd_after" in report
    assert any(not torch.equal(a, b) for a, b in zip(before, model.embedder.parameters()))
