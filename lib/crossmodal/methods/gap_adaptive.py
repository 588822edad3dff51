"""The slides' proposed method: modality-gap-adaptive cross-modal fine-tuning (two versions).

Neither version was published or run; the slides (seeds 000 and 001) give the ideas, and
every number and several definitions are ours (listed below and in
docs/methods_pare_gap.md).

**Version A** (``gap_adaptive_a``; slides 000, 52-56), three stages:

1. Embedder training (``embedder_stage``): ``"emb"`` trains only the target embedder with
   the task loss, everything else frozen (the slides' "Emb" baseline); ``"orca"``/``"mona"``
   (or any registered method name) runs that method's stage 1 (its ``before_finetune``) on the
   model (options: ``embedder_stage_options``); ``"none"`` skips the stage.
2. Modality-gap estimation: :math:`e^t_i = g^s(f^t(x^t_i))`, :math:`e^s_i = g^s(f^s(x^s_i))`
   (body outputs, mean-pooled over tokens), and
   :math:`D = \\mathrm{OTDD}(\\{e^t_i, y^t_i\\}, \\{e^s_i, y^s_i\\})` for discrete target
   labels, :math:`D = \\mathrm{MMD}(\\{e^t_i\\}, \\{e^s_i\\}) = \\|\\mu_P - \\mu_Q\\|_{\\mathcal H}`
   (unsquared, slide 58's definition; ``gap_mmd_squared=True``: MMD^2) for continuous ones
   (:func:`estimate_gap`).
3. Full fine-tuning with a source loss :math:`\\mathcal L_s = \\mathrm{CE}(h^s(g(f^s(x^s))), y^s)`
   on proxy batches (a source head in ``model.extras``) and the target task loss
   :math:`\\mathcal L_t`:

   * ``weighting="continuous"`` (Option 2, :func:`gap_weight`):
     :math:`\\mathcal L = \\alpha\\mathcal L_t + \\frac{\\beta}{\\epsilon + D}
     (1 - \\frac{ep}{ep_{total}})\\mathcal L_s`. **Epoch convention**: ``ep`` counts the epochs
     already done (0 in the first) and ``ep_total`` is the last epoch's index, ``epochs - 1``,
     so the first epoch has the full weight and the last epoch weight 0 (a 1-epoch run keeps
     the full weight). The factor :math:`\\beta/(\\epsilon + D)` is capped at
     ``max_source_weight`` (a near-zero gap estimate with :math:`\\epsilon` = 1e-3 would give
     up to 1000 :math:`\\beta`); the report says when the cap binds (``warnings``).
   * ``weighting="switch"`` (Option 1, :func:`gap_switch_weights`): :math:`\\mathcal L =
     \\mathcal L_t` if :math:`D > \\Gamma` (large gap), else
     :math:`\\alpha\\mathcal L_t + \\beta\\mathcal L_s`.

**Version B** (``gap_adaptive_b``; slides 001, "Idea (cnt.)"), two stages:

1. Contrastive training of the target embedder on noise-augmented data: every training
   sample is perturbed with each noise scale :math:`\\sigma_k` (k = 1..K) for t = 1..T steps
   of :math:`x^{t} = \\sqrt{1-\\sigma^2}\\,x^{t-1} + \\sigma\\varepsilon`,
   :math:`\\varepsilon \\sim \\mathcal N(0, I)` (:func:`perturb`), an expanded set of
   M = N K T samples; the loss per label Y is (:func:`label_contrastive_loss`)

   .. math:: \\mathcal L_Y = -\\log \\frac{\\sum_{i: y_i = Y}\\sum_{j \\ne i: y_j = Y}
             s_{ij}}{\\sum_{i: y_i = Y}\\sum_{j \\ne i} \\lambda_{ij} s_{ij}},\\qquad
             s_{ij} = \\exp(\\cos(z_i, z_j)/\\tau)

   with :math:`z = ` mean-pooled embedder output. The slides write :math:`\\cos` itself
   for :math:`s_{ij}`; cosines can be negative, which makes the ratio's logarithm undefined,
   so we use the positive similarity :math:`\\exp(\\cos/\\tau)` (SupCon's).
2. PaRe fine-tuning (all of :mod:`crossmodal.methods.pare`'s switches) with a
   self-attention patch scorer (``gate="attention"``); ``freeze_embedder`` keeps the
   contrastively trained embedder fixed (the slides' option 1) or trains it (option 2).

Choices where the slides leave room:

* Values of alpha, beta, epsilon, Gamma, K, sigma_k, T, tau: none are given; defaults
  below (alpha = beta = 1, epsilon = 1e-3, Gamma = 1.0, sigma = (0.1, 0.3, 0.5), T = 3,
  tau = 0.1, ``max_source_weight`` = 100) are ours. D's scale depends on the distance (OTDD
  on body features is O(1-100), MMD is O(0.1-1)), so beta and Gamma must be set per distance;
  ``method_report`` holds D and the source weight of the first epoch to help.
* D is estimated once, after stage 1, on at most ``gap_samples`` target training samples and
  as many proxy samples; it is kept in the checkpoint (a buffer in ``model.extras``) so that
  a resumed run uses the same D.
* Multi-label targets use their first positive label for OTDD (samples without a positive:
  their own class); ``gap_distance`` forces OTDD or MMD.
* The source body pass (for D and for the source loss) runs each proxy sentence with its
  attention mask and pools over its real tokens (:mod:`crossmodal.features`), the same
  features RECRAFT and MoNA use.
* "Emb" trains only the embedder (the head stays at its random initialisation, as the
  slides' "rest of the network frozen" says), Adam with ``embedder_lr``.
* Version B: lambda_ij is proportional to 1/(correlation(y_i, y_j) + epsilon) with the
  correlation of the label vectors (one-hot for classes, multi-hot, or the flattened dense
  target) mapped to [0, 1], c = (1 + rho)/2, and the constant fixed so that lambda_ij = 1
  for identical labels: lambda_ij = (1 + epsilon)/(c_ij + epsilon); lambda_ij = 1 whenever
  y_i and y_j are in the same group. Groups Y are the classes (multi-label: first positive;
  dense: k-means pseudo-labels of the targets). Self-pairs (i = j) are left out of both
  sums. Each contrastive epoch visits all M = N K T (sample, scale, steps) triples once in
  random minibatches, with fresh noise (the slides' expanded set, resampled per epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.distances import mmd, otdd
from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.features import eval_mode, pooled_outputs, source_body_features
from crossmodal.heads import PooledLinearHead
from crossmodal.losses import cross_entropy, task_loss
from crossmodal.methods._stage import Stage
from crossmodal.methods.base import Method, MethodConfig, RunContext, get_method, register_method
from crossmodal.methods.pare import PaRe, PaReConfig
from crossmodal.methods.patching import SourceBank, align_source_tokens, load_source_bank

GAP_DISTANCES = ("auto", "otdd", "mmd")
WEIGHTINGS = ("continuous", "switch")


# -- pure functions ----------------------------------------------------------------------------
def gap_weight(D: float, epoch: int, total_epochs: int, *, beta: float, eps: float,
               cap: float = math.inf) -> float:
    """Source-loss weight of Option 2: :math:`\\min(c, \\frac{\\beta}{\\epsilon + D})
    (1 - ep/ep_{total})`.

    ``epoch`` is 0-based (0 .. ``total_epochs - 1``, as in the training loop) and
    :math:`ep_{total}` = ``total_epochs - 1``, so the weight is the full one in the first
    epoch and 0 in the last; with ``total_epochs = 1`` it is the full one. ``cap`` = c bounds
    :math:`\\beta/(\\epsilon + D)` (see :func:`gap_weight_factor`).
    """
    if total_epochs < 1:
        raise InvalidInputError(f"total_epochs must be >= 1, got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise InvalidInputError(f"epoch must be in [0, {total_epochs - 1}] (0-based), got {epoch}")
    factor, _ = gap_weight_factor(D, beta=beta, eps=eps, cap=cap)
    progress = epoch / (total_epochs - 1) if total_epochs > 1 else 0.0
    return float(factor * (1.0 - progress))


def gap_weight_factor(D: float, *, beta: float, eps: float,
                      cap: float = math.inf) -> tuple[float, bool]:
    """:math:`\\min(c, \\beta/(\\epsilon + D))` and whether the cap c bound."""
    if D < 0 or not np.isfinite(D):
        raise InvalidInputError(f"the gap D must be a finite number >= 0, got {D}")
    if eps <= 0 and D == 0:
        raise InvalidInputError("eps must be > 0 when the gap D is 0 (division by zero)")
    if not cap > 0:
        raise InvalidInputError(f"the weight cap must be > 0, got {cap}")
    raw = beta / (eps + D)
    return (float(min(raw, cap)), bool(raw > cap))


def gap_switch_weights(D: float, *, gamma: float, alpha: float = 1.0,
                       beta: float = 1.0) -> tuple[float, float]:
    """(target, source) loss weights of Option 1: (1, 0) if D > Gamma, else (alpha, beta)."""
    if not np.isfinite(D):
        raise InvalidInputError(f"the gap D must be finite, got {D}")
    return (1.0, 0.0) if D > gamma else (float(alpha), float(beta))


def estimate_gap(
    e_t: torch.Tensor, e_s: torch.Tensor, *, y_t: torch.Tensor | None = None,
    y_s: torch.Tensor | None = None, distance: str = "auto", otdd_inner: str = "exact",
    squared: bool = False,
) -> float:
    """The modality gap D between target and source features.

    Parameters
    ----------
    e_t, e_s : (n_t, d), (n_s, d) features (body outputs of target and source inputs).
    y_t, y_s : integer labels (needed for OTDD); ``y_t=None`` means continuous target labels.
    distance : ``"otdd"``, ``"mmd"`` or ``"auto"`` (OTDD when both label sets are given,
        MMD otherwise, as the slides prescribe).
    otdd_inner : OTDD's label-to-label distance (``"exact"`` or ``"gaussian"``).
    squared : MMD^2 instead of the slides' MMD = sqrt(MMD^2) (five RBF bandwidths,
        unbiased estimate of MMD^2, clipped at 0 before the square root).

    Classes with fewer than 2 samples are dropped from OTDD; negative estimates (possible
    for the unbiased MMD^2 and the debiased OTDD) are clipped to 0.
    """
    if distance not in GAP_DISTANCES:
        raise unknown_name("gap distance", distance, GAP_DISTANCES)
    if distance == "auto":
        distance = "otdd" if y_t is not None and y_s is not None else "mmd"
    with torch.no_grad():
        if distance == "otdd":
            if y_t is None or y_s is None:
                raise InvalidInputError("OTDD needs discrete labels for both sides; pass y_t "
                                        "and y_s, or use distance='mmd'")
            value = float(otdd(e_s, y_s, e_t, y_t, inner=otdd_inner, small_classes="drop"))
        else:
            value = float(mmd(e_t, e_s))
            if not squared:
                return math.sqrt(max(0.0, value))
    # unbiased MMD^2 and debiased OTDD estimates can dip below 0; a gap cannot
    return max(0.0, value)


def discrete_labels(task, y: np.ndarray) -> np.ndarray | None:
    """Integer labels for OTDD: classes; first positive label of multi-label targets; None
    for continuous (dense) targets."""
    if task.output == "classification":
        return np.asarray(y, dtype=np.int64)
    if task.output == "multilabel":
        y = np.asarray(y)
        return np.where(y.any(1), y.argmax(1), y.shape[1]).astype(np.int64)  # no positive
    return None


def group_labels(task, y: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """Label groups for the contrastive loss: discrete labels, or k-means pseudo-labels."""
    labels = discrete_labels(task, y)
    if labels is not None:
        return labels
    from sklearn.cluster import KMeans

    flat = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    k = max(1, min(k, len(np.unique(flat, axis=0))))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(flat).astype(np.int64)


def label_vectors(task, y: torch.Tensor) -> torch.Tensor:
    """Label vectors for the correlation in lambda_ij: one-hot, multi-hot or flattened."""
    if task.output == "classification":
        return F.one_hot(y.long(), task.num_outputs).float()
    return y.reshape(len(y), -1).float()


# -- features ----------------------------------------------------------------------------------
@torch.no_grad()
def pooled_body_features(model: nn.Module, tokens: torch.Tensor,
                         batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled body outputs g(tokens), (n, D_out), in eval mode, without gradients, on the
    CPU (:func:`crossmodal.features.pooled_outputs`)."""
    with eval_mode(model):
        return pooled_outputs(model.body, tokens, batch_size).cpu()


def source_length(bank: SourceBank) -> int:
    """The longest proxy sentence (in tokens) of the bank."""
    return int(bank.mask.sum(1).max())


def source_body_inputs(bank: SourceBank, idx: torch.Tensor) -> torch.Tensor:
    """Proxy samples ``idx`` as body inputs: real tokens tiled to the bank's longest sentence."""
    toks, _ = align_source_tokens(bank.tokens[idx], bank.mask[idx], source_length(bank), "tile")
    return toks


# -- version A ---------------------------------------------------------------------------------
class GapBuffer(nn.Module):
    """Holds D in the model's state so that checkpoints (and resumed runs) keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gap", torch.tensor(float("nan")))


def train_embedder_only(model: nn.Module, task, x: np.ndarray, y: np.ndarray, *, epochs: int,
                        lr: float, batch_size: int, seed: int,
                        ctx: RunContext | None = None) -> list[float]:
    """The "Emb" stage: Adam on the embedder only, with the task loss; returns epoch losses.

    ``ctx``: the run (device, progress bar, ``--limit-batches``; None: the model's device).
    """
    stage = Stage("gap-adaptive embedder stage", ctx, model.embedder.parameters(), lr=lr,
                  fix="Lower embedder_lr or check the inputs for extreme values")
    loss = task_loss(task)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    curve = []
    with stage.training(model, model.embedder, mode="train"):
        for _ in stage.epochs(epochs):
            total = 0.0
            for idx in stage.batches(torch.randperm(len(xt), generator=gen).split(batch_size)):
                total += stage.step(loss(model(stage.put(xt[idx])), stage.put(yt[idx]))) * len(idx)
            curve.append(total / len(xt))
    return curve


@dataclass
class GapAdaptiveAConfig(MethodConfig):
    """Version A's options (see the module docstring).

    embedder_stage : ``none`` | ``emb`` | a registered method name (``orca``, ``mona``).
    embedder_stage_options : options of that method's config (a dict; CLI:
        ``-o "embedder_stage_options={'align_epochs': 2}"``).
    embedder_epochs, embedder_lr, embedder_batch_size : the ``emb`` stage.
    gap_distance : ``auto`` | ``otdd`` | ``mmd``; otdd_inner : ``exact`` | ``gaussian``.
    gap_samples : target and proxy samples used to estimate D.
    weighting : ``continuous`` (Option 2) | ``switch`` (Option 1).
    gap_mmd_squared : D = MMD^2 instead of the slides' MMD for continuous labels.
    alpha, beta, eps, gamma : the loss constants (gamma = Gamma, the switch threshold).
    max_source_weight : cap of beta / (eps + D) in Option 2 (reported when it binds).
    proxy, proxy_samples : the proxy source dataset.
    """

    embedder_stage: str = field(
        default="emb",
        metadata={"help": "``none`` | ``emb`` | a registered method name (``orca``, ``mona``)."})
    embedder_stage_options: dict | None = field(
        default=None,
        metadata={"help": "options of that method's config, a dict (CLI: -o "
                          "\"embedder_stage_options={'align_epochs': 2}\")."})
    embedder_epochs: int = field(
        default=1,
        metadata={"help": "epochs of the ``emb`` stage (Adam on the embedder with the task loss)."})
    embedder_lr: float = field(
        default=1e-3,
        metadata={"help": "learning rate of the ``emb`` stage."})
    embedder_batch_size: int = field(
        default=16,
        metadata={"help": "micro-batch size of the ``emb`` stage."})
    gap_distance: str = field(default="auto", metadata={"help": "``auto`` | ``otdd`` | ``mmd``."})
    otdd_inner: str = field(default="exact", metadata={"help": "``exact`` | ``gaussian``."})
    gap_samples: int = field(
        default=500,
        metadata={"help": "target and proxy samples used to estimate D."})
    gap_mmd_squared: bool = field(
        default=False,
        metadata={"help": "D = MMD^2 instead of the slides' MMD for continuous labels."})
    weighting: str = field(
        default="continuous",
        metadata={"help": "``continuous`` (Option 2) | ``switch`` (Option 1)."})
    alpha: float = field(default=1.0, metadata={"help": "alpha, the weight of the target loss."})
    beta: float = field(
        default=1.0,
        metadata={"help": "beta, the numerator of the source weight beta / (eps + D) (Option 2) or "
                          "the source weight above Gamma (Option 1)."})
    eps: float = field(default=1e-3, metadata={"help": "eps of beta / (eps + D) (> 0)."})
    gamma: float = field(
        default=1.0,
        metadata={"help": "Gamma, the gap threshold of the switch (Option 1)."})
    max_source_weight: float = field(
        default=100.0,
        metadata={"help": "cap of beta / (eps + D) in Option 2 (reported when it binds)."})
    proxy: str | None = field(
        default=None,
        metadata={"help": "proxy source dataset (None: the body's default)."})
    proxy_samples: int = field(
        default=2000,
        metadata={"help": "proxy samples used (source bank and D)."})

    def __post_init__(self) -> None:
        if self.gap_distance not in GAP_DISTANCES:
            raise InvalidInputError(f"gap_distance must be one of {GAP_DISTANCES}, "
                                    f"got {self.gap_distance!r}")
        if self.weighting not in WEIGHTINGS:
            raise InvalidInputError(f"weighting must be one of {WEIGHTINGS}, "
                                    f"got {self.weighting!r}")
        if self.eps <= 0:
            raise InvalidInputError(f"eps must be > 0, got {self.eps}")
        if not self.max_source_weight > 0:
            raise InvalidInputError(f"max_source_weight must be > 0, got "
                                    f"{self.max_source_weight}")
        if self.gap_samples < 2 or self.proxy_samples < 2:
            raise InvalidInputError("gap_samples and proxy_samples must be >= 2")
        if self.embedder_epochs < 0:
            raise InvalidInputError("embedder_epochs must be >= 0")


@register_method
class GapAdaptiveA(Method):
    name = "gap_adaptive_a"
    config_class = GapAdaptiveAConfig
    paper = "gap-adaptive fine-tuning, version A (proposal in the survey slides)"

    HEAD_KEY, GAP_KEY = "gap_source_head", "gap_state"

    def __init__(self, config: GapAdaptiveAConfig | None = None) -> None:
        super().__init__(config)
        self.bank: SourceBank | None = None

    def prepare(self, model: nn.Module, task, ctx: RunContext) -> None:
        cfg = self.config
        self.bank = load_source_bank(model.body, ctx.profile, cfg.proxy, cfg.proxy_samples,
                                     seed=ctx.seed, root=ctx.data_root)
        model.extras[self.HEAD_KEY] = PooledLinearHead(model.body.out_size, self.bank.num_classes)
        model.extras[self.GAP_KEY] = GapBuffer()

    def run_embedder_stage(self, model, task, splits, ctx) -> dict[str, Any]:
        cfg = self.config
        x, y = splits["train"]
        if cfg.embedder_stage == "none":
            return {}
        if cfg.embedder_stage == "emb":
            return {"emb_curve": train_embedder_only(
                model, task, x, y, epochs=cfg.embedder_epochs, lr=cfg.embedder_lr,
                batch_size=ctx.stage_batch_size(cfg.embedder_batch_size), seed=ctx.seed,
                ctx=ctx)}
        if cfg.embedder_stage in (self.name, "gap_adaptive_b"):
            raise InvalidInputError("embedder_stage cannot be a gap-adaptive method itself")
        # orca, mona, ...: their stage 1 with their own options
        stage = get_method(cfg.embedder_stage, **(cfg.embedder_stage_options or {}))
        stage.prepare(model, task, ctx)
        return {f"{cfg.embedder_stage}_report": stage.before_finetune(model, task, splits, ctx)}

    def measure_gap(self, model, task, x: np.ndarray, y: np.ndarray, seed: int) -> float:
        """D between body features of (at most gap_samples) target and proxy samples."""
        cfg = self.config
        gen = torch.Generator().manual_seed(seed)
        ti = torch.randperm(len(x), generator=gen)[: cfg.gap_samples].sort().values
        si = torch.randperm(len(self.bank), generator=gen)[: cfg.gap_samples].sort().values
        with torch.no_grad():
            was = model.training
            model.eval()
            device = next(model.embedder.parameters()).device
            xt = torch.as_tensor(x[ti.numpy()])
            emb = torch.cat([model.embedder(xt[i : i + 64].to(device)).cpu()
                             for i in range(0, len(xt), 64)])
            model.train(was)
        e_t = pooled_body_features(model, emb)
        with eval_mode(model), torch.no_grad():
            e_s = source_body_features(model.body, self.bank.tokens[si], self.bank.mask[si]).cpu()
        labels = discrete_labels(task, y[ti.numpy()])
        distance = cfg.gap_distance
        if distance == "otdd" and labels is None:
            raise InvalidInputError(f"task {task.key} has continuous labels; OTDD needs classes "
                                    "(use gap_distance='mmd' or 'auto')")
        y_t = torch.as_tensor(labels) if labels is not None else None
        return estimate_gap(e_t, e_s, y_t=y_t, y_s=self.bank.labels[si], distance=distance,
                            otdd_inner=cfg.otdd_inner, squared=cfg.gap_mmd_squared)

    def before_finetune(self, model: nn.Module, task, splits: dict,
                        ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        report: dict[str, Any] = {"embedder_stage": cfg.embedder_stage,
                                  "weighting": cfg.weighting}
        report.update(self.run_embedder_stage(model, task, splits, ctx))
        x, y = splits["train"]
        D = self.measure_gap(model, task, x, y, ctx.seed)
        model.extras[self.GAP_KEY].gap.fill_(D)
        labels = discrete_labels(task, y)
        report.update(
            gap=D,
            gap_distance=(cfg.gap_distance if cfg.gap_distance != "auto"
                          else ("otdd" if labels is not None else "mmd")),
            proxy=self.bank.name, proxy_samples=len(self.bank),
        )
        if cfg.weighting == "switch":
            w_t, w_s = gap_switch_weights(D, gamma=cfg.gamma, alpha=cfg.alpha, beta=cfg.beta)
            report.update(large_gap=bool(D > cfg.gamma), target_weight=w_t, source_weight=w_s)
        else:
            factor, capped = gap_weight_factor(D, beta=cfg.beta, eps=cfg.eps,
                                               cap=cfg.max_source_weight)
            report.update(target_weight=cfg.alpha, source_weight_epoch0=factor,
                          source_weight_uncapped=cfg.beta / (cfg.eps + D),
                          source_weight_capped=capped)
            if capped:
                report.setdefault("warnings", []).append(
                    f"beta/(eps + D) = {cfg.beta / (cfg.eps + D):.4g} for D = {D:.4g} was capped at "
                    f"max_source_weight = {cfg.max_source_weight:g}: the gap estimate is near 0 "
                    "on D's scale; set beta (or eps) for this distance")
        return report

    def weights(self, D: float, epoch: int, epochs: int) -> tuple[float, float]:
        cfg = self.config
        if cfg.weighting == "switch":
            return gap_switch_weights(D, gamma=cfg.gamma, alpha=cfg.alpha, beta=cfg.beta)
        return cfg.alpha, gap_weight(D, epoch, epochs, beta=cfg.beta, eps=cfg.eps,
                                     cap=cfg.max_source_weight)

    def loss_fn(self, task):
        loss = task_loss(task)

        def fn(model, batch, state):
            x, y = batch
            D = float(model.extras[self.GAP_KEY].gap)
            if not np.isfinite(D):
                raise InvalidInputError("the modality gap D was never measured: the run must "
                                        "start with before_finetune() (or resume from its checkpoint)")
            w_t, w_s = self.weights(D, state.epoch, state.epochs)
            state.extra["gap_source_weight"] = w_s
            total = w_t * loss(model(x), y)
            if w_s > 0:
                idx = torch.randint(0, len(self.bank), (len(x),))
                feats = source_body_features(model.body, self.bank.tokens[idx],
                                             self.bank.mask[idx], batch_size=len(idx), grad=True)
                logits = model.extras[self.HEAD_KEY].linear(feats)  # pooled over real tokens
                total = total + w_s * cross_entropy(logits, self.bank.labels[idx].to(x.device))
            return total

        return fn



def weight_schedule(D: float, total_epochs: int, *, weighting: str = "continuous",
                    alpha: float = 1.0, beta: float = 1.0, eps: float = 1e-3,
                    gamma: float = 1.0, cap: float = math.inf) -> list[dict[str, float]]:
    """Version A's (target, source) loss weights at every fine-tuning epoch for a gap D.

    ``weighting="continuous"``: (alpha, :func:`gap_weight`), which falls linearly from
    ``min(cap, beta / (eps + D))`` in the first epoch to 0 in the last and is smaller for a
    larger gap; ``"switch"``: :func:`gap_switch_weights`, constant over the epochs. Epochs are
    0-based, as in the training loop.
    """
    if weighting not in WEIGHTINGS:
        raise unknown_name("weighting", weighting, WEIGHTINGS)
    rows = []
    for epoch in range(total_epochs):
        if weighting == "switch":
            w_t, w_s = gap_switch_weights(D, gamma=gamma, alpha=alpha, beta=beta)
        else:
            w_t, w_s = alpha, gap_weight(D, epoch, total_epochs, beta=beta, eps=eps, cap=cap)
        rows.append({"epoch": epoch, "target_weight": float(w_t), "source_weight": float(w_s)})
    return rows


# -- version B ---------------------------------------------------------------------------------
def perturb(x: torch.Tensor, sigma: torch.Tensor | float, steps: torch.Tensor | int, *,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` rounds of :math:`x \\leftarrow \\sqrt{1-\\sigma^2}x + \\sigma\\varepsilon`.

    ``sigma`` and ``steps`` may be per-sample tensors (n,). After t rounds,
    :math:`x^t = a^t x^0 + \\sqrt{1-a^{2t}}\\,\\varepsilon'` in distribution, a = sqrt(1 - sigma^2).
    """
    n = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    steps = torch.as_tensor(steps, dtype=torch.long)
    sigma = sigma.expand(n) if sigma.dim() == 0 else sigma
    steps = steps.expand(n) if steps.dim() == 0 else steps
    if bool(((sigma <= 0) | (sigma >= 1)).any()):
        raise InvalidInputError("noise scales sigma must lie in (0, 1)")
    shape = (n,) + (1,) * (x.dim() - 1)
    s, a = sigma.view(shape), torch.sqrt(1 - sigma**2).view(shape)
    out = x
    for r in range(int(steps.max()) if n else 0):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        stepped = a * out + s * noise
        out = torch.where((steps > r).view(shape), stepped, out)
    return out


def pair_weights(vectors: torch.Tensor, groups: torch.Tensor, eps: float) -> torch.Tensor:
    """lambda_ij = (1 + eps) / ((1 + rho_ij)/2 + eps), and 1 within a group.

    rho_ij is the Pearson correlation of the label vectors (0 when one of them is constant).
    """
    v = vectors - vectors.mean(1, keepdim=True)
    norm = v.norm(dim=1, keepdim=True)
    u = torch.where(norm > 0, v / norm.clamp_min(1e-12), torch.zeros_like(v))
    c = (1 + (u @ u.T).clamp(-1, 1)) / 2
    lam = (1 + eps) / (c + eps)
    same = groups.unsqueeze(0) == groups.unsqueeze(1)
    return torch.where(same, torch.ones_like(lam), lam)


def label_contrastive_loss(z: torch.Tensor, groups: torch.Tensor, weights: torch.Tensor, *,
                           tau: float = 0.1) -> torch.Tensor:
    """Mean over label groups Y (with >= 2 members in the batch) of L_Y (module docstring).

    Parameters
    ----------
    z : (B, d) embeddings; groups : (B,) integer groups; weights : (B, B) lambda_ij.
    """
    b = len(z)
    zn = F.normalize(z, dim=1)
    logits = zn @ zn.T / tau
    off = ~torch.eye(b, dtype=torch.bool, device=z.device)
    same = (groups.unsqueeze(0) == groups.unsqueeze(1)) & off
    weighted = logits + torch.log(weights.clamp_min(1e-12))
    losses = []
    for g in torch.unique(groups):
        rows = groups == g
        if int(rows.sum()) < 2:
            continue  # no positive pair
        pos = logits[rows][same[rows]]
        allp = weighted[rows][off[rows]]
        losses.append(torch.logsumexp(allp, 0) - torch.logsumexp(pos, 0))
    if not losses:
        return z.sum() * 0.0
    return torch.stack(losses).mean()


def contrastive_embedder_training(
    model: nn.Module, task, x: np.ndarray, y: np.ndarray, *, noise_scales: tuple[float, ...],
    noise_steps: int, epochs: int, lr: float, batch_size: int, tau: float, eps: float,
    pseudo_label_k: int = 10, seed: int = 0, ctx: RunContext | None = None,
) -> list[float]:
    """Version B stage 1: the embedder (only) trained with :func:`label_contrastive_loss`.

    ``ctx``: the run (device, progress bar, ``--limit-batches``; None: the embedder's device).
    """
    stage = Stage("gap-adaptive contrastive stage", ctx, model.embedder.parameters(), lr=lr,
                  fix="Lower contrastive_lr or raise contrastive_tau")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    groups = torch.as_tensor(group_labels(task, y, pseudo_label_k, seed))
    vectors = label_vectors(task, yt)
    sig = torch.as_tensor(noise_scales, dtype=xt.dtype)
    n, K, T = len(xt), len(sig), noise_steps
    curve = []
    with stage.training(model.embedder, mode="train"):
        for _ in stage.epochs(epochs):
            total, count = 0.0, 0
            for m in stage.batches(torch.randperm(n * K * T, generator=gen).split(batch_size)):
                i, k, t = m // (K * T), (m // T) % K, m % T + 1  # expanded index -> (i, k, t)
                xb = stage.put(perturb(xt[i], sig[k], t, generator=gen))
                w = stage.put(pair_weights(vectors[i], groups[i], eps))
                z = model.embedder(xb).mean(1)
                value = label_contrastive_loss(z, stage.put(groups[i]), w, tau=tau)
                total += stage.step(value) * len(m)
                count += len(m)
            curve.append(total / max(count, 1))
    return curve


@dataclass
class GapAdaptiveBConfig(PaReConfig):
    """Version B: PaRe's options (gate defaults to ``attention``) plus stage 1's.

    noise_scales : the sigma_k (K of them); noise_steps : T.
    contrastive_epochs, contrastive_lr, contrastive_batch_size : stage 1 training.
    contrastive_tau : temperature of exp(cos/tau); contrastive_eps : epsilon of lambda_ij.
    pseudo_label_k : k-means groups for continuous targets.
    freeze_embedder : keep the stage-1 embedder fixed during fine-tuning.
    """

    gate: str = field(default="attention", metadata={
        "help": "PaRe's gate network (``fc`` | ``mlp`` | ``mlp_dropout`` | ``attention``); "
                "version B: ``attention``."})
    noise_scales: tuple[float, ...] = field(
        default=(0.1, 0.3, 0.5),
        metadata={"help": "the noise scales sigma_k of the perturbations (K of them, each in (0, "
                          "1))."})
    noise_steps: int = field(
        default=3,
        metadata={"help": "T, the perturbation steps per noise scale (the expanded set has n x K x "
                          "T samples)."})
    contrastive_epochs: int = field(default=3, metadata={"help": "stage 1 training."})
    contrastive_lr: float = field(default=1e-3, metadata={"help": "stage 1 training."})
    contrastive_batch_size: int = field(default=64, metadata={"help": "stage 1 training."})
    contrastive_tau: float = field(default=0.1, metadata={"help": "temperature of exp(cos/tau)."})
    contrastive_eps: float = field(default=0.1, metadata={"help": "epsilon of lambda_ij."})
    pseudo_label_k: int = field(
        default=10,
        metadata={"help": "k-means groups for continuous targets."})
    freeze_embedder: bool = field(
        default=False,
        metadata={"help": "keep the stage-1 embedder fixed during fine-tuning."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.noise_scales = tuple(float(s) for s in np.atleast_1d(self.noise_scales))
        if not self.noise_scales or any(not 0 < s < 1 for s in self.noise_scales):
            raise InvalidInputError(f"noise_scales must be values in (0, 1), got "
                                    f"{self.noise_scales}")
        if self.noise_steps < 1 or self.contrastive_epochs < 0:
            raise InvalidInputError("noise_steps must be >= 1 and contrastive_epochs >= 0")
        if self.contrastive_tau <= 0 or self.contrastive_eps <= 0:
            raise InvalidInputError("contrastive_tau and contrastive_eps must be > 0")


@register_method
class GapAdaptiveB(PaRe):
    name = "gap_adaptive_b"
    config_class = GapAdaptiveBConfig
    paper = "gap-adaptive fine-tuning, version B (proposal in the survey slides)"

    def before_finetune(self, model: nn.Module, task, splits: dict,
                        ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        x, y = splits["train"]
        curve = contrastive_embedder_training(
            model, task, x, y, noise_scales=cfg.noise_scales, noise_steps=cfg.noise_steps,
            epochs=cfg.contrastive_epochs, lr=cfg.contrastive_lr,
            batch_size=ctx.stage_batch_size(cfg.contrastive_batch_size), tau=cfg.contrastive_tau,
            eps=cfg.contrastive_eps, pseudo_label_k=cfg.pseudo_label_k, seed=ctx.seed, ctx=ctx,
        )
        report = super().before_finetune(model, task, splits, ctx)
        report.update(contrastive_curve=curve, expanded_size=len(x) * len(cfg.noise_scales)
                      * cfg.noise_steps, freeze_embedder=cfg.freeze_embedder)
        return report

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if not self.config.freeze_embedder:
            return list(model.parameters())
        frozen = {id(p) for p in model.embedder.parameters()}
        return [p for p in model.parameters() if id(p) not in frozen]
