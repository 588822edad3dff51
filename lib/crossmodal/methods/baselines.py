"""Baselines of PaRe Table 15: train from scratch, NFT and FPT.

* ``scratch``: the body's architecture with random weights (``<body>-random``), everything
  trained: measures what pretraining buys.
* ``nft`` (naive fine-tuning): pretrained body, new embedder and head, everything trained.
* ``fpt`` (frozen pretrained transformer, Lu et al. 2021): the body's attention and MLP
  weights are frozen; the embedder, the head and the body's LayerNorm parameters train.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from crossmodal.methods.base import Method, MethodConfig, register_method


@dataclass
class NFTConfig(MethodConfig):
    """NFT has no options beyond the training config."""


@register_method
class NFT(Method):
    name = "nft"
    config_class = NFTConfig
    paper = "naive fine-tuning (PaRe Table 15)"


@dataclass
class ScratchConfig(MethodConfig):
    """Train-from-scratch has no options beyond the training config."""


@register_method
class Scratch(Method):
    name = "scratch"
    config_class = ScratchConfig
    paper = "train from scratch (PaRe Table 15)"

    def body_name(self, default: str) -> str:
        return default if default.endswith("-random") else f"{default}-random"


@dataclass
class FPTConfig(MethodConfig):
    """Frozen body; ``train_layernorm`` keeps the body's LayerNorm affine parameters trainable."""

    train_layernorm: bool = field(default=True, metadata={
        "help": "keep the body's LayerNorm affine parameters trainable (the rest of the body "
                "is frozen)."})


def is_layernorm_parameter(name: str) -> bool:
    return "LayerNorm" in name or ".norm" in name or name.startswith("norm")


@register_method
class FPT(Method):
    name = "fpt"
    config_class = FPTConfig
    paper = "frozen pretrained transformer (Lu et al. 2021; PaRe Table 15)"

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params = list(model.embedder.parameters()) + list(model.head.parameters())
        params += list(model.extras.parameters())
        if self.config.train_layernorm:
            params += [p for n, p in model.body.named_parameters() if is_layernorm_parameter(n)]
        return params
