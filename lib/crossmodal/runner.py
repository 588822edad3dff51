"""Run one (task, method, profile, seed) end to end and write ``results.json``.

This is what ``crossmodal run`` and the notebooks call::

    from crossmodal.runner import run
    result = run("smoke_digits", "nft", profile="smoke", out="runs/digits_nft")
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossmodal.data.fixtures import is_fixture_root
from crossmodal.data.root import data_root as resolve_data_root
from crossmodal.errors import InvalidInputError
from crossmodal.methods import METHODS, RunContext, get_method
from crossmodal.metrics import get_metric
from crossmodal.models import build_model, fit_target_normalizer
from crossmodal.profiles import (
    default_body,
    get_profile,
    method_defaults,
    subset_sizes,
)
from crossmodal.protocol import resolve, train_defaults
from crossmodal.reporting import package_versions, write_json_atomic
from crossmodal.runlock import RunLock, clean_stale_temporaries
from crossmodal.runstate import CHECKPOINT, plan_run, run_fingerprint
from crossmodal.tasks import Splits, TaskSpec, get_task, spec_for_splits
from crossmodal.tracking import check_tracker, project_config
from crossmodal.training import TrainConfig, fit, resolve_device, seed_everything
from crossmodal.validation import (
    check_input_shapes,
    check_out_dir,
    check_seed,
    coerce_options,
    validate_splits,
)

#: Training settings that are arguments of :func:`run` (and flags of ``crossmodal run``),
#: not ``train_options``: accepting both would leave two values for one setting.
RUN_ARGUMENTS = {"seed": "--seed (run(seed=...))", "epochs": "--epochs (run(epochs=...))",
                 "progress": "--no-progress (run(progress=...))"}


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
    max_train, max_test = subset_sizes(task, profile)
    splits = task.load(resolve_data_root(data_root))
    return subsample(splits, max_train, max_test, seed)


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


def model_options(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The protocol's model settings that this kit's :func:`build_model` accepts.

    Options the installed ``build_model`` does not take yet are left out (they are still
    recorded in ``results.json`` under ``config.model``; ``applied`` lists those passed).
    """
    accepted = set(inspect.signature(build_model).parameters)
    out = {k: v for k, v in model_kwargs.items() if k in accepted and v is not None}
    if "n_tokens" in out:
        # build_model takes one of the two; N (a divisor of the input length here) fixes
        # the patch, patch = L / N
        out.pop("patch_size", None)
    return out


def typed_method_options(method: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` parsed/checked against the method's config field types (before any work)."""
    get_method(method)  # an unknown method name: the error that lists the valid ones
    return coerce_options(METHODS[method].config_class, options, flag="-o",
                          label=f"option {{name}} of method {method!r}")


def typed_train_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options`` parsed/checked against :class:`TrainConfig`'s field types."""
    reserved = sorted(set(options or {}) & set(RUN_ARGUMENTS))
    if reserved:
        raise InvalidInputError(
            f"training option(s) {', '.join(reserved)} are set by their own argument: use "
            + ", ".join(RUN_ARGUMENTS[k] for k in reserved) + " instead of -t")
    return coerce_options(TrainConfig, options, flag="-t", label="training option {name}")


def one_run_per_folder(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Hold ``out``'s :class:`~crossmodal.runlock.RunLock` while ``fn`` runs.

    The folder is checked first (a file, or not writable: a clear error before any work);
    a second run into a folder in use stops at once naming the other process; a lock left
    by a dead process is taken over. Stale temporary files of a killed run are removed.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = signature.bind(*args, **kwargs).arguments.get("out")
        if out is None:
            return fn(*args, **kwargs)
        existed = Path(out).exists()
        with RunLock(check_out_dir(out), remove_if_empty=not existed) as lock:
            if lock.held:  # not on the other ranks of a launch: rank 0 may be writing them
                clean_stale_temporaries(lock.folder)
            return fn(*args, **kwargs)

    return wrapper


def resolve_run(task: str | TaskSpec, method: str, profile: str, *, epochs: int | None = None,
                seed: int = 0, method_options: dict[str, Any] | None = None,
                train_options: dict[str, Any] | None = None, progress: bool = True,
                dry: dict[str, Any] | None = None):
    """The task spec, the configured method and the (validated) TrainConfig of a run.

    The one place where a run's settings are resolved: the profile's training defaults per
    task (the smoke recipe in ``smoke``), the profile's method stage options
    (:func:`crossmodal.profiles.method_defaults`), then the caller's overrides (type-checked
    before any work) and the dry-run switches. Both ``crossmodal run`` and the notebooks go
    through it, so they run the same settings.
    """
    spec = get_task(task) if isinstance(task, str) else task
    prof = get_profile(profile)
    seed = check_seed(seed)
    proto = protocol_for(spec, method, prof.name)  # the paper profile's stage settings
    m = get_method(method, **{**(proto.method_options() if proto else {}),
                              **method_defaults(method, prof),
                              **typed_method_options(method, method_options)})
    cfg = make_train_config(spec, profile, epochs=epochs, seed=seed, progress=progress,
                            **{**typed_train_options(train_options), **(dry or {})})
    cfg.validate()
    return spec, m, cfg


def protocol_for(spec: TaskSpec, method: str, profile: str):
    """The protocol table entry of a paper-profile run (:mod:`crossmodal.protocol`), else None.

    It supplies the method's stage settings, the model's token count, dropout and embedder
    initialisation, and is recorded in ``results.json`` under ``config.protocol``.
    """
    return resolve(spec, method, profile) if profile == "paper" else None


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
    if given:
        return "in-memory"
    return "fixture" if is_fixture_root(root) else "files"


@one_run_per_folder
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
    log_with: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate one method on one task; return (and write) the result dict.

    Parameters
    ----------
    task, method, profile : registry names (``crossmodal tasks``, ``crossmodal methods``).
    epochs : fine-tuning epochs (None: the profile's default, the paper's for ``paper``).
    seed : seeds data subsets, initialisation, data order and dropout.
    out : output folder for results.json, metrics.jsonl and the checkpoint (None: nothing
        written). Held under a lock for the whole run (:mod:`crossmodal.runlock`): a second
        run into it is refused. A fresh run first removes an old results.json there.
    resume : continue an interrupted run in ``out`` from its last checkpoint, which must have
        been written with the same configuration (:mod:`crossmodal.runstate`; the differing
        settings are listed otherwise). A finished run (complete results.json) is returned
        as it is, without training.
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
    log_with : ``"tensorboard"``, ``"wandb"`` or ``"mlflow"``: per-step loss and lr and
        per-epoch metrics through Accelerate's trackers into ``out/logs``
        (:mod:`crossmodal.tracking`; needs ``out``).
    """
    t_start = time.perf_counter()
    # Every argument is checked before any work: a typo must not cost a stage-1 training.
    dry = dry_run_options(limit_batches, batch_size)
    spec, m, cfg = resolve_run(task, method, profile, epochs=epochs, seed=seed,
                               method_options=method_options, train_options=train_options,
                               progress=progress, dry=dry)
    seed = cfg.seed
    prof = get_profile(profile)
    proto = protocol_for(spec, m.name, prof.name)
    # one device for every stage (fit's accelerate picks the same one from cfg.device)
    device = resolve_device(cfg.device)
    if log_with is not None:  # fail before any training: unknown or not installed
        cfg.log_with = check_tracker(log_with)
        project_config(out, log_with)
    seed_everything(seed, cfg.num_threads)
    splits_given = splits is not None
    if splits is None:
        splits = load_task_data(spec, profile, data_root, seed)
    splits = validate_splits(spec, splits)  # user arrays too: shapes, dtypes, NaN, labels
    spec = spec_for_splits(spec, splits)  # generated PDE files are smaller than the paper's
    check_input_shapes(spec, splits)
    out_dir = Path(out) if out is not None else None
    ctx = RunContext(profile=prof.name, seed=seed, out_dir=out_dir, progress=progress,
                     device=device, data_root=Path(resolve_data_root(data_root)),
                     limit_batches=limit_batches, batch_size=batch_size)
    data_kind = data_source_kind(ctx.data_root, given=splits_given)

    body_name = m.body_name(body or default_body(spec, prof))
    fingerprint = run_fingerprint(
        task=spec.key, method=m.name, method_config=dataclasses.asdict(m.config), seed=seed,
        train_config=dataclasses.asdict(cfg), body=body_name, profile=prof.name,
        n_train=len(splits["train"][0]), n_test=len(splits["test"][0]))
    plan, saved = plan_run(out_dir, fingerprint, resume)
    if plan == "finished":
        print(f"crossmodal: {out_dir} already holds this finished run (results.json); "
              "nothing to train. Drop --resume to train it again.", file=sys.stderr)
        return saved
    # a checkpoint the interrupted run was asked to keep stays kept when it is resumed
    keep_checkpoint = cfg.keep_checkpoint or bool(plan == "resume" and saved
                                                  and saved.get("keep_checkpoint"))
    wanted = proto.model_kwargs() if proto else {}
    applied = model_options(wanted)
    # 1. build: the model, the method's structural changes, on the run's one device
    model = build_step(spec, m, body_name, seed, splits, ctx, applied)
    # 2. stage 1 (skipped on resume: its result is in the checkpoint)
    resuming = plan == "resume"
    extra_state = {} if resuming else stage_one_step(m, model, spec, splits, ctx)
    probes: list[dict] = []

    def _probe(record: dict | None = None) -> None:
        found = probe(model, m, spec, splits, record) if probe is not None else None
        if found:
            probes.append({"epoch": record["epoch"] if record else 0, **found})

    if not resuming:
        _probe()
    # 3. fine-tune what the method trains
    history = finetune_step(m, model, spec, splits, cfg, out_dir, resume=resume,
                            extra_state=extra_state, fingerprint=fingerprint,
                            on_epoch_end=_probe if probe is not None else None)
    # 4. record: results.json, then the checkpoint goes
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
        "config": {"train": dataclasses.asdict(cfg), "method": dataclasses.asdict(m.config),
                   "model": {**{k: wanted.get(k) for k in
                                ("n_tokens", "patch_size", "dropout", "embedder_init")},
                             "n_tokens_built": _n_tokens(model, spec),
                             "applied": sorted(applied)},
                   **({"protocol": proto.to_json()} if proto else {})},
        "method_report": extra_state.get("method_report", {}),
        **({"probes": probes} if probe is not None else {}),
        "wall_seconds": time.perf_counter() - t_start,
        "device": device,
        "stages": extra_state.get("stages", []),
        "data": data_kind,
        "num_processes": int(os.environ.get("WORLD_SIZE", "1")),
        "dry_run": bool(dry) or data_kind == "fixture",
        "limit_batches": limit_batches,
        "batch_size": batch_size,
        "versions": package_versions(),
        "status": "complete",
    }
    record_step(result, out_dir, keep_checkpoint)
    return result


def build_step(spec: TaskSpec, m, body_name: str, seed: int, splits: Splits, ctx: RunContext,
               model_kwargs: dict[str, Any]):
    """Step 1 of a run: the model of ``spec`` with the method's structural changes
    (:meth:`Method.prepare`), placed on the run's one device ``ctx.device`` (every stage runs
    there; ``fit``'s accelerator picks the same one, :func:`resolve_device`)."""
    model = build_model(spec, body_name, seed=seed, **model_kwargs)
    fit_target_normalizer(model, splits["train"][1])  # ORCA's Darcy Flow decoder; else no-op
    m.prepare(model, spec, ctx)
    ctx.place(model)
    return model


def stage_one_step(m, model, spec: TaskSpec, splits: Splits, ctx: RunContext) -> dict[str, Any]:
    """Step 2: the method's stage before fine-tuning (:meth:`Method.before_finetune`); returns
    the state that goes into every checkpoint (its report, where each stage loop ran)."""
    report = m.before_finetune(model, spec, splits, ctx) or {}
    return {"method_report": report, "stages": ctx.stages}


def finetune_step(m, model, spec: TaskSpec, splits: Splits, cfg: TrainConfig,
                  out_dir: Path | None, *, resume: bool, extra_state: dict[str, Any],
                  fingerprint: dict[str, Any],
                  on_epoch_end: Callable[[dict], None] | None) -> list[dict]:
    """Step 3: :func:`crossmodal.training.fit` on the parameters the method trains (only those
    require gradients), with its loss; the checkpoint stays until :func:`record_step`."""
    trainable = {id(p) for p in m.trainable_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return fit(
        model, spec, splits, cfg, out_dir,
        loss_fn=m.loss_fn(spec),
        params=[p for p in model.parameters() if p.requires_grad],
        resume=resume,
        extra_state=extra_state,
        on_epoch_end=on_epoch_end,
        run_config=fingerprint,
        remove_checkpoint=False,  # removed by record_step, once results.json is written
    )


def record_step(result: dict[str, Any], out_dir: Path | None, keep_checkpoint: bool) -> None:
    """Step 4: ``results.json`` (one writer under a launch), then the checkpoint is removed
    unless it is to be kept: a crash in between loses nothing."""
    if out_dir is not None and int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(result, out_dir / "results.json")
        if not keep_checkpoint:
            (out_dir / CHECKPOINT).unlink(missing_ok=True)


def _n_tokens(model, spec: TaskSpec) -> int | None:
    """The embedder's token count N for the task's input shape (None if it cannot be read)."""
    try:
        p = next(model.embedder.parameters())
        with torch.no_grad():
            return int(model.embedder(torch.zeros(1, *spec.input_shape, device=p.device,
                                                  dtype=p.dtype)).shape[1])
    except (StopIteration, RuntimeError, AttributeError, TypeError):
        return None
