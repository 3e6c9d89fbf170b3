"""Headless Debian Chromium and a real Jupyter server on 127.0.0.1, for the browser tests.

Needs /usr/bin/chromium (``.ci/run`` installs it); Playwright drives it and
never downloads a browser of its own. Screenshots go to tests/browser/artifacts/
(git-ignored), kept as test artifacts.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                 "(apt-get install chromium); .ci/run installs it")
# JupyterLab without its calls home, and with `window.jupyterapp` for the tests to wait on.
LAB_FLAGS = ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Jupyter:
    url: str
    token: str
    log: Path


@contextmanager
def running_jupyter(tmp_path: Path, module: str, root: Path, flags: list[str],
                    env: dict[str, str] | None = None) -> Iterator[Jupyter]:
    """``python -m module`` (jupyterlab, notebook) on a free port with a fresh config and runtime dir."""
    port, token = free_port(), secrets.token_hex(16)
    # Settings saved by a test stay in its own folder; and no "Jupyter news?" pop-up over the screenshots.
    settings = tmp_path / "lab-settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text('{"fetchNews": "false"}')
    full_env = {**os.environ, "AIAAS_CONFIG": str(tmp_path / "none.toml"), "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"),
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrt"), "JUPYTERLAB_SETTINGS_DIR": str(settings), **(env or {})}
    log = tmp_path / f"{module}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root", *flags],
            stdout=out, stderr=subprocess.STDOUT, env=full_env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail(log.read_text()[-3000:])
        yield Jupyter(url, token, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
