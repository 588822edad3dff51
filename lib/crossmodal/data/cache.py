"""Preprocessed splits cached as ``.npy`` files with their own sha256 checksums.

A cache is a folder ``<root>/<group>/cache/<Task>-<tag>/`` holding one ``.npy`` per array and
a ``checksums.json`` with the sha256, shape and dtype of each, plus ``meta``: a description of
the inputs it was built from (source file, its size and modification time, resolution, the
preprocessing version). A cache whose ``meta`` differs from what the loader expects is stale
and rebuilt; ``crossmodal data verify`` re-hashes every cache file.

Loading checks every file's size, and re-hashes a file whose modification time differs from
the one recorded when the cache was built (or last verified): a cache overwritten in place,
even with the same size, is detected, reported with a warning and rebuilt from its source.
The loaders build caches only from sources that :func:`crossmodal.data.checksums.check_file`
has just verified, and ``meta`` holds the source's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

CHECKSUMS = "checksums.json"


def cache_dir(root: Path, group: str, task: str, tag: str) -> Path:
    """``<root>/<group>/cache/<task>-<tag>``."""
    return Path(root) / group / "cache" / f"{task}-{tag}"


def cache_dirs(root: Path, group: str, task: str) -> list[Path]:
    """Every cache folder of ``task`` below ``root`` (any tag)."""
    base = Path(root) / group / "cache"
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob(f"{task}-*") if p.is_dir() and (p / CHECKSUMS).exists())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def source_fingerprint(path: Path) -> dict:
    """Name, size and modification time of a source file (cheap staleness check)."""
    st = Path(path).stat()
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def save_arrays(directory: Path, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``arrays`` as ``<name>.npy`` plus ``checksums.json``; replaces the folder atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {}
    for name, arr in arrays.items():
        path = tmp / f"{name}.npy"
        np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
        files[path.name] = {"sha256": _sha256(path), "size": path.stat().st_size,
                            "mtime_ns": path.stat().st_mtime_ns,
                            "shape": list(arr.shape), "dtype": str(arr.dtype)}
    (tmp / CHECKSUMS).write_text(json.dumps({"meta": meta, "files": files}, indent=1), "utf-8")
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def load_arrays(directory: Path, meta: dict, *, mmap: bool = False) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` if the cache is absent, stale, incomplete or damaged.

    Sizes are always checked; a file whose modification time changed since its sha256 was
    recorded is re-hashed, and a mismatch (a corrupt cache) warns and returns ``None``, so
    the caller rebuilds it from the verified source.
    """
    directory = Path(directory)
    index = directory / CHECKSUMS
    if not index.exists():
        return None
    try:
        info = json.loads(index.read_text("utf-8"))
    except json.JSONDecodeError:
        return None
    if info.get("meta") != json.loads(json.dumps(meta)):
        return None
    rehashed = False
    for fname, rec in info["files"].items():
        path = directory / fname
        if not path.exists():
            return None
        st = path.stat()
        if st.st_size != rec["size"]:
            warnings.warn(f"cache file {path} has {st.st_size:,} bytes, {rec['size']:,} were "
                          "recorded; rebuilding the cache from its source", stacklevel=2)
            return None
        if rec.get("mtime_ns") != st.st_mtime_ns:
            if _sha256(path) != rec["sha256"]:
                warnings.warn(f"cache file {path} differs from the sha256 recorded when it "
                              "was built (it was modified or damaged); rebuilding the cache "
                              "from its source", stacklevel=2)
                return None
            rec["mtime_ns"] = st.st_mtime_ns
            rehashed = True
    if rehashed:  # remember the verified stamps, so the next load need not hash again
        tmp = index.with_name(f"{index.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(info, indent=1), "utf-8")
            os.replace(tmp, index)
        except OSError:
            tmp.unlink(missing_ok=True)
    return {fname[:-4]: np.load(directory / fname, mmap_mode="r" if mmap else None,
                                allow_pickle=False)
            for fname in info["files"]}


def verify_cache(directory: Path) -> list[str]:
    """Problems found when re-hashing a cache folder (empty list: all good)."""
    directory = Path(directory)
    try:
        info = json.loads((directory / CHECKSUMS).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return [f"cannot read {CHECKSUMS}: {err}"]
    problems = []
    for fname, rec in info.get("files", {}).items():
        path = directory / fname
        if not path.exists():
            problems.append(f"{fname} is missing")
        elif _sha256(path) != rec["sha256"]:
            problems.append(f"{fname} sha256 differs from the one recorded when it was built "
                            "(delete the cache folder; the loader rebuilds it)")
    return problems


def build_arrays(directory: Path, specs: dict[str, tuple[tuple[int, ...], str]], fill,
                 meta: dict) -> dict[str, np.ndarray]:
    """Build a cache too large for memory: ``fill`` writes into ``.npy`` memory maps.

    ``specs`` maps array names to (shape, dtype); ``fill(arrays)`` receives writable memory
    maps and fills them. Checksums are computed afterwards and the folder is renamed into
    place atomically. Returns the finished arrays as read-only memory maps.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        maps = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype,
                                                shape=shape)
                for name, (shape, dtype) in specs.items()}
        fill(maps)
        for m in maps.values():
            m.flush()
        del maps
        files = {}
        for name, (shape, dtype) in specs.items():
            path = tmp / f"{name}.npy"
            files[path.name] = {"sha256": _sha256(path), "size": path.stat().st_size,
                                "mtime_ns": path.stat().st_mtime_ns,
                                "shape": list(shape), "dtype": str(np.dtype(dtype))}
        (tmp / CHECKSUMS).write_text(json.dumps({"meta": meta, "files": files}, indent=1),
                                     "utf-8")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = load_arrays(directory, meta, mmap=True)
    assert out is not None
    return out
