"""Tutorial 04 runs top to bottom in a real kernel: it starts its own Ray cluster and Ray-executor backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import psutil
import pytest

from .embedded import run_on_embedded_backend

TUTORIALS_DIR = Path(__file__).resolve().parents[2] / "tutorials"
NOTEBOOK = TUTORIALS_DIR / "04-scale-out-on-ray.ipynb"


def _kill_leftovers() -> None:
    """What a failed run of the notebook left: its `ray start` (and the cluster under it) and its server."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "aiaas-ray-tutorial-" in cmdline and ("ray.scripts.scripts" in cmdline or "aiaas_backend" in cmdline):
                for p in [*proc.children(recursive=True), proc]:
                    p.kill()
        except psutil.Error:
            pass


@pytest.mark.timeout(900)
def test_scale_out_tutorial_trains_on_two_ray_workers_and_serves(tmp_path):
    for helper in TUTORIALS_DIR.glob("*.py"):
        shutil.copy(helper, tmp_path)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "strip the outputs"
    try:
        nb = run_on_embedded_backend(nb, NOTEBOOK.name, tmp_path)
    finally:
        _kill_leftovers()
    text = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "executor: ray" in text
    assert "training on 2 Ray Train workers with Lightning's DDP" in text
    assert "run succeeded: val_acc" in text
    assert "'max_replicas': 2" in text and "stopped" in text
