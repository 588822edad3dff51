"""PaRe: gradual patch replacement for cross-modal fine-tuning (Cai et al., ICML 2024).

End-to-end fine-tuning on a mix of target and source data built in embedding space:

1. Target patches ``X~t = f^t(x^t)`` (the task embedder, trained) and source patches
   ``X~s = f^s(x^s)`` (the body's own pretrained input embedder applied to the proxy
   dataset, frozen), both ``(B, N, D)``.
2. A gate scores every patch, ``S = sigma(FC(X~))``, shared by source and target.
3. The bottom-k target patches (by target score) are replaced, one by one, by the top-k
   source patches (by source score); top-k and bottom-k are drawn with a Gumbel-softmax
   subset operator (straight-through) so that the gate learns. The result is X~m.
4. k decreases over the epochs (:func:`k_schedule`), so the intermediate modality moves
   from source to target; lambda = k/N weighs the two labels of the mixed sample:

   .. math::
       \\mathcal L_{mix} = (1-\\lambda)\\,\\mathcal L_{tar}(h^t(g(\\tilde X^m)), y^t)
                        + \\lambda\\,\\mathrm{CE}(h^s(g(\\tilde X^m)), y^s)

       \\mathcal L_{total} = \\beta_1 \\mathcal L_{tar}(h^t(g(\\tilde X^t)), y^t)
                          + \\beta_2 \\mathcal L_{mix}

Switches (the paper's ablations): ``k_schedule`` (Table 4), ``mixing`` (Table 4),
``selection`` (Table 5), ``gate`` (Table 6), ``k0`` (Fig. 5), ``variant`` (Table 18),
``lambda_mode`` (paper vs slides).

Choices where the paper leaves room (also in docs/methods_pare_gap.md):

* **k0 and N**: A.2.6 sets k0 = 3000 (200 for Cosmic); Alg. 1 uses k0 = N. ``k0=None`` (the
  default) means the paper's value for the task (:func:`paper_k0`). k0 is capped to
  the number of patches N, so the default is the paper's k0 wherever N <= 3000 and Alg. 1's
  k0 = N otherwise. k is an integer (Alg. 1's ``int()``, i.e. the floor).
* **lambda**: k/N (paper, Alg. 1) by default; ``lambda_mode="k_over_k0"`` gives the slides'
  k/k0 (k0 after capping). The two coincide whenever k0 >= N.
* **Schedules** other than linear have no formula in the paper; see :func:`k_schedule`.
* **Gumbel operator**: the gate's sigmoid scores are used as the Gumbel logits, as Alg. 1
  feeds them to the subset operator; tau = 0.9 by default (the paper gives none; 0.9 is the
  value of the authors' released code). ``gumbel_scale`` scales the noise (0: deterministic
  top-k with the relaxed gradient). The bottom-k target patches are drawn directly as the
  k smallest perturbed scores (k softmax rounds) instead of Alg. 1's complement of the top
  N-k (N-k rounds): the same hard selection, a cheaper relaxation.
* **Pairing "one by one"**: the j-th selected source patch (in position order) fills the
  j-th replaced target position (in position order).
* **Source sequences**: proxy token sequences (<= 64 tokens) are brought to length N by
  ``source_align`` (default ``"tile"``: each sentence's real tokens repeated cyclically;
  see :func:`~crossmodal.methods.patching.align_source_tokens`). Source batches have the
  target batch's size and are drawn uniformly with replacement from ``proxy_samples``
  proxy samples (default 2000 to bound memory; PaRe's proxies use 5000 or all).
* **Source head** h^s: mean-pool over tokens + linear layer to the proxy classes (the same
  form as the target classification head), trained; kept in ``model.extras``.
* **k = 0**: X~m = X~t, so the mixed term reuses the target prediction (no second body pass).
* **Mixup / CutMix** (Table 4): mixup mixes whole sequences, ``(1-lambda) X~t + lambda X~s``
  with the schedule's lambda; CutMix copies a contiguous run of k source patches (1D) or a
  square of round(sqrt k)^2 patches (2D token grids), lambda = copied share (k/N or k/k0 as
  ``lambda_mode``). The paper gives neither mixing ratios nor box shapes.
* **Table 18 variants**: ``target_mixup`` mixes each target embedding with another one of
  the batch (a random permutation) with the same lambda, loss (1-lambda) L(p, y) +
  lambda L(p, y_perm); ``target_mask`` sets the bottom-k target patches (by gate) to zero
  and uses L_tar only; ``no_source_loss`` keeps patch replacement but
  L_mix = L_tar(p^mt, y^t) (weight 1).
* Differences from the authors' released code (``BIT-DA/PaRe@7d5362c``), where we follow
  the paper; each of the code's values is an option (``crossmodal protocol TASK --method
  pare`` prints them per task under ``notes``, :func:`crossmodal.protocol.pare_code_values`):

  - **beta2**: the code weighs the mixed loss by 0.1 in 1D (``main_PaRe_1d.py``) and 0.3 on
    dense tasks (``main_PaRe_dense.py``); the paper (A.2.6) uses 1: ``beta2``.
  - **k schedule**: the code's k = int(begin - end * ep / E) with begin/end 2000/1500 on 2D
    classification (k from 2000 to 500), 1000/500 on Darcy Flow, 500/500 on Cosmic; the
    paper's is k0 = 3000 (Cosmic 200) to 0. The linear schedule with ``k0=begin``,
    ``k_final=begin-end`` is the code's.
  - **1D source**: the code uses the 32-token CoNLL features as they are (no tiling to N),
    with k from 32 (``seq_num``) to 0: ``source_tokens=32, source_align="truncate", k0=32``.
  - **top-k switch**: from epoch 10 (1D: 5) the code stops using the Gumbel subset operator
    and replaces the target patches with the *highest* gate scores by the top-k source
    patches, hard and without a gradient to the gate: ``topk_switch_epoch``.
  - the code mixes only when the source batch has the target batch's size, computes the
    dense source loss on the target head's output, and caps the proxy at 5000 samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.heads import PooledLinearHead
from crossmodal.losses import cross_entropy, task_loss
from crossmodal.methods.base import Method, MethodConfig, RunContext, register_method
from crossmodal.methods.patching import (
    GATE_KINDS,
    GateNetwork,
    SourceBank,
    cutmix_embeddings,
    gumbel_noise,
    load_source_bank,
    mixup_embeddings,
    replace_patches,
    subset_mask,
)

K_SCHEDULES = ("linear", "exponential", "piecewise", "non_gradual", "constant")
LAMBDA_MODES = ("k_over_N", "k_over_k0")
MIXINGS = ("patch_replacement", "mixup", "cutmix")
SELECTIONS = ("gate", "random")
VARIANTS = ("pare", "target_mixup", "target_mask", "no_source_loss")

#: PaRe A.2.6: initial k for every task, and the exception.
PAPER_K0, PAPER_K0_EXCEPTIONS = 3000, {"Cosmic": 200}

#: Rate r of the exponential schedule and number of steps of the piecewise schedule.
EXP_RATE = 3.0
PIECES = 4


def k_schedule(kind: str, k0: int, epoch: int, total_epochs: int, *, k_final: int = 0,
               rng: np.random.Generator | None = None, n_patches: int | None = None) -> int:
    """Number of replaced patches k at ``epoch`` (0-based) of ``total_epochs``.

    With t = epoch / total_epochs in [0, 1] and k0, k_final capped to ``n_patches``:

    * ``"linear"`` (PaRe's default; slides: k0 (1 - ep/ep_total)):
      :math:`k = k_f + (k_0 - k_f)(1 - t)`.
    * ``"exponential"`` (ours; the paper gives no formula): a decay normalised to hit both
      ends, :math:`k = k_f + (k_0 - k_f)\\frac{e^{-rt} - e^{-r}}{1 - e^{-r}}`, r = 3 (it
      falls faster than linear early: 18 % of k0 - k_f is left at t = 1/2).
    * ``"piecewise"`` (ours): a staircase of 4 equal stretches,
      :math:`k = k_f + (k_0 - k_f)(1 - \\lfloor 4t \\rfloor / 4)`: k0, 3/4, 1/2, 1/4 of the
      way, then k_f at t = 1.
    * ``"non_gradual"`` (§4.2's reading "k is random"): k uniform on {k_f, ..., k0}, drawn
      per epoch from ``rng`` (None: ``np.random.default_rng(epoch)``, so the function stays
      pure).
    * ``"constant"`` (Table 4 caption's reading "constant k"): k = k0.

    The result is the floor of the formula (Alg. 1's ``int()``) as an int. Gradual schedules
    are non-increasing in the epoch with k(0) = k0 and k(total) = k_final.
    """
    if kind not in K_SCHEDULES:
        raise unknown_name("k schedule", kind, K_SCHEDULES)
    if total_epochs < 1:
        raise InvalidInputError(f"total_epochs must be >= 1, got {total_epochs}")
    if not 0 <= epoch <= total_epochs:
        raise InvalidInputError(f"epoch must be in [0, {total_epochs}], got {epoch}")
    if k0 < 0 or k_final < 0:
        raise InvalidInputError(f"k0 and k_final must be >= 0, got {k0} and {k_final}")
    if n_patches is not None:
        k0, k_final = min(k0, n_patches), min(k_final, n_patches)
    if k_final > k0:
        raise InvalidInputError(f"k_final ({k_final}) must not exceed k0 ({k0}, after capping "
                                "to the number of patches)")
    t = epoch / total_epochs
    span = k0 - k_final
    if kind == "linear":
        frac = 1.0 - t
    elif kind == "exponential":
        frac = (math.exp(-EXP_RATE * t) - math.exp(-EXP_RATE)) / (1.0 - math.exp(-EXP_RATE))
    elif kind == "piecewise":
        frac = 1.0 - math.floor(PIECES * t + 1e-9) / PIECES
    elif kind == "constant":
        frac = 1.0
    else:
        rng = rng if rng is not None else np.random.default_rng(epoch)
        return int(rng.integers(k_final, k0 + 1))
    # the epsilon absorbs float error (3 * (1 - 2/3) = 0.999...) before flooring
    return int(min(k0, max(k_final, math.floor(k_final + span * frac + 1e-9))))


def paper_k0(task_key: str) -> int:
    """PaRe's k0 for a task (A.2.6): 200 for Cosmic, 3000 for every other task."""
    return PAPER_K0_EXCEPTIONS.get(task_key, PAPER_K0)


def mix_weight(k: int, n_patches: int, k0: int, mode: str = "k_over_N") -> float:
    """lambda, the source share of the mixed loss: k/N (paper) or k/k0 (slides; k0 capped)."""
    if mode not in LAMBDA_MODES:
        raise unknown_name("lambda mode", mode, LAMBDA_MODES)
    denom = n_patches if mode == "k_over_N" else min(k0, n_patches)
    return 0.0 if denom == 0 else min(1.0, k / denom)



def schedule_table(kinds, k0: int, total_epochs: int, *, k_final: int = 0,
                   n_patches: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """k at every fine-tuning epoch (0-based) for each schedule in ``kinds``, as a run uses it.

    The non-gradual schedule draws k with the generator :class:`PaRe` uses in a run with
    ``seed`` (``np.random.default_rng([seed, epoch])``), so the table shows the k of that
    run. Rows: ``schedule``, ``epoch``, ``k``, ``fraction`` (k / k0 after capping).
    """
    k0_eff = min(k0, n_patches) if n_patches is not None else k0
    rows = []
    for kind in kinds:
        for epoch in range(total_epochs):
            rng = np.random.default_rng([seed, epoch]) if kind == "non_gradual" else None
            k = k_schedule(kind, k0, epoch, total_epochs, k_final=k_final, rng=rng,
                           n_patches=n_patches)
            rows.append({"schedule": kind, "epoch": epoch, "k": k,
                         "fraction": k / k0_eff if k0_eff else 0.0})
    return rows

@dataclass
class PaReConfig(MethodConfig):
    """PaRe's options (defaults: the paper's; see the module docstring for open choices).

    k0, k_final : initial and final number of replaced patches (capped to N); k0=None: the
        paper's (200 for Cosmic, 3000 otherwise).
    k_schedule : ``linear`` | ``exponential`` | ``piecewise`` | ``non_gradual`` | ``constant``.
    lambda_mode : ``k_over_N`` (paper) | ``k_over_k0`` (slides).
    gate : ``fc`` | ``mlp`` | ``mlp_dropout`` | ``attention``; gate_hidden, gate_dropout: MLP.
    tau : Gumbel-softmax temperature; gumbel_scale : noise multiplier (0: no noise).
    selection : ``gate`` | ``random`` (Table 5).
    mixing : ``patch_replacement`` | ``mixup`` | ``cutmix`` (Table 4).
    variant : ``pare`` | ``target_mixup`` | ``target_mask`` | ``no_source_loss`` (Table 18).
    beta1, beta2 : weights of the target loss and of the mixed loss.
    proxy : proxy dataset (None: the body's default); proxy_samples : how many to use.
    source_align : ``tile`` | ``resample`` | ``truncate`` (source length -> N).
    source_tokens : keep only the first this many source positions (None: all); the
        authors' 1D code uses 32 (with ``source_align="truncate"``).
    topk_switch_epoch : from this epoch (0-based) on, select hard top-k patches by the gate
        and replace the *top* target patches (the authors' code: 10 in 2D, 5 in 1D); None:
        the paper's Gumbel selection throughout.
    """

    k0: int | None = field(
        default=None,
        metadata={"help": "initial number of replaced patches (capped to N); None: the paper's "
                          "(200 for Cosmic, 3000 otherwise)."})
    k_final: int = field(default=0, metadata={"help": "final number of replaced patches (<= k0)."})
    k_schedule: str = field(
        default="linear",
        metadata={"help": "``linear`` | ``exponential`` | ``piecewise`` | ``non_gradual`` | "
                          "``constant``."})
    lambda_mode: str = field(
        default="k_over_N",
        metadata={"help": "``k_over_N`` (paper) | ``k_over_k0`` (slides)."})
    gate: str = field(
        default="fc",
        metadata={"help": "``fc`` | ``mlp`` | ``mlp_dropout`` | ``attention``."})
    gate_hidden: int = field(default=256, metadata={"help": "hidden width of the ``mlp`` gates."})
    gate_dropout: float = field(
        default=0.1,
        metadata={"help": "dropout of the ``mlp_dropout`` gate."})
    tau: float = field(default=0.9, metadata={"help": "Gumbel-softmax temperature."})
    gumbel_scale: float = field(default=1.0, metadata={"help": "noise multiplier (0: no noise)."})
    selection: str = field(default="gate", metadata={"help": "``gate`` | ``random`` (Table 5)."})
    mixing: str = field(
        default="patch_replacement",
        metadata={"help": "``patch_replacement`` | ``mixup`` | ``cutmix`` (Table 4)."})
    variant: str = field(
        default="pare",
        metadata={"help": "``pare`` | ``target_mixup`` | ``target_mask`` | ``no_source_loss`` "
                          "(Table 18)."})
    beta1: float = field(default=1.0, metadata={"help": "beta1, the weight of the target loss."})
    beta2: float = field(
        default=1.0,
        metadata={"help": "beta2, the weight of the mixed (intermediate-modality) loss."})
    proxy: str | None = field(
        default=None,
        metadata={"help": "proxy dataset of the source patches (None: the body's default)."})
    proxy_samples: int = field(default=2000, metadata={"help": "proxy samples in the source bank."})
    source_align: str = field(
        default="tile",
        metadata={"help": "``tile`` | ``resample`` | ``truncate`` (source length -> N)."})
    source_tokens: int | None = field(
        default=None,
        metadata={"help": "keep only the first this many source positions (None: all); the "
                          "authors' 1D code uses 32 (with ``source_align=\"truncate\"``)."})
    topk_switch_epoch: int | None = field(
        default=None,
        metadata={"help": "from this epoch (0-based) on, select hard top-k patches by the gate "
                          "and replace the *top* target patches (the authors' code: 10 in 2D, 5 "
                          "in 1D)."})

    def __post_init__(self) -> None:
        for name, valid in (("k_schedule", K_SCHEDULES), ("lambda_mode", LAMBDA_MODES),
                            ("gate", GATE_KINDS), ("selection", SELECTIONS),
                            ("mixing", MIXINGS), ("variant", VARIANTS)):
            if getattr(self, name) not in valid:
                raise InvalidInputError(f"{name} must be one of {valid}, "
                                        f"got {getattr(self, name)!r}")
        k0 = PAPER_K0 if self.k0 is None else self.k0
        if k0 < 0 or self.k_final < 0 or self.k_final > k0:
            raise InvalidInputError(f"need 0 <= k_final <= k0, got k0={self.k0}, "
                                    f"k_final={self.k_final}")
        if self.tau <= 0:
            raise InvalidInputError(f"tau must be > 0, got {self.tau}")
        if self.variant in ("target_mixup", "target_mask") and self.mixing != "patch_replacement":
            raise InvalidInputError(f"variant {self.variant!r} defines its own mixing; leave "
                                    "mixing at 'patch_replacement'")
        if self.proxy_samples < 1:
            raise InvalidInputError("proxy_samples must be >= 1")
        if self.source_tokens is not None and self.source_tokens < 1:
            raise InvalidInputError(f"source_tokens must be >= 1 or None, got {self.source_tokens}")
        if self.topk_switch_epoch is not None and self.topk_switch_epoch < 0:
            raise InvalidInputError("topk_switch_epoch must be >= 0 or None, got "
                                    f"{self.topk_switch_epoch}")


def hard_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A (B, N) 0/1 mask of the k highest scores per row, without a gradient."""
    mask = torch.zeros_like(scores)
    if k > 0:
        mask.scatter_(1, scores.detach().topk(k, dim=1).indices, 1.0)
    return mask


def select_patches(
    scores_t: torch.Tensor, scores_s: torch.Tensor, k: int, *, tau: float, gumbel_scale: float,
    src_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-through masks: the bottom-k target and the top-k source patches.

    Scores (B, N) are perturbed with Gumbel noise times ``gumbel_scale`` (global torch RNG);
    source positions where ``src_valid`` is False (padding) are pushed to the bottom.
    """
    st = scores_t + gumbel_scale * gumbel_noise(scores_t.shape, device=scores_t.device)
    ss = scores_s + gumbel_scale * gumbel_noise(scores_s.shape, device=scores_s.device)
    if src_valid is not None:
        ss = ss.masked_fill(~src_valid, -1e4)
    replace = subset_mask(st, k, tau=tau, largest=False)
    take = subset_mask(ss, k, tau=tau, largest=True)
    return replace, take


class PaReMixer:
    """Builds the mixed batch of one step for a PaRe config (pure given the RNG state)."""

    def __init__(self, cfg: PaReConfig, grid: int | None = None, k0: int | None = None) -> None:
        self.cfg, self.grid = cfg, grid
        self.k0 = k0 if k0 is not None else (PAPER_K0 if cfg.k0 is None else cfg.k0)

    def scores(self, gate: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.selection == "random" or gate is None:
            return torch.rand(x.shape[:2], device=x.device)  # a uniform random subset
        return gate(x)

    def mix(self, x_t: torch.Tensor, x_s: torch.Tensor | None, k: int, gate: nn.Module | None,
            src_valid: torch.Tensor | None = None,
            epoch: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The mixed embeddings and what the loss needs (``share``: source share count).

        For ``target_mixup`` the returned info holds ``perm``, the partner permutation.
        ``epoch`` switches to the authors' hard top-k from ``cfg.topk_switch_epoch`` on.
        """
        cfg, n = self.cfg, x_t.shape[1]
        if (cfg.topk_switch_epoch is not None and epoch is not None
                and epoch >= cfg.topk_switch_epoch and cfg.variant == "pare"
                and cfg.mixing == "patch_replacement"):
            # the authors' code after the switch: top-k source patches replace the top-k
            # target patches (highest gate scores), hard, no gradient through the selection
            ss = self.scores(gate, x_s)
            if src_valid is not None:
                ss = ss.masked_fill(~src_valid, -1e4)
            replace = hard_topk_mask(self.scores(gate, x_t), k)
            take = hard_topk_mask(ss, k)
            mixed, _, _ = replace_patches(x_t, x_s, replace, take, k)
            return mixed, {"lam": mix_weight(k, n, self.k0, cfg.lambda_mode)}
        if cfg.variant == "target_mixup":
            perm = torch.randperm(x_t.shape[0], device=x_t.device)
            lam = mix_weight(k, n, self.k0, cfg.lambda_mode)
            return mixup_embeddings(x_t, x_t[perm], lam), {"lam": lam, "perm": perm}
        if cfg.variant == "target_mask":
            st = self.scores(gate, x_t)
            st = st + cfg.gumbel_scale * gumbel_noise(st.shape, device=st.device)
            replace = subset_mask(st, k, tau=cfg.tau, largest=False)
            return x_t * (1.0 - replace).unsqueeze(-1), {"lam": 0.0}
        if cfg.mixing == "mixup":
            lam = mix_weight(k, n, self.k0, cfg.lambda_mode)
            return mixup_embeddings(x_t, x_s, lam), {"lam": lam}
        if cfg.mixing == "cutmix":
            mixed, _, box = cutmix_embeddings(x_t, x_s, k, grid=self.grid)
            return mixed, {"lam": mix_weight(int(box.sum()), n, self.k0, cfg.lambda_mode)}
        replace, take = select_patches(self.scores(gate, x_t), self.scores(gate, x_s), k,
                                       tau=cfg.tau, gumbel_scale=cfg.gumbel_scale,
                                       src_valid=src_valid)
        mixed, _, _ = replace_patches(x_t, x_s, replace, take, k)
        return mixed, {"lam": mix_weight(k, n, self.k0, cfg.lambda_mode)}


def token_grid(task, n_patches: int) -> int | None:
    """The side g of a 2D task's square token grid (None for 1D tasks)."""
    if task.modality != "2D":
        return None
    g = int(round(math.sqrt(n_patches)))
    return g if g * g == n_patches else None


@register_method
class PaRe(Method):
    name = "pare"
    config_class = PaReConfig
    paper = "PaRe: patch replacement (Cai et al., ICML 2024)"

    GATE_KEY, HEAD_KEY = "pare_gate", "pare_source_head"

    def __init__(self, config: PaReConfig | None = None) -> None:
        super().__init__(config)
        self.bank: SourceBank | None = None
        self.seed = 0
        self.k0 = PAPER_K0 if self.config.k0 is None else self.config.k0

    # -- structure -------------------------------------------------------------------------
    def needs_source(self) -> bool:
        return self.config.variant not in ("target_mixup", "target_mask")

    def prepare(self, model: nn.Module, task, ctx: RunContext) -> None:
        cfg = self.config
        self.seed = ctx.seed
        self.k0 = paper_k0(task.key) if cfg.k0 is None else cfg.k0
        if cfg.k_final > self.k0:
            raise InvalidInputError(f"k_final={cfg.k_final} exceeds k0={self.k0} for {task.key}")
        model.extras[self.GATE_KEY] = GateNetwork(model.body.hidden_size, cfg.gate,
                                                  cfg.gate_hidden, cfg.gate_dropout)
        if self.needs_source():
            self.bank = load_source_bank(model.body, ctx.profile, cfg.proxy, cfg.proxy_samples,
                                         seed=ctx.seed, root=ctx.data_root)
            model.extras[self.HEAD_KEY] = PooledLinearHead(model.body.out_size,
                                                           self.bank.num_classes)

    def num_patches(self, model: nn.Module) -> int:
        with torch.no_grad():
            device = next(model.embedder.parameters()).device
            return int(model.embedder(torch.zeros(1, *model.task.input_shape,
                                                  device=device)).shape[1])

    def k_at(self, epoch: int, epochs: int, n_patches: int) -> int:
        cfg = self.config
        rng = np.random.default_rng([self.seed, epoch]) if cfg.k_schedule == "non_gradual" else None
        return k_schedule(cfg.k_schedule, self.k0, epoch, epochs, k_final=cfg.k_final, rng=rng,
                          n_patches=n_patches)

    def before_finetune(self, model: nn.Module, task, splits: dict,
                        ctx: RunContext) -> dict[str, Any]:
        """No stage before fine-tuning (PaRe is end to end); reports the setup."""
        n = self.num_patches(model)
        cfg = self.config
        report: dict[str, Any] = {"n_patches": n, "k0": self.k0, "k0_effective": min(self.k0, n),
                                  "lambda_mode": cfg.lambda_mode, "k_schedule": cfg.k_schedule}
        if self.bank is not None:
            report.update(proxy=self.bank.name, proxy_samples=len(self.bank),
                          source_classes=self.bank.num_classes)
        return report

    # -- fine-tuning ---------------------------------------------------------------------------
    def loss_fn(self, task):
        loss = task_loss(task)
        cfg = self.config
        state_cache: dict[str, Any] = {}

        def fn(model, batch, state):
            x, y = batch
            emb_t = model.embedder(x)
            n = emb_t.shape[1]
            if "mixer" not in state_cache:
                state_cache["mixer"] = PaReMixer(cfg, token_grid(task, n), self.k0)
            mixer = state_cache["mixer"]
            p_t = model.head(model.body(emb_t))
            l_tar = loss(p_t, y)
            k = self.k_at(state.epoch, state.epochs, n)
            state.extra["pare_k"] = k
            if k == 0:
                # X~m = X~t for every mixing: the mixed prediction is the target prediction
                return cfg.beta1 * l_tar + cfg.beta2 * l_tar
            x_s = y_s = valid = None
            if self.needs_source():
                if self.bank is None:
                    raise InvalidInputError("PaRe's source data is missing: call prepare() first")
                x_s, valid, y_s = self.bank.batch(len(x), n, cfg.source_align)
                if cfg.source_tokens is not None and cfg.source_tokens < n:
                    # the authors' 1D source: only its first source_tokens positions
                    valid = valid.clone()
                    valid[:, cfg.source_tokens:] = False
                    x_s = x_s * valid.unsqueeze(-1).to(x_s.dtype)
                x_s, valid, y_s = x_s.to(emb_t.device), valid.to(emb_t.device), y_s.to(x.device)
            gate = model.extras[self.GATE_KEY]
            mixed, info = mixer.mix(emb_t, x_s, k, gate, valid, epoch=state.epoch)
            h = model.body(mixed)
            p_mt = model.head(h)
            lam = info["lam"]
            if cfg.variant == "target_mixup":
                l_mix = (1 - lam) * loss(p_mt, y) + lam * loss(p_mt, y[info["perm"]])
            elif cfg.variant in ("target_mask", "no_source_loss"):
                l_mix = loss(p_mt, y)
            else:
                p_ms = model.extras[self.HEAD_KEY](h)
                l_mix = (1 - lam) * loss(p_mt, y) + lam * cross_entropy(p_ms, y_s)
            return cfg.beta1 * l_tar + cfg.beta2 * l_mix

        return fn
