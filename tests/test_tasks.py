"""The task registry: completeness, metadata, loaders of the offline smoke tasks, errors."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.metrics import METRICS
from crossmodal.paper_tables import paper_table
from crossmodal.tasks import get_task, list_tasks, validate_split

NB360 = ["CIFAR100", "Spherical", "NinaPro", "FSD50K", "DarcyFlow", "PSICOV", "Cosmic", "ECG",
         "Satellite", "DeepSEA"]
PDEBENCH = ["Advection1D", "Burgers1D", "DiffusionReaction1D", "DiffusionSorption1D",
            "NavierStokes1D", "DarcyFlow2D", "ShallowWater2D", "DiffusionReaction2D"]
SMOKE = ["smoke_digits", "smoke_gunpoint", "smoke_basicmotions", "smoke_advection"]


def test_registry_has_every_paper_task_and_the_smoke_tasks():
    keys = {t.key for t in list_tasks()}
    assert set(NB360) <= keys and set(PDEBENCH) <= keys and set(SMOKE) <= keys
    assert {t.key for t in list_tasks("NAS-Bench-360")} == set(NB360)
    assert {t.key for t in list_tasks("PDEBench")} == set(PDEBENCH)


def test_paper_keys_match_the_paper_tables():
    """Every task key of the kit's copy of the paper tables is a registry key."""
    table_keys = set(paper_table("nb360_main")["task"]) - {"ALL_10"}
    assert table_keys == set(NB360)
    assert set(paper_table("pdebench_main")["task"]) - {"ALL_8"} == set(PDEBENCH)


@pytest.mark.parametrize("key", NB360 + PDEBENCH + SMOKE)
def test_each_task_has_a_metric_a_direction_and_consistent_shapes(key):
    t = get_task(key)
    assert t.metric in METRICS
    assert t.lower_is_better == METRICS[t.metric].lower_is_better
    if t.output == "classification":
        assert t.output_shape == () and t.num_outputs >= 2
    elif t.output == "multilabel":
        assert t.output_shape == (t.num_outputs,)
    else:
        assert t.output_shape[0] == t.num_outputs


def test_nb360_metrics_follow_the_papers():
    expected = {"CIFAR100": "error01", "Spherical": "error01", "NinaPro": "error01",
                "Satellite": "error01", "DarcyFlow": "relative_l2", "PSICOV": "mae8",
                "Cosmic": "1-auroc-hard", "DeepSEA": "1-auroc", "FSD50K": "1-map", "ECG": "1-f1"}
    assert {k: get_task(k).metric for k in expected} == expected
    assert all(get_task(k).metric == "nrmse" for k in PDEBENCH)


@pytest.mark.parametrize("key", SMOKE)
def test_smoke_tasks_load_offline_with_the_promised_shapes(key):
    t = get_task(key)
    splits = t.load("unused-root")
    for name in ("train", "test"):
        x, y = splits[name]
        assert x.shape[1:] == t.input_shape and x.dtype == np.float32
        if t.output == "classification":
            assert y.shape == (len(x),) and set(np.unique(y)) <= set(range(t.num_outputs))
        else:
            assert y.shape[1:] == t.output_shape


def test_smoke_tasks_are_deterministic():
    a = get_task("smoke_advection").load("x")
    b = get_task("smoke_advection").load("x")
    np.testing.assert_array_equal(a["train"][0], b["train"][0])


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        get_task("CIFAR-100")
    assert "CIFAR100" in str(err.value) and "smoke_digits" in str(err.value)


def test_validation_rejects_nan_wrong_shapes_and_bad_labels():
    t = get_task("smoke_digits")
    x = np.zeros((4, 1, 8, 8), np.float32)
    y = np.array([0, 1, 2, 3])
    validate_split(t, "train", x, y)
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        validate_split(t, "train", bad, y)
    with pytest.raises(InvalidInputError, match="shape"):
        validate_split(t, "train", np.zeros((4, 3, 8, 8), np.float32), y)
    with pytest.raises(InvalidInputError, match=r"\[0, 10\)"):
        validate_split(t, "train", x, np.array([0, 1, 2, 10]))
    with pytest.raises(InvalidInputError, match="4 inputs but 3 targets"):
        validate_split(t, "train", x, y[:3])


def test_missing_paper_data_names_the_fetch_command(tmp_path):
    from crossmodal.errors import DataMissingError

    for key in ("CIFAR100", "Advection1D"):
        with pytest.raises(DataMissingError, match="crossmodal data download"):
            get_task(key).load(tmp_path)
