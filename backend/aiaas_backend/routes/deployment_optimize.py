"""``optimize=`` on deploy, update and rollback: measure the version about to be served first.

The measurement runs before anything is stored, so a refused optimisation (400 with the
speed-up and the deviation, or the optimiser's error in one line) leaves no deployment
behind, and an update or rollback that is refused keeps serving the current version.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from ..models import Deployment, Run
from ..serving.base import ServingRuntime
from ..serving.optimize_jobs import check_tolerance

# (run id to serve, optimize method or None, tolerance or None, the deployment's max batch size)
Version = tuple[str, str | None, float | None, int]


def version_of(dep: Deployment, run_id: str) -> Version:
    """``run_id`` served under ``dep``'s optimize settings."""
    return run_id, dep.optimize, dep.optimize_tolerance, dep.max_batch_size


def previous_version(dep: Deployment) -> Version:
    """What a rollback would serve (the current run when there is none: the route answers 409)."""
    return version_of(dep, (dep.history or [dep.run_id])[-1])


async def optimization(request: Request, serving: ServingRuntime,
                       version: Callable[[Session], Version]) -> dict[str, Any] | None:
    """The optimisation report for the version ``version(session)`` names (None without
    optimize); raises the 400s described above. ``version`` also runs the route's own checks."""

    def read() -> tuple[Version, dict[str, Any] | None] | None:
        with request.app.state.sessions() as session:
            found = version(session)
            if found[1] is None:
                return None
            run = session.get(Run, found[0])
            return found, (run.input_signature if run else None)

    found = await run_in_threadpool(read)
    if found is None:
        return None
    (run_id, method, tolerance, batch_rows), signature = found
    assert method is not None
    report = await serving.optimize(run_id, method, signature, batch_rows)
    return check_tolerance(report, method, tolerance)
