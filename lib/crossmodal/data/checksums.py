"""The checksum record of every data file the kit downloads or writes, and the check before use.

``<root>/.checksums.json`` maps each file's path (relative to the data root) to its sha256,
its size and a *stamp* (size and modification time in ns) taken when the digest was last
computed. Downloads record the digest of the verified transfer; ``crossmodal data generate``
records the digest of the file it wrote. Before a loader reads a file,
:func:`check_file` applies, cheapest first:

1. **size, always**: a file whose size differs from the manifest's exact size, from the size
   recorded for it, or that is below the manifest's known minimum is rejected without hashing;
2. **hash when the stamp changed**: if the file's (size, mtime) equals the stamp recorded when
   its digest was last checked, the digest is trusted; otherwise the file is re-hashed and
   compared with the published checksum (md5/sha256 of the manifest) or, when none is
   published, with the recorded sha256. A match refreshes the stamp;
3. a generated file with no record is rejected (the kit records every file it writes, so it
   was not written by this kit or its record was lost); a hand-placed downloadable file with
   neither a published nor a recorded checksum is hashed and recorded (trust on first use,
   as ``crossmodal data verify`` does).

In a fixture root (``crossmodal data fixtures``, marked by a ``FIXTURES`` file) nothing is
compared or recorded: its files are random stand-ins, never real data.

Every rejection is a :class:`CorruptDataError` naming the file, what is wrong with it and the
command that repairs it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from crossmodal.data.manifest import FileSpec, human_size
from crossmodal.data.root import is_fixture_root
from crossmodal.errors import CrossmodalError

__all__ = ["CHECKSUMS_FILE", "CorruptDataError", "check_file", "hash_file", "record",
           "recorded_checksums"]

CHECKSUMS_FILE = ".checksums.json"
CHUNK = 1 << 20


class CorruptDataError(CrossmodalError, ValueError):
    """A data file differs from its checksum or size; the message names the repair command."""


def hash_file(path: Path, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file in one pass, e.g. ``{"sha256": "...", "md5": "..."}``."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _path(root: Path) -> Path:
    return Path(root) / CHECKSUMS_FILE


def recorded_checksums(root: Path) -> dict[str, dict]:
    """The recorded checksums below ``root``, keyed by path relative to the root."""
    path = _path(root)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise CrossmodalError(
            f"{path} is not valid JSON ({err}); fix or delete it (it only caches checksums; "
            "`crossmodal data verify` rebuilds it for downloaded files, `crossmodal data "
            "generate` for generated ones)") from err


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise read-modify-write of the record between processes (POSIX advisory lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, writes stay atomic
        yield
        return
    lock = _path(root).with_name(CHECKSUMS_FILE + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record(root: Path, rel: str, digests: dict[str, str], *, source: str,
           required: bool = False, **info: object) -> dict:
    """Record the digest and current stamp of ``root / rel``; returns the new entry.

    ``source`` says where the digest's authority comes from: ``"published"`` (checked against
    the manifest), ``"recorded on first download"``, ``"recorded on first use"`` or
    ``"generated"``. Extra keyword arguments (the URL, the command that regenerates the file)
    are stored with it. A read-only data root is tolerated: nothing is recorded then, and the
    next use hashes the file again; with ``required`` (a generated file, which is unusable
    without its record) the error is raised instead.
    """
    root = Path(root)
    st = (root / rel).stat()
    entry = {"sha256": digests.get("sha256"), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "source": source,
             "recorded_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **info}
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root):
            data = recorded_checksums(root)
            data[rel] = entry
            path = _path(root)
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
            os.replace(tmp, path)
    except OSError:
        if required:
            raise
        # a read-only (shared) data folder: the check still happened, it is just not
        # remembered, so the next use hashes the file again
        pass
    return entry


def _fresh(rec: dict, st: os.stat_result) -> bool:
    return bool(rec.get("sha256")) and rec.get("size") == st.st_size \
        and rec.get("mtime_ns") == st.st_mtime_ns


def check_file(root: Path, rel: str, *, spec: FileSpec | None = None, generated: bool = False,
               repair: str, force_hash: bool = False) -> dict:
    """Verify ``root / rel`` before use (see the module docstring); returns its record.

    Parameters
    ----------
    root : the data root.
    rel : the file's path relative to ``root``.
    spec : the manifest's description of the file (size, checksums), if it is downloadable.
    generated : the kit wrote this file (``gen_*``): it must have a recorded checksum.
    repair : what the user should do if the file is bad, e.g. "Delete it and run
        `crossmodal data download Advection1D`"; appended to every error.
    force_hash : hash even when the stamp is unchanged (``crossmodal data verify``).

    Raises
    ------
    CorruptDataError
        The file's size or checksum is wrong, or a generated file has no record.
    """
    root = Path(root)
    path = root / rel
    st = path.stat()
    if is_fixture_root(root):
        # random data in the publishers' formats, by design unlike the manifest's files:
        # digests are computed (the caches key on them) but never recorded as real data's
        return {"sha256": hash_file(path)["sha256"], "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "source": "fixture"}
    rec = recorded_checksums(root).get(rel, {})

    def bad(problem: str) -> CorruptDataError:
        return CorruptDataError(f"{path} is corrupt or incomplete: {problem}. {repair}")

    size = st.st_size
    if spec is not None and spec.size is not None and size != spec.size:
        raise bad(f"its size is {size:,} bytes but the manifest says {spec.size:,} bytes")
    published = spec is not None and spec.has_published_checksum
    if not published and rec.get("size") is not None and size != rec["size"]:
        raise bad(f"its size is {size:,} bytes but {rec['size']:,} bytes were recorded when it "
                  f"was {'written' if generated else 'downloaded'}")
    minimum = spec.minimum_size if spec is not None else None
    if not published and minimum is not None and size < minimum:
        raise bad(f"it has only {human_size(size)}, less than the {human_size(minimum)} the "
                  "manifest's size estimate allows")
    expected = (spec.md5 or spec.sha256) if published else None  # type: ignore[union-attr]
    if not force_hash and _fresh(rec, st) and rec.get("expected") == expected:
        return rec  # verified before, untouched since
    if published:
        assert spec is not None
        digests = hash_file(path, ["sha256"] + (["md5"] if spec.md5 else []))
        for algo, want in (("md5", spec.md5), ("sha256", spec.sha256)):
            if want and digests[algo].lower() != want.lower():
                raise bad(f"its {algo} is {digests[algo]}, the published one is {want}")
        return record(root, rel, digests, source="published", expected=expected,
                      **{k: v for k, v in rec.items() if k in ("url", "command")})
    if rec.get("sha256"):
        digests = hash_file(path)
        if digests["sha256"] != rec["sha256"]:
            raise bad(f"its sha256 is {digests['sha256']}, but {rec['sha256']} was recorded "
                      f"when it was {'written' if generated else 'downloaded'} (it has been "
                      "modified or damaged since)")
        keep = {k: v for k, v in rec.items()
                if k not in ("sha256", "size", "mtime_ns", "source", "recorded_at")}
        return record(root, rel, digests, source=rec.get("source", "recorded"), **keep)
    if generated:
        raise bad("no checksum was recorded for it, so the kit did not write it (or its entry "
                  f"in {CHECKSUMS_FILE} was lost) and cannot tell whether it is intact")
    return record(root, rel, hash_file(path), source="recorded on first use", expected=None)
