"""A real HTTP server on loopback serving fixture bytes, with switchable misbehaviour.

Nothing here reaches the internet: the server binds 127.0.0.1 on a free port and serves
files from a dict. Behaviour per path (``server.behave[path]``):

* ``"ok"`` (default): 200, or 206 with ``Content-Range`` when a ``Range`` header is sent;
* ``"truncate"``: promise the full length, send half, then drop the connection (once);
* ``"norange"``: ignore ``Range`` and always send the whole file with 200;
* ``"busy"``: answer 503 the first two times, then behave as ``"ok"``;
* ``"noclen"`` / ``"noclen_half"``: no Content-Length, the whole file / half of it, then
  close the connection (a close-delimited body: a drop looks like the end);
* ``"html"``: 200 with ``Content-Type: text/html`` and a sign-in page instead of the file;
  ``"html_octet"``: the same page sent as ``application/octet-stream``;
* ``"trickle"``: headers, then 1 byte every 1.5 s (at most 40 bytes, until the client leaves);
* ``"silent"``: accept the request and never answer (for at most 20 s);
* ``"stall"``: headers and the first 10 % of the file, then nothing (for at most 20 s).

Loops in the handler are bounded and end when the fixture closes (``server.stop`` is set).

Unknown paths get 404. ``server.log`` records ``(path, range header)`` of every request.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
        if mode == "silent":
            srv.stop.wait(20)
            return
        if mode in ("noclen", "noclen_half"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body if mode == "noclen" else body[: len(body) // 2])
            self.close_connection = True
            return
        if mode in ("html", "html_octet"):
            page = b"<html><body>Please sign in to continue.</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8" if mode == "html"
                             else "application/octet-stream")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if mode == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 10])
            self.wfile.flush()
            srv.stop.wait(20)
            self.close_connection = True
            return
        if mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(min(40, len(body))):
                if srv.stop.wait(1.5 if i else 0):
                    break
                try:
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                except OSError:  # the client gave up
                    break
            self.close_connection = True
            return
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
        self.httpd.stop = threading.Event()
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
        self.httpd.stop.set()  # ends trickling and silent handlers
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



@pytest.fixture
def publish_fixtures(monkeypatch, tmp_path_factory):
    """``publish(root)``: make the tiny fixture files under ``root`` the "published" ones.

    Loaders verify a file at a real name against the manifest (exact size, published md5),
    which a fixture written in the publisher's format cannot match. Tests of the *readers*
    call this after writing their fixtures: it writes a copy of the packaged manifest in which
    every file present under ``root`` has its actual size and sha256 as the published
    checksum, and points ``$CROSSMODAL_MANIFEST`` at it. The check itself still runs (and
    would reject a fixture changed afterwards).
    """
    import hashlib
    import json
    from importlib import resources

    def publish(root: Path) -> Path:
        raw = json.loads((resources.files("crossmodal.data") / "manifest.json").read_text("utf-8"))
        for entry in raw["entries"].values():
            for f in entry["files"]:
                path = Path(root) / f["path"]
                if path.exists():
                    data = path.read_bytes()
                    for key in ("md5", "approx_size", "min_size"):
                        f.pop(key, None)
                    f.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        out = tmp_path_factory.mktemp("manifest") / "manifest.json"
        out.write_text(json.dumps(raw), "utf-8")
        monkeypatch.setenv("CROSSMODAL_MANIFEST", str(out))
        return out

    return publish
