"""One readable training loop for every method and task.

``fit`` trains a model on a task's train split and evaluates the task metric on the test
split after every epoch. Device placement and mixed precision go through ``accelerate``, so
the same loop runs on the CPU, one GPU, or several (``accelerate launch -m crossmodal.cli
run ...``). Methods change what is trained and the loss, never the loop: they pass a
``loss_fn(model, batch, state) -> loss`` and the parameters to optimise.

Several processes (``accelerate launch --multi_gpu --num_processes 2 -m crossmodal.cli run``;
on a machine without GPUs that starts two CPU processes, DDP on gloo): the model is *not*
wrapped in ``DistributedDataParallel``, because methods' loss functions call the model's
parts (``model.embedder``, ``model.extras[...]``), which a DDP wrapper hides and whose
forwards bypass its gradient hooks. Instead every process starts from rank 0's weights, each
global batch of ``batch_size`` is split across the processes (``split_batches``), and the
gradients are averaged across processes before every optimiser step
(:func:`average_gradients`), which is the same update as one process on the whole batch.
Mixed precision (``mixed_precision``) wraps the method's whole loss function and the
evaluation forward in ``accelerator.autocast()``, so the methods' own forwards get it too.

Reproducibility: torch threads are pinned and every epoch reseeds the data order and the
dropout RNG from ``(seed, epoch)``; so two runs with the same seed give identical metrics,
and a run resumed from the checkpoint of epoch e continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from crossmodal import tracking
from crossmodal.errors import InvalidInputError, NonFiniteLossError, unknown_name
from crossmodal.losses import task_loss
from crossmodal.metrics import get_metric
from crossmodal.runstate import (
    NON_RESULT_TRAIN_KEYS,
    config_differences,
    fingerprint_of_checkpoint,
    load_checkpoint,
    mismatch_error,
)
from crossmodal.validation import check_out_dir

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "linear", "cosine", "warmup_linear")
ACCUM_SEMANTICS = ("mean", "sum")


@dataclass
class TrainConfig:
    r"""Fine-tuning settings (defaults per task and profile: :func:`crossmodal.protocol.train_defaults`).

    The learning rate warms up linearly for ``warmup_frac`` of the optimiser steps, then
    follows ``schedule`` down to zero (ORCA uses warm-up followed by a decay).

    ``lr`` is the learning rate of every trained parameter, unless ``body_lr`` is set: then
    the pretrained body's parameters (``model.body``) train at ``body_lr`` and the parts a
    method adds fresh (embedder, head, ``extras``) at ``lr``. A randomly initialised embedder
    and head need a larger step than the pretrained body tolerates (the smoke recipe in
    :mod:`crossmodal.profiles`); the schedule scales both groups alike.

    Schedules. ``constant``/``linear``/``cosine``: the learning rate warms up linearly for
    ``warmup_frac`` of the optimiser steps, then follows ``schedule`` down to zero (the
    smoke and lab profiles use cosine). ``warmup_linear`` is ORCA's ``WarmupLR``
    (``src/task_configs.py:get_scheduler``), stepped once per micro-batch as ORCA does, with
    s the micro-batch count, W = ``warmup_epochs`` x batches per epoch and
    T = ``decay_epochs`` x batches per epoch:

    .. math:: f(s) = s / W \quad (s < W), \qquad f(s) = (T - s) / (T - W) \quad (s \ge W)

    so the factor starts at 0 and, where ``decay_epochs`` exceeds ``epochs``, ends above 0
    (the paper profile uses it).

    Accumulation (``grad_accum`` micro-batches per optimiser step), ``accum_semantics``:

    * ``"mean"`` (smoke and lab profiles): back-propagate ``loss / grad_accum``; the last,
      shorter window of an epoch also steps.
    * ``"sum"`` (paper profile; ORCA ``src/main.py:train_one_epoch`` and PaRe
      ``main_PaRe*.py``): back-propagate the raw loss, so the step uses the *sum* of the
      micro-batch gradients, and step every ``grad_accum`` micro-batches; the micro-batches
      left over at the end of an epoch are discarded, as the authors' loop does (it zeroes
      the gradients at the start of each epoch).

    ``clip_grad``: max gradient norm; ``None`` or a value <= 0 switches clipping off (ORCA's
    ``clip: -1``). ``betas``: Adam/AdamW betas (ORCA: (0.9, 0.98)); ``momentum``: SGD.
    """

    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-4
    body_lr: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    warmup_frac: float = 0.1
    warmup_epochs: float = 5.0
    decay_epochs: float | None = None
    grad_accum: int = 1
    accum_semantics: str = "mean"
    clip_grad: float | None = 1.0
    seed: int = 0
    num_threads: int | None = field(default_factory=lambda: default_num_threads())
    mixed_precision: str = "no"
    device: str = "auto"
    progress: bool = True
    keep_checkpoint: bool = False
    #: dry runs (``--limit-batches``): every epoch stops after this many micro-batches and
    #: evaluation reads this many batches; ``None``: all.
    limit_batches: int | None = None
    log_with: str | None = None  # "tensorboard" | "wandb" | "mlflow" (crossmodal.tracking)

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        if self.accum_semantics not in ACCUM_SEMANTICS:
            raise unknown_name("accumulation semantics", self.accum_semantics, ACCUM_SEMANTICS)
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InvalidInputError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.warmup_epochs < 0:
            raise InvalidInputError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.schedule == "warmup_linear":
            decay = self.decay_epochs if self.decay_epochs is not None else self.epochs
            if decay <= self.warmup_epochs:
                raise InvalidInputError(
                    f"warmup_linear needs decay_epochs ({decay}) > warmup_epochs "
                    f"({self.warmup_epochs}); raise decay_epochs or lower warmup_epochs")
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInputError(f"lr must be a positive number, got {self.lr}")
        if self.body_lr is not None and not (self.body_lr >= 0 and math.isfinite(self.body_lr)):
            raise InvalidInputError(f"body_lr must be a number >= 0 or None, got {self.body_lr}")
        if self.limit_batches is not None and self.limit_batches < 1:
            raise InvalidInputError(f"limit_batches must be >= 1 (or None for all), got "
                                    f"{self.limit_batches}")


class BatchBudget:
    """The ``--limit-batches`` budget of one stage: at most ``limit`` micro-batches in total.

    Stage-1 loops (ORCA's alignment, MoNA's meta-steps, RECRAFT's FA/FLD, the gap-adaptive
    embedder stages) wrap their outer loop in :meth:`loop` and their micro-batches in
    :meth:`each`; with ``limit=None`` both are the identity, so normal runs are unchanged::

        budget = ctx.budget()
        for epoch in budget.loop(range(epochs)):
            for batch in budget.each(batches):
                ...
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.used = limit, 0

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def loop(self, iterable: Iterable) -> Iterator:
        """The items of ``iterable`` until the budget is spent (outer loops: epochs)."""
        for item in iterable:
            if self.exhausted:
                return
            yield item

    def each(self, iterable: Iterable) -> Iterator:
        """The items of ``iterable``, each counted as one micro-batch, until the budget is spent."""
        for item in iterable:
            if self.exhausted:
                return
            self.used += 1
            yield item


def default_num_threads() -> int:
    """Torch's CPU threads for a run: ``$OMP_NUM_THREADS`` when set, else 1.

    One thread is the default because it measured fastest where the kit is developed (a
    shared 2-core machine: 4.5x faster than two threads on smoke_gunpoint) and because the
    notebooks use it, so a CLI run gives the notebooks' numbers to the last digit. On a
    dedicated many-core machine set ``OMP_NUM_THREADS`` (or ``-t num_threads=N``).
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(value.split(",")[0]) if value else 1  # OpenMP allows "4,2" (nested levels)
    except ValueError:
        return 1
    return max(n, 1)


def resolve_device(device: str = "auto") -> str:
    """The one device a run uses for every stage, decided once (``TrainConfig.device``).

    ``"auto"``: ``"cuda"`` when torch sees a GPU, else ``"cpu"``. Under a multi-process launch
    (``WORLD_SIZE`` > 1) a GPU device is this process's own, ``cuda:$LOCAL_RANK``, the device
    Accelerate gives ``fit``; so stage 1 (the runner places the model there before it) and
    fine-tuning run on the same device.
    """
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InvalidInputError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for but torch sees no GPU; use "
                                "-t device=cpu or auto")
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def seed_everything(seed: int, num_threads: int | None = None) -> None:
    """Seed python, numpy and torch; pin torch's CPU threads (determinism across runs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if num_threads:
        torch.set_num_threads(num_threads)


class EpochSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def to_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.as_tensor(x), torch.as_tensor(y))


def param_groups(params: Iterable[nn.Parameter], cfg: TrainConfig,
                 body: nn.Module | None = None) -> list[dict]:
    """Optimiser parameter groups: the new parts at ``cfg.lr``, ``body`` at ``cfg.body_lr``.

    With ``cfg.body_lr`` None (or no ``body``) there is one group at ``cfg.lr``. Frozen
    parameters are left out; empty groups are dropped.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise InvalidInputError("nothing to train: every parameter is frozen")
    if cfg.body_lr is None or body is None:
        return [{"params": params, "lr": cfg.lr, "name": "all"}]
    in_body = {id(p) for p in body.parameters()}
    new = [p for p in params if id(p) not in in_body]
    old = [p for p in params if id(p) in in_body]
    groups = [{"params": new, "lr": cfg.lr, "name": "new"},
              {"params": old, "lr": cfg.body_lr, "name": "body"}]
    return [g for g in groups if g["params"]]


def _forget_single_process_state(mixed_precision: str, world: int) -> None:
    """Let a second ``fit`` in one process use another precision.

    Accelerate keeps one process-wide state and refuses an ``Accelerator`` whose
    ``mixed_precision`` differs from the first one's (a notebook that runs bf16 after fp32
    would stop). In a single process nothing else depends on that state, so it is reset;
    under a multi-process launch it is left alone (the launcher set it).
    """
    from accelerate.state import AcceleratorState

    if world > 1 or not AcceleratorState._shared_state:
        return
    if str(AcceleratorState._shared_state.get("_mixed_precision", mixed_precision)) != \
            str(mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=True)


def make_optimizer(params: Iterable[nn.Parameter] | list[dict], cfg: TrainConfig,
                   body: nn.Module | None = None) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over ``params`` (grouped by :func:`param_groups`)."""
    params = list(params)
    if not (params and isinstance(params[0], dict)):
        params = param_groups(params, cfg, body)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    # fused=True: one kernel for the whole update. On one CPU thread the default (foreach)
    # AdamW update of MiniLM's 10.9M parameters took 82 ms a step and the fused one 16 ms
    # (measured), the largest single cost of a smoke step; the arithmetic is Adam's.
    betas = tuple(float(b) for b in cfg.betas)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay,
                                fused=True)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay,
                             fused=True)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                   batches_per_epoch: int | None = None):
    """The learning-rate schedule (see :class:`TrainConfig`).

    ``total_steps`` counts optimiser steps; ``warmup_linear`` counts micro-batches instead and
    needs ``batches_per_epoch`` (the caller steps it after every micro-batch).
    """
    if cfg.schedule == "warmup_linear":
        per_epoch = batches_per_epoch or 1
        w = int(cfg.warmup_epochs * per_epoch)
        t = int((cfg.decay_epochs if cfg.decay_epochs is not None else cfg.epochs) * per_epoch)

        def orca_warmup(step: int) -> float:
            if w > 0 and step < w:
                return step / max(1.0, w)
            return (t - step) / (t - w)

        return torch.optim.lr_scheduler.LambdaLR(opt, orca_warmup)
    warmup = int(cfg.warmup_frac * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class TrainState:
    """What a method's loss function may read: the epoch, step and totals."""

    epoch: int = 0
    step: int = 0
    epochs: int = 1
    steps_per_epoch: int = 1
    extra: dict = field(default_factory=dict)


#: A training step's loss, what a method gives ``fit``: ``loss(model, (x, y), state)``
#: returns a scalar tensor (unlike :data:`crossmodal.losses.PredictionLoss`, ``loss(pred, y)``).
StepLoss = Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor], TrainState], torch.Tensor]


def task_loss_fn(task) -> StepLoss:
    """The plain supervised loss of a task: ``loss(model(x), y)``."""
    loss = task_loss(task)

    def fn(model, batch, state):
        x, y = batch
        return loss(model(x), y)

    return fn


@torch.no_grad()
def predict(model: nn.Module, loader, accelerator=None,
            limit_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs and targets over a loader (its first ``limit_batches`` batches when
    given), gathered on the CPU as float tensors."""
    model.eval()
    outs, ys = [], []
    for i, (x, y) in enumerate(loader):
        if limit_batches is not None and i >= limit_batches:
            break
        if accelerator is not None:
            with accelerator.autocast():
                out = model(x)
        else:
            out = model(x)
        if accelerator is not None:
            out, y = accelerator.gather_for_metrics((out, y))
        outs.append(out.float().cpu())
        ys.append(y.cpu())
    return torch.cat(outs), torch.cat(ys)


def evaluate(model: nn.Module, task, loader, accelerator=None,
             limit_batches: int | None = None) -> float:
    """The task metric (in the paper's units) on a loader (or its first ``limit_batches``)."""
    pred, target = predict(model, loader, accelerator, limit_batches)
    return float(get_metric(task.metric).fn(pred, target))


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over all processes (no-op in one process).

    A parameter without a gradient on this process contributes zeros, so that every process
    takes part in the same collective with the same shapes.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def broadcast_model(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every process (no-op in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def resume_differences(saved: dict, cfg: TrainConfig, run_config: dict | None = None
                       ) -> list[str]:
    """The settings a checkpoint was written with that differ from this run's.

    ``saved`` is the checkpoint dict; compared are every training setting that changes the
    numbers (see :data:`crossmodal.runstate.NON_RESULT_TRAIN_KEYS`) and, when both sides
    have one, the run's full configuration fingerprint (task, method, options, seed, ...).
    """
    diffs = config_differences(
        {f"train.{k}": v for k, v in saved.get("config", {}).items()
         if k not in NON_RESULT_TRAIN_KEYS},
        {f"train.{k}": v for k, v in asdict(cfg).items()})
    if run_config is not None and "run_config" in saved:
        diffs += [d for d in config_differences(fingerprint_of_checkpoint(saved), run_config)
                  if d not in diffs]
    return diffs


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, epoch: int, model: nn.Module, optimizer, scheduler,
                    history: list[dict], cfg: TrainConfig, extra_state: dict | None,
                    run_config: dict | None) -> None:
    """The state after ``epoch`` (model, optimiser, schedule, history, settings, the method's
    ``extra_state``, the run's fingerprint), written atomically (a crash leaves the old one)."""
    _atomic_save({
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": history,
        "config": asdict(cfg),
        "extra_state": extra_state or {},
        **({"run_config": run_config} if run_config is not None else {}),
    }, path)


def restore_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, cfg: TrainConfig,
                       run_config: dict | None, extra_state: dict | None
                       ) -> tuple[list[dict], int]:
    """Load a checkpoint into ``model``, ``optimizer`` and ``scheduler`` (and ``extra_state``);
    returns its history and the epoch to continue from.

    A checkpoint written with other settings is refused, naming them (its results would be
    labelled with settings that never ran). ``metrics.jsonl`` beside it is rewritten from the
    checkpoint's history: a crash between the two writes may have left later epochs in it.
    """
    ckpt = load_checkpoint(path)
    diffs = resume_differences(ckpt, cfg, run_config)
    if diffs:
        raise mismatch_error(path, diffs)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    history = ckpt["history"]
    (path.parent / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    if extra_state is not None:
        extra_state.update(ckpt.get("extra_state", {}))
    return history, ckpt["epoch"] + 1


def fit(
    model: nn.Module,
    task,
    splits: dict,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    loss_fn: StepLoss | None = None,
    params: Iterable[nn.Parameter] | None = None,
    resume: bool = False,
    extra_state: dict | None = None,
    on_epoch_start: Callable[[TrainState], None] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    run_config: dict | None = None,
    remove_checkpoint: bool = True,
) -> list[dict]:
    """Train ``model`` on ``splits["train"]``, evaluating ``task.metric`` on ``splits["test"]``.

    Parameters
    ----------
    model : the network; a method may have frozen parts of it.
    task : the :class:`~crossmodal.tasks.TaskSpec` (loss, metric).
    splits : ``{"train": (x, y), "test": (x, y)}`` numpy arrays.
    cfg : the :class:`TrainConfig`.
    out_dir : where ``metrics.jsonl`` and ``checkpoint.pt`` go (None: nothing written).
    loss_fn : ``loss_fn(model, (x, y), state) -> scalar``; default: the task loss.
    params : parameters to optimise; default: those with ``requires_grad``.
    resume : continue from ``out_dir/checkpoint.pt`` if it exists.
    extra_state : a dict saved in (and restored from) the checkpoint, for method state.
    on_epoch_start, on_epoch_end : callbacks (``on_epoch_end`` receives the epoch record).
    run_config : the run's configuration fingerprint
        (:func:`crossmodal.runstate.run_fingerprint`), saved in the checkpoint; resuming
        refuses a checkpoint whose fingerprint or training settings differ, naming the keys.
    remove_checkpoint : delete the checkpoint when training is complete (unless
        ``cfg.keep_checkpoint``). :func:`crossmodal.runner.run` passes False and deletes it
        itself only after results.json is written, so a crash in between loses nothing.

    Returns
    -------
    The per-epoch records: ``{"epoch", "train_loss", "test_metric", "lr", "seconds"}``.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    from tqdm.auto import tqdm

    cfg.validate()
    seed_everything(cfg.seed, cfg.num_threads)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_dir(out)  # a file or a read-only folder: a clear error, not a traceback
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    loss_fn = loss_fn or task_loss_fn(task)

    device = resolve_device(cfg.device)  # the run's one device (stage 1 ran there too)
    cpu = device == "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # one global batch of cfg.batch_size split across processes: the one-process update
    split = world > 1 and cfg.batch_size % world == 0 and cfg.eval_batch_size % world == 0
    if cfg.log_with:
        tracking.check_tracker(cfg.log_with)
    _forget_single_process_state(cfg.mixed_precision, world)
    accelerator = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=split),
                              log_with=cfg.log_with or None,
                              project_config=tracking.project_config(out, cfg.log_with))
    train_ds, test_ds = to_dataset(*splits["train"]), to_dataset(*splits["test"])
    sampler = EpochSampler(len(train_ds), cfg.seed)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler)
    test_loader = DataLoader(test_ds, batch_size=cfg.eval_batch_size, shuffle=False)

    optimizer = make_optimizer(params if params is not None else model.parameters(), cfg,
                               body=getattr(model, "body", None))
    # micro-batches per epoch (fewer in a dry run, --limit-batches)
    n_batches = len(train_loader) if cfg.limit_batches is None else min(len(train_loader),
                                                                         cfg.limit_batches)
    summed = cfg.accum_semantics == "sum"
    dry_run = cfg.limit_batches is not None
    if summed and n_batches < cfg.grad_accum and not dry_run:
        raise InvalidInputError(
            f"grad_accum={cfg.grad_accum} with summed accumulation needs at least that many "
            f"batches per epoch, but the training split gives {n_batches} (batch size "
            f"{cfg.batch_size}): no optimiser step would happen. Lower grad_accum or the batch "
            "size, or use more training data")
    # summed (the authors' loop) drops the partial window; a dry run still steps on it so
    # that the optimiser step is exercised
    drop_partial = summed and not dry_run
    steps_per_epoch = (n_batches // cfg.grad_accum if drop_partial
                       else math.ceil(n_batches / cfg.grad_accum))
    per_batch_schedule = cfg.schedule == "warmup_linear"  # ORCA steps it every micro-batch
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch * cfg.epochs, n_batches)
    # the model stays unwrapped (see the module docstring): placed here, synced by hand
    model = model.to(accelerator.device)
    broadcast_model(model)
    optimizer, train_loader, test_loader = accelerator.prepare(
        optimizer, train_loader, test_loader
    )

    history: list[dict] = []
    start_epoch = 0
    if resume and ckpt_path is not None and ckpt_path.exists():
        history, start_epoch = restore_checkpoint(
            ckpt_path, accelerator.unwrap_model(model), optimizer, scheduler, cfg, run_config,
            extra_state)
    elif out is not None and (out / "metrics.jsonl").exists():
        accelerator.wait_for_everyone()  # every process has seen the old log before it goes
        if accelerator.is_main_process:
            (out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log

    state = TrainState(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch)
    if cfg.log_with:
        tracking.start(accelerator, cfg.log_with, {"task": task.key, **asdict(cfg)}, out,
                       out.name)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):
            # Accelerate's loader re-sets the sampler's epoch to its own iteration count at
            # each __iter__, which restarts at 0 in a resumed process: give it the true epoch.
            train_loader.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout etc. depend on (seed, epoch)
        state.epoch = epoch
        if on_epoch_start is not None:
            on_epoch_start(state)
        model.train()
        optimizer.zero_grad(set_to_none=True)  # a discarded partial window does not carry over
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not cfg.progress)
        for step, (x, y) in enumerate(bar):
            if step >= n_batches:
                break
            state.step = step
            with accelerator.autocast():  # mixed precision for the method's own forwards
                loss = loss_fn(model, (x, y), state)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                    f" (lr {cfg.lr}). Lower the learning rate, keep gradient clipping on, or "
                    "check the inputs for extreme values"
                    + (f"; the last good checkpoint is kept in {ckpt_path}"
                       if ckpt_path is not None and ckpt_path.exists() else "")
                )
            accelerator.backward(loss if summed else loss / cfg.grad_accum)
            last = step + 1 == n_batches
            if (step + 1) % cfg.grad_accum == 0 or (last and not drop_partial):
                average_gradients(p for g in optimizer.param_groups for p in g["params"])
                if cfg.clip_grad is not None and cfg.clip_grad > 0:
                    # the norm of what this optimiser updates: a frozen part's stale gradient
                    # (e.g. of a stage before fine-tuning) is not in it
                    accelerator.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], cfg.clip_grad)
                if cfg.log_with:  # the global optimiser step: a resumed run continues it
                    accelerator.log({"train/loss": loss.item(),
                                     "train/lr": optimizer.param_groups[0]["lr"]},
                                    step=epoch * steps_per_epoch + step // cfg.grad_accum)
                optimizer.step()
                if not per_batch_schedule:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if per_batch_schedule:
                with warnings.catch_warnings():
                    # ORCA steps WarmupLR every micro-batch, also before the first optimiser
                    # step of an accumulation window; torch warns about that order
                    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                    scheduler.step()
            total += loss.item() * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        metric = evaluate(model, task, test_loader, accelerator, cfg.limit_batches)
        record = {
            "epoch": epoch + 1,
            "train_loss": total / max(count, 1),
            "test_metric": metric,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if cfg.log_with:
            accelerator.log({f"epoch/{k}": record[k] for k in
                             ("train_loss", "test_metric", "lr", "seconds")},
                            step=(epoch + 1) * steps_per_epoch)
        if out is not None and accelerator.is_main_process:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(ckpt_path, epoch, accelerator.unwrap_model(model), optimizer,
                            scheduler, history, cfg, extra_state, run_config)
        if on_epoch_end is not None:
            on_epoch_end(record)
    if cfg.log_with:
        accelerator.end_training()  # flush and close the trackers
    accelerator.wait_for_everyone()
    if (remove_checkpoint and ckpt_path is not None and not cfg.keep_checkpoint
            and accelerator.is_main_process):
        ckpt_path.unlink(missing_ok=True)  # the run is complete; results.json and metrics remain
    return history
