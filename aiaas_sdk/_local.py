"""``aiaas.connect("local")``: start (or reuse) an embedded backend on this machine.

The backend runs as a detached ``python -m aiaas_backend server`` process so it
outlives the kernel that started it; ``server.json`` in its data dir says where
it listens and ``local.key`` holds the key of its one user, so the embedded
backend never depends on the user's config file (which may point at another
backend). ``aiaas local status`` and ``aiaas local stop`` show and stop it.
The SDK only starts the process: it never imports the backend.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from ._errors import AiaasError, BackendUnavailable
from .config import default_data_dir

LOCAL_KEY_FILE = "local.key"  # written by the backend (aiaas_backend.server)


@dataclass(frozen=True)
class LocalBackend:
    """Where the embedded backend listens and the key of its ``local`` user."""

    url: str
    api_key: str
    data_dir: Path


def _healthy(data_dir: Path) -> str | None:
    try:
        info = json.loads((data_dir / "server.json").read_text())
        resp = httpx.get(f"{info['url']}/healthz", timeout=2.0)
        if resp.status_code == 200 and Path(resp.json()["data_dir"]) == data_dir.resolve():
            return str(info["url"])
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        pass
    return None


def _found(data_dir: Path, url: str) -> LocalBackend:
    try:
        key = (data_dir / LOCAL_KEY_FILE).read_text().strip()
    except OSError as exc:
        raise AiaasError(
            f"the embedded backend at {url} has no key for this machine's user ({data_dir / LOCAL_KEY_FILE}: "
            f"{exc.strerror}); stop it with `aiaas local stop` and connect again"
        ) from None
    return LocalBackend(url, key, data_dir)


def _start_detached(data_dir: Path, log_path: Path) -> int:
    """Start the server as a daemon: a child of a shell that exits at once, so it is nobody's
    child (no zombie left in the kernel after ``aiaas local stop``, none reaped by its exit)."""
    # The embedded backend is reached through its data dir, never through the config file.
    # On one's own machine, bubblewrap is welcome but not required (docs/security.md).
    env = {"AIAAS_SANDBOX": "auto", **os.environ, "AIAAS_WRITE_CONFIG": "false", "AIAAS_SERVER_LOG": str(log_path)}
    command = [sys.executable, "-m", "aiaas_backend", "server", "--data-dir", str(data_dir),
               "--host", "127.0.0.1", "--port", "0"]
    shell = subprocess.run(
        ["/bin/sh", "-c", '"$@" < /dev/null >> "$AIAAS_SERVER_LOG" 2>&1 & echo $!', "sh", *command],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, start_new_session=True, env=env, timeout=30,
    )
    if shell.returncode != 0 or not shell.stdout.strip().isdigit():
        raise BackendUnavailable(f"could not start the embedded backend: {shell.stderr.strip() or shell.stdout}")
    return int(shell.stdout.strip())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_local_backend(data_dir: str | Path | None = None, timeout: float = 120.0) -> LocalBackend:
    """Return the local backend for ``data_dir``, starting it if needed."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    if url := _healthy(data_dir):
        return _found(data_dir, url)
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
            return _found(data_dir, url)
        log_path = data_dir / "server.log"
        pid = _start_detached(data_dir, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if url := _healthy(data_dir):
                print(f"aiaas: started an embedded backend at {url} (pid {pid}, data in {data_dir}). "
                      "It keeps running after this program ends, so runs and deployments go on: "
                      "`aiaas local status` shows it, `aiaas local stop` stops it.")
                return _found(data_dir, url)
            if not _running(pid):
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BackendUnavailable(f"the embedded backend exited at start; its log ({log_path}) ends:\n{tail}")
            time.sleep(0.1)
        raise BackendUnavailable(f"the embedded backend did not start within {timeout:.0f} s; see {log_path}")
