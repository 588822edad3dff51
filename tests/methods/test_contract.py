"""The method contract, PEFT style: every registered method on a 1D, a 2D and a dense task.

Each case runs the method end to end through :func:`crossmodal.runner.run` on a few samples
with a one-layer body, and checks what every method promises:

* it runs and writes a finite metric to ``results.json``;
* it trains what it says it trains: between the end of stage 1 and the end of fine-tuning,
  the parameters outside ``method.trainable_parameters(model)`` are bit-for-bit unchanged and
  the trainable ones (the head at least) moved;
* a run interrupted after its first epoch and resumed from the checkpoint ends with the
  uninterrupted run's metric and losses (this half found two bugs: RECRAFT's bound needed
  stage 1's held-out features after ``--resume``, and fine-tuning clipped with a stale
  gradient that RECRAFT's recalibration left on the frozen source head).

Cost (measured, one thread): the whole table takes about 60 s of CPU (27 runs of one epoch,
27 x 3 runs for resume), so none of it is marked ``slow``.

A new method registered in :data:`crossmodal.methods.METHODS` is in the table automatically;
give it a small stage-1 budget in :data:`FAST` if it has one.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

import crossmodal.runner as runner
from crossmodal.methods import METHODS
from crossmodal.models import build_model

TASKS = {"1D": "smoke_gunpoint", "2D": "smoke_digits", "dense": "smoke_advection"}

#: small stage-1 budgets (the contract is about plumbing, not about learning)
FAST: dict[str, dict] = {
    "orca": {"align_epochs": 1, "proxy_samples": 40, "eval_samples": 16},
    "pare": {"proxy_samples": 40},
    "mona": {"meta_steps": 1, "proxy_samples": 40, "discrepancy_trials": 2,
             "meta_batch_size": 8, "source_batch_size": 8},
    "recraft": {"proxy_samples": 40, "recal_epochs": 5, "fa_epochs": 1, "fld_epochs": 1,
                "stage1_samples": 16, "stage1_batch_size": 8},
    "gap_adaptive_a": {"proxy_samples": 40, "gap_samples": 16},
    "gap_adaptive_b": {"proxy_samples": 40, "contrastive_epochs": 1},
}
CASES = [(m, kind) for m in sorted(METHODS) for kind in TASKS]


@pytest.fixture
def one_layer_body(monkeypatch):
    """Every model of these runs has a one-layer body (the contract does not need depth)."""
    monkeypatch.setattr(runner, "build_model", functools.partial(build_model, num_layers=1))


class TrainedWhatItSays:
    """A probe: parameters after stage 1 and after the last epoch, and the method's claim."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.trainable: set[str] = set()
        self.head: set[str] = set()

    def __call__(self, model, method, task, splits, record):
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        if record is None:
            ids = {id(p) for p in method.trainable_parameters(model)}
            self.trainable = {n for n, p in model.named_parameters() if id(p) in ids}
            self.head = {f"head.{n}" for n, _ in model.head.named_parameters()}
            self.before = state
        else:
            self.after = state
        return None


def _run(method: str, kind: str, splits, **kw):
    return runner.run(TASKS[kind], method, "smoke", progress=False, splits=splits,
                      method_options=FAST.get(method), train_options={"batch_size": 8}, **kw)


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_method_runs_writes_a_finite_metric_and_trains_what_it_says(
        method, kind, one_layer_body, small_splits, tmp_path):
    probe = TrainedWhatItSays()
    r = _run(method, kind, small_splits(TASKS[kind], 16, 8), epochs=1, out=tmp_path,
             probe=probe)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == method and saved["status"] == "complete"
    assert math.isfinite(saved["final_metric"]) and saved["final_metric"] == r["final_metric"]
    assert probe.before and probe.after and probe.trainable
    frozen = set(probe.before) - probe.trainable
    moved = {n for n in probe.before if not torch.equal(probe.before[n], probe.after[n])}
    assert not moved & frozen, f"{method} changed parameters it does not train: " \
                               f"{sorted(moved & frozen)[:5]}"
    assert moved & probe.trainable & probe.head, f"{method} did not train its head"
    assert r["n_trainable_parameters"] == sum(probe.before[n].numel() for n in probe.trainable)


@pytest.mark.parametrize(("method", "kind"), CASES)
def test_method_resumes_from_a_checkpoint_to_the_uninterrupted_result(
        method, kind, one_layer_body, small_splits, tmp_path, monkeypatch):
    splits = small_splits(TASKS[kind], 16, 8)
    full = _run(method, kind, splits, epochs=2, out=tmp_path / "full")
    real_fit = runner.fit

    def interrupted(*args, **kwargs):
        def stop(record):
            if record["epoch"] == 1:
                raise KeyboardInterrupt

        kwargs["on_epoch_end"] = stop
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(method, kind, splits, epochs=2, out=tmp_path / "cut")
    monkeypatch.setattr(runner, "fit", real_fit)
    resumed = _run(method, kind, splits, epochs=2, out=tmp_path / "cut", resume=True)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    assert resumed["final_metric"] == full["final_metric"]
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"]
                                                            for e in full["epochs"]]
    # a run may have loaded an earlier run's alignment (crossmodal.methods.orca
    # ALIGNMENT_CACHE), which its report says; the rest of the report is the same
    for r in (resumed, full):
        r["method_report"].pop("alignment_shared", None)
    assert resumed["method_report"] == full["method_report"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_option_carries_its_help_and_crossmodal_methods_prints_it(method, capsys):
    from crossmodal.cli import main
    from crossmodal.methods import method_options

    options = method_options(method)
    assert all(len(o["help"]) > 10 for o in options), [o["name"] for o in options
                                                       if len(o["help"]) <= 10]
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    block = out[out.index(f"{method}: "):].split("\n\n")[0]
    for o in options:
        assert f"    {o['name']} = {o['default']!r}" in block
        assert o["help"].split()[0] in block
