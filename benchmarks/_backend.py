"""Starts a throwaway backend for a benchmark: real server, own data dir, loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def start_backend(data_dir: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str, str]:
    """Returns the server process, its URL and the local user's API key; ``env`` adds settings."""
    env = {**os.environ, "AIAAS_CONFIG": str(data_dir / "config.toml"), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiaas_backend", "server", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        # Its own session, as `aiaas server` runs and as the baselines run: on a machine with
        # autogrouped scheduling, a server in the benchmark's session would share the client's CPU share.
        start_new_session=True,
    )
    for _ in range(600):
        try:
            url = json.loads((data_dir / "server.json").read_text())["url"]
            key = (data_dir / "config.toml").read_text().split('api_key = "')[1].split('"')[0]
            return proc, url, key
        except (OSError, ValueError, KeyError, IndexError):
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("the backend did not start within 60 s")


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value\n{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
