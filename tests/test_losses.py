"""Task losses: values, gradients, agreement with the metrics, shape and name errors."""

from __future__ import annotations

import math

import pytest
import torch

from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.losses import LOSSES, get_loss
from crossmodal.metrics import relative_l2 as relative_l2_metric


def _inputs(name: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A (pred, target) pair of the kind each loss expects."""
    if name in ("cross_entropy", "focal"):
        return torch.randn(6, 4, generator=gen), torch.randint(0, 4, (6,), generator=gen)
    if name == "bce_logits":
        return torch.randn(6, 5, generator=gen), torch.randint(0, 2, (6, 5), generator=gen)
    return torch.randn(3, 1, 8, 8, generator=gen), torch.randn(3, 1, 8, 8, generator=gen)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_flows(name):
    gen = torch.Generator().manual_seed(0)
    pred, target = _inputs(name, gen)
    pred.requires_grad_(True)
    loss = get_loss(name)(pred, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_values_by_hand():
    # uniform logits over 2 classes: -log(1/2) = log 2
    assert get_loss("cross_entropy")(torch.zeros(3, 2), torch.tensor([0, 1, 1])).item() == (
        pytest.approx(math.log(2)))
    # logit 0, target 1, positive weight 4: 4 * log 2
    bce = get_loss("bce_logits", pos_weight=4.0)
    assert bce(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx(4 * math.log(2))
    # errors (1, -3): MSE (1 + 9) / 2 = 5, L1 (1 + 3) / 2 = 2
    p, y = torch.tensor([[1.0, -3.0]]), torch.zeros(1, 2)
    assert get_loss("mse")(p, y).item() == 5.0
    assert get_loss("l1")(p, y).item() == 2.0
    # ||(0,0) - (3,4)|| / ||(3,4)|| = 1
    assert get_loss("relative_l2")(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])).item() == 1.0


def test_relative_l2_loss_equals_the_metric():
    gen = torch.Generator().manual_seed(1)
    p, y = torch.randn(5, 1, 9, 9, generator=gen), torch.randn(5, 1, 9, 9, generator=gen)
    assert get_loss("relative_l2")(p, y).item() == pytest.approx(relative_l2_metric(p, y),
                                                                 rel=1e-6)


def test_relative_l2_loss_is_finite_for_a_zero_target():
    pred = torch.ones(2, 3, requires_grad=True)
    loss = get_loss("relative_l2")(pred, torch.zeros(2, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", ["bce_logits", "mse", "relative_l2", "l1"])
def test_mismatched_shapes_raise(name):
    with pytest.raises(InvalidInputError, match="shape") as err:
        get_loss(name)(torch.zeros(4, 3), torch.zeros(4, 1))
    assert "(4, 3)" in str(err.value) and "(4, 1)" in str(err.value)


def test_cross_entropy_checks_shapes_and_dtype():
    ce = get_loss("cross_entropy")
    with pytest.raises(InvalidInputError, match="shape"):
        ce(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="shape"):
        ce(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="integer"):
        ce(torch.zeros(4, 3), torch.zeros(4))
    # any integer dtype is accepted
    assert torch.isfinite(ce(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int32)))


def test_unknown_loss_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_loss("hinge")
    assert "hinge" in str(err.value) and all(name in str(err.value) for name in LOSSES)


def test_unknown_option_raises_at_lookup():
    with pytest.raises(InvalidInputError, match="pos_weight"):
        get_loss("mse", pos_weight=2.0)


def test_orca_losses_focal_nrmse_rmse():
    gen = torch.Generator().manual_seed(0)
    z, y = torch.randn(5, 4, generator=gen), torch.randint(0, 4, (5,), generator=gen)
    # ORCA's FocalLoss(alpha=1) with its default gamma=0 is the cross-entropy
    assert get_loss("focal", alpha=1.0)(z, y).item() == pytest.approx(
        get_loss("cross_entropy")(z, y).item(), abs=1e-6)
    p = torch.softmax(z, 1)[torch.arange(5), y]
    expected = (-(1 - p) ** 2 * p.log()).mean().item()
    assert get_loss("focal", gamma=2.0)(z, y).item() == pytest.approx(expected, rel=1e-5)
    pred = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    target = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    # per-sample RMSE: sqrt(4/2) and 0; target RMS: sqrt(10/2) and sqrt(2)
    assert get_loss("rmse")(pred, target).item() == pytest.approx(math.sqrt(2) / 2)
    assert get_loss("nrmse")(pred, target).item() == pytest.approx(
        (math.sqrt(2) / math.sqrt(5)) / 2)
    g = pred.clone().requires_grad_()
    get_loss("nrmse")(g, target).backward()
    assert torch.isfinite(g.grad).all()  # an exact sample does not give a NaN gradient
