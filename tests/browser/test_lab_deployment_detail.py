"""A deployment's detail in the JupyterLab sidebar, in headless Chromium, against a real backend under load.

The deployment has a p99 rule no request can meet, so the load raises a real alert (evaluated by the
backend's monitor): the row and the detail show it firing, then resolved once the load stops.
The screenshot is the one docs/monitoring.md shows: docs/images/lab-deployment-detail.png.
"""

from __future__ import annotations

import re
import threading

import pytest
import torch

from ..conftest import ROOT
from ..integration.models import Regressor
from .conftest import CHROMIUM, FLAGS, LAB_FLAGS, NO_CHROMIUM, running_jupyter

pytestmark = NO_CHROMIUM

WAIT_MS = 90_000
SCREENSHOT = ROOT / "docs" / "images" / "lab-deployment-detail.png"


@pytest.fixture
def lab(tmp_path, backend):
    root = tmp_path / "lab"
    root.mkdir()
    env = {"AIAAS_URL": backend.url, "AIAAS_API_KEY": backend.key}
    with running_jupyter(tmp_path, "jupyterlab", root, LAB_FLAGS, env=env) as jupyter:
        yield jupyter


def test_a_click_on_a_deployment_shows_its_live_figures_and_charts(lab, backend):
    from playwright.sync_api import expect, sync_playwright

    client = backend.client()
    run = client.train(Regressor(), max_epochs=2, name="detail-model").wait()
    dep = run.deploy("detail-dep", replicas=1, max_wait_ms=2)
    # No answer takes under a microsecond: the load breaches this rule; a 2 s window ends it soon after.
    dep.set_alerts(p99_ms=0.001, window_s=2)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            dep.predict(torch.zeros(3, 8))

    loaders = [threading.Thread(target=load) for _ in range(2)]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"{lab.url}/lab?token={lab.token}")
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell", timeout=WAIT_MS)
        page.locator('.jp-SideBar li[data-id="aiaas-panel"]').click()
        panel = page.locator("#aiaas-panel")
        head = panel.locator('.aiaas-Row-head[data-deployment="detail-dep"]')
        expect(head).to_be_visible(timeout=WAIT_MS)
        detail = panel.locator('.aiaas-Detail[data-detail="detail-dep"]')
        expect(detail).to_have_count(0)

        [t.start() for t in loaders]
        try:
            head.click()
            expect(detail).to_be_visible()
            value = lambda key: detail.locator(f".aiaas-Detail-{key} .aiaas-Detail-value")  # noqa: E731
            expect(value("version")).to_have_text(run.id)
            expect(value("replicas")).to_have_text("1/1")
            expect(value("requests")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
            expect(value("rate")).to_have_text(re.compile(r"^(?!0$)[\d.e+-]+$"), timeout=WAIT_MS)
            for key in ("p50", "p95", "p99"):
                expect(value(key)).to_have_text(re.compile(r"^[\d.e+-]+ ms$"))
            expect(value("errors")).to_have_text("0")
            expect(value("rejected")).to_have_text("0")
            expect(value("batch")).to_have_text(re.compile(r"^[\d.]+ rows \(.*\d×\d+.*\)$"))
            # Both charts fill as the sidebar polls (every 2 s while shown).
            for chart in ("rateChart", "p99Chart"):
                expect(detail.locator(f".aiaas-Detail-{chart} svg")).to_have_attribute(
                    "data-points", re.compile(r"^([4-9]|\d\d+)$"), timeout=WAIT_MS)
            # The breach: firing on the row and first in the detail, and its event in the log.
            expect(detail.locator(".aiaas-Detail-alerts")).to_have_text("alert: p99 latency", timeout=WAIT_MS)
            expect(panel.locator(".aiaas-Row-alerts")).to_have_text("alert: p99 latency")
            expect(detail.locator(".aiaas-Detail-events .aiaas-Detail-label")).to_have_text("Events")
            expect(detail.locator(".aiaas-Event-alert_raised")).to_contain_text(
                "alert raised: detail-dep: p99 latency", timeout=WAIT_MS)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            stop.set()
            [t.join(timeout=60) for t in loaders if t.is_alive() or t.ident]

        # Refreshed: once the load stops, the detail catches up with the backend's own count.
        total = dep.stats().requests
        expect(value("requests")).to_have_text(str(total), timeout=WAIT_MS)
        # No requests in the window: the alert resolves, and the sidebar says so.
        expect(detail.locator(".aiaas-Event-alert_resolved")).to_contain_text("alert resolved", timeout=WAIT_MS)
        expect(detail.locator(".aiaas-Detail-alerts")).to_have_count(0)
        expect(panel.locator(".aiaas-Row-alerts")).to_have_count(0)

        head.click()  # a second click closes it
        expect(detail).to_have_count(0)
        browser.close()

    assert SCREENSHOT.stat().st_size > 10_000
    dep.delete()
