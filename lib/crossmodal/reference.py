"""Classical reference models on the raw inputs: what "good" means on a (smoke) task.

A cross-modal fine-tuning number alone does not tell a reader whether a task was learnt:
an error of 20 % is excellent on one task and poor on another. Each smoke table therefore
carries reference rows from models that see the flattened raw inputs ``x \\in R^d`` and no
pretraining:

* classification: multinomial **logistic regression** on standardised inputs (L2 penalty,
  ``C = 1``), and the **1-nearest-neighbour** rule in Euclidean distance (the classical
  baseline of the UCR/UEA time-series archive);
* dense prediction: **least squares** ``W = argmin ||X W - Y||^2 + lambda ||W||^2`` from the
  flattened input to the flattened target (with a bias and a tiny ridge ``lambda = 1e-6``
  per input variance for numerical stability), which is exact for a linear PDE solution
  operator such as advection.

Scores use the task's own metric (:mod:`crossmodal.metrics`), on the same (shrunk) splits
as the runs they sit beside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.errors import InvalidInputError
from crossmodal.metrics import get_metric
from crossmodal.tasks import get_task

#: Reference model names per task output type.
REFERENCE_MODELS = {"classification": ("logistic regression", "1-NN"),
                    "dense": ("least squares",)}


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def _scores_logreg(x_tr, y_tr, x_te, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000,
                                                               random_state=seed))
    model.fit(x_tr, y_tr)
    return _full_scores(model.predict_proba(x_te), model[-1].classes_)


def _scores_1nn(x_tr, y_tr, x_te) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    model = KNeighborsClassifier(n_neighbors=1).fit(x_tr, y_tr)
    return _full_scores(model.predict_proba(x_te), model.classes_)


def _full_scores(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Probabilities over classes 0..max: a class absent from the training subset scores 0."""
    out = np.zeros((len(proba), int(classes.max()) + 1))
    out[:, classes.astype(int)] = proba
    return out


def least_squares(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
                  ridge: float = 1e-6) -> np.ndarray:
    """Affine least squares ``[X, 1] W ~ Y`` with a tiny ridge; predictions for ``x_te``.

    Solves the normal equations :math:`(A^\\top A + \\lambda\\,\\mathrm{tr}(A^\\top A)/d\\, I)
    W = A^\\top Y` with :math:`A = [X, 1]`, so the ridge is relative to the input scale.
    """
    a = np.hstack([_flat(x_tr), np.ones((len(x_tr), 1))])
    gram = a.T @ a
    gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    w = np.linalg.solve(gram, a.T @ _flat(y_tr))
    b = np.hstack([_flat(x_te), np.ones((len(x_te), 1))])
    return (b @ w).reshape((len(x_te), *np.shape(y_tr)[1:]))


def reference_scores(task, splits: dict, seed: int = 0) -> dict[str, float]:
    """The task metric of each classical reference model (:data:`REFERENCE_MODELS`).

    Parameters
    ----------
    task : a :class:`~crossmodal.tasks.TaskSpec` (its ``output`` and ``metric``).
    splits : ``{"train": (x, y), "test": (x, y)}`` as the runs saw them.
    seed : seeds the (deterministic up to ties) solvers.

    Returns
    -------
    ``{model name: test metric}`` in the metric's paper units.
    """
    import torch

    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    metric = get_metric(task.metric)
    target = torch.as_tensor(y_te)
    if task.output == "classification":
        x_tr, x_te = _flat(x_tr), _flat(x_te)
        preds = {"logistic regression": _scores_logreg(x_tr, y_tr, x_te, seed),
                 "1-NN": _scores_1nn(x_tr, y_tr, x_te)}
    elif task.output == "dense":
        preds = {"least squares": least_squares(x_tr, y_tr, x_te)}
    else:
        raise InvalidInputError(f"no classical reference for {task.output!r} tasks "
                                f"({task.key}); references exist for {sorted(REFERENCE_MODELS)}")
    return {name: float(metric.fn(torch.as_tensor(p, dtype=torch.float32), target))
            for name, p in preds.items()}


def reference_runs(nb, load_splits: Callable[[Any, str, int], dict], tasks: list[str] | None = None
                   ) -> pd.DataFrame:
    """One row per task x reference model x seed on the notebook's own (seeded) subsets.

    ``load_splits(nb, task, seed)`` gives those subsets (the notebook layer passes its own
    :func:`crossmodal.notebook.load_splits`: this module sits below that layer). The columns
    match :func:`crossmodal.notebook.run_grid` (``variant`` is ``"reference: <model>"``,
    ``method`` is ``"reference"``), so the rows go through the same mean ± std tables. Tasks
    without a reference (multi-label, ...) are skipped.
    """

    rows = []
    for key in tasks or nb.tasks:
        spec = get_task(key)
        if spec.output not in REFERENCE_MODELS:
            continue
        metric = get_metric(spec.metric)
        for seed in nb.seeds:
            splits = load_splits(nb, key, seed)
            for name, value in reference_scores(spec, splits, seed).items():
                rows.append({"task": key, "variant": f"reference: {name}",
                             "method": "reference", "seed": seed, "metric": metric.display,
                             "lower_is_better": metric.lower_is_better, "final": value,
                             "best": value, "curve": [], "train_loss": [],
                             "method_report": {}, "probes": [], "body": "-",
                             "n_train": len(splits["train"][0]),
                             "n_test": len(splits["test"][0]), "wall_seconds": 0.0})
    return pd.DataFrame(rows)
