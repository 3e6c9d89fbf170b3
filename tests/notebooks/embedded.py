"""Execute a notebook in a fresh kernel whose ``aiaas.connect("local")`` starts its own backend."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "notebooks"


def run_on_embedded_backend(nb: nbformat.NotebookNode, name: str, tmp_path: Path) -> nbformat.NotebookNode:
    """Run ``nb`` with ``tmp_path`` as its folder and data dir; the executed copy is kept as an artifact."""
    env = {**os.environ, "AIAAS_DATA_DIR": str(tmp_path / "data"), "AIAAS_CONFIG": str(tmp_path / "config.toml")}
    for variable in ("AIAAS_URL", "AIAAS_API_KEY", "MPLBACKEND"):  # plots go inline, as in Jupyter
        env.pop(variable, None)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=env)  # handed to start_kernel: the kernel sees only this environment
    finally:
        info = tmp_path / "data" / "server.json"
        if info.exists():
            os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
        # For people (and CI artifacts) to read: what the notebook printed and drew this time.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / name)
    return nb
