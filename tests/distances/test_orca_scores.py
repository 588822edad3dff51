"""ORCA's MMD and pairwise-L2 alignment objectives, against direct computations of their
definitions in ORCA's ``src/utils.py`` (``MMD_loss``, ``l2``), and ORCA's OTDD call."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from crossmodal.distances import orca_mmd, orca_pairwise_l2
from crossmodal.errors import InvalidInputError


def _clouds(n=12, d=5, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) + shift


def test_orca_mmd_is_the_five_kernel_biased_estimate():
    xs, xt = _clouds(shift=0.5)
    n = len(xs)
    z = torch.cat([xs, xt])
    d2 = torch.cdist(z, z) ** 2
    mean_d2 = float(d2.sum()) / (4 * n * n - 2 * n)
    k = sum(torch.exp(-d2 / (mean_d2 / 4 * 2**i)) for i in range(5))
    expected = (k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()).item()
    assert float(orca_mmd(xs, xt)) == pytest.approx(expected, rel=1e-4)


def test_orca_mmd_grows_with_the_shift_and_is_zero_for_identical_samples():
    xs, _ = _clouds()
    assert float(orca_mmd(xs, xs.clone())) == pytest.approx(0.0, abs=1e-6)
    vals = [float(orca_mmd(*_clouds(shift=s))) for s in (0.0, 1.0, 3.0)]
    assert vals[0] < vals[1] < vals[2]


def test_orca_mmd_needs_equal_sizes_and_gives_gradients():
    xs, xt = _clouds()
    with pytest.raises(InvalidInputError, match="as many source samples"):
        orca_mmd(xs, xt[:5])
    xt.requires_grad_(True)
    orca_mmd(xs, xt).backward()
    assert torch.isfinite(xt.grad).all() and float(xt.grad.abs().sum()) > 0


def test_orca_l2_is_the_mean_paired_distance_per_shuffled_batch():
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(4, 3, generator=g)
    xs = torch.randn(10, 3, generator=g)  # batches of 4, 4 and a partial 2
    got = float(orca_pairwise_l2(xt, xs, generator=torch.Generator().manual_seed(7)))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(7))
    pdist = nn.PairwiseDistance(p=2)
    b = xs[order]
    expected = (pdist(xt, b[:4]).mean() + pdist(xt, b[4:8]).mean()) / 3  # partial: counted
    assert got == pytest.approx(float(expected), rel=1e-4)
    # a source smaller than the target: one truncated pairing
    small = float(orca_pairwise_l2(xt, xs[:2], generator=torch.Generator().manual_seed(1)))
    o = torch.randperm(2, generator=torch.Generator().manual_seed(1))
    assert small == pytest.approx(float(pdist(xt[:2], xs[:2][o]).mean()), rel=1e-4)


def test_orca_l2_is_not_the_distance_of_means():
    xs, xt = _clouds(n=64)
    l2 = float(orca_pairwise_l2(xt, xs, generator=torch.Generator().manual_seed(0)))
    # two standard normal clouds in 5 dims: paired distances ~ sqrt(2 * 5), means ~ equal
    assert l2 == pytest.approx(math.sqrt(10), rel=0.15)
    assert float((xt.mean(0) - xs.mean(0)).norm()) < l2 / 3
