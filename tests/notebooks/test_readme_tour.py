"""The README's five-minute tour runs, block by block, in a real kernel."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from .embedded import run_on_embedded_backend

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_blocks_run_in_order(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4, "the tour is made of the README's python blocks"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(block) for block in blocks])
    run_on_embedded_backend(nb, "readme-tour.ipynb", tmp_path)

    errors = [o for cell in nb.cells for o in cell.outputs if o.output_type == "error"]
    assert errors == [], errors
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.outputs)
    assert re.search(r"^succeeded \{'train_loss': [0-9.]+\}", text, re.M), text
    predicted, truth = re.search(r"^(\[[\d, ]+\]) (\[[\d, ]+\])$", text, re.M).groups()
    assert sum(p == t for p, t in zip(eval(predicted), eval(truth))) >= 8
    assert re.search(r"^1000 predictions; \d+ batches on the server", text, re.M)
    assert (tmp_path / "tour.ckpt").stat().st_size > 1000
