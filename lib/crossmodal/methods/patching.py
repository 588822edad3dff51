"""Patch-level machinery shared by PaRe and the gap-adaptive method (version B).

Everything here works in the body's input (embedding) space: a batch of patch sequences
``(B, N, D)``. The pieces:

* :class:`GateNetwork`: scores each patch, ``S = sigma(gate(X))`` in (0, 1) per patch
  (PaRe §3.3, Table 6; plus the self-attention scorer of the slides' version B).
* :func:`gumbel_noise` and :func:`subset_mask`: a differentiable k-subset selection, the
  Gumbel-softmax relaxation of top-k sampling (Jang et al. 2017; the iterated-softmax
  k-hot relaxation of Xie & Ermon 2019, which PaRe's "SubsetOperator" is):

  .. math:: s \\leftarrow s + \\log(1 - p),\\quad p = \\operatorname{softmax}(s/\\tau),
            \\quad \\tilde m = \\sum_{r=1}^{k} p^{(r)}

  repeated k times from the perturbed scores ``s = score + g`` (g ~ Gumbel(0, 1)); the hard
  mask (exactly k ones, the top-k of s) is used forward and the relaxed k-hot ``m~`` backward
  (straight-through), so gradients reach the gate.
* :func:`replace_patches`: the bottom-k target patches are replaced by the top-k source
  patches (PaRe's patch replacement).
* :func:`mixup_embeddings`, :func:`cutmix_embeddings`: the mixing alternatives of PaRe
  Table 4, in embedding space.
* :func:`align_source_tokens` and :class:`SourceBank`: proxy source sequences (the body's own
  pretrained embedder applied to the proxy dataset) brought to the target's length N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.data.proxies import default_proxy, load_proxy
from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.features import source_tokens

GATE_KINDS = ("fc", "mlp", "mlp_dropout", "attention")
ALIGN_MODES = ("tile", "resample", "truncate")
_TINY = float(np.finfo(np.float32).tiny)


class GateNetwork(nn.Module):
    """Per-patch importance scores in (0, 1): ``(B, N, D) -> (B, N)``.

    Parameters
    ----------
    dim : D, the embedding width.
    kind : ``"fc"`` (PaRe's default: FC + sigmoid), ``"mlp"`` (FC-GELU-FC + sigmoid),
        ``"mlp_dropout"`` (FC-GELU-Dropout-FC + sigmoid) (PaRe Table 6), or ``"attention"``
        (the slides' version B: one self-attention layer over the patches, with a residual
        connection, then FC + sigmoid, so that a patch's score depends on its context).
    hidden : MLP width (PaRe gives none; default 256).
    dropout : dropout rate of ``"mlp_dropout"`` (PaRe gives none; default 0.1).
    """

    def __init__(self, dim: int, kind: str = "fc", hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        if kind not in GATE_KINDS:
            raise unknown_name("gate", kind, GATE_KINDS)
        self.kind = kind
        self.attn = None
        if kind == "fc":
            self.net = nn.Linear(dim, 1)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        elif kind == "mlp_dropout":
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, 1))
        else:
            self.attn = nn.MultiheadAttention(dim, num_heads=1, batch_first=True)
            self.norm = nn.LayerNorm(dim)
            self.net = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise InvalidInputError(f"the gate expects patches (B, N, D), got {tuple(x.shape)}")
        if self.attn is not None:
            context, _ = self.attn(x, x, x, need_weights=False)
            x = self.norm(x + context)
        return torch.sigmoid(self.net(x)).squeeze(-1)


def gumbel_noise(shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """Standard Gumbel(0, 1) samples ``-log(-log U)``, U ~ Uniform(0, 1)."""
    u = torch.rand(shape, generator=generator, device=device).clamp(_TINY, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def subset_mask(scores: torch.Tensor, k: int, *, tau: float = 1.0, hard: bool = True,
                largest: bool = True) -> torch.Tensor:
    """Relaxed k-hot mask of the k largest (or smallest) ``scores`` per row.

    Parameters
    ----------
    scores : (B, N) perturbed scores (add :func:`gumbel_noise` first for a Gumbel sample).
    k : subset size, 0 <= k <= N.
    tau : softmax temperature of the relaxation (smaller: closer to hard top-k).
    hard : straight-through: forward values are exactly the top-k indicator, gradients
        those of the relaxed k-hot.
    largest : False selects the k smallest scores (the relaxation runs on ``-scores``).

    Returns
    -------
    (B, N) mask whose rows sum to k.
    """
    if scores.dim() != 2:
        raise InvalidInputError(f"subset_mask expects scores (B, N), got {tuple(scores.shape)}")
    n = scores.shape[1]
    if not 0 <= k <= n:
        raise InvalidInputError(f"subset size k={k} must be between 0 and N={n}")
    if tau <= 0:
        raise InvalidInputError(f"the temperature tau must be > 0, got {tau}")
    if k == 0:
        return scores * 0.0  # keeps the graph, so callers need no special case
    s = scores if largest else -scores
    khot = torch.zeros_like(s)
    p = torch.zeros_like(s)
    for _ in range(k):
        # remove (softly) what the previous round picked, then pick one more
        s = s + torch.log(torch.clamp(1.0 - p, min=_TINY))
        p = torch.softmax(s / tau, dim=1)
        khot = khot + p
    if not hard:
        return khot
    # forward: the exact top-k of the perturbed scores (the sequential relaxation may tie)
    idx = torch.topk(scores, k, dim=1, largest=largest).indices
    indicator = torch.zeros_like(khot).scatter(1, idx, 1.0)
    return indicator - khot.detach() + khot


def _selected_positions(mask: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k) of the ones of a hard (straight-through) mask, in increasing order."""
    chosen = (mask.detach() > 0.5).to(torch.int8)
    if not bool((chosen.sum(1) == k).all()):
        raise InvalidInputError(f"the selection mask must have exactly k={k} ones per row")
    return torch.argsort(chosen, dim=1, descending=True, stable=True)[:, :k]


def replace_patches(
    x_t: torch.Tensor, x_s: torch.Tensor, replace_t: torch.Tensor, take_s: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PaRe's patch replacement: k target patches are replaced by k source patches.

    ``x_m = x_t * (1 - r)`` on the kept positions, and position ``tgt[b, j]`` receives
    ``x_s[b, src[b, j]] * t[b, src[b, j]]`` where ``tgt``/``src`` list the ones of the
    replace mask ``r`` and the take mask ``t`` in increasing position order ("one by one").
    With straight-through masks the values are exact copies and gradients reach both masks.

    Parameters
    ----------
    x_t, x_s : (B, N, D) target and source patch sequences.
    replace_t : (B, N) hard mask, ones at the k target positions to overwrite.
    take_s : (B, N) hard mask, ones at the k source patches to insert.
    k : number of replaced patches.

    Returns
    -------
    mixed (B, N, D), target positions (B, k), source positions (B, k).
    """
    if x_t.shape != x_s.shape:
        raise InvalidInputError(f"target and source patches must have the same shape (B, N, D), "
                                f"got {tuple(x_t.shape)} and {tuple(x_s.shape)}")
    mixed = x_t * (1.0 - replace_t).unsqueeze(-1)
    if k == 0:
        empty = torch.zeros(x_t.shape[0], 0, dtype=torch.long, device=x_t.device)
        return mixed, empty, empty
    tgt = _selected_positions(replace_t, k)
    src = _selected_positions(take_s, k)
    d = x_t.shape[-1]
    values = torch.gather(x_s * take_s.unsqueeze(-1), 1, src.unsqueeze(-1).expand(-1, -1, d))
    mixed = mixed.scatter(1, tgt.unsqueeze(-1).expand(-1, -1, d), values)
    return mixed, tgt, src


def mixup_embeddings(x_t: torch.Tensor, x_other: torch.Tensor, lam: float) -> torch.Tensor:
    """Mixup in embedding space: ``(1 - lam) x_t + lam x_other`` (lam = the other's share)."""
    if x_t.shape != x_other.shape:
        raise InvalidInputError(f"mixup needs equal shapes, got {tuple(x_t.shape)} and "
                                f"{tuple(x_other.shape)}")
    if not 0.0 <= lam <= 1.0:
        raise InvalidInputError(f"the mixing ratio lam must be in [0, 1], got {lam}")
    return (1.0 - lam) * x_t + lam * x_other


def cutmix_embeddings(
    x_t: torch.Tensor, x_other: torch.Tensor, k: int, *, grid: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """CutMix in embedding space: one contiguous block of patches comes from ``x_other``.

    1D sequences (``grid=None``): a run of k consecutive patches at a random start.
    2D token grids (``grid=g`` with N = g^2): a random s x s square with s = round(sqrt(k)),
    so the replaced count is s^2 (closest square to k; CutMix boxes are rectangles, and a
    square is the choice here). One box per batch, as in CutMix.

    Returns
    -------
    mixed (B, N, D), lam = replaced patches / N, and the (N,) boolean box mask.
    """
    b, n, _ = x_t.shape
    if x_t.shape != x_other.shape:
        raise InvalidInputError(f"cutmix needs equal shapes, got {tuple(x_t.shape)} and "
                                f"{tuple(x_other.shape)}")
    if not 0 <= k <= n:
        raise InvalidInputError(f"cutmix block size k={k} must be between 0 and N={n}")
    box = torch.zeros(n, dtype=torch.bool, device=x_t.device)
    if k > 0 and grid is not None:
        if grid * grid != n:
            raise InvalidInputError(f"grid {grid} does not match N={n} patches (need grid^2 = N)")
        s = min(grid, max(1, round(math.sqrt(k))))
        r0, c0 = (int(v) for v in torch.randint(0, grid - s + 1, (2,), generator=generator))
        box.view(grid, grid)[r0 : r0 + s, c0 : c0 + s] = True
    elif k > 0:
        start = int(torch.randint(0, n - k + 1, (1,), generator=generator))
        box[start : start + k] = True
    m = box.to(x_t.dtype).view(1, n, 1)
    return x_t * (1 - m) + x_other * m, float(box.sum()) / n, box


def align_source_tokens(tokens: torch.Tensor, mask: torch.Tensor, n: int,
                        mode: str = "tile") -> tuple[torch.Tensor, torch.Tensor]:
    """Bring proxy token sequences ``(S, L, D)`` (with a (S, L) real-token mask) to length n.

    Modes (PaRe assumes source and target sequences of the same length N and says nothing
    on how to get there):

    * ``"tile"`` (default): each sample's real tokens repeated cyclically, then cut to n.
      Every position holds a real token (no padding for the gate to pick); a sentence
      longer than n is truncated.
    * ``"resample"``: each sample's real tokens linearly interpolated to n positions.
    * ``"truncate"``: the first n positions, padded with zero vectors beyond L; padding
      positions are marked False in the returned mask so that selection can avoid them.

    Returns
    -------
    tokens (S, n, D) and a (S, n) boolean mask of real tokens.
    """
    if mode not in ALIGN_MODES:
        raise unknown_name("source alignment mode", mode, ALIGN_MODES)
    if tokens.dim() != 3 or mask.shape != tokens.shape[:2]:
        raise InvalidInputError(f"source tokens must be (S, L, D) with a (S, L) mask, got "
                                f"{tuple(tokens.shape)} and {tuple(mask.shape)}")
    s, length, d = tokens.shape
    lengths = mask.bool().sum(1).clamp_min(1)
    if mode == "truncate":
        if n <= length:
            return tokens[:, :n], mask[:, :n].bool()
        pad = n - length
        return F.pad(tokens, (0, 0, 0, pad)), F.pad(mask.bool(), (0, pad))
    pos = torch.arange(n, device=tokens.device).unsqueeze(0).expand(s, n)
    if mode == "tile":
        idx = pos % lengths.unsqueeze(1)
        out = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, d))
    else:  # resample: position j of n maps to j (len - 1) / (n - 1) of the real tokens
        frac = pos.to(tokens.dtype) * (lengths - 1).unsqueeze(1).to(tokens.dtype) / max(n - 1, 1)
        lo = frac.floor().long()
        hi = torch.minimum(lo + 1, (lengths - 1).unsqueeze(1))
        w = (frac - lo.to(frac.dtype)).unsqueeze(-1)
        take = lambda i: torch.gather(tokens, 1, i.unsqueeze(-1).expand(-1, -1, d))  # noqa: E731
        out = (1 - w) * take(lo) + w * take(hi)
    return out, torch.ones(s, n, dtype=torch.bool, device=tokens.device)


@dataclass
class SourceBank:
    """Labelled proxy source sequences in the body's input space (f^s applied, frozen).

    tokens : (S, L, D) outputs of the body's pretrained input embedder (for image proxies an
    :class:`~crossmodal.features.ImageSourceTokens`, embedded when indexed); mask : (S, L) real
    tokens; labels : (S,) proxy class labels; num_classes : number of proxy classes.
    """

    name: str
    tokens: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, b: int, n: int, mode: str = "tile", *,
              generator: torch.Generator | None = None):
        """b random source samples (uniform with replacement, from the torch RNG), at length n.

        Returns tokens (b, n, D), real-token mask (b, n) and labels (b,).
        """
        idx = torch.randint(0, len(self), (b,), generator=generator)
        toks, mask = align_source_tokens(self.tokens[idx], self.mask[idx], n, mode)
        return toks, mask, self.labels[idx]


def load_source_bank(body, profile: str, proxy: str | None = None, max_samples: int = 2000,
                     seed: int = 0, root=None) -> SourceBank:
    """The proxy dataset through the body's own pretrained embedder (f^s), as a SourceBank."""
    name = proxy or default_proxy(body.kind, profile)
    data = load_proxy(name, max_samples=max_samples, seed=seed, root=root)
    # text: pretrained word/position embeddings; images: Swin's pretrained stem (computed
    # when a batch is drawn, see crossmodal.features.ImageSourceTokens)
    tokens, mask = source_tokens(body, data)
    return SourceBank(name=name, tokens=tokens, mask=mask.bool(),
                      labels=torch.as_tensor(data.labels, dtype=torch.long),
                      num_classes=int(data.num_classes))
