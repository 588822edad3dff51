"""ORCA's task-specific embedders: they map raw inputs to the body's token space.

1D (ORCA's ``Embeddings1D``): a convolution with kernel = stride = patch size p maps
``(B, C, L)`` to ``(B, ceil(L/p), D)`` non-overlapping patch tokens, then LayerNorm, then the
body's own (pretrained, copied, trainable) position embeddings are added:

    e_n = LN(W * x[:, n p : (n+1) p]) + P[n + offset]

2D (ORCA's ``Embeddings2D``): bilinear resize to ``image_size`` x ``image_size``, a Conv2d
patchify with kernel = stride = p, flattening the (image_size/p)^2 grid to a sequence, then
LayerNorm (plus the body's position embeddings for text bodies, which have no 2D notion;
Swin bodies use relative positions inside attention and get none).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.errors import InvalidInputError


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
