r"""Multi-scale kernel maximum mean discrepancy (MMD²), differentiable.

.. math::

    \mathrm{MMD}^2(P, Q) = \mathbb E\,k(x, x') + \mathbb E\,k(y, y') - 2\,\mathbb E\,k(x, y),

with :math:`k = \sum_s k_s` a sum of kernels at several scales. The unbiased estimator drops
the diagonal terms :math:`k(x_i, x_i)` from the within-sample means (it can be slightly
negative); the biased (V-statistic) one keeps them and is always >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crossmodal.distances._checks import as_features
from crossmodal.errors import InvalidInputError

__all__ = ["mmd"]

_KERNELS = ("rbf", "imq")
# Multipliers of the median pairwise distance used when no bandwidths are given.
_DEFAULT_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (n, m), clamped at 0 (smooth: no square root)."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def _median_bandwidth(dxx, dyy, dxy) -> torch.Tensor:
    """Median pairwise distance of the pooled sample (off-diagonal), detached."""
    with torch.no_grad():
        n, m = dxx.shape[0], dyy.shape[0]
        off = torch.cat([dxx[~torch.eye(n, dtype=torch.bool, device=dxx.device)],
                         dyy[~torch.eye(m, dtype=torch.bool, device=dyy.device)],
                         dxy.reshape(-1)])
        med = off.sqrt().median()
        return med if float(med) > 0 else torch.ones((), dtype=dxx.dtype, device=dxx.device)


def _kernel(d2: torch.Tensor, kernel: str, scales: torch.Tensor) -> torch.Tensor:
    s2 = (scales * scales).view(-1, 1, 1)
    if kernel == "rbf":  # exp(-|a-b|^2 / (2 s^2))
        return torch.exp(-d2.unsqueeze(0) / (2.0 * s2)).sum(0)
    return (s2 / (s2 + d2.unsqueeze(0))).sum(0)  # inverse multiquadric s^2 / (s^2 + |a-b|^2)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "rbf",
    bandwidths: Sequence[float] | torch.Tensor | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    r"""Multi-scale kernel MMD² between samples ``x`` (n, d) and ``y`` (m, d).

    Parameters
    ----------
    x, y : torch.Tensor
        Samples, (n, d) and (m, d) (or (n, ...), flattened per sample); same d and dtype.
    kernel : {"rbf", "imq"}
        ``"rbf"``: :math:`\sum_s \exp(-\|a-b\|^2 / 2s^2)`;
        ``"imq"``: :math:`\sum_s s^2 / (s^2 + \|a-b\|^2)`.
    bandwidths : sequence of float, optional
        Scales :math:`s`. Default: the median pairwise distance of the pooled sample
        (computed without gradient) times 0.25, 0.5, 1, 2 and 4.
    unbiased : bool
        Unbiased U-statistic (needs at least 2 samples per side) or the biased V-statistic.

    Returns
    -------
    torch.Tensor
        A 0-dim tensor, differentiable with respect to ``x`` and ``y``.
    """
    if kernel not in _KERNELS:
        raise InvalidInputError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
    min_rows = 2 if unbiased else 1
    x = as_features(x, "x", min_rows=min_rows)
    y = as_features(y, "y", min_rows=min_rows)
    if x.shape[1] != y.shape[1]:
        raise InvalidInputError(f"x and y must have the same number of features, got "
                                f"{x.shape[1]} and {y.shape[1]}")
    if x.dtype != y.dtype:
        raise InvalidInputError(f"x is {x.dtype} but y is {y.dtype}; use one dtype")
    y = y.to(x.device)
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidths is None:
        scales = _median_bandwidth(dxx, dyy, dxy) * torch.tensor(
            _DEFAULT_MULTIPLIERS, dtype=x.dtype, device=x.device)
    else:
        scales = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).reshape(-1)
        if scales.numel() == 0 or not bool(torch.isfinite(scales).all() & (scales > 0).all()):
            raise InvalidInputError(f"bandwidths must be positive finite numbers, got "
                                    f"{bandwidths!r}")
    kxx, kyy, kxy = (_kernel(d, kernel, scales) for d in (dxx, dyy, dxy))
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return sxx + syy - 2.0 * kxy.mean()
