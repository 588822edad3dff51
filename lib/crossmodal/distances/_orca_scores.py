r"""ORCA's two non-OTDD alignment objectives (``sjunhongshen/ORCA`` ``src/utils.py``).

* :func:`orca_mmd` (ORCA's ``MMD_loss``): the biased (V-statistic) MMD² with a sum of five
  Gaussian kernels whose bandwidths are spread by factors of 2 around the mean squared
  distance of the pooled sample,

  .. math:: \bar d = \frac{\sum_{i \ne j} \|z_i - z_j\|^2}{n^2 - n},\quad
            \sigma^2_s = \bar d \, 2^{s-2},\ s = 0..4,\quad
            k(a, b) = \sum_s \exp(-\|a - b\|^2 / \sigma^2_s)

  (no factor 2 in the exponent, :math:`\bar d` computed without gradient), and
  :math:`\mathrm{mean}(K_{xx} + K_{yy} - K_{xy} - K_{yx})` over the n x n blocks, both
  samples of the same size n. ORCA draws that many source samples at random (with
  replacement) for every call; :func:`orca_mmd` takes the two samples as given.
* :func:`orca_pairwise_l2` (ORCA's ``l2``): the source is shuffled and cut into batches of
  the target's size n; each full batch contributes the mean *paired* Euclidean distance
  :math:`\frac1n \sum_i \|x^t_i - x^s_{\pi(i)}\|_2` (``nn.PairwiseDistance``, row i with
  row i), and the sum is divided by the number of batches, the last partial one included
  (ORCA's loader does not drop it; a source smaller than n gives one truncated pair-up).
"""

from __future__ import annotations

import torch

from crossmodal.distances._checks import as_features
from crossmodal.errors import InvalidInputError

__all__ = ["orca_mmd", "orca_pairwise_l2"]


def orca_mmd(source: torch.Tensor, target: torch.Tensor, *, kernel_mul: float = 2.0,
             kernel_num: int = 5) -> torch.Tensor:
    """ORCA's MMD² between two equally sized samples (n, d); differentiable in both."""
    source, target = as_features(source, "source"), as_features(target, "target")
    if source.shape != target.shape:
        raise InvalidInputError(
            f"ORCA's MMD compares samples of one size and width, got {tuple(source.shape)} "
            f"and {tuple(target.shape)}: draw as many source samples as target samples")
    n = source.shape[0]
    if n < 2:
        raise InvalidInputError("ORCA's MMD needs at least 2 samples per side")
    total = torch.cat([source, target])
    d2 = (total.unsqueeze(0) - total.unsqueeze(1)).pow(2).sum(2)
    m = 2 * n
    bandwidth = d2.detach().sum() / (m * m - m) / kernel_mul ** (kernel_num // 2)
    kernels = sum(torch.exp(-d2 / (bandwidth * kernel_mul**i)) for i in range(kernel_num))
    xx, yy = kernels[:n, :n], kernels[n:, n:]
    xy, yx = kernels[:n, n:], kernels[n:, :n]
    return (xx + yy - xy - yx).mean()


def orca_pairwise_l2(target: torch.Tensor, source: torch.Tensor, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """ORCA's ``l2``: mean paired distance to the shuffled source, batch by batch."""
    target, source = as_features(target, "target"), as_features(source, "source")
    if target.shape[1] != source.shape[1]:
        raise InvalidInputError(f"target and source widths differ: {target.shape[1]} and "
                                f"{source.shape[1]}")
    n = target.shape[0]
    order = torch.randperm(source.shape[0], generator=generator).to(source.device)
    batches = list(torch.split(source[order], n))
    total = target.new_zeros(())
    for i, batch in enumerate(batches):
        if len(batch) == n:
            total = total + (target - batch).norm(dim=1).mean()
        elif i == 0:  # a source smaller than one target batch
            total = total + (target[: len(batch)] - batch).norm(dim=1).mean()
    return total / len(batches)
