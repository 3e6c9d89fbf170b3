"""A run's event log as Server-Sent Events (``sse.follow``): live until the run has
ended and every event was sent, then an ``end`` event."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from aiaas_sdk.wire import RunStatus

from ..deps import CurrentUser, SessionDep, TokenDep
from ..errors import run_not_found
from ..models import Event, Run
from ..security import api_key_for
from ..sse import HEADERS, follow, start_after

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
    start = start_after(after, last_event_id)
    sessions = request.app.state.sessions

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

    return StreamingResponse(follow(request, run_id, fetch, _format, start, heartbeat, _BATCH, key_works),
                             media_type="text/event-stream", headers=HEADERS)
