"""Every bad input gets a clear 4xx (or a failed run that says why); nothing else is touched."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

import aiaas
from aiaas_sdk import packaging

from .models import Regressor


@pytest.fixture(scope="module")
def good_run(client):
    """A finished run whose data must survive every bad request below."""
    run = client.train(Regressor(), max_epochs=1, name="survivor").wait()
    return run, len(run.metrics()), run.final_metrics


@pytest.fixture
def http(backend):
    with httpx.Client(base_url=backend.url, headers={"Authorization": f"Bearer {backend.key}"}) as c:
        yield c


@pytest.fixture(autouse=True)
def still_serving(good_run, client):
    yield
    run, n_metrics, final = good_run
    again = client.run(run.id)
    assert again.status is aiaas.RunStatus.succeeded
    assert len(again.metrics()) == n_metrics and again.final_metrics == final


def _payload(model=None, **manifest_changes) -> bytes:
    blob = packaging.pack({"model": model or Regressor(), "datamodule": None, "train_dataloaders": None,
                           "val_dataloaders": None, "trainer_kwargs": {}}, lightning_package="lightning")
    if not manifest_changes:
        return blob
    head_len = int.from_bytes(blob[len(packaging.MAGIC):len(packaging.MAGIC) + 4], "big")
    start = len(packaging.MAGIC) + 4
    manifest = json.loads(blob[start:start + head_len])
    manifest.update(manifest_changes)
    head = json.dumps(manifest).encode()
    return packaging.MAGIC + len(head).to_bytes(4, "big") + head + blob[start + head_len:]


def _submit(http, blob: bytes, spec: dict | None = None) -> httpx.Response:
    return http.post("/v1/runs", data={"spec": json.dumps(spec or {})},
                     files={"payload": ("p.bin", blob, "application/octet-stream")})


def test_missing_and_wrong_api_key_get_401(backend):
    for headers in ({}, {"Authorization": "Bearer aiaas_not-a-key"}, {"Authorization": "Basic abc"}):
        resp = httpx.get(backend.url + "/v1/runs", headers=headers)
        assert resp.status_code == 401
        assert "key" in resp.json()["detail"].lower() or "Bearer" in resp.json()["detail"]
    with aiaas.Client(backend.url, "aiaas_wrong") as wrong:
        with pytest.raises(aiaas.AuthenticationError, match="aiaas keys create"):
            wrong.runs()


def test_unknown_run_id_gets_404(client, http):
    resp = http.get("/v1/runs/run_doesnotexist")
    assert resp.status_code == 404 and "run_doesnotexist" in resp.json()["detail"]
    with pytest.raises(aiaas.NotFound, match="run_nope"):
        client.run("run_nope")


def test_garbage_and_truncated_payloads_get_400(http):
    resp = _submit(http, b"\x80\x04 definitely not a payload")
    assert resp.status_code == 400 and "not an aiaas payload" in resp.json()["detail"]
    blob = _payload()
    resp = _submit(http, blob[: len(blob) - 100])
    assert resp.status_code == 400 and "truncated" in resp.json()["detail"]
    tampered = bytearray(blob)
    tampered[-5] ^= 0xFF
    resp = _submit(http, bytes(tampered))
    assert resp.status_code == 400 and "SHA-256" in resp.json()["detail"]
    resp = _submit(http, blob, spec={"name": "x", "unknown_field": 1})
    assert resp.status_code == 400 and "unknown_field" in resp.json()["detail"]


def test_payload_over_the_limit_gets_413(make_backend):
    small = make_backend(name="small-limit", AIAAS_MAX_UPLOAD_BYTES="200000")
    client = small.client()

    class Big(Regressor):
        def __init__(self):
            super().__init__()
            self.big = torch.nn.Parameter(torch.zeros(100_000))  # 400 kB of weights

    with pytest.raises(aiaas.PayloadTooLarge, match="200000 bytes"):
        client.train(Big(), max_epochs=1)
    assert client.runs() == []
    assert client.train(Regressor(), max_epochs=1).wait().status is aiaas.RunStatus.succeeded


def test_incompatible_environment_is_refused_naming_both_versions(http, client):
    resp = _submit(http, _payload_with_python("3.9.1"))
    assert resp.status_code == 422
    body = resp.json()
    assert body["code"] == "incompatible_environment"
    ours = client.info()["environment"]["python"]
    assert f"the backend runs Python {ours} but this notebook runs Python 3.9.1" in body["detail"]
    resp = _submit(http, _payload(torch="1.13.1"))
    assert "this notebook runs torch 1.13.1" in resp.json()["detail"]


def _payload_with_python(version: str) -> bytes:
    return _payload(python=version)


def test_incompatible_environment_raises_in_the_sdk(backend, monkeypatch):
    real = packaging.environment
    monkeypatch.setattr(packaging, "environment", lambda pkg="lightning": {**real(pkg), "cloudpickle": "2.0.0"})
    with pytest.raises(aiaas.IncompatibleEnvironment, match="this notebook runs cloudpickle 2.0.0"):
        backend.client().train(Regressor(), max_epochs=1)


def test_resources_the_backend_cannot_give_get_400(client):
    with pytest.raises(aiaas.BadRequest, match="no GPU"):
        client.train(Regressor(), accelerator="gpu", devices=1)
    with pytest.raises(aiaas.BadRequest, match="executor ray"):
        client.train(Regressor(), num_nodes=2)
    with pytest.raises(aiaas.BadRequest, match="runs one process per run; use devices=1"):
        client.train(Regressor(), accelerator="cpu", devices=2)
    with pytest.raises(aiaas.BadRequest, match="autoscale needs a backend started with `--executor ray`"):
        client.deploy("run_whatever", "scaled", autoscale=dict(min_replicas=1, max_replicas=4))
    with pytest.raises(TypeError, match="ckpt_path"):
        client.train(Regressor(), ckpt_path="x.ckpt")


def test_trainer_kwargs_the_trainer_rejects_fail_the_run_fast(client):
    run = client.train(Regressor(), max_epochs=1, not_a_trainer_argument=3)
    with pytest.raises(aiaas.RunFailed, match="not_a_trainer_argument") as failed:
        run.wait(timeout=60)
    assert "TypeError" in str(failed.value)
    run = client.train(Regressor(), max_epochs=1, precision="no-such-precision")
    with pytest.raises(aiaas.RunFailed, match="no-such-precision"):
        run.wait(timeout=60)


def test_exception_in_training_step_names_the_users_file_and_line(client):
    run = client.train(Regressor(fail_at_step=2), max_epochs=3, name="fails")
    with pytest.raises(aiaas.RunFailed) as failed:
        run.wait(timeout=60)
    err = failed.value
    assert "ValueError: boom at step 2" in err.message
    assert 'models.py", line' in err.message and "in training_step" in err.message
    assert 'raise ValueError(f"boom at step {self.global_step}")' in err.traceback
    assert len(client.run(run.id).metrics("train_loss")) == 2  # what it logged before failing is kept
