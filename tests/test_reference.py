"""Classical reference rows on raw inputs."""

import numpy as np
import pytest

from crossmodal.reference import least_squares, reference_scores
from crossmodal.tasks import get_task


def test_least_squares_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 1, 8)).astype(np.float32)
    w = rng.normal(size=(8, 8))
    y = (x.reshape(50, 8) @ w).reshape(50, 1, 8)
    pred = least_squares(x[:40], y[:40], x[40:])
    assert pred.shape == (10, 1, 8)
    assert np.abs(pred - y[40:]).max() < 1e-3


def test_reference_scores_on_smoke_tasks(tmp_path):
    from crossmodal.runner import subsample

    digits = get_task("smoke_digits")
    splits = subsample(digits.load(tmp_path), 300, 100, 0)
    scores = reference_scores(digits, splits)
    assert set(scores) == {"logistic regression", "1-NN"}
    assert all(s < 20 for s in scores.values())  # digits are easy for classical models
    adv = get_task("smoke_advection")
    s = reference_scores(adv, adv.load(tmp_path))
    assert s["least squares"] < 0.05  # advection's solution operator is linear


def test_reference_scores_rejects_unknown_output():
    class Fake:
        key, output, metric = "x", "multilabel", "error01"

    with pytest.raises(Exception, match="no classical reference"):
        reference_scores(Fake(), {"train": (np.zeros((2, 1)), np.zeros(2)),
                                  "test": (np.zeros((2, 1)), np.zeros(2))})
