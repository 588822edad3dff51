"""Test metrics: hand-computed cases, agreement with scikit-learn, invariants, errors, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.metrics import (
    METRICS,
    get_metric,
    mae8,
    nrmse,
    one_minus_auroc,
    one_minus_f1,
    one_minus_map,
    relative_l2,
    zero_one_error,
)

# --------------------------------------------------------------------------- hand-computed


def test_zero_one_error_by_hand():
    # argmax = [0, 1, 0, 1] vs labels all 0: 2 of 4 wrong -> 50 %
    logits = [[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]]
    assert zero_one_error(logits, [0, 0, 0, 0]) == 50.0
    # predicted labels [0, 1, 2] vs [0, 1, 1]: 1 of 3 wrong -> 33.33 %
    assert zero_one_error([0, 1, 2], [0, 1, 1]) == pytest.approx(100 / 3)


def test_zero_one_error_accepts_tensors_of_any_dtype():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]], dtype=torch.bfloat16, requires_grad=True)
    assert zero_one_error(logits, torch.tensor([1, 1])) == 50.0
    assert zero_one_error(logits, torch.tensor([1.0, 0.0])) == 0.0  # whole-number floats


def test_relative_l2_by_hand():
    # sample 1: ||(3,4) - 0|| / ||(3,4)|| = 5/5 = 1;  sample 2: ||(0, -0.5)|| / ||(1,0)|| = 0.5
    pred = [[0.0, 0.0], [1.0, 0.5]]
    target = [[3.0, 4.0], [1.0, 0.0]]
    assert relative_l2(pred, target) == pytest.approx(0.75)


def test_nrmse_by_hand():
    # one sample, two channels, two grid points
    # channel 0: y = (1, 1), p = (2, 2): RMSE 1, RMS(y) 1 -> 1.0
    # channel 1: y = (2, 2), p = (1, 1): RMSE 1, RMS(y) 2 -> 0.5        mean: 0.75
    pred = np.array([[[2.0, 2.0], [1.0, 1.0]]])
    target = np.array([[[1.0, 1.0], [2.0, 2.0]]])
    assert nrmse(pred, target) == pytest.approx(0.75)
    # ORCA's variant pools channels: RMSE sqrt(4/4) = 1, RMS(y) sqrt(10/4) -> 0.632456
    assert nrmse(pred, target, per_channel=False) == pytest.approx(1 / np.sqrt(2.5))


def test_mae8_by_hand():
    # L = 4, separation >= 2 keeps (0,2), (0,3), (1,3).
    y = np.full((4, 4), 20.0)
    y[0, 2], y[0, 3], y[1, 3] = 5.0, 10.0, 8.0  # (0,3) is > 8 Å: dropped; 8.0 is kept
    p = np.full((4, 4), 1.0)
    p[0, 2] = p[2, 0] = 6.0                     # |6 - 5| = 1
    p[1, 3], p[3, 1] = 7.0, 9.0                 # symmetrised to 8: |8 - 8| = 0
    assert mae8(p[None], y[None], min_separation=2) == pytest.approx(0.5)
    # A second protein without contacts is skipped rather than counted as 0.
    no_contacts = np.full((4, 4), 20.0)
    assert mae8(np.stack([p, p]), np.stack([y, no_contacts]), min_separation=2) == 0.5
    # (n, 1, L, L) works too; predictions below 0.01 Å are clipped to 0.01: |0.01 - 5| = 4.99
    p0 = np.zeros((1, 1, 4, 4))
    y0 = np.full((1, 1, 4, 4), 20.0)
    y0[0, 0, 0, 3] = 5.0
    assert mae8(p0, y0, min_separation=2) == pytest.approx(4.99)


def test_mae8_skips_unknown_distances_and_crops_to_lengths():
    y = np.full((1, 6, 6), np.nan)
    y[0, 0, 3] = 4.0
    p = np.full((1, 6, 6), 5.0)  # |5 - 4| = 1 on the one known contact
    assert mae8(p, y, min_separation=3) == 1.0
    # padding beyond length 3 would add pair (0, 3); cropped away -> no pair left
    with pytest.raises(InvalidInputError, match="undefined"):
        mae8(p, y, min_separation=3, lengths=[3])


def test_mae8_default_matches_a_direct_loop():
    rng = np.random.default_rng(0)
    y = rng.uniform(2.0, 14.0, size=(2, 40, 40))
    y = (y + y.transpose(0, 2, 1)) / 2
    p = y + rng.normal(0.0, 1.0, size=y.shape)
    expected = []
    for pi, yi in zip(p, y):
        errs = [abs((pi[i, j] + pi[j, i]) / 2 - yi[i, j])
                for i in range(40) for j in range(40) if j - i >= 24 and yi[i, j] <= 8]
        expected.append(np.mean(errs))
    assert mae8(p, y) == pytest.approx(np.mean(expected))


def test_one_minus_auroc_by_hand():
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: 3 of 4 pairs ordered -> AUROC 0.75
    assert one_minus_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.25)
    # multi-label: column AUROCs 0.75 and 1.0; column 3 has no positive and is dropped
    scores = np.array([[0.1, 0.1, 0.5], [0.4, 0.2, 0.5], [0.35, 0.3, 0.5], [0.8, 0.4, 0.5]])
    labels = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 0]])
    assert one_minus_auroc(scores, labels) == pytest.approx(1 - 0.875)


def test_one_minus_auroc_pools_pixels_of_dense_maps():
    scores = np.array([0.1, 0.4, 0.35, 0.8]).reshape(1, 1, 2, 2)
    labels = np.array([0, 0, 1, 1]).reshape(1, 1, 2, 2)
    assert one_minus_auroc(scores, labels) == pytest.approx(0.25)


def test_one_minus_auroc_of_hard_predictions():
    # logits > 0 -> [0, 0, 1, 1, 0]; TPR = 1/2, TNR = 2/3 -> AUROC 7/12
    logits = np.array([-2.0, -1.0, 3.0, 2.0, -4.0])
    labels = np.array([0, 0, 0, 1, 1])
    assert one_minus_auroc(logits, labels, threshold=0.0) == pytest.approx(5 / 12)
    assert get_metric("1-auroc-hard").fn(logits, labels) == pytest.approx(5 / 12)


def test_one_minus_map_by_hand():
    scores = np.array([[0.9, 0.9, 0.1], [0.8, 0.8, 0.1], [0.7, 0.7, 0.1], [0.6, 0.6, 0.1]])
    # class 0, labels 1,0,1,0: AP = 0.5 * 1 + 0.5 * 2/3 = 5/6
    # class 1, labels 0,0,0,1: the positive is ranked last, AP = 1/4
    # class 2 has no positive and is left out: mAP = (5/6 + 1/4) / 2 = 13/24
    labels = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    assert one_minus_map(scores, labels) == pytest.approx(1 - 13 / 24)


def test_one_minus_f1_by_hand():
    # class 0: TP 1, FP 0, FN 1 -> F1 2/3;  class 1: TP 2, FP 1, FN 0 -> F1 4/5
    # macro F1 = 11/15, so 1 - F1 = 4/15
    assert one_minus_f1([0, 1, 1, 1], [0, 0, 1, 1]) == pytest.approx(4 / 15)
    logits = np.eye(2)[[0, 1, 1, 1]]
    assert one_minus_f1(logits, [0, 0, 1, 1]) == pytest.approx(4 / 15)


def test_one_minus_f1_majority_vote_over_groups():
    # record A: truth 2, votes (2, 0, 2) -> 2;  record B: truth 1, votes (0, 0) -> 0
    # record C: truth 3, votes (1, 3) tie -> smallest label 1
    # per-record: truth [2, 1, 3], predicted [2, 0, 1] -> F1: class 2 = 1, classes 0, 1, 3 = 0
    pred = [2, 0, 2, 0, 0, 1, 3]
    true = [2, 2, 2, 1, 1, 3, 3]
    groups = [0, 0, 0, 1, 1, 2, 2]
    assert one_minus_f1(pred, true, groups=groups) == pytest.approx(1 - 1 / 4)


# --------------------------------------------------------------------------- scikit-learn


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_auroc_agrees_with_sklearn(rng):
    labels = rng.integers(0, 2, size=(200, 6))
    scores = labels * 0.5 + rng.normal(size=labels.shape)
    assert one_minus_auroc(scores, labels) == pytest.approx(
        1 - roc_auc_score(labels, scores, average="macro"))
    flat = 1 - roc_auc_score(labels.ravel(), scores.ravel())
    assert one_minus_auroc(scores, labels, multilabel=False) == pytest.approx(flat)
    assert one_minus_auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(
        1 - roc_auc_score(labels, scores, average="macro"))


def test_map_agrees_with_sklearn(rng):
    labels = rng.integers(0, 2, size=(150, 8))
    scores = labels * 0.7 + rng.normal(size=labels.shape)
    assert one_minus_map(scores, labels) == pytest.approx(
        1 - average_precision_score(labels, scores, average="macro"))


def test_f1_agrees_with_sklearn(rng):
    labels = rng.integers(0, 4, size=300)
    logits = np.eye(4)[labels] + rng.normal(size=(300, 4))
    expected = 1 - f1_score(labels, logits.argmax(1), average="macro")
    assert one_minus_f1(logits, labels) == pytest.approx(expected)


# --------------------------------------------------------------------------- invariants


def test_perfect_predictions_give_zero_error(rng):
    labels = rng.integers(0, 5, size=50)
    assert zero_one_error(np.eye(5)[labels], labels) == 0.0
    assert one_minus_f1(np.eye(5)[labels], labels) == 0.0
    y = rng.normal(size=(4, 1, 8, 8))
    assert relative_l2(y, y) == 0.0
    assert nrmse(y, y) == 0.0
    binary = rng.integers(0, 2, size=(40, 3))
    assert one_minus_auroc(binary.astype(float), binary) == 0.0
    assert one_minus_map(binary.astype(float), binary) == 0.0
    d = rng.uniform(3.0, 10.0, size=(1, 30, 30))
    d = (d + d.transpose(0, 2, 1)) / 2
    assert mae8(d, d) == pytest.approx(0.0)


def test_relative_l2_is_scale_invariant(rng):
    p, y = rng.normal(size=(5, 3, 7)), rng.normal(size=(5, 3, 7))
    assert relative_l2(3.7 * p, 3.7 * y) == pytest.approx(relative_l2(p, y))


def test_nrmse_of_zero_prediction_is_one(rng):
    y = rng.normal(size=(3, 2, 16, 16))
    assert nrmse(np.zeros_like(y), y) == pytest.approx(1.0)
    assert nrmse(np.zeros_like(y), y, per_channel=False) == pytest.approx(1.0)


def test_ranking_metrics_ignore_monotone_transforms(rng):
    labels = rng.integers(0, 2, size=(100, 4))
    logits = labels + rng.normal(size=labels.shape)
    probs = 1 / (1 + np.exp(-logits))
    assert one_minus_auroc(logits, labels) == pytest.approx(one_minus_auroc(probs, labels))
    assert one_minus_map(logits, labels) == pytest.approx(one_minus_map(probs, labels))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [relative_l2, nrmse, one_minus_auroc, one_minus_map, mae8])
def test_mismatched_shapes_raise(fn):
    with pytest.raises(InvalidInputError, match="shape") as err:
        fn(np.ones((2, 3, 3)), np.ones((2, 3, 4)))
    assert "(2, 3, 3)" in str(err.value) and "(2, 3, 4)" in str(err.value)


@pytest.mark.parametrize("fn", [relative_l2, nrmse, one_minus_auroc, one_minus_map, mae8,
                                zero_one_error, one_minus_f1])
def test_nan_predictions_raise(fn):
    pred = np.ones((2, 3, 3))
    pred[0, 0, 0] = np.nan
    target = np.ones((2, 3, 3))
    if fn in (zero_one_error, one_minus_f1):
        pred, target = pred[:, :, 0], np.array([0, 1])
    with pytest.raises(InvalidInputError, match="NaN"):
        fn(pred, target)


def test_nan_targets_raise():
    with pytest.raises(InvalidInputError, match="NaN"):
        relative_l2(np.ones((2, 2)), np.array([[1.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(InvalidInputError, match="NaN"):
        zero_one_error(np.ones((2, 2)), np.array([0.0, np.nan]))


def test_classification_shape_errors():
    with pytest.raises(InvalidInputError, match="shape"):
        zero_one_error(np.ones((4, 3)), [0, 1, 2])          # 4 predictions, 3 labels
    with pytest.raises(InvalidInputError, match="shape"):
        zero_one_error(np.ones((4, 1)), [0, 0, 0, 0])       # one score column
    with pytest.raises(InvalidInputError, match="shape"):
        zero_one_error(np.ones((4, 3, 2)), [0, 0, 0, 0])
    with pytest.raises(InvalidInputError, match="shape"):
        one_minus_f1(np.ones((4, 3)), np.zeros((4, 1)))
    with pytest.raises(InvalidInputError, match="out of range"):
        zero_one_error(np.ones((2, 3)), [0, 3])
    with pytest.raises(InvalidInputError, match="shape"):
        mae8(np.ones((2, 3, 4)), np.ones((2, 3, 4)))        # not square
    with pytest.raises(InvalidInputError, match="shape"):
        nrmse(np.ones((2, 3)), np.ones((2, 3)))             # no spatial axis


def test_undefined_values_raise():
    with pytest.raises(InvalidInputError, match="zero L2 norm"):
        relative_l2(np.ones((2, 3)), np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(InvalidInputError, match="identically zero"):
        nrmse(np.ones((1, 2, 3)), np.zeros((1, 2, 3)))
    with pytest.raises(InvalidInputError, match="both"):
        one_minus_auroc([0.2, 0.3], [1, 1])
    with pytest.raises(InvalidInputError, match="binary"):
        one_minus_auroc([0.2, 0.3], [0, 2])
    with pytest.raises(InvalidInputError, match="positive"):
        one_minus_map(np.ones((3, 2)), np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="whole numbers"):
        zero_one_error(np.ones((2, 2)), [0.5, 1.0])
    with pytest.raises(InvalidInputError, match="shape"):
        relative_l2(np.ones((0, 3)), np.ones((0, 3)))        # empty


# --------------------------------------------------------------------------- registry


def test_registry_keys_and_directions():
    assert {"error01", "relative_l2", "mae8", "1-auroc", "1-map", "1-f1", "nrmse"} <= set(METRICS)
    assert all(m.lower_is_better for m in METRICS.values())
    assert all(name == m.name for name, m in METRICS.items())
    assert get_metric("error01").display == "0-1 error (%)"
    assert get_metric("nrmse").fn is nrmse
    assert get_metric("1-auroc").fn is one_minus_auroc


def test_unknown_metric_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_metric("accuracy")
    message = str(err.value)
    assert "accuracy" in message and all(name in message for name in METRICS)
