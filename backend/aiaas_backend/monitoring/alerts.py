"""Alert rules on a sliding window of a deployment's router figures.

The figures are the ones behind ``dep.stats()`` (the router's counters and the
latencies of its last 10,000 requests), sampled once a second, so an alert and
the stats a user reads never disagree about what happened. A rule with too
few requests in its window has no figure (None) and is not breached: an alert
resolves when the load that caused it stops.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiaas_sdk.wire_monitoring import RULE_NAMES

MIN_REQUESTS = 5  # a latency or error figure from fewer requests is noise, not a breach

UNITS = {"p99_ms": "ms", "p95_ms": "ms", "error_rate": "", "queue_saturation": "", "drift": ""}
LABELS = {"p99_ms": "p99 latency", "p95_ms": "p95 latency", "error_rate": "error rate",
          "queue_saturation": "queue saturation", "drift": "input drift"}


@dataclass
class Snapshot:
    at: float  # monotonic seconds
    requests: int
    errors: int
    saturation: float


@dataclass
class Window:
    """One deployment's snapshots over the longest window its rules look at."""

    snapshots: deque[Snapshot] = field(default_factory=deque)

    def add(self, snap: Snapshot, window_s: float) -> None:
        self.snapshots.append(snap)
        # Keep one snapshot at or before the window's start: the counters' baseline.
        while len(self.snapshots) > 2 and self.snapshots[1].at <= snap.at - window_s:
            self.snapshots.popleft()


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float | None]:
    """``sorted(values)[int(q * n)]`` for each q (dep.stats()'s definition), by one partial sort."""
    n = len(values)
    if n < MIN_REQUESTS:
        return [None] * len(qs)
    ks = [min(n - 1, int(q * n)) for q in qs]
    parted = np.partition(values, ks)
    return [float(parted[k]) for k in ks]


def figures(router: Any, max_queue: int, window: Window, window_s: float, drift_score: float | None,
            now: float | None = None) -> dict[str, float | None]:
    """Each rule's figure over the last ``window_s`` seconds; call on the loop that owns ``router``."""
    now = time.monotonic() if now is None else now
    stats = router.stats
    window.add(Snapshot(now, stats.requests, stats.errors, router.queue.qsize() / max(1, max_queue)), window_s)
    p99, p95 = _percentiles(stats.recent_latencies(window_s), (0.99, 0.95))
    first, last = window.snapshots[0], window.snapshots[-1]
    requests = last.requests - first.requests
    inside = [s.saturation for s in window.snapshots if s.at > now - window_s] or [last.saturation]
    return {
        "p99_ms": p99,
        "p95_ms": p95,
        "error_rate": (last.errors - first.errors) / requests if requests >= MIN_REQUESTS else None,
        "queue_saturation": sum(inside) / len(inside),
        "drift": drift_score,
    }


def transitions(rules: dict[str, Any], firing: dict[str, Any], values: dict[str, float | None]
                ) -> tuple[list[str], list[str]]:
    """(rules to raise, rules to resolve). A rule removed while firing resolves."""
    raise_, resolve = [], []
    for rule in RULE_NAMES:
        threshold = rules.get(rule)
        value = values.get(rule)
        breached = threshold is not None and value is not None and value > threshold
        if breached and rule not in firing:
            raise_.append(rule)
        elif not breached and rule in firing:
            resolve.append(rule)
    return raise_, resolve


def describe(rule: str, value: float | None, threshold: float | None, raised: bool) -> str:
    unit = UNITS[rule]
    shown = "no data" if value is None else f"{value:.4g}{' ' + unit if unit else ''}"
    if raised:
        return f"{LABELS[rule]} {shown} is above {threshold:g}{' ' + unit if unit else ''}"
    if threshold is None:
        return f"{LABELS[rule]}: the rule was removed"
    return f"{LABELS[rule]} back to {shown} (rule: {threshold:g}{' ' + unit if unit else ''})"


__all__ = ["MIN_REQUESTS", "Snapshot", "Window", "describe", "figures", "transitions"]
