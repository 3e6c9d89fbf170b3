"""The Ray executor: each run is a Ray Train job on an existing Ray cluster.

It keeps the local executor's bookkeeping -- a queue fair across users, one driver process
per run started from a warm one, adoption after a server restart, cancels that
become kills after a grace period -- and changes where the work goes: the
process it starts is a Ray driver (:mod:`aiaas_backend.worker.ray_driver`) that
runs a ``TorchTrainer`` with ``devices x num_nodes`` workers. Ray places the
workers; ``slots`` bounds how many runs are on the cluster at once. The warm
driver joins the cluster ahead and keeps a warm rank there, so a 1-worker CPU run
starts without Ray Train's per-run processes (:mod:`aiaas_backend.worker.ray_warm`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker


from ..artifacts import Artifacts
from ..config import Settings
from ..event_bus import EventBus
from ..models import Run
from ..ray_cluster import RayCluster
from ..resources import ray_workers
from ..sandbox import LaunchSpec
from ..sandbox.off import OffLauncher
from .fair import fair_order
from .local import LocalExecutor


class RayExecutor(LocalExecutor):
    name = "ray"
    worker_module = "aiaas_backend.worker.ray_driver"

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        artifacts: Artifacts,
        api_url: Callable[[], str],
        bus: EventBus,
        cluster: RayCluster,
    ) -> None:
        # The driver needs the network (it talks to the cluster) and Ray's workers are Ray's to
        # start: the sandbox does not wrap them (docs/scale-out.md says what isolation holds).
        super().__init__(settings, sessions, artifacts, api_url, bus, OffLauncher(settings.worker_python))
        self._cluster = cluster

    @property
    def gpus(self) -> int:
        return int(self._cluster.resources().get("GPU", 0))

    def admit(self, trainer_kwargs: dict[str, Any], lightning_package: str) -> int:
        resources = self._cluster.resources()
        workers, use_gpu = ray_workers(
            trainer_kwargs, cpus=resources.get("CPU", 0), gpus=int(resources.get("GPU", 0)),
            cpus_per_worker=self._settings.ray_cpus_per_worker,
        )
        return workers if use_gpu else 0

    def _has_room(self) -> bool:
        return len(self._workers) < self._settings.slots

    def _spec(self, folder: Path, args: list[str] | None = None) -> LaunchSpec:
        # With the cluster's address a warm driver joins it and warms a rank before its run arrives.
        # (Unsandboxed, it is never given a folder, so it needs no started-file.)
        return dataclasses.replace(super()._spec(folder), args=[str(self._settings.ray_address)])

    def _dispatch(self, session: Session) -> None:
        for run in fair_order(session):
            if not self._has_room():
                return
            self._launch(session, run, [])

    def _has_checkpoint(self, run_id: str) -> bool:
        storage = self._artifacts.ray_storage(run_id)
        return super()._has_checkpoint(run_id) or any(storage.glob("checkpoint_*"))

    def _extra_assignment(self, run: Run) -> dict[str, object]:
        package = (run.environment or {}).get("lightning_package", "lightning")
        resources = self._cluster.resources()
        workers, use_gpu = ray_workers(
            run.trainer_kwargs or {}, cpus=resources.get("CPU", 0),
            gpus=max(int(resources.get("GPU", 0)), run.gpus), cpus_per_worker=self._settings.ray_cpus_per_worker,
            check=False,
        )
        return {
            "ray_address": self._settings.ray_address,
            "workers": workers,
            "use_gpu": use_gpu,
            "cpus_per_worker": self._settings.ray_cpus_per_worker,
            "max_failures": self._settings.ray_max_failures,
            "lightning_package": package,
            # Its workers keep the run's files in a folder of their node and reach the stored
            # ones through the API (run_files.py): no node needs to see this server's data dir.
            "files_via_api": True,
            "worker_dir": self._settings.ray_worker_dir,
        }
