"""The event stream: ordered, persisted, resumable with Last-Event-ID, nothing lost or twice."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

import aiaas

from ..conftest import wait_until
from .models import ChattyModule, Regressor


def _persisted(run: aiaas.Run) -> list[aiaas.RunEvent]:
    """The whole log, read again from the start once the run has ended."""
    return list(run.events())


def _check_complete(events: list[aiaas.RunEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_events_are_the_runs_full_ordered_history(client):
    run = client.train(Regressor(), max_epochs=2, name="events")
    live = list(run.events())  # follows the run live until it ends
    _check_complete(live)
    assert [e.data["status"] for e in live if e.kind == "status"] == ["queued", "running", "succeeded"]
    assert live[-1].kind == "status"
    metrics = [e for e in live if e.kind == "metric"]
    assert [(e.seq, e.data["name"], e.data["value"]) for e in metrics] == [
        (p.seq, p.name, p.value) for p in run.metrics()
    ]
    assert "\n".join(e.data["line"] for e in live if e.kind == "log") == run.logs()
    assert _persisted(run) == live
    assert list(run.events(after=live[5].seq)) == live[6:]


def _read_raw(url: str, key: str, run_id: str, last_event_id: int | None, stop_after: int | None):
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    seqs = []
    with httpx.stream("GET", f"{url}/v1/runs/{run_id}/events", headers=headers, timeout=60) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
                if stop_after is not None and len(seqs) >= stop_after:
                    break  # drop the connection mid-run
    return seqs


def test_reconnecting_with_last_event_id_gets_exactly_what_was_missed(backend, client):
    run = client.train(Regressor(step_sleep=0.01), max_epochs=4, name="resume")
    first = _read_raw(backend.url, backend.key, run.id, None, stop_after=20)
    assert run.status is aiaas.RunStatus.running  # dropped while the run was live
    rest = _read_raw(backend.url, backend.key, run.id, first[-1], stop_after=None)
    assert first + rest == [e.seq for e in _persisted(run)]
    assert len(set(first + rest)) == len(first + rest)


def test_sdk_stream_survives_a_server_restart(make_backend):
    backend = make_backend()
    client = backend.client()
    run = client.train(Regressor(step_sleep=0.02), max_epochs=4, name="restart")
    seen: list[aiaas.RunEvent] = []
    reader = threading.Thread(target=lambda: seen.extend(run.events()))
    reader.start()
    wait_until(lambda: len(seen) > 10, what="first events")
    backend.stop()
    backend.start(port=backend.port)
    reader.join(timeout=120)
    assert not reader.is_alive()
    assert seen[-1].kind == "status" and seen[-1].data["status"] == "succeeded"
    _check_complete(seen)
    assert seen == _persisted(backend.client().run(run.id))


def test_heartbeats_keep_a_quiet_stream_alive(make_backend):
    backend = make_backend(slots=1)
    client = backend.client()
    blocker = client.train(Regressor(step_sleep=0.05), max_epochs=100, name="blocker")
    queued = client.train(Regressor(), max_epochs=1, name="waiting")
    lines = []
    with httpx.stream("GET", f"{backend.url}/v1/runs/{queued.id}/events", params={"heartbeat": 0.2},
                      headers={"Authorization": f"Bearer {backend.key}"}, timeout=30) as resp:
        for line in resp.iter_lines():
            lines.append(line)
            if lines.count(": keep-alive") >= 3:
                break
    assert any(line.startswith("id: 1") for line in lines)
    blocker.cancel()
    queued.cancel()


def test_bad_requests_for_events(backend, client):
    run = client.train(Regressor(), max_epochs=1, name="events-bad").wait()
    other = backend.new_key("mallory")
    resp = httpx.get(f"{backend.url}/v1/runs/{run.id}/events", headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 404
    resp = httpx.get(f"{backend.url}/v1/runs/{run.id}/events",
                     headers={"Authorization": f"Bearer {backend.key}", "Last-Event-ID": "yesterday"})
    assert resp.status_code == 400 and "Last-Event-ID" in resp.json()["detail"]
    with aiaas.Client(backend.url, other) as mallory:
        with pytest.raises(aiaas.NotFound):
            list(aiaas.Run(mallory, run.data).events())


def test_async_events(backend, client):
    run = client.train(Regressor(), max_epochs=1, name="aevents")

    async def collect():
        return [e async for e in run.aevents()]

    events = asyncio.run(collect())
    _check_complete(events)
    assert events == _persisted(run)


def test_a_run_logging_100k_points_persists_every_one(client):
    run = client.train(ChattyModule(steps=10_000, metrics_per_step=10), max_epochs=1, name="chatty")
    run.wait(timeout=240)
    points = run.metrics()
    assert len(points) == 100_000
    by_name = {}
    for p in points:
        by_name.setdefault(p.name, []).append((p.step, p.value))
    assert sorted(by_name) == [f"m{i:02d}" for i in range(10)]
    assert by_name["m03"] == [(step, float(step + 3)) for step in range(10_000)]
    _check_complete(list(run.events()))
    assert json.loads(json.dumps(run.final_metrics))["m09"] == 9999 + 9
