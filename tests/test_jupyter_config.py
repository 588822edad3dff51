"""The kit's Jupyter config (``jupyter/``, used by ``make lab``): what a student sees.

A headless JupyterLab started with ``JUPYTER_CONFIG_PATH=jupyter`` serves the notification
settings with the news pop-up and the update check switched off, and a kernel it starts
talks over IPC, so ipykernel prints no "TCP without encryption" warning.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_http import free_port, request

CONFIG = Path(__file__).resolve().parents[1] / "jupyter"


def _free_port() -> int:
    return free_port()


def _request(url: str, token: str, method: str = "GET", body: dict | None = None):
    return request(url, token, method, body, timeout=20)


def test_overrides_are_valid_settings_of_the_notification_plugin():
    import jupyterlab

    overrides = json.loads((CONFIG / "lab" / "settings" / "overrides.json").read_text())
    plugin = overrides["@jupyterlab/apputils-extension:notification"]
    schema = json.loads((Path(jupyterlab.__file__).parent / "schemas" / "@jupyterlab" /
                         "apputils-extension" / "notification.json").read_text())
    assert set(plugin) <= set(schema["properties"])
    assert plugin["fetchNews"] in [o["const"] for o in schema["properties"]["fetchNews"]["oneOf"]]
    assert plugin == {"fetchNews": "false", "checkForUpdates": False}


@pytest.mark.slow
def test_make_lab_config_silences_the_news_popup_and_the_tcp_warning(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
           "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={tmp_path}"]
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(CONFIG)}
    log_path = tmp_path / "lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    _request(f"{base}/api/status", token)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("jupyter lab did not start:\n" + log_path.read_text()[-2000:])
                    time.sleep(0.3)
            setting = _request(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:"
                               "notification", token)
            props = setting["schema"]["properties"]
            assert props["fetchNews"]["default"] == "false"
            assert props["checkForUpdates"]["default"] is False
            kernel = _request(f"{base}/api/kernels", token, "POST", {"name": "python3"})
            deadline = time.monotonic() + 60
            while _request(f"{base}/api/kernels/{kernel['id']}", token)[
                    "execution_state"] in ("starting",) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # the kernel logs its transport while it binds its sockets
            _request(f"{base}/api/kernels/{kernel['id']}", token, "DELETE")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = log_path.read_text()
    assert "without encryption" not in text, text[-2000:]
