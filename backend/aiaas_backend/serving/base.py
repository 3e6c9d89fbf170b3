"""The contract a serving runtime keeps with the API (local replica processes, or Ray Serve).

The API stores deployments in the database and asks the runtime to make the
stored state true; predict requests go to the runtime's router for a
deployment. Every method that starts or stops replicas returns quickly and
does the slow part in the background (``schedule``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..errors import ApiError


@dataclass
class DeploymentConfig:
    id: str
    run_id: str
    replicas: int
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    timeout_s: float
    # {"min_replicas", "max_replicas", "target_ongoing_requests"}: replicas follow the load.
    autoscale: dict[str, Any] | None = None
    # "int8" | "compile" | "onnx": replicas serve the model optimised so (measured at deploy).
    optimize: str | None = None
    optimize_tolerance: float | None = None


class ServingRuntime(ABC):
    name: str
    # Set by the app: (deployment id, kind, message, data) for the deployment's event log.
    on_event: Callable[[str, str, str, dict[str, Any]], None] | None = None
    # Whether it can lend a replica to one caller for a streamed generation (serving/stream.py).
    streams: bool = True

    def check(self, config: DeploymentConfig) -> None:
        """Refuse (400, naming the fix) what this runtime cannot do, before it is stored."""
        if config.autoscale is not None:
            raise ApiError(400, "autoscale needs a backend started with `--executor ray` (Ray Serve scales replicas "
                           "with the load); this backend runs a fixed number of replica processes: deploy with "
                           "replicas=N instead", "autoscale_unsupported")

    async def optimize(self, run_id: str, method: str, signature: dict[str, Any] | None,
                       batch_rows: int) -> dict[str, Any]:
        """Measure ``run_id`` optimised by ``method`` (speed-up, largest output deviation) in a
        process that may unpickle user code; a 400 when the optimiser cannot handle the model."""
        raise ApiError(400, f"optimize needs the local serving runtime; the {self.name} runtime serves models as "
                       "trained: deploy without optimize", "optimize_unsupported")

    @abstractmethod
    async def deploy(self, config: DeploymentConfig) -> Any:
        """Start serving ``config.run_id`` (replicas start in the background)."""

    @abstractmethod
    async def update(self, deployment_id: str, run_id: str) -> None:
        """Serve another run, rolling: no request dropped."""

    @abstractmethod
    async def scale(self, deployment_id: str, replicas: int) -> None: ...

    @abstractmethod
    async def delete(self, deployment_id: str) -> None: ...

    @abstractmethod
    def runtime(self, deployment_id: str) -> Any | None:
        """What serves this deployment here (its router and status), or None."""

    @abstractmethod
    def schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run slow work (replica starts, updates) in the background."""

    @abstractmethod
    async def stop(self) -> None: ...
