"""Following an ordered event log as Server-Sent Events (a run's events, a deployment's).

Each event's sequence number is its SSE ``id``, so a client that reconnects with
``Last-Event-ID`` (or ``?after=``) gets exactly what it missed. The loop waits on
the event bus between queries, sends a keep-alive comment when idle, and sends
an ``end`` event once the log is complete (unlike a dropped connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .errors import ApiError

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def start_after(after: int | None, last_event_id: str | None) -> int:
    """The last sequence number the client has: the larger of ``?after=`` and ``Last-Event-ID``."""
    start = after or 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ApiError(400, f"Last-Event-ID must be an event sequence number, got {last_event_id!r}",
                           "bad_last_event_id")
        start = max(start, int(last_event_id))
    return start


async def follow(
    request: Request,
    topic: str,
    fetch: Callable[[int], tuple[Sequence[Any], bool]],
    encode: Callable[[Any], bytes],
    start: int,
    heartbeat: float,
    page: int,
    key_works: Callable[[], bool] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: ``fetch(after_seq)`` gives the next rows (each with ``.seq``, at most
    ``page``) and whether the log is complete; ``topic`` is the event bus's name for it.
    ``key_works`` is checked every second: a stream outlives its first request, so it ends
    within a second of its key's revocation or expiry (the client's reconnection gets the 401)."""
    bus = request.app.state.event_bus
    seq = start
    loop = asyncio.get_running_loop()
    last_sent = checked = loop.time()
    yield b"retry: 1000\n\n"
    while True:
        if key_works is not None and loop.time() - checked >= 1.0:
            if not await run_in_threadpool(key_works):
                return
            checked = loop.time()
        wake = bus.subscribe(topic)  # before the query: a publish in between is not lost
        try:
            rows, done = await run_in_threadpool(fetch, seq)
            if rows:
                seq = rows[-1].seq
                yield b"".join(encode(row) for row in rows)
                last_sent = loop.time()
            if done:
                yield b"event: end\ndata: {}\n\n"
                return
            if len(rows) == page:
                continue
            if await request.is_disconnected():
                return
            try:
                await asyncio.wait_for(wake.wait(), timeout=0.5)
            except TimeoutError:
                pass
        finally:
            bus.unsubscribe(topic, wake)
        if loop.time() - last_sent >= heartbeat:
            yield b": keep-alive\n\n"
            last_sent = loop.time()
