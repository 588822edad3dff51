"""A Jupyter server started headless runs code on the "crossmodal" kernel, inside this venv.

What a user gets with ``make lab``: the server lists the kernel spec that ``make setup``
installs, starts it through the REST API, and a cell executed over the kernel's websocket
imports the kit from this environment.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from jupyter_http import free_port, request

KERNEL = "crossmodal"


def _kernel_installed() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL in KernelSpecManager().find_kernel_specs()


pytestmark = pytest.mark.skipif(
    not _kernel_installed(),
    reason="the 'crossmodal' kernel spec is not installed: run `make setup` (it runs "
    "`python -m ipykernel install --sys-prefix --name crossmodal`)",
)


def _free_port() -> int:
    return free_port()


def _request(url: str, token: str, method: str = "GET", body: dict | None = None):
    return request(url, token, method, body, timeout=10)


@pytest.fixture
def server(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
           "--ServerApp.allow_root=True",  # containers and CI often run as root
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _request(f"{base}/api/status", token)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("jupyter server did not start:\n"
                                + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(0.3)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def _execute(ws_url: str, code: str, timeout: float = 90) -> tuple[str, dict]:
    """Send one execute_request over the kernel websocket; return (stdout, execute_reply)."""
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url)
    msg_id, out = uuid.uuid4().hex, []
    conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    reply, idle = None, False
    deadline = time.monotonic() + timeout
    while reply is None or not idle:
        raw = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
        if raw is None:
            raise RuntimeError("the kernel websocket closed")
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            out.append("\n".join(msg["content"]["traceback"]))
        elif kind == "execute_reply":
            reply = msg["content"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    conn.close()
    return "".join(out), reply


def test_jupyter_server_runs_a_cell_on_the_crossmodal_kernel(server):
    base, token = server
    specs = _request(f"{base}/api/kernelspecs", token)["kernelspecs"]
    assert KERNEL in specs, f"kernel specs listed: {sorted(specs)}"
    kernel = _request(f"{base}/api/kernels", token, "POST", {"name": KERNEL})
    assert kernel["name"] == KERNEL
    ws = f"ws://{base[len('http://'):]}/api/kernels/{kernel['id']}/channels?token={token}"
    code = ("import sys, crossmodal\n"
            "from crossmodal import notebook as cm\n"
            "print('prefix', sys.prefix)\n"
            "print('profile', cm.settings('00_quickstart', check_data=False).profile)\n"
            "print('answer', 6 * 7)")
    out, reply = asyncio.run(_execute(ws, code))
    assert reply["status"] == "ok", out
    assert "answer 42" in out and "profile smoke" in out
    # the kernel runs in this environment (the venv the kernel spec was installed into)
    prefix = out.split("prefix ", 1)[1].splitlines()[0]
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    _request(f"{base}/api/kernels/{kernel['id']}", token, "DELETE")
