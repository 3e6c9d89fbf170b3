"""The app factory: wires settings, store, artifacts and the executor into FastAPI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select

from .artifacts import Artifacts
from .config import Settings
from .db import make_engine, migrate, session_factory
from .errors import ApiError, api_error_handler
from .event_bus import EventBus
from .executors import Executor
from .executors.local import LocalExecutor
from .ray_cluster import RayCluster
from .models import Deployment
from .routes import datasets, deployments, events, meta, runs, worker, worker_datasets
from .serving.base import ServingRuntime
from .serving.local import LocalServing
from .size_limit import BodySizeLimit
from .store import open_store
from .worker_env import probe


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings, api_url: Callable[[], str]) -> FastAPI:
    """Build the API. ``api_url`` tells workers where to report (known once the socket is bound)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    sessions = session_factory(engine)
    artifacts = Artifacts(settings.artifacts_dir)
    store = open_store(settings)
    bus = EventBus()
    executor: Executor
    serving: ServingRuntime
    cluster: RayCluster | None = None
    if settings.executor == "ray":
        from .executors.ray_executor import RayExecutor
        from .serving.ray_serve import RayServing

        assert settings.ray_address is not None  # Settings refuses executor "ray" without one
        cluster = RayCluster(settings.ray_address)
        executor = RayExecutor(settings, sessions, artifacts, api_url, bus, cluster)
        serving = RayServing(artifacts, cluster, settings.ray_cpus_per_replica)
    else:
        executor = LocalExecutor(settings, sessions, artifacts, api_url, bus)
        serving = LocalServing(artifacts, settings.data_dir, settings.worker_python, settings.gpus,
                               settings.replica_threads)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        bus.bind(asyncio.get_running_loop())
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
            await serving.stop()
            executor.stop()
            if cluster is not None:
                cluster.disconnect()
            engine.dispose()

    app = FastAPI(
        title="aiaas",
        summary="Train PyTorch Lightning modules from a notebook; deploy them.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.artifacts = artifacts
    app.state.store = store
    app.state.executor = executor
    app.state.event_bus = bus
    app.state.serving = serving
    app.state.predict_cache = {}
    app.state.environment = probe(settings.worker_python)
    app.add_exception_handler(ApiError, api_error_handler)
    app.include_router(meta.router)
    app.include_router(runs.router)
    app.include_router(events.router)
    app.include_router(deployments.router)
    app.include_router(worker.router)
    app.include_router(datasets.router)
    app.include_router(worker_datasets.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app
