"""Properties of crossmodal.distances.otdd: self-distance, symmetry, invariances, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from crossmodal.distances import OTDDSource, otdd
from crossmodal.errors import InvalidInputError


def _data(n=120, d=5, k=3, shift=0.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centres = 3.0 * torch.randn(k, d, generator=g, dtype=dtype)
    x = centres[y] + torch.randn(n, d, generator=g, dtype=dtype) + shift
    return x, y


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_self_distance_is_small_when_debiased(inner):
    x, y = _data()
    d = otdd(x, y, x.clone(), y.clone(), inner=inner)
    assert d.dim() == 0
    # exact: the entropic W(y, y) across the two copies is > 0, so the value is small, not 0
    if inner == "exact":
        assert 0.0 < float(d) < 0.3
    else:  # exactly 0 up to float rounding (the divergence is not clamped, as in the reference)
        assert abs(float(d)) < 1e-4


def test_raw_self_distance_is_not_zero():
    x, y = _data()
    raw = float(otdd(x, y, x, y, inner="gaussian", debiased=False))  # the entropic bias
    assert raw > 0.3 and abs(float(otdd(x, y, x, y, inner="gaussian"))) < 1e-4


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_symmetry(inner):
    x1, y1 = _data(seed=1)
    x2, y2 = _data(n=90, k=4, shift=1.0, seed=2)
    d12 = otdd(x1, y1, x2, y2, inner=inner)
    d21 = otdd(x2, y2, x1, y1, inner=inner)
    assert float(d12) > 1.0
    assert math.isclose(float(d12), float(d21), rel_tol=1e-4)


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_translation_increases_distance(inner):
    x1, y1 = _data(seed=3)
    x2, y2 = _data(seed=4)
    values = [float(otdd(x1, y1, x2 + s, y2, inner=inner)) for s in (0.0, 1.0, 3.0)]
    assert values[0] < values[1] < values[2]


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_gradient_flows_to_both_feature_sets(inner):
    x1, y1 = _data(seed=5)
    x2, y2 = _data(seed=6, shift=0.5)
    x1.requires_grad_(True)
    x2.requires_grad_(True)
    d = otdd(x1, y1, x2, y2, inner=inner)
    g1, g2 = torch.autograd.grad(d, (x1, x2))
    for g in (g1, g2):
        assert torch.isfinite(g).all() and float(g.abs().max()) > 0


def test_gradient_step_lowers_distance():
    x1, y1 = _data(seed=7)
    x2, y2 = _data(seed=8, shift=2.0)
    x2.requires_grad_(True)
    d0 = otdd(x1, y1, x2, y2, detach_label_distances=True)
    (g,) = torch.autograd.grad(d0, x2)
    d1 = otdd(x1, y1, (x2 - 0.5 * x2.shape[0] * g).detach(), y2)
    assert float(d1) < float(d0.detach())


def test_detached_label_distances_change_only_the_gradient():
    x1, y1 = _data(seed=9)
    x2, y2 = _data(seed=10, shift=1.0)
    x2.requires_grad_(True)
    d_full = otdd(x1, y1, x2, y2)
    d_det = otdd(x1, y1, x2, y2, detach_label_distances=True)
    assert float(d_full) == pytest.approx(float(d_det), rel=1e-6)
    (g_full,) = torch.autograd.grad(d_full, x2)
    (g_det,) = torch.autograd.grad(d_det, x2)
    assert not torch.allclose(g_full, g_det)


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_source_cache_matches_direct_call(inner):
    x1, y1 = _data(seed=11)
    src = OTDDSource(x1, y1, inner=inner)
    for seed in (12, 13):
        x2, y2 = _data(seed=seed, k=4, shift=0.5)
        direct = otdd(x1, y1, x2, y2, inner=inner)
        cached = src.distance(x2, y2)
        assert float(cached) == pytest.approx(float(direct), rel=1e-6)


def test_errors_are_clear():
    x, y = _data()
    with pytest.raises(InvalidInputError, match="same length"):
        otdd(x, y[:-1], x, y)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        otdd(x, y, bad, y)
    bad[3, 1] = float("inf")
    with pytest.raises(InvalidInputError, match="NaN or infinite"):
        otdd(bad, y, x, y)
    with pytest.raises(InvalidInputError, match="integer class labels"):
        otdd(x, y.float(), x, y)
    with pytest.raises(InvalidInputError, match="fewer than 2 samples"):
        otdd(x, y, x[:4], torch.tensor([0, 0, 1, 2]))
    with pytest.raises(InvalidInputError, match="at least 1"):
        otdd(x, y, x[:0], y[:0])
    with pytest.raises(InvalidInputError, match="same number of features"):
        otdd(x, y, x[:, :3], y)
    with pytest.raises(InvalidInputError, match="inner"):
        otdd(x, y, x, y, inner="sliced")
