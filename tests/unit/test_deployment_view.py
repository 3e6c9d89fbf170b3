"""The deployment view's polling thread, against a stand-in deployment: the alerts API when the
SDK has it, nothing when it has not, and a stop on deletion or close. Widgets without a kernel
(ipywidgets keeps their state locally); the real-kernel test is tests/notebooks/test_deployment_view.py."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from aiaas_sdk._errors import NotFound, ServerError
from aiaas_sdk.wire import DeploymentPublic, DeploymentStats
from aiaas_sdk.wire_monitoring import AlertRules, AlertsPublic, DriftReport

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from aiaas_sdk.widgets import DeploymentView  # noqa: E402


def _public(firing: list[str] | None = None) -> DeploymentPublic:
    return DeploymentPublic(id="dep_1", name="digits", status="ready", run_id="run_1", replicas=1, ready_replicas=1,
                            max_batch_size=8, max_wait_ms=5.0, max_queue=100, timeout_s=30.0,
                            created_at="2026-01-01T00:00:00", predict_path="/v1/deployments/digits/predict",
                            alerts_firing=firing or [])


class FakeDeployment:
    """Answers like a Deployment; counts 10 more requests each poll; deleted after ``polls`` polls."""

    def __init__(self, polls: int = 10**9) -> None:
        self.data = _public()
        self.calls = 0
        self.polls = polls
        self.fail_once = True
        self.seen = threading.Event()

    def refresh(self) -> FakeDeployment:
        return self

    def stats(self) -> DeploymentStats:
        self.calls += 1
        if self.calls > self.polls:
            raise NotFound("no deployment 'digits' (HTTP 404)", status_code=404)
        if self.calls == 2 and self.fail_once:
            self.fail_once = False
            raise ServerError("deployment 'digits' is not running (HTTP 503)", status_code=503)
        if self.calls >= 4:
            self.seen.set()
        n = self.calls * 10
        return DeploymentStats(requests=n, errors=0, rejected=1, dropped=0, queue_depth=2, batches=n // 5,
                               mean_batch_rows=5.0, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, ready_replicas=1,
                               batch_sizes={5: n // 5})


class FakeWithAlerts(FakeDeployment):
    def events(self, after: int = 0):
        all_events = [SimpleNamespace(seq=1, time=1.7e9, kind="alert_raised", message="p99 above 50 ms", data={}),
                      SimpleNamespace(seq=2, time=1.7e9 + 5, kind="scaled", message="1 -> 2 replicas", data={})]
        return [e for e in all_events if e.seq > after]

    def refresh(self) -> FakeWithAlerts:
        self.data = _public(["p99_ms"])  # the record names the firing rules, as alerts() does
        return self

    def alerts(self):
        return AlertsPublic(rules=AlertRules(p99_ms=50), firing=["p99_ms"])

    def drift(self):
        return DriftReport(reference=True, sample_size=300, min_sample=256, score=0.42)


class AlertLater(FakeDeployment):
    """An alert is raised from the 3rd poll on and resolved once ``release`` is set; records the
    polls that read alerts() and the poll that first returned the resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.alert_reads: list[int] = []
        self.release = threading.Event()
        self.resolved_at: int | None = None

    def events(self, after: int = 0):
        out = []
        if self.calls >= 3:
            out.append(SimpleNamespace(seq=1, time=1.7e9, kind="alert_raised", message="p99 above 50 ms", data={}))
        if self.release.is_set():
            self.resolved_at = self.resolved_at or self.calls
            out.append(SimpleNamespace(seq=2, time=1.7e9 + 2, kind="alert_resolved", message="p99 back", data={}))
        return [e for e in out if e.seq > after]

    def _firing(self) -> list[str]:
        return ["p99_ms"] if self.calls >= 3 and self.resolved_at is None else []

    def refresh(self) -> AlertLater:
        self.data = _public(self._firing())
        return self

    def alerts(self):
        self.alert_reads.append(self.calls)
        return AlertsPublic(rules=AlertRules(p99_ms=50), firing=self._firing())


def test_view_polls_rates_and_stops_when_the_deployment_is_deleted():
    view = DeploymentView(FakeDeployment(polls=6), interval=0.01)
    assert view.wait(10)
    snap = view.snapshot()
    assert snap["status"] == "deleted" and snap["finished"]
    assert snap["requests"] == 60 and snap["requests_per_s"] is None
    assert len(snap["series"]["requests/s"]) >= 3 and all(y > 0 for _, y in snap["series"]["requests/s"])
    assert snap["events"] == [] and view.events_box.layout.display == "none"  # no alerts API: area hidden
    assert "was deleted" in view.footer.value
    assert "aiaas-dep-requests'><b>60</b>" in view.figures.value
    assert len(view.rate_chart.series["requests/s"]) == len(snap["series"]["requests/s"])


def test_view_shows_events_alerts_and_drift_when_the_sdk_has_them_and_close_stops_it():
    dep = FakeWithAlerts()
    view = DeploymentView(dep, interval=0.01)
    assert dep.seen.wait(10)
    view.close()
    assert view.wait(10)
    calls = dep.calls
    snap = view.snapshot()
    assert snap["alerts_firing"] == ["p99_ms"] and snap["drift"] == 0.42
    assert [e.split(" ", 1)[1] for e in snap["events"]] == ["alert raised: p99 above 50 ms", "scaled: 1 -> 2 replicas"]
    threading.Event().wait(0.1)
    assert dep.calls == calls  # closed: no more polling


def test_an_alert_event_makes_the_view_read_the_firing_alerts_at_once():
    dep = AlertLater()
    view = DeploymentView(dep, interval=0.01)
    deadline = time.monotonic() + 10
    while "Alerts firing" not in view.events_box.value and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "p99_ms" in view.events_box.value and "#d62728" in view.events_box.value
    assert view.events_box.layout.display is None
    dep.release.set()
    while view.snapshot()["alerts_firing"] and time.monotonic() < deadline:
        time.sleep(0.005)
    view.close()
    assert view.wait(10)
    # Read on the first tick, then on the ticks that brought the raised and the resolved event,
    # not ten ticks later.
    assert dep.alert_reads[:3] == [1, 3, dep.resolved_at], (dep.alert_reads, dep.resolved_at)
    assert dep.resolved_at < 11 and "Alerts firing" not in view.events_box.value
    assert view.snapshot()["events"][-1].split(" ", 1)[1] == "alert resolved: p99 back"


def test_a_transient_error_is_shown_and_polling_goes_on():
    dep = FakeDeployment(polls=3)
    view = DeploymentView(dep, interval=0.01)
    assert view.wait(10)
    assert dep.calls == 4 and view.snapshot()["requests"] == 30


def test_a_close_from_the_frontend_stops_polling():
    dep = FakeDeployment()
    view = DeploymentView(dep, interval=0.01)
    assert dep.seen.wait(10)
    view.widget.comm.handle_close({"content": {"data": {}}})  # what ipykernel does on a frontend comm_close
    assert view.wait(10)
    calls = dep.calls
    threading.Event().wait(0.1)
    assert dep.calls == calls


def test_an_interval_that_cannot_work_is_refused_with_the_fix():
    from aiaas_sdk import InvalidInput

    with pytest.raises(InvalidInput, match=r"interval=0.*dep.watch\(interval=1.0"):
        DeploymentView(FakeDeployment(), interval=0)
