r"""Gaussian (Bures-Wasserstein) label-to-label distances, batched over all class pairs.

For classes summarised by a mean and an unbiased covariance,

.. math::

    W_2^2(\mathcal N(\mu, \Sigma), \mathcal N(\mu', \Sigma'))
        = \|\mu - \mu'\|^2 + \operatorname{tr}\Sigma + \operatorname{tr}\Sigma'
          - 2 \operatorname{tr}\big(\Sigma^{1/2} \Sigma' \Sigma^{1/2}\big)^{1/2},

clamped at zero as microsoft/otdd does. Covariance algebra runs in float64 (the reference
uses ``scipy.linalg.sqrtm`` in float64); the result is cast back to the caller's dtype.
Both matrix functions have gradients that stay finite for singular covariances (fewer
samples than dimensions), see :class:`_PSDSqrt` and :func:`_trace_sqrt`.
"""

from __future__ import annotations

import torch

__all__ = ["class_moments", "gaussian_label_distances", "psd_sqrt"]

# Relative floor on eigenvalues in the gradients of square roots: d sqrt(l) / dl = 1/(2 sqrt l)
# is infinite at l = 0, so the derivative is evaluated at max(l, floor) instead.
_EIG_FLOOR = 1e-12


def class_moments(xs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means (C, d) and unbiased covariances (C, d, d), in float64.

    ``xs`` (C, n_max, d) holds the classes' samples, zero-padded; ``mask`` (C, n_max) marks
    real samples. Each class needs at least two samples (checked by the caller).
    """
    xs = xs.double()
    m = mask.to(xs.dtype).unsqueeze(2)
    counts = m.sum(1)  # (C, 1)
    means = (xs * m).sum(1) / counts
    centred = (xs - means.unsqueeze(1)) * m
    covs = centred.transpose(1, 2) @ centred / (counts - 1.0).unsqueeze(2)
    return means, covs


class _PSDSqrt(torch.autograd.Function):
    r"""Square root of a symmetric PSD matrix (batched) by eigendecomposition.

    Backward: ``S = A^{1/2}`` satisfies ``S dS + dS S = dA``; in the eigenbasis
    ``A = U diag(l) U^T`` this gives ``dA~_ij = G~_ij / (s_i + s_j)`` with ``s = sqrt(l)``.
    Unlike autograd through ``eigh`` (which divides by ``l_i - l_j``), this stays finite for
    repeated eigenvalues; the denominators are floored for zero eigenvalues.
    """

    @staticmethod
    def forward(ctx, a):  # noqa: D401 - autograd signature
        evals, evecs = torch.linalg.eigh(a)
        s = evals.clamp_min(0.0).sqrt()
        ctx.save_for_backward(evecs, s)
        return (evecs * s.unsqueeze(-2)) @ evecs.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad):
        evecs, s = ctx.saved_tensors
        g = evecs.transpose(-1, -2) @ grad @ evecs
        g = 0.5 * (g + g.transpose(-1, -2))
        floor = _EIG_FLOOR * s.amax(-1, keepdim=True).clamp_min(1e-300).unsqueeze(-1)
        den = (s.unsqueeze(-1) + s.unsqueeze(-2)).clamp_min(floor)
        return evecs @ (g / den) @ evecs.transpose(-1, -2)


def psd_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Principal square root of symmetric PSD matrices (..., d, d), with a finite gradient."""
    return _PSDSqrt.apply(a)


def _trace_sqrt(m: torch.Tensor) -> torch.Tensor:
    """``tr(M^{1/2})`` of symmetric PSD matrices: the sum of square roots of the eigenvalues.

    Only eigenvalues are needed (``eigvalsh``'s gradient is ``U diag(g) U^T``, finite for
    repeated eigenvalues). Eigenvalues below a relative floor contribute through a
    linearisation at the floor so the derivative ``1/(2 sqrt l)`` never becomes infinite.
    """
    m = 0.5 * (m + m.transpose(-1, -2))
    evals = torch.linalg.eigvalsh(m).clamp_min(0.0)
    floor = (_EIG_FLOOR * evals.detach().amax(-1, keepdim=True)).clamp_min(1e-300)
    small = evals < floor
    # sqrt(l) for l >= floor; sqrt(floor) + (l - floor) / (2 sqrt(floor)) below (value < 1e-6
    # of the largest root, so the value changes negligibly while the gradient stays bounded)
    safe = torch.where(small, floor, evals)
    root = safe.sqrt()
    lin = floor.sqrt() + (evals - floor) / (2.0 * floor.sqrt())
    return torch.where(small, lin.clamp_min(0.0), root).sum(-1)


def gaussian_label_distances(
    mean_a: torch.Tensor,
    cov_a: torch.Tensor,
    mean_b: torch.Tensor,
    cov_b: torch.Tensor,
    *,
    sqrt_a: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """Squared 2-Wasserstein distances between all pairs of Gaussian classes, (Ca, Cb).

    ``sqrt_a`` may carry precomputed ``cov_a^{1/2}`` (cached source statistics). With
    ``symmetric=True`` (a dataset against itself) the diagonal is exactly zero and the
    matrix exactly symmetric, as in microsoft/otdd, which computes only pairs i < j.
    """
    if sqrt_a is None:
        sqrt_a = psd_sqrt(cov_a)
    dmean = (mean_a.unsqueeze(1) - mean_b.unsqueeze(0)).pow(2).sum(-1)
    cross = sqrt_a.unsqueeze(1) @ cov_b.unsqueeze(0) @ sqrt_a.unsqueeze(1)  # (Ca, Cb, d, d)
    tr_a = cov_a.diagonal(dim1=-2, dim2=-1).sum(-1)
    tr_b = cov_b.diagonal(dim1=-2, dim2=-1).sum(-1)
    bures = tr_a.unsqueeze(1) + tr_b.unsqueeze(0) - 2.0 * _trace_sqrt(cross)
    w = torch.relu(dmean + torch.relu(bures))
    if symmetric:
        upper = torch.triu(w, diagonal=1)
        w = upper + upper.transpose(0, 1)
    return w
