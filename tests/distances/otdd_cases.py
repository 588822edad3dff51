"""Seeded datasets of several shapes for the regression test against microsoft/otdd.

Each case is a dict of sizes, class counts and class weights; :func:`make_case` turns it into
``(x1, y1, x2, y2)`` deterministically. Labels are 0..C-1 on each side (microsoft/otdd's
Gaussian mode assumes contiguous labels), in shuffled order; ``permute`` relabels the second
dataset's classes by a fixed permutation.
"""

from __future__ import annotations

import torch

CASES: dict[str, dict] = {
    "balanced_3v3_d4": dict(n1=60, n2=50, d=4, c1=3, c2=3, seed=1),
    "imbalanced_4v2_d8": dict(n1=80, n2=40, d=8, c1=4, c2=2, seed=2,
                              w1=(0.5, 0.25, 0.15, 0.10), w2=(0.7, 0.3)),
    "permuted_5v5_d16": dict(n1=100, n2=100, d=16, c1=5, c2=5, seed=3, permute=True),
    "few_2v6_d2": dict(n1=30, n2=72, d=2, c1=2, c2=6, seed=4, shift=1.5),
    "wide_3v4_d40": dict(n1=90, n2=120, d=40, c1=3, c2=4, seed=5, scale2=2.0),
    # held out: added after the implementation matched the cases above, never tuned on
    "heldout_6v4_d10": dict(n1=150, n2=120, d=10, c1=6, c2=4, seed=6, shift=0.7,
                            w1=(0.3, 0.25, 0.15, 0.12, 0.1, 0.08), permute=True),
    "heldout_7v7_d6": dict(n1=140, n2=161, d=6, c1=7, c2=7, seed=7, scale2=0.5),
}


def _labels(n: int, c: int, weights, g: torch.Generator) -> torch.Tensor:
    w = torch.full((c,), 1.0 / c) if weights is None else torch.tensor(weights)
    counts = torch.floor(w / w.sum() * n).long().clamp_min(2)
    counts[0] += n - int(counts.sum())
    y = torch.repeat_interleave(torch.arange(c), counts)
    return y[torch.randperm(n, generator=g)]


def make_case(name: str, dtype: torch.dtype = torch.float32):
    """Return ``(x1, y1, x2, y2)`` of a named case."""
    spec = CASES[name]
    g = torch.Generator().manual_seed(spec["seed"])
    d = spec["d"]
    y1 = _labels(spec["n1"], spec["c1"], spec.get("w1"), g)
    y2 = _labels(spec["n2"], spec["c2"], spec.get("w2"), g)
    m1 = 2.0 * torch.randn(spec["c1"], d, generator=g, dtype=torch.float64)
    m2 = 2.0 * torch.randn(spec["c2"], d, generator=g, dtype=torch.float64)
    a1 = torch.randn(spec["c1"], d, d, generator=g, dtype=torch.float64) / d ** 0.5
    a2 = torch.randn(spec["c2"], d, d, generator=g, dtype=torch.float64) / d ** 0.5
    z1 = torch.randn(spec["n1"], d, generator=g, dtype=torch.float64)
    z2 = torch.randn(spec["n2"], d, generator=g, dtype=torch.float64)
    x1 = m1[y1] + (a1[y1] @ z1.unsqueeze(2)).squeeze(2)
    x2 = m2[y2] + spec.get("scale2", 1.0) * (a2[y2] @ z2.unsqueeze(2)).squeeze(2)
    x2 = x2 + spec.get("shift", 0.0)
    if spec.get("permute"):
        perm = torch.randperm(spec["c2"], generator=g)
        y2 = perm[y2]
    return x1.to(dtype), y1, x2.to(dtype), y2
