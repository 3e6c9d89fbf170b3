"""A run's event log as Server-Sent Events.

Each SSE event carries the run's sequence number as its ``id``, so a client
that reconnects with ``Last-Event-ID`` (or ``?after=``) gets exactly what it
missed. Once the run has ended and every event was sent, the server sends an
``end`` event and closes the stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from aiaas_sdk.wire import RunStatus

from ..deps import CurrentUser, SessionDep, TokenDep
from ..errors import ApiError, run_not_found
from ..models import Event, Run
from ..security import api_key_for

router = APIRouter(prefix="/v1/runs", tags=["runs"])

_BATCH = 5000


def _format(event: Event) -> bytes:
    data = json.dumps({"seq": event.seq, "kind": event.kind, "time": event.time, "data": event.data},
                      separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@router.get(
    "/{run_id}/events",
    operation_id="stream_run_events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream_events(
    run_id: str,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    token: TokenDep,
    after: Annotated[int | None, Query(ge=0, description="start after this seq")] = None,
    heartbeat: Annotated[float, Query(gt=0, le=300, description="seconds between keep-alive comments")] = 15.0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Status changes, metric points and log lines, in order, live until the run ends."""
    run = session.get(Run, run_id)
    if run is None or run.user_id != user.id:
        raise run_not_found(run_id)
    start = after or 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise ApiError(400, f"Last-Event-ID must be an event sequence number, got {last_event_id!r}",
                           "bad_last_event_id")
        start = max(start, int(last_event_id))
    sessions = request.app.state.sessions
    bus = request.app.state.event_bus

    def key_works() -> bool:
        with sessions() as s:
            return api_key_for(s, token) is not None

    def fetch(after_seq: int) -> tuple[list[Event], bool]:
        with sessions() as s:
            rows = list(s.scalars(
                select(Event).where(Event.run_id == run_id, Event.seq > after_seq).order_by(Event.seq).limit(_BATCH)
            ))
            current = s.get(Run, run_id)
            done = current is None or (RunStatus(current.status).terminal and
                                        (rows[-1].seq if rows else after_seq) >= current.last_seq)
            return rows, done

    async def body() -> AsyncIterator[bytes]:
        seq = start
        loop = asyncio.get_running_loop()
        last_sent = checked = loop.time()
        yield b"retry: 1000\n\n"
        while True:
            # A stream outlives its first request: it ends within a second of its key's
            # revocation or expiry, and the client's reconnection gets the 401.
            if loop.time() - checked >= 1.0:
                if not await run_in_threadpool(key_works):
                    return
                checked = loop.time()
            wake = bus.subscribe(run_id)
            try:
                rows, done = await run_in_threadpool(fetch, seq)
                if rows:
                    seq = rows[-1].seq
                    yield b"".join(_format(e) for e in rows)
                    last_sent = loop.time()
                if done:
                    # Tells the client the stream is complete, unlike a dropped connection.
                    yield b"event: end\ndata: {}\n\n"
                    return
                if len(rows) == _BATCH:
                    continue
                if await request.is_disconnected():
                    return
                try:
                    await asyncio.wait_for(wake.wait(), timeout=0.5)
                except TimeoutError:
                    pass
            finally:
                bus.unsubscribe(run_id, wake)
            if loop.time() - last_sent >= heartbeat:
                yield b": keep-alive\n\n"
                last_sent = loop.time()

    return StreamingResponse(
        body(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
