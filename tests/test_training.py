"""The training loop and the runner: end-to-end runs, determinism, resume, NaN, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossmodal.errors import InvalidInputError, NonFiniteLossError, UnknownNameError
from crossmodal.profiles import default_body
from crossmodal.runner import run
from crossmodal.tasks import get_task
from crossmodal.training import EpochSampler, TrainConfig, fit, make_scheduler

SMOKE = ["smoke_digits", "smoke_gunpoint", "smoke_basicmotions", "smoke_advection"]
BASELINES = ["scratch", "nft", "fpt"]


@pytest.mark.slow
@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("key", SMOKE)
def test_one_epoch_of_each_baseline_on_each_smoke_task_writes_results(small_splits, key, method, tmp_path):
    r = run(key, method, "smoke", epochs=1, out=tmp_path, progress=False,
            splits=small_splits(key, 48, 32, pick="first"))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["task"] == key and saved["method"] == method and saved["profile"] == "smoke"
    assert math.isfinite(saved["final_metric"]) and saved["final_metric"] == r["final_metric"]
    assert saved["metric"]["lower_is_better"] is True
    assert len(saved["epochs"]) == 1 and saved["versions"]["torch"].startswith("2.14")
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
    assert not (tmp_path / "checkpoint.pt").exists()  # removed once the run is complete
    if method == "scratch":
        # the profile body's random twin (smoke: minilm-l3 -> minilm-l3-random)
        assert saved["body"] == f"{default_body(get_task(key), 'smoke')}-random"
        assert saved["body"].startswith("minilm")
    if method == "fpt":
        nft = run(key, "nft", "smoke", epochs=1, progress=False, splits=small_splits(key, 4, 4, pick="first"))
        assert saved["n_trainable_parameters"] < nft["n_trainable_parameters"] / 5


@pytest.mark.slow
def test_same_seed_gives_identical_metrics_and_another_seed_differs(small_splits):
    kw = dict(epochs=2, progress=False, splits=small_splits("smoke_gunpoint", 48, 32, pick="first"))
    a = run("smoke_gunpoint", "nft", "smoke", seed=3, **kw)
    b = run("smoke_gunpoint", "nft", "smoke", seed=3, **kw)
    c = run("smoke_gunpoint", "nft", "smoke", seed=4, **kw)
    assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
    assert a["final_metric"] == b["final_metric"]
    assert [e["train_loss"] for e in a["epochs"]] != [e["train_loss"] for e in c["epochs"]]


@pytest.mark.slow
def test_resume_after_interruption_reaches_the_uninterrupted_result(small_splits, tmp_path):
    splits = small_splits("smoke_advection", 48, 32, pick="first")
    full = run("smoke_advection", "nft", "smoke", epochs=3, progress=False, splits=splits,
               out=tmp_path / "full")

    # interrupt a second run after its second epoch (its checkpoint is on disk)
    import crossmodal.training as training

    original = training.fit

    def interrupted_fit(*args, **kwargs):
        def stop(record):
            if record["epoch"] == 2:
                raise KeyboardInterrupt

        kwargs["on_epoch_end"] = stop
        return original(*args, **kwargs)

    import crossmodal.runner as runner

    runner.fit = interrupted_fit
    try:
        with pytest.raises(KeyboardInterrupt):
            run("smoke_advection", "nft", "smoke", epochs=3, progress=False, splits=splits,
                out=tmp_path / "cut")
    finally:
        runner.fit = original
    assert (tmp_path / "cut" / "checkpoint.pt").exists()
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = run("smoke_advection", "nft", "smoke", epochs=3, progress=False, splits=splits,
                  out=tmp_path / "cut", resume=True)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert resumed["final_metric"] == full["final_metric"]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in full["epochs"]]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    task = get_task("smoke_gunpoint")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(150, 2))
    x = np.random.default_rng(0).normal(size=(8, 1, 150)).astype(np.float32)
    y = np.zeros(8, dtype=np.int64)

    def nan_loss(model, batch, state):
        out = model(batch[0]).sum()
        return out * float("nan") if state.step == 1 else out

    cfg = TrainConfig(epochs=1, batch_size=4, progress=False)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 2") as err:
        fit(model, task, {"train": (x, y), "test": (x, y)}, cfg, tmp_path, loss_fn=nan_loss)
    # no checkpoint was written yet (epoch 1 never finished): the message must not claim one
    assert "checkpoint" not in str(err.value) and not (tmp_path / "checkpoint.pt").exists()


def test_nan_inputs_are_rejected_before_training(small_splits):
    splits = small_splits("smoke_gunpoint", 48, 32, pick="first")
    x, y = splits["train"]
    x = x.copy()
    x[0, 0, 5] = np.nan
    from crossmodal.tasks import validate_split

    with pytest.raises(InvalidInputError, match="NaN"):
        validate_split(get_task("smoke_gunpoint"), "train", x, y)


def test_unknown_method_and_options_are_explained():
    with pytest.raises(UnknownNameError, match="nft"):
        run("smoke_gunpoint", "finetune", "smoke", progress=False)
    with pytest.raises(InvalidInputError, match="train_layernorm"):
        run("smoke_gunpoint", "fpt", "smoke", method_options={"freeze": True}, progress=False)
    with pytest.raises(UnknownNameError, match="smoke"):
        run("smoke_gunpoint", "nft", "tiny", progress=False)
    with pytest.raises(InvalidInputError, match="lr"):
        run("smoke_gunpoint", "nft", "smoke", train_options={"lr": -1.0}, progress=False)


def test_config_validation():
    with pytest.raises(UnknownNameError, match="adamw"):
        TrainConfig(optimizer="lamb").validate()
    with pytest.raises(InvalidInputError, match="epochs"):
        TrainConfig(epochs=0).validate()


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    s = EpochSampler(20, seed=1)
    s.set_epoch(2)
    first = list(s)
    s.set_epoch(0)
    s.set_epoch(2)
    assert list(s) == first and sorted(first) == list(range(20))
    s.set_epoch(3)
    assert list(s) != first


def test_scheduler_warms_up_then_decays_to_zero():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, TrainConfig(warmup_frac=0.2, schedule="cosine"), 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] < 0.1
