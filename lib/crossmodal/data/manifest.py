"""The download manifest: every file the kit can fetch, with URLs, sizes and checksums.

The manifest ships inside the package (``crossmodal/data/manifest.json``) and is read with
:mod:`importlib.resources`, so it works from a wheel as well as from a checkout. Each entry
is a task or proxy dataset (``Advection1D``, ``CIFAR100``, ``CIFAR10``, ...) made of one or
more files; a file has a path relative to the data root, one or more URLs (primary first,
then mirrors) and whatever checksums its publisher gives.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from crossmodal.errors import unknown_name

#: Environment variable naming another manifest file (private mirrors, tests).
MANIFEST_ENV_VAR = "CROSSMODAL_MANIFEST"
#: A file without checksum or exact size must have at least this fraction of ``approx_size``.
MIN_FRACTION = 0.5

#: Names accepted for whole groups on the command line.
GROUPS = {"nb360": "nb360", "nas-bench-360": "nb360", "pdebench": "pdebench",
          "proxy": "proxy", "proxies": "proxy"}


@dataclass(frozen=True)
class FileSpec:
    """One downloadable file.

    Attributes
    ----------
    path : location relative to the data root, e.g. ``pdebench/1D_Advection_Sols_beta0.4.hdf5``.
    urls : primary URL first, then mirrors; tried in order.
    size : exact size in bytes when a source states it, else ``None``.
    approx_size : an estimate in bytes (dry-run totals, free-space check), else ``None``.
    md5, sha256 : hex digests when known.
    checksum_note : where the checksums come from, or why there are none.
    min_size : the smallest size a complete file can have, when known (else derived from
        ``approx_size``, see :attr:`minimum_size`).
    extract : ``"zip"``, ``"tar"`` or ``None``: unpack next to the file after download.
    """

    path: str
    urls: tuple[str, ...]
    size: int | None = None
    approx_size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    checksum_note: str = ""
    extract: str | None = None
    min_size: int | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def expected_size(self) -> int | None:
        """Exact size if known, else the estimate (for planning, never for verification)."""
        return self.size if self.size is not None else self.approx_size

    @property
    def minimum_size(self) -> int | None:
        """Fewer bytes than this cannot be the complete file (``None``: unknown).

        The exact size when known, else ``min_size``, else :data:`MIN_FRACTION` of the
        estimate ``approx_size``: the estimates are computed from array shapes or taken from
        the publishers' READMEs, so a file below half of one is an error page or a fragment.
        """
        if self.size is not None:
            return self.size
        if self.min_size is not None:
            return self.min_size
        return None if self.approx_size is None else int(self.approx_size * MIN_FRACTION)

    @property
    def has_published_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)


@dataclass(frozen=True)
class Entry:
    """A task or proxy dataset: a named group of files."""

    name: str
    group: str
    description: str
    source: str
    files: tuple[FileSpec, ...]
    notes: str = ""
    generate: str | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def expected_size(self) -> int | None:
        sizes = [f.expected_size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Manifest:
    """All entries of the manifest, looked up by name (case-insensitive) or alias."""

    entries: dict[str, Entry]
    about: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> Manifest:
        """Read the JSON file at ``path``, else ``$CROSSMODAL_MANIFEST``, else the packaged one."""
        if path is None and os.environ.get(MANIFEST_ENV_VAR, "").strip():
            path = os.environ[MANIFEST_ENV_VAR].strip()
        if path is None:
            text = (resources.files("crossmodal.data") / "manifest.json").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        raw = json.loads(text)
        entries = {}
        for name, e in raw["entries"].items():
            files = tuple(
                FileSpec(
                    path=f["path"], urls=tuple(f["urls"]), size=f.get("size"),
                    approx_size=f.get("approx_size"), md5=f.get("md5"), sha256=f.get("sha256"),
                    checksum_note=f.get("checksum_note", ""), extract=f.get("extract"),
                    min_size=f.get("min_size"),
                )
                for f in e["files"]
            )
            entries[name] = Entry(
                name=name, group=e["group"], description=e.get("description", ""),
                source=e.get("source", ""), files=files, notes=e.get("notes", ""),
                generate=e.get("generate"), aliases=tuple(e.get("aliases", ())),
            )
        return cls(entries=entries, about=raw.get("about", ""))

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> Entry:
        """Look an entry up by name or alias, ignoring case; unknown names list the valid ones."""
        if name in self.entries:
            return self.entries[name]
        low = name.lower()
        for e in self.entries.values():
            if e.name.lower() == low or low in (a.lower() for a in e.aliases):
                return e
        raise unknown_name("dataset", name, list(self.entries))

    def select(self, names: list[str] | tuple[str, ...], *, all_: bool = False) -> list[Entry]:
        """Resolve names (entry names, aliases or group names ``nb360``/``pdebench``/``proxies``)."""
        if all_:
            return list(self.entries.values())
        out: list[Entry] = []
        for name in names:
            group = GROUPS.get(name.lower())
            chosen = ([e for e in self.entries.values() if e.group == group] if group
                      else [self.get(name)])
            out.extend(e for e in chosen if e not in out)
        return out

    def find_file(self, rel_path: str) -> FileSpec | None:
        """The spec of the file at ``rel_path`` (relative to the data root), if any."""
        for e in self.entries.values():
            for f in e.files:
                if f.path == rel_path:
                    return f
        return None


def human_size(n: int | float | None) -> str:
    """``1536`` -> ``'1.5 KiB'``; ``None`` -> ``'unknown size'``."""
    if n is None:
        return "unknown size"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover
