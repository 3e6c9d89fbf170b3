"""Deployments: real replica processes behind the real server, called over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
import torch

import aiaas
from aiaas_sdk import tensor_codec

from ..conftest import wait_until
from .models import Regressor, SlowPredictor


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory):
    """Two trained versions of the same model, and their local copies."""
    out = []
    for lr in (0.05, 0.2):
        torch.manual_seed(0)
        run = client.train(Regressor(lr=lr), max_epochs=2, name=f"serve-{lr}").wait()
        path = run.download_checkpoint(tmp_path_factory.mktemp("ckpt") / "final.ckpt")
        out.append((run, Regressor.load_from_checkpoint(path).eval()))
    return out


@pytest.fixture(scope="module")
def deployment(client, trained):
    dep = trained[0][0].deploy("regressor", replicas=2, max_batch_size=16, max_wait_ms=5)
    yield dep
    dep.delete()


def _local(model, x):
    with torch.inference_mode():
        return model(torch.as_tensor(x, dtype=torch.float32))


def test_predictions_equal_the_local_model_sync_and_async(client, trained, deployment):
    _, local = trained[0]
    x = torch.randn(5, 8)
    y = deployment.predict(x)
    assert isinstance(y, torch.Tensor) and y.shape == (5, 1)
    assert torch.allclose(y, _local(local, x), atol=1e-6)
    y_np = deployment.predict(x.numpy())
    assert isinstance(y_np, np.ndarray) and np.allclose(y_np, y.numpy(), atol=1e-6)
    y_list = deployment.predict(x[:1].tolist())
    assert isinstance(y_list, list) and np.allclose(y_list, y[:1].numpy(), atol=1e-6)
    assert deployment.data.input_signature.shape == [8]

    xs = [torch.randn(int(n), 8) for n in np.random.default_rng(0).integers(1, 6, size=300)]

    async def calls():
        single = await deployment.apredict(xs[0])
        many = await deployment.apredict_many(xs, concurrency=64)
        await deployment.aclose()
        return single, many

    single, many = asyncio.run(calls())
    assert torch.allclose(single, _local(local, xs[0]), atol=1e-6)
    assert len(many) == len(xs)
    for x, y in zip(xs, many):  # order kept
        assert y.shape == (x.shape[0], 1) and torch.allclose(y, _local(local, x), atol=1e-6)
    stats = deployment.stats()
    assert stats.requests >= 304 and stats.errors == 0 and stats.batches < stats.requests  # batching happened
    assert stats.mean_batch_rows > 1 and stats.p99_ms >= stats.p95_ms >= stats.p50_ms > 0
    assert sum(stats.batch_sizes.values()) == stats.batches and max(stats.batch_sizes) > 1
    assert [m.run_id for m in client.models()][:2] == [trained[1][0].id, trained[0][0].id]
    again = client.deployment("regressor")  # from anywhere, by name
    assert torch.allclose(again.predict(x), _local(local, x), atol=1e-6)


def test_a_script_calling_the_async_client_exits_quietly(backend, deployment, tmp_path):
    """Two asyncio.run()s of apredict_many in a plain script: no unclosed-session warnings at exit."""
    script = tmp_path / "predict_twice.py"
    script.write_text(
        "import asyncio, sys, warnings\n"
        "import aiaas, torch\n"
        "warnings.simplefilter('default')  # ResourceWarnings are hidden by default: show them here\n"
        f"dep = aiaas.connect({backend.url!r}, api_key={backend.key!r}).deployment('regressor')\n"
        "for _ in range(2):\n"
        "    ys = asyncio.run(dep.apredict_many([torch.randn(3, 8) for _ in range(40)], concurrency=16))\n"
        "    assert len(ys) == 40\n"
        "print('done')\n"
    )
    out = subprocess.run([sys.executable, "-X", "dev", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-3000:]
    assert "Unclosed" not in out.stderr and "unclosed" not in out.stderr, out.stderr[-3000:]


def test_prometheus_metrics_and_readiness(backend, deployment):
    headers = {"Authorization": f"Bearer {backend.key}"}
    deployment.predict(torch.randn(2, 8))
    text = httpx.get(f"{backend.url}/v1/deployments/regressor/metrics", headers=headers).text
    assert 'aiaas_requests_total{deployment="regressor"}' in text
    assert 'aiaas_request_latency_ms{deployment="regressor",quantile="0.99"}' in text
    assert "# TYPE aiaas_queue_depth gauge" in text
    ready = httpx.get(f"{backend.url}/v1/deployments/regressor/ready", headers=headers)
    assert ready.status_code == 200 and ready.json()["ready_replicas"] == 2


def test_bad_inputs_get_4xx_naming_expected_and_received(backend, deployment):
    headers = {"Authorization": f"Bearer {backend.key}"}
    url = f"{backend.url}/v1/deployments/regressor/predict"

    def binary(array):
        return httpx.post(url, content=tensor_codec.encode(array),
                          headers={**headers, "Content-Type": tensor_codec.CONTENT_TYPE})

    cases = [
        (binary(np.zeros((2, 5), np.float32)), "expected (batch, 8), received (2, 5)"),
        (binary(np.zeros(8, np.float32)), "for one row send shape (1, 8)"),
        (binary(np.zeros((2, 8), np.int64)), "expected float32, received int64"),
        (binary(np.zeros((0, 8), np.float32)), "empty"),
        (httpx.post(url, json={"inputs": [["a", "b"]]}, headers=headers), "non-numeric"),
        (httpx.post(url, json={"inputs": [[1, 2], [3]]}, headers=headers), "rectangular"),
        (httpx.post(url, json={"x": 1}, headers=headers), '{"inputs"'),
        (httpx.post(url, content=b"AIAT garbage", headers={**headers, "Content-Type": tensor_codec.CONTENT_TYPE}),
         "tensor frame"),
    ]
    for response, fragment in cases:
        assert response.status_code == 400, response.text
        assert fragment in response.json()["detail"]
        assert deployment.predict(torch.zeros(1, 8)).shape == (1, 1)  # still serving
    resp = httpx.post(f"{backend.url}/v1/deployments/nope/predict", json={"inputs": [[0] * 8]}, headers=headers)
    assert resp.status_code == 404 and "nope" in resp.json()["detail"]
    with pytest.raises(aiaas.BadRequest, match=r"received \(3, 2\)"):
        deployment.predict(np.zeros((3, 2), np.float32))
    ok = httpx.post(url, json={"inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}, headers=headers)  # JSON ints are fine
    assert ok.status_code == 200 and len(ok.json()["outputs"]) == 1


def test_a_body_over_the_limit_gets_413_and_replica_threads_are_set(make_backend):
    small = make_backend(name="small", AIAAS_MAX_UPLOAD_BYTES="200000", AIAAS_REPLICA_THREADS="1")
    client = small.client()
    run = client.train(Regressor(), max_epochs=1).wait()
    dep = run.deploy("small")
    with pytest.raises(aiaas.PayloadTooLarge):
        dep.predict(np.zeros((10_000, 8), np.float32))
    assert dep.predict(np.zeros((2, 8), np.float32)).shape == (2, 1)
    assert f"replica for {run.id} ready on cpu with 1 threads" in (small.data_dir / "replicas.log").read_text()


def test_other_users_cannot_see_or_call_a_deployment(backend, deployment):
    with aiaas.Client(backend.url, backend.new_key("eve")) as eve:
        assert eve.deployments() == []
        with pytest.raises(aiaas.NotFound):
            eve.deployment("regressor")
        with pytest.raises(aiaas.NotFound):
            aiaas.Deployment(eve, deployment.data).predict(torch.zeros(1, 8))
        with pytest.raises(aiaas.NotFound):
            eve.deploy(deployment.run_id, "stolen")


def _load(dep, seconds: float, results: list, errors: list):
    async def run():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            xs = [torch.randn(2, 8) for _ in range(16)]
            try:
                ys = await dep.apredict_many(xs, concurrency=16)
                results.extend(zip(xs, ys))
            except Exception as exc:  # noqa: BLE001 - every failure is a dropped request
                errors.append(exc)
        await dep.aclose()

    asyncio.run(run())


def test_rolling_update_and_rollback_drop_nothing(client, trained, deployment):
    (v1, local1), (v2, local2) = trained
    results, errors = [], []
    loader = threading.Thread(target=_load, args=(deployment, 12.0, results, errors))
    loader.start()
    wait_until(lambda: len(results) >= 32, timeout=60, what="the load to be flowing")
    deployment.update(v2.id)
    assert deployment.run_id == v2.id and deployment.data.history == [v1.id]
    x = torch.randn(3, 8)
    assert torch.allclose(deployment.predict(x), _local(local2, x), atol=1e-6)
    deployment.rollback()
    loader.join()
    assert errors == []
    assert len(results) > 100
    for x, y in results:  # each answer came from one of the two versions
        assert torch.allclose(y, _local(local1, x), atol=1e-6) or torch.allclose(y, _local(local2, x), atol=1e-6)
    assert deployment.run_id == v1.id
    assert torch.allclose(deployment.predict(x), _local(local1, x), atol=1e-6)


def _replica_pids(backend) -> list[int]:
    pids = []
    for child in psutil.Process(backend.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "serving.replica" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # exited between listing and looking
            pass
    return pids


def test_a_killed_replica_is_replaced_and_no_request_is_lost(backend, deployment):
    wait_until(lambda: deployment.refresh().data.ready_replicas == 2, timeout=120, what="2 replicas")
    results, errors = [], []
    loader = threading.Thread(target=_load, args=(deployment, 6.0, results, errors))
    loader.start()
    wait_until(lambda: len(results) >= 32, timeout=60, what="the load to be flowing")
    victim = _replica_pids(backend)[0]
    os.kill(victim, signal.SIGKILL)
    loader.join()
    assert errors == [] and len(results) > 50
    wait_until(lambda: deployment.refresh().data.ready_replicas == 2 and victim not in _replica_pids(backend),
               timeout=120, what="a replacement replica")
    # Replicas that were stopped or died are reaped: no zombies pile up in the server.
    wait_until(lambda: not _zombies(backend), timeout=30, what="zombie replicas to be reaped")


def _zombies(backend) -> list[int]:
    found = []
    for child in psutil.Process(backend.proc.pid).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return found


def test_backpressure_returns_429_and_the_sdk_recovers(backend, client):
    run = client.train(SlowPredictor(predict_sleep=0.05), max_epochs=1, name="slow").wait()
    dep = run.deploy("slow", replicas=1, max_batch_size=1, max_wait_ms=0, max_queue=2)
    headers = {"Authorization": f"Bearer {backend.key}"}

    async def blast():
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            return await asyncio.gather(*(http.post(f"{backend.url}/v1/deployments/slow/predict",
                                                    json={"inputs": [[0.0] * 8]}) for _ in range(30)))

    statuses = [r.status_code for r in asyncio.run(blast())]
    assert 429 in statuses and 200 in statuses
    rejected = [r for r in asyncio.run(blast()) if r.status_code == 429]
    assert rejected and rejected[0].headers["Retry-After"] == "1"
    xs = [torch.randn(1, 8) for _ in range(12)]

    async def through_sdk():
        try:
            return await dep.apredict_many(xs, concurrency=12)  # backs off and retries
        finally:
            await dep.aclose()

    ys = asyncio.run(through_sdk())
    assert len(ys) == 12 and dep.stats().rejected > 0
    dep.delete()
    with pytest.raises(aiaas.NotFound):
        client.deployment("slow")


def test_scale_and_deployments_survive_a_restart(make_backend):
    backend = make_backend()
    client = backend.client()
    run = client.train(Regressor(), max_epochs=1, name="survivor").wait()
    dep = run.deploy("survivor", replicas=1)
    dep.scale(2)
    wait_until(lambda: dep.refresh().data.ready_replicas == 2, timeout=120, what="scale to 2")
    x = torch.randn(4, 8)
    before = dep.predict(x)
    backend.stop()
    backend.start()
    client = backend.client()
    again = client.deployment("survivor").wait_ready(timeout=120)
    assert again.data.replicas == 2
    assert torch.allclose(again.predict(x), before)


def test_a_shared_key_calls_one_deployment_and_nothing_else(backend, client, deployment):
    shared = deployment.create_key()
    with aiaas.Client(backend.url, shared) as guest:
        dep = guest.deployment("regressor")
        assert dep.predict(torch.zeros(2, 8)).shape == (2, 1)
        with pytest.raises(aiaas.AuthenticationError):
            guest.runs()
        with pytest.raises(aiaas.AuthenticationError):
            guest.models()
        with pytest.raises(aiaas.NotFound):
            guest.deployment("slow")
        with pytest.raises(aiaas.AuthenticationError):
            dep.stats()


def test_timeouts_give_504_and_a_client_that_leaves_has_its_work_dropped(backend, client):
    run = client.train(SlowPredictor(predict_sleep=0.4), max_epochs=1, name="slower").wait()
    dep = run.deploy("slower", replicas=1, max_batch_size=1, max_wait_ms=0, timeout_s=0.2)
    with pytest.raises(aiaas.ServerError, match="longer than the deployment's timeout"):
        dep.predict(torch.zeros(1, 8))
    dep.delete()

    dep = run.deploy("leavers", replicas=1, max_batch_size=1, max_wait_ms=0, timeout_s=30)
    headers = {"Authorization": f"Bearer {backend.key}"}
    before = dep.stats()

    async def leave_early():
        async with httpx.AsyncClient(headers=headers) as http:
            async def one():
                try:
                    await http.post(f"{backend.url}/v1/deployments/leavers/predict", json={"inputs": [[0.0] * 8]},
                                    timeout=0.15)
                except httpx.TimeoutException:
                    pass
            await asyncio.gather(*(one() for _ in range(6)))

    asyncio.run(leave_early())
    # Settled once every request has been answered or dropped and nothing waits in the queue.
    after = wait_until(lambda: (st := dep.stats()).dropped - before.dropped >= 4 and st.queue_depth == 0 and st,
                       timeout=30, what="the queue to settle")
    assert after.requests - before.requests == 6
    assert after.dropped - before.dropped >= 4
    assert after.batches - before.batches <= 2  # only what a replica had already started
    assert dep.predict(torch.zeros(1, 8)).shape == (1, 1)
    dep.delete()
