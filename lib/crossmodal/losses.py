"""Task losses for fine-tuning, chosen by name: ``get_loss(name)(pred, target) -> scalar tensor``.

========================  ====================================  =================================
name                      pred / target                         used by (ORCA's task configs)
========================  ====================================  =================================
``cross_entropy``         (n, K) logits / (n,) class indices    CIFAR-100, Spherical, ECG,
                                                                Satellite
``focal``                 (n, K) logits / (n,) class indices    NinaPro (``FocalLoss(alpha=1)``)
``bce_logits``            logits / same-shape 0-1 targets       FSD50K (pos_weight 10), Cosmic,
                                                                DeepSEA (pos_weight 4)
``mse``                   same shapes                           PSICOV
``relative_l2``           (n, ...) same shapes                  Darcy Flow (``LpLoss``)
``nrmse``                 (n, ...) same shapes                  PDEBench Advection, Diffusion-
                                                                Reaction 1D/2D, Diffusion-
                                                                Sorption, Darcy 2D, Shallow Water
``rmse``                  (n, ...) same shapes                  PDEBench Burgers, Navier-Stokes 1D
``l1``                    same shapes                           (regression alternative)
========================  ====================================  =================================

A task's loss options (e.g. ``pos_weight``) live in ``TaskSpec.loss_options``;
:func:`task_loss` binds them, so every method trains with the same task loss.

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
PredictionLoss = Callable[[Tensor, Tensor], Tensor]


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


def focal(logits: Tensor, labels: Tensor, *, alpha: float = 1.0, gamma: float = 0.0) -> Tensor:
    r"""Mean multi-class focal loss (ORCA's ``FocalLoss`` for NinaPro).

    .. math:: \mathcal L = \frac1n \sum_i -\alpha\,(1 - p_{i y_i})^\gamma \log p_{i y_i},
              \qquad p = \operatorname{softmax}(z)

    ORCA uses ``FocalLoss(alpha=1)`` with its default ``gamma=0``, which is the cross-entropy
    (ORCA adds 1e-9 inside the log, a difference below 1e-8 here).

    Parameters
    ----------
    logits : (n, K) scores.
    labels : (n,) integer class indices.
    alpha, gamma : the weight and the focusing exponent.
    """
    ce = cross_entropy(logits, labels)  # validates the shapes
    if gamma == 0.0:
        return alpha * ce
    logp = F.log_softmax(logits, dim=1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return (-alpha * (1.0 - logp.exp()).pow(gamma) * logp).mean()


def _per_sample_rmse(pred: Tensor, target: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    _same_shape(pred, target, loss)
    if pred.ndim < 2:
        raise InvalidInputError(f"{loss}: expected pred and target of shape (n, ...), got shape "
                                f"{tuple(pred.shape)}")
    n = pred.shape[0]
    t = target.to(pred.dtype).reshape(n, -1)
    # the floor keeps the gradient finite when a prediction is exact (d sqrt(0) = inf)
    err = (pred.reshape(n, -1) - t).pow(2).mean(1).clamp_min(1e-30).sqrt()
    return err, t


def rmse(pred: Tensor, target: Tensor) -> Tensor:
    r"""Mean over samples of the per-sample RMSE (ORCA's ``rmse_loss``, Burgers / 1D CFD).

    .. math:: \mathcal L = \frac1n \sum_i \sqrt{\operatorname{mean}_j (p_{ij} - y_{ij})^2}
    """
    err, _ = _per_sample_rmse(pred, target, "rmse")
    return err.mean()


def nrmse(pred: Tensor, target: Tensor, *, eps: float = 1e-12) -> Tensor:
    r"""Mean normalised RMSE (ORCA's ``nrmse_loss``, PDEBench's nRMSE) as a training loss.

    .. math:: \mathcal L = \frac1n \sum_i
              \frac{\sqrt{\operatorname{mean}_j (p_{ij} - y_{ij})^2}}
                   {\max(\sqrt{\operatorname{mean}_j y_{ij}^2}, \varepsilon)}

    ``eps`` keeps an all-zero target finite (ORCA divides without a floor).
    """
    err, t = _per_sample_rmse(pred, target, "nrmse")
    return (err / t.pow(2).mean(1).sqrt().clamp_min(eps)).mean()


#: Every loss by name.
LOSSES: dict[str, PredictionLoss] = {
    "cross_entropy": cross_entropy,
    "focal": focal,
    "nrmse": nrmse,
    "rmse": rmse,
    "bce_logits": bce_logits,
    "mse": mse,
    "relative_l2": relative_l2,
    "l1": l1,
}


def get_loss(name: str, **options) -> PredictionLoss:
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


def task_loss(task) -> PredictionLoss:
    """The training loss of a task: ``get_loss(task.loss, **task.loss_options)``."""
    return get_loss(task.loss, **dict(getattr(task, "loss_options", None) or {}))
