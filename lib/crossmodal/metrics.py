"""Test metrics of NAS-Bench-360 and PDEBench, in the units the ORCA / PaRe / RECRAFT tables use.

Every metric is an error (lower is better) and has the signature ``fn(pred, target) -> float``.
Inputs may be torch tensors (any device or dtype, detached here), numpy arrays or nested lists;
they are converted to float64 numpy arrays. Callers concatenate the predictions of the whole test
set and call the metric once (ORCA's ``evaluate`` averages per evaluation batch instead; for the
ratio- and ranking-based metrics that differs slightly, and the whole-set value is the one the
metric's definition describes).

================  =====================  ============================================  ========
key               tasks                  definition                                    units
================  =====================  ============================================  ========
``error01``       CIFAR-100, Spherical,  100 · mean(argmax pred ≠ y)                   percent
                  NinaPro, Satellite
``relative_l2``   Darcy Flow             mean_i ‖p_i − y_i‖₂ / ‖y_i‖₂                  ratio
``mae8``          PSICOV                 MAE over pairs with j − i ≥ 24 and d ≤ 8 Å    Ångström
``1-auroc``       Cosmic, DeepSEA        1 − AUROC (pixels pooled / mean over labels)  [0, 1]
``1-auroc-hard``  Cosmic as ORCA scores  1 − AUROC of hard predictions logit > 0       [0, 1]
``1-map``         FSD50K                 1 − mean over classes of average precision    [0, 1]
``1-f1``          ECG                    1 − macro F1                                  [0, 1]
``nrmse``         PDEBench               mean_{i,c} RMS(p − y) / RMS(y)                ratio
================  =====================  ============================================  ========

The conventions were checked against NAS-Bench-360's evaluation code (rtu715/NAS-Bench-360),
ORCA's ``src/utils.py`` / ``src/task_configs.py`` (sjunhongshen/ORCA), which PaRe and RECRAFT
reuse, and PDEBench's ``pdebench/models/metrics.py``. Each function's notes say where the kit
follows them and where they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from crossmodal.errors import InvalidInputError, unknown_name

#: What the metrics accept: a tensor, an array, or anything ``np.asarray`` understands.
ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


# --------------------------------------------------------------------------- input helpers


def _as_array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array (tensors are detached and moved to the CPU first)."""
    if isinstance(x, torch.Tensor):
        # bfloat16 has no numpy dtype, so cast in torch before leaving it.
        return x.detach().cpu().to(torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name} must be numeric (tensor or array): {err}") from err


def _check_finite(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        raise InvalidInputError(
            f"{name} contains NaN or infinite values ({n_nan} NaN, {n_inf} inf); "
            "metrics need finite inputs (did training diverge?)"
        )


def _check_nonempty(x: np.ndarray, name: str) -> None:
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidInputError(
            f"{name} must have a leading sample axis with at least one sample, got shape {x.shape}"
        )


def _same_shape(pred: np.ndarray, target: np.ndarray, expected: str) -> None:
    if pred.shape != target.shape:
        raise InvalidInputError(
            f"expected pred and target of the same shape {expected}, "
            f"got pred shape {pred.shape} and target shape {target.shape}"
        )


def _min_ndim(x: np.ndarray, name: str, ndim: int, expected: str) -> None:
    if x.ndim < ndim:
        raise InvalidInputError(f"expected {name} of shape {expected}, got shape {x.shape}")


def _pair(pred: ArrayLike, target: ArrayLike, expected: str, min_ndim: int = 1):
    """Convert, then check non-empty, same shape, enough axes and finite values."""
    p, y = _as_array(pred, "pred"), _as_array(target, "target")
    _check_nonempty(p, "pred")
    _same_shape(p, y, expected)
    _min_ndim(p, "pred and target", min_ndim, expected)
    _check_finite(p, "pred")
    _check_finite(y, "target")
    return p, y


def _class_labels(labels: ArrayLike, n: int | None = None, name: str = "labels") -> np.ndarray:
    """Integer class labels of shape (n,) (floats are accepted when they are whole numbers)."""
    y = _as_array(labels, name)
    if y.ndim != 1:
        raise InvalidInputError(f"expected {name} of shape (n,), got shape {y.shape}")
    _check_nonempty(y, name)
    _check_finite(y, name)
    if n is not None and len(y) != n:
        raise InvalidInputError(
            f"expected {name} of shape ({n},) to match pred, got shape {y.shape}"
        )
    if not np.all(y == np.round(y)) or y.min() < 0:
        raise InvalidInputError(f"{name} must be non-negative whole numbers (class indices)")
    return y.astype(np.int64)


def _predicted_labels(p: np.ndarray) -> np.ndarray:
    """Argmax of (n, K) scores, or (n,) predicted labels passed through."""
    _check_nonempty(p, "pred")
    _check_finite(p, "pred")
    if p.ndim == 2:
        if p.shape[1] < 2:
            raise InvalidInputError(
                f"expected pred of shape (n, K) scores with K >= 2 or (n,) labels, got shape "
                f"{p.shape}: a single score column has no argmax"
            )
        return p.argmax(axis=1)
    if p.ndim == 1:
        return _class_labels(p, name="pred (predicted labels)")
    raise InvalidInputError(
        f"expected pred of shape (n, K) scores or (n,) predicted labels, got shape {p.shape}"
    )


def _binary_labels(y: np.ndarray) -> np.ndarray:
    if not np.isin(y, (0.0, 1.0)).all():
        raise InvalidInputError("labels must be binary (0 or 1) for AUROC / average precision")
    return y.astype(np.int64)


# --------------------------------------------------------------------------- classification


def zero_one_error(logits: ArrayLike, labels: ArrayLike) -> float:
    r"""0-1 classification error in percent.

    .. math:: \mathrm{err} = \frac{100}{n} \sum_{i=1}^{n} [\hat y_i \ne y_i],
              \qquad \hat y_i = \arg\max_k \mathrm{logits}_{ik}

    Parameters
    ----------
    logits : (n, K) class scores (logits or probabilities; only the argmax matters),
        or (n,) predicted class indices.
    labels : (n,) true class indices.

    Returns
    -------
    float
        Error in percent, in [0, 100]. The papers report CIFAR-100, Spherical, NinaPro and
        Satellite this way (e.g. ORCA 6.53 on CIFAR-100). ORCA computes ``1 - accuracy`` as a
        fraction; the tables multiply by 100.

    Notes
    -----
    Ties in the argmax go to the lowest class index (numpy's and torch's convention).
    """
    p = _as_array(logits, "pred")
    y_hat = _predicted_labels(p)
    y = _class_labels(labels, n=len(y_hat))
    if p.ndim == 2 and y.max() >= p.shape[1]:
        raise InvalidInputError(
            f"label {int(y.max())} is out of range for pred of shape {p.shape} ({p.shape[1]} classes)"
        )
    return float(100.0 * np.mean(y_hat != y))


def one_minus_f1(logits: ArrayLike, labels: ArrayLike, *,
                 groups: ArrayLike | None = None) -> float:
    r"""One minus the macro-averaged F1 score (ECG).

    .. math:: 1 - \frac{1}{|C|} \sum_{c \in C} \frac{2\,TP_c}{2\,TP_c + FP_c + FN_c}

    where :math:`C` is the set of classes that occur in the labels or the predictions.

    Parameters
    ----------
    logits : (n, K) class scores or (n,) predicted class indices.
    labels : (n,) true class indices.
    groups : optional (n,) record ids. When given, the predicted and the true label of each
        group are its majority vote (ties: smallest class index) and F1 is computed over
        groups: NAS-Bench-360's own ECG evaluation votes over the 1000-sample windows of each
        recording. ORCA (and PaRe / RECRAFT, which reuse its code) score every window
        separately, which is the default here.

    Returns
    -------
    float
        1 − macro F1, in [0, 1] (ORCA: 0.28 on ECG).

    Notes
    -----
    Both reference codes average the per-class F1 of ``sklearn.metrics.classification_report``
    over the four classes N, AF, other, noisy (0..3): NAS-Bench-360 divides by 4, ORCA averages
    the classes present in the report with ``zero_division=0``. This is
    ``sklearn.metrics.f1_score(average="macro", zero_division=0)``; the two agree whenever all
    four classes occur, as in the ECG test set.
    """
    y_hat = _predicted_labels(_as_array(logits, "pred"))
    y = _class_labels(labels, n=len(y_hat))
    if groups is not None:
        y_hat, y = _majority_vote(y_hat, y, groups)
    return float(1.0 - f1_score(y, y_hat, average="macro", zero_division=0))


def _majority_vote(y_hat: np.ndarray, y: np.ndarray,
                   groups: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    g = _as_array(groups, "groups")
    if g.shape != y.shape:
        raise InvalidInputError(f"expected groups of shape {y.shape}, got shape {g.shape}")
    _check_finite(g, "groups")

    def vote(v: np.ndarray) -> int:
        return int(np.bincount(v).argmax())  # bincount's argmax: ties go to the smallest label

    ids = np.unique(g)
    return (np.array([vote(y_hat[g == i]) for i in ids]),
            np.array([vote(y[g == i]) for i in ids]))


# --------------------------------------------------------------------------- ranking metrics


def one_minus_auroc(scores: ArrayLike, labels: ArrayLike, *, multilabel: bool | None = None,
                    threshold: float | None = None) -> float:
    r"""One minus the area under the ROC curve (Cosmic, DeepSEA).

    Binary (Cosmic, per-pixel): all entries are pooled into one ranking problem,

    .. math:: 1 - \mathrm{AUROC}(\mathrm{vec}(s), \mathrm{vec}(y)).

    Multi-label (DeepSEA, (n, L) with L > 1): the mean over labels,

    .. math:: 1 - \frac{1}{|L'|} \sum_{l \in L'} \mathrm{AUROC}(s_{:,l}, y_{:,l}),

    where :math:`L'` are the labels whose column holds both classes (AUROC is undefined
    otherwise).

    Parameters
    ----------
    scores : any shape; logits or probabilities (AUROC depends only on the ranking).
    labels : same shape, entries 0 or 1.
    multilabel : True: per-column AUROC of (n, L) inputs; False: pool every entry;
        None (default): multi-label exactly when the inputs are 2-D with more than one column.
    threshold : when given, scores are first binarised, ``scores > threshold``, and the AUROC
        of those hard predictions is (TPR + TNR) / 2. This is how NAS-Bench-360 and ORCA score
        **Cosmic**: ORCA's ``inv_auroc`` thresholds the logits at 0 (``threshold=0.0``),
        NAS-Bench-360 at 0.5. The papers' Cosmic numbers (ORCA 0.152) are of this kind; use the
        ``"1-auroc-hard"`` registry entry to get it. DeepSEA uses the continuous scores.

    Returns
    -------
    float
        1 − AUROC, in [0, 1].

    Notes
    -----
    DeepSEA: ORCA's ``auroc`` takes ``np.nanmean`` of per-label AUROCs (labels with one class
    give NaN and drop out), as here; NAS-Bench-360 takes the plain mean of
    ``roc_auc_score`` per label, which equals it when every label has both classes. Computed
    with ``sklearn.metrics.roc_auc_score``.
    """
    s, y = _pair(scores, labels, "(n, ...) for binary or (n, L) for multi-label")
    y = _binary_labels(y)
    if threshold is not None:
        s = (s > threshold).astype(np.float64)
    if multilabel is None:
        multilabel = s.ndim == 2 and s.shape[1] > 1
    if not multilabel:
        s, y = s.reshape(-1, 1), y.reshape(-1, 1)
    elif s.ndim != 2:
        raise InvalidInputError(f"expected multi-label inputs of shape (n, L), got shape {s.shape}")
    aucs = [roc_auc_score(y[:, k], s[:, k]) for k in range(y.shape[1]) if _both_classes(y[:, k])]
    if not aucs:
        raise InvalidInputError(
            "AUROC is undefined: no label column contains both a positive and a negative"
        )
    return float(1.0 - np.mean(aucs))


def one_minus_map(scores: ArrayLike, labels: ArrayLike) -> float:
    r"""One minus mean average precision over classes (FSD50K).

    .. math:: 1 - \frac{1}{|K'|} \sum_{k \in K'} \mathrm{AP}(s_{:,k}, y_{:,k}),
              \qquad \mathrm{AP} = \sum_j (R_j - R_{j-1}) P_j

    where :math:`K'` are the classes with at least one positive and :math:`P_j, R_j` the
    precision and recall at the j-th threshold (``sklearn.metrics.average_precision_score``).

    Parameters
    ----------
    scores : (n, K) logits or sigmoid probabilities (AP depends only on the ranking), or (n,)
        for a single class.
    labels : same shape, multi-hot 0/1.

    Returns
    -------
    float
        1 − mAP, in [0, 1] (ORCA: 0.56 on FSD50K).

    Notes
    -----
    NAS-Bench-360 and ORCA average the per-class AP of ``average_precision_score`` over all
    classes, which is ``average_precision_score(average="macro")``. It scores a class without
    positives as 0; such a class has no defined AP, so it is left out here. The two agree when
    every class has a positive, as in FSD50K's evaluation set. ORCA scores a clip by the mean
    of its segments' logits followed by a sigmoid; that pooling is the caller's job.
    """
    s, y = _pair(scores, labels, "(n, K)")
    y = _binary_labels(y)
    if s.ndim == 1:
        s, y = s[:, None], y[:, None]
    if s.ndim != 2:
        raise InvalidInputError(f"expected pred and target of shape (n, K), got shape {s.shape}")
    aps = [average_precision_score(y[:, k], s[:, k]) for k in range(y.shape[1]) if y[:, k].any()]
    if not aps:
        raise InvalidInputError("average precision is undefined: no class has a positive label")
    return float(1.0 - np.mean(aps))


def _both_classes(column: np.ndarray) -> bool:
    return bool(column.any() and not column.all())


# --------------------------------------------------------------------------- regression


def relative_l2(pred: ArrayLike, target: ArrayLike) -> float:
    r"""Mean relative L2 error over samples (NAS-Bench-360 Darcy Flow).

    .. math:: \frac{1}{n} \sum_{i=1}^{n} \frac{\lVert p_i - y_i \rVert_2}{\lVert y_i \rVert_2}

    with every sample flattened. This is ORCA's ``LpLoss(size_average=True).rel`` (the FNO
    code's relative Lp loss with p = 2), which ORCA uses as the Darcy Flow metric.

    Parameters
    ----------
    pred, target : (n, ...) of the same shape, in physical units: ORCA decodes both with the
        Gaussian normaliser of the training targets before scoring.

    Returns
    -------
    float
        The mean ratio (ORCA: 7.28e-3 on Darcy Flow). Invariant to a common rescaling of pred
        and target.

    Raises
    ------
    InvalidInputError
        If a target sample is identically zero (the ratio is undefined).
    """
    p, y = _pair(pred, target, "(n, ...)", min_ndim=2)
    n = len(y)
    num = np.linalg.norm((p - y).reshape(n, -1), axis=1)
    den = np.linalg.norm(y.reshape(n, -1), axis=1)
    _no_zero(den, "target sample(s) {} have zero L2 norm; relative L2 error is undefined")
    return float(np.mean(num / den))


def nrmse(pred: ArrayLike, target: ArrayLike, *, per_channel: bool = True) -> float:
    r"""Normalised root-mean-squared error (PDEBench nRMSE).

    .. math:: \frac{1}{nC} \sum_{i=1}^{n} \sum_{c=1}^{C}
              \frac{\sqrt{\operatorname{mean}_x (p_{icx} - y_{icx})^2}}
                   {\sqrt{\operatorname{mean}_x y_{icx}^2}}

    where x runs over the spatial grid. This is ``err_nRMSE`` of PDEBench's
    ``metric_func`` (per sample, channel and time step; mean over samples, then over channels
    and time steps); the tasks here predict one time step, so there is no time axis.

    Parameters
    ----------
    pred, target : (n, C, *spatial), same shape, at least one spatial axis.
    per_channel : True (default): PDEBench's definition above. False: ORCA's ``nmse``,
        which flattens channels and space of each sample together,
        :math:`\frac1n\sum_i \mathrm{RMS}(p_i - y_i) / \mathrm{RMS}(y_i)`. The two coincide
        when C = 1 (all but the multi-channel tasks, e.g. Diffusion-Reaction 2D).

    Returns
    -------
    float
        The nRMSE; predicting zero everywhere gives exactly 1.

    Raises
    ------
    InvalidInputError
        If some target (sample, channel) is identically zero (the ratio is undefined).
    """
    p, y = _pair(pred, target, "(n, C, *spatial)", min_ndim=3)
    n, c = y.shape[:2]
    shape = (n, c, -1) if per_channel else (n, 1, -1)
    rmse = np.sqrt(np.mean((p - y).reshape(shape) ** 2, axis=-1))
    norm = np.sqrt(np.mean(y.reshape(shape) ** 2, axis=-1))
    _no_zero(norm, "target (sample, channel) entries {} are identically zero; nRMSE is undefined")
    return float(np.mean(rmse / norm))


def _no_zero(den: np.ndarray, message: str) -> None:
    bad = np.argwhere(den == 0)
    if len(bad):
        listed = [tuple(int(v) for v in b) if len(b) > 1 else int(b[0]) for b in bad[:5]]
        raise InvalidInputError(message.format(listed + (["..."] if len(bad) > 5 else [])))


def mae8(pred: ArrayLike, target: ArrayLike, *, min_separation: int = 24,
         max_distance: float = 8.0, lengths: Sequence[int] | None = None,
         clip_min: float = 0.01) -> float:
    r"""PSICOV MAE_8: distance error on long-range residue pairs in contact (NAS-Bench-360).

    For each protein with predicted map :math:`P` and true map :math:`D` (Ångström), the
    prediction is symmetrised and clipped, :math:`\bar P = \max(\tfrac12 (P + P^\top), 0.01)`,
    and

    .. math:: \mathrm{MAE}_8 = \operatorname{mean}_{(i, j) \in S} |\bar P_{ij} - D_{ij}|,
              \qquad S = \{(i, j) : j - i \ge 24,\ D_{ij} \le 8\},

    (upper triangle only, pairs with unknown distance excluded). The result is the mean over
    proteins that have at least one pair in S.

    Parameters
    ----------
    pred, target : (n, L, L) or (n, 1, L, L) distance maps in Ångström, unpadded and aligned
        (index i is residue i). Targets may contain NaN for unknown distances; those pairs are
        skipped. Predictions must be finite.
    min_separation : sequence separation ``j - i`` a pair needs (24: "long range").
    max_distance : keep pairs whose true distance is at most this (8 Å, inclusive).
    lengths : optional true sequence length of each protein; map i is cropped to its top-left
        ``lengths[i] x lengths[i]`` block (the reference code pads to 512).
    clip_min : predictions below this are raised to it (the reference code uses 0.01).

    Returns
    -------
    float
        Mean absolute error in Ångström (ORCA: 1.91, PaRe: 0.99).

    Notes
    -----
    Confirmed in NAS-Bench-360's ``calculate_mae`` (``backbone/utils_grid.py``) and ORCA's
    ``psicov_mae``: both report ``mae_lr_d8`` (separation >= 24, true distance <= 8) out of
    four variants (separation 12 / 24, distance 8 / 12). Distances are in Ångström, unscaled:
    ORCA clips *training* targets at 16 Å but scores raw test maps. The separation is measured
    in map indices, so it is the sequence separation only on whole maps, not on crops.
    ORCA's loader replaces unknown distances with 0 (so they count as contacts); here they
    are skipped as in the original DeepCov/PDNET convention.
    """
    p, y = _as_array(pred, "pred"), _as_array(target, "target")
    _check_nonempty(p, "pred")
    _same_shape(p, y, "(n, L, L) or (n, 1, L, L)")
    if p.ndim == 4 and p.shape[1] == 1:
        p, y = p[:, 0], y[:, 0]
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise InvalidInputError(
            f"expected square distance maps of shape (n, L, L) or (n, 1, L, L), got shape {p.shape}"
        )
    _check_finite(p, "pred")
    if np.isinf(y).any():
        raise InvalidInputError("target contains infinite distances; use NaN for unknown ones")
    lengths = _map_lengths(lengths, p.shape[0], p.shape[1])

    per_protein = []
    for pi, yi, length in zip(p, y, lengths):
        err = _protein_mae(pi[:length, :length], yi[:length, :length], min_separation,
                           max_distance, clip_min)
        if err is not None:
            per_protein.append(err)
    if not per_protein:
        raise InvalidInputError(
            f"MAE_8 is undefined: no protein has a pair with separation >= {min_separation} "
            f"and true distance <= {max_distance}"
        )
    return float(np.mean(per_protein))


def _map_lengths(lengths: Sequence[int] | None, n: int, size: int) -> list[int]:
    if lengths is None:
        return [size] * n
    out = [int(v) for v in lengths]
    if len(out) != n or min(out) < 1 or max(out) > size:
        raise InvalidInputError(
            f"expected lengths of shape ({n},) with values in 1..{size}, got {list(lengths)}"
        )
    return out


def _protein_mae(p: np.ndarray, y: np.ndarray, min_separation: int, max_distance: float,
                 clip_min: float) -> float | None:
    p = np.maximum((p + p.T) / 2.0, clip_min)  # the two triangles predict the same distance
    i, j = np.indices(y.shape)
    with np.errstate(invalid="ignore"):  # NaN (unknown) distances compare False: dropped
        keep = (j - i >= min_separation) & (y <= max_distance)
    if not keep.any():
        return None
    return float(np.mean(np.abs(p[keep] - y[keep])))


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    """A named test metric.

    Attributes
    ----------
    name : registry key, e.g. ``"error01"``.
    fn : ``fn(pred, target) -> float``.
    lower_is_better : direction of improvement (True for every paper metric: they are errors).
    display : label for tables, e.g. ``"0-1 error (%)"``.
    """

    name: str
    fn: Callable[[ArrayLike, ArrayLike], float]
    lower_is_better: bool
    display: str


def _cosmic_hard_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ORCA's Cosmic metric: 1 − AUROC of the hard predictions ``logit > 0``, pixels pooled."""
    return one_minus_auroc(scores, labels, multilabel=False, threshold=0.0)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("error01", zero_one_error, True, "0-1 error (%)"),
        Metric("relative_l2", relative_l2, True, "relative l2"),
        Metric("mae8", mae8, True, "MAE_8"),
        Metric("1-auroc", one_minus_auroc, True, "1-AUROC"),
        Metric("1-auroc-hard", _cosmic_hard_auroc, True, "1-AUROC (logit>0)"),
        Metric("1-map", one_minus_map, True, "1-mAP"),
        Metric("1-f1", one_minus_f1, True, "1-F1 score"),
        Metric("nrmse", nrmse, True, "nRMSE"),
    )
}


def get_metric(name: str) -> Metric:
    """The :class:`Metric` registered as ``name``; unknown names list the valid ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise unknown_name("metric", name, list(METRICS)) from None
