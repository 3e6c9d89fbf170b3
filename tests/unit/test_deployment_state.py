"""The deployment view's state: rates from counters, bounded history, events, alerts, drift, text."""

from types import SimpleNamespace

from aiaas_sdk.widgets import DeploymentState
from aiaas_sdk.wire import DeploymentPublic, DeploymentStats
from aiaas_sdk.wire_monitoring import AlertRules, AlertsPublic, DriftReport


def _stats(requests: int, p99: float | None = 2.0, **kw) -> DeploymentStats:
    fields = dict(requests=requests, errors=0, rejected=0, dropped=0, queue_depth=0, batches=requests // 4,
                  mean_batch_rows=4.0 if requests else None, p50_ms=1.0, p95_ms=1.5, p99_ms=p99, ready_replicas=2,
                  batch_sizes={4: requests // 4})
    return DeploymentStats(**{**fields, **kw})


def _public(**kw) -> DeploymentPublic:
    fields = dict(id="dep_1", name="digits", status="ready", run_id="run_1", replicas=2, ready_replicas=1,
                  max_batch_size=8, max_wait_ms=5.0, max_queue=100, timeout_s=30.0,
                  created_at="2026-01-01T00:00:00", predict_path="/v1/deployments/digits/predict")
    return DeploymentPublic.model_validate({**fields, **kw})


def test_requests_per_second_comes_from_two_samples_and_a_restart_is_no_rate():
    state = DeploymentState("digits")
    assert state.apply_stats(_stats(0), at=100.0).rps is None  # one sample: no rate yet
    assert state.apply_stats(_stats(50), at=100.5).rps == 100.0
    assert state.apply_stats(_stats(10), at=101.5).rps is None  # the counter went down: restarted
    assert state.apply_stats(_stats(40), at=102.5).rps == 30.0
    assert state.series()["requests/s"] == [(0.5, 100.0), (2.5, 30.0)]
    assert [t for t, _ in state.series()["p99 ms"]] == [0.0, 0.5, 1.5, 2.5]


def test_history_is_bounded_by_age_and_by_count():
    by_age = DeploymentState("d", window_s=60, cap=10_000)
    for i in range(1000):
        by_age.apply_stats(_stats(i * 10), at=float(i))
    ts = [s.t for s in by_age.history]
    assert ts[0] == 939.0 and ts[-1] == 999.0 and len(ts) == 61
    by_count = DeploymentState("d", window_s=1e9, cap=50)
    for i in range(1000):
        by_count.apply_stats(_stats(i), at=float(i))
    assert len(by_count.history) == 50 and by_count.history[-1].t == 999.0


def test_figures_and_text_show_every_number_and_the_deployment_record():
    state = DeploymentState.from_public(_public())
    assert "waiting" not in state.summary() and "replicas 1/2" in state.summary()
    state.apply_stats(_stats(100, errors=3, rejected=2, queue_depth=5), at=1.0)
    state.apply_stats(_stats(300, errors=3, rejected=2, queue_depth=5, p99_ms=12.5), at=2.0)
    f = state.figures()
    assert f["requests"] == 300 and f["requests_per_s"] == 200.0 and f["replicas"] == "2/2"
    assert (f["p50_ms"], f["p95_ms"], f["p99_ms"]) == (1.0, 1.5, 12.5)
    assert (f["errors"], f["rejected"], f["queue_depth"], f["mean_batch_rows"]) == (3, 2, 5, 4.0)
    assert f["batch_sizes"] == {4: 75} and f["version"] == "run_1"
    text = state.summary()
    assert "Deployment digits · ready · version run_1 · replicas 2/2" in text
    assert "requests 300 · 200 req/s · errors 3 · rejected 2 · queue 5" in text
    assert "p50 1 ms · p95 1.5 ms · p99 12.5 ms" in text


def test_events_are_kept_once_in_order_and_bounded():
    state = DeploymentState("d", event_lines=3)
    ev = [SimpleNamespace(seq=i, time=1_700_000_000 + i, kind=k, message=f"m{i}", data={})
          for i, k in enumerate(["scaled", "alert_raised", "updated", "rolled_back", "alert_resolved"], start=1)]
    assert [e.seq for e in state.apply_events(ev[:2])] == [1, 2]
    assert [e.seq for e in state.apply_events(list(reversed(ev)))] == [3, 4, 5]  # seen ones skipped, order kept
    assert [e.kind for e in state.events] == ["updated", "rolled_back", "alert_resolved"]
    assert state.last_event_seq == 5
    assert "alert resolved: m5" in state.summary()


def test_alerts_and_drift_are_read_from_the_wire_answers():
    state = DeploymentState.from_public(_public(alerts_firing=["error_rate"]))
    assert state.alerts_firing == ["error_rate"]  # the deployment record says what fires, too
    state.apply_alerts(AlertsPublic(rules=AlertRules(p99_ms=50, error_rate=0.01), firing=["p99_ms"],
                                    since={"p99_ms": 1.7e9}))
    assert state.alerts_firing == ["p99_ms"] and "alerts firing: p99_ms" in state.summary()
    state.apply_alerts(AlertsPublic(rules=AlertRules(p99_ms=50), firing=[]))
    assert state.alerts_firing == [] and "alerts firing" not in state.summary()
    state.apply_drift(DriftReport(reference=True, sample_size=300, min_sample=256, score=0.31))
    assert state.drift_score == 0.31
    state.apply_drift(DriftReport(reference=True, sample_size=10, min_sample=256, score=None))
    assert state.drift_score is None


def test_a_deleted_deployment_says_so():
    state = DeploymentState.from_public(_public())
    state.apply_stats(_stats(10), at=1.0)
    state.mark_deleted()
    assert state.deleted and state.status == "deleted" and state.figures()["replicas"] == "0/2"
