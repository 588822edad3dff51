"""The one stage-1 loop (:class:`crossmodal.methods._stage.Stage`): device, freezing, errors;
every method's stage 1 runs on the run's device; RECRAFT's bound survives ``--resume``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import crossmodal.runner as runner
from crossmodal.errors import NonFiniteLossError
from crossmodal.methods import RunContext
from crossmodal.methods._stage import Stage
from crossmodal.runner import run


def test_a_non_finite_loss_names_the_stage_its_epoch_and_micro_batch_and_the_fix():
    lin = nn.Linear(3, 1)
    stage = Stage("toy stage", RunContext(progress=False), lin.parameters(), lr=0.1,
                  fix="Lower toy_lr")
    with pytest.raises(NonFiniteLossError, match=r"toy stage: .*nan at epoch 2, micro-batch 3 "
                                                 r"\(lr 0.1\)\. Lower toy_lr"):
        for epoch in stage.epochs(3):
            for i in stage.batches(range(3)):
                loss = lin(torch.ones(1, 3)).sum()
                stage.step(loss * float("nan") if (epoch, i) == (1, 2) else loss)


def test_a_stage_runs_on_the_context_device_freezes_the_rest_and_restores_it():
    # "meta" stands in for an accelerator: the stage must take its device from ctx, not
    # from where its inputs happen to be (the CPU). As in the runner, the model is placed on
    # ctx.device before the stage's optimiser is made.
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[1].weight.requires_grad_(False)  # a caller's own freezing is restored as it was
    ctx = RunContext(device="meta", progress=False)
    ctx.place(model)
    stage = Stage("toy", ctx, model[0].parameters(), lr=0.1)
    with stage.training(model, mode="train"):
        assert {p.device.type for p in model.parameters()} == {"meta"}
        assert stage.put(torch.zeros(2)).device.type == "meta"
        assert [p.requires_grad for p in model.parameters()] == [True, True, False, False]
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True]
    assert ctx.stages == [{"stage": "toy", "device": "meta", "parameter_devices": ["meta"]}]


def test_budget_and_steps_follow_limit_batches():
    lin = nn.Linear(2, 1)
    stage = Stage("toy", RunContext(limit_batches=3, progress=False), lin.parameters(), lr=0.1)
    seen = [(e, b) for e in stage.epochs(5) for b in stage.batches(range(2))]
    assert seen == [(0, 0), (0, 1), (1, 0)]
    stage = Stage("toy", RunContext(limit_batches=2, progress=False), lin.parameters(), lr=0.1)
    assert list(stage.steps(5)) == [0, 1]


STAGES = {
    "orca": ({"align_epochs": 2, "proxy_samples": 60, "eval_samples": 20}, ["ORCA alignment"]),
    "mona": ({"meta_steps": 2, "proxy_samples": 40, "discrepancy_trials": 2},
             ["MoNA source classifier", "MoNA stage 1"]),
    "recraft": ({"proxy_samples": 40, "recal_epochs": 5, "fa_epochs": 1, "fld_epochs": 1,
                 "stage1_samples": 16, "stage1_batch_size": 8},
                ["RECRAFT recalibration", "RECRAFT FA+FLD", "RECRAFT FLD"]),
    "gap_adaptive_a": ({"embedder_stage": "emb", "embedder_epochs": 1, "proxy_samples": 40,
                        "gap_samples": 20}, ["gap-adaptive embedder stage"]),
    "gap_adaptive_b": ({"contrastive_epochs": 1, "proxy_samples": 40},
                       ["gap-adaptive contrastive stage"]),
}


@pytest.mark.parametrize("method", sorted(STAGES))
def test_every_stage_one_loop_runs_on_the_device_fit_uses(method, monkeypatch, small_splits):
    options, names = STAGES[method]
    seen = {}
    real_fit = runner.fit

    def fit(model, *args, **kwargs):  # where fine-tuning finds the model
        seen["fit"] = {str(p.device) for p in model.parameters()}
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", fit)
    r = run("smoke_gunpoint", method, "smoke", epochs=1, progress=False,
            splits=small_splits("smoke_gunpoint", 24, 12), method_options=options,
            limit_batches=2)
    assert [s["stage"] for s in r["stages"]] == names
    assert r["device"] == runner.resolve_device("auto")
    for s in r["stages"]:  # the stage's device, its parameters' and the model's: fit's one
        assert s["device"] == r["device"] and s["parameter_devices"] == [r["device"]]
    assert seen["fit"] == {r["device"]}


@pytest.mark.slow
def test_recraft_bound_after_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch,
                                                                 small_splits):
    """The held-out proxy features live in the checkpoint: a resumed run (stage 1 skipped)
    still computes the bound, and the same one."""
    from crossmodal.methods.recraft import BoundProbe

    options = dict(STAGES["recraft"][0])
    args = dict(epochs=2, progress=False, splits=small_splits("smoke_gunpoint", 24, 12),
                method_options=options)
    full = run("smoke_gunpoint", "recraft", "smoke", out=tmp_path / "full", probe=BoundProbe(),
               **args)
    real_fit = runner.fit

    def interrupted(*a, **kw):
        def stop(record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        kw["on_epoch_end"] = stop
        return real_fit(*a, **kw)

    monkeypatch.setattr(runner, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run("smoke_gunpoint", "recraft", "smoke", out=tmp_path / "cut", **args)
    monkeypatch.setattr(runner, "fit", real_fit)
    resumed = run("smoke_gunpoint", "recraft", "smoke", out=tmp_path / "cut", resume=True,
                  probe=BoundProbe(), **args)
    assert resumed["final_metric"] == full["final_metric"]
    assert [p["epoch"] for p in resumed["probes"]] == [2]
    last, want = resumed["probes"][-1], full["probes"][-1]
    assert math.isfinite(last["bound"]) and last == pytest.approx(want, rel=1e-9)
    assert resumed["method_report"] == full["method_report"]
    assert resumed["stages"] == full["stages"]


# ---------------------------------------------------------------- one alignment, many variants

ALIGN = {"align_epochs": 2, "proxy_samples": 60, "eval_samples": 20}


def test_freeze_variants_share_one_alignment_bit_for_bit(small_splits):
    """Two runs that differ only in ``freeze`` align once; the second loads the first one's
    aligned embedder, and its run equals the same variant aligned on its own; another
    alignment setting does not hit."""
    from crossmodal.methods import orca

    cache = orca.ALIGNMENT_CACHE
    cache.clear()
    seen = []
    real = orca.align_embedder

    def counting(embedder, *args, **kwargs):
        curve = real(embedder, *args, **kwargs)
        seen.append({k: v.clone() for k, v in embedder.state_dict().items()})
        return curve

    args = dict(epochs=1, progress=False, splits=small_splits("smoke_gunpoint", 24, 12), seed=3)
    embedders = {}

    def capture(model, method, task, splits, record):
        if record is None:  # after stage 1, before fine-tuning
            embedders[method.config.freeze] = {k: v.clone() for k, v in
                                               model.embedder.state_dict().items()}

    orca.align_embedder = counting
    try:
        a = run("smoke_gunpoint", "orca", "smoke", method_options={**ALIGN, "freeze": "none"},
                probe=capture, **args)
        b = run("smoke_gunpoint", "orca", "smoke", method_options={**ALIGN, "freeze": "body"},
                probe=capture, **args)
        assert len(seen) == 1 and (cache.hits, cache.misses) == (1, 1)
        assert b["method_report"].pop("alignment_shared") is True
        assert "alignment_shared" not in a["method_report"]
        assert {**a["method_report"], "freeze": "body"} == b["method_report"]
        for k, v in seen[0].items():  # the aligned weights, bit for bit
            assert torch.equal(embedders["none"][k], v) and torch.equal(embedders["body"][k], v)
        assert b["stages"][0]["shared"] is True
        # another alignment setting: aligned again
        run("smoke_gunpoint", "orca", "smoke", method_options={**ALIGN, "align_lr": 2e-3},
            **args)
        assert len(seen) == 2 and cache.misses == 2
        # the shared variant's run is the run of that variant aligned on its own
        cache.clear()
        alone = run("smoke_gunpoint", "orca", "smoke",
                    method_options={**ALIGN, "freeze": "body"}, **args)
        assert len(seen) == 3
        assert alone["final_metric"] == b["final_metric"]
        assert [e["train_loss"] for e in alone["epochs"]] == [e["train_loss"] for e in
                                                              b["epochs"]]
        assert alone["method_report"] == b["method_report"]
    finally:
        orca.align_embedder = real
        cache.clear()


def test_orca_step_lr_follows_the_authors_rule():
    """ORCA's no_warmup_scheduler: lr * 0.2 ** #{m in (20, 40, 60): epoch > m}."""
    from crossmodal.methods.orca import AlignmentScore, align_embedder

    emb = nn.Sequential(nn.Flatten(1), nn.Linear(4, 2), nn.Unflatten(1, (1, 2)))
    x = torch.randn(8, 4).numpy()
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]).numpy()
    score = AlignmentScore("mean_l2", torch.randn(10, 2), torch.zeros(10, dtype=torch.long))
    rates = []
    real_step = torch.optim.SGD.step

    def recording(self, *a, **k):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    torch.optim.SGD.step = recording
    try:
        align_embedder(emb, x, labels, score, epochs=63, lr=1.0, samples_per_class=4,
                       optimizer="sgd", momentum=0.9, lr_steps=(20, 40, 60), lr_gamma=0.2)
    finally:
        torch.optim.SGD.step = real_step
    want = [0.2 ** sum(e > m for m in (20, 40, 60)) for e in range(63)]
    assert rates == pytest.approx(want)
