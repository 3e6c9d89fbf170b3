"""``GET /metrics``: the whole backend in Prometheus text format, for scrape-only keys (or loopback)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..errors import ApiError
from ..models import Deployment
from ..security import scrape_key_name, user_for_key
from .collectors import DeploymentFigures
from .instruments import Metrics

router = APIRouter(tags=["metrics"])

_LOOPBACK = {"127.0.0.1", "::1"}
_HOW = ("create a scrape key with `aiaas keys create --scrape --name NAME` and send it as "
        "'Authorization: Bearer <key>'")


def _check_access(request: Request, authorization: str | None) -> None:
    """Scrape keys may read; loopback clients too when AIAAS_METRICS_LOOPBACK is on; nobody else."""
    settings: Settings = request.app.state.settings
    if settings.metrics_loopback and request.client is not None and request.client.host in _LOOPBACK:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, f"/metrics needs a scrape key: {_HOW}", "unauthenticated", {"WWW-Authenticate": "Bearer"})
    with request.app.state.sessions() as session:
        if scrape_key_name(session, token.strip()) is not None:
            return
        if user_for_key(session, token.strip()) is not None:
            # Metrics name every user's deployments: a user's key must not read them.
            raise ApiError(403, f"a user's API key cannot read /metrics (it shows every user's deployments); {_HOW}",
                           "scrape_key_needed")
    raise ApiError(401, f"unknown key for /metrics; {_HOW}", "unauthenticated", {"WWW-Authenticate": "Bearer"})


def _deployments(request: Request) -> list[tuple[str, str, int]]:
    with request.app.state.sessions() as session:
        return [(i, name, replicas) for i, name, replicas in
                session.execute(select(Deployment.id, Deployment.name, Deployment.replicas))]


@router.get("/metrics", operation_id="metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Every figure of this server process (deployments, runs, workers, API latency) for Prometheus."""
    registry: Metrics = request.app.state.metrics
    if not registry.enabled:
        raise ApiError(404, "metrics are switched off on this backend (AIAAS_METRICS=false); start it without that "
                       "setting to scrape it", "metrics_off")
    await run_in_threadpool(_check_access, request, authorization)
    rows = await run_in_threadpool(_deployments, request)
    serving = request.app.state.serving
    figures = []
    for dep_id, name, desired in rows:  # on the event loop, which owns the routers: a consistent copy
        runtime = serving.runtime(dep_id)
        if runtime is None:
            continue
        r = runtime.router
        figures.append(DeploymentFigures(name=name, id=dep_id, queue_depth=r.queue.qsize(),
                                         replicas_ready=r.ready_replicas, replicas_desired=desired,
                                         batch_sizes=dict(r.stats.batch_sizes), batch_rows=r.stats.batch_rows))
    registry.serving.update(figures)
    body = await run_in_threadpool(generate_latest, registry.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


__all__ = ["router"]
