"""ORCA (Shen et al., ICML 2023): align, then refine.

1. **Dimensionality alignment**: a task-specific embedder (``crossmodal.embedders``) and
   head (``crossmodal.heads``) around the pretrained body (done by ``build_model``).
2. **Distribution alignment**: train only the embedder f^t to minimise a distance between
   the embedded target data and a proxy dataset of the body's pretraining modality, both in
   the body's input space:

       min_{f^t}  sum_c  w_c * D( {(f^s(x^s_i), y^s_i)},  {(f^t(x^t_j), c) : y^t_j = c} )

   where f^s is the body's own pretrained input layer (RoBERTa's word + position embeddings
   for text proxies, Swin's pretrained patch-embedding stem for image proxies), features are
   mean-pooled over the sequence, w_c is the frequency of target class c, and D is one of
   ORCA's objectives: the OTDD (default; ORCA's call: exact inner OT, debiased outer *and*
   inner, p = 2, entreg 0.1, label distances constant in the gradient), ORCA's MMD
   (``"mmd"``) or ORCA's pairwise L2 (``"l2"``), see
   :mod:`crossmodal.distances._orca_scores`. Two scores of the kit's own are kept under
   names that do not claim to be ORCA's: ``"mean_l2"`` (squared distance of the means) and
   ``"mmd_multiscale"`` (the kit's unbiased multi-scale MMD, median-heuristic bandwidths,
   against the whole proxy). As in ORCA's code, each epoch scores every target class
   against the whole labelled proxy, accumulates the gradients of the weighted sum, and
   takes one optimiser step; at most ``align_samples_per_class`` target samples per class.
   Targets that are not single class labels (dense/regression/PDE, and the multi-label
   targets of DeepSEA and FSD50K) get pseudo-labels from k-means (k = 10) on the flattened
   targets, as ORCA does (``infer_label=True`` in its ``get_config`` for all of them).
   The budget (``align_epochs``, ``align_samples_per_class``) defaults to the kit's small
   values; the paper profile takes ORCA's per task from the protocol table
   (:mod:`crossmodal.protocol`: 60 epochs, NinaPro 100; 128 samples, PSICOV/DeepSEA 64).
   The stage runs on the run's device (``RunContext.device``).
3. **Refine**: fine-tune with the task loss; ``freeze`` keeps parts fixed (the ablations of
   García-de-Herreros et al.: freezing the embedder, the body, or both).

Choices where the papers leave room (documented here and in the report):

* ORCA's embedder optimiser (``src/task_configs.py:get_optimizer_scheduler(module=
  'embedder')``) is the fine-tuning optimiser (kind, betas, weight decay, momentum) with 10x
  its learning rate when that is <= 1e-3, and the ``no_warmup_scheduler`` StepLR: x0.2 after
  alignment epochs 20, 40 and 60 (``get_scheduler``: factor 0.2^#{m : epoch > m}), one step
  per epoch. The paper profile takes exactly that (``align_optimizer``, ``align_lr``,
  ``align_betas``, ``align_weight_decay``, ``align_momentum``, ``align_lr_steps``,
  ``align_lr_gamma``, from :mod:`crossmodal.protocol`; the paper itself gives no embedder
  optimiser). The kit's default (smoke and lab) is Adam at ``align_lr`` 1e-3, constant, so
  that alignment does not depend on the fine-tuning settings.
* Variants that share the alignment (same task, seed, data, proxy, embedder and body
  initialisation and alignment settings, e.g. the freeze ablations) share one alignment in a
  process: :data:`ALIGNMENT_CACHE` keeps the aligned embedder and its report.
* Proxy features are mean-pooled over real (non-padding) tokens.
* ``otdd_before``/``otdd_after`` are measured on one fixed target subset with its true (or
  pseudo) labels against the proxy (the joint OTDD, not the per-class training loss), with
  the same seed, so that the two numbers are comparable.
* In the smoke profile the proxy is ``pydoc_topics`` (offline stand-in for CoNLL-2003).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.data.proxies import default_proxy, load_proxy
from crossmodal.distances import OTDDSource, mmd, orca_mmd, orca_pairwise_l2
from crossmodal.errors import InvalidInputError
from crossmodal.features import pooled_outputs, source_features
from crossmodal.methods._stage import STAGE_OPTIMIZERS, Stage, StageCache
from crossmodal.methods.base import Method, MethodConfig, RunContext, register_method

ALIGN_SCORES = ("otdd", "mmd", "l2", "mean_l2", "mmd_multiscale", "none")
FREEZE_MODES = ("none", "embedder", "body", "both")
MULTILABEL_LABELS = ("kmeans", "first_positive")

#: Aligned embedders of this process, keyed by everything the alignment reads
#: (:meth:`ORCA.alignment_key`): a second variant with the same alignment (another
#: ``freeze``) loads it instead of aligning again. ``ALIGNMENT_CACHE.enabled = False`` or
#: ``CROSSMODAL_STAGE_CACHE=0`` turns it off.
ALIGNMENT_CACHE = StageCache("ORCA alignment")
#: ORCAConfig fields that act after the alignment (they do not change it)
AFTER_ALIGNMENT = ("freeze",)


@dataclass
class ORCAConfig(MethodConfig):
    """ORCA's switches.

    align_score : ``"otdd"`` | ``"mmd"`` | ``"l2"`` (ORCA's three objectives) |
        ``"mean_l2"`` | ``"mmd_multiscale"`` (the kit's own) | ``"none"`` (no alignment: NFT
        with ORCA's architecture).
    align_epochs : embedder-training epochs (one optimiser step each, as in ORCA).
    align_lr : learning rate of the embedder during alignment.
    align_optimizer : ``"adam"`` (kit default), ``"adamw"`` or ``"sgd"``; the paper profile:
        ORCA's fine-tuning optimiser of the task.
    align_betas, align_weight_decay, align_momentum : that optimiser's betas (Adam/AdamW),
        weight decay and momentum (SGD).
    align_lr_steps, align_lr_gamma : StepLR of ORCA's ``no_warmup_scheduler``: the rate is
        multiplied by ``gamma`` after each of these alignment epochs (ORCA: (20, 40, 60),
        0.2); ``()``: constant (kit default).
    align_samples_per_class : at most this many target samples per class and epoch.
    proxy : proxy dataset name (None: the body's default, see ``crossmodal.proxies``).
    proxy_samples : at most this many proxy samples (ORCA: 5000).
    otdd_inner : ``"exact"`` or ``"gaussian"`` (ORCA's ``otdd-exact`` / ``otdd-gaussian``).
    detach_label_distances : treat the label-to-label distances W(y, y') as constants in
        the gradient (as ORCA's code does); the feature term still carries the gradient.
    otdd_inner_debiased : debias the exact label-to-label distances (ORCA's call passes
        ``inner_ot_debiased=True``; microsoft/otdd's and the kit's ``otdd`` default is False).
    freeze : during refinement, freeze ``"none"``, the ``"embedder"``, the ``"body"`` or
        ``"both"`` (then only the head trains).
    pseudo_label_k : k of the k-means pseudo-labels for continuous and multi-label targets.
    multilabel_labels : ``"kmeans"`` (ORCA) or ``"first_positive"`` (the index of the first
        positive label, 0 when none: the kit's former approximation).
    eval_samples : target samples used for ``otdd_before``/``otdd_after``.
    """

    align_score: str = field(
        default="otdd",
        metadata={"help": "``\"otdd\"`` | ``\"mmd\"`` | ``\"l2\"`` (ORCA's three objectives) | "
                          "``\"mean_l2\"`` | ``\"mmd_multiscale\"`` (the kit's own) | "
                          "``\"none\"`` (no alignment: NFT with ORCA's architecture)."})
    align_epochs: int = field(
        default=10,
        metadata={"help": "embedder-training epochs (one optimiser step each, as in ORCA)."})
    align_lr: float = field(
        default=1e-3,
        metadata={"help": "learning rate of the embedder during alignment."})
    align_optimizer: str = field(
        default="adam",
        metadata={"help": "``\"adam\"`` (kit default), ``\"adamw\"`` or ``\"sgd\"``; the paper "
                          "profile: ORCA's fine-tuning optimiser of the task."})
    align_betas: tuple[float, float] = field(
        default=(0.9, 0.999),
        metadata={"help": "betas of the alignment optimiser (Adam/AdamW)."})
    align_weight_decay: float = field(
        default=0.0,
        metadata={"help": "weight decay of the alignment optimiser."})
    align_momentum: float = field(
        default=0.0,
        metadata={"help": "momentum of the alignment optimiser (SGD)."})
    align_lr_steps: tuple[int, ...] = field(
        default=(),
        metadata={"help": "StepLR of ORCA's no_warmup_scheduler: the rate is multiplied by "
                          "align_lr_gamma after each of these alignment epochs (ORCA: (20, 40, "
                          "60)); (): constant."})
    align_lr_gamma: float = field(default=0.2, metadata={"help": "the StepLR factor (ORCA: 0.2)."})
    align_samples_per_class: int = field(
        default=128,
        metadata={"help": "at most this many target samples per class and epoch."})
    proxy: str | None = field(
        default=None,
        metadata={"help": "proxy dataset name (None: the body's default, "
                          "crossmodal.data.proxies.default_proxy)."})
    proxy_samples: int = field(
        default=5000,
        metadata={"help": "at most this many proxy samples (ORCA: 5000)."})
    otdd_inner: str = field(
        default="exact",
        metadata={"help": "``\"exact\"`` or ``\"gaussian\"`` (ORCA's ``otdd-exact`` / "
                          "``otdd-gaussian``)."})
    detach_label_distances: bool = field(
        default=True,
        metadata={"help": "treat the label-to-label distances W(y, y') as constants in the "
                          "gradient (as ORCA's code does); the feature term still carries the "
                          "gradient."})
    otdd_inner_debiased: bool = field(
        default=True,
        metadata={"help": "debias the exact label-to-label distances (ORCA's call passes "
                          "``inner_ot_debiased=True``; microsoft/otdd's and the kit's ``otdd`` "
                          "default is False)."})
    freeze: str = field(
        default="none",
        metadata={"help": "during refinement, freeze ``\"none\"``, the ``\"embedder\"``, the "
                          "``\"body\"`` or ``\"both\"`` (then only the head trains)."})
    pseudo_label_k: int = field(
        default=10,
        metadata={"help": "k of the k-means pseudo-labels for continuous and multi-label targets."})
    eval_samples: int = field(
        default=500,
        metadata={"help": "target samples used for ``otdd_before``/``otdd_after``."})
    multilabel_labels: str = field(
        default="kmeans",
        metadata={"help": "``\"kmeans\"`` (ORCA) or ``\"first_positive\"`` (the index of the "
                          "first positive label, 0 when none: the kit's former approximation)."})

    def __post_init__(self) -> None:
        if self.align_score not in ALIGN_SCORES:
            raise InvalidInputError(f"align_score must be one of {ALIGN_SCORES}, "
                                    f"got {self.align_score!r}")
        if self.freeze not in FREEZE_MODES:
            raise InvalidInputError(f"freeze must be one of {FREEZE_MODES}, got {self.freeze!r}")
        if self.align_epochs < 0:
            raise InvalidInputError("align_epochs must be >= 0")
        if self.align_samples_per_class < 2:
            raise InvalidInputError("align_samples_per_class must be >= 2 (a class needs two "
                                    f"samples to have a distribution), got "
                                    f"{self.align_samples_per_class}")
        if self.align_optimizer not in STAGE_OPTIMIZERS:
            raise InvalidInputError(f"align_optimizer must be one of {STAGE_OPTIMIZERS}, got "
                                    f"{self.align_optimizer!r}")
        self.align_betas = tuple(float(b) for b in self.align_betas)
        self.align_lr_steps = tuple(int(m) for m in np.atleast_1d(self.align_lr_steps))
        if not (self.align_lr > 0 and 0 < self.align_lr_gamma <= 1):
            raise InvalidInputError("align_lr must be > 0 and align_lr_gamma in (0, 1], got "
                                    f"{self.align_lr} and {self.align_lr_gamma}")
        if self.multilabel_labels not in MULTILABEL_LABELS:
            raise InvalidInputError(f"multilabel_labels must be one of {MULTILABEL_LABELS}, "
                                    f"got {self.multilabel_labels!r}")


def pseudo_labels(y: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """k-means cluster ids of flattened continuous targets (ORCA's ``infer_labels``)."""
    from sklearn.cluster import KMeans

    flat = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    k = min(k, len(np.unique(flat, axis=0)))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(flat).astype(np.int64)


def alignment_labels(task, y: np.ndarray, k: int = 10, seed: int = 0,
                     multilabel: str = "kmeans") -> np.ndarray:
    """Class labels to align with (OTDD needs one label per sample).

    Classification: the labels. Dense/continuous and multi-label targets: k-means pseudo-labels
    on the flattened targets (ORCA's ``infer_labels``, k = 10; for multi-label targets the
    multi-hot vectors are clustered). ``multilabel="first_positive"`` instead takes the index
    of the first positive label (0 when none).
    """
    if task.output == "classification":
        return np.asarray(y, dtype=np.int64)
    if task.output == "multilabel" and multilabel == "first_positive":
        y = np.asarray(y)
        return np.where(y.any(1), y.argmax(1), 0).astype(np.int64)
    return pseudo_labels(y, k, seed)


def embedded_features(embedder: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Mean-pooled embedder outputs (the body's input space), with gradients
    (:func:`crossmodal.features.pooled_outputs`; ``x`` is already on the embedder's device)."""
    return pooled_outputs(embedder, x, batch_size, x.device)


class AlignmentScore:
    """D(source, target class) for the chosen score; the source side is fixed and cached.

    ``seed`` seeds the random source draws of ORCA's ``mmd`` and ``l2`` (a fresh draw per
    call, as ORCA's code makes).
    """

    def __init__(self, kind: str, xs: torch.Tensor, ys: torch.Tensor, otdd_inner: str = "exact",
                 detach_label_distances: bool = True, otdd_inner_debiased: bool = False,
                 seed: int = 0):
        self.kind, self.xs, self.ys = kind, xs.detach(), ys
        self.detach_label_distances = detach_label_distances
        self.generator = torch.Generator().manual_seed(seed)
        # the proxy is fixed: its class statistics and self-distances are computed once
        self.source = (OTDDSource(self.xs, ys, inner=otdd_inner, small_classes="drop",
                                  inner_debiased=otdd_inner_debiased)
                       if kind == "otdd" else None)

    def __call__(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "otdd":
            return self.source.distance(feats, labels,
                                        detach_label_distances=self.detach_label_distances)
        xs = self.xs.to(feats.device)
        if self.kind == "mmd":  # ORCA: as many random source samples (with replacement)
            idx = torch.randint(0, len(xs), (len(feats),), generator=self.generator)
            return orca_mmd(xs[idx.to(xs.device)], feats)
        if self.kind == "l2":
            return orca_pairwise_l2(feats, xs, generator=self.generator)
        if self.kind == "mmd_multiscale":
            return mmd(feats, xs)
        return (feats.mean(0) - xs.mean(0)).pow(2).sum()  # "mean_l2": distance of means


def align_embedder(
    embedder: nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    score: AlignmentScore,
    *,
    epochs: int,
    lr: float,
    samples_per_class: int,
    seed: int = 0,
    ctx: RunContext | None = None,
    optimizer: str = "adam",
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    lr_steps: tuple[int, ...] = (),
    lr_gamma: float = 0.2,
) -> list[float]:
    """ORCA's stage 2: one optimiser step per epoch on the class-weighted per-class scores.

    Each epoch visits the target classes in a random order, back-propagates
    :math:`w_c D(\text{proxy}, f^t(x^t_c))` for each (one micro-batch of at most
    ``samples_per_class`` samples per class, accumulated), then takes one optimiser step.
    ``ctx``: the run (its device, progress bar and ``--limit-batches`` budget; None: the
    embedder's device, no bar, no budget). The loop's plumbing is :class:`Stage`.
    ``optimizer``, ``betas``, ``weight_decay``, ``momentum``: the optimiser (see
    :class:`ORCAConfig`); ``lr_steps``, ``lr_gamma``: ORCA's StepLR, the rate of epoch e is
    ``lr * lr_gamma ** #{m in lr_steps : e > m}`` (``()``: constant).
    """
    steps = tuple(lr_steps)

    def step_lr(optim: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(
            optim, lambda epoch: lr_gamma ** sum(epoch > m for m in steps))

    stage = Stage("ORCA alignment", ctx, embedder.parameters(), lr=lr, optimizer=optimizer,
                  betas=betas, weight_decay=weight_decay, momentum=momentum,
                  scheduler=step_lr if steps else None,
                  fix="Lower align_lr or check the inputs for extreme values")
    gen = np.random.default_rng(seed)
    xt = torch.as_tensor(x)
    classes, counts = np.unique(labels, return_counts=True)
    weights = counts / counts.sum()
    curve = []
    with stage.training(embedder, mode="train"):
        for _ in stage.epochs(epochs):
            stage.zero_grad()
            total = 0.0
            usable = [c for c in gen.permutation(len(classes))  # one sample: no distribution
                      if np.count_nonzero(labels == classes[c]) >= 2]
            for c_idx in stage.batches(usable):
                members = np.flatnonzero(labels == classes[c_idx])
                pick = np.sort(gen.permutation(members)[:samples_per_class])
                feats = embedded_features(embedder, stage.put(xt[pick]))
                loss = weights[c_idx] * score(feats, stage.put(torch.zeros(len(pick),
                                                                           dtype=torch.long)))
                stage.backward(loss)
                total += loss.item()
            stage.optimizer_step()
            curve.append(total)
    return curve


@register_method
class ORCA(Method):
    name = "orca"
    config_class = ORCAConfig
    paper = "ORCA: align then refine (Shen et al. 2023)"

    def before_finetune(self, model: nn.Module, task, splits: dict,
                        ctx: RunContext) -> dict[str, Any]:
        """Distribution alignment of the embedder, or the same alignment of an earlier variant
        of this process (:data:`ALIGNMENT_CACHE`, ``alignment_shared`` in the report)."""
        cfg = self.config
        if cfg.align_score == "none" or cfg.align_epochs == 0:
            return {"align_score": cfg.align_score, "freeze": cfg.freeze}
        key = self.alignment_key(model, task, splits, ctx)
        shared = ALIGNMENT_CACHE.get(key)
        if shared is not None:  # bit for bit the state this alignment would train
            model.embedder.load_state_dict(shared["embedder"])
            ctx.stages.extend({**s, "shared": True} for s in shared["stages"])
            return {**shared["report"], "freeze": cfg.freeze, "alignment_shared": True}
        n_stages = len(ctx.stages)
        report = self.align(model, task, splits, ctx)
        ALIGNMENT_CACHE.put(key, {
            "embedder": {k: v.detach().cpu().clone()
                         for k, v in model.embedder.state_dict().items()},
            "report": {k: v for k, v in report.items() if k not in AFTER_ALIGNMENT},
            "stages": ctx.stages[n_stages:]})
        return report

    def alignment_key(self, model: nn.Module, task, splits: dict, ctx: RunContext) -> str:
        """A fingerprint of everything the alignment reads: the task and its training split
        (the subset), the seed, profile and data root (the proxy and its sample), the run's
        device and dry-run switches, the embedder's initial state, the body (name and
        weights) and every option except those that act after it (:data:`AFTER_ALIGNMENT`)."""
        cfg = dataclasses.asdict(self.config)
        x, y = splits["train"]
        return StageCache.key(
            method=self.name, task=(task.key, tuple(task.input_shape), task.output),
            config={k: v for k, v in cfg.items() if k not in AFTER_ALIGNMENT},
            seed=ctx.seed, profile=ctx.profile, data_root=str(ctx.data_root),
            device=str(ctx.device), limit_batches=ctx.limit_batches, batch_size=ctx.batch_size,
            x=np.asarray(x), y=np.asarray(y), embedder=model.embedder,
            body=(getattr(model.body, "name", type(model.body).__name__), model.body))

    def align(self, model: nn.Module, task, splits: dict, ctx: RunContext) -> dict[str, Any]:
        """ORCA's distribution alignment of ``model.embedder`` (module docstring, step 2)."""
        cfg = self.config
        report: dict[str, Any] = {"align_score": cfg.align_score, "freeze": cfg.freeze}
        proxy_name = cfg.proxy or default_proxy(model.body.kind, ctx.profile)
        proxy = load_proxy(proxy_name, max_samples=cfg.proxy_samples, seed=ctx.seed,
                           root=ctx.data_root)
        device = torch.device(ctx.device)
        model.embedder.to(device)
        xs = source_features(model.body, proxy).to(device)
        ys = torch.as_tensor(proxy.labels).to(device)
        x, y = splits["train"]
        labels = alignment_labels(task, y, cfg.pseudo_label_k, ctx.seed, cfg.multilabel_labels)
        score = AlignmentScore(cfg.align_score, xs, ys, cfg.otdd_inner,
                               cfg.detach_label_distances, cfg.otdd_inner_debiased, ctx.seed)

        # a fixed target subset for the before/after OTDD
        rng = np.random.default_rng(ctx.seed + 1)
        sub = np.sort(rng.permutation(len(x))[: cfg.eval_samples])
        x_eval = torch.as_tensor(x[sub]).to(device)
        y_eval = torch.as_tensor(labels[sub]).to(device)

        otdd_source = (score.source if score.source is not None
                       else OTDDSource(xs.detach(), ys, inner=cfg.otdd_inner, small_classes="drop",
                                       inner_debiased=cfg.otdd_inner_debiased))

        def joint_otdd() -> float | None:
            with torch.no_grad():
                feats = embedded_features(model.embedder, x_eval)
                try:
                    return float(otdd_source.distance(feats, y_eval))
                except InvalidInputError:
                    # a tiny subset (dry runs) can leave every pseudo-class with one sample:
                    # no joint OTDD to report; the alignment itself skips such classes
                    return None

        report.update(proxy=proxy_name, proxy_samples=len(proxy),
                      n_pseudo_classes=int(len(np.unique(labels))),
                      pseudo_labels=task.output != "classification" and not (
                          task.output == "multilabel"
                          and cfg.multilabel_labels == "first_positive"),
                      align_epochs=cfg.align_epochs,
                      align_samples_per_class=cfg.align_samples_per_class,
                      device=str(device))
        report["otdd_before"] = joint_otdd()
        report["alignment_curve"] = align_embedder(
            model.embedder, x, labels, score, epochs=cfg.align_epochs, lr=cfg.align_lr,
            samples_per_class=ctx.stage_batch_size(cfg.align_samples_per_class), seed=ctx.seed,
            ctx=ctx, optimizer=cfg.align_optimizer, betas=cfg.align_betas,
            weight_decay=cfg.align_weight_decay, momentum=cfg.align_momentum,
            lr_steps=cfg.align_lr_steps, lr_gamma=cfg.align_lr_gamma)
        report["otdd_after"] = joint_otdd()
        return report

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        freeze = self.config.freeze
        parts = [model.head, model.extras]
        if freeze in ("none", "body"):
            parts.append(model.embedder)
        if freeze in ("none", "embedder"):
            parts.append(model.body)
        return [p for part in parts for p in part.parameters()]
