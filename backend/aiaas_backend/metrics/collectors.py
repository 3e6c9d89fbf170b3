"""Figures read at scrape time from where they already live: the store and each deployment's router.

Nothing here runs between scrapes. The store queries are two small
``GROUP BY``/``COUNT`` statements on indexed columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas_sdk.wire import RunStatus

from ..models import Run

if TYPE_CHECKING:
    from ..pack_compaction import Compactor


@dataclass
class DeploymentFigures:
    """One deployment's serving figures, copied on the event loop that owns its router."""

    name: str
    id: str
    queue_depth: int
    replicas_ready: int
    replicas_desired: int
    batch_sizes: dict[int, int] = field(default_factory=dict)
    batch_rows: int = 0


def batch_buckets(largest: int) -> list[int]:
    """Powers of two up to the largest batch seen (batch sizes are bounded by max_batch_size)."""
    edges, edge = [], 1
    while edge < largest:
        edges.append(edge)
        edge *= 2
    return [*edges, edge]


class ServingCollector(Collector):
    """Queue depth, replicas and batch sizes per deployment, from the last :meth:`update`.

    The routers belong to the event loop; the scrape renders in a thread. So
    the route copies the figures on the loop (``update``) and this collector
    only reads the copy.
    """

    def __init__(self) -> None:
        self._figures: list[DeploymentFigures] = []

    def update(self, figures: list[DeploymentFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment", "deployment_id"]
        queue = GaugeMetricFamily("aiaas_deployment_queue_depth", "predict requests waiting for a batch", labels=labels)
        ready = GaugeMetricFamily("aiaas_deployment_replicas_ready", "replicas serving now", labels=labels)
        desired = GaugeMetricFamily("aiaas_deployment_replicas_desired", "replicas the deployment asks for",
                                    labels=labels)
        batches = HistogramMetricFamily("aiaas_deployment_batch_rows", "rows per batch handed to a replica",
                                        labels=labels)
        for f in self._figures:
            values = [f.name, f.id]
            queue.add_metric(values, f.queue_depth)
            ready.add_metric(values, f.replicas_ready)
            desired.add_metric(values, f.replicas_desired)
            cumulative, buckets = 0, []
            for edge in batch_buckets(max(f.batch_sizes, default=1)):
                cumulative += sum(n for size, n in f.batch_sizes.items() if edge // 2 < size <= edge)
                buckets.append((floatToGoString(edge), cumulative))  # le="4.0", as Histogram writes it
            buckets.append(("+Inf", cumulative))
            batches.add_metric(values, buckets, sum_value=f.batch_rows)
        yield from (queue, ready, desired, batches)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the label values are only known at scrape time


class StoreCollector(Collector):
    """Runs by status, the run queue and busy workers, counted in the store at scrape time."""

    def __init__(self, sessions: Callable[[], Session], slots: int) -> None:
        self._sessions = sessions
        self._slots = slots

    def collect(self) -> Iterator[Metric]:
        with self._sessions() as session:
            counts = dict(session.execute(select(Run.status, func.count()).group_by(Run.status)).all())
        runs = GaugeMetricFamily("aiaas_runs", "runs in the store, by status", labels=["status"])
        for status in RunStatus:
            runs.add_metric([status.value], counts.get(status.value, 0))
        yield runs
        yield GaugeMetricFamily("aiaas_run_queue_length", "runs waiting for a worker",
                                value=counts.get(RunStatus.queued.value, 0))
        # Each running run holds one worker process (local) or worker group (Ray).
        yield GaugeMetricFamily("aiaas_workers_busy", "workers training a run now",
                                value=counts.get(RunStatus.running.value, 0))
        yield GaugeMetricFamily("aiaas_worker_slots", "CPU runs that may train at once (AIAAS_SLOTS)",
                                value=self._slots)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class CompactionCollector(Collector):
    """What this server's pack compactions (pack_compaction.py) freed since it started."""

    def __init__(self, compactor: Compactor) -> None:
        self._compactor = compactor

    def collect(self) -> Iterator[Metric]:
        done = self._compactor.total
        yield CounterMetricFamily("aiaas_dataset_packs_compacted", "packs of small dataset chunks rewritten "
                                  "because most of their chunks were deleted", value=done.packs)
        yield CounterMetricFamily("aiaas_dataset_compaction_freed_bytes", "store bytes those rewrites freed",
                                  value=done.freed)

    def describe(self) -> Iterator[Metric]:
        return iter(())


__all__ = ["CompactionCollector", "DeploymentFigures", "ServingCollector", "StoreCollector", "batch_buckets"]
