"""Proxy source datasets: labelled data of the body's pretraining modality.

ORCA aligns the target embedding with a proxy dataset of the source modality; PaRe draws
source patches from one; MoNA, RECRAFT and the gap-adaptive method compute source features
and source losses on one. The proxy must match the body:

=================  ==================================  ===================================
body               smoke / lab profile (offline)       paper profile (``data_scripts``)
=================  ==================================  ===================================
text (MiniLM,      ``pydoc_topics``: sentences of the  ``conll2003`` (CoNLL-2003, as ORCA)
RoBERTa)           help topics shipped with Python
                   (``pydoc_data.topics``), labelled
                   by topic group (5 classes)
image (Swin)       ``digits``: scikit-learn digits     ``cifar10`` (as ORCA, PaRe, RECRAFT)
=================  ==================================  ===================================

How a proxy is embedded (f^s, :func:`source_tokens`): text through the body's tokenizer and
pretrained word + position embeddings; images through the vision body's pretrained stem
(Swin-base: bilinear resize to 224 x 224, the 4 x 4 patch convolution and its LayerNorm,
3136 tokens of width 128), as ORCA embeds CIFAR-10 (after CIFAR-10's channel normalisation,
``IMAGE_NORMS``). A text body cannot embed an image proxy and vice versa: that is a
:class:`~crossmodal.errors.InvalidInputError` naming the matching proxies.

``pydoc_topics`` is our offline stand-in for CoNLL-2003: real English technical prose that
ships with every Python, so no download is needed; its labels (which part of the language
reference a sentence documents) play the role of CoNLL's classes. It is documented as a
substitute wherever it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch

from crossmodal.errors import DataMissingError, InvalidInputError, unknown_name

#: Topic groups of ``pydoc_data.topics`` used as labels of the text proxy.
PYDOC_GROUPS: dict[str, tuple[str, ...]] = {
    "statements": (
        "assert", "assignment", "augassign", "break", "continue", "del", "global", "import",
        "nonlocal", "pass", "raise", "return", "yield", "if", "for", "while", "try", "with",
        "else", "compound", "async", "await",
    ),
    "expressions": (
        "atom-identifiers", "atom-literals", "attribute-references", "binary", "bitwise",
        "booleans", "calls", "comparisons", "exprlists", "in", "lambda", "operator-summary",
        "power", "shifting", "slicings", "subscriptions", "unary", "conversions",
    ),
    "numbers": ("floating", "imaginary", "integers", "numbers", "numeric-types"),
    "builtin-types": (
        "dict", "lists", "strings", "string-methods", "formatstrings", "typesseq",
        "typesseq-mutable", "typesmapping", "sequence-types", "types", "typesfunctions",
        "typesmethods", "typesmodules", "bltin-code-objects", "bltin-ellipsis-object",
        "bltin-null-object", "bltin-type-objects", "truth",
    ),
    "data-model": (
        "attribute-access", "callable-types", "class", "context-managers", "customization",
        "debugger", "dynamic-features", "exceptions", "execmodel", "function", "id-classes",
        "identifiers", "naming", "objects", "specialattrs", "specialnames",
    ),
}


@dataclass
class ProxyData:
    """A labelled proxy source dataset.

    Exactly one of ``texts`` (text proxies) and ``images`` ((n, C, H, W) float32) is set.
    """

    name: str
    labels: np.ndarray
    num_classes: int
    texts: list[str] | None = None
    images: np.ndarray | None = None
    description: str = ""
    #: per-channel (mean, std) the images are normalised with before the source stem
    image_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def modality(self) -> str:
        return "text" if self.texts is not None else "image"

    def __len__(self) -> int:
        return len(self.labels)


@cache
def _pydoc_sentences() -> tuple[tuple[str, ...], tuple[int, ...]]:
    from pydoc_data.topics import topics

    group_of = {t: g for g, ts in enumerate(PYDOC_GROUPS.values()) for t in ts}
    texts, labels = [], []
    for topic in sorted(topics):
        if topic not in group_of:
            continue
        prose = re.sub(r"\s+", " ", topics[topic])
        for sentence in re.split(r"(?<=[.!?])\s+", prose):
            n_words = len(sentence.split())
            # keep prose sentences; drop code fragments, headings and very long run-ons
            if 6 <= n_words <= 60 and sum(c.isalpha() for c in sentence) > 0.6 * len(sentence):
                texts.append(sentence)
                labels.append(group_of[topic])
    return tuple(texts), tuple(labels)


def load_pydoc_topics(max_samples: int | None = 5000, seed: int = 0) -> ProxyData:
    texts, labels = _pydoc_sentences()
    idx = np.random.default_rng(seed).permutation(len(texts))
    if max_samples is not None:
        idx = idx[:max_samples]
    return ProxyData(
        name="pydoc_topics",
        texts=[texts[i] for i in idx],
        labels=np.asarray(labels, dtype=np.int64)[idx],
        num_classes=len(PYDOC_GROUPS),
        description="sentences of Python's bundled help topics, 5 topic-group labels "
        "(offline stand-in for CoNLL-2003)",
    )


def load_digits_proxy(max_samples: int | None = 5000, seed: int = 0) -> ProxyData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = np.random.default_rng(seed).permutation(len(bunch.target))
    if max_samples is not None:
        idx = idx[:max_samples]
    images = np.repeat((bunch.images / 16.0).astype(np.float32)[idx, None], 3, axis=1)
    return ProxyData(name="digits", images=images, labels=bunch.target[idx].astype(np.int64),
                     num_classes=10, description="scikit-learn digits as 3-channel images")


def _paper_proxy(name: str):
    def load(max_samples: int | None = 5000, seed: int = 0) -> ProxyData:
        try:
            from crossmodal.data.proxies import load_proxy_arrays
        except ImportError as err:
            raise DataMissingError(
                f"proxy {name!r} needs the downloaded data: crossmodal data download {name}"
            ) from err
        data = load_proxy_arrays(name, max_samples=max_samples, seed=seed)
        if name in IMAGE_NORMS:
            data.image_norm = IMAGE_NORMS[name]
        return data

    return load


#: ORCA normalises its CIFAR-10 proxy with CIFAR-10's channel statistics before Swin's stem
#: (``data_loaders.py`` ``load_cifar``); its training-time crop/flip augmentation of the
#: proxy is not applied here (the proxy is embedded once, without augmentation).
IMAGE_NORMS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))}


PROXIES = {
    "pydoc_topics": load_pydoc_topics,
    "digits": load_digits_proxy,
    "conll2003": _paper_proxy("conll2003"),
    "cifar10": _paper_proxy("cifar10"),
}


#: The modality of each proxy (what kind of body can embed it).
PROXY_MODALITY = {"pydoc_topics": "text", "digits": "image", "conll2003": "text",
                  "cifar10": "image"}
TEXT_PROXIES = tuple(n for n, m in PROXY_MODALITY.items() if m == "text")
IMAGE_PROXIES = tuple(n for n, m in PROXY_MODALITY.items() if m == "image")


def load_proxy(name: str, max_samples: int | None = 5000, seed: int = 0) -> ProxyData:
    """Load a proxy dataset by name (at most ``max_samples``, ORCA uses 5000)."""
    if name not in PROXIES:
        raise unknown_name("proxy dataset", name, list(PROXIES))
    return PROXIES[name](max_samples=max_samples, seed=seed)


def default_proxy(body_kind: str, profile: str) -> str:
    """The proxy matching a body's pretraining modality in a profile."""
    if body_kind == "text":
        return "conll2003" if profile == "paper" else "pydoc_topics"
    return "cifar10" if profile == "paper" else "digits"


class ImageSourceTokens:
    """Lazily embedded image-proxy tokens: ``tokens[idx]`` runs the pretrained stem on ``idx``.

    Swin's stem makes 3136 x 128 floats (1.6 MB) per image, so 2000 proxy images would be
    3.2 GB as one tensor; the stem is cheap (one 4x4 convolution and a LayerNorm), so the
    tokens are computed when indexed, without gradients, and never stored. Supports what the
    methods use of a ``(S, N, D)`` tensor: ``len``, ``shape``, indexing the first axis (int,
    slice, index tensor) and ``.to(device)``.
    """

    def __init__(self, images: torch.Tensor, source, num_tokens: int, dim: int,
                 device: torch.device | str | None = None) -> None:
        self.images, self.source = images, source
        self.shape = torch.Size((len(images), num_tokens, dim))
        self.dtype = torch.float32
        self.device = torch.device(device) if device is not None else source.device

    def __len__(self) -> int:
        return len(self.images)

    def dim(self) -> int:
        return 3

    def to(self, device) -> ImageSourceTokens:
        return ImageSourceTokens(self.images, self.source, self.shape[1], self.shape[2], device)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, tuple):  # e.g. tokens[idx, :n]: embed the samples, then slice
            return self[idx[0]][(slice(None), *idx[1:])]
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu()
        single = isinstance(idx, int)
        batch = self.images[idx : idx + 1] if single else self.images[idx]
        out = self.source.embed_images(batch).to(self.device)
        return out[0] if single else out


def _proxy_images(proxy: ProxyData) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(proxy.images, dtype=np.float32))
    if proxy.image_norm is not None:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                     for v in proxy.image_norm)
        images = (images - mean) / std
    return images


def _check_match(body, proxy: ProxyData):
    src = body.source_embedder
    if src is None:
        raise InvalidInputError(
            f"body {body.name!r} has no pretrained input layer to embed the proxy "
            f"{proxy.name!r} with: use a text body (roberta-base, minilm) or swin-base")
    if src.kind == "text" and proxy.texts is None:
        raise InvalidInputError(
            f"proxy {proxy.name!r} has images but body {body.name!r} is a text body: use a "
            f"text proxy ({', '.join(TEXT_PROXIES)}) or --body swin-base")
    if src.kind == "image" and proxy.images is None:
        raise InvalidInputError(
            f"proxy {proxy.name!r} is text but body {body.name!r} embeds images: use an image "
            f"proxy ({', '.join(IMAGE_PROXIES)}) or a text body")
    return src


@torch.no_grad()
def source_tokens(body, proxy: ProxyData, max_length: int = 64,
                  batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy through the body's own pretrained input layer: tokens (n, N, D) and mask (n, N).

    Text proxies go through the tokenizer and the pretrained word/position embeddings
    (f^s of PaRe and MoNA), at most ``max_length`` tokens, cached on the proxy object per
    (body, max_length). Image proxies go through the vision body's pretrained stem (Swin:
    resize to 224, 4x4 patch conv, LayerNorm; N = 3136), as ORCA embeds CIFAR-10; their
    tokens are an :class:`ImageSourceTokens` computed when indexed, the mask all ones.
    """
    src = _check_match(body, proxy)
    key = ("tokens", body.name, max_length)
    if key in proxy._cache:
        return proxy._cache[key]
    if src.kind == "image":
        images = _proxy_images(proxy)
        probe = src.embed_images(images[:1])
        tokens = ImageSourceTokens(images, src, probe.shape[1], probe.shape[2])
        mask = torch.ones(len(images), probe.shape[1], dtype=torch.long)
        proxy._cache[key] = (tokens, mask)
        return proxy._cache[key]
    toks, masks = [], []
    for i in range(0, len(proxy), batch_size):
        t, m = src.embed_texts(proxy.texts[i : i + batch_size], max_length=max_length)
        pad = max_length - t.shape[1]  # pad every batch to max_length so they concatenate
        toks.append(torch.nn.functional.pad(t, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(m, (0, pad)))
    proxy._cache[key] = (torch.cat(toks), torch.cat(masks))
    return proxy._cache[key]


@torch.no_grad()
def source_features(body, proxy: ProxyData, max_length: int = 64,
                    batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled (over real tokens) source embeddings, (n, D): ORCA's proxy features.

    Image proxies: the mean of Swin's stem tokens per image (ORCA ``get_tgt_model``:
    ``swin.embeddings(Resize(224)(x))``, then ``.mean(1)``), computed in batches.
    """
    toks, mask = source_tokens(body, proxy, max_length)
    if isinstance(toks, ImageSourceTokens):
        return torch.cat([toks[i : i + batch_size].mean(1)
                          for i in range(0, len(toks), batch_size)])
    m = mask.unsqueeze(-1).to(toks.dtype)
    return (toks * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_token_mean(out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of body outputs ``(n, N', D)`` over the real tokens marked in the input ``mask``.

    A text body keeps the sequence length (N' = N), so the input mask applies to its outputs.
    Swin merges patches (3136 input tokens -> 49 outputs); its source tokens have no padding
    (an all-ones mask), so the plain mean is the masked mean.
    """
    if mask is None:
        return out.mean(1)
    if mask.shape[1] != out.shape[1]:
        if not bool(mask.bool().all()):
            raise InvalidInputError(
                f"the body changed the sequence length ({mask.shape[1]} -> {out.shape[1]}) of "
                "padded source tokens; a padding mask cannot be carried through it")
        return out.mean(1)
    m = mask.unsqueeze(-1).to(out.dtype)
    return (out * m).sum(1) / m.sum(1).clamp_min(1.0)
