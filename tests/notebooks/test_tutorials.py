"""Every tutorial runs top to bottom in a real kernel against an embedded backend, and says what it should."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from .embedded import run_on_embedded_backend

TUTORIALS_DIR = Path(__file__).resolve().parents[2] / "tutorials"
# 04 trains on a local Ray cluster: tests/notebooks/test_ray_tutorial.py runs it.
TUTORIALS = sorted(p for p in TUTORIALS_DIR.glob("*.ipynb") if "ray" not in p.stem)


def execute(path: Path, tmp_path: Path) -> nbformat.NotebookNode:
    """Run a tutorial as a user would: its own embedded backend, the files beside it, a fresh kernel."""
    for helper in TUTORIALS_DIR.glob("*.py"):
        shutil.copy(helper, tmp_path)
    return run_on_embedded_backend(nbformat.read(path, as_version=4), path.name, tmp_path)


def text_of(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def images_in(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*([0-9.]+)", text)
    assert match, f"{label!r} not in the output:\n{text[-3000:]}"
    return float(match.group(1))


def check_quickstart(nb: nbformat.NotebookNode, text: str) -> None:
    assert number_after("validation accuracy:", text) > 0.9
    predicted = json.loads(re.search(r"predicted: (\[.*\])", text).group(1))
    truth = json.loads(re.search(r"true:\s+(\[.*\])", text).group(1))
    assert len(predicted) == 8 and sum(p == t for p, t in zip(predicted, truth)) >= 6
    assert images_in(nb) == 1
    # The widget state nbclient recorded from the dashboard cell: the live header reached the end.
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    headers = [m["state"].get("value", "") for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any("quickstart" in h and ">succeeded<" in h for h in headers)
    progress = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert any(p["value"] == p["max"] > 0 for p in progress)


def check_async_inference(nb: nbformat.NotebookNode, text: str) -> None:
    assert "1797 predictions in" in text and number_after("accuracy", text) > 0.9
    table = re.findall(r"^\s+(1|4|16|64)\s+(\d+)\s+([0-9.]+)", text, re.M)
    assert [row[0] for row in table] == ["1", "4", "16", "64"]
    assert float(table[-1][2]) > float(table[0][2])  # batches grow with concurrency
    assert images_in(nb) == 1
    assert "300 of 300 answered" in text and number_after("turned away", text) > 0


def check_versions(nb: nbformat.NotebookNode, text: str) -> None:
    forward = re.search(r"rolled forward to (\S+): (\d+) requests answered during the update, (\d+) failed", text)
    back = re.search(r"rolled back to (\S+): (\d+) requests answered during the rollback, (\d+) failed", text)
    assert forward and back, text[-3000:]
    assert int(forward.group(2)) > 0 and forward.group(3) == "0"
    assert int(back.group(2)) > 0 and back.group(3) == "0"
    assert forward.group(1) != back.group(1)
    assert "failed:" not in text and re.search(r"\d+ requests, 0 errors", text)


def check_bring_your_own(nb: nbformat.NotebookNode, text: str) -> None:
    assert text.count("epoch ") >= 6  # the user's callback printed on the backend
    rates = json.loads(re.search(r"learning rate per epoch: (\[.*\])", text).group(1))
    assert rates[0] == pytest.approx(0.02) and rates[-1] < rates[0]  # the scheduler ran
    remote, local = re.search(r"val_acc on the backend ([0-9.]+), here ([0-9.]+)", text).groups()
    assert float(remote) > 0.85 and float(remote) == pytest.approx(float(local), abs=1e-4)
    assert "'hidden': 128" in text and "state_dict loads into a fresh module: True" in text
    assert "this batch is wrong" in text and "in training_step" in text


def check_your_own_data(nb: nbformat.NotebookNode, text: str) -> None:
    shown = "".join(o.get("data", {}).get("text/plain", "") for cell in nb.cells if cell.cell_type == "code"
                    for o in cell.outputs)
    assert "1797 images written" in text and "Dataset digits-png:1 · 1798 files" in shown, shown
    assert re.search(r"digits-png\s+2\s+1798\s.*\n.*digits-png\s+1\s+1798", shown), shown  # client.datasets()
    assert re.search(r"here, data_path -> \S+data/digits with 1438 training images", text), text[-3000:]
    sent = re.search(r"version 2: 1798 files, sent (\d+) chunks \((\d+) bytes\)", text)
    assert sent and 1 <= int(sent.group(1)) <= 41, text[-3000:]  # the 40 images and the labels, at most
    assert "run 1 read ['digits-png:1']" in text
    # Version 1 after the folder changed: a copy from the backend with its 1797 labels, not the edited folder.
    v1 = re.search(r"digits-png:1 -> (\S+) with (\d+) labelled images", text)
    assert v1 and "/cache/versions/" in v1.group(1) and v1.group(2) == "1797", text[-3000:]
    assert re.search(r"digits-png -> \S+data/digits\n", text), text[-3000:]  # the newest: the folder itself
    accs = dict(re.findall(r"^(digits-from-files|digits-v2): read digits-png:[12], val_acc ([0-9.]+)", text, re.M))
    assert float(accs["digits-from-files"]) > 0.8 and float(accs["digits-v2"]) > 0.8, text[-3000:]


def check_language_model(nb: nbformat.NotebookNode, text: str) -> None:
    assert number_after("final train_loss:", text) < 3.5, text[-3000:]
    assert "streamed 60 pieces" in text and "refused: generate raised ValueError: the prompt is 100 characters" in text
    assert "models: ['tiny-lm']" in text and "same completion as dep.stream: True" in text, text[-3000:]
    assert re.search(r"^2 streams; first piece p50 [0-9.]+ ms; \d+ pieces/s", text, re.M), text[-3000:]
    # The int8 version was measured before it served, and streams text of its own.
    assert re.search(r"^int8: [0-9.]+x the float model's speed, largest logit difference [0-9.]+$", text, re.M), text[-3000:]
    assert re.search(r"^\d+ of 60 characters as the float model wrote them$", text, re.M), text[-3000:]


CHECKS = {
    "01-quickstart": check_quickstart,
    "02-async-inference": check_async_inference,
    "03-versions-and-rollback": check_versions,
    "05-bring-your-own-module": check_bring_your_own,
    "06-your-own-data": check_your_own_data,
    "07-serve-a-language-model": check_language_model,
}


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_shows_what_it_teaches(path: Path, tmp_path: Path) -> None:
    assert path.stem in CHECKS, f"{path.name} needs its key outputs checked here"
    nb = execute(path, tmp_path)
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []
    CHECKS[path.stem](nb, text_of(nb))
