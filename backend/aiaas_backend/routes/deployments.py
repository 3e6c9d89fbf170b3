"""Deployments: a succeeded run served as an endpoint, and the models one can deploy."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from aiaas_sdk import tensor_codec
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
from ..deps import ArtifactsDep, CurrentUser, SessionDep, TokenDep, bearer_token, refuse_scrape_key
from ..errors import ApiError
from ..metrics import Metrics
from ..models import Deployment, DeploymentKey, Run, User, utcnow
from ..security import hash_secret, new_secret, user_for_key
from ..serving.inputs import check_inputs, check_json_inputs
from ..serving.base import DeploymentConfig, ServingRuntime
from ..serving.router import InputRejected, Overloaded, ReplicaLost

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


def _deployable_run(session: SessionDep, user: User, artifacts: ArtifactsDep, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None or run.user_id != user.id:
        raise ApiError(404, f"no run {run_id!r} for this API key; list your models with client.models()",
                       "run_not_found")
    if run.status != RunStatus.succeeded.value or not artifacts.final(run.id, "weights").exists():
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
        predict_path=f"/v1/deployments/{dep.name}/predict",
    )


def config_of(dep: Deployment) -> DeploymentConfig:
    return DeploymentConfig(id=dep.id, run_id=dep.run_id, replicas=dep.replicas, max_batch_size=dep.max_batch_size,
                            max_wait_ms=dep.max_wait_ms, max_queue=dep.max_queue, timeout_s=dep.timeout_s,
                            autoscale=dict(dep.autoscale) if dep.autoscale else None)


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
async def create_deployment(body: DeploymentCreate, request: Request, user: CurrentUser, serving: ServingDep,
                            artifacts: ArtifactsDep) -> DeploymentPublic:
    sessions = request.app.state.sessions
    serving.check(DeploymentConfig(id="", **body.model_dump(exclude={"name"})))

    def create() -> Deployment:
        with sessions() as session:
            _deployable_run(session, user, artifacts, body.run_id)
            quotas.check_new_deployment(session, user, request.app.state.settings,
                                        quotas.replicas_of(body.autoscale, body.replicas))
            if session.scalar(select(Deployment).where(Deployment.user_id == user.id, Deployment.name == body.name)):
                raise ApiError(409, f"a deployment named {body.name!r} exists: update it with dep.update(run_id), "
                               "or pick another name", "deployment_exists")
            dep = Deployment(id="dep_" + uuid.uuid4().hex[:12], user_id=user.id, history=[],
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


def _for_caller(session: SessionDep, token: str, name: str) -> Deployment:
    """The deployment ``name`` as seen by ``token``: its owner's API key, or a key shared for it."""
    user = user_for_key(session, token)
    if user is not None:
        return _owned(session, user, name)
    shared = session.scalar(select(DeploymentKey).where(DeploymentKey.key_hash == hash_secret(token)))
    dep = session.get(Deployment, shared.deployment_id) if shared else None
    if shared is None:
        refuse_scrape_key(session, token)
        raise ApiError(401, "unknown API key; create one with `aiaas keys create --user NAME`", "unauthenticated",
                       {"WWW-Authenticate": "Bearer"})
    if dep is None or dep.name != name:
        raise _not_found(name)
    return dep


@router.get("/v1/deployments/{name}", operation_id="get_deployment")
def get_deployment(name: str, session: SessionDep, token: TokenDep, request: Request) -> DeploymentPublic:
    return _public(_for_caller(session, token, name), request.app.state.serving, session)


@router.post("/v1/deployments/{name}/keys", status_code=status.HTTP_201_CREATED, operation_id="create_deployment_key")
def create_deployment_key(name: str, session: SessionDep, user: CurrentUser) -> DeploymentKeyPublic:
    """A key that can call this deployment and read it, and nothing else: for sharing an endpoint."""
    dep = _owned(session, user, name)
    key = new_secret("aiaasd_")
    session.add(DeploymentKey(deployment_id=dep.id, key_hash=hash_secret(key), prefix=key[:12]))
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

    await serving.delete(await run_in_threadpool(delete))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _change(request: Request, user: User, name: str, change) -> DeploymentPublic:  # type: ignore[no-untyped-def]
    sessions = request.app.state.sessions
    serving: ServingRuntime = request.app.state.serving

    def apply() -> Deployment:
        with sessions() as session:
            dep = _owned(session, user, name)
            change(session, dep)
            dep.updated_at = utcnow()
            session.commit()
            return dep

    dep = await run_in_threadpool(apply)
    with sessions() as session:
        return _public(dep, serving, session)


@router.post("/v1/deployments/{name}/update", operation_id="update_deployment")
async def update_deployment(name: str, body: DeploymentUpdate, request: Request, user: CurrentUser,
                            serving: ServingDep, artifacts: ArtifactsDep) -> DeploymentPublic:
    """Serve another run: a rolling update, no request dropped."""

    def change(session, dep: Deployment) -> None:  # type: ignore[no-untyped-def]
        _deployable_run(session, user, artifacts, body.run_id)
        if body.run_id != dep.run_id:
            dep.history = [*(dep.history or []), dep.run_id]
            dep.run_id = body.run_id

    public = await _change(request, user, name, change)
    serving.schedule(serving.update(public.id, public.run_id))
    return public


@router.post("/v1/deployments/{name}/rollback", operation_id="rollback_deployment")
async def rollback_deployment(name: str, request: Request, user: CurrentUser, serving: ServingDep) -> DeploymentPublic:
    """Go back to the version served before the last update."""

    def change(session, dep: Deployment) -> None:  # type: ignore[no-untyped-def]
        if not dep.history:
            raise ApiError(409, f"deployment {name!r} has no earlier version to roll back to", "no_history")
        *rest, previous = dep.history
        dep.history = rest
        dep.run_id = previous

    public = await _change(request, user, name, change)
    serving.schedule(serving.update(public.id, public.run_id))
    return public


@router.post("/v1/deployments/{name}/scale", operation_id="scale_deployment")
async def scale_deployment(name: str, body: DeploymentScale, request: Request, user: CurrentUser,
                           serving: ServingDep) -> DeploymentPublic:
    def change(session, dep: Deployment) -> None:  # type: ignore[no-untyped-def]
        quotas.check_replicas(session, user, request.app.state.settings, body.replicas, leaving_out=dep.id)
        dep.replicas = body.replicas
        dep.autoscale = None  # a fixed count replaces autoscaling

    public = await _change(request, user, name, change)
    serving.schedule(serving.scale(public.id, body.replicas))
    return public


def _stats(dep_name: str, serving: ServingRuntime, dep_id: str) -> DeploymentStats:
    runtime = serving.runtime(dep_id)
    if runtime is None:
        raise ApiError(503, f"deployment {dep_name!r} is not running", "deployment_stopped")
    s = runtime.router.stats
    return DeploymentStats(
        requests=s.requests, errors=s.errors, rejected=s.rejected, dropped=s.dropped,
        queue_depth=runtime.router.queue.qsize(),
        batches=s.batches, mean_batch_rows=(s.batch_rows / s.batches) if s.batches else None,
        p50_ms=s.percentile(0.5), p99_ms=s.percentile(0.99), ready_replicas=runtime.router.ready_replicas,
    )


@router.get("/v1/deployments/{name}/stats", operation_id="deployment_stats")
def deployment_stats(name: str, session: SessionDep, user: CurrentUser, serving: ServingDep) -> DeploymentStats:
    return _stats(name, serving, _owned(session, user, name).id)


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


# -- the hot path -------------------------------------------------------------
async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _predict_target(request: Request, name: str, token: str) -> tuple[str, dict | None]:  # type: ignore[type-arg]
    """Deployment id and input signature for (key, name), cached briefly: no DB on most requests."""
    cache: dict[tuple[str, str], tuple[float, str, dict | None]] = request.app.state.predict_cache  # type: ignore[type-arg]
    now = asyncio.get_running_loop().time()
    hit = cache.get((token, name))
    if hit and hit[0] > now:
        return hit[1], hit[2]

    def lookup() -> tuple[str, dict | None]:  # type: ignore[type-arg]
        with request.app.state.sessions() as session:
            dep = _for_caller(session, token, name)
            run = session.get(Run, dep.run_id)
            return dep.id, (run.input_signature if run else None)

    dep_id, signature = await run_in_threadpool(lookup)
    if len(cache) > 10_000:
        cache.clear()
    cache[(token, name)] = (now + 2.0, dep_id, signature)
    return dep_id, signature


@router.post("/v1/deployments/{name}/predict", operation_id="predict")
async def predict(name: str, request: Request, token: Annotated[str, Depends(bearer_token)]) -> Response:
    """Run the model on a batch. Binary tensor frames (``application/x-aiaas-tensor``) or
    JSON ``{"inputs": [[...], ...]}``; the answer comes in the same encoding."""
    dep_id, signature = await _predict_target(request, name, token)
    # Counted only once the deployment is known: unknown names never become label values.
    metrics: Metrics = request.app.state.metrics
    try:
        response = await _answer(request, name, dep_id, signature, metrics.latency_observer(name, dep_id))
    except ApiError as exc:
        metrics.predict_done(name, dep_id, exc.status_code)
        raise
    except Exception:  # the model failed (not the inputs): the client gets a 500
        metrics.predict_done(name, dep_id, 500)
        raise
    metrics.predict_done(name, dep_id, response.status_code)
    return response


async def _answer(request: Request, name: str, dep_id: str, signature: dict | None,  # type: ignore[type-arg]
                  observe: Callable[[float], None] | None) -> Response:
    serving: ServingRuntime = request.app.state.serving
    runtime = serving.runtime(dep_id)
    if runtime is None or runtime.router.ready_replicas == 0:
        raise ApiError(503, f"deployment {name!r} has no ready replica yet; retry shortly", "not_ready",
                       {"Retry-After": "1"})
    body = await request.body()
    binary = request.headers.get("content-type", "").startswith(tensor_codec.CONTENT_TYPE)
    try:
        if binary:
            array = check_inputs(tensor_codec.decode(body), signature)
        else:
            try:
                inputs = json.loads(body)["inputs"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, 'send JSON {"inputs": [[...], ...]} or a binary tensor frame', "bad_body") from None
            array = check_json_inputs(tensor_codec.from_json(inputs), signature)
    except tensor_codec.CodecError as exc:
        raise ApiError(400, str(exc), "bad_inputs") from None
    work = asyncio.ensure_future(runtime.router.predict(array, observe))
    gone = asyncio.ensure_future(_disconnected(request))
    await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        work.cancel()  # the client left: its queued work is dropped, not computed
        return Response(status_code=499)
    gone.cancel()
    try:
        output = work.result()
    except Overloaded as exc:
        raise ApiError(429, str(exc), "overloaded", {"Retry-After": "1"}) from None
    except TimeoutError:
        raise ApiError(504, f"the prediction took longer than the deployment's timeout ({runtime.config.timeout_s} s)",
                       "timeout") from None
    except ReplicaLost as exc:
        raise ApiError(503, str(exc), "replica_lost", {"Retry-After": "0"}) from None
    except InputRejected as exc:
        raise ApiError(400, str(exc), "bad_inputs") from None
    if binary:
        return Response(tensor_codec.encode(output), media_type=tensor_codec.CONTENT_TYPE)
    return Response(json.dumps({"outputs": output.tolist()}), media_type="application/json")


__all__ = ["config_of", "router"]
