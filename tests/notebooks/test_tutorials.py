"""Every tutorial notebook runs top to bottom in a real kernel against an embedded backend."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = sorted((Path(__file__).resolve().parents[2] / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    env = {**os.environ, "AIAAS_DATA_DIR": str(tmp_path / "data"), "AIAAS_CONFIG": str(tmp_path / "config.toml")}
    env.pop("AIAAS_URL", None)
    env.pop("AIAAS_API_KEY", None)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=env)  # handed to start_kernel: the kernel sees only this environment
    finally:
        info = tmp_path / "data" / "server.json"
        if info.exists():
            os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    texts = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    if path.stem == "01_train_and_watch":
        assert "this batch is wrong" in texts and "in training_step" in texts
    if path.stem == "02_deploy_and_call":
        assert "400 batches, accuracy" in texts and "expected (batch, 64), received (2, 5)" in texts
