"""ORCA's task-specific embedders: they map raw inputs to the body's token space.

1D (ORCA's ``Embeddings1D``): a convolution with kernel = stride = patch size p maps
``(B, C, L)`` to ``(B, ceil(L/p), D)`` non-overlapping patch tokens, then LayerNorm, then the
body's own (pretrained, copied, trainable) position embeddings are added:

    e_n = LN(W * x[:, n p : (n+1) p]) + P[n + offset]

2D (ORCA's ``Embeddings2D``): bilinear resize to ``image_size`` x ``image_size``, a Conv2d
patchify with kernel = stride = p, flattening the (image_size/p)^2 grid to a sequence, then
LayerNorm (plus the body's position embeddings for text bodies, which have no 2D notion;
Swin bodies use relative positions inside attention and get none).

Token count (ORCA's ``Embeddings1D.get_stack_num``): given ORCA's ``target_seq_len`` T, the
1D patch is the smallest divisor p of the input length L with L / p <= T, so N = L / p
(:func:`orca_patch_size`; ECG: L = 1000, T = 64 -> p = 20, N = 50). ORCA's 2D embedder has
no such rule (Swin: 224 px, p = 4, N = 3136).

Initialisation (:func:`init_embedder`, ``embedder_init``):

* ``"random"``: PyTorch's default initialisation of the convolution, a fresh LayerNorm
  (gamma = 1, beta = 0), the copied position embeddings (the kit's historical default).
* ``"source"`` (ORCA's ``embedder_init`` whenever the embedder is trained, i.e. every
  ORCA run; PaRe's code does it unconditionally): the LayerNorm is copied from the body's
  pretrained input layer (RoBERTa's embedding LayerNorm, Swin's patch-embedding LayerNorm);
  the 2D convolution in front of a Swin body is Swin's pretrained 4x4 patch convolution,
  its input channels tiled (and cut) to the task's channel count, and its bias; any other
  convolution gets ORCA's ``conv_init`` (Xavier-uniform with gain sqrt(2), zero bias).

Which one a method ran: ORCA's code, ``"source"`` (``utils.py`` ``embedder_init`` with
``train_embedder=True``); PaRe's code also ``"source"`` (``utils_PaRe.py``, unconditionally),
while PaRe's paper text says f^t is "randomly initialised", i.e. ``"random"``. The protocol
table (``crossmodal.protocol``) sets it per method; ``build_model``'s default is ``"random"``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.errors import InvalidInputError, unknown_name

EMBEDDER_INITS = ("random", "source")


def orca_patch_size(length: int, target_seq_len: int) -> int:
    """ORCA's 1D patch: the smallest divisor p of ``length`` with ``length / p <= target_seq_len``.

    The sequence then has exactly ``length / p`` tokens, no padding (ORCA ``embedder.py``,
    ``Embeddings1D.get_stack_num`` for a 768-wide body).
    """
    if length < 1 or target_seq_len < 1:
        raise InvalidInputError(
            f"the input length ({length}) and the token budget n_tokens ({target_seq_len}) "
            "must be >= 1")
    for p in range(1, length + 1):
        if length % p == 0 and length // p <= target_seq_len:
            return p
    return length  # unreachable: p = length always qualifies


def _positions(
    pretrained: nn.Embedding | None, num_tokens: int, hidden: int, offset: int, max_positions
) -> nn.Embedding | None:
    if max_positions is not None and num_tokens > max_positions:
        raise InvalidInputError(
            f"the embedder makes {num_tokens} tokens but the body has only {max_positions} "
            "positions: use a larger patch size (--patch-size) or a smaller image size"
        )
    if pretrained is None:
        return None
    if pretrained.embedding_dim != hidden:
        raise InvalidInputError("position embeddings width differs from the body width")
    return pretrained


class Embedder1D(nn.Module):
    """Conv1d patch embedder for sequences ``(B, C, L)`` -> ``(B, ceil(L/p), D)``."""

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        patch_size: int,
        seq_len: int,
        position_embeddings: nn.Embedding | None = None,
        position_offset: int = 0,
        max_positions: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.patch_size, self.seq_len = in_channels, patch_size, seq_len
        self.num_tokens = math.ceil(seq_len / patch_size)
        self.proj = nn.Conv1d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.position_embeddings = _positions(
            position_embeddings, self.num_tokens, hidden_size, position_offset, max_positions
        )
        self.position_offset = position_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise InvalidInputError(
                f"1D embedder expects (B, {self.in_channels}, L), got {tuple(x.shape)}"
            )
        pad = (-x.shape[-1]) % self.patch_size  # right-pad so every sample fills whole patches
        if pad:
            x = F.pad(x, (0, pad))
        tokens = self.norm(self.proj(x).transpose(1, 2))
        if self.position_embeddings is not None:
            ids = torch.arange(tokens.shape[1], device=x.device) + self.position_offset
            tokens = tokens + self.position_embeddings(ids)
        return tokens


class Embedder2D(nn.Module):
    """Resize + Conv2d patchify for images ``(B, C, H, W)`` -> ``(B, (S/p)^2, D)``."""

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        patch_size: int,
        image_size: int,
        position_embeddings: nn.Embedding | None = None,
        position_offset: int = 0,
        max_positions: int | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise InvalidInputError(
                f"image_size {image_size} must be a multiple of patch_size {patch_size}"
            )
        self.in_channels, self.patch_size, self.image_size = in_channels, patch_size, image_size
        self.grid = image_size // patch_size
        self.num_tokens = self.grid**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.position_embeddings = _positions(
            position_embeddings, self.num_tokens, hidden_size, position_offset, max_positions
        )
        self.position_offset = position_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InvalidInputError(
                f"2D embedder expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        tokens = self.norm(self.proj(x).flatten(2).transpose(1, 2))
        if self.position_embeddings is not None:
            ids = torch.arange(tokens.shape[1], device=x.device) + self.position_offset
            tokens = tokens + self.position_embeddings(ids)
        return tokens


def _conv_init(conv: nn.Module) -> None:
    """ORCA's ``conv_init``: Xavier-uniform weights with gain sqrt(2), zero bias."""
    nn.init.xavier_uniform_(conv.weight, gain=math.sqrt(2.0))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


@torch.no_grad()
def init_embedder(embedder: nn.Module, source, mode: str = "random") -> None:
    """Initialise an :class:`Embedder1D`/:class:`Embedder2D` (see the module docstring).

    Parameters
    ----------
    embedder : the task embedder (its ``proj`` convolution and ``norm`` LayerNorm).
    source : the body's :class:`~crossmodal.bodies.SourceEmbedder` (None: nothing to copy;
        ``"source"`` then raises).
    mode : ``"random"`` (leave the construction-time initialisation) or ``"source"``.
    """
    if mode not in EMBEDDER_INITS:
        raise unknown_name("embedder_init", mode, EMBEDDER_INITS)
    if mode == "random":
        return
    if source is None:
        raise InvalidInputError(
            "embedder_init='source' needs the body's pretrained input layer, and this body has "
            "none: use embedder_init='random'")
    emb = source.embeddings
    if source.kind == "image":  # Swin's stem: patch_embed.proj (conv) + patch_embed.norm
        src_norm, src_conv = emb.norm, emb.proj
    else:  # transformers' embeddings: LayerNorm after word + position (+ type) embeddings
        src_norm, src_conv = emb.LayerNorm, None
    if src_norm.weight.shape != embedder.norm.weight.shape:
        raise InvalidInputError(
            f"the body's input LayerNorm has width {src_norm.weight.shape[0]} but the embedder "
            f"{embedder.norm.weight.shape[0]}: use embedder_init='random'")
    embedder.norm.weight.copy_(src_norm.weight)
    embedder.norm.bias.copy_(src_norm.bias)
    proj = embedder.proj
    if src_conv is None or not isinstance(proj, nn.Conv2d):
        _conv_init(proj)
        return
    k_src, k_tgt = tuple(src_conv.kernel_size), tuple(proj.kernel_size)
    if k_src != k_tgt or src_conv.out_channels != proj.out_channels:
        raise InvalidInputError(
            f"the pretrained stem is a {k_src} convolution to {src_conv.out_channels} channels; "
            f"the embedder's is {k_tgt} to {proj.out_channels}: use patch size "
            f"{k_src[0]} or embedder_init='random'")
    # ORCA tiles the stem's 3 input channels up to the task's C and keeps the first C
    reps = proj.in_channels // src_conv.in_channels + 1
    weight = torch.cat([src_conv.weight] * reps, dim=1)[:, : proj.in_channels]
    proj.weight.copy_(weight)
    proj.bias.copy_(src_conv.bias)
