"""Run one (task, method, profile, seed) end to end and write ``results.json``.

This is what ``crossmodal run`` and the notebooks call::

    from crossmodal.runner import run
    result = run("smoke_digits", "nft", profile="smoke", out="runs/digits_nft")
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.data.pdebench import spec_for_splits
from crossmodal.data.root import data_root as resolve_data_root
from crossmodal.errors import InvalidInputError
from crossmodal.methods import RunContext, get_method
from crossmodal.metrics import get_metric
from crossmodal.models import build_model
from crossmodal.profiles import default_body, get_profile, train_defaults
from crossmodal.reporting import package_versions, write_json_atomic
from crossmodal.tasks import Splits, TaskSpec, get_task
from crossmodal.training import TrainConfig, fit, seed_everything


def subsample(splits: Splits, max_train: int | None, max_test: int | None, seed: int) -> Splits:
    """Seeded subsets of at most ``max_train``/``max_test`` samples (the profile's shrink)."""
    out = {}
    for name, (x, y) in splits.items():
        cap = max_train if name == "train" else max_test
        if cap is not None and len(x) > cap:
            idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:cap])
            x, y = x[idx], y[idx]
        out[name] = (x, y)
    return out


def load_task_data(task: TaskSpec, profile: str, data_root: str | Path | None = None,
                   seed: int = 0) -> Splits:
    """A task's splits, shrunk as the profile says."""
    prof = get_profile(profile)
    splits = task.load(resolve_data_root(data_root))
    return subsample(splits, prof.max_train, prof.max_test, seed)


def make_train_config(task: TaskSpec, profile: str, *, epochs: int | None = None, seed: int = 0,
                      **overrides: Any) -> TrainConfig:
    """The task's default TrainConfig for a profile, with overrides."""
    kwargs = train_defaults(task, profile)
    if epochs is not None:
        kwargs["epochs"] = epochs
    kwargs.update(overrides)
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(kwargs) - valid)
    if bad:
        raise InvalidInputError(f"unknown training option(s) {bad}; valid: {sorted(valid)}")
    return TrainConfig(seed=seed, **kwargs)


def dry_run_options(limit_batches: int | None, batch_size: int | None) -> dict[str, Any]:
    """TrainConfig overrides of the dry-run switches (``--limit-batches``, ``--batch-size``)."""
    out: dict[str, Any] = {}
    for name, value in (("limit_batches", limit_batches), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if limit_batches is not None:
        out["limit_batches"] = limit_batches
    if batch_size is not None:
        out["batch_size"] = out["eval_batch_size"] = batch_size
    return out


def data_source_kind(root: Path | None, *, given: bool) -> str:
    """``"in-memory"`` (splits passed in), ``"fixture"`` (a fixture root) or ``"files"``."""
    from crossmodal.data.fixtures import is_fixture_root

    if given:
        return "in-memory"
    return "fixture" if is_fixture_root(root) else "files"


def run(
    task: str | TaskSpec,
    method: str = "nft",
    profile: str = "smoke",
    *,
    epochs: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    body: str | None = None,
    data_root: str | Path | None = None,
    method_options: dict[str, Any] | None = None,
    train_options: dict[str, Any] | None = None,
    progress: bool = True,
    splits: Splits | None = None,
    probe: Callable[..., dict | None] | None = None,
    limit_batches: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate one method on one task; return (and write) the result dict.

    Parameters
    ----------
    task, method, profile : registry names (``crossmodal tasks``, ``crossmodal methods``).
    epochs : fine-tuning epochs (None: the profile's default, the paper's for ``paper``).
    seed : seeds data subsets, initialisation, data order and dropout.
    out : output folder for results.json, metrics.jsonl and the checkpoint (None: nothing
        written).
    resume : continue an interrupted run in ``out`` from its last checkpoint.
    body : override the profile's body (e.g. ``"minilm-random"``).
    method_options, train_options : fields of the method's config / of TrainConfig.
    splits : use these arrays instead of loading the task's data (tests, notebooks).
    probe : ``probe(model, method, task, splits, record)``, called after the method's stage 1
        (``record=None``) and after every fine-tuning epoch (the epoch record): measurements
        of the trained model itself (RECRAFT's bound, MoNA's discrepancy per epoch). Its
        JSON-able dicts go into the result's ``probes``, with ``epoch`` (0: before fine-tuning).
    limit_batches : dry runs: every fine-tuning epoch and every stage-1 loop stops after this
        many micro-batches, evaluation reads this many batches.
    batch_size : dry runs / debugging: the micro-batch size of fine-tuning, evaluation and
        every stage-1 loop, replacing the profile's; accumulation and the rest stay.

    A run with either switch, or on a fixture data root (``crossmodal data fixtures``), is a
    *dry run*: ``results.json`` says so (``dry_run``, ``limit_batches``, ``batch_size``,
    ``data``) and reports never compare it with a paper.
    """
    t_start = time.perf_counter()
    spec = get_task(task) if isinstance(task, str) else task
    prof = get_profile(profile)
    m = get_method(method, **(method_options or {}))
    dry = dry_run_options(limit_batches, batch_size)
    cfg = make_train_config(spec, profile, epochs=epochs, seed=seed, progress=progress,
                            **{**(train_options or {}), **dry})
    seed_everything(seed, cfg.num_threads)
    splits_given = splits is not None
    if splits is None:
        splits = load_task_data(spec, profile, data_root, seed)
    spec = spec_for_splits(spec, splits)  # generated PDE files are smaller than the paper's
    out_dir = Path(out) if out is not None else None
    ctx = RunContext(profile=prof.name, seed=seed, out_dir=out_dir, progress=progress,
                     data_root=Path(resolve_data_root(data_root)),
                     limit_batches=limit_batches, batch_size=batch_size)
    data_kind = data_source_kind(ctx.data_root, given=splits_given)

    body_name = m.body_name(body or default_body(spec, prof))
    model = build_model(spec, body_name, seed=seed)
    m.prepare(model, spec, ctx)

    extra_state: dict[str, Any] = {}
    resuming = resume and out_dir is not None and (out_dir / "checkpoint.pt").exists()
    if not resuming:
        extra_state["method_report"] = m.pretrain(model, spec, splits, ctx) or {}

    probes: list[dict] = []

    def _probe(record: dict | None = None) -> None:
        found = probe(model, m, spec, splits, record) if probe is not None else None
        if found:
            probes.append({"epoch": record["epoch"] if record else 0, **found})

    if not resuming:
        _probe()
    trainable = {id(p) for p in m.trainable_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    history = fit(
        model, spec, splits, cfg, out_dir,
        loss_fn=m.loss_fn(spec),
        params=[p for p in model.parameters() if p.requires_grad],
        resume=resume,
        extra_state=extra_state,
        on_epoch_end=_probe if probe is not None else None,
    )
    metric = get_metric(spec.metric)
    values = [h["test_metric"] for h in history]
    best = min(values) if metric.lower_is_better else max(values)
    result = {
        "task": spec.key,
        "benchmark": spec.benchmark,
        "method": m.name,
        "profile": prof.name,
        "seed": seed,
        "body": body_name,
        "metric": {"name": metric.name, "display": metric.display,
                   "lower_is_better": metric.lower_is_better},
        "final_metric": values[-1],
        "best_metric": best,
        "epochs": history,
        "n_train": int(len(splits["train"][0])),
        "n_test": int(len(splits["test"][0])),
        "n_trainable_parameters": int(sum(p.numel() for p in model.parameters()
                                          if p.requires_grad)),
        "config": {"train": dataclasses.asdict(cfg), "method": dataclasses.asdict(m.config)},
        "method_report": extra_state.get("method_report", {}),
        **({"probes": probes} if probe is not None else {}),
        "wall_seconds": time.perf_counter() - t_start,
        "device": "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu",
        "data": data_kind,
        "num_processes": int(os.environ.get("WORLD_SIZE", "1")),
        "dry_run": bool(dry) or data_kind == "fixture",
        "limit_batches": limit_batches,
        "batch_size": batch_size,
        "versions": package_versions(),
        "status": "complete",
    }
    if out_dir is not None and int(os.environ.get("RANK", "0")) == 0:  # one writer
        write_json_atomic(result, out_dir / "results.json")
    return result
