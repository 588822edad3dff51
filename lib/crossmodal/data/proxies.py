r"""Proxy source datasets: labelled data of the body's pretraining modality (the registry
and the paper profile's proxy files).

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

How a proxy is embedded (f^s, :func:`crossmodal.features.source_tokens`): text through the body's tokenizer and
pretrained word + position embeddings; images through the vision body's pretrained stem
(Swin-base: bilinear resize to 224 x 224, the 4 x 4 patch convolution and its LayerNorm,
3136 tokens of width 128), as ORCA embeds CIFAR-10 (after CIFAR-10's channel normalisation,
``IMAGE_NORMS``). A text body cannot embed an image proxy and vice versa: that is a
:class:`~crossmodal.errors.InvalidInputError` naming the matching proxies.

``pydoc_topics`` is our offline stand-in for CoNLL-2003: real English technical prose that
ships with every Python, so no download is needed; its labels (which part of the language
reference a sentence documents) play the role of CoNLL's classes. It is documented as a
substitute wherever it is used.

The registry (:data:`PROXIES`, :func:`load_proxy`, :func:`default_proxy`) is below; how a
proxy goes through a body (:func:`crossmodal.features.source_tokens`) is in
:mod:`crossmodal.features`.

The paper profile's proxies are read from the files ``crossmodal data download`` fetches:

* ``cifar10`` (image bodies): the CIFAR-10 training batches of ``cifar-10-python.tar.gz``,
  images (n, 3, 32, 32) float32 in [0, 1], labels 0..9.
* ``conll2003`` (text bodies): the sentences of the CoNLL-2003 English training file
  (``train.txt`` in ``conll2003.zip``), tokens joined by single spaces, ``-DOCSTART-`` lines
  dropped. CoNLL labels tokens, not sentences, so each sentence gets one label: the entity type
  (PER, ORG, LOC, MISC) with the most mentions in it, ties going to the type mentioned first,
  and ``none`` when it mentions no entity. A mention starts at a ``B-X`` tag or at an ``I-X``
  tag whose predecessor is not of type X (the file uses IOB1, where ``B-`` only separates two
  adjacent mentions of one type). Classes: 0 none, 1 PER, 2 ORG, 3 LOC, 4 MISC.

Both draw ``max_samples`` examples uniformly without replacement with ``numpy``'s generator
seeded by ``seed`` (ORCA uses 5000 proxy samples).
"""

from __future__ import annotations

import io
import pickle
import re
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from crossmodal.data import checksums
from crossmodal.data.manifest import Manifest
from crossmodal.data.root import data_root
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
    #: text proxies: tokens per sentence through the body (longer ones are truncated); the
    #: default of :func:`crossmodal.features.source_tokens`
    max_tokens: int = 64
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def modality(self) -> str:
        return "text" if self.texts is not None else "image"

    def __len__(self) -> int:
        return len(self.labels)


@cache
def _pydoc_sentences() -> tuple[tuple[str, ...], tuple[int, ...]]:
    from pydoc_data.topics import topics  # lazy: a 0.8 MB module, read only for this proxy

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


#: Tokens per ``pydoc_topics`` sentence (the smoke and lab proxy): 42 % of its sentences
#: are longer and are cut (at 64, the kit's default, 8 % were); measured on the smoke
#: profile, gap_adaptive_a's step cost is dominated by these source passes.
PYDOC_MAX_TOKENS = 32


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
        # 32 tokens (CoNLL-2003's sentences average ~14 words; these ~33 tokens, the longest
        # 8 % cut at 64): each source pass through the body (the gap-adaptive source loss
        # every step, MoNA's outer loss, PaRe's source patches) costs half of 64 tokens
        max_tokens=PYDOC_MAX_TOKENS,
    )


def load_digits_proxy(max_samples: int | None = 5000, seed: int = 0) -> ProxyData:
    from sklearn.datasets import load_digits  # lazy: scikit-learn's import costs ~1 s

    bunch = load_digits()
    idx = np.random.default_rng(seed).permutation(len(bunch.target))
    if max_samples is not None:
        idx = idx[:max_samples]
    images = np.repeat((bunch.images / 16.0).astype(np.float32)[idx, None], 3, axis=1)
    return ProxyData(name="digits", images=images, labels=bunch.target[idx].astype(np.int64),
                     num_classes=10, description="scikit-learn digits as 3-channel images")


def _paper_proxy(name: str):
    def load(max_samples: int | None = 5000, seed: int = 0, root=None) -> ProxyData:
        data = load_proxy_arrays(name, max_samples=max_samples, seed=seed, root=root)
        if name in IMAGE_NORMS:
            data.image_norm = IMAGE_NORMS[name]
        return data

    return load


#: Proxies read from the data root (downloaded by ``crossmodal data download``).
PAPER_PROXIES = ("conll2003", "cifar10")

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


# ---------------------------------------------------------- the paper proxies' files


#: Sentence classes of the CoNLL-2003 proxy, in label order.
CONLL_CLASSES = ("none", "PER", "ORG", "LOC", "MISC")
CIFAR10_ARCHIVE = "proxies/cifar10/cifar-10-python.tar.gz"
CONLL_ARCHIVE = "proxies/conll2003/conll2003.zip"
_ENTRY = {"cifar10": "CIFAR10", "conll2003": "CoNLL2003"}


def _require(rel: str, name: str, root: Path) -> Path:
    """The archive at ``root / rel``, verified (size, checksum) before it is read."""
    path = root / rel
    fetch = (f"`crossmodal data download {_ENTRY[name]}` (or `python data_scripts/download.py "
             f"{_ENTRY[name]}`)")
    if not path.exists():
        raise DataMissingError(
            f"proxy {name!r} needs {path}; fetch it with {fetch}, or choose "
            "the data folder with the CROSSMODAL_DATA environment variable.")
    checksums.check_file(root, rel, spec=Manifest.load().find_file(rel),
                         repair=f"Delete it and run {fetch} again.")
    return path


def _subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    idx = np.random.default_rng(seed).permutation(n)
    return idx if max_samples is None else idx[:max_samples]


def read_cifar10_train(archive: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 50,000 CIFAR-10 training images as uint8 (n, 3, 32, 32) and int64 labels."""
    xs, ys = [], []
    with tarfile.open(archive, "r:gz") as tf:
        for i in range(1, 6):
            member = tf.extractfile(f"cifar-10-batches-py/data_batch_{i}")
            if member is None:
                raise InvalidInputError(f"{archive} has no cifar-10-batches-py/data_batch_{i}")
            batch = pickle.load(member, encoding="bytes")  # checksummed publisher file
            xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def conll_sentences(text: str) -> tuple[list[str], np.ndarray]:
    """Sentences and per-sentence labels (see the module docstring) of a CoNLL-2003 file."""
    sentences, labels = [], []
    tokens: list[str] = []
    tags: list[str] = []

    def close() -> None:
        if tokens:
            sentences.append(" ".join(tokens))
            labels.append(sentence_label(tags))
        tokens.clear()
        tags.clear()

    for line in text.splitlines():
        parts = line.split()
        if not parts:
            close()
        elif parts[0] == "-DOCSTART-":
            close()
        else:
            tokens.append(parts[0])
            tags.append(parts[-1])
    close()
    return sentences, np.asarray(labels, np.int64)


def sentence_label(tags: list[str]) -> int:
    """Index in :data:`CONLL_CLASSES` of the most mentioned entity type (0 if none)."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    prev = "O"
    for i, tag in enumerate(tags):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if kind is not None and (tag.startswith("B-") or prev[2:] != kind):
            counts[kind] += 1
            first.setdefault(kind, i)
        prev = tag
    known = {k: c for k, c in counts.items() if k in CONLL_CLASSES}
    if not known:
        return 0
    best = min(known, key=lambda k: (-known[k], first[k]))
    return CONLL_CLASSES.index(best)


def _read_conll_train(archive: Path) -> str:
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if Path(n).name == "train.txt"]
        if not names:
            raise InvalidInputError(f"{archive} holds no train.txt (found {zf.namelist()[:5]})")
        return io.TextIOWrapper(zf.open(names[0]), encoding="utf-8").read()


def load_proxy_arrays(name: str, max_samples: int | None = 5000, seed: int = 0,
                      root: str | Path | None = None) -> ProxyData:
    """Load a paper proxy (``"cifar10"`` or ``"conll2003"``) from the data root.

    Parameters
    ----------
    name : ``"cifar10"`` or ``"conll2003"``.
    max_samples : at most this many examples (``None``: all).
    seed : seed of the subsample.
    root : data root; default :func:`crossmodal.data.root.data_root` (``$CROSSMODAL_DATA`` or
        ``./data``).

    Raises
    ------
    DataMissingError
        The archive is not downloaded; the message names the command that fetches it.
    """
    if name not in _ENTRY:
        raise unknown_name("paper proxy", name, list(_ENTRY))
    root = data_root(root)
    if name == "cifar10":
        images, labels = read_cifar10_train(_require(CIFAR10_ARCHIVE, name, root))
        idx = _subsample(len(labels), max_samples, seed)
        return ProxyData(name="cifar10", images=images[idx].astype(np.float32) / 255.0,
                         labels=labels[idx], num_classes=10,
                         description="CIFAR-10 training images in [0, 1]")
    texts, labels = conll_sentences(_read_conll_train(_require(CONLL_ARCHIVE, name, root)))
    idx = _subsample(len(labels), max_samples, seed)
    return ProxyData(name="conll2003", texts=[texts[i] for i in idx], labels=labels[idx],
                     num_classes=len(CONLL_CLASSES),
                     description="CoNLL-2003 English training sentences, labelled by their "
                     "most mentioned entity type (none/PER/ORG/LOC/MISC)")
