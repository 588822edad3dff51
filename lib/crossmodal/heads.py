"""Task heads (ORCA's predictors) on top of the body's output tokens ``(B, N, D)``.

* :class:`PooledLinearHead` (classification, multi-label): mean over tokens, then ``D -> K``.
* :class:`DenseHead1D`: each token predicts its own patch, ``D -> C_out * p``; the patches are
  laid back end to end and cropped (or resampled) to the target length.
* :class:`DenseHead2D`: each token of the (g x g) grid predicts a p x p patch of every output
  channel, ``D -> C_out p^2``; the patches are folded back to a (g p x g p) map and resized
  bilinearly to the target (H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PooledLinearHead(nn.Module):
    """Average-pool over the sequence, then a linear layer D -> K (PaRe A.2, ORCA)."""

    def __init__(self, hidden_size: int, num_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens.mean(dim=1))


class DenseHead1D(nn.Module):
    """Per-token linear decoder for 1D dense outputs ``(B, C_out, L_out)``."""

    def __init__(self, hidden_size: int, out_channels: int, out_len: int, num_tokens: int) -> None:
        super().__init__()
        self.out_channels, self.out_len = out_channels, out_len
        self.patch = math.ceil(out_len / num_tokens)
        self.linear = nn.Linear(hidden_size, out_channels * self.patch)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        out = self.linear(tokens).reshape(b, n, self.out_channels, self.patch)
        out = out.permute(0, 2, 1, 3).reshape(b, self.out_channels, n * self.patch)
        if out.shape[-1] >= self.out_len:
            return out[..., : self.out_len]
        return F.interpolate(out, size=self.out_len, mode="linear", align_corners=False)


class DenseHead2D(nn.Module):
    """Per-token linear decoder for 2D dense outputs ``(B, C_out, H, W)``."""

    def __init__(
        self, hidden_size: int, out_channels: int, out_hw: tuple[int, int], num_tokens: int
    ) -> None:
        super().__init__()
        self.grid = int(round(num_tokens**0.5))
        if self.grid**2 != num_tokens:
            raise ValueError(f"DenseHead2D needs a square token grid, got {num_tokens} tokens")
        self.out_channels, self.out_hw = out_channels, tuple(out_hw)
        self.patch = math.ceil(max(out_hw) / self.grid)
        self.linear = nn.Linear(hidden_size, out_channels * self.patch**2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        g, p, c = self.grid, self.patch, self.out_channels
        out = self.linear(tokens).reshape(b, g, g, c, p, p)
        out = out.permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)
        if out.shape[-2:] != self.out_hw:
            out = F.interpolate(out, size=self.out_hw, mode="bilinear", align_corners=False)
        return out
