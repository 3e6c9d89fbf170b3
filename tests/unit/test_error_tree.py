"""Every failure a user can reach is an ``aiaas.AiaasError`` (as docs/sdk.md promises), raised
before anything is sent when the SDK can tell; the old builtin bases still catch them."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

import aiaas
from aiaas_sdk import config
from aiaas_sdk.wire import DeploymentPublic
from tests.integration.models import Regressor

RUNNING = {"id": "run_x", "name": "n", "status": "running", "created_at": "2026-01-01T00:00:00"}


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def client(sent):
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=RUNNING)

    with aiaas.Client("https://backend.test", "aiaas_key", transport=httpx.MockTransport(handler)) as c:
        yield c


def _deployment(client: aiaas.Client) -> aiaas.Deployment:
    return aiaas.Deployment(client, DeploymentPublic.model_construct(name="digits", run_id="run_x"))


def test_predict_inputs_that_are_neither_numbers_nor_json(client, sent):
    # Strings and dicts are JSON values for a module's decode_request; a Python object is not.
    with pytest.raises(aiaas.InvalidInput, match="tensors, numbers or JSON values") as raised:
        _deployment(client).predict([[object()]])
    assert isinstance(raised.value, ValueError) and sent == []


def test_apredict_many_with_no_concurrency(client, sent):
    with pytest.raises(aiaas.InvalidInput, match="concurrency must be at least 1"):
        asyncio.run(_deployment(client).apredict_many([[1.0]], concurrency=0))
    assert sent == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "ftp://backend.test"}, "must start with http"),
        ({"url": "http://backend.test", "timeout": -1}, "timeout must be positive"),
    ],
)
def test_bad_connection_settings(settings, message):
    with pytest.raises(aiaas.ConfigError, match=message):
        aiaas.Client(api_key="aiaas_key", **settings)


def test_bad_settings_from_the_environment_and_the_config_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AIAAS_TIMEOUT", "soon")
    with pytest.raises(aiaas.ConfigError, match="AIAAS_TIMEOUT"):
        aiaas.Client("http://backend.test", "aiaas_key")
    monkeypatch.delenv("AIAAS_TIMEOUT")
    (tmp_path / "config.toml").write_text("url = http://unquoted\n")
    monkeypatch.setenv("AIAAS_CONFIG", str(tmp_path / "config.toml"))
    with pytest.raises(aiaas.ConfigError, match="not valid TOML"):
        config.resolve()


def test_train_refusals(client, sent):
    with pytest.raises(aiaas.InvalidInput, match="not a LightningModule"):
        client.train(object())
    with pytest.raises(aiaas.InvalidInput, match="'ckpt_path': aiaas manages it"):
        client.train(Regressor(), ckpt_path="last.ckpt")
    with pytest.raises(aiaas.InvalidInput, match="run settings: name"):
        client.train(Regressor(), name="x" * 1000)
    assert sent == []


def test_a_model_that_cannot_be_pickled_says_what_to_do(client, sent):
    model = Regressor()
    model.lock = threading.Lock()
    with pytest.raises(aiaas.InvalidInput, match="cannot be shipped.*lock.*setup\\(\\)"):
        client.train(model)
    assert sent == []


def test_bad_deployment_settings_are_refused_before_sending(client, sent):
    with pytest.raises(aiaas.InvalidInput, match="deployment settings: replicas"):
        client.deploy("run_x", "digits", replicas=0)
    assert sent == []


def test_waiting_too_long(client):
    run = client.run("run_x")
    with pytest.raises(aiaas.WaitTimeout, match="still running") as raised:
        run.wait(timeout=0.05)
    assert isinstance(raised.value, TimeoutError)
