"""Task heads (ORCA's predictors) on top of the body's output tokens ``(B, N, D)``.

* :class:`PooledLinearHead` (classification, multi-label): mean over tokens, then ``D -> K``.
* :class:`DenseHead1D`: each token predicts its own patch, ``D -> C_out * p``; the patches are
  laid back end to end and cropped (or resampled) to the target length.
* :class:`DenseHead2D`: each token of the (g x g) grid predicts a p x p patch of every output
  channel, ``D -> C_out p^2``; the patches are folded back to a (g p x g p) map and resized
  bilinearly to the target (H, W).

ORCA's dense predictors (``head="orca"`` in :func:`crossmodal.models.build_model`):

* :class:`PooledDenseHead1D` (ORCA ``adaptive_pooler(..., dense=True)`` on RoBERTa's last
  hidden state): parameter-free. Each token's D features are average-pooled
  (``AdaptiveAvgPool1d``) to C_out * p values, p = L_out / N, which become the token's p
  outputs of every channel:  y[c, n p + j] = mean(h_n[a_{c p + j} : b_{c p + j}]).
* :class:`PixelShuffleHead2D` (ORCA's ``SwinForMaskedImageModeling`` decoder, then
  ``adaptive_pooler`` + ``AdaptiveAvgPool2d``): the g x g output grid, a 1x1 convolution
  D -> c s^2 and ``PixelShuffle(s)`` (s = 32 for Swin: 7 x 32 = 224, c = 3, Swin's image
  channels), then an average over channels to C_out and adaptive average pooling to (H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.errors import InvalidInputError


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


class PooledDenseHead1D(nn.Module):
    """ORCA's parameter-free 1D dense predictor: pool each token's features to its outputs."""

    def __init__(self, out_channels: int, out_len: int, num_tokens: int) -> None:
        super().__init__()
        self.out_channels, self.out_len = out_channels, out_len
        self.patch = math.ceil(out_len / num_tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        c, p = self.out_channels, self.patch
        out = F.adaptive_avg_pool1d(tokens, c * p).reshape(b, n, c, p)
        out = out.permute(0, 2, 1, 3).reshape(b, c, n * p)  # C_out = 1: ORCA's plain reshape
        if out.shape[-1] >= self.out_len:
            return out[..., : self.out_len]
        return F.interpolate(out, size=self.out_len, mode="linear", align_corners=False)


class PixelShuffleHead2D(nn.Module):
    """ORCA's 2D dense predictor: 1x1 conv + PixelShuffle decoder, channel and spatial pooling.

    Parameters
    ----------
    hidden_size : D, the body's output width.
    out_channels : C_out.
    out_hw : the target (H, W).
    num_tokens : g^2, the body's output tokens (a square grid).
    stride : s, the decoder's upsampling factor (Swin: its encoder stride 32).
    decoder_channels : c, the decoder's image channels (Swin's 3; at least C_out).
    """

    def __init__(self, hidden_size: int, out_channels: int, out_hw: tuple[int, int],
                 num_tokens: int, stride: int, decoder_channels: int = 3) -> None:
        super().__init__()
        self.grid = int(round(num_tokens**0.5))
        if self.grid**2 != num_tokens:
            raise ValueError(f"PixelShuffleHead2D needs a square token grid, got {num_tokens}")
        self.out_channels, self.out_hw = out_channels, tuple(out_hw)
        self.decoder_channels = max(decoder_channels, out_channels)
        self.decoder = nn.Sequential(
            nn.Conv2d(hidden_size, self.decoder_channels * stride**2, kernel_size=1),
            nn.PixelShuffle(stride),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, d = tokens.shape
        g = self.grid
        x = self.decoder(tokens.transpose(1, 2).reshape(b, d, g, g))  # (B, c, g s, g s)
        h, w = x.shape[-2:]
        if self.decoder_channels != self.out_channels:  # ORCA's adaptive_pooler(C_out)
            x = F.adaptive_avg_pool1d(x.flatten(2).transpose(1, 2), self.out_channels)
            x = x.transpose(1, 2).reshape(b, self.out_channels, h, w)
        return F.adaptive_avg_pool2d(x, self.out_hw)


class TargetDecodedHead(nn.Module):
    r"""A dense head whose outputs are standardised targets, decoded to physical units.

    ORCA trains Darcy Flow (NAS-Bench-360) on targets standardised per pixel with the
    training set's statistics (``src/data_loaders.py:load_darcy_flow``,
    ``UnitGaussianNormalizer(y_train)``) and decodes both the prediction and the target
    before the loss and the metric (``src/main.py:train_one_epoch``/``evaluate``,
    ``decoder.decode``). The inner head therefore predicts :math:`z`, and

    .. math:: \hat y = z \odot (\sigma + \epsilon) + \mu,
              \qquad \mu = \operatorname{mean}_i y_i, \quad
              \sigma = \operatorname{std}_i y_i \ (\text{unbiased}), \quad \epsilon = 10^{-5},

    per output element over the training targets :math:`y_i`. Loss and metric see
    :math:`\hat y` against the physical targets, which is ORCA's
    ``loss(decode(out), decode(encode(y)))``. Until :meth:`fit` is called the decoder is the
    identity (:math:`\mu = 0`, :math:`\sigma + \epsilon = 1`). The statistics are buffers:
    checkpoints keep them.
    """

    EPS = 1e-5

    def __init__(self, inner: nn.Module, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.zeros(out_shape))
        self.register_buffer("scale", torch.ones(out_shape))
        self.fitted = False

    @torch.no_grad()
    def fit(self, targets: torch.Tensor) -> None:
        """Set :math:`\\mu` and :math:`\\sigma + \\epsilon` from training targets ``(n, *out)``."""
        y = torch.as_tensor(targets, dtype=torch.float32)
        if tuple(y.shape[1:]) != tuple(self.mean.shape) or len(y) < 2:
            raise InvalidInputError(f"target normaliser: need >= 2 targets of shape "
                                    f"{tuple(self.mean.shape)}, got {tuple(y.shape)}")
        self.mean.copy_(y.mean(0).to(self.mean))
        self.scale.copy_((y.std(0) + self.EPS).to(self.scale))
        self.fitted = True

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(tokens) * self.scale + self.mean
