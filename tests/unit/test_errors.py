"""Error translation and retries, against httpx.MockTransport."""

import httpx
import pytest

import aiaas


def _client(handler, **kwargs):
    return aiaas.Client("https://backend.test", "aiaas_key", transport=httpx.MockTransport(handler), **kwargs)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"detail": "bad"}, aiaas.BadRequest),
        (401, {"detail": "unknown API key"}, aiaas.AuthenticationError),
        (404, {"detail": "no run"}, aiaas.NotFound),
        (413, {"detail": "too big"}, aiaas.PayloadTooLarge),
        (422, {"detail": "old python", "code": "incompatible_environment"}, aiaas.IncompatibleEnvironment),
        (422, {"detail": [{"loc": ["query", "limit"], "msg": "too big"}]}, aiaas.BadRequest),
        (500, {"detail": "oops"}, aiaas.ServerError),
    ],
)
def test_statuses_become_sdk_errors_with_the_servers_words(status, body, error):
    with _client(lambda request: httpx.Response(status, json=body)) as client:
        with pytest.raises(error) as raised:
            client.run("run_x")
    assert raised.value.status_code == status
    detail = body["detail"] if isinstance(body["detail"], str) else "query.limit: too big"
    assert detail in str(raised.value)


def test_transport_failures_become_backend_unavailable_after_retries():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ConnectError("refused", request=request)

    with _client(handler) as client:
        client._retry.backoff = 0.001
        with pytest.raises(aiaas.BackendUnavailable, match="could not be reached") as raised:
            client.run("run_x")
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert len(calls) == 4


def test_idempotent_calls_retry_on_503_and_submissions_do_not():
    calls = {"GET": 0, "POST": 0}

    def handler(request):
        calls[request.method] += 1
        if calls[request.method] < 3:
            return httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"id": "run_x", "name": "n", "status": "queued",
                                         "created_at": "2026-01-01T00:00:00"})

    with _client(handler) as client:
        assert client.run("run_x").id == "run_x"
        assert calls["GET"] == 3
        from tests.integration.models import Regressor

        with pytest.raises(aiaas.ServerError):
            client.train(Regressor())
        assert calls["POST"] == 1


def test_a_client_without_a_key_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("AIAAS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("AIAAS_API_KEY", raising=False)
    with aiaas.Client("http://backend.test", transport=httpx.MockTransport(lambda r: httpx.Response(200))) as c:
        with pytest.raises(aiaas.AuthenticationError, match="aiaas keys create"):
            c.runs()


def test_run_failed_carries_the_remote_traceback():
    err = aiaas.RunFailed("run r failed: ValueError: x", run_id="r", traceback="Traceback ...\nValueError: x")
    assert err.run_id == "r" and "Remote traceback" in str(err) and err.traceback.endswith("ValueError: x")
