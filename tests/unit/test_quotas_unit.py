"""The pieces of quotas and rate limits that need no server: the token bucket, the fair
order of the queue (on a real SQLite file), and how the SDK reads a 429."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

import aiaas
from aiaas_backend.db import make_engine, migrate, session_factory
from aiaas_backend.executors.fair import fair_order
from aiaas_backend.models import Run, User
from aiaas_backend.ratelimit import TokenBuckets
from aiaas_sdk._errors import error_from_response


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_grants_a_burst_then_refills_at_the_rate():
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)  # one token comes back in 1/rate s
    assert buckets.take("other") == 0.0  # per key
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0
    clock.now += 60  # refills to the burst, no further
    assert [buckets.take("k") for _ in range(4)][-1] > 0


def test_forgotten_keys_are_the_least_recently_used():
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=clock)
    buckets.take("busy")
    buckets.take("a")
    assert buckets.take("busy") > 0  # "busy" is now the most recent
    buckets.take("b")  # forgets "a", not "busy"
    assert buckets.take("busy") > 0


def _run(session, user: User, n: int, status: str = "queued", started: datetime | None = None) -> Run:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    run = Run(id=f"run_{user.name}{n}", user_id=user.id, name="r", status=status, created_at=base + timedelta(seconds=n),
              started_at=started, trainer_kwargs={}, environment={}, final_metrics={})
    session.add(run)
    return run


def test_fair_order_is_round_robin_by_running_runs_then_last_start(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'aiaas.db'}")
    migrate(engine)
    with session_factory(engine)() as session:
        alice, bob, carol = User(name="alice"), User(name="bob"), User(name="carol")
        session.add_all([alice, bob, carol])
        session.flush()
        early = datetime(2026, 1, 1, tzinfo=UTC)
        _run(session, alice, 0, "running", started=early)
        for n in range(1, 5):
            _run(session, alice, n)  # alice filled the queue first
        _run(session, bob, 10)
        _run(session, bob, 11)
        _run(session, carol, 20, "succeeded", started=early + timedelta(hours=1))
        _run(session, carol, 21)
        session.commit()
        order = [r.id for r in fair_order(session)]
    engine.dispose()
    # bob and carol run nothing, alice one: bob (never started) first, then carol (started
    # once), then alice's oldest; then round-robin, each user's runs in submission order.
    assert order == ["run_bob10", "run_carol21", "run_alice1", "run_bob11", "run_alice2", "run_alice3", "run_alice4"]


def _response(status: int, body: dict, retry_after: str | None = "7") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("GET", "http://b.test/v1/runs"))


def test_sdk_reads_quota_and_rate_limit_refusals():
    quota = error_from_response(_response(429, {"detail": "quota: you have 2 runs queued", "code": "quota_exceeded",
                                                "limit": "quota_runs_queued", "value": 2}))
    assert type(quota) is aiaas.QuotaExceeded
    assert (quota.limit, quota.value, quota.retry_after) == ("quota_runs_queued", 2, 7.0)
    assert "you have 2 runs queued (HTTP 429)" in str(quota)
    rate = error_from_response(_response(429, {"detail": "rate limit", "code": "rate_limited",
                                               "limit": "rate_requests_per_s", "value": 5.0}, retry_after=None))
    assert isinstance(rate, aiaas.RateLimited) and isinstance(rate, aiaas.QuotaExceeded)
    assert rate.retry_after is None and rate.value == 5.0
    # A deployment's full queue stays what it was.
    assert type(error_from_response(_response(429, {"detail": "full", "code": "overloaded"}))) is \
        aiaas.DeploymentOverloaded
