"""``aiaas.connect("local")``: start (or reuse) an embedded backend on this machine.

The backend runs as a detached ``python -m aiaas_backend server`` process so it
outlives the kernel that started it; ``server.json`` in its data dir says where
it listens. The SDK only starts the process: it never imports the backend.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ._errors import AiaasError, BackendUnavailable
from .config import default_data_dir


def _healthy(data_dir: Path) -> str | None:
    try:
        info = json.loads((data_dir / "server.json").read_text())
        resp = httpx.get(f"{info['url']}/healthz", timeout=2.0)
        if resp.status_code == 200 and Path(resp.json()["data_dir"]) == data_dir.resolve():
            return str(info["url"])
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        pass
    return None


def ensure_local_backend(data_dir: str | Path | None = None, timeout: float = 120.0) -> str:
    """Return the URL of the local backend for ``data_dir``, starting it if needed."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    if url := _healthy(data_dir):
        return url
    if importlib.util.find_spec("aiaas_backend") is None or importlib.util.find_spec("fastapi") is None:
        raise AiaasError(
            "the embedded backend needs the server extra: pip install 'aiaas[server]' "
            "(or connect to a running backend with aiaas.connect(URL))"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    # Two kernels calling connect("local") at once must start one server, not two.
    with open(data_dir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url := _healthy(data_dir):
            return url
        log_path = data_dir / "server.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aiaas_backend", "server", "--data-dir", str(data_dir),
                 "--host", "127.0.0.1", "--port", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # On one's own machine, bubblewrap is welcome but not required (docs/security.md).
                start_new_session=True, env={"AIAAS_SANDBOX": "auto", **os.environ},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if url := _healthy(data_dir):
                return url
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BackendUnavailable(
                    f"the embedded backend exited with code {proc.returncode}; its log ({log_path}) ends:\n{tail}"
                )
            time.sleep(0.1)
        raise BackendUnavailable(f"the embedded backend did not start within {timeout:.0f} s; see {log_path}")
