"""What a dashboard shows, folded from a run's events; no I/O and no widgets.

Series are downsampled as they grow (keep every other point, then accept
every 2nd, 4th, ... new one), so a run with a million points costs the
notebook and the browser a bounded ``cap`` points per metric.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..wire import RunEvent


@dataclass
class Series:
    cap: int = 1000
    points: list[tuple[float, float]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0
    last: tuple[float, float] | None = None
    # New points since the last take_new(); None after a compaction (resend everything).
    _new: list[tuple[float, float]] | None = field(default_factory=list)

    def add(self, x: float, y: float) -> None:
        self.last = (x, y)
        if self.seen % self.stride == 0:
            self.points.append((x, y))
            if self._new is not None:
                self._new.append((x, y))
            if len(self.points) > self.cap:
                self.points = self.points[::2]
                self.stride *= 2
                self._new = None
        self.seen += 1

    def view(self) -> list[tuple[float, float]]:
        """The downsampled points plus the newest one."""
        if self.last is not None and (not self.points or self.points[-1] != self.last):
            return [*self.points, self.last]
        return list(self.points)

    def take_new(self) -> list[tuple[float, float]] | None:
        """Points added since the last call, or None if the series was compacted."""
        new, self._new = self._new, []
        return new


@dataclass
class RunState:
    run_id: str
    name: str
    cap: int = 1000
    log_lines: int = 12
    status: str = "queued"
    device: str | None = None
    # The dataset versions the run reads (NAME:VERSION), pinned at submit.
    datasets: list[str] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    max_epochs: int | None = None
    started: float | None = None
    finished: float | None = None
    last_seq: int = 0
    series: dict[str, Series] = field(default_factory=dict)
    logs: deque[str] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.logs = deque(maxlen=self.log_lines)

    @property
    def ended(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")

    def apply(self, event: RunEvent) -> None:
        self.last_seq = event.seq
        data: dict[str, Any] = event.data
        if event.kind == "metric":
            series = self.series.get(data["name"])
            if series is None:
                series = self.series[data["name"]] = Series(cap=self.cap)
            x = data["step"] if data.get("step") is not None else series.seen
            series.add(float(x), float(data["value"]))
            if data.get("step") is not None:
                self.step = max(self.step, int(data["step"]))
        elif event.kind == "progress":
            self.step = data["step"]
            self.total_steps = data.get("total_steps")
            self.epoch = data["epoch"]
            self.max_epochs = data.get("max_epochs")
        elif event.kind == "log":
            self.logs.append(data["line"])
        elif event.kind == "status":
            self.status = data["status"]
            self.error = data.get("error")
            self.reason = data.get("reason")
            if self.status == "running" and self.started is None:
                self.started = event.time
            if self.ended:
                self.finished = event.time

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        return (self.finished or now or time.time()) - self.started

    def latest(self) -> dict[str, float]:
        return {name: s.last[1] for name, s in sorted(self.series.items()) if s.last is not None}

    def progress_text(self) -> str:
        total = f"/{self.total_steps}" if self.total_steps else ""
        epochs = f"/{self.max_epochs}" if self.max_epochs else ""
        return f"step {self.step}{total} · epoch {self.epoch}{epochs}"

    def summary(self) -> str:
        """The plain-text view, for terminals and frontends without widgets."""
        elapsed = self.elapsed()
        lines = [f"Run {self.run_id} · {self.name} · {self.status}"
                 + (f" · {elapsed:.1f}s" if elapsed is not None else "")
                 + (f" · {self.device}" if self.device else "")]
        if self.datasets:
            lines.append("datasets: " + ", ".join(self.datasets))
        lines.append(self.progress_text())
        latest = self.latest()
        if latest:
            lines.append("  ".join(f"{k}={v:.4g}" for k, v in latest.items()))
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)
