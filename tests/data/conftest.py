"""A real HTTP server on loopback serving fixture bytes, with switchable misbehaviour.

Nothing here reaches the internet: the server binds 127.0.0.1 on a free port and serves
files from a dict. Behaviour per path (``server.behave[path]``):

* ``"ok"`` (default): 200, or 206 with ``Content-Range`` when a ``Range`` header is sent;
* ``"truncate"``: promise the full length, send half, then drop the connection (once);
* ``"norange"``: ignore ``Range`` and always send the whole file with 200;
* ``"busy"``: answer 503 the first two times, then behave as ``"ok"``.

Unknown paths get 404. ``server.log`` records ``(path, range header)`` of every request.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest


class _Handler(BaseHTTPRequestHandler):
    server_version = "fixture/1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        path = self.path
        rng = self.headers.get("Range")
        srv.log.append((path, rng))
        if path not in srv.files:
            self.send_error(404, "Not Found")
            return
        body = srv.files[path]
        mode = srv.behave.get(path, "ok")
        if mode == "busy":
            srv.counts[path] = srv.counts.get(path, 0) + 1
            if srv.counts[path] <= 2:
                self.send_error(503, "Busy")
                return
        start = 0
        if rng and mode != "norange" and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "truncate" and not srv.truncated.get(path):
            srv.truncated[path] = True
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


class FixtureServer:
    """Handle on the running server: ``url(path)``, ``files``, ``behave``, ``log``."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = {}
        self.httpd.behave = {}
        self.httpd.log = []
        self.httpd.counts = {}
        self.httpd.truncated = {}
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    @property
    def files(self) -> dict[str, bytes]:
        return self.httpd.files

    @property
    def behave(self) -> dict[str, str]:
        return self.httpd.behave

    @property
    def log(self) -> list[tuple[str, str | None]]:
        return self.httpd.log

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FixtureServer()
    yield srv
    srv.close()


@pytest.fixture
def payload() -> bytes:
    """200 KiB of seeded random bytes (several reads, one progress bar)."""
    return np.random.default_rng(0).integers(0, 256, size=200 * 1024, dtype=np.uint8).tobytes()

