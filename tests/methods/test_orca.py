"""ORCA: pseudo-labels, each freeze mode, each alignment score, alignment lowers OTDD."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossmodal.errors import InvalidInputError
from crossmodal.methods import RunContext, get_method
from crossmodal.methods.orca import alignment_labels, pseudo_labels
from crossmodal.models import build_model
from crossmodal.runner import run
from crossmodal.tasks import get_task


def test_pseudo_labels_cluster_continuous_targets_deterministically():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 1, 16)) * 10
    y = np.concatenate([c + rng.normal(size=(20, 1, 16)) * 0.1 for c in centers])
    labels = pseudo_labels(y, k=3, seed=0)
    assert labels.shape == (60,) and set(labels) == {0, 1, 2}
    # the three true groups are recovered (up to renaming)
    for g in range(3):
        assert len(set(labels[g * 20 : (g + 1) * 20])) == 1
    np.testing.assert_array_equal(labels, pseudo_labels(y, k=3, seed=0))


def test_alignment_labels_per_output_type():
    assert alignment_labels(get_task("smoke_digits"), np.array([3, 1])).tolist() == [3, 1]
    multi = np.array([[0, 1, 1], [0, 0, 0]], dtype=np.float32)
    # the former approximation stays available as an option
    assert alignment_labels(get_task("DeepSEA"), multi,
                            multilabel="first_positive").tolist() == [1, 0]


def test_multilabel_targets_get_kmeans_pseudo_labels_as_orca():
    # ORCA (task_configs.py get_config: infer_label=True for DeepSEA and FSD50K) clusters the
    # multi-hot vectors with k-means (k=10): three label patterns -> three clusters
    rng = np.random.default_rng(0)
    patterns = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float32)
    group = rng.integers(0, 3, 90)
    labels = alignment_labels(get_task("DeepSEA"), patterns[group], k=10)
    assert len(set(labels)) == 3  # k is capped to the distinct patterns
    for g in range(3):
        assert len(set(labels[group == g])) == 1  # one cluster per pattern
    # first-positive merges the first and the all-negative pattern into class 0
    fp = alignment_labels(get_task("DeepSEA"), patterns[group], multilabel="first_positive")
    assert set(fp) == {0, 1}


@pytest.mark.parametrize("freeze, embedder, body, head", [
    ("none", True, True, True),
    ("embedder", False, True, True),
    ("body", True, False, True),
    ("both", False, False, True),
])
def test_each_freeze_mode_trains_the_right_parts(freeze, embedder, body, head):
    model = build_model("smoke_gunpoint", "minilm")
    ids = {id(p) for p in get_method("orca", freeze=freeze).trainable_parameters(model)}
    for part, expected in ((model.embedder, embedder), (model.body, body), (model.head, head)):
        assert all((id(p) in ids) == expected for p in part.parameters())


def test_bad_options_are_explained():
    with pytest.raises(InvalidInputError, match="freeze"):
        get_method("orca", freeze="head")
    with pytest.raises(InvalidInputError, match="align_score"):
        get_method("orca", align_score="wasserstein")


@pytest.mark.parametrize("score", ["otdd", "mmd", "l2", "mean_l2", "mmd_multiscale"])
def test_each_alignment_score_trains_the_embedder_and_goes_down(small_splits, score):
    from crossmodal.methods.orca import AlignmentScore, embedded_features
    from crossmodal.proxies import load_proxy, source_features

    model = build_model("smoke_gunpoint", "minilm")
    before = [p.detach().clone() for p in model.embedder.parameters()]
    body_before = [p.detach().clone() for p in model.body.parameters()]
    splits = small_splits("smoke_gunpoint", 60, 20)
    # the score ORCA minimises, on the whole training set, before and after its alignment
    proxy = load_proxy("pydoc_topics", max_samples=300, seed=0)
    xs, ys = source_features(model.body, proxy), torch.as_tensor(proxy.labels)
    x, y = (torch.as_tensor(a) for a in splits["train"])

    def total_score() -> float:
        scorer = AlignmentScore(score, xs, ys, seed=0)  # the same source draws each time
        model.embedder.eval()
        with torch.no_grad():
            feats = embedded_features(model.embedder, x)
            return sum(float(scorer(feats[y == c], torch.zeros(int((y == c).sum()),
                                                                 dtype=torch.long)))
                       for c in y.unique())

    start = total_score()
    method = get_method("orca", align_score=score, align_epochs=3, proxy_samples=300,
                        eval_samples=40)
    report = method.before_finetune(model, model.task, splits, RunContext(progress=False))
    assert len(report["alignment_curve"]) == 3
    assert all(math.isfinite(v) for v in report["alignment_curve"])
    assert total_score() < start, (score, start, total_score())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.embedder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(body_before, model.body.parameters()))


def test_no_alignment_leaves_the_embedder_alone(small_splits):
    model = build_model("smoke_gunpoint", "minilm")
    before = [p.detach().clone() for p in model.embedder.parameters()]
    report = get_method("orca", align_score="none").before_finetune(
        model, model.task, small_splits("smoke_gunpoint", 60, 20), RunContext(progress=False))
    assert "otdd_before" not in report
    assert all(torch.equal(a, b) for a, b in zip(before, model.embedder.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("key", ["smoke_gunpoint", "smoke_digits", "smoke_advection"])
def test_orca_end_to_end_alignment_lowers_otdd(small_splits, key, tmp_path):
    r = run(key, "orca", "smoke", epochs=1, out=tmp_path, progress=False,
            splits=small_splits(key, 96, 24),
            method_options={"align_epochs": 8, "proxy_samples": 500, "eval_samples": 96})
    rep = json.loads((tmp_path / "results.json").read_text())["method_report"]
    assert rep["otdd_after"] < rep["otdd_before"], rep
    assert len(rep["alignment_curve"]) == 8 and math.isfinite(r["final_metric"])
    if key == "smoke_advection":
        assert rep["pseudo_labels"] and rep["n_pseudo_classes"] == 10
