"""Deployments: a succeeded run served as an endpoint, and the models one can deploy."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aiaas_sdk.wire import (
    DeploymentCreate,
    DeploymentKeyPublic,
    DeploymentPublic,
    DeploymentScale,
    DeploymentsPublic,
    DeploymentStats,
    DeploymentUpdate,
    ModelsPublic,
    ModelVersion,
    RunStatus,
)

from .. import quotas
from ..audit import record
from ..deps import ArtifactsDep, CurrentUser, SessionDep, TokenDep, unusable_key
from ..errors import ApiError
from ..keys import find_by_secret
from ..monitoring import events
from ..models import Deployment, DeploymentKey, Run, User, utcnow
from ..run_files import RunFiles
from ..security import hash_secret, new_secret, user_for_key
from ..serving.base import DeploymentConfig, ServingRuntime
from .deployment_optimize import optimization, previous_version, version_of

router = APIRouter(tags=["deployments"])


def _serving(request: Request) -> ServingRuntime:
    return request.app.state.serving


ServingDep = Annotated[ServingRuntime, Depends(_serving)]


def _not_found(name: str) -> ApiError:
    return ApiError(404, f"no deployment {name!r} for this API key; list yours with client.deployments()",
                    "deployment_not_found")


def _owned(session: SessionDep, user: User, name: str) -> Deployment:
    dep = session.scalar(select(Deployment).where(Deployment.user_id == user.id, Deployment.name == name))
    if dep is None:
        raise _not_found(name)
    return dep


def _deployable_run(session: SessionDep, user: User, files: RunFiles, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.user_id != user.id:
        raise ApiError(404, f"no run {run_id!r} for this API key; list your models with client.models()",
                       "run_not_found")
    # In the run's folder, or brought back there from the store (a Ray run's weights are stored
    # through the API: run_files.py): replicas on this machine read them from the folder.
    if run.status != RunStatus.succeeded.value or files.find(run.id, "weights.pt") is None:
        raise ApiError(400, f"run {run_id} is {run.status}: only a succeeded run can be deployed; wait for it with "
                       "run.wait()", "run_not_deployable")
    return run


def _public(dep: Deployment, serving: ServingRuntime, session: SessionDep) -> DeploymentPublic:
    runtime = serving.runtime(dep.id)
    run = session.get(Run, dep.run_id)
    return DeploymentPublic(
        id=dep.id, name=dep.name, run_id=dep.run_id, history=list(dep.history or []),
        status=runtime.status if runtime else "stopped",
        replicas=dep.replicas, ready_replicas=runtime.router.ready_replicas if runtime else 0,
        max_batch_size=dep.max_batch_size, max_wait_ms=dep.max_wait_ms, max_queue=dep.max_queue,
        timeout_s=dep.timeout_s, autoscale=dep.autoscale, input_signature=run.input_signature if run else None,
        error=runtime.error if runtime else None, created_at=dep.created_at,
        predict_path=f"/v1/deployments/{dep.name}/predict", optimize=dep.optimize,
        optimize_tolerance=dep.optimize_tolerance, optimization=dep.optimization,
        alerts_firing=sorted(dep.alerts_firing or {}),
    )


def config_of(dep: Deployment) -> DeploymentConfig:
    return DeploymentConfig(id=dep.id, run_id=dep.run_id, replicas=dep.replicas, max_batch_size=dep.max_batch_size,
                            max_wait_ms=dep.max_wait_ms, max_queue=dep.max_queue, timeout_s=dep.timeout_s,
                            autoscale=dict(dep.autoscale) if dep.autoscale else None, optimize=dep.optimize,
                            optimize_tolerance=dep.optimize_tolerance)


@router.get("/v1/models", operation_id="list_models")
def list_models(session: SessionDep, user: CurrentUser, artifacts: ArtifactsDep) -> ModelsPublic:
    """Every succeeded run of this user is a model version, newest first."""
    runs = session.scalars(select(Run).where(Run.user_id == user.id, Run.status == RunStatus.succeeded.value)
                           .order_by(Run.created_at.desc())).all()
    data = [ModelVersion(run_id=r.id, name=r.name, created_at=r.created_at, final_metrics=r.final_metrics or {},
                         input_signature=r.input_signature)
            for r in runs if artifacts.final(r.id, "weights").exists()]
    return ModelsPublic(data=data, count=len(data))


@router.post("/v1/deployments", status_code=status.HTTP_201_CREATED, operation_id="create_deployment")
async def create_deployment(body: DeploymentCreate, request: Request, user: CurrentUser,
                            serving: ServingDep) -> DeploymentPublic:
    sessions = request.app.state.sessions
    serving.check(DeploymentConfig(id="", **body.model_dump(exclude={"name"})))
    report = await optimization(request, serving, lambda session: (
        _deployable_run(session, user, request.app.state.run_files, body.run_id).id, body.optimize, body.optimize_tolerance,
        body.max_batch_size))

    def create() -> Deployment:
        with sessions() as session:
            _deployable_run(session, user, request.app.state.run_files, body.run_id)
            quotas.check_new_deployment(session, user, request.app.state.settings,
                                        quotas.replicas_of(body.autoscale, body.replicas))
            if session.scalar(select(Deployment).where(Deployment.user_id == user.id, Deployment.name == body.name)):
                raise ApiError(409, f"a deployment named {body.name!r} exists: update it with dep.update(run_id), "
                               "or pick another name", "deployment_exists")
            dep = Deployment(id="dep_" + uuid.uuid4().hex[:12], user_id=user.id, history=[], optimization=report,
                             **body.model_dump())
            session.add(dep)
            session.commit()
            return dep

    dep = await run_in_threadpool(create)
    await serving.deploy(config_of(dep))
    with sessions() as session:
        return _public(dep, serving, session)


@router.get("/v1/deployments", operation_id="list_deployments")
def list_deployments(session: SessionDep, user: CurrentUser, request: Request) -> DeploymentsPublic:
    rows = session.scalars(select(Deployment).where(Deployment.user_id == user.id).order_by(Deployment.name)).all()
    return DeploymentsPublic(data=[_public(d, request.app.state.serving, session) for d in rows], count=len(rows))


def _for_caller(request: Request, session: SessionDep, token: str, name: str) -> Deployment:
    """The deployment ``name`` as seen by ``token``: its owner's API key, or a key shared for it."""
    return deployment_for_key(request.app.state, session, token, name,
                              request.client.host if request.client else None)


def deployment_for_key(state: Any, session: Session, token: str, name: str, address: str | None) -> Deployment:
    """:func:`_for_caller` without a request (the predict path's cache looks keys up in the background);
    ``state`` is the app's state, ``address`` the caller's, for the key's audit trail."""
    user = user_for_key(session, token)
    shared = None if user is not None else find_by_secret(session, token)
    if user is None and (not isinstance(shared, DeploymentKey) or shared.ended()):
        raise unusable_key(session, token)
    state.key_usage.seen(hash_secret(token), address)
    if user is not None:
        return _owned(session, user, name)
    dep = session.get(Deployment, shared.deployment_id)  # type: ignore[union-attr]
    if dep is None or dep.name != name:
        raise _not_found(name)
    return dep


@router.get("/v1/deployments/{name}", operation_id="get_deployment")
def get_deployment(name: str, session: SessionDep, token: TokenDep, request: Request) -> DeploymentPublic:
    return _public(_for_caller(request, session, token, name), request.app.state.serving, session)


@router.post("/v1/deployments/{name}/keys", status_code=status.HTTP_201_CREATED, operation_id="create_deployment_key")
def create_deployment_key(name: str, session: SessionDep, user: CurrentUser, request: Request) -> DeploymentKeyPublic:
    """A key that can call this deployment and read it, and nothing else: for sharing an endpoint.
    List and revoke it with the other keys (``GET /v1/keys``, ``DELETE /v1/keys/{id}``)."""
    dep = _owned(session, user, name)
    key = new_secret("aiaasd_")
    session.add(row := DeploymentKey(deployment_id=dep.id, key_hash=hash_secret(key), prefix=key[:12]))
    session.flush()
    record(session, "create", row, f"user:{user.name}", request.client.host if request.client else None)
    session.commit()
    return DeploymentKeyPublic(key=key, deployment=dep.name)


@router.delete("/v1/deployments/{name}", status_code=status.HTTP_204_NO_CONTENT, operation_id="delete_deployment")
async def delete_deployment(name: str, request: Request, user: CurrentUser, serving: ServingDep) -> Response:
    sessions = request.app.state.sessions

    def delete() -> str:
        with sessions() as session:
            dep = _owned(session, user, name)
            session.delete(dep)
            session.commit()
            return dep.id

    dep_id = await run_in_threadpool(delete)
    request.app.state.monitor.forget(dep_id)
    await serving.delete(dep_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _change(request: Request, user: User, name: str, change, kind: str) -> DeploymentPublic:  # type: ignore[no-untyped-def]
    sessions = request.app.state.sessions
    serving: ServingRuntime = request.app.state.serving

    def apply() -> Deployment:
        with sessions() as session:
            dep = _owned(session, user, name)
            before = (dep.run_id, dep.replicas)
            change(session, dep)
            dep.updated_at = utcnow()
            events.record_change(session, dep, kind, *before)  # in the same transaction as the change
            session.commit()
            return dep

    dep = await run_in_threadpool(apply)
    request.app.state.event_bus.publish(dep.id)
    with sessions() as session:
        return _public(dep, serving, session)


@router.post("/v1/deployments/{name}/update", operation_id="update_deployment")
async def update_deployment(name: str, body: DeploymentUpdate, request: Request, user: CurrentUser,
                            serving: ServingDep) -> DeploymentPublic:
    """Serve another run: a rolling update, no request dropped."""
    report = await optimization(request, serving, lambda session: version_of(
        _owned(session, user, name), _deployable_run(session, user, request.app.state.run_files, body.run_id).id))

    def change(session, dep: Deployment) -> None:  # type: ignore[no-untyped-def]
        _deployable_run(session, user, request.app.state.run_files, body.run_id)
        if body.run_id != dep.run_id:
            dep.history = [*(dep.history or []), dep.run_id]
            dep.run_id = body.run_id
            dep.optimization = report

    public = await _change(request, user, name, change, "updated")
    serving.schedule(serving.update(public.id, public.run_id))
    return public


@router.post("/v1/deployments/{name}/rollback", operation_id="rollback_deployment")
async def rollback_deployment(name: str, request: Request, user: CurrentUser, serving: ServingDep) -> DeploymentPublic:
    """Go back to the version served before the last update."""
    report = await optimization(request, serving, lambda session: previous_version(_owned(session, user, name)))

    def change(session, dep: Deployment) -> None:  # type: ignore[no-untyped-def]
        if not dep.history:
            raise ApiError(409, f"deployment {name!r} has no earlier version to roll back to", "no_history")
        *rest, previous = dep.history
        dep.history = rest
        dep.run_id = previous
        dep.optimization = report

    public = await _change(request, user, name, change, "rolled_back")
    serving.schedule(serving.update(public.id, public.run_id))
    return public


@router.post("/v1/deployments/{name}/scale", operation_id="scale_deployment")
async def scale_deployment(name: str, body: DeploymentScale, request: Request, user: CurrentUser,
                           serving: ServingDep) -> DeploymentPublic:
    def change(session, dep: Deployment) -> None:  # type: ignore[no-untyped-def]
        quotas.check_replicas(session, user, request.app.state.settings, body.replicas, leaving_out=dep.id)
        dep.replicas = body.replicas
        dep.autoscale = None  # a fixed count replaces autoscaling

    public = await _change(request, user, name, change, "scaled")
    serving.schedule(serving.scale(public.id, body.replicas))
    return public


def _stats(dep_name: str, serving: ServingRuntime, dep_id: str, optimization: dict | None = None) -> DeploymentStats:  # type: ignore[type-arg]
    runtime = serving.runtime(dep_id)
    if runtime is None:
        raise ApiError(503, f"deployment {dep_name!r} is not running", "deployment_stopped")
    s = runtime.router.stats
    return DeploymentStats(
        requests=s.requests, errors=s.errors, rejected=s.rejected, dropped=s.dropped,
        queue_depth=runtime.router.queue.qsize(),
        batches=s.batches, mean_batch_rows=(s.batch_rows / s.batches) if s.batches else None,
        p50_ms=s.percentile(0.5), p95_ms=s.percentile(0.95), p99_ms=s.percentile(0.99),
        ready_replicas=runtime.router.ready_replicas, batch_sizes=dict(s.batch_sizes),
        optimization=optimization,
        streams=s.streams, streams_cancelled=s.streams_cancelled, first_piece_p50_ms=s.percentile(0.5, s.first_piece_ms),
        first_piece_p99_ms=s.percentile(0.99, s.first_piece_ms), pieces_per_s=s.percentile(0.5, s.pieces_per_s),
    )


@router.get("/v1/deployments/{name}/stats", operation_id="deployment_stats")
def deployment_stats(name: str, session: SessionDep, user: CurrentUser, serving: ServingDep) -> DeploymentStats:
    dep = _owned(session, user, name)
    return _stats(name, serving, dep.id, dep.optimization)


@router.get("/v1/deployments/{name}/metrics", operation_id="deployment_metrics", response_class=PlainTextResponse)
def deployment_metrics(name: str, session: SessionDep, user: CurrentUser, serving: ServingDep) -> str:
    """The deployment's figures in Prometheus text format."""
    dep = _owned(session, user, name)
    stats = _stats(name, serving, dep.id)
    runtime = serving.runtime(dep.id)
    label = f'deployment="{dep.name}"'
    lines = []
    for metric, kind, value, help_text in (
        ("aiaas_requests_total", "counter", stats.requests, "predict requests received"),
        ("aiaas_request_errors_total", "counter", stats.errors, "predict requests that failed"),
        ("aiaas_requests_rejected_total", "counter", stats.rejected, "requests refused because the queue was full"),
        ("aiaas_requests_dropped_total", "counter", stats.dropped, "requests whose client left before the answer"),
        ("aiaas_queue_depth", "gauge", stats.queue_depth, "requests waiting for a batch"),
        ("aiaas_batches_total", "counter", stats.batches, "batches run on replicas"),
        ("aiaas_ready_replicas", "gauge", stats.ready_replicas, "replicas serving"),
    ):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}", f"{metric}{{{label}}} {value}"]
    lines += ["# HELP aiaas_request_latency_ms request latency over the last 10,000 requests",
              "# TYPE aiaas_request_latency_ms summary"]
    for q, v in (("0.5", stats.p50_ms), ("0.99", stats.p99_ms)):
        if v is not None:
            lines.append(f'aiaas_request_latency_ms{{{label},quantile="{q}"}} {v:.3f}')
    lines += ["# HELP aiaas_batch_rows batches by number of rows", "# TYPE aiaas_batch_rows counter"]
    if runtime is not None:
        for size, count in sorted(runtime.router.stats.batch_sizes.items()):
            lines.append(f'aiaas_batch_rows{{{label},rows="{size}"}} {count}')
    return "\n".join(lines) + "\n"


@router.get("/v1/deployments/{name}/ready", operation_id="deployment_ready")
def deployment_ready(name: str, session: SessionDep, user: CurrentUser, serving: ServingDep) -> dict[str, object]:
    """200 when at least one replica serves, 503 otherwise (for load balancers and scripts)."""
    dep = _owned(session, user, name)
    runtime = serving.runtime(dep.id)
    ready = runtime.router.ready_replicas if runtime else 0
    if not ready:
        raise ApiError(503, f"deployment {name!r} has no ready replica yet" +
                       (f": {runtime.error}" if runtime and runtime.error else ""), "not_ready",
                       {"Retry-After": "1"})
    return {"ready": True, "ready_replicas": ready}


__all__ = ["config_of", "router"]
