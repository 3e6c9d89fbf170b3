"""A real kernel (nbclient) loads the extension, trains, and shows the live dashboard."""

from __future__ import annotations

import json
import nbformat
import pytest
from nbclient import NotebookClient

import aiaas

from ..notebook_code import model_cell

MODULE = model_cell()


def _cell(source: str, raises: bool = False) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if raises:
        cell.metadata["tags"] = ["raises-exception"]
    return cell


def _run_notebook(cells, tmp_path, env, kernel_name):
    nb = nbformat.v4.new_notebook(cells=cells)
    client = NotebookClient(nb, timeout=240, kernel_name=kernel_name, store_widget_state=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # handed to start_kernel: the kernel sees only this environment
    return nb


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _stderr(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")


@pytest.fixture
def kernel_env(backend):
    import os

    # No config file: the notebook connects only through %aiaas connect.
    return {**os.environ, "AIAAS_CONFIG": str(backend.data_dir / "no-config.toml")}


def test_dashboard_in_a_real_kernel_reaches_the_end(backend, tmp_path, kernel_env, kernel, monkeypatch):
    kernel_name, extra_env = kernel
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)  # the kernelspec lookup happens in this process
        kernel_env[name] = value
    cells = [
        _cell("%load_ext aiaas\n%load_ext aiaas"),
        _cell(f"%aiaas connect {backend.url} --key {backend.key}"),
        _cell(MODULE),
        # The cell waits for the end: nbclient records only messages whose parent is the
        # executing cell, so the widget state it stores proves the dashboard's threads
        # kept this cell's parent header.
        _cell("torch.manual_seed(0)\nrun = client.train(NotebookModel(), max_epochs=3, name='nb-dashboard')\n"
              "dash = run.watch()\nassert dash.wait(180)"),
        _cell("import json\nprint(json.dumps({'run': run.id, **dash.snapshot()}))"),
        _cell("run"),
        _cell("client.runs()"),
        _cell("%aiaas watch run_doesnotexist", raises=True),
        _cell("%aiaas frobnicate", raises=True),
        _cell("%aiaas logs $run.id\n%aiaas deployments"),
        _cell("%unload_ext aiaas"),
        _cell("%aiaas runs", raises=True),
    ]
    nb = _run_notebook(cells, tmp_path, kernel_env, kernel_name)
    state = json.loads(_stdout(nb.cells[4]).strip().splitlines()[-1])

    run = backend.client().run(state["run"])
    logged = run.metrics("train_loss")
    assert state["status"] == "succeeded" and run.status is aiaas.RunStatus.succeeded
    assert state["progress"]["value"] == state["progress"]["max"] == 15  # 5 batches x 3 epochs
    assert [p[1] for p in state["series"]["train_loss"]] == [p.value for p in logged]
    assert len(state["series"]["val_loss"]) == 3
    assert state["cancel_disabled"] is True
    assert state["draws"] >= 2

    # The widget state the kernel sent to the frontend holds the same history.
    widget_state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    charts = [m["state"] for m in widget_state.values() if "series" in m["state"]]
    assert len(charts) >= 1
    assert any(len(c["series"].get("train_loss", [])) == len(logged) for c in charts)
    progress = [m["state"] for m in widget_state.values() if m["model_name"] == "IntProgressModel"]
    assert any(p["value"] == p["max"] == 15 for p in progress)

    # The displayed run carries a widget view and a plain-text fallback.
    display = nb.cells[5].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in display
    assert "nb-dashboard" in display["text/plain"] and "succeeded" in display["text/plain"]
    assert "nb-dashboard" in nb.cells[6].outputs[0]["data"]["text/html"]

    # Expected failures: one readable line (IPython prints a UsageError on stderr), no traceback.
    unknown_run = _stderr(nb.cells[7])
    assert unknown_run.startswith("UsageError: no run 'run_doesnotexist'") and unknown_run.count("\n") <= 1
    assert "Traceback" not in unknown_run
    assert _stderr(nb.cells[8]).startswith("UsageError: %aiaas needs a command: connect, runs, train")
    assert "GPU available" in _stdout(nb.cells[9])
    assert "no deployments yet" in _stdout(nb.cells[9])
    assert "Line magic function `%aiaas` not found" in _stderr(nb.cells[11])

    # A new kernel (as after a restart) looks the run up again: the dashboard is rebuilt
    # from the event history and shows the same chart and progress.
    again = _run_notebook([
        _cell("import aiaas, json\n"
              f"client = aiaas.connect({backend.url!r}, {backend.key!r})\n"
              f"dash = client.run({state['run']!r}).watch()\nassert dash.wait(60)\n"
              "print(json.dumps(dash.snapshot()))"),
    ], tmp_path, kernel_env, kernel_name)
    rebuilt = json.loads(_stdout(again.cells[0]).strip().splitlines()[-1])
    assert rebuilt["series"] == state["series"] and rebuilt["progress"] == state["progress"]
    assert rebuilt["status"] == "succeeded"
