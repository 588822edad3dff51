"""One loop for every stage before fine-tuning: optimiser, progress, freezing, device, checks.

The methods' stage-1 loops (ORCA's alignment, RECRAFT's recalibration and embedder training,
the gap-adaptive embedder-only and contrastive stages, MoNA's meta-steps) differ only in
their paper's math: what the loss is, and whether a step follows every micro-batch (RECRAFT,
gap-adaptive) or a whole epoch of accumulated per-class gradients (ORCA). Everything around
the math lives here, so that each method file keeps only the paper's part::

    stage = Stage("ORCA alignment", ctx, model.embedder.parameters(), lr=cfg.align_lr,
                  fix="lower align_lr or check the inputs")
    with stage.training(model, model.embedder):   # only the embedder's parameters train
        for epoch in stage.epochs(cfg.align_epochs):  # progress bar + --limit-batches
            stage.zero_grad()
            for c in stage.batches(classes):          # one micro-batch each
                stage.backward(loss_of(c))            # non-finite check, then backward
            stage.optimizer_step()

or, with one optimiser step per micro-batch, ``stage.step(loss)``.

Device: every stage runs on the run's device, ``ctx.device``, which :func:`crossmodal.runner.run`
resolves once (:func:`crossmodal.training.resolve_device`, the same decision ``fit`` makes)
before stage 1; :meth:`Stage.training` puts the model there and :meth:`Stage.put` moves a
batch. Each stage appends ``{"stage", "device", "parameter_devices"}`` to ``ctx.stages``, so
a test (and ``results.json``'s ``method_report["stages"]``) shows where it ran.

Numbers: the optimiser is the one the loop used before (Adam, torch's default
implementation), and no RNG is drawn here, so a fixed seed gives the same numbers as the
hand-written loops did.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from crossmodal.errors import InvalidInputError, NonFiniteLossError
from crossmodal.training import BatchBudget

__all__ = ["STAGE_OPTIMIZERS", "Stage", "StageCache"]

STAGE_OPTIMIZERS = ("adam", "adamw", "sgd")


class Stage:
    """The plumbing of one stage-1 training loop.

    Parameters
    ----------
    name : shown on the progress bar and in errors (``"ORCA alignment"``).
    ctx : the run's :class:`~crossmodal.methods.base.RunContext` (device, progress,
        ``--limit-batches``); ``None``: a helper called outside a run (no budget, no bar,
        the parameters' own device).
    params : the parameters the stage's optimiser updates.
    lr : its learning rate.
    optimizer : ``"adam"`` (every stage's default), ``"adamw"`` (both with ``betas``) or
        ``"sgd"`` (with ``momentum``); ``weight_decay`` for all three.
    scheduler : ``scheduler(optimizer) -> LRScheduler`` stepped after every optimiser step
        (None: a constant rate).
    fix : how to fix a non-finite loss, for the error message (e.g. "lower align_lr").
    progress : override ``ctx.progress`` (loops that are too short for a bar pass False).
    """

    def __init__(self, name: str, ctx: Any | None, params: Iterable[nn.Parameter], *,
                 lr: float, optimizer: str = "adam", momentum: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
                 scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
                 fix: str = "lower the stage's learning rate or check the inputs",
                 progress: bool | None = None) -> None:
        self.name, self.ctx, self.lr, self.fix = name, ctx, lr, fix
        self.params = list(params)
        if not self.params:
            raise InvalidInputError(f"{name}: no parameter to train")
        betas = (float(betas[0]), float(betas[1]))
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.params, lr=lr, betas=betas, weight_decay=weight_decay)
        elif optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=betas,
                                               weight_decay=weight_decay)
        elif optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=momentum,
                                             weight_decay=weight_decay)
        else:
            raise InvalidInputError(f"{name}: optimizer must be one of {STAGE_OPTIMIZERS}, got "
                                    f"{optimizer!r}")
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.budget = ctx.budget() if ctx is not None else BatchBudget(None)
        self.progress = (progress if progress is not None
                         else bool(ctx.progress) if ctx is not None else False)
        self.device = (torch.device(ctx.device) if ctx is not None
                       else self.params[0].device)
        self.epoch, self.step_count, self.optimizer_steps = 0, 0, 0

    # ------------------------------------------------------------------ device, freezing
    def put(self, *tensors: Tensor) -> Tensor | tuple[Tensor, ...]:
        """``tensors`` on the stage's device (one tensor: that tensor)."""
        out = tuple(t.to(self.device) for t in tensors)
        return out[0] if len(out) == 1 else out

    @contextmanager
    def training(self, model: nn.Module | None = None, *trainable: nn.Module,
                 mode: str | None = None) -> Iterator[Stage]:
        """Place ``model`` on the device and, while the stage runs, let only ``trainable``
        (default: the optimiser's parameters) require gradients; restore every parameter's
        ``requires_grad`` after. ``mode``: ``"train"`` or ``"eval"`` for ``model`` (None: its
        current mode). The stage is recorded in ``ctx.stages``."""
        saved: list[tuple[nn.Parameter, bool]] = []
        if model is not None:
            model.to(self.device)
            keep = ({id(p) for m in trainable for p in m.parameters()} if trainable
                    else {id(p) for p in self.params})
            saved = [(p, p.requires_grad) for p in model.parameters()]
            for p, _ in saved:
                p.requires_grad_(id(p) in keep)
            if mode is not None:
                model.train(mode == "train")
        self._record(model)
        try:
            yield self
        finally:
            for p, was in saved:
                p.requires_grad_(was)
            # no gradient of this stage outlives it (fine-tuning starts from none; a stale one
            # on a part that fine-tuning freezes would otherwise linger in the model)
            for p in (model.parameters() if model is not None else self.params):
                p.grad = None

    def _record(self, model: nn.Module | None) -> None:
        if self.ctx is None or not hasattr(self.ctx, "stages"):
            return
        devices = {str(p.device) for p in self.params}
        if model is not None:
            devices |= {str(t.device) for t in [*model.parameters(), *model.buffers()]}
        self.ctx.stages.append({"stage": self.name, "device": str(self.device),
                                "parameter_devices": sorted(devices)})

    # ---------------------------------------------------------------------------- loops
    def epochs(self, n: int) -> Iterator[int]:
        """``range(n)`` with a progress bar, until the ``--limit-batches`` budget is spent."""
        bar = tqdm(range(n), desc=self.name, disable=not self.progress, leave=False)
        for epoch in self.budget.loop(bar):
            self.epoch, self.step_count = epoch, 0
            yield epoch

    def steps(self, n: int) -> Iterator[int]:
        """``range(n)`` with a progress bar, each item one micro-batch of the budget
        (loops whose every iteration is one step: MoNA's meta-steps)."""
        bar = tqdm(range(n), desc=self.name, disable=not self.progress, leave=False)
        for step in self.budget.each(bar):
            self.step_count = step + 1
            yield step

    def batches(self, iterable: Iterable) -> Iterator:
        """The items of ``iterable``, each one micro-batch of the budget (counted per epoch
        for the error message)."""
        for item in self.budget.each(iterable):
            self.step_count += 1
            yield item

    # ---------------------------------------------------------------------------- steps
    def check(self, loss: Tensor) -> Tensor:
        """``loss``, or a :class:`~crossmodal.errors.NonFiniteLossError` naming the stage,
        its epoch and micro-batch, and how to fix it."""
        if not torch.isfinite(loss).all():
            value = loss.item() if loss.numel() == 1 else "non-finite"
            raise NonFiniteLossError(
                f"{self.name}: the loss became {value} at epoch {self.epoch + 1}, "
                f"micro-batch {max(self.step_count, 1)} (lr {self.lr:g}). {self.fix}")
        return loss

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor) -> None:
        """Check ``loss`` and accumulate its gradients (no optimiser step)."""
        self.check(loss).backward()

    def optimizer_step(self) -> None:
        """One optimiser step on the accumulated gradients, then the scheduler's."""
        self.optimizer.step()
        self.optimizer_steps += 1
        if self.scheduler is not None:
            self.scheduler.step()

    def step(self, loss: Tensor) -> float:
        """Check, zero the gradients, back-propagate ``loss`` and step; returns its value."""
        self.check(loss)
        self.zero_grad()
        loss.backward()
        self.optimizer_step()
        return loss.item()


# ------------------------------------------------------------------ sharing a stage's result


def _feed(h: Any, part: Any) -> None:
    """Feed ``part`` into the hash ``h``: arrays and tensors by dtype, shape and bytes,
    modules by their state (names, values), mappings by sorted key, the rest by ``repr``."""
    if isinstance(part, nn.Module):
        h.update(type(part).__name__.encode())
        part = part.state_dict()
    if isinstance(part, dict):
        for k in sorted(part, key=str):
            h.update(repr(k).encode())
            _feed(h, part[k])
    elif isinstance(part, (list, tuple)):
        h.update(f"seq{len(part)}".encode())
        for item in part:
            _feed(h, item)
    elif isinstance(part, Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(part, np.ndarray):
        a = np.ascontiguousarray(part)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    else:
        h.update(repr(part).encode())


class StageCache:
    """An in-process cache of a stage-1 result, keyed by a fingerprint of its inputs.

    Variants of one method that differ only after stage 1 (ORCA's freeze ablations: one
    alignment, four fine-tunings) redo an identical stage; with the cache the second variant
    loads the first one's trained state instead. The key must cover *everything* the stage
    reads (:meth:`key` hashes arrays, tensors and modules by value), so that a hit is the
    stage's own result, bit for bit. At most ``maxsize`` entries (the oldest goes first);
    ``enabled = False`` (or ``CROSSMODAL_STAGE_CACHE=0``) turns it off; ``hits``/``misses``
    count lookups.
    """

    def __init__(self, name: str, maxsize: int = 8) -> None:
        self.name, self.maxsize = name, maxsize
        self.enabled = os.environ.get("CROSSMODAL_STAGE_CACHE", "1") != "0"
        self.hits = self.misses = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()

    @staticmethod
    def key(**parts: Any) -> str:
        """A fingerprint of ``parts`` (blake2b over their values, see :func:`_feed`)."""
        h = hashlib.blake2b(digest_size=20)
        _feed(h, parts)
        return h.hexdigest()

    def get(self, key: str) -> Any | None:
        """A deep copy of the entry of ``key`` (None when absent or disabled)."""
        if not self.enabled:
            return None
        if key not in self._entries:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return copy.deepcopy(self._entries[key])

    def put(self, key: str, value: Any) -> None:
        """Store a deep copy of ``value`` (tensors: detached CPU copies are the caller's job)."""
        if not self.enabled:
            return
        self._entries[key] = copy.deepcopy(value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)
