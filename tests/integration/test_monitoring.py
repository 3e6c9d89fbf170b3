"""Deployment events, SLO alerts with a signed webhook, and drift: real server, real replicas,
a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import psutil
import pytest
import torch

import aiaas

from ..conftest import Backend, wait_until
from .models import MonitoredRegressor

SECRET = "test-secret-0123456789"


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 500 to the first delivery, 200 after."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                code = 500 if not receiver.got else 200
                receiver.got.append((dict(self.headers), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("backend"), slots=2, env={"AIAAS_WEBHOOK_BACKOFF_S": "0.3"}).start()
    yield b
    b.close()


@pytest.fixture(scope="module")
def client(backend):
    return backend.client()


@pytest.fixture(scope="module")
def runs(client):
    torch.manual_seed(0)
    started = [client.train(MonitoredRegressor(), max_epochs=1, name=f"monitored-{i}") for i in range(2)]
    return [run.wait() for run in started]  # the backend has two slots: both train at once


def _kinds(dep) -> list[str]:
    return [e.kind for e in dep.events()]


def _load(dep, stop: threading.Event, concurrency: int = 24) -> None:
    x = torch.randn(1, 8)

    async def go() -> None:
        while not stop.is_set():
            await dep.apredict_many([x] * 48, concurrency=concurrency)
        await dep.aclose()

    asyncio.run(go())


def _replica_pids(backend) -> list[int]:
    pids = []
    for child in psutil.Process(backend.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "serving.replica" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:
            pass
    return pids


@pytest.mark.timeout(900)  # two trainings and five replica starts on a small shared machine
def test_changes_and_restarts_are_an_ordered_log_also_streamed(backend, client, runs):
    dep = runs[0].deploy("logged", replicas=1, max_batch_size=8)
    dep.update(runs[1].id)
    dep.rollback()
    dep.scale(2)
    wait_until(lambda: dep.refresh().data.ready_replicas == 2, timeout=180, what="2 replicas")
    assert _kinds(dep) == ["updated", "rolled_back", "scaled"]
    events = dep.events()
    assert [e.seq for e in events] == [1, 2, 3] and all(e.time <= time.time() for e in events)
    assert events[0].data == {"run_id": runs[1].id, "previous_run_id": runs[0].id}
    assert events[2].data["replicas"] == 2 and "replicas 1 -> 2" in events[2].message

    wait_until(lambda: len(_replica_pids(backend)) == 2, timeout=60, what="the old version's replicas to go")
    victim = _replica_pids(backend)[0]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> bool:
        try:  # the router learns of the loss from the next batch sent to that replica
            dep.predict(torch.randn(2, 8))
        except aiaas.AiaasError:
            pass
        return "replica_restarted" in _kinds(dep)

    wait_until(restarted, timeout=60, what="a replica_restarted event")
    assert [e.seq for e in dep.events(after=2)][0] == 3

    # The same log as Server-Sent Events, resumed after Last-Event-ID.
    seen = []
    headers = {"Authorization": f"Bearer {backend.key}", "Accept": "text/event-stream", "Last-Event-ID": "1"}
    with httpx.stream("GET", f"{backend.url}/v1/deployments/logged/events", headers=headers, timeout=30) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["kind"] == "replica_restarted":
                    break
    assert [e["seq"] for e in seen] == [2, 3, 4] and seen[0]["kind"] == "rolled_back"
    bad = httpx.get(f"{backend.url}/v1/deployments/logged/events", headers={**headers, "Last-Event-ID": "x"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]


def _magic_deployments(client) -> str:
    """What ``%aiaas deployments`` prints (the magic's own object, so no global IPython shell is made)."""
    from aiaas_sdk.magics import AiaasMagics

    magics = AiaasMagics(None)
    magics.client = client
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        magics.aiaas("deployments")
    return out.getvalue()


def test_a_latency_breach_raises_and_resolves_an_alert_and_the_webhook_gets_both_signed(backend, client, runs):
    receiver = Receiver()
    try:
        hook = client.set_webhook(receiver.url, SECRET)
        assert hook.secret == SECRET and client.webhook().url == receiver.url and client.webhook().secret is None
        dep = runs[0].deploy("slo", replicas=1, max_batch_size=1, max_wait_ms=0)
        # One request alone takes ~20 ms; 24 at once queue behind each other for ~500 ms.
        rules = dep.set_alerts(p99_ms=200, error_rate=0.5, window_s=4)
        assert rules.rules.p99_ms == 200 and rules.rules.drift is None and rules.firing == []
        dep.predict(torch.randn(1, 8))

        stop = threading.Event()
        loader = threading.Thread(target=_load, args=(dep, stop))
        started = time.monotonic()
        loader.start()
        try:
            wait_until(lambda: "alert_raised" in _kinds(dep), timeout=60, what="alert_raised")
            raised_after = time.monotonic() - started
            assert dep.alerts().firing == ["p99_ms"]
            assert client.deployment("slo").data.alerts_firing == ["p99_ms"]
            assert re.search(r"^slo .* FIRING: p99_ms$", _magic_deployments(client), re.M)
        finally:
            stop.set()
            loader.join()
        wait_until(lambda: "alert_resolved" in _kinds(dep), timeout=60, what="alert_resolved")
        raised, resolved = [e for e in dep.events() if e.kind.startswith("alert_")]
        assert raised.data["rule"] == "p99_ms" and raised.data["value"] > 200 and raised.data["threshold"] == 200
        assert "p99 latency" in raised.message and resolved.time > raised.time
        assert resolved.data["since"] == pytest.approx(raised.time, abs=1.0)
        assert dep.alerts().firing == [] and raised_after < 30

        # Delivered: the first try got 500 and was retried; every body is signed with the secret.
        wait_until(lambda: len(receiver.got) >= 3, timeout=30, what="three webhook deliveries")
        for headers, body, _ in receiver.got:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Aiaas-Signature"], expected)
        (h1, b1, c1), (h2, b2, c2), (_, b3, c3) = receiver.got[:3]
        assert (c1, c2, c3) == (500, 200, 200)
        assert b1 == b2 and h1["X-Aiaas-Delivery"] == h2["X-Aiaas-Delivery"]  # a retry, not a new event
        assert [json.loads(b)["kind"] for b in (b2, b3)] == ["alert_raised", "alert_resolved"]
        assert json.loads(b2)["deployment"] == "slo" and json.loads(b2)["seq"] == raised.seq
    finally:
        receiver.close()
        client.delete_webhook()


def test_bad_alert_rules_and_webhooks_are_refused_with_the_fix(backend, client, runs):
    dep = client.deployment("slo")
    resp = httpx.patch(f"{backend.url}/v1/deployments/slo/alerts", json={"p42_ms": 5},
                       headers={"Authorization": f"Bearer {backend.key}"})
    assert resp.status_code == 400 and "the rules are p99_ms, p95_ms" in resp.json()["detail"]
    with pytest.raises(aiaas.AiaasError, match="error_rate"):
        dep.set_alerts(error_rate=3)
    assert dep.alerts().rules.p99_ms == 200  # nothing changed by the refused requests
    assert dep.set_alerts(p99_ms=None).rules.p99_ms is None  # None removes a rule
    with pytest.raises(aiaas.AiaasError, match="url"):
        client.set_webhook("not a url")
    with pytest.raises(aiaas.NotFound, match="set_webhook"):
        client.webhook()


def test_inputs_shifted_by_two_standard_deviations_raise_the_drift_alert(client, runs):
    dep = runs[0].deploy("drifty", replicas=1, max_batch_size=64, max_wait_ms=0)
    dep.set_alerts(drift=0.2, window_s=5)
    rng = np.random.default_rng(0)

    def send(shift: float, rows: int) -> None:
        xs = [(rng.normal(size=(64, 8)) + shift).astype(np.float32) for _ in range(rows // 64)]
        asyncio.run(_many(dep, xs))

    send(0.0, 4096)
    report = dep.drift()
    assert report.reference and report.sample_size >= 256 and report.score < 0.2
    assert len(report.features) == 8 and all(abs(f.shift_std) < 0.3 for f in report.features)
    wait_until(lambda: dep.alerts().values.get("drift") is not None, timeout=30, what="a drift figure")
    assert dep.alerts().firing == [] and "alert_raised" not in _kinds(dep)

    send(2.0, 8192)
    wait_until(lambda: "alert_raised" in _kinds(dep), timeout=30, what="the drift alert")
    raised = next(e for e in dep.events() if e.kind == "alert_raised")
    assert raised.data["rule"] == "drift" and raised.data["value"] > 0.2
    report = dep.drift()
    assert report.score > 0.2 and min(f.shift_std for f in report.features) > 0.5


async def _many(dep, xs):
    await dep.apredict_many(xs, concurrency=8)
    await dep.aclose()


def test_events_and_firing_alerts_survive_a_server_restart(backend, client):
    before = client.deployment("logged").events()
    drifty = client.deployment("drifty").events()
    assert client.deployment("drifty").alerts().firing == ["drift"]
    backend.stop()
    backend.start(port=backend.port)
    again = backend.client()
    assert again.deployment("logged").events() == before
    # The firing state was kept: after the restart the drift sample is empty (no figure), so
    # the alert raised before it resolves, numbered on from the stored log.
    wait_until(lambda: "alert_resolved" in _kinds(again.deployment("drifty")), timeout=30, what="resolution")
    after = again.deployment("drifty").events()
    assert after[: len(drifty)] == drifty and after[len(drifty)].seq == drifty[-1].seq + 1
