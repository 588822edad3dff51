r"""RECRAFT (Tran et al.): rethinking cross-modal fine-tuning through a target-error bound.

The paper bounds the generalised target error by four terms,

.. math::

    \mathcal L_t \;\le\; \underbrace{\mathcal L_s}_{\text{source error}}
    + \underbrace{\kappa\,W_1(\mu_s, \mu_t)}_{\text{FA}}
    + \underbrace{H(Y_t \mid \hat Y_s)}_{\text{FLD}}
    + \underbrace{\mathrm{TF}}_{\text{target fitting}}

and minimises it in two stages:

* **Stage 1a, recalibration** (Eq. 13, App. F): refit the source head ``h_s`` (a linear
  classifier over the proxy's classes, on mean-pooled body features) with the cross-entropy
  plus the hinge penalty ``rho * mean(max(0, ||grad_z CE(h_s(z), y)|| - kappa)^2)``, so that
  the source loss is (about) kappa-Lipschitz in the features ``z`` on the proxy data.
* **Stage 1b, feature alignment** (Eq. 14): ``fa_epochs`` epochs of training the target
  embedder on ``kappa * W1`` (Euclidean cost, entropic Sinkhorn of POT, or exact EMD)
  between the proxy's body features and the target's body features.
* **Stage 1c, feature-label distortion** (Eqs. 15-21): ``fld_epochs`` epochs of training the
  target embedder on the conditional entropy ``H(Y_t | Y^_s)`` of the target labels given the
  source head's pseudo-labels, estimated from soft counts (LEEP-style, differentiable).
  Continuous or multi-label targets are discretised into ``label_bins`` classes first.
* **Stage 2, target predictor** (Eqs. 23-25): the predictor is a learnable transport
  ``T(y_t | y_s)`` composed with the source head, ``p_t(y_t|x) = sum_s T(y_t|s) p_s(s|x)``,
  trained with the target loss.

Choices where the paper (whose formulas were lost in our copy) leaves room, all ours:

* **Representation space.** Features are the body's *output* tokens mean-pooled (the source
  head's input), for both FA and the Lipschitz penalty, so that the Lipschitz constant and
  the W1 cost live on the same space, as the bound needs. (khiembk/RECRAFT penalises the
  gradient at the embedder output instead; that needs a double backward through the body on
  every proxy sample.) During stage 1 only the embedder trains; gradients pass through the
  frozen body.
* **Source head.** The smoke/lab bodies have no classifier for the proxy classes, so the
  source head is fitted from scratch on the proxy with the penalty (full batch, Adam,
  ``recal_epochs`` steps, ``recal_lr``). A fraction ``proxy_holdout`` of the proxy is held
  out to measure the source error of the bound.
* **Sinkhorn.** POT's ``sinkhorn2`` (log-domain) needs an explicit regularisation; we use
  ``fa_reg`` times the mean cost of the current batch (a scale-free choice, the scale is not
  differentiated). The value is the transport cost ``<P, C>`` of the entropic plan.
* **Proxy size.** Every proxy sample goes through the body (64 tokens, about 40 ms each
  with MiniLM on one CPU core), so ``proxy_samples`` defaults to 500 rather than ORCA's 5000.
* **Stage-1 batches.** Each stage-1 epoch runs over at most ``stage1_samples`` random target
  training samples in mini-batches of ``stage1_batch_size``, one Adam step (``stage1_lr``)
  per batch; FA compares each batch with all proxy features.
* **Discretisation.** Multi-label targets use the index of their first positive label;
  continuous targets get k-means cluster ids (k = ``label_bins``), as in ORCA.
* **Predictor.** ``predictor="auto"`` uses the transport for classification tasks with at
  most as many classes as the proxy, else the task head: a transport from C_s source labels
  can only produce predictions in the convex hull of C_s rows, so it cannot separate more
  than C_s target classes (e.g. CIFAR-100 from a CIFAR-10 source). ``"transport"`` forces it
  (classification only), ``"head"`` uses the ordinary task head. The transport starts at the
  FLD-minimising transport ``T* = P^(y_t | y^_s)`` of the training data (Eq. 46).
* **Stage-2 parameters.** ``finetune="all"`` trains everything (ORCA's protocol, which the
  paper adopts); ``"predictor"`` trains only the transport (or the task head), the paper's
  "learning focuses on T".
* **TF in the bound** (App. B, Eqs. 46-48): with ``q = T* o p_s`` the transported source
  predictor, ``TF = L_t - CE(q)``, the excess cross-entropy of the target predictor over
  ``q`` (the difference of the KL divergences of the empirical target conditional to the
  two predictors). Jensen's inequality gives ``CE(q) <= H(Y_t | Y^_s)`` exactly, so
  ``L_t <= FLD + TF``; source error and FA are the non-negative overhead of moving from the
  source to the target feature distribution. :func:`bound_terms` is defined for class labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from crossmodal.errors import InvalidInputError
from crossmodal.methods.base import Method, MethodConfig, RunContext, register_method
from crossmodal.proxies import default_proxy, load_proxy, source_tokens

FA_SOLVERS = ("sinkhorn", "emd")
PREDICTORS = ("auto", "transport", "head")
FINETUNE = ("all", "predictor")


@dataclass
class RECRAFTConfig(MethodConfig):
    """RECRAFT's settings (paper values in brackets, Tables 8/9).

    kappa : Lipschitz threshold of the source loss [0.5 RoBERTa, 0.3 Swin].
    rho : strength of the hinge gradient penalty of the recalibration [100 in the public code].
    recal_epochs, recal_lr : full-batch Adam steps and learning rate of the recalibration.
    fa_epochs : stage-1b epochs on the FA loss [60].
    fld_epochs : stage-1c epochs on the FLD loss [4; 2 for ECG and DeepSEA].
    stage1_lr, stage1_batch_size, stage1_samples : Adam learning rate of the embedder, batch
        size, and target samples per stage-1 epoch.
    fa_solver : ``"sinkhorn"`` (entropic, POT, the paper's) or ``"emd"`` (exact W1).
    fa_reg : entropic regularisation, relative to the mean cost of the batch.
    label_bins : classes of discretised continuous targets [10].
    predictor : ``"auto"`` | ``"transport"`` | ``"head"`` (see the module docstring).
    finetune : ``"all"`` or ``"predictor"`` (what stage 2 trains).
    proxy, proxy_samples, proxy_holdout : proxy dataset (None: the body's default), how many
        samples, and the fraction held out for the bound's source error.
    """

    kappa: float = 0.5
    rho: float = 100.0
    recal_epochs: int = 300
    recal_lr: float = 1e-2
    fa_epochs: int = 60
    fld_epochs: int = 4
    stage1_lr: float = 1e-3
    stage1_batch_size: int = 32
    stage1_samples: int = 256
    fa_solver: str = "sinkhorn"
    fa_reg: float = 0.05
    label_bins: int = 10
    predictor: str = "auto"
    finetune: str = "all"
    proxy: str | None = None
    proxy_samples: int = 500
    proxy_holdout: float = 0.2

    def __post_init__(self) -> None:
        for name, valid in (("fa_solver", FA_SOLVERS), ("predictor", PREDICTORS),
                            ("finetune", FINETUNE)):
            if getattr(self, name) not in valid:
                raise InvalidInputError(f"{name} must be one of {valid}, got "
                                        f"{getattr(self, name)!r}")
        if not self.kappa > 0:
            raise InvalidInputError(f"kappa must be > 0, got {self.kappa}")
        if self.rho < 0 or self.fa_reg <= 0:
            raise InvalidInputError("rho must be >= 0 and fa_reg > 0")
        for name in ("recal_epochs", "fa_epochs", "fld_epochs"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.label_bins < 2:
            raise InvalidInputError(f"label_bins must be >= 2, got {self.label_bins}")
        if not 0 < self.proxy_holdout < 1:
            raise InvalidInputError(f"proxy_holdout must lie in (0, 1), got {self.proxy_holdout}")


# ----------------------------------------------------------------------------- features


def masked_mean(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over the sequence axis of ``(n, N, D)`` tokens, over real tokens where ``mask`` is 1."""
    from crossmodal.proxies import masked_token_mean  # Swin: 3136 tokens in, 49 out

    return masked_token_mean(tokens, mask)


@torch.no_grad()
def body_source_features(body: nn.Module, tokens: Tensor, mask: Tensor,
                         batch_size: int = 64) -> Tensor:
    """Proxy tokens (from the body's pretrained input layer) through the body, mean-pooled."""
    was_training = body.training
    body.eval()
    try:
        return torch.cat([masked_mean(body(tokens[i : i + batch_size]), mask[i : i + batch_size])
                          for i in range(0, len(tokens), batch_size)])
    finally:
        body.train(was_training)


def target_features(model: nn.Module, x: Tensor, batch_size: int = 64) -> Tensor:
    """Mean-pooled body features of target inputs (gradients flow when enabled)."""
    return torch.cat([model.features(x[i : i + batch_size]).mean(1)
                      for i in range(0, len(x), batch_size)])


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on the parameters of ``modules``."""
    params = [p for m in modules for p in m.parameters()]
    state = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, s in zip(params, state):
            p.requires_grad_(s)


# ------------------------------------------------------------------ stage 1a: recalibration


def input_gradient_norms(head: nn.Module, features: Tensor, labels: Tensor, *,
                         create_graph: bool = False, method: str = "auto") -> Tensor:
    r"""Per-sample ``||\nabla_z CE(h(z), y)||_2`` at ``z = features``, shape ``(n,)``.

    For a linear head the gradient has the closed form :math:`W^\top(\mathrm{softmax}(Wz+b)
    - e_y)` (``method="auto"``); otherwise (or with ``method="autograd"``) it comes from
    autograd: the samples are independent, so the gradient of the summed loss with respect
    to the batch holds each sample's own gradient in its row. ``create_graph=True`` keeps
    the result differentiable with respect to the head's parameters.
    """
    labels = labels.long()
    if method == "auto" and isinstance(head, nn.Linear):
        with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
            residual = head(features.detach()).softmax(1) - F.one_hot(
                labels, head.out_features).to(features.dtype)
            norms = (residual @ head.weight).norm(dim=1)
        return norms if create_graph else norms.detach()
    z = features.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(head(z), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, z, create_graph=create_graph)
    return grad.norm(dim=1)


def lipschitz_penalty(head: nn.Module, features: Tensor, labels: Tensor,
                      kappa: float) -> Tensor:
    r"""Hinge penalty of RECRAFT's recalibration (Eq. 13),
    :math:`\frac1n\sum_i \max(0, \|\nabla_z \ell(h(z_i), y_i)\|_2 - \kappa)^2`.

    Differentiable with respect to the head's parameters (double backward).
    """
    norms = input_gradient_norms(head, features, labels, create_graph=True)
    return F.relu(norms - kappa).pow(2).mean()


def recalibrate_source_head(head: nn.Module, features: Tensor, labels: Tensor, *,
                            kappa: float, rho: float = 100.0, epochs: int = 300,
                            lr: float = 1e-2) -> dict[str, float]:
    r"""Fit ``head`` on proxy features with :math:`CE + \rho\,\mathrm{penalty}_\kappa` (full batch).

    Returns the final proxy cross-entropy, accuracy and the mean, 95th percentile and
    maximum of the per-sample input-gradient norms (which should be close to or below
    ``kappa``).
    """
    labels = labels.long()
    features = features.detach()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(features), labels)
        if rho > 0:
            loss = loss + rho * lipschitz_penalty(head, features, labels, kappa)
        loss.backward()
        opt.step()
    return source_head_stats(head, features, labels)


def source_head_stats(head: nn.Module, features: Tensor, labels: Tensor) -> dict[str, float]:
    """Cross-entropy, accuracy and input-gradient norms of a source head on labelled features."""
    with torch.no_grad():
        logits = head(features)
        ce = float(F.cross_entropy(logits, labels.long()))
        acc = float((logits.argmax(1) == labels).float().mean())
    norms = input_gradient_norms(head, features, labels).detach()
    return {"loss": ce, "accuracy": acc, "grad_norm_mean": float(norms.mean()),
            "grad_norm_p95": float(norms.quantile(0.95)), "grad_norm_max": float(norms.max())}


# -------------------------------------------------------------------- stage 1b: FA (W1)


def wasserstein1(xs: Tensor, xt: Tensor, *, solver: str = "sinkhorn",
                 reg: float = 0.05) -> Tensor:
    r"""W1 with Euclidean cost between two uniform point clouds, differentiable.

    ``solver="emd"``: exact (``ot.emd2``); ``"sinkhorn"``: the cost :math:`\langle P, C\rangle`
    of POT's log-domain entropic plan with regularisation ``reg * mean(C)``. Gradients reach
    the points through the cost matrix (the plan is treated as fixed, the envelope theorem).
    """
    import ot

    if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1]:
        raise InvalidInputError(f"wasserstein1 needs (n, D) and (m, D) features, got "
                                f"{tuple(xs.shape)} and {tuple(xt.shape)}")
    if solver not in FA_SOLVERS:
        raise InvalidInputError(f"solver must be one of {FA_SOLVERS}, got {solver!r}")
    cost = torch.cdist(xs.double(), xt.double())
    a = torch.full((len(xs),), 1.0 / len(xs), dtype=cost.dtype)
    b = torch.full((len(xt),), 1.0 / len(xt), dtype=cost.dtype)
    if solver == "emd":
        return ot.emd2(a, b, cost).to(xs.dtype)
    scale = cost.detach().mean().clamp_min(1e-12)
    plan = ot.sinkhorn(a, b, cost.detach() / scale, reg, method="sinkhorn_log",
                       numItermax=10000, stopThr=1e-6)
    return (plan.detach() * cost).sum().to(xs.dtype)


def feature_alignment(source_features: Tensor, target_feats: Tensor, kappa: float, *,
                      solver: str = "sinkhorn", reg: float = 0.05) -> Tensor:
    r"""RECRAFT's FA surrogate (Eq. 14): :math:`\kappa\, W_1(\mu_s, \mu_t)`, Euclidean cost."""
    return kappa * wasserstein1(source_features, target_feats, solver=solver, reg=reg)


# ------------------------------------------------------------------- stage 1c: FLD


def soft_joint(source_probs: Tensor, target_labels: Tensor, num_classes: int | None = None
               ) -> Tensor:
    r"""Soft-count joint :math:`\hat P(y_t = a, \hat y_s = b) = \frac1n\sum_i 1[y_i=a]\,p_i(b)`,
    shape ``(K, C_s)``."""
    if source_probs.ndim != 2 or target_labels.shape != source_probs.shape[:1]:
        raise InvalidInputError(f"expected source_probs (n, C_s) and target_labels (n,), got "
                                f"{tuple(source_probs.shape)} and {tuple(target_labels.shape)}")
    k = int(num_classes if num_classes is not None else int(target_labels.max()) + 1)
    onehot = F.one_hot(target_labels.long(), k).to(source_probs.dtype)
    return onehot.T @ source_probs / len(source_probs)


def conditional_entropy(source_probs: Tensor, target_labels: Tensor,
                        num_classes: int | None = None, eps: float = 1e-12) -> Tensor:
    r"""FLD surrogate (Eq. 21): :math:`H(Y_t\mid\hat Y_s) = -\sum_{a,b}\hat P(a,b)
    \log\frac{\hat P(a,b)}{\hat P(b)}` in nats, from soft counts.

    Parameters
    ----------
    source_probs : (n, C_s) source-head probabilities of the target samples (rows sum to 1);
        one-hot rows give the paper's hard counts.
    target_labels : (n,) integer target classes.
    num_classes : K (default: ``max(target_labels) + 1``).

    Zero when the pseudo-labels determine the target label, ``H(Y_t)`` when independent of it.
    """
    joint = soft_joint(source_probs, target_labels, num_classes)
    marginal = joint.sum(0, keepdim=True)
    # clamping keeps 0 log 0 = 0 and finite gradients at empty cells
    ratio = joint.clamp_min(eps) / marginal.clamp_min(eps)
    return -(joint * ratio.log()).sum()


def fld_transport(source_probs: Tensor, target_labels: Tensor, num_classes: int | None = None,
                  smoothing: float = 0.0) -> Tensor:
    r"""The FLD-minimising transport :math:`T^*(a\mid b) = \hat P(a, b)/\hat P(b)`, shape
    ``(C_s, K)`` (row b: distribution over target classes); uniform rows for unused b."""
    joint = soft_joint(source_probs, target_labels, num_classes).T + smoothing
    total = joint.sum(1, keepdim=True)
    k = joint.shape[1]
    return torch.where(total > 0, joint / total.clamp_min(1e-30), torch.full_like(joint, 1 / k))


def discretize_labels(task, y: np.ndarray, bins: int = 10, seed: int = 0) -> np.ndarray:
    """Class labels for the FLD: the labels, first positive of multi-label targets, or
    k-means cluster ids of flattened continuous targets (``bins`` clusters)."""
    if task.output == "classification":
        return np.asarray(y, dtype=np.int64)
    y = np.asarray(y)
    if task.output == "multilabel":
        return np.where(y.any(1), y.argmax(1), 0).astype(np.int64)
    from sklearn.cluster import KMeans

    flat = y.reshape(len(y), -1).astype(np.float64)
    k = min(bins, len(np.unique(flat, axis=0)))
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(flat)
    return labels.astype(np.int64)


# ------------------------------------------------------------------ stage 2: predictor


class TransportPredictor(nn.Module):
    r"""Target predictor of Eq. 23: :math:`p_t(a\mid x) = \sum_b T(a\mid b)\,p_s(b\mid x)`.

    ``p_s`` is the source head on mean-pooled body tokens; ``T`` a row-stochastic ``(C_s, K)``
    matrix parameterised by a softmax over its rows. ``forward`` returns ``log p_t``, which
    cross-entropy and argmax treat as logits.
    """

    def __init__(self, source_head: nn.Module, num_source: int, num_target: int) -> None:
        super().__init__()
        self.source_head = source_head
        self.transport_logits = nn.Parameter(torch.zeros(num_source, num_target))

    def transport(self) -> Tensor:
        return self.transport_logits.softmax(dim=1)

    @torch.no_grad()
    def set_transport(self, transport: Tensor, floor: float = 1e-3) -> None:
        """Start from a given transport (rows are renormalised after adding ``floor``)."""
        t = transport + floor
        self.transport_logits.copy_((t / t.sum(1, keepdim=True)).log())

    def forward(self, tokens: Tensor) -> Tensor:
        probs = self.source_head(tokens.mean(1)).softmax(dim=1) @ self.transport()
        return probs.clamp_min(1e-12).log()


# ---------------------------------------------------------------------------- the bound


@torch.no_grad()
def bound_terms(model: nn.Module, source_data: tuple[Tensor, Tensor],
                target_data: tuple[Any, Any], *, kappa: float, source_head: nn.Module | None = None,
                solver: str = "sinkhorn", reg: float = 0.05, batch_size: int = 64
                ) -> dict[str, float]:
    r"""The terms of RECRAFT's bound (App. B) for a trained model, on held-out data.

    Parameters
    ----------
    model : has ``features(x) -> (B, N, D)`` body tokens and ``model(x) -> (B, K)`` class
        logits (or log-probabilities), and ``model.extras["source_head"]`` unless
        ``source_head`` is given.
    source_data : ``(features (n_s, D), labels (n_s,))``: held-out proxy samples through the
        body, mean-pooled (see :func:`body_source_features`).
    target_data : ``(x, y)``: held-out target inputs and integer class labels.
    kappa : the Lipschitz constant multiplying W1 (vary it for the kappa-sensitivity study).
    solver, reg : the W1 solver (see :func:`wasserstein1`).

    Returns
    -------
    ``source_error`` (proxy cross-entropy of the source head), ``fa`` (kappa * W1),
    ``fld`` (H(Y_t | Y^_s)), ``tf`` (L_t - CE of the transported source predictor),
    ``bound`` (their sum), ``target_loss`` (cross-entropy of the model), ``transport_ce``
    and ``gap`` = (bound - target_loss) / target_loss. All in nats.
    """
    head = source_head if source_head is not None else model.extras["source_head"]
    xs_feat, ys = source_data
    x, y = (torch.as_tensor(a) for a in target_data)
    if y.is_floating_point() or y.ndim != 1:
        raise InvalidInputError("bound_terms needs integer class labels (n,) for the target; "
                                "discretise continuous targets first (discretize_labels)")
    was_training = model.training
    model.eval()
    try:
        ft = target_features(model, x, batch_size)
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    k = max(int(y.max()) + 1, logits.shape[1])
    source_error = float(F.cross_entropy(head(xs_feat), torch.as_tensor(ys).long()))
    fa = float(feature_alignment(xs_feat, ft, kappa, solver=solver, reg=reg))
    probs = head(ft).softmax(1)
    fld = float(conditional_entropy(probs, y, k))
    q = probs @ fld_transport(probs, y, k)
    transport_ce = float(-q.gather(1, y.long()[:, None]).clamp_min(1e-12).log().mean())
    target_loss = float(F.cross_entropy(logits, y.long()))
    tf = target_loss - transport_ce
    bound = source_error + fa + fld + tf
    return {"source_error": source_error, "fa": fa, "fld": fld, "tf": tf, "bound": bound,
            "target_loss": target_loss, "transport_ce": transport_ce,
            "gap": (bound - target_loss) / max(target_loss, 1e-12), "kappa": kappa}


# ----------------------------------------------------------------------------- method


def _proxy(model: nn.Module, cfg, ctx: RunContext):
    name = cfg.proxy or default_proxy(model.body.kind, ctx.profile)
    return load_proxy(name, max_samples=cfg.proxy_samples, seed=ctx.seed)


@register_method
class RECRAFT(Method):
    name = "recraft"
    config_class = RECRAFTConfig
    paper = "RECRAFT: rethinking cross-modal fine-tuning (Tran et al.)"

    def __init__(self, config: RECRAFTConfig | None = None) -> None:
        super().__init__(config)
        self.source_holdout: tuple[Tensor, Tensor] | None = None  # set by pretrain

    def resolved_predictor(self, task, num_source: int) -> str:
        cfg = self.config
        if cfg.predictor == "transport" and task.output != "classification":
            raise InvalidInputError(
                f"predictor='transport' needs a classification task; {task.key} is "
                f"{task.output}. Use predictor='head' (or 'auto')"
            )
        if cfg.predictor != "auto":
            return cfg.predictor
        ok = task.output == "classification" and task.num_outputs <= num_source
        return "transport" if ok else "head"

    def prepare(self, model: nn.Module, task, ctx: RunContext) -> None:
        proxy = _proxy(model, self.config, ctx)
        head = nn.Linear(model.body.out_size, proxy.num_classes)
        model.extras["source_head"] = head
        if self.resolved_predictor(task, proxy.num_classes) == "transport":
            model.head = TransportPredictor(head, proxy.num_classes, task.num_outputs)

    def pretrain(self, model: nn.Module, task, splits: dict, ctx: RunContext) -> dict[str, Any]:
        cfg = self.config
        gen = torch.Generator().manual_seed(ctx.seed)
        head = model.extras["source_head"]
        proxy = _proxy(model, cfg, ctx)
        tokens, mask = source_tokens(model.body, proxy)
        feats = body_source_features(model.body, tokens, mask)
        labels = torch.as_tensor(proxy.labels)
        order = torch.randperm(len(feats), generator=gen)
        n_hold = max(1, int(round(cfg.proxy_holdout * len(feats))))
        hold, fit_idx = order[:n_hold], order[n_hold:]
        report: dict[str, Any] = {"proxy": proxy.name, "proxy_samples": len(proxy),
                                  "num_source_classes": proxy.num_classes, "kappa": cfg.kappa}

        # Stage 1a: kappa-Lipschitz recalibration of the source head on the proxy
        report["recalibration"] = recalibrate_source_head(
            head, feats[fit_idx], labels[fit_idx], kappa=cfg.kappa, rho=cfg.rho,
            epochs=cfg.recal_epochs, lr=cfg.recal_lr)
        report["recalibration_holdout"] = source_head_stats(head, feats[hold], labels[hold])
        self.source_holdout = (feats[hold], labels[hold])

        x, y = splits["train"]
        xt = torch.as_tensor(x)
        yt = torch.as_tensor(discretize_labels(task, y, cfg.label_bins, ctx.seed))
        k = int(yt.max()) + 1
        source_fit = feats[fit_idx]

        def fa_loss(xb: Tensor, yb: Tensor) -> Tensor:
            return feature_alignment(source_fit, target_features(model, xb), cfg.kappa,
                                     solver=cfg.fa_solver, reg=cfg.fa_reg)

        def fld_loss(xb: Tensor, yb: Tensor) -> Tensor:
            probs = head(target_features(model, xb)).softmax(1)
            return conditional_entropy(probs, yb, k)

        with frozen(model.body, model.head, model.extras):
            report["fa_curve"] = self._train_embedder(model, xt, yt, fa_loss, cfg.fa_epochs,
                                                      gen, ctx, "RECRAFT FA")
            report["fld_curve"] = self._train_embedder(model, xt, yt, fld_loss, cfg.fld_epochs,
                                                       gen, ctx, "RECRAFT FLD")
            sub = torch.randperm(len(xt), generator=gen)[: cfg.stage1_samples]
            with torch.no_grad():
                model.eval()
                probs = head(target_features(model, xt[sub])).softmax(1)
                report["fa_after"] = float(feature_alignment(
                    source_fit, target_features(model, xt[sub]), cfg.kappa,
                    solver=cfg.fa_solver, reg=cfg.fa_reg))
                report["fld_after"] = float(conditional_entropy(probs, yt[sub], k))
                model.train()

        predictor = self.resolved_predictor(task, proxy.num_classes)
        report["predictor"] = predictor
        if predictor == "transport":
            # start from the FLD-minimising transport of the training data (Eq. 46)
            model.head.set_transport(fld_transport(probs, yt[sub], task.num_outputs))
        return report

    def _train_embedder(self, model, xt, yt, loss_fn, epochs, gen, ctx, desc) -> list[float]:
        cfg = self.config
        if epochs == 0:
            return []
        opt = torch.optim.Adam(model.embedder.parameters(), lr=cfg.stage1_lr)
        curve = []
        budget, bsz = ctx.budget(), ctx.stage_batch_size(cfg.stage1_batch_size)
        for _ in budget.loop(tqdm(range(epochs), desc=desc, disable=not ctx.progress,
                                  leave=False)):
            idx = torch.randperm(len(xt), generator=gen)[: cfg.stage1_samples]
            total = 0.0
            for i in budget.each(range(0, len(idx), bsz)):
                b = idx[i : i + bsz]
                if len(b) < 2:
                    continue  # one sample is no distribution
                loss = loss_fn(xt[b], yt[b])
                if not torch.isfinite(loss):
                    raise InvalidInputError(f"{desc}: the loss became {loss.item()}; lower "
                                            "stage1_lr or check the inputs")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            curve.append(total / max(len(idx), 1))
        return curve

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        if self.config.finetune == "all":
            return list(model.parameters())
        if isinstance(model.head, TransportPredictor):
            return [model.head.transport_logits]
        return list(model.head.parameters())

    def bound(self, model: nn.Module, target_data: tuple[Any, Any],
              kappa: float | None = None) -> dict[str, float]:
        """:func:`bound_terms` with the proxy samples held out in :meth:`pretrain`."""
        if self.source_holdout is None:
            raise InvalidInputError("run pretrain first: the held-out proxy features come from it")
        return bound_terms(model, self.source_holdout, target_data,
                           kappa=self.config.kappa if kappa is None else kappa,
                           solver=self.config.fa_solver, reg=self.config.fa_reg)


# ------------------------------------------------- studies of the bound and of kappa


class BoundProbe:
    r"""RECRAFT's bound on held-out data during a run (a probe of :func:`crossmodal.runner.run`).

    App. B evaluates the bound after training: the model is built, prepared, pretrained and
    fine-tuned by the runner, and this probe calls :meth:`RECRAFT.bound` on the target split
    ``split`` (the test split: held out) before fine-tuning and after every epoch; the
    source error uses the proxy samples that :meth:`RECRAFT.pretrain` held out. The last
    entry of the run's ``probes`` is the bound of the trained model.

    Parameters
    ----------
    split : the target split to evaluate on.
    kappa : the kappa multiplying W1 in FA (None: the run's own kappa).
    """

    def __init__(self, split: str = "test", kappa: float | None = None) -> None:
        self.split, self.kappa = split, kappa

    def __call__(self, model: nn.Module, method, task, splits: dict,
                 record: dict | None) -> dict[str, Any]:
        if not isinstance(method, RECRAFT):
            raise InvalidInputError(f"BoundProbe needs the recraft method, got {method.name!r}")
        if task.output != "classification":
            return {"skipped": f"{task.key} is {task.output}: the bound's target loss is a "
                               "cross-entropy over classes"}
        x, y = splits[self.split]
        return method.bound(model, (x, y), kappa=self.kappa)


def relative_gap(bound: float, target_loss: float) -> float:
    r"""App. B's gap between the bound and the target loss, relative to the loss:
    :math:`(\mathrm{bound} - \mathcal L_t) / \mathcal L_t` (the paper does not define it; we
    read "averaged gap < 29 %" as the mean of this ratio over tasks)."""
    if not target_loss > 0:
        raise InvalidInputError(f"the target loss must be > 0 for a relative gap, got "
                                f"{target_loss}")
    return (bound - target_loss) / target_loss


def proxy_features(body: nn.Module, *, proxy: str | None = None, proxy_samples: int = 200,
                   profile: str = "smoke", seed: int = 0) -> tuple[Tensor, Tensor]:
    """The proxy's mean-pooled body features and labels (the space of the source head)."""
    data = load_proxy(proxy or default_proxy(body.kind, profile), max_samples=proxy_samples,
                      seed=seed)
    tokens, mask = source_tokens(body, data)
    return body_source_features(body, tokens, mask), torch.as_tensor(data.labels).long()


def recalibration_sweep(features: Tensor, labels: Tensor, kappas, *, rho: float = 100.0,
                        epochs: int = 300, lr: float = 1e-2, holdout: float = 0.2,
                        seed: int = 0) -> list[dict[str, Any]]:
    r"""Proxy performance of the recalibrated source head against kappa (RECRAFT Fig. 6).

    For each kappa a fresh linear head (the same seeded initialisation) is fitted on a
    ``1 - holdout`` part of the proxy with :func:`recalibrate_source_head`; the first row
    (``kappa=None``) is the reference without the Lipschitz penalty (``rho=0``). App. F picks
    the smallest kappa that does not degrade proxy performance (:func:`select_kappa`).

    Returns
    -------
    One dict per kappa: ``kappa``, ``fit_loss``, ``fit_accuracy``, ``holdout_loss``,
    ``holdout_accuracy``, ``grad_norm_mean``, ``grad_norm_max`` (input-gradient norms on the
    fitted part: about kappa or below when the penalty binds).
    """
    features, labels = torch.as_tensor(features).float(), torch.as_tensor(labels).long()
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise InvalidInputError(f"expected features (n, D) and labels (n,), got "
                                f"{tuple(features.shape)} and {tuple(labels.shape)}")
    if not 0 < holdout < 1:
        raise InvalidInputError(f"holdout must lie in (0, 1), got {holdout}")
    kappas = [float(k) for k in kappas]
    if any(not k > 0 for k in kappas):
        raise InvalidInputError(f"every kappa must be > 0, got {kappas}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(features), generator=gen)
    n_hold = max(1, int(round(holdout * len(features))))
    hold, fit_idx = order[:n_hold], order[n_hold:]
    num_classes = int(labels.max()) + 1
    rows = []
    for kappa in [None, *kappas]:
        init = torch.Generator().manual_seed(seed)
        head = nn.Linear(features.shape[1], num_classes)
        with torch.no_grad():  # the same initialisation for every kappa
            bound = 1.0 / features.shape[1] ** 0.5
            head.weight.uniform_(-bound, bound, generator=init)
            head.bias.uniform_(-bound, bound, generator=init)
        fit = recalibrate_source_head(head, features[fit_idx], labels[fit_idx],
                                      kappa=kappa or 1.0, rho=0.0 if kappa is None else rho,
                                      epochs=epochs, lr=lr)
        held = source_head_stats(head, features[hold], labels[hold])
        rows.append({"kappa": kappa, "fit_loss": fit["loss"], "fit_accuracy": fit["accuracy"],
                     "holdout_loss": held["loss"], "holdout_accuracy": held["accuracy"],
                     "grad_norm_mean": fit["grad_norm_mean"],
                     "grad_norm_max": fit["grad_norm_max"]})
    return rows


def select_kappa(rows: list[dict[str, Any]], tolerance: float = 0.01,
                 metric: str = "holdout_accuracy") -> float | None:
    """App. F's rule: the smallest kappa whose proxy ``metric`` (an accuracy) is within
    ``tolerance`` of the unpenalised reference (the row with ``kappa=None``); None if none is."""
    ref = [r[metric] for r in rows if r["kappa"] is None]
    if not ref:
        raise InvalidInputError("select_kappa needs the reference row (kappa=None) of "
                                "recalibration_sweep")
    ok = [r["kappa"] for r in rows if r["kappa"] is not None and r[metric] >= ref[0] - tolerance]
    return min(ok) if ok else None
