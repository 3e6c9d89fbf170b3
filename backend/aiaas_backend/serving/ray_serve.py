"""The Ray Serve runtime: a deployment's replicas are a Ray Serve application.

Requests keep the local runtime's path: our API route (auth, input checks,
errors) and our router (queue bound and 429, dynamic batching by rows with
``max_batch_size``/``max_wait_ms``, 504 on timeout, a bad request retried alone).
The router hands each batch to the application's deployment handle, and Ray
Serve picks a replica, replaces dead ones, rolls updates and, with
``autoscale``, adds and removes replicas with the load. Batching happens once,
in the router, so a deployment answers the same way on either runtime (a
second ``@serve.batch`` layer would merge our batches past ``max_batch_size``).
Serve runs without its HTTP proxy: our API is the only ingress.

Serve applications outlive the API server; on restart, deploying the stored
config again changes nothing in Serve.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError
from ..ray_cluster import RayCluster
from ..run_files import ReplicaTokens
from .base import DeploymentConfig, ServingRuntime
from .router import Replica, Router

log = logging.getLogger("aiaas.serving")


def app_name(deployment_id: str) -> str:
    return f"aiaas-{deployment_id}"


@dataclass
class ServeSlot(Replica):
    """One batch in flight to the Serve application (Serve picks the replica)."""

    handle: Any = None

    async def call(self, frame: bytes) -> bytes:
        try:
            return await self.handle.remote(frame)
        except Exception as exc:  # noqa: BLE001 - a replica that died or could not answer: 503, safe to retry
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc


class ServeRouter(Router):
    """Our router, with readiness as Serve reports it (replicas RUNNING)."""

    serve_running = 0

    @property
    def ready_replicas(self) -> int:
        return self.serve_running if any(r.alive for r in self.replicas) else 0


@dataclass
class RayRuntime:
    config: DeploymentConfig
    router: ServeRouter
    error: str | None = None
    deploying: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def status(self) -> str:
        if self.router.ready_replicas:
            return "updating" if self.deploying else "ready"
        return "failed" if self.error and not self.deploying else "starting"

    @property
    def concurrency(self) -> int:
        """Batches in flight at once: one per replica it may have, so autoscaling sees the load."""
        top = (self.config.autoscale or {}).get("max_replicas", 0)
        return max(self.config.replicas, top)


class RayServing(ServingRuntime):
    name = "ray"
    # A Serve handle answers one call with one reply: JSON items work, streams are refused (400).
    streams = False

    def __init__(self, cluster: RayCluster, cpus_per_replica: float, api_url: Callable[[], str],
                 tokens: ReplicaTokens) -> None:
        # Replicas fetch their run's code and weights through the API (any node, no shared
        # file system), each with a token that reads that run's files only.
        self._api_url = api_url
        self._tokens = tokens
        self._cluster = cluster
        self._cpus = cpus_per_replica
        self._runtimes: dict[str, RayRuntime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._started = False

    def check(self, config: DeploymentConfig) -> None:
        scale = config.autoscale
        if scale is None:
            return
        if not scale["min_replicas"] <= config.replicas <= scale["max_replicas"]:
            raise ApiError(400, f"replicas={config.replicas} is where autoscaling starts, so it must lie between "
                           f"min_replicas={scale['min_replicas']} and max_replicas={scale['max_replicas']}",
                           "bad_autoscale")

    def runtime(self, deployment_id: str) -> RayRuntime | None:
        return self._runtimes.get(deployment_id)

    def schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- Serve ----------------------------------------------------------------
    def _start_serve(self) -> None:
        from ray import serve

        if not self._started:
            self._cluster.connect()
            serve.start(proxy_location="Disabled")
            self._started = True

    def _serve_run(self, config: DeploymentConfig) -> Any:
        from ray import serve

        from .ray_replica import ModelReplica

        self._start_serve()
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self._cpus},
            # Our router already bounds the work in flight; Serve queues what a replica cannot take yet.
            "max_ongoing_requests": 2,
        }
        if config.autoscale:
            options["autoscaling_config"] = {
                "min_replicas": config.autoscale["min_replicas"],
                "max_replicas": config.autoscale["max_replicas"],
                "initial_replicas": config.replicas,
                "target_ongoing_requests": config.autoscale.get("target_ongoing_requests", 1.0),
            }
        else:
            options["num_replicas"] = config.replicas
        app = ModelReplica.options(**options).bind(self._api_url(), config.run_id, self._tokens.token(config.run_id),
                                                   max(1, int(self._cpus)))
        return serve.run(app, name=app_name(config.id), route_prefix=None)

    def _fill_slots(self, runtime: RayRuntime, handle: Any) -> None:
        router = runtime.router
        for slot in list(router.replicas):
            slot.handle = handle  # type: ignore[attr-defined]
        for i in range(len([r for r in router.replicas if r.alive]), runtime.concurrency):
            router.add_replica(ServeSlot(f"{runtime.config.id}-slot{i}", None, None, lambda: None,  # type: ignore[arg-type]
                                         handle=handle))

    async def _apply(self, runtime: RayRuntime) -> None:
        async with runtime.lock:
            runtime.deploying = True
            try:
                handle = await asyncio.to_thread(self._serve_run, runtime.config)
            except Exception as exc:  # noqa: BLE001 - shown as the deployment's error
                log.exception("Ray Serve could not deploy %s", runtime.config.id)
                runtime.error = f"Ray Serve could not deploy run {runtime.config.run_id}: {exc}"
            else:
                runtime.error = None
                self._fill_slots(runtime, handle)
            finally:
                runtime.deploying = False
            self._ensure_watcher()

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Follow Serve's view of each application: replicas running, failures."""
        from ray import serve

        while self._runtimes:
            try:
                status = await asyncio.to_thread(serve.status)
            except Exception:  # noqa: BLE001 - the cluster may be briefly unreachable
                log.warning("could not read Ray Serve's status", exc_info=True)
                await asyncio.sleep(2.0)
                continue
            for dep_id, runtime in list(self._runtimes.items()):
                app = status.applications.get(app_name(dep_id))
                if app is None:
                    runtime.router.serve_running = 0
                    continue
                running = sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
                runtime.router.serve_running = running
                if str(app.status).endswith("DEPLOY_FAILED") and app.message:
                    runtime.error = app.message
            await asyncio.sleep(0.25)

    # -- deployments ---------------------------------------------------------
    async def deploy(self, config: DeploymentConfig) -> RayRuntime:
        router = ServeRouter(max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
                             max_queue=config.max_queue, timeout_s=config.timeout_s)
        runtime = RayRuntime(config, router)

        async def replace(lost: Replica) -> None:
            # Serve replaces the dead replica itself; we only open the slot again.
            if lost in router.replicas:
                router.replicas.remove(lost)
            if runtime.config.id in self._runtimes:
                self._fill_slots(runtime, getattr(lost, "handle", None))

        router.on_replica_lost = replace
        self._runtimes[config.id] = runtime
        self.schedule(self._apply(runtime))
        return runtime

    async def update(self, deployment_id: str, run_id: str) -> None:
        """Serve rolls the replicas over to the new version; requests keep flowing."""
        runtime = self._runtimes[deployment_id]
        runtime.config.run_id = run_id
        await self._apply(runtime)

    async def scale(self, deployment_id: str, replicas: int) -> None:
        runtime = self._runtimes[deployment_id]
        runtime.config.replicas = replicas
        if runtime.config.autoscale:
            # A fixed count replaces autoscaling: what the user asked for last wins.
            runtime.config.autoscale = None
        await self._apply(runtime)
        surplus = [r for r in runtime.router.replicas if r.alive][runtime.concurrency:]
        for slot in surplus:
            await runtime.router.remove_replica(slot)

    async def delete(self, deployment_id: str) -> None:
        from ray import serve

        runtime = self._runtimes.pop(deployment_id, None)
        if runtime is None:
            return
        await runtime.router.close()
        await asyncio.to_thread(serve.delete, app_name(deployment_id))

    async def stop(self) -> None:
        """Close our routers; the Serve applications keep running for the next server start."""
        for task in list(self._tasks):
            task.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        for runtime in self._runtimes.values():
            await runtime.router.close()
        self._runtimes.clear()
