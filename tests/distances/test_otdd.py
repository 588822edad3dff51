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
    assert float(d_full.detach()) == pytest.approx(float(d_det.detach()), rel=1e-6)
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


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
@pytest.mark.parametrize(("p", "lx", "ly"), [(2, 1.0, 1.0), (2, 0.5, 2.0), (1, 1.0, 1.0)])
def test_closed_form_two_diracs(inner, p, lx, ly):
    # one class per side, each a Dirac (two copies of one point): W(y, y') = |a - b|^2 exactly
    # (the only coupling is the product one, so the entropy term vanishes), the self terms are 0,
    # and the distance is the ground cost lx |a-b|^p / p + ly W / p.
    a = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64).repeat(2, 1)
    b = torch.tensor([[-0.5, 1.0, 2.5]], dtype=torch.float64).repeat(2, 1)
    y = torch.zeros(2, dtype=torch.long)
    dist = float((a[0] - b[0]).norm())
    expected = lx * dist**p / p + ly * dist**2 / p
    got = float(otdd(a, y, b, y + 5, inner=inner, p=p, lambda_x=lx, lambda_y=ly))
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_gradcheck_float64(inner):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    x2 = (torch.randn(5, 2, generator=g, dtype=torch.float64) + 0.3).requires_grad_(True)
    y1 = torch.tensor([0, 1, 0, 1])
    y2 = torch.tensor([1, 1, 0, 0, 1])

    # geomloss's gradient is the envelope-theorem one: exact at convergence. A large entreg and
    # slow annealing bring the computed value within ~1e-4 of convergence (measured), so the
    # tolerance is 5e-4 on gradients of size ~1: far below what a wrong factor or a missing
    # term (label distances included) would produce.
    def fn(a, b):
        return otdd(a, y1, b, y2, inner=inner, entreg=5.0, scaling=0.99)

    assert torch.autograd.gradcheck(fn, (x1, x2), eps=1e-6, atol=5e-4, rtol=1e-3)


@pytest.mark.parametrize("inner", ["exact", "gaussian"])
def test_invariant_to_sample_order_and_label_names(inner):
    x1, y1 = _data(seed=14)
    x2, y2 = _data(n=96, k=4, seed=15, shift=0.5)
    base = float(otdd(x1, y1, x2, y2, inner=inner))
    perm = torch.randperm(x2.shape[0], generator=torch.Generator().manual_seed(1))
    assert float(otdd(x1, y1, x2[perm], y2[perm], inner=inner)) == pytest.approx(base, rel=1e-5)
    renamed = torch.tensor([7, 3, 11, -2])[y2]  # any integer names, any order
    assert float(otdd(x1, y1, x2, renamed, inner=inner)) == pytest.approx(base, rel=1e-5)


def test_gaussian_mode_approaches_exact_for_gaussian_classes():
    def rel_gap(n):
        x1, y1 = _data(n=n, d=2, k=2, seed=16)
        x2, y2 = _data(n=n, d=2, k=2, seed=17, shift=1.0)
        e = float(otdd(x1, y1, x2, y2, entreg=0.01))
        g = float(otdd(x1, y1, x2, y2, inner="gaussian", entreg=0.01))
        return abs(e / g - 1.0)

    small, large = rel_gap(12), rel_gap(600)
    assert large < small and large < 0.02


def test_max_samples_is_deterministic_and_close():
    x1, y1 = _data(n=300, seed=18)
    x2, y2 = _data(n=300, seed=19, shift=0.5)
    full = float(otdd(x1, y1, x2, y2))
    sub = [float(otdd(x1, y1, x2, y2, max_samples=150)) for _ in range(2)]
    assert sub[0] == sub[1]
    assert sub[0] == pytest.approx(full, rel=0.1)


def test_native_kernel_and_pytorch_path_agree(monkeypatch):
    from crossmodal.distances import _native

    x1, y1 = _data(seed=20)
    x2, y2 = _data(n=90, k=4, seed=21, shift=1.0)
    if not _native.available(x1.new_zeros(1, 1, 1)):
        pytest.skip("no C compiler here: only the PyTorch path exists")
    fast = float(otdd(x1, y1, x2, y2))
    monkeypatch.setattr(_native, "available", lambda t: False)
    slow = float(otdd(x1, y1, x2, y2))
    assert fast == pytest.approx(slow, rel=1e-5)
