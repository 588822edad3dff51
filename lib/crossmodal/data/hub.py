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
``<root>/.checksums.json`` (see :mod:`crossmodal.data.checksums`) and later verifications
compare against it. Such a digest becomes the reference, so it is recorded only from a
transfer that is provably whole: never from an HTML page sent instead of a binary file, from
fewer bytes than the manifest's size allows, or from a body that has no Content-Length (or
chunked framing) when the manifest gives no exact size, where a dropped connection cannot be
told from the end of the file.

Every download has an overall deadline and a minimum throughput (:class:`Limits`), so a
server that stays silent or trickles bytes ends the download with a clear error.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
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

from crossmodal.data import cache, checksums
from crossmodal.data.checksums import CHECKSUMS_FILE, CorruptDataError, recorded_checksums
from crossmodal.data.manifest import Entry, FileSpec, Manifest, human_size
from crossmodal.errors import CrossmodalError

__all__ = [
    "CHECKSUMS_FILE", "ChecksumError", "CorruptDataError", "DownloadError", "Entry", "FileSpec", "FileStatus", "InsufficientSpaceError",
    "Limits", "Manifest", "PlanItem", "VerifyReport", "download_file", "fetch", "hash_file", "plan",
    "recorded_checksums", "verify",
]

USER_AGENT = "crossmodal-data/0.1 (+https://github.com/; python urllib)"
#: HTTP statuses worth retrying; everything else is permanent for that URL.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
CHUNK = 1 << 20
#: Free space kept in reserve beyond the expected size.
SPACE_MARGIN = 64 << 20


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


@dataclass(frozen=True)
class Limits:
    """Time limits of one file's download (every URL and retry together).

    Attributes
    ----------
    deadline : :func:`time.monotonic` time after which the download stops (``None``: none).
    deadline_s : the same as a duration, for messages.
    min_bytes_per_s, window_s : the minimum-throughput rule: a transfer that brings fewer
        than ``min_bytes_per_s * window_s`` bytes in any window of ``window_s`` seconds is
        abandoned (and retried, resuming), so a server that trickles bytes cannot hold a
        download forever although each single read returns before the socket timeout.
    """

    deadline: float | None = None
    deadline_s: float | None = None
    min_bytes_per_s: float = 0.0
    window_s: float = 60.0

    @classmethod
    def start(cls, deadline_s: float | None, min_bytes_per_s: float | None,
              window_s: float) -> Limits:
        if deadline_s is not None and deadline_s <= 0:
            deadline_s = None  # 0 or negative: no deadline
        if window_s <= 0:
            raise ValueError(f"rate_window_s must be > 0, got {window_s}")
        return cls(None if deadline_s is None else time.monotonic() + deadline_s, deadline_s,
                   float(min_bytes_per_s or 0.0), float(window_s))

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise _DeadlineError(f"the deadline of {self.deadline_s:g} s passed")

    def timeout(self, timeout: float) -> float:
        """The socket timeout for the next blocking call: never past the deadline."""
        left = self.remaining()
        return timeout if left is None else max(0.05, min(timeout, left))


class _DeadlineError(Exception):
    """The overall deadline of a download passed: stop trying every URL."""


def _set_read_timeout(resp, seconds: float) -> None:
    # urllib exposes no public handle on the response's socket; without one, the timeout
    # given to urlopen (already capped by the deadline) bounds each read.
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


#: Suffixes of text files; every other download is binary and must not be an HTML page.
TEXT_SUFFIXES = {".txt", ".html", ".htm", ".json", ".csv", ".md", ".xml"}
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")


def looks_like_html(head: bytes) -> bool:
    """Whether the first bytes of a body are an HTML/XML page (login, quota or error pages)."""
    return head.lstrip()[:16].lower().startswith(_HTML_STARTS)


def _stream_once(url: str, part: Path, *, size: int | None, timeout: float, progress: bool,
                 desc: str, limits: Limits, binary: bool) -> tuple[bool, bool]:
    """One attempt: append to (or restart) ``part`` from ``url``; raises on failure.

    Returns ``(appended, framed)``: whether bytes were appended to an existing ``.part``
    (a resume), and whether the transfer's end was provably the end of the body (a
    Content-Length or chunked framing that was received in full). A body that simply ends
    when the server closes the connection is not framed: a dropped connection looks the same.
    """
    limits.check()
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()  # cannot be a prefix of the right file
        offset = 0
    if size is not None and offset == size:
        return True, True  # complete already; the checksum decides
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=limits.timeout(timeout))
    except HTTPError as err:
        if err.code == 416 and offset:
            return True, True  # nothing left to send: the .part is (claimed) complete
        if err.code in TRANSIENT_STATUS:
            raise _TransientError(f"HTTP {err.code} {err.reason}") from err
        raise _PermanentError(f"HTTP {err.code} {err.reason}") from err
    except URLError as err:
        if isinstance(err.reason, TimeoutError):
            limits.check()
        raise _TransientError(f"cannot connect: {err.reason}") from err
    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
        limits.check()
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
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if binary and ctype.startswith(("text/html", "application/xhtml")):
            raise _PermanentError(
                f"the server answered with an HTML page (Content-Type {ctype}), not the file: "
                "a login, quota or error page", discard_part=mode == "wb")
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        chunked = "chunked" in (resp.headers.get("Transfer-Encoding") or "").lower()
        total = offset + remaining if remaining is not None else size
        if size is not None and total is not None and total != size:
            raise _PermanentError(
                f"server reports {total:,} bytes but the manifest expects {size:,} bytes",
                discard_part=True)
        written = 0
        window_start, window_bytes = time.monotonic(), 0
        try:
            with open(part, mode) as fh, _progress_bar(total, offset, desc, progress) as bar:
                while True:
                    limits.check()
                    _set_read_timeout(resp, limits.timeout(timeout))
                    try:
                        # read1: return what has arrived (one recv), so bytes received
                        # before a stall are kept and the limits are checked between reads
                        chunk = resp.read1(CHUNK)
                    except (TimeoutError, ConnectionError, http.client.HTTPException) as err:
                        limits.check()
                        raise _TransientError(
                            f"transfer interrupted after {offset + written:,} bytes "
                            f"({type(err).__name__}: no data for {timeout:g} s or the "
                            "connection broke)") from err
                    if not chunk:
                        break
                    fh.write(chunk)
                    fh.flush()
                    written += len(chunk)
                    window_bytes += len(chunk)
                    bar.update(len(chunk))
                    now = time.monotonic()
                    if now - window_start >= limits.window_s:
                        rate = window_bytes / (now - window_start)
                        if rate < limits.min_bytes_per_s:
                            raise _TransientError(
                                f"too slow: {rate:,.0f} bytes/s over the last "
                                f"{now - window_start:.0f} s, below the minimum of "
                                f"{limits.min_bytes_per_s:,.0f} bytes/s (--min-rate) after "
                                f"{offset + written:,} bytes")
                        window_start, window_bytes = now, 0
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
        return mode == "ab", remaining is not None or chunked


def _fetch_url(url: str, part: Path, *, size: int | None, retries: int, backoff: float,
               timeout: float, progress: bool, desc: str, limits: Limits, binary: bool,
               sleep: Callable[[float], None]) -> tuple[bool, bool]:
    """Fetch ``url`` into ``part``, retrying transient failures with exponential backoff.

    Returns ``(appended, framed)`` as :func:`_stream_once`; ``appended`` is true if any
    attempt resumed onto bytes already in ``part``.
    """
    last = ""
    appended = False
    for attempt in range(retries + 1):
        try:
            resumed, framed = _stream_once(url, part, size=size, timeout=timeout,
                                           progress=progress, desc=desc, limits=limits,
                                           binary=binary)
            return appended or resumed, framed
        except _TransientError as err:
            last = str(err)
            appended = appended or (part.exists() and part.stat().st_size > 0)
            if attempt < retries:
                wait = backoff * (2 ** attempt)
                left = limits.remaining()
                if left is not None and left <= wait:
                    raise _DeadlineError(f"the deadline of {limits.deadline_s:g} s passed "
                                         f"(last error: {last})") from err
                sleep(wait)
    raise _TransientError(f"{last} (gave up after {retries + 1} attempts)")


# --------------------------------------------------------------------------- one file


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _minimum(size: int | None, min_size: int | None, approx_size: int | None) -> int | None:
    return FileSpec("", (), size=size, min_size=min_size, approx_size=approx_size).minimum_size


def _completeness_problem(part: Path, *, checked: bool, size: int | None,
                          minimum: int | None, framed: bool, binary: bool) -> str | None:
    """Why the bytes in ``part`` cannot be trusted as the whole file (``None``: they can).

    Without a checksum (``checked`` false) the digest about to be recorded becomes the
    reference for every later check, so the transfer must be provably complete.
    """
    have = part.stat().st_size
    if binary:
        with open(part, "rb") as fh:
            if looks_like_html(fh.read(512)):
                return (f"the server sent an HTML page ({have:,} bytes), not the file: a login, "
                        "quota or error page")
    if checked:
        return None  # the checksum decides
    if minimum is not None and have < minimum:
        return (f"only {human_size(have)} arrived, less than the {human_size(minimum)} the "
                "manifest's size allows: an error page or a fragment, not the file")
    if size is None and not framed:
        return ("the server sent no Content-Length and the manifest has neither a checksum nor "
                "an exact size, so a dropped connection cannot be told from the end of the "
                f"file ({have:,} bytes arrived); nothing was recorded")
    return None


def _download(urls: list[str], dest: Path, *, sha256: str | None, md5: str | None,
              size: int | None, approx_size: int | None, retries: int, backoff: float,
              progress: bool, timeout: float, sleep: Callable[[float], None],
              min_size: int | None = None, limits: Limits | None = None,
              binary: bool | None = None) -> dict[str, str]:
    """Download and verify; returns the digests of the file now at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    limits = limits or Limits()
    binary = dest.suffix.lower() not in TEXT_SUFFIXES if binary is None else binary
    expected = size if size is not None else approx_size
    minimum = _minimum(size, min_size, approx_size)
    already = part.stat().st_size if part.exists() else 0
    _check_space(dest, None if expected is None else expected - already)

    failures: list[str] = []
    restarted = False
    queue = list(urls)
    while queue:
        url = queue.pop(0)
        had = part.stat().st_size if part.exists() else 0
        try:
            appended, framed = _fetch_url(
                url, part, size=size, retries=retries, backoff=backoff, timeout=timeout,
                progress=progress, desc=dest.name, limits=limits, binary=binary, sleep=sleep)
        except _DeadlineError as err:
            failures.append(f"  {url}\n    -> {err}")
            break
        except (_PermanentError, _TransientError) as err:
            failures.append(f"  {url}\n    -> {err}")
            if isinstance(err, _PermanentError) and err.discard_part:
                part.unlink(missing_ok=True)  # the partial bytes came from a different file
            continue
        problem = _completeness_problem(part, checked=bool(sha256 or md5), size=size,
                                        minimum=minimum, framed=framed, binary=binary)
        digests: dict[str, str] = {}
        if problem is None:
            problem, digests = _compare(part, sha256=sha256, md5=md5, size=size,
                                        progress=progress)
        if problem is None:
            os.replace(part, dest)  # atomic: a loader sees the whole file or nothing
            return digests
        part.unlink(missing_ok=True)  # never keep bytes we know are wrong
        if appended and had and not restarted:
            # the bytes kept from an earlier transfer may be the culprit, not the server
            restarted = True
            failures.append(
                f"  {url}\n    -> {problem}, after resuming the local partial file {part.name} "
                f"({human_size(had)} from an earlier, interrupted download): that local file "
                "was bad; it was deleted and the download restarted from the beginning")
            queue.insert(0, url)
            continue
        failures.append(f"  {url}\n    -> checksum mismatch: {problem}")

    left = ""
    if part.exists():
        left = (f"\nThe partial file {part} ({human_size(part.stat().st_size)}) was kept; "
                "running the same command again resumes it.")
    size_note = f" (expected {human_size(expected)})" if expected else ""
    final = [f for f in failures if "restarted from the beginning" not in f]
    mismatch = any("checksum mismatch" in f for f in final)
    cls = ChecksumError if mismatch and all("checksum mismatch" in f for f in final) \
        else DownloadError
    deadline = any("deadline" in f or "too slow" in f for f in final)
    raise cls(
        f"could not download {dest.name}{size_note} to {dest}.\nTried:\n" + "\n".join(failures)
        + left
        + ("\nA checksum mismatch on a fresh transfer means the server sent a different file "
           "than the manifest describes; nothing was left in place." if mismatch else "")
        + ("\nThe download has an overall deadline (--deadline SECONDS, 0 for none) and a "
           "minimum rate (--min-rate BYTES_PER_S); raise them on a slow link." if deadline
           else "")
    )


def download_file(urls: list[str] | str, dest: Path, *, sha256: str | None = None,
                  md5: str | None = None, size: int | None = None, retries: int = 3,
                  backoff: float = 1.0, progress: bool = True, timeout: float = 30,
                  approx_size: int | None = None, min_size: int | None = None,
                  deadline_s: float | None = None, min_bytes_per_s: float | None = None,
                  rate_window_s: float | None = None, binary: bool | None = None,
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
        Socket timeout in seconds (per connect and per read).
    approx_size : int, optional
        Estimate used for the free-space check; without a checksum or exact size a file
        smaller than half of it is rejected.
    min_size : int, optional
        Smallest size a complete file can have (instead of half of ``approx_size``).
    deadline_s : float, optional
        Overall time limit of this file's download, every URL and retry included
        (default :data:`DEFAULT_DEADLINE_S`; 0 for none). The ``.part`` is kept to resume.
    min_bytes_per_s, rate_window_s : float, optional
        Minimum throughput: fewer than ``min_bytes_per_s * rate_window_s`` bytes in a window
        of ``rate_window_s`` seconds abandons the attempt (defaults
        :data:`DEFAULT_MIN_BYTES_PER_S`, :data:`DEFAULT_RATE_WINDOW_S`).
    binary : bool, optional
        The file is binary, so an HTML body is an error page (default: by its suffix).
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
        No URL worked, or the deadline passed; the message lists every URL with its error.
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
              min_size=min_size, retries=retries, backoff=backoff, progress=progress,
              timeout=timeout, sleep=sleep, binary=binary,
              limits=_limits(deadline_s, min_bytes_per_s, rate_window_s))
    return dest


#: Default overall deadline of one file's download (6 h: 13 GB needs 600 KB/s).
DEFAULT_DEADLINE_S = 6 * 3600.0
#: Default minimum throughput and the window it is measured over.
DEFAULT_MIN_BYTES_PER_S = 16 * 1024.0
DEFAULT_RATE_WINDOW_S = 120.0


def _limits(deadline_s: float | None, min_bytes_per_s: float | None,
            rate_window_s: float | None) -> Limits:
    return Limits.start(DEFAULT_DEADLINE_S if deadline_s is None else deadline_s,
                        DEFAULT_MIN_BYTES_PER_S if min_bytes_per_s is None else min_bytes_per_s,
                        DEFAULT_RATE_WINDOW_S if rate_window_s is None else rate_window_s)


# --------------------------------------------------------------------------- recorded checksums


def _record(root: Path, rel: str, dest: Path, digests: dict[str, str], url: str | None,
            *, published: bool, expected: str | None = None) -> None:
    checksums.record(root, rel, digests,
                     source="published" if published else "recorded on first download",
                     url=url, expected=expected)


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


def repair_hint(entry_name: str) -> str:
    """What to do about a bad downloaded file of ``entry_name``."""
    return f"Delete it and run `crossmodal data download {entry_name}` again."


def fetch(name: str | Entry, root: Path, *, manifest: Manifest | None = None,
          retries: int = 3, backoff: float = 1.0, progress: bool = True, timeout: float = 30,
          extract: bool = True, deadline_s: float | None = None,
          min_bytes_per_s: float | None = None, rate_window_s: float | None = None,
          sleep: Callable[[float], None] = time.sleep) -> list[Path]:
    """Download every file of a manifest entry into ``root`` (skipping verified ones).

    Files already present are verified with :func:`crossmodal.data.checksums.check_file`
    (size always; the checksum when the file changed since it was last checked). Archives
    marked ``extract`` are unpacked once. ``deadline_s``, ``min_bytes_per_s`` and
    ``rate_window_s`` apply to each file as in :func:`download_file`.

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
                try:
                    checksums.check_file(root, spec.path, spec=spec,
                                         repair=repair_hint(entry.name))
                except CorruptDataError as err:
                    raise ChecksumError(f"{dest} already exists but {err}") from err
            else:
                digests = _download(list(spec.urls), dest, sha256=sha, md5=md5, size=spec.size,
                                     approx_size=spec.approx_size, min_size=spec.min_size,
                                     retries=retries, backoff=backoff, progress=progress,
                                     timeout=timeout, sleep=sleep,
                                     limits=_limits(deadline_s, min_bytes_per_s, rate_window_s))
                _record(root, spec.path, dest, digests, spec.urls[0],
                        published=spec.has_published_checksum,
                        expected=spec.md5 or spec.sha256)
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


def generated_files(entry: Entry, root: Path) -> list[str]:
    """Paths (relative to ``root``) of the present generated stand-ins (``gen_*``) of ``entry``."""
    if not entry.generate:
        return []
    rels = [str(Path(spec.path).with_name("gen_" + Path(spec.path).name)) for spec in entry.files]
    return [rel for rel in rels if (Path(root) / rel).exists()]


def _regenerate_hint(entry: Entry, root: Path, rel: str) -> str:
    rec = recorded_checksums(root).get(rel, {})
    command = rec.get("command") or (f"crossmodal data generate --task {entry.generate} "
                                     f"--out {root}")
    return f"Regenerate it with `{command}`."


def verify(name: str | Entry, root: Path, *, manifest: Manifest | None = None,
           progress: bool = False, caches: bool = True) -> VerifyReport:
    """Re-check every file of an entry (size and checksums), its generated stand-ins
    (``gen_*`` files written by ``crossmodal data generate``) and any caches built from them.

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
        minimum = spec.minimum_size
        if problem is None and not (sha or md5) and minimum is not None \
                and dest.stat().st_size < minimum:
            problem = (f"it has only {human_size(dest.stat().st_size)}, less than the "
                       f"{human_size(minimum)} the manifest's size estimate allows")
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
                published=spec.has_published_checksum, expected=spec.md5 or spec.sha256)
    for rel in generated_files(entry, root):
        try:
            checksums.check_file(root, rel, generated=True, force_hash=True,
                                 repair=_regenerate_hint(entry, root, rel))
            report.files.append(FileStatus(rel, "ok", "generated file; matches the sha256 "
                                           "recorded when it was written"))
        except CorruptDataError as err:
            report.files.append(FileStatus(rel, "mismatch", str(err)))
    if caches:
        for cdir in cache.cache_dirs(root, entry.group, entry.name):
            problems = cache.verify_cache(cdir)
            rel = str(cdir.relative_to(root))
            report.files.append(FileStatus(rel + "/", "mismatch" if problems else "ok",
                                           "; ".join(problems) if problems else "cache checksums match"))
    return report
