"""A run's state changes and its event log, in one place.

Every status change goes through :func:`set_status`, which also appends a
``status`` event, so the event log is the full history of a run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from aiaas_sdk.wire import RunPublic, RunStatus

from .models import Event, Run, utcnow

_ALLOWED = {
    RunStatus.queued: {RunStatus.running, RunStatus.cancelled, RunStatus.failed},
    RunStatus.running: {RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled, RunStatus.queued},
}


def append_events(session: Session, run_id: str, events: Iterable[tuple[str, float, dict[str, Any]]]) -> int:
    """Append ``(kind, time, data)`` events with the next sequence numbers; returns the last seq."""
    rows = list(events)
    if not rows:
        return 0
    # One UPDATE ... RETURNING reserves a block of numbers: concurrent writers
    # (API, executor, worker reports) never hand out the same seq twice.
    last = session.execute(
        update(Run).where(Run.id == run_id).values(last_seq=Run.last_seq + len(rows)).returning(Run.last_seq)
    ).scalar_one()
    first = last - len(rows) + 1
    session.execute(
        insert(Event),
        [
            {"run_id": run_id, "seq": first + i, "kind": kind, "time": t, "data": data}
            for i, (kind, t, data) in enumerate(rows)
        ],
    )
    return last


def set_status(session: Session, run: Run, status: RunStatus, reason: str | None = None, **fields: Any) -> bool:
    """Move ``run`` to ``status`` if that is a legal step; returns whether it moved.

    ``reason`` is recorded in the status event (why a run was requeued, say).
    """
    current = RunStatus(run.status)
    if status not in _ALLOWED.get(current, set()):
        return False
    run.status = status.value
    for key, value in fields.items():
        setattr(run, key, value)
    if status is RunStatus.running and run.started_at is None:
        run.started_at = utcnow()
    if status.terminal:
        run.finished_at = utcnow()
        run.worker_token_hash = None
    data: dict[str, Any] = {"status": status.value, "attempt": run.attempt}
    if fields.get("error"):
        data["error"] = fields["error"]
    if reason:
        data["reason"] = reason
    session.flush()
    append_events(session, run.id, [("status", time.time(), data)])
    return True


def to_public(run: Run, has_checkpoint: bool) -> RunPublic:
    return RunPublic(
        id=run.id,
        name=run.name,
        status=RunStatus(run.status),
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        trainer_kwargs=run.trainer_kwargs or {},
        gpus=run.gpus,
        device=run.device,
        attempt=run.attempt,
        cancel_requested=run.cancel_requested,
        error=run.error,
        traceback=run.traceback,
        final_metrics=run.final_metrics or {},
        has_checkpoint=has_checkpoint,
        worker_pid=run.worker_pid if run.status == RunStatus.running.value else None,
        environment={k: str(v) for k, v in (run.environment or {}).items()},
        datasets=[f"{d['name']}:{d['version']}" for d in run.datasets or []],
        checkpoint_every_n_epochs=run.checkpoint_every_n_epochs,
    )
