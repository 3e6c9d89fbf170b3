"""The app factory: wires settings, store, artifacts and the executor into FastAPI."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select

from aiaas_sdk import config as sdk_config

from .artifacts import Artifacts
from .audit import KeyUsage
from .config import Settings
from .db import make_engine, migrate, session_factory
from .errors import ERROR_RESPONSES, ApiError, api_error_handler
from .event_bus import EventBus
from .executors import Executor
from .executors.local import LocalExecutor
from .executors.run_data import RunData
from .fast_predict import FastPredict
from .keys import KEY_CACHE_S
from .metrics import HttpMetrics, Metrics
from .metrics import router as metrics_router
from .models import Deployment
from .ray_cluster import RayCluster
from .monitoring.monitor import Monitor
from .monitoring.webhook import WebhookSender
from .predict_targets import PredictTargets
from .ratelimit import RateLimit, TokenBuckets
from .routes import (
    datasets, deployments, events, keys, meta, monitoring, openai_compat, predict, runs, streaming, worker,
    worker_datasets, worker_files,
)
from .run_files import ReplicaTokens, RunFiles
from .sandbox import make_launcher
from .serving.base import ServingRuntime
from .serving.local import LocalServing
from .size_limit import BodySizeLimit
from .store import open_store
from .datasets import recover_chunks
from .dataset_sweep import Sweeper
from .pack_compaction import Compactor
from .worker_env import probe


def _operation_id(route: APIRoute) -> str:
    return route.name


# Our metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry (FastAPI >= 0.16x) asks
# the global providers (an os.environ read) on every request: ~10% of a predict's server CPU.
_NO_TELEMETRY: dict[str, Any] = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                                 if "telemetry" in inspect.signature(FastAPI).parameters else {})


def create_app(settings: Settings, api_url: Callable[[], str]) -> FastAPI:
    """Build the API. ``api_url`` tells workers where to report (known once the socket is bound)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    sessions = session_factory(engine)
    artifacts = Artifacts(settings.artifacts_dir)
    store = open_store(settings)
    with sessions() as session:
        recover_chunks(session, store)
    compactor = Compactor(sessions, store)
    bus = EventBus()
    executor: Executor
    serving: ServingRuntime
    replica_tokens = ReplicaTokens(settings.data_dir / "replica-token.key")
    cluster: RayCluster | None = None
    if settings.executor == "ray":
        from .executors.ray_executor import RayExecutor
        from .serving.ray_serve import RayServing

        assert settings.ray_address is not None  # Settings refuses executor "ray" without one
        cluster = RayCluster(settings.ray_address)
        executor = RayExecutor(settings, sessions, artifacts, api_url, bus, cluster)
        serving = RayServing(cluster, settings.ray_cpus_per_replica, lambda: settings.advertise_url or api_url(),
                             replica_tokens)
        if settings.sandbox != "off":
            logging.getLogger("aiaas.sandbox").warning(
                "the sandbox does not wrap Ray's workers: on --executor ray, user code runs as the Ray "
                "cluster's user on its nodes (one cluster per tenant, or Ray's container runtime "
                "environments, isolate it; docs/scale-out.md)")
    else:
        # The data dir and the config file stay out of every sandbox (refused if the Python
        # environment the sandbox must show contains them).
        launcher = make_launcher(settings.sandbox, settings.worker_python,
                                 [settings.data_dir, sdk_config.config_path()], settings.sandbox_tmp_mb,
                                 bool(settings.gpus))
        # Unprivileged sandboxes share the server's uid: they get copies of datasets, not links.
        run_data = RunData(settings, store, copy=launcher.isolates and os.geteuid() != 0)
        executor = LocalExecutor(settings, sessions, artifacts, api_url, bus, launcher, run_data,
                                 RunFiles(store, artifacts))
        serving = LocalServing(artifacts, settings.data_dir, launcher, settings.gpus, settings.replica_threads,
                               settings.sandbox_limits)

    monitor = Monitor(sessions, bus, serving, sample_every=settings.drift_sample_every,
                      interval_s=settings.alert_interval_s,
                      webhooks=WebhookSender(settings.webhook_attempts, settings.webhook_backoff_s))
    serving.on_event = monitor.emit_soon

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        bus.bind(asyncio.get_running_loop())
        monitor.start()
        if cluster is not None:
            cluster.connect()
        executor.start()
        # Deployments outlive restarts: bring every one back up.
        with sessions() as session:
            for dep in session.scalars(select(Deployment)):
                await serving.deploy(deployments.config_of(dep))
        try:
            yield
        finally:
            await monitor.stop()
            await serving.stop()
            executor.stop()
            if cluster is not None:
                cluster.disconnect()
            compactor.close()
            engine.dispose()

    app = FastAPI(
        title="aiaas",
        summary="Train PyTorch Lightning modules from a notebook; deploy them.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        responses=ERROR_RESPONSES,
        **_NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.artifacts = artifacts
    app.state.store = store
    app.state.compactor = compactor
    app.state.sweeper = Sweeper(store, compactor, settings.dataset_upload_ttl_s)
    app.state.run_files = RunFiles(store, artifacts)
    app.state.replica_tokens = replica_tokens
    app.state.executor = executor
    app.state.event_bus = bus
    app.state.serving = serving
    app.state.monitor = monitor
    app.state.predict_targets = PredictTargets(predict.target_lookup(app.state), KEY_CACHE_S)
    app.state.key_usage = KeyUsage(sessions, settings.key_touch_every_s, settings.key_audit_every_s)
    app.state.metrics = metrics = Metrics(enabled=settings.metrics)
    metrics.watch_store(sessions, settings.slots)
    metrics.watch_compactor(compactor)
    app.state.environment = probe(settings.worker_python)
    app.add_exception_handler(ApiError, api_error_handler)
    # The hot paths first: each request walks the routes in order until one matches, and
    # with predict behind the others that walk cost more than the rest of a predict's routing.
    app.include_router(predict.router)
    app.include_router(streaming.router)
    app.include_router(openai_compat.router)
    app.include_router(meta.router)
    app.include_router(runs.router)
    app.include_router(events.router)
    app.include_router(deployments.router)
    app.include_router(monitoring.router)
    app.include_router(worker.router)
    app.include_router(keys.router)
    app.include_router(metrics_router)
    app.include_router(datasets.router)
    app.include_router(worker_datasets.router)
    app.include_router(worker_files.router)
    app.include_router(worker_files.replica_router)
    # Innermost of our middlewares (added first), so the size limit, rate limit and HTTP metrics
    # see the binary predicts it answers without the route.
    predict_route = next(r for r in predict.router.routes if getattr(r, "name", None) == "predict")
    app.add_middleware(FastPredict, state=app.state, route=predict_route)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.state.rate_buckets = None  # the fronts' predicts take their tokens here too (fronts/hub.py)
    if settings.rate_requests_per_s:
        burst = settings.rate_burst or max(1, round(2 * settings.rate_requests_per_s))
        app.state.rate_buckets = TokenBuckets(settings.rate_requests_per_s, burst)
        app.add_middleware(RateLimit, buckets=app.state.rate_buckets)
    if settings.metrics:
        app.add_middleware(HttpMetrics, metrics=metrics)
    return app
