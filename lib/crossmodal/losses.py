"""Task losses for fine-tuning, chosen by name: ``get_loss(name)(pred, target) -> scalar tensor``.

========================  ====================================  =================================
name                      pred / target                         used by (ORCA's task configs)
========================  ====================================  =================================
``cross_entropy``         (n, K) logits / (n,) class indices    CIFAR-100, Spherical, NinaPro,
                                                                ECG, Satellite
``bce_logits``            logits / same-shape 0-1 targets       FSD50K, Cosmic, DeepSEA
``mse``                   same shapes                           PSICOV, PDEBench
``relative_l2``           (n, ...) same shapes                  Darcy Flow
``l1``                    same shapes                           (regression alternative)
========================  ====================================  =================================

The losses check shapes only: shapes are known without a device synchronisation, values are
not. Non-finite losses are caught by the training loop (:class:`crossmodal.errors.NonFiniteLossError`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from crossmodal.errors import InvalidInputError, unknown_name

#: A task loss: ``loss(pred, target)`` returns a scalar tensor that can be back-propagated.
LossFn = Callable[[Tensor, Tensor], Tensor]


def _same_shape(pred: Tensor, target: Tensor, loss: str) -> None:
    if pred.shape != target.shape:
        raise InvalidInputError(
            f"{loss}: expected pred and target of the same shape, got pred shape "
            f"{tuple(pred.shape)} and target shape {tuple(target.shape)}"
        )


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Mean cross-entropy of class logits.

    .. math:: \mathcal L = -\frac1n \sum_i \log \frac{e^{z_{i y_i}}}{\sum_k e^{z_{ik}}}

    Parameters
    ----------
    logits : (n, K) scores, or (n, K, *d) for per-position classification.
    labels : (n,) (or (n, *d)) integer class indices, any integer dtype.
    """
    if logits.ndim < 2:
        raise InvalidInputError(
            f"cross_entropy: expected logits of shape (n, K), got shape {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected:
        raise InvalidInputError(
            f"cross_entropy: expected labels of shape {expected} for logits of shape "
            f"{tuple(logits.shape)}, got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise InvalidInputError(
            f"cross_entropy: expected integer class labels, got dtype {labels.dtype}"
        )
    return F.cross_entropy(logits, labels.long())


def bce_logits(logits: Tensor, targets: Tensor, *,
               pos_weight: float | Tensor | None = None) -> Tensor:
    r"""Mean binary cross-entropy on logits (multi-label or per-pixel).

    .. math:: \mathcal L = -\operatorname{mean}\big[w\, y \log\sigma(z)
              + (1 - y) \log(1 - \sigma(z))\big]

    Parameters
    ----------
    logits : any shape.
    targets : same shape, values in [0, 1] (any dtype; cast to the logits' dtype).
    pos_weight : weight w of the positive term, a scalar or a tensor broadcastable to the last
        axis. ORCA uses 10 for FSD50K and 4 for DeepSEA (``get_loss("bce_logits",
        pos_weight=4.0)``); None means 1.
    """
    _same_shape(logits, targets, "bce_logits")
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                              pos_weight=pos_weight)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    r"""Mean squared error, :math:`\operatorname{mean}(p - y)^2`, over every entry."""
    _same_shape(pred, target, "mse")
    return F.mse_loss(pred, target.to(pred.dtype))


def l1(pred: Tensor, target: Tensor) -> Tensor:
    r"""Mean absolute error, :math:`\operatorname{mean}|p - y|`, over every entry."""
    _same_shape(pred, target, "l1")
    return F.l1_loss(pred, target.to(pred.dtype))


def relative_l2(pred: Tensor, target: Tensor, *, eps: float = 1e-12) -> Tensor:
    r"""Differentiable mean relative L2 error (the FNO / ORCA ``LpLoss``, p = 2).

    .. math:: \mathcal L = \frac1n \sum_i \frac{\lVert p_i - y_i \rVert_2}
              {\max(\lVert y_i \rVert_2, \varepsilon)}

    with each sample flattened. Equals :func:`crossmodal.metrics.relative_l2` whenever no target
    norm is below ``eps``.

    Parameters
    ----------
    pred, target : (n, ...) of the same shape.
    eps : floor of the denominator, so an all-zero target gives a large finite loss instead of
        inf/NaN.

    Notes
    -----
    ORCA trains Darcy Flow with ``LpLoss(size_average=False)``, the *sum* over the batch; the
    mean used here differs by the constant factor n (equivalent to scaling the learning rate).
    """
    _same_shape(pred, target, "relative_l2")
    if pred.ndim < 2:
        raise InvalidInputError(
            f"relative_l2: expected pred and target of shape (n, ...) with at least one axis "
            f"per sample, got shape {tuple(pred.shape)}"
        )
    n = pred.shape[0]
    diff = torch.linalg.vector_norm((pred - target.to(pred.dtype)).reshape(n, -1), dim=1)
    norm = torch.linalg.vector_norm(target.to(pred.dtype).reshape(n, -1), dim=1)
    return (diff / norm.clamp_min(eps)).mean()


#: Every loss by name.
LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "bce_logits": bce_logits,
    "mse": mse,
    "relative_l2": relative_l2,
    "l1": l1,
}


def get_loss(name: str, **options) -> LossFn:
    """The loss registered as ``name``, with keyword ``options`` bound (e.g. ``pos_weight``).

    Raises
    ------
    crossmodal.errors.UnknownNameError
        If ``name`` is not a loss; the message lists the valid names.
    crossmodal.errors.InvalidInputError
        If an option is not a keyword of that loss (checked now, not at the first step).
    """
    try:
        fn = LOSSES[name]
    except KeyError:
        raise unknown_name("loss", name, list(LOSSES)) from None
    if not options:
        return fn
    keywords = [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(keywords))
    if unknown:
        raise InvalidInputError(
            f"loss {name!r} has no option(s) {unknown}; its options: {keywords or 'none'}"
        )
    return partial(fn, **options)
