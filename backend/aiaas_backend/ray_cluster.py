"""The API server's connection to a Ray cluster (executor ``ray``).

The server itself is a Ray driver only to read the cluster's size and to call
Ray Serve; training runs in driver processes of their own
(:mod:`aiaas_backend.worker.ray_driver`), so a run is one Ray job that ends when
its driver does.
"""

from __future__ import annotations

import logging
import time

NAMESPACE = "aiaas"


def missing_ray() -> str:
    return "executor 'ray' needs Ray on the backend: pip install 'aiaas[ray]' (the same version as the cluster's)"


class RayCluster:
    def __init__(self, address: str) -> None:
        self.address = address
        self._resources: dict[str, float] = {}
        self._read_at = float("-inf")

    def connect(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(missing_ray()) from exc
        if not ray.is_initialized():
            # The workers' output belongs in each run's log, not in the API server's.
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)

    def resources(self) -> dict[str, float]:
        """The cluster's total resources, read at most once a second."""
        import ray

        if time.monotonic() - self._read_at > 1.0:
            self._resources = dict(ray.cluster_resources())
            self._read_at = time.monotonic()
        return self._resources

    def disconnect(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
