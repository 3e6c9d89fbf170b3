"""What a deployment view shows, folded from polled ``stats()`` samples; no I/O and no widgets.

The backend keeps counters since the deployment started and latency
percentiles over its last 10,000 requests; requests per second comes from the
difference between two samples, so it is built here, client-side. History is
bounded twice: by age (``window_s``) and by count (``cap``), so a view left
open for a day costs the same as one open for five minutes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..wire import DeploymentPublic, DeploymentStats
from ..wire_monitoring import AlertsPublic, DriftReport

#: Event kinds the alerts/events API announces; others are shown by their kind.
EVENT_LABELS = {
    "alert_raised": "alert raised", "alert_resolved": "alert resolved", "replica_restarted": "replica restarted",
    "updated": "updated", "rolled_back": "rolled back", "scaled": "scaled",
}


@dataclass(frozen=True)
class Sample:
    """One point of the charts: seconds since the view started, requests/s and p99 latency."""

    t: float
    rps: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class EventLine:
    seq: int
    time: float
    kind: str
    message: str


@dataclass
class DeploymentState:
    """Latest figures, a bounded time series and the recent events of one deployment."""

    name: str
    window_s: float = 300.0
    cap: int = 600
    event_lines: int = 8
    status: str = "starting"
    run_id: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    error: str | None = None
    stats: DeploymentStats | None = None
    rps: float | None = None
    history: deque[Sample] = field(default_factory=deque)
    events: deque[EventLine] = field(default_factory=deque)
    last_event_seq: int = 0
    alerts_firing: list[str] = field(default_factory=list)
    drift_score: float | None = None
    stats_error: str | None = None
    deleted: bool = False
    _origin: float | None = None
    _previous: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.cap)
        self.events = deque(maxlen=self.event_lines)

    @classmethod
    def from_public(cls, data: DeploymentPublic, **kwargs: Any) -> DeploymentState:
        state = cls(data.name, **kwargs)
        state.apply_public(data)
        return state

    # -- folding --------------------------------------------------------------------
    def apply_public(self, data: DeploymentPublic) -> None:
        self.status = data.status
        self.run_id = data.run_id
        self.replicas = data.replicas
        self.ready_replicas = data.ready_replicas
        self.error = data.error
        self.alerts_firing = list(data.alerts_firing)

    def apply_stats(self, stats: DeploymentStats, at: float) -> Sample:
        """Fold one ``stats()`` answer taken at ``at`` (seconds, any monotonic clock)."""
        if self._origin is None:
            self._origin = at
        rps = None
        if self._previous is not None:
            t0, n0 = self._previous
            # A counter that went down means the deployment restarted from zero: no rate for this step.
            if at > t0 and stats.requests >= n0:
                rps = (stats.requests - n0) / (at - t0)
        self._previous = (at, stats.requests)
        self.stats = stats
        self.rps = rps
        self.ready_replicas = stats.ready_replicas
        self.stats_error = None
        sample = Sample(at - self._origin, rps, stats.p99_ms)
        self.history.append(sample)
        while self.history and sample.t - self.history[0].t > self.window_s:
            self.history.popleft()
        return sample

    def apply_events(self, events: list[Any]) -> list[EventLine]:
        """Fold events (objects with seq, time, kind, message) not seen yet; returns the new ones."""
        fresh = []
        for event in sorted(events, key=lambda e: e.seq):
            if event.seq <= self.last_event_seq:
                continue
            self.last_event_seq = event.seq
            line = EventLine(event.seq, float(event.time), str(event.kind),
                             str(getattr(event, "message", "") or ""))
            self.events.append(line)
            fresh.append(line)
        return fresh

    def apply_alerts(self, alerts: AlertsPublic) -> None:
        """The rules firing now, from ``dep.alerts()``."""
        self.alerts_firing = list(alerts.firing)

    def apply_drift(self, report: DriftReport) -> None:
        """The overall drift score from ``dep.drift()`` (None until the sample is large enough)."""
        self.drift_score = report.score

    def mark_deleted(self) -> None:
        self.deleted = True
        self.status = "deleted"
        self.ready_replicas = 0
        self.rps = None

    # -- reading ----------------------------------------------------------------------
    def series(self) -> dict[str, list[tuple[float, float]]]:
        """The chart points: requests/s and p99 (ms) over the window, gaps left out."""
        return {
            "requests/s": [(s.t, s.rps) for s in self.history if s.rps is not None],
            "p99 ms": [(s.t, s.p99_ms) for s in self.history if s.p99_ms is not None],
        }

    def figures(self) -> dict[str, Any]:
        """The headline numbers, as plain data (the widget and the text view both read these)."""
        s = self.stats
        return {
            "status": self.status, "version": self.run_id, "replicas": f"{self.ready_replicas}/{self.replicas}",
            "requests": s.requests if s else None, "requests_per_s": self.rps,
            "p50_ms": s.p50_ms if s else None, "p95_ms": s.p95_ms if s else None, "p99_ms": s.p99_ms if s else None,
            "errors": s.errors if s else None, "rejected": s.rejected if s else None,
            "queue_depth": s.queue_depth if s else None, "mean_batch_rows": s.mean_batch_rows if s else None,
            "batch_sizes": dict(sorted(s.batch_sizes.items())) if s else {},
            "alerts_firing": list(self.alerts_firing), "drift": self.drift_score,
        }

    def summary(self) -> str:
        """The plain-text view, for terminals and frontends without widgets."""
        f = self.figures()
        lines = [f"Deployment {self.name} · {self.status} · version {self.run_id} · replicas {f['replicas']}"]
        if self.stats is not None:
            lines.append(f"requests {f['requests']} · {fmt(f['requests_per_s'])} req/s · errors {f['errors']}"
                         f" · rejected {f['rejected']} · queue {f['queue_depth']}")
            lines.append(f"latency p50 {fmt(f['p50_ms'])} ms · p95 {fmt(f['p95_ms'])} ms · p99 {fmt(f['p99_ms'])} ms"
                         f" · mean batch {fmt(f['mean_batch_rows'])} rows")
        if self.alerts_firing:
            lines.append("alerts firing: " + ", ".join(self.alerts_firing))
        if self.drift_score is not None:
            lines.append(f"drift {self.drift_score:.3g}")
        lines += [f"  {event_text(e)}" for e in self.events]
        if self.error:
            lines.append(f"error: {self.error}")
        if self.stats_error:
            lines.append(f"stats: {self.stats_error}")
        return "\n".join(lines)


def fmt(value: float | None) -> str:
    """A figure as a person reads it: 3 significant digits, "–" when unknown."""
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def event_text(event: EventLine) -> str:
    import time as _time

    when = _time.strftime("%H:%M:%S", _time.localtime(event.time))
    label = EVENT_LABELS.get(event.kind, event.kind)
    return f"{when} {label}" + (f": {event.message}" if event.message else "")
