r"""The paper profile's proxy source datasets, read from the files ``crossmodal data download`` fetches.

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
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from crossmodal.data.root import data_root
from crossmodal.errors import DataMissingError, InvalidInputError, unknown_name
from crossmodal.proxies import ProxyData

#: Sentence classes of the CoNLL-2003 proxy, in label order.
CONLL_CLASSES = ("none", "PER", "ORG", "LOC", "MISC")
CIFAR10_ARCHIVE = "proxies/cifar10/cifar-10-python.tar.gz"
CONLL_ARCHIVE = "proxies/conll2003/conll2003.zip"
_ENTRY = {"cifar10": "CIFAR10", "conll2003": "CoNLL2003"}


def _require(rel: str, name: str, root: Path) -> Path:
    """The archive at ``root / rel``, verified (size, checksum) before it is read."""
    from crossmodal.data import checksums
    from crossmodal.data.manifest import Manifest

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
