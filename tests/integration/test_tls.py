"""TLS: the server on HTTPS with a certificate from a CA made here; the SDK verifies it with
the CA bundle setting, refuses it clearly without, and workers still reach the API (over the
data dir's Unix socket, which stays plain)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

import aiaas

from ..tls_server import TlsBackend
from .models import Regressor


@pytest.fixture(scope="module")
def tls_backend(tmp_path_factory) -> Iterator[TlsBackend]:
    backend = TlsBackend(tmp_path_factory.mktemp("tls") / "backend").start()
    yield backend
    backend.close()


def test_the_sdk_trains_over_https_with_the_ca_bundle(tls_backend, monkeypatch):
    assert tls_backend.url.startswith("https://127.0.0.1:")
    with aiaas.Client(tls_backend.url, tls_backend.key, ca_bundle=tls_backend.ca) as client:
        run = client.train(Regressor(), max_epochs=1, name="over-tls").wait()
        assert run.status is aiaas.RunStatus.succeeded and len(run.metrics()) > 0
    # The same through the environment, and from the async client (aiohttp transport).
    monkeypatch.setenv("AIAAS_CA_BUNDLE", str(tls_backend.ca))

    async def listed() -> list[str]:
        async with aiaas.AsyncClient(tls_backend.url, tls_backend.key) as aclient:
            return [r.id for r in await aclient.runs()]

    assert run.id in asyncio.run(listed())


def test_without_the_ca_the_sdk_refuses_the_certificate_clearly(tls_backend):
    with aiaas.Client(tls_backend.url, tls_backend.key) as client:
        with pytest.raises(aiaas.BackendUnavailable, match="does not trust") as refused:
            client.runs()
    assert "ca_bundle=" in str(refused.value) and "AIAAS_CA_BUNDLE" in str(refused.value)
    assert refused.value.code == "certificate_not_trusted"
    # And plain HTTP on the TLS port gets nowhere.
    with pytest.raises(httpx.HTTPError):
        httpx.get(tls_backend.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_the_servers_unix_socket_stays_plain_for_sandboxed_workers(tls_backend):
    socket_path = tls_backend.data_dir / "api" / "api.sock"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as http:
        assert http.get("http://aiaas/healthz").status_code == 200
