"""A deployment's event log in the store: append with the next sequence numbers, read in order."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from aiaas_sdk.wire_monitoring import DeploymentEvent as EventPublic

from ..models import Deployment, DeploymentEvent

PAGE = 5000


def append(session: Session, deployment_id: str, kind: str, message: str,
           data: dict[str, Any] | None = None) -> EventPublic | None:
    """Add one event (the caller commits); None when the deployment is gone."""
    # UPDATE ... RETURNING reserves the number: concurrent writers never share a seq.
    seq = session.execute(
        update(Deployment).where(Deployment.id == deployment_id)
        .values(last_event_seq=Deployment.last_event_seq + 1).returning(Deployment.last_event_seq)
    ).scalar_one_or_none()
    if seq is None:
        return None
    event = EventPublic(seq=seq, time=time.time(), kind=kind, message=message, data=data or {})
    session.execute(insert(DeploymentEvent), [{"deployment_id": deployment_id, **event.model_dump()}])
    return event


def after(session: Session, deployment_id: str, seq: int, limit: int = PAGE) -> list[EventPublic]:
    rows = session.scalars(select(DeploymentEvent).where(DeploymentEvent.deployment_id == deployment_id,
                                                         DeploymentEvent.seq > seq)
                           .order_by(DeploymentEvent.seq).limit(limit))
    return [EventPublic(seq=r.seq, time=r.time, kind=r.kind, message=r.message, data=r.data) for r in rows]


def sse(event: EventPublic) -> bytes:
    """The event as one Server-Sent Event, its seq as the id (for Last-Event-ID)."""
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n".encode()


def record_change(session: Session, dep: Deployment, kind: str, run_before: str, replicas_before: int) -> None:
    """The event for an update, rollback or scale just applied to ``dep`` (the caller commits)."""
    if kind == "scaled":
        message = f"{dep.name}: replicas {replicas_before} -> {dep.replicas}"
        data: dict[str, Any] = {"replicas": dep.replicas, "previous_replicas": replicas_before}
    else:
        verb = "rolled back to" if kind == "rolled_back" else "now serves"
        message = f"{dep.name}: {verb} run {dep.run_id} (was {run_before})"
        data = {"run_id": dep.run_id, "previous_run_id": run_before}
    append(session, dep.id, kind, message, data)


__all__ = ["PAGE", "after", "append", "record_change", "sse"]
