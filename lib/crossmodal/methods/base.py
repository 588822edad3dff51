"""The method interface and registry (PEFT-style: a config dataclass per method, by name).

A method changes three things around the shared training loop, never the loop itself:

1. ``prepare(model, task, ctx)``: structural changes that must exist before a checkpoint is
   loaded (attach extra modules to ``model.extras``, swap a part).
2. ``before_finetune(model, task, splits, ctx)``: a stage before fine-tuning (ORCA's distribution
   alignment, MoNA's meta-learned embedder, ...). Skipped when a run resumes from a
   fine-tuning checkpoint, because its result is in the checkpoint. Returns a JSON-able dict
   that goes into ``results.json`` under ``method_report``.
3. ``trainable_parameters(model)`` and ``loss_fn(task)``: what the fine-tuning stage optimises
   and with which loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.training import BatchBudget, StepLoss, task_loss_fn


@dataclass
class RunContext:
    """What a method may need to know about the run."""

    profile: str = "smoke"
    seed: int = 0
    out_dir: Path | None = None
    progress: bool = True
    device: str = "cpu"
    data_root: Path | None = None
    #: dry-run switches (``--limit-batches``, ``--batch-size``): each stage-1 loop stops
    #: after ``limit_batches`` micro-batches in total, and uses micro-batches of
    #: ``batch_size`` samples instead of its own; ``None``: the method's settings.
    limit_batches: int | None = None
    batch_size: int | None = None
    #: where each stage-1 loop ran (:class:`crossmodal.methods._stage.Stage` appends
    #: ``{"stage", "device", "parameter_devices"}``); the runner records it in results.json
    stages: list[dict[str, Any]] = field(default_factory=list)

    def place(self, module: nn.Module) -> nn.Module:
        """``module`` on the run's device (every stage runs there; ``fit`` uses the same)."""
        return module.to(self.device)

    def budget(self) -> BatchBudget:
        """A fresh micro-batch budget for one stage (unlimited unless ``limit_batches``)."""
        return BatchBudget(self.limit_batches)

    def stage_batch_size(self, own: int) -> int:
        """The micro-batch size of a stage: the ``--batch-size`` override, else ``own``."""
        return self.batch_size if self.batch_size is not None else own


@dataclass
class MethodConfig:
    """Base class of the per-method config dataclasses."""


class Method:
    """Base class: plain fine-tuning of every parameter with the task loss (NFT)."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    paper: ClassVar[str] = ""

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    def body_name(self, default: str) -> str:
        """The body this method uses, given the profile's default body."""
        return default

    def prepare(self, model: nn.Module, task, ctx: RunContext) -> None:
        """Structural changes before any checkpoint is loaded (default: none)."""

    def before_finetune(self, model: nn.Module, task, splits: dict,
                        ctx: RunContext) -> dict[str, Any]:
        """Stages before fine-tuning (default: none)."""
        return {}

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the fine-tuning stage optimises (default: all)."""
        return list(model.parameters())

    def loss_fn(self, task) -> StepLoss:
        """The fine-tuning loss (default: the task loss)."""
        return task_loss_fn(task)


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by ``cls.name``."""
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def method_options(name: str) -> list[dict[str, Any]]:
    """A registered method's options as data: ``name``, ``type``, ``default`` and ``help`` of
    every field of its config (the help text is the field's ``metadata["help"]``;
    ``crossmodal methods`` prints it)."""
    if name not in METHODS:
        raise unknown_name("method", name, list(METHODS))
    config = METHODS[name].config_class()
    out = []
    for f in fields(config):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append({"name": f.name, "type": kind, "default": getattr(config, f.name),
                    "help": f.metadata.get("help", "")})
    return out


def get_method(name: str, **overrides: Any) -> Method:
    """Instantiate a registered method, with config fields overridden by keyword."""
    if name not in METHODS:
        raise unknown_name("method", name, list(METHODS))
    cls = METHODS[name]
    valid = {f.name for f in fields(cls.config_class)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise InvalidInputError(
            f"method {name!r} has no option(s) {', '.join(bad)}; its options are: "
            f"{', '.join(sorted(valid)) or '(none)'}"
        )
    return cls(cls.config_class(**overrides))
