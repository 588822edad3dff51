"""Downloads: stream to ``.part``, resume with HTTP Range, verify, then rename into place.

Only the standard library is used for HTTP (``urllib``), so nothing beyond the kit's own
dependencies is needed. The rules that keep a loader from ever reading a half file:

* bytes go to ``<file>.part`` and only an atomic :func:`os.replace` gives them the real name,
  after the size and checksum are verified;
* a ``.part`` left by an interrupted transfer is resumed with ``Range: bytes=<n>-``; a server
  that ignores the header (status 200) makes the download start again from zero;
* transient failures (timeouts, resets, HTTP 5xx/429) are retried with exponential backoff;
  permanent ones (404, 403, ...) move straight on to the next mirror;
* a checksum mismatch deletes the ``.part`` and tries the next mirror; when every URL fails the
  error names the file, each URL and what went wrong with it.

Where the publisher gives no checksum, the sha256 of the first download is recorded in
``<root>/.checksums.json`` and later verifications compare against it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from crossmodal.data.manifest import Entry, FileSpec, Manifest, human_size
from crossmodal.errors import CrossmodalError

__all__ = [
    "ChecksumError", "DownloadError", "Entry", "FileSpec", "FileStatus", "InsufficientSpaceError",
    "Manifest", "PlanItem", "VerifyReport", "download_file", "fetch", "hash_file", "plan",
    "recorded_checksums", "verify",
]

USER_AGENT = "crossmodal-data/0.1 (+https://github.com/; python urllib)"
#: HTTP statuses worth retrying; everything else is permanent for that URL.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 20
#: Free space kept in reserve beyond the expected size.
SPACE_MARGIN = 64 << 20
CHECKSUMS_FILE = ".checksums.json"


class DownloadError(CrossmodalError):
    """A file could not be fetched from any of its URLs; the message says why for each."""


class ChecksumError(DownloadError):
    """A file's checksum (or size) differs from the expected one."""


class InsufficientSpaceError(DownloadError):
    """Not enough free disk space for a download of known size."""


class _PermanentError(Exception):
    """This URL will not work however often it is tried (404, 403, wrong size, ...)."""

    def __init__(self, message: str, *, discard_part: bool = False) -> None:
        super().__init__(message)
        #: the partial bytes cannot belong to the expected file: delete them
        self.discard_part = discard_part


class _TransientError(Exception):
    """Worth retrying: the connection dropped, timed out, or the server was busy."""


# --------------------------------------------------------------------------- hashing


def hash_file(path: Path, algorithms: Iterable[str] = ("sha256",), *,
              progress: bool = False) -> dict[str, str]:
    """Hex digests of a file in one pass, e.g. ``{"sha256": "...", "md5": "..."}``."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    path = Path(path)
    with _progress_bar(path.stat().st_size, 0, f"checking {path.name}", progress) as bar, \
            open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {a: h.hexdigest() for a, h in hashers.items()}


def _compare(path: Path, *, sha256: str | None, md5: str | None, size: int | None,
             progress: bool) -> tuple[str | None, dict[str, str]]:
    """Check size then checksums; returns (problem or None, digests computed)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return (f"size is {actual_size:,} bytes, expected {size:,} bytes", {})
    algos = ["sha256"] + (["md5"] if md5 else [])
    digests = hash_file(path, algos, progress=progress)
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected and digests[algo].lower() != expected.lower():
            return (f"{algo} is {digests[algo]}, expected {expected}", digests)
    return None, digests


# --------------------------------------------------------------------------- progress


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- disk space


def _check_space(dest: Path, needed: int | None) -> None:
    if not needed or needed <= 0:
        return
    probe = dest.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + SPACE_MARGIN:
        raise InsufficientSpaceError(
            f"not enough free disk space for {dest.name}: it needs {human_size(needed)} "
            f"(+{human_size(SPACE_MARGIN)} reserve) but {probe} has {human_size(free)} free. "
            "Free some space, or choose another data root with --dest DIR or the "
            "CROSSMODAL_DATA environment variable."
        )


# --------------------------------------------------------------------------- one URL


def _content_range_start(header: str | None) -> int | None:
    # "bytes 100-199/200" -> 100
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None


def _stream_once(url: str, part: Path, *, size: int | None, timeout: float, progress: bool,
                 desc: str) -> None:
    """One attempt: append to (or restart) ``part`` from ``url``; raises on failure."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()  # cannot be a prefix of the right file
        offset = 0
    if size is not None and offset == size:
        return  # complete already; the checksum decides
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and offset:
            return  # nothing left to send: the .part is (claimed) complete; verification decides
        if err.code in TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {err.code} {err.reason}") from err
        raise _PermanentError(f"HTTP {err.code} {err.reason}") from err
    except URLError as err:
        raise _TransientError(f"cannot connect: {err.reason}") from err
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from err

    with resp:
        status = getattr(resp, "status", 200)
        mode = "wb"
        if offset and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start == offset:
                mode = "ab"
            else:  # a range we did not ask for: start again cleanly
                part.unlink(missing_ok=True)
                raise _TransientError(
                    f"server answered a resume request with range {resp.headers.get('Content-Range')!r}")
        else:
            offset = 0  # server ignored Range (or there was none): rewrite from zero
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = offset + remaining if remaining is not None else size
        if size is not None and total is not None and total != size:
            raise _PermanentError(
                f"server reports {total:,} bytes but the manifest expects {size:,} bytes",
                discard_part=True)
        written = 0
        try:
            with open(part, mode) as fh, _progress_bar(total, offset, desc, progress) as bar:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
                        raise _TransientError(
                            f"transfer interrupted after {offset + written:,} bytes "
                            f"({type(err).__name__})") from err
                    if not chunk:
                        break
                    fh.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise InsufficientSpaceError(
                    f"the disk filled up while writing {part} ({human_size(offset + written)} "
                    "written). Free some space and run the same command again: the download "
                    "resumes where it stopped.") from err
            raise
        if remaining is not None and written < remaining:
            raise _TransientError(
                f"connection closed after {offset + written:,} of {total:,} bytes")


def _fetch_url(url: str, part: Path, *, size: int | None, retries: int, backoff: float,
               timeout: float, progress: bool, desc: str,
               sleep: Callable[[float], None]) -> None:
    """Fetch ``url`` into ``part``, retrying transient failures with exponential backoff."""
    last = ""
    for attempt in range(retries + 1):
        try:
            _stream_once(url, part, size=size, timeout=timeout, progress=progress, desc=desc)
            return
        except _TransientError as err:
            last = str(err)
            if attempt < retries:
                sleep(backoff * (2 ** attempt))
    raise _TransientError(f"{last} (gave up after {retries + 1} attempts)")


# --------------------------------------------------------------------------- one file


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _download(urls: list[str], dest: Path, *, sha256: str | None, md5: str | None,
              size: int | None, approx_size: int | None, retries: int, backoff: float,
              progress: bool, timeout: float,
              sleep: Callable[[float], None]) -> dict[str, str]:
    """Download and verify; returns the digests of the file now at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    expected = size if size is not None else approx_size
    already = part.stat().st_size if part.exists() else 0
    _check_space(dest, None if expected is None else expected - already)

    failures: list[str] = []
    for url in urls:
        try:
            _fetch_url(url, part, size=size, retries=retries, backoff=backoff, timeout=timeout,
                       progress=progress, desc=dest.name, sleep=sleep)
        except (_PermanentError, _TransientError) as err:
            failures.append(f"  {url}\n    -> {err}")
            if isinstance(err, _PermanentError) and err.discard_part:
                part.unlink(missing_ok=True)  # the partial bytes came from a different file
            continue
        problem, digests = _compare(part, sha256=sha256, md5=md5, size=size, progress=progress)
        if problem is None:
            os.replace(part, dest)  # atomic: a loader sees the whole file or nothing
            return digests
        part.unlink(missing_ok=True)  # never keep bytes we know are wrong
        failures.append(f"  {url}\n    -> checksum mismatch: {problem}")

    left = ""
    if part.exists():
        left = (f"\nThe partial file {part} ({human_size(part.stat().st_size)}) was kept; "
                "running the same command again resumes it.")
    size_note = f" (expected {human_size(expected)})" if expected else ""
    mismatch = any("checksum mismatch" in f for f in failures)
    cls = ChecksumError if mismatch and all("checksum mismatch" in f for f in failures) \
        else DownloadError
    raise cls(
        f"could not download {dest.name}{size_note} to {dest}.\nTried:\n" + "\n".join(failures)
        + left + ("\nA checksum mismatch means the server sent a different file than the "
                  "manifest describes; nothing was left in place." if mismatch else "")
    )


def download_file(urls: list[str] | str, dest: Path, *, sha256: str | None = None,
                  md5: str | None = None, size: int | None = None, retries: int = 3,
                  backoff: float = 1.0, progress: bool = True, timeout: float = 60,
                  approx_size: int | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download one file safely.

    Parameters
    ----------
    urls : list of str or str
        Primary URL first, then mirrors; each is tried in turn.
    dest : Path
        Final location. Data streams to ``dest.part`` and is renamed only once verified.
    sha256, md5 : str, optional
        Expected hex digests; every one given must match.
    size : int, optional
        Exact expected size in bytes (also used for the free-space check).
    retries : int
        Extra attempts per URL for transient failures.
    backoff : float
        Seconds before the first retry; doubled each time.
    progress : bool
        Show a tqdm progress bar.
    timeout : float
        Socket timeout in seconds.
    approx_size : int, optional
        Estimate used only for the free-space check.
    sleep : callable
        Used between retries (tests pass a no-op).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    ChecksumError
        ``dest`` exists with the wrong checksum, or every URL delivered a wrong file.
    DownloadError
        No URL worked; the message lists every URL with its error.
    InsufficientSpaceError
        The disk is too small for the known size.
    """
    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError(f"no URL given for {dest.name}")
    if dest.exists():
        if sha256 or md5 or size is not None:
            problem, _ = _compare(dest, sha256=sha256, md5=md5, size=size, progress=progress)
            if problem is not None:
                raise ChecksumError(
                    f"{dest} already exists but its {problem}. Delete it and run the download "
                    "again.")
        return dest
    _download(urls, dest, sha256=sha256, md5=md5, size=size, approx_size=approx_size,
              retries=retries, backoff=backoff, progress=progress, timeout=timeout, sleep=sleep)
    return dest


# --------------------------------------------------------------------------- recorded checksums


def _checksums_path(root: Path) -> Path:
    return Path(root) / CHECKSUMS_FILE


def recorded_checksums(root: Path) -> dict[str, dict]:
    """The checksums recorded on first download, keyed by path relative to the root."""
    path = _checksums_path(root)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as err:
        raise CrossmodalError(
            f"{path} is not valid JSON ({err}); fix or delete it (it only caches checksums "
            "recorded on first download)") from err


def _record(root: Path, rel: str, dest: Path, digests: dict[str, str], url: str | None,
            *, published: bool) -> None:
    data = recorded_checksums(root)
    st = dest.stat()
    data[rel] = {
        "sha256": digests.get("sha256"), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "source": "published" if published else "recorded on first download",
        "url": url, "recorded_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    path = _checksums_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
    os.replace(tmp, path)


def _expected(spec: FileSpec, recorded: dict) -> tuple[str | None, str | None]:
    """sha256 and md5 to check: published ones, else the sha256 recorded on first download."""
    sha = spec.sha256 or (recorded.get("sha256") if recorded else None)
    return sha, spec.md5


# --------------------------------------------------------------------------- extraction


def _safe_members_zip(zf: zipfile.ZipFile, target: Path) -> None:
    root = target.resolve()
    for name in zf.namelist():
        if not (root / name).resolve().is_relative_to(root):
            raise DownloadError(f"refusing to extract {name!r}: it would land outside {target}")


def extract_archive(archive: Path, kind: str, *, force: bool = False) -> Path:
    """Unpack ``archive`` next to itself once; a marker file records that it was done."""
    archive = Path(archive)
    target = archive.parent
    marker = target / f".{archive.name}.extracted"
    if marker.exists() and not force:
        return target
    tmp_marker = marker.with_name(marker.name + ".tmp")
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            _safe_members_zip(zf, target)
            zf.extractall(target)
    elif kind == "tar":
        with tarfile.open(archive) as tf:
            tf.extractall(target, filter="data")  # "data" refuses absolute paths and links out
    else:
        raise ValueError(f"unknown archive kind {kind!r} for {archive}")
    tmp_marker.write_text(archive.name, "utf-8")
    os.replace(tmp_marker, marker)
    return target


# --------------------------------------------------------------------------- entries


@dataclass
class PlanItem:
    """What a download of one file would do."""

    spec: FileSpec
    dest: Path
    state: str  # "present", "partial", "missing"
    to_fetch: int | None  # bytes still to fetch (None: unknown)


def plan(entries: Iterable[Entry], root: Path) -> list[PlanItem]:
    """The files of ``entries`` and whether each is already here."""
    items = []
    for entry in entries:
        for spec in entry.files:
            dest = Path(root) / spec.path
            part = _part_path(dest)
            exp = spec.expected_size
            if dest.exists():
                items.append(PlanItem(spec, dest, "present", 0))
            elif part.exists():
                have = part.stat().st_size
                items.append(PlanItem(spec, dest, "partial",
                                      None if exp is None else max(exp - have, 0)))
            else:
                items.append(PlanItem(spec, dest, "missing", exp))
    return items


def fetch(name: str | Entry, root: Path, *, manifest: Manifest | None = None,
          retries: int = 3, backoff: float = 1.0, progress: bool = True, timeout: float = 60,
          extract: bool = True, sleep: Callable[[float], None] = time.sleep) -> list[Path]:
    """Download every file of a manifest entry into ``root`` (skipping verified ones).

    Files already present are verified (cheaply, when their size and modification time match
    the last successful check). Archives marked ``extract`` are unpacked once.

    Returns
    -------
    list of Path
        The files of the entry, all present and verified.
    """
    manifest = manifest or Manifest.load()
    entry = name if isinstance(name, Entry) else manifest.get(name)
    root = Path(root)
    out = []
    for spec in entry.files:
        dest = root / spec.path
        rec = recorded_checksums(root).get(spec.path, {})
        sha, md5 = _expected(spec, rec)
        try:
            if dest.exists():
                st = dest.stat()
                fresh = rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
                if not fresh:
                    problem, digests = _compare(dest, sha256=sha, md5=md5, size=spec.size,
                                                progress=progress)
                    if problem is not None:
                        raise ChecksumError(
                            f"{dest} already exists but its {problem}. Delete it and run "
                            f"`crossmodal data download {entry.name}` again.")
                    _record(root, spec.path, dest, digests, rec.get("url"),
                            published=spec.has_published_checksum)
            else:
                digests = _download(list(spec.urls), dest, sha256=sha, md5=md5, size=spec.size,
                                     approx_size=spec.approx_size, retries=retries,
                                     backoff=backoff, progress=progress, timeout=timeout,
                                     sleep=sleep)
                _record(root, spec.path, dest, digests, spec.urls[0],
                        published=spec.has_published_checksum or bool(sha))
        except DownloadError as err:
            hint = f"\nChecksums: {spec.checksum_note}." if spec.checksum_note else ""
            notes = f"\nNote: {entry.notes}" if entry.notes else ""
            raise type(err)(f"{entry.name}: {err}{hint}{notes}") from err
        if extract and spec.extract:
            extract_archive(dest, spec.extract)
        out.append(dest)
    return out


# --------------------------------------------------------------------------- verification


@dataclass
class FileStatus:
    """Verification result for one file."""

    path: str
    status: str  # ok | recorded | missing | partial | mismatch
    detail: str = ""


@dataclass
class VerifyReport:
    """Result of :func:`verify` for one entry."""

    name: str
    files: list[FileStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status in ("ok", "recorded") for f in self.files)

    @property
    def complete(self) -> bool:
        return all(f.status not in ("missing", "partial") for f in self.files)

    @property
    def corrupt(self) -> bool:
        """Some file or cache differs from its checksum (missing files do not count)."""
        return any(f.status == "mismatch" for f in self.files)

    def __str__(self) -> str:
        state = "OK" if self.ok else "CORRUPT" if self.corrupt else "INCOMPLETE"
        lines = [f"{self.name}: {state}"]
        for f in self.files:
            lines.append(f"  [{f.status:8s}] {f.path}" + (f"  {f.detail}" if f.detail else ""))
        return "\n".join(lines)


def verify(name: str | Entry, root: Path, *, manifest: Manifest | None = None,
           progress: bool = False, caches: bool = True) -> VerifyReport:
    """Re-check every file of an entry (size and checksums) and any caches built from it.

    A present file with no published checksum and none recorded yet gets its sha256 recorded
    (status ``recorded``); later runs compare against it.
    """
    manifest = manifest or Manifest.load()
    entry = name if isinstance(name, Entry) else manifest.get(name)
    root = Path(root)
    report = VerifyReport(entry.name)
    for spec in entry.files:
        dest = root / spec.path
        part = _part_path(dest)
        rec = recorded_checksums(root).get(spec.path, {})
        sha, md5 = _expected(spec, rec)
        if not dest.exists():
            if part.exists():
                report.files.append(FileStatus(
                    spec.path, "partial",
                    f"{human_size(part.stat().st_size)} of {human_size(spec.expected_size)} in "
                    f"{part.name}; run `crossmodal data download {entry.name}` to resume"))
            else:
                report.files.append(FileStatus(
                    spec.path, "missing", f"run `crossmodal data download {entry.name}`"))
            continue
        problem, digests = _compare(dest, sha256=sha, md5=md5, size=spec.size, progress=progress)
        if problem is not None:
            report.files.append(FileStatus(
                spec.path, "mismatch",
                f"{problem}; delete it and run `crossmodal data download {entry.name}`"))
            continue
        if sha or md5:
            src = "published checksum" if spec.has_published_checksum else "checksum recorded on first download"
            report.files.append(FileStatus(spec.path, "ok", f"matches the {src}"))
        else:
            report.files.append(FileStatus(spec.path, "recorded",
                                           f"no published checksum; recorded sha256 {digests['sha256'][:16]}..."))
        _record(root, spec.path, dest, digests, rec.get("url"),
                published=spec.has_published_checksum)
    if caches:
        from crossmodal.data import cache

        for cdir in cache.cache_dirs(root, entry.group, entry.name):
            problems = cache.verify_cache(cdir)
            rel = str(cdir.relative_to(root))
            report.files.append(FileStatus(rel + "/", "mismatch" if problems else "ok",
                                           "; ".join(problems) if problems else "cache checksums match"))
    return report
