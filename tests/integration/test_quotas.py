"""Per-user quotas, per-key rate limits and fair queueing, against a real server: each limit is
hit, refused with 429 + Retry-After naming it, and nothing is stored for the refused request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import aiaas

from ..conftest import Backend, wait_until
from .models import Regressor


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One CPU slot, so runs queue; low quotas; cancels kill a worker after 3 s."""
    b = Backend(tmp_path_factory.mktemp("quotas"), slots=1, env={
        "AIAAS_QUOTA_RUNS_QUEUED": "2", "AIAAS_QUOTA_DEPLOYMENTS": "1", "AIAAS_QUOTA_REPLICAS": "2",
        "AIAAS_CANCEL_GRACE_S": "3"}).start()
    yield b
    b.close()


def _long() -> Regressor:
    return Regressor(step_sleep=0.05)


def _status(client: aiaas.Client, run_id: str) -> aiaas.RunStatus:
    return client.run(run_id).status


def test_queued_runs_quota_and_fair_queueing(limited):
    alice_key = limited.new_key("alice")
    alice = limited.client(alice_key)
    bob = limited.client(limited.new_key("bob"))
    first = alice.train(_long(), max_epochs=500, name="a1")
    wait_until(lambda: _status(alice, first.id) is aiaas.RunStatus.running, timeout=180, what="alice's first run")
    queued = [alice.train(_long(), max_epochs=500, name=f"a{n}") for n in (2, 3)]

    with pytest.raises(aiaas.QuotaExceeded) as refused:
        alice.train(_long(), max_epochs=1, name="a4")
    error = refused.value
    assert not isinstance(error, aiaas.RateLimited)
    assert error.status_code == 429 and error.limit == "quota_runs_queued" and error.value == 2, error
    assert error.retry_after and error.retry_after > 0
    assert "you have 2 runs queued" in str(error) and "AIAAS_QUOTA_RUNS_QUEUED=2" in str(error), error
    # The refused run was not stored.
    assert sorted(r.name for r in alice.runs()) == ["a1", "a2", "a3"]
    # The same refusal, as a program sees it: status, header, and a body naming the limit.
    resp = httpx.post(limited.url + "/v1/runs", headers={"Authorization": f"Bearer {alice_key}"},
                      data={"spec": "{}"}, files={"payload": ("p", b"x")})
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 0, resp.text
    assert resp.json()["code"] == "quota_exceeded" and resp.json()["limit"] == "quota_runs_queued"

    # Quotas are per user: bob queues behind alice's three runs...
    theirs = bob.train(_long(), max_epochs=500, name="b1")
    # ... and when the slot frees, bob's run starts next, not alice's older queued ones.
    first.cancel()
    wait_until(lambda: _status(bob, theirs.id) is aiaas.RunStatus.running, timeout=180,
               what="bob's run to start next")
    assert [_status(alice, r.id) for r in queued] == [aiaas.RunStatus.queued] * 2
    # Then alice's turn again (round-robin): her oldest queued run.
    theirs.cancel()
    wait_until(lambda: _status(alice, queued[0].id) is aiaas.RunStatus.running, timeout=180,
               what="alice's next run")
    assert _status(alice, queued[1].id) is aiaas.RunStatus.queued
    for run in queued:
        run.cancel()


def test_deployment_and_replica_quotas(limited):
    carol = limited.client(limited.new_key("carol"))
    run = carol.train(Regressor(), max_epochs=1, name="model").wait(timeout=300)
    dep = run.deploy("one", replicas=1)
    try:
        with pytest.raises(aiaas.QuotaExceeded) as refused:
            run.deploy("two")
        assert refused.value.limit == "quota_deployments" and refused.value.value == 1
        assert "you have 1 deployments" in str(refused.value) and "AIAAS_QUOTA_DEPLOYMENTS=1" in str(refused.value)
        assert [d.name for d in carol.deployments()] == ["one"]

        with pytest.raises(aiaas.QuotaExceeded) as refused:
            dep.scale(3)
        assert refused.value.limit == "quota_replicas" and "AIAAS_QUOTA_REPLICAS=2" in str(refused.value)
        assert dep.refresh().data.replicas == 1  # unchanged
        assert dep.scale(2).data.replicas == 2  # up to the quota is fine
    finally:
        dep.delete()
    with pytest.raises(aiaas.QuotaExceeded) as refused:
        run.deploy("big", replicas=3)
    assert refused.value.limit == "quota_replicas" and "this needs 3 replicas" in str(refused.value)
    assert carol.deployments() == []


def test_requests_per_second_per_key(tmp_path: Path):
    b = Backend(tmp_path / "rate", env={"AIAAS_RATE_REQUESTS_PER_S": "0.5", "AIAAS_RATE_BURST": "3"},
                warm=False).start()
    try:
        alice_key = b.new_key("alice")
        alice = b.client(alice_key)
        bob = b.client(b.new_key("bob"))
        granted = 0
        with pytest.raises(aiaas.RateLimited) as refused:
            for _ in range(10):
                alice.runs()
                granted += 1
        assert 3 <= granted < 10
        error = refused.value
        assert error.limit == "rate_requests_per_s" and error.value == 0.5 and error.retry_after >= 1
        assert "AIAAS_RATE_REQUESTS_PER_S=0.5" in str(error) and "AIAAS_RATE_BURST=3" in str(error), error
        # Per key: bob is not slowed down by alice.
        assert list(bob.runs()) == []
        # Raw: 429 with Retry-After; then, after waiting that long, alice is served again.
        resp = httpx.get(b.url + "/v1/runs", headers={"Authorization": f"Bearer {alice_key}"})
        assert resp.status_code == 429 and resp.json()["code"] == "rate_limited"
        time.sleep(int(resp.headers["retry-after"]) + 0.1)
        alice.runs()
        # Requests without a key are not counted against anyone (they get their 401 further in).
        assert httpx.get(b.url + "/v1/runs").status_code == 401
        assert httpx.get(b.url + "/healthz").status_code == 200
    finally:
        b.close()
