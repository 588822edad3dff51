"""One run per output folder: an exclusive lock on ``<out>/.crossmodal-run.lock``.

Two runs writing into the same ``--out`` interleave their ``metrics.jsonl`` lines, share the
fixed name ``checkpoint.pt.tmp`` and overwrite each other's ``results.json``. :class:`RunLock`
makes the second one stop at once with a message naming the process that holds the folder.

The lock is an advisory ``flock`` on the lock file, which the kernel releases when its
process dies (even by SIGKILL): a lock left by a dead process is therefore taken over
without any action. The file also records the holder's pid, host and command, for the
message. On a file system without ``flock`` (some network mounts) the recorded pid is
checked instead: a lock whose pid no longer runs on this host is taken over.

Under a multi-process launch (``accelerate launch``; ``RANK``/``LOCAL_RANK`` set) only rank
0 takes the lock: the other ranks are part of the same run.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from crossmodal.errors import CrossmodalError

LOCK_NAME = ".crossmodal-run.lock"

try:
    import fcntl
except ImportError:  # Windows: fall back to the pid check
    fcntl = None  # type: ignore[assignment]


class RunFolderInUseError(CrossmodalError):
    """Another live process is running into the same output folder."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    return True


def _rank() -> int:
    for var in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(var)
        if value and value.strip().lstrip("-").isdigit():
            return int(value)
    return 0


def _describe(info: dict) -> str:
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("started"):
        parts.append(f"since {info['started']}")
    text = " ".join(parts)
    if info.get("command"):
        text += f" ({info['command']})"
    return text


class RunLock:
    """Hold ``<folder>/.crossmodal-run.lock`` exclusively for the duration of a run.

    Use as a context manager (or :meth:`acquire` / :meth:`release`). Acquiring raises
    :class:`RunFolderInUseError` naming the holder's pid when a live process holds it.
    Releasing removes the lock file, and the folder too when it is left empty and
    ``remove_if_empty`` (default: the lock created it), so that a run that failed before
    writing anything leaves no empty folder behind.
    """

    def __init__(self, folder: str | Path, *, remove_if_empty: bool | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._remove_if_empty = remove_if_empty
        self._skip = _rank() != 0

    # -- helpers
    def _read_info(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def _refuse(self, info: dict) -> RunFolderInUseError:
        return RunFolderInUseError(
            f"the output folder {self.folder} is in use by another run ({_describe(info)}); "
            "wait for it to finish, stop it, or choose another --out"
        )

    def _write_info(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())
        os.fsync(fd)

    # -- protocol
    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring); returns ``self``."""
        if self._skip or self._fd is not None:
            return self
        if self._remove_if_empty is None:
            self._remove_if_empty = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # retries only when the file is replaced under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise CrossmodalError(f"cannot create the lock file {self.path} "
                                      f"({err.strerror}); choose a writable --out") from None
            locked = False
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                except OSError as err:
                    if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        info = self._read_info()
                        os.close(fd)
                        raise self._refuse(info) from None
                    # ENOLCK/EINVAL: no flock on this file system: use the recorded pid
            if not locked:
                info = self._read_info()
                same_host = info.get("host") in (None, socket.gethostname())
                pid = int(info.get("pid", 0) or 0)
                if info and pid != os.getpid() and same_host and _pid_alive(pid):
                    os.close(fd)
                    raise self._refuse(info)
            # The holder may have removed (released) the file between our open and our
            # flock: then we hold a lock on an orphan inode; start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._write_info(fd)
            self._fd = fd
            return self
        raise CrossmodalError(f"could not take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        if self._remove_if_empty:
            try:
                self.folder.rmdir()  # only succeeds when nothing was written
            except OSError:
                pass

    @property
    def held(self) -> bool:
        """This process holds the lock (False on ranks other than 0 of a launch)."""
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder`` (call with the lock held).

    These are ``checkpoint.pt.tmp`` (a checkpoint being written) and
    ``.results.json.*.tmp`` (results.json being written), i.e. every ``*.tmp`` directly in
    the folder: the kit writes nothing else with that suffix there. Returns what it removed.
    """
    removed = []
    for p in Path(folder).glob("*.tmp"):  # glob("*") includes dot files in pathlib
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
