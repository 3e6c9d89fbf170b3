"""Retry delays follow the server's hint, spread out so that turned-away callers do not return together."""

import httpx

from aiaas_sdk._ops import RetryPolicy


def test_retry_after_is_honoured_on_average_but_spread():
    full = httpx.Response(429, headers={"Retry-After": "1"})
    delays = [RetryPolicy().delay(0, full) for _ in range(200)]
    assert all(0.5 <= d <= 1.5 for d in delays)
    assert max(delays) - min(delays) > 0.5  # a crowd told "1 s" spreads over about a second
    assert 0.9 < sum(delays) / len(delays) < 1.1


def test_backoff_grows_without_a_hint_and_a_bad_hint_is_ignored():
    policy = RetryPolicy(backoff=0.25)
    assert all(0.125 <= policy.delay(0) <= 0.375 for _ in range(50))
    assert all(1.0 <= policy.delay(3) <= 3.0 for _ in range(50))
    garbage = httpx.Response(503, headers={"Retry-After": "soon"})
    assert all(0.25 <= policy.delay(1, garbage) <= 0.75 for _ in range(50))
    huge = httpx.Response(429, headers={"Retry-After": "3600"})
    assert policy.delay(0, huge) <= 45.0  # capped at 30 s before the spread
