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

``pydoc_topics`` is our offline stand-in for CoNLL-2003: real English technical prose that
ships with every Python, so no download is needed; its labels (which part of the language
reference a sentence documents) play the role of CoNLL's classes. It is documented as a
substitute wherever it is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch

from crossmodal.errors import DataMissingError, unknown_name

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
    def load(max_samples: int | None = 5000, seed: int = 0, root=None) -> ProxyData:
        try:
            from crossmodal.data.proxies import load_proxy_arrays
        except ImportError as err:
            raise DataMissingError(
                f"proxy {name!r} needs the downloaded data: crossmodal data download {name}"
            ) from err
        return load_proxy_arrays(name, max_samples=max_samples, seed=seed, root=root)

    return load


#: Proxies read from the data root (downloaded by ``crossmodal data download``).
PAPER_PROXIES = ("conll2003", "cifar10")

PROXIES = {
    "pydoc_topics": load_pydoc_topics,
    "digits": load_digits_proxy,
    "conll2003": _paper_proxy("conll2003"),
    "cifar10": _paper_proxy("cifar10"),
}


def load_proxy(name: str, max_samples: int | None = 5000, seed: int = 0,
               root: str | Path | None = None) -> ProxyData:
    """Load a proxy dataset by name (at most ``max_samples``, ORCA uses 5000).

    ``root`` is the data folder of downloaded proxies (the run's ``--data-root``; None:
    ``$CROSSMODAL_DATA`` or ``./data``); bundled proxies ignore it.
    """
    if name not in PROXIES:
        raise unknown_name("proxy dataset", name, list(PROXIES))
    if name in PAPER_PROXIES:
        return PROXIES[name](max_samples=max_samples, seed=seed, root=root)
    return PROXIES[name](max_samples=max_samples, seed=seed)


def default_proxy(body_kind: str, profile: str) -> str:
    """The proxy matching a body's pretraining modality in a profile."""
    if body_kind == "text":
        return "conll2003" if profile == "paper" else "pydoc_topics"
    return "cifar10" if profile == "paper" else "digits"


@torch.no_grad()
def source_tokens(body, proxy: ProxyData, max_length: int = 64,
                  batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy through the body's own pretrained input layer: tokens (n, N, D) and mask (n, N).

    Text proxies go through the tokenizer and the pretrained word/position embeddings
    (f^s of PaRe and MoNA). Cached on the proxy object per (body, max_length).
    """
    key = ("tokens", body.name, max_length)
    if key in proxy._cache:
        return proxy._cache[key]
    if proxy.texts is None:
        raise NotImplementedError(
            "image proxies need a vision body's pretrained patch embedder (paper profile, Swin)"
        )
    src = body.source_embedder
    src.max_length = max_length
    toks, masks = [], []
    for i in range(0, len(proxy), batch_size):
        t, m = src.embed_texts(proxy.texts[i : i + batch_size])
        pad = max_length - t.shape[1]  # pad every batch to max_length so they concatenate
        toks.append(torch.nn.functional.pad(t, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(m, (0, pad)))
    proxy._cache[key] = (torch.cat(toks), torch.cat(masks))
    return proxy._cache[key]


def source_features(body, proxy: ProxyData, max_length: int = 64) -> torch.Tensor:
    """Mean-pooled (over real tokens) source embeddings, (n, D): ORCA's proxy features."""
    toks, mask = source_tokens(body, proxy, max_length)
    m = mask.unsqueeze(-1).to(toks.dtype)
    return (toks * m).sum(1) / m.sum(1).clamp_min(1.0)
