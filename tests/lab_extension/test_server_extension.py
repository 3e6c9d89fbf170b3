"""The Jupyter server extension: authenticated, same-origin, the key stays on the server and
goes only to the backend it is configured for."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

import httpx
import pytest
import torch
import tornado.httpclient

import aiaas

from ..conftest import wait_until
from ..integration.models import Regressor


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"aiaas_lab": True}}}


async def _status(jp_fetch) -> tuple[int, dict]:
    try:
        resp = await jp_fetch("aiaas", "status")
    except tornado.httpclient.HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)
    return resp.code, json.loads(resp.body)


async def test_requests_without_jupyter_auth_are_refused(jp_fetch, jp_base_url, jp_http_port, monkeypatch):
    monkeypatch.setenv("AIAAS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AIAAS_API_KEY", "aiaas_secret")
    async with httpx.AsyncClient() as http:
        for path in ("aiaas/status", "aiaas/overview", "aiaas/api/runs", "aiaas/api/runs/run_x/logs"):
            resp = await http.get(f"http://127.0.0.1:{jp_http_port}{jp_base_url}{path}")
            assert resp.status_code == 403, path
            assert "aiaas_secret" not in resp.text
        # A write with neither Jupyter's auth nor its XSRF token is refused too.
        resp = await http.post(f"http://127.0.0.1:{jp_http_port}{jp_base_url}aiaas/api/runs/run_x/cancel")
        assert resp.status_code == 403 and "aiaas_secret" not in resp.text


async def test_a_backend_that_is_down_is_a_clear_not_connected(jp_fetch, monkeypatch):
    monkeypatch.setenv("AIAAS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AIAAS_API_KEY", "aiaas_secret")
    code, body = await _status(jp_fetch)
    assert code == 503 and body["connected"] is False
    assert "could not be reached" in body["error"] and "aiaas server" in body["error"]
    assert "aiaas_secret" not in json.dumps(body)
    monkeypatch.delenv("AIAAS_API_KEY")
    code, body = await _status(jp_fetch)
    assert code == 503 and "no aiaas API key" in body["error"]


async def test_proxy_reads_runs_and_cancels_with_the_servers_key(jp_fetch, backend, monkeypatch):
    monkeypatch.setenv("AIAAS_URL", backend.url)
    monkeypatch.setenv("AIAAS_API_KEY", backend.key)
    client = backend.client()
    slow = client.train(Regressor(step_sleep=0.05), max_epochs=100, name="from-the-panel")
    code, body = await _status(jp_fetch)
    assert code == 200 and body == {"connected": True, "url": backend.url, "active_runs": 1}

    resp = await jp_fetch("aiaas", "api", "runs")
    listed = json.loads(resp.body)
    assert [r["id"] for r in listed["data"]] == [r.id for r in client.runs()]
    assert backend.key not in resp.body.decode()

    resp = await jp_fetch("aiaas", "api", "runs", slow.id, "cancel", method="POST", body="")
    assert json.loads(resp.body)["cancel_requested"] is True
    wait_until(lambda: client.run(slow.id).status is aiaas.RunStatus.cancelled, timeout=60, what="cancelled")

    for path, method in ((("worker", "runs", slow.id, "events"), "POST"), (("runs", slow.id, "checkpoint"), "POST"),
                         (("..", "healthz"), "GET")):
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await jp_fetch("aiaas", "api", *path, method=method, body="" if method == "POST" else None)
        assert refused.value.code == 404


async def test_overview_shows_progress_loss_logs_and_deployment_traffic(jp_fetch, backend, monkeypatch):
    monkeypatch.setenv("AIAAS_URL", backend.url)
    monkeypatch.setenv("AIAAS_API_KEY", backend.key)
    client = backend.client()
    done = client.train(Regressor(), max_epochs=1, name="panel-done").wait()
    dep = done.deploy("panel-dep", replicas=1)
    try:
        for _ in range(3):
            dep.predict(torch.zeros(2, 8))
        slow = client.train(Regressor(step_sleep=0.05), max_epochs=100, name="panel-live")

        async def overview() -> dict:
            return json.loads((await jp_fetch("aiaas", "overview")).body)

        deadline = time.monotonic() + 60
        while True:
            body = await overview()
            live = next(r for r in body["runs"] if r["id"] == slow.id)
            if live["progress"] and "train_loss" in live["latest_metrics"]:
                break
            assert time.monotonic() < deadline, live
            await asyncio.sleep(0.1)
        assert live["status"] == "running" and live["progress"]["total_steps"] == 800
        assert body["connected"] is True and body["active_runs"] == 1 and body["runs_total"] >= 2
        finished = next(r for r in body["runs"] if r["id"] == done.id)
        assert finished["progress"] is None and "train_loss" in finished["final_metrics"]
        (shown,) = [d for d in body["deployments"] if d["name"] == "panel-dep"]
        assert shown["run_id"] == done.id and shown["replicas"] == 1 and shown["stats"]["requests"] == 3
        assert backend.key not in json.dumps(body)

        logs = json.loads((await jp_fetch("aiaas", "api", "runs", done.id, "logs", params={"after": 0})).body)
        assert logs["data"] and all("line" in entry for entry in logs["data"])
        slow.cancel()
    finally:
        dep.delete()


@pytest.fixture
def bystander():
    """An HTTP server that records every request it gets: a host the Jupyter server must never call."""
    seen: list[tuple[str, str, str | None]] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": [], "count": 0}')

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


async def _answer(jp_fetch, *path: str, backend_url: str, method: str = "GET") -> tuple[int, dict]:
    try:
        resp = await jp_fetch(*path, method=method, body="" if method == "POST" else None,
                              headers={"X-Aiaas-Backend": backend_url})
    except tornado.httpclient.HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)
    return resp.code, json.loads(resp.body)


async def test_a_url_the_server_holds_no_key_for_is_never_contacted(jp_fetch, backend, bystander, monkeypatch):
    monkeypatch.setenv("AIAAS_URL", backend.url)
    monkeypatch.setenv("AIAAS_API_KEY", backend.key)
    other, seen = bystander
    good = backend.url.removeprefix("http://")
    for chosen in (other, f"{other}/", f"http://{good}@{other.removeprefix('http://')}",
                   f"http://{good}.example.com", f"{backend.url}?x=1", f"ftp://{good}", "not a url"):
        for path, method in ((("aiaas", "status"), "GET"), (("aiaas", "overview"), "GET"),
                             (("aiaas", "api", "runs"), "GET"), (("aiaas", "api", "runs", "run_x", "cancel"), "POST")):
            code, body = await _answer(jp_fetch, *path, backend_url=chosen, method=method)
            assert code == 503 and body["connected"] is False, (chosen, path, body)
            assert body["reason"] in ("no_key_for_url", "bad_url"), body
            assert "Settings > aiaas" in body["error"], body
            assert backend.key not in json.dumps(body)
    assert seen == []
    code, body = await _answer(jp_fetch, "aiaas", "status", backend_url=other)
    assert body["reason"] == "no_key_for_url"
    assert body["error"].startswith(f"no key for {other} on the Jupyter server: it holds a key for {backend.url} only")


async def test_the_configured_url_in_another_spelling_connects(jp_fetch, backend, monkeypatch):
    monkeypatch.setenv("AIAAS_URL", backend.url)
    monkeypatch.setenv("AIAAS_API_KEY", backend.key)
    spelled = backend.url.replace("127.0.0.1", "127.0.0.1".upper()) + "/"
    code, body = await _answer(jp_fetch, "aiaas", "status", backend_url=f"  {spelled}")
    assert code == 200 and body["connected"] is True and body["url"] == backend.url


async def test_a_refused_key_and_bad_settings_are_reasons_not_tracebacks(jp_fetch, backend, monkeypatch, tmp_path):
    monkeypatch.setenv("AIAAS_URL", backend.url)
    monkeypatch.setenv("AIAAS_API_KEY", "aiaas_not_a_real_key")
    code, body = await _answer(jp_fetch, "aiaas", "overview", backend_url="")
    assert code == 503 and body["reason"] == "key_refused" and "refused" in body["error"]
    monkeypatch.setenv("AIAAS_URL", "127.0.0.1:8765")
    code, body = await _answer(jp_fetch, "aiaas", "overview", backend_url="")
    assert code == 503 and body["reason"] == "bad_settings" and "http://" in body["error"]
