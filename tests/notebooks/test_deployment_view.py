"""A real kernel (nbclient) deploys a model, displays the deployment's live view and sends it load."""

from __future__ import annotations

import json
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from ..notebook_code import model_cell

REQUESTS = 80


def _cell(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source)


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


@pytest.fixture
def kernel_env(backend, kernel, monkeypatch):
    kernel_name, extra_env = kernel
    env = {**os.environ, "AIAAS_CONFIG": str(backend.data_dir / "no-config.toml"), **extra_env}
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)  # the kernelspec lookup happens in this process
    return kernel_name, env


# Training, deploying and two kernels' worth of cells, plus (first use in a session) building the
# ipykernel 6 environment: past the suite's 300 s default on a loaded 2-core machine.
@pytest.mark.timeout(600)
def test_deployment_view_in_a_real_kernel_shows_the_load_and_stops(backend, tmp_path, kernel_env):
    kernel_name, env = kernel_env
    name = f"nb-view-{kernel_name}"
    cells = [
        _cell(f"%load_ext aiaas\n%aiaas connect {backend.url} --key {backend.key}"),
        _cell(model_cell() + "\n\nclass ServedModel(NotebookModel):\n    def forward(self, x):\n        return self.net(x)\n"),
        _cell(f"run = client.train(ServedModel(), max_epochs=1, name='nb-view')\nrun.wait()\n"
              f"dep = run.deploy({name!r})"),
        _cell("dep"),
        # Everything the test reads from the widget state happens inside this cell: nbclient keeps
        # only messages whose parent is the executing cell, which proves the thread kept its header.
        _cell("import json, time, torch\n"
              "view = dep.watch(interval=0.5)\n"
              f"for _ in range({REQUESTS}):\n    dep.predict(torch.zeros(2, 4))\n"
              "deadline = time.monotonic() + 60\n"
              f"while view.snapshot()['requests'] != {REQUESTS} and time.monotonic() < deadline:\n"
              "    time.sleep(0.1)\n"
              "polls = view.polls\n"
              "while view.polls < polls + 2 and time.monotonic() < deadline:\n"
              "    time.sleep(0.1)\n"
              "view.close()\nassert view.wait(10)\n"
              "print(json.dumps(view.snapshot()))"),
        # A real breach: a p99 rule no answer can meet, evaluated by the backend under this load; the
        # view shows the alert (read at once on its event), then its resolution once the load stops.
        _cell("view = dep.watch(interval=0.5)\n"
              "dep.set_alerts(p99_ms=0.001, window_s=2)\n"
              "deadline = time.monotonic() + 60\n"
              # Waits on what the widgets hold (and send to the frontend), not on the state behind them.
              "shown = lambda: 'ALERT' in view.header.value and 'alert raised' in view.events_box.value\n"
              "while not shown() and time.monotonic() < deadline:\n"
              "    dep.predict(torch.zeros(2, 4))\n"
              "raised = {'snap': view.snapshot(), 'header': view.header.value, 'events': view.events_box.value}\n"
              "gone = lambda: 'ALERT' not in view.header.value and 'alert resolved' in view.events_box.value\n"
              "while not gone() and time.monotonic() < deadline:\n"
              "    time.sleep(0.1)\n"
              "done = {'snap': view.snapshot(), 'header': view.header.value, 'events': view.events_box.value}\n"
              "view.close()\nassert view.wait(10)\n"
              "print(json.dumps({'raised': raised, 'resolved': done}))"),
        _cell("again = dep.watch(interval=0.5)\ndep.delete()\nassert again.wait(30)\n"
              "print(json.dumps(again.snapshot()))"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, timeout=300, kernel_name=kernel_name, store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)

    seen = json.loads(_stdout(nb.cells[4]).strip().splitlines()[-1])
    assert seen["requests"] == REQUESTS and seen["errors"] == 0 and seen["rejected"] == 0
    assert seen["status"] == "ready" and seen["replicas"] == "1/1" and seen["version"]
    assert seen["p50_ms"] > 0 and seen["p99_ms"] >= seen["p95_ms"] >= seen["p50_ms"]
    assert seen["mean_batch_rows"] >= 2 and sum(seen["batch_sizes"].values()) >= 1
    assert max(y for _, y in seen["series"]["requests/s"]) > 0
    assert seen["finished"] and seen["polls"] >= 2

    # What the kernel sent to the frontend: the figures and both charts, with the load in them.
    widget_state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    values = [m["state"].get("value", "") for m in widget_state.values() if m["model_name"] == "HTMLModel"]
    figures = [v for v in values if "aiaas-dep-requests" in v]
    assert any(re.search(rf"class='aiaas-dep-requests'><b>{REQUESTS}</b>", v) for v in figures), figures
    assert any(f"<b>{name}</b>" in v and "ready" in v for v in values)
    charts = [m["state"]["series"] for m in widget_state.values() if "series" in m["state"]]
    assert any(any(y > 0 for _, y in c.get("requests/s", [])) for c in charts), charts
    assert any(c.get("p99 ms") for c in charts), charts

    # `dep` as a cell's value: the live view, and a text fallback naming the deployment.
    display = nb.cells[3].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in display
    assert f"Deployment {name} · ready" in display["text/plain"]

    # The alert, as the view showed it while firing (header badge, red line, the event), then resolved.
    alert = json.loads(_stdout(nb.cells[5]).strip().splitlines()[-1])
    raised, resolved = alert["raised"], alert["resolved"]
    assert raised["snap"]["alerts_firing"] == ["p99_ms"]
    assert "ALERT p99_ms" in raised["header"] and "Alerts firing:</b> p99_ms" in raised["events"]
    assert any(re.search(rf"alert raised: {name}: p99 latency .* is above 0.001 ms", e) for e in raised["snap"]["events"])
    assert resolved["snap"]["alerts_firing"] == [] and "ALERT" not in resolved["header"]
    assert "Alerts firing" not in resolved["events"] and "alert resolved" in resolved["events"]
    # What the kernel sent to the frontend: the events area, with both events in it.
    assert any("alert raised" in v and "alert resolved" in v for v in values)

    # Deleting the deployment stops the view, which says so.
    gone = json.loads(_stdout(nb.cells[6]).strip().splitlines()[-1])
    assert gone["status"] == "deleted" and gone["finished"] and gone["replicas"] == "0/1"
    assert any("was deleted" in v for v in values)
