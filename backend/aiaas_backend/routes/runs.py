"""The runs API: what a user does with training runs."""

from __future__ import annotations

import os
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import func, select

from aiaas_sdk import packaging
from aiaas_sdk.wire import (
    LogLine,
    LogsPage,
    MetricPoint,
    MetricsPage,
    RunProgress,
    RunPublic,
    RunSpec,
    RunsPublic,
    RunStatus,
)

from .. import datasets, quotas
from ..artifacts import FINAL_FILES, open_regular
from ..deps import ArtifactsDep, CurrentUser, EnvironmentDep, ExecutorDep, SessionDep
from ..errors import ApiError, run_not_found
from ..lifecycle import append_events, set_status, to_public
from ..models import Event, Run, User

router = APIRouter(prefix="/v1/runs", tags=["runs"])


def _owned(session: SessionDep, user: User, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.user_id != user.id:
        raise run_not_found(run_id)
    return run


def _public(run: Run, artifacts: ArtifactsDep) -> RunPublic:
    return to_public(run, artifacts.final(run.id, "lightning").exists())


# Enough recent points to hold the newest value of every metric a run logs per step.
_RECENT_METRICS = 200


def _with_live(session: SessionDep, public: RunPublic) -> RunPublic:
    """Add progress and the newest metric values to a running run (two indexed reads)."""
    if public.status is not RunStatus.running:
        return public
    progress = session.scalar(select(Event).where(Event.run_id == public.id, Event.kind == "progress")
                              .order_by(Event.seq.desc()).limit(1))
    if progress is not None:
        public.progress = RunProgress.model_validate(progress.data)
    recent = session.scalars(select(Event).where(Event.run_id == public.id, Event.kind == "metric")
                             .order_by(Event.seq.desc()).limit(_RECENT_METRICS)).all()
    for event in reversed(recent):
        public.latest_metrics[event.data["name"]] = event.data["value"]
    return public


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_run",
             dependencies=[Depends(quotas.runs_queued)])
def create_run(
    session: SessionDep,
    user: CurrentUser,
    artifacts: ArtifactsDep,
    executor: ExecutorDep,
    environment: EnvironmentDep,
    spec: Annotated[str, Form(description="RunSpec as JSON", min_length=2)],
    payload: Annotated[UploadFile, File(description="the code payload made by aiaas_sdk.packaging.pack")],
) -> RunPublic:
    """Submit a run: the pickled module travels as ``payload``, its settings as ``spec``."""
    try:
        run_spec = RunSpec.model_validate_json(spec)
    except ValidationError as exc:
        raise ApiError(400, f"the run spec is invalid: {exc.errors(include_url=False)}", "bad_spec") from None
    data = payload.file.read()
    try:
        manifest = packaging.read_manifest(data)
    except packaging.PayloadError as exc:
        raise ApiError(400, f"{exc}; resubmit with client.train(...)", "bad_payload") from None
    package = manifest.get("lightning_package", "lightning")
    ours = environment.get(package) or environment["lightning"]
    problems = packaging.incompatibilities(manifest, ours)
    if problems:
        raise ApiError(
            422,
            "; ".join(problems) + ". Install matching versions in this notebook (or on the backend) and resubmit.",
            "incompatible_environment",
        )
    gpus = executor.admit(run_spec.trainer_kwargs, package)
    # Pinned now: an unknown name or version fails here, not on the worker.
    pinned = datasets.resolve(session, user, run_spec.datasets)
    run = Run(
        id="run_" + uuid.uuid4().hex[:12],
        user_id=user.id,
        name=run_spec.name or "run",
        status=RunStatus.queued.value,
        trainer_kwargs=run_spec.trainer_kwargs,
        run_test=run_spec.test,
        environment={k: manifest[k] for k in ("python", "torch", "lightning", "lightning_package", "cloudpickle")},
        gpus=gpus,
        final_metrics={},
        attempt=1,
        cancel_requested=False,
        last_seq=0,
        last_wseq=0,
        datasets=pinned,
        checkpoint_every_n_epochs=run_spec.checkpoint_every_n_epochs,
    )
    if not run_spec.name:
        run.name = run.id
    artifacts.write_atomic(artifacts.code(run.id), data)
    session.add(run)
    session.flush()
    append_events(session, run.id, [("status", time.time(), {"status": "queued", "attempt": 1})])
    session.commit()
    executor.notify()
    return _public(run, artifacts)


@router.get("", operation_id="list_runs")
def list_runs(
    session: SessionDep,
    user: CurrentUser,
    artifacts: ArtifactsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> RunsPublic:
    """This user's runs, newest first."""
    rows = session.scalars(
        select(Run).where(Run.user_id == user.id).order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit).offset(offset)
    ).all()
    count = session.scalar(select(func.count()).select_from(Run).where(Run.user_id == user.id)) or 0
    return RunsPublic(data=[_with_live(session, _public(r, artifacts)) for r in rows], count=count)


@router.get("/{run_id}", operation_id="get_run")
def get_run(run_id: str, session: SessionDep, user: CurrentUser, artifacts: ArtifactsDep) -> RunPublic:
    return _with_live(session, _public(_owned(session, user, run_id), artifacts))


@router.post("/{run_id}/cancel", operation_id="cancel_run")
def cancel_run(
    run_id: str, request: Request, session: SessionDep, user: CurrentUser, artifacts: ArtifactsDep, executor: ExecutorDep
) -> RunPublic:
    """Ask a run to stop. Queued runs end at once; running ones stop after the current
    step (or are killed after the grace period). Cancelling an ended run changes nothing."""
    run = _owned(session, user, run_id)
    if not RunStatus(run.status).terminal:
        run.cancel_requested = True
        if run.status == RunStatus.queued.value:
            set_status(session, run, RunStatus.cancelled, error="cancelled by the user")
        session.commit()
        executor.notify()
        request.app.state.event_bus.publish(run.id)
    return _public(run, artifacts)


@router.get("/{run_id}/metrics", operation_id="get_run_metrics")
def get_metrics(
    run_id: str,
    session: SessionDep,
    user: CurrentUser,
    after: Annotated[int, Query(ge=0, description="return points with seq > after")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    name: Annotated[str | None, Query(description="only this metric")] = None,
) -> MetricsPage:
    """Metric points in log order, a page at a time (``next_after`` continues)."""
    _owned(session, user, run_id)
    query = select(Event).where(Event.run_id == run_id, Event.kind == "metric", Event.seq > after)
    if name is not None:
        query = query.where(Event.data["name"].as_string() == name)
    rows = session.scalars(query.order_by(Event.seq).limit(limit)).all()
    return MetricsPage(
        data=[MetricPoint(seq=e.seq, time=e.time, **e.data) for e in rows],
        next_after=rows[-1].seq if rows else after,
    )


@router.get("/{run_id}/logs", operation_id="get_run_logs")
def get_logs(
    run_id: str,
    session: SessionDep,
    user: CurrentUser,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> LogsPage:
    """The run's output lines (stdout, stderr, Lightning's messages), a page at a time."""
    _owned(session, user, run_id)
    rows = session.scalars(
        select(Event).where(Event.run_id == run_id, Event.kind == "log", Event.seq > after)
        .order_by(Event.seq).limit(limit)
    ).all()
    return LogsPage(
        data=[LogLine(seq=e.seq, time=e.time, line=e.data["line"]) for e in rows],
        next_after=rows[-1].seq if rows else after,
    )


@router.get(
    "/{run_id}/checkpoint",
    operation_id="download_run_checkpoint",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_checkpoint(
    run_id: str,
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    artifacts: ArtifactsDep,
    kind: Annotated[str, Query(pattern="^(lightning|weights)$")] = "lightning",
) -> FileResponse:
    """The final checkpoint: ``lightning`` (a Trainer checkpoint) or ``weights`` (a state_dict)."""
    run = _owned(session, user, run_id)
    path = artifacts.final(run.id, kind)
    if not path.exists() and run.status == RunStatus.succeeded.value:
        request.app.state.run_files.find(run.id, FINAL_FILES[kind])  # the folder lost it: from the store
    try:
        # The worker wrote this file: a link it left there (to the database, to another
        # run's checkpoint) must not be served, nor anything but a regular file.
        os.close(open_regular(path))
    except OSError:
        path = path.with_name(path.name + ".absent")
    if not path.exists():
        raise ApiError(
            404,
            f"run {run_id} has no final checkpoint (it is {run.status}); checkpoints exist once a run succeeded: "
            "call run.wait() first",
            "no_checkpoint",
        )
    return FileResponse(path, media_type="application/octet-stream", filename=f"{run.name}-{FINAL_FILES[kind]}")
