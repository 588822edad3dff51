r"""MoNA (Ma et al., ICML 2024): modality knowledge alignment by a meta-learned embedder.

Implemented from the survey slides (``seeds/000``, ``001``, slides 37-45); MoNA has no
public code. Notation: target embedder :math:`e(\cdot;\phi_e)` (``model.embedder``), body
:math:`f(\cdot;\theta_f)` (``model.body``), head :math:`h(\cdot;\theta_h)`; the body's
pretrained input layer :math:`e(\cdot;\theta^S_e)` embeds the proxy source data.

**Stage 1** (``meta_steps`` = I_1 iterations), each on a target batch and a proxy batch:

1. inner loss :math:`\mathcal L_{inner}` = the task loss of the model on the target batch;
2. virtual step of the body, :math:`\theta_f^* = \theta_f - \alpha\nabla_{\theta_f}
   \mathcal L_{inner}` (kept in the graph: second order);
3. source features :math:`f_i = \mathrm{pool}(f(e(x^s_i;\theta^S_e);\theta_f^*))` through the
   virtually updated body (``torch.func.functional_call``);
4. :math:`\mathcal L_{outer} = \mathcal L_{align} + \mathcal L_{uniform}` on the source
   features and labels, :math:`\mathcal L'_{outer} = \lambda\mathcal L_{outer} +
   \mathcal L_{inner}`;
5. one Adam step (learning rate :math:`\beta`) on the embedder (only, by default; see below).

The body is never really updated in stage 1 (the virtual update is discarded), which is
Algorithm 1's "initialise the target model with :math:`\phi_e` and :math:`\theta^S_{f_0}`"
at every iteration. **Stage 2** is vanilla fine-tuning of everything from there.

**Modality knowledge discrepancy** (Algorithm 2): :func:`modality_discrepancy` (random
search over class subsets and label permutations) and :func:`modality_discrepancy_exact`
(all subsets, best permutation by linear assignment, or brute force). The method reports
it before and after stage 1 when the proxy has at least as many classes as the target,
with a linear probe on the proxy's body features as the source classifier.

Choices where the slides leave room (ours):

* **Signs** (inconsistency 13): the slides write
  :math:`-\mathbb E\|f_i-f_j\|^2 - \log\mathbb E e^{-2\|f_i-f_j\|^2}` and *minimise* it, which
  would push same-class features apart and collapse the rest: the opposite of "high
  quality, discriminative source representations". We use Wang & Isola's losses with their
  signs, both minimised (``signs="standard"``); ``signs="slides"`` reproduces the slides.
* **Normalisation**: features are L2-normalised before both losses (``normalize=True``), as
  in Wang & Isola; without it the uniformity loss is unbounded below (scale features up).
* **Pairs**: alignment averages over ordered pairs i != j with equal labels (0 when a batch
  has none); uniformity over pairs i < j, with t = ``uniformity_t`` (2).
* **Virtual step**: plain SGD on the body only. The head's virtual update does not reach
  :math:`\mathcal L_{outer}`, which uses body features only. Dropout is off in stage 1 so
  that the virtual and the real forward passes are the same function.
* **Head**: Algorithm 1 updates only :math:`\phi_e` in stage 1, so the default is
  ``train_head=False``; ``train_head=True`` lets the outer Adam step also update the head (by
  the gradient of :math:`\mathcal L'_{outer}`), so that stage 2 starts from a head fitted to
  the meta-learned embedder (the slides do not say what happens to the head).
* **Defaults** (the slides give none): :math:`\alpha` = ``inner_lr`` = 1e-2,
  :math:`\beta` = ``outer_lr`` = 1e-3, :math:`\lambda` = ``outer_weight`` = 5,
  I_1 = ``meta_steps`` = 50, batches of 16 target and 16 proxy samples. Why these: the outer
  loss reaches :math:`\phi_e` only through the virtual step, so its gradient is
  :math:`O(\alpha\lambda)`. Measured on smoke_gunpoint with MiniLM (3 steps, batches of 8),
  :math:`\|\nabla_{\phi_e}\lambda\mathcal L_{outer}\| / \|\nabla_{\phi_e}
  \mathcal L_{inner}\|` is 0.004-0.007 at (alpha, lambda) = (1e-3, 1), 0.04-0.07 at (1e-2, 1),
  0.29-0.33 at (1e-2, 5) and 0.4-0.7 at (3e-2, 3): at the old (1e-3, 1) stage 1 was in effect
  "train the embedder on the task loss". (1e-2, 5) gives the outer term about a quarter of
  the gradient with a small virtual step. The method report records this ratio at every step
  (``curves["grad_ratio"]``, ``grad_ratio_median``), so a run shows what its stage 1 did.
  A stage-1 iteration costs about seven plain training steps (second-order backward through
  the body): about 3 s with MiniLM on one CPU core.
* **Discrepancy distance d**: ``"disagreement"`` (fraction of samples whose subset-argmax
  source class differs from the permuted target label; in [0, 1], matching the algorithm's
  initial value 1), ``"tv"`` (total variation between the source softmax restricted to B
  and the one-hot target, :math:`1 - p_B(\pi(y_i))`), ``"kl"`` (:math:`-\log p_B(\pi(y_i))`,
  unbounded, so its search starts at +inf instead of 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from crossmodal.data.proxies import default_proxy, load_proxy
from crossmodal.errors import InvalidInputError
from crossmodal.features import (
    eval_mode,
    pooled_outputs,
    proxy_body_features,
    source_body_features,
    source_tokens,
    target_features,
)
from crossmodal.losses import task_loss
from crossmodal.methods._stage import Stage
from crossmodal.methods.base import Method, MethodConfig, RunContext, register_method
from crossmodal.methods.recraft import recalibrate_source_head

SIGNS = ("standard", "slides")
DISTANCES = ("disagreement", "tv", "kl")


@dataclass
class MoNAConfig(MethodConfig):
    """MoNA's settings (none are given in the slides; see the module docstring).

    meta_steps : I_1, outer iterations of stage 1 (0: plain fine-tuning).
    inner_lr : alpha, the SGD step of the virtual update.
    outer_lr : beta, the Adam learning rate of the embedder (and head) in stage 1.
    outer_weight : lambda in L'_outer = lambda * L_outer + L_inner.
    meta_batch_size, source_batch_size : target and proxy samples per iteration.
    uniformity_t : t of the uniformity loss (Wang & Isola: 2).
    normalize : L2-normalise features before alignment/uniformity.
    signs : ``"standard"`` (Wang & Isola) or ``"slides"`` (as written in the slides).
    train_head : the outer step also updates the head (Algorithm 1: no, the default).
    proxy, proxy_samples : proxy dataset (None: the body's default) and its size.
    discrepancy_trials : I of Algorithm 2 for the report (0: skip).
    discrepancy_distance : d of Algorithm 2 (``"disagreement"`` | ``"tv"`` | ``"kl"``).
    """

    meta_steps: int = field(
        default=50,
        metadata={"help": "I_1, outer iterations of stage 1 (0: plain fine-tuning)."})
    inner_lr: float = field(
        default=1e-2,
        metadata={"help": "alpha, the SGD step of the virtual update."})
    outer_lr: float = field(
        default=1e-3,
        metadata={"help": "beta, the Adam learning rate of the embedder (and head) in stage 1."})
    outer_weight: float = field(
        default=5.0,
        metadata={"help": "lambda in L'_outer = lambda * L_outer + L_inner."})
    meta_batch_size: int = field(
        default=16,
        metadata={"help": "target samples per stage-1 iteration."})
    source_batch_size: int = field(
        default=16,
        metadata={"help": "proxy samples per stage-1 iteration."})
    uniformity_t: float = field(
        default=2.0,
        metadata={"help": "t of the uniformity loss (Wang & Isola: 2)."})
    normalize: bool = field(
        default=True,
        metadata={"help": "L2-normalise features before alignment/uniformity."})
    signs: str = field(
        default="standard",
        metadata={"help": "``\"standard\"`` (Wang & Isola) or ``\"slides\"`` (as written in the "
                          "slides)."})
    train_head: bool = field(
        default=False,
        metadata={"help": "the outer step also updates the head (Algorithm 1: no, the default)."})
    proxy: str | None = field(
        default=None,
        metadata={"help": "proxy dataset (None: the body's default)."})
    proxy_samples: int = field(default=500, metadata={"help": "proxy samples loaded."})
    discrepancy_trials: int = field(
        default=100,
        metadata={"help": "I of Algorithm 2 for the report (0: skip)."})
    discrepancy_distance: str = field(
        default="disagreement",
        metadata={"help": "d of Algorithm 2 (``\"disagreement\"`` | ``\"tv\"`` | ``\"kl\"``)."})

    def __post_init__(self) -> None:
        if self.signs not in SIGNS:
            raise InvalidInputError(f"signs must be one of {SIGNS}, got {self.signs!r}")
        if self.discrepancy_distance not in DISTANCES:
            raise InvalidInputError(f"discrepancy_distance must be one of {DISTANCES}, got "
                                    f"{self.discrepancy_distance!r}")
        if self.meta_steps < 0 or self.discrepancy_trials < 0:
            raise InvalidInputError("meta_steps and discrepancy_trials must be >= 0")
        if self.meta_batch_size < 1 or self.source_batch_size < 2:
            raise InvalidInputError("meta_batch_size must be >= 1 and source_batch_size >= 2")


# ------------------------------------------------------------- alignment and uniformity


def _check_features(features: Tensor) -> None:
    if features.ndim != 2:
        raise InvalidInputError(f"expected features of shape (n, D), got {tuple(features.shape)}")


def alignment_loss(features: Tensor, labels: Tensor, *, normalize: bool = True) -> Tensor:
    r"""Wang & Isola's alignment over same-class pairs,
    :math:`\mathcal L_{align} = \mathbb E_{i\ne j:\,y_i=y_j}\|f_i-f_j\|_2^2` (0 without pairs)."""
    _check_features(features)
    f = F.normalize(features, dim=1) if normalize else features
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    if not same.any():
        return f.sum() * 0.0
    sq = (f[:, None, :] - f[None, :, :]).pow(2).sum(-1)
    return sq[same].mean()


def uniformity_loss(features: Tensor, *, t: float = 2.0, normalize: bool = True) -> Tensor:
    r"""Wang & Isola's uniformity, :math:`\mathcal L_{uniform} = \log\mathbb E_{i<j}
    e^{-t\|f_i-f_j\|_2^2}` (computed with a log-sum-exp)."""
    _check_features(features)
    if len(features) < 2:
        raise InvalidInputError("uniformity_loss needs at least two features")
    f = F.normalize(features, dim=1) if normalize else features
    sq = torch.pdist(f).pow(2)
    return torch.logsumexp(-t * sq, 0) - math.log(len(sq))


def outer_loss(features: Tensor, labels: Tensor, *, t: float = 2.0, normalize: bool = True,
               signs: str = "standard") -> tuple[Tensor, Tensor, Tensor]:
    """``(L_outer, L_align, L_uniform)``; ``signs="slides"`` negates both terms as the slides do."""
    align = alignment_loss(features, labels, normalize=normalize)
    unif = uniformity_loss(features, t=t, normalize=normalize)
    sign = 1.0 if signs == "standard" else -1.0
    return sign * (align + unif), align, unif


# -------------------------------------------------------------------------- virtual step


def virtual_step(loss: Tensor, params: dict[str, Tensor], lr: float, *,
                 create_graph: bool = True) -> dict[str, Tensor]:
    r"""One SGD step kept in the autograd graph, :math:`\theta^* = \theta - \alpha
    \nabla_\theta\mathcal L`, returned as a new name -> tensor dict (``params`` untouched).

    With ``create_graph=True`` the result is differentiable with respect to whatever
    ``loss`` depends on (second-order meta-gradients). Parameters that ``loss`` does not
    depend on are returned unchanged.
    """
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph,
                                allow_unused=True)
    return {n: params[n] if g is None else params[n] - lr * g for n, g in zip(names, grads)}


def pooled_body_features(body: nn.Module, params: dict[str, Tensor], tokens: Tensor,
                         mask: Tensor) -> Tensor:
    """Body features of proxy tokens with the given (virtual) body parameters, mean-pooled
    over real tokens, padding masked in the attention
    (:func:`crossmodal.features.source_body_features`; differentiable)."""
    return source_body_features(body, tokens, mask, params=params, batch_size=len(tokens),
                                grad=True)


def meta_step(model: nn.Module, task_loss, batch: tuple[Tensor, Tensor],
              source: tuple[Tensor, Tensor, Tensor], cfg: MoNAConfig) -> dict[str, Tensor]:
    r"""One stage-1 iteration's losses; ``total`` = :math:`\mathcal L'_{outer}`, differentiable
    in the embedder and head parameters (through the virtual step of the body)."""
    x, y = batch
    tokens, mask, ys = source
    # Fused attention kernels have no double backward: use the math kernel for the whole
    # second-order graph.
    with sdpa_kernel(SDPBackend.MATH):
        inner = task_loss(model(x), y)
        body_params = dict(model.body.named_parameters())
        updated = virtual_step(inner, body_params, cfg.inner_lr)
        feats = pooled_body_features(model.body, updated, tokens, mask)
    outer, align, unif = outer_loss(feats, ys, t=cfg.uniformity_t, normalize=cfg.normalize,
                                    signs=cfg.signs)
    total = cfg.outer_weight * outer + inner
    return {"total": total, "inner": inner, "outer": outer, "align": align, "uniform": unif}


# ------------------------------------------------------- modality knowledge discrepancy


def _prepare_discrepancy(source_logits, target_labels, num_classes, distance):
    z = torch.as_tensor(source_logits, dtype=torch.float64)
    y = torch.as_tensor(target_labels).long()
    if z.ndim != 2 or y.shape != z.shape[:1]:
        raise InvalidInputError(f"expected source_logits (n, m) and target_labels (n,), got "
                                f"{tuple(z.shape)} and {tuple(y.shape)}")
    if distance not in DISTANCES:
        raise InvalidInputError(f"distance must be one of {DISTANCES}, got {distance!r}")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if z.shape[1] < k:
        raise InvalidInputError(
            f"Algorithm 2 assumes at least as many source classes as target classes; got "
            f"{z.shape[1]} source and {k} target classes (use a proxy with more classes)")
    return z, y, k


def _cost_table(z: Tensor, y: Tensor, subset: tuple[int, ...], k: int, distance: str) -> Tensor:
    """C[a, b]: summed per-sample distance when target class a is mapped to subset slot b."""
    zb = z[:, list(subset)]
    onehot_t = F.one_hot(y, k).to(z.dtype)  # (n, K)
    if distance == "disagreement":
        per = 1.0 - F.one_hot(zb.argmax(1), k).to(z.dtype)  # 1 where slot b is not the argmax
    elif distance == "tv":
        per = 1.0 - zb.softmax(1)
    else:
        per = -zb.log_softmax(1)
    return onehot_t.T @ per  # (K, K)


def _value(cost: Tensor, perm, n: int) -> float:
    return float(cost[torch.arange(len(perm)), torch.as_tensor(perm)].sum()) / n


def modality_discrepancy(source_logits, target_labels, *, trials: int = 100,
                         distance: str = "disagreement", seed: int = 0,
                         num_classes: int | None = None) -> float:
    r"""MoNA's Algorithm 2: random search for :math:`\min_{\pi,B}\frac1n\sum_i
    d(p(y^s_B\mid x_i), p(\pi(y^t)\mid x_i))`.

    Parameters
    ----------
    source_logits : (n, m) logits of the source classifier on the (embedded) target samples.
    target_labels : (n,) integer target labels, K classes (K <= m).
    trials : I, the number of random (subset, permutation) draws.
    distance : ``"disagreement"`` | ``"tv"`` | ``"kl"`` (see the module docstring).
    seed : seeds the draws (a ``torch.Generator``).
    num_classes : K (default ``max(target_labels) + 1``).

    Returns
    -------
    The smallest :math:`D_{exp}` found, starting from 1 (``+inf`` for ``"kl"``).
    """
    z, y, k = _prepare_discrepancy(source_logits, target_labels, num_classes, distance)
    gen = torch.Generator().manual_seed(seed)
    best = 1.0 if distance != "kl" else math.inf
    tables: dict[tuple[int, ...], Tensor] = {}  # a subset drawn again reuses its table
    for _ in range(trials):
        subset = tuple(sorted(torch.randperm(z.shape[1], generator=gen)[:k].tolist()))
        perm = torch.randperm(k, generator=gen).tolist()  # target class a -> slot perm[a]
        if subset not in tables:
            tables[subset] = _cost_table(z, y, subset, k, distance)
        best = min(best, _value(tables[subset], perm, len(y)))
    return best


def modality_discrepancy_exact(source_logits, target_labels, *, distance: str = "disagreement",
                               num_classes: int | None = None, search: str = "assignment",
                               max_evaluations: int = 10_000_000) -> float:
    r"""The exact :math:`D(M^s, M^t)` of the definition: the minimum over every class subset
    B and every permutation.

    ``search="assignment"`` solves the permutation for each subset as a linear assignment
    (the objective is a sum over samples of a cost that depends on the pair (target class,
    subset slot)), so it scales to CIFAR-10-sized sources; ``"brute"`` enumerates all
    :math:`\binom{m}{K} K!` pairs (tiny cases, to check the former).
    """
    from scipy.optimize import linear_sum_assignment

    z, y, k = _prepare_discrepancy(source_logits, target_labels, num_classes, distance)
    m = z.shape[1]
    n_evals = math.comb(m, k) * (math.factorial(k) if search == "brute" else 1)
    if n_evals > max_evaluations:
        raise InvalidInputError(f"exact search needs {n_evals} evaluations (> max_evaluations="
                                f"{max_evaluations}); use modality_discrepancy with trials")
    best = math.inf
    for subset in itertools.combinations(range(m), k):
        cost = _cost_table(z, y, subset, k, distance)
        if search == "assignment":
            rows, cols = linear_sum_assignment(cost.numpy())
            best = min(best, float(cost.numpy()[rows, cols].sum()) / len(y))
        elif search == "brute":
            for perm in itertools.permutations(range(k)):
                best = min(best, _value(cost, perm, len(y)))
        else:
            raise InvalidInputError(f"search must be 'assignment' or 'brute', got {search!r}")
    return best


# ----------------------------------------------------------------------------- method


@register_method
class MoNA(Method):
    name = "mona"
    config_class = MoNAConfig
    paper = "MoNA: modality knowledge alignment (Ma et al., ICML 2024)"

    def before_finetune(self, model: nn.Module, task, splits: dict,
                        ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        report: dict[str, Any] = {"signs": cfg.signs, "meta_steps": cfg.meta_steps,
                                  "train_head": cfg.train_head, "inner_lr": cfg.inner_lr,
                                  "outer_weight": cfg.outer_weight}
        if cfg.meta_steps == 0:
            return report
        gen = torch.Generator().manual_seed(ctx.seed)
        ctx.place(model)  # every stage on the run's device
        proxy = load_proxy(cfg.proxy or default_proxy(model.body.kind, ctx.profile),
                           max_samples=cfg.proxy_samples, seed=ctx.seed, root=ctx.data_root)
        tokens, mask = source_tokens(model.body, proxy)
        ys = torch.as_tensor(proxy.labels)
        x, y = (torch.as_tensor(a) for a in splits["train"])
        report.update(proxy=proxy.name, proxy_samples=len(proxy))

        # Algorithm 2 needs a source classifier over the proxy classes: a linear classifier on
        # the pretrained body's features of the proxy (plain cross-entropy).
        source_clf = None
        can_measure = (cfg.discrepancy_trials > 0 and task.output == "classification"
                       and proxy.num_classes >= task.num_outputs)
        if can_measure:
            source_clf = nn.Linear(model.body.out_size, proxy.num_classes)
            clf_stats = recalibrate_source_head(
                source_clf, proxy_body_features(model.body, proxy), ys, kappa=1.0, rho=0.0,
                epochs=200, lr=1e-2, ctx=ctx, name="MoNA source classifier")
            report["probe_accuracy"] = clf_stats["accuracy"]  # the key results.json has
        else:
            report["discrepancy_skipped"] = (
                "needs a classification task with at most as many classes as the proxy "
                f"({proxy.num_classes}) and discrepancy_trials > 0")

        def discrepancy() -> float:
            # the body is never updated in stage 1: this is g_{theta_0^S} of Algorithm 2 on
            # the current embedder's tokens
            with torch.no_grad(), eval_mode(model):
                logits = source_clf(target_features(model, x)).cpu()
            return modality_discrepancy(logits, y, trials=cfg.discrepancy_trials, seed=ctx.seed,
                                        distance=cfg.discrepancy_distance,
                                        num_classes=task.num_outputs)

        if source_clf is not None:
            report["discrepancy_before"] = discrepancy()

        loss = task_loss(task)
        emb_params = list(model.embedder.parameters())
        params = emb_params + (list(model.head.parameters()) if cfg.train_head else [])
        # the body is not frozen: the virtual step differentiates through its parameters,
        # but only the embedder (and head) are in the optimiser
        stage = Stage("MoNA stage 1", ctx, params, lr=cfg.outer_lr,
                      fix="Lower inner_lr or outer_lr, or check the inputs for extreme values")
        curves: dict[str, list[float]] = {"inner": [], "align": [], "uniform": [], "total": [],
                                          "grad_ratio": []}
        bsz = ctx.stage_batch_size
        # no dropout: the virtual and real passes are one function
        with stage.training(model, model), eval_mode(model):
            for _ in stage.steps(cfg.meta_steps):
                bt = torch.randperm(len(x), generator=gen)[: bsz(cfg.meta_batch_size)]
                bs = torch.randperm(len(ys), generator=gen)[: max(2, bsz(cfg.source_batch_size))]
                out = meta_step(model, loss, stage.put(x[bt], y[bt]),
                                stage.put(tokens[bs], mask[bs], ys[bs]), cfg)
                stage.check(out["total"])
                # the two parts of grad L'_outer separately, to record their ratio on phi_e
                g_outer = torch.autograd.grad(cfg.outer_weight * out["outer"], params,
                                              retain_graph=True, allow_unused=True)
                g_inner = torch.autograd.grad(out["inner"], params, allow_unused=True)
                curves["grad_ratio"].append(gradient_ratio(g_outer[: len(emb_params)],
                                                           g_inner[: len(emb_params)]))
                stage.zero_grad()
                for p, go, gi in zip(params, g_outer, g_inner):
                    parts = [g for g in (go, gi) if g is not None]
                    p.grad = sum(parts) if parts else None
                stage.optimizer_step()
                for key in ("inner", "align", "uniform", "total"):
                    curves[key].append(float(out[key].detach()))
        report["curves"] = curves
        if curves["grad_ratio"]:  # a time budget may stop stage 1 before its first step
            ratios = torch.tensor(curves["grad_ratio"], dtype=torch.float64)
            report["grad_ratio_median"] = float(ratios.median())
            report["grad_ratio_mean"] = float(ratios.mean())
        if source_clf is not None:
            report["discrepancy_after"] = discrepancy()
        return report


def gradient_ratio(outer: Sequence[Tensor | None], inner: Sequence[Tensor | None]) -> float:
    r""":math:`\|\nabla_{\phi_e}\lambda\mathcal L_{outer}\| / \|\nabla_{\phi_e}\mathcal L_{inner}\|`
    over all embedder parameters (missing gradients count as 0; inf when the inner one is 0)."""
    def norm(grads):
        return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))

    num, den = norm(outer), norm(inner)
    return num / den if den > 0 else math.inf


# ------------------------------------------------ discrepancy studies (notebooks, reports)


def num_candidates(num_source: int, num_target: int) -> int:
    r"""Pairs (B, pi) that the exact search visits: :math:`\binom{m}{K} K!`."""
    if not 1 <= num_target <= num_source:
        raise InvalidInputError(f"need 1 <= K <= m target/source classes, got K={num_target}, "
                                f"m={num_source}")
    return math.comb(num_source, num_target) * math.factorial(num_target)


def trials_to_cover(n_candidates: int, miss_probability: float = 1e-9) -> int:
    r"""Random trials after which every one of ``n_candidates`` equally likely pairs has been
    drawn, except with probability at most ``miss_probability``.

    By the union bound, :math:`P(\text{some pair missed}) \le P\,(1 - 1/P)^T`, so
    :math:`T = \lceil \log(p/P) / \log(1 - 1/P) \rceil` trials suffice (P = n_candidates).
    Algorithm 2 then returns the exact minimum with probability at least ``1 - p``.
    """
    if n_candidates < 1 or not 0 < miss_probability < 1:
        raise InvalidInputError("need n_candidates >= 1 and 0 < miss_probability < 1")
    if n_candidates == 1:
        return 1
    return max(1, math.ceil(math.log(miss_probability / n_candidates)
                            / math.log1p(-1.0 / n_candidates)))


def approximation_study(source_logits, target_labels, *, trials=(1, 10, 100),
                        distance: str = "disagreement", seed: int = 0,
                        num_classes: int | None = None, miss_probability: float = 1e-9,
                        brute_limit: int = 50_000) -> list[dict[str, Any]]:
    r"""Algorithm 2's approximation against the exact :math:`D(M^s, M^t)`, per number of trials.

    Every trial count uses the same seed, so the draws of a smaller count are a prefix of
    those of a larger one and the approximation can only decrease with the trials. The last
    row always uses :func:`trials_to_cover` trials. The exact value comes from the
    linear-assignment search, checked against brute force when the number of candidate pairs
    is at most ``brute_limit``.

    Returns
    -------
    One dict per trial count: ``trials``, ``approx``, ``exact``, ``excess`` (approx - exact,
    >= 0 by construction), ``candidates`` (:math:`\binom{m}{K}K!`), ``covers_all`` (trials
    >= :func:`trials_to_cover`), ``exact_brute`` (None when skipped) and ``distance``.
    """
    z, y, k = _prepare_discrepancy(source_logits, target_labels, num_classes, distance)
    cands = num_candidates(z.shape[1], k)
    cover = trials_to_cover(cands, miss_probability)
    exact = modality_discrepancy_exact(z, y, distance=distance, num_classes=k)
    brute = (modality_discrepancy_exact(z, y, distance=distance, num_classes=k, search="brute")
             if cands <= brute_limit else None)
    rows = []
    for t in sorted({int(t) for t in trials} | {cover}):
        approx = modality_discrepancy(z, y, trials=t, distance=distance, seed=seed,
                                      num_classes=k)
        rows.append({"distance": distance, "trials": t, "approx": approx, "exact": exact,
                     "excess": approx - exact, "candidates": cands, "covers_all": t >= cover,
                     "exact_brute": brute})
    return rows


def source_classifier(body: nn.Module, *, proxy: str | None = None, proxy_samples: int = 200,
                      profile: str = "smoke", seed: int = 0, epochs: int = 200,
                      lr: float = 1e-2) -> tuple[nn.Linear, dict[str, float]]:
    """The source classifier of Algorithm 2: a linear probe on the body's features of the proxy.

    The proxy goes through the body's own pretrained input layer and the body (mean-pooled
    outputs); the probe is fitted with plain cross-entropy (full batch, Adam, ``epochs``
    steps, seeded initialisation), as :class:`MoNA` does for its report. Returns the probe
    and its training loss/accuracy.
    """
    data = load_proxy(proxy or default_proxy(body.kind, profile), max_samples=proxy_samples,
                      seed=seed)
    feats = proxy_body_features(body, data)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the probe's initialisation, without moving the caller's RNG
    head = nn.Linear(body.out_size, data.num_classes)
    torch.random.set_rng_state(gen_state)
    stats = recalibrate_source_head(head, feats, torch.as_tensor(data.labels), kappa=1.0,
                                    rho=0.0, epochs=epochs, lr=lr)
    return head, {"loss": stats["loss"], "accuracy": stats["accuracy"],
                  "num_source_classes": data.num_classes, "proxy": data.name}


class DiscrepancyProbe:
    r"""Algorithm 2's discrepancy of a model during fine-tuning (a probe of
    :func:`crossmodal.runner.run`).

    Algorithm 2 computes the source logits with the *source pretrained model*
    :math:`z_i = g_{\theta_0^S}(x^t_i)`, on the shared input space that the target embedder
    makes (the definition's :math:`\hat X`). So at its first call in a run (after the
    method's stage 1, before fine-tuning, while the body is still the pretrained one) the
    probe keeps a frozen copy of the pretrained body :math:`\theta_{f_0}^S` and fits the
    source classifier :math:`h_0^S` on it (:func:`source_classifier`). Then, at that call and
    after every fine-tuning epoch, it measures

    * ``discrepancy`` (Algorithm 2, ``trials`` random draws) and ``discrepancy_exact``: D of
      :math:`h_0^S(f(e(x); \theta^S_{f_0}))` with the model's *current* embedder e and the
      *pretrained* body, i.e. how well the embedding lets the source model's knowledge
      explain the target labels (what MoNA's stage 1 is meant to lower);
    * ``discrepancy_finetuned_body_exact``: the same probe on the *fine-tuned* body's features,
      a different quantity (the fixed source classifier read off a body that moved), kept
      under its own name because it mixes the two.

    on (at most ``max_samples``) target training samples drawn at random with ``seed`` (once
    per run; stored order can be sorted by class). Neither is the slides' Fig. 16, which is
    linear probing of the fine-tuned model on CIFAR-10. The first call also returns the
    source logits and labels (for :func:`approximation_study`).

    Tasks that are not classification, or have more classes than the proxy, are reported as
    skipped (Algorithm 2 assumes :math:`|Y^s| \ge |Y^t|`).
    """

    def __init__(self, *, trials: int = 100, distance: str = "disagreement",
                 proxy: str | None = None, proxy_samples: int = 200, max_samples: int = 256,
                 seed: int = 0) -> None:
        if distance not in DISTANCES:
            raise InvalidInputError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if trials < 1 or proxy_samples < 2 or max_samples < 1:
            raise InvalidInputError("need trials >= 1, proxy_samples >= 2 and max_samples >= 1")
        self.trials, self.distance, self.seed = trials, distance, seed
        self.proxy, self.proxy_samples, self.max_samples = proxy, proxy_samples, max_samples
        self._run: tuple | None = None  # (source classifier, stats, pretrained body, indices)
        self._classifiers: dict[tuple, tuple] = {}

    def __call__(self, model: nn.Module, method, task, splits: dict,
                 record: dict | None) -> dict[str, Any]:
        import copy

        if task.output != "classification":
            return {"skipped": f"{task.key} is {task.output}; Algorithm 2 needs class labels"}
        x, y = splits["train"]
        if record is None:  # a new run starts: fit the source classifier on the pretrained body
            # keyed by the body's weights: runs that start from the same body share it
            key = (model.body.name, float(sum(p.detach().double().sum()
                                              for p in model.body.parameters())))
            if key not in self._classifiers:
                self._classifiers[key] = source_classifier(
                    model.body, proxy=self.proxy, proxy_samples=self.proxy_samples,
                    seed=self.seed)
            source = getattr(model.body, "_source", None)
            body0 = copy.deepcopy(model.body).eval().requires_grad_(False)
            if source is not None:
                body0._source = source  # the pretrained input layer is read-only: share it
            gen = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(y), generator=gen)[: self.max_samples].sort().values
            self._run = (*self._classifiers[key], body0, idx)
        if self._run is None:
            raise InvalidInputError("DiscrepancyProbe missed the call before fine-tuning; pass "
                                    "it to crossmodal.runner.run(probe=...) of a fresh run")
        head, stats, body0, idx = self._run
        if stats["num_source_classes"] < task.num_outputs:
            return {"skipped": f"{task.key} has {task.num_outputs} classes, the proxy "
                               f"{stats['proxy']} {stats['num_source_classes']}"}
        xs = torch.as_tensor(np.asarray(x)[idx.numpy()])
        ys = torch.as_tensor(np.asarray(y)[idx.numpy()])
        device = next(model.parameters()).device
        with torch.no_grad(), eval_mode(model):
            emb = torch.cat([model.embedder(xs[i : i + 64].to(device))
                             for i in range(0, len(xs), 64)])
            pooled0 = pooled_outputs(body0, emb, 64, emb.device)
            logits = head(pooled0.cpu()).double()
            tuned = head(target_features(model, xs).cpu()).double()
        k = task.num_outputs
        out: dict[str, Any] = {
            "discrepancy": modality_discrepancy(logits, ys, trials=self.trials,
                                                distance=self.distance, seed=self.seed,
                                                num_classes=k),
            "discrepancy_exact": modality_discrepancy_exact(logits, ys, distance=self.distance,
                                                            num_classes=k),
            "discrepancy_finetuned_body_exact": modality_discrepancy_exact(
                tuned, ys, distance=self.distance, num_classes=k),
            "distance": self.distance, "trials": self.trials, "samples": len(ys),
        }
        if record is None:
            out.update(source_probe_accuracy=stats["accuracy"], proxy=stats["proxy"],
                       source_logits=logits.tolist(), target_labels=ys.tolist())
        return out


__all__ = [
    "DiscrepancyProbe", "MoNA", "MoNAConfig", "alignment_loss", "approximation_study",
    "gradient_ratio",
    "num_candidates", "source_classifier", "trials_to_cover", "meta_step", "modality_discrepancy",
    "modality_discrepancy_exact", "outer_loss", "uniformity_loss", "virtual_step",
]
