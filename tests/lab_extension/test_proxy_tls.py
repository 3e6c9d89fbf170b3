"""The JupyterLab proxy protects its key like the SDK: no clear text to another machine, and
certificates verified against the configured CA bundle."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import tornado.httpclient

from ..tls_server import TlsBackend


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"aiaas_lab": True}}}


@pytest.fixture(scope="module")
def tls_backend(tmp_path_factory) -> Iterator[TlsBackend]:
    backend = TlsBackend(tmp_path_factory.mktemp("lab-tls") / "backend", warm=False).start()
    yield backend
    backend.close()


async def _get(jp_fetch, *path: str) -> tuple[int, dict]:
    try:
        resp = await jp_fetch("aiaas", *path)
    except tornado.httpclient.HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)
    return resp.code, json.loads(resp.body)


@pytest.fixture
def sent(monkeypatch) -> list[httpx.Request]:
    """Requests the proxy sends anywhere, answered 401 without any network."""
    requests: list[httpx.Request] = []

    async def send(self, request, **kwargs):
        requests.append(request)
        return httpx.Response(401, request=request)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    for var in ("AIAAS_ALLOW_INSECURE", "AIAAS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    return requests


async def test_no_key_in_clear_text_to_another_machine(jp_fetch, monkeypatch, sent):
    monkeypatch.setenv("AIAAS_URL", "http://10.0.0.5:8765")
    monkeypatch.setenv("AIAAS_API_KEY", "aiaas_secret")
    for path in (("status",), ("overview",), ("api", "runs")):
        code, body = await _get(jp_fetch, *path)
        assert code == 503 and body["reason"] == "insecure_url", body
        assert "plain http://" in body["error"] and "AIAAS_ALLOW_INSECURE" in body["error"]
        assert "aiaas_secret" not in json.dumps(body)
    assert sent == []
    # The opt-in lets it through (to a backend that, here, refuses the key).
    monkeypatch.setenv("AIAAS_ALLOW_INSECURE", "1")
    code, body = await _get(jp_fetch, "status")
    assert code == 503 and body["reason"] == "key_refused"
    assert [str(r.url) for r in sent] == ["http://10.0.0.5:8765/v1/runs?limit=1000"]


async def test_loopback_http_is_allowed(jp_fetch, monkeypatch, sent):
    monkeypatch.setenv("AIAAS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AIAAS_API_KEY", "aiaas_secret")
    code, body = await _get(jp_fetch, "status")
    assert body["reason"] == "key_refused" and len(sent) == 1


async def test_the_proxy_verifies_the_backends_certificate(jp_fetch, monkeypatch, tls_backend):
    monkeypatch.setenv("AIAAS_URL", tls_backend.url)
    monkeypatch.setenv("AIAAS_API_KEY", tls_backend.key)
    monkeypatch.delenv("AIAAS_CA_BUNDLE", raising=False)
    code, body = await _get(jp_fetch, "status")
    assert code == 503 and body["reason"] == "certificate_not_trusted" and "AIAAS_CA_BUNDLE" in body["error"]
    monkeypatch.setenv("AIAAS_CA_BUNDLE", str(tls_backend.ca))
    code, body = await _get(jp_fetch, "status")
    assert code == 200 and body["connected"] is True and body["url"] == tls_backend.url
