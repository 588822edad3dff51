"""One source of smoke settings: `crossmodal run --profile smoke` runs what the notebooks run.

Both paths are stopped right after their settings are resolved (no training): the
TrainConfig, the method's config and the data subset sizes must be identical.
"""

from __future__ import annotations

import dataclasses

import pytest

from crossmodal import notebook as cm
from crossmodal import runner
from crossmodal.cli import main
from crossmodal.profiles import SMOKE_RECIPE, smoke_recipe, train_defaults
from crossmodal.tasks import get_task


class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch, tmp_path):
    monkeypatch.setenv(cm.REPORTS_ENV, str(tmp_path / "reports"))
    seen: list[dict] = []
    resolve = runner.resolve_run

    def spy_resolve(*args, **kwargs):
        spec, m, cfg = resolve(*args, **kwargs)
        train = dataclasses.asdict(cfg)
        for k in ("progress", "num_threads"):  # how it runs, not what it computes
            train.pop(k)
        seen.append({"task": spec.key, "method": m.name, "train": train,
                     "method_config": dataclasses.asdict(m.config)})
        return spec, m, cfg

    def stop_at_splits(spec, splits):
        seen[-1]["sizes"] = (len(splits["train"][0]), len(splits["test"][0]))
        raise _Stop

    monkeypatch.setattr(runner, "resolve_run", spy_resolve)
    monkeypatch.setattr(runner, "spec_for_splits", stop_at_splits)
    return seen


@pytest.mark.parametrize("method", ["nft", "orca", "pare", "mona", "recraft",
                                    "gap_adaptive_a", "gap_adaptive_b", "scratch", "fpt"])
@pytest.mark.parametrize("task", sorted(SMOKE_RECIPE))
def test_cli_and_notebook_resolve_the_same_smoke_settings(captured, task, method, tmp_path):
    if method not in cm.available_methods([method]):
        pytest.skip(f"{method} is not registered")
    with pytest.raises(_Stop):
        main(["run", "--task", task, "--method", method, "--profile", "smoke", "--seed", "1",
              "--out", str(tmp_path / "run"), "--no-progress"])
    nb = cm.settings("main_results", "smoke", tasks=[task], seeds=[1])
    with pytest.raises(_Stop):
        cm.run_grid(nb, cm.main_variants([method], "smoke"))
    cli, book = captured
    assert cli == book
    r = smoke_recipe(task)
    assert (cli["train"]["epochs"], cli["train"]["lr"], cli["train"]["body_lr"],
            cli["train"]["batch_size"]) == (r.epochs, r.lr, r.body_lr, r.batch_size)


def test_smoke_defaults_are_the_recipe():
    for key, r in SMOKE_RECIPE.items():
        d = train_defaults(get_task(key), "smoke")
        assert (d["epochs"], d["lr"], d["body_lr"], d["batch_size"]) == \
            (r.epochs, r.lr, r.body_lr, r.batch_size)
        assert r.body_lr < r.lr  # the pretrained body moves slower than the new parts
