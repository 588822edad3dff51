"""MoNA: alignment/uniformity, the virtual step, the meta-gradient, Algorithm 2, end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossmodal.errors import InvalidInputError
from crossmodal.methods import RunContext, get_method
from crossmodal.methods.mona import (
    MoNAConfig,
    alignment_loss,
    meta_step,
    modality_discrepancy,
    modality_discrepancy_exact,
    outer_loss,
    uniformity_loss,
    virtual_step,
)
from crossmodal.runner import run
from crossmodal.tasks import get_task

# ------------------------------------------------------------- alignment and uniformity


def test_alignment_of_two_same_class_points_is_their_squared_distance():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    y = torch.tensor([1, 1, 0])
    assert alignment_loss(f, y, normalize=False).item() == pytest.approx(25.0)
    # normalised: (0,0) has no direction; use points on opposite sides of the circle
    g = torch.tensor([[2.0, 0.0], [-5.0, 0.0], [0.0, 1.0]])
    assert alignment_loss(g, y, normalize=True).item() == pytest.approx(4.0)


def test_alignment_without_same_class_pairs_is_zero_and_keeps_the_graph():
    f = torch.randn(3, 4, requires_grad=True)
    out = alignment_loss(f, torch.tensor([0, 1, 2]))
    assert out.item() == 0.0 and out.requires_grad


def test_uniformity_on_known_point_sets():
    two = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert uniformity_loss(two, t=2.0, normalize=False).item() == pytest.approx(-4.0)
    # four points on the unit circle: 4 adjacent pairs at d^2 = 2, 2 diagonals at d^2 = 4
    square = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]])
    expected = math.log((4 * math.exp(-4.0) + 2 * math.exp(-8.0)) / 6)
    assert uniformity_loss(square, t=2.0).item() == pytest.approx(expected, rel=1e-6)
    # spread-out points are more uniform (lower loss) than clustered ones
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [1.0, 0.05]])
    assert uniformity_loss(square).item() < uniformity_loss(clustered).item()


def test_normalised_losses_ignore_the_scale_of_the_features():
    f, y = torch.randn(8, 5), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    assert alignment_loss(f, y).item() == pytest.approx(alignment_loss(7 * f, y).item(), rel=1e-5)
    assert uniformity_loss(f).item() == pytest.approx(uniformity_loss(7 * f).item(), rel=1e-5)


def test_slides_signs_negate_the_standard_outer_loss():
    f, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    std, align, unif = outer_loss(f, y)
    slides, _, _ = outer_loss(f, y, signs="slides")
    assert std.item() == pytest.approx((align + unif).item())
    assert slides.item() == pytest.approx(-std.item())


def _minimise_outer(signs: str) -> float:
    """Same-class minus other-class mean cosine after minimising the outer loss."""
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(12, 3, generator=gen).requires_grad_(True)
    y = torch.arange(12) % 3
    opt = torch.optim.SGD([f], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        outer_loss(f, y, signs=signs)[0].backward()
        opt.step()
    g = torch.nn.functional.normalize(f.detach(), dim=1)
    sims, eye = g @ g.T, torch.eye(12, dtype=torch.bool)
    same = (y[:, None] == y[None]) & ~eye
    return float(sims[same].mean() - sims[~same & ~eye].mean())


def test_standard_signs_separate_classes_and_the_slides_signs_do_not():
    assert _minimise_outer("standard") > 0.5
    assert _minimise_outer("slides") < 0.1


# ----------------------------------------------------------------------- virtual step


def test_virtual_step_equals_a_manual_sgd_step():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    params = dict(net.named_parameters())
    loss = torch.nn.functional.cross_entropy(net(x), y)
    new = virtual_step(loss, params, 0.1)
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(new[name], p.detach() - 0.1 * p.grad)
        assert not torch.equal(new[name], p.detach())  # the step did something


def test_virtual_step_is_second_order_differentiable():
    # L_inner = w * theta^2 / 2, so theta* = theta (1 - a w) and d(theta*^2)/dw = -2 a theta*theta
    theta = torch.tensor(1.5, requires_grad=True)
    w = torch.tensor(0.8, requires_grad=True)
    a = 0.3
    new = virtual_step(w * theta**2 / 2, {"theta": theta}, a)
    (grad_w,) = torch.autograd.grad(new["theta"] ** 2, w)
    star = 1.5 * (1 - a * 0.8)
    assert grad_w.item() == pytest.approx(-2 * a * star * 1.5)
    # first order (create_graph=False) loses exactly this term
    new = virtual_step(w * theta**2 / 2, {"theta": theta}, a, create_graph=False)
    assert not new["theta"].requires_grad or torch.autograd.grad(
        new["theta"] ** 2, w, allow_unused=True)[0] is None


@pytest.fixture(scope="module")
def tiny_model_and_source():
    from crossmodal.models import build_model
    from crossmodal.proxies import load_proxy, source_tokens

    model = build_model("smoke_gunpoint", "minilm")
    proxy = load_proxy("pydoc_topics", max_samples=8)
    tokens, mask = source_tokens(model.body, proxy)
    x, y = get_task("smoke_gunpoint").load("unused")["train"]
    return model, (tokens[:, :16], mask[:, :16], torch.as_tensor(proxy.labels)), (
        torch.as_tensor(x[:4]), torch.as_tensor(y[:4]))


def test_outer_loss_reaches_the_embedder_only_through_the_virtual_step(tiny_model_and_source):
    from crossmodal.losses import get_loss

    model, source, batch = tiny_model_and_source
    model.eval()
    emb = list(model.embedder.parameters())
    out = meta_step(model, get_loss("cross_entropy"), batch, source, MoNAConfig(inner_lr=1e-2))
    grads = torch.autograd.grad(out["outer"], emb, allow_unused=True, retain_graph=True)
    norm = sum(float(g.norm()) for g in grads if g is not None)
    assert norm > 0 and math.isfinite(norm)  # second-order path from L_outer to phi_e
    # with alpha = 0 the body is not moved by the target data: no path at all
    out0 = meta_step(model, get_loss("cross_entropy"), batch, source, MoNAConfig(inner_lr=0.0))
    grads0 = torch.autograd.grad(out0["outer"], emb, allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads0)
    cfg = MoNAConfig(inner_lr=1e-2)
    assert out["total"].item() == pytest.approx(
        cfg.outer_weight * out["outer"].item() + out["inner"].item(), rel=1e-5)


def test_gradient_ratio_of_the_two_parts():
    from crossmodal.methods.mona import gradient_ratio

    a, b = [torch.tensor([3.0]), None, torch.tensor([4.0])], [torch.tensor([0.0, 10.0])]
    assert gradient_ratio(a, b) == pytest.approx(0.5)
    assert gradient_ratio(b, [None]) == math.inf


# ------------------------------------------------------------------------ Algorithm 2


def random_case(seed, n=30, m=4, k=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, m, generator=gen) * 2, torch.randint(0, k, (n,), generator=gen)


@pytest.mark.parametrize("distance", ["disagreement", "tv", "kl"])
def test_assignment_search_equals_brute_force(distance):
    for seed in range(4):
        z, y = random_case(seed)
        brute = modality_discrepancy_exact(z, y, distance=distance, search="brute")
        fast = modality_discrepancy_exact(z, y, distance=distance)
        assert fast == pytest.approx(brute, abs=1e-9)


@pytest.mark.parametrize("distance", ["disagreement", "tv"])
def test_approximation_is_at_most_one_and_at_least_the_exact_value(distance):
    for seed in range(4):
        z, y = random_case(seed, m=6, k=4)
        exact = modality_discrepancy_exact(z, y, distance=distance)
        for trials in (1, 5):
            approx = modality_discrepancy(z, y, trials=trials, distance=distance, seed=seed)
            assert exact - 1e-12 <= approx <= 1.0


@pytest.mark.parametrize("distance", ["disagreement", "tv", "kl"])
def test_approximation_equals_exact_when_trials_cover_every_subset_and_permutation(distance):
    # m = 3 source classes, K = 2: 3 subsets x 2 permutations = 6 pairs; 300 seeded draws
    # cover them all (the chance of missing one is below 1e-20)
    z, y = random_case(7, m=3, k=2)
    approx = modality_discrepancy(z, y, trials=300, distance=distance, seed=0)
    assert approx == pytest.approx(modality_discrepancy_exact(z, y, distance=distance,
                                                              search="brute"))
    few = modality_discrepancy(z, y, trials=1, distance=distance, seed=0)
    assert few >= approx


def test_discrepancy_is_zero_when_a_subset_and_relabelling_explain_the_targets():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    source_class = torch.tensor([4, 0, 2])[y]  # target a <-> source class 4, 0, 2
    z = torch.nn.functional.one_hot(source_class, 5).float() * 10
    assert modality_discrepancy_exact(z, y) == 0.0
    assert modality_discrepancy(z, y, trials=500, seed=1) == 0.0
    assert modality_discrepancy_exact(z, y, distance="tv") < 1e-3


def test_discrepancy_checks_inputs_and_is_deterministic():
    z, y = random_case(0, m=4, k=3)
    assert modality_discrepancy(z, y, trials=3, seed=5) == modality_discrepancy(z, y, trials=3,
                                                                                seed=5)
    with pytest.raises(InvalidInputError, match="at least as many source classes"):
        modality_discrepancy(z[:, :2], y)
    with pytest.raises(InvalidInputError, match="distance"):
        modality_discrepancy(z, y, distance="js")
    with pytest.raises(InvalidInputError, match="max_evaluations"):
        modality_discrepancy_exact(torch.randn(5, 12), torch.arange(5) % 6, search="brute",
                                   max_evaluations=1000)
    assert np.isfinite(modality_discrepancy(z.numpy(), y.numpy(), trials=2))


def test_config_is_validated():
    with pytest.raises(InvalidInputError, match="signs"):
        get_method("mona", signs="inverted")
    with pytest.raises(InvalidInputError, match="discrepancy_distance"):
        get_method("mona", discrepancy_distance="js")


# ------------------------------------------------------------------------ end to end


@pytest.mark.slow
@pytest.mark.parametrize("key", ["smoke_gunpoint", "smoke_digits"])
def test_mona_runs_end_to_end_and_records_the_share_of_the_outer_gradient(small_splits, key, tmp_path):
    opts = dict(meta_steps=2, meta_batch_size=8, source_batch_size=4, proxy_samples=24,
                discrepancy_trials=20)
    r = run(key, "mona", "smoke", epochs=2, out=tmp_path, progress=False,
            splits=small_splits(key, 32, 24), method_options=opts, train_options={"batch_size": 16})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "mona" and len(saved["epochs"]) == 2
    assert math.isfinite(saved["final_metric"]) and saved["final_metric"] == r["final_metric"]
    rep = saved["method_report"]
    assert len(rep["curves"]["inner"]) == 2
    assert all(math.isfinite(v) for c in rep["curves"].values() for v in c)
    # the outer loss reaches phi_e (second order) and carries a measurable share at the
    # defaults (alpha = 1e-2, lambda = 5: about 0.3 of the inner gradient on smoke_gunpoint)
    ratios = rep["curves"]["grad_ratio"]
    assert len(ratios) == 2 and all(0.02 < q < 50 for q in ratios)
    assert min(ratios) <= rep["grad_ratio_median"] <= max(ratios)
    if key == "smoke_gunpoint":  # 2 target classes <= 5 proxy classes: Algorithm 2 applies
        assert 0.0 <= rep["discrepancy_before"] <= 1.0 and 0.0 <= rep["discrepancy_after"] <= 1.0
    else:  # 10 digit classes > 5 proxy classes
        assert "discrepancy_skipped" in rep


@pytest.mark.slow
@pytest.mark.parametrize("train_head", [False, True])
def test_stage_one_updates_only_the_embedder_unless_asked(small_splits, train_head):
    from crossmodal.models import build_model

    task = get_task("smoke_gunpoint")
    model = build_model(task, "minilm")
    m = get_method("mona", meta_steps=1, meta_batch_size=4, source_batch_size=4,
                   proxy_samples=8, discrepancy_trials=0, train_head=train_head)
    m.prepare(model, task, RunContext(progress=False))
    head0 = [p.detach().clone() for p in model.head.parameters()]
    emb0 = [p.detach().clone() for p in model.embedder.parameters()]
    body0 = [p.detach().clone() for p in model.body.parameters()]
    m.before_finetune(model, task, small_splits("smoke_gunpoint", 8, 4), RunContext(progress=False))
    moved = lambda new, old: any(not torch.equal(a, b) for a, b in zip(new, old))  # noqa: E731
    assert moved(list(model.embedder.parameters()), emb0)
    assert moved(list(model.head.parameters()), head0) == train_head
    assert not moved(list(model.body.parameters()), body0)  # the virtual step is discarded
