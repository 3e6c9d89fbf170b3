"""The backend's metric names follow Prometheus conventions, checked by promtool when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aiaas_backend.db import make_engine, migrate, session_factory
from aiaas_backend.metrics import Metrics
from aiaas_backend.metrics.collectors import DeploymentFigures, batch_buckets

EXPECTED = {
    "aiaas_predict_latency_seconds": "histogram",
    "aiaas_predict_requests": "counter",
    "aiaas_predict_errors": "counter",
    "aiaas_predict_rejected": "counter",
    "aiaas_http_request_duration_seconds": "histogram",
    "aiaas_event_streams_open": "gauge",
    "aiaas_stream_first_piece_seconds": "histogram",
    "aiaas_stream_pieces": "counter",
    "aiaas_deployment_queue_depth": "gauge",
    "aiaas_deployment_replicas_ready": "gauge",
    "aiaas_deployment_replicas_desired": "gauge",
    "aiaas_deployment_batch_rows": "histogram",
    "aiaas_runs": "gauge",
    "aiaas_run_queue_length": "gauge",
    "aiaas_workers_busy": "gauge",
    "aiaas_worker_slots": "gauge",
}


@pytest.fixture
def rendered(tmp_path: Path) -> str:
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    metrics = Metrics()
    metrics.watch_store(session_factory(engine), slots=2)
    observe = metrics.latency_observer("regressor", "dep_1")
    assert observe is not None
    for seconds in (0.002, 0.004, 0.004, 0.3):
        observe(seconds)
        metrics.predict_done("regressor", "dep_1", 200)
    metrics.predict_done("regressor", "dep_1", 429)
    metrics.predict_done("regressor", "dep_1", 504)
    metrics.stream_started("tiny-lm", "dep_2", 0.012)
    metrics.stream_done("tiny-lm", "dep_2", 40)
    metrics.http_latency.labels("GET", "/v1/runs/{run_id}", "200").observe(0.01)
    metrics.serving.update([DeploymentFigures("regressor", "dep_1", queue_depth=3, replicas_ready=2,
                                              replicas_desired=2, batch_sizes={1: 4, 3: 2, 16: 1}, batch_rows=26)])
    text = generate_latest(metrics.registry).decode()
    engine.dispose()
    return text


def test_every_metric_is_there_with_its_type(rendered: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(rendered)}
    assert {name: families[name].type for name in EXPECTED if name in families} == EXPECTED
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset({"deployment": "regressor", "deployment_id": "dep_1", **labels}.items()))]

    assert value("aiaas_predict_requests_total", code="200") == 4
    assert value("aiaas_predict_rejected_total") == 1
    assert value("aiaas_predict_errors_total", code="504") == 1
    assert value("aiaas_predict_latency_seconds_count") == 4
    assert value("aiaas_deployment_batch_rows_bucket", le="4.0") == 6
    assert value("aiaas_deployment_batch_rows_bucket", le="16.0") == 7
    assert value("aiaas_deployment_batch_rows_sum") == 26
    assert value("aiaas_deployment_queue_depth") == 3
    lm = frozenset({"deployment": "tiny-lm", "deployment_id": "dep_2"}.items())
    assert samples[("aiaas_stream_pieces_total", lm)] == 40
    assert samples[("aiaas_stream_first_piece_seconds_count", lm)] == 1
    assert samples[("aiaas_runs", frozenset({("status", "queued")}))] == 0
    assert samples[("aiaas_worker_slots", frozenset())] == 2
    assert not any(name.endswith("_created") for name, _ in samples)


def test_batch_buckets_are_powers_of_two_up_to_the_largest() -> None:
    assert batch_buckets(1) == [1]
    assert batch_buckets(16) == [1, 2, 4, 8, 16]
    assert batch_buckets(17) == [1, 2, 4, 8, 16, 32]


def test_a_switched_off_registry_records_nothing() -> None:
    metrics = Metrics(enabled=False)
    assert metrics.latency_observer("d", "dep_1") is None
    metrics.predict_done("d", "dep_1", 200)
    assert "aiaas_predict_requests_total{" not in generate_latest(metrics.registry).decode()


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is absent: install Debian's prometheus package (.ci/run does)")
def test_promtool_finds_no_naming_problem(rendered: str) -> None:
    result = subprocess.run(["promtool", "check", "metrics"], input=rendered, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)
