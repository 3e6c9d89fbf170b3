"""The Jupyter server extension: authenticated, same-origin, the key stays on the server."""

from __future__ import annotations

import json

import httpx
import pytest
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
        for path in ("aiaas/status", "aiaas/api/runs"):
            resp = await http.get(f"http://127.0.0.1:{jp_http_port}{jp_base_url}{path}")
            assert resp.status_code == 403, path
            assert "aiaas_secret" not in resp.text


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
