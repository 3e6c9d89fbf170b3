"""GET /metrics scraped by a real Prometheus while a deployment serves load; scrape-only keys."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import ROOT, Backend, stop_process, wait_until
from .models import Regressor

DEPLOYMENT = "metered"


@pytest.fixture(scope="module")
def deployment(client):
    torch.manual_seed(0)
    run = client.train(Regressor(), max_epochs=1, name="metrics").wait()
    dep = run.deploy(DEPLOYMENT, replicas=1, max_batch_size=16, max_wait_ms=2)
    yield dep
    dep.delete()


def scrape_key(backend: Backend, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "aiaas_backend", "keys", "create", "--scrape", "--name", name,
         "--data-dir", str(backend.data_dir)],
        capture_output=True, text=True, env=backend.env, check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's prometheus binary on 127.0.0.1, scraping one target every second (never its system service)."""

    def __init__(self, workdir: Path, target: str, key: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: aiaas\n    metrics_path: /metrics\n"
            f"    authorization:\n      type: Bearer\n      credentials: {key}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={self.url[7:]}"],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(f"{self.url}/-/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=60, what="prometheus ready")

    def query(self, promql: str, at: float | None = None) -> float | None:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        body = httpx.get(f"{self.url}/api/v1/query", params=params).json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def prometheus(backend: Backend, tmp_path: Path) -> Iterator[Prometheus]:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus package is not installed (apt-get install prometheus; .ci/run does)")
    prom = Prometheus(tmp_path / "prometheus", backend.url.split("//", 1)[1], scrape_key(backend, "prometheus"))
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop()


def _load(dep, seconds: float, concurrency: int, pause: float = 0.0) -> list[float]:
    """Closed-loop predict calls for ``seconds``, each caller resting ``pause`` s between its
    calls; returns the wall-clock time each answer came."""
    done: list[float] = []
    x = torch.randn(2, 8)

    async def worker(stop: float) -> None:
        while time.time() < stop:
            await dep.apredict(x)
            done.append(time.time())
            if pause:
                await asyncio.sleep(pause)

    async def main() -> None:
        stop = time.time() + seconds
        await asyncio.gather(*(worker(stop) for _ in range(concurrency)))
        await dep.aclose()

    asyncio.run(main())
    return done


def within(measured: float | None, expected: float, tolerance: float = 0.10) -> bool:
    return measured is not None and abs(measured - expected) <= tolerance * expected


def test_a_real_prometheus_agrees_with_the_sdk(backend, deployment, prometheus) -> None:
    selector = f'deployment="{DEPLOYMENT}"'
    wait_until(lambda: prometheus.query('up{job="aiaas"}') == 1.0, timeout=30, what="a successful scrape")
    # The quantiles below compare all requests with dep.stats()' window of the last 10,000: the
    # callers rest between calls so that a fast machine cannot exceed it (at most 8 x 8 s / 8 ms).
    done = _load(deployment, seconds=8.0, concurrency=8, pause=0.008)
    stats = deployment.stats()
    assert stats.errors == 0 and stats.requests == len(done)
    assert stats.requests < 10_000, "more requests than dep.stats() keeps latencies of: the quantiles would differ"

    # A scrape after the last answer: Prometheus then holds every request.
    total_query = f"sum(aiaas_predict_requests_total{{{selector},code=\"200\"}})"
    wait_until(lambda: prometheus.query(total_query) == stats.requests, timeout=15,
               what="a scrape that has every request")

    # rate() over 5 s, ending 1 s before the load stopped (steady state), against the answers the client got.
    end = done[-1] - 1.0
    client_rate = sum(1 for t in done if end - 5.0 < t <= end) / 5.0
    prom_rate = prometheus.query(f"sum(rate(aiaas_predict_requests_total{{{selector}}}[5s]))", at=end)
    assert within(prom_rate, client_rate), (prom_rate, client_rate)

    # Quantiles over all requests so far: the same samples as dep.stats() (fewer than its 10,000 window).
    for q, sdk_ms in ((0.5, stats.p50_ms), (0.99, stats.p99_ms)):
        promql = f"histogram_quantile({q}, sum by (le) (aiaas_predict_latency_seconds_bucket{{{selector}}}))"
        prom_ms = 1000 * (prometheus.query(promql) or 0.0)
        assert within(prom_ms, sdk_ms), (q, prom_ms, sdk_ms)

    batches = prometheus.query(f"sum(aiaas_deployment_batch_rows_count{{{selector}}})")
    assert batches == stats.batches
    assert prometheus.query(f"sum(aiaas_deployment_replicas_ready{{{selector}}})") == stats.ready_replicas == 1
    assert prometheus.query('aiaas_runs{status="succeeded"}') >= 1
    # API latency is labelled by the route's template, never the raw path.
    routes = httpx.get(f"{prometheus.url}/api/v1/label/route/values").json()["data"]
    assert "/v1/deployments/{name}/predict" in routes and f"/v1/deployments/{DEPLOYMENT}/predict" not in routes

    # Every query of the Grafana dashboard in docs/ runs, and those about serving find data.
    dashboard = json.loads((ROOT / "docs" / "grafana-aiaas.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            promql = target["expr"].replace("$deployment", DEPLOYMENT).replace("$__rate_interval", "10s")
            value = prometheus.query(promql, at=end)
            found = any(m in promql for m in ("aiaas_predict_requests", "replicas", "aiaas_runs", "latency"))
            if found and "errors" not in promql:  # no request failed: the error series do not exist
                assert value is not None, (panel["title"], promql)


def test_a_scrape_key_reads_metrics_and_nothing_else(backend, deployment) -> None:
    key = scrape_key(backend, "scraper")
    scrape = {"Authorization": f"Bearer {key}"}
    deployment.predict(torch.randn(1, 8))
    response = httpx.get(f"{backend.url}/metrics", headers=scrape)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert {"aiaas_predict_latency_seconds", "aiaas_predict_requests", "aiaas_runs", "aiaas_event_streams_open",
            "aiaas_http_request_duration_seconds", "aiaas_deployment_queue_depth"} <= names

    refused = [
        httpx.post(f"{backend.url}/v1/deployments/{DEPLOYMENT}/predict", json={"inputs": [[0.0] * 8]}, headers=scrape),
        httpx.get(f"{backend.url}/v1/deployments/{DEPLOYMENT}", headers=scrape),
        httpx.get(f"{backend.url}/v1/deployments/{DEPLOYMENT}/stats", headers=scrape),
        httpx.get(f"{backend.url}/v1/runs", headers=scrape),
    ]
    for r in refused:
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "scrape_key_only" and "scrape-only" in r.json()["detail"]

    user = httpx.get(f"{backend.url}/metrics", headers={"Authorization": f"Bearer {backend.key}"})
    assert user.status_code == 403 and "--scrape" in user.json()["detail"]
    anonymous = httpx.get(f"{backend.url}/metrics")
    assert anonymous.status_code == 401 and "--scrape" in anonymous.json()["detail"]
    again = subprocess.run(
        [sys.executable, "-m", "aiaas_backend", "keys", "create", "--scrape", "--name", "scraper",
         "--data-dir", str(backend.data_dir)], capture_output=True, text=True, env=backend.env)
    assert again.returncode == 2 and "exists" in again.stderr
    neither = subprocess.run([sys.executable, "-m", "aiaas_backend", "keys", "create", "--data-dir",
                              str(backend.data_dir)], capture_output=True, text=True, env=backend.env)
    assert neither.returncode == 2 and "--scrape --name NAME" in neither.stderr


def test_loopback_reads_metrics_without_a_key_only_when_configured(make_backend) -> None:
    opened = make_backend(name="loopback", trains=False, AIAAS_METRICS_LOOPBACK="true")
    response = httpx.get(f"{opened.url}/metrics")
    assert response.status_code == 200 and "aiaas_worker_slots 1.0" in response.text
    off = make_backend(name="off", trains=False, AIAAS_METRICS="false")
    refused = httpx.get(f"{off.url}/metrics")
    assert refused.status_code == 404 and "AIAAS_METRICS" in refused.json()["detail"]


def test_open_event_streams_and_busy_workers_are_counted(backend, client) -> None:
    key = scrape_key(backend, "gauges")

    def gauges() -> dict[str, float]:
        text = httpx.get(f"{backend.url}/metrics", headers={"Authorization": f"Bearer {key}"}).text
        return {s.name + str(sorted(s.labels.values())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples if not s.labels or "status" in s.labels}

    run = client.train(Regressor(step_sleep=0.2), max_epochs=20, name="slow-for-gauges")
    try:
        wait_until(lambda: gauges()["aiaas_workers_busy[]"] >= 1, timeout=120, what="a busy worker")
        headers = {"Authorization": f"Bearer {backend.key}"}
        with httpx.stream("GET", f"{backend.url}/v1/runs/{run.id}/events", headers=headers, timeout=30) as stream:
            chunks = stream.iter_bytes()  # kept: a discarded iterator would close the connection
            next(chunks)  # the stream is open
            now = gauges()
            assert now["aiaas_event_streams_open[]"] == 1
            assert now["aiaas_runs['running']"] >= 1
    finally:
        run.cancel()
    wait_until(lambda: gauges()["aiaas_event_streams_open[]"] == 0, timeout=30, what="the stream counted closed")
