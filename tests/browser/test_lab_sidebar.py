"""The aiaas sidebar in JupyterLab 4 in headless Chromium, against a real backend.

Runs are submitted through the SDK (as a notebook would); the test watches
them in the sidebar, cancels one from there, and reads a failed run's error.
The Jupyter server holds the API key (its environment); the page never does.
Screenshots: tests/browser/artifacts/lab-sidebar-*.png.
"""

from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
import torch

from ..integration.models import Regressor
from .conftest import ARTIFACTS, CHROMIUM, FLAGS, LAB_FLAGS, NO_CHROMIUM, running_jupyter

pytestmark = NO_CHROMIUM

# Each wait is a deadline on a condition; a run's first step needs a warm worker, a few seconds here.
WAIT_MS = 90_000


@pytest.fixture
def lab(tmp_path, backend):
    root = tmp_path / "lab"
    root.mkdir()
    env = {"AIAAS_URL": backend.url, "AIAAS_API_KEY": backend.key}
    with running_jupyter(tmp_path, "jupyterlab", root, LAB_FLAGS, env=env) as jupyter:
        yield jupyter


def _set_backend_url(lab, url: str) -> None:
    """What Settings > aiaas > Backend URL saves, through JupyterLab's settings API."""
    resp = httpx.put(f"{lab.url}/lab/api/settings/aiaas-lab:plugin", params={"token": lab.token},
                     content=json.dumps({"raw": json.dumps({"backendUrl": url})}))
    assert resp.status_code == 204, resp.text


def _row(run_id: str, status: str) -> str:
    return f'.aiaas-Row-head[data-run-id="{run_id}"][data-status="{status}"]'


def test_sidebar_follows_runs_cancels_one_and_shows_a_failure(lab, backend, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    client = backend.client()
    (tmp_path / "notes.txt").write_text("the sidebar shows which data a run read")
    notes = client.upload("sidebar-notes", tmp_path / "notes.txt", progress=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{lab.url}/lab?token={lab.token}")
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell", timeout=WAIT_MS)
        status_item = page.locator(".aiaas-StatusItem")
        expect(status_item).to_have_text("aiaas: connected · 0 active runs", timeout=WAIT_MS)
        page.locator('.jp-SideBar li[data-id="aiaas-panel"]').click()
        panel = page.locator("#aiaas-panel")
        expect(panel).to_be_visible()
        expect(panel).to_contain_text("No runs yet", timeout=WAIT_MS)

        # 8 steps an epoch, 0.1 s a step: ~8 s, long enough to be seen running.
        quick = client.train(Regressor(step_sleep=0.1), max_epochs=10, name="sidebar-quick", datasets=[notes])
        slow = client.train(Regressor(step_sleep=0.1), max_epochs=1000, name="sidebar-slow")

        page.wait_for_selector(_row(quick.id, "running"), timeout=WAIT_MS)
        quick_row = panel.locator(".aiaas-Row", has=page.locator(f'[data-run-id="{quick.id}"]'))
        # Progress and loss arrive with the run's first steps.
        expect(quick_row.locator(".aiaas-Row-loss")).to_contain_text("train_loss", timeout=WAIT_MS)
        expect(quick_row.locator(".aiaas-Row-datasets")).to_have_text("data: sidebar-notes:1")
        expect(quick_row.locator(".aiaas-Row-progress")).to_have_text(re.compile(r"^\d+%$"), timeout=WAIT_MS)
        expect(status_item).to_have_text(re.compile(r"^aiaas: connected · [12] active runs?$"), timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "lab-sidebar-running.png"))

        page.wait_for_selector(_row(quick.id, "succeeded"), timeout=WAIT_MS)
        expect(quick_row.locator(".aiaas-Row-progress")).to_have_text("100%")
        expect(quick_row.locator('button[data-action="cancel"]')).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "lab-sidebar-succeeded.png"))

        # A deployment of it, under load: replicas and a request rate in its row.
        deployment = quick.deploy("sidebar-dep", replicas=1)
        stop = threading.Event()
        load = threading.Thread(target=lambda: [deployment.predict(torch.zeros(4, 8)) for _ in iter(stop.is_set, True)])
        load.start()
        try:
            dep_row = panel.locator(".aiaas-Row", has=page.locator('[data-deployment="sidebar-dep"]'))
            expect(dep_row.locator(".aiaas-Row-replicas")).to_have_text("1/1 replicas", timeout=WAIT_MS)
            expect(dep_row.locator(".aiaas-Row-version")).to_have_text(f"model {quick.id}")
            expect(dep_row.locator(".aiaas-Row-rate")).to_have_text(re.compile(r"^(?!0 )[\d.e-]+ req/s$"),
                                                                    timeout=WAIT_MS)
        finally:
            stop.set()
            load.join(timeout=60)

        slow_row = panel.locator(".aiaas-Row", has=page.locator(f'[data-run-id="{slow.id}"]'))
        expect(slow_row.locator(".aiaas-Row-datasets")).to_have_count(0)  # no datasets: no line
        page.wait_for_selector(_row(slow.id, "running"), timeout=WAIT_MS)
        panel.locator(f'.aiaas-Row-actions[data-run-id="{slow.id}"] button[data-action="cancel"]').click()
        page.locator(".jp-Dialog button.jp-mod-accept").click()
        page.wait_for_selector(_row(slow.id, "cancelled"), timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "lab-sidebar-cancelled.png"))

        failing = client.train(Regressor(fail_at_step=2), max_epochs=1, name="sidebar-failing")
        page.wait_for_selector(_row(failing.id, "failed"), timeout=WAIT_MS)
        failing_row = panel.locator(".aiaas-Row", has=page.locator(f'[data-run-id="{failing.id}"]'))
        expect(failing_row.locator(".aiaas-Row-error")).to_contain_text("boom at step 2")
        expect(status_item).to_have_text("aiaas: connected · 0 active runs", timeout=WAIT_MS)

        # The run's output opens in a main-area tab.
        quick_row.locator('button[data-action="logs"]').click()
        logs = page.locator(f"#aiaas-logs-{quick.id}")
        expect(logs.locator(".aiaas-Logs-status")).to_contain_text("succeeded", timeout=WAIT_MS)
        expect(logs.locator(".aiaas-Logs-lines")).not_to_be_empty()
        page.screenshot(path=str(ARTIFACTS / "lab-sidebar-logs.png"))
        html = page.content()

        # A backend URL chosen in Settings that the Jupyter server holds no key for: not connected, and why.
        _set_backend_url(lab, "http://127.0.0.1:9")
        page.reload()
        expect(page.locator(".aiaas-StatusItem")).to_have_text("aiaas: not connected", timeout=WAIT_MS)
        page.locator(".aiaas-StatusItem").click()  # opens the panel (a tab click would toggle the restored one)
        expect(page.locator(".aiaas-Panel-banner")).to_be_visible()
        expect(page.locator(".aiaas-Panel-banner")).to_contain_text(
            "Not connected: no key for http://127.0.0.1:9 on the Jupyter server", timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "lab-sidebar-not-connected.png"))
        browser.close()

    assert client.run(slow.id).status.value == "cancelled"
    assert client.run(quick.id).status.value == "succeeded"
    assert backend.key not in html  # the key stays on the Jupyter server
    for name in ("running", "succeeded", "cancelled", "logs", "not-connected"):
        assert (ARTIFACTS / f"lab-sidebar-{name}.png").stat().st_size > 10_000
