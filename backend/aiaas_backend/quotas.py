"""Per-user quotas: runs waiting in the queue, deployments, and replicas over all deployments.

Each is an ``AIAAS_QUOTA_*`` setting (0: no limit). A request that would go over one is
refused with 429, a ``Retry-After``, and a body naming the limit, its value and how to
raise it; nothing is stored or started. The counts are read from the database at the
request, so two requests racing through at once can both pass: the quotas bound what a
user holds, within one request per concurrent caller.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas_sdk.wire import RunStatus

from .config import Settings
from .deps import CurrentUser, SessionDep, SettingsDep
from .errors import ApiError
from .models import Deployment, Run, User

# What to wait for before retrying: a queued run starts (minutes), or the user frees something.
_RETRY_AFTER_S = 30


def quota_exceeded(setting: str, value: int, have: str, fix: str) -> ApiError:
    """The 429 for a quota: ``setting`` is the Settings field, ``have`` what the user holds."""
    variable = f"AIAAS_{setting.upper()}"
    return ApiError(
        429,
        f"quota: {have}, and this backend allows {value} per user ({variable}={value}). {fix}, "
        f"or ask the backend's operator to raise {variable}",
        "quota_exceeded", {"Retry-After": str(_RETRY_AFTER_S)}, extra={"limit": setting, "value": value},
    )


def runs_queued(session: SessionDep, user: CurrentUser, settings: SettingsDep) -> None:
    """A dependency of ``POST /v1/runs``: refuse a run past ``quota_runs_queued``."""
    limit = settings.quota_runs_queued
    if not limit:
        return
    queued = session.scalar(select(func.count()).select_from(Run)
                            .where(Run.user_id == user.id, Run.status == RunStatus.queued.value)) or 0
    if queued >= limit:
        raise quota_exceeded("quota_runs_queued", limit, f"you have {queued} runs queued",
                             "Wait for some to start, or cancel some (client.runs(), run.cancel())")


def replicas_of(autoscale: Any, replicas: int) -> int:
    """How many replicas a deployment may hold: its count, or its autoscale ceiling
    (``autoscale``: the stored dict or the request's model)."""
    if hasattr(autoscale, "model_dump"):
        autoscale = autoscale.model_dump()
    return int(autoscale.get("max_replicas", replicas)) if autoscale else replicas


def _replicas_held(session: Session, user: User, leaving_out: str | None = None) -> int:
    rows = session.execute(select(Deployment.id, Deployment.replicas, Deployment.autoscale)
                           .where(Deployment.user_id == user.id)).all()
    return sum(replicas_of(autoscale, n) for dep_id, n, autoscale in rows if dep_id != leaving_out)


def check_replicas(session: Session, user: User, settings: Settings, wanted: int,
                   leaving_out: str | None = None) -> None:
    """Refuse when the user's replicas, with ``wanted`` in place of deployment ``leaving_out``'s
    (or added, for a new one), would pass ``quota_replicas``."""
    limit = settings.quota_replicas
    if not limit:
        return
    held = _replicas_held(session, user, leaving_out)
    if held + wanted > limit:
        raise quota_exceeded("quota_replicas", limit,
                             f"this needs {wanted} replicas and your other deployments hold {held}",
                             "Scale a deployment down (dep.scale(n)) or delete one, or ask for fewer replicas")


def check_new_deployment(session: Session, user: User, settings: Settings, replicas: int) -> None:
    """Refuse a new deployment past ``quota_deployments`` or ``quota_replicas``."""
    limit = settings.quota_deployments
    if limit:
        held = session.scalar(select(func.count()).select_from(Deployment).where(Deployment.user_id == user.id)) or 0
        if held >= limit:
            raise quota_exceeded("quota_deployments", limit, f"you have {held} deployments",
                                 "Delete one you no longer need (dep.delete())")
    check_replicas(session, user, settings, replicas)
