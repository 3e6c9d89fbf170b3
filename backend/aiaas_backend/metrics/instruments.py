"""The registry and the instruments fed while requests are served."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from sqlalchemy.orm import Session

from .collectors import CompactionCollector, ServingCollector, StoreCollector
from .loop_histogram import LoopHistogram

if TYPE_CHECKING:
    from ..pack_compaction import Compactor

# The ``_created`` series would double the series count for a timestamp no dashboard uses.
disable_created_metrics()


def _latency_buckets() -> tuple[float, ...]:
    """0.125 ms to ~10 s in steps of 2**(1/4) (19%), then 30 s and 60 s.

    Fine steps so that ``histogram_quantile`` lands within ~10% of the true
    quantile (interpolation inside a bucket errs by at most its width). They start
    well below 1 ms: a small model's predict answers in half a millisecond on a quiet
    machine, and a first bucket of [0, 1 ms] would put its p50 anywhere in it.
    """
    steps = [round(0.000125 * 2 ** (k / 4), 7) for k in range(66)]
    return (*steps, 30.0, 60.0)


LATENCY_BUCKETS = _latency_buckets()
DEPLOYMENT_LABELS = ("deployment", "deployment_id")


class Metrics:
    """One app's registry and instruments; ``enabled=False`` records nothing (for overhead comparisons)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        # A registry per app, not the process-global one: tests and embedded
        # backends build several apps in one process.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Histograms fed on the event loop, per request: LoopHistogram (loop_histogram.py says why).
        self.predict_latency = LoopHistogram(
            "aiaas_predict_latency_seconds", "time of a successful predict request from entering the "
            "deployment's queue to its answer (the figure behind dep.stats() p50/p99)", DEPLOYMENT_LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.predict_requests = Counter(
            "aiaas_predict_requests", "predict requests answered, by HTTP status code",
            (*DEPLOYMENT_LABELS, "code"), registry=r)
        self.predict_errors = Counter(
            "aiaas_predict_errors", "predict requests that failed on the server side (5xx), by status code",
            (*DEPLOYMENT_LABELS, "code"), registry=r)
        self.predict_rejected = Counter(
            "aiaas_predict_rejected", "predict requests refused because the deployment's queue was full (429)",
            DEPLOYMENT_LABELS, registry=r)
        self.stream_first_piece = LoopHistogram(
            "aiaas_stream_first_piece_seconds", "time from a stream request entering the deployment's queue to "
            "its first text piece", DEPLOYMENT_LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.stream_pieces = Counter(
            "aiaas_stream_pieces", "text pieces sent to callers of streamed generation", DEPLOYMENT_LABELS,
            registry=r)
        self.http_latency = LoopHistogram(
            "aiaas_http_request_duration_seconds", "API request latency by route template (event streams excluded)",
            ("method", "route", "code"), buckets=Histogram.DEFAULT_BUCKETS, registry=r)
        self.event_streams = Gauge(
            "aiaas_event_streams_open", "server-sent event streams (run event logs) open now", registry=r)
        self.serving = ServingCollector()
        r.register(self.serving)
        self._store: StoreCollector | None = None
        # The counters' children, bound once per label set: prometheus_client's ``labels()`` validates
        # and locks on every call, which on the predict path cost more than the counting itself.
        self._outcome: dict[tuple[str, str, int], tuple[Any, ...]] = {}
        self._observers: dict[tuple[str, str], Callable[[float], None]] = {}

    def watch_store(self, sessions: Callable[[], Session], slots: int) -> None:
        """Collect run figures from the store at scrape time."""
        self._store = StoreCollector(sessions, slots)
        self.registry.register(self._store)

    def watch_compactor(self, compactor: Compactor) -> None:
        """Report what the dataset store's pack compactions freed."""
        self.registry.register(CompactionCollector(compactor))

    def latency_observer(self, deployment: str, deployment_id: str) -> Callable[[float], None] | None:
        """What the router calls with a successful request's latency in seconds (None when off)."""
        if not self.enabled:
            return None
        observe = self._observers.get((deployment, deployment_id))
        if observe is None:
            observe = self._observers[(deployment, deployment_id)] = self.predict_latency.labels(
                deployment, deployment_id).observe
        return observe

    def stream_started(self, deployment: str, deployment_id: str, seconds: float) -> None:
        """A stream sent its first piece ``seconds`` after it was queued."""
        if self.enabled:
            self.predict_requests.labels(deployment, deployment_id, "200").inc()
            self.stream_first_piece.labels(deployment, deployment_id).observe(seconds)

    def stream_done(self, deployment: str, deployment_id: str, pieces: int) -> None:
        if self.enabled:
            self.stream_pieces.labels(deployment, deployment_id).inc(pieces)

    def predict_done(self, deployment: str, deployment_id: str, code: int) -> None:
        """Count one answered predict request by its HTTP status code."""
        if not self.enabled:
            return
        key = (deployment, deployment_id, code)
        children = self._outcome.get(key)
        if children is None:
            children = (self.predict_requests.labels(deployment, deployment_id, str(code)),)
            if code == 429:
                children += (self.predict_rejected.labels(deployment, deployment_id),)
            elif code >= 500:
                children += (self.predict_errors.labels(deployment, deployment_id, str(code)),)
            self._outcome[key] = children
        for child in children:
            child.inc()


__all__ = ["DEPLOYMENT_LABELS", "LATENCY_BUCKETS", "Metrics"]
