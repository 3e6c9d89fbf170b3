"""Applying what a worker reports, whether it arrives over HTTP or from files it left."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from aiaas_sdk.wire import RunStatus, WorkerEvent, WorkerStatus

from .artifacts import read_regular
from .lifecycle import append_events, set_status
from .monitoring.drift import check_stats
from .models import Run


def apply_events(session: Session, run: Run, events: list[WorkerEvent]) -> int:
    """Store the events this run has not seen yet (a retried batch is stored once)."""
    fresh = [e for e in events if e.wseq > run.last_wseq]
    if not fresh:
        return 0
    run.last_wseq = max(e.wseq for e in fresh)
    session.flush()
    append_events(session, run.id, ((e.kind, e.time, e.data) for e in fresh))
    return len(fresh)


def apply_status(session: Session, run: Run, report: WorkerStatus) -> None:
    if report.device:
        run.device = report.device
    if report.input_signature is not None:
        run.input_signature = report.input_signature.model_dump()
    if report.input_stats is not None:
        run.input_stats = check_stats(report.input_stats)  # from user code's process: checked, not trusted
    if report.status is RunStatus.running:
        return
    set_status(
        session,
        run,
        report.status,
        error=report.error,
        traceback=report.traceback,
        final_metrics=report.final_metrics,
    )


def apply_leftovers(session: Session, run: Run, pending: Path, result: Path) -> bool:
    """Ingest the events and final result a worker spooled to disk before exiting.

    Returns whether a final result was applied.
    """
    # Files written inside the sandbox: what they say is the run's own business, but a link to
    # a file of the server's, or a FIFO, must not be followed (read_regular refuses both).
    if pending.exists() or pending.is_symlink():
        try:
            events = [WorkerEvent.model_validate_json(line) for line in read_regular(pending).splitlines() if line]
        except (OSError, ValueError):
            events = []
        apply_events(session, run, events)
    if not (result.exists() or result.is_symlink()):
        return False
    try:
        report = WorkerStatus.model_validate(json.loads(read_regular(result)))
    except (OSError, ValueError):
        return False
    if report.attempt != run.attempt:
        return False
    apply_status(session, run, report)
    return RunStatus(run.status).terminal
