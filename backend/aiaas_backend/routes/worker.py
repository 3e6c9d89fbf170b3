"""What workers call: report events and status, authenticated by a token scoped to one run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from aiaas_sdk.wire import WorkerEventBatch, WorkerReply, WorkerStatus

from ..deps import SessionDep, TokenDep
from ..errors import ApiError
from ..models import Run
from ..reports import apply_events, apply_status
from ..security import same_hash

router = APIRouter(prefix="/v1/worker/runs", tags=["worker"], include_in_schema=False)


def _worker_run(run_id: str, session: SessionDep, token: TokenDep) -> Run:
    run = session.get(Run, run_id)
    # A token is valid for one attempt of one run; requeueing or ending a run revokes it.
    if run is None or not same_hash(token, run.worker_token_hash):
        raise ApiError(401, "this worker token is not valid for this run (revoked or wrong)", "bad_worker_token")
    return run


WorkerRun = Annotated[Run, Depends(_worker_run)]


def _check_attempt(run: Run, attempt: int) -> None:
    if attempt != run.attempt:
        raise ApiError(409, f"attempt {attempt} is stale; the run is on attempt {run.attempt}", "stale_attempt")


@router.post("/{run_id}/events")
def report_events(run: WorkerRun, session: SessionDep, batch: WorkerEventBatch, request: Request) -> WorkerReply:
    _check_attempt(run, batch.attempt)
    if apply_events(session, run, batch.events):
        session.commit()
        request.app.state.event_bus.publish(run.id)
    return WorkerReply(cancel_requested=run.cancel_requested, last_wseq=run.last_wseq)


@router.post("/{run_id}/status")
def report_status(run: WorkerRun, session: SessionDep, report: WorkerStatus, request: Request) -> WorkerReply:
    _check_attempt(run, report.attempt)
    cancel = run.cancel_requested
    apply_status(session, run, report)
    session.commit()
    request.app.state.event_bus.publish(run.id)
    return WorkerReply(cancel_requested=cancel, last_wseq=run.last_wseq)
