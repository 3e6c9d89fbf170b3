"""Requests per second per API key: a token bucket per key, before anything else runs.

The buckets live in this server process's memory. That is exact for ``aiaas server``,
also with ``--workers N``: its fronts' predicts take their tokens from the primary's
buckets (fronts/hub.py) and their other requests go through the primary. Several
separate API servers behind a load balancer would each keep their own buckets (the limit
becomes N times the setting), and a restart refills every bucket. A shared store (Redis) would be the step for that shape.

The bucket holds ``burst`` tokens and refills at ``rate`` per second; a request takes
one, or is answered 429 with ``Retry-After`` (seconds until a token is back) and a body
that names the limit and how to raise it. Worker routes are not counted: a worker's
reports are its run's own heartbeat, limited by the run, not by a person's key.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

# Paths whose callers hold run-scoped worker tokens, not a person's key.
EXEMPT_PREFIXES = ("/v1/worker/",)


class TokenBuckets:
    """One bucket per key; the least recently used are forgotten past ``max_keys``
    (a forgotten bucket is a full one, which a busy key never is)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, when)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds until one is back."""
        now = self._clock()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return (token.strip() or None) if scheme.lower() == "bearer" else None
    return None


class RateLimit:
    """ASGI middleware: 429 for a key over ``AIAAS_RATE_REQUESTS_PER_S``. Requests without a
    bearer key pass through (they are refused with 401 further in, or need none)."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(EXEMPT_PREFIXES):
            token = _bearer(scope)
            if token is not None and (wait := self.buckets.take(token)) > 0:
                await self._refuse(send, wait)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send, wait: float) -> None:
        headers, body = refusal(self.buckets, wait)
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def refusal(buckets: TokenBuckets, wait: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 429's headers and body for a key that must wait ``wait`` seconds (the fronts send it too)."""
    rate, burst = buckets.rate, buckets.burst
    retry_after = max(1, math.ceil(wait))
    body = json.dumps({
        "detail": (f"rate limit: this API key sent more than {rate:g} requests per second (bursts of up to "
                   f"{burst}); this backend allows that many per key (AIAAS_RATE_REQUESTS_PER_S={rate:g}, "
                   f"AIAAS_RATE_BURST={burst}). Retry after {retry_after} s, spread the requests out, or ask "
                   "the backend's operator to raise AIAAS_RATE_REQUESTS_PER_S"),
        "code": "rate_limited", "limit": "rate_requests_per_s", "value": rate,
    }).encode()
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode())], body
