"""Properties of crossmodal.distances.mmd."""

from __future__ import annotations

import pytest
import torch

from crossmodal.distances import mmd
from crossmodal.errors import InvalidInputError


def _sample(n, d=4, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_self_mmd(kernel):
    x = _sample(60)
    assert float(mmd(x, x, kernel=kernel, unbiased=False)) == pytest.approx(0.0, abs=1e-5)
    # the unbiased estimator of identical samples is -2/n * (mean diagonal - mean off-diagonal)
    assert abs(float(mmd(x, x, kernel=kernel))) < 2 * 5 / 60


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_symmetry_and_mean_shift(kernel):
    x = _sample(80, seed=1)
    y = _sample(70, seed=2)
    assert float(mmd(x, y, kernel=kernel)) == pytest.approx(float(mmd(y, x, kernel=kernel)),
                                                            rel=1e-4, abs=1e-5)
    fixed = [0.5, 1.0, 2.0]  # fixed scales: the median heuristic would grow with the shift
    values = [float(mmd(x, y + s, kernel=kernel, bandwidths=fixed)) for s in (0.0, 0.5, 1.5)]
    assert values[0] < values[1] < values[2]
    assert abs(values[0]) < 0.1 * values[2]


def test_gradient_reduces_mmd():
    x = _sample(50, seed=3)
    y = _sample(50, seed=4, shift=1.0).requires_grad_(True)
    d0 = mmd(x, y, bandwidths=[1.0, 2.0])
    (g,) = torch.autograd.grad(d0, y)
    assert torch.isfinite(g).all() and float(g.abs().max()) > 0
    d1 = mmd(x, (y - 20.0 * g).detach(), bandwidths=[1.0, 2.0])
    assert float(d1) < float(d0.detach())


def test_gradcheck_float64():
    x = _sample(6, d=2, seed=5).double().requires_grad_(True)
    y = _sample(5, d=2, seed=6).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: mmd(a, b, bandwidths=[0.7, 1.5]), (x, y))


def test_errors():
    x = _sample(10)
    with pytest.raises(InvalidInputError, match="same number of features"):
        mmd(x, x[:, :2])
    with pytest.raises(InvalidInputError, match="NaN"):
        mmd(x, torch.full((5, 4), float("nan")))
    with pytest.raises(InvalidInputError, match="at least 2"):
        mmd(x, x[:1])
    with pytest.raises(InvalidInputError, match="kernel"):
        mmd(x, x, kernel="laplace")
    with pytest.raises(InvalidInputError, match="bandwidths"):
        mmd(x, x, bandwidths=[0.0])
