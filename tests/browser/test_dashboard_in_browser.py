"""JupyterLab 4 and Notebook 7 in headless Chromium run a notebook; the live dashboard must render.

Screenshots of the dashboard are saved to tests/browser/artifacts/ as test
artifacts. Needs Debian's chromium at /usr/bin/chromium (``.ci/run`` installs
it); Playwright drives it and never downloads a browser of its own.
"""

from __future__ import annotations

import nbformat
import pytest

from ..notebook_code import model_cell
from .conftest import ARTIFACTS, CHROMIUM, FLAGS, LAB_FLAGS, NO_CHROMIUM, running_jupyter

pytestmark = NO_CHROMIUM

MODULE = model_cell("BrowserModel", samples=64, batch_size=8, step_sleep=0.05)  # slow enough to watch


FRONTENDS = {
    "jupyterlab": ("jupyterlab", "/lab/tree/dashboard.ipynb", LAB_FLAGS),
    "notebook7": ("notebook", "/notebooks/dashboard.ipynb", ["--JupyterNotebookApp.expose_app_in_browser=True"]),
}


@pytest.fixture(params=sorted(FRONTENDS))
def lab(tmp_path, backend, request):
    module, page_path, flags = FRONTENDS[request.param]
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"%load_ext aiaas\n%aiaas connect {backend.url} --key {backend.key}"),
        nbformat.v4.new_code_cell(MODULE),
        nbformat.v4.new_code_cell("run = client.train(BrowserModel(), max_epochs=6, name='in-the-browser')\nrun"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, root / "dashboard.ipynb")
    with running_jupyter(tmp_path, module, root, flags) as jupyter:
        yield jupyter.url, jupyter.token, page_path, request.param


def test_live_dashboard_renders(lab, backend):
    from playwright.sync_api import sync_playwright

    url, token, page_path, frontend = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"{url}{page_path}?token={token}")
        page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=90_000)
        page.wait_for_function(
            "document.querySelector('.jp-Notebook') && window.jupyterapp.shell.currentWidget &&"
            " window.jupyterapp.shell.currentWidget.sessionContext &&"
            " window.jupyterapp.shell.currentWidget.sessionContext.session &&"
            " window.jupyterapp.shell.currentWidget.sessionContext.session.kernel &&"
            " window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.connectionStatus === 'connected'",
            timeout=90_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # Live: the chart draws while the run is still going.
        page.wait_for_selector(".aiaas-chart svg polyline", timeout=120_000)
        page.wait_for_function("document.body.innerText.includes('running')", timeout=60_000)
        page.locator(".aiaas-chart").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"{frontend}-dashboard-live.png"))
        # The README's picture (docs/images/dashboard.png) is this one: the cell and its dashboard, mid-run.
        page.wait_for_function("['epoch 3/6', 'succeeded'].some(t => document.body.innerText.includes(t))",
                               timeout=60_000)
        page.locator(".jp-Notebook .jp-Cell").last.screenshot(path=str(ARTIFACTS / f"{frontend}-dashboard-cell.png"))
        page.wait_for_function("document.body.innerText.includes('succeeded') &&"
                               " document.body.innerText.includes('Final:')", timeout=120_000)
        page.screenshot(path=str(ARTIFACTS / f"{frontend}-dashboard-done.png"))
        points = page.evaluate("document.querySelector('.aiaas-chart svg polyline').getAttribute('points')")
        legend = page.inner_text(".aiaas-legend")
        progress_bar = page.locator(".widget-hprogress .progress-bar").first.bounding_box()
        text = page.inner_text(".jp-Notebook")
        browser.close()
    assert "train_loss" in legend and "val_loss" in legend
    assert len(points.split()) >= 10
    assert "in-the-browser" in text and "Final:" in text and "run.deploy('in-the-browser')" in text
    assert progress_bar is not None and progress_bar["width"] > 100
    assert "step 48/48 · epoch 6/6" in text  # 8 batches x 6 epochs
    assert (ARTIFACTS / f"{frontend}-dashboard-done.png").stat().st_size > 10_000
